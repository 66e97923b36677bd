//! Writing a backup: files cut into chunks, chunks hashed, deduplicated, compressed and stored
//! by a small pool of threads while the caller's thread reads ahead; the manifest last.
//!
//! Memory is bounded whatever the file size: at most `workers + 2` chunk buffers exist (one
//! being read, one queued, one per worker), plus one compression buffer and zstd context per
//! worker, all reused from file to file.

use std::collections::{HashSet, VecDeque};
use std::io::{self, Read};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::ids::{BackupId, BlobId};

use super::crypto::Keyring;
use super::error::{EntryDefect, RepoError};
use super::index::EntryKind;
use super::known_replica::{Known, KnownReplica};
use super::manifest::{self, SeenPaths};
use super::packer::Packer;
use super::spill::Spill;
use super::storage::Storage;
use super::streams::{record_of, stream_of};
use super::tree::{self, Record, Replica};
use super::{
    blob_key, manifest_key, validate_logical_path, BackupInfo, Entry, FileEntry, FileMeta,
    Manifest, Repository, FORMAT_VERSION, PACKED_FORMAT_VERSION,
};

/// Most chunk workers a writer starts, whatever the number of cores.
const MAX_WORKERS: usize = 4;
/// How many recently stored blob hashes a writer remembers, to skip asking the store again.
const RECENT_BLOBS: usize = 4096;

/// What a backup has written so far.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WriteStats {
    /// Bytes of file content processed (stored or deduplicated).
    pub logical_bytes: u64,
    /// Compressed bytes of the blobs this backup newly wrote.
    pub stored_bytes: u64,
    pub files: u64,
    pub new_blobs: u64,
    /// Chunks whose blob was already in the repository.
    pub reused_blobs: u64,
    /// Blobs known damaged or missing (verify found them) that this backup wrote again.
    pub healed_blobs: u64,
}

/// Called with the running totals after each chunk.
pub type ProgressFn = Box<dyn FnMut(&WriteStats) + Send>;

/// A finalized HopsFS replica this backup stored as one unit, as told to a [`ReplicaSink`].
#[derive(Debug, Clone, Copy)]
pub struct StoredUnit<'a> {
    /// The block file's logical path.
    pub block_path: &'a str,
    pub genstamp: u64,
    pub len: u64,
    pub meta_len: u64,
    pub unit: &'a BlobId,
}

