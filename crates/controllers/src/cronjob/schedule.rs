//! When a CronJob fires: its schedule in its time zone, and which run is due now given the last
//! one, missed runs and `startingDeadlineSeconds` (upstream `mostRecentScheduleTime`).

use std::time::Duration;

use api::validation::cron::{Schedule, parse_standard};
use chrono::{Datelike, NaiveDate, NaiveDateTime, Timelike};
use jiff::Timestamp;
use jiff::civil;
use jiff::tz::TimeZone;

/// Added to the wait for the next run, so a slightly early wake-up still finds it due.
pub const NEXT_SCHEDULE_DELTA: Duration = Duration::from_millis(100);
/// More missed runs than this is reported as a likely clock or configuration problem.
pub const TOO_MANY_MISSED: i64 = 100;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Error {
    #[error("unknown time zone {zone}")]
    UnknownTimeZone { zone: String },
    #[error("{0}")]
    Unparseable(String),
}

/// A parsed schedule with the zone its fields are read in.
#[derive(Debug, Clone)]
pub struct CronSchedule {
    schedule: Schedule,
    zone: TimeZone,
}

/// Look up an IANA zone name.
pub fn time_zone(name: &str) -> Result<TimeZone, Error> {
    if name.is_empty() || name == "UTC" {
        return Ok(TimeZone::UTC);
    }
    TimeZone::get(name).map_err(|_| Error::UnknownTimeZone { zone: name.into() })
}

impl CronSchedule {
    /// `spec.schedule` read in `spec.timeZone` (or a `TZ=`/`CRON_TZ=` prefix, which the cron
    /// library also accepts; UTC otherwise, the controller's zone).
    pub fn new(schedule: &str, zone: Option<&str>) -> Result<CronSchedule, Error> {
        let mut zone_name = zone.map(str::to_string);
        let trimmed = schedule.trim();
        for prefix in ["TZ=", "CRON_TZ="] {
            if let Some(rest) = trimmed.strip_prefix(prefix) {
                zone_name = Some(rest.split_whitespace().next().unwrap_or("").to_string());
            }
        }
        let zone = time_zone(zone_name.as_deref().unwrap_or(""))?;
        let schedule = parse_standard(trimmed).map_err(Error::Unparseable)?;
        Ok(CronSchedule { schedule, zone })
    }

    pub fn zone(&self) -> &TimeZone {
        &self.zone
    }

    /// The first activation strictly after `t`.
    pub fn next(&self, t: Timestamp) -> Option<Timestamp> {
        let fields = match &self.schedule {
            Schedule::Every(seconds) => {
                let whole = Timestamp::from_second(t.as_second()).ok()?;
                return whole
                    .checked_add(jiff::SignedDuration::from_secs(*seconds as i64))
                    .ok();
            }
            Schedule::Fields(_) => &self.schedule,
        };
        let mut local = to_naive(self.zone.to_datetime(t))?;
        // A wall-clock time repeated when clocks go back may map before `t`: look further.
        for _ in 0..4 {
            let next = fields.next_after(local)?;
            let candidate = self
                .zone
                .to_ambiguous_timestamp(from_naive(next)?)
                .compatible()
                .ok()?;
            if candidate > t {
                return Some(candidate);
            }
            local = next;
        }
        None
    }
}

fn to_naive(dt: civil::DateTime) -> Option<NaiveDateTime> {
    NaiveDate::from_ymd_opt(dt.year().into(), dt.month() as u32, dt.day() as u32)?.and_hms_opt(
        dt.hour() as u32,
        dt.minute() as u32,
        dt.second() as u32,
    )
}

fn from_naive(dt: NaiveDateTime) -> Option<civil::DateTime> {
    civil::DateTime::new(
        i16::try_from(dt.year()).ok()?,
        dt.month() as i8,
        dt.day() as i8,
        dt.hour() as i8,
        dt.minute() as i8,
        dt.second() as i8,
        0,
    )
    .ok()
}

/// How many runs were missed since the last one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Missed {
    None,
    Few,
    Many,
}

/// The inputs from the CronJob.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    pub creation: Timestamp,
    pub last_schedule: Option<Timestamp>,
    pub starting_deadline_seconds: Option<i64>,
}

