//! The `hopsfs` backup component: the blocks of every HopsFS datanode volume, consistent with
//! the RonDB backup, incremental, with a coverage check.
//!
//! - **Fence.** Before START BACKUP, each volume gets an empty pin directory
//!   `<volume>/hopsdr-pin/<backup-id>/` (on the same filesystem, outside the tree the datanode
//!   scans; older pins, e.g. left by a crash, are removed). Right after START BACKUP returns
//!   (the RonDB consistency point), every volume is pinned on every datanode in parallel with
//!   hardlinks: a block HopsFS deletes afterwards keeps its data in the pin. With no block in
//!   the repository yet, the whole `current/` tree is linked (`cp -al`); otherwise the live
//!   `current/` is listed and only what the repository lacks is linked (`cp -al --parents`, fed
//!   a NUL-separated list by `xargs -0`): a finalized replica already stored needs no pin (the
//!   blocks already stored, [`KnownBlocks`], are read from the previous backup since the job
//!   started, and awaited only after the live listing, which their read overlaps; the check is
//!   in memory). The seconds from the consistency point to the last pin are the fence window. Pins
//!   are removed after the commit, off the backup's path, and on every failure path.
//! - **Copy.** From the pin, at leisure: VERSION files, the directory structure (from the
//!   fence's listing when only new files were pinned) and every finalized block not already in
//!   the repository (same block pool, id, genstamp, length, checksum file length) stream as tar
//!   into `hopsfs/<datanode>/vol<i>/current/`; blocks already stored are listed in the manifest from
//!   the previous backup's entries without a transfer, so every backup restores on its own.
//!   Replicas in `rbw/` (being written or appended) are recorded and stored as found, never
//!   deduplicated; they count as captured only when their genstamp and length are the ones the
//!   backed-up metadata references.
//! - **Coverage.** The blocks the backed-up metadata references (a pluggable source) minus the
//!   blocks captured, both in temporary files ([`super::coverage`]): more than zero makes the
//!   backup `partial`, with the missing ids listed.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use super::coverage::{Captured, CapturedKey};
use super::known::{KnownBlocks, Pending, Stored};
use super::recorder::{all_or_first_error, Recorder, Remote, StoppableTask};
use super::replicas;
use super::tarstream::{self, TarStreamError};
use super::via_agent::AgentRun;
use crate::agent::proto::{Job, Role};
use crate::cluster::agent::{Request, Session};
use crate::cluster::hopsfs::{self, Kind};
use crate::cluster::node::{Node, NodeError};
use crate::config::{HopsfsSettings, SshConfig};
use crate::ids::BackupId;
use crate::repository::{BackupWriter, FileMeta, KnownReplica, RepoError, UnitParts};

pub use crate::cluster::hopsfs::PIN_DIR;

