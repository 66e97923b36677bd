//! Shared helpers of the integration tests: a hopsdrd started as a real process on temp paths,
//! hopsdrctl run as a process, and waiting on conditions with a deadline (never sleeping and
//! hoping).

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub const HOPSDRD: &str = env!("CARGO_BIN_EXE_hopsdrd");
pub const HOPSDRCTL: &str = env!("CARGO_BIN_EXE_hopsdrctl");

/// The sum of the numbers after ` field=` on the lines of `log` that contain `line` (log lines
/// of hopsdrd: `name=value` fields); a line with the text but without the field fails the test.
pub fn logged_sum(log: &str, line: &str, field: &str) -> u64 {
    let key = format!(" {field}=");
    log.lines()
        .filter(|l| l.contains(line))
        .map(|l| {
            l.split(key.as_str())
                .nth(1)
                .and_then(|t| t.split(' ').next())
                .and_then(|n| n.parse::<u64>().ok())
                .unwrap_or_else(|| panic!("no {field}= in: {l}"))
        })
        .sum()
}

/// Waits until `f` returns Some, or panics naming `what` after `timeout`.
pub fn wait_for<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        if start.elapsed() > timeout {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A free TCP port on loopback.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// One test's world: a temp dir with config, catalog, repository, socket and data to back up.
pub struct Env {
    pub dir: tempfile::TempDir,
    pub metrics_port: u16,
    pub extra_config: String,
    pub files: Vec<(PathBuf, bool)>,
    /// A `[repository]` section instead of the local directory `repo()`.
    pub repository_config: Option<String>,
    /// More keys of the `[daemon]` section.
    pub daemon_extra: String,
    /// The network namespace hopsdrd runs in (`ip netns exec`), if not this one.
    pub netns: Option<String>,
}

impl Env {
    pub fn new() -> Env {
        let dir = tempfile::Builder::new()
            .prefix("hopsdr-it-")
            .tempdir()
            .unwrap();
        // Reachable by an unprivileged user for the peer-credential tests.
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let data = dir.path().join("data");
        std::fs::create_dir_all(data.join("cluster-defns")).unwrap();
        std::fs::write(
            data.join("cluster-defns/hopsworks-installation.yml"),
            "name: demo\nattrs:\n  hopsworks:\n    version: 4.2.0\n",
        )
        .unwrap();
        std::fs::write(data.join("cluster-defns/notes.txt"), "head node: hops1\n").unwrap();
        let files = vec![(data.join("cluster-defns"), false)];
        Env {
            dir,
            metrics_port: free_port(),
            extra_config: String::new(),
            files,
            repository_config: None,
            daemon_extra: String::new(),
            netns: None,
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }
    pub fn socket(&self) -> PathBuf {
        self.path().join("run/hopsdr.sock")
    }
    pub fn config_path(&self) -> PathBuf {
        self.path().join("hopsdr.toml")
    }
    pub fn catalog(&self) -> PathBuf {
        self.path().join("lib/catalog.db")
    }
    pub fn repo(&self) -> PathBuf {
        self.path().join("repo")
    }

    /// The config text for this env.
    pub fn config_text(&self) -> String {
        let mut paths = String::new();
        for (p, optional) in &self.files {
            paths.push_str(&format!(
                "  {{ path = \"{}\", optional = {optional} }},\n",
                p.display()
            ));
        }
        let repository = self.repository_config.clone().unwrap_or_else(|| {
            format!(
                "[repository]\ntype = \"local\"\npath = \"{}\"\n",
                self.repo().display()
            )
        });
        format!(
            "[daemon]\nsocket = \"{}\"\nsocket_group = \"nogroup\"\ncatalog = \"{}\"\nshutdown_timeout = \"5s\"\nlog_level = \"debug\"\n{}\n\
             [metrics]\nlisten = \"127.0.0.1:{}\"\n\n\
             {repository}\n\
             [backup.files]\npaths = [\n{paths}]\n\n{}",
            self.socket().display(),
            self.catalog().display(),
            self.daemon_extra,
            self.metrics_port,
            self.extra_config
        )
    }

    pub fn write_config(&self) {
        std::fs::write(self.config_path(), self.config_text()).unwrap();
    }

    /// Starts hopsdrd with this env's config and waits until its socket answers.
    pub fn start(&self) -> Daemon {
        self.start_with(&[])
    }

    /// Starts hopsdrd expecting it to refuse to run: its exit code and stderr.
    pub fn start_refused(&self) -> (Option<i32>, String) {
        self.write_config();
        let mut child = Command::new(HOPSDRD)
            .arg("--config")
            .arg(self.config_path())
            .env_remove("NOTIFY_SOCKET")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                let out = child.wait_with_output().unwrap();
                return (
                    status.code(),
                    String::from_utf8_lossy(&out.stderr).into_owned(),
                );
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("hopsdrd kept running when it should have refused");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Starts hopsdrd paused at `failpoint`, starts a backup, kills hopsdrd with SIGKILL once
    /// the failpoint is reached; returns the backup's (job id, backup id).
    pub fn backup_killed_at(&self, failpoint: &str) -> (i64, String) {
        let marker = self.path().join(format!("{failpoint}.reached"));
        let _ = std::fs::remove_file(&marker);
        let mut d = self.start_with(&[("HOPSDR_FAILPOINTS", &format!("{failpoint}=pause"))]);
        let started = self.ctl_json(&["backup", "start"]);
        wait_for(failpoint, Duration::from_secs(60), || {
            marker.exists().then_some(())
        });
        d.kill9();
        (
            started["job_id"].as_i64().unwrap(),
            started["backup_id"].as_str().unwrap().to_string(),
        )
    }

    /// Starts hopsdrd paused at `failpoint`, runs hopsdrctl `args` (which must succeed), waits
    /// until the failpoint is reached, then kills hopsdrd with SIGKILL.
    pub fn kill_at(&self, failpoint: &str, args: &[&str]) {
        let marker = self.path().join(format!("{failpoint}.reached"));
        let _ = std::fs::remove_file(&marker);
        let mut d = self.start_with(&[("HOPSDR_FAILPOINTS", &format!("{failpoint}=pause"))]);
        let out = self.ctl(args);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        wait_for(failpoint, Duration::from_secs(60), || {
            marker.exists().then_some(())
        });
        d.kill9();
    }

    pub fn start_with(&self, env: &[(&str, &str)]) -> Daemon {
        let mut d = self.start_unready(env);
        d.wait_ready();
        d
    }

    /// Starts hopsdrd without waiting for it to answer (it may pause at a failpoint on its way).
    pub fn start_unready(&self, env: &[(&str, &str)]) -> Daemon {
        self.write_config();
        let log = self.path().join(format!(
            "hopsdrd-{}.log",
            Instant::now().elapsed().as_nanos()
        ));
        let log_file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.path().join("hopsdrd.log"))
            .unwrap();
        let _ = log;
        let mut cmd = match &self.netns {
            None => Command::new(HOPSDRD),
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns, HOPSDRD]);
                c
            }
        };
        cmd.arg("--config")
            .arg(self.config_path())
            .env_remove("NOTIFY_SOCKET")
            .env_remove("JOURNAL_STREAM")
            .env_remove("WATCHDOG_USEC")
            .env_remove("WATCHDOG_PID")
            .env("HOPSDR_FAILPOINT_DIR", self.path())
            .stdout(Stdio::null())
            .stderr(log_file);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().unwrap();
        Daemon {
            child: Some(child),
            socket: self.socket(),
            log: self.path().join("hopsdrd.log"),
        }
    }

    /// Runs hopsdrctl against this env's socket.
    pub fn ctl(&self, args: &[&str]) -> Output {
        Command::new(HOPSDRCTL)
            .arg("--socket")
            .arg(self.socket())
            .args(args)
            .output()
            .unwrap()
    }

    /// Runs hopsdrctl, which must exit 0 (else: its output and the daemon's log).
    pub fn ctl_ok(&self, args: &[&str]) -> Output {
        let out = self.ctl(args);
        assert_eq!(
            out.status.code(),
            Some(0),
            "hopsdrctl {args:?}\n{}\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            self.log()
        );
        out
    }

    /// Restores backup `id` (`restore start ID --yes --wait` with `extra` options), which must
    /// succeed (else: its output and the daemon's log).
    pub fn restore_ok(&self, id: &str, extra: &[&str]) {
        let mut args = vec!["restore", "start", id];
        args.extend_from_slice(extra);
        args.extend(["--yes", "--wait"]);
        self.ctl_ok(&args);
    }

    /// The ids in `hopsdrctl backups list`'s JSON, in its order.
    pub fn listed_ids(list: &serde_json::Value) -> Vec<String> {
        list["backups"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| b["id"].as_str().unwrap().to_string())
            .collect()
    }

    /// Runs hopsdrctl and parses its JSON output (expects exit 0).
    pub fn ctl_json(&self, args: &[&str]) -> serde_json::Value {
        let mut a = vec!["--json"];
        a.extend_from_slice(args);
        let out = self.ctl(&a);
        assert!(
            out.status.success(),
            "hopsdrctl {args:?} failed: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            self.log()
        );
        serde_json::from_slice(&out.stdout).unwrap()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.path().join("hopsdrd.log")).unwrap_or_default()
    }

    /// Takes a backup that must succeed (`backup start --wait` exits 0) and returns its id.
    pub fn backup_ok(&self) -> String {
        let out = self.ctl(&["backup", "start", "--wait"]);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            self.log()
        );
        let list = self.ctl_json(&["backups", "list"]);
        list["backups"].as_array().unwrap().last().unwrap()["id"]
            .as_str()
            .unwrap()
            .to_string()
    }

    /// Waits until job `id` is in a final state and returns its JSON.
    pub fn wait_job(&self, id: i64) -> serde_json::Value {
        wait_for(
            &format!("job {id} to finish"),
            Duration::from_secs(60),
            || {
                let v = self.ctl_json(&["job", &id.to_string()]);
                let s = v["state"].as_str().unwrap().to_string();
                (s != "running" && s != "queued").then_some(v)
            },
        )
    }

    /// The manifests in the repository.
    pub fn manifests(&self) -> Vec<String> {
        let mut out = Vec::new();
        if let Ok(rd) = std::fs::read_dir(self.repo().join("manifests")) {
            for e in rd.flatten() {
                let n = e.file_name().to_string_lossy().into_owned();
                if let Some(id) = n.strip_suffix(".json.zst").filter(|_| !n.starts_with('.')) {
                    out.push(id.to_string());
                }
            }
        }
        out.sort();
        out
    }

    /// GET /metrics.
    pub fn metrics(&self) -> String {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", self.metrics_port)).unwrap();
        s.write_all(b"GET /metrics HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
            .unwrap();
        let mut buf = String::new();
        s.read_to_string(&mut buf).unwrap();
        let (head, body) = buf.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        body.to_string()
    }
}

