//! The cron scheduler loop: evaluates every configured schedule with the pure
//! [`crate::schedule::decide`] and asks the job runner to start the job when one is due.
//!
//! It sleeps until the next due time but never longer than a minute, so suspend and wall-clock
//! jumps are noticed within a minute. A fire while another job runs is skipped, recorded as the
//! schedule's last fire and counted (`hopsdr_schedule_skipped_total{reason="busy"}`), never queued.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::config::JobKind;
use crate::schedule::{self, Decision};

use super::jobs::{self, JobError};
use super::Ctx;

const MAX_SLEEP: Duration = Duration::from_secs(60);

/// Records a baseline fire for schedules that have never fired, so the first fire is the first
/// slot after now (no catch-up for a schedule that is new).
pub fn arm_new_schedules(ctx: &Ctx) {
    let settings = ctx.settings();
    let now = Utc::now();
    let mut cat = ctx.catalog.lock().unwrap_or_else(|p| p.into_inner());
    for s in &settings.schedules {
        match cat.last_fire(&s.name) {
            Ok(Some(_)) => {}
            Ok(None) => {
                if let Err(e) = cat.record_fire(&s.name, now, "armed") {
                    tracing::error!(schedule = %s.name, "{e}");
                }
            }
            Err(e) => tracing::error!(schedule = %s.name, "{e}"),
        }
    }
}

/// Runs until `shutdown` fires. `wake` re-evaluates at once (after a reload).
pub async fn run(ctx: Arc<Ctx>, wake: Arc<Notify>, shutdown: CancellationToken) {
    loop {
        arm_new_schedules(&ctx);
        let now = Utc::now();
        let settings = ctx.settings();
        ctx.metrics
            .drill_max_age
            .set(settings.drill.max_age.map_or(0.0, |d| d.as_secs_f64()));
        copy_intervals(&ctx, &settings, now);
        let mut sleep = MAX_SLEEP;
        for s in &settings.schedules {
            let last = ctx
                .catalog
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .last_fire(&s.name);
            let last = match last {
                Ok(l) => l,
                Err(e) => {
                    tracing::error!(schedule = %s.name, "{e}");
                    continue;
                }
            };
            // Exported at zero before any skip: dashboards and `increase()` see the series.
            ctx.metrics
                .schedule_skipped
                .with_label_values(&[&s.name, "busy"]);
            if let Some(iv) = schedule::expected_interval(&s.cron, s.timezone, now) {
                ctx.metrics
                    .schedule_expected_interval
                    .with_label_values(&[&s.name])
                    .set(iv.num_seconds() as f64);
            }
            match schedule::decide(&s.cron, s.timezone, last, s.catch_up, now) {
                Decision::Never => {}
                Decision::Wait { next } => {
                    ctx.metrics
                        .schedule_next_run
                        .with_label_values(&[&s.name])
                        .set(next.timestamp() as f64);
                    let until = (next - now).to_std().unwrap_or(Duration::ZERO);
                    sleep = sleep.min(until);
                }
                Decision::Fire { due, caught_up } => {
                    let outcome = fire(&ctx, &s.name, s.job, caught_up);
                    let mut cat = ctx.catalog.lock().unwrap_or_else(|p| p.into_inner());
                    if let Err(e) = cat.record_fire(&s.name, due, &outcome) {
                        tracing::error!(schedule = %s.name, "{e}");
                    }
                    // Evaluate again at once: the next slot's metric and sleep come from there.
                    sleep = Duration::ZERO;
                }
            }
        }
        if sleep.is_zero() {
            tokio::task::yield_now().await;
            continue;
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = wake.notified() => {}
            _ = tokio::time::sleep(sleep + Duration::from_millis(5)) => {}
        }
    }
}

/// `hopsdr_copy_expected_interval_seconds{target}`: the most frequent copy schedule's interval
/// per target (the overdue-copy alert compares the last copy's age with it).
fn copy_intervals(ctx: &Ctx, settings: &crate::config::Settings, now: chrono::DateTime<Utc>) {
    for c in &settings.copies {
        let every = settings
            .schedules
            .iter()
            .filter(|s| s.job == JobKind::Copy && s.target.as_deref() == Some(c.name.as_str()))
            .filter_map(|s| schedule::expected_interval(&s.cron, s.timezone, now))
            .min();
        if let Some(iv) = every {
            ctx.metrics
                .copy_expected_interval
                .with_label_values(&[&c.name])
                .set(iv.num_seconds() as f64);
        }
        for result in ["succeeded", "failed", "interrupted"] {
            ctx.metrics
                .copies_total
                .with_label_values(&[&c.name, result]);
        }
    }
}

fn fire(ctx: &Arc<Ctx>, name: &str, job: JobKind, caught_up: bool) -> String {
    let trigger = format!("schedule:{name}");
    let r = match job {
        JobKind::Copy => {
            let target = ctx
                .settings()
                .schedules
                .iter()
                .find(|s| s.name == name)
                .and_then(|s| s.target.clone());
            match jobs::copy::start(ctx, &trigger, target) {
                Ok(s) => Ok(s),
                Err(jobs::copy::CopyStartError::Job(e)) => Err(e),
                Err(e) => {
                    tracing::warn!(schedule = name, "no copy: {e}");
                    return format!("skipped: {e}");
                }
            }
        }
        JobKind::Backup => jobs::backup::start(ctx, &trigger),
        JobKind::Prune => jobs::prune::start(ctx, &trigger),
        JobKind::Verify => match jobs::verify::start(ctx, &trigger, None, None) {
            Ok(s) => Ok(s),
            Err(jobs::verify::VerifyStartError::Job(e)) => Err(e),
            Err(e) => {
                tracing::info!(schedule = name, "nothing verified: {e}");
                return format!("skipped: {e}");
            }
        },
        JobKind::Drill => {
            match jobs::drill::start(
                ctx,
                &trigger,
                None,
                crate::drill::report::DrillLevel::ReadBack,
            ) {
                Ok(s) => Ok(s),
                Err(jobs::drill::DrillStartError::Job(e)) => Err(e),
                Err(e) => {
                    tracing::info!(schedule = name, "no drill: {e}");
                    return format!("skipped: {e}");
                }
            }
        }
    };
    match r {
        Ok(started) => {
            tracing::info!(schedule = name, job_id = %started.job_id, caught_up, "schedule fired");
            format!("started job {}", started.job_id)
        }
        Err(JobError::Busy(running)) => {
            tracing::warn!(schedule = name, running_job = %running, "schedule fire skipped: job {running} is running");
            ctx.metrics
                .schedule_skipped
                .with_label_values(&[name, "busy"])
                .inc();
            format!("skipped: busy with job {running}")
        }
        Err(e) => {
            tracing::error!(schedule = name, "schedule fire failed: {e}");
            ctx.metrics
                .schedule_skipped
                .with_label_values(&[name, e.code()])
                .inc();
            format!("skipped: {e}")
        }
    }
}