/// Why the HopsFS component failed.
#[derive(Debug, thiserror::Error)]
pub enum HopsfsError {
    #[error(transparent)]
    Node(#[from] NodeError),
    #[error("cloud: {0}")]
    Cloud(String),
    #[error("datanode {datanode}, volume {volume}: {reason}")]
    Listing {
        datanode: String,
        volume: String,
        reason: String,
    },
    #[error("copying datanode {datanode}, volume {volume} failed: {source}")]
    Collect {
        datanode: String,
        volume: String,
        source: Box<TarStreamError>,
    },
    #[error("copying datanode {datanode}, volume {volume} failed: {cause} (the stream ended early: {stream})")]
    CollectCut {
        datanode: String,
        volume: String,
        cause: Box<NodeError>,
        stream: Box<TarStreamError>,
    },
    #[error(
        "storing datanode {datanode}, volume {volume} through the node's agent failed: {source}"
    )]
    Agent {
        datanode: String,
        volume: String,
        source: Box<super::via_agent::ViaAgentError>,
    },
    #[error("the referenced-blocks source failed: {0}")]
    Referenced(String),
    #[error("the coverage check's temporary files: {0}: check the space and permissions of the temporary directory")]
    Coverage(String),
    #[error("one replica per block: {0}")]
    Replicas(#[from] replicas::ResolveError),
    #[error(transparent)]
    Repository(#[from] RepoError),
}

/// A datanode and its volumes.
#[derive(Debug, Clone)]
pub struct Datanode {
    pub name: String,
    pub node: Node,
    pub volumes: Vec<String>,
}

/// The configured datanodes.
pub fn datanodes(s: &HopsfsSettings, ssh: &SshConfig) -> Vec<Datanode> {
    s.datanodes
        .iter()
        .map(|d| Datanode {
            name: d.name.clone(),
            node: Node::at(format!("datanode {}", d.name), &d.host, ssh),
            volumes: d.volumes.iter().map(|v| v.display().to_string()).collect(),
        })
        .collect()
}

fn argv(a: &[&str]) -> Vec<String> {
    a.iter().map(|s| s.to_string()).collect()
}

fn pin_root(volume: &str, id: &BackupId) -> String {
    format!("{volume}/{PIN_DIR}/{id}")
}

/// Runs `f` for every volume of every datanode, one thread per volume; the results in the
/// order of `dns` and their volumes.
fn per_volume<T: Send>(dns: &[Datanode], f: impl Fn(&Datanode, &str) -> T + Sync) -> Vec<T> {
    std::thread::scope(|scope| {
        let f = &f;
        let handles: Vec<_> = dns
            .iter()
            .flat_map(|d| d.volumes.iter().map(move |v| (d, v)))
            .map(|(d, v)| scope.spawn(move || f(d, v)))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
            .collect()
    })
}

/// Removes every pin on every volume (none is in use: one job at a time) and makes this
/// backup's empty pin directory on each. Fails on a datanode that cannot be reached: every
/// datanode must be copied, so the backup cannot go on.
pub fn prepare_pins(
    dns: &[Datanode],
    id: &BackupId,
    timeout: Duration,
    cancel: &CancellationToken,
) -> Result<(), HopsfsError> {
    for r in per_volume(dns, |d, v| -> Result<(), NodeError> {
        let dir = format!("{v}/{PIN_DIR}");
        d.node
            .run(&argv(&["rm", "-rf", "--", &dir]), timeout, cancel)?;
        d.node.run(
            &argv(&["mkdir", "-p", "--", &pin_root(v, id)]),
            timeout,
            cancel,
        )?;
        Ok(())
    }) {
        r?;
    }
    Ok(())
}

/// Removes pins, logging instead of failing (after a backup, at daemon start).
pub fn remove_pins_logged(dns: &[Datanode], timeout: Duration) {
    let cancel = CancellationToken::new();
    per_volume(dns, |d, v| {
        let dir = format!("{v}/{PIN_DIR}");
        if let Err(e) = d
            .node
            .run(&argv(&["rm", "-rf", "--", &dir]), timeout, &cancel)
        {
            tracing::warn!(step = "hopsfs", node = %d.name, "failed to remove the pins in {dir}: {e}");
        }
    });
}

/// A volume listing ([`hopsfs::find_argv`] output), spooled to a temporary file on the head
/// node as it arrives, read back one directory at a time: millions of files cost disk, not
/// memory.
#[derive(Debug)]
pub struct Listing {
    file: std::fs::File,
}

impl Listing {
    /// Lists `root` on `d` (`with_root`: the root itself first, with an empty path) into a
    /// spool file. `live`: the tree is HopsFS's own, which deletes files as `find` walks it; a
    /// file or directory below `root` that vanished between its directory's read and its stat
    /// is not listed (as if deleted a moment earlier), anything else is an error.
    fn take(
        d: &Datanode,
        v: &str,
        root: &str,
        with_root: bool,
        live: bool,
        timeout: Duration,
        cancel: &CancellationToken,
    ) -> Result<Listing, HopsfsError> {
        let mut file = tempfile::tempfile().map_err(|e| HopsfsError::Listing {
            datanode: d.name.clone(),
            volume: v.to_string(),
            reason: format!("no temporary file for the listing: {e}"),
        })?;
        let argv = hopsfs::find_argv(root, with_root);
        let (status, stderr) = d.node.stream(&argv, timeout, cancel, |rd| {
            std::io::copy(rd, &mut std::io::BufWriter::new(&mut file)).map(|_| ())
        })?;
        let vanished = live && status.code() == Some(1) && vanished_below(&stderr, root);
        if vanished {
            tracing::info!(step = "hopsfs", node = %d.name, volume = %v, "files deleted by HopsFS while the live tree was listed: {}", stderr.trim());
        }
        if !status.success() && !vanished {
            return Err(NodeError::Failed {
                node: d.node.name.clone(),
                command: crate::cluster::node::remote_command_line(&argv),
                status: status.to_string(),
                stderr,
            }
            .into());
        }
        use std::io::Seek;
        file.rewind().map_err(|e| HopsfsError::Listing {
            datanode: d.name.clone(),
            volume: v.to_string(),
            reason: e.to_string(),
        })?;
        Ok(Listing { file })
    }

    /// Calls `f` with each run of consecutive entries in one directory (a leaf directory's
    /// files come together), paths with `strip` removed from their start (entries outside it
    /// skipped).
    fn each_dir<E: From<HopsfsError>>(
        &mut self,
        d: &Datanode,
        v: &str,
        strip: &str,
        mut f: impl FnMut(&[hopsfs::Listed]) -> Result<(), E>,
    ) -> Result<(), E> {
        use std::io::{BufRead, Seek};
        let bad = |reason: String| {
            E::from(HopsfsError::Listing {
                datanode: d.name.clone(),
                volume: v.to_string(),
                reason,
            })
        };
        self.file.rewind().map_err(|e| bad(e.to_string()))?;
        let mut r = std::io::BufReader::with_capacity(1 << 20, &self.file);
        let mut line = Vec::new();
        let mut group: Vec<hopsfs::Listed> = Vec::new();
        let mut dir = String::new();
        loop {
            line.clear();
            if r.read_until(b'\n', &mut line)
                .map_err(|e| bad(e.to_string()))?
                == 0
            {
                break;
            }
            let text = String::from_utf8_lossy(&line);
            for mut e in hopsfs::parse_listing(&text).map_err(bad)? {
                if !strip.is_empty() {
                    match e.path.strip_prefix(strip) {
                        Some(rest) => e.path = rest.to_string(),
                        None => continue,
                    }
                }
                let parent = e.path.rsplit_once('/').map(|x| x.0).unwrap_or("");
                if parent != dir && !group.is_empty() {
                    f(&group)?;
                    group.clear();
                }
                if parent != dir {
                    dir = parent.to_string();
                }
                group.push(e);
            }
        }
        if !group.is_empty() {
            f(&group)?;
        }
        Ok(())
    }
}

/// What the fence left for the copy.
#[derive(Debug)]
pub struct Fence {
    /// When the last volume was pinned.
    pub pinned_at: DateTime<Utc>,
    /// Per volume (in the order of the datanodes and their volumes): the listing of the live
    /// `current/` taken at the fence (root first, with an empty path) when only the files not
    /// already in the repository were pinned; `None` when the whole tree was.
    live: Vec<Option<Listing>>,
}

/// A NUL-separated list of paths, spooled to a temporary file (for `xargs -0`, `tar -T -`).
struct PathList {
    file: std::io::BufWriter<std::fs::File>,
    count: u64,
}

impl PathList {
    fn new() -> std::io::Result<PathList> {
        Ok(PathList {
            file: std::io::BufWriter::new(tempfile::tempfile()?),
            count: 0,
        })
    }

    fn push(&mut self, prefix: &str, path: &str) -> std::io::Result<()> {
        use std::io::Write;
        self.file.write_all(prefix.as_bytes())?;
        self.file.write_all(path.as_bytes())?;
        self.file.write_all(&[0])?;
        self.count += 1;
        Ok(())
    }

    /// The list's file, from its start.
    fn into_file(self) -> std::io::Result<std::fs::File> {
        use std::io::Seek;
        let mut f = self.file.into_inner().map_err(|e| e.into_error())?;
        f.rewind()?;
        Ok(f)
    }

    /// The list, from its start, as a command's standard input.
    fn producer(self) -> std::io::Result<crate::cluster::node::Producer> {
        let mut f = self.into_file()?;
        Ok(Box::new(move |w: &mut dyn std::io::Write| {
            std::io::copy(&mut f, w).map(|_| ())
        }))
    }
}

/// Pins every volume of every datanode in parallel (their pin directories made by
/// [`prepare_pins`]); returns when the last pin is done.
///
/// When no earlier backup stored blocks, the whole `current/` tree is linked (`cp -al`).
/// Otherwise the live tree is listed (while the stored blocks are still being read), then only
/// what the repository lacks is linked (`cp -al --parents` fed by `xargs -0`): a finalized
/// replica already stored needs no pin, its data is in the repository.
/// Files HopsFS deletes while they are linked vanish under `cp`; anything else is an error. A
/// vanished block the metadata still references shows in the coverage check.
pub fn pin(
    dns: &[Datanode],
    id: &BackupId,
    known: &Pending,
    timeout: Duration,
    cancel: &CancellationToken,
) -> Result<Fence, HopsfsError> {
    let results = per_volume(dns, |d, v| -> Result<_, HopsfsError> {
        let root = pin_root(v, id);
        let check = |cp: &[String], status: Option<i32>, stderr: String| {
            if status == Some(0) {
                return Ok(());
            }
            if !vanished_only(&stderr) {
                return Err(NodeError::Failed {
                    node: d.node.name.clone(),
                    command: crate::cluster::node::remote_command_line(cp),
                    status: format!("{status:?}"),
                    stderr,
                });
            }
            tracing::warn!(step = "hopsfs", node = %d.name, "files vanished while pinning {v}: {}", stderr.trim());
            Ok(())
        };
        if !known.any() {
            let cp = argv(&[
                "cp",
                "-al",
                "--",
                &format!("{v}/current"),
                &format!("{root}/current"),
            ]);
            let out = d.node.run_status(&cp, timeout, cancel)?;
            check(&cp, out.status, out.stderr)?;
            return Ok(None);
        }
        let mut live = Listing::take(d, v, &format!("{v}/current"), true, true, timeout, cancel)?;
        let known = known.get();
        let io = |e: std::io::Error| HopsfsError::Listing {
            datanode: d.name.clone(),
            volume: v.to_string(),
            reason: format!("spooling the list of files to pin: {e}"),
        };
        let mut list = PathList::new().map_err(io)?;
        live.each_dir(d, v, "", |group| {
            let replicas = hopsfs::replicas(group);
            let stored: HashSet<&str> = replicas
                .iter()
                .filter(|r| known.contains(r))
                .flat_map(|r| [r.block_path.as_str(), r.meta_path.as_str()])
                .collect();
            for e in group {
                if matches!(e.kind, Kind::File | Kind::Symlink) && !stored.contains(e.path.as_str())
                {
                    list.push("current/", &e.path).map_err(io)?;
                }
            }
            Ok::<_, HopsfsError>(())
        })?;
        if list.count > 0 {
            let cp = argv(&[
                "env",
                "-C",
                v,
                "xargs",
                "-0",
                "-r",
                "cp",
                "-al",
                "--parents",
                "-t",
                &root,
                "--",
            ]);
            let (status, stderr) = d.node.stream_with_producer(
                &cp,
                Some(list.producer().map_err(io)?),
                timeout,
                cancel,
                |r| std::io::copy(r, &mut std::io::sink()).map(|_| ()),
            )?;
            check(&cp, status.code(), stderr)?;
        }
        Ok(Some(live))
    });
    let live = results.into_iter().collect::<Result<Vec<_>, _>>()?;
    Ok(Fence {
        pinned_at: Utc::now(),
        live,
    })
}

/// True when every error line of `cp` is about a file that vanished while it ran.
pub fn vanished_only(stderr: &str) -> bool {
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    !lines.is_empty()
        && lines
            .iter()
            .all(|l| l.ends_with("No such file or directory"))
}

/// True when every error line of `find` is about a file or directory strictly below `root` that
/// vanished while it ran (never `root` itself: a volume that is gone is an error).
pub fn vanished_below(stderr: &str, root: &str) -> bool {
    let below = format!("{}/", root.trim_end_matches('/'));
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    !lines.is_empty()
        && lines
            .iter()
            .all(|l| l.ends_with("No such file or directory") && l.contains(&below))
}

/// True when every error line of `tar -c` says a file changed as it was read.
pub fn changed_only(stderr: &str) -> bool {
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    !lines.is_empty()
        && lines
            .iter()
            .all(|l| l.ends_with(": file changed as we read it"))
}

/// What the copy captured.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CopyTotals {
    pub blocks: u64,
    pub blocks_new: u64,
    pub bytes_new: u64,
    pub rbw_replicas: Vec<String>,
    /// New finalized replicas recorded with the unit of another datanode's replica of the
    /// same block (one replica per block), and their block bytes: not read.
    pub replicas_shared: u64,
    pub bytes_shared: u64,
}

