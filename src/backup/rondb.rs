//! The `rondb` backup component: the native NDB backup of every data node, taken with
//! `START BACKUP <id> SNAPSHOTEND WAIT COMPLETED` and collected from each node's BackupDataDir
//! as a tar stream into `rondb/<node-id>/BACKUP-<id>/` of the backup.
//!
//! Preflight refuses before anything runs: a data node not started (named), another backup
//! running, too little room in the repository. The RonDB backup id is unique for the cluster,
//! never reused, at most 2147483647 (ndb_restore reads a signed 32-bit id), and checked against
//! the `BACKUP-<id>` directories on every data node. A timed-out or cancelled START BACKUP is
//! aborted with `ABORT BACKUP <id>`. Node-local copies are removed only after the manifest is
//! committed (see [`cleanup`]).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use tokio_util::sync::CancellationToken;

use super::tarstream::{self, TarStreamError};
use crate::cluster::ndb_mgm::{self, MgmClient, MgmError, NdbNodeId, NodeState};
use crate::cluster::node::{Node, NodeError};
use crate::config::{NodeHost, RondbSettings, SshConfig};
use crate::repository::facts::RondbFacts;
use crate::repository::BackupWriter;

/// The largest backup id `ndb_restore -b` reads (a signed 32-bit int).
pub const MAX_BACKUP_ID: u32 = 2_147_483_647;

