//! Paces transfers to a byte rate, a token bucket holding one second's worth: each transfer
//! reserves its bytes and sleeps until the rate allows them (a transfer of less than a second's
//! bytes after a quiet second goes at once; a larger one waits for the excess). The rate is fixed (`[repository] bandwidth_limit_mib`) or read from a
//! [`Timetable`] for one direction, in a time zone, at every reservation, so a slot boundary
//! applies to a transfer already under way.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::timetable::{Direction, Timetable};

#[derive(Debug)]
enum Source {
    Fixed(u64),
    Scheduled {
        table: Timetable,
        tz: chrono_tz::Tz,
        direction: Direction,
    },
}

/// See the module documentation.
#[derive(Debug)]
pub struct Pacer {
    source: Source,
    /// When the bytes reserved so far will have been sent at the rate.
    next_free: Mutex<Instant>,
    /// Nanoseconds the transfers were told to wait, in all.
    waited: AtomicU64,
}

/// What the bucket holds when full.
const BURST: Duration = Duration::from_secs(1);

impl Pacer {
    /// At most `rate` bytes per second.
    pub fn fixed(rate: u64) -> Pacer {
        Pacer {
            source: Source::Fixed(rate.max(1)),
            next_free: Mutex::new(Instant::now()),
            waited: AtomicU64::new(0),
        }
    }

    /// At the rate `table` gives for `direction` now, the clock read in `tz`.
    pub fn scheduled(table: Timetable, tz: chrono_tz::Tz, direction: Direction) -> Pacer {
        Pacer {
            source: Source::Scheduled {
                table,
                tz,
                direction,
            },
            next_free: Mutex::new(Instant::now()),
            waited: AtomicU64::new(0),
        }
    }

    /// The rate now, bytes per second; `None`: no limit.
    pub fn rate(&self) -> Option<u64> {
        match &self.source {
            Source::Fixed(r) => Some(*r),
            Source::Scheduled {
                table,
                tz,
                direction,
            } => table.now_in(*tz).of(*direction),
        }
    }

    /// Reserves `bytes`; returns how long to wait before sending them.
    pub fn reserve(&self, bytes: usize) -> Duration {
        let rate = self.rate();
        let mut next = self.next_free.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        let Some(rate) = rate else {
            *next = now;
            return Duration::ZERO;
        };
        let cost = Duration::from_secs_f64(bytes as f64 / rate.max(1) as f64);
        let start = (*next).max(now.checked_sub(BURST).unwrap_or(now));
        *next = start + cost;
        let wait = next.saturating_duration_since(now).saturating_sub(BURST);
        self.waited
            .fetch_add(wait.as_nanos() as u64, Ordering::Relaxed);
        wait
    }

    /// How long transfers were told to wait, in all.
    pub fn waited(&self) -> Duration {
        Duration::from_nanos(self.waited.load(Ordering::Relaxed))
    }

    /// Reserves `bytes` and sleeps as long as the rate requires.
    pub fn pace(&self, bytes: usize) {
        let wait = self.reserve(bytes);
        if !wait.is_zero() {
            std::thread::sleep(wait);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pacer_spreads_transfers_at_its_rate() {
        let p = Pacer::fixed(1000);
        assert_eq!(
            p.reserve(500),
            Duration::ZERO,
            "a second's worth goes at once"
        );
        let w = p.reserve(1000);
        assert!(
            w > Duration::from_millis(400) && w <= Duration::from_millis(500),
            "{w:?}"
        );
        // (Nobody slept: the next one waits for both.)
        let w = p.reserve(1);
        assert!(w > Duration::from_millis(500), "{w:?}");
        assert!(p.waited() > Duration::from_millis(990), "{:?}", p.waited());
        // One transfer of three seconds' bytes waits for the two beyond the burst.
        let big = Pacer::fixed(1000).reserve(3000);
        assert!(
            big > Duration::from_millis(1900) && big <= Duration::from_millis(2000),
            "{big:?}"
        );
    }

    /// A timetable's rate for the direction asked: the other direction's limit does not apply,
    /// and "off" lets everything through at once.
    #[test]
    fn a_scheduled_pacer_follows_its_direction() {
        let t = Timetable::parse("1KiB:off").unwrap();
        let tx = Pacer::scheduled(t.clone(), chrono_tz::UTC, Direction::Tx);
        assert_eq!(tx.rate(), Some(1024));
        tx.reserve(2048);
        assert!(tx.reserve(1) > Duration::from_millis(900));
        let rx = Pacer::scheduled(t, chrono_tz::UTC, Direction::Rx);
        assert_eq!(rx.rate(), None);
        rx.reserve(1 << 30);
        assert_eq!(rx.reserve(1 << 30), Duration::ZERO);
    }
}
