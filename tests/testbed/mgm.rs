//! `ndb_mgm -c <connectstring> -e "<command>"`, with the backup encryption options of RonDB's
//! client: `--encrypt-backup` (START BACKUP is taken as START BACKUP ENCRYPT),
//! `--backup-password=<pw>` and `--backup-password-from-stdin` (one line, printable ASCII).

use crate::backupfmt::{self, seal};
use crate::fixtures::{self as fx, find, line, v};
use crate::state::Cluster;
use anyhow::Result;
use std::path::{Path, PathBuf};

/// Connection check shared by the NDB API tools: Some(connectstring) that failed, or None.
pub fn connect_fails(cl: &Cluster, connectstring: Option<&str>) -> Option<String> {
    let cs = connectstring.unwrap_or("localhost:1186").to_string();
    let hostport = cs.rsplit(',').next().unwrap_or("").trim();
    let port = hostport
        .rsplit_once(':')
        .and_then(|(_, p)| p.parse::<u16>().ok())
        .unwrap_or(1186);
    (cl.rt.mgm_down || port != cl.cfg.mgm_port).then_some(cs)
}

pub fn main(dir: &Path, args: &[String]) -> Result<i32> {
    let mut cs: Option<String> = None;
    let mut cmd: Option<String> = None;
    let mut encrypt_backup = false;
    let mut password: Option<String> = None;
    let mut password_from_stdin = false;
    let mut i = 0;
    while i < args.len() {
        let a = &args[i];
        let take = |i: &mut usize| -> Option<String> {
            *i += 1;
            args.get(*i).cloned()
        };
        if a == "-c"
            || a == "--ndb-connectstring"
            || a == "--connect-string"
            || a == "--ndb_connectstring"
        {
            cs = take(&mut i);
        } else if let Some(x) = a
            .strip_prefix("--ndb-connectstring=")
            .or_else(|| a.strip_prefix("--connect-string="))
            .or_else(|| a.strip_prefix("--ndb_connectstring="))
        {
            cs = Some(x.to_string());
        } else if a == "-e" || a == "--execute" {
            cmd = take(&mut i);
        } else if let Some(x) = a.strip_prefix("--execute=") {
            cmd = Some(x.to_string());
        } else if a == "--encrypt-backup" {
            encrypt_backup = true;
        } else if a == "--backup-password-from-stdin" {
            password_from_stdin = true;
        } else if a == "--backup-password" {
            password = take(&mut i);
        } else if let Some(x) = a.strip_prefix("--backup-password=") {
            password = Some(x.to_string());
        } else if a == "-t" || a == "--try-reconnect" {
            take(&mut i);
        } else if a.starts_with("--try-reconnect=") {
        } else if let Some(x) = a.strip_prefix("-c").filter(|x| !x.is_empty()) {
            cs = Some(x.to_string());
        } else if let Some(x) = a.strip_prefix("-e").filter(|x| !x.is_empty()) {
            cmd = Some(x.to_string());
        } else if a.starts_with('-') {
            eprintln!("ndb_mgm: [ERROR] unknown option '{a}'.");
            return Ok(255);
        } else {
            cs = Some(a.clone());
        }
        i += 1;
    }
    if password.is_some() && password_from_stdin {
        eprintln!("Error: backup password: Multiple options for same password used.  Select one of --backup-password and --backup-password-from-stdin.");
        return Ok(2);
    }
    if password_from_stdin {
        match crate::restore::password_from_stdin() {
            Ok(p) => password = Some(p),
            Err(msg) => {
                eprintln!("Error: backup password: {msg}");
                return Ok(2);
            }
        }
    }
    let mut cl = Cluster::open(dir)?;
    let fault = cl.count_call("ndb_mgm")?;
    let Some(cmd) = cmd else {
        eprintln!("ndb_mgm: the test-bed supports only -e <command>");
        return Ok(255);
    };
    if let Some(bad) = connect_fails(&cl, cs.as_deref())
        .or_else(|| (fault.as_deref() == Some("fail")).then(|| cs.clone().unwrap_or_default()))
    {
        let t = fx::CONNECT_FAILED;
        let l0 = line(t, 0);
        let prefix = &l0[..l0.find("nodeid=0,").map(|i| i + 9).unwrap_or(0)];
        println!("{prefix}{}", bad.rsplit(',').next().unwrap_or(""));
        println!("{}", line(t, 1));
        return Ok(255);
    }
    let c = &cl.cfg;
    println!("{}", v().d(&c.mgm_ip).n(c.mgm_port).fill(line(fx::SHOW, 0)));
    let words: Vec<String> = cmd.split_whitespace().map(str::to_uppercase).collect();
    let w: Vec<&str> = words.iter().map(String::as_str).collect();
    match w.as_slice() {
        ["SHOW"] => {
            show(&cl)?;
            Ok(0)
        }
        ["ALL", "STATUS"] => {
            all_status(&cl);
            Ok(0)
        }
        ["ALL", "REPORT", "BACKUPSTATUS"] | ["ALL", "REPORT", "BACKUP"] => {
            report(&cl);
            Ok(0)
        }
        // Only an order to the master: "ordered" whether or not such a backup runs; "failed"
        // (with the management API's error block) when no data node is alive.
        ["ABORT", "BACKUP", id] => {
            if (1..=cl.cfg.data_nodes).all(|n| cl.rt.ndb_down.contains(&n)) {
                println!("{}", v().n(id).fill(line(fx::ABORT_FAILED, 1)));
                println!("{}", line(fx::ABORT_FAILED, 2));
                println!("{}", line(fx::ABORT_FAILED, 3));
                return Ok(255);
            }
            if id.parse::<u64>().ok() == cl.rt.running_backup {
                cl.rt.running_backup = None;
                cl.save()?;
            }
            println!("{}", v().n(id).fill(line(fx::ABORT_OK, 1)));
            Ok(0)
        }
        ["START", "BACKUP", rest @ ..] => {
            let enc = Encryption {
                option: encrypt_backup,
                password: password.as_deref(),
            };
            start_backup(&mut cl, rest, &cmd, fault.as_deref(), enc)
        }
        _ => {
            println!("Invalid command: {cmd}");
            println!("Type HELP for help.");
            println!();
            Ok(255)
        }
    }
}