/// Told of every replica the backup stores as one unit, from the funnel's tar or an agent's
/// report (see [`BackupWriter::set_replica_sink`]).
pub type ReplicaSink = Box<dyn FnMut(StoredUnit<'_>) + Send>;

/// A backup being written; see [`Repository::begin_backup`]. Dropping it without
/// [`BackupWriter::commit`] leaves no backup, only unreferenced blobs.
pub struct BackupWriter {
    repo: Repository,
    id: BackupId,
    cancel: CancellationToken,
    entries: Vec<Entry>,
    seen: SeenPaths,
    stats: WriteStats,
    progress: Option<ProgressFn>,
    /// Chunk buffers, each `chunk_size` long, kept between files.
    spare: Vec<Vec<u8>>,
    /// One per worker; the first also serves single-chunk files on the caller's thread.
    kits: Vec<WorkerKit>,
    workers: usize,
    recent: Mutex<RecentBlobs>,
    /// Format 3: the packs being written (`None`: formats 1 and 2, one object per blob).
    packer: Option<Packer>,
    /// Format 3: the streams' records, on disk until the commit sorts them.
    spill: Option<Spill>,
    replica_sink: Option<ReplicaSink>,
}

impl std::fmt::Debug for BackupWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BackupWriter")
            .field("repository", &self.repo.describe())
            .field("id", &self.id)
            .field("entries", &self.entries.len())
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

/// A worker's compression context and output buffer.
struct WorkerKit {
    compressor: zstd::bulk::Compressor<'static>,
    out: Vec<u8>,
    /// The keys of an encrypted repository (names and seals blobs); `None`: plaintext.
    keys: Option<Arc<Keyring>>,
    /// The sealed blob (encrypted repositories).
    sealed: Vec<u8>,
}

/// Hashes of blobs this writer stored or found lately (oldest forgotten first). A hash is
/// claimed before its blob is written, so two workers given the same content write it once.
#[derive(Default)]
struct RecentBlobs {
    set: HashSet<[u8; 32]>,
    order: VecDeque<[u8; 32]>,
    /// Blobs known damaged or missing: written again whatever the storage says.
    suspect: HashSet<BlobId>,
    /// The suspect blobs this writer wrote again.
    healed: Vec<BlobId>,
}

impl RecentBlobs {
    /// Records `hash`; false if it was already there.
    fn claim(&mut self, hash: [u8; 32]) -> bool {
        if !self.set.insert(hash) {
            return false;
        }
        self.order.push_back(hash);
        if self.order.len() > RECENT_BLOBS {
            if let Some(old) = self.order.pop_front() {
                self.set.remove(&old);
            }
        }
        true
    }

    fn forget(&mut self, hash: &[u8; 32]) {
        self.set.remove(hash);
    }
}

struct Job {
    seq: usize,
    buf: Vec<u8>,
    len: usize,
}

struct Done {
    seq: usize,
    len: usize,
    buf: Vec<u8>,
    result: Result<Stored, RepoError>,
}

/// What storing one chunk did.
struct Stored {
    hash: blake3::Hash,
    /// Compressed bytes written, `None` if the blob was already there.
    written: Option<u64>,
    /// The blob was known damaged or missing and is written again.
    healed: bool,
    /// Format 3: the chunk's stored form (compressed, sealed), for the packer to append.
    sealed: Option<Vec<u8>>,
}

impl BackupWriter {
    /// Blobs known damaged or missing: a chunk with one of these contents is written again
    /// instead of being taken as stored.
    pub fn set_suspect_blobs(&mut self, blobs: HashSet<BlobId>) {
        self.recent
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .suspect = blobs;
    }

    /// The suspect blobs this writer wrote again.
    pub fn healed_blobs(&self) -> Vec<BlobId> {
        self.recent
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .healed
            .clone()
    }

    pub(super) fn new(repo: Repository, id: BackupId, cancel: CancellationToken) -> BackupWriter {
        let workers = default_workers(repo.compression_level());
        BackupWriter {
            repo,
            id,
            cancel,
            entries: Vec::new(),
            seen: SeenPaths::default(),
            stats: WriteStats::default(),
            progress: None,
            spare: Vec::new(),
            kits: Vec::new(),
            workers,
            recent: Mutex::new(RecentBlobs::default()),
            packer: None,
            spill: None,
            replica_sink: None,
        }
    }

    /// Format 3: opens the packer (the index cache synced first) when first needed.
    fn ensure_packer(&mut self) -> Result<(), RepoError> {
        if self.packer.is_none() && self.repo.is_packed() {
            self.repo.sync_index()?;
            self.packer = Some(Packer::new(self.repo.clone())?);
            self.spill = Some(Spill::new(&self.repo.scratch_dir()?)?);
        }
        Ok(())
    }

    /// Format 3: what the packer wrote so far.
    pub fn packer_stats(&self) -> Option<super::packer::PackerStats> {
        self.packer.as_ref().map(|p| p.stats)
    }

    pub fn id(&self) -> &BackupId {
        &self.id
    }

    pub fn stats(&self) -> WriteStats {
        self.stats
    }

    /// Calls `f` with the running totals after each chunk is stored.
    pub fn set_progress(&mut self, f: ProgressFn) {
        self.progress = Some(f);
    }

    /// Has `sink` told of every finalized replica stored as one unit from now on (`None`:
    /// no longer), so that other replicas of the same block can be recorded with that unit.
    pub fn set_replica_sink(&mut self, sink: Option<ReplicaSink>) {
        self.replica_sink = sink;
    }

    /// The longest replica (block and checksum bytes) stored as one unit; a longer one is
    /// stored as two files.
    pub fn max_unit_len(&self) -> u64 {
        (SOLO_MAX_CHUNKS * self.repo.chunk_size()) as u64
    }

    /// Stores the content read from `reader` as the file `logical_path`, and returns its entry.
    ///
    /// On error the file is not part of the backup (its chunks already stored stay, and count
    /// in the stats); the backup can go on or be abandoned. [`RepoError::Cancelled`] if the
    /// token was cancelled (checked between chunks).
    pub fn add_file(
        &mut self,
        logical_path: &str,
        reader: &mut dyn Read,
        meta: FileMeta,
    ) -> Result<FileEntry, RepoError> {
        self.check_new_path(logical_path)?;
        let (chunks, hasher) = self.store_content(logical_path, reader)?;
        let size = hasher.count();
        let entry = if self.packer.is_some() {
            FileEntry {
                path: logical_path.to_string(),
                size,
                meta,
                hash: String::new(),
                chunks: Vec::new(),
                units: chunks.iter().map(BlobId::of).collect(),
                skip: 0,
            }
        } else {
            FileEntry {
                path: logical_path.to_string(),
                size,
                meta,
                hash: hasher.finalize().to_hex().to_string(),
                chunks: chunks.iter().map(BlobId::of).collect(),
                units: Vec::new(),
                skip: 0,
            }
        };
        self.finish_entry(Entry::File(entry.clone()))?;
        self.stats.files += 1;
        // A batch of blobs is written (not yet flushed) and no manifest names them.
        if self.stats.new_blobs > 0 {
            crate::failpoint::hit("backup.blobs_written", &self.cancel);
        }
        Ok(entry)
    }

    /// Stores the content read from `reader` (for `logical_path`, named in errors): the chunk
    /// hashes (formats 1 and 2) or units (format 3), and the hasher of the whole content.
    fn store_content(
        &mut self,
        logical_path: &str,
        reader: &mut dyn Read,
    ) -> Result<(Vec<blake3::Hash>, blake3::Hasher), RepoError> {
        if self.cancel.is_cancelled() {
            return Err(RepoError::Cancelled);
        }
        self.ensure_kits()?;
        self.ensure_packer()?;
        let chunk_size = self.repo.chunk_size();
        let mut hasher = blake3::Hasher::new();
        let mut first = take_buffer(&mut self.spare, chunk_size);
        let n = match read_full(reader, &mut first) {
            Ok(n) => n,
            Err(source) => {
                self.spare.push(first);
                return Err(RepoError::ReadSource {
                    path: logical_path.to_string(),
                    source,
                });
            }
        };
        let chunks = if n < chunk_size {
            // The whole file is in hand: no need for the pool.
            let result = if n == 0 {
                Ok(Vec::new())
            } else {
                hasher.update(&first[..n]);
                let stored = match self.packer.as_mut() {
                    Some(packer) => store_packed_blob(
                        packer,
                        &self.recent,
                        &mut self.kits[0],
                        &first[..n],
                        logical_path,
                    ),
                    None => store_chunk(
                        self.repo.storage().as_ref(),
                        &self.recent,
                        &mut self.kits[0],
                        &first[..n],
                        logical_path,
                    ),
                };
                stored.map(|s| {
                    record(&mut self.stats, &mut self.progress, n, &s);
                    vec![s.hash]
                })
            };
            self.spare.push(first);
            result?
        } else {
            self.pipeline(logical_path, reader, first, &mut hasher)?
        };
        Ok((chunks, hasher))
    }

    /// Stores a finalized HopsFS replica under directory `dir` (a logical path): the block
    /// file `blk_<id>` (`block_len` bytes from `block`) and its checksum file
    /// `blk_<id>_<genstamp>.meta` (`meta_bytes`). In a format 3 repository the two are one
    /// unit (block bytes, then checksum bytes) and one stream record, so the replicas of a
    /// block share one unit and a replica costs about 45 bytes of metadata; otherwise, or for
    /// a replica too big for one solo pack, two files.
    #[allow(clippy::too_many_arguments)]
    pub fn add_replica(
        &mut self,
        dir: &str,
        id: u64,
        genstamp: u64,
        block: &mut dyn Read,
        block_len: u64,
        block_meta: FileMeta,
        meta_bytes: &[u8],
        meta_meta: FileMeta,
    ) -> Result<(), RepoError> {
        let names = Replica::names(id, genstamp);
        let blk_path = format!("{dir}/{}", names.0);
        let meta_path = format!("{dir}/{}", names.1);
        self.ensure_packer()?;
        let total = block_len + meta_bytes.len() as u64;
        let fits = (SOLO_MAX_CHUNKS * self.repo.chunk_size()) as u64 >= total;
        let stream = stream_of(&blk_path).map(|(p, k)| (p.to_string(), k.to_string()));
        let Some((prefix, key)) = stream.filter(|_| self.spill.is_some() && fits && total > 0)
        else {
            self.add_file(&blk_path, &mut block.take(block_len), block_meta)?;
            self.add_file(&meta_path, &mut &meta_bytes[..], meta_meta)?;
            return Ok(());
        };
        self.check_new_path(&blk_path)?;
        self.check_new_path(&meta_path)?;
        let mut content = block.take(block_len).chain(meta_bytes);
        let (units, hasher) = self.store_content(&blk_path, &mut content)?;
        if hasher.count() != total || units.len() != 1 {
            return Err(RepoError::ReadSource {
                path: blk_path,
                source: io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!(
                        "{} bytes of block and checksums read, {total} expected",
                        hasher.count()
                    ),
                ),
            });
        }
        let record = Record::Replica(Replica {
            dir: tree::split(&key).0.to_string(),
            id,
            genstamp,
            len: block_len,
            meta_len: meta_bytes.len() as u64,
            meta: block_meta,
            meta_file: meta_meta,
            unit: *units[0].as_bytes(),
        });
        self.spill
            .as_mut()
            .expect("checked")
            .put(&prefix, &record, &blk_path)?;
        if let Some(sink) = self.replica_sink.as_mut() {
            sink(StoredUnit {
                block_path: &blk_path,
                genstamp,
                len: block_len,
                meta_len: meta_bytes.len() as u64,
                unit: &BlobId::of(&units[0]),
            });
        }
        self.stats.files += 2;
        if self.stats.new_blobs > 0 {
            crate::failpoint::hit("backup.blobs_written", &self.cancel);
        }
        Ok(())
    }

    /// Adds a replica whose block and checksum file an earlier backup stored (`block` and
    /// `meta` as it lists them) under `block_path` and `meta_path`: one stream record reusing
    /// their unit when they share one (format 3), else two known files.
    pub fn add_known_pair(
        &mut self,
        block_path: &str,
        block: &FileEntry,
        block_meta: FileMeta,
        meta_path: &str,
        meta: &FileEntry,
        meta_meta: FileMeta,
    ) -> Result<(), RepoError> {
        let known = KnownReplica::files(
            self.keeps_streams()?,
            block_path,
            block.clone(),
            block_meta,
            meta_path,
            meta.clone(),
            meta_meta,
        )?;
        self.add_known_replica(known)
    }

    /// Whether this backup keeps stream records (format 3): what [`KnownReplica`]s are made
    /// for.
    pub fn keeps_streams(&mut self) -> Result<bool, RepoError> {
        self.ensure_packer()?;
        Ok(self.spill.is_some())
    }

    /// Adds a replica an earlier backup stored, prepared with [`Self::keeps_streams`].
    pub fn add_known_replica(&mut self, known: KnownReplica) -> Result<(), RepoError> {
        match (known.0, self.spill.as_mut()) {
            (
                Known::Record {
                    prefix,
                    key,
                    rec,
                    block_path,
                    logical,
                },
                Some(spill),
            ) => {
                if self.cancel.is_cancelled() {
                    return Err(RepoError::Cancelled);
                }
                spill.put_encoded(&prefix, &key, &rec, &block_path)?;
                self.stats.files += 2;
                self.stats.logical_bytes += logical;
                self.stats.reused_blobs += 1;
                Ok(())
            }
            (Known::Record { block_path, .. }, None) => Err(RepoError::InvalidEntry {
                path: block_path,
                defect: EntryDefect::NoStreams,
            }),
            (Known::Files(f), _) => {
                self.add_known_file(&f.block_path, &f.block, f.block_meta)?;
                self.add_known_file(&f.meta_path, &f.meta, f.meta_meta)
            }
        }
    }

    /// The chunk size and compression level content is stored with (what an agent packs
    /// with).
    pub fn packing(&self) -> (usize, i32) {
        (self.repo.chunk_size(), self.repo.compression_level())
    }

    /// Of `ids` (blobs or units an agent is about to store), which this backup lacks; those
    /// are claimed for the asker (see [`Packer::claim_missing`]). Format 3 only.
    pub fn claim_missing(&mut self, ids: &[[u8; 32]]) -> Result<Vec<bool>, RepoError> {
        self.ensure_packer()?;
        match self.packer.as_mut() {
            Some(p) => p.claim_missing(ids),
            None => Err(RepoError::InvalidEntry {
                path: "(an agent's blobs)".into(),
                defect: EntryDefect::NoStreams,
            }),
        }
    }

    /// Takes a pack an agent reported stored (see [`Packer::adopt`]); its new bytes count as
    /// this backup's.
    pub fn adopt_pack(
        &mut self,
        key: &str,
        size: u64,
        trailer: &super::pack::Trailer,
    ) -> Result<(), RepoError> {
        if self.cancel.is_cancelled() {
            return Err(RepoError::Cancelled);
        }
        self.ensure_packer()?;
        let Some(p) = self.packer.as_mut() else {
            return Err(RepoError::InvalidEntry {
                path: key.to_string(),
                defect: EntryDefect::NoStreams,
            });
        };
        p.adopt(key, size, trailer)?;
        self.stats.new_blobs += trailer.entries.len().max(1) as u64;
        self.stats.stored_bytes += size;
        Ok(())
    }

    /// [`Self::adopt_pack`] of a pack an agent sent here (a local repository), spooled at
    /// `path` (made by [`Self::pack_spool`]); the file is gone afterwards.
    pub fn adopt_sent_pack(
        &mut self,
        key: &str,
        path: &std::path::Path,
        size: u64,
        trailer: &super::pack::Trailer,
    ) -> Result<(), RepoError> {
        if self.cancel.is_cancelled() {
            let _ = std::fs::remove_file(path);
            return Err(RepoError::Cancelled);
        }
        self.ensure_packer()?;
        let Some(p) = self.packer.as_mut() else {
            let _ = std::fs::remove_file(path);
            return Err(RepoError::InvalidEntry {
                path: key.to_string(),
                defect: EntryDefect::NoStreams,
            });
        };
        p.adopt_file(key, path, size, trailer)?;
        self.stats.new_blobs += trailer.entries.len().max(1) as u64;
        self.stats.stored_bytes += size;
        Ok(())
    }

    /// A spool file for a pack an agent sends (format 3).
    pub fn pack_spool(&mut self) -> Result<(std::path::PathBuf, std::fs::File), RepoError> {
        self.ensure_packer()?;
        match self.packer.as_ref() {
            Some(p) => p.spool_file(),
            None => Err(RepoError::InvalidEntry {
                path: "(an agent's pack)".into(),
                defect: EntryDefect::NoStreams,
            }),
        }
    }

    /// Adds the file `logical_path` an agent stored as `units` (`size` bytes): its path checked
    /// as any file's, each unit required to be in the repository or in this backup (stored
    /// here, adopted, or claimed by an agent that must still report it: the commit refuses a
    /// claim never reported).
    pub fn add_stored_file(
        &mut self,
        logical_path: &str,
        size: u64,
        units: Vec<BlobId>,
        meta: FileMeta,
    ) -> Result<FileEntry, RepoError> {
        if self.cancel.is_cancelled() {
            return Err(RepoError::Cancelled);
        }
        self.check_new_path(logical_path)?;
        self.ensure_packer()?;
        let Some(p) = self.packer.as_ref() else {
            return Err(RepoError::InvalidEntry {
                path: logical_path.to_string(),
                defect: EntryDefect::NoStreams,
            });
        };
        for u in &units {
            let id = super::streams::id_bytes(u);
            if !p.has(&id)? {
                return Err(RepoError::NotIndexed {
                    id: u.clone(),
                    path: logical_path.to_string(),
                });
            }
        }
        let entry = FileEntry {
            path: logical_path.to_string(),
            size,
            meta,
            hash: String::new(),
            chunks: Vec::new(),
            units,
            skip: 0,
        };
        manifest::validate_entry(&Entry::File(entry.clone())).map_err(|defect| {
            RepoError::InvalidEntry {
                path: logical_path.to_string(),
                defect,
            }
        })?;
        self.finish_entry(Entry::File(entry.clone()))?;
        self.stats.files += 1;
        self.stats.logical_bytes += size;
        Ok(entry)
    }

    /// Adds a HopsFS replica an agent stored as one unit (block bytes, then checksum bytes),
    /// as [`Self::add_replica`] records one: the block `blk_<id>` and checksum file
    /// `blk_<id>_<genstamp>.meta` in directory `dir` (a logical path of a volume's stream),
    /// their paths checked as any file's, the unit required in the repository or in this
    /// backup (stored, adopted or claimed).
    #[allow(clippy::too_many_arguments)]
    pub fn add_stored_replica(
        &mut self,
        dir: &str,
        id: u64,
        genstamp: u64,
        len: u64,
        meta_len: u64,
        block_meta: FileMeta,
        meta_meta: FileMeta,
        unit: &BlobId,
    ) -> Result<(), RepoError> {
        if self.cancel.is_cancelled() {
            return Err(RepoError::Cancelled);
        }
        let names = Replica::names(id, genstamp);
        let blk_path = format!("{dir}/{}", names.0);
        let meta_path = format!("{dir}/{}", names.1);
        self.ensure_packer()?;
        let fits = (SOLO_MAX_CHUNKS * self.repo.chunk_size()) as u64 >= len + meta_len;
        let stream = stream_of(&blk_path).map(|(p, k)| (p.to_string(), k.to_string()));
        let (Some(packer), Some((prefix, key)), true) = (self.packer.as_ref(), stream, fits) else {
            return Err(RepoError::InvalidEntry {
                path: blk_path,
                defect: EntryDefect::NoStreams,
            });
        };
        self.check_new_path(&blk_path)?;
        self.check_new_path(&meta_path)?;
        let unit_id = super::streams::id_bytes(unit);
        if !packer.has(&unit_id)? {
            return Err(RepoError::NotIndexed {
                id: unit.clone(),
                path: blk_path,
            });
        }
        let record = Record::Replica(Replica {
            dir: tree::split(&key).0.to_string(),
            id,
            genstamp,
            len,
            meta_len,
            meta: block_meta,
            meta_file: meta_meta,
            unit: unit_id,
        });
        self.spill
            .as_mut()
            .expect("a packed backup keeps streams")
            .put(&prefix, &record, &blk_path)?;
        if let Some(sink) = self.replica_sink.as_mut() {
            sink(StoredUnit {
                block_path: &blk_path,
                genstamp,
                len,
                meta_len,
                unit,
            });
        }
        self.stats.files += 2;
        self.stats.logical_bytes += len + meta_len;
        Ok(())
    }

    /// The token that stops this backup.
    pub fn cancel(&self) -> &CancellationToken {
        &self.cancel
    }

    /// Adds a file whose content is already in the repository, as `known` lists it in a
    /// committed manifest (the same chunks, size and hash), under `logical_path`. Nothing is
    /// read or written: used for immutable files (finalized HopsFS blocks) that an earlier
    /// backup stored. Safe because blobs referenced by a committed manifest are never collected
    /// while a backup runs.
    pub fn add_known_file(
        &mut self,
        logical_path: &str,
        known: &FileEntry,
        meta: FileMeta,
    ) -> Result<(), RepoError> {
        if self.cancel.is_cancelled() {
            return Err(RepoError::Cancelled);
        }
        self.check_new_path(logical_path)?;
        let entry = Entry::File(FileEntry {
            path: logical_path.to_string(),
            size: known.size,
            meta,
            hash: known.hash.clone(),
            chunks: known.chunks.clone(),
            units: known.units.clone(),
            skip: known.skip,
        });
        manifest::validate_entry(&entry).map_err(|defect| RepoError::InvalidEntry {
            path: logical_path.to_string(),
            defect,
        })?;
        self.stats.files += 1;
        self.stats.logical_bytes += known.size;
        self.stats.reused_blobs += (known.chunks.len() + known.units.len()) as u64;
        self.finish_entry(entry)
    }

    pub fn add_dir(&mut self, logical_path: &str, meta: FileMeta) -> Result<(), RepoError> {
        self.check_new_path(logical_path)?;
        self.finish_entry(Entry::Dir {
            path: logical_path.to_string(),
            meta,
        })
    }

    pub fn add_symlink(
        &mut self,
        logical_path: &str,
        target: &str,
        meta: FileMeta,
    ) -> Result<(), RepoError> {
        self.check_new_path(logical_path)?;
        let entry = Entry::Symlink {
            path: logical_path.to_string(),
            target: target.to_string(),
            meta,
        };
        manifest::validate_entry(&entry).map_err(|defect| RepoError::InvalidEntry {
            path: logical_path.to_string(),
            defect,
        })?;
        self.finish_entry(entry)
    }

    /// Writes the manifest, which makes the backup exist. Every blob it references was durably
    /// stored by the `add_file` that returned it. Refused if the token was cancelled, if the
    /// entries are inconsistent (something below a file or symlink) or if a backup with this id
    /// already exists.
    pub fn commit(mut self, info: BackupInfo) -> Result<Manifest, RepoError> {
        if self.cancel.is_cancelled() {
            return Err(RepoError::Cancelled);
        }
        manifest::validate_entries(&self.entries)
            .map_err(|(path, defect)| RepoError::InvalidEntry { path, defect })?;
        self.ensure_packer()?;
        let storage = self.repo.storage().clone();
        let key = manifest_key(&self.id);
        let cancel = self.cancel.clone();
        if storage.exists(&key)? {
            return Err(RepoError::BackupExists { id: self.id });
        }
        let entries = std::mem::take(&mut self.entries);
        let (format_version, streams) = match (self.packer.as_mut(), self.spill.as_mut()) {
            (Some(packer), Some(spill)) => {
                let streams = super::streams::write_streams(&self.repo, packer, &self.id, spill)?;
                // Packs durable, then the index objects naming them, then the manifest.
                packer.finish()?;
                (PACKED_FORMAT_VERSION, streams)
            }
            _ => (FORMAT_VERSION, Vec::new()),
        };
        let manifest = Manifest {
            format_version,
            id: self.id.clone(),
            info,
            entries,
            streams,
        };
        let t0 = std::time::Instant::now();
        let encoded = manifest::encode(&manifest, &key, self.repo.compression_level())?;
        let encoded = self.repo.seal(&key, encoded)?;
        let t1 = std::time::Instant::now();
        // Every blob this backup wrote is durable before the manifest names it.
        storage.flush()?;
        crate::failpoint::hit("backup.flushed", &cancel);
        if cancel.is_cancelled() {
            return Err(RepoError::Cancelled);
        }
        let t2 = std::time::Instant::now();
        storage.put(&key, &encoded)?;
        tracing::debug!(
            entries = manifest.entries.len(),
            streams = manifest.streams.len(),
            bytes = encoded.len(),
            encode_ms = (t1 - t0).as_millis() as u64,
            flush_ms = (t2 - t1).as_millis() as u64,
            put_ms = t2.elapsed().as_millis() as u64,
            "manifest committed"
        );
        Ok(manifest)
    }

    fn check_new_path(&self, path: &str) -> Result<(), RepoError> {
        valid_path(path)?;
        let seen = match (&self.spill, stream_of(path)) {
            (Some(spill), Some((prefix, key))) => spill.contains(prefix, key)?,
            _ => self.seen.contains(path),
        };
        if seen {
            return Err(RepoError::InvalidEntry {
                path: path.to_string(),
                defect: EntryDefect::Duplicate,
            });
        }
        Ok(())
    }

    /// Records `entry`: in the manifest, or (format 3) in its stream.
    fn finish_entry(&mut self, entry: Entry) -> Result<(), RepoError> {
        self.ensure_packer()?;
        if let Some(spill) = self.spill.as_mut() {
            if let Some((prefix, key)) = stream_of(entry.path()) {
                // A part of a unit (a replica's checksum file) is recorded with its replica,
                // never as a file of its own (`add_known_pair`).
                if matches!(&entry, Entry::File(f) if f.skip != 0) {
                    return Err(RepoError::InvalidEntry {
                        path: entry.path().to_string(),
                        defect: EntryDefect::ChunksDoNotFitSize,
                    });
                }
                let (prefix, key, path) = (
                    prefix.to_string(),
                    key.to_string(),
                    entry.path().to_string(),
                );
                return spill.put(&prefix, &record_of(entry, &key), &path);
            }
        }
        self.seen.insert(entry.path());
        self.entries.push(entry);
        Ok(())
    }

    /// Uses `n` chunk workers instead of the default (for measurements).
    #[cfg(test)]
    pub(crate) fn set_workers(&mut self, n: usize) {
        self.workers = n.max(1);
        self.kits.clear();
    }

    fn ensure_kits(&mut self) -> Result<(), RepoError> {
        if !self.kits.is_empty() {
            return Ok(());
        }
        let workers = self.workers;
        let bound = zstd::zstd_safe::compress_bound(self.repo.chunk_size());
        for _ in 0..workers {
            let compressor = zstd::bulk::Compressor::new(self.repo.compression_level())
                .map_err(|source| RepoError::ZstdContext { source })?;
            self.kits.push(WorkerKit {
                compressor,
                out: Vec::with_capacity(bound),
                keys: self.repo.keyring(),
                sealed: Vec::new(),
            });
        }
        Ok(())
    }

    /// Stores a file of more than one chunk: this thread reads and hashes the whole file while
    /// the workers hash, compress and (formats 1 and 2) deduplicate and store chunks. Returns
    /// the chunk hashes in file order (formats 1 and 2) or the units (format 3: solo packs of
    /// at most [`SOLO_MAX_CHUNKS`] chunks, the last unit a data blob when it has one chunk).
    fn pipeline(
        &mut self,
        path: &str,
        reader: &mut dyn Read,
        first: Vec<u8>,
        hasher: &mut blake3::Hasher,
    ) -> Result<Vec<blake3::Hash>, RepoError> {
        let chunk_size = self.repo.chunk_size();
        let storage = self.repo.storage().clone();
        let storage = storage.as_ref();
        let keys = self.repo.keyring();
        let BackupWriter {
            cancel,
            stats,
            progress,
            spare,
            kits,
            recent,
            packer,
            ..
        } = self;
        let packed = packer.is_some();
        let max_in_flight = kits.len() + 1;
        let (job_tx, job_rx) = mpsc::sync_channel::<Job>(1);
        let job_rx = Mutex::new(job_rx);
        let (done_tx, done_rx) = mpsc::channel::<Done>();
        let mut hashes: Vec<Option<blake3::Hash>> = Vec::new();
        let mut failure: Option<RepoError> = None;
        let mut units = Units::new(keys.as_deref());

        let mut absorb = |done: Done,
                          failure: &mut Option<RepoError>,
                          spare: &mut Vec<Vec<u8>>,
                          units: &mut Units,
                          stats: &mut WriteStats,
                          progress: &mut Option<ProgressFn>| {
            spare.push(done.buf);
            match done.result {
                Ok(stored) if packed => {
                    units.ready.insert(done.seq, (done.len, stored));
                }
                Ok(stored) => {
                    if hashes.len() <= done.seq {
                        hashes.resize(done.seq + 1, None);
                    }
                    hashes[done.seq] = Some(stored.hash);
                    record(stats, progress, done.len, &stored);
                }
                Err(e) => {
                    if failure.is_none() {
                        *failure = Some(e);
                    }
                }
            }
        };

        let mut sent = 0usize;
        std::thread::scope(|scope| {
            for kit in kits.iter_mut() {
                let done_tx = done_tx.clone();
                let job_rx = &job_rx;
                let recent = &*recent;
                let spawned = std::thread::Builder::new()
                    .name("hopsdr-chunk".to_string())
                    .spawn_scoped(scope, move || {
                        worker(storage, recent, kit, job_rx, &done_tx, path, packed)
                    });
                if let Err(source) = spawned {
                    failure = Some(RepoError::Thread {
                        path: path.to_string(),
                        source,
                    });
                    break;
                }
            }
            drop(done_tx);

            let mut next = Some((first, chunk_size));
            let mut in_flight = 0usize;
            while failure.is_none() {
                let Some((buf, len)) = next.take() else { break };
                if cancel.is_cancelled() {
                    spare.push(buf);
                    failure = Some(RepoError::Cancelled);
                    break;
                }
                hasher.update(&buf[..len]);
                if packed {
                    units.read(&buf[..len]);
                }
                while in_flight >= max_in_flight {
                    match done_rx.recv() {
                        Ok(done) => {
                            in_flight -= 1;
                            absorb(done, &mut failure, spare, &mut units, stats, progress);
                        }
                        Err(_) => break,
                    }
                }
                if let Err(mpsc::SendError(job)) = job_tx.send(Job {
                    seq: sent,
                    buf,
                    len,
                }) {
                    // Every worker is gone; they said why, or failed to start.
                    spare.push(job.buf);
                    break;
                }
                in_flight += 1;
                sent += 1;
                if len < chunk_size {
                    break;
                }
                // Read the next chunk while the workers store this one.
                let mut buf = take_buffer(spare, chunk_size);
                match read_full(reader, &mut buf) {
                    Ok(0) => spare.push(buf),
                    Ok(n) => next = Some((buf, n)),
                    Err(source) => {
                        spare.push(buf);
                        failure.get_or_insert(RepoError::ReadSource {
                            path: path.to_string(),
                            source,
                        });
                    }
                }
                while let Ok(done) = done_rx.try_recv() {
                    in_flight -= 1;
                    absorb(done, &mut failure, spare, &mut units, stats, progress);
                }
                if let (Some(p), None) = (packer.as_mut(), &failure) {
                    if let Err(e) = units.emit(p, stats, progress) {
                        failure = Some(e);
                    }
                }
            }
            drop(job_tx);
            for done in done_rx.iter() {
                absorb(done, &mut failure, spare, &mut units, stats, progress);
            }
        });

        if let Some(e) = failure {
            units.abandon();
            return Err(e);
        }
        if let Some(p) = packer.as_mut() {
            units.eof();
            if let Err(e) = units.emit(p, stats, progress) {
                units.abandon();
                return Err(e);
            }
            return match units.done(sent) {
                Some(u) => Ok(u),
                None => Err(RepoError::Thread {
                    path: path.to_string(),
                    source: io::Error::other("a chunk worker stopped before finishing its chunks"),
                }),
            };
        }
        let hashes: Option<Vec<blake3::Hash>> = hashes.into_iter().collect();
        match hashes {
            Some(h) if h.len() == sent => Ok(h),
            _ => Err(RepoError::Thread {
                path: path.to_string(),
                source: io::Error::other("a chunk worker stopped before finishing its chunks"),
            }),
        }
    }
}

