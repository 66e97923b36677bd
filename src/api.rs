//! The socket API's contract: routes and the request/response types that `hopsdrd` serves and
//! `hopsdrctl` reads, HTTP/1.1 + JSON over a Unix socket. One module, used by both binaries, so the
//! two cannot disagree.
//!
//! The routes are one table, [`routes`]: the daemon's router is built from it and hopsdrctl's
//! client calls its entries, so the two cannot disagree on a method or a path. What each route
//! takes and returns is written beside it.
//!
//! Errors are `{"error":{"code":"...","message":"..."}}` with a fitting status. A destructive
//! request without its confirmation gets 400 `confirmation_required` and changes nothing.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::catalog::{BackupRecord, ComponentRecord, JobRecord, LastSuccess};
use crate::domain::{JobKind, State};
use crate::ids::{BackupId, JobId};

/// One route of the API: its method, its path (with `{name}` for a parameter) and what it
/// serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route {
    pub id: RouteId,
    pub method: &'static str,
    pub path: &'static str,
}

/// Which route: what the daemon's handler matches on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteId {
    Status,
    Backups,
    Backup,
    StartBackup,
    Pin,
    Unpin,
    Job,
    RepoCheck,
    CatalogRebuild,
    RepoRepairIndex,
    PruneDryRun,
    Prune,
    Verify,
    RestorePlan,
    StartRestore,
    ResumeRestore,
    AbortRestore,
    AbandonRestore,
    LastRestore,
    Keys,
    AddKey,
    RemoveKey,
    RotateKey,
    Agents,
    StartDrill,
    Drills,
    Drill,
    Copy,
}

impl Route {
    /// The path with `params` put in for the `{...}` parameters, in order.
    pub fn url(&self, params: &[&str]) -> String {
        let mut params = params.iter();
        self.path
            .split('/')
            .map(|seg| {
                if seg.starts_with('{') {
                    params.next().copied().unwrap_or_default().to_string()
                } else {
                    seg.to_string()
                }
            })
            .collect::<Vec<_>>()
            .join("/")
    }

    /// The parameters of `path` (which matched this route), in order.
    pub fn params<'a>(&self, path: &'a str) -> Vec<&'a str> {
        self.path
            .split('/')
            .zip(path.split('/'))
            .filter(|(t, _)| t.starts_with('{'))
            .map(|(_, v)| v)
            .collect()
    }

    /// Reads need the socket group; everything else changes something.
    pub fn changes(&self) -> bool {
        self.method != "GET"
    }

    /// Changes to the repository's keys: root only, whatever the operator group.
    pub fn root_only(&self) -> bool {
        matches!(
            self.id,
            RouteId::AddKey | RouteId::RemoveKey | RouteId::RotateKey
        )
    }
}

/// Every route of the API.
pub mod routes {
    use super::{Route, RouteId};

    const fn r(id: RouteId, method: &'static str, path: &'static str) -> Route {
        Route { id, method, path }
    }

