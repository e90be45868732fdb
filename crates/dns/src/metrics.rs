//! The DNS server's metrics, named as CoreDNS's so that its dashboards and alerts apply.

use std::sync::OnceLock;
use std::time::Duration;

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

type Labels = [(&'static str, &'static str); 2];

#[derive(Clone)]
pub struct Metrics {
    /// Queries by transport (`udp`/`tcp`) and type.
    pub requests: Family<Labels, Counter>,
    /// Responses by rcode and by where the answer came from (`kubernetes`, `cache`, `forward`).
    pub responses: Family<Labels, Counter>,
    pub request_duration: Histogram,
    pub cache_hits: Counter,
    pub cache_misses: Counter,
    pub cache_entries: Gauge,
    /// Queries sent to upstream resolvers, by upstream outcome (`ok`, `timeout`, `error`).
    pub forward_requests: Family<[(&'static str, &'static str); 1], Counter>,
    /// Cluster records currently served, and their rebuilds.
    pub services: Gauge,
    pub record_rebuilds: Counter,
}

impl Metrics {
    fn new() -> Metrics {
        Metrics {
            requests: Family::default(),
            responses: Family::default(),
            // 25 µs to about 1.6 s
            request_duration: Histogram::new(exponential_buckets(0.000_025, 2.0, 17)),
            cache_hits: Counter::default(),
            cache_misses: Counter::default(),
            cache_entries: Gauge::default(),
            forward_requests: Family::default(),
            services: Gauge::default(),
            record_rebuilds: Counter::default(),
        }
    }

    /// Add these metrics to a registry (they stay shared with the server).
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "coredns_dns_requests",
            "Number of DNS queries received, by transport and query type",
            self.requests.clone(),
        );
        registry.register(
            "coredns_dns_responses",
            "Number of DNS responses sent, by rcode and source of the answer",
            self.responses.clone(),
        );
        registry.register(
            "coredns_dns_request_duration_seconds",
            "Time from receiving a DNS query to having its response",
            self.request_duration.clone(),
        );
        registry.register(
            "coredns_cache_hits",
            "Forwarded queries answered from the cache",
            self.cache_hits.clone(),
        );
        registry.register(
            "coredns_cache_misses",
            "Forwarded queries not found in the cache",
            self.cache_misses.clone(),
        );
        registry.register(
            "coredns_cache_entries",
            "Responses held in the cache",
            self.cache_entries.clone(),
        );
        registry.register(
            "coredns_forward_requests",
            "Queries sent to upstream resolvers, by outcome",
            self.forward_requests.clone(),
        );
        registry.register(
            "coredns_kubernetes_services",
            "Services in the cluster zone served",
            self.services.clone(),
        );
        registry.register(
            "coredns_kubernetes_rebuilds",
            "Rebuilds of the cluster zone after Service or EndpointSlice changes",
            self.record_rebuilds.clone(),
        );
    }

    pub(crate) fn observe(
        &self,
        transport: &'static str,
        qtype: Option<RecordType>,
        rcode: ResponseCode,
        source: &'static str,
        took: Duration,
    ) {
        self.requests
            .get_or_create(&[("proto", transport), ("type", type_label(qtype))])
            .inc();
        self.responses
            .get_or_create(&[("rcode", rcode_label(rcode)), ("source", source)])
            .inc();
        self.request_duration.observe(took.as_secs_f64());
    }
}

fn type_label(t: Option<RecordType>) -> &'static str {
    match t {
        Some(RecordType::A) => "A",
        Some(RecordType::AAAA) => "AAAA",
        Some(RecordType::SRV) => "SRV",
        Some(RecordType::PTR) => "PTR",
        Some(RecordType::CNAME) => "CNAME",
        Some(RecordType::TXT) => "TXT",
        Some(RecordType::MX) => "MX",
        Some(RecordType::NS) => "NS",
        Some(RecordType::SOA) => "SOA",
        Some(RecordType::HTTPS) => "HTTPS",
        Some(RecordType::ANY) => "ANY",
        Some(_) => "other",
        None => "none",
    }
}

fn rcode_label(r: ResponseCode) -> &'static str {
    match r {
        ResponseCode::NoError => "NOERROR",
        ResponseCode::FormErr => "FORMERR",
        ResponseCode::ServFail => "SERVFAIL",
        ResponseCode::NXDomain => "NXDOMAIN",
        ResponseCode::NotImp => "NOTIMP",
        ResponseCode::Refused => "REFUSED",
        _ => "other",
    }
}

/// The process-wide DNS metrics.
pub fn metrics() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(Metrics::new)
}

/// The DNS metrics alone in the Prometheus text format.
pub fn metrics_text() -> String {
    let mut registry = Registry::default();
    metrics().register(&mut registry);
    let mut out = String::new();
    let _ = encode(&mut out, &registry);
    out
}
