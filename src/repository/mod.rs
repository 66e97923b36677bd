//! The repository: where backups live, content-addressed, compressed and verified on every read.
//!
//! # On-storage format, version 1
//!
//! A repository is a set of objects in a [`Storage`] (a local directory, later an object store),
//! named by `/`-separated keys. The format needs only whole-object put/get/exists/delete, a
//! prefix listing, and read-after-write on a single key: no rename, no append, no
//! list-after-write consistency.
//!
//! - **Header** — key `hopsdr-repository.json`, plain JSON:
//!   `{"format":"hopsdr-repository","version":1,"id":"<32 hex>","created":"<RFC 3339>",
//!   "chunk_size":4194304,"hash":"blake3","compression":"zstd"}`.
//!   Written once, when the repository is initialised. A reader refuses a header whose `format`
//!   is not `hopsdr-repository` or whose `version` it does not know, and refuses to initialise
//!   over a store that has manifests but no header.
//!
//! - **Blobs** — key `blobs/<h[0..2]>/<h>`, where `h` is the lower-case hex BLAKE3 hash of the
//!   blob's *uncompressed* content, at most `chunk_size` bytes. The object is one zstd frame of
//!   that content. Blobs are immutable and shared: a blob already present is not written again,
//!   whichever backup wrote it. Reading a blob decompresses it (refusing more than `chunk_size`
//!   bytes), hashes the result and compares it with `h`.
//!
//! - **Files** — a regular file is cut into chunks of `chunk_size` bytes (the last one shorter),
//!   each stored as a blob; its manifest entry lists the chunk hashes in order, the file's size
//!   and the BLAKE3 hash of its whole content. An empty file has no chunks.
//!
//! - **Manifests** — key `manifests/<backup-id>.json.zst`: one zstd frame of the JSON document
//!   `{"checksum":"<64 hex>","body":<body>}` followed by a newline, where `<body>` is the JSON
//!   [`Manifest`] (`format_version`, `id`, `info`, `entries`) and `checksum` is the BLAKE3 hash
//!   of exactly the bytes of `<body>` as stored. A reader checks the checksum, that `id` matches
//!   the key, `format_version`, and every entry (valid logical paths, no duplicates, nothing
//!   below a file or a symlink, well-formed hashes).
//!
//!   The manifest is the commit marker: it is written last, after every blob it references has
//!   been durably stored (a store may batch that work: `Storage::put_deferred` objects become
//!   durable and visible under their keys at `Storage::flush`, which the commit calls before
//!   writing the manifest), and a backup without a manifest does not exist (its blobs are garbage
//!   for the collector). A manifest is never overwritten.
//!
//! - **Facts** — the manifest's `info.extra` object records what the components found, each
//!   key optional: `rondb` (RonDB backup id, GCPs, consistency point, node ids, version, the
//!   user tables), `hopsfs` (fence window, blocks stored and new, coverage checked and missing
//!   block ids, replicas being written, the volumes), `users` (accounts, roles and SQL objects
//!   dumped), `stats` (logical and stored bytes, files), `partial` (why blocks are missing) and
//!   `healed_blobs`. Their fields are those of the types in [`facts`]; readers ignore keys
//!   they do not know.
//!
//! - **Logical paths** — entry paths are relative, `/`-separated, with no empty, `.` or `..`
//!   component ([`validate_logical_path`]): joined to a restore target they stay inside it.
//!
//! # Encrypted repositories: format version 2
//!
//! The header has `"version": 2`, `"encryption": {"aead": "aes-256-gcm", "blob_names":
//! "blake3-keyed", "key_slots": "argon2id"}` and `"mac"`: the keyed BLAKE3 of the header without
//! `mac` (a reader that knows only version 1 refuses the repository). Besides the objects above:
//!
//! - **Key slots** — `keys/slots/<name>.json` and **data keys** — `keys/data/<id>`, see
//!   `keys.rs`.
//! - **Blobs** are named by the BLAKE3 hash of their content keyed with the blob-name key, and
//!   **blobs and manifests** are stored sealed (`crypto.rs`): `"hdrseal1"`, the data key's id,
//!   a nonce, the AES-256-GCM ciphertext of what a plaintext repository stores (the zstd
//!   frame), the tag; the object's key is authenticated with it. A reader opens the object
//!   (refusing one that does not authenticate), then checks it as in version 1.
//!
//! # Packed repositories: format version 3
//!
//! Built for a HopsFS of 100 TB (millions of block files): metadata proportional to what
//! changed, few objects, and every job in bounded memory. The header has `"version": 3`
//! (with `encryption` and `mac` when encrypted, as version 2). A version 1 or 2 repository is
//! upgraded in place when hopsdrd opens it (the header rewritten once): its backups stay
//! readable, verifiable and collectable, and new backups reuse their blobs. Besides the header,
//! keys and manifests:
//!
//! - **Packs** — key `packs/<p[0..2]>/<p>`, `p` 16 random bytes in hex (`pack.rs` has the
//!   byte layout): blobs stored exactly as version 1/2 store a blob object (a zstd frame,
//!   sealed with its own `blobs/<h[0..2]>/<h>` key as associated data when encrypted), then a
//!   trailer listing them (kind, id, stored and raw lengths) and a 48-byte footer with the
//!   trailer's hash. *Data* packs hold the content of files of at most one chunk (the HopsFS
//!   blocks of a small-block cluster, `.meta` files, config files); *meta* packs hold
//!   metadata pages; both are closed at 32 MiB. A file bigger than a chunk is a *solo* pack (at
//!   most 33 chunks: a 128 MiB block and its checksums): its chunks in order, its trailer
//!   naming the unit (the hash of the whole content); it dies whole and is never repacked.
//!   Packs are written once and never change.
//! - **Index objects** — key `index/<h>` (`index.rs`): sorted fixed-stride entries locating
//!   every blob and unit (pack, offset, lengths), written after the packs they name are
//!   durable and before any manifest that needs them. A collection writes a new generation
//!   whose last object `supersedes` the older ones; readers ignore a superseded object. A
//!   local SQLite cache mirrors them (`cache.rs`; `cache/` next to the catalog): a backup never
//!   lists the packs.
//! - **Manifests** — `"format_version": 3`. `entries` hold what is not in a HopsFS volume
//!   (config files, users, RonDB), each file by `units` (a blob in a data pack, or a solo
//!   pack; `skip` bytes in), with `size`. Each HopsFS volume is a *stream* (`streams`:
//!   `prefix`, `root`, `base_of`, `layers`, counts): its entries as compact sorted pages
//!   (`tree.rs`: about 45 bytes per block file, pages cut at the datanode's `subdirX/subdirY`
//!   boundaries) listed by a root, plus one layer of changes per later backup (puts and
//!   deletions against the previous backup's view), until the layers hold a tenth of the base
//!   or there are 16, when a backup writes a new base (unchanged pages keep their id and are
//!   not stored again). Pages, roots and layer pages are meta blobs named by the hash of their
//!   plaintext.
//!
//! A reader checks every blob as in version 1 (opened, decompressed within its declared
//! length, hashed against its id); a pack or index object that is truncated or garbled is
//! named with its key and the byte offset. Garbage collection marks what the kept backups
//! reference into an on-disk set and deletes only whole packs (`collect.rs`); nothing is
//! deleted while a kept backup's manifest or metadata page cannot be read.
//!
//! Objects whose keys fall outside these patterns are ignored. Garbage collection (deleting
//! blobs no manifest references) must not run while a backup is being written: a backup may
//! reuse a blob that a concurrent collector considers unreferenced. hopsdr runs one job at a
//! time, so this holds.

pub mod cache;
pub mod codec;
mod collect;
pub mod conformance;
pub mod crypto;
mod error;
pub mod facts;
pub mod fetch;
pub mod index;
pub mod inspect;
pub mod keys;
mod known_replica;
pub mod layout;
pub mod lock;
mod manifest;
pub mod mirror;
mod objects;
pub mod pack;
pub mod packer;
mod readahead;
mod repair;
mod s3;
mod spill;
mod storage;
mod streams;
pub mod tree;
mod writer;

#[cfg(test)]
mod encryption_tests;
#[cfg(test)]
mod packed_tests;
#[cfg(test)]
mod tests;

use std::collections::HashSet;
use std::io::Read;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::ids::{BackupId, BlobId};
use crypto::Keyring;

