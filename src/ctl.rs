//! `hopsdrctl`: the command-line client of the daemon. Parses the command line (clap), talks
//! HTTP/JSON over the daemon's Unix socket, prints tables for people or `--json` for scripts,
//! and exits with a code that means something (see [`ExitCode`]).

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Parser, Subcommand};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use serde::de::DeserializeOwned;

use crate::api::{
    BackupDetail, BackupList, ErrorBody, JobStarted, JobView, RestoreStatus, StatusResponse,
};
use crate::catalog::State;

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

const EXIT_CODES_HELP: &str = "Exit codes:
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
    /// Read a backup back whole (every blob, every file's hash) and record the outcome; without
    /// ID, the complete backup verified longest ago.
    Verify {
        /// The backup id (YYYYMMDDTHHMMSSZ).
        id: Option<String>,
        /// Wait until it has finished.
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
pub enum RepoCommand {
    /// Check the structure (every manifest reads and verifies, every referenced blob exists)
    /// without reading blob contents.
    Check,
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

/// A failure of a command, with the exit code it maps to.
#[derive(Debug, thiserror::Error)]
pub enum CtlError {
    #[error("cannot reach hopsdrd at {socket}: {cause} (is hopsdr.service running?)")]
    Unreachable { socket: String, cause: String },
    #[error("{0}")]
    Config(String),
    #[error("permission denied: {0}")]
    Denied(String),
    #[error("{0}")]
    Busy(String),
    #[error("{0}")]
    Failed(String),
}

impl CtlError {
    pub fn exit_code(&self) -> ExitCode {
        match self {
            CtlError::Unreachable { .. } => ExitCode::Unreachable,
            CtlError::Config(_) => ExitCode::Usage,
            CtlError::Denied(_) => ExitCode::PermissionDenied,
            CtlError::Busy(_) => ExitCode::Busy,
            CtlError::Failed(_) => ExitCode::Failed,
        }
    }
}

struct Client {
    socket: PathBuf,
}

impl Client {
    async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&str>,
    ) -> Result<T, CtlError> {
        let unreachable = |cause: String| CtlError::Unreachable {
            socket: self.socket.display().to_string(),
            cause,
        };
        let stream = tokio::net::UnixStream::connect(&self.socket)
            .await
            .map_err(|e| {
                if e.kind() == std::io::ErrorKind::PermissionDenied {
                    CtlError::Denied(format!(
                        "cannot connect to {}: {e} (root or the group of the socket, daemon.socket_group, is needed)",
                        self.socket.display()
                    ))
                } else {
                    unreachable(e.to_string())
                }
            })?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| unreachable(e.to_string()))?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let req = Request::builder()
            .method(method)
            .uri(path)
            .header("host", "hopsdrd")
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body.unwrap_or("").to_string())))
            .map_err(|e| CtlError::Failed(format!("failed to build request: {e}")))?;
        let resp = sender
            .send_request(req)
            .await
            .map_err(|e| unreachable(e.to_string()))?;
        let status = resp.status();
        let bytes = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| unreachable(e.to_string()))?
            .to_bytes();
        if status.is_success() {
            return serde_json::from_slice(&bytes).map_err(|e| {
                CtlError::Failed(format!("failed to parse the daemon's answer: {e}"))
            });
        }
        let message = serde_json::from_slice::<ErrorBody>(&bytes)
            .map(|b| b.error.message)
            .unwrap_or_else(|_| String::from_utf8_lossy(&bytes).into_owned());
        Err(match status {
            StatusCode::FORBIDDEN => CtlError::Denied(message),
            StatusCode::CONFLICT => CtlError::Busy(message),
            _ => CtlError::Failed(message),
        })
    }
}

/// Runs hopsdrctl with parsed arguments; returns the exit code.
pub async fn run(cli: Cli) -> ExitCode {
    match run_inner(&cli).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("hopsdrctl: {e}");
            e.exit_code()
        }
    }
}

