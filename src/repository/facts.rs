//! The facts a backup records about itself in its manifest, under `info.extra`: what each
//! component found (RonDB backup id, nodes and tables; HopsFS fence and coverage; users and SQL
//! objects dumped), the backup's sizes, and why it is partial. The catalog can be rebuilt from
//! them and a restore is planned from them.
//!
//! Every fact is optional (a backup records only the components it ran) and unknown keys are
//! ignored, so a manifest written by an older or a newer hopsdr reads. The JSON names are part
//! of the repository format (see the module documentation of [`crate::repository`]).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::ids::NdbNodeId;

/// `info.extra`: every fact a backup records.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ManifestFacts {
    /// How many damaged blobs the backup wrote again (verify had found them damaged).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub healed_blobs: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hopsfs: Option<HopsfsFacts>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub opensearch: Option<OpensearchFacts>,
    /// Why the backup is partial (blocks the metadata references were not captured).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partial: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rondb: Option<RondbFacts>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stats: Option<StoredStats>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub users: Option<UsersFacts>,
}

impl ManifestFacts {
    /// Whether the backup copied HopsFS blocks without checking them against the blocks its
    /// RonDB metadata references.
    pub fn hopsfs_unchecked(&self) -> bool {
        self.hopsfs
            .as_ref()
            .is_some_and(HopsfsFacts::coverage_unchecked)
    }
}

/// `info.extra.opensearch`: the OpenSearch snapshot the backup holds (its repository's files
/// are stored under `opensearch/`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct OpensearchFacts {
    /// The snapshot repository's name and the snapshot's name and uuid.
    pub repository: String,
    pub snapshot: String,
    pub uuid: String,
    /// `SUCCESS` or `PARTIAL`.
    pub state: String,
    pub indices: Vec<String>,
    pub shards_total: u64,
    pub shards_failed: u64,
    /// When the snapshot was started: seconds after the RonDB consistency point.
    pub started_after_consistency_seconds: f64,
}

/// `info.extra.stats`: the sizes the catalog lists for the backup.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredStats {
    pub logical_bytes: u64,
    pub stored_bytes: u64,
    pub files: u64,
}

/// `info.extra.users`: what the users and grants component dumped.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct UsersFacts {
    pub accounts: u64,
    pub roles: u64,
    pub views: u64,
    pub routines: u64,
    pub triggers: u64,
    pub events: u64,
}

/// `info.extra.rondb`: the RonDB backup (also recorded in the catalog).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RondbFacts {
    pub backup_id: u32,
    pub start_gcp: u64,
    pub stop_gcp: u64,
    pub records: u64,
    pub log_records: u64,
    /// When START BACKUP returned: the consistency point (SNAPSHOTEND).
    pub consistent_at: DateTime<Utc>,
    pub nodes: Vec<NdbNodeId>,
    pub version: Option<String>,
    pub files: u64,
    pub bytes: u64,
    /// The user tables (`database.table`, from `ndb_show_tables`) when the backup was taken;
    /// `None` if they could not be listed. A restore resumed inside its metadata step uses
    /// them to tell a finished `ndb_restore -m` from an interrupted one.
    #[serde(default)]
    pub tables: Option<Vec<String>>,
    /// Encrypted by RonDB (`[rondb] backup_password`): ndb_restore needs `--decrypt` and the
    /// password.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub encrypted: bool,
}

impl RondbFacts {
    /// The facts of RonDB backup `backup_id` for tests (two data nodes, no tables listed).
    #[cfg(test)]
    pub(crate) fn for_tests(backup_id: u32) -> RondbFacts {
        RondbFacts {
            backup_id,
            start_gcp: 1,
            stop_gcp: 2,
            records: 0,
            log_records: 0,
            consistent_at: chrono::Utc::now(),
            nodes: vec![NdbNodeId(1), NdbNodeId(2)],
            version: None,
            files: 0,
            bytes: 0,
            tables: None,
            encrypted: false,
        }
    }
}

