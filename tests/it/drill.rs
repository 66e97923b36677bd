//! Restore drills, level 1, on the test-bed: a backup of a cluster (compressed RonDB files,
//! HopsFS blocks with their `.meta` checksums, the MySQL dumps) read back for its meaning, the
//! report in `drill status`, the metrics and the `drill_result` hook; a drill killed with
//! SIGKILL is recorded interrupted and the next one passes; a block damaged on its datanode
//! before the backup read it fails the drill naming the block and the chunk. Level 2: the
//! backup restored into a second test-bed cluster (a fresh deployment), each step timed, the
//! standby checked equal to the cluster backed up, the cluster itself and its restore status
//! untouched; killed inside the standby's restore, recorded interrupted without holding the
//! cluster's backups.

use std::path::{Path, PathBuf};

use crate::harness::Env;
use crate::restore::setup_with;
use crate::tbcluster::Cluster;

fn stdout(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Every finalized replica of block files under `dir`, by block name.
fn finalized_blocks(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            finalized_blocks(&p, out);
        } else {
            let n = e.file_name().to_string_lossy().into_owned();
            let is_block = n
                .strip_prefix("blk_")
                .is_some_and(|id| id.bytes().all(|b| b.is_ascii_digit()));
            if is_block && p.to_string_lossy().contains("/finalized/") {
                out.push(p);
            }
        }
    }
}

#[test]
fn a_drill_checks_the_meaning_of_a_backup_and_reports_it() {
    let (mut env, _c, _m) = setup_with(&["--compressed"]);
    let hook = env.path().join("drill-hook");
    env.extra_config.push_str(&format!(
        "[hooks]\ndrill_result = [\"/bin/sh\", \"-c\", \"env > {}\"]\n[drill]\nmax_age = \"8d\"\n",
        hook.display()
    ));
    let id = {
        let _d = env.start();
        env.backup_ok()
    };

    // Killed while reading back: recorded interrupted, with its job.
    env.kill_at("drill.read_back", &["drill"]);
    let _d = env.start();
    let o = env.ctl(&["drill", "status"]);
    assert_eq!(
        o.status.code(),
        Some(1),
        "an interrupted drill proves nothing"
    );
    assert!(
        stdout(&o).contains(&format!("of backup {id}: interrupted")),
        "{}",
        stdout(&o)
    );

    // The next one reads the whole backup and passes.
    let o = env.ctl(&["drill", "--wait"]);
    let text = stdout(&o);
    assert_eq!(o.status.code(), Some(0), "{text}\n{}", env.log());
    assert!(
        text.starts_with(&format!("drill level 1 of backup {id}: PASSED\n")),
        "{text}"
    );
    for want in [
        "chunks matched their .meta checksums",
        // Two data nodes: a ctl, a data and a log file each, compressed (AZ31) and walked
        // (the two ctl files hold the same bytes: read once).
        "rondb ctl file: 1 files",
        "rondb data file: 2 files",
        "rondb log file: 2 files",
        "sql dump: 2 files",
        "total (read-back)",
    ] {
        assert!(text.contains(want), "{want}\n{text}");
    }
    let status = env.ctl_json(&["drill", "status"]);
    let d = &status["drills"][0];
    assert_eq!(d["state"], "succeeded");
    assert_eq!(d["backup_id"], id.as_str());
    let checks = &d["report"]["checks"];
    let blocks = checks["hopsfs block"]["files"].as_u64().unwrap();
    assert!(blocks >= 10, "{checks}");
    assert!(
        checks["rondb data file"]["units"].as_u64().unwrap() > 0,
        "{checks}"
    );
    assert_eq!(status["drills"][1]["state"], "interrupted");

    // The readable report again by the drill's job, the metrics, the hook.
    let job = d["job_id"].as_i64().unwrap().to_string();
    let again = env.ctl(&["drill", "status", &job]);
    assert_eq!(again.status.code(), Some(0));
    assert_eq!(stdout(&again), text);
    let m = env.metrics();
    assert!(
        m.contains("hopsdr_drill_last_success_timestamp_seconds{level=\"1\"}"),
        "{m}"
    );
    assert!(
        m.contains("hopsdr_drills_total{level=\"1\",result=\"passed\"} 1"),
        "{m}"
    );
    assert!(m.contains("hopsdr_drill_max_age_seconds 691200"), "{m}");
    let facts = std::fs::read_to_string(&hook).unwrap();
    for want in [
        "HOPSDR_EVENT=drill_result",
        "HOPSDR_STATE=passed",
        "HOPSDR_LEVEL=1",
        "HOPSDR_FINDINGS=0",
    ] {
        assert!(facts.contains(want), "{want}: {facts}");
    }
    assert!(facts.contains(&format!("HOPSDR_BACKUP_ID={id}")), "{facts}");
    // The drill read everything: the backup counts as verified.
    let show = env.ctl_json(&["backups", "list"]);
    assert!(show["backups"][0]["verified_at"].is_string(), "{show}");
}

