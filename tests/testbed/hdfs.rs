//! `hdfs dfsadmin -safemode ...`, `hdfs fsck /`, HopsFS datanodes, `reindex-epipe.sh`,
//! `kafka-restore.sh`.
//!
//! The namenode's view of the blocks is read from disk at every call, as if every datanode had
//! just sent a block report: a replica of a block of the metadata (`hops.hdfs_blocks`) counts
//! when a started, reachable datanode holds it with the right length and genstamp in a volume of
//! the metadata's cluster and block pool (`live_holders`).
//!
//! Safe mode: ON while fewer than 99.9 % of the blocks have a replica, and for
//! `dfs.namenode.safemode.extension` after the threshold is reached (`safemode_on`), unless set
//! by `-safemode enter|leave`.
//!
//! `hdfs fsck /` prints what HopsFS's DFSck and NamenodeFsck print (the `Connecting to namenode`
//! line on stderr, a `.` per file, the under-replicated and missing blocks, `Result.toString()`,
//! Java `Float.toString` percentages) with the lines of the fixtures `hdfs/fsck_*.txt`; exit 0 if
//! HEALTHY, 1 if CORRUPT (a block without any replica).
//!
//! Re-replication follows the namenode's ReplicationMonitor (`BlockManager.computeDatanodeWork`):
//! nothing while the namenode is in safe mode (the extension included) or no datanode is live;
//! otherwise every `dfs.namenode.replication.interval` (`Config::replication_interval_ms`, real:
//! 3 s) it schedules up to live datanodes × `dfs.namenode.replication.work.multiplier.per.iteration`
//! (2) under-replicated blocks, highest priority first (one replica left, then fewer than a third
//! of the target, then the others; block id order within a priority, as the test-bed has no
//! queue history). Each is copied (block file and `.meta`, same bytes) from the first holder whose
//! replica matches its checksum to as many live datanodes without a replica as it lacks (ring order
//! from `block id mod datanodes`), into `finalized/` of the volume `write_replica` would choose
//! (through `tmp/`, as a datanode receives a transfer). The test-bed has no daemon: `rereplicate`,
//! called by `hdfs fsck` and `hdfs dfsadmin -safemode get|wait`, runs the iterations due since the
//! monitor was first seen able to work (`Runtime::replication_since_ms`; those already run:
//! `Runtime::replication_iterations`), so the copies appear as time passes between calls. An
//! iteration's unused work is not carried over, as in HDFS. Stopping a datanode (or making it
//! unreachable), a redeploy and a destroy restart the clock. Unlike HDFS, a stopped datanode's
//! replicas count as lost at once (no heartbeat expiry of 10.5 minutes first).

use crate::fixtures::{self as fx, line, v};
use crate::model::{
    bp_current, format_volume, hdfs_meta, meta_content, remove_block_files, replica_file, subdirs,
    table_exists, vol_of, volume_matches, Block, HdfsMeta,
};
use crate::state::Cluster;
use anyhow::{bail, Result};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;

/// `dfs.namenode.replication.work.multiplier.per.iteration` (HDFS default).
const REPL_WORK_MULTIPLIER: u64 = 2;
/// `dfs.namenode.replication.min` (HDFS default).
const MIN_REPLICATION: usize = 1;

/// The datanodes the namenode sees live: started and reachable.
pub fn live_datanodes(cl: &Cluster) -> Vec<u32> {
    (1..=cl.cfg.hopsfs_datanodes)
        .filter(|dn| cl.rt.dn_started.contains(dn) && !cl.rt.dn_unreachable.contains(dn))
        .collect()
}

/// The live datanodes holding a replica of `b` the namenode counts (right length and genstamp,
/// in a volume of the metadata's cluster and block pool).
pub fn live_holders(
    cl: &Cluster,
    meta: &HdfsMeta,
    b: &Block,
    live: &[u32],
    matches: &mut HashMap<(u32, u32), bool>,
) -> Vec<u32> {
    live.iter()
        .copied()
        .filter(|dn| replica_file(cl, meta, *dn, b, matches).is_some())
        .collect()
}

/// Blocks of the metadata that started, reachable datanodes report (right length and genstamp,
/// in volumes of the metadata's cluster and block pool), and the total.
pub fn reported(cl: &Cluster, meta: &HdfsMeta) -> (usize, usize, Vec<u64>) {
    let mut matches = HashMap::new();
    let live = live_datanodes(cl);
    let mut ok = 0;
    let mut missing = Vec::new();
    for b in &meta.blocks {
        let found = live
            .iter()
            .any(|dn| replica_file(cl, meta, *dn, b, &mut matches).is_some());
        if found {
            ok += 1;
        } else {
            missing.push(b.id);
        }
    }
    (ok, meta.blocks.len(), missing)
}

/// Whether the namenode is in safe mode: the threshold reached and the extension passed since.
pub fn safemode_on(cl: &mut Cluster) -> Result<bool> {
    safemode_on_at(cl, chrono::Utc::now().timestamp_millis())
}

