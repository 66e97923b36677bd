//! What a Hopsworks deployment puts into RonDB and runs on the cluster: the schemas its recipes
//! create (`hops`, `hopsworks`, `metastore`, `airflow`, `glassfish_timers`; tables with unique
//! indexes and foreign keys), the disk-data objects `lg_1`/`ts_1`, the host registration the
//! application server writes when it starts, and the services (systemd units) that are NDB API
//! clients, each holding an API slot while it runs.

use anyhow::{bail, Result};
use rusqlite::{params, Connection};

use crate::api;
use crate::model::{insert_row, table_exists};
use crate::state::Cluster;

/// A table: its indexes (name, unique) and foreign keys (name, parent database, parent table).
pub struct TableDef {
    pub db: &'static str,
    pub tbl: &'static str,
    pub indexes: &'static [(&'static str, bool)],
    pub fks: &'static [(&'static str, &'static str, &'static str)],
}

const fn t(
    db: &'static str,
    tbl: &'static str,
    indexes: &'static [(&'static str, bool)],
    fks: &'static [(&'static str, &'static str, &'static str)],
) -> TableDef {
    TableDef {
        db,
        tbl,
        indexes,
        fks,
    }
}

/// The tables a Hopsworks deployment creates (parents before children).
pub const SCHEMA: &[TableDef] = &[
    t("hops", "hdfs_inodes", &[("idx_parent", false)], &[]),
    t(
        "hops",
        "hdfs_blocks",
        &[],
        &[("fk_blocks_inode", "hops", "hdfs_inodes")],
    ),
    t("hops", "hdfs_variables", &[], &[]),
    t("hopsworks", "project", &[("projectname_uk", true)], &[]),
    t(
        "hopsworks",
        "project_topics",
        &[("topic_name_uk", true)],
        &[("fk_topics_project", "hopsworks", "project")],
    ),
    t("hopsworks", "hosts", &[("hostname_uk", true)], &[]),
    t(
        "hopsworks",
        "host_services",
        &[],
        &[("fk_services_host", "hopsworks", "hosts")],
    ),
    t("metastore", "DBS", &[("UNIQUE_DATABASE", true)], &[]),
    t(
        "metastore",
        "TBLS",
        &[("UNIQUETABLE", true)],
        &[("TBLS_FK1", "metastore", "DBS")],
    ),
    t("airflow", "dag", &[], &[]),
    t("glassfish_timers", "EJB__TIMER__TBL", &[], &[]),
];

/// The feature store's data: created with the cluster's data, not by a deployment.
pub const FEATURE_STORE: TableDef = t("app", "events", &[("idx_ts", false)], &[]);

/// Disk-data objects (kind as `ndb_show_tables` names it, name).
pub const DISK_OBJECTS: &[(&str, &str)] = &[
    ("LogfileGroup", "lg_1"),
    ("Undofile", "undo_1.log"),
    ("Tablespace", "ts_1"),
    ("Datafile", "ts_1_data_1.dat"),
];

/// The services that are NDB API clients, in dependency order (started in this order).
pub const NDB_API_SERVICES: &[&str] = &[
    "namenode",
    "resourcemanager",
    "hivemetastore",
    "rdrs",
    "glassfish-domain1",
    "epipe",
];

/// Creates table `d` (indexes online, foreign keys).
pub fn create_table(db: &Connection, d: &TableDef) -> Result<()> {
    db.execute(
        "INSERT INTO ndb_tables(db, tbl) VALUES (?1, ?2)",
        params![d.db, d.tbl],
    )?;
    for (name, uniq) in d.indexes {
        db.execute(
            "INSERT INTO ndb_indexes(db, tbl, name, online, uniq) VALUES (?1, ?2, ?3, 1, ?4)",
            params![d.db, d.tbl, name, *uniq as i64],
        )?;
    }
    for (name, pd, pt) in d.fks {
        db.execute(
            "INSERT INTO ndb_fks(db, tbl, name, parent_db, parent_tbl) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![d.db, d.tbl, name, pd, pt],
        )?;
    }
    Ok(())
}

