//! `Upload`: the agent stores the files of a directory under its `--backup-dir` (a RonDB data
//! node's `BACKUP/BACKUP-<id>`), packed on the node ([`super::packing`]): straight into the
//! repository's bucket, or, for a local repository, as finished packs sent to the head over the
//! session (compressed and sealed: less on the wire than the raw files). The head answers which
//! blobs it lacks and records what the agent reports.
//! Regular files and directories are taken (a multi-part backup's part directories too), nothing
//! else; the directory must resolve inside the backup directory.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use super::packing::{Coordinator, Packing, PackingError, PackingSettings};
use super::proto::{self, Msg, S3Store, Stat, WireTrailer};
use super::secrets::Secrets;
use crate::repository::pack::Trailer;
use crate::repository::{S3Storage, Storage};

/// How often the agent tells the head it is still at work while one step takes long (a PUT).
pub(super) const PROGRESS_EVERY: std::time::Duration = std::time::Duration::from_secs(2);

/// Directory levels an upload descends (a backup directory and its part directories).
const MAX_DEPTH: usize = 4;

/// Why an upload failed: the step's path and what happened.
#[derive(Debug)]
pub struct UploadError {
    pub path: Option<String>,
    pub message: String,
}

impl UploadError {
    pub(super) fn at(path: &Path, message: impl std::fmt::Display) -> UploadError {
        UploadError {
            path: Some(path.display().to_string()),
            message: message.to_string(),
        }
    }

    pub(super) fn of(message: impl std::fmt::Display) -> UploadError {
        UploadError {
            path: None,
            message: message.to_string(),
        }
    }
}

/// Opens the regular file at `path` to read, never through a symbolic link; a FIFO or device
/// put in its place is refused without blocking.
pub(super) fn open_regular(path: &Path) -> Result<std::fs::File, UploadError> {
    use std::os::unix::fs::OpenOptionsExt;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags((nix::fcntl::OFlag::O_NOFOLLOW | nix::fcntl::OFlag::O_NONBLOCK).bits())
        .open(path)
        .map_err(|e| UploadError::at(path, e))?;
    let meta = file.metadata().map_err(|e| UploadError::at(path, e))?;
    if !meta.file_type().is_file() {
        return Err(UploadError::at(path, "is not a regular file"));
    }
    Ok(file)
}

/// The directory `dir` names under `backup_dir`, resolved: refused when it is absolute, has
/// `..`, or leads (through a symbolic link) outside.
pub fn resolve(backup_dir: &Path, dir: &str) -> Result<PathBuf, UploadError> {
    let rel = Path::new(dir);
    if rel.is_absolute()
        || rel
            .components()
            .any(|c| !matches!(c, std::path::Component::Normal(_)))
    {
        return Err(UploadError::of(format!(
            "{dir:?} is not a plain path inside the backup directory"
        )));
    }
    let base = backup_dir
        .canonicalize()
        .map_err(|e| UploadError::at(backup_dir, e))?;
    let full = base.join(rel);
    let real = full.canonicalize().map_err(|e| UploadError::at(&full, e))?;
    if !real.starts_with(&base) {
        return Err(UploadError::at(
            &full,
            format!(
                "resolves to {}, outside the backup directory",
                real.display()
            ),
        ));
    }
    Ok(real)
}

/// The head, over the session: asked and told in request `req`.
pub(super) struct Head<'a> {
    pub(super) req: u32,
    pub(super) input: &'a mut dyn Read,
    pub(super) output: &'a mut dyn Write,
    /// The bucket; `None`: a local repository, whose packs go to the head over the session.
    pub(super) store: Option<&'a S3Storage>,
    /// A HopsFS volume's files (else a data node's directory); for the tests' failpoint.
    pub(super) volume: bool,
}

impl Head<'_> {
    /// Sends the pack at `path` to the head (announced, then in byte frames), and removes it.
    fn send_pack(&mut self, key: &str, path: &Path, size: u64) -> Result<(), PackingError> {
        let sent = (|| {
            proto::write_msg(
                self.output,
                &Msg::PackBytes {
                    req: self.req,
                    key: key.to_string(),
                    size,
                },
            )
            .map_err(|e| e.to_string())?;
            let mut f = std::fs::File::open(path).map_err(|e| e.to_string())?;
            let pacer = super::limits::pacer();
            proto::send_in_frames(
                &mut f,
                size,
                |b| {
                    if let Some(p) = &pacer {
                        p.pace(b.len());
                    }
                    proto::write_frame(self.output, proto::KIND_BYTES, b).map_err(|e| e.to_string())
                },
                |e| format!("{}: {e}", path.display()),
            )
        })();
        let _ = std::fs::remove_file(path);
        sent.map_err(PackingError::Head)
    }
}

