//! The daemon's life: sd-notify messages, SIGHUP reloads (and keeps the old config when the new
//! one is broken), SIGTERM at a safe point, and kill -9 in the middle of a backup.

use std::os::unix::net::UnixDatagram;
use std::time::Duration;

use nix::sys::signal::Signal;

use crate::harness::{wait_for, Env};

struct NotifyListener {
    sock: UnixDatagram,
    seen: Vec<String>,
}

impl NotifyListener {
    fn new(env: &Env) -> (NotifyListener, String) {
        let path = env.path().join("notify.sock");
        let sock = UnixDatagram::bind(&path).unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        (
            NotifyListener {
                sock,
                seen: Vec::new(),
            },
            path.display().to_string(),
        )
    }

    /// Waits until a datagram contains `needle`.
    fn expect(&mut self, needle: &str) {
        let mut buf = [0u8; 4096];
        let start = std::time::Instant::now();
        loop {
            if self.seen.iter().any(|m| m.contains(needle)) {
                return;
            }
            if let Ok(n) = self.sock.recv(&mut buf) {
                self.seen
                    .push(String::from_utf8_lossy(&buf[..n]).into_owned());
                continue;
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "no notify message with {needle:?}; saw {:?}",
                self.seen
            );
        }
    }
}

#[test]
fn sd_notify_ready_status_watchdog_stopping() {
    let env = Env::new();
    let (mut n, path) = NotifyListener::new(&env);
    let mut d = env.start_with(&[("NOTIFY_SOCKET", &path), ("WATCHDOG_USEC", "400000")]);
    n.expect("READY=1");
    // READY comes only after the socket is bound: the daemon answers now.
    env.ctl_json(&["status"]);
    n.expect("WATCHDOG=1");
    let c = n.seen.iter().filter(|m| m.contains("WATCHDOG=1")).count();
    n.seen.retain(|m| !m.contains("WATCHDOG=1"));
    let _ = c;
    n.expect("WATCHDOG=1"); // keeps pinging
    let out = env.ctl(&["backup", "start", "--wait"]);
    assert!(out.status.success());
    n.expect("STATUS=backup ");
    n.expect("succeeded");
    d.signal(Signal::SIGTERM);
    n.expect("STOPPING=1");
    assert!(d.wait_exit(Duration::from_secs(30)).success());
    assert!(!env.socket().exists(), "socket removed on exit");
}

