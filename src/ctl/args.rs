//! hopsdrctl's command line (clap): the commands, their arguments and the exit codes.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// Exit codes of hopsdrctl.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(i32)]
pub enum ExitCode {
    Ok = 0,
    Failed = 1,
    Usage = 2,
    Unreachable = 3,
    PermissionDenied = 4,
    Busy = 5,
}

pub(super) const EXIT_CODES_HELP: &str = "Exit codes:
  0  ok
  1  the operation failed (a backup failed, the daemon returned an error)
  2  usage or configuration error
  3  the daemon is not reachable
  4  permission denied
  5  busy: another job is running (or, for pruning and scheduled backups, an unfinished restore
     holds them off)";

/// Talk to hopsdrd: status, backups, jobs.
#[derive(Debug, Parser)]
#[command(name = "hopsdrctl", version, about, after_help = EXIT_CODES_HELP)]
pub struct Cli {
    /// Config file (read only for the socket path).
    #[arg(long, global = true, value_name = "PATH", default_value = crate::config::DEFAULT_PATH)]
    pub config: PathBuf,
    /// The daemon's socket (overrides the config).
    #[arg(long, global = true, value_name = "PATH")]
    pub socket: Option<PathBuf>,
    /// Print JSON instead of tables.
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// The daemon's status: version, uptime, current job, last successes, schedules.
    Status,
    /// List or show backups.
    Backups {
        #[command(subcommand)]
        command: BackupsCommand,
    },
    /// Start a backup.
    Backup {
        #[command(subcommand)]
        command: BackupCommand,
    },
    /// Plan a whole-cluster restore.
    Restore {
        #[command(subcommand)]
        command: RestoreCommand,
    },
    /// Show one job.
    Job {
        /// The job id.
        id: i64,
    },
    /// The catalog.
    Catalog {
        #[command(subcommand)]
        command: CatalogCommand,
    },
    /// The repository itself.
    Repo {
        #[command(subcommand)]
        command: RepoCommand,
    },
    /// The hopsdr agents on the cluster's nodes.
    Agents {
        #[command(subcommand)]
        command: AgentsCommand,
    },
    /// The keys of an encrypted repository: passphrase slots and data keys (changes: root only).
    Key {
        #[command(subcommand)]
        command: KeyCommand,
    },
    /// Read a backup back whole (every blob, every file's hash) and record the outcome; without
    /// ID, the complete backup verified longest ago.
    Verify {
        /// The backup id (YYYYMMDDTHHMMSSZ).
        id: Option<String>,
        /// Read the backup from this [[copy]] instead of the repository.
        #[arg(long, value_name = "COPY")]
        repository: Option<String>,
        /// Wait until it has finished.
        #[arg(long)]
        wait: bool,
    },
    /// Bring a [[copy]] up to date: send what it lacks (checked on the far side, manifests
    /// last), forget there what the repository forgot; without TARGET, the only copy.
    Copy {
        /// The [[copy]] name.
        target: Option<String>,
        /// Wait until it has finished.
        #[arg(long)]
        wait: bool,
    },
    /// Prove a backup restores: level 1 reads it back whole and checks what its files mean
    /// (HopsFS blocks against their .meta checksums, RonDB backup files' structure, the SQL
    /// dumps); without ID, the newest complete backup. `drill status` shows the reports.
    #[command(args_conflicts_with_subcommands = true)]
    Drill {
        #[command(subcommand)]
        command: Option<DrillCommand>,
        /// The backup id (YYYYMMDDTHHMMSSZ).
        id: Option<String>,
        /// 1: read back and checked; 2: restored into a standby cluster.
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(1..=2))]
        level: u8,
        /// Wait until it has finished, then print its report.
        #[arg(long)]
        wait: bool,
    },
    /// Forget the backups the [retention] policy does not keep, then delete the blobs no
    /// backup references.
    Prune {
        /// Only print what would be kept (with the reasons) and what would be forgotten.
        #[arg(long)]
        dry_run: bool,
        /// Wait until it has finished.
        #[arg(long)]
        wait: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum DrillCommand {
    /// The report of a drill (default: the newest): backup, checks, failures, time per step.
    Status {
        /// The drill's job id (hopsdrctl drill status --json lists them).
        job: Option<i64>,
    },
}

#[derive(Debug, Subcommand)]
pub enum BackupsCommand {
    /// Every backup the catalog knows.
    List,
    /// One backup with its components.
    Show {
        /// The backup id (YYYYMMDDTHHMMSSZ).
        id: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum RestoreCommand {
    /// Print every step of restoring BACKUP: the exact commands, where they run, what they check.
    Plan {
        /// The backup id (YYYYMMDDTHHMMSSZ).
        backup: String,
    },
    /// Restore the whole cluster from BACKUP (onto a freshly redeployed, empty cluster).
    Start {
        /// The backup id (YYYYMMDDTHHMMSSZ).
        backup: String,
        /// Do not ask for confirmation.
        #[arg(long)]
        yes: bool,
        /// Restore a backup recorded partial.
        #[arg(long)]
        allow_partial: bool,
        /// Go on despite a version mismatch or a target that is not empty.
        #[arg(long)]
        force: bool,
        /// Read the repository as it was at this time (RFC 3339, e.g. 2026-12-06T10:00:00Z):
        /// from the object versions of a versioned S3 bucket, so that a backup deleted or
        /// overwritten since (by an attacker) restores while its versions are kept.
        #[arg(long, value_name = "TIME")]
        as_of: Option<String>,
        /// Read the backup from this [[copy]] instead of the repository.
        #[arg(long, value_name = "COPY")]
        repository: Option<String>,
        /// Wait until it has finished, showing progress.
        #[arg(long)]
        wait: bool,
    },
    /// The last restore: every step with its state, duration and last output.
    Status,
    /// Continue the last restore where it stopped (after a failure, an abort or a crash).
    Resume {
        /// Wait until it has finished, showing progress.
        #[arg(long)]
        wait: bool,
    },
    /// Stop the running restore at its next safe point (resume continues it).
    Abort,
    /// Give up the last restore that failed or stopped unfinished: scheduled backups and pruning,
    /// held off until then, run again (the cluster stays as the restore left it).
    Abandon,
}

#[derive(Debug, Subcommand)]
pub enum CatalogCommand {
    /// Replace the catalog's backups with what the repository holds (pins and verification
    /// outcomes from the newest catalog copy stored with a backup).
    Rebuild {
        /// Wait until it has finished.
        #[arg(long)]
        wait: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum KeyCommand {
    /// The key slots, the data keys and the slot hopsdrd opened the repository with.
    List,
    /// Add a passphrase slot: the passphrase is read from FILE (`-`: the first line of
    /// standard input), never from the command line.
    Add {
        /// The slot's name (a-z, 0-9, '-', '_').
        name: String,
        #[arg(long, value_name = "FILE")]
        passphrase_file: String,
    },
    /// Remove a passphrase slot (never the last one, nor the one hopsdrd opened with).
    Remove { name: String },
    /// Start a new data key: new blobs and manifests are sealed with it, old ones stay
    /// readable with theirs.
    Rotate,
}

#[derive(Debug, Subcommand)]
pub enum AgentsCommand {
    /// Start the agent on every datanode and RonDB data node the backup reads and check it:
    /// reachable, this release, serving the volumes and backup directory the config names,
    /// able to read them. Exit 1 if any node has a problem.
    Check,
}

#[derive(Debug, Subcommand)]
pub enum RepoCommand {
    /// Check the structure (every manifest reads and verifies, every referenced blob exists)
    /// without reading blob contents.
    Check,
    /// Rebuild the repository's index from its packs (after `repo check` or a job named a
    /// damaged or missing index object); a damaged pack is named and left out.
    RepairIndex {
        /// Wait until it has finished.
        #[arg(long)]
        wait: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum BackupCommand {
    /// Start a backup now.
    Start {
        /// Wait until it has finished, showing progress.
        #[arg(long)]
        wait: bool,
    },
    /// Keep backup ID whatever the retention policy says.
    Pin {
        /// The backup id (YYYYMMDDTHHMMSSZ).
        id: String,
    },
    /// Let the retention policy decide about backup ID again.
    Unpin {
        /// The backup id (YYYYMMDDTHHMMSSZ).
        id: String,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cli_parses() {
        Cli::command_for_test();
    }

    impl Cli {
        fn command_for_test() {
            use clap::CommandFactory;
            Cli::command().debug_assert();
        }
    }
}
