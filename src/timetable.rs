//! Bandwidth timetables: a rate, or rates by time of day and weekday, in the syntax operators
//! know from rclone's `--bwlimit` (a constant `"10MiB"`; `"08:00,512KiB 12:00,10MiB
//! 23:00,off"` every day; `"Mon-08:00,1MiB Sat-00:00,off"` by weekday; `"10MiB:50MiB"` a
//! pair, upload then download; slots separated by spaces or `;`). Each slot holds from its
//! time until the next slot's; before the first slot of the week the last one holds (it wraps
//! around). One deliberate difference: a size needs its unit (`512KiB`, `10MiB`, `1GB`, `100B`):
//! rclone reads a bare `666` as KiB, which is easy to get wrong by a factor of 1024.
//! Pure functions: parsing, and the rate at a minute of the week; [`Timetable::now_in`] reads the
//! clock in a time zone.

use chrono::{Datelike, Timelike};

/// Bytes per second each way; `None`: no limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Rate {
    /// Upload: to the repository (a backup).
    pub tx: Option<u64>,
    /// Download: from the repository (a restore).
    pub rx: Option<u64>,
}

/// Which way bytes go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Tx,
    Rx,
}

impl Rate {
    pub fn of(&self, d: Direction) -> Option<u64> {
        match d {
            Direction::Tx => self.tx,
            Direction::Rx => self.rx,
        }
    }
}

/// A parsed timetable (see the module documentation).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Timetable {
    /// Sorted by minute of the week (Monday 00:00 is 0); one slot at minute 0 for a constant.
    slots: Vec<(u16, Rate)>,
}

/// Why a timetable does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TimetableError {
    #[error("the timetable is empty: give a rate such as \"10MiB\", or \"off\"")]
    Empty,
    #[error("{slot:?}: {reason}")]
    Slot { slot: String, reason: String },
}

const WEEKDAYS: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];
const WEEK: u16 = 7 * 24 * 60;

impl Timetable {
    /// A timetable with no limit.
    pub fn off() -> Timetable {
        Timetable {
            slots: vec![(0, Rate::default())],
        }
    }

    pub fn parse(text: &str) -> Result<Timetable, TimetableError> {
        let parts: Vec<&str> = text
            .split(|c: char| c == ';' || c.is_whitespace())
            .filter(|p| !p.is_empty())
            .collect();
        if parts.is_empty() {
            return Err(TimetableError::Empty);
        }
        let bad = |slot: &str, reason: String| TimetableError::Slot {
            slot: slot.to_string(),
            reason,
        };
        if let [only] = parts[..] {
            if !only.contains(',') {
                let rate = parse_rate(only).map_err(|r| bad(only, r))?;
                return Ok(Timetable {
                    slots: vec![(0, rate)],
                });
            }
        }
        let mut slots: Vec<(u16, Rate)> = Vec::new();
        for part in &parts {
            let (when, rate) = part.split_once(',').ok_or_else(|| {
                bad(
                    part,
                    "a slot of a timetable is TIME,RATE (\"08:00,10MiB\" or \"Mon-08:00,10MiB\")"
                        .into(),
                )
            })?;
            let rate = parse_rate(rate).map_err(|r| bad(part, r))?;
            let (days, minute): (Vec<u16>, u16) = match when.split_once('-') {
                Some((day, time)) => {
                    let d = WEEKDAYS
                        .iter()
                        .position(|w| w.eq_ignore_ascii_case(day))
                        .ok_or_else(|| {
                            bad(
                                part,
                                format!(
                                    "unknown day {day:?}: use Mon, Tue, Wed, Thu, Fri, Sat or Sun"
                                ),
                            )
                        })?;
                    (vec![d as u16], parse_time(time).map_err(|r| bad(part, r))?)
                }
                None => (
                    (0..7).collect(),
                    parse_time(when).map_err(|r| bad(part, r))?,
                ),
            };
            for d in days {
                let at = d * 24 * 60 + minute;
                if slots.iter().any(|(m, _)| *m == at) {
                    return Err(bad(
                        part,
                        "another slot starts at the same time: give each time once".into(),
                    ));
                }
                slots.push((at, rate));
            }
        }
        slots.sort_by_key(|s| s.0);
        Ok(Timetable { slots })
    }

    /// The rate at `minute` of the week (Monday 00:00 is 0).
    pub fn at(&self, minute: u16) -> Rate {
        let minute = minute % WEEK;
        self.slots
            .iter()
            .rev()
            .find(|(m, _)| *m <= minute)
            .or(self.slots.last())
            .map(|s| s.1)
            .unwrap_or_default()
    }

    /// The rate now, the clock read in time zone `tz`.
    pub fn now_in(&self, tz: chrono_tz::Tz) -> Rate {
        let now = chrono::Utc::now().with_timezone(&tz);
        let minute = now.weekday().num_days_from_monday() as u16 * 24 * 60
            + now.hour() as u16 * 60
            + now.minute() as u16;
        self.at(minute)
    }

