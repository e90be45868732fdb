//! Prometheus metrics of the API server: requests by verb, resource and code, latencies,
//! store latencies and watch counts.

use std::sync::atomic::AtomicI64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub verb: String,
    pub resource: String,
    pub code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LatencyLabels {
    pub verb: String,
    pub resource: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StoreLabels {
    pub operation: String,
}

pub struct Metrics {
    registry: Registry,
    pub requests: Family<RequestLabels, Counter>,
    pub request_duration: Family<LatencyLabels, Histogram>,
    pub store_duration: Family<StoreLabels, Histogram>,
    pub watchers: Gauge<i64, AtomicI64>,
    pub cached_objects: Gauge<i64, AtomicI64>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let requests = Family::<RequestLabels, Counter>::default();
        let request_duration = Family::<LatencyLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.000_25, 2.0, 16))
        });
        let store_duration = Family::<StoreLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.000_1, 2.0, 16))
        });
        let watchers = Gauge::<i64, AtomicI64>::default();
        let cached_objects = Gauge::<i64, AtomicI64>::default();
        registry.register(
            "apiserver_request",
            "API requests by verb, resource and HTTP code",
            requests.clone(),
        );
        registry.register(
            "apiserver_request_duration_seconds",
            "API request latency by verb and resource",
            request_duration.clone(),
        );
        registry.register(
            "store_request_duration_seconds",
            "Store operation latency",
            store_duration.clone(),
        );
        registry.register(
            "apiserver_registered_watchers",
            "Open watch streams",
            watchers.clone(),
        );
        registry.register(
            "apiserver_cached_objects",
            "Objects held in the watch cache",
            cached_objects.clone(),
        );
        Metrics {
            registry,
            requests,
            request_duration,
            store_duration,
            watchers,
            cached_objects,
        }
    }

    pub fn observe_request(&self, verb: &str, resource: &str, code: u16, seconds: f64) {
        self.requests
            .get_or_create(&RequestLabels {
                verb: verb.into(),
                resource: resource.into(),
                code: code.to_string(),
            })
            .inc();
        if verb != "watch" {
            self.request_duration
                .get_or_create(&LatencyLabels {
                    verb: verb.into(),
                    resource: resource.into(),
                })
                .observe(seconds);
        }
    }

    pub fn observe_store(&self, operation: &str, seconds: f64) {
        self.store_duration
            .get_or_create(&StoreLabels {
                operation: operation.into(),
            })
            .observe(seconds);
    }

    pub fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }
}