fn file_meta(e: &hopsfs::Listed) -> FileMeta {
    FileMeta {
        mode: e.mode,
        mtime: e.mtime,
        uid: e.uid,
        gid: e.gid,
    }
}

/// Steps a volume's walk sends to the writer's thread at a time.
const WALK_BATCH: usize = 1024;
/// Batches a walk may have waiting for the writer.
const WALK_QUEUE: usize = 8;

/// One thing the walk of a volume found for the writer, in the listing's order.
enum Step {
    Dir(String, FileMeta),
    /// A replica the repository holds: recorded without a transfer.
    Known(CapturedKey, KnownReplica),
    /// A replica sent from the pin: captured (its files are in the volume's list).
    New(CapturedKey),
}

/// What a volume's walk sends to the writer's thread.
enum Walked {
    Steps(Vec<Step>),
    /// The walk is over: the files to send from the pin, their bytes, and the volume's totals.
    Done(PathList, u64, CopyTotals),
}

/// Why a walk stopped early.
enum WalkStop {
    Failed(HopsfsError),
    /// The writer's thread stopped listening (it failed elsewhere).
    WriterGone,
}

impl From<HopsfsError> for WalkStop {
    fn from(e: HopsfsError) -> Self {
        WalkStop::Failed(e)
    }
}

