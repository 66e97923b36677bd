//! The job runner: exactly one job at a time, and the one place that knows a job's life. A job
//! is claimed (refused "busy" while another runs), recorded in the catalog before its first side
//! effect, made the running one (a cancellation token, live progress), run on a blocking thread
//! in its tracing span once the last job's tidying is done, and ended: what the job records of its
//! end and its final state are written to the catalog while the slot is freed, as one step, then
//! the gauges are refreshed and any follow-up (prune after a backup) is started.
//!
//! The jobs themselves are plain functions in the files next to this one — `backup`, `restore`,
//! `verify`, `prune`, `rebuild` — each starting itself through [`claim`] and [`spawn`]. Adding a
//! job kind: a `JobKind` in the catalog, a file here with its start function, a route in the API.

pub mod backup;
pub mod copy;
pub mod drill;
pub mod prune;
pub mod rebuild;
pub mod repair;
pub mod restore;
pub mod verify;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::api::{JobView, Progress};
use crate::catalog::{Catalog, CatalogError, JobKind, State};
use crate::ids::{BackupId, JobId, RestoreId};

use super::Ctx;

/// Why a job could not be started.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    #[error("busy: job {0} is running; try again when it has finished")]
    Busy(JobId),
    #[error("hopsdrd is stopping")]
    Stopping,
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    #[error("held off: restore {restore_id} of backup {backup_id} is {state}: a backup of a half-restored cluster must not push out the good one; finish it (hopsdrctl restore resume) or abandon it (hopsdrctl restore abandon)")]
    RestoreUnfinished {
        restore_id: RestoreId,
        backup_id: BackupId,
        state: String,
    },
}

impl JobError {
    /// Stable code for the API and logs.
    pub fn code(&self) -> &'static str {
        match self {
            JobError::Busy(_) => "busy",
            JobError::Stopping => "stopping",
            JobError::Catalog(_) => "catalog",
            JobError::RestoreUnfinished { .. } => "restore_unfinished",
        }
    }
}

struct Running {
    id: JobId,
    progress: Arc<Mutex<Progress>>,
    cancel: CancellationToken,
}

/// The one-job-at-a-time runner.
pub struct JobRunner {
    current: Mutex<Option<Running>>,
    idle_tx: Option<watch::Sender<bool>>,
    /// Tidying left by the last job (pins, node copies), running on its own thread; the next
    /// job and the shutdown wait for it.
    cleanup: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl std::fmt::Debug for JobRunner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("JobRunner")
    }
}

impl Default for JobRunner {
    fn default() -> Self {
        Self::new()
    }
}

impl JobRunner {
    pub fn new() -> JobRunner {
        let (tx, _) = watch::channel(true);
        JobRunner {
            current: Mutex::new(None),
            idle_tx: Some(tx),
            cleanup: Mutex::new(None),
        }
    }

    /// The running job's id, if any.
    pub fn current(&self) -> Option<JobId> {
        self.current.lock().ok()?.as_ref().map(|r| r.id)
    }

    /// Live progress of job `id` if it is the one running.
    pub fn progress(&self, id: JobId) -> Option<Progress> {
        let cur = self.current.lock().ok()?;
        let r = cur.as_ref().filter(|r| r.id == id)?;
        let p = r.progress.lock().ok()?.clone();
        Some(p)
    }

    /// Cancels the running job, if any (it stops at its next safe point).
    pub fn cancel_current(&self) {
        if let Ok(cur) = self.current.lock() {
            if let Some(r) = cur.as_ref() {
                r.cancel.cancel();
            }
        }
    }

    /// Waits until no job runs (its final state is in the catalog by then), at most `wait`.
    /// True if idle.
    pub async fn wait_idle_for(&self, wait: Duration) -> bool {
        let Some(tx) = &self.idle_tx else {
            return true;
        };
        let mut rx = tx.subscribe();
        let idle = tokio::time::timeout(wait, rx.wait_for(|idle| *idle))
            .await
            .is_ok();
        idle
    }

    /// Waits until no job runs, or `deadline` passes. True if idle. The last job's tidying is
    /// given what is left of the deadline (a pin it leaves is removed at the next start).
    pub async fn wait_idle(&self, deadline: Duration) -> bool {
        let Some(tx) = &self.idle_tx else {
            return true;
        };
        let start = tokio::time::Instant::now();
        let mut rx = tx.subscribe();
        let idle = tokio::time::timeout(deadline, rx.wait_for(|idle| *idle))
            .await
            .is_ok();
        let tidying = self
            .cleanup
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(h) = tidying {
            let left = deadline.saturating_sub(start.elapsed());
            if tokio::time::timeout(left, tokio::task::spawn_blocking(move || h.join()))
                .await
                .is_err()
            {
                tracing::warn!("the last backup's tidying (pin removal) did not finish in time: it is redone at the next start");
            }
        }
        idle
    }