fn safemode_on_at(cl: &mut Cluster, now: i64) -> Result<bool> {
    match cl.rt.safemode_manual.as_deref() {
        Some("on") => return Ok(true),
        Some("off") => return Ok(false),
        _ => {}
    }
    let below = below_threshold(cl)?;
    let since = if below {
        None
    } else {
        Some(cl.rt.safemode_threshold_since_ms.unwrap_or(now))
    };
    if since != cl.rt.safemode_threshold_since_ms {
        cl.rt.safemode_threshold_since_ms = since;
        cl.save()?;
    }
    Ok(match since {
        None => true,
        Some(t) => now - t < cl.cfg.safemode_extension_ms as i64,
    })
}

/// Fewer than 99.9% of the metadata's blocks reported (or no metadata, no datanode started).
fn below_threshold(cl: &Cluster) -> Result<bool> {
    let db = cl.db()?;
    let Some(meta) = hdfs_meta(&db)? else {
        return Ok(true);
    };
    if cl.rt.dn_started.is_empty() {
        return Ok(true);
    }
    let (ok, total, _) = reported(cl, &meta);
    Ok(total > 0 && (ok as f64) < 0.999 * total as f64)
}

/// The ReplicationMonitor stops: its clock restarts when it is next seen able to work.
pub fn stop_replication(cl: &mut Cluster) {
    cl.rt.replication_since_ms = None;
    cl.rt.replication_iterations = 0;
}

/// Runs the ReplicationMonitor iterations due by now (see the module doc).
pub fn rereplicate(cl: &mut Cluster) -> Result<()> {
    rereplicate_at(cl, chrono::Utc::now().timestamp_millis())
}

fn rereplicate_at(cl: &mut Cluster, now: i64) -> Result<()> {
    let live = live_datanodes(cl);
    if live.is_empty() || safemode_on_at(cl, now)? {
        if cl.rt.replication_since_ms.is_some() || cl.rt.replication_iterations != 0 {
            stop_replication(cl);
            cl.save()?;
        }
        return Ok(());
    }
    let Some(since) = cl.rt.replication_since_ms else {
        cl.rt.replication_since_ms = Some(now);
        cl.rt.replication_iterations = 0;
        return cl.save();
    };
    let due = (now - since).max(0) as u64 / cl.cfg.replication_interval_ms.max(1);
    if due <= cl.rt.replication_iterations {
        return Ok(());
    }
    let per_iteration = live.len() as u64 * REPL_WORK_MULTIPLIER;
    let budget = (due - cl.rt.replication_iterations).saturating_mul(per_iteration);
    cl.rt.replication_iterations = due;
    if let Some(meta) = hdfs_meta(&cl.db()?)? {
        replicate_blocks(cl, &meta, &live, budget)?;
    }
    cl.save()
}

/// `UnderReplicatedBlocks.getPriority`: 0 for a block with one replica left, 1 for fewer than a
/// third of its target, 2 for the others.
fn priority(replicas: usize, target: usize) -> u8 {
    if replicas == 1 {
        0
    } else if replicas * 3 < target {
        1
    } else {
        2
    }
}

/// Copies up to `budget` under-replicated blocks to live datanodes without a replica; returns
/// how many blocks got at least one new replica.
fn replicate_blocks(cl: &Cluster, meta: &HdfsMeta, live: &[u32], budget: u64) -> Result<u64> {
    let target = cl.cfg.replication() as usize;
    let mut matches = HashMap::new();
    let mut work = Vec::new();
    for b in &meta.blocks {
        let holders = live_holders(cl, meta, b, live, &mut matches);
        if !holders.is_empty() && holders.len() < target {
            work.push((priority(holders.len(), target), b.id, b, holders));
        }
    }
    work.sort_by_key(|w| (w.0, w.1));
    let n = cl.cfg.hopsfs_datanodes as u64;
    let mut done = 0;
    for (_, _, b, holders) in work {
        if done >= budget {
            break;
        }
        let Some((data, meta_bytes)) = holders.iter().find_map(|dn| {
            let f = replica_file(cl, meta, *dn, b, &mut matches)?;
            let data = std::fs::read(&f).ok()?;
            let m = std::fs::read(f.with_file_name(format!("blk_{}_{}.meta", b.id, b.genstamp)))
                .ok()?;
            (m == meta_content(&data)).then_some((data, m))
        }) else {
            continue;
        };
        let targets: Vec<(u32, u32)> = (0..n)
            .map(|k| ((b.id + k) % n) as u32 + 1)
            .filter(|dn| live.contains(dn) && !holders.contains(dn))
            .filter_map(|dn| target_volume(cl, meta, dn, b.id, &mut matches).map(|v| (dn, v)))
            .take(target - holders.len())
            .collect();
        if targets.is_empty() {
            continue;
        }
        for (dn, vol) in targets {
            receive_replica(cl, meta, dn, vol, b, &data, &meta_bytes)?;
        }
        done += 1;
    }
    Ok(done)
}

/// The volume of datanode `dn` a new replica of block `id` goes to: the one `write_replica`
/// chooses if it belongs to the metadata's cluster and block pool, else the first that does.
fn target_volume(
    cl: &Cluster,
    meta: &HdfsMeta,
    dn: u32,
    id: u64,
    matches: &mut HashMap<(u32, u32), bool>,
) -> Option<u32> {
    let first = vol_of(&cl.cfg, id);
    std::iter::once(first)
        .chain((1..=cl.cfg.volumes).filter(|v| *v != first))
        .find(|vol| {
            *matches.entry((dn, *vol)).or_insert_with(|| {
                volume_matches(cl, dn, *vol, &meta.cluster_id, &meta.block_pool_id)
            })
        })
}