/// `SHOW`: the data nodes (with `@address`, or a single space for a wildcard address), the
/// management server, then every API slot: the MySQL server (67), the clients holding the
/// `[API]` slots, the free slots "accepting connect from any host".
fn show(cl: &Cluster) -> Result<()> {
    let c = &cl.cfg;
    let t = fx::SHOW;
    let lines: Vec<&str> = t.lines().collect();
    let data_tpl = |master: bool| {
        let f = if c.wildcard_addresses {
            fx::SHOW_WILDCARD
        } else {
            fx::SHOW
        };
        find(f, |l| {
            l.starts_with("id=") && l.contains("Nodegroup") && l.ends_with(", *)") == master
        })
    };
    println!("{}", lines[1]);
    println!("{}", lines[2]);
    println!("{}", v().n(c.data_nodes).fill(lines[3]));
    let master = (1..=c.data_nodes).find(|n| !cl.rt.ndb_down.contains(n));
    for n in 1..=c.data_nodes {
        let ip = c.data_node_ip(n);
        if cl.rt.ndb_down.contains(&n) {
            let tpl = find(fx::SHOW_NOT_CONNECTED, |l| {
                l.contains("not connected, accepting connect from 1")
            });
            println!("{}", v().n(n).d(&ip).fill(tpl));
        } else {
            let tpl = data_tpl(Some(n) == master);
            let vals = if c.wildcard_addresses {
                v().n(n)
            } else {
                v().n(n).d(&ip)
            };
            println!("{}", vals.d(&c.version).n((n - 1) / 2).fill(tpl));
        }
    }
    println!();
    println!("{}", v().n(1).fill(lines[7]));
    println!(
        "{}",
        v().n(c.mgm_node_id)
            .d(&c.mgm_ip)
            .d(&c.version)
            .fill(lines[8])
    );
    println!();
    let connected = find(t, |l| l.starts_with("id=67\t@"));
    let free = find(t, |l| l.contains("accepting connect from any host"));
    let conns = crate::api::list(&cl.dir)?;
    println!("{}", v().n(1 + c.api_slots).fill(lines[10]));
    println!(
        "{}",
        v().n(crate::api::MYSQLD_ID)
            .d(&c.mgm_ip)
            .d(&c.version)
            .fill(connected)
    );
    for id in crate::api::slot_ids(c) {
        match conns.iter().find(|x| x.id == id) {
            Some(x) => println!("{}", v().n(id).d(&x.address).d(&c.version).fill(connected)),
            None => println!("{}", v().n(id).fill(free)),
        }
    }
    println!();
    Ok(())
}

