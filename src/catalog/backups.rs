//! The catalog's backups and their components: created with their job, ended with the
//! manifest's figures, pinned, verified, reconciled with the repository, rebuilt, forgotten.

use super::*;

impl Catalog {
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
}
