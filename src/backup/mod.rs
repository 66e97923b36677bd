//! Backups: the plan of components a backup runs and its execution into the repository, with
//! each component's result reported to an observer (the job runner records it in the catalog).
//!
//! A backup is committed only by writing its manifest, after every component succeeded; a
//! failed or cancelled backup leaves no manifest, so it does not exist in the repository.
//! Components so far: `files` (cluster definition and config files).

pub mod files;
pub mod rondb;

use std::path::PathBuf;

use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;

use crate::config::BackupSettings;
use crate::ids::BackupId;
use crate::repository::{BackupInfo, ComponentInfo, Manifest, RepoError, Repository, WriteStats};

/// Why a backup failed.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error("backup path \"{path}\" does not exist: create it, remove it from [backup.files], or mark its entry optional = true")]
    PathMissing { path: PathBuf },
    #[error("failed to read \"{path}\": {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Repository(#[from] RepoError),
    #[error("cancelled: hopsdrd is stopping")]
    Cancelled,
}

impl BackupError {
    /// True when the backup stopped because it was cancelled, not because something failed.
    pub fn is_cancelled(&self) -> bool {
        matches!(
            self,
            BackupError::Cancelled | BackupError::Repository(RepoError::Cancelled)
        )
    }
}

/// The components a backup runs, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupPlan {
    pub steps: Vec<BackupStep>,
}

/// One component of a backup plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BackupStep {
    Files { paths: Vec<PathBuf> },
}

impl BackupStep {
    pub fn component(&self) -> &'static str {
        match self {
            BackupStep::Files { .. } => "files",
        }
    }
}

impl BackupPlan {
    /// The plan for the configured backup.
    pub fn from_settings(s: &BackupSettings) -> BackupPlan {
        BackupPlan {
            steps: vec![BackupStep::Files {
                paths: s.files.iter().map(|f| f.path.clone()).collect(),
            }],
        }
    }
}

/// What happened to one component.
#[derive(Debug, Clone)]
pub struct ComponentOutcome {
    pub component: String,
    pub started_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
    pub stats: WriteStats,
    pub error: Option<String>,
}

/// A callback with the writer's running totals, called after every chunk.
pub type ProgressSink = Box<dyn FnMut(&WriteStats) + Send>;

/// Told about a backup as it goes (the job runner records this in the catalog and metrics).
pub trait BackupObserver: Send {
    fn component_started(&mut self, component: &str, at: DateTime<Utc>);
    fn component_finished(&mut self, outcome: &ComponentOutcome);
    fn progress(&mut self, component: &str, stats: &WriteStats);
    /// A callback the repository writer calls after every chunk, for live progress.
    fn progress_sink(&self, component: &str) -> Option<ProgressSink>;
}

/// The result of a committed backup.
#[derive(Debug, Clone)]
pub struct BackupOutcome {
    pub manifest: Manifest,
    pub stats: WriteStats,
}

/// Runs a backup: every component into a new backup `id`, then commits the manifest.
/// `clock` gives the current time (only the daemon reads the real clock).
pub fn run(
    repo: &Repository,
    id: BackupId,
    settings: &BackupSettings,
    cancel: &CancellationToken,
    observer: &mut dyn BackupObserver,
    clock: &dyn Fn() -> DateTime<Utc>,
    hostname: &str,
) -> Result<BackupOutcome, BackupError> {
    let started_at = clock();
    let mut writer = repo.begin_backup(id.clone(), cancel.clone());
    let mut components = Vec::new();
    let before = writer.stats();

    // files
    let c_start = clock();
    observer.component_started("files", c_start);
    if let Some(sink) = observer.progress_sink("files") {
        writer.set_progress(sink);
    }
    let res = files::back_up(&settings.files, &mut writer, cancel);
    let after = writer.stats();
    let delta = stats_delta(&after, &before);
    let outcome = ComponentOutcome {
        component: "files".into(),
        started_at: c_start,
        finished_at: clock(),
        stats: delta,
        error: res.as_ref().err().map(|e| e.to_string()),
    };
    observer.component_finished(&outcome);
    res?;
    observer.progress("files", &after);
    components.push(ComponentInfo {
        name: "files".into(),
        state: "succeeded".into(),
        logical_bytes: delta.logical_bytes,
        files: delta.files,
    });

    crate::failpoint::hit("backup.before_commit", cancel);
    if cancel.is_cancelled() {
        return Err(BackupError::Cancelled);
    }
    let stats = writer.stats();
    let info = BackupInfo {
        started_at,
        finished_at: clock(),
        hostname: hostname.to_string(),
        hopsdr_version: env!("CARGO_PKG_VERSION").to_string(),
        components,
        extra: Default::default(),
    };
    let manifest = writer.commit(info)?;
    Ok(BackupOutcome { manifest, stats })
}

/// What a component added to the writer's running totals.
fn stats_delta(after: &WriteStats, before: &WriteStats) -> WriteStats {
    WriteStats {
        logical_bytes: after.logical_bytes - before.logical_bytes,
        stored_bytes: after.stored_bytes - before.stored_bytes,
        files: after.files - before.files,
        new_blobs: after.new_blobs - before.new_blobs,
        reused_blobs: after.reused_blobs - before.reused_blobs,
    }
}
