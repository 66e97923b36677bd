//! The blocks an earlier backup stored, looked up by block while a backup pins and copies the
//! volumes, held on disk so that a cluster of millions of blocks costs the head node megabytes.
//!
//! A finalized HDFS replica never changes: a block (pool, id, genstamp, length, and the length
//! of its checksum file) the previous backup stored is recorded again without a transfer. The
//! previous backup's volume entries stream in (format 3: its volume streams, a replica's block
//! and checksum file one after the other); each block becomes one record keyed by the first 128
//! bits of the BLAKE3 of those five, whichever replica came first (the replicas of one block hold
//! the same content). Records are spread over [`BUCKETS`] temporary files by their key's first
//! bits, each bucket then sorted in memory (a 1/`BUCKETS` share) and written to one temporary
//! file of fixed-size records in key order. Memory keeps the sorted keys alone, 16 bytes a
//! block: the fence asks only whether a replica is stored (a binary search, no I/O, so the
//! fence window does not grow); the copy reads the one record it needs with one positioned read
//! (safe from many threads at once).
//!
//! Record ([`RECORD_LEN`] bytes): tag 0, a format 3 unit holding the checksum file then the
//! block (unit id as 64 hex digits, checksum file length u64, block file meta, checksum file
//! meta, each mode u32, mtime i64, uid u32, gid u32, all LE); or tag 1, a format 1/2 backup's two
//! file entries, as JSON in a side file (offset u64, length u32), zero-padded.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::{BufWriter, Read, Seek, Write};
use std::os::unix::fs::FileExt;

use crate::cluster::hopsfs::{self, Replica, VolumeFile};
use crate::ids::BlobId;
use crate::repository::{Entry, FileEntry, FileMeta};

/// Temporary bucket files while building: one per value of a key's first `BUCKET_BITS` bits, so
/// the buckets in order, each sorted, are all records sorted.
pub const BUCKET_BITS: u32 = 6;
pub const BUCKETS: usize = 1 << BUCKET_BITS;
/// Bytes of a record (the longest body: a unit).
pub const RECORD_LEN: usize = 1 + 64 + 8 + 2 * 20;

/// How the repository holds a block an earlier backup stored.
#[derive(Debug, Clone, PartialEq)]
pub enum Stored {
    /// Block and checksum file as one unit (format 3): the replica is one record.
    Unit {
        unit: BlobId,
        meta_len: u64,
        block_meta: FileMeta,
        meta_meta: FileMeta,
    },
    /// The two files as an earlier format stored them.
    Files(Box<(FileEntry, FileEntry)>),
}

impl Stored {
    fn blobs(&self) -> Vec<&BlobId> {
        match self {
            Stored::Unit { unit, .. } => vec![unit],
            Stored::Files(f) => f.0.blobs().iter().chain(f.1.blobs().iter()).collect(),
        }
    }

    fn encode(&self, out: &mut Vec<u8>) {
        let meta = |out: &mut Vec<u8>, m: &FileMeta| m.encode_le(out);
        match self {
            Stored::Unit {
                unit,
                meta_len,
                block_meta,
                meta_meta,
            } => {
                out.push(0);
                out.extend_from_slice(unit.as_str().as_bytes());
                out.extend_from_slice(&meta_len.to_le_bytes());
                meta(out, block_meta);
                meta(out, meta_meta);
            }
            Stored::Files(f) => {
                out.push(1);
                // Plain data: serializing it cannot fail.
                serde_json::to_writer(out, &**f).expect("file entries serialize");
            }
        }
    }

    fn decode(b: &[u8]) -> Option<Stored> {
        let (&tag, rest) = b.split_first()?;
        match tag {
            0 => {
                let u64_at =
                    |i: usize| Some(u64::from_le_bytes(rest.get(i..i + 8)?.try_into().ok()?));
                let meta = |i: usize| FileMeta::decode_le(rest.get(i..)?);
                let unit = BlobId::parse(std::str::from_utf8(rest.get(..64)?).ok()?)?;
                Some(Stored::Unit {
                    unit,
                    meta_len: u64_at(64)?,
                    block_meta: meta(72)?,
                    meta_meta: meta(92)?,
                })
            }
            1 => serde_json::from_slice(rest)
                .ok()
                .map(|f| Stored::Files(Box::new(f))),
            _ => None,
        }
    }
}

pub use crate::placement::key;

