//! OpenSearch (issue 21, part 1) on the test-bed's OpenSearch endpoint over HTTPS with basic
//! authentication: snapshotted with a backup (its repository's files stored in it), restored
//! onto a redeployed cluster — the snapshot repository lost, the redeployed feature-store
//! index open and closed first, hopsdrd killed right after asking for the restore and the
//! restore resumed — so that the indices equal those backed up; a PARTIAL snapshot
//! makes the backup partial, a FAILED one fails it, wrong credentials and a location outside
//! `path.repo` are named.

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::harness::{free_port, wait_for, Env};
use crate::tbcluster::{Cluster, TB};

/// The test-bed's OpenSearch, served until dropped.
pub struct OpensearchServer {
    child: Child,
    pub port: u16,
    /// The CA that signed the server's certificate.
    pub cert: PathBuf,
    pub password_file: PathBuf,
}

impl OpensearchServer {
    /// HTTPS with a self-signed certificate for 127.0.0.1; user `hopsdr` with `password`.
    pub fn start(env: &Env, c: &Cluster, password: &str) -> OpensearchServer {
        let dir = env.path().join("opensearch-tls");
        std::fs::create_dir_all(&dir).unwrap();
        // A CA of the cluster, and OpenSearch's certificate signed by it.
        let (ca, ca_key) = (dir.join("ca.pem"), dir.join("ca.key"));
        let (cert, key, csr) = (
            dir.join("cert.pem"),
            dir.join("key.pem"),
            dir.join("srv.csr"),
        );
        let ext = dir.join("ext.cnf");
        std::fs::write(
            &ext,
            "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n",
        )
        .unwrap();
        let openssl = |args: &[&str]| {
            let o = Command::new("openssl")
                .args(args)
                .current_dir(&dir)
                .output()
                .unwrap();
            assert!(
                o.status.success(),
                "openssl {args:?}: {}",
                String::from_utf8_lossy(&o.stderr)
            );
        };
        openssl(&[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=hopsworks-test-ca",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
        ]);
        openssl(&[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=127.0.0.1",
            "-keyout",
            "key.pem",
            "-out",
            "srv.csr",
        ]);
        openssl(&[
            "x509",
            "-req",
            "-in",
            "srv.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "1",
            "-extfile",
            "ext.cnf",
            "-out",
            "cert.pem",
        ]);
        let _ = (&ca_key, &csr);
        let password_file = dir.join("server.password");
        std::fs::write(&password_file, format!("{password}\n")).unwrap();
        let port = free_port();
        let child = Command::new(TB)
            .args([
                "opensearch",
                "serve",
                "--port",
                &port.to_string(),
                "--snapshot-ms",
                "400",
                "--restore-ms",
                "400",
            ])
            .arg("--password-file")
            .arg(&password_file)
            .arg("--cert")
            .arg(&cert)
            .arg("--key")
            .arg(&key)
            .arg("--dir")
            .arg(&c.dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        wait_for(
            "the test-bed's OpenSearch to listen",
            Duration::from_secs(30),
            || {
                std::net::TcpStream::connect(("127.0.0.1", port))
                    .ok()
                    .map(|_| ())
            },
        );
        OpensearchServer {
            child,
            port,
            cert: ca,
            password_file,
        }
    }

    /// `[opensearch]` for it, with `password` in a 0600 file.
    pub fn config(&self, env: &Env, c: &Cluster, password: &str, location: &str) -> String {
        let pw = env.path().join("opensearch.password");
        std::fs::write(&pw, format!("{password}\n")).unwrap();
        std::fs::set_permissions(&pw, std::fs::Permissions::from_mode(0o600)).unwrap();
        let _ = c;
        format!(
            "[opensearch]\nurl = \"https://127.0.0.1:{}\"\nuser = \"hopsdr\"\npassword = {{ file = \"{}\" }}\n\
             ca_file = \"{}\"\nlocation = \"{location}\"\nsnapshot_timeout = \"30s\"\nrestore_timeout = \"30s\"\n",
            self.port,
            pw.display(),
            self.cert.display()
        )
    }
}

impl Drop for OpensearchServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn os_fingerprint(c: &Cluster) -> String {
    String::from_utf8_lossy(&c.tb(&["opensearch", "fingerprint"]).stdout)
        .trim()
        .to_string()
}

fn location(c: &Cluster) -> String {
    c.dir.join("opensearch/repo/hopsdr").display().to_string()
}

#[test]
fn opensearch_is_snapshotted_with_the_backup_and_restored_onto_a_redeployed_cluster() {
    let (mut env, c, m) = crate::restore::setup();
    let os = OpensearchServer::start(&env, &c, "os-secret");
    env.extra_config
        .push_str(&os.config(&env, &c, "os-secret", &location(&c)));
    let d = env.start();
    let before = (c.fingerprint(), os_fingerprint(&c));
    let id = env.backup_ok();
    let show = env.ctl_json(&["backups", "show", &id]);
    let comps: Vec<&str> = show["components"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|c| c["component"].as_str())
        .collect();
    assert!(comps.contains(&"opensearch"), "{show}");
    // The snapshot repository's files are in the backup.
    let manifest = env
        .open_repo()
        .read_manifest(&hopsdr::ids::BackupId::parse(&id).unwrap())
        .unwrap();
    let of = manifest.info.facts.opensearch.clone().unwrap();
    assert_eq!(of.state, "SUCCESS");
    assert_eq!(of.snapshot, format!("hopsdr-{}", id.to_ascii_lowercase()));
    assert!(of.indices.contains(&"featurestore".to_string()), "{of:?}");
    assert!(!of.indices.iter().any(|i| i.starts_with('.')), "{of:?}");
    assert!(
        manifest
            .files()
            .any(|f| f.path.starts_with("opensearch/repository/index-")),
        "the repository data is stored"
    );

    // The disaster: OpenSearch redeployed empty (the snapshot repository gone), its
    // feature-store index created open by the new deployment.
    crate::restore::disaster(&c, &m);
    assert_ne!(os_fingerprint(&c), before.1);
    assert!(!std::path::Path::new(&location(&c)).exists());
    let plan = String::from_utf8_lossy(&env.ctl(&["restore", "plan", &id]).stdout).into_owned();
    assert!(
        plan.contains(&format!(
            "restore OpenSearch snapshot {} (3 indices; open ones of the same name closed first)",
            of.snapshot
        )),
        "{plan}"
    );
    // Killed right after OpenSearch was asked to restore: the resumed step closes what it
    // restored and restores it again.
    drop(d);
    env.kill_at(
        "restore.opensearch.requested",
        &["restore", "start", &id, "--yes"],
    );
    let _d = env.start();
    let o = env.ctl(&["restore", "resume", "--wait"]);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}\n{}\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr),
        env.log()
    );
    assert_eq!((c.fingerprint(), os_fingerprint(&c)), before);
    let st = env.ctl_json(&["restore", "status"]);
    let k = st["plan"]["steps"]
        .as_array()
        .unwrap()
        .iter()
        .position(|s| s["kind"] == "opensearch")
        .unwrap();
    assert_eq!(st["restore"]["steps"][k]["state"], "done");
    let r = st["plan"]["steps"]
        .as_array()
        .unwrap()
        .iter()
        .position(|s| s["kind"] == "reindex")
        .unwrap();
    assert!(k < r, "the snapshot comes back before ePipe reindexes");
    drop(os);
}