/// `info.extra.hopsfs`: the HopsFS part.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct HopsfsFacts {
    /// `local` (blocks on the datanodes, copied) or `cloud` (blocks in object storage).
    pub block_storage: String,
    pub fence_window_seconds: f64,
    pub blocks: u64,
    pub blocks_new: u64,
    pub bytes_new: u64,
    /// Of the new replicas, those recorded with the unit another datanode's replica of the same
    /// block was stored as (one replica per block is read), and their block bytes.
    #[serde(skip_serializing_if = "is_zero")]
    pub replicas_shared: u64,
    #[serde(skip_serializing_if = "is_zero")]
    pub bytes_shared: u64,
    /// Whether the captured blocks were checked against those the RonDB metadata references.
    pub coverage_checked: bool,
    pub referenced_blocks: u64,
    pub missing_blocks: Vec<u64>,
    pub rbw_replicas: Vec<String>,
    /// `<datanode>/vol<i>` → the volume's path.
    pub volumes: Vec<(String, String)>,
    /// Cloud mode: the bucket (and prefix) the blocks live in, and how many object versions the
    /// backup recorded (`hopsfs/cloud/versions.tsv`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub cloud_bucket: String,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub cloud_objects: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl HopsfsFacts {
    /// Whether blocks were copied without checking them against the blocks the RonDB metadata
    /// references (no `[hopsfs] referenced_blocks` source when the backup was taken).
    pub fn coverage_unchecked(&self) -> bool {
        !self.volumes.is_empty() && !self.coverage_checked
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A manifest's `extra` written before the facts were typed (an untyped map: keys sorted,
    /// `tables` absent) reads, and what is read writes back the same JSON value.
    #[test]
    fn facts_of_an_older_manifest_read_and_round_trip() {
        let old = serde_json::json!({
            "healed_blobs": 2,
            "hopsfs": {
                "block_storage": "local", "blocks": 3, "blocks_new": 1, "bytes_new": 42,
                "coverage_checked": true, "fence_window_seconds": 0.25,
                "missing_blocks": [], "rbw_replicas": ["dn1/vol1/blk_9"],
                "referenced_blocks": 3, "volumes": [["dn1/vol1", "/srv/hopsfs/dn1"]]
            },
            "rondb": {
                "backup_id": 218144136, "bytes": 1000, "consistent_at": "2026-11-25T21:00:00Z",
                "files": 6, "log_records": 0, "nodes": [1, 2], "records": 10,
                "start_gcp": 5, "stop_gcp": 7, "version": "22.10.1"
            },
            "stats": {"files": 3, "logical_bytes": 100, "stored_bytes": 40},
            "users": {"accounts": 4, "events": 0, "roles": 1, "routines": 2, "triggers": 0,
                      "views": 1},
            "some_future_fact": {"x": 1}
        });
        let f: ManifestFacts = serde_json::from_value(old.clone()).unwrap();
        let r = f.rondb.as_ref().unwrap();
        assert_eq!(r.backup_id, 218144136);
        assert_eq!(r.nodes, [NdbNodeId(1), NdbNodeId(2)]);
        assert_eq!(r.tables, None);
        assert_eq!(f.users.unwrap().accounts, 4);
        assert_eq!(f.stats.unwrap().stored_bytes, 40);
        assert!(!f.hopsfs.as_ref().unwrap().coverage_unchecked());
        let mut expected = old;
        expected.as_object_mut().unwrap().remove("some_future_fact");
        expected["rondb"]["tables"] = serde_json::Value::Null;
        assert_eq!(serde_json::to_value(&f).unwrap(), expected);

        // A backup that ran no component records nothing.
        let empty: ManifestFacts = serde_json::from_str("{}").unwrap();
        assert_eq!(empty, ManifestFacts::default());
        assert_eq!(serde_json::to_string(&empty).unwrap(), "{}");
    }
}
