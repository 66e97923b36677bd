//! The repository's errors. Every one names what it is about: the object key, the backup, the
//! file's logical path.

use std::io;

use crate::ids::BackupId;

use super::storage::StorageError;

#[derive(Debug, thiserror::Error)]
pub enum RepoError {
    #[error("pack {pack} reported stored by an agent is refused: {reason}")]
    AdoptRefused { pack: String, reason: String },
    #[error("{count} blob(s) an agent was to store were never reported stored: nothing is indexed or committed")]
    Unreported { count: usize },
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error(transparent)]
    Lock(#[from] Box<super::lock::LockError>),
    #[error("blob '{key}' of file '{path}' is missing from the repository")]
    BlobMissing { key: String, path: String },
    #[error("blob '{key}' of file '{path}' is corrupt: {defect}")]
    CorruptBlob {
        key: String,
        path: String,
        defect: BlobDefect,
    },
    #[error("file '{path}' does not match its manifest entry: {defect}")]
    CorruptFile { path: String, defect: FileDefect },
    #[error("manifest '{key}' of backup '{id}' is corrupt: {defect}")]
    CorruptManifest {
        id: BackupId,
        key: String,
        defect: ManifestDefect,
    },
    #[error("backup '{id}' not found in the repository")]
    BackupNotFound { id: BackupId },
    #[error("backup '{id}' already exists in the repository; refusing to overwrite its manifest")]
    BackupExists { id: BackupId },
    #[error("'{key}' in {store} is not a hopsdr repository header (format '{found}')")]
    ForeignFormat {
        store: String,
        key: String,
        found: String,
    },
    #[error(
        "repository {store} has format version {found}; this hopsdr reads versions 1 \
         (plaintext), 2 (encrypted) and {supported} (packed) only: use a hopsdr release that \
         supports it"
    )]
    UnsupportedVersion {
        store: String,
        found: u64,
        supported: u32,
    },
    #[error("repository header '{key}' in {store} is unreadable: {defect}")]
    CorruptHeader {
        store: String,
        key: String,
        defect: HeaderDefect,
    },
    #[error(
        "{store} holds backups but no header '{key}'; refusing to initialise a repository over \
         existing data"
    )]
    MissingHeader { store: String, key: String },
    #[error("invalid compression level {level}: zstd takes {min}..={max}")]
    InvalidCompressionLevel { level: i32, min: i32, max: i32 },
    #[error("invalid entry '{path}': {defect}")]
    InvalidEntry { path: String, defect: EntryDefect },
    #[error("failed to read source of '{path}': {source}")]
    ReadSource {
        path: String,
        #[source]
        source: io::Error,
    },
    #[error("failed to write restored file '{path}': {source}")]
    WriteOutput {
        path: String,
        #[source]
        source: io::Error,
    },
    #[error("failed to compress a chunk of '{path}': {source}")]
    Compress {
        path: String,
        #[source]
        source: io::Error,
    },
    #[error("failed to encode the manifest of backup '{id}': {source}")]
    EncodeManifest {
        id: BackupId,
        #[source]
        source: serde_json::Error,
    },
    #[error("failed to create a zstd context: {source}")]
    ZstdContext {
        #[source]
        source: io::Error,
    },
    #[error("failed to start a worker thread for '{path}': {source}")]
    Thread {
        path: String,
        #[source]
        source: io::Error,
    },
    #[error(transparent)]
    Keys(#[from] super::keys::KeysError),
    #[error("the repository in {store} is encrypted: set [repository.encryption] passphrase (a file or a systemd credential holding a passphrase of one of its key slots)")]
    KeyRequired { store: String },
    #[error("the repository in {store} is not encrypted, but [repository.encryption] is set: remove [repository.encryption] to use it as it is, or point [repository] at a new, empty location to start an encrypted repository (hopsdr never writes plaintext where encryption is asked for)")]
    NotEncrypted { store: String },
    #[error("the header of the repository in {store} fails authentication with its keys: the repository was tampered with; nothing is read from it")]
    HeaderTampered { store: String },
    #[error("{store} holds key objects (keys/) but no header, and the passphrase opens none of its slots: creating an encrypted repository was interrupted with another passphrase; start with that one to finish it, or empty the location and start again")]
    InterruptedInit { store: String },
    #[error("failed to seal an object: no randomness from the kernel: {0}")]
    Random(String),
    #[error(transparent)]
    Cache(Box<super::cache::CacheError>),
    #[error("index object '{key}' is damaged at byte {offset}: {what} (hopsdrctl repo repair-index rebuilds the index from the packs)")]
    CorruptIndex {
        key: String,
        offset: u64,
        what: String,
    },
    #[error("pack '{key}' (holding '{path}') is damaged: {defect}")]
    CorruptPack {
        key: String,
        path: String,
        defect: super::pack::PackDefect,
    },
    #[error("blob {id} of '{path}' is in no index object of the repository (missing, or its index is lost: hopsdrctl repo repair-index rebuilds the index from the packs)")]
    NotIndexed {
        id: crate::ids::BlobId,
        path: String,
    },
    #[error("metadata object {id} of backup '{backup}' ({what}) is damaged: {reason}")]
    CorruptTree {
        backup: BackupId,
        id: String,
        what: String,
        reason: String,
    },
    #[error("a backup's entries could not be kept on disk while it runs: {0}")]
    Spill(String),
    #[error("cancelled")]
    Cancelled,
}