pub use error::{
    BlobDefect, EntryDefect, FileDefect, HeaderDefect, ManifestDefect, PathDefect, RepoError,
};
pub use known_replica::{KnownReplica, UnitParts};
pub use manifest::{
    symlink_escapes, validate_logical_path, BackupInfo, ComponentInfo, Entry, FileEntry, FileMeta,
    Manifest, StreamRef,
};
pub use objects::BlobPlace;
pub use repair::RepairReport;
pub use s3::control::as_of as versions_as_of;
pub use s3::control::current_at as s3_current_at;
pub use s3::{Control, LockMode, ObjectVersion, S3Options, S3Storage, VersionedView, Versioning};
pub use storage::{validate_key, KeyError, LocalStorage, ObjectInfo, Storage, StorageError};
pub use tree::Replica;
pub(crate) use writer::read_full;
pub use writer::{BackupWriter, ProgressFn, ReplicaSink, StoredUnit, WriteStats, SOLO_MAX_CHUNKS};

/// The repository format version this code reads and writes (plaintext repositories).
pub const FORMAT_VERSION: u32 = 1;
/// The format version of encrypted repositories (a reader that knows only version 1 refuses
/// them rather than misreading sealed objects).
pub const ENCRYPTED_FORMAT_VERSION: u32 = 2;
/// Format 3 (plaintext or encrypted: `encryption` says): packs, index objects and entry
/// streams (see the format 3 section above).
pub const PACKED_FORMAT_VERSION: u32 = 3;
/// The `format` of the header object.
pub const FORMAT_NAME: &str = "hopsdr-repository";
/// Key of the header object.
pub const HEADER_KEY: &str = "hopsdr-repository.json";
/// Files are cut into chunks of this many bytes when a repository is created.
pub const CHUNK_SIZE: usize = 4 << 20;
/// Smallest and largest chunk size a header may declare (bounds the memory a read takes).
pub const MIN_CHUNK_SIZE: u64 = 64 << 10;
pub const MAX_CHUNK_SIZE: u64 = 16 << 20;

const BLOBS_PREFIX: &str = "blobs/";
const MANIFESTS_PREFIX: &str = "manifests/";
const MANIFEST_SUFFIX: &str = ".json.zst";

/// The header object's content.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct RepositoryHeader {
    pub format: String,
    pub version: u32,
    /// Random, fixed at creation: tells repositories apart.
    pub id: String,
    pub created: DateTime<Utc>,
    pub chunk_size: u64,
    pub hash: String,
    pub compression: String,
    /// How objects are sealed; absent in a plaintext repository.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encryption: Option<EncryptionInfo>,
    /// Keyed BLAKE3 (the header key, see `crypto.rs`) of this header without `mac`: an
    /// encrypted repository's header that was changed does not open.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
}

/// The header's `encryption`: what seals the objects of an encrypted repository.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct EncryptionInfo {
    /// `aes-256-gcm`.
    pub aead: String,
    /// `blake3-keyed`.
    pub blob_names: String,
    /// `argon2id` (the passphrase slots).
    pub key_slots: String,
}

impl EncryptionInfo {
    fn current() -> EncryptionInfo {
        EncryptionInfo {
            aead: "aes-256-gcm".into(),
            blob_names: "blake3-keyed".into(),
            key_slots: "argon2id".into(),
        }
    }
}

/// The passphrase that opens an encrypted repository (or creates one).
pub struct KeySource {
    pub passphrase: zeroize::Zeroizing<String>,
    /// The slot to open (default: each in turn); a new repository's first slot (default
    /// `primary`).
    pub slot: Option<String>,
    /// Where the passphrase came from, for messages (`file /etc/hopsdr/repository.key`).
    pub describe: String,
}

/// What `hopsdrctl repo check` and `key list` show of a repository's encryption.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EncryptionStatus {
    pub aead: String,
    pub slots: Vec<keys::SlotInfo>,
    /// The slot this process opened the repository with.
    pub opened_with: String,
    pub data_keys: Vec<u32>,
    pub current_data_key: u32,
}

/// The key of blob `id`: `blobs/<first two hex digits>/<id>`.
pub fn blob_key(id: &BlobId) -> String {
    let h = id.as_str();
    format!("{BLOBS_PREFIX}{}/{h}", &h[..2])
}

/// The blob a key names, if it is a blob's key.
pub fn blob_of_key(key: &str) -> Option<BlobId> {
    let (fan, h) = key.strip_prefix(BLOBS_PREFIX)?.split_once('/')?;
    BlobId::parse(h).filter(|id| id.as_str().starts_with(fan) && fan.len() == 2)
}

/// The key of backup `id`'s manifest.
pub fn manifest_key(id: &BackupId) -> String {
    format!("{MANIFESTS_PREFIX}{id}{MANIFEST_SUFFIX}")
}

/// A handle on an open repository; cheap to clone, usable from several threads.
#[derive(Clone, Debug)]
pub struct Repository {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    storage: Arc<dyn Storage>,
    header: RepositoryHeader,
    compression_level: i32,
    /// An encrypted repository's keys (replaced whole by a rotation) and the slot that opened.
    keys: Option<(std::sync::RwLock<Arc<Keyring>>, String)>,
    /// Format 3's local index cache, opened when first needed.
    cache: std::sync::Mutex<objects::CacheSlot>,
    /// Format 3 on object storage: recently read windows of packs (reads in stream order hit
    /// neighbouring blobs).
    windows: std::sync::Mutex<fetch::Windows>,
}

/// How to open (or create) a repository.
#[derive(Default)]
pub struct OpenOptions<'a> {
    pub compression_level: i32,
    /// The passphrase of an encrypted repository (or of a new one, which is then encrypted).
    pub key: Option<&'a KeySource>,
    /// A new repository is created in format 3 (packs and index objects).
    pub packed: bool,
    /// Where format 3's index cache lives (the daemon's state directory); default: a temporary
    /// directory for this handle's life.
    pub cache_dir: Option<std::path::PathBuf>,
}

/// One damaged file (and blob, when a blob is at fault) found by [`Repository::verify_backup`].
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Damage {
    /// Logical path of the damaged file.
    pub path: String,
    /// The damaged or missing blob; `None` when the file as a whole does not match.
    pub blob: Option<BlobId>,
    /// [`RepoError::code`] of the failure.
    pub code: String,
    pub reason: String,
}

/// What [`Repository::verify_backup`] read and what it found damaged.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
pub struct VerifyReport {
    pub files_checked: u64,
    /// Blob reads (a blob shared by two files is read for each).
    pub blobs_checked: u64,
    /// Uncompressed bytes read back and hashed.
    pub bytes_checked: u64,
    pub damaged: Vec<Damage>,
    /// Files read for their meaning (a drill), by kind.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub inspected: std::collections::BTreeMap<String, inspect::InspectedCount>,
    /// Files intact in the repository whose content does not mean what it should.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub findings: Vec<inspect::Finding>,
}

/// What [`Repository::check`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckReport {
    pub manifests: u64,
    pub blobs: u64,
    /// Blobs no manifest references (left by a forgotten backup or an interrupted one).
    pub unreferenced_blobs: u64,
    /// Each problem, naming the backup and the blob or file.
    pub problems: Vec<String>,
}

/// What a garbage collection did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GcReport {
    /// Manifests read (the backups whose blobs are kept).
    pub manifests: u64,
    pub blobs_kept: u64,
    pub blobs_deleted: u64,
    pub bytes_freed: u64,
    /// Object Lock: referenced objects locked for another period.
    #[serde(default)]
    pub retention_extended: u64,
    /// Object Lock: unreferenced blobs still locked, left for a later collection.
    #[serde(default)]
    pub blobs_locked: u64,
    /// Format 3: packs deleted (nothing in them referenced any more).
    #[serde(default)]
    pub packs_deleted: u64,
    /// Format 3: packs mostly unreferenced whose live blobs were copied into new packs.
    #[serde(default)]
    pub packs_repacked: u64,
    #[serde(default)]
    pub bytes_repacked: u64,
}

/// Whether an object locked `until` (`None`: not locked) needs another lock `period` from
/// `now`: when less than half of one is left.
pub fn needs_extension(
    until: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
    period: chrono::Duration,
) -> bool {
    until.is_none_or(|u| u - now < period / 2)
}

/// The collector's clock (tests move it ahead to see time pass: `gc.clock_ahead_hours`).
fn collector_now() -> DateTime<Utc> {
    let ahead = crate::failpoint::value("gc.clock_ahead_hours")
        .and_then(|h| h.parse::<i64>().ok())
        .unwrap_or(0);
    Utc::now() + chrono::Duration::hours(ahead)
}