    /// At every moment the lower of the two rates, each way (`None`, no limit, is the highest):
    /// a node's own timetable and its share of a link's.
    pub fn min(&self, other: &Timetable) -> Timetable {
        let lower = |a: Option<u64>, b: Option<u64>| match (a, b) {
            (Some(x), Some(y)) => Some(x.min(y)),
            (x, None) => x,
            (None, y) => y,
        };
        let mut at: Vec<u16> = self.slots.iter().chain(&other.slots).map(|s| s.0).collect();
        at.sort_unstable();
        at.dedup();
        let mut slots: Vec<(u16, Rate)> = Vec::with_capacity(at.len());
        for m in at {
            let (a, b) = (self.at(m), other.at(m));
            let r = Rate {
                tx: lower(a.tx, b.tx),
                rx: lower(a.rx, b.rx),
            };
            if slots.last().is_none_or(|s| s.1 != r) {
                slots.push((m, r));
            }
        }
        Timetable { slots }
    }

    /// Every rate divided by `n` (at least 1 B/s): one of `n` nodes' share of a link.
    pub fn divided(&self, n: u64) -> Timetable {
        let n = n.max(1);
        let share = |r: Option<u64>| r.map(|b| (b / n).max(1));
        Timetable {
            slots: self
                .slots
                .iter()
                .map(|(m, r)| {
                    (
                        *m,
                        Rate {
                            tx: share(r.tx),
                            rx: share(r.rx),
                        },
                    )
                })
                .collect(),
        }
    }

    /// Whether no slot limits anything.
    pub fn is_off(&self) -> bool {
        self.slots.iter().all(|(_, r)| *r == Rate::default())
    }
}

/// The canonical text of the timetable (every slot with its weekday, sizes in bytes), which
/// [`Timetable::parse`] reads back to the same timetable: how hopsdrd hands it to an agent.
impl std::fmt::Display for Timetable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let size = |r: Option<u64>| r.map_or("off".to_string(), |b| format!("{b}B"));
        for (i, (m, r)) in self.slots.iter().enumerate() {
            if i > 0 {
                f.write_str(" ")?;
            }
            let day = WEEKDAYS[(m / (24 * 60)) as usize];
            let (h, min) = ((m % (24 * 60)) / 60, m % 60);
            write!(
                f,
                "{}{}-{h:02}:{min:02},{}:{}",
                day[..1].to_uppercase(),
                &day[1..],
                size(r.tx),
                size(r.rx)
            )?;
        }
        Ok(())
    }
}

fn parse_time(t: &str) -> Result<u16, String> {
    let bad = || format!("time {t:?} is not HH:MM (00:00 to 23:59)");
    let (h, m) = t.split_once(':').ok_or_else(bad)?;
    if !(1..=2).contains(&h.len()) || m.len() != 2 {
        return Err(bad());
    }
    match (h.parse::<u16>(), m.parse::<u16>()) {
        (Ok(h), Ok(m)) if h < 24 && m < 60 => Ok(h * 60 + m),
        _ => Err(bad()),
    }
}

fn parse_rate(r: &str) -> Result<Rate, String> {
    match r.split_once(':') {
        Some((tx, rx)) => Ok(Rate {
            tx: parse_size(tx)?,
            rx: parse_size(rx)?,
        }),
        None => {
            let both = parse_size(r)?;
            Ok(Rate { tx: both, rx: both })
        }
    }
}