    /// Runs `f` on its own thread: tidying after a job that has already recorded its outcome.
    fn defer_cleanup(&self, f: impl FnOnce() + Send + 'static) {
        let mut slot = self.cleanup.lock().unwrap_or_else(|p| p.into_inner());
        let previous = slot.take();
        *slot = Some(std::thread::spawn(move || {
            if let Some(h) = previous {
                let _ = h.join();
            }
            f()
        }));
    }

    /// Blocks until the last job's tidying has finished (the next job starts with clean nodes).
    pub fn wait_cleanup(&self) {
        let h = self
            .cleanup
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(h) = h {
            let _ = h.join();
        }
    }

    fn set_idle(&self, idle: bool) {
        if let Some(tx) = &self.idle_tx {
            tx.send_replace(idle);
        }
    }
}

/// The job slot, claimed: no other job can start until this one is started and ended, or the
/// claim dropped.
pub struct Claim<'a> {
    ctx: &'a Arc<Ctx>,
    slot: std::sync::MutexGuard<'a, Option<Running>>,
}

/// Claims the slot of the one running job: fails with `Busy` (naming the running job) or
/// `Stopping` otherwise.
pub fn claim(ctx: &Arc<Ctx>) -> Result<Claim<'_>, JobError> {
    if ctx.root.is_cancelled() {
        return Err(JobError::Stopping);
    }
    let slot = ctx.jobs.current.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(r) = slot.as_ref() {
        return Err(JobError::Busy(r.id));
    }
    Ok(Claim { ctx, slot })
}

/// A started job: what its work gets.
#[derive(Clone)]
pub struct Work {
    pub ctx: Arc<Ctx>,
    pub job_id: JobId,
    pub kind: JobKind,
    pub cancel: CancellationToken,
    pub progress: Arc<Mutex<Progress>>,
}

impl Work {
    /// Sets the step shown in the job's progress.
    pub fn step(&self, step: &str) {
        if let Ok(mut p) = self.progress.lock() {
            p.step = step.to_string();
        }
    }
}

impl Claim<'_> {
    /// Records a job of `kind` started by `trigger` and makes it the running one. `also` writes,
    /// in the same catalog lock, what the job records before it starts (a backup's row); if it
    /// fails the job is recorded failed and not started.
    pub fn start<T>(
        mut self,
        kind: JobKind,
        trigger: &str,
        first_step: &str,
        also: impl FnOnce(&mut Catalog, JobId) -> Result<T, CatalogError>,
    ) -> Result<(Work, T), JobError> {
        let ctx = self.ctx;
        let now = Utc::now();
        let (job_id, value) = {
            let mut cat = lock_catalog(&ctx.catalog);
            let job_id = cat.insert_job(kind, trigger, now)?;
            match also(&mut cat, job_id) {
                Ok(v) => (job_id, v),
                Err(e) => {
                    let _ = cat.finish_job(job_id, State::Failed, Some(&e.to_string()), now);
                    return Err(e.into());
                }
            }
        };
        let cancel = ctx.root.child_token();
        let progress = Arc::new(Mutex::new(Progress {
            step: first_step.into(),
            ..Default::default()
        }));
        *self.slot = Some(Running {
            id: job_id,
            progress: progress.clone(),
            cancel: cancel.clone(),
        });
        ctx.jobs.set_idle(false);
        drop(self.slot);
        ctx.metrics
            .job_running
            .with_label_values(&[kind.as_str()])
            .set(1);
        Ok((
            Work {
                ctx: ctx.clone(),
                job_id,
                kind,
                cancel,
                progress,
            },
            value,
        ))
    }
}

/// What a job writes to the catalog with its final state.
pub type Record = Box<dyn FnOnce(&mut Catalog) -> Result<(), CatalogError> + Send>;
/// What runs once a job has ended.
pub type Then = Box<dyn FnOnce(&Arc<Ctx>) + Send>;

/// What the end of a job records and does, from its outcome.
pub struct Ending {
    pub state: State,
    pub error: Option<String>,
    /// Written to the catalog with the job's final state, while the slot is freed.
    pub record: Option<Record>,
    /// Tidying that needs no slot (pins, node copies): on its own thread, before the next job.
    pub cleanup: Option<Box<dyn FnOnce() + Send>>,
    /// Started once the job has ended (prune after a backup).
    pub then: Option<Then>,
    /// The repository changed (a backup or a prune): its size is read again.
    pub repository_changed: bool,
}

impl Ending {
    /// A job that ended in `state` (with `error`) and records nothing else.
    pub fn plain(state: State, error: Option<String>) -> Ending {
        Ending {
            state,
            error,
            record: None,
            cleanup: None,
            then: None,
            repository_changed: false,
        }
    }
}