fn all_status(cl: &Cluster) {
    let c = &cl.cfg;
    for n in 1..=c.data_nodes {
        if cl.rt.ndb_down.contains(&n) {
            println!("{}", v().n(n).fill(line(fx::ALL_STATUS_NOT_CONNECTED, 2)));
        } else {
            println!("{}", v().n(n).d(&c.version).fill(line(fx::ALL_STATUS, 1)));
        }
    }
    println!();
}

fn report(cl: &Cluster) {
    let c = &cl.cfg;
    for n in 1..=c.data_nodes {
        match cl.rt.running_backup {
            Some(id) => {
                println!(
                    "{}",
                    v().n(n)
                        .n(id)
                        .n(c.mgm_node_id)
                        .fill(line(fx::REPORT_RUNNING, 1))
                );
                println!("{}", v().n(0).n(0).fill(line(fx::REPORT_RUNNING, 2)));
                println!("{}", v().n(0).n(0).fill(line(fx::REPORT_RUNNING, 3)));
            }
            None => println!("{}", v().n(n).fill(line(fx::REPORT_IDLE, 1))),
        }
    }
}

fn backup_dir(cl: &Cluster, node: u32, id: u64) -> PathBuf {
    cl.backup_data_dir(node)
        .join("BACKUP")
        .join(format!("BACKUP-{id}"))
}

/// The client's encryption options.
pub struct Encryption<'a> {
    /// `--encrypt-backup`.
    pub option: bool,
    /// `--backup-password[-from-stdin]`.
    pub password: Option<&'a str>,
}

/// The password of `ENCRYPT PASSWORD='...'` (or `"..."`) in `cmd`, case kept: `Ok(None)` when
/// the command has none; `Err` when it is not quoted.
fn inline_password(cmd: &str) -> std::result::Result<Option<String>, &'static str> {
    let upper = cmd.to_uppercase();
    let Some(at) = upper.find("PASSWORD=") else {
        return Ok(None);
    };
    let v = &cmd[at + "PASSWORD=".len()..];
    let q = v.chars().next().filter(|c| *c == '\'' || *c == '"');
    let Some(q) = q else {
        return Err("Encryption password should be within quotes");
    };
    match v[1..].find(q) {
        Some(end) => Ok(Some(v[1..1 + end].to_string())),
        None => Err("Encryption password should be within quotes"),
    }
}