/// GET `path` from a server on loopback `port` (HTTP/1.0: the reply is not chunked); returns
/// (status, body), or None while nothing listens.
pub fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").as_bytes())
        .ok()?;
    let mut buf = String::new();
    s.read_to_string(&mut buf).ok()?;
    let (head, body) = buf.split_once("\r\n\r\n")?;
    let status = head.split(' ').nth(1)?.parse().ok()?;
    Some((status, body.to_string()))
}

/// Sends a raw HTTP request over the daemon's socket; returns (status, body).
pub fn raw_request(socket: &Path, request: &[u8]) -> (u16, String) {
    let mut s = UnixStream::connect(socket).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let _ = s.write_all(request);
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|x| x.1)
        .unwrap_or("")
        .to_string();
    (status, body)
}

/// A running hopsdrd; killed when dropped.
pub struct Daemon {
    pub child: Option<Child>,
    pub socket: PathBuf,
    pub log: PathBuf,
}

impl Daemon {
    pub fn pid(&self) -> i32 {
        self.child.as_ref().unwrap().id() as i32
    }

    fn wait_ready(&mut self) {
        let socket = self.socket.clone();
        let log = self.log.clone();
        let child = self.child.as_mut().unwrap();
        wait_for(
            "hopsdrd to answer on its socket",
            Duration::from_secs(30),
            || {
                if let Ok(Some(status)) = child.try_wait() {
                    panic!(
                        "hopsdrd exited early with {status}:\n{}",
                        std::fs::read_to_string(&log).unwrap_or_default()
                    );
                }
                UnixStream::connect(&socket).ok().map(|_| ())
            },
        );
    }

