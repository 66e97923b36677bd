//! `ndb_restore`: reads the files `START BACKUP` wrote and restores metadata, data, indexes, as
//! the real tool does where a restore onto a redeployed cluster meets it: an NDB API client that
//! needs a free API slot (none free: no connection, exit 1, nothing printed); `-m` fails with
//! 721 on a table that exists, and on existing disk-data objects unless
//! `--no-restore-disk-objects`; with `--disable-indexes` no index or foreign key is created, and
//! `--disable-indexes` alone drops them again; `-r` refuses a unique index that exists (unless
//! `--disable-indexes` or `--allow-unique-indexes`), writes rows as upserts committed in small
//! batches (a killed run leaves partial rows; a run again converges), then replays the `.log`
//! (an INSERT of an existing row and an UPDATE or DELETE of a missing one are ignored), and
//! writes every row to the binlog of a MySQL server with `ndb_log_bin` unless `--no-binlog`;
//! `--rebuild-indexes` creates missing indexes but every foreign key without checking (a second
//! run fails with 721). An encrypted backup (NDBXFRM1 files) needs `--decrypt` with
//! `--backup-password=<pw>` or `--backup-password-from-stdin`, and refuses a wrong password.
//! Errors go to stderr, progress to stdout; exit 0 ok, 1 failed, 2 bad arguments.

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
    no_binlog: bool,
    no_restore_disk_objects: bool,
    allow_unique_indexes: bool,
    decrypt: bool,
    password: Option<String>,
    password_from_stdin: bool,
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
    "backup-password-from-stdin",
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

/// The backup password on standard input as the RonDB tools read it: one line, its `\n` not
/// part of it, printable ASCII only, at most 1024 characters.
pub fn password_from_stdin() -> std::result::Result<String, &'static str> {
    use std::io::Read;
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    let mut stdin = std::io::stdin();
    loop {
        match stdin.read(&mut byte) {
            Ok(1) if byte[0] == b'\n' => break,
            Ok(1) => {
                if !(32..=126).contains(&byte[0]) {
                    return Err("backup password has some bad character.");
                }
                if line.len() >= 1024 {
                    return Err("backup password too long.");
                }
                line.push(byte[0]);
            }
            _ => return Err("backup password has no end."),
        }
    }
    Ok(String::from_utf8(line).expect("printable ASCII"))
}

