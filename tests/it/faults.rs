//! Disk full where hopsdrd writes: the repository, the catalog's directory and the restore's
//! staging directory, each on a small file system made for the test (tmpfs with a size). A full
//! disk fails the job with a message naming what was being written, never leaves a backup
//! listed complete that the repository cannot prove, and the next run after room is made
//! succeeds.

use crate::harness::{wait_for, Env, SmallFs};

/// `n` bytes that do not compress (xorshift).
fn noise(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

#[test]
fn a_full_repository_fails_the_backup_and_the_next_one_is_whole() {
    let mut env = Env::new();
    let _fs = SmallFs::mount(&env.repo(), "8m");
    let big = env.path().join("data/big");
    std::fs::create_dir_all(&big).unwrap();
    std::fs::write(big.join("noise"), noise(16 << 20, 7)).unwrap();
    env.files.push((big.clone(), false));
    env.extra_config = "[retention]\nkeep_last = 5\nprune_after_backup = false\n".into();
    let _d = env.start();
    let out = env.ctl(&["--json", "backup", "start", "--wait"]);
    assert_eq!(out.status.code(), Some(1), "{}", env.log());
    let job: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(job["state"], "failed", "{job}");
    let err = job["error"].as_str().unwrap();
    assert!(
        err.contains("No space left on device")
            && err.contains(&env.repo().display().to_string())
            && err.contains("make room there"),
        "{err}"
    );
    assert!(env.manifests().is_empty(), "nothing committed");
    let list = env.ctl_json(&["backups", "list"]);
    assert_eq!(list["backups"][0]["state"], "failed", "{list}");

    // Room made (the big file no longer backed up): the next backup is whole and the garbage
    // of the failed one is collected.
    std::fs::remove_file(big.join("noise")).unwrap();
    let id = env.backup_ok();
    assert_eq!(env.ctl(&["prune", "--wait"]).status.code(), Some(0));
    let check = env.ctl_json(&["repo", "check"]);
    assert_eq!(check["unreferenced_blobs"], 0, "{check}");
    assert_eq!(check["problems"].as_array().unwrap().len(), 0, "{check}");
    assert_eq!(env.ctl(&["verify", &id, "--wait"]).status.code(), Some(0));
}

#[test]
fn a_full_catalog_directory_refuses_jobs_naming_the_catalog_and_loses_nothing() {
    let env = Env::new();
    let fs = SmallFs::mount(env.catalog().parent().unwrap(), "2m");
    let mut d = env.start();
    let first = env.backup_ok();
    let filler = fs.fill("filler");
    // A backup cannot even be recorded: refused, naming the catalog and what to do.
    let out = env.ctl(&["backup", "start", "--wait"]);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains(&env.catalog().display().to_string())
            && err.contains("the file system of the catalog is full: make room there"),
        "{err}\n{}",
        String::from_utf8_lossy(&out.stdout)
    );
    // The daemon still answers, and what it lists is what the repository holds.
    let status = env.ctl_json(&["status"]);
    assert_eq!(status["version"], env!("CARGO_PKG_VERSION"));
    std::fs::remove_file(&filler).unwrap();
    d.kill9();
    let _d = env.start();
    let list = env.ctl_json(&["backups", "list"]);
    let complete: Vec<String> = list["backups"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|b| b["state"] == "succeeded")
        .map(|b| b["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(complete, env.manifests(), "{list}");
    assert!(complete.contains(&first));
    let second = env.backup_ok();
    assert_eq!(
        env.ctl(&["verify", &second, "--wait"]).status.code(),
        Some(0)
    );
}

#[cfg(feature = "testbed")]
#[test]
fn a_full_staging_directory_fails_the_restore_step_and_resume_finishes() {
    use crate::restore::{backed_up, disaster, setup};
    let (env, c, m) = setup();
    let (before, id) = backed_up(&env, &c);
    let fs = SmallFs::mount(&env.path().join("staging"), "16k");
    disaster(&c, &m);
    let _d = env.start();
    let out = env.ctl(&["restore", "start", &id, "--yes", "--wait"]);
    assert_eq!(out.status.code(), Some(1), "{}", env.log());
    let last = env.ctl_json(&["restore", "status"]);
    let failed = last["restore"]["error"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        failed.contains("No space left on device")
            && failed.contains(&env.path().join("staging").display().to_string())
            && failed.contains("make room in [restore] staging_dir"),
        "{last}"
    );
    fs.resize("64m");
    env.ctl_ok(&["restore", "resume", "--wait"]);
    assert_eq!(c.fingerprint(), before);
    wait_for(
        "the staged files removed",
        std::time::Duration::from_secs(30),
        || {
            (std::fs::read_dir(env.path().join("staging"))
                .unwrap()
                .count()
                == 0)
                .then_some(())
        },
    );
}
