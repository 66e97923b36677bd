//! The repository in S3: a real S3-compatible server on loopback (`s3s-fs`, which checks
//! signatures), the storage conformance suite against it, a whole-cluster backup, incremental
//! backup, verify, prune with garbage collection and a restore drill through hopsdrd, and the
//! refusals an operator meets first: wrong credentials, a bucket that does not exist.

use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::harness::{free_port, wait_for, Env};
use crate::tbcluster::Cluster;

pub const ACCESS_KEY: &str = "hopsdr-test";
pub const SECRET_KEY: &str = "hopsdr-test-secret-key";

/// `s3s-fs` serving a temp directory (each subdirectory is a bucket) on a free loopback port.
pub struct S3Server {
    child: Child,
    pub port: u16,
    pub dir: tempfile::TempDir,
}

impl S3Server {
    pub fn start() -> S3Server {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let child = spawn_server(dir.path(), port);
        S3Server { child, port, dir }
    }

    /// Starts the server again on the same directory and port (after a kill).
    pub fn restart(&mut self) {
        self.child = spawn_server(self.dir.path(), self.port);
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Makes bucket `name`.
    pub fn bucket(&self, name: &str) {
        std::fs::create_dir_all(self.dir.path().join(name)).unwrap();
    }

    /// `[repository]` for bucket `bucket` with the secret key in a 0600 file under `env`.
    pub fn repository_config(&self, env: &Env, bucket: &str, secret: &str) -> String {
        let file = env.path().join("s3.secret");
        std::fs::write(&file, format!("{secret}\n")).unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
        format!(
            "[repository]\ntype = \"s3\"\nendpoint = \"{}\"\nregion = \"us-east-1\"\nbucket = \"{bucket}\"\n\
             prefix = \"cluster1\"\npath_style = true\naccess_key_id = \"{ACCESS_KEY}\"\n\
             secret_access_key = {{ file = \"{}\" }}\npart_size_mib = 5\n",
            self.endpoint(),
            file.display()
        )
    }

    pub fn storage(&self, bucket: &str, prefix: &str) -> hopsdr::repository::S3Storage {
        hopsdr::repository::S3Storage::new(&s3_options(self, bucket, prefix)).unwrap()
    }
}

fn spawn_server(dir: &std::path::Path, port: u16) -> Child {
    let child = Command::new("s3s-fs")
        .args(["--host", "127.0.0.1", "--port", &port.to_string()])
        .args(["--access-key", ACCESS_KEY, "--secret-key", SECRET_KEY])
        .arg(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("s3s-fs (scripts/setup-test-deps installs it)");
    wait_for("s3s-fs to listen", Duration::from_secs(20), || {
        TcpStream::connect(("127.0.0.1", port)).ok()
    });
    child
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn the_s3_store_passes_the_storage_conformance_suite() {
    let s3 = S3Server::start();
    s3.bucket("conformance");
    let store = s3.storage("conformance", "some/prefix");
    // 11 MiB with 5 MiB parts: a multipart upload of three parts.
    hopsdr::repository::conformance::check_storage(&store, "suite", 11 << 20).unwrap();
    // Objects live under the prefix.
    hopsdr::repository::Storage::put(&store, "k/v", b"x").unwrap();
    assert!(s3.dir.path().join("conformance/some/prefix/k/v").exists());
}

#[test]
fn backups_verify_prune_and_a_restore_drill_through_s3() {
    let mut env = Env::new();
    let c = Cluster::create(&env, &[]);
    let s3 = S3Server::start();
    s3.bucket("hopsdr");
    env.repository_config = Some(s3.repository_config(&env, "hopsdr", SECRET_KEY));
    env.extra_config = c.hopsfs_config("local")
        + &crate::restore::restore_config(&env, &c)
        + "[retention]\nkeep_last = 1\nprune_after_backup = false\n"
        + &crate::agents::agents_config();
    let before = c.fingerprint();
    let _d = env.start();
    // Every node's agent reaches the bucket with the credentials it is handed.
    for a in crate::agents::all_ready(&env) {
        assert_eq!(a["repository"]["problem"], serde_json::Value::Null, "{a:#}");
        assert!(
            a["repository"]["store"]
                .as_str()
                .is_some_and(|s| s.starts_with("s3://hopsdr/cluster1")),
            "{a:#}"
        );
        assert_eq!(a["keys_match"], serde_json::Value::Null, "plaintext");
    }
    let first = env.backup_ok();
    let second = env.backup_ok();
    let m = s3_repo(&s3)
        .read_manifest(&hopsdr::ids::BackupId::parse(&second).unwrap())
        .unwrap();
    // As stored: the manifest's `info.extra.hopsfs`.
    let f = serde_json::to_value(&m.info).unwrap()["extra"]["hopsfs"].clone();
    assert_eq!(
        f["blocks_new"], 0,
        "the second backup transfers no block: {f}"
    );
    let out = env.ctl(&["verify", &second, "--wait"]);
    assert_eq!(out.status.code(), Some(0), "{}", env.log());
    let out = env.ctl(&["--json", "repo", "check"]);
    assert_eq!(out.status.code(), Some(0));

    // Prune: the first backup's manifest and its own blobs go; the second stays whole.
    let blobs = |s3: &S3Server| walk(&s3.dir.path().join("hopsdr/cluster1/packs"));
    let before_gc = blobs(&s3);
    assert_eq!(
        env.ctl(&["prune", "--wait"]).status.code(),
        Some(0),
        "{}",
        env.log()
    );
    // The first backup's own blobs (its catalog copy, ...) are dropped from the index; the
    // packs the second backup still uses stay.
    assert!(blobs(&s3) <= before_gc);
    let log = env.log();
    let pruned = log
        .lines()
        .find(|l| l.contains("prune succeeded"))
        .expect("a prune line");
    assert!(
        pruned.contains("blobs_deleted=") && !pruned.contains("blobs_deleted=0"),
        "{pruned}"
    );
    let list = env.ctl_json(&["backups", "list"]);
    let ids = Env::listed_ids(&list);
    assert_eq!(ids, [second.as_str()], "{first} forgotten");

    // The drill: the cluster lost, redeployed as Hopsworks does, restored from S3.
    c.tb(&["cluster", "destroy"]);
    c.tb(&["cluster", "redeploy"]);
    let out = env.ctl(&["restore", "start", &second, "--yes", "--wait"]);
    assert_eq!(out.status.code(), Some(0), "{}", env.log());
    assert_eq!(c.fingerprint(), before);
}

/// `[agents] enabled`: every RonDB data node's agent stores its BACKUP-<id> (part directories
/// included) and every datanode's agent its volumes straight into the bucket (the log says so
/// per node); the manifest records the same files as a backup through hopsdrd. After a churn of
/// 9 blocks the next backup's agents store only the replicas that changed; the cluster restores
/// whole from that second backup. The repository is encrypted and its data key rotated between
/// the backups: the agents that write the volumes back are given every data key.
#[test]
fn with_agents_the_data_nodes_store_their_own_backup_and_the_cluster_restores_whole() {
    use std::os::unix::fs::PermissionsExt;
    let mut env = Env::new();
    // Multi-part backups: each BACKUP-<id> holds BACKUP-<id>-PART-<p>-OF-2 directories.
    let c = Cluster::create(&env, &["--multi-part", "2"]);
    let s3 = S3Server::start();
    s3.bucket("hopsdr");
    let key = env.path().join("repository.key");
    std::fs::write(&key, "the agents' S3 passphrase\n").unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    env.repository_config = Some(
        s3.repository_config(&env, "hopsdr", SECRET_KEY)
            + &format!(
                "\n[repository.encryption]\npassphrase = {{ file = \"{}\" }}\n",
                key.display()
            ),
    );
    env.extra_config = c.hopsfs_config("local")
        + &crate::restore::restore_config(&env, &c)
        + &crate::agents::agents_enabled_config();
    let funnel = crate::agents::funnel_node_files(&c);
    let _d = env.start();
    let id = env.backup_ok();
    crate::agents::assert_through_agents(&env, false, c.datanodes);
    let repo = hopsdr::repository::Repository::open_with(
        std::sync::Arc::new(s3.storage("hopsdr", "cluster1")),
        hopsdr::repository::OpenOptions {
            compression_level: 3,
            key: Some(&hopsdr::repository::KeySource {
                passphrase: "the agents' S3 passphrase".to_string().into(),
                slot: None,
                describe: "test".into(),
            }),
            packed: true,
            cache_dir: Some(env.path().join("test-cache")),
        },
    )
    .unwrap();
    let through_agents = node_files(&repo, &id);
    assert_eq!(through_agents, funnel);
    assert!(
        through_agents.iter().any(|p| p.contains("-PART-2-OF-2/")),
        "{through_agents:?}"
    );
    let stored = |log: &str| -> u64 {
        log.lines()
            .filter(|l| l.contains("volume stored by the node's agent"))
            .map(|l| {
                let v = l.split("replicas=").nth(1).unwrap();
                v.split(' ').next().unwrap().parse::<u64>().unwrap()
            })
            .sum()
    };
    let first = stored(&env.log());
    assert!(first > 0, "{}", env.log());
    c.tb(&["cluster", "churn", "--blocks", "9"]);
    let rotated = env.ctl_json(&["key", "rotate"]);
    assert!(rotated.to_string().contains('2'), "{rotated}");
    let before = c.fingerprint();
    let log_len = env.log().len();
    let id = env.backup_ok();
    let second = stored(&env.log()[log_len..]);
    // 9 blocks changed (new or appended), each with up to 3 replicas; nothing else sent.
    assert!(
        (1..=27).contains(&second) && second < first,
        "second backup stored {second} replicas (first {first}): {}",
        &env.log()[log_len..]
    );
    crate::agents::restore_whole(&env, &c, &id, &before);
    // The volumes were written back by the datanodes' agents, from the bucket.
    let log = env.log();
    for dn in ["dn1", "dn2", "dn3"] {
        assert!(
            log.lines()
                .any(|l| l.contains("volume written back by the node's agent")
                    && l.contains(&format!("node={dn}"))
                    && !l.contains("bytes=0")),
            "{dn}'s volumes through its agent: {log}"
        );
    }
}

/// hopsdrd killed (SIGKILL) while the nodes' agents store a backup — after a pack was adopted,
/// after a data node's files were recorded, after a datanode's replica was recorded (its unit
/// perhaps only claimed); in S3 and in a local repository — and started
/// again: the agents are gone (their input closed), the backup is recorded interrupted with no
/// manifest, the next backup through the agents succeeds and verifies, and a prune's collection
/// and `repo check` pass.
#[test]
fn killed_while_agents_store_a_backup_nothing_is_counted_and_the_next_one_succeeds() {
    // In a bucket (the agents PUT their packs) and in a local repository (they send them).
    for in_s3 in [true, false] {
        let mut env = Env::new();
        let c = Cluster::create(&env, &[]);
        let s3 = S3Server::start();
        s3.bucket("hopsdr");
        if in_s3 {
            env.repository_config = Some(s3.repository_config(&env, "hopsdr", SECRET_KEY));
        }
        env.extra_config = c.hopsfs_config("local")
            + "[retention]\nkeep_last = 1\nprune_after_backup = false\n"
            + &crate::agents::agents_enabled_config();
        let manifests = || match in_s3 {
            true => walk(&s3.dir.path().join("hopsdr/cluster1/manifests")),
            false => env.manifests().len(),
        };
        let agents_left = || agents_left(&env);
        // (The replicas first: after a backup succeeds, the volumes have no new ones.)
        for failpoint in [
            "backup.agent.replica_recorded",
            "backup.agent.pack_adopted",
            "backup.rondb.collected_one",
        ] {
            let at = format!("{failpoint} (in S3: {in_s3})");
            let (_, backup) = env.backup_killed_at(failpoint);
            wait_for(
                "the agents to see hopsdrd gone",
                Duration::from_secs(30),
                || (agents_left() == 0).then_some(()),
            );
            let _d = env.start();
            let list = env.ctl_json(&["backups", "list"]);
            let killed = list["backups"]
                .as_array()
                .unwrap()
                .iter()
                .find(|b| b["id"] == backup.as_str())
                .unwrap_or_else(|| panic!("{at}: {backup} listed: {list}"));
            assert_eq!(killed["state"], "interrupted", "{at}: {killed}");
            let committed = list["backups"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|b| b["state"] == "succeeded")
                .count();
            assert_eq!(
                manifests(),
                committed,
                "{at}: no manifest but the committed backups'"
            );
            next_backup_verifies_and_collects(&env, &at);
        }
    }
}

/// A test-bed cluster (RonDB and HopsFS on this host) backed up into bucket `hopsdr` of an S3
/// server through the agents, with `extra(env, cluster)` in the configuration.
fn agents_in_s3(extra: impl Fn(&Env, &Cluster) -> String) -> (Env, Cluster, S3Server) {
    agents_in_s3_with(&[], extra)
}

/// [`agents_in_s3`] with a test-bed cluster created with `args`.
fn agents_in_s3_with(
    args: &[&str],
    extra: impl Fn(&Env, &Cluster) -> String,
) -> (Env, Cluster, S3Server) {
    let mut env = Env::new();
    let c = Cluster::create(&env, args);
    let s3 = S3Server::start();
    s3.bucket("hopsdr");
    env.repository_config = Some(s3.repository_config(&env, "hopsdr", SECRET_KEY));
    env.extra_config =
        c.hopsfs_config("local") + &extra(&env, &c) + &crate::agents::agents_enabled_config();
    (env, c, s3)
}

/// `[restore] replicas = "one"` through the agents: each datanode's agent writes only the
/// replicas chosen for it (and checks only those first); HDFS copies the rest and the cluster
/// comes back whole.
#[test]
fn with_agents_one_replica_per_block_is_written_back_and_hdfs_copies_the_rest() {
    let (env, c, _s3) = agents_in_s3_with(&crate::restore::REPLICATING, |env, c| {
        crate::restore::restore_config(env, c) + "replicas = \"one\"\n"
    });
    let _d = env.start();
    let before = c.fingerprint();
    let id = env.backup_ok();
    let replicas = crate::restore::finalized_replicas(&c.dir.join("hopsfs"));
    let from = env.log().len();
    crate::restore::one_replica_restore(&env, &c, &id, &before);
    // The agents wrote a third of the replicas: each datanode's volumes hold fewer files
    // than a whole write-back would (every block and meta file of three replicas).
    let log = env.log()[from..].to_string();
    let written =
        crate::harness::logged_sum(&log, "volume written back by the node's agent", "files");
    assert!(written > 0, "{log}");
    assert!(
        written < replicas * 2,
        "{written} files written for {replicas} replicas: {log}"
    );
}

/// The agents serving `env`'s test-bed (its directories, the data nodes' and the datanodes',
/// are all in the env's), still running.
fn agents_left(env: &Env) -> usize {
    let dir = env.path().display().to_string();
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| std::fs::read(e.path().join("cmdline")).ok())
        .filter(|cmd| {
            let cmd = String::from_utf8_lossy(cmd);
            cmd.contains("agent\0--serve") && cmd.contains(&dir)
        })
        .count()
}

/// hopsdrd killed (SIGKILL) while the datanodes' agents write the volumes back from the bucket —
/// in the middle of a file, then after a volume was written: the agents stop (their input
/// closed; one in the middle of a write notices at once), the restore is interrupted, and
/// `restore resume` goes on through the agents, keeping the files written whole before (a
/// volume is cleared once): the cluster comes back whole.
#[test]
fn killed_while_agents_write_the_volumes_back_the_restore_resumes() {
    let (env, c, _s3) = agents_in_s3(crate::restore::restore_config);
    let before = c.fingerprint();
    let id = {
        let _d = env.start();
        env.backup_ok()
    };
    c.tb(&["cluster", "destroy"]);
    c.tb(&["cluster", "redeploy"]);
    // In the middle of a file (the agents hold there: only the end of their input stops
    // them), then after a volume.
    env.kill_at("agent.write_pause", &["restore", "start", &id, "--yes"]);
    wait_for(
        "the agents writing to see hopsdrd gone",
        Duration::from_secs(30),
        || (agents_left(&env) == 0).then_some(()),
    );
    env.kill_at("restore.agent.volume_written", &["restore", "resume"]);
    wait_for(
        "the agents to see hopsdrd gone",
        Duration::from_secs(30),
        || (agents_left(&env) == 0).then_some(()),
    );
    let log_len = env.log().len();
    let _d = env.start();
    let st = env.ctl_json(&["restore", "status"]);
    assert_eq!(st["restore"]["state"], "interrupted", "{st}");
    env.ctl_ok(&["restore", "resume", "--wait"]);
    assert_eq!(c.fingerprint(), before);
    // The volume written whole before the second kill is not cleared again: its agent keeps
    // every file of it (and whatever else was finished).
    let log = env.log()[log_len..].to_string();
    let kept = crate::harness::logged_sum(&log, "volume written back by the node's agent", "kept");
    assert!(kept > 0, "no file kept on the resume: {log}");
}

/// An agent that dies in the middle of its upload (a pack stored and reported, its other files
/// not) — a data node's, then a datanode's: the backup fails naming the node, nothing is
/// committed, the next backup through the agents succeeds and verifies, and collection and
/// `repo check` pass.
#[test]
fn an_agent_that_dies_mid_upload_fails_the_backup_cleanly() {
    let (env, _c, s3) =
        agents_in_s3(|_, _| "[retention]\nkeep_last = 1\nprune_after_backup = false\n".into());
    // The agents are the daemon's children here: they inherit its failpoints (once: the
    // first agent that stores a pack exits; "volume": the first storing a HopsFS volume).
    // (The agents run at once: whichever stores a pack first is the one that dies.)
    for (round, (which, named)) in [("1", "data node "), ("volume", "datanode dn")]
        .into_iter()
        .enumerate()
    {
        let _ = std::fs::remove_file(env.path().join("agent.exit_after_pack.fired"));
        let d = env.start_with(&[(
            "HOPSDR_FAILPOINTS",
            &format!("agent.exit_after_pack={which}"),
        )]);
        let out = env.ctl(&["backup", "start", "--wait"]);
        assert_ne!(out.status.code(), Some(0), "{named}");
        let list = env.ctl_json(&["backups", "list"]);
        let states: Vec<&str> = list["backups"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| b["state"].as_str().unwrap())
            .collect();
        assert_eq!(states, vec!["failed"; round + 1], "{named}: {list}");
        let log = env.log();
        assert!(
            log.lines().any(|l| l.contains("agent")
                && l.contains(named)
                && l.contains("ended the session")),
            "{named}: {log}"
        );
        assert_eq!(
            walk(&s3.dir.path().join("hopsdr/cluster1/manifests")),
            0,
            "{named}: nothing committed"
        );
        drop(d);
    }
    let _d = env.start();
    next_backup_verifies_and_collects(&env, "after the agents died");
}

/// After a failed or interrupted backup (`at` says which): the next backup succeeds and
/// verifies, a prune's collection and `repo check` pass.
fn next_backup_verifies_and_collects(env: &Env, at: &str) {
    let id = env.backup_ok();
    let out = env.ctl(&["verify", &id, "--wait"]);
    assert_eq!(out.status.code(), Some(0), "{at}: {}", env.log());
    let out = env.ctl(&["prune", "--wait"]);
    assert_eq!(out.status.code(), Some(0), "{at}: {}", env.log());
    let out = env.ctl(&["repo", "check"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{at}: {}",
        String::from_utf8_lossy(&out.stdout)
    );
}

/// What a backup holds under `rondb/` (paths, the RonDB backup id replaced by `<id>`) and under
/// `hopsfs/` (every entry with its size, mode, owner and time), sorted.
pub fn node_files(repo: &hopsdr::repository::Repository, id: &str) -> Vec<String> {
    use hopsdr::repository::Entry;
    let m = repo
        .read_manifest(&hopsdr::ids::BackupId::parse(id).unwrap())
        .unwrap();
    let rondb_id = serde_json::to_value(&m.info).unwrap()["extra"]["rondb"]["backup_id"]
        .as_u64()
        .unwrap()
        .to_string();
    let mut v: Vec<String> = repo
        .all_entries(&m)
        .map(|e| e.unwrap())
        .filter_map(|e| match &e {
            _ if e.path().starts_with("rondb/") => Some(e.path().replace(&rondb_id, "<id>")),
            Entry::File(f) if f.path.starts_with("hopsfs/") => Some(format!(
                "{} {} {:o} {}:{} {}",
                f.path, f.size, f.meta.mode, f.meta.uid, f.meta.gid, f.meta.mtime
            )),
            Entry::Dir { path, meta } if path.starts_with("hopsfs/") => {
                Some(format!("{path}/ {:o}", meta.mode))
            }
            Entry::Symlink { path, target, .. } if path.starts_with("hopsfs/") => {
                Some(format!("{path} -> {target}"))
            }
            _ => None,
        })
        .collect();
    v.sort();
    v
}

/// With the agents writing the volumes back, the restore's verify step has each datanode's
/// agent read its volumes' units back first (hopsdrd only checks that they are indexed): a
/// block's pack damaged in the bucket is found there, the restore is refused naming a datanode
/// and the file, and the redeployed cluster is not touched.
#[test]
fn with_agents_a_damaged_block_is_found_before_the_cluster_is_touched() {
    let (env, c, s3) = agents_in_s3(crate::restore::restore_config);
    let _d = env.start();
    let id = env.backup_ok();
    // A byte of one block's unit, in its pack in the bucket, flipped.
    let repo = s3_repo(&s3);
    let m = repo
        .read_manifest(&hopsdr::ids::BackupId::parse(&id).unwrap())
        .unwrap();
    let block = repo
        .all_entries(&m)
        .map(|e| e.unwrap())
        .find_map(|e| match e {
            hopsdr::repository::Entry::File(f)
                if f.path.starts_with("hopsfs/dn2/") && f.path.contains("/blk_") =>
            {
                Some(f)
            }
            _ => None,
        })
        .unwrap();
    let loc = repo.locate_unit(&block.units[0], &block.path).unwrap();
    let pack = s3
        .dir
        .path()
        .join("hopsdr/cluster1")
        .join(hopsdr::repository::packer::pack_key(&loc.pack));
    let mut bytes = std::fs::read(&pack).unwrap();
    let at = loc.offset as usize + loc.stored_len as usize / 2;
    bytes[at] ^= 0x55;
    std::fs::write(&pack, bytes).unwrap();
    c.tb(&["cluster", "destroy"]);
    c.tb(&["cluster", "redeploy"]);
    let redeployed = c.fingerprint();
    let out = env.ctl(&["restore", "start", &id, "--yes", "--wait"]);
    assert_ne!(out.status.code(), Some(0));
    let st = env.ctl_json(&["restore", "status"]);
    let err = st["restore"]["steps"][0]["error"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        // (dn2's block shares its unit with its replicas elsewhere: any of them may read it.)
        err.starts_with("step 1 (") && err.contains("datanode dn") && err.contains("at check"),
        "{st:#}"
    );
    assert_eq!(c.fingerprint(), redeployed, "the cluster was not touched");
}

/// An agent whose PUT takes longer than `[agents] timeout` (failpoint agent.slow_put: 12 s
/// against 5 s) keeps its session alive with progress messages: the backup succeeds.
#[test]
fn an_agent_in_a_long_put_is_not_taken_for_dead() {
    let mut env = Env::new();
    let c = Cluster::create(&env, &[]);
    let s3 = S3Server::start();
    s3.bucket("hopsdr");
    env.repository_config = Some(s3.repository_config(&env, "hopsdr", SECRET_KEY));
    env.extra_config = c.rondb_config("local")
        + &crate::agents::agents_enabled_config().replace("timeout = \"20s\"", "timeout = \"5s\"");
    let _d = env.start_with(&[("HOPSDR_FAILPOINTS", "agent.slow_put=12000")]);
    let id = env.backup_ok();
    assert!(!id.is_empty());
    assert!(
        env.log().contains("stored by the node's agent"),
        "{}",
        env.log()
    );
}

/// hopsdrd with a repository in S3 stops cleanly on SIGTERM after a backup (exit 0, no panic:
/// the store's runtime is let go from inside the daemon's).
#[test]
fn with_a_bucket_hopsdrd_stops_cleanly_on_sigterm() {
    let s3 = S3Server::start();
    s3.bucket("hopsdr");
    let mut env = Env::new();
    env.repository_config = Some(s3.repository_config(&env, "hopsdr", SECRET_KEY));
    let mut d = env.start();
    env.backup_ok();
    d.signal(nix::sys::signal::Signal::SIGTERM);
    let status = d.wait_exit(Duration::from_secs(30));
    assert_eq!(status.code(), Some(0), "{}", env.log());
    assert!(!env.log().contains("panic"), "{}", env.log());
}

#[test]
fn wrong_credentials_and_a_missing_bucket_are_refused_naming_the_endpoint() {
    let s3 = S3Server::start();
    s3.bucket("hopsdr");
    let mut env = Env::new();
    env.repository_config = Some(s3.repository_config(&env, "hopsdr", "not-the-secret"));
    let (code, err) = env.start_refused();
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains(&s3.endpoint()) && err.contains("s3://hopsdr/cluster1"),
        "{err}"
    );
    assert!(err.to_lowercase().contains("signature"), "{err}");

    env.repository_config = Some(s3.repository_config(&env, "no-such-bucket", SECRET_KEY));
    let (code, err) = env.start_refused();
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("s3://no-such-bucket/cluster1") && err.contains("NoSuchBucket"),
        "{err}"
    );
}

/// The repository in the bucket, for reading manifests in the tests.
fn s3_repo(s3: &S3Server) -> hopsdr::repository::Repository {
    hopsdr::repository::Repository::open_or_init(
        std::sync::Arc::new(s3.storage("hopsdr", "cluster1")),
        1,
    )
    .unwrap()
}

/// The number of files under `dir`.
fn walk(dir: &std::path::Path) -> usize {
    let mut n = 0;
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            if e.path().is_dir() {
                n += walk(&e.path());
            } else {
                n += 1;
            }
        }
    }
    n
}

