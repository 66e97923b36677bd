//! Restore drills and copies. Drills: one row per drill job (the backup, the level, the outcome, the measured
//! time and the report as JSON), started `running` and settled once; a drill a crash left
//! running is marked `interrupted` with the jobs at the next start. Copies: one row per
//! finished copy job (target, outcome, what it sent), read back for the metrics at start.

use super::*;

/// A drill as the catalog holds it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DrillRecord {
    pub job_id: JobId,
    pub backup_id: BackupId,
    pub level: u8,
    pub state: State,
    pub started_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    pub rto_seconds: Option<f64>,
    pub error: Option<String>,
    /// The report (JSON), once finished.
    pub report: Option<serde_json::Value>,
}

type Row = (
    i64,
    String,
    i64,
    String,
    String,
    Option<String>,
    Option<f64>,
    Option<String>,
    Option<String>,
);

const COLUMNS: &str =
    "job_id, backup_id, level, state, started_at, finished_at, rto_seconds, error, report";

impl Catalog {
    /// Records a drill that starts.
    pub fn insert_drill(
        &mut self,
        job: JobId,
        backup: &BackupId,
        level: u8,
        now: DateTime<Utc>,
    ) -> Result<(), CatalogError> {
        self.conn
            .execute(
                "INSERT INTO drills (job_id, backup_id, level, state, started_at) VALUES (?1, ?2, ?3, 'running', ?4)",
                params![job.0, backup.as_str(), level, ts(now)],
            )
            .map_err(self.q("insert drill"))?;
        Ok(())
    }

    /// Settles a drill: its state, error, measured time and report.
    pub fn finish_drill(
        &mut self,
        job: JobId,
        state: State,
        error: Option<&str>,
        rto_seconds: Option<f64>,
        report_json: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<(), CatalogError> {
        self.conn
            .execute(
                "UPDATE drills SET state=?2, error=?3, rto_seconds=?4, report=?5, finished_at=?6 WHERE job_id=?1",
                params![job.0, state.as_str(), error, rto_seconds, report_json, ts(now)],
            )
            .map_err(self.q("finish drill"))?;
        Ok(())
    }

    fn drill_from(&self, r: Row) -> Result<DrillRecord, CatalogError> {
        let (job, backup, level, state, started, finished, rto, error, report) = r;
        Ok(DrillRecord {
            job_id: JobId(job),
            backup_id: self.parse_backup_id("drills.backup_id", &backup)?,
            level: u8::try_from(level)
                .map_err(|_| self.bad_value("drills.level", &level.to_string()))?,
            state: State::parse(&state).ok_or_else(|| self.bad_value("drills.state", &state))?,
            started_at: self.parse_ts("drills.started_at", &started)?,
            finished_at: finished
                .map(|f| self.parse_ts("drills.finished_at", &f))
                .transpose()?,
            rto_seconds: rto,
            error,
            report: report
                .map(|j| serde_json::from_str(&j).map_err(|_| self.bad_value("drills.report", &j)))
                .transpose()?,
        })
    }

    /// The newest drills first, at most `limit`.
    pub fn drills(&self, limit: usize) -> Result<Vec<DrillRecord>, CatalogError> {
        let mut st = self
            .conn
            .prepare(&format!(
                "SELECT {COLUMNS} FROM drills ORDER BY job_id DESC LIMIT ?1"
            ))
            .map_err(self.q("read drills"))?;
        let rows: Vec<Row> = st
            .query_map([limit as i64], |r| r.try_into())
            .and_then(|rows| rows.collect())
            .map_err(self.q("read drills"))?;
        rows.into_iter().map(|r| self.drill_from(r)).collect()
    }

    /// One drill by its job.
    pub fn drill(&self, job: JobId) -> Result<Option<DrillRecord>, CatalogError> {
        let row: Option<Row> = self
            .conn
            .query_row(
                &format!("SELECT {COLUMNS} FROM drills WHERE job_id=?1"),
                [job.0],
                |r| r.try_into(),
            )
            .optional()
            .map_err(self.q("read drill"))?;
        row.map(|r| self.drill_from(r)).transpose()
    }

    /// When the newest succeeded drill of each level finished.
    pub fn last_drill_successes(&self) -> Result<Vec<(u8, DateTime<Utc>, f64)>, CatalogError> {
        let mut st = self
            .conn
            .prepare(
                "SELECT level, MAX(finished_at), rto_seconds FROM drills
                 WHERE state='succeeded' GROUP BY level ORDER BY level",
            )
            .map_err(self.q("read drill successes"))?;
        let rows: Vec<(i64, String, Option<f64>)> = st
            .query_map([], |r| r.try_into())
            .and_then(|rows| rows.collect())
            .map_err(self.q("read drill successes"))?;
        rows.into_iter()
            .map(|(level, t, rto)| {
                Ok((
                    level as u8,
                    self.parse_ts("drills.finished_at", &t)?,
                    rto.unwrap_or(0.0),
                ))
            })
            .collect()
    }
}

impl Catalog {
    /// Records how a copy to `target` ended.
    pub fn record_copy(
        &mut self,
        job: JobId,
        target: &str,
        state: State,
        objects_sent: u64,
        bytes_sent: u64,
        now: DateTime<Utc>,
    ) -> Result<(), CatalogError> {
        self.conn
            .execute(
                "INSERT OR REPLACE INTO copies (job_id, target, state, finished_at, objects_sent, bytes_sent) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![job.0, target, state.as_str(), ts(now), objects_sent as i64, bytes_sent as i64],
            )
            .map_err(self.q("record copy"))?;
        Ok(())
    }

