//! Manifests: what a backup holds, and how a manifest is encoded so that reading it verifies it.

use std::collections::{HashMap, HashSet};
use std::io::Read;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::ids::{BackupId, BlobId};

use super::error::{EntryDefect, ManifestDefect, PathDefect, RepoError};
use super::facts::ManifestFacts;
use super::{FORMAT_VERSION, PACKED_FORMAT_VERSION};

/// A decoded manifest larger than this is refused (a tampered one could claim any size).
const MAX_MANIFEST_BYTES: u64 = 4 << 30;

/// Owner, permissions and modification time of an entry, as the backup found them.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct FileMeta {
    /// Permission bits (and file type bits, if the caller keeps them), as in `st_mode`.
    pub mode: u32,
    /// Modification time, seconds since the Unix epoch.
    pub mtime: i64,
    pub uid: u32,
    pub gid: u32,
}

impl FileMeta {
    /// Bytes of [`FileMeta::encode_le`]'s record.
    pub const ENCODED_LEN: usize = 20;

    /// A fixed-size record for the temporary files of a backup (mode u32, mtime i64, uid u32,
    /// gid u32, little-endian).
    pub fn encode_le(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.mode.to_le_bytes());
        out.extend_from_slice(&self.mtime.to_le_bytes());
        out.extend_from_slice(&self.uid.to_le_bytes());
        out.extend_from_slice(&self.gid.to_le_bytes());
    }

    /// The record [`FileMeta::encode_le`] wrote at the start of `b`; `None` if it is short.
    pub fn decode_le(b: &[u8]) -> Option<FileMeta> {
        let u32_at = |i: usize| Some(u32::from_le_bytes(b.get(i..i + 4)?.try_into().ok()?));
        Some(FileMeta {
            mode: u32_at(0)?,
            mtime: i64::from_le_bytes(b.get(4..12)?.try_into().ok()?),
            uid: u32_at(12)?,
            gid: u32_at(16)?,
        })
    }
}

/// A regular file. Formats 1 and 2: its content is the concatenation of its chunks' blobs, in
/// order, checked against `hash`. Format 3: `size` bytes from byte `skip` of the concatenation
/// of its units (each a blob in a data pack or a solo pack, named by the hash of its content);
/// `hash` is empty and `chunks` too, except for content a format 1/2 backup stored.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct FileEntry {
    pub path: String,
    pub size: u64,
    pub meta: FileMeta,
    /// BLAKE3 of the whole content, lower-case hex (formats 1 and 2).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub hash: String,
    /// The blob of each chunk, in order (BLAKE3 of the chunk's content).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub chunks: Vec<BlobId>,
    /// Format 3: the units whose concatenation holds the content.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub units: Vec<BlobId>,
    /// Format 3: where the content starts in the concatenation of the units (a HopsFS
    /// replica's checksum file follows its block in one unit).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub skip: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl FileEntry {
    /// Whether the content is in format 3 units (else in format 1/2 chunks).
    pub fn is_packed(&self) -> bool {
        !self.units.is_empty() || (self.hash.is_empty() && self.chunks.is_empty())
    }

    /// What the content is read from: the units (format 3) or the chunks.
    pub fn blobs(&self) -> &[BlobId] {
        if self.is_packed() {
            &self.units
        } else {
            &self.chunks
        }
    }
}

/// One HopsFS volume's entries in a format 3 manifest (see `tree.rs`): a base written by
/// backup `base_of`, with `layers` of changes since (oldest first), under `prefix`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct StreamRef {
    /// The logical path the stream's keys are relative to (`hopsfs/<datanode>/vol<k>`).
    pub prefix: String,
    /// The base's root (hex id).
    pub root: String,
    pub base_of: BackupId,
    pub base_records: u64,
    /// Each layer's pages (hex ids), oldest layer first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub layers: Vec<Vec<String>>,
    /// Puts and deletions in all layers.
    #[serde(default)]
    pub layer_ops: u64,
    /// Records in the stream as this backup holds it.
    pub records: u64,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Entry {
    File(FileEntry),
    Dir {
        path: String,
        meta: FileMeta,
    },
    Symlink {
        path: String,
        target: String,
        meta: FileMeta,
    },
}

impl Entry {
    pub fn path(&self) -> &str {
        match self {
            Entry::File(f) => &f.path,
            Entry::Dir { path, .. } | Entry::Symlink { path, .. } => path,
        }
    }
}

/// One component of a backup (RonDB, HopsFS blocks, users and grants, config files, ...).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct ComponentInfo {
    pub name: String,
    /// How the component's backup ended (`complete`, `skipped`, ...), as the backup job names it.
    pub state: String,
    pub logical_bytes: u64,
    pub files: u64,
}

