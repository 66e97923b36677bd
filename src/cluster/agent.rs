//! A session with the hopsdr agent on a node: started through the node's transport (a child on
//! the head node, OpenSSH elsewhere) as `<[agents] binary> agent --serve` plus the roles and
//! roots the head expects; the agent's greeting is read and its version checked before anything
//! else; then requests and their replies, each awaited with the session's timeout.
//!
//! Failures name the node and say what to do: something printed before the greeting (a shell
//! start-up file), no agent binary on the node, another version, an agent that went quiet. A
//! session that is dropped without [`Session::finish`] kills the agent's process.

use std::io::{BufReader, BufWriter};
use std::path::Path;
use std::process::{Child, ChildStdin};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use super::node::{Node, NodeAddress, NodeError};
use crate::agent::proto::{self, AgentBandwidth, Job, Msg, ProtoError, Role, S3Store, PROTOCOL};
use crate::agent::secrets::{Secrets, KIND_SECRETS};

/// Frames read from the agent ahead of the session's reads.
const READ_AHEAD: usize = 16;

/// A frame from the agent.
enum Incoming {
    Msg(Box<Msg>),
    /// A [`proto::KIND_BYTES`] frame's payload.
    Bytes(Vec<u8>),
}

/// How long a finished agent may take to exit before it is killed.
const EXIT_GRACE: Duration = Duration::from_secs(10);

/// The most of the agent's stderr kept for messages.
const STDERR_KEEP: usize = 16 * 1024;

/// What the head asks the agent to serve: its command line (which a forced command may replace).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Request {
    pub roles: Vec<Role>,
    pub roots: Vec<String>,
    pub backup_dir: Option<String>,
    /// The node's bandwidth timetable, sent in `Start` (not on the command line).
    pub bandwidth: Option<AgentBandwidth>,
}

/// The bandwidth timetable of the agent on `host` (`[agents] bandwidth` or its
/// `[[agents.nodes]]`), as an agent is given it; `None` when it limits nothing.
pub fn bandwidth(
    agents: &crate::config::AgentsSettings,
    host: &crate::config::NodeHost,
) -> Option<AgentBandwidth> {
    let t = agents.bandwidth_of(host);
    (!t.is_off()).then(|| AgentBandwidth {
        timetable: t.to_string(),
        timezone: agents.timezone.name().to_string(),
    })
}

impl Request {
    /// The agent's argv: `<binary> agent --serve`, each role, `--root` per volume and
    /// `--backup-dir`.
    pub fn argv(&self, binary: &Path) -> Vec<String> {
        let mut v = vec![
            binary.display().to_string(),
            "agent".into(),
            "--serve".into(),
        ];
        for r in &self.roles {
            v.push("--role".into());
            v.push(r.as_str().into());
        }
        for r in &self.roots {
            v.push("--root".into());
            v.push(r.clone());
        }
        if let Some(d) = &self.backup_dir {
            v.push("--backup-dir".into());
            v.push(d.clone());
        }
        v
    }
}

/// What a node gets to reach the repository: its bucket (none for a local repository) and the
/// secrets frame (credentials, agent keys).
#[derive(Debug, Default)]
pub struct Access {
    pub store: Option<S3Store>,
    pub secrets: Secrets,
}

/// What every agent is given to reach the repository: for a repository in S3 the bucket and
/// its credentials, for an encrypted one `keys` (the blob-name key and the data keys the job
/// needs), all in the secrets frame; `None` for a plaintext local repository (nothing to give).
pub fn access(
    repository: &crate::config::RepositorySettings,
    keys: Option<crate::repository::crypto::AgentKeys>,
) -> Result<Option<Access>, crate::repository::StorageError> {
    use crate::agent::secrets::S3Secret;
    use crate::config::StoreSettings;
    let (store, s3) = match &repository.store {
        StoreSettings::Local { .. } => (None, None),
        StoreSettings::S3(s) => {
            let o = crate::repository::S3Options::from_settings(s)?;
            let store = S3Store {
                endpoint: s.endpoint.clone(),
                region: s.region.clone(),
                bucket: s.bucket.clone(),
                prefix: s.prefix.clone(),
                path_style: s.path_style,
                ca_bundle_pem: o
                    .ca_bundle_pem
                    .as_ref()
                    .map(|p| String::from_utf8_lossy(p).into_owned()),
                part_size: s.part_size,
                parallel_parts: s.parallel_parts,
                object_lock: s.object_lock.map(|l| (l.mode, l.days)),
            };
            let secret = match (&s.access_key_id, o.secret_access_key) {
                (Some(id), Some(secret)) => Some(S3Secret {
                    access_key_id: id.clone().into(),
                    secret_access_key: secret.into(),
                    session_token: None,
                }),
                _ => None,
            };
            (Some(store), secret)
        }
    };
    if store.is_none() && keys.is_none() {
        return Ok(None);
    }
    Ok(Some(Access {
        store,
        secrets: Secrets { s3, keys },
    }))
}

