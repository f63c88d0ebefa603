//! Cron schedules (`spec.backup.schedule`): the five classic fields, minute hour day-of-month
//! month day-of-week, in UTC, each `*`, a number, a range `a-b`, a step `*/n` or `a-b/n`, or a
//! comma-separated list of those (day-of-week 0-7, 0 and 7 both Sunday). As in cron, when both
//! day fields are restricted a day matching either one is due. Pure; parsing reports the field.

use jiff::civil::{Date, DateTime};
use jiff::{Timestamp, ToSpan, tz::TimeZone};

/// A parsed schedule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schedule {
    minutes: u64,
    hours: u64,
    days: u64,
    months: u64,
    weekdays: u64,
    days_any: bool,
    weekdays_any: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CronError {
    #[error("a schedule has five fields (minute hour day-of-month month day-of-week), not {0}")]
    Fields(usize),
    #[error("{field} field {value:?}: {why}")]
    Field {
        field: &'static str,
        value: String,
        why: String,
    },
}

const FIELDS: [(&str, u32, u32); 5] = [
    ("minute", 0, 59),
    ("hour", 0, 23),
    ("day-of-month", 1, 31),
    ("month", 1, 12),
    ("day-of-week", 0, 7),
];

impl std::str::FromStr for Schedule {
    type Err = CronError;

    fn from_str(s: &str) -> Result<Self, CronError> {
        let parts: Vec<&str> = s.split_whitespace().collect();
        if parts.len() != 5 {
            return Err(CronError::Fields(parts.len()));
        }
        let mut sets = [0u64; 5];
        for (i, (part, (field, lo, hi))) in parts.iter().zip(FIELDS).enumerate() {
            sets[i] = parse_field(part, lo, hi).map_err(|why| CronError::Field {
                field,
                value: part.to_string(),
                why,
            })?;
        }
        // Sunday is 0 and 7.
        if sets[4] & (1 << 7) != 0 {
            sets[4] |= 1;
        }
        Ok(Schedule {
            minutes: sets[0],
            hours: sets[1],
            days: sets[2],
            months: sets[3],
            weekdays: sets[4] & 0x7f,
            days_any: parts[2] == "*",
            weekdays_any: parts[4] == "*",
        })
    }
}

fn parse_field(part: &str, lo: u32, hi: u32) -> Result<u64, String> {
    let mut set = 0u64;
    for item in part.split(',') {
        let (range, step) = match item.split_once('/') {
            Some((r, s)) => {
                let step: u32 = s
                    .parse()
                    .map_err(|_| format!("step {s:?} is not a number"))?;
                if step == 0 {
                    return Err("a step of 0".into());
                }
                (r, step)
            }
            None => (item, 1),
        };
        let (from, to) = if range == "*" {
            (lo, hi)
        } else if let Some((a, b)) = range.split_once('-') {
            (number(a, lo, hi)?, number(b, lo, hi)?)
        } else {
            let n = number(range, lo, hi)?;
            // `5/15` means from 5 to the end, every 15.
            (n, if step > 1 { hi } else { n })
        };
        if from > to {
            return Err(format!("the range {from}-{to} runs backwards"));
        }
        let mut v = from;
        while v <= to {
            set |= 1 << v;
            v += step;
        }
    }
    Ok(set)
}

fn number(s: &str, lo: u32, hi: u32) -> Result<u32, String> {
    let n: u32 = s.parse().map_err(|_| format!("{s:?} is not a number"))?;
    if n < lo || n > hi {
        return Err(format!("{n} is outside {lo}-{hi}"));
    }
    Ok(n)
}

impl Schedule {
    fn day_matches(&self, date: Date) -> bool {
        let dom = self.days & (1 << date.day()) != 0;
        let dow = self.weekdays & (1 << date.weekday().to_sunday_zero_offset()) != 0;
        match (self.days_any, self.weekdays_any) {
            (true, true) => true,
            (false, true) => dom,
            (true, false) => dow,
            (false, false) => dom || dow,
        }
    }