/// Datanode `dn` receives a replica of `b` into volume `vol`: written under the block pool's
/// `tmp/`, then moved to `finalized/`; any stale replica of the block on the datanode (other
/// genstamp or length) is removed first, as the namenode would have it invalidated.
fn receive_replica(
    cl: &Cluster,
    meta: &HdfsMeta,
    dn: u32,
    vol: u32,
    b: &Block,
    data: &[u8],
    meta_bytes: &[u8],
) -> Result<()> {
    for v in 1..=cl.cfg.volumes {
        if !volume_matches(cl, dn, v, &meta.cluster_id, &meta.block_pool_id) {
            continue;
        }
        let bp = bp_current(cl, dn, v, &meta.block_pool_id);
        for d in [bp.join("finalized").join(subdirs(b.id)), bp.join("rbw")] {
            remove_block_files(&d, b.id)?;
        }
    }
    let bp = bp_current(cl, dn, vol, &meta.block_pool_id);
    let tmp = bp
        .parent()
        .map(|p| p.join("tmp"))
        .unwrap_or_else(|| bp.join("tmp"));
    let fin = bp.join("finalized").join(subdirs(b.id));
    std::fs::create_dir_all(&tmp)?;
    std::fs::create_dir_all(&fin)?;
    let names = [
        format!("blk_{}_{}.meta", b.id, b.genstamp),
        format!("blk_{}", b.id),
    ];
    for (name, bytes) in names.iter().zip([meta_bytes, data]) {
        std::fs::write(tmp.join(name), bytes)?;
        std::fs::rename(tmp.join(name), fin.join(name))?;
    }
    let _ = std::fs::remove_dir(&tmp);
    Ok(())
}

pub fn main(dir: &Path, args: &[String]) -> Result<i32> {
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    {
        let mut cl = Cluster::open(dir)?;
        if cl.count_call("hdfs")?.is_some() || !cl.rt.services.contains("namenode") {
            eprintln!("safemode: Call From 10.0.0.1 to 10.0.0.1:8020 failed on connection exception: java.net.ConnectException: Connection refused");
            return Ok(255);
        }
    }
    let say = |on: bool| {
        print!(
            "{}",
            if on {
                fx::SAFEMODE_ON
            } else {
                fx::SAFEMODE_OFF
            }
        )
    };
    match a.as_slice() {
        ["dfsadmin", "-safemode", op] => {
            let mut cl = Cluster::open(dir)?;
            match *op {
                "get" => {
                    rereplicate(&mut cl)?;
                    say(safemode_on(&mut cl)?)
                }
                "enter" => {
                    cl.rt.safemode_manual = Some("on".into());
                    cl.save()?;
                    say(true);
                }
                "leave" => {
                    cl.rt.safemode_manual = Some("off".into());
                    cl.save()?;
                    say(false);
                }
                "wait" => {
                    let poll = cl.cfg.safemode_poll_ms;
                    drop(cl);
                    loop {
                        let mut cl = Cluster::open(dir)?;
                        rereplicate(&mut cl)?;
                        if !safemode_on(&mut cl)? {
                            break;
                        }
                        drop(cl);
                        std::thread::sleep(std::time::Duration::from_millis(poll));
                    }
                    say(false);
                }
                _ => {
                    eprintln!("Usage: hdfs dfsadmin [-safemode enter | leave | get | wait]");
                    return Ok(255);
                }
            }
            Ok(0)
        }
        ["fsck", "/", ..] => fsck(dir),
        _ => {
            eprintln!("Usage: hdfs [dfsadmin -safemode get|wait|enter|leave | fsck /]");
            Ok(1)
        }
    }
}

/// Java's `Float.toString`: the fewest significant digits that read back as `x` (on a tie
/// between two such, the even one, where Rust's shortest form takes the upper), with at least
/// one digit after the point; `d.dddE<n>` below 10^-3 and from 10^7 on. Checked against JDK 17
/// for every `n * 100 / d` and `n / d` (d <= 1000, n <= 3d); from 10^7 on JDK <= 18 sometimes
/// prints a ninth digit, which is not modelled (fsck's numbers stay below).
pub fn java_float(x: f32) -> String {
    if x.is_nan() {
        return "NaN".into();
    }
    if x.is_infinite() {
        return if x > 0.0 { "Infinity" } else { "-Infinity" }.into();
    }
    if x == 0.0 {
        return if x.is_sign_negative() { "-0.0" } else { "0.0" }.into();
    }
    // The number of significant digits of the shortest form, then the exact value rounded to
    // that many (half to even; `x as f64` is exact).
    let shortest = format!("{x:e}");
    let digits = shortest
        .split('e')
        .next()
        .unwrap_or("")
        .bytes()
        .filter(u8::is_ascii_digit)
        .count()
        .max(1);
    let sci = format!("{:.*e}", digits - 1, x as f64);
    let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let (sign, mantissa) = match mantissa.strip_prefix('-') {
        Some(m) => ("-", m),
        None => ("", mantissa),
    };
    let ds: String = mantissa.chars().filter(char::is_ascii_digit).collect();
    let ds = ds.trim_end_matches('0');
    let ds = if ds.is_empty() { "0" } else { ds };
    if (-3..7).contains(&exp) {
        // Plain: the point after digit exp + 1 (zeros padded on either side).
        let point = exp + 1;
        let (int, frac) = if point <= 0 {
            ("0".to_string(), "0".repeat((-point) as usize) + ds)
        } else if point as usize >= ds.len() {
            (
                ds.to_string() + &"0".repeat(point as usize - ds.len()),
                String::new(),
            )
        } else {
            (
                ds[..point as usize].to_string(),
                ds[point as usize..].to_string(),
            )
        };
        let frac = if frac.is_empty() {
            "0".to_string()
        } else {
            frac
        };
        format!("{sign}{int}.{frac}")
    } else {
        let frac = if ds.len() > 1 { &ds[1..] } else { "0" };
        format!("{sign}{}.{frac}E{exp}", &ds[..1])
    }
}

