//! Backups: the plan of components a backup runs and its execution into the repository, with
//! each component's result reported to an observer (the job runner records it in the catalog).
//!
//! A backup is committed only by writing its manifest, after every component succeeded; a
//! failed or cancelled backup leaves no manifest, so it does not exist in the repository.
//! Components so far: `files` (cluster definition and config files).

pub mod files;
pub mod rondb;
pub mod users;

use std::path::PathBuf;

use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;

use crate::config::Settings;
use crate::ids::BackupId;
use crate::repository::{
    BackupInfo, BackupWriter, ComponentInfo, Manifest, RepoError, Repository, WriteStats,
};

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
    #[error("users: {0}")]
    Users(#[from] users::UsersError),
    #[error("rondb: {0}")]
    Rondb(#[from] rondb::RondbError),
    #[error("preflight: the repository {repo} has {} free, less than the previous backup's size plus a margin ({}): free space or prune old backups", crate::ctl::human_bytes(*.available), crate::ctl::human_bytes(*.needed))]
    NoRoom {
        repo: String,
        available: u64,
        needed: u64,
    },
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
    Users,
    Rondb,
}

impl BackupStep {
    pub fn component(&self) -> &'static str {
        match self {
            BackupStep::Files { .. } => "files",
            BackupStep::Users => "users",
            BackupStep::Rondb => "rondb",
        }
    }
}

impl BackupPlan {
    /// The plan for the configured backup.
    pub fn from_settings(s: &Settings) -> BackupPlan {
        let mut steps = vec![BackupStep::Files {
            paths: s.backup.files.iter().map(|f| f.path.clone()).collect(),
        }];
        if s.mysql.is_some() {
            steps.push(BackupStep::Users);
        }
        if s.rondb.is_some() {
            steps.push(BackupStep::Rondb);
        }
        BackupPlan { steps }
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
    pub rondb: Option<rondb::RondbFacts>,
}

/// What a backup needs besides the repository.
pub struct BackupRequest<'a> {
    pub settings: &'a Settings,
    /// The last RonDB backup id used for this cluster (from the catalog).
    pub last_rondb_id: Option<u32>,
    /// The logical size of the previous successful backup: the repository must have room for
    /// at least this plus a margin before anything starts.
    pub previous_bytes: Option<u64>,
    pub hostname: &'a str,
}

/// Runs one component, reporting its start and end to the observer with its share of the
/// writer's totals.
struct Components<'a> {
    writer: BackupWriter,
    observer: &'a mut dyn BackupObserver,
    clock: &'a dyn Fn() -> DateTime<Utc>,
    done: Vec<ComponentInfo>,
}

impl Components<'_> {
    fn run<T>(
        &mut self,
        name: &str,
        f: impl FnOnce(&mut BackupWriter) -> Result<T, BackupError>,
    ) -> Result<T, BackupError> {
        let before = self.writer.stats();
        let started_at = (self.clock)();
        self.observer.component_started(name, started_at);
        if let Some(sink) = self.observer.progress_sink(name) {
            self.writer.set_progress(sink);
        }
        let res = f(&mut self.writer);
        let after = self.writer.stats();
        let delta = stats_delta(&after, &before);
        self.observer.component_finished(&ComponentOutcome {
            component: name.into(),
            started_at,
            finished_at: (self.clock)(),
            stats: delta,
            error: res.as_ref().err().map(|e| e.to_string()),
        });
        let value = res?;
        self.observer.progress(name, &after);
        self.done.push(ComponentInfo {
            name: name.into(),
            state: "succeeded".into(),
            logical_bytes: delta.logical_bytes,
            files: delta.files,
        });
        Ok(value)
    }
}

/// Runs a backup: every configured component into a new backup `id` (files, users, rondb, in
/// that order), then commits the manifest, then removes the data nodes' local copies.
/// `clock` gives the current time (only the daemon reads the real clock).
pub fn run(
    repo: &Repository,
    id: BackupId,
    req: &BackupRequest<'_>,
    cancel: &CancellationToken,
    observer: &mut dyn BackupObserver,
    clock: &dyn Fn() -> DateTime<Utc>,
) -> Result<BackupOutcome, BackupError> {
    let settings = req.settings;
    let started_at = clock();
    if let Some(prev) = req.previous_bytes {
        let needed = required_room(prev);
        if let Some(available) = repo.available_bytes()? {
            if available < needed {
                return Err(BackupError::NoRoom {
                    repo: repo.describe(),
                    available,
                    needed,
                });
            }
        }
    }
    let mut c = Components {
        writer: repo.begin_backup(id.clone(), cancel.clone()),
        observer,
        clock,
        done: Vec::new(),
    };
    let mut extra = serde_json::Map::new();

    c.run("files", |w| {
        files::back_up(&settings.backup.files, w, cancel).map(|_| ())
    })?;
    if let Some(m) = &settings.mysql {
        let now = clock();
        let out = c.run("users", |w| Ok(users::back_up(m, w, now)?))?;
        extra.insert(
            "users".into(),
            serde_json::json!({
                "accounts": out.accounts, "roles": out.roles, "views": out.views,
                "routines": out.routines, "triggers": out.triggers, "events": out.events,
            }),
        );
    }
    let mut rondb_done = None;
    if let Some(r) = &settings.rondb {
        let run = rondb::RondbRun {
            settings: r,
            ssh: &settings.ssh,
            last_id: req.last_rondb_id,
            clock,
            cancel,
        };
        let (facts, nodes) = c.run("rondb", |w| Ok(rondb::back_up(&run, w)?))?;
        extra.insert(
            "rondb".into(),
            serde_json::to_value(&facts).unwrap_or_default(),
        );
        rondb_done = Some((facts, nodes));
    }

    crate::failpoint::hit("backup.before_commit", cancel);
    if cancel.is_cancelled() {
        return Err(BackupError::Cancelled);
    }
    let stats = c.writer.stats();
    let info = BackupInfo {
        started_at,
        finished_at: clock(),
        hostname: req.hostname.to_string(),
        hopsdr_version: env!("CARGO_PKG_VERSION").to_string(),
        components: c.done,
        extra,
    };
    let manifest = c.writer.commit(info)?;
    let mut rondb_facts = None;
    if let (Some((facts, nodes)), Some(r)) = (rondb_done, &settings.rondb) {
        if !r.keep_node_copies {
            rondb::cleanup(&nodes, facts.backup_id, r.command_timeout);
        }
        rondb_facts = Some(facts);
    }
    Ok(BackupOutcome {
        manifest,
        stats,
        rondb: rondb_facts,
    })
}

/// The free space a backup needs in the repository, from the previous backup's logical size
/// (an upper bound of what it writes: compression and deduplication only make it smaller).
pub fn required_room(previous_bytes: u64) -> u64 {
    previous_bytes + previous_bytes / 10 + (64 << 20)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn room_is_the_previous_size_plus_a_margin() {
        assert_eq!(required_room(0), 64 << 20);
        assert_eq!(required_room(1000 << 20), (1100 << 20) + (64 << 20));
    }
}
