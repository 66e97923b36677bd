//! The job runner: exactly one job at a time. It records every job in the catalog before its
//! first side effect, runs the work on a blocking thread with a cancellation token, reports
//! progress, and records the outcome (succeeded, failed, interrupted) in the catalog, the metrics,
//! the journal and the systemd status line.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::api::{JobStarted, JobView, Progress};
use crate::backup::{self, BackupObserver, ComponentOutcome};
use crate::catalog::{Catalog, CatalogError, ComponentRecord, JobKind, State};
use crate::ids::{BackupId, JobId};
use crate::repository::WriteStats;

use super::{notify, Ctx};

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
        restore_id: i64,
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

/// The last restore if it failed or stopped before the end (not succeeded, not abandoned).
pub fn unfinished_restore(ctx: &Ctx) -> Result<Option<JobError>, CatalogError> {
    let last = lock_catalog(&ctx.catalog).last_restore()?;
    Ok(last
        .filter(|r| !matches!(r.state.as_str(), "succeeded" | "abandoned"))
        .map(|r| JobError::RestoreUnfinished {
            restore_id: r.id,
            backup_id: r.backup_id,
            state: r.state,
        }))
}

/// `hopsdr_restore_unfinished` from the catalog.
pub fn refresh_restore_gauge(ctx: &Ctx) {
    if let Ok(u) = unfinished_restore(ctx) {
        ctx.metrics.restore_unfinished.set(u.is_some() as i64);
    }
}

pub(super) struct Running {
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

/// The slot of the one running job, claimed: fails with `Busy` (or `Stopping`) otherwise.
pub(super) fn claim(ctx: &Ctx) -> Result<std::sync::MutexGuard<'_, Option<Running>>, JobError> {
    if ctx.root.is_cancelled() {
        return Err(JobError::Stopping);
    }
    let cur = ctx.jobs.current.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(r) = cur.as_ref() {
        return Err(JobError::Busy(r.id));
    }
    Ok(cur)
}

/// Records job `id` as the running one; returns its cancellation token and progress.
pub(super) fn install(
    ctx: &Ctx,
    mut slot: std::sync::MutexGuard<'_, Option<Running>>,
    id: JobId,
    kind: JobKind,
    step: &str,
) -> (CancellationToken, Arc<Mutex<Progress>>) {
    let cancel = ctx.root.child_token();
    let progress = Arc::new(Mutex::new(Progress {
        step: step.into(),
        ..Default::default()
    }));
    *slot = Some(Running {
        id,
        progress: progress.clone(),
        cancel: cancel.clone(),
    });
    ctx.jobs.set_idle(false);
    drop(slot);
    ctx.metrics
        .job_running
        .with_label_values(&[kind.as_str()])
        .set(1);
    (cancel, progress)
}

/// Records the end of a job of `kind` (`record` writes its final state to the catalog) and
/// frees the slot, as one step: whoever sees the final state can start the next job.
pub(super) fn release(ctx: &Ctx, kind: JobKind, record: impl FnOnce(&mut Catalog)) {
    ctx.metrics
        .job_running
        .with_label_values(&[kind.as_str()])
        .set(0);
    // Lock order: the job slot before the catalog.
    let mut cur = ctx.jobs.current.lock().unwrap_or_else(|p| p.into_inner());
    record(&mut lock_catalog(&ctx.catalog));
    *cur = None;
    ctx.jobs.set_idle(true);
}

pub(super) fn lock_catalog(cat: &Mutex<Catalog>) -> std::sync::MutexGuard<'_, Catalog> {
    // A panic while holding the lock aborts the process (panic = "abort"), so poisoning is only
    // seen in tests; the data is still consistent because every write is one SQL statement.
    cat.lock().unwrap_or_else(|p| p.into_inner())
}

/// A job's view for the API: the catalog record plus live progress.
pub fn job_view(ctx: &Ctx, id: JobId) -> Result<Option<JobView>, CatalogError> {
    let rec = lock_catalog(&ctx.catalog).job(id)?;
    Ok(rec.map(|record| JobView {
        progress: ctx.jobs.progress(record.id),
        record,
    }))
}

fn new_backup_id(ctx: &Ctx, cat: &Catalog, now: DateTime<Utc>) -> Result<BackupId, CatalogError> {
    let in_repo = ctx.repo.list_backups().unwrap_or_default();
    let mut seq = 0;
    loop {
        let id = BackupId::at(now, seq);
        if !cat.backup_exists(&id)? && !in_repo.contains(&id) {
            return Ok(id);
        }
        seq += 1;
    }
}

