//! Reading format 3's objects: the index cache kept in step with the index objects, and blobs,
//! units and metadata pages read from their packs by ranged reads and checked (opened when
//! sealed, decompressed within their declared length, hashed against their id). Every error
//! names the object and the byte offset.

use std::path::PathBuf;

use super::cache::{CacheError, IndexCache, SyncError, SyncReport};
use super::crypto::Keyring;
use super::error::{BlobDefect, RepoError};
use super::index::{self, EntryKind, IndexObject, Location};
use super::pack::{self, FOOTER_LEN};
use super::packer::pack_key;
use super::{blob_key, Repository};
use crate::ids::BlobId;

/// Longest metadata object (page, root) accepted.
pub const MAX_META_LEN: u32 = 64 << 20;
/// Longest stored index object accepted.
const MAX_INDEX_STORED: usize = 64 << 20;

/// Where a blob is stored (see [`Repository::blob_location`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobPlace {
    pub key: String,
    pub offset: u64,
    pub len: u64,
}

/// Windows of packs read from object storage, most recent last: a blob read fetches the
/// aligned window around it, and the blobs next to it (written together, read together by a
/// restore or a verify walking a stream) come from memory.
#[derive(Debug, Default)]
pub struct Windows {
    held: std::collections::VecDeque<([u8; 16], u64, std::sync::Arc<Vec<u8>>)>,
}

/// Size of a window, and how many are kept (per repository handle).
const WINDOW: u64 = 4 << 20;
const WINDOWS: usize = 6;

impl Windows {
    fn get(&mut self, pack: &[u8; 16], start: u64) -> Option<std::sync::Arc<Vec<u8>>> {
        let i = self
            .held
            .iter()
            .position(|(p, s, _)| p == pack && *s == start)?;
        let w = self.held.remove(i)?;
        let bytes = w.2.clone();
        self.held.push_back(w);
        Some(bytes)
    }

    fn put(&mut self, pack: [u8; 16], start: u64, bytes: std::sync::Arc<Vec<u8>>) {
        if self.held.len() >= WINDOWS {
            self.held.pop_front();
        }
        self.held.push_back((pack, start, bytes));
    }
}

/// Where the index cache lives and, once opened, the cache.
pub struct CacheSlot {
    dir: Option<PathBuf>,
    temp: Option<tempfile::TempDir>,
    cache: Option<IndexCache>,
    synced: bool,
}

impl std::fmt::Debug for CacheSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CacheSlot").field("dir", &self.dir).finish()
    }
}

impl CacheSlot {
    pub fn new(dir: Option<PathBuf>) -> CacheSlot {
        CacheSlot {
            dir,
            temp: None,
            cache: None,
            synced: false,
        }
    }

    fn directory(&mut self) -> Result<PathBuf, std::io::Error> {
        if let Some(d) = &self.dir {
            std::fs::create_dir_all(d)?;
            return Ok(d.clone());
        }
        if self.temp.is_none() {
            self.temp = Some(tempfile::Builder::new().prefix("hopsdr-cache-").tempdir()?);
        }
        Ok(self.temp.as_ref().expect("made").path().to_path_buf())
    }
}

/// A pack that is not there: the blob is missing (damage verify reports), not a store failure.
fn missing(e: super::StorageError, key: &str, blob: &BlobId, path: &str) -> RepoError {
    if e.is_not_found() {
        RepoError::BlobMissing {
            key: format!("{key} ({})", blob_key(blob)),
            path: path.to_string(),
        }
    } else {
        e.into()
    }
}

fn cache_io(dir: PathBuf) -> impl Fn(std::io::Error) -> RepoError {
    move |source| {
        RepoError::Storage(super::StorageError::Io {
            op: "create the index cache directory",
            path: dir.clone(),
            source,
        })
    }
}

impl From<CacheError> for RepoError {
    fn from(e: CacheError) -> RepoError {
        RepoError::Cache(Box::new(e))
    }
}

impl Repository {
    /// Whether the repository is in format 3 (packs and index objects).
    pub fn is_packed(&self) -> bool {
        self.inner.header.version >= super::PACKED_FORMAT_VERSION
    }

