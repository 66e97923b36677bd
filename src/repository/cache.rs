//! The local index cache (format 3): a SQLite file mirroring the repository's current index
//! objects, so that "does the repository hold blob X, and where" is one indexed lookup on disk,
//! whatever the repository's size, and a backup never lists the blobs of the store.
//!
//! It holds nothing the repository does not: [`IndexCache::sync`] brings it up to date from the
//! listing of `index/` (fetching only the objects it has not ingested), and rebuilds it from
//! scratch when an object it ingested is gone or a new one supersedes one (a garbage collection
//! ran). Deleting the file loses nothing. It is not the catalog (the catalog is copied into
//! every backup and must stay small).

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use rusqlite::{params, Connection, OptionalExtension};

use super::index::{self, EntryKind, IndexObject, Location};

/// A cache that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error("index cache {path}: {source}")]
    Sqlite {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
}

/// How much of one pack is still referenced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PackLiveness {
    pub pack: [u8; 16],
    pub live: u64,
    pub dead: u64,
    pub dead_bytes: u64,
    /// Where its last indexed blob ends (a solo pack: its size).
    pub end: u64,
    pub solo: bool,
}

/// What a [`IndexCache::sync`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SyncReport {
    pub fetched: u64,
    pub rebuilt: bool,
    pub current: u64,
}

/// See the module documentation.
pub struct IndexCache {
    conn: Connection,
    path: PathBuf,
}