/// The agent's greeting.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Hello {
    pub version: String,
    pub host: String,
    pub uid: u32,
    pub roles: Vec<Role>,
    pub roots: Vec<String>,
    pub backup_dir: Option<String>,
    pub forced: bool,
}

/// Why a session failed.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error(transparent)]
    Node(#[from] NodeError),
    #[error("{node}: the hopsdr agent did not start: {reason}")]
    Start { node: String, reason: String },
    #[error("{node}: the agent is hopsdr {agent} (protocol {agent_protocol}) and hopsdrd is hopsdr {ours} (protocol {PROTOCOL}): install hopsdr {ours} on that node (every node needs the version of the head node)")]
    Version {
        node: String,
        agent: String,
        agent_protocol: u32,
        ours: String,
    },
    #[error("{node}: the agent sent nothing within {timeout:?} (hopsdrd was waiting for {waiting_for}); it was stopped")]
    Timeout {
        node: String,
        waiting_for: String,
        timeout: Duration,
    },
    #[error("{node}: the agent failed at {step}{}: {message}", path_suffix(.path))]
    Remote {
        node: String,
        step: String,
        path: Option<String>,
        message: String,
    },
    #[error("{node}: the agent's stream broke: {source}{}", stderr_suffix(.stderr))]
    Proto {
        node: String,
        source: ProtoError,
        stderr: String,
    },
    #[error("{node}: the agent sent {got} where {expected} was expected")]
    Unexpected {
        node: String,
        expected: String,
        got: String,
    },
    #[error("{node}: the agent ended the session ({status}){}", stderr_suffix(.stderr))]
    Ended {
        node: String,
        status: String,
        stderr: String,
    },
    #[error("{node}: cancelled")]
    Cancelled { node: String },
}

fn path_suffix(p: &Option<String>) -> String {
    p.as_ref().map(|p| format!(" ({p})")).unwrap_or_default()
}

fn stderr_suffix(s: &str) -> String {
    let s = s.trim();
    if s.is_empty() {
        String::new()
    } else {
        format!("; its stderr: {s}")
    }
}

/// One agent session.
pub struct Session {
    node: Node,
    child: Child,
    input: Option<BufWriter<ChildStdin>>,
    replies: Receiver<Result<Incoming, ProtoError>>,
    stderr: Arc<Mutex<Vec<u8>>>,
    hello: Hello,
    timeout: Duration,
    next_req: u32,
}

