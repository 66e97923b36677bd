//! Where repository objects live: one small trait, shaped after what an object store offers
//! (whole-object put/get, existence, prefix listing, delete), and a local-directory
//! implementation of it.
//!
//! The trait promises nothing an object store cannot give: no rename, no append, no
//! list-after-write consistency. The repository above it only ever needs read-after-write on a
//! single key (`put` then `get`/`exists` of that key).

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// Prefix of the names of temporary files [`LocalStorage`] writes before renaming them into
/// place. Keys may not have a component starting with `.`, so these never collide with keys.
const TEMP_PREFIX: &str = ".tmp-";

/// An object's key and size, as listed by [`Storage::list`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectInfo {
    pub key: String,
    pub size: u64,
    /// When the object (its current version) was written, where the store says.
    pub last_modified: Option<chrono::DateTime<chrono::Utc>>,
}

/// Why a key or prefix was refused by [`validate_key`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("it is empty")]
    Empty,
    #[error("it is longer than 1024 bytes")]
    TooLong,
    #[error("it has a character other than A-Z a-z 0-9 . _ - /")]
    BadCharacter,
    #[error("it starts with '/'")]
    Absolute,
    #[error("it has an empty component")]
    EmptyComponent,
    #[error("it has a component starting with '.'")]
    DotComponent,
}

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("object '{key}' not found in {store}")]
    NotFound { store: String, key: String },
    #[error("invalid object key '{key}': {reason}")]
    InvalidKey { key: String, reason: KeyError },
    #[error("{store}: {op} {key:?} failed: {reason}")]
    Remote {
        store: String,
        op: &'static str,
        key: String,
        reason: String,
    },
    #[error("failed to {op} '{path}': {source}{}", full_hint(.source))]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// What to do when the repository's file system is full.
fn full_hint(e: &io::Error) -> &'static str {
    if e.raw_os_error() == Some(libc::ENOSPC) {
        " (the repository's file system is full: make room there or grow it; hopsdrctl prune forgets what retention does not keep and deletes its blobs)"
    } else {
        ""
    }
}

impl StorageError {
    /// True for [`StorageError::NotFound`]: the key holds no object.
    pub fn is_not_found(&self) -> bool {
        matches!(self, StorageError::NotFound { .. })
    }
}

