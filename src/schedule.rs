//! Cron schedules: this module owns parsing standard 5-field crontab expressions (with their
//! error messages), computing fire times on the wall clock of a time zone, and the pure
//! scheduling decisions the daemon's scheduler loop takes from them ([`decide`],
//! [`expected_interval`]).
//!
//! Everything here is a pure function: the current time is always a parameter, the clock is
//! never read.
//!
//! # Syntax
//!
//! Five fields, `minute hour day-of-month month day-of-week`, each a comma-separated list of
//! `*`, `N`, `A-B`, `*/S` or `A-B/S`. Months accept `JAN`..`DEC` and days of week `SUN`..`SAT`
//! (any case); day-of-week `0` and `7` are both Sunday. The aliases `@yearly` (`@annually`),
//! `@monthly`, `@weekly`, `@daily` (`@midnight`) and `@hourly` are accepted. Seconds and year
//! fields (6 or 7 fields), `@reboot` and the non-standard `L`, `W`, `#` and `?` are refused.
//! As in Vixie cron, when day-of-month and day-of-week are both restricted a day matches if
//! either matches, but if either field starts with `*` (for example `*/2`) both must match.
//!
//! # Daylight saving time
//!
//! Fire times are computed by croner, which follows Vixie cron:
//!
//! - a *fixed-time* job (single minute and single hour, e.g. `30 2 * * *`) whose wall clock time
//!   is skipped by a spring-forward transition fires once, at the first instant after the gap
//!   (03:00 local on that day); when the wall clock time is repeated by a fall-back transition
//!   it fires once, at the first (earlier) occurrence;
//! - an *interval* job (a `*`, step, range or list in the minute or hour field, e.g. `@hourly`)
//!   follows the real clock: wall clock times skipped by spring-forward do not fire (23 hourly
//!   fires that day) and repeated wall clock times fire twice (25 hourly fires on the fall-back
//!   day, one per real hour).
//!
//! (croner calls a job fixed-time only if its minute and hour fields each hold exactly one value;
//! Vixie cron looks at whether the fields start with `*`. They differ only for lists or ranges
//! without `*`, like `0 1,2 * * *`, which croner treats as interval jobs.)

use std::fmt;

use chrono::{DateTime, Duration, Utc};
use chrono_tz::Tz;
use croner::parser::{CronParser, Seconds, Year};

/// A parsed cron expression.
#[derive(Debug, Clone)]
pub struct Cron {
    /// The expression as the user wrote it.
    expr: String,
    /// The compiled pattern, built from the normalised (numeric) expression.
    inner: croner::Cron,
}

/// Why a cron expression was refused. Display: `invalid cron expression "<expr>": <reason>`.
#[derive(Debug, thiserror::Error)]
#[error("invalid cron expression \"{expr}\": {reason}")]
pub struct CronError {
    pub expr: String,
    pub reason: String,
}

impl Cron {
    /// Parses a standard 5-field crontab expression or an `@` alias (see the module docs).
    pub fn parse(expr: &str) -> Result<Cron, CronError> {
        let refuse = |reason: String| CronError {
            expr: expr.to_string(),
            reason,
        };
        let normalised = normalise(expr).map_err(refuse)?;
        let fields: Vec<&str> = normalised.split(' ').collect();
        // Vixie cron: if either day field starts with `*`, a day must match both fields.
        // croner already does that when a field is exactly `*`; `*/2` needs the AND mode.
        let dom_and_dow = fields[2].starts_with('*') || fields[4].starts_with('*');
        let inner = CronParser::builder()
            .seconds(Seconds::Disallowed)
            .year(Year::Disallowed)
            .dom_and_dow(dom_and_dow)
            .build()
            .parse(&normalised)
            // Not expected: `normalise` only lets through what croner accepts.
            .map_err(|e| refuse(format!("unsupported expression ({e})")))?;
        Ok(Cron {
            expr: expr.to_string(),
            inner,
        })
    }

    /// The expression as it was given to [`Cron::parse`].
    pub fn as_str(&self) -> &str {
        &self.expr
    }

    /// The first fire time strictly after `after`, evaluated on the wall clock of `tz`.
    ///
    /// `None` if the expression never fires again (e.g. `0 0 30 2 *`). Fire times are whole
    /// minutes; DST transitions are handled as described in the module docs.
    pub fn next_after(&self, after: DateTime<Utc>, tz: Tz) -> Option<DateTime<Utc>> {
        let local = after.with_timezone(&tz);
        self.inner
            .find_next_occurrence(&local, false)
            .ok()
            .map(|t| t.with_timezone(&Utc))
            // Guarantees progress to callers that iterate; croner already promises it.
            .filter(|t| *t > after)
    }
}

impl fmt::Display for Cron {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.expr)
    }
}

