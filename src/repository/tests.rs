use std::io::{self, Read};
use std::path::Path;
use std::sync::{Arc, Mutex};

use chrono::TimeZone;
use tokio_util::sync::CancellationToken;

use super::*;

fn open(root: &Path) -> Repository {
    let storage = Arc::new(LocalStorage::new(root).unwrap());
    Repository::open_or_init(storage, 3).unwrap()
}

pub(super) fn id(n: u32) -> BackupId {
    BackupId::parse(&format!("20260101T0000{n:02}Z")).unwrap()
}

pub(super) fn meta() -> FileMeta {
    FileMeta {
        mode: 0o644,
        mtime: 1_767_225_600,
        uid: 1000,
        gid: 1000,
    }
}

pub(super) fn info() -> BackupInfo {
    let t = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
    BackupInfo {
        started_at: t,
        finished_at: t,
        hostname: "head".into(),
        hopsdr_version: "test".into(),
        components: vec![ComponentInfo {
            name: "hopsfs".into(),
            state: "complete".into(),
            logical_bytes: 0,
            files: 0,
        }],
        facts: Default::default(),
    }
}

/// Deterministic, semi-compressible bytes (about 2:1 with zstd -1): half the 8-byte words are
/// random, half come from a small vocabulary.
struct SemiRandom {
    state: u64,
    left: u64,
}

impl SemiRandom {
    fn new(seed: u64, len: u64) -> Self {
        SemiRandom {
            state: seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1,
            left: len,
        }
    }

    fn next(&mut self) -> u64 {
        self.state ^= self.state << 13;
        self.state ^= self.state >> 7;
        self.state ^= self.state << 17;
        self.state
    }
}

impl Read for SemiRandom {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        const WORDS: [&[u8; 8]; 8] = [
            b"hopsfs  ",
            b"block_00",
            b"rondb   ",
            b"feature ",
            b"store   ",
            b"\0\0\0\0\0\0\0\0",
            b"metadata",
            b"        ",
        ];
        let n = (buf.len() as u64).min(self.left) as usize / 8 * 8;
        let n = if n == 0 {
            (self.left as usize).min(buf.len())
        } else {
            n
        };
        for word in buf[..n].chunks_mut(8) {
            let r = self.next();
            let bytes = if r & 1 == 0 {
                r.to_le_bytes()
            } else {
                *WORDS[(r >> 1) as usize % WORDS.len()]
            };
            word.copy_from_slice(&bytes[..word.len()]);
        }
        self.left -= n as u64;
        Ok(n)
    }
}

pub(super) fn data(seed: u64, len: usize) -> Vec<u8> {
    let mut v = Vec::with_capacity(len);
    SemiRandom::new(seed, len as u64)
        .read_to_end(&mut v)
        .unwrap();
    assert_eq!(v.len(), len);
    v
}

pub(super) fn restore(repo: &Repository, entry: &FileEntry) -> Result<Vec<u8>, RepoError> {
    let mut out = Vec::new();
    let n = repo.restore_file(entry, &mut out)?;
    assert_eq!(n, out.len() as u64);
    Ok(out)
}

/// The on-disk path of the blob holding `entry`'s chunk `i`.
pub(super) fn blob_path(root: &Path, entry: &FileEntry, i: usize) -> std::path::PathBuf {
    root.join(blob_key(&entry.chunks[i]))
}

fn file_entry<'m>(m: &'m Manifest, path: &str) -> &'m FileEntry {
    m.files().find(|f| f.path == path).unwrap()
}

/// Writes a backup of a few files of every shape; returns them with the manifest.
fn sample_backup(
    repo: &Repository,
    n: u32,
) -> (Manifest, Vec<(&'static str, Vec<u8>)>, WriteStats) {
    let files = vec![
        ("empty", Vec::new()),
        ("small.txt", b"hello, hopsworks\n".to_vec()),
        ("exact", data(1, CHUNK_SIZE)),
        ("d/big", data(2, 2 * CHUNK_SIZE + 12_345)),
    ];
    let mut w = repo.begin_backup(id(n), CancellationToken::new());
    w.add_dir("d", meta()).unwrap();
    for (path, content) in &files {
        let entry = w.add_file(path, &mut &content[..], meta()).unwrap();
        assert_eq!(entry.size, content.len() as u64);
        assert_eq!(entry.hash, blake3::hash(content).to_hex().as_str());
    }
    w.add_symlink("d/link", "../small.txt", meta()).unwrap();
    let stats = w.stats();
    let m = w.commit(info()).unwrap();
    (m, files, stats)
}

#[test]
fn round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let repo = open(dir.path());
    let (m, files, stats) = sample_backup(&repo, 1);

    assert_eq!(repo.list_backups().unwrap(), vec![id(1)]);
    let read = repo.read_manifest(&id(1)).unwrap();
    assert_eq!(read, m);
    assert_eq!(read.format_version, FORMAT_VERSION);
    assert_eq!(read.info.components[0].name, "hopsfs");

    let chunks: Vec<usize> = files
        .iter()
        .map(|(p, _)| file_entry(&read, p).chunks.len())
        .collect();
    assert_eq!(chunks, vec![0, 1, 1, 3]);
    for (path, content) in &files {
        assert_eq!(
            &restore(&repo, file_entry(&read, path)).unwrap(),
            content,
            "{path}"
        );
    }
    assert!(read.entries.contains(&Entry::Dir {
        path: "d".into(),
        meta: meta()
    }));
    assert!(read.entries.contains(&Entry::Symlink {
        path: "d/link".into(),
        target: "../small.txt".into(),
        meta: meta()
    }));

    let logical: u64 = files.iter().map(|(_, c)| c.len() as u64).sum();
    assert_eq!(stats.logical_bytes, logical);
    assert_eq!(stats.files, 4);
    assert_eq!(stats.new_blobs, 5);
    assert_eq!(stats.reused_blobs, 0);
    assert!(
        stats.stored_bytes > 0 && stats.stored_bytes < logical,
        "{stats:?}"
    );

    let report = repo
        .verify_backup(&id(1), &CancellationToken::new())
        .unwrap();
    assert!(report.is_ok(), "{report:?}");
    assert_eq!(report.files_checked, 4);
    assert_eq!(report.blobs_checked, 5);
    assert_eq!(report.bytes_checked, logical);
    assert!(repo.stored_bytes().unwrap() >= stats.stored_bytes);
    assert!(repo.available_bytes().unwrap().unwrap() > 0);
    assert_eq!(repo.referenced_blobs().unwrap().len(), 5);
    assert!(repo.describe().starts_with("local:"));

    // Reopening finds the same repository.
    let again = open(dir.path());
    assert_eq!(again.header(), repo.header());
    assert_eq!(again.header().chunk_size, CHUNK_SIZE as u64);
}