/// Facts about a backup besides its entries.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct BackupInfo {
    pub started_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
    pub hostname: String,
    pub hopsdr_version: String,
    #[serde(default)]
    pub components: Vec<ComponentInfo>,
    /// What the components found and the backup's sizes (stored as `extra`).
    #[serde(default, rename = "extra")]
    pub facts: ManifestFacts,
}

/// What a backup holds. Stored at `manifests/<backup-id>.json.zst`; its presence is what makes
/// the backup exist.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Manifest {
    pub format_version: u32,
    pub id: BackupId,
    pub info: BackupInfo,
    /// Format 3: the entries outside the streams (config files, users, RonDB).
    pub entries: Vec<Entry>,
    /// Format 3: the HopsFS volumes' entries, stored apart (read with
    /// `Repository::stream_entries`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub streams: Vec<StreamRef>,
}

impl Manifest {
    /// A manifest for tests: backup `id` (a valid backup id), its facts, and one file entry
    /// per `(path, chunk)` (the chunk's hash doubles as the file's).
    #[cfg(test)]
    pub(crate) fn for_tests(id: &str, facts: ManifestFacts, files: &[(&str, &str)]) -> Manifest {
        let now = chrono::Utc::now();
        Manifest {
            format_version: 1,
            id: crate::ids::BackupId::parse(id).expect("a valid backup id"),
            info: BackupInfo {
                started_at: now,
                finished_at: now,
                hostname: "h".into(),
                hopsdr_version: "0".into(),
                components: vec![],
                facts,
            },
            entries: files
                .iter()
                .map(|(path, chunk)| {
                    Entry::File(FileEntry {
                        path: path.to_string(),
                        size: 1,
                        meta: FileMeta::default(),
                        hash: chunk.to_string(),
                        chunks: vec![BlobId::parse(chunk).expect("a valid blob id")],
                        units: vec![],
                        skip: 0,
                    })
                })
                .collect(),
            streams: vec![],
        }
    }

    /// The file entries, in manifest order.
    pub fn files(&self) -> impl Iterator<Item = &FileEntry> {
        self.entries.iter().filter_map(|e| match e {
            Entry::File(f) => Some(f),
            _ => None,
        })
    }
}

/// Whether symlink `rel` (relative to the stream's root) pointing at `target` leads outside the
/// tree: an absolute target, or one whose `..` climb above the root.
pub fn symlink_escapes(rel: &str, target: &str) -> bool {
    if target.starts_with('/') || target.is_empty() {
        return true;
    }
    let mut depth = rel.split('/').filter(|c| !c.is_empty()).count() as i64 - 1;
    for c in target.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                depth -= 1;
                if depth < 0 {
                    return true;
                }
            }
            _ => depth += 1,
        }
    }
    false
}

/// Checks a logical path: relative, `/`-separated, no empty, `.` or `..` components, no NUL.
/// Such a path joined to a restore target stays inside it (provided no ancestor is a symlink,
/// which manifest validation also guarantees).
pub fn validate_logical_path(path: &str) -> Result<(), PathDefect> {
    if path.is_empty() {
        return Err(PathDefect::Empty);
    }
    if path.len() > 4096 {
        return Err(PathDefect::TooLong);
    }
    if path.starts_with('/') {
        return Err(PathDefect::Absolute);
    }
    if path.contains('\0') {
        return Err(PathDefect::Nul);
    }
    for component in path.split('/') {
        match component {
            "" => return Err(PathDefect::EmptyComponent),
            "." | ".." => return Err(PathDefect::DotComponent),
            _ => {}
        }
    }
    Ok(())
}

pub(crate) fn is_hash_hex(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f'))
}

/// Checks one entry on its own: path, hashes, symlink target.
pub(crate) fn validate_entry(entry: &Entry) -> Result<(), EntryDefect> {
    match entry {
        Entry::File(f) => validate_file_entry(f),
        Entry::Dir { path, .. } => validate_logical_path(path).map_err(EntryDefect::Path),
        Entry::Symlink { path, target, .. } => {
            validate_logical_path(path).map_err(EntryDefect::Path)?;
            if target.is_empty() || target.contains('\0') {
                return Err(EntryDefect::BadSymlinkTarget);
            }
            Ok(())
        }
    }
}

