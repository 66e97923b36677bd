//! Executing a restore plan as a persisted state machine: every step's transition is written
//! to the catalog before its side effects, a step recorded `done` is never run again, and
//! `resume` continues at the first step that is not done (inside the data step, only the node
//! ids not yet restored). Cancellation (abort, shutdown) stops at the next safe point.

use std::collections::BTreeSet;
use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::catalog::{Catalog, CatalogError, State, StepState};
use crate::cluster::mysql::{MysqlClient, MysqlError, MysqlTarget};
use crate::cluster::ndb_mgm::{MgmError, NodeState};
use crate::cluster::ndb_tables;
use crate::cluster::node::{Node, NodeError};
use crate::config::{NodeHost, SecretEnv, Settings};
use crate::repository::{Entry, Manifest, RepoError, Repository};

mod opensearch;
mod replicas;
mod steps;
mod via_agent;
mod volumes;

use steps::run_step;

use super::plan::{RestorePlan, RestoreStep, StepKind};

/// What the operator allowed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestoreOptions {
    /// Restore a backup recorded `partial`.
    pub allow_partial: bool,
    /// Go on despite a version mismatch or a target that is not empty.
    pub force: bool,
    /// The repository read as it was at this time (object versions of a versioned bucket).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub as_of: Option<chrono::DateTime<chrono::Utc>>,
    /// Read from this `[[copy]]` instead of the repository (`--repository NAME`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repository: Option<String>,
}

/// Why a restore step failed.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    #[error("step {step} ({title}): {message}")]
    Refused {
        step: usize,
        title: String,
        message: String,
    },
    #[error("step {step} ({title}): {source}")]
    Node {
        step: usize,
        title: String,
        source: Box<NodeError>,
    },
    #[error("step {step} ({title}): {source}")]
    Repository {
        step: usize,
        title: String,
        source: Box<RepoError>,
    },
    #[error("step {step} ({title}): {source}")]
    Mgm {
        step: usize,
        title: String,
        source: Box<MgmError>,
    },
    #[error("step {step} ({title}): {source}")]
    Mysql {
        step: usize,
        title: String,
        source: Box<MysqlError>,
    },
    #[error("step {step} ({title}): {source}")]
    Agent {
        step: usize,
        title: String,
        source: Box<crate::cluster::agent::AgentError>,
    },
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    #[error("aborted before step {step} ({title}): resume with hopsdrctl restore resume")]
    Cancelled { step: usize, title: String },
}

impl RestoreError {
    pub fn is_cancelled(&self) -> bool {
        match self {
            RestoreError::Cancelled { .. } => true,
            RestoreError::Node { source, .. } => matches!(**source, NodeError::Cancelled { .. }),
            _ => false,
        }
    }
}

/// Everything a run needs.
pub struct RestoreRun<'a> {
    pub restore_id: crate::ids::RestoreId,
    pub plan: &'a RestorePlan,
    /// Shared with the tar producers of the write-back (never copied: it can be large).
    pub manifest: &'a Arc<Manifest>,
    pub settings: &'a Settings,
    pub repo: &'a Repository,
    pub catalog: &'a Mutex<Catalog>,
    pub options: RestoreOptions,
    /// The catalog's state of the backup (failed, partial...), if it knows it.
    pub backup_state: Option<State>,
    pub cancel: &'a CancellationToken,
    /// Called with (step index, line) for the last output lines of the current step.
    pub progress: &'a (dyn Fn(usize, &str) + Sync),
}

/// How long one tool run may take (ndb_restore of a large node runs for hours).
const TOOL_TIMEOUT: Duration = Duration::from_secs(24 * 3600);
const SHORT_TIMEOUT: Duration = Duration::from_secs(600);

fn lock(c: &Mutex<Catalog>) -> std::sync::MutexGuard<'_, Catalog> {
    c.lock().unwrap_or_else(|p| p.into_inner())
}

/// Which steps the catalog records as done, and the data step's finished node ids.
fn recorded(run: &RestoreRun<'_>) -> Result<(Vec<StepState>, Vec<String>), CatalogError> {
    let rec = lock(run.catalog).last_restore()?;
    Ok(match rec.filter(|r| r.id == run.restore_id) {
        Some(r) => (
            r.steps.iter().map(|s| s.state).collect(),
            r.steps.iter().map(|s| s.detail.clone()).collect(),
        ),
        None => (Vec::new(), Vec::new()),
    })
}

/// Runs the plan from the first step not done.
pub fn execute(run: &RestoreRun<'_>) -> Result<(), RestoreError> {
    let (states, details) = recorded(run)?;
    for (i, step) in run.plan.steps.iter().enumerate() {
        if states.get(i) == Some(&StepState::Done) {
            continue;
        }
        if run.cancel.is_cancelled() {
            return Err(RestoreError::Cancelled {
                step: i + 1,
                title: step.title.clone(),
            });
        }
        lock(run.catalog).set_step_state(
            run.restore_id,
            i,
            StepState::Running,
            None,
            Utc::now(),
        )?;
        tracing::info!(step = %step.title, restore_id = %run.restore_id, "restore step {} started", i + 1);
        crate::failpoint::hit(&format!("restore.step{}", i + 1), run.cancel);
        let detail = details.get(i).cloned().unwrap_or_default();
        let res = run_step(run, i, step, &detail);
        let now = Utc::now();
        audit_step(run, i, step, &res, now);
        let _ = crate::hooks::fire(
            &run.settings.hooks,
            crate::hooks::Event::RestoreStep,
            &[
                ("restore_id", run.restore_id.to_string()),
                ("backup_id", run.manifest.id.to_string()),
                ("step", (i + 1).to_string()),
                ("step_title", step.title.clone()),
                (
                    "state",
                    match &res {
                        Ok(()) => "done".to_string(),
                        Err(e) if e.is_cancelled() => "interrupted".to_string(),
                        Err(_) => "failed".to_string(),
                    },
                ),
                (
                    "error",
                    res.as_ref()
                        .err()
                        .map(|e| e.to_string())
                        .unwrap_or_default(),
                ),
            ],
        );
        match &res {
            Ok(()) => {
                lock(run.catalog).set_step_state(run.restore_id, i, StepState::Done, None, now)?;
                tracing::info!(step = %step.title, restore_id = %run.restore_id, "restore step {} done", i + 1);
            }
            Err(e) => {
                let state = if e.is_cancelled() {
                    StepState::Interrupted
                } else {
                    StepState::Failed
                };
                lock(run.catalog).set_step_state(
                    run.restore_id,
                    i,
                    state,
                    Some(&e.to_string()),
                    now,
                )?;
                tracing::error!(step = %step.title, restore_id = %run.restore_id, "restore step {} {}: {e}", i + 1, state.as_str());
            }
        }
        res?;
    }
    Ok(())
}

