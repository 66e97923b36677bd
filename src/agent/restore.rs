//! `WriteVolume`: the agent writes a HopsFS volume back from the repository's bucket. The head
//! sends the volume's entries (directories, files with the location of every unit, links: what
//! its index knows and the node does not); the agent fetches each unit with ranged reads, checks
//! it as the repository does ([`crate::repository::fetch`]: opened with the agent keys,
//! decompressed within its length, hashed against its id, a solo pack's whole unit hashed) and
//! writes the files beneath the volume. A replica's block and checksum file share one unit: it
//! is read once for both.
//!
//! What it writes is confined: the volume must be one of the agent's `--root`s, every path plain
//! and relative, every directory on the way created by the agent or already a directory (never
//! a link), files created new (never through a link), setuid and setgid never set, links leaving
//! the volume skipped. The files are synced once, with the volume's file system, at the end.

use std::io::{BufRead, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::proto::{self, Msg, S3Store, Stat, WireEntry, WireUnit};
use super::secrets::Secrets;
use super::upload::UploadError;
use super::volume::{plain, root_of};
use crate::repository::fetch::{Fetcher, Windows};
use crate::repository::index::{EntryKind, Location};
use crate::repository::S3Storage;

/// Whether the head is still there and quiet, while a write-back keeps the session's input
/// unread: a thread polls standard input (not reading it) and raises the flag when anything
/// comes — the end of the stream (hopsdrd or its ssh went away) or a message (a cancel). The
/// write stops at its next chunk, so that a resumed restore never races a stale agent.
pub struct HeadWatch {
    gone: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl HeadWatch {
    /// Watches standard input when `stdin` (the agent's real session), else never raises.
    pub fn start(stdin: bool) -> HeadWatch {
        let gone = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        if stdin {
            let flag = gone.clone();
            std::thread::spawn(move || {
                use std::os::fd::AsFd;
                let input = std::io::stdin();
                let mut fds = [nix::poll::PollFd::new(
                    input.as_fd(),
                    nix::poll::PollFlags::POLLIN,
                )];
                loop {
                    match nix::poll::poll(&mut fds, nix::poll::PollTimeout::NONE) {
                        Ok(n) if n > 0 => break,
                        Err(nix::errno::Errno::EINTR) | Ok(_) => continue,
                        Err(_) => break,
                    }
                }
                flag.store(true, std::sync::atomic::Ordering::SeqCst);
            });
        }
        HeadWatch { gone }
    }

    fn check(&self) -> Result<(), UploadError> {
        if self.gone.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(UploadError::of(
                "stopped: the head went away or sent a request in the middle of the write-back",
            ));
        }
        Ok(())
    }
}

use super::upload::PROGRESS_EVERY;

/// How a volume is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Writing {
    /// Into a cleared volume: every file is new.
    New,
    /// Again, after an attempt cut off: files written whole (recorded size and time, which is
    /// set last) are kept, anything else in a file's place replaced.
    Resume,
    /// Fetch and check every unit, write nothing.
    CheckOnly,
}

/// What a write-back wrote.
#[derive(Debug, Default)]
struct Totals {
    files: u64,
    dirs: u64,
    links: u64,
    bytes: u64,
    skipped_links: u64,
    kept: u64,
}

/// A file of a group being written from the same units.
struct Target {
    rel: String,
    /// `None` when only checking.
    file: Option<std::fs::File>,
    skip: u64,
    size: u64,
    written: u64,
    stat: Stat,
}

/// The volume being written.
struct Volume<'a> {
    root: PathBuf,
    fetcher: Fetcher<'a>,
    /// The directory last made sure of (a leaf directory's files come together).
    ready: Option<PathBuf>,
    /// Directories and their metadata, applied at the end (writing files changes their times).
    dirs: Vec<(PathBuf, Stat)>,
    root_user: bool,
    uid: u32,
    totals: Totals,
    req: u32,
    last_word: Instant,
    head: &'a HeadWatch,
    /// Fetch and check only; write nothing.
    check_only: bool,
    /// Keep what an earlier attempt wrote whole.
    resume: bool,
}