    /// Runs `f` on the index cache, opening it (not syncing it) when first needed.
    pub(crate) fn with_cache<T>(
        &self,
        f: impl FnOnce(&mut IndexCache) -> Result<T, CacheError>,
    ) -> Result<T, RepoError> {
        let mut slot = self.inner.cache.lock().unwrap_or_else(|p| p.into_inner());
        if slot.cache.is_none() {
            let dir = slot
                .directory()
                .map_err(cache_io(slot.dir.clone().unwrap_or_default()))?;
            let path = dir.join(format!("index-{}.sqlite", self.inner.header.id));
            slot.cache = Some(IndexCache::open(&path)?);
        }
        Ok(f(slot.cache.as_mut().expect("opened"))?)
    }

    /// A directory for a job's temporary files (the index cache's).
    pub(crate) fn scratch_dir(&self) -> Result<PathBuf, RepoError> {
        let mut slot = self.inner.cache.lock().unwrap_or_else(|p| p.into_inner());
        slot.directory()
            .map_err(cache_io(slot.dir.clone().unwrap_or_default()))
    }

    /// Where packs are spooled before they are handed to the store.
    pub(crate) fn spool_dir(&self) -> Result<PathBuf, RepoError> {
        if let Some(d) = self.inner.storage.spool_dir() {
            return Ok(d);
        }
        let mut slot = self.inner.cache.lock().unwrap_or_else(|p| p.into_inner());
        let dir = slot
            .directory()
            .map_err(cache_io(slot.dir.clone().unwrap_or_default()))?;
        Ok(dir)
    }

    /// The key and stored form of an index object.
    pub(crate) fn encode_index(&self, obj: &IndexObject) -> Result<(String, Vec<u8>), RepoError> {
        let plain = obj.encode();
        let keys = self.keyring();
        let h = *match &keys {
            Some(k) => k.blob_hash(&plain),
            None => blake3::hash(&plain),
        }
        .as_bytes();
        let key = index::key_of(&h);
        let frame = zstd::bulk::compress(&plain, 3).map_err(|source| RepoError::Compress {
            path: key.clone(),
            source,
        })?;
        let stored = match &keys {
            Some(k) => {
                let mut out = Vec::new();
                k.seal_into(&key, &frame, &mut out)
                    .map_err(|e| RepoError::Random(e.to_string()))?;
                out
            }
            None => frame,
        };
        Ok((key, stored))
    }

    /// Reads and checks index object `key`.
    pub(crate) fn read_index(&self, key: &str) -> Result<IndexObject, RepoError> {
        let corrupt = |offset: usize, what: String| RepoError::CorruptIndex {
            key: key.to_string(),
            offset: offset as u64,
            what,
        };
        let h = index::hash_of_key(key).ok_or_else(|| corrupt(0, "not an index key".into()))?;
        let stored = self.inner.storage.get(key)?;
        if stored.len() > MAX_INDEX_STORED {
            return Err(corrupt(0, format!("{} bytes is too long", stored.len())));
        }
        let keys = self.keyring();
        let frame = match &keys {
            Some(k) => k
                .open(key, &stored)
                .map_err(|d| corrupt(0, format!("does not authenticate: {d}")))?,
            None => stored,
        };
        let plain =
            zstd::bulk::decompress(&frame, index::MAX_ENTRIES * index::ENTRY_LEN + (64 << 20))
                .map_err(|e| corrupt(0, format!("does not decompress: {e}")))?;
        let actual = match &keys {
            Some(k) => k.blob_hash(&plain),
            None => blake3::hash(&plain),
        };
        if actual.as_bytes() != &h {
            return Err(corrupt(
                0,
                "content does not match its name (damaged)".into(),
            ));
        }
        IndexObject::decode(&plain).map_err(|e| corrupt(e.offset, e.what))
    }

    /// Brings the index cache up to date with the repository's index objects (listing
    /// `index/` only).
    pub fn sync_index(&self) -> Result<SyncReport, RepoError> {
        let listed: Vec<String> = self
            .inner
            .storage
            .list(index::PREFIX)?
            .into_iter()
            .map(|o| o.key)
            .collect();
        let r = self.with_cache(|c| Ok(c.sync(&listed, |key| self.read_index(key))))?;
        let report = r.map_err(|e| match e {
            SyncError::Cache(c) => c.into(),
            SyncError::Fetch(_, e) => e,
        })?;
        self.inner
            .cache
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .synced = true;
        Ok(report)
    }

    /// Where blob or unit `id` is, syncing the cache first if this handle has not yet.
    pub(crate) fn locate(&self, id: &[u8; 32]) -> Result<Option<Location>, RepoError> {
        let synced = self
            .inner
            .cache
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .synced;
        if !synced {
            self.sync_index()?;
        }
        self.with_cache(|c| c.lookup(id))
    }

