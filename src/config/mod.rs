//! hopsdr's configuration: one TOML file, `/etc/hopsdr/hopsdr.toml` by default.
//!
//! The text is parsed into raw serde structs ([`raw`], every key optional, unknown keys found
//! with `serde_ignored`) and then validated into [`Settings`], the only type the rest of hopsdr
//! sees. Parsing never stops at the first problem: syntax errors, unknown keys, type errors and
//! every failed check are collected into [`ConfigErrors`], each naming the file, the line, the
//! key path (`schedule[0].cron`) and what to do. Validation reads secret files' metadata and
//! nothing else: it does not touch the network or create files.
//!
//! The shipped example, `etc/hopsdr/hopsdr.toml`, documents every key with its default.

mod error;
mod raw;
mod secret;
mod spans;
mod validate;

#[cfg(test)]
mod tests;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use error::{ConfigError, ConfigErrors};
pub use secret::{Secret, SecretEnv, SecretError};

/// Where the daemon and the CLI look for the config file unless told otherwise.
pub const DEFAULT_PATH: &str = "/etc/hopsdr/hopsdr.toml";

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The file the settings were read from (for `parse`, the label it was given).
    pub path: PathBuf,
    pub daemon: DaemonSettings,
    pub metrics: MetricsSettings,
    pub repository: RepositorySettings,
    pub backup: BackupSettings,
    pub schedules: Vec<ScheduleSettings>,
    /// `None` when the config has no `[mysql]` section.
    pub mysql: Option<MysqlSettings>,
    /// `[rondb]`: the RonDB backup component; `None` when the section is absent.
    pub rondb: Option<RondbSettings>,
    /// `[ssh]`: how remote nodes are reached.
    pub ssh: SshConfig,
    /// `[agents]`: the hopsdr agent on the nodes.
    pub agents: AgentsSettings,
    /// `[hopsfs]`: the HopsFS blocks component; `None` when the section is absent.
    pub hopsfs: Option<HopsfsSettings>,
    /// `[restore]`: the tools a restore runs.
    pub restore: RestoreSettings,
    /// `[retention]`: which backups pruning keeps.
    pub retention: RetentionSettings,
    /// `[hooks]`: commands run on backup and restore events.
    pub hooks: HooksSettings,
    /// `[drill]`: restore drills.
    pub drill: DrillSettings,
    /// `[[copy]]`: second copies of the repository.
    pub copies: Vec<CopySettings>,
    /// `[opensearch]`: the OpenSearch component; `None` when the section is absent.
    pub opensearch: Option<OpensearchSettings>,
}

/// `[opensearch]`: OpenSearch snapshotted through its REST API into an `fs` snapshot
/// repository whose files the backup stores.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpensearchSettings {
    /// `https://host:9200` (or `http://`).
    pub url: String,
    /// Basic authentication (with `password`); none: no authentication.
    pub user: Option<String>,
    pub password: Option<Secret>,
    /// The CA that signed OpenSearch's certificate (PEM); none: the system's roots.
    pub ca_file: Option<PathBuf>,
    /// The snapshot repository's name (registered by hopsdr).
    pub repository: String,
    /// The repository's directory on the OpenSearch node (under its `path.repo`).
    pub location: String,
    /// Where `location` is: the head node or a host reached over ssh.
    pub host: NodeHost,
    /// The indices snapshotted (OpenSearch's syntax: names, `*`, `-exclusions`).
    pub indices: String,
    pub snapshot_timeout: Duration,
    pub restore_timeout: Duration,
    /// What a restore does to an open index of the same name: close it (`close`) or delete
    /// it (`delete`).
    pub replace: OpensearchReplace,
}

/// `[opensearch] replace`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OpensearchReplace {
    Close,
    Delete,
}

/// `[[copy]]`: another place (a directory or a bucket, with its own credentials) that a copy
/// job keeps a copy of the repository in.
#[derive(Debug, Clone, PartialEq)]
pub struct CopySettings {
    /// Unique, as a schedule name; `--repository NAME` and `target = NAME` use it.
    pub name: String,
    pub store: StoreSettings,
    /// Objects sent at once.
    pub parallel: usize,
}

