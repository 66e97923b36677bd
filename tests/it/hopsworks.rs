//! Restores onto a cluster redeployed as Hopsworks redeploys it (its schemas, disk objects and
//! services back, the data gone): killed inside the schema drop, the data and the index steps
//! and resumed; onto another topology (three data nodes from two, datanodes with other names
//! and another volume count); and bad input refused before the cluster is touched.

use std::time::Duration;

use crate::harness::{wait_for, Env};
use crate::restore::{backed_up, disaster, mysql_config, restore_config, setup};
use crate::tbcluster::Cluster;

/// The pids of the tool processes holding API slots (ndb_restore, ndb_show_tables, ...).
fn tool_pids(c: &Cluster) -> Vec<i32> {
    let v: serde_json::Value = serde_json::from_slice(&c.tb(&["api", "list"]).stdout).unwrap();
    v.as_array()
        .unwrap()
        .iter()
        .filter_map(|x| x["pid"].as_i64().map(|p| p as i32))
        .collect()
}

/// Whether an ndb_restore process holds an API slot.
fn restore_tool_connected(c: &Cluster) -> bool {
    let v: serde_json::Value = serde_json::from_slice(&c.tb(&["api", "list"]).stdout).unwrap();
    v.as_array().unwrap().iter().any(|x| {
        x["client"]
            .as_str()
            .is_some_and(|n| n.starts_with("tool:ndb_restore:"))
    })
}

fn step_state(env: &Env, kind: &str) -> String {
    let st = env.ctl_json(&["restore", "status"]);
    let k = st["plan"]["steps"]
        .as_array()
        .unwrap()
        .iter()
        .position(|s| s["kind"] == kind)
        .unwrap();
    st["restore"]["steps"][k]["state"]
        .as_str()
        .unwrap()
        .to_string()
}

/// SIGKILL of hopsdrd inside the schema drop, inside `ndb_restore -r` (which is killed too,
/// leaving partial rows) and right after `--rebuild-indexes` created the foreign keys: each
/// resume goes on from where it stopped and the cluster ends as it was backed up.
#[test]
fn killed_inside_the_drop_the_data_and_the_index_steps_the_restore_converges() {
    let (mut env, c, m) = setup();
    // One ndb_restore at a time: the first -r is the one killed half-way.
    env.extra_config = env
        .extra_config
        .replace("[restore]\n", "[restore]\nparallelism = 1\n");
    let (before, id) = backed_up(&env, &c);
    disaster(&c, &m);

    // 1. Inside the drop: after its first round (the foreign keys' parents are left).
    env.kill_at("restore.drop.round", &["restore", "start", &id, "--yes"]);
    let tables = String::from_utf8_lossy(
        &c.tool("ndb_show_tables", &["-c", "10.0.0.1:1186", "-p", "-t", "2"])
            .stdout,
    )
    .into_owned();
    assert!(
        tables.contains("'hopsworks'\t'def'\t'project'") && !tables.contains("'project_topics'"),
        "half dropped: {tables}"
    );

    // 2. Inside ndb_restore -r: the first data node's run stops half-way (the calls from now:
    // -m, then -r), hopsdrd and the tool are killed.
    c.tb(&[
        "fault",
        "call",
        "--tool",
        "ndb_restore",
        "--nth",
        "2",
        "--action",
        "hang-mid",
    ]);
    let mut d = env.start();
    assert_eq!(step_state(&env, "drop_schemas"), "interrupted");
    env.ctl_ok(&["restore", "resume"]);
    wait_for("partial rows", Duration::from_secs(60), || {
        (c.rows("app.events") > 0).then_some(())
    });
    wait_for("ndb_restore hung half-way", Duration::from_secs(60), || {
        let n = c.rows("app.events");
        std::thread::sleep(Duration::from_millis(200));
        (c.rows("app.events") == n && !tool_pids(&c).is_empty()).then_some(())
    });
    d.kill9();
    drop(d);
    for pid in tool_pids(&c) {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::SIGKILL).unwrap();
    }
    wait_for("the tool's slot freed", Duration::from_secs(30), || {
        tool_pids(&c).is_empty().then_some(())
    });
    let partial = c.rows("app.events");
    assert!(partial > 0 && partial < 40, "partial rows: {partial}");

    // 3. Right after --rebuild-indexes created the indexes and foreign keys.
    c.tb(&["fault", "clear"]);
    env.kill_at("restore.rebuild.done", &["restore", "resume"]);

    // 4. The last resume converges.
    let _d = env.start();
    assert_eq!(step_state(&env, "restore_data"), "done");
    assert_eq!(step_state(&env, "rebuild_indexes"), "interrupted");
    env.ctl_ok(&["restore", "resume", "--wait"]);
    assert_eq!(c.fingerprint(), before);
    assert_eq!(c.safe_mode(), "Safe mode is OFF");
}

