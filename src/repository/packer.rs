//! Writing format 3's objects: blobs appended to the open data or meta pack, each pack spooled
//! to a file and handed to the store when it reaches the target size; a solo pack per file
//! bigger than a chunk; and, once the packs are durable, index objects that locate what they
//! hold. Order on the store: packs, then the index objects naming them, then (the writer's
//! commit) the manifest — each prefix of that sequence leaves a readable repository.
//!
//! A blob is written once: before adding one, [`Packer::has`] asks the open packs, what was
//! uploaded but not yet indexed, and the index cache.

use std::collections::HashMap;
use std::io::{BufWriter, Write};
use std::path::PathBuf;

use super::error::RepoError;
use super::index::{self, EntryKind, IndexObject, Location};
use super::pack::{BlobKind, PackKind, PackWriter, Unit};
use super::storage::{spool_file, StorageError};
use super::{blob_key, Repository};
use crate::ids::BlobId;

/// A shared pack is handed to the store once it holds this many bytes.
pub const PACK_TARGET: u64 = 32 << 20;
/// An index object is written once this many locations wait for one.
const INDEX_BATCH: usize = 50_000;

/// The key of pack `id`: `packs/<first two hex digits>/<32 hex>`.
pub fn pack_key(id: &[u8; 16]) -> String {
    let h: String = id.iter().map(|b| format!("{b:02x}")).collect();
    format!("packs/{}/{h}", &h[..2])
}

/// The pack id a key names, if it is a pack's key.
pub fn pack_of_key(key: &str) -> Option<[u8; 16]> {
    let (fan, h) = key.strip_prefix("packs/")?.split_once('/')?;
    if h.len() != 32 || !h.starts_with(fan) || fan.len() != 2 {
        return None;
    }
    let mut id = [0u8; 16];
    for (i, b) in id.iter_mut().enumerate() {
        *b = u8::from_str_radix(h.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    (pack_key(&id) == key).then_some(id)
}

struct OpenPack {
    id: [u8; 16],
    key: String,
    path: PathBuf,
    writer: PackWriter<BufWriter<std::fs::File>>,
    /// Ids added, with their offsets and lengths, for the index once the pack is uploaded.
    added: Vec<([u8; 32], Location)>,
}

/// What a packer wrote.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct PackerStats {
    pub packs: u64,
    pub pack_bytes: u64,
    pub index_objects: u64,
    pub index_bytes: u64,
    pub meta_blobs: u64,
    pub meta_bytes: u64,
}

/// See the module documentation.
pub struct Packer {
    repo: Repository,
    data: Option<OpenPack>,
    meta: Option<OpenPack>,
    /// Uploaded (deferred) but in no index object yet.
    pending: HashMap<[u8; 32], Location>,
    /// Locations in the open packs.
    open: HashMap<[u8; 32], ()>,
    next_seq: u64,
    pub stats: PackerStats,
    compressor: Option<zstd::bulk::Compressor<'static>>,
}

impl std::fmt::Debug for Packer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Packer")
            .field("pending", &self.pending.len())
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

fn random_pack_id() -> Result<[u8; 16], RepoError> {
    Ok(*super::crypto::random::<16>().map_err(|e| RepoError::Random(e.to_string()))?)
}

fn io_err<'a>(
    path: &'a std::path::Path,
    op: &'static str,
) -> impl Fn(std::io::Error) -> RepoError + 'a {
    move |source| {
        RepoError::Storage(StorageError::Io {
            op,
            path: path.to_path_buf(),
            source,
        })
    }
}

impl Packer {
    /// A packer for `repo` (its index cache synced by the caller).
    pub fn new(repo: Repository) -> Result<Packer, RepoError> {
        let next_seq = repo.with_cache(|c| c.max_seq())? + 1;
        Ok(Packer {
            repo,
            data: None,
            meta: None,
            pending: HashMap::new(),
            open: HashMap::new(),
            next_seq,
            stats: PackerStats::default(),
            compressor: None,
        })
    }

    /// Whether blob (or unit) `id` is stored or being stored.
    pub fn has(&self, id: &[u8; 32]) -> Result<bool, RepoError> {
        if self.open.contains_key(id) || self.pending.contains_key(id) {
            return Ok(true);
        }
        Ok(self.repo.with_cache(|c| c.lookup(id))?.is_some())
    }

    fn spool(&self) -> Result<(PathBuf, std::fs::File), RepoError> {
        let dir = self.repo.spool_dir()?;
        spool_file(&dir).map_err(io_err(&dir, "create a spool file in"))
    }