/// `[drill]`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DrillSettings {
    /// A passed drill older than this raises `HopsdrDrillTooOld` (none: no alert).
    pub max_age: Option<Duration>,
    /// The standby cluster a level 2 drill restores into: a hopsdr config file describing it
    /// (its `[rondb]`, `[hopsfs]`, `[mysql]`, `[restore]`, `[opensearch]`, `[ssh]`).
    pub standby: Option<PathBuf>,
    /// Run after a level 2 drill's restore (argv); exit 0: the standby is what was backed up.
    pub check: Option<Vec<String>>,
}

/// `[hooks]`: a command (argv) per event, none by default.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HooksSettings {
    pub backup_start: Option<Vec<String>>,
    pub backup_success: Option<Vec<String>>,
    pub backup_failure: Option<Vec<String>>,
    pub restore_step: Option<Vec<String>>,
    pub drill_result: Option<Vec<String>>,
    pub copy_result: Option<Vec<String>>,
    /// How long a hook may run before it is stopped (and counted failed).
    pub timeout: Duration,
}

/// `[retention]`.
#[derive(Debug, Clone, PartialEq)]
pub struct RetentionSettings {
    /// The policy; without any `keep_*` rule nothing is ever forgotten.
    pub policy: crate::retention::RetentionPolicy,
    /// Prune (and collect garbage) after each successful backup, when the policy has rules.
    pub prune_after_backup: bool,
}

/// `[restore]`. Commands are argv; in `datanode_start`, `datanode_stop` and `datanode_status`,
/// `{name}` and `{index}` (1-based, in `[[hopsfs.datanodes]]` order) are replaced by the
/// datanode's; in `service_stop` and `service_start`, `{unit}` by the service's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestoreSettings {
    pub ndb_restore: Vec<String>,
    /// The management server for ndb_restore; default: the `-c` of `[rondb] mgm_client`.
    pub connectstring: Option<String>,
    /// Where RonDB files are staged on the head node for ndb_restore.
    pub staging_dir: PathBuf,
    /// `ndb_restore -r` runs in parallel for up to this many node ids.
    pub parallelism: u32,
    pub restore_epoch: bool,
    pub hdfs: Vec<String>,
    pub safemode_timeout: Duration,
    pub datanode_start: Vec<String>,
    /// Exits 0 while the datanode runs (`{name}`/`{index}` as in `datanode_start`); the
    /// preflight refuses a target whose datanodes run.
    pub datanode_status: Vec<String>,
    pub epipe_stop: Vec<String>,
    pub epipe_start: Vec<String>,
    pub reindex: Vec<String>,
    /// The user the reindex script runs as (`runuser -u <user> --`); none = as hopsdrd.
    pub reindex_user: Option<String>,
    pub kafka_restore: Vec<String>,
    /// Optional: asks Hopsworks to rebuild the feature-store search index after ePipe's
    /// reindex (e.g. curl `POST /hopsworks-api/api/admin/search/featurestore/reindex`).
    pub featurestore_reindex: Option<Vec<String>>,
    /// Drops the redeployed tables the backup recreates (`-c <cs> -d <db> <table>...` appended).
    pub ndb_drop_table: Vec<String>,
    /// Pass `--no-binlog` to every ndb_restore run (restored rows stay out of the binlog of a
    /// MySQL server with `ndb_log_bin=ON`).
    pub no_binlog: bool,
    /// `db.table` names left out of every ndb_restore run (and never dropped).
    pub exclude_tables: Vec<String>,
    /// `db.table` names whose rows are not restored (their tables are recreated empty).
    pub exclude_tables_data: Vec<String>,
    /// The services that write to RonDB or HopsFS, in dependency order: stopped in reverse
    /// order before the restore, started in this order after the write-back.
    pub services: Vec<String>,
    pub service_stop: Vec<String>,
    pub service_start: Vec<String>,
    pub datanode_stop: Vec<String>,
    /// Addresses the NDB API clients of `services` (and the MySQL servers) connect from; any
    /// other connected API node is unknown and refuses the restore. Empty: the management
    /// server's address.
    pub api_client_hosts: Vec<String>,
    /// API nodes the MySQL servers hold: they may stay connected during the restore.
    pub mysqld_api_nodes: u32,
    /// How long the stopped services may take to release their API slots.
    pub quiesce_timeout: Duration,
    /// Restarts a MySQL server after users and grants (empty: no restart); run on each of
    /// `mysqld_hosts`.
    pub mysqld_restart: Vec<String>,
    pub mysqld_hosts: Vec<NodeHost>,
    /// Where each backed-up HopsFS volume goes: `"<datanode>/vol<k>"` (as in the backup) to
    /// `"<datanode>/vol<k>"` (a `[[hopsfs.datanodes]]` name and its k-th volume). Volumes not
    /// listed go to the same name and index.
    pub volume_map: Vec<(String, String)>,
    /// Which replicas of each finalized block the write-back writes.
    pub replicas: RestoreReplicas,
}

