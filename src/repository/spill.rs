//! A backup's stream records on their way to the repository: put in any order as the
//! components produce them, read back sorted by stream and key at commit, from a temporary
//! SQLite file (next to the index cache), so a volume of millions of block files costs disk,
//! not memory. A key put twice is refused (a path appears once in a backup).

use rusqlite::{params, Connection};

use super::error::{EntryDefect, RepoError};
use super::tree::{self, Op, Record};

/// See the module documentation.
pub struct Spill {
    conn: Connection,
    _file: tempfile::NamedTempFile,
    pending: u64,
    pub records: u64,
}

impl std::fmt::Debug for Spill {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Spill")
            .field("records", &self.records)
            .finish_non_exhaustive()
    }
}

fn sql(what: &'static str) -> impl Fn(rusqlite::Error) -> RepoError {
    move |e| RepoError::Spill(format!("{what}: {e}"))
}

/// Records are committed in batches of this many.
const BATCH: u64 = 10_000;

impl Spill {
    pub fn new(dir: &std::path::Path) -> Result<Spill, RepoError> {
        let file = tempfile::Builder::new()
            .prefix("streams-")
            .suffix(".sqlite")
            .tempfile_in(dir)
            .map_err(|e| RepoError::Spill(format!("create a file in {}: {e}", dir.display())))?;
        let conn = Connection::open(file.path()).map_err(sql("open"))?;
        conn.execute_batch(
            "PRAGMA journal_mode=OFF; PRAGMA synchronous=OFF; PRAGMA temp_store=FILE;
             CREATE TABLE records(prefix TEXT NOT NULL, key TEXT NOT NULL, rec BLOB NOT NULL,
                                  PRIMARY KEY (prefix, key)) WITHOUT ROWID;
             BEGIN;",
        )
        .map_err(sql("create"))?;
        Ok(Spill {
            conn,
            _file: file,
            pending: 0,
            records: 0,
        })
    }

    /// A record's key and encoded form, as [`Spill::put_encoded`] takes them (pure: done on
    /// any thread).
    pub fn encode(record: &Record) -> (String, Vec<u8>) {
        let key = record.key().into_owned();
        let rec = tree::encode_page(std::slice::from_ref(&Op::Put(record.clone())), false);
        (key, rec)
    }

    /// Adds `record` to stream `prefix`; `path` (its full logical path) names it if it is
    /// already there.
    pub fn put(&mut self, prefix: &str, record: &Record, path: &str) -> Result<(), RepoError> {
        let (key, rec) = Self::encode(record);
        self.put_encoded(prefix, &key, &rec, path)
    }

    /// [`Spill::put`] of a record [`Spill::encode`] made.
    pub fn put_encoded(
        &mut self,
        prefix: &str,
        key: &str,
        rec: &[u8],
        path: &str,
    ) -> Result<(), RepoError> {
        let n = self
            .conn
            .prepare_cached("INSERT OR IGNORE INTO records(prefix, key, rec) VALUES (?1, ?2, ?3)")
            .and_then(|mut s| s.execute(params![prefix, key, rec]))
            .map_err(sql("insert"))?;
        if n == 0 {
            return Err(RepoError::InvalidEntry {
                path: path.to_string(),
                defect: EntryDefect::Duplicate,
            });
        }
        self.records += 1;
        self.pending += 1;
        if self.pending >= BATCH {
            self.conn
                .execute_batch("COMMIT; BEGIN;")
                .map_err(sql("commit"))?;
            self.pending = 0;
        }
        Ok(())
    }

    /// Whether stream `prefix` holds `key`.
    pub fn contains(&self, prefix: &str, key: &str) -> Result<bool, RepoError> {
        self.conn
            .prepare_cached("SELECT 1 FROM records WHERE prefix = ?1 AND key = ?2")
            .and_then(|mut s| s.exists(params![prefix, key]))
            .map_err(sql("read"))
    }

    /// The streams, in order.
    pub fn prefixes(&mut self) -> Result<Vec<String>, RepoError> {
        self.conn
            .execute_batch("COMMIT; BEGIN;")
            .map_err(sql("commit"))?;
        self.pending = 0;
        let mut s = self
            .conn
            .prepare("SELECT DISTINCT prefix FROM records ORDER BY prefix")
            .map_err(sql("read"))?;
        let rows = s
            .query_map([], |r| r.get::<_, String>(0))
            .and_then(|rows| rows.collect::<Result<Vec<_>, _>>())
            .map_err(sql("read"));
        rows
    }

    /// How many records stream `prefix` holds.
    pub fn count(&self, prefix: &str) -> Result<u64, RepoError> {
        self.conn
            .query_row(
                "SELECT COUNT(*) FROM records WHERE prefix = ?1",
                params![prefix],
                |r| r.get::<_, i64>(0),
            )
            .map(|n| n as u64)
            .map_err(sql("read"))
    }

    /// Calls `f` with each record of stream `prefix`, sorted by key.
    pub fn each(
        &self,
        prefix: &str,
        mut f: impl FnMut(Record) -> Result<(), RepoError>,
    ) -> Result<(), RepoError> {
        let mut s = self
            .conn
            .prepare("SELECT rec FROM records WHERE prefix = ?1 ORDER BY key")
            .map_err(sql("read"))?;
        let mut rows = s.query(params![prefix]).map_err(sql("read"))?;
        while let Some(row) = rows.next().map_err(sql("read"))? {
            let bytes: Vec<u8> = row.get(0).map_err(sql("read"))?;
            let mut ops = tree::decode_page(&bytes, false)
                .map_err(|e| RepoError::Spill(format!("a spilled record does not decode: {e}")))?;
            match ops.pop() {
                Some(Op::Put(r)) => f(r)?,
                _ => return Err(RepoError::Spill("a spilled record is empty".into())),
            }
        }
        Ok(())
    }
}
