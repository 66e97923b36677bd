//! One replica per block: of the finalized replicas of one block that several datanodes hold
//! (replication 3 gives three), a backup reads one and records the others with its unit.
//!
//! The walks of the volumes write every new finalized replica ([`Candidate`]: the block's key,
//! its volume, sizes, both files' metadata and paths) into [`Holders`]: [`known::BUCKETS`]
//! temporary files by the key's first bits, shared by the walks' threads. Once every volume is
//! walked, [`Holders::choose`] reads one bucket at a time (a 1/`BUCKETS` share in memory),
//! groups it by key and picks, for each block, the holder whose datanode has the fewest bytes
//! to send so far (counting what it must send anyway: replicas being written, other files,
//! blocks no other datanode holds), ties broken by rendezvous hashing (the highest BLAKE3 of key
//! and datanode name) so the choice is deterministic. Blocks come in key order, which is
//! random with respect to datanodes, so greedy choice spreads the bytes evenly whatever HDFS's
//! placement. The chosen replica goes into its volume's upload list; the others become
//! [`Followers`], written in bucket order.
//!
//! While the chosen replicas are stored, the writer tells [`Units`] of every replica unit
//! (funnel or agent, the same [`crate::repository::ReplicaSink`]); [`Followers::resolve`] then
//! goes through the buckets once more, each follower recorded with its chosen sibling's unit
//! and its own paths and metadata. A block too big for one unit is taken from every holder.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Seek, Write};
use std::sync::{Arc, Mutex};

use super::known::{self, BUCKETS, BUCKET_BITS};
use crate::cluster::hopsfs::{self, VolumeFile};
use crate::ids::BlobId;
use crate::repository::{FileMeta, ReplicaSink, StoredUnit};

/// A new finalized replica found by a volume's walk.
#[derive(Debug, Clone, PartialEq)]
pub struct Candidate {
    /// The block's key (as [`known`] keys blocks: pool, id, genstamp, lengths).
    pub key: u128,
    /// The volume's place in the backup's list of volumes (datanodes in order, then theirs).
    pub volume: u32,
    pub len: u64,
    pub meta_len: u64,
    pub block_meta: FileMeta,
    pub meta_meta: FileMeta,
    /// Relative to the volume's `current/`.
    pub block_path: String,
    pub meta_path: String,
}

impl Candidate {
    fn encode(&self, out: &mut Vec<u8>) {
        let meta = |out: &mut Vec<u8>, m: &FileMeta| {
            out.extend_from_slice(&m.mode.to_le_bytes());
            out.extend_from_slice(&m.mtime.to_le_bytes());
            out.extend_from_slice(&m.uid.to_le_bytes());
            out.extend_from_slice(&m.gid.to_le_bytes());
        };
        let start = out.len();
        out.extend_from_slice(&[0; 4]);
        out.extend_from_slice(&self.key.to_be_bytes());
        out.extend_from_slice(&self.volume.to_le_bytes());
        out.extend_from_slice(&self.len.to_le_bytes());
        out.extend_from_slice(&self.meta_len.to_le_bytes());
        meta(out, &self.block_meta);
        meta(out, &self.meta_meta);
        out.extend_from_slice(&(self.block_path.len() as u32).to_le_bytes());
        out.extend_from_slice(self.block_path.as_bytes());
        out.extend_from_slice(self.meta_path.as_bytes());
        let n = (out.len() - start - 4) as u32;
        out[start..start + 4].copy_from_slice(&n.to_le_bytes());
    }

