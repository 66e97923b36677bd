//! Files from a node as a tar stream (`tar -C DIR -cf - .` run locally or over ssh) straight
//! into a backup: every entry is hashed, compressed and stored as it arrives, with no staging
//! copy on the head node. Paths in the stream are checked before use: an entry that would land
//! outside its prefix (absolute, `..`) fails the stream. What could do harm when the files are
//! written back as root is neutralised and logged: a symlink whose target leaves the tree (it
//! could redirect a later write) is not stored, and setuid/setgid bits are cleared.

use std::io::Read;

use tar::EntryType;

use crate::repository::{
    symlink_escapes, validate_logical_path, BackupWriter, FileMeta, RepoError,
};

/// Why a stream could not be stored.
#[derive(Debug, thiserror::Error)]
pub enum TarStreamError {
    #[error("failed to read the tar stream: {0}")]
    Read(std::io::Error),
    #[error("tar entry \"{path}\" is refused: {reason}")]
    BadPath { path: String, reason: String },
    #[error("tar entry \"{path}\" has unsupported type {kind:?}")]
    Unsupported { path: String, kind: EntryType },
    #[error(transparent)]
    Repository(#[from] RepoError),
}

/// What a stream held.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TarTotals {
    /// The regular files, relative to the stream's root (not for a HopsFS volume's stream).
    pub paths: Vec<String>,
    pub files: u64,
    pub dirs: u64,
    pub symlinks: u64,
    pub bytes: u64,
    /// Symlinks not stored because their target leaves the tree.
    pub escaping_symlinks: u64,
    /// Entries whose setuid/setgid bits were cleared.
    pub setid_cleared: u64,
}

/// The argv that streams directory `dir` as tar on a node.
pub fn tar_argv(dir: &str) -> Vec<String> {
    tar_member_argv(dir, ".")
}

