//! Whole-cluster restores with hopsdrctl on the test-bed: the drill (fingerprint equal, safe mode
//! OFF, topics back, grants identical), refusals that leave the cluster untouched, and resume
//! after kill -9 in the middle.

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use crate::harness::Env;
use crate::mysql::Mariadb;
use crate::tbcluster::{Cluster, TB};

/// `[restore]` pointing at the test-bed's tools.
pub fn restore_config(env: &Env, c: &Cluster) -> String {
    let d = c.dir.display();
    format!(
        "[restore]\nndb_restore = [\"{d}/bin/ndb_restore\"]\nstaging_dir = \"{}\"\nhdfs = [\"{d}/bin/hdfs\"]\n\
         safemode_timeout = \"60s\"\ndatanode_start = [\"{TB}\", \"datanode\", \"start\", \"{{index}}\", \"--dir\", \"{d}\"]\n\
         datanode_status = [\"{TB}\", \"datanode\", \"status\", \"{{index}}\", \"--dir\", \"{d}\"]\n\
         epipe_stop = [\"{TB}\", \"service\", \"epipe\", \"stop\", \"--dir\", \"{d}\"]\n\
         epipe_start = [\"{TB}\", \"service\", \"epipe\", \"start\", \"--dir\", \"{d}\"]\n\
         reindex = [\"{d}/bin/reindex-epipe.sh\"]\nreindex_user = \"\"\nkafka_restore = [\"{d}/bin/kafka-restore.sh\"]\n\
         featurestore_reindex = [\"/usr/bin/touch\", \"{}\"]\n\
         ndb_drop_table = [\"{d}/bin/ndb_drop_table\"]\nquiesce_timeout = \"10s\"\n\
         service_stop = [\"{TB}\", \"service\", \"{{unit}}\", \"stop\", \"--dir\", \"{d}\"]\n\
         service_start = [\"{TB}\", \"service\", \"{{unit}}\", \"start\", \"--dir\", \"{d}\"]\n\
         datanode_stop = [\"{TB}\", \"datanode\", \"stop\", \"{{index}}\", \"--dir\", \"{d}\"]\n\
         mysqld_restart = [\"{TB}\", \"service\", \"mysqld\", \"restart\", \"--dir\", \"{d}\"]\n",
        env.path().join("staging").display(),
        env.path().join("featurestore-reindexed").display()
    )
}

pub fn mysql_config(env: &Env, m: &Mariadb) -> String {
    let pw = env.path().join("mysql.password");
    std::fs::write(&pw, "dump-secret\n").unwrap();
    std::fs::set_permissions(&pw, std::fs::Permissions::from_mode(0o600)).unwrap();
    format!(
        "[mysql]\nuser = \"hopsdr\"\nsocket = \"{}\"\npassword = {{ file = \"{}\" }}\n",
        m.socket().display(),
        pw.display()
    )
}

fn grants(m: &Mariadb) -> String {
    m.sql_root("SHOW GRANTS FOR 'app'@'%'").unwrap_or_default()
}

/// A cluster with data, a MariaDB with an account, and a daemon configured for both.
pub fn setup() -> (Env, Cluster, Mariadb) {
    setup_with(&["--binlog"])
}

/// [`setup`] with `extra` arguments for the test-bed's `cluster create`.
pub fn setup_with(extra: &[&str]) -> (Env, Cluster, Mariadb) {
    let mut env = Env::new();
    let c = Cluster::create(&env, extra);
    let m = Mariadb::start();
    m.sql_root(
        "CREATE USER 'hopsdr'@'localhost' IDENTIFIED BY 'dump-secret';
         GRANT ALL PRIVILEGES ON *.* TO 'hopsdr'@'localhost' WITH GRANT OPTION;
         CREATE DATABASE hopsworks;
         CREATE USER 'app'@'%' IDENTIFIED BY 'app-pass';
         GRANT SELECT, INSERT ON hopsworks.* TO 'app'@'%';",
    )
    .unwrap();
    env.extra_config =
        c.hopsfs_config("local") + &mysql_config(&env, &m) + &restore_config(&env, &c);
    (env, c, m)
}

/// The cluster's fingerprint and a backup of it, taken by a daemon started for it.
pub fn backed_up(env: &Env, c: &Cluster) -> (String, String) {
    let _d = env.start();
    (c.fingerprint(), env.backup_ok())
}