    fn open_pack(&self, kind: PackKind) -> Result<OpenPack, RepoError> {
        let id = random_pack_id()?;
        let (path, file) = self.spool()?;
        let writer = PackWriter::new(BufWriter::with_capacity(1 << 20, file), kind)
            .map_err(io_err(&path, "write"))?;
        Ok(OpenPack {
            id,
            key: pack_key(&id),
            path,
            writer,
            added: Vec::new(),
        })
    }

    /// Appends a stored blob (compressed; sealed with its blob key when encrypted) of `raw_len`
    /// bytes to the open data or meta pack; closes the pack at the target size. The caller
    /// checked [`Packer::has`].
    pub fn add(
        &mut self,
        kind: EntryKind,
        id: [u8; 32],
        stored: &[u8],
        raw_len: u32,
    ) -> Result<(), RepoError> {
        let slot = match kind {
            EntryKind::Meta => &mut self.meta,
            _ => &mut self.data,
        };
        if slot.is_none() {
            let pk = if kind == EntryKind::Meta {
                PackKind::Meta
            } else {
                PackKind::Data
            };
            let p = self.open_pack(pk)?;
            let slot = match kind {
                EntryKind::Meta => &mut self.meta,
                _ => &mut self.data,
            };
            *slot = Some(p);
        }
        let slot = match kind {
            EntryKind::Meta => &mut self.meta,
            _ => &mut self.data,
        };
        let p = slot.as_mut().expect("opened");
        let blob_kind = if kind == EntryKind::Meta {
            BlobKind::Meta
        } else {
            BlobKind::Data
        };
        let e = p
            .writer
            .add(blob_kind, id, stored, raw_len)
            .map_err(io_err(&p.path, "write"))?;
        let loc = Location {
            pack: p.id,
            kind,
            offset: e.offset as u32,
            stored_len: e.stored_len,
            raw_len,
        };
        p.added.push((id, loc));
        self.open.insert(id, ());
        if p.writer.len() >= PACK_TARGET {
            let p = slot.take().expect("open");
            self.close(p, None)?;
        }
        Ok(())
    }

    /// Stores a meta blob (a page, root or layer) unless the repository has it; returns its id.
    pub fn add_meta(&mut self, plain: &[u8]) -> Result<[u8; 32], RepoError> {
        let keys = self.repo.keyring();
        let id = *match &keys {
            Some(k) => k.blob_hash(plain),
            None => blake3::hash(plain),
        }
        .as_bytes();
        if self.has(&id)? {
            return Ok(id);
        }
        let level = self.repo.compression_level();
        if self.compressor.is_none() {
            self.compressor = Some(
                zstd::bulk::Compressor::new(level)
                    .map_err(|source| RepoError::ZstdContext { source })?,
            );
        }
        let frame = self
            .compressor
            .as_mut()
            .expect("made")
            .compress(plain)
            .map_err(|source| RepoError::Compress {
                path: "(metadata)".into(),
                source,
            })?;
        let stored = match &keys {
            Some(k) => {
                let mut out = Vec::new();
                k.seal_into(
                    &blob_key(&BlobId::of(&blake3::Hash::from_bytes(id))),
                    &frame,
                    &mut out,
                )
                .map_err(|e| RepoError::Random(e.to_string()))?;
                out
            }
            None => frame,
        };
        let raw = u32::try_from(plain.len()).map_err(|_| RepoError::Compress {
            path: "(metadata)".into(),
            source: std::io::Error::other("metadata object over 4 GiB"),
        })?;
        self.stats.meta_blobs += 1;
        self.stats.meta_bytes += stored.len() as u64;
        self.add(EntryKind::Meta, id, &stored, raw)?;
        Ok(id)
    }

    /// Starts a solo pack for one file's unit.
    pub fn begin_solo(&self) -> Result<SoloPack, RepoError> {
        let p = self.open_pack(PackKind::Solo)?;
        Ok(SoloPack { pack: p, len: 0 })
    }

    /// Finishes a solo pack whose chunks make up unit `unit`: handed to the store unless the
    /// repository already has that unit (then the spooled pack is dropped). Returns the bytes
    /// written (0 when it was already there).
    pub fn finish_solo(&mut self, solo: SoloPack, unit: [u8; 32]) -> Result<u64, RepoError> {
        if self.has(&unit)? {
            let _ = std::fs::remove_file(&solo.pack.path);
            return Ok(0);
        }
        let len = solo.len;
        let size = self.close(solo.pack, Some(Unit { id: unit, len }))?;
        Ok(size)
    }

