//! The read-ahead window of a remote store: the keys announced as read next (a bounded queue),
//! and the fetches started ahead of their reads, bounded in number and in bytes.
//!
//! A fetch is started with an assumed cost (the largest blob); the fetch lowers its cost to the
//! object's real size once the response's headers tell it, and the window starts more fetches on
//! its next pump. Nothing waits on the window: a read of a key that was not fetched ahead (or
//! whose fetch failed) simply reads it directly, so readers in any order cannot deadlock.
//! Pure bookkeeping; the store starts the fetches (see `s3.rs`).

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// How much the window may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Fetches started and not yet read, at most.
    pub fetches: usize,
    /// Bytes those fetches may hold (each counted at `assumed` until its size is known).
    pub bytes: u64,
    /// The cost of a fetch whose size is not known yet.
    pub assumed: u64,
    /// Keys announced and not yet started, at most (later ones are dropped until re-announced).
    pub queued: usize,
}

/// A started fetch: its cost in bytes (updated by the fetch) and what the reader waits on.
#[derive(Debug)]
pub struct Started<F> {
    pub cost: Arc<AtomicU64>,
    pub fetch: F,
}

/// The window; `F` is the handle a reader waits on for a started fetch.
#[derive(Debug)]
pub struct ReadAhead<F> {
    limits: Limits,
    queue: VecDeque<String>,
    queued: HashSet<String>,
    started: HashMap<String, Started<F>>,
}

impl<F> ReadAhead<F> {
    pub fn new(limits: Limits) -> ReadAhead<F> {
        ReadAhead {
            limits,
            queue: VecDeque::new(),
            queued: HashSet::new(),
            started: HashMap::new(),
        }
    }

    /// Queues `keys` (in order) to be fetched, skipping those already queued or started.
    pub fn announce(&mut self, keys: &[String]) {
        for key in keys {
            if self.queued.len() >= self.limits.queued {
                break;
            }
            if self.started.contains_key(key) || self.queued.contains(key) {
                continue;
            }
            self.queued.insert(key.clone());
            self.queue.push_back(key.clone());
        }
    }

    /// The bytes the started fetches hold or may hold.
    pub fn reserved(&self) -> u64 {
        self.started
            .values()
            .map(|s| s.cost.load(Ordering::Relaxed))
            .sum()
    }

    /// Starts queued fetches, in order, while the window has room. `start` returns `None` when
    /// a key cannot be fetched (it is dropped; its read will fail or succeed on its own).
    pub fn pump(&mut self, mut start: impl FnMut(&str, Arc<AtomicU64>) -> Option<F>) {
        let mut reserved = self.reserved();
        while self.started.len() < self.limits.fetches
            && reserved + self.limits.assumed <= self.limits.bytes
        {
            let Some(key) = self.queue.pop_front() else {
                break;
            };
            if !self.queued.remove(&key) {
                continue; // read directly meanwhile
            }
            let cost = Arc::new(AtomicU64::new(self.limits.assumed));
            if let Some(fetch) = start(&key, cost.clone()) {
                reserved += self.limits.assumed;
                self.started.insert(key, Started { cost, fetch });
            }
        }
    }

    /// Takes the started fetch of `key` for its read, if any; a key still queued is unqueued
    /// (the reader reads it directly).
    pub fn take(&mut self, key: &str) -> Option<F> {
        if self.queued.remove(key) {
            // Left in the deque; skipped when popped.
            return None;
        }
        self.started.remove(key).map(|s| s.fetch)
    }

    /// Forgets everything announced or fetched (a restore that stopped early).
    pub fn clear(&mut self) {
        self.queue.clear();
        self.queued.clear();
        self.started.clear();
    }

    /// Fetches started and not yet taken.
    #[cfg(test)]
    pub fn started(&self) -> usize {
        self.started.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    fn window() -> ReadAhead<String> {
        ReadAhead::new(Limits {
            fetches: 4,
            bytes: 10 * MIB,
            assumed: 4 * MIB,
            queued: 6,
        })
    }

    fn keys(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("k{i}")).collect()
    }

    #[test]
    fn fetches_start_in_order_within_the_assumed_bytes() {
        let mut w = window();
        w.announce(&keys(5));
        let mut started = Vec::new();
        w.pump(|k, _| {
            started.push(k.to_string());
            Some(k.to_string())
        });
        // 10 MiB holds two fetches of an assumed 4 MiB.
        assert_eq!(started, ["k0", "k1"]);
        assert_eq!(w.reserved(), 8 * MIB);
    }

    #[test]
    fn known_small_sizes_let_more_fetches_start_up_to_the_count() {
        let mut w = window();
        w.announce(&keys(6));
        let mut costs = Vec::new();
        let pump = |w: &mut ReadAhead<String>, costs: &mut Vec<Arc<AtomicU64>>| {
            w.pump(|k, c| {
                costs.push(c);
                Some(k.to_string())
            })
        };
        pump(&mut w, &mut costs);
        assert_eq!(w.started(), 2);
        for c in &costs {
            c.store(100_000, Ordering::Relaxed); // the headers told
        }
        pump(&mut w, &mut costs);
        assert_eq!(w.started(), 4, "bounded by the count");
        assert_eq!(w.take("k0").as_deref(), Some("k0"));
        pump(&mut w, &mut costs);
        assert_eq!(w.started(), 3, "k2 and k3 still count as whole blobs");
        for c in &costs {
            c.store(100_000, Ordering::Relaxed);
        }
        pump(&mut w, &mut costs);
        assert_eq!(w.started(), 4);
        assert!(w.take("k4").is_some());
    }

    #[test]
    fn a_key_read_before_its_fetch_starts_is_not_fetched() {
        let mut w = window();
        w.announce(&keys(3));
        assert!(w.take("k0").is_none());
        let mut started = Vec::new();
        w.pump(|k, _| {
            started.push(k.to_string());
            Some(k.to_string())
        });
        assert_eq!(started, ["k1", "k2"]);
        assert!(w.take("k0").is_none());
    }

    #[test]
    fn announcements_are_deduplicated_and_bounded() {
        let mut w = window();
        w.announce(&keys(3));
        w.announce(&keys(10));
        let mut n = 0;
        // Unlimited bytes: every queued key starts, up to the count.
        w.limits.bytes = u64::MAX / 2;
        w.limits.fetches = 100;
        w.pump(|k, _| {
            n += 1;
            Some(k.to_string())
        });
        assert_eq!(n, 6, "at most `queued` keys wait");
        w.announce(&keys(3));
        assert_eq!(w.queue.len(), 0, "started keys are not queued again");
    }

    #[test]
    fn a_key_that_cannot_be_fetched_is_dropped_and_clear_forgets_all() {
        let mut w = window();
        w.announce(&keys(3));
        w.pump(|k, _| (k != "k0").then(|| k.to_string()));
        assert_eq!(w.started(), 2);
        assert!(w.take("k0").is_none());
        w.clear();
        assert_eq!(w.started(), 0);
        assert_eq!(w.reserved(), 0);
        assert!(w.take("k1").is_none());
    }
}