/// `[hopsfs]` naming the datanodes `w1..`, one volume each (the test-bed's `vol1`).
fn renamed_hopsfs(c: &Cluster) -> String {
    let mut s = "[hopsfs]\ncopy_timeout = \"60s\"\n".to_string();
    for dn in 1..=3 {
        s.push_str(&format!(
            "[[hopsfs.datanodes]]\nname = \"w{dn}\"\nhost = \"local\"\nvolumes = [\"{}\"]\n",
            c.volume(dn, 1).display()
        ));
    }
    s
}

/// A backup of 2 data nodes restored onto 3, and its datanodes dn1..dn3 with two volumes each
/// restored onto datanodes w1..w3 with one volume each: the same cluster, and the plan says so.
#[test]
fn a_restore_onto_another_topology() {
    let (mut env, c, m) = setup();
    let (before, id) = backed_up(&env, &c);
    c.tb(&["cluster", "destroy"]);
    c.tb(&["cluster", "redeploy", "--data-nodes", "3", "--volumes", "1"]);
    m.sql_root("DROP USER 'app'@'%'").unwrap();
    let mut map = "[restore.volume_map]\n".to_string();
    for dn in 1..=3 {
        for v in 1..=2 {
            map.push_str(&format!("\"dn{dn}/vol{v}\" = \"w{dn}/vol1\"\n"));
        }
    }
    env.extra_config = c.rondb_config("local")
        + &renamed_hopsfs(&c)
        + &mysql_config(&env, &m)
        + &restore_config(&env, &c)
        + &map;
    let _d = env.start();
    let plan = String::from_utf8_lossy(&env.ctl(&["restore", "plan", &id]).stdout).into_owned();
    assert!(
        plan.contains("note: RonDB: the backup holds data nodes 1, 2, the target has 1, 2, 3: every backed-up node id is restored from the head node"),
        "{plan}"
    );
    assert!(
        plan.contains(&format!("dn1/vol2 -> w1:{}", c.volume(1, 1).display())),
        "{plan}"
    );
    assert!(
        plan.contains("write back the volumes of datanodes w1, w2, w3"),
        "{plan}"
    );
    env.ctl_ok(&["restore", "start", &id, "--yes", "--wait"]);
    assert_eq!(c.fingerprint(), before);
    assert_eq!(c.safe_mode(), "Safe mode is OFF");
    assert_eq!(c.info()["data_nodes"].as_array().unwrap().len(), 3);
}

