//! HopsFS blocks through the real daemon on the test-bed: consistent with the RonDB backup
//! (pinned at the consistency point), incremental, covered, restorable by hand; and faults.

use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::Duration;

use hopsdr::ids::BackupId;
use hopsdr::repository::{Entry, LocalStorage, Repository};

use crate::harness::{wait_for, Env};

const TB: &str = env!("CARGO_BIN_EXE_hopsdr-testbed");

struct Cluster {
    dir: PathBuf,
    datanodes: u32,
    volumes: u32,
}

impl Cluster {
    fn create(env: &Env, extra: &[&str]) -> Cluster {
        let dir = env.path().join("cluster");
        let mut args = vec![
            "cluster",
            "create",
            "--dir",
            dir.to_str().unwrap(),
            "--data-nodes",
            "2",
            "--hopsfs-datanodes",
            "3",
            "--volumes",
            "2",
            "--rows",
            "40",
        ];
        if !extra.contains(&"--files") {
            args.extend(["--files", "30"]);
        }
        args.extend_from_slice(extra);
        let out = Command::new(TB).args(&args).output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        Cluster {
            dir,
            datanodes: 3,
            volumes: 2,
        }
    }

    fn tb(&self, args: &[&str]) -> Output {
        let out = Command::new(TB)
            .args(args)
            .env("HOPSDR_TESTBED_DIR", &self.dir)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "testbed {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    fn tool(&self, name: &str, args: &[&str]) -> Output {
        Command::new(self.dir.join("bin").join(name))
            .args(args)
            .output()
            .unwrap()
    }

    fn volume(&self, dn: u32, vol: u32) -> PathBuf {
        self.dir.join(format!("hopsfs/dn{dn}/vol{vol}"))
    }

    fn fingerprint(&self) -> String {
        String::from_utf8_lossy(&self.tb(&["cluster", "fingerprint"]).stdout)
            .trim()
            .to_string()
    }

    fn config(&self, host: &str) -> String {
        let mut s = format!(
            "[rondb]\nmgm_client = [\"{}\", \"-c\", \"10.0.0.1:1186\"]\nbackup_timeout = \"60s\"\ncommand_timeout = \"30s\"\n",
            self.dir.join("bin/ndb_mgm").display()
        );
        for n in [1, 2] {
            s.push_str(&format!(
                "[[rondb.data_nodes]]\nid = {n}\nhost = \"local\"\nbackup_dir = \"{}\"\n",
                self.dir.join(format!("ndb/{n}/backups")).display()
            ));
        }
        s.push_str(&format!(
            "[hopsfs]\ncopy_timeout = \"60s\"\nreferenced_blocks = [\"{TB}\", \"backup\", \"blocks\", \"--dir\", \"{}\"]\n",
            self.dir.display()
        ));
        for dn in 1..=self.datanodes {
            let vols: Vec<String> = (1..=self.volumes)
                .map(|v| format!("\"{}\"", self.volume(dn, v).display()))
                .collect();
            s.push_str(&format!(
                "[[hopsfs.datanodes]]\nname = \"dn{dn}\"\nhost = \"{host}\"\nvolumes = [{}]\n",
                vols.join(", ")
            ));
        }
        s
    }
}

fn repo(env: &Env) -> Repository {
    Repository::open_or_init(
        std::sync::Arc::new(LocalStorage::new(env.repo()).unwrap()),
        3,
    )
    .unwrap()
}

fn last_backup(env: &Env) -> serde_json::Value {
    let list = env.ctl_json(&["backups", "list"]);
    list["backups"].as_array().unwrap().last().unwrap().clone()
}

fn hopsfs_facts(env: &Env, id: &str) -> serde_json::Value {
    let m = repo(env)
        .read_manifest(&BackupId::parse(id).unwrap())
        .unwrap();
    serde_json::Value::Object(m.info.extra.clone())["hopsfs"].clone()
}

