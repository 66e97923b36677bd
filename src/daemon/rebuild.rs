//! `hopsdrctl catalog rebuild` as a job: the catalog's backups replaced by what the repository
//! holds ([`crate::rebuild`]), in the job slot so that no backup commits meanwhile.

use std::sync::Arc;

use chrono::Utc;

use crate::api::JobStarted;
use crate::catalog::{JobKind, State};

use super::jobs::{claim, install, lock_catalog, release, JobError};
use super::Ctx;

/// Starts rebuilding the catalog's backups from the repository.
pub fn start_rebuild(ctx: &Arc<Ctx>, trigger: &str) -> Result<JobStarted, JobError> {
    let slot = claim(ctx)?;
    let now = Utc::now();
    let job_id = lock_catalog(&ctx.catalog).insert_job(JobKind::Rebuild, trigger, now)?;
    let (_cancel, _progress) = install(ctx, slot, job_id, JobKind::Rebuild, "reading manifests");
    tracing::info!(job_id = %job_id, trigger = trigger, "catalog rebuild started");
    let ctx2 = ctx.clone();
    tokio::task::spawn_blocking(move || {
        let span = tracing::info_span!("rebuild", job_id = %job_id);
        let _entered = span.enter();
        ctx2.jobs.wait_cleanup();
        let result = {
            let mut cat = lock_catalog(&ctx2.catalog);
            crate::rebuild::rebuild(&ctx2.repo, &mut cat, job_id)
        };
        let (state, error) = match &result {
            Ok(r) => {
                tracing::info!(
                    backups = r.backups,
                    without_manifest = r.without_manifest,
                    unreadable = r.unreadable.len(),
                    "catalog rebuilt from the repository"
                );
                for u in &r.unreadable {
                    tracing::warn!("left out of the rebuilt catalog: {u}");
                }
                (State::Succeeded, None)
            }
            Err(e) => {
                tracing::error!("catalog rebuild failed: {e}");
                (State::Failed, Some(e.to_string()))
            }
        };
        release(&ctx2, JobKind::Rebuild, |cat| {
            if let Err(e) = cat.finish_job(job_id, state, error.as_deref(), Utc::now()) {
                tracing::error!(job_id = %job_id, "failed to record the end of the rebuild: {e}");
            }
        });
        super::jobs::refresh_backup_gauges(&ctx2);
    });
    Ok(JobStarted {
        job_id,
        backup_id: None,
    })
}