/// Where repository objects are kept. Implementations are called from blocking threads, possibly
/// several at once.
pub trait Storage: Send + Sync + std::fmt::Debug {
    /// Creates or replaces the object at `key` with `data`, atomically: a reader sees either the
    /// old object, no object, or all of `data`. The object is durable when this returns.
    fn put(&self, key: &str, data: &[u8]) -> Result<(), StorageError>;
    /// The whole object at `key`; [`StorageError::NotFound`] if there is none.
    fn get(&self, key: &str) -> Result<Vec<u8>, StorageError>;
    fn exists(&self, key: &str) -> Result<bool, StorageError>;
    /// Every object whose key starts with `prefix` (a string prefix, not a directory), sorted by
    /// key. Objects put concurrently may or may not be listed.
    fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>, StorageError>;
    /// Removes the object at `key`; removing an absent object is not an error.
    fn delete(&self, key: &str) -> Result<(), StorageError>;
    /// Where the objects are, for humans: `local:/srv/hopsdr/repository`, `s3://bucket/prefix`.
    fn describe(&self) -> String;
    /// Free space in bytes where that is known.
    fn available_bytes(&self) -> Result<Option<u64>, StorageError>;
    /// Whether this identity may delete objects (an object store's backup identity may not,
    /// by design); asked before a prune so that it never stops half done. Deletes nothing
    /// that exists.
    fn can_delete(&self) -> Result<bool, StorageError> {
        Ok(true)
    }
    /// Object Lock: the mode and days every object this store writes is locked for; `None`
    /// when it locks nothing.
    fn lock_policy(&self) -> Option<(super::LockMode, u32)> {
        None
    }
    /// Until when `key` is locked (`None`: not locked).
    fn locked_until(
        &self,
        _key: &str,
    ) -> Result<Option<chrono::DateTime<chrono::Utc>>, StorageError> {
        Ok(None)
    }
    /// Locks `key` until `until` (an extension; the mode is the store's).
    fn lock_until(
        &self,
        _key: &str,
        _until: chrono::DateTime<chrono::Utc>,
    ) -> Result<(), StorageError> {
        Ok(())
    }
    /// Forgets what this store remembers of which objects exist (another store instance, such
    /// as the prune identity's, deleted some). The default remembers nothing.
    fn invalidate(&self) {}
    /// Like [`Storage::put`], except that the object need only be durable and visible under
    /// `key` after the next [`Storage::flush`] (`exists` reports it at once in this process).
    /// Lets a store batch its durability work; the default simply puts.
    fn put_deferred(&self, key: &str, data: &[u8]) -> Result<(), StorageError> {
        self.put(key, data)
    }
    /// Makes every object put with [`Storage::put_deferred`] durable, then visible under its key.
    /// A crash before it leaves none of them under its key.
    fn flush(&self) -> Result<(), StorageError> {
        Ok(())
    }
    /// Called before a backup starts writing: deferred puts left by an abandoned backup (one that
    /// failed before its flush) are settled and their outcome forgotten, so that they cannot
    /// fail the next backup's flush. The default has nothing to settle.
    fn settle(&self) {}
    /// The directory of a local store (its writer lock is a file there); `None` for object
    /// storage (its lock is a lease object).
    fn local_root(&self) -> Option<&std::path::Path> {
        None
    }
    /// A hint that `keys` will be read soon, in that order: a remote store may start fetching
    /// them (bounded in memory) so that the [`Storage::get`]s that follow do not wait one round
    /// trip each. The default ignores it.
    fn prefetch(&self, _keys: &[String]) {}
    /// `len` bytes of the object at `key` from byte `offset` (fewer if the object ends
    /// first: the caller checks). The default reads the whole object.
    fn get_range(&self, key: &str, offset: u64, len: u64) -> Result<Vec<u8>, StorageError> {
        let all = self.get(key)?;
        let start = (offset as usize).min(all.len());
        let end = (offset.saturating_add(len) as usize).min(all.len());
        Ok(all[start..end].to_vec())
    }
    /// A directory where the caller may write a file that [`Storage::put_file_deferred`] then
    /// moves into place without a copy (a local store's own root); `None`: any directory.
    fn spool_dir(&self) -> Option<std::path::PathBuf> {
        None
    }
    /// Like [`Storage::put_deferred`] with the content of the file at `path` (written by the
    /// caller, not necessarily synced), which this takes over: it is gone afterwards.
    fn put_file_deferred(&self, key: &str, path: &Path) -> Result<(), StorageError> {
        let data = fs::read(path).map_err(|source| StorageError::Io {
            op: "read",
            path: path.to_path_buf(),
            source,
        });
        let _ = fs::remove_file(path);
        self.put_deferred(key, &data?)
    }
}

/// Checks that `key` is a valid object key: relative, `/`-separated, non-empty components that
/// do not start with `.`, only `[A-Za-z0-9._/-]`, at most 1024 bytes.
pub fn validate_key(key: &str) -> Result<(), KeyError> {
    if key.is_empty() {
        return Err(KeyError::Empty);
    }
    validate_key_chars(key)?;
    for component in key.split('/') {
        if component.is_empty() {
            return Err(KeyError::EmptyComponent);
        }
        if component.starts_with('.') {
            return Err(KeyError::DotComponent);
        }
    }
    Ok(())
}

