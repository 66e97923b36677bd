//! The hopsdr agent (`hopsdr agent --serve`) through the real transports: a child on the head
//! node and OpenSSH on loopback with an operator's forced command; the greeting, the version
//! check, what a node printed instead of the greeting, a missing binary, an agent that goes
//! quiet; and `hopsdrctl agents check` through the daemon on the test-bed.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use hopsdr::agent::proto::{Job, Msg, Role};
use hopsdr::cluster::agent::{AgentError, Request, Session};
use hopsdr::cluster::node::Node;
use tokio_util::sync::CancellationToken;

use crate::ssh::Sshd;

fn agent_binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_hopsdr"))
}

/// `[agents]` with the agent built here.
pub fn agents_config() -> String {
    format!(
        "[agents]\nbinary = \"{}\"\ntimeout = \"20s\"\n",
        agent_binary().display()
    )
}

/// The test S3 server's bucket `bucket` under prefix `cluster1`, as an agent is given it.
#[cfg(feature = "testbed")]
fn s3_store(s3: &crate::s3::S3Server, bucket: &str) -> hopsdr::agent::proto::S3Store {
    hopsdr::agent::proto::S3Store {
        endpoint: Some(s3.endpoint()),
        region: "us-east-1".into(),
        bucket: bucket.into(),
        prefix: "cluster1".into(),
        path_style: true,
        ca_bundle_pem: None,
        part_size: 5 << 20,
        parallel_parts: 2,
        object_lock: None,
    }
}

/// `hopsdrctl agents check` through `env`'s daemon: every agent ready, each as JSON.
#[cfg(feature = "testbed")]
pub fn all_ready(env: &crate::harness::Env) -> Vec<serde_json::Value> {
    let v = env.ctl_json(&["agents", "check"]);
    let agents = v["agents"].as_array().cloned().unwrap_or_default();
    assert!(!agents.is_empty(), "{v:#}");
    for a in &agents {
        assert_eq!(a["problems"], serde_json::json!([]), "{a:#}");
    }
    agents
}

/// `[agents]` with the agent built here, backups through it.
pub fn agents_enabled_config() -> String {
    agents_config().replace("[agents]\n", "[agents]\nenabled = true\n")
}

/// The `rondb/` paths and `hopsfs/` entries (paths, sizes, modes, owners, times) of a backup of
/// cluster `c` taken through hopsdrd (a daemon of its own): what a backup through the agents
/// must record too.
#[cfg(feature = "testbed")]
pub fn funnel_node_files(c: &crate::tbcluster::Cluster) -> Vec<String> {
    let mut plain = crate::harness::Env::new();
    plain.extra_config = c.hopsfs_config("local");
    let _p = plain.start();
    let id = plain.backup_ok();
    crate::s3::node_files(&plain.open_repo(), &id)
}

/// Asserts from hopsdrd's log that both data nodes' agents and the agents of datanodes dn1 to
/// dn<datanodes> stored their files (and, with `sent`, sent hopsdrd their packs).
#[cfg(feature = "testbed")]
pub fn assert_through_agents(env: &crate::harness::Env, sent: bool, datanodes: u32) {
    let log = env.log();
    for dn in (1..=datanodes).map(|k| format!("dn{k}")) {
        assert!(
            log.lines()
                .any(|l| l.contains("volume stored by the node's agent")
                    && l.contains(&format!("node={dn}"))
                    && !l.contains("replicas=0")
                    && !(sent && l.contains("pack_bytes=0"))),
            "datanode {dn} through its agent: {log}"
        );
    }
    for node in [1, 2] {
        assert!(
            log.lines().any(|l| l.contains("stored by the node's agent")
                && l.contains(&format!("node={node}"))
                && !(sent && l.contains("pack_bytes=0"))),
            "data node {node} through its agent: {log}"
        );
    }
}

/// The drill: cluster `c` destroyed and redeployed, backup `id` restored, its fingerprint
/// back to `before`.
#[cfg(feature = "testbed")]
pub fn restore_whole(
    env: &crate::harness::Env,
    c: &crate::tbcluster::Cluster,
    id: &str,
    before: &str,
) {
    c.tb(&["cluster", "destroy"]);
    c.tb(&["cluster", "redeploy"]);
    let out = env.ctl(&["restore", "start", id, "--yes", "--wait"]);
    assert_eq!(out.status.code(), Some(0), "{}", env.log());
    assert_eq!(c.fingerprint(), before);
}

