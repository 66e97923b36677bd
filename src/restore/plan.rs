//! The restore plan: from a backup's manifest and the config, every step of a whole-cluster
//! restore in the guide's order, with the exact commands and the node each runs on, and what
//! each checks. A pure function: `hopsdrctl restore plan` prints it, the restore job executes it.

use std::fmt;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::config::{BlockStorage, NodeHost, Settings};
use crate::ids::BackupId;
use crate::repository::{Entry, Manifest};

/// What kind of step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepKind {
    Verify,
    Preflight,
    StageRondb,
    RestoreMeta,
    RestoreData,
    RebuildIndexes,
    Schema,
    Users,
    HopsfsVolumes,
    StartDatanodes,
    WaitSafemode,
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
    pub nodes: Vec<u32>,
}

/// The whole plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestorePlan {
    pub backup_id: BackupId,
    pub rondb_backup_id: Option<u32>,
    pub steps: Vec<RestoreStep>,
}

/// Why no plan can be made.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PlanError {
    #[error("backup {0} has no RonDB part: nothing to restore the cluster from")]
    NoRondb(BackupId),
    #[error("no connect string for ndb_restore: set [restore] connectstring (or -c in [rondb] mgm_client)")]
    NoConnectstring,
    #[error("backup {backup} holds datanode {datanode}, which [[hopsfs.datanodes]] does not list: add it (the restore writes every volume back where it came from)")]
    UnknownDatanode { backup: BackupId, datanode: String },
    #[error("the manifest of backup {0} has no RonDB facts (info.extra.rondb)")]
    NoRondbFacts(BackupId),
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

