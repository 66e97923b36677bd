//! A test-bed cluster for the integration tests, with the daemon config that points at it, and
//! the by-hand restore in the guide's order that proves a backup restores the cluster whole.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use hopsdr::ids::BackupId;
use hopsdr::repository::{Entry, LocalStorage, Repository};

use crate::harness::Env;
use crate::ssh::Sshd;

pub const TB: &str = env!("CARGO_BIN_EXE_hopsdr-testbed");

/// A test-bed cluster in an env's dir: 2 data nodes, 3 HopsFS datanodes with 2 volumes each.
pub struct Cluster {
    pub dir: PathBuf,
    pub datanodes: u32,
    pub volumes: u32,
}

impl Cluster {
    /// `extra` arguments of `cluster create` override the defaults.
    pub fn create(env: &Env, extra: &[&str]) -> Cluster {
        Self::create_named(env, "cluster", extra)
    }

    /// [`Cluster::create`] in `<env>/<name>` (a second cluster: a standby).
    pub fn create_named(env: &Env, name: &str, extra: &[&str]) -> Cluster {
        let dir = env.path().join(name);
        let mut args: Vec<&str> = vec!["cluster", "create", "--dir", dir.to_str().unwrap()];
        for (k, v) in [
            ("--data-nodes", "2"),
            ("--hopsfs-datanodes", "3"),
            ("--volumes", "2"),
            ("--rows", "40"),
            ("--files", "30"),
        ] {
            if !extra.contains(&k) {
                args.extend([k, v]);
            }
        }
        args.extend_from_slice(extra);
        let given = |k: &str, default: u32| {
            extra
                .iter()
                .position(|a| *a == k)
                .and_then(|i| extra.get(i + 1))
                .map_or(default, |v| v.parse().unwrap())
        };
        let (datanodes, volumes) = (given("--hopsfs-datanodes", 3), given("--volumes", 2));
        let out = Command::new(TB).args(&args).output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        Cluster {
            dir,
            datanodes,
            volumes,
        }
    }