fn request(roots: &[&Path]) -> Request {
    Request {
        roles: vec![Role::Hopsfs],
        roots: roots.iter().map(|p| p.display().to_string()).collect(),
        backup_dir: None,
        bandwidth: None,
    }
}

/// A check session with the agent `binary` on `node`, asked to serve `roots`.
fn open(
    node: &Node,
    binary: &Path,
    roots: &[&Path],
    timeout: Duration,
    cancel: &CancellationToken,
) -> Result<Session, AgentError> {
    Session::open(
        node,
        binary,
        &request(roots),
        Job::Check,
        None,
        timeout,
        cancel,
    )
}

/// A script standing in for a node's agent.
fn script(dir: &Path, name: &str, body: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    p
}

/// The frames of an agent greeting with `version`, as printf escapes.
fn greeting(version: &str) -> String {
    let json = format!(
        r#"{{"t":"hello","name":"hopsdr-agent","version":"{version}","protocol":1,"host":"dn9","uid":0,"roles":["hopsfs"],"roots":[],"backup_dir":null,"forced":false}}"#
    );
    let len = (json.len() + 1) as u32;
    let mut s = String::from("HDRAGNT1");
    for b in len.to_be_bytes() {
        s.push_str(&format!("\\{b:03o}"));
    }
    s.push_str("\\001");
    s.push_str(&json.replace('%', "%%"));
    s
}

#[test]
fn a_local_agent_greets_describes_its_roots_and_says_bye() {
    let dir = tempfile::tempdir().unwrap();
    let vol = dir.path().join("vol1");
    std::fs::create_dir(&vol).unwrap();
    let missing = dir.path().join("vol2");
    let cancel = CancellationToken::new();
    let mut s = open(
        &Node::local("datanode dn1"),
        &agent_binary(),
        &[&vol, &missing],
        Duration::from_secs(20),
        &cancel,
    )
    .unwrap();
    let h = s.hello().clone();
    assert_eq!(h.version, env!("CARGO_PKG_VERSION"));
    assert_eq!(h.roles, [Role::Hopsfs]);
    assert_eq!(h.roots.len(), 2);
    assert!(!h.forced);
    let req = s.req();
    match s
        .request(req, &Msg::Describe { req }, "description", &cancel)
        .unwrap()
    {
        Msg::Described { roots, .. } => {
            assert_eq!(roots[0].problem, None);
            assert!(roots[0].free_bytes.unwrap() > 0);
            assert!(roots[1]
                .problem
                .as_deref()
                .unwrap()
                .contains("No such file"));
        }
        m => panic!("{m:?}"),
    }
    s.finish(&cancel).unwrap();
}

#[test]
fn over_ssh_the_forced_command_decides_what_the_agent_serves() {
    let sshd = Sshd::start();
    let dir = tempfile::tempdir().unwrap();
    let (allowed, asked) = (dir.path().join("allowed"), dir.path().join("asked"));
    std::fs::create_dir(&allowed).unwrap();
    std::fs::create_dir(&asked).unwrap();
    sshd.authorize(
        "agent_key",
        &format!(
            "{} agent --serve --role hopsfs --root {}",
            agent_binary().display(),
            allowed.display()
        ),
    );
    let cancel = CancellationToken::new();
    let mut s = open(
        &sshd.node("agent_key"),
        &agent_binary(),
        &[&asked],
        Duration::from_secs(20),
        &cancel,
    )
    .unwrap();
    let h = s.hello().clone();
    assert!(
        h.forced,
        "sshd ran the forced command, and the agent says so"
    );
    assert_eq!(
        h.roots,
        [allowed.display().to_string()],
        "not what the head asked"
    );
    let req = s.req();
    assert_eq!(
        s.request(req, &Msg::Ping { req }, "pong", &cancel).unwrap(),
        Msg::Pong { req }
    );
    s.finish(&cancel).unwrap();

    // The same agent through the daemon's key without a forced command serves what is asked.
    let mut s = open(
        &sshd.node("client_key"),
        &agent_binary(),
        &[&asked],
        Duration::from_secs(20),
        &cancel,
    )
    .unwrap();
    assert!(!s.hello().forced);
    assert_eq!(s.hello().roots, [asked.display().to_string()]);
    let req = s.req();
    s.request(req, &Msg::Ping { req }, "pong", &cancel).unwrap();
    s.finish(&cancel).unwrap();
}