/// What the scheduler should do for one schedule at `now`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Nothing is due; evaluate again at `next` (or earlier: see [`decide`] on clock jumps).
    Wait { next: DateTime<Utc> },
    /// Run the job now for the scheduled slot `due`, and record `due` (not the run time) as the
    /// schedule's last fire. `caught_up` is true when this one fire stands in for one or more
    /// slots that were missed (daemon down, host suspended, clock jumped forward).
    Fire { due: DateTime<Utc>, caught_up: bool },
    /// The expression never fires again.
    Never,
}

/// How late a slot may be evaluated and still count as on time rather than missed. The
/// scheduler loop evaluates at least once a minute; the margin covers a loop that is slow for a
/// moment, or a daemon restarted within a few minutes of a slot.
pub const ON_TIME_GRACE: Duration = Duration::minutes(5);

/// Decides what to do for one schedule at `now`.
///
/// - `last_fire`: the scheduled slot of the last fire recorded in the catalog (`None` if the
///   schedule never fired). The daemon records [`Decision::Fire`]'s `due`, i.e. the slot, not
///   the time the job ran, so a long-running job never makes the same slot fire twice; a slot
///   that comes due while the previous run is still going is recorded (and counted as skipped)
///   by the daemon all the same.
/// - `catch_up`: what to do about missed slots.
///
/// A slot is *pending* when it lies in `(last_fire, now]`, and *on time* when it is at most
/// [`ON_TIME_GRACE`] before `now`; older slots were *missed* (daemon down, host suspended, clock
/// jumped forward). Rules:
///
/// - no pending slot: `Wait` for the first slot after `last_fire`;
/// - the latest pending slot is on time: `Fire` it; older pending slots are folded into this one
///   fire (`caught_up` is true if there were any and `catch_up` is set);
/// - the latest pending slot was missed: with `catch_up`, exactly one `Fire` of it, with
///   `caught_up: true` (once recorded, the next decision waits for the next future slot);
///   without, `Wait` for the first slot after `now`. Nothing needs recording for the skip: the
///   next slot will be on time when it comes and fires then.
/// - never fired (`last_fire` is `None`): no catch-up. An on-time slot fires (`caught_up:
///   false`), otherwise `Wait` for the first slot after `now`. (The daemon records a baseline
///   fire when it first sees a schedule, so a new schedule's first fire is the first slot after
///   that.)
///
/// Clock jumps: the decision only compares slots with `now`, so a scheduler loop that
/// re-evaluates at least once a minute (rather than sleeping until `next` on a monotonic timer,
/// which stops during suspend) notices a suspend or a wall clock jump within a minute. A
/// forward jump makes the skipped slots missed (rules above: one fire at most). A backward jump
/// (`now` before `last_fire`) waits for the first slot after `last_fire`, so no recorded slot
/// fires again, however far back the clock went.
pub fn decide(
    cron: &Cron,
    tz: Tz,
    last_fire: Option<DateTime<Utc>>,
    catch_up: bool,
    now: DateTime<Utc>,
) -> Decision {
    let base = last_fire.unwrap_or(now - ON_TIME_GRACE);
    let Some(due) = cron.next_after(base, tz) else {
        return Decision::Never;
    };
    if due > now {
        return Decision::Wait { next: due };
    }
    let latest = latest_slot(cron, tz, due, now);
    if last_fire.is_none() {
        // `base` was `now - ON_TIME_GRACE`: `latest` is on time, older slots are not missed.
        return Decision::Fire {
            due: latest,
            caught_up: false,
        };
    }
    if now - latest <= ON_TIME_GRACE {
        Decision::Fire {
            due: latest,
            caught_up: catch_up && latest != due,
        }
    } else if catch_up {
        Decision::Fire {
            due: latest,
            caught_up: true,
        }
    } else {
        match cron.next_after(now, tz) {
            Some(next) => Decision::Wait { next },
            None => Decision::Never,
        }
    }
}

/// The last slot at or before `now`, given `due`, a slot at or before `now`.
fn latest_slot(cron: &Cron, tz: Tz, due: DateTime<Utc>, now: DateTime<Utc>) -> DateTime<Utc> {
    // Fast path: search backwards from `now` (one call however long the daemon was down).
    let mut latest = cron
        .inner
        .find_previous_occurrence(&now.with_timezone(&tz), true)
        .ok()
        .map(|t| t.with_timezone(&Utc))
        .filter(|t| *t >= due && *t <= now)
        .unwrap_or(due);
    // Make sure no slot lies between it and `now` (normally zero iterations).
    while let Some(next) = cron.next_after(latest, tz).filter(|n| *n <= now) {
        latest = next;
    }
    latest
}

/// How far ahead [`expected_interval`] looks: a week plus a day, so weekly patterns (weekends)
/// and DST shifts are seen whatever `now` is.
const INTERVAL_HORIZON_DAYS: i64 = 8;
/// Upper bound on the fires [`expected_interval`] examines (about 2.8 days of a minutely job).
const INTERVAL_MAX_FIRES: usize = 4096;

