//! The bandwidth this agent may use, from its node's timetable in the `Start` message: one
//! pacer for the process (an agent serves one session, one job), upload for a backup, download
//! for a restore, read by every transfer — the bucket's PUTs and GETs, the packs sent to hopsdrd
//! for a local repository. The timetable is evaluated at each transfer, so a slot boundary
//! applies mid-job.

use std::sync::{Arc, OnceLock};

use super::proto::{AgentBandwidth, Job};
use crate::pacer::Pacer;
use crate::timetable::{Direction, Timetable};

static PACER: OnceLock<Option<Arc<Pacer>>> = OnceLock::new();

/// The pacer for `job` under `bandwidth`; `None` when nothing limits it. An unreadable
/// timetable or time zone is an error naming it (hopsdrd checked both: a mismatch means
/// another release).
pub fn pacer_for(
    job: Job,
    bandwidth: Option<&AgentBandwidth>,
) -> Result<Option<Arc<Pacer>>, String> {
    let Some(b) = bandwidth else {
        return Ok(None);
    };
    let table = Timetable::parse(&b.timetable).map_err(|e| format!("bandwidth timetable: {e}"))?;
    let tz: chrono_tz::Tz = b
        .timezone
        .parse()
        .map_err(|_| format!("unknown time zone {:?}", b.timezone))?;
    let direction = match job {
        Job::Backup => Direction::Tx,
        Job::Restore => Direction::Rx,
        Job::Check => return Ok(None),
    };
    Ok((!table.is_off()).then(|| Arc::new(Pacer::scheduled(table, tz, direction))))
}

/// Sets this process's pacer (once, at `Start`).
pub fn set(pacer: Option<Arc<Pacer>>) {
    let _ = PACER.set(pacer);
}

/// Milliseconds this process's transfers were held back by its bandwidth limit.
pub fn paced_ms() -> u64 {
    pacer().map_or(0, |p| p.waited().as_millis() as u64)
}

/// This process's pacer, if its timetable limits anything.
pub fn pacer() -> Option<Arc<Pacer>> {
    PACER.get().cloned().flatten()
}