fn socket_path(cli: &Cli) -> Result<PathBuf, CtlError> {
    if let Some(s) = &cli.socket {
        return Ok(s.clone());
    }
    const DEFAULT_SOCKET: &str = "/run/hopsdr/hopsdr.sock";
    let explicit = cli.config != Path::new(crate::config::DEFAULT_PATH);
    if !explicit && !cli.config.exists() {
        return Ok(PathBuf::from(DEFAULT_SOCKET));
    }
    match crate::config::load_socket_path(&cli.config) {
        Ok(p) => Ok(p),
        // The default config unreadable (not in its group) or broken (a bad edit that the
        // daemon refused to reload): the daemon is most likely on the default socket, and
        // `hopsdrctl status` is wanted most right then.
        Err(e) if !explicit && Path::new(DEFAULT_SOCKET).exists() => {
            eprintln!(
                "hopsdrctl: warning: {}: using {DEFAULT_SOCKET} (give --socket to choose)",
                e.to_string().lines().collect::<Vec<_>>().join("; ")
            );
            Ok(PathBuf::from(DEFAULT_SOCKET))
        }
        Err(e) => Err(CtlError::Config(e.to_string())),
    }
}

fn print_json<T: serde::Serialize>(v: &T) {
    let s = serde_json::to_string_pretty(v).unwrap_or_default();
    out(&format!("{s}\n"));
}

/// Writes to stdout; a closed pipe (`hopsdrctl ... | head`) is not an error.
fn out(text: &str) {
    let mut o = std::io::stdout().lock();
    let _ = o.write_all(text.as_bytes()).and_then(|_| o.flush());
}