    /// The first minute strictly after `after` that the schedule names (UTC); `None` when there
    /// is none within eight years (`0 0 30 2 *`: February has no 30th).
    pub fn next_after(&self, after: Timestamp) -> Option<Timestamp> {
        let utc = TimeZone::UTC;
        let start = after.to_zoned(utc.clone()).datetime();
        // The next whole minute.
        let mut t = DateTime::new(
            start.year(),
            start.month(),
            start.day(),
            start.hour(),
            start.minute(),
            0,
            0,
        )
        .ok()?
        .checked_add(1.minute())
        .ok()?;
        let end = t.checked_add(8.years()).ok()?;
        while t < end {
            if self.months & (1 << t.month()) == 0 {
                let first = Date::new(t.year(), t.month(), 1).ok()?;
                t = first
                    .checked_add(1.month())
                    .ok()?
                    .to_datetime(jiff::civil::Time::midnight());
                continue;
            }
            if !self.day_matches(t.date()) {
                t = t
                    .date()
                    .checked_add(1.day())
                    .ok()?
                    .to_datetime(jiff::civil::Time::midnight());
                continue;
            }
            if self.hours & (1 << t.hour()) == 0 {
                t = DateTime::new(t.year(), t.month(), t.day(), t.hour(), 0, 0, 0)
                    .ok()?
                    .checked_add(1.hour())
                    .ok()?;
                continue;
            }
            if self.minutes & (1 << t.minute()) == 0 {
                t = t.checked_add(1.minute()).ok()?;
                continue;
            }
            return t.to_zoned(utc).ok().map(|z| z.timestamp());
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> Timestamp {
        s.parse().expect("a timestamp")
    }

    fn next(schedule: &str, after: &str) -> String {
        let s: Schedule = schedule.parse().expect("a schedule");
        s.next_after(at(after)).expect("a next time").to_string()
    }

    #[test]
    fn the_next_run_is_the_first_named_minute_after_now() {
        assert_eq!(
            next("0 0 * * *", "2026-12-02T05:30:00Z"),
            "2026-12-03T00:00:00Z"
        );
        assert_eq!(
            next("0 0 * * *", "2026-12-02T00:00:00Z"),
            "2026-12-03T00:00:00Z"
        );
        assert_eq!(
            next("* * * * *", "2026-12-02T05:30:59Z"),
            "2026-12-02T05:31:00Z"
        );
        assert_eq!(
            next("*/15 * * * *", "2026-12-02T05:31:00Z"),
            "2026-12-02T05:45:00Z"
        );
        assert_eq!(
            next("30 2 * * 0", "2026-12-02T05:31:00Z"),
            "2026-12-06T02:30:00Z"
        );
        assert_eq!(
            next("30 2 * * 7", "2026-12-02T05:31:00Z"),
            "2026-12-06T02:30:00Z"
        );
        assert_eq!(
            next("0 3 1 */3 *", "2026-12-02T05:31:00Z"),
            "2027-01-01T03:00:00Z"
        );
        assert_eq!(
            next("0 0 29 2 *", "2026-12-02T05:31:00Z"),
            "2028-02-29T00:00:00Z"
        );
        assert_eq!(
            next("5,10-12 8 * * *", "2026-12-02T08:10:30Z"),
            "2026-12-02T08:11:00Z"
        );
        // Both day fields restricted: either one.
        assert_eq!(
            next("0 0 15 * 1", "2026-12-02T05:31:00Z"),
            "2026-12-07T00:00:00Z"
        );
        let never: Schedule = "0 0 30 2 *".parse().unwrap();
        assert_eq!(never.next_after(at("2026-12-02T05:31:00Z")), None);
    }

    #[test]
    fn a_bad_schedule_names_its_field() {
        let err = |s: &str| s.parse::<Schedule>().unwrap_err().to_string();
        assert_eq!(
            err("0 0 * *"),
            "a schedule has five fields (minute hour day-of-month month day-of-week), not 4"
        );
        assert_eq!(err("61 0 * * *"), "minute field \"61\": 61 is outside 0-59");
        assert_eq!(
            err("0 0 0 * *"),
            "day-of-month field \"0\": 0 is outside 1-31"
        );
        assert_eq!(err("0 */0 * * *"), "hour field \"*/0\": a step of 0");
        assert_eq!(
            err("0 0 * 5-2 *"),
            "month field \"5-2\": the range 5-2 runs backwards"
        );
        assert_eq!(
            err("0 0 * * mon"),
            "day-of-week field \"mon\": \"mon\" is not a number"
        );
    }
}