/// `[restore] replicas`: which replicas of a finalized HopsFS block a restore writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RestoreReplicas {
    /// Every replica the backup recorded, each on its datanode (the cluster as it was).
    #[default]
    All,
    /// One replica per block, spread over the datanodes; HDFS copies the others once out of
    /// safe mode (less to write, the replication factor reached later).
    One,
}

/// A HopsFS volume named `"<datanode>/vol<k>"` (k from 1): (datanode, k).
pub fn parse_volume_ref(s: &str) -> Option<(&str, usize)> {
    let (name, vol) = s.rsplit_once('/')?;
    let k: usize = vol.strip_prefix("vol")?.parse().ok()?;
    (!name.is_empty() && k >= 1).then_some((name, k))
}

/// Where HopsFS keeps its blocks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlockStorage {
    /// On the datanodes' volumes: hopsdr copies them.
    Local,
    /// In object storage (enterprise HopsFS): only the metadata (in RonDB) is backed up.
    Cloud,
}

/// `[hopsfs]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HopsfsSettings {
    pub block_storage: BlockStorage,
    /// A command printing `<block pool> <block id> <genstamp> <length>` for every block the
    /// metadata of a RonDB backup references; hopsdr appends `--backup-id <id>`. Without it
    /// the coverage check is skipped (and the manifest says so).
    pub referenced_blocks: Option<Vec<String>>,
    pub copy_timeout: Duration,
    pub datanodes: Vec<HopsfsDatanodeSettings>,
    /// `[hopsfs.cloud]`: the bucket HopsFS keeps its blocks in (`block_storage = "cloud"`).
    pub cloud: Option<HopsfsCloudSettings>,
}

/// `[hopsfs.cloud]`: the bucket of a HopsFS in cloud mode, reached with credentials that
/// read, list versions and copy (never delete).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HopsfsCloudSettings {
    pub s3: S3Settings,
    /// Blocks per key prefix (`dfs.cloud.prefix.size`): keys are
    /// `hopsfs-blocks-set-<id / set_size>/blk_<id>_<genstamp>.data|.meta`; 0: no set prefix.
    pub set_size: u64,
}

/// `[[hopsfs.datanodes]]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HopsfsDatanodeSettings {
    /// A unique name (default: the host); names the datanode in the backup.
    pub name: String,
    pub host: NodeHost,
    /// `dfs.datanode.data.dir` entries (a `[DISK]` prefix is accepted and dropped).
    pub volumes: Vec<PathBuf>,
}

/// Where a command runs: the head node itself or a host reached over ssh.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeHost {
    Local,
    Remote(String),
}