async fn run_inner(cli: &Cli) -> Result<ExitCode, CtlError> {
    let client = Client {
        socket: socket_path(cli)?,
    };
    match &cli.command {
        Command::Status => {
            let s: StatusResponse = client.call(Method::GET, "/v1/status", None).await?;
            if cli.json {
                print_json(&s);
            } else {
                out(&format_status(&s));
            }
        }
        Command::Backups {
            command: BackupsCommand::List,
        } => {
            let l: BackupList = client.call(Method::GET, "/v1/backups", None).await?;
            if cli.json {
                print_json(&l);
            } else {
                out(&format_backups(&l));
            }
        }
        Command::Backups {
            command: BackupsCommand::Show { id },
        } => {
            let d: BackupDetail = client
                .call(Method::GET, &format!("/v1/backups/{id}"), None)
                .await?;
            if cli.json {
                print_json(&d);
            } else {
                out(&format_backup(&d));
            }
        }
        Command::Backup {
            command: BackupCommand::Pin { id } | BackupCommand::Unpin { id },
        } => {
            let op = match &cli.command {
                Command::Backup {
                    command: BackupCommand::Pin { .. },
                } => "pin",
                _ => "unpin",
            };
            let v: serde_json::Value = client
                .call(
                    Method::POST,
                    &format!("/v1/backups/{id}/{op}"),
                    Some(&crate::api::Confirm::body(id)),
                )
                .await?;
            if cli.json {
                print_json(&v);
            } else {
                out(&format!("backup {id} {op}ned\n"));
            }
        }
        Command::Catalog {
            command: CatalogCommand::Rebuild { wait },
        } => {
            let started: JobStarted = client
                .call(Method::POST, "/v1/catalog/rebuild", Some("{}"))
                .await?;
            return follow(&client, cli, &started, *wait, "catalog rebuild").await;
        }
        Command::Repo {
            command: RepoCommand::Check,
        } => {
            let r: crate::repository::CheckReport =
                client.call(Method::GET, "/v1/repo/check", None).await?;
            if cli.json {
                print_json(&r);
            } else {
                let mut s = format!(
                    "{} manifests, {} blobs ({} referenced by no backup)\n",
                    r.manifests, r.blobs, r.unreferenced_blobs
                );
                for p in &r.problems {
                    s.push_str(&format!("problem: {p}\n"));
                }
                s.push_str(if r.problems.is_empty() {
                    "repository structure OK\n"
                } else {
                    "repository structure DAMAGED\n"
                });
                out(&s);
            }
            return Ok(if r.problems.is_empty() {
                ExitCode::Ok
            } else {
                ExitCode::Failed
            });
        }
        Command::Verify { id, wait } => {
            let body = match id {
                Some(id) => serde_json::json!({ "backup": id }).to_string(),
                None => "{}".to_string(),
            };
            let started: JobStarted = client.call(Method::POST, "/v1/verify", Some(&body)).await?;
            let which = started
                .backup_id
                .as_ref()
                .map(|b| b.to_string())
                .unwrap_or_default();
            return follow(&client, cli, &started, *wait, &format!("verify {which}")).await;
        }
        Command::Prune { dry_run: true, .. } => {
            let d: crate::api::PruneDecisions = client.call(Method::GET, "/v1/prune", None).await?;
            if cli.json {
                print_json(&d);
            } else {
                out(&format_prune(&d));
            }
        }
        Command::Prune {
            dry_run: false,
            wait,
        } => {
            let started: JobStarted = client
                .call(
                    Method::POST,
                    "/v1/prune",
                    Some(&crate::api::Confirm::body("prune")),
                )
                .await?;
            return follow(&client, cli, &started, *wait, "prune").await;
        }
        Command::Backup {
            command: BackupCommand::Start { wait },
        } => {
            let started: JobStarted = client.call(Method::POST, "/v1/backups", Some("{}")).await?;
            if !wait {
                if cli.json {
                    print_json(&started);
                } else {
                    out(&format!(
                        "started job {} (backup {})\n",
                        started.job_id,
                        started
                            .backup_id
                            .as_ref()
                            .map(|b| b.to_string())
                            .unwrap_or_default()
                    ));
                }
                return Ok(ExitCode::Ok);
            }
            let view = wait_for_job(&client, started.job_id.0, cli.json).await?;
            if cli.json {
                print_json(&view);
            } else {
                out(&format_job(&view));
            }
            return Ok(if view.record.state == State::Succeeded {
                ExitCode::Ok
            } else {
                ExitCode::Failed
            });
        }
        Command::Restore {
            command:
                RestoreCommand::Start {
                    backup,
                    yes,
                    allow_partial,
                    force,
                    wait,
                },
        } => {
            if !yes {
                // On a terminal: the plan first (what is stopped and dropped), then the typed
                // confirmation.
                if !std::io::stdin().is_terminal() {
                    return Err(CtlError::Config(
                        "a restore overwrites the cluster: confirm with --yes when not on a terminal".into(),
                    ));
                }
                let p: crate::restore::plan::RestorePlan = client
                    .call(Method::GET, &format!("/v1/restore/plan/{backup}"), None)
                    .await?;
                eprintln!("{p}");
                confirm(backup)?;
            }
            let body = serde_json::json!({
                "backup_id": backup, "confirm": backup,
                "allow_partial": allow_partial, "force": force,
            })
            .to_string();
            let started: JobStarted = client
                .call(Method::POST, "/v1/restores", Some(&body))
                .await?;
            return finish_restore_start(&client, cli, started, *wait).await;
        }
        Command::Restore {
            command: RestoreCommand::Resume { wait },
        } => {
            let started: JobStarted = client
                .call(Method::POST, "/v1/restores/resume", Some("{}"))
                .await?;
            return finish_restore_start(&client, cli, started, *wait).await;
        }
        Command::Restore {
            command: RestoreCommand::Abandon,
        } => {
            // The API wants the abandoned restore's backup id repeated: read which it is.
            let last: crate::api::RestoreStatus =
                client.call(Method::GET, "/v1/restores/last", None).await?;
            let v: serde_json::Value = client
                .call(
                    Method::POST,
                    "/v1/restores/abandon",
                    Some(&crate::api::Confirm::body(last.restore.backup_id.as_str())),
                )
                .await?;
            if cli.json {
                print_json(&v);
            } else {
                out(&format!(
                    "restore {} of backup {} abandoned (it was {}): scheduled backups and pruning run again\n",
                    v["restore_id"],
                    v["backup_id"].as_str().unwrap_or(""),
                    v["was"].as_str().unwrap_or("")
                ));
            }
        }
        Command::Restore {
            command: RestoreCommand::Abort,
        } => {
            let j: JobStarted = client
                .call(Method::POST, "/v1/restores/abort", Some("{}"))
                .await?;
            if cli.json {
                print_json(&j);
            } else {
                out(&format!(
                    "restore job {} stops at its next safe point (hopsdrctl restore resume continues it)\n",
                    j.job_id
                ));
            }
        }
        Command::Restore {
            command: RestoreCommand::Status,
        } => {
            let st: RestoreStatus = client.call(Method::GET, "/v1/restores/last", None).await?;
            if cli.json {
                print_json(&st);
            } else {
                out(&format_restore(&st));
            }
            return Ok(ExitCode::Ok);
        }
        Command::Restore {
            command: RestoreCommand::Plan { backup },
        } => {
            let p: crate::restore::plan::RestorePlan = client
                .call(Method::GET, &format!("/v1/restore/plan/{backup}"), None)
                .await?;
            if cli.json {
                print_json(&p);
            } else {
                out(&p.to_string());
            }
        }
        Command::Job { id } => {
            let v: JobView = client
                .call(Method::GET, &format!("/v1/jobs/{id}"), None)
                .await?;
            if cli.json {
                print_json(&v);
            } else {
                out(&format_job(&v));
            }
        }
    }
    Ok(ExitCode::Ok)
}