/// Reads a backup file with the run's password, reporting as the real tool does.
fn read_file(
    f: &Path,
    password: Option<&str>,
    id: i64,
) -> std::result::Result<Vec<String>, String> {
    backupfmt::open_with(f, password).map_err(|e| match e {
        backupfmt::OpenError::Encrypted => format!(
            "{e}\nFailed to read {}\nFailed to restore BACKUP-{id}",
            f.display()
        ),
        e => format!("Error reading '{}': {e}", f.display()),
    })
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
            "no-binlog" => o.no_binlog = on,
            "no-restore-disk-objects" => o.no_restore_disk_objects = on,
            "allow-unique-indexes" => o.allow_unique_indexes = on,
            "decrypt" => o.decrypt = on,
            "backup-password" => o.password = Some(val),
            "backup-password-from-stdin" => o.password_from_stdin = on,
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

/// What a backup's `.ctl` holds (the tables and their objects kept by the include/exclude
/// options).
#[derive(Default)]
struct Dict {
    tables: Vec<(String, String)>,
    /// (db, table, name, unique)
    indexes: Vec<(String, String, String, bool)>,
    /// (db, table, name, parent db, parent table)
    fks: Vec<(String, String, String, String, String)>,
    /// (kind, name)
    disk: Vec<(String, String)>,
    stop_gcp: u64,
}

/// Rows are committed in batches of this many (a killed run leaves the earlier batches).
const BATCH: usize = 16;

pub fn main(dir: &Path, args: &[String]) -> Result<i32> {
    let o = match parse(args) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("ndb_restore: [ERROR] {e}");
            return Ok(2);
        }
    };
    // The password options, checked as the real tool does before it connects.
    if o.password.is_some() && o.password_from_stdin {
        eprintln!("Error: backup password: Multiple options for same password used.  Select one of --backup-password and --backup-password-from-stdin.");
        return Ok(2);
    }
    let mut password = o.password.clone();
    if o.password_from_stdin {
        match password_from_stdin() {
            Ok(p) => password = Some(p),
            Err(msg) => {
                eprintln!("Error: backup password: {msg}");
                return Ok(2);
            }
        }
    }
    if password.is_some() && !o.decrypt {
        eprintln!("Password (--backup-password) for decryption given, require also --decrypt.");
        return Ok(2);
    }
    if o.decrypt && password.is_none() {
        eprintln!("Decrypting backup (--decrypt) requires password (--backup-password).");
        return Ok(2);
    }
    let o = Opts { password, ..o };
    let mut id = o.backup.unwrap_or(0);
    let cfg = Cluster::open_unlocked(dir)?.cfg;
    if id > i32::MAX as i64 {
        eprintln!("{}", v().n(id).n(i32::MAX).fill(line(fx::CLAMP_WARNING, 0)));
        id = i32::MAX as i64;
    }
    let node = o.node.unwrap_or(0);
    let path = PathBuf::from(o.path.clone().unwrap_or_else(|| "./".into()));
    println!("Nodeid = {node}");
    println!("Backup Id = {id}");
    println!("backup path = {}", path.display());
    // Connect: the management server, then an API slot (held for the whole run, also while
    // waiting for the cluster).
    if let Some(cs) = connect_fails(&Cluster::open_unlocked(dir)?, o.connect.as_deref()) {
        eprintln!(
            "ERROR: Unable to connect with connect string: nodeid=0,{}",
            cs.rsplit(',').next().unwrap_or("")
        );
        return Ok(1);
    }
    let Some(_slot) = crate::api::connect_tool(dir, &cfg, "ndb_restore")? else {
        // The real tool prints nothing of its own when no node id is free.
        return Ok(1);
    };
    let mut cl = Cluster::open(dir)?;
    let fault = cl.count_call("ndb_restore")?;
    if fault.as_deref() == Some("fail") {
        return fail("Failed to initialize consumers");
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
    let mut dict = Dict::default();
    if let Some(first) = dirs.first() {
        log("restore_metadata", "Read meta data file header");
        let f = first.join(format!("BACKUP-{id}.{node}.ctl"));
        println!("Opening file '{}'", f.display());
        let lines = match read_file(&f, o.password.as_deref(), id) {
            Ok(l) => l,
            Err(msg) => return fail(&msg),
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
                ["ctl", _, g] => dict.stop_gcp = g.parse().unwrap_or(0),
                ["table", d, t] if keep(d, t) => dict.tables.push((d.to_string(), t.to_string())),
                ["index", d, t, n, u] if keep(d, t) => {
                    dict.indexes
                        .push((d.to_string(), t.to_string(), n.to_string(), *u == "1"))
                }
                ["fk", d, t, n, pd, pt] if keep(d, t) => dict.fks.push((
                    d.to_string(),
                    t.to_string(),
                    n.to_string(),
                    pd.to_string(),
                    pt.to_string(),
                )),
                ["disk", k, n] => dict.disk.push((k.to_string(), n.to_string())),
                _ => {}
            }
        }
        println!("Stop GCP of Backup: {}", dict.stop_gcp.saturating_sub(1));
        log("restore_metadata", "Load content");
        log("restore_metadata", "Validate Footer");
    }
    println!("Connected to ndb!!");
    let db = cl.db()?;
    if o.meta {
        // `hang-mid`: killed half-way through creating the tables (those created stay).
        let stop_after = (fault.as_deref() == Some("hang-mid")).then_some(dict.tables.len() / 2);
        match restore_meta(&db, &o, &dict, id, stop_after)? {
            Meta::Done => {}
            Meta::Failed(code) => return Ok(code),
            Meta::Stopped => {
                cl.unlock();
                loop {
                    std::thread::sleep(std::time::Duration::from_secs(3600));
                }
            }
        }
    } else if o.disable_indexes && !o.data {
        drop_indexes(&db, &dict)?;
    }
    if o.data {
        if let Some(code) =
            restore_data(&mut cl, &db, &o, &dict, &dirs, id, node, fault.as_deref())?
        {
            return Ok(code);
        }
    }
    if o.epoch {
        db.execute(
            "INSERT OR REPLACE INTO ndb_epoch(id, epoch) VALUES (1, ?1)",
            params![(dict.stop_gcp.saturating_sub(1) << 32) as i64],
        )?;
        log("restore_epoch", "Restored epoch in ndb_apply_status table");
    }
    if o.rebuild_indexes {
        for (d, t, n, u) in &dict.indexes {
            if !index_exists(&db, d, t, n)? {
                db.execute(
                    "INSERT INTO ndb_indexes(db, tbl, name, online, uniq) VALUES (?1, ?2, ?3, 1, ?4)",
                    params![d, t, n, *u as i64],
                )?;
                log(
                    "rebuild_indexes",
                    &format!("Rebuilding index `{n}` on table `{t}` ..."),
                );
            }
        }
        for (d, t, n, pd, pt) in &dict.fks {
            let r = db.execute(
                "INSERT INTO ndb_fks(db, tbl, name, parent_db, parent_tbl) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![d, t, n, pd, pt],
            );
            if let Err(e) = r {
                if e.sqlite_error_code() == Some(rusqlite::ErrorCode::ConstraintViolation) {
                    return fail(&format!(
                        "Failed to create foreign key {n} parent {pd}/def/{pt} child {d}/def/{t} : 721: Schema object with given name already exists"
                    ));
                }
                return Err(e.into());
            }
            log(
                "rebuild_indexes",
                &format!("Successfully created foreign key {n} on table `{t}`"),
            );
        }
    }
    cl.save()?;
    Ok(0)
}

