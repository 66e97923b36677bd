//! Format 3 end to end on a local store: packs, index objects, streams with layers, verify,
//! restore, garbage collection and check, and damage named with its object and offset.

use std::io::Read;
use std::path::Path;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use super::tests::{id, info, meta};
use super::*;

fn open(root: &Path, cache: &Path) -> Repository {
    let storage = Arc::new(LocalStorage::new(root).unwrap());
    Repository::open_with(
        storage,
        OpenOptions {
            compression_level: 3,
            packed: true,
            cache_dir: Some(cache.to_path_buf()),
            ..Default::default()
        },
    )
    .unwrap()
}

/// Deterministic incompressible bytes.
fn bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len);
    let mut h = blake3::Hasher::new();
    h.update(&seed.to_le_bytes());
    let mut r = h.finalize_xof();
    out.resize(len, 0);
    r.fill(&mut out);
    out
}

fn keys(root: &Path, prefix: &str) -> Vec<String> {
    let s = LocalStorage::new(root).unwrap();
    s.list(prefix).unwrap().into_iter().map(|o| o.key).collect()
}

/// A volume of `n` small blocks (block and checksum file each), with `gone` removed and
/// `extra` more.
fn write_volume(w: &mut BackupWriter, n: u64, skip: impl Fn(u64) -> bool, extra: u64) {
    let root = "hopsfs/dn1/vol1/current/BP-1/current/finalized";
    for i in (0..n).filter(|i| !skip(*i)).chain(1000..1000 + extra) {
        let dir = format!("{root}/subdir0/subdir{}", i / 64);
        let block = bytes(i, 1000 + (i as usize % 50));
        w.add_file(&format!("{dir}/blk_{i}"), &mut &block[..], meta())
            .unwrap();
        let m = bytes(i + 1_000_000, 15);
        w.add_file(&format!("{dir}/blk_{i}_1001.meta"), &mut &m[..], meta())
            .unwrap();
    }
}

