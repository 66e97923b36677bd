//! The config file as written: serde structs that mirror the TOML, every key optional so that
//! missing keys are reported by validation (with the line of the enclosing table) instead of
//! stopping deserialization. Unknown keys are found with `serde_ignored`; [`allowed_keys`]
//! lists, per table, the keys these structs accept (for the error message).

use serde::Deserialize;

/// A table of the config file: its serde struct (every key optional) and `KEYS`, the keys it
/// accepts, derived from the same field list so that the two cannot disagree.
macro_rules! table {
    ($name:ident { $($(#[$fm:meta])* pub $field:ident : $ty:ty),* $(,)? }) => {
        #[derive(Debug, Default, Deserialize)]
        pub(crate) struct $name {
            $($(#[$fm])* pub $field: $ty),*
        }
        impl $name {
            pub(crate) const KEYS: &'static [&'static str] = &[$(stringify!($field)),*];
        }
    };
}

table! {
    RawConfig {
        pub daemon: Option<RawDaemon>,
        pub metrics: Option<RawMetrics>,
        pub repository: Option<RawRepository>,
        pub backup: Option<RawBackup>,
        pub schedule: Option<Vec<RawSchedule>>,
        pub mysql: Option<RawMysql>,
        pub rondb: Option<RawRondb>,
        pub ssh: Option<RawSsh>,
        pub agents: Option<RawAgents>,
        pub hopsfs: Option<RawHopsfs>,
        pub restore: Option<RawRestore>,
        pub retention: Option<RawRetention>,
        pub hooks: Option<RawHooks>,
        pub drill: Option<RawDrill>,
        pub copy: Option<Vec<RawCopy>>,
        pub opensearch: Option<RawOpensearch>,
    }
}

table! {
    RawOpensearch {
        pub url: Option<String>,
        pub user: Option<String>,
        pub password: Option<toml::Value>,
        pub ca_file: Option<String>,
        pub repository: Option<String>,
        pub location: Option<String>,
        pub host: Option<String>,
        pub indices: Option<String>,
        pub snapshot_timeout: Option<String>,
        pub restore_timeout: Option<String>,
        pub replace: Option<String>,
    }
}

table! {
    RawDrill {
        pub max_age: Option<String>,
        pub standby: Option<String>,
        pub check: Option<Vec<String>>,
    }
}

table! {
    RawHooks {
        pub backup_start: Option<Vec<String>>,
        pub backup_success: Option<Vec<String>>,
        pub backup_failure: Option<Vec<String>>,
        pub restore_step: Option<Vec<String>>,
        pub drill_result: Option<Vec<String>>,
        pub copy_result: Option<Vec<String>>,
        pub timeout: Option<String>,
    }
}

table! {
    RawRetention {
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
}

table! {
    RawRestore {
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
        pub replicas: Option<String>,
        pub mysqld_restart: Option<Vec<String>>,
        pub mysqld_hosts: Option<Vec<String>>,
        pub volume_map: Option<std::collections::BTreeMap<String, String>>,
    }
}

table! {
    RawHopsfs {
        pub block_storage: Option<String>,
        pub referenced_blocks: Option<Vec<String>>,
        pub copy_timeout: Option<String>,
        pub datanodes: Option<Vec<RawHopsfsDatanode>>,
        pub cloud: Option<RawHopsfsCloud>,
    }
}

table! {
    RawHopsfsCloud {
        pub bucket: Option<String>,
        pub prefix: Option<String>,
        pub endpoint: Option<String>,
        pub region: Option<String>,
        pub path_style: Option<bool>,
        pub access_key_id: Option<String>,
        pub secret_access_key: Option<toml::Value>,
        pub ca_bundle: Option<String>,
        pub set_size: Option<i64>,
    }
}

table! {
    RawHopsfsDatanode {
        pub name: Option<String>,
        pub host: Option<String>,
        pub volumes: Option<Vec<String>>,
    }
}

table! {
    RawRondb {
        pub mgm_client: Option<Vec<String>>,
        pub mgm_host: Option<String>,
        pub backup_dir: Option<String>,
        pub backup_timeout: Option<String>,
        pub command_timeout: Option<String>,
        pub keep_node_copies: Option<bool>,
        pub ndb_show_tables: Option<Vec<String>>,
        pub data_nodes: Option<Vec<RawDataNode>>,
        /// Checked by hand: a table `{ file = .. }` or `{ credential = .. }`, never a string.
        pub backup_password: Option<toml::Value>,
    }
}

table! {
    RawDataNode {
        pub id: Option<i64>,
        pub host: Option<String>,
        pub backup_dir: Option<String>,
    }
}

table! {
    RawSsh {
        pub ssh: Option<String>,
        pub user: Option<String>,
        pub port: Option<u16>,
        pub identity_file: Option<String>,
        pub known_hosts: Option<String>,
        pub connect_timeout: Option<String>,
    }
}

table! {
    RawAgents {
        pub enabled: Option<bool>,
        pub binary: Option<String>,
        pub timeout: Option<String>,
        pub bandwidth: Option<String>,
        pub timezone: Option<String>,
        pub nodes: Option<Vec<RawAgentNode>>,
        pub links: Option<Vec<RawAgentLink>>,
    }
}

table! {
    RawAgentLink {
        pub name: Option<String>,
        pub hosts: Option<Vec<String>>,
        pub bandwidth: Option<String>,
    }
}

table! {
    RawAgentNode {
        pub host: Option<String>,
        pub bandwidth: Option<String>,
    }
}

table! {
    RawDaemon {
        pub socket: Option<String>,
        pub socket_group: Option<String>,
        pub operator_group: Option<String>,
        pub catalog: Option<String>,
        pub shutdown_timeout: Option<String>,
        pub client_timeout: Option<String>,
        pub log_level: Option<String>,
    }
}

table! {
    RawMetrics {
        pub enabled: Option<bool>,
        pub listen: Option<String>,
    }
}

table! {
    RawRepository {
        pub r#type: Option<String>,
        pub path: Option<String>,
        pub compression_level: Option<i64>,
        pub endpoint: Option<String>,
        pub region: Option<String>,
        pub bucket: Option<String>,
        pub prefix: Option<String>,
        pub path_style: Option<bool>,
        pub access_key_id: Option<String>,
        pub secret_access_key: Option<toml::Value>,
        pub prune_access_key_id: Option<String>,
        pub versioning: Option<String>,
        pub object_lock: Option<RawObjectLock>,
        pub prune_secret_access_key: Option<toml::Value>,
        pub ca_bundle: Option<String>,
        pub part_size_mib: Option<i64>,
        pub parallel_parts: Option<i64>,
        pub bandwidth_limit_mib: Option<f64>,
        pub encryption: Option<RawEncryption>,
    }
}

table! {
    RawObjectLock {
        pub mode: Option<String>,
        pub days: Option<i64>,
    }
}

table! {
    RawEncryption {
        /// Checked by hand: a table `{ file = .. }` or `{ credential = .. }`, never a string.
        pub passphrase: Option<toml::Value>,
        pub slot: Option<String>,
    }
}

table! {
    RawBackup {
        pub files: Option<RawBackupFiles>,
    }
}

table! {
    RawBackupFiles {
        pub paths: Option<Vec<RawFilePath>>,
    }
}

table! {
    RawFilePath {
        pub path: Option<String>,
        pub optional: Option<bool>,
    }
}

table! {
    RawSchedule {
        pub name: Option<String>,
        pub cron: Option<String>,
        pub timezone: Option<String>,
        pub job: Option<String>,
        pub catch_up: Option<bool>,
        pub target: Option<String>,
    }
}

table! {
    RawCopy {
        pub name: Option<String>,
        pub r#type: Option<String>,
        pub path: Option<String>,
        pub endpoint: Option<String>,
        pub region: Option<String>,
        pub bucket: Option<String>,
        pub prefix: Option<String>,
        pub path_style: Option<bool>,
        pub access_key_id: Option<String>,
        pub secret_access_key: Option<toml::Value>,
        pub versioning: Option<String>,
        pub object_lock: Option<RawObjectLock>,
        pub ca_bundle: Option<String>,
        pub part_size_mib: Option<i64>,
        pub parallel_parts: Option<i64>,
        pub bandwidth_limit_mib: Option<f64>,
        pub parallel: Option<i64>,
    }
}

table! {
    RawMysql {
        pub user: Option<String>,
        /// Checked by hand: a table `{ file = .. }` or `{ credential = .. }`, never a string.
        pub password: Option<toml::Value>,
        pub socket: Option<String>,
        pub host: Option<String>,
        pub port: Option<u16>,
        pub mode: Option<String>,
        pub mysqlpump: Option<Vec<String>>,
        pub exclude_users: Option<Vec<String>>,
        pub tls: Option<bool>,
        pub tls_ca: Option<String>,
    }
}

/// The keys allowed in the table at `shape` (a key path without indices, see
/// `KeyPath::shape`), sorted; empty for tables this module does not know.
pub(crate) fn allowed_keys(shape: &str) -> Vec<&'static str> {
    let keys: &[&'static str] = match shape {
        "" => RawConfig::KEYS,
        "daemon" => RawDaemon::KEYS,
        "metrics" => RawMetrics::KEYS,
        "repository" => RawRepository::KEYS,
        // Secrets are read by hand (a file or a systemd credential).
        "repository.encryption" => RawEncryption::KEYS,
        "repository.object_lock" => RawObjectLock::KEYS,
        "repository.secret_access_key"
        | "repository.prune_secret_access_key"
        | "copy.secret_access_key"
        | "opensearch.password"
        | "hopsfs.cloud.secret_access_key"
        | "mysql.password"
        | "repository.encryption.passphrase"
        | "rondb.backup_password" => &["credential", "file"],
        "backup" => RawBackup::KEYS,
        "backup.files" => RawBackupFiles::KEYS,
        "backup.files.paths" => RawFilePath::KEYS,
        "schedule" => RawSchedule::KEYS,
        "mysql" => RawMysql::KEYS,
        "rondb" => RawRondb::KEYS,
        "rondb.data_nodes" => RawDataNode::KEYS,
        "hopsfs" => RawHopsfs::KEYS,
        "hopsfs.datanodes" => RawHopsfsDatanode::KEYS,
        "hopsfs.cloud" => RawHopsfsCloud::KEYS,
        "retention" => RawRetention::KEYS,
        "restore" => RawRestore::KEYS,
        "ssh" => RawSsh::KEYS,
        "agents" => RawAgents::KEYS,
        "hooks" => RawHooks::KEYS,
        "drill" => RawDrill::KEYS,
        "copy" => RawCopy::KEYS,
        "opensearch" => RawOpensearch::KEYS,
        "copy.object_lock" => RawObjectLock::KEYS,
        "agents.nodes" => RawAgentNode::KEYS,
        "agents.links" => RawAgentLink::KEYS,
        _ => &[],
    };
    // `r#type` is the key `type`.
    let mut keys: Vec<&'static str> = keys.iter().map(|k| k.trim_start_matches("r#")).collect();
    keys.sort_unstable();
    keys
}
