//! The replicas a backup records without reading them (one replica per block, chosen by
//! [`crate::placement`]): while the chosen replicas are stored, the writer tells [`Units`] of
//! every replica unit (from the funnel's tar or an agent's report, through the same
//! [`crate::repository::ReplicaSink`]); [`resolve`] then goes through the buckets in order, each
//! follower given its chosen sibling's unit, to be recorded with its own paths and metadata.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufWriter, Read, Seek, Write};
use std::sync::{Arc, Mutex};

use super::known;
use crate::cluster::hopsfs::{self, VolumeFile};
use crate::ids::BlobId;
use crate::placement::{key, Candidate, Followers, BUCKETS};
use crate::repository::{ReplicaSink, StoredUnit};

/// Calls `each` with every follower and the unit its block was stored as, one bucket at a time.
/// A follower whose block no unit in `units` holds is an error naming it: its chosen replica
/// was not stored.
pub fn resolve<E: From<ResolveError>>(
    followers: Followers,
    units: Units,
    mut each: impl FnMut(Candidate, &BlobId) -> Result<(), E>,
) -> Result<(), E> {
    let io = |e: std::io::Error| E::from(ResolveError::Io(e));
    let mut units = units.finish().map_err(io)?;
    let mut current: Option<(usize, HashMap<u128, BlobId>)> = None;
    for c in followers.read().map_err(io)? {
        let c = c.map_err(io)?;
        let b = Candidate::bucket(c.key);
        while current.as_ref().is_none_or(|(at, _)| *at < b) {
            let next = units
                .next()
                .ok_or_else(|| std::io::Error::other("the stored units ran out of buckets"))
                .and_then(|b| b)
                .map_err(io)?;
            current = Some((current.as_ref().map_or(0, |(at, _)| at + 1), next));
        }
        let (_, map) = current.as_ref().expect("loaded");
        match map.get(&c.key) {
            Some(unit) => {
                let unit = unit.clone();
                each(c, &unit)?;
            }
            None => {
                return Err(E::from(ResolveError::NotStored {
                    block_path: c.block_path,
                }))
            }
        }
    }
    Ok(())
}

fn rewound(mut f: File) -> std::io::Result<File> {
    f.rewind()?;
    Ok(f)
}

/// Why the followers could not be recorded.
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    #[error("the temporary list of replicas to record: {0}")]
    Io(#[source] std::io::Error),
    #[error(
        "{block_path}: the replica read for this block on another datanode was not stored; \
         nothing was committed, run the backup again"
    )]
    NotStored { block_path: String },
}

/// The replica units this backup stored, by bucket, told by the writer's [`ReplicaSink`].
#[derive(Clone)]
pub struct Units {
    inner: Arc<Mutex<UnitSpool>>,
}

struct UnitSpool {
    buckets: Vec<BufWriter<File>>,
    /// The first write that failed: reported by [`Followers::resolve`].
    failed: Option<std::io::Error>,
}

/// Bytes of a unit record: key, then the unit id's 64 hex digits.
const UNIT_RECORD: usize = 16 + 64;

impl Units {
    pub fn new() -> std::io::Result<Units> {
        let buckets = (0..BUCKETS)
            .map(|_| Ok(BufWriter::with_capacity(8 << 10, tempfile::tempfile()?)))
            .collect::<std::io::Result<_>>()?;
        Ok(Units {
            inner: Arc::new(Mutex::new(UnitSpool {
                buckets,
                failed: None,
            })),
        })
    }