/// Object Lock: locks each of `keys` (what the kept backups need) for another `period` from
/// `now` when less than half a period is left. An object `written` less than half a period ago
/// was locked for a whole one then: only older ones have their retention read (one request
/// each).
fn extend_locks(
    storage: &dyn Storage,
    keys: impl Iterator<Item = String>,
    written: impl Fn(&str) -> Option<DateTime<Utc>>,
    now: DateTime<Utc>,
    period: chrono::Duration,
    report: &mut GcReport,
    cancel: &tokio_util::sync::CancellationToken,
) -> Result<(), RepoError> {
    for key in keys {
        if cancel.is_cancelled() {
            return Err(RepoError::Cancelled);
        }
        if written(&key).is_some_and(|t| now - t < period / 2) {
            continue;
        }
        let until = storage.locked_until(&key)?;
        if needs_extension(until, now, period) {
            storage.lock_until(&key, now + period)?;
            report.retention_extended += 1;
            if report.retention_extended == 1 {
                crate::failpoint::hit("gc.retention_extended", cancel);
            }
        }
    }
    Ok(())
}

/// What reading one file back found.
#[derive(Debug, Default)]
struct FileCheck {
    bytes: u64,
    bad_chunks: Vec<BlobId>,
    damaged: Vec<Damage>,
    /// The meaning of a file read for it: what it held, or what is wrong (path, reason).
    inspected: Vec<Result<inspect::Inspected, inspect::Finding>>,
}

impl VerifyReport {
    pub fn is_ok(&self) -> bool {
        self.damaged.is_empty() && self.findings.is_empty()
    }
}

/// Reusable buffers for reading blobs.
struct BlobReader {
    decompressor: zstd::bulk::Decompressor<'static>,
    buf: Vec<u8>,
    /// An encrypted blob, opened (before decompression).
    opened: Vec<u8>,
    keys: Option<Arc<Keyring>>,
}

impl Repository {
    /// Opens the plaintext repository in `storage`, initialising it (writing its header) if the
    /// store is empty. New blobs and manifests are compressed at `compression_level`. An
    /// encrypted repository is refused ([`RepoError::KeyRequired`]).
    pub fn open_or_init(
        storage: Arc<dyn Storage>,
        compression_level: i32,
    ) -> Result<Repository, RepoError> {
        Self::open_or_init_with(storage, compression_level, None)
    }

    /// Opens the repository in `storage` with `key` (an encrypted repository needs one; a
    /// plaintext one refuses one), initialising it if the store is empty: encrypted when a key
    /// is given.
    pub fn open_or_init_with(
        storage: Arc<dyn Storage>,
        compression_level: i32,
        key: Option<&KeySource>,
    ) -> Result<Repository, RepoError> {
        Self::open_with(
            storage,
            OpenOptions {
                compression_level,
                key,
                ..Default::default()
            },
        )
    }

    /// Opens the repository in `storage` as `opts` say (see [`Repository::open_or_init_with`]).
    pub fn open_with(
        storage: Arc<dyn Storage>,
        opts: OpenOptions<'_>,
    ) -> Result<Repository, RepoError> {
        let OpenOptions {
            compression_level,
            key,
            packed,
            cache_dir,
        } = opts;
        let range = zstd::compression_level_range();
        if !range.contains(&compression_level) {
            return Err(RepoError::InvalidCompressionLevel {
                level: compression_level,
                min: *range.start(),
                max: *range.end(),
            });
        }
        let (header, keys) = match storage.get(HEADER_KEY) {
            Ok(bytes) => {
                let header = parse_header(&bytes, storage.as_ref())?;
                let keys = open_keys(storage.as_ref(), &header, key)?;
                if packed && header.version < PACKED_FORMAT_VERSION {
                    let header = upgrade(storage.as_ref(), header, keys.as_ref().map(|k| &k.0))?;
                    (header, keys)
                } else {
                    (header, keys)
                }
            }
            Err(e) if e.is_not_found() => init(storage.as_ref(), key, packed)?,
            Err(e) => return Err(e.into()),
        };
        Ok(Repository {
            inner: Arc::new(Inner {
                storage,
                header,
                compression_level,
                keys: keys.map(|(k, slot)| (std::sync::RwLock::new(Arc::new(k)), slot)),
                cache: std::sync::Mutex::new(objects::CacheSlot::new(cache_dir)),
                windows: Default::default(),
            }),
        })
    }

    /// The keys of an encrypted repository; `None` for a plaintext one.
    /// What a backup's node agents get of an encrypted repository's keys: the blob-name key
    /// and the current data key ([`crypto::AgentKeys`]); `None` for a plaintext repository.
    pub fn agent_keys(&self) -> Option<crypto::AgentKeys> {
        self.keyring().map(|k| k.for_agent(&[k.current()]))
    }

    pub(crate) fn keyring(&self) -> Option<Arc<Keyring>> {
        self.inner
            .keys
            .as_ref()
            .map(|(k, _)| k.read().unwrap_or_else(|p| p.into_inner()).clone())
    }

    /// Whether the repository is encrypted.
    pub fn is_encrypted(&self) -> bool {
        self.inner.header.encryption.is_some()
    }

    /// Seals `plain` as the object `key` (unchanged in a plaintext repository).
    pub(crate) fn seal(&self, key: &str, plain: Vec<u8>) -> Result<Vec<u8>, RepoError> {
        match self.keyring() {
            None => Ok(plain),
            Some(k) => {
                let mut out = Vec::new();
                k.seal_into(key, &plain, &mut out)
                    .map_err(|e| RepoError::Random(e.to_string()))?;
                Ok(out)
            }
        }
    }

    /// The encryption of the repository: slots, data keys, the slot that opened it.
    pub fn encryption_status(&self) -> Result<Option<EncryptionStatus>, RepoError> {
        let (Some(info), Some((_, opened_with))) =
            (&self.inner.header.encryption, &self.inner.keys)
        else {
            return Ok(None);
        };
        let keyring = self.keyring().expect("keys of an encrypted repository");
        Ok(Some(EncryptionStatus {
            aead: info.aead.clone(),
            slots: keys::slot_infos(self.inner.storage.as_ref())?,
            opened_with: opened_with.clone(),
            data_keys: keyring.data_key_ids(),
            current_data_key: keyring.current(),
        }))
    }

    /// Adds key slot `name` opened by `passphrase`.
    pub fn add_key_slot(&self, name: &str, passphrase: &str) -> Result<(), RepoError> {
        let keyring = self.keyring().ok_or_else(|| RepoError::NotEncrypted {
            store: self.describe(),
        })?;
        let slot = keys::wrap(
            keyring.master(),
            passphrase,
            &self.inner.header.id,
            name,
            keys::DEFAULT_KDF,
            Utc::now(),
        )?;
        keys::write_slot(self.inner.storage.as_ref(), &slot)?;
        Ok(())
    }

    /// Removes key slot `name` (never the last one, nor the one this process opened with: the
    /// next start would not open the repository).
    pub fn remove_key_slot(&self, name: &str) -> Result<(), RepoError> {
        let Some((_, opened_with)) = &self.inner.keys else {
            return Err(RepoError::NotEncrypted {
                store: self.describe(),
            });
        };
        if opened_with == name {
            return Err(keys::KeysError::SlotInUse {
                name: name.to_string(),
            }
            .into());
        }
        keys::remove_slot(self.inner.storage.as_ref(), name)?;
        Ok(())
    }

    /// Starts a new data key for new objects (old ones stay readable); returns its id.
    pub fn rotate_data_key(&self) -> Result<u32, RepoError> {
        let Some((lock, _)) = &self.inner.keys else {
            return Err(RepoError::NotEncrypted {
                store: self.describe(),
            });
        };
        let mut guard = lock.write().unwrap_or_else(|p| p.into_inner());
        let mut next = keys::load_data_keys(
            self.inner.storage.as_ref(),
            Keyring::from_master(guard.master()),
        )?;
        let id = keys::rotate(self.inner.storage.as_ref(), &mut next)?;
        crate::failpoint::hit(
            "keys.data_key_written",
            &tokio_util::sync::CancellationToken::new(),
        );
        *guard = Arc::new(next);
        Ok(id)
    }

