//! Retention wired in: `hopsdrctl prune --dry-run` prints the decisions with their reasons,
//! `backup pin` keeps a backup whatever the policy says, pruning forgets manifests and catalog
//! rows and garbage collection frees exactly the blobs no remaining backup references; pruning
//! after each successful backup.

use std::time::Duration;

use crate::harness::{wait_for, Env};

/// Objects holding blobs in the repository (packs; blob objects of format 1/2).
fn blobs(env: &Env) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for top in ["blobs", "packs"] {
        if let Ok(fans) = std::fs::read_dir(env.repo().join(top)) {
            for fan in fans.flatten() {
                for b in std::fs::read_dir(fan.path()).unwrap().flatten() {
                    if !b.file_name().to_string_lossy().starts_with('.') {
                        out.push(b.path());
                    }
                }
            }
        }
    }
    out
}

/// An env whose backups each hold a file with new content.
pub fn env_with(retention: &str) -> (Env, std::path::PathBuf) {
    let mut env = Env::new();
    let data = env.path().join("data/changing");
    std::fs::create_dir_all(&data).unwrap();
    env.files.push((data.clone(), false));
    env.extra_config = retention.to_string();
    (env, data)
}

/// A backup after writing generation `n` of the changing file.
pub fn backup_with(env: &Env, data: &std::path::Path, n: u32) -> String {
    std::fs::write(
        data.join("state.txt"),
        format!("generation {n}\n").repeat(1000),
    )
    .unwrap();
    env.backup_ok()
}

#[test]
fn prune_keeps_by_policy_and_pins_and_gc_frees_only_unreferenced_blobs() {
    let (env, data) = env_with("[retention]\nkeep_last = 2\nprune_after_backup = false\n");
    let _d = env.start();
    let ids: Vec<String> = (1..=4).map(|n| backup_with(&env, &data, n)).collect();
    let out = env.ctl(&["backup", "pin", &ids[0]]);
    assert_eq!(out.status.code(), Some(0));
    let out = env.ctl(&["backup", "pin", "20200101T000000Z"]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "an unknown backup cannot be pinned"
    );

    // The dry run: reasons for what is kept, nothing touched.
    let d = env.ctl_json(&["prune", "--dry-run"]);
    let fate: Vec<(String, bool, Vec<String>)> = d["decisions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| {
            (
                x["id"].as_str().unwrap().to_string(),
                x["keep"].as_bool().unwrap(),
                x["reasons"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|r| r.as_str().unwrap().to_string())
                    .collect(),
            )
        })
        .collect();
    assert_eq!(fate.len(), 4);
    assert_eq!(fate[0].0, ids[3], "newest first");
    assert!(fate[0].1 && fate[0].2.contains(&"last".to_string()));
    assert!(fate[1].1 && fate[1].2 == ["last"]);
    assert_eq!((fate[2].0.as_str(), fate[2].1), (ids[1].as_str(), false));
    assert!(fate[2].2.is_empty());
    assert!(fate[3].1 && fate[3].2 == ["pinned"]);
    let out = env.ctl(&["prune", "--dry-run"]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    // (Columns are padded to the longest id: backups in one second get -1, -2 suffixes.)
    let forgotten = text
        .lines()
        .any(|l| l.split_whitespace().collect::<Vec<_>>() == [ids[1].as_str(), "forget"]);
    assert!(
        forgotten && text.contains("3 to keep, 1 to forget"),
        "{text}\n{}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr),
        env.log()
    );
    assert_eq!(env.manifests().len(), 4, "a dry run changes nothing");

    // The prune: one manifest and its catalog row gone, its own blob freed, every other kept.
    let before = blobs(&env).len();
    let out = env.ctl(&["prune", "--wait"]);
    assert_eq!(out.status.code(), Some(0), "{}", env.log());
    assert_eq!(env.manifests().len(), 3);
    assert!(!env.manifests().contains(&ids[1]));
    let list = env.ctl_json(&["backups", "list"]);
    let listed = Env::listed_ids(&list);
    assert_eq!(listed, [ids[0].clone(), ids[2].clone(), ids[3].clone()]);
    assert_eq!(list["backups"][0]["pinned"], true);
    let after = blobs(&env).len();
    assert_eq!(
        after,
        before - 1,
        "the forgotten backup's own pack is freed: it held only its file and its catalog copy"
    );
    let repo = hopsdr::repository::Repository::open_or_init(
        std::sync::Arc::new(hopsdr::repository::LocalStorage::new(env.repo()).unwrap()),
        1,
    )
    .unwrap();
    for id in [&ids[0], &ids[2], &ids[3]] {
        let r = repo
            .verify_backup(
                &hopsdr::ids::BackupId::parse(id).unwrap(),
                &tokio_util::sync::CancellationToken::new(),
            )
            .unwrap();
        assert!(r.is_ok(), "{id}: {r:?}");
    }
    let m = env.metrics();
    assert!(m.contains("hopsdr_prune_forgotten_total 1"), "{m}");
    assert!(m.contains("hopsdr_backups{state=\"succeeded\"} 3"), "{m}");
    assert!(!m.contains("hopsdr_gc_freed_bytes_total 0"), "{m}");

    // Unpinned, the oldest goes at the next prune; the newest two stay.
    assert_eq!(
        env.ctl(&["backup", "unpin", &ids[0]]).status.code(),
        Some(0)
    );
    assert_eq!(env.ctl(&["prune", "--wait"]).status.code(), Some(0));
    assert_eq!(env.manifests().len(), 2);
}