/// Bytes per second; `None` for `off`.
fn parse_size(s: &str) -> Result<Option<u64>, String> {
    if s.eq_ignore_ascii_case("off") {
        return Ok(None);
    }
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a size such as 512KiB or 10MiB, or off"))?;
    let mult: f64 = match unit {
        "" => {
            return Err(format!(
                "{s:?} has no unit: write {num}KiB or {num}MiB (bytes per second)"
            ))
        }
        "B" => 1.0,
        "K" | "k" | "KiB" => 1024.0,
        "M" | "MiB" => 1024.0 * 1024.0,
        "G" | "GiB" => 1024.0 * 1024.0 * 1024.0,
        "KB" | "kB" => 1e3,
        "MB" => 1e6,
        "GB" => 1e9,
        other => {
            return Err(format!(
                "unknown unit {other:?} in {s:?}: use B, KiB, MiB, GiB (or KB, MB, GB)"
            ))
        }
    };
    let bytes = n * mult;
    if !(1.0..1e15).contains(&bytes) {
        return Err(format!(
            "{s:?} is out of range: give at least 1B, or off for no limit"
        ));
    }
    Ok(Some(bytes as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    fn both_ways(r: Option<u64>) -> Rate {
        both(r)
    }

    fn both(r: Option<u64>) -> Rate {
        Rate { tx: r, rx: r }
    }

    fn minute(day: u16, h: u16, m: u16) -> u16 {
        day * 24 * 60 + h * 60 + m
    }

    #[test]
    fn a_constant_applies_all_week() {
        let t = Timetable::parse("10MiB").unwrap();
        assert_eq!(t.at(0), both(Some(10 * MIB)));
        assert_eq!(t.at(minute(6, 23, 59)), both(Some(10 * MIB)));
        assert!(Timetable::parse("off").unwrap().is_off());
        assert!(!t.is_off());
        assert_eq!(
            Timetable::parse("1.5MB").unwrap().at(0),
            both(Some(1_500_000))
        );
    }

    /// Every day: each slot until the next; before the first, the last one of the day before.
    #[test]
    fn daily_slots_hold_until_the_next_and_wrap_around() {
        let t = Timetable::parse("08:00,512KiB 12:00,10MiB 18:00,30MiB 23:00,off").unwrap();
        assert_eq!(t.at(minute(2, 7, 59)), both(None));
        assert_eq!(t.at(minute(2, 8, 0)), both(Some(512 << 10)));
        assert_eq!(t.at(minute(2, 11, 59)), both(Some(512 << 10)));
        assert_eq!(t.at(minute(2, 12, 0)), both(Some(10 * MIB)));
        assert_eq!(t.at(minute(4, 22, 0)), both(Some(30 * MIB)));
        assert_eq!(t.at(minute(0, 0, 0)), both(None));
        assert_eq!(
            Timetable::parse("08:00,1MiB;20:00,2MiB").unwrap().at(0),
            both(Some(2 * MIB)),
            "Monday before 08:00: Sunday's 20:00 slot"
        );
    }

    #[test]
    fn weekday_slots_and_upload_download_pairs() {
        let t = Timetable::parse("Mon-08:00,1MiB:4MiB Sat-00:00,off").unwrap();
        assert_eq!(
            t.at(minute(0, 9, 0)),
            Rate {
                tx: Some(MIB),
                rx: Some(4 * MIB)
            }
        );
        assert_eq!(t.at(minute(4, 23, 0)).of(Direction::Rx), Some(4 * MIB));
        assert_eq!(t.at(minute(5, 0, 0)), both(None));
        assert_eq!(t.at(minute(0, 7, 0)), both(None), "wraps to Saturday's");
        let pair = Timetable::parse("10MiB:off").unwrap().at(0);
        assert_eq!((pair.tx, pair.rx), (Some(10 * MIB), None));
    }

    /// A node's timetable and its share of a link's: the lower rate at every moment, slots where
    /// either changes.
    #[test]
    fn the_lower_of_two_timetables_and_a_share() {
        let node = Timetable::parse("08:00,10MiB 20:00,off").unwrap();
        let link = Timetable::parse("12:00,30MiB 14:00,off")
            .unwrap()
            .divided(2);
        let both = node.min(&link);
        assert_eq!(both.at(minute(1, 7, 0)), both_ways(None));
        assert_eq!(both.at(minute(1, 9, 0)), both_ways(Some(10 * MIB)));
        assert_eq!(both.at(minute(1, 13, 0)), both_ways(Some(10 * MIB)));
        assert_eq!(
            node.min(&Timetable::parse("4MiB:off").unwrap())
                .at(minute(1, 9, 0)),
            Rate {
                tx: Some(4 * MIB),
                rx: Some(10 * MIB)
            }
        );
        assert_eq!(link.at(minute(3, 12, 30)), both_ways(Some(15 * MIB)));
        assert_eq!(both.at(minute(3, 21, 0)), both_ways(None));
        assert!(Timetable::off().min(&Timetable::off()).is_off());
    }

    /// The text hopsdrd sends an agent reads back to the same timetable.
    #[test]
    fn the_canonical_text_reads_back_the_same() {
        for text in [
            "10MiB",
            "off",
            "08:00,512KiB 12:00,10MiB:off 23:00,off",
            "Mon-08:00,1MiB Sat-00:00,off",
        ] {
            let t = Timetable::parse(text).unwrap();
            assert_eq!(
                Timetable::parse(&t.to_string()).unwrap(),
                t,
                "{text} -> {t}"
            );
        }
    }

    /// Bad input names the slot and says what to write.
    #[test]
    fn bad_timetables_name_the_slot() {
        for (text, want) in [
            ("666", "has no unit: write 666KiB or 666MiB"),
            ("08:00,666", "has no unit"),
            ("25:00,1MiB", "not HH:MM"),
            ("8:5,1MiB", "not HH:MM"),
            ("Xyz-08:00,1MiB", "unknown day \"Xyz\""),
            ("08:00,1MiB 08:00,2MiB", "same time"),
            ("08:00 1MiB", "TIME,RATE"),
            ("10Mbit", "unknown unit \"Mbit\""),
            ("0B", "out of range"),
        ] {
            let e = Timetable::parse(text).unwrap_err().to_string();
            assert!(e.contains(want), "{text}: {e}");
        }
        assert_eq!(Timetable::parse(" ; "), Err(TimetableError::Empty));
    }
}