/// Asks on a terminal for the backup id to be typed; refuses without a terminal.
fn confirm(backup: &str) -> Result<(), CtlError> {
    if !std::io::stdin().is_terminal() {
        return Err(CtlError::Config(
            "a restore overwrites the cluster: confirm with --yes when not on a terminal".into(),
        ));
    }
    eprint!("This restores backup {backup} onto the cluster as planned above: its services are stopped, the tables listed are dropped, the cluster is overwritten. Type the backup id to go on: ");
    let mut line = String::new();
    std::io::stdin()
        .read_line(&mut line)
        .map_err(|e| CtlError::Config(format!("failed to read the confirmation: {e}")))?;
    if line.trim() != backup {
        return Err(CtlError::Config(
            "not confirmed: nothing was started".into(),
        ));
    }
    Ok(())
}

async fn finish_restore_start(
    client: &Client,
    cli: &Cli,
    started: JobStarted,
    wait: bool,
) -> Result<ExitCode, CtlError> {
    if !wait {
        if cli.json {
            print_json(&started);
        } else {
            out(&format!(
                "started restore job {} (hopsdrctl restore status follows it)\n",
                started.job_id
            ));
        }
        return Ok(ExitCode::Ok);
    }
    let view = wait_for_job(client, started.job_id.0, cli.json).await?;
    let st: RestoreStatus = client.call(Method::GET, "/v1/restores/last", None).await?;
    if cli.json {
        print_json(&st);
    } else {
        out(&format_restore(&st));
    }
    Ok(if view.record.state == State::Succeeded {
        ExitCode::Ok
    } else {
        ExitCode::Failed
    })
}

/// The restore status for people: every step with state and duration, then the RTO.
pub fn format_restore(st: &RestoreStatus) -> String {
    let r = &st.restore;
    let mut s = format!(
        "restore {} of backup {}: {}\nstarted:  {}\nfinished: {}\n",
        r.id,
        r.backup_id,
        r.state.as_str(),
        fmt_time(Some(r.created_at)),
        fmt_time(r.finished_at)
    );
    if let Some(e) = &r.error {
        s.push_str(&format!("error:    {e}\n"));
    }
    if let Some(p) = &st.progress {
        s.push_str(&format!("now:      {}\n", p.step));
    }
    s.push('\n');
    let rows: Vec<Vec<String>> = st
        .plan
        .steps
        .iter()
        .enumerate()
        .map(|(i, step)| {
            let rec = r.steps.get(i);
            vec![
                (i + 1).to_string(),
                rec.map(|x| x.state.as_str().to_string())
                    .unwrap_or_default(),
                st.report
                    .steps
                    .get(i)
                    .map(|(_, secs)| format!("{secs:.1}s"))
                    .unwrap_or_default(),
                step.title.clone(),
            ]
        })
        .collect();
    s.push_str(&table(&["#", "STATE", "TIME", "STEP"], &rows));
    s.push_str(&format!("\ntotal (RTO): {:.1}s\n", st.report.total_seconds));
    s
}