/// Starts a backup job. `trigger` says who asked (`api:uid=0`, `schedule:nightly`).
pub fn start_backup(ctx: &Arc<Ctx>, trigger: &str) -> Result<JobStarted, JobError> {
    // Scheduled backups wait for an unfinished restore to be finished or abandoned (an operator
    // may still start one by hand).
    if trigger.starts_with("schedule:") {
        if let Some(e) = unfinished_restore(ctx)? {
            return Err(e);
        }
    }
    let slot = claim(ctx)?;
    let now = Utc::now();
    let (job_id, backup_id) = {
        let mut cat = lock_catalog(&ctx.catalog);
        let job_id = cat.insert_job(JobKind::Backup, trigger, now)?;
        let backup_id = new_backup_id(ctx, &cat, now)?;
        if let Err(e) = cat.insert_backup(&backup_id, job_id, now) {
            let _ = cat.finish_job(job_id, State::Failed, Some(&e.to_string()), now);
            return Err(e.into());
        }
        (job_id, backup_id)
    };
    let (cancel, progress) = install(ctx, slot, job_id, JobKind::Backup, "starting");
    tracing::info!(job_id = %job_id, backup_id = %backup_id, trigger = trigger, "backup started");
    notify::status(&format!("backup {backup_id} running (job {job_id})"));

    let ctx2 = ctx.clone();
    let bid = backup_id.clone();
    let succeeded: Arc<Mutex<Vec<ComponentOutcome>>> = Default::default();
    let succeeded2 = succeeded.clone();
    let handle = tokio::task::spawn_blocking(move || {
        // Every event of the job carries BACKUP_ID and JOB_ID (journald fields).
        let span = tracing::info_span!("backup", backup_id = %bid, job_id = %job_id);
        let _entered = span.enter();
        ctx2.jobs.wait_cleanup();
        let settings = ctx2.settings();
        let mut obs = Observer {
            ctx: ctx2.clone(),
            backup_id: bid.clone(),
            job_id,
            progress,
            last_status: std::time::Instant::now(),
            succeeded: succeeded2,
        };
        let mut self_files = Vec::new();
        let (last_rondb_id, previous_bytes) = {
            let cat = lock_catalog(&ctx2.catalog);
            // The catalog as of this backup's start (its own row included) and the config,
            // stored with the backup for `hopsdrd --rebuild-catalog`.
            match cat.snapshot() {
                Ok(bytes) => self_files.push(("catalog.db".to_string(), bytes)),
                Err(e) => tracing::warn!("the catalog is not stored with this backup: {e}"),
            }
            let previous = cat.backups().ok().and_then(|b| {
                b.iter()
                    .rev()
                    .find(|b| b.state == State::Succeeded)
                    .map(|b| b.logical_bytes)
            });
            (cat.last_rondb_backup_id().unwrap_or(None), previous)
        };
        let suspect_blobs = lock_catalog(&ctx2.catalog).bad_blobs().unwrap_or_else(|e| {
            tracing::error!("failed to read the blobs known damaged: {e}");
            Default::default()
        });
        match std::fs::read(&settings.path) {
            Ok(bytes) => self_files.push(("hopsdr.toml".to_string(), bytes)),
            Err(e) => tracing::warn!(
                "the config {} is not stored with this backup: {e}",
                settings.path.display()
            ),
        }
        let req = backup::BackupRequest {
            settings: &settings,
            last_rondb_id,
            previous_bytes,
            started_at: now,
            self_files,
            hostname: &ctx2.hostname,
            suspect_blobs,
        };
        let r = backup::run(&ctx2.repo, bid, &req, &cancel, &mut obs, &Utc::now);
        (r, cancel.is_cancelled())
    });
    let ctx3 = ctx.clone();
    let bid = backup_id.clone();
    tokio::spawn(async move {
        let result = handle.await;
        let components = std::mem::take(&mut *succeeded.lock().unwrap_or_else(|p| p.into_inner()));
        finish_backup(&ctx3, job_id, &bid, result, &components).await;
    });
    Ok(JobStarted {
        job_id,
        backup_id: Some(backup_id),
    })
}

