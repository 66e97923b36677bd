//! `hopsdrctl`: the command-line client of the daemon. Parses the command line (clap), talks
//! HTTP/JSON over the daemon's Unix socket, prints tables for people or `--json` for scripts,
//! and exits with a code that means something (see [`ExitCode`]).

mod args;
mod client;
mod render;

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::api::routes;

use crate::api::{BackupDetail, BackupList, JobStarted, JobView, RestoreStatus, StatusResponse};
use crate::domain::State;

pub use args::{
    AgentsCommand, BackupCommand, BackupsCommand, CatalogCommand, Cli, Command, DrillCommand,
    ExitCode, KeyCommand, RepoCommand, RestoreCommand,
};
use client::Client;
pub use client::CtlError;
pub use render::{
    format_backup, format_backups, format_job, format_prune, format_restore, format_status,
    human_bytes, table,
};

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
            let s: StatusResponse = client.call(&routes::STATUS, &[], None).await?;
            if cli.json {
                print_json(&s);
            } else {
                out(&format_status(&s));
            }
        }
        Command::Backups {
            command: BackupsCommand::List,
        } => {
            let l: BackupList = client.call(&routes::BACKUPS, &[], None).await?;
            if cli.json {
                print_json(&l);
            } else {
                out(&format_backups(&l));
            }
        }
        Command::Backups {
            command: BackupsCommand::Show { id },
        } => {
            let d: BackupDetail = client.call(&routes::BACKUP, &[id], None).await?;
            if cli.json {
                print_json(&d);
            } else {
                out(&format_backup(&d));
            }
        }
        Command::Backup {
            command: BackupCommand::Pin { id } | BackupCommand::Unpin { id },
        } => {
            let (op, route) = match &cli.command {
                Command::Backup {
                    command: BackupCommand::Pin { .. },
                } => ("pin", &routes::PIN),
                _ => ("unpin", &routes::UNPIN),
            };
            let v: serde_json::Value = client
                .call(route, &[id], Some(&crate::api::Confirm::body(id)))
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
                .call(&routes::CATALOG_REBUILD, &[], Some("{}"))
                .await?;
            return follow(&client, cli, &started, *wait, "catalog rebuild").await;
        }
        Command::Key { command } => return key_command(&client, cli, command).await,
        Command::Repo {
            command: RepoCommand::RepairIndex { wait },
        } => {
            let started: JobStarted = client
                .call(&routes::REPO_REPAIR_INDEX, &[], Some("{}"))
                .await?;
            return follow(&client, cli, &started, *wait, "index repair").await;
        }
        Command::Agents {
            command: AgentsCommand::Check,
        } => {
            let view: crate::api::AgentsView = client.call(&routes::AGENTS, &[], None).await?;
            if cli.json {
                print_json(&view);
            } else {
                out(&render::agents(&view));
            }
            return Ok(if view.agents.iter().all(|a| a.problems.is_empty()) {
                ExitCode::Ok
            } else {
                ExitCode::Failed
            });
        }
        Command::Repo {
            command: RepoCommand::Check,
        } => {
            let view: crate::api::RepoCheckView =
                client.call(&routes::REPO_CHECK, &[], None).await?;
            let r = &view.report;
            if cli.json {
                print_json(&view);
            } else {
                let mut s = render::encryption_line(view.encryption.as_ref());
                s.push_str(&format!(
                    "{} manifests, {} blobs ({} referenced by no backup)\n",
                    r.manifests, r.blobs, r.unreferenced_blobs
                ));
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
        Command::Copy { target, wait } => {
            let body = serde_json::json!({ "target": target }).to_string();
            let started: JobStarted = client.call(&routes::COPY, &[], Some(&body)).await?;
            return follow(&client, cli, &started, *wait, "copy").await;
        }
        Command::Verify {
            id,
            repository,
            wait,
        } => {
            let body = serde_json::json!({ "backup": id, "repository": repository }).to_string();
            let started: JobStarted = client.call(&routes::VERIFY, &[], Some(&body)).await?;
            let which = started
                .backup_id
                .as_ref()
                .map(|b| b.to_string())
                .unwrap_or_default();
            return follow(&client, cli, &started, *wait, &format!("verify {which}")).await;
        }
        Command::Drill {
            command: None,
            id,
            level,
            wait,
        } => {
            let body = serde_json::json!({ "backup": id, "level": level }).to_string();
            let started: JobStarted = client.call(&routes::START_DRILL, &[], Some(&body)).await?;
            if !wait {
                return follow(&client, cli, &started, false, "drill").await;
            }
            let view = wait_for_job(&client, started.job_id.0, cli.json).await?;
            return show_drill(&client, cli, Some(view.id.0)).await;
        }
        Command::Drill {
            command: Some(DrillCommand::Status { job }),
            ..
        } => {
            return show_drill(&client, cli, *job).await;
        }
        Command::Prune { dry_run: true, .. } => {
            let d: crate::api::PruneDecisions =
                client.call(&routes::PRUNE_DRY_RUN, &[], None).await?;
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
                    &routes::PRUNE,
                    &[],
                    Some(&crate::api::Confirm::body("prune")),
                )
                .await?;
            return follow(&client, cli, &started, *wait, "prune").await;
        }
        Command::Backup {
            command: BackupCommand::Start { wait },
        } => {
            let started: JobStarted = client.call(&routes::START_BACKUP, &[], Some("{}")).await?;
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
            return Ok(if view.state == State::Succeeded {
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
                    as_of,
                    repository,
                    wait,
                },
        } => {
            let as_of = match as_of {
                None => None,
                Some(t) => Some(
                    chrono::DateTime::parse_from_rfc3339(t)
                        .map_err(|e| {
                            CtlError::Config(format!(
                                "--as-of {t:?}: {e}: give a time as 2026-12-06T10:00:00Z"
                            ))
                        })?
                        .with_timezone(&chrono::Utc),
                ),
            };
            if !yes {
                // On a terminal: the plan first (what is stopped and dropped), then the typed
                // confirmation.
                if !std::io::stdin().is_terminal() {
                    return Err(CtlError::Config(
                        "a restore overwrites the cluster: confirm with --yes when not on a terminal".into(),
                    ));
                }
                let p: crate::restore::plan::RestorePlan =
                    client.call(&routes::RESTORE_PLAN, &[backup], None).await?;
                eprintln!("{p}");
                confirm(backup)?;
            }
            let body = serde_json::json!({
                "backup_id": backup, "confirm": backup,
                "allow_partial": allow_partial, "force": force, "as_of": as_of,
                "repository": repository,
            })
            .to_string();
            let started: JobStarted = client
                .call(&routes::START_RESTORE, &[], Some(&body))
                .await?;
            return finish_restore_start(&client, cli, started, *wait).await;
        }
        Command::Restore {
            command: RestoreCommand::Resume { wait },
        } => {
            let started: JobStarted = client
                .call(&routes::RESUME_RESTORE, &[], Some("{}"))
                .await?;
            return finish_restore_start(&client, cli, started, *wait).await;
        }
        Command::Restore {
            command: RestoreCommand::Abandon,
        } => {
            // The API wants the abandoned restore's backup id repeated: read which it is.
            let last: crate::api::RestoreStatus =
                client.call(&routes::LAST_RESTORE, &[], None).await?;
            let v: serde_json::Value = client
                .call(
                    &routes::ABANDON_RESTORE,
                    &[],
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
            let j: JobStarted = client.call(&routes::ABORT_RESTORE, &[], Some("{}")).await?;
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
            let st: RestoreStatus = client.call(&routes::LAST_RESTORE, &[], None).await?;
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
            let p: crate::restore::plan::RestorePlan =
                client.call(&routes::RESTORE_PLAN, &[backup], None).await?;
            if cli.json {
                print_json(&p);
            } else {
                out(&p.to_string());
            }
        }
        Command::Job { id } => {
            let v: JobView = client.call(&routes::JOB, &[&id.to_string()], None).await?;
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
    let st: RestoreStatus = client.call(&routes::LAST_RESTORE, &[], None).await?;
    if cli.json {
        print_json(&st);
    } else {
        out(&format_restore(&st));
    }
    Ok(if view.state == State::Succeeded {
        ExitCode::Ok
    } else {
        ExitCode::Failed
    })
}

/// After a job was started: prints that it started, or (with `wait`) follows it to its end and
/// prints it; the exit code says whether it succeeded.
/// Prints a drill's report (the newest drill without `job`); fails unless it passed.
async fn show_drill(client: &Client, cli: &Cli, job: Option<i64>) -> Result<ExitCode, CtlError> {
    let drill = match job {
        Some(j) => client.call(&routes::DRILL, &[&j.to_string()], None).await?,
        None => {
            let list: crate::api::DrillList = client.call(&routes::DRILLS, &[], None).await?;
            if cli.json {
                print_json(&list);
                return Ok(ExitCode::Ok);
            }
            match list.drills.into_iter().next() {
                Some(d) => d,
                None => {
                    out("no drill yet: hopsdrctl drill runs one\n");
                    return Ok(ExitCode::Ok);
                }
            }
        }
    };
    if cli.json {
        print_json(&drill);
    } else {
        out(&render::drill(&drill));
    }
    Ok(if drill.state == State::Succeeded {
        ExitCode::Ok
    } else {
        ExitCode::Failed
    })
}

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
    Ok(if view.state == State::Succeeded {
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
            .call_query(&routes::JOB, &[&id.to_string()], Some("wait_ms=1000"), None)
            .await?;
        if v.state.is_final() {
            if tty && !last_line.is_empty() {
                eprintln!();
            }
            return Ok(v);
        }
        if !quiet {
            if let Some(p) = &v.progress {
                let line = if v.kind == crate::domain::JobKind::Backup {
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

/// `hopsdrctl key ...`.
async fn key_command(
    client: &Client,
    cli: &Cli,
    command: &KeyCommand,
) -> Result<ExitCode, CtlError> {
    match command {
        KeyCommand::List => {
            let v: crate::api::KeysView = client.call(&routes::KEYS, &[], None).await?;
            if cli.json {
                print_json(&v);
            } else {
                out(&render::format_keys(&v));
            }
        }
        KeyCommand::Add {
            name,
            passphrase_file,
        } => {
            let passphrase = read_passphrase(passphrase_file)?;
            let body = serde_json::to_string(&crate::api::AddKeyRequest {
                name: name.clone(),
                passphrase: passphrase.to_string(),
            })
            .expect("a request serializes");
            let body = zeroize::Zeroizing::new(body);
            let r: serde_json::Value = client.call(&routes::ADD_KEY, &[], Some(&body)).await?;
            done_line(cli, &r);
        }
        KeyCommand::Remove { name } => {
            let r: serde_json::Value = client
                .call(
                    &routes::REMOVE_KEY,
                    &[name],
                    Some(&crate::api::Confirm::body(name)),
                )
                .await?;
            done_line(cli, &r);
        }
        KeyCommand::Rotate => {
            let r: crate::api::RotatedKey =
                client.call(&routes::ROTATE_KEY, &[], Some("{}")).await?;
            if cli.json {
                print_json(&r);
            } else {
                out(&format!(
                    "data key {} started: new blobs and manifests are sealed with it\n",
                    r.data_key
                ));
            }
        }
    }
    Ok(ExitCode::Ok)
}

fn done_line(cli: &Cli, r: &serde_json::Value) {
    if cli.json {
        print_json(r);
    } else {
        out(&format!("{}\n", r["done"].as_str().unwrap_or("done")));
    }
}

/// The passphrase in `path` (`-`: standard input), its first line.
fn read_passphrase(path: &str) -> Result<zeroize::Zeroizing<String>, CtlError> {
    let text = if path == "-" {
        let mut s = String::new();
        std::io::stdin().read_line(&mut s).map_err(|e| {
            CtlError::Config(format!(
                "failed to read the passphrase from standard input: {e}"
            ))
        })?;
        s
    } else {
        std::fs::read_to_string(path).map_err(|e| {
            CtlError::Config(format!("failed to read the passphrase file {path}: {e}"))
        })?
    };
    let text = zeroize::Zeroizing::new(text);
    let line = text.lines().next().unwrap_or("").to_string();
    if line.is_empty() {
        return Err(CtlError::Config(format!(
            "the passphrase in {path} is empty: put a long random passphrase on its first line"
        )));
    }
    Ok(zeroize::Zeroizing::new(line))
}
