//! `ndb_restore`: reads the files `START BACKUP` wrote and restores metadata, data, indexes.

use crate::backupfmt;
use crate::fixtures::{self as fx, line, v};
use crate::mgm::connect_fails;
use crate::model::{owner, table_exists};
use crate::state::Cluster;
use anyhow::Result;
use rusqlite::params;
use std::path::{Path, PathBuf};

#[derive(Default)]
struct Opts {
    node: Option<u32>,
    backup: Option<i64>,
    connect: Option<String>,
    path: Option<String>,
    meta: bool,
    data: bool,
    disable_indexes: bool,
    rebuild_indexes: bool,
    epoch: bool,
    include_db: Vec<String>,
    exclude_db: Vec<String>,
    include_tables: Vec<String>,
    exclude_tables: Vec<String>,
}

const VALUE_FLAGS: &[&str] = &[
    "nodeid",
    "backupid",
    "ndb-connectstring",
    "connectstring",
    "connect-string",
    "backup-path",
    "parallelism",
    "include-databases",
    "exclude-databases",
    "include-tables",
    "exclude-tables",
    "backup-password",
    "ndb-nodeid",
    "character-sets-dir",
    "tuple-slice",
];
const BOOL_FLAGS: &[&str] = &[
    "restore-meta",
    "restore-data",
    "disable-indexes",
    "rebuild-indexes",
    "restore-epoch",
    "no-binlog",
    "decrypt",
    "allow-unique-indexes",
    "no-restore-disk-objects",
    "print",
    "print-data",
    "print-meta",
    "print-log",
    "skip-unknown-objects",
    "skip-broken-objects",
    "skip-table-check",
    "promote-attributes",
    "lossy-conversions",
    "restore-privilege-tables",
    "verbose",
];

fn ts() -> String {
    chrono::Utc::now().format("%Y-%m-%d %H:%M:%S").to_string()
}

fn log(tag: &str, msg: &str) {
    println!("{} [{tag}] {msg}", ts());
}

fn fail(msg: &str) -> Result<i32> {
    eprintln!("{msg}");
    Ok(1)
}

fn parse(args: &[String]) -> std::result::Result<Opts, String> {
    let mut o = Opts::default();
    let mut kv: Vec<(String, String)> = Vec::new();
    let mut i = 0;
    while i < args.len() {
        let a = &args[i];
        if let Some(long) = a.strip_prefix("--") {
            let (name, val) = match long.split_once('=') {
                Some((n, v)) => (n.replace('_', "-"), Some(v.to_string())),
                None => (long.replace('_', "-"), None),
            };
            if VALUE_FLAGS.contains(&name.as_str()) {
                let val = match val {
                    Some(v) => v,
                    None => {
                        i += 1;
                        args.get(i)
                            .cloned()
                            .ok_or(format!("option '--{name}' requires an argument"))?
                    }
                };
                kv.push((name, val));
            } else if BOOL_FLAGS.contains(&name.as_str()) {
                kv.push((name, val.unwrap_or_else(|| "1".into())));
            } else {
                return Err(format!("unknown option '--{name}'"));
            }
        } else if let Some(short) = a.strip_prefix('-').filter(|s| !s.is_empty()) {
            let (c, rest) = short.split_at(1);
            let name = match c {
                "n" => "nodeid",
                "b" => "backupid",
                "c" => "ndb-connectstring",
                "p" => "parallelism",
                "m" => "restore-meta",
                "r" => "restore-data",
                "e" => "restore-epoch",
                _ => return Err(format!("unknown option '-{c}'")),
            };
            if VALUE_FLAGS.contains(&name) {
                let val = if rest.is_empty() {
                    i += 1;
                    args.get(i)
                        .cloned()
                        .ok_or(format!("option '-{c}' requires an argument"))?
                } else {
                    rest.to_string()
                };
                kv.push((name.into(), val));
            } else {
                kv.push((name.into(), "1".into()));
            }
        } else {
            o.path = Some(a.clone());
        }
        i += 1;
    }
    for (k, val) in kv {
        let on = val != "0" && val != "FALSE" && val != "false";
        match k.as_str() {
            "nodeid" => o.node = Some(val.parse().map_err(|_| format!("bad node id '{val}'"))?),
            "backupid" => {
                o.backup = Some(
                    val.parse::<i128>()
                        .map_err(|_| format!("bad backup id '{val}'"))?
                        .clamp(i64::MIN as i128, i64::MAX as i128) as i64,
                )
            }
            "ndb-connectstring" | "connectstring" | "connect-string" => o.connect = Some(val),
            "backup-path" => o.path = Some(val),
            "parallelism" => {
                let p: u32 = val
                    .parse()
                    .map_err(|_| format!("bad parallelism '{val}'"))?;
                if !(1..=1024).contains(&p) {
                    return Err(format!("parallelism {p} out of range [1 - 1024]"));
                }
            }
            "restore-meta" => o.meta = on,
            "restore-data" => o.data = on,
            "disable-indexes" => o.disable_indexes = on,
            "rebuild-indexes" => o.rebuild_indexes = on,
            "restore-epoch" => o.epoch = on,
            "include-databases" => o.include_db.extend(val.split(',').map(str::to_string)),
            "exclude-databases" => o.exclude_db.extend(val.split(',').map(str::to_string)),
            "include-tables" => o.include_tables.extend(val.split(',').map(str::to_string)),
            "exclude-tables" => o.exclude_tables.extend(val.split(',').map(str::to_string)),
            _ => {}
        }
    }
    Ok(o)
}