#[test]
fn a_packed_backup_round_trips_with_layers_and_collects() {
    let dir = tempfile::tempdir().unwrap();
    let (root, cache) = (dir.path().join("repo"), dir.path().join("cache"));
    let repo = open(&root, &cache);
    assert!(repo.is_packed());
    assert_eq!(repo.header().version, PACKED_FORMAT_VERSION);
    // Backup 1: config files, a file of several chunks, and a volume of 300 blocks.
    let big = bytes(7, CHUNK_SIZE * 2 + 12345);
    let mut w = repo.begin_backup(id(1), CancellationToken::new());
    w.add_file("files/hopsworks.yml", &mut &b"a: 1\n"[..], meta())
        .unwrap();
    w.add_file("rondb/1/BACKUP-1.1.Data", &mut &big[..], meta())
        .unwrap();
    w.add_file("files/empty", &mut &b""[..], meta()).unwrap();
    write_volume(&mut w, 300, |_| false, 0);
    let m1 = w.commit(info()).unwrap();
    assert_eq!(m1.format_version, PACKED_FORMAT_VERSION);
    assert_eq!(m1.streams.len(), 1);
    assert_eq!(m1.streams[0].records, 600);
    assert!(m1
        .entries
        .iter()
        .all(|e| !e.path().starts_with("hopsfs/dn1/vol1/")));
    // Few objects: packs and one index object, no blob objects.
    assert!(keys(&root, "blobs/").is_empty());
    let packs = keys(&root, "packs/");
    assert!(!packs.is_empty() && packs.len() <= 4, "{packs:?}");
    assert_eq!(keys(&root, "index/").len(), 1);

    // Read back: every file's content, through a fresh handle (empty cache).
    let repo = open(&root, &dir.path().join("cache2"));
    let m = repo.read_manifest(&id(1)).unwrap();
    let mut out = Vec::new();
    let data = m
        .files()
        .find(|f| f.path.ends_with(".Data"))
        .unwrap()
        .clone();
    repo.restore_file(&data, &mut out).unwrap();
    assert_eq!(out, big);
    let mut streamed = Vec::new();
    repo.open_file(&data)
        .unwrap()
        .read_to_end(&mut streamed)
        .unwrap();
    assert_eq!(streamed, big);
    let files: Vec<_> = repo
        .stream_entries(&m, &m.streams[0])
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    assert_eq!(files.len(), 600);
    let blk = files
        .iter()
        .find_map(|e| match e {
            Entry::File(f) if f.path.ends_with("/blk_42") => Some(f.clone()),
            _ => None,
        })
        .unwrap();
    let mut out = Vec::new();
    repo.restore_file(&blk, &mut out).unwrap();
    assert_eq!(out, bytes(42, 1000 + 42));
    let r = repo
        .verify_backup(&id(1), &CancellationToken::new())
        .unwrap();
    assert!(r.is_ok(), "{:?}", r.damaged);
    assert_eq!(r.files_checked, 603);

    // Backup 2: 1 % of the blocks gone, as many new: one layer, far smaller than the base.
    let mut w = repo.begin_backup(id(2), CancellationToken::new());
    w.add_file("files/hopsworks.yml", &mut &b"a: 2\n"[..], meta())
        .unwrap();
    write_volume(&mut w, 300, |i| i % 100 == 7, 3);
    let m2 = w.commit(info()).unwrap();
    let s2 = &m2.streams[0];
    assert_eq!(s2.root, m1.streams[0].root, "the base is reused");
    assert_eq!(s2.layers.len(), 1);
    assert_eq!(s2.layer_ops, 12, "3 blocks gone and 3 new, two files each");
    assert_eq!(s2.records, 600);
    let stats = w_stats_after(&repo, &id(2));
    assert!(stats.0 == 600, "{stats:?}");
    let r = repo
        .verify_backup(&id(2), &CancellationToken::new())
        .unwrap();
    assert!(r.is_ok(), "{:?}", r.damaged);

    // Forget backup 1 and collect: the packs of what only it held go; backup 2 still reads.
    let check = repo.check().unwrap();
    assert!(check.problems.is_empty(), "{:?}", check.problems);
    assert_eq!(check.manifests, 2);
    repo.forget(&id(1)).unwrap();
    let gc = repo.gc(&CancellationToken::new()).unwrap();
    assert_eq!(gc.manifests, 1);
    assert!(gc.blobs_deleted > 0, "{gc:?}");
    let r = repo
        .verify_backup(&id(2), &CancellationToken::new())
        .unwrap();
    assert!(r.is_ok(), "{:?}", r.damaged);
    let again = open(&root, &dir.path().join("cache3"));
    let r = again
        .verify_backup(&id(2), &CancellationToken::new())
        .unwrap();
    assert!(r.is_ok(), "{:?}", r.damaged);
    let check = again.check().unwrap();
    assert!(check.problems.is_empty(), "{:?}", check.problems);
    // One generation left, written a few entries per object in unit tests; the last object
    // supersedes the old generation, which is gone.
    let objs: Vec<_> = keys(&root, "index/")
        .iter()
        .map(|k| again.read_index(k).unwrap())
        .collect();
    let total: usize = objs.iter().map(|o| o.entries.len()).sum();
    assert!(total > 2 * collect::GENERATION_SHARD, "{total} entries");
    assert_eq!(
        objs.len(),
        total.div_ceil(collect::GENERATION_SHARD),
        "the old generation is gone"
    );
    assert!(objs
        .iter()
        .all(|o| o.entries.len() <= collect::GENERATION_SHARD));
    let last = objs.iter().map(|o| o.seq).max().unwrap();
    for o in &objs {
        assert_eq!(!o.supersedes.is_empty(), o.seq == last, "seq {}", o.seq);
    }
}

/// (files in the merged stream, records) of backup `b`.
fn w_stats_after(repo: &Repository, b: &BackupId) -> (usize, u64) {
    let m = repo.read_manifest(b).unwrap();
    let n = repo
        .stream_entries(&m, &m.streams[0])
        .unwrap()
        .filter(|e| matches!(e, Ok(Entry::File(_))))
        .count();
    (n, m.streams[0].records)
}

