//! Blobs a verification found damaged or missing: written again by the next backup that has
//! their content, forgotten once it has.

use super::*;
use crate::ids::BlobId;
use crate::repository::{blob_key, blob_of_key};

impl Catalog {
    /// Records blobs found damaged or missing (by verifying `backup`): the next backups write
    /// them again when they have their content, and none takes them as stored.
    pub fn add_bad_blobs(
        &mut self,
        blobs: &[(BlobId, String)],
        backup: &BackupId,
        now: DateTime<Utc>,
    ) -> Result<(), CatalogError> {
        let path = self.path.clone();
        let err = |source| CatalogError::Query {
            path: path.clone(),
            what: "record damaged blobs",
            source,
        };
        let tx = self.conn.transaction().map_err(err)?;
        for (blob, reason) in blobs {
            let key = blob_key(blob);
            tx.execute(
                "INSERT INTO bad_blobs (key, found_at, backup_id, reason) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT(key) DO UPDATE SET found_at=?2, backup_id=?3, reason=?4",
                params![key, ts(now), backup.as_str(), reason],
            )
            .map_err(err)?;
        }
        tx.commit().map_err(err)
    }

    /// The blobs known damaged or missing.
    pub fn bad_blobs(&self) -> Result<std::collections::HashSet<BlobId>, CatalogError> {
        let mut st = self
            .conn
            .prepare("SELECT key FROM bad_blobs")
            .map_err(self.q("read damaged blobs"))?;
        let rows = st
            .query_map([], |r| r.get::<_, String>(0))
            .map_err(self.q("read damaged blobs"))?;
        let keys: Vec<String> = rows
            .collect::<Result<_, _>>()
            .map_err(self.q("read damaged blobs"))?;
        // Stored by key (the repository's name for a blob): a key that names no blob is no
        // blob of ours, so there is nothing to write again for it.
        Ok(keys.iter().filter_map(|k| blob_of_key(k)).collect())
    }

    /// Forgets blobs a committed backup wrote again.
    pub fn remove_bad_blobs(&mut self, blobs: &[BlobId]) -> Result<(), CatalogError> {
        let path = self.path.clone();
        let err = |source| CatalogError::Query {
            path: path.clone(),
            what: "forget healed blobs",
            source,
        };
        let tx = self.conn.transaction().map_err(err)?;
        for b in blobs {
            tx.execute("DELETE FROM bad_blobs WHERE key=?1", params![blob_key(b)])
                .map_err(err)?;
        }
        tx.commit().map_err(err)
    }
}