/// Java's `Date.toString()` (the namenode's zone: UTC).
fn java_date(t: chrono::DateTime<chrono::Utc>) -> String {
    t.format("%a %b %d %H:%M:%S UTC %Y").to_string()
}

/// The first line of the fsck fixtures (healthy, then corrupt) for which `pred` holds.
fn fsck_tpl(pred: impl Fn(&str) -> bool) -> &'static str {
    [fx::FSCK_HEALTHY, fx::FSCK_CORRUPT]
        .into_iter()
        .flat_map(str::lines)
        .find(|l| pred(l))
        .unwrap_or_else(|| panic!("no such line in the fsck fixtures"))
}

/// A fixture line starting with `label` with its numbers replaced by `vals`; `pct`: the
/// percentage in ` (<n> %)`, `None` to drop the parenthesis (as Java does with no blocks).
fn fsck_line(label: &str, vals: &[String], pct: Option<String>) -> String {
    let tpl = fsck_tpl(|l| l.starts_with(label));
    let mut vals = vals.to_vec();
    let tpl = match pct {
        Some(p) => {
            vals.push(p);
            tpl
        }
        None => tpl.split(" (").next().unwrap_or(tpl),
    };
    fx::fill_numbers(tpl, &vals)
}

/// The text the namenode's fsck servlet sends for `/` (`NamenodeFsck.fsck()`), and whether the
/// filesystem is HEALTHY. `started`: the date printed first; `ended`: the date printed last and
/// the milliseconds taken.
fn fsck_text(
    cl: &Cluster,
    meta: &HdfsMeta,
    started: &str,
    ended: impl FnOnce() -> (String, u128),
) -> (String, bool) {
    let live = live_datanodes(cl);
    let target = cl.cfg.replication() as usize;
    let mut matches = HashMap::new();
    let mut o = String::new();
    let tpl = fsck_tpl(|l| l.starts_with("FSCK started by "));
    let head = &tpl[..tpl.find(" at ").map(|i| i + 4).unwrap_or(tpl.len())];
    o += &v().d(&cl.cfg.mgm_ip).fill(head);
    o += started;
    o.push('\n');

    // The namespace under `/`: every file (an inode of the metadata; a block whose inode is
    // not there stands for a file of its own) in the order fsck walks it (a directory's entries
    // by name, depth first), and its directories.
    let mut by_inode: BTreeMap<u64, Vec<&Block>> = BTreeMap::new();
    for b in &meta.blocks {
        by_inode.entry(b.inode).or_default().push(b);
    }
    let mut files: Vec<(String, Vec<&Block>)> = meta
        .inodes
        .iter()
        .map(|(ino, p)| (p.clone(), by_inode.remove(ino).unwrap_or_default()))
        .collect();
    files.extend(
        by_inode
            .into_iter()
            .map(|(ino, bs)| (format!("/inode{ino}"), bs)),
    );
    files.sort_by(|a, b| a.0.split('/').cmp(b.0.split('/')));
    let mut dirs = BTreeSet::from(["/".to_string()]);
    for (p, _) in &files {
        let mut d = p.as_str();
        while let Some(i) = d.rfind('/') {
            d = &d[..i];
            if d.is_empty() {
                break;
            }
            dirs.insert(d.to_string());
        }
    }

    let under_tpl = fsck_tpl(|l| l.contains(" Under replicated "));
    let under_label = &under_tpl[under_tpl.find(": ").map(|i| i + 2).unwrap_or(0)
        ..under_tpl.find("BP-").unwrap_or(under_tpl.len())];
    let under_tail = &under_tpl[under_tpl.find(". Target").unwrap_or(under_tpl.len())..];
    let missing_tpl = fsck_tpl(|l| l.contains(": MISSING "));
    let missing_tpl = &missing_tpl[missing_tpl.find(": MISSING ").unwrap_or(0)..];
    let missing_tpl = &missing_tpl[..missing_tpl.find(" B.").map(|i| i + 3).unwrap_or(0)];

    let (mut total_files, mut total_size, mut total_blocks) = (0u64, 0u64, 0u64);
    let (mut total_replicas, mut expected_replicas) = (0u64, 0u64);
    let (mut min_replicated, mut under_min, mut over, mut under) = (0u64, 0u64, 0u64, 0u64);
    let (mut missing_replicas, mut missing_blocks, mut missing_size) = (0u64, 0u64, 0u64);
    let mut corrupt_files = 0u64;
    for (path, blocks) in &files {
        total_files += 1;
        total_size += blocks.iter().map(|b| b.len).sum::<u64>();
        total_blocks += blocks.len() as u64;
        o.push('.');
        if total_files % 100 == 0 {
            o.push('\n');
        }
        let (mut missing, mut missize) = (0u64, 0u64);
        for b in blocks {
            let live_replicas = live_holders(cl, meta, b, &live, &mut matches).len();
            total_replicas += live_replicas as u64;
            expected_replicas += target as u64;
            if live_replicas < MIN_REPLICATION {
                under_min += 1;
            } else {
                min_replicated += 1;
            }
            if live_replicas > target {
                over += 1;
            }
            if live_replicas > 0 && live_replicas < target {
                missing_replicas += (target - live_replicas) as u64;
                under += 1;
                o += &format!(
                    "\n{path}: {under_label}{}:blk_{}_{}{}\n",
                    meta.block_pool_id,
                    b.id,
                    b.genstamp,
                    v().n(target).n(live_replicas).n(0).n(0).fill(under_tail)
                );
            }
            if live_replicas == 0 {
                missing += 1;
                missize += b.len;
            }
        }
        if missing > 0 {
            o += &format!("\n{path}{}", v().n(missing).n(missize).fill(missing_tpl));
            missing_blocks += missing;
            missing_size += missize;
            corrupt_files += 1;
        }
    }

    // Result.toString()
    let healthy = missing_blocks == 0;
    let status = |tpl: &'static str, word: &str| {
        let l = tpl.lines().find(|l| l.contains(word)).unwrap_or("");
        l[l.find(word).unwrap_or(0)..].to_string()
    };
    o += &if healthy {
        status(fx::FSCK_HEALTHY, "Status: ")
    } else {
        status(fx::FSCK_CORRUPT, "Status: ")
    };
    let n = |x: u64| x.to_string();
    let pct =
        |x: u64| (total_blocks > 0).then(|| java_float((x * 100) as f32 / total_blocks as f32));
    let mut lines = vec![
        fsck_line(" Total size:", &[n(total_size)], None),
        fsck_line(" Total dirs:", &[n(dirs.len() as u64)], None),
        fsck_line(" Total files:", &[n(total_files)], None),
        fsck_line(" Total symlinks:", &[n(0)], None),
        fsck_line(
            " Total blocks (validated):",
            &[n(total_blocks)],
            (total_blocks > 0).then(|| n(total_size / total_blocks.max(1))),
        ),
    ];
    if corrupt_files > 0 || under_min > 0 {
        let stars = fsck_tpl(|l| l.starts_with("  ****"));
        lines.push(stars.to_string());
        if under_min > 0 {
            lines.push(fsck_line(
                "  UNDER MIN REPL'D BLOCKS:",
                &[n(under_min)],
                pct(under_min),
            ));
            lines.push(fsck_line(
                "  DFSConfigKeys.DFS_NAMENODE_REPLICATION_MIN_KEY:",
                &[n(MIN_REPLICATION as u64)],
                None,
            ));
        }
        if corrupt_files > 0 {
            lines.push(fsck_line("  CORRUPT FILES:", &[n(corrupt_files)], None));
            if missing_size > 0 {
                lines.push(fsck_line("  MISSING BLOCKS:", &[n(missing_blocks)], None));
                lines.push(fsck_line("  MISSING SIZE:", &[n(missing_size)], None));
            }
        }
        lines.push(stars.to_string());
    }
    let average = if total_blocks == 0 {
        0.0
    } else {
        total_replicas as f32 / total_blocks as f32
    };
    lines.extend([
        fsck_line(
            " Minimally replicated blocks:",
            &[n(min_replicated)],
            pct(min_replicated),
        ),
        fsck_line(" Over-replicated blocks:", &[n(over)], pct(over)),
        fsck_line(" Under-replicated blocks:", &[n(under)], pct(under)),
        fsck_line(" Mis-replicated blocks:", &[n(0)], pct(0)),
        fsck_line(" Default replication factor:", &[n(target as u64)], None),
        fsck_line(" Average block replication:", &[java_float(average)], None),
        fsck_line(" Corrupt blocks:", &[n(0)], None),
        fsck_line(
            " Missing replicas:",
            &[n(missing_replicas)],
            (total_replicas > 0)
                .then(|| java_float((missing_replicas * 100) as f32 / expected_replicas as f32)),
        ),
    ]);
    for l in lines {
        o.push('\n');
        o += &l;
    }
    o.push('\n');
    o += &fsck_line(" Number of data-nodes:", &[n(live.len() as u64)], None);
    o.push('\n');
    let racks = u64::from(!live.is_empty());
    o += &fsck_line(" Number of racks:", &[n(racks)], None);
    o.push('\n');
    let (date, ms) = ended();
    let tpl = fsck_tpl(|l| l.starts_with("FSCK ended at "));
    let (head, tail) = (
        &tpl[..tpl.find(" at ").map(|i| i + 4).unwrap_or(0)],
        &tpl[tpl.find(" in ").unwrap_or(tpl.len())..],
    );
    o += &format!("{head}{date}{}\n", v().n(ms).fill(tail));
    let last = if healthy {
        fx::FSCK_HEALTHY
    } else {
        fx::FSCK_CORRUPT
    };
    o += "\n\n";
    o += last.lines().last().unwrap_or("");
    (o, healthy)
}