#[test]
fn a_block_damaged_on_its_datanode_before_the_backup_fails_the_drill() {
    let mut env = Env::new();
    let c = Cluster::create(&env, &[]);
    env.extra_config = c.hopsfs_config("local");
    // One block's bytes changed under its .meta, on every datanode holding it.
    let mut all = Vec::new();
    for dn in 1..=c.datanodes {
        for v in 1..=c.volumes {
            finalized_blocks(&c.volume(dn, v), &mut all);
        }
    }
    all.sort();
    let name = all[all.len() / 2].file_name().unwrap().to_owned();
    let mut damaged = 0;
    for p in all.iter().filter(|p| p.file_name().unwrap() == name) {
        let mut b = std::fs::read(p).unwrap();
        assert!(b.len() > 700, "{}", p.display());
        b[600] ^= 0x01;
        std::fs::write(p, b).unwrap();
        damaged += 1;
    }
    assert!(damaged > 0);
    let _d = env.start();
    let id = env.backup_ok();
    let o = env.ctl(&["drill", &id, "--wait"]);
    let text = stdout(&o);
    assert_eq!(o.status.code(), Some(1), "{text}");
    assert!(text.contains(": FAILED"), "{text}");
    assert!(text.contains("wrong in the content: 1 file(s)"), "{text}");
    let name = name.to_string_lossy();
    let line = text
        .lines()
        .find(|l| l.contains(&format!("/{name}:")))
        .unwrap_or_else(|| panic!("no finding for {name}: {text}"));
    assert!(
        line.contains("chunk 1 (bytes 512..1024) has CRC32C")
            && line.contains("did not match its own checksums when the backup read it"),
        "{line}"
    );
    let m = env.metrics();
    assert!(
        m.contains("hopsdr_drills_total{level=\"1\",result=\"failed\"} 1"),
        "{m}"
    );
    assert!(
        !m.contains("hopsdr_drill_last_success_timestamp_seconds{"),
        "{m}"
    );
    let job = env.ctl_json(&["drill", "status"])["drills"][0]["job_id"]
        .as_i64()
        .unwrap();
    let j = env.ctl_json(&["job", &job.to_string()]);
    assert_eq!(j["state"], "failed");
    assert!(
        j["error"]
            .as_str()
            .unwrap()
            .contains("1 wrong in their content"),
        "{j}"
    );
}

#[test]
fn a_level_2_drill_restores_into_a_standby_and_times_every_step() {
    let (mut env, c, m) = crate::restore::setup();
    // The standby: a second cluster, deployed fresh as Hopsworks does.
    let standby = Cluster::create_named(&env, "standby", &["--binlog"]);
    standby.tb(&["cluster", "destroy"]);
    standby.tb(&["cluster", "redeploy"]);
    let file = env.path().join("standby.toml");
    let before = c.fingerprint();
    std::fs::write(
        &file,
        standby.hopsfs_config("local")
            + &crate::restore::mysql_config(&env, &m)
            + &crate::restore::restore_config(&env, &standby),
    )
    .unwrap();
    // The check: the standby's fingerprint is the cluster's at the backup.
    env.extra_config.push_str(&format!(
        "[drill]\nstandby = \"{}\"\ncheck = [\"/bin/sh\", \"-c\", \"test \\\"$({} cluster fingerprint --dir {})\\\" = {before}\"]\n",
        file.display(),
        crate::tbcluster::TB,
        standby.dir.display()
    ));
    let id = {
        let _d = env.start();
        env.backup_ok()
    };
    // Killed inside the standby's restore: the drill and its restore are recorded
    // interrupted, and neither is the cluster's restore (none to resume, backups not held).
    env.kill_at("restore.data.node_done", &["drill", "--level", "2"]);
    let _d = env.start();
    let o = env.ctl(&["drill", "status"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stdout(&o).contains(&format!("level 2 of backup {id}: interrupted")),
        "{}",
        stdout(&o)
    );
    let r = env.ctl(&["restore", "resume", "--wait"]);
    assert_ne!(
        r.status.code(),
        Some(0),
        "the drill's restore is not resumed as the cluster's"
    );
    env.backup_ok();
    // The standby deployed afresh; the next drill restores it whole.
    standby.tb(&["cluster", "destroy"]);
    standby.tb(&["cluster", "redeploy"]);
    let o = env.ctl(&["drill", &id, "--level", "2", "--wait"]);
    let text = stdout(&o);
    assert_eq!(o.status.code(), Some(0), "{text}\n{}", env.log());
    assert!(
        text.starts_with(&format!("drill level 2 of backup {id}: PASSED\n")),
        "{text}"
    );
    for want in [
        "restored into the standby cluster, step by step",
        "restore the RonDB data",
        "write back the volumes",
        "total (RTO)",
    ] {
        assert!(text.contains(want), "{want}\n{text}");
    }
    let d = &env.ctl_json(&["drill", "status"])["drills"][0];
    assert_eq!(d["level"], 2);
    let steps = d["report"]["steps"].as_array().unwrap();
    assert!(steps.len() >= 10, "{d}");
    assert!(d["rto_seconds"].as_f64().unwrap() > 0.0, "{d}");
    assert_eq!(standby.fingerprint(), before);
    // The cluster backed up is untouched, and its restore status knows no restore.
    assert_eq!(c.fingerprint(), before);
    let st = env.ctl(&["restore", "status"]);
    assert_ne!(st.status.code(), Some(0), "{}", stdout(&st));
    let m = env.metrics();
    assert!(m.contains("hopsdr_drill_rto_seconds{level=\"2\"}"), "{m}");
    // The standby now holds the cluster: a second level 2 drill is refused by the restore's
    // own target check (a standby must be a fresh deployment), before anything is touched.
    let o = env.ctl(&["drill", "--level", "2", "--wait"]);
    assert_eq!(
        o.status.code(),
        Some(1),
        "a second drill onto a used standby is refused: {}",
        stdout(&o)
    );
}