/// Checks a listing prefix: like a key, but it may be empty or end with `/`, and its last
/// component may be partial.
fn validate_prefix(prefix: &str) -> Result<(), KeyError> {
    if prefix.is_empty() {
        return Ok(());
    }
    validate_key_chars(prefix)?;
    let complete = match prefix.rsplit_once('/') {
        Some((dirs, _)) => dirs,
        None => return Ok(()),
    };
    for component in complete.split('/') {
        if component.is_empty() {
            return Err(KeyError::EmptyComponent);
        }
        if component.starts_with('.') {
            return Err(KeyError::DotComponent);
        }
    }
    Ok(())
}

fn validate_key_chars(key: &str) -> Result<(), KeyError> {
    if key.len() > 1024 {
        return Err(KeyError::TooLong);
    }
    if key.starts_with('/') {
        return Err(KeyError::Absolute);
    }
    let ok = |c: u8| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'-' | b'/');
    if !key.bytes().all(ok) {
        return Err(KeyError::BadCharacter);
    }
    Ok(())
}

/// Objects as files under a root directory: key `a/b/c` is the file `<root>/a/b/c`.
///
/// `put` writes a temporary file `.tmp-<pid>-<n>` beside the target, fsyncs it, renames it over
/// the target and fsyncs the directory, so the key holds the old object or the whole new one,
/// durably, whatever happens. Directories are created on demand (and fsynced into their parents).
/// Temporary files left by a crash are never listed; [`LocalStorage::remove_stale_temp`] deletes
/// them.
#[derive(Debug, Clone)]
pub struct LocalStorage {
    root: PathBuf,
    /// Objects written by `put_deferred` under temporary names, renamed into place by `flush`
    /// after one filesystem-wide sync: a name under `blobs/` always holds durable content.
    pending: std::sync::Arc<std::sync::Mutex<Pending>>,
}

#[derive(Debug, Default)]
struct Pending {
    files: Vec<(PathBuf, PathBuf)>,
    keys: std::collections::HashSet<String>,
}