fn fsck(dir: &Path) -> Result<i32> {
    let t0 = std::time::Instant::now();
    let started = java_date(chrono::Utc::now());
    let mut cl = Cluster::open(dir)?;
    eprintln!(
        "{}",
        v().d(&cl.cfg.mgm_ip)
            .n(50070)
            .n(2)
            .fill(line(fx::FSCK_CONNECTING, 0))
    );
    rereplicate(&mut cl)?;
    let db = cl.db()?;
    let Some(meta) = hdfs_meta(&db)? else {
        eprintln!("fsck: Connection refused");
        return Ok(255);
    };
    let (text, healthy) = fsck_text(&cl, &meta, &started, || {
        (java_date(chrono::Utc::now()), t0.elapsed().as_millis())
    });
    // DFSck prints what the servlet sends line by line.
    let mut out = String::new();
    for l in text.lines() {
        out += l;
        out.push('\n');
    }
    print!("{out}");
    Ok(if healthy { 0 } else { 1 })
}

/// `datanode start|stop K`: a started datanode with an empty volume formats it for the cluster
/// and block pool of the metadata, as a real datanode does on registration.
/// `datanode start|stop|status K`; `status` prints `active` (exit 0) or `inactive` (exit 3), as
/// `systemctl is-active` does. Stopping one restarts the ReplicationMonitor's clock.
pub fn datanode(dir: &Path, op: &str, dn: u32) -> Result<i32> {
    let mut cl = Cluster::open(dir)?;
    if dn == 0 || dn > cl.cfg.hopsfs_datanodes {
        bail!("failed to {op} datanode {dn}: no such datanode");
    }
    match op {
        "status" => {
            let active = cl.rt.dn_started.contains(&dn);
            println!("{}", if active { "active" } else { "inactive" });
            return Ok(if active { 0 } else { 3 });
        }
        "start" => {
            if let Some(meta) = hdfs_meta(&cl.db()?)? {
                for vol in 1..=cl.cfg.volumes {
                    if !cl.volume(dn, vol).join("current").join("VERSION").exists() {
                        format_volume(&cl, dn, vol, &meta.cluster_id, &meta.block_pool_id)?;
                    }
                }
            }
            if !cl.rt.dn_started.contains(&dn) {
                cl.rt.dn_started.push(dn);
                cl.rt.dn_started.sort();
            }
        }
        "stop" => {
            cl.rt.dn_started.retain(|d| *d != dn);
            stop_replication(&mut cl);
        }
        _ => bail!("failed to run datanode command: unknown operation '{op}'"),
    }
    cl.save()?;
    Ok(0)
}

