//! Retention: which backups to keep and which to forget, and why.
//!
//! [`decide`] is a pure function of the backups' facts, a [`RetentionPolicy`] and `now`: no I/O,
//! no clock. It returns one [`Decision`] per backup with every [`Reason`] that keeps it, so that
//! `hopsdrctl prune --dry-run` can print exactly what pruning would do. Forgetting (removing
//! manifests) and garbage collection act on the decisions elsewhere.
//!
//! # Rules
//!
//! Only *counting* backups — state `Succeeded`, verified or not — count toward the `keep_*` rules.
//! Failed, interrupted and partial backups never count and are forgotten unless pinned; queued and
//! running backups never count either, but are always kept.
//!
//! - `keep_last` N: the N newest counting backups ([`Reason::Last`]).
//! - `keep_hourly`/`keep_daily`/`keep_weekly`/`keep_monthly`/`keep_yearly` N: the periods are taken
//!   in the policy's time zone; the newest counting backup of each of the N newest periods that
//!   hold a counting backup is kept (as restic does). Periods with no backup do not use up N.
//!   Days are calendar days in the zone (23 or 25 hours long on DST changes), weeks are ISO weeks
//!   (Monday to Sunday, numbered within the ISO week-year), and hours are real hours: the hour
//!   repeated when clocks go back is two periods.
//! - `keep_within` D: counting backups started less than D before `now` (and any started after
//!   `now`, which only a skewed clock produces).
//!
//! Whatever the rules say:
//!
//! - pinned backups are kept ([`Reason::Pinned`]);
//! - queued and running backups are kept ([`Reason::Running`]);
//! - the newest succeeded and verified backup is kept ([`Reason::NewestGoodBackup`]);
//! - the `min_verified` newest succeeded and verified backups are kept ([`Reason::MinVerified`]);
//! - when no backup is both succeeded and verified (verification has not run yet, or found every
//!   backup damaged), the newest succeeded backup is kept in its place
//!   ([`Reason::NewestSucceeded`]): a TTL must not expire the last complete backup while newer
//!   ones fail, verified or not;
//! - a policy without any `keep_*` rule keeps every backup ([`Reason::NoPolicy`]): an unconfigured
//!   policy must not delete anything, and the reason says so instead of keeping things silently.
//!   A rule set to 0 is a rule: `keep_last = 0` alone forgets everything the safety rules allow.
//!
//! A backup is kept if and only if it has at least one reason.

use std::cmp::Ordering;
use std::collections::HashSet;
use std::fmt;

use chrono::{DateTime, Datelike, Duration, Timelike, Utc};
use chrono_tz::Tz;
use serde::Serialize;

use crate::domain::State;
use crate::ids::BackupId;

/// A validated retention policy. Every `keep_*` rule is optional; see the module docs for what
/// each one keeps and for the rules that apply whatever the policy says.
#[derive(Debug, Clone, PartialEq)]
pub struct RetentionPolicy {
    pub keep_last: Option<u32>,
    pub keep_hourly: Option<u32>,
    pub keep_daily: Option<u32>,
    pub keep_weekly: Option<u32>,
    pub keep_monthly: Option<u32>,
    pub keep_yearly: Option<u32>,
    pub keep_within: Option<Duration>,
    /// The zone in which hours, days, weeks, months and years are counted.
    pub timezone: Tz,
    /// How many of the newest succeeded and verified backups are always kept.
    pub min_verified: u32,
}

impl Default for RetentionPolicy {
    /// No `keep_*` rule (so everything is kept), UTC, `min_verified` 1.
    fn default() -> Self {
        RetentionPolicy {
            keep_last: None,
            keep_hourly: None,
            keep_daily: None,
            keep_weekly: None,
            keep_monthly: None,
            keep_yearly: None,
            keep_within: None,
            timezone: Tz::UTC,
            min_verified: 1,
        }
    }
}

impl RetentionPolicy {
    /// Whether any `keep_*` rule is set. Without one, [`decide`] keeps everything.
    pub fn has_rules(&self) -> bool {
        self.keep_last.is_some()
            || self.keep_hourly.is_some()
            || self.keep_daily.is_some()
            || self.keep_weekly.is_some()
            || self.keep_monthly.is_some()
            || self.keep_yearly.is_some()
            || self.keep_within.is_some()
    }
}

/// What retention needs to know about one backup, taken from the catalog.
#[derive(Debug, Clone, PartialEq)]
pub struct BackupFacts {
    pub id: BackupId,
    pub started_at: DateTime<Utc>,
    pub state: State,
    /// Read back and found intact by the last verification of this backup.
    pub verified: bool,
    pub pinned: bool,
}

impl BackupFacts {
    /// Counts toward the `keep_*` rules: complete, whether verified or not.
    fn counts(&self) -> bool {
        self.state == State::Succeeded
    }