    /// The same repository reached through `storage` (the same store with another identity,
    /// such as the prune identity of an S3 bucket): header, keys and compression shared.
    pub fn with_storage(&self, storage: Arc<dyn Storage>) -> Repository {
        Repository {
            inner: Arc::new(Inner {
                storage,
                header: self.inner.header.clone(),
                compression_level: self.inner.compression_level,
                // A cache of its own: another identity or a past view of the store lists
                // other index objects.
                cache: std::sync::Mutex::new(objects::CacheSlot::new(None)),
                windows: Default::default(),
                keys: self.inner.keys.as_ref().map(|(k, slot)| {
                    (
                        std::sync::RwLock::new(k.read().unwrap_or_else(|p| p.into_inner()).clone()),
                        slot.clone(),
                    )
                }),
            }),
        }
    }

    /// Where the repository is, for humans and logs.
    pub fn describe(&self) -> String {
        self.inner.storage.describe()
    }

    pub fn header(&self) -> &RepositoryHeader {
        &self.inner.header
    }

    pub fn storage(&self) -> &Arc<dyn Storage> {
        &self.inner.storage
    }

    pub(crate) fn chunk_size(&self) -> usize {
        // Checked against MAX_CHUNK_SIZE when the header was read.
        self.inner.header.chunk_size as usize
    }

    pub(crate) fn compression_level(&self) -> i32 {
        self.inner.compression_level
    }

    /// Starts writing backup `id`. Nothing is visible until [`BackupWriter::commit`]; `cancel`
    /// is checked between chunks.
    pub fn begin_backup(
        &self,
        id: BackupId,
        cancel: tokio_util::sync::CancellationToken,
    ) -> BackupWriter {
        self.inner.storage.settle();
        BackupWriter::new(self.clone(), id, cancel)
    }

    /// The committed backups, oldest first.
    pub fn list_backups(&self) -> Result<Vec<BackupId>, RepoError> {
        let mut ids: Vec<BackupId> = self
            .inner
            .storage
            .list(MANIFESTS_PREFIX)?
            .into_iter()
            .filter_map(|o| {
                let name = o.key.strip_prefix(MANIFESTS_PREFIX)?;
                BackupId::parse(name.strip_suffix(MANIFEST_SUFFIX)?)
            })
            .collect();
        ids.sort();
        ids.dedup();
        Ok(ids)
    }

    /// Reads and verifies backup `id`'s manifest.
    pub fn read_manifest(&self, id: &BackupId) -> Result<Manifest, RepoError> {
        let key = manifest_key(id);
        let stored = match self.inner.storage.get(&key) {
            Ok(b) => b,
            Err(e) if e.is_not_found() => return Err(RepoError::BackupNotFound { id: id.clone() }),
            Err(e) => return Err(e.into()),
        };
        let corrupt = |defect| RepoError::CorruptManifest {
            id: id.clone(),
            key: key.clone(),
            defect,
        };
        let stored = match self.keyring() {
            Some(k) => k
                .open(&key, &stored)
                .map_err(|d| corrupt(ManifestDefect::Sealed(d)))?,
            None => stored,
        };
        manifest::decode(&stored, id).map_err(corrupt)
    }

    /// Writes the content of `entry` to `out`, chunk by chunk, verifying every chunk before it
    /// is written, then the size and whole-file hash. Returns the number of bytes written.
    ///
    /// A chunk that fails verification is never written; but the chunks before it were, so on
    /// error the caller must discard what `out` received.
    pub fn restore_file(
        &self,
        entry: &FileEntry,
        out: &mut dyn std::io::Write,
    ) -> Result<u64, RepoError> {
        manifest::validate_file_entry(entry).map_err(|defect| RepoError::InvalidEntry {
            path: entry.path.clone(),
            defect,
        })?;
        if entry.is_packed() {
            let mut file = objects::PackedFile::new(entry);
            let mut written = 0u64;
            while let Some(piece) = file.next_piece(self)? {
                out.write_all(&piece)
                    .map_err(|source| RepoError::WriteOutput {
                        path: entry.path.clone(),
                        source,
                    })?;
                written += piece.len() as u64;
            }
            return Ok(written);
        }
        let mut reader = self.blob_reader()?;
        let mut hasher = blake3::Hasher::new();
        let mut written = 0u64;
        for chunk in &entry.chunks {
            let data = self.read_chunk(chunk, &entry.path, &mut reader)?;
            hasher.update(data);
            out.write_all(data)
                .map_err(|source| RepoError::WriteOutput {
                    path: entry.path.clone(),
                    source,
                })?;
            written += data.len() as u64;
        }
        check_whole_file(entry, written, &hasher)?;
        Ok(written)
    }

