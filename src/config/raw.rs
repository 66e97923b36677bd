//! The config file as written: serde structs that mirror the TOML, every key optional so that
//! missing keys are reported by validation (with the line of the enclosing table) instead of
//! stopping deserialization. Unknown keys are found with `serde_ignored`; [`allowed_keys`]
//! lists, per table, the keys these structs accept (for the error message).

use serde::Deserialize;

#[derive(Debug, Default, Deserialize)]
pub(crate) struct RawConfig {
    pub daemon: Option<RawDaemon>,
    pub metrics: Option<RawMetrics>,
    pub repository: Option<RawRepository>,
    pub backup: Option<RawBackup>,
    pub schedule: Option<Vec<RawSchedule>>,
    pub mysql: Option<RawMysql>,
    pub rondb: Option<RawRondb>,
    pub ssh: Option<RawSsh>,
    pub hopsfs: Option<RawHopsfs>,
    pub restore: Option<RawRestore>,
    pub retention: Option<RawRetention>,
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct RawRetention {
    pub keep_last: Option<i64>,
    pub keep_hourly: Option<i64>,
    pub keep_daily: Option<i64>,
    pub keep_weekly: Option<i64>,
    pub keep_monthly: Option<i64>,
    pub keep_yearly: Option<i64>,
    pub keep_within: Option<String>,
    pub timezone: Option<String>,
    pub min_verified: Option<i64>,
    pub prune_after_backup: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct RawRestore {
    pub ndb_restore: Option<Vec<String>>,
    pub connectstring: Option<String>,
    pub staging_dir: Option<String>,
    pub parallelism: Option<i64>,
    pub restore_epoch: Option<bool>,
    pub hdfs: Option<Vec<String>>,
    pub safemode_timeout: Option<String>,
    pub datanode_start: Option<Vec<String>>,
    pub datanode_status: Option<Vec<String>>,
    pub epipe_stop: Option<Vec<String>>,
    pub epipe_start: Option<Vec<String>>,
    pub reindex: Option<Vec<String>>,
    pub reindex_user: Option<String>,
    pub kafka_restore: Option<Vec<String>>,
    pub featurestore_reindex: Option<Vec<String>>,
    pub ndb_drop_table: Option<Vec<String>>,
    pub no_binlog: Option<bool>,
    pub exclude_tables: Option<Vec<String>>,
    pub exclude_tables_data: Option<Vec<String>>,
    pub services: Option<Vec<String>>,
    pub service_stop: Option<Vec<String>>,
    pub service_start: Option<Vec<String>>,
    pub datanode_stop: Option<Vec<String>>,
    pub api_client_hosts: Option<Vec<String>>,
    pub mysqld_api_nodes: Option<i64>,
    pub quiesce_timeout: Option<String>,
    pub mysqld_restart: Option<Vec<String>>,
    pub mysqld_hosts: Option<Vec<String>>,
    pub volume_map: Option<std::collections::BTreeMap<String, String>>,
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct RawHopsfs {
    pub block_storage: Option<String>,
    pub referenced_blocks: Option<Vec<String>>,
    pub copy_timeout: Option<String>,
    pub datanodes: Option<Vec<RawHopsfsDatanode>>,
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct RawHopsfsDatanode {
    pub name: Option<String>,
    pub host: Option<String>,
    pub volumes: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct RawRondb {
    pub mgm_client: Option<Vec<String>>,
    pub mgm_host: Option<String>,
    pub backup_dir: Option<String>,
    pub backup_timeout: Option<String>,
    pub command_timeout: Option<String>,
    pub keep_node_copies: Option<bool>,
    pub ndb_show_tables: Option<Vec<String>>,
    pub data_nodes: Option<Vec<RawDataNode>>,
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct RawDataNode {
    pub id: Option<i64>,
    pub host: Option<String>,
    pub backup_dir: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct RawSsh {
    pub ssh: Option<String>,
    pub user: Option<String>,
    pub port: Option<u16>,
    pub identity_file: Option<String>,
    pub known_hosts: Option<String>,
    pub connect_timeout: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct RawDaemon {
    pub socket: Option<String>,
    pub socket_group: Option<String>,
    pub operator_group: Option<String>,
    pub catalog: Option<String>,
    pub shutdown_timeout: Option<String>,
    pub client_timeout: Option<String>,
    pub log_level: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct RawMetrics {
    pub enabled: Option<bool>,
    pub listen: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct RawRepository {
    #[serde(rename = "type")]
    pub kind: Option<String>,
    pub path: Option<String>,
    pub compression_level: Option<i64>,
    pub endpoint: Option<String>,
    pub region: Option<String>,
    pub bucket: Option<String>,
    pub prefix: Option<String>,
    pub path_style: Option<bool>,
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<toml::Value>,
    pub ca_bundle: Option<String>,
    pub part_size_mib: Option<i64>,
    pub parallel_parts: Option<i64>,
    pub bandwidth_limit_mib: Option<f64>,
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct RawBackup {
    pub files: Option<RawBackupFiles>,
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct RawBackupFiles {
    pub paths: Option<Vec<RawFilePath>>,
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct RawFilePath {
    pub path: Option<String>,
    pub optional: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct RawSchedule {
    pub name: Option<String>,
    pub cron: Option<String>,
    pub timezone: Option<String>,
    pub job: Option<String>,
    pub catch_up: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct RawMysql {
    pub user: Option<String>,
    /// Checked by hand: a table `{ file = .. }` or `{ credential = .. }`, never a string.
    pub password: Option<toml::Value>,
    pub socket: Option<String>,
    pub host: Option<String>,
    pub port: Option<u16>,
    pub mode: Option<String>,
    pub mysqlpump: Option<Vec<String>>,
    pub exclude_users: Option<Vec<String>>,
}

/// The keys allowed in the table at `shape` (a key path without indices, see
/// `KeyPath::shape`), sorted; empty for tables this module does not know.
pub(crate) fn allowed_keys(shape: &str) -> &'static [&'static str] {
    match shape {
        "" => &[
            "backup",
            "daemon",
            "hopsfs",
            "metrics",
            "mysql",
            "repository",
            "restore",
            "retention",
            "rondb",
            "schedule",
            "ssh",
        ],
        "daemon" => &[
            "catalog",
            "client_timeout",
            "log_level",
            "operator_group",
            "shutdown_timeout",
            "socket",
            "socket_group",
        ],
        "metrics" => &["enabled", "listen"],
        "repository" => &[
            "access_key_id",
            "bandwidth_limit_mib",
            "bucket",
            "ca_bundle",
            "compression_level",
            "endpoint",
            "parallel_parts",
            "part_size_mib",
            "path",
            "path_style",
            "prefix",
            "region",
            "secret_access_key",
            "type",
        ],
        "repository.secret_access_key" => &["credential", "file"],
        "backup" => &["files"],
        "backup.files" => &["paths"],
        "backup.files.paths" => &["optional", "path"],
        "schedule" => &["catch_up", "cron", "job", "name", "timezone"],
        "mysql" => &[
            "exclude_users",
            "host",
            "mode",
            "mysqlpump",
            "password",
            "port",
            "socket",
            "user",
        ],
        "mysql.password" => &["credential", "file"],
        "rondb" => &[
            "backup_dir",
            "backup_timeout",
            "command_timeout",
            "data_nodes",
            "keep_node_copies",
            "mgm_client",
            "mgm_host",
            "ndb_show_tables",
        ],
        "rondb.data_nodes" => &["backup_dir", "host", "id"],
        "hopsfs" => &[
            "block_storage",
            "copy_timeout",
            "datanodes",
            "referenced_blocks",
        ],
        "hopsfs.datanodes" => &["host", "name", "volumes"],
        "retention" => &[
            "keep_daily",
            "keep_hourly",
            "keep_last",
            "keep_monthly",
            "keep_weekly",
            "keep_within",
            "keep_yearly",
            "min_verified",
            "prune_after_backup",
            "timezone",
        ],
        "restore" => &[
            "api_client_hosts",
            "connectstring",
            "datanode_start",
            "datanode_status",
            "datanode_stop",
            "epipe_start",
            "epipe_stop",
            "exclude_tables",
            "exclude_tables_data",
            "featurestore_reindex",
            "hdfs",
            "kafka_restore",
            "mysqld_api_nodes",
            "mysqld_hosts",
            "mysqld_restart",
            "ndb_drop_table",
            "ndb_restore",
            "no_binlog",
            "parallelism",
            "quiesce_timeout",
            "reindex",
            "reindex_user",
            "restore_epoch",
            "safemode_timeout",
            "service_start",
            "service_stop",
            "services",
            "staging_dir",
            "volume_map",
        ],
        "ssh" => &[
            "connect_timeout",
            "identity_file",
            "known_hosts",
            "port",
            "ssh",
            "user",
        ],
        _ => &[],
    }
}
