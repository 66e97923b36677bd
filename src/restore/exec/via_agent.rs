//! A volume written back by its datanode's agent (`[agents] enabled`, a format 3 repository in
//! S3): hopsdrd sends the volume's entries with the location of every unit its index knows
//! (`WriteVolume`, a JSON line per entry), the agent fetches the units from the bucket, checks
//! and writes them. hopsdrd's own traffic is that list; the agent's `Progress` keeps the session
//! alive while it writes.

use std::io::Write;

use super::*;
use crate::agent::proto::{Msg, Stat, WireEntry, WireUnit};
pub(super) use crate::agent::restore::Writing;
use crate::cluster::agent::{AgentError, Session};
use crate::repository::{Entry, FileMeta};

/// What an agent wrote back.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Written {
    pub files: u64,
    pub bytes: u64,
    /// Files an earlier attempt wrote whole, kept.
    pub kept: u64,
    /// Milliseconds the node's bandwidth limit held it back (its session so far).
    pub paced_ms: u64,
}

fn stat(m: &FileMeta) -> Stat {
    Stat {
        mode: m.mode,
        mtime: m.mtime,
        uid: m.uid,
        gid: m.gid,
    }
}

/// The entries of backup `run.manifest` under `prefix` (paths relative to it, but those `skip`
/// names) as the agent's list, spooled to a temporary file; `None` when one of its files is not
/// stored in packs (an upgraded repository's older content: only hopsdrd reads it).
fn entry_list(
    run: &RestoreRun<'_>,
    prefix: &str,
    skip: &dyn Fn(&str) -> bool,
) -> Result<Option<(std::fs::File, u64)>, RepoError> {
    use std::io::Seek;
    let io = |e: std::io::Error| {
        RepoError::Storage(crate::repository::StorageError::Io {
            op: "spool the list of entries for the agent",
            path: std::env::temp_dir(),
            source: e,
        })
    };
    let mut file = std::io::BufWriter::new(tempfile::tempfile().map_err(io)?);
    for e in run.repo.entries_under(run.manifest, prefix) {
        let e = e?;
        let Some(rel) = e.path().strip_prefix(prefix).map(str::to_string) else {
            continue;
        };
        if rel.is_empty() || skip(&rel) {
            continue;
        }
        let wire = match e {
            Entry::Dir { meta, .. } => WireEntry::Dir {
                path: rel.clone(),
                stat: stat(&meta),
            },
            Entry::Symlink { target, meta, .. } => WireEntry::Link {
                path: rel.clone(),
                target,
                stat: stat(&meta),
            },
            Entry::File(f) => {
                if !f.is_packed() && f.size > 0 {
                    return Ok(None);
                }
                let mut units = Vec::with_capacity(f.units.len());
                for u in &f.units {
                    let loc = run.repo.locate_unit(u, &f.path)?;
                    units.push(WireUnit {
                        id: u.as_str().to_string(),
                        pack: loc.pack.iter().map(|b| format!("{b:02x}")).collect(),
                        kind: loc.kind.code(),
                        offset: loc.offset,
                        stored: loc.stored_len,
                        raw: loc.raw_len,
                    });
                }
                WireEntry::File {
                    path: rel.clone(),
                    size: f.size,
                    skip: f.skip,
                    stat: stat(&f.meta),
                    units,
                }
            }
        };
        serde_json::to_writer(&mut file, &wire).map_err(|e| io(e.into()))?;
        file.write_all(b"\n").map_err(io)?;
    }
    let mut file = file.into_inner().map_err(|e| io(e.into_error()))?;
    let len = file.stream_position().map_err(io)?;
    file.rewind().map_err(io)?;
    Ok(Some((file, len)))
}

/// Has the agent of `session` write backup `run.manifest`'s `prefix` (`hopsfs/<dn>/vol<k>/`)
/// beneath `volume` (its `current/` cleared by this attempt, or written in part by an earlier
/// one: `Writing::Resume`) — or, with `Writing::CheckOnly`, fetch and check every unit of it,
/// writing nothing; the entries `skip` names (paths relative to `prefix`) left out; `None` when
/// hopsdrd must do it itself (see [`entry_list`]). `what` names the volume in progress lines.
#[allow(clippy::too_many_arguments)]
pub(super) fn write_volume(
    run: &RestoreRun<'_>,
    i: usize,
    step: &RestoreStep,
    session: &mut Session,
    prefix: &str,
    skip: &dyn Fn(&str) -> bool,
    volume: &str,
    what: &str,
    writing: Writing,
) -> Result<Option<Written>, RestoreError> {
    let repo_err = |source| RestoreError::Repository {
        step: i + 1,
        title: step.title.clone(),
        source: Box::new(source),
    };
    let agent_err = agent_err(i, step);
    let Some((list, len)) = entry_list(run, prefix, skip).map_err(repo_err)? else {
        return Ok(None);
    };
    let req = session.req();
    session
        .send(&Msg::WriteVolume {
            req,
            volume: volume.to_string(),
            chunk_size: run.repo.chunk_size(),
            entries_bytes: len,
            check_only: writing == Writing::CheckOnly,
            resume: writing == Writing::Resume,
        })
        .map_err(&agent_err)?;
    session.send_file(list, len).map_err(&agent_err)?;
    loop {
        match session
            .next_msg("the progress of its write-back", run.cancel)
            .map_err(&agent_err)?
        {
            Msg::Progress {
                req: r,
                files,
                bytes,
            } if r == req => {
                (run.progress)(
                    i,
                    &format!(
                        "{what}: {files} files, {} MiB written by its agent",
                        bytes >> 20
                    ),
                );
            }
            Msg::VolumeWritten {
                req: r,
                files,
                bytes,
                skipped_links,
                kept,
                paced_ms,
                ..
            } if r == req => {
                if skipped_links > 0 {
                    tracing::warn!(
                        step = "restore",
                        "{what}: {skipped_links} links leading outside the volume were not written"
                    );
                }
                return Ok(Some(Written {
                    files,
                    bytes,
                    kept,
                    paced_ms,
                }));
            }
            Msg::Error {
                req: r,
                step: s,
                path,
                message,
            } if r.is_none() || r == Some(req) => {
                return Err(agent_err(AgentError::Remote {
                    node: session.node_name().to_string(),
                    step: s,
                    path,
                    message,
                }))
            }
            other => {
                return Err(agent_err(AgentError::Unexpected {
                    node: session.node_name().to_string(),
                    expected: "the progress of its write-back".into(),
                    got: format!("{other:?}"),
                }))
            }
        }
    }
}

pub(super) fn agent_err(i: usize, step: &RestoreStep) -> impl Fn(AgentError) -> RestoreError + '_ {
    move |source| RestoreError::Agent {
        step: i + 1,
        title: step.title.clone(),
        source: Box::new(source),
    }
}