/// Restores a backup by hand onto the redeployed test-bed cluster, in the guide's order:
/// ndb_restore (-m, -r per node, --rebuild-indexes), volumes written back, datanodes started.
fn restore_by_hand(env: &Env, c: &Cluster, id: &str) {
    let repo = repo(env);
    let m = repo.read_manifest(&BackupId::parse(id).unwrap()).unwrap();
    let rid = m.info.extra["rondb"]["backup_id"].as_u64().unwrap();
    c.tb(&["cluster", "destroy"]);
    c.tb(&["cluster", "redeploy"]);
    let staged = env.path().join(format!("staged-{id}"));
    for e in &m.entries {
        match e {
            Entry::File(f) => {
                let target = if let Some(rest) = f.path.strip_prefix("rondb/") {
                    staged.join(rest)
                } else if let Some(rest) = f.path.strip_prefix("hopsfs/") {
                    // hopsfs/dn<k>/vol<i>/current/... -> the volume
                    let mut p = rest.splitn(3, '/');
                    let (dn, vol, inside) =
                        (p.next().unwrap(), p.next().unwrap(), p.next().unwrap());
                    c.dir.join("hopsfs").join(dn).join(vol).join(inside)
                } else {
                    continue;
                };
                std::fs::create_dir_all(target.parent().unwrap()).unwrap();
                let mut out = std::fs::File::create(&target).unwrap();
                repo.restore_file(f, &mut out).unwrap();
            }
            Entry::Dir { path, .. } => {
                if let Some(rest) = path.strip_prefix("hopsfs/") {
                    let mut p = rest.splitn(3, '/');
                    if let (Some(dn), Some(vol), Some(inside)) = (p.next(), p.next(), p.next()) {
                        std::fs::create_dir_all(
                            c.dir.join("hopsfs").join(dn).join(vol).join(inside),
                        )
                        .unwrap();
                    }
                }
            }
            _ => {}
        }
    }
    let rid_s = rid.to_string();
    let restore = |args: &[&str]| {
        let out = c.tool("ndb_restore", args);
        assert!(
            out.status.success(),
            "ndb_restore {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    };
    for n in [1u32, 2] {
        let p = staged.join(format!("{n}/BACKUP-{rid}"));
        let p = p.to_str().unwrap();
        let ns = n.to_string();
        if n == 1 {
            restore(&[
                "-c",
                "10.0.0.1:1186",
                "-n",
                &ns,
                "-b",
                &rid_s,
                "-m",
                "--disable-indexes",
                "--backup_path",
                p,
            ]);
        }
        restore(&[
            "-c",
            "10.0.0.1:1186",
            "-n",
            &ns,
            "-b",
            &rid_s,
            "-r",
            "--backup_path",
            p,
        ]);
    }
    let p1 = staged.join(format!("1/BACKUP-{rid}"));
    restore(&[
        "-c",
        "10.0.0.1:1186",
        "-n",
        "1",
        "-b",
        &rid_s,
        "--rebuild-indexes",
        "--backup_path",
        p1.to_str().unwrap(),
    ]);
    for dn in 1..=c.datanodes {
        c.tb(&["datanode", "start", &dn.to_string()]);
    }
    // Kafka topics are recreated from the restored hopsworks.project_topics.
    let out = c.tool("kafka-restore.sh", &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn safe_mode(c: &Cluster) -> String {
    let out = c.tool("hdfs", &["dfsadmin", "-safemode", "get"]);
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[test]
fn hopsfs_backup_restores_the_cluster_whole_and_is_incremental() {
    let mut env = Env::new();
    let c = Cluster::create(&env, &[]);
    env.extra_config = c.config("local");
    let _d = env.start();
    let before = c.fingerprint();
    let out = env.ctl(&["backup", "start", "--wait"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        env.log()
    );
    let b1 = last_backup(&env);
    assert_eq!(b1["state"], "succeeded");
    let id1 = b1["id"].as_str().unwrap().to_string();
    let f1 = hopsfs_facts(&env, &id1);
    assert_eq!(f1["coverage_checked"], true);
    assert_eq!(f1["referenced_blocks"], 30);
    assert_eq!(f1["missing_blocks"].as_array().unwrap().len(), 0);
    assert_eq!(f1["blocks"], 90, "30 blocks × 3 replicas");
    assert_eq!(f1["blocks_new"], 90);
    assert!(f1["fence_window_seconds"].as_f64().unwrap() < 30.0);
    // Pins are gone.
    for dn in 1..=3 {
        for v in 1..=2 {
            assert!(!c.volume(dn, v).join("hopsdr-pin").exists());
        }
    }
    let show = env.ctl_json(&["backups", "show", &id1]);
    let comps: Vec<&str> = show["components"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["component"].as_str().unwrap())
        .collect();
    assert_eq!(comps, ["files", "rondb", "hopsfs"]);
    let m = env.metrics();
    assert!(m.contains("hopsdr_hopsfs_blocks_missing 0"), "{m}");
    assert!(m.contains("hopsdr_hopsfs_blocks{kind=\"new\"} 90"), "{m}");

    // Second backup of the unchanged cluster: no block transferred.
    let out = env.ctl(&["backup", "start", "--wait"]);
    assert_eq!(out.status.code(), Some(0), "{}", env.log());
    let b2 = last_backup(&env);
    let id2 = b2["id"].as_str().unwrap().to_string();
    let f2 = hopsfs_facts(&env, &id2);
    assert_eq!(f2["blocks"], 90);
    assert_eq!(f2["blocks_new"], 0);
    let hopsfs2 = show_component(&env, &id2, "hopsfs");
    let hopsfs1 = show_component(&env, &id1, "hopsfs");
    assert!(
        hopsfs2["stored_bytes"].as_u64().unwrap() < hopsfs1["stored_bytes"].as_u64().unwrap() / 10,
        "{hopsfs2} vs {hopsfs1}"
    );

    // The second backup restores on its own: the whole cluster comes back.
    restore_by_hand(&env, &c, &id2);
    wait_for("safe mode OFF", Duration::from_secs(30), || {
        (safe_mode(&c) == "Safe mode is OFF").then_some(())
    });
    let fsck = c.tool("hdfs", &["fsck", "/"]);
    assert!(
        fsck.status.success(),
        "{}",
        String::from_utf8_lossy(&fsck.stdout)
    );
    assert_eq!(c.fingerprint(), before);
}

fn show_component(env: &Env, id: &str, name: &str) -> serde_json::Value {
    let show = env.ctl_json(&["backups", "show", id]);
    show["components"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["component"] == name)
        .unwrap()
        .clone()
}

#[test]
fn new_blocks_only_are_transferred_after_churn() {
    let mut env = Env::new();
    let c = Cluster::create(&env, &[]);
    env.extra_config = c.config("local");
    let _d = env.start();
    assert_eq!(
        env.ctl(&["backup", "start", "--wait"]).status.code(),
        Some(0)
    );
    c.tb(&["cluster", "churn", "--seconds", "1"]);
    let out = env.ctl(&["backup", "start", "--wait"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let b = last_backup(&env);
    let f = hopsfs_facts(&env, b["id"].as_str().unwrap());
    let total = f["blocks"].as_u64().unwrap();
    let new = f["blocks_new"].as_u64().unwrap();
    assert!(new > 0 && new < total / 2, "new {new} of {total}");
    assert_eq!(f["missing_blocks"].as_array().unwrap().len(), 0);
}

#[test]
fn a_pin_left_by_a_crash_is_removed_at_start() {
    let mut env = Env::new();
    let c = Cluster::create(&env, &[]);
    env.extra_config = c.config("local");
    let stale = c.volume(2, 1).join("hopsdr-pin/20260101T000000Z/current");
    std::fs::create_dir_all(&stale).unwrap();
    std::fs::write(stale.join("blk_1"), b"x").unwrap();
    let _d = env.start();
    assert!(!c.volume(2, 1).join("hopsdr-pin").exists());
}

#[test]
fn an_unreachable_datanode_fails_the_backup_naming_it() {
    let mut env = Env::new();
    let c = Cluster::create(&env, &[]);
    let sshd = crate::ssh::Sshd::start();
    // dn3 is reached over ssh at an address nothing listens on.
    let cfg = c.config("local").replacen(
        "name = \"dn3\"\nhost = \"local\"",
        "name = \"dn3\"\nhost = \"127.0.0.9\"",
        1,
    );
    env.extra_config = cfg
        + &format!(
            "[ssh]\nport = {}\nidentity_file = \"{}\"\nknown_hosts = \"{}\"\nconnect_timeout = \"5s\"\n",
            sshd.port,
            sshd.dir.path().join("client_key").display(),
            sshd.dir.path().join("known_hosts").display()
        );
    let _d = env.start();
    let out = env.ctl(&["backup", "start", "--wait"]);
    assert_eq!(out.status.code(), Some(1));
    let b = last_backup(&env);
    let e = b["error"].as_str().unwrap();
    assert!(
        e.contains("datanode dn3") && e.contains("ssh to 127.0.0.9 failed"),
        "{e}"
    );
    assert!(env.manifests().is_empty());
    // Nothing was started on the cluster.
    let listing = std::fs::read_dir(c.dir.join("ndb/1/backups"))
        .map(|r| r.count())
        .unwrap_or(0);
    assert_eq!(
        listing, 0,
        "no START BACKUP before every datanode is reachable"
    );
}

/// Consistency under churn: backups taken while files are created, deleted (block files removed
/// seconds later) and appended all restore with safe mode OFF and no missing block. With the
/// fence disabled (copying the live volumes late, as the guide does) the same check fails.
#[test]
fn backups_under_churn_are_consistent_and_the_test_bites_without_the_fence() {
    let run = |fence: bool| -> Vec<(String, usize)> {
        let mut env = Env::new();
        let c = Cluster::create(&env, &["--files", "60"]);
        env.extra_config = c.config("local");
        let fp = if fence { "" } else { "hopsfs.no_fence=3000" };
        let _d = env.start_with(&[("HOPSDR_FAILPOINTS", fp)]);
        let churn_dir = c.dir.clone();
        let churn = std::thread::spawn(move || {
            Command::new(TB)
                .args(["cluster", "churn", "--seconds", "12"])
                .env("HOPSDR_TESTBED_DIR", &churn_dir)
                .output()
                .unwrap()
        });
        let mut results = Vec::new();
        for _ in 0..2 {
            let out = env.ctl(&["backup", "start", "--wait"]);
            let b = last_backup(&env);
            assert!(
                matches!(out.status.code(), Some(0) | Some(1)),
                "{}",
                env.log()
            );
            let id = b["id"].as_str().unwrap().to_string();
            let f = hopsfs_facts(&env, &id);
            results.push((
                b["state"].as_str().unwrap().to_string(),
                f["missing_blocks"].as_array().map(|a| a.len()).unwrap_or(0),
            ));
        }
        assert!(churn.join().unwrap().status.success());
        if fence {
            // Every backup restores: safe mode OFF, fsck clean.
            let last = last_backup(&env)["id"].as_str().unwrap().to_string();
            restore_by_hand(&env, &c, &last);
            wait_for("safe mode OFF", Duration::from_secs(30), || {
                (safe_mode(&c) == "Safe mode is OFF").then_some(())
            });
            let fsck = c.tool("hdfs", &["fsck", "/"]);
            assert!(
                fsck.status.success(),
                "{}",
                String::from_utf8_lossy(&fsck.stdout)
            );
        }
        results
    };
    let fenced = run(true);
    assert!(
        fenced.iter().all(|(s, m)| s == "succeeded" && *m == 0),
        "{fenced:?}"
    );
    let unfenced = run(false);
    assert!(
        unfenced.iter().any(|(s, m)| s == "partial" && *m > 0),
        "without the fence, deleted blocks are lost: {unfenced:?}"
    );
}

fn ssh_section(sshd: &crate::ssh::Sshd, ssh_binary: Option<&std::path::Path>) -> String {
    let mut s = format!(
        "[ssh]\nport = {}\nidentity_file = \"{}\"\nknown_hosts = \"{}\"\nconnect_timeout = \"5s\"\n",
        sshd.port,
        sshd.dir.path().join("client_key").display(),
        sshd.dir.path().join("known_hosts").display()
    );
    if let Some(b) = ssh_binary {
        s.push_str(&format!("ssh = \"{}\"\n", b.display()));
    }
    s
}

#[test]
fn hopsfs_over_ssh_backs_up_and_restores() {
    let mut env = Env::new();
    let c = Cluster::create(&env, &[]);
    let sshd = crate::ssh::Sshd::start();
    env.extra_config = c.config("127.0.0.1") + &ssh_section(&sshd, None);
    let _d = env.start();
    let before = c.fingerprint();
    let out = env.ctl(&["backup", "start", "--wait"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let id = last_backup(&env)["id"].as_str().unwrap().to_string();
    let f = hopsfs_facts(&env, &id);
    assert_eq!(f["blocks"], 90);
    assert_eq!(f["missing_blocks"].as_array().unwrap().len(), 0);
    restore_by_hand(&env, &c, &id);
    wait_for("safe mode OFF", Duration::from_secs(30), || {
        (safe_mode(&c) == "Safe mode is OFF").then_some(())
    });
    assert_eq!(c.fingerprint(), before);
}

#[test]
fn cloud_block_storage_backs_up_only_the_metadata() {
    let mut env = Env::new();
    let c = Cluster::create(&env, &[]);
    let cfg = c.config("local");
    // No datanodes in cloud mode: the blocks live in object storage.
    let cut = cfg.find("[[hopsfs.datanodes]]").unwrap();
    env.extra_config = cfg[..cut].replace("[hopsfs]\n", "[hopsfs]\nblock_storage = \"cloud\"\n");
    let _d = env.start();
    let out = env.ctl(&["backup", "start", "--wait"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let id = last_backup(&env)["id"].as_str().unwrap().to_string();
    let f = hopsfs_facts(&env, &id);
    assert_eq!(f["block_storage"], "cloud");
    assert_eq!(f["blocks"], 0);
    let m = repo(&env)
        .read_manifest(&BackupId::parse(&id).unwrap())
        .unwrap();
    assert!(m.entries.iter().all(|e| !e.path().starts_with("hopsfs/")));
    assert!(m.entries.iter().any(|e| e.path().starts_with("rondb/")));
}

#[test]
fn a_block_stream_cut_mid_way_fails_and_commits_nothing() {
    use std::os::unix::fs::PermissionsExt;

    let mut env = Env::new();
    let c = Cluster::create(&env, &["--files", "60", "--block-size", "65536"]);
    let sshd = crate::ssh::Sshd::start();
    let wrapper = env.path().join("cutting-ssh");
    let flag = env.path().join("cut");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\ncase \"$*\" in\n  *--null*) if [ -e {flag} ]; then /usr/bin/ssh \"$@\" | head -c 100000; exit 255; fi;;\nesac\nexec /usr/bin/ssh \"$@\"\n",
            flag = flag.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(&flag, "").unwrap();
    env.extra_config = c.config("127.0.0.1") + &ssh_section(&sshd, Some(&wrapper));
    let _d = env.start();
    let out = env.ctl(&["backup", "start", "--wait"]);
    assert_eq!(out.status.code(), Some(1));
    let e = last_backup(&env)["error"].as_str().unwrap().to_string();
    assert!(
        e.starts_with("hopsfs: copying datanode dn1, volume ")
            && e.contains("the stream ended early"),
        "{e}"
    );
    assert!(env.manifests().is_empty());
    for dn in 1..=3 {
        assert!(
            !c.volume(dn, 1).join("hopsdr-pin").exists(),
            "pins removed after a failure"
        );
    }
    std::fs::remove_file(&flag).unwrap();
    let out = env.ctl(&["backup", "start", "--wait"]);
    assert_eq!(out.status.code(), Some(0), "{}", env.log());
}
