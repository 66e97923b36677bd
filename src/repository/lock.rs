//! The repository's writer lock: one process at a time writes to a repository (backs up,
//! prunes, collects garbage, removes stale temporary files), so that two daemons on one bucket,
//! or `hopsdrd --rebuild-catalog` next to a running daemon, never delete each other's blobs.
//! Reading needs no lock.
//!
//! - A local repository: `<root>/lock`, held with `flock` for the holder's lifetime (released by
//!   the kernel when the process dies); it holds the holder's `host pid` for the message.
//! - Object storage has no locks: a lease object `locks/writer` names its owner (host, pid, a
//!   token) and when it expires; the holder renews it every [`RENEW_EVERY`] (expiry
//!   [`LEASE`] later) and deletes it when done. A lease that has expired, or whose owner is a
//!   process of this host that is gone, is taken over; any other refuses, naming the holder.
//!   `hopsdrd --break-lock` deletes a lease left by a host that will not come back.

use std::fs::File;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::storage::{Storage, StorageError};

/// The lease object's key.
pub const LEASE_KEY: &str = "locks/writer";
/// How long a lease lasts without renewal.
pub const LEASE: Duration = Duration::from_secs(300);
/// How often the holder renews it.
pub const RENEW_EVERY: Duration = Duration::from_secs(60);

/// Why the lock could not be taken.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("the repository {repo} is locked by {holder}: another hopsdrd (or hopsdrd --rebuild-catalog) writes to it; stop that one first")]
    Held { repo: String, holder: String },
    #[error("the repository {repo} is locked by {holder} until {expires_at}: another hopsdrd writes to it; stop that one, or if that host is gone for good, run hopsdrd --break-lock")]
    Leased {
        repo: String,
        holder: String,
        expires_at: DateTime<Utc>,
    },
    #[error("failed to lock the repository {repo}: {source}")]
    Io {
        repo: String,
        source: std::io::Error,
    },
    #[error("failed to lock the repository: {0}")]
    Storage(#[from] StorageError),
    #[error("the repository {repo} lease {LEASE_KEY} is unreadable ({reason}): delete it with hopsdrd --break-lock if no hopsdrd writes to this repository")]
    BadLease { repo: String, reason: String },
}

/// The lease object's content.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Lease {
    host: String,
    pid: u32,
    token: String,
    expires_at: DateTime<Utc>,
}

impl Lease {
    fn holder(&self) -> String {
        format!("hopsdrd pid {} on {}", self.pid, self.host)
    }
}

/// What to do with the lease found: pure, for tests.
#[derive(Debug, PartialEq, Eq)]
enum Found {
    /// None, expired, or its owner is a dead process of this host: take it.
    Free,
    /// Held by somebody else.
    Held,
}

fn judge(
    found: Option<&Lease>,
    host: &str,
    now: DateTime<Utc>,
    alive: impl Fn(u32) -> bool,
) -> Found {
    match found {
        None => Found::Free,
        Some(l) if l.expires_at <= now => Found::Free,
        Some(l) if l.host == host && !alive(l.pid) => Found::Free,
        Some(_) => Found::Held,
    }
}

fn pid_alive(pid: u32) -> bool {
    // SAFETY: kill with signal 0 only checks that the process exists.
    let r = unsafe { libc::kill(pid as libc::pid_t, 0) };
    r == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

/// The writer lock; released when dropped.
#[derive(Debug)]
pub struct WriterLock {
    _file: Option<File>,
    _lease: Option<LeaseHolder>,
}

#[derive(Debug)]
struct LeaseHolder {
    storage: Arc<dyn Storage>,
    token: String,
    stop: Arc<AtomicBool>,
    renewer: Option<std::thread::JoinHandle<()>>,
}

impl Drop for LeaseHolder {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.renewer.take() {
            t.thread().unpark();
            let _ = t.join();
        }
        // Delete it only if it is still ours.
        if let Ok(Some(l)) = read_lease(self.storage.as_ref()) {
            if l.token == self.token {
                let _ = self.storage.delete(LEASE_KEY);
            }
        }
    }
}

fn read_lease(storage: &dyn Storage) -> Result<Option<Lease>, LockError> {
    // Listed first: a missing bucket is an error here, where a GET would only say "not found".
    if !storage.list("locks/")?.iter().any(|o| o.key == LEASE_KEY) {
        return Ok(None);
    }
    match storage.get(LEASE_KEY) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| LockError::BadLease {
                repo: storage.describe(),
                reason: e.to_string(),
            }),
        Err(e) if e.is_not_found() => Ok(None),
        Err(e) => Err(e.into()),
    }
}

fn token() -> String {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    blake3::hash(format!("{t}-{}", std::process::id()).as_bytes()).to_hex()[..16].to_string()
}

