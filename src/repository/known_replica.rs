//! A HopsFS replica an earlier backup stored, made ready for a new backup's records away from
//! the writer: its paths checked, its names parsed and (format 3) its stream record encoded,
//! so a walk over millions of known replicas can run on other threads while the writer's own
//! thread only inserts ([`super::BackupWriter::add_known_replica`]).

use super::error::{EntryDefect, RepoError};
use super::spill::Spill;
use super::streams::{id_bytes, stream_of};
use super::tree::{self, Record, Replica};
use super::{validate_logical_path, FileEntry, FileMeta};
use crate::ids::BlobId;

/// See the module documentation.
#[derive(Debug)]
pub struct KnownReplica(pub(super) Known);

#[derive(Debug)]
pub(super) enum Known {
    /// Format 3, block and checksum file sharing one unit: one encoded stream record.
    Record {
        prefix: String,
        key: String,
        rec: Vec<u8>,
        block_path: String,
        /// Bytes of block and checksum file.
        logical: u64,
    },
    /// Two known files (earlier formats, or a replica stored as two files).
    Files(Box<KnownFiles>),
}

#[derive(Debug)]
pub(super) struct KnownFiles {
    pub block_path: String,
    pub block: FileEntry,
    pub block_meta: FileMeta,
    pub meta_path: String,
    pub meta: FileEntry,
    pub meta_meta: FileMeta,
}

/// The parts of a replica stored as one unit.
#[derive(Debug, Clone, Copy)]
pub struct UnitParts<'a> {
    pub unit: &'a BlobId,
    pub len: u64,
    pub meta_len: u64,
    pub block_meta: FileMeta,
    pub meta_meta: FileMeta,
}

fn valid_path(path: &str) -> Result<(), RepoError> {
    validate_logical_path(path).map_err(|d| RepoError::InvalidEntry {
        path: path.to_string(),
        defect: EntryDefect::Path(d),
    })
}

/// The one stream record of a replica stored as one unit; `None` when the paths are not a
/// replica's in one volume directory.
fn record(
    block_path: &str,
    meta_path: &str,
    parts: &UnitParts<'_>,
) -> Option<Result<Known, RepoError>> {
    let (dir, block_name) = tree::split(block_path);
    let (meta_dir, meta_name) = tree::split(meta_path);
    let (id, genstamp) = Replica::parse_names(block_name, meta_name).filter(|_| dir == meta_dir)?;
    let (prefix, key) = stream_of(block_path)?;
    // Paths checked without a lookup: the spill's insert refuses a second record under the
    // block's key (naming the path), and a unit's checksum file is never a record of its own.
    let checked = valid_path(block_path).and_then(|()| valid_path(meta_path));
    Some(checked.map(|()| {
        let record = Record::Replica(Replica {
            dir: tree::split(key).0.to_string(),
            id,
            genstamp,
            len: parts.len,
            meta_len: parts.meta_len,
            meta: parts.block_meta,
            meta_file: parts.meta_meta,
            unit: id_bytes(parts.unit),
        });
        let (key, rec) = Spill::encode(&record);
        Known::Record {
            prefix: prefix.to_string(),
            key,
            rec,
            block_path: block_path.to_string(),
            logical: parts.len + parts.meta_len,
        }
    }))
}

impl KnownReplica {
    /// A replica stored as one unit (block bytes, then checksum bytes) under `block_path` and
    /// `meta_path`. `streams`: the new backup keeps stream records (format 3); otherwise, or
    /// when the paths are not a replica's in one volume directory, two known files.
    pub fn unit(
        streams: bool,
        block_path: &str,
        meta_path: &str,
        parts: UnitParts<'_>,
    ) -> Result<KnownReplica, RepoError> {
        if streams {
            if let Some(known) = record(block_path, meta_path, &parts) {
                return known.map(KnownReplica);
            }
        }
        let entry = |path: &str, size: u64, meta: FileMeta, skip: u64| FileEntry {
            path: path.to_string(),
            size,
            meta,
            hash: String::new(),
            chunks: vec![],
            units: vec![parts.unit.clone()],
            skip,
        };
        Ok(KnownReplica(Known::Files(Box::new(KnownFiles {
            block_path: block_path.to_string(),
            block: entry(block_path, parts.len, parts.block_meta, 0),
            block_meta: parts.block_meta,
            meta_path: meta_path.to_string(),
            meta: entry(meta_path, parts.meta_len, parts.meta_meta, parts.len),
            meta_meta: parts.meta_meta,
        }))))
    }

    /// A replica whose block and checksum file an earlier backup lists as `block` and `meta`:
    /// one record when they share one unit and `streams`, else two known files.
    pub fn files(
        streams: bool,
        block_path: &str,
        block: FileEntry,
        block_meta: FileMeta,
        meta_path: &str,
        meta: FileEntry,
        meta_meta: FileMeta,
    ) -> Result<KnownReplica, RepoError> {
        let shared = block.is_packed()
            && meta.is_packed()
            && block.units.len() == 1
            && meta.units == block.units
            && block.skip == 0
            && meta.skip == block.size;
        if shared && streams {
            let parts = UnitParts {
                unit: &block.units[0],
                len: block.size,
                meta_len: meta.size,
                block_meta,
                meta_meta,
            };
            if let Some(known) = record(block_path, meta_path, &parts) {
                return known.map(KnownReplica);
            }
        }
        Ok(KnownReplica(Known::Files(Box::new(KnownFiles {
            block_path: block_path.to_string(),
            block,
            block_meta,
            meta_path: meta_path.to_string(),
            meta,
            meta_meta,
        }))))
    }
}
