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
    /// The repository's index rebuilt from its packs.
    Repair,
    /// A backup proved to restore (read back for its meaning, or restored into a standby).
    Drill,
    /// The repository copied to a `[[copy]]`.
    Copy,
}

impl JobKind {
    pub fn as_str(self) -> &'static str {
        match self {
            JobKind::Backup => "backup",
            JobKind::Restore => "restore",
            JobKind::Verify => "verify",
            JobKind::Prune => "prune",
            JobKind::Rebuild => "rebuild",
            JobKind::Repair => "repair",
            JobKind::Drill => "drill",
            JobKind::Copy => "copy",
        }
    }
    pub(crate) fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "backup" => JobKind::Backup,
            "restore" => JobKind::Restore,
            "verify" => JobKind::Verify,
            "prune" => JobKind::Prune,
            "rebuild" => JobKind::Rebuild,
            "repair" => JobKind::Repair,
            "drill" => JobKind::Drill,
            "copy" => JobKind::Copy,
            _ => return None,
        })
    }
    pub const ALL: [JobKind; 8] = [
        JobKind::Backup,
        JobKind::Restore,
        JobKind::Verify,
        JobKind::Prune,
        JobKind::Rebuild,
        JobKind::Repair,
        JobKind::Drill,
        JobKind::Copy,
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

/// A recorded state with allowed transitions (a restore's, a restore step's).
pub trait Transitions: Copy {
    fn as_str(self) -> &'static str;
    fn parse(s: &str) -> Option<Self>;
    /// Whether this state may become `next`.
    fn allows(self, next: Self) -> bool;
}

macro_rules! transitions {
    ($t:ty) => {
        impl Transitions for $t {
            fn as_str(self) -> &'static str {
                <$t>::as_str(self)
            }
            fn parse(s: &str) -> Option<Self> {
                <$t>::parse(s)
            }
            fn allows(self, next: Self) -> bool {
                <$t>::allows(self, next)
            }
        }
    };
}
transitions!(RestoreState);
transitions!(StepState);

/// The state of a restore. A restore that is not `succeeded` or `abandoned` holds off scheduled
/// backups and pruning.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RestoreState {
    Running,
    Succeeded,
    Failed,
    Interrupted,
    /// Given up by the operator: nothing holds off the other jobs any more.
    Abandoned,
}

impl RestoreState {
    pub fn as_str(self) -> &'static str {
        match self {
            RestoreState::Running => "running",
            RestoreState::Succeeded => "succeeded",
            RestoreState::Failed => "failed",
            RestoreState::Interrupted => "interrupted",
            RestoreState::Abandoned => "abandoned",
        }
    }
    pub(crate) fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "running" => RestoreState::Running,
            "succeeded" => RestoreState::Succeeded,
            "failed" => RestoreState::Failed,
            "interrupted" => RestoreState::Interrupted,
            "abandoned" => RestoreState::Abandoned,
            _ => return None,
        })
    }
    /// Finished for good: succeeded or abandoned (the others hold off backups and pruning).
    pub fn is_settled(self) -> bool {
        matches!(self, RestoreState::Succeeded | RestoreState::Abandoned)
    }
    /// The allowed transitions: a running restore ends; a failed or interrupted one is resumed
    /// or abandoned; a settled one never changes.
    pub fn allows(self, next: RestoreState) -> bool {
        use RestoreState::*;
        matches!(
            (self, next),
            (Running, Succeeded | Failed | Interrupted)
                | (Failed | Interrupted, Running | Abandoned)
        )
    }
}

/// The state of one step of a restore. A step recorded `done` never runs again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StepState {
    Pending,
    Running,
    Done,
    Failed,
    Interrupted,
}

impl StepState {
    pub fn as_str(self) -> &'static str {
        match self {
            StepState::Pending => "pending",
            StepState::Running => "running",
            StepState::Done => "done",
            StepState::Failed => "failed",
            StepState::Interrupted => "interrupted",
        }
    }
    pub(crate) fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "pending" => StepState::Pending,
            "running" => StepState::Running,
            "done" => StepState::Done,
            "failed" => StepState::Failed,
            "interrupted" => StepState::Interrupted,
            _ => return None,
        })
    }
    /// The allowed transitions: a step not done starts; a running step ends.
    pub fn allows(self, next: StepState) -> bool {
        use StepState::*;
        matches!(
            (self, next),
            (Pending | Failed | Interrupted, Running) | (Running, Done | Failed | Interrupted)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restore_transitions() {
        use RestoreState::*;
        let all = [Running, Succeeded, Failed, Interrupted, Abandoned];
        let allowed: Vec<(RestoreState, RestoreState)> = all
            .iter()
            .flat_map(|a| all.iter().map(move |b| (*a, *b)))
            .filter(|(a, b)| a.allows(*b))
            .collect();
        assert_eq!(
            allowed,
            [
                (Running, Succeeded),
                (Running, Failed),
                (Running, Interrupted),
                (Failed, Running),
                (Failed, Abandoned),
                (Interrupted, Running),
                (Interrupted, Abandoned),
            ]
        );
        for s in all {
            assert_eq!(RestoreState::parse(s.as_str()), Some(s));
        }
        assert!(Succeeded.is_settled() && Abandoned.is_settled() && !Failed.is_settled());
    }

    #[test]
    fn step_transitions() {
        use StepState::*;
        assert!(Pending.allows(Running) && Failed.allows(Running) && Interrupted.allows(Running));
        assert!(Running.allows(Done) && Running.allows(Failed) && Running.allows(Interrupted));
        assert!(!Done.allows(Running), "a step done never runs again");
        assert!(!Pending.allows(Done), "a step is done only after it ran");
        for s in [Pending, Running, Done, Failed, Interrupted] {
            assert_eq!(StepState::parse(s.as_str()), Some(s));
        }
    }
}