/// The server killed in the middle: a multipart upload fails naming the endpoint and leaves no
/// object under its key; a backup fails as a job, commits nothing, and once the server is back
/// the next backup succeeds and garbage collection removes what the failed one uploaded.
#[test]
fn the_server_killed_in_the_middle_fails_cleanly_and_gc_collects_the_orphans() {
    let mut s3 = S3Server::start();
    s3.bucket("hopsdr");
    // Storage level: 40 MiB in 5 MiB parts at 8 MiB/s (about 5 s); the server dies after 1 s.
    let mut options = s3_options(&s3, "hopsdr", "big");
    options.settings.bandwidth_limit = Some(8 << 20);
    let store = hopsdr::repository::S3Storage::new(&options).unwrap();
    let data = vec![7u8; 40 << 20];
    let port = s3.port;
    let put = std::thread::spawn(move || hopsdr::repository::Storage::put(&store, "k/big", &data));
    std::thread::sleep(Duration::from_secs(1));
    let _ = s3.child.kill();
    let _ = s3.child.wait();
    let err = put.join().unwrap().unwrap_err().to_string();
    assert!(
        err.contains(&format!("127.0.0.1:{port}")) && err.contains("k/big"),
        "{err}"
    );
    s3.restart();
    let store = s3.storage("hopsdr", "big");
    assert!(
        !hopsdr::repository::Storage::exists(&store, "k/big").unwrap(),
        "no half object"
    );

    // Job level.
    let mut env = Env::new();
    let data = env.path().join("data/big");
    std::fs::create_dir_all(&data).unwrap();
    let big = data.clone();
    // 64 MiB that does not compress: two packs, the first uploaded while the second is read,
    // about 7 s at 8 MiB/s (the pacer lets the first second's worth go at once).
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    for i in 0..16 {
        let bytes: Vec<u8> = (0..(4u32 << 20))
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 24) as u8
            })
            .collect();
        std::fs::write(data.join(format!("f{i}")), bytes).unwrap();
    }
    env.files.push((data, false));
    env.repository_config = Some(s3.repository_config(&env, "hopsdr", SECRET_KEY));
    env.repository_config = env
        .repository_config
        .map(|c| c + "bandwidth_limit_mib = 8\n");
    env.extra_config = "[retention]\nkeep_last = 1\nprune_after_backup = false\n".into();
    let d = env.start();
    let out = env.ctl(&["--json", "backup", "start"]);
    assert_eq!(out.status.code(), Some(0));
    let started: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    wait_for(
        "the backup to upload blobs",
        Duration::from_secs(30),
        || (walk(&s3.dir.path().join("hopsdr/cluster1/packs")) >= 1).then_some(()),
    );
    let _ = s3.child.kill();
    let _ = s3.child.wait();
    let job = env.wait_job(started["job_id"].as_i64().unwrap());
    assert_eq!(job["state"], "failed", "{job}");
    assert!(
        job["error"]
            .as_str()
            .unwrap_or_default()
            .contains("127.0.0.1"),
        "{job}"
    );
    s3.restart();
    assert_eq!(
        walk(&s3.dir.path().join("hopsdr/cluster1/manifests")),
        0,
        "nothing committed"
    );
    let orphans = walk(&s3.dir.path().join("hopsdr/cluster1/packs"));
    assert!(orphans >= 1);
    env.backup_ok();
    // New content: the next backup's blobs are its own, the first one's become garbage once
    // retention (keep_last = 1) forgets it.
    for i in 0..16 {
        std::fs::write(big.join(format!("f{i}")), vec![i as u8 + 1; 4 << 20]).unwrap();
    }
    let newest = env.backup_ok();

    // The server stopped in the middle of garbage collection (after its first delete): the
    // prune fails naming the endpoint and touches nothing committed; the next one finishes.
    drop(d);
    let d = env.start_with(&[("HOPSDR_FAILPOINTS", "gc.deleted_one=wait")]);
    let prune = env.ctl_json(&["prune"]);
    wait_for("the first GC delete", Duration::from_secs(60), || {
        env.path()
            .join("gc.deleted_one.reached")
            .exists()
            .then_some(())
    });
    let _ = s3.child.kill();
    let _ = s3.child.wait();
    std::fs::write(env.path().join("gc.deleted_one.continue"), b"").unwrap();
    let job = env.wait_job(prune["job_id"].as_i64().unwrap());
    assert_eq!(job["state"], "failed", "{job}");
    let err = job["error"].as_str().unwrap_or_default();
    assert!(
        err.starts_with("garbage collection: ") && err.contains(&format!("127.0.0.1:{}", s3.port)),
        "{job}"
    );
    s3.restart();
    drop(d);
    let _d = env.start();
    let list = env.ctl_json(&["backups", "list"]);
    assert_eq!(
        Env::listed_ids(&list),
        std::slice::from_ref(&newest),
        "{list}"
    );
    assert_eq!(
        env.ctl(&["verify", &newest, "--wait"]).status.code(),
        Some(0)
    );
    assert_eq!(
        env.ctl(&["prune", "--wait"]).status.code(),
        Some(0),
        "{}",
        env.log()
    );
    let check = env.ctl_json(&["repo", "check"]);
    assert_eq!(check["unreferenced_blobs"], 0, "{check}");
    assert_eq!(check["problems"].as_array().unwrap().len(), 0, "{check}");
}

