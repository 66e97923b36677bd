//! From config text to [`Settings`]: parse (syntax errors), deserialize into the raw structs
//! (type errors, unknown keys), then check every value and apply defaults, collecting every
//! error with the line of its key. Defaults live here, as constants.

use std::net::SocketAddr;
use std::ops::Range;
use std::path::{Component, PathBuf};
use std::time::Duration;

use toml::de::DeTable;
use toml::Spanned;

use super::raw::{
    allowed_keys, RawBackup, RawConfig, RawDaemon, RawFilePath, RawHopsfs, RawMetrics, RawMysql,
    RawRepository, RawRestore, RawRetention, RawRondb, RawSchedule, RawSsh,
};
use super::secret::{check_credential, check_file};
use super::spans::{self, KeyPath, Seg, SpanIndex};
use super::{
    BackupSettings, BlockStorage, ConfigError, ConfigErrors, DaemonSettings, DataNodeSettings,
    FilePathSettings, HopsfsDatanodeSettings, HopsfsSettings, JobKind, MetricsSettings,
    MysqlDumpMode, MysqlSettings, NodeHost, RepositorySettings, RestoreSettings, RetentionSettings,
    RondbSettings, S3Settings, ScheduleSettings, Secret, SecretEnv, Settings, SshConfig,
};

pub(crate) const DEFAULT_SOCKET: &str = "/run/hopsdr/hopsdr.sock";
pub(crate) const DEFAULT_SOCKET_GROUP: &str = "hopsdr";
pub(crate) const DEFAULT_CATALOG: &str = "/var/lib/hopsdr/catalog.db";
pub(crate) const DEFAULT_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(60);
pub(crate) const DEFAULT_CLIENT_TIMEOUT: Duration = Duration::from_secs(10);
pub(crate) const MAX_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(3600);
pub(crate) const DEFAULT_LOG_LEVEL: &str = "info";
pub(crate) const LOG_LEVELS: &[&str] = &["error", "warn", "info", "debug", "trace"];
pub(crate) const DEFAULT_METRICS_LISTEN: &str = "127.0.0.1:9741";
pub(crate) const REPOSITORY_TYPES: &[&str] = &["local", "s3"];
pub(crate) const DEFAULT_REPOSITORY_PATH: &str = "/srv/hopsdr/repository";
pub(crate) const DEFAULT_COMPRESSION_LEVEL: i64 = 1;
pub(crate) const COMPRESSION_LEVELS: std::ops::RangeInclusive<i64> = 1..=19;
/// `[backup.files] paths` when not given: (path, optional).
pub(crate) const DEFAULT_BACKUP_FILES: &[(&str, bool)] = &[
    (
        "/home/ubuntu/cluster-defns/hopsworks-installation.yml",
        false,
    ),
    ("/etc/hopsdr/hopsdr.toml", true),
];
pub(crate) const DEFAULT_TIMEZONE: chrono_tz::Tz = chrono_tz::UTC;
pub(crate) const DEFAULT_MYSQL_PORT: u16 = 3306;
pub(crate) const DEFAULT_HOPSFS_VOLUME: &str = "/srv/hops/hopsdata/hdfs/dn";
pub(crate) const DEFAULT_MYSQLPUMP: &str = "/srv/hops/mysql/bin/mysqlpump";
pub(crate) const DEFAULT_MGM_CLIENT: &str = "/srv/hops/mysql-cluster/ndb/scripts/mgm-client.sh";
pub(crate) const DEFAULT_NDB_BACKUP_DIR: &str = "/srv/hops/mysql-cluster/ndb/backups";
pub(crate) const DEFAULT_BACKUP_TIMEOUT: Duration = Duration::from_secs(6 * 3600);
pub(crate) const DEFAULT_COMMAND_TIMEOUT: Duration = Duration::from_secs(120);
pub(crate) const DEFAULT_SSH: &str = "/usr/bin/ssh";
pub(crate) const DEFAULT_SSH_USER: &str = "root";
pub(crate) const DEFAULT_SSH_IDENTITY: &str = "/etc/hopsdr/ssh/id_ed25519";
pub(crate) const DEFAULT_SSH_KNOWN_HOSTS: &str = "/etc/hopsdr/ssh/known_hosts";
pub(crate) const DEFAULT_SSH_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// The largest node id RonDB allows.
const MAX_NDB_NODE_ID: i64 = 255;
/// `sun_path` holds 108 bytes including the terminating NUL.
const MAX_SOCKET_PATH_LEN: usize = 107;
const MAX_SCHEDULE_NAME_LEN: usize = 64;
const MAX_GROUP_NAME_LEN: usize = 256;

pub(crate) fn parse(
    text: &str,
    file_label: &str,
    path: PathBuf,
    env: &SecretEnv,
) -> Result<Settings, ConfigErrors> {
    let doc = DeTable::parse(text).map_err(|e| syntax_error(text, file_label, &e))?;
    let span = doc.span();
    let doc = doc.into_inner();
    let index = SpanIndex::new(text, &doc);
    let mut v = Validator::new(file_label, &index);
    let settings = v
        .deserialize(doc, span)
        .map(|raw| v.settings(raw, path, env));
    match settings {
        Some(settings) if v.errors.is_empty() => Ok(settings),
        _ => {
            let mut errors = ConfigErrors(v.errors);
            errors.sort();
            Err(errors)
        }
    }
}