/// The disaster: the cluster lost and redeployed as Hopsworks does (its schemas and services
/// back, the data gone), the accounts gone.
pub fn disaster(c: &Cluster, m: &Mariadb) {
    c.tb(&["cluster", "destroy"]);
    c.tb(&["cluster", "redeploy"]);
    m.sql_root("DROP USER 'app'@'%'").unwrap();
}

#[test]
fn the_drill_restores_the_cluster_whole() {
    let (env, c, m) = setup();
    let _d = env.start();
    let before = c.fingerprint();
    let grants_before = grants(&m);
    let id = env.backup_ok();
    disaster(&c, &m);
    assert_ne!(c.fingerprint(), before);
    let fs_reindexed = env.path().join("featurestore-reindexed");
    assert!(!fs_reindexed.exists());
    // A table of a database the backup does not hold: never dropped.
    c.tb(&["cluster", "add-table", "--table", "extra.keep"]);
    let restarts = c.info()["mysqld_restarts"].as_u64().unwrap();

    // The plan shows every step, what is dropped and what the target has, before anything.
    let plan = String::from_utf8_lossy(&env.ctl(&["restore", "plan", &id]).stdout).into_owned();
    for want in [
        "note: the target holds 10 table(s) in airflow, app, glassfish_timers, hops, hopsworks, metastore that the backup recreates: they are dropped",
        "note: the target has disk-data objects",
        "stop the services (namenode, resourcemanager, hivemetastore, rdrs, glassfish-domain1, epipe) and the datanodes",
        "drop the redeployed tables of airflow, app, glassfish_timers, hops, hopsworks, metastore",
        "-m --disable-indexes --no-restore-disk-objects --no-binlog --exclude-tables=mysql.ndb_apply_status,glassfish_timers.EJB__TIMER__TBL",
        "restart the MySQL servers",
        "start the services again",
    ] {
        assert!(plan.contains(want), "{want}\n{plan}");
    }
    assert!(!plan.contains("extra"), "{plan}");

    let out = env.ctl(&["restore", "start", &id, "--yes", "--wait"]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{text}\n{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        env.log()
    );
    assert!(
        text.contains("succeeded") && text.contains("total (RTO):"),
        "{text}"
    );
    // The table outside the backup is still there (then dropped to compare the rest).
    assert_eq!(c.rows("extra.keep"), 1);
    let o = c.tool(
        "ndb_drop_table",
        &["-c", "10.0.0.1:1186", "-d", "extra", "keep"],
    );
    assert!(o.status.success());
    assert_eq!(
        c.fingerprint(),
        before,
        "rows, indexes, blocks and topics are back"
    );
    assert_eq!(c.safe_mode(), "Safe mode is OFF");
    assert_eq!(grants(&m), grants_before);
    assert!(m.login("app", "app-pass"));
    // The services run again, the MySQL server was restarted, nothing outside the backup's
    // databases was dropped, and no restored row went to the binlog.
    let info = c.info();
    assert_eq!(
        info["services"],
        serde_json::json!([
            "epipe",
            "glassfish-domain1",
            "hivemetastore",
            "namenode",
            "rdrs",
            "resourcemanager"
        ])
    );
    assert_eq!(info["datanodes_started"], serde_json::json!([1, 2, 3]));
    assert_eq!(info["mysqld_restarts"].as_u64().unwrap(), restarts + 1);
    let binlog = String::from_utf8_lossy(&c.tb(&["cluster", "binlog"]).stdout).into_owned();
    assert_eq!(binlog.trim(), "0");
    assert!(
        fs_reindexed.exists(),
        "the configured feature-store reindex ran"
    );
    assert!(
        !env.path().join("staging").join(&id).exists(),
        "the staged RonDB files are removed once the restore succeeded"
    );

    let st = env.ctl_json(&["restore", "status"]);
    assert_eq!(st["restore"]["state"], "succeeded");
    assert!(st["restore"]["steps"]
        .as_array()
        .unwrap()
        .iter()
        .all(|s| s["state"] == "done"));
    let metrics = env.metrics();
    assert!(
        metrics.contains("hopsdr_restores_total{result=\"succeeded\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("hopsdr_restore_duration_seconds "),
        "{metrics}"
    );
}

/// `[restore] replicas = "one"` through hopsdrd: the plan says so, the write-back writes one
/// replica of each block (two of three left out), safe mode goes OFF with every block reported,
/// the wait reports what HDFS has left to copy, and once HDFS has copied it the cluster is the
/// one backed up.
#[test]
fn one_replica_per_block_is_written_back_and_hdfs_copies_the_rest() {
    let mut env = Env::new();
    let c = Cluster::create(&env, &REPLICATING);
    // Each step also runs the restore_step hook.
    let steps_seen = env.path().join("steps-seen");
    env.extra_config = c.hopsfs_config("local")
        + &restore_config(&env, &c)
        + "replicas = \"one\"\n"
        + &format!(
            "[hooks]\nrestore_step = [\"/bin/sh\", \"-c\", \"echo \\\"$HOPSDR_STEP $HOPSDR_STATE $HOPSDR_BACKUP_ID\\\" >> {}\"]\n",
            steps_seen.display()
        );
    let _d = env.start();
    let before = c.fingerprint();
    let id = env.backup_ok();
    let plan = env.ctl_json(&["restore", "plan", &id]);
    let steps = plan["steps"].as_array().unwrap().len();
    assert!(plan.to_string().contains("one replica per block"), "{plan}");
    one_replica_restore(&env, &c, &id, &before);
    let seen = std::fs::read_to_string(&steps_seen).unwrap();
    let want: Vec<String> = (1..=steps).map(|k| format!("{k} done {id}")).collect();
    assert_eq!(seen.lines().collect::<Vec<_>>(), want, "{seen}");
}

/// The finalized block files under `dir` (every replica).
pub fn finalized_replicas(dir: &std::path::Path) -> u64 {
    let mut n = 0;
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        let name = e.file_name().to_string_lossy().to_string();
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            n += finalized_replicas(&p);
        } else if name.starts_with("blk_")
            && !name.ends_with(".meta")
            && p.to_string_lossy().contains("/finalized/")
        {
            n += 1;
        }
    }
    n
}

