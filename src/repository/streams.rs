//! Format 3 manifests' streams: which entries of a backup go to a stream (every HopsFS
//! volume's, under `hopsfs/<datanode>/vol<k>`), how a backup writes each stream against the
//! previous backup's (a new layer of changes, or a new base when the layers have grown), and
//! how a stream is read back as entries. The page format is in `tree.rs`.

use super::error::RepoError;
use super::manifest::{validate_entry, Entry, FileEntry, Manifest, StreamRef};
use super::packer::Packer;
use super::spill::Spill;
use super::tree::{self, Content, Differ, Id, Merged, Op, Pager, Record};
use super::Repository;
use crate::ids::{BackupId, BlobId};

/// A backup writes a new base when its stream's layers hold more than this share of the
/// base's records...
const REBASE_SHARE: f64 = 0.10;
/// ...or there are this many layers.
const MAX_LAYERS: usize = 16;

/// The stream an entry path belongs to, and its key there: `hopsfs/<dn>/vol<k>/<rest>` →
/// (`hopsfs/<dn>/vol<k>`, `<rest>`).
pub fn stream_of(path: &str) -> Option<(&str, &str)> {
    let rest = path.strip_prefix("hopsfs/")?;
    let dn_end = rest.find('/')?;
    let after_dn = &rest[dn_end + 1..];
    let vol_end = after_dn.find('/')?;
    let vol = &after_dn[..vol_end];
    if !vol
        .strip_prefix("vol")
        .is_some_and(|k| !k.is_empty() && k.bytes().all(|b| b.is_ascii_digit()))
    {
        return None;
    }
    let split = "hopsfs/".len() + dn_end + 1 + vol_end;
    Some((&path[..split], &path[split + 1..]))
}

fn hex(id: &Id) -> String {
    blake3::Hash::from_bytes(*id).to_hex().to_string()
}

fn parse_hex(s: &str) -> Option<Id> {
    blake3::Hash::from_hex(s).ok().map(|h| *h.as_bytes())
}

pub(crate) fn id_bytes(b: &BlobId) -> Id {
    parse_hex(b.as_str()).unwrap_or([0; 32])
}

/// The record for `entry`, keyed relative to its stream.
pub(crate) fn record_of(entry: Entry, key: &str) -> Record {
    match entry {
        Entry::Dir { meta, .. } => Record::Dir {
            path: key.to_string(),
            meta,
        },
        Entry::Symlink { target, meta, .. } => Record::Symlink {
            path: key.to_string(),
            target,
            meta,
        },
        Entry::File(f) => {
            let content = if f.is_packed() {
                Content::Units(f.units.iter().map(id_bytes).collect())
            } else {
                Content::Legacy {
                    chunks: f.chunks.iter().map(id_bytes).collect(),
                    hash: parse_hex(&f.hash).unwrap_or([0; 32]),
                }
            };
            Record::File {
                path: key.to_string(),
                meta: f.meta,
                size: f.size,
                content,
            }
        }
    }
}

/// The entries a record stands for (a replica: its block file and checksum file).
pub fn entries_of(record: Record, prefix: &str) -> Vec<Entry> {
    let full = |k: &str| format!("{prefix}/{k}");
    let blob = |id: &Id| BlobId::of(&blake3::Hash::from_bytes(*id));
    match record {
        Record::Dir { path, meta } => vec![Entry::Dir {
            path: full(&path),
            meta,
        }],
        Record::Symlink { path, target, meta } => vec![Entry::Symlink {
            path: full(&path),
            target,
            meta,
        }],
        Record::File {
            path,
            meta,
            size,
            content,
        } => {
            let (hash, chunks, units) = match content {
                Content::Units(ids) => (String::new(), vec![], ids.iter().map(blob).collect()),
                Content::Legacy { chunks, hash } => (
                    blob(&hash).to_string(),
                    chunks.iter().map(blob).collect(),
                    vec![],
                ),
            };
            vec![Entry::File(FileEntry {
                path: full(&path),
                size,
                meta,
                hash,
                chunks,
                units,
                skip: 0,
            })]
        }
        Record::Replica(r) => {
            let dir = tree::join(&r.dir, "");
            let dir = dir.trim_end_matches('/');
            let at = |name: String| full(&tree::join(dir, &name));
            vec![
                Entry::File(FileEntry {
                    path: at(r.block_name()),
                    size: r.len,
                    meta: r.meta,
                    hash: String::new(),
                    chunks: vec![],
                    units: if r.len + r.meta_len > 0 {
                        vec![blob(&r.unit)]
                    } else {
                        vec![]
                    },
                    skip: 0,
                }),
                Entry::File(FileEntry {
                    path: at(r.meta_name()),
                    size: r.meta_len,
                    meta: r.meta_file,
                    hash: String::new(),
                    chunks: vec![],
                    units: if r.meta_len > 0 {
                        vec![blob(&r.unit)]
                    } else {
                        vec![]
                    },
                    skip: r.len,
                }),
            ]
        }
    }
}

