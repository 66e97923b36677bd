//! The `files` backup component: the cluster definition, hopsdr's own config and any other
//! configured paths, stored under `config/<absolute path without its leading slash>` in the backup.
//!
//! Directories are walked in name order without following symlinks; sockets, FIFOs and devices
//! are skipped with a warning (they hold no data). A configured path that does not exist fails the
//! component naming it, unless its entry is marked optional.

use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Component, Path, PathBuf};

use tokio_util::sync::CancellationToken;

use crate::config::FilePathSettings;
use crate::repository::{BackupWriter, FileMeta};

use super::BackupError;

/// The prefix under which this component's files live in a backup.
pub const PREFIX: &str = "config";

/// The logical path in the backup of an absolute path on the head node.
pub fn logical_path(path: &Path) -> String {
    let mut out = String::from(PREFIX);
    for c in path.components() {
        if let Component::Normal(s) = c {
            out.push('/');
            out.push_str(&s.to_string_lossy());
        }
    }
    out
}

fn meta_of(md: &fs::Metadata) -> FileMeta {
    FileMeta {
        mode: md.mode(),
        mtime: md.mtime(),
        uid: md.uid(),
        gid: md.gid(),
    }
}

/// Counts of what one run of the component stored.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FilesOutcome {
    pub files: u64,
    pub skipped_special: u64,
    pub missing_optional: u64,
}

/// Backs up every configured path into `writer`.
pub fn back_up(
    paths: &[FilePathSettings],
    writer: &mut BackupWriter,
    cancel: &CancellationToken,
) -> Result<FilesOutcome, BackupError> {
    let mut out = FilesOutcome::default();
    for entry in paths {
        let md = match fs::symlink_metadata(&entry.path) {
            Ok(md) => md,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && entry.optional => {
                tracing::info!(path = %entry.path.display(), "optional backup path does not exist; skipped");
                out.missing_optional += 1;
                continue;
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(BackupError::PathMissing {
                    path: entry.path.clone(),
                })
            }
            Err(source) => {
                return Err(BackupError::Read {
                    path: entry.path.clone(),
                    source,
                })
            }
        };
        // The parents of a configured path are recorded too, so a restore recreates them with
        // their modes.
        walk(&entry.path, md, writer, cancel, &mut out)?;
    }
    Ok(out)
}

fn walk(
    path: &Path,
    md: fs::Metadata,
    writer: &mut BackupWriter,
    cancel: &CancellationToken,
    out: &mut FilesOutcome,
) -> Result<(), BackupError> {
    if cancel.is_cancelled() {
        return Err(BackupError::Cancelled);
    }
    let logical = logical_path(path);
    let ft = md.file_type();
    if ft.is_symlink() {
        let target = fs::read_link(path).map_err(|source| BackupError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        writer.add_symlink(&logical, &target.to_string_lossy(), meta_of(&md))?;
    } else if ft.is_file() {
        let mut f = fs::File::open(path).map_err(|source| BackupError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        // Metadata of the open file, so size and mtime belong to what is read.
        let md = f.metadata().map_err(|source| BackupError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        writer.add_file(&logical, &mut f, meta_of(&md))?;
        out.files += 1;
    } else if ft.is_dir() {
        writer.add_dir(&logical, meta_of(&md))?;
        let mut children: Vec<PathBuf> = fs::read_dir(path)
            .and_then(|rd| rd.map(|e| e.map(|e| e.path())).collect())
            .map_err(|source| BackupError::Read {
                path: path.to_path_buf(),
                source,
            })?;
        children.sort();
        for child in children {
            let cmd = match fs::symlink_metadata(&child) {
                Ok(m) => m,
                // Removed while we walked: not an error for a directory tree.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(source) => {
                    return Err(BackupError::Read {
                        path: child,
                        source,
                    })
                }
            };
            walk(&child, cmd, writer, cancel, out)?;
        }
    } else {
        let kind = if ft.is_fifo() {
            "FIFO"
        } else if ft.is_socket() {
            "socket"
        } else {
            "device"
        };
        tracing::warn!(path = %path.display(), "skipped {kind}: it holds no data to back up");
        out.skipped_special += 1;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logical_paths_are_under_config() {
        assert_eq!(
            logical_path(Path::new("/home/ubuntu/cluster-defns/x.yml")),
            "config/home/ubuntu/cluster-defns/x.yml"
        );
        assert_eq!(logical_path(Path::new("/etc/hopsdr/")), "config/etc/hopsdr");
    }
}
