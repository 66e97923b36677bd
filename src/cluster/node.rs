//! A node of the cluster: the head node itself (`local`) or a host reached with the OpenSSH
//! client (`BatchMode=yes`, a dedicated identity file, `StrictHostKeyChecking=yes` against a
//! configured known_hosts file, a connect timeout).
//!
//! Commands are argv, never shell strings built from input: for a remote node every argument is
//! single-quoted for the remote shell ([`remote_command_line`]). Every command has a timeout and
//! is killed when its step is cancelled; its stderr (the last 64 KiB) ends up in the error.

use std::io::Read;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

/// The most stderr kept for an error message.
const STDERR_KEEP: usize = 64 * 1024;

/// The most stdout a command run for its output may print (a block listing of a large
/// datanode is tens of MiB); a node printing more is stopped, never allowed to fill memory.
pub const MAX_CAPTURED_STDOUT: u64 = 128 * 1024 * 1024;

/// Reads all of `r` into `buf`, failing once it holds more than `limit` bytes.
fn read_bounded(r: &mut dyn Read, buf: &mut Vec<u8>, limit: u64) -> std::io::Result<()> {
    r.take(limit + 1).read_to_end(buf)?;
    if buf.len() as u64 > limit {
        return Err(std::io::Error::other(format!(
            "it printed more than {} MiB, the most hopsdr reads of a command's output; the command was stopped (check the tool on that node)",
            limit / (1024 * 1024)
        )));
    }
    Ok(())
}

/// How to reach remote nodes: the `[ssh]` settings, one type from the config to the command.
pub use crate::config::SshConfig as SshSettings;

/// Where a node is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeAddress {
    Local,
    Ssh { host: String, ssh: Arc<SshSettings> },
}

impl Node {
    /// The node `name` at a configured host: the head node itself, or over ssh.
    pub fn at(name: String, host: &crate::config::NodeHost, ssh: &SshSettings) -> Node {
        let address = match host {
            crate::config::NodeHost::Local => NodeAddress::Local,
            crate::config::NodeHost::Remote(h) => NodeAddress::Ssh {
                host: h.clone(),
                ssh: Arc::new(ssh.clone()),
            },
        };
        Node { name, address }
    }
}

/// A node of the cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    /// A name for messages, e.g. `ndb node 2 (10.0.0.12)`.
    pub name: String,
    pub address: NodeAddress,
}

/// Why a command on a node failed.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("{node}: failed to start `{program}`: {source}")]
    Spawn {
        node: String,
        program: String,
        source: std::io::Error,
    },
    #[error("{node}: `{command}` exited with {status}{}", stderr_suffix(.stderr))]
    Failed {
        node: String,
        command: String,
        status: String,
        stderr: String,
    },
    #[error("{node}: ssh to {host} failed (exit 255){}", stderr_suffix(.stderr))]
    Ssh {
        node: String,
        host: String,
        stderr: String,
    },
    #[error("{node}: `{command}` timed out after {timeout:?} and was killed")]
    Timeout {
        node: String,
        command: String,
        timeout: Duration,
    },
    #[error("{node}: `{command}` was cancelled")]
    Cancelled { node: String, command: String },
    #[error("{node}: failed to read the output of `{command}`: {source}")]
    Io {
        node: String,
        command: String,
        source: std::io::Error,
    },
}

fn stderr_suffix(stderr: &str) -> String {
    let s = stderr.trim();
    if s.is_empty() {
        String::new()
    } else {
        format!(": {s}")
    }
}

/// Writes a command's stdin.
pub type Producer = Box<dyn FnOnce(&mut dyn std::io::Write) -> std::io::Result<()> + Send>;

/// The output of a finished command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandOutput {
    pub status: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

/// Quotes one argument for a POSIX shell: `'...'` with embedded `'` as `'\''`. Arguments made
/// only of safe characters are left as they are, for readable logs.
pub fn shell_quote(arg: &str) -> String {
    let safe = !arg.is_empty()
        && arg
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./=:,+@%".contains(&b));
    if safe {
        arg.to_string()
    } else {
        format!("'{}'", arg.replace('\'', r"'\''"))
    }
}

/// The command line the remote shell runs for `argv`: every argument quoted.
pub fn remote_command_line(argv: &[String]) -> String {
    argv.iter()
        .map(|a| shell_quote(a))
        .collect::<Vec<_>>()
        .join(" ")
}

