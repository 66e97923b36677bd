//! A tar stream of part of a backup, built from the repository as it is written (bounded
//! memory, every chunk verified), for `tar -x` on the node that gets the files back. `tar -x`
//! runs as root there, so nothing in the stream may lead outside the target directory or make a
//! setuid program: setuid/setgid bits are never written and a symlink leaving the tree (only a
//! tampered manifest could hold one: backups do not store them) is skipped.

use std::io::Write;

use tar::{EntryType, Header};

use crate::repository::{Entry, FileMeta, Manifest, Repository};

fn header(kind: EntryType, meta: &FileMeta, size: u64) -> Header {
    let mut h = Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(meta.mode & 0o1777);
    h.set_mtime(meta.mtime.max(0) as u64);
    h.set_uid(meta.uid as u64);
    h.set_gid(meta.gid as u64);
    h.set_size(size);
    h
}

/// Writes every entry of backup `m` under `prefix` (paths relative to it; the others are
/// skipped, and those whose relative path `skip` names) as a tar stream to `w`: the manifest's
/// own entries, then the streams under it.
pub fn write_tar(
    repo: &Repository,
    m: &Manifest,
    prefix: &str,
    skip: &dyn Fn(&str) -> bool,
    w: &mut dyn Write,
) -> std::io::Result<()> {
    let mut b = tar::Builder::new(w);
    let entries = &m.entries;
    // The files a few entries ahead are announced to the store (a remote one fetches them
    // while this one is written), each once: an announcement stands for one read.
    const AHEAD: usize = 128;
    let mut announced_end = 0;
    for (i, e) in entries.iter().enumerate() {
        if announced_end < entries.len() && announced_end <= i + AHEAD / 2 {
            let end = (i + AHEAD).min(entries.len());
            repo.prefetch_files(entries[announced_end.max(i)..end].iter().filter_map(
                |e| match e {
                    Entry::File(f) if f.path.strip_prefix(prefix).is_some_and(|rel| !skip(rel)) => {
                        Some(f)
                    }
                    _ => None,
                },
            ));
            announced_end = end;
        }
        append(&mut b, repo, e, prefix, skip)?;
    }
    for s in m
        .streams
        .iter()
        .filter(|s| format!("{}/", s.prefix).starts_with(prefix))
    {
        let stream = repo
            .stream_entries(m, s)
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        for e in stream {
            let e = e.map_err(|e| std::io::Error::other(e.to_string()))?;
            append(&mut b, repo, &e, prefix, skip)?;
        }
    }
    b.finish()
}

/// Appends entry `e` (if it is under `prefix` and not one `skip` names) to the tar stream.
fn append<W: Write>(
    b: &mut tar::Builder<W>,
    repo: &Repository,
    e: &Entry,
    prefix: &str,
    skip: &dyn Fn(&str) -> bool,
) -> std::io::Result<()> {
    let Some(rel) = e.path().strip_prefix(prefix) else {
        return Ok(());
    };
    if rel.is_empty() || skip(rel) {
        return Ok(());
    }
    match e {
        Entry::Dir { meta, .. } => {
            let mut h = header(EntryType::Directory, meta, 0);
            b.append_data(&mut h, rel, std::io::empty())?;
        }
        Entry::File(f) => {
            let mut h = header(EntryType::Regular, &f.meta, f.size);
            let r = repo
                .open_file(f)
                .map_err(|e| std::io::Error::other(e.to_string()))?;
            b.append_data(&mut h, rel, r)?;
        }
        Entry::Symlink { target, meta, .. } => {
            if crate::repository::symlink_escapes(rel.trim_start_matches('/'), target) {
                tracing::warn!(
                    "symlink {} -> {target} leads outside the restored directory: skipped",
                    e.path()
                );
                return Ok(());
            }
            let mut h = header(EntryType::Symlink, meta, 0);
            b.append_link(&mut h, rel, target)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn setuid_and_setgid_bits_are_never_written() {
        let meta = FileMeta {
            mode: 0o106755,
            mtime: 1,
            uid: 0,
            gid: 0,
        };
        let h = header(EntryType::Regular, &meta, 0);
        assert_eq!(h.mode().unwrap(), 0o755);
        let sticky = FileMeta {
            mode: 0o41777,
            ..meta
        };
        assert_eq!(
            header(EntryType::Directory, &sticky, 0).mode().unwrap(),
            0o1777
        );
    }
}