    /// The record at the start of `raw` and its length, `None` if it is cut short or bad.
    fn decode(raw: &[u8]) -> Option<(Candidate, usize)> {
        let n = u32::from_le_bytes(raw.get(..4)?.try_into().ok()?) as usize;
        let body = raw.get(4..4 + n)?;
        let u32_at = |i: usize| Some(u32::from_le_bytes(body.get(i..i + 4)?.try_into().ok()?));
        let u64_at = |i: usize| Some(u64::from_le_bytes(body.get(i..i + 8)?.try_into().ok()?));
        let meta = |i: usize| {
            Some(FileMeta {
                mode: u32_at(i)?,
                mtime: u64_at(i + 4)? as i64,
                uid: u32_at(i + 12)?,
                gid: u32_at(i + 16)?,
            })
        };
        let key = u128::from_be_bytes(body.get(..16)?.try_into().ok()?);
        let blen = u32_at(76)? as usize;
        let paths = body.get(80..)?;
        let block_path = std::str::from_utf8(paths.get(..blen)?).ok()?.to_string();
        let meta_path = std::str::from_utf8(paths.get(blen..)?).ok()?.to_string();
        Some((
            Candidate {
                key,
                volume: u32_at(16)?,
                len: u64_at(20)?,
                meta_len: u64_at(28)?,
                block_meta: meta(36)?,
                meta_meta: meta(56)?,
                block_path,
                meta_path,
            },
            4 + n,
        ))
    }

    fn bucket(key: u128) -> usize {
        (key >> (128 - BUCKET_BITS)) as usize
    }
}

/// The key of a replica of block `bp`/`id`/`genstamp` with these lengths.
pub fn key_of(bp: &str, id: u64, genstamp: u64, len: u64, meta_len: u64) -> u128 {
    known::key(bp, id, genstamp, len, meta_len)
}

/// Every new finalized replica of the volumes walked, by bucket (see the module documentation).
pub struct Holders {
    buckets: Vec<Mutex<BufWriter<File>>>,
}

impl Holders {
    pub fn new() -> std::io::Result<Holders> {
        let buckets = (0..BUCKETS)
            .map(|_| {
                Ok(Mutex::new(BufWriter::with_capacity(
                    16 << 10,
                    tempfile::tempfile()?,
                )))
            })
            .collect::<std::io::Result<_>>()?;
        Ok(Holders { buckets })
    }

    /// Adds `c` (from any thread).
    pub fn add(&self, c: &Candidate) -> std::io::Result<()> {
        let mut buf = Vec::with_capacity(128);
        c.encode(&mut buf);
        let mut w = self.buckets[Candidate::bucket(c.key)]
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        w.write_all(&buf)
    }

    /// Picks one holder of every block (see the module documentation). `datanode_of[v]` is the
    /// datanode (an index into `names` and `loads`) of volume `v`; `loads` the bytes each must
    /// send anyway, grown by what is chosen. `chosen` is called with each chosen replica.
    pub fn choose(
        self,
        datanode_of: &[usize],
        names: &[String],
        loads: &mut [u64],
        mut chosen: impl FnMut(&Candidate) -> std::io::Result<()>,
    ) -> std::io::Result<Followers> {
        let mut followers = Followers::new()?;
        for w in self.buckets {
            let w = w.into_inner().unwrap_or_else(|p| p.into_inner());
            let mut group = read_bucket(w)?;
            group.sort_by(|a, b| a.key.cmp(&b.key).then(a.volume.cmp(&b.volume)));
            let mut rest = &group[..];
            while let Some(first) = rest.first() {
                let n = rest.iter().take_while(|c| c.key == first.key).count();
                let (same, tail) = rest.split_at(n);
                rest = tail;
                let holders: Vec<usize> = same
                    .iter()
                    .map(|c| datanode_of[c.volume as usize])
                    .collect();
                let pick = pick(first.key, &holders, names, loads);
                loads[holders[pick]] += first.len + first.meta_len;
                for (i, c) in same.iter().enumerate() {
                    if i == pick {
                        chosen(c)?;
                    } else {
                        followers.push(c)?;
                    }
                }
            }
        }
        Ok(followers)
    }
}

fn read_bucket(w: BufWriter<File>) -> std::io::Result<Vec<Candidate>> {
    let mut f = w.into_inner().map_err(|e| e.into_error())?;
    f.rewind()?;
    let mut raw = Vec::new();
    f.read_to_end(&mut raw)?;
    let mut out = Vec::new();
    let mut at = 0;
    while at < raw.len() {
        let (c, n) = Candidate::decode(&raw[at..]).ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "a bad record in the temporary list of replicas",
            )
        })?;
        out.push(c);
        at += n;
    }
    Ok(out)
}