/// Most chunks in one solo pack (a 128 MiB HopsFS block and its checksums fit one).
pub const SOLO_MAX_CHUNKS: usize = 33;

/// Format 3: a file's chunks, compressed by the workers in any order, appended in file order
/// to solo packs (one per unit of at most [`SOLO_MAX_CHUNKS`] chunks), and each unit's hash.
struct Units {
    /// Compressed chunks waiting for their turn: seq → (length, stored).
    ready: std::collections::BTreeMap<usize, (usize, Stored)>,
    next: usize,
    /// Chunks read so far, and whether that is all.
    read: usize,
    at_eof: bool,
    hasher: blake3::Hasher,
    /// Per finished unit (by reading): its hash and chunk count.
    finished: Vec<(blake3::Hash, usize)>,
    solo: Option<super::packer::SoloPack>,
    units: Vec<blake3::Hash>,
}

impl Units {
    fn new(keys: Option<&Keyring>) -> Units {
        let hasher = keys.map_or_else(blake3::Hasher::new, |k| k.blob_hasher());
        Units {
            ready: Default::default(),
            next: 0,
            read: 0,
            at_eof: false,
            hasher,
            finished: Vec::new(),
            solo: None,
            units: Vec::new(),
        }
    }

    /// The reading thread read the next chunk.
    fn read(&mut self, data: &[u8]) {
        self.hasher.update(data);
        self.read += 1;
        if self.read % SOLO_MAX_CHUNKS == 0 {
            self.finish_unit();
        }
    }