/// What the deployment recipes create: the schemas and the disk-data objects.
pub fn create_schemas(db: &Connection) -> Result<()> {
    for d in SCHEMA {
        create_table(db, d)?;
    }
    for (kind, name) in DISK_OBJECTS {
        db.execute(
            "INSERT INTO ndb_disk_objects(kind, name) VALUES (?1, ?2)",
            params![kind, name],
        )?;
    }
    Ok(())
}

/// The hosts of the cluster as the application server registers them (`hopsworks.hosts`,
/// `hopsworks.host_services`): the same rows every time, so a restore that excludes their data
/// gets them back when the application server starts.
pub fn register_hosts(cl: &Cluster, db: &Connection) -> Result<()> {
    if !table_exists(db, "hopsworks", "hosts")? {
        return Ok(());
    }
    let cfg = &cl.cfg;
    insert_row(
        db,
        cfg,
        "hopsworks",
        "hosts",
        1,
        &format!("hopsworks0 {} head", cfg.mgm_ip),
    )?;
    for dn in 1..=cfg.hopsfs_datanodes {
        insert_row(
            db,
            cfg,
            "hopsworks",
            "hosts",
            1 + dn as u64,
            &format!("worker{dn} 10.0.1.{dn} worker"),
        )?;
    }
    if table_exists(db, "hopsworks", "host_services")? {
        for (i, s) in NDB_API_SERVICES.iter().enumerate() {
            insert_row(
                db,
                cfg,
                "hopsworks",
                "host_services",
                1 + i as u64,
                &format!("1 {s}"),
            )?;
        }
    }
    Ok(())
}

/// `service NAME start|stop|restart|status`, like `systemctl` (status: `active` exit 0 or
/// `inactive` exit 3). An NDB API service takes a slot when it starts and fails to start when
/// none is free; `mysqld` keeps its own node id.
pub fn service(cl: &mut Cluster, name: &str, op: &str) -> Result<i32> {
    let known = NDB_API_SERVICES.contains(&name) || name == "mysqld";
    if !known {
        bail!("failed to {op} service '{name}': Unit {name}.service not found.");
    }
    let running = name == "mysqld" || cl.rt.services.contains(name);
    match op {
        "status" => {
            println!("{}", if running { "active" } else { "inactive" });
            return Ok(if running { 0 } else { 3 });
        }
        "restart" if name == "mysqld" => cl.rt.mysqld_restarts += 1,
        "start" | "restart" if name != "mysqld" => {
            if op == "restart" && running {
                api::disconnect(&cl.dir, name)?;
                cl.rt.services.remove(name);
            }
            if !cl.rt.services.contains(name) {
                if api::connect(&cl.dir, &cl.cfg, name, &cl.cfg.mgm_ip, None)?.is_none() {
                    eprintln!("Job for {name}.service failed because the control process exited with error code.");
                    eprintln!("{name}: Could not alloc node id at {}:{}: No free node id found for mysqld(API).", cl.cfg.mgm_ip, cl.cfg.mgm_port);
                    return Ok(1);
                }
                cl.rt.services.insert(name.to_string());
                if name == "glassfish-domain1" {
                    register_hosts(cl, &cl.db()?)?;
                }
            }
        }
        "stop" if name != "mysqld" => {
            api::disconnect(&cl.dir, name)?;
            cl.rt.services.remove(name);
        }
        _ => bail!("failed to run service command: '{op}' is not supported for {name}"),
    }
    cl.save()?;
    Ok(0)
}

/// Starts every NDB API service (a deployment's last step).
pub fn start_all(cl: &mut Cluster) -> Result<()> {
    for s in NDB_API_SERVICES {
        if service(cl, s, "start")? != 0 {
            bail!("failed to start {s}: no free API slot");
        }
    }
    Ok(())
}
