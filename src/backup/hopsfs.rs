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
//!   a NUL-separated list by `xargs -0`): a finalized replica already stored needs no pin. The
//!   seconds from the consistency point to the last pin are the fence window. Pins are removed
//!   after the commit, off the backup's path, and on every failure path.
//! - **Copy.** From the pin, at leisure: VERSION files, the directory structure (from the
//!   fence's listing when only new files were pinned) and every finalized block not already in
//!   the repository (same block pool, id, genstamp, length) stream as tar into
//!   `hopsfs/<datanode>/vol<i>/current/`; blocks already stored are listed in the manifest from
//!   the previous backup's entries without a transfer, so every backup restores on its own.
//!   Replicas in `rbw/` (being written or appended) are recorded and stored as found, never
//!   deduplicated; they count as captured only when their genstamp and length are the ones the
//!   backed-up metadata references.
//! - **Coverage.** The blocks the backed-up metadata references (a pluggable source) minus the
//!   blocks captured: more than zero makes the backup `partial`, with the missing ids listed.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use super::tarstream::{self, TarStreamError};
use crate::cluster::hopsfs::{self, BlockRef, Kind, VolumeFile};
use crate::cluster::node::{Node, NodeError};
use crate::config::{HopsfsSettings, SshConfig};
use crate::ids::BackupId;
use crate::repository::{BackupWriter, Entry, FileEntry, FileMeta, Manifest, RepoError};

/// The directory on each volume that holds pins.
pub const PIN_DIR: &str = "hopsdr-pin";

