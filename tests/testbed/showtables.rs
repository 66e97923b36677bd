//! `ndb_show_tables` as the test-bed simulates it: the objects of the NDB dictionary (the
//! system tables, the `mysql` schema tables every cluster has, the tables created by a
//! deployment, `ndb_restore -m` or `cluster create`, their indexes and foreign keys, and the
//! disk-data objects), in the real tool's two formats (8.0.20 and later: no `NDBT_ProgramExit`
//! trailer). Plain: a header and aligned columns (`%-5s %-20s %-8s %-7s %-12s %-8s %s`); `-p`:
//! one tab-separated line per object with quoted fields. `-t N` keeps one object type
//! (`NdbDictionary::Object::Type`: 1 SystemTable, 2 UserTable, 3 UniqueHashIndex, 6
//! OrderedIndex, 20 Tablespace, 21 LogfileGroup, 22 Datafile, 23 Undofile, 25 ForeignKey).
//! Indexes are listed in database `sys`, foreign keys as `<parent id>/<child id>/<name>`. The
//! tool is an NDB API client: with no free API slot it cannot connect.

use std::path::Path;

use anyhow::Result;

use crate::mgm::connect_fails;
use crate::state::Cluster;

/// The `mysql` schema tables of a started cluster (created by the MySQL servers' binlog setup).
const MYSQL_TABLES: &[&str] = &[
    "ndb_apply_status",
    "ndb_index_stat_head",
    "ndb_index_stat_sample",
    "ndb_schema",
    "ndb_schema_result",
    "ndb_sql_metadata",
];

struct Object {
    id: u32,
    kind: &'static str,
    kind_no: u32,
    database: String,
    name: String,
}

pub fn main(dir: &Path, args: &[String]) -> Result<i32> {
    let mut connect: Option<String> = None;
    let mut parsable = false;
    let mut kind: Option<u32> = None;
    let mut i = 0;
    while i < args.len() {
        let a = args[i].as_str();
        let value = |i: &mut usize| {
            *i += 1;
            args.get(*i).cloned()
        };
        match a {
            "-c" | "--ndb-connectstring" | "--connect-string" => connect = value(&mut i),
            "-p" | "--parsable" => parsable = true,
            "-t" | "--type" => kind = value(&mut i).and_then(|v| v.parse().ok()),
            _ => {
                if let Some(v) = a
                    .strip_prefix("--ndb-connectstring=")
                    .or_else(|| a.strip_prefix("--connect-string="))
                {
                    connect = Some(v.to_string());
                } else if let Some(v) = a.strip_prefix("--type=") {
                    kind = v.parse().ok();
                } else {
                    eprintln!("ndb_show_tables: unknown option '{a}'");
                    return Ok(2);
                }
            }
        }
        i += 1;
    }
    let cl = Cluster::open_unlocked(dir)?;
    let slot = if connect_fails(&cl, connect.as_deref()).is_some() {
        None
    } else {
        crate::api::connect_tool(dir, &cl.cfg, "ndb_show_tables")?
    };
    if slot.is_none() {
        println!("Unable to connect to management server.");
        return Ok(1);
    }
    if (1..=cl.cfg.data_nodes).all(|n| cl.rt.ndb_down.contains(&n)) {
        println!("Cluster nodes not ready in 30 seconds.");
        return Ok(1);
    }
    let mut objects = vec![
        Object {
            id: 1,
            kind: "SystemTable",
            kind_no: 1,
            database: "sys".into(),
            name: "SYSTAB_0".into(),
        },
        Object {
            id: 2,
            kind: "SystemTable",
            kind_no: 1,
            database: "sys".into(),
            name: "NDB$EVENTS_0".into(),
        },
    ];
    for t in MYSQL_TABLES {
        objects.push(Object {
            id: objects.len() as u32 + 1,
            kind: "UserTable",
            kind_no: 2,
            database: "mysql".into(),
            name: t.to_string(),
        });
    }
    let db = cl.db()?;
    let mut ids = std::collections::HashMap::new();
    let push = |objects: &mut Vec<Object>,
                kind: &'static str,
                kind_no: u32,
                database: &str,
                name: String| {
        let id = objects.len() as u32 + 1;
        objects.push(Object {
            id,
            kind,
            kind_no,
            database: database.to_string(),
            name,
        });
        id
    };
    let mut st = db.prepare("SELECT kind, name FROM ndb_disk_objects ORDER BY rowid")?;
    for r in st.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))? {
        let (kind, name) = r?;
        let (k, n) = match kind.as_str() {
            "Tablespace" => ("Tablespace", 20),
            "LogfileGroup" => ("LogfileGroup", 21),
            "Datafile" => ("Datafile", 22),
            _ => ("Undofile", 23),
        };
        push(&mut objects, k, n, "", name);
    }
    let mut st = db.prepare("SELECT db, tbl FROM ndb_tables ORDER BY rowid")?;
    for r in st.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))? {
        let (database, name) = r?;
        let id = push(&mut objects, "UserTable", 2, &database, name.clone());
        ids.insert((database, name), id);
    }
    let mut st =
        db.prepare("SELECT name, uniq FROM ndb_indexes WHERE online = 1 ORDER BY db, tbl, name")?;
    for r in st.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))? {
        let (name, uniq) = r?;
        let (k, n) = if uniq == 1 {
            ("UniqueHashIndex", 3)
        } else {
            ("OrderedIndex", 6)
        };
        push(&mut objects, k, n, "sys", name);
    }
    let mut st = db.prepare(
        "SELECT db, tbl, name, parent_db, parent_tbl FROM ndb_fks ORDER BY db, tbl, name",
    )?;
    let fks: Vec<(String, String, String, String, String)> = st
        .query_map([], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
        })?
        .collect::<rusqlite::Result<_>>()?;
    for (d, t, name, pd, pt) in fks {
        let child = ids.get(&(d, t)).copied().unwrap_or(0);
        let parent = ids.get(&(pd, pt)).copied().unwrap_or(0);
        push(
            &mut objects,
            "ForeignKey",
            25,
            "",
            format!("{parent}/{child}/{name}"),
        );
    }
    if !parsable {
        println!(
            "{:<5} {:<20} {:<8} {:<7} {:<12} {:<8} name",
            "id", "type", "state", "logging", "database", "schema"
        );
    }
    for o in objects
        .iter()
        .filter(|o| kind.is_none_or(|k| k == o.kind_no))
    {
        if parsable {
            println!(
                "{}\t'{}'\t'Online'\t'Yes'\t'{}'\t'def'\t'{}'",
                o.id, o.kind, o.database, o.name
            );
        } else {
            println!(
                "{:<5} {:<20} {:<8} {:<7} {:<12} {:<8} {}",
                o.id, o.kind, "Online", "Yes", o.database, "def", o.name
            );
        }
    }
    drop(slot);
    Ok(0)
}