/// The argv that streams `member` of directory `dir` (kept as the first path component).
pub fn tar_member_argv(dir: &str, member: &str) -> Vec<String> {
    [
        "tar",
        "--numeric-owner",
        "-C",
        dir,
        "-cf",
        "-",
        "--",
        member,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// Stores every entry of the tar stream `r` under `prefix` in `writer`.
pub fn ingest(
    r: &mut dyn Read,
    prefix: &str,
    writer: &mut BackupWriter,
) -> Result<TarTotals, TarStreamError> {
    ingest_with(r, prefix, writer, false)
}

/// [`ingest`] of a HopsFS volume's stream, sent with each replica's checksum file right before
/// its block file: the two are stored as one replica
/// ([`BackupWriter::add_replica`]). Anything else, or a checksum file not followed by its
/// block, is stored as a file.
pub fn ingest_volume(
    r: &mut dyn Read,
    prefix: &str,
    writer: &mut BackupWriter,
) -> Result<TarTotals, TarStreamError> {
    ingest_with(r, prefix, writer, true)
}

/// A finalized replica's checksum file, read, waiting for its block file.
struct PendingMeta {
    dir: String,
    name: String,
    bytes: Vec<u8>,
    meta: FileMeta,
}

fn flush_meta(
    pending: &mut Option<PendingMeta>,
    writer: &mut BackupWriter,
    totals: &mut TarTotals,
) -> Result<(), TarStreamError> {
    if let Some(p) = pending.take() {
        writer.add_file(&format!("{}/{}", p.dir, p.name), &mut &p.bytes[..], p.meta)?;
        totals.files += 1;
        totals.bytes += p.bytes.len() as u64;
    }
    Ok(())
}

fn ingest_with(
    r: &mut dyn Read,
    prefix: &str,
    writer: &mut BackupWriter,
    pair: bool,
) -> Result<TarTotals, TarStreamError> {
    let mut archive = tar::Archive::new(r);
    let mut totals = TarTotals::default();
    let mut pending: Option<PendingMeta> = None;
    for entry in archive.entries().map_err(TarStreamError::Read)? {
        let mut entry = entry.map_err(TarStreamError::Read)?;
        let raw = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        let rel = raw
            .trim_start_matches("./")
            .trim_end_matches('/')
            .to_string();
        let rel = rel.as_str();
        if rel.is_empty() || rel == "." {
            continue; // the root of the stream is the prefix itself
        }
        let logical = format!("{prefix}/{rel}");
        if let Err(e) = validate_logical_path(&logical) {
            return Err(TarStreamError::BadPath {
                path: raw,
                reason: e.to_string(),
            });
        }
        let h = entry.header();
        let mut mode = h.mode().map_err(TarStreamError::Read)?;
        if mode & 0o6000 != 0 {
            tracing::warn!(
                path = %logical,
                "setuid/setgid bits of {logical} (mode {mode:o}) cleared: hopsdr does not restore them"
            );
            mode &= !0o6000;
            totals.setid_cleared += 1;
        }
        let meta = FileMeta {
            mode,
            mtime: h.mtime().map_err(TarStreamError::Read)? as i64,
            uid: h.uid().map_err(TarStreamError::Read)? as u32,
            gid: h.gid().map_err(TarStreamError::Read)? as u32,
        };
        let regular = matches!(h.entry_type(), EntryType::Regular | EntryType::Continuous);
        if pair && regular {
            let size = entry.size();
            if let Some((dir, name)) = crate::cluster::hopsfs::replica_file(&logical) {
                // A checksum file: kept until its block file comes.
                if name.ends_with(".meta") && size <= crate::cluster::hopsfs::MAX_PAIRED_META {
                    flush_meta(&mut pending, writer, &mut totals)?;
                    let mut bytes = Vec::with_capacity(size as usize);
                    (&mut entry)
                        .take(size)
                        .read_to_end(&mut bytes)
                        .map_err(TarStreamError::Read)?;
                    pending = Some(PendingMeta {
                        dir: dir.to_string(),
                        name: name.to_string(),
                        bytes,
                        meta,
                    });
                    continue;
                }
                let ids = pending.as_ref().and_then(|p| {
                    crate::repository::Replica::parse_names(name, &p.name).filter(|_| p.dir == dir)
                });
                if let (Some((id, genstamp)), Some(p)) = (ids, pending.take()) {
                    writer
                        .add_replica(dir, id, genstamp, &mut entry, size, meta, &p.bytes, p.meta)?;
                    totals.files += 2;
                    totals.bytes += size + p.bytes.len() as u64;
                    continue;
                }
            }
        }
        if pair {
            flush_meta(&mut pending, writer, &mut totals)?;
        }
        match h.entry_type() {
            EntryType::Regular | EntryType::Continuous => {
                let size = entry.size();
                writer.add_file(&logical, &mut entry, meta)?;
                // (A volume's millions of paths are not kept: nothing asks for them.)
                if !pair {
                    totals.paths.push(rel.to_string());
                }
                totals.files += 1;
                totals.bytes += size;
            }
            EntryType::Directory => {
                writer.add_dir(&logical, meta)?;
                totals.dirs += 1;
            }
            EntryType::Symlink => {
                let target = entry
                    .link_name_bytes()
                    .map(|b| String::from_utf8_lossy(&b).into_owned())
                    .unwrap_or_default();
                if symlink_escapes(rel, &target) {
                    tracing::warn!(
                        path = %logical,
                        "symlink {logical} -> {target} leads outside {prefix}: not backed up (it could redirect a write when restored)"
                    );
                    totals.escaping_symlinks += 1;
                    continue;
                }
                writer.add_symlink(&logical, &target, meta)?;
                totals.symlinks += 1;
            }
            kind => return Err(TarStreamError::Unsupported { path: raw, kind }),
        }
    }
    flush_meta(&mut pending, writer, &mut totals)?;
    // GNU tar pads the archive after its end marker to a whole record: read it all, or tar dies
    // of SIGPIPE writing the padding to a closed pipe.
    std::io::copy(&mut archive.into_inner(), &mut std::io::sink()).map_err(TarStreamError::Read)?;
    Ok(totals)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use chrono::Utc;
    use tokio_util::sync::CancellationToken;

    use super::*;
    use crate::ids::BackupId;
    use crate::repository::{BackupInfo, Entry, LocalStorage, Repository};

    fn repo(dir: &std::path::Path) -> Repository {
        let storage = Arc::new(LocalStorage::new(dir.join("repo")).unwrap());
        Repository::open_or_init(storage, 3).unwrap()
    }

    fn info() -> BackupInfo {
        BackupInfo {
            started_at: Utc::now(),
            finished_at: Utc::now(),
            hostname: "test".into(),
            hopsdr_version: "0".into(),
            components: vec![],
            facts: Default::default(),
        }
    }

    #[test]
    fn a_real_tar_stream_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        std::fs::create_dir_all(src.join("BACKUP/BACKUP-7")).unwrap();
        let data: Vec<u8> = (0..5_000_000u32).map(|i| (i % 251) as u8).collect();
        std::fs::write(src.join("BACKUP/BACKUP-7/BACKUP-7-0.1.Data"), &data).unwrap();
        std::fs::write(src.join("BACKUP/BACKUP-7/BACKUP-7.1.ctl"), b"NDBBCKUP ctl").unwrap();
        std::os::unix::fs::symlink("BACKUP-7", src.join("BACKUP/latest")).unwrap();
        let mut child = std::process::Command::new("tar")
            .args(tar_argv(src.to_str().unwrap()).iter().skip(1))
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let repo = repo(dir.path());
        let id = BackupId::parse("20261125T100000Z").unwrap();
        let mut w = repo.begin_backup(id.clone(), CancellationToken::new());
        let totals = ingest(child.stdout.as_mut().unwrap(), "rondb/1", &mut w).unwrap();
        assert!(child.wait().unwrap().success());
        assert_eq!(totals.files, 2);
        assert_eq!(totals.symlinks, 1);
        assert_eq!(totals.bytes, data.len() as u64 + 12);
        w.commit(info()).unwrap();
        let m = repo.read_manifest(&id).unwrap();
        let entry = m
            .entries
            .iter()
            .find_map(|e| match e {
                Entry::File(f) if f.path == "rondb/1/BACKUP/BACKUP-7/BACKUP-7-0.1.Data" => {
                    Some(f.clone())
                }
                _ => None,
            })
            .expect("data file in manifest");
        let mut out = Vec::new();
        repo.restore_file(&entry, &mut out).unwrap();
        assert_eq!(out, data);
    }

    #[test]
    fn a_real_stream_with_escaping_symlinks_and_setuid_files_is_neutralised() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        std::fs::create_dir_all(src.join("BACKUP")).unwrap();
        std::fs::write(src.join("BACKUP/run"), b"#!/bin/sh\n").unwrap();
        std::fs::set_permissions(
            src.join("BACKUP/run"),
            std::fs::Permissions::from_mode(0o6755),
        )
        .unwrap();
        std::os::unix::fs::symlink("/etc/shadow", src.join("BACKUP/abs")).unwrap();
        std::os::unix::fs::symlink("../../outside", src.join("BACKUP/up")).unwrap();
        std::os::unix::fs::symlink("run", src.join("BACKUP/ok")).unwrap();
        let mut child = std::process::Command::new("tar")
            .args(&tar_argv(src.to_str().unwrap())[1..])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let repo = repo(&dir.path().join("repo"));
        let mut w = repo.begin_backup(
            BackupId::parse("20261125T100000Z").unwrap(),
            CancellationToken::new(),
        );
        let totals = ingest(child.stdout.as_mut().unwrap(), "rondb/1", &mut w).unwrap();
        let st = child.wait().unwrap();
        assert!(st.success(), "{st}");
        assert_eq!(
            (
                totals.symlinks,
                totals.escaping_symlinks,
                totals.setid_cleared
            ),
            (1, 2, 1)
        );
        w.commit(info()).unwrap();
        let m = repo
            .read_manifest(&BackupId::parse("20261125T100000Z").unwrap())
            .unwrap();
        let paths: Vec<_> = m.entries.iter().map(|e| e.path().to_string()).collect();
        assert!(
            paths.contains(&"rondb/1/BACKUP/ok".to_string()),
            "{paths:?}"
        );
        assert!(
            !paths
                .iter()
                .any(|p| p.ends_with("/abs") || p.ends_with("/up")),
            "{paths:?}"
        );
        let run = m
            .entries
            .iter()
            .find_map(|e| match e {
                Entry::File(f) if f.path == "rondb/1/BACKUP/run" => Some(f),
                _ => None,
            })
            .unwrap();
        assert_eq!(run.meta.mode & 0o7777, 0o755);
    }

    #[test]
    fn an_entry_escaping_its_prefix_is_refused() {
        let mut h = tar::Header::new_old();
        {
            let name = &mut h.as_old_mut().name;
            let bad = b"../../etc/passwd";
            name[..bad.len()].copy_from_slice(bad);
        }
        h.set_size(4);
        h.set_mode(0o644);
        h.set_entry_type(EntryType::Regular);
        h.set_cksum();
        let mut buf = Vec::new();
        buf.extend_from_slice(h.as_bytes());
        buf.extend_from_slice(b"evil");
        buf.resize(1024, 0);
        buf.extend_from_slice(&[0u8; 1024]);
        let dir = tempfile::tempdir().unwrap();
        let repo = repo(dir.path());
        let mut w = repo.begin_backup(
            BackupId::parse("20261125T100000Z").unwrap(),
            CancellationToken::new(),
        );
        let e = ingest(&mut buf.as_slice(), "rondb/1", &mut w).unwrap_err();
        assert!(
            matches!(e, TarStreamError::BadPath { ref path, .. } if path == "../../etc/passwd"),
            "{e}"
        );
    }
}