/// After a job was started: prints that it started, or (with `wait`) follows it to its end and
/// prints it; the exit code says whether it succeeded.
async fn follow(
    client: &Client,
    cli: &Cli,
    started: &JobStarted,
    wait: bool,
    label: &str,
) -> Result<ExitCode, CtlError> {
    if !wait {
        if cli.json {
            print_json(started);
        } else {
            out(&format!("started job {} ({label})\n", started.job_id));
        }
        return Ok(ExitCode::Ok);
    }
    let view = wait_for_job(client, started.job_id.0, cli.json).await?;
    if cli.json {
        print_json(&view);
    } else {
        out(&format_job(&view));
    }
    Ok(if view.record.state == State::Succeeded {
        ExitCode::Ok
    } else {
        ExitCode::Failed
    })
}

async fn wait_for_job(client: &Client, id: i64, quiet: bool) -> Result<JobView, CtlError> {
    let tty = std::io::stderr().is_terminal() && !quiet;
    let mut last_line = String::new();
    loop {
        // The daemon answers when the job ends, or after a second with its progress.
        let asked = tokio::time::Instant::now();
        let v: JobView = client
            .call(Method::GET, &format!("/v1/jobs/{id}?wait_ms=1000"), None)
            .await?;
        if v.record.state.is_final() {
            if tty && !last_line.is_empty() {
                eprintln!();
            }
            return Ok(v);
        }
        if !quiet {
            if let Some(p) = &v.progress {
                let line = if v.record.kind == crate::catalog::JobKind::Backup {
                    format!(
                        "job {id}: {} — {} files, {} read, {} stored",
                        p.step,
                        p.files,
                        human_bytes(p.logical_bytes),
                        human_bytes(p.stored_bytes)
                    )
                } else {
                    format!("job {id}: {}", p.step)
                };
                if line != last_line {
                    if tty {
                        eprint!("\r\x1b[K{line}");
                    } else {
                        eprintln!("{line}");
                    }
                    last_line = line;
                }
            }
        }
        // Never faster than 10 requests a second (an older daemon answers at once).
        tokio::time::sleep_until(asked + Duration::from_millis(100)).await;
    }
}

/// `prune --dry-run` for people: one line per backup, newest first.
pub fn format_prune(d: &crate::api::PruneDecisions) -> String {
    let mut s = String::new();
    if !d.policy_has_rules {
        s.push_str("[retention] has no keep_* rule: nothing is forgotten\n");
    }
    let rows: Vec<Vec<String>> = d
        .decisions
        .iter()
        .map(|x| {
            vec![
                x.id.to_string(),
                if x.keep { "keep" } else { "forget" }.to_string(),
                x.reasons.join(", "),
            ]
        })
        .collect();
    s.push_str(&table(&["BACKUP", "DECISION", "REASONS"], &rows));
    let forget = d.decisions.iter().filter(|x| !x.keep).count();
    s.push_str(&format!(
        "{} to keep, {forget} to forget\n",
        d.decisions.len() - forget
    ));
    s
}

/// Bytes for people: `1.5 GiB`.
pub fn human_bytes(n: u64) -> String {
    bytesize::ByteSize(n).display().iec().to_string()
}

fn fmt_time(t: Option<chrono::DateTime<chrono::Utc>>) -> String {
    t.map(|t| t.format("%Y-%m-%d %H:%M:%SZ").to_string())
        .unwrap_or_else(|| "-".into())
}

/// Left-aligned columns separated by two spaces.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            widths[i] = widths[i].max(c.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let mut s = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                s.push_str(c);
            } else {
                s.push_str(&format!("{c:<w$}  ", w = widths[i]));
            }
        }
        s.trim_end().to_string() + "\n"
    };
    let mut out = line(header.iter().map(|h| h.to_string()).collect());
    for r in rows {
        out.push_str(&line(r.clone()));
    }
    out
}