impl From<RepoError> for WalkStop {
    fn from(e: RepoError) -> Self {
        WalkStop::Failed(e.into())
    }
}

/// A pinned volume to walk.
struct PinnedVolume<'a> {
    d: &'a Datanode,
    /// The volume's place among all the backup's volumes.
    at: u32,
    /// The volume's place among its datanode's (`vol<index + 1>` in the repository).
    index: usize,
    v: &'a str,
    /// The fence's live listing, when only what the repository lacked was pinned.
    live: Option<Listing>,
}

impl PinnedVolume<'_> {
    fn prefix(&self) -> String {
        format!("hopsfs/{}/vol{}", self.d.name, self.index + 1)
    }
}

/// Copies every pinned volume into `writer`; returns the blocks captured.
///
/// Each volume is read one directory at a time from a listing spooled to disk: the live
/// listing of the fence when only what the repository lacked was pinned (the stored replicas
/// are listed from the repository, the rest sent from the pin if it was pinned), else the
/// listing of the pin. Directories are recorded from the listing; files stream as one tar from
/// the pin, each finalized replica's checksum file right before its block (stored as one unit).
///
/// The volumes are walked on threads of their own, a few ahead of the writer (parsing, replica
/// grouping, the known-blocks lookup and the records of known replicas cost per listed file),
/// and handed to the writer's thread in order through short queues, so memory stays bounded.
#[allow(clippy::too_many_arguments)]
pub fn copy<'d>(
    dns: &'d [Datanode],
    id: &BackupId,
    fence: Fence,
    known: &KnownBlocks,
    writer: &mut BackupWriter,
    agents: Option<&AgentRun<'_>>,
    timeout: Duration,
    cancel: &CancellationToken,
) -> Result<(Captured, CopyTotals), HopsfsError> {
    let mut captured =
        Captured::new().map_err(|e| HopsfsError::Coverage(format!("creating them: {e}")))?;
    let spool = |e: std::io::Error| HopsfsError::Coverage(format!("writing them: {e}"));
    let streams = writer.keeps_streams()?;
    let mut lives = fence.live.into_iter();
    let mut volumes = Vec::new();
    // Per volume: its datanode's place in `dns`.
    let mut datanode_of = Vec::new();
    for (di, d) in dns.iter().enumerate() {
        for (index, v) in d.volumes.iter().enumerate() {
            let live = lives.next().flatten();
            let at = volumes.len() as u32;
            volumes.push(PinnedVolume {
                d,
                at,
                index,
                v,
                live,
            });
            datanode_of.push(di);
        }
    }
    // One replica per block: format 3 records a replica with another's unit.
    let holders = if streams {
        Some(crate::placement::Holders::new().map_err(replicas::ResolveError::Io)?)
    } else {
        None
    };
    let unit_max = writer.max_unit_len();
    let mut loads = vec![0u64; dns.len()];
    let ahead = std::thread::available_parallelism()
        .map_or(2, |n| n.get())
        .clamp(2, 8);
    let mut totals = CopyTotals::default();
    // The volumes' lists (one per volume), sent once every volume is walked and one holder of
    // each block chosen: by the agents, all datanodes at once, or through hopsdrd in turn.
    let mut uploads: Vec<Upload<'d>> = Vec::new();
    std::thread::scope(|scope| {
        // Walks still running when the writer fails stop at their next step.
        let stop = cancel.child_token();
        let _stop_walks = stop.clone().drop_guard();
        let spawn = |vol: PinnedVolume<'d>| {
            let (tx, rx) = std::sync::mpsc::sync_channel(WALK_QUEUE);
            let place = (vol.d, vol.index, vol.v, vol.prefix());
            let stop = stop.clone();
            let holders = holders.as_ref().map(|h| (h, unit_max));
            scope.spawn(move || {
                if let Err(WalkStop::Failed(e)) =
                    walk_volume(vol, id, known, holders, streams, timeout, &stop, &tx)
                {
                    let _ = tx.send(Err(e));
                }
            });
            (place, rx)
        };
        let mut pending = volumes.into_iter();
        let mut walks: std::collections::VecDeque<_> =
            pending.by_ref().take(ahead).map(spawn).collect();
        while let Some(((d, _, v, prefix), rx)) = walks.pop_front() {
            walks.extend(pending.next().map(spawn));
            loop {
                match rx.recv() {
                    Ok(Ok(Walked::Steps(steps))) => {
                        for step in steps {
                            match step {
                                Step::Dir(path, meta) => writer.add_dir(&path, meta)?,
                                Step::Known(key, replica) => {
                                    captured.insert_key(key).map_err(spool)?;
                                    writer.add_known_replica(replica)?;
                                }
                                Step::New(key) => captured.insert_key(key).map_err(spool)?,
                            }
                        }
                    }
                    Ok(Ok(Walked::Done(list, bytes, t))) => {
                        let di = datanode_of[uploads.len()];
                        loads[di] += bytes;
                        uploads.push(Upload { d, v, prefix, list });
                        totals.blocks += t.blocks;
                        totals.blocks_new += t.blocks_new;
                        totals.bytes_new += t.bytes_new;
                        totals.rbw_replicas.extend(t.rbw_replicas);
                        tracing::info!(step = "hopsfs", node = %d.name, volume = %v, "volume walked");
                        break;
                    }
                    Ok(Err(e)) => return Err(e),
                    Err(_) => {
                        return Err(HopsfsError::Listing {
                            datanode: d.name.clone(),
                            volume: v.to_string(),
                            reason: "the walk of the volume stopped without a result".into(),
                        })
                    }
                }
            }
        }
        Ok(())
    })?;
    let followers = match holders {
        Some(holders) => {
            let names: Vec<String> = dns.iter().map(|d| d.name.clone()).collect();
            let f = holders
                .choose(&datanode_of, &names, &mut loads, |c| {
                    let list = &mut uploads[c.volume as usize].list;
                    list.push("current/", &c.meta_path)?;
                    list.push("current/", &c.block_path)
                })
                .map_err(replicas::ResolveError::Io)?;
            tracing::info!(step = "hopsfs", replicas_shared = f.count(), bytes = ?loads, "one replica per block chosen: bytes each datanode sends");
            Some(f)
        }
        None => None,
    };
    let units = match &followers {
        Some(f) if f.count() > 0 => {
            let units = replicas::Units::new().map_err(replicas::ResolveError::Io)?;
            writer.set_replica_sink(Some(units.sink()));
            Some(units)
        }
        _ => None,
    };
    let sent = send(uploads, id, writer, agents, timeout, cancel);
    writer.set_replica_sink(None);
    sent?;
    if let (Some(followers), Some(units)) = (followers, units) {
        totals.replicas_shared = followers.count();
        totals.bytes_shared = followers.bytes();
        let prefixes: Vec<String> = dns
            .iter()
            .flat_map(|d| (0..d.volumes.len()).map(|i| format!("hopsfs/{}/vol{}", d.name, i + 1)))
            .collect();
        replicas::resolve::<HopsfsError>(followers, units, |c, unit| {
            let prefix = &prefixes[c.volume as usize];
            let block_path = [prefix, "/current/", &c.block_path].concat();
            let meta_path = [prefix, "/current/", &c.meta_path].concat();
            let parts = UnitParts {
                unit,
                len: c.len,
                meta_len: c.meta_len,
                block_meta: c.block_meta,
                meta_meta: c.meta_meta,
            };
            writer.add_known_replica(KnownReplica::unit(
                streams,
                &block_path,
                &meta_path,
                parts,
            )?)?;
            Ok(())
        })?;
        crate::failpoint::hit("backup.hopsfs.replicas_shared", cancel);
    }
    Ok((captured, totals))
}

