//! From config text to [`Settings`]: parse (syntax errors), deserialize into the raw structs
//! (type errors, unknown keys), then check every value and apply defaults, collecting every
//! error with the line of its key. Defaults live here, as constants; the checks of each group
//! of tables are in the files next to this one (daemon, repository, cluster, restore, jobs).

mod cluster;
mod daemon;
mod jobs;
mod repository;
mod restore;

use std::net::SocketAddr;
use std::ops::Range;
use std::path::{Component, PathBuf};
use std::time::Duration;

use toml::de::DeTable;
use toml::Spanned;

use super::raw::{
    allowed_keys, RawAgents, RawBackup, RawConfig, RawCopy, RawDaemon, RawDrill, RawEncryption,
    RawFilePath, RawHooks, RawHopsfs, RawMetrics, RawMysql, RawOpensearch, RawRepository,
    RawRestore, RawRetention, RawRondb, RawSchedule, RawSsh,
};
use super::secret::{check_credential, check_file};
use super::spans::{self, KeyPath, Seg, SpanIndex};
use super::{
    AgentLink, AgentsSettings, BackupSettings, BlockStorage, ConfigError, ConfigErrors,
    CopySettings, DaemonSettings, DataNodeSettings, DrillSettings, EncryptionSettings,
    FilePathSettings, HooksSettings, HopsfsCloudSettings, HopsfsDatanodeSettings, HopsfsSettings,
    JobKind, MetricsSettings, MysqlDumpMode, MysqlSettings, NodeHost, ObjectLockSettings,
    OpensearchReplace, OpensearchSettings, RepositorySettings, RestoreReplicas, RestoreSettings,
    RetentionSettings, RondbSettings, S3Settings, ScheduleSettings, Secret, SecretEnv, Settings,
    SshConfig, StoreSettings, VersioningPolicy,
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
pub(crate) const DEFAULT_AGENT_BINARY: &str = "/usr/bin/hopsdr";
pub(crate) const DEFAULT_AGENT_TIMEOUT: Duration = Duration::from_secs(60);
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

    /// An IANA time zone (none: `DEFAULT_TIMEZONE`); `None` when it is not one (the error
    /// recorded).
    fn timezone(&mut self, path: &KeyPath, value: Option<String>) -> Option<chrono_tz::Tz> {
        match value {
            None => Some(DEFAULT_TIMEZONE),
            Some(tz) => match tz.parse::<chrono_tz::Tz>() {
                Ok(tz) => Some(tz),
                Err(_) => {
                    self.error(
                        path,
                        format!(
                            "unknown time zone {tz:?}: use an IANA time zone name such as \"Europe/Berlin\" or \"UTC\""
                        ),
                    );
                    None
                }
            },
        }
    }

    /// A bandwidth timetable (none: no limit).
    fn timetable(&mut self, path: &KeyPath, value: Option<String>) -> crate::timetable::Timetable {
        match value.as_deref().map(crate::timetable::Timetable::parse) {
            None => crate::timetable::Timetable::off(),
            Some(Ok(t)) => t,
            Some(Err(e)) => {
                self.error(
                    path,
                    format!("{e} (a rate such as \"10MiB\", \"off\", or slots such as \"08:00,512KiB 18:00,30MiB 23:00,off\" or \"Mon-08:00,1MiB Sat-00:00,off\"; \"10MiB:50MiB\" is upload:download)"),
                );
                crate::timetable::Timetable::off()
            }
        }
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
        let copies = self.copies(
            &root.key("copy"),
            raw.copy.unwrap_or_default(),
            &repository.store,
            env,
        );
        let copy_names: Vec<&str> = copies.iter().map(|c| c.name.as_str()).collect();
        let schedules = self.schedules(
            &root.key("schedule"),
            raw.schedule.unwrap_or_default(),
            &copy_names,
        );
        let mysql = raw
            .mysql
            .and_then(|m| self.mysql(&root.key("mysql"), m, env));
        let rondb = raw.rondb.map(|r| self.rondb(&root.key("rondb"), r, env));
        let ssh = self.ssh(&root.key("ssh"), raw.ssh.unwrap_or_default());
        let agents = self.agents(&root.key("agents"), raw.agents.unwrap_or_default());
        let hopsfs = raw.hopsfs.map(|h| self.hopsfs(&root.key("hopsfs"), h, env));
        let restore = self.restore(&root.key("restore"), raw.restore.unwrap_or_default());
        let retention = self.retention(&root.key("retention"), raw.retention.unwrap_or_default());
        let hooks = self.hooks(&root.key("hooks"), raw.hooks.unwrap_or_default());
        let drill = self.drill(&root.key("drill"), raw.drill.unwrap_or_default());
        let opensearch = raw
            .opensearch
            .map(|o| self.opensearch(&root.key("opensearch"), o, env));
        if opensearch.is_some() && rondb.is_none() {
            self.error(
                &root.key("opensearch"),
                "[opensearch] needs [rondb]: the snapshot is taken at the RonDB backup's consistency point",
            );
        }
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
            agents,
            hopsfs,
            restore,
            retention,
            hooks,
            drill,
            copies,
            opensearch,
        }
    }

    fn opensearch(
        &mut self,
        p: &KeyPath,
        raw: RawOpensearch,
        env: &SecretEnv,
    ) -> OpensearchSettings {
        let url = match raw.url {
            None => {
                self.missing(
                    &p.key("url"),
                    "url = \"https://opensearch.service.consul:9200\"",
                );
                String::new()
            }
            Some(u)
                if (u.starts_with("https://") || u.starts_with("http://"))
                    && !u.contains(char::is_whitespace) =>
            {
                u.trim_end_matches('/').to_string()
            }
            Some(u) => {
                self.error(
                    &p.key("url"),
                    format!("invalid url {u:?}: use https://host:port"),
                );
                String::new()
            }
        };
        let password = self.secret(&p.key("password"), raw.password, env);
        if raw.user.is_some() != password.is_some() {
            self.error(
                &p.key(if raw.user.is_some() {
                    "password"
                } else {
                    "user"
                }),
                "user and password go together (basic authentication): set both or neither",
            );
        }
        let ca_file = raw
            .ca_file
            .map(|c| self.absolute(&p.key("ca_file"), Some(c), "/"));
        let repository = raw.repository.unwrap_or_else(|| "hopsdr".into());
        if repository.is_empty()
            || !repository
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
        {
            self.error(
                &p.key("repository"),
                format!("invalid snapshot repository name {repository:?}: use a-z, 0-9, \"-\" and \"_\""),
            );
        }
        let location = match raw.location {
            None => {
                self.missing(
                    &p.key("location"),
                    "location = \"/srv/hops/opensearch/snapshots/hopsdr\" (under path.repo)",
                );
                String::new()
            }
            Some(l) => self
                .absolute(&p.key("location"), Some(l), "/")
                .display()
                .to_string(),
        };
        let host = self.host(&p.key("host"), raw.host);
        let replace = match raw.replace.as_deref() {
            None | Some("close") => OpensearchReplace::Close,
            Some("delete") => OpensearchReplace::Delete,
            Some(x) => {
                self.error(
                    &p.key("replace"),
                    format!("replace = {x:?}: \"close\" or \"delete\""),
                );
                OpensearchReplace::Close
            }
        };
        OpensearchSettings {
            url,
            user: raw.user,
            password,
            ca_file,
            repository,
            location,
            host,
            indices: raw
                .indices
                .unwrap_or_else(|| "*,-.opendistro_security,-.opensearch-*".into()),
            snapshot_timeout: self.duration(
                &p.key("snapshot_timeout"),
                raw.snapshot_timeout,
                Duration::from_secs(3600),
            ),
            restore_timeout: self.duration(
                &p.key("restore_timeout"),
                raw.restore_timeout,
                Duration::from_secs(3600),
            ),
            replace,
        }
    }

    fn drill(&mut self, p: &KeyPath, raw: RawDrill) -> DrillSettings {
        let check = match raw.check {
            Some(v) if v.first().is_none_or(|a| !a.starts_with('/')) => {
                self.error(
                    &p.key("check"),
                    "check must be a command as argv with an absolute program (run without a shell)",
                );
                None
            }
            v => v,
        };
        DrillSettings {
            max_age: raw
                .max_age
                .map(|v| self.duration(&p.key("max_age"), Some(v), Duration::from_secs(8 * 86400))),
            standby: raw
                .standby
                .map(|s| self.absolute(&p.key("standby"), Some(s), "/")),
            check,
        }
    }

    fn hooks(&mut self, p: &KeyPath, raw: RawHooks) -> HooksSettings {
        let mut argv = |key: &str, v: Option<Vec<String>>| -> Option<Vec<String>> {
            let v = v?;
            if v.first().is_none_or(|a| !a.starts_with('/')) {
                self.error(
                    &p.key(key),
                    format!("{key} must be a command as argv with an absolute program, e.g. [\"/usr/local/bin/notify\", \"{key}\"]; it is run without a shell"),
                );
                return None;
            }
            Some(v)
        };
        let backup_start = argv("backup_start", raw.backup_start);
        let backup_success = argv("backup_success", raw.backup_success);
        let backup_failure = argv("backup_failure", raw.backup_failure);
        let restore_step = argv("restore_step", raw.restore_step);
        let drill_result = argv("drill_result", raw.drill_result);
        let copy_result = argv("copy_result", raw.copy_result);
        HooksSettings {
            backup_start,
            backup_success,
            backup_failure,
            restore_step,
            drill_result,
            copy_result,
            timeout: self.duration(&p.key("timeout"), raw.timeout, Duration::from_secs(60)),
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
}

fn valid_schedule_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_SCHEDULE_NAME_LEN
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '_' | '-'))
}