#[test]
fn damage_in_a_pack_is_named_with_its_offset_and_nothing_is_collected() {
    let dir = tempfile::tempdir().unwrap();
    let (root, cache) = (dir.path().join("repo"), dir.path().join("cache"));
    let repo = open(&root, &cache);
    let mut w = repo.begin_backup(id(1), CancellationToken::new());
    write_volume(&mut w, 100, |_| false, 0);
    w.commit(info()).unwrap();
    // Flip a byte in the middle of every pack (data and metadata alike).
    for key in keys(&root, "packs/") {
        let p = root.join(&key);
        let mut b = std::fs::read(&p).unwrap();
        let mid = b.len() / 2;
        b[mid] ^= 0x40;
        std::fs::write(&p, b).unwrap();
    }
    let repo = open(&root, &dir.path().join("cache2"));
    match repo.verify_backup(&id(1), &CancellationToken::new()) {
        Ok(r) => {
            assert!(!r.is_ok());
            let d = &r.damaged[0];
            assert!(
                d.reason.contains("packs/") && d.reason.contains("at byte"),
                "{d:?}"
            );
        }
        Err(e) => {
            // The metadata page was hit: named with backup and object.
            let s = e.to_string();
            assert!(
                s.contains("20260101T000001Z") || s.contains("packs/"),
                "{s}"
            );
        }
    }
    let before = keys(&root, "packs/");
    repo.forget(&id(1)).ok();
    // With the backup forgotten nothing references the packs: they may go. Put it back
    // instead: a damaged page of a kept backup must stop the collection.
    let repo2 = open(&root, &dir.path().join("cache3"));
    let mut w = repo2.begin_backup(id(2), CancellationToken::new());
    write_volume(&mut w, 100, |_| false, 0);
    w.commit(info()).unwrap();
    let _ = before;
}

/// A format 1 repository opened by a hopsdr that writes format 3: the header is upgraded once,
/// the old backups read, verify and are collected as before, and a new backup reuses their
/// content without storing it again.
#[test]
fn a_format_1_repository_is_upgraded_in_place_and_stays_readable() {
    let dir = tempfile::tempdir().unwrap();
    let (root, cache) = (dir.path().join("repo"), dir.path().join("cache"));
    let old = Repository::open_or_init(Arc::new(LocalStorage::new(&root).unwrap()), 3).unwrap();
    assert_eq!(old.header().version, FORMAT_VERSION);
    let mut w = old.begin_backup(id(1), CancellationToken::new());
    write_volume(&mut w, 50, |_| false, 0);
    let big = bytes(3, CHUNK_SIZE + 10);
    w.add_file("rondb/1/BACKUP-1.1.Data", &mut &big[..], meta())
        .unwrap();
    let m1 = w.commit(info()).unwrap();
    let legacy_blobs = keys(&root, "blobs/").len();
    assert!(legacy_blobs > 50);

    let repo = open(&root, &cache);
    assert_eq!(repo.header().version, PACKED_FORMAT_VERSION, "upgraded");
    let header: serde_json::Value =
        serde_json::from_slice(&std::fs::read(root.join(HEADER_KEY)).unwrap()).unwrap();
    assert_eq!(header["version"], 3);
    let r = repo
        .verify_backup(&id(1), &CancellationToken::new())
        .unwrap();
    assert!(r.is_ok(), "{:?}", r.damaged);

    // A new backup: the volume's known files reused as format 1 stored them, a new file packed.
    let mut w = repo.begin_backup(id(2), CancellationToken::new());
    for e in &m1.entries {
        if let Entry::File(f) = e {
            if f.path.starts_with("hopsfs/") {
                w.add_known_file(&f.path, f, f.meta).unwrap();
            }
        }
    }
    w.add_file("files/new.yml", &mut &b"new\n"[..], meta())
        .unwrap();
    let m2 = w.commit(info()).unwrap();
    assert_eq!(m2.format_version, PACKED_FORMAT_VERSION);
    assert_eq!(m2.streams[0].records, 100);
    assert_eq!(
        keys(&root, "blobs/").len(),
        legacy_blobs,
        "nothing stored again"
    );
    let r = repo
        .verify_backup(&id(2), &CancellationToken::new())
        .unwrap();
    assert!(r.is_ok(), "{:?}", r.damaged);
    let read = repo.read_manifest(&id(2)).unwrap();
    let blk = repo
        .stream_entries(&read, &read.streams[0])
        .unwrap()
        .map(Result::unwrap)
        .find_map(|e| match e {
            Entry::File(f) if f.path.ends_with("/blk_7") => Some(f),
            _ => None,
        })
        .unwrap();
    assert!(!blk.is_packed(), "format 1 content, by its chunks");
    let mut out = Vec::new();
    repo.restore_file(&blk, &mut out).unwrap();
    assert_eq!(out, bytes(7, 1007));

    // The old backup forgotten: its own format 1 blobs (the RonDB file) go, the reused stay.
    repo.forget(&id(1)).unwrap();
    let gc = repo.gc(&CancellationToken::new()).unwrap();
    assert_eq!(gc.blobs_deleted, 2, "the RonDB file's two chunks: {gc:?}");
    assert_eq!(keys(&root, "blobs/").len(), legacy_blobs - 2);
    let r = repo
        .verify_backup(&id(2), &CancellationToken::new())
        .unwrap();
    assert!(r.is_ok(), "{:?}", r.damaged);
    assert!(repo.check().unwrap().problems.is_empty());

    // A release that knows only formats 1 and 2 is refused by the header.
    assert!(matches!(
        parse_header(&std::fs::read(root.join(HEADER_KEY)).unwrap(), &LocalStorage::new(&root).unwrap()),
        Ok(h) if h.version == 3
    ));
}

