//! HopsFS blocks through the real daemon on the test-bed: consistent with the RonDB backup
//! (pinned at the consistency point), incremental, covered, restorable by hand; and faults.

use std::process::Command;
use std::time::Duration;

use hopsdr::ids::BackupId;
use hopsdr::repository::Entry;

use crate::harness::{wait_for, Env};
use crate::tbcluster::{
    cutting_ssh, hopsfs_facts, last_backup, repo, restore_by_hand, show_component, ssh_config,
    Cluster, TB,
};

#[test]
fn hopsfs_backup_restores_the_cluster_whole_and_is_incremental() {
    let mut env = Env::new();
    let c = Cluster::create(&env, &[]);
    env.extra_config = c.hopsfs_config("local");
    let _d = env.start();
    let before = c.fingerprint();
    let out = env.ctl(&["backup", "start", "--wait"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        env.log()
    );
    let b1 = last_backup(&env);
    assert_eq!(b1["state"], "succeeded");
    let id1 = b1["id"].as_str().unwrap().to_string();
    let f1 = hopsfs_facts(&env, &id1);
    assert_eq!(f1["coverage_checked"], true);
    assert_eq!(b1["hopsfs_unchecked"], false);
    assert_eq!(f1["referenced_blocks"], 30);
    assert_eq!(f1["missing_blocks"].as_array().unwrap().len(), 0);
    assert_eq!(f1["blocks"], 90, "30 blocks × 3 replicas");
    assert_eq!(f1["blocks_new"], 90);
    assert!(f1["fence_window_seconds"].as_f64().unwrap() < 30.0);
    // Every finalized replica is one record: its checksum file shares the block's unit.
    let repo = repo(&env);
    let m = repo.read_manifest(&BackupId::parse(&id1).unwrap()).unwrap();
    let (mut shared, mut metas) = (0, 0);
    for e in repo.all_entries(&m) {
        if let Entry::File(f) = e.unwrap() {
            if f.path.ends_with(".meta") && f.path.contains("/finalized/") {
                metas += 1;
                if f.skip > 0 && f.units.len() == 1 {
                    shared += 1;
                }
            }
        }
    }
    assert_eq!((metas, shared), (90, 90));
    // Pins are removed after the commit, off the backup's path.
    for dn in 1..=3 {
        for v in 1..=2 {
            let pin = c.volume(dn, v).join("hopsdr-pin");
            wait_for("the pins removed", Duration::from_secs(30), || {
                (!pin.exists()).then_some(())
            });
        }
    }
    let show = env.ctl_json(&["backups", "show", &id1]);
    let comps: Vec<&str> = show["components"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["component"].as_str().unwrap())
        .collect();
    assert_eq!(comps, ["files", "rondb", "hopsfs"]);
    let m = env.metrics();
    assert!(m.contains("hopsdr_backup_hopsfs_unchecked 0"), "{m}");
    assert!(m.contains("hopsdr_hopsfs_blocks_missing 0"), "{m}");
    assert!(m.contains("hopsdr_hopsfs_blocks{kind=\"new\"} 90"), "{m}");

    // Second backup of the unchanged cluster: no block transferred.
    let out = env.ctl(&["backup", "start", "--wait"]);
    assert_eq!(out.status.code(), Some(0), "{}", env.log());
    let b2 = last_backup(&env);
    let id2 = b2["id"].as_str().unwrap().to_string();
    let f2 = hopsfs_facts(&env, &id2);
    assert_eq!(f2["blocks"], 90);
    assert_eq!(f2["blocks_new"], 0);
    let hopsfs2 = show_component(&env, &id2, "hopsfs");
    let hopsfs1 = show_component(&env, &id1, "hopsfs");
    assert!(
        hopsfs2["stored_bytes"].as_u64().unwrap() < hopsfs1["stored_bytes"].as_u64().unwrap() / 10,
        "{hopsfs2} vs {hopsfs1}"
    );

    // The second backup restores on its own: the whole cluster comes back.
    restore_by_hand(&env, &c, &id2);
    wait_for("safe mode OFF", Duration::from_secs(30), || {
        (c.safe_mode() == "Safe mode is OFF").then_some(())
    });
    let fsck = c.tool("hdfs", &["fsck", "/"]);
    assert!(
        fsck.status.success(),
        "{}",
        String::from_utf8_lossy(&fsck.stdout)
    );
    assert_eq!(c.fingerprint(), before);
}

/// Without a `referenced_blocks` source nobody checks that the copied blocks cover what the
/// metadata references: such a backup is never shown like a checked one.
#[test]
fn a_backup_without_the_coverage_check_is_marked_unchecked_everywhere() {
    let mut env = Env::new();
    let c = Cluster::create(&env, &[]);
    env.extra_config = c
        .hopsfs_config("local")
        .lines()
        .filter(|l| !l.starts_with("referenced_blocks"))
        .map(|l| format!("{l}\n"))
        .collect();
    let _d = env.start();
    let id = env.backup_ok();
    let b = last_backup(&env);
    assert_eq!(
        (b["state"].as_str(), b["hopsfs_unchecked"].as_bool()),
        (Some("succeeded"), Some(true))
    );
    assert_eq!(hopsfs_facts(&env, &id)["coverage_checked"], false);
    let list = String::from_utf8_lossy(&env.ctl(&["backups", "list"]).stdout).into_owned();
    assert!(
        list.contains(&format!("{id}  succeeded (unchecked)")),
        "{list}"
    );
    let show = String::from_utf8_lossy(&env.ctl(&["backups", "show", &id]).stdout).into_owned();
    assert!(show.contains("hopsfs:   UNCHECKED"), "{show}");
    assert!(env.metrics().contains("hopsdr_backup_hopsfs_unchecked 1"));
    assert!(env.log().contains("coverage not checked"));
    // A catalog rebuilt from the repository says the same.
    assert_eq!(
        env.ctl(&["catalog", "rebuild", "--wait"]).status.code(),
        Some(0)
    );
    assert_eq!(last_backup(&env)["hopsfs_unchecked"], true);
}

#[test]
fn new_blocks_only_are_transferred_after_churn() {
    let mut env = Env::new();
    let c = Cluster::create(&env, &[]);
    env.extra_config = c.hopsfs_config("local");
    let _d = env.start();
    assert_eq!(
        env.ctl(&["backup", "start", "--wait"]).status.code(),
        Some(0)
    );
    c.tb(&["cluster", "churn", "--seconds", "1"]);
    let out = env.ctl(&["backup", "start", "--wait"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let b = last_backup(&env);
    let f = hopsfs_facts(&env, b["id"].as_str().unwrap());
    let total = f["blocks"].as_u64().unwrap();
    let new = f["blocks_new"].as_u64().unwrap();
    assert!(new > 0 && new < total / 2, "new {new} of {total}");
    assert_eq!(f["missing_blocks"].as_array().unwrap().len(), 0);
}

/// One replica per block: with every block on all three datanodes, a backup reads each block
/// from one of them and records the other replicas with the unit it was stored as. Every block
/// file of dn1 is changed (same length) before the backup: read, dn1's replicas would be stored
/// as units of their own; shared, all three replicas of a block name one unit. The facts count
/// two replicas of three as shared. A first backup killed (SIGKILL) once the unread replicas are
/// recorded commits nothing, and the next one verifies.
#[test]
fn each_block_is_read_from_one_datanode_and_recorded_for_every_replica() {
    let mut env = Env::new();
    let c = Cluster::create(&env, &["--replication", "3"]);
    env.extra_config = c.hopsfs_config("local");
    let mut changed = 0;
    for vol in 1..=2 {
        changed += flip_blocks(&c.volume(1, vol).join("current"));
    }
    assert!(changed > 3, "{changed} block files on dn1");
    let (job, _) = env.backup_killed_at("backup.hopsfs.replicas_shared");
    let _d = env.start();
    assert!(env.manifests().is_empty());
    let state: String = rusqlite::Connection::open(env.catalog())
        .unwrap()
        .query_row("SELECT state FROM jobs WHERE id=?1", [job], |r| r.get(0))
        .unwrap();
    assert_eq!(state, "interrupted");
    let id = env.backup_ok();
    let out = env.ctl(&["verify", &id, "--wait"]);
    assert_eq!(out.status.code(), Some(0), "{}", env.log());
    let f = hopsfs_facts(&env, &id);
    let new = f["blocks_new"].as_u64().unwrap();
    assert!(new >= 9 && new % 3 == 0, "{f}");
    assert_eq!(f["replicas_shared"].as_u64().unwrap(), new / 3 * 2, "{f}");
    assert!(f["bytes_shared"].as_u64().unwrap() > 0, "{f}");
    let repo = repo(&env);
    let m = repo.read_manifest(&BackupId::parse(&id).unwrap()).unwrap();
    // Block file name -> (datanodes holding it, units naming its content).
    let mut blocks: std::collections::BTreeMap<String, (Vec<String>, Vec<String>)> =
        Default::default();
    for e in repo.all_entries(&m) {
        let Entry::File(f) = e.unwrap() else { continue };
        let name = f.path.rsplit('/').next().unwrap().to_string();
        if !f.path.starts_with("hopsfs/") || !name.starts_with("blk_") || name.ends_with(".meta") {
            continue;
        }
        let dn = f.path.split('/').nth(1).unwrap().to_string();
        let (dns, units) = blocks.entry(name).or_default();
        dns.push(dn);
        units.extend(f.units.iter().map(|u| u.as_str().to_string()));
        units.sort();
        units.dedup();
    }
    assert_eq!(blocks.len() as u64, new / 3, "{blocks:?}");
    for (name, (dns, units)) in &blocks {
        assert_eq!(dns.len(), 3, "{name}: {dns:?}");
        assert_eq!(
            units.len(),
            1,
            "{name}: each replica stored on its own: {units:?}"
        );
    }
}

/// Changes the first byte of every finalized block file under `dir`; returns how many.
fn flip_blocks(dir: &std::path::Path) -> usize {
    let mut n = 0;
    for e in std::fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        let p = e.path();
        let name = e.file_name().to_string_lossy().to_string();
        if e.file_type().unwrap().is_dir() {
            n += flip_blocks(&p);
        } else if name.starts_with("blk_")
            && !name.ends_with(".meta")
            && p.to_string_lossy().contains("/finalized/")
        {
            let mut b = std::fs::read(&p).unwrap();
            if let Some(x) = b.first_mut() {
                *x ^= 0xff;
                std::fs::write(&p, &b).unwrap();
                n += 1;
            }
        }
    }
    n
}

#[test]
fn a_pin_left_by_a_crash_is_removed_at_start() {
    let mut env = Env::new();
    let c = Cluster::create(&env, &[]);
    env.extra_config = c.hopsfs_config("local");
    let stale = c.volume(2, 1).join("hopsdr-pin/20260101T000000Z/current");
    std::fs::create_dir_all(&stale).unwrap();
    std::fs::write(stale.join("blk_1"), b"x").unwrap();
    let _d = env.start();
    assert!(!c.volume(2, 1).join("hopsdr-pin").exists());
}

#[test]
fn an_unreachable_datanode_fails_the_backup_naming_it() {
    let mut env = Env::new();
    let c = Cluster::create(&env, &[]);
    let sshd = crate::ssh::Sshd::start();
    // dn3 is reached over ssh at an address nothing listens on.
    let cfg = c.hopsfs_config("local").replacen(
        "name = \"dn3\"\nhost = \"local\"",
        "name = \"dn3\"\nhost = \"127.0.0.9\"",
        1,
    );
    env.extra_config = cfg + &ssh_config(&sshd, "client_key", None);
    let _d = env.start();
    let out = env.ctl(&["backup", "start", "--wait"]);
    assert_eq!(out.status.code(), Some(1));
    let b = last_backup(&env);
    let e = b["error"].as_str().unwrap();
    assert!(
        e.contains("datanode dn3") && e.contains("ssh to 127.0.0.9 failed"),
        "{e}"
    );
    assert!(env.manifests().is_empty());
    // Nothing was started on the cluster.
    let listing = std::fs::read_dir(c.dir.join("ndb/1/backups"))
        .map(|r| r.count())
        .unwrap_or(0);
    assert_eq!(
        listing, 0,
        "no START BACKUP before every datanode is reachable"
    );
}

/// Consistency under churn: backups taken while files are created, deleted (block files removed
/// seconds later) and appended are either complete — and then restore with safe mode OFF and no
/// missing block — or recorded `partial` with the missing block ids, never silently complete.
/// With the fence, only an append racing the fence window (~0.1 s) can make one partial; with the
/// fence disabled (copying the live volumes late, as the guide does) deletions lose blocks.
#[test]
fn backups_under_churn_are_consistent_and_the_test_bites_without_the_fence() {
    // (state, missing blocks) of each backup taken during churn.
    let run = |fence: bool| -> Vec<(String, usize)> {
        let mut env = Env::new();
        let c = Cluster::create(&env, &["--files", "60"]);
        env.extra_config = c.hopsfs_config("local");
        let fp = if fence { "" } else { "hopsfs.no_fence=3000" };
        let _d = env.start_with(&[("HOPSDR_FAILPOINTS", fp)]);
        let churn_dir = c.dir.clone();
        let churn = std::thread::spawn(move || {
            Command::new(TB)
                .args(["cluster", "churn", "--seconds", "12"])
                .env("HOPSDR_TESTBED_DIR", &churn_dir)
                .output()
                .unwrap()
        });
        let mut results = Vec::new();
        let mut good = None;
        for _ in 0..3 {
            let out = env.ctl(&["backup", "start", "--wait"]);
            let b = last_backup(&env);
            let id = b["id"].as_str().unwrap().to_string();
            let state = b["state"].as_str().unwrap().to_string();
            assert_ne!(
                state,
                "failed",
                "backup {id} failed: {}\n{}",
                b["error"],
                env.log()
            );
            let f = hopsfs_facts(&env, &id);
            let missing = f["missing_blocks"].as_array().map(|a| a.len()).unwrap_or(0);
            match state.as_str() {
                "succeeded" => {
                    assert_eq!(out.status.code(), Some(0));
                    assert_eq!(missing, 0, "{f}");
                    good = Some(id);
                }
                "partial" => {
                    // Never silently complete: the job says so and names the blocks.
                    assert_eq!(out.status.code(), Some(1));
                    assert!(missing > 0, "{f}");
                    assert!(b["error"].as_str().unwrap().starts_with("partial:"), "{b}");
                }
                other => panic!("backup {id} {other}: {}\n{}", b["error"], env.log()),
            }
            results.push((state, missing));
        }
        assert!(churn.join().unwrap().status.success());
        if let (true, Some(id)) = (fence, good) {
            // A complete backup taken under churn restores: safe mode OFF, fsck clean.
            restore_by_hand(&env, &c, &id);
            wait_for("safe mode OFF", Duration::from_secs(30), || {
                (c.safe_mode() == "Safe mode is OFF").then_some(())
            });
            let fsck = c.tool("hdfs", &["fsck", "/"]);
            assert!(
                fsck.status.success(),
                "{}",
                String::from_utf8_lossy(&fsck.stdout)
            );
        }
        results
    };
    let fenced = run(true);
    assert!(
        fenced.iter().any(|(s, _)| s == "succeeded"),
        "with the fence, backups under churn are complete: {fenced:?}"
    );
    let unfenced = run(false);
    assert!(
        unfenced.iter().any(|(s, m)| s == "partial" && *m > 0),
        "without the fence, deleted blocks are lost: {unfenced:?}"
    );
    let lost = |r: &[(String, usize)]| r.iter().map(|x| x.1).sum::<usize>();
    assert!(
        lost(&fenced) < lost(&unfenced),
        "{fenced:?} vs {unfenced:?}"
    );
}

#[test]
fn hopsfs_over_ssh_backs_up_and_restores() {
    let mut env = Env::new();
    let c = Cluster::create(&env, &[]);
    let sshd = crate::ssh::Sshd::start();
    env.extra_config = c.hopsfs_config("127.0.0.1") + &ssh_config(&sshd, "client_key", None);
    let _d = env.start();
    let before = c.fingerprint();
    let id = env.backup_ok();
    let f = hopsfs_facts(&env, &id);
    assert_eq!(f["blocks"], 90);
    assert_eq!(f["missing_blocks"].as_array().unwrap().len(), 0);
    restore_by_hand(&env, &c, &id);
    wait_for("safe mode OFF", Duration::from_secs(30), || {
        (c.safe_mode() == "Safe mode is OFF").then_some(())
    });
    assert_eq!(c.fingerprint(), before);
}

#[test]
fn a_block_stream_cut_mid_way_fails_and_commits_nothing() {
    let mut env = Env::new();
    let c = Cluster::create(&env, &["--files", "60", "--block-size", "65536"]);
    let sshd = crate::ssh::Sshd::start();
    let (wrapper, flag) = cutting_ssh(&env, "*--null*", 100000);
    env.extra_config =
        c.hopsfs_config("127.0.0.1") + &ssh_config(&sshd, "client_key", Some(&wrapper));
    let _d = env.start();
    let out = env.ctl(&["backup", "start", "--wait"]);
    assert_eq!(out.status.code(), Some(1));
    let e = last_backup(&env)["error"].as_str().unwrap().to_string();
    assert!(
        e.starts_with("hopsfs: copying datanode dn1, volume ")
            && e.contains("the stream ended early"),
        "{e}"
    );
    assert!(env.manifests().is_empty());
    for dn in 1..=3 {
        assert!(
            !c.volume(dn, 1).join("hopsdr-pin").exists(),
            "pins removed after a failure"
        );
    }
    std::fs::remove_file(&flag).unwrap();
    let out = env.ctl(&["backup", "start", "--wait"]);
    assert_eq!(out.status.code(), Some(0), "{}", env.log());
}
