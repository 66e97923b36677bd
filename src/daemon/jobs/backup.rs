//! The backup job: a new backup id and row, the backup run on the job's thread (components
//! recorded as they go through the [`Observer`]), and its end: the backup's row with the
//! manifest's figures, the success metrics only once committed, the tidying deferred, and a prune
//! after a successful backup when the policy has rules.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;

use crate::api::{JobStarted, Progress};
use crate::backup::{self, BackupObserver, ComponentOutcome};
use crate::catalog::{Catalog, CatalogError, ComponentRecord, JobKind, State};
use crate::ids::{BackupId, JobId};
use crate::repository::WriteStats;

use super::super::{notify, Ctx};
use super::{claim, lock_catalog, spawn, Ending, JobError, Work};

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
pub fn start(ctx: &Arc<Ctx>, trigger: &str) -> Result<JobStarted, JobError> {
    // Scheduled backups wait for an unfinished restore to be finished or abandoned (an operator
    // may still start one by hand).
    if trigger.starts_with("schedule:") {
        if let Some(e) = super::restore::unfinished(ctx)? {
            return Err(e);
        }
    }
    let now = Utc::now();
    let (work, backup_id) =
        claim(ctx)?.start(JobKind::Backup, trigger, "starting", |cat, job_id| {
            let backup_id = new_backup_id(ctx, cat, now)?;
            cat.insert_backup(&backup_id, job_id, now)?;
            Ok(backup_id)
        })?;
    let job_id = work.job_id;
    tracing::info!(job_id = %job_id, backup_id = %backup_id, trigger = trigger, "backup started");
    notify::status(&format!("backup {backup_id} running (job {job_id})"));

    // Every event of the job carries BACKUP_ID and JOB_ID (journald fields).
    let span = tracing::info_span!("backup", backup_id = %backup_id, job_id = %job_id);
    let succeeded: Arc<Mutex<Vec<ComponentOutcome>>> = Default::default();
    let bid = backup_id.clone();
    let run_succeeded = succeeded.clone();
    spawn(
        work,
        span.clone(),
        move |w| run(w, bid, now, run_succeeded),
        {
            let bid = backup_id.clone();
            move |w, result| {
                let components =
                    std::mem::take(&mut *succeeded.lock().unwrap_or_else(|p| p.into_inner()));
                end(w, &bid, result, &components, span)
            }
        },
    );
    Ok(JobStarted {
        job_id,
        backup_id: Some(backup_id),
    })
}

type RunResult = (Result<backup::BackupOutcome, backup::BackupError>, bool);

/// The backup itself, on the job's thread.
fn run(
    w: &Work,
    bid: BackupId,
    now: DateTime<Utc>,
    succeeded: Arc<Mutex<Vec<ComponentOutcome>>>,
) -> RunResult {
    let ctx = &w.ctx;
    let settings = ctx.settings();
    // On the job's thread, before anything is read: a slow hook delays the backup, at most
    // `[hooks] timeout`.
    let _ = crate::hooks::fire(
        &settings.hooks,
        crate::hooks::Event::BackupStart,
        &[
            ("job_id", w.job_id.to_string()),
            ("backup_id", bid.to_string()),
        ],
    );
    let mut obs = Observer {
        ctx: ctx.clone(),
        backup_id: bid.clone(),
        job_id: w.job_id,
        progress: w.progress.clone(),
        last_status: std::time::Instant::now(),
        succeeded,
    };
    let mut self_files = Vec::new();
    let (last_rondb_id, previous_bytes) = {
        let cat = lock_catalog(&ctx.catalog);
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
    let suspect_blobs = lock_catalog(&ctx.catalog).bad_blobs().unwrap_or_else(|e| {
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
        hostname: &ctx.hostname,
        suspect_blobs,
    };
    let r = backup::run(&ctx.repo, bid, &req, &w.cancel, &mut obs, &Utc::now);
    (r, w.cancel.is_cancelled())
}

/// How the backup ended: its row, metrics, journal and status line; the tidying; the prune
/// after it.
fn end(
    w: &Work,
    backup_id: &BackupId,
    result: Result<RunResult, String>,
    components: &[ComponentOutcome],
    span: tracing::Span,
) -> Ending {
    let ctx = &w.ctx;
    let job_id = w.job_id;
    let mut finished_at = Utc::now();
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
            hopsfs_unchecked = outcome.manifest.info.facts.hopsfs_unchecked();
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
        Err(e) => (State::Failed, Some(e), WriteStats::default()),
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
    {
        let settings = ctx.settings();
        let event = match state {
            State::Succeeded | State::Partial => crate::hooks::Event::BackupSuccess,
            _ => crate::hooks::Event::BackupFailure,
        };
        let _ = crate::hooks::fire(
            &settings.hooks,
            event,
            &[
                ("job_id", job_id.to_string()),
                ("backup_id", backup_id.to_string()),
                ("state", state.as_str().to_string()),
                ("error", error.clone().unwrap_or_default()),
                ("files", stats.files.to_string()),
                ("logical_bytes", stats.logical_bytes.to_string()),
                ("stored_bytes", stats.stored_bytes.to_string()),
            ],
        );
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
    let record_error = error.clone();
    let bid = backup_id.clone();
    let healed_count = healed.len();
    let record = move |cat: &mut Catalog| {
        cat.finish_backup(
            &bid,
            state,
            stats.logical_bytes,
            stats.stored_bytes,
            stats.files,
            record_error.as_deref(),
            finished_at,
        )?;
        if let Some(r) = rondb_id {
            cat.set_rondb_backup_id(&bid, r)?;
        }
        cat.set_hopsfs_unchecked(&bid, hopsfs_unchecked)?;
        cat.remove_bad_blobs(&healed)
    };
    let bid = backup_id.clone();
    let then = move |ctx: &Arc<Ctx>| {
        crate::failpoint::hit("backup.recorded", &CancellationToken::new());
        if healed_count > 0 {
            tracing::warn!(job_id = %job_id, backup_id = %bid, healed = healed_count,
                "backup {bid} wrote again {healed_count} blob(s) found damaged or missing: healed");
        }
        let settings = ctx.settings();
        if state == State::Succeeded
            && settings.retention.prune_after_backup
            && settings.retention.policy.has_rules()
        {
            match super::prune::start(ctx, &format!("after backup {bid}")) {
                Ok(j) => tracing::info!(job_id = %j.job_id, "pruning after backup {bid}"),
                Err(e) => tracing::warn!("no pruning after backup {bid}: {e}"),
            }
        }
    };
    Ending {
        state,
        error,
        record: Some(Box::new(record)),
        cleanup: cleanup.filter(|c| !c.is_empty()).map(|c| {
            Box::new(move || {
                let _entered = span.enter();
                c.run()
            }) as Box<dyn FnOnce() + Send>
        }),
        then: Some(Box::new(then)),
        repository_changed: true,
    }
}

/// The HopsFS figures of a committed backup, from its manifest.
fn record_hopsfs_metrics(ctx: &Ctx, manifest: &crate::repository::Manifest) {
    let Some(f) = &manifest.info.facts.hopsfs else {
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