#[test]
fn second_backup_of_same_data_writes_no_blobs() {
    let dir = tempfile::tempdir().unwrap();
    let repo = open(dir.path());
    sample_backup(&repo, 1);
    let before = repo.stored_bytes().unwrap();
    let (m, files, stats) = sample_backup(&repo, 2);
    assert_eq!(stats.new_blobs, 0, "{stats:?}");
    assert_eq!(stats.reused_blobs, 5);
    assert_eq!(stats.stored_bytes, 0);
    // Only the second manifest was added.
    let manifest_size = repo.storage().get(&manifest_key(&id(2))).unwrap().len() as u64;
    assert_eq!(repo.stored_bytes().unwrap(), before + manifest_size);
    assert_eq!(repo.list_backups().unwrap(), vec![id(1), id(2)]);
    for (path, content) in &files {
        assert_eq!(&restore(&repo, file_entry(&m, path)).unwrap(), content);
    }
}

#[test]
fn repeated_chunks_in_one_file_are_stored_once() {
    let dir = tempfile::tempdir().unwrap();
    let repo = open(dir.path());
    let zeros = vec![0u8; 5 * CHUNK_SIZE];
    let mut w = repo.begin_backup(id(1), CancellationToken::new());
    let e = w.add_file("sparse", &mut &zeros[..], meta()).unwrap();
    assert_eq!(e.chunks.len(), 5);
    assert_eq!(w.stats().new_blobs, 1, "{:?}", w.stats());
    assert_eq!(w.stats().reused_blobs, 4);
    let m = w.commit(info()).unwrap();
    assert_eq!(restore(&repo, file_entry(&m, "sparse")).unwrap(), zeros);
}

#[test]
fn progress_is_reported_per_chunk() {
    let dir = tempfile::tempdir().unwrap();
    let repo = open(dir.path());
    let seen = Arc::new(Mutex::new(Vec::new()));
    let mut w = repo.begin_backup(id(1), CancellationToken::new());
    let s = seen.clone();
    w.set_progress(Box::new(move |st| s.lock().unwrap().push(st.logical_bytes)));
    let content = data(3, 3 * CHUNK_SIZE);
    w.add_file("f", &mut &content[..], meta()).unwrap();
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 3);
    assert_eq!(*seen.last().unwrap(), content.len() as u64);
}

fn flip_byte(path: &Path) {
    let mut bytes = std::fs::read(path).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x55;
    std::fs::write(path, bytes).unwrap();
}

#[test]
fn tampered_blob_is_detected_by_restore_and_verify() {
    let dir = tempfile::tempdir().unwrap();
    let repo = open(dir.path());
    let (m, _, _) = sample_backup(&repo, 1);
    let big = file_entry(&m, "d/big");
    let damaged_key = blob_key(&big.chunks[1]);
    flip_byte(&blob_path(dir.path(), big, 1));

    match restore(&repo, big) {
        Err(RepoError::CorruptBlob { key, path, .. }) => {
            assert_eq!(key, damaged_key);
            assert_eq!(path, "d/big");
        }
        other => panic!("expected a corrupt blob, got {other:?}"),
    }
    // The other files are fine.
    restore(&repo, file_entry(&m, "exact")).unwrap();

    let report = repo
        .verify_backup(&id(1), &CancellationToken::new())
        .unwrap();
    assert_eq!(report.damaged.len(), 1, "{report:?}");
    let d = &report.damaged[0];
    assert_eq!(d.path, "d/big");
    assert_eq!(d.blob.as_ref().map(blob_key), Some(damaged_key.clone()));
    assert_eq!(d.code, "corrupt_blob");
    assert!(
        d.reason.contains(&damaged_key) && d.reason.contains("d/big"),
        "{}",
        d.reason
    );
    assert_eq!(report.files_checked, 4);
    assert_eq!(report.blobs_checked, 5);
}

#[test]
fn missing_and_swapped_blobs_are_detected() {
    let dir = tempfile::tempdir().unwrap();
    let repo = open(dir.path());
    let (m, _, _) = sample_backup(&repo, 1);
    let big = file_entry(&m, "d/big");
    // Chunk 0 replaced by a valid zstd frame of other content; chunk 2 deleted.
    std::fs::copy(blob_path(dir.path(), big, 1), blob_path(dir.path(), big, 0)).unwrap();
    std::fs::remove_file(blob_path(dir.path(), big, 2)).unwrap();

    match restore(&repo, big) {
        Err(RepoError::CorruptBlob {
            defect: BlobDefect::HashMismatch { expected, .. },
            ..
        }) => assert_eq!(expected, big.chunks[0].as_str()),
        other => panic!("expected a hash mismatch, got {other:?}"),
    }
    let report = repo
        .verify_backup(&id(1), &CancellationToken::new())
        .unwrap();
    let codes: Vec<_> = report.damaged.iter().map(|d| d.code.as_str()).collect();
    assert_eq!(codes, vec!["corrupt_blob", "blob_missing"], "{report:?}");
    assert_eq!(report.damaged[1].blob.as_ref(), Some(&big.chunks[2]));
}

#[test]
fn entry_not_matching_its_chunks_is_detected() {
    let dir = tempfile::tempdir().unwrap();
    let repo = open(dir.path());
    let (m, _, _) = sample_backup(&repo, 1);
    let mut e = file_entry(&m, "small.txt").clone();
    e.hash = "0".repeat(64);
    assert!(matches!(
        restore(&repo, &e),
        Err(RepoError::CorruptFile {
            defect: FileDefect::HashMismatch { .. },
            ..
        })
    ));
    let mut e = file_entry(&m, "small.txt").clone();
    e.size += 1;
    assert!(matches!(
        restore(&repo, &e),
        Err(RepoError::CorruptFile {
            defect: FileDefect::SizeMismatch { .. },
            ..
        })
    ));
    let mut e = file_entry(&m, "small.txt").clone();
    e.path = "../../etc/passwd".into();
    assert!(matches!(
        restore(&repo, &e),
        Err(RepoError::InvalidEntry { .. })
    ));
}

