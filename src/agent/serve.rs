//! The agent's side of a session (`hopsdr agent --serve`): greet, check the head's version,
//! answer requests until the head finishes, cancels or goes away.
//!
//! The agent's roles and roots come from its own command line: with an ssh forced command they
//! are the operator's, whatever the head asked for. Requests only ever name what the command line
//! allows. Its standard output carries the protocol alone; diagnostics go to standard error
//! (which the head keeps for its error messages). The session ends at the end of its input: sshd
//! closes it when the connection or hopsdrd goes away.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use zeroize::Zeroizing;

use super::probe;
use super::proto::{self, Job, Msg, ProtoError, Role, RootInfo, PROTOCOL};
use super::restore;
use super::secrets::{Secrets, KIND_SECRETS};
use super::upload;
use super::volume;

/// What the agent's command line allows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Allowed {
    pub roles: Vec<Role>,
    /// HopsFS volumes.
    pub roots: Vec<PathBuf>,
    /// The RonDB data node's BackupDataDir.
    pub backup_dir: Option<PathBuf>,
}

/// How a session ended badly.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("the session with the head failed: {0}")]
    Proto(#[from] ProtoError),
    #[error("{0}")]
    Refused(String),
    #[error(transparent)]
    Secrets(#[from] super::secrets::SecretsError),
    #[error("the head sent {got} where {expected} was expected")]
    Unexpected { expected: &'static str, got: String },
}

impl ServeError {
    /// The agent's exit status: 3 for a refusal (another version), 1 otherwise.
    pub fn exit_code(&self) -> i32 {
        match self {
            ServeError::Refused(_) => 3,
            _ => 1,
        }
    }
}

/// How a session ended well.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// The head said `Finish`.
    Finished,
    /// The head said `Cancel`.
    Cancelled,
    /// The head closed the stream without a word (it went away).
    Gone,
}

/// The version this agent is, and whether a forced command replaced the head's command.
#[derive(Debug, Clone)]
pub struct Identity {
    pub version: String,
    pub host: String,
    pub uid: u32,
    pub forced: bool,
    /// Whether the session's input is this process's standard input, which a long request
    /// watches to stop as soon as the head goes away or sends something (a cancel).
    pub watch_stdin: bool,
}

impl Identity {
    /// This process: the crate's version, the host name, the real uid; `forced` when sshd ran
    /// another command than the head sent (`SSH_ORIGINAL_COMMAND` is set only then).
    pub fn current() -> Identity {
        Identity {
            version: env!("CARGO_PKG_VERSION").to_string(),
            host: nix::unistd::gethostname()
                .ok()
                .and_then(|h| h.into_string().ok())
                .unwrap_or_default(),
            uid: nix::unistd::getuid().as_raw(),
            forced: std::env::var_os("SSH_ORIGINAL_COMMAND").is_some(),
            watch_stdin: true,
        }
    }
}

/// Serves one session on `input`/`output`.
pub fn serve(
    allowed: &Allowed,
    me: &Identity,
    input: &mut dyn Read,
    output: &mut dyn Write,
) -> Result<Ended, ServeError> {
    output.write_all(proto::MAGIC).map_err(ProtoError::from)?;
    proto::write_msg(
        output,
        &Msg::Hello {
            name: "hopsdr-agent".into(),
            version: me.version.clone(),
            protocol: PROTOCOL,
            host: me.host.clone(),
            uid: me.uid,
            roles: allowed.roles.clone(),
            roots: allowed
                .roots
                .iter()
                .map(|p| p.display().to_string())
                .collect(),
            backup_dir: allowed.backup_dir.as_ref().map(|p| p.display().to_string()),
            forced: me.forced,
        },
    )?;
    let (job, store, secrets) = match proto::read_msg(input)? {
        None => return Ok(Ended::Gone),
        Some(Msg::Start {
            version,
            protocol,
            job,
            store,
            secrets,
            bandwidth,
        }) => {
            // Refused at the start: the head is told why, then the session ends.
            let refuse = |output: &mut dyn Write, message: String| {
                let _ = proto::write_msg(
                    output,
                    &Msg::Error {
                        req: None,
                        step: "start".into(),
                        path: None,
                        message: message.clone(),
                    },
                );
                ServeError::Refused(message)
            };
            if version != me.version || protocol != PROTOCOL {
                let message = format!(
                    "the agent on {} is hopsdr {} (protocol {PROTOCOL}) and hopsdrd is hopsdr {version} (protocol {protocol}): install hopsdr {version} on {} (every node needs the version of the head node)",
                    me.host, me.version, me.host
                );
                return Err(refuse(output, message));
            }
            match super::limits::pacer_for(job, bandwidth.as_ref()) {
                Ok(p) => super::limits::set(p),
                Err(message) => return Err(refuse(output, message)),
            }
            (job, store, secrets)
        }
        Some(m) => {
            return Err(ServeError::Unexpected {
                expected: "start",
                got: msg_name(&m),
            })
        }
    };
    let secrets = if secrets {
        read_secrets(input)?
    } else {
        Secrets::default()
    };
    loop {
        let Some(msg) = proto::read_msg(input)? else {
            return Ok(Ended::Gone);
        };
        let reply = match msg {
            Msg::Ping { req } => Msg::Pong { req },
            Msg::Describe { req } => Msg::Described {
                req,
                roots: allowed.roots.iter().map(|r| describe(r, false)).collect(),
                backup_dir: allowed.backup_dir.as_ref().map(|d| describe(d, false)),
            },
            Msg::Probe { req } => probe::probe(req, store.as_ref(), &secrets),
            Msg::Upload {
                req,
                dir,
                chunk_size,
                compression_level,
            } => {
                let done = match (job, allowed.backup_dir.as_ref()) {
                    (Job::Backup, Some(base)) => upload::resolve(base, &dir).and_then(|d| {
                        upload::upload(
                            req,
                            &d,
                            chunk_size,
                            compression_level,
                            store.as_ref(),
                            &secrets,
                            input,
                            output,
                        )
                    }),
                    (Job::Backup, None) => Err(upload::UploadError {
                        path: None,
                        message: "the agent has no --backup-dir (role rondb) to upload from".into(),
                    }),
                    (Job::Check | Job::Restore, _) => Err(upload::UploadError {
                        path: None,
                        message: "only a backup session uploads".into(),
                    }),
                };
                done.unwrap_or_else(|e| Msg::Error {
                    req: Some(req),
                    step: "upload".into(),
                    path: e.path,
                    message: e.message,
                })
            }
            Msg::UploadList {
                req,
                volume,
                pin,
                chunk_size,
                compression_level,
                list_bytes,
            } => {
                let done = volume::receive_list(input, list_bytes).and_then(|list| {
                    if job != Job::Backup {
                        return Err(upload::UploadError {
                            path: None,
                            message: "only a backup session uploads".into(),
                        });
                    }
                    let pin = volume::resolve_pin(&allowed.roots, &volume, &pin)?;
                    volume::upload_list(
                        req,
                        &pin,
                        list,
                        chunk_size,
                        compression_level,
                        store.as_ref(),
                        &secrets,
                        input,
                        output,
                    )
                });
                done.unwrap_or_else(|e| Msg::Error {
                    req: Some(req),
                    step: "upload".into(),
                    path: e.path,
                    message: e.message,
                })
            }
            Msg::WriteVolume {
                req,
                volume,
                chunk_size,
                entries_bytes,
                check_only,
                resume,
            } => {
                let done = volume::receive_list(input, entries_bytes).and_then(|list| {
                    if job != Job::Restore {
                        return Err(upload::UploadError {
                            path: None,
                            message: "only a restore session writes volumes".into(),
                        });
                    }
                    let head = restore::HeadWatch::start(me.watch_stdin);
                    restore::write_volume(
                        &head,
                        req,
                        &allowed.roots,
                        &volume,
                        list,
                        chunk_size,
                        match (check_only, resume) {
                            (true, _) => restore::Writing::CheckOnly,
                            (false, true) => restore::Writing::Resume,
                            (false, false) => restore::Writing::New,
                        },
                        store.as_ref(),
                        &secrets,
                        output,
                    )
                });
                done.unwrap_or_else(|e| Msg::Error {
                    req: Some(req),
                    step: if check_only { "check" } else { "write-back" }.into(),
                    path: e.path,
                    message: e.message,
                })
            }
            Msg::Finish => {
                proto::write_msg(output, &Msg::Bye)?;
                return Ok(Ended::Finished);
            }
            Msg::Cancel { .. } => {
                proto::write_msg(output, &Msg::Cancelled)?;
                return Ok(Ended::Cancelled);
            }
            other => Msg::Error {
                req: None,
                step: "request".into(),
                path: None,
                message: format!("the agent does not take {} here", msg_name(&other)),
            },
        };
        proto::write_msg(output, &reply)?;
    }
}

/// The secrets frame that `Start` announced, its payload wiped once read.
fn read_secrets(input: &mut dyn Read) -> Result<Secrets, ServeError> {
    match proto::read_frame(input)? {
        Some((KIND_SECRETS, payload)) => {
            let payload = Zeroizing::new(payload);
            Ok(Secrets::decode(&payload)?)
        }
        Some((kind, payload)) => Err(ServeError::Unexpected {
            expected: "the secrets frame",
            got: match proto::decode_msg(kind, &payload) {
                Ok(m) => msg_name(&m),
                Err(_) => format!("a frame of type {kind:#04x}"),
            },
        }),
        None => Err(ServeError::Unexpected {
            expected: "the secrets frame",
            got: "the end of the stream".into(),
        }),
    }
}

/// The message's tag, for errors.
fn msg_name(m: &Msg) -> String {
    serde_json::to_value(m)
        .ok()
        .and_then(|v| v.get("t").and_then(|t| t.as_str()).map(str::to_string))
        .unwrap_or_else(|| "a message".into())
}

/// A root's state as this process sees it: a directory it can read (and, with `write`, write).
pub fn describe(path: &Path, write: bool) -> RootInfo {
    let mut info = RootInfo {
        path: path.display().to_string(),
        problem: None,
        free_bytes: None,
        total_bytes: None,
    };
    match std::fs::metadata(path) {
        Err(e) => {
            info.problem = Some(format!("cannot be read: {e}"));
            return info;
        }
        Ok(m) if !m.is_dir() => {
            info.problem = Some("is not a directory".into());
            return info;
        }
        Ok(_) => {}
    }
    let mut mode = nix::unistd::AccessFlags::R_OK | nix::unistd::AccessFlags::X_OK;
    if write {
        mode |= nix::unistd::AccessFlags::W_OK;
    }
    if let Err(e) = nix::unistd::access(path, mode) {
        info.problem = Some(format!(
            "is not {} by uid {}: {e}",
            if write { "writable" } else { "readable" },
            nix::unistd::getuid()
        ));
    }
    if let Ok(s) = nix::sys::statvfs::statvfs(path) {
        // fsblkcnt_t and c_ulong are u64 on the 64-bit Linux targets hopsdr is built for.
        let frag = s.fragment_size();
        info.free_bytes = Some(s.blocks_available() * frag);
        info.total_bytes = Some(s.blocks() * frag);
    }
    info
}

#[cfg(test)]
mod tests {
    use super::*;

    fn me(version: &str) -> Identity {
        Identity {
            version: version.into(),
            host: "dn1".into(),
            uid: 1000,
            forced: false,
            watch_stdin: false,
        }
    }

    fn script(msgs: &[Msg]) -> Vec<u8> {
        let mut buf = Vec::new();
        for m in msgs {
            proto::write_msg(&mut buf, m).unwrap();
        }
        buf
    }

    fn replies(out: &[u8]) -> Vec<Msg> {
        let mut r = out;
        proto::read_magic(&mut r).unwrap();
        let mut v = Vec::new();
        while let Some(m) = proto::read_msg(&mut r).unwrap() {
            v.push(m);
        }
        v
    }

    fn start(version: &str) -> Msg {
        Msg::Start {
            version: version.into(),
            protocol: PROTOCOL,
            job: Job::Check,
            store: None,
            secrets: false,
            bandwidth: None,
        }
    }

    #[test]
    fn a_session_greets_answers_and_says_bye() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing");
        let allowed = Allowed {
            roles: vec![Role::Hopsfs],
            roots: vec![dir.path().to_path_buf(), missing.clone()],
            backup_dir: None,
        };
        let input = script(&[
            start("1.2.3"),
            Msg::Ping { req: 1 },
            Msg::Describe { req: 2 },
            Msg::Bye,
            Msg::Finish,
            Msg::Ping { req: 3 },
        ]);
        let mut out = Vec::new();
        let ended = serve(&allowed, &me("1.2.3"), &mut &input[..], &mut out).unwrap();
        assert_eq!(ended, Ended::Finished);
        let r = replies(&out);
        assert_eq!(r.len(), 5, "{r:?}");
        match &r[0] {
            Msg::Hello {
                version,
                roles,
                roots,
                ..
            } => {
                assert_eq!(version, "1.2.3");
                assert_eq!(roles, &[Role::Hopsfs]);
                assert_eq!(roots.len(), 2);
            }
            m => panic!("{m:?}"),
        }
        assert_eq!(r[1], Msg::Pong { req: 1 });
        match &r[2] {
            Msg::Described { req: 2, roots, .. } => {
                assert_eq!(roots[0].problem, None);
                assert!(roots[0].total_bytes.unwrap() > 0);
                assert!(
                    roots[1]
                        .problem
                        .as_deref()
                        .unwrap()
                        .contains("cannot be read"),
                    "{roots:?}"
                );
            }
            m => panic!("{m:?}"),
        }
        assert!(matches!(&r[3], Msg::Error { message, .. } if message.contains("bye")));
        assert_eq!(r[4], Msg::Bye, "nothing answered after finish");
    }

    #[test]
    fn another_version_is_refused_with_what_to_install() {
        let allowed = Allowed {
            roles: vec![Role::Rondb],
            roots: vec![],
            backup_dir: Some("/x".into()),
        };
        let input = script(&[start("9.9.9"), Msg::Ping { req: 1 }]);
        let mut out = Vec::new();
        let e = serve(&allowed, &me("1.2.3"), &mut &input[..], &mut out).unwrap_err();
        assert_eq!(e.exit_code(), 3);
        assert!(e.to_string().contains("install hopsdr 9.9.9 on dn1"), "{e}");
        let r = replies(&out);
        assert!(
            matches!(&r[1], Msg::Error { step, .. } if step == "start"),
            "{r:?}"
        );
        assert_eq!(r.len(), 2, "no pong after a refusal");
    }

    #[test]
    fn cancel_and_a_vanished_head_end_the_session() {
        let allowed = Allowed {
            roles: vec![Role::Rondb],
            roots: vec![],
            backup_dir: None,
        };
        let input = script(&[
            start("1"),
            Msg::Cancel {
                reason: "stop".into(),
            },
        ]);
        let mut out = Vec::new();
        assert_eq!(
            serve(&allowed, &me("1"), &mut &input[..], &mut out).unwrap(),
            Ended::Cancelled
        );
        assert_eq!(replies(&out).last(), Some(&Msg::Cancelled));
        let input = script(&[start("1")]);
        assert_eq!(
            serve(&allowed, &me("1"), &mut &input[..], &mut Vec::new()).unwrap(),
            Ended::Gone
        );
        // A first message that is not Start.
        let input = script(&[Msg::Ping { req: 1 }]);
        let e = serve(&allowed, &me("1"), &mut &input[..], &mut Vec::new()).unwrap_err();
        assert_eq!(e.to_string(), "the head sent ping where start was expected");
    }

    #[test]
    fn secrets_come_in_their_own_frame_right_after_start() {
        use crate::agent::secrets::Secrets;
        use crate::repository::crypto::Keyring;
        let allowed = Allowed {
            roles: vec![Role::Rondb],
            roots: vec![],
            backup_dir: Some("/x".into()),
        };
        let mut ring = Keyring::from_master(&[1u8; 32]);
        ring.add_data_key(1, &[2u8; 32]);
        let secrets = Secrets {
            s3: None,
            keys: Some(ring.for_agent(&[1])),
        };
        let announce = Msg::Start {
            version: "1.2.3".into(),
            protocol: PROTOCOL,
            job: Job::Check,
            store: None,
            secrets: true,
            bandwidth: None,
        };
        let mut input = script(std::slice::from_ref(&announce));
        proto::write_frame(&mut input, KIND_SECRETS, &secrets.encode()).unwrap();
        proto::write_msg(&mut input, &Msg::Probe { req: 4 }).unwrap();
        proto::write_msg(&mut input, &Msg::Finish).unwrap();
        let mut out = Vec::new();
        serve(&allowed, &me("1.2.3"), &mut &input[..], &mut out).unwrap();
        let r = replies(&out);
        assert_eq!(
            r[1],
            Msg::Probed {
                req: 4,
                store: None,
                name_check: Some(ring.blob_hash(probe::NAME_PROBE).to_hex().to_string()),
            },
            "no bucket given: none tried; the keys name the probe as the head's"
        );

        // A message where the secrets were announced, or a damaged frame: the session ends.
        let input = script(&[announce.clone(), Msg::Probe { req: 1 }]);
        let e = serve(&allowed, &me("1.2.3"), &mut &input[..], &mut Vec::new()).unwrap_err();
        assert_eq!(
            e.to_string(),
            "the head sent probe where the secrets frame was expected"
        );
        let mut input = script(&[announce]);
        proto::write_frame(&mut input, KIND_SECRETS, &[2, 0, 0, 0, 9, b's']).unwrap();
        let e = serve(&allowed, &me("1.2.3"), &mut &input[..], &mut Vec::new()).unwrap_err();
        assert!(e.to_string().contains("cut short in field 2"), "{e}");
        assert_eq!(e.exit_code(), 1);
    }
}