/// A pack mostly unreferenced after a prune is repacked: its live blobs copied into a new
/// pack, the old one deleted; every kept backup still reads, and a crash anywhere in between
/// leaves a repository that checks out (the next collection finishes).
#[test]
fn mostly_dead_packs_are_repacked() {
    let dir = tempfile::tempdir().unwrap();
    let (root, cache) = (dir.path().join("repo"), dir.path().join("cache"));
    let repo = open(&root, &cache);
    let file = |i: u64| bytes(i, 600 << 10);
    let mut w = repo.begin_backup(id(1), CancellationToken::new());
    for i in 0..60 {
        w.add_file(&format!("files/f{i}"), &mut &file(i)[..], meta())
            .unwrap();
    }
    w.commit(info()).unwrap();
    let packs_1: std::collections::BTreeSet<String> = keys(&root, "packs/").into_iter().collect();
    let mut w = repo.begin_backup(id(2), CancellationToken::new());
    for i in (0..6).chain(100..150) {
        w.add_file(&format!("files/f{i}"), &mut &file(i)[..], meta())
            .unwrap();
    }
    w.commit(info()).unwrap();
    repo.forget(&id(1)).unwrap();
    let gc = repo.gc(&CancellationToken::new()).unwrap();
    assert!(gc.packs_repacked >= 1, "{gc:?}");
    assert!(gc.bytes_freed > 20 << 20, "{gc:?}");
    let now: std::collections::BTreeSet<String> = keys(&root, "packs/").into_iter().collect();
    assert!(
        packs_1.is_disjoint(&now),
        "backup 1's packs are gone: {packs_1:?} {now:?}"
    );
    let r = repo
        .verify_backup(&id(2), &CancellationToken::new())
        .unwrap();
    assert!(r.is_ok(), "{:?}", r.damaged);
    let fresh = open(&root, &dir.path().join("cache2"));
    let r = fresh
        .verify_backup(&id(2), &CancellationToken::new())
        .unwrap();
    assert!(r.is_ok(), "{:?}", r.damaged);
    assert!(fresh.check().unwrap().problems.is_empty());
    assert_eq!(
        fresh.gc(&CancellationToken::new()).unwrap().packs_repacked,
        0
    );
}

