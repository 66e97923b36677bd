//! The catalog: the daemon's SQLite index of jobs, backups and their components, the last fire
//! of every schedule, and the audit log of who asked for what.
//!
//! It is an index, never the only copy of anything a restore needs: every backup's facts are in
//! its manifest in the repository. The schema is migrated by `PRAGMA user_version`; the database
//! runs in WAL mode with a busy timeout so that a reader never fails on a writer.

use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use rusqlite::{params, Connection, OptionalExtension};
use serde::{Deserialize, Serialize};

use crate::ids::{BackupId, JobId, RestoreId};

/// Errors of the catalog, each naming the database file.
/// What to do when the catalog's file system is full.
fn full_hint(e: &rusqlite::Error) -> &'static str {
    if e.sqlite_error_code() == Some(rusqlite::ErrorCode::DiskFull) {
        " (the file system of the catalog is full: make room there; nothing was recorded or started)"
    } else {
        ""
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("failed to open catalog \"{path}\": {source}")]
    Open {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error("failed to create directory for catalog \"{path}\": {source}")]
    CreateDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("failed to migrate catalog \"{path}\" to schema {version}: {source}")]
    Migrate {
        path: PathBuf,
        version: i64,
        source: rusqlite::Error,
    },
    #[error(
        "catalog \"{path}\" has schema version {found}, newer than this hopsdr knows ({known}): upgrade hopsdr"
    )]
    TooNew {
        path: PathBuf,
        found: i64,
        known: i64,
    },
    #[error("catalog \"{path}\": failed to {what}: {source}{}", full_hint(.source))]
    Query {
        path: PathBuf,
        what: &'static str,
        source: rusqlite::Error,
    },
    #[error("catalog \"{path}\": bad value {value:?} in column {column}")]
    BadValue {
        path: PathBuf,
        column: &'static str,
        value: String,
    },
    #[error("catalog copy \"{path}\": {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{what} is {from}: it cannot become {to}")]
    Transition {
        what: String,
        from: &'static str,
        to: &'static str,
    },
}

pub use crate::domain::{JobKind, RestoreState, State, StepState};

/// A job as recorded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobRecord {
    pub id: JobId,
    pub kind: JobKind,
    pub state: State,
    /// `api:uid=0` or `schedule:<name>`.
    pub trigger: String,
    pub backup_id: Option<BackupId>,
    pub created_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    pub error: Option<String>,
}

/// A backup as recorded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BackupRecord {
    pub id: BackupId,
    pub job_id: JobId,
    pub state: State,
    pub started_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    pub logical_bytes: u64,
    pub stored_bytes: u64,
    pub files: u64,
    pub error: Option<String>,
    /// The RonDB backup id (`BACKUP-<id>` on the data nodes), when the backup has a RonDB part.
    pub rondb_backup_id: Option<u32>,
    /// Kept by retention whatever the policy says (`hopsdrctl backup pin`).
    #[serde(default)]
    pub pinned: bool,
    /// When the last verification found the backup whole (none since it was damaged).
    #[serde(default)]
    pub verified_at: Option<DateTime<Utc>>,
    /// The last verification found damage: the backup no longer counts as verified.
    #[serde(default)]
    pub damaged: bool,
    /// Its HopsFS blocks were copied without checking them against the blocks the backed-up
    /// metadata references (no `[hopsfs] referenced_blocks`): complete only as far as nobody
    /// checked.
    #[serde(default)]
    pub hopsfs_unchecked: bool,
}

/// One component (files, rondb, hopsfs, ...) of a backup as recorded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ComponentRecord {
    pub backup_id: BackupId,
    pub component: String,
    pub state: State,
    pub started_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    pub logical_bytes: u64,
    pub stored_bytes: u64,
    pub files: u64,
    pub error: Option<String>,
}

/// One audited request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditRecord {
    pub at: DateTime<Utc>,
    pub uid: u32,
    pub pid: i32,
    pub action: String,
    pub allowed: bool,
    pub detail: String,
}

/// A restore as recorded: its plan and options (JSON) and every step's state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RestoreRecord {
    pub id: RestoreId,
    pub backup_id: BackupId,
    pub state: RestoreState,
    pub options: String,
    pub plan: String,
    pub created_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    pub error: Option<String>,
    pub steps: Vec<RestoreStepRecord>,
}

/// One step of a restore as recorded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RestoreStepRecord {
    pub idx: usize,
    pub state: StepState,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    pub detail: String,
    pub error: Option<String>,
}

/// The last successful backup of a component.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LastSuccess {
    pub component: String,
    pub backup_id: BackupId,
    pub finished_at: DateTime<Utc>,
    pub duration_seconds: f64,
    pub logical_bytes: u64,
    pub stored_bytes: u64,
}

