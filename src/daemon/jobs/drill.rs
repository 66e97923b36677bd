//! Restore drills as a job. A level 1 drill reads a backup back whole and checks what its files
//! mean ([`crate::drill::Meaning`], in the same pass as the hashes), then records the report
//! in the catalog, the repository's verdict as a verify does (the drill read everything), the
//! drill metrics, and runs the `drill_result` hook. Without a backup named, the drill takes the
//! newest complete backup: the one a restore would take.

use std::sync::Arc;

use chrono::{DateTime, Utc};

use crate::api::JobStarted;
use crate::catalog::{BackupRecord, JobKind, State};
use crate::drill::report::{DrillLevel, DrillReport};
use crate::ids::BackupId;
use crate::repository::{RepoError, VerifyReport};

use super::super::Ctx;
use super::verify::repository_verdict;
use super::{claim, lock_catalog, spawn, Ending, JobError, Work};

/// The backup a drill without an id proves: the newest complete one (succeeded or partial).
pub fn newest_complete(backups: &[BackupRecord]) -> Option<BackupId> {
    backups
        .iter()
        .filter(|b| matches!(b.state, State::Succeeded | State::Partial))
        .max_by_key(|b| b.started_at)
        .map(|b| b.id.clone())
}

/// Why a drill could not start.
#[derive(Debug, thiserror::Error)]
pub enum DrillStartError {
    #[error(transparent)]
    Job(#[from] JobError),
    #[error("no backup \"{0}\" in the catalog (hopsdrctl backups list shows them)")]
    NotFound(BackupId),
    #[error("no complete backup to drill")]
    Nothing,
    #[error("a level 2 drill restores into a standby cluster, and this hopsdr has none to restore into: run a level 1 drill (hopsdrctl drill --level 1)")]
    NoStandby,
}

/// Starts a drill of `backup` (or the newest complete one) at `level`.
pub fn start(
    ctx: &Arc<Ctx>,
    trigger: &str,
    backup: Option<BackupId>,
    level: DrillLevel,
) -> Result<JobStarted, DrillStartError> {
    if level == DrillLevel::Standby {
        return Err(DrillStartError::NoStandby);
    }
    let claim = claim(ctx)?;
    let id = {
        let backups = lock_catalog(&ctx.catalog)
            .backups()
            .map_err(JobError::from)?;
        match backup {
            Some(id) if backups.iter().any(|b| b.id == id) => id,
            Some(id) => return Err(DrillStartError::NotFound(id)),
            None => newest_complete(&backups).ok_or(DrillStartError::Nothing)?,
        }
    };
    let (work, ()) = claim.start(JobKind::Drill, trigger, "reading back", |cat, job| {
        cat.insert_drill(job, &id, level.into(), Utc::now())
    })?;
    let job_id = work.job_id;
    tracing::info!(job_id = %job_id, backup_id = %id, level = %level, trigger = trigger, "drill started");
    let span = tracing::info_span!("drill", backup_id = %id, job_id = %job_id);
    let bid = id.clone();
    spawn(
        work,
        span,
        move |w| {
            let started = Utc::now();
            let result = w
                .ctx
                .repo
                .inspect_backup(&bid, &w.cancel, &crate::drill::Meaning);
            crate::failpoint::hit("drill.read_back", &w.cancel);
            (bid, started, result)
        },
        end,
    );
    Ok(JobStarted {
        job_id,
        backup_id: Some(id),
    })
}

type RunResult = (BackupId, DateTime<Utc>, Result<VerifyReport, RepoError>);

/// The first damage and findings, for the job's error.
fn failure_summary(r: &DrillReport) -> String {
    let first: Vec<String> = r
        .damaged
        .iter()
        .map(|d| format!("{} ({})", d.path, d.reason))
        .chain(
            r.findings
                .iter()
                .map(|f| format!("{} ({})", f.path, f.reason)),
        )
        .take(3)
        .collect();
    format!(
        "drill of backup {} failed: {} file(s) damaged in the repository, {} wrong in their content, e.g. {}",
        r.backup_id,
        r.damaged_total,
        r.findings_total,
        first.join("; ")
    )
}

fn end(w: &Work, result: Result<RunResult, String>) -> Ending {
    let ctx = &w.ctx;
    let job = w.job_id;
    let now = Utc::now();
    let (bid, started, result) = match result {
        Ok(r) => r,
        Err(e) => {
            let error = e.clone();
            return Ending {
                record: Some(Box::new(move |cat: &mut crate::catalog::Catalog| {
                    cat.finish_drill(job, State::Failed, Some(&error), None, None, now)
                })),
                ..Ending::plain(State::Failed, Some(e))
            };
        }
    };
    let level = DrillLevel::ReadBack;
    let (state, error, damaged, report) = match &result {
        Err(RepoError::Cancelled) => {
            tracing::warn!("drill interrupted: hopsdrd is stopping");
            (
                State::Interrupted,
                Some("interrupted: hopsdrd stopped before the backup was read back whole".into()),
                None,
                None,
            )
        }
        Ok(r) => {
            let report = DrillReport::read_back(bid.as_str(), started, now, r.clone());
            if report.passed() {
                tracing::info!(
                    files = r.files_checked,
                    bytes = r.bytes_checked,
                    seconds = report.rto_seconds(),
                    "drill passed: the backup reads back whole and means what it should"
                );
                (State::Succeeded, None, Some(false), Some(report))
            } else {
                let e = failure_summary(&report);
                tracing::error!("{e}");
                (
                    State::Failed,
                    Some(e),
                    Some(!r.damaged.is_empty()),
                    Some(report),
                )
            }
        }
        Err(e) => {
            tracing::error!("drill failed: {e}");
            (
                State::Failed,
                Some(format!("drill failed: {e}")),
                None,
                None,
            )
        }
    };
    let l = level.to_string();
    let outcome = match state {
        State::Succeeded => "passed",
        State::Interrupted => "interrupted",
        _ => "failed",
    };
    ctx.metrics
        .drills_total
        .with_label_values(&[&l, outcome])
        .inc();
    let rto = report.as_ref().map(DrillReport::rto_seconds);
    if state == State::Succeeded {
        ctx.metrics
            .drill_last_success
            .with_label_values(&[&l])
            .set(now.timestamp_millis() as f64 / 1000.0);
        ctx.metrics
            .drill_rto
            .with_label_values(&[&l])
            .set(rto.unwrap_or(0.0));
    }
    let _ = crate::hooks::fire(
        &ctx.settings().hooks,
        crate::hooks::Event::DrillResult,
        &[
            ("job_id", job.to_string()),
            ("backup_id", bid.to_string()),
            ("level", l.clone()),
            ("state", outcome.to_string()),
            ("error", error.clone().unwrap_or_default()),
            (
                "rto_seconds",
                rto.map(|r| format!("{r:.1}")).unwrap_or_default(),
            ),
            (
                "findings",
                report
                    .as_ref()
                    .map(|r| r.findings_total.to_string())
                    .unwrap_or_default(),
            ),
            (
                "damaged",
                report
                    .as_ref()
                    .map(|r| r.damaged_total.to_string())
                    .unwrap_or_default(),
            ),
        ],
    );
    w.step("recording");
    let verdict = repository_verdict(ctx, &bid, &result, now, damaged);
    let json = report.as_ref().and_then(|r| serde_json::to_string(r).ok());
    let drill_error = error.clone();
    let record = move |cat: &mut crate::catalog::Catalog| {
        verdict(cat)?;
        cat.finish_drill(
            job,
            state,
            drill_error.as_deref(),
            rto,
            json.as_deref(),
            now,
        )
    };
    Ending {
        record: Some(Box::new(record)),
        ..Ending::plain(state, error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::JobId;
    use chrono::TimeZone;

    fn rec(id: &str, state: State) -> BackupRecord {
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
            verified_at: None,
            damaged: false,
            hopsfs_unchecked: false,
        }
    }

    #[test]
    fn the_newest_complete_backup_is_drilled() {
        let a = rec("20261101T000000Z", State::Succeeded);
        let b = rec("20261102T000000Z", State::Partial);
        let c = rec("20261103T000000Z", State::Failed);
        let d = rec("20261104T000000Z", State::Running);
        assert_eq!(
            newest_complete(&[a.clone(), b.clone(), c.clone(), d.clone()]),
            Some(b.id.clone())
        );
        assert_eq!(newest_complete(&[c, d]), None);
    }
}