async fn finish_backup(
    ctx: &Arc<Ctx>,
    job_id: JobId,
    backup_id: &BackupId,
    result: Result<
        (Result<backup::BackupOutcome, backup::BackupError>, bool),
        tokio::task::JoinError,
    >,
    components: &[ComponentOutcome],
) {
    let now = Utc::now();
    let mut finished_at = now;
    let mut rondb_id = None;
    let mut cleanup = None;
    let mut healed = Vec::new();
    let mut hopsfs_unchecked = false;
    let (state, error, stats) = match result {
        Ok((Ok(outcome), _)) => {
            rondb_id = outcome.rondb.as_ref().map(|f| f.backup_id);
            // As the manifest says: a catalog rebuilt from the manifests shows the same.
            finished_at = outcome.manifest.info.finished_at;
            cleanup = Some(outcome.cleanup);
            healed = outcome.healed;
            hopsfs_unchecked = backup::hopsfs::coverage_unchecked(&outcome.manifest);
            record_hopsfs_metrics(ctx, &outcome.manifest);
            match outcome.partial {
                Some(why) => (State::Partial, Some(why), outcome.stats),
                None => (State::Succeeded, None, outcome.stats),
            }
        }
        Ok((Err(e), cancelled)) if cancelled || e.is_cancelled() => (
            State::Interrupted,
            Some(format!("interrupted: {e}")),
            WriteStats::default(),
        ),
        Ok((Err(e), _)) => (State::Failed, Some(e.to_string()), WriteStats::default()),
        Err(e) => (
            State::Failed,
            Some(format!("backup task ended abnormally: {e}")),
            WriteStats::default(),
        ),
    };
    ctx.metrics
        .backups_total
        .with_label_values(&[state.as_str()])
        .inc();
    // The components' success counts once the backup is committed; a backup that failed after
    // them (catalog copy, flush, manifest, upload) fails them too.
    if matches!(state, State::Succeeded | State::Partial) {
        record_component_successes(ctx, components);
    } else {
        for o in components {
            ctx.metrics
                .backup_last_status
                .with_label_values(&[o.component.as_str()])
                .set(0);
        }
    }
    match &error {
        Some(e) if state == State::Partial => {
            tracing::warn!(job_id = %job_id, backup_id = %backup_id, "backup committed but {e}");
            notify::status(&format!("idle; last backup {backup_id} partial"));
        }
        None => {
            tracing::info!(job_id = %job_id, backup_id = %backup_id, logical_bytes = stats.logical_bytes,
                stored_bytes = stats.stored_bytes, files = stats.files, "backup succeeded");
            notify::status(&format!("idle; last backup {backup_id} succeeded"));
        }
        Some(e) => {
            tracing::error!(job_id = %job_id, backup_id = %backup_id, "backup {}: {e}", state.as_str());
            notify::status(&format!("idle; last backup {backup_id} {}", state.as_str()));
        }
    }
    if let Some(c) = cleanup.filter(|c| !c.is_empty()) {
        let span = tracing::info_span!("backup", backup_id = %backup_id, job_id = %job_id);
        ctx.jobs.defer_cleanup(move || {
            let _entered = span.enter();
            c.run()
        });
    }
    release(ctx, JobKind::Backup, |cat| {
        let r = cat
            .finish_backup(
                backup_id,
                state,
                stats.logical_bytes,
                stats.stored_bytes,
                stats.files,
                error.as_deref(),
                finished_at,
            )
            .and_then(|_| match rondb_id {
                Some(r) => cat.set_rondb_backup_id(backup_id, r),
                None => Ok(()),
            })
            .and_then(|_| cat.set_hopsfs_unchecked(backup_id, hopsfs_unchecked))
            .and_then(|_| cat.remove_bad_blobs(&healed))
            .and_then(|_| cat.finish_job(job_id, state, error.as_deref(), now));
        if let Err(e) = r {
            tracing::error!(job_id = %job_id, backup_id = %backup_id, "failed to record the end of the backup: {e}");
        }
    });
    crate::failpoint::hit("backup.recorded", &CancellationToken::new());
    if !healed.is_empty() {
        tracing::warn!(job_id = %job_id, backup_id = %backup_id, healed = healed.len(),
            "backup {backup_id} wrote again {} blob(s) found damaged or missing: healed", healed.len());
    }
    refresh_backup_gauges(ctx);
    let settings = ctx.settings();
    if state == State::Succeeded
        && settings.retention.prune_after_backup
        && settings.retention.policy.has_rules()
    {
        match super::prune::start_prune(ctx, &format!("after backup {backup_id}")) {
            Ok(j) => tracing::info!(job_id = %j.job_id, "pruning after backup {backup_id}"),
            Err(e) => tracing::warn!("no pruning after backup {backup_id}: {e}"),
        }
    }
    let repo = ctx.repo.clone();
    if let Ok(Ok(bytes)) = tokio::task::spawn_blocking(move || repo.stored_bytes()).await {
        ctx.metrics.repository_bytes.set(bytes as f64);
    }
}