/// Runs `run` on a blocking thread inside `span`, after the last job's tidying; then `end`
/// (given what `run` returned, or why its task died) says how the job ended, and the runner
/// records it and frees the slot.
pub fn spawn<T: Send + 'static>(
    work: Work,
    span: tracing::Span,
    run: impl FnOnce(&Work) -> T + Send + 'static,
    end: impl FnOnce(&Work, Result<T, String>) -> Ending + Send + 'static,
) {
    let w = work.clone();
    let task_span = span.clone();
    let handle = tokio::task::spawn_blocking(move || {
        let _entered = task_span.enter();
        w.ctx.jobs.wait_cleanup();
        run(&w)
    });
    tokio::spawn(async move {
        let result = handle
            .await
            .map_err(|e| format!("{} task ended abnormally: {e}", work.kind.as_str()));
        let ending = {
            let _entered = span.enter();
            end(&work, result)
        };
        finish(&work, ending).await;
    });
}

async fn finish(work: &Work, ending: Ending) {
    let ctx = &work.ctx;
    if let Some(c) = ending.cleanup {
        ctx.jobs.defer_cleanup(c);
    }
    ctx.metrics
        .job_running
        .with_label_values(&[work.kind.as_str()])
        .set(0);
    {
        // Lock order: the job slot before the catalog.
        let mut cur = ctx.jobs.current.lock().unwrap_or_else(|p| p.into_inner());
        let mut cat = lock_catalog(&ctx.catalog);
        let recorded = match ending.record {
            Some(record) => record(&mut cat),
            None => Ok(()),
        };
        let finished = cat.finish_job(
            work.job_id,
            ending.state,
            ending.error.as_deref(),
            Utc::now(),
        );
        if let Err(e) = recorded.and(finished) {
            tracing::error!(job_id = %work.job_id, "failed to record the end of {} job {}: {e}", work.kind.as_str(), work.job_id);
        }
        gauges(&cat, &ctx.metrics);
        *cur = None;
        ctx.jobs.set_idle(true);
    }
    if let Some(then) = ending.then {
        then(ctx);
    }
    if ending.repository_changed {
        let repo = ctx.repo.clone();
        if let Ok(Ok(bytes)) = tokio::task::spawn_blocking(move || repo.stored_bytes()).await {
            ctx.metrics.repository_bytes.set(bytes as f64);
        }
    }
}

/// A job run outside the daemon (`hopsdrd --rebuild-catalog`): recorded in `cat` as started by
/// `trigger`, then with its outcome.
pub fn run_offline<T, E: std::fmt::Display>(
    cat: &mut Catalog,
    kind: JobKind,
    trigger: &str,
    f: impl FnOnce(&mut Catalog, JobId) -> Result<T, E>,
) -> Result<Result<T, E>, CatalogError> {
    let job = cat.insert_job(kind, trigger, Utc::now())?;
    let r = f(cat, job);
    let (state, error) = match &r {
        Ok(_) => (State::Succeeded, None),
        Err(e) => (State::Failed, Some(e.to_string())),
    };
    cat.finish_job(job, state, error.as_deref(), Utc::now())?;
    Ok(r)
}

/// The catalog, locked.
pub fn lock_catalog(cat: &Mutex<Catalog>) -> std::sync::MutexGuard<'_, Catalog> {
    // A panic while holding the lock aborts the process (panic = "abort"), so poisoning is only
    // seen in tests; the data is still consistent because every write is one SQL statement.
    cat.lock().unwrap_or_else(|p| p.into_inner())
}

/// A job's view for the API: the catalog record plus live progress.
pub fn job_view(ctx: &Ctx, id: JobId) -> Result<Option<JobView>, CatalogError> {
    let rec = lock_catalog(&ctx.catalog).job(id)?;
    Ok(rec.map(|record| {
        let progress = ctx.jobs.progress(record.id);
        JobView::of(record, progress)
    }))
}

/// `hopsdr_backups{state}` and `hopsdr_backup_hopsfs_unchecked` from the catalog.
pub fn refresh_backup_gauges(ctx: &Ctx) {
    backup_gauges(&lock_catalog(&ctx.catalog), &ctx.metrics);
}

/// The gauges the catalog's backups and restores give: set while the catalog is held, so that
/// whoever sees a job's final state sees them too.
fn gauges(cat: &Catalog, m: &super::metrics::Metrics) {
    backup_gauges(cat, m);
    if let Ok(last) = cat.last_restore() {
        m.restore_unfinished
            .set(restore::held_off_by(last).is_some() as i64);
    }
}

fn backup_gauges(cat: &Catalog, m: &super::metrics::Metrics) {
    // Whether the newest committed backup's HopsFS blocks went unchecked.
    if let Ok(backups) = cat.backups() {
        let newest = backups
            .iter()
            .rev()
            .find(|b| matches!(b.state, State::Succeeded | State::Partial));
        m.hopsfs_unchecked
            .set(newest.is_some_and(|b| b.hopsfs_unchecked) as i64);
    }
    if let Ok(counts) = cat.backup_counts() {
        for s in [
            State::Succeeded,
            State::Partial,
            State::Failed,
            State::Interrupted,
            State::Running,
        ] {
            let n = counts
                .iter()
                .find(|(k, _)| *k == s)
                .map(|x| x.1)
                .unwrap_or(0);
            m.backups.with_label_values(&[s.as_str()]).set(n as i64);
        }
    }
}
