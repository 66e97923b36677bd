//! `hopsdrctl repo repair-index` as a job: the repository's index rebuilt from its packs
//! ([`crate::repository::Repository::repair_index`]), in the job slot so that no backup or
//! collection writes meanwhile. Damaged packs are named in the log and the job's error.

use std::sync::Arc;

use crate::api::JobStarted;
use crate::catalog::{JobKind, State};

use super::super::Ctx;
use super::{claim, spawn, Ending, JobError};

/// Starts rebuilding the index.
pub fn start(ctx: &Arc<Ctx>, trigger: &str) -> Result<JobStarted, JobError> {
    let (work, ()) = claim(ctx)?.start(JobKind::Repair, trigger, "reading packs", |_, _| Ok(()))?;
    let job_id = work.job_id;
    tracing::info!(job_id = %job_id, trigger = trigger, "index repair started");
    let span = tracing::info_span!("repair", job_id = %job_id);
    spawn(
        work,
        span,
        |w| {
            w.ctx
                .repo
                .repair_index(&w.cancel)
                .map_err(|e| e.to_string())
        },
        |w, result| match result.and_then(|r| r) {
            Ok(r) => {
                tracing::info!(
                    packs = r.packs,
                    blobs = r.blobs,
                    index_objects_written = r.index_objects_written,
                    index_objects_replaced = r.index_objects_replaced,
                    damaged_packs = r.damaged_packs.len(),
                    "index rebuilt from the packs"
                );
                if r.damaged_packs.is_empty() {
                    return Ending::plain(State::Succeeded, None);
                }
                for d in &r.damaged_packs {
                    tracing::error!("pack left out of the index: {d}");
                }
                Ending::plain(
                    State::Failed,
                    Some(format!(
                        "index rebuilt without {} damaged pack(s) (their blobs are missing: hopsdrctl verify names the backups): {}",
                        r.damaged_packs.len(),
                        r.damaged_packs.join("; ")
                    )),
                )
            }
            Err(e) if w.cancel.is_cancelled() => {
                Ending::plain(State::Interrupted, Some(format!("interrupted: {e}")))
            }
            Err(e) => {
                tracing::error!("index repair failed: {e}");
                Ending::plain(State::Failed, Some(e))
            }
        },
    );
    Ok(JobStarted {
        job_id,
        backup_id: None,
    })
}