    /// A reader of a stored file's content, chunk by chunk (bounded memory), verifying every
    /// chunk and, at the end, the whole file's size and hash: an error surfaces as an
    /// `io::Error` whose message names the file and the blob.
    /// A hint that `files` will be read next, in order (see [`Storage::prefetch`]).
    pub fn prefetch_files<'a>(&self, files: impl IntoIterator<Item = &'a FileEntry>) {
        let keys: Vec<String> = files
            .into_iter()
            .flat_map(|f| f.chunks.iter().map(blob_key))
            .collect();
        if !keys.is_empty() {
            self.inner.storage.prefetch(&keys);
        }
    }

    pub fn open_file(&self, entry: &FileEntry) -> Result<FileReader, RepoError> {
        manifest::validate_file_entry(entry).map_err(|defect| RepoError::InvalidEntry {
            path: entry.path.clone(),
            defect,
        })?;
        Ok(FileReader {
            packed: entry.is_packed().then(|| objects::PackedFile::new(entry)),
            repo: self.clone(),
            entry: entry.clone(),
            reader: self.blob_reader()?,
            next_chunk: 0,
            current: Vec::new(),
            pos: 0,
            hasher: blake3::Hasher::new(),
            size: 0,
            done: false,
        })
    }

    /// Reads back every blob of every file in backup `id` and checks it, and each file's size
    /// and hash. Damage is reported per file and blob, and does not stop the check; an error is
    /// returned only when the manifest itself cannot be read or trusted, or the store fails.
    /// Stops with [`RepoError::Cancelled`] between two files once `cancel` is.
    pub fn verify_backup(
        &self,
        id: &BackupId,
        cancel: &tokio_util::sync::CancellationToken,
    ) -> Result<VerifyReport, RepoError> {
        self.verify_manifest(&self.read_manifest(id)?, cancel)
    }

    /// [`Repository::verify_backup`] of a manifest already read (a restore holds it), stopping
    /// with [`RepoError::Cancelled`] between two files once `cancel` is.
    pub fn verify_manifest(
        &self,
        manifest: &Manifest,
        cancel: &tokio_util::sync::CancellationToken,
    ) -> Result<VerifyReport, RepoError> {
        self.verify_manifest_leaving(manifest, cancel, &|_| false)
    }

    /// [`Self::verify_backup`] that also reads the files `check` understands for their meaning,
    /// in the same pass (a drill): what they hold is counted in [`VerifyReport::inspected`],
    /// what is wrong with them listed in [`VerifyReport::findings`]. Any manifest format.
    pub fn inspect_backup(
        &self,
        id: &BackupId,
        cancel: &tokio_util::sync::CancellationToken,
        check: &dyn inspect::ContentCheck,
    ) -> Result<VerifyReport, RepoError> {
        let manifest = self.read_manifest(id)?;
        self.verify_streaming(&manifest, cancel, &|_| false, Some(check))
    }

    /// [`Self::verify_manifest`], leaving the content of the files `leave` names (stored in
    /// packs) to someone else: of those only the units are checked to be in the index (an agent
    /// reads them back where they are written). Format 1 and 2 backups are read whole.
    pub fn verify_manifest_leaving(
        &self,
        manifest: &Manifest,
        cancel: &tokio_util::sync::CancellationToken,
        leave: &(dyn Fn(&FileEntry) -> bool + Sync),
    ) -> Result<VerifyReport, RepoError> {
        if !manifest.streams.is_empty() {
            return self.verify_streaming(manifest, cancel, leave, None);
        }
        let files: Vec<&FileEntry> = manifest.files().collect();
        // Every unique blob is read once: a file whose chunks all belong to files read before it
        // (the same block on three datanodes, say) is whole by construction. Its sizes and
        // whole hash are covered by the manifest's own checksum; they are checked on the read.
        // The files to read are verified on several threads, each with its own reader.
        let mut scheduled: HashSet<&BlobId> = HashSet::new();
        let mut to_read: Vec<usize> = Vec::new();
        for (i, f) in files.iter().enumerate() {
            let blobs = f.blobs();
            if blobs.is_empty() || !blobs.iter().all(|c| scheduled.contains(c)) {
                to_read.push(i);
                scheduled.extend(blobs.iter());
            }
        }
        let workers = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
            .clamp(1, 4)
            .min(to_read.len().max(1));
        // Files announced ahead of the workers (see [`Storage::prefetch`]).
        const LOOKAHEAD: usize = 96;
        const STEP: usize = 16;
        let next = std::sync::atomic::AtomicUsize::new(0);
        let results: Vec<Result<Vec<(usize, FileCheck)>, RepoError>> =
            std::thread::scope(|scope| {
                let handles: Vec<_> = (0..workers)
                    .map(|_| {
                        scope.spawn(|| {
                            let mut reader = self.blob_reader()?;
                            let mut out = Vec::new();
                            loop {
                                let k = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                                let Some(&i) = to_read.get(k) else {
                                    return Ok(out);
                                };
                                crate::failpoint::hit("verify.file", cancel);
                                if cancel.is_cancelled() {
                                    return Err(RepoError::Cancelled);
                                }
                                if k % STEP == 0 {
                                    // A remote store fetches the next files' blobs meanwhile.
                                    // Each file is announced once (an announcement stands for
                                    // a read): the first LOOKAHEAD at the start, then STEP more
                                    // every STEP files.
                                    let from = if k == 0 { 0 } else { k + LOOKAHEAD - STEP };
                                    let end = (k + LOOKAHEAD).min(to_read.len());
                                    let ahead = to_read.get(from..end).unwrap_or_default();
                                    self.prefetch_files(ahead.iter().map(|&j| files[j]));
                                }
                                out.push((i, self.check_file(files[i], &mut reader, None)?));
                            }
                        })
                    })
                    .collect();
                handles
                    .into_iter()
                    .map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
                    .collect()
            });
        let mut checked: Vec<Option<FileCheck>> = files.iter().map(|_| None).collect();
        for r in results {
            for (i, c) in r? {
                checked[i] = Some(c);
            }
        }
        let bad: HashSet<BlobId> = checked
            .iter()
            .flatten()
            .flat_map(|c| c.bad_chunks.iter().cloned())
            .collect();
        let mut report = VerifyReport::default();
        for (f, c) in files.iter().zip(checked) {
            report.files_checked += 1;
            report.blobs_checked += f.blobs().len() as u64;
            match c {
                Some(c) => {
                    report.bytes_checked += c.bytes;
                    report.damaged.extend(c.damaged);
                }
                None => {
                    for chunk in f.blobs().iter().filter(|c| bad.contains(*c)) {
                        report.damaged.push(Damage {
                            path: f.path.clone(),
                            blob: Some(chunk.clone()),
                            code: "corrupt_blob".to_string(),
                            reason: format!("blob {} is damaged (reported above)", blob_key(chunk)),
                        });
                    }
                }
            }
        }
        Ok(report)
    }

    /// [`Repository::verify_manifest`] of a format 3 manifest with streams, in bounded memory:
    /// its entries are read as they come, each unit is read once (the units read so far are
    /// kept in an on-disk set), and files are checked on several threads. A file whose units
    /// were all read for an earlier file is whole by construction and not read again (damage
    /// is reported once, with the first file that has the unit).
    fn verify_streaming(
        &self,
        manifest: &Manifest,
        cancel: &tokio_util::sync::CancellationToken,
        leave: &(dyn Fn(&FileEntry) -> bool + Sync),
        check: Option<&dyn inspect::ContentCheck>,
    ) -> Result<VerifyReport, RepoError> {
        use std::sync::mpsc;
        self.sync_index()?;
        self.with_cache(|c| c.begin_seen())?;
        let workers = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
            .clamp(1, 4);
        // A file, and the companion its meaning is checked with.
        type Job = (FileEntry, Option<FileEntry>);
        let (job_tx, job_rx) = mpsc::sync_channel::<Job>(64);
        let job_rx = std::sync::Mutex::new(job_rx);
        let (done_tx, done_rx) = mpsc::channel::<Result<FileCheck, RepoError>>();
        let mut report = VerifyReport::default();
        let produced: Result<(), RepoError> = std::thread::scope(|scope| {
            for _ in 0..workers {
                let done_tx = done_tx.clone();
                let job_rx = &job_rx;
                scope.spawn(move || {
                    let mut reader = match self.blob_reader() {
                        Ok(r) => r,
                        Err(e) => {
                            let _ = done_tx.send(Err(e));
                            return;
                        }
                    };
                    loop {
                        let next = job_rx.lock().unwrap_or_else(|p| p.into_inner()).recv();
                        let Ok((f, companion)) = next else { return };
                        crate::failpoint::hit("verify.file", cancel);
                        let r = if cancel.is_cancelled() {
                            Err(RepoError::Cancelled)
                        } else {
                            match check {
                                None => self.check_file(&f, &mut reader, None),
                                Some(check) => {
                                    self.inspect_file(&f, companion.as_ref(), check, &mut reader)
                                }
                            }
                        };
                        if done_tx.send(r).is_err() {
                            return;
                        }
                    }
                });
            }
            drop(done_tx);
            let mut first_err = None;
            let mut absorb = |r: Result<FileCheck, RepoError>, report: &mut VerifyReport| match r {
                Ok(c) => {
                    report.bytes_checked += c.bytes;
                    report.damaged.extend(c.damaged);
                    for i in c.inspected {
                        match i {
                            Ok(i) => {
                                let n = report.inspected.entry(i.kind.to_string()).or_default();
                                n.files += 1;
                                n.units += i.units;
                            }
                            Err(f) => report.findings.push(f),
                        }
                    }
                }
                Err(e) => {
                    first_err.get_or_insert(e);
                }
            };
            let mut produce = || -> Result<(), RepoError> {
                // A file read for its meaning waits here for the next entry, its companion
                // if it has one.
                let mut held: Option<FileEntry> = None;
                let send = |f: FileEntry,
                            companion: Option<FileEntry>,
                            report: &mut VerifyReport|
                 -> Result<bool, RepoError> {
                    let ids: Vec<[u8; 32]> = f.blobs().iter().map(streams::id_bytes).collect();
                    let mut new = self.with_cache(|c| c.see(&ids))? > 0 || ids.is_empty();
                    report.files_checked += 1;
                    report.blobs_checked += f.blobs().len() as u64;
                    let inspected = check.is_some_and(|c| c.inspects(&f.path));
                    if let Some(c) = &companion {
                        let cids: Vec<[u8; 32]> = c.blobs().iter().map(streams::id_bytes).collect();
                        new |= self.with_cache(|k| k.see(&cids))? > 0 || cids.is_empty();
                        report.files_checked += 1;
                        report.blobs_checked += c.blobs().len() as u64;
                    }
                    if inspected {
                        // Read again for its meaning unless the same units (and companion)
                        // were: a replica stored as its sibling's units means the same.
                        let cids: Vec<[u8; 32]> = companion
                            .iter()
                            .flat_map(|c| c.blobs().iter().map(streams::id_bytes))
                            .collect();
                        let id = inspect::inspected_id(&ids, &cids);
                        new = self.with_cache(|k| k.see(&[id]))? > 0;
                    }
                    Ok(!new || job_tx.send((f, companion)).is_ok())
                };
                for e in self.all_entries(manifest) {
                    if cancel.is_cancelled() {
                        return Err(RepoError::Cancelled);
                    }
                    let Entry::File(f) = e? else { continue };
                    if f.is_packed() && leave(&f) {
                        for u in &f.units {
                            if let Err(e) = self.locate_unit(u, &f.path) {
                                report.damaged.push(Damage {
                                    path: f.path.clone(),
                                    blob: Some(u.clone()),
                                    code: e.code().to_string(),
                                    reason: e.to_string(),
                                });
                            }
                        }
                        continue;
                    }
                    let go_on = match held.take() {
                        Some(h) if check.is_some_and(|c| c.companion(&h.path, &f.path)) => {
                            send(h, Some(f), &mut report)?
                        }
                        Some(h) => {
                            send(h, None, &mut report)?
                                && Self::hold_or_send(check, f, &mut held, &mut |f| {
                                    send(f, None, &mut report)
                                })?
                        }
                        None => Self::hold_or_send(check, f, &mut held, &mut |f| {
                            send(f, None, &mut report)
                        })?,
                    };
                    if !go_on {
                        break;
                    }
                    while let Ok(r) = done_rx.try_recv() {
                        absorb(r, &mut report);
                    }
                }
                if let Some(h) = held.take() {
                    send(h, None, &mut report)?;
                }
                Ok(())
            };
            let produced = produce();
            drop(job_tx);
            for r in done_rx.iter() {
                absorb(r, &mut report);
            }
            match (produced, first_err) {
                (Err(e), _) | (Ok(()), Some(e)) => Err(e),
                (Ok(()), None) => Ok(()),
            }
        });
        produced?;
        Ok(report)
    }

    /// Holds `f` when it is read for its meaning (its companion may come next), else sends it.
    fn hold_or_send(
        check: Option<&dyn inspect::ContentCheck>,
        f: FileEntry,
        held: &mut Option<FileEntry>,
        send: &mut dyn FnMut(FileEntry) -> Result<bool, RepoError>,
    ) -> Result<bool, RepoError> {
        if check.is_some_and(|c| c.inspects(&f.path)) {
            *held = Some(f);
            Ok(true)
        } else {
            send(f)
        }
    }

    /// Reads `file` back (and first its companion, whose bytes open the inspector), checking
    /// hashes and, when both are intact, the meaning.
    fn inspect_file(
        &self,
        file: &FileEntry,
        companion: Option<&FileEntry>,
        check: &dyn inspect::ContentCheck,
        reader: &mut BlobReader,
    ) -> Result<FileCheck, RepoError> {
        let finding = |reason: String| inspect::Finding {
            path: file.path.clone(),
            reason,
        };
        let mut first = FileCheck::default();
        let opened = match companion {
            None => check.open(&file.path, None),
            Some(c) if c.size > inspect::COMPANION_LIMIT => Err(format!(
                "its companion {} is {} bytes, more than a companion may be",
                c.path, c.size
            )),
            Some(c) => {
                let mut collect = inspect::Collect(Vec::with_capacity(c.size as usize));
                first = self.check_file(c, reader, Some(&mut collect))?;
                first.inspected.clear();
                if first.damaged.is_empty() {
                    check.open(&file.path, Some(&collect.0))
                } else {
                    Ok(None)
                }
            }
        };
        let (mut checked, inspected) = match opened {
            Ok(Some(mut i)) => {
                let mut c = self.check_file(file, reader, Some(i.as_mut()))?;
                let verdict = if c.damaged.is_empty() {
                    Some(i.finish().map_err(finding))
                } else {
                    None
                };
                c.inspected.clear();
                (c, verdict)
            }
            Ok(None) => (self.check_file(file, reader, None)?, None),
            Err(reason) => (
                self.check_file(file, reader, None)?,
                Some(Err(finding(reason))),
            ),
        };
        checked.bytes += first.bytes;
        checked.bad_chunks.extend(first.bad_chunks);
        checked.damaged.extend(first.damaged);
        checked.inspected.extend(inspected);
        Ok(checked)
    }

    /// Reads one file's chunks back, verifying each and then the whole file.
    fn check_file(
        &self,
        file: &FileEntry,
        reader: &mut BlobReader,
        mut inspect: Option<&mut dyn inspect::Inspector>,
    ) -> Result<FileCheck, RepoError> {
        let mut c = FileCheck::default();
        if file.is_packed() {
            let mut packed = objects::PackedFile::new(file);
            loop {
                match packed.next_piece(self) {
                    Ok(Some(piece)) => {
                        c.bytes += piece.len() as u64;
                        if let Some(i) = inspect.as_mut() {
                            i.feed(&piece);
                        }
                    }
                    Ok(None) => break,
                    Err(e) if e.is_corruption() => {
                        let unit = packed.current_unit();
                        c.bad_chunks.extend(unit.clone());
                        c.damaged.push(Damage {
                            path: file.path.clone(),
                            blob: unit,
                            code: e.code().to_string(),
                            reason: e.to_string(),
                        });
                        break;
                    }
                    Err(e) => return Err(e),
                }
            }
            return Ok(c);
        }
        let mut hasher = blake3::Hasher::new();
        let mut size = 0u64;
        for chunk in &file.chunks {
            match self.read_chunk(chunk, &file.path, reader) {
                Ok(data) => {
                    hasher.update(data);
                    size += data.len() as u64;
                    c.bytes += data.len() as u64;
                    if let Some(i) = inspect.as_mut() {
                        i.feed(data);
                    }
                }
                Err(e @ (RepoError::BlobMissing { .. } | RepoError::CorruptBlob { .. })) => {
                    c.bad_chunks.push(chunk.clone());
                    c.damaged.push(Damage {
                        path: file.path.clone(),
                        blob: Some(chunk.clone()),
                        code: e.code().to_string(),
                        reason: e.to_string(),
                    });
                }
                Err(e) => return Err(e),
            }
        }
        if c.bad_chunks.is_empty() {
            if let Err(e) = check_whole_file(file, size, &hasher) {
                c.damaged.push(Damage {
                    path: file.path.clone(),
                    blob: None,
                    code: e.code().to_string(),
                    reason: e.to_string(),
                });
            }
        }
        Ok(c)
    }

    /// Forgets backup `id`: removes its manifest. Its blobs stay until [`Repository::gc`]
    /// finds that no manifest references them.
    pub fn forget(&self, id: &BackupId) -> Result<(), RepoError> {
        let key = manifest_key(id);
        if !self.inner.storage.exists(&key)? {
            return Err(RepoError::BackupNotFound { id: id.clone() });
        }
        Ok(self.inner.storage.delete(&key)?)
    }

    /// Garbage collection: deletes every blob that no manifest references.
    ///
    /// Every manifest is read first; one that cannot be read stops the collection before
    /// anything is deleted (its blobs may be needed). The caller makes sure no backup writes to
    /// the repository meanwhile (the daemon runs it in the job slot): a backup reuses blobs
    /// that no committed manifest references yet. Interrupted, it leaves fewer unreferenced
    /// blobs; the next collection finishes the work.
    ///
    /// With Object Lock ([`Storage::lock_policy`]), the objects kept backups reference (their
    /// manifests and blobs) whose retention ends within half the lock period are locked for a
    /// whole period again, and an unreferenced blob still locked is left for a later
    /// collection: nothing still locked is ever deleted.
    pub fn gc(&self, cancel: &tokio_util::sync::CancellationToken) -> Result<GcReport, RepoError> {
        if self.is_packed() {
            return self.gc_packed(cancel);
        }
        let mut referenced: HashSet<String> = HashSet::new();
        let ids = self.list_backups()?;
        for id in &ids {
            let m = self.read_manifest(id)?;
            for f in m.files() {
                referenced.extend(f.chunks.iter().map(blob_key));
            }
        }
        let mut report = GcReport {
            manifests: ids.len() as u64,
            ..Default::default()
        };
        crate::failpoint::hit("gc.referenced_read", cancel);
        let storage = self.inner.storage.as_ref();
        let lock = storage.lock_policy();
        let now = collector_now();
        let blobs = storage.list(BLOBS_PREFIX)?;
        if let Some((_, days)) = lock {
            let period = chrono::Duration::days(days as i64);
            // An object written less than half a period ago was locked for a whole one then:
            // only older ones have their retention read (one request each).
            let manifests = storage.list(MANIFESTS_PREFIX)?;
            let written: std::collections::HashMap<&str, DateTime<Utc>> = blobs
                .iter()
                .chain(manifests.iter())
                .filter_map(|o| Some((o.key.as_str(), o.last_modified?)))
                .collect();
            let keys = ids
                .iter()
                .map(manifest_key)
                .chain(referenced.iter().cloned());
            extend_locks(
                storage,
                keys,
                |key| written.get(key).copied(),
                now,
                period,
                &mut report,
                cancel,
            )?;
        }
        for o in blobs {
            if referenced.contains(&o.key) {
                report.blobs_kept += 1;
                continue;
            }
            if cancel.is_cancelled() {
                return Err(RepoError::Cancelled);
            }
            if lock.is_some() && storage.locked_until(&o.key)?.is_some_and(|u| u > now) {
                report.blobs_locked += 1;
                continue;
            }
            match self.inner.storage.delete(&o.key) {
                Ok(()) => {
                    report.blobs_deleted += 1;
                    report.bytes_freed += o.size;
                    if report.blobs_deleted == 1 {
                        crate::failpoint::hit("gc.deleted_one", cancel);
                    }
                }
                Err(e) if e.is_not_found() => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(report)
    }

    /// Checks the repository's structure without reading blob contents: every manifest reads
    /// and verifies (checksum, entries), and every blob a manifest references exists with a
    /// non-empty object. Blobs no manifest references are counted (garbage collection removes
    /// them), not reported as problems.
    pub fn check(&self) -> Result<CheckReport, RepoError> {
        if self.is_packed() {
            return self.check_packed();
        }
        let blobs: std::collections::HashMap<String, u64> = self
            .inner
            .storage
            .list(BLOBS_PREFIX)?
            .into_iter()
            .map(|o| (o.key, o.size))
            .collect();
        let mut report = CheckReport {
            blobs: blobs.len() as u64,
            ..Default::default()
        };
        // (Tests hold checks here to fill the daemon's places for heavy reads.)
        crate::failpoint::hit(
            "repo.check.listed",
            &tokio_util::sync::CancellationToken::new(),
        );
        let mut referenced: HashSet<String> = HashSet::new();
        for id in self.list_backups()? {
            report.manifests += 1;
            let m = match self.read_manifest(&id) {
                Ok(m) => m,
                Err(e) => {
                    report.problems.push(format!("backup {id}: {e}"));
                    continue;
                }
            };
            for f in m.files() {
                for c in &f.chunks {
                    let key = blob_key(c);
                    if referenced.contains(&key) {
                        continue;
                    }
                    match blobs.get(&key) {
                        None => report.problems.push(format!(
                            "backup {id}: blob '{key}' of file '{}' is missing",
                            f.path
                        )),
                        Some(0) => report.problems.push(format!(
                            "backup {id}: blob '{key}' of file '{}' is empty",
                            f.path
                        )),
                        Some(_) => {}
                    }
                    referenced.insert(key);
                }
            }
        }
        report.unreferenced_blobs =
            blobs.keys().filter(|k| !referenced.contains(*k)).count() as u64;
        Ok(report)
    }

    /// Every blob the repository holds (one listing; other keys under `blobs/` are ignored).
    pub fn blob_ids(&self) -> Result<HashSet<BlobId>, RepoError> {
        Ok(self
            .inner
            .storage
            .list(BLOBS_PREFIX)?
            .into_iter()
            .filter_map(|o| blob_of_key(&o.key))
            .collect())
    }

    /// Total size of every object in the repository.
    pub fn stored_bytes(&self) -> Result<u64, RepoError> {
        Ok(self.inner.storage.list("")?.iter().map(|o| o.size).sum())
    }

    /// Free space where the repository is stored, if known.
    pub fn available_bytes(&self) -> Result<Option<u64>, RepoError> {
        Ok(self.inner.storage.available_bytes()?)
    }

    /// Every blob the committed backups reference.
    pub fn referenced_blobs(&self) -> Result<HashSet<BlobId>, RepoError> {
        let mut blobs = HashSet::new();
        for id in self.list_backups()? {
            for file in self.read_manifest(&id)?.files() {
                blobs.extend(file.chunks.iter().cloned());
            }
        }
        Ok(blobs)
    }

    fn blob_reader(&self) -> Result<BlobReader, RepoError> {
        let decompressor =
            zstd::bulk::Decompressor::new().map_err(|source| RepoError::ZstdContext { source })?;
        Ok(BlobReader {
            decompressor,
            buf: Vec::with_capacity(self.chunk_size()),
            opened: Vec::new(),
            keys: self.keyring(),
        })
    }

    /// Reads the blob of chunk `id` (of file `path`) and verifies it.
    fn read_chunk<'r>(
        &self,
        id: &BlobId,
        path: &str,
        reader: &'r mut BlobReader,
    ) -> Result<&'r [u8], RepoError> {
        let key = blob_key(id);
        let stored = match self.inner.storage.get(&key) {
            Ok(b) => b,
            Err(e) if e.is_not_found() => {
                return Err(RepoError::BlobMissing {
                    key,
                    path: path.to_string(),
                })
            }
            Err(e) => return Err(e.into()),
        };
        let limit = self.chunk_size();
        reader.buf.clear();
        let frame: &[u8] = match &reader.keys {
            Some(k) => {
                if let Err(d) = k.open_into(&key, &stored, &mut reader.opened) {
                    return Err(RepoError::CorruptBlob {
                        key,
                        path: path.to_string(),
                        defect: BlobDefect::Sealed(d),
                    });
                }
                &reader.opened
            }
            None => &stored,
        };
        if let Err(source) = reader
            .decompressor
            .decompress_to_buffer(frame, &mut reader.buf)
        {
            return Err(RepoError::CorruptBlob {
                key,
                path: path.to_string(),
                defect: BlobDefect::Undecodable { limit, source },
            });
        }
        let actual = match &reader.keys {
            Some(k) => k.blob_hash(&reader.buf),
            None => blake3::hash(&reader.buf),
        }
        .to_hex();
        if actual.as_str() != id.as_str() {
            return Err(RepoError::CorruptBlob {
                key,
                path: path.to_string(),
                defect: BlobDefect::HashMismatch {
                    expected: id.to_string(),
                    actual: actual.to_string(),
                },
            });
        }
        Ok(&reader.buf)
    }
}