#[test]
fn tampered_manifest_is_detected() {
    let dir = tempfile::tempdir().unwrap();
    let repo = open(dir.path());
    sample_backup(&repo, 1);
    let path = dir.path().join(manifest_key(&id(1)));
    let stored = std::fs::read(&path).unwrap();

    // Edited body, recompressed: the checksum no longer matches.
    let doc = zstd::decode_all(&stored[..]).unwrap();
    let text = String::from_utf8(doc).unwrap();
    assert!(text.starts_with("{\"checksum\":\""));
    let edited = text.replacen("\"size\":17", "\"size\":18", 1);
    assert_ne!(edited, text);
    std::fs::write(&path, zstd::encode_all(edited.as_bytes(), 1).unwrap()).unwrap();
    match repo.read_manifest(&id(1)) {
        Err(RepoError::CorruptManifest {
            id: bad,
            defect: ManifestDefect::ChecksumMismatch { .. },
            ..
        }) => assert_eq!(bad, id(1)),
        other => panic!("expected a checksum mismatch, got {other:?}"),
    }
    assert!(matches!(
        repo.verify_backup(&id(1), &CancellationToken::new()),
        Err(RepoError::CorruptManifest { .. })
    ));

    // A flipped byte in the compressed object.
    let mut flipped = stored.clone();
    let at = flipped.len() / 2;
    flipped[at] ^= 0xff;
    std::fs::write(&path, flipped).unwrap();
    assert!(matches!(
        repo.read_manifest(&id(1)),
        Err(RepoError::CorruptManifest { .. })
    ));

    // A valid manifest under another backup's key.
    std::fs::write(&path, &stored).unwrap();
    repo.read_manifest(&id(1)).unwrap();
    std::fs::copy(&path, dir.path().join(manifest_key(&id(2)))).unwrap();
    assert!(matches!(
        repo.read_manifest(&id(2)),
        Err(RepoError::CorruptManifest {
            defect: ManifestDefect::IdMismatch { .. },
            ..
        })
    ));
}

#[test]
fn backup_without_commit_does_not_exist() {
    let dir = tempfile::tempdir().unwrap();
    let repo = open(dir.path());
    let content = data(4, CHUNK_SIZE + 1);
    let mut w = repo.begin_backup(id(1), CancellationToken::new());
    w.add_file("f", &mut &content[..], meta()).unwrap();
    drop(w);
    assert!(repo.list_backups().unwrap().is_empty());
    assert!(matches!(
        repo.read_manifest(&id(1)),
        Err(RepoError::BackupNotFound { .. })
    ));
    assert!(matches!(
        repo.verify_backup(&id(1), &CancellationToken::new()),
        Err(RepoError::BackupNotFound { .. })
    ));
    // Its blobs were written deferred: none is under its name until a commit flushes them.
    assert_eq!(repo.storage().list("blobs/").unwrap().len(), 0);
    assert!(repo.referenced_blobs().unwrap().is_empty());
    // A later commit makes them durable and visible (they are content-addressed and complete).
    sample_backup(&repo, 2);
    assert!(repo.storage().list("blobs/").unwrap().len() >= 2);
}

#[test]
fn commit_refuses_to_overwrite_a_backup() {
    let dir = tempfile::tempdir().unwrap();
    let repo = open(dir.path());
    sample_backup(&repo, 1);
    let w = repo.begin_backup(id(1), CancellationToken::new());
    assert!(matches!(
        w.commit(info()),
        Err(RepoError::BackupExists { .. })
    ));
    assert_eq!(repo.read_manifest(&id(1)).unwrap().entries.len(), 6);
}

#[test]
fn logical_paths_are_validated() {
    for good in ["a", "a/b", "a b/c.d", "..a/b..", ".hidden", "a/.b"] {
        assert_eq!(validate_logical_path(good), Ok(()), "{good}");
    }
    let bad = [
        ("", PathDefect::Empty),
        ("/etc/passwd", PathDefect::Absolute),
        ("a/../../b", PathDefect::DotComponent),
        ("..", PathDefect::DotComponent),
        ("./a", PathDefect::DotComponent),
        ("a//b", PathDefect::EmptyComponent),
        ("a/", PathDefect::EmptyComponent),
        ("a\0b", PathDefect::Nul),
    ];
    for (path, defect) in bad {
        assert_eq!(validate_logical_path(path), Err(defect), "{path:?}");
    }
}

#[test]
fn bad_entries_are_refused_when_added() {
    let dir = tempfile::tempdir().unwrap();
    let repo = open(dir.path());
    let mut w = repo.begin_backup(id(1), CancellationToken::new());
    for path in ["", "/abs", "a/../b", "a//b", "..", "a/"] {
        let err = w.add_file(path, &mut &b"x"[..], meta()).unwrap_err();
        assert!(
            matches!(
                err,
                RepoError::InvalidEntry {
                    defect: EntryDefect::Path(_),
                    ..
                }
            ),
            "{path:?}: {err:?}"
        );
        assert!(w.add_dir(path, meta()).is_err());
        assert!(w.add_symlink(path, "t", meta()).is_err());
    }
    w.add_file("a", &mut &b"x"[..], meta()).unwrap();
    assert!(matches!(
        w.add_dir("a", meta()),
        Err(RepoError::InvalidEntry {
            defect: EntryDefect::Duplicate,
            ..
        })
    ));
    assert!(w.add_symlink("s", "", meta()).is_err());
    // A file below a symlink would be written through the link on restore.
    w.add_symlink("s", "/etc", meta()).unwrap();
    w.add_file("s/passwd", &mut &b"root::0:0::/:/bin/sh\n"[..], meta())
        .unwrap();
    match w.commit(info()) {
        Err(RepoError::InvalidEntry {
            path,
            defect: EntryDefect::UnderNonDirectory { ancestor },
        }) => {
            assert_eq!(path, "s/passwd");
            assert_eq!(ancestor, "s");
        }
        other => panic!("expected an entry under a symlink to be refused, got {other:?}"),
    }
    assert!(repo.list_backups().unwrap().is_empty());
}

/// Stores `entries` as backup `n`'s manifest with a valid checksum, as an attacker could.
fn craft_manifest(repo: &Repository, n: u32, entries: Vec<Entry>) {
    let m = Manifest {
        format_version: FORMAT_VERSION,
        id: id(n),
        info: info(),
        entries,
        streams: vec![],
    };
    let key = manifest_key(&id(n));
    let encoded = manifest::encode(&m, &key, 3).unwrap();
    repo.storage().put(&key, &encoded).unwrap();
}