impl RepoError {
    /// A stable, machine-readable name for the kind of error (JSON `code`, metric label).
    pub fn code(&self) -> &'static str {
        match self {
            RepoError::Storage(StorageError::NotFound { .. }) => "storage_not_found",
            RepoError::Storage(StorageError::InvalidKey { .. }) => "storage_invalid_key",
            RepoError::Storage(StorageError::Io { .. }) => "storage_io",
            RepoError::Storage(StorageError::Remote { .. }) => "storage_remote",
            RepoError::Lock(_) => "repository_locked",
            RepoError::BlobMissing { .. } => "blob_missing",
            RepoError::CorruptBlob { .. } => "corrupt_blob",
            RepoError::CorruptFile { .. } => "corrupt_file",
            RepoError::CorruptManifest { .. } => "corrupt_manifest",
            RepoError::BackupNotFound { .. } => "backup_not_found",
            RepoError::BackupExists { .. } => "backup_exists",
            RepoError::ForeignFormat { .. } => "foreign_format",
            RepoError::UnsupportedVersion { .. } => "unsupported_version",
            RepoError::CorruptHeader { .. } => "corrupt_header",
            RepoError::MissingHeader { .. } => "missing_header",
            RepoError::InvalidCompressionLevel { .. } => "invalid_compression_level",
            RepoError::InvalidEntry { .. } => "invalid_entry",
            RepoError::ReadSource { .. } => "read_source",
            RepoError::WriteOutput { .. } => "write_output",
            RepoError::Compress { .. } => "compress",
            RepoError::EncodeManifest { .. } => "encode_manifest",
            RepoError::Thread { .. } => "thread",
            RepoError::ZstdContext { .. } => "zstd_context",
            RepoError::Keys(super::keys::KeysError::WrongPassphrase { .. }) => "wrong_passphrase",
            RepoError::Keys(_) => "repository_keys",
            RepoError::KeyRequired { .. } => "key_required",
            RepoError::NotEncrypted { .. } => "not_encrypted",
            RepoError::HeaderTampered { .. } => "tampered",
            RepoError::InterruptedInit { .. } => "interrupted_init",
            RepoError::Random(_) => "random",
            RepoError::Cache(_) => "index_cache",
            RepoError::CorruptIndex { .. } => "corrupt_index",
            RepoError::CorruptPack { .. } => "corrupt_pack",
            RepoError::NotIndexed { .. } => "not_indexed",
            RepoError::CorruptTree { .. } => "corrupt_tree",
            RepoError::Spill(_) => "spill",
            RepoError::AdoptRefused { .. } => "adopt_refused",
            RepoError::Unreported { .. } => "unreported",
            RepoError::Cancelled => "cancelled",
        }
    }

    /// True when the repository's content is damaged (as opposed to unreachable or misused).
    pub fn is_corruption(&self) -> bool {
        matches!(
            self,
            RepoError::BlobMissing { .. }
                | RepoError::CorruptBlob { .. }
                | RepoError::CorruptFile { .. }
                | RepoError::CorruptManifest { .. }
                | RepoError::CorruptHeader { .. }
                | RepoError::HeaderTampered { .. }
                | RepoError::CorruptIndex { .. }
                | RepoError::CorruptPack { .. }
                | RepoError::NotIndexed { .. }
                | RepoError::CorruptTree { .. }
        )
    }
}

