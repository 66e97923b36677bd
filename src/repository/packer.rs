//! Writing format 3's objects: blobs appended to the open data or meta pack, each pack spooled
//! to a file and handed to the store when it reaches the target size; a solo pack per file
//! bigger than a chunk; and, once the packs are durable, index objects that locate what they
//! hold. Order on the store: packs, then the index objects naming them, then (the writer's
//! commit) the manifest — each prefix of that sequence leaves a readable repository.
//!
//! A blob is written once: before adding one, [`Packer::has`] asks the open packs, what was
//! uploaded but not yet indexed, the claims and the index cache.
//!
//! Packs built elsewhere (a node's agent, which packs its own files) join through claims and
//! adoption: [`Packer::claim_missing`] answers which of a batch of ids the backup still lacks and
//! claims those for the asker (a second asker is told they are present, so no blob is stored
//! twice); [`Packer::adopt`] takes a pack reported stored only after reading its tail back from
//! the store (footer and trailer: the object is whole and lists exactly what was reported), and
//! its blobs then wait for an index object like the packer's own. A claim is only in memory:
//! [`Packer::finish`] refuses to index anything while one is unreported, so a backup whose agent
//! failed commits nothing and no blob counts as present that was not written.

use std::collections::{HashMap, HashSet};
use std::io::{BufWriter, Write};
use std::path::PathBuf;

