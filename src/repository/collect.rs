//! Garbage collection and `repo check` of a format 3 repository, in bounded memory: what the
//! committed backups reference is marked into an on-disk set (a temporary table of the index
//! cache's database), then joined with the index per pack.
//!
//! Collection: every kept backup's manifest and metadata pages are read first — one that
//! cannot be read, or a referenced blob the index does not locate, stops it before anything is
//! deleted. Packs with nothing live (and packs no index object names: left by an interrupted
//! backup) are deleted after a new index generation without them is written; the new
//! generation's last object supersedes every older index object, which is deleted last. Each
//! prefix of that sequence leaves a readable repository, and the next collection finishes the
//! work. Dead blobs inside packs that still hold live ones stay until their pack dies (they
//! are only dropped from the index).

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;

use super::error::RepoError;
use super::index::{self, IndexObject, Location};
use super::packer::{pack_key, pack_of_key, Packer};
use super::streams::id_bytes;
use super::{blob_key, manifest_key, tree, CheckReport, Entry, GcReport, Repository};
use crate::ids::BackupId;

const MARK_BATCH: usize = 10_000;
/// A collection repacks at most a tenth of the stored packs, and at least this much.
const REPACK_MIN_BUDGET: u64 = 256 << 20;

/// Entries per index object of a new generation (half the most an object may hold); a handful
/// in unit tests, so that their collections write generations of several objects.
#[cfg(not(test))]
const GENERATION_SHARD: usize = index::MAX_ENTRIES / 2;
#[cfg(test)]
pub(super) const GENERATION_SHARD: usize = 5;

impl Repository {
    /// Marks what every committed backup references; returns the backups and the keys of the
    /// format 1/2 chunks they reference. `problems`: collect problems and go on (check)
    /// instead of failing (collection).
    fn mark_live(
        &self,
        cancel: &CancellationToken,
        mut problems: Option<&mut Vec<String>>,
    ) -> Result<(Vec<BackupId>, HashSet<String>), RepoError> {
        self.with_cache(|c| c.begin_mark())?;
        let ids = self.list_backups()?;
        let mut legacy = HashSet::new();
        let mut batch: Vec<[u8; 32]> = Vec::with_capacity(MARK_BATCH);
        let flush = |batch: &mut Vec<[u8; 32]>| -> Result<(), RepoError> {
            let b = std::mem::take(batch);
            self.with_cache(|c| c.mark(&b))?;
            Ok(())
        };
        for id in &ids {
            if cancel.is_cancelled() {
                return Err(RepoError::Cancelled);
            }
            let m = match self.read_manifest(id) {
                Ok(m) => m,
                Err(e) => match problems.as_deref_mut() {
                    Some(p) => {
                        p.push(format!("backup {id}: {e}"));
                        continue;
                    }
                    None => return Err(e),
                },
            };
            for s in &m.streams {
                let root = id_bytes_hex(&s.root);
                batch.push(root);
                match self.read_meta(&root, &format!("root of stream '{}'", s.prefix)) {
                    Ok(plain) => match tree::decode_root(&plain) {
                        Ok(pages) => batch.extend(pages.into_iter().map(|(_, p)| p)),
                        Err(e) => {
                            let e = RepoError::CorruptTree {
                                backup: id.clone(),
                                id: s.root.clone(),
                                what: format!("root of stream '{}'", s.prefix),
                                reason: e.to_string(),
                            };
                            match problems.as_deref_mut() {
                                Some(p) => p.push(format!("backup {id}: {e}")),
                                None => return Err(e),
                            }
                        }
                    },
                    Err(e) => match problems.as_deref_mut() {
                        Some(p) => p.push(format!("backup {id}: {e}")),
                        None => return Err(e),
                    },
                }
                batch.extend(s.layers.iter().flatten().map(|h| id_bytes_hex(h)));
            }
            for e in self.all_entries(&m) {
                let e = match e {
                    Ok(e) => e,
                    Err(e) => match problems.as_deref_mut() {
                        Some(p) => {
                            p.push(format!("backup {id}: {e}"));
                            break;
                        }
                        None => return Err(e),
                    },
                };
                let Entry::File(f) = e else { continue };
                if f.is_packed() {
                    batch.extend(f.units.iter().map(id_bytes));
                } else {
                    legacy.extend(f.chunks.iter().map(blob_key));
                }
                if batch.len() >= MARK_BATCH {
                    flush(&mut batch)?;
                }
            }
            flush(&mut batch)?;
        }
        Ok((ids, legacy))
    }