fn index_exists(db: &rusqlite::Connection, d: &str, t: &str, n: &str) -> Result<bool> {
    let k: i64 = db.query_row(
        "SELECT count(*) FROM ndb_indexes WHERE db = ?1 AND tbl = ?2 AND name = ?3",
        params![d, t, n],
        |r| r.get(0),
    )?;
    Ok(k > 0)
}

/// Drops the indexes and foreign keys of the backup's tables (`--disable-indexes`).
fn drop_indexes(db: &rusqlite::Connection, dict: &Dict) -> Result<()> {
    for (d, t, n, pd, pt) in &dict.fks {
        let k = db.execute(
            "DELETE FROM ndb_fks WHERE db = ?1 AND tbl = ?2 AND name = ?3",
            params![d, t, n],
        )?;
        if k > 0 {
            println!("Dropped foreign key {n} parent {pd}/def/{pt} child {d}/def/{t}");
        }
    }
    for (d, t, n, _) in &dict.indexes {
        let k = db.execute(
            "DELETE FROM ndb_indexes WHERE db = ?1 AND tbl = ?2 AND name = ?3",
            params![d, t, n],
        )?;
        if k > 0 {
            println!("Dropped index `{n}` on `{t}`");
        }
    }
    Ok(())
}

/// `-m`: the disk-data objects (unless `--no-restore-disk-objects`), then each table; indexes
/// and foreign keys unless `--disable-indexes`. Some(exit code) when it failed: the tables
/// created before the failure stay.
/// How `-m` ended.
enum Meta {
    Done,
    Failed(i32),
    /// Stopped after `stop_after` tables (a fault: the run then hangs).
    Stopped,
}

