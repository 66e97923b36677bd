//! The state directory of one simulated cluster.
//!
//! Layout of a cluster directory `D`:
//! - `D/cluster.json`: the cluster definition (what `cluster create` was given; kept by redeploy).
//! - `D/runtime.json`: service state (data nodes connected, HopsFS datanodes started, epipe running,
//!   safe mode override, the namenode's re-replication clock, Kafka topics, reindex records,
//!   faults, per-tool call counters, GCP counter).
//! - `D/rondb.sqlite`: the RonDB "database": tables, indexes (online flag), rows (each owned by a
//!   data node).
//! - `D/ndb/<node>/backups/`: each data node's BackupDataDir.
//! - `D/hopsfs/dn<k>/vol<v>/`: HopsFS datanode volumes (layout of the reference).
//! - `D/bin/`: symlinks named like the tools, and `testbed.dir` naming `D`.
//! - `D/lock`: every tool call holds an exclusive flock on it while it changes state.
//! - `D/api.json` (with `D/api.lock`): the NDB API slots in use (see `api.rs`).

use anyhow::{bail, Context, Result};
use rusqlite::Connection;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

#[derive(Serialize, Deserialize, Clone, Debug)]
pub struct Config {
    pub seed: u64,
    pub data_nodes: u32,
    pub hopsfs_datanodes: u32,
    pub volumes: u32,
    pub rows: u64,
    pub files: u64,
    pub block_size: u64,
    /// 0: single-part backups; P: `BACKUP-<id>-PART-<p>-OF-<P>` directories.
    pub multi_part: u32,
    /// Backup files compressed (zstd): the magic is then not at byte 0.
    pub compressed: bool,
    pub mgm_node_id: u32,
    pub mgm_ip: String,
    pub mgm_port: u16,
    pub version: String,
    pub cluster_id: String,
    pub block_pool_id: String,
    pub namespace_id: u32,
    /// How often `hdfs dfsadmin -safemode wait` polls, in milliseconds (real: 5000).
    pub safemode_poll_ms: u64,
    /// How long the namenode stays in safe mode after the threshold is reached, in milliseconds
    /// (`dfs.namenode.safemode.extension`; Hopsworks: 30000).
    #[serde(default)]
    pub safemode_extension_ms: u64,
    /// Host-less `[API]` slots of config.ini besides the MySQL server's (Hopsworks: about 10).
    #[serde(default = "default_api_slots")]
    pub api_slots: u32,
    /// The MySQL server logs NDB changes to its binlog (`ndb_log_bin=ON`, a replication primary).
    #[serde(default)]
    pub binlog: bool,
    /// Data nodes connect from an address the management server shows as a wildcard (SHOW
    /// prints `id=N` without `@host`).
    #[serde(default)]
    pub wildcard_addresses: bool,
    /// Replicas per block (`dfs.replication`); `None`: 3, or the datanodes if fewer.
    #[serde(default)]
    pub replication: Option<u32>,
    /// How often the namenode's ReplicationMonitor schedules work, in milliseconds
    /// (`dfs.namenode.replication.interval`; real: 3 s).
    #[serde(default = "default_replication_interval_ms")]
    pub replication_interval_ms: u64,
}

fn default_api_slots() -> u32 {
    10
}

fn default_replication_interval_ms() -> u64 {
    3000
}

impl Config {
    pub fn data_node_ip(&self, node: u32) -> String {
        let base = self
            .mgm_ip
            .rsplit_once('.')
            .map(|(a, _)| a)
            .unwrap_or("10.0.0");
        format!("{base}.{}", 10 + node)
    }
    pub fn replication(&self) -> u32 {
        self.replication.unwrap_or(3).min(self.hopsfs_datanodes)
    }
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct CallFault {
    pub tool: String,
    pub nth: u64,
    /// fail | hang | abort
    pub action: String,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default)]