    /// The plaintext of the blob `id` at `loc`, checked; `path` names what it belongs to.
    pub(crate) fn read_located(
        &self,
        id: &[u8; 32],
        loc: &Location,
        path: &str,
        limit: usize,
    ) -> Result<Vec<u8>, RepoError> {
        let key = pack_key(&loc.pack);
        let blob = BlobId::of(&blake3::Hash::from_bytes(*id));
        let (offset, len) = (u64::from(loc.offset), u64::from(loc.stored_len));
        let start = offset / WINDOW * WINDOW;
        if self.inner.storage.local_root().is_none() && offset + len <= start + WINDOW {
            // Object storage: the window around the blob, from memory or in one request.
            let held = self
                .inner
                .windows
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get(&loc.pack, start);
            let window = match held {
                Some(w) => w,
                None => {
                    let w = std::sync::Arc::new(
                        self.inner
                            .storage
                            .get_range(&key, start, WINDOW)
                            .map_err(|e| missing(e, &key, &blob, path))?,
                    );
                    self.inner
                        .windows
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .put(loc.pack, start, w.clone());
                    w
                }
            };
            let a = (offset - start) as usize;
            let stored = window
                .get(a..a + len as usize)
                .unwrap_or(&window[a.min(window.len())..]);
            return self.open_stored(id, loc, stored, path, limit);
        }
        let stored = self
            .inner
            .storage
            .get_range(&key, offset, len)
            .map_err(|e| missing(e, &key, &blob, path))?;
        self.open_stored(id, loc, &stored, path, limit)
    }

    /// Checks and opens a blob's stored bytes (read from `loc`): the plaintext.
    pub(crate) fn open_stored(
        &self,
        id: &[u8; 32],
        loc: &Location,
        stored: &[u8],
        path: &str,
        limit: usize,
    ) -> Result<Vec<u8>, RepoError> {
        let key = pack_key(&loc.pack);
        let blob = BlobId::of(&blake3::Hash::from_bytes(*id));
        let corrupt = |defect| RepoError::CorruptBlob {
            key: format!("{key} at byte {} ({})", loc.offset, blob_key(&blob)),
            path: path.to_string(),
            defect,
        };
        if stored.len() != loc.stored_len as usize {
            return Err(corrupt(BlobDefect::Truncated {
                expected: u64::from(loc.stored_len),
                actual: stored.len() as u64,
            }));
        }
        let keys = self.keyring();
        let opened;
        let frame = match &keys {
            Some(k) => {
                opened = k
                    .open(&blob_key(&blob), stored)
                    .map_err(|d| corrupt(BlobDefect::Sealed(d)))?;
                &opened[..]
            }
            None => stored,
        };
        let want = (loc.raw_len as usize).min(limit);
        let plain = zstd::bulk::decompress(frame, want).map_err(|source| {
            corrupt(BlobDefect::Undecodable {
                limit: want,
                source,
            })
        })?;
        let actual = match &keys {
            Some(k) => k.blob_hash(&plain),
            None => blake3::hash(&plain),
        };
        if actual.as_bytes() != id || plain.len() != loc.raw_len as usize {
            return Err(corrupt(BlobDefect::HashMismatch {
                expected: blob.to_string(),
                actual: actual.to_hex().to_string(),
            }));
        }
        Ok(plain)
    }

    /// The plaintext of metadata object `id` (a page, root or layer page).
    pub(crate) fn read_meta(&self, id: &[u8; 32], what: &str) -> Result<Vec<u8>, RepoError> {
        let loc = self.locate(id)?.ok_or_else(|| RepoError::NotIndexed {
            id: BlobId::of(&blake3::Hash::from_bytes(*id)),
            path: what.to_string(),
        })?;
        if loc.kind != EntryKind::Meta {
            return Err(RepoError::NotIndexed {
                id: BlobId::of(&blake3::Hash::from_bytes(*id)),
                path: format!("{what} (indexed as content, not metadata)"),
            });
        }
        self.read_located(id, &loc, what, MAX_META_LEN as usize)
    }

