//! The crash matrix: hopsdrd killed with SIGKILL at every durable step of every job — backup
//! components, blob batches, flush, manifest, catalog record, cleanup, the start's reconcile,
//! verify, prune's forget and each garbage collection delete, catalog rebuild, every restore step
//! and sub-step — then started again, and the invariants checked each time:
//!
//! - every backup listed complete has its manifest and passes verify;
//! - every manifest in the repository is listed complete;
//! - `hopsdrctl repo check` passes;
//! - the job that was running is recorded interrupted (or, past its last record, done), no job
//!   or backup is left running;
//! - a restore resumes to the cluster's original fingerprint.

use std::collections::BTreeSet;
use std::time::Duration;

use crate::harness::{wait_for, Env};
use crate::restore::{disaster, setup};
use crate::tbcluster::Cluster;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Job {
    Backup,
    /// The start after a backup killed once committed: its reconcile is killed.
    Start,
    Verify,
    Prune,
    Rebuild,
    Restore,
}

/// Every failpoint but the restore's step boundaries (added from the plan), in the order run.
const MATRIX: &[(&str, Job)] = &[
    ("backup.started", Job::Backup),
    ("backup.component.files.done", Job::Backup),
    ("backup.blobs_written", Job::Backup),
    ("pack.uploaded", Job::Backup),
    ("backup.component.users.done", Job::Backup),
    ("backup.hopsfs.pinned", Job::Backup),
    ("backup.rondb.collected_one", Job::Backup),
    ("backup.component.rondb.done", Job::Backup),
    ("backup.component.hopsfs.done", Job::Backup),
    ("backup.before_commit", Job::Backup),
    ("index.written", Job::Backup),
    ("backup.flushed", Job::Backup),
    ("backup.committed", Job::Backup),
    ("backup.recorded", Job::Backup),
    ("backup.cleanup.pins_removed", Job::Backup),
    ("start.reconciled_one", Job::Start),
    ("verify.file", Job::Verify),
    ("verify.read_back", Job::Verify),
    ("prune.decided", Job::Prune),
    ("prune.manifest_removed", Job::Prune),
    ("prune.forgot_one", Job::Prune),
    ("gc.referenced_read", Job::Prune),
    ("gc.index_generation", Job::Prune),
    ("gc.deleted_one", Job::Prune),
    ("rebuild.manifests_read", Job::Rebuild),
    ("rebuild.replaced", Job::Rebuild),
    ("restore.drop.round", Job::Restore),
    ("restore.meta.done", Job::Restore),
    ("restore.data.node_done", Job::Restore),
    ("restore.rebuild.done", Job::Restore),
    ("restore.volumes.cleared", Job::Restore),
    ("restore.volumes.datanode_done", Job::Restore),
];

/// Starts hopsdrd paused at `failpoint`, runs hopsdrctl `args` (a job start, answered with its
/// job id), kills hopsdrd with SIGKILL once the failpoint is reached; returns the job id.
fn job_killed_at(env: &Env, failpoint: &str, args: &[&str]) -> i64 {
    let marker = env.path().join(format!("{failpoint}.reached"));
    let _ = std::fs::remove_file(&marker);
    let mut d = env.start_with(&[("HOPSDR_FAILPOINTS", &format!("{failpoint}=pause"))]);
    let started = env.ctl_json(args);
    wait_for(failpoint, Duration::from_secs(60), || {
        marker.exists().then_some(())
    });
    d.kill9();
    started["job_id"].as_i64().unwrap()
}

/// The state of job `id` as the catalog records it.
fn job_state(env: &Env, id: i64) -> String {
    let conn = rusqlite::Connection::open(env.catalog()).unwrap();
    conn.query_row("SELECT state FROM jobs WHERE id=?1", [id], |r| r.get(0))
        .unwrap()
}

