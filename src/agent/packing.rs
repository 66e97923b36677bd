//! Files into packs on the node that holds them, exactly as hopsdrd's writer stores them in a
//! format 3 repository, so that the repository cannot tell who wrote a blob and equal content
//! deduplicates whoever stored it first.
//!
//! A file is read in chunks of the repository's chunk size and taken in *units* of at most
//! [`SOLO_MAX_CHUNKS`] chunks, each named by the BLAKE3 hash of its content (keyed with the
//! blob-name key when the repository is encrypted). A unit of one chunk is a blob of the open
//! data pack; a bigger unit's chunks (each sealed under its own blob key) go to a solo pack of
//! its own, spooled as they are read, whose trailer names the unit. The head decides what is
//! stored ([`Coordinator::missing`], which claims what it answers missing for this agent): a
//! one-chunk unit is asked before it is compressed, a bigger one once it is read (its spooled
//! pack is dropped when the repository has it). A finished pack goes to
//! [`Coordinator::pack_done`] (the store, or the stream to the head), which the head adopts only
//! after reading the pack's tail back. What each file became is returned for the head's
//! records.

use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use crate::ids::BlobId;
use crate::repository::crypto::AgentKeys;
use crate::repository::pack::{BlobKind, PackKind, PackWriter, Trailer, Unit};
use crate::repository::packer::{pack_key, PACK_TARGET};
use crate::repository::{blob_key, read_full, SOLO_MAX_CHUNKS};

/// Why files could not be packed.
#[derive(Debug, thiserror::Error)]
pub enum PackingError {
    #[error("reading {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the spool directory {dir}: {source}")]
    Spool {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("compressing {path}: {source}")]
    Compress {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("sealing: {0}")]
    Seal(String),
    #[error("{0}")]
    Head(String),
}

/// How the repository stores content.
#[derive(Debug)]
pub struct PackingSettings<'k> {
    pub chunk_size: usize,
    pub compression_level: i32,
    /// The agent keys of an encrypted repository.
    pub keys: Option<&'k AgentKeys>,
    /// Where packs are spooled until they are handed on.
    pub spool_dir: PathBuf,
}

/// The head's side, as the packing sees it.
pub trait Coordinator {
    /// Of `ids`, which the repository lacks: those this agent must store (the head claims them
    /// for it).
    fn missing(&mut self, ids: &[[u8; 32]]) -> Result<Vec<bool>, PackingError>;
    /// A finished pack, spooled at `path` (`size` bytes, listing `trailer`), to store under
    /// `key` and report; the file is the coordinator's from now on.
    fn pack_done(
        &mut self,
        key: &str,
        path: &Path,
        size: u64,
        trailer: &Trailer,
    ) -> Result<(), PackingError>;
}

/// What one file became: its size and its units, in order (a file's entry in a format 3
/// manifest).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packed {
    pub size: u64,
    pub units: Vec<BlobId>,
}

/// What a packing wrote.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PackingStats {
    pub packs: u64,
    pub pack_bytes: u64,
    /// Blobs and units stored, and those the repository already had.
    pub new_units: u64,
    pub known_units: u64,
}

/// A pack being spooled; its file is removed when it is dropped before being handed on.
struct Spooled {
    key: String,
    path: PathBuf,
    writer: Option<PackWriter<BufWriter<std::fs::File>>>,
}

impl Spooled {
    fn writer(&mut self) -> &mut PackWriter<BufWriter<std::fs::File>> {
        self.writer
            .as_mut()
            .expect("a spooled pack's writer until it is closed")
    }
}

