//! `hopsdrctl catalog rebuild` as a job: the catalog's backups replaced by what the repository
//! holds ([`crate::rebuild`]), in the job slot so that no backup commits meanwhile. The
//! repository is read without holding the catalog; only the replacement takes it.

use std::sync::Arc;

use crate::api::JobStarted;
use crate::catalog::{JobKind, State};

use super::super::Ctx;
use super::{claim, lock_catalog, spawn, Ending, JobError};

/// Starts rebuilding the catalog's backups from the repository.
pub fn start(ctx: &Arc<Ctx>, trigger: &str) -> Result<JobStarted, JobError> {
    let (work, ()) = claim(ctx)?.start(
        JobKind::Rebuild,
        trigger,
        "reading manifests",
        |_, _| Ok(()),
    )?;
    let job_id = work.job_id;
    tracing::info!(job_id = %job_id, trigger = trigger, "catalog rebuild started");
    let span = tracing::info_span!("rebuild", job_id = %job_id);
    spawn(
        work,
        span,
        |w| {
            // The repository is read without the catalog: requests are served meanwhile.
            let rebuilt = crate::rebuild::read(&w.ctx.repo).map_err(|e| e.to_string())?;
            w.step("replacing the catalog's backups");
            let report = rebuilt
                .apply(&mut lock_catalog(&w.ctx.catalog), w.job_id)
                .map_err(|e| e.to_string())?;
            // (A failpoint that only a kill passes: the rebuild is not cancellable.)
            crate::failpoint::hit(
                "rebuild.replaced",
                &tokio_util::sync::CancellationToken::new(),
            );
            Ok(report)
        },
        |_, result| match result.and_then(|r| r) {
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
                Ending::plain(State::Succeeded, None)
            }
            Err(e) => {
                tracing::error!("catalog rebuild failed: {e}");
                Ending::plain(State::Failed, Some(e))
            }
        },
    );
    Ok(JobStarted {
        job_id,
        backup_id: None,
    })
}