/// The invariants, checked with a freshly started daemon.
fn check(env: &Env, at: &str) {
    let status = env.ctl_json(&["status"]);
    assert!(status["current_job"].is_null(), "{at}: {status}");
    let conn = rusqlite::Connection::open(env.catalog()).unwrap();
    let running: i64 = conn
        .query_row(
            "SELECT (SELECT count(*) FROM jobs WHERE state IN ('running','queued')) + (SELECT count(*) FROM backups WHERE state='running')",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(running, 0, "{at}: a job or backup left running");
    let list = env.ctl_json(&["backups", "list"]);
    let complete: BTreeSet<String> = list["backups"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|b| matches!(b["state"].as_str(), Some("succeeded" | "partial")))
        .map(|b| b["id"].as_str().unwrap().to_string())
        .collect();
    let manifests: BTreeSet<String> = env.manifests().into_iter().collect();
    assert_eq!(
        complete, manifests,
        "{at}: the backups listed complete are not those the repository holds\n{list}"
    );
    let out = env.ctl(&["repo", "check"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{at}: repo check: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    for id in &complete {
        let out = env.ctl(&["verify", id, "--wait"]);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{at}: verify {id}: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            env.log()
        );
    }
}

/// Adds a file with new content to what the files component backs up, so that each backup
/// writes blobs of its own (that garbage collection deletes once it is forgotten).
fn change_files(env: &Env, tag: &str) {
    std::fs::write(
        env.files[0].0.join(format!("crash-{tag}.txt")),
        format!("written before the crash at {tag}\n").repeat(100),
    )
    .unwrap();
}

fn newest_complete(env: &Env) -> String {
    let list = env.ctl_json(&["backups", "list"]);
    list["backups"]
        .as_array()
        .unwrap()
        .iter()
        .rev()
        .find(|b| b["state"] == "succeeded")
        .map(|b| b["id"].as_str().unwrap().to_string())
        .expect("a complete backup to restore")
}

fn kill_and_check(
    env: &Env,
    c: &Cluster,
    m: &crate::mysql::Mariadb,
    before: &str,
    fp: &str,
    job: Job,
) {
    match job {
        Job::Backup => {
            change_files(env, fp);
            let (job_id, backup_id) = env.backup_killed_at(fp);
            let _d = env.start();
            check(env, fp);
            let state = job_state(env, job_id);
            let committed = env.manifests().contains(&backup_id);
            // Killed before its manifest: interrupted, not listed complete. Killed after it: the
            // backup is complete whatever the job's record says.
            if !committed {
                assert_eq!(state, "interrupted", "{fp}");
            } else {
                assert!(
                    matches!(state.as_str(), "interrupted" | "succeeded"),
                    "{fp}: {state}"
                );
            }
        }
        Job::Start => {
            change_files(env, fp);
            env.backup_killed_at("backup.committed");
            let marker = env.path().join(format!("{fp}.reached"));
            let _ = std::fs::remove_file(&marker);
            let mut d = env.start_unready(&[("HOPSDR_FAILPOINTS", &format!("{fp}=pause"))]);
            wait_for(fp, Duration::from_secs(60), || {
                marker.exists().then_some(())
            });
            d.kill9();
            let _d = env.start();
            check(env, fp);
        }
        Job::Verify | Job::Prune | Job::Rebuild => {
            if job == Job::Prune {
                // Something for retention to forget, with blobs of its own.
                let _d = env.start();
                change_files(env, fp);
                env.backup_ok();
            }
            let args: &[&str] = match job {
                Job::Verify => &["verify"],
                Job::Prune => &["prune"],
                _ => &["catalog", "rebuild"],
            };
            let job_id = job_killed_at(env, fp, args);
            let _d = env.start();
            assert_eq!(job_state(env, job_id), "interrupted", "{fp}");
            check(env, fp);
        }
        Job::Restore => {
            let id = {
                let _d = env.start();
                newest_complete(env)
            };
            disaster(c, m);
            let job_id = job_killed_at(env, fp, &["restore", "start", &id, "--yes"]);
            let _d = env.start();
            assert_eq!(job_state(env, job_id), "interrupted", "{fp}");
            let out = env.ctl(&["restore", "resume", "--wait"]);
            assert_eq!(
                out.status.code(),
                Some(0),
                "{fp}: resume: {}\n{}",
                String::from_utf8_lossy(&out.stdout),
                env.log()
            );
            assert_eq!(c.fingerprint(), before, "{fp}: the restored cluster");
            check(env, fp);
        }
    }
}

#[test]
fn kill_9_at_every_durable_step_keeps_the_invariants() {
    let (mut env, c, m) = setup();
    env.extra_config
        .push_str("[retention]\nkeep_last = 2\nprune_after_backup = false\n");
    let before = c.fingerprint();
    let steps = {
        let _d = env.start();
        let id = env.backup_ok();
        env.backup_ok();
        let plan = env.ctl_json(&["restore", "plan", &id]);
        plan["steps"].as_array().unwrap().len()
    };
    let step_points: Vec<String> = (1..=steps).map(|k| format!("restore.step{k}")).collect();
    let all: Vec<(&str, Job)> = MATRIX
        .iter()
        .copied()
        .chain(step_points.iter().map(|s| (s.as_str(), Job::Restore)))
        .collect();
    assert!(all.len() >= 30, "{} failpoints", all.len());
    for (fp, job) in &all {
        kill_and_check(&env, &c, &m, &before, fp, *job);
    }
}
