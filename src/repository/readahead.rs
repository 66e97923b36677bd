//! The read-ahead window of a remote store: the keys announced as read next (a bounded queue),
//! and the fetches started ahead of their reads, bounded in number and in bytes.
//!
//! A fetch is started with an assumed cost (the largest blob); the fetch lowers its cost to the
//! object's real size once the response's headers tell it, and the window starts more fetches on
//! its next pump. Nothing waits on the window: a read of a key that was not fetched ahead (or
//! whose fetch failed) simply reads it directly, so readers in any order cannot deadlock.
//!
//! A key announced by several readers (the replicas of one HopsFS block, written back to two
//! datanodes at once) is fetched once and handed to each of them (`F` is cloned), as long as
//! the later announcements come before the fetch has been read by every earlier one: each
//! announcement is one read to come. A key announced more often than read is dropped once it
//! is old (see below), so such a mistake costs a slot for a while, never a wrong read.
//!
//! A fetch not read while many later reads were (announced, then read directly by a reader that
//! got there first, or by a reader that stopped) is dropped, so the window cannot silt up.
//!
//! Pure bookkeeping; the store starts the fetches (see `s3.rs`).

use std::collections::{HashMap, VecDeque};
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
    /// Reads announced and not yet taken.
    wanted: u32,
    /// The window's read count when it started.
    at: u64,
}

/// The window; `F` is the handle a reader waits on for a started fetch.
#[derive(Debug)]
pub struct ReadAhead<F> {
    limits: Limits,
    queue: VecDeque<String>,
    /// The keys in `queue` not yet started (or read directly), with the reads announced.
    queued: HashMap<String, u32>,
    started: HashMap<String, Started<F>>,
    /// Reads asked of the window, and those a started fetch served.
    reads: u64,
    hits: u64,
}

impl<F: Clone> ReadAhead<F> {
    pub fn new(limits: Limits) -> ReadAhead<F> {
        ReadAhead {
            limits,
            queue: VecDeque::new(),
            queued: HashMap::new(),
            started: HashMap::new(),
            reads: 0,
            hits: 0,
        }
    }

    /// Queues `keys` (in order) to be fetched: each one read to come. A key already queued or
    /// started is not fetched again: one more read of it is expected.
    pub fn announce(&mut self, keys: &[String]) {
        for key in keys {
            if let Some(s) = self.started.get_mut(key) {
                s.wanted += 1;
            } else if let Some(n) = self.queued.get_mut(key) {
                *n += 1;
            } else if self.queued.len() < self.limits.queued {
                self.queued.insert(key.clone(), 1);
                self.queue.push_back(key.clone());
            }
        }
    }

    /// The bytes the started fetches hold or may hold.
    pub fn reserved(&self) -> u64 {
        self.started
            .values()
            .map(|s| s.cost.load(Ordering::Relaxed))
            .sum()
    }

    /// Drops the fetches not read while `4 × fetches` later reads were.
    fn drop_stale(&mut self) {
        let horizon = 4 * self.limits.fetches as u64;
        let reads = self.reads;
        self.started.retain(|_, s| s.at + horizon >= reads);
    }

    /// Starts queued fetches, in order, while the window has room. `start` returns `None` when
    /// a key cannot be fetched (it is dropped; its read will fail or succeed on its own).
    pub fn pump(&mut self, mut start: impl FnMut(&str, Arc<AtomicU64>) -> Option<F>) {
        self.drop_stale();
        let mut reserved = self.reserved();
        while self.started.len() < self.limits.fetches
            && reserved + self.limits.assumed <= self.limits.bytes
        {
            let Some(key) = self.queue.pop_front() else {
                break;
            };
            let Some(wanted) = self.queued.remove(&key) else {
                continue; // read directly meanwhile
            };
            let cost = Arc::new(AtomicU64::new(self.limits.assumed));
            if let Some(fetch) = start(&key, cost.clone()) {
                reserved += self.limits.assumed;
                let at = self.reads;
                self.started.insert(
                    key,
                    Started {
                        cost,
                        fetch,
                        wanted,
                        at,
                    },
                );
            }
        }
    }

    /// Takes the started fetch of `key` for its read, if any; a key still queued is unqueued
    /// (the reader reads it directly).
    pub fn take(&mut self, key: &str) -> Option<F> {
        self.reads += 1;
        if self.queued.remove(key).is_some() {
            // Read before its fetch started: the readers are ahead of the window, and the
            // others that announced it will be soon too; none of them gets it fetched. Left in
            // the deque; skipped when popped.
            return None;
        }
        let s = self.started.get_mut(key)?;
        self.hits += 1;
        s.wanted = s.wanted.saturating_sub(1);
        if s.wanted == 0 {
            self.started.remove(key).map(|s| s.fetch)
        } else {
            Some(s.fetch.clone())
        }
    }

    /// What the window did so far, for the logs: reads, reads served by a fetch ahead,
    /// fetches started and not read, keys queued.
    pub fn stats(&self) -> (u64, u64, usize, usize) {
        (self.reads, self.hits, self.started.len(), self.queued.len())
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
    fn fetches_nobody_reads_are_dropped_once_old() {
        let mut w = window();
        w.announce(&keys(2));
        let start = |k: &str, _| Some(k.to_string());
        w.pump(start);
        assert_eq!(w.started(), 2, "full: 2 x 4 MiB of 10");
        // Reads of other keys, fewer than the horizon (4 x 4 fetches): kept.
        for _ in 0..16 {
            assert!(w.take("other").is_none());
        }
        w.announce(&["k2".to_string()]);
        w.pump(start);
        assert_eq!(w.started(), 2);
        assert!(
            w.take("k2").is_none(),
            "not started: the reader reads it itself"
        );
        // One more: k0 and k1 are stale and make room.
        w.announce(&["k3".to_string()]);
        w.pump(start);
        assert_eq!(w.started(), 1);
        assert_eq!(w.take("k3").as_deref(), Some("k3"));
        assert!(w.take("k0").is_none());
    }

    #[test]
    fn a_key_announced_by_two_readers_is_fetched_once_and_read_by_both() {
        let mut w = window();
        w.announce(&keys(2)); // reader A
        let n = std::cell::Cell::new(0);
        let start = |k: &str, _| {
            n.set(n.get() + 1);
            Some(k.to_string())
        };
        w.pump(start);
        w.announce(&keys(2)); // reader B, before A read them
        w.pump(start);
        assert_eq!(n.get(), 2, "fetched once each");
        assert_eq!(w.take("k0").as_deref(), Some("k0"));
        assert_eq!(w.started(), 2, "k0 kept for B");
        assert_eq!(w.take("k0").as_deref(), Some("k0"));
        assert_eq!(w.started(), 1);
        // A third read of k0 nobody announced: not fetched ahead.
        assert!(w.take("k0").is_none());
        // A key queued twice and read directly once (the readers are ahead of the window) is
        // not fetched for the other read either.
        w.announce(&["q".to_string(), "q".to_string()]);
        assert!(w.take("q").is_none());
        w.pump(start);
        assert!(w.take("q").is_none());
        assert_eq!(w.started(), 1, "only k1 is left");
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