#[test]
fn crafted_manifests_with_bad_entries_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let repo = open(dir.path());
    let file = |path: &str| {
        Entry::File(FileEntry {
            path: path.into(),
            size: 1,
            meta: meta(),
            hash: "a".repeat(64),
            chunks: vec![BlobId::parse(&"b".repeat(64)).unwrap()],
            units: vec![],
            skip: 0,
        })
    };
    let symlink = |path: &str| Entry::Symlink {
        path: path.into(),
        target: "/".into(),
        meta: meta(),
    };
    let cases: Vec<(Vec<Entry>, &str)> = vec![
        (vec![file("../../etc/cron.d/x")], "../../etc/cron.d/x"),
        (vec![file("/etc/shadow")], "/etc/shadow"),
        (vec![file("a"), file("a")], "a"),
        (vec![symlink("l"), file("l/etc/shadow")], "l/etc/shadow"),
        (vec![file("f"), file("f/g")], "f/g"),
        (
            vec![Entry::File(FileEntry {
                path: "h".into(),
                size: 1,
                meta: meta(),
                hash: "../../x".into(),
                chunks: vec![],
                units: vec![],
                skip: 0,
            })],
            "h",
        ),
        (
            vec![Entry::File(FileEntry {
                path: "c".into(),
                size: 1,
                meta: meta(),
                hash: "a".repeat(64),
                chunks: vec![BlobId::unchecked("../../../etc/passwd")],
                units: vec![],
                skip: 0,
            })],
            "c",
        ),
    ];
    for (n, (entries, bad_path)) in cases.into_iter().enumerate() {
        let n = n as u32 + 1;
        craft_manifest(&repo, n, entries);
        match repo.read_manifest(&id(n)) {
            Err(RepoError::CorruptManifest {
                defect: ManifestDefect::InvalidEntry { path, .. },
                ..
            }) => assert_eq!(path, bad_path),
            other => panic!("case {n}: expected an invalid entry, got {other:?}"),
        }
    }
    // And a sound crafted one is accepted (the checks are not just refusing everything).
    craft_manifest(
        &repo,
        50,
        vec![
            Entry::Dir {
                path: "d".into(),
                meta: meta(),
            },
            file("d/f"),
        ],
    );
    repo.read_manifest(&id(50)).unwrap();
}

fn put_header(root: &Path, json: &str) -> Result<Repository, RepoError> {
    let storage = Arc::new(LocalStorage::new(root).unwrap());
    storage.put(HEADER_KEY, json.as_bytes()).unwrap();
    Repository::open_or_init(storage, 3)
}

#[test]
fn header_is_checked() {
    let dir = tempfile::tempdir().unwrap();
    let repo = open(dir.path());
    let header: serde_json::Value =
        serde_json::from_slice(&repo.storage().get(HEADER_KEY).unwrap()).unwrap();
    assert_eq!(header["format"], "hopsdr-repository");
    assert_eq!(header["version"], 1);
    assert_eq!(header["chunk_size"], CHUNK_SIZE as u64);
    assert_eq!(header["id"].as_str().unwrap().len(), 32);

    let err = put_header(
        dir.path(),
        r#"{"format":"hopsdr-repository","version":4,"id":"x","chunk_size":1,"future":true}"#,
    )
    .unwrap_err();
    assert!(
        matches!(
            err,
            RepoError::UnsupportedVersion {
                found: 4,
                supported: 3,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("version 4"), "{err}");

    let err = put_header(dir.path(), r#"{"format":"restic","version":1}"#).unwrap_err();
    assert!(matches!(err, RepoError::ForeignFormat { ref found, .. } if found == "restic"));
    let err = put_header(dir.path(), "not json").unwrap_err();
    assert!(matches!(err, RepoError::CorruptHeader { .. }), "{err:?}");
    let err = put_header(
        dir.path(),
        r#"{"format":"hopsdr-repository","version":1,"id":"x","created":"2026-01-01T00:00:00Z",
            "chunk_size":1,"hash":"blake3","compression":"zstd"}"#,
    )
    .unwrap_err();
    assert!(
        matches!(
            err,
            RepoError::CorruptHeader {
                defect: HeaderDefect::ChunkSize(1),
                ..
            }
        ),
        "{err:?}"
    );
}

#[test]
fn store_with_backups_but_no_header_is_not_reinitialised() {
    let dir = tempfile::tempdir().unwrap();
    let repo = open(dir.path());
    sample_backup(&repo, 1);
    std::fs::remove_file(dir.path().join(HEADER_KEY)).unwrap();
    let storage = Arc::new(LocalStorage::new(dir.path()).unwrap());
    assert!(matches!(
        Repository::open_or_init(storage.clone(), 3),
        Err(RepoError::MissingHeader { .. })
    ));
    assert!(matches!(
        Repository::open_or_init(storage, 99),
        Err(RepoError::InvalidCompressionLevel { level: 99, .. })
    ));
}

/// A reader that cancels `token` once it has handed out `after` bytes.
struct CancellingReader {
    inner: SemiRandom,
    token: CancellationToken,
    after: u64,
    done: u64,
}

impl Read for CancellingReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.done += n as u64;
        if self.done >= self.after {
            self.token.cancel();
        }
        Ok(n)
    }
}

#[test]
fn cancellation_stops_between_chunks_and_prevents_commit() {
    let dir = tempfile::tempdir().unwrap();
    let repo = open(dir.path());
    let token = CancellationToken::new();
    let mut w = repo.begin_backup(id(1), token.clone());
    w.add_file("before", &mut &b"kept"[..], meta()).unwrap();
    let mut reader = CancellingReader {
        inner: SemiRandom::new(5, 64 * CHUNK_SIZE as u64),
        token: token.clone(),
        after: 2 * CHUNK_SIZE as u64,
        done: 0,
    };
    let err = w.add_file("huge", &mut reader, meta()).unwrap_err();
    assert!(matches!(err, RepoError::Cancelled), "{err:?}");
    assert_eq!(err.code(), "cancelled");
    // It stopped soon after the token was cancelled, not at the end of the file.
    assert!(
        reader.done <= 6 * CHUNK_SIZE as u64,
        "read {} bytes",
        reader.done
    );
    assert!(matches!(
        w.add_file("after", &mut &b"x"[..], meta()),
        Err(RepoError::Cancelled)
    ));
    assert!(matches!(w.commit(info()), Err(RepoError::Cancelled)));
    assert!(repo.list_backups().unwrap().is_empty());
}

struct FailingReader(usize);

impl Read for FailingReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.0 == 0 {
            return Err(io::Error::other("disk on fire"));
        }
        let n = self.0.min(buf.len());
        buf[..n].fill(7);
        self.0 -= n;
        Ok(n)
    }
}

