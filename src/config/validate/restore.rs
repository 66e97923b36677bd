//! `[restore]`: the tools a restore runs on the target and what it leaves alone.

use super::*;

impl Validator<'_> {
    pub(super) fn restore(&mut self, p: &KeyPath, raw: RawRestore) -> RestoreSettings {
        let parallelism = match raw.parallelism {
            None => 2,
            Some(n) if (1..=64).contains(&n) => n as u32,
            Some(n) => {
                self.error(
                    &p.key("parallelism"),
                    format!("parallelism {n} is out of range: use 1 to 64"),
                );
                2
            }
        };
        if let Some(cs) = &raw.connectstring {
            if cs.is_empty() || cs.chars().any(|c| c.is_whitespace()) {
                self.error(
                    &p.key("connectstring"),
                    format!(
                        "invalid connect string {cs:?}: use host:port such as \"10.0.0.1:1186\""
                    ),
                );
            }
        }
        RestoreSettings {
            ndb_restore: self.command(
                &p.key("ndb_restore"),
                raw.ndb_restore,
                &["/srv/hops/mysql/bin/ndb_restore"],
            ),
            connectstring: raw.connectstring,
            staging_dir: self.absolute(
                &p.key("staging_dir"),
                raw.staging_dir,
                "/var/lib/hopsdr/restore",
            ),
            parallelism,
            restore_epoch: raw.restore_epoch.unwrap_or(false),
            hdfs: self.command(&p.key("hdfs"), raw.hdfs, &["/srv/hops/hadoop/bin/hdfs"]),
            safemode_timeout: self.duration(
                &p.key("safemode_timeout"),
                raw.safemode_timeout,
                Duration::from_secs(1800),
            ),
            datanode_start: self.command(
                &p.key("datanode_start"),
                raw.datanode_start,
                &["/usr/bin/systemctl", "start", "datanode"],
            ),
            datanode_status: self.command(
                &p.key("datanode_status"),
                raw.datanode_status,
                &["/usr/bin/systemctl", "is-active", "--quiet", "datanode"],
            ),
            epipe_stop: self.command(
                &p.key("epipe_stop"),
                raw.epipe_stop,
                &["/usr/bin/systemctl", "stop", "epipe"],
            ),
            epipe_start: self.command(
                &p.key("epipe_start"),
                raw.epipe_start,
                &["/usr/bin/systemctl", "start", "epipe"],
            ),
            reindex: self.command(
                &p.key("reindex"),
                raw.reindex,
                &["/srv/hops/epipe/bin/reindex-epipe.sh"],
            ),
            reindex_user: match raw.reindex_user {
                None => Some("epipe".to_string()),
                Some(u) if u.is_empty() => None,
                Some(u) => Some(u),
            },
            kafka_restore: self.command(
                &p.key("kafka_restore"),
                raw.kafka_restore,
                &["/srv/hops/kafka/bin/kafka-restore.sh"],
            ),
            featurestore_reindex: raw.featurestore_reindex.map(|argv| {
                self.command(
                    &p.key("featurestore_reindex"),
                    Some(argv),
                    &["/usr/bin/curl", "-fsS", "-X", "POST", "-H", "@/etc/hopsdr/hopsworks-api-key.header", "https://hopsworks.glassfish.service.consul:8182/hopsworks-api/api/admin/search/featurestore/reindex"],
                )
            }),
            ndb_drop_table: self.command(
                &p.key("ndb_drop_table"),
                raw.ndb_drop_table,
                &["/srv/hops/mysql/bin/ndb_drop_table"],
            ),
            no_binlog: raw.no_binlog.unwrap_or(true),
            exclude_tables: self.table_names(
                &p.key("exclude_tables"),
                raw.exclude_tables,
                &["mysql.ndb_apply_status", "glassfish_timers.EJB__TIMER__TBL"],
            ),
            exclude_tables_data: self.table_names(
                &p.key("exclude_tables_data"),
                raw.exclude_tables_data,
                &["hopsworks.hosts", "hopsworks.host_services"],
            ),
            services: self.unit_names(&p.key("services"), raw.services),
            service_stop: self.command(
                &p.key("service_stop"),
                raw.service_stop,
                &["/usr/bin/systemctl", "stop", "{unit}"],
            ),
            service_start: self.command(
                &p.key("service_start"),
                raw.service_start,
                &["/usr/bin/systemctl", "start", "{unit}"],
            ),
            datanode_stop: self.command(
                &p.key("datanode_stop"),
                raw.datanode_stop,
                &["/usr/bin/systemctl", "stop", "datanode"],
            ),
            api_client_hosts: raw.api_client_hosts.unwrap_or_default(),
            mysqld_api_nodes: match raw.mysqld_api_nodes {
                None => 1,
                Some(n) if (0..=255).contains(&n) => n as u32,
                Some(n) => {
                    self.error(
                        &p.key("mysqld_api_nodes"),
                        format!("{n} API nodes for the MySQL servers is out of range: use 0 to 255"),
                    );
                    1
                }
            },
            replicas: match raw.replicas.as_deref() {
                None | Some("all") => RestoreReplicas::All,
                Some("one") => RestoreReplicas::One,
                Some(other) => {
                    self.error(
                        &p.key("replicas"),
                        format!("unknown replicas {other:?}: use \"all\" (every replica the backup recorded) or \"one\" (one per block; HDFS copies the others)"),
                    );
                    RestoreReplicas::All
                }
            },
            quiesce_timeout: self.duration(
                &p.key("quiesce_timeout"),
                raw.quiesce_timeout,
                Duration::from_secs(120),
            ),
            mysqld_restart: match raw.mysqld_restart {
                Some(v) if v.is_empty() => Vec::new(),
                other => self.command(
                    &p.key("mysqld_restart"),
                    other,
                    &["/usr/bin/systemctl", "restart", "mysqld"],
                ),
            },
            mysqld_hosts: raw
                .mysqld_hosts
                .unwrap_or_else(|| vec!["local".into()])
                .into_iter()
                .map(|h| {
                    if h == "local" {
                        NodeHost::Local
                    } else {
                        NodeHost::Remote(h)
                    }
                })
                .collect(),
            volume_map: self.volume_map(&p.key("volume_map"), raw.volume_map),
        }
    }

    pub(super) fn command(
        &mut self,
        p: &KeyPath,
        value: Option<Vec<String>>,
        default: &[&str],
    ) -> Vec<String> {
        match value {
            None => default.iter().map(|s| s.to_string()).collect(),
            Some(argv) if argv.first().is_some_and(|a| a.starts_with('/')) => argv,
            Some(_) => {
                self.error(
                    p,
                    format!(
                        "give the command as a list starting with an absolute path, e.g. {:?}",
                        default
                    ),
                );
                default.iter().map(|s| s.to_string()).collect()
            }
        }
    }

    /// `db.table` names for ndb_restore's `--exclude-tables` (no commas, no spaces).
    pub(super) fn table_names(
        &mut self,
        p: &KeyPath,
        value: Option<Vec<String>>,
        default: &[&str],
    ) -> Vec<String> {
        let Some(v) = value else {
            return default.iter().map(|s| s.to_string()).collect();
        };
        for (i, t) in v.iter().enumerate() {
            let ok = t
                .split_once('.')
                .is_some_and(|(d, n)| !d.is_empty() && !n.is_empty() && !n.contains('.'))
                && !t.contains(|c: char| c == ',' || c.is_whitespace());
            if !ok {
                self.error(
                    &p.index(i),
                    format!("{t:?} is not a table name: use \"<database>.<table>\""),
                );
            }
        }
        v
    }

    /// systemd unit names (letters, digits, `-_.@:`).
    pub(super) fn unit_names(&mut self, p: &KeyPath, value: Option<Vec<String>>) -> Vec<String> {
        let Some(v) = value else {
            return [
                "namenode",
                "resourcemanager",
                "hivemetastore",
                "rdrs",
                "glassfish-domain1",
                "epipe",
            ]
            .iter()
            .map(|s| s.to_string())
            .collect();
        };
        for (i, u) in v.iter().enumerate() {
            if u.is_empty()
                || u.starts_with('-')
                || !u
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.@:".contains(c))
            {
                self.error(&p.index(i), format!("{u:?} is not a systemd unit name"));
            }
        }
        v
    }

    /// `"<datanode>/vol<k>" = "<datanode>/vol<k>"` pairs.
    pub(super) fn volume_map(
        &mut self,
        p: &KeyPath,
        value: Option<std::collections::BTreeMap<String, String>>,
    ) -> Vec<(String, String)> {
        let mut out = Vec::new();
        for (from, to) in value.unwrap_or_default() {
            for v in [&from, &to] {
                if crate::config::parse_volume_ref(v).is_none() {
                    self.error(
                        &p.key(&from),
                        format!("{v:?} is not a volume: use \"<datanode name>/vol<k>\" (k from 1), e.g. \"dn1/vol2\""),
                    );
                }
            }
            out.push((from, to));
        }
        out
    }
}