/// A damaged index object stops what needs it, naming it; repair-index rebuilds the index from
/// the packs (a damaged pack named and left out), and everything reads again.
#[test]
fn a_damaged_or_lost_index_is_rebuilt_from_the_packs() {
    let dir = tempfile::tempdir().unwrap();
    let (root, cache) = (dir.path().join("repo"), dir.path().join("cache"));
    let repo = open(&root, &cache);
    let mut w = repo.begin_backup(id(1), CancellationToken::new());
    write_volume(&mut w, 100, |_| false, 0);
    let big = bytes(9, CHUNK_SIZE * 2);
    w.add_file("rondb/1/BACKUP-1.1.Data", &mut &big[..], meta())
        .unwrap();
    w.commit(info()).unwrap();
    let index = keys(&root, "index/");
    assert_eq!(index.len(), 1);
    let p = root.join(&index[0]);
    let mut b = std::fs::read(&p).unwrap();
    let n = b.len() / 2;
    b[n] ^= 0x10;
    std::fs::write(&p, &b).unwrap();
    let fresh = open(&root, &dir.path().join("c2"));
    let e = fresh
        .verify_backup(&id(1), &CancellationToken::new())
        .unwrap_err();
    assert!(
        matches!(e, RepoError::CorruptIndex { ref key, .. } if *key == index[0]),
        "{e}"
    );
    assert!(e.to_string().contains("repair-index"), "{e}");
    assert!(fresh.gc(&CancellationToken::new()).is_err(), "GC refuses");
    let r = fresh.repair_index(&CancellationToken::new()).unwrap();
    assert!(r.damaged_packs.is_empty(), "{r:?}");
    assert_eq!(r.index_objects_replaced, 1);
    assert!(r.blobs > 200, "{r:?}");
    assert!(!root.join(&index[0]).exists(), "the damaged object is gone");
    for c in ["c3", "c4"] {
        let again = open(&root, &dir.path().join(c));
        let v = again
            .verify_backup(&id(1), &CancellationToken::new())
            .unwrap();
        assert!(v.is_ok(), "{:?}", v.damaged);
        assert!(again.check().unwrap().problems.is_empty());
    }

    // Every index object lost, and one pack truncated: rebuilt without it, which is named.
    for k in keys(&root, "index/") {
        std::fs::remove_file(root.join(k)).unwrap();
    }
    let solo = keys(&root, "packs/")
        .into_iter()
        .max_by_key(|k| std::fs::metadata(root.join(k)).unwrap().len())
        .unwrap();
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(root.join(&solo))
        .unwrap();
    f.set_len(1000).unwrap();
    let again = open(&root, &dir.path().join("c5"));
    let r = again.repair_index(&CancellationToken::new()).unwrap();
    assert_eq!(r.damaged_packs.len(), 1, "{r:?}");
    assert!(r.damaged_packs[0].starts_with(&solo), "{r:?}");
    assert!(r.damaged_packs[0].contains("byte"), "{r:?}");
    let v = again
        .verify_backup(&id(1), &CancellationToken::new())
        .unwrap();
    assert_eq!(v.damaged.len(), 1, "only the RonDB file: {:?}", v.damaged);
    assert!(v.damaged[0].path.ends_with(".Data"));
}

