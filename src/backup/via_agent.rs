//! A node's files stored by the node's own agent: a RonDB data node's directory (`Upload`) or
//! the files of a pinned HopsFS volume the head lists (`UploadList`). The head answers which
//! blobs the backup lacks (claiming them for that agent), adopts each pack the agent reports
//! stored (its tail read back from the bucket first, or received over the session for a local
//! repository) and records each file, replica and link the agent reports under
//! `<prefix>/<path>`. The head moves no content, only these messages.
//!
//! The agent's word is checked, not trusted: a file name is one plain path component, each of
//! its units must be in the repository or in this backup (stored, adopted or claimed), a pack
//! must be whole and hold only what was claimed for it, and the backup does not commit while a
//! claim is unreported.

use tokio_util::sync::CancellationToken;

use super::recorder::{Recorder, StoredReplica};
use crate::agent::proto::{AgentBandwidth, Msg, Stat};
use crate::cluster::agent::{Access, AgentError, Session};
use crate::ids::BlobId;
use crate::repository::{FileMeta, RepoError};

/// Why an agent's upload failed.
#[derive(Debug, thiserror::Error)]
pub enum ViaAgentError {
    #[error(transparent)]
    Agent(#[from] AgentError),
    #[error("{node}: {source}")]
    Repository {
        node: String,
        #[source]
        source: Box<RepoError>,
    },
    #[error("{node}: the agent reported {what}; refused")]
    Bad { node: String, what: String },
}

/// How the nodes' agents are started and what they are given (`[agents] enabled`).
#[derive(Debug, Clone, Copy)]
pub struct AgentRun<'a> {
    pub binary: &'a std::path::Path,
    pub timeout: std::time::Duration,
    pub access: &'a Access,
    /// For each node's bandwidth timetable.
    pub agents: &'a crate::config::AgentsSettings,
}

impl AgentRun<'_> {
    /// The bandwidth timetable of the agent on `node`.
    pub fn bandwidth(&self, node: &crate::cluster::node::Node) -> Option<AgentBandwidth> {
        crate::cluster::agent::bandwidth(self.agents, &node.host())
    }
}

/// The largest pack an agent may send (a solo pack of 33 chunks of 4 MiB and its overhead fit
/// well below).
const MAX_SENT_PACK: u64 = 256 << 20;

/// Writes `size` bytes of byte frames from the agent into `file`, synced.
fn receive(
    session: &mut Session,
    file: std::fs::File,
    size: u64,
    cancel: &CancellationToken,
) -> Result<(), AgentError> {
    use std::io::Write;
    let node = session.node_name().to_string();
    let local = |e: std::io::Error| AgentError::Remote {
        node: node.clone(),
        step: "receiving a pack".into(),
        path: None,
        message: format!("writing it on the head node: {e}"),
    };
    let mut w = std::io::BufWriter::with_capacity(1 << 20, file);
    let mut left = size;
    while left > 0 {
        let b = session.next_bytes("the bytes of the pack it announced", cancel)?;
        if b.len() as u64 > left {
            return Err(AgentError::Unexpected {
                node,
                expected: format!("{left} more bytes"),
                got: format!("{} bytes", b.len()),
            });
        }
        w.write_all(&b).map_err(local)?;
        left -= b.len() as u64;
    }
    w.flush().map_err(local)?;
    Ok(())
}

/// What an upload stored.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Uploaded {
    /// Whether the files' paths are kept (a data node's few; a volume's millions are counted).
    keep_paths: bool,
    /// The files recorded on their own, by path relative to the uploaded directory (a
    /// directory upload), or counted (a list).
    pub files: Vec<String>,
    pub file_count: u64,
    /// Replicas recorded (two files each, one unit).
    pub replicas: u64,
    /// Bytes of the files and replicas recorded.
    pub bytes: u64,
    pub packs: u64,
    pub pack_bytes: u64,
    /// Milliseconds the node's bandwidth limit held it back (its session so far).
    pub paced_ms: u64,
    pub setid_cleared: u64,
    pub escaping_symlinks: u64,
}

/// `<prefix>/<path>` (`prefix` for an empty path) when `path` is relative and made of plain
/// components only.
fn logical(prefix: &str, path: &str) -> Option<String> {
    if path.is_empty() {
        return Some(prefix.to_string());
    }
    path.split('/')
        .all(|c| !c.is_empty() && c != "." && c != "..")
        .then(|| format!("{prefix}/{path}"))
}

impl Uploaded {
    /// Counts a pack adopted: stored and counted, not yet indexed nor named by a manifest.
    fn adopted(&mut self, size: u64, cancel: &CancellationToken) {
        self.packs += 1;
        self.pack_bytes += size;
        crate::failpoint::hit("backup.agent.pack_adopted", cancel);
    }
}