/// See [`Repository::open_file`].
pub struct FileReader {
    /// Format 3 content.
    packed: Option<objects::PackedFile>,
    repo: Repository,
    entry: FileEntry,
    reader: BlobReader,
    next_chunk: usize,
    current: Vec<u8>,
    pos: usize,
    hasher: blake3::Hasher,
    size: u64,
    done: bool,
}

impl std::io::Read for FileReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        loop {
            if self.pos < self.current.len() {
                let n = buf.len().min(self.current.len() - self.pos);
                buf[..n].copy_from_slice(&self.current[self.pos..self.pos + n]);
                self.pos += n;
                return Ok(n);
            }
            if self.done {
                return Ok(0);
            }
            if let Some(p) = self.packed.as_mut() {
                match p
                    .next_piece(&self.repo)
                    .map_err(|e| std::io::Error::other(e.to_string()))?
                {
                    Some(piece) => {
                        self.current = piece;
                        self.pos = 0;
                    }
                    None => self.done = true,
                }
                continue;
            }
            match self.entry.chunks.get(self.next_chunk) {
                Some(hash) => {
                    let data = self
                        .repo
                        .read_chunk(hash, &self.entry.path, &mut self.reader)
                        .map_err(|e| std::io::Error::other(e.to_string()))?;
                    self.hasher.update(data);
                    self.size += data.len() as u64;
                    self.current.clear();
                    self.current.extend_from_slice(data);
                    self.pos = 0;
                    self.next_chunk += 1;
                }
                None => {
                    check_whole_file(&self.entry, self.size, &self.hasher)
                        .map_err(|e| std::io::Error::other(e.to_string()))?;
                    self.done = true;
                }
            }
        }
    }
}

