//! Reading format 3's objects: the index cache kept in step with the index objects, blobs and
//! units located through it and read from their packs ([`super::fetch`] checks them), metadata
//! pages, the files of a backup. Every error names the object and the byte offset.

use std::path::PathBuf;

use super::cache::{CacheError, IndexCache, SyncError, SyncReport};
use super::crypto::Keyring;
use super::error::RepoError;
use super::fetch::{BlobKeys, Fetcher, UnitReader};
use super::index::{self, EntryKind, IndexObject, Location};
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
    /// What reads this repository's blobs, with `keys` (from [`Repository::keyring`]).
    pub(crate) fn fetcher<'a>(&'a self, keys: Option<&'a Keyring>) -> Fetcher<'a> {
        Fetcher {
            storage: self.inner.storage.as_ref(),
            keys: keys.map(|k| k as &dyn BlobKeys),
            windows: self
                .inner
                .storage
                .local_root()
                .is_none()
                .then_some(&self.inner.windows),
            chunk_size: self.chunk_size(),
        }
    }

    /// The plaintext of the blob `id` at `loc`, checked; `path` names what it belongs to.
    pub(crate) fn read_located(
        &self,
        id: &[u8; 32],
        loc: &Location,
        path: &str,
        limit: usize,
    ) -> Result<Vec<u8>, RepoError> {
        let keys = self.keyring();
        self.fetcher(keys.as_deref())
            .read_located(id, loc, path, limit)
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
        let keys = self.keyring();
        self.fetcher(keys.as_deref())
            .open_stored(id, loc, stored, path, limit)
    }

    /// A reader of unit `id`'s content (a data blob or a solo pack), chunk by chunk.
    pub(crate) fn unit_reader(&self, id: &[u8; 32], path: &str) -> Result<UnitReader, RepoError> {
        let loc = self.locate(id)?.ok_or_else(|| RepoError::NotIndexed {
            id: BlobId::of(&blake3::Hash::from_bytes(*id)),
            path: path.to_string(),
        })?;
        let keys = self.keyring();
        self.fetcher(keys.as_deref()).unit_reader(id, loc, path)
    }

    /// The next chunk of `unit` (see [`UnitReader::next_chunk`]).
    pub(crate) fn next_chunk(&self, unit: &mut UnitReader) -> Result<Option<Vec<u8>>, RepoError> {
        let keys = self.keyring();
        unit.next_chunk(&self.fetcher(keys.as_deref()))
    }

    /// Where unit (or blob) `id` of the file `path` is stored; [`RepoError::NotIndexed`] when
    /// the index does not know it.
    pub fn locate_unit(&self, id: &BlobId, path: &str) -> Result<Location, RepoError> {
        self.locate(&super::streams::id_bytes(id))?
            .ok_or_else(|| RepoError::NotIndexed {
                id: id.clone(),
                path: path.to_string(),
            })
    }

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
            .map(|u| BlobId::of(&blake3::Hash::from_bytes(u.id())))
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
            let Some(data) = repo.next_chunk(unit)? else {
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
