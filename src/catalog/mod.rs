//! The catalog: the daemon's SQLite index of jobs, backups and their components, the last fire
//! of every schedule, and the audit log of who asked for what.
//!
//! It is an index, never the only copy of anything a restore needs: every backup's facts are in
//! its manifest in the repository. The schema is migrated by `PRAGMA user_version`; the database
//! runs in WAL mode with a busy timeout so that a reader never fails on a writer.

mod backups;
mod blobs;
mod drills;
mod events;
mod jobs;
mod restores;

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
pub use drills::DrillRecord;

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
    // 7: restore drills and their reports.
    "CREATE TABLE drills (
        job_id INTEGER PRIMARY KEY REFERENCES jobs(id),
        backup_id TEXT NOT NULL,
        level INTEGER NOT NULL,
        state TEXT NOT NULL,
        started_at TEXT NOT NULL,
        finished_at TEXT,
        rto_seconds REAL,
        error TEXT,
        report TEXT
     );",
    // 8: copies of the repository.
    "CREATE TABLE copies (
        job_id INTEGER PRIMARY KEY REFERENCES jobs(id),
        target TEXT NOT NULL,
        state TEXT NOT NULL,
        finished_at TEXT NOT NULL,
        objects_sent INTEGER NOT NULL,
        bytes_sent INTEGER NOT NULL
     );",
    // 9: restores run by level 2 drills into a standby (never the cluster's last restore).
    "ALTER TABLE restores ADD COLUMN drill INTEGER NOT NULL DEFAULT 0;",
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
            .map_err(open_err)?;
        self.conn
            // Every committed transaction is durable: a backup recorded complete (or forgotten)
            // stays so after a power loss.
            .pragma_update(None, "synchronous", "FULL")
            .map_err(open_err)?;
        self.conn
            .pragma_update(None, "foreign_keys", "ON")
            .map_err(open_err)?;
        let version: i64 = self
            .conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(open_err)?;
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

    fn parse_ts(&self, column: &'static str, s: &str) -> Result<DateTime<Utc>, CatalogError> {
        DateTime::parse_from_rfc3339(s)
            .map(|t| t.with_timezone(&Utc))
            .map_err(|_| self.bad_value(column, s))
    }

    /// The error for a value of `column` the catalog cannot read.
    fn bad_value(&self, column: &'static str, value: &str) -> CatalogError {
        CatalogError::BadValue {
            path: self.path.clone(),
            column,
            value: value.to_string(),
        }
    }

    fn parse_state(&self, column: &'static str, s: &str) -> Result<State, CatalogError> {
        State::parse(s).ok_or_else(|| self.bad_value(column, s))
    }

    fn parse_backup_id(&self, column: &'static str, s: &str) -> Result<BackupId, CatalogError> {
        BackupId::parse(s).ok_or_else(|| self.bad_value(column, s))
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