/// The blocks an earlier backup stored (see the module documentation). Empty when there was
/// none, or when the temporary files could not be made (then every block is read again).
#[derive(Debug, Default)]
pub struct KnownBlocks {
    /// The records, `RECORD_LEN` bytes each, in key order; `None` when empty.
    records: Option<File>,
    /// Format 1/2 entries (JSON) the records point into.
    side: Option<File>,
    /// The records' keys, sorted.
    keys: Vec<u128>,
}

impl KnownBlocks {
    /// Indexes the blocks among `entries` (a backup's), leaving out those whose stored
    /// content uses a blob in `suspect` (known damaged or missing: read from the datanode
    /// again). A replica's two files are paired as they come; a format 3 stream yields them
    /// one after the other, so little waits in memory.
    pub fn from_entries(
        entries: impl Iterator<Item = Entry>,
        suspect: &HashSet<BlobId>,
    ) -> std::io::Result<KnownBlocks> {
        let mut b = Builder::new()?;
        // (directory, id) -> the block file or the checksum file still waiting for the other.
        let mut blocks: HashMap<(String, u64), FileEntry> = HashMap::new();
        let mut metas: HashMap<(String, u64), FileEntry> = HashMap::new();
        for e in entries {
            let Entry::File(f) = e else { continue };
            let Some(rel) = volume_relative(&f.path) else {
                continue;
            };
            let dir = f
                .path
                .rsplit_once('/')
                .map(|x| x.0)
                .unwrap_or("")
                .to_string();
            match hopsfs::classify(rel) {
                VolumeFile::Block {
                    id,
                    finalized: true,
                    ..
                } => match metas.remove(&(dir.clone(), id)) {
                    Some(meta) => b.add(f, meta, suspect)?,
                    None => {
                        blocks.insert((dir, id), f);
                    }
                },
                VolumeFile::Meta {
                    id,
                    finalized: true,
                    ..
                } => match blocks.remove(&(dir.clone(), id)) {
                    Some(blk) => b.add(blk, f, suspect)?,
                    None => {
                        metas.insert((dir, id), f);
                    }
                },
                _ => {}
            }
        }
        b.finish()
    }

    fn key_of(r: &Replica) -> Option<u128> {
        // Being written or appended: stored as found, never deduplicated.
        r.finalized.then(|| {
            key(
                &r.block.bp,
                r.block.id,
                r.block.genstamp,
                r.block.len,
                r.meta_size,
            )
        })
    }

    /// Whether the repository holds finalized replica `r` (block and checksum file of the
    /// same sizes). In memory only.
    pub fn contains(&self, r: &Replica) -> bool {
        Self::key_of(r).is_some_and(|k| self.keys.binary_search(&k).is_ok())
    }

    /// How the repository holds finalized replica `r`; `None` for a replica being written or
    /// appended, for an unknown block, and if the record cannot be read (the block is then
    /// read again).
    pub fn lookup(&self, r: &Replica) -> Option<Stored> {
        let i = self.keys.binary_search(&Self::key_of(r)?).ok()?;
        let mut rec = [0u8; RECORD_LEN];
        let read = self
            .records
            .as_ref()?
            .read_exact_at(&mut rec, (i * RECORD_LEN) as u64)
            .map_err(|e| e.to_string())
            .and_then(|()| match rec[0] {
                1 => {
                    let at = u64::from_le_bytes(rec[1..9].try_into().expect("8"));
                    let n = u32::from_le_bytes(rec[9..13].try_into().expect("4")) as usize;
                    let mut json = vec![0u8; n];
                    let side = self.side.as_ref().ok_or("no side file")?;
                    side.read_exact_at(&mut json, at)
                        .map_err(|e| e.to_string())?;
                    let mut body = vec![1u8];
                    body.extend_from_slice(&json);
                    Stored::decode(&body).ok_or_else(|| "a bad record".to_string())
                }
                _ => Stored::decode(&rec).ok_or_else(|| "a bad record".to_string()),
            });
        match read {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::warn!(
                    step = "hopsfs",
                    "reading the known blocks back: {e}; block {} read again",
                    r.block.id
                );
                None
            }
        }
    }

    /// Distinct blocks known.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

/// Writes records into bucket files, then sorts each into the final file.
struct Builder {
    buckets: Vec<BufWriter<File>>,
    buf: Vec<u8>,
}

impl Builder {
    fn new() -> std::io::Result<Builder> {
        let buckets = (0..BUCKETS)
            .map(|_| Ok(BufWriter::with_capacity(16 << 10, tempfile::tempfile()?)))
            .collect::<std::io::Result<_>>()?;
        Ok(Builder {
            buckets,
            buf: Vec::new(),
        })
    }