/// The ssh client's argv to run `argv` on `host`.
pub fn ssh_argv(s: &SshSettings, host: &str, argv: &[String]) -> Vec<String> {
    vec![
        "-o".into(),
        "BatchMode=yes".into(),
        "-o".into(),
        "StrictHostKeyChecking=yes".into(),
        "-o".into(),
        format!("UserKnownHostsFile={}", s.known_hosts.display()),
        "-o".into(),
        "GlobalKnownHostsFile=/dev/null".into(),
        "-o".into(),
        "IdentitiesOnly=yes".into(),
        "-o".into(),
        format!("ConnectTimeout={}", s.connect_timeout.as_secs().max(1)),
        "-o".into(),
        "ServerAliveInterval=15".into(),
        "-o".into(),
        "ServerAliveCountMax=4".into(),
        "-i".into(),
        s.identity_file.display().to_string(),
        "-p".into(),
        s.port.to_string(),
        "-l".into(),
        s.user.clone(),
        // End of options: the host can never be taken as one.
        "--".into(),
        host.to_string(),
        remote_command_line(argv),
    ]
}

impl Node {
    /// The host, as the config names it.
    pub fn host(&self) -> crate::config::NodeHost {
        match &self.address {
            NodeAddress::Local => crate::config::NodeHost::Local,
            NodeAddress::Ssh { host, .. } => crate::config::NodeHost::Remote(host.clone()),
        }
    }

    pub fn local(name: &str) -> Node {
        Node {
            name: name.to_string(),
            address: NodeAddress::Local,
        }
    }

    fn command(&self, argv: &[String]) -> Command {
        match &self.address {
            NodeAddress::Local => {
                let mut c = Command::new(&argv[0]);
                c.args(&argv[1..]);
                c
            }
            NodeAddress::Ssh { host, ssh } => {
                let mut c = Command::new(&ssh.ssh);
                c.args(ssh_argv(ssh, host, argv));
                c
            }
        }
    }

    /// Starts `argv` with stdin, stdout and stderr piped, for a caller that talks to it (an agent
    /// session) and owns its lifetime.
    pub fn spawn_piped(&self, argv: &[String]) -> Result<Child, NodeError> {
        self.spawn(argv, Stdio::piped())
    }