pub struct Runtime {
    /// RonDB data nodes that are not connected.
    pub ndb_down: Vec<u32>,
    /// HopsFS datanodes (1-based) that are started.
    pub dn_started: Vec<u32>,
    /// HopsFS datanodes that are unreachable (their blocks are never reported).
    pub dn_unreachable: Vec<u32>,
    /// Data nodes whose backup directory is "full".
    pub disk_full: Vec<u32>,
    pub mgm_down: bool,
    /// The Hopsworks services that run (systemd units; see `services.rs`).
    #[serde(default)]
    pub services: std::collections::BTreeSet<String>,
    /// How often the MySQL server was restarted (`service mysqld restart`).
    #[serde(default)]
    pub mysqld_restarts: u64,
    /// How many times the cluster was deployed (new HopsFS cluster and block pool ids each).
    #[serde(default)]
    pub deployments: u64,
    /// "on" / "off" set by `-safemode enter|leave`.
    pub safemode_manual: Option<String>,
    pub kafka_topics: BTreeMap<String, (u32, u32)>,
    pub reindexes: Vec<String>,
    pub faults: Vec<CallFault>,
    pub calls: BTreeMap<String, u64>,
    pub gcp: u64,
    pub last_backup_id: u64,
    pub running_backup: Option<u64>,
    pub next_block_id: u64,
    pub next_inode: u64,
    pub next_genstamp: u64,
    pub next_row: u64,
    /// When the reported blocks last reached the threshold (ms since the epoch).
    #[serde(default)]
    pub safemode_threshold_since_ms: Option<i64>,
    /// When the ReplicationMonitor was first seen able to work (safe mode OFF, datanodes live;
    /// ms since the epoch); `None` while it cannot, and after the datanodes are stopped.
    #[serde(default)]
    pub replication_since_ms: Option<i64>,
    /// ReplicationMonitor iterations already simulated since `replication_since_ms`.
    #[serde(default)]
    pub replication_iterations: u64,
}

pub struct Cluster {
    pub dir: PathBuf,
    pub cfg: Config,
    pub rt: Runtime,
    _lock: Option<File>,
}

pub const TOOLS: &[&str] = &[
    "ndb_mgm",
    "ndb_restore",
    "ndb_show_tables",
    "ndb_drop_table",
    "hdfs",
    "reindex-epipe.sh",
    "kafka-restore.sh",
];

impl Cluster {
    /// Opens the cluster in `dir`, holding its lock until dropped.
    pub fn open(dir: &Path) -> Result<Cluster> {
        let lock = lock(dir)?;
        let mut c = Cluster::open_unlocked(dir)?;
        c._lock = Some(lock);
        Ok(c)
    }

    pub fn open_unlocked(dir: &Path) -> Result<Cluster> {
        let cfg: Config = read_json(&dir.join("cluster.json"))?;
        let rt: Runtime = read_json(&dir.join("runtime.json"))?;
        Ok(Cluster {
            dir: dir.to_path_buf(),
            cfg,
            rt,
            _lock: None,
        })
    }

    pub fn new_locked(dir: &Path, cfg: Config, rt: Runtime) -> Result<Cluster> {
        std::fs::create_dir_all(dir)?;
        let l = lock(dir)?;
        Ok(Cluster {
            dir: dir.to_path_buf(),
            cfg,
            rt,
            _lock: Some(l),
        })
    }

    pub fn save(&self) -> Result<()> {
        write_json(&self.dir.join("cluster.json"), &self.cfg)?;
        write_json(&self.dir.join("runtime.json"), &self.rt)
    }

    pub fn db(&self) -> Result<Connection> {
        let c = Connection::open(self.dir.join("rondb.sqlite"))?;
        c.execute_batch(
            "PRAGMA journal_mode=WAL; PRAGMA synchronous=OFF; PRAGMA busy_timeout=30000;
             CREATE TABLE IF NOT EXISTS ndb_tables(db TEXT, tbl TEXT, PRIMARY KEY(db, tbl));
             CREATE TABLE IF NOT EXISTS ndb_indexes(db TEXT, tbl TEXT, name TEXT, online INTEGER,
                 uniq INTEGER NOT NULL DEFAULT 0, PRIMARY KEY(db, tbl, name));
             CREATE TABLE IF NOT EXISTS ndb_fks(db TEXT, tbl TEXT, name TEXT, parent_db TEXT,
                 parent_tbl TEXT, PRIMARY KEY(db, tbl, name));
             CREATE TABLE IF NOT EXISTS ndb_disk_objects(kind TEXT, name TEXT, PRIMARY KEY(name));
             CREATE TABLE IF NOT EXISTS ndb_binlog(seq INTEGER PRIMARY KEY, db TEXT, tbl TEXT, pk INTEGER);
             CREATE TABLE IF NOT EXISTS ndb_rows(db TEXT, tbl TEXT, pk INTEGER, node INTEGER, val TEXT,
                 PRIMARY KEY(db, tbl, pk)) WITHOUT ROWID;
             CREATE TABLE IF NOT EXISTS ndb_epoch(id INTEGER PRIMARY KEY, epoch INTEGER);",
        )?;
        Ok(c)
    }