    fn finish_unit(&mut self) {
        let start = self.finished.iter().map(|(_, n)| n).sum::<usize>();
        let n = self.read - start;
        if n > 0 {
            let h = self.hasher.finalize();
            self.hasher.reset();
            self.finished.push((h, n));
        }
    }

    fn eof(&mut self) {
        if !self.at_eof {
            self.at_eof = true;
            self.finish_unit();
        }
    }

    /// Appends the chunks whose turn it is.
    fn emit(
        &mut self,
        packer: &mut Packer,
        stats: &mut WriteStats,
        progress: &mut Option<ProgressFn>,
    ) -> Result<(), RepoError> {
        while let Some(entry) = self.ready.first_entry() {
            if *entry.key() != self.next {
                break;
            }
            let s = self.next;
            let unit = s / SOLO_MAX_CHUNKS;
            let pos = s % SOLO_MAX_CHUNKS;
            let count = self.finished.get(unit).map(|(_, n)| *n);
            let single = match count {
                Some(n) => n == 1,
                // A unit's first chunk: single unless more was read into the same unit.
                None if pos == 0 => {
                    if self.read > s + 1 {
                        false
                    } else {
                        break; // wait for the next read
                    }
                }
                None => false,
            };
            let (len, mut stored) = entry.remove();
            self.next += 1;
            let sealed = stored.sealed.take().unwrap_or_default();
            if single {
                let id = *stored.hash.as_bytes();
                if packer.has(&id)? {
                    stored.written = None;
                } else {
                    packer.add(EntryKind::Data, id, &sealed, len as u32)?;
                }
                record(stats, progress, len, &stored);
                self.units.push(stored.hash);
                continue;
            }
            if self.solo.is_none() {
                self.solo = Some(packer.begin_solo()?);
            }
            let solo = self.solo.as_mut().expect("begun");
            solo.add(*stored.hash.as_bytes(), &sealed, len as u32)?;
            record(stats, progress, len, &stored);
            self.finish_open_solo(packer)?;
        }
        self.finish_open_solo(packer)
    }