/// The chunk size and compression level the agent packs with.
fn packing(session: &Session, rec: &mut dyn Recorder) -> Result<(usize, i32), ViaAgentError> {
    rec.packing().map_err(|e| ViaAgentError::Repository {
        node: session.node_name().to_string(),
        source: Box::new(e),
    })
}

/// Has the agent of `session` store directory `dir` (relative to its `--backup-dir`) into
/// the backup (`rec`) under `prefix`.
pub fn upload_dir(
    session: &mut Session,
    rec: &mut dyn Recorder,
    dir: &str,
    prefix: &str,
    cancel: &CancellationToken,
) -> Result<Uploaded, ViaAgentError> {
    let (chunk_size, compression_level) = packing(session, rec)?;
    let req = session.req();
    session.send(&Msg::Upload {
        req,
        dir: dir.to_string(),
        chunk_size,
        compression_level,
    })?;
    drive(session, rec, req, prefix, true, cancel)
}

/// Has the agent of `session` store the files `list` names (NUL-separated paths relative to
/// the pin `<volume>/hopsdr-pin/<pin>`) into the backup (`rec`) under `prefix`.
pub fn upload_list(
    session: &mut Session,
    rec: &mut dyn Recorder,
    volume: &str,
    pin: &str,
    list: std::fs::File,
    prefix: &str,
    cancel: &CancellationToken,
) -> Result<Uploaded, ViaAgentError> {
    let list_bytes = list
        .metadata()
        .map_err(|e| AgentError::Remote {
            node: session.node_name().to_string(),
            step: "sending the list of files".into(),
            path: None,
            message: format!("reading it on the head node: {e}"),
        })?
        .len();
    let (chunk_size, compression_level) = packing(session, rec)?;
    let req = session.req();
    session.send(&Msg::UploadList {
        req,
        volume: volume.to_string(),
        pin: pin.to_string(),
        chunk_size,
        compression_level,
        list_bytes,
    })?;
    session.send_file(list, list_bytes)?;
    drive(session, rec, req, prefix, false, cancel)
}

/// A file's metadata as recorded: setuid and setgid cleared (hopsdr does not restore them), with
/// a warning naming the file.
fn recorded(stat: Stat, logical: &str, done: &mut Uploaded) -> FileMeta {
    let mut mode = stat.mode & 0o7777;
    if mode & 0o6000 != 0 {
        tracing::warn!(
            path = %logical,
            "setuid/setgid bits of {logical} (mode {mode:o}) cleared: hopsdr does not restore them"
        );
        mode &= !0o6000;
        done.setid_cleared += 1;
    }
    FileMeta {
        mode,
        mtime: stat.mtime,
        uid: stat.uid,
        gid: stat.gid,
    }
}

