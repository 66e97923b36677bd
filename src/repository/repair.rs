//! Rebuilding a format 3 repository's index from its packs (`hopsdrctl repo repair-index`):
//! every pack's footer and trailer read (two ranged reads each), and a new index generation
//! written whose last object supersedes every index object there was — damaged ones included,
//! so a lost or garbled index object never costs a backup. A pack whose trailer cannot be read
//! is named with the reason and left out (never guessed); the blobs in it are then missing,
//! which `repo check` and verify report.

use chrono::Utc;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use super::error::RepoError;
use super::index::{self, IndexObject, Location};
use super::packer::{locations_of, pack_of_key, read_trailer};
use super::Repository;

/// What rebuilding the index found and wrote.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RepairReport {
    pub packs: u64,
    pub blobs: u64,
    pub index_objects_written: u64,
    /// Index objects the new generation replaces (deleted unless locked).
    pub index_objects_replaced: u64,
    /// Packs left out, each with its key and why (offset included).
    pub damaged_packs: Vec<String>,
}

impl Repository {
    /// See the module documentation. Runs in the job slot: nothing else writes meanwhile.
    pub fn repair_index(&self, cancel: &CancellationToken) -> Result<RepairReport, RepoError> {
        let storage = self.inner.storage.clone();
        let keys = self.keyring();
        let mut report = RepairReport::default();
        let old: Vec<String> = storage
            .list(index::PREFIX)?
            .into_iter()
            .map(|o| o.key)
            .filter(|k| index::hash_of_key(k).is_some())
            .collect();
        let mut seq = self.with_cache(|c| c.max_seq())?.max(old.len() as u64) + 1;
        let mut shard: Vec<([u8; 32], Location)> = Vec::new();
        let mut write = |locs: Vec<([u8; 32], Location)>,
                         supersedes: Vec<[u8; 32]>,
                         report: &mut RepairReport|
         -> Result<(), RepoError> {
            let obj = IndexObject::build(seq, Utc::now().timestamp(), supersedes, locs);
            seq += 1;
            let (key, stored) = self.encode_index(&obj)?;
            storage.put(&key, &stored)?;
            report.index_objects_written += 1;
            Ok(())
        };
        for o in storage.list("packs/")? {
            if cancel.is_cancelled() {
                return Err(RepoError::Cancelled);
            }
            let Some(pack) = pack_of_key(&o.key) else {
                continue;
            };
            let trailer = match read_trailer(storage.as_ref(), &o.key, o.size, keys.as_deref()) {
                Ok(t) => t,
                Err(reason) => {
                    report.damaged_packs.push(format!("{}: {reason}", o.key));
                    continue;
                }
            };
            report.packs += 1;
            let found = locations_of(pack, o.size, &trailer);
            report.blobs += found.len() as u64;
            shard.extend(found);
            if shard.len() >= index::MAX_ENTRIES / 2 {
                write(std::mem::take(&mut shard), vec![], &mut report)?;
            }
        }
        // The last object replaces every earlier one.
        let supersedes: Vec<[u8; 32]> = old.iter().filter_map(|k| index::hash_of_key(k)).collect();
        write(shard, supersedes, &mut report)?;
        crate::failpoint::hit("repair.index_written", cancel);
        report.index_objects_replaced = old.len() as u64;
        let lock = storage.lock_policy();
        for key in &old {
            if lock.is_some() && storage.locked_until(key)?.is_some_and(|u| u > Utc::now()) {
                continue;
            }
            match storage.delete(key) {
                Ok(()) => {}
                Err(e) if e.is_not_found() => {}
                Err(e) => return Err(e.into()),
            }
        }
        storage.invalidate();
        Ok(report)
    }
}
