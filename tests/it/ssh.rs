//! Remote nodes over a real OpenSSH sshd on loopback (its own host key, authorized key and
//! known_hosts): argv quoting, tar streams, and failures that name the host and ssh's message.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use hopsdr::cluster::node::{Node, NodeAddress, NodeError, SshSettings};
use tokio_util::sync::CancellationToken;

use crate::harness::{free_port, wait_for};

/// A private sshd on 127.0.0.1, killed on drop.
pub struct Sshd {
    pub dir: tempfile::TempDir,
    pub port: u16,
    child: Child,
}

fn keygen(path: &Path) {
    let st = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(path)
        .status()
        .unwrap();
    assert!(st.success());
}

impl Sshd {
    pub fn start() -> Sshd {
        let dir = tempfile::Builder::new()
            .prefix("hopsdr-sshd-")
            .tempdir()
            .unwrap();
        let d = dir.path();
        keygen(&d.join("host_key"));
        keygen(&d.join("client_key"));
        keygen(&d.join("other_key"));
        std::fs::copy(d.join("client_key.pub"), d.join("authorized_keys")).unwrap();
        let port = free_port();
        std::fs::write(
            d.join("sshd_config"),
            format!(
                "Port {port}\nListenAddress 127.0.0.1\nHostKey {hk}\nAuthorizedKeysFile {ak}\n\
                 PidFile {pid}\nUsePAM no\nPermitRootLogin prohibit-password\nStrictModes no\n\
                 PasswordAuthentication no\nKbdInteractiveAuthentication no\nLogLevel ERROR\n",
                hk = d.join("host_key").display(),
                ak = d.join("authorized_keys").display(),
                pid = d.join("sshd.pid").display(),
            ),
        )
        .unwrap();
        let host_pub = std::fs::read_to_string(d.join("host_key.pub")).unwrap();
        let mut parts = host_pub.split_whitespace();
        let (kt, key) = (parts.next().unwrap(), parts.next().unwrap());
        std::fs::write(
            d.join("known_hosts"),
            format!("[127.0.0.1]:{port} {kt} {key}\n"),
        )
        .unwrap();
        std::fs::create_dir_all("/run/sshd").unwrap();
        let child = Command::new("/usr/sbin/sshd")
            .args(["-D", "-e", "-f"])
            .arg(d.join("sshd_config"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("sshd (openssh-server) must be installed: run scripts/setup-test-deps");
        let s = Sshd { dir, port, child };
        wait_for("sshd to listen", Duration::from_secs(20), || {
            std::net::TcpStream::connect(("127.0.0.1", port))
                .ok()
                .map(|_| ())
        });
        s
    }

    /// A new key `key` whose logins run `command` whatever the client asks (an operator's
    /// `restrict,command="..."` line in authorized_keys).
    pub fn authorize(&self, key: &str, command: &str) {
        let d = self.dir.path();
        keygen(&d.join(key));
        let public = std::fs::read_to_string(d.join(format!("{key}.pub"))).unwrap();
        let mut keys = std::fs::read_to_string(d.join("authorized_keys")).unwrap();
        keys.push_str(&format!(
            "restrict,command=\"{}\" {public}",
            command.replace('"', "\\\"")
        ));
        std::fs::write(d.join("authorized_keys"), keys).unwrap();
    }

    pub fn settings(&self, key: &str) -> Arc<SshSettings> {
        Arc::new(SshSettings {
            ssh: PathBuf::from("ssh"),
            user: "root".into(),
            port: self.port,
            identity_file: self.dir.path().join(key),
            known_hosts: self.dir.path().join("known_hosts"),
            connect_timeout: Duration::from_secs(10),
        })
    }

    pub fn node(&self, key: &str) -> Node {
        Node {
            name: "ndb node 1".into(),
            address: NodeAddress::Ssh {
                host: "127.0.0.1".into(),
                ssh: self.settings(key),
            },
        }
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn argv(a: &[&str]) -> Vec<String> {
    a.iter().map(|s| s.to_string()).collect()
}

#[test]
fn commands_run_over_ssh_with_exact_arguments_and_failures_name_the_host() {
    let sshd = Sshd::start();
    let c = CancellationToken::new();
    let t = Duration::from_secs(30);
    let node = sshd.node("client_key");

    // Arguments arrive exactly as given, whatever the remote shell would make of them.
    let tricky = argv(&[
        "printf",
        "%s|",
        "a b",
        "it's",
        "$HOME",
        "; touch /tmp/pwned",
        "*",
    ]);
    let out = node.run(&tricky, t, &c).unwrap();
    assert_eq!(out.stdout, "a b|it's|$HOME|; touch /tmp/pwned|*|");

    // A failing command: its exit status and stderr in the error.
    let e = node
        .run(
            &argv(&["sh", "-c", "echo 'Backup failed' >&2; exit 1"]),
            t,
            &c,
        )
        .unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.contains("exit status: 1") && msg.ends_with("Backup failed"),
        "{msg}"
    );

    // A tar stream over the channel.
    let src = sshd.dir.path().join("src");
    std::fs::create_dir_all(src.join("BACKUP/BACKUP-3")).unwrap();
    std::fs::write(src.join("BACKUP/BACKUP-3/BACKUP-3.1.ctl"), b"NDBBCKUP").unwrap();
    let mut names = Vec::new();
    node.stream(
        &hopsdr::backup::tarstream::tar_argv(src.to_str().unwrap()),
        t,
        &c,
        |r| {
            let mut a = tar::Archive::new(r);
            for e in a.entries()? {
                names.push(e?.path()?.display().to_string());
            }
            Ok(())
        },
    )
    .unwrap();
    assert!(
        names.iter().any(|n| n.ends_with("BACKUP-3.1.ctl")),
        "{names:?}"
    );

    // Authentication failure: the host and ssh's own message.
    let e = sshd
        .node("other_key")
        .run(&argv(&["true"]), t, &c)
        .unwrap_err();
    assert!(matches!(e, NodeError::Ssh { .. }), "{e}");
    let msg = e.to_string();
    assert!(
        msg.contains("ssh to 127.0.0.1 failed") && msg.contains("Permission denied"),
        "{msg}"
    );

    // An unknown host key is refused (StrictHostKeyChecking=yes).
    std::fs::write(sshd.dir.path().join("known_hosts"), "").unwrap();
    let e = node.run(&argv(&["true"]), t, &c).unwrap_err();
    let msg = e.to_string();
    assert!(msg.contains("Host key verification failed"), "{msg}");
}