    pub fn backup_data_dir(&self, node: u32) -> PathBuf {
        self.dir.join("ndb").join(node.to_string()).join("backups")
    }

    pub fn volume(&self, dn: u32, vol: u32) -> PathBuf {
        self.dir
            .join("hopsfs")
            .join(format!("dn{dn}"))
            .join(format!("vol{vol}"))
    }

    /// Releases the lock early (before hanging).
    pub fn unlock(&mut self) {
        self._lock = None;
    }

    /// Counts this call of `tool` and applies an injected fault for it, if any: returns the
    /// action ("fail", "abort") for the caller to act on; "hang" never returns.
    pub fn count_call(&mut self, tool: &str) -> Result<Option<String>> {
        let n = self.rt.calls.entry(tool.to_string()).or_insert(0);
        *n += 1;
        let n = *n;
        self.save()?;
        let hit = self
            .rt
            .faults
            .iter()
            .find(|f| f.tool == tool && f.nth == n)
            .map(|f| f.action.clone());
        if hit.as_deref() == Some("hang") {
            self._lock = None;
            loop {
                std::thread::sleep(std::time::Duration::from_secs(3600));
            }
        }
        Ok(hit)
    }
}

fn lock(dir: &Path) -> Result<File> {
    let f = File::create(dir.join("lock"))
        .with_context(|| format!("failed to open lock in '{}'", dir.display()))?;
    // SAFETY: flock on a valid, owned file descriptor.
    let r = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) };
    if r != 0 {
        bail!("failed to lock '{}'", dir.display());
    }
    Ok(f)
}

pub fn read_json<T: serde::de::DeserializeOwned>(p: &Path) -> Result<T> {
    let s =
        std::fs::read_to_string(p).with_context(|| format!("failed to read '{}'", p.display()))?;
    serde_json::from_str(&s).with_context(|| format!("failed to parse '{}'", p.display()))
}

pub fn write_json<T: Serialize>(p: &Path, v: &T) -> Result<()> {
    let tmp = p.with_extension("tmp");
    std::fs::write(&tmp, serde_json::to_vec_pretty(v)?)?;
    std::fs::rename(&tmp, p)?;
    Ok(())
}

/// Finds the cluster directory of a tool called as `argv0`: `HOPSDR_TESTBED_DIR`, else the
/// `testbed.dir` file beside the symlink (found through PATH when argv0 has no directory).
pub fn find_dir(argv0: &str) -> Result<PathBuf> {
    if let Some(d) = std::env::var_os("HOPSDR_TESTBED_DIR") {
        return Ok(PathBuf::from(d));
    }
    let p = Path::new(argv0);
    let bin_dir = if argv0.contains('/') {
        p.parent().map(Path::to_path_buf)
    } else {
        std::env::var_os("PATH").and_then(|path| {
            std::env::split_paths(&path)
                .find(|d| d.join(argv0).exists() && d.join("testbed.dir").exists())
        })
    };
    let Some(bin_dir) = bin_dir else {
        bail!("cannot find the test-bed directory: set HOPSDR_TESTBED_DIR");
    };
    let f = bin_dir.join("testbed.dir");
    let s =
        std::fs::read_to_string(&f).with_context(|| format!("failed to read '{}'", f.display()))?;
    Ok(PathBuf::from(s.trim()))
}