    fn add(
        &mut self,
        blk: FileEntry,
        meta: FileEntry,
        suspect: &HashSet<BlobId>,
    ) -> std::io::Result<()> {
        let rel = volume_relative(&meta.path).unwrap_or_default();
        let VolumeFile::Meta {
            bp, id, genstamp, ..
        } = hopsfs::classify(rel)
        else {
            return Ok(());
        };
        let shared = blk.is_packed()
            && blk.units.len() == 1
            && meta.units == blk.units
            && blk.skip == 0
            && meta.skip == blk.size;
        let k = key(&bp, id, genstamp, blk.size, meta.size);
        let stored = if shared {
            Stored::Unit {
                unit: blk.units[0].clone(),
                meta_len: meta.size,
                block_meta: blk.meta,
                meta_meta: meta.meta,
            }
        } else {
            Stored::Files(Box::new((blk, meta)))
        };
        if stored.blobs().iter().any(|c| suspect.contains(*c)) {
            return Ok(());
        }
        self.buf.clear();
        stored.encode(&mut self.buf);
        let w = &mut self.buckets[(k >> (128 - BUCKET_BITS)) as usize];
        w.write_all(&k.to_be_bytes())?;
        w.write_all(&(self.buf.len() as u32).to_le_bytes())?;
        w.write_all(&self.buf)
    }

    fn finish(self) -> std::io::Result<KnownBlocks> {
        let mut out = BufWriter::with_capacity(1 << 20, tempfile::tempfile()?);
        let mut side: Option<BufWriter<File>> = None;
        let mut side_len = 0u64;
        let mut keys = Vec::new();
        for w in self.buckets {
            let mut f = w.into_inner().map_err(|e| e.into_error())?;
            f.rewind()?;
            let mut raw = Vec::new();
            f.read_to_end(&mut raw)?;
            drop(f);
            // (key, body start, body end) of each record in `raw`.
            let mut recs = Vec::new();
            let mut at = 0;
            while at + 20 <= raw.len() {
                let k = u128::from_be_bytes(raw[at..at + 16].try_into().expect("16"));
                let n = u32::from_le_bytes(raw[at + 16..at + 20].try_into().expect("4")) as usize;
                recs.push((k, at + 20, at + 20 + n));
                at += 20 + n;
            }
            // The first replica's record wins (the stable sort keeps their order).
            recs.sort_by_key(|r| r.0);
            recs.dedup_by_key(|r| r.0);
            for (k, from, to) in recs {
                let body = &raw[from..to];
                let mut rec = [0u8; RECORD_LEN];
                if body.first() == Some(&1) {
                    let json = &body[1..];
                    let s = match side.as_mut() {
                        Some(s) => s,
                        None => side.insert(BufWriter::new(tempfile::tempfile()?)),
                    };
                    s.write_all(json)?;
                    rec[0] = 1;
                    rec[1..9].copy_from_slice(&side_len.to_le_bytes());
                    rec[9..13].copy_from_slice(&(json.len() as u32).to_le_bytes());
                    side_len += json.len() as u64;
                } else {
                    rec[..body.len()].copy_from_slice(body);
                }
                out.write_all(&rec)?;
                keys.push(k);
            }
        }
        let records = out.into_inner().map_err(|e| e.into_error())?;
        let side = side
            .map(|s| s.into_inner().map_err(|e| e.into_error()))
            .transpose()?;
        keys.shrink_to_fit();
        Ok(KnownBlocks {
            records: (!keys.is_empty()).then_some(records),
            side,
            keys,
        })
    }
}

/// `hopsfs/<dn>/vol<i>/current/<rel>` → `<rel>`.
pub fn volume_relative(path: &str) -> Option<&str> {
    let rest = path.strip_prefix("hopsfs/")?;
    let mut parts = rest.splitn(4, '/');
    let (_dn, _vol, cur, rel) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    (cur == "current").then_some(rel)
}

/// The blocks already stored, being read on another thread while the backup goes on: whether
/// there are any is known first (a manifest read), the blocks themselves when the reader is done.
/// The fence asks whether there are any before the consistency point (a first backup pins the
/// whole tree) and waits for the blocks only after listing the live volumes, so their read
/// overlaps the listing instead of delaying the backup. Shared by the per-volume threads: the
/// first to ask waits, the others find them ready.
#[derive(Debug)]
pub struct Pending {
    any: std::sync::Mutex<Option<std::sync::mpsc::Receiver<bool>>>,
    any_value: std::sync::OnceLock<bool>,
    blocks: std::sync::Mutex<Option<std::sync::mpsc::Receiver<KnownBlocks>>>,
    value: std::sync::OnceLock<KnownBlocks>,
}