impl Coordinator for Head<'_> {
    fn missing(&mut self, ids: &[[u8; 32]]) -> Result<Vec<bool>, PackingError> {
        let head = |e: proto::ProtoError| PackingError::Head(e.to_string());
        let req = self.req;
        proto::write_msg(
            self.output,
            &Msg::Have {
                req,
                ids: ids
                    .iter()
                    .map(|i| blake3::Hash::from_bytes(*i).to_hex().to_string())
                    .collect(),
            },
        )
        .map_err(head)?;
        match proto::read_msg(self.input).map_err(head)? {
            Some(Msg::HaveAck { req: r, missing }) if r == req && missing.len() == ids.len() => {
                Ok(missing)
            }
            Some(Msg::Cancel { reason }) => Err(PackingError::Head(format!("cancelled: {reason}"))),
            Some(m) => Err(PackingError::Head(format!(
                "the head answered {m:?} to which blobs it lacks"
            ))),
            None => Err(PackingError::Head("the head went away".into())),
        }
    }

    fn pack_done(
        &mut self,
        key: &str,
        path: &Path,
        size: u64,
        trailer: &Trailer,
    ) -> Result<(), PackingError> {
        match self.store {
            Some(store) => {
                // The PUT may outlast the head's patience: the head hears from the agent every
                // few seconds meanwhile.
                let stored = std::thread::scope(|scope| {
                    let (done, waiting) = std::sync::mpsc::channel::<()>();
                    let put = scope.spawn(move || {
                        // Tests: a PUT that takes longer than the head's timeout.
                        if let Some(ms) = crate::failpoint::value("agent.slow_put") {
                            std::thread::sleep(std::time::Duration::from_millis(
                                ms.parse().unwrap_or(0),
                            ));
                        }
                        let stored = store
                            .put_file_deferred(key, path)
                            .and_then(|()| store.flush());
                        drop(done);
                        stored
                    });
                    while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) =
                        waiting.recv_timeout(PROGRESS_EVERY)
                    {
                        let _ = proto::write_msg(
                            self.output,
                            &Msg::Progress {
                                req: self.req,
                                files: 0,
                                bytes: size,
                            },
                        );
                    }
                    put.join().unwrap_or_else(|p| std::panic::resume_unwind(p))
                });
                if let Err(e) = stored {
                    let _ = std::fs::remove_file(path);
                    return Err(PackingError::Head(format!("storing {key}: {e}")));
                }
            }
            None => self.send_pack(key, path, size)?,
        }
        proto::write_msg(
            self.output,
            &Msg::PackDone {
                req: self.req,
                key: key.to_string(),
                size,
                trailer: WireTrailer::of(trailer),
            },
        )
        .map_err(|e| PackingError::Head(e.to_string()))?;
        // Tests: the agent dies with a pack stored and reported, the rest of its files not
        // (`volume`: only an agent storing a HopsFS volume).
        let armed = crate::failpoint::value("agent.exit_after_pack")
            .is_some_and(|v| v != "volume" || self.volume);
        if armed && crate::failpoint::once("agent.exit_after_pack").is_some() {
            std::process::exit(9);
        }
        Ok(())
    }
}

/// Where an upload's packs go and wait.
pub(super) struct Setup {
    /// A bucket: the packs go there; none (a local repository): to the head, over the session.
    pub(super) storage: Option<S3Storage>,
    pub(super) spool: tempfile::TempDir,
}

impl Setup {
    pub(super) fn new(
        chunk_size: usize,
        store: Option<&S3Store>,
        secrets: &Secrets,
    ) -> Result<Setup, UploadError> {
        let storage = match store {
            Some(store) => Some(
                S3Storage::new(&super::probe::s3_options(store, secrets))
                    .map_err(UploadError::of)?,
            ),
            None => None,
        };
        if !(4096..=64 << 20).contains(&chunk_size) {
            return Err(UploadError::of(format!(
                "chunk size {chunk_size} is out of range"
            )));
        }
        let spool = tempfile::Builder::new()
            .prefix("hopsdr-agent-")
            .tempdir()
            .map_err(|e| UploadError::of(format!("a spool directory: {e}")))?;
        Ok(Setup { storage, spool })
    }

