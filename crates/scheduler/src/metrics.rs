//! Prometheus metrics of the scheduler, named as upstream's `scheduler_*` metrics.

use std::sync::OnceLock;
use std::time::Duration;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

type Labels = Vec<(&'static str, &'static str)>;

pub struct Metrics {
    registry: Registry,
    /// Attempts by result: scheduled, unschedulable, error.
    pub schedule_attempts: Family<Labels, Counter>,
    /// How long one scheduling attempt (the cycle, not the binding) took.
    pub attempt_duration: Histogram,
    /// From the first time a pod was queued until its binding succeeded.
    pub e2e_scheduling_duration: Histogram,
    pub preemption_attempts: Counter,
    pub preemption_victims: Counter,
    /// Binding API calls that failed.
    pub binding_errors: Counter,
}

pub const RESULT_SCHEDULED: &str = "scheduled";
pub const RESULT_UNSCHEDULABLE: &str = "unschedulable";
pub const RESULT_ERROR: &str = "error";

impl Metrics {
    fn new() -> Metrics {
        let mut registry = Registry::with_prefix("scheduler");
        let schedule_attempts = Family::<Labels, Counter>::default();
        registry.register(
            "schedule_attempts",
            "Number of attempts to schedule pods, by the result",
            schedule_attempts.clone(),
        );
        let attempt_duration = Histogram::new(exponential_buckets(0.0001, 2.0, 16));
        registry.register(
            "scheduling_attempt_duration_seconds",
            "Scheduling attempt latency in seconds (scheduling algorithm + binding start)",
            attempt_duration.clone(),
        );
        let e2e_scheduling_duration = Histogram::new(exponential_buckets(0.001, 2.0, 18));
        registry.register(
            "pod_scheduling_sli_duration_seconds",
            "E2e latency for a pod being scheduled, from the time the pod enters the scheduling queue until it is bound",
            e2e_scheduling_duration.clone(),
        );
        let preemption_attempts = Counter::default();
        registry.register(
            "preemption_attempts",
            "Total preemption attempts in the cluster till now",
            preemption_attempts.clone(),
        );
        let preemption_victims = Counter::default();
        registry.register(
            "preemption_victims",
            "Number of selected preemption victims",
            preemption_victims.clone(),
        );
        let binding_errors = Counter::default();
        registry.register(
            "binding_errors",
            "Number of binding API calls that failed",
            binding_errors.clone(),
        );
        Metrics {
            registry,
            schedule_attempts,
            attempt_duration,
            e2e_scheduling_duration,
            preemption_attempts,
            preemption_victims,
            binding_errors,
        }
    }

    pub fn attempt(&self, result: &'static str, profile: &'static str, took: Duration) {
        self.schedule_attempts
            .get_or_create(&vec![("result", result), ("profile", profile)])
            .inc();
        self.attempt_duration.observe(took.as_secs_f64());
    }

    pub fn attempts(&self, result: &'static str) -> u64 {
        self.schedule_attempts
            .get_or_create(&vec![("result", result), ("profile", "default-scheduler")])
            .get()
    }

    /// The text exposition format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        encode(&mut out, &self.registry).expect("writing to a String");
        out
    }
}

/// The process-wide scheduler metrics.
pub fn metrics() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(Metrics::new)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_attempts() {
        let m = metrics();
        let before = m.attempts(RESULT_UNSCHEDULABLE);
        m.attempt(
            RESULT_UNSCHEDULABLE,
            "default-scheduler",
            Duration::from_millis(1),
        );
        assert_eq!(m.attempts(RESULT_UNSCHEDULABLE), before + 1);
        let text = m.encode();
        assert!(text.contains("scheduler_schedule_attempts_total{result=\"unschedulable\",profile=\"default-scheduler\"}"), "{text}");
        assert!(text.contains("scheduler_scheduling_attempt_duration_seconds_bucket"));
    }
}