#[test]
fn read_errors_name_the_file_and_leave_the_backup_usable() {
    let dir = tempfile::tempdir().unwrap();
    let repo = open(dir.path());
    let mut w = repo.begin_backup(id(1), CancellationToken::new());
    for (path, len) in [("early", 10), ("late", 3 * CHUNK_SIZE + 5)] {
        match w.add_file(path, &mut FailingReader(len), meta()) {
            Err(RepoError::ReadSource { path: p, .. }) => assert_eq!(p, path),
            other => panic!("expected a read error, got {other:?}"),
        }
    }
    // The failed files are not in the backup, and their paths can be used again.
    w.add_file("late", &mut &b"second try"[..], meta()).unwrap();
    let m = w.commit(info()).unwrap();
    assert_eq!(m.entries.len(), 1);
    assert_eq!(
        restore(&repo, file_entry(&m, "late")).unwrap(),
        b"second try"
    );
}

#[test]
fn local_storage_basics() {
    let dir = tempfile::tempdir().unwrap();
    let s = LocalStorage::new(dir.path().join("r")).unwrap();
    assert!(s.describe().ends_with("/r"));
    assert!(s.get("a/b").unwrap_err().is_not_found());
    assert!(!s.exists("a/b").unwrap());
    s.put("a/b", b"one").unwrap();
    s.put("a/b", b"two").unwrap();
    s.put("a/c/d", b"three").unwrap();
    s.put("ab", b"four").unwrap();
    assert_eq!(s.get("a/b").unwrap(), b"two");
    assert!(s.exists("a/b").unwrap());
    let keys = |p: &str| -> Vec<String> { s.list(p).unwrap().into_iter().map(|o| o.key).collect() };
    assert_eq!(keys(""), vec!["a/b", "a/c/d", "ab"]);
    assert_eq!(keys("a"), vec!["a/b", "a/c/d", "ab"]);
    assert_eq!(keys("a/"), vec!["a/b", "a/c/d"]);
    assert_eq!(keys("a/c"), vec!["a/c/d"]);
    assert_eq!(keys("zz/"), Vec::<String>::new());
    assert_eq!(s.list("a/c/").unwrap()[0].size, 5);
    s.delete("a/b").unwrap();
    s.delete("a/b").unwrap();
    assert!(!s.exists("a/b").unwrap());

    for bad in [
        "",
        "/etc/passwd",
        "a/../b",
        "a//b",
        "a/",
        ".tmp-1-1",
        "a/.x",
        "a b",
        "ä",
    ] {
        assert!(
            matches!(s.put(bad, b"x"), Err(StorageError::InvalidKey { .. })),
            "{bad:?}"
        );
        assert!(s.get(bad).is_err() && s.exists(bad).is_err() && s.delete(bad).is_err());
    }
    assert!(s.list("../").is_err());
    assert!(s.available_bytes().unwrap().unwrap() > 0);
}

#[test]
fn local_storage_ignores_and_removes_stale_temp_files() {
    let dir = tempfile::tempdir().unwrap();
    let s = LocalStorage::new(dir.path()).unwrap();
    s.put("blobs/ab/abcd", b"blob").unwrap();
    // What a crash between write and rename leaves.
    let stale = dir.path().join("blobs/ab/.tmp-4194304-7");
    std::fs::write(&stale, b"partial").unwrap();
    let own = dir
        .path()
        .join(format!("blobs/ab/.tmp-{}-99", std::process::id()));
    std::fs::write(&own, b"in flight").unwrap();
    let keys: Vec<_> = s.list("").unwrap().into_iter().map(|o| o.key).collect();
    assert_eq!(keys, vec!["blobs/ab/abcd"]);
    assert_eq!(s.remove_stale_temp().unwrap(), 1);
    assert!(!stale.exists());
    assert!(
        own.exists(),
        "a temp file of this process may be a put in progress"
    );
}

#[test]
fn local_storage_put_is_atomic() {
    let dir = tempfile::tempdir().unwrap();
    let s = Arc::new(LocalStorage::new(dir.path()).unwrap());
    let a = vec![b'a'; 3 << 20];
    let b = vec![b'b'; 1 << 20];
    s.put("k", &a).unwrap();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reader = {
        let (s, stop, a, b) = (s.clone(), stop.clone(), a.clone(), b.clone());
        std::thread::spawn(move || {
            let mut reads = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let got = s.get("k").unwrap();
                assert!(
                    got == a || got == b,
                    "saw a partial object of {} bytes",
                    got.len()
                );
                let listed = s.list("").unwrap();
                assert_eq!(listed.len(), 1, "{listed:?}");
                assert!(listed[0].size == a.len() as u64 || listed[0].size == b.len() as u64);
                reads += 1;
            }
            reads
        })
    };
    for i in 0..30 {
        s.put("k", if i % 2 == 0 { &b } else { &a }).unwrap();
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    assert!(reader.join().unwrap() > 0);
    // No temp file is left behind.
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(names, vec!["k"]);
}

#[test]
fn errors_name_their_object() {
    let e = RepoError::CorruptBlob {
        key: "blobs/ab/abc".into(),
        path: "rondb/BACKUP-1.ctl".into(),
        defect: BlobDefect::HashMismatch {
            expected: "abc".into(),
            actual: "def".into(),
        },
    };
    assert_eq!(
        e.to_string(),
        "blob 'blobs/ab/abc' of file 'rondb/BACKUP-1.ctl' is corrupt: its content hashes to def, \
         not abc"
    );
    assert!(e.is_corruption());
    assert_eq!(e.code(), "corrupt_blob");
}