pub fn format_status(s: &StatusResponse) -> String {
    let mut out = format!(
        "hopsdrd {} (pid {}), up {}s\nrepository: {}\n",
        s.version, s.pid, s.uptime_seconds, s.repository
    );
    if let Some(h) = &s.held {
        out.push_str(&format!("scheduled backups and pruning {h}\n"));
    }
    match &s.current_job {
        Some(j) => {
            out.push_str(&format!(
                "current job: {} {} ({})",
                j.record.id,
                j.record.kind.as_str(),
                j.record.trigger
            ));
            if let Some(p) = &j.progress {
                out.push_str(&format!(
                    ": {}, {} files, {}",
                    p.step,
                    p.files,
                    human_bytes(p.logical_bytes)
                ));
            }
            out.push('\n');
        }
        None => out.push_str("current job: none\n"),
    }
    out.push_str("\nlast success:\n");
    if s.last_success.is_empty() {
        out.push_str("  none yet\n");
    } else {
        let rows: Vec<Vec<String>> = s
            .last_success
            .iter()
            .map(|l| {
                vec![
                    l.component.clone(),
                    l.backup_id.to_string(),
                    fmt_time(Some(l.finished_at)),
                    human_bytes(l.logical_bytes),
                ]
            })
            .collect();
        out.push_str(&table(&["COMPONENT", "BACKUP", "FINISHED", "SIZE"], &rows));
    }
    out.push_str("\nschedules:\n");
    if s.schedules.is_empty() {
        out.push_str("  none configured\n");
    } else {
        let rows: Vec<Vec<String>> = s
            .schedules
            .iter()
            .map(|x| {
                vec![
                    x.name.clone(),
                    x.job.clone(),
                    x.cron.clone(),
                    x.timezone.clone(),
                    fmt_time(x.next_fire),
                    fmt_time(x.last_fire),
                ]
            })
            .collect();
        out.push_str(&table(
            &["NAME", "JOB", "CRON", "TIMEZONE", "NEXT", "LAST"],
            &rows,
        ));
    }
    out
}

pub fn format_backups(l: &BackupList) -> String {
    if l.backups.is_empty() {
        return "no backups yet\n".into();
    }
    let rows: Vec<Vec<String>> = l
        .backups
        .iter()
        .map(|b| {
            vec![
                b.id.to_string(),
                if b.hopsfs_unchecked {
                    format!("{} (unchecked)", b.state.as_str())
                } else {
                    b.state.as_str().to_string()
                },
                fmt_time(Some(b.started_at)),
                fmt_time(b.finished_at),
                b.files.to_string(),
                human_bytes(b.logical_bytes),
                human_bytes(b.stored_bytes),
                verification(b),
                if b.pinned { "pinned" } else { "" }.to_string(),
            ]
        })
        .collect();
    table(
        &[
            "ID", "STATE", "STARTED", "FINISHED", "FILES", "SIZE", "STORED", "VERIFIED", "PIN",
        ],
        &rows,
    )
    .lines()
    .map(|l| format!("{}\n", l.trim_end()))
    .collect()
}

/// What the last verification of `b` found: when it was found whole, DAMAGED, or `-` (never).
fn verification(b: &crate::catalog::BackupRecord) -> String {
    if b.damaged {
        "DAMAGED".into()
    } else {
        fmt_time(b.verified_at)
    }
}

