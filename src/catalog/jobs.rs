//! The catalog's jobs: recorded before their first side effect, ended with their state; the
//! ones a crash left running become interrupted at the next start.

use super::*;

impl Catalog {
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
        upd(
            "UPDATE drills SET state='interrupted', finished_at=?1, error=?2 WHERE state='running'",
        )?;
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
            kind: JobKind::parse(&kind).ok_or_else(|| self.bad_value("jobs.kind", &kind))?,
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
}
