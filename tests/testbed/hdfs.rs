//! `hdfs dfsadmin -safemode ...`, `hdfs fsck /`, HopsFS datanodes, `reindex-epipe.sh`,
//! `kafka-restore.sh`.

use crate::fixtures::{self as fx, line, v};
use crate::model::{format_volume, hdfs_meta, replica_file, table_exists, HdfsMeta};
use crate::state::Cluster;
use anyhow::{bail, Result};
use std::collections::HashMap;
use std::path::Path;

/// Blocks of the metadata that started, reachable datanodes report (right length and genstamp,
/// in volumes of the metadata's cluster and block pool), and the total.
pub fn reported(cl: &Cluster, meta: &HdfsMeta) -> (usize, usize, Vec<u64>) {
    let mut matches = HashMap::new();
    let mut ok = 0;
    let mut missing = Vec::new();
    for b in &meta.blocks {
        let found = (1..=cl.cfg.hopsfs_datanodes)
            .filter(|dn| cl.rt.dn_started.contains(dn) && !cl.rt.dn_unreachable.contains(dn))
            .any(|dn| replica_file(cl, meta, dn, b, &mut matches).is_some());
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
    match cl.rt.safemode_manual.as_deref() {
        Some("on") => return Ok(true),
        Some("off") => return Ok(false),
        _ => {}
    }
    let below = below_threshold(cl)?;
    let now = chrono::Utc::now().timestamp_millis();
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
                "get" => say(safemode_on(&mut cl)?),
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

fn fsck(dir: &Path) -> Result<i32> {
    let cl = Cluster::open(dir)?;
    let db = cl.db()?;
    let Some(meta) = hdfs_meta(&db)? else {
        eprintln!("fsck: Connection refused");
        return Ok(255);
    };
    let (ok, total, missing) = reported(&cl, &meta);
    let t = if missing.is_empty() {
        fx::FSCK_HEALTHY
    } else {
        fx::FSCK_CORRUPT
    };
    let ls: Vec<&str> = t.lines().collect();
    println!("{}", v().d(&cl.cfg.mgm_ip).n(50070).n(2).fill(ls[0]));
    println!(
        "FSCK started by hdfs (auth:SIMPLE) from /{} for path / at {}",
        cl.cfg.mgm_ip,
        chrono::Utc::now().format("%a %b %d %H:%M:%S UTC %Y")
    );
    let by_id: HashMap<u64, &crate::model::Block> = meta.blocks.iter().map(|b| (b.id, b)).collect();
    let mut k = 2;
    if !missing.is_empty() {
        for id in &missing {
            let b = by_id[id];
            let path = meta
                .inodes
                .get(&b.inode)
                .cloned()
                .unwrap_or_else(|| format!("/inode{}", b.inode));
            let tail = &ls[2][ls[2].find(':').unwrap_or(0)..];
            println!("{path}{}", v().n(1).n(b.len).fill(tail));
        }
        k = 3;
    }
    let size: u64 = meta.blocks.iter().map(|b| b.len).sum();
    let avg = if total > 0 { size / total as u64 } else { 0 };
    let pct = if total > 0 {
        ok as f64 * 100.0 / total as f64
    } else {
        100.0
    };
    let pct = format!("{pct:.1}");
    println!("{}", ls[k]);
    println!("{}", ls[k + 1]);
    println!("{}", v().n(size).fill(ls[k + 2]));
    println!("{}", v().n(meta.inodes.len()).fill(ls[k + 3]));
    println!("{}", v().n(total).n(avg).fill(ls[k + 4]));
    println!("{}", v().n(ok).d(&pct).fill(ls[k + 5]));
    println!("{}", v().n(missing.len()).fill(ls[k + 6]));
    println!("{}", v().n(0).fill(ls[k + 7]));
    println!("{}", v().n(cl.cfg.replication()).fill(ls[k + 8]));
    println!("{}", v().n(cl.cfg.hopsfs_datanodes).fill(ls[k + 9]));
    println!();
    println!("{}", ls[k + 11]);
    Ok(if missing.is_empty() { 0 } else { 1 })
}

/// `datanode start|stop K`: a started datanode with an empty volume formats it for the cluster
/// and block pool of the metadata, as a real datanode does on registration.
/// `datanode start|stop|status K`; `status` prints `active` (exit 0) or `inactive` (exit 3), as
/// `systemctl is-active` does.
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
        "stop" => cl.rt.dn_started.retain(|d| *d != dn),
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