#[test]
fn pruning_runs_after_each_successful_backup() {
    let (env, data) = env_with("[retention]\nkeep_last = 1\n");
    let _d = env.start();
    let first = backup_with(&env, &data, 1);
    let second = backup_with(&env, &data, 2);
    // The prune job runs after the backup job has recorded its end.
    let list = wait_for(
        "the prune after the second backup",
        Duration::from_secs(30),
        || {
            let list = env.ctl_json(&["backups", "list"]);
            (list["backups"].as_array().unwrap().len() == 1).then_some(list)
        },
    );
    assert_eq!(env.manifests().len(), 1);
    assert_eq!(env.manifests(), [second.as_str()]);
    let ids = Env::listed_ids(&list);
    assert_eq!(ids, [second.as_str()], "{first} forgotten");
}

#[test]
fn without_keep_rules_nothing_is_forgotten() {
    let (env, data) = env_with("");
    let _d = env.start();
    backup_with(&env, &data, 1);
    backup_with(&env, &data, 2);
    let text = String::from_utf8_lossy(&env.ctl(&["prune", "--dry-run"]).stdout).into_owned();
    assert!(
        text.contains("no keep_* rule") && text.contains("no_policy"),
        "{text}"
    );
    assert_eq!(env.ctl(&["prune", "--wait"]).status.code(), Some(0));
    assert_eq!(env.manifests().len(), 2);
}

/// Garbage collection holds the job slot: a backup asked for meanwhile is refused as busy and
/// nothing a backup references is deleted. kill -9 in the middle of the collection leaves a
/// repository whose structure checks out, and the next prune finishes the collection.
#[test]
fn gc_excludes_backups_and_survives_kill_9() {
    let (env, data) = env_with("[retention]\nkeep_last = 1\nprune_after_backup = false\n");
    let ids: Vec<String> = {
        let _d = env.start();
        (1..=3).map(|n| backup_with(&env, &data, n)).collect()
    };
    let mut d = env.start_with(&[("HOPSDR_FAILPOINTS", "gc.deleted_one=pause")]);
    assert_eq!(env.ctl(&["prune"]).status.code(), Some(0));
    let marker = env.path().join("gc.deleted_one.reached");
    wait_for(
        "the collection to delete a blob",
        Duration::from_secs(30),
        || marker.exists().then_some(()),
    );
    let out = env.ctl(&["backup", "start"]);
    assert_eq!(out.status.code(), Some(5), "busy while the collection runs");
    d.kill9();
    drop(d);

    let _d = env.start();
    let out = env.ctl(&["--json", "repo", "check"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let check: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(check["manifests"], 1);
    assert!(check["unreferenced_blobs"].as_u64().unwrap() > 0, "{check}");
    assert_eq!(env.ctl(&["prune", "--wait"]).status.code(), Some(0));
    let check = env.ctl_json(&["repo", "check"]);
    assert_eq!(check["unreferenced_blobs"], 0, "{check}");
    let out = env.ctl(&["verify", &ids[2], "--wait"]);
    assert_eq!(out.status.code(), Some(0), "{}", env.log());
}