#[test]
fn sighup_reloads_a_valid_config_and_keeps_the_old_one_when_broken() {
    let mut env = Env::new();
    env.extra_config =
        "[[schedule]]\nname = \"first\"\ncron = \"0 3 * * *\"\njob = \"backup\"\n".into();
    let d = env.start();
    let names = |env: &Env| -> Vec<String> {
        env.ctl_json(&["status"])["schedules"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["name"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(names(&env), ["first"]);

    // Broken: the daemon logs every error and keeps running with the old config.
    std::fs::write(
        env.config_path(),
        env.config_text() + "[[schedule]]\nname = \"second\"\ncron = \"61 * * * *\"\njob = \"backup\"\nbogus = 1\n",
    )
    .unwrap();
    d.signal(Signal::SIGHUP);
    wait_for(
        "the reload error in the log",
        Duration::from_secs(30),
        || {
            env.log()
                .contains("configuration not reloaded")
                .then_some(())
        },
    );
    let log = env.log();
    assert!(log.contains("minute out of range"), "{log}");
    assert!(log.contains("bogus"), "{log}");
    assert_eq!(names(&env), ["first"]);

    // Valid: applied.
    env.extra_config =
        "[[schedule]]\nname = \"second\"\ncron = \"0 4 * * *\"\njob = \"backup\"\n".into();
    env.write_config();
    d.signal(Signal::SIGHUP);
    wait_for("the new schedule", Duration::from_secs(30), || {
        (names(&env) == ["second"]).then_some(())
    });
}

#[cfg(feature = "testbed")]
#[test]
fn kill_9_during_a_backup_leaves_it_interrupted_and_the_next_one_succeeds() {
    let env = Env::new();
    let (job, backup) = env.backup_killed_at("backup.before_commit");

    let _d = env.start();
    let j = env.ctl_json(&["job", &job.to_string()]);
    assert_eq!(j["state"], "interrupted", "{j}");
    let b = env.ctl_json(&["backups", "show", &backup]);
    assert_eq!(b["state"], "interrupted");
    assert!(
        env.manifests().is_empty(),
        "no manifest for an interrupted backup"
    );

    let out = env.ctl(&["backup", "start", "--wait"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(env.manifests().len(), 1);
}

/// kill -9 after the manifest is written but before the catalog records the backup: the next
/// start finds the manifest (and every blob it names) and lists the backup complete, with the
/// manifest's figures; the job that died stays interrupted; the backup verifies and is kept.
#[test]
fn kill_9_between_the_manifest_and_the_catalog_keeps_the_backup() {
    let env = Env::new();
    let (job, backup) = env.backup_killed_at("backup.committed");
    assert_eq!(env.manifests().len(), 1, "the manifest was written");

    let _d = env.start();
    let b = env.ctl_json(&["backups", "show", &backup]);
    assert_eq!(b["state"], "succeeded", "{b}");
    assert!(b["files"].as_u64().unwrap() > 0, "{b}");
    assert!(b["finished_at"].is_string(), "{b}");
    let j = env.ctl_json(&["job", &job.to_string()]);
    assert_eq!(j["state"], "interrupted", "{j}");
    assert!(env.log().contains("recorded succeeded"), "{}", env.log());
    let out = env.ctl(&["repo", "check"]);
    assert_eq!(out.status.code(), Some(0));
    let out = env.ctl(&["verify", &backup, "--wait"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    // A restart changes nothing more.
    drop(_d);
    let _d = env.start();
    let list = env.ctl_json(&["backups", "list"]);
    assert_eq!(Env::listed_ids(&list), [backup.as_str()]);
    assert_eq!(list["backups"][0]["state"], "succeeded");
    drop(_d);

    // The same crash, then a blob of the new manifest lost: the manifest is not trusted, the
    // backup stays interrupted and the problem is logged.
    let (_, second) = env.backup_killed_at("backup.committed");
    let repo = hopsdr::repository::Repository::open_or_init(
        std::sync::Arc::new(hopsdr::repository::LocalStorage::new(env.repo()).unwrap()),
        1,
    )
    .unwrap();
    let chunks = |id: &str| -> std::collections::BTreeSet<hopsdr::ids::BlobId> {
        let m = repo
            .read_manifest(&hopsdr::ids::BackupId::parse(id).unwrap())
            .unwrap();
        m.files().flat_map(|f| f.blobs().to_vec()).collect()
    };
    let only_new = chunks(&second)
        .difference(&chunks(&backup))
        .next()
        .cloned()
        .expect("the catalog copy differs");
    // The object holding it (a pack only the second backup wrote) goes.
    env.place_of_blob(&only_new).remove();
    let _d = env.start();
    let b = env.ctl_json(&["backups", "show", &second]);
    assert_eq!(b["state"], "interrupted", "{b}");
    assert!(
        env.log().contains(&format!(
            "backup {second}: its manifest references 1 missing blob(s)"
        )),
        "{}",
        env.log()
    );
}

#[cfg(feature = "testbed")]
#[test]
fn sigterm_during_a_backup_stops_at_a_safe_point_and_records_it_interrupted() {
    let env = Env::new();
    let (mut n, path) = NotifyListener::new(&env);
    let mut d = env.start_with(&[
        ("HOPSDR_FAILPOINTS", "backup.before_commit=pause"),
        ("NOTIFY_SOCKET", &path),
    ]);
    let started = env.ctl_json(&["backup", "start"]);
    let job = started["job_id"].as_i64().unwrap();
    let marker = env.path().join("backup.before_commit.reached");
    wait_for("the failpoint", Duration::from_secs(30), || {
        marker.exists().then_some(())
    });
    d.signal(Signal::SIGTERM);
    n.expect("STOPPING=1");
    assert_eq!(d.wait_exit(Duration::from_secs(30)).code(), Some(0));
    assert!(env.manifests().is_empty());
    let conn = rusqlite::Connection::open(env.catalog()).unwrap();
    let state: String = conn
        .query_row("SELECT state FROM jobs WHERE id=?1", [job], |r| r.get(0))
        .unwrap();
    assert_eq!(state, "interrupted");
}

/// kill -9 at start, right after the reconcile recorded a committed backup: the next start
/// finds it listed complete already (the reconcile is idempotent), and it verifies.
#[test]
fn kill_9_inside_the_start_reconcile_keeps_the_backup_listed() {
    let env = Env::new();
    let (_, backup) = env.backup_killed_at("backup.committed");
    let marker = env.path().join("start.reconciled_one.reached");
    let mut d = env.start_unready(&[("HOPSDR_FAILPOINTS", "start.reconciled_one=pause")]);
    wait_for("the reconcile", Duration::from_secs(30), || {
        marker.exists().then_some(())
    });
    d.kill9();
    drop(d);
    let _d = env.start();
    let b = env.ctl_json(&["backups", "show", &backup]);
    assert_eq!(b["state"], "succeeded", "{b}");
    let list = env.ctl_json(&["backups", "list"]);
    assert_eq!(Env::listed_ids(&list), [backup.as_str()]);
    assert_eq!(
        env.ctl(&["verify", &backup, "--wait"]).status.code(),
        Some(0)
    );
    assert_eq!(env.ctl(&["repo", "check"]).status.code(), Some(0));
}

/// A `syncfs` that fails while a backup flushes its blobs fails that backup, naming what
/// failed; nothing it wrote passes for durable: the next backup writes its blobs again and
/// verifies whole.
#[test]
fn a_failed_sync_fails_the_backup_and_the_next_one_is_whole() {
    let env = Env::new();
    let _d = env.start_with(&[("HOPSDR_FAILPOINTS", "storage.local.fail_sync=data")]);
    let out = env.ctl(&["backup", "start", "--wait"]);
    assert_eq!(out.status.code(), Some(1));
    let list = env.ctl_json(&["backups", "list"]);
    let first = &list["backups"][0];
    assert_eq!(first["state"], "failed", "{list}");
    let err = first["error"].as_str().unwrap();
    assert!(
        err.contains("sync (syncfs) the data of")
            && err.contains(&env.repo().display().to_string()),
        "{err}"
    );
    assert!(env.manifests().is_empty());
    // The files component had finished: its success never reached the metrics, the backup
    // counts as failed and its components' last status is 0 (the alerts fire).
    let m = env.metrics();
    assert!(
        m.contains("hopsdr_backup_last_status{component=\"files\"} 0"),
        "{m}"
    );
    assert!(
        !m.contains("hopsdr_backup_last_success_timestamp_seconds{component=\"files\"}"),
        "{m}"
    );
    assert!(
        m.contains("hopsdr_backups_total{result=\"failed\"} 1"),
        "{m}"
    );
    let out = env.ctl(&["backup", "start", "--wait"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let m = env.metrics();
    assert!(
        m.contains("hopsdr_backup_last_status{component=\"files\"} 1"),
        "{m}"
    );
    assert!(
        m.contains("hopsdr_backup_last_success_timestamp_seconds{component=\"files\"}"),
        "{m}"
    );
    let id = env.ctl_json(&["backups", "list"])["backups"][1]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let out = env.ctl(&["verify", &id, "--wait"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert_eq!(env.ctl(&["repo", "check"]).status.code(), Some(0));
}

/// One writer per repository: a second hopsdrd on the same repository, and `hopsdrd
/// --rebuild-catalog` while the daemon runs, are refused naming the holder (and remove none of
/// its files); once the daemon stops, they run.
#[test]
fn a_second_writer_on_one_repository_is_refused_naming_the_holder() {
    let env = Env::new();
    let d = env.start();
    let pid = d.pid();
    // The daemon's temp file of a blob being written: a second writer must not remove it.
    let tmp = env.repo().join("blobs/.tmp-1-x");
    std::fs::create_dir_all(tmp.parent().unwrap()).unwrap();
    std::fs::write(&tmp, b"in flight").unwrap();
    let mut other = Env::new();
    other.repository_config = Some(format!(
        "[repository]\ntype = \"local\"\npath = \"{}\"\n",
        env.repo().display()
    ));
    let (code, err) = other.start_refused();
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains(&format!(
            "the repository local:{} is locked by hopsdrd pid {pid} on",
            env.repo().display()
        )) && err.contains("stop that one first"),
        "{err}"
    );
    let out = std::process::Command::new(crate::harness::HOPSDRD)
        .args(["--rebuild-catalog", "--config"])
        .arg(env.config_path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("locked by hopsdrd pid {pid}")),
        "{err}"
    );
    assert!(tmp.exists(), "the running daemon's temp file is left alone");
    drop(d);
    let _d = other.start();
}