/// Answers and records what the agent reports for request `req` until it is done.
fn drive(
    session: &mut Session,
    rec: &mut dyn Recorder,
    req: u32,
    prefix: &str,
    keep_paths: bool,
    cancel: &CancellationToken,
) -> Result<Uploaded, ViaAgentError> {
    let node = session.node_name().to_string();
    let repo = |source| ViaAgentError::Repository {
        node: node.clone(),
        source: Box::new(source),
    };
    let bad = |what: String| ViaAgentError::Bad {
        node: node.clone(),
        what,
    };
    let mut done = Uploaded {
        keep_paths,
        ..Uploaded::default()
    };
    loop {
        let msg = session.next_msg("the next step of its upload", cancel)?;
        match msg {
            Msg::DirStored { req: r, path, stat } if r == req => {
                let logical = logical(prefix, &path)
                    .ok_or_else(|| bad(format!("a directory named {path:?}")))?;
                let meta = recorded(stat, &logical, &mut done);
                rec.add_dir(logical, meta).map_err(repo)?;
            }
            Msg::Have { req: r, ids } if r == req => {
                let ids = ids
                    .iter()
                    .map(|h| {
                        blake3::Hash::from_hex(h)
                            .map(|h| *h.as_bytes())
                            .map_err(|_| bad(format!("{h:?} as a blob id")))
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                let missing = rec.claim_missing(ids).map_err(repo)?;
                session.send(&Msg::HaveAck { req, missing })?;
            }
            Msg::PackBytes { req: r, key, size } if r == req => {
                // A local repository: the pack comes over the session, then its PackDone.
                if size > MAX_SENT_PACK {
                    return Err(bad(format!("a pack of {size} bytes")));
                }
                let (path, file) = rec.pack_spool().map_err(repo)?;
                let received = receive(session, file, size, cancel);
                let report = match received {
                    Ok(()) => session.next_msg("the report of the pack it sent", cancel),
                    Err(e) => Err(e),
                };
                let trailer = match report {
                    Ok(Msg::PackDone {
                        req: r,
                        key: k,
                        size: n,
                        trailer,
                    }) if r == req && k == key && n == size => trailer.trailer(),
                    Ok(other) => Err(format!("{other:?} after the bytes of pack {key}")),
                    Err(e) => {
                        let _ = std::fs::remove_file(&path);
                        return Err(e.into());
                    }
                };
                let trailer = match trailer {
                    Ok(t) => t,
                    Err(e) => {
                        let _ = std::fs::remove_file(&path);
                        return Err(bad(format!("pack {key}: {e}")));
                    }
                };
                rec.adopt_sent_pack(key, path, size, trailer)
                    .map_err(repo)?;
                done.adopted(size, cancel);
            }
            Msg::PackDone {
                req: r,
                key,
                size,
                trailer,
            } if r == req => {
                let trailer = trailer
                    .trailer()
                    .map_err(|e| bad(format!("pack {key}: {e}")))?;
                rec.adopt_pack(key, size, trailer).map_err(repo)?;
                done.adopted(size, cancel);
            }
            Msg::FileStored {
                req: r,
                path,
                size,
                stat,
                units,
            } if r == req => {
                let logical = logical(prefix, &path)
                    .filter(|_| !path.is_empty())
                    .ok_or_else(|| bad(format!("a file named {path:?}")))?;
                let units = units
                    .iter()
                    .map(|u| BlobId::parse(u).ok_or_else(|| bad(format!("{u:?} as a unit id"))))
                    .collect::<Result<Vec<_>, _>>()?;
                let meta = recorded(stat, &logical, &mut done);
                rec.add_stored_file(logical, size, units, meta)
                    .map_err(repo)?;
                done.bytes += size;
                if done.keep_paths {
                    done.files.push(path);
                } else {
                    done.file_count += 1;
                }
            }
            Msg::ReplicaStored {
                req: r,
                path,
                meta_name,
                len,
                meta_len,
                block,
                meta,
                unit,
            } if r == req => {
                let logical = logical(prefix, &path)
                    .ok_or_else(|| bad(format!("a replica named {path:?}")))?;
                let (dir, name) = logical
                    .rsplit_once('/')
                    .filter(|(d, _)| d.len() > prefix.len())
                    .ok_or_else(|| bad(format!("a replica named {path:?}")))?;
                let (id, genstamp) = crate::repository::Replica::parse_names(name, &meta_name)
                    .ok_or_else(|| {
                        bad(format!("{name} and {meta_name} as a replica's two files"))
                    })?;
                let unit =
                    BlobId::parse(&unit).ok_or_else(|| bad(format!("{unit:?} as a unit id")))?;
                let block_meta = recorded(block, &logical, &mut done);
                let meta_meta = recorded(meta, &format!("{dir}/{meta_name}"), &mut done);
                rec.add_stored_replica(StoredReplica {
                    dir: dir.to_string(),
                    id,
                    genstamp,
                    len,
                    meta_len,
                    block_meta,
                    meta_meta,
                    unit,
                })
                .map_err(repo)?;
                done.bytes += len + meta_len;
                done.replicas += 1;
                // Recorded in the spill, its unit perhaps only claimed (in a pack not yet sent).
                crate::failpoint::hit("backup.agent.replica_recorded", cancel);
            }
            Msg::LinkStored {
                req: r,
                path,
                target,
                stat,
            } if r == req => {
                let logical = logical(prefix, &path)
                    .filter(|_| !path.is_empty())
                    .ok_or_else(|| bad(format!("a link named {path:?}")))?;
                if crate::repository::symlink_escapes(&path, &target) {
                    tracing::warn!(
                        path = %logical,
                        "symlink {logical} -> {target} leads outside {prefix}: not backed up (it could redirect a write when restored)"
                    );
                    done.escaping_symlinks += 1;
                    continue;
                }
                let meta = recorded(stat, &logical, &mut done);
                rec.add_symlink(logical, target, meta).map_err(repo)?;
            }
            // The agent is still at work (a long PUT).
            Msg::Progress { req: r, .. } if r == req => {}
            Msg::Uploaded {
                req: r, paced_ms, ..
            } if r == req => {
                done.paced_ms = paced_ms;
                return Ok(done);
            }
            Msg::Error {
                req: r,
                step,
                path,
                message,
            } if r.is_none() || r == Some(req) => {
                return Err(AgentError::Remote {
                    node,
                    step,
                    path,
                    message,
                }
                .into())
            }
            other => {
                return Err(bad(format!("{other:?} during an upload")));
            }
        }
    }
}