/// Writes every stream a backup's `spill` holds; returns their references.
pub fn write_streams(
    repo: &Repository,
    packer: &mut Packer,
    backup: &BackupId,
    spill: &mut Spill,
) -> Result<Vec<StreamRef>, RepoError> {
    let prefixes = spill.prefixes()?;
    if prefixes.is_empty() {
        return Ok(Vec::new());
    }
    let parent = latest_packed(repo, backup)?;
    let mut refs = Vec::new();
    for prefix in prefixes {
        let before = parent.as_ref().and_then(|m| {
            m.streams
                .iter()
                .find(|s| s.prefix == prefix)
                .map(|s| (m, s))
        });
        refs.push(write_stream(repo, packer, backup, &prefix, spill, before)?);
    }
    Ok(refs)
}

/// The newest committed format 3 manifest other than `this`, if any.
fn latest_packed(repo: &Repository, this: &BackupId) -> Result<Option<Manifest>, RepoError> {
    for id in repo.list_backups()?.iter().rev().filter(|id| *id != this) {
        match repo.read_manifest(id) {
            Ok(m) if !m.streams.is_empty() => return Ok(Some(m)),
            Ok(_) => return Ok(None),
            // A damaged manifest is verify's to report; the stream is written whole.
            Err(e) if e.is_corruption() => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(None)
}

fn write_stream(
    repo: &Repository,
    packer: &mut Packer,
    backup: &BackupId,
    prefix: &str,
    spill: &Spill,
    before: Option<(&Manifest, &StreamRef)>,
) -> Result<StreamRef, RepoError> {
    let n = spill.count(prefix)?;
    let layered = before.filter(|(_, s)| {
        (s.layer_ops as f64) <= REBASE_SHARE * s.base_records.max(1) as f64
            && s.layers.len() < MAX_LAYERS
    });
    let Some((parent, s)) = layered else {
        let mut pages = PageWriter::new(false);
        spill.each(prefix, |r| pages.push(packer, Op::Put(r)))?;
        let pages = pages.finish(packer)?;
        let root = packer.add_meta(&tree::encode_root(&pages))?;
        return Ok(StreamRef {
            prefix: prefix.to_string(),
            root: hex(&root),
            base_of: backup.clone(),
            base_records: n,
            layers: vec![],
            layer_ops: 0,
            records: n,
        });
    };
    // The changes since the parent's view of the stream, as one more layer.
    let mut pages = PageWriter::new(true);
    let mut count = 0u64;
    {
        let old = read_records(repo, parent, s)?;
        let mut differ = Differ::new(old);
        let mut ops = Vec::new();
        spill.each(prefix, |r| {
            differ.push(r, &mut ops)?;
            for op in ops.drain(..) {
                count += 1;
                pages.push(packer, op)?;
            }
            Ok(())
        })?;
        differ.finish(&mut ops)?;
        for op in ops.drain(..) {
            count += 1;
            pages.push(packer, op)?;
        }
    }
    let pages = pages.finish(packer)?;
    let mut layers = s.layers.clone();
    if !pages.is_empty() {
        layers.push(pages.iter().map(|(_, id)| hex(id)).collect());
    }
    Ok(StreamRef {
        prefix: prefix.to_string(),
        root: s.root.clone(),
        base_of: s.base_of.clone(),
        base_records: s.base_records,
        layers,
        layer_ops: s.layer_ops + count,
        records: n,
    })
}

/// Cuts ops (sorted) into pages as they come and stores each as a meta blob.
struct PageWriter {
    pager: Pager,
    layer: bool,
    pages: Vec<(u64, Id)>,
}

impl PageWriter {
    fn new(layer: bool) -> PageWriter {
        PageWriter {
            pager: Pager::default(),
            layer,
            pages: Vec::new(),
        }
    }

    fn push(&mut self, packer: &mut Packer, op: Op) -> Result<(), RepoError> {
        if let Some(page) = self.pager.push(op) {
            self.store(packer, page)?;
        }
        Ok(())
    }

    fn store(&mut self, packer: &mut Packer, page: Vec<Op>) -> Result<(), RepoError> {
        let id = packer.add_meta(&tree::encode_page(&page, self.layer))?;
        self.pages.push((page.len() as u64, id));
        Ok(())
    }

    fn finish(mut self, packer: &mut Packer) -> Result<Vec<(u64, Id)>, RepoError> {
        if let Some(page) = self.pager.finish() {
            self.store(packer, page)?;
        }
        Ok(self.pages)
    }
}

/// The records of stream `s` of backup `m`, in key order (one page per level in memory).
pub fn read_records<'r>(
    repo: &'r Repository,
    m: &Manifest,
    s: &StreamRef,
) -> Result<impl Iterator<Item = Result<Record, RepoError>> + 'r, RepoError> {
    let backup = m.id.clone();
    let damaged = {
        let backup = backup.clone();
        let prefix = s.prefix.clone();
        move |id: String, reason: String| RepoError::CorruptTree {
            backup: backup.clone(),
            id,
            what: format!("stream '{prefix}'"),
            reason,
        }
    };
    let root_id = parse_hex(&s.root).ok_or_else(|| damaged(s.root.clone(), "not an id".into()))?;
    let root = repo
        .read_meta(&root_id, &format!("root of stream '{}'", s.prefix))
        .map_err(|e| damaged(s.root.clone(), e.to_string()))?;
    let pages = tree::decode_root(&root).map_err(|e| damaged(s.root.clone(), e.to_string()))?;
    let layers = s
        .layers
        .iter()
        .map(|l| {
            l.iter()
                .map(|h| parse_hex(h).ok_or_else(|| damaged(h.clone(), "not an id".into())))
                .collect::<Result<Vec<Id>, _>>()
        })
        .collect::<Result<Vec<_>, _>>()?;
    let what = format!("page of stream '{}'", s.prefix);
    let merged = Merged::new(
        pages.into_iter().map(|(_, id)| id).collect(),
        layers,
        move |id: &Id| repo.read_meta(id, &what),
    );
    let d2 = damaged.clone();
    Ok(merged.map(move |r| {
        r.map_err(|e| match e {
            tree::ReadError::Fetch(e) => d2(String::new(), e.to_string()),
            tree::ReadError::Page { page, source } => d2(page, source.to_string()),
        })
    }))
}

