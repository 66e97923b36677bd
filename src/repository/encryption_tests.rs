//! Encrypted repositories end to end on a local store: round trip, tampering refused, no
//! plaintext stored, fail-closed opening, key slots and rotation.

use std::path::Path;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;
use zeroize::Zeroizing;

use super::tests::{blob_path, data, id, info, meta, restore};
use super::*;

fn key(pass: &str) -> KeySource {
    KeySource {
        passphrase: Zeroizing::new(pass.to_string()),
        slot: None,
        describe: "file /etc/hopsdr/repository.key".into(),
    }
}

fn open(root: &Path, k: Option<&KeySource>) -> Result<Repository, RepoError> {
    let storage = Arc::new(LocalStorage::new(root).unwrap());
    Repository::open_or_init_with(storage, 3, k)
}

/// A known text (users.sql-like) and a multi-chunk file, committed as backup 1.
const KNOWN: &[u8] = b"CREATE USER 'hopsworks'@'%' IDENTIFIED BY PASSWORD '*0123456789ABCDEF0123456789ABCDEF01234567';\n";

fn back_up(repo: &Repository, n: u32) -> (FileEntry, FileEntry) {
    let mut w = repo.begin_backup(id(n), CancellationToken::new());
    let users = w.add_file("users.sql", &mut &KNOWN[..], meta()).unwrap();
    let big_data = data(n as u64, 9 << 20);
    let big = w.add_file("d/big", &mut &big_data[..], meta()).unwrap();
    w.commit(info()).unwrap();
    (users, big)
}

fn every_object(root: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                let key = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
                out.push((key, std::fs::read(&p).unwrap()));
            }
        }
    }
    out
}

#[test]
fn an_encrypted_repository_round_trips_and_stores_no_plaintext() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("repo");
    let k = key("correct horse battery staple");
    let repo = open(&root, Some(&k)).unwrap();
    assert!(repo.is_encrypted());
    assert_eq!(repo.header().version, ENCRYPTED_FORMAT_VERSION);
    let (users, big) = back_up(&repo, 1);
    // Blob names are keyed: not the plain BLAKE3 of the content.
    assert_ne!(
        users.chunks[0].as_str(),
        blake3::hash(KNOWN).to_hex().as_str()
    );

    // Reopened with the passphrase: everything reads and verifies.
    let repo = open(&root, Some(&k)).unwrap();
    assert_eq!(restore(&repo, &users).unwrap(), KNOWN);
    assert_eq!(restore(&repo, &big).unwrap(), data(1, 9 << 20));
    let report = repo
        .verify_backup(&id(1), &CancellationToken::new())
        .unwrap();
    assert!(report.is_ok(), "{report:?}");
    assert!(repo.check().unwrap().problems.is_empty());

    // No object holds the known text, nor a zstd frame of it, nor the plain hash of a chunk.
    let plain_zstd = zstd::bulk::compress(KNOWN, 3).unwrap();
    for (key, bytes) in every_object(&root) {
        let has = |needle: &[u8]| bytes.windows(needle.len()).any(|w| w == needle);
        assert!(!has(b"IDENTIFIED BY PASSWORD"), "{key} holds plaintext");
        assert!(
            !has(&plain_zstd[4..]),
            "{key} holds the known text compressed"
        );
        assert!(!has(b"users.sql"), "{key} names a backed-up file");
        if key.starts_with("blobs/") || key.starts_with("manifests/") {
            assert!(crypto::is_sealed(&bytes), "{key} is not sealed");
        }
    }
}

#[test]
fn a_flipped_byte_a_swapped_blob_and_an_edited_manifest_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("repo");
    let k = key("p4ss");
    let repo = open(&root, Some(&k)).unwrap();
    let (users, big) = back_up(&repo, 1);

    // A flipped byte inside a blob.
    let p = blob_path(&root, &big, 0);
    let mut bytes = std::fs::read(&p).unwrap();
    bytes[100] ^= 0x40;
    std::fs::write(&p, &bytes).unwrap();
    let e = restore(&repo, &big).unwrap_err();
    assert!(
        matches!(
            &e,
            RepoError::CorruptBlob {
                defect: BlobDefect::Sealed(crypto::SealDefect::Unauthentic),
                ..
            }
        ),
        "{e}"
    );
    let report = repo
        .verify_backup(&id(1), &CancellationToken::new())
        .unwrap();
    assert_eq!(report.damaged.len(), 1, "{report:?}");
    assert!(
        report.damaged[0].reason.contains("fails authentication"),
        "{report:?}"
    );

    // A blob swapped for another (valid, sealed, same repository) one.
    let a = blob_path(&root, &big, 1);
    let b = blob_path(&root, &users, 0);
    std::fs::copy(&a, &b).unwrap();
    let e = restore(&repo, &users).unwrap_err();
    assert!(e.to_string().contains("fails authentication"), "{e}");

    // An edited manifest: the sealed bytes changed.
    let m = root.join(manifest_key(&id(1)));
    let mut bytes = std::fs::read(&m).unwrap();
    let last = bytes.len() - 20;
    bytes[last] ^= 1;
    std::fs::write(&m, &bytes).unwrap();
    let e = repo.read_manifest(&id(1)).unwrap_err();
    assert!(e.to_string().contains("tampered"), "{e}");
    assert!(e.is_corruption());

    // A manifest forged in plaintext (as a plaintext repository would store it) is refused.
    let plain = open(&dir.path().join("plain"), None).unwrap();
    back_up(&plain, 2);
    std::fs::copy(
        dir.path().join("plain").join(manifest_key(&id(2))),
        root.join(manifest_key(&id(2))),
    )
    .unwrap();
    let e = repo.read_manifest(&id(2)).unwrap_err();
    assert!(e.to_string().contains("not sealed"), "{e}");
    // So is a sealed manifest moved under another backup's name.
    std::fs::copy(
        root.join(manifest_key(&id(1))),
        root.join(manifest_key(&id(3))),
    )
    .unwrap();
    assert!(repo
        .read_manifest(&id(3))
        .unwrap_err()
        .to_string()
        .contains("tampered"));
}