/// The reader's side of a [`Pending`]: say whether there are any blocks, then give them.
#[derive(Debug)]
pub struct Reader {
    any: std::sync::mpsc::Sender<bool>,
    blocks: std::sync::mpsc::Sender<KnownBlocks>,
}

impl Reader {
    /// Whether there is an earlier backup's blocks to read (send this before reading them).
    pub fn any(&self, any: bool) {
        let _ = self.any.send(any);
    }

    pub fn done(self, blocks: KnownBlocks) {
        let _ = self.any.send(!blocks.is_empty());
        let _ = self.blocks.send(blocks);
    }
}

impl Pending {
    /// A pending set and the reader that fills it. A reader dropped without [`Reader::done`]
    /// (it failed) leaves the set empty: every block is then read again.
    pub fn new() -> (Pending, Reader) {
        let (any_tx, any_rx) = std::sync::mpsc::channel();
        let (tx, rx) = std::sync::mpsc::channel();
        (
            Pending {
                any: std::sync::Mutex::new(Some(any_rx)),
                any_value: std::sync::OnceLock::new(),
                blocks: std::sync::Mutex::new(Some(rx)),
                value: std::sync::OnceLock::new(),
            },
            Reader {
                any: any_tx,
                blocks: tx,
            },
        )
    }

    /// Already read.
    pub fn ready(blocks: KnownBlocks) -> Pending {
        let (p, r) = Pending::new();
        r.done(blocks);
        p
    }

    /// Whether an earlier backup stored blocks (waits for the reader's first word only).
    pub fn any(&self) -> bool {
        *self.any_value.get_or_init(|| {
            self.any
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .take()
                .and_then(|rx| rx.recv().ok())
                .unwrap_or(false)
        })
    }