#[test]
fn a_node_that_prints_before_the_greeting_is_named_with_what_it_printed() {
    let sshd = Sshd::start();
    let dir = tempfile::tempdir().unwrap();
    let chatty = script(
        dir.path(),
        "chatty",
        &format!(
            "echo 'Welcome to dn1, authorized use only'\nexec {} \"$@\"",
            agent_binary().display()
        ),
    );
    let cancel = CancellationToken::new();
    let e = open(
        &sshd.node("client_key"),
        &chatty,
        &[dir.path()],
        Duration::from_secs(20),
        &cancel,
    )
    .err()
    .expect("refused");
    let m = e.to_string();
    assert!(
        m.starts_with("ndb node 1: the hopsdr agent did not start: it printed \"Welcome to dn1, authorized use only")
            && m.contains("shell start-up file"),
        "{m}"
    );
}

#[test]
fn a_missing_agent_binary_says_what_to_install() {
    let sshd = Sshd::start();
    let cancel = CancellationToken::new();
    let e = open(
        &sshd.node("client_key"),
        Path::new("/nonexistent/hopsdr"),
        &[Path::new("/tmp")],
        Duration::from_secs(20),
        &cancel,
    )
    .err()
    .expect("refused");
    let m = e.to_string();
    assert!(
        m.contains("/nonexistent/hopsdr cannot be run there (exit 127)")
            && m.contains(&format!(
                "install the hopsdr package of version {}",
                env!("CARGO_PKG_VERSION")
            )),
        "{m}"
    );
}

#[test]
fn an_agent_of_another_version_is_refused_by_both_sides() {
    let dir = tempfile::tempdir().unwrap();
    let cancel = CancellationToken::new();
    // The head refuses an agent that greets with another version.
    let old = script(
        dir.path(),
        "old-agent",
        &format!("printf '{}'\nexec sleep 30", greeting("0.0.1")),
    );
    let e = open(
        &Node::local("datanode dn9"),
        &old,
        &[dir.path()],
        Duration::from_secs(20),
        &cancel,
    )
    .err()
    .expect("refused");
    assert!(matches!(e, AgentError::Version { .. }), "{e}");
    assert_eq!(
        e.to_string(),
        format!(
            "datanode dn9: the agent is hopsdr 0.0.1 (protocol 1) and hopsdrd is hopsdr {v} (protocol 1): install hopsdr {v} on that node (every node needs the version of the head node)",
            v = env!("CARGO_PKG_VERSION")
        )
    );
    // The agent refuses a head of another version (exit 3, the reason on stderr).
    let out = std::process::Command::new(agent_binary())
        .args(["agent", "--serve", "--role", "hopsfs", "--root", "/tmp"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            let mut stdin = c.stdin.take().unwrap();
            hopsdr::agent::proto::write_msg(
                &mut stdin,
                &Msg::Start {
                    version: "99.0.0".into(),
                    protocol: 1,
                    job: Job::Check,
                    store: None,
                    secrets: false,
                    bandwidth: None,
                },
            )
            .unwrap();
            drop(stdin);
            c.wait_with_output()
        })
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("install hopsdr 99.0.0 on"), "{err}");
}

#[test]
fn an_agent_that_goes_quiet_is_stopped_after_the_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("pid");
    let mute = script(
        dir.path(),
        "mute-agent",
        &format!(
            "echo $$ > {}\nprintf '{}'\nexec sleep 600",
            pidfile.display(),
            greeting(env!("CARGO_PKG_VERSION"))
        ),
    );
    let cancel = CancellationToken::new();
    let mut s = open(
        &Node::local("datanode dn9"),
        &mute,
        &[dir.path()],
        Duration::from_secs(1),
        &cancel,
    )
    .unwrap();
    let started = Instant::now();
    let req = s.req();
    let e = s
        .request(req, &Msg::Ping { req }, "pong", &cancel)
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "datanode dn9: the agent sent nothing within 1s (hopsdrd was waiting for pong); it was stopped"
    );
    assert!(started.elapsed() < Duration::from_secs(10));
    let pid: i32 = std::fs::read_to_string(&pidfile)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(
        !Path::new(&format!("/proc/{pid}")).exists(),
        "the agent's process was killed and reaped"
    );
    drop(s);
}