/// Expected interval between fires, for the metric `hopsdr_schedule_expected_interval_seconds`.
///
/// The longest gap between consecutive fires among the fires of the next 8 days after `now`
/// (at least the gap between the next two fires, at most 4096 fires examined). The maximum is
/// chosen so that an alert like "no success for longer than the expected interval" never fires
/// on a healthy schedule: for `0 2 * * MON-FRI` it is 3 days (the weekend), for a daily job
/// around a DST change 25 hours, for `@monthly` 28 to 31 days. `None` if fewer than two fires
/// lie ahead.
pub fn expected_interval(cron: &Cron, tz: Tz, now: DateTime<Utc>) -> Option<Duration> {
    let horizon = now + Duration::days(INTERVAL_HORIZON_DAYS);
    let mut prev = cron.next_after(now, tz)?;
    let mut longest: Option<Duration> = None;
    for _ in 0..INTERVAL_MAX_FIRES {
        let Some(next) = cron.next_after(prev, tz) else {
            break;
        };
        let gap = next - prev;
        longest = Some(longest.map_or(gap, |l| l.max(gap)));
        if next > horizon {
            break;
        }
        prev = next;
    }
    longest
}

// ----------------------------------------------------------------------------------------------
// Parsing: validation with short reasons, and normalisation to the numeric form croner reads.
// ----------------------------------------------------------------------------------------------

const FIELD_COUNT_REASON: &str = "expected 5 fields (minute hour day-of-month month day-of-week)";

/// One crontab field: its name in error messages, its range and its symbolic names.
struct Field {
    name: &'static str,
    min: u32,
    max: u32,
    /// Symbolic names, the first one standing for `min`.
    names: &'static [&'static str],
}

const MONTHS: [&str; 12] = [
    "JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC",
];
const WEEKDAYS: [&str; 7] = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"];

const FIELDS: [Field; 5] = [
    Field {
        name: "minute",
        min: 0,
        max: 59,
        names: &[],
    },
    Field {
        name: "hour",
        min: 0,
        max: 23,
        names: &[],
    },
    Field {
        name: "day-of-month",
        min: 1,
        max: 31,
        names: &[],
    },
    Field {
        name: "month",
        min: 1,
        max: 12,
        names: &MONTHS,
    },
    Field {
        name: "day-of-week",
        min: 0,
        max: 7,
        names: &WEEKDAYS,
    },
];

/// Validates `expr` and returns it as five space-separated numeric fields, or the reason it
/// is refused.
fn normalise(expr: &str) -> Result<String, String> {
    let trimmed = expr.trim();
    if trimmed.is_empty() {
        return Err("empty expression".to_string());
    }
    if trimmed.starts_with('@') {
        return alias(trimmed).map(str::to_string);
    }
    let parts: Vec<&str> = trimmed.split_whitespace().collect();
    if parts.len() != FIELDS.len() {
        return Err(format!("{FIELD_COUNT_REASON}, found {}", parts.len()));
    }
    let mut out = Vec::with_capacity(FIELDS.len());
    for (field, text) in FIELDS.iter().zip(&parts) {
        out.push(normalise_field(field, text)?);
    }
    Ok(out.join(" "))
}

/// The 5-field expression an `@` alias stands for.
fn alias(text: &str) -> Result<&'static str, String> {
    match text.to_ascii_lowercase().as_str() {
        "@yearly" | "@annually" => Ok("0 0 1 1 *"),
        "@monthly" => Ok("0 0 1 * *"),
        "@weekly" => Ok("0 0 * * 0"),
        "@daily" | "@midnight" => Ok("0 0 * * *"),
        "@hourly" => Ok("0 * * * *"),
        "@reboot" => Err("@reboot is not supported".to_string()),
        _ => Err(format!("unknown alias \"{text}\"")),
    }
}

/// Validates one field (a comma-separated list) and returns it with names replaced by numbers.
fn normalise_field(field: &Field, text: &str) -> Result<String, String> {
    let invalid = || format!("invalid {} \"{text}\"", field.name);
    let mut items = Vec::new();
    for item in text.split(',') {
        let (range, step) = match item.split_once('/') {
            Some((range, step)) => (range, Some(step)),
            None => (item, None),
        };
        let mut out = if range == "*" {
            "*".to_string()
        } else if let Some((start, end)) = range.split_once('-') {
            let start = value(field, start, false).ok_or_else(invalid)??;
            let end = value(field, end, true).ok_or_else(invalid)??;
            if start > end {
                return Err(format!("{} range is reversed", field.name));
            }
            format!("{start}-{end}")
        } else {
            let single = value(field, range, false).ok_or_else(invalid)??;
            if step.is_some() {
                return Err(format!(
                    "{} step needs * or a range (*/N or A-B/N)",
                    field.name
                ));
            }
            single.to_string()
        };
        if let Some(step) = step {
            if step.is_empty() || !step.bytes().all(|b| b.is_ascii_digit()) {
                return Err(invalid());
            }
            match step.parse::<u32>() {
                Ok(s) if (1..=field.max).contains(&s) => out = format!("{out}/{s}"),
                _ => return Err(format!("{} step out of range", field.name)),
            }
        }
        items.push(out);
    }
    Ok(items.join(","))
}