    /// See the module documentation.
    pub(crate) fn gc_packed(&self, cancel: &CancellationToken) -> Result<GcReport, RepoError> {
        self.sync_index()?;
        let (ids, legacy) = self.mark_live(cancel, None)?;
        // A referenced blob the index does not locate: its pack may be one this collection
        // would take for an orphan. Nothing is deleted.
        if let Some(id) = self.with_cache(|c| c.unindexed_live())? {
            return Err(RepoError::NotIndexed {
                id: crate::ids::BlobId::of(&blake3::Hash::from_bytes(id)),
                path: "(referenced by a kept backup)".into(),
            });
        }
        let mut report = GcReport {
            manifests: ids.len() as u64,
            ..Default::default()
        };
        crate::failpoint::hit("gc.referenced_read", cancel);
        let storage = self.inner.storage.as_ref();
        let lock = storage.lock_policy();
        let now = super::collector_now();
        let liveness = self.with_cache(|c| c.pack_liveness())?;
        let listed: HashMap<[u8; 16], (u64, Option<DateTime<Utc>>)> = storage
            .list("packs/")?
            .into_iter()
            .filter_map(|o| Some((pack_of_key(&o.key)?, (o.size, o.last_modified))))
            .collect();
        let indexed: HashSet<[u8; 16]> = liveness.iter().map(|l| l.pack).collect();
        let mut dead: HashSet<[u8; 16]> = liveness
            .iter()
            .filter(|l| l.live == 0)
            .map(|l| l.pack)
            .collect();
        dead.extend(listed.keys().filter(|p| !indexed.contains(*p)));
        report.blobs_kept = liveness.iter().map(|l| l.live).sum();
        report.blobs_deleted = liveness.iter().map(|l| l.dead).sum();
        let current = self.with_cache(|c| c.objects())?;
        if let Some((_, days)) = lock {
            // Object Lock: what the kept backups need stays locked.
            let period = chrono::Duration::days(days as i64);
            let manifests = storage.list(super::MANIFESTS_PREFIX)?;
            let written: HashMap<String, DateTime<Utc>> = manifests
                .into_iter()
                .filter_map(|o| Some((o.key, o.last_modified?)))
                .collect();
            let keys = ids
                .iter()
                .map(manifest_key)
                .chain(current.iter().cloned())
                .chain(
                    liveness
                        .iter()
                        .filter(|l| l.live > 0)
                        .map(|l| pack_key(&l.pack)),
                );
            let when = |key: &str| {
                written
                    .get(key)
                    .copied()
                    .or_else(|| pack_of_key(key).and_then(|p| listed.get(&p).and_then(|(_, t)| *t)))
            };
            super::extend_locks(storage, keys, when, now, period, &mut report, cancel)?;
        }
        // Packs mostly dead: their live blobs copied (as stored: no re-encryption) into new
        // packs, indexed, before the old packs go with the others.
        let total: u64 = liveness.iter().map(|l| l.end).sum();
        let budget = (total / 10).max(REPACK_MIN_BUDGET);
        let mut candidates: Vec<_> = liveness
            .iter()
            // Under Object Lock a copy would only double what is stored until the old
            // pack's retention ends: not repacked.
            .filter(|l| lock.is_none() && !l.solo && l.live > 0 && l.dead_bytes * 2 >= l.end.max(1))
            .collect();
        candidates.sort_by_key(|l| std::cmp::Reverse(l.dead_bytes));
        let mut packer: Option<Packer> = None;
        let mut spent = 0u64;
        for l in candidates {
            if spent + l.end > budget {
                break;
            }
            if cancel.is_cancelled() {
                return Err(RepoError::Cancelled);
            }
            if packer.is_none() {
                packer = Some(Packer::new(self.clone())?);
            }
            let p = packer.as_mut().expect("made");
            let key = pack_key(&l.pack);
            let bytes = storage.get(&key)?;
            for (id, loc) in self.with_cache(|c| c.live_in_pack(&l.pack))? {
                let range = loc.offset as usize..(loc.offset as usize + loc.stored_len as usize);
                let stored = bytes.get(range).unwrap_or_default();
                // A damaged blob is not copied as if it were sound: the collection stops,
                // nothing deleted (verify names the damage).
                self.open_stored(
                    &id,
                    &loc,
                    stored,
                    "(repacked)",
                    super::MAX_CHUNK_SIZE as usize,
                )?;
                p.add(loc.kind, id, stored, loc.raw_len)?;
            }
            spent += l.end;
            report.bytes_repacked += l.end;
            report.packs_repacked += 1;
            dead.insert(l.pack);
        }
        if let Some(mut p) = packer {
            // New packs durable and indexed before anything is deleted.
            p.finish()?;
            crate::failpoint::hit("gc.repacked", cancel);
        }
        let rewrite = !dead.is_empty() || report.blobs_deleted > 0;
        if rewrite {
            self.write_generation(&dead, &current)?;
            crate::failpoint::hit("gc.index_generation", cancel);
        }
        for pack in &dead {
            if cancel.is_cancelled() {
                return Err(RepoError::Cancelled);
            }
            let key = pack_key(pack);
            if lock.is_some() && storage.locked_until(&key)?.is_some_and(|u| u > now) {
                report.blobs_locked += 1;
                continue;
            }
            match storage.delete(&key) {
                Ok(()) => {
                    report.packs_deleted += 1;
                    report.bytes_freed += listed.get(pack).map_or(0, |(s, _)| *s);
                    if report.packs_deleted == 1 {
                        crate::failpoint::hit("gc.deleted_one", cancel);
                    }
                }
                Err(e) if e.is_not_found() => {}
                Err(e) => return Err(e.into()),
            }
        }
        // The index objects the new generation replaced, and any an interrupted collection
        // left behind.
        let mut old: Vec<String> = if rewrite { current.clone() } else { Vec::new() };
        old.extend(self.with_cache(|c| c.superseded_keys())?);
        old.sort();
        old.dedup();
        for key in &old {
            if lock.is_some() && storage.locked_until(key)?.is_some_and(|u| u > now) {
                continue;
            }
            match storage.delete(key) {
                Ok(()) => {}
                Err(e) if e.is_not_found() => {}
                Err(e) => return Err(e.into()),
            }
        }
        // Format 1/2 chunks no backup references.
        for o in storage.list(super::BLOBS_PREFIX)? {
            if legacy.contains(&o.key) {
                continue;
            }
            if lock.is_some() && storage.locked_until(&o.key)?.is_some_and(|u| u > now) {
                report.blobs_locked += 1;
                continue;
            }
            storage.delete(&o.key)?;
            report.blobs_deleted += 1;
            report.bytes_freed += o.size;
        }
        storage.invalidate();
        Ok(report)
    }