impl Volume<'_> {
    /// `rel` beneath the root, its parent directories made (see [`Self::make_dirs`]).
    fn place(&mut self, rel: &str) -> Result<PathBuf, UploadError> {
        if !plain(rel) {
            return Err(UploadError::of(format!(
                "{rel:?} is not a plain path inside the volume"
            )));
        }
        let full = self.root.join(rel);
        let parent = full.parent().expect("joined").to_path_buf();
        if self.ready.as_ref() != Some(&parent) {
            self.make_dirs(Path::new(rel).parent().unwrap_or(Path::new("")))?;
            self.ready = Some(parent);
        }
        Ok(full)
    }

    /// Every directory of `rel_dir` (plain, relative to the root): an existing directory (never
    /// a link), or created.
    fn make_dirs(&self, rel_dir: &Path) -> Result<PathBuf, UploadError> {
        let mut dir = self.root.clone();
        for c in rel_dir.components() {
            dir.push(c);
            match std::fs::symlink_metadata(&dir) {
                Ok(m) if m.file_type().is_dir() => {}
                Ok(_) => {
                    return Err(UploadError::at(
                        &dir,
                        "is in the way of a directory (not a directory)",
                    ))
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    std::fs::create_dir(&dir).map_err(|e| UploadError::at(&dir, e))?;
                }
                Err(e) => return Err(UploadError::at(&dir, e)),
            }
        }
        Ok(dir)
    }

    /// On a resume: whether the file at `full` was written whole by an earlier attempt (a
    /// regular file of `size` bytes with the time of `stat`, set after its last byte), so it is
    /// kept; else whatever is in its place (a part of it, a link) is removed, never followed.
    fn kept_or_cleared(&self, full: &Path, size: u64, stat: &Stat) -> Result<bool, UploadError> {
        use std::os::unix::fs::MetadataExt;
        match std::fs::symlink_metadata(full) {
            Ok(m) if m.file_type().is_file() && m.len() == size && m.mtime() == stat.mtime => {
                Ok(true)
            }
            Ok(m) if m.file_type().is_dir() => Err(UploadError::at(
                full,
                "is a directory where the backup has a file",
            )),
            Ok(_) => {
                std::fs::remove_file(full).map_err(|e| UploadError::at(full, e))?;
                Ok(false)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(UploadError::at(full, e)),
        }
    }

    /// Gives `path` (opened as `fd`, or a link when `None`) the owner of `stat`.
    fn own(
        &self,
        path: &Path,
        file: Option<&std::fs::File>,
        stat: &Stat,
    ) -> Result<(), UploadError> {
        use nix::unistd::{Gid, Uid};
        if !self.root_user {
            if stat.uid != self.uid {
                return Err(UploadError::at(
                    path,
                    format!(
                        "belongs to uid {} in the backup, and the agent runs as uid {}: run the agent as root or as that user",
                        stat.uid, self.uid
                    ),
                ));
            }
            return Ok(());
        }
        let (u, g) = (Some(Uid::from_raw(stat.uid)), Some(Gid::from_raw(stat.gid)));
        let done = match file {
            Some(f) => nix::unistd::fchown(f, u, g),
            None => nix::unistd::fchownat(
                nix::fcntl::AT_FDCWD,
                path,
                u,
                g,
                nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
            ),
        };
        done.map_err(|e| {
            UploadError::at(path, format!("giving it to {}:{}: {e}", stat.uid, stat.gid))
        })
    }

    /// Tells the head the write goes on, every [`PROGRESS_EVERY`].
    fn progress(&mut self, output: &mut dyn Write) -> Result<(), UploadError> {
        self.head.check()?;
        if self.last_word.elapsed() < PROGRESS_EVERY {
            return Ok(());
        }
        self.last_word = Instant::now();
        write(
            output,
            &Msg::Progress {
                req: self.req,
                files: self.totals.files,
                bytes: self.totals.bytes,
            },
        )
    }

    /// Writes a group of files made of the same units (a replica's block and checksum file, or
    /// one file), reading each unit once.
    fn write_group(
        &mut self,
        units: &[WireUnit],
        group: Vec<(String, u64, u64, Stat)>,
        output: &mut dyn Write,
    ) -> Result<(), UploadError> {
        let mut targets = Vec::with_capacity(group.len());
        for (rel, size, skip, stat) in group {
            let file = match self.check_only {
                true => None,
                false => {
                    let full = self.place(&rel)?;
                    if self.resume && self.kept_or_cleared(&full, size, &stat)? {
                        self.totals.kept += 1;
                        continue;
                    }
                    let f = std::fs::OpenOptions::new()
                        .write(true)
                        .create_new(true)
                        .mode(0o600)
                        .custom_flags(nix::fcntl::OFlag::O_NOFOLLOW.bits())
                        .open(&full)
                        .map_err(|e| UploadError::at(&full, e))?;
                    Some(f)
                }
            };
            targets.push(Target {
                rel,
                file,
                skip,
                size,
                written: 0,
                stat,
            });
        }
        if targets.is_empty() {
            return Ok(()); // all kept: nothing to read
        }
        let mut pos = 0u64;
        for u in units {
            let (id, loc) = location(u)?;
            let what = &targets[0].rel;
            let mut reader = self
                .fetcher
                .unit_reader(&id, loc, what)
                .map_err(|e| UploadError::of(e.to_string()))?;
            while let Some(chunk) = reader
                .next_chunk(&self.fetcher)
                .map_err(|e| UploadError::of(e.to_string()))?
            {
                let end = pos + chunk.len() as u64;
                for t in targets.iter_mut() {
                    let lo = t.skip.max(pos);
                    let hi = (t.skip + t.size).min(end);
                    if lo < hi {
                        let piece = &chunk[(lo - pos) as usize..(hi - pos) as usize];
                        if let Some(f) = t.file.as_mut() {
                            f.write_all(piece)
                                .map_err(|e| UploadError::at(&self.root.join(&t.rel), e))?;
                        }
                        t.written += piece.len() as u64;
                        self.totals.bytes += piece.len() as u64;
                    }
                }
                pos = end;
                self.progress(output)?;
                // Tests: the agent holds in the middle of a write until the head goes away.
                if crate::failpoint::value("agent.write_pause").as_deref() == Some("pause") {
                    if let Some(dir) = std::env::var_os("HOPSDR_FAILPOINT_DIR") {
                        let _ =
                            std::fs::write(Path::new(&dir).join("agent.write_pause.reached"), b"");
                    }
                    loop {
                        self.head.check()?;
                        std::thread::sleep(Duration::from_millis(20));
                    }
                }
            }
        }
        for t in targets {
            let full = self.root.join(&t.rel);
            if t.written != t.size {
                return Err(UploadError::at(
                    &full,
                    format!("{} bytes in its units, {} recorded", t.written, t.size),
                ));
            }
            if let Some(f) = &t.file {
                self.own(&full, Some(f), &t.stat)?;
                set_mode(f, &full, t.stat.mode)?;
                let mtime = std::time::UNIX_EPOCH + Duration::from_secs(t.stat.mtime.max(0) as u64);
                f.set_times(
                    std::fs::FileTimes::new()
                        .set_modified(mtime)
                        .set_accessed(mtime),
                )
                .map_err(|e| UploadError::at(&full, e))?;
            }
            self.totals.files += 1;
        }
        Ok(())
    }
}

