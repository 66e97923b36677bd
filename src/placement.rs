//! One replica per block: of the finalized replicas of one block that several datanodes hold
//! (replication 3 gives three), which one a backup reads and which one a restore writes when
//! asked for one (HDFS then copies the others).
//!
//! The replicas ([`Candidate`]: the block's key, its volume, sizes, both files' metadata and
//! paths) go into [`Holders`]: [`BUCKETS`] temporary files by the key's first bits, shared by
//! threads. [`Holders::choose`] reads one bucket at a time (a 1/`BUCKETS` share in memory),
//! groups it by key and picks, for each block, the holder whose datanode has the fewest bytes
//! to move so far (counting what it must move anyway: replicas being written, other files,
//! blocks no other datanode holds), ties broken by rendezvous hashing (the highest BLAKE3 of key
//! and datanode name) so the choice is deterministic and the same again on a resume. Blocks come
//! in key order, which is random with respect to datanodes, so the greedy choice spreads the
//! bytes evenly whatever HDFS's placement. The others become [`Followers`], in bucket order.

use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Seek, Write};
use std::sync::Mutex;

use crate::repository::FileMeta;

/// Temporary bucket files: one per value of a key's first `BUCKET_BITS` bits.
pub const BUCKET_BITS: u32 = 6;
pub const BUCKETS: usize = 1 << BUCKET_BITS;

/// A finalized replica: of a volume a backup walks, or of a backup's volume a restore writes.
#[derive(Debug, Clone, PartialEq)]
pub struct Candidate {
    /// The block's key ([`key`]).
    pub key: u128,
    /// The volume's place in the caller's list of volumes.
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
        let start = out.len();
        out.extend_from_slice(&[0; 4]);
        out.extend_from_slice(&self.key.to_be_bytes());
        out.extend_from_slice(&self.volume.to_le_bytes());
        out.extend_from_slice(&self.len.to_le_bytes());
        out.extend_from_slice(&self.meta_len.to_le_bytes());
        self.block_meta.encode_le(out);
        self.meta_meta.encode_le(out);
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
        let meta = |i: usize| FileMeta::decode_le(body.get(i..)?);
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

    pub fn bucket(key: u128) -> usize {
        (key >> (128 - BUCKET_BITS)) as usize
    }
}

/// The key of a finalized block: the first 128 bits of the BLAKE3 of its pool, id, genstamp,
/// length and checksum file length (the replicas of a block share it).
pub fn key(bp: &str, id: u64, genstamp: u64, len: u64, meta_len: u64) -> u128 {
    let mut h = blake3::Hasher::new();
    h.update(bp.as_bytes());
    h.update(&[0]);
    h.update(&id.to_le_bytes());
    h.update(&genstamp.to_le_bytes());
    h.update(&len.to_le_bytes());
    h.update(&meta_len.to_le_bytes());
    u128::from_be_bytes(h.finalize().as_bytes()[..16].try_into().expect("16"))
}

/// Every replica given, by bucket (see the module documentation).
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
    /// move anyway, grown by what is chosen. `chosen` is called with each chosen replica.
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
        let (c, n) = Candidate::decode(&raw[at..]).ok_or_else(bad_record)?;
        out.push(c);
        at += n;
    }
    Ok(out)
}

/// Which of `holders` (datanode indexes, one per replica of block `key`) moves the block: the
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

/// The replicas not chosen, in bucket order.
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

    /// Replicas not chosen.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// Their block bytes.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// The replicas not chosen, in bucket order.
    pub fn read(self) -> std::io::Result<impl Iterator<Item = std::io::Result<Candidate>>> {
        let mut f = self.file.into_inner().map_err(|e| e.into_error())?;
        f.rewind()?;
        let mut f = BufReader::with_capacity(64 << 10, f);
        let mut left = self.count;
        let mut rec = Vec::new();
        Ok(std::iter::from_fn(move || {
            if left == 0 {
                return None;
            }
            left -= 1;
            let mut len = [0u8; 4];
            let read = f.read_exact(&mut len).and_then(|()| {
                rec.clear();
                rec.extend_from_slice(&len);
                rec.resize(4 + u32::from_le_bytes(len) as usize, 0);
                f.read_exact(&mut rec[4..])?;
                Candidate::decode(&rec)
                    .map(|(c, _)| c)
                    .ok_or_else(bad_record)
            });
            if read.is_err() {
                left = 0;
            }
            Some(read)
        }))
    }
}

fn bad_record() -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::InvalidData,
        "a bad record in the temporary list of replicas",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn meta(mode: u32) -> FileMeta {
        FileMeta {
            mode,
            mtime: 1_700_000_000,
            uid: 1001,
            gid: 1002,
        }
    }

    /// A replica of block `id` in volume `volume`.
    pub(crate) fn candidate(id: u64, volume: u32, len: u64) -> Candidate {
        let dir = "BP-1-127.0.0.1-1/current/finalized/subdir0/subdir0";
        Candidate {
            key: key("BP-1-127.0.0.1-1", id, 1001, len, 7 + len / 512 * 4),
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

    /// The least loaded holder moves the block; equal loads go by rendezvous, the same answer
    /// every time and not always the first holder.
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
    /// holds blocks no other datanode has: each block is chosen once, the bytes per datanode end
    /// within one block of equal, and every other replica is a follower.
    #[test]
    fn one_replica_per_block_spreads_the_bytes() {
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
        let mut chosen: Vec<Candidate> = Vec::new();
        let followers = holders
            .choose(&[0, 1, 2], &names, &mut loads, |c| {
                chosen.push(c.clone());
                Ok(())
            })
            .unwrap();
        assert_eq!(chosen.len(), 350);
        assert_eq!(followers.count(), 600);
        let meta = candidate(0, 0, len).meta_len;
        let max = *loads.iter().max().unwrap();
        let min = *loads.iter().min().unwrap();
        assert!(max - min <= len + meta, "{loads:?}");
        assert_eq!(loads.iter().sum::<u64>(), 350 * (len + meta));
        let mut keys: Vec<(u128, u32)> = followers
            .read()
            .unwrap()
            .map(|c| c.map(|c| (c.key, c.volume)).unwrap())
            .collect();
        assert_eq!(keys.len(), 600);
        keys.extend(chosen.iter().map(|c| (c.key, c.volume)));
        keys.sort();
        keys.dedup();
        assert_eq!(keys.len(), 950, "a replica both chosen and following");
    }
}
