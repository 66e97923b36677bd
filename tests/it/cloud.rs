//! HopsFS in cloud mode (issue 21, part 2) against moto in server mode (a versioned bucket,
//! IAM enforced): the test-bed's HopsFS writes and deletes its block objects as the real one
//! does (as user `pruner`: it may delete); hopsdr reads, lists versions and copies (as user
//! `writer`: it cannot delete). A backup records the versions current at the consistency
//! point; blocks deleted, appended (a new genstamp's key, the old one deleted) and an object
//! overwritten after the backup are put back by the restore (killed after its first copy and
//! resumed), so every block the restored metadata references is whole; a bucket without versioning is refused naming it; a
//! referenced block without its object makes the backup partial.

use std::os::unix::fs::PermissionsExt;

use hopsdr::repository::Storage;

use crate::harness::Env;
use crate::moto::{Moto, BUCKET};
use crate::tbcluster::{Cluster, TB};

/// The test-bed's HopsFS acting on the bucket: `sync` or `check`.
fn cloud(env: &Env, c: &Cluster, moto: &Moto, op: &str) -> String {
    let (id, secret) = moto.key("pruner");
    let f = env.path().join("hopsfs-bucket.secret");
    std::fs::write(&f, format!("{secret}\n")).unwrap();
    let o = c.tb(&[
        "cloud",
        op,
        "--endpoint",
        &moto.endpoint(),
        "--bucket",
        BUCKET,
        "--access-key",
        &id,
        "--secret-file",
        f.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

/// The first block data object in the bucket.
fn first_data_object(w: &hopsdr::repository::S3Storage) -> String {
    w.list("hopsfs-blocks-set-")
        .unwrap()
        .into_iter()
        .find(|o| o.key.ends_with(".data"))
        .unwrap()
        .key
}

/// `[rondb]` and `[hopsfs]` in cloud mode, hopsdr reaching the bucket as `writer`.
fn config(env: &Env, c: &Cluster, moto: &Moto) -> String {
    let (id, secret) = moto.key("writer");
    let f = env.path().join("hopsdr-bucket.secret");
    std::fs::write(&f, format!("{secret}\n")).unwrap();
    std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o600)).unwrap();
    c.rondb_config("local")
        + &format!(
            "[hopsfs]\nblock_storage = \"cloud\"\nreferenced_blocks = [\"{TB}\", \"backup\", \"blocks\", \"--dir\", \"{}\"]\n\
             [hopsfs.cloud]\nbucket = \"{BUCKET}\"\nendpoint = \"{}\"\nregion = \"us-east-1\"\npath_style = true\n\
             access_key_id = \"{id}\"\nsecret_access_key = {{ file = \"{}\" }}\n",
            c.dir.display(),
            moto.endpoint(),
            f.display()
        )
}

#[test]
fn blocks_in_a_versioned_bucket_are_put_back_as_they_were_at_the_backup() {
    let mut env = Env::new();
    let c = Cluster::create(&env, &["--files", "20"]);
    let moto = Moto::start_with(&[]);
    let synced = cloud(&env, &c, &moto, "sync");
    assert!(synced.ends_with("0 deleted"), "{synced}");
    let whole = cloud(&env, &c, &moto, "check");
    env.extra_config = config(&env, &c, &moto) + &crate::restore::restore_config(&env, &c);
    let d = env.start();
    let id = env.backup_ok();
    let m = env
        .open_repo()
        .read_manifest(&hopsdr::ids::BackupId::parse(&id).unwrap())
        .unwrap();
    let hf = m.info.facts.hopsfs.clone().unwrap();
    assert_eq!(hf.block_storage, "cloud");
    assert!(
        hf.coverage_checked && hf.missing_blocks.is_empty(),
        "{hf:?}"
    );
    assert!(hf.cloud_objects >= 2 * hf.blocks && hf.blocks > 0, "{hf:?}");

    // After the backup: files deleted, appended, created; one object overwritten in place.
    c.tb(&["cluster", "churn", "--blocks", "9"]);
    let after = cloud(&env, &c, &moto, "sync");
    assert!(!after.ends_with(" 0 deleted"), "{after}");
    let w = moto.storage("pruner", "");
    let victim = first_data_object(&w);
    w.put(&victim, b"overwritten").unwrap();

    // The disaster; the bucket stays (it is the blocks' home).
    drop(d);
    c.tb(&["cluster", "destroy"]);
    c.tb(&["cluster", "redeploy"]);
    let d = env.start();
    let plan = String::from_utf8_lossy(&env.ctl(&["restore", "plan", &id]).stdout).into_owned();
    assert!(
        plan.contains(&format!(
            "put back the {} HopsFS block objects as they were at the backup (bucket {BUCKET})",
            hf.cloud_objects
        )),
        "{plan}"
    );
    // Killed after the first object was put back; the resumed step copies what is left.
    drop(d);
    env.kill_at("restore.cloud.copied", &["restore", "start", &id, "--yes"]);
    let _d = env.start();
    let o = env.ctl(&["restore", "resume", "--wait"]);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}\n{}\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr),
        env.log()
    );
    // Every block the restored metadata references is whole in the bucket again.
    assert_eq!(cloud(&env, &c, &moto, "check"), whole);
    let (good, all) = whole.split_once(" of ").unwrap();
    assert_eq!(good, all.split(' ').next().unwrap(), "{whole}");
}

#[test]
fn an_unversioned_bucket_is_refused_and_a_missing_object_makes_the_backup_partial() {
    let mut env = Env::new();
    let c = Cluster::create(&env, &[]);
    let moto = Moto::start_with(&["--no-versioning"]);
    cloud(&env, &c, &moto, "sync");
    env.extra_config = config(&env, &c, &moto);
    let d = env.start();
    let o = env.ctl(&["backup", "start", "--wait"]);
    assert_eq!(o.status.code(), Some(1));
    let j = env.ctl_json(&["backups", "list"]);
    let err = j["backups"][0]["error"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        err.contains(&format!("the bucket {BUCKET} is not versioned"))
            && err.contains("enable versioning"),
        "{err}"
    );
    drop(d);

    let mut env = Env::new();
    let c = Cluster::create(&env, &[]);
    let moto = Moto::start_with(&[]);
    cloud(&env, &c, &moto, "sync");
    // One block's data object lost before the backup.
    let w = moto.storage("pruner", "");
    let lost = first_data_object(&w);
    w.delete(&lost).unwrap();
    let id: u64 = lost
        .rsplit('/')
        .next()
        .unwrap()
        .trim_start_matches("blk_")
        .split('_')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    env.extra_config = config(&env, &c, &moto);
    let _d = env.start();
    let o = env.ctl(&["backup", "start", "--wait"]);
    let text = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(text.contains("partial"), "{text}");
    let j = env.ctl_json(&["backups", "list"]);
    let reason = j["backups"][0]["error"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        reason.contains("have no object in the bucket") && reason.contains(&id.to_string()),
        "{reason}"
    );
}