/// Every step, its commands and its outcome go to the audit log.
fn audit_step(
    run: &RestoreRun<'_>,
    i: usize,
    step: &RestoreStep,
    res: &Result<(), RestoreError>,
    now: DateTime<Utc>,
) {
    let commands: Vec<String> = step
        .commands
        .iter()
        .map(|c| crate::cluster::node::remote_command_line(c))
        .collect();
    let outcome = match res {
        Ok(()) => "done".to_string(),
        Err(e) => format!("failed: {e}"),
    };
    let rec = crate::catalog::AuditRecord {
        at: now,
        uid: nix::unistd::getuid().as_raw(),
        pid: std::process::id() as i32,
        action: format!("restore {} step {}", run.restore_id, i + 1),
        allowed: true,
        detail: format!(
            "{} [{}] {} -> {outcome}",
            step.title,
            step.node,
            commands.join(" ; ")
        ),
    };
    if let Err(e) = lock(run.catalog).audit(&rec) {
        tracing::error!("failed to write audit record: {e}");
    }
}

fn refused(i: usize, step: &RestoreStep, message: impl Into<String>) -> RestoreError {
    RestoreError::Refused {
        step: i + 1,
        title: step.title.clone(),
        message: message.into(),
    }
}

fn node_err(i: usize, step: &RestoreStep) -> impl Fn(NodeError) -> RestoreError + '_ {
    move |source| RestoreError::Node {
        step: i + 1,
        title: step.title.clone(),
        source: Box::new(source),
    }
}

fn mgm_err(i: usize, step: &RestoreStep) -> impl Fn(MgmError) -> RestoreError + '_ {
    move |source| RestoreError::Mgm {
        step: i + 1,
        title: step.title.clone(),
        source: Box::new(source),
    }
}

fn repo_err(i: usize, step: &RestoreStep) -> impl Fn(RepoError) -> RestoreError + '_ {
    move |source| RestoreError::Repository {
        step: i + 1,
        title: step.title.clone(),
        source: Box::new(source),
    }
}

/// Removes the staged RonDB files of a restore of `backup` (after it succeeded, or was
/// abandoned); a failure is logged, not fatal.
pub fn remove_staging(settings: &Settings, backup: &crate::ids::BackupId) {
    let dir = settings.restore.staging_dir.join(backup.as_str());
    match std::fs::remove_dir_all(&dir) {
        Ok(()) => tracing::info!("removed the staged RonDB files in {}", dir.display()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => tracing::warn!(
            "failed to remove the staged RonDB files in {}: {e}",
            dir.display()
        ),
    }
}

/// `base` joined with a repository path, refused if it would leave `base`.
pub fn safe_join(base: &Path, rel: &str) -> Option<PathBuf> {
    let p = Path::new(rel);
    if p.is_absolute() || p.components().any(|c| !matches!(c, Component::Normal(_))) {
        return None;
    }
    Some(base.join(p))
}

/// Durations of every step and the total, from the catalog's records.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RestoreReport {
    pub steps: Vec<(String, f64)>,
    pub total_seconds: f64,
}

/// The report of restore `rec`.
pub fn report(
    plan: &RestorePlan,
    rec: &crate::catalog::RestoreRecord,
    now: DateTime<Utc>,
) -> RestoreReport {
    let mut steps = Vec::new();
    for (s, r) in plan.steps.iter().zip(rec.steps.iter()) {
        let secs = match (r.started_at, r.finished_at) {
            (Some(a), Some(b)) => (b - a).num_milliseconds().max(0) as f64 / 1000.0,
            _ => 0.0,
        };
        steps.push((s.title.clone(), secs));
    }
    let end = rec.finished_at.unwrap_or(now);
    RestoreReport {
        steps,
        total_seconds: (end - rec.created_at).num_milliseconds().max(0) as f64 / 1000.0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifest_paths_never_leave_the_staging_directory() {
        let base = Path::new("/var/lib/hopsdr/restore/x");
        assert_eq!(
            safe_join(base, "rondb/1/BACKUP-5/BACKUP-5.1.ctl"),
            Some(base.join("rondb/1/BACKUP-5/BACKUP-5.1.ctl"))
        );
        assert_eq!(safe_join(base, "../etc/passwd"), None);
        assert_eq!(safe_join(base, "rondb/../../x"), None);
        assert_eq!(safe_join(base, "/etc/passwd"), None);
        assert_eq!(safe_join(base, "rondb/./x"), Some(base.join("rondb/x")));
    }
}