/// Checks a file entry on its own: path, whole-file and chunk hashes, chunks against size.
pub(crate) fn validate_file_entry(f: &FileEntry) -> Result<(), EntryDefect> {
    validate_logical_path(&f.path).map_err(EntryDefect::Path)?;
    if f.is_packed() {
        if let Some(bad) = f.units.iter().find(|c| !c.is_well_formed()) {
            return Err(EntryDefect::BadHash(bad.to_string()));
        }
        if !f.chunks.is_empty() || !f.hash.is_empty() || (f.size == 0) != f.units.is_empty() {
            return Err(EntryDefect::ChunksDoNotFitSize);
        }
        return Ok(());
    }
    if f.skip != 0 {
        return Err(EntryDefect::ChunksDoNotFitSize);
    }
    if !is_hash_hex(&f.hash) {
        return Err(EntryDefect::BadHash(f.hash.clone()));
    }
    if let Some(bad) = f.chunks.iter().find(|c| !c.is_well_formed()) {
        return Err(EntryDefect::BadHash(bad.to_string()));
    }
    if (f.size == 0) != f.chunks.is_empty() {
        return Err(EntryDefect::ChunksDoNotFitSize);
    }
    Ok(())
}

/// Checks a whole entry list: every entry valid, no path twice, and nothing under a path that
/// is a file or a symlink (a restore must never write through a symlink it created).
/// Returns the offending path with the defect.
pub(crate) fn validate_entries(entries: &[Entry]) -> Result<(), (String, EntryDefect)> {
    let mut is_dir: HashMap<&str, bool> = HashMap::with_capacity(entries.len());
    for entry in entries {
        validate_entry(entry).map_err(|d| (entry.path().to_string(), d))?;
        if is_dir
            .insert(entry.path(), matches!(entry, Entry::Dir { .. }))
            .is_some()
        {
            return Err((entry.path().to_string(), EntryDefect::Duplicate));
        }
    }
    for entry in entries {
        let path = entry.path();
        for (i, _) in path.match_indices('/') {
            let ancestor = &path[..i];
            if is_dir.get(ancestor) == Some(&false) {
                return Err((
                    path.to_string(),
                    EntryDefect::UnderNonDirectory {
                        ancestor: ancestor.to_string(),
                    },
                ));
            }
        }
    }
    Ok(())
}

const CHECKSUM_PREFIX: &[u8] = b"{\"checksum\":\"";
const BODY_PREFIX: &[u8] = b"\",\"body\":";
const SUFFIX: &[u8] = b"}\n";

/// Encodes a manifest: zstd of `{"checksum":"<blake3 hex of body>","body":<body>}` where
/// `<body>` is the manifest's JSON, checksummed byte for byte as stored. The result is a plain
/// JSON document (`zstdcat m.json.zst | jq .body`), yet verifying it never re-serialises.
///
/// The JSON is never held whole in memory: it is serialised once into the hash and once into
/// the compressor (a manifest of a large HopsFS cluster is tens of MiB of JSON), and the frame
/// records its decompressed size so that a reader can allocate it once.
pub(crate) fn encode(manifest: &Manifest, key: &str, level: i32) -> Result<Vec<u8>, RepoError> {
    use std::io::Write;
    let encode_err = |source| RepoError::EncodeManifest {
        id: manifest.id.clone(),
        source,
    };
    let compress_err = |source| RepoError::Compress {
        path: key.to_string(),
        source,
    };
    let mut hashing = Counted::new(blake3::Hasher::new());
    serde_json::to_writer(
        std::io::BufWriter::with_capacity(1 << 16, &mut hashing),
        manifest,
    )
    .map_err(encode_err)?;
    let (hasher, body_len) = (hashing.inner, hashing.count);
    let checksum = hasher.finalize().to_hex();
    let doc_len = CHECKSUM_PREFIX.len() + 64 + BODY_PREFIX.len() + body_len + SUFFIX.len();
    let mut enc = zstd::stream::write::Encoder::new(Vec::new(), level).map_err(compress_err)?;
    enc.set_pledged_src_size(Some(doc_len as u64))
        .map_err(compress_err)?;
    enc.include_contentsize(true).map_err(compress_err)?;
    let mut out = Counted::new(std::io::BufWriter::with_capacity(1 << 16, enc));
    for part in [CHECKSUM_PREFIX, checksum.as_bytes(), BODY_PREFIX] {
        out.write_all(part).map_err(compress_err)?;
    }
    serde_json::to_writer(&mut out, manifest).map_err(encode_err)?;
    out.write_all(SUFFIX).map_err(compress_err)?;
    if out.count != doc_len {
        // Serialising the same value twice gave other bytes: never store an unverifiable one.
        return Err(compress_err(std::io::Error::other(format!(
            "the manifest serialised to {} bytes, then to {doc_len}",
            out.count
        ))));
    }
    out.inner
        .into_inner()
        .map_err(|e| compress_err(e.into_error()))?
        .finish()
        .map_err(compress_err)
}

/// A writer that counts the bytes written through it.
struct Counted<W> {
    inner: W,
    count: usize,
}

impl<W> Counted<W> {
    fn new(inner: W) -> Counted<W> {
        Counted { inner, count: 0 }
    }
}