    /// Complete and verified: restorable as far as hopsdr knows.
    fn is_good(&self) -> bool {
        self.state == State::Succeeded && self.verified
    }

    fn in_progress(&self) -> bool {
        matches!(self.state, State::Queued | State::Running)
    }
}

/// Why a backup is kept. A [`Decision`] lists them in this order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    /// Among the `keep_last` newest counting backups.
    Last,
    /// The newest counting backup of one of the `keep_hourly` newest hours.
    Hourly,
    /// The newest counting backup of one of the `keep_daily` newest days.
    Daily,
    /// The newest counting backup of one of the `keep_weekly` newest ISO weeks.
    Weekly,
    /// The newest counting backup of one of the `keep_monthly` newest months.
    Monthly,
    /// The newest counting backup of one of the `keep_yearly` newest years.
    Yearly,
    /// A counting backup started within `keep_within` before now.
    Within,
    /// Pinned by an operator.
    Pinned,
    /// The newest succeeded and verified backup.
    NewestGoodBackup,
    /// No backup is succeeded and verified, and this is the newest succeeded one.
    NewestSucceeded,
    /// Among the `min_verified` newest succeeded and verified backups.
    MinVerified,
    /// Queued or running: never forgotten.
    Running,
    /// The policy has no `keep_*` rule, so nothing is forgotten.
    NoPolicy,
}

