//! HopsFS in cloud mode: the datanodes' volumes are a cache and the blocks live in a bucket
//! HopsFS writes (`hopsfs-blocks-set-<id / set size>/blk_<id>_<genstamp>.data` and `.meta`,
//! never overwritten: an append writes a new genstamp's key) and deletes. A backup of the
//! metadata alone is consistent only if the blocks it references still exist at restore: the
//! bucket must be versioned (refused otherwise, naming it), and at the RonDB consistency point
//! the backup records the version of every object current then (`hopsfs/cloud/versions.tsv`)
//! and checks every referenced block's `.data` and `.meta` among them (missing: the backup is
//! partial, naming the blocks). A restore copies each recorded version back over its key
//! before HopsFS starts. hopsdr's credentials for the bucket need not delete anything.

use chrono::{DateTime, Utc};

use crate::config::HopsfsCloudSettings;
use crate::repository::facts::HopsfsFacts;
use crate::repository::layout::HOPSFS_CLOUD_VERSIONS;
use crate::repository::{BackupWriter, FileMeta, ObjectVersion, S3Options, S3Storage, Versioning};

use super::coverage::Referenced;
use super::hopsfs::HopsfsError;

/// The object key of block `id` with `genstamp` (`ext`: `data` or `meta`).
pub fn block_key(set_size: u64, id: u64, genstamp: u64, ext: &str) -> String {
    match set_size {
        0 => format!("blk_{id}_{genstamp}.{ext}"),
        n => format!("hopsfs-blocks-set-{}/blk_{id}_{genstamp}.{ext}", id / n),
    }
}

/// The bucket as hopsdr reaches it.
pub fn open(c: &HopsfsCloudSettings) -> Result<S3Storage, HopsfsError> {
    let bad = |e: String| HopsfsError::Cloud(format!("the bucket {}: {e}", c.s3.bucket));
    let options = S3Options::from_settings(&c.s3).map_err(|e| bad(e.to_string()))?;
    S3Storage::new(&options).map_err(|e| bad(e.to_string()))
}

/// The bucket's objects current at `at`, sorted by key, after checking versioning is on.
pub fn current_versions(
    c: &HopsfsCloudSettings,
    at: DateTime<Utc>,
) -> Result<Vec<ObjectVersion>, HopsfsError> {
    let s3 = open(c)?;
    let bad = |e: crate::repository::StorageError| HopsfsError::Cloud(e.to_string());
    let v = s3
        .run_control("bucket versioning", s3.control().versioning())
        .map_err(bad)?;
    if v != Versioning::Enabled {
        return Err(HopsfsError::Cloud(format!(
            "the bucket {} is not versioned ({v:?}): HopsFS deletes a block's object when the block goes, so a backup of the metadata would reference objects gone by the restore; enable versioning on the bucket (with a lifecycle rule expiring noncurrent versions after your retention)",
            c.s3.bucket
        )));
    }
    let all = s3
        .run_control("list object versions", s3.control().versions(""))
        .map_err(bad)?;
    Ok(crate::repository::s3_current_at(&all, at)
        .into_values()
        .collect())
}

/// Records the versions current at `consistent_at` and checks the referenced blocks.
pub fn back_up(
    c: &HopsfsCloudSettings,
    consistent_at: DateTime<Utc>,
    referenced: Option<Referenced>,
    writer: &mut BackupWriter,
    facts: &mut HopsfsFacts,
) -> Result<Option<String>, HopsfsError> {
    let current = current_versions(c, consistent_at)?;
    let mut text = String::with_capacity(current.len() * 80);
    for v in &current {
        text.push_str(&format!("{}\t{}\t{}\n", v.key, v.version_id, v.size));
    }
    let meta = FileMeta {
        mode: 0o600,
        mtime: consistent_at.timestamp(),
        uid: 0,
        gid: 0,
    };
    writer
        .add_file(HOPSFS_CLOUD_VERSIONS, &mut text.as_bytes(), meta)
        .map_err(|e| HopsfsError::Cloud(format!("storing the versions: {e}")))?;
    facts.cloud_bucket = format!("{}/{}", c.s3.bucket, c.s3.prefix);
    facts.cloud_objects = current.len() as u64;
    let Some(mut refd) = referenced else {
        tracing::warn!(
            step = "hopsfs",
            "no [hopsfs] referenced_blocks source: the blocks' objects were not checked"
        );
        return Ok(None);
    };
    let keys: std::collections::HashSet<&str> = current.iter().map(|v| v.key.as_str()).collect();
    let mut missing = Vec::new();
    refd.for_each(|_, b| {
        let whole = ["data", "meta"]
            .iter()
            .all(|ext| keys.contains(block_key(c.set_size, b.id, b.genstamp, ext).as_str()));
        if !whole {
            missing.push(b.id);
        }
        Ok(())
    })?;
    facts.coverage_checked = true;
    facts.referenced_blocks = refd.len();
    facts.blocks = refd.len() - missing.len() as u64;
    missing.sort_unstable();
    let partial = (!missing.is_empty()).then(|| {
        let ids: Vec<String> = missing.iter().take(20).map(u64::to_string).collect();
        format!(
            "partial: {} of {} blocks the metadata references have no object in the bucket {} (block ids {}{})",
            missing.len(),
            refd.len(),
            c.s3.bucket,
            ids.join(", "),
            if missing.len() > 20 { ", ..." } else { "" }
        )
    });
    facts.missing_blocks = missing;
    Ok(partial)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_keys_follow_hopsfs_cloud_layout() {
        assert_eq!(
            block_key(500, 1073741825, 1001, "data"),
            "hopsfs-blocks-set-2147483/blk_1073741825_1001.data"
        );
        assert_eq!(
            block_key(500, 499, 7, "meta"),
            "hopsfs-blocks-set-0/blk_499_7.meta"
        );
        assert_eq!(block_key(0, 12, 3, "data"), "blk_12_3.data");
    }
}