    /// Runs a test-bed subcommand on this cluster (must succeed).
    pub fn tb(&self, args: &[&str]) -> Output {
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

    /// `cluster info`: paths, ids, the services running, the MySQL server's restarts.
    pub fn info(&self) -> serde_json::Value {
        serde_json::from_slice(&self.tb(&["cluster", "info"]).stdout).unwrap()
    }

    /// How many rows table `db.table` holds.
    pub fn rows(&self, table: &str) -> u64 {
        String::from_utf8_lossy(&self.tb(&["cluster", "rows", "--table", table]).stdout)
            .trim()
            .parse()
            .unwrap()
    }

    pub fn tool_path(&self, name: &str) -> String {
        self.dir.join("bin").join(name).display().to_string()
    }

    /// Runs one of the cluster's tools (`ndb_mgm`, `ndb_restore`, `hdfs`, ...).
    pub fn tool(&self, name: &str, args: &[&str]) -> Output {
        Command::new(self.tool_path(name))
            .args(args)
            .output()
            .unwrap()
    }

    pub fn backup_dir(&self, node: u32) -> PathBuf {
        self.dir.join(format!("ndb/{node}/backups"))
    }

    pub fn volume(&self, dn: u32, vol: u32) -> PathBuf {
        self.dir.join(format!("hopsfs/dn{dn}/vol{vol}"))
    }

    pub fn fingerprint(&self) -> String {
        String::from_utf8_lossy(&self.tb(&["cluster", "fingerprint"]).stdout)
            .trim()
            .to_string()
    }

    pub fn safe_mode(&self) -> String {
        let out = self.tool("hdfs", &["dfsadmin", "-safemode", "get"]);
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// `[rondb]` with both data nodes on `host`.
    pub fn rondb_config(&self, host: &str) -> String {
        let mut s = format!(
            "[rondb]\nmgm_client = [\"{}\", \"-c\", \"10.0.0.1:1186\"]\nndb_show_tables = [\"{}\"]\nbackup_timeout = \"60s\"\ncommand_timeout = \"30s\"\n",
            self.tool_path("ndb_mgm"),
            self.tool_path("ndb_show_tables")
        );
        for n in [1, 2] {
            s.push_str(&format!(
                "[[rondb.data_nodes]]\nid = {n}\nhost = \"{host}\"\nbackup_dir = \"{}\"\n",
                self.backup_dir(n).display()
            ));
        }
        s
    }

    /// `[rondb]` (local data nodes) and `[hopsfs]` with the datanodes on `host`.
    pub fn hopsfs_config(&self, host: &str) -> String {
        let hosts = vec![host.to_string(); self.datanodes as usize];
        self.hopsfs_config_on(&hosts)
    }

    /// `[rondb]` (local data nodes) and `[hopsfs]` with datanode `dn<k>` on `hosts[k - 1]`.
    pub fn hopsfs_config_on(&self, hosts: &[String]) -> String {
        let mut s = self.rondb_config("local");
        s.push_str(&format!(
            "[hopsfs]\ncopy_timeout = \"60s\"\nreferenced_blocks = [\"{TB}\", \"backup\", \"blocks\", \"--dir\", \"{}\"]\n",
            self.dir.display()
        ));
        for dn in 1..=self.datanodes {
            let vols: Vec<String> = (1..=self.volumes)
                .map(|v| format!("\"{}\"", self.volume(dn, v).display()))
                .collect();
            s.push_str(&format!(
                "[[hopsfs.datanodes]]\nname = \"dn{dn}\"\nhost = \"{}\"\nvolumes = [{}]\n",
                hosts[dn as usize - 1],
                vols.join(", ")
            ));
        }
        s
    }
}

/// `[ssh]` for the private sshd, with `key`, and optionally another ssh binary.
pub fn ssh_config(sshd: &Sshd, key: &str, ssh_binary: Option<&Path>) -> String {
    let mut s = format!(
        "[ssh]\nuser = \"root\"\nport = {}\nidentity_file = \"{}\"\nknown_hosts = \"{}\"\nconnect_timeout = \"5s\"\n",
        sshd.port,
        sshd.dir.path().join(key).display(),
        sshd.dir.path().join("known_hosts").display()
    );
    if let Some(b) = ssh_binary {
        s.push_str(&format!("ssh = \"{}\"\n", b.display()));
    }
    s
}

/// An ssh client that drops the connection after `bytes` of output of any command matching
/// the shell pattern `pattern`, while the returned flag file exists (remove it to heal).
/// Returns (the wrapper to use as `[ssh] ssh`, the flag file).
pub fn cutting_ssh(env: &Env, pattern: &str, bytes: usize) -> (PathBuf, PathBuf) {
    use std::os::unix::fs::PermissionsExt;
    let wrapper = env.path().join("cutting-ssh");
    let flag = env.path().join("cut");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\ncase \"$*\" in\n  {pattern}) if [ -e {flag} ]; then /usr/bin/ssh \"$@\" | head -c {bytes}; exit 255; fi;;\nesac\nexec /usr/bin/ssh \"$@\"\n",
            flag = flag.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(&flag, "").unwrap();
    (wrapper, flag)
}

pub fn repo(env: &Env) -> Repository {
    Repository::open_or_init(
        std::sync::Arc::new(LocalStorage::new(env.repo()).unwrap()),
        1,
    )
    .unwrap()
}

pub fn last_backup(env: &Env) -> serde_json::Value {
    let list = env.ctl_json(&["backups", "list"]);
    list["backups"].as_array().unwrap().last().unwrap().clone()
}

/// Starts a backup that must fail; returns its error. Nothing of it is committed.
pub fn failed_backup(env: &Env) -> String {
    let out = env.ctl(&["backup", "start", "--wait"]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let b = last_backup(env);
    assert_eq!(b["state"], "failed");
    let id = b["id"].as_str().unwrap();
    assert!(!env.manifests().iter().any(|m| m == id));
    b["error"].as_str().unwrap().to_string()
}

/// One component of a backup as `backups show` reports it.
pub fn show_component(env: &Env, id: &str, name: &str) -> serde_json::Value {
    let show = env.ctl_json(&["backups", "show", id]);
    show["components"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["component"] == name)
        .unwrap()
        .clone()
}

/// The HopsFS facts of a backup's manifest.
pub fn hopsfs_facts(env: &Env, id: &str) -> serde_json::Value {
    let m = repo(env)
        .read_manifest(&BackupId::parse(id).unwrap())
        .unwrap();
    serde_json::to_value(&m.info).unwrap()["extra"]["hopsfs"].clone()
}

/// Writes every file under `rondb/` of backup `id` into `to`, as a restore stages them;
/// returns their paths relative to `to`.
pub fn stage_rondb(env: &Env, id: &str, to: &Path) -> Vec<String> {
    let repo = repo(env);
    let m = repo.read_manifest(&BackupId::parse(id).unwrap()).unwrap();
    let mut paths = Vec::new();
    for e in repo.all_entries(&m) {
        if let Entry::File(f) = e.unwrap() {
            if let Some(rest) = f.path.strip_prefix("rondb/") {
                let p = to.join(rest);
                std::fs::create_dir_all(p.parent().unwrap()).unwrap();
                let mut out = std::fs::File::create(&p).unwrap();
                repo.restore_file(&f, &mut out).unwrap();
                paths.push(rest.to_string());
            }
        }
    }
    paths.sort();
    paths
}

/// Restores backup `id` by hand onto the redeployed cluster, in the guide's order: ndb_restore
/// (`-m --disable-indexes` once, `-r` per node, `--rebuild-indexes`), volumes written back,
/// datanodes started, Kafka topics recreated.
pub fn restore_by_hand(env: &Env, c: &Cluster, id: &str) {
    let repo = repo(env);
    let m = repo.read_manifest(&BackupId::parse(id).unwrap()).unwrap();
    let rid = m.info.facts.rondb.as_ref().unwrap().backup_id.to_string();
    c.tb(&["cluster", "destroy"]);
    c.tb(&["cluster", "redeploy", "--empty"]);
    let staged = env.path().join(format!("staged-{id}"));
    stage_rondb(env, id, &staged);
    // hopsfs/dn<k>/vol<i>/... goes back to that volume.
    let volume_path = |rest: &str| -> Option<PathBuf> {
        let mut p = rest.splitn(3, '/');
        let (dn, vol, inside) = (p.next()?, p.next()?, p.next()?);
        Some(c.dir.join("hopsfs").join(dn).join(vol).join(inside))
    };
    for e in repo.all_entries(&m) {
        match e.unwrap() {
            Entry::File(f) => {
                if let Some(target) = f.path.strip_prefix("hopsfs/").and_then(volume_path) {
                    std::fs::create_dir_all(target.parent().unwrap()).unwrap();
                    let mut out = std::fs::File::create(&target).unwrap();
                    repo.restore_file(&f, &mut out).unwrap();
                }
            }
            Entry::Dir { path, .. } => {
                if let Some(target) = path.strip_prefix("hopsfs/").and_then(volume_path) {
                    std::fs::create_dir_all(target).unwrap();
                }
            }
            _ => {}
        }
    }
    let restore = |args: &[&str]| {
        let out = c.tool("ndb_restore", args);
        assert!(
            out.status.success(),
            "ndb_restore {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let path = |n: u32| {
        staged
            .join(format!("{n}/BACKUP-{rid}"))
            .display()
            .to_string()
    };
    let base = |n: &str| ["-c", "10.0.0.1:1186", "-n", n, "-b"].map(str::to_string);
    let run = |n: u32, extra: &[&str]| {
        let ns = n.to_string();
        let p = path(n);
        let mut a: Vec<String> = base(&ns).to_vec();
        a.push(rid.clone());
        a.extend(extra.iter().map(|s| s.to_string()));
        a.push("--backup_path".into());
        a.push(p);
        let refs: Vec<&str> = a.iter().map(String::as_str).collect();
        restore(&refs);
    };
    run(1, &["-m", "--disable-indexes"]);
    for n in [1, 2] {
        run(n, &["-r"]);
    }
    run(1, &["--rebuild-indexes"]);
    for dn in 1..=c.datanodes {
        c.tb(&["datanode", "start", &dn.to_string()]);
    }
    let out = c.tool("kafka-restore.sh", &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