    /// Writes a new index generation: every live location outside `dropped`, in objects of at
    /// most `index::MAX_ENTRIES`; the last supersedes every object in `current`.
    fn write_generation(
        &self,
        dropped: &HashSet<[u8; 16]>,
        current: &[String],
    ) -> Result<(), RepoError> {
        let first_seq = self.with_cache(|c| c.max_seq())? + 1;
        let supersedes: Vec<[u8; 32]> = current
            .iter()
            .filter_map(|k| index::hash_of_key(k))
            .collect();
        // The live locations are spooled to a temporary file (61 bytes each) and read back one
        // object's worth at a time: memory holds one object, whatever the repository's size.
        const REC: usize = 32 + 16 + 1 + 4 + 4 + 4;
        let dir = self.scratch_dir()?;
        let spool_err = |e: std::io::Error| {
            RepoError::Spill(format!(
                "the new index generation in {}: {e}",
                dir.display()
            ))
        };
        let mut spool = std::io::BufWriter::new(tempfile::tempfile_in(&dir).map_err(spool_err)?);
        let mut total = 0usize;
        let mut failed = None;
        self.with_cache(|c| {
            c.each_live(dropped, |id, loc| {
                let mut rec = [0u8; REC];
                rec[..32].copy_from_slice(&id);
                rec[32..48].copy_from_slice(&loc.pack);
                rec[48] = loc.kind.code();
                rec[49..53].copy_from_slice(&loc.offset.to_le_bytes());
                rec[53..57].copy_from_slice(&loc.stored_len.to_le_bytes());
                rec[57..61].copy_from_slice(&loc.raw_len.to_le_bytes());
                if failed.is_none() {
                    if let Err(e) = std::io::Write::write_all(&mut spool, &rec) {
                        failed = Some(e);
                    }
                }
                total += 1;
                Ok(())
            })
        })?;
        if let Some(e) = failed {
            return Err(spool_err(e));
        }
        let mut file = spool.into_inner().map_err(|e| spool_err(e.into_error()))?;
        std::io::Seek::rewind(&mut file).map_err(spool_err)?;
        let mut r = std::io::BufReader::with_capacity(1 << 20, file);
        let per = GENERATION_SHARD;
        let n = total.div_ceil(per).max(1);
        for i in 0..n {
            let count = per.min(total - i * per);
            let mut locs = Vec::with_capacity(count);
            let mut rec = [0u8; REC];
            for _ in 0..count {
                std::io::Read::read_exact(&mut r, &mut rec).map_err(spool_err)?;
                let u32_at = |k: usize| u32::from_le_bytes(rec[k..k + 4].try_into().expect("4"));
                let kind = index::EntryKind::from_code(rec[48])
                    .ok_or_else(|| spool_err(std::io::Error::other("bad kind byte")))?;
                locs.push((
                    rec[..32].try_into().expect("32"),
                    Location {
                        pack: rec[32..48].try_into().expect("16"),
                        kind,
                        offset: u32_at(49),
                        stored_len: u32_at(53),
                        raw_len: u32_at(57),
                    },
                ));
            }
            let sup = if i + 1 == n {
                supersedes.clone()
            } else {
                vec![]
            };
            let obj = IndexObject::build(first_seq + i as u64, Utc::now().timestamp(), sup, locs);
            let (key, stored) = self.encode_index(&obj)?;
            self.inner.storage.put(&key, &stored)?;
        }
        Ok(())
    }