fn check_whole_file(
    entry: &FileEntry,
    size: u64,
    hasher: &blake3::Hasher,
) -> Result<(), RepoError> {
    if size != entry.size {
        return Err(RepoError::CorruptFile {
            path: entry.path.clone(),
            defect: FileDefect::SizeMismatch {
                expected: entry.size,
                actual: size,
            },
        });
    }
    let actual = hasher.finalize().to_hex();
    if actual.as_str() != entry.hash {
        return Err(RepoError::CorruptFile {
            path: entry.path.clone(),
            defect: FileDefect::HashMismatch {
                expected: entry.hash.clone(),
                actual: actual.to_string(),
            },
        });
    }
    Ok(())
}

fn parse_header(bytes: &[u8], storage: &dyn Storage) -> Result<RepositoryHeader, RepoError> {
    let corrupt = |defect| RepoError::CorruptHeader {
        store: storage.describe(),
        key: HEADER_KEY.to_string(),
        defect,
    };
    // Look at format and version first, so that a foreign or newer header says so rather than
    // failing to parse.
    #[derive(Deserialize)]
    struct Probe {
        format: Option<serde_json::Value>,
        version: Option<serde_json::Value>,
    }
    let probe: Probe = serde_json::from_slice(bytes).map_err(|e| corrupt(HeaderDefect::Json(e)))?;
    let format = match &probe.format {
        Some(serde_json::Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
        None => String::new(),
    };
    if format != FORMAT_NAME {
        return Err(RepoError::ForeignFormat {
            store: storage.describe(),
            key: HEADER_KEY.to_string(),
            found: format,
        });
    }
    let version = probe.version.as_ref().and_then(|v| v.as_u64());
    let known = [
        FORMAT_VERSION,
        ENCRYPTED_FORMAT_VERSION,
        PACKED_FORMAT_VERSION,
    ]
    .map(u64::from);
    if !version.is_some_and(|v| known.contains(&v)) {
        return Err(RepoError::UnsupportedVersion {
            store: storage.describe(),
            found: version.unwrap_or(0),
            supported: PACKED_FORMAT_VERSION,
        });
    }
    let header: RepositoryHeader =
        serde_json::from_slice(bytes).map_err(|e| corrupt(HeaderDefect::Json(e)))?;
    if !(MIN_CHUNK_SIZE..=MAX_CHUNK_SIZE).contains(&header.chunk_size) {
        return Err(corrupt(HeaderDefect::ChunkSize(header.chunk_size)));
    }
    let encrypted = match header.version {
        ENCRYPTED_FORMAT_VERSION => true,
        PACKED_FORMAT_VERSION => header.encryption.is_some(),
        _ => false,
    };
    if encrypted != header.encryption.is_some() || encrypted != header.mac.is_some() {
        return Err(corrupt(HeaderDefect::Encryption));
    }
    Ok(header)
}

/// Writes `header` as the repository's header object (pretty JSON and a newline).
fn write_header(storage: &dyn Storage, header: &RepositoryHeader) -> Result<(), RepoError> {
    let mut bytes = serde_json::to_vec_pretty(header).map_err(|e| RepoError::CorruptHeader {
        store: storage.describe(),
        key: HEADER_KEY.to_string(),
        defect: HeaderDefect::Json(e),
    })?;
    bytes.push(b'\n');
    Ok(storage.put(HEADER_KEY, &bytes)?)
}

/// Rewrites the header of a format 1 or 2 repository as format 3 (the only time a header is
/// written twice): its backups stay readable and their blobs are reused and collected as
/// before; new backups are written in packs. A hopsdr that knows only formats 1 and 2 refuses
/// the repository from then on (its collector would delete blobs that new backups reuse).
fn upgrade(
    storage: &dyn Storage,
    mut header: RepositoryHeader,
    keys: Option<&Keyring>,
) -> Result<RepositoryHeader, RepoError> {
    let from = header.version;
    header.version = PACKED_FORMAT_VERSION;
    if let Some(k) = keys {
        header.mac = None;
        header.mac = Some(k.header_mac(&header_mac_input(&header)));
    }
    write_header(storage, &header)?;
    tracing::info!(
        store = %storage.describe(),
        "repository upgraded from format {from} to format {PACKED_FORMAT_VERSION}: new backups are written in packs; hopsdr releases before it no longer open it"
    );
    crate::failpoint::hit(
        "repository.upgrade.header_written",
        &tokio_util::sync::CancellationToken::new(),
    );
    Ok(header)
}

/// The bytes a header's MAC covers: the header without `mac`, as JSON.
fn header_mac_input(header: &RepositoryHeader) -> Vec<u8> {
    let mut unsigned = header.clone();
    unsigned.mac = None;
    serde_json::to_vec(&unsigned).expect("a header serializes")
}

/// Opens the keys of the repository `header` describes with `key`: refuses an encrypted
/// repository without a key, a plaintext one with a key (fails closed), and a header its keys
/// do not authenticate.
fn open_keys(
    storage: &dyn Storage,
    header: &RepositoryHeader,
    key: Option<&KeySource>,
) -> Result<Option<(Keyring, String)>, RepoError> {
    match (&header.encryption, key) {
        (None, None) => Ok(None),
        (None, Some(_)) => Err(RepoError::NotEncrypted {
            store: storage.describe(),
        }),
        (Some(_), None) => Err(RepoError::KeyRequired {
            store: storage.describe(),
        }),
        (Some(_), Some(k)) => {
            let (keyring, slot) = keys::open(
                storage,
                &header.id,
                &k.passphrase,
                k.slot.as_deref(),
                &k.describe,
            )?;
            let mac = keyring.header_mac(&header_mac_input(header));
            if header.mac.as_deref() != Some(mac.as_str()) {
                return Err(RepoError::HeaderTampered {
                    store: storage.describe(),
                });
            }
            Ok(Some((keyring, slot)))
        }
    }
}

/// A key slot with the master key it wraps.
type OpenedSlot = (keys::KeySlot, zeroize::Zeroizing<[u8; 32]>);

/// The slot of an interrupted creation that `passphrase` opens, with the master key it wraps;
/// `None` when no slot records its repository or none opens.
fn resume_init(slots: &[keys::KeySlot], passphrase: &str) -> Result<Option<OpenedSlot>, RepoError> {
    for s in slots.iter().filter(|s| !s.repository.is_empty()) {
        if let Some(master) = keys::unwrap(s, passphrase, &s.repository)? {
            return Ok(Some((s.clone(), master)));
        }
    }
    Ok(None)
}

/// Writes a new repository into an empty store — with `key`, encrypted: its first key slot and
/// data key, then the header (the commit point) — and reads back whichever header won (two
/// processes initialising at once both end up with the same one).
fn init(
    storage: &dyn Storage,
    key: Option<&KeySource>,
    packed: bool,
) -> Result<(RepositoryHeader, Option<(Keyring, String)>), RepoError> {
    if !storage.list(MANIFESTS_PREFIX)?.is_empty() {
        return Err(RepoError::MissingHeader {
            store: storage.describe(),
            key: HEADER_KEY.to_string(),
        });
    }
    let mut header = RepositoryHeader {
        format: FORMAT_NAME.to_string(),
        version: if packed {
            PACKED_FORMAT_VERSION
        } else {
            FORMAT_VERSION
        },
        id: random_id(),
        created: Utc::now(),
        chunk_size: CHUNK_SIZE as u64,
        hash: "blake3".to_string(),
        compression: "zstd".to_string(),
        encryption: None,
        mac: None,
    };
    if let Some(k) = key {
        let slots = keys::read_slots(storage)?;
        let mut keyring = match resume_init(&slots, &k.passphrase)? {
            // A creation interrupted after its keys (the header is its last step): resumed
            // under the repository id its slot was made for.
            Some((slot, master)) => {
                header.id = slot.repository.clone();
                header.created = slot.created;
                match keys::load_data_keys(storage, Keyring::from_master(&master)) {
                    Ok(keyring) => keyring,
                    Err(keys::KeysError::NoDataKeys { .. }) => Keyring::from_master(&master),
                    Err(e) => return Err(e.into()),
                }
            }
            None if !slots.is_empty() || !storage.list(keys::DATA_KEYS_PREFIX)?.is_empty() => {
                return Err(RepoError::InterruptedInit {
                    store: storage.describe(),
                });
            }
            None => {
                let master =
                    crypto::random::<32>().map_err(|e| RepoError::Random(e.to_string()))?;
                let slot = keys::wrap(
                    &master,
                    &k.passphrase,
                    &header.id,
                    k.slot.as_deref().unwrap_or("primary"),
                    keys::DEFAULT_KDF,
                    header.created,
                )?;
                keys::write_slot(storage, &slot)?;
                crate::failpoint::hit(
                    "repository.init.slot_written",
                    &tokio_util::sync::CancellationToken::new(),
                );
                Keyring::from_master(&master)
            }
        };
        if keyring.data_key_ids().is_empty() {
            keys::rotate(storage, &mut keyring)?;
        }
        crate::failpoint::hit(
            "repository.init.keys_written",
            &tokio_util::sync::CancellationToken::new(),
        );
        if !packed {
            header.version = ENCRYPTED_FORMAT_VERSION;
        }
        header.encryption = Some(EncryptionInfo::current());
        header.mac = Some(keyring.header_mac(&header_mac_input(&header)));
    }
    write_header(storage, &header)?;
    let stored = storage.get(HEADER_KEY)?;
    let header = parse_header(&stored, storage)?;
    let keys = open_keys(storage, &header, key)?;
    Ok((header, keys))
}

/// 128 random bits as hex, from the kernel; falls back to hashing time and pid (the id only
/// tells repositories apart, it guards nothing).
fn random_id() -> String {
    let mut bytes = [0u8; 16];
    let from_kernel = std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .is_ok();
    if !from_kernel {
        let mut h = blake3::Hasher::new();
        h.update(format!("{:?}{}", std::time::SystemTime::now(), std::process::id()).as_bytes());
        bytes.copy_from_slice(&h.finalize().as_bytes()[..16]);
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