    /// The blocks (waits for the reader).
    pub fn get(&self) -> &KnownBlocks {
        self.value.get_or_init(|| {
            self.blocks
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .take()
                .and_then(|rx| rx.recv().ok())
                .unwrap_or_default()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::hopsfs::BlockRef;
    use crate::repository::Manifest;

    const D: &str = "hopsfs/dn1/vol1/current/BP-1/current/finalized/subdir0/subdir0";

    fn replica(id: u64, gs: u64, len: u64, meta_size: u64) -> Replica {
        Replica {
            block: BlockRef {
                bp: "BP-1".into(),
                id,
                genstamp: gs,
                len,
            },
            finalized: true,
            block_path: format!("BP-1/current/finalized/subdir0/subdir0/blk_{id}"),
            meta_path: format!("BP-1/current/finalized/subdir0/subdir0/blk_{id}_{gs}.meta"),
            meta_size,
        }
    }

    fn meta(mtime: i64) -> FileMeta {
        FileMeta {
            mode: 0o644,
            mtime,
            uid: 1001,
            gid: 1002,
        }
    }

    fn blob(b: u8) -> BlobId {
        BlobId::parse(&format!("{b:02x}").repeat(32)).unwrap()
    }

    /// A format 3 replica: both files in one unit, the checksum file first.
    fn unit_pair(dn: u32, id: u64, gs: u64, len: u64, unit: u8) -> [Entry; 2] {
        let d = D.replace("dn1", &format!("dn{dn}"));
        let e = |path: String, size, skip, m| {
            Entry::File(FileEntry {
                path,
                size,
                meta: m,
                hash: String::new(),
                chunks: vec![],
                units: vec![blob(unit)],
                skip,
            })
        };
        [
            e(format!("{d}/blk_{id}_{gs}.meta"), 39, len, meta(7)),
            e(format!("{d}/blk_{id}"), len, 0, meta(id as i64)),
        ]
    }

    #[test]
    fn blocks_stored_in_a_suspect_blob_are_not_reused() {
        let (a, b, c, e) = (
            "a".repeat(64),
            "b".repeat(64),
            "c".repeat(64),
            "d".repeat(64),
        );
        let paths = [
            format!("{D}/blk_1"),
            format!("{D}/blk_1_1001.meta"),
            format!("{D}/blk_2"),
            format!("{D}/blk_2_1002.meta"),
        ];
        let m = Manifest::for_tests(
            "20261206T100000Z",
            Default::default(),
            &[
                (&paths[0], &a),
                (&paths[1], &b),
                (&paths[2], &c),
                (&paths[3], &e),
            ],
        );
        let k = KnownBlocks::from_entries(m.entries.iter().cloned(), &Default::default()).unwrap();
        assert_eq!(k.len(), 2);
        let sizes: Vec<u64> = m
            .entries
            .iter()
            .filter_map(|e| match e {
                Entry::File(f) => Some(f.size),
                _ => None,
            })
            .collect();
        let r2 = replica(2, 1002, sizes[2], sizes[3]);
        match k.lookup(&r2) {
            Some(Stored::Files(f)) => assert_eq!(f.1.path, paths[3]),
            other => panic!("block 2: {other:?}"),
        }
        // Block 2's checksum file is in a damaged blob: block 2 is read from the datanode again.
        let suspect = [BlobId::parse(&e).unwrap()].into();
        let k = KnownBlocks::from_entries(m.entries.iter().cloned(), &suspect).unwrap();
        assert_eq!(k.len(), 1);
        assert!(k.lookup(&r2).is_none());
        assert!(k.lookup(&replica(1, 1001, sizes[0], sizes[1])).is_some());
    }

    #[test]
    fn thousands_of_blocks_are_found_by_block_and_sizes() {
        let n = 5000u64;
        // Three replicas of each block on three datanodes: one record per block.
        let entries: Vec<Entry> = (1..=3)
            .flat_map(|dn| {
                (0..n)
                    .flat_map(move |i| unit_pair(dn, 1000 + i, 5000 + i, 100 + i, (i % 251) as u8))
            })
            .collect();
        let k = KnownBlocks::from_entries(entries.into_iter(), &Default::default()).unwrap();
        assert_eq!(k.len(), n as usize);
        for i in (0..n).step_by(7) {
            assert!(k.contains(&replica(1000 + i, 5000 + i, 100 + i, 39)));
            let got = k.lookup(&replica(1000 + i, 5000 + i, 100 + i, 39));
            assert_eq!(
                got,
                Some(Stored::Unit {
                    unit: blob((i % 251) as u8),
                    meta_len: 39,
                    block_meta: meta((1000 + i) as i64),
                    meta_meta: meta(7),
                }),
                "block {i}"
            );
        }
        // Another genstamp, length or checksum size is another block; rbw is never reused.
        assert!(k.lookup(&replica(1000, 5001, 100, 39)).is_none());
        assert!(k.lookup(&replica(1000, 5000, 101, 39)).is_none());
        assert!(k.lookup(&replica(1000, 5000, 100, 40)).is_none());
        assert!(k.lookup(&replica(999, 4999, 99, 39)).is_none());
        assert!(!k.contains(&replica(1000, 5000, 100, 40)));
        let mut rbw = replica(1000, 5000, 100, 39);
        rbw.finalized = false;
        assert!(k.lookup(&rbw).is_none());
        assert!(!k.contains(&rbw));
        // 16 bytes of memory a block.
        assert_eq!(k.keys.capacity(), n as usize);
    }

    #[test]
    fn nothing_known_finds_nothing() {
        let k = KnownBlocks::from_entries(std::iter::empty(), &Default::default()).unwrap();
        assert!(k.is_empty());
        assert!(k.lookup(&replica(1, 1, 1, 1)).is_none());
        assert!(KnownBlocks::default()
            .lookup(&replica(1, 1, 1, 1))
            .is_none());
    }

    #[test]
    fn volume_relative_paths() {
        assert_eq!(
            volume_relative("hopsfs/dn1/vol1/current/BP-1/current/VERSION"),
            Some("BP-1/current/VERSION")
        );
        assert_eq!(volume_relative("rondb/1/BACKUP-5/x"), None);
        assert_eq!(volume_relative("hopsfs/dn1/vol1/other/x"), None);
    }

    #[test]
    fn pending_blocks_say_whether_there_are_any_before_they_are_read() {
        let (p, reader) = Pending::new();
        let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
        let p = std::sync::Arc::new(p);
        std::thread::scope(|s| {
            s.spawn(move || {
                reader.any(true);
                // The blocks come only once the test says so: `any` must not wait for them.
                go_rx.recv().unwrap();
                let b = KnownBlocks::from_entries(std::iter::empty(), &Default::default());
                reader.done(b.unwrap());
            });
            assert!(p.any());
            let waiting: Vec<_> = (0..3)
                .map(|_| {
                    let p = p.clone();
                    s.spawn(move || p.get().len())
                })
                .collect();
            go_tx.send(()).unwrap();
            for w in waiting {
                assert_eq!(w.join().unwrap(), 0, "every thread gets the one set");
            }
        });
        // A reader that fails (dropped) leaves nothing known: every block is read again.
        let (p, reader) = Pending::new();
        drop(reader);
        assert!(!p.any());
        assert!(p.get().is_empty());
        let p = Pending::ready(KnownBlocks::default());
        assert!(!p.any(), "an empty set says there are none");
    }
}