    /// Finishes pack `p`, hands it to the store; its blobs wait for an index object.
    fn close(&mut self, p: OpenPack, unit: Option<Unit>) -> Result<u64, RepoError> {
        let keys = self.repo.keyring();
        let OpenPack {
            id,
            key,
            path,
            writer,
            added,
        } = p;
        let result = writer
            .finish(unit, &key, keys.as_deref())
            .and_then(|(mut w, _, size)| {
                w.flush()?;
                Ok(size)
            });
        let size = match result {
            Ok(s) => s,
            Err(e) => {
                let _ = std::fs::remove_file(&path);
                return Err(io_err(&path, "write")(e));
            }
        };
        self.repo.storage().put_file_deferred(&key, &path)?;
        self.stats.packs += 1;
        self.stats.pack_bytes += size;
        crate::failpoint::hit("pack.uploaded", &tokio_util::sync::CancellationToken::new());
        for (bid, loc) in added {
            self.open.remove(&bid);
            self.pending.insert(bid, loc);
        }
        if let Some(u) = unit {
            self.pending.insert(
                u.id,
                Location {
                    pack: id,
                    kind: EntryKind::Unit,
                    offset: 0,
                    stored_len: u32::try_from(size).unwrap_or(u32::MAX),
                    raw_len: u32::try_from(u.len).unwrap_or(u32::MAX),
                },
            );
        }
        if self.pending.len() >= INDEX_BATCH {
            self.write_index()?;
        }
        Ok(size)
    }

    /// Closes the open packs, makes every pack durable and writes the index objects for them:
    /// afterwards everything added is findable through the index.
    pub fn finish(&mut self) -> Result<(), RepoError> {
        if let Some(p) = self.data.take() {
            self.close(p, None)?;
        }
        if let Some(p) = self.meta.take() {
            self.close(p, None)?;
        }
        self.write_index()
    }

    /// Flushes the store (the packs become durable) and writes one index object for what waits.
    fn write_index(&mut self) -> Result<(), RepoError> {
        self.repo.storage().flush()?;
        if self.pending.is_empty() {
            return Ok(());
        }
        // Taken whole: the map's table is freed, not kept at its largest for the next batch.
        let locs: Vec<([u8; 32], Location)> =
            std::mem::take(&mut self.pending).into_iter().collect();
        let obj = IndexObject::build(self.next_seq, chrono::Utc::now().timestamp(), vec![], locs);
        self.next_seq += 1;
        let (key, stored) = self.repo.encode_index(&obj)?;
        self.repo.storage().put(&key, &stored)?;
        self.stats.index_objects += 1;
        self.stats.index_bytes += stored.len() as u64;
        self.repo.with_cache(|c| c.ingest(&key, &obj))?;
        crate::failpoint::hit("index.written", &tokio_util::sync::CancellationToken::new());
        Ok(())
    }
}

impl Drop for Packer {
    fn drop(&mut self) {
        for p in [self.data.take(), self.meta.take()].into_iter().flatten() {
            let _ = std::fs::remove_file(&p.path);
        }
    }
}

/// A solo pack being written; see [`Packer::begin_solo`].
pub struct SoloPack {
    pack: OpenPack,
    len: u64,
}

impl SoloPack {
    /// Appends the next chunk (stored form) of `raw_len` content bytes.
    pub fn add(&mut self, id: [u8; 32], stored: &[u8], raw_len: u32) -> Result<(), RepoError> {
        let p = &mut self.pack;
        p.writer
            .add(BlobKind::Chunk, id, stored, raw_len)
            .map_err(io_err(&p.path, "write"))?;
        self.len += u64::from(raw_len);
        Ok(())
    }

    /// Content bytes so far.
    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Drops the spooled pack (the file failed).
    pub fn abandon(self) {
        let _ = std::fs::remove_file(&self.pack.path);
    }
}

/// Keys of index objects are content-addressed: `index/<h>`.
pub fn index_key(h: &[u8; 32]) -> String {
    index::key_of(h)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pack_keys_parse_back() {
        let id = [0x1f; 16];
        let key = pack_key(&id);
        assert_eq!(key, "packs/1f/1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f");
        assert_eq!(pack_of_key(&key), Some(id));
        assert_eq!(
            pack_of_key("packs/1e/1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f"),
            None
        );
        assert_eq!(
            pack_of_key("packs/1f/1F1f1f1f1f1f1f1f1f1f1f1f1f1f1f1f"),
            None
        );
        assert_eq!(pack_of_key("blobs/1f/x"), None);
    }
}
