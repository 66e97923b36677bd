//! What a drill reports: the backup, the level, what was read and checked by kind, the damage
//! in the repository and the findings in the files' meaning (the first ones; all are counted),
//! how long it took, and — for a restore into a standby — each step's time, whose sum is the
//! measured RTO. Kept as JSON in the catalog; [`DrillReport::summary`] is the readable form.
//! Pure.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::repository::inspect::{Finding, InspectedCount};
use crate::repository::{Damage, VerifyReport};

/// Damage and findings listed in a report (all are counted).
pub const LISTED: usize = 50;

/// How deep a drill goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(into = "u8", try_from = "u8")]
pub enum DrillLevel {
    /// The backup read back and checked for its meaning, without a cluster.
    ReadBack = 1,
    /// A whole restore into a standby cluster, timed step by step.
    Standby = 2,
}

impl From<DrillLevel> for u8 {
    fn from(l: DrillLevel) -> u8 {
        l as u8
    }
}

impl TryFrom<u8> for DrillLevel {
    type Error = String;
    fn try_from(v: u8) -> Result<Self, String> {
        match v {
            1 => Ok(DrillLevel::ReadBack),
            2 => Ok(DrillLevel::Standby),
            _ => Err(format!(
                "drill level {v}: 1 (read back and checked) or 2 (restored into a standby)"
            )),
        }
    }
}

impl std::fmt::Display for DrillLevel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", *self as u8)
    }
}

/// One timed step of a drill.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepTime {
    pub title: String,
    pub seconds: f64,
}