impl Session {
    /// Starts the agent on `node` for `job` and checks its greeting; `access`, when given, is
    /// sent right after `Start` (its secrets in their own frame, on the agent's standard input
    /// only). `timeout` bounds every wait for the agent (the greeting too, so an ssh connection
    /// that hangs is given up).
    pub fn open(
        node: &Node,
        binary: &Path,
        request: &Request,
        job: Job,
        access: Option<&Access>,
        timeout: Duration,
        cancel: &CancellationToken,
    ) -> Result<Session, AgentError> {
        let argv = request.argv(binary);
        let mut child = node.spawn_piped(&argv)?;
        let stdin = child.stdin.take().expect("stdin is piped");
        let stdout = child.stdout.take().expect("stdout is piped");
        let stderr_pipe = child.stderr.take().expect("stderr is piped");
        let stderr = Arc::new(Mutex::new(Vec::new()));
        {
            let buf = stderr.clone();
            std::thread::spawn(move || keep_stderr(stderr_pipe, &buf));
        }
        // Bounded: a pack streamed by the agent waits in its pipe, not in this process.
        let (tx, replies) = std::sync::mpsc::sync_channel(READ_AHEAD);
        std::thread::spawn(move || {
            let mut r = BufReader::new(stdout);
            if let Err(e) = proto::read_magic(&mut r) {
                let _ = tx.send(Err(e));
                return;
            }
            loop {
                let frame = match proto::read_frame(&mut r) {
                    Ok(Some((proto::KIND_BYTES, b))) => Ok(Incoming::Bytes(b)),
                    Ok(Some((kind, payload))) => {
                        proto::decode_msg(kind, &payload).map(|m| Incoming::Msg(Box::new(m)))
                    }
                    Ok(None) => return,
                    Err(e) => Err(e),
                };
                let failed = frame.is_err();
                if tx.send(frame).is_err() || failed {
                    return;
                }
            }
        });
        let mut s = Session {
            node: node.clone(),
            child,
            input: Some(BufWriter::new(stdin)),
            replies,
            stderr,
            hello: Hello::default(),
            timeout,
            next_req: 1,
        };
        let first = s
            .next("greeting", cancel)
            .map_err(|e| s.start_error(e, binary))?;
        match first {
            Msg::Hello {
                version,
                protocol,
                host,
                uid,
                roles,
                roots,
                backup_dir,
                forced,
                ..
            } => {
                let ours = env!("CARGO_PKG_VERSION");
                if version != ours || protocol != PROTOCOL {
                    return Err(AgentError::Version {
                        node: s.node.name.clone(),
                        agent: version,
                        agent_protocol: protocol,
                        ours: ours.into(),
                    });
                }
                s.hello = Hello {
                    version,
                    host,
                    uid,
                    roles,
                    roots,
                    backup_dir,
                    forced,
                };
            }
            m => return Err(s.unexpected("greeting", &m)),
        }
        s.send(&Msg::Start {
            version: env!("CARGO_PKG_VERSION").into(),
            protocol: PROTOCOL,
            job,
            store: access.and_then(|a| a.store.clone()),
            secrets: access.is_some(),
            bandwidth: request.bandwidth.clone(),
        })?;
        if let Some(a) = access {
            s.send_frame(KIND_SECRETS, &a.secrets.encode())?;
        }
        Ok(s)
    }

    /// The agent's greeting: its version, host, uid, roles and roots.
    pub fn hello(&self) -> &Hello {
        &self.hello
    }

    /// A fresh request number.
    pub fn req(&mut self) -> u32 {
        let r = self.next_req;
        self.next_req += 1;
        r
    }

    /// Sends `msg` (a request carrying `req`) and returns the reply naming `req`; an `Error`
    /// reply becomes [`AgentError::Remote`].
    pub fn request(
        &mut self,
        req: u32,
        msg: &Msg,
        what: &str,
        cancel: &CancellationToken,
    ) -> Result<Msg, AgentError> {
        self.send(msg)?;
        let reply = self.next(what, cancel)?;
        match &reply {
            Msg::Error {
                req: r,
                step,
                path,
                message,
            } if r.is_none() || *r == Some(req) => Err(AgentError::Remote {
                node: self.node.name.clone(),
                step: step.clone(),
                path: path.clone(),
                message: message.clone(),
            }),
            Msg::Pong { req: r } | Msg::Described { req: r, .. } | Msg::Probed { req: r, .. }
                if *r == req =>
            {
                Ok(reply)
            }
            _ => Err(self.unexpected(what, &reply)),
        }
    }

    /// Ends the session: `Finish`, the agent's `Bye`, its exit.
    pub fn finish(mut self, cancel: &CancellationToken) -> Result<(), AgentError> {
        self.send(&Msg::Finish)?;
        match self.next("goodbye", cancel)? {
            Msg::Bye => {}
            m => return Err(self.unexpected("goodbye", &m)),
        }
        drop(self.input.take());
        self.reap()
    }

    /// Sends one message (a request, or the answer to one of the agent's).
    pub fn send(&mut self, msg: &Msg) -> Result<(), AgentError> {
        self.write(|w| proto::write_msg(w, msg))
    }

    /// The agent's next message, whatever it is (within the timeout): for exchanges where the
    /// agent asks too.
    pub fn next_msg(
        &mut self,
        waiting_for: &str,
        cancel: &CancellationToken,
    ) -> Result<Msg, AgentError> {
        self.next(waiting_for, cancel)
    }

    /// The node's name, for messages.
    pub fn node_name(&self) -> &str {
        &self.node.name
    }

    /// Sends bytes the agent expects after a request (at most [`proto::BYTES_PER_FRAME`] per
    /// call), as one byte frame.
    pub fn send_bytes(&mut self, bytes: &[u8]) -> Result<(), AgentError> {
        self.send_frame(proto::KIND_BYTES, bytes)
    }

