//! Restores and their steps: the plan recorded with the restore, every transition checked
//! against the allowed ones ([`crate::domain::RestoreState`], [`crate::domain::StepState`]).

use super::*;

impl Catalog {
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
        self.check_transition("restores.state", &from, state, || format!("restore {id}"))?;
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
        self.check_transition("restore_steps.state", &from, state, || {
            format!("step {} of restore {restore}", idx + 1)
        })?;
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

    /// Marks restore `id` as a drill's (into a standby): never the cluster's last restore.
    pub fn mark_drill_restore(&mut self, id: RestoreId) -> Result<(), CatalogError> {
        self.conn
            .execute("UPDATE restores SET drill=1 WHERE id=?1", params![id.0])
            .map_err(self.q("mark drill restore"))?;
        Ok(())
    }

    /// The newest restore of the cluster (a drill's restores into a standby left out), if any.
    pub fn last_restore(&self) -> Result<Option<RestoreRecord>, CatalogError> {
        self.restore_where("drill=0 ORDER BY id DESC LIMIT 1", None)
    }

    /// Restore `id`, whoever ran it.
    pub fn restore(&self, id: RestoreId) -> Result<Option<RestoreRecord>, CatalogError> {
        self.restore_where("id=?1", Some(id.0))
    }

    fn restore_where(
        &self,
        filter: &str,
        arg: Option<i64>,
    ) -> Result<Option<RestoreRecord>, CatalogError> {
        let sql = format!(
            "SELECT id, backup_id, state, options, plan, created_at, finished_at, error FROM restores WHERE {filter}"
        );
        let args: Vec<i64> = arg.into_iter().collect();
        let row = self
            .conn
            .query_row(&sql, rusqlite::params_from_iter(args.iter()), |r| {
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
            })
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
                state: StepState::parse(&state)
                    .ok_or_else(|| self.bad_value("restore_steps.state", &state))?,
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
            state: RestoreState::parse(&state)
                .ok_or_else(|| self.bad_value("restores.state", &state))?,
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

    /// Checks that the state recorded as `from` (in `column`) may become `to`; the error names
    /// `what`.
    fn check_transition<S: crate::domain::Transitions>(
        &self,
        column: &'static str,
        from: &str,
        to: S,
        what: impl FnOnce() -> String,
    ) -> Result<(), CatalogError> {
        let from_state = S::parse(from).ok_or_else(|| self.bad_value(column, from))?;
        if !from_state.allows(to) {
            return Err(CatalogError::Transition {
                what: what(),
                from: from_state.as_str(),
                to: to.as_str(),
            });
        }
        Ok(())
    }
}