/// A test-bed cluster of three datanodes holding every block (replication 3) whose namenode
/// re-replicates every 200 ms.
pub const REPLICATING: [&str; 4] = ["--replication", "3", "--replication-interval-ms", "200"];

/// Cluster `c` (see [`REPLICATING`]) destroyed and redeployed, backup `id` restored with one
/// replica per block: two replicas of three left out (the log says how many), the wait for safe
/// mode reports the blocks HDFS must copy; then, HDFS's copies done (`hdfs fsck /`: none
/// under-replicated, waited for), the fingerprint is `before`.
pub fn one_replica_restore(env: &Env, c: &Cluster, id: &str, before: &str) {
    let replicas = finalized_replicas(&c.dir.join("hopsfs"));
    assert!(replicas >= 9 && replicas % 3 == 0, "{replicas}");
    c.tb(&["cluster", "destroy"]);
    c.tb(&["cluster", "redeploy"]);
    let from = env.log().len();
    let out = env.ctl(&["restore", "start", id, "--yes", "--wait"]);
    assert_eq!(out.status.code(), Some(0), "{}", env.log());
    let log = env.log()[from..].to_string();
    let left = crate::harness::logged_sum(
        &log,
        "one replica per block: the others are left",
        "replicas_left",
    );
    assert!(log.contains("replicas_left="), "{log}");
    assert_eq!(left, replicas / 3 * 2, "{log}");
    assert!(
        log.contains("blocks under-replicated") || log.contains("every block has its replication"),
        "{log}"
    );
    assert_ne!(c.fingerprint(), before, "every replica written back");
    crate::harness::wait_for(
        "HDFS to copy the replicas left out",
        Duration::from_secs(90),
        || {
            let out = c.tool("hdfs", &["fsck", "/"]);
            let text = String::from_utf8_lossy(&out.stdout).into_owned();
            hopsdr::cluster::hopsfs::fsck_under_replicated(&text)
                .filter(|(blocks, _)| *blocks == 0)
                .map(|_| ())
        },
    );
    assert_eq!(c.fingerprint(), before);
}

