//! The restore plan: from a backup's manifest, the config and what the target cluster holds
//! (read before anything is touched), every step of a whole-cluster restore onto a redeployed
//! Hopsworks cluster, with the exact commands and the node each runs on, and what each checks:
//! quiesce the services, drop the redeployed schemas the backup recreates, `ndb_restore` in the
//! guide's order (with the flags a real cluster needs), users and grants, restart the MySQL
//! servers, write the HopsFS volumes back (mapped onto the target's datanodes), start the
//! services again. A pure function: `hopsdrctl restore plan` prints it, the restore job
//! executes it.

use std::fmt;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::config::{
    parse_volume_ref, BlockStorage, NodeHost, RestoreReplicas, Settings, StoreSettings,
};
use crate::ids::{BackupId, NdbNodeId};
use crate::repository::{Entry, Manifest};

use super::target::TargetFacts;

/// What kind of step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepKind {
    Verify,
    Preflight,
    Quiesce,
    StageRondb,
    DropSchemas,
    RestoreMeta,
    RestoreData,
    RebuildIndexes,
    Schema,
    Users,
    RestartMysqld,
    HopsfsVolumes,
    StartServices,
    StartDatanodes,
    WaitSafemode,
    CloudBlocks,
    Opensearch,
    Reindex,
    Kafka,
    Report,
}

/// One step: what runs where, and what it checks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestoreStep {
    pub kind: StepKind,
    pub title: String,
    /// Where the commands run (`head node`, `datanode dn1`, ...).
    pub node: String,
    /// The commands, as argv, in order (those run in parallel are listed together).
    pub commands: Vec<Vec<String>>,
    pub checks: String,
    /// The HopsFS datanodes whose volumes a step writes back.
    #[serde(default)]
    pub datanodes: Vec<String>,
    /// The RonDB node ids of the data step, in the order of its commands.
    #[serde(default)]
    pub nodes: Vec<NdbNodeId>,
    /// The databases the schema-drop step empties.
    #[serde(default)]
    pub databases: Vec<String>,
    /// The volumes the write-back step writes: each backed-up volume and where it goes.
    #[serde(default)]
    pub moves: Vec<VolumeMove>,
    /// The write-back writes one replica of each finalized block (`[restore] replicas = "one"`
    /// when the plan was made; the wait for safe mode then reports what HDFS has left to copy).
    #[serde(default)]
    pub one_replica: bool,
}

/// One backed-up HopsFS volume and its destination on the target.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeMove {
    /// `<datanode>/vol<k>` in the backup (its files are under `hopsfs/<datanode>/vol<k>/`).
    pub from: String,
    /// The target datanode (a `[[hopsfs.datanodes]]` name).
    pub datanode: String,
    /// Its volume (a path on that datanode's host).
    pub volume: String,
}

/// The whole plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestorePlan {
    pub backup_id: BackupId,
    pub rondb_backup_id: Option<u32>,
    /// What the operator should know before confirming (topology differences, what is dropped).
    #[serde(default)]
    pub notes: Vec<String>,
    pub steps: Vec<RestoreStep>,
}

/// Why no plan can be made.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PlanError {
    #[error("backup {0} has no RonDB part: nothing to restore the cluster from")]
    NoRondb(BackupId),
    #[error("no connect string for ndb_restore: set [restore] connectstring (or -c in [rondb] mgm_client)")]
    NoConnectstring,
    #[error("the RonDB backup of {0} is encrypted by RonDB: set [rondb] backup_password to the password it was taken with (ndb_restore --decrypt gets it on standard input)")]
    NoBackupPassword(BackupId),
    #[error("backup {backup} holds datanode {datanode}, which [[hopsfs.datanodes]] does not list: add it (the restore writes every volume back where it came from)")]
    UnknownDatanode { backup: BackupId, datanode: String },
    #[error("the manifest of backup {0} has no RonDB facts (info.extra.rondb)")]
    NoRondbFacts(BackupId),
    #[error("NDB API client node {id} connected from {address} is not one hopsdr stops: stop it (or add its host to [restore] api_client_hosts and its unit to [restore] services), then start the restore again")]
    UnknownApiClient { id: NdbNodeId, address: String },
    #[error("backup volume {volume} has no destination: {why}; map it in [restore.volume_map], e.g. \"{volume}\" = \"<datanode>/vol1\"")]
    UnmappedVolume { volume: String, why: String },
    #[error("[restore.volume_map] \"{from}\" = \"{to}\": {why}")]
    BadMapping {
        from: String,
        to: String,
        why: String,
    },
}

fn s(a: &[&str]) -> Vec<String> {
    a.iter().map(|x| x.to_string()).collect()
}

/// The connect string ndb_restore uses.
pub fn connectstring(settings: &Settings) -> Option<String> {
    if let Some(c) = &settings.restore.connectstring {
        return Some(c.clone());
    }
    settings.rondb.as_ref()?.connectstring()
}

/// Substitutes `{name}` and `{index}` in a datanode command.
pub fn datanode_command(template: &[String], name: &str, index: usize) -> Vec<String> {
    template
        .iter()
        .map(|a| {
            a.replace("{name}", name)
                .replace("{index}", &index.to_string())
        })
        .collect()
}

/// The ndb_restore option that makes it read the backup password from standard input; a step
/// command holding it is run with the password written to its stdin.
pub const DECRYPT_FROM_STDIN: &str = "--backup-password-from-stdin";

/// The node ids whose files the backup holds (`rondb/<id>/...`), sorted.
pub fn rondb_nodes(m: &Manifest) -> Vec<NdbNodeId> {
    let mut ids: Vec<NdbNodeId> = m
        .entries
        .iter()
        .filter_map(|e| {
            e.path()
                .strip_prefix("rondb/")?
                .split('/')
                .next()?
                .parse()
                .ok()
        })
        .collect();
    ids.sort();
    ids.dedup();
    ids
}

/// The paths of the manifest's own entries and the prefixes of its streams (each a HopsFS
/// volume): enough to tell which nodes and volumes a backup holds without reading the streams.
fn paths(m: &Manifest) -> impl Iterator<Item = &str> {
    m.entries
        .iter()
        .map(|e| e.path())
        .chain(m.streams.iter().map(|s| s.prefix.as_str()))
}