/// The run to consider: (the time counted from — last run or creation —, the most recent due
/// activation at or before `now` if any, how many were missed).
pub fn most_recent_schedule_time(
    timing: &Timing,
    now: Timestamp,
    schedule: &CronSchedule,
    include_starting_deadline: bool,
) -> Result<(Timestamp, Option<Timestamp>, Missed), String> {
    let mut earliest = timing.last_schedule.unwrap_or(timing.creation);
    if include_starting_deadline && let Some(deadline) = timing.starting_deadline_seconds {
        let limit = now - jiff::SignedDuration::from_secs(deadline);
        if limit > earliest {
            earliest = limit;
        }
    }
    let Some(t1) = schedule.next(earliest) else {
        return Ok((earliest, None, Missed::None));
    };
    if now < t1 {
        return Ok((earliest, None, Missed::None));
    }
    let Some(t2) = schedule.next(t1) else {
        return Ok((earliest, Some(t1), Missed::None));
    };
    if now < t2 {
        return Ok((earliest, Some(t1), Missed::None));
    }
    let between = t2.duration_since(t1).as_secs_f64().round() as i64;
    if between < 1 {
        return Err("time difference between two schedules is less than 1 second".into());
    }
    // Jump close to now by whole periods, then step: exact for regular schedules and
    // `@every`, and still right for irregular ones such as `30 6-16/4 * * 1-5`.
    let elapsed = now.duration_since(t1).as_secs();
    let missed = elapsed / between + 1;
    let start = t1 + jiff::SignedDuration::from_secs((missed - 2) * between);
    let mut most_recent = None;
    let mut t = schedule.next(start);
    while let Some(at) = t {
        if at > now {
            break;
        }
        most_recent = Some(at);
        t = schedule.next(at);
    }
    let missed = if missed > TOO_MANY_MISSED {
        Missed::Many
    } else if missed > 0 {
        Missed::Few
    } else {
        Missed::None
    };
    Ok((earliest, most_recent, missed))
}

/// How long until the controller should look at the CronJob again.
pub fn next_schedule_delay(
    timing: &Timing,
    now: Timestamp,
    schedule: &CronSchedule,
) -> Option<Duration> {
    let from = match most_recent_schedule_time(timing, now, schedule, false) {
        Err(_) => now,
        Ok((_, Some(t), _)) => t,
        Ok((earliest, None, Missed::None)) => earliest,
        Ok((_, None, _)) => now,
    };
    let next = schedule.next(from)?;
    let wait = next.duration_since(now).as_secs_f64().max(0.0);
    Some(Duration::from_secs_f64(wait) + NEXT_SCHEDULE_DELTA)
}

/// The Job name for a run: the CronJob's name and the run's minutes since the epoch.
pub fn job_name(cronjob: &str, scheduled: Timestamp) -> String {
    format!("{cronjob}-{}", scheduled.as_second().div_euclid(60))
}