impl Drop for Spooled {
    fn drop(&mut self) {
        if self.writer.is_some() {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// See the module documentation.
pub struct Packing<'k> {
    settings: PackingSettings<'k>,
    compressor: zstd::bulk::Compressor<'static>,
    data: Option<Spooled>,
    pub stats: PackingStats,
}

impl std::fmt::Debug for Packing<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Packing")
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl<'k> Packing<'k> {
    pub fn new(settings: PackingSettings<'k>) -> Result<Packing<'k>, PackingError> {
        let compressor = zstd::bulk::Compressor::new(settings.compression_level).map_err(|e| {
            PackingError::Compress {
                path: "(the compressor)".into(),
                source: e,
            }
        })?;
        Ok(Packing {
            settings,
            compressor,
            data: None,
            stats: PackingStats::default(),
        })
    }

    fn hasher(&self) -> blake3::Hasher {
        self.settings
            .keys
            .map_or_else(blake3::Hasher::new, |k| k.blob_hasher())
    }

    fn hash(&self, data: &[u8]) -> blake3::Hash {
        match self.settings.keys {
            Some(k) => k.blob_hash(data),
            None => blake3::hash(data),
        }
    }

    /// `data` compressed, and sealed as the blob `id` when encrypted.
    fn stored(
        &mut self,
        id: &blake3::Hash,
        data: &[u8],
        path: &str,
    ) -> Result<Vec<u8>, PackingError> {
        let frame = self
            .compressor
            .compress(data)
            .map_err(|source| PackingError::Compress {
                path: path.to_string(),
                source,
            })?;
        match self.settings.keys {
            None => Ok(frame),
            Some(k) => {
                let mut sealed = Vec::with_capacity(frame.len() + 64);
                k.seal_into(&blob_key(&BlobId::of(id)), &frame, &mut sealed)
                    .ok_or_else(|| PackingError::Seal("no data key".into()))?
                    .map_err(|e| PackingError::Seal(e.to_string()))?;
                Ok(sealed)
            }
        }
    }

    fn spool(&self, kind: PackKind) -> Result<Spooled, PackingError> {
        let dir = &self.settings.spool_dir;
        let spool = |source| PackingError::Spool {
            dir: dir.clone(),
            source,
        };
        let id = crate::repository::crypto::random::<16>()
            .map_err(|e| PackingError::Seal(e.to_string()))?;
        let file = tempfile::Builder::new()
            .prefix(".hopsdr-pack-")
            .tempfile_in(dir)
            .map_err(spool)?;
        let (file, path) = file.keep().map_err(|e| spool(e.error))?;
        let writer =
            PackWriter::new(BufWriter::with_capacity(1 << 20, file), kind).map_err(spool)?;
        Ok(Spooled {
            key: pack_key(&id),
            path,
            writer: Some(writer),
        })
    }

    /// Finishes a spooled pack and hands it to the coordinator (or drops it).
    fn close(
        &mut self,
        p: Spooled,
        unit: Option<Unit>,
        coordinator: &mut dyn Coordinator,
    ) -> Result<(), PackingError> {
        let mut p = p;
        let writer = p.writer.take().expect("open");
        let (key, path) = (p.key.clone(), p.path.clone());
        let dir = self.settings.spool_dir.clone();
        let finished =
            writer
                .finish(unit, &key, self.settings.keys)
                .and_then(|(mut w, trailer, size)| {
                    w.flush()?;
                    Ok((trailer, size))
                });
        let (trailer, size) = match finished {
            Ok(t) => t,
            Err(source) => {
                let _ = std::fs::remove_file(&path);
                return Err(PackingError::Spool { dir, source });
            }
        };
        self.stats.packs += 1;
        self.stats.pack_bytes += size;
        coordinator.pack_done(&key, &path, size, &trailer)
    }

    /// Packs the content `reader` yields (the file `path`, for messages); returns its units.
    pub fn add_file(
        &mut self,
        path: &str,
        reader: &mut dyn Read,
        coordinator: &mut dyn Coordinator,
    ) -> Result<Packed, PackingError> {
        let chunk_size = self.settings.chunk_size;
        let read_err = |source| PackingError::Read {
            path: path.to_string(),
            source,
        };
        let mut buf = vec![0u8; chunk_size];
        let mut size = 0u64;
        let mut units = Vec::new();
        // The open unit: its hasher, chunks and bytes, its first chunk (while it has one) and
        // its solo pack (from its second).
        let mut unit_hasher = self.hasher();
        let (mut chunks, mut unit_len) = (0usize, 0u64);
        let mut first: Option<Vec<u8>> = None;
        let mut solo: Option<Spooled> = None;
        loop {
            let n = read_full(reader, &mut buf).map_err(read_err)?;
            if n > 0 {
                size += n as u64;
                unit_len += n as u64;
                unit_hasher.update(&buf[..n]);
                chunks += 1;
                if chunks == 1 {
                    first = Some(buf[..n].to_vec());
                } else {
                    if solo.is_none() {
                        let mut s = self.spool(PackKind::Solo)?;
                        let f = first.take().expect("the unit's first chunk");
                        self.solo_chunk(&mut s, &f, path)?;
                        solo = Some(s);
                    }
                    let s = solo.as_mut().expect("open");
                    self.solo_chunk(s, &buf[..n], path)?;
                }
            }
            let at_end = n < chunk_size;
            if chunks > 0 && (chunks == SOLO_MAX_CHUNKS || at_end) {
                let h = std::mem::replace(&mut unit_hasher, self.hasher()).finalize();
                match (first.take(), solo.take()) {
                    (Some(data), None) => self.data_blob(h, &data, path, coordinator)?,
                    (_, Some(s)) => {
                        if coordinator.missing(&[*h.as_bytes()])?[0] {
                            self.stats.new_units += 1;
                            let unit = Unit {
                                id: *h.as_bytes(),
                                len: unit_len,
                            };
                            self.close(s, Some(unit), coordinator)?;
                        } else {
                            // The repository has the unit: the spooled pack goes.
                            self.stats.known_units += 1;
                        }
                    }
                    (None, None) => unreachable!("a unit with chunks has a first chunk or a pack"),
                }
                units.push(BlobId::of(&h));
                (chunks, unit_len) = (0, 0);
            }
            if at_end {
                break;
            }
        }
        Ok(Packed { size, units })
    }

    fn solo_chunk(&mut self, s: &mut Spooled, data: &[u8], path: &str) -> Result<(), PackingError> {
        let id = self.hash(data);
        let stored = self.stored(&id, data, path)?;
        s.writer()
            .add(BlobKind::Chunk, *id.as_bytes(), &stored, data.len() as u32)
            .map_err(|source| PackingError::Spool {
                dir: self.settings.spool_dir.clone(),
                source,
            })?;
        Ok(())
    }

    /// A unit of one chunk: a blob of the data pack, unless the repository has it.
    fn data_blob(
        &mut self,
        id: blake3::Hash,
        data: &[u8],
        path: &str,
        coordinator: &mut dyn Coordinator,
    ) -> Result<(), PackingError> {
        if !coordinator.missing(&[*id.as_bytes()])?[0] {
            self.stats.known_units += 1;
            return Ok(());
        }
        self.stats.new_units += 1;
        let stored = self.stored(&id, data, path)?;
        if self.data.is_none() {
            self.data = Some(self.spool(PackKind::Data)?);
        }
        let dir = self.settings.spool_dir.clone();
        let p = self.data.as_mut().expect("opened");
        p.writer()
            .add(BlobKind::Data, *id.as_bytes(), &stored, data.len() as u32)
            .map_err(|source| PackingError::Spool { dir, source })?;
        if p.writer().len() >= PACK_TARGET {
            let p = self.data.take().expect("open");
            self.close(p, None, coordinator)?;
        }
        Ok(())
    }

    /// Hands the open data pack on.
    pub fn finish(
        mut self,
        coordinator: &mut dyn Coordinator,
    ) -> Result<PackingStats, PackingError> {
        if let Some(p) = self.data.take() {
            self.close(p, None, coordinator)?;
        }
        Ok(self.stats)
    }
}

#[cfg(test)]
mod tests {
    use std::io::Read;
    use std::sync::Arc;

    use tokio_util::sync::CancellationToken;

    use super::*;
    use crate::ids::BackupId;
    use crate::repository::packer::Packer;
    use crate::repository::{
        FileEntry, FileMeta, KeySource, LocalStorage, OpenOptions, RepoError, Repository, Storage,
    };

    /// The head as a test plays it: claims from its packer, packs put in the store and adopted.
    struct Head<'a> {
        packer: &'a mut Packer,
        store: Arc<dyn Storage>,
    }

    impl Coordinator for Head<'_> {
        fn missing(&mut self, ids: &[[u8; 32]]) -> Result<Vec<bool>, PackingError> {
            self.packer
                .claim_missing(ids)
                .map_err(|e| PackingError::Head(e.to_string()))
        }

        fn pack_done(
            &mut self,
            key: &str,
            path: &Path,
            size: u64,
            trailer: &Trailer,
        ) -> Result<(), PackingError> {
            put_spooled(self.store.as_ref(), key, path);
            self.packer
                .adopt(key, size, trailer)
                .map_err(|e: RepoError| PackingError::Head(e.to_string()))
        }
    }

    /// What an agent does with a finished pack in a bucket: put it, drop the spool file.
    fn put_spooled(store: &dyn Storage, key: &str, path: &Path) {
        let bytes = std::fs::read(path).unwrap();
        std::fs::remove_file(path).unwrap();
        store.put(key, &bytes).unwrap();
    }

    fn content(seed: u64, len: usize) -> Vec<u8> {
        let mut out = vec![0u8; len];
        let mut h = blake3::Hasher::new();
        h.update(&seed.to_le_bytes());
        h.finalize_xof().fill(&mut out);
        out
    }

    fn meta() -> FileMeta {
        FileMeta {
            mode: 0o644,
            mtime: 1,
            uid: 0,
            gid: 0,
        }
    }

    #[test]
    fn an_agent_packs_files_as_the_writer_stores_them_and_the_head_adopts_them() {
        for encrypted in [false, true] {
            let dir = tempfile::tempdir().unwrap();
            let key = KeySource {
                passphrase: zeroize::Zeroizing::new("a passphrase for the test".into()),
                slot: None,
                describe: "test".into(),
            };
            let store: Arc<dyn Storage> =
                Arc::new(LocalStorage::new(dir.path().join("repo")).unwrap());
            let repo = Repository::open_with(
                store.clone(),
                OpenOptions {
                    compression_level: 3,
                    key: encrypted.then_some(&key),
                    packed: true,
                    cache_dir: Some(dir.path().join("cache")),
                },
            )
            .unwrap();
            let chunk = repo.chunk_size();
            // Backed up by the head's writer first.
            let known = [content(1, 1000), content(2, 2 * chunk + chunk / 2)];
            let mut w = repo.begin_backup(
                BackupId::parse("20261207T000000Z").unwrap(),
                CancellationToken::new(),
            );
            let written: Vec<FileEntry> = known
                .iter()
                .enumerate()
                .map(|(i, c)| {
                    w.add_file(&format!("rondb/1/k{i}"), &mut &c[..], meta())
                        .unwrap()
                })
                .collect();
            w.commit(info()).unwrap();

            // The agent packs the same files and new ones.
            let new = [
                Vec::new(),
                content(3, 700),
                content(4, chunk),
                content(5, 2 * chunk + 17),
            ];
            repo.sync_index().unwrap();
            let mut packer = Packer::new(repo.clone()).unwrap();
            let keys = repo.keyring();
            let agent_keys = keys.as_deref().map(|k| k.for_agent(&[k.current()]));
            let spool = tempfile::tempdir().unwrap();
            let mut packing = Packing::new(PackingSettings {
                chunk_size: chunk,
                compression_level: 3,
                keys: agent_keys.as_ref(),
                spool_dir: spool.path().to_path_buf(),
            })
            .unwrap();
            let mut head = Head {
                packer: &mut packer,
                store: store.clone(),
            };
            let again: Vec<Packed> = known
                .iter()
                .map(|c| packing.add_file("k", &mut &c[..], &mut head).unwrap())
                .collect();
            assert_eq!(packing.stats.new_units, 0, "encrypted: {encrypted}");
            assert_eq!(packing.stats.known_units, 2);
            for (w, a) in written.iter().zip(&again) {
                assert_eq!((a.size, &a.units), (w.size, &w.units), "the writer's units");
            }
            let packed: Vec<Packed> = new
                .iter()
                .map(|c| packing.add_file("n", &mut &c[..], &mut head).unwrap())
                .collect();
            let stats = packing.finish(&mut head).unwrap();
            // Empty: no unit; 700 B and one chunk: data blobs; 2 chunks and 17 B: a solo pack.
            assert_eq!(
                packed.iter().map(|p| p.units.len()).collect::<Vec<_>>(),
                [0, 1, 1, 1]
            );
            assert_eq!(
                (stats.new_units, stats.packs),
                (3, 2),
                "one data and one solo pack"
            );
            assert_eq!(packer.unreported_claims(), 0);
            packer.finish().unwrap();
            assert_eq!(
                std::fs::read_dir(spool.path()).unwrap().count(),
                0,
                "nothing left in the spool"
            );
            // Read back through the repository's index, as a restore would.
            for (p, c) in packed.iter().zip(&new) {
                let entry = FileEntry {
                    path: "rondb/1/n".into(),
                    size: p.size,
                    meta: meta(),
                    hash: String::new(),
                    chunks: vec![],
                    units: p.units.clone(),
                    skip: 0,
                };
                let mut back = Vec::new();
                repo.open_file(&entry)
                    .unwrap()
                    .read_to_end(&mut back)
                    .unwrap();
                assert!(back == *c, "content of {} bytes read back", c.len());
            }
        }
    }

    /// The head as hopsdrd plays it: the backup's writer claims, adopts and records.
    struct WriterHead<'a> {
        w: &'a mut crate::repository::BackupWriter,
        store: Arc<dyn Storage>,
    }