/// The datanodes whose volumes the backup holds (`hopsfs/<name>/...`), sorted.
pub fn hopsfs_datanodes(m: &Manifest) -> Vec<String> {
    let mut names: Vec<String> = paths(m)
        .filter_map(|p| {
            p.strip_prefix("hopsfs/")?
                .split('/')
                .next()
                .map(str::to_string)
        })
        .collect();
    names.sort();
    names.dedup();
    names
}

/// The volumes the backup holds (`hopsfs/<name>/vol<k>/...`): (name, k), sorted.
pub fn backup_volumes(m: &Manifest) -> Vec<(String, usize)> {
    let mut vols: Vec<(String, usize)> = paths(m)
        .filter_map(|p| {
            let mut it = p.strip_prefix("hopsfs/")?.splitn(3, '/');
            let name = it.next()?;
            let k: usize = it.next()?.strip_prefix("vol")?.parse().ok()?;
            Some((name.to_string(), k))
        })
        .collect();
    vols.sort();
    vols.dedup();
    vols
}

/// Where every backed-up volume goes: `[restore.volume_map]`, else the same datanode name and
/// volume index. Every backed-up volume needs a destination that exists; a mapping must name
/// a volume of the backup and a datanode and volume of the config.
pub fn volume_moves(
    backup: &[(String, usize)],
    settings: &Settings,
) -> Result<Vec<VolumeMove>, PlanError> {
    let dns = settings
        .hopsfs
        .as_ref()
        .map(|h| h.datanodes.as_slice())
        .unwrap_or(&[]);
    let map = &settings.restore.volume_map;
    for (from, to) in map {
        let bad = |why: String| PlanError::BadMapping {
            from: from.clone(),
            to: to.clone(),
            why,
        };
        let Some((fname, fk)) = parse_volume_ref(from) else {
            return Err(bad("not a volume name".into()));
        };
        if !backup.iter().any(|(n, k)| n == fname && *k == fk) {
            return Err(bad(format!(
                "the backup holds no volume {from} (it holds {})",
                backup
                    .iter()
                    .map(|(n, k)| format!("{n}/vol{k}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
        let Some((tname, tk)) = parse_volume_ref(to) else {
            return Err(bad("not a volume name".into()));
        };
        let Some(d) = dns.iter().find(|d| d.name == tname) else {
            return Err(bad(format!(
                "no datanode {tname} in [[hopsfs.datanodes]] (it lists {})",
                dns.iter()
                    .map(|d| d.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        };
        if tk > d.volumes.len() {
            return Err(bad(format!(
                "datanode {tname} has {} volume(s) in [[hopsfs.datanodes]]",
                d.volumes.len()
            )));
        }
    }
    let mut out = Vec::new();
    for (name, k) in backup {
        let from = format!("{name}/vol{k}");
        let (tname, tk) = match map.iter().find(|(f, _)| *f == from) {
            Some((_, to)) => parse_volume_ref(to)
                .map(|(n, k)| (n.to_string(), k))
                .unwrap_or_default(),
            None => (name.clone(), *k),
        };
        let Some(d) = dns.iter().find(|d| d.name == tname) else {
            return Err(PlanError::UnmappedVolume {
                volume: from,
                why: format!("[[hopsfs.datanodes]] has no datanode {tname}"),
            });
        };
        let Some(v) = d.volumes.get(tk - 1) else {
            return Err(PlanError::UnmappedVolume {
                volume: from,
                why: format!(
                    "datanode {tname} has {} volume(s) in [[hopsfs.datanodes]]",
                    d.volumes.len()
                ),
            });
        };
        out.push(VolumeMove {
            from,
            datanode: d.name.clone(),
            volume: v.display().to_string(),
        });
    }
    Ok(out)
}

/// The databases a restore recreates: those of the backup's recorded tables, less the system
/// ones (`mysql`, `sys`, `ndbinfo`: never dropped).
pub fn backup_databases(tables: &[String]) -> Vec<String> {
    let mut dbs: Vec<String> = tables
        .iter()
        .filter_map(|t| t.split_once('.').map(|x| x.0.to_string()))
        .filter(|d| !["mysql", "sys", "ndbinfo"].contains(&d.as_str()))
        .collect();
    dbs.sort();
    dbs.dedup();
    dbs
}

/// The target's tables the schema-drop step drops: those in `databases`, less the excluded.
pub fn tables_to_drop(target: &[String], databases: &[String], exclude: &[String]) -> Vec<String> {
    target
        .iter()
        .filter(|t| {
            t.split_once('.')
                .is_some_and(|(d, _)| databases.iter().any(|x| x == d))
        })
        .filter(|t| !exclude.contains(t))
        .cloned()
        .collect()
}

/// Connected API nodes that are neither the services hopsdr stops nor the MySQL servers: not
/// connected from an address of `[restore] api_client_hosts` (default: the management
/// server's).
pub fn unknown_api_clients(target: &TargetFacts, settings: &Settings) -> Vec<(NdbNodeId, String)> {
    let known: Vec<String> = if settings.restore.api_client_hosts.is_empty() {
        target.mgm_address.iter().cloned().collect()
    } else {
        settings.restore.api_client_hosts.clone()
    };
    target
        .connected_api()
        .filter(|a| a.address.as_ref().is_none_or(|h| !known.contains(h)))
        .map(|a| {
            (
                a.id,
                a.address
                    .clone()
                    .unwrap_or_else(|| "an empty or wildcard address".into()),
            )
        })
        .collect()
}

/// Substitutes `{unit}` in a service command.
pub fn service_command(template: &[String], unit: &str) -> Vec<String> {
    template.iter().map(|a| a.replace("{unit}", unit)).collect()
}

fn host_name(h: &NodeHost) -> String {
    match h {
        NodeHost::Local => "head node".into(),
        NodeHost::Remote(r) => r.clone(),
    }
}

/// `ndb_show_tables` listing the user tables, parsable.
fn show_tables(rondb: &crate::config::RondbSettings, cs: &str) -> Vec<String> {
    let mut show = rondb.ndb_show_tables.clone();
    show.extend(s(&["-c", cs, "-p", "-t", "2"]));
    show
}

fn prefix_slash(p: &str) -> String {
    if p.is_empty() {
        String::new()
    } else {
        format!("{p}/")
    }
}

/// The indices of a snapshot a restore brings back: all but the security plugin's (its
/// configuration belongs to the new deployment, and OpenSearch refuses it to anyone but the
/// admin certificate) and OpenSearch's own system indices.
pub fn restorable_indices(indices: &[String]) -> Vec<String> {
    indices
        .iter()
        .filter(|i| *i != ".opendistro_security" && !i.starts_with(".opensearch"))
        .cloned()
        .collect()
}

fn step(kind: StepKind, title: impl Into<String>, node: &str, checks: &str) -> RestoreStep {
    RestoreStep {
        kind,
        title: title.into(),
        node: node.into(),
        commands: vec![],
        checks: checks.into(),
        datanodes: vec![],
        nodes: vec![],
        databases: vec![],
        moves: vec![],
        one_replica: false,
    }
}

fn list(v: &[impl AsRef<str>]) -> String {
    v.iter().map(|x| x.as_ref()).collect::<Vec<_>>().join(", ")
}

/// Builds the plan for restoring backup `m` onto the cluster `settings` describes, which holds
/// `target`.
pub fn plan(
    m: &Manifest,
    settings: &Settings,
    target: &TargetFacts,
) -> Result<RestorePlan, PlanError> {
    let id = m.id.clone();
    let nodes = rondb_nodes(m);
    if nodes.is_empty() {
        return Err(PlanError::NoRondb(id));
    }
    let rondb_facts = m
        .info
        .facts
        .rondb
        .as_ref()
        .ok_or_else(|| PlanError::NoRondbFacts(id.clone()))?;
    let rid = rondb_facts.backup_id;
    let recorded_tables = rondb_facts.tables.clone();
    let cs = connectstring(settings).ok_or(PlanError::NoConnectstring)?;
    let decrypt = rondb_facts.encrypted;
    if decrypt
        && settings
            .rondb
            .as_ref()
            .is_none_or(|r| r.backup_password.is_none())
    {
        return Err(PlanError::NoBackupPassword(id));
    }
    if let Some((id, address)) = unknown_api_clients(target, settings).into_iter().next() {
        return Err(PlanError::UnknownApiClient { id, address });
    }
    let r = &settings.restore;
    let one = r.replicas == RestoreReplicas::One;
    let local_blocks = settings
        .hopsfs
        .as_ref()
        .filter(|h| h.block_storage == BlockStorage::Local);
    let backup_vols = backup_volumes(m);
    let moves = match local_blocks {
        Some(_) if !backup_vols.is_empty() => volume_moves(&backup_vols, settings)?,
        _ => Vec::new(),
    };
    let stage = r.staging_dir.join(id.as_str());
    let path_of = |node: NdbNodeId| -> String {
        Path::new(&stage)
            .join(format!("rondb/{node}/BACKUP-{rid}"))
            .display()
            .to_string()
    };
    let exclude_meta = r.exclude_tables.clone();
    let mut exclude_data = r.exclude_tables.clone();
    exclude_data.extend(r.exclude_tables_data.iter().cloned());
    let ndb = |node: NdbNodeId, extra: &[&str], exclude: &[String]| -> Vec<String> {
        let mut a = r.ndb_restore.clone();
        a.extend(s(&[
            "-c",
            &cs,
            "-n",
            &node.to_string(),
            "-b",
            &rid.to_string(),
        ]));
        a.extend(s(extra));
        if decrypt {
            // The password goes on standard input (the executor writes it), never in argv.
            a.extend(s(&["--decrypt", DECRYPT_FROM_STDIN]));
        }
        if r.no_binlog {
            a.push("--no-binlog".into());
        }
        if !exclude.is_empty() {
            a.push(format!("--exclude-tables={}", exclude.join(",")));
        }
        a.push("--backup_path".into());
        a.push(path_of(node));
        a
    };
    let mut notes = Vec::new();
    if !target.data_nodes.is_empty() && target.data_nodes != nodes {
        notes.push(format!(
            "RonDB: the backup holds data node{} {}, the target has {}: every backed-up node id is restored from the head node",
            if nodes.len() > 1 { "s" } else { "" },
            list(&nodes.iter().map(|n| n.to_string()).collect::<Vec<_>>()),
            list(&target.data_nodes.iter().map(|n| n.to_string()).collect::<Vec<_>>())
        ));
    }
    let mut steps = vec![
        step(
            StepKind::Verify,
            format!("verify backup {id}"),
            "head node",
            "the manifest is complete and every blob is present with the right hash; the backup is not failed or partial (unless allowed); versions match the target",
        ),
        RestoreStep {
            commands: {
                let mut c = Vec::new();
                if recorded_tables.is_none() {
                    if let Some(rondb) = &settings.rondb {
                        c.push(show_tables(rondb, &cs));
                    }
                }
                c
            },
            ..step(
                StepKind::Preflight,
                "preflight on the target cluster",
                "head node; each datanode",
                if recorded_tables.is_some() {
                    "management server reachable, every data node started; no HopsFS volume holds blocks (a volume formatted by the redeploy is replaced)"
                } else {
                    "management server reachable, every data node started, no user data in RonDB (the backup did not record its tables: nothing is dropped); no HopsFS volume holds blocks"
                },
            )
        },
    ];
    // Quiesce: the services in reverse dependency order, then the datanodes.
    let mut quiesce: Vec<Vec<String>> = r
        .services
        .iter()
        .rev()
        .map(|u| service_command(&r.service_stop, u))
        .collect();
    if let Some(h) = local_blocks {
        quiesce.extend(
            h.datanodes
                .iter()
                .enumerate()
                .map(|(i, d)| datanode_command(&r.datanode_stop, &d.name, i + 1)),
        );
    }
    steps.push(RestoreStep {
        commands: quiesce,
        datanodes: local_blocks
            .map(|h| h.datanodes.iter().map(|d| d.name.clone()).collect())
            .unwrap_or_default(),
        ..step(
            StepKind::Quiesce,
            if r.services.is_empty() {
                "stop the datanodes".to_string()
            } else {
                format!("stop the services ({}) and the datanodes", list(&r.services))
            },
            "head node; each datanode",
            &format!(
                "every NDB API client but the MySQL servers ({} API node(s)) disconnected within {}",
                r.mysqld_api_nodes,
                humantime::format_duration(r.quiesce_timeout)
            ),
        )
    });
    steps.push(step(
        StepKind::StageRondb,
        "stage the RonDB files",
        "head node",
        &format!(
            "every data node's BACKUP-{rid} written to {} and verified",
            stage.join("rondb").display()
        ),
    ));
    if let Some(tables) = &recorded_tables {
        let databases = backup_databases(tables);
        let present = tables_to_drop(&target.tables, &databases, &exclude_meta);
        let commands = databases
            .iter()
            .filter_map(|db| {
                let ts: Vec<&str> = present
                    .iter()
                    .filter_map(|t| t.strip_prefix(&format!("{db}.")))
                    .collect();
                (!ts.is_empty()).then(|| {
                    let mut a = r.ndb_drop_table.clone();
                    a.extend(s(&["-c", &cs, "-d", db]));
                    a.extend(ts.iter().map(|t| t.to_string()));
                    a
                })
            })
            .collect();
        if !present.is_empty() {
            notes.push(format!(
                "the target holds {} table(s) in {} that the backup recreates: they are dropped (excluded tables are kept: {})",
                present.len(),
                list(&databases),
                if exclude_meta.is_empty() { "none".to_string() } else { list(&exclude_meta) }
            ));
        }
        steps.push(RestoreStep {
            commands,
            databases: databases.clone(),
            ..step(
                StepKind::DropSchemas,
                format!("drop the redeployed tables of {}", list(&databases)),
                "head node",
                "no table of these databases left but the excluded ones (foreign keys' children first; listed again on a resume)",
            )
        });
    }
    let mut meta_flags = vec!["-m", "--disable-indexes"];
    if target.has_disk_objects() {
        meta_flags.push("--no-restore-disk-objects");
        notes.push(
            "the target has disk-data objects (logfile group, tablespace): the metadata is restored with --no-restore-disk-objects".into(),
        );
    }
    steps.push(RestoreStep {
        commands: {
            let mut c = vec![ndb(nodes[0], &meta_flags, &exclude_meta)];
            if let Some(rondb) = &settings.rondb {
                // On a resume after a crash in this step: which tables exist already.
                c.push(show_tables(rondb, &cs));
            }
            c
        },
        ..step(
            StepKind::RestoreMeta,
            "restore the RonDB metadata",
            "head node",
            "exit 0: tables created, indexes disabled (after a crash in this step: the backup's tables are all there, or those there are dropped and it runs again)",
        )
    });
    steps.push(RestoreStep {
        commands: nodes.iter().map(|n| ndb(*n, &["-r"], &exclude_data)).collect(),
        nodes: nodes.clone(),
        ..step(
            StepKind::RestoreData,
            format!(
                "restore the RonDB data of node{} {} (up to {} in parallel, never more than the free API slots)",
                if nodes.len() > 1 { "s" } else { "" },
                list(&nodes.iter().map(|n| n.to_string()).collect::<Vec<_>>()),
                r.parallelism
            ),
            "head node",
            "exit 0 for every node id",
        )
    });
    steps.push(RestoreStep {
        commands: vec![{
            let mut extra = vec!["--rebuild-indexes"];
            if r.restore_epoch {
                extra.push("--restore-epoch");
            }
            ndb(nodes[0], &extra, &exclude_meta)
        }],
        ..step(
            StepKind::RebuildIndexes,
            "rebuild the indexes",
            "head node",
            "exit 0: indexes and foreign keys created (a resume drops those an interrupted run created first: --disable-indexes)",
        )
    });
    let has = |p: &str| {
        m.entries
            .iter()
            .any(|e| matches!(e, Entry::File(f) if f.path == p))
    };
    if has(crate::repository::layout::SCHEMA_SQL) {
        steps.push(step(
            StepKind::Schema,
            "replay views, routines, triggers and events (schema.sql)",
            "MySQL server",
            "every statement succeeds",
        ));
    }
    if has(crate::repository::layout::USERS_SQL) {
        steps.push(step(
            StepKind::Users,
            "replay users and grants (users.sql)",
            "MySQL server",
            "every statement succeeds",
        ));
    }
    if !r.mysqld_restart.is_empty() && !r.mysqld_hosts.is_empty() {
        steps.push(RestoreStep {
            commands: r
                .mysqld_hosts
                .iter()
                .map(|_| r.mysqld_restart.clone())
                .collect(),
            ..step(
                StepKind::RestartMysqld,
                "restart the MySQL servers (the grants and the restored tables reach each)",
                &list(&r.mysqld_hosts.iter().map(host_name).collect::<Vec<_>>()),
                "exit 0",
            )
        });
    }
    if let Some(h) = local_blocks {
        if !moves.is_empty() {
            let mut names: Vec<String> = moves.iter().map(|m| m.datanode.clone()).collect();
            names.sort();
            names.dedup();
            let dns: Vec<_> = h
                .datanodes
                .iter()
                .filter(|d| names.contains(&d.name))
                .collect();
            let names: Vec<String> = dns.iter().map(|d| d.name.clone()).collect();
            // Through the datanodes' agents (a packed backup in S3), every datanode at once: each
            // moves its own bytes.
            let agents = settings.agents.enabled
                && matches!(settings.repository.store, StoreSettings::S3(_))
                && !m.streams.is_empty();
            let parallel = match agents {
                true => dns.len().max(1),
                false => (r.parallelism as usize).min(dns.len()).max(1),
            };
            let identity = moves.iter().all(|mv| {
                parse_volume_ref(&mv.from).is_some_and(|(n, k)| {
                    n == mv.datanode
                        && h.datanodes
                            .iter()
                            .find(|d| d.name == n)
                            .and_then(|d| d.volumes.get(k - 1))
                            .is_some_and(|v| v.display().to_string() == mv.volume)
                })
            });
            if !identity {
                notes.push(format!(
                    "HopsFS: the volumes go to other datanodes or volumes: {}",
                    list(
                        &moves
                            .iter()
                            .map(|mv| format!("{} -> {}:{}", mv.from, mv.datanode, mv.volume))
                            .collect::<Vec<_>>()
                    )
                ));
            }
            let binary = settings.agents.binary.display().to_string();
            steps.push(RestoreStep {
                commands: moves
                    .iter()
                    .map(|mv| match agents {
                        true => s(&[&binary, "agent", "--serve", "--role", "hopsfs", "--root", &mv.volume]),
                        false => s(&["tar", "--numeric-owner", "-C", &mv.volume, "-xf", "-"]),
                    })
                    .collect(),
                datanodes: names.clone(),
                moves: moves.clone(),
                one_replica: one,
                ..step(
                    StepKind::HopsfsVolumes,
                    format!(
                        "write back the volumes of datanode{} {} ({parallel} in parallel{}{})",
                        if dns.len() > 1 { "s" } else { "" },
                        names.join(", "),
                        if agents { ", by their agents" } else { "" },
                        if one { ", one replica per block" } else { "" }
                    ),
                    &dns.iter()
                        .map(|d| format!("datanode {} ({})", d.name, host_name(&d.host)))
                        .collect::<Vec<_>>()
                        .join(", "),
                    &format!(
                        "each destination volume's current/ replaced, then {}: {}",
                        if one {
                            "one replica of each finalized block (block and meta file; spread over the datanodes, HDFS copies the others once out of safe mode) and every other file written back whole"
                        } else {
                            "every block, meta and VERSION file written back whole"
                        },
                        list(
                            &moves
                                .iter()
                                .map(|mv| format!("{} -> {}:{}", mv.from, mv.datanode, mv.volume))
                                .collect::<Vec<_>>()
                        )
                    ),
                )
            });
        }
    }
    let cloud = m.info.facts.hopsfs.as_ref().filter(|h| h.cloud_objects > 0);
    if let Some(hf) = cloud {
        match settings.hopsfs.as_ref().and_then(|h| h.cloud.as_ref()) {
            None => notes.push(format!(
                "the backup recorded {} block objects of the bucket {}: [hopsfs.cloud] is not configured, they are not put back",
                hf.cloud_objects, hf.cloud_bucket
            )),
            Some(c) => steps.push(RestoreStep {
                commands: vec![s(&[
                    "PUT",
                    &format!("s3://{}/{}<key>", c.s3.bucket, prefix_slash(&c.s3.prefix)),
                    "x-amz-copy-source: <key>?versionId=<recorded version>",
                ])],
                ..step(
                    StepKind::CloudBlocks,
                    format!(
                        "put back the {} HopsFS block objects as they were at the backup (bucket {})",
                        hf.cloud_objects, c.s3.bucket
                    ),
                    "the blocks' bucket",
                    "every recorded object's current version is the recorded one (objects newer than the backup are left to the namenode, which deletes those no block names)",
                )
            }),
        }
    }
    if !r.services.is_empty() {
        steps.push(RestoreStep {
            commands: r
                .services
                .iter()
                .map(|u| service_command(&r.service_start, u))
                .collect(),
            ..step(
                StepKind::StartServices,
                format!("start the services again ({})", list(&r.services)),
                "head node",
                "exit 0 for each, in this order",
            )
        });
    }
    if let Some(h) = local_blocks {
        if !moves.is_empty() {
            steps.push(RestoreStep {
                commands: h
                    .datanodes
                    .iter()
                    .enumerate()
                    .map(|(i, d)| datanode_command(&r.datanode_start, &d.name, i + 1))
                    .collect(),
                ..step(
                    StepKind::StartDatanodes,
                    "start the datanodes",
                    "each datanode",
                    "exit 0",
                )
            });
            let mut get = r.hdfs.clone();
            get.extend(s(&["dfsadmin", "-safemode", "get"]));
            let mut fsck = r.hdfs.clone();
            fsck.extend(s(&["fsck", "/"]));
            steps.push(RestoreStep {
                commands: vec![get, fsck],
                one_replica: one,
                ..step(
                    StepKind::WaitSafemode,
                    format!(
                        "wait for safe mode OFF (at most {})",
                        humantime::format_duration(r.safemode_timeout)
                    ),
                    "head node",
                    if one {
                        "prints \"Safe mode is OFF\" (fsck gives the share of blocks reported while waiting, then the blocks HDFS has still to copy to full replication)"
                    } else {
                        "prints \"Safe mode is OFF\" (fsck gives the share of blocks reported while waiting)"
                    },
                )
            });
        }
    }
    if let Some(of) = &m.info.facts.opensearch {
        match &settings.opensearch {
            None => notes.push(format!(
                "the backup holds OpenSearch snapshot {} ({} indices): [opensearch] is not configured, it is not restored (ePipe's reindex rebuilds the search metadata only)",
                of.snapshot,
                of.indices.len()
            )),
            Some(o) => {
                let indices: Vec<String> = restorable_indices(&of.indices);
                let replace = match o.replace {
                    crate::config::OpensearchReplace::Close => "closed",
                    crate::config::OpensearchReplace::Delete => "deleted",
                };
                steps.push(RestoreStep {
                    commands: vec![
                        s(&["tar", "-C", &o.location, "-xf", "-", "(the snapshot repository's files, if OpenSearch lacks the snapshot)"]),
                        s(&["PUT", &format!("{}/_snapshot/{}", o.url, o.repository)]),
                        s(&["POST", &format!("{}/_snapshot/{}/{}/_restore", o.url, o.repository, of.snapshot)]),
                        s(&["GET", &format!("{}/_cat/indices", o.url)]),
                    ],
                    ..step(
                        StepKind::Opensearch,
                        format!(
                            "restore OpenSearch snapshot {} ({} indices; open ones of the same name {replace} first)",
                            of.snapshot,
                            indices.len()
                        ),
                        "OpenSearch",
                        &format!(
                            "every index green within {}",
                            humantime::format_duration(o.restore_timeout)
                        ),
                    )
                });
            }
        }
    }
    let mut reindex = match &r.reindex_user {
        Some(u) => s(&["/usr/sbin/runuser", "-u", u, "--"]),
        None => Vec::new(),
    };
    reindex.extend(r.reindex.iter().cloned());
    let mut commands = vec![r.epipe_stop.clone(), reindex, r.epipe_start.clone()];
    let mut title = "rebuild the OpenSearch index with ePipe".to_string();
    if let Some(fs) = &r.featurestore_reindex {
        commands.push(fs.clone());
        title.push_str(", then the feature-store index");
    }
    steps.push(RestoreStep {
        commands,
        ..step(StepKind::Reindex, title, "head node", "exit 0 for each")
    });
    steps.push(RestoreStep {
        commands: vec![r.kafka_restore.clone()],
        ..step(
            StepKind::Kafka,
            "recreate the Kafka topics",
            "head node",
            "exit 0",
        )
    });
    steps.push(step(
        StepKind::Report,
        "report the duration of every step and the RTO",
        "head node",
        "-",
    ));
    Ok(RestorePlan {
        backup_id: m.id.clone(),
        rondb_backup_id: Some(rid),
        notes,
        steps,
    })
}

impl fmt::Display for RestorePlan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "restore plan for backup {}", self.backup_id)?;
        if let Some(r) = self.rondb_backup_id {
            writeln!(f, "RonDB backup id {r}")?;
        }
        for n in &self.notes {
            writeln!(f, "note: {n}")?;
        }
        for (i, st) in self.steps.iter().enumerate() {
            writeln!(f, "\n{:>2}. {} [{}]", i + 1, st.title, st.node)?;
            for c in &st.commands {
                writeln!(
                    f,
                    "      $ {}",
                    crate::cluster::node::remote_command_line(c)
                )?;
            }
            writeln!(f, "      checks: {}", st.checks)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::SecretEnv;
    use crate::repository::facts::{ManifestFacts, RondbFacts};

    const TABLES: &[&str] = &[
        "app.events",
        "hops.hdfs_inodes",
        "hops.hdfs_blocks",
        "hopsworks.hosts",
        "glassfish_timers.EJB__TIMER__TBL",
    ];

    fn manifest(paths: &[&str]) -> Manifest {
        manifest_with(paths, Some(TABLES))
    }

    fn manifest_with(paths: &[&str], tables: Option<&[&str]>) -> Manifest {
        let mut r = RondbFacts::for_tests(217803600);
        r.tables = tables.map(|t| t.iter().map(|s| s.to_string()).collect());
        let facts = ManifestFacts {
            rondb: Some(r),
            ..Default::default()
        };
        let zero = "0".repeat(64);
        let files: Vec<(&str, &str)> = paths.iter().map(|p| (*p, zero.as_str())).collect();
        Manifest::for_tests("20261125T210000Z", facts, &files)
    }

    fn settings(extra: &str) -> Settings {
        crate::config::parse(
            &format!(
                "[rondb]\nmgm_client = [\"/srv/hops/mysql/bin/ndb_mgm\", \"-c\", \"10.0.0.1:1186\"]\n\
                 [hopsfs]\n[[hopsfs.datanodes]]\nname = \"dn1\"\nhost = \"10.0.0.21\"\n\
                 [[hopsfs.datanodes]]\nname = \"dn2\"\nhost = \"10.0.0.22\"\n{extra}"
            ),
            "hopsdr.toml",
            &SecretEnv::default(),
        )
        .unwrap()
    }

    /// A redeployed Hopsworks cluster: the example SHOW (services connected from the
    /// management server's host, 4 free slots), its schemas and disk objects.
    fn hopsworks_target() -> TargetFacts {
        let show = crate::cluster::ndb_mgm::parse_show(include_str!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/ndb_mgm/show.txt"
        )))
        .unwrap();
        TargetFacts {
            tables: [
                "hops.hdfs_inodes",
                "hops.hdfs_blocks",
                "hopsworks.hosts",
                "glassfish_timers.EJB__TIMER__TBL",
                "extra.keep",
            ]
            .map(String::from)
            .to_vec(),
            disk_objects: vec!["LogfileGroup lg_1".into(), "Tablespace ts_1".into()],
            ..TargetFacts::from_show(&show)
        }
    }

    const PATHS: &[&str] = &[
        "config/etc/hopsdr/hopsdr.toml",
        "users/users.sql",
        "users/schema.sql",
        "rondb/1/BACKUP-217803600/BACKUP-217803600.1.ctl",
        "rondb/2/BACKUP-217803600/BACKUP-217803600.2.ctl",
        "hopsfs/dn1/vol1/current/VERSION",
        "hopsfs/dn2/vol1/current/VERSION",
    ];

    #[test]
    fn the_real_sequence_with_exact_commands() {
        let p = plan(&manifest(PATHS), &settings(""), &hopsworks_target()).unwrap();
        let kinds: Vec<StepKind> = p.steps.iter().map(|s| s.kind).collect();
        use StepKind::*;
        assert_eq!(
            kinds,
            vec![
                Verify,
                Preflight,
                Quiesce,
                StageRondb,
                DropSchemas,
                RestoreMeta,
                RestoreData,
                RebuildIndexes,
                Schema,
                Users,
                RestartMysqld,
                HopsfsVolumes,
                StartServices,
                StartDatanodes,
                WaitSafemode,
                Reindex,
                Kafka,
                Report
            ]
        );
        let by = |k: StepKind| p.steps.iter().find(|s| s.kind == k).unwrap();
        // Quiesce: the services in reverse dependency order, then each datanode.
        let q: Vec<String> = by(Quiesce).commands.iter().map(|c| c.join(" ")).collect();
        assert_eq!(q[0], "/usr/bin/systemctl stop epipe");
        assert_eq!(q[5], "/usr/bin/systemctl stop namenode");
        assert_eq!(q[6], "/usr/bin/systemctl stop datanode");
        assert_eq!(by(Quiesce).datanodes, ["dn1", "dn2"]);
        // Drop: the backup's databases (never mysql), the excluded table kept, other
        // databases left alone.
        let drop = by(DropSchemas);
        assert_eq!(
            drop.databases,
            ["app", "glassfish_timers", "hops", "hopsworks"]
        );
        let d: Vec<String> = drop.commands.iter().map(|c| c.join(" ")).collect();
        assert_eq!(
            d,
            [
                "/srv/hops/mysql/bin/ndb_drop_table -c 10.0.0.1:1186 -d hops hdfs_inodes hdfs_blocks",
                "/srv/hops/mysql/bin/ndb_drop_table -c 10.0.0.1:1186 -d hopsworks hosts"
            ]
        );
        assert_eq!(
            by(RestoreMeta).commands[0].join(" "),
            "/srv/hops/mysql/bin/ndb_restore -c 10.0.0.1:1186 -n 1 -b 217803600 -m --disable-indexes --no-restore-disk-objects --no-binlog --exclude-tables=mysql.ndb_apply_status,glassfish_timers.EJB__TIMER__TBL --backup_path /var/lib/hopsdr/restore/20261125T210000Z/rondb/1/BACKUP-217803600"
        );
        let data = by(RestoreData);
        assert_eq!(data.commands.len(), 2);
        assert!(data.commands[1].join(" ").contains(
            "-n 2 -b 217803600 -r --no-binlog --exclude-tables=mysql.ndb_apply_status,glassfish_timers.EJB__TIMER__TBL,hopsworks.hosts,hopsworks.host_services --backup_path"
        ));
        let rebuild = by(RebuildIndexes).commands[0].join(" ");
        assert!(rebuild.contains("--rebuild-indexes --no-binlog --exclude-tables=mysql.ndb_apply_status,glassfish_timers.EJB__TIMER__TBL "), "{rebuild}");
        assert_eq!(
            by(RestartMysqld).commands[0].join(" "),
            "/usr/bin/systemctl restart mysqld"
        );
        let start: Vec<String> = by(StartServices)
            .commands
            .iter()
            .map(|c| c.join(" "))
            .collect();
        assert_eq!(start[0], "/usr/bin/systemctl start namenode");
        assert_eq!(start[5], "/usr/bin/systemctl start epipe");
        assert_eq!(
            by(Reindex).commands[1],
            s(&[
                "/usr/sbin/runuser",
                "-u",
                "epipe",
                "--",
                "/srv/hops/epipe/bin/reindex-epipe.sh"
            ])
        );
        let text = p.to_string();
        assert!(
            text.contains(" 6. restore the RonDB metadata [head node]"),
            "{text}"
        );
        assert!(
            text.contains("write back the volumes of datanodes dn1, dn2 (2 in parallel) [datanode dn1 (10.0.0.21), datanode dn2 (10.0.0.22)]"),
            "{text}"
        );
        assert!(
            text.contains(
                "note: the target holds 3 table(s) in app, glassfish_timers, hops, hopsworks"
            ),
            "{text}"
        );
        assert!(text.contains("--no-restore-disk-objects"), "{text}");
        assert!(
            !text.contains("the target has 1, 2, 3"),
            "same data nodes: no topology note"
        );
    }

    #[test]
    fn an_empty_target_and_settings_that_turn_things_off() {
        let st = settings(
            "[restore]\nrestore_epoch = true\nno_binlog = false\nexclude_tables = []\nexclude_tables_data = []\nservices = []\nmysqld_restart = []\nreindex_user = \"\"\ndatanode_start = [\"/usr/bin/tb\", \"datanode\", \"start\", \"{index}\", \"{name}\"]\n",
        );
        let empty = TargetFacts {
            tables: vec![],
            disk_objects: vec![],
            ..hopsworks_target()
        };
        let p = plan(&manifest(PATHS), &st, &empty).unwrap();
        let by = |k: StepKind| p.steps.iter().find(|s| s.kind == k);
        assert!(by(StepKind::RestartMysqld).is_none());
        assert!(by(StepKind::StartServices).is_none());
        assert_eq!(
            by(StepKind::Quiesce).unwrap().commands.len(),
            2,
            "the datanodes only"
        );
        assert!(by(StepKind::DropSchemas).unwrap().commands.is_empty());
        let meta = by(StepKind::RestoreMeta).unwrap().commands[0].join(" ");
        assert!(
            !meta.contains("--no-restore-disk-objects")
                && !meta.contains("--no-binlog")
                && !meta.contains("--exclude"),
            "{meta}"
        );
        assert!(by(StepKind::RebuildIndexes).unwrap().commands[0]
            .contains(&"--restore-epoch".to_string()));
        assert_eq!(
            by(StepKind::StartDatanodes).unwrap().commands[1],
            s(&["/usr/bin/tb", "datanode", "start", "2", "dn2"])
        );
        assert!(p.notes.is_empty(), "{:?}", p.notes);
        // A backup that did not record its tables: no drop step, the preflight lists the
        // target's tables (and refuses user data).
        let p = plan(&manifest_with(PATHS, None), &st, &empty).unwrap();
        assert!(p.steps.iter().all(|s| s.kind != StepKind::DropSchemas));
        assert_eq!(p.steps[1].commands.len(), 1);
        assert!(matches!(
            plan(&manifest(&["config/x"]), &st, &empty),
            Err(PlanError::NoRondb(_))
        ));
    }

    #[test]
    fn an_unknown_api_client_is_refused_naming_it() {
        let mut t = hopsworks_target();
        t.api[9] = crate::restore::target::ApiSlot {
            id: NdbNodeId(76),
            address: Some("10.0.0.99".into()),
            connected: true,
        };
        let e = plan(&manifest(PATHS), &settings(""), &t).unwrap_err();
        assert_eq!(
            e,
            PlanError::UnknownApiClient {
                id: NdbNodeId(76),
                address: "10.0.0.99".into()
            }
        );
        assert!(e.to_string().contains("api_client_hosts"), "{e}");
        // Its host named as one whose services hopsdr stops: accepted.
        let st = settings("[restore]\napi_client_hosts = [\"10.0.0.1\", \"10.0.0.99\"]\n");
        assert!(plan(&manifest(PATHS), &st, &t).is_ok());
        // Connected from a wildcard address: unknown.
        t.api[9].address = None;
        assert!(matches!(
            plan(&manifest(PATHS), &st, &t),
            Err(PlanError::UnknownApiClient {
                id: NdbNodeId(76),
                ..
            })
        ));
    }

    #[test]
    fn volumes_go_where_the_map_says_and_none_is_left_behind() {
        let two = &[
            "rondb/1/x",
            "hopsfs/dn1/vol1/current/VERSION",
            "hopsfs/dn1/vol2/current/VERSION",
            "hopsfs/dn2/vol1/current/VERSION",
            "hopsfs/dn2/vol2/current/VERSION",
        ];
        let t = hopsworks_target();
        // The config has one volume per datanode: dn1/vol2 has nowhere to go.
        let e = plan(&manifest(two), &settings(""), &t).unwrap_err();
        assert!(
            matches!(&e, PlanError::UnmappedVolume { volume, .. } if volume == "dn1/vol2"),
            "{e}"
        );
        assert!(e.to_string().contains("[restore.volume_map]"), "{e}");
        // Mapped: two volumes merged into one, shown in a note.
        let st = settings(
            "[restore.volume_map]\n\"dn1/vol2\" = \"dn1/vol1\"\n\"dn2/vol2\" = \"dn2/vol1\"\n",
        );
        let p = plan(&manifest(two), &st, &t).unwrap();
        let w = p
            .steps
            .iter()
            .find(|s| s.kind == StepKind::HopsfsVolumes)
            .unwrap();
        assert_eq!(w.moves.len(), 4);
        assert_eq!(w.moves[1].from, "dn1/vol2");
        assert_eq!(w.moves[1].datanode, "dn1");
        assert_eq!(w.moves[1].volume, "/srv/hops/hopsdata/hdfs/dn");
        assert!(
            p.notes
                .iter()
                .any(|n| n.contains("dn1/vol2 -> dn1:/srv/hops/hopsdata/hdfs/dn")),
            "{:?}",
            p.notes
        );
        // Other names: the backup's dn1/dn2 onto w1/w2.
        let renamed = crate::config::parse(
            "[rondb]\nmgm_client = [\"/srv/hops/mysql/bin/ndb_mgm\", \"-c\", \"10.0.0.1:1186\"]\n\
             [hopsfs]\n[[hopsfs.datanodes]]\nname = \"w1\"\nhost = \"10.0.0.31\"\n\
             [[hopsfs.datanodes]]\nname = \"w2\"\nhost = \"10.0.0.32\"\n\
             [restore.volume_map]\n\"dn1/vol1\" = \"w1/vol1\"\n\"dn2/vol1\" = \"w2/vol1\"\n",
            "hopsdr.toml",
            &SecretEnv::default(),
        )
        .unwrap();
        let p = plan(&manifest(PATHS), &renamed, &t).unwrap();
        let w = p
            .steps
            .iter()
            .find(|s| s.kind == StepKind::HopsfsVolumes)
            .unwrap();
        assert_eq!(w.datanodes, ["w1", "w2"]);
        // A map naming an unknown datanode, or a volume the backup does not hold.
        for (extra, want) in [
            ("\"dn1/vol1\" = \"dn9/vol1\"", "no datanode dn9"),
            ("\"dn1/vol1\" = \"dn2/vol3\"", "dn2 has 1 volume(s)"),
            (
                "\"dn7/vol1\" = \"dn1/vol1\"",
                "the backup holds no volume dn7/vol1",
            ),
        ] {
            let st = settings(&format!("[restore.volume_map]\n{extra}\n"));
            let e = plan(&manifest(PATHS), &st, &t).unwrap_err();
            assert!(e.to_string().contains(want), "{e}");
        }
        // A datanode of the backup the config does not know, unmapped.
        let e = plan(
            &manifest(&["rondb/1/x", "hopsfs/dn9/vol1/current/VERSION"]),
            &settings(""),
            &t,
        )
        .unwrap_err();
        assert!(e.to_string().contains("dn9/vol1 has no destination"), "{e}");
    }

    #[test]
    fn a_different_number_of_data_nodes_is_stated() {
        let mut t = hopsworks_target();
        t.data_nodes = vec![NdbNodeId(1), NdbNodeId(2), NdbNodeId(3)];
        let p = plan(&manifest(PATHS), &settings(""), &t).unwrap();
        assert!(
            p.notes
                .iter()
                .any(|n| n.contains("the backup holds data nodes 1, 2, the target has 1, 2, 3")),
            "{:?}",
            p.notes
        );
        let data = p
            .steps
            .iter()
            .find(|s| s.kind == StepKind::RestoreData)
            .unwrap();
        assert_eq!(data.nodes, [NdbNodeId(1), NdbNodeId(2)]);
    }

    #[test]
    fn connectstring_from_the_mgm_client() {
        let st = settings("");
        assert_eq!(connectstring(&st).as_deref(), Some("10.0.0.1:1186"));
        let st = settings("[restore]\nconnectstring = \"10.0.0.2:1186\"\n");
        assert_eq!(connectstring(&st).as_deref(), Some("10.0.0.2:1186"));
    }

    #[test]
    fn a_backup_encrypted_by_rondb_is_decrypted_with_the_password_on_stdin() {
        let dir = tempfile::tempdir().unwrap();
        let pw = dir.path().join("rondb.pw");
        std::fs::write(&pw, "s3cret backup password\n").unwrap();
        std::fs::set_permissions(&pw, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
        let mut m = manifest(PATHS);
        m.info.facts.rondb.as_mut().unwrap().encrypted = true;

        // Without the password in the config: refused before anything, saying what to set.
        let e = plan(&m, &settings(""), &hopsworks_target()).unwrap_err();
        assert!(e.to_string().contains("set [rondb] backup_password"), "{e}");

        let mut with = settings("");
        with.rondb.as_mut().unwrap().backup_password = Some(crate::config::Secret::File(pw));
        let p = plan(&m, &with, &hopsworks_target()).unwrap();
        let ndb: Vec<&Vec<String>> = p
            .steps
            .iter()
            .flat_map(|s| &s.commands)
            .filter(|c| c[0].ends_with("ndb_restore"))
            .collect();
        assert_eq!(ndb.len(), 4, "-m, -r twice, --rebuild-indexes");
        for c in ndb {
            assert!(c.contains(&"--decrypt".to_string()), "{c:?}");
            assert!(c.contains(&DECRYPT_FROM_STDIN.to_string()), "{c:?}");
            assert!(!c.iter().any(|a| a.contains("s3cret")), "{c:?}");
        }
        // A backup not encrypted by RonDB: no decryption flags.
        let p = plan(&manifest(PATHS), &with, &hopsworks_target()).unwrap();
        assert!(!p
            .steps
            .iter()
            .flat_map(|s| &s.commands)
            .any(|c| c.iter().any(|a| a == "--decrypt")));
    }
}