    /// Sends the `len` bytes of `file` (from where it is) as byte frames: what a request that
    /// announced them expects.
    pub fn send_file(&mut self, file: std::fs::File, len: u64) -> Result<(), AgentError> {
        let node = self.node.name.clone();
        let local = |e: std::io::Error| AgentError::Remote {
            node: node.clone(),
            step: "sending a list".into(),
            path: None,
            message: format!("reading it on the head node: {e}"),
        };
        let mut r = file;
        proto::send_in_frames(&mut r, len, |b| self.send_bytes(b), local)
    }

    /// Sends one frame of another type than a message, flushed.
    fn send_frame(&mut self, kind: u8, payload: &[u8]) -> Result<(), AgentError> {
        self.write(|w| {
            proto::write_frame(w, kind, payload)?;
            std::io::Write::flush(w)?;
            Ok(())
        })
    }

    fn write(
        &mut self,
        f: impl FnOnce(&mut BufWriter<ChildStdin>) -> Result<(), ProtoError>,
    ) -> Result<(), AgentError> {
        let Some(w) = self.input.as_mut() else {
            return Err(self.ended());
        };
        if let Err(e) = f(w) {
            // A write to an agent that exited fails with a broken pipe: its exit says more.
            return Err(match e {
                ProtoError::Io(ref io) if io.kind() == std::io::ErrorKind::BrokenPipe => {
                    self.ended()
                }
                e => AgentError::Proto {
                    node: self.node.name.clone(),
                    source: e,
                    stderr: self.stderr_text(),
                },
            });
        }
        Ok(())
    }

    /// The agent's next message, within the timeout, or why there is none.
    fn next(&mut self, waiting_for: &str, cancel: &CancellationToken) -> Result<Msg, AgentError> {
        match self.incoming(waiting_for, cancel)? {
            Incoming::Msg(m) => Ok(*m),
            Incoming::Bytes(b) => Err(AgentError::Unexpected {
                node: self.node.name.clone(),
                expected: waiting_for.into(),
                got: format!("{} bytes of data", b.len()),
            }),
        }
    }

    /// The next [`proto::KIND_BYTES`] frame's payload (within the timeout).
    pub fn next_bytes(
        &mut self,
        waiting_for: &str,
        cancel: &CancellationToken,
    ) -> Result<Vec<u8>, AgentError> {
        match self.incoming(waiting_for, cancel)? {
            Incoming::Bytes(b) => Ok(b),
            Incoming::Msg(m) => Err(self.unexpected(waiting_for, &m)),
        }
    }