    /// The head as an upload of request `req` talks to it (`volume`: a HopsFS volume's files).
    pub(super) fn head<'a>(
        &'a self,
        req: u32,
        input: &'a mut dyn Read,
        output: &'a mut dyn Write,
        volume: bool,
    ) -> Head<'a> {
        Head {
            req,
            input,
            output,
            store: self.storage.as_ref(),
            volume,
        }
    }

    pub(super) fn packing<'k>(
        &self,
        chunk_size: usize,
        compression_level: i32,
        secrets: &'k Secrets,
    ) -> Result<Packing<'k>, UploadError> {
        Packing::new(PackingSettings {
            chunk_size,
            compression_level,
            keys: secrets.keys.as_ref(),
            spool_dir: self.spool.path().to_path_buf(),
        })
        .map_err(UploadError::of)
    }
}

/// Stores a file (`size` bytes of `reader`, `full` its path for errors) on its own and reports
/// it.
pub(super) fn store_file(
    rel: &str,
    reader: &mut dyn Read,
    size: u64,
    stat: Stat,
    full: &Path,
    packing: &mut Packing<'_>,
    head: &mut Head<'_>,
) -> Result<(), UploadError> {
    let packed = packing
        .add_file(rel, &mut reader.take(size), head)
        .map_err(|e| UploadError::at(full, e))?;
    proto::write_msg(
        head.output,
        &Msg::FileStored {
            req: head.req,
            path: rel.to_string(),
            size: packed.size,
            stat,
            units: packed
                .units
                .iter()
                .map(|u| u.as_str().to_string())
                .collect(),
        },
    )
    .map_err(UploadError::of)
}

/// Uploads every regular file of `dir` (request `req`); returns the closing message.
#[allow(clippy::too_many_arguments)]
pub fn upload(
    req: u32,
    dir: &Path,
    chunk_size: usize,
    compression_level: i32,
    store: Option<&S3Store>,
    secrets: &Secrets,
    input: &mut dyn Read,
    output: &mut dyn Write,
) -> Result<Msg, UploadError> {
    let setup = Setup::new(chunk_size, store, secrets)?;
    let mut packing = setup.packing(chunk_size, compression_level, secrets)?;
    let mut head = setup.head(req, input, output, false);
    // Depth first, each directory's entries sorted: a directory before what it holds.
    let mut files = 0;
    let mut stack: Vec<(PathBuf, String)> = vec![(dir.to_path_buf(), String::new())];
    while let Some((path, rel)) = stack.pop() {
        let meta = std::fs::symlink_metadata(&path).map_err(|e| UploadError::at(&path, e))?;
        let ft = meta.file_type();
        if ft.is_dir() {
            if rel.matches('/').count() >= MAX_DEPTH {
                return Err(UploadError::at(
                    &path,
                    "is nested too deep for a backup directory",
                ));
            }
            proto::write_msg(
                head.output,
                &Msg::DirStored {
                    req,
                    path: rel.clone(),
                    stat: Stat::of(&meta),
                },
            )
            .map_err(UploadError::of)?;
            let mut names: Vec<PathBuf> = std::fs::read_dir(&path)
                .map_err(|e| UploadError::at(&path, e))?
                .map(|e| e.map(|e| e.path()))
                .collect::<Result<_, _>>()
                .map_err(|e| UploadError::at(&path, e))?;
            names.sort();
            for child in names.into_iter().rev() {
                let name = child
                    .file_name()
                    .and_then(|n| n.to_str())
                    .ok_or_else(|| UploadError::at(&child, "its name is not UTF-8"))?
                    .to_string();
                let child_rel = if rel.is_empty() {
                    name
                } else {
                    format!("{rel}/{name}")
                };
                stack.push((child, child_rel));
            }
            continue;
        }
        if !ft.is_file() {
            return Err(UploadError::at(
                &path,
                "is neither a regular file nor a directory",
            ));
        }
        let mut f = open_regular(&path)?;
        store_file(
            &rel,
            &mut f,
            meta.len(),
            Stat::of(&meta),
            &path,
            &mut packing,
            &mut head,
        )?;
        files += 1;
    }
    let stats = packing.finish(&mut head).map_err(UploadError::of)?;
    Ok(Msg::Uploaded {
        req,
        files,
        packs: stats.packs,
        pack_bytes: stats.pack_bytes,
        paced_ms: super::limits::paced_ms(),
    })
}