impl Repository {
    /// The entries of stream `s` of backup `m`, in key order, each checked as a manifest's
    /// entries are.
    pub fn stream_entries<'r>(
        &'r self,
        m: &Manifest,
        s: &StreamRef,
    ) -> Result<impl Iterator<Item = Result<Entry, RepoError>> + 'r, RepoError> {
        let prefix = s.prefix.clone();
        let records = read_records(self, m, s)?;
        Ok(records.flat_map(move |r| {
            let out: Vec<Result<Entry, RepoError>> = match r {
                Err(e) => vec![Err(e)],
                Ok(rec) => entries_of(rec, &prefix)
                    .into_iter()
                    .map(|e| {
                        validate_entry(&e).map_err(|defect| RepoError::InvalidEntry {
                            path: e.path().to_string(),
                            defect,
                        })?;
                        Ok(e)
                    })
                    .collect(),
            };
            out
        }))
    }

    /// The entries of backup `m` whose paths start with `prefix` (a directory, ending in `/`):
    /// the manifest's own, then the streams under it (the others are not read).
    pub fn entries_under<'r>(
        &'r self,
        m: &'r Manifest,
        prefix: &'r str,
    ) -> Box<dyn Iterator<Item = Result<Entry, RepoError>> + 'r> {
        let own = m
            .entries
            .iter()
            .filter(move |e| e.path().starts_with(prefix))
            .cloned()
            .map(Ok);
        let streams = m
            .streams
            .iter()
            .filter(move |s| format!("{}/", s.prefix).starts_with(prefix))
            .flat_map(move |s| {
                let it: Box<dyn Iterator<Item = Result<Entry, RepoError>>> =
                    match self.stream_entries(m, s) {
                        Ok(it) => Box::new(it.filter(move |e| {
                            e.as_ref().map_or(true, |e| e.path().starts_with(prefix))
                        })),
                        Err(e) => Box::new(std::iter::once(Err(e))),
                    };
                it
            });
        Box::new(own.chain(streams))
    }

    /// Every entry of backup `m`: the manifest's own, then each stream's.
    pub fn all_entries<'r>(
        &'r self,
        m: &'r Manifest,
    ) -> Box<dyn Iterator<Item = Result<Entry, RepoError>> + 'r> {
        let own = m.entries.iter().cloned().map(Ok);
        let streams = m.streams.iter().flat_map(move |s| {
            let it: Box<dyn Iterator<Item = Result<Entry, RepoError>>> =
                match self.stream_entries(m, s) {
                    Ok(it) => Box::new(it),
                    Err(e) => Box::new(std::iter::once(Err(e))),
                };
            it
        });
        Box::new(own.chain(streams))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn volume_paths_go_to_their_stream() {
        assert_eq!(
            stream_of("hopsfs/dn1/vol2/current/VERSION"),
            Some(("hopsfs/dn1/vol2", "current/VERSION"))
        );
        assert_eq!(stream_of("hopsfs/dn1/vol2"), None);
        assert_eq!(stream_of("hopsfs/dn1/volx/a"), None);
        assert_eq!(stream_of("rondb/3/BACKUP/x"), None);
    }
}