fn set_mode(f: &std::fs::File, path: &Path, mode: u32) -> Result<(), UploadError> {
    use std::os::unix::fs::PermissionsExt;
    // Never setuid or setgid.
    f.set_permissions(std::fs::Permissions::from_mode(mode & 0o1777))
        .map_err(|e| UploadError::at(path, e))
}

/// A unit's id and location as the head sent them.
fn location(u: &WireUnit) -> Result<([u8; 32], Location), UploadError> {
    let bad = || {
        UploadError::of(format!(
            "the head sent a unit location that is not valid: {u:?}"
        ))
    };
    let id = *blake3::Hash::from_hex(&u.id).map_err(|_| bad())?.as_bytes();
    let mut pack = [0u8; 16];
    if u.pack.len() != 32 {
        return Err(bad());
    }
    for (i, b) in pack.iter_mut().enumerate() {
        *b = u8::from_str_radix(&u.pack[2 * i..2 * i + 2], 16).map_err(|_| bad())?;
    }
    let kind = match EntryKind::from_code(u.kind) {
        Some(k @ (EntryKind::Data | EntryKind::Unit)) => k,
        _ => return Err(bad()),
    };
    Ok((
        id,
        Location {
            pack,
            kind,
            offset: u.offset,
            stored_len: u.stored,
            raw_len: u.raw,
        },
    ))
}

fn write(output: &mut dyn Write, msg: &Msg) -> Result<(), UploadError> {
    proto::write_msg(output, msg).map_err(UploadError::of)
}

