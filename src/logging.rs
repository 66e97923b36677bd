//! Logging set-up: journald when the process runs under systemd (`JOURNAL_STREAM` set or the
//! journal socket present), stderr otherwise, without ANSI colours unless stderr is a terminal.
//!
//! Job events carry the fields `backup_id`, `job_id`, `step`, `node`; the journald layer writes
//! them upper-cased without a prefix, so `journalctl -u hopsdr BACKUP_ID=...` finds one backup.

use std::io::IsTerminal;
use std::path::Path;

use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::prelude::*;

const JOURNAL_SOCKET: &str = "/run/systemd/journal/socket";

/// Where the logs went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogTarget {
    Journald,
    Stderr,
}

/// True when logs should go to journald.
pub fn under_journald() -> bool {
    std::env::var_os("JOURNAL_STREAM").is_some() || Path::new(JOURNAL_SOCKET).exists()
}

/// Parses a level name as the config spells it.
pub fn parse_level(level: &str) -> LevelFilter {
    level.parse().unwrap_or(LevelFilter::INFO)
}

/// Installs the global subscriber. `RUST_LOG` overrides `level` when set. Falls back to stderr
/// when journald is wanted but cannot be reached.
pub fn init(level: &str) -> LogTarget {
    let filter = tracing_subscriber::EnvFilter::builder()
        .with_default_directive(parse_level(level).into())
        .from_env_lossy();
    if under_journald() {
        if let Ok(layer) = tracing_journald::layer() {
            let layer = layer
                .with_field_prefix(None)
                .with_syslog_identifier("hopsdrd".to_string());
            if tracing_subscriber::registry()
                .with(filter)
                .with(layer)
                .try_init()
                .is_ok()
            {
                return LogTarget::Journald;
            }
            return LogTarget::Stderr;
        }
    }
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false)
        .try_init();
    LogTarget::Stderr
}

/// Logs panics through tracing before the process aborts (release builds use `panic = "abort"`).
pub fn install_panic_hook() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let location = info
            .location()
            .map(|l| format!("{}:{}", l.file(), l.line()))
            .unwrap_or_default();
        let msg = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown panic".to_string());
        tracing::error!(location = %location, "panic: {msg}");
        default(info);
    }));
}