const MIGRATIONS: &[&str] = &[
    // 1: the first schema.
    "CREATE TABLE jobs (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        kind TEXT NOT NULL,
        state TEXT NOT NULL,
        trigger TEXT NOT NULL,
        backup_id TEXT,
        created_at TEXT NOT NULL,
        finished_at TEXT,
        error TEXT
     );
     CREATE TABLE backups (
        id TEXT PRIMARY KEY,
        job_id INTEGER NOT NULL REFERENCES jobs(id),
        state TEXT NOT NULL,
        started_at TEXT NOT NULL,
        finished_at TEXT,
        logical_bytes INTEGER NOT NULL DEFAULT 0,
        stored_bytes INTEGER NOT NULL DEFAULT 0,
        files INTEGER NOT NULL DEFAULT 0,
        error TEXT
     );
     CREATE TABLE backup_components (
        backup_id TEXT NOT NULL REFERENCES backups(id),
        component TEXT NOT NULL,
        state TEXT NOT NULL,
        started_at TEXT NOT NULL,
        finished_at TEXT,
        logical_bytes INTEGER NOT NULL DEFAULT 0,
        stored_bytes INTEGER NOT NULL DEFAULT 0,
        files INTEGER NOT NULL DEFAULT 0,
        error TEXT,
        PRIMARY KEY (backup_id, component)
     );
     CREATE TABLE schedule_fires (
        name TEXT PRIMARY KEY,
        last_fire TEXT NOT NULL,
        last_outcome TEXT NOT NULL
     );
     CREATE TABLE audit (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        at TEXT NOT NULL,
        uid INTEGER NOT NULL,
        pid INTEGER NOT NULL,
        action TEXT NOT NULL,
        allowed INTEGER NOT NULL,
        detail TEXT NOT NULL
     );
     CREATE INDEX backups_started ON backups(started_at);",
    // 2: the RonDB backup id of a backup (unique for the cluster, never reused).
    "ALTER TABLE backups ADD COLUMN rondb_backup_id INTEGER;
     CREATE TABLE rondb_ids (id INTEGER PRIMARY KEY);",
    // 3: restores and their steps (the persisted state machine).
    "CREATE TABLE restores (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        backup_id TEXT NOT NULL,
        state TEXT NOT NULL,
        options TEXT NOT NULL,
        plan TEXT NOT NULL,
        created_at TEXT NOT NULL,
        finished_at TEXT,
        error TEXT
     );
     CREATE TABLE restore_steps (
        restore_id INTEGER NOT NULL REFERENCES restores(id),
        idx INTEGER NOT NULL,
        state TEXT NOT NULL,
        started_at TEXT,
        finished_at TEXT,
        detail TEXT NOT NULL DEFAULT '',
        error TEXT,
        PRIMARY KEY (restore_id, idx)
     );",
    // 4: retention and verification facts of a backup.
    "ALTER TABLE backups ADD COLUMN pinned INTEGER NOT NULL DEFAULT 0;
     ALTER TABLE backups ADD COLUMN verified_at TEXT;
     ALTER TABLE backups ADD COLUMN damaged INTEGER NOT NULL DEFAULT 0;",
    // 5: blobs found damaged or missing, until a backup writes them again.
    "CREATE TABLE bad_blobs (
        key TEXT PRIMARY KEY,
        found_at TEXT NOT NULL,
        backup_id TEXT NOT NULL,
        reason TEXT NOT NULL
     );",
    // 6: HopsFS blocks copied without the coverage check.
    "ALTER TABLE backups ADD COLUMN hopsfs_unchecked INTEGER NOT NULL DEFAULT 0;",
];

/// Inserts or replaces component rows of a backup.
fn upsert_components(conn: &Connection, comps: &[ComponentRecord]) -> rusqlite::Result<()> {
    for c in comps {
        conn.execute(
            "INSERT INTO backup_components (backup_id, component, state, started_at, finished_at, logical_bytes, stored_bytes, files, error)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
             ON CONFLICT(backup_id, component) DO UPDATE SET state=?3, started_at=?4, finished_at=?5,
               logical_bytes=?6, stored_bytes=?7, files=?8, error=?9",
            params![
                c.backup_id.as_str(),
                c.component,
                c.state.as_str(),
                ts(c.started_at),
                c.finished_at.map(ts),
                c.logical_bytes as i64,
                c.stored_bytes as i64,
                c.files as i64,
                c.error
            ],
        )?;
    }
    Ok(())
}

/// Records a RonDB backup id as used (inside the caller's transaction).
fn note_rondb_id(tx: &rusqlite::Transaction<'_>, id: Option<u32>) -> rusqlite::Result<()> {
    if let Some(r) = id {
        tx.execute(
            "INSERT OR IGNORE INTO rondb_ids (id) VALUES (?1)",
            params![r],
        )?;
    }
    Ok(())
}