/// Throughput on 512 MiB of semi-compressible data, against `tar -cf - DIR | zstd -1 -T0`, and
/// against the alternative design (zstd's own threads inside each chunk, one chunk at a time).
/// Run with: cargo test --release --lib repository::tests::throughput -- --ignored --nocapture
#[test]
#[ignore]
fn throughput_512mib() {
    use std::time::Instant;
    const LEN: u64 = 512 << 20;
    let dir = tempfile::tempdir_in(std::env::var("BENCH_DIR").unwrap_or("/tmp".into())).unwrap();
    let src_dir = dir.path().join("src");
    std::fs::create_dir(&src_dir).unwrap();
    let src = src_dir.join("data");
    io::copy(
        &mut SemiRandom::new(42, LEN),
        &mut std::fs::File::create(&src).unwrap(),
    )
    .unwrap();
    // Warm the page cache evenly for all contenders.
    std::fs::read(&src).unwrap();
    let mb = LEN as f64 / (1 << 20) as f64;

    let t = Instant::now();
    let status = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "tar -cf - -C {} data | zstd -q -1 -T0 -o {}",
            src_dir.display(),
            dir.path().join("tar.zst").display()
        ))
        .status()
        .unwrap();
    assert!(status.success());
    let tar_rate = mb / t.elapsed().as_secs_f64();
    let tar_size = std::fs::metadata(dir.path().join("tar.zst")).unwrap().len();
    println!("tar | zstd -1 -T0: {tar_rate:.0} MiB/s, {tar_size} bytes");

    let mut best: std::collections::BTreeMap<String, f64> = Default::default();
    let mut record = |name: String, secs: f64| {
        let rate = mb / secs;
        let e = best.entry(name).or_insert(0.0);
        *e = e.max(rate);
    };
    for round in 0..5 {
        let t = Instant::now();
        let status = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!(
                "tar -cf - -C {} data | zstd -q -f -1 -T0 -o {}",
                src_dir.display(),
                dir.path().join("tar.zst").display()
            ))
            .status()
            .unwrap();
        assert!(status.success());
        record("tar | zstd -1 -T0".into(), t.elapsed().as_secs_f64());

        for workers in [2, 4] {
            let root = dir.path().join(format!("repo-{round}-{workers}"));
            let storage = Arc::new(LocalStorage::new(&root).unwrap());
            let repo = Repository::open_or_init(storage, 1).unwrap();
            let t = Instant::now();
            let mut w = repo.begin_backup(id(1), CancellationToken::new());
            w.set_workers(workers);
            let mut f = std::fs::File::open(&src).unwrap();
            w.add_file("data", &mut f, meta()).unwrap();
            w.commit(info()).unwrap();
            record(
                format!("hopsdr, {workers} workers"),
                t.elapsed().as_secs_f64(),
            );
            std::fs::remove_dir_all(&root).unwrap();

            // The same without storage costs: the CPU-bound rate.
            let repo = Repository::open_or_init(Arc::new(NullStorage::default()), 1).unwrap();
            let t = Instant::now();
            let mut w = repo.begin_backup(id(1), CancellationToken::new());
            w.set_workers(workers);
            let mut f = std::fs::File::open(&src).unwrap();
            w.add_file("data", &mut f, meta()).unwrap();
            record(
                format!("hopsdr, {workers} workers, null storage"),
                t.elapsed().as_secs_f64(),
            );
        }

        // The alternative: one chunk at a time, zstd's own worker threads inside it.
        let root = dir.path().join("repo-mt");
        let storage = LocalStorage::new(&root).unwrap();
        let t = Instant::now();
        let mut c = zstd::bulk::Compressor::new(1).unwrap();
        c.set_parameter(zstd::zstd_safe::CParameter::NbWorkers(2))
            .unwrap();
        let mut f = std::fs::File::open(&src).unwrap();
        let mut buf = vec![0; CHUNK_SIZE];
        let mut whole = blake3::Hasher::new();
        loop {
            let n = writer_read_full(&mut f, &mut buf);
            if n == 0 {
                break;
            }
            whole.update(&buf[..n]);
            let key = blob_key(&BlobId::of(&blake3::hash(&buf[..n])));
            if !storage.exists(&key).unwrap() {
                storage.put(&key, &c.compress(&buf[..n]).unwrap()).unwrap();
            }
        }
        record(
            "zstd threads inside serial chunks".into(),
            t.elapsed().as_secs_f64(),
        );
        std::fs::remove_dir_all(&root).unwrap();
    }
    let tar = best["tar | zstd -1 -T0"];
    for (name, rate) in &best {
        println!("{name:40} {rate:6.0} MiB/s  {:.2}x tar|zstd", rate / tar);
    }
}

/// Storage that keeps only the header: measures everything but I/O.
#[derive(Debug, Default)]
struct NullStorage(Mutex<Option<Vec<u8>>>);

impl Storage for NullStorage {
    fn put(&self, key: &str, data: &[u8]) -> Result<(), StorageError> {
        if key == HEADER_KEY {
            *self.0.lock().unwrap() = Some(data.to_vec());
        }
        Ok(())
    }
    fn get(&self, key: &str) -> Result<Vec<u8>, StorageError> {
        match (key, self.0.lock().unwrap().clone()) {
            (HEADER_KEY, Some(h)) => Ok(h),
            _ => Err(StorageError::NotFound {
                store: "null".into(),
                key: key.into(),
            }),
        }
    }
    fn exists(&self, _: &str) -> Result<bool, StorageError> {
        Ok(false)
    }
    fn list(&self, _: &str) -> Result<Vec<ObjectInfo>, StorageError> {
        Ok(Vec::new())
    }
    fn delete(&self, _: &str) -> Result<(), StorageError> {
        Ok(())
    }
    fn describe(&self) -> String {
        "null".into()
    }
    fn available_bytes(&self) -> Result<Option<u64>, StorageError> {
        Ok(None)
    }
}

fn writer_read_full(r: &mut dyn Read, buf: &mut [u8]) -> usize {
    let mut filled = 0;
    while filled < buf.len() {
        match r.read(&mut buf[filled..]).unwrap() {
            0 => break,
            n => filled += n,
        }
    }
    filled
}

/// Peak RSS of backing up a 4 GiB file (streamed, never held in memory).
/// Run alone with: cargo test --release --lib repository::tests::peak_rss -- --ignored --nocapture
#[test]
#[ignore]
fn peak_rss_4gib() {
    let env = |k: &str, d: u64| {
        std::env::var(k)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(d)
    };
    let (level, workers, mib) = (
        env("PEAK_LEVEL", 3),
        env("PEAK_WORKERS", 0),
        env("PEAK_MIB", 4096),
    );
    let dir = tempfile::tempdir_in(std::env::var("BENCH_DIR").unwrap_or("/tmp".into())).unwrap();
    println!("peak RSS before: {} MiB", peak_rss_mib());
    let storage = Arc::new(LocalStorage::new(dir.path()).unwrap());
    let repo = Repository::open_or_init(storage, level as i32).unwrap();
    let mut w = repo.begin_backup(id(1), CancellationToken::new());
    if workers > 0 {
        w.set_workers(workers as usize);
    }
    let e = w
        .add_file("big", &mut SemiRandom::new(7, mib << 20), meta())
        .unwrap();
    assert_eq!(e.size, mib << 20);
    w.commit(info()).unwrap();
    let peak_mib = peak_rss_mib();
    println!("peak RSS after backing up {mib} MiB at level {level}: {peak_mib} MiB");
    assert!(peak_mib <= 64, "peak RSS {peak_mib} MiB");
}

/// VmHWM of this process image (getrusage's ru_maxrss would include what cargo used before
/// exec'ing the test binary).
fn peak_rss_mib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    let kib: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kib / 1024
}