static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// Creates a new temporary file in `dir`, named as a local store's temporary files are (never
/// listed as an object; removed by [`LocalStorage::remove_stale_temp`] if left behind).
pub fn spool_file(dir: &Path) -> io::Result<(PathBuf, fs::File)> {
    loop {
        let n = TEMP_COUNTER.fetch_add(1, Ordering::Relaxed);
        let tmp = dir.join(format!("{TEMP_PREFIX}{}-s{n}", std::process::id()));
        match fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&tmp)
        {
            Ok(f) => return Ok((tmp, f)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
}

impl LocalStorage {
    /// Storage rooted at `root`, creating that directory (and its missing parents) if needed.
    pub fn new(root: impl Into<PathBuf>) -> Result<LocalStorage, StorageError> {
        let storage = LocalStorage {
            root: root.into(),
            pending: Default::default(),
        };
        storage.create_dirs(&storage.root)?;
        Ok(storage)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn path_of(&self, key: &str) -> Result<PathBuf, StorageError> {
        validate_key(key).map_err(|reason| StorageError::InvalidKey {
            key: key.to_string(),
            reason,
        })?;
        Ok(self.root.join(key))
    }

    /// Deletes the temporary files that interrupted `put`s left behind, except this process's
    /// own. Call it when no other process writes to this repository (the daemon does at start).
    /// Returns how many were removed.
    pub fn remove_stale_temp(&self) -> Result<u64, StorageError> {
        let own = format!("{TEMP_PREFIX}{}-", std::process::id());
        let mut removed = 0;
        let mut stack = vec![self.root.clone()];
        while let Some(dir) = stack.pop() {
            for entry in read_dir_if_exists(&dir)? {
                let name = entry.file_name();
                let name = name.to_string_lossy();
                let path = entry.path();
                let file_type = entry.file_type().map_err(|source| StorageError::Io {
                    op: "inspect",
                    path: path.clone(),
                    source,
                })?;
                if file_type.is_dir() {
                    if !name.starts_with('.') {
                        stack.push(path);
                    }
                } else if name.starts_with(TEMP_PREFIX) && !name.starts_with(&own) {
                    match fs::remove_file(&path) {
                        Ok(()) => removed += 1,
                        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                        Err(source) => {
                            return Err(StorageError::Io {
                                op: "remove",
                                path,
                                source,
                            })
                        }
                    }
                }
            }
        }
        Ok(removed)
    }

    /// Creates `dir` and any missing ancestors, fsyncing each new directory's parent so that the
    /// new entries survive a crash.
    fn create_dirs(&self, dir: &Path) -> Result<(), StorageError> {
        let mut missing = Vec::new();
        let mut cur = dir;
        loop {
            match fs::metadata(cur) {
                Ok(m) if m.is_dir() => break,
                Ok(_) => {
                    return Err(StorageError::Io {
                        op: "create directory",
                        path: cur.to_path_buf(),
                        source: io::Error::new(io::ErrorKind::AlreadyExists, "not a directory"),
                    })
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    missing.push(cur.to_path_buf());
                    match cur.parent() {
                        Some(p) if !p.as_os_str().is_empty() => cur = p,
                        _ => break,
                    }
                }
                Err(source) => {
                    return Err(StorageError::Io {
                        op: "inspect",
                        path: cur.to_path_buf(),
                        source,
                    })
                }
            }
        }
        for new_dir in missing.iter().rev() {
            match fs::create_dir(new_dir) {
                Ok(()) => {}
                // Another writer made it first; it fsyncs the parent itself.
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(source) => {
                    return Err(StorageError::Io {
                        op: "create directory",
                        path: new_dir.clone(),
                        source,
                    })
                }
            }
            if let Some(parent) = new_dir.parent() {
                if !parent.as_os_str().is_empty() {
                    sync_dir(parent)?;
                }
            }
        }
        Ok(())
    }

    /// A failed read of object `key` at `path`: not found, or the I/O error.
    fn read_error(&self, key: &str, path: &Path, source: io::Error) -> StorageError {
        if source.kind() == io::ErrorKind::NotFound {
            StorageError::NotFound {
                store: self.describe(),
                key: key.to_string(),
            }
        } else {
            StorageError::Io {
                op: "read",
                path: path.to_path_buf(),
                source,
            }
        }
    }

    fn write_temp(&self, dir: &Path, data: &[u8], sync: bool) -> Result<PathBuf, StorageError> {
        loop {
            let n = TEMP_COUNTER.fetch_add(1, Ordering::Relaxed);
            let tmp = dir.join(format!("{TEMP_PREFIX}{}-{n}", std::process::id()));
            let mut file = match fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&tmp)
            {
                Ok(f) => f,
                // Left by a crashed process that had our pid: pick another name.
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(source) => {
                    return Err(StorageError::Io {
                        op: "create",
                        path: tmp,
                        source,
                    })
                }
            };
            let written = file
                .write_all(data)
                .map_err(|source| ("write", source))
                .and_then(|()| {
                    if sync {
                        file.sync_all().map_err(|source| ("fsync", source))
                    } else {
                        Ok(())
                    }
                });
            return match written {
                Ok(()) => Ok(tmp),
                Err((op, source)) => {
                    let _ = fs::remove_file(&tmp);
                    Err(StorageError::Io {
                        op,
                        path: tmp,
                        source,
                    })
                }
            };
        }
    }
}

impl Storage for LocalStorage {
    fn local_root(&self) -> Option<&std::path::Path> {
        Some(&self.root)
    }

    fn put(&self, key: &str, data: &[u8]) -> Result<(), StorageError> {
        let path = self.path_of(key)?;
        let dir = match path.parent() {
            Some(d) => d.to_path_buf(),
            None => self.root.clone(),
        };
        self.create_dirs(&dir)?;
        let tmp = self.write_temp(&dir, data, true)?;
        if let Err(source) = fs::rename(&tmp, &path) {
            let _ = fs::remove_file(&tmp);
            return Err(StorageError::Io {
                op: "rename into",
                path,
                source,
            });
        }
        sync_dir(&dir)
    }

    fn get(&self, key: &str) -> Result<Vec<u8>, StorageError> {
        let path = self.path_of(key)?;
        fs::read(&path).map_err(|source| self.read_error(key, &path, source))
    }

    fn get_range(&self, key: &str, offset: u64, len: u64) -> Result<Vec<u8>, StorageError> {
        use std::os::unix::fs::FileExt;
        let path = self.path_of(key)?;
        let io_err = |source: io::Error| self.read_error(key, &path, source);
        let file = fs::File::open(&path).map_err(io_err)?;
        let size = file.metadata().map_err(io_err)?.len();
        let end = offset.saturating_add(len).min(size);
        let mut buf = vec![0u8; end.saturating_sub(offset) as usize];
        file.read_exact_at(&mut buf, offset).map_err(io_err)?;
        Ok(buf)
    }

    fn spool_dir(&self) -> Option<PathBuf> {
        Some(self.root.clone())
    }

    fn put_file_deferred(&self, key: &str, tmp: &Path) -> Result<(), StorageError> {
        let path = self.path_of(key)?;
        let dir = match path.parent() {
            Some(d) => d.to_path_buf(),
            None => self.root.clone(),
        };
        if let Err(e) = self.create_dirs(&dir) {
            let _ = fs::remove_file(tmp);
            return Err(e);
        }
        let mut p = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        p.files.push((tmp.to_path_buf(), path));
        p.keys.insert(key.to_string());
        Ok(())
    }

    fn put_deferred(&self, key: &str, data: &[u8]) -> Result<(), StorageError> {
        let path = self.path_of(key)?;
        let dir = match path.parent() {
            Some(d) => d.to_path_buf(),
            None => self.root.clone(),
        };
        self.create_dirs(&dir)?;
        let tmp = self.write_temp(&dir, data, false)?;
        let mut p = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        p.files.push((tmp, path));
        p.keys.insert(key.to_string());
        Ok(())
    }

    /// Makes every pending blob durable: their contents synced, then renamed into place, then
    /// the names synced. A failure anywhere forgets every pending key (none is known present
    /// any more) and removes what this flush wrote, renamed or not: a `syncfs` error is never
    /// followed by a retry that would pass the data for durable, and the next backup writes
    /// those blobs again.
    fn flush(&self) -> Result<(), StorageError> {
        let mut p = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        if p.files.is_empty() {
            return Ok(());
        }
        let files = std::mem::take(&mut p.files);
        p.keys.clear();
        // `tag` names the sync for the failpoint that makes it fail (tests).
        let sync = |tag: &str, what: &'static str| -> Result<(), StorageError> {
            crate::failpoint::value("storage.local.fail_sync")
                .filter(|v| v == tag)
                .and_then(|_| crate::failpoint::once("storage.local.fail_sync"))
                .map_or(Ok(()), |_| Err(io::Error::from_raw_os_error(libc::EIO)))
                .and_then(|()| {
                    let dir = fs::File::open(&self.root)?;
                    nix::unistd::syncfs(&dir).map_err(io::Error::from)
                })
                .map_err(|source| StorageError::Io {
                    op: what,
                    path: self.root.clone(),
                    source,
                })
        };
        // What this flush wrote, the first `renamed` under their names, the rest as temp files.
        let discard = |renamed: usize| {
            for (k, (tmp, path)) in files.iter().enumerate() {
                let _ = fs::remove_file(if k < renamed { path } else { tmp });
            }
        };
        // Content first, then the names: a name never points at content not yet on disk.
        if let Err(e) = sync("data", "sync (syncfs) the data of") {
            discard(0);
            return Err(e);
        }
        for (k, (tmp, path)) in files.iter().enumerate() {
            if let Err(source) = fs::rename(tmp, path) {
                discard(k);
                return Err(StorageError::Io {
                    op: "rename into",
                    path: path.clone(),
                    source,
                });
            }
        }
        if let Err(e) = sync("names", "sync (syncfs) the names in") {
            discard(files.len());
            return Err(e);
        }
        Ok(())
    }

    fn exists(&self, key: &str) -> Result<bool, StorageError> {
        if self
            .pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .keys
            .contains(key)
        {
            return Ok(true);
        }
        let path = self.path_of(key)?;
        match fs::symlink_metadata(&path) {
            Ok(m) => Ok(m.is_file()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(source) => Err(StorageError::Io {
                op: "inspect",
                path,
                source,
            }),
        }
    }

    fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>, StorageError> {
        validate_prefix(prefix).map_err(|reason| StorageError::InvalidKey {
            key: prefix.to_string(),
            reason,
        })?;
        // Walk only the deepest directory the prefix names completely.
        let start = match prefix.rsplit_once('/') {
            Some((dirs, _)) => dirs.to_string(),
            None => String::new(),
        };
        let mut out = Vec::new();
        let mut stack = vec![start];
        while let Some(rel) = stack.pop() {
            let dir = if rel.is_empty() {
                self.root.clone()
            } else {
                self.root.join(&rel)
            };
            for entry in read_dir_if_exists(&dir)? {
                let name = entry.file_name();
                // Temporary files, and anything not named like a key, are not objects.
                let Some(name) = name.to_str() else { continue };
                if name.starts_with('.') {
                    continue;
                }
                let key = if rel.is_empty() {
                    name.to_string()
                } else {
                    format!("{rel}/{name}")
                };
                let metadata = match entry.metadata() {
                    Ok(m) => m,
                    // Deleted while we listed.
                    Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                    Err(source) => {
                        return Err(StorageError::Io {
                            op: "inspect",
                            path: entry.path(),
                            source,
                        })
                    }
                };
                if metadata.is_dir() {
                    let as_dir = format!("{key}/");
                    if as_dir.starts_with(prefix) || prefix.starts_with(&as_dir) {
                        stack.push(key);
                    }
                } else if metadata.is_file()
                    && key.starts_with(prefix)
                    && validate_key(&key).is_ok()
                {
                    out.push(ObjectInfo {
                        key,
                        size: metadata.len(),
                        last_modified: metadata.modified().ok().map(chrono::DateTime::from),
                    });
                }
            }
        }
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    fn delete(&self, key: &str) -> Result<(), StorageError> {
        let path = self.path_of(key)?;
        match fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(StorageError::Io {
                op: "remove",
                path,
                source,
            }),
        }
    }

    fn describe(&self) -> String {
        format!("local:{}", self.root.display())
    }

    fn available_bytes(&self) -> Result<Option<u64>, StorageError> {
        let dir = self.root.as_path();
        let st = nix::sys::statvfs::statvfs(dir).map_err(|errno| StorageError::Io {
            op: "statvfs",
            path: dir.to_path_buf(),
            source: io::Error::from(errno),
        })?;
        #[allow(clippy::useless_conversion)] // the field widths differ between platforms
        let bytes = u64::from(st.blocks_available()).saturating_mul(u64::from(st.fragment_size()));
        Ok(Some(bytes))
    }
}

fn read_dir_if_exists(dir: &Path) -> Result<Vec<fs::DirEntry>, StorageError> {
    let iter = match fs::read_dir(dir) {
        Ok(it) => it,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(StorageError::Io {
                op: "list",
                path: dir.to_path_buf(),
                source,
            })
        }
    };
    iter.collect::<Result<Vec<_>, _>>()
        .map_err(|source| StorageError::Io {
            op: "list",
            path: dir.to_path_buf(),
            source,
        })
}

fn sync_dir(dir: &Path) -> Result<(), StorageError> {
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|source| StorageError::Io {
            op: "fsync directory",
            path: dir.to_path_buf(),
            source,
        })
}