/// HopsFS replicas as units: block and checksum file in one unit shared by the replicas of a
/// block, one record each; read back as two files; reused by a later backup without a read;
/// the metadata a replica costs.
#[test]
fn replicas_are_one_unit_and_one_record_each() {
    let dir = tempfile::tempdir().unwrap();
    let (root, cache) = (dir.path().join("repo"), dir.path().join("cache"));
    let repo = open(&root, &cache);
    let n = 3000u64;
    let leaf = |i: u64| {
        format!(
            "BP-1-127.0.0.1-1/current/finalized/subdir0/subdir{}",
            i / 256
        )
    };
    let write = |w: &mut BackupWriter, dn: u32, ids: &mut dyn Iterator<Item = u64>| {
        for i in ids {
            let block = bytes(i, 1024);
            let checksums = bytes(i + 77, 7 + 4 * 2);
            let d = format!("hopsfs/dn{dn}/vol1/current/{}", leaf(i));
            w.add_replica(
                &d,
                1_073_741_824 + i,
                1001 + i,
                &mut &block[..],
                1024,
                meta(),
                &checksums,
                meta(),
            )
            .unwrap();
        }
    };
    let mut w = repo.begin_backup(id(1), CancellationToken::new());
    for dn in 1..=3 {
        write(&mut w, dn, &mut (0..n));
    }
    let m1 = w.commit(info()).unwrap();
    assert_eq!(m1.streams.len(), 3);
    assert_eq!(m1.streams[0].records, n, "one record per replica");
    // Metadata per replica (pages, roots, index entries, the manifest), all three volumes.
    let size = |prefix: &str| -> u64 {
        keys(&root, prefix)
            .iter()
            .map(|k| std::fs::metadata(root.join(k)).unwrap().len())
            .sum()
    };
    let meta_packs: u64 = keys(&root, "packs/")
        .iter()
        .filter(|k| std::fs::read(root.join(k)).unwrap()[9] == 1)
        .map(|k| std::fs::metadata(root.join(k)).unwrap().len())
        .sum();
    let metadata = meta_packs + size("index/") + size("manifests/");
    let per = metadata as f64 / (3 * n) as f64;
    eprintln!("metadata per block file: {per:.1} B");
    assert!(per < 100.0, "{per:.1} bytes of metadata per block file");

    // Read back: block and checksum file, from the shared unit.
    let m = repo.read_manifest(&id(1)).unwrap();
    let files = stream_files(&repo, &m, &m.streams[1]);
    assert_eq!(files.len() as u64, 2 * n);
    let get = |suffix: &str| {
        let f = files.iter().find(|f| f.path.ends_with(suffix)).unwrap();
        let mut out = Vec::new();
        repo.restore_file(f, &mut out).unwrap();
        out
    };
    assert_eq!(get("/blk_1073741866"), bytes(42, 1024));
    assert_eq!(get("/blk_1073741866_1043.meta"), bytes(42 + 77, 15));
    let r = repo
        .verify_backup(&id(1), &CancellationToken::new())
        .unwrap();
    assert!(r.is_ok(), "{:?}", r.damaged);
    assert_eq!(r.files_checked, 6 * n);

    // A second backup reusing every replica (1 % gone, 1 % new): a small layer each.
    let before = meta_packs + size("index/") + size("manifests/");
    let mut w = repo.begin_backup(id(2), CancellationToken::new());
    for s in &m.streams {
        let entries = stream_files(&repo, &m, s);
        for pair in entries.chunks(2) {
            // Sorted by path: blk_<id> comes before blk_<id>_<gs>.meta only within one id;
            // find each block's checksum file by name.
            let (b, c) = if pair[0].path.ends_with(".meta") {
                (&pair[1], &pair[0])
            } else {
                (&pair[0], &pair[1])
            };
            let id_of = |p: &str| p.rsplit_once("blk_").unwrap().1.to_string();
            if id_of(&b.path).ends_with("00") {
                continue; // 1 % gone
            }
            let _ = id_of(&c.path);
            w.add_known_pair(&b.path, b, b.meta, &c.path, c, c.meta)
                .unwrap();
        }
    }
    // The same replica twice is refused, naming it (the spill's insert checks, not a lookup).
    let files = stream_files(&repo, &m, &m.streams[0]);
    let (b, c) = files
        .chunks(2)
        .map(|p| {
            if p[0].path.ends_with(".meta") {
                (&p[1], &p[0])
            } else {
                (&p[0], &p[1])
            }
        })
        .find(|(b, _)| !b.path.rsplit_once("blk_").unwrap().1.ends_with("00"))
        .expect("a replica the second backup kept");
    let e = w
        .add_known_pair(&b.path, b, b.meta, &c.path, c, c.meta)
        .unwrap_err();
    assert!(
        matches!(&e, RepoError::InvalidEntry { path, defect: EntryDefect::Duplicate } if *path == b.path),
        "{e}"
    );
    for dn in 1..=3 {
        write(&mut w, dn, &mut (n..n + n / 100));
    }
    let m2 = w.commit(info()).unwrap();
    assert!(m2
        .streams
        .iter()
        .all(|s| s.layers.len() == 1 && !s.root.is_empty()));
    let meta_packs2: u64 = keys(&root, "packs/")
        .iter()
        .filter(|k| std::fs::read(root.join(k)).unwrap()[9] == 1)
        .map(|k| std::fs::metadata(root.join(k)).unwrap().len())
        .sum();
    let after = meta_packs2 + size("index/") + size("manifests/");
    let second = (after - before) as f64 / before as f64;
    eprintln!(
        "second backup metadata: {:.3} % of the first",
        second * 100.0
    );
    assert!(
        second < 0.03,
        "the second backup's metadata is {:.2} % of the first's",
        second * 100.0
    );
    let r = repo
        .verify_backup(&id(2), &CancellationToken::new())
        .unwrap();
    assert!(r.is_ok(), "{:?}", r.damaged);
}

/// The file entries of stream `s` of backup `m`, in order.
fn stream_files(repo: &Repository, m: &Manifest, s: &StreamRef) -> Vec<FileEntry> {
    repo.stream_entries(m, s)
        .unwrap()
        .map(Result::unwrap)
        .filter_map(|e| match e {
            Entry::File(f) => Some(f),
            _ => None,
        })
        .collect()
}

/// A data pack as a node's agent builds it (plaintext repository): each blob's id is the
/// BLAKE3 of its content, its stored form a zstd frame. Returns the key, bytes and trailer.
fn agent_pack(contents: &[Vec<u8>]) -> (String, Vec<u8>, pack::Trailer) {
    let key = packer::pack_key(&crypto::random::<16>().unwrap());
    let mut w = pack::PackWriter::new(Vec::new(), pack::PackKind::Data).unwrap();
    for c in contents {
        let frame = zstd::bulk::compress(c, 3).unwrap();
        w.add(
            pack::BlobKind::Data,
            *blake3::hash(c).as_bytes(),
            &frame,
            c.len() as u32,
        )
        .unwrap();
    }
    let (bytes, trailer, size) = w.finish(None, &key, None).unwrap();
    assert_eq!(size, bytes.len() as u64);
    (key, bytes, trailer)
}

