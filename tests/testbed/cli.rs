//! The test-bed's own subcommands.

use crate::model::{self, CreateArgs};
use crate::state::{CallFault, Cluster};
use anyhow::{bail, Result};
use clap::{Parser, Subcommand};
use std::path::PathBuf;

#[derive(Parser)]
#[command(
    name = "hopsdr-testbed",
    about = "A simulated Hopsworks cluster for tests"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Create, inspect, destroy, redeploy or churn a cluster.
    Cluster {
        #[command(subcommand)]
        cmd: ClusterCmd,
    },
    /// Start, stop or query (`status`) a HopsFS datanode (1-based).
    Datanode {
        op: String,
        dn: u32,
        #[arg(long, env = "HOPSDR_TESTBED_DIR")]
        dir: PathBuf,
    },
    /// Start, stop, restart or query (`status`) a service, like systemctl: the NDB API
    /// services (namenode, resourcemanager, hivemetastore, rdrs, glassfish-domain1, epipe) or
    /// mysqld.
    Service {
        name: String,
        op: String,
        #[arg(long, env = "HOPSDR_TESTBED_DIR")]
        dir: PathBuf,
    },
    /// NDB API clients other than the services: connect or disconnect one, list every slot held.
    Api {
        #[command(subcommand)]
        cmd: ApiCmd,
    },
    /// HopsFS in cloud mode: bring the bucket to the metadata's blocks (`sync`), or count the
    /// metadata's blocks whose objects are there with the right bytes (`check`).
    Cloud {
        op: String,
        #[arg(long)]
        endpoint: String,
        #[arg(long)]
        bucket: String,
        #[arg(long)]
        access_key: String,
        #[arg(long)]
        secret_file: PathBuf,
        #[arg(long, default_value_t = 500)]
        set_size: u64,
        #[arg(long, env = "HOPSDR_TESTBED_DIR")]
        dir: PathBuf,
    },
    /// The cluster's OpenSearch: serve its API, inject faults, read its fingerprint.
    Opensearch {
        #[command(subcommand)]
        cmd: OpensearchCmd,
    },
    /// Inject or clear faults.
    Fault {
        #[command(subcommand)]
        cmd: FaultCmd,
    },
    /// Read a backup's files (like `ndb_restore --print-data`).
    Backup {
        #[command(subcommand)]
        cmd: BackupCmd,
    },
}

#[derive(Subcommand)]
enum OpensearchCmd {
    /// Serve the snapshot and restore API on 127.0.0.1:PORT until killed.
    Serve {
        #[arg(long)]
        port: u16,
        /// How long a snapshot stays IN_PROGRESS.
        #[arg(long, default_value_t = 300)]
        snapshot_ms: u64,
        /// How long a restored index stays red.
        #[arg(long, default_value_t = 300)]
        restore_ms: u64,
        /// User `hopsdr`'s password (first line); without it no authentication.
        #[arg(long)]
        password_file: Option<PathBuf>,
        /// HTTPS with this certificate (PEM) ...
        #[arg(long, requires = "key")]
        cert: Option<PathBuf>,
        /// ... and key (PEM).
        #[arg(long)]
        key: Option<PathBuf>,
        #[arg(long, env = "HOPSDR_TESTBED_DIR")]
        dir: PathBuf,
    },
    /// Snapshots end `partial` or `failed`, or every request is refused (`unavailable`);
    /// `clear` undoes it.
    Fault {
        kind: String,
        #[arg(long, env = "HOPSDR_TESTBED_DIR")]
        dir: PathBuf,
    },
    /// One digest of the indices (not the security index): names, state, documents.
    Fingerprint {
        #[arg(long, env = "HOPSDR_TESTBED_DIR")]
        dir: PathBuf,
    },
    /// The snapshots OpenSearch knows, one `repository/snapshot` a line.
    Snapshots {
        #[arg(long, env = "HOPSDR_TESTBED_DIR")]
        dir: PathBuf,
    },
    /// Add documents to an index (created if needed).
    AddDocs {
        #[arg(long)]
        index: String,
        #[arg(long)]
        docs: u32,
        #[arg(long, env = "HOPSDR_TESTBED_DIR")]
        dir: PathBuf,
    },
}