#[cfg(feature = "testbed")]
/// Every process's command line and environment on this machine (the agent's, its ssh client's
/// and sshd's among them) but the test S3 servers' (whose own command line holds the tests'
/// secret key, this test's server and those of tests running alongside): where a secret must
/// never be.
fn argv_and_environments() -> Vec<(u32, Vec<u8>)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        let server = std::fs::read(e.path().join("cmdline"))
            .ok()
            .and_then(|c| c.split(|b| *b == 0).next().map(|a| a.ends_with(b"s3s-fs")))
            .unwrap_or(false);
        if server {
            continue;
        }
        for what in ["cmdline", "environ"] {
            if let Ok(b) = std::fs::read(e.path().join(what)) {
                out.push((pid, b));
            }
        }
    }
    out
}

#[cfg(feature = "testbed")]
#[test]
fn an_agent_reaches_the_bucket_with_secrets_that_are_in_no_command_line_or_environment() {
    use hopsdr::agent::proto::{S3Store, StoreProbe};
    use hopsdr::agent::secrets::{S3Secret, Secrets};
    use hopsdr::cluster::agent::Access;
    use hopsdr::repository::crypto::Keyring;

    let s3 = crate::s3::S3Server::start();
    s3.bucket("repo");
    let storage: std::sync::Arc<dyn hopsdr::repository::Storage> =
        std::sync::Arc::new(s3.storage("repo", "cluster1"));
    hopsdr::repository::Repository::open_or_init(storage, 3).unwrap();
    let mut ring = Keyring::from_master(&[7u8; 32]);
    ring.add_data_key(1, &[8u8; 32]);
    let access = |prefix: &str, secret: &str| Access {
        store: Some(S3Store {
            prefix: prefix.into(),
            ..s3_store(&s3, "repo")
        }),
        secrets: Secrets {
            s3: Some(S3Secret {
                access_key_id: crate::s3::ACCESS_KEY.to_string().into(),
                secret_access_key: secret.to_string().into(),
                session_token: None,
            }),
            keys: Some(ring.for_agent(&[1])),
        },
    };
    let sshd = Sshd::start();
    let dir = tempfile::tempdir().unwrap();
    sshd.authorize(
        "agent_key",
        &format!(
            "{} agent --serve --role hopsfs --root {}",
            agent_binary().display(),
            dir.path().display()
        ),
    );
    let cancel = CancellationToken::new();
    let probe = |access: &Access| {
        let mut s = Session::open(
            &sshd.node("agent_key"),
            &agent_binary(),
            &request(&[dir.path()]),
            Job::Check,
            Some(access),
            Duration::from_secs(20),
            &cancel,
        )
        .unwrap();
        let req = s.req();
        let reply = s
            .request(req, &Msg::Probe { req }, "probe", &cancel)
            .unwrap();
        // The agent holds the secrets now: in no process's argv or environment on this
        // machine (ssh client, sshd, the agent), but the test servers' own.
        for (pid, bytes) in argv_and_environments() {
            assert!(
                !bytes
                    .windows(crate::s3::SECRET_KEY.len())
                    .any(|w| w == crate::s3::SECRET_KEY.as_bytes()),
                "the secret is in process {pid}'s command line or environment"
            );
        }
        s.finish(&cancel).unwrap();
        match reply {
            Msg::Probed {
                store, name_check, ..
            } => (store.unwrap(), name_check),
            m => panic!("{m:?}"),
        }
    };

    let (store, name) = probe(&access("cluster1", crate::s3::SECRET_KEY));
    assert_eq!(store.problem, None, "{store:?}");
    assert!(store.store.contains("s3://repo/cluster1"), "{store:?}");
    assert_eq!(
        name.as_deref(),
        Some(hopsdr::agents::name_check(&ring).as_str()),
        "the agent names with the keys it was given"
    );
    assert!(hopsdr::agents::access_problems(
        Some(&store),
        Some(&hopsdr::agents::name_check(&ring)),
        name.as_deref()
    )
    .is_empty());

    // Another prefix holds no repository; a wrong secret is refused by the store: both named.
    let (store, _) = probe(&access("elsewhere", crate::s3::SECRET_KEY));
    assert!(
        matches!(&store, StoreProbe { problem: Some(p), .. } if p.contains("no hopsdr repository under prefix \"elsewhere\"")),
        "{store:?}"
    );
    let (store, _) = probe(&access("cluster1", "not-the-secret"));
    let why = store.problem.expect("refused");
    assert!(!why.contains("not-the-secret"), "{why}");
    assert!(
        hopsdr::agents::access_problems(
            Some(&StoreProbe {
                store: store.store.clone(),
                problem: Some(why.clone())
            }),
            None,
            None
        )[0]
        .starts_with("the node cannot read the repository (s3://repo/cluster1"),
        "{why}"
    );
}