impl<W: std::io::Write> std::io::Write for Counted<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.count += n;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Decodes and verifies a stored manifest for backup `id`: decompresses, checks the framing and
/// the checksum, parses, and validates the id, the version and every entry.
pub(crate) fn decode(stored: &[u8], id: &BackupId) -> Result<Manifest, ManifestDefect> {
    // One allocation of the size the frame records (within what JSON compresses to; grown as
    // needed beyond it, or without a recorded size).
    let size_hint = zstd::zstd_safe::get_frame_content_size(stored)
        .ok()
        .flatten()
        .unwrap_or(0)
        .min(stored.len() as u64 * 64)
        .min(MAX_MANIFEST_BYTES);
    let mut doc = Vec::with_capacity(size_hint as usize);
    zstd::stream::read::Decoder::new(stored)
        .and_then(|d| d.take(MAX_MANIFEST_BYTES).read_to_end(&mut doc))
        .map_err(ManifestDefect::Undecodable)?;
    let rest = doc
        .strip_prefix(CHECKSUM_PREFIX)
        .ok_or(ManifestDefect::BadFraming)?;
    if rest.len() < 64 {
        return Err(ManifestDefect::BadFraming);
    }
    let (checksum, rest) = rest.split_at(64);
    let checksum = std::str::from_utf8(checksum)
        .ok()
        .filter(|c| is_hash_hex(c))
        .ok_or(ManifestDefect::BadFraming)?;
    let body = rest
        .strip_prefix(BODY_PREFIX)
        .and_then(|r| r.strip_suffix(SUFFIX))
        .ok_or(ManifestDefect::BadFraming)?;
    let actual = blake3::hash(body).to_hex();
    if actual.as_str() != checksum {
        return Err(ManifestDefect::ChecksumMismatch {
            expected: checksum.to_string(),
            actual: actual.to_string(),
        });
    }
    // A newer manifest says so rather than failing to parse: on a parse error, or a version
    // that is not ours, the version alone is read (one pass over the body when all is well).
    #[derive(Deserialize)]
    struct Version {
        format_version: u32,
    }
    let unsupported = |found| ManifestDefect::UnsupportedVersion {
        found,
        supported: PACKED_FORMAT_VERSION,
    };
    let known = |v: u32| v == FORMAT_VERSION || v == PACKED_FORMAT_VERSION;
    let manifest: Manifest = match serde_json::from_slice(body) {
        Ok(m) => m,
        Err(e) => {
            return Err(match serde_json::from_slice::<Version>(body) {
                Ok(v) if !known(v.format_version) => unsupported(v.format_version),
                _ => ManifestDefect::Json(e),
            })
        }
    };
    if !known(manifest.format_version)
        || (manifest.format_version == FORMAT_VERSION && !manifest.streams.is_empty())
    {
        return Err(unsupported(manifest.format_version));
    }
    for s in &manifest.streams {
        let ids = std::iter::once(&s.root).chain(s.layers.iter().flatten());
        if validate_logical_path(&s.prefix).is_err() || ids.clone().any(|h| !is_hash_hex(h)) {
            return Err(ManifestDefect::InvalidEntry {
                path: s.prefix.clone(),
                defect: EntryDefect::BadHash(format!("stream '{}'", s.prefix)),
            });
        }
    }
    if &manifest.id != id {
        return Err(ManifestDefect::IdMismatch {
            found: manifest.id.clone(),
        });
    }
    validate_entries(&manifest.entries)
        .map_err(|(path, defect)| ManifestDefect::InvalidEntry { path, defect })?;
    Ok(manifest)
}

/// Paths seen so far in a backup being written, to refuse duplicates early.
#[derive(Debug, Default)]
pub(crate) struct SeenPaths(HashSet<String>);

impl SeenPaths {
    /// Records `path`; false if it was already there.
    pub(crate) fn insert(&mut self, path: &str) -> bool {
        self.0.insert(path.to_string())
    }

    pub(crate) fn contains(&self, path: &str) -> bool {
        self.0.contains(path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symlinks_leaving_the_tree_are_recognised() {
        assert!(!symlink_escapes("BACKUP/latest", "BACKUP-7"));
        assert!(!symlink_escapes("a/b/c", "../x"));
        assert!(!symlink_escapes("a/b/c", "../../x"));
        assert!(symlink_escapes("a/b/c", "../../../x"));
        assert!(symlink_escapes("a", "../a"));
        assert!(!symlink_escapes("a", "./b/../c"));
        assert!(symlink_escapes("a/b", "x/../../../y"));
        assert!(symlink_escapes("a", "/etc/shadow"));
        assert!(symlink_escapes("a", ""));
    }
}