#[derive(Subcommand)]
enum BackupCmd {
    /// The HopsFS blocks the backed-up metadata references, one `<block pool> <block id>
    /// <genstamp> <length>` line each, read from every data node's files of the backup.
    /// An encrypted backup needs its password, read as ndb_restore reads it.
    Blocks {
        #[arg(long)]
        backup_id: u64,
        #[arg(long, env = "HOPSDR_TESTBED_DIR")]
        dir: PathBuf,
        /// The backup password: the first line of standard input.
        #[arg(long)]
        backup_password_from_stdin: bool,
    },
}

#[derive(Subcommand)]
enum ApiCmd {
    /// An NDB API client nobody knows (a job, a tool on another host) connects.
    Connect {
        #[arg(long)]
        name: String,
        #[arg(long, default_value = "10.0.0.99")]
        address: String,
        #[arg(long, env = "HOPSDR_TESTBED_DIR")]
        dir: PathBuf,
    },
    Disconnect {
        #[arg(long)]
        name: String,
        #[arg(long, env = "HOPSDR_TESTBED_DIR")]
        dir: PathBuf,
    },
    /// Every connected client as JSON (id, client, address, pid of a tool process).
    List {
        #[arg(long, env = "HOPSDR_TESTBED_DIR")]
        dir: PathBuf,
    },
}

#[derive(Subcommand)]
enum ClusterCmd {
    Create {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long, default_value_t = 2)]
        data_nodes: u32,
        #[arg(long, default_value_t = 3)]
        hopsfs_datanodes: u32,
        #[arg(long, default_value_t = 1)]
        volumes: u32,
        #[arg(long, default_value_t = 100)]
        rows: u64,
        #[arg(long, default_value_t = 10)]
        files: u64,
        #[arg(long, default_value_t = 4096)]
        block_size: u64,
        /// Replicas per block (`dfs.replication`; default: 3, or the datanodes if fewer).
        #[arg(long)]
        replication: Option<u32>,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Parts per backup (0: single-part layout).
        #[arg(long, default_value_t = 0)]
        multi_part: u32,
        /// Write compressed backup files (no magic at byte 0).
        #[arg(long)]
        compressed: bool,
        /// Poll interval of `hdfs dfsadmin -safemode wait` (the real one polls every 5 s).
        #[arg(long, default_value_t = 5000)]
        safemode_poll_ms: u64,
        /// Safe mode extension after the threshold is reached (Hopsworks: 30000).
        #[arg(long, default_value_t = 0)]
        safemode_extension_ms: u64,
        /// How often the namenode schedules re-replication of under-replicated blocks once out
        /// of safe mode (`dfs.namenode.replication.interval`; real: 3 s).
        #[arg(long, default_value_t = 3000)]
        replication_interval_ms: u64,
        /// Host-less [API] slots besides the MySQL server's.
        #[arg(long, default_value_t = 10)]
        api_slots: u32,
        /// The MySQL server writes NDB changes to its binlog (ndb_log_bin=ON).
        #[arg(long)]
        binlog: bool,
        /// Data nodes connect from a wildcard address (SHOW prints no @host for them).
        #[arg(long)]
        wildcard_addresses: bool,
    },
    /// Print the cluster's paths and ids as JSON (to write a hopsdr config for it).
    Info {
        #[arg(long, env = "HOPSDR_TESTBED_DIR")]
        dir: PathBuf,
    },
    /// Print one hex digest of all logical state.
    Fingerprint {
        #[arg(long, env = "HOPSDR_TESTBED_DIR")]
        dir: PathBuf,
    },
    /// The lost cluster: RonDB state, node backup dirs, volumes, topics, indexes wiped.
    Destroy {
        #[arg(long, env = "HOPSDR_TESTBED_DIR")]
        dir: PathBuf,
    },
    /// A new deployment as Hopsworks makes it (its schemas and disk objects in RonDB, the
    /// services running, the datanodes started on freshly formatted volumes); `--empty`: RonDB
    /// empty and the datanodes stopped with empty volumes. The topology may change.
    Redeploy {
        #[arg(long, env = "HOPSDR_TESTBED_DIR")]
        dir: PathBuf,
        #[arg(long)]
        empty: bool,
        #[arg(long)]
        data_nodes: Option<u32>,
        #[arg(long)]
        hopsfs_datanodes: Option<u32>,
        #[arg(long)]
        volumes: Option<u32>,
    },
    /// Creates table `db.table` with one row (a table somebody made outside the backup).
    AddTable {
        #[arg(long)]
        table: String,
        #[arg(long, env = "HOPSDR_TESTBED_DIR")]
        dir: PathBuf,
    },
    /// How many rows table `db.table` holds.
    Rows {
        #[arg(long)]
        table: String,
        #[arg(long, env = "HOPSDR_TESTBED_DIR")]
        dir: PathBuf,
    },
    /// How many rows the MySQL server's binlog holds.
    Binlog {
        #[arg(long, env = "HOPSDR_TESTBED_DIR")]
        dir: PathBuf,
    },
    /// Keep changing the cluster for a while (--seconds), or change exactly N blocks at once
    /// (--blocks: a third new files, a third deleted, a third appended).
    Churn {
        #[arg(long, env = "HOPSDR_TESTBED_DIR")]
        dir: PathBuf,
        #[arg(long, required_unless_present = "blocks", conflicts_with = "blocks")]
        seconds: Option<f64>,
        #[arg(long)]
        blocks: Option<u64>,
    },
}