    /// → [`super::StatusResponse`]
    pub const STATUS: Route = r(RouteId::Status, "GET", "/v1/status");
    /// → [`super::BackupList`]
    pub const BACKUPS: Route = r(RouteId::Backups, "GET", "/v1/backups");
    /// → [`super::BackupDetail`]
    pub const BACKUP: Route = r(RouteId::Backup, "GET", "/v1/backups/{id}");
    /// [`super::StartBackupRequest`] → 202 [`super::JobStarted`] (409 with `job_id` when busy)
    pub const START_BACKUP: Route = r(RouteId::StartBackup, "POST", "/v1/backups");
    /// → 200
    pub const PIN: Route = r(RouteId::Pin, "POST", "/v1/backups/{id}/pin");
    /// [`super::Confirm`] of the id → 200
    pub const UNPIN: Route = r(RouteId::Unpin, "POST", "/v1/backups/{id}/unpin");
    /// `?wait_ms=N` (at most 10 s) → [`super::JobView`]
    pub const JOB: Route = r(RouteId::Job, "GET", "/v1/jobs/{id}");
    /// → the repository's structure check (at most two heavy reads at once, else 429)
    pub const REPO_CHECK: Route = r(RouteId::RepoCheck, "GET", "/v1/repo/check");
    /// → 202 [`super::JobStarted`]
    pub const CATALOG_REBUILD: Route = r(RouteId::CatalogRebuild, "POST", "/v1/catalog/rebuild");
    /// → 202 [`super::JobStarted`]
    pub const REPO_REPAIR_INDEX: Route =
        r(RouteId::RepoRepairIndex, "POST", "/v1/repo/repair-index");
    /// → [`super::PruneDecisions`], the dry run
    pub const PRUNE_DRY_RUN: Route = r(RouteId::PruneDryRun, "GET", "/v1/prune");
    /// [`super::Confirm`] `"prune"` → 202 [`super::JobStarted`]
    pub const PRUNE: Route = r(RouteId::Prune, "POST", "/v1/prune");
    /// `{"backup": id}` or nothing (the one verified longest ago) → 202 [`super::JobStarted`]
    pub const VERIFY: Route = r(RouteId::Verify, "POST", "/v1/verify");
    /// → [`crate::restore::plan::RestorePlan`] (a heavy read)
    pub const RESTORE_PLAN: Route = r(RouteId::RestorePlan, "GET", "/v1/restore/plan/{id}");
    /// [`super::StartRestoreRequest`] (`confirm` repeats `backup_id`) → 202 [`super::JobStarted`]
    pub const START_RESTORE: Route = r(RouteId::StartRestore, "POST", "/v1/restores");
    /// → 202 [`super::JobStarted`]
    pub const RESUME_RESTORE: Route = r(RouteId::ResumeRestore, "POST", "/v1/restores/resume");
    /// → 202 [`super::JobStarted`] of the job told to stop
    pub const ABORT_RESTORE: Route = r(RouteId::AbortRestore, "POST", "/v1/restores/abort");
    /// [`super::Confirm`] of the restore's backup id → 200
    pub const ABANDON_RESTORE: Route = r(RouteId::AbandonRestore, "POST", "/v1/restores/abandon");
    /// → [`super::RestoreStatus`]
    pub const LAST_RESTORE: Route = r(RouteId::LastRestore, "GET", "/v1/restores/last");
    /// → [`super::KeysView`]
    pub const KEYS: Route = r(RouteId::Keys, "GET", "/v1/keys");
    /// [`super::AddKeyRequest`] → 200 (root only)
    pub const ADD_KEY: Route = r(RouteId::AddKey, "POST", "/v1/keys");
    /// [`super::Confirm`] of the slot's name → 200 (root only)
    pub const REMOVE_KEY: Route = r(RouteId::RemoveKey, "POST", "/v1/keys/{name}/remove");
    /// → [`super::RotatedKey`] (root only)
    pub const ROTATE_KEY: Route = r(RouteId::RotateKey, "POST", "/v1/keys/rotate");

    /// → [`super::AgentsView`]: a session with every node's agent (a heavy read)
    pub const AGENTS: Route = r(RouteId::Agents, "GET", "/v1/agents");
    /// [`super::StartDrillRequest`] → 202 [`super::JobStarted`]
    pub const START_DRILL: Route = r(RouteId::StartDrill, "POST", "/v1/drills");
    /// → [`super::DrillList`], the newest first
    pub const DRILLS: Route = r(RouteId::Drills, "GET", "/v1/drills");
    /// → [`crate::catalog::DrillRecord`] of the drill job `{id}`
    pub const DRILL: Route = r(RouteId::Drill, "GET", "/v1/drills/{id}");
    /// `{"target": name}` or nothing (the only `[[copy]]`) → 202 [`super::JobStarted`]
    pub const COPY: Route = r(RouteId::Copy, "POST", "/v1/copy");

    /// The table the daemon's router is built from.
    pub const ALL: [Route; 28] = [
        STATUS,
        BACKUPS,
        BACKUP,
        START_BACKUP,
        PIN,
        UNPIN,
        JOB,
        REPO_CHECK,
        CATALOG_REBUILD,
        REPO_REPAIR_INDEX,
        PRUNE_DRY_RUN,
        PRUNE,
        VERIFY,
        RESTORE_PLAN,
        START_RESTORE,
        RESUME_RESTORE,
        ABORT_RESTORE,
        ABANDON_RESTORE,
        LAST_RESTORE,
        KEYS,
        ADD_KEY,
        REMOVE_KEY,
        ROTATE_KEY,
        AGENTS,
        START_DRILL,
        DRILLS,
        DRILL,
        COPY,
    ];
}