/// The directories holding node `node`'s files of backup `id` under `path` (one per part).
fn part_dirs(path: &Path, id: i64, node: u32) -> Vec<PathBuf> {
    let ctl = format!("BACKUP-{id}.{node}.ctl");
    if path.join(&ctl).exists() {
        return vec![path.to_path_buf()];
    }
    let mut v: Vec<PathBuf> = std::fs::read_dir(path)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .map(|n| {
                    n.to_string_lossy()
                        .starts_with(&format!("BACKUP-{id}-PART-"))
                })
                .unwrap_or(false)
                && p.join(&ctl).exists()
        })
        .collect();
    v.sort();
    v
}

pub fn main(dir: &Path, args: &[String]) -> Result<i32> {
    let o = match parse(args) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("ndb_restore: [ERROR] {e}");
            return Ok(1);
        }
    };
    let mut cl = Cluster::open(dir)?;
    let fault = cl.count_call("ndb_restore")?;
    let mut id = o.backup.unwrap_or(0);
    if id > i32::MAX as i64 {
        eprintln!("{}", v().n(id).n(i32::MAX).fill(line(fx::CLAMP_WARNING, 0)));
        id = i32::MAX as i64;
    }
    let node = o.node.unwrap_or(0);
    let path = PathBuf::from(o.path.clone().unwrap_or_else(|| "./".into()));
    println!("Nodeid = {node}");
    println!("Backup Id = {id}");
    println!("backup path = {}", path.display());
    if fault.is_some() {
        return fail("Failed to initialize consumers");
    }
    if let Some(cs) = connect_fails(&cl, o.connect.as_deref()) {
        return fail(&format!("Could not connect to cluster: '{cs}'"));
    }
    if id <= 0 {
        return fail("Backup id must be specified (-b)");
    }
    let wants_files = o.meta || o.data || o.epoch || o.disable_indexes || o.rebuild_indexes;
    let dirs = part_dirs(&path, id, node);
    if wants_files && dirs.is_empty() {
        let f = path.join(format!("BACKUP-{id}.{node}.ctl"));
        println!("Opening file '{}'", f.display());
        return fail(&format!(
            "Failed to read file header: '{}': No such file or directory",
            f.display()
        ));
    }
    // Like the real tool: the include options select, the exclude options remove; a table is
    // named `db.table`.
    let keep = |d: &str, t: &str| {
        let name = format!("{d}.{t}");
        let included = if o.include_db.is_empty() && o.include_tables.is_empty() {
            true
        } else {
            o.include_db.iter().any(|x| x == d) || o.include_tables.contains(&name)
        };
        included && !o.exclude_db.iter().any(|x| x == d) && !o.exclude_tables.contains(&name)
    };
    // Metadata (from the first part: every part holds all of it).
    let mut tables: Vec<(String, String)> = Vec::new();
    let mut indexes: Vec<(String, String, String)> = Vec::new();
    let mut stop_gcp = 0u64;
    if let Some(first) = dirs.first() {
        log("restore_metadata", "Read meta data file header");
        let f = first.join(format!("BACKUP-{id}.{node}.ctl"));
        println!("Opening file '{}'", f.display());
        let lines = match backupfmt::open(&f) {
            Ok(l) => l,
            Err(e) => return fail(&format!("Error reading '{}': {e}", f.display())),
        };
        println!(
            "File size {} bytes",
            std::fs::metadata(&f).map(|m| m.len()).unwrap_or(0)
        );
        println!(
            "Backup version in files: ndb-6.3.11 ndb version: RonDB-{}",
            cl.cfg.version
        );
        for l in &lines {
            let w: Vec<&str> = l.split(' ').collect();
            match w.as_slice() {
                ["ctl", _, _, _, _, g] => stop_gcp = g.parse().unwrap_or(0),
                ["table", d, t] if keep(d, t) => tables.push((d.to_string(), t.to_string())),
                ["index", d, t, n] if keep(d, t) => {
                    indexes.push((d.to_string(), t.to_string(), n.to_string()))
                }
                _ => {}
            }
        }
        println!("Stop GCP of Backup: {}", stop_gcp.saturating_sub(1));
        log("restore_metadata", "Load content");
        log("restore_metadata", "Validate Footer");
    }
    println!("Connected to ndb!!");
    let mut db = cl.db()?;
    let tx = db.transaction()?;
    if o.meta {
        log("restore_metadata", "Restore objects (tablespaces, ..)");
        log("restore_metadata", "Restoring tables");
        for (d, t) in &tables {
            if table_exists(&tx, d, t)? {
                tx.commit()?;
                return fail(&format!("Create table `{d}`.`{t}` failed: 721: Schema object with given name already exists"));
            }
            tx.execute(
                "INSERT INTO ndb_tables(db, tbl) VALUES (?1, ?2)",
                params![d, t],
            )?;
            println!("Successfully restored table `{d}`.`{t}`");
        }
        for (d, t, n) in &indexes {
            let online = !o.disable_indexes;
            tx.execute(
                "INSERT OR REPLACE INTO ndb_indexes(db, tbl, name, online) VALUES (?1, ?2, ?3, ?4)",
                params![d, t, n, online as i64],
            )?;
            if online {
                println!("Successfully created index `{n}` on `{t}`");
            }
        }
    } else if o.disable_indexes {
        for (d, t, n) in &indexes {
            tx.execute(
                "UPDATE ndb_indexes SET online = 0 WHERE db = ?1 AND tbl = ?2 AND name = ?3",
                params![d, t, n],
            )?;
            println!("Dropped index `{n}` on `{t}`");
        }
    }
    if o.data {
        log("restore_data", "Start restoring table data");
        for (d, t) in &tables {
            if !table_exists(&tx, d, t)? {
                return fail(&format!("Unable to find table: `{d}/def/{t}`"));
            }
        }
        let mut tuples = 0u64;
        for pd in &dirs {
            for f in [
                pd.join(format!("BACKUP-{id}-0.{node}.Data")),
                pd.join(format!("BACKUP-{id}.{node}.log")),
            ] {
                println!("Opening file '{}'", f.display());
                let lines = match backupfmt::open(&f) {
                    Ok(l) => l,
                    Err(e) => return fail(&format!("Error reading '{}': {e}", f.display())),
                };
                println!(
                    "File size {} bytes",
                    std::fs::metadata(&f).map(|m| m.len()).unwrap_or(0)
                );
                for l in lines.iter().skip(1) {
                    let mut it = l.splitn(4, '\t');
                    let (Some(d), Some(t), Some(pk), Some(val)) =
                        (it.next(), it.next(), it.next(), it.next())
                    else {
                        return fail(&format!(
                            "Error reading '{}': Corrupted data: bad record",
                            f.display()
                        ));
                    };
                    if !tables.iter().any(|(a, b)| a == d && b == t) {
                        continue;
                    }
                    let pk: u64 = pk.parse().unwrap_or(0);
                    let r = tx
                        .prepare_cached("INSERT INTO ndb_rows(db, tbl, pk, node, val) VALUES (?1, ?2, ?3, ?4, ?5)")?
                        .execute(params![d, t, pk as i64, owner(&cl.cfg, t, pk), val]);
                    if let Err(e) = r {
                        if e.sqlite_error_code() == Some(rusqlite::ErrorCode::ConstraintViolation) {
                            return fail(
                                "Error 630: Tuple already existed when attempting to insert",
                            );
                        }
                        return Err(e.into());
                    }
                    tuples += 1;
                }
            }
        }
        log(
            "restore_data",
            &format!("Restored {tuples} tuples and 0 log entries"),
        );
    }
    if o.epoch {
        tx.execute(
            "INSERT OR REPLACE INTO ndb_epoch(id, epoch) VALUES (1, ?1)",
            params![(stop_gcp.saturating_sub(1) << 32) as i64],
        )?;
        log("restore_epoch", "Restored epoch in ndb_apply_status table");
    }
    if o.rebuild_indexes {
        let mut st = tx.prepare("SELECT db, tbl, name FROM ndb_indexes WHERE online = 0")?;
        let off: Vec<(String, String, String)> = st
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
            .collect::<rusqlite::Result<_>>()?;
        drop(st);
        for (d, t, n) in off.iter().filter(|x| keep(&x.0, &x.1)) {
            tx.execute(
                "UPDATE ndb_indexes SET online = 1 WHERE db = ?1 AND tbl = ?2 AND name = ?3",
                params![d, t, n],
            )?;
            log(
                "rebuild_indexes",
                &format!("Rebuilding index `{n}` on table `{t}` ..."),
            );
        }
    }
    tx.commit()?;
    cl.save()?;
    Ok(0)
}