/// Which of `holders` (datanode indexes, one per replica of block `key`) sends the block: the
/// one with the smallest load, ties broken by the highest BLAKE3 of key and datanode name.
pub fn pick(key: u128, holders: &[usize], names: &[String], loads: &[u64]) -> usize {
    let score = |d: usize| {
        let mut h = blake3::Hasher::new();
        h.update(&key.to_be_bytes());
        h.update(names[d].as_bytes());
        u64::from_be_bytes(h.finalize().as_bytes()[..8].try_into().expect("8"))
    };
    (0..holders.len())
        .min_by_key(|&i| (loads[holders[i]], std::cmp::Reverse(score(holders[i]))))
        .expect("a block has a holder")
}

/// The replicas not chosen, in bucket order, to record once the chosen ones are stored.
pub struct Followers {
    file: BufWriter<File>,
    count: u64,
    bytes: u64,
    buf: Vec<u8>,
}

impl Followers {
    fn new() -> std::io::Result<Followers> {
        Ok(Followers {
            file: BufWriter::with_capacity(64 << 10, tempfile::tempfile()?),
            count: 0,
            bytes: 0,
            buf: Vec::new(),
        })
    }

    fn push(&mut self, c: &Candidate) -> std::io::Result<()> {
        self.buf.clear();
        c.encode(&mut self.buf);
        self.file.write_all(&self.buf)?;
        self.count += 1;
        self.bytes += c.len;
        Ok(())
    }

    /// Replicas recorded without being read.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// Their block bytes.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Calls `each` with every follower and the unit its block was stored as, one bucket at a
    /// time. A follower whose block no unit in `units` holds is an error naming it: its chosen
    /// replica was not stored.
    pub fn resolve<E: From<ResolveError>>(
        self,
        units: Units,
        mut each: impl FnMut(Candidate, &BlobId) -> Result<(), E>,
    ) -> Result<(), E> {
        let io = |e: std::io::Error| E::from(ResolveError::Io(e));
        let mut units = units.finish().map_err(io)?;
        let mut f = BufReader::with_capacity(
            64 << 10,
            self.file
                .into_inner()
                .map_err(|e| io(e.into_error()))?
                .rewind_into()
                .map_err(io)?,
        );
        let mut current: Option<(usize, HashMap<u128, BlobId>)> = None;
        let mut len = [0u8; 4];
        let mut rec = Vec::new();
        for _ in 0..self.count {
            f.read_exact(&mut len).map_err(io)?;
            rec.clear();
            rec.extend_from_slice(&len);
            rec.resize(4 + u32::from_le_bytes(len) as usize, 0);
            f.read_exact(&mut rec[4..]).map_err(io)?;
            let (c, _) = Candidate::decode(&rec).ok_or_else(|| {
                io(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    "a bad record in the temporary list of replicas",
                ))
            })?;
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
}

trait RewindInto {
    fn rewind_into(self) -> std::io::Result<File>;
}

impl RewindInto for File {
    fn rewind_into(mut self) -> std::io::Result<File> {
        self.rewind()?;
        Ok(self)
    }
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
        let key = key_of(&bp, id, s.genstamp, s.len, s.meta_len);
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
            .map(|w| w.into_inner().map_err(|e| e.into_error())?.rewind_into())
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

    fn meta(mode: u32) -> FileMeta {
        FileMeta {
            mode,
            mtime: 1_700_000_000,
            uid: 1001,
            gid: 1002,
        }
    }

    fn candidate(id: u64, volume: u32, len: u64) -> Candidate {
        let dir = "BP-1-127.0.0.1-1/current/finalized/subdir0/subdir0";
        Candidate {
            key: key_of("BP-1-127.0.0.1-1", id, 1001, len, 7 + len / 512 * 4),
            volume,
            len,
            meta_len: 7 + len / 512 * 4,
            block_meta: meta(0o644),
            meta_meta: meta(0o640),
            block_path: format!("{dir}/blk_{id}"),
            meta_path: format!("{dir}/blk_{id}_1001.meta"),
        }
    }