#[derive(Subcommand)]
enum FaultCmd {
    /// Make the Nth call (counted from now on, 1-based) of a tool fail, hang, abort (START
    /// BACKUP: partial files, aborted output) or hang-mid (START BACKUP: hang after partial files).
    Call {
        #[arg(long, env = "HOPSDR_TESTBED_DIR")]
        dir: PathBuf,
        #[arg(long)]
        tool: String,
        #[arg(long, default_value_t = 1)]
        nth: u64,
        #[arg(long)]
        action: String,
    },
    /// A RonDB data node not connected (or connected again with --up).
    NodeDown {
        #[arg(long, env = "HOPSDR_TESTBED_DIR")]
        dir: PathBuf,
        #[arg(long)]
        node: u32,
        #[arg(long)]
        up: bool,
    },
    /// The management server unreachable (or reachable again with --up).
    MgmDown {
        #[arg(long, env = "HOPSDR_TESTBED_DIR")]
        dir: PathBuf,
        #[arg(long)]
        up: bool,
    },
    /// A HopsFS datanode unreachable (or reachable again with --up).
    DatanodeUnreachable {
        #[arg(long, env = "HOPSDR_TESTBED_DIR")]
        dir: PathBuf,
        #[arg(long)]
        dn: u32,
        #[arg(long)]
        up: bool,
    },
    /// A data node's backup disk full (or not with --clear).
    DiskFull {
        #[arg(long, env = "HOPSDR_TESTBED_DIR")]
        dir: PathBuf,
        #[arg(long)]
        node: u32,
        #[arg(long)]
        clear: bool,
    },
    /// Flip bytes in the middle of every .Data file of a node's backup (in place).
    CorruptBackup {
        #[arg(long, env = "HOPSDR_TESTBED_DIR")]
        dir: PathBuf,
        #[arg(long)]
        node: u32,
        #[arg(long)]
        backup: u64,
    },
    /// Remove every fault.
    Clear {
        #[arg(long, env = "HOPSDR_TESTBED_DIR")]
        dir: PathBuf,
    },
}

fn info(cl: &Cluster) -> serde_json::Value {
    let c = &cl.cfg;
    let nodes: Vec<serde_json::Value> = (1..=c.data_nodes)
        .map(|n| {
            serde_json::json!({
                "id": n,
                "ip": c.data_node_ip(n),
                "backup_data_dir": cl.backup_data_dir(n),
            })
        })
        .collect();
    let dns: Vec<serde_json::Value> = (1..=c.hopsfs_datanodes)
        .map(|dn| {
            let vols: Vec<PathBuf> = (1..=c.volumes).map(|v| cl.volume(dn, v)).collect();
            serde_json::json!({ "id": dn, "volumes": vols })
        })
        .collect();
    serde_json::json!({
        "dir": cl.dir,
        "bin": cl.dir.join("bin"),
        "connectstring": format!("{}:{}", c.mgm_ip, c.mgm_port),
        "mgm_node_id": c.mgm_node_id,
        "data_nodes": nodes,
        "hopsfs_datanodes": dns,
        "cluster_id": c.cluster_id,
        "block_pool_id": c.block_pool_id,
        "multi_part": c.multi_part,
        "compressed": c.compressed,
        "services": cl.rt.services,
        "mysqld_restarts": cl.rt.mysqld_restarts,
        "datanodes_started": cl.rt.dn_started,
    })
}