/// `[rondb]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RondbSettings {
    /// The management client and its fixed arguments; `-e <command>` is appended.
    pub mgm_client: Vec<String>,
    /// Where the management client runs.
    pub mgm_host: NodeHost,
    /// Every data node's BackupDataDir (backups land in `<dir>/BACKUP/BACKUP-<id>/`).
    pub backup_dir: PathBuf,
    pub backup_timeout: Duration,
    pub command_timeout: Duration,
    /// Keep each node's `BACKUP-<id>` after the backup is committed.
    pub keep_node_copies: bool,
    /// Lists the NDB dictionary's user tables (`-c <connectstring> -p -t 2` appended): a
    /// backup records its tables; a restore's preflight refuses a target that holds some.
    pub ndb_show_tables: Vec<String>,
    /// The data nodes; empty = discovered from `SHOW`.
    pub data_nodes: Vec<DataNodeSettings>,
    /// RonDB's own backup encryption: START BACKUP runs encrypted with this password and
    /// ndb_restore decrypts with it, given on standard input (never in argv).
    pub backup_password: Option<Secret>,
}

impl RondbSettings {
    /// The connect string in `mgm_client` (`-c X`, `-cX`, `--ndb-connectstring[=]X`), if any.
    pub fn connectstring(&self) -> Option<String> {
        let argv = &self.mgm_client;
        argv.iter().enumerate().find_map(|(i, a)| {
            if a == "-c" || a == "--ndb-connectstring" {
                argv.get(i + 1).cloned()
            } else {
                a.strip_prefix("--ndb-connectstring=")
                    .map(str::to_string)
                    .or_else(|| {
                        a.strip_prefix("-c")
                            .filter(|r| !r.is_empty())
                            .map(str::to_string)
                    })
            }
        })
    }
}

/// `[[rondb.data_nodes]]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataNodeSettings {
    pub id: crate::ids::NdbNodeId,
    pub host: NodeHost,
    pub backup_dir: Option<PathBuf>,
}

/// `[agents]`: how hopsdrd starts the hopsdr agent on a node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentsSettings {
    /// Backups go through the nodes' agents: each RonDB data node's agent packs its
    /// `BACKUP-<id>` and stores it straight into the bucket (S3) or sends the packs to hopsdrd
    /// (a local repository).
    pub enabled: bool,
    /// The agent program on every node (the `hopsdr` binary of this release).
    pub binary: PathBuf,
    /// How long an agent may stay silent (its greeting included) before it is given up.
    pub timeout: Duration,
    /// Each agent's bytes to and from the repository (or hopsdrd, for a local one), by time of
    /// day; `[[agents.nodes]]` gives a host its own.
    pub bandwidth: crate::timetable::Timetable,
    /// Where the timetables' times are read.
    pub timezone: chrono_tz::Tz,
    /// Hosts with a timetable of their own.
    pub nodes: Vec<(NodeHost, crate::timetable::Timetable)>,
    /// Links shared by hosts (a rack's uplink): each host gets an even share of the link's
    /// timetable.
    pub links: Vec<AgentLink>,
}

/// `[[agents.links]]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentLink {
    pub name: String,
    pub hosts: Vec<NodeHost>,
    pub bandwidth: crate::timetable::Timetable,
}

impl AgentsSettings {
    /// The timetable of the agent on `host`: its own (or `[agents] bandwidth`), lowered to its
    /// share of the link it is on, if any.
    pub fn bandwidth_of(&self, host: &NodeHost) -> crate::timetable::Timetable {
        let own = self
            .nodes
            .iter()
            .find(|(h, _)| h == host)
            .map_or(&self.bandwidth, |(_, t)| t);
        match self.links.iter().find(|l| l.hosts.contains(host)) {
            Some(l) => own.min(&l.bandwidth.divided(l.hosts.len() as u64)),
            None => own.clone(),
        }
    }
}

/// `[ssh]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SshConfig {
    pub ssh: PathBuf,
    pub user: String,
    pub port: u16,
    pub identity_file: PathBuf,
    pub known_hosts: PathBuf,
    pub connect_timeout: Duration,
}