#[test]
fn deferred_puts_are_invisible_until_flushed_and_a_crash_leaves_only_temp_files() {
    let dir = tempfile::tempdir().unwrap();
    let s = LocalStorage::new(dir.path()).unwrap();
    s.put_deferred("blobs/ab/abcd", b"blob").unwrap();
    assert!(s.exists("blobs/ab/abcd").unwrap(), "this process sees it");
    assert!(s.list("blobs/").unwrap().is_empty(), "no name yet");
    // Another process (or this one after a crash) does not see it.
    let other = LocalStorage::new(dir.path()).unwrap();
    assert!(!other.exists("blobs/ab/abcd").unwrap());
    assert!(other.get("blobs/ab/abcd").unwrap_err().is_not_found());
    s.flush().unwrap();
    assert_eq!(other.get("blobs/ab/abcd").unwrap(), b"blob");
    assert_eq!(s.list("blobs/").unwrap().len(), 1);
    // Deferred and never flushed (the process died): only a temp file, which list ignores and
    // a later process's remove_stale_temp removes.
    s.put_deferred("blobs/cd/cdef", b"lost").unwrap();
    drop(s);
    let fresh = LocalStorage::new(dir.path()).unwrap();
    assert!(!fresh.exists("blobs/cd/cdef").unwrap());
    assert_eq!(fresh.list("blobs/").unwrap().len(), 1);
    let temps = std::fs::read_dir(dir.path().join("blobs/cd"))
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with('.'))
        .count();
    assert_eq!(temps, 1);
}

#[test]
fn gc_deletes_only_blobs_no_manifest_references() {
    let dir = tempfile::tempdir().unwrap();
    let repo = open(dir.path());
    let (m1, _, _) = sample_backup(&repo, 1);
    // Backup 2 shares every blob of backup 1 and adds one of its own.
    let mut w = repo.begin_backup(id(2), CancellationToken::new());
    w.add_file("own", &mut &data(9, 1000)[..], meta()).unwrap();
    for f in m1.files() {
        w.add_known_file(&f.path, f, f.meta).unwrap();
    }
    let m2 = w.commit(info()).unwrap();
    let own = blob_path(dir.path(), file_entry(&m2, "own"), 0);
    let cancel = CancellationToken::new();

    // Nothing to collect while both exist.
    let r = repo.gc(&cancel).unwrap();
    assert_eq!((r.manifests, r.blobs_deleted), (2, 0));

    // Backup 1 forgotten: its blobs are still backup 2's.
    repo.forget(&id(1)).unwrap();
    assert!(matches!(
        repo.forget(&id(1)),
        Err(RepoError::BackupNotFound { .. })
    ));
    let r = repo.gc(&cancel).unwrap();
    assert_eq!(r.blobs_deleted, 0, "{r:?}");
    assert!(repo
        .verify_backup(&id(2), &CancellationToken::new())
        .unwrap()
        .is_ok());

    // Backup 2 forgotten too: every blob goes.
    repo.forget(&id(2)).unwrap();
    let r = repo.gc(&cancel).unwrap();
    assert_eq!(
        (r.blobs_kept, r.blobs_deleted),
        (0, 6),
        "5 blobs of backup 1, 1 of its own"
    );
    assert!(r.bytes_freed > 0);
    assert!(!own.exists());
}

#[test]
fn gc_deletes_nothing_when_a_manifest_cannot_be_read() {
    let dir = tempfile::tempdir().unwrap();
    let repo = open(dir.path());
    sample_backup(&repo, 1);
    let (m2, _, _) = {
        let mut w = repo.begin_backup(id(2), CancellationToken::new());
        w.add_file("other", &mut &data(7, 500)[..], meta()).unwrap();
        (w.commit(info()).unwrap(), (), ())
    };
    repo.forget(&id(2)).unwrap();
    // Backup 1's manifest damaged: backup 2's blob is not collected either.
    let key = dir.path().join(manifest_key(&id(1)));
    std::fs::write(&key, b"not a manifest").unwrap();
    assert!(repo.gc(&CancellationToken::new()).is_err());
    assert!(blob_path(dir.path(), file_entry(&m2, "other"), 0).exists());
}

#[test]
fn check_finds_missing_blobs_and_bad_manifests_without_reading_blobs() {
    let dir = tempfile::tempdir().unwrap();
    let repo = open(dir.path());
    let (m1, _, _) = sample_backup(&repo, 1);
    let r = repo.check().unwrap();
    assert_eq!((r.manifests, r.blobs, r.unreferenced_blobs), (1, 5, 0));
    assert!(r.problems.is_empty(), "{r:?}");

    // A flipped byte is not its business (verify reads contents); a missing blob is.
    flip_byte(&blob_path(dir.path(), file_entry(&m1, "exact"), 0));
    assert!(repo.check().unwrap().problems.is_empty());
    let big = file_entry(&m1, "d/big");
    std::fs::remove_file(blob_path(dir.path(), big, 1)).unwrap();
    let r = repo.check().unwrap();
    assert_eq!(r.problems.len(), 1, "{r:?}");
    assert!(
        r.problems[0].contains("missing") && r.problems[0].contains("d/big"),
        "{r:?}"
    );

    // A damaged manifest is named; a forgotten backup leaves unreferenced blobs.
    let mut w = repo.begin_backup(id(2), CancellationToken::new());
    w.add_file("other", &mut &data(7, 500)[..], meta()).unwrap();
    w.commit(info()).unwrap();
    std::fs::write(dir.path().join(manifest_key(&id(1))), b"junk").unwrap();
    let r = repo.check().unwrap();
    assert!(r
        .problems
        .iter()
        .any(|p| p.starts_with(&format!("backup {}", id(1)))));
    repo.forget(&id(2)).unwrap();
    repo.forget(&id(1)).unwrap();
    assert_eq!(repo.check().unwrap().unreferenced_blobs, 5);
}

#[test]
fn the_local_store_passes_the_storage_conformance_suite() {
    let dir = tempfile::tempdir().unwrap();
    let store = LocalStorage::new(dir.path().join("store")).unwrap();
    crate::repository::conformance::check_storage(&store, "conformance", 6 << 20).unwrap();
}