/// The HTTP status of an error `code`: the one place codes meet statuses (hopsdrctl maps 403 to
/// exit 4, 409 to exit 5, the rest to exit 1).
pub fn status_of(code: &str) -> u16 {
    match code {
        "bad_backup_id" | "bad_body" | "bad_job_id" | "bad_json" | "confirmation_required" => 400,
        "permission_denied" => 403,
        "not_found" | "no_restore" | "no_such_backup" | "no_such_job" | "backup_not_found"
        | "no_such_copy" => 404,
        "method_not_allowed" => 405,
        "body_timeout" => 408,
        "busy" | "restore_unfinished" | "no_restore_running" | "restore_running" | "no_standby" => {
            409
        }
        "body_too_large" => 413,
        // What the request names cannot be used: a refused restore, a backup whose manifest or
        // blobs are damaged.
        "no_plan"
        | "no_unfinished_restore"
        | "refused"
        | "blob_missing"
        | "corrupt_blob"
        | "corrupt_file"
        | "corrupt_manifest"
        | "invalid_entry"
        | "unsupported_version"
        | "foreign_format"
        | "not_encrypted"
        | "repository_keys"
        | "wrong_passphrase"
        | "tampered" => 422,
        "too_many_heavy_reads" => 429,
        "too_many_connections" | "stopping" => 503,
        _ => 500,
    }
}

/// `POST /v1/drills`: which backup (default: the newest complete one) and how deep (default 1).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct StartDrillRequest {
    #[serde(default)]
    pub backup: Option<String>,
    #[serde(default)]
    pub level: Option<u8>,
}

/// `GET /v1/drills`: the newest drills.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DrillList {
    pub drills: Vec<crate::catalog::DrillRecord>,
}

/// `GET /v1/repo/check`: the structure check and what the repository's encryption is.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RepoCheckView {
    #[serde(flatten)]
    pub report: crate::repository::CheckReport,
    pub encrypted: bool,
    pub encryption: Option<crate::repository::EncryptionStatus>,
}

/// `GET /v1/agents`: every node's agent, as `hopsdrctl agents check` shows it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AgentsView {
    pub agents: Vec<AgentView>,
}

/// One host's agent: what it is, what it serves, and what is wrong (nothing when it is ready).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct AgentView {
    /// What the host is to the backup, e.g. `datanode dn1, data node 2`.
    pub node: String,
    /// How it is reached: `local` or the ssh host.
    pub address: String,
    /// The roles the backup needs of it.
    pub roles: Vec<String>,
    /// The agent's release, host name and uid, once it answered.
    pub version: Option<String>,
    pub host: Option<String>,
    pub uid: Option<u32>,
    /// An ssh forced command chose what it serves.
    pub forced: bool,
    pub roots: Vec<crate::agent::proto::RootInfo>,
    pub backup_dir: Option<crate::agent::proto::RootInfo>,
    /// The repository's bucket as the agent tried it (`None`: a local repository, which only
    /// hopsdrd reaches).
    #[serde(default)]
    pub repository: Option<crate::agent::proto::StoreProbe>,
    /// Whether the agent's blob-name key names the probe as hopsdrd's does (`None`: a
    /// plaintext repository).
    #[serde(default)]
    pub keys_match: Option<bool>,
    pub problems: Vec<String>,
    pub seconds: f64,
}

/// `GET /v1/keys`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct KeysView {
    pub encrypted: bool,
    pub encryption: Option<crate::repository::EncryptionStatus>,
}

/// Body of `POST /v1/keys`: a new passphrase slot.
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AddKeyRequest {
    pub name: String,
    pub passphrase: String,
}

impl std::fmt::Debug for AddKeyRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AddKeyRequest")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// `POST /v1/keys/rotate`: the new data key.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RotatedKey {
    pub data_key: u32,
}

/// The largest request body the daemon accepts.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// Daemon status.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StatusResponse {
    pub version: String,
    pub pid: u32,
    pub started_at: DateTime<Utc>,
    pub uptime_seconds: u64,
    pub repository: String,
    pub current_job: Option<JobView>,
    pub last_success: Vec<LastSuccessView>,
    pub schedules: Vec<ScheduleView>,
    /// Why scheduled backups and pruning are held off (an unfinished restore), if they are.
    #[serde(default)]
    pub held: Option<String>,
}

/// One schedule as the daemon sees it now.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ScheduleView {
    pub name: String,
    pub cron: String,
    pub timezone: String,
    pub job: String,
    pub next_fire: Option<DateTime<Utc>>,
    pub last_fire: Option<DateTime<Utc>>,
}