fn restore_meta(
    db: &rusqlite::Connection,
    o: &Opts,
    dict: &Dict,
    id: i64,
    stop_after: Option<usize>,
) -> Result<Meta> {
    log("restore_metadata", "Restore objects (tablespaces, ..)");
    if !o.no_restore_disk_objects {
        for (kind, name) in &dict.disk {
            let what = match kind.as_str() {
                "LogfileGroup" => "logfile group",
                "Tablespace" => "tablespace",
                _ => {
                    db.execute(
                        "INSERT OR IGNORE INTO ndb_disk_objects(kind, name) VALUES (?1, ?2)",
                        params![kind, name],
                    )?;
                    continue;
                }
            };
            println!("Creating {what}: {name}...");
            let r = db.execute(
                "INSERT INTO ndb_disk_objects(kind, name) VALUES (?1, ?2)",
                params![kind, name],
            );
            match r {
                Ok(_) => println!("done"),
                Err(e)
                    if e.sqlite_error_code() == Some(rusqlite::ErrorCode::ConstraintViolation) =>
                {
                    println!("FAILED");
                    eprintln!(
                        "Create {what} failed: {name}: 721: Schema object with given name already exists"
                    );
                    println!("Failed to restore BACKUP-{id}");
                    return Ok(Meta::Failed(1));
                }
                Err(e) => return Err(e.into()),
            }
        }
    }
    log("restore_metadata", "Restoring tables");
    for (k, (d, t)) in dict.tables.iter().enumerate() {
        if stop_after == Some(k) && k > 0 {
            return Ok(Meta::Stopped);
        }
        if table_exists(db, d, t)? {
            eprintln!(
                "Create table `{d}/def/{t}` failed: 721: Schema object with given name already exists"
            );
            eprintln!("Restore: Failed to restore table: `{d}/def/{t}` ... Exiting ");
            println!("Failed to restore BACKUP-{id}");
            return Ok(Meta::Failed(1));
        }
        db.execute(
            "INSERT INTO ndb_tables(db, tbl) VALUES (?1, ?2)",
            params![d, t],
        )?;
        println!("Successfully restored table `{d}/def/{t}`");
    }
    if !o.disable_indexes {
        for (d, t, n, u) in &dict.indexes {
            db.execute(
                "INSERT OR REPLACE INTO ndb_indexes(db, tbl, name, online, uniq) VALUES (?1, ?2, ?3, 1, ?4)",
                params![d, t, n, *u as i64],
            )?;
            println!("Successfully created index `{n}` on `{t}`");
        }
        for (d, t, n, pd, pt) in &dict.fks {
            db.execute(
                "INSERT OR REPLACE INTO ndb_fks(db, tbl, name, parent_db, parent_tbl) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![d, t, n, pd, pt],
            )?;
        }
    }
    Ok(Meta::Done)
}