    /// Finishes the open solo pack once its unit's last chunk was appended (the unit's chunk
    /// count may become known only after its last chunk was).
    fn finish_open_solo(&mut self, packer: &mut Packer) -> Result<(), RepoError> {
        if self.solo.is_none() || self.next == 0 {
            return Ok(());
        }
        let unit = (self.next - 1) / SOLO_MAX_CHUNKS;
        if let Some(&(h, n)) = self.finished.get(unit) {
            if self.next == unit * SOLO_MAX_CHUNKS + n {
                let solo = self.solo.take().expect("open");
                let _ = packer.finish_solo(solo, *h.as_bytes())?;
                self.units.push(h);
            }
        }
        Ok(())
    }

    /// The units, once all `sent` chunks were appended.
    fn done(self, sent: usize) -> Option<Vec<blake3::Hash>> {
        (self.next == sent && self.solo.is_none() && self.ready.is_empty()).then_some(self.units)
    }

    fn abandon(&mut self) {
        if let Some(s) = self.solo.take() {
            s.abandon();
        }
    }
}

/// Adds a stored chunk of `len` bytes to the totals, and reports them.
fn record(stats: &mut WriteStats, progress: &mut Option<ProgressFn>, len: usize, stored: &Stored) {
    stats.logical_bytes += len as u64;
    match stored.written {
        Some(bytes) => {
            stats.new_blobs += 1;
            stats.stored_bytes += bytes;
        }
        None => stats.reused_blobs += 1,
    }
    if stored.healed {
        stats.healed_blobs += 1;
    }
    if let Some(progress) = progress.as_mut() {
        progress(stats);
    }
}