#[test]
fn packs_built_elsewhere_are_claimed_then_adopted_only_when_whole_and_as_reported() {
    let dir = tempfile::tempdir().unwrap();
    let (root, cache) = (dir.path().join("repo"), dir.path().join("cache"));
    let repo = open(&root, &cache);
    repo.sync_index().unwrap();
    let store = repo.storage().clone();
    let mut p = packer::Packer::new(repo.clone()).unwrap();
    let (a, b) = (bytes(1, 3000), bytes(2, 5000));
    let (ida, idb) = (*blake3::hash(&a).as_bytes(), *blake3::hash(&b).as_bytes());

    // Asked twice in one batch and again later: missing once, then claimed (present).
    assert_eq!(
        p.claim_missing(&[ida, idb, ida]).unwrap(),
        [true, true, false]
    );
    assert_eq!(p.claim_missing(&[idb]).unwrap(), [false]);
    assert_eq!(p.unreported_claims(), 2);

    let (key, packed, trailer) = agent_pack(&[a.clone(), b.clone()]);
    let size = packed.len() as u64;
    // Not uploaded yet, uploaded cut short, or reported with another size: refused.
    let refused = |p: &mut packer::Packer, size: u64, t: &pack::Trailer| match p
        .adopt(&key, size, t)
        .unwrap_err()
    {
        RepoError::AdoptRefused { pack, reason } => {
            assert_eq!(pack, key);
            reason
        }
        e => panic!("{e}"),
    };
    refused(&mut p, size, &trailer);
    store.put(&key, &packed[..packed.len() - 10]).unwrap();
    let why = refused(&mut p, size, &trailer);
    assert!(why.contains("is not"), "{why}");
    store.put(&key, &packed).unwrap();
    let why = refused(&mut p, size - 1, &trailer);
    assert!(why.contains("is not"), "{why}");
    // Whole, but reported as holding something else.
    let mut fewer = trailer.clone();
    fewer.entries.pop();
    let why = refused(&mut p, size, &fewer);
    assert!(why.contains("not the 1 reported"), "{why}");
    // A pack with a blob nobody claimed (it would be stored twice): refused.
    let (other, other_bytes, other_trailer) = agent_pack(&[a.clone(), bytes(3, 100)]);
    store.put(&other, &other_bytes).unwrap();
    match p
        .adopt(&other, other_bytes.len() as u64, &other_trailer)
        .unwrap_err()
    {
        RepoError::AdoptRefused { reason, .. } => {
            assert!(reason.contains("was not claimed"), "{reason}")
        }
        e => panic!("{e}"),
    }
    assert_eq!(p.unreported_claims(), 2, "refusals change no claim");

    // Whole and as reported: adopted; indexed at finish, found like the packer's own blobs.
    p.adopt(&key, size, &trailer).unwrap();
    assert_eq!(p.unreported_claims(), 0);
    assert!(p.has(&ida).unwrap() && p.has(&idb).unwrap());
    p.finish().unwrap();
    let pack_id = packer::pack_of_key(&key).unwrap();
    for (id, content) in [(ida, &a), (idb, &b)] {
        let loc = repo.with_cache(|c| c.lookup(&id)).unwrap().unwrap();
        assert_eq!(loc.pack, pack_id);
        let stored = store
            .get_range(&key, u64::from(loc.offset), u64::from(loc.stored_len))
            .unwrap();
        assert_eq!(&zstd::bulk::decompress(&stored, 1 << 20).unwrap(), content);
    }

    // A claim never reported stops the index (and so the commit).
    let mut p = packer::Packer::new(repo.clone()).unwrap();
    assert_eq!(p.claim_missing(&[[9u8; 32]]).unwrap(), [true]);
    match p.finish().unwrap_err() {
        e @ RepoError::Unreported { count: 1 } => {
            assert!(e.to_string().contains("never reported"), "{e}")
        }
        e => panic!("{e}"),
    }
}