#[test]
fn opening_fails_closed_with_clear_messages() {
    let dir = tempfile::tempdir().unwrap();
    let enc = dir.path().join("enc");
    let plain = dir.path().join("plain");
    open(&enc, Some(&key("right"))).unwrap();
    open(&plain, None).unwrap();

    let e = open(&enc, Some(&key("wrong"))).unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.contains("file /etc/hopsdr/repository.key") && msg.contains("slot \"primary\""),
        "{msg}"
    );
    assert_eq!(e.code(), "wrong_passphrase");
    let e = open(&enc, None).unwrap_err();
    assert!(matches!(e, RepoError::KeyRequired { .. }), "{e}");
    assert!(e.to_string().contains("[repository.encryption]"));
    // A plaintext repository is never written to when encryption is asked for.
    let e = open(&plain, Some(&key("right"))).unwrap_err();
    assert!(matches!(e, RepoError::NotEncrypted { .. }), "{e}");
    // The header, made to say plaintext or given another chunk size, is refused.
    let h = enc.join(HEADER_KEY);
    let text = std::fs::read_to_string(&h).unwrap();
    std::fs::write(&h, text.replace("4194304", "1048576")).unwrap();
    let e = open(&enc, Some(&key("right"))).unwrap_err();
    assert!(matches!(e, RepoError::HeaderTampered { .. }), "{e}");
    std::fs::write(&h, &text).unwrap();
    let mut v: serde_json::Value = serde_json::from_str(&text).unwrap();
    v.as_object_mut().unwrap().remove("encryption");
    v.as_object_mut().unwrap().remove("mac");
    v["version"] = 1.into();
    std::fs::write(&h, v.to_string()).unwrap();
    assert!(matches!(
        open(&enc, Some(&key("right"))).unwrap_err(),
        RepoError::NotEncrypted { .. }
    ));
    std::fs::write(&h, &text).unwrap();
    open(&enc, Some(&key("right"))).unwrap();

    // A creation interrupted after its keys: another passphrase is told so instead of mixing
    // keys; the same one finishes it, under the id the slot was made for.
    let half = dir.path().join("half");
    let first_id = open(&half, Some(&key("x"))).unwrap().header().id.clone();
    std::fs::remove_file(half.join(HEADER_KEY)).unwrap();
    let e = open(&half, Some(&key("y"))).unwrap_err();
    assert!(matches!(e, RepoError::InterruptedInit { .. }), "{e}");
    let resumed = open(&half, Some(&key("x"))).unwrap();
    assert!(resumed.is_encrypted());
    assert_eq!(resumed.header().id, first_id);
    assert_eq!(resumed.encryption_status().unwrap().unwrap().data_keys, [1]);
}

#[test]
fn key_slots_and_rotation_keep_old_backups_readable() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("repo");
    let repo = open(&root, Some(&key("first"))).unwrap();
    let (users, _) = back_up(&repo, 1);

    repo.add_key_slot("ops", "second").unwrap();
    assert!(repo.add_key_slot("ops", "third").is_err());
    // The slot this process opened with cannot be removed; another can.
    let e = repo.remove_key_slot("primary").unwrap_err();
    assert!(e.to_string().contains("opened the repository with"), "{e}");

    assert_eq!(repo.rotate_data_key().unwrap(), 2);
    let (users2, _) = back_up(&repo, 2);
    // Same content, same name: deduplication survives a rotation.
    assert_eq!(users.chunks, users2.chunks);
    let status = repo.encryption_status().unwrap().unwrap();
    assert_eq!(status.data_keys, [1, 2]);
    assert_eq!(status.current_data_key, 2);
    assert_eq!(status.slots.len(), 2);
    assert_eq!(status.opened_with, "primary");

    // The other passphrase opens it, and removes the first slot.
    let repo = open(&root, Some(&key("second"))).unwrap();
    repo.remove_key_slot("primary").unwrap();
    assert!(open(&root, Some(&key("first"))).is_err());
    let e = repo.remove_key_slot("ops").unwrap_err();
    assert!(e.to_string().contains("opened the repository with"), "{e}");
    for n in [1, 2] {
        let r = repo
            .verify_backup(&id(n), &CancellationToken::new())
            .unwrap();
        assert!(r.is_ok(), "backup {n}: {r:?}");
    }
    // New blobs are sealed with data key 2, the first backup's with key 1.
    let big2 = data(2, 9 << 20);
    let m = repo.read_manifest(&id(2)).unwrap();
    let f = m.files().find(|f| f.path == "d/big").unwrap();
    assert_eq!(restore(&repo, f).unwrap(), big2);
    let stored = std::fs::read(blob_path(&root, f, 0)).unwrap();
    assert_eq!(&stored[8..12], &2u32.to_be_bytes());
}