fn start_backup(
    cl: &mut Cluster,
    rest: &[&str],
    cmd: &str,
    fault: Option<&str>,
    enc: Encryption<'_>,
) -> Result<i32> {
    let invalid = |msg: &str| {
        println!(
            "Invalid command: {}",
            cmd.trim().split_once(' ').map_or("", |x| x.1)
        );
        println!("{msg}");
        println!("Type HELP for help.");
        println!();
        Ok(255)
    };
    let encrypt = enc.option || rest.contains(&"ENCRYPT");
    let password = match inline_password(cmd) {
        Err(msg) => return invalid(msg),
        Ok(Some(p)) => Some(p),
        Ok(None) => enc.password.map(str::to_string),
    };
    if encrypt && password.is_none() {
        return invalid("Encryption need password");
    }
    if let Some(p) = password.as_deref().filter(|_| encrypt) {
        if let Some(pos) = p.bytes().position(|b| !(32..=126).contains(&b)) {
            println!("Backup failed");
            println!("*  5001: Encryption password has invalid character at position {pos}");
            return Ok(255);
        }
        if p.len() > 256 {
            println!("Backup failed");
            println!("*  1310: Encryption password is too long");
            return Ok(255);
        }
    }
    let password = password.filter(|_| encrypt);
    let mut rest = rest;
    let mut id = None;
    if let Some(first) = rest.first() {
        if first.chars().all(|c| c.is_ascii_digit()) {
            match first.parse::<u64>() {
                Ok(x) if (1..=4_294_967_294).contains(&x) => id = Some(x),
                _ => {
                    println!("Invalid command: {}", cmd.trim());
                    println!("{}", line(fx::BACKUP_OUT_OF_RANGE, 2));
                    return Ok(255);
                }
            }
            rest = &rest[1..];
        }
    }
    let mut wait = "COMPLETED";
    let mut i = 0;
    while i < rest.len() {
        match rest[i] {
            "SNAPSHOTSTART" | "SNAPSHOTEND" => {}
            "NOWAIT" => wait = "NOWAIT",
            "WAIT" if matches!(rest.get(i + 1), Some(&"STARTED") | Some(&"COMPLETED")) => {
                wait = if rest[i + 1] == "STARTED" {
                    "STARTED"
                } else {
                    "COMPLETED"
                };
                i += 1;
            }
            x if x == "ENCRYPT" || x.starts_with("PASSWORD=") => {}
            _ => {
                println!("Invalid command: {}", cmd.trim());
                println!("Type HELP for help.");
                println!();
                return Ok(255);
            }
        }
        i += 1;
    }
    let id = id.unwrap_or(cl.rt.last_backup_id + 1);
    let c = cl.cfg.clone();
    let mgm = c.mgm_node_id;
    let waiting = |what: &str| {
        if what == "STARTED" {
            println!("{}", line(fx::BACKUP_STARTED, 1));
        } else if what == "COMPLETED" {
            println!("{}", line(fx::BACKUP_COMPLETED, 1));
        }
    };
    waiting(wait);
    if (1..=c.data_nodes).any(|n| backup_dir(cl, n, id).exists()) {
        for l in fx::BACKUP_EXISTS.lines().skip(2) {
            println!("{l}");
        }
        return Ok(255);
    }
    // The error block of a backup that failed (the `-e` client prints no event lines then).
    let failed = |fixture: &str| {
        for l in fixture.lines().skip(2) {
            println!("{l}");
        }
    };
    // A data node down: its node group peer backs up its fragments (the down node writes no
    // files); with a whole node group down, or no data node at all, the backup cannot run.
    let writer_of = |n: u32| -> Option<u32> {
        if !cl.rt.ndb_down.contains(&n) {
            return Some(n);
        }
        let group = (n - 1) / 2;
        (1..=c.data_nodes).find(|p| (p - 1) / 2 == group && !cl.rt.ndb_down.contains(p))
    };
    let Some(master) = (1..=c.data_nodes).find(|n| !cl.rt.ndb_down.contains(n)) else {
        failed(fx::BACKUP_NO_CONTACT);
        return Ok(255);
    };
    if (1..=c.data_nodes).any(|n| writer_of(n).is_none()) {
        failed(fx::BACKUP_ABORTED);
        return Ok(255);
    }
    let started = v()
        .n(master)
        .n(id)
        .n(mgm)
        .fill(line(fx::BACKUP_COMPLETED, 2));
    // WAIT STARTED: the reply comes when the backup started, then its event line; WAIT
    // COMPLETED: the reply comes at the end, and the event lines are printed only on success.
    if wait == "STARTED" {
        println!("{started}");
    }
    cl.rt.gcp += 1;
    let start_gcp = cl.rt.gcp;
    let stop_gcp = start_gcp + 3;
    cl.rt.gcp = stop_gcp;
    cl.rt.last_backup_id = cl.rt.last_backup_id.max(id);
    cl.rt.running_backup = Some(id);
    cl.save()?;
    let db = cl.db()?;
    let mut records = 0u64;
    let mut log_records = 0u64;
    let mut bytes = 0u64;
    let dict: Vec<String> = dictionary(&db)?.lines().map(String::from).collect();
    let ndb_version = ndb_version(&cl.cfg.version);
    let changes = snapshot_end_changes(&db)?;
    for node in (1..=c.data_nodes).filter(|n| !cl.rt.ndb_down.contains(n)) {
        let parts = c.multi_part.max(1);
        let part_of = |pk: i64| (pk as u64 % parts as u64) as usize;
        let mut rows: Vec<Vec<String>> = vec![Vec::new(); parts as usize];
        let mut logs: Vec<Vec<String>> = vec![Vec::new(); parts as usize];
        // This node's fragments and those of the down nodes it backs up for.
        let owners: Vec<u32> = (1..=c.data_nodes)
            .filter(|n| writer_of(*n) == Some(node))
            .collect();
        let mut st =
            db.prepare("SELECT db, tbl, pk, val, node FROM ndb_rows ORDER BY db, tbl, pk")?;
        let mut q = st.query([])?;
        while let Some(r) = q.next()? {
            let owner: u32 = r.get(4)?;
            if !owners.contains(&owner) {
                continue;
            }
            let (d, t, pk, val): (String, String, i64, String) =
                (r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?);
            // Rows changed while the backup ran: the data file has the value at its start,
            // the log the change (replayed by ndb_restore -r up to StopGCP).
            let (data_val, log) = match changes.get(&(d.clone(), t.clone(), pk)) {
                Some(Change::Update) => (
                    Some(format!("{val}~start")),
                    Some(format!("U\t{d}\t{t}\t{pk}\t{val}\n")),
                ),
                Some(Change::Insert) => (None, Some(format!("I\t{d}\t{t}\t{pk}\t{val}\n"))),
                None | Some(Change::Delete(_)) => (Some(val), None),
            };
            if let Some(v) = data_val {
                rows[part_of(pk)].push(format!("{d}\t{t}\t{pk}\t{v}\n"));
            }
            if let Some(l) = log {
                logs[part_of(pk)].push(l);
            }
        }
        // A row deleted while the backup ran: in the data file, deleted by the log.
        for ((d, t, pk), ch) in &changes {
            if let Change::Delete(val) = ch {
                if owners.contains(&crate::model::owner(&c, t, *pk as u64)) {
                    rows[part_of(*pk)].push(format!("{d}\t{t}\t{pk}\t{val}\n"));
                    logs[part_of(*pk)].push(format!("D\t{d}\t{t}\t{pk}\n"));
                }
            }
        }
        let base = backup_dir(cl, node, id);
        for (pi, prow) in rows.iter().enumerate() {
            let p = pi as u32 + 1;
            let dir = if c.multi_part == 0 {
                base.clone()
            } else {
                base.join(format!("BACKUP-{id}-PART-{p}-OF-{parts}"))
            };
            std::fs::create_dir_all(&dir)?;
            let fragment = (node - 1) * parts + (p - 1);
            let ctl = backupfmt::ctl(
                id as u32,
                ndb_version,
                &dict,
                start_gcp as u32,
                stop_gcp as u32,
                c.data_nodes * parts,
            );
            std::fs::write(
                dir.join(format!("BACKUP-{id}.{node}.ctl")),
                seal(ctl, c.compressed, password.as_deref())?,
            )?;
            let data = backupfmt::data(id as u32, ndb_version, &dict, fragment, prow)?;
            let data = seal(data, c.compressed, password.as_deref())?;
            let data_path = dir.join(format!("BACKUP-{id}-0.{node}.Data"));
            let injected_abort = fault == Some("abort") && node == c.data_nodes;
            if cl.rt.disk_full.contains(&node) || injected_abort {
                std::fs::write(&data_path, &data[..data.len() / 2])?;
                cl.rt.running_backup = None;
                cl.save()?;
                failed(if injected_abort {
                    fx::BACKUP_ABORTED
                } else {
                    fx::BACKUP_DISK_FULL
                });
                return Ok(255);
            }
            if fault == Some("hang-mid") {
                std::fs::write(&data_path, &data[..data.len() / 2])?;
                cl.unlock();
                loop {
                    std::thread::sleep(std::time::Duration::from_secs(3600));
                }
            }
            std::fs::write(&data_path, &data)?;
            let log = backupfmt::log(
                id as u32,
                ndb_version,
                &dict,
                fragment,
                &logs[pi],
                start_gcp as u32 + 1,
            )?;
            std::fs::write(
                dir.join(format!("BACKUP-{id}.{node}.log")),
                seal(log, c.compressed, password.as_deref())?,
            )?;
            records += prow.len() as u64;
            log_records += logs[pi].len() as u64;
            bytes += data.len() as u64;
        }
    }
    cl.rt.running_backup = None;
    cl.save()?;
    if wait == "COMPLETED" {
        println!("{started}");
        let t = fx::BACKUP_COMPLETED;
        println!("{}", v().n(master).n(id).n(mgm).fill(line(t, 3)));
        println!("{}", v().n(start_gcp).n(stop_gcp).fill(line(t, 4)));
        println!("{}", v().n(records).n(log_records).fill(line(t, 5)));
        println!("{}", v().n(bytes as u32).n(0).fill(line(t, 6)));
    }
    Ok(0)
}