    pub fn signal(&self, sig: nix::sys::signal::Signal) {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid()), sig).unwrap();
    }

    /// Waits for the process to exit and returns its status.
    pub fn wait_exit(&mut self, timeout: Duration) -> std::process::ExitStatus {
        let child = self.child.as_mut().unwrap();
        let st = wait_for("hopsdrd to exit", timeout, || child.try_wait().unwrap());
        self.child = None;
        st
    }

    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(c) = self.child.as_mut() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(c.id() as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = c.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A tmpfs of `size` mounted on `dir` (created) for the life of the value.
pub struct SmallFs {
    dir: PathBuf,
}

impl SmallFs {
    pub fn mount(dir: &Path, size: &str) -> SmallFs {
        std::fs::create_dir_all(dir).unwrap();
        let st = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0755"),
                "tmpfs",
            ])
            .arg(dir)
            .status()
            .unwrap();
        assert!(st.success(), "mount a tmpfs on {}", dir.display());
        SmallFs {
            dir: dir.to_path_buf(),
        }
    }

    /// Gives the file system `size` (tmpfs can grow in place).
    pub fn resize(&self, size: &str) {
        let st = Command::new("mount")
            .args(["-o", &format!("remount,size={size}")])
            .arg(&self.dir)
            .status()
            .unwrap();
        assert!(st.success());
    }

    /// Fills what is left with a file `name` (written until the disk is full).
    pub fn fill(&self, name: &str) -> PathBuf {
        use std::io::Write;
        let p = self.dir.join(name);
        let mut f = std::fs::File::create(&p).unwrap();
        let block = vec![0u8; 4096];
        while f.write_all(&block).is_ok() {}
        let _ = f.sync_all();
        p
    }
}

