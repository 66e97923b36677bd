//! `ndb_drop_table [-c <connectstring>] -d <database> <table>...`: drops tables through the NDB
//! API, one by one, as the real tool does (`Dropping table <t>...OK`, or the line broken and
//! `<code>: <message>`; exit 1 if any failed, 2 on wrong arguments). A table that another
//! table's foreign key references cannot be dropped (21080); a missing one is 723. Dropping a
//! table drops its rows, indexes and the foreign keys it holds. An NDB API client: with no free
//! API slot it cannot connect.

use anyhow::Result;
use rusqlite::params;
use std::path::Path;

use crate::mgm::connect_fails;
use crate::model::table_exists;
use crate::state::Cluster;

pub fn main(dir: &Path, args: &[String]) -> Result<i32> {
    let mut connect = None;
    let mut database = "TEST_DB".to_string();
    let mut tables = Vec::new();
    let mut i = 0;
    while i < args.len() {
        let a = args[i].as_str();
        match a {
            "-c" | "--ndb-connectstring" | "--connect-string" => {
                i += 1;
                connect = args.get(i).cloned();
            }
            "-d" | "--database" => {
                i += 1;
                match args.get(i) {
                    Some(d) => database = d.clone(),
                    None => return Ok(2),
                }
            }
            _ if a.starts_with("--ndb-connectstring=") => {
                connect = a.split_once('=').map(|x| x.1.to_string())
            }
            _ if a.starts_with("--database=") => {
                database = a
                    .split_once('=')
                    .map(|x| x.1.to_string())
                    .unwrap_or_default()
            }
            _ if a.starts_with('-') => {
                eprintln!("ndb_drop_table: unknown option '{a}'");
                return Ok(2);
            }
            _ => tables.push(a.to_string()),
        }
        i += 1;
    }
    if tables.is_empty() {
        eprintln!("Usage: ndb_drop_table [-c connectstring] -d dbname table(s)");
        return Ok(2);
    }
    let cfg = Cluster::open_unlocked(dir)?.cfg;
    let slot = if connect_fails(&Cluster::open_unlocked(dir)?, connect.as_deref()).is_some() {
        None
    } else {
        crate::api::connect_tool(dir, &cfg, "ndb_drop_table")?
    };
    if slot.is_none() {
        println!("Unable to connect to management server.");
        return Ok(1);
    }
    let mut cl = Cluster::open(dir)?;
    if cl.count_call("ndb_drop_table")?.is_some() {
        println!("Cluster nodes not ready in 30 seconds.");
        return Ok(1);
    }
    let db = cl.db()?;
    let mut failed = false;
    for t in &tables {
        print!("Dropping table {t}...");
        if !table_exists(&db, &database, t)? {
            println!("\n723: No such table existed");
            failed = true;
            continue;
        }
        let children: i64 = db.query_row(
            "SELECT count(*) FROM ndb_fks WHERE parent_db = ?1 AND parent_tbl = ?2 AND NOT (db = ?1 AND tbl = ?2)",
            params![database, t],
            |r| r.get(0),
        )?;
        if children > 0 {
            println!(
                "\n21080: Drop table not allowed in NDB - referenced by foreign key on another table"
            );
            failed = true;
            continue;
        }
        db.execute_batch("BEGIN")?;
        for sql in [
            "DELETE FROM ndb_rows WHERE db = ?1 AND tbl = ?2",
            "DELETE FROM ndb_indexes WHERE db = ?1 AND tbl = ?2",
            "DELETE FROM ndb_fks WHERE db = ?1 AND tbl = ?2",
            "DELETE FROM ndb_tables WHERE db = ?1 AND tbl = ?2",
        ] {
            db.execute(sql, params![database, t])?;
        }
        db.execute_batch("COMMIT")?;
        println!("OK");
    }
    cl.save()?;
    drop(slot);
    Ok(if failed { 1 } else { 0 })
}
