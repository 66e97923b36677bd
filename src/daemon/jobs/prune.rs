//! Pruning as a job: retention's decisions (from the catalog, the `[retention]` policy and the
//! clock) carried out — each forgotten backup's manifest removed, then its catalog row — then
//! garbage collection of the blobs no manifest references. It runs in the job slot, so no backup
//! writes to the repository meanwhile (a backup reuses blobs no committed manifest references
//! yet). Dry runs compute the same decisions without touching anything.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::catalog::{BackupRecord, CatalogError, JobKind, State};
use crate::ids::BackupId;
use crate::repository::GcReport;
use crate::retention::{self, BackupFacts, Decision};

use crate::api::JobStarted;

use super::super::Ctx;
use super::{claim, lock_catalog, spawn, Ending, JobError};

/// What a prune did.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PruneReport {
    pub forgotten: Vec<BackupId>,
    pub gc: GcReport,
}

/// Retention's facts about a cataloged backup.
pub fn facts(b: &BackupRecord) -> BackupFacts {
    BackupFacts {
        id: b.id.clone(),
        started_at: b.started_at,
        state: b.state,
        verified: b.verified_at.is_some() && !b.damaged,
        pinned: b.pinned,
    }
}

/// What pruning would do now, newest first.
pub fn decisions(ctx: &Ctx, now: DateTime<Utc>) -> Result<Vec<Decision>, CatalogError> {
    let t0 = std::time::Instant::now();
    let backups = lock_catalog(&ctx.catalog).backups()?;
    let t1 = std::time::Instant::now();
    let facts: Vec<BackupFacts> = backups.iter().map(facts).collect();
    let d = retention::decide(&facts, &ctx.settings().retention.policy, now);
    tracing::debug!(
        backups = d.len(),
        catalog_us = (t1 - t0).as_micros() as u64,
        decide_us = t1.elapsed().as_micros() as u64,
        "retention decided"
    );
    Ok(d)
}

/// Starts a prune job (forget, then collect garbage).
pub fn start(ctx: &Arc<Ctx>, trigger: &str) -> Result<JobStarted, JobError> {
    // Never while a restore is unfinished: its backup (the good one) must stay.
    if let Some(e) = super::restore::unfinished(ctx)? {
        return Err(e);
    }
    let (work, ()) = claim(ctx)?.start(JobKind::Prune, trigger, "deciding", |_, _| Ok(()))?;
    let job_id = work.job_id;
    tracing::info!(job_id = %job_id, trigger = trigger, "prune started");
    let span = tracing::info_span!("prune", job_id = %job_id);
    spawn(
        work,
        span,
        |w| run(&w.ctx, &w.cancel, &|s| w.step(s)),
        |w, result| {
            let (state, error) = match result.and_then(|r| r) {
                Ok(r) => {
                    tracing::info!(
                        forgotten = r.forgotten.len(),
                        blobs_deleted = r.gc.blobs_deleted,
                        bytes_freed = r.gc.bytes_freed,
                        "prune succeeded"
                    );
                    (State::Succeeded, None)
                }
                Err(e) if w.cancel.is_cancelled() => {
                    (State::Interrupted, Some(format!("interrupted: {e}")))
                }
                Err(e) => {
                    tracing::error!("prune failed: {e}");
                    (State::Failed, Some(e))
                }
            };
            Ending {
                repository_changed: true,
                ..Ending::plain(state, error)
            }
        },
    );
    Ok(JobStarted {
        job_id,
        backup_id: None,
    })
}

/// Forgets what retention says to forget, then collects garbage. Errors name the backup.
fn run(
    ctx: &Ctx,
    cancel: &tokio_util::sync::CancellationToken,
    step: &dyn Fn(&str),
) -> Result<PruneReport, String> {
    // Delete rights first: a prune that cannot delete stops before it forgets anything.
    let settings = ctx.settings();
    let repo = crate::daemon::prune_repository(&ctx.repo, &settings.repository)
        .map_err(|e| format!("the prune identity: {e}"))?;
    let identity = match &settings.repository.store {
        crate::config::StoreSettings::S3(s3) if s3.prune_access_key_id.is_some() => {
            "the prune identity ([repository] prune_access_key_id)"
        }
        _ => "the repository's identity",
    };
    match repo.storage().can_delete() {
        Ok(true) => {}
        Ok(false) => {
            return Err(format!(
                "{identity} may not delete objects in {} (access denied): nothing was forgotten. A backup identity without delete rights is the point of split credentials: give prune its own with [repository] prune_access_key_id and prune_secret_access_key, or run the prune where that identity is",
                repo.describe()
            ))
        }
        Err(e) => return Err(format!("checking the right to delete: {e}")),
    }
    let decisions = decisions(ctx, Utc::now()).map_err(|e| e.to_string())?;
    crate::failpoint::hit("prune.decided", cancel);
    let mut report = PruneReport::default();
    for d in decisions.iter().filter(|d| !d.keep) {
        if cancel.is_cancelled() {
            return Err("cancelled: hopsdrd is stopping".into());
        }
        step(&format!("forgetting {}", d.id));
        // The manifest first: a crash in between leaves a catalog row without a manifest,
        // which the next prune removes; never a manifest the catalog no longer shows.
        match repo.forget(&d.id) {
            Ok(()) | Err(crate::repository::RepoError::BackupNotFound { .. }) => {}
            Err(e) => return Err(format!("forgetting backup {}: {e}", d.id)),
        }
        crate::failpoint::hit("prune.manifest_removed", cancel);
        lock_catalog(&ctx.catalog)
            .remove_backup(&d.id)
            .map_err(|e| format!("forgetting backup {}: {e}", d.id))?;
        crate::failpoint::hit("prune.forgot_one", cancel);
        tracing::info!(backup_id = %d.id, "backup forgotten");
        ctx.metrics.prune_forgotten.inc();
        report.forgotten.push(d.id.clone());
    }
    delete_snapshots(ctx, &report.forgotten, &step);
    step("collecting garbage");
    let gc = repo.gc(cancel);
    // The prune identity's store deleted blobs the backup store may remember as present.
    ctx.repo.storage().invalidate();
    report.gc = gc.map_err(|e| format!("garbage collection: {e}"))?;
    ctx.metrics.gc_freed_bytes.inc_by(report.gc.bytes_freed);
    Ok(report)
}

/// The OpenSearch snapshots of the backups just forgotten, deleted from OpenSearch's
/// repository (each backup holds the repository's files, so no restore needs them there). A
/// failure is logged, never failing the prune; a crash before it leaves the snapshot, named in
/// no backup any more, to be deleted by hand.
fn delete_snapshots(ctx: &Ctx, forgotten: &[crate::ids::BackupId], step: &dyn Fn(&str)) {
    let settings = ctx.settings();
    let Some(o) = &settings.opensearch else {
        return;
    };
    if forgotten.is_empty() {
        return;
    }
    step("deleting the forgotten backups' OpenSearch snapshots");
    let client = match crate::cluster::opensearch::Opensearch::new(
        o,
        &crate::config::SecretEnv::from_process(),
    ) {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!("OpenSearch snapshots of forgotten backups not deleted: {e}");
            return;
        }
    };
    for id in forgotten {
        let snap = crate::backup::opensearch::snapshot_name(id);
        match client.delete_snapshot(&o.repository, &snap) {
            Ok(()) => {
                tracing::info!(snapshot = %snap, "OpenSearch snapshot of a forgotten backup deleted")
            }
            Err(e) => {
                tracing::warn!(snapshot = %snap, "OpenSearch snapshot of a forgotten backup not deleted: {e}")
            }
        }
    }
}