    #[test]
    fn candidates_round_trip_and_refuse_a_cut_record() {
        let c = candidate(1_073_741_825, 3, 4096);
        let mut buf = Vec::new();
        c.encode(&mut buf);
        assert_eq!(Candidate::decode(&buf), Some((c.clone(), buf.len())));
        assert_eq!(Candidate::decode(&buf[..buf.len() - 1]), None);
    }

    /// The least loaded holder sends; equal loads go by rendezvous, the same answer every time
    /// and not always the first holder.
    #[test]
    fn pick_prefers_the_least_loaded_then_rendezvous() {
        let names: Vec<String> = (1..=3).map(|i| format!("dn{i}")).collect();
        assert_eq!(pick(7, &[0, 1, 2], &names, &[10, 5, 10]), 1);
        let firsts = (0..64u128)
            .filter(|&k| pick(k, &[0, 1, 2], &names, &[0, 0, 0]) == 0)
            .count();
        assert!((5..60).contains(&firsts), "{firsts} of 64 to the first");
        for k in 0..64u128 {
            assert_eq!(
                pick(k, &[0, 1, 2], &names, &[0, 0, 0]),
                pick(k, &[0, 1, 2], &names, &[0, 0, 0])
            );
        }
    }

    /// Three datanodes hold every block (replication 3), with placement skewed so that dn1 also
    /// holds blocks no other datanode has: each block is sent once, every other replica
    /// follows with its unit, and the bytes sent per datanode end within one block of equal.
    #[test]
    fn one_replica_per_block_spreads_the_bytes_and_records_the_rest() {
        let names: Vec<String> = (1..=3).map(|i| format!("dn{i}")).collect();
        let holders = Holders::new().unwrap();
        let len = 1 << 20;
        for id in 0..300u64 {
            for v in 0..3u32 {
                holders.add(&candidate(id, v, len)).unwrap();
            }
        }
        for id in 300..350u64 {
            holders.add(&candidate(id, 0, len)).unwrap();
        }
        let mut loads = vec![0u64; 3];
        let mut sent: Vec<Candidate> = Vec::new();
        let followers = holders
            .choose(&[0, 1, 2], &names, &mut loads, |c| {
                sent.push(c.clone());
                Ok(())
            })
            .unwrap();
        assert_eq!(sent.len(), 350);
        assert_eq!(followers.count(), 600);
        let meta = candidate(0, 0, len).meta_len;
        let max = *loads.iter().max().unwrap();
        let min = *loads.iter().min().unwrap();
        assert!(max - min <= len + meta, "{loads:?}");
        assert_eq!(loads.iter().sum::<u64>(), 350 * (len + meta));

        // The writer tells the units of the chosen ones; every follower then gets its own.
        let units = Units::new().unwrap();
        let mut sink = units.sink();
        for c in &sent {
            let unit = BlobId::of(&blake3::hash(&c.key.to_be_bytes()));
            let path = format!("hopsfs/dn{}/vol1/current/{}", c.volume + 1, c.block_path);
            sink(StoredUnit {
                block_path: &path,
                genstamp: 1001,
                len: c.len,
                meta_len: c.meta_len,
                unit: &unit,
            });
        }
        drop(sink);
        let mut seen = 0;
        followers
            .resolve::<ResolveError>(units, |c, unit| {
                assert_eq!(unit, &BlobId::of(&blake3::hash(&c.key.to_be_bytes())));
                assert!(!sent.iter().any(|s| s.volume == c.volume && s.key == c.key));
                seen += 1;
                Ok(())
            })
            .unwrap();
        assert_eq!(seen, 600);
    }

    /// A follower whose chosen replica was never stored is an error naming its block.
    #[test]
    fn a_follower_without_its_unit_is_named() {
        let names: Vec<String> = (1..=2).map(|i| format!("dn{i}")).collect();
        let holders = Holders::new().unwrap();
        holders.add(&candidate(5, 0, 100)).unwrap();
        holders.add(&candidate(5, 1, 100)).unwrap();
        let followers = holders
            .choose(&[0, 1], &names, &mut [0, 0], |_| Ok(()))
            .unwrap();
        let err = followers
            .resolve::<ResolveError>(Units::new().unwrap(), |_, _| Ok(()))
            .unwrap_err();
        assert!(err.to_string().contains("blk_5"), "{err}");
    }
}
