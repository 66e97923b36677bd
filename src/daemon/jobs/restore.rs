//! The restore job: a new restore (its plan made before the slot is claimed, recorded with it)
//! or the last one resumed, run by the restore executor on the job's thread; and what holds
//! other jobs off while a restore is unfinished.

use std::sync::Arc;

use chrono::Utc;

use crate::api::JobStarted;
use crate::catalog::{CatalogError, JobKind, RestoreState, State};
use crate::ids::BackupId;

use super::super::{notify, Ctx};
use super::{claim, lock_catalog, spawn, Ending, JobError};

/// The last restore if it failed or stopped before the end (not succeeded, not abandoned).
pub fn unfinished(ctx: &Ctx) -> Result<Option<JobError>, CatalogError> {
    Ok(held_off_by(lock_catalog(&ctx.catalog).last_restore()?))
}

/// What the last restore `last` holds off, if it is not settled.
pub fn held_off_by(last: Option<crate::catalog::RestoreRecord>) -> Option<JobError> {
    last.filter(|r| !r.state.is_settled())
        .map(|r| JobError::RestoreUnfinished {
            restore_id: r.id,
            backup_id: r.backup_id,
            state: r.state.as_str().to_string(),
        })
}

/// `hopsdr_restore_unfinished` from the catalog.
pub fn refresh_restore_gauge(ctx: &Ctx) {
    if let Ok(u) = unfinished(ctx) {
        ctx.metrics.restore_unfinished.set(u.is_some() as i64);
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

/// The repository a restore reads: a `[[copy]]` when asked (`--repository`), as it was at
/// `--as-of` when asked, else the daemon's.
fn restore_repository(
    ctx: &Ctx,
    options: &crate::restore::exec::RestoreOptions,
) -> Result<crate::repository::Repository, String> {
    let base = match &options.repository {
        None => ctx.repo.clone(),
        Some(name) => crate::daemon::copy_repository(&ctx.repo, &ctx.settings(), name)?,
    };
    match options.as_of {
        None => Ok(base),
        Some(_) if options.repository.is_some() => {
            Err("--as-of reads the repository's own bucket versions: not with --repository".into())
        }
        Some(at) => crate::daemon::repository_as_of(&ctx.repo, &ctx.settings().repository, at)
            .map_err(|e| format!("reading the repository as of {at}: {e}")),
    }
}

/// Starts a restore of `backup` (a new one), or resumes the last one (`backup` None).
pub fn start(
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
            let repo = restore_repository(ctx, &options).map_err(RestoreStartError::Refused)?;
            let manifest = repo.read_manifest(b).map_err(|e| {
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
    let claim = claim(ctx)?;
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
            if rec.state == RestoreState::Succeeded {
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
                .set_restore_state(rec.id, RestoreState::Running, None, now)
                .map_err(JobError::from)?;
            (rec.id, rec.backup_id, p, o)
        }
    };
    let (work, ()) = claim.start(JobKind::Restore, trigger, "restore", |_, _| Ok(()))?;
    let job_id = work.job_id;
    tracing::info!(job_id = %job_id, backup_id = %backup_id, restore_id = %restore_id, "restore started");
    notify::status(&format!("restore of {backup_id} running (job {job_id})"));

    let span = tracing::info_span!("restore", backup_id = %backup_id, job_id = %job_id);
    let bid = backup_id.clone();
    spawn(
        work,
        span,
        move |w| {
            let ctx = &w.ctx;
            let settings = ctx.settings();
            let repo = match restore_repository(ctx, &options) {
                Ok(r) => r,
                Err(e) => return (Err(e), false),
            };
            let manifest = match repo.read_manifest(&bid) {
                Ok(m) => std::sync::Arc::new(m),
                Err(e) => return (Err(e.to_string()), false),
            };
            // As of a past time the manifest read is what counts, not what the catalog now says
            // of the backup (which an attacker's deletion may have made "failed").
            let backup_state = match options.as_of {
                Some(_) => None,
                None => lock_catalog(&ctx.catalog)
                    .backup(&bid)
                    .ok()
                    .flatten()
                    .map(|b| b.state),
            };
            let prog = w.progress.clone();
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
                repo: &repo,
                catalog: &ctx.catalog,
                options,
                backup_state,
                cancel: &w.cancel,
                progress: &progress_fn,
            };
            let r = crate::restore::exec::execute(&run);
            let cancelled =
                w.cancel.is_cancelled() || r.as_ref().err().is_some_and(|e| e.is_cancelled());
            (r.map_err(|e| e.to_string()), cancelled)
        },
        move |w, result| {
            let (state, rstate, error) = match result {
                Ok((Ok(()), _)) => (State::Succeeded, RestoreState::Succeeded, None),
                Ok((Err(e), true)) => (State::Interrupted, RestoreState::Interrupted, Some(e)),
                Ok((Err(e), false)) => (State::Failed, RestoreState::Failed, Some(e)),
                Err(e) => (State::Failed, RestoreState::Failed, Some(e)),
            };
            let ctx = w.ctx.clone();
            ctx.metrics
                .restores_total
                .with_label_values(&[rstate.as_str()])
                .inc();
            match &error {
                None => {
                    tracing::info!(job_id = %job_id, restore_id = %restore_id, "restore succeeded");
                    notify::status("idle; last restore succeeded");
                }
                Some(e) => {
                    tracing::error!(job_id = %job_id, restore_id = %restore_id, "restore {}: {e}", rstate.as_str());
                    notify::status(&format!("idle; last restore {}", rstate.as_str()));
                }
            }
            let record_error = error.clone();
            let record = move |cat: &mut crate::catalog::Catalog| {
                let now = Utc::now();
                cat.set_restore_state(restore_id, rstate, record_error.as_deref(), now)?;
                if let Some(rec) = cat.last_restore()? {
                    let total = (now - rec.created_at).num_milliseconds().max(0) as f64 / 1000.0;
                    if state == State::Succeeded {
                        ctx.metrics.restore_duration.set(total);
                        ctx.metrics
                            .restore_last_success
                            .set(now.timestamp_millis() as f64 / 1000.0);
                    }
                }
                Ok(())
            };
            Ending {
                record: Some(Box::new(record)),
                ..Ending::plain(state, error)
            }
        },
    );
    Ok(JobStarted {
        job_id,
        backup_id: Some(backup_id),
    })
}