pub fn format_backup(d: &BackupDetail) -> String {
    let b = &d.backup;
    let mut out = format!(
        "backup:   {}\nstate:    {}\njob:      {}\nstarted:  {}\nfinished: {}\nfiles:    {}\nsize:     {}\nstored:   {}\n",
        b.id,
        b.state.as_str(),
        b.job_id,
        fmt_time(Some(b.started_at)),
        fmt_time(b.finished_at),
        b.files,
        human_bytes(b.logical_bytes),
        human_bytes(b.stored_bytes)
    );
    out.push_str(&format!(
        "verified: {}\npinned:   {}\n",
        match verification(b).as_str() {
            "-" => "never".to_string(),
            v => v.to_string(),
        },
        if b.pinned {
            "yes (retention keeps it)"
        } else {
            "no"
        }
    ));
    if b.hopsfs_unchecked {
        out.push_str(
            "hopsfs:   UNCHECKED: blocks copied without checking them against the blocks the metadata references (set [hopsfs] referenced_blocks)\n",
        );
    }
    if let Some(r) = b.rondb_backup_id {
        out.push_str(&format!(
            "rondb:    backup id {r} (BACKUP-{r} on the data nodes)\n"
        ));
    }
    if let Some(e) = &b.error {
        out.push_str(&format!("error:    {e}\n"));
    }
    out.push('\n');
    let rows: Vec<Vec<String>> = d
        .components
        .iter()
        .map(|c| {
            vec![
                c.component.clone(),
                c.state.as_str().to_string(),
                c.files.to_string(),
                human_bytes(c.logical_bytes),
                human_bytes(c.stored_bytes),
                c.error.clone().unwrap_or_default(),
            ]
        })
        .collect();
    out.push_str(&table(
        &["COMPONENT", "STATE", "FILES", "SIZE", "STORED", "ERROR"],
        &rows,
    ));
    out
}

pub fn format_job(v: &JobView) -> String {
    let j = &v.record;
    let mut out = format!(
        "job:      {}\nkind:     {}\nstate:    {}\ntrigger:  {}\n",
        j.id,
        j.kind.as_str(),
        j.state.as_str(),
        j.trigger
    );
    if let Some(b) = &j.backup_id {
        out.push_str(&format!("backup:   {b}\n"));
    }
    out.push_str(&format!(
        "created:  {}\nfinished: {}\n",
        fmt_time(Some(j.created_at)),
        fmt_time(j.finished_at)
    ));
    if let Some(p) = &v.progress {
        out.push_str(&format!(
            "progress: {}, {} files, {}\n",
            p.step,
            p.files,
            human_bytes(p.logical_bytes)
        ));
    }
    if let Some(e) = &j.error {
        out.push_str(&format!("error:    {e}\n"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_bytes_units() {
        assert_eq!(human_bytes(0), "0 B");
        assert_eq!(human_bytes(1023), "1023 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(3 << 30), "3.0 GiB");
    }

    #[test]
    fn table_aligns() {
        let t = table(
            &["A", "BB"],
            &[vec!["xxx".into(), "y".into()], vec!["z".into(), "w".into()]],
        );
        assert_eq!(t, "A    BB\nxxx  y\nz    w\n");
    }

    #[test]
    fn the_backups_table_shows_verification_and_pins() {
        use crate::catalog::{BackupRecord, State};
        use chrono::TimeZone;
        let t = chrono::Utc.with_ymd_and_hms(2026, 11, 29, 1, 2, 3).unwrap();
        let rec = |id: &str, verified_at, damaged, pinned| BackupRecord {
            id: crate::ids::BackupId::parse(id).unwrap(),
            job_id: crate::ids::JobId(1),
            state: State::Succeeded,
            started_at: t,
            finished_at: Some(t),
            logical_bytes: 2048,
            stored_bytes: 1024,
            files: 3,
            error: None,
            rondb_backup_id: None,
            pinned,
            verified_at,
            damaged,
            hopsfs_unchecked: false,
        };
        let mut unchecked = rec("20261129T000000Z", None, false, false);
        unchecked.hopsfs_unchecked = true;
        let out = format_backups(&BackupList {
            backups: vec![
                rec("20261127T000000Z", Some(t), false, true),
                rec("20261128T000000Z", None, true, false),
                unchecked,
            ],
        });
        let lines: Vec<&str> = out.lines().collect();
        assert!(lines[0].ends_with("VERIFIED              PIN"), "{out}");
        assert!(lines[1].ends_with("2026-11-29 01:02:03Z  pinned"), "{out}");
        assert!(lines[2].ends_with("DAMAGED"), "{out}");
        assert!(lines[3].ends_with("-"), "{out}");
        assert!(
            lines[3].starts_with("20261129T000000Z  succeeded (unchecked)  "),
            "{out}"
        );
    }

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
