//! The typed domain every layer shares, below all of them: the kinds of jobs and the states of
//! jobs, backups and their components (the ids are in [`crate::ids`]). Nothing here knows how it
//! is stored or shown.

use serde::{Deserialize, Serialize};

/// The kind of a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobKind {
    Backup,
    Restore,
    Verify,
    Prune,
    /// The catalog's backups rebuilt from the repository.
    Rebuild,
}

impl JobKind {
    pub fn as_str(self) -> &'static str {
        match self {
            JobKind::Backup => "backup",
            JobKind::Restore => "restore",
            JobKind::Verify => "verify",
            JobKind::Prune => "prune",
            JobKind::Rebuild => "rebuild",
        }
    }
    pub(crate) fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "backup" => JobKind::Backup,
            "restore" => JobKind::Restore,
            "verify" => JobKind::Verify,
            "prune" => JobKind::Prune,
            "rebuild" => JobKind::Rebuild,
            _ => return None,
        })
    }
    pub const ALL: [JobKind; 5] = [
        JobKind::Backup,
        JobKind::Restore,
        JobKind::Verify,
        JobKind::Prune,
        JobKind::Rebuild,
    ];
}

/// The state of a job or of a backup. A backup's `succeeded` means its manifest is committed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    Queued,
    Running,
    Succeeded,
    /// Committed, but not everything was captured (e.g. blocks the metadata references).
    Partial,
    Failed,
    Interrupted,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Queued => "queued",
            State::Running => "running",
            State::Succeeded => "succeeded",
            State::Partial => "partial",
            State::Failed => "failed",
            State::Interrupted => "interrupted",
        }
    }
    pub(crate) fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "queued" => State::Queued,
            "running" => State::Running,
            "succeeded" => State::Succeeded,
            "partial" => State::Partial,
            "failed" => State::Failed,
            "interrupted" => State::Interrupted,
            _ => return None,
        })
    }
    pub fn is_final(self) -> bool {
        matches!(
            self,
            State::Succeeded | State::Partial | State::Failed | State::Interrupted
        )
    }
}