/// What is wrong with a blob.
#[derive(Debug, thiserror::Error)]
pub enum BlobDefect {
    #[error("it does not decompress (or decompresses to more than {limit} bytes): {source}")]
    Undecodable {
        limit: usize,
        #[source]
        source: io::Error,
    },
    #[error("its content hashes to {actual}, not {expected}")]
    HashMismatch { expected: String, actual: String },
    #[error("{actual} of its {expected} bytes could be read (the object is truncated)")]
    Truncated { expected: u64, actual: u64 },
    /// An encrypted repository's blob that does not open: flipped, swapped, forged.
    #[error("{0}")]
    Sealed(super::crypto::SealDefect),
}

/// What is wrong with a restored file as a whole (every chunk was sound).
#[derive(Debug, thiserror::Error)]
pub enum FileDefect {
    #[error("its chunks hold {actual} bytes, the manifest says {expected}")]
    SizeMismatch { expected: u64, actual: u64 },
    #[error("its content hashes to {actual}, not {expected}")]
    HashMismatch { expected: String, actual: String },
}

/// What is wrong with a stored manifest.
#[derive(Debug, thiserror::Error)]
pub enum ManifestDefect {
    #[error("it does not decompress: {0}")]
    Undecodable(#[source] io::Error),
    /// An encrypted repository's manifest that does not open: edited, forged or swapped.
    #[error("{0}: the repository was tampered with (or the manifest damaged); nothing is restored from it")]
    Sealed(super::crypto::SealDefect),
    #[error("it is not framed as {{\"checksum\":\"<blake3>\",\"body\":...}}")]
    BadFraming,
    #[error("its body hashes to {actual}, not to its checksum {expected}")]
    ChecksumMismatch { expected: String, actual: String },
    #[error("its body is not a valid manifest: {0}")]
    Json(#[source] serde_json::Error),
    #[error("it describes backup '{found}'")]
    IdMismatch { found: BackupId },
    #[error("it has manifest format version {found}; this hopsdr reads version {supported}")]
    UnsupportedVersion { found: u32, supported: u32 },
    #[error("entry '{path}': {defect}")]
    InvalidEntry { path: String, defect: EntryDefect },
}

/// What is wrong with the repository header.
#[derive(Debug, thiserror::Error)]
pub enum HeaderDefect {
    #[error("it is not valid JSON: {0}")]
    Json(#[source] serde_json::Error),
    #[error("its chunk size {0} is outside {min}..={max}", min = super::MIN_CHUNK_SIZE, max = super::MAX_CHUNK_SIZE)]
    ChunkSize(u64),
    #[error("its version does not match its encryption fields (version 2 has `encryption` and `mac`, version 1 neither, version 3 both or neither)")]
    Encryption,
}

/// Why a logical path was refused by [`super::validate_logical_path`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PathDefect {
    #[error("it is empty")]
    Empty,
    #[error("it is absolute")]
    Absolute,
    #[error("it has an empty component (a doubled or trailing '/')")]
    EmptyComponent,
    #[error("it has a '.' or '..' component")]
    DotComponent,
    #[error("it has a NUL byte")]
    Nul,
    #[error("it is longer than 4096 bytes")]
    TooLong,
}

/// Why an entry was refused when added to a backup or read back from a manifest.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EntryDefect {
    #[error("invalid path: {0}")]
    Path(PathDefect),
    #[error("the path appears more than once")]
    Duplicate,
    #[error("it lies under '{ancestor}', which is not a directory")]
    UnderNonDirectory { ancestor: String },
    #[error("invalid hash '{0}': not 64 lower-case hex digits")]
    BadHash(String),
    #[error("invalid symlink target: empty or has a NUL byte")]
    BadSymlinkTarget,
    #[error("an empty file with chunks, or a non-empty file without")]
    ChunksDoNotFitSize,
    #[error("a stream record for a backup that keeps no streams (format 3 only)")]
    NoStreams,
}