    /// Where blob (or unit) `id` is stored: the object's key and the byte range (a whole
    /// object for format 1/2 blobs and solo packs). `None`: nowhere known.
    pub fn blob_location(&self, id: &BlobId) -> Result<Option<BlobPlace>, RepoError> {
        if self.is_packed() {
            self.sync_index()?;
            if let Some(l) = self.locate(&super::streams::id_bytes(id))? {
                let whole = l.kind == EntryKind::Unit;
                return Ok(Some(BlobPlace {
                    key: pack_key(&l.pack),
                    offset: if whole { 0 } else { u64::from(l.offset) },
                    len: u64::from(l.stored_len),
                }));
            }
        }
        let key = blob_key(id);
        Ok(self
            .inner
            .storage
            .list(&key)?
            .into_iter()
            .find(|o| o.key == key)
            .map(|o| BlobPlace {
                key,
                offset: 0,
                len: o.size,
            }))
    }

    /// How many blobs backup `m` references that the repository does not hold (format 3: the
    /// index does not locate, or its pack is not in the store; formats 1 and 2: no object).
    /// An unreadable stream is an error.
    pub fn unlocated(&self, m: &super::Manifest) -> Result<u64, RepoError> {
        let mut missing = 0;
        // Packs seen: whether the store holds them.
        let mut packs: std::collections::HashMap<[u8; 16], bool> = Default::default();
        for e in self.all_entries(m) {
            let super::Entry::File(f) = e? else { continue };
            if f.is_packed() {
                for u in &f.units {
                    let held = match self.locate(&super::streams::id_bytes(u))? {
                        None => false,
                        Some(l) => match packs.get(&l.pack) {
                            Some(h) => *h,
                            None => {
                                let h = self.inner.storage.exists(&pack_key(&l.pack))?;
                                packs.insert(l.pack, h);
                                h
                            }
                        },
                    };
                    if !held {
                        missing += 1;
                    }
                }
            } else {
                for c in &f.chunks {
                    if !self.inner.storage.exists(&blob_key(c))? {
                        missing += 1;
                    }
                }
            }
        }
        Ok(missing)
    }

    /// A reader of unit `id`'s content (a data blob or a solo pack), chunk by chunk.
    pub(crate) fn unit_reader(&self, id: &[u8; 32], path: &str) -> Result<UnitReader, RepoError> {
        let blob = BlobId::of(&blake3::Hash::from_bytes(*id));
        let loc = self.locate(id)?.ok_or_else(|| RepoError::NotIndexed {
            id: blob.clone(),
            path: path.to_string(),
        })?;
        let state = match loc.kind {
            EntryKind::Data => UnitState::Blob(Some(loc)),
            EntryKind::Meta => {
                return Err(RepoError::NotIndexed {
                    id: blob,
                    path: format!("{path} (indexed as metadata, not content)"),
                })
            }
            EntryKind::Unit => self.open_solo(id, &loc, path)?,
        };
        Ok(UnitReader {
            id: *id,
            path: path.to_string(),
            state,
        })
    }

    fn open_solo(&self, id: &[u8; 32], loc: &Location, path: &str) -> Result<UnitState, RepoError> {
        let key = pack_key(&loc.pack);
        let keys = self.keyring();
        let corrupt = |defect: pack::PackDefect| RepoError::CorruptPack {
            key: key.clone(),
            path: path.to_string(),
            defect,
        };
        let size = u64::from(loc.stored_len);
        let tail = self
            .inner
            .storage
            .get_range(&key, size.saturating_sub(FOOTER_LEN), FOOTER_LEN)
            .map_err(|e| missing(e, &key, &BlobId::of(&blake3::Hash::from_bytes(*id)), path))?;
        let footer = pack::parse_footer(&tail, size).map_err(corrupt)?;
        let stored = self.inner.storage.get_range(
            &key,
            footer.trailer_offset(size),
            u64::from(footer.trailer_len),
        )?;
        let trailer = pack::parse_trailer(
            &stored,
            &footer,
            size,
            &key,
            keys.as_deref().map(Keyring::agent),
        )
        .map_err(corrupt)?;
        if trailer.unit.map(|u| u.id) != Some(*id) {
            return Err(corrupt(pack::PackDefect::Layout {
                offset: footer.trailer_offset(size),
                reason: format!(
                    "the pack does not hold unit {}",
                    BlobId::of(&blake3::Hash::from_bytes(*id))
                ),
            }));
        }
        let hasher = match &keys {
            Some(k) => k.blob_hasher(),
            None => blake3::Hasher::new(),
        };
        Ok(UnitState::Solo(Box::new(SoloState {
            pack: loc.pack,
            trailer_offset: footer.trailer_offset(size),
            entries: trailer.entries.into(),
            hasher,
            checked: false,
        })))
    }
}