/// Progress of a running job.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Progress {
    pub step: String,
    pub files: u64,
    pub logical_bytes: u64,
    pub stored_bytes: u64,
}

/// A job with its live progress when it runs.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JobView {
    pub id: JobId,
    pub kind: JobKind,
    pub state: State,
    /// `api:uid=0` or `schedule:<name>`.
    pub trigger: String,
    pub backup_id: Option<BackupId>,
    pub created_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    pub error: Option<String>,
    pub progress: Option<Progress>,
}

impl JobView {
    /// The view of a job's catalog record, with its live progress if it runs.
    pub fn of(rec: JobRecord, progress: Option<Progress>) -> JobView {
        JobView {
            id: rec.id,
            kind: rec.kind,
            state: rec.state,
            trigger: rec.trigger,
            backup_id: rec.backup_id,
            created_at: rec.created_at,
            finished_at: rec.finished_at,
            error: rec.error,
            progress,
        }
    }
}

/// The newest successful backup of a component (`GET /v1/status`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LastSuccessView {
    pub component: String,
    pub backup_id: BackupId,
    pub finished_at: DateTime<Utc>,
    pub duration_seconds: f64,
    pub logical_bytes: u64,
    pub stored_bytes: u64,
}

impl From<LastSuccess> for LastSuccessView {
    fn from(l: LastSuccess) -> Self {
        LastSuccessView {
            component: l.component,
            backup_id: l.backup_id,
            finished_at: l.finished_at,
            duration_seconds: l.duration_seconds,
            logical_bytes: l.logical_bytes,
            stored_bytes: l.stored_bytes,
        }
    }
}

/// A backup as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BackupView {
    pub id: BackupId,
    /// The job that took it (0 when the catalog was rebuilt from the repository).
    pub job_id: JobId,
    pub state: State,
    pub started_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    pub logical_bytes: u64,
    pub stored_bytes: u64,
    pub files: u64,
    pub error: Option<String>,
    /// The RonDB backup id (`BACKUP-<id>` on the data nodes), when the backup has a RonDB part.
    pub rondb_backup_id: Option<u32>,
    /// Kept by retention whatever the policy says.
    pub pinned: bool,
    /// When the last verification found the backup whole (none since it was damaged).
    pub verified_at: Option<DateTime<Utc>>,
    /// The last verification found damage.
    pub damaged: bool,
    /// Its HopsFS blocks were not checked against the blocks the metadata references.
    pub hopsfs_unchecked: bool,
}

impl From<BackupRecord> for BackupView {
    fn from(b: BackupRecord) -> Self {
        BackupView {
            id: b.id,
            job_id: b.job_id,
            state: b.state,
            started_at: b.started_at,
            finished_at: b.finished_at,
            logical_bytes: b.logical_bytes,
            stored_bytes: b.stored_bytes,
            files: b.files,
            error: b.error,
            rondb_backup_id: b.rondb_backup_id,
            pinned: b.pinned,
            verified_at: b.verified_at,
            damaged: b.damaged,
            hopsfs_unchecked: b.hopsfs_unchecked,
        }
    }
}

/// One component of a backup (files, users, rondb, hopsfs) as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ComponentView {
    pub component: String,
    pub state: State,
    pub started_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    pub logical_bytes: u64,
    pub stored_bytes: u64,
    pub files: u64,
    pub error: Option<String>,
}

impl From<ComponentRecord> for ComponentView {
    fn from(c: ComponentRecord) -> Self {
        ComponentView {
            component: c.component,
            state: c.state,
            started_at: c.started_at,
            finished_at: c.finished_at,
            logical_bytes: c.logical_bytes,
            stored_bytes: c.stored_bytes,
            files: c.files,
            error: c.error,
        }
    }
}

/// Every backup the catalog knows, oldest first.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BackupList {
    pub backups: Vec<BackupView>,
}

/// One backup with its components.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BackupDetail {
    #[serde(flatten)]
    pub backup: BackupView,
    pub components: Vec<ComponentView>,
}

/// Body of `POST /v1/backups` (all fields optional; an empty body is fine).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StartBackupRequest {}

/// A job was started.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JobStarted {
    pub job_id: JobId,
    pub backup_id: Option<BackupId>,
}

/// The error envelope.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

/// A machine-readable code, a message for people, and the running job when busy.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ErrorDetail {
    pub code: String,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_id: Option<JobId>,
}

