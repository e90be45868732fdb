//! Latency samples and their percentiles, and the bounded load loop every scenario uses.

use std::time::{Duration, Instant};

use crate::BenchError;

/// Latencies of one kind of operation.
#[derive(Debug, Clone, Default)]
pub struct Samples {
    durations: Vec<Duration>,
    sorted: bool,
}

impl Samples {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn push(&mut self, d: Duration) {
        self.durations.push(d);
        self.sorted = false;
    }

    pub fn extend(&mut self, other: Samples) {
        self.durations.extend(other.durations);
        self.sorted = false;
    }

    pub fn len(&self) -> usize {
        self.durations.len()
    }

    pub fn is_empty(&self) -> bool {
        self.durations.is_empty()
    }

    /// The `p`-th percentile (0 < p ≤ 100) in milliseconds, by the nearest-rank method: the
    /// smallest sample that at least `p`% of samples do not exceed. 0 when empty.
    pub fn percentile_ms(&mut self, p: f64) -> f64 {
        if self.durations.is_empty() {
            return 0.0;
        }
        if !self.sorted {
            self.durations.sort_unstable();
            self.sorted = true;
        }
        let n = self.durations.len();
        let rank = ((p / 100.0) * n as f64).ceil() as usize;
        let index = rank.clamp(1, n) - 1;
        self.durations[index].as_secs_f64() * 1000.0
    }

    pub fn median_ms(&mut self) -> f64 {
        self.percentile_ms(50.0)
    }
}

/// How far a load loop may go: at most `count` operations and no longer than `time`,
/// whichever ends first.
#[derive(Debug, Clone, Copy)]
pub struct Budget {
    pub count: usize,
    pub time: Duration,
}

impl Budget {
    pub fn new(count: usize, time: Duration) -> Self {
        Self { count, time }
    }
}

/// Runs `op(i)` for i = 0, 1, ... sequentially within `budget` (measured from `start`, so
/// that parallel workers share one deadline), timing each call.
pub async fn timed_loop(
    start: Instant,
    budget: Budget,
    mut op: impl AsyncFnMut(usize) -> Result<(), BenchError>,
) -> Result<Samples, BenchError> {
    let mut samples = Samples::new();
    for i in 0..budget.count {
        if start.elapsed() >= budget.time {
            break;
        }
        let began = Instant::now();
        op(i).await?;
        samples.push(began.elapsed());
    }
    Ok(samples)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(values: &[u64]) -> Samples {
        let mut s = Samples::new();
        for v in values {
            s.push(Duration::from_millis(*v));
        }
        s
    }

    #[test]
    fn nearest_rank_percentiles() {
        let mut s = ms(&[5, 1, 4, 2, 3, 10, 9, 8, 7, 6]);
        assert_eq!(s.percentile_ms(50.0), 5.0);
        assert_eq!(s.percentile_ms(90.0), 9.0);
        assert_eq!(s.percentile_ms(99.0), 10.0);
        assert_eq!(s.percentile_ms(100.0), 10.0);
        assert_eq!(s.percentile_ms(1.0), 1.0);
        assert_eq!(Samples::new().percentile_ms(99.0), 0.0);
    }

    #[test]
    fn percentiles_after_extend() {
        let mut a = ms(&[1, 2]);
        assert_eq!(a.percentile_ms(100.0), 2.0);
        a.extend(ms(&[7]));
        assert_eq!(a.percentile_ms(100.0), 7.0);
        assert_eq!(a.len(), 3);
    }

    #[tokio::test]
    async fn timed_loop_stops_at_count_and_time() {
        let start = Instant::now();
        let mut calls = 0;
        let s = timed_loop(start, Budget::new(5, Duration::from_secs(60)), async |_| {
            calls += 1;
            Ok(())
        })
        .await
        .unwrap();
        assert_eq!((s.len(), calls), (5, 5));

        let budget = Budget::new(usize::MAX, Duration::from_millis(30));
        let s = timed_loop(Instant::now(), budget, async |_| {
            tokio::time::sleep(Duration::from_millis(5)).await;
            Ok(())
        })
        .await
        .unwrap();
        assert!((1..=10).contains(&s.len()), "{} calls", s.len());
    }

    #[tokio::test]
    async fn timed_loop_passes_errors() {
        let r = timed_loop(
            Instant::now(),
            Budget::new(10, Duration::from_secs(5)),
            async |i| {
                if i == 3 {
                    Err(BenchError::Scenario(format!("failed at {i}")))
                } else {
                    Ok(())
                }
            },
        )
        .await;
        assert_eq!(r.unwrap_err().to_string(), "failed at 3");
    }
}