    /// Starts `argv` with `stdin`, stdout and stderr piped.
    fn spawn(&self, argv: &[String], stdin: Stdio) -> Result<Child, NodeError> {
        self.command(argv)
            .stdin(stdin)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|source| NodeError::Spawn {
                node: self.name.clone(),
                program: argv[0].clone(),
                source,
            })
    }

    fn display(argv: &[String]) -> String {
        remote_command_line(argv)
    }

    /// Runs `argv` to completion and returns its output; a non-zero exit is an error carrying
    /// stderr (use [`Node::run_status`] to see non-zero exits as output).
    pub fn run(
        &self,
        argv: &[String],
        timeout: Duration,
        cancel: &CancellationToken,
    ) -> Result<CommandOutput, NodeError> {
        let (out, status) = self.run_inner(argv, timeout, cancel)?;
        if status.success() {
            Ok(out)
        } else {
            Err(self.failure(argv, status, out.stderr))
        }
    }

    /// As [`Node::run`], writing `input` to the command's stdin (a password for a
    /// `--backup-password-from-stdin`: secrets never go in argv).
    pub fn run_with_input(
        &self,
        argv: &[String],
        input: Vec<u8>,
        timeout: Duration,
        cancel: &CancellationToken,
    ) -> Result<CommandOutput, NodeError> {
        let out = self.run_with_input_status(argv, input, timeout, cancel)?;
        match out.status {
            Some(0) => Ok(out),
            code => Err(NodeError::Failed {
                node: self.name.clone(),
                command: Self::display(argv),
                status: code.map_or_else(
                    || "killed by a signal".to_string(),
                    |c| format!("exit status {c}"),
                ),
                stderr: out.stderr,
            }),
        }
    }

    /// Runs `argv` to completion; any exit status is returned as output (ssh failures to reach
    /// the node are still errors).
    pub fn run_status(
        &self,
        argv: &[String],
        timeout: Duration,
        cancel: &CancellationToken,
    ) -> Result<CommandOutput, NodeError> {
        let (out, status) = self.run_inner(argv, timeout, cancel)?;
        if let (NodeAddress::Ssh { host, .. }, Some(255)) = (&self.address, status.code()) {
            return Err(NodeError::Ssh {
                node: self.name.clone(),
                host: host.clone(),
                stderr: out.stderr,
            });
        }
        Ok(out)
    }

    /// As [`Node::run_status`], writing `input` to the command's stdin (e.g. a NUL-separated
    /// list of files for `xargs -0`).
    pub fn run_with_input_status(
        &self,
        argv: &[String],
        input: Vec<u8>,
        timeout: Duration,
        cancel: &CancellationToken,
    ) -> Result<CommandOutput, NodeError> {
        let mut stdout = Vec::new();
        let (status, stderr) = self.stream_with_input(argv, Some(input), timeout, cancel, |r| {
            read_bounded(r, &mut stdout, MAX_CAPTURED_STDOUT)
        })?;
        if let (NodeAddress::Ssh { host, .. }, Some(255)) = (&self.address, status.code()) {
            return Err(NodeError::Ssh {
                node: self.name.clone(),
                host: host.clone(),
                stderr,
            });
        }
        Ok(CommandOutput {
            status: status.code(),
            stdout: String::from_utf8_lossy(&stdout).into_owned(),
            stderr,
        })
    }

    fn run_inner(
        &self,
        argv: &[String],
        timeout: Duration,
        cancel: &CancellationToken,
    ) -> Result<(CommandOutput, ExitStatus), NodeError> {
        let mut stdout = Vec::new();
        let status_and_err = self.stream(argv, timeout, cancel, |r| {
            read_bounded(r, &mut stdout, MAX_CAPTURED_STDOUT)
        })?;
        let (status, stderr) = status_and_err;
        Ok((
            CommandOutput {
                status: status.code(),
                stdout: String::from_utf8_lossy(&stdout).into_owned(),
                stderr,
            },
            status,
        ))
    }

    fn failure(&self, argv: &[String], status: ExitStatus, stderr: String) -> NodeError {
        if let (NodeAddress::Ssh { host, .. }, Some(255)) = (&self.address, status.code()) {
            return NodeError::Ssh {
                node: self.name.clone(),
                host: host.clone(),
                stderr,
            };
        }
        NodeError::Failed {
            node: self.name.clone(),
            command: Self::display(argv),
            status: status.to_string(),
            stderr,
        }
    }

    /// Runs `argv` and hands its stdout to `consume` as it arrives (for tar streams). The
    /// command is killed when `timeout` passes or `cancel` fires. Returns the exit status and
    /// stderr; a consumer error is returned as [`NodeError::Io`] after the child is killed.
    pub fn stream<F>(
        &self,
        argv: &[String],
        timeout: Duration,
        cancel: &CancellationToken,
        consume: F,
    ) -> Result<(ExitStatus, String), NodeError>
    where
        F: FnOnce(&mut dyn Read) -> std::io::Result<()>,
    {
        self.stream_with_input(argv, None, timeout, cancel, consume)
    }

    /// As [`Node::stream`], writing `input` to the command's stdin (e.g. a list of files for
    /// `tar -T -`).
    pub fn stream_with_input<F>(
        &self,
        argv: &[String],
        input: Option<Vec<u8>>,
        timeout: Duration,
        cancel: &CancellationToken,
        consume: F,
    ) -> Result<(ExitStatus, String), NodeError>
    where
        F: FnOnce(&mut dyn Read) -> std::io::Result<()>,
    {
        let producer: Option<Producer> = input
            .map(|data| Box::new(move |w: &mut dyn std::io::Write| w.write_all(&data)) as Producer);
        self.stream_with_producer(argv, producer, timeout, cancel, consume)
    }

    /// Runs `argv` with `produce` writing its stdin (on its own thread: e.g. a tar stream built
    /// from the repository for `tar -x` on the node), and `consume` reading its stdout. A
    /// producer error is returned as [`NodeError::Io`] (the command then sees a cut stream).
    pub fn stream_with_producer<F>(
        &self,
        argv: &[String],
        input: Option<Producer>,
        timeout: Duration,
        cancel: &CancellationToken,
        consume: F,
    ) -> Result<(ExitStatus, String), NodeError>
    where
        F: FnOnce(&mut dyn Read) -> std::io::Result<()>,
    {
        let command = Self::display(argv);
        let mut child = self.spawn(
            argv,
            if input.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            },
        )?;
        let pid = child.id() as i32;
        let stdin_thread = match (input, child.stdin.take()) {
            (Some(produce), Some(mut stdin)) => Some(std::thread::spawn(move || {
                let r = produce(&mut stdin);
                drop(stdin);
                r
            })),
            _ => None,
        };
        let mut out = child.stdout.take().expect("stdout is piped");
        let err = child.stderr.take().expect("stderr is piped");
        let stderr_buf = Arc::new(Mutex::new(Vec::new()));
        let stderr_thread = {
            let buf = stderr_buf.clone();
            std::thread::spawn(move || collect_stderr(err, &buf))
        };
        // The watchdog kills the child on timeout or cancellation; the process is reaped only
        // after the watchdog has stopped, so its pid cannot be reused meanwhile.
        let done = CancellationToken::new();
        let why = Arc::new(Mutex::new(None::<&'static str>));
        let watchdog = {
            let done = done.clone();
            let cancel = cancel.clone();
            let why = why.clone();
            std::thread::spawn(move || {
                let start = Instant::now();
                loop {
                    if done.is_cancelled() {
                        return;
                    }
                    let reason = if cancel.is_cancelled() {
                        Some("cancelled")
                    } else if start.elapsed() >= timeout {
                        Some("timeout")
                    } else {
                        None
                    };
                    if let Some(r) = reason {
                        *why.lock().unwrap_or_else(|p| p.into_inner()) = Some(r);
                        let _ = nix::sys::signal::kill(
                            nix::unistd::Pid::from_raw(pid),
                            nix::sys::signal::Signal::SIGKILL,
                        );
                        return;
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
            })
        };
        let consumed = consume(&mut out);
        if consumed.is_err() {
            let _ = child.kill();
        }
        drop(out);
        let status = wait(&mut child);
        done.cancel();
        let _ = watchdog.join();
        let _ = stderr_thread.join();
        let produced = match stdin_thread {
            Some(t) => t
                .join()
                .unwrap_or_else(|_| Err(std::io::Error::other("the stdin writer panicked"))),
            None => Ok(()),
        };
        let stderr = String::from_utf8_lossy(&stderr_buf.lock().unwrap_or_else(|p| p.into_inner()))
            .into_owned();
        let killed_for = *why.lock().unwrap_or_else(|p| p.into_inner());
        match killed_for {
            Some("cancelled") => {
                return Err(NodeError::Cancelled {
                    node: self.name.clone(),
                    command,
                })
            }
            Some(_) => {
                return Err(NodeError::Timeout {
                    node: self.name.clone(),
                    command,
                    timeout,
                })
            }
            None => {}
        }
        let status = status.map_err(|source| NodeError::Io {
            node: self.name.clone(),
            command: command.clone(),
            source,
        })?;
        if let Err(source) = produced {
            // A command that stopped reading early makes the writer fail with a broken pipe:
            // then the command's own status tells more.
            if source.kind() != std::io::ErrorKind::BrokenPipe || status.success() {
                return Err(NodeError::Io {
                    node: self.name.clone(),
                    command,
                    source,
                });
            }
        }
        if let Err(source) = consumed {
            // A consumer error caused by the command failing is better told by its stderr;
            // one that made us kill the command (SIGKILL) is told by itself.
            let killed_here =
                std::os::unix::process::ExitStatusExt::signal(&status) == Some(libc::SIGKILL);
            if !status.success() && !killed_here {
                return Err(self.failure(argv, status, stderr));
            }
            return Err(NodeError::Io {
                node: self.name.clone(),
                command,
                source,
            });
        }
        Ok((status, stderr))
    }
}

fn wait(child: &mut Child) -> std::io::Result<ExitStatus> {
    child.wait()
}

fn collect_stderr(mut err: impl Read, buf: &Mutex<Vec<u8>>) {
    let mut chunk = [0u8; 8192];
    loop {
        match err.read(&mut chunk) {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                let mut b = buf.lock().unwrap_or_else(|p| p.into_inner());
                b.extend_from_slice(&chunk[..n]);
                if b.len() > STDERR_KEEP {
                    let cut = b.len() - STDERR_KEEP;
                    b.drain(..cut);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn captured_output_is_bounded() {
        let mut buf = Vec::new();
        read_bounded(&mut &[7u8; 100][..], &mut buf, 100).unwrap();
        assert_eq!(buf.len(), 100);
        let mut buf = Vec::new();
        let e = read_bounded(&mut &[7u8; 101][..], &mut buf, 100).unwrap_err();
        assert!(e.to_string().contains("printed more than"), "{e}");
        assert_eq!(buf.len(), 101, "never more than the limit and one byte");
    }

    #[test]
    fn a_command_printing_too_much_is_stopped_naming_node_and_command() {
        // `yes` never ends: only the bound stops it (long before the timeout).
        let node = Node::local("head node");
        let e = node
            .run(
                &argv(&["yes", "0123456789abcdef0123456789abcdef"]),
                Duration::from_secs(600),
                &CancellationToken::new(),
            )
            .unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.starts_with("head node: failed to read the output of `yes ")
                && msg.contains("printed more than 128 MiB"),
            "{msg}"
        );
    }

    #[test]
    fn quoting_is_safe_for_the_remote_shell() {
        assert_eq!(shell_quote("abc"), "abc");
        assert_eq!(shell_quote("/srv/hops/x.sh"), "/srv/hops/x.sh");
        assert_eq!(shell_quote(""), "''");
        assert_eq!(shell_quote("a b"), "'a b'");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
        assert_eq!(shell_quote("$(rm -rf /)"), "'$(rm -rf /)'");
        assert_eq!(
            remote_command_line(&argv(&["ndb_mgm", "-e", "START BACKUP 5 WAIT COMPLETED"])),
            "ndb_mgm -e 'START BACKUP 5 WAIT COMPLETED'"
        );
    }

    #[test]
    fn quoted_arguments_survive_a_real_shell() {
        let tricky = argv(&[
            "printf",
            "%s\\n",
            "a b",
            "it's",
            "$HOME",
            "; echo no",
            "\"q\"",
            "*",
        ]);
        let line = remote_command_line(&tricky);
        let out = Command::new("sh").arg("-c").arg(&line).output().unwrap();
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            "a b\nit's\n$HOME\n; echo no\n\"q\"\n*\n"
        );
    }

    #[test]
    fn ssh_argv_has_strict_options_and_ends_options_before_the_host() {
        let s = SshSettings {
            ssh: "ssh".into(),
            user: "root".into(),
            port: 2222,
            identity_file: "/etc/hopsdr/id_ed25519".into(),
            known_hosts: "/etc/hopsdr/known_hosts".into(),
            connect_timeout: Duration::from_secs(10),
        };
        let a = ssh_argv(&s, "-oProxyCommand=evil", &argv(&["true"]));
        assert!(a.contains(&"BatchMode=yes".to_string()));
        assert!(a.contains(&"StrictHostKeyChecking=yes".to_string()));
        let dd = a.iter().position(|x| x == "--").unwrap();
        assert_eq!(a[dd + 1], "-oProxyCommand=evil");
    }

    #[test]
    fn local_run_success_failure_timeout_cancel() {
        let n = Node::local("head");
        let c = CancellationToken::new();
        let out = n
            .run(
                &argv(&["sh", "-c", "echo hi; echo warn >&2"]),
                Duration::from_secs(10),
                &c,
            )
            .unwrap();
        assert_eq!(out.stdout, "hi\n");
        assert_eq!(out.stderr, "warn\n");

        let e = n
            .run(
                &argv(&["sh", "-c", "echo broken >&2; exit 3"]),
                Duration::from_secs(10),
                &c,
            )
            .unwrap_err();
        let msg = e.to_string();
        assert!(msg.starts_with("head: `sh -c"), "{msg}");
        assert!(
            msg.contains("exit status: 3") && msg.ends_with(": broken"),
            "{msg}"
        );

        let t = Instant::now();
        let e = n
            .run(&argv(&["sleep", "30"]), Duration::from_millis(200), &c)
            .unwrap_err();
        assert!(matches!(e, NodeError::Timeout { .. }), "{e}");
        assert!(t.elapsed() < Duration::from_secs(10));

        let c2 = CancellationToken::new();
        let c3 = c2.clone();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(100));
            c3.cancel();
        });
        let e = n
            .run(&argv(&["sleep", "30"]), Duration::from_secs(60), &c2)
            .unwrap_err();
        assert!(matches!(e, NodeError::Cancelled { .. }), "{e}");

        let e = n
            .run(&argv(&["/nonexistent/tool"]), Duration::from_secs(5), &c)
            .unwrap_err();
        assert!(
            e.to_string()
                .contains("failed to start `/nonexistent/tool`"),
            "{e}"
        );
    }

    #[test]
    fn input_reaches_stdin() {
        let n = Node::local("head");
        let mut got = String::new();
        n.stream_with_input(
            &argv(&["tr", "a-z", "A-Z"]),
            Some(b"blk_1\0blk_2".to_vec()),
            Duration::from_secs(10),
            &CancellationToken::new(),
            |r| r.read_to_string(&mut got).map(|_| ()),
        )
        .unwrap();
        assert_eq!(got, "BLK_1\0BLK_2");
    }

    #[test]
    fn run_status_returns_non_zero_exits_as_output() {
        let n = Node::local("head");
        let out = n
            .run_status(
                &argv(&["sh", "-c", "echo Backup failed; exit 255"]),
                Duration::from_secs(10),
                &CancellationToken::new(),
            )
            .unwrap();
        assert_eq!(out.status, Some(255));
        assert_eq!(out.stdout, "Backup failed\n");
    }
}
