//! The proxy's metrics, named as kube-proxy's.

use std::sync::OnceLock;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone)]
pub struct Metrics {
    pub sync_duration: Histogram,
    pub full_sync_duration: Histogram,
    pub partial_sync_duration: Histogram,
    pub last_sync_timestamp: Gauge<f64, AtomicU64>,
    pub chains: Gauge,
    pub rules: Gauge,
    pub sync_failures: Gauge,
}

fn buckets() -> Histogram {
    // 1 ms to about 16 s
    Histogram::new(exponential_buckets(0.001, 2.0, 15))
}

impl Metrics {
    fn new() -> Metrics {
        Metrics {
            sync_duration: buckets(),
            full_sync_duration: buckets(),
            partial_sync_duration: buckets(),
            last_sync_timestamp: Gauge::default(),
            chains: Gauge::default(),
            rules: Gauge::default(),
            sync_failures: Gauge::default(),
        }
    }

    /// Add these metrics to a registry (they stay shared with the proxy).
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "kubeproxy_sync_proxy_rules_duration_seconds",
            "SyncProxyRules latency in seconds",
            self.sync_duration.clone(),
        );
        registry.register(
            "kubeproxy_sync_full_proxy_rules_duration_seconds",
            "Latency of full syncs of the proxy rules in seconds",
            self.full_sync_duration.clone(),
        );
        registry.register(
            "kubeproxy_sync_partial_proxy_rules_duration_seconds",
            "Latency of partial syncs of the proxy rules in seconds",
            self.partial_sync_duration.clone(),
        );
        registry.register(
            "kubeproxy_sync_proxy_rules_last_timestamp_seconds",
            "The last time proxy rules were successfully synced",
            self.last_sync_timestamp.clone(),
        );
        registry.register(
            "kubeproxy_sync_proxy_rules_nftables_chains",
            "Number of chains in the proxy's nftables table",
            self.chains.clone(),
        );
        registry.register(
            "kubeproxy_sync_proxy_rules_nftables_rules",
            "Number of rules in the proxy's nftables table",
            self.rules.clone(),
        );
        registry.register(
            "kubeproxy_sync_proxy_rules_nftables_sync_failures",
            "Number of nftables transactions the kernel refused",
            self.sync_failures.clone(),
        );
    }

    pub(crate) fn observe(&self, full: bool, took: Duration, chains: usize, rules: usize) {
        let secs = took.as_secs_f64();
        self.sync_duration.observe(secs);
        if full {
            self.full_sync_duration.observe(secs);
        } else {
            self.partial_sync_duration.observe(secs);
        }
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        self.last_sync_timestamp.set(now.as_secs_f64());
        self.chains.set(chains as i64);
        self.rules.set(rules as i64);
    }
}

struct Global {
    metrics: Metrics,
    registry: Registry,
}

fn global() -> &'static Global {
    static GLOBAL: OnceLock<Global> = OnceLock::new();
    GLOBAL.get_or_init(|| {
        let metrics = Metrics::new();
        let mut registry = Registry::default();
        metrics.register(&mut registry);
        Global { metrics, registry }
    })
}

/// The process's proxy metrics (one proxy a process).
pub fn metrics() -> &'static Metrics {
    &global().metrics
}

/// The proxy metrics in the Prometheus text format.
pub fn metrics_text() -> String {
    let mut out = String::new();
    let _ = encode(&mut out, &global().registry);
    out
}