/// A RonDB data node's backup directory, uploaded by its agent over ssh straight into an
/// encrypted repository in S3: the head only answers and records; the files read back whole; a
/// second backup of the same directory stores nothing new; a directory outside the agent's
/// `--backup-dir` is refused.
#[cfg(feature = "testbed")]
#[test]
fn an_agent_stores_its_data_nodes_backup_straight_into_the_bucket() {
    use std::io::Read;

    use hopsdr::agent::secrets::{S3Secret, Secrets};
    use hopsdr::backup::via_agent::upload_dir;
    use hopsdr::cluster::agent::Access;
    use hopsdr::repository::{BackupInfo, Entry, KeySource, OpenOptions, Repository, Storage};

    let s3 = crate::s3::S3Server::start();
    s3.bucket("repo");
    let work = tempfile::tempdir().unwrap();
    let storage: std::sync::Arc<dyn Storage> = std::sync::Arc::new(s3.storage("repo", "cluster1"));
    let key = KeySource {
        passphrase: "a passphrase for the agent test".to_string().into(),
        slot: None,
        describe: "test".into(),
    };
    let repo = Repository::open_with(
        storage,
        OpenOptions {
            compression_level: 3,
            key: Some(&key),
            packed: true,
            cache_dir: Some(work.path().join("cache")),
        },
    )
    .unwrap();

    // The data node's BackupDataDir with a finished backup: control file, a data file of two
    // chunks, an empty log.
    let backup_dir = work.path().join("ndb");
    let b7 = backup_dir.join("BACKUP/BACKUP-7");
    std::fs::create_dir_all(&b7).unwrap();
    let noise = |seed: u8, len: usize| -> Vec<u8> {
        let mut out = vec![0u8; len];
        blake3::Hasher::new()
            .update(&[seed])
            .finalize_xof()
            .fill(&mut out);
        out
    };
    let files = [
        ("BACKUP-7.1.ctl", noise(1, 3000)),
        ("BACKUP-7-0.1.Data", noise(2, (4 << 20) + 100)),
        ("BACKUP-7.1.log", Vec::new()),
    ];
    for (name, content) in &files {
        std::fs::write(b7.join(name), content).unwrap();
    }

    let sshd = Sshd::start();
    sshd.authorize(
        "agent_key",
        &format!(
            "{} agent --serve --role rondb --backup-dir {}",
            agent_binary().display(),
            backup_dir.display()
        ),
    );
    let access = Access {
        store: Some(s3_store(&s3, "repo")),
        secrets: Secrets {
            s3: Some(S3Secret {
                access_key_id: crate::s3::ACCESS_KEY.to_string().into(),
                secret_access_key: crate::s3::SECRET_KEY.to_string().into(),
                session_token: None,
            }),
            keys: repo.agent_keys(),
        },
    };
    let cancel = CancellationToken::new();
    let info = || {
        let now = chrono::Utc::now();
        BackupInfo {
            started_at: now,
            finished_at: now,
            hostname: "head".into(),
            hopsdr_version: "test".into(),
            components: vec![],
            facts: Default::default(),
        }
    };
    let back_up = |n: u32| {
        let mut s = Session::open(
            &sshd.node("agent_key"),
            &agent_binary(),
            &Request {
                roles: vec![Role::Rondb],
                roots: vec![],
                backup_dir: Some(backup_dir.display().to_string()),
                bandwidth: None,
            },
            Job::Backup,
            Some(&access),
            Duration::from_secs(30),
            &cancel,
        )
        .unwrap();
        let id = hopsdr::ids::BackupId::parse(&format!("20261207T00000{n}Z")).unwrap();
        let mut w = repo.begin_backup(id.clone(), cancel.clone());
        let up = upload_dir(
            &mut s,
            &mut w,
            "BACKUP/BACKUP-7",
            "rondb/1/BACKUP/BACKUP-7",
            &cancel,
        )
        .unwrap();
        // A directory outside the agent's backup directory: refused by the agent, named.
        let e = upload_dir(&mut s, &mut w, "../..", "rondb/1/x", &cancel).unwrap_err();
        assert!(
            e.to_string()
                .contains("not a plain path inside the backup directory"),
            "{e}"
        );
        s.finish(&cancel).unwrap();
        w.commit(info()).unwrap();
        (id, up)
    };

    let (first, up) = back_up(1);
    assert_eq!(
        up.files,
        ["BACKUP-7-0.1.Data", "BACKUP-7.1.ctl", "BACKUP-7.1.log"]
    );
    assert_eq!(
        up.packs, 2,
        "a data pack (the control file) and a solo pack (the data file)"
    );
    let m = repo.read_manifest(&first).unwrap();
    for (name, content) in &files {
        let path = format!("rondb/1/BACKUP/BACKUP-7/{name}");
        let f = m
            .entries
            .iter()
            .find_map(|e| match e {
                Entry::File(f) if f.path == path => Some(f.clone()),
                _ => None,
            })
            .unwrap_or_else(|| panic!("{path} in the manifest"));
        let mut back = Vec::new();
        repo.open_file(&f).unwrap().read_to_end(&mut back).unwrap();
        assert!(back == *content, "{path} read back whole");
    }
    let (_, again) = back_up(2);
    assert_eq!(again.files.len(), 3);
    assert_eq!(again.packs, 0, "everything was already stored");
}