/// Takes the writer lock of the repository in `storage` for this process (`host` names it).
pub fn acquire(storage: &Arc<dyn Storage>, host: &str) -> Result<WriterLock, LockError> {
    if let Some(root) = storage.local_root() {
        return acquire_local(root, &storage.describe(), host);
    }
    let now = Utc::now();
    let found = read_lease(storage.as_ref())?;
    if judge(found.as_ref(), host, now, pid_alive) == Found::Held {
        let l = found.expect("held means found");
        return Err(LockError::Leased {
            repo: storage.describe(),
            holder: l.holder(),
            expires_at: l.expires_at,
        });
    }
    let mine = Lease {
        host: host.to_string(),
        pid: std::process::id(),
        token: token(),
        expires_at: now + chrono::Duration::from_std(LEASE).unwrap_or_default(),
    };
    let body = serde_json::to_vec(&mine).unwrap_or_default();
    storage.put(LEASE_KEY, &body)?;
    // Two takers at once: the last put wins; the other sees it here and backs off.
    match read_lease(storage.as_ref())? {
        Some(l) if l.token == mine.token => {}
        Some(l) => {
            return Err(LockError::Leased {
                repo: storage.describe(),
                holder: l.holder(),
                expires_at: l.expires_at,
            })
        }
        None => {
            return Err(LockError::BadLease {
                repo: storage.describe(),
                reason: "it vanished right after it was written".into(),
            })
        }
    }
    if let Some(prev) = found {
        tracing::warn!(
            repo = %storage.describe(),
            "took over the repository lease of {} (expired or its process is gone)",
            prev.holder()
        );
    }
    let stop = Arc::new(AtomicBool::new(false));
    let renewer = {
        let (storage, stop, mine) = (storage.clone(), stop.clone(), mine.clone());
        std::thread::Builder::new()
            .name("lease-renewal".into())
            .spawn(move || renew(storage.as_ref(), &stop, mine))
            .ok()
    };
    Ok(WriterLock {
        _file: None,
        _lease: Some(LeaseHolder {
            storage: storage.clone(),
            token: mine.token,
            stop,
            renewer,
        }),
    })
}

fn renew(storage: &dyn Storage, stop: &AtomicBool, mut mine: Lease) {
    loop {
        std::thread::park_timeout(RENEW_EVERY);
        if stop.load(Ordering::SeqCst) {
            return;
        }
        match read_lease(storage) {
            Ok(Some(l)) if l.token != mine.token => {
                tracing::error!(repo = %storage.describe(), "the repository lease was taken by {}: another hopsdrd writes to this repository; stop one of them", l.holder());
                return;
            }
            Err(e) => {
                tracing::error!(repo = %storage.describe(), "failed to read the repository lease: {e}");
                continue;
            }
            _ => {}
        }
        mine.expires_at = Utc::now() + chrono::Duration::from_std(LEASE).unwrap_or_default();
        if let Err(e) = storage.put(LEASE_KEY, &serde_json::to_vec(&mine).unwrap_or_default()) {
            tracing::error!(repo = %storage.describe(), "failed to renew the repository lease: {e}");
        }
    }
}

fn acquire_local(root: &Path, repo: &str, host: &str) -> Result<WriterLock, LockError> {
    let io = |source| LockError::Io {
        repo: repo.to_string(),
        source,
    };
    std::fs::create_dir_all(root).map_err(io)?;
    let path = root.join("lock");
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(io)?;
    // SAFETY: flock on a valid, owned file descriptor.
    let r = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if r != 0 {
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
            let holder = std::fs::read_to_string(&path)
                .ok()
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .unwrap_or_else(|| "another process".into());
            return Err(LockError::Held {
                repo: repo.to_string(),
                holder,
            });
        }
        return Err(io(e));
    }
    f.set_len(0).map_err(io)?;
    writeln!(f, "hopsdrd pid {} on {host}", std::process::id()).map_err(io)?;
    Ok(WriterLock {
        _file: Some(f),
        _lease: None,
    })
}

/// Deletes the lease of an object-storage repository whose holder will not come back; says
/// what it removed. A local repository's lock needs no breaking.
pub fn break_lock(storage: &dyn Storage) -> Result<String, LockError> {
    if storage.local_root().is_some() {
        return Ok(format!(
            "{}: a local repository's lock is released when its holder exits: nothing to break",
            storage.describe()
        ));
    }
    match read_lease(storage) {
        Ok(None) => Ok(format!(
            "{}: no lease: nothing to break",
            storage.describe()
        )),
        Ok(Some(l)) => {
            storage.delete(LEASE_KEY)?;
            Ok(format!(
                "{}: removed the lease of {} (expiring {})",
                storage.describe(),
                l.holder(),
                l.expires_at
            ))
        }
        Err(LockError::BadLease { .. }) => {
            storage.delete(LEASE_KEY)?;
            Ok(format!(
                "{}: removed an unreadable lease",
                storage.describe()
            ))
        }
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::repository::LocalStorage;

    fn lease(host: &str, pid: u32, expires_at: DateTime<Utc>) -> Lease {
        Lease {
            host: host.into(),
            pid,
            token: "t".into(),
            expires_at,
        }
    }

    #[test]
    fn a_lease_is_free_when_absent_expired_or_its_local_process_is_gone() {
        let now = Utc::now();
        let later = now + chrono::Duration::seconds(60);
        let alive = |p: u32| p == 7;
        assert_eq!(judge(None, "a", now, alive), Found::Free);
        assert_eq!(
            judge(Some(&lease("b", 7, now)), "a", now, alive),
            Found::Free
        );
        assert_eq!(
            judge(Some(&lease("b", 7, later)), "a", now, alive),
            Found::Held
        );
        assert_eq!(
            judge(Some(&lease("a", 8, later)), "a", now, alive),
            Found::Free
        );
        assert_eq!(
            judge(Some(&lease("a", 7, later)), "a", now, alive),
            Found::Held
        );
    }

    #[test]
    fn a_local_repository_has_one_writer_at_a_time() {
        let dir = tempfile::tempdir().unwrap();
        let s: Arc<dyn Storage> = Arc::new(LocalStorage::new(dir.path()).unwrap());
        let first = acquire(&s, "head").unwrap();
        // flock is per open file description: a second open in this process conflicts too.
        let e = acquire(&s, "head").unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.contains(&format!(
                "locked by hopsdrd pid {} on head",
                std::process::id()
            )),
            "{msg}"
        );
        drop(first);
        let _again = acquire(&s, "head").unwrap();
        assert!(break_lock(s.as_ref()).unwrap().contains("nothing to break"));
    }
}