/// `-r`: every part's rows then its log. Some(exit code) when it failed.
#[allow(clippy::too_many_arguments)]
fn restore_data(
    cl: &mut Cluster,
    db: &rusqlite::Connection,
    o: &Opts,
    dict: &Dict,
    dirs: &[PathBuf],
    id: i64,
    node: u32,
    fault: Option<&str>,
) -> Result<Option<i32>> {
    log("restore_data", "Start restoring table data");
    for (d, t) in &dict.tables {
        if !table_exists(db, d, t)? {
            eprintln!("Unable to find table: `{d}/def/{t}`");
            println!("Failed to restore BACKUP-{id}");
            return Ok(Some(1));
        }
    }
    if o.disable_indexes {
        drop_indexes(db, dict)?;
    }
    for (d, t, n, u) in &dict.indexes {
        if *u && index_exists(db, d, t, n)? {
            if o.allow_unique_indexes {
                eprintln!("WARNING: Table {d}.{t} contains unique index {n}. This can cause ndb_restore to fail with duplicate key errors while restoring data. To avoid duplicate key errors, use --disable-indexes before or when restoring data and --rebuild-indexes after or when restoring data. Will continue due to --allow-unique-indexes being set.");
            } else {
                eprintln!("ERROR: Refusing to restore because table {d}.{t} contains unique index {n}. Use --disable-indexes before or when restoring data and --rebuild-indexes after or when restoring data. Optionally use --allow-unique-indexes to continue restoring with unique indexes.");
                println!("Failed to restore BACKUP-{id}");
                return Ok(Some(1));
            }
        }
    }
    let binlog = cl.cfg.binlog && !o.no_binlog;
    let cfg = cl.cfg.clone();
    let wanted = |d: &str, t: &str| dict.tables.iter().any(|(a, b)| a == d && b == t);
    let (mut tuples, mut log_entries) = (0u64, 0u64);
    let mut hang_after = (fault == Some("hang-mid")).then_some(usize::MAX);
    for pd in dirs {
        let f = pd.join(format!("BACKUP-{id}-0.{node}.Data"));
        println!("Opening file '{}'", f.display());
        let lines = match read_file(&f, o.password.as_deref(), id) {
            Ok(l) => l,
            Err(msg) => return fail(&msg).map(Some),
        };
        println!(
            "File size {} bytes",
            std::fs::metadata(&f).map(|m| m.len()).unwrap_or(0)
        );
        let mut rows = Vec::new();
        for l in lines.iter().skip(1) {
            let mut it = l.splitn(4, '\t');
            let (Some(d), Some(t), Some(pk), Some(val)) =
                (it.next(), it.next(), it.next(), it.next())
            else {
                return fail(&format!(
                    "Error reading '{}': Corrupted data: bad record",
                    f.display()
                ))
                .map(Some);
            };
            if wanted(d, t) {
                rows.push((d, t, pk.parse::<u64>().unwrap_or(0), val));
            }
        }
        if let Some(h) = hang_after.as_mut() {
            *h = rows.len() / 2;
        }
        for (k, batch) in rows.chunks(BATCH).enumerate() {
            if hang_after.is_some_and(|h| k * BATCH >= h && h > 0) {
                // Killed or hung half-way: the batches before stay.
                cl.unlock();
                loop {
                    std::thread::sleep(std::time::Duration::from_secs(3600));
                }
            }
            db.execute_batch("BEGIN")?;
            for (d, t, pk, val) in batch {
                db.prepare_cached("INSERT OR REPLACE INTO ndb_rows(db, tbl, pk, node, val) VALUES (?1, ?2, ?3, ?4, ?5)")?
                    .execute(params![d, t, *pk as i64, owner(&cfg, t, *pk), val])?;
                if binlog {
                    db.prepare_cached("INSERT INTO ndb_binlog(db, tbl, pk) VALUES (?1, ?2, ?3)")?
                        .execute(params![d, t, *pk as i64])?;
                }
                tuples += 1;
            }
            db.execute_batch("COMMIT")?;
        }
        hang_after = None;
        let f = pd.join(format!("BACKUP-{id}.{node}.log"));
        println!("Opening file '{}'", f.display());
        let lines = match read_file(&f, o.password.as_deref(), id) {
            Ok(l) => l,
            Err(msg) => return fail(&msg).map(Some),
        };
        db.execute_batch("BEGIN")?;
        for l in lines.iter().skip(1) {
            let w: Vec<&str> = l.splitn(5, '\t').collect();
            let (op, d, t, pk) = match w.as_slice() {
                [op, d, t, pk, ..] => (*op, *d, *t, pk.parse::<u64>().unwrap_or(0)),
                _ => continue,
            };
            if !wanted(d, t) {
                continue;
            }
            let val = w.get(4).copied().unwrap_or("");
            match op {
                "I" => db.execute(
                    "INSERT OR IGNORE INTO ndb_rows(db, tbl, pk, node, val) VALUES (?1, ?2, ?3, ?4, ?5)",
                    params![d, t, pk as i64, owner(&cfg, t, pk), val],
                )?,
                "U" => db.execute(
                    "UPDATE ndb_rows SET val = ?4 WHERE db = ?1 AND tbl = ?2 AND pk = ?3",
                    params![d, t, pk as i64, val],
                )?,
                _ => db.execute(
                    "DELETE FROM ndb_rows WHERE db = ?1 AND tbl = ?2 AND pk = ?3",
                    params![d, t, pk as i64],
                )?,
            };
            if binlog {
                db.execute(
                    "INSERT INTO ndb_binlog(db, tbl, pk) VALUES (?1, ?2, ?3)",
                    params![d, t, pk as i64],
                )?;
            }
            log_entries += 1;
        }
        db.execute_batch("COMMIT")?;
    }
    log(
        "restore_data",
        &format!("Restored {tuples} tuples and {log_entries} log entries"),
    );
    Ok(None)
}