    /// The agent's next frame, within the timeout, or why there is none.
    fn incoming(
        &mut self,
        waiting_for: &str,
        cancel: &CancellationToken,
    ) -> Result<Incoming, AgentError> {
        let deadline = Instant::now() + self.timeout;
        loop {
            if cancel.is_cancelled() {
                if let Some(w) = self.input.as_mut() {
                    let _ = proto::write_msg(
                        w,
                        &Msg::Cancel {
                            reason: "the job was cancelled".into(),
                        },
                    );
                }
                self.kill();
                return Err(AgentError::Cancelled {
                    node: self.node.name.clone(),
                });
            }
            let now = Instant::now();
            if now >= deadline {
                self.kill();
                return Err(AgentError::Timeout {
                    node: self.node.name.clone(),
                    waiting_for: waiting_for.into(),
                    timeout: self.timeout,
                });
            }
            match self
                .replies
                .recv_timeout((deadline - now).min(Duration::from_millis(100)))
            {
                Ok(Ok(m)) => return Ok(m),
                Ok(Err(e)) => {
                    // Let the process finish so that its status and stderr are complete.
                    let _ = self.wait_exit(Duration::from_secs(2));
                    return Err(AgentError::Proto {
                        node: self.node.name.clone(),
                        source: e,
                        stderr: self.stderr_text(),
                    });
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return Err(self.ended()),
            }
        }
    }

    /// The error for an agent whose output ended: its exit status and stderr, or ssh's failure.
    fn ended(&mut self) -> AgentError {
        let status = self.wait_exit(EXIT_GRACE);
        let stderr = self.stderr_text();
        if let (NodeAddress::Ssh { host, .. }, Some(255)) =
            (&self.node.address, status.as_ref().and_then(|s| s.code()))
        {
            return AgentError::Node(NodeError::Ssh {
                node: self.node.name.clone(),
                host: host.clone(),
                stderr,
            });
        }
        AgentError::Ended {
            node: self.node.name.clone(),
            status: status.map_or_else(|| "still running, stopped".into(), |s| s.to_string()),
            stderr,
        }
    }

    /// Why the agent did not greet, in the operator's words.
    fn start_error(&mut self, e: AgentError, binary: &Path) -> AgentError {
        let node = self.node.name.clone();
        match e {
            AgentError::Proto {
                source: ProtoError::Prelude { seen },
                ..
            } => AgentError::Start {
                node,
                reason: format!(
                    "it printed {seen:?} before the agent's greeting: a shell start-up file of the ssh user (~/.bashrc, /etc/profile.d) prints to stdout in non-interactive shells (make it quiet), or [agents] binary {} is not hopsdr",
                    binary.display()
                ),
            },
            AgentError::Proto {
                source: ProtoError::NoGreeting,
                ..
            }
            | AgentError::Ended { .. } => {
                let status = self.wait_exit(EXIT_GRACE);
                let stderr = self.stderr_text();
                let code = status.as_ref().and_then(|s| s.code());
                if let (NodeAddress::Ssh { host, .. }, Some(255)) = (&self.node.address, code) {
                    return AgentError::Node(NodeError::Ssh {
                        node,
                        host: host.clone(),
                        stderr,
                    });
                }
                let reason = match code {
                    Some(126) | Some(127) => format!(
                        "{} cannot be run there (exit {}): install the hopsdr package of version {} on that node, or set [agents] binary{}",
                        binary.display(),
                        code.unwrap_or_default(),
                        env!("CARGO_PKG_VERSION"),
                        stderr_suffix(&stderr)
                    ),
                    _ => format!(
                        "it exited before its greeting ({}){}",
                        status.map_or_else(|| "still running, stopped".into(), |s| s.to_string()),
                        stderr_suffix(&stderr)
                    ),
                };
                AgentError::Start { node, reason }
            }
            e => e,
        }
    }

    fn unexpected(&mut self, expected: &str, got: &Msg) -> AgentError {
        self.kill();
        AgentError::Unexpected {
            node: self.node.name.clone(),
            expected: expected.to_string(),
            got: serde_json::to_value(got)
                .ok()
                .and_then(|v| v.get("t").and_then(|t| t.as_str()).map(str::to_string))
                .unwrap_or_else(|| "a message".into()),
        }
    }

    fn stderr_text(&self) -> String {
        String::from_utf8_lossy(&self.stderr.lock().unwrap_or_else(|p| p.into_inner()))
            .trim()
            .to_string()
    }

    /// Waits up to `grace` for the process to exit; kills it if it does not.
    fn wait_exit(&mut self, grace: Duration) -> Option<std::process::ExitStatus> {
        drop(self.input.take());
        let deadline = Instant::now() + grace;
        loop {
            match self.child.try_wait() {
                Ok(Some(s)) => return Some(s),
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(10))
                }
                _ => {
                    self.kill();
                    return None;
                }
            }
        }
    }

    fn reap(&mut self) -> Result<(), AgentError> {
        match self.wait_exit(EXIT_GRACE) {
            Some(s) if s.success() => Ok(()),
            _ => Err(self.ended()),
        }
    }

    fn kill(&mut self) {
        drop(self.input.take());
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.kill();
        }
    }
}

fn keep_stderr(mut err: impl std::io::Read, buf: &Mutex<Vec<u8>>) {
    let mut chunk = [0u8; 4096];
    loop {
        match err.read(&mut chunk) {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                let mut b = buf.lock().unwrap_or_else(|p| p.into_inner());
                if b.len() < STDERR_KEEP {
                    let take = n.min(STDERR_KEEP - b.len());
                    b.extend_from_slice(&chunk[..take]);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_head_asks_for_what_it_expects_the_node_to_serve() {
        let r = Request {
            roles: vec![Role::Hopsfs, Role::Rondb],
            roots: vec!["/d/1".into(), "/d 2".into()],
            backup_dir: Some("/srv/ndb".into()),
            bandwidth: None,
        };
        assert_eq!(
            r.argv(Path::new("/usr/bin/hopsdr")),
            [
                "/usr/bin/hopsdr",
                "agent",
                "--serve",
                "--role",
                "hopsfs",
                "--role",
                "rondb",
                "--root",
                "/d/1",
                "--root",
                "/d 2",
                "--backup-dir",
                "/srv/ndb"
            ]
        );
    }
}