/// A restore that cannot work is refused before anything is touched, naming what is wrong and
/// what to do: a volume map naming an unknown datanode, a backed-up volume with no destination,
/// an unknown NDB API client connected, no free API slot.
#[test]
fn bad_input_is_refused_before_the_cluster_is_touched() {
    let (mut env, c, m) = setup();
    let id;
    {
        let _d = env.start();
        id = env.backup_ok();
    }
    disaster(&c, &m);
    let untouched = c.fingerprint();
    let base = env.extra_config.clone();
    let refused = |env: &Env, want: &str| {
        let _d = env.start();
        let out = env.ctl(&["restore", "start", &id, "--yes", "--wait"]);
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert!(err.contains(want), "{want}: {err}");
        let plan = env.ctl(&["restore", "plan", &id]);
        assert!(String::from_utf8_lossy(&plan.stderr).contains(want));
        assert_eq!(c.fingerprint(), untouched, "nothing touched");
        assert_eq!(c.info()["services"].as_array().unwrap().len(), 6);
        let st = env.ctl(&["restore", "status"]);
        assert!(
            String::from_utf8_lossy(&st.stderr).contains("no restore has been started"),
            "{st:?}"
        );
    };

    env.extra_config = base.clone() + "[restore.volume_map]\n\"dn1/vol1\" = \"dn9/vol1\"\n";
    refused(&env, "[restore.volume_map] \"dn1/vol1\" = \"dn9/vol1\": no datanode dn9 in [[hopsfs.datanodes]] (it lists dn1, dn2, dn3)");

    // One volume per datanode in the config, two in the backup.
    let one_volume = base.replace(&format!(", \"{}\"", c.volume(1, 2).display()), "");
    env.extra_config = one_volume;
    refused(&env, "backup volume dn1/vol2 has no destination: datanode dn1 has 1 volume(s) in [[hopsfs.datanodes]]; map it in [restore.volume_map]");

    env.extra_config = base.clone();
    c.tb(&[
        "api",
        "connect",
        "--name",
        "spark-job",
        "--address",
        "10.0.0.99",
    ]);
    refused(
        &env,
        "NDB API client node 74 connected from 10.0.0.99 is not one hopsdr stops",
    );
    c.tb(&["api", "disconnect", "--name", "spark-job"]);

    for k in 0..4 {
        c.tb(&[
            "api",
            "connect",
            "--name",
            &format!("job{k}"),
            "--address",
            "10.0.0.1",
        ]);
    }
    refused(
        &env,
        "no free API slot on the target cluster: every one of its 11 API slots is connected",
    );
}

/// Each ndb_restore holds an API slot: with one slot free when the data step starts, the data
/// nodes are restored one at a time although `parallelism` allows four (two at once would
/// leave one without a node id: it would fail to connect).
#[test]
fn parallel_ndb_restore_runs_never_exceed_the_free_api_slots() {
    let (mut env, c, m) = setup();
    env.extra_config = env
        .extra_config
        .replace("[restore]\n", "[restore]\nparallelism = 4\n");
    let (before, id) = backed_up(&env, &c);
    disaster(&c, &m);
    // Paused when the data step starts (the services are stopped: 10 slots free), then the
    // slots taken by other clients of the head node but one.
    env.kill_at("restore.step7", &["restore", "start", &id, "--yes"]);
    for k in 0..9 {
        c.tb(&[
            "api",
            "connect",
            "--name",
            &format!("job{k}"),
            "--address",
            "10.0.0.1",
        ]);
    }
    // The index step: the other clients leave again (the services need their slots back).
    let mut d = env.start_with(&[("HOPSDR_FAILPOINTS", "restore.step8=pause")]);
    env.ctl_ok(&["restore", "resume"]);
    let marker = env.path().join("restore.step8.reached");
    wait_for(
        "the index step (or the data step failed)",
        Duration::from_secs(60),
        || (marker.exists() || step_state(&env, "restore_data") == "failed").then_some(()),
    );
    assert!(
        env.log()
            .contains("1 API slot(s) free: up to 1 ndb_restore at once"),
        "{}",
        env.log()
    );
    assert_eq!(step_state(&env, "restore_data"), "done");
    d.kill9();
    drop(d);
    for k in 0..9 {
        c.tb(&["api", "disconnect", "--name", &format!("job{k}")]);
    }
    let _d = env.start();
    env.ctl_ok(&["restore", "resume", "--wait"]);
    assert_eq!(c.fingerprint(), before);
}