    /// A sink for [`crate::repository::BackupWriter::set_replica_sink`] that records here.
    pub fn sink(&self) -> ReplicaSink {
        let units = self.clone();
        Box::new(move |s: StoredUnit<'_>| units.add(s))
    }

    fn add(&self, s: StoredUnit<'_>) {
        let Some(rel) = known::volume_relative(s.block_path) else {
            return;
        };
        let VolumeFile::Block { bp, id, .. } = hopsfs::classify(rel) else {
            return;
        };
        let key = key(&bp, id, s.genstamp, s.len, s.meta_len);
        let mut spool = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if spool.failed.is_some() {
            return;
        }
        let w = &mut spool.buckets[Candidate::bucket(key)];
        let wrote = w
            .write_all(&key.to_be_bytes())
            .and_then(|()| w.write_all(s.unit.as_str().as_bytes()));
        if let Err(e) = wrote {
            spool.failed = Some(e);
        }
    }

    /// Every bucket's units, read one at a time by the iterator.
    fn finish(
        self,
    ) -> std::io::Result<impl Iterator<Item = std::io::Result<HashMap<u128, BlobId>>>> {
        let spool = Arc::try_unwrap(self.inner)
            .map_err(|_| std::io::Error::other("the writer still holds the stored units"))?
            .into_inner()
            .unwrap_or_else(|p| p.into_inner());
        if let Some(e) = spool.failed {
            return Err(e);
        }
        let files = spool
            .buckets
            .into_iter()
            .map(|w| rewound(w.into_inner().map_err(|e| e.into_error())?))
            .collect::<std::io::Result<Vec<File>>>()?;
        Ok(files.into_iter().map(|mut f| {
            let mut raw = Vec::new();
            f.read_to_end(&mut raw)?;
            let mut map = HashMap::new();
            for rec in raw.chunks_exact(UNIT_RECORD) {
                let key = u128::from_be_bytes(rec[..16].try_into().expect("16"));
                if let Some(unit) = std::str::from_utf8(&rec[16..]).ok().and_then(BlobId::parse) {
                    map.insert(key, unit);
                }
            }
            Ok(map)
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::placement::Holders;
    use crate::repository::FileMeta;

    fn candidate(id: u64, volume: u32) -> Candidate {
        let meta = FileMeta {
            mode: 0o644,
            mtime: 1,
            uid: 1,
            gid: 1,
        };
        let dir = "BP-1-127.0.0.1-1/current/finalized/subdir0/subdir0";
        Candidate {
            key: key("BP-1-127.0.0.1-1", id, 1001, 4096, 39),
            volume,
            len: 4096,
            meta_len: 39,
            block_meta: meta,
            meta_meta: meta,
            block_path: format!("{dir}/blk_{id}"),
            meta_path: format!("{dir}/blk_{id}_1001.meta"),
        }
    }

    /// The writer tells the units of the chosen replicas (by their logical paths); every
    /// follower then gets its block's.
    #[test]
    fn every_follower_gets_the_unit_its_chosen_sibling_was_stored_as() {
        let names: Vec<String> = (1..=3).map(|i| format!("dn{i}")).collect();
        let holders = Holders::new().unwrap();
        for id in 0..200u64 {
            for v in 0..3u32 {
                holders.add(&candidate(id, v)).unwrap();
            }
        }
        let mut chosen = Vec::new();
        let followers = holders
            .choose(&[0, 1, 2], &names, &mut [0, 0, 0], |c| {
                chosen.push(c.clone());
                Ok(())
            })
            .unwrap();
        let units = Units::new().unwrap();
        let mut sink = units.sink();
        let unit_of = |k: u128| BlobId::of(&blake3::hash(&k.to_be_bytes()));
        for c in &chosen {
            let path = format!("hopsfs/dn{}/vol1/current/{}", c.volume + 1, c.block_path);
            sink(StoredUnit {
                block_path: &path,
                genstamp: 1001,
                len: c.len,
                meta_len: c.meta_len,
                unit: &unit_of(c.key),
            });
        }
        drop(sink);
        let mut seen = 0;
        resolve::<ResolveError>(followers, units, |c, unit| {
            assert_eq!(unit, &unit_of(c.key));
            seen += 1;
            Ok(())
        })
        .unwrap();
        assert_eq!(seen, 400);
    }

    /// A follower whose chosen replica was never stored is an error naming its block.
    #[test]
    fn a_follower_without_its_unit_is_named() {
        let names: Vec<String> = (1..=2).map(|i| format!("dn{i}")).collect();
        let holders = Holders::new().unwrap();
        holders.add(&candidate(5, 0)).unwrap();
        holders.add(&candidate(5, 1)).unwrap();
        let followers = holders
            .choose(&[0, 1], &names, &mut [0, 0], |_| Ok(()))
            .unwrap();
        let err =
            resolve::<ResolveError>(followers, Units::new().unwrap(), |_, _| Ok(())).unwrap_err();
        assert!(err.to_string().contains("blk_5"), "{err}");
    }
}