/// How many chunk workers to run at compression `level`.
///
/// At fast levels (≤ 3) a worker costs ~8 MiB (its chunk, its output, a small zstd context):
/// run two per core, so that one compresses while the other waits for its blob's fsync
/// (measured on 2 cores, 512 MiB: 1.28x `tar | zstd -1 -T0` with four workers, 1.10x with two;
/// 42 MiB peak RSS at level 3). Slower levels are CPU-bound and their zstd contexts are large
/// (~55 MiB each at level 19): one per core. Always at least two, at most [`MAX_WORKERS`].
fn default_workers(level: i32) -> usize {
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let per_core = if level <= 3 { 2 } else { 1 };
    (per_core * cores).clamp(2, MAX_WORKERS)
}

fn worker(
    storage: &dyn Storage,
    recent: &Mutex<RecentBlobs>,
    kit: &mut WorkerKit,
    jobs: &Mutex<mpsc::Receiver<Job>>,
    done: &mpsc::Sender<Done>,
    path: &str,
    packed: bool,
) {
    loop {
        let job = match jobs.lock() {
            Ok(rx) => rx.recv(),
            Err(poisoned) => poisoned.into_inner().recv(),
        };
        let Ok(job) = job else { return };
        let result = if packed {
            seal_chunk(kit, &job.buf[..job.len], path)
        } else {
            store_chunk(storage, recent, kit, &job.buf[..job.len], path)
        };
        let reply = Done {
            seq: job.seq,
            len: job.len,
            buf: job.buf,
            result,
        };
        if done.send(reply).is_err() {
            return;
        }
    }
}