    /// See the module documentation: `repo check` of a format 3 repository.
    pub(crate) fn check_packed(&self) -> Result<CheckReport, RepoError> {
        let mut report = CheckReport::default();
        if let Err(e) = self.sync_index() {
            report.problems.push(format!("index: {e}"));
            return Ok(report);
        }
        crate::failpoint::hit("repo.check.listed", &CancellationToken::new());
        let mut problems = Vec::new();
        let (ids, legacy) = self.mark_live(&CancellationToken::new(), Some(&mut problems))?;
        report.manifests = ids.len() as u64;
        report.problems.extend(problems);
        if let Some(id) = self.with_cache(|c| c.unindexed_live())? {
            report.problems.push(format!(
                "blob {} referenced by a backup is in no index object (hopsdrctl repo repair-index rebuilds the index from the packs)",
                blake3::Hash::from_bytes(id).to_hex()
            ));
        }
        let liveness = self.with_cache(|c| c.pack_liveness())?;
        let listed: HashMap<[u8; 16], u64> = self
            .inner
            .storage
            .list("packs/")?
            .into_iter()
            .filter_map(|o| Some((pack_of_key(&o.key)?, o.size)))
            .collect();
        for l in &liveness {
            let key = pack_key(&l.pack);
            match listed.get(&l.pack) {
                None => report.problems.push(format!(
                    "pack '{key}' ({} referenced blob(s)) is missing from the store",
                    l.live
                )),
                Some(&size) if size < l.end + if l.solo { 0 } else { super::pack::FOOTER_LEN } => {
                    report.problems.push(format!(
                        "pack '{key}' is truncated: {size} bytes, its blobs end at byte {}",
                        l.end
                    ))
                }
                Some(_) => {}
            }
        }
        report.blobs = liveness.iter().map(|l| l.live + l.dead).sum();
        // Index objects a newer one replaced (a collection deletes them).
        let superseded = self.with_cache(|c| c.superseded_keys())?;
        let stale = self
            .inner
            .storage
            .list(index::PREFIX)?
            .into_iter()
            .filter(|o| superseded.contains(&o.key))
            .count() as u64;
        report.unreferenced_blobs = stale
            + liveness.iter().map(|l| l.dead).sum::<u64>()
            + listed
                .keys()
                .filter(|p| !liveness.iter().any(|l| l.pack == **p))
                .count() as u64;
        for key in legacy {
            if !self.inner.storage.exists(&key)? {
                report
                    .problems
                    .push(format!("blob '{key}' (stored by format 1/2) is missing"));
            }
        }
        Ok(report)
    }
}

fn id_bytes_hex(h: &str) -> [u8; 32] {
    blake3::Hash::from_hex(h)
        .map(|h| *h.as_bytes())
        .unwrap_or([0; 32])
}
