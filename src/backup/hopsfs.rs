//! The `hopsfs` backup component: the blocks of every HopsFS datanode volume, consistent with
//! the RonDB backup, incremental, with a coverage check.
//!
//! - **Fence.** Right after START BACKUP returns (the RonDB consistency point), every volume's
//!   `current/` is pinned on every datanode in parallel: a hardlink snapshot (`cp -al`) into
//!   `<volume>/hopsdr-pin/<backup-id>/current`, on the same filesystem and outside the tree the
//!   datanode scans. A block HopsFS deletes afterwards keeps its data in the pin. The seconds
//!   from the consistency point to the last pin are the fence window. Pins are removed after
//!   the backup (also a failed one) and before every backup (pins left by a crash).
//! - **Copy.** From the pin, at leisure: VERSION files, the directory structure and every
//!   finalized block not already in the repository (same block pool, id, genstamp, length)
//!   stream as tar into `hopsfs/<datanode>/vol<i>/current/`; blocks already stored are listed
//!   in the manifest from the previous backup's entries without a transfer, so every backup
//!   restores on its own. Replicas in `rbw/` (being written or appended) are recorded and
//!   stored as found, never deduplicated; they count as captured only when their genstamp and
//!   length are the ones the backed-up metadata references.
//! - **Coverage.** The blocks the backed-up metadata references (a pluggable source) minus the
//!   blocks captured: more than zero makes the backup `partial`, with the missing ids listed.

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::cluster::hopsfs::{self, BlockRef, Kind, VolumeFile};
use crate::cluster::node::{Node, NodeError};
use crate::cluster::tarstream::{self, TarStreamError};
use crate::config::{HopsfsSettings, SshConfig};
use crate::ids::BackupId;
use crate::repository::{BackupWriter, Entry, FileEntry, Manifest, RepoError};

use super::rondb::node_for;

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
            node: node_for(format!("datanode {}", d.name), &d.host, ssh),
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

/// Removes every pin on every volume (none is in use: one job at a time). Fails on a datanode
/// that cannot be reached: every datanode must be copied, so the backup cannot go on.
pub fn remove_pins(
    dns: &[Datanode],
    timeout: Duration,
    cancel: &CancellationToken,
) -> Result<(), HopsfsError> {
    for d in dns {
        for v in &d.volumes {
            let dir = format!("{v}/{PIN_DIR}");
            d.node
                .run(&argv(&["rm", "-rf", "--", &dir]), timeout, cancel)?;
        }
    }
    Ok(())
}

/// Removes pins, logging instead of failing (after a backup, at daemon start).
pub fn remove_pins_logged(dns: &[Datanode], timeout: Duration) {
    let cancel = CancellationToken::new();
    // One thread per datanode: removing a pin of 100k hardlinks takes seconds.
    std::thread::scope(|scope| {
        for d in dns {
            let cancel = &cancel;
            scope.spawn(move || {
                for v in &d.volumes {
                    let dir = format!("{v}/{PIN_DIR}");
                    if let Err(e) = d
                        .node
                        .run(&argv(&["rm", "-rf", "--", &dir]), timeout, cancel)
                    {
                        tracing::warn!(step = "hopsfs", node = %d.name, "failed to remove the pins in {dir}: {e}");
                    }
                }
            });
        }
    });
}