#[test]
fn opensearch_failures_are_named_and_a_partial_snapshot_makes_a_partial_backup() {
    let mut env = Env::new();
    let c = Cluster::create(&env, &[]);
    let os = OpensearchServer::start(&env, &c, "os-secret");
    let base = c.hopsfs_config("local");

    // Wrong password: refused before the blocks are copied, naming the user.
    env.extra_config = base.clone() + &os.config(&env, &c, "not-it", &location(&c));
    let d = env.start();
    let o = env.ctl(&["backup", "start", "--wait"]);
    assert_eq!(o.status.code(), Some(1));
    let j = env.ctl_json(&["backups", "list"]);
    let err = j["backups"][0]["error"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        err.contains("refused user \"hopsdr\" (401 Unauthorized)"),
        "{err}"
    );
    drop(d);

    // A location outside path.repo: OpenSearch's reason.
    env.extra_config = base.clone() + &os.config(&env, &c, "os-secret", "/srv/elsewhere");
    let d = env.start();
    let o = env.ctl(&["backup", "start", "--wait"]);
    assert_eq!(o.status.code(), Some(1));
    let j = env.ctl_json(&["backups", "list"]);
    let err = j["backups"][1]["error"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        err.contains("repository_exception")
            && err.contains("doesn't match any of the locations specified by path.repo"),
        "{err}"
    );
    drop(d);

    // PARTIAL: the backup is committed partial, naming the shard; FAILED: it fails.
    env.extra_config = base + &os.config(&env, &c, "os-secret", &location(&c));
    let d = env.start();
    c.tb(&["opensearch", "fault", "partial"]);
    let o = env.ctl(&["backup", "start", "--wait"]);
    let text = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(text.contains("partial"), "{text}");
    let j = env.ctl_json(&["backups", "list"]);
    let b = &j["backups"][2];
    assert_eq!(b["state"], "partial", "{j}");
    assert!(
        b["error"]
            .as_str()
            .unwrap()
            .contains("is PARTIAL (1 of 3 shards failed"),
        "{b}"
    );
    c.tb(&["opensearch", "fault", "failed"]);
    let o = env.ctl(&["backup", "start", "--wait"]);
    assert_eq!(o.status.code(), Some(1));
    let j = env.ctl_json(&["backups", "list"]);
    let err = j["backups"][3]["error"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        err.contains("opensearch: snapshot hopsdr-") && err.contains("FAILED"),
        "{err}"
    );
    c.tb(&["opensearch", "fault", "clear"]);
    env.backup_ok();
    // Killed once the snapshot's files are stored, before the commit: the backup is listed
    // interrupted, and the next one (a snapshot of its own name) is whole.
    drop(d);
    let (_, killed) = env.backup_killed_at("backup.component.opensearch.done");
    let _d = env.start();
    let j = env.ctl_json(&["backups", "show", &killed]);
    assert_eq!(j["state"], "interrupted", "{j}");
    let next = env.backup_ok();
    let o = env.ctl(&["drill", &next, "--wait"]);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stdout)
    );

    // Retention forgets all but the newest backup: their snapshots leave OpenSearch too.
    let snapshots = |c: &Cluster| {
        String::from_utf8_lossy(&c.tb(&["opensearch", "snapshots"]).stdout)
            .lines()
            .map(String::from)
            .collect::<Vec<_>>()
    };
    assert!(snapshots(&c).len() >= 3, "{:?}", snapshots(&c));
    drop(_d);
    env.extra_config
        .push_str("[retention]\nkeep_last = 1\nprune_after_backup = false\n");
    let _d = env.start();
    env.ctl_ok(&["prune", "--wait"]);
    assert_eq!(
        snapshots(&c),
        [format!("hopsdr/hopsdr-{}", next.to_ascii_lowercase())]
    );
    let _ = os.password_file.clone();
}
