//! HopsFS in cloud mode, as far as the bucket goes: the blocks of the metadata as objects
//! `hopsfs-blocks-set-<id / 500>/blk_<id>_<genstamp>.data` (the block's bytes) and `.meta`
//! (its checksums), written once and never overwritten; a block gone from the metadata (a
//! deleted file, an append's old genstamp) has its objects deleted, as the namenode's cloud
//! block reports do. `cloud sync` brings the bucket to the metadata's state; `cloud check`
//! says how many blocks of the metadata have their objects with the right bytes.

use anyhow::{Context, Result};
use futures::TryStreamExt;
use object_store::{path::Path as ObjPath, ObjectStore, ObjectStoreExt, PutPayload};
use std::collections::BTreeSet;
use std::path::Path;

use crate::model::{block_content, hdfs_meta, meta_content};
use crate::state::Cluster;

/// How the test-bed's HopsFS reaches its bucket.
pub struct Bucket {
    pub endpoint: String,
    pub bucket: String,
    pub access_key: String,
    pub secret_file: std::path::PathBuf,
    pub set_size: u64,
}

fn key(set: u64, id: u64, gs: u64, ext: &str) -> String {
    match id.checked_div(set) {
        None => format!("blk_{id}_{gs}.{ext}"),
        Some(s) => format!("hopsfs-blocks-set-{s}/blk_{id}_{gs}.{ext}"),
    }
}

fn store(b: &Bucket) -> Result<impl ObjectStore> {
    let secret = std::fs::read_to_string(&b.secret_file)
        .with_context(|| b.secret_file.display().to_string())?;
    Ok(object_store::aws::AmazonS3Builder::new()
        .with_endpoint(&b.endpoint)
        .with_bucket_name(&b.bucket)
        .with_region("us-east-1")
        .with_access_key_id(&b.access_key)
        .with_secret_access_key(secret.lines().next().unwrap_or_default())
        .with_allow_http(true)
        .with_virtual_hosted_style_request(false)
        .build()?)
}

fn rt() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}

/// The keys the metadata's blocks need, with their content.
fn wanted(dir: &Path, set: u64) -> Result<Vec<(String, Vec<u8>)>> {
    let cl = Cluster::open(dir)?;
    let db = cl.db()?;
    let Some(meta) = hdfs_meta(&db)? else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for b in &meta.blocks {
        let data = block_content(cl.cfg.seed, b.id, b.genstamp, b.len);
        out.push((key(set, b.id, b.genstamp, "meta"), meta_content(&data)));
        out.push((key(set, b.id, b.genstamp, "data"), data));
    }
    Ok(out)
}

/// Puts the objects the metadata's blocks lack, deletes those of blocks it no longer has.
pub fn sync(dir: &Path, b: &Bucket) -> Result<(usize, usize)> {
    let want = wanted(dir, b.set_size)?;
    let s = store(b)?;
    rt()?.block_on(async {
        let present: BTreeSet<String> = s
            .list(None)
            .map_ok(|o| o.location.to_string())
            .try_collect()
            .await?;
        let names: BTreeSet<&str> = want.iter().map(|(k, _)| k.as_str()).collect();
        let mut put = 0;
        for (k, body) in &want {
            if !present.contains(k) {
                s.put(&ObjPath::from(k.as_str()), PutPayload::from(body.clone()))
                    .await?;
                put += 1;
            }
        }
        let mut deleted = 0;
        for k in present.iter().filter(|k| !names.contains(k.as_str())) {
            s.delete(&ObjPath::from(k.as_str())).await?;
            deleted += 1;
        }
        Ok::<_, anyhow::Error>((put, deleted))
    })
}

/// How many of the metadata's blocks have both objects with the right bytes, of how many.
pub fn check(dir: &Path, b: &Bucket) -> Result<(usize, usize)> {
    let want = wanted(dir, b.set_size)?;
    let s = store(b)?;
    rt()?.block_on(async {
        let mut good = 0;
        for (k, body) in &want {
            if let Ok(r) = s.get(&ObjPath::from(k.as_str())).await {
                if r.bytes().await? == body.as_slice() {
                    good += 1;
                }
            }
        }
        Ok::<_, anyhow::Error>((good / 2, want.len() / 2))
    })
}