pub fn reindex_epipe(dir: &Path) -> Result<i32> {
    let mut cl = Cluster::open(dir)?;
    if cl.count_call("reindex-epipe.sh")?.is_some() {
        eprintln!("Reindex failed: could not connect to OpenSearch");
        return Ok(1);
    }
    if cl.rt.services.contains("epipe") {
        print!("{}", fx::EPIPE_RUNNING);
        return Ok(1);
    }
    let db = cl.db()?;
    let Some(meta) = hdfs_meta(&db)? else {
        eprintln!("ERROR: Table 'hops.hdfs_inodes' doesn't exist");
        return Ok(1);
    };
    let n = meta.inodes.len();
    println!("{}", v().n(n).fill(line(fx::EPIPE_REINDEX, 0)));
    println!("{}", line(fx::EPIPE_REINDEX, 1));
    cl.rt
        .reindexes
        .push(format!("{} inodes={n}", chrono::Utc::now().to_rfc3339()));
    cl.save()?;
    Ok(0)
}

pub fn kafka_restore(dir: &Path) -> Result<i32> {
    let mut cl = Cluster::open(dir)?;
    if cl.count_call("kafka-restore.sh")?.is_some() {
        eprintln!("Error while executing topic command : Timed out waiting for a node assignment.");
        return Ok(1);
    }
    let db = cl.db()?;
    if !table_exists(&db, "hopsworks", "project_topics")? {
        eprintln!("ERROR 1146 (42S02): Table 'hopsworks.project_topics' doesn't exist");
        return Ok(1);
    }
    let mut st = db.prepare(
        "SELECT val FROM ndb_rows WHERE db = 'hopsworks' AND tbl = 'project_topics' ORDER BY pk",
    )?;
    let vals: Vec<String> = st
        .query_map([], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    let tpl = line(fx::KAFKA_RESTORE, 0);
    let (pre, post) = (
        &tpl[..tpl.find("proj").unwrap_or(0)],
        &tpl[tpl.rfind('.').unwrap_or(tpl.len())..],
    );
    for val in vals {
        let w: Vec<&str> = val.split(' ').collect();
        let [t, p, r] = w.as_slice() else { continue };
        if cl.rt.kafka_topics.contains_key(*t) {
            continue;
        }
        cl.rt.kafka_topics.insert(
            t.to_string(),
            (p.parse().unwrap_or(1), r.parse().unwrap_or(1)),
        );
        println!("{pre}{t}{post}");
    }
    cl.save()?;
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{create, fingerprint, remove_replica, CreateArgs};

    #[test]
    fn java_float_prints_like_float_to_string() {
        // Float.toString of JDK 17 for the same floats.
        for (x, java) in [
            (100.0f32, "100.0"),
            (0.0, "0.0"),
            (90.0, "90.0"),
            (12.5, "12.5"),
            (100.0 / 3.0, "33.333332"),
            (200.0 / 3.0, "66.666664"),
            (1.0 / 3.0, "0.33333334"),
            (8.0 / 3.0, "2.6666667"),
            (100.0 / 12.0, "8.333333"),
            (25700.0 / 256.0, "100.390625"),
            (257.0 / 256.0, "1.0039062"),
            (32900.0 / 256.0, "128.51562"),
            (0.001, "0.001"),
            (100.0 / 250_000.0, "4.0E-4"),
            (1.0 / 100_000.0, "1.0E-5"),
            (1e7, "1.0E7"),
            (9_999_999.0, "9999999.0"),
            (-2.5, "-2.5"),
        ] {
            assert_eq!(java_float(x), java, "{x}");
        }
    }

    fn cluster(dir: &Path, extra: impl FnOnce(&mut CreateArgs)) -> Cluster {
        let mut a = CreateArgs {
            dir: dir.to_path_buf(),
            data_nodes: 2,
            hopsfs_datanodes: 3,
            volumes: 1,
            rows: 10,
            files: 8,
            block_size: 4096,
            replication: None,
            seed: 1,
            multi_part: 0,
            compressed: false,
            safemode_poll_ms: 50,
            safemode_extension_ms: 0,
            replication_interval_ms: 200,
            api_slots: 10,
            binlog: false,
            wildcard_addresses: false,
        };
        extra(&mut a);
        create(a).unwrap();
        Cluster::open(dir).unwrap()
    }

    /// Digit runs as `N`: the shape of a text, whatever the numbers and dates.
    fn shape(s: &str) -> String {
        let mut out = String::new();
        for c in s.chars() {
            if !c.is_ascii_digit() {
                out.push(c);
            } else if !out.ends_with('N') {
                out.push('N');
            }
        }
        out
    }

    fn text(cl: &Cluster) -> (String, bool) {
        let meta = hdfs_meta(&cl.db().unwrap()).unwrap().unwrap();
        let date = "Wed Nov 25 21:00:00 UTC 2026";
        fsck_text(cl, &meta, date, || (date.to_string(), 14))
    }

    #[test]
    fn fsck_of_a_healthy_cluster_has_the_lines_of_the_fixture() {
        let tmp = tempfile::tempdir().unwrap();
        let cl = cluster(&tmp.path().join("c"), |_| {});
        let (t, healthy) = text(&cl);
        assert!(healthy);
        assert_eq!(shape(&t), shape(fx::FSCK_HEALTHY.trim_end()));
        assert!(t.contains("\n........Status: HEALTHY\n"), "{t}");
        assert!(t.contains(" Total dirs:\t5\n Total files:\t8\n"), "{t}");
        assert!(
            t.contains(" Minimally replicated blocks:\t8 (100.0 %)\n"),
            "{t}"
        );
        assert!(t.contains(" Average block replication:\t3.0\n"), "{t}");
        assert!(t.contains(" Missing replicas:\t\t0 (0.0 %)\n"), "{t}");
        assert!(t.ends_with("milliseconds\n\n\nThe filesystem under path '/' is HEALTHY"));
    }

    #[test]
    fn fsck_reports_under_replicated_and_missing_blocks() {
        let tmp = tempfile::tempdir().unwrap();
        let cl = cluster(&tmp.path().join("c"), |_| {});
        let meta = hdfs_meta(&cl.db().unwrap()).unwrap().unwrap();
        // Block 4: one replica left; block 7: none.
        let (b4, b7) = (&meta.blocks[3], &meta.blocks[6]);
        for dn in 1..=3 {
            remove_replica(&cl, dn, b7.id).unwrap();
        }
        for dn in b4.replicas.iter().skip(1) {
            remove_replica(&cl, *dn, b4.id).unwrap();
        }
        let (t, healthy) = text(&cl);
        assert!(!healthy);
        assert_eq!(shape(&t), shape(fx::FSCK_CORRUPT.trim_end()), "{t}");
        let p4 = &meta.inodes[&b4.inode];
        let p7 = &meta.inodes[&b7.inode];
        assert!(
            t.contains(&format!(
                "\n{p4}:  Under replicated {}:blk_{}_{}. Target Replicas is 3 but found 1 live replica(s), 0 decommissioned replica(s) and 0 decommissioning replica(s).\n",
                meta.block_pool_id, b4.id, b4.genstamp
            )),
            "{t}"
        );
        assert!(
            t.contains(&format!(
                "\n{p7}: MISSING 1 blocks of total size {} B.",
                b7.len
            )),
            "{t}"
        );
        for l in [
            "  UNDER MIN REPL'D BLOCKS:\t1 (12.5 %)\n",
            "  CORRUPT FILES:\t1\n",
            "  MISSING BLOCKS:\t1\n",
            " Minimally replicated blocks:\t7 (87.5 %)\n",
            " Under-replicated blocks:\t1 (12.5 %)\n",
            " Average block replication:\t2.375\n",
            " Missing replicas:\t\t2 (8.333333 %)\n",
        ] {
            assert!(t.contains(l), "{l:?} in {t}");
        }
        assert!(t.ends_with("\n\n\nThe filesystem under path '/' is CORRUPT"));
    }

    #[test]
    fn fsck_puts_a_newline_after_every_100_files() {
        let tmp = tempfile::tempdir().unwrap();
        let cl = cluster(&tmp.path().join("c"), |a| a.files = 205);
        let (t, _) = text(&cl);
        let dots: Vec<&str> = t.lines().skip(1).take(3).collect();
        assert_eq!(dots[0], ".".repeat(100));
        assert_eq!(dots[1], ".".repeat(100));
        assert_eq!(dots[2], ".....Status: HEALTHY");
    }

    #[test]
    fn rereplication_waits_for_safe_mode_off_then_copies_per_interval() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("c");
        let mut cl = cluster(&dir, |a| {
            a.files = 10;
            a.safemode_extension_ms = 1000;
        });
        let before = fingerprint(&cl).unwrap();
        let meta = hdfs_meta(&cl.db().unwrap()).unwrap().unwrap();
        // 7 blocks down to one replica, one block down to two.
        for b in &meta.blocks[..7] {
            for dn in &b.replicas[1..] {
                remove_replica(&cl, *dn, b.id).unwrap();
            }
        }
        remove_replica(&cl, meta.blocks[9].replicas[0], meta.blocks[9].id).unwrap();
        let under = |cl: &Cluster| {
            let mut m = HashMap::new();
            let live = live_datanodes(cl);
            meta.blocks
                .iter()
                .filter(|b| live_holders(cl, &meta, b, &live, &mut m).len() < 3)
                .count()
        };
        assert_eq!(under(&cl), 8);
        // Safe mode ON during the extension: nothing.
        let t0 = 1_000_000;
        rereplicate_at(&mut cl, t0).unwrap();
        rereplicate_at(&mut cl, t0 + 999).unwrap();
        assert_eq!(cl.rt.replication_since_ms, None);
        assert_eq!(under(&cl), 8);
        // OFF: the monitor's clock starts; the first iteration one interval later copies
        // 3 live datanodes x 2 blocks, the ones with a single replica first.
        rereplicate_at(&mut cl, t0 + 1000).unwrap();
        assert_eq!(cl.rt.replication_since_ms, Some(t0 + 1000));
        rereplicate_at(&mut cl, t0 + 1199).unwrap();
        assert_eq!(under(&cl), 8);
        rereplicate_at(&mut cl, t0 + 1200).unwrap();
        assert_eq!(under(&cl), 2);
        assert_eq!(cl.rt.replication_iterations, 1);
        let mut m = HashMap::new();
        let live = live_datanodes(&cl);
        assert_eq!(
            live_holders(&cl, &meta, &meta.blocks[6], &live, &mut m).len(),
            1,
            "block 7 (one replica) waits for the next iteration"
        );
        // State on disk: a new call sees the same clock.
        drop(cl);
        let mut cl = Cluster::open(&dir).unwrap();
        rereplicate_at(&mut cl, t0 + 1399).unwrap();
        assert_eq!(under(&cl), 2);
        rereplicate_at(&mut cl, t0 + 1400).unwrap();
        assert_eq!(under(&cl), 0);
        assert_eq!(fingerprint(&cl).unwrap(), before);
        let (t, healthy) = text(&cl);
        assert!(healthy);
        assert!(t.contains(" Under-replicated blocks:\t0 (0.0 %)\n"), "{t}");
        // No tmp/ left behind.
        let bp = crate::model::bp_current(&cl, 1, 1, &meta.block_pool_id);
        assert!(!bp.parent().unwrap().join("tmp").exists());
    }

    #[test]
    fn rereplication_restarts_after_a_datanode_stops_and_skips_corrupt_sources() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("c");
        let mut cl = cluster(&dir, |a| a.files = 4);
        let meta = hdfs_meta(&cl.db().unwrap()).unwrap().unwrap();
        let t0 = 1_000_000;
        rereplicate_at(&mut cl, t0).unwrap();
        assert_eq!(cl.rt.replication_since_ms, Some(t0));
        drop(cl);
        assert_eq!(datanode(&dir, "stop", 2).unwrap(), 0);
        let mut cl = Cluster::open(&dir).unwrap();
        assert_eq!(cl.rt.replication_since_ms, None);
        // Block 1 down to the replica of its first datanode, whose bytes are then damaged:
        // no good source, it stays under-replicated; block 2 down to one good replica.
        let (b1, b2) = (&meta.blocks[0], &meta.blocks[1]);
        for dn in &b1.replicas[1..] {
            remove_replica(&cl, *dn, b1.id).unwrap();
        }
        for dn in &b2.replicas[1..] {
            remove_replica(&cl, *dn, b2.id).unwrap();
        }
        let mut m = HashMap::new();
        let f = replica_file(&cl, &meta, b1.replicas[0], b1, &mut m).unwrap();
        let mut bytes = std::fs::read(&f).unwrap();
        bytes[0] ^= 0xff;
        std::fs::write(&f, bytes).unwrap();
        cl.rt.dn_started.push(2);
        cl.rt.dn_started.sort();
        cl.save().unwrap();
        rereplicate_at(&mut cl, t0 + 10_000).unwrap();
        assert_eq!(cl.rt.replication_since_ms, Some(t0 + 10_000));
        rereplicate_at(&mut cl, t0 + 10_200).unwrap();
        let live = live_datanodes(&cl);
        assert_eq!(live_holders(&cl, &meta, b1, &live, &mut m).len(), 1);
        assert_eq!(live_holders(&cl, &meta, b2, &live, &mut m), vec![1, 2, 3]);
    }
}