/// `[daemon] socket` only, for the CLI; everything else is ignored.
pub(crate) fn socket_path(text: &str, file_label: &str) -> Result<PathBuf, ConfigErrors> {
    let doc = DeTable::parse(text).map_err(|e| syntax_error(text, file_label, &e))?;
    let doc = doc.into_inner();
    let index = SpanIndex::new(text, &doc);
    let mut v = Validator::new(file_label, &index);
    let daemon = KeyPath::root().key("daemon");
    let key = daemon.key("socket");
    let socket = match doc.get("daemon").map(|d| d.get_ref()) {
        None => None,
        Some(toml::de::DeValue::Table(table)) => match table.get("socket").map(|s| s.get_ref()) {
            None => None,
            Some(toml::de::DeValue::String(s)) => Some(s.to_string()),
            Some(other) => {
                v.error(&key, expected_string(other.type_str()));
                None
            }
        },
        Some(other) => {
            v.error(
                &daemon,
                format!("invalid type: {}, expected a table", other.type_str()),
            );
            None
        }
    };
    let path = v.socket(&key, socket);
    if v.errors.is_empty() {
        Ok(path)
    } else {
        Err(ConfigErrors(v.errors))
    }
}

fn syntax_error(text: &str, file_label: &str, e: &toml::de::Error) -> ConfigErrors {
    let line = e.span().map(|span| {
        let end = span.start.min(text.len());
        text.as_bytes()[..end]
            .iter()
            .filter(|&&b| b == b'\n')
            .count()
            + 1
    });
    ConfigErrors::from(ConfigError {
        file: file_label.to_string(),
        line,
        key: String::new(),
        message: format!("invalid TOML: {}", first_line(e.message())),
    })
}

/// The first non-empty line of a (possibly multi-line) message.
fn first_line(message: &str) -> String {
    message
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("invalid value")
        .to_string()
}

/// serde's message for a value of the wrong type, in TOML's words (`table`, `array`,
/// `integer`) rather than Rust's (`struct RawDaemon`, `sequence`, `i64`).
fn type_error_message(message: &str) -> String {
    let message = first_line(message);
    let (head, expected) = match message.split_once(", expected ") {
        Some((head, expected)) => (head.to_string(), Some(expected)),
        None => (message.clone(), None),
    };
    let head = head
        .replace("invalid type: sequence", "invalid type: array")
        .replace("invalid type: map", "invalid type: table");
    let expected = match expected {
        None => return head,
        Some(e) if e.starts_with("struct ") && head.starts_with("invalid length") => {
            return "invalid type: array, expected a table".to_string()
        }
        Some(e) if e.starts_with("struct ") => "a table",
        Some("a sequence") => "an array",
        Some("i64") => "an integer",
        Some("u16") => "an integer from 0 to 65535",
        Some(e) => e,
    };
    format!("{head}, expected {expected}")
}

fn expected_string(found: &str) -> String {
    format!("invalid type: {found}, expected a string")
}

fn comma_list(items: &[&str]) -> String {
    items.join(", ")
}

struct Validator<'a> {
    file: &'a str,
    index: &'a SpanIndex,
    errors: Vec<ConfigError>,
    /// Paths with a type error: nothing more is said about them or what is inside them.
    broken: Vec<KeyPath>,
}

impl<'a> Validator<'a> {
    fn new(file: &'a str, index: &'a SpanIndex) -> Self {
        Validator {
            file,
            index,
            errors: Vec::new(),
            broken: Vec::new(),
        }
    }

    fn error(&mut self, path: &KeyPath, message: impl Into<String>) {
        if self.broken.iter().any(|b| path.starts_with(b)) {
            return;
        }
        self.errors.push(ConfigError {
            file: self.file.to_string(),
            line: self.index.line(path),
            key: path.to_string(),
            message: message.into(),
        });
    }

    fn missing(&mut self, path: &KeyPath, example: &str) {
        self.error(path, format!("required key is missing: add {example}"));
    }

    fn unknown_key(&mut self, path: &KeyPath) {
        let allowed = allowed_keys(&path.parent().shape());
        if allowed.is_empty() {
            self.error(path, "unknown key");
        } else {
            self.error(
                path,
                format!("unknown key (allowed keys: {})", comma_list(&allowed)),
            );
        }
    }

    /// Deserializes the document into [`RawConfig`]. A value of the wrong type is reported,
    /// taken out of the document, and deserialization is tried again, so that every type error
    /// is found; unknown keys are reported from the final pass. `None` when an error could not
    /// be tied to a key (it is reported without one).
    fn deserialize(&mut self, mut doc: DeTable<'_>, span: Range<usize>) -> Option<RawConfig> {
        loop {
            let de = toml::de::Deserializer::from(Spanned::new(span.clone(), doc.clone()));
            let mut ignored = Vec::new();
            let result: Result<RawConfig, _> =
                serde_ignored::deserialize(de, |p| ignored.push(spans::from_ignored(&p)));
            match result {
                Ok(raw) => {
                    for path in &ignored {
                        self.unknown_key(path);
                    }
                    return Some(raw);
                }
                Err(e) => {
                    let message = type_error_message(e.message());
                    let path = e.span().and_then(|s| self.index.path_at(&s));
                    match path {
                        Some(path) if !path.0.is_empty() && spans::take_out(&mut doc, &path) => {
                            self.error(&path, message);
                            self.broken.push(path);
                        }
                        _ => {
                            let line = e.span().map(|s| self.index.line_of_offset(s.start));
                            self.errors.push(ConfigError {
                                file: self.file.to_string(),
                                line,
                                key: String::new(),
                                message,
                            });
                            return None;
                        }
                    }
                }
            }
        }
    }

