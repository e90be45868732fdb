//! Back-off between restarts of a crashing container and between pulls of a failing image,
//! with upstream's rules (`flowcontrol.Backoff`): 10 s doubling to 5 min, forgotten once the
//! item has been quiet for twice the maximum.

use std::time::{Duration, Instant};

/// Initial delay of both back-offs.
pub const INITIAL: Duration = Duration::from_secs(10);
/// Longest delay (CrashLoopBackOff and ImagePullBackOff).
pub const MAX: Duration = Duration::from_secs(300);

/// One item's back-off (one container, or one image of a pod).
#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    /// The current delay and when it was last raised; None before the first failure.
    entry: Option<(Duration, Instant)>,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff::new(INITIAL, MAX)
    }
}

impl Backoff {
    pub fn new(initial: Duration, max: Duration) -> Backoff {
        Backoff {
            initial,
            max,
            entry: None,
        }
    }

    /// The current delay (zero before the first failure).
    pub fn delay(&self) -> Duration {
        self.entry.map(|(d, _)| d).unwrap_or_default()
    }

    fn expired(&self, event: Instant, last_update: Instant) -> bool {
        event.saturating_duration_since(last_update) > self.max * 2
    }

    /// Record a failure (a restart or a failed pull) at `now`, where `event` is when the thing
    /// that failed happened (a container's finish time): the delay starts at `initial`, doubles
    /// up to `max`, and starts over when the previous failure is older than twice `max`
    /// (a container that ran 10 min is a fresh start).
    pub fn next(&mut self, event: Instant, now: Instant) {
        let delay = match self.entry {
            Some((delay, last)) if !self.expired(event, last) => (delay * 2).min(self.max),
            _ => self.initial,
        };
        self.entry = Some((delay, now));
    }

    /// How much longer an item whose failure happened at `event` must wait, as of `now`
    /// (`IsInBackOffSince`: measured from the failure itself). None: it may go now.
    pub fn remaining_since(&self, event: Instant, now: Instant) -> Option<Duration> {
        let (delay, last) = self.entry?;
        if self.expired(event, last) {
            return None;
        }
        let waited = now.saturating_duration_since(event);
        (waited < delay).then(|| delay - waited)
    }

    /// How much longer to wait counting from the last recorded failure
    /// (`IsInBackOffSinceUpdate`: image pulls).
    pub fn remaining_since_update(&self, now: Instant) -> Option<Duration> {
        let (delay, last) = self.entry?;
        let waited = now.saturating_duration_since(last);
        (waited < delay).then(|| delay - waited)
    }

    pub fn reset(&mut self) {
        self.entry = None;
    }
}

/// Go's `time.Duration` printing for whole seconds and minutes, as upstream's back-off
/// messages show them (`10s`, `2m40s`, `5m0s`).
pub fn go_duration(d: Duration) -> String {
    let secs = d.as_secs();
    if secs >= 60 {
        format!("{}m{}s", secs / 60, secs % 60)
    } else {
        format!("{secs}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_failure_goes_at_once_then_doubles_to_the_cap() {
        let start = Instant::now();
        let mut b = Backoff::default();
        // No failure recorded yet: restart immediately (upstream's first restart).
        assert_eq!(b.remaining_since(start, start), None);
        b.next(start, start);
        assert_eq!(b.delay(), Duration::from_secs(10));
        let died = start + Duration::from_secs(3);
        assert_eq!(
            b.remaining_since(died, died + Duration::from_secs(4)),
            Some(Duration::from_secs(6))
        );
        assert_eq!(
            b.remaining_since(died, died + Duration::from_secs(10)),
            None
        );
        let mut now = died;
        let mut seen = Vec::new();
        for _ in 0..7 {
            now += Duration::from_secs(1);
            b.next(now, now);
            seen.push(b.delay().as_secs());
        }
        assert_eq!(seen, vec![20, 40, 80, 160, 300, 300, 300]);
    }

    #[test]
    fn a_long_run_resets_the_back_off() {
        let start = Instant::now();
        let mut b = Backoff::default();
        b.next(start, start);
        b.next(start, start);
        assert_eq!(b.delay(), Duration::from_secs(20));
        // The container ran more than 10 minutes since the last restart.
        let died = start + Duration::from_secs(601);
        assert_eq!(b.remaining_since(died, died), None);
        b.next(died, died);
        assert_eq!(b.delay(), Duration::from_secs(10));
    }

    #[test]
    fn image_pull_back_off_counts_from_the_failure() {
        let start = Instant::now();
        let mut b = Backoff::default();
        assert_eq!(b.remaining_since_update(start), None);
        b.next(start, start);
        assert_eq!(
            b.remaining_since_update(start + Duration::from_secs(4)),
            Some(Duration::from_secs(6))
        );
        assert_eq!(
            b.remaining_since_update(start + Duration::from_secs(10)),
            None
        );
        b.reset();
        assert_eq!(b.delay(), Duration::ZERO);
    }

    #[test]
    fn durations_print_as_go_does() {
        assert_eq!(go_duration(Duration::from_secs(10)), "10s");
        assert_eq!(go_duration(Duration::from_secs(160)), "2m40s");
        assert_eq!(go_duration(Duration::from_secs(300)), "5m0s");
    }
}
