//! Backups end to end through hopsdrctl: success, listing, showing, metrics, a missing path,
//! busy, and the repository contents.

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::harness::{wait_for, Env};

#[test]
fn backup_start_wait_list_show_and_metrics() {
    let env = Env::new();
    let _d = env.start();
    let out = env.ctl(&["backup", "start", "--wait"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        env.log()
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("state:    succeeded"), "{text}");

    let list = env.ctl_json(&["backups", "list"]);
    let backups = list["backups"].as_array().unwrap();
    assert_eq!(backups.len(), 1);
    let b = &backups[0];
    assert_eq!(b["state"], "succeeded");
    // The two files of the files component, plus the catalog copy and the config.
    assert_eq!(b["files"], 4);
    assert_eq!(b["pinned"], false);
    let id = b["id"].as_str().unwrap().to_string();
    assert_eq!(env.manifests().len(), 1);
    assert_eq!(env.manifests(), [id.as_str()]);

    let show = env.ctl_json(&["backups", "show", &id]);
    assert_eq!(show["components"][0]["component"], "files");
    assert_eq!(show["components"][0]["state"], "succeeded");
    let human = env.ctl(&["backups", "show", &id]);
    assert!(String::from_utf8_lossy(&human.stdout).contains("files      succeeded"));

    let table = String::from_utf8_lossy(&env.ctl(&["backups", "list"]).stdout).into_owned();
    assert!(table.starts_with("ID  ") && table.contains(&id), "{table}");

    let status = env.ctl_json(&["status"]);
    assert_eq!(status["last_success"][0]["backup_id"], id.as_str());

    let m = env.metrics();
    assert!(
        m.contains("hopsdr_backups_total{result=\"succeeded\"} 1"),
        "{m}"
    );
    assert!(
        m.contains("hopsdr_backup_last_status{component=\"files\"} 1"),
        "{m}"
    );
    assert!(m.contains("hopsdr_backup_last_success_timestamp_seconds{component=\"files\"}"));

    // promtool accepts the exposition.
    let mut p = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect(
            "promtool (Debian package prometheus) must be installed: run scripts/setup-test-deps",
        );
    p.stdin.take().unwrap().write_all(m.as_bytes()).unwrap();
    let out = p.wait_with_output().unwrap();
    assert!(
        out.status.success() && out.stdout.is_empty() && out.stderr.is_empty(),
        "promtool: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    // A second backup of the same data stores no new blob of it (only the new catalog copy).
    let out = env.ctl(&["--json", "backup", "start", "--wait"]);
    assert_eq!(out.status.code(), Some(0));
    let list = env.ctl_json(&["backups", "list"]);
    let second = &list["backups"][1];
    assert_eq!(second["state"], "succeeded");
    let show = env.ctl_json(&["backups", "show", second["id"].as_str().unwrap()]);
    assert_eq!(show["components"][0]["component"], "files");
    assert_eq!(show["components"][0]["stored_bytes"], 0, "{show}");
}

/// `[hooks]`: the start hook sees the backup's id; the success hook gets the facts; a hook
/// that fails does not fail the backup, and is counted in `hopsdr_hook_failures_total`.
#[test]
fn hooks_run_with_the_facts_and_a_failing_one_never_fails_the_backup() {
    let mut env = Env::new();
    let seen = env.path().join("hook-env");
    env.extra_config = format!(
        "[hooks]\nbackup_start = [\"/bin/sh\", \"-c\", \"env > {0}.start\"]\n\
         backup_success = [\"/bin/sh\", \"-c\", \"env > {0}.success; echo refused >&2; exit 7\"]\n\
         timeout = \"20s\"\n",
        seen.display()
    );
    let _d = env.start();
    let id = env.backup_ok();
    let start = std::fs::read_to_string(seen.with_extension("start")).unwrap();
    assert!(start.contains("HOPSDR_EVENT=backup_start"), "{start}");
    assert!(start.contains(&format!("HOPSDR_BACKUP_ID={id}")), "{start}");
    let success = std::fs::read_to_string(seen.with_extension("success")).unwrap();
    for want in [
        "HOPSDR_EVENT=backup_success".to_string(),
        format!("HOPSDR_BACKUP_ID={id}"),
        "HOPSDR_STATE=succeeded".to_string(),
    ] {
        assert!(success.contains(&want), "{want}: {success}");
    }
    assert!(
        success.contains("HOPSDR_FILES=") && !success.contains("HOPSDR_FILES=0\n"),
        "{success}"
    );
    let m = env.metrics();
    assert!(
        m.lines()
            .any(|l| l == "hopsdr_hook_failures_total{event=\"backup_success\"} 1"),
        "{m}"
    );
    assert!(
        env.log().contains("exit status: 7") && env.log().contains("refused"),
        "{}",
        env.log()
    );
}

#[test]
fn a_missing_path_fails_the_backup_naming_it_and_leaves_no_manifest() {
    let mut env = Env::new();
    let missing = env.path().join("data/not-there.yml");
    env.files.push((missing.clone(), false));
    env.files
        .push((env.path().join("data/optional-not-there"), true));
    let _d = env.start();
    let out = env.ctl(&["backup", "start", "--wait"]);
    assert_eq!(out.status.code(), Some(1));
    let list = env.ctl_json(&["backups", "list"]);
    let b = &list["backups"][0];
    assert_eq!(b["state"], "failed");
    let err = b["error"].as_str().unwrap();
    assert!(
        err.contains(&format!("\"{}\" does not exist", missing.display())),
        "{err}"
    );
    assert!(env.manifests().is_empty());
    let m = env.metrics();
    assert!(
        m.contains("hopsdr_backups_total{result=\"failed\"} 1"),
        "{m}"
    );
    assert!(
        m.contains("hopsdr_backup_last_status{component=\"files\"} 0"),
        "{m}"
    );
}

#[cfg(feature = "testbed")]
#[test]
fn a_second_backup_while_one_runs_is_refused_busy() {
    let env = Env::new();
    let _d = env.start_with(&[("HOPSDR_FAILPOINTS", "backup.before_commit=pause")]);
    let started = env.ctl_json(&["backup", "start"]);
    let job = started["job_id"].as_i64().unwrap();
    let marker = env.path().join("backup.before_commit.reached");
    wait_for("the failpoint", Duration::from_secs(30), || {
        marker.exists().then_some(())
    });
    let out = env.ctl(&["backup", "start"]);
    assert_eq!(out.status.code(), Some(5));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("job {job} is running")), "{err}");
    let status = env.ctl_json(&["status"]);
    assert_eq!(status["current_job"]["id"], job);
}