/// Hashes `data` and stores it as a blob unless the repository already has it.
fn store_chunk(
    storage: &dyn Storage,
    recent: &Mutex<RecentBlobs>,
    kit: &mut WorkerKit,
    data: &[u8],
    path: &str,
) -> Result<Stored, RepoError> {
    let hash = match &kit.keys {
        Some(k) => k.blob_hash(data),
        None => blake3::hash(data),
    };
    let id = BlobId::of(&hash);
    let key = blob_key(&id);
    let (claimed, suspect) = {
        let mut r = recent.lock().unwrap_or_else(|p| p.into_inner());
        (r.claim(*hash.as_bytes()), r.suspect.contains(&id))
    };
    if !claimed {
        return Ok(Stored {
            hash,
            written: None,
            healed: false,
            sealed: None,
        });
    }
    let result = store_new_chunk(storage, kit, &key, data, path, suspect);
    let mut r = recent.lock().unwrap_or_else(|p| p.into_inner());
    match result {
        Err(e) => {
            // Let a later chunk with this content try again.
            r.forget(hash.as_bytes());
            Err(e)
        }
        Ok(written) => {
            let healed = suspect && written.is_some();
            if healed {
                r.suspect.remove(&id);
                r.healed.push(id);
            }
            Ok(Stored {
                hash,
                written,
                healed,
                sealed: None,
            })
        }
    }
}