/// `[daemon]`: the daemon process and its socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DaemonSettings {
    /// The API socket (absolute path).
    pub socket: PathBuf,
    /// Group that owns the socket (mode 0660); its members may read (status, list).
    pub socket_group: String,
    /// Group whose members may change things (start a backup); `None` = root only.
    pub operator_group: Option<String>,
    /// The SQLite catalog (absolute path).
    pub catalog: PathBuf,
    /// How long to wait for a running job to reach a safe point on shutdown (0 < t <= 1h).
    pub shutdown_timeout: Duration,
    /// How long a client of the API socket or the metrics port may take to send a request's
    /// head or body (also how long a kept-alive connection may sit idle).
    pub client_timeout: Duration,
    /// One of `error`, `warn`, `info`, `debug`, `trace`.
    pub log_level: String,
}

/// `[metrics]`: the Prometheus listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetricsSettings {
    /// Where to serve `/metrics`; `None` = disabled.
    pub listen: Option<SocketAddr>,
}

/// `[repository]`: where backups are stored, how compressed and whether encrypted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepositorySettings {
    pub store: StoreSettings,
    /// zstd level, 1..=19.
    pub compression_level: i32,
    /// `[repository.encryption]`: the passphrase of a key slot; `None`: a plaintext repository.
    pub encryption: Option<EncryptionSettings>,
}

/// Where the repository is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreSettings {
    /// A directory on a local (or mounted) file system (absolute path).
    Local { path: PathBuf },
    /// A bucket of S3 or an S3-compatible store (MinIO, Ceph RGW).
    S3(Box<S3Settings>),
}

/// `[repository] object_lock`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ObjectLockSettings {
    /// `governance` (removable with s3:BypassGovernanceRetention) or `compliance` (by nobody).
    pub mode: crate::repository::LockMode,
    /// How long each object stays locked after it is written (or its retention extended).
    pub days: u32,
}

/// `[repository] versioning`: the bucket's versioning, checked at start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VersioningPolicy {
    /// Refuse to start on a bucket without versioning enabled.
    Require,
    /// Warn (the default).
    Warn,
}

/// `[repository.encryption]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncryptionSettings {
    /// A passphrase of one of the repository's key slots (a new repository's first slot).
    pub passphrase: Secret,
    /// The key slot to open; `None`: each in turn (a new repository's first: `primary`).
    pub slot: Option<String>,
}

/// `[repository] type = "s3"`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Settings {
    /// `https://host:port`; `None`: AWS, from the region.
    pub endpoint: Option<String>,
    pub region: String,
    pub bucket: String,
    /// Keys go under `<prefix>/`; empty: the bucket's root.
    pub prefix: String,
    /// Path-style addressing (MinIO, Ceph) instead of virtual-hosted.
    pub path_style: bool,
    /// With `secret_access_key`; neither: the AWS environment or instance credentials.
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<Secret>,
    /// The prune identity (`prune_access_key_id` with `prune_secret_access_key`): used only to
    /// forget backups and collect garbage, so that the identity that backs up needs no right
    /// to delete. `None`: prune with the identity above.
    pub prune_access_key_id: Option<String>,
    pub prune_secret_access_key: Option<Secret>,
    /// What to do at start when the bucket is not versioned (an overwritten or deleted object
    /// is then gone for good).
    pub versioning: VersioningPolicy,
    /// `object_lock = { mode, days }`: every object written gets this retention, and garbage
    /// collection extends that of the objects kept backups reference.
    pub object_lock: Option<ObjectLockSettings>,
    /// PEM certificates trusted besides the system's.
    pub ca_bundle: Option<PathBuf>,
    /// Multipart part size (and the size above which objects go up in parts), bytes.
    pub part_size: usize,
    pub parallel_parts: usize,
    /// Bytes per second, uploads and downloads together.
    pub bandwidth_limit: Option<u64>,
}

/// `[backup]`: what a backup holds besides the cluster's data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupSettings {
    /// Files copied into every backup (`[backup.files] paths`).
    pub files: Vec<FilePathSettings>,
}

/// One entry of `[backup.files] paths`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FilePathSettings {
    /// Absolute path of the file.
    pub path: PathBuf,
    /// When true, a missing file is skipped instead of failing the backup.
    pub optional: bool,
}