    /// When the last whole copy to each target finished.
    pub fn last_copy_successes(&self) -> Result<Vec<(String, DateTime<Utc>)>, CatalogError> {
        let mut st = self
            .conn
            .prepare(
                "SELECT target, MAX(finished_at) FROM copies WHERE state='succeeded' GROUP BY target ORDER BY target",
            )
            .map_err(self.q("read copies"))?;
        let rows: Vec<(String, String)> = st
            .query_map([], |r| r.try_into())
            .and_then(|rows| rows.collect())
            .map_err(self.q("read copies"))?;
        rows.into_iter()
            .map(|(t, at)| Ok((t, self.parse_ts("copies.finished_at", &at)?)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn drills_are_recorded_settled_and_interrupted() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = Catalog::open(&dir.path().join("c.db")).unwrap();
        let t = |s| Utc.with_ymd_and_hms(2026, 12, 7, 10, 0, s).unwrap();
        let b = BackupId::parse("20261207T090000Z").unwrap();
        let j1 = c.insert_job(JobKind::Drill, "api", t(0)).unwrap();
        c.insert_drill(j1, &b, 1, t(0)).unwrap();
        c.finish_drill(
            j1,
            State::Succeeded,
            None,
            Some(12.5),
            Some("{\"a\":1}"),
            t(13),
        )
        .unwrap();
        let j2 = c.insert_job(JobKind::Drill, "api", t(20)).unwrap();
        c.insert_drill(j2, &b, 1, t(20)).unwrap();
        let all = c.drills(10).unwrap();
        assert_eq!(all.len(), 2);
        assert_eq!(all[0].job_id, j2, "newest first");
        assert_eq!(all[0].state, State::Running);
        assert_eq!(all[1].report, Some(serde_json::json!({"a": 1})));
        assert_eq!(c.last_drill_successes().unwrap(), vec![(1, t(13), 12.5)]);
        // A crash: the running drill is interrupted with its job.
        c.mark_interrupted(t(30)).unwrap();
        let d = c.drill(j2).unwrap().unwrap();
        assert_eq!(d.state, State::Interrupted);
        assert!(d.error.unwrap().contains("interrupted"));
        assert_eq!(c.drill(JobId(999)).unwrap(), None);
        // Copies: the last whole one per target.
        let j3 = c.insert_job(JobKind::Copy, "api", t(40)).unwrap();
        c.record_copy(j3, "offsite", State::Succeeded, 3, 100, t(41))
            .unwrap();
        let j4 = c.insert_job(JobKind::Copy, "api", t(50)).unwrap();
        c.record_copy(j4, "offsite", State::Failed, 1, 10, t(51))
            .unwrap();
        assert_eq!(
            c.last_copy_successes().unwrap(),
            vec![("offsite".to_string(), t(41))]
        );
    }
}