/// Why the RonDB component failed.
#[derive(Debug, thiserror::Error)]
pub enum RondbError {
    #[error("preflight: {0}")]
    Preflight(String),
    #[error(transparent)]
    Mgm(#[from] MgmError),
    #[error(transparent)]
    Node(#[from] NodeError),
    #[error("START BACKUP {id} failed: {message}")]
    StartBackup { id: u32, message: String },
    #[error("collecting BACKUP-{id} of data node {node} through its agent: {source}")]
    Agent {
        id: u32,
        node: NdbNodeId,
        #[source]
        source: Box<super::via_agent::ViaAgentError>,
    },
    #[error("no free RonDB backup id: {0}")]
    NoId(String),
    #[error("{0}")]
    Password(String),
    #[error("collecting BACKUP-{id} from data node {node} failed: {source}")]
    Collect {
        id: u32,
        node: NdbNodeId,
        source: TarStreamError,
    },
    #[error("collecting BACKUP-{id} from data node {node} failed: {cause} (the stream ended early: {stream})")]
    CollectCut {
        id: u32,
        node: NdbNodeId,
        cause: Box<NodeError>,
        stream: Box<TarStreamError>,
    },
    #[error("BACKUP-{id} from data node {node} is incomplete: missing {missing}")]
    Incomplete {
        id: u32,
        node: NdbNodeId,
        missing: String,
    },
}

/// The next RonDB backup id: seconds since 2020-01-01 UTC (fits in 31 bits until 2088), above
/// `last_used`, and not in `taken` (ids whose `BACKUP-<id>` exists on some data node).
pub fn next_backup_id(
    now: DateTime<Utc>,
    last_used: Option<u32>,
    taken: &BTreeSet<u32>,
) -> Result<u32, String> {
    let epoch = Utc
        .with_ymd_and_hms(2020, 1, 1, 0, 0, 0)
        .single()
        .expect("valid date");
    let by_time = (now - epoch).num_seconds().max(1) as u64;
    let mut id = by_time.max(last_used.map(|l| l as u64 + 1).unwrap_or(1));
    while taken.contains(&(id.min(u32::MAX as u64) as u32)) {
        id += 1;
    }
    if id > MAX_BACKUP_ID as u64 {
        return Err(format!(
            "the next id {id} is above {MAX_BACKUP_ID}, the largest ndb_restore accepts"
        ));
    }
    Ok(id as u32)
}

/// Ids of the `BACKUP-<id>` entries in a listing of `<BackupDataDir>/BACKUP`.
pub fn parse_backup_dirs(listing: &str) -> BTreeSet<u32> {
    listing
        .lines()
        .filter_map(|l| l.trim().strip_prefix("BACKUP-"))
        .filter_map(|n| n.parse().ok())
        .collect()
}

/// Checks that one node's files (paths relative to `BACKUP-<id>/`) hold a `.ctl`, a `.log`
/// and at least one `.Data` of that node for every part. Returns what is missing.
pub fn missing_files(id: u32, node: NdbNodeId, files: &[String]) -> Vec<String> {
    // part directory ("" for single part) -> (ctl, log, data)
    let mut parts: BTreeMap<String, (bool, bool, bool)> = BTreeMap::new();
    let ctl = format!("BACKUP-{id}.{node}.ctl");
    let log = format!("BACKUP-{id}.{node}.log");
    let data_prefix = format!("BACKUP-{id}-");
    let data_suffix = format!(".{node}.Data");
    let mut multi = false;
    for f in files {
        let (dir, name) = match f.rsplit_once('/') {
            Some((d, n)) => (d.to_string(), n),
            None => (String::new(), f.as_str()),
        };
        if dir.starts_with(&format!("BACKUP-{id}-PART-")) {
            multi = true;
        }
        let e = parts.entry(dir).or_default();
        if name == ctl {
            e.0 = true;
        } else if name == log {
            e.1 = true;
        } else if name.starts_with(&data_prefix) && name.ends_with(&data_suffix) {
            e.2 = true;
        }
    }
    let mut missing = Vec::new();
    let mut expected_parts: Vec<String> = Vec::new();
    if multi {
        // BACKUP-<id>-PART-<p>-OF-<n>: every p in 1..=n.
        let mut total = None;
        for dir in parts.keys() {
            if let Some(rest) = dir.strip_prefix(&format!("BACKUP-{id}-PART-")) {
                if let Some((_, n)) = rest.split_once("-OF-") {
                    total = n.parse::<u32>().ok().or(total);
                }
            }
        }
        let n = total.unwrap_or(0);
        for p in 1..=n {
            expected_parts.push(format!("BACKUP-{id}-PART-{p}-OF-{n}"));
        }
    } else {
        expected_parts.push(String::new());
    }
    for part in expected_parts {
        let (c, l, d) = parts.get(&part).copied().unwrap_or_default();
        let at = |name: &str| {
            if part.is_empty() {
                name.to_string()
            } else {
                format!("{part}/{name}")
            }
        };
        if !c {
            missing.push(at(&ctl));
        }
        if !d {
            missing.push(at(&format!("BACKUP-{id}-0.{node}.Data")));
        }
        if !l {
            missing.push(at(&log));
        }
    }
    missing
}

/// A data node to back up.
#[derive(Debug, Clone)]
pub struct DataNode {
    pub id: NdbNodeId,
    pub node: Node,
    pub backup_dir: String,
}

/// The data nodes: the configured ones (checked against SHOW), or those SHOW lists.
pub fn data_nodes(
    s: &RondbSettings,
    ssh: &SshConfig,
    show: &ndb_mgm::Show,
) -> Result<Vec<DataNode>, RondbError> {
    let shown: BTreeSet<NdbNodeId> = show.data_nodes.iter().map(|n| n.id).collect();
    if s.data_nodes.is_empty() {
        if shown.is_empty() {
            return Err(RondbError::Preflight(
                "SHOW lists no data nodes: check [rondb] mgm_client".into(),
            ));
        }
        let mut out = Vec::new();
        for n in &show.data_nodes {
            let host = match (n.host.as_deref(), &n.state) {
                (Some(h), _) => NodeHost::Remote(h.to_string()),
                (None, ndb_mgm::NodeState::NotConnected) => NodeHost::Local,
                (None, _) => {
                    return Err(RondbError::Preflight(format!(
                        "SHOW lists data node {} without an address (it connects from an empty or wildcard address): list every data node in [[rondb.data_nodes]] with its host",
                        n.id
                    )))
                }
            };
            out.push(DataNode {
                id: n.id,
                node: Node::at(format!("data node {}", n.id), &host, ssh),
                backup_dir: s.backup_dir.display().to_string(),
            });
        }
        return Ok(out);
    }
    let configured: BTreeSet<NdbNodeId> = s.data_nodes.iter().map(|n| n.id).collect();
    if configured != shown {
        return Err(RondbError::Preflight(format!(
            "the configured data nodes {configured:?} differ from those ndb_mgm SHOW lists {shown:?}: fix [[rondb.data_nodes]] (or remove them to discover the nodes)"
        )));
    }
    Ok(s.data_nodes
        .iter()
        .map(|n| DataNode {
            id: n.id,
            node: Node::at(format!("data node {}", n.id), &n.host, ssh),
            backup_dir: n
                .backup_dir
                .as_ref()
                .unwrap_or(&s.backup_dir)
                .display()
                .to_string(),
        })
        .collect())
}

/// SHOW and ALL STATUS must name the same data nodes, and SHOW as many as its header declares:
/// a node one of them misses would be missing from the backup. The error names the node.
pub fn check_data_nodes(
    show: &ndb_mgm::Show,
    status: &[(NdbNodeId, NodeState)],
) -> Result<(), String> {
    let in_status: BTreeSet<NdbNodeId> = status.iter().map(|(id, _)| *id).collect();
    let in_show: BTreeSet<NdbNodeId> = show.data_nodes.iter().map(|n| n.id).collect();
    if let Some(id) = in_show.symmetric_difference(&in_status).next() {
        let (has, lacks) = if in_show.contains(id) {
            ("SHOW", "ALL STATUS")
        } else {
            ("ALL STATUS", "SHOW")
        };
        return Err(format!(
            "data node {id} is listed by {has} but not by {lacks}: the management server's view of the cluster is inconsistent; check ndb_mgm -e SHOW and -e \"ALL STATUS\", then back up again"
        ));
    }
    if show.declared_data_nodes != in_show.len() {
        return Err(format!(
            "SHOW declares {} data node(s) but lists {} (ids {}): a node line is missing; check ndb_mgm -e SHOW, then back up again",
            show.declared_data_nodes,
            in_show.len(),
            in_show.iter().map(|i| i.to_string()).collect::<Vec<_>>().join(", ")
        ));
    }
    Ok(())
}

/// Everything the step needs from outside.
pub struct RondbRun<'a> {
    pub settings: &'a RondbSettings,
    pub ssh: &'a SshConfig,
    /// The data nodes' agents, when backups go through them (`[agents] enabled`).
    pub agents: Option<AgentRun<'a>>,
    /// The last RonDB backup id hopsdr used for this cluster.
    pub last_id: Option<u32>,
    pub clock: &'a dyn Fn() -> DateTime<Utc>,
    pub cancel: &'a CancellationToken,
}

use super::recorder::{all_or_first_error, Recorder, Remote, StoppableTask};
pub use super::via_agent::AgentRun;

fn argv(a: &[&str]) -> Vec<String> {
    a.iter().map(|s| s.to_string()).collect()
}

/// Preflight, START BACKUP, collection of every node's files into `writer` under
/// `rondb/<node-id>/`.
pub fn back_up(
    r: &RondbRun<'_>,
    writer: &mut BackupWriter,
) -> Result<(RondbFacts, Vec<DataNode>), RondbError> {
    let started = start(r)?;
    let facts = collect(r, &started, writer)?;
    Ok((facts, started.nodes))
}

/// A RonDB backup taken on the data nodes, not yet collected.
#[derive(Debug, Clone)]
pub struct Started {
    pub id: u32,
    pub done: ndb_mgm::BackupCompleted,
    /// Encrypted by RonDB (`[rondb] backup_password`).
    pub encrypted: bool,
    /// When START BACKUP returned: the consistency point (SNAPSHOTEND, StopGCP reached).
    pub consistent_at: DateTime<Utc>,
    pub nodes: Vec<DataNode>,
    pub version: Option<String>,
}

/// Preflight and `START BACKUP <id> SNAPSHOTEND WAIT COMPLETED`.
pub fn start(r: &RondbRun<'_>) -> Result<Started, RondbError> {
    let s = r.settings;
    let mgm = MgmClient {
        node: Node::at("management client".into(), &s.mgm_host, r.ssh),
        client: s.mgm_client.clone(),
        timeout: s.command_timeout,
    };
    // Preflight.
    let password = ndb_mgm::backup_password(s).map_err(RondbError::Password)?;
    let show = mgm.show(r.cancel)?;
    let nodes = data_nodes(s, r.ssh, &show)?;
    let status = mgm.all_status(r.cancel)?;
    check_data_nodes(&show, &status).map_err(RondbError::Preflight)?;
    for n in &nodes {
        match status.iter().find(|(id, _)| *id == n.id).map(|(_, s)| s) {
            Some(NodeState::Started) => {}
            Some(NodeState::NotConnected) => {
                return Err(RondbError::Preflight(format!(
                    "data node {} is not connected: start it (systemctl start ndbmtd on its host) and back up again",
                    n.id
                )))
            }
            Some(NodeState::Other(st)) => {
                return Err(RondbError::Preflight(format!(
                    "data node {} is {st}, not started: wait until it is started",
                    n.id
                )))
            }
            None => {
                return Err(RondbError::Preflight(format!(
                    "ALL STATUS does not report data node {}",
                    n.id
                )))
            }
        }
    }
    if let Some((node, Some(b))) = mgm
        .backup_status(r.cancel)?
        .into_iter()
        .find(|(_, b)| b.is_some())
    {
        return Err(RondbError::Preflight(format!(
            "backup {b} is already running on the cluster (reported by data node {node}): wait for it or ABORT BACKUP {b}"
        )));
    }
    // A free id, checked on every node.
    let mut taken = BTreeSet::new();
    for n in &nodes {
        let dir = format!("{}/BACKUP", n.backup_dir);
        let out = n
            .node
            .run_status(&argv(&["ls", "-1", &dir]), s.command_timeout, r.cancel)?;
        match out.status {
            Some(0) => taken.extend(parse_backup_dirs(&out.stdout)),
            // No BACKUP directory yet: no backups on this node.
            _ if out.stderr.contains("No such file") => {}
            st => {
                return Err(RondbError::Preflight(format!(
                    "cannot list {dir} on data node {}: exit {st:?}: {}",
                    n.id,
                    out.stderr.trim()
                )))
            }
        }
    }
    let id = next_backup_id((r.clock)(), r.last_id, &taken).map_err(RondbError::NoId)?;
    tracing::info!(step = "rondb", rondb_backup_id = id, "START BACKUP {id}");

    // START BACKUP (encrypted by RonDB with [rondb] backup_password, given on stdin); on
    // timeout or cancellation, ABORT BACKUP.
    let cmd = format!("START BACKUP {id} SNAPSHOTEND WAIT COMPLETED");
    let (options, input): (&[&str], _) = match &password {
        Some(p) => (
            &["--encrypt-backup", "--backup-password-from-stdin"],
            Some(format!("{}\n", p.as_str()).into_bytes()),
        ),
        None => (&[], None),
    };
    let out = match mgm.run_with_options(&cmd, options, input, s.backup_timeout, r.cancel) {
        Ok(o) => o,
        Err(e) => {
            let abort = mgm.run_with_timeout(
                &format!("ABORT BACKUP {id}"),
                s.command_timeout,
                &CancellationToken::new(),
            );
            match abort {
                Ok(o) if ndb_mgm::parse_abort(&o.stdout) => {
                    tracing::warn!(step = "rondb", "ABORT BACKUP {id} ordered")
                }
                Ok(o) => tracing::error!(step = "rondb", "ABORT BACKUP {id}: {}", o.stdout.trim()),
                Err(ae) => tracing::error!(step = "rondb", "ABORT BACKUP {id} failed: {ae}"),
            }
            return Err(e.into());
        }
    };
    let done = ndb_mgm::parse_start_backup(&out.stdout, out.status)
        .map_err(|message| RondbError::StartBackup { id, message })?;
    let consistent_at = (r.clock)();
    Ok(Started {
        id,
        done,
        encrypted: password.is_some(),
        consistent_at,
        version: show.data_nodes.first().and_then(|n| n.version.clone()),
        nodes,
    })
}

/// Collects every data node's `BACKUP-<id>` into `writer`.
pub fn collect(
    r: &RondbRun<'_>,
    started: &Started,
    writer: &mut BackupWriter,
) -> Result<RondbFacts, RondbError> {
    let s = r.settings;
    let id = started.id;
    let nodes = &started.nodes;
    let mut files = 0;
    let mut bytes = 0;
    if let Some(a) = &r.agents {
        // Every data node's agent at once; the first to fail stops the others.
        let tasks: Vec<StoppableTask<'_, (u64, u64), RondbError>> = nodes
            .iter()
            .map(|n| {
                Box::new(move |rec: &mut Remote, stop: &CancellationToken| {
                    let done = collect_via_agent(a, id, n, rec, stop)?;
                    crate::failpoint::hit("backup.rondb.collected_one", stop);
                    Ok(done)
                }) as StoppableTask<'_, (u64, u64), RondbError>
            })
            .collect();
        for (f, b) in all_or_first_error(writer, r.cancel, tasks)? {
            files += f;
            bytes += b;
        }
    }
    for n in nodes.iter().filter(|_| r.agents.is_none()) {
        let parent = format!("{}/BACKUP", n.backup_dir);
        let member = format!("BACKUP-{id}");
        let prefix = format!("rondb/{}", n.id);
        let mut result = None;
        let streamed = n.node.stream(
            &tarstream::tar_member_argv(&parent, &member),
            s.backup_timeout,
            r.cancel,
            |rd| {
                result = Some(tarstream::ingest(rd, &prefix, writer));
                match &result {
                    Some(Err(e)) => Err(std::io::Error::other(e.to_string())),
                    _ => Ok(()),
                }
            },
        );
        let totals = match (streamed, result) {
            // The command itself failed (ssh dropped, tar failed): its status and stderr say
            // why, with what the stream reader saw.
            (Err(cause), Some(Err(stream))) => {
                return Err(RondbError::CollectCut {
                    id,
                    node: n.id,
                    cause: Box::new(cause),
                    stream: Box::new(stream),
                })
            }
            (Err(cause), _) => return Err(RondbError::Node(cause)),
            (Ok(_), Some(Err(source))) => {
                return Err(RondbError::Collect {
                    id,
                    node: n.id,
                    source,
                })
            }
            (Ok((status, stderr)), _) if !status.success() => {
                return Err(RondbError::Node(NodeError::Failed {
                    node: n.node.name.clone(),
                    command: format!("tar -C {parent} -cf - {member}"),
                    status: status.to_string(),
                    stderr,
                }))
            }
            (Ok(_), Some(Ok(t))) => t,
            (Ok(_), None) => {
                return Err(RondbError::Incomplete {
                    id,
                    node: n.id,
                    missing: "the whole stream (nothing was read)".into(),
                })
            }
        };
        let inside: Vec<String> = totals
            .paths
            .iter()
            .filter_map(|p| p.strip_prefix(&format!("{member}/")).map(str::to_string))
            .collect();
        let missing = missing_files(id, n.id, &inside);
        if !missing.is_empty() {
            return Err(RondbError::Incomplete {
                id,
                node: n.id,
                missing: missing.join(", "),
            });
        }
        files += totals.files;
        bytes += totals.bytes;
        crate::failpoint::hit("backup.rondb.collected_one", r.cancel);
        if r.cancel.is_cancelled() {
            return Err(RondbError::Node(NodeError::Cancelled {
                node: n.node.name.clone(),
                command: "collection".into(),
            }));
        }
        tracing::info!(
            step = "rondb",
            node = %n.id,
            files = totals.files,
            bytes = totals.bytes,
            "collected BACKUP-{id}"
        );
    }
    Ok(RondbFacts {
        backup_id: id,
        start_gcp: started.done.start_gcp,
        stop_gcp: started.done.stop_gcp,
        records: started.done.records,
        log_records: started.done.log_records,
        consistent_at: started.consistent_at,
        nodes: nodes.iter().map(|n| n.id).collect(),
        version: started.version.clone(),
        files,
        bytes,
        tables: user_tables(r),
        encrypted: started.encrypted,
    })
}

/// Has data node `n`'s agent store its `BACKUP-<id>` straight into the repository (under the
/// same names the tar stream gives them); checked complete as that stream is. Returns the files
/// and bytes.
fn collect_via_agent(
    a: &AgentRun<'_>,
    id: u32,
    n: &DataNode,
    rec: &mut dyn Recorder,
    cancel: &CancellationToken,
) -> Result<(u64, u64), RondbError> {
    use crate::cluster::agent::{Request, Session};
    let failed = |e: super::via_agent::ViaAgentError| RondbError::Agent {
        id,
        node: n.id,
        source: Box::new(e),
    };
    let request = Request {
        roles: vec![crate::agent::proto::Role::Rondb],
        roots: vec![],
        backup_dir: Some(n.backup_dir.clone()),
        bandwidth: a.bandwidth(&n.node),
    };
    let mut session = Session::open(
        &n.node,
        a.binary,
        &request,
        crate::agent::proto::Job::Backup,
        Some(a.access),
        a.timeout,
        cancel,
    )
    .map_err(|e| failed(e.into()))?;
    let up = super::via_agent::upload_dir(
        &mut session,
        rec,
        &format!("BACKUP/BACKUP-{id}"),
        &format!("rondb/{}/BACKUP-{id}", n.id),
        cancel,
    )
    .map_err(failed)?;
    session.finish(cancel).map_err(|e| failed(e.into()))?;
    let missing = missing_files(id, n.id, &up.files);
    if !missing.is_empty() {
        return Err(RondbError::Incomplete {
            id,
            node: n.id,
            missing: missing.join(", "),
        });
    }
    tracing::info!(
        step = "rondb",
        node = %n.id,
        files = up.files.len(),
        bytes = up.bytes,
        packs = up.packs,
        pack_bytes = up.pack_bytes,
        paced_ms = up.paced_ms,
        "BACKUP-{id} stored by the node's agent"
    );
    Ok((up.files.len() as u64, up.bytes))
}

/// The user tables of the cluster (best effort: a failure is logged, the backup goes on).
fn user_tables(r: &RondbRun<'_>) -> Option<Vec<String>> {
    let s = r.settings;
    let mut argv = s.ndb_show_tables.clone();
    if let Some(cs) = s.connectstring() {
        argv.extend(["-c".to_string(), cs]);
    }
    argv.extend(["-p", "-t", "2"].map(String::from));
    let listed = Node::local("head node")
        .run(&argv, s.command_timeout, r.cancel)
        .map_err(|e| e.to_string())
        .and_then(|out| crate::cluster::ndb_tables::parse_parsable(&out.stdout));
    match listed {
        Ok(objects) => Some(crate::cluster::ndb_tables::user_tables(&objects)),
        Err(e) => {
            tracing::warn!(step = "rondb", "the user tables could not be listed (a restore interrupted inside its metadata step will need the databases dropped by hand): {e}");
            None
        }
    }
}

/// Removes each node's `BACKUP-<id>` after the backup is committed. Failures are logged, not
/// fatal: the backup is already safe in the repository.
pub fn cleanup(nodes: &[DataNode], id: u32, timeout: Duration) {
    let cancel = CancellationToken::new();
    for n in nodes {
        let dir = format!("{}/BACKUP/BACKUP-{id}", n.backup_dir);
        match n
            .node
            .run(&argv(&["rm", "-rf", "--", &dir]), timeout, &cancel)
        {
            Ok(_) => tracing::info!(step = "cleanup", node = %n.id, "removed {dir}"),
            Err(e) => tracing::warn!(step = "cleanup", node = %n.id, "failed to remove {dir}: {e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_data_node_missing_from_show_or_all_status_fails_naming_it() {
        let show_text = include_str!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/ndb_mgm/show.txt"
        ));
        let show = ndb_mgm::parse_show(show_text).unwrap();
        let both = vec![
            (NdbNodeId(1), NodeState::Started),
            (NdbNodeId(2), NodeState::Started),
        ];
        assert_eq!(check_data_nodes(&show, &both), Ok(()));
        // ALL STATUS knows a node 3 that SHOW does not list.
        let mut three = both.clone();
        three.push((NdbNodeId(3), NodeState::Started));
        let e = check_data_nodes(&show, &three).unwrap_err();
        assert!(
            e.starts_with("data node 3 is listed by ALL STATUS but not by SHOW"),
            "{e}"
        );
        // SHOW lists node 2, ALL STATUS does not.
        let e = check_data_nodes(&show, &both[..1]).unwrap_err();
        assert!(
            e.starts_with("data node 2 is listed by SHOW but not by ALL STATUS"),
            "{e}"
        );
        // The header says 2, one line is gone (and ALL STATUS agrees with the lines).
        let short = ndb_mgm::parse_show(
            &show_text.replace("id=2\t@10.0.0.12  (RonDB-22.10.3, Nodegroup: 0)\n", ""),
        )
        .unwrap();
        let e = check_data_nodes(&short, &both[..1]).unwrap_err();
        assert!(
            e.starts_with("SHOW declares 2 data node(s) but lists 1 (ids 1)"),
            "{e}"
        );
        // Wildcard addresses: both kept.
        let wild = ndb_mgm::parse_show(include_str!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/ndb_mgm/show_wildcard_address.txt"
        )))
        .unwrap();
        assert_eq!(check_data_nodes(&wild, &both), Ok(()));
    }

    #[test]
    fn backup_ids_fit_ndb_restore_and_are_never_reused() {
        let now = Utc.with_ymd_and_hms(2026, 11, 25, 21, 0, 0).unwrap();
        let id = next_backup_id(now, None, &BTreeSet::new()).unwrap();
        assert!(id <= MAX_BACKUP_ID);
        assert_eq!(id, 217_803_600);
        // Above the last used one even if the clock went back.
        assert_eq!(
            next_backup_id(now, Some(id + 10), &BTreeSet::new()).unwrap(),
            id + 11
        );
        // Skips ids whose directory exists on a node.
        let taken: BTreeSet<u32> = [id, id + 1].into_iter().collect();
        assert_eq!(next_backup_id(now, None, &taken).unwrap(), id + 2);
        // Two backups in the same second get different ids.
        assert_eq!(
            next_backup_id(now, Some(id), &BTreeSet::new()).unwrap(),
            id + 1
        );
        // The guide's %y%m%d%H%M would be 2611252100 here: above the limit.
        assert!(2_611_252_100u64 > MAX_BACKUP_ID as u64);
        let far = Utc.with_ymd_and_hms(2090, 1, 1, 0, 0, 0).unwrap();
        assert!(next_backup_id(far, None, &BTreeSet::new()).is_err());
    }

    #[test]
    fn backup_dir_listing() {
        let l = "BACKUP-5\nBACKUP-217890000\nBACKUP-x\nlost+found\n";
        assert_eq!(parse_backup_dirs(l), [5, 217_890_000].into_iter().collect());
    }

    #[test]
    fn completeness_single_and_multi_part() {
        let single: Vec<String> = ["BACKUP-7.1.ctl", "BACKUP-7-0.1.Data", "BACKUP-7.1.log"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert!(missing_files(7, NdbNodeId(1), &single).is_empty());
        assert_eq!(
            missing_files(7, NdbNodeId(2), &single),
            vec!["BACKUP-7.2.ctl", "BACKUP-7-0.2.Data", "BACKUP-7.2.log"]
        );
        let multi: Vec<String> = [
            "BACKUP-7-PART-1-OF-2/BACKUP-7.1.ctl",
            "BACKUP-7-PART-1-OF-2/BACKUP-7-0.1.Data",
            "BACKUP-7-PART-1-OF-2/BACKUP-7.1.log",
            "BACKUP-7-PART-2-OF-2/BACKUP-7.1.ctl",
            "BACKUP-7-PART-2-OF-2/BACKUP-7-0.1.Data",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        assert_eq!(
            missing_files(7, NdbNodeId(1), &multi),
            vec!["BACKUP-7-PART-2-OF-2/BACKUP-7.1.log"]
        );
    }
}