#[cfg(feature = "testbed")]
mod daemon {
    use super::*;
    use crate::harness::Env;
    use crate::tbcluster::{ssh_config, Cluster};

    /// `[agents] enabled` with an encrypted local repository: each data node's agent packs
    /// and seals its BACKUP-<id> (part directories included) and sends the packs to hopsdrd
    /// over its session; the manifest holds the same paths as a backup through hopsdrd, and the
    /// cluster restores whole (its verify step opens every blob the agents sealed). The agents'
    /// upload is limited to 16 KiB/s (`[agents] bandwidth`): they report being held back.
    #[test]
    fn with_agents_and_a_local_repository_the_packs_come_over_the_session() {
        use std::os::unix::fs::PermissionsExt;
        let mut env = Env::new();
        let c = Cluster::create(&env, &["--multi-part", "2"]);
        let key = env.path().join("repository.key");
        std::fs::write(&key, "a passphrase for the agents test\n").unwrap();
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
        env.repository_config = Some(format!(
            "[repository]\ntype = \"local\"\npath = \"{}\"\n\n[repository.encryption]\npassphrase = {{ file = \"{}\" }}\n",
            env.repo().display(),
            key.display()
        ));
        env.extra_config = c.hopsfs_config("local")
            + &crate::restore::restore_config(&env, &c)
            + &agents_enabled_config()
            + "bandwidth = \"16KiB:off\"\n";
        let before = c.fingerprint();
        let funnel = funnel_node_files(&c);
        let _d = env.start();
        let id = env.backup_ok();
        assert_through_agents(&env, true, c.datanodes);
        let log = env.log();
        let paced = crate::harness::logged_sum(&log, "stored by the node's agent", "paced_ms");
        assert!(paced > 0, "no agent held back at 16 KiB/s: {log}");
        // Read through the daemon's key: the test opens the repository with it.
        let repo = hopsdr::repository::Repository::open_with(
            std::sync::Arc::new(hopsdr::repository::LocalStorage::new(env.repo()).unwrap()),
            hopsdr::repository::OpenOptions {
                compression_level: 3,
                key: Some(&hopsdr::repository::KeySource {
                    passphrase: "a passphrase for the agents test".to_string().into(),
                    slot: None,
                    describe: "test".into(),
                }),
                packed: true,
                cache_dir: Some(env.path().join("test-cache")),
            },
        )
        .unwrap();
        assert_eq!(crate::s3::node_files(&repo, &id), funnel);
        restore_whole(&env, &c, &id, &before);
    }