/// The node ids whose files the backup holds (`rondb/<id>/...`), sorted.
pub fn rondb_nodes(m: &Manifest) -> Vec<u32> {
    let mut ids: Vec<u32> = m
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

/// The datanodes whose volumes the backup holds (`hopsfs/<name>/...`), sorted.
pub fn hopsfs_datanodes(m: &Manifest) -> Vec<String> {
    let mut names: Vec<String> = m
        .entries
        .iter()
        .filter_map(|e| {
            e.path()
                .strip_prefix("hopsfs/")?
                .split('/')
                .next()
                .map(str::to_string)
        })
        .collect();
    names.sort();
    names.dedup();
    names
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

/// The preflight's commands: the NDB dictionary's user tables (head node), then each
/// datanode's status (on the datanode), in `[[hopsfs.datanodes]]` order.
fn preflight_commands(settings: &Settings, cs: &str) -> Vec<Vec<String>> {
    let r = &settings.restore;
    let mut out = Vec::new();
    if let Some(rondb) = &settings.rondb {
        out.push(show_tables(rondb, cs));
    }
    if let Some(h) = settings
        .hopsfs
        .as_ref()
        .filter(|h| h.block_storage == BlockStorage::Local)
    {
        out.extend(
            h.datanodes
                .iter()
                .enumerate()
                .map(|(i, d)| datanode_command(&r.datanode_status, &d.name, i + 1)),
        );
    }
    out
}

/// Builds the plan for restoring backup `m` onto the cluster `settings` describes.
pub fn plan(m: &Manifest, settings: &Settings) -> Result<RestorePlan, PlanError> {
    let id = m.id.clone();
    let nodes = rondb_nodes(m);
    if nodes.is_empty() {
        return Err(PlanError::NoRondb(id));
    }
    let rid = m
        .info
        .extra
        .get("rondb")
        .and_then(|r| r.get("backup_id"))
        .and_then(|b| b.as_u64())
        .ok_or_else(|| PlanError::NoRondbFacts(id.clone()))? as u32;
    let cs = connectstring(settings).ok_or(PlanError::NoConnectstring)?;
    let r = &settings.restore;
    let stage = r.staging_dir.join(id.as_str());
    let path_of = |node: u32| -> String {
        Path::new(&stage)
            .join(format!("rondb/{node}/BACKUP-{rid}"))
            .display()
            .to_string()
    };
    let ndb = |node: u32, extra: &[&str]| -> Vec<String> {
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
        a.push("--backup_path".into());
        a.push(path_of(node));
        a
    };
    let mut steps = vec![
        RestoreStep {
            kind: StepKind::Verify,
            title: format!("verify backup {id}"),
            node: "head node".into(),
            commands: vec![],
            checks: "the manifest is complete and every blob is present with the right hash; the backup is not failed or partial (unless allowed); versions match the target".into(),
            datanodes: vec![],
            nodes: vec![],
        },
        RestoreStep {
            kind: StepKind::Preflight,
            title: "preflight on the target cluster".into(),
            node: "head node; each datanode".into(),
            commands: preflight_commands(settings, &cs),
            checks: "management server reachable, every data node started, no user data in RonDB, HopsFS datanodes stopped with empty volumes".into(),
            datanodes: vec![],
            nodes: vec![],
        },
        RestoreStep {
            kind: StepKind::StageRondb,
            title: "stage the RonDB files".into(),
            node: "head node".into(),
            commands: vec![],
            checks: format!("every data node's BACKUP-{rid} written to {} and verified", stage.join("rondb").display()),
            datanodes: vec![],
            nodes: vec![],
        },
        RestoreStep {
            kind: StepKind::RestoreMeta,
            title: "restore the RonDB metadata".into(),
            node: "head node".into(),
            commands: {
                let mut c = vec![ndb(nodes[0], &["-m", "--disable-indexes"])];
                if let Some(rondb) = &settings.rondb {
                    // On a resume after a crash in this step: which tables exist already.
                    c.push(show_tables(rondb, &cs));
                }
                c
            },
            checks: "exit 0: tables created, indexes disabled (after a crash in this step: the backup's tables are all there, or none is)".into(),
            datanodes: vec![],
            nodes: vec![],
        },
        RestoreStep {
            kind: StepKind::RestoreData,
            title: format!(
                "restore the RonDB data of node{} {} ({} in parallel)",
                if nodes.len() > 1 { "s" } else { "" },
                nodes.iter().map(|n| n.to_string()).collect::<Vec<_>>().join(", "),
                r.parallelism
            ),
            node: "head node".into(),
            commands: nodes.iter().map(|n| ndb(*n, &["-r"])).collect(),
            checks: "exit 0 for every node id".into(),
            datanodes: vec![],
            nodes: nodes.clone(),
        },
        RestoreStep {
            kind: StepKind::RebuildIndexes,
            title: "rebuild the indexes".into(),
            node: "head node".into(),
            commands: vec![{
                let mut extra = vec!["--rebuild-indexes"];
                if r.restore_epoch {
                    extra.push("--restore-epoch");
                }
                ndb(nodes[0], &extra)
            }],
            checks: "exit 0: indexes online".into(),
            datanodes: vec![],
            nodes: vec![],
        },
    ];
    let has = |p: &str| {
        m.entries
            .iter()
            .any(|e| matches!(e, Entry::File(f) if f.path == p))
    };
    if has(crate::backup::users::SCHEMA_SQL) {
        steps.push(RestoreStep {
            kind: StepKind::Schema,
            title: "replay views, routines, triggers and events (schema.sql)".into(),
            node: "MySQL server".into(),
            commands: vec![],
            checks: "every statement succeeds".into(),
            datanodes: vec![],
            nodes: vec![],
        });
    }
    if has(crate::backup::users::USERS_SQL) {
        steps.push(RestoreStep {
            kind: StepKind::Users,
            title: "replay users and grants (users.sql)".into(),
            node: "MySQL server".into(),
            commands: vec![],
            checks: "every statement succeeds".into(),
            datanodes: vec![],
            nodes: vec![],
        });
    }
    let dns_in_backup = hopsfs_datanodes(m);
    if let Some(h) = settings
        .hopsfs
        .as_ref()
        .filter(|h| h.block_storage == BlockStorage::Local)
    {
        if !dns_in_backup.is_empty() {
            for name in &dns_in_backup {
                if !h.datanodes.iter().any(|d| &d.name == name) {
                    return Err(PlanError::UnknownDatanode {
                        backup: id,
                        datanode: name.clone(),
                    });
                }
            }
            let dns: Vec<_> = h
                .datanodes
                .iter()
                .filter(|d| dns_in_backup.contains(&d.name))
                .collect();
            let names: Vec<String> = dns.iter().map(|d| d.name.clone()).collect();
            let parallel = (r.parallelism as usize).min(dns.len()).max(1);
            steps.push(RestoreStep {
                kind: StepKind::HopsfsVolumes,
                title: format!(
                    "write back the volumes of datanode{} {} ({parallel} in parallel)",
                    if dns.len() > 1 { "s" } else { "" },
                    names.join(", ")
                ),
                node: dns
                    .iter()
                    .map(|d| format!("datanode {} ({})", d.name, host_name(&d.host)))
                    .collect::<Vec<_>>()
                    .join(", "),
                commands: dns
                    .iter()
                    .flat_map(|d| d.volumes.iter())
                    .map(|v| {
                        s(&[
                            "tar",
                            "--numeric-owner",
                            "-C",
                            &v.display().to_string(),
                            "-xf",
                            "-",
                        ])
                    })
                    .collect(),
                checks: "every block, meta and VERSION file of every datanode written back whole"
                    .into(),
                datanodes: names,
                nodes: vec![],
            });
            let starts: Vec<Vec<String>> = h
                .datanodes
                .iter()
                .enumerate()
                .map(|(i, d)| datanode_command(&r.datanode_start, &d.name, i + 1))
                .collect();
            steps.push(RestoreStep {
                kind: StepKind::StartDatanodes,
                title: "start the datanodes".into(),
                node: "each datanode".into(),
                commands: starts,
                checks: "exit 0".into(),
                datanodes: vec![],
                nodes: vec![],
            });
            let mut get = r.hdfs.clone();
            get.extend(s(&["dfsadmin", "-safemode", "get"]));
            let mut fsck = r.hdfs.clone();
            fsck.extend(s(&["fsck", "/"]));
            steps.push(RestoreStep {
                kind: StepKind::WaitSafemode,
                title: format!(
                    "wait for safe mode OFF (at most {})",
                    humantime::format_duration(r.safemode_timeout)
                ),
                node: "head node".into(),
                commands: vec![get, fsck],
                checks: "prints \"Safe mode is OFF\" (fsck gives the share of blocks reported while waiting)".into(),
                datanodes: vec![],
                nodes: vec![],
            });
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
        kind: StepKind::Reindex,
        title,
        node: "head node".into(),
        commands,
        checks: "exit 0 for each".into(),
        datanodes: vec![],
        nodes: vec![],
    });
    steps.push(RestoreStep {
        kind: StepKind::Kafka,
        title: "recreate the Kafka topics".into(),
        node: "head node".into(),
        commands: vec![r.kafka_restore.clone()],
        checks: "exit 0".into(),
        datanodes: vec![],
        nodes: vec![],
    });
    steps.push(RestoreStep {
        kind: StepKind::Report,
        title: "report the duration of every step and the RTO".into(),
        node: "head node".into(),
        commands: vec![],
        checks: "-".into(),
        datanodes: vec![],
        nodes: vec![],
    });
    Ok(RestorePlan {
        backup_id: m.id.clone(),
        rondb_backup_id: Some(rid),
        steps,
    })
}

impl fmt::Display for RestorePlan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "restore plan for backup {}", self.backup_id)?;
        if let Some(r) = self.rondb_backup_id {
            writeln!(f, "RonDB backup id {r}")?;
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
    use crate::repository::{BackupInfo, FileEntry, FileMeta};

    fn manifest(paths: &[&str]) -> Manifest {
        let mut extra = serde_json::Map::new();
        extra.insert("rondb".into(), serde_json::json!({"backup_id": 217803600}));
        Manifest {
            format_version: 1,
            id: BackupId::parse("20261125T210000Z").unwrap(),
            info: BackupInfo {
                started_at: chrono::Utc::now(),
                finished_at: chrono::Utc::now(),
                hostname: "h".into(),
                hopsdr_version: "0".into(),
                components: vec![],
                extra,
            },
            entries: paths
                .iter()
                .map(|p| {
                    Entry::File(FileEntry {
                        path: p.to_string(),
                        size: 0,
                        meta: FileMeta::default(),
                        hash: "0".repeat(64),
                        chunks: vec![],
                    })
                })
                .collect(),
        }
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

    #[test]
    fn the_guides_order_with_exact_commands() {
        let m = manifest(&[
            "config/etc/hopsdr/hopsdr.toml",
            "users/users.sql",
            "users/schema.sql",
            "rondb/1/BACKUP-217803600/BACKUP-217803600.1.ctl",
            "rondb/2/BACKUP-217803600/BACKUP-217803600.2.ctl",
            "hopsfs/dn1/vol1/current/VERSION",
            "hopsfs/dn2/vol1/current/VERSION",
        ]);
        let p = plan(&m, &settings("")).unwrap();
        let kinds: Vec<StepKind> = p.steps.iter().map(|s| s.kind).collect();
        use StepKind::*;
        assert_eq!(
            kinds,
            vec![
                Verify,
                Preflight,
                StageRondb,
                RestoreMeta,
                RestoreData,
                RebuildIndexes,
                Schema,
                Users,
                HopsfsVolumes,
                StartDatanodes,
                WaitSafemode,
                Reindex,
                Kafka,
                Report
            ]
        );
        let meta = &p.steps[3].commands[0];
        assert_eq!(
            meta.join(" "),
            "/srv/hops/mysql/bin/ndb_restore -c 10.0.0.1:1186 -n 1 -b 217803600 -m --disable-indexes --backup_path /var/lib/hopsdr/restore/20261125T210000Z/rondb/1/BACKUP-217803600"
        );
        assert_eq!(p.steps[4].commands.len(), 2);
        assert!(p.steps[4].commands[1]
            .join(" ")
            .contains("-n 2 -b 217803600 -r"));
        assert!(p.steps[5].commands[0].contains(&"--rebuild-indexes".to_string()));
        assert_eq!(
            p.steps[11].commands[1],
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
            text.contains(" 4. restore the RonDB metadata [head node]"),
            "{text}"
        );
        assert!(
            text.contains("write back the volumes of datanodes dn1, dn2 (2 in parallel) [datanode dn1 (10.0.0.21), datanode dn2 (10.0.0.22)]"),
            "{text}"
        );
    }

    #[test]
    fn placeholders_epoch_and_refusals() {
        let m = manifest(&[
            "rondb/1/BACKUP-217803600/x",
            "hopsfs/dn1/vol1/current/VERSION",
        ]);
        let st = settings(
            "[restore]\nrestore_epoch = true\nreindex_user = \"\"\ndatanode_start = [\"/usr/bin/tb\", \"datanode\", \"start\", \"{index}\", \"{name}\"]\n",
        );
        let p = plan(&m, &st).unwrap();
        let start = p
            .steps
            .iter()
            .find(|s| s.kind == StepKind::StartDatanodes)
            .unwrap();
        assert_eq!(
            start.commands[1],
            s(&["/usr/bin/tb", "datanode", "start", "2", "dn2"])
        );
        let rebuild = p
            .steps
            .iter()
            .find(|s| s.kind == StepKind::RebuildIndexes)
            .unwrap();
        assert!(rebuild.commands[0].contains(&"--restore-epoch".to_string()));
        let reindex = p
            .steps
            .iter()
            .find(|s| s.kind == StepKind::Reindex)
            .unwrap();
        assert_eq!(
            reindex.commands[1],
            s(&["/srv/hops/epipe/bin/reindex-epipe.sh"])
        );

        let foreign = manifest(&["rondb/1/x", "hopsfs/dn9/vol1/current/VERSION"]);
        assert!(matches!(
            plan(&foreign, &st),
            Err(PlanError::UnknownDatanode { datanode, .. }) if datanode == "dn9"
        ));
        assert!(matches!(
            plan(&manifest(&["config/x"]), &st),
            Err(PlanError::NoRondb(_))
        ));
    }

    #[test]
    fn connectstring_from_the_mgm_client() {
        let st = settings("");
        assert_eq!(connectstring(&st).as_deref(), Some("10.0.0.1:1186"));
        let st = settings("[restore]\nconnectstring = \"10.0.0.2:1186\"\n");
        assert_eq!(connectstring(&st).as_deref(), Some("10.0.0.2:1186"));
    }
}