fn toggle(v: &mut Vec<u32>, x: u32, on: bool) {
    v.retain(|y| *y != x);
    if on {
        v.push(x);
        v.sort();
    }
}

pub fn main() -> Result<i32> {
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Cluster { cmd } => match cmd {
            ClusterCmd::Create {
                dir,
                data_nodes,
                hopsfs_datanodes,
                volumes,
                rows,
                files,
                block_size,
                replication,
                seed,
                multi_part,
                compressed,
                safemode_poll_ms,
                safemode_extension_ms,
                replication_interval_ms,
                api_slots,
                binlog,
                wildcard_addresses,
            } => {
                let os_dir = dir.clone();
                model::create(CreateArgs {
                    dir,
                    data_nodes,
                    hopsfs_datanodes,
                    volumes,
                    rows,
                    files,
                    block_size,
                    replication,
                    seed,
                    multi_part,
                    compressed,
                    safemode_poll_ms,
                    safemode_extension_ms,
                    replication_interval_ms,
                    api_slots,
                    binlog,
                    wildcard_addresses,
                })?;
                crate::opensearch::create(&os_dir, seed)?;
            }
            ClusterCmd::Info { dir } => println!("{}", info(&Cluster::open(&dir)?)),
            ClusterCmd::Fingerprint { dir } => {
                println!("{}", model::fingerprint(&Cluster::open(&dir)?)?)
            }
            ClusterCmd::Destroy { dir } => {
                model::wipe(&mut Cluster::open(&dir)?)?;
                crate::opensearch::destroy(&dir)?;
            }
            ClusterCmd::Redeploy {
                dir,
                empty,
                data_nodes,
                hopsfs_datanodes,
                volumes,
            } => {
                let mut cl = Cluster::open(&dir)?;
                if let Some(n) = data_nodes.filter(|n| (1..=48).contains(n)) {
                    cl.cfg.data_nodes = n;
                }
                if let Some(n) = hopsfs_datanodes.filter(|n| *n > 0) {
                    cl.cfg.hopsfs_datanodes = n;
                }
                if let Some(n) = volumes.filter(|n| *n > 0) {
                    cl.cfg.volumes = n;
                }
                model::deploy(&mut cl, empty)?;
                crate::opensearch::redeploy(&dir)?;
            }
            ClusterCmd::AddTable { table, dir } => {
                let Some((d, t)) = table.split_once('.') else {
                    bail!("failed to add a table: name it as <database>.<table>");
                };
                let cl = Cluster::open(&dir)?;
                let db = cl.db()?;
                db.execute("INSERT INTO ndb_tables(db, tbl) VALUES (?1, ?2)", [d, t])?;
                crate::model::insert_row(&db, &cl.cfg, d, t, 1, "kept")?;
            }
            ClusterCmd::Rows { table, dir } => {
                let Some((d, t)) = table.split_once('.') else {
                    bail!("failed to count rows: name the table as <database>.<table>");
                };
                let db = Cluster::open_unlocked(&dir)?.db()?;
                let n: i64 = db.query_row(
                    "SELECT count(*) FROM ndb_rows WHERE db = ?1 AND tbl = ?2",
                    [d, t],
                    |r| r.get(0),
                )?;
                println!("{n}");
            }
            ClusterCmd::Binlog { dir } => {
                let db = Cluster::open(&dir)?.db()?;
                let n: i64 = db.query_row("SELECT count(*) FROM ndb_binlog", [], |r| r.get(0))?;
                println!("{n}");
            }
            ClusterCmd::Churn {
                dir,
                seconds,
                blocks,
            } => match (seconds, blocks) {
                (_, Some(n)) => model::churn_blocks(&dir, n)?,
                (Some(s), None) => model::churn(&dir, s)?,
                (None, None) => unreachable!("clap requires one"),
            },
        },
        Cmd::Datanode { op, dn, dir } => return crate::hdfs::datanode(&dir, &op, dn),
        Cmd::Service { name, op, dir } => {
            return crate::hopsworks::service(&mut Cluster::open(&dir)?, &name, &op)
        }
        Cmd::Api { cmd } => match cmd {
            ApiCmd::Connect { name, address, dir } => {
                let cl = Cluster::open(&dir)?;
                if crate::api::connect(&dir, &cl.cfg, &name, &address, None)?.is_none() {
                    bail!("failed to connect '{name}': no free API slot");
                }
            }
            ApiCmd::Disconnect { name, dir } => crate::api::disconnect(&dir, &name)?,
            ApiCmd::List { dir } => {
                println!("{}", serde_json::to_string(&crate::api::list(&dir)?)?)
            }
        },
        Cmd::Fault { cmd } => fault(cmd)?,
        Cmd::Cloud {
            op,
            endpoint,
            bucket,
            access_key,
            secret_file,
            set_size,
            dir,
        } => {
            let b = crate::cloud::Bucket {
                endpoint,
                bucket,
                access_key,
                secret_file,
                set_size,
            };
            match op.as_str() {
                "sync" => {
                    let (put, deleted) = crate::cloud::sync(&dir, &b)?;
                    println!("{put} objects put, {deleted} deleted");
                }
                "check" => {
                    let (good, all) = crate::cloud::check(&dir, &b)?;
                    println!("{good} of {all} blocks whole");
                }
                o => anyhow::bail!("unknown cloud operation {o:?}: sync or check"),
            }
        }
        Cmd::Opensearch { cmd } => match cmd {
            OpensearchCmd::Serve {
                port,
                snapshot_ms,
                restore_ms,
                password_file,
                cert,
                key,
                dir,
            } => {
                let password = match password_file {
                    None => None,
                    Some(f) => Some(
                        std::fs::read_to_string(&f)?
                            .lines()
                            .next()
                            .unwrap_or_default()
                            .to_string(),
                    ),
                };
                let opts = crate::opensearch::Options {
                    snapshot_ms,
                    restore_ms,
                    password,
                };
                return crate::opensearch::serve(&dir, port, opts, cert.zip(key));
            }
            OpensearchCmd::Fault { kind, dir } => crate::opensearch::with_state(&dir, |st| {
                st.fault = match kind.as_str() {
                    "clear" => None,
                    "partial" | "failed" | "unavailable" => Some(kind.clone()),
                    k => {
                        anyhow::bail!("unknown fault {k:?}: partial, failed, unavailable or clear")
                    }
                };
                Ok(())
            })?,
            OpensearchCmd::Fingerprint { dir } => {
                println!("{}", crate::opensearch::fingerprint(&dir)?)
            }
            OpensearchCmd::Snapshots { dir } => {
                for s in crate::opensearch::snapshots(&dir)? {
                    println!("{s}");
                }
            }
            OpensearchCmd::AddDocs { index, docs, dir } => {
                crate::opensearch::add_docs(&dir, &index, docs)?
            }
        },
        Cmd::Backup {
            cmd:
                BackupCmd::Blocks {
                    backup_id,
                    dir,
                    backup_password_from_stdin,
                },
        } => {
            let password = if backup_password_from_stdin {
                Some(crate::restore::password_from_stdin().map_err(|m| anyhow::anyhow!("{m}"))?)
            } else {
                None
            };
            backup_blocks(
                &Cluster::open_unlocked(&dir)?,
                backup_id,
                password.as_deref(),
            )?
        }
    }
    Ok(0)
}