fn ts(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// The catalog database. Not `Sync`: the daemon keeps it behind a mutex; queries are short.
#[derive(Debug)]
pub struct Catalog {
    conn: Connection,
    path: PathBuf,
}

impl Catalog {
    /// Opens (creating if needed) the catalog at `path` and migrates it to the current schema.
    pub fn open(path: &Path) -> Result<Catalog, CatalogError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| CatalogError::CreateDir {
                path: dir.to_path_buf(),
                source,
            })?;
        }
        let conn = Connection::open(path).map_err(|source| CatalogError::Open {
            path: path.to_path_buf(),
            source,
        })?;
        let mut cat = Catalog {
            conn,
            path: path.to_path_buf(),
        };
        cat.setup()?;
        Ok(cat)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn q(&self, what: &'static str) -> impl FnOnce(rusqlite::Error) -> CatalogError + '_ {
        move |source| CatalogError::Query {
            path: self.path.clone(),
            what,
            source,
        }
    }

    fn setup(&mut self) -> Result<(), CatalogError> {
        let open_err = |source| CatalogError::Open {
            path: self.path.clone(),
            source,
        };
        self.conn
            .busy_timeout(Duration::from_secs(10))
            .map_err(open_err)?;
        self.conn
            .pragma_update(None, "journal_mode", "WAL")
            .map_err(|source| CatalogError::Open {
                path: self.path.clone(),
                source,
            })?;
        self.conn
            // Every committed transaction is durable: a backup recorded complete (or forgotten)
            // stays so after a power loss.
            .pragma_update(None, "synchronous", "FULL")
            .map_err(|source| CatalogError::Open {
                path: self.path.clone(),
                source,
            })?;
        self.conn
            .pragma_update(None, "foreign_keys", "ON")
            .map_err(|source| CatalogError::Open {
                path: self.path.clone(),
                source,
            })?;
        let version: i64 = self
            .conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(|source| CatalogError::Open {
                path: self.path.clone(),
                source,
            })?;
        let known = MIGRATIONS.len() as i64;
        if version > known {
            return Err(CatalogError::TooNew {
                path: self.path.clone(),
                found: version,
                known,
            });
        }
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(version as usize) {
            let to = i as i64 + 1;
            let path = self.path.clone();
            let mig = |source| CatalogError::Migrate {
                path: path.clone(),
                version: to,
                source,
            };
            let tx = self.conn.transaction().map_err(mig)?;
            tx.execute_batch(sql).map_err(mig)?;
            tx.pragma_update(None, "user_version", to).map_err(mig)?;
            tx.commit().map_err(mig)?;
        }
        Ok(())
    }

    /// Marks every job and backup left `running` or `queued` (by a crash) as `interrupted`.
    /// Returns the ids of the jobs so marked.
    pub fn mark_interrupted(&mut self, now: DateTime<Utc>) -> Result<Vec<JobId>, CatalogError> {
        let msg = "interrupted: hopsdrd stopped before the job finished";
        let tx = self
            .conn
            .transaction()
            .map_err(|source| CatalogError::Query {
                path: self.path.clone(),
                what: "begin transaction",
                source,
            })?;
        let ids: Vec<JobId> = {
            let mut st = tx
                .prepare("SELECT id FROM jobs WHERE state IN ('running','queued') ORDER BY id")
                .map_err(|source| CatalogError::Query {
                    path: self.path.clone(),
                    what: "list unfinished jobs",
                    source,
                })?;
            let rows = st
                .query_map([], |r| r.get::<_, i64>(0))
                .and_then(|rows| rows.collect::<Result<Vec<_>, _>>())
                .map_err(|source| CatalogError::Query {
                    path: self.path.clone(),
                    what: "list unfinished jobs",
                    source,
                })?;
            rows.into_iter().map(JobId).collect()
        };
        let upd = |sql: &str| {
            tx.execute(sql, params![ts(now), msg])
                .map_err(|source| CatalogError::Query {
                    path: self.path.clone(),
                    what: "mark interrupted",
                    source,
                })
        };
        upd("UPDATE jobs SET state='interrupted', finished_at=?1, error=?2 WHERE state IN ('running','queued')")?;
        upd("UPDATE backups SET state='interrupted', finished_at=?1, error=?2 WHERE state IN ('running','queued')")?;
        upd("UPDATE backup_components SET state='interrupted', finished_at=?1, error=?2 WHERE state IN ('running','queued')")?;
        upd("UPDATE restores SET state='interrupted', finished_at=?1, error=?2 WHERE state='running'")?;
        upd("UPDATE restore_steps SET state='interrupted', finished_at=?1, error=?2 WHERE state='running'")?;
        tx.commit().map_err(|source| CatalogError::Query {
            path: self.path.clone(),
            what: "commit",
            source,
        })?;
        Ok(ids)
    }

    /// Records a new running job.
    pub fn insert_job(
        &mut self,
        kind: JobKind,
        trigger: &str,
        now: DateTime<Utc>,
    ) -> Result<JobId, CatalogError> {
        self.conn
            .execute(
                "INSERT INTO jobs (kind, state, trigger, created_at) VALUES (?1, 'running', ?2, ?3)",
                params![kind.as_str(), trigger, ts(now)],
            )
            .map_err(self.q("insert job"))?;
        Ok(JobId(self.conn.last_insert_rowid()))
    }

    /// Records the end of a job.
    pub fn finish_job(
        &mut self,
        id: JobId,
        state: State,
        error: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<(), CatalogError> {
        self.conn
            .execute(
                "UPDATE jobs SET state=?2, finished_at=?3, error=?4 WHERE id=?1",
                params![id.0, state.as_str(), ts(now), error],
            )
            .map_err(self.q("finish job"))?;
        Ok(())
    }

    /// Records a new running backup of job `job`.
    pub fn insert_backup(
        &mut self,
        id: &BackupId,
        job: JobId,
        now: DateTime<Utc>,
    ) -> Result<(), CatalogError> {
        let tx = self
            .conn
            .transaction()
            .map_err(|source| CatalogError::Query {
                path: self.path.clone(),
                what: "begin transaction",
                source,
            })?;
        let r = tx
            .execute(
                "INSERT INTO backups (id, job_id, state, started_at) VALUES (?1, ?2, 'running', ?3)",
                params![id.as_str(), job.0, ts(now)],
            )
            .and_then(|_| {
                tx.execute(
                    "UPDATE jobs SET backup_id=?2 WHERE id=?1",
                    params![job.0, id.as_str()],
                )
            })
            .and_then(|_| tx.commit());
        r.map_err(self.q("insert backup"))?;
        Ok(())
    }

    /// True if a backup with this id is recorded (in any state).
    pub fn backup_exists(&self, id: &BackupId) -> Result<bool, CatalogError> {
        self.conn
            .query_row(
                "SELECT 1 FROM backups WHERE id=?1",
                params![id.as_str()],
                |_| Ok(()),
            )
            .optional()
            .map(|o| o.is_some())
            .map_err(self.q("look up backup"))
    }

    /// Records the end of a backup with its totals.
    #[allow(clippy::too_many_arguments)]
    pub fn finish_backup(
        &mut self,
        id: &BackupId,
        state: State,
        logical_bytes: u64,
        stored_bytes: u64,
        files: u64,
        error: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<(), CatalogError> {
        self.conn
            .execute(
                "UPDATE backups SET state=?2, finished_at=?3, logical_bytes=?4, stored_bytes=?5, files=?6, error=?7 WHERE id=?1",
                params![id.as_str(), state.as_str(), ts(now), logical_bytes as i64, stored_bytes as i64, files as i64, error],
            )
            .map_err(self.q("finish backup"))?;
        Ok(())
    }

    /// Records that the HopsFS blocks of a backup were (not) checked against the metadata.
    pub fn set_hopsfs_unchecked(
        &mut self,
        id: &BackupId,
        unchecked: bool,
    ) -> Result<(), CatalogError> {
        self.conn
            .execute(
                "UPDATE backups SET hopsfs_unchecked=?2 WHERE id=?1",
                params![id.as_str(), unchecked],
            )
            .map_err(self.q("record the HopsFS coverage"))?;
        Ok(())
    }

    /// Records that a backup listed complete has no manifest in the repository: failed, with
    /// the reason, so nothing lists it restorable.
    pub fn mark_manifest_missing(&mut self, id: &BackupId) -> Result<(), CatalogError> {
        self.conn
            .execute(
                "UPDATE backups SET state='failed', error=?2 WHERE id=?1",
                params![
                    id.as_str(),
                    "its manifest is not in the repository (a prune stopped after removing it, or the repository lost it): it cannot be restored"
                ],
            )
            .map_err(self.q("record a missing manifest"))?;
        Ok(())
    }

    /// Records the RonDB backup id of a backup (and that the id is used).
    pub fn set_rondb_backup_id(&mut self, id: &BackupId, rondb: u32) -> Result<(), CatalogError> {
        self.conn
            .execute(
                "UPDATE backups SET rondb_backup_id=?2 WHERE id=?1",
                params![id.as_str(), rondb],
            )
            .and_then(|_| {
                self.conn.execute(
                    "INSERT OR IGNORE INTO rondb_ids (id) VALUES (?1)",
                    params![rondb],
                )
            })
            .map_err(self.q("record the RonDB backup id"))?;
        Ok(())
    }

    /// The largest RonDB backup id ever used by a backup in this catalog.
    pub fn last_rondb_backup_id(&self) -> Result<Option<u32>, CatalogError> {
        self.conn
            .query_row("SELECT MAX(id) FROM rondb_ids", [], |r| {
                r.get::<_, Option<u32>>(0)
            })
            .map_err(self.q("read the last RonDB backup id"))
    }

    /// Inserts or replaces one component's record.
    pub fn upsert_component(&mut self, c: &ComponentRecord) -> Result<(), CatalogError> {
        upsert_components(&self.conn, std::slice::from_ref(c)).map_err(self.q("record component"))
    }

    fn parse_ts(&self, column: &'static str, s: &str) -> Result<DateTime<Utc>, CatalogError> {
        DateTime::parse_from_rfc3339(s)
            .map(|t| t.with_timezone(&Utc))
            .map_err(|_| CatalogError::BadValue {
                path: self.path.clone(),
                column,
                value: s.to_string(),
            })
    }

    fn parse_state(&self, column: &'static str, s: &str) -> Result<State, CatalogError> {
        State::parse(s).ok_or_else(|| CatalogError::BadValue {
            path: self.path.clone(),
            column,
            value: s.to_string(),
        })
    }

    fn parse_backup_id(&self, column: &'static str, s: &str) -> Result<BackupId, CatalogError> {
        BackupId::parse(s).ok_or_else(|| CatalogError::BadValue {
            path: self.path.clone(),
            column,
            value: s.to_string(),
        })
    }

    /// One job.
    pub fn job(&self, id: JobId) -> Result<Option<JobRecord>, CatalogError> {
        let row = self
            .conn
            .query_row(
                "SELECT id, kind, state, trigger, backup_id, created_at, finished_at, error FROM jobs WHERE id=?1",
                params![id.0],
                |r| {
                    Ok((
                        r.get::<_, i64>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, String>(2)?,
                        r.get::<_, String>(3)?,
                        r.get::<_, Option<String>>(4)?,
                        r.get::<_, String>(5)?,
                        r.get::<_, Option<String>>(6)?,
                        r.get::<_, Option<String>>(7)?,
                    ))
                },
            )
            .optional()
            .map_err(self.q("read job"))?;
        let Some((id, kind, state, trigger, backup_id, created, finished, error)) = row else {
            return Ok(None);
        };
        Ok(Some(JobRecord {
            id: JobId(id),
            kind: JobKind::parse(&kind).ok_or_else(|| CatalogError::BadValue {
                path: self.path.clone(),
                column: "jobs.kind",
                value: kind.clone(),
            })?,
            state: self.parse_state("jobs.state", &state)?,
            trigger,
            backup_id: backup_id
                .map(|b| self.parse_backup_id("jobs.backup_id", &b))
                .transpose()?,
            created_at: self.parse_ts("jobs.created_at", &created)?,
            finished_at: finished
                .map(|f| self.parse_ts("jobs.finished_at", &f))
                .transpose()?,
            error,
        }))
    }

    fn backups_where(
        &self,
        clause: &str,
        p: &[&dyn rusqlite::ToSql],
    ) -> Result<Vec<BackupRecord>, CatalogError> {
        let sql = format!(
            "SELECT id, job_id, state, started_at, finished_at, logical_bytes, stored_bytes, files, error, rondb_backup_id, pinned, verified_at, damaged, hopsfs_unchecked FROM backups {clause}"
        );
        let mut st = self.conn.prepare(&sql).map_err(self.q("list backups"))?;
        type Row = (
            String,
            i64,
            String,
            String,
            Option<String>,
            i64,
            i64,
            i64,
            Option<String>,
            Option<u32>,
            bool,
            Option<String>,
            bool,
            bool,
        );
        let rows: Vec<Row> = st
            .query_map(p, |r| r.try_into())
            .and_then(|rows| rows.collect())
            .map_err(self.q("list backups"))?;
        rows.into_iter()
            .map(
                |(
                    id,
                    job,
                    state,
                    started,
                    finished,
                    lb,
                    sb,
                    files,
                    error,
                    rondb,
                    pinned,
                    verified,
                    damaged,
                    hopsfs_unchecked,
                )| {
                    Ok(BackupRecord {
                        id: self.parse_backup_id("backups.id", &id)?,
                        job_id: JobId(job),
                        state: self.parse_state("backups.state", &state)?,
                        started_at: self.parse_ts("backups.started_at", &started)?,
                        finished_at: finished
                            .map(|f| self.parse_ts("backups.finished_at", &f))
                            .transpose()?,
                        logical_bytes: lb.max(0) as u64,
                        stored_bytes: sb.max(0) as u64,
                        files: files.max(0) as u64,
                        error,
                        rondb_backup_id: rondb,
                        pinned,
                        verified_at: verified
                            .map(|v| self.parse_ts("backups.verified_at", &v))
                            .transpose()?,
                        damaged,
                        hopsfs_unchecked,
                    })
                },
            )
            .collect()
    }

    /// A consistent copy of the whole catalog database (`VACUUM INTO` a temporary file next to
    /// it, read back, removed).
    pub fn snapshot(&self) -> Result<Vec<u8>, CatalogError> {
        let tmp = self
            .path
            .with_extension(format!("snapshot-{}", std::process::id()));
        let _ = std::fs::remove_file(&tmp);
        self.conn
            .execute("VACUUM INTO ?1", params![tmp.to_string_lossy()])
            .map_err(self.q("copy the catalog"))?;
        let bytes = std::fs::read(&tmp).map_err(|source| CatalogError::Io {
            path: tmp.clone(),
            source,
        });
        let _ = std::fs::remove_file(&tmp);
        bytes
    }

    /// Pins or unpins backup `id`; false if there is no such backup.
    pub fn set_pinned(&mut self, id: &BackupId, pinned: bool) -> Result<bool, CatalogError> {
        let n = self
            .conn
            .execute(
                "UPDATE backups SET pinned=?2 WHERE id=?1",
                params![id.as_str(), pinned],
            )
            .map_err(self.q("pin backup"))?;
        Ok(n > 0)
    }

    /// Records a verification of backup `id`: whole (at `at`) or damaged.
    pub fn set_verified(
        &mut self,
        id: &BackupId,
        at: DateTime<Utc>,
        damaged: bool,
    ) -> Result<(), CatalogError> {
        self.conn
            .execute(
                "UPDATE backups SET verified_at=?2, damaged=?3 WHERE id=?1",
                params![id.as_str(), (!damaged).then(|| ts(at)), damaged],
            )
            .map_err(self.q("record verification"))?;
        Ok(())
    }

    /// Replaces every backup and component row with `rows` (a rebuild), as one transaction;
    /// the rows get job `job`. The RonDB ids they hold are recorded as used.
    pub fn replace_backups(
        &mut self,
        rows: &[(BackupRecord, Vec<ComponentRecord>)],
        job: JobId,
    ) -> Result<(), CatalogError> {
        let path = self.path.clone();
        let err = |source| CatalogError::Query {
            path: path.clone(),
            what: "rebuild the backups",
            source,
        };
        let tx = self.conn.transaction().map_err(err)?;
        tx.execute_batch("DELETE FROM backup_components; DELETE FROM backups;")
            .map_err(err)?;
        for (b, comps) in rows {
            tx.execute(
                "INSERT INTO backups (id, job_id, state, started_at, finished_at, logical_bytes, stored_bytes, files, error, rondb_backup_id, pinned, verified_at, damaged, hopsfs_unchecked)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)",
                params![
                    b.id.as_str(),
                    job.0,
                    b.state.as_str(),
                    ts(b.started_at),
                    b.finished_at.map(ts),
                    b.logical_bytes as i64,
                    b.stored_bytes as i64,
                    b.files as i64,
                    b.error,
                    b.rondb_backup_id,
                    b.pinned,
                    b.verified_at.map(ts),
                    b.damaged,
                    b.hopsfs_unchecked
                ],
            )
            .map_err(err)?;
            note_rondb_id(&tx, b.rondb_backup_id).map_err(err)?;
            upsert_components(&tx, comps).map_err(err)?;
        }
        tx.commit().map_err(err)
    }

    /// Records blobs found damaged or missing (by verifying `backup`): the next backups write
    /// them again when they have their content, and none takes them as stored.
    pub fn add_bad_blobs(
        &mut self,
        blobs: &[(String, String)],
        backup: &BackupId,
        now: DateTime<Utc>,
    ) -> Result<(), CatalogError> {
        let path = self.path.clone();
        let err = |source| CatalogError::Query {
            path: path.clone(),
            what: "record damaged blobs",
            source,
        };
        let tx = self.conn.transaction().map_err(err)?;
        for (key, reason) in blobs {
            tx.execute(
                "INSERT INTO bad_blobs (key, found_at, backup_id, reason) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT(key) DO UPDATE SET found_at=?2, backup_id=?3, reason=?4",
                params![key, ts(now), backup.as_str(), reason],
            )
            .map_err(err)?;
        }
        tx.commit().map_err(err)
    }

    /// The keys of the blobs known damaged or missing.
    pub fn bad_blobs(&self) -> Result<std::collections::HashSet<String>, CatalogError> {
        let mut st = self
            .conn
            .prepare("SELECT key FROM bad_blobs")
            .map_err(self.q("read damaged blobs"))?;
        let rows = st
            .query_map([], |r| r.get::<_, String>(0))
            .map_err(self.q("read damaged blobs"))?;
        rows.collect::<Result<_, _>>()
            .map_err(self.q("read damaged blobs"))
    }

    /// Forgets blobs a committed backup wrote again.
    pub fn remove_bad_blobs(&mut self, keys: &[String]) -> Result<(), CatalogError> {
        let path = self.path.clone();
        let err = |source| CatalogError::Query {
            path: path.clone(),
            what: "forget healed blobs",
            source,
        };
        let tx = self.conn.transaction().map_err(err)?;
        for k in keys {
            tx.execute("DELETE FROM bad_blobs WHERE key=?1", params![k])
                .map_err(err)?;
        }
        tx.commit().map_err(err)
    }

    /// Records a backup the repository holds a manifest of as its manifest says (state, times,
    /// sizes, components), in one transaction: the row is created for job `job` if missing, else
    /// updated (its job, pin and verification kept).
    pub fn record_committed(
        &mut self,
        b: &BackupRecord,
        comps: &[ComponentRecord],
        job: JobId,
    ) -> Result<(), CatalogError> {
        let path = self.path.clone();
        let err = |source| CatalogError::Query {
            path: path.clone(),
            what: "record a committed backup",
            source,
        };
        let tx = self.conn.transaction().map_err(err)?;
        tx.execute(
            "INSERT INTO backups (id, job_id, state, started_at, finished_at, logical_bytes, stored_bytes, files, error, rondb_backup_id, hopsfs_unchecked)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)
             ON CONFLICT(id) DO UPDATE SET state=?3, started_at=?4, finished_at=?5, logical_bytes=?6,
               stored_bytes=?7, files=?8, error=?9, rondb_backup_id=?10, hopsfs_unchecked=?11",
            params![
                b.id.as_str(),
                job.0,
                b.state.as_str(),
                ts(b.started_at),
                b.finished_at.map(ts),
                b.logical_bytes as i64,
                b.stored_bytes as i64,
                b.files as i64,
                b.error,
                b.rondb_backup_id,
                b.hopsfs_unchecked
            ],
        )
        .map_err(err)?;
        note_rondb_id(&tx, b.rondb_backup_id).map_err(err)?;
        tx.execute(
            "DELETE FROM backup_components WHERE backup_id=?1",
            params![b.id.as_str()],
        )
        .map_err(err)?;
        upsert_components(&tx, comps).map_err(err)?;
        tx.commit().map_err(err)
    }

    /// Removes a forgotten backup and its components from the catalog.
    pub fn remove_backup(&mut self, id: &BackupId) -> Result<(), CatalogError> {
        let path = self.path.clone();
        let err = |source| CatalogError::Query {
            path: path.clone(),
            what: "remove backup",
            source,
        };
        let tx = self.conn.transaction().map_err(err)?;
        tx.execute(
            "DELETE FROM backup_components WHERE backup_id=?1",
            params![id.as_str()],
        )
        .and_then(|_| tx.execute("DELETE FROM backups WHERE id=?1", params![id.as_str()]))
        .map_err(err)?;
        tx.commit().map_err(err)
    }

    /// Every backup, oldest first.
    pub fn backups(&self) -> Result<Vec<BackupRecord>, CatalogError> {
        self.backups_where("ORDER BY started_at, id", &[])
    }

    /// One backup.
    pub fn backup(&self, id: &BackupId) -> Result<Option<BackupRecord>, CatalogError> {
        let s = id.as_str().to_string();
        Ok(self.backups_where("WHERE id=?1", &[&s])?.into_iter().next())
    }

    /// The components of one backup.
    pub fn components(&self, id: &BackupId) -> Result<Vec<ComponentRecord>, CatalogError> {
        let mut st = self
            .conn
            .prepare(
                "SELECT component, state, started_at, finished_at, logical_bytes, stored_bytes, files, error
                 FROM backup_components WHERE backup_id=?1 ORDER BY started_at, component",
            )
            .map_err(self.q("list components"))?;
        type Row = (
            String,
            String,
            String,
            Option<String>,
            i64,
            i64,
            i64,
            Option<String>,
        );
        let rows: Vec<Row> = st
            .query_map(params![id.as_str()], |r| r.try_into())
            .and_then(|rows| rows.collect())
            .map_err(self.q("list components"))?;
        rows.into_iter()
            .map(
                |(component, state, started, finished, lb, sb, files, error)| {
                    Ok(ComponentRecord {
                        backup_id: id.clone(),
                        component,
                        state: self.parse_state("backup_components.state", &state)?,
                        started_at: self.parse_ts("backup_components.started_at", &started)?,
                        finished_at: finished
                            .map(|f| self.parse_ts("backup_components.finished_at", &f))
                            .transpose()?,
                        logical_bytes: lb.max(0) as u64,
                        stored_bytes: sb.max(0) as u64,
                        files: files.max(0) as u64,
                        error,
                    })
                },
            )
            .collect()
    }

    /// The newest successful backup of every component.
    pub fn last_successes(&self) -> Result<Vec<LastSuccess>, CatalogError> {
        let mut st = self
            .conn
            .prepare(
                "SELECT c.component, c.backup_id, c.started_at, c.finished_at, c.logical_bytes, c.stored_bytes
                 FROM backup_components c JOIN backups b ON b.id = c.backup_id
                 WHERE c.state='succeeded' AND b.state='succeeded'
                   AND c.finished_at = (SELECT MAX(c2.finished_at) FROM backup_components c2
                        JOIN backups b2 ON b2.id = c2.backup_id
                        WHERE c2.component = c.component AND c2.state='succeeded' AND b2.state='succeeded')
                 ORDER BY c.component",
            )
            .map_err(self.q("read last successes"))?;
        type Row = (String, String, String, String, i64, i64);
        let rows: Vec<Row> = st
            .query_map([], |r| r.try_into())
            .and_then(|rows| rows.collect())
            .map_err(self.q("read last successes"))?;
        rows.into_iter()
            .map(|(component, bid, started, finished, lb, sb)| {
                let started = self.parse_ts("backup_components.started_at", &started)?;
                let finished = self.parse_ts("backup_components.finished_at", &finished)?;
                Ok(LastSuccess {
                    component,
                    backup_id: self.parse_backup_id("backup_components.backup_id", &bid)?,
                    finished_at: finished,
                    duration_seconds: (finished - started).num_milliseconds().max(0) as f64
                        / 1000.0,
                    logical_bytes: lb.max(0) as u64,
                    stored_bytes: sb.max(0) as u64,
                })
            })
            .collect()
    }

    /// Counts of finished backups by state, for the metrics after a restart.
    pub fn backup_counts(&self) -> Result<Vec<(State, u64)>, CatalogError> {
        let mut st = self
            .conn
            .prepare("SELECT state, COUNT(*) FROM backups GROUP BY state ORDER BY state")
            .map_err(self.q("count backups"))?;
        let rows: Vec<(String, i64)> = st
            .query_map([], |r| r.try_into())
            .and_then(|rows| rows.collect())
            .map_err(self.q("count backups"))?;
        rows.into_iter()
            .map(|(s, n)| Ok((self.parse_state("backups.state", &s)?, n.max(0) as u64)))
            .collect()
    }

    /// The last recorded fire (scheduled slot) of a schedule.
    pub fn last_fire(&self, name: &str) -> Result<Option<DateTime<Utc>>, CatalogError> {
        let s: Option<String> = self
            .conn
            .query_row(
                "SELECT last_fire FROM schedule_fires WHERE name=?1",
                params![name],
                |r| r.get(0),
            )
            .optional()
            .map_err(self.q("read last fire"))?;
        s.map(|s| self.parse_ts("schedule_fires.last_fire", &s))
            .transpose()
    }

    /// The last real fire of a schedule (its slot), ignoring the baseline recorded when the
    /// schedule was first seen (outcome `armed`).
    pub fn last_real_fire(&self, name: &str) -> Result<Option<DateTime<Utc>>, CatalogError> {
        let s: Option<String> = self
            .conn
            .query_row(
                "SELECT last_fire FROM schedule_fires WHERE name=?1 AND last_outcome <> 'armed'",
                params![name],
                |r| r.get(0),
            )
            .optional()
            .map_err(self.q("read last fire"))?;
        s.map(|s| self.parse_ts("schedule_fires.last_fire", &s))
            .transpose()
    }

    /// Records a schedule's fire at slot `due` and what came of it (`started job 4`, `skipped: busy`).
    pub fn record_fire(
        &mut self,
        name: &str,
        due: DateTime<Utc>,
        outcome: &str,
    ) -> Result<(), CatalogError> {
        self.conn
            .execute(
                "INSERT INTO schedule_fires (name, last_fire, last_outcome) VALUES (?1, ?2, ?3)
                 ON CONFLICT(name) DO UPDATE SET last_fire=?2, last_outcome=?3",
                params![name, ts(due), outcome],
            )
            .map_err(self.q("record fire"))?;
        Ok(())
    }

    /// Records a new restore with its plan (JSON) and options (JSON); every step `pending`.
    pub fn insert_restore(
        &mut self,
        backup: &BackupId,
        plan_json: &str,
        options_json: &str,
        steps: usize,
        now: DateTime<Utc>,
    ) -> Result<RestoreId, CatalogError> {
        let tx = self
            .conn
            .transaction()
            .map_err(|source| CatalogError::Query {
                path: self.path.clone(),
                what: "begin transaction",
                source,
            })?;
        let r = tx
            .execute(
                "INSERT INTO restores (backup_id, state, options, plan, created_at) VALUES (?1, 'running', ?2, ?3, ?4)",
                params![backup.as_str(), options_json, plan_json, ts(now)],
            )
            .and_then(|_| {
                let id = tx.last_insert_rowid();
                for i in 0..steps {
                    tx.execute(
                        "INSERT INTO restore_steps (restore_id, idx, state) VALUES (?1, ?2, 'pending')",
                        params![id, i as i64],
                    )?;
                }
                Ok(id)
            });
        let id = r.map_err(|source| CatalogError::Query {
            path: self.path.clone(),
            what: "insert restore",
            source,
        })?;
        tx.commit().map_err(|source| CatalogError::Query {
            path: self.path.clone(),
            what: "commit",
            source,
        })?;
        Ok(RestoreId(id))
    }

    /// Sets a restore's state (and error, and end time when final).
    pub fn set_restore_state(
        &mut self,
        id: RestoreId,
        state: RestoreState,
        error: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<(), CatalogError> {
        let from: String = self
            .conn
            .query_row(
                "SELECT state FROM restores WHERE id=?1",
                params![id.0],
                |r| r.get(0),
            )
            .map_err(self.q("read restore"))?;
        let from = RestoreState::parse(&from).ok_or_else(|| CatalogError::BadValue {
            path: self.path.clone(),
            column: "restores.state",
            value: from.clone(),
        })?;
        if !from.allows(state) {
            return Err(CatalogError::Transition {
                what: format!("restore {id}"),
                from: from.as_str(),
                to: state.as_str(),
            });
        }
        let finished = (state != RestoreState::Running).then(|| ts(now));
        self.conn
            .execute(
                "UPDATE restores SET state=?2, error=?3, finished_at=?4 WHERE id=?1",
                params![id.0, state.as_str(), error, finished],
            )
            .map_err(self.q("update restore"))?;
        Ok(())
    }

    /// Sets one step's state; `running` stamps the start, final states the end.
    pub fn set_step_state(
        &mut self,
        restore: RestoreId,
        idx: usize,
        state: StepState,
        error: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<(), CatalogError> {
        let from: String = self
            .conn
            .query_row(
                "SELECT state FROM restore_steps WHERE restore_id=?1 AND idx=?2",
                params![restore.0, idx as i64],
                |r| r.get(0),
            )
            .map_err(self.q("read restore step"))?;
        let from = StepState::parse(&from).ok_or_else(|| CatalogError::BadValue {
            path: self.path.clone(),
            column: "restore_steps.state",
            value: from.clone(),
        })?;
        if !from.allows(state) {
            return Err(CatalogError::Transition {
                what: format!("step {} of restore {restore}", idx + 1),
                from: from.as_str(),
                to: state.as_str(),
            });
        }
        let state = state.as_str();
        let sql = if state == "running" {
            "UPDATE restore_steps SET state=?3, error=?4, started_at=?5, finished_at=NULL WHERE restore_id=?1 AND idx=?2"
        } else {
            "UPDATE restore_steps SET state=?3, error=?4, finished_at=?5 WHERE restore_id=?1 AND idx=?2"
        };
        self.conn
            .execute(sql, params![restore.0, idx as i64, state, error, ts(now)])
            .map_err(self.q("update restore step"))?;
        Ok(())
    }

    /// Sets one step's detail (JSON progress: nodes done, last output lines).
    pub fn set_step_detail(
        &mut self,
        restore: RestoreId,
        idx: usize,
        detail: &str,
    ) -> Result<(), CatalogError> {
        self.conn
            .execute(
                "UPDATE restore_steps SET detail=?3 WHERE restore_id=?1 AND idx=?2",
                params![restore.0, idx as i64, detail],
            )
            .map_err(self.q("update restore step detail"))?;
        Ok(())
    }

    /// The newest restore, if any.
    pub fn last_restore(&self) -> Result<Option<RestoreRecord>, CatalogError> {
        let row = self
            .conn
            .query_row(
                "SELECT id, backup_id, state, options, plan, created_at, finished_at, error FROM restores ORDER BY id DESC LIMIT 1",
                [],
                |r| {
                    Ok((
                        r.get::<_, i64>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, String>(2)?,
                        r.get::<_, String>(3)?,
                        r.get::<_, String>(4)?,
                        r.get::<_, String>(5)?,
                        r.get::<_, Option<String>>(6)?,
                        r.get::<_, Option<String>>(7)?,
                    ))
                },
            )
            .optional()
            .map_err(self.q("read restore"))?;
        let Some((id, backup, state, options, plan, created, finished, error)) = row else {
            return Ok(None);
        };
        let mut st = self
            .conn
            .prepare("SELECT idx, state, started_at, finished_at, detail, error FROM restore_steps WHERE restore_id=?1 ORDER BY idx")
            .map_err(self.q("read restore steps"))?;
        type Row = (
            i64,
            String,
            Option<String>,
            Option<String>,
            String,
            Option<String>,
        );
        let rows: Vec<Row> = st
            .query_map(params![id], |r| r.try_into())
            .and_then(|rows| rows.collect())
            .map_err(self.q("read restore steps"))?;
        let mut steps = Vec::new();
        for (idx, state, started, finished, detail, error) in rows {
            steps.push(RestoreStepRecord {
                idx: idx as usize,
                state: StepState::parse(&state).ok_or_else(|| CatalogError::BadValue {
                    path: self.path.clone(),
                    column: "restore_steps.state",
                    value: state.clone(),
                })?,
                started_at: started
                    .map(|s| self.parse_ts("restore_steps.started_at", &s))
                    .transpose()?,
                finished_at: finished
                    .map(|s| self.parse_ts("restore_steps.finished_at", &s))
                    .transpose()?,
                detail,
                error,
            });
        }
        Ok(Some(RestoreRecord {
            id: RestoreId(id),
            backup_id: self.parse_backup_id("restores.backup_id", &backup)?,
            state: RestoreState::parse(&state).ok_or_else(|| CatalogError::BadValue {
                path: self.path.clone(),
                column: "restores.state",
                value: state.clone(),
            })?,
            options,
            plan,
            created_at: self.parse_ts("restores.created_at", &created)?,
            finished_at: finished
                .map(|s| self.parse_ts("restores.finished_at", &s))
                .transpose()?,
            error,
            steps,
        }))
    }

    /// Appends to the audit log.
    pub fn audit(&mut self, rec: &AuditRecord) -> Result<(), CatalogError> {
        self.conn
            .execute(
                "INSERT INTO audit (at, uid, pid, action, allowed, detail) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![ts(rec.at), rec.uid, rec.pid, rec.action, rec.allowed, rec.detail],
            )
            .map_err(self.q("write audit record"))?;
        Ok(())
    }

    /// The newest `limit` audit records, newest first.
    pub fn audit_log(&self, limit: u32) -> Result<Vec<AuditRecord>, CatalogError> {
        let mut st = self
            .conn
            .prepare(
                "SELECT at, uid, pid, action, allowed, detail FROM audit ORDER BY id DESC LIMIT ?1",
            )
            .map_err(self.q("read audit log"))?;
        let rows: Vec<(String, u32, i32, String, bool, String)> = st
            .query_map(params![limit], |r| r.try_into())
            .and_then(|rows| rows.collect())
            .map_err(self.q("read audit log"))?;
        rows.into_iter()
            .map(|(at, uid, pid, action, allowed, detail)| {
                Ok(AuditRecord {
                    at: self.parse_ts("audit.at", &at)?,
                    uid,
                    pid,
                    action,
                    allowed,
                    detail,
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn t(s: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 25, 10, 0, s).unwrap()
    }

    #[test]
    fn pins_verifications_and_forgotten_backups_are_recorded() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = Catalog::open(&dir.path().join("catalog.db")).unwrap();
        let id = BackupId::parse("20261125T100000Z").unwrap();
        let job = c.insert_job(JobKind::Backup, "test", t(0)).unwrap();
        c.insert_backup(&id, job, t(0)).unwrap();
        let b = c.backup(&id).unwrap().unwrap();
        assert!(!b.pinned && b.verified_at.is_none() && !b.damaged);

        assert!(c.set_pinned(&id, true).unwrap());
        c.set_verified(&id, t(5), false).unwrap();
        let b = c.backup(&id).unwrap().unwrap();
        assert!(b.pinned && !b.damaged);
        assert_eq!(b.verified_at, Some(t(5)));
        // Damage found later: no longer verified.
        c.set_verified(&id, t(9), true).unwrap();
        let b = c.backup(&id).unwrap().unwrap();
        assert!(b.damaged && b.verified_at.is_none());

        let other = BackupId::parse("20200101T000000Z").unwrap();
        assert!(!c.set_pinned(&other, true).unwrap(), "no such backup");
        c.remove_backup(&id).unwrap();
        assert!(c.backup(&id).unwrap().is_none());
        assert!(c.components(&id).unwrap().is_empty());
    }

    #[test]
    fn migrates_and_reopens() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("sub/catalog.db");
        {
            let mut c = Catalog::open(&p).unwrap();
            c.insert_job(JobKind::Backup, "api:uid=0", t(0)).unwrap();
        }
        let c = Catalog::open(&p).unwrap();
        assert_eq!(c.job(JobId(1)).unwrap().unwrap().state, State::Running);
        let v: i64 = c
            .conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(v, MIGRATIONS.len() as i64);
    }

    #[test]
    fn refuses_newer_schema() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("catalog.db");
        {
            let c = Catalog::open(&p).unwrap();
            c.conn.pragma_update(None, "user_version", 99).unwrap();
        }
        let e = Catalog::open(&p).unwrap_err();
        assert!(e.to_string().contains("schema version 99"), "{e}");
    }

    #[test]
    fn backup_lifecycle_and_last_success() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = Catalog::open(&dir.path().join("c.db")).unwrap();
        let job = c
            .insert_job(JobKind::Backup, "schedule:nightly", t(0))
            .unwrap();
        let id = BackupId::at(t(0), 0);
        c.insert_backup(&id, job, t(0)).unwrap();
        assert!(c.backup_exists(&id).unwrap());
        c.upsert_component(&ComponentRecord {
            backup_id: id.clone(),
            component: "files".into(),
            state: State::Running,
            started_at: t(0),
            finished_at: None,
            logical_bytes: 0,
            stored_bytes: 0,
            files: 0,
            error: None,
        })
        .unwrap();
        assert!(c.last_successes().unwrap().is_empty());
        c.upsert_component(&ComponentRecord {
            backup_id: id.clone(),
            component: "files".into(),
            state: State::Succeeded,
            started_at: t(0),
            finished_at: Some(t(3)),
            logical_bytes: 100,
            stored_bytes: 40,
            files: 2,
            error: None,
        })
        .unwrap();
        c.finish_backup(&id, State::Succeeded, 100, 40, 2, None, t(3))
            .unwrap();
        c.finish_job(job, State::Succeeded, None, t(3)).unwrap();
        let ls = c.last_successes().unwrap();
        assert_eq!(ls.len(), 1);
        assert_eq!(ls[0].backup_id, id);
        assert_eq!(ls[0].duration_seconds, 3.0);
        let j = c.job(job).unwrap().unwrap();
        assert_eq!(j.backup_id, Some(id.clone()));
        assert_eq!(j.state, State::Succeeded);
        assert_eq!(c.backups().unwrap()[0].stored_bytes, 40);
        assert_eq!(c.last_rondb_backup_id().unwrap(), None);
        c.set_rondb_backup_id(&id, 217_803_600).unwrap();
        assert_eq!(
            c.backup(&id).unwrap().unwrap().rondb_backup_id,
            Some(217_803_600)
        );
        assert_eq!(c.last_rondb_backup_id().unwrap(), Some(217_803_600));
        assert_eq!(c.components(&id).unwrap().len(), 1);
    }

    #[test]
    fn crash_leftovers_become_interrupted() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = Catalog::open(&dir.path().join("c.db")).unwrap();
        let job = c.insert_job(JobKind::Backup, "api:uid=0", t(0)).unwrap();
        let id = BackupId::at(t(0), 0);
        c.insert_backup(&id, job, t(0)).unwrap();
        let marked = c.mark_interrupted(t(9)).unwrap();
        assert_eq!(marked, vec![job]);
        assert_eq!(c.job(job).unwrap().unwrap().state, State::Interrupted);
        let b = c.backup(&id).unwrap().unwrap();
        assert_eq!(b.state, State::Interrupted);
        assert!(b.error.unwrap().contains("interrupted"));
        assert!(c.mark_interrupted(t(10)).unwrap().is_empty());
    }

    #[test]
    fn fires_and_audit() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = Catalog::open(&dir.path().join("c.db")).unwrap();
        assert_eq!(c.last_fire("nightly").unwrap(), None);
        c.record_fire("nightly", t(0), "armed").unwrap();
        assert_eq!(c.last_fire("nightly").unwrap(), Some(t(0)));
        assert_eq!(c.last_real_fire("nightly").unwrap(), None);
        c.record_fire("nightly", t(1), "started job 1").unwrap();
        assert_eq!(c.last_real_fire("nightly").unwrap(), Some(t(1)));
        c.record_fire("nightly", t(2), "skipped: busy").unwrap();
        assert_eq!(c.last_fire("nightly").unwrap(), Some(t(2)));
        c.audit(&AuditRecord {
            at: t(1),
            uid: 1000,
            pid: 42,
            action: "POST /v1/backups".into(),
            allowed: false,
            detail: "permission denied".into(),
        })
        .unwrap();
        let a = c.audit_log(10).unwrap();
        assert_eq!(a.len(), 1);
        assert!(!a[0].allowed);
    }
}
