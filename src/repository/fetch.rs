//! Blobs and units read back by their location: the stored bytes fetched (by ranged reads; on
//! object storage through windows of the pack kept in memory), opened when sealed, decompressed
//! within their declared length and hashed against their id; a unit's solo pack read through
//! its trailer, its chunks one by one, the whole unit's hash checked at its end. The one place
//! that turns stored bytes back into content: the repository reads through it, and so do the
//! agents that restore a node's files (given the locations, the store and the agent keys).
//! Every error names the object and the byte offset.

use super::crypto::{AgentKeys, Keyring, SealDefect};
use super::error::{BlobDefect, RepoError};
use super::index::{EntryKind, Location};
use super::pack::{self, FOOTER_LEN};
use super::packer::pack_key;
use super::{blob_key, Storage};
use crate::ids::BlobId;

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

/// The keys that open blobs: the repository's [`Keyring`] (which also opens what its
/// key-encryption key sealed), or the [`AgentKeys`] an agent was given.
pub trait BlobKeys {
    fn open(&self, object_key: &str, stored: &[u8]) -> Result<Vec<u8>, SealDefect>;
    fn blob_hash(&self, chunk: &[u8]) -> blake3::Hash;
    fn blob_hasher(&self) -> blake3::Hasher;
    /// What opens a pack's trailer.
    fn agent(&self) -> &AgentKeys;
}

impl BlobKeys for Keyring {
    fn open(&self, object_key: &str, stored: &[u8]) -> Result<Vec<u8>, SealDefect> {
        Keyring::open(self, object_key, stored)
    }
    fn blob_hash(&self, chunk: &[u8]) -> blake3::Hash {
        Keyring::blob_hash(self, chunk)
    }
    fn blob_hasher(&self) -> blake3::Hasher {
        Keyring::blob_hasher(self)
    }
    fn agent(&self) -> &AgentKeys {
        Keyring::agent(self)
    }
}

impl BlobKeys for AgentKeys {
    fn open(&self, object_key: &str, stored: &[u8]) -> Result<Vec<u8>, SealDefect> {
        let mut out = Vec::new();
        self.open_into(object_key, stored, &mut out)?;
        Ok(out)
    }
    fn blob_hash(&self, chunk: &[u8]) -> blake3::Hash {
        AgentKeys::blob_hash(self, chunk)
    }
    fn blob_hasher(&self) -> blake3::Hasher {
        AgentKeys::blob_hasher(self)
    }
    fn agent(&self) -> &AgentKeys {
        self
    }
}

/// What reads blobs back: the store, the agent keys of an encrypted repository, the windows
/// kept for object storage (none for a local store), the repository's chunk size (the longest
/// content chunk accepted).
#[derive(Clone, Copy)]
pub struct Fetcher<'a> {
    pub storage: &'a dyn Storage,
    pub keys: Option<&'a dyn BlobKeys>,
    pub windows: Option<&'a std::sync::Mutex<Windows>>,
    pub chunk_size: usize,
}

impl Fetcher<'_> {
    /// The plaintext of the blob `id` at `loc`, checked; `path` names what it belongs to.
    pub fn read_located(
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
        if let Some(windows) = self.windows.filter(|_| offset + len <= start + WINDOW) {
            // Object storage: the window around the blob, from memory or in one request.
            let held = windows
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get(&loc.pack, start);
            let window = match held {
                Some(w) => w,
                None => {
                    let w = std::sync::Arc::new(
                        self.storage
                            .get_range(&key, start, WINDOW)
                            .map_err(|e| missing(e, &key, &blob, path))?,
                    );
                    windows.lock().unwrap_or_else(|p| p.into_inner()).put(
                        loc.pack,
                        start,
                        w.clone(),
                    );
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
            .storage
            .get_range(&key, offset, len)
            .map_err(|e| missing(e, &key, &blob, path))?;
        self.open_stored(id, loc, &stored, path, limit)
    }

    /// Checks and opens a blob's stored bytes (read from `loc`): the plaintext.
    pub fn open_stored(
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
        let keys = self.keys;
        let opened;
        let frame = match keys {
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
        let actual = match keys {
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

    /// A reader of unit `id`'s content (a data blob or a solo pack) stored at `loc`, chunk by
    /// chunk.
    pub fn unit_reader(
        &self,
        id: &[u8; 32],
        loc: Location,
        path: &str,
    ) -> Result<UnitReader, RepoError> {
        let blob = BlobId::of(&blake3::Hash::from_bytes(*id));
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
        let keys = self.keys;
        let corrupt = |defect: pack::PackDefect| RepoError::CorruptPack {
            key: key.clone(),
            path: path.to_string(),
            defect,
        };
        let size = u64::from(loc.stored_len);
        let tail = self
            .storage
            .get_range(&key, size.saturating_sub(FOOTER_LEN), FOOTER_LEN)
            .map_err(|e| missing(e, &key, &BlobId::of(&blake3::Hash::from_bytes(*id)), path))?;
        let footer = pack::parse_footer(&tail, size).map_err(corrupt)?;
        let stored = self.storage.get_range(
            &key,
            footer.trailer_offset(size),
            u64::from(footer.trailer_len),
        )?;
        let trailer = pack::parse_trailer(&stored, &footer, size, &key, keys.map(|k| k.agent()))
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
        let hasher = match keys {
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

/// Where a unit's reading is.
enum UnitState {
    /// A data blob, not read yet (`None` once read).
    Blob(Option<Location>),
    Solo(Box<SoloState>),
}

/// A solo pack being read: its entries left, the unit's hash so far.
struct SoloState {
    pack: [u8; 16],
    trailer_offset: u64,
    entries: std::collections::VecDeque<pack::PackEntry>,
    hasher: blake3::Hasher,
    checked: bool,
}

/// A unit's content, chunk by chunk (see [`Fetcher::unit_reader`]).
pub struct UnitReader {
    id: [u8; 32],
    path: String,
    state: UnitState,
}

impl UnitReader {
    /// The unit's id.
    pub fn id(&self) -> [u8; 32] {
        self.id
    }

    /// The next chunk of the unit, checked; at the end of a solo pack the whole unit's hash is
    /// checked before `None` (the caller discards what it got when that fails).
    pub fn next_chunk(&mut self, f: &Fetcher<'_>) -> Result<Option<Vec<u8>>, RepoError> {
        match &mut self.state {
            UnitState::Blob(loc) => match loc.take() {
                None => Ok(None),
                Some(l) => f
                    .read_located(&self.id, &l, &self.path, f.chunk_size)
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
                    let data = f.read_located(&e.id, &loc, &self.path, f.chunk_size)?;
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