/// The run's time in the schedule's zone as RFC 3339 (`Z` for UTC, as Go prints it).
pub fn scheduled_timestamp(scheduled: Timestamp, zone: &TimeZone) -> String {
    let zoned = scheduled.to_zoned(zone.clone());
    let text = zoned.strftime("%Y-%m-%dT%H:%M:%S%:z").to_string();
    match text.strip_suffix("+00:00") {
        Some(rest) => format!("{rest}Z"),
        None => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn timing(creation: &str, last: Option<&str>, deadline: Option<i64>) -> Timing {
        Timing {
            creation: ts(creation),
            last_schedule: last.map(ts),
            starting_deadline_seconds: deadline,
        }
    }

    #[test]
    fn next_in_utc_and_descriptors() {
        let s = CronSchedule::new("*/15 * * * *", None).unwrap();
        assert_eq!(
            s.next(ts("2024-03-01T10:07:30Z")),
            Some(ts("2024-03-01T10:15:00Z"))
        );
        assert_eq!(
            s.next(ts("2024-03-01T10:15:00Z")),
            Some(ts("2024-03-01T10:30:00Z"))
        );
        let daily = CronSchedule::new("@daily", None).unwrap();
        assert_eq!(
            daily.next(ts("2024-03-01T10:07:00Z")),
            Some(ts("2024-03-02T00:00:00Z"))
        );
        let every = CronSchedule::new("@every 90s", None).unwrap();
        assert_eq!(
            every.next(ts("2024-03-01T10:00:00.5Z")),
            Some(ts("2024-03-01T10:01:30Z"))
        );
    }

    #[test]
    fn next_in_a_time_zone() {
        // 09:00 in New York is 14:00 UTC in winter and 13:00 UTC in summer.
        let s = CronSchedule::new("0 9 * * *", Some("America/New_York")).unwrap();
        assert_eq!(
            s.next(ts("2024-01-10T15:00:00Z")),
            Some(ts("2024-01-11T14:00:00Z"))
        );
        assert_eq!(
            s.next(ts("2024-07-10T15:00:00Z")),
            Some(ts("2024-07-11T13:00:00Z"))
        );
        // The TZ= prefix reads the same.
        let p = CronSchedule::new("TZ=America/New_York 0 9 * * *", None).unwrap();
        assert_eq!(
            p.next(ts("2024-01-10T15:00:00Z")),
            Some(ts("2024-01-11T14:00:00Z"))
        );
        // 02:30 does not exist on 2024-03-10 in New York: it runs at 03:30 EDT (07:30 UTC).
        let gap = CronSchedule::new("30 2 * * *", Some("America/New_York")).unwrap();
        assert_eq!(
            gap.next(ts("2024-03-10T05:00:00Z")),
            Some(ts("2024-03-10T07:30:00Z"))
        );
        assert_eq!(
            scheduled_timestamp(ts("2024-01-11T14:00:00Z"), s.zone()),
            "2024-01-11T09:00:00-05:00"
        );
        assert_eq!(
            scheduled_timestamp(ts("2024-01-11T14:00:00Z"), &TimeZone::UTC),
            "2024-01-11T14:00:00Z"
        );
        assert_eq!(
            CronSchedule::new("0 9 * * *", Some("Mars/Olympus")).unwrap_err(),
            Error::UnknownTimeZone {
                zone: "Mars/Olympus".into()
            }
        );
    }

    #[test]
    fn due_run_and_missed_runs() {
        let s = CronSchedule::new("* * * * *", None).unwrap();
        // Not yet due.
        let t = timing("2024-03-01T10:00:10Z", None, None);
        let (_, due, missed) =
            most_recent_schedule_time(&t, ts("2024-03-01T10:00:50Z"), &s, true).unwrap();
        assert_eq!((due, missed), (None, Missed::None));
        // One due.
        let (_, due, missed) =
            most_recent_schedule_time(&t, ts("2024-03-01T10:01:05Z"), &s, true).unwrap();
        assert_eq!(
            (due, missed),
            (Some(ts("2024-03-01T10:01:00Z")), Missed::None)
        );
        // Several missed: the most recent is due.
        let t = timing("2024-03-01T10:00:10Z", Some("2024-03-01T10:01:00Z"), None);
        let (_, due, missed) =
            most_recent_schedule_time(&t, ts("2024-03-01T10:05:30Z"), &s, true).unwrap();
        assert_eq!(
            (due, missed),
            (Some(ts("2024-03-01T10:05:00Z")), Missed::Few)
        );
        // Over a hundred missed.
        let (_, due, missed) =
            most_recent_schedule_time(&t, ts("2024-03-01T14:00:30Z"), &s, true).unwrap();
        assert_eq!(
            (due, missed),
            (Some(ts("2024-03-01T14:00:00Z")), Missed::Many)
        );
        // A starting deadline bounds how far back to look.
        let t = timing(
            "2024-03-01T10:00:10Z",
            Some("2024-03-01T10:01:00Z"),
            Some(120),
        );
        let (earliest, due, missed) =
            most_recent_schedule_time(&t, ts("2024-03-01T14:00:30Z"), &s, true).unwrap();
        assert_eq!(earliest, ts("2024-03-01T13:58:30Z"));
        assert_eq!(
            (due, missed),
            (Some(ts("2024-03-01T14:00:00Z")), Missed::Few)
        );
    }

    #[test]
    fn hourly_missed_runs_and_delay() {
        let s = CronSchedule::new("@hourly", None).unwrap();
        let t = timing("2024-03-01T09:30:00Z", Some("2024-03-01T10:00:00Z"), None);
        let (_, due, _) =
            most_recent_schedule_time(&t, ts("2024-03-01T13:20:00Z"), &s, true).unwrap();
        assert_eq!(due, Some(ts("2024-03-01T13:00:00Z")));
        let delay = next_schedule_delay(&t, ts("2024-03-01T13:20:00Z"), &s).unwrap();
        assert_eq!(delay, Duration::from_secs(40 * 60) + NEXT_SCHEDULE_DELTA);
        let t = timing("2024-03-01T09:30:00Z", None, None);
        let delay = next_schedule_delay(&t, ts("2024-03-01T09:40:00Z"), &s).unwrap();
        assert_eq!(delay, Duration::from_secs(20 * 60) + NEXT_SCHEDULE_DELTA);
    }

    #[test]
    fn job_names_use_minutes_since_epoch() {
        assert_eq!(
            job_name("hello", ts("2024-03-01T10:05:00Z")),
            "hello-28488125"
        );
    }
}
