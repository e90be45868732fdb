//! The delay between a Job's pod failures and the next pod: 10 s doubling with each failure
//! since the last success, capped at 6 min (upstream `DefaultJobPodFailureBackOff` and
//! `MaxJobPodFailureBackOff`).
//!
//! Unlike upstream, which keeps the record in memory, the record is rebuilt from the pods on
//! every sync, so a restarted controller keeps backing off.

use std::time::Duration;

use k8s_openapi::jiff::Timestamp;

pub const DEFAULT_BACKOFF: Duration = Duration::from_secs(10);
pub const MAX_BACKOFF: Duration = Duration::from_secs(6 * 60);

/// Failures since the last success, and when the latest of them happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Record {
    pub failures_after_last_success: u32,
    pub last_failure_time: Option<Timestamp>,
}

/// The record from the finish times of succeeded and (counted) failed pods.
pub fn record(succeeded: &[Timestamp], failed: &[Timestamp]) -> Record {
    let last_success = succeeded.iter().max().copied();
    let after: Vec<Timestamp> = failed
        .iter()
        .copied()
        .filter(|t| last_success.is_none_or(|s| *t > s))
        .collect();
    Record {
        failures_after_last_success: after.len() as u32,
        last_failure_time: after.iter().max().copied(),
    }
}

/// The full delay after `failures` consecutive failures.
pub fn delay(failures: u32) -> Duration {
    if failures == 0 {
        return Duration::ZERO;
    }
    let mut d = DEFAULT_BACKOFF;
    for _ in 1..failures {
        d = d.saturating_mul(2);
        if d >= MAX_BACKOFF {
            return MAX_BACKOFF;
        }
    }
    d.min(MAX_BACKOFF)
}

/// How long to wait from `now` before creating the next pod.
pub fn remaining(record: &Record, now: Timestamp) -> Duration {
    let Some(last) = record.last_failure_time else {
        return Duration::ZERO;
    };
    let total = delay(record.failures_after_last_success);
    let elapsed = now.duration_since(last);
    if elapsed.is_negative() {
        return total;
    }
    let elapsed = elapsed.unsigned_abs();
    total.saturating_sub(elapsed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: i64) -> Timestamp {
        Timestamp::from_second(1_700_000_000 + s).unwrap()
    }

    #[test]
    fn doubles_from_ten_seconds_to_six_minutes() {
        let secs: Vec<u64> = (0..8).map(|n| delay(n).as_secs()).collect();
        assert_eq!(secs, vec![0, 10, 20, 40, 80, 160, 320, 360]);
        assert_eq!(delay(100), MAX_BACKOFF);
    }

    #[test]
    fn failures_before_the_last_success_are_forgotten() {
        let r = record(&[at(50)], &[at(10), at(40), at(60), at(70)]);
        assert_eq!(r.failures_after_last_success, 2);
        assert_eq!(r.last_failure_time, Some(at(70)));
        let r = record(&[], &[at(10), at(5)]);
        assert_eq!(r.failures_after_last_success, 2);
        assert_eq!(r.last_failure_time, Some(at(10)));
        assert_eq!(record(&[at(1)], &[]), Record::default());
    }

    #[test]
    fn remaining_counts_from_the_last_failure() {
        let r = record(&[], &[at(0), at(100)]);
        // Two failures: 20 s after the latest.
        assert_eq!(remaining(&r, at(105)), Duration::from_secs(15));
        assert_eq!(remaining(&r, at(130)), Duration::ZERO);
        assert_eq!(remaining(&Record::default(), at(0)), Duration::ZERO);
    }
}
