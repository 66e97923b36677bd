//! Verification as a job: one backup read back whole (every blob fetched, decompressed and
//! hashed, every file's size and hash checked) and the outcome recorded in the catalog — a
//! damaged backup stops counting as verified for retention. Without a backup named, the job
//! takes the complete backup verified longest ago (never verified first), so a scheduled verify
//! covers every backup in turn.

use std::sync::Arc;

use chrono::Utc;

use crate::api::JobStarted;
use crate::catalog::{BackupRecord, JobKind, State};
use crate::ids::BackupId;
use crate::repository::RepoError;

use super::super::Ctx;
use super::{claim, lock_catalog, spawn, Ending, JobError, Work};

/// The backup a verify without an id reads: complete (succeeded or partial), verified longest
/// ago, never-verified and damaged ones first, oldest first among equals.
pub fn next_to_verify(backups: &[BackupRecord]) -> Option<BackupId> {
    backups
        .iter()
        .filter(|b| matches!(b.state, State::Succeeded | State::Partial))
        .min_by_key(|b| (b.verified_at, b.started_at))
        .map(|b| b.id.clone())
}

/// Why a verify could not start.
#[derive(Debug, thiserror::Error)]
pub enum VerifyStartError {
    #[error(transparent)]
    Job(#[from] JobError),
    #[error("no backup \"{0}\" in the catalog (hopsdrctl backups list shows them)")]
    NotFound(BackupId),
    #[error("no complete backup to verify")]
    Nothing,
    #[error("{0}")]
    Copy(String),
}

/// Starts verifying `backup` (or the one [`next_to_verify`] picks).
pub fn start(
    ctx: &Arc<Ctx>,
    trigger: &str,
    backup: Option<BackupId>,
    copy: Option<String>,
) -> Result<JobStarted, VerifyStartError> {
    // A copy is read, and its outcome logged and kept with the job: the catalog's verification
    // of a backup is the repository's.
    let copy_repo = match &copy {
        None => None,
        Some(name) => Some(
            crate::daemon::copy_repository(&ctx.repo, &ctx.settings(), name)
                .map_err(VerifyStartError::Copy)?,
        ),
    };
    let claim = claim(ctx)?;
    let id = {
        let backups = lock_catalog(&ctx.catalog)
            .backups()
            .map_err(JobError::from)?;
        match backup {
            Some(id) if backups.iter().any(|b| b.id == id) => id,
            Some(id) => return Err(VerifyStartError::NotFound(id)),
            None => next_to_verify(&backups).ok_or(VerifyStartError::Nothing)?,
        }
    };
    let (work, ()) = claim.start(JobKind::Verify, trigger, "reading back", |_, _| Ok(()))?;
    let job_id = work.job_id;
    tracing::info!(job_id = %job_id, backup_id = %id, trigger = trigger, "verify started");
    let span = tracing::info_span!("verify", backup_id = %id, job_id = %job_id);
    let bid = id.clone();
    spawn(
        work,
        span,
        move |w| {
            let repo = copy_repo.as_ref().unwrap_or(&w.ctx.repo);
            let result = repo.verify_backup(&bid, &w.cancel);
            crate::failpoint::hit("verify.read_back", &w.cancel);
            (bid, result)
        },
        move |w, r| match copy {
            None => end(w, r),
            Some(name) => end_copy(&name, r),
        },
    );
    Ok(JobStarted {
        job_id,
        backup_id: Some(id),
    })
}

type RunResult = (BackupId, Result<crate::repository::VerifyReport, RepoError>);

/// The verdict recorded: damaged blobs first (the next backups write them again), then whether
/// the backup is whole; an interrupted verify is no verdict.
fn end(w: &Work, result: Result<RunResult, String>) -> Ending {
    let (bid, result) = match result {
        Ok(r) => r,
        Err(e) => return Ending::plain(State::Failed, Some(e)),
    };
    let ctx = &w.ctx;
    let now = Utc::now();
    let (state, error, damaged) = match &result {
        Err(RepoError::Cancelled) => {
            // Not a verdict on the backup: its verification stays as it was.
            tracing::warn!("verify interrupted: hopsdrd is stopping");
            (
                State::Interrupted,
                Some("interrupted: hopsdrd stopped before the backup was read back whole".into()),
                None,
            )
        }
        Ok(r) if r.is_ok() => {
            tracing::info!(
                files = r.files_checked,
                blobs = r.blobs_checked,
                bytes = r.bytes_checked,
                "backup verified whole"
            );
            (State::Succeeded, None, Some(false))
        }
        Ok(r) => {
            let first: Vec<String> = r
                .damaged
                .iter()
                .take(5)
                .map(|d| format!("{} ({})", d.path, d.reason))
                .collect();
            let e = format!(
                "backup {bid} is damaged: {} file(s), e.g. {}",
                r.damaged.len(),
                first.join("; ")
            );
            tracing::error!("{e}");
            (State::Failed, Some(e), Some(true))
        }
        Err(e) => {
            tracing::error!("verify failed: {e}");
            (State::Failed, Some(format!("verify failed: {e}")), None)
        }
    };
    w.step("recording");
    let record = repository_verdict(ctx, &bid, &result, now, damaged);
    Ending {
        record: Some(record),
        ..Ending::plain(state, error)
    }
}

/// The outcome of a verify of a `[[copy]]`: the job's state and error, nothing recorded of the
/// backup (its verification in the catalog is the repository's).
fn end_copy(copy: &str, result: Result<RunResult, String>) -> Ending {
    match result {
        Ok((bid, Ok(r))) if r.is_ok() => {
            tracing::info!(copy = copy, backup_id = %bid, files = r.files_checked, bytes = r.bytes_checked, "backup verified whole in the copy");
            Ending::plain(State::Succeeded, None)
        }
        Ok((bid, Ok(r))) => {
            let e = format!(
                "backup {bid} in copy {copy} is damaged: {} file(s), e.g. {}",
                r.damaged.len(),
                r.damaged
                    .first()
                    .map(|d| format!("{} ({})", d.path, d.reason))
                    .unwrap_or_default()
            );
            tracing::error!("{e}");
            Ending::plain(State::Failed, Some(e))
        }
        Ok((_, Err(RepoError::Cancelled))) => Ending::plain(
            State::Interrupted,
            Some("interrupted: hopsdrd stopped before the backup was read back whole".into()),
        ),
        Ok((_, Err(e))) => Ending::plain(
            State::Failed,
            Some(format!("verify of copy {copy} failed: {e}")),
        ),
        Err(e) => Ending::plain(State::Failed, Some(e)),
    }
}

/// What reading a backup back whole says about the repository, for a verify or a drill: the
/// damaged blobs counted and recorded (the next backups write them again) before the verdict
/// (`damaged`: `Some` when the read finished) — a crash in between leaves blobs to be written
/// again, harmless, never a damaged backup whose blobs nobody heals.
pub(super) fn repository_verdict(
    ctx: &Ctx,
    bid: &BackupId,
    result: &Result<crate::repository::VerifyReport, RepoError>,
    now: chrono::DateTime<Utc>,
    damaged: Option<bool>,
) -> super::Record {
    if let Ok(r) = result {
        let blobs: std::collections::HashSet<&crate::ids::BlobId> =
            r.damaged.iter().filter_map(|d| d.blob.as_ref()).collect();
        ctx.metrics.verify_damaged_blobs.set(blobs.len() as i64);
        if r.damaged.is_empty() {
            ctx.metrics
                .verify_last_success
                .set(now.timestamp_millis() as f64 / 1000.0);
        }
    }
    let bad: Vec<(crate::ids::BlobId, String)> = match result {
        Ok(r) => r
            .damaged
            .iter()
            .filter_map(|d| d.blob.clone().map(|b| (b, d.reason.clone())))
            .collect(),
        Err(_) => Vec::new(),
    };
    let bid = bid.clone();
    Box::new(move |cat: &mut crate::catalog::Catalog| {
        cat.add_bad_blobs(&bad, &bid, now)?;
        match damaged {
            Some(d) => cat.set_verified(&bid, now, d),
            None => Ok(()),
        }
    })
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::ids::JobId;
    use chrono::{DateTime, TimeZone};

    /// A backup record started on the day its id names (shared with the drill's tests).
    pub(in crate::daemon::jobs) fn rec(
        id: &str,
        state: State,
        verified: Option<DateTime<Utc>>,
    ) -> BackupRecord {
        let id = BackupId::parse(id).unwrap();
        let day: u32 = id.as_str()[6..8].parse().unwrap();
        BackupRecord {
            started_at: Utc.with_ymd_and_hms(2026, 11, day, 0, 0, 0).unwrap(),
            id,
            job_id: JobId(1),
            state,
            finished_at: None,
            logical_bytes: 0,
            stored_bytes: 0,
            files: 0,
            error: None,
            rondb_backup_id: None,
            pinned: false,
            verified_at: verified,
            damaged: false,
            hopsfs_unchecked: false,
        }
    }

    #[test]
    fn the_backup_verified_longest_ago_goes_next() {
        let t = |h| Utc.with_ymd_and_hms(2026, 11, 29, h, 0, 0).unwrap();
        let a = rec("20261101T000000Z", State::Succeeded, Some(t(5)));
        let b = rec("20261102T000000Z", State::Succeeded, Some(t(3)));
        let c = rec("20261103T000000Z", State::Failed, None);
        let d = rec("20261104T000000Z", State::Partial, None);
        let e = rec("20261105T000000Z", State::Succeeded, None);
        let all = [a.clone(), b.clone(), c.clone(), d.clone(), e.clone()];
        assert_eq!(
            next_to_verify(&all),
            Some(d.id.clone()),
            "never verified, oldest first"
        );
        assert_eq!(next_to_verify(&[a.clone(), b.clone()]), Some(b.id.clone()));
        assert_eq!(
            next_to_verify(&[c]),
            None,
            "failed backups have nothing to verify"
        );
    }
}