    impl Coordinator for WriterHead<'_> {
        fn missing(&mut self, ids: &[[u8; 32]]) -> Result<Vec<bool>, PackingError> {
            self.w
                .claim_missing(ids)
                .map_err(|e| PackingError::Head(e.to_string()))
        }

        fn pack_done(
            &mut self,
            key: &str,
            path: &Path,
            size: u64,
            trailer: &Trailer,
        ) -> Result<(), PackingError> {
            put_spooled(self.store.as_ref(), key, path);
            self.w
                .adopt_pack(key, size, trailer)
                .map_err(|e| PackingError::Head(e.to_string()))
        }
    }

    fn info() -> crate::repository::BackupInfo {
        let now = chrono::Utc::now();
        crate::repository::BackupInfo {
            started_at: now,
            finished_at: now,
            hostname: "head".into(),
            hopsdr_version: "test".into(),
            components: vec![],
            facts: Default::default(),
        }
    }

    #[test]
    fn a_backup_commits_what_agents_stored_and_nothing_they_did_not() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Storage> = Arc::new(LocalStorage::new(dir.path().join("repo")).unwrap());
        let repo = Repository::open_with(
            store.clone(),
            OpenOptions {
                compression_level: 3,
                packed: true,
                cache_dir: Some(dir.path().join("cache")),
                ..Default::default()
            },
        )
        .unwrap();
        let chunk = repo.chunk_size();
        let files = [
            ("rondb/1/BACKUP/BACKUP-7/BACKUP-7.1.ctl", content(10, 3000)),
            (
                "rondb/1/BACKUP/BACKUP-7/BACKUP-7-0.1.Data",
                content(11, chunk + 5),
            ),
            ("rondb/1/BACKUP/BACKUP-7/BACKUP-7.1.log", Vec::new()),
        ];
        let spool = tempfile::tempdir().unwrap();
        let settings = || PackingSettings {
            chunk_size: chunk,
            compression_level: 3,
            keys: None,
            spool_dir: spool.path().to_path_buf(),
        };
        let id = BackupId::parse("20261207T010000Z").unwrap();
        let mut w = repo.begin_backup(id.clone(), CancellationToken::new());
        let mut head = WriterHead {
            w: &mut w,
            store: store.clone(),
        };
        let mut packing = Packing::new(settings()).unwrap();
        let mut stored = Vec::new();
        for (path, c) in &files {
            stored.push((
                path,
                packing.add_file(path, &mut &c[..], &mut head).unwrap(),
            ));
        }
        packing.finish(&mut head).unwrap();
        for (path, p) in stored {
            w.add_stored_file(path, p.size, p.units, meta()).unwrap();
        }
        // A unit nobody stored is not recorded.
        let e = w
            .add_stored_file(
                "rondb/1/x",
                1,
                vec![BlobId::of(&blake3::hash(b"never stored"))],
                meta(),
            )
            .unwrap_err();
        assert!(matches!(e, RepoError::NotIndexed { .. }), "{e}");
        w.commit(info()).unwrap();
        let m = repo.read_manifest(&id).unwrap();
        for (path, c) in &files {
            let entry = m
                .entries
                .iter()
                .find_map(|e| match e {
                    crate::repository::Entry::File(f) if f.path == *path => Some(f.clone()),
                    _ => None,
                })
                .unwrap_or_else(|| panic!("{path} in the manifest"));
            let mut back = Vec::new();
            repo.open_file(&entry)
                .unwrap()
                .read_to_end(&mut back)
                .unwrap();
            assert!(back == *c, "{path} read back");
        }

        // An agent that claimed a blob and never reported it: no manifest.
        let id2 = BackupId::parse("20261207T020000Z").unwrap();
        let mut w = repo.begin_backup(id2.clone(), CancellationToken::new());
        assert_eq!(w.claim_missing(&[[7u8; 32]]).unwrap(), [true]);
        let e = w.commit(info()).unwrap_err();
        assert!(matches!(e, RepoError::Unreported { count: 1 }), "{e}");
        assert!(repo.read_manifest(&id2).is_err(), "nothing committed");
    }
}