/// One value of a field: a number or a name. `None` if it is neither (the caller reports the
/// whole field), `Some(Err)` if it is out of range. `range_end`: a day-of-week range may end on
/// `SUN` (as in `FRI-SUN`), which then stands for 7.
fn value(field: &Field, text: &str, range_end: bool) -> Option<Result<u32, String>> {
    let out_of_range = || format!("{} out of range", field.name);
    if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
        return Some(match text.parse::<u32>() {
            Ok(n) if (field.min..=field.max).contains(&n) => Ok(n),
            _ => Err(out_of_range()),
        });
    }
    let index = field
        .names
        .iter()
        .position(|name| name.eq_ignore_ascii_case(text))?;
    let n = field.min + index as u32;
    Some(Ok(if range_end && n == 0 { 7 } else { n }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{NaiveDate, TimeZone};
    use chrono_tz::America::New_York;
    use chrono_tz::Europe::Berlin;
    use chrono_tz::UTC;

    fn cron(expr: &str) -> Cron {
        Cron::parse(expr).unwrap_or_else(|e| panic!("{e}"))
    }

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn reason(expr: &str) -> String {
        let err = Cron::parse(expr).expect_err(expr);
        assert_eq!(err.expr, expr);
        err.reason
    }

    /// Every fire within the local calendar day `date` of `tz`, found by iterating
    /// `next_after` from the end of the previous local day.
    fn fires_on_local_day(c: &Cron, tz: Tz, date: &str) -> Vec<DateTime<Utc>> {
        let day = NaiveDate::parse_from_str(date, "%Y-%m-%d").unwrap();
        let start = tz
            .from_local_datetime(&day.and_hms_opt(0, 0, 0).unwrap())
            .earliest()
            .unwrap()
            .with_timezone(&Utc);
        let end = tz
            .from_local_datetime(&day.succ_opt().unwrap().and_hms_opt(0, 0, 0).unwrap())
            .earliest()
            .unwrap()
            .with_timezone(&Utc);
        let mut fires = Vec::new();
        let mut t = start - Duration::seconds(1);
        while let Some(next) = c.next_after(t, tz).filter(|n| *n < end) {
            fires.push(next);
            t = next;
        }
        fires
    }

    // --- DST -----------------------------------------------------------------------------

    #[test]
    fn daily_0230_berlin_spring_forward_fires_once_at_0300() {
        let fires = fires_on_local_day(&cron("30 2 * * *"), Berlin, "2026-03-29");
        // 02:30 does not exist; 03:00 CEST is 01:00 UTC.
        assert_eq!(fires, vec![utc("2026-03-29T01:00:00Z")]);
    }

    #[test]
    fn daily_0230_berlin_fall_back_fires_once() {
        let fires = fires_on_local_day(&cron("30 2 * * *"), Berlin, "2026-10-25");
        // 02:30 happens twice (CEST, then CET); the first one, 00:30 UTC, fires.
        assert_eq!(fires, vec![utc("2026-10-25T00:30:00Z")]);
    }

    #[test]
    fn daily_0230_new_york_spring_forward_fires_once_at_0300() {
        let fires = fires_on_local_day(&cron("30 2 * * *"), New_York, "2026-03-08");
        // 02:30 does not exist; 03:00 EDT is 07:00 UTC.
        assert_eq!(fires, vec![utc("2026-03-08T07:00:00Z")]);
    }

    #[test]
    fn daily_new_york_fall_back_fires_once() {
        // New York repeats 01:00-02:00: 02:30 happens once (EST), 01:30 twice.
        let fires = fires_on_local_day(&cron("30 2 * * *"), New_York, "2026-11-01");
        assert_eq!(fires, vec![utc("2026-11-01T07:30:00Z")]);
        let fires = fires_on_local_day(&cron("30 1 * * *"), New_York, "2026-11-01");
        assert_eq!(fires, vec![utc("2026-11-01T05:30:00Z")]); // 01:30 EDT, the first one
    }

    #[test]
    fn hourly_fall_back_day_fires_25_times_once_per_real_hour() {
        // An interval job follows the real clock, as Vixie cron runs wildcard jobs: the
        // repeated 02:00 hour fires twice (CEST and CET), so the 25-hour day has 25 fires,
        // exactly one hour apart.
        let fires = fires_on_local_day(&cron("@hourly"), Berlin, "2026-10-25");
        assert_eq!(fires.len(), 25);
        assert_eq!(fires[0], utc("2026-10-24T22:00:00Z"));
        assert_eq!(fires[24], utc("2026-10-25T22:00:00Z"));
        assert!(fires.windows(2).all(|w| w[1] - w[0] == Duration::hours(1)));
        assert!(fires.contains(&utc("2026-10-25T00:00:00Z"))); // 02:00 CEST
        assert!(fires.contains(&utc("2026-10-25T01:00:00Z"))); // 02:00 CET
    }

    #[test]
    fn hourly_spring_forward_day_fires_23_times() {
        // The skipped 02:00 hour does not fire: 23 fires, one per real hour.
        let fires = fires_on_local_day(&cron("0 * * * *"), Berlin, "2026-03-29");
        assert_eq!(fires.len(), 23);
        assert!(fires.windows(2).all(|w| w[1] - w[0] == Duration::hours(1)));
    }

    #[test]
    fn half_hourly_new_york_fall_back_day_fires_50_times() {
        let fires = fires_on_local_day(&cron("*/30 * * * *"), New_York, "2026-11-01");
        assert_eq!(fires.len(), 50);
        assert!(fires
            .windows(2)
            .all(|w| w[1] - w[0] == Duration::minutes(30)));
    }

    // --- next_after ----------------------------------------------------------------------

    #[test]
    fn next_after_is_strictly_after() {
        let c = cron("0 3 * * *");
        let slot = utc("2026-06-01T03:00:00Z");
        assert_eq!(c.next_after(slot, UTC), Some(utc("2026-06-02T03:00:00Z")));
        let just_before = slot - Duration::milliseconds(1);
        assert_eq!(c.next_after(just_before, UTC), Some(slot));
        let just_after = slot + Duration::milliseconds(1);
        assert_eq!(
            c.next_after(just_after, UTC),
            Some(utc("2026-06-02T03:00:00Z"))
        );
    }

    #[test]
    fn next_after_uses_the_wall_clock_of_the_zone() {
        let c = cron("0 3 * * *");
        let after = utc("2026-06-01T00:00:00Z");
        assert_eq!(
            c.next_after(after, Berlin),
            Some(utc("2026-06-01T01:00:00Z"))
        );
        assert_eq!(
            c.next_after(after, New_York),
            Some(utc("2026-06-01T07:00:00Z"))
        );
    }

    #[test]
    fn impossible_date_never_fires() {
        let c = cron("0 0 30 2 *");
        assert_eq!(c.next_after(utc("2026-01-01T00:00:00Z"), UTC), None);
        let now = utc("2026-01-01T00:00:00Z");
        assert_eq!(decide(&c, UTC, None, true, now), Decision::Never);
        assert_eq!(expected_interval(&c, UTC, now), None);
    }

    // --- syntax --------------------------------------------------------------------------

    #[test]
    fn aliases() {
        let after = utc("2026-05-13T10:20:00Z"); // a Wednesday
        let cases = [
            ("@hourly", "2026-05-13T11:00:00Z"),
            ("@daily", "2026-05-14T00:00:00Z"),
            ("@midnight", "2026-05-14T00:00:00Z"),
            ("@weekly", "2026-05-17T00:00:00Z"),
            ("@monthly", "2026-06-01T00:00:00Z"),
            ("@yearly", "2027-01-01T00:00:00Z"),
            ("@annually", "2027-01-01T00:00:00Z"),
            ("@DAILY", "2026-05-14T00:00:00Z"),
        ];
        for (expr, next) in cases {
            let c = cron(expr);
            assert_eq!(c.as_str(), expr);
            assert_eq!(c.next_after(after, UTC), Some(utc(next)), "{expr}");
        }
        assert_eq!(reason("@reboot"), "@reboot is not supported");
        assert_eq!(reason("@often"), "unknown alias \"@often\"");
    }

    #[test]
    fn ranges_steps_lists_and_names() {
        let c = cron("15,45 9-17/4 * jan,JUL Mon-Fri");
        assert_eq!(c.as_str(), "15,45 9-17/4 * jan,JUL Mon-Fri");
        // Thursday 2026-01-01 08:00 UTC -> 09:15, 09:45, 13:15, ...
        let mut t = utc("2026-01-01T08:00:00Z");
        let mut fires = Vec::new();
        for _ in 0..7 {
            t = c.next_after(t, UTC).unwrap();
            fires.push(t);
        }
        let expected = [
            "2026-01-01T09:15:00Z",
            "2026-01-01T09:45:00Z",
            "2026-01-01T13:15:00Z",
            "2026-01-01T13:45:00Z",
            "2026-01-01T17:15:00Z",
            "2026-01-01T17:45:00Z",
            "2026-01-02T09:15:00Z", // Friday; then the weekend is skipped
        ];
        assert_eq!(fires, expected.map(utc));
        assert_eq!(
            c.next_after(utc("2026-01-02T18:00:00Z"), UTC),
            Some(utc("2026-01-05T09:15:00Z"))
        );
        assert_eq!(
            c.next_after(utc("2026-01-31T18:00:00Z"), UTC),
            Some(utc("2026-07-01T09:15:00Z"))
        );
    }

    #[test]
    fn sunday_is_0_or_7_and_ends_a_range() {
        let after = utc("2026-05-13T10:00:00Z"); // Wednesday
        let sunday = Some(utc("2026-05-17T00:00:00Z"));
        assert_eq!(cron("0 0 * * 0").next_after(after, UTC), sunday);
        assert_eq!(cron("0 0 * * 7").next_after(after, UTC), sunday);
        assert_eq!(cron("0 0 * * sun").next_after(after, UTC), sunday);
        let weekend = cron("0 0 * * SAT-SUN");
        assert_eq!(
            weekend.next_after(after, UTC),
            Some(utc("2026-05-16T00:00:00Z"))
        );
        let fri_sun = cron("0 0 * * FRI-SUN");
        assert_eq!(fri_sun.next_after(utc("2026-05-16T10:00:00Z"), UTC), sunday);
    }

    #[test]
    fn day_of_month_or_day_of_week_like_vixie() {
        // Both restricted: either matches. 2026-05-13 is a Wednesday.
        let either = cron("0 0 20 * MON");
        let after = utc("2026-05-13T10:00:00Z");
        assert_eq!(
            either.next_after(after, UTC),
            Some(utc("2026-05-18T00:00:00Z"))
        );
        let after = utc("2026-05-18T10:00:00Z");
        assert_eq!(
            either.next_after(after, UTC),
            Some(utc("2026-05-20T00:00:00Z"))
        );
        // A field starting with `*` makes both necessary: odd days that are Mondays.
        let both = cron("0 0 */2 * MON");
        let after = utc("2026-05-13T10:00:00Z");
        assert_eq!(
            both.next_after(after, UTC),
            Some(utc("2026-05-25T00:00:00Z"))
        );
    }

    #[test]
    fn error_display() {
        let err = Cron::parse("61 * * * *").unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid cron expression \"61 * * * *\": minute out of range"
        );
    }

    #[test]
    fn error_minute_61() {
        assert_eq!(reason("61 * * * *"), "minute out of range");
        assert_eq!(reason("0-61 * * * *"), "minute out of range");
    }

    #[test]
    fn error_hour_24() {
        assert_eq!(reason("0 24 * * *"), "hour out of range");
    }

    #[test]
    fn error_day_of_month_0() {
        assert_eq!(reason("0 0 0 * *"), "day-of-month out of range");
        assert_eq!(reason("0 0 32 * *"), "day-of-month out of range");
    }

    #[test]
    fn error_month_13() {
        assert_eq!(reason("0 0 1 13 *"), "month out of range");
        assert_eq!(reason("0 0 1 0 *"), "month out of range");
    }

    #[test]
    fn error_day_of_week_8() {
        assert_eq!(reason("0 0 * * 8"), "day-of-week out of range");
    }

    #[test]
    fn error_garbage() {
        assert_eq!(
            reason("every day at noon"),
            format!("{FIELD_COUNT_REASON}, found 4")
        );
        assert_eq!(reason("x * * * *"), "invalid minute \"x\"");
        assert_eq!(reason("0 0 * * MONDAY"), "invalid day-of-week \"MONDAY\"");
        assert_eq!(reason("0 0 * MON *"), "invalid month \"MON\"");
        assert_eq!(reason("0 0 L * *"), "invalid day-of-month \"L\"");
        assert_eq!(reason("0 0 * * 5#2"), "invalid day-of-week \"5#2\"");
        assert_eq!(reason("0 0 ? * *"), "invalid day-of-month \"?\"");
        assert_eq!(reason("1,,2 * * * *"), "invalid minute \"1,,2\"");
        assert_eq!(reason("*/x * * * *"), "invalid minute \"*/x\"");
        assert_eq!(reason(""), "empty expression");
        assert_eq!(reason("   "), "empty expression");
    }

    #[test]
    fn error_bad_ranges_and_steps() {
        assert_eq!(reason("30-10 * * * *"), "minute range is reversed");
        assert_eq!(reason("*/0 * * * *"), "minute step out of range");
        assert_eq!(reason("*/60 * * * *"), "minute step out of range");
        assert_eq!(
            reason("5/10 * * * *"),
            "minute step needs * or a range (*/N or A-B/N)"
        );
    }

    #[test]
    fn error_too_few_fields() {
        assert_eq!(
            reason("* * * *"),
            "expected 5 fields (minute hour day-of-month month day-of-week), found 4"
        );
    }

    #[test]
    fn error_too_many_fields() {
        assert_eq!(
            reason("0 * * * * *"),
            "expected 5 fields (minute hour day-of-month month day-of-week), found 6"
        );
        assert_eq!(
            reason("0 0 * * * * 2026"),
            "expected 5 fields (minute hour day-of-month month day-of-week), found 7"
        );
    }

    // --- decide --------------------------------------------------------------------------

    #[test]
    fn decide_waits_until_due() {
        let c = cron("0 3 * * *");
        let last = Some(utc("2026-06-01T03:00:00Z"));
        let now = utc("2026-06-01T12:00:00Z");
        for catch_up in [true, false] {
            assert_eq!(
                decide(&c, UTC, last, catch_up, now),
                Decision::Wait {
                    next: utc("2026-06-02T03:00:00Z")
                }
            );
        }
    }

    #[test]
    fn decide_fires_when_due() {
        let c = cron("0 3 * * *");
        let last = Some(utc("2026-06-01T03:00:00Z"));
        let slot = utc("2026-06-02T03:00:00Z");
        for now in [slot, slot + Duration::seconds(61), slot + ON_TIME_GRACE] {
            for catch_up in [true, false] {
                assert_eq!(
                    decide(&c, UTC, last, catch_up, now),
                    Decision::Fire {
                        due: slot,
                        caught_up: false
                    }
                );
            }
        }
        // After recording the slot (not the run time), the next decision waits for the next
        // slot, however long the job runs.
        for now in [slot + Duration::seconds(1), slot + Duration::hours(23)] {
            assert_eq!(
                decide(&c, UTC, Some(slot), true, now),
                Decision::Wait {
                    next: utc("2026-06-03T03:00:00Z")
                }
            );
        }
    }

    #[test]
    fn decide_catches_up_once_for_several_missed_slots() {
        let c = cron("0 * * * *");
        let last = Some(utc("2026-06-01T03:00:00Z"));
        // Down from 03:10 to 08:20: five slots (04:00..08:00) missed.
        let now = utc("2026-06-01T08:20:00Z");
        let d = decide(&c, UTC, last, true, now);
        assert_eq!(
            d,
            Decision::Fire {
                due: utc("2026-06-01T08:00:00Z"),
                caught_up: true
            }
        );
        let Decision::Fire { due, .. } = d else {
            unreachable!()
        };
        // Recorded: no second catch-up, wait for the next future slot.
        for later in [now, now + Duration::minutes(1), now + Duration::minutes(39)] {
            assert_eq!(
                decide(&c, UTC, Some(due), true, later),
                Decision::Wait {
                    next: utc("2026-06-01T09:00:00Z")
                }
            );
        }
        // And that slot fires normally.
        assert_eq!(
            decide(&c, UTC, Some(due), true, utc("2026-06-01T09:00:01Z")),
            Decision::Fire {
                due: utc("2026-06-01T09:00:00Z"),
                caught_up: false
            }
        );
    }

    #[test]
    fn decide_catches_up_a_single_missed_slot() {
        let c = cron("0 3 * * *");
        let last = Some(utc("2026-06-01T03:00:00Z"));
        let now = utc("2026-06-02T07:00:00Z"); // back four hours after the 03:00 slot
        assert_eq!(
            decide(&c, UTC, last, true, now),
            Decision::Fire {
                due: utc("2026-06-02T03:00:00Z"),
                caught_up: true
            }
        );
        assert_eq!(
            decide(&c, UTC, last, false, now),
            Decision::Wait {
                next: utc("2026-06-03T03:00:00Z")
            }
        );
    }

    #[test]
    fn decide_without_catch_up_skips_missed_slots() {
        let c = cron("0 * * * *");
        let last = Some(utc("2026-06-01T03:00:00Z"));
        let now = utc("2026-06-01T08:20:00Z");
        let next = utc("2026-06-01T09:00:00Z");
        assert_eq!(decide(&c, UTC, last, false, now), Decision::Wait { next });
        // Nothing was recorded, yet the next slot fires (missed ones stay skipped).
        assert_eq!(
            decide(&c, UTC, last, false, next + Duration::seconds(3)),
            Decision::Fire {
                due: next,
                caught_up: false
            }
        );
    }

    #[test]
    fn decide_restart_within_the_grace_fires_the_slot() {
        // Restarted two minutes after the 08:00 slot, which came due while it was down.
        let c = cron("0 * * * *");
        let last = Some(utc("2026-06-01T07:00:00Z"));
        let now = utc("2026-06-01T08:02:00Z");
        for catch_up in [true, false] {
            assert_eq!(
                decide(&c, UTC, last, catch_up, now),
                Decision::Fire {
                    due: utc("2026-06-01T08:00:00Z"),
                    caught_up: false
                }
            );
        }
    }

    #[test]
    fn decide_never_fired_does_not_catch_up() {
        let c = cron("0 3 * * *");
        let first = utc("2026-06-02T03:00:00Z");
        for catch_up in [true, false] {
            // Today's 03:00 is long past: wait for tomorrow's.
            for now in [utc("2026-06-01T12:00:00Z"), utc("2026-06-01T03:06:00Z")] {
                assert_eq!(
                    decide(&c, UTC, None, catch_up, now),
                    Decision::Wait { next: first }
                );
            }
            for now in [first, first + Duration::minutes(1)] {
                assert_eq!(
                    decide(&c, UTC, None, catch_up, now),
                    Decision::Fire {
                        due: first,
                        caught_up: false
                    }
                );
            }
        }
        // Several slots inside the grace: the latest fires, without catch-up.
        let now = utc("2026-06-01T12:04:30Z");
        assert_eq!(
            decide(&cron("* * * * *"), UTC, None, true, now),
            Decision::Fire {
                due: utc("2026-06-01T12:04:00Z"),
                caught_up: false
            }
        );
    }

    #[test]
    fn decide_clock_jump_backwards_waits() {
        let c = cron("*/5 * * * *");
        let last = Some(utc("2026-06-01T10:00:00Z"));
        // The clock went back an hour after the 10:00 fire was recorded.
        for now in [utc("2026-06-01T09:02:00Z"), utc("2026-06-01T09:55:00Z")] {
            for catch_up in [true, false] {
                assert_eq!(
                    decide(&c, UTC, last, catch_up, now),
                    Decision::Wait {
                        next: utc("2026-06-01T10:05:00Z")
                    }
                );
            }
        }
    }

    #[test]
    fn decide_clock_jump_forward_collapses_slots() {
        // Host suspended (or clock jumped forward) from 10:02 to 13:01.
        let c = cron("0 * * * *");
        let last = Some(utc("2026-06-01T10:00:00Z"));
        let now = utc("2026-06-01T13:01:00Z");
        let latest = utc("2026-06-01T13:00:00Z");
        assert_eq!(
            decide(&c, UTC, last, true, now),
            Decision::Fire {
                due: latest,
                caught_up: true
            }
        );
        // The 13:00 slot is on time; 11:00 and 12:00 are skipped.
        assert_eq!(
            decide(&c, UTC, last, false, now),
            Decision::Fire {
                due: latest,
                caught_up: false
            }
        );
        assert_eq!(
            decide(&c, UTC, Some(latest), true, now),
            Decision::Wait {
                next: utc("2026-06-01T14:00:00Z")
            }
        );
    }

    #[test]
    fn decide_catch_up_across_a_long_outage_with_dst() {
        // Every 5 minutes in Berlin, down across the fall-back night for months.
        let c = cron("*/5 * * * *");
        let last = Some(utc("2026-08-01T00:00:00Z"));
        let now = utc("2026-12-01T10:17:30Z");
        assert_eq!(
            decide(&c, Berlin, last, true, now),
            Decision::Fire {
                due: utc("2026-12-01T10:15:00Z"),
                caught_up: true
            }
        );
    }

    #[test]
    fn decide_catch_up_lands_on_dst_shifted_slots() {
        // The latest missed slot of a 02:30 job on the spring-forward day is 03:00 CEST.
        let c = cron("30 2 * * *");
        let last = Some(utc("2026-03-26T01:30:00Z"));
        let now = utc("2026-03-29T05:00:00Z");
        let fire = Decision::Fire {
            due: utc("2026-03-29T01:00:00Z"),
            caught_up: true,
        };
        assert_eq!(decide(&c, Berlin, last, true, now), fire);
        // Hourly, back during the repeated hour: the latest slot is 02:00 CET (01:00 UTC).
        let c = cron("@hourly");
        let last = Some(utc("2026-10-24T12:00:00Z"));
        let now = utc("2026-10-25T01:10:00Z");
        let fire = Decision::Fire {
            due: utc("2026-10-25T01:00:00Z"),
            caught_up: true,
        };
        assert_eq!(decide(&c, Berlin, last, true, now), fire);
        // Back during the first pass of the repeated hour: 02:00 CEST (00:00 UTC).
        let now = utc("2026-10-25T00:10:00Z");
        let first_pass = utc("2026-10-25T00:00:00Z");
        let fire = Decision::Fire {
            due: first_pass,
            caught_up: true,
        };
        assert_eq!(decide(&c, Berlin, last, true, now), fire);
        assert_eq!(
            decide(&c, Berlin, Some(first_pass), true, now),
            Decision::Wait {
                next: utc("2026-10-25T01:00:00Z")
            }
        );
    }

    // --- expected_interval ---------------------------------------------------------------

    #[test]
    fn expected_interval_is_the_longest_gap_in_the_coming_week() {
        let now = utc("2026-05-13T10:20:00Z"); // Wednesday
        let hours = |h| Some(Duration::hours(h));
        assert_eq!(expected_interval(&cron("@hourly"), UTC, now), hours(1));
        assert_eq!(
            expected_interval(&cron("*/15 * * * *"), Berlin, now),
            Some(Duration::minutes(15))
        );
        assert_eq!(expected_interval(&cron("@daily"), Berlin, now), hours(24));
        assert_eq!(expected_interval(&cron("@weekly"), UTC, now), hours(24 * 7));
        assert_eq!(
            expected_interval(&cron("0 2 * * MON-FRI"), UTC, now),
            hours(72)
        );
        assert_eq!(
            expected_interval(&cron("@monthly"), UTC, now),
            hours(24 * 30) // 1 June -> 1 July
        );
        // Minutely: bounded work, still one minute.
        assert_eq!(
            expected_interval(&cron("* * * * *"), UTC, now),
            Some(Duration::minutes(1))
        );
    }

    #[test]
    fn expected_interval_sees_the_long_dst_day() {
        let now = utc("2026-10-20T12:00:00Z");
        assert_eq!(
            expected_interval(&cron("30 2 * * *"), Berlin, now),
            Some(Duration::hours(25))
        );
        // An hourly job stays one hour apart across fall-back.
        assert_eq!(
            expected_interval(&cron("@hourly"), Berlin, now),
            Some(Duration::hours(1))
        );
    }
}