/// Writes the entries `list` holds (JSON lines, see [`WireEntry`]) beneath `volume`, one of
/// `roots`, fetching from `store`; returns the closing message.
#[allow(clippy::too_many_arguments)]
pub fn write_volume(
    head: &HeadWatch,
    req: u32,
    roots: &[PathBuf],
    volume: &str,
    list: std::fs::File,
    chunk_size: usize,
    writing: Writing,
    store: Option<&S3Store>,
    secrets: &Secrets,
    output: &mut dyn Write,
) -> Result<Msg, UploadError> {
    let root = root_of(roots, volume)?;
    let check_only = writing == Writing::CheckOnly;
    let Some(store) = store else {
        return Err(UploadError::of(
            "writing a volume back needs the repository's bucket (the head sent none)",
        ));
    };
    let storage =
        S3Storage::new(&super::probe::s3_options(store, secrets)).map_err(UploadError::of)?;
    let windows = std::sync::Mutex::new(Windows::default());
    let uid = nix::unistd::getuid().as_raw();
    let mut v = Volume {
        root: root.clone(),
        fetcher: Fetcher {
            storage: &storage,
            keys: secrets
                .keys
                .as_ref()
                .map(|k| k as &dyn crate::repository::fetch::BlobKeys),
            windows: Some(&windows),
            chunk_size,
        },
        ready: None,
        dirs: Vec::new(),
        root_user: uid == 0,
        uid,
        totals: Totals::default(),
        req,
        last_word: Instant::now(),
        head,
        check_only,
        resume: writing == Writing::Resume,
    };
    let mut r = std::io::BufReader::with_capacity(1 << 20, list);
    let mut line = String::new();
    // Files waiting to be written from the same units.
    let mut group: Vec<(String, u64, u64, Stat)> = Vec::new();
    let mut group_units: Vec<WireUnit> = Vec::new();
    loop {
        line.clear();
        let n = r
            .read_line(&mut line)
            .map_err(|e| UploadError::of(format!("reading back the entries: {e}")))?;
        let entry = match n {
            0 => None,
            _ => Some(
                serde_json::from_str::<WireEntry>(line.trim_end()).map_err(|e| {
                    UploadError::of(format!("the head sent an entry that is not valid: {e}"))
                })?,
            ),
        };
        // The group goes on while files share its units.
        if let Some(WireEntry::File { units, .. }) = &entry {
            if !group.is_empty() && !units.is_empty() && *units == group_units {
                let Some(WireEntry::File {
                    path,
                    size,
                    skip,
                    stat,
                    ..
                }) = entry
                else {
                    unreachable!("matched")
                };
                group.push((path, size, skip, stat));
                continue;
            }
        }
        if !group.is_empty() {
            let units = std::mem::take(&mut group_units);
            v.write_group(&units, std::mem::take(&mut group), output)?;
        }
        match entry {
            None => break,
            Some(WireEntry::File {
                path,
                size,
                skip,
                stat,
                units,
            }) => {
                group.push((path, size, skip, stat));
                group_units = units;
            }
            Some(WireEntry::Dir { path, stat }) => {
                if !plain(&path) {
                    return Err(UploadError::of(format!(
                        "{path:?} is not a plain path inside the volume"
                    )));
                }
                if !check_only {
                    let dir = v.make_dirs(Path::new(&path))?;
                    v.dirs.push((dir, stat));
                }
                v.totals.dirs += 1;
            }
            Some(WireEntry::Link { path, target, stat }) => {
                if crate::repository::symlink_escapes(&path, &target) {
                    tracing::warn!("link {path} -> {target} leads outside the volume: skipped");
                    v.totals.skipped_links += 1;
                    continue;
                }
                if !check_only {
                    let full = v.place(&path)?;
                    if v.resume && std::fs::symlink_metadata(&full).is_ok() {
                        // (A link is remade: cheaper than comparing it.)
                        v.kept_or_cleared(&full, u64::MAX, &stat)?;
                    }
                    std::os::unix::fs::symlink(&target, &full)
                        .map_err(|e| UploadError::at(&full, e))?;
                    v.own(&full, None, &stat)?;
                }
                v.totals.links += 1;
            }
        }
        v.progress(output)?;
    }
    // Directories last, deepest first: their times are the backup's.
    for (dir, stat) in v.dirs.iter().rev() {
        let f = std::fs::File::open(dir).map_err(|e| UploadError::at(dir, e))?;
        v.own(dir, Some(&f), stat)?;
        set_mode(&f, dir, stat.mode)?;
        let mtime = std::time::UNIX_EPOCH + Duration::from_secs(stat.mtime.max(0) as u64);
        f.set_times(
            std::fs::FileTimes::new()
                .set_modified(mtime)
                .set_accessed(mtime),
        )
        .map_err(|e| UploadError::at(dir, e))?;
    }
    if !check_only {
        let fs = std::fs::File::open(&root).map_err(|e| UploadError::at(&root, e))?;
        nix::unistd::syncfs(&fs).map_err(|e| UploadError::at(&root, format!("syncing: {e}")))?;
    }
    let t = &v.totals;
    Ok(Msg::VolumeWritten {
        req,
        files: t.files,
        dirs: t.dirs,
        links: t.links,
        bytes: t.bytes,
        skipped_links: t.skipped_links,
        kept: t.kept,
        paced_ms: super::limits::paced_ms(),
    })
}
