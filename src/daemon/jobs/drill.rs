//! Restore drills as a job. A level 1 drill reads a backup back whole and checks what its files
//! mean ([`crate::drill::Meaning`], in the same pass as the hashes), then records the report
//! in the catalog, the repository's verdict as a verify does (the drill read everything), the
//! drill metrics, and runs the `drill_result` hook. A level 2 drill restores the backup into
//! the standby cluster `[drill] standby` describes and times each step. Without a backup
//! named, the drill takes the newest complete backup: the one a restore would take.

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
    #[error("a level 2 drill restores into a standby cluster: set [drill] standby to the config file describing one (its [rondb], [hopsfs], [mysql], [restore]), or run a level 1 drill")]
    NoStandby,
    #[error("the standby: {0}")]
    Standby(String),
}

/// Starts a drill of `backup` (or the newest complete one) at `level`.
pub fn start(
    ctx: &Arc<Ctx>,
    trigger: &str,
    backup: Option<BackupId>,
    level: DrillLevel,
) -> Result<JobStarted, DrillStartError> {
    if level == DrillLevel::Standby {
        return start_standby(ctx, trigger, backup);
    }
    let claim = claim(ctx)?;
    let id = chosen(ctx, backup)?;
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

/// The backup a drill takes: the one named (it must be in the catalog) or the newest complete.
fn chosen(ctx: &Ctx, backup: Option<BackupId>) -> Result<BackupId, DrillStartError> {
    let backups = lock_catalog(&ctx.catalog)
        .backups()
        .map_err(JobError::from)?;
    match backup {
        Some(id) if backups.iter().any(|b| b.id == id) => Ok(id),
        Some(id) => Err(DrillStartError::NotFound(id)),
        None => newest_complete(&backups).ok_or(DrillStartError::Nothing),
    }
}

/// A level 2 drill: the backup restored into the standby cluster `[drill] standby` describes,
/// through the same plan and executor as a real restore (its target checks included: the
/// standby must be a fresh deployment), each step timed; then `[drill] check`, if set. The
/// restore is recorded apart from the cluster's own (`restore status` and the hold on
/// scheduled backups never see it).
fn start_standby(
    ctx: &Arc<Ctx>,
    trigger: &str,
    backup: Option<BackupId>,
) -> Result<JobStarted, DrillStartError> {
    let settings = ctx.settings();
    let Some(path) = settings.drill.standby.clone() else {
        return Err(DrillStartError::NoStandby);
    };
    let standby = crate::config::load(&path)
        .map_err(|e| DrillStartError::Standby(format!("{}: {e}", path.display())))?;
    let id = chosen(ctx, backup)?;
    let manifest = ctx
        .repo
        .read_manifest(&id)
        .map_err(|e| DrillStartError::Standby(e.to_string()))?;
    let plan = crate::restore::target::plan_for(&manifest, &standby, &Default::default()).map_err(
        |e| DrillStartError::Standby(format!("planning the restore into {}: {e}", path.display())),
    )?;
    let plan_json = serde_json::to_string(&plan).unwrap_or_default();
    let steps = plan.steps.len();
    let claim = claim(ctx)?;
    let now = Utc::now();
    let (work, restore_id) = claim.start(
        JobKind::Drill,
        trigger,
        "restoring into the standby",
        |cat, job| {
            cat.insert_drill(job, &id, DrillLevel::Standby.into(), now)?;
            let rid = cat.insert_restore(&id, &plan_json, "{}", steps, now)?;
            cat.mark_drill_restore(rid)?;
            Ok(rid)
        },
    )?;
    let job_id = work.job_id;
    tracing::info!(job_id = %job_id, backup_id = %id, restore_id = %restore_id, standby = %path.display(), "level 2 drill started");
    let span = tracing::info_span!("drill", backup_id = %id, job_id = %job_id);
    let bid = id.clone();
    let check = settings.drill.check.clone();
    spawn(
        work,
        span,
        move |w| {
            let started = Utc::now();
            let manifest = Arc::new(manifest);
            let prog = w.progress.clone();
            let progress_fn = move |i: usize, line: &str| {
                if let Ok(mut p) = prog.lock() {
                    p.step = format!("standby step {}: {line}", i + 1);
                }
            };
            let run = crate::restore::exec::RestoreRun {
                restore_id,
                plan: &plan,
                manifest: &manifest,
                settings: &standby,
                repo: &w.ctx.repo,
                catalog: &w.ctx.catalog,
                options: Default::default(),
                backup_state: None,
                cancel: &w.cancel,
                progress: &progress_fn,
            };
            let mut r = crate::restore::exec::execute(&run).map_err(|e| e.to_string());
            if let (Ok(()), Some(argv)) = (&r, &check) {
                w.step("checking the standby");
                r = crate::cluster::node::Node::local("head node")
                    .run(argv, std::time::Duration::from_secs(3600), &w.cancel)
                    .map(|_| ())
                    .map_err(|e| format!("[drill] check: {e}"));
            }
            let titles: Vec<String> = plan.steps.iter().map(|s| s.title.clone()).collect();
            (bid, started, restore_id, titles, r)
        },
        end_standby,
    );
    Ok(JobStarted {
        job_id,
        backup_id: Some(id),
    })
}

type StandbyResult = (
    BackupId,
    DateTime<Utc>,
    crate::ids::RestoreId,
    Vec<String>,
    Result<(), String>,
);

/// The ending of a drill whose task died: the job and the drill failed with why.
fn task_died(job: crate::ids::JobId, e: String, now: DateTime<Utc>) -> Ending {
    let error = e.clone();
    Ending {
        record: Some(Box::new(move |cat: &mut crate::catalog::Catalog| {
            cat.finish_drill(job, State::Failed, Some(&error), None, None, now)
        })),
        ..Ending::plain(State::Failed, Some(e))
    }
}

fn end_standby(w: &Work, result: Result<StandbyResult, String>) -> Ending {
    let ctx = &w.ctx;
    let job = w.job_id;
    let now = Utc::now();
    let (bid, started, restore_id, titles, r) = match result {
        Ok(x) => x,
        Err(e) => return task_died(job, e, now),
    };
    // Each step's time, from the restore's own record of it.
    let steps: Vec<crate::drill::report::StepTime> = lock_catalog(&ctx.catalog)
        .restore(restore_id)
        .ok()
        .flatten()
        .map(|rec| {
            rec.steps
                .iter()
                .map(|s| crate::drill::report::StepTime {
                    title: titles.get(s.idx).cloned().unwrap_or_default(),
                    seconds: match (s.started_at, s.finished_at) {
                        (Some(a), Some(b)) => (b - a).num_milliseconds().max(0) as f64 / 1000.0,
                        _ => 0.0,
                    },
                })
                .collect()
        })
        .unwrap_or_default();
    let cancelled = w.cancel.is_cancelled();
    let report = DrillReport::standby(bid.as_str(), started, now, steps, r.clone().err());
    let (state, rstate) = match (&r, cancelled) {
        (Ok(()), _) => (State::Succeeded, crate::domain::RestoreState::Succeeded),
        (Err(_), true) => (State::Interrupted, crate::domain::RestoreState::Interrupted),
        (Err(_), false) => (State::Failed, crate::domain::RestoreState::Failed),
    };
    let error = r
        .err()
        .map(|e| format!("level 2 drill of backup {bid} failed: {e}"));
    if let Some(e) = &error {
        tracing::error!("{e}");
    } else {
        tracing::info!(
            rto_seconds = report.rto_seconds(),
            "level 2 drill passed: the backup restored into the standby"
        );
    }
    let rto = report.rto_seconds();
    record_outcome(
        ctx,
        job,
        &bid,
        DrillLevel::Standby,
        state,
        error.as_deref(),
        Some(&report),
    );
    let json = serde_json::to_string(&report).ok();
    let drill_error = error.clone();
    let record = move |cat: &mut crate::catalog::Catalog| {
        cat.set_restore_state(restore_id, rstate, drill_error.as_deref(), now)?;
        cat.finish_drill(
            job,
            state,
            drill_error.as_deref(),
            Some(rto),
            json.as_deref(),
            now,
        )
    };
    Ending {
        record: Some(Box::new(record)),
        ..Ending::plain(state, error)
    }
}

/// The metrics and the `drill_result` hook of a finished drill.
fn record_outcome(
    ctx: &Ctx,
    job: crate::ids::JobId,
    bid: &BackupId,
    level: DrillLevel,
    state: State,
    error: Option<&str>,
    report: Option<&DrillReport>,
) {
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
    let rto = report.map(DrillReport::rto_seconds);
    if state == State::Succeeded {
        ctx.metrics
            .drill_last_success
            .with_label_values(&[&l])
            .set(Utc::now().timestamp_millis() as f64 / 1000.0);
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
            ("error", error.unwrap_or_default().to_string()),
            (
                "rto_seconds",
                rto.map(|r| format!("{r:.1}")).unwrap_or_default(),
            ),
            (
                "findings",
                report
                    .map(|r| r.findings_total.to_string())
                    .unwrap_or_default(),
            ),
            (
                "damaged",
                report
                    .map(|r| r.damaged_total.to_string())
                    .unwrap_or_default(),
            ),
        ],
    );
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
        Err(e) => return task_died(job, e, now),
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
    let rto = report.as_ref().map(DrillReport::rto_seconds);
    record_outcome(
        ctx,
        job,
        &bid,
        level,
        state,
        error.as_deref(),
        report.as_ref(),
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

    fn rec(id: &str, state: State) -> BackupRecord {
        super::super::verify::tests::rec(id, state, None)
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