/// `hopsdr_backups{state}` from the catalog.
pub fn refresh_backup_gauges(ctx: &Ctx) {
    // Whether the newest committed backup's HopsFS blocks went unchecked.
    if let Ok(backups) = lock_catalog(&ctx.catalog).backups() {
        let newest = backups
            .iter()
            .rev()
            .find(|b| matches!(b.state, State::Succeeded | State::Partial));
        ctx.metrics
            .hopsfs_unchecked
            .set(newest.is_some_and(|b| b.hopsfs_unchecked) as i64);
    }
    let counts = lock_catalog(&ctx.catalog).backup_counts();
    if let Ok(counts) = counts {
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
            ctx.metrics
                .backups
                .with_label_values(&[s.as_str()])
                .set(n as i64);
        }
    }
}

/// The HopsFS figures of a committed backup, from its manifest.
fn record_hopsfs_metrics(ctx: &Ctx, manifest: &crate::repository::Manifest) {
    let Some(h) = manifest.info.extra.get("hopsfs") else {
        return;
    };
    let Ok(f) = serde_json::from_value::<backup::hopsfs::HopsfsFacts>(h.clone()) else {
        return;
    };
    let m = &ctx.metrics;
    m.hopsfs_blocks_missing.set(f.missing_blocks.len() as f64);
    m.hopsfs_fence_window.set(f.fence_window_seconds);
    m.hopsfs_blocks
        .with_label_values(&["total"])
        .set(f.blocks as f64);
    m.hopsfs_blocks
        .with_label_values(&["new"])
        .set(f.blocks_new as f64);
}

/// Records components in the catalog as the backup goes; their success reaches the metrics only
/// once the backup is committed (`succeeded` below), a failure at once.
struct Observer {
    ctx: Arc<Ctx>,
    backup_id: BackupId,
    job_id: JobId,
    progress: Arc<Mutex<Progress>>,
    last_status: std::time::Instant,
    succeeded: Arc<Mutex<Vec<ComponentOutcome>>>,
}

/// Sets the success metrics of the components of a committed backup.
fn record_component_successes(ctx: &Ctx, outcomes: &[ComponentOutcome]) {
    let m = &ctx.metrics;
    for o in outcomes {
        let c = [o.component.as_str()];
        m.backup_last_status.with_label_values(&c).set(1);
        m.backup_last_success
            .with_label_values(&c)
            .set(o.finished_at.timestamp_millis() as f64 / 1000.0);
        m.backup_duration
            .with_label_values(&c)
            .set((o.finished_at - o.started_at).num_milliseconds().max(0) as f64 / 1000.0);
        m.backup_bytes
            .with_label_values(&c)
            .set(o.stats.logical_bytes as f64);
        m.backup_stored_bytes
            .with_label_values(&c)
            .set(o.stats.stored_bytes as f64);
    }
}

impl BackupObserver for Observer {
    fn component_started(&mut self, component: &str, at: DateTime<Utc>) {
        tracing::info!(job_id = %self.job_id, backup_id = %self.backup_id, step = component, "component started");
        if let Ok(mut p) = self.progress.lock() {
            p.step = component.to_string();
        }
        let rec = ComponentRecord {
            backup_id: self.backup_id.clone(),
            component: component.to_string(),
            state: State::Running,
            started_at: at,
            finished_at: None,
            logical_bytes: 0,
            stored_bytes: 0,
            files: 0,
            error: None,
        };
        if let Err(e) = lock_catalog(&self.ctx.catalog).upsert_component(&rec) {
            tracing::error!(backup_id = %self.backup_id, "{e}");
        }
        notify::status(&format!(
            "backup {} running (job {}): {component}",
            self.backup_id, self.job_id
        ));
    }

