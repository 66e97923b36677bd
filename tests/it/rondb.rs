//! The RonDB part of a backup through the real daemon, on the test-bed cluster: data nodes
//! local and over a real sshd, single- and multi-part layouts, and the faults of issue 4.

use std::process::Command;
use std::time::Duration;

use crate::harness::{wait_for, Env, SmallFs};
use crate::ssh::Sshd;
use crate::tbcluster::{
    cutting_ssh, failed_backup, last_backup, restore_by_hand, ssh_config, stage_rondb, Cluster,
};

/// A successful backup whose RonDB part restores with ndb_restore onto a redeployed cluster.
fn backup_and_restore(env: &mut Env, cluster: &Cluster, extra_config: String) {
    env.extra_config = extra_config;
    let _d = env.start();
    let out = env.ctl(&["backup", "start", "--wait"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        env.log()
    );
    let b = last_backup(env);
    assert_eq!(b["state"], "succeeded");
    let rid = b["rondb_backup_id"].as_u64().expect("a RonDB backup id");
    assert!(rid <= 2_147_483_647);
    let id = b["id"].as_str().unwrap().to_string();
    let show = env.ctl_json(&["backups", "show", &id]);
    let comps: Vec<&str> = show["components"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["component"].as_str().unwrap())
        .collect();
    assert_eq!(comps, ["files", "rondb"]);
    let human = String::from_utf8_lossy(&env.ctl(&["backups", "show", &id]).stdout).into_owned();
    assert!(human.contains(&format!("BACKUP-{rid}")), "{human}");

    // The restore plan names every ndb_restore run, in the guide's order.
    let plan = String::from_utf8_lossy(&env.ctl(&["restore", "plan", &id]).stdout).into_owned();
    let meta = plan
        .find(&format!("-b {rid} -m --disable-indexes"))
        .expect(&plan);
    let data = plan.find(&format!("-n 2 -b {rid} -r")).expect(&plan);
    let rebuild = plan.find("--rebuild-indexes").expect(&plan);
    assert!(meta < data && data < rebuild, "{plan}");
    let out = env.ctl(&["restore", "plan", "20200101T000000Z"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not found"),
        "{out:?}"
    );

    // Node-local copies are removed after the commit.
    for n in [1, 2] {
        let d = cluster.backup_dir(n).join(format!("BACKUP/BACKUP-{rid}"));
        wait_for(
            &format!("{} removed", d.display()),
            Duration::from_secs(30),
            || (!d.exists()).then_some(()),
        );
    }

    // The files stage and restore in the guide's order onto the redeployed cluster.
    let paths = stage_rondb(env, &id, &env.path().join("staged"));
    assert!(
        paths
            .iter()
            .any(|p| p.starts_with("1/") && p.ends_with(&format!("BACKUP-{rid}.1.ctl"))),
        "{paths:?}"
    );
    assert!(
        paths
            .iter()
            .any(|p| p.starts_with("2/") && p.ends_with(".2.Data")),
        "{paths:?}"
    );
    restore_by_hand(env, cluster, &id);
}

#[test]
fn rondb_backup_with_local_data_nodes_restores_with_ndb_restore() {
    let mut env = Env::new();
    let cluster = Cluster::create(&env, &[]);
    let cfg = cluster.rondb_config("local");
    backup_and_restore(&mut env, &cluster, cfg);
}

#[test]
fn rondb_backup_over_ssh_multi_part() {
    let mut env = Env::new();
    let cluster = Cluster::create(&env, &["--multi-part", "2"]);
    let sshd = Sshd::start();
    let cfg = cluster.rondb_config("127.0.0.1") + &ssh_config(&sshd, "client_key", None);
    backup_and_restore(&mut env, &cluster, cfg);
}

fn next_succeeds(env: &Env, cluster: &Cluster) {
    cluster.tb(&["fault", "clear"]);
    let out = env.ctl(&["backup", "start", "--wait"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        env.log()
    );
}

#[test]
fn rondb_faults_fail_clearly_and_the_next_backup_succeeds() {
    let mut env = Env::new();
    let cluster = Cluster::create(&env, &[]);
    env.extra_config = cluster.rondb_config("local");
    let _d = env.start();

    // A data node not connected: refused before START BACKUP, naming the node.
    cluster.tb(&["fault", "node-down", "--node", "2"]);
    let e = failed_backup(&env);
    assert!(e.contains("data node 2 is not connected"), "{e}");
    assert!(
        !cluster.backup_dir(1).join("BACKUP").exists()
            || std::fs::read_dir(cluster.backup_dir(1).join("BACKUP"))
                .unwrap()
                .count()
                == 0,
        "nothing started"
    );
    next_succeeds(&env, &cluster);

    // START BACKUP failing: the tool's own text in the job error.
    cluster.tb(&[
        "fault", "call", "--tool", "ndb_mgm", "--nth", "4", "--action", "abort",
    ]);
    let e = failed_backup(&env);
    assert!(
        e.contains("START BACKUP") && e.contains("Backup aborted due to node failure"),
        "{e}"
    );
    next_succeeds(&env, &cluster);

    // Ids already used on a node are skipped.
    let now_id = last_backup(&env)["rondb_backup_id"].as_u64().unwrap();
    for i in 1..=300 {
        std::fs::create_dir_all(
            cluster
                .backup_dir(1)
                .join(format!("BACKUP/BACKUP-{}", now_id + i)),
        )
        .unwrap();
    }
    next_succeeds(&env, &cluster);
    let id = last_backup(&env)["rondb_backup_id"].as_u64().unwrap();
    assert!(
        id > now_id + 300,
        "{id} skips the used ids up to {}",
        now_id + 300
    );

    // The management server unreachable.
    cluster.tb(&["fault", "mgm-down"]);
    let e = failed_backup(&env);
    assert!(e.contains("Unable to connect"), "{e}");
    next_succeeds(&env, &cluster);
}

#[test]
fn ssh_auth_failure_names_the_host_and_ssh_message() {
    let mut env = Env::new();
    let cluster = Cluster::create(&env, &[]);
    let sshd = Sshd::start();
    env.extra_config = cluster.rondb_config("127.0.0.1") + &ssh_config(&sshd, "other_key", None);
    let _d = env.start();
    let e = failed_backup(&env);
    assert!(
        e.contains("ssh to 127.0.0.1 failed") && e.contains("Permission denied"),
        "{e}"
    );
}

#[test]
fn kill_9_during_collection_leaves_it_interrupted_and_the_next_one_succeeds() {
    let mut env = Env::new();
    let cluster = Cluster::create(&env, &[]);
    env.extra_config = cluster.rondb_config("local");
    let mut d = env.start_with(&[("HOPSDR_FAILPOINTS", "backup.rondb.collected_one=pause")]);
    let started = env.ctl_json(&["backup", "start"]);
    let job = started["job_id"].as_i64().unwrap();
    let marker = env.path().join("backup.rondb.collected_one.reached");
    wait_for("the failpoint", Duration::from_secs(30), || {
        marker.exists().then_some(())
    });
    d.kill9();
    drop(d);
    let _d = env.start();
    assert_eq!(
        env.ctl_json(&["job", &job.to_string()])["state"],
        "interrupted"
    );
    assert!(env.manifests().is_empty());
    // The node-local files are kept for a retry.
    let kept = std::fs::read_dir(cluster.backup_dir(1).join("BACKUP"))
        .unwrap()
        .count();
    assert_eq!(kept, 1);
    let out = env.ctl(&["backup", "start", "--wait"]);
    assert_eq!(out.status.code(), Some(0), "{}", env.log());
    assert_eq!(env.manifests().len(), 1);
}

#[test]
fn a_full_repository_fails_the_backup_naming_enospc_and_commits_nothing() {
    let mut env = Env::new();
    let cluster = Cluster::create(&env, &["--rows", "20000"]);
    let tmpfs = SmallFs::mount(&env.repo(), "300k");
    env.extra_config = cluster.rondb_config("local");
    let d = env.start();
    let e = failed_backup(&env);
    assert!(e.contains("No space left on device"), "{e}");
    assert!(env.manifests().is_empty());
    // Room again: the next backup succeeds.
    drop(d);
    drop(tmpfs);
    let _d = env.start();
    let out = env.ctl(&["backup", "start", "--wait"]);
    assert_eq!(out.status.code(), Some(0), "{}", env.log());
}

#[test]
fn too_little_room_for_the_previous_size_is_refused_before_anything_runs() {
    let mut env = Env::new();
    let cluster = Cluster::create(&env, &[]);
    let _tmpfs = SmallFs::mount(&env.repo(), "32m");
    env.extra_config = cluster.rondb_config("local");
    let _d = env.start();
    let out = env.ctl(&["backup", "start", "--wait"]);
    assert_eq!(out.status.code(), Some(0), "{}", env.log());
    let copies = || {
        std::fs::read_dir(cluster.backup_dir(1).join("BACKUP"))
            .map(|r| r.count())
            .unwrap_or(0)
    };
    // The data nodes' copies of the first backup are removed after its commit, off its path.
    wait_for(
        "the first backup's node copies removed",
        Duration::from_secs(30),
        || (copies() == 0).then_some(()),
    );
    let e = failed_backup(&env);
    assert!(
        e.starts_with("preflight: the repository local:") && e.contains("free space or prune"),
        "{e}"
    );
    assert_eq!(copies(), 0, "no START BACKUP ran");
}

#[test]
fn a_stream_cut_in_the_middle_fails_commits_nothing_and_keeps_node_files() {
    let mut env = Env::new();
    let cluster = Cluster::create(&env, &["--rows", "20000"]);
    let sshd = Sshd::start();
    // An ssh that drops the connection 64 KiB into any tar stream while `cut` exists.
    let (wrapper, flag) = cutting_ssh(&env, "*tar*", 65536);
    env.extra_config =
        cluster.rondb_config("127.0.0.1") + &ssh_config(&sshd, "client_key", Some(&wrapper));
    let _d = env.start();
    let e = failed_backup(&env);
    assert!(
        e.starts_with("rondb: collecting BACKUP-")
            && e.contains(
                "from data node 1 failed: data node 1: ssh to 127.0.0.1 failed (exit 255)"
            )
            && e.contains("the stream ended early"),
        "{e}"
    );
    assert!(env.manifests().is_empty());
    for n in [1, 2] {
        let kept = std::fs::read_dir(cluster.backup_dir(n).join("BACKUP"))
            .unwrap()
            .count();
        assert_eq!(kept, 1, "node {n}'s files are kept for a retry");
    }
    std::fs::remove_file(&flag).unwrap();
    let out = env.ctl(&["backup", "start", "--wait"]);
    assert_eq!(out.status.code(), Some(0), "{}", env.log());
    assert_eq!(env.manifests().len(), 1);
}

#[test]
fn a_start_backup_that_times_out_is_aborted_and_the_next_backup_succeeds() {
    let mut env = Env::new();
    let cluster = Cluster::create(&env, &[]);
    env.extra_config = cluster
        .rondb_config("local")
        .replace("backup_timeout = \"60s\"", "backup_timeout = \"2s\"");
    let _d = env.start();
    // The 4th ndb_mgm call is START BACKUP (after SHOW, ALL STATUS, REPORT BACKUPSTATUS).
    cluster.tb(&[
        "fault", "call", "--tool", "ndb_mgm", "--nth", "4", "--action", "hang-mid",
    ]);
    let e = failed_backup(&env);
    assert!(e.contains("timed out after 2s"), "{e}");
    wait_for("the abort in the log", Duration::from_secs(10), || {
        env.log().contains("ABORT BACKUP").then_some(())
    });
    let log = env.log();
    assert!(log.contains("ordered"), "ABORT BACKUP was ordered: {log}");
    // Nothing runs on the cluster any more.
    let status = Command::new(cluster.tool_path("ndb_mgm"))
        .args(["-c", "10.0.0.1:1186", "-e", "ALL REPORT BACKUPSTATUS"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&status.stdout);
    assert!(!text.contains("Local backup status"), "{text}");
    next_succeeds(&env, &cluster);
}

/// Data nodes connected from a wildcard address are shown without `@host`: they stay in the
/// backup when configured, and without [[rondb.data_nodes]] the backup fails naming them (it
/// cannot reach a node it has no address for).
#[test]
fn data_nodes_shown_without_an_address_are_never_missed() {
    let mut env = Env::new();
    let cluster = Cluster::create(&env, &["--wildcard-addresses"]);
    env.extra_config = cluster.rondb_config("local");
    let d = env.start();
    let id = env.backup_ok();
    let m = crate::tbcluster::repo(&env)
        .read_manifest(&hopsdr::ids::BackupId::parse(&id).unwrap())
        .unwrap();
    for n in [1, 2] {
        assert!(
            m.files()
                .any(|f| f.path.starts_with(&format!("rondb/{n}/"))),
            "node {n} is in the backup"
        );
    }
    drop(d);
    // Discovered from SHOW only: refused, naming the node.
    env.extra_config = format!(
        "[rondb]\nmgm_client = [\"{}\", \"-c\", \"10.0.0.1:1186\"]\nbackup_dir = \"{}\"\n",
        cluster.tool_path("ndb_mgm"),
        cluster.dir.join("ndb/1/backups").display()
    );
    let _d = env.start();
    let e = failed_backup(&env);
    assert!(
        e.contains("data node 1 without an address") && e.contains("[[rondb.data_nodes]]"),
        "{e}"
    );
}