impl ErrorBody {
    pub fn new(code: &str, message: impl Into<String>) -> Self {
        ErrorBody {
            error: ErrorDetail {
                code: code.to_string(),
                message: message.into(),
                job_id: None,
            },
        }
    }
}

/// Body of `POST /v1/restores`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StartRestoreRequest {
    pub backup_id: String,
    /// The backup id again: a restore overwrites the cluster.
    #[serde(default)]
    pub confirm: Option<String>,
    #[serde(default)]
    pub allow_partial: bool,
    #[serde(default)]
    pub force: bool,
    /// Read the repository as it was then (object versions of a versioned S3 bucket).
    #[serde(default)]
    pub as_of: Option<DateTime<Utc>>,
    /// Read from this `[[copy]]` instead of the repository.
    #[serde(default)]
    pub repository: Option<String>,
}

/// The confirmation a destructive request carries in its body: `{"confirm": "..."}` with what
/// the route names (the backup id, or `"prune"`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Confirm {
    pub confirm: String,
}

impl Confirm {
    /// The body confirming `what`.
    pub fn body(what: &str) -> String {
        serde_json::to_string(&Confirm {
            confirm: what.to_string(),
        })
        .expect("a string serialises")
    }
}

/// A restore as the API shows it: its options typed (the plan is beside it in
/// [`RestoreStatus`]), every step's state.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RestoreView {
    pub id: crate::ids::RestoreId,
    pub backup_id: BackupId,
    pub state: crate::domain::RestoreState,
    pub options: crate::restore::exec::RestoreOptions,
    pub created_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    pub error: Option<String>,
    pub steps: Vec<RestoreStepView>,
}

/// One step of a restore as the API shows it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RestoreStepView {
    pub idx: usize,
    pub state: crate::domain::StepState,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    /// The step's progress as recorded (JSON: node ids done, last output lines).
    pub detail: String,
    pub error: Option<String>,
}

impl RestoreView {
    /// The view of the catalog's record of a restore.
    pub fn of(rec: &crate::catalog::RestoreRecord) -> RestoreView {
        RestoreView {
            id: rec.id,
            backup_id: rec.backup_id.clone(),
            state: rec.state,
            // Recorded by this daemon from the same type; an unreadable value shows the defaults.
            options: serde_json::from_str(&rec.options).unwrap_or_default(),
            created_at: rec.created_at,
            finished_at: rec.finished_at,
            error: rec.error.clone(),
            steps: rec
                .steps
                .iter()
                .map(|s| RestoreStepView {
                    idx: s.idx,
                    state: s.state,
                    started_at: s.started_at,
                    finished_at: s.finished_at,
                    detail: s.detail.clone(),
                    error: s.error.clone(),
                })
                .collect(),
        }
    }
}

/// The last restore: its record, plan, per-step durations and the running job's progress.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RestoreStatus {
    pub restore: RestoreView,
    pub plan: crate::restore::plan::RestorePlan,
    pub report: crate::restore::exec::RestoreReport,
    pub progress: Option<Progress>,
}

/// `GET /v1/prune`: what pruning would do now (newest first), with the reasons each kept
/// backup is kept.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PruneDecisions {
    /// False when `[retention]` has no `keep_*` rule: nothing is ever forgotten.
    pub policy_has_rules: bool,
    pub decisions: Vec<PruneDecision>,
}

/// One backup's fate.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PruneDecision {
    pub id: crate::ids::BackupId,
    pub keep: bool,
    pub reasons: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_and_params_follow_the_table() {
        assert_eq!(
            routes::UNPIN.url(&["20261206T180000Z"]),
            "/v1/backups/20261206T180000Z/unpin"
        );
        assert_eq!(routes::STATUS.url(&[]), "/v1/status");
        assert_eq!(routes::JOB.params("/v1/jobs/42"), ["42"]);
        assert!(routes::PRUNE.changes() && !routes::PRUNE_DRY_RUN.changes());
        assert_eq!(status_of("busy"), 409);
        assert_eq!(status_of("confirmation_required"), 400);
        assert_eq!(status_of("corrupt_manifest"), 422);
        assert_eq!(status_of("storage_io"), 500);
        // Every (method, path) once.
        let mut seen = std::collections::HashSet::new();
        for r in routes::ALL {
            assert!(seen.insert((r.method, r.path)), "{r:?} twice");
        }
    }
}
