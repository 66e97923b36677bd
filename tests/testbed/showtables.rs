//! `ndb_show_tables` as the test-bed simulates it: the objects of the NDB dictionary (the
//! system tables, the `mysql` schema tables every cluster has, and the tables created by
//! `ndb_restore -m` or `cluster create`), in the real tool's two formats. Plain: a header and
//! aligned columns (`%-5s %-20s %-8s %-7s %-12s %-8s %s`), then `NDBT_ProgramExit: 0 - OK`;
//! `-p`: one tab-separated line per object with quoted fields and no trailer. `-t N` keeps one
//! object type (1 SystemTable, 2 UserTable).

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
                    println!("\nNDBT_ProgramExit: 2 - Wrong arguments");
                    return Ok(2);
                }
            }
        }
        i += 1;
    }
    let cl = Cluster::open_unlocked(dir)?;
    if connect_fails(&cl, connect.as_deref()).is_some() {
        println!("Unable to connect to management server.");
        println!("\nNDBT_ProgramExit: 1 - Failed");
        return Ok(1);
    }
    if (1..=cl.cfg.data_nodes).all(|n| cl.rt.ndb_down.contains(&n)) {
        println!("Cluster nodes not ready in 30 seconds.");
        println!("\nNDBT_ProgramExit: 1 - Failed");
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
    let mut st = db.prepare("SELECT db, tbl FROM ndb_tables ORDER BY rowid")?;
    for r in st.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))? {
        let (database, name) = r?;
        objects.push(Object {
            id: objects.len() as u32 + 1,
            kind: "UserTable",
            kind_no: 2,
            database,
            name,
        });
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
    if !parsable {
        println!("\nNDBT_ProgramExit: 0 - OK");
    }
    Ok(0)
}