    #[test]
    fn agents_check_names_every_node_and_what_is_wrong_with_it() {
        let mut env = Env::new();
        let c = Cluster::create(&env, &[]);
        env.extra_config = c.hopsfs_config("local") + &agents_config();
        let _d = env.start();
        // All on this host: the datanodes and data node 1 share an agent; data node 2 has its
        // own (another --backup-dir).
        let v = env.ctl_json(&["agents", "check"]);
        let agents = v["agents"].as_array().unwrap();
        assert_eq!(agents.len(), 2, "{v:#}");
        assert_eq!(
            agents[0]["node"],
            "datanode dn1, datanode dn2, datanode dn3, data node 1"
        );
        assert_eq!(agents[0]["roles"], serde_json::json!(["hopsfs", "rondb"]));
        assert_eq!(agents[0]["roots"].as_array().unwrap().len(), 6);
        assert_eq!(agents[1]["node"], "data node 2");
        for a in agents {
            assert_eq!(a["problems"], serde_json::json!([]), "{a:#}");
            assert_eq!(a["version"], env!("CARGO_PKG_VERSION"));
        }
        let out = env.ctl_ok(&["agents", "check"]);
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("all 2 agents ready"), "{text}");

        // A volume that is gone is a problem of its node; the command fails.
        std::fs::rename(c.volume(2, 1), c.dir.join("moved")).unwrap();
        let out = env.ctl(&["agents", "check"]);
        assert_eq!(out.status.code(), Some(1));
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            text.contains(&format!(
                "problem: datanode dn1, datanode dn2, datanode dn3, data node 1: volume {} cannot be read",
                c.volume(2, 1).display()
            )) && text.contains("1 of 2 agents NOT ready"),
            "{text}"
        );
        std::fs::rename(c.dir.join("moved"), c.volume(2, 1)).unwrap();
    }

    #[test]
    fn agents_check_over_ssh_reports_a_forced_command_that_lacks_a_volume() {
        let mut env = Env::new();
        let c = Cluster::create(&env, &[]);
        let sshd = Sshd::start();
        // The operator's forced command lists dn1's first volume only.
        sshd.authorize(
            "agent_key",
            &format!(
                "{} agent --serve --role hopsfs --root {}",
                agent_binary().display(),
                c.volume(1, 1).display()
            ),
        );
        let cfg = c.hopsfs_config("local").replacen(
            "name = \"dn1\"\nhost = \"local\"",
            "name = \"dn1\"\nhost = \"127.0.0.1\"",
            1,
        );
        env.extra_config = cfg + &ssh_config(&sshd, "agent_key", None) + &agents_config();
        let _d = env.start();
        let out = env.ctl(&["--json", "agents", "check"]);
        assert_eq!(out.status.code(), Some(1));
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let dn1 = v["agents"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["node"] == "datanode dn1")
            .unwrap_or_else(|| panic!("{v:#}"));
        assert_eq!(dn1["address"], "127.0.0.1");
        assert_eq!(dn1["forced"], true);
        assert_eq!(
            dn1["problems"],
            serde_json::json!([format!(
                "volume {v} is not a --root of the agent: add --root {v} to its command line (the ssh forced command)",
                v = c.volume(1, 2).display()
            )])
        );
        // The nodes on this host are fine.
        let others: Vec<_> = v["agents"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|a| a["node"] != "datanode dn1")
            .collect();
        assert_eq!(others.len(), 2);
        for a in others {
            assert_eq!(a["problems"], serde_json::json!([]), "{a:#}");
        }
    }
}