/// The node's version as the file header holds it (`NDB_MAKE_VERSION(major, minor, build)`).
fn ndb_version(v: &str) -> u32 {
    let mut n = v
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|x| x.parse::<u32>().ok());
    let (a, b, c) = (
        n.next().unwrap_or(0),
        n.next().unwrap_or(0),
        n.next().unwrap_or(0),
    );
    (a << 16) | ((b & 0xFF) << 8) | (c & 0xFF)
}

/// The dictionary as a backup's `.ctl` lists it: `table <db> <tbl>`, `index <db> <tbl> <name>
/// <unique 0|1>`, `fk <db> <tbl> <name> <parent db> <parent tbl>`, `disk <kind> <name>`.
fn dictionary(db: &rusqlite::Connection) -> Result<String> {
    let mut out = String::new();
    for (sql, word) in [
        ("SELECT db, tbl FROM ndb_tables ORDER BY rowid", "table"),
        (
            "SELECT db, tbl, name, uniq FROM ndb_indexes ORDER BY db, tbl, name",
            "index",
        ),
        (
            "SELECT db, tbl, name, parent_db, parent_tbl FROM ndb_fks ORDER BY db, tbl, name",
            "fk",
        ),
        (
            "SELECT kind, name FROM ndb_disk_objects ORDER BY rowid",
            "disk",
        ),
    ] {
        for l in crate::model::rows_as_lines(db, sql, word)? {
            out.push_str(&l);
            out.push('\n');
        }
    }
    Ok(out)
}