/// After a failed restore, pruning (and scheduled backups) are held off until the operator
/// finishes or abandons it: a backup of the half-restored cluster must not push out the good
/// one. Status and a metric say so; `restore abandon` lifts it.
#[test]
fn an_unfinished_restore_holds_off_pruning_until_abandoned() {
    let (env, c, m) = setup();
    let _d = env.start();
    let id = env.backup_ok();
    disaster(&c, &m);
    // The metadata step fails (the first ndb_restore call).
    c.tb(&[
        "fault",
        "call",
        "--tool",
        "ndb_restore",
        "--nth",
        "1",
        "--action",
        "fail",
    ]);
    let out = env.ctl(&["restore", "start", &id, "--yes", "--wait"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(env.metrics().contains("hopsdr_restore_unfinished 1"));
    let staged = env.path().join("staging").join(&id);
    assert!(staged.exists(), "kept for a resume");
    let st = env.ctl_json(&["status"]);
    let held = st["held"].as_str().unwrap_or_default().to_string();
    assert!(
        held.contains(&format!("held off: restore 1 of backup {id} is failed")),
        "{st}"
    );
    let text = String::from_utf8_lossy(&env.ctl(&["status"]).stdout).into_owned();
    assert!(
        text.contains("scheduled backups and pruning held off"),
        "{text}"
    );
    let out = env.ctl(&["prune"]);
    assert_eq!(out.status.code(), Some(5), "held off, like busy");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("held off") && err.contains("hopsdrctl restore abandon"),
        "{err}"
    );
    // Abandoned: pruning runs again.
    let out = env.ctl(&["restore", "abandon"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("abandoned (it was failed)"));
    assert!(
        !staged.exists(),
        "the staged files go with the abandoned restore"
    );
    assert!(env.metrics().contains("hopsdr_restore_unfinished 0"));
    assert!(env.ctl_json(&["status"])["held"].is_null());
    assert_eq!(env.ctl(&["prune", "--wait"]).status.code(), Some(0));
    // Nothing left to abandon.
    assert_eq!(env.ctl(&["restore", "abandon"]).status.code(), Some(1));
    // Staged files a crash left behind after the abandon go at the next start.
    drop(_d);
    std::fs::create_dir_all(staged.join("rondb")).unwrap();
    let _d = env.start();
    assert!(!staged.exists());
}

/// SIGKILL while `ndb_restore -m` has created part of the schema (hopsdrd and the tool killed):
/// the resumed metadata step finds part of the backup's tables, drops them and restores the
/// metadata again; the restore converges.
#[test]
fn killed_inside_the_metadata_restore_the_partial_schema_is_dropped_and_restored_again() {
    let (env, c, m) = setup();
    let (before, id) = backed_up(&env, &c);
    disaster(&c, &m);
    // The first ndb_restore of the restore is -m: it stops half-way.
    c.tb(&[
        "fault",
        "call",
        "--tool",
        "ndb_restore",
        "--nth",
        "1",
        "--action",
        "hang-mid",
    ]);
    let mut d = env.start();
    env.ctl_ok(&["restore", "start", &id, "--yes"]);
    let listed = || {
        String::from_utf8_lossy(
            &c.tool("ndb_show_tables", &["-c", "10.0.0.1:1186", "-p", "-t", "2"])
                .stdout,
        )
        .into_owned()
    };
    // The metadata step runs, ndb_restore is connected and has created part of the tables.
    wait_for("part of the schema", Duration::from_secs(60), || {
        (step_state(&env, "restore_meta") == "running"
            && restore_tool_connected(&c)
            && listed().contains("'hops'\t'def'\t'hdfs_inodes'"))
        .then_some(())
    });
    d.kill9();
    drop(d);
    for pid in tool_pids(&c) {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::SIGKILL).unwrap();
    }
    wait_for("the tool's slot freed", Duration::from_secs(30), || {
        tool_pids(&c).is_empty().then_some(())
    });
    let tables = listed();
    assert!(
        tables.contains("'hdfs_inodes'") && !tables.contains("'events'"),
        "part of the schema: {tables}"
    );
    c.tb(&["fault", "clear"]);
    let _d = env.start();
    assert_eq!(step_state(&env, "restore_meta"), "interrupted");
    env.ctl_ok(&["restore", "resume", "--wait"]);
    assert!(
        env.log()
            .contains("an interrupted ndb_restore -m left part of the schema"),
        "{}",
        env.log()
    );
    assert_eq!(c.fingerprint(), before);
}
