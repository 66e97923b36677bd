//! The packed repository format through the daemon: a damaged index object stops backups and
//! is named by `repo check`, `hopsdrctl repo repair-index` rebuilds the index from the packs;
//! a repository an earlier hopsdr wrote (format 1) is upgraded in place at start and its
//! backups stay listed, verifiable and prunable.

use crate::harness::Env;

/// The index objects of a local repository.
fn index_objects(env: &Env) -> Vec<std::path::PathBuf> {
    std::fs::read_dir(env.repo().join("index"))
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default()
}

#[test]
fn a_damaged_index_is_named_and_repair_index_rebuilds_it() {
    let env = Env::new();
    let _d = env.start();
    let first = env.backup_ok();
    let objects = index_objects(&env);
    assert_eq!(objects.len(), 1, "{objects:?}");
    let mut bytes = std::fs::read(&objects[0]).unwrap();
    let n = bytes.len() / 2;
    bytes[n] ^= 0x04;
    std::fs::write(&objects[0], bytes).unwrap();
    let name = objects[0]
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();

    // Restarted (a new head node would have no cache either): what needs the index stops,
    // naming the object and the way out.
    drop(_d);
    std::fs::remove_dir_all(env.path().join("lib/cache")).unwrap();
    let _d = env.start();
    let out = env.ctl(&["--json", "backup", "start", "--wait"]);
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        text.contains(&name) && text.contains("repair-index"),
        "{text}"
    );
    let out = env.ctl(&["--json", "repo", "check"]);
    assert_ne!(out.status.code(), Some(0));
    let check: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let problems = check["problems"].to_string();
    assert!(problems.contains(&name), "{check}");

    let out = env.ctl(&["repo", "repair-index", "--wait"]);
    assert_eq!(out.status.code(), Some(0), "{}", env.log());
    assert!(!objects[0].exists(), "the damaged object was replaced");
    let check = env.ctl_json(&["repo", "check"]);
    assert_eq!(check["problems"].as_array().unwrap().len(), 0, "{check}");
    env.ctl_ok(&["verify", &first, "--wait"]);
    let second = env.backup_ok();
    env.ctl_ok(&["verify", &second, "--wait"]);
}

#[test]
fn a_format_1_repository_is_upgraded_at_start_and_stays_usable() {
    use hopsdr::repository::{
        BackupInfo, FileMeta, LocalStorage, Repository, FORMAT_VERSION, PACKED_FORMAT_VERSION,
    };
    let mut env = Env::new();
    env.extra_config = "[retention]\nkeep_last = 1\nprune_after_backup = false\n".into();
    // An earlier hopsdr's repository with one backup (written as it wrote them).
    let old = Repository::open_or_init(
        std::sync::Arc::new(LocalStorage::new(env.repo()).unwrap()),
        1,
    )
    .unwrap();
    assert_eq!(old.header().version, FORMAT_VERSION);
    let id = hopsdr::ids::BackupId::parse("20260101T000000Z").unwrap();
    let mut w = old.begin_backup(id.clone(), Default::default());
    let meta = FileMeta {
        mode: 0o644,
        mtime: 1_767_225_600,
        uid: 0,
        gid: 0,
    };
    w.add_file("files/old.txt", &mut &b"written by format 1\n"[..], meta)
        .unwrap();
    let now = chrono::Utc::now();
    w.commit(BackupInfo {
        started_at: now,
        finished_at: now,
        hostname: "old".into(),
        hopsdr_version: "0.0.1".into(),
        components: vec![],
        facts: Default::default(),
    })
    .unwrap();
    drop(old);

    // Killed right after the header was rewritten: the next start goes on from there.
    #[cfg(feature = "testbed")]
    {
        let marker = env.path().join("repository.upgrade.header_written.reached");
        let mut d = env.start_unready(&[(
            "HOPSDR_FAILPOINTS",
            "repository.upgrade.header_written=pause",
        )]);
        crate::harness::wait_for(
            "the upgraded header",
            std::time::Duration::from_secs(60),
            || marker.exists().then_some(()),
        );
        d.kill9();
    }
    let _d = env.start();
    let header: serde_json::Value =
        serde_json::from_slice(&std::fs::read(env.repo().join("hopsdr-repository.json")).unwrap())
            .unwrap();
    assert_eq!(header["version"], PACKED_FORMAT_VERSION);
    assert!(
        env.log().contains("upgraded from format 1"),
        "{}",
        env.log()
    );
    let list = env.ctl_json(&["backups", "list"]);
    assert_eq!(Env::listed_ids(&list), [id.to_string()], "{list}");
    env.ctl_ok(&["verify", &id.to_string(), "--wait"]);
    let new = env.backup_ok();
    env.ctl_ok(&["verify", &new, "--wait"]);
    // The old backup pruned: its format 1 blobs no longer referenced are deleted.
    let blobs = || walk(&env.repo().join("blobs"));
    let before = blobs();
    assert!(before > 0);
    env.ctl_ok(&["prune", "--wait"]);
    assert!(blobs() < before, "format 1 blobs collected");
    let check = env.ctl_json(&["repo", "check"]);
    assert_eq!(check["problems"].as_array().unwrap().len(), 0, "{check}");
    env.ctl_ok(&["verify", &new, "--wait"]);
}

