//! Verification jobs: `hopsdrctl verify [ID]` reads a backup back whole and records the
//! outcome; damage (a flipped byte, a truncated or missing blob) marks the backup damaged,
//! which retention then no longer counts as good.

use crate::harness::Env;
use crate::retention::{backup_with, env_with};

fn backup_json(env: &Env, id: &str) -> serde_json::Value {
    let list = env.ctl_json(&["backups", "list"]);
    list["backups"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["id"] == id)
        .unwrap()
        .clone()
}

#[test]
fn verify_records_whole_and_damaged_backups_and_retention_keeps_the_last_good_one() {
    let (env, data) = env_with("[retention]\nkeep_last = 1\nprune_after_backup = false\n");
    let _d = env.start();
    let b1 = backup_with(&env, &data, 1);
    let b2 = backup_with(&env, &data, 2);

    // Without an id: the never-verified backups in turn, oldest first.
    let out = env.ctl(&["--json", "verify", "--wait"]);
    assert_eq!(out.status.code(), Some(0), "{}", env.log());
    assert!(backup_json(&env, &b1)["verified_at"].is_string());
    assert!(backup_json(&env, &b2)["verified_at"].is_null());
    let m = env.metrics();
    assert!(m.contains("hopsdr_verify_damaged_blobs 0"), "{m}");
    assert!(
        !m.contains("hopsdr_verify_last_success_timestamp_seconds 0\n"),
        "{m}"
    );

    // One flipped byte in backup 2's own blob: the job fails naming the file, the backup is
    // marked damaged.
    let blob = env.place_of(&b2, "changing/state.txt");
    blob.flip();
    let out = env.ctl(&["--json", "verify", &b2, "--wait"]);
    assert_eq!(out.status.code(), Some(1));
    let job: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let err = job["error"].as_str().unwrap_or_default().to_string();
    assert!(
        err.contains(&format!("backup {b2} is damaged")) && err.contains("changing/state.txt"),
        "{job}"
    );
    let rec = backup_json(&env, &b2);
    assert_eq!(rec["damaged"], true);
    assert!(rec["verified_at"].is_null());
    assert!(env.metrics().contains("hopsdr_verify_damaged_blobs 1"));

    // keep_last = 1 keeps the newest, and the newest good backup stays too.
    let d = env.ctl_json(&["prune", "--dry-run"]);
    let decisions = d["decisions"].as_array().unwrap();
    assert_eq!(decisions[0]["id"], b2.as_str());
    assert_eq!(decisions[1]["id"], b1.as_str());
    assert_eq!(decisions[1]["keep"], true);
    assert!(
        decisions[1]["reasons"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r == "newest_good_backup"),
        "{d}"
    );

    // A truncated blob and a missing one are found too.
    blob.truncate();
    assert_eq!(env.ctl(&["verify", &b2, "--wait"]).status.code(), Some(1));
    blob.remove();
    let out = env.ctl(&["--json", "verify", &b2, "--wait"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("missing"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );

    // An unknown backup is refused before any job starts.
    let out = env.ctl(&["verify", "20200101T000000Z"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no backup"));
}

/// A blob verify found damaged is written again by the next backup that has its content (the
/// backup says so), instead of being taken as stored because a file with its name exists: the
/// new backup verifies whole, and so does the old one, which shares the blob.
#[test]
fn the_next_backup_heals_a_blob_verify_found_damaged() {
    let (env, data) = env_with("");
    let _d = env.start();
    let b1 = backup_with(&env, &data, 1);
    let blob = env.place_of(&b1, "changing/state.txt");
    blob.flip();
    assert_eq!(env.ctl(&["verify", &b1, "--wait"]).status.code(), Some(1));

    // The same content again: its blob is written again, not reused (a format 3 repository
    // writes it into a new pack, which the index then prefers).
    let b2 = backup_with(&env, &data, 1);
    assert_eq!(env.place_of(&b2, "changing/state.txt").blob, blob.blob);
    assert_ne!(env.place_of(&b2, "changing/state.txt"), blob);
    assert!(
        env.log().contains(&format!(
            "backup {b2} wrote again 1 blob(s) found damaged or missing: healed"
        )),
        "{}",
        env.log()
    );
    for id in [&b2, &b1] {
        let out = env.ctl(&["verify", id, "--wait"]);
        assert_eq!(out.status.code(), Some(0), "{id}: {}", env.log());
    }
    // Healed: the next backup reuses it again.
    let b3 = backup_with(&env, &data, 1);
    assert!(!env.log().contains(&format!("backup {b3} wrote again")));
    // A healing backup killed after its commit, before the catalog forgot the damaged blob:
    // the restart lists it complete, everything verifies, and the next backup writes the blob
    // once more (harmless) and forgets it.
    drop(_d);
    env.place_of(&b3, "changing/state.txt").flip();
    let _d = env.start();
    assert_eq!(env.ctl(&["verify", &b3, "--wait"]).status.code(), Some(1));
    drop(_d);
    let (_, killed) = env.backup_killed_at("backup.committed");
    let _d = env.start();
    assert_eq!(backup_json(&env, &killed)["state"], "succeeded");
    for id in [&killed, &b3] {
        assert_eq!(
            env.ctl(&["verify", id, "--wait"]).status.code(),
            Some(0),
            "{id}"
        );
    }
    let again = backup_with(&env, &data, 1);
    assert!(env
        .log()
        .contains(&format!("backup {again} wrote again 1 blob(s)")));
    let after = backup_with(&env, &data, 1);
    assert!(!env.log().contains(&format!("backup {after} wrote again")));
    // A missing blob is healed the same way.
    env.place_of(&b3, "changing/state.txt").remove();
    assert_eq!(env.ctl(&["verify", &b3, "--wait"]).status.code(), Some(1));
    let b4 = backup_with(&env, &data, 1);
    assert!(env
        .log()
        .contains(&format!("backup {b4} wrote again 1 blob(s)")));
    assert_eq!(env.ctl(&["verify", &b4, "--wait"]).status.code(), Some(0));
}

#[cfg(feature = "testbed")]
#[test]
fn sigterm_during_a_verify_stops_it_between_files_and_records_it_interrupted_not_damaged() {
    use nix::sys::signal::Signal;
    use std::time::Duration;
    let (env, data) = env_with("");
    let b1 = {
        let _d = env.start();
        backup_with(&env, &data, 1)
    };
    let mut d = env.start_with(&[("HOPSDR_FAILPOINTS", "verify.file=pause")]);
    let started = env.ctl_json(&["verify", &b1]);
    let job = started["job_id"].as_i64().unwrap();
    let marker = env.path().join("verify.file.reached");
    crate::harness::wait_for("the failpoint", Duration::from_secs(30), || {
        marker.exists().then_some(())
    });
    d.signal(Signal::SIGTERM);
    assert_eq!(d.wait_exit(Duration::from_secs(30)).code(), Some(0));
    let conn = rusqlite::Connection::open(env.catalog()).unwrap();
    let (state, error): (String, String) = conn
        .query_row("SELECT state, error FROM jobs WHERE id=?1", [job], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .unwrap();
    assert_eq!(state, "interrupted");
    assert!(error.contains("interrupted"), "{error}");
    let (verified, damaged): (Option<String>, i64) = conn
        .query_row(
            "SELECT verified_at, damaged FROM backups WHERE id=?1",
            [&b1],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!((verified, damaged), (None, 0), "no verdict on the backup");
}