/// Format 3: hashes `data` and makes its stored form (compressed; sealed with its blob key
/// when encrypted), for the packer to append.
fn seal_chunk(kit: &mut WorkerKit, data: &[u8], path: &str) -> Result<Stored, RepoError> {
    let hash = match &kit.keys {
        Some(k) => k.blob_hash(data),
        None => blake3::hash(data),
    };
    let key = blob_key(&BlobId::of(&hash));
    let stored = compress_and_seal(kit, &key, data, path)?.to_vec();
    Ok(Stored {
        hash,
        written: Some(stored.len() as u64),
        healed: false,
        sealed: Some(stored),
    })
}

/// Format 3: stores a content of at most one chunk as a blob in the open data pack, unless the
/// repository has it (and it is not known damaged).
fn store_packed_blob(
    packer: &mut Packer,
    recent: &Mutex<RecentBlobs>,
    kit: &mut WorkerKit,
    data: &[u8],
    path: &str,
) -> Result<Stored, RepoError> {
    let hash = match &kit.keys {
        Some(k) => k.blob_hash(data),
        None => blake3::hash(data),
    };
    let id = BlobId::of(&hash);
    let suspect = recent
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .suspect
        .contains(&id);
    if !suspect && packer.has(hash.as_bytes())? {
        return Ok(Stored {
            hash,
            written: None,
            healed: false,
            sealed: None,
        });
    }
    let stored = compress_and_seal(kit, &blob_key(&id), data, path)?;
    let n = stored.len() as u64;
    let stored = stored.to_vec();
    packer.add(
        EntryKind::Data,
        *hash.as_bytes(),
        &stored,
        data.len() as u32,
    )?;
    if suspect {
        let mut r = recent.lock().unwrap_or_else(|p| p.into_inner());
        r.suspect.remove(&id);
        r.healed.push(id);
    }
    Ok(Stored {
        hash,
        written: Some(n),
        healed: suspect,
        sealed: None,
    })
}

/// Compresses `data` (and seals it as object `key` when encrypted) into the kit's buffers.
fn compress_and_seal<'k>(
    kit: &'k mut WorkerKit,
    key: &str,
    data: &[u8],
    path: &str,
) -> Result<&'k [u8], RepoError> {
    kit.out.clear();
    kit.compressor
        .compress_to_buffer(data, &mut kit.out)
        .map_err(|source| RepoError::Compress {
            path: path.to_string(),
            source,
        })?;
    Ok(match &kit.keys {
        Some(keys) => {
            keys.seal_into(key, &kit.out, &mut kit.sealed)
                .map_err(|e| RepoError::Random(e.to_string()))?;
            &kit.sealed
        }
        None => &kit.out,
    })
}

/// Writes the blob `key` unless the storage has it (`force`: the one it has is known bad).
fn store_new_chunk(
    storage: &dyn Storage,
    kit: &mut WorkerKit,
    key: &str,
    data: &[u8],
    path: &str,
    force: bool,
) -> Result<Option<u64>, RepoError> {
    if !force && storage.exists(key)? {
        return Ok(None);
    }
    let stored = compress_and_seal(kit, key, data, path)?;
    storage.put_deferred(key, stored)?;
    Ok(Some(stored.len() as u64))
}

/// A chunk buffer, `chunk_size` long, from the spares if there is one.
fn take_buffer(spare: &mut Vec<Vec<u8>>, chunk_size: usize) -> Vec<u8> {
    match spare.pop() {
        Some(buf) if buf.len() == chunk_size => buf,
        _ => vec![0; chunk_size],
    }
}

/// Reads until `buf` is full or the reader is exhausted; returns the bytes read.
pub(crate) fn read_full(reader: &mut dyn Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// A logical path a manifest may hold, or the entry's error naming it.
fn valid_path(path: &str) -> Result<(), RepoError> {
    validate_logical_path(path).map_err(|d| RepoError::InvalidEntry {
        path: path.to_string(),
        defect: EntryDefect::Path(d),
    })
}