fn fault(cmd: FaultCmd) -> Result<()> {
    match cmd {
        FaultCmd::Call {
            dir,
            tool,
            nth,
            action,
        } => {
            if !["fail", "hang", "abort", "hang-mid"].contains(&action.as_str()) {
                bail!(
                    "failed to add fault: unknown action '{action}' (fail, hang, abort, hang-mid)"
                );
            }
            if !crate::state::TOOLS.contains(&tool.as_str()) {
                bail!("failed to add fault: unknown tool '{tool}'");
            }
            let mut cl = Cluster::open(&dir)?;
            let base = cl.rt.calls.get(&tool).copied().unwrap_or(0);
            cl.rt.faults.push(CallFault {
                tool,
                nth: base + nth,
                action,
            });
            cl.save()
        }
        FaultCmd::NodeDown { dir, node, up } => {
            let mut cl = Cluster::open(&dir)?;
            toggle(&mut cl.rt.ndb_down, node, !up);
            cl.save()
        }
        FaultCmd::MgmDown { dir, up } => {
            let mut cl = Cluster::open(&dir)?;
            cl.rt.mgm_down = !up;
            cl.save()
        }
        FaultCmd::DatanodeUnreachable { dir, dn, up } => {
            let mut cl = Cluster::open(&dir)?;
            toggle(&mut cl.rt.dn_unreachable, dn, !up);
            if !up {
                crate::hdfs::stop_replication(&mut cl);
            }
            cl.save()
        }
        FaultCmd::DiskFull { dir, node, clear } => {
            let mut cl = Cluster::open(&dir)?;
            toggle(&mut cl.rt.disk_full, node, !clear);
            cl.save()
        }
        FaultCmd::CorruptBackup { dir, node, backup } => {
            let cl = Cluster::open(&dir)?;
            let base = cl
                .backup_data_dir(node)
                .join("BACKUP")
                .join(format!("BACKUP-{backup}"));
            let mut n = 0;
            let mut stack = vec![base.clone()];
            while let Some(d) = stack.pop() {
                for e in std::fs::read_dir(&d)?.flatten() {
                    let p = e.path();
                    if p.is_dir() {
                        stack.push(p);
                    } else if p.extension().is_some_and(|x| x == "Data") {
                        let mut b = std::fs::read(&p)?;
                        if b.starts_with(crate::backupfmt::MAGIC) && b.len() >= 72 {
                            // The first record's length word (after the 48-byte header and
                            // the 5-word fragment header) made to run past the end.
                            b[68..72].copy_from_slice(&0x00FF_FFFFu32.to_be_bytes());
                        } else {
                            let i = b.len() / 2;
                            if let Some(x) = b.get_mut(i) {
                                *x ^= 0x5a;
                            }
                        }
                        std::fs::write(&p, b)?;
                        n += 1;
                    }
                }
            }
            if n == 0 {
                bail!(
                    "failed to corrupt backup: no .Data file under '{}'",
                    base.display()
                );
            }
            Ok(())
        }
        FaultCmd::Clear { dir } => {
            let mut cl = Cluster::open(&dir)?;
            cl.rt.faults.clear();
            cl.rt.ndb_down.clear();
            cl.rt.dn_unreachable.clear();
            cl.rt.disk_full.clear();
            cl.rt.mgm_down = false;
            cl.save()
        }
    }
}