fn walk(dir: &std::path::Path) -> usize {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return 0;
    };
    rd.flatten()
        .map(|e| {
            if e.path().is_dir() {
                walk(&e.path())
            } else {
                1
            }
        })
        .sum()
}

/// Files f<i> for i in `which`, `kib` KiB of pseudo-random bytes each, content by `seed`.
fn write_files(dir: &std::path::Path, which: std::ops::Range<u32>, kib: usize, seed: u32) {
    for i in which {
        let mut h = blake3::Hasher::new();
        h.update(&seed.to_le_bytes());
        h.update(&i.to_le_bytes());
        let mut bytes = vec![0u8; kib << 10];
        h.finalize_xof().fill(&mut bytes);
        std::fs::write(dir.join(format!("f{i}")), bytes).unwrap();
    }
}

/// SIGKILL after a collection copied a mostly dead pack's live blobs (before the new index
/// generation and the deletes), and after a repair wrote its index generation (before the old
/// objects went): after the restart every kept backup verifies and the repository checks out;
/// the next collection or repair finishes.
#[cfg(feature = "testbed")]
#[test]
fn killed_while_repacking_or_repairing_the_repository_converges() {
    use std::time::Duration;
    let mut env = Env::new();
    let data = env.path().join("data/bulk");
    std::fs::create_dir_all(&data).unwrap();
    env.files.push((data.clone(), false));
    env.extra_config = "[retention]\nkeep_last = 1\nprune_after_backup = false\n".into();
    // Backup 1: 40 files in one pack; backup 2 keeps 5 of them: the pack is mostly dead once
    // backup 1 is forgotten.
    write_files(&data, 0..40, 600, 1);
    let second = {
        let _d = env.start();
        env.backup_ok();
        write_files(&data, 5..40, 600, 2);
        env.backup_ok()
    };
    let marker = env.path().join("gc.repacked.reached");
    let mut d = env.start_with(&[("HOPSDR_FAILPOINTS", "gc.repacked=pause")]);
    env.ctl_ok(&["prune"]);
    crate::harness::wait_for("the repack", Duration::from_secs(60), || {
        marker.exists().then_some(())
    });
    d.kill9();
    drop(d);
    let _d = env.start();
    let list = env.ctl_json(&["backups", "list"]);
    assert_eq!(
        Env::listed_ids(&list),
        std::slice::from_ref(&second),
        "{list}"
    );
    env.ctl_ok(&["verify", &second, "--wait"]);
    let check = env.ctl_json(&["repo", "check"]);
    assert_eq!(check["problems"].as_array().unwrap().len(), 0, "{check}");
    assert!(check["unreferenced_blobs"].as_u64().unwrap() > 0, "{check}");
    env.ctl_ok(&["prune", "--wait"]);
    let check = env.ctl_json(&["repo", "check"]);
    assert_eq!(check["unreferenced_blobs"], 0, "{check}");
    env.ctl_ok(&["verify", &second, "--wait"]);
    drop(_d);

    // The repair killed after its new generation.
    let marker = env.path().join("repair.index_written.reached");
    let mut d = env.start_with(&[("HOPSDR_FAILPOINTS", "repair.index_written=pause")]);
    env.ctl_ok(&["repo", "repair-index"]);
    crate::harness::wait_for("the repair", Duration::from_secs(60), || {
        marker.exists().then_some(())
    });
    d.kill9();
    drop(d);
    let _d = env.start();
    env.ctl_ok(&["verify", &second, "--wait"]);
    env.ctl_ok(&["repo", "repair-index", "--wait"]);
    let check = env.ctl_json(&["repo", "check"]);
    assert_eq!(check["problems"].as_array().unwrap().len(), 0, "{check}");
    assert_eq!(index_objects(&env).len(), 1, "one generation left");
    env.ctl_ok(&["verify", &second, "--wait"]);
}