fn s3_options(s3: &S3Server, bucket: &str, prefix: &str) -> hopsdr::repository::S3Options {
    hopsdr::repository::S3Options {
        settings: hopsdr::config::S3Settings {
            endpoint: Some(s3.endpoint()),
            region: "us-east-1".into(),
            bucket: bucket.into(),
            prefix: prefix.into(),
            path_style: true,
            access_key_id: Some(ACCESS_KEY.into()),
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
        secret_access_key: Some(SECRET_KEY.into()),
        session_token: None,
        ca_bundle_pem: None,
        pacer: None,
    }
}

/// The writer lease on a bucket: a second hopsdrd is refused naming the holder; after the
/// holder is killed, a hopsdrd of the same host takes the lease over (its process is gone); a
/// clean stop deletes it; a lease of another host that will not come back is refused until
/// `hopsdrd --break-lock` removes it.
#[test]
fn one_writer_per_bucket_with_a_lease() {
    let s3 = S3Server::start();
    s3.bucket("hopsdr");
    let mut env = Env::new();
    env.repository_config = Some(s3.repository_config(&env, "hopsdr", SECRET_KEY));
    let lease = s3.dir.path().join("hopsdr/cluster1/locks/writer");
    let mut d = env.start();
    let pid = d.pid();
    assert!(lease.exists(), "the lease object is written");
    let mut other = Env::new();
    other.repository_config = Some(s3.repository_config(&other, "hopsdr", SECRET_KEY));
    let (code, err) = other.start_refused();
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains(&format!(
            "the repository s3://hopsdr/cluster1 at {} is locked by hopsdrd pid {pid} on",
            s3.endpoint()
        )) && err.contains("hopsdrd --break-lock"),
        "{err}"
    );
    // The holder killed: its lease is taken over at the next start on this host.
    d.kill9();
    drop(d);
    let d = other.start();
    assert!(
        other.log().contains("took over the repository lease"),
        "{}",
        other.log()
    );
    drop(d);
    assert!(!lease.exists(), "a clean stop deletes the lease");

    // A lease of another host, valid for a while: refused until broken.
    let expires = chrono::Utc::now() + chrono::Duration::minutes(4);
    std::fs::create_dir_all(lease.parent().unwrap()).unwrap();
    std::fs::write(
        &lease,
        format!(
            "{{\"host\":\"gone-host\",\"pid\":4242,\"token\":\"x\",\"expires_at\":\"{}\"}}",
            expires.to_rfc3339()
        ),
    )
    .unwrap();
    let (code, err) = env.start_refused();
    assert_eq!(code, Some(1));
    assert!(
        err.contains("locked by hopsdrd pid 4242 on gone-host until"),
        "{err}"
    );
    let out = std::process::Command::new(crate::harness::HOPSDRD)
        .args(["--break-lock", "--config"])
        .arg(env.config_path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert!(
        String::from_utf8_lossy(&out.stdout)
            .contains("removed the lease of hopsdrd pid 4242 on gone-host"),
        "{out:?}"
    );
    let _d = env.start();
    assert_eq!(
        env.ctl(&["backup", "start", "--wait"]).status.code(),
        Some(0)
    );
}