/// Every `.Data` file of backup `id` on every data node.
fn data_files(cl: &Cluster, id: u64) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for n in 1..=cl.cfg.data_nodes {
        let root = cl.backup_data_dir(n).join(format!("BACKUP/BACKUP-{id}"));
        let mut stack = vec![root];
        while let Some(d) = stack.pop() {
            let Ok(rd) = std::fs::read_dir(&d) else {
                continue;
            };
            for e in rd.flatten() {
                let p = e.path();
                if p.is_dir() {
                    stack.push(p);
                } else if p.extension().is_some_and(|x| x == "Data") {
                    out.push(p);
                }
            }
        }
    }
    out.sort();
    out
}

fn backup_blocks(cl: &Cluster, id: u64, password: Option<&str>) -> Result<()> {
    let files = data_files(cl, id);
    if files.is_empty() {
        bail!("no .Data files of backup {id} on any data node");
    }
    let mut bp = None;
    let mut blocks = Vec::new();
    for f in files {
        let lines = crate::backupfmt::open_with(&f, password)
            .map_err(|e| anyhow::anyhow!("{}: {e}", f.display()))?;
        for line in lines {
            let mut it = line.splitn(4, '\t');
            let (Some(db), Some(tbl), Some(pk), Some(val)) =
                (it.next(), it.next(), it.next(), it.next())
            else {
                continue;
            };
            if db != "hops" {
                continue;
            }
            if tbl == "hdfs_variables" {
                if let Some(v) = val.strip_prefix("blockpoolID=") {
                    bp = Some(v.to_string());
                }
            } else if tbl == "hdfs_blocks" {
                if let Some(b) = pk.parse().ok().and_then(|pk| model::Block::parse(pk, val)) {
                    blocks.push(b);
                }
            }
        }
    }
    let Some(bp) = bp else {
        bail!("backup {id} holds no hops.hdfs_variables blockpoolID");
    };
    blocks.sort_by_key(|b| b.id);
    let mut out = String::new();
    for b in blocks {
        out.push_str(&format!("{bp} {} {} {}\n", b.id, b.genstamp, b.len));
    }
    print!("{out}");
    Ok(())
}