/// A drill's outcome.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DrillReport {
    pub backup_id: String,
    pub level: DrillLevel,
    pub started_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
    pub files_checked: u64,
    pub bytes_checked: u64,
    /// Files read for their meaning, by kind.
    pub checks: BTreeMap<String, InspectedCount>,
    pub damaged_total: u64,
    pub damaged: Vec<Damage>,
    pub findings_total: u64,
    pub findings: Vec<Finding>,
    /// The steps timed (a level 1 drill: the read-back; level 2: every restore step).
    pub steps: Vec<StepTime>,
    /// What went wrong besides damage and findings (the drill could not finish).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl DrillReport {
    /// A report of a read-back that finished.
    pub fn read_back(
        backup_id: &str,
        started_at: DateTime<Utc>,
        finished_at: DateTime<Utc>,
        r: VerifyReport,
    ) -> DrillReport {
        let seconds = (finished_at - started_at).num_milliseconds().max(0) as f64 / 1000.0;
        DrillReport {
            backup_id: backup_id.to_string(),
            level: DrillLevel::ReadBack,
            started_at,
            finished_at,
            files_checked: r.files_checked,
            bytes_checked: r.bytes_checked,
            checks: r.inspected,
            damaged_total: r.damaged.len() as u64,
            damaged: r.damaged.into_iter().take(LISTED).collect(),
            findings_total: r.findings.len() as u64,
            findings: r.findings.into_iter().take(LISTED).collect(),
            steps: vec![StepTime {
                title: "read the backup back and check its meaning".into(),
                seconds,
            }],
            error: None,
        }
    }

    /// A report of a restore into a standby: its steps' times (their sum is the RTO) and what
    /// went wrong, if anything.
    pub fn standby(
        backup_id: &str,
        started_at: DateTime<Utc>,
        finished_at: DateTime<Utc>,
        steps: Vec<StepTime>,
        error: Option<String>,
    ) -> DrillReport {
        DrillReport {
            backup_id: backup_id.to_string(),
            level: DrillLevel::Standby,
            started_at,
            finished_at,
            files_checked: 0,
            bytes_checked: 0,
            checks: BTreeMap::new(),
            damaged_total: 0,
            damaged: Vec::new(),
            findings_total: 0,
            findings: Vec::new(),
            steps,
            error,
        }
    }

    /// Whether the drill proved the backup restores.
    pub fn passed(&self) -> bool {
        self.error.is_none() && self.damaged_total == 0 && self.findings_total == 0
    }

    /// The measured time: the sum of the steps.
    pub fn rto_seconds(&self) -> f64 {
        self.steps.iter().map(|s| s.seconds).sum()
    }

    /// The readable form.
    pub fn summary(&self) -> String {
        let mut s = String::new();
        let verdict = if self.passed() { "PASSED" } else { "FAILED" };
        let _ = writeln!(
            s,
            "drill level {} of backup {}: {verdict}",
            self.level, self.backup_id
        );
        let _ = writeln!(
            s,
            "  started {}, finished {}",
            self.started_at.format("%Y-%m-%d %H:%M:%S UTC"),
            self.finished_at.format("%Y-%m-%d %H:%M:%S UTC")
        );
        if self.level == DrillLevel::ReadBack {
            let _ = writeln!(
                s,
                "  read back: {} files, {} bytes, every hash checked",
                self.files_checked, self.bytes_checked
            );
            if self.checks.is_empty() {
                let _ = writeln!(s, "  meaning: no file this drill reads for its meaning");
            }
        } else {
            let _ = writeln!(s, "  restored into the standby cluster, step by step");
        }
        for (kind, n) in &self.checks {
            let what = match kind.as_str() {
                "hopsfs block" => "chunks matched their .meta checksums",
                "sql dump" => "statements",
                "rondb ctl file" => "table descriptions and fragment infos",
                "rondb data file" => "records",
                "rondb log file" => "log entries",
                k if k.starts_with("rondb") => "container checked",
                _ => "checked",
            };
            let _ = writeln!(s, "  {kind}: {} files, {} {what}", n.files, n.units);
        }
        if self.damaged_total > 0 {
            let _ = writeln!(
                s,
                "  damaged in the repository: {} file(s)",
                self.damaged_total
            );
            for d in &self.damaged {
                let _ = writeln!(s, "    {}: {}", d.path, d.reason);
            }
        }
        if self.findings_total > 0 {
            let _ = writeln!(s, "  wrong in the content: {} file(s)", self.findings_total);
            for f in &self.findings {
                let _ = writeln!(s, "    {}: {}", f.path, f.reason);
            }
        }
        let listed = self.damaged.len() + self.findings.len();
        let total = (self.damaged_total + self.findings_total) as usize;
        if total > listed {
            let _ = writeln!(s, "    ... and {} more", total - listed);
        }
        if let Some(e) = &self.error {
            let _ = writeln!(s, "  error: {e}");
        }
        let _ = writeln!(s, "  time per step:");
        for st in &self.steps {
            let _ = writeln!(s, "    {:>9.1} s  {}", st.seconds, st.title);
        }
        let label = match self.level {
            DrillLevel::ReadBack => "total (read-back)",
            DrillLevel::Standby => "total (RTO)",
        };
        let _ = writeln!(s, "    {:>9.1} s  {label}", self.rto_seconds());
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn report(findings: usize) -> DrillReport {
        let t = |s| Utc.with_ymd_and_hms(2026, 12, 7, 10, 0, s).unwrap();
        let mut r = VerifyReport {
            files_checked: 12,
            bytes_checked: 4096,
            ..Default::default()
        };
        r.inspected.insert(
            "hopsfs block".into(),
            InspectedCount {
                files: 3,
                units: 24,
            },
        );
        r.inspected
            .insert("sql dump".into(), InspectedCount { files: 2, units: 9 });
        for i in 0..findings {
            r.findings.push(Finding {
                path: format!("hopsfs/dn1/vol1/blk_{i}"),
                reason: "chunk 0 differs".into(),
            });
        }
        DrillReport::read_back("20261207T100000Z", t(0), t(42), r)
    }

    #[test]
    fn a_clean_read_back_passes_with_its_time() {
        let r = report(0);
        assert!(r.passed());
        assert_eq!(r.rto_seconds(), 42.0);
        let s = r.summary();
        assert!(
            s.starts_with("drill level 1 of backup 20261207T100000Z: PASSED\n"),
            "{s}"
        );
        assert!(
            s.contains("hopsfs block: 3 files, 24 chunks matched their .meta checksums"),
            "{s}"
        );
        assert!(s.contains("sql dump: 2 files, 9 statements"), "{s}");
        assert!(s.contains("42.0 s  total (read-back)"), "{s}");
        // JSON round trip, the level as a number.
        let j = serde_json::to_value(&r).unwrap();
        assert_eq!(j["level"], 1);
        assert_eq!(serde_json::from_value::<DrillReport>(j).unwrap(), r);
    }

    #[test]
    fn findings_fail_it_and_only_the_first_are_listed() {
        let r = report(LISTED + 3);
        assert!(!r.passed());
        assert_eq!(r.findings.len(), LISTED);
        assert_eq!(r.findings_total, LISTED as u64 + 3);
        let s = r.summary();
        assert!(s.contains(": FAILED"), "{s}");
        assert!(s.contains("wrong in the content: 53 file(s)"), "{s}");
        assert!(s.contains("... and 3 more"), "{s}");
        assert!(DrillLevel::try_from(3)
            .unwrap_err()
            .contains("1 (read back"));
    }
}