impl std::fmt::Debug for IndexCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IndexCache")
            .field("path", &self.path)
            .finish()
    }
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS objects(key TEXT PRIMARY KEY, seq INTEGER NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS superseded(key TEXT PRIMARY KEY) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS blobs(
    id BLOB NOT NULL, seq INTEGER NOT NULL, pack BLOB NOT NULL, kind INTEGER NOT NULL,
    offset INTEGER NOT NULL, stored INTEGER NOT NULL, raw INTEGER NOT NULL,
    PRIMARY KEY (id, seq)) WITHOUT ROWID;
";

impl IndexCache {
    /// Opens (creating) the cache at `path`; a file that is not a usable cache is replaced.
    pub fn open(path: &Path) -> Result<IndexCache, CacheError> {
        match Self::open_once(path) {
            Ok(c) => Ok(c),
            Err(_) => {
                // Only a cache: start again.
                for suffix in ["", "-wal", "-shm"] {
                    let mut p = path.as_os_str().to_owned();
                    p.push(suffix);
                    let _ = std::fs::remove_file(PathBuf::from(p));
                }
                Self::open_once(path)
            }
        }
    }

    fn open_once(path: &Path) -> Result<IndexCache, CacheError> {
        let err = |source| CacheError::Sqlite {
            path: path.to_path_buf(),
            source,
        };
        let conn = Connection::open(path).map_err(err)?;
        conn.busy_timeout(std::time::Duration::from_secs(30))
            .map_err(err)?;
        conn.execute_batch("PRAGMA journal_mode=WAL; PRAGMA synchronous=OFF;")
            .map_err(err)?;
        conn.execute_batch(SCHEMA).map_err(err)?;
        Ok(IndexCache {
            conn,
            path: path.to_path_buf(),
        })
    }

    fn err(&self, source: rusqlite::Error) -> CacheError {
        CacheError::Sqlite {
            path: self.path.clone(),
            source,
        }
    }

    /// Where blob (or unit) `id` is; the copy listed by the newest object wins.
    pub fn lookup(&self, id: &[u8; 32]) -> Result<Option<Location>, CacheError> {
        self.conn
            .prepare_cached(
                "SELECT pack, kind, offset, stored, raw FROM blobs WHERE id = ?1
                 ORDER BY seq DESC LIMIT 1",
            )
            .and_then(|mut s| {
                s.query_row(params![&id[..]], |r| {
                    let pack: Vec<u8> = r.get(0)?;
                    let kind: u8 = r.get(1)?;
                    Ok((pack, kind, r.get(2)?, r.get(3)?, r.get(4)?))
                })
                .optional()
            })
            .map_err(|e| self.err(e))
            .map(|row| {
                row.and_then(|(pack, kind, offset, stored_len, raw_len)| {
                    Some(Location {
                        pack: pack.try_into().ok()?,
                        kind: EntryKind::from_code(kind)?,
                        offset,
                        stored_len,
                        raw_len,
                    })
                })
            })
    }

    /// The highest `seq` ingested (0 when empty).
    pub fn max_seq(&self) -> Result<u64, CacheError> {
        self.conn
            .query_row("SELECT COALESCE(MAX(seq), 0) FROM objects", [], |r| {
                r.get::<_, i64>(0)
            })
            .map(|s| s as u64)
            .map_err(|e| self.err(e))
    }

    /// Number of blob locations held.
    pub fn len(&self) -> Result<u64, CacheError> {
        self.conn
            .query_row("SELECT COUNT(*) FROM blobs", [], |r| r.get::<_, i64>(0))
            .map(|n| n as u64)
            .map_err(|e| self.err(e))
    }

    pub fn is_empty(&self) -> Result<bool, CacheError> {
        Ok(self.len()? == 0)
    }

    /// The keys of the current index objects ingested.
    pub fn objects(&self) -> Result<Vec<String>, CacheError> {
        let mut s = self
            .conn
            .prepare("SELECT key FROM objects ORDER BY key")
            .map_err(|e| self.err(e))?;
        let rows = s
            .query_map([], |r| r.get::<_, String>(0))
            .and_then(|rows| rows.collect::<Result<Vec<_>, _>>());
        rows.map_err(|e| self.err(e))
    }

    /// Records index object `key` (just written by this process, or fetched).
    pub fn ingest(&mut self, key: &str, obj: &IndexObject) -> Result<(), CacheError> {
        let tx = self.conn.transaction().map_err(|e| CacheError::Sqlite {
            path: self.path.clone(),
            source: e,
        })?;
        let result = (|| {
            {
                let mut ins = tx.prepare_cached(
                    "INSERT OR REPLACE INTO blobs(id, seq, pack, kind, offset, stored, raw)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                )?;
                for (id, l) in obj.locations() {
                    ins.execute(params![
                        &id[..],
                        obj.seq as i64,
                        &l.pack[..],
                        l.kind.code(),
                        l.offset,
                        l.stored_len,
                        l.raw_len
                    ])?;
                }
                let mut sup =
                    tx.prepare_cached("INSERT OR IGNORE INTO superseded(key) VALUES (?1)")?;
                for h in &obj.supersedes {
                    sup.execute(params![index::key_of(h)])?;
                }
            }
            tx.execute(
                "INSERT OR REPLACE INTO objects(key, seq) VALUES (?1, ?2)",
                params![key, obj.seq as i64],
            )?;
            tx.commit()
        })();
        result.map_err(|e| self.err(e))
    }

    /// Forgets everything.
    pub fn clear(&mut self) -> Result<(), CacheError> {
        self.conn
            .execute_batch("DELETE FROM blobs; DELETE FROM objects; DELETE FROM superseded;")
            .map_err(|e| self.err(e))
    }

    /// Brings the cache up to date with the index objects `listed` (every key under `index/`),
    /// fetching with `fetch` those not ingested yet. Rebuilds from scratch (fetching every
    /// current object) when an ingested object is gone or a new one supersedes an ingested one.
    pub fn sync<E>(
        &mut self,
        listed: &[String],
        mut fetch: impl FnMut(&str) -> Result<IndexObject, E>,
    ) -> Result<SyncReport, SyncError<E>> {
        let listed: Vec<&String> = listed
            .iter()
            .filter(|k| index::hash_of_key(k).is_some())
            .collect();
        let listed_set: HashSet<&str> = listed.iter().map(|k| k.as_str()).collect();
        let known: HashSet<String> = self.objects()?.into_iter().collect();
        let superseded: HashSet<String> = self.superseded()?;
        let mut report = SyncReport::default();
        let mut rebuild = known.iter().any(|k| !listed_set.contains(k.as_str()));
        if !rebuild {
            for key in listed
                .iter()
                .filter(|k| !known.contains(k.as_str()) && !superseded.contains(k.as_str()))
            {
                // An object that does not read may be one a newer object supersedes (a
                // repaired index): the rebuild below decides.
                let Ok(obj) = fetch(key) else {
                    rebuild = true;
                    break;
                };
                report.fetched += 1;
                if obj
                    .supersedes
                    .iter()
                    .any(|h| known.contains(&index::key_of(h)))
                {
                    rebuild = true;
                    break;
                }
                self.ingest(key, &obj)?;
            }
        }
        if rebuild {
            report.rebuilt = true;
            // First which objects are superseded, then ingest the others.
            let mut gone: HashSet<String> = HashSet::new();
            let mut unreadable = Vec::new();
            for key in &listed {
                match fetch(key) {
                    Ok(obj) => gone.extend(obj.supersedes.iter().map(index::key_of)),
                    Err(e) => unreadable.push((key.to_string(), e)),
                }
                report.fetched += 1;
            }
            // Unreadable and not replaced: the index is damaged (repair-index rebuilds it).
            if let Some((key, e)) = unreadable.into_iter().find(|(k, _)| !gone.contains(k)) {
                return Err(SyncError::Fetch(key, e));
            }
            self.clear()?;
            for key in listed.iter().filter(|k| !gone.contains(k.as_str())) {
                let obj = fetch(key).map_err(|e| SyncError::Fetch(key.to_string(), e))?;
                report.fetched += 1;
                self.ingest(key, &obj)?;
            }
            for key in listed.iter().filter(|k| gone.contains(k.as_str())) {
                self.conn
                    .execute(
                        "INSERT OR IGNORE INTO superseded(key) VALUES (?1)",
                        params![key.as_str()],
                    )
                    .map_err(|e| self.err(e))?;
            }
        }
        report.current = self.objects()?.len() as u64;
        Ok(report)
    }

    /// Starts a mark (garbage collection, check): an empty set of live ids, on disk.
    pub fn begin_mark(&mut self) -> Result<(), CacheError> {
        self.conn
            .execute_batch(
                "PRAGMA temp_store=FILE;
                 DROP TABLE IF EXISTS temp.live;
                 CREATE TEMP TABLE live(id BLOB PRIMARY KEY) WITHOUT ROWID;",
            )
            .map_err(|e| self.err(e))
    }

    /// Starts a set of ids seen (a verify reads each unit once), on disk.
    pub fn begin_seen(&mut self) -> Result<(), CacheError> {
        self.conn
            .execute_batch(
                "PRAGMA temp_store=FILE;
                 DROP TABLE IF EXISTS temp.seen;
                 CREATE TEMP TABLE seen(id BLOB PRIMARY KEY) WITHOUT ROWID;",
            )
            .map_err(|e| self.err(e))
    }

    /// Adds `ids` to the seen set; returns how many were not in it.
    pub fn see(&mut self, ids: &[[u8; 32]]) -> Result<u64, CacheError> {
        self.insert_into("temp.seen", ids)
    }

    /// Marks `ids` live; returns how many were not marked before.
    pub fn mark(&mut self, ids: &[[u8; 32]]) -> Result<u64, CacheError> {
        self.insert_into("temp.live", ids)
    }

    fn insert_into(&mut self, table: &str, ids: &[[u8; 32]]) -> Result<u64, CacheError> {
        let tx = self.conn.transaction().map_err(|e| CacheError::Sqlite {
            path: self.path.clone(),
            source: e,
        })?;
        let result = (|| {
            let mut n = 0u64;
            {
                let mut ins =
                    tx.prepare_cached(&format!("INSERT OR IGNORE INTO {table}(id) VALUES (?1)"))?;
                for id in ids {
                    n += ins.execute(params![&id[..]])? as u64;
                }
            }
            tx.commit()?;
            Ok(n)
        })();
        result.map_err(|e| self.err(e))
    }

    /// A marked id the index does not locate, if any.
    pub fn unindexed_live(&self) -> Result<Option<[u8; 32]>, CacheError> {
        self.conn
            .query_row(
                "SELECT l.id FROM temp.live l WHERE NOT EXISTS
                   (SELECT 1 FROM blobs b WHERE b.id = l.id) LIMIT 1",
                [],
                |r| r.get::<_, Vec<u8>>(0),
            )
            .optional()
            .map(|v| v.and_then(|v| v.try_into().ok()))
            .map_err(|e| self.err(e))
    }

    /// Whether `id` is marked.
    pub fn is_marked(&self, id: &[u8; 32]) -> Result<bool, CacheError> {
        self.conn
            .prepare_cached("SELECT 1 FROM temp.live WHERE id = ?1")
            .and_then(|mut s| s.exists(params![&id[..]]))
            .map_err(|e| self.err(e))
    }

    /// Per pack: (pack, live entries, dead entries, dead stored bytes, end of its last blob).
    pub fn pack_liveness(&self) -> Result<Vec<PackLiveness>, CacheError> {
        let mut s = self
            .conn
            .prepare(
                "SELECT b.pack,
                        SUM(CASE WHEN l.id IS NULL THEN 0 ELSE 1 END),
                        SUM(CASE WHEN l.id IS NULL THEN 1 ELSE 0 END),
                        SUM(CASE WHEN l.id IS NULL THEN b.stored ELSE 0 END),
                        MAX(CASE WHEN b.kind = 3 THEN b.stored ELSE b.offset + b.stored END),
                        MAX(b.kind = 3)
                 FROM (SELECT id, pack, kind, offset, stored, MAX(seq) FROM blobs
                       GROUP BY id) b
                 LEFT JOIN temp.live l ON l.id = b.id
                 GROUP BY b.pack ORDER BY b.pack",
            )
            .map_err(|e| self.err(e))?;
        let rows = s
            .query_map([], |r| {
                let pack: Vec<u8> = r.get(0)?;
                Ok(PackLiveness {
                    pack: pack.try_into().unwrap_or([0; 16]),
                    live: r.get::<_, i64>(1)? as u64,
                    dead: r.get::<_, i64>(2)? as u64,
                    dead_bytes: r.get::<_, i64>(3)? as u64,
                    end: r.get::<_, i64>(4)? as u64,
                    solo: r.get::<_, i64>(5)? != 0,
                })
            })
            .and_then(|rows| rows.collect::<Result<Vec<_>, _>>());
        rows.map_err(|e| self.err(e))
    }

    /// Calls `f` with every current location whose id is marked live (newest copy of each),
    /// in id order, excluding packs in `dropped`.
    pub fn each_live(
        &self,
        dropped: &HashSet<[u8; 16]>,
        mut f: impl FnMut([u8; 32], Location) -> Result<(), CacheError>,
    ) -> Result<(), CacheError> {
        let mut s = self
            .conn
            .prepare(
                "SELECT b.id, b.pack, b.kind, b.offset, b.stored, b.raw
                 FROM blobs b JOIN temp.live l ON l.id = b.id
                 WHERE b.seq = (SELECT MAX(seq) FROM blobs c WHERE c.id = b.id)
                 ORDER BY b.id",
            )
            .map_err(|e| self.err(e))?;
        let mut rows = s.query([]).map_err(|e| self.err(e))?;
        while let Some(r) = rows.next().map_err(|e| self.err(e))? {
            let id: Vec<u8> = r.get(0).map_err(|e| self.err(e))?;
            let pack: Vec<u8> = r.get(1).map_err(|e| self.err(e))?;
            let kind: u8 = r.get(2).map_err(|e| self.err(e))?;
            let (Ok(id), Ok(pack), Some(kind)) = (
                <[u8; 32]>::try_from(id),
                <[u8; 16]>::try_from(pack),
                EntryKind::from_code(kind),
            ) else {
                continue;
            };
            if dropped.contains(&pack) {
                continue;
            }
            let loc = Location {
                pack,
                kind,
                offset: r.get(3).map_err(|e| self.err(e))?,
                stored_len: r.get(4).map_err(|e| self.err(e))?,
                raw_len: r.get(5).map_err(|e| self.err(e))?,
            };
            f(id, loc)?;
        }
        Ok(())
    }

    /// The keys of index objects a current one supersedes (garbage once no longer locked).
    pub fn superseded_keys(&self) -> Result<HashSet<String>, CacheError> {
        self.superseded()
    }

    /// The marked ids whose newest copy is in `pack`, with their locations, by offset.
    pub fn live_in_pack(&self, pack: &[u8; 16]) -> Result<Vec<([u8; 32], Location)>, CacheError> {
        let mut s = self
            .conn
            .prepare(
                "SELECT b.id, b.kind, b.offset, b.stored, b.raw
                 FROM blobs b JOIN temp.live l ON l.id = b.id
                 WHERE b.pack = ?1
                   AND b.seq = (SELECT MAX(seq) FROM blobs c WHERE c.id = b.id)
                 ORDER BY b.offset",
            )
            .map_err(|e| self.err(e))?;
        let rows = s
            .query_map(params![&pack[..]], |r| {
                let id: Vec<u8> = r.get(0)?;
                let kind: u8 = r.get(1)?;
                Ok((id, kind, r.get(2)?, r.get(3)?, r.get(4)?))
            })
            .and_then(|rows| rows.collect::<Result<Vec<_>, _>>())
            .map_err(|e| self.err(e))?;
        Ok(rows
            .into_iter()
            .filter_map(|(id, kind, offset, stored_len, raw_len)| {
                Some((
                    <[u8; 32]>::try_from(id).ok()?,
                    Location {
                        pack: *pack,
                        kind: EntryKind::from_code(kind)?,
                        offset,
                        stored_len,
                        raw_len,
                    },
                ))
            })
            .collect())
    }

    fn superseded(&self) -> Result<HashSet<String>, CacheError> {
        let mut s = self
            .conn
            .prepare("SELECT key FROM superseded")
            .map_err(|e| self.err(e))?;
        let rows = s
            .query_map([], |r| r.get::<_, String>(0))
            .and_then(|rows| rows.collect::<Result<HashSet<_>, _>>());
        rows.map_err(|e| self.err(e))
    }
}

/// Why [`IndexCache::sync`] failed: the cache, or fetching one index object (named).
#[derive(Debug, thiserror::Error)]
pub enum SyncError<E> {
    #[error(transparent)]
    Cache(#[from] CacheError),
    #[error("index object '{0}': {1}")]
    Fetch(String, E),
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn obj(seq: u64, supersedes: Vec<[u8; 32]>, ids: &[u8], pack: u8) -> IndexObject {
        IndexObject::build(
            seq,
            0,
            supersedes,
            ids.iter()
                .map(|&i| {
                    (
                        [i; 32],
                        Location {
                            pack: [pack; 16],
                            kind: EntryKind::Data,
                            offset: 16 + i as u32,
                            stored_len: 1,
                            raw_len: 1,
                        },
                    )
                })
                .collect(),
        )
    }

    struct Store(HashMap<String, IndexObject>, u64);

    impl Store {
        fn put(&mut self, h: u8, o: IndexObject) -> String {
            let k = index::key_of(&[h; 32]);
            self.0.insert(k.clone(), o);
            k
        }
        fn keys(&self) -> Vec<String> {
            let mut k: Vec<String> = self.0.keys().cloned().collect();
            k.sort();
            k
        }
        fn sync(&mut self, c: &mut IndexCache) -> SyncReport {
            let keys = self.keys();
            let fetches = &mut self.1;
            let map = &self.0;
            c.sync(&keys, |k| {
                *fetches += 1;
                map.get(k).cloned().ok_or("gone")
            })
            .unwrap()
        }
    }

    #[test]
    fn sync_fetches_only_new_objects_and_rebuilds_after_a_collection() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = IndexCache::open(&dir.path().join("c.db")).unwrap();
        let mut s = Store(HashMap::new(), 0);
        s.put(1, obj(1, vec![], &[1, 2], 1));
        s.put(2, obj(2, vec![], &[3], 2));
        let r = s.sync(&mut c);
        assert_eq!((r.fetched, r.rebuilt, r.current), (2, false, 2));
        assert_eq!(c.lookup(&[3; 32]).unwrap().unwrap().pack, [2; 16]);
        assert!(c.lookup(&[9; 32]).unwrap().is_none());
        // Nothing new: nothing fetched.
        assert_eq!(s.sync(&mut c).fetched, 0);
        // A newer object listing blob 2 elsewhere wins.
        s.put(3, obj(3, vec![], &[2], 3));
        assert_eq!(s.sync(&mut c).fetched, 1);
        assert_eq!(c.lookup(&[2; 32]).unwrap().unwrap().pack, [3; 16]);
        assert_eq!(c.max_seq().unwrap(), 3);
        // A collection: a new generation supersedes 1 and 2 (still present, locked, say).
        s.put(4, obj(4, vec![[1; 32], [2; 32]], &[1], 4));
        let r = s.sync(&mut c);
        assert!(r.rebuilt);
        assert_eq!(r.current, 2, "objects 3 and 4");
        assert!(c.lookup(&[3; 32]).unwrap().is_none(), "superseded");
        assert_eq!(c.lookup(&[1; 32]).unwrap().unwrap().pack, [4; 16]);
        // The superseded objects are not fetched again while they stay.
        assert_eq!(s.sync(&mut c).fetched, 0);
        // An ingested object deleted: rebuilt.
        s.0.remove(&index::key_of(&[3; 32]));
        let r = s.sync(&mut c);
        assert!(r.rebuilt);
        assert!(c.lookup(&[2; 32]).unwrap().is_none());
        assert_eq!(c.len().unwrap(), 1);
    }

    #[test]
    fn a_damaged_file_is_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.db");
        std::fs::write(&p, b"not a database at all, not at all").unwrap();
        let c = IndexCache::open(&p).unwrap();
        assert!(c.is_empty().unwrap());
    }
}
