//! `[hooks]`: an operator's command run on backup and restore events (a chat message, a ticket, a
//! monitoring push). The command is argv (never a shell string), run with an empty environment
//! but `PATH` and the event's facts as `HOPSDR_*` variables (no credential is ever passed), in
//! its own process group, for at most `[hooks] timeout` (then SIGTERM to the group, SIGKILL five
//! seconds later). Its output is kept (bounded) for the log. A hook that fails, is killed or
//! cannot start is logged and counted in `hopsdr_hook_failures_total{event}`, and never fails
//! the job it reports on.

use std::io::Read;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::sync::LazyLock;
use std::time::{Duration, Instant};

use crate::config::HooksSettings;

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    BackupStart,
    BackupSuccess,
    BackupFailure,
    RestoreStep,
    DrillResult,
    CopyResult,
}

impl Event {
    pub fn as_str(self) -> &'static str {
        match self {
            Event::BackupStart => "backup_start",
            Event::BackupSuccess => "backup_success",
            Event::BackupFailure => "backup_failure",
            Event::RestoreStep => "restore_step",
            Event::DrillResult => "drill_result",
            Event::CopyResult => "copy_result",
        }
    }

    fn argv(self, h: &HooksSettings) -> Option<&Vec<String>> {
        match self {
            Event::BackupStart => h.backup_start.as_ref(),
            Event::BackupSuccess => h.backup_success.as_ref(),
            Event::BackupFailure => h.backup_failure.as_ref(),
            Event::RestoreStep => h.restore_step.as_ref(),
            Event::DrillResult => h.drill_result.as_ref(),
            Event::CopyResult => h.copy_result.as_ref(),
        }
    }
}

/// `hopsdr_hook_failures_total{event}`, registered by the daemon's metrics.
pub static FAILURES: LazyLock<prometheus::IntCounterVec> = LazyLock::new(|| {
    prometheus::IntCounterVec::new(
        prometheus::Opts::new(
            "hopsdr_hook_failures_total",
            "Hooks that failed, were stopped at their timeout or could not start, by event",
        ),
        &["event"],
    )
    .expect("a valid metric")
});

/// The most of a hook's output kept for the log.
const OUTPUT_KEEP: usize = 4096;

/// Why a hook failed.
#[derive(Debug, thiserror::Error)]
pub enum HookError {
    #[error("hook {event} ({program}) could not start: {source}")]
    Spawn {
        event: &'static str,
        program: String,
        source: std::io::Error,
    },
    #[error("hook {event} ({program}) {status}; its output: {output}")]
    Failed {
        event: &'static str,
        program: String,
        status: String,
        output: String,
    },
    #[error("hook {event} ({program}) still ran after {timeout:?}: stopped")]
    Timeout {
        event: &'static str,
        program: String,
        timeout: Duration,
    },
}

/// Runs the hook of `event`, if one is configured, with `facts` as `HOPSDR_<NAME>` variables;
/// a failure is logged and counted, and returned for the caller to ignore (or a test to see).
pub fn fire(h: &HooksSettings, event: Event, facts: &[(&str, String)]) -> Result<(), HookError> {
    let Some(argv) = event.argv(h) else {
        return Ok(());
    };
    let r = run(argv, event, facts, h.timeout);
    match &r {
        Ok(()) => tracing::info!(hook = event.as_str(), "hook {} ran", event.as_str()),
        Err(e) => {
            FAILURES.with_label_values(&[event.as_str()]).inc();
            tracing::warn!(hook = event.as_str(), "{e}");
        }
    }
    r
}