/// Pins every volume of every datanode in parallel. Returns when the last pin is done.
pub fn pin(
    dns: &[Datanode],
    id: &BackupId,
    timeout: Duration,
    cancel: &CancellationToken,
) -> Result<DateTime<Utc>, HopsfsError> {
    let results: Vec<Result<(), NodeError>> = std::thread::scope(|scope| {
        let handles: Vec<_> = dns
            .iter()
            .map(|d| {
                scope.spawn(move || {
                    for v in &d.volumes {
                        let root = pin_root(v, id);
                        d.node
                            .run(&argv(&["mkdir", "-p", "--", &root]), timeout, cancel)?;
                        let cp = argv(&[
                            "cp",
                            "-al",
                            "--",
                            &format!("{v}/current"),
                            &format!("{root}/current"),
                        ]);
                        let out = d.node.run_status(&cp, timeout, cancel)?;
                        if out.status != Some(0) {
                            // Files HopsFS deletes while the tree is linked vanish under cp;
                            // anything else is an error. A vanished block the metadata still
                            // references shows in the coverage check.
                            if !vanished_only(&out.stderr) {
                                return Err(NodeError::Failed {
                                    node: d.node.name.clone(),
                                    command: crate::cluster::node::remote_command_line(&cp),
                                    status: format!("{:?}", out.status),
                                    stderr: out.stderr,
                                });
                            }
                            tracing::warn!(step = "hopsfs", node = %d.name, "files vanished while pinning {v}: {}", out.stderr.trim());
                        }
                    }
                    Ok(())
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join().unwrap_or_else(|_| {
                    Err(NodeError::Cancelled {
                        node: "pin".into(),
                        command: "cp -al".into(),
                    })
                })
            })
            .collect()
    });
    for r in results {
        r?;
    }
    Ok(Utc::now())
}

/// True when every error line of `cp` is about a file that vanished while it ran.
pub fn vanished_only(stderr: &str) -> bool {
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    !lines.is_empty()
        && lines
            .iter()
            .all(|l| l.ends_with("No such file or directory"))
}

/// The files of an earlier backup's blocks, by block: the block file and its `.meta`.
#[derive(Debug, Default)]
pub struct KnownBlocks {
    map: HashMap<BlockRef, (FileEntry, FileEntry)>,
}

impl KnownBlocks {
    /// Indexes the blocks a committed manifest holds.
    pub fn from_manifest(m: &Manifest) -> KnownBlocks {
        // (dir, bp, id) -> block entry / (meta entry, genstamp)
        let mut blocks: HashMap<(String, String, u64), FileEntry> = HashMap::new();
        let mut metas: HashMap<(String, String, u64), (FileEntry, u64)> = HashMap::new();
        for e in &m.entries {
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
                    bp,
                    id,
                    finalized: true,
                } => {
                    blocks.insert((dir, bp, id), f.clone());
                }
                VolumeFile::Meta {
                    bp,
                    id,
                    genstamp,
                    finalized: true,
                } => {
                    metas.insert((dir, bp, id), (f.clone(), genstamp));
                }
                _ => {}
            }
        }
        let mut map = HashMap::new();
        for (key, blk) in blocks {
            if let Some((meta, gs)) = metas.remove(&key) {
                map.insert(
                    BlockRef {
                        bp: key.1,
                        id: key.2,
                        genstamp: gs,
                        len: blk.size,
                    },
                    (blk, meta),
                );
            }
        }
        KnownBlocks { map }
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

/// Copies every pinned volume into `writer`; returns the blocks captured.
pub fn copy(
    dns: &[Datanode],
    id: &BackupId,
    known: &KnownBlocks,
    writer: &mut BackupWriter,
    timeout: Duration,
    cancel: &CancellationToken,
) -> Result<(BTreeSet<BlockRef>, CopyTotals), HopsfsError> {
    let mut captured = BTreeSet::new();
    let mut totals = CopyTotals::default();
    for d in dns {
        for (i, v) in d.volumes.iter().enumerate() {
            let root = pin_root(v, id);
            let volume = v.clone();
            let listing_err = |reason: String| HopsfsError::Listing {
                datanode: d.name.clone(),
                volume: volume.clone(),
                reason,
            };
            let out = d.node.run(
                &hopsfs::find_argv(&format!("{root}/current")),
                timeout,
                cancel,
            )?;
            let listing = hopsfs::parse_listing(&out.stdout).map_err(listing_err)?;
            let replicas = hopsfs::replicas(&listing);
            let mut reuse = Vec::new();
            let mut skip: BTreeSet<&str> = BTreeSet::new();
            for r in &replicas {
                captured.insert(r.block.clone());
                totals.blocks += 1;
                if !r.finalized {
                    // Being written or appended: stored as found, never deduplicated.
                    totals
                        .rbw_replicas
                        .push(format!("{}/vol{}/{}", d.name, i + 1, r.block_path));
                    totals.blocks_new += 1;
                    totals.bytes_new += r.block.len;
                    continue;
                }
                if let Some((blk, meta)) = known.map.get(&r.block) {
                    if meta.size == r.meta_size {
                        skip.insert(r.block_path.as_str());
                        skip.insert(r.meta_path.as_str());
                        reuse.push((r, blk, meta));
                        continue;
                    }
                }
                totals.blocks_new += 1;
                totals.bytes_new += r.block.len;
            }
            // What to send: the structure, VERSION files, new blocks and rbw replicas.
            let mut list = Vec::new();
            list.extend_from_slice(b"current\0");
            for e in &listing {
                if e.kind == Kind::Other || skip.contains(e.path.as_str()) {
                    continue;
                }
                list.extend_from_slice(b"current/");
                list.extend_from_slice(e.path.as_bytes());
                list.push(0);
            }
            let prefix = format!("hopsfs/{}/vol{}", d.name, i + 1);
            let tar = argv(&[
                "tar",
                "--numeric-owner",
                "-C",
                &root,
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
                    result = Some(tarstream::ingest(rd, &prefix, writer));
                    match &result {
                        Some(Err(e)) => Err(std::io::Error::other(e.to_string())),
                        _ => Ok(()),
                    }
                });
            match (streamed, result) {
                (Err(cause), Some(Err(stream))) => {
                    return Err(HopsfsError::CollectCut {
                        datanode: d.name.clone(),
                        volume: v.clone(),
                        cause: Box::new(cause),
                        stream: Box::new(stream),
                    })
                }
                (Err(cause), _) => return Err(cause.into()),
                (Ok(_), Some(Err(source))) => {
                    return Err(HopsfsError::Collect {
                        datanode: d.name.clone(),
                        volume: v.clone(),
                        source: Box::new(source),
                    })
                }
                (Ok((status, stderr)), _) if !status.success() => {
                    return Err(NodeError::Failed {
                        node: d.node.name.clone(),
                        command: format!("tar -C {root} -cf - (list)"),
                        status: status.to_string(),
                        stderr,
                    }
                    .into())
                }
                _ => {}
            }
            for (r, blk, meta) in reuse {
                writer.add_known_file(
                    &format!("{prefix}/current/{}", r.block_path),
                    blk,
                    blk.meta,
                )?;
                writer.add_known_file(
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

/// Runs the referenced-blocks source for RonDB backup `rondb_id`.
pub fn referenced(
    command: &[String],
    rondb_id: u32,
    timeout: Duration,
    cancel: &CancellationToken,
) -> Result<BTreeSet<BlockRef>, HopsfsError> {
    let mut a = command.to_vec();
    a.push("--backup-id".into());
    a.push(rondb_id.to_string());
    let out = Node::local("head node")
        .run(&a, timeout, cancel)
        .map_err(|e| HopsfsError::Referenced(e.to_string()))?;
    hopsfs::parse_referenced(&out.stdout).map_err(HopsfsError::Referenced)
}

/// Facts of the HopsFS part, stored in the manifest (`info.extra.hopsfs`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct HopsfsFacts {
    pub block_storage: String,
    pub fence_window_seconds: f64,
    pub blocks: u64,
    pub blocks_new: u64,
    pub bytes_new: u64,
    pub coverage_checked: bool,
    pub referenced_blocks: u64,
    pub missing_blocks: Vec<u64>,
    pub rbw_replicas: Vec<String>,
    /// `<datanode>/vol<i>` → the volume's path.
    pub volumes: Vec<(String, String)>,
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
    fn volume_relative_paths() {
        assert_eq!(
            volume_relative("hopsfs/dn1/vol1/current/BP-1/current/VERSION"),
            Some("BP-1/current/VERSION")
        );
        assert_eq!(volume_relative("rondb/1/BACKUP-5/x"), None);
        assert_eq!(volume_relative("hopsfs/dn1/vol1/other/x"), None);
    }
}