    fn settings(&mut self, raw: RawConfig, path: PathBuf, env: &SecretEnv) -> Settings {
        let root = KeyPath::root();
        let daemon = self.daemon(&root.key("daemon"), raw.daemon.unwrap_or_default());
        let metrics = self.metrics(&root.key("metrics"), raw.metrics.unwrap_or_default());
        let repository = self.repository(
            &root.key("repository"),
            raw.repository.unwrap_or_default(),
            env,
        );
        let backup = self.backup(&root.key("backup"), raw.backup.unwrap_or_default());
        let schedules = self.schedules(&root.key("schedule"), raw.schedule.unwrap_or_default());
        let mysql = raw
            .mysql
            .and_then(|m| self.mysql(&root.key("mysql"), m, env));
        let rondb = raw.rondb.map(|r| self.rondb(&root.key("rondb"), r));
        let ssh = self.ssh(&root.key("ssh"), raw.ssh.unwrap_or_default());
        let hopsfs = raw.hopsfs.map(|h| self.hopsfs(&root.key("hopsfs"), h));
        let restore = self.restore(&root.key("restore"), raw.restore.unwrap_or_default());
        let retention = self.retention(&root.key("retention"), raw.retention.unwrap_or_default());
        if hopsfs.is_some() && rondb.is_none() {
            self.error(
                &root.key("hopsfs"),
                "[hopsfs] needs [rondb]: the blocks are taken consistent with the RonDB backup (and its metadata says which blocks exist)",
            );
        }
        Settings {
            path,
            daemon,
            metrics,
            repository,
            backup,
            schedules,
            mysql,
            rondb,
            ssh,
            hopsfs,
            restore,
            retention,
        }
    }

