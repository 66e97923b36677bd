//! Cron schedules: parsing 5-field crontab expressions and computing the next fire time in a
//! time zone, as pure functions of (schedule, zone, after). (Being written; interface fixed.)

use chrono::{DateTime, Utc};
use chrono_tz::Tz;

/// A parsed cron expression.
#[derive(Debug, Clone)]
pub struct Cron {
    expr: String,
}

/// Why a cron expression was refused. Display: `invalid cron expression "<expr>": <reason>`.
#[derive(Debug, thiserror::Error)]
#[error("invalid cron expression \"{expr}\": {reason}")]
pub struct CronError {
    pub expr: String,
    pub reason: String,
}

impl Cron {
    pub fn parse(expr: &str) -> Result<Cron, CronError> {
        Ok(Cron {
            expr: expr.to_string(),
        })
    }

    pub fn as_str(&self) -> &str {
        &self.expr
    }

    /// The first fire time strictly after `after`, evaluated on the wall clock of `tz`.
    pub fn next_after(&self, _after: DateTime<Utc>, _tz: Tz) -> Option<DateTime<Utc>> {
        None
    }
}