impl Reason {
    /// A stable name, as printed by `hopsdrctl prune --dry-run` and in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Last => "last",
            Reason::Hourly => "hourly",
            Reason::Daily => "daily",
            Reason::Weekly => "weekly",
            Reason::Monthly => "monthly",
            Reason::Yearly => "yearly",
            Reason::Within => "within",
            Reason::Pinned => "pinned",
            Reason::NewestGoodBackup => "newest_good_backup",
            Reason::NewestSucceeded => "newest_succeeded",
            Reason::MinVerified => "min_verified",
            Reason::Running => "running",
            Reason::NoPolicy => "no_policy",
        }
    }

    /// Whether this reason comes from a `keep_*` rule of the policy (as opposed to a rule that
    /// applies whatever the policy says).
    pub fn is_keep_rule(self) -> bool {
        matches!(
            self,
            Reason::Last
                | Reason::Hourly
                | Reason::Daily
                | Reason::Weekly
                | Reason::Monthly
                | Reason::Yearly
                | Reason::Within
        )
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Keep or forget one backup, with every reason it is kept (none when it is forgotten).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Decision {
    pub id: BackupId,
    pub keep: bool,
    pub reasons: Vec<Reason>,
}

/// Decides which backups to keep.
///
/// The decisions come newest first (by `started_at`, then by id), whatever the order of
/// `backups`, so the result depends only on the set of backups, the policy and `now`. Backup ids
/// are expected to be unique.
pub fn decide(
    backups: &[BackupFacts],
    policy: &RetentionPolicy,
    now: DateTime<Utc>,
) -> Vec<Decision> {
    let mut sorted: Vec<&BackupFacts> = backups.iter().collect();
    sorted.sort_by(|a, b| newest_first(a, b));
    let mut reasons: Vec<Vec<Reason>> = vec![Vec::new(); sorted.len()];

    // The keep_* rules, over counting backups only (positions in `sorted`, newest first).
    let counting: Vec<usize> = (0..sorted.len()).filter(|&i| sorted[i].counts()).collect();
    if let Some(n) = policy.keep_last {
        for &i in counting.iter().take(n as usize) {
            reasons[i].push(Reason::Last);
        }
    }
    let buckets = [
        (policy.keep_hourly, Period::Hour, Reason::Hourly),
        (policy.keep_daily, Period::Day, Reason::Daily),
        (policy.keep_weekly, Period::Week, Reason::Weekly),
        (policy.keep_monthly, Period::Month, Reason::Monthly),
        (policy.keep_yearly, Period::Year, Reason::Yearly),
    ];
    for (n, period, reason) in buckets {
        let Some(n) = n else { continue };
        // A set rather than "differs from the previous one": local dates are not monotonic in
        // UTC in zones that move their clocks back across midnight.
        let mut seen = HashSet::new();
        for &i in &counting {
            if seen.len() >= n as usize {
                break;
            }
            if seen.insert(period.key(sorted[i].started_at, policy.timezone)) {
                reasons[i].push(reason);
            }
        }
    }
    if let Some(within) = policy.keep_within {
        // A duration reaching before the earliest representable time keeps everything.
        let since = now.checked_sub_signed(within);
        for &i in &counting {
            if since.is_none_or(|since| sorted[i].started_at > since) {
                reasons[i].push(Reason::Within);
            }
        }
    }

    // The rules that apply whatever the policy says.
    let mut good = (0..sorted.len())
        .filter(|&i| sorted[i].is_good())
        .peekable();
    match good.peek() {
        Some(&newest) => reasons[newest].push(Reason::NewestGoodBackup),
        None => {
            if let Some(&newest) = counting.first() {
                reasons[newest].push(Reason::NewestSucceeded);
            }
        }
    }
    for i in good.take(policy.min_verified as usize) {
        reasons[i].push(Reason::MinVerified);
    }
    let no_policy = !policy.has_rules();
    for (b, r) in sorted.iter().zip(reasons.iter_mut()) {
        if b.pinned {
            r.push(Reason::Pinned);
        }
        if b.in_progress() {
            r.push(Reason::Running);
        }
        if no_policy {
            r.push(Reason::NoPolicy);
        }
        r.sort_unstable();
    }

    sorted
        .into_iter()
        .zip(reasons)
        .map(|(b, reasons)| Decision {
            id: b.id.clone(),
            keep: !reasons.is_empty(),
            reasons,
        })
        .collect()
}

/// Newest first; ties broken by id, then by the remaining facts, so that the order is total.
fn newest_first(a: &BackupFacts, b: &BackupFacts) -> Ordering {
    b.started_at
        .cmp(&a.started_at)
        .then_with(|| b.id.cmp(&a.id))
        .then_with(|| state_rank(b.state).cmp(&state_rank(a.state)))
        .then_with(|| b.verified.cmp(&a.verified))
        .then_with(|| b.pinned.cmp(&a.pinned))
}

fn state_rank(s: State) -> u8 {
    match s {
        State::Queued => 0,
        State::Running => 1,
        State::Succeeded => 2,
        State::Partial => 3,
        State::Failed => 4,
        State::Interrupted => 5,
    }
}

/// The calendar periods of the bucket rules.
#[derive(Debug, Clone, Copy)]
enum Period {
    Hour,
    Day,
    Week,
    Month,
    Year,
}

impl Period {
    /// A value that two instants share if and only if they fall in the same period in `tz`.
    fn key(self, at: DateTime<Utc>, tz: Tz) -> i64 {
        let local = at.with_timezone(&tz);
        match self {
            // The instant the local hour started: the hour repeated when clocks go back is two
            // hours, and zones with half-hour offsets still get whole local hours.
            Period::Hour => {
                at.timestamp() - i64::from(local.minute()) * 60 - i64::from(local.second())
            }
            Period::Day => i64::from(local.date_naive().num_days_from_ce()),
            Period::Week => {
                let week = local.iso_week();
                i64::from(week.year()) * 100 + i64::from(week.week())
            }
            Period::Month => i64::from(local.year()) * 12 + i64::from(local.month0()),
            Period::Year => i64::from(local.year()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashMap;

    use Reason::*;

    fn t(rfc3339: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(rfc3339)
            .unwrap_or_else(|e| panic!("bad time {rfc3339:?}: {e}"))
            .with_timezone(&Utc)
    }

    /// A backup from a compact description: the state's initial (`S`ucceeded, `P`artial,
    /// `F`ailed, `I`nterrupted, `R`unning, `Q`ueued), then `v` if verified and `*` if pinned.
    fn backup(at: &str, kind: &str, seq: u32) -> BackupFacts {
        let started_at = t(at);
        let state = match kind.as_bytes()[0] {
            b'S' => State::Succeeded,
            b'P' => State::Partial,
            b'F' => State::Failed,
            b'I' => State::Interrupted,
            b'R' => State::Running,
            b'Q' => State::Queued,
            _ => panic!("bad kind {kind:?}"),
        };
        BackupFacts {
            id: BackupId::at(started_at, seq),
            started_at,
            state,
            verified: kind.contains('v'),
            pinned: kind.contains('*'),
        }
    }

    struct Case {
        name: &'static str,
        policy: RetentionPolicy,
        now: &'static str,
        /// (started at, kind, the reasons it must be kept for; empty: forgotten)
        backups: Vec<(&'static str, &'static str, &'static [Reason])>,
    }

    fn policy() -> RetentionPolicy {
        RetentionPolicy::default()
    }

    fn berlin() -> RetentionPolicy {
        RetentionPolicy {
            timezone: chrono_tz::Europe::Berlin,
            ..policy()
        }
    }

    fn cases() -> Vec<Case> {
        vec![
            Case {
                name: "no rule at all keeps everything, failed ones included",
                policy: policy(),
                now: "2025-06-10T12:00:00Z",
                backups: vec![
                    ("2025-06-10T10:00:00Z", "F", &[NoPolicy]),
                    ("2025-06-10T09:00:00Z", "S", &[NoPolicy]),
                    (
                        "2025-06-09T09:00:00Z",
                        "Sv",
                        &[NewestGoodBackup, MinVerified, NoPolicy],
                    ),
                    ("2025-06-08T09:00:00Z", "Sv", &[NoPolicy]),
                ],
            },
            Case {
                name: "keep_last counts succeeded backups, verified or not",
                policy: RetentionPolicy {
                    keep_last: Some(2),
                    ..policy()
                },
                now: "2025-06-10T12:00:00Z",
                backups: vec![
                    ("2025-06-10T09:00:00Z", "S", &[Last]),
                    (
                        "2025-06-09T09:00:00Z",
                        "Sv",
                        &[Last, NewestGoodBackup, MinVerified],
                    ),
                    ("2025-06-08T09:00:00Z", "Sv", &[]),
                    ("2025-06-07T09:00:00Z", "S", &[]),
                ],
            },
            Case {
                name: "newer failed, interrupted and partial backups do not displace good ones",
                policy: RetentionPolicy {
                    keep_last: Some(2),
                    ..policy()
                },
                now: "2025-06-10T12:00:00Z",
                backups: vec![
                    ("2025-06-10T11:00:00Z", "F", &[]),
                    ("2025-06-10T10:00:00Z", "I", &[]),
                    ("2025-06-10T09:00:00Z", "Pv", &[]),
                    (
                        "2025-06-09T09:00:00Z",
                        "Sv",
                        &[Last, NewestGoodBackup, MinVerified],
                    ),
                    ("2025-06-08T09:00:00Z", "Sv", &[Last]),
                    ("2025-06-07T09:00:00Z", "Sv", &[]),
                ],
            },
            Case {
                name: "a partial backup does not take its day's place",
                policy: RetentionPolicy {
                    keep_daily: Some(2),
                    ..policy()
                },
                now: "2025-06-10T12:00:00Z",
                backups: vec![
                    ("2025-06-10T11:00:00Z", "P", &[]),
                    (
                        "2025-06-10T01:00:00Z",
                        "Sv",
                        &[Daily, NewestGoodBackup, MinVerified],
                    ),
                    ("2025-06-09T23:00:00Z", "P", &[]),
                    ("2025-06-09T01:00:00Z", "S", &[Daily]),
                    ("2025-06-08T01:00:00Z", "Sv", &[]),
                ],
            },
            Case {
                name: "pinned backups are kept, even failed ones, and still count",
                policy: RetentionPolicy {
                    keep_last: Some(1),
                    ..policy()
                },
                now: "2025-06-10T12:00:00Z",
                backups: vec![
                    ("2025-06-10T11:00:00Z", "F*", &[Pinned]),
                    (
                        "2025-06-10T10:00:00Z",
                        "Sv*",
                        &[Last, Pinned, NewestGoodBackup, MinVerified],
                    ),
                    ("2025-06-09T10:00:00Z", "Sv", &[]),
                    ("2025-06-01T10:00:00Z", "S*", &[Pinned]),
                ],
            },
            Case {
                name: "queued and running backups are kept and do not count",
                policy: RetentionPolicy {
                    keep_last: Some(1),
                    ..policy()
                },
                now: "2025-06-10T12:00:00Z",
                backups: vec![
                    ("2025-06-10T11:59:00Z", "Q", &[Running]),
                    ("2025-06-10T11:00:00Z", "R", &[Running]),
                    ("2025-06-10T10:00:00Z", "S", &[Last]),
                    (
                        "2025-06-09T10:00:00Z",
                        "Sv",
                        &[NewestGoodBackup, MinVerified],
                    ),
                    ("2025-06-08T10:00:00Z", "Sv", &[]),
                ],
            },
            Case {
                name: "a policy that would delete everything keeps the newest good backup",
                policy: RetentionPolicy {
                    keep_last: Some(0),
                    min_verified: 0,
                    ..policy()
                },
                now: "2025-06-10T12:00:00Z",
                backups: vec![
                    ("2025-06-10T11:00:00Z", "F", &[]),
                    ("2025-06-10T10:00:00Z", "S", &[]),
                    ("2025-06-09T10:00:00Z", "Sv", &[NewestGoodBackup]),
                    ("2025-06-08T10:00:00Z", "Sv", &[]),
                ],
            },
            Case {
                name: "a TTL does not expire the last good backup while newer ones fail",
                policy: RetentionPolicy {
                    keep_within: Some(Duration::days(7)),
                    ..policy()
                },
                now: "2025-06-30T12:00:00Z",
                backups: vec![
                    ("2025-06-30T10:00:00Z", "F", &[]),
                    ("2025-06-25T10:00:00Z", "I", &[]),
                    (
                        "2025-06-10T10:00:00Z",
                        "Sv",
                        &[NewestGoodBackup, MinVerified],
                    ),
                    ("2025-06-09T10:00:00Z", "Sv", &[]),
                ],
            },
            Case {
                name: "with nothing verified the newest succeeded backup is kept",
                policy: RetentionPolicy {
                    keep_within: Some(Duration::hours(1)),
                    ..policy()
                },
                now: "2025-06-30T12:00:00Z",
                backups: vec![
                    ("2025-06-30T10:00:00Z", "F", &[]),
                    ("2025-06-20T10:00:00Z", "P", &[]),
                    ("2025-06-10T10:00:00Z", "S", &[NewestSucceeded]),
                    ("2025-06-09T10:00:00Z", "S", &[]),
                ],
            },
            Case {
                name: "keep_within keeps counting backups younger than the duration",
                policy: RetentionPolicy {
                    keep_within: Some(Duration::days(1)),
                    ..policy()
                },
                now: "2025-06-10T12:00:00Z",
                backups: vec![
                    ("2025-06-10T13:00:00Z", "S", &[Within]),
                    ("2025-06-10T11:50:00Z", "F", &[]),
                    ("2025-06-10T11:00:00Z", "S", &[Within]),
                    (
                        "2025-06-09T12:00:01Z",
                        "Sv",
                        &[Within, NewestGoodBackup, MinVerified],
                    ),
                    ("2025-06-09T12:00:00Z", "Sv", &[]),
                    ("2025-06-08T12:00:00Z", "S", &[]),
                ],
            },
            Case {
                name: "min_verified keeps the newest verified ones beyond the rules",
                policy: RetentionPolicy {
                    keep_last: Some(1),
                    min_verified: 3,
                    ..policy()
                },
                now: "2025-06-10T12:00:00Z",
                backups: vec![
                    ("2025-06-10T10:00:00Z", "S", &[Last]),
                    (
                        "2025-06-09T10:00:00Z",
                        "Sv",
                        &[NewestGoodBackup, MinVerified],
                    ),
                    ("2025-06-08T10:00:00Z", "F", &[]),
                    ("2025-06-07T10:00:00Z", "Sv", &[MinVerified]),
                    ("2025-06-06T10:00:00Z", "S", &[]),
                    ("2025-06-05T10:00:00Z", "Sv", &[MinVerified]),
                    ("2025-06-04T10:00:00Z", "Sv", &[]),
                ],
            },
            Case {
                name: "hourly keeps the newest of each of the newest hours that have backups",
                policy: RetentionPolicy {
                    keep_hourly: Some(3),
                    ..policy()
                },
                now: "2025-06-10T12:00:00Z",
                backups: vec![
                    (
                        "2025-06-10T11:45:00Z",
                        "Sv",
                        &[Hourly, NewestGoodBackup, MinVerified],
                    ),
                    ("2025-06-10T11:15:00Z", "Sv", &[]),
                    ("2025-06-10T08:59:59Z", "S", &[Hourly]),
                    ("2025-06-10T08:00:00Z", "S", &[]),
                    ("2025-06-10T07:30:00Z", "S", &[Hourly]),
                    ("2025-06-10T06:30:00Z", "S", &[]),
                ],
            },
            Case {
                name: "weekly buckets are ISO weeks, across the turn of the year",
                policy: RetentionPolicy {
                    keep_weekly: Some(2),
                    ..policy()
                },
                now: "2025-01-03T12:00:00Z",
                backups: vec![
                    // Thursday and Monday of 2025-W01, which starts on 2024-12-30.
                    (
                        "2025-01-02T10:00:00Z",
                        "Sv",
                        &[Weekly, NewestGoodBackup, MinVerified],
                    ),
                    ("2024-12-30T10:00:00Z", "S", &[]),
                    // Sunday and Monday of 2024-W52.
                    ("2024-12-29T10:00:00Z", "S", &[Weekly]),
                    ("2024-12-23T10:00:00Z", "S", &[]),
                    ("2024-12-22T10:00:00Z", "S", &[]),
                ],
            },
            Case {
                name: "monthly and yearly",
                policy: RetentionPolicy {
                    keep_monthly: Some(2),
                    keep_yearly: Some(3),
                    ..policy()
                },
                now: "2025-06-10T12:00:00Z",
                backups: vec![
                    (
                        "2025-06-01T10:00:00Z",
                        "Sv",
                        &[Monthly, Yearly, NewestGoodBackup, MinVerified],
                    ),
                    ("2025-04-30T10:00:00Z", "S", &[Monthly]),
                    ("2025-04-01T10:00:00Z", "S", &[]),
                    ("2024-12-31T10:00:00Z", "S", &[Yearly]),
                    ("2024-01-01T10:00:00Z", "S", &[]),
                    ("2022-05-01T10:00:00Z", "S", &[Yearly]),
                    ("2021-05-01T10:00:00Z", "S", &[]),
                ],
            },
            Case {
                name: "one backup can be kept for many reasons",
                policy: RetentionPolicy {
                    keep_last: Some(1),
                    keep_hourly: Some(1),
                    keep_daily: Some(1),
                    keep_weekly: Some(1),
                    keep_monthly: Some(1),
                    keep_yearly: Some(1),
                    keep_within: Some(Duration::hours(1)),
                    min_verified: 2,
                    ..policy()
                },
                now: "2025-06-10T12:00:00Z",
                backups: vec![
                    (
                        "2025-06-10T11:30:00Z",
                        "Sv*",
                        &[
                            Last,
                            Hourly,
                            Daily,
                            Weekly,
                            Monthly,
                            Yearly,
                            Within,
                            Pinned,
                            NewestGoodBackup,
                            MinVerified,
                        ],
                    ),
                    ("2025-06-10T11:20:00Z", "Sv", &[Within, MinVerified]),
                ],
            },
            Case {
                name: "rules set to 0 are rules: no backup is kept for having no policy",
                policy: RetentionPolicy {
                    keep_daily: Some(0),
                    ..policy()
                },
                now: "2025-06-10T12:00:00Z",
                backups: vec![
                    ("2025-06-10T10:00:00Z", "S", &[]),
                    (
                        "2025-06-09T10:00:00Z",
                        "Sv",
                        &[NewestGoodBackup, MinVerified],
                    ),
                    ("2025-06-08T10:00:00Z", "F", &[]),
                ],
            },
            Case {
                name: "daily in Berlin across the spring DST change (a 23-hour day)",
                policy: RetentionPolicy {
                    keep_daily: Some(2),
                    ..berlin()
                },
                now: "2025-03-31T12:00:00Z",
                backups: vec![
                    (
                        "2025-03-30T23:30:00+02:00",
                        "Sv",
                        &[Daily, NewestGoodBackup, MinVerified],
                    ),
                    // Same UTC day as the next one, but 30 March in Berlin.
                    ("2025-03-30T00:30:00+01:00", "S", &[]),
                    ("2025-03-29T23:30:00+01:00", "S", &[Daily]),
                    ("2025-03-29T01:00:00+01:00", "S", &[]),
                ],
            },
            Case {
                name: "daily in Berlin across the autumn DST change (a 25-hour day)",
                policy: RetentionPolicy {
                    keep_daily: Some(2),
                    ..berlin()
                },
                now: "2025-10-27T12:00:00Z",
                backups: vec![
                    // 24h40m apart, yet both on 26 October in Berlin.
                    (
                        "2025-10-26T23:50:00+01:00",
                        "Sv",
                        &[Daily, NewestGoodBackup, MinVerified],
                    ),
                    ("2025-10-26T00:10:00+02:00", "S", &[]),
                    ("2025-10-25T12:00:00+02:00", "S", &[Daily]),
                ],
            },
            Case {
                name: "daily in UTC splits the same backups differently from Berlin",
                policy: RetentionPolicy {
                    keep_daily: Some(2),
                    ..policy()
                },
                now: "2025-10-27T12:00:00Z",
                backups: vec![
                    (
                        "2025-10-26T23:50:00+01:00",
                        "Sv",
                        &[Daily, NewestGoodBackup, MinVerified],
                    ),
                    ("2025-10-26T00:10:00+02:00", "S", &[Daily]),
                    ("2025-10-25T12:00:00+02:00", "S", &[]),
                ],
            },
            Case {
                name: "hourly in Berlin: the hour repeated when clocks go back is two hours",
                policy: RetentionPolicy {
                    keep_hourly: Some(2),
                    ..berlin()
                },
                now: "2025-10-26T12:00:00Z",
                backups: vec![
                    (
                        "2025-10-26T02:30:00+01:00",
                        "Sv",
                        &[Hourly, NewestGoodBackup, MinVerified],
                    ),
                    ("2025-10-26T02:10:00+01:00", "S", &[]),
                    ("2025-10-26T02:30:00+02:00", "S", &[Hourly]),
                    ("2025-10-26T01:30:00+02:00", "S", &[]),
                ],
            },
            Case {
                name: "hourly in a half-hour zone counts local hours",
                policy: RetentionPolicy {
                    keep_hourly: Some(2),
                    timezone: chrono_tz::Asia::Kolkata,
                    ..policy()
                },
                now: "2025-06-10T12:00:00Z",
                backups: vec![
                    // 10:40 and 10:10 IST: the same local hour, though 10:00Z lies between.
                    (
                        "2025-06-10T05:10:00Z",
                        "Sv",
                        &[Hourly, NewestGoodBackup, MinVerified],
                    ),
                    ("2025-06-10T04:40:00Z", "S", &[]),
                    ("2025-06-10T04:20:00Z", "S", &[Hourly]),
                ],
            },
        ]
    }

    #[test]
    fn table() {
        for case in cases() {
            let backups: Vec<BackupFacts> = case
                .backups
                .iter()
                .map(|(at, kind, _)| backup(at, kind, 0))
                .collect();
            let now = t(case.now);
            let decisions = decide(&backups, &case.policy, now);
            assert_eq!(decisions.len(), backups.len(), "{}", case.name);
            let by_id: HashMap<&BackupId, &Decision> =
                decisions.iter().map(|d| (&d.id, d)).collect();
            for (b, (at, kind, want)) in backups.iter().zip(&case.backups) {
                let d = by_id[&b.id];
                assert_eq!(
                    (d.keep, d.reasons.as_slice()),
                    (!want.is_empty(), *want),
                    "case {:?}: backup {at} ({kind})",
                    case.name
                );
            }
            // Newest first, whatever the input order.
            let mut reversed = backups.clone();
            reversed.reverse();
            assert_eq!(
                decide(&reversed, &case.policy, now),
                decisions,
                "{}",
                case.name
            );
            let ids: Vec<&BackupId> = decisions.iter().map(|d| &d.id).collect();
            let mut want_ids: Vec<&BackupId> = backups.iter().map(|b| &b.id).collect();
            want_ids.sort_by(|a, b| b.cmp(a));
            assert_eq!(ids, want_ids, "{}", case.name);
        }
    }

    #[test]
    fn no_backups_no_decisions() {
        assert!(decide(&[], &policy(), t("2025-06-10T12:00:00Z")).is_empty());
    }

    #[test]
    fn same_start_is_ordered_by_id() {
        let a = backup("2025-06-10T10:00:00Z", "S", 0);
        let b = backup("2025-06-10T10:00:00Z", "Sv", 1);
        let p = RetentionPolicy {
            keep_last: Some(1),
            ..policy()
        };
        let d = decide(&[a.clone(), b.clone()], &p, t("2025-06-10T12:00:00Z"));
        assert_eq!(d[0].id, b.id);
        assert_eq!(d[0].reasons, vec![Last, NewestGoodBackup, MinVerified]);
        assert_eq!(d[1].id, a.id);
        assert!(!d[1].keep);
    }

    #[test]
    fn huge_keep_within_keeps_every_counting_backup() {
        let p = RetentionPolicy {
            keep_within: Some(Duration::MAX),
            ..policy()
        };
        let bs = [
            backup("2025-06-10T10:00:00Z", "S", 0),
            backup("1970-01-01T00:00:00Z", "S", 0),
            backup("2025-06-10T11:00:00Z", "F", 0),
        ];
        let d = decide(&bs, &p, t("2025-06-10T12:00:00Z"));
        let kept: Vec<bool> = d.iter().map(|d| d.keep).collect();
        assert_eq!(kept, vec![false, true, true]);
    }

    #[test]
    fn reasons_have_stable_names() {
        assert_eq!(NewestGoodBackup.to_string(), "newest_good_backup");
        assert_eq!(
            serde_json::to_string(&MinVerified).unwrap(),
            "\"min_verified\""
        );
        assert!(Within.is_keep_rule());
        assert!(!Pinned.is_keep_rule());
    }

    const STATES: [State; 6] = [
        State::Succeeded,
        State::Partial,
        State::Failed,
        State::Interrupted,
        State::Running,
        State::Queued,
    ];

    /// Backups within about 3 years, bunched so that several share an hour or a day.
    fn arb_backups() -> impl Strategy<Value = Vec<BackupFacts>> {
        let one = (
            0i64..1_100,
            0i64..86_400,
            prop::sample::select(STATES.to_vec()),
            any::<bool>(),
            prop::bool::weighted(0.1),
        );
        prop::collection::vec(one, 0..40).prop_map(|raw| {
            let base = t("2023-01-01T00:00:00Z");
            raw.into_iter()
                .enumerate()
                .map(|(i, (day, secs, state, verified, pinned))| {
                    // Coarse days and seconds make equal starts and shared periods likely.
                    let started_at =
                        base + Duration::days(day / 3) + Duration::seconds(secs / 600 * 600);
                    BackupFacts {
                        id: BackupId::at(started_at, i as u32),
                        started_at,
                        state,
                        verified,
                        pinned,
                    }
                })
                .collect()
        })
    }

    fn arb_policy() -> impl Strategy<Value = RetentionPolicy> {
        let n = || prop::option::of(0u32..6);
        (
            (n(), n(), n(), n(), n(), n()),
            prop::option::of(0i64..400 * 24),
            prop::sample::select(vec![
                Tz::UTC,
                chrono_tz::Europe::Berlin,
                chrono_tz::America::New_York,
                chrono_tz::America::Santiago,
                chrono_tz::Asia::Kolkata,
                chrono_tz::Australia::Lord_Howe,
            ]),
            0u32..5,
        )
            .prop_map(
                |((last, hourly, daily, weekly, monthly, yearly), within, tz, min)| {
                    RetentionPolicy {
                        keep_last: last,
                        keep_hourly: hourly,
                        keep_daily: daily,
                        keep_weekly: weekly,
                        keep_monthly: monthly,
                        keep_yearly: yearly,
                        keep_within: within.map(Duration::hours),
                        timezone: tz,
                        min_verified: min,
                    }
                },
            )
    }

    /// Backups, the same backups in another order, a policy and a `now`.
    fn arb_input() -> impl Strategy<
        Value = (
            Vec<BackupFacts>,
            Vec<BackupFacts>,
            RetentionPolicy,
            DateTime<Utc>,
        ),
    > {
        (arb_backups(), arb_policy(), 0i64..1_200).prop_flat_map(|(backups, policy, now_day)| {
            let now = t("2023-01-01T00:00:00Z") + Duration::days(now_day);
            (
                Just(backups.clone()),
                Just(backups).prop_shuffle(),
                Just(policy),
                Just(now),
            )
        })
    }

    /// Succeeded and verified, spelled out rather than taken from the code under test.
    fn is_good(b: &BackupFacts) -> bool {
        b.state == State::Succeeded && b.verified
    }

    fn decisions_by_id(decisions: &[Decision]) -> HashMap<BackupId, Decision> {
        decisions
            .iter()
            .map(|d| (d.id.clone(), d.clone()))
            .collect()
    }

    proptest! {
        #[test]
        fn invariants((backups, shuffled, policy, now) in arb_input()) {
            let decisions = decide(&backups, &policy, now);
            prop_assert_eq!(decisions.len(), backups.len());
            let by_id = decisions_by_id(&decisions);
            prop_assert_eq!(by_id.len(), backups.len());
            for d in &decisions {
                prop_assert_eq!(d.keep, !d.reasons.is_empty());
            }

            // (1) The newest succeeded and verified backup is kept.
            let newest_good = backups
                .iter()
                .filter(|b| is_good(b))
                .max_by_key(|b| (b.started_at, &b.id));
            if let Some(b) = newest_good {
                prop_assert!(by_id[&b.id].keep);
                prop_assert!(by_id[&b.id].reasons.contains(&NewestGoodBackup));
            }

            // (2) Every pinned backup is kept, and so is every queued or running one.
            for b in &backups {
                if b.pinned || matches!(b.state, State::Queued | State::Running) {
                    prop_assert!(by_id[&b.id].keep, "{:?}", b);
                }
            }

            // (3) At least min(min_verified, #good) good backups are kept.
            let good = backups.iter().filter(|b| is_good(b)).count();
            let good_kept = backups.iter().filter(|b| is_good(b) && by_id[&b.id].keep).count();
            prop_assert!(good_kept >= good.min(policy.min_verified as usize));

            // (4) Nothing but a succeeded backup is kept by a keep_* rule.
            for b in &backups {
                if b.state != State::Succeeded {
                    let d = &by_id[&b.id];
                    prop_assert!(!d.reasons.iter().any(|r| r.is_keep_rule()), "{:?}: {:?}", b, d);
                }
            }

            // (5) Deterministic and independent of input order.
            prop_assert_eq!(&decide(&backups, &policy, now), &decisions);
            prop_assert_eq!(&decide(&shuffled, &policy, now), &decisions);

            // No policy: nothing is forgotten.
            if !policy.has_rules() {
                prop_assert!(decisions.iter().all(|d| d.keep));
            }
        }

        #[test]
        fn bucket_rules_keep_at_most_n(backups in arb_backups(), policy in arb_policy()) {
            let now = t("2026-01-01T00:00:00Z");
            let decisions = decide(&backups, &policy, now);
            let count = |r: Reason| decisions.iter().filter(|d| d.reasons.contains(&r)).count();
            let limits = [
                (Last, policy.keep_last),
                (Hourly, policy.keep_hourly),
                (Daily, policy.keep_daily),
                (Weekly, policy.keep_weekly),
                (Monthly, policy.keep_monthly),
                (Yearly, policy.keep_yearly),
            ];
            let counting = backups.iter().filter(|b| b.state == State::Succeeded).count();
            for (r, n) in limits {
                let kept = count(r);
                prop_assert!(kept <= n.unwrap_or(0) as usize, "{r}: {kept} > {n:?}");
                if r == Last {
                    prop_assert_eq!(kept, counting.min(n.unwrap_or(0) as usize));
                }
            }
        }
    }
}
