//! What happened around the jobs: schedule fires (for catch-up and the skipped counters) and
//! the audit log of every changing request.

use super::*;

impl Catalog {
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