    fn retention(&mut self, p: &KeyPath, raw: RawRetention) -> RetentionSettings {
        let mut count = |key: &str, v: Option<i64>| -> Option<u32> {
            match v {
                None => None,
                Some(n) if (0..=1_000_000).contains(&n) => Some(n as u32),
                Some(n) => {
                    self.error(
                        &p.key(key),
                        format!("{key} = {n} is out of range: use a count from 0 to 1000000"),
                    );
                    None
                }
            }
        };
        let keep_last = count("keep_last", raw.keep_last);
        let keep_hourly = count("keep_hourly", raw.keep_hourly);
        let keep_daily = count("keep_daily", raw.keep_daily);
        let keep_weekly = count("keep_weekly", raw.keep_weekly);
        let keep_monthly = count("keep_monthly", raw.keep_monthly);
        let keep_yearly = count("keep_yearly", raw.keep_yearly);
        let min_verified = count("min_verified", raw.min_verified).unwrap_or(1);
        let keep_within = raw.keep_within.map(|v| {
            let d = self.duration(&p.key("keep_within"), Some(v), Duration::from_secs(1));
            chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX)
        });
        let timezone = match raw.timezone {
            None => DEFAULT_TIMEZONE,
            Some(tz) => tz.parse::<chrono_tz::Tz>().unwrap_or_else(|_| {
                self.error(
                    &p.key("timezone"),
                    format!("unknown time zone {tz:?}: use an IANA time zone name such as \"Europe/Berlin\" or \"UTC\""),
                );
                DEFAULT_TIMEZONE
            }),
        };
        RetentionSettings {
            policy: crate::retention::RetentionPolicy {
                keep_last,
                keep_hourly,
                keep_daily,
                keep_weekly,
                keep_monthly,
                keep_yearly,
                keep_within,
                timezone,
                min_verified,
            },
            prune_after_backup: raw.prune_after_backup.unwrap_or(true),
        }
    }

    fn command(
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

    fn restore(&mut self, p: &KeyPath, raw: RawRestore) -> RestoreSettings {
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

    /// `db.table` names for ndb_restore's `--exclude-tables` (no commas, no spaces).
    fn table_names(
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
    fn unit_names(&mut self, p: &KeyPath, value: Option<Vec<String>>) -> Vec<String> {
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
    fn volume_map(
        &mut self,
        p: &KeyPath,
        value: Option<std::collections::BTreeMap<String, String>>,
    ) -> Vec<(String, String)> {
        let mut out = Vec::new();
        for (from, to) in value.unwrap_or_default() {
            for v in [&from, &to] {
                if super::parse_volume_ref(v).is_none() {
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

    fn hopsfs(&mut self, p: &KeyPath, raw: RawHopsfs) -> HopsfsSettings {
        let block_storage = match raw.block_storage.as_deref() {
            None | Some("local") => BlockStorage::Local,
            Some("cloud") => BlockStorage::Cloud,
            Some(other) => {
                self.error(
                    &p.key("block_storage"),
                    format!("unknown block storage {other:?}: use \"local\" (blocks on the datanodes' volumes) or \"cloud\""),
                );
                BlockStorage::Local
            }
        };
        let referenced_blocks = match raw.referenced_blocks {
            None => None,
            Some(argv) if argv.first().is_some_and(|a| a.starts_with('/')) => Some(argv),
            Some(_) => {
                self.error(
                    &p.key("referenced_blocks"),
                    "give the command as a list starting with an absolute path",
                );
                None
            }
        };
        let copy_timeout = self.duration(
            &p.key("copy_timeout"),
            raw.copy_timeout,
            DEFAULT_BACKUP_TIMEOUT,
        );
        let list = p.key("datanodes");
        let mut datanodes: Vec<HopsfsDatanodeSettings> = Vec::new();
        for (i, d) in raw.datanodes.unwrap_or_default().into_iter().enumerate() {
            let item = list.index(i);
            let host = self.host(&item.key("host"), d.host.clone());
            let name = d.name.or(d.host).unwrap_or_else(|| "local".to_string());
            if name.is_empty()
                || !name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
            {
                self.error(
                    &item.key("name"),
                    format!(
                        "invalid datanode name {name:?}: use letters, digits, '.', '_' and '-'"
                    ),
                );
            }
            if datanodes.iter().any(|x| x.name == name) {
                self.error(
                    &item.key("name"),
                    format!("duplicate datanode name {name:?}: give each datanode its own name"),
                );
                continue;
            }
            let vols = d
                .volumes
                .unwrap_or_else(|| vec![DEFAULT_HOPSFS_VOLUME.to_string()]);
            if vols.is_empty() {
                self.error(
                    &item.key("volumes"),
                    "no volumes: list the datanode's dfs.datanode.data.dir entries",
                );
            }
            let mut volumes = Vec::new();
            for v in vols {
                let v = v.strip_prefix("[DISK]").unwrap_or(&v).to_string();
                let path = self.absolute(&item.key("volumes"), Some(v), "");
                if volumes.contains(&path) {
                    self.error(&item.key("volumes"), format!("duplicate volume {path:?}"));
                    continue;
                }
                volumes.push(path);
            }
            datanodes.push(HopsfsDatanodeSettings {
                name,
                host,
                volumes,
            });
        }
        if block_storage == BlockStorage::Local && datanodes.is_empty() {
            self.error(
                &list,
                "no datanodes: list every HopsFS datanode ([[hopsfs.datanodes]] with host and volumes); every one must be copied",
            );
        }
        HopsfsSettings {
            block_storage,
            referenced_blocks,
            copy_timeout,
            datanodes,
        }
    }

    fn duration(&mut self, p: &KeyPath, value: Option<String>, default: Duration) -> Duration {
        let Some(value) = value else {
            return default;
        };
        match humantime::parse_duration(&value) {
            Ok(d) if !d.is_zero() => d,
            Ok(_) => {
                self.error(
                    p,
                    format!("duration {value:?} is zero: use a duration greater than 0, such as \"60s\""),
                );
                default
            }
            Err(e) => {
                self.error(
                    p,
                    format!(
                        "invalid duration {value:?}: {e}: use a duration such as \"60s\" or \"5m\""
                    ),
                );
                default
            }
        }
    }

    fn host(&mut self, p: &KeyPath, value: Option<String>) -> NodeHost {
        match value.as_deref() {
            None | Some("local") => NodeHost::Local,
            Some(h)
                if h.is_empty()
                    || h.starts_with('-')
                    || h.chars()
                        .any(|c| c.is_whitespace() || c.is_control() || c == '@') =>
            {
                self.error(
                    p,
                    format!("invalid host {h:?}: use \"local\", a host name or an IP address (the user goes in [ssh] user)"),
                );
                NodeHost::Local
            }
            Some(h) => NodeHost::Remote(h.to_string()),
        }
    }

    fn rondb(&mut self, p: &KeyPath, raw: RawRondb) -> RondbSettings {
        let mgm_client = match raw.mgm_client {
            None => vec![DEFAULT_MGM_CLIENT.to_string()],
            Some(argv) if argv.is_empty() || argv[0].is_empty() => {
                self.error(
                    &p.key("mgm_client"),
                    format!("the management client is empty: give its path and arguments, e.g. [\"{DEFAULT_MGM_CLIENT}\"]"),
                );
                vec![DEFAULT_MGM_CLIENT.to_string()]
            }
            Some(argv) => {
                if !argv[0].starts_with('/') {
                    self.error(
                        &p.key("mgm_client"),
                        format!("program {:?} is relative: use an absolute path", argv[0]),
                    );
                }
                argv
            }
        };
        let mgm_host = self.host(&p.key("mgm_host"), raw.mgm_host);
        let backup_dir =
            self.absolute(&p.key("backup_dir"), raw.backup_dir, DEFAULT_NDB_BACKUP_DIR);
        let backup_timeout = self.duration(
            &p.key("backup_timeout"),
            raw.backup_timeout,
            DEFAULT_BACKUP_TIMEOUT,
        );
        let command_timeout = self.duration(
            &p.key("command_timeout"),
            raw.command_timeout,
            DEFAULT_COMMAND_TIMEOUT,
        );
        let list = p.key("data_nodes");
        let mut data_nodes: Vec<DataNodeSettings> = Vec::new();
        for (i, n) in raw.data_nodes.unwrap_or_default().into_iter().enumerate() {
            let item = list.index(i);
            let id = match n.id {
                None => {
                    self.missing(&item.key("id"), "id = 1");
                    continue;
                }
                Some(id) if !(1..=MAX_NDB_NODE_ID).contains(&id) => {
                    self.error(
                        &item.key("id"),
                        format!("node id {id} is out of range: RonDB node ids are 1 to {MAX_NDB_NODE_ID}"),
                    );
                    continue;
                }
                Some(id) => id as u32,
            };
            if data_nodes.iter().any(|d| d.id == id) {
                self.error(
                    &item.key("id"),
                    format!("duplicate data node id {id}: list each node once"),
                );
                continue;
            }
            let host = self.host(&item.key("host"), n.host);
            let backup_dir = n
                .backup_dir
                .map(|d| self.absolute(&item.key("backup_dir"), Some(d), ""));
            data_nodes.push(DataNodeSettings {
                id,
                host,
                backup_dir,
            });
        }
        RondbSettings {
            mgm_client,
            mgm_host,
            backup_dir,
            backup_timeout,
            command_timeout,
            keep_node_copies: raw.keep_node_copies.unwrap_or(false),
            ndb_show_tables: self.command(
                &p.key("ndb_show_tables"),
                raw.ndb_show_tables,
                &["/srv/hops/mysql/bin/ndb_show_tables"],
            ),
            data_nodes,
        }
    }

    fn ssh(&mut self, p: &KeyPath, raw: RawSsh) -> SshConfig {
        let user = raw.user.unwrap_or_else(|| DEFAULT_SSH_USER.to_string());
        if user.is_empty()
            || user.starts_with('-')
            || user.chars().any(|c| c.is_whitespace() || c == '@')
        {
            self.error(&p.key("user"), format!("invalid user name {user:?}"));
        }
        let port = raw.port.unwrap_or(22);
        if port == 0 {
            self.error(&p.key("port"), "port 0 is not valid: use 1 to 65535");
        }
        SshConfig {
            ssh: self.absolute(&p.key("ssh"), raw.ssh, DEFAULT_SSH),
            user,
            port,
            identity_file: self.absolute(
                &p.key("identity_file"),
                raw.identity_file,
                DEFAULT_SSH_IDENTITY,
            ),
            known_hosts: self.absolute(
                &p.key("known_hosts"),
                raw.known_hosts,
                DEFAULT_SSH_KNOWN_HOSTS,
            ),
            connect_timeout: self.duration(
                &p.key("connect_timeout"),
                raw.connect_timeout,
                DEFAULT_SSH_CONNECT_TIMEOUT,
            ),
        }
    }

    fn daemon(&mut self, p: &KeyPath, raw: RawDaemon) -> DaemonSettings {
        let socket = self.socket(&p.key("socket"), raw.socket);
        let socket_group = self.group(
            &p.key("socket_group"),
            raw.socket_group
                .unwrap_or_else(|| DEFAULT_SOCKET_GROUP.to_string()),
        );
        let operator_group = raw
            .operator_group
            .map(|g| self.group(&p.key("operator_group"), g));
        let catalog = self.absolute(&p.key("catalog"), raw.catalog, DEFAULT_CATALOG);
        let shutdown_timeout =
            self.shutdown_timeout(&p.key("shutdown_timeout"), raw.shutdown_timeout);
        let client_timeout = self.duration(
            &p.key("client_timeout"),
            raw.client_timeout,
            DEFAULT_CLIENT_TIMEOUT,
        );
        let log_level = match raw.log_level {
            None => DEFAULT_LOG_LEVEL.to_string(),
            Some(level) if LOG_LEVELS.contains(&level.as_str()) => level,
            Some(level) => {
                self.error(
                    &p.key("log_level"),
                    format!(
                        "unknown log level {level:?}: use one of {}",
                        comma_list(LOG_LEVELS)
                    ),
                );
                DEFAULT_LOG_LEVEL.to_string()
            }
        };
        DaemonSettings {
            socket,
            socket_group,
            operator_group,
            catalog,
            shutdown_timeout,
            client_timeout,
            log_level,
        }
    }

    fn socket(&mut self, p: &KeyPath, value: Option<String>) -> PathBuf {
        let socket = self.absolute(p, value, DEFAULT_SOCKET);
        let len = socket.as_os_str().len();
        if len > MAX_SOCKET_PATH_LEN {
            self.error(
                p,
                format!(
                    "socket path {socket:?} is {len} bytes long: Unix sockets allow at most {MAX_SOCKET_PATH_LEN}, use a shorter path"
                ),
            );
        }
        socket
    }

    fn group(&mut self, p: &KeyPath, name: String) -> String {
        let valid_chars = name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
        let all_digits = name.chars().all(|c| c.is_ascii_digit());
        if name.is_empty()
            || name.len() > MAX_GROUP_NAME_LEN
            || !valid_chars
            || all_digits
            || name.starts_with('-')
        {
            self.error(
                p,
                format!(
                    "invalid group name {name:?}: use the name of a Unix group (letters, digits, \"_\", \"-\" and \".\"; not a number)"
                ),
            );
        }
        name
    }

    /// An absolute path without `..` (`default` when absent).
    fn absolute(&mut self, p: &KeyPath, value: Option<String>, default: &str) -> PathBuf {
        let Some(value) = value else {
            return PathBuf::from(default);
        };
        let path = PathBuf::from(&value);
        if !path.is_absolute() {
            self.error(
                p,
                format!("path {value:?} is relative: use an absolute path (starting with \"/\")"),
            );
        } else if path.components().any(|c| c == Component::ParentDir) {
            self.error(
                p,
                format!("path {value:?} contains \"..\": write the path without \"..\""),
            );
        }
        path
    }

    fn shutdown_timeout(&mut self, p: &KeyPath, value: Option<String>) -> Duration {
        let Some(value) = value else {
            return DEFAULT_SHUTDOWN_TIMEOUT;
        };
        match humantime::parse_duration(&value) {
            Err(e) => self.error(
                p,
                format!(
                    "invalid duration {value:?}: {e}: use a duration such as \"60s\" or \"5m\""
                ),
            ),
            Ok(d) if d.is_zero() => self.error(
                p,
                format!(
                    "duration {value:?} is zero: use a duration greater than 0, such as \"60s\""
                ),
            ),
            Ok(d) if d > MAX_SHUTDOWN_TIMEOUT => self.error(
                p,
                format!("duration {value:?} is too long: use at most \"1h\""),
            ),
            Ok(d) => return d,
        }
        DEFAULT_SHUTDOWN_TIMEOUT
    }

    fn metrics(&mut self, p: &KeyPath, raw: RawMetrics) -> MetricsSettings {
        let listen = raw.listen.as_deref().unwrap_or(DEFAULT_METRICS_LISTEN);
        let addr = match listen.parse::<SocketAddr>() {
            Ok(addr) => Some(addr),
            Err(_) => {
                self.error(
                    &p.key("listen"),
                    format!(
                        "invalid listen address {listen:?}: use IP:PORT such as \"127.0.0.1:9741\" or \"[::1]:9741\" (not a host name)"
                    ),
                );
                None
            }
        };
        MetricsSettings {
            listen: if raw.enabled.unwrap_or(true) {
                addr
            } else {
                None
            },
        }
    }

    fn repository(
        &mut self,
        p: &KeyPath,
        mut raw: RawRepository,
        env: &SecretEnv,
    ) -> RepositorySettings {
        if raw.r#type.as_deref() == Some("s3") {
            let compression_level = self.compression_level(p, raw.compression_level);
            return RepositorySettings::S3(Box::new(self.s3(p, &mut raw, compression_level, env)));
        }
        for (key, set) in [
            ("endpoint", raw.endpoint.is_some()),
            ("bucket", raw.bucket.is_some()),
            ("secret_access_key", raw.secret_access_key.is_some()),
        ] {
            if set {
                self.error(
                    &p.key(key),
                    format!(
                        "{key} is for type = \"s3\" repositories: remove it or set type = \"s3\""
                    ),
                );
            }
        }
        if let Some(kind) = &raw.r#type {
            if !REPOSITORY_TYPES.contains(&kind.as_str()) {
                self.error(
                    &p.key("type"),
                    format!(
                        "unsupported repository type {kind:?}: allowed types: {}",
                        comma_list(REPOSITORY_TYPES)
                    ),
                );
            }
        }
        let path = self.absolute(&p.key("path"), raw.path, DEFAULT_REPOSITORY_PATH);
        let compression_level = self.compression_level(p, raw.compression_level);
        RepositorySettings::Local {
            path,
            compression_level,
        }
    }

    fn compression_level(&mut self, p: &KeyPath, level: Option<i64>) -> i32 {
        let level = level.unwrap_or(DEFAULT_COMPRESSION_LEVEL);
        if COMPRESSION_LEVELS.contains(&level) {
            level as i32
        } else {
            self.error(
                &p.key("compression_level"),
                format!(
                    "compression level {level} is out of range: use {} (fastest) to {} (smallest)",
                    COMPRESSION_LEVELS.start(),
                    COMPRESSION_LEVELS.end()
                ),
            );
            DEFAULT_COMPRESSION_LEVEL as i32
        }
    }

    fn s3(
        &mut self,
        p: &KeyPath,
        raw: &mut RawRepository,
        compression_level: i32,
        env: &SecretEnv,
    ) -> S3Settings {
        if raw.path.is_some() {
            self.error(
                &p.key("path"),
                "path is for type = \"local\" repositories: an s3 repository has bucket and prefix",
            );
        }
        let bucket = match raw.bucket.take() {
            None => {
                self.missing(&p.key("bucket"), "bucket = \"hopsdr-backups\"");
                String::new()
            }
            Some(b) => {
                let ok = (3..=63).contains(&b.len())
                    && b.chars().all(|c| {
                        c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.'
                    })
                    && !b.starts_with(['-', '.'])
                    && !b.ends_with(['-', '.']);
                if !ok {
                    self.error(
                        &p.key("bucket"),
                        format!("invalid bucket name {b:?}: use 3 to 63 characters from a-z, 0-9, '-' and '.'"),
                    );
                }
                b
            }
        };
        let endpoint = raw.endpoint.take().inspect(|e| {
            let ok = (e.starts_with("https://") || e.starts_with("http://"))
                && e.len() > "https://".len()
                && !e.chars().any(char::is_whitespace);
            if !ok {
                self.error(
                    &p.key("endpoint"),
                    format!(
                        "invalid endpoint {e:?}: use a URL such as \"https://s3.example.org:9000\""
                    ),
                );
            }
        });
        let prefix = raw.prefix.take().unwrap_or_default();
        let prefix = prefix.trim_matches('/').to_string();
        if !prefix.is_empty() {
            if let Err(e) = crate::repository::validate_key(&prefix) {
                self.error(&p.key("prefix"), format!("invalid prefix {prefix:?}: {e}"));
            }
        }
        let secret_given = raw.secret_access_key.is_some();
        let secret_access_key = raw
            .secret_access_key
            .take()
            .and_then(|v| self.secret(&p.key("secret_access_key"), Some(v), env));
        let access_key_id = raw.access_key_id.take();
        if access_key_id.is_some() != secret_given {
            self.error(
                &p.key("access_key_id"),
                "give access_key_id and secret_access_key together, or neither (the AWS environment or instance credentials are then used)",
            );
        }
        let ca_bundle = raw
            .ca_bundle
            .take()
            .map(|c| self.absolute(&p.key("ca_bundle"), Some(c), ""));
        let part_size = match raw.part_size_mib {
            None => 16 << 20,
            Some(n) if (5..=5120).contains(&n) => (n as usize) << 20,
            Some(n) => {
                self.error(
                    &p.key("part_size_mib"),
                    format!("part_size_mib = {n} is out of range: S3 parts are 5 to 5120 MiB"),
                );
                16 << 20
            }
        };
        let parallel_parts = match raw.parallel_parts {
            None => 4,
            Some(n) if (1..=64).contains(&n) => n as usize,
            Some(n) => {
                self.error(
                    &p.key("parallel_parts"),
                    format!("parallel_parts = {n} is out of range: use 1 to 64"),
                );
                4
            }
        };
        let bandwidth_limit = match raw.bandwidth_limit_mib {
            None => None,
            Some(m) if m > 0.0 && m.is_finite() => Some((m * (1u64 << 20) as f64) as u64),
            Some(m) => {
                self.error(
                    &p.key("bandwidth_limit_mib"),
                    format!("bandwidth_limit_mib = {m} must be above 0 (MiB per second); remove it for no limit"),
                );
                None
            }
        };
        S3Settings {
            endpoint,
            region: raw.region.take().unwrap_or_else(|| "us-east-1".to_string()),
            bucket,
            prefix,
            path_style: raw.path_style.unwrap_or(false),
            access_key_id,
            secret_access_key,
            ca_bundle,
            compression_level,
            part_size,
            parallel_parts,
            bandwidth_limit,
        }
    }

    fn backup(&mut self, p: &KeyPath, raw: RawBackup) -> BackupSettings {
        let p = p.key("files").key("paths");
        let Some(entries) = raw.files.and_then(|f| f.paths) else {
            return BackupSettings {
                files: DEFAULT_BACKUP_FILES
                    .iter()
                    .map(|&(path, optional)| FilePathSettings {
                        path: PathBuf::from(path),
                        optional,
                    })
                    .collect(),
            };
        };
        let mut files: Vec<(usize, FilePathSettings)> = Vec::new();
        for (i, RawFilePath { path, optional }) in entries.into_iter().enumerate() {
            let item = p.index(i);
            let key = item.key("path");
            let Some(path) = path else {
                self.missing(&key, "path = \"/absolute/path\"");
                continue;
            };
            let path = self.absolute(&key, Some(path), "");
            if let Some((first, _)) = files.iter().find(|(_, f)| f.path == path) {
                let first = p.index(*first).key("path");
                self.error(
                    &key,
                    format!("duplicate path {path:?}: already listed as {first}; remove one"),
                );
                continue;
            }
            files.push((
                i,
                FilePathSettings {
                    path,
                    optional: optional.unwrap_or(false),
                },
            ));
        }
        BackupSettings {
            files: files.into_iter().map(|(_, f)| f).collect(),
        }
    }

    fn schedules(&mut self, p: &KeyPath, raw: Vec<RawSchedule>) -> Vec<ScheduleSettings> {
        let mut schedules = Vec::new();
        let mut names: Vec<(String, usize)> = Vec::new();
        for (i, raw) in raw.into_iter().enumerate() {
            let item = p.index(i);
            let name = match raw.name {
                None => {
                    self.missing(&item.key("name"), "name = \"nightly\"");
                    None
                }
                Some(name) => {
                    if let Some((_, first)) = names.iter().find(|(n, _)| *n == name) {
                        let first = p.index(*first);
                        self.error(
                            &item.key("name"),
                            format!(
                                "duplicate schedule name {name:?}: already used by {first}; give each schedule its own name"
                            ),
                        );
                    } else if !valid_schedule_name(&name) {
                        self.error(
                            &item.key("name"),
                            format!(
                                "invalid schedule name {name:?}: use 1 to {MAX_SCHEDULE_NAME_LEN} characters from a-z, 0-9, \"_\" and \"-\""
                            ),
                        );
                    }
                    names.push((name.clone(), i));
                    Some(name)
                }
            };
            let cron = match raw.cron {
                None => {
                    self.missing(
                        &item.key("cron"),
                        "cron = \"30 2 * * *\" (minute hour day month weekday)",
                    );
                    None
                }
                Some(expr) => match crate::schedule::Cron::parse(&expr) {
                    Ok(cron) => Some(cron),
                    Err(e) => {
                        self.error(&item.key("cron"), e.to_string());
                        None
                    }
                },
            };
            let timezone = match raw.timezone {
                None => Some(DEFAULT_TIMEZONE),
                Some(tz) => match tz.parse::<chrono_tz::Tz>() {
                    Ok(tz) => Some(tz),
                    Err(_) => {
                        self.error(
                            &item.key("timezone"),
                            format!(
                                "unknown time zone {tz:?}: use an IANA time zone name such as \"Europe/Berlin\" or \"UTC\""
                            ),
                        );
                        None
                    }
                },
            };
            let job = match raw.job {
                None => {
                    self.missing(&item.key("job"), "job = \"backup\"");
                    None
                }
                Some(job) => match JobKind::ALL.iter().find(|k| k.as_str() == job) {
                    Some(kind) => Some(*kind),
                    None => {
                        let allowed: Vec<&str> = JobKind::ALL.iter().map(|k| k.as_str()).collect();
                        self.error(
                            &item.key("job"),
                            format!(
                                "unknown job {job:?}: allowed jobs: {}",
                                comma_list(&allowed)
                            ),
                        );
                        None
                    }
                },
            };
            if let (Some(name), Some(cron), Some(timezone), Some(job)) = (name, cron, timezone, job)
            {
                schedules.push(ScheduleSettings {
                    name,
                    cron,
                    timezone,
                    job,
                    catch_up: raw.catch_up.unwrap_or(true),
                });
            }
        }
        schedules
    }

    fn mysql(&mut self, p: &KeyPath, raw: RawMysql, env: &SecretEnv) -> Option<MysqlSettings> {
        let user = match raw.user {
            None => {
                self.missing(&p.key("user"), "user = \"hopsdr\"");
                None
            }
            Some(user) if user.is_empty() => {
                self.error(&p.key("user"), "user is empty: give the MySQL user name");
                None
            }
            Some(user) => Some(user),
        };
        let password = self.secret(&p.key("password"), raw.password, env);
        let socket = raw
            .socket
            .map(|s| self.absolute(&p.key("socket"), Some(s), ""));
        if let Some(host) = &raw.host {
            if host.is_empty() || host.chars().any(|c| c.is_whitespace() || c.is_control()) {
                self.error(
                    &p.key("host"),
                    format!("invalid host {host:?}: use a host name or IP address"),
                );
            }
        }
        match (&socket, &raw.host) {
            (Some(_), Some(_)) => self.error(
                &p.key("host"),
                "both socket and host are set: keep only one of them",
            ),
            (None, None) => self.error(
                p,
                "no connection given: add socket = \"/path/to/mysql.sock\" or host = \"name\"",
            ),
            (Some(_), None) if raw.port.is_some() => self.error(
                &p.key("port"),
                "port is only used with host: remove it or use host instead of socket",
            ),
            _ => {}
        }
        let port = raw.port.unwrap_or(DEFAULT_MYSQL_PORT);
        if port == 0 {
            self.error(&p.key("port"), "port 0 is not valid: use 1 to 65535");
        }
        let mode = match raw.mode.as_deref() {
            None | Some("native") => MysqlDumpMode::Native,
            Some("mysqlpump") => MysqlDumpMode::Mysqlpump,
            Some(other) => {
                self.error(
                    &p.key("mode"),
                    format!("unknown mode {other:?}: use \"native\" or \"mysqlpump\""),
                );
                MysqlDumpMode::Native
            }
        };
        let mysqlpump = match raw.mysqlpump {
            None => vec![DEFAULT_MYSQLPUMP.to_string()],
            Some(argv) if argv.first().is_some_and(|a| a.starts_with('/')) => argv,
            Some(_) => {
                self.error(
                    &p.key("mysqlpump"),
                    format!("give the command as a list starting with an absolute path, e.g. [\"{DEFAULT_MYSQLPUMP}\"]"),
                );
                vec![DEFAULT_MYSQLPUMP.to_string()]
            }
        };
        let exclude_users = raw.exclude_users.unwrap_or_else(|| {
            crate::cluster::mysql::DEFAULT_EXCLUDED_USERS
                .iter()
                .map(|s| s.to_string())
                .collect()
        });
        Some(MysqlSettings {
            user: user?,
            password: password?,
            socket,
            host: raw.host,
            port,
            mode,
            mysqlpump,
            exclude_users,
        })
    }

    fn secret(
        &mut self,
        p: &KeyPath,
        value: Option<toml::Value>,
        env: &SecretEnv,
    ) -> Option<Secret> {
        let short = match p.0.last() {
            Some(Seg::Key(k)) => k.clone(),
            _ => "password".to_string(),
        };
        let table = match value {
            None => {
                self.missing(p, &format!("{short} = {{ file = \"/path\" }}"));
                return None;
            }
            Some(toml::Value::String(_)) => {
                self.error(
                    p,
                    format!(
                        "inline secrets are not allowed: use {short} = {{ file = \"/path\" }} (mode 0600) or {{ credential = \"name\" }} (systemd LoadCredential=)"
                    ),
                );
                return None;
            }
            Some(toml::Value::Table(table)) => table,
            Some(other) => {
                self.error(
                    p,
                    format!(
                        "invalid type: {}, expected a table: use {short} = {{ file = \"/path\" }} or {{ credential = \"name\" }}",
                        other.type_str()
                    ),
                );
                return None;
            }
        };
        let mut unknown = false;
        for k in table.keys() {
            if !allowed_keys(&p.shape()).contains(&k.as_str()) {
                self.unknown_key(&p.key(k));
                unknown = true;
            }
        }
        let string_at = |v: &mut Self, name: &str| -> Option<Option<String>> {
            match table.get(name) {
                None => Some(None),
                Some(toml::Value::String(s)) => Some(Some(s.clone())),
                Some(other) => {
                    v.error(&p.key(name), expected_string(other.type_str()));
                    None
                }
            }
        };
        let (file, credential) = match (string_at(self, "file"), string_at(self, "credential")) {
            (Some(file), Some(credential)) => (file, credential),
            _ => return None,
        };
        match (file, credential) {
            (Some(_), Some(_)) => {
                self.error(p, "both file and credential are set: keep only one of them");
                None
            }
            (None, None) => {
                if !unknown {
                    self.error(
                        p,
                        format!(
                            "no secret given: use {short} = {{ file = \"/path\" }} or {{ credential = \"name\" }}"
                        ),
                    );
                }
                None
            }
            (Some(file), None) => {
                let path = self.absolute(&p.key("file"), Some(file), "");
                if !path.is_absolute() {
                    return None;
                }
                match check_file(&path) {
                    Ok(()) => Some(Secret::File(path)),
                    Err(message) => {
                        self.error(p, message);
                        None
                    }
                }
            }
            (None, Some(name)) => match check_credential(&name, env) {
                Ok(()) => Some(Secret::Credential(name)),
                Err(message) => {
                    self.error(p, message);
                    None
                }
            },
        }
    }
}

fn valid_schedule_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_SCHEDULE_NAME_LEN
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '_' | '-'))
}
