//! A real S3 server that enforces versioning, Object Lock and per-user IAM policies: moto in
//! server mode on a loopback port (installed by scripts/setup-test-deps), set up by
//! `moto_admin.py` with the users the README describes (writer, pruner) and an attacker.

use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use hopsdr::repository::{S3Options, S3Storage, Versioning};

use crate::harness::{free_port, wait_for};

const MOTO: &str = "/opt/hopsdr-test/moto";
pub const BUCKET: &str = "hopsdr-locked";

pub struct Moto {
    child: Child,
    pub port: u16,
    /// `{"writer": {"access_key_id", "secret_access_key"}, "pruner": ..., "attacker": ...}`.
    pub keys: serde_json::Value,
}

impl Moto {
    /// A fresh server with the bucket (versioned; with Object Lock when asked) and its users.
    pub fn start(object_lock: bool) -> Moto {
        Self::start_with(if object_lock { &["--object-lock"] } else { &[] })
    }

    /// As [`Moto::start`] with `moto_admin.py`'s options.
    pub fn start_with(options: &[&str]) -> Moto {
        let port = free_port();
        let child = Command::new(format!("{MOTO}/bin/moto_server"))
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("moto_server: run scripts/setup-test-deps");
        let mut m = Moto {
            child,
            port,
            keys: serde_json::Value::Null,
        };
        wait_for("moto to listen", Duration::from_secs(30), || {
            TcpStream::connect(("127.0.0.1", port)).ok().map(|_| ())
        });
        let mut args = vec![
            concat!(env!("CARGO_MANIFEST_DIR"), "/tests/it/moto_admin.py").to_string(),
            m.endpoint(),
            BUCKET.to_string(),
        ];
        args.extend(options.iter().map(|o| o.to_string()));
        let out = Command::new(format!("{MOTO}/bin/python"))
            .args(&args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "moto_admin.py: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        m.keys = serde_json::from_slice(&out.stdout).unwrap();
        m
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The access key id and secret of `user`.
    pub fn key(&self, user: &str) -> (String, String) {
        let k = &self.keys[user];
        (
            k["access_key_id"].as_str().unwrap().to_string(),
            k["secret_access_key"].as_str().unwrap().to_string(),
        )
    }

    /// How `user` reaches the bucket under `prefix`.
    pub fn options(&self, user: &str, prefix: &str) -> S3Options {
        let (id, secret) = self.key(user);
        S3Options {
            settings: hopsdr::config::S3Settings {
                endpoint: Some(self.endpoint()),
                region: "us-east-1".into(),
                bucket: BUCKET.into(),
                prefix: prefix.into(),
                path_style: true,
                access_key_id: Some(id),
                secret_access_key: None,
                prune_access_key_id: None,
                prune_secret_access_key: None,
                versioning: hopsdr::config::VersioningPolicy::Warn,
                object_lock: None,
                ca_bundle: None,
                part_size: 5 << 20,
                parallel_parts: 2,
                bandwidth_limit: None,
            },
            secret_access_key: Some(secret),
            session_token: None,
            ca_bundle_pem: None,
            pacer: None,
        }
    }

    pub fn storage(&self, user: &str, prefix: &str) -> S3Storage {
        S3Storage::new(&self.options(user, prefix)).unwrap()
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn the_bucket_controls_work_against_a_server_that_enforces_them() {
    use chrono::Utc;
    use hopsdr::repository::{LockMode, Storage};

    let moto = Moto::start(true);
    let w = moto.storage("writer", "r1");
    assert_eq!(
        w.run_control("versioning", w.control().versioning())
            .unwrap(),
        Versioning::Enabled
    );
    assert!(w
        .run_control("object lock", w.control().object_lock_enabled())
        .unwrap());

    // A locked put carries its retention; an extension is accepted; the writer cannot delete.
    let until = Utc::now() + chrono::Duration::days(2);
    w.run_control(
        "put",
        w.control().put_locked(
            "blobs/aa/x",
            b"locked".to_vec(),
            LockMode::Governance,
            until,
        ),
    )
    .unwrap();
    let (mode, got) = w
        .run_control("retention", w.control().retention("blobs/aa/x"))
        .unwrap()
        .expect("a retention");
    assert_eq!(mode, LockMode::Governance);
    assert_eq!(got.timestamp(), until.timestamp());
    let later = until + chrono::Duration::days(5);
    w.run_control(
        "extend",
        w.control()
            .set_retention("blobs/aa/x", LockMode::Governance, later),
    )
    .unwrap();
    let (_, got) = w
        .run_control("retention", w.control().retention("blobs/aa/x"))
        .unwrap()
        .unwrap();
    assert_eq!(got.timestamp(), later.timestamp());
    assert_eq!(w.get("blobs/aa/x").unwrap(), b"locked");
    let e = w.delete("blobs/aa/x").unwrap_err();
    assert!(
        e.to_string().contains("AccessDenied") || e.to_string().contains("403"),
        "{e}"
    );

    // The attacker deletes (a delete marker): the versions still tell what was there.
    let a = moto.storage("attacker", "r1");
    w.put("manifests/m1", b"one").unwrap();
    let before = Utc::now();
    std::thread::sleep(Duration::from_millis(1100));
    a.delete("manifests/m1").unwrap();
    assert!(a.get("manifests/m1").unwrap_err().is_not_found());
    let versions = w
        .run_control("versions", w.control().versions("manifests/"))
        .unwrap();
    assert_eq!(versions.len(), 2, "{versions:?}");
    assert!(versions.iter().any(|v| v.delete_marker));
    let then = hopsdr::repository::versions_as_of(&versions, before);
    assert!(then.contains_key("manifests/m1"), "{then:?}");
    let now = hopsdr::repository::versions_as_of(&versions, Utc::now());
    assert!(!now.contains_key("manifests/m1"));
}

/// The `[repository]` section of a daemon backing up to the moto bucket as `writer`, with
/// the prune identity when given.
fn repository_config(env: &crate::harness::Env, moto: &Moto, pruner: Option<&str>) -> String {
    use std::os::unix::fs::PermissionsExt;
    let secret = |user: &str| {
        let p = env.path().join(format!("{user}.secret"));
        std::fs::write(&p, format!("{}\n", moto.key(user).1)).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        p
    };
    let mut s = format!(
        "[repository]\ntype = \"s3\"\nendpoint = \"{}\"\nbucket = \"{BUCKET}\"\nprefix = \"c1\"\npath_style = true\n\
         access_key_id = \"{}\"\nsecret_access_key = {{ file = \"{}\" }}\n",
        moto.endpoint(),
        moto.key("writer").0,
        secret("writer").display()
    );
    if let Some(p) = pruner {
        s.push_str(&format!(
            "prune_access_key_id = \"{}\"\nprune_secret_access_key = {{ file = \"{}\" }}\n",
            moto.key(p).0,
            secret(p).display()
        ));
    }
    s
}

#[test]
fn the_backup_identity_backs_up_but_only_the_prune_identity_prunes() {
    let moto = Moto::start(false);
    let mut env = crate::harness::Env::new();
    env.repository_config = Some(repository_config(&env, &moto, None));
    env.extra_config = "[retention]\nkeep_last = 1\nprune_after_backup = false\n".into();
    {
        let _d = env.start();
        let first = env.backup_ok();
        std::fs::write(env.path().join("data/cluster-defns/notes.txt"), "changed\n").unwrap();
        let second = env.backup_ok();
        // The writer may not delete: the prune stops before it forgets anything, saying why.
        let out = env.ctl(&["prune", "--wait"]);
        assert_ne!(out.status.code(), Some(0));
        let log = env.log();
        assert!(
            log.contains("may not delete objects") && log.contains("prune_access_key_id"),
            "{log}"
        );
        let list = env.ctl_json(&["backups", "list"]);
        assert_eq!(
            crate::harness::Env::listed_ids(&list),
            [first.clone(), second.clone()]
        );
    }
    // Both backups' manifests are still in the bucket.
    let w = moto.storage("writer", "c1");
    use hopsdr::repository::Storage;
    let manifests = w.list("manifests/").unwrap();
    assert_eq!(manifests.len(), 2, "{manifests:?}");

    // With the prune identity, the prune forgets the older backups and collects their blobs.
    // A backup first, so that the backup store remembers which blobs exist (the first
    // backup's notes among them); the prune's store deletes that one; the next backup with the
    // same notes must store it again (the backup store forgets what it remembered), and verify.
    env.repository_config = Some(repository_config(&env, &moto, Some("pruner")));
    let _d = env.start();
    std::fs::write(env.path().join("data/cluster-defns/notes.txt"), "third\n").unwrap();
    let third = env.backup_ok();
    let out = env.ctl(&["prune", "--wait"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        env.log()
    );
    let list = env.ctl_json(&["backups", "list"]);
    assert_eq!(
        crate::harness::Env::listed_ids(&list),
        std::slice::from_ref(&third)
    );
    std::fs::write(
        env.path().join("data/cluster-defns/notes.txt"),
        "head node: hops1\n",
    )
    .unwrap();
    let fourth = env.backup_ok();
    env.ctl_ok(&["verify", &fourth, "--wait"]);
    let check = env.ctl_json(&["repo", "check"]);
    assert_eq!(check["problems"], serde_json::json!([]));
}

#[test]
fn a_bucket_without_versioning_is_refused_or_warned_about_at_start() {
    let moto = Moto::start_with(&["--no-versioning"]);
    let mut env = crate::harness::Env::new();
    let base = repository_config(&env, &moto, None);
    env.repository_config = Some(format!("{base}versioning = \"require\"\n"));
    let (code, err) = env.start_refused();
    assert_ne!(code, Some(0));
    assert!(
        err.contains("versioning is not enabled on the bucket")
            && err.contains("versioning = \"warn\""),
        "{err}"
    );
    // The default warns and goes on.
    env.repository_config = Some(base);
    {
        let _d = env.start();
        env.backup_ok();
    }
    assert!(
        env.log()
            .contains("versioning is not enabled on the bucket"),
        "{}",
        env.log()
    );
    // A versioned bucket: no warning.
    let versioned = Moto::start(false);
    let mut env = crate::harness::Env::new();
    env.repository_config = Some(format!(
        "{}versioning = \"require\"\n",
        repository_config(&env, &versioned, None)
    ));
    let _d = env.start();
    env.backup_ok();
    assert!(!env.log().contains("versioning is not enabled"));
}

#[test]
fn with_object_lock_every_object_is_locked_and_gc_extends_and_spares_locks() {
    use chrono::Utc;
    use hopsdr::repository::{LockMode, Storage};

    let moto = Moto::start(true);
    let mut env = crate::harness::Env::new();
    env.repository_config = Some(format!(
        "{}object_lock = {{ mode = \"governance\", days = 1 }}\n",
        repository_config(&env, &moto, Some("pruner"))
    ));
    env.extra_config = "[retention]\nkeep_last = 1\nprune_after_backup = false\n".into();
    // The collector's clock runs 20 hours ahead: the day-long locks look close to their end.
    let _d = env.start_with(&[("HOPSDR_FAILPOINTS", "gc.clock_ahead_hours=20")]);
    let first = env.backup_ok();

    // Every object the backup wrote carries a retention of about a day.
    let w = moto.storage("writer", "c1");
    let locked = |key: &str| {
        w.run_control("retention", w.control().retention(key))
            .unwrap()
    };
    let objects: Vec<String> = ["packs/", "index/", "manifests/"]
        .iter()
        .flat_map(|p| w.list(p).unwrap())
        .map(|o| o.key)
        .collect();
    assert!(objects.len() > 2, "{objects:?}");
    for key in &objects {
        let (mode, until) = locked(key).unwrap_or_else(|| panic!("{key} has no retention"));
        assert_eq!(mode, LockMode::Governance);
        assert!(
            until > Utc::now() + chrono::Duration::hours(23),
            "{key}: {until}"
        );
    }

    // Twenty hours on (for the collector), less than half of each lock is left: the prune
    // locks every referenced object for a whole day from then.
    env.ctl_ok(&["prune", "--wait"]);
    for key in &objects {
        let (_, until) = locked(key).unwrap();
        assert!(
            until > Utc::now() + chrono::Duration::hours(43),
            "{key} extended: {until}"
        );
    }

    // The first backup forgotten: its own blobs are unreferenced but still locked, so the
    // collection leaves them (even with the prune identity's right to delete).
    std::fs::write(env.path().join("data/cluster-defns/notes.txt"), "other\n").unwrap();
    let second = env.backup_ok();
    let before: std::collections::BTreeSet<String> = w
        .list("packs/")
        .unwrap()
        .into_iter()
        .map(|o| o.key)
        .collect();
    env.ctl_ok(&["prune", "--wait"]);
    let list = env.ctl_json(&["backups", "list"]);
    assert_eq!(
        crate::harness::Env::listed_ids(&list),
        std::slice::from_ref(&second)
    );
    assert_ne!(first, second);
    let after: std::collections::BTreeSet<String> = w
        .list("packs/")
        .unwrap()
        .into_iter()
        .map(|o| o.key)
        .collect();
    assert!(before.is_subset(&after), "no locked pack deleted");
    env.ctl_ok(&["verify", &second, "--wait"]);
}

/// With `[agents] enabled` the data nodes' agents write their packs straight into the bucket:
/// each one carries the repository's Object Lock retention, like hopsdrd's own objects.
#[cfg(feature = "testbed")]
#[test]
fn with_agents_and_object_lock_the_agents_packs_are_locked_too() {
    use chrono::Utc;
    use hopsdr::repository::{LockMode, Storage};

    let moto = Moto::start(true);
    let mut env = crate::harness::Env::new();
    let c = crate::tbcluster::Cluster::create(&env, &[]);
    env.repository_config = Some(format!(
        "{}object_lock = {{ mode = \"governance\", days = 1 }}\n",
        repository_config(&env, &moto, None)
    ));
    env.extra_config = c.rondb_config("local") + &crate::agents::agents_enabled_config();
    let _d = env.start();
    let before = moto.storage("writer", "c1").list("packs/").unwrap().len();
    env.backup_ok();
    assert!(
        env.log().contains("stored by the node's agent"),
        "{}",
        env.log()
    );
    let w = moto.storage("writer", "c1");
    let packs = w.list("packs/").unwrap();
    assert!(
        packs.len() > before + 1,
        "the agents wrote packs: {packs:?}"
    );
    for o in &packs {
        let (mode, until) = w
            .run_control("retention", w.control().retention(&o.key))
            .unwrap()
            .unwrap_or_else(|| panic!("{} has no retention", o.key));
        assert_eq!(mode, LockMode::Governance);
        assert!(
            until > Utc::now() + chrono::Duration::hours(23),
            "{}: {until}",
            o.key
        );
    }
}

/// A backup an attacker with delete rights erased (delete markers on its manifest and blobs)
/// is restored from the versions the bucket kept, with `restore start --as-of`.
#[cfg(feature = "testbed")]
#[test]
fn a_backup_deleted_by_an_attacker_restores_from_its_versions_with_as_of() {
    use hopsdr::repository::Storage;

    let moto = Moto::start(false);
    let (mut env, c, m) = crate::restore::setup();
    env.repository_config = Some(repository_config(&env, &moto, None));
    let _d = env.start();
    let before = c.fingerprint();
    let id = env.backup_ok();
    std::thread::sleep(Duration::from_millis(1100));
    let after_backup = chrono::Utc::now();
    std::thread::sleep(Duration::from_millis(1100));

    // The attacker deletes the backup's manifest and every blob.
    let a = moto.storage("attacker", "c1");
    let mut erased = 0;
    for prefix in ["manifests/", "packs/", "index/"] {
        for o in a.list(prefix).unwrap() {
            a.delete(&o.key).unwrap();
            erased += 1;
        }
    }
    assert!(erased >= 3, "{erased}");
    assert!(a.list("packs/").unwrap().is_empty());

    crate::restore::disaster(&c, &m);
    // As it is now, the backup is gone: refused before anything is touched.
    let out = env.ctl(&["restore", "start", &id, "--yes", "--wait"]);
    assert_ne!(out.status.code(), Some(0));
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(err.contains("not found"), "{err}");

    // As it was after the backup: the versions restore the cluster whole.
    let at = after_backup.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    env.restore_ok(&id, &["--as-of", &at]);
    assert_eq!(c.fingerprint(), before);
    assert!(m.login("app", "app-pass"));
}

/// SIGKILL after a prune extended its first lock: after the restart every backup is still
/// listed and verifies, and the next prune extends the rest.
#[cfg(feature = "testbed")]
#[test]
fn killed_while_extending_locks_the_next_prune_finishes() {
    use chrono::Utc;
    use hopsdr::repository::Storage;

    let moto = Moto::start(true);
    let mut env = crate::harness::Env::new();
    env.repository_config = Some(format!(
        "{}object_lock = {{ mode = \"governance\", days = 1 }}\n",
        repository_config(&env, &moto, Some("pruner"))
    ));
    env.extra_config = "[retention]\nkeep_last = 5\nprune_after_backup = false\n".into();
    let id = {
        let _d = env.start();
        env.backup_ok()
    };
    // The collector's clock 20 hours ahead: every lock needs extending; killed after the first.
    let marker = env.path().join("gc.retention_extended.reached");
    let mut d = env.start_with(&[(
        "HOPSDR_FAILPOINTS",
        "gc.clock_ahead_hours=20,gc.retention_extended=pause",
    )]);
    env.ctl_ok(&["prune"]);
    crate::harness::wait_for("the first lock extended", Duration::from_secs(60), || {
        marker.exists().then_some(())
    });
    d.kill9();
    let ahead = [("HOPSDR_FAILPOINTS", "gc.clock_ahead_hours=20")];
    let _d = env.start_with(&ahead);
    let list = env.ctl_json(&["backups", "list"]);
    assert_eq!(
        crate::harness::Env::listed_ids(&list),
        std::slice::from_ref(&id)
    );
    env.ctl_ok(&["prune", "--wait"]);
    let w = moto.storage("writer", "c1");
    for o in ["packs/", "index/", "manifests/"]
        .iter()
        .flat_map(|p| w.list(p).unwrap())
    {
        let (_, until) = w
            .run_control("retention", w.control().retention(&o.key))
            .unwrap()
            .unwrap();
        assert!(
            until > Utc::now() + chrono::Duration::hours(43),
            "{}: {until}",
            o.key
        );
    }
    env.ctl_ok(&["verify", &id, "--wait"]);
}