#[test]
fn a_manifest_is_encoded_in_one_frame_that_records_its_size_and_decodes_back() {
    let entries: Vec<Entry> = (0..2000)
        .map(|i| {
            Entry::File(FileEntry {
                path: format!("hopsfs/dn1/vol1/blk_{i}"),
                size: 1,
                meta: meta(),
                hash: format!("{:064x}", i),
                chunks: vec![BlobId::parse(&format!("{:064x}", i + 1)).unwrap()],
                units: vec![],
                skip: 0,
            })
        })
        .collect();
    let m = Manifest {
        format_version: FORMAT_VERSION,
        id: id(7),
        info: info(),
        entries,
        streams: vec![],
    };
    let encoded = manifest::encode(&m, "manifests/x", 3).unwrap();
    let doc = zstd::decode_all(&encoded[..]).unwrap();
    assert_eq!(
        zstd::zstd_safe::get_frame_content_size(&encoded).unwrap(),
        Some(doc.len() as u64)
    );
    let body = serde_json::to_vec(&m).unwrap();
    let checksum = blake3::hash(&body).to_hex();
    let want = format!(
        "{{\"checksum\":\"{checksum}\",\"body\":{}}}\n",
        String::from_utf8(body).unwrap()
    );
    assert_eq!(String::from_utf8(doc).unwrap(), want);
    assert_eq!(manifest::decode(&encoded, &id(7)).unwrap(), m);
}

/// A local store that records which blobs were announced ahead and which were read.
#[derive(Debug)]
struct Recording {
    inner: LocalStorage,
    announced: Mutex<Vec<String>>,
    read: Mutex<Vec<String>>,
}

impl Storage for Recording {
    fn put(&self, key: &str, data: &[u8]) -> Result<(), StorageError> {
        self.inner.put(key, data)
    }
    fn get(&self, key: &str) -> Result<Vec<u8>, StorageError> {
        if key.starts_with("blobs/") {
            self.read.lock().unwrap().push(key.to_string());
        }
        self.inner.get(key)
    }
    fn exists(&self, key: &str) -> Result<bool, StorageError> {
        self.inner.exists(key)
    }
    fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>, StorageError> {
        self.inner.list(prefix)
    }
    fn delete(&self, key: &str) -> Result<(), StorageError> {
        self.inner.delete(key)
    }
    fn describe(&self) -> String {
        self.inner.describe()
    }
    fn available_bytes(&self) -> Result<Option<u64>, StorageError> {
        self.inner.available_bytes()
    }
    fn prefetch(&self, keys: &[String]) {
        self.announced.lock().unwrap().extend(keys.iter().cloned());
    }
}

#[test]
fn verify_and_the_restore_tar_announce_each_read_once() {
    // An announcement stands for one read (the S3 store shares a fetch between the reads
    // announced for it): announcing a blob more often than it is read would hold fetches
    // nobody takes.
    let dir = tempfile::tempdir().unwrap();
    let rec = Arc::new(Recording {
        inner: LocalStorage::new(dir.path()).unwrap(),
        announced: Mutex::new(Vec::new()),
        read: Mutex::new(Vec::new()),
    });
    let repo = Repository::open_or_init(rec.clone(), 1).unwrap();
    let mut w = repo.begin_backup(id(1), CancellationToken::new());
    for dn in ["dn1", "dn2"] {
        w.add_dir(&format!("hopsfs/{dn}"), meta()).unwrap();
        for i in 0..300 {
            // The same blocks on both datanodes (one blob each, read once per datanode).
            let content = format!("block {} {}", i, "x".repeat(i % 7));
            w.add_file(
                &format!("hopsfs/{dn}/blk_{i:04}"),
                &mut content.as_bytes(),
                meta(),
            )
            .unwrap();
        }
    }
    w.commit(info()).unwrap();
    let sorted = |v: &Mutex<Vec<String>>| {
        let mut v = std::mem::take(&mut *v.lock().unwrap());
        v.sort();
        v
    };
    sorted(&rec.read);
    sorted(&rec.announced);

    assert!(repo
        .verify_backup(&id(1), &CancellationToken::new())
        .unwrap()
        .is_ok());
    let (read, announced) = (sorted(&rec.read), sorted(&rec.announced));
    assert_eq!(read.len(), 300, "each unique blob read once");
    assert_eq!(announced, read, "verify announces each read once");

    let m = repo.read_manifest(&id(1)).unwrap();
    for dn in ["dn1", "dn2"] {
        let mut sink = Vec::new();
        crate::restore::tarout::write_tar(
            &repo,
            &m,
            &format!("hopsfs/{dn}/"),
            &|_| false,
            &mut sink,
        )
        .unwrap();
        let (read, announced) = (sorted(&rec.read), sorted(&rec.announced));
        assert_eq!(read.len(), 300, "{dn}: every file read");
        assert_eq!(
            announced, read,
            "{dn}: the tar producer announces each read once"
        );
    }
}

#[test]
fn a_failed_flush_forgets_its_keys_and_leaves_nothing_it_wrote() {
    let dir = tempfile::tempdir().unwrap();
    let s = LocalStorage::new(dir.path()).unwrap();
    s.put_deferred("blobs/ab/ab01", b"one").unwrap();
    s.put_deferred("blobs/ab/ab02", b"two").unwrap();
    assert!(s.exists("blobs/ab/ab01").unwrap());
    // The second blob's name is taken (by a directory): its rename fails after the first one
    // was renamed into place.
    std::fs::create_dir_all(dir.path().join("blobs/ab/ab02/x")).unwrap();
    let e = s.flush().unwrap_err();
    assert!(e.to_string().contains("ab02"), "{e}");
    // Neither is known present any more, the renamed one is removed (its name was never made
    // durable), no temp file is left.
    assert!(!s.exists("blobs/ab/ab01").unwrap());
    assert!(!s.exists("blobs/ab/ab02").unwrap());
    let left: Vec<String> = std::fs::read_dir(dir.path().join("blobs/ab"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(left, ["ab02"], "only the directory that was in the way");
    // A later flush starts clean and works.
    std::fs::remove_dir_all(dir.path().join("blobs/ab/ab02")).unwrap();
    s.put_deferred("blobs/ab/ab01", b"one").unwrap();
    s.flush().unwrap();
    assert_eq!(s.get("blobs/ab/ab01").unwrap(), b"one");
    assert!(!s.exists("blobs/ab/ab02").unwrap());
}

#[test]
fn a_lock_is_extended_when_less_than_half_its_period_is_left() {
    let now = chrono::Utc::now();
    let period = chrono::Duration::days(30);
    assert!(needs_extension(None, now, period));
    assert!(needs_extension(
        Some(now - chrono::Duration::days(1)),
        now,
        period
    ));
    assert!(needs_extension(
        Some(now + chrono::Duration::days(14)),
        now,
        period
    ));
    assert!(!needs_extension(
        Some(now + chrono::Duration::days(16)),
        now,
        period
    ));
    assert!(!needs_extension(Some(now + period), now, period));
}