fn run(
    argv: &[String],
    event: Event,
    facts: &[(&str, String)],
    timeout: Duration,
) -> Result<(), HookError> {
    let program = argv[0].clone();
    let mut cmd = Command::new(&argv[0]);
    cmd.args(&argv[1..])
        .env_clear()
        .env(
            "PATH",
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        )
        .env("HOPSDR_EVENT", event.as_str())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    for (k, v) in facts {
        cmd.env(format!("HOPSDR_{}", k.to_ascii_uppercase()), v);
    }
    let mut child = cmd.spawn().map_err(|source| HookError::Spawn {
        event: event.as_str(),
        program: program.clone(),
        source,
    })?;
    // Output read on threads, so a talkative hook cannot block on a full pipe; a process the
    // hook left behind (outside its group) may hold the pipes open: then its output is not
    // waited for.
    let drain = |r: Option<Box<dyn Read + Send>>| {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut kept = Vec::new();
            if let Some(mut r) = r {
                let mut buf = [0u8; 8192];
                while let Ok(n) = r.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    let room = OUTPUT_KEEP.saturating_sub(kept.len());
                    kept.extend_from_slice(&buf[..n.min(room)]);
                }
            }
            let _ = tx.send(kept);
        });
        rx
    };
    let out = drain(
        child
            .stdout
            .take()
            .map(|r| Box::new(r) as Box<dyn Read + Send>),
    );
    let err = drain(
        child
            .stderr
            .take()
            .map(|r| Box::new(r) as Box<dyn Read + Send>),
    );
    let pgid = nix::unistd::Pid::from_raw(child.id() as i32);
    let start = Instant::now();
    let mut termed: Option<Instant> = None;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Some(status),
            Ok(None) => {}
            Err(_) => break None,
        }
        if start.elapsed() >= timeout {
            match termed {
                None => {
                    let _ = nix::sys::signal::killpg(pgid, nix::sys::signal::Signal::SIGTERM);
                    termed = Some(Instant::now());
                }
                Some(t) if t.elapsed() >= Duration::from_secs(5) => {
                    let _ = nix::sys::signal::killpg(pgid, nix::sys::signal::Signal::SIGKILL);
                }
                Some(_) => {}
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let collect = |rx: std::sync::mpsc::Receiver<Vec<u8>>| {
        rx.recv_timeout(Duration::from_secs(2))
            .unwrap_or_else(|_| b"(output not read: a process the hook left holds it)".to_vec())
    };
    let mut output = collect(out);
    output.extend(collect(err));
    if termed.is_some() {
        return Err(HookError::Timeout {
            event: event.as_str(),
            program,
            timeout,
        });
    }
    match status {
        Some(s) if s.success() => Ok(()),
        s => Err(HookError::Failed {
            event: event.as_str(),
            program,
            status: s.map_or("could not be waited for".to_string(), |s| s.to_string()),
            output: String::from_utf8_lossy(&output).trim().to_string(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hooks(argv: &[&str], timeout: Duration) -> HooksSettings {
        HooksSettings {
            backup_success: Some(argv.iter().map(|s| s.to_string()).collect()),
            timeout,
            ..HooksSettings::default()
        }
    }

    /// The facts arrive as HOPSDR_* variables in an otherwise empty environment.
    #[test]
    fn a_hook_gets_the_facts_and_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("env");
        let h = hooks(
            &["/bin/sh", "-c", &format!("env > {}", out.display())],
            Duration::from_secs(10),
        );
        fire(
            &h,
            Event::BackupSuccess,
            &[("backup_id", "20261207T000000Z".into())],
        )
        .unwrap();
        let env = std::fs::read_to_string(&out).unwrap();
        assert!(env.contains("HOPSDR_EVENT=backup_success"), "{env}");
        assert!(env.contains("HOPSDR_BACKUP_ID=20261207T000000Z"), "{env}");
        // The daemon's own environment (here the test's: HOME is set) stays out.
        assert!(
            std::env::var_os("HOME").is_some() && !env.contains("HOME="),
            "{env}"
        );
        // No hook for an event: nothing runs.
        fire(&h, Event::BackupStart, &[]).unwrap();
    }

    /// A failing hook is an error naming it with its output and counted; a hook past its
    /// timeout is stopped (its whole process group) and named.
    #[test]
    fn failures_and_timeouts_are_named_and_counted() {
        let before = FAILURES.with_label_values(&["backup_success"]).get();
        let h = hooks(
            &["/bin/sh", "-c", "echo out of luck >&2; exit 3"],
            Duration::from_secs(10),
        );
        let e = fire(&h, Event::BackupSuccess, &[]).unwrap_err().to_string();
        assert!(
            e.contains("exit status: 3") && e.contains("out of luck"),
            "{e}"
        );
        let h = hooks(
            &["/bin/sh", "-c", "sleep 30 & wait"],
            Duration::from_millis(200),
        );
        let started = Instant::now();
        let e = fire(&h, Event::BackupSuccess, &[]).unwrap_err().to_string();
        assert!(e.contains("stopped"), "{e}");
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "{:?}",
            started.elapsed()
        );
        let e = fire(
            &hooks(&["/nonexistent/hook"], Duration::from_secs(1)),
            Event::BackupSuccess,
            &[],
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("could not start"), "{e}");
        // A process the hook leaves behind in another session, holding its output: the hook
        // still ends when its own process does.
        let started = Instant::now();
        fire(
            &hooks(
                &["/usr/bin/setsid", "-f", "/bin/sleep", "30"],
                Duration::from_secs(10),
            ),
            Event::BackupSuccess,
            &[],
        )
        .unwrap();
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{:?}",
            started.elapsed()
        );
        assert!(FAILURES.with_label_values(&["backup_success"]).get() >= before + 3);
    }
}