/// Why the HopsFS component failed.
#[derive(Debug, thiserror::Error)]
pub enum HopsfsError {
    #[error(transparent)]
    Node(#[from] NodeError),
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
    #[error("the referenced-blocks source failed: {0}")]
    Referenced(String),
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

/// What the fence left for the copy.
#[derive(Debug)]
pub struct Fence {
    /// When the last volume was pinned.
    pub pinned_at: DateTime<Utc>,
    /// Per volume (in the order of the datanodes and their volumes): the listing of the live
    /// `current/` taken at the fence (root first, with an empty path) when only the files not
    /// already in the repository were pinned; `None` when the whole tree was.
    live: Vec<Option<Vec<hopsfs::Listed>>>,
}

/// Pins every volume of every datanode in parallel (their pin directories made by
/// [`prepare_pins`]); returns when the last pin is done.
///
/// With no blocks already stored, the whole `current/` tree is linked (`cp -al`). Otherwise the
/// live tree is listed and only what the repository lacks is linked (`cp -al --parents` fed by
/// `xargs -0`): a finalized replica already stored needs no pin, its data is in the repository.
/// Files HopsFS deletes while they are linked vanish under `cp`; anything else is an error. A
/// vanished block the metadata still references shows in the coverage check.
pub fn pin(
    dns: &[Datanode],
    id: &BackupId,
    known: &KnownBlocks,
    timeout: Duration,
    cancel: &CancellationToken,
) -> Result<Fence, HopsfsError> {
    let results = per_volume(dns, |d, v| -> Result<_, HopsfsError> {
        let root = pin_root(v, id);
        let check = |cp: &[String], out: crate::cluster::node::CommandOutput| {
            if out.status == Some(0) {
                return Ok(());
            }
            if !vanished_only(&out.stderr) {
                return Err(NodeError::Failed {
                    node: d.node.name.clone(),
                    command: crate::cluster::node::remote_command_line(cp),
                    status: format!("{:?}", out.status),
                    stderr: out.stderr,
                });
            }
            tracing::warn!(step = "hopsfs", node = %d.name, "files vanished while pinning {v}: {}", out.stderr.trim());
            Ok(())
        };
        if known.is_empty() {
            let cp = argv(&[
                "cp",
                "-al",
                "--",
                &format!("{v}/current"),
                &format!("{root}/current"),
            ]);
            let out = d.node.run_status(&cp, timeout, cancel)?;
            check(&cp, out)?;
            return Ok(None);
        }
        let out = d.node.run(
            &hopsfs::find_argv(&format!("{v}/current"), true),
            timeout,
            cancel,
        )?;
        let live = hopsfs::parse_listing(&out.stdout).map_err(|reason| HopsfsError::Listing {
            datanode: d.name.clone(),
            volume: v.to_string(),
            reason,
        })?;
        let replicas = hopsfs::replicas(&live);
        let stored = known.stored_paths(&replicas);
        let mut list = Vec::new();
        for e in &live {
            if matches!(e.kind, Kind::File | Kind::Symlink) && !stored.contains(e.path.as_str()) {
                list.extend_from_slice(b"current/");
                list.extend_from_slice(e.path.as_bytes());
                list.push(0);
            }
        }
        if !list.is_empty() {
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
            let out = d.node.run_with_input_status(&cp, list, timeout, cancel)?;
            check(&cp, out)?;
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

/// True when every error line of `tar -c` says a file changed as it was read.
pub fn changed_only(stderr: &str) -> bool {
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    !lines.is_empty()
        && lines
            .iter()
            .all(|l| l.ends_with(": file changed as we read it"))
}

/// The files of an earlier backup's blocks, by block: the block file and its `.meta`.
#[derive(Debug, Default)]
pub struct KnownBlocks {
    map: HashMap<BlockRef, (FileEntry, FileEntry)>,
}

impl KnownBlocks {
    /// Forgets the blocks whose stored content uses a blob known damaged or missing: they are
    /// read from the datanode again (and their blobs written again).
    pub fn retain_clean(&mut self, suspect: &std::collections::HashSet<crate::ids::BlobId>) {
        if suspect.is_empty() {
            return;
        }
        self.map.retain(|_, (block, meta)| {
            block
                .blobs()
                .iter()
                .chain(meta.blobs().iter())
                .all(|c| !suspect.contains(c))
        });
    }

    /// Indexes the blocks a committed manifest holds. Each block is kept once, whichever
    /// replica's entries come first (the replicas of one block have the same content).
    pub fn from_manifest(m: &Manifest) -> KnownBlocks {
        Self::from_entries(m.entries.iter().cloned())
    }

    /// Indexes the blocks among `entries` (a backup's, in any order).
    pub fn from_entries(entries: impl Iterator<Item = Entry>) -> KnownBlocks {
        // (directory, id) -> block entry / meta entry.
        let mut blocks: HashMap<(String, u64), FileEntry> = HashMap::new();
        let mut metas: HashMap<(String, u64), FileEntry> = HashMap::new();
        for e in entries {
            let Entry::File(f) = e else { continue };
            let Some(rel) = volume_relative(&f.path) else {
                continue;
            };
            let dir = f
                .path
                .rsplit_once('/')
                .map(|x| x.0)
                .unwrap_or("")
                .to_string();
            match hopsfs::classify(rel) {
                VolumeFile::Block {
                    id,
                    finalized: true,
                    ..
                } => {
                    blocks.insert((dir, id), f);
                }
                VolumeFile::Meta {
                    id,
                    finalized: true,
                    ..
                } => {
                    metas.insert((dir, id), f);
                }
                _ => {}
            }
        }
        let mut map = HashMap::new();
        for (key, blk) in blocks {
            let Some(meta) = metas.remove(&key) else {
                continue;
            };
            let rel = volume_relative(&meta.path).unwrap_or_default();
            let VolumeFile::Meta {
                bp, id, genstamp, ..
            } = hopsfs::classify(rel)
            else {
                continue;
            };
            map.entry(BlockRef {
                bp,
                id,
                genstamp,
                len: blk.size,
            })
            .or_insert((blk, meta));
        }
        KnownBlocks { map }
    }

    /// The stored entries of a finalized replica (block, meta) when the repository holds the
    /// same block with a checksum file of the same size.
    fn lookup(&self, r: &hopsfs::Replica) -> Option<&(FileEntry, FileEntry)> {
        if !r.finalized {
            return None; // being written or appended: stored as found, never deduplicated
        }
        self.map
            .get(&r.block)
            .filter(|(_, meta)| meta.size == r.meta_size)
    }

    /// The paths (block and meta files) of the replicas the repository already holds.
    fn stored_paths<'r>(&self, replicas: &'r [hopsfs::Replica]) -> HashSet<&'r str> {
        let mut out = HashSet::new();
        for r in replicas.iter().filter(|r| self.lookup(r).is_some()) {
            out.insert(r.block_path.as_str());
            out.insert(r.meta_path.as_str());
        }
        out
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

/// `hopsfs/<dn>/vol<i>/current/<rel>` → `<rel>`.
fn volume_relative(path: &str) -> Option<&str> {
    let rest = path.strip_prefix("hopsfs/")?;
    let mut parts = rest.splitn(4, '/');
    let (_dn, _vol, cur, rel) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    (cur == "current").then_some(rel)
}

/// What the copy captured.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CopyTotals {
    pub blocks: u64,
    pub blocks_new: u64,
    pub bytes_new: u64,
    pub rbw_replicas: Vec<String>,
}

/// The listings of every volume's pin (paths relative to the pinned `current/`), taken in
/// parallel, in the order of `dns` and their volumes.
fn list_pins(
    dns: &[Datanode],
    id: &BackupId,
    timeout: Duration,
    cancel: &CancellationToken,
) -> Vec<Result<Vec<hopsfs::Listed>, HopsfsError>> {
    per_volume(dns, |d, v| {
        // The pin root exists; its `current/` may not, when nothing new was pinned.
        let out = d
            .node
            .run(&hopsfs::find_argv(&pin_root(v, id), false), timeout, cancel)?;
        let listing =
            hopsfs::parse_listing(&out.stdout).map_err(|reason| HopsfsError::Listing {
                datanode: d.name.clone(),
                volume: v.to_string(),
                reason,
            })?;
        Ok(listing
            .into_iter()
            .filter_map(|mut e| {
                e.path = e.path.strip_prefix("current/")?.to_string();
                Some(e)
            })
            .collect())
    })
}

fn file_meta(e: &hopsfs::Listed) -> FileMeta {
    FileMeta {
        mode: e.mode,
        mtime: e.mtime,
        uid: e.uid,
        gid: e.gid,
    }
}

/// Copies every pinned volume into `writer`; returns the blocks captured.
///
/// A volume pinned whole is sent as found in the pin, less the replicas already stored. A
/// volume pinned selectively takes its directory structure from the live listing of the fence,
/// the stored replicas it listed from the repository, and the rest from the pin.
pub fn copy(
    dns: &[Datanode],
    id: &BackupId,
    fence: &Fence,
    known: &KnownBlocks,
    writer: &mut BackupWriter,
    timeout: Duration,
    cancel: &CancellationToken,
) -> Result<(BTreeSet<BlockRef>, CopyTotals), HopsfsError> {
    let mut captured = BTreeSet::new();
    let mut totals = CopyTotals::default();
    let mut listings = list_pins(dns, id, timeout, cancel).into_iter();
    let mut lives = fence.live.iter();
    for d in dns {
        for (i, v) in d.volumes.iter().enumerate() {
            let root = pin_root(v, id);
            let pinned = listings.next().expect("one listing per volume")?;
            let live = lives.next().and_then(|l| l.as_deref());
            let prefix = format!("hopsfs/{}/vol{}", d.name, i + 1);
            // The replicas already stored, from the listing the fence relied on.
            let pinned_replicas = hopsfs::replicas(&pinned);
            let live_replicas = live.map(hopsfs::replicas);
            let decided = live_replicas.as_deref().unwrap_or(&pinned_replicas);
            let reuse: Vec<_> = decided
                .iter()
                .filter_map(|r| known.lookup(r).map(|stored| (r, stored)))
                .collect();
            let skip = known.stored_paths(decided);
            for r in &pinned_replicas {
                if skip.contains(r.block_path.as_str()) {
                    continue;
                }
                captured.insert(r.block.clone());
                totals.blocks += 1;
                totals.blocks_new += 1;
                totals.bytes_new += r.block.len;
                if !r.finalized {
                    totals
                        .rbw_replicas
                        .push(format!("{}/vol{}/{}", d.name, i + 1, r.block_path));
                }
            }
            for (r, _) in &reuse {
                captured.insert(r.block.clone());
                totals.blocks += 1;
            }
            // What to send from the pin: new blocks, rbw replicas, VERSION files; with the
            // directory structure when the whole volume was pinned.
            let mut list = Vec::new();
            match live {
                None => list.extend_from_slice(b"current\0"),
                Some(live) => {
                    for e in live.iter().filter(|e| e.kind == Kind::Dir) {
                        let path = if e.path.is_empty() {
                            format!("{prefix}/current")
                        } else {
                            format!("{prefix}/current/{}", e.path)
                        };
                        writer.add_dir(&path, file_meta(e))?;
                    }
                }
            }
            // Each finalized replica's checksum file right before its block file: the two are
            // stored as one unit (see `tarstream::ingest_volume`).
            let partner: HashMap<&str, (&str, &str)> = pinned_replicas
                .iter()
                .filter(|r| r.finalized)
                .flat_map(|r| {
                    let pair = (r.meta_path.as_str(), r.block_path.as_str());
                    [(r.block_path.as_str(), pair), (r.meta_path.as_str(), pair)]
                })
                .collect();
            let mut sent: HashSet<&str> = HashSet::new();
            let push = |list: &mut Vec<u8>, path: &str| {
                list.extend_from_slice(b"current/");
                list.extend_from_slice(path.as_bytes());
                list.push(0);
            };
            for e in &pinned {
                if e.kind == Kind::Other
                    || skip.contains(e.path.as_str())
                    || (live.is_some() && e.kind == Kind::Dir)
                    || sent.contains(e.path.as_str())
                {
                    continue;
                }
                match partner.get(e.path.as_str()) {
                    Some(&(meta, block)) => {
                        push(&mut list, meta);
                        push(&mut list, block);
                        sent.insert(meta);
                        sent.insert(block);
                    }
                    None => push(&mut list, &e.path),
                }
            }
            if !list.is_empty() {
                send_from_pin(d, v, &root, &prefix, list, writer, timeout, cancel)?;
            }
            for (r, (blk, meta)) in reuse {
                writer.add_known_pair(
                    &format!("{prefix}/current/{}", r.block_path),
                    blk,
                    blk.meta,
                    &format!("{prefix}/current/{}", r.meta_path),
                    meta,
                    meta.meta,
                )?;
            }
            tracing::info!(step = "hopsfs", node = %d.name, volume = %v, "volume copied");
        }
    }
    Ok((captured, totals))
}

/// Streams the files named in `list` (NUL-separated, relative to the pin root) from the pin
/// as tar into `writer` under `prefix`.
#[allow(clippy::too_many_arguments)]
fn send_from_pin(
    d: &Datanode,
    v: &str,
    root: &str,
    prefix: &str,
    list: Vec<u8>,
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
    let mut result = None;
    let streamed = d
        .node
        .stream_with_input(&tar, Some(list), timeout, cancel, |rd| {
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

/// Runs the referenced-blocks source for RonDB backup `rondb_id`; a backup encrypted by RonDB
/// gives the source `--backup-password-from-stdin` and `password` on its standard input, as
/// ndb_restore gets it.
pub fn referenced(
    command: &[String],
    rondb_id: u32,
    password: Option<&str>,
    timeout: Duration,
    cancel: &CancellationToken,
) -> Result<BTreeSet<BlockRef>, HopsfsError> {
    let mut a = command.to_vec();
    a.push("--backup-id".into());
    a.push(rondb_id.to_string());
    let head = Node::local("head node");
    let out = match password {
        Some(p) => {
            a.push("--backup-password-from-stdin".into());
            head.run_with_input(&a, format!("{p}\n").into_bytes(), timeout, cancel)
        }
        None => head.run(&a, timeout, cancel),
    }
    .map_err(|e| HopsfsError::Referenced(e.to_string()))?;
    hopsfs::parse_referenced(&out.stdout).map_err(HopsfsError::Referenced)
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn volume_relative_paths() {
        assert_eq!(
            volume_relative("hopsfs/dn1/vol1/current/BP-1/current/VERSION"),
            Some("BP-1/current/VERSION")
        );
        assert_eq!(volume_relative("rondb/1/BACKUP-5/x"), None);
        assert_eq!(volume_relative("hopsfs/dn1/vol1/other/x"), None);
    }
}

#[cfg(test)]
mod known_tests {
    use super::*;

    #[test]
    fn blocks_stored_in_a_suspect_blob_are_not_reused() {
        let d = "hopsfs/dn1/vol1/current/BP-1/current/finalized/subdir0/subdir0";
        let (a, b, c, e) = (
            "a".repeat(64),
            "b".repeat(64),
            "c".repeat(64),
            "d".repeat(64),
        );
        let paths = [
            format!("{d}/blk_1"),
            format!("{d}/blk_1_1001.meta"),
            format!("{d}/blk_2"),
            format!("{d}/blk_2_1002.meta"),
        ];
        let m = Manifest::for_tests(
            "20261206T100000Z",
            Default::default(),
            &[
                (&paths[0], &a),
                (&paths[1], &b),
                (&paths[2], &c),
                (&paths[3], &e),
            ],
        );
        let mut k = KnownBlocks::from_manifest(&m);
        assert_eq!(k.len(), 2);
        k.retain_clean(&Default::default());
        assert_eq!(k.len(), 2);
        // Block 2's meta file is in a damaged blob: block 2 is read from the datanode again.
        let suspect = [crate::ids::BlobId::parse(&e).unwrap()].into();
        k.retain_clean(&suspect);
        assert_eq!(k.len(), 1);
    }
}
