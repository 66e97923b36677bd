//! Connection limits of the daemon's two listeners (the API socket and the metrics port): how
//! many connections may be open at once, in total and per peer uid, with room kept for root; and
//! a back-off when `accept` fails (out of file descriptors) instead of a busy loop. Timeouts for
//! slow clients are set on the HTTP connection by the listeners; this module only counts. A local
//! user opening connections cannot starve the other users, root or Prometheus.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Open API connections at most, all peers together.
pub const API_MAX_CONNECTIONS: usize = 64;
/// Of those, kept for root: a flood by other users never locks the operator out.
pub const API_RESERVED_FOR_ROOT: usize = 8;
/// Open API connections at most per non-root uid.
pub const API_MAX_PER_UID: usize = 8;
/// Open metrics connections at most (Prometheus needs one).
pub const METRICS_MAX_CONNECTIONS: usize = 16;
/// Heavy read requests (`repo check`, `restore plan`) served at once; more get 429.
pub const MAX_HEAVY_READS: usize = 2;

/// Why a connection was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("too many connections ({open} open, at most {max}): try again when some are closed")]
    Total { open: usize, max: usize },
    #[error("too many connections from uid {uid} ({max} open, at most {max} per user): close some and try again")]
    PerUid { uid: u32, max: usize },
}

#[derive(Debug, Default)]
struct Counts {
    total: usize,
    by_uid: HashMap<u32, usize>,
}

/// Counts open connections; a permit is held for the life of each.
#[derive(Debug, Clone)]
pub struct ConnLimiter {
    counts: Arc<Mutex<Counts>>,
    max_total: usize,
    reserved_for_root: usize,
    max_per_uid: usize,
}

/// One open connection; dropping it frees its place.
#[derive(Debug)]
pub struct ConnPermit {
    counts: Arc<Mutex<Counts>>,
    uid: Option<u32>,
}

impl Drop for ConnPermit {
    fn drop(&mut self) {
        let mut c = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        c.total = c.total.saturating_sub(1);
        if let Some(uid) = self.uid {
            if let Some(n) = c.by_uid.get_mut(&uid) {
                *n -= 1;
                if *n == 0 {
                    c.by_uid.remove(&uid);
                }
            }
        }
    }
}

impl ConnLimiter {
    /// `max_total` connections, `reserved_for_root` of them only for uid 0, `max_per_uid` for
    /// each other uid. Peers without a uid (TCP) count only against the total.
    pub fn new(max_total: usize, reserved_for_root: usize, max_per_uid: usize) -> ConnLimiter {
        ConnLimiter {
            counts: Arc::default(),
            max_total,
            reserved_for_root: reserved_for_root.min(max_total),
            max_per_uid,
        }
    }

    /// A place for one more connection from `uid`, or why there is none.
    pub fn try_acquire(&self, uid: Option<u32>) -> Result<ConnPermit, Refusal> {
        let mut c = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        let max = match uid {
            Some(0) => self.max_total,
            _ => self.max_total - self.reserved_for_root,
        };
        if c.total >= max {
            return Err(Refusal::Total { open: c.total, max });
        }
        let per_uid = match uid {
            Some(0) | None => None,
            Some(u) => Some(u),
        };
        if let Some(u) = per_uid {
            let n = c.by_uid.entry(u).or_default();
            if *n >= self.max_per_uid {
                return Err(Refusal::PerUid {
                    uid: u,
                    max: self.max_per_uid,
                });
            }
            *n += 1;
        }
        c.total += 1;
        Ok(ConnPermit {
            counts: self.counts.clone(),
            uid: per_uid,
        })
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.counts.lock().unwrap_or_else(|p| p.into_inner()).total
    }
}

/// Back-off after failed `accept` calls: 10 ms doubling to 1 s, reset by a success; the failure
/// is logged on the first of a streak and then every 100th.
#[derive(Debug, Default)]
pub struct AcceptBackoff {
    failures: u64,
}

impl AcceptBackoff {
    /// Records a failure and returns how long to wait before accepting again.
    pub fn failed(&mut self, listener: &str, e: &std::io::Error) -> Duration {
        self.failures += 1;
        if self.failures == 1 || self.failures % 100 == 0 {
            tracing::warn!(
                listener,
                failures = self.failures,
                "{listener}: accept failed: {e} (backing off; out of file descriptors? see LimitNOFILE)"
            );
        }
        let exp = (self.failures - 1).min(7) as u32;
        Duration::from_millis(10 * 2u64.pow(exp)).min(Duration::from_secs(1))
    }

    /// Records a success.
    pub fn succeeded(&mut self) {
        self.failures = 0;
    }
}

/// A one-shot HTTP/1.1 answer to a refused connection, written without waiting (the socket's
/// buffer holds it) so a refusal never ties up the accept loop.
pub fn refusal_response(status: &str, content_type: &str, body: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 {status}\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_uid_and_total_limits_with_room_for_root() {
        let l = ConnLimiter::new(4, 1, 2);
        let a = l.try_acquire(Some(1000)).unwrap();
        let _b = l.try_acquire(Some(1000)).unwrap();
        assert_eq!(
            l.try_acquire(Some(1000)).unwrap_err(),
            Refusal::PerUid { uid: 1000, max: 2 }
        );
        let _c = l.try_acquire(None).unwrap();
        // Three open: the fourth place is root's.
        assert_eq!(
            l.try_acquire(Some(1001)).unwrap_err(),
            Refusal::Total { open: 3, max: 3 }
        );
        let r = l.try_acquire(Some(0)).unwrap();
        assert!(l.try_acquire(Some(0)).is_err());
        assert_eq!(l.open(), 4);
        drop(a);
        drop(r);
        assert_eq!(l.open(), 2);
        // uid 1000's place came back.
        let _d = l.try_acquire(Some(1000)).unwrap();
        assert_eq!(l.open(), 3);
    }

    #[test]
    fn accept_backoff_grows_to_a_second_and_resets() {
        let mut b = AcceptBackoff::default();
        let e = std::io::Error::from_raw_os_error(libc::EMFILE);
        let waits: Vec<_> = (0..10).map(|_| b.failed("api", &e)).collect();
        assert_eq!(waits[0], Duration::from_millis(10));
        assert_eq!(waits[1], Duration::from_millis(20));
        assert_eq!(waits[9], Duration::from_secs(1));
        b.succeeded();
        assert_eq!(b.failed("api", &e), Duration::from_millis(10));
    }

    #[test]
    fn refusal_is_a_complete_response() {
        let r = String::from_utf8(refusal_response(
            "503 Service Unavailable",
            "text/plain",
            "no\n",
        ))
        .unwrap();
        assert!(r.starts_with("HTTP/1.1 503 Service Unavailable\r\n"));
        assert!(r.ends_with("content-length: 3\r\nconnection: close\r\n\r\nno\n"));
    }
}