/// A change made while a backup ran (SNAPSHOTEND: the backup is consistent as of its end).
enum Change {
    /// Updated: the data file has the value at the start.
    Update,
    /// Inserted: only in the log.
    Insert,
    /// Deleted (with the value it had at the start): in the data file, deleted by the log.
    Delete(String),
}

/// The feature store's changes during a backup: every fifth row updated, the newest inserted,
/// one row (not in the cluster any more) deleted.
fn snapshot_end_changes(
    db: &rusqlite::Connection,
) -> Result<std::collections::BTreeMap<(String, String, i64), Change>> {
    let mut out = std::collections::BTreeMap::new();
    let mut st =
        db.prepare("SELECT pk FROM ndb_rows WHERE db = 'app' AND tbl = 'events' ORDER BY pk")?;
    let pks: Vec<i64> = st
        .query_map([], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    let Some(&last) = pks.last() else {
        return Ok(out);
    };
    let key = |pk: i64| ("app".to_string(), "events".to_string(), pk);
    for pk in pks.iter().filter(|pk| *pk % 5 == 0) {
        out.insert(key(*pk), Change::Update);
    }
    out.insert(key(last), Change::Insert);
    out.insert(
        key(last + 1_000_000),
        Change::Delete(format!("ev-{}-deleted-during-backup", last + 1_000_000)),
    );
    Ok(out)
}