/// One `[[schedule]]`.
#[derive(Debug, Clone)]
pub struct ScheduleSettings {
    /// Unique, `[a-z0-9_-]{1,64}`.
    pub name: String,
    pub cron: crate::schedule::Cron,
    /// The zone `cron` is evaluated in.
    pub timezone: chrono_tz::Tz,
    pub job: JobKind,
    /// Run once at start-up when a fire time was missed while the daemon was down.
    pub catch_up: bool,
    /// The `[[copy]]` a `copy` job sends to.
    pub target: Option<String>,
}

/// What a schedule runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobKind {
    Backup,
    /// Reads back the backup verified longest ago.
    Verify,
    /// Forgets what `[retention]` does not keep, then collects garbage.
    Prune,
    /// Reads the newest complete backup back and checks its meaning (a level 1 drill).
    Drill,
    /// Brings a `[[copy]]` (`target`) up to date with the repository.
    Copy,
}

impl JobKind {
    /// Every kind, in the order shown to users.
    pub const ALL: &'static [JobKind] = &[
        JobKind::Backup,
        JobKind::Verify,
        JobKind::Prune,
        JobKind::Drill,
        JobKind::Copy,
    ];

    /// The name used in the config and the API.
    pub fn as_str(self) -> &'static str {
        match self {
            JobKind::Backup => "backup",
            JobKind::Verify => "verify",
            JobKind::Prune => "prune",
            JobKind::Drill => "drill",
            JobKind::Copy => "copy",
        }
    }
}

/// `[mysql]`: how to reach MySQL for users and grants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MysqlSettings {
    pub user: String,
    pub password: Secret,
    /// Unix socket; exactly one of `socket` and `host` is set.
    pub socket: Option<PathBuf>,
    pub host: Option<String>,
    /// TCP port, used with `host` (default 3306).
    pub port: u16,
    /// How users and grants are dumped.
    pub mode: MysqlDumpMode,
    /// The mysqlpump command (for `mode = "mysqlpump"`).
    pub mysqlpump: Vec<String>,
    /// Accounts never dumped (besides the dump account itself).
    pub exclude_users: Vec<String>,
    /// TLS for a TCP connection (`tls = true`): `Some(ca)` with the CA certificates (PEM) the
    /// server's certificate must chain to (`None`: the system's roots); `None`: no TLS.
    pub tls: Option<Option<PathBuf>>,
}

/// `[mysql] mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MysqlDumpMode {
    /// Natively over the MySQL protocol (works with every RonDB version).
    Native,
    /// With `mysqlpump --users`, as the disaster-recovery guide does (RonDB before 24.10).
    Mysqlpump,
}

/// Reads the config file at `path` and validates it with the process's [`SecretEnv`]. Errors
/// name the file as `path` is displayed.
pub fn load(path: &Path) -> Result<Settings, ConfigErrors> {
    let label = path.display().to_string();
    let text = read(path, &label)?;
    validate::parse(
        &text,
        &label,
        path.to_path_buf(),
        &SecretEnv::from_process(),
    )
}

/// Parses and validates config `text`; `file_label` is how errors name the file (and becomes
/// [`Settings::path`]).
pub fn parse(text: &str, file_label: &str, env: &SecretEnv) -> Result<Settings, ConfigErrors> {
    validate::parse(text, file_label, PathBuf::from(file_label), env)
}

/// Reads only `[daemon] socket` from the config file at `path` (the default when absent), for
/// `hopsdrctl`: other keys and sections are not looked at. The file must exist and be valid TOML.
pub fn load_socket_path(path: &Path) -> Result<PathBuf, ConfigErrors> {
    let label = path.display().to_string();
    let text = read(path, &label)?;
    validate::socket_path(&text, &label)
}

fn read(path: &Path, label: &str) -> Result<String, ConfigErrors> {
    std::fs::read_to_string(path).map_err(|e| {
        ConfigErrors::from(ConfigError {
            file: label.to_string(),
            line: None,
            key: String::new(),
            message: format!("failed to read config file: {e}"),
        })
    })
}