enum UnitState {
    /// A data blob, not read yet (`None` once read).
    Blob(Option<Location>),
    Solo(Box<SoloState>),
}

struct SoloState {
    pack: [u8; 16],
    trailer_offset: u64,
    entries: std::collections::VecDeque<pack::PackEntry>,
    hasher: blake3::Hasher,
    checked: bool,
}

/// See [`Repository::unit_reader`].
pub(crate) struct UnitReader {
    id: [u8; 32],
    path: String,
    state: UnitState,
}

impl UnitReader {
    /// The next chunk of the unit, checked; at the end of a solo pack the whole unit's hash is
    /// checked before `None` (the caller discards what it got when that fails).
    pub(crate) fn next_chunk(&mut self, repo: &Repository) -> Result<Option<Vec<u8>>, RepoError> {
        match &mut self.state {
            UnitState::Blob(loc) => match loc.take() {
                None => Ok(None),
                Some(l) => repo
                    .read_located(&self.id, &l, &self.path, repo.chunk_size())
                    .map(Some),
            },
            UnitState::Solo(solo) => match solo.entries.pop_front() {
                Some(e) => {
                    let loc = Location {
                        pack: solo.pack,
                        kind: EntryKind::Data,
                        offset: u32::try_from(e.offset).unwrap_or(u32::MAX),
                        stored_len: e.stored_len,
                        raw_len: e.raw_len,
                    };
                    let data = repo.read_located(&e.id, &loc, &self.path, repo.chunk_size())?;
                    solo.hasher.update(&data);
                    Ok(Some(data))
                }
                None if solo.checked => Ok(None),
                None => {
                    if solo.hasher.finalize().as_bytes() != &self.id {
                        return Err(RepoError::CorruptPack {
                            key: pack_key(&solo.pack),
                            path: self.path.clone(),
                            defect: pack::PackDefect::Layout {
                                offset: solo.trailer_offset,
                                reason: "its chunks do not add up to the unit (hash differs)"
                                    .into(),
                            },
                        });
                    }
                    solo.checked = true;
                    Ok(None)
                }
            },
        }
    }
}

/// Reads a format 3 file's content: `size` bytes from byte `skip` of its units' concatenation,
/// every unit read whole (so checked whole).
pub(crate) struct PackedFile {
    path: String,
    units: std::collections::VecDeque<BlobId>,
    current: Option<UnitReader>,
    /// Bytes of the concatenation read so far.
    pos: u64,
    skip: u64,
    size: u64,
    delivered: u64,
}

impl PackedFile {
    pub(crate) fn new(f: &super::FileEntry) -> PackedFile {
        PackedFile {
            path: f.path.clone(),
            units: f.units.iter().cloned().collect(),
            current: None,
            pos: 0,
            skip: f.skip,
            size: f.size,
            delivered: 0,
        }
    }

    /// The unit being read (for damage reports).
    pub(crate) fn current_unit(&self) -> Option<BlobId> {
        self.current
            .as_ref()
            .map(|u| BlobId::of(&blake3::Hash::from_bytes(u.id)))
    }

    /// The next piece of the file's content; `None` at its end, after checking its size.
    pub(crate) fn next_piece(&mut self, repo: &Repository) -> Result<Option<Vec<u8>>, RepoError> {
        loop {
            if self.current.is_none() {
                let Some(u) = self.units.pop_front() else {
                    if self.delivered != self.size {
                        return Err(RepoError::CorruptFile {
                            path: self.path.clone(),
                            defect: super::FileDefect::SizeMismatch {
                                expected: self.size,
                                actual: self.delivered,
                            },
                        });
                    }
                    return Ok(None);
                };
                let id = super::streams::id_bytes(&u);
                self.current = Some(repo.unit_reader(&id, &self.path)?);
            }
            let unit = self.current.as_mut().expect("set");
            let Some(data) = unit.next_chunk(repo)? else {
                self.current = None;
                continue;
            };
            let start = self.pos;
            self.pos += data.len() as u64;
            // The part of [start, pos) inside [skip, skip + size).
            let lo = self.skip.max(start);
            let hi = (self.skip + self.size).min(self.pos);
            if lo >= hi {
                continue;
            }
            self.delivered += hi - lo;
            let a = (lo - start) as usize;
            let b = (hi - start) as usize;
            if a == 0 && b == data.len() {
                return Ok(Some(data));
            }
            return Ok(Some(data[a..b].to_vec()));
        }
    }
}
