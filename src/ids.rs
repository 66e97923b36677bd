//! Typed identifiers shared across modules: backups, jobs and blobs are never bare strings or
//! integers once they leave the module that made them.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A hopsdr backup id: `YYYYMMDDTHHMMSSZ` of the backup's start in UTC, optionally followed by
/// `-N` when two backups start in the same second. Sorting ids as strings sorts them by time.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct BackupId(String);

impl BackupId {
    /// The id of a backup started at `at`, with `seq` > 0 to tell apart backups started in the
    /// same second.
    pub fn at(at: chrono::DateTime<chrono::Utc>, seq: u32) -> Self {
        let base = at.format("%Y%m%dT%H%M%SZ").to_string();
        if seq == 0 {
            BackupId(base)
        } else {
            BackupId(format!("{base}-{seq}"))
        }
    }

    /// Parses an id given by a user or read from a repository key; `None` if it is not one.
    pub fn parse(s: &str) -> Option<Self> {
        let (base, seq) = match s.split_once('-') {
            Some((b, n)) => (b, Some(n)),
            None => (s, None),
        };
        let ok_base = base.len() == 16
            && base.as_bytes()[8] == b'T'
            && base.as_bytes()[15] == b'Z'
            && base[..8].bytes().all(|c| c.is_ascii_digit())
            && base[9..15].bytes().all(|c| c.is_ascii_digit());
        let ok_seq = match seq {
            None => true,
            Some(n) => !n.is_empty() && n.len() <= 6 && n.bytes().all(|c| c.is_ascii_digit()),
        };
        (ok_base && ok_seq).then(|| BackupId(s.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for BackupId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A job's id in the catalog (backup, restore, verify, prune).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct JobId(pub i64);

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A restore's id in the catalog.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct RestoreId(pub i64);

impl fmt::Display for RestoreId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A blob's name in a repository: the lower-case hex BLAKE3 hash of the chunk it holds (64
/// characters). Where it is stored is the repository's business (`repository::blob_key`).
///
/// Deserializing takes any string, so that a manifest naming a bad blob is refused by the
/// manifest's validation with the file it belongs to (`is_well_formed`); every other way of
/// making one checks it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct BlobId(String);

impl BlobId {
    /// The id of the chunk whose content hashes to `hash`.
    pub fn of(hash: &blake3::Hash) -> Self {
        BlobId(hash.to_hex().to_string())
    }

    /// Parses an id read from a manifest, a key or the catalog; `None` if it is not one.
    pub fn parse(s: &str) -> Option<Self> {
        (s.len() == 64 && s.bytes().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f')))
            .then(|| BlobId(s.to_string()))
    }

    /// Whether it is 64 lower-case hex digits (one read from a manifest is checked with it).
    pub fn is_well_formed(&self) -> bool {
        Self::parse(&self.0).is_some()
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Any string, unchecked: for tests that craft bad manifests.
    #[cfg(test)]
    pub(crate) fn unchecked(s: &str) -> Self {
        BlobId(s.to_string())
    }
}

impl fmt::Display for BlobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A RonDB node id (a data node, management server or API slot), as `ndb_mgm` shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct NdbNodeId(pub u32);

impl fmt::Display for NdbNodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl std::str::FromStr for NdbNodeId {
    type Err = std::num::ParseIntError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        s.parse().map(NdbNodeId)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn backup_id_round_trips_and_sorts() {
        let t = chrono::Utc
            .with_ymd_and_hms(2026, 11, 25, 21, 7, 33)
            .unwrap();
        let a = BackupId::at(t, 0);
        assert_eq!(a.as_str(), "20261125T210733Z");
        assert_eq!(BackupId::parse(a.as_str()), Some(a.clone()));
        let b = BackupId::at(t, 1);
        assert_eq!(b.as_str(), "20261125T210733Z-1");
        assert!(a < b);
        assert_eq!(BackupId::parse("../etc"), None);
        assert_eq!(BackupId::parse("20261125T210733Z-"), None);
        assert_eq!(BackupId::parse("20261125X210733Z"), None);
    }

    #[test]
    fn blob_ids_are_64_lower_case_hex_digits() {
        let id = BlobId::of(&blake3::hash(b"chunk"));
        assert_eq!(BlobId::parse(id.as_str()), Some(id.clone()));
        let json = serde_json::to_string(&id).unwrap();
        assert_eq!(json, format!("\"{id}\""));
        assert_eq!(serde_json::from_str::<BlobId>(&json).unwrap(), id);
        assert_eq!(BlobId::parse(&id.as_str().to_uppercase()), None);
        assert_eq!(BlobId::parse(&id.as_str()[1..]), None);
        let read: BlobId = serde_json::from_str("\"../x\"").unwrap();
        assert!(!read.is_well_formed());
        assert!(id.is_well_formed());
    }
}