use super::crypto::Keyring;
use super::error::RepoError;
use super::index::{self, EntryKind, IndexObject, Location};
use super::pack::{self, BlobKind, PackKind, PackWriter, Trailer, Unit, FOOTER_LEN, HEADER_LEN};
use super::storage::{spool_file, Storage, StorageError};
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
    /// Ids another writer (an agent) was told to store and has not reported yet.
    claims: HashSet<[u8; 32]>,
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
            claims: HashSet::new(),
            next_seq,
            stats: PackerStats::default(),
            compressor: None,
        })
    }

    /// Whether blob (or unit) `id` is stored or being stored (here or by a claimant).
    pub fn has(&self, id: &[u8; 32]) -> Result<bool, RepoError> {
        if self.open.contains_key(id) || self.pending.contains_key(id) || self.claims.contains(id) {
            return Ok(true);
        }
        Ok(self.repo.with_cache(|c| c.lookup(id))?.is_some())
    }

    /// Which of `ids` the repository lacks (`true`: the asker must store it): each of those is
    /// claimed, so that [`Packer::has`] says it is there from now on (also to the next asker,
    /// and for an id repeated in `ids`).
    pub fn claim_missing(&mut self, ids: &[[u8; 32]]) -> Result<Vec<bool>, RepoError> {
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            let missing = !self.has(id)?;
            if missing {
                self.claims.insert(*id);
            }
            out.push(missing);
        }
        Ok(out)
    }

    /// Claims still unreported.
    pub fn unreported_claims(&self) -> usize {
        self.claims.len()
    }

    /// Takes the pack another writer reported stored under `key`, `size` bytes, holding
    /// `reported` (see the module documentation). Refused, naming the pack, when the object
    /// is not whole, does not list what was reported, or holds a blob nobody claimed (it would
    /// be stored twice).
    pub fn adopt(&mut self, key: &str, size: u64, reported: &Trailer) -> Result<(), RepoError> {
        let keys = self.repo.keyring();
        let read = read_trailer(self.repo.storage().as_ref(), key, size, keys.as_deref());
        let locations = self.check_adoption(key, size, reported, read)?;
        self.take_adopted(locations, size)
    }

    /// [`Packer::adopt`] of a pack another writer sent here (a local repository), spooled at
    /// `path` (in [`Packer::spool_file`]'s directory): checked from the file, then handed to
    /// the store like the packer's own packs. The file is gone afterwards either way.
    pub fn adopt_file(
        &mut self,
        key: &str,
        path: &std::path::Path,
        size: u64,
        reported: &Trailer,
    ) -> Result<(), RepoError> {
        let keys = self.repo.keyring();
        let read = read_file_trailer(path, key, size, keys.as_deref());
        let checked = self
            .check_adoption(key, size, reported, read)
            .and_then(|l| match keys.is_some() {
                true => sealed_blobs(path, key, reported).map(|()| l),
                false => Ok(l),
            });
        let locations = match checked {
            Ok(l) => l,
            Err(e) => {
                let _ = std::fs::remove_file(path);
                return Err(e);
            }
        };
        self.repo.storage().put_file_deferred(key, path)?;
        self.take_adopted(locations, size)
    }

    /// A new spool file for a pack sent here ([`Packer::adopt_file`]).
    pub fn spool_file(&self) -> Result<(PathBuf, std::fs::File), RepoError> {
        self.spool()
    }

    /// The index locations of a pack reported as `reported` whose trailer was `read`: refused
    /// unless it is whole, as reported, and every blob in it was claimed.
    fn check_adoption(
        &self,
        key: &str,
        size: u64,
        reported: &Trailer,
        read: Result<Trailer, String>,
    ) -> Result<Vec<([u8; 32], Location)>, RepoError> {
        let refused = |reason: String| RepoError::AdoptRefused {
            pack: key.to_string(),
            reason,
        };
        let id = pack_of_key(key).ok_or_else(|| refused("not a pack's key".into()))?;
        let trailer = read.map_err(refused)?;
        if &trailer != reported {
            return Err(refused(format!(
                "its trailer lists {} blob(s) of kind {:?}, not the {} reported",
                trailer.entries.len(),
                trailer.kind,
                reported.entries.len()
            )));
        }
        let locations = locations_of(id, size, &trailer);
        if let Some((unclaimed, _)) = locations.iter().find(|(b, _)| !self.claims.contains(b)) {
            return Err(refused(format!(
                "it holds {}, which was not claimed for it",
                blake3::Hash::from_bytes(*unclaimed).to_hex()
            )));
        }
        Ok(locations)
    }

    fn take_adopted(
        &mut self,
        locations: Vec<([u8; 32], Location)>,
        size: u64,
    ) -> Result<(), RepoError> {
        for (b, loc) in locations {
            self.claims.remove(&b);
            self.pending.insert(b, loc);
        }
        self.stats.packs += 1;
        self.stats.pack_bytes += size;
        if self.pending.len() >= INDEX_BATCH {
            self.write_index()?;
        }
        Ok(())
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
            .finish(unit, &key, keys.as_deref().map(Keyring::agent))
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
            self.pending.insert(u.id, unit_location(id, size, &u));
        }
        if self.pending.len() >= INDEX_BATCH {
            self.write_index()?;
        }
        Ok(size)
    }

    /// Closes the open packs, makes every pack durable and writes the index objects for them:
    /// afterwards everything added is findable through the index.
    pub fn finish(&mut self) -> Result<(), RepoError> {
        if !self.claims.is_empty() {
            return Err(RepoError::Unreported {
                count: self.claims.len(),
            });
        }
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

/// Refused unless every blob of the pack at `path` is sealed (an encrypted repository: an
/// agent that sends plaintext is caught before its pack is stored).
fn sealed_blobs(path: &std::path::Path, key: &str, t: &Trailer) -> Result<(), RepoError> {
    use std::os::unix::fs::FileExt;
    let refused = |reason: String| RepoError::AdoptRefused {
        pack: key.to_string(),
        reason,
    };
    let f = std::fs::File::open(path).map_err(|e| refused(format!("{}: {e}", path.display())))?;
    for e in &t.entries {
        let mut head = [0u8; 8];
        f.read_exact_at(&mut head, e.offset)
            .map_err(|err| refused(format!("blob at byte {}: {err}", e.offset)))?;
        if !super::crypto::is_sealed(&head) {
            return Err(refused(format!(
                "the blob at byte {} is not sealed: plaintext for an encrypted repository",
                e.offset
            )));
        }
    }
    Ok(())
}

/// Where a solo pack's unit is: the whole pack.
fn unit_location(pack: [u8; 16], size: u64, u: &Unit) -> Location {
    Location {
        pack,
        kind: EntryKind::Unit,
        offset: 0,
        stored_len: u32::try_from(size).unwrap_or(u32::MAX),
        raw_len: u32::try_from(u.len).unwrap_or(u32::MAX),
    }
}

/// What the index records of pack `pack` (`size` bytes) with `trailer`: its unit for a solo
/// pack, else each data and meta blob.
pub fn locations_of(pack: [u8; 16], size: u64, trailer: &Trailer) -> Vec<([u8; 32], Location)> {
    match (trailer.kind, &trailer.unit) {
        (PackKind::Solo, Some(u)) => vec![(u.id, unit_location(pack, size, u))],
        _ => trailer
            .entries
            .iter()
            .filter_map(|e| {
                let kind = EntryKind::of_blob(e.kind)?;
                Some((
                    e.id,
                    Location {
                        pack,
                        kind,
                        offset: u32::try_from(e.offset).unwrap_or(u32::MAX),
                        stored_len: e.stored_len,
                        raw_len: e.raw_len,
                    },
                ))
            })
            .collect(),
    }
}

/// The trailer of the pack `key`, `size` bytes, read from its tail in the store (two ranged
/// reads: the footer, then the trailer it locates), checked; the reason, offset included, when
/// it is not a whole pack of that size.
pub fn read_trailer(
    storage: &dyn Storage,
    key: &str,
    size: u64,
    keys: Option<&Keyring>,
) -> Result<Trailer, String> {
    trailer_from(
        |offset, len| {
            storage
                .get_range(key, offset, len)
                .map_err(|e| e.to_string())
        },
        key,
        size,
        keys,
    )
}

/// [`read_trailer`] of the pack spooled at `path` (to be stored under `key`).
pub fn read_file_trailer(
    path: &std::path::Path,
    key: &str,
    size: u64,
    keys: Option<&Keyring>,
) -> Result<Trailer, String> {
    use std::os::unix::fs::FileExt;
    let f = std::fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    trailer_from(
        |offset, len| {
            let mut buf = vec![0u8; len as usize];
            let mut got = 0;
            while got < buf.len() {
                match f.read_at(&mut buf[got..], offset + got as u64) {
                    Ok(0) => break,
                    Ok(n) => got += n,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(format!("{}: {e}", path.display())),
                }
            }
            buf.truncate(got);
            Ok(buf)
        },
        key,
        size,
        keys,
    )
}

fn trailer_from(
    range: impl Fn(u64, u64) -> Result<Vec<u8>, String>,
    key: &str,
    size: u64,
    keys: Option<&Keyring>,
) -> Result<Trailer, String> {
    if size < HEADER_LEN + FOOTER_LEN {
        return Err(format!("{size} bytes is too short for a pack"));
    }
    // One byte more than the footer: an object longer than `size` shows.
    let tail = range(size - FOOTER_LEN, FOOTER_LEN + 1)?;
    if tail.len() as u64 != FOOTER_LEN {
        return Err(format!(
            "the object is not {size} bytes long (its tail from byte {} has {} bytes)",
            size - FOOTER_LEN,
            tail.len()
        ));
    }
    let footer = pack::parse_footer(&tail, size).map_err(|e| e.to_string())?;
    let stored = range(footer.trailer_offset(size), u64::from(footer.trailer_len))?;
    pack::parse_trailer(&stored, &footer, size, key, keys.map(Keyring::agent))
        .map_err(|e| e.to_string())
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
