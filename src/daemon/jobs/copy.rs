//! The copy job: brings a `[[copy]]` up to date with the repository
//! ([`crate::repository::mirror`]), under the target's own writer lock (two daemons configured
//! with one copy place cannot write it at once), then records the outcome in the metrics and
//! runs the `copy_result` hook. It only reads the repository.

use std::sync::Arc;

use chrono::Utc;

use crate::api::JobStarted;
use crate::catalog::{JobKind, State};
use crate::repository::mirror::{CopyError, CopyReport};

use super::super::Ctx;
use super::{claim, spawn, Ending, JobError, Work};

/// Why a copy could not start.
#[derive(Debug, thiserror::Error)]
pub enum CopyStartError {
    #[error(transparent)]
    Job(#[from] JobError),
    #[error("no [[copy]] is configured: add one to the config (a directory or a bucket)")]
    NoCopies,
    #[error("no [[copy]] named {0:?} (the copies are: {1})")]
    Unknown(String, String),
    #[error("several copies are configured ({0}): name the one to bring up to date")]
    Which(String),
}

/// Starts a copy to `target` (the only `[[copy]]` when there is one).
pub fn start(
    ctx: &Arc<Ctx>,
    trigger: &str,
    target: Option<String>,
) -> Result<JobStarted, CopyStartError> {
    let settings = ctx.settings();
    let names: Vec<&str> = settings.copies.iter().map(|c| c.name.as_str()).collect();
    let copy = match (target, settings.copies.as_slice()) {
        (_, []) => return Err(CopyStartError::NoCopies),
        (None, [only]) => only.clone(),
        (None, _) => return Err(CopyStartError::Which(names.join(", "))),
        (Some(t), all) => match all.iter().find(|c| c.name == t) {
            Some(c) => c.clone(),
            None => return Err(CopyStartError::Unknown(t, names.join(", "))),
        },
    };
    let (work, ()) = claim(ctx)?.start(JobKind::Copy, trigger, "listing", |_, _| Ok(()))?;
    let job_id = work.job_id;
    tracing::info!(job_id = %job_id, target = %copy.name, trigger = trigger, "copy started");
    let span = tracing::info_span!("copy", target = %copy.name, job_id = %job_id);
    let name = copy.name.clone();
    spawn(
        work,
        span,
        move |w| {
            let target = crate::daemon::open_store(&copy.store).map_err(CopyError::Repo)?;
            let _lock = crate::repository::lock::acquire(&target, &w.ctx.hostname)
                .map_err(|e| CopyError::Repo(crate::repository::RepoError::Lock(Box::new(e))))?;
            w.step("copying");
            crate::repository::mirror::copy(w.ctx.repo.storage(), &target, copy.parallel, &w.cancel)
        },
        move |w, r| end(w, &name, r),
    );
    Ok(JobStarted {
        job_id,
        backup_id: None,
    })
}

fn end(w: &Work, target: &str, result: Result<Result<CopyReport, CopyError>, String>) -> Ending {
    let ctx = &w.ctx;
    let (state, error, report) = match result {
        Ok(Ok(r)) => {
            tracing::info!(
                target = target,
                objects = r.objects_sent,
                bytes = r.bytes_sent,
                deleted = r.objects_deleted,
                manifests = r.manifests,
                "copy finished: the target holds every backup of the repository"
            );
            if r.deletions_refused {
                tracing::warn!(target = target, "the repository lists no backup: nothing was deleted from the copy");
            }
            (State::Succeeded, None, Some(r))
        }
        Ok(Err(CopyError::Cancelled)) => (
            State::Interrupted,
            Some("interrupted: hopsdrd stopped before the copy was whole (the next copy goes on from what was sent)".to_string()),
            None,
        ),
        Ok(Err(e)) => {
            let e = format!("copy to {target} failed: {e}");
            tracing::error!("{e}");
            (State::Failed, Some(e), None)
        }
        Err(e) => (State::Failed, Some(e), None),
    };
    let (sent, bytes) = report
        .as_ref()
        .map_or((0, 0), |r| (r.objects_sent, r.bytes_sent));
    let (job, name) = (w.job_id, target.to_string());
    let now = Utc::now();
    let m = &ctx.metrics;
    m.copies_total
        .with_label_values(&[target, state.as_str()])
        .inc();
    if let Some(r) = &report {
        m.copy_bytes
            .with_label_values(&[target])
            .inc_by(r.bytes_sent);
        m.copy_last_success
            .with_label_values(&[target])
            .set(Utc::now().timestamp_millis() as f64 / 1000.0);
    }
    let _ = crate::hooks::fire(
        &ctx.settings().hooks,
        crate::hooks::Event::CopyResult,
        &[
            ("job_id", w.job_id.to_string()),
            ("target", target.to_string()),
            ("state", state.as_str().to_string()),
            ("error", error.clone().unwrap_or_default()),
            (
                "objects_sent",
                report
                    .as_ref()
                    .map(|r| r.objects_sent.to_string())
                    .unwrap_or_default(),
            ),
            (
                "bytes_sent",
                report
                    .as_ref()
                    .map(|r| r.bytes_sent.to_string())
                    .unwrap_or_default(),
            ),
        ],
    );
    Ending {
        record: Some(Box::new(move |cat: &mut crate::catalog::Catalog| {
            cat.record_copy(job, &name, state, sent, bytes, now)
        })),
        ..Ending::plain(state, error)
    }
}