    fn component_finished(&mut self, o: &ComponentOutcome) {
        let state = match &o.error {
            None => State::Succeeded,
            Some(_) if self.ctx.root.is_cancelled() => State::Interrupted,
            Some(_) => State::Failed,
        };
        let rec = ComponentRecord {
            backup_id: self.backup_id.clone(),
            component: o.component.clone(),
            state,
            started_at: o.started_at,
            finished_at: Some(o.finished_at),
            logical_bytes: o.stats.logical_bytes,
            stored_bytes: o.stats.stored_bytes,
            files: o.stats.files,
            error: o.error.clone(),
        };
        if let Err(e) = lock_catalog(&self.ctx.catalog).upsert_component(&rec) {
            tracing::error!(backup_id = %self.backup_id, "{e}");
        }
        let m = &self.ctx.metrics;
        let c = [o.component.as_str()];
        match &o.error {
            None => {
                tracing::info!(job_id = %self.job_id, backup_id = %self.backup_id, step = %o.component,
                    logical_bytes = o.stats.logical_bytes, stored_bytes = o.stats.stored_bytes, "component succeeded");
                self.succeeded
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push(o.clone());
            }
            Some(e) => {
                tracing::error!(job_id = %self.job_id, backup_id = %self.backup_id, step = %o.component, "component {}: {e}", state.as_str());
                m.backup_last_status.with_label_values(&c).set(0);
            }
        }
    }

    fn progress_sink(&self, component: &str) -> Option<backup::ProgressSink> {
        let progress = self.progress.clone();
        let component = component.to_string();
        Some(Box::new(move |stats: &WriteStats| {
            if let Ok(mut p) = progress.lock() {
                p.step = component.clone();
                p.files = stats.files;
                p.logical_bytes = stats.logical_bytes;
                p.stored_bytes = stats.stored_bytes;
            }
        }))
    }

    fn progress(&mut self, component: &str, stats: &WriteStats) {
        if let Ok(mut p) = self.progress.lock() {
            p.step = component.to_string();
            p.files = stats.files;
            p.logical_bytes = stats.logical_bytes;
            p.stored_bytes = stats.stored_bytes;
        }
        if self.last_status.elapsed() >= Duration::from_secs(1) {
            self.last_status = std::time::Instant::now();
            notify::status(&format!(
                "backup {} running (job {}): {component}, {} files, {} bytes",
                self.backup_id, self.job_id, stats.files, stats.logical_bytes
            ));
        }
    }
}