/// Sends every volume's list: by the datanodes' agents, all at once, or from the pins through
/// hopsdrd, one volume after the other.
fn send(
    uploads: Vec<Upload<'_>>,
    id: &BackupId,
    writer: &mut BackupWriter,
    agents: Option<&AgentRun<'_>>,
    timeout: Duration,
    cancel: &CancellationToken,
) -> Result<(), HopsfsError> {
    let uploads = uploads.into_iter().filter(|u| u.list.count > 0);
    match agents {
        Some(run) => through_agents(run, uploads.collect(), id, writer, cancel),
        None => {
            for u in uploads {
                let root = pin_root(u.v, id);
                send_from_pin(u.d, u.v, &root, &u.prefix, u.list, writer, timeout, cancel)?;
                tracing::info!(step = "hopsfs", node = %u.d.name, volume = %u.v, "volume copied");
            }
            Ok(())
        }
    }
}

/// A volume's files for its datanode's agent to store.
struct Upload<'d> {
    d: &'d Datanode,
    v: &'d str,
    prefix: String,
    list: PathList,
}

/// Has every datanode's agent store its volumes' lists, all datanodes at once (each on a thread
/// of its own, its volumes in turn), `writer` kept on this thread. The first agent to fail stops
/// the others and is the error returned.
fn through_agents(
    run: &AgentRun<'_>,
    uploads: Vec<Upload<'_>>,
    id: &BackupId,
    writer: &mut BackupWriter,
    cancel: &CancellationToken,
) -> Result<(), HopsfsError> {
    let mut by_datanode: Vec<(&Datanode, Vec<Upload<'_>>)> = Vec::new();
    for u in uploads {
        match by_datanode.last_mut() {
            Some((d, list)) if d.name == u.d.name => list.push(u),
            _ => by_datanode.push((u.d, vec![u])),
        }
    }
    let tasks: Vec<StoppableTask<'_, (), HopsfsError>> = by_datanode
        .into_iter()
        .map(|(d, volumes)| {
            Box::new(move |rec: &mut Remote, stop: &CancellationToken| {
                store_datanode(run, d, volumes, id, rec, stop)
            }) as StoppableTask<'_, (), HopsfsError>
        })
        .collect();
    all_or_first_error(writer, cancel, tasks).map(|_| ())
}

/// One datanode's volumes stored by its agent, one session for all.
fn store_datanode(
    run: &AgentRun<'_>,
    d: &Datanode,
    volumes: Vec<Upload<'_>>,
    id: &BackupId,
    rec: &mut Remote,
    cancel: &CancellationToken,
) -> Result<(), HopsfsError> {
    let failed = |v: &str, e: super::via_agent::ViaAgentError| HopsfsError::Agent {
        datanode: d.name.clone(),
        volume: v.to_string(),
        source: Box::new(e),
    };
    let first = volumes.first().map_or("", |u| u.v);
    let request = Request {
        roles: vec![Role::Hopsfs],
        roots: d.volumes.clone(),
        backup_dir: None,
        bandwidth: run.bandwidth(&d.node),
    };
    let mut session = Session::open(
        &d.node,
        run.binary,
        &request,
        Job::Backup,
        Some(run.access),
        run.timeout,
        cancel,
    )
    .map_err(|e| failed(first, e.into()))?;
    let mut last = first;
    for u in volumes {
        last = u.v;
        store_via_agent(&mut session, d, u.v, id, &u.prefix, u.list, rec, cancel)?;
    }
    session.finish(cancel).map_err(|e| failed(last, e.into()))
}

/// Has `d`'s agent store the files named in `list` (relative to the pin of volume `v`) into
/// the backup (`rec`) under `prefix`.
#[allow(clippy::too_many_arguments)]
fn store_via_agent(
    session: &mut Session,
    d: &Datanode,
    v: &str,
    id: &BackupId,
    prefix: &str,
    list: PathList,
    rec: &mut dyn Recorder,
    cancel: &CancellationToken,
) -> Result<(), HopsfsError> {
    let failed = |e: super::via_agent::ViaAgentError| HopsfsError::Agent {
        datanode: d.name.clone(),
        volume: v.to_string(),
        source: Box::new(e),
    };
    let file = list.into_file().map_err(|e| HopsfsError::Listing {
        datanode: d.name.clone(),
        volume: v.to_string(),
        reason: format!("reading back the list of files to copy: {e}"),
    })?;
    let up = super::via_agent::upload_list(session, rec, v, &id.to_string(), file, prefix, cancel)
        .map_err(failed)?;
    tracing::info!(
        step = "hopsfs",
        node = %d.name,
        volume = %v,
        replicas = up.replicas,
        files = up.file_count,
        bytes = up.bytes,
        packs = up.packs,
        pack_bytes = up.pack_bytes,
        paced_ms = up.paced_ms,
        "volume stored by the node's agent"
    );
    Ok(())
}

/// Walks one pinned volume for [`copy`], sending what it finds to `tx` in batches. With
/// `holders` (and the longest replica one unit holds), each new finalized replica goes there
/// for the choice of one replica per block instead of into the volume's list.
#[allow(clippy::too_many_arguments)]
fn walk_volume(
    vol: PinnedVolume<'_>,
    id: &BackupId,
    known: &KnownBlocks,
    holders: Option<(&crate::placement::Holders, u64)>,
    streams: bool,
    timeout: Duration,
    cancel: &CancellationToken,
    tx: &std::sync::mpsc::SyncSender<Result<Walked, HopsfsError>>,
) -> Result<(), WalkStop> {
    let prefix = vol.prefix();
    let PinnedVolume {
        d,
        at,
        index,
        v,
        live,
    } = vol;
    let root = pin_root(v, id);
    let io = |e: std::io::Error| HopsfsError::Listing {
        datanode: d.name.clone(),
        volume: v.to_string(),
        reason: format!("spooling the list of files to copy: {e}"),
    };
    // What decides, and (selective pins) what was pinned: only new files, few.
    let (mut decide, pinned): (Listing, Option<HashSet<String>>) = match live {
        None => (
            Listing::take(
                d,
                v,
                &format!("{root}/current"),
                true,
                false,
                timeout,
                cancel,
            )?,
            None,
        ),
        Some(live) => {
            // The pin root exists; its `current/` may not, when nothing new was pinned.
            let mut pin = Listing::take(d, v, &root, false, false, timeout, cancel)?;
            let mut set = HashSet::new();
            pin.each_dir(d, v, "current/", |group| {
                set.extend(group.iter().map(|e| e.path.clone()));
                Ok::<_, HopsfsError>(())
            })?;
            (live, Some(set))
        }
    };
    let was_pinned = |p: &str| pinned.as_ref().is_none_or(|s| s.contains(p));
    let mut list = PathList::new().map_err(io)?;
    // The bytes of the files in `list`.
    let mut listed = 0u64;
    let mut totals = CopyTotals::default();
    let mut batch = Vec::with_capacity(WALK_BATCH);
    let send = |batch: &mut Vec<Step>| {
        if cancel.is_cancelled() {
            return Err(WalkStop::WriterGone);
        }
        let full = std::mem::replace(batch, Vec::with_capacity(WALK_BATCH));
        tx.send(Ok(Walked::Steps(full)))
            .map_err(|_| WalkStop::WriterGone)
    };
    decide.each_dir(d, v, "", |group| {
        for e in group.iter().filter(|e| e.kind == Kind::Dir) {
            let path = if e.path.is_empty() {
                format!("{prefix}/current")
            } else {
                [&prefix, "/current/", &e.path].concat()
            };
            batch.push(Step::Dir(path, file_meta(e)));
        }
        let replicas = hopsfs::replicas(group);
        let mut paired: HashSet<&str> = HashSet::new();
        // The group's files by path, for the metadata of replicas left to the choice.
        let mut by_path: Option<HashMap<&str, &hopsfs::Listed>> = None;
        for r in &replicas {
            paired.insert(r.block_path.as_str());
            paired.insert(r.meta_path.as_str());
            if let Some(stored) = known.lookup(r) {
                totals.blocks += 1;
                let replica = known_replica(streams, &prefix, r, stored)?;
                batch.push(Step::Known(CapturedKey::of(&r.block), replica));
                continue;
            }
            if !was_pinned(&r.block_path) {
                continue; // deleted before it could be pinned: the coverage check says so
            }
            batch.push(Step::New(CapturedKey::of(&r.block)));
            totals.blocks += 1;
            totals.blocks_new += 1;
            totals.bytes_new += r.block.len;
            if !r.finalized {
                totals
                    .rbw_replicas
                    .push(format!("{}/vol{}/{}", d.name, index + 1, r.block_path));
            }
            let meta_pinned = was_pinned(&r.meta_path);
            if let Some((holders, _)) = holders
                .filter(|(_, max)| r.finalized && meta_pinned && r.block.len + r.meta_size <= *max)
            {
                let files = by_path.get_or_insert_with(|| {
                    group
                        .iter()
                        .filter(|e| e.kind == Kind::File)
                        .map(|e| (e.path.as_str(), e))
                        .collect()
                });
                if let (Some(b), Some(m)) = (
                    files.get(r.block_path.as_str()),
                    files.get(r.meta_path.as_str()),
                ) {
                    let c = crate::placement::Candidate {
                        key: crate::placement::key(
                            &r.block.bp,
                            r.block.id,
                            r.block.genstamp,
                            r.block.len,
                            r.meta_size,
                        ),
                        volume: at,
                        len: r.block.len,
                        meta_len: r.meta_size,
                        block_meta: file_meta(b),
                        meta_meta: file_meta(m),
                        block_path: r.block_path.clone(),
                        meta_path: r.meta_path.clone(),
                    };
                    holders.add(&c).map_err(io)?;
                    continue;
                }
            }
            if meta_pinned {
                list.push("current/", &r.meta_path).map_err(io)?;
                listed += r.meta_size;
            }
            list.push("current/", &r.block_path).map_err(io)?;
            listed += r.block.len;
        }
        for e in group {
            if matches!(e.kind, Kind::File | Kind::Symlink)
                && !paired.contains(e.path.as_str())
                && was_pinned(&e.path)
            {
                list.push("current/", &e.path).map_err(io)?;
                listed += e.size;
            }
        }
        if batch.len() >= WALK_BATCH {
            send(&mut batch)?;
        }
        Ok::<_, WalkStop>(())
    })?;
    if !batch.is_empty() {
        send(&mut batch)?;
    }
    tx.send(Ok(Walked::Done(list, listed, totals)))
        .map_err(|_| WalkStop::WriterGone)
}

/// The record of a replica the repository already holds (no transfer).
fn known_replica(
    streams: bool,
    prefix: &str,
    r: &hopsfs::Replica,
    stored: Stored,
) -> Result<KnownReplica, RepoError> {
    // (Once per replica of a volume: concatenated, not formatted.)
    let block_path = [prefix, "/current/", &r.block_path].concat();
    let meta_path = [prefix, "/current/", &r.meta_path].concat();
    match stored {
        Stored::Unit {
            unit,
            meta_len,
            block_meta,
            meta_meta,
        } => {
            let parts = UnitParts {
                unit: &unit,
                len: r.block.len,
                meta_len,
                block_meta,
                meta_meta,
            };
            KnownReplica::unit(streams, &block_path, &meta_path, parts)
        }
        Stored::Files(f) => {
            let (blk, meta) = *f;
            let (block_meta, meta_meta) = (blk.meta, meta.meta);
            KnownReplica::files(
                streams,
                &block_path,
                blk,
                block_meta,
                &meta_path,
                meta,
                meta_meta,
            )
        }
    }
}

/// Streams the files named in `list` (NUL-separated, relative to the pin root) from the pin
/// as tar into `writer` under `prefix`.
#[allow(clippy::too_many_arguments)]
fn send_from_pin(
    d: &Datanode,
    v: &str,
    root: &str,
    prefix: &str,
    list: PathList,
    writer: &mut BackupWriter,
    timeout: Duration,
    cancel: &CancellationToken,
) -> Result<(), HopsfsError> {
    let tar = argv(&[
        "tar",
        "--numeric-owner",
        "-C",
        root,
        "--no-recursion",
        "--null",
        "-T",
        "-",
        "-cf",
        "-",
    ]);
    let producer = list.producer().map_err(|e| HopsfsError::Listing {
        datanode: d.name.clone(),
        volume: v.to_string(),
        reason: format!("reading back the list of files to copy: {e}"),
    })?;
    let mut result = None;
    let streamed = d
        .node
        .stream_with_producer(&tar, Some(producer), timeout, cancel, |rd| {
            result = Some(tarstream::ingest_volume(rd, prefix, writer));
            match &result {
                Some(Err(e)) => Err(std::io::Error::other(e.to_string())),
                _ => Ok(()),
            }
        });
    match (streamed, result) {
        (Err(cause), Some(Err(stream))) => Err(HopsfsError::CollectCut {
            datanode: d.name.clone(),
            volume: v.to_string(),
            cause: Box::new(cause),
            stream: Box::new(stream),
        }),
        (Err(cause), _) => Err(cause.into()),
        (Ok(_), Some(Err(source))) => Err(HopsfsError::Collect {
            datanode: d.name.clone(),
            volume: v.to_string(),
            source: Box::new(source),
        }),
        // A pinned file shares its inode with the live one: when HopsFS deletes the live
        // file, the link count (and so the ctime) changes and tar says the file changed as it
        // read it. The content does not change: finalized replicas are immutable and HopsFS
        // breaks hard links before an append. Only that is tolerated.
        (Ok((status, stderr)), _) if status.code() == Some(1) && changed_only(&stderr) => {
            tracing::warn!(step = "hopsfs", node = %d.name, volume = %v, "links to pinned files changed while they were read (files deleted by HopsFS): {}", stderr.trim());
            Ok(())
        }
        (Ok((status, stderr)), _) if !status.success() => Err(NodeError::Failed {
            node: d.node.name.clone(),
            command: format!("tar -C {root} -cf - (list)"),
            status: status.to_string(),
            stderr,
        }
        .into()),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_files_vanished_below_the_root_are_tolerated_while_listing() {
        let root = "/data/dn1/current";
        assert!(vanished_below(
            "find: ‘/data/dn1/current/BP-1/current/finalized/subdir0/subdir0/blk_7_1.meta’: No such file or directory\n",
            root
        ));
        assert!(!vanished_below(
            "find: ‘/data/dn1/current’: No such file or directory\n",
            root
        ));
        assert!(!vanished_below(
            "find: ‘/data/dn1/current/x’: Permission denied\n",
            root
        ));
        assert!(!vanished_below("", root));
    }

    #[test]
    fn only_vanished_files_are_tolerated_while_pinning() {
        assert!(vanished_only(
            "cp: cannot stat '/dn/current/BP-1/current/finalized/subdir0/subdir0/blk_7': No such file or directory\n"
        ));
        assert!(!vanished_only(
            "cp: cannot create hard link 'x' to 'y': Invalid cross-device link\n"
        ));
        assert!(!vanished_only(""));
    }

    #[test]
    fn only_changed_link_counts_are_tolerated_while_copying() {
        assert!(changed_only(
            "tar: current/BP-1/current/finalized/subdir0/subdir0/blk_7: file changed as we read it\n"
        ));
        assert!(!changed_only(
            "tar: current/x: file changed as we read it\ntar: current/y: Cannot open: Permission denied\n"
        ));
        assert!(!changed_only(""));
    }
}
