//! The socket API's contract: routes and the request/response types that `hopsdrd` serves and
//! `hopsdrctl` reads, HTTP/1.1 + JSON over a Unix socket. One module, used by both binaries, so the
//! two cannot disagree.
//!
//! Routes (all under `/v1`):
//! - `GET  /v1/status` → [`StatusResponse`] (read)
//! - `GET  /v1/backups` → [`BackupList`] (read)
//! - `GET  /v1/backups/{id}` → [`BackupDetail`] (read)
//! - `POST /v1/backups` → 202 [`JobStarted`] (change; 409 [`ErrorBody`] with `job_id` when busy)
//! - `GET  /v1/jobs/{id}` → [`JobView`] (read)
//! - `GET  /v1/restore/plan/{backup}` → [`crate::restore::plan::RestorePlan`] (read)
//! - `POST /v1/restores` [`StartRestoreRequest`] → 202 [`JobStarted`] (change; `confirm` must
//!   repeat `backup_id`)
//! - `POST /v1/restores/resume` → 202 [`JobStarted`] (change)
//! - `POST /v1/restores/abandon` [`Confirm`] of the restore's backup id → 200 (change)
//! - `GET  /v1/prune` → [`PruneDecisions`], the dry run (read)
//! - `POST /v1/prune` [`Confirm`] `"prune"` → 202 [`JobStarted`] (change)
//! - `POST /v1/backups/{id}/pin` → 200; `.../unpin` [`Confirm`] of the id → 200 (change)
//! - `POST /v1/restores/abort` → 202 [`JobStarted`] of the job told to stop (change)
//! - `GET  /v1/restores/last` → [`RestoreStatus`] (read)
//!
//! Errors are `{"error":{"code":"...","message":"..."}}` with a fitting status. A destructive
//! request without its confirmation gets 400 `confirmation_required` and changes nothing.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::catalog::{BackupRecord, ComponentRecord, JobRecord, LastSuccess};
use crate::ids::{BackupId, JobId};

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
    pub last_success: Vec<LastSuccess>,
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
    #[serde(flatten)]
    pub record: JobRecord,
    pub progress: Option<Progress>,
}

/// Every backup the catalog knows, oldest first.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BackupList {
    pub backups: Vec<BackupRecord>,
}

/// One backup with its components.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BackupDetail {
    #[serde(flatten)]
    pub backup: BackupRecord,
    pub components: Vec<ComponentRecord>,
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