#[test]
fn a_tampered_blob_or_a_non_empty_target_is_refused_before_anything_is_touched() {
    let (env, c, m) = setup();
    let _d = env.start();
    let id = env.backup_ok();

    // The live cluster is not a redeployed one: its volumes hold blocks. Refused in the
    // preflight, naming them, before any service is stopped or any table dropped.
    let live = c.fingerprint();
    let out = env.ctl(&["restore", "start", &id, "--yes", "--wait"]);
    assert_eq!(out.status.code(), Some(1));
    let st = env.ctl_json(&["restore", "status"]);
    let err = st["restore"]["error"].as_str().unwrap().to_string();
    assert!(
        err.contains("step 2 (preflight on the target cluster)")
            && err.contains("datanode dn1 volume")
            && err.contains("holds HopsFS blocks"),
        "{err}"
    );
    assert_eq!(c.fingerprint(), live, "nothing touched");
    assert_eq!(c.info()["services"].as_array().unwrap().len(), 6);

    // One flipped byte in one blob: refused at step 1, the cluster untouched.
    disaster(&c, &m);
    let empty = c.fingerprint();
    env.place_of(&id, "").flip();
    let out = env.ctl(&["restore", "start", &id, "--yes", "--wait"]);
    assert_eq!(out.status.code(), Some(1));
    let st = env.ctl_json(&["restore", "status"]);
    let err = st["restore"]["error"].as_str().unwrap().to_string();
    assert!(
        err.contains("step 1 (verify backup") && err.contains("damaged"),
        "{err}"
    );
    assert_eq!(c.fingerprint(), empty, "nothing touched");

    // An unknown backup.
    let out = env.ctl(&["restore", "start", "20200101T000000Z", "--yes"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not found"));
    // Without a terminal and without --yes: refused, nothing started.
    let out = env.ctl(&["restore", "start", &id]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn kill_9_in_the_middle_then_resume_finishes_the_same_cluster() {
    let (env, c, m) = setup();
    let (before, id) = backed_up(&env, &c);
    disaster(&c, &m);
    // Pause at the start of step 7 (ndb_restore -r), after the metadata is restored.
    env.kill_at("restore.step7", &["restore", "start", &id, "--yes"]);

    let _d = env.start();
    let st = env.ctl_json(&["restore", "status"]);
    assert_eq!(st["restore"]["state"], "interrupted");
    let steps = st["restore"]["steps"].as_array().unwrap();
    assert_eq!(steps[5]["state"], "done", "the metadata step stays done");
    env.ctl_ok(&["restore", "resume", "--wait"]);
    assert_eq!(c.fingerprint(), before);
    assert_eq!(c.safe_mode(), "Safe mode is OFF");
}

#[test]
fn ndb_restore_failing_on_one_node_fails_the_step_and_resume_retries_only_what_is_left() {
    let (env, c, m) = setup();
    let _d = env.start();
    let before = c.fingerprint();
    let id = env.backup_ok();
    disaster(&c, &m);
    // ndb_restore calls: -m (1st), then -r per node (2nd, 3rd): the 3rd fails.
    c.tb(&[
        "fault",
        "call",
        "--tool",
        "ndb_restore",
        "--nth",
        "3",
        "--action",
        "fail",
    ]);
    let out = env.ctl(&["restore", "start", &id, "--yes", "--wait"]);
    assert_eq!(out.status.code(), Some(1));
    let st: serde_json::Value =
        serde_json::from_slice(&env.ctl(&["--json", "restore", "status"]).stdout).unwrap();
    let step = &st["restore"]["steps"][6];
    assert_eq!(step["state"], "failed");
    let err = step["error"].as_str().unwrap();
    assert!(err.starts_with("step 7 (restore the RonDB data"), "{err}");
    let detail: serde_json::Value = serde_json::from_str(step["detail"].as_str().unwrap()).unwrap();
    assert_eq!(
        detail["done"].as_array().unwrap().len(),
        1,
        "one node restored: {detail}"
    );
    c.tb(&["fault", "clear"]);
    env.ctl_ok(&["restore", "resume", "--wait"]);
    assert_eq!(c.fingerprint(), before);
}

#[test]
fn safe_mode_that_never_turns_off_times_out_with_a_clear_error() {
    let (mut env, c, m) = setup();
    env.extra_config = env
        .extra_config
        .replace("safemode_timeout = \"60s\"", "safemode_timeout = \"2s\"");
    let _d = env.start();
    let id = env.backup_ok();
    disaster(&c, &m);
    // No datanode reports its blocks.
    c.tb(&["fault", "datanode-unreachable", "--dn", "2"]);
    c.tb(&["fault", "datanode-unreachable", "--dn", "3"]);
    c.tb(&["fault", "datanode-unreachable", "--dn", "1"]);
    let out = env.ctl(&["restore", "start", &id, "--yes", "--wait"]);
    assert_eq!(out.status.code(), Some(1));
    let st: serde_json::Value =
        serde_json::from_slice(&env.ctl(&["--json", "restore", "status"]).stdout).unwrap();
    let err = st["restore"]["error"].as_str().unwrap();
    assert!(
        err.contains("wait for safe mode OFF") && err.contains("safe mode still ON after 2s"),
        "{err}"
    );
    // The share of blocks reported (none: every datanode is unreachable).
    assert!(err.contains("0 of 30 blocks reported (0.0 %)"), "{err}");
}

/// A datanode that cannot be reached during the write-back fails the step naming it and its
/// host; once it is back, resume finishes the same cluster.
#[test]
fn a_datanode_unreachable_during_the_write_back_fails_the_step_and_resume_finishes() {
    let (mut env, c, m) = setup();
    let sshd = crate::ssh::Sshd::start();
    let wrapper = env.path().join("flaky-ssh");
    let down = env.path().join("datanodes-down");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\ncase \"$*\" in\n  *-xf*) if [ -e {f} ]; then echo 'ssh: connect to host 127.0.0.1 port {p}: Connection refused' >&2; exit 255; fi;;\nesac\nexec /usr/bin/ssh \"$@\"\n",
            f = down.display(),
            p = sshd.port
        ),
    )
    .unwrap();
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();
    env.extra_config = c.hopsfs_config("127.0.0.1")
        + &crate::tbcluster::ssh_config(&sshd, "client_key", Some(&wrapper))
        + &mysql_config(&env, &m)
        + &restore_config(&env, &c);
    let _d = env.start();
    let before = c.fingerprint();
    let id = env.backup_ok();
    disaster(&c, &m);
    std::fs::write(&down, "").unwrap();
    let out = env.ctl(&["restore", "start", &id, "--yes", "--wait"]);
    assert_eq!(out.status.code(), Some(1));
    let st = env.ctl_json(&["restore", "status"]);
    let err = st["restore"]["error"].as_str().unwrap().to_string();
    assert!(
        err.contains("write back the volumes of datanodes")
            && err.contains("datanode dn")
            && err.contains("127.0.0.1"),
        "{err}"
    );
    assert_eq!(st["restore"]["state"], "failed");

    std::fs::remove_file(&down).unwrap();
    env.ctl_ok(&["restore", "resume", "--wait"]);
    assert_eq!(c.fingerprint(), before);
}

/// kill -9 after `ndb_restore -m` finished but before the step was recorded done: the resume
/// sees every table of the backup and does not run `-m` again (it would fail: 721).
#[test]
fn kill_9_inside_the_metadata_step_then_resume() {
    let (env, c, m) = setup();
    let (before, id) = backed_up(&env, &c);
    disaster(&c, &m);
    env.kill_at("restore.meta.done", &["restore", "start", &id, "--yes"]);

    let _d = env.start();
    let st = env.ctl_json(&["restore", "status"]);
    assert_eq!(st["restore"]["steps"][5]["state"], "interrupted");
    env.ctl_ok(&["restore", "resume", "--wait"]);
    assert_eq!(c.fingerprint(), before);
}

/// kill -9 inside the volume write-back (after one datanode is done, the others in flight):
/// the datanodes done stay recorded and resume finishes the same cluster.
#[test]
fn kill_9_inside_the_volume_write_back_then_resume() {
    let (env, c, m) = setup();
    let (before, id) = backed_up(&env, &c);
    disaster(&c, &m);
    env.kill_at(
        "restore.volumes.datanode_done",
        &["restore", "start", &id, "--yes"],
    );

    let _d = env.start();
    let st = env.ctl_json(&["restore", "status"]);
    assert_eq!(st["restore"]["state"], "interrupted");
    let k = st["plan"]["steps"]
        .as_array()
        .unwrap()
        .iter()
        .position(|s| s["kind"] == "hopsfs_volumes")
        .unwrap();
    assert_eq!(
        st["plan"]["steps"][k]["title"],
        "write back the volumes of datanodes dn1, dn2, dn3 (2 in parallel)"
    );
    let vols = &st["restore"]["steps"][k];
    assert_eq!(vols["state"], "interrupted");
    let detail: serde_json::Value =
        serde_json::from_str(vols["detail"].as_str().unwrap_or("{}")).unwrap();
    let done = detail["done"].as_array().map(|a| a.len()).unwrap_or(0);
    assert!((1..3).contains(&done), "datanodes recorded done: {vols}");
    env.ctl_ok(&["restore", "resume", "--wait"]);
    assert_eq!(c.fingerprint(), before);
    assert_eq!(c.safe_mode(), "Safe mode is OFF");
}

/// A manifest whose entry path tries to leave its directory is refused before anything runs.
#[test]
fn a_manifest_path_escaping_its_directory_is_refused() {
    let (env, c, m) = setup();
    let _d = env.start();
    let id = env.backup_ok();
    disaster(&c, &m);
    let empty = c.fingerprint();
    // Rewrite the committed manifest with one path pointing outside, checksum made to match.
    let key = env.repo().join(format!("manifests/{id}.json.zst"));
    let raw = zstd::decode_all(&std::fs::read(&key).unwrap()[..]).unwrap();
    let mut doc: serde_json::Value = serde_json::from_slice(&raw).unwrap();
    let mut body = doc["body"].clone();
    let entries = body["entries"].as_array_mut().unwrap();
    let victim = entries
        .iter_mut()
        .find(|e| e["path"].as_str().unwrap().starts_with("rondb/"))
        .unwrap();
    victim["path"] = serde_json::Value::String("rondb/../../../../etc/hopsdr-evil".into());
    let body_bytes = serde_json::to_vec(&body).unwrap();
    let sum = blake3::hash(&body_bytes).to_hex().to_string();
    doc["checksum"] = serde_json::Value::String(sum);
    let text = format!(
        "{{\"checksum\":\"{}\",\"body\":{}}}\n",
        doc["checksum"].as_str().unwrap(),
        String::from_utf8(body_bytes).unwrap()
    );
    std::fs::write(&key, zstd::encode_all(text.as_bytes(), 1).unwrap()).unwrap();
    let out = env.ctl(&["restore", "start", &id, "--yes", "--wait"]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let err =
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    assert!(err.contains("corrupt") || err.contains("invalid"), "{err}");
    assert!(!std::path::Path::new("/etc/hopsdr-evil").exists());
    assert_eq!(c.fingerprint(), empty, "nothing touched");
}

/// The catalog lost after 5 backups: `hopsdrd --rebuild-catalog` gives the same `backups list`
/// (pins and verifications from the catalog copy stored with the newest backup), so does
/// `hopsdrctl catalog rebuild`, and a restore from the rebuilt catalog brings the cluster back.
#[test]
fn a_catalog_rebuilt_from_the_repository_lists_the_same_backups_and_restores() {
    let (env, c, m) = setup();
    let before = c.fingerprint();
    let mut ids = Vec::new();
    let list_before = {
        let _d = env.start();
        for n in 0..5 {
            ids.push(env.backup_ok());
            if n == 1 {
                assert_eq!(env.ctl(&["backup", "pin", &ids[0]]).status.code(), Some(0));
            }
            if n == 2 {
                let out = env.ctl(&["verify", &ids[1], "--wait"]);
                assert_eq!(out.status.code(), Some(0), "{}", env.log());
            }
        }
        env.ctl_json(&["backups", "list"])
    };
    let strip = |list: &serde_json::Value| -> Vec<serde_json::Value> {
        list["backups"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| {
                let mut b = b.clone();
                b.as_object_mut().unwrap().remove("job_id");
                b
            })
            .collect()
    };
    let want = strip(&list_before);
    assert_eq!(want.len(), 5);
    assert_eq!(want[0]["pinned"], true);
    assert!(want[1]["verified_at"].is_string());

    for f in ["catalog.db", "catalog.db-wal", "catalog.db-shm"] {
        let _ = std::fs::remove_file(env.path().join("lib").join(f));
    }
    let out = std::process::Command::new(crate::harness::HOPSDRD)
        .args(["--rebuild-catalog", "--config"])
        .arg(env.config_path())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("5 backups from 5 manifests"), "{text}");

    let _d = env.start();
    assert_eq!(strip(&env.ctl_json(&["backups", "list"])), want);
    let out = env.ctl(&["catalog", "rebuild", "--wait"]);
    assert_eq!(out.status.code(), Some(0), "{}", env.log());
    assert_eq!(strip(&env.ctl_json(&["backups", "list"])), want);

    disaster(&c, &m);
    let out = env.ctl(&["restore", "start", &ids[4], "--yes", "--wait"]);
    assert_eq!(out.status.code(), Some(0), "{}", env.log());
    assert_eq!(c.fingerprint(), before);
}