/// Why a restore could not be started.
#[derive(Debug, thiserror::Error)]
pub enum RestoreStartError {
    #[error(transparent)]
    Job(#[from] JobError),
    #[error("{0}")]
    Refused(String),
}

/// Starts a restore of `backup` (a new one), or resumes the last one (`backup` None).
pub fn start_restore(
    ctx: &Arc<Ctx>,
    backup: Option<&BackupId>,
    options: crate::restore::exec::RestoreOptions,
    trigger: &str,
) -> Result<JobStarted, RestoreStartError> {
    use crate::restore::plan;
    let settings = ctx.settings();
    // The manifest is read and the plan made before the runner's slot is claimed: no lock is
    // held during that I/O, and a refusal changes nothing.
    let planned = match backup {
        Some(b) => {
            let manifest = ctx.repo.read_manifest(b).map_err(|e| {
                RestoreStartError::Refused(format!(
                    "{e} (hopsdrctl backups list shows the backups)"
                ))
            })?;
            Some(
                crate::restore::target::plan_for(&manifest, &settings, &Default::default())
                    .map_err(RestoreStartError::Refused)?,
            )
        }
        None => None,
    };
    let slot = claim(ctx)?;
    let now = Utc::now();
    // The restore to run: a new one with its plan, or the last one to resume.
    let (restore_id, backup_id, plan, options) = match backup {
        Some(b) => {
            let Some(p) = planned else {
                return Err(RestoreStartError::Refused("internal: no plan".into()));
            };
            let plan_json = serde_json::to_string(&p).unwrap_or_default();
            let opts_json = serde_json::to_string(&options).unwrap_or_default();
            let id = lock_catalog(&ctx.catalog)
                .insert_restore(b, &plan_json, &opts_json, p.steps.len(), now)
                .map_err(JobError::from)?;
            (id, b.clone(), p, options)
        }
        None => {
            let rec = lock_catalog(&ctx.catalog)
                .last_restore()
                .map_err(JobError::from)?
                .ok_or_else(|| {
                    RestoreStartError::Refused(
                        "no restore to resume: start one with hopsdrctl restore start BACKUP"
                            .into(),
                    )
                })?;
            if rec.state == "succeeded" {
                return Err(RestoreStartError::Refused(format!(
                    "restore {} of backup {} already succeeded: nothing to resume",
                    rec.id, rec.backup_id
                )));
            }
            let p: plan::RestorePlan = serde_json::from_str(&rec.plan).map_err(|e| {
                RestoreStartError::Refused(format!(
                    "the recorded plan of restore {} is unreadable: {e}",
                    rec.id
                ))
            })?;
            let o = serde_json::from_str(&rec.options).unwrap_or_default();
            lock_catalog(&ctx.catalog)
                .set_restore_state(rec.id, "running", None, now)
                .map_err(JobError::from)?;
            (rec.id, rec.backup_id, p, o)
        }
    };
    let job_id = lock_catalog(&ctx.catalog)
        .insert_job(JobKind::Restore, trigger, now)
        .map_err(JobError::from)?;
    let (cancel, progress) = install(ctx, slot, job_id, JobKind::Restore, "restore");
    tracing::info!(job_id = %job_id, backup_id = %backup_id, restore_id = restore_id, "restore started");
    notify::status(&format!("restore of {backup_id} running (job {job_id})"));

    let ctx2 = ctx.clone();
    let bid = backup_id.clone();
    let handle = tokio::task::spawn_blocking(move || {
        let span = tracing::info_span!("restore", backup_id = %bid, job_id = %job_id);
        let _entered = span.enter();
        ctx2.jobs.wait_cleanup();
        let settings = ctx2.settings();
        let manifest = match ctx2.repo.read_manifest(&bid) {
            Ok(m) => std::sync::Arc::new(m),
            Err(e) => return (Err(e.to_string()), false),
        };
        let backup_state = lock_catalog(&ctx2.catalog)
            .backup(&bid)
            .ok()
            .flatten()
            .map(|b| b.state);
        let prog = progress.clone();
        let progress_fn = move |i: usize, line: &str| {
            if let Ok(mut p) = prog.lock() {
                p.step = format!("step {}: {line}", i + 1);
            }
        };
        let run = crate::restore::exec::RestoreRun {
            restore_id,
            plan: &plan,
            manifest: &manifest,
            settings: &settings,
            repo: &ctx2.repo,
            catalog: &ctx2.catalog,
            options,
            backup_state,
            cancel: &cancel,
            progress: &progress_fn,
        };
        let r = crate::restore::exec::execute(&run);
        let cancelled = cancel.is_cancelled() || r.as_ref().err().is_some_and(|e| e.is_cancelled());
        (r.map_err(|e| e.to_string()), cancelled)
    });
    let ctx3 = ctx.clone();
    tokio::spawn(async move {
        let result = handle.await;
        let now = Utc::now();
        let (state, rstate, error) = match result {
            Ok((Ok(()), _)) => (State::Succeeded, "succeeded", None),
            Ok((Err(e), true)) => (State::Interrupted, "interrupted", Some(e)),
            Ok((Err(e), false)) => (State::Failed, "failed", Some(e)),
            Err(e) => (
                State::Failed,
                "failed",
                Some(format!("restore task ended abnormally: {e}")),
            ),
        };
        ctx3.metrics
            .restores_total
            .with_label_values(&[rstate])
            .inc();
        match &error {
            None => {
                tracing::info!(job_id = %job_id, restore_id = restore_id, "restore succeeded");
                notify::status("idle; last restore succeeded");
            }
            Some(e) => {
                tracing::error!(job_id = %job_id, restore_id = restore_id, "restore {rstate}: {e}");
                notify::status(&format!("idle; last restore {rstate}"));
            }
        }
        release(&ctx3, JobKind::Restore, |cat| {
            let _ = cat.set_restore_state(restore_id, rstate, error.as_deref(), now);
            let _ = cat.finish_job(job_id, state, error.as_deref(), now);
            if let Ok(Some(rec)) = cat.last_restore() {
                let total = (now - rec.created_at).num_milliseconds().max(0) as f64 / 1000.0;
                if state == State::Succeeded {
                    ctx3.metrics.restore_duration.set(total);
                    ctx3.metrics
                        .restore_last_success
                        .set(now.timestamp_millis() as f64 / 1000.0);
                }
            }
        });
        refresh_restore_gauge(&ctx3);
    });
    Ok(JobStarted {
        job_id,
        backup_id: Some(backup_id),
    })
}