impl Drop for SmallFs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
    }
}

/// Where one stored blob is in a local repository: the object file and the byte range (a
/// format 3 pack holds many blobs; a solo pack or a format 1/2 blob object, one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Place {
    pub blob: hopsdr::ids::BlobId,
    pub file: PathBuf,
    pub offset: u64,
    pub len: u64,
}

impl Place {
    /// Flips one bit in the middle of the blob.
    pub fn flip(&self) {
        let mut bytes = std::fs::read(&self.file).unwrap();
        let at = (self.offset + self.len / 2) as usize;
        bytes[at] ^= 0x01;
        std::fs::write(&self.file, bytes).unwrap();
    }

    /// Cuts the object in the middle of the blob.
    pub fn truncate(&self) {
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(&self.file)
            .unwrap();
        f.set_len(self.offset + self.len / 2).unwrap();
    }

    /// Removes the object holding the blob.
    pub fn remove(&self) {
        std::fs::remove_file(&self.file).unwrap();
    }
}

impl Env {
    /// The repository, opened read-only by the test (its own index cache).
    pub fn open_repo(&self) -> hopsdr::repository::Repository {
        hopsdr::repository::Repository::open_or_init(
            std::sync::Arc::new(hopsdr::repository::LocalStorage::new(self.repo()).unwrap()),
            1,
        )
        .unwrap()
    }

    /// Where the content of the file of backup `id` whose path ends with `suffix` is stored
    /// (its first blob, as the repository locates it now).
    pub fn place_of(&self, id: &str, suffix: &str) -> Place {
        let repo = self.open_repo();
        let m = repo
            .read_manifest(&hopsdr::ids::BackupId::parse(id).unwrap())
            .unwrap();
        let f = repo
            .all_entries(&m)
            .filter_map(|e| match e.unwrap() {
                hopsdr::repository::Entry::File(f) if f.path.ends_with(suffix) => Some(f),
                _ => None,
            })
            .next()
            .unwrap_or_else(|| panic!("no file *{suffix} in backup {id}"));
        self.place_of_blob(&f.blobs()[0])
    }

    /// Where blob `blob` is stored now.
    pub fn place_of_blob(&self, blob: &hopsdr::ids::BlobId) -> Place {
        let p = self
            .open_repo()
            .blob_location(blob)
            .unwrap()
            .unwrap_or_else(|| panic!("blob {blob} is nowhere"));
        Place {
            blob: blob.clone(),
            file: self.repo().join(&p.key),
            offset: p.offset,
            len: p.len,
        }
    }
}
