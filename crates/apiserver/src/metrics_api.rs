//! The resource metrics API, `metrics.k8s.io/v1beta1`, served in-process as metrics-server
//! serves it: what `kubectl top` and the horizontal pod autoscaler read.
//!
//! On request (at most once every [`CACHE_TTL`]) the API server scrapes `GET /stats/summary`
//! from the kubelet of every Ready node, over the same TLS client it uses for logs and exec
//! ([`crate::proxy`]). Nodes that do not answer within [`SCRAPE_TIMEOUT`] (simulated nodes
//! have no kubelet) are skipped for [`UNREACHABLE_BACKOFF`]. As metrics-server does, CPU is
//! the rate of the cumulative CPU time between two scrapes of a node (`window` is the time
//! between them), and memory is the working set. A node seen for the first time, or whose
//! previous scrape is older than [`MAX_WINDOW`], is scraped twice [`PAIR_INTERVAL`] apart so
//! that rates are recent; a container that appeared since the previous scrape uses the
//! kubelet's own `usageNanoCores`.
//!
//! Items follow metrics-server: nodes and Running pods from the watch cache (label and
//! `metadata.*` field selectors), in name order, leaving out those with no metrics; a missing
//! object is `node "x" not found` / `pod "x" not found`, one without metrics
//! `nodemetrics.metrics.k8s.io "x" not found` / `podmetrics.metrics.k8s.io "ns/x" not found`.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use chrono::{DateTime, SecondsFormat, Utc};
use http::{HeaderValue, Method, Request, Response, StatusCode, Uri, header};
use http_body_util::{BodyExt, Empty, Limited};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::ApiServer;
use crate::error::{ApiError, ApiResult, Subject};
use crate::http::Body;
use crate::request::Query;

pub const GROUP: &str = "metrics.k8s.io";
pub const VERSION: &str = "v1beta1";
const GROUP_VERSION: &str = "metrics.k8s.io/v1beta1";

/// Scrapes younger than this answer requests.
pub const CACHE_TTL: Duration = Duration::from_secs(10);
/// How long one kubelet gets to answer.
pub const SCRAPE_TIMEOUT: Duration = Duration::from_secs(1);
/// A node that did not answer is not asked again before this.
pub const UNREACHABLE_BACKOFF: Duration = Duration::from_secs(20);
/// Rates over longer windows than this are stale: scrape twice instead.
pub const MAX_WINDOW: Duration = Duration::from_secs(60);
/// The gap between the two scrapes of a node that has no recent one.
pub const PAIR_INTERVAL: Duration = Duration::from_secs(1);
/// Summaries are small (a few hundred bytes a container); refuse absurd ones.
const MAX_SUMMARY_BYTES: usize = 32 << 20;

// ---------------------------------------------------------------------------------------------
// Discovery

/// The resources of `metrics.k8s.io/v1beta1`: (plural, kind, namespaced).
const RESOURCES: [(&str, &str, bool); 2] = [
    ("nodes", "NodeMetrics", false),
    ("pods", "PodMetrics", true),
];
const VERBS: [&str; 2] = ["get", "list"];

/// The group as `/apis` lists it (an `APIGroup` without kind).
pub fn api_group() -> Value {
    let version = json!({"groupVersion": GROUP_VERSION, "version": VERSION});
    json!({"name": GROUP, "versions": [version.clone()], "preferredVersion": version})
}

/// `/apis/metrics.k8s.io/v1beta1`. As metrics-server, the resources have no singular name.
pub fn api_resource_list() -> Value {
    let resources: Vec<Value> = RESOURCES
        .iter()
        .map(|(plural, kind, namespaced)| {
            json!({"name": plural, "singularName": "", "namespaced": namespaced, "kind": kind, "verbs": VERBS})
        })
        .collect();
    json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": GROUP_VERSION, "resources": resources})
}

/// The group's item in the aggregated `/apis` document.
pub fn aggregated_group() -> Value {
    let resources: Vec<Value> = RESOURCES
        .iter()
        .map(|(plural, kind, namespaced)| {
            json!({
                "resource": plural,
                "responseKind": {"group": GROUP, "version": VERSION, "kind": kind},
                "scope": if *namespaced { "Namespaced" } else { "Cluster" },
                "singularResource": "",
                "verbs": VERBS,
            })
        })
        .collect();
    json!({
        "metadata": {"name": GROUP, "creationTimestamp": null},
        "versions": [{"version": VERSION, "resources": resources, "freshness": "Current"}],
    })
}

// ---------------------------------------------------------------------------------------------
// Routing

/// What a metrics request addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MetricsTarget {
    Nodes {
        name: Option<String>,
    },
    /// `namespace` None: all namespaces (`/pods`).
    Pods {
        namespace: Option<String>,
        name: Option<String>,
    },
}

/// The metrics resource a path addresses; None for every other path (including the group's
/// discovery documents and unknown paths under it, which the generic router answers).
pub fn route(path: &str) -> Option<MetricsTarget> {
    let rest = path.strip_prefix("/apis/metrics.k8s.io/v1beta1/")?;
    let segments: Vec<String> = rest
        .trim_end_matches('/')
        .split('/')
        .map(crate::request::percent_decode)
        .collect();
    let name = |s: Option<&String>| s.filter(|s| !s.is_empty()).cloned();
    match segments.as_slice() {
        [r] if r == "nodes" => Some(MetricsTarget::Nodes { name: None }),
        [r, n] if r == "nodes" => Some(MetricsTarget::Nodes {
            name: name(Some(n)),
        }),
        [r] if r == "pods" => Some(MetricsTarget::Pods {
            namespace: None,
            name: None,
        }),
        [ns_seg, ns, r, rest @ ..] if ns_seg == "namespaces" && r == "pods" && rest.len() <= 1 => {
            Some(MetricsTarget::Pods {
                namespace: Some(ns.clone()),
                name: name(rest.first()),
            })
        }
        _ => None,
    }
}

impl MetricsTarget {
    fn group_resource(&self) -> &'static str {
        match self {
            MetricsTarget::Nodes { .. } => "nodes.metrics.k8s.io",
            MetricsTarget::Pods { .. } => "pods.metrics.k8s.io",
        }
    }

    fn has_name(&self) -> bool {
        match self {
            MetricsTarget::Nodes { name } | MetricsTarget::Pods { name, .. } => name.is_some(),
        }
    }
}

/// Serve a metrics request; returns the response, the verb and the resource for metrics.
pub async fn handle(
    server: &Arc<ApiServer>,
    method: &Method,
    uri: &Uri,
    target: MetricsTarget,
) -> (Response<Body>, String, String) {
    let verb = if target.has_name() { "get" } else { "list" };
    let resource = target.group_resource().to_string();
    let response = match serve(server, method, uri, &target).await {
        Ok(value) => crate::http::json(StatusCode::OK, &value),
        Err(e) => crate::http::error(&e),
    };
    (response, verb.to_string(), resource)
}

async fn serve(
    server: &Arc<ApiServer>,
    method: &Method,
    uri: &Uri,
    target: &MetricsTarget,
) -> ApiResult<Value> {
    let kind = match target {
        MetricsTarget::Nodes { .. } => "nodemetrics",
        MetricsTarget::Pods { .. } => "podmetrics",
    };
    if method != Method::GET {
        return Err(ApiError::method_not_allowed(format!(
            "{} is not supported on resources of kind \"{kind}.{GROUP}\"",
            method.as_str().to_lowercase()
        )));
    }
    let query = Query::parse(uri.query());
    if query.flag("watch") {
        return Err(ApiError::method_not_allowed(format!(
            "watch is not supported on resources of kind \"{kind}.{GROUP}\""
        )));
    }
    let selectors = Selectors::from_query(&query)?;
    let snapshot = server.metrics_api.snapshot(server).await;
    match target {
        MetricsTarget::Nodes { name } => nodes(server, &snapshot, name.as_deref(), &selectors),
        MetricsTarget::Pods { namespace, name } => pods(
            server,
            &snapshot,
            namespace.as_deref(),
            name.as_deref(),
            &selectors,
        ),
    }
}

struct Selectors {
    labels: api::selector::LabelSelector,
    fields: api::fields::FieldSelector,
}

impl Selectors {
    fn from_query(query: &Query) -> ApiResult<Selectors> {
        let labels = match query.get("labelSelector") {
            Some(s) => api::selector::LabelSelector::parse(s)
                .map_err(|e| ApiError::bad_request(format!("unable to parse requirement: {e}")))?,
            None => api::selector::LabelSelector::everything(),
        };
        let fields = match query.get("fieldSelector") {
            Some(s) => api::fields::FieldSelector::parse(s)
                .map_err(|e| ApiError::bad_request(e.to_string()))?,
            None => api::fields::FieldSelector::everything(),
        };
        Ok(Selectors { labels, fields })
    }

    /// As metrics-server: labels, and fields of the object's metadata only.
    fn matches(&self, object: &Value) -> bool {
        let labels = object
            .pointer("/metadata/labels")
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default();
        let mut fields = api::fields::FieldSet::new();
        fields.insert("metadata.name", str_at(object, "/metadata/name"));
        if let Some(ns) = object
            .pointer("/metadata/namespace")
            .and_then(Value::as_str)
        {
            fields.insert("metadata.namespace", ns);
        }
        self.labels.matches(&labels) && self.fields.matches(&fields)
    }
}

fn str_at<'a>(value: &'a Value, pointer: &str) -> &'a str {
    value.pointer(pointer).and_then(Value::as_str).unwrap_or("")
}

fn cached(server: &ApiServer, plural: &str, namespace: Option<&str>) -> Vec<Value> {
    let resource = api::resources::storage_row(plural).expect("core resources are registered");
    let (objects, _, _) = server
        .cache
        .list(resource, &resource.prefix(namespace), None, 0, |_| true);
    objects
        .iter()
        .filter_map(|o| serde_json::from_slice(&o.json).ok())
        .collect()
}

fn cached_one(
    server: &ApiServer,
    plural: &str,
    namespace: Option<&str>,
    name: &str,
) -> Option<Value> {
    let resource = api::resources::storage_row(plural).expect("core resources are registered");
    let object = server.cache.get(resource, &resource.key(namespace, name))?;
    serde_json::from_slice(&object.json).ok()
}

fn list(kind: &str, items: Vec<Value>) -> Value {
    json!({"kind": kind, "apiVersion": GROUP_VERSION, "metadata": {}, "items": items})
}

fn with_type(mut item: Value, kind: &str) -> Value {
    let mut typed = Map::new();
    typed.insert("kind".into(), json!(kind));
    typed.insert("apiVersion".into(), json!(GROUP_VERSION));
    if let Value::Object(fields) = &mut item {
        typed.append(fields);
    }
    Value::Object(typed)
}

fn nodes(
    server: &ApiServer,
    snapshot: &Snapshot,
    name: Option<&str>,
    selectors: &Selectors,
) -> ApiResult<Value> {
    let now = Utc::now();
    if let Some(name) = name {
        let node = cached_one(server, "nodes", None, name).ok_or_else(|| {
            ApiError::not_found(Subject {
                group: "",
                resource: "node",
                name,
            })
        })?;
        let item = snapshot
            .get(name)
            .and_then(|h| node_metrics(&node, h, now))
            .ok_or_else(|| {
                ApiError::not_found(Subject {
                    group: GROUP,
                    resource: "nodemetrics",
                    name,
                })
            })?;
        return Ok(with_type(item, "NodeMetrics"));
    }
    let items = cached(server, "nodes", None)
        .iter()
        .filter(|node| selectors.matches(node))
        .filter_map(|node| {
            let history = snapshot.get(str_at(node, "/metadata/name"))?;
            node_metrics(node, history, now)
        })
        .collect();
    Ok(list("NodeMetricsList", items))
}

fn pods(
    server: &ApiServer,
    snapshot: &Snapshot,
    namespace: Option<&str>,
    name: Option<&str>,
    selectors: &Selectors,
) -> ApiResult<Value> {
    let now = Utc::now();
    if let (Some(name), Some(ns)) = (name, namespace) {
        let pod = cached_one(server, "pods", Some(ns), name).ok_or_else(|| {
            ApiError::not_found(Subject {
                group: "",
                resource: "pod",
                name,
            })
        })?;
        let qualified = format!("{ns}/{name}");
        let item = pod_metrics_from(snapshot, &pod, now).ok_or_else(|| {
            ApiError::not_found(Subject {
                group: GROUP,
                resource: "podmetrics",
                name: &qualified,
            })
        })?;
        return Ok(with_type(item, "PodMetrics"));
    }
    // The cache lists in key order: by namespace, then name, as metrics-server sorts.
    let items = cached(server, "pods", namespace)
        .iter()
        .filter(|pod| selectors.matches(pod))
        .filter_map(|pod| pod_metrics_from(snapshot, pod, now))
        .collect();
    Ok(list("PodMetricsList", items))
}

fn pod_metrics_from(snapshot: &Snapshot, pod: &Value, now: DateTime<Utc>) -> Option<Value> {
    if str_at(pod, "/status/phase") != "Running" {
        return None;
    }
    let history = snapshot.get(str_at(pod, "/spec/nodeName"))?;
    pod_metrics(pod, history, now)
}

// ---------------------------------------------------------------------------------------------
// Scraping

/// The last scrapes of every node that answered, by node name.
pub type Snapshot = HashMap<String, NodeHistory>;

/// The last two scrapes of one node.
#[derive(Debug, Clone)]
pub struct NodeHistory {
    pub last: Arc<NodeScrape>,
    pub prev: Option<Arc<NodeScrape>>,
}

impl NodeHistory {
    fn new(scrape: NodeScrape) -> Self {
        NodeHistory {
            last: Arc::new(scrape),
            prev: None,
        }
    }

    /// Add a newer scrape; the older one stays as `prev` while the window is short enough.
    fn push(&mut self, scrape: NodeScrape) {
        let recent = (scrape.timestamp - self.last.timestamp)
            .to_std()
            .is_ok_and(|gap| !gap.is_zero() && gap <= MAX_WINDOW);
        let older = std::mem::replace(&mut self.last, Arc::new(scrape));
        self.prev = recent.then_some(older);
    }

    /// The time between the two scrapes.
    fn window(&self) -> Option<Duration> {
        let prev = self.prev.as_ref()?;
        (self.last.timestamp - prev.timestamp)
            .to_std()
            .ok()
            .filter(|w| !w.is_zero())
    }
}

#[derive(Default)]
struct ScrapeState {
    refreshed: Option<Instant>,
    nodes: Snapshot,
    /// Nodes that did not answer, and when.
    unreachable: HashMap<String, Instant>,
}

/// The scraper and its cache, one per API server.
#[derive(Default)]
pub struct MetricsApi {
    /// Held across a scrape, so that concurrent requests share one.
    state: tokio::sync::Mutex<ScrapeState>,
}

/// Why a kubelet's summary could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ScrapeError {
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("connecting: {0}")]
    Connect(#[source] std::io::Error),
    #[error("requesting /stats/summary: {0}")]
    Request(#[source] hyper::Error),
    #[error("/stats/summary answered {0}")]
    Status(StatusCode),
    #[error("reading /stats/summary: {0}")]
    Body(String),
    #[error("decoding /stats/summary: {0}")]
    Decode(#[source] serde_json::Error),
}

impl MetricsApi {
    pub fn new() -> Self {
        Self::default()
    }

    /// The current scrapes, refreshed first if they are older than [`CACHE_TTL`].
    pub async fn snapshot(&self, server: &ApiServer) -> Snapshot {
        let mut state = self.state.lock().await;
        if state.refreshed.is_some_and(|at| at.elapsed() < CACHE_TTL) {
            return state.nodes.clone();
        }
        let Some(tls) = server
            .config
            .cluster_tls
            .as_ref()
            .map(|t| t.kubelet_client.clone())
        else {
            // No credentials for kubelets (tests without nodes): nothing to scrape.
            state.refreshed = Some(Instant::now());
            state.nodes.clear();
            return Snapshot::new();
        };
        let targets: Vec<(String, SocketAddr)> = scrape_targets(server)
            .into_iter()
            .filter(|(name, _)| {
                state
                    .unreachable
                    .get(name)
                    .is_none_or(|at| at.elapsed() >= UNREACHABLE_BACKOFF)
            })
            .collect();
        let scraped = scrape_all(&targets, &tls).await;
        let mut answered = HashMap::new();
        for (name, result) in scraped {
            match result {
                Ok(scrape) => {
                    state.unreachable.remove(&name);
                    answered.insert(name, scrape);
                }
                Err(e) => {
                    tracing::debug!(node = %name, error = %e, "scraping the kubelet's summary");
                    state.unreachable.insert(name, Instant::now());
                }
            }
        }
        // Nodes that are gone, not Ready or silent have no metrics.
        state.nodes.retain(|name, _| answered.contains_key(name));
        for (name, scrape) in answered {
            match state.nodes.get_mut(&name) {
                Some(history) => history.push(scrape),
                None => {
                    state.nodes.insert(name, NodeHistory::new(scrape));
                }
            }
        }
        let unpaired: Vec<(String, SocketAddr)> = targets
            .into_iter()
            .filter(|(name, _)| state.nodes.get(name).is_some_and(|h| h.prev.is_none()))
            .collect();
        if !unpaired.is_empty() {
            tokio::time::sleep(PAIR_INTERVAL).await;
            for (name, result) in scrape_all(&unpaired, &tls).await {
                match (result, state.nodes.get_mut(&name)) {
                    (Ok(scrape), Some(history)) => history.push(scrape),
                    (Err(e), _) => {
                        tracing::debug!(node = %name, error = %e, "scraping the kubelet's summary again")
                    }
                    _ => {}
                }
            }
        }
        tracing::debug!(
            nodes = state.nodes.len(),
            "scraped kubelet summaries for the metrics API"
        );
        state.refreshed = Some(Instant::now());
        state.nodes.clone()
    }
}

/// Ready nodes and where their kubelets listen.
fn scrape_targets(server: &ApiServer) -> Vec<(String, SocketAddr)> {
    cached(server, "nodes", None)
        .into_iter()
        .filter(|node| {
            node.pointer("/status/conditions")
                .and_then(Value::as_array)
                .is_some_and(|conditions| {
                    conditions
                        .iter()
                        .any(|c| c["type"] == "Ready" && c["status"] == "True")
                })
        })
        .filter_map(|node| {
            let typed: k8s_openapi::api::core::v1::Node = serde_json::from_value(node).ok()?;
            let address = crate::proxy::kubelet_address(&typed)?;
            Some((typed.metadata.name?, address))
        })
        .collect()
}

async fn scrape_all(
    targets: &[(String, SocketAddr)],
    tls: &Arc<rustls::ClientConfig>,
) -> Vec<(String, Result<NodeScrape, ScrapeError>)> {
    let scrapes = targets.iter().map(|(name, address)| {
        let tls = tls.clone();
        async move {
            let result = tokio::time::timeout(SCRAPE_TIMEOUT, scrape(*address, tls))
                .await
                .unwrap_or(Err(ScrapeError::Timeout(SCRAPE_TIMEOUT)));
            (name.clone(), result)
        }
    });
    futures::future::join_all(scrapes).await
}

async fn scrape(
    address: SocketAddr,
    tls: Arc<rustls::ClientConfig>,
) -> Result<NodeScrape, ScrapeError> {
    let mut sender = crate::proxy::connect(address, tls)
        .await
        .map_err(ScrapeError::Connect)?;
    let mut request = Request::builder()
        .method(Method::GET)
        .uri("/stats/summary?only_cpu_and_memory=true")
        .body(Empty::<Bytes>::new())
        .expect("a static request is valid");
    if let Ok(host) = HeaderValue::from_str(&address.to_string()) {
        request.headers_mut().insert(header::HOST, host);
    }
    let response = sender
        .send_request(request)
        .await
        .map_err(ScrapeError::Request)?;
    if !response.status().is_success() {
        return Err(ScrapeError::Status(response.status()));
    }
    let body = Limited::new(response.into_body(), MAX_SUMMARY_BYTES)
        .collect()
        .await
        .map_err(|e| ScrapeError::Body(e.to_string()))?
        .to_bytes();
    decode_summary(&body, Utc::now()).map_err(ScrapeError::Decode)
}

// ---------------------------------------------------------------------------------------------
// The kubelet's Summary (`stats/v1alpha1`), the fields read here

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Summary {
    node: NodeStats,
    #[serde(default)]
    pods: Vec<PodStats>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct NodeStats {
    start_time: Option<DateTime<Utc>>,
    cpu: Option<CpuStats>,
    memory: Option<MemoryStats>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct PodStats {
    pod_ref: PodReference,
    #[serde(default)]
    containers: Vec<ContainerStats>,
}

#[derive(Debug, Deserialize)]
struct PodReference {
    name: String,
    namespace: String,
    #[serde(default)]
    uid: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ContainerStats {
    name: String,
    start_time: Option<DateTime<Utc>>,
    cpu: Option<CpuStats>,
    memory: Option<MemoryStats>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct CpuStats {
    usage_nano_cores: Option<u64>,
    usage_core_nano_seconds: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct MemoryStats {
    working_set_bytes: Option<u64>,
}

/// One measurement of a node or container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetricsPoint {
    /// When the node or container started: cumulative CPU counts from there.
    pub start_time: Option<DateTime<Utc>>,
    pub cumulative_cpu_nanos: Option<u64>,
    /// The kubelet's own rate, for containers with no earlier point.
    pub usage_nano_cores: Option<u64>,
    pub working_set_bytes: u64,
}

/// The containers of one pod, in the summary's order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodPoints {
    pub uid: String,
    pub containers: Vec<(String, MetricsPoint)>,
}

/// One scrape of one node's summary.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeScrape {
    /// When the summary arrived; the kubelet's own times are only to the second.
    pub timestamp: DateTime<Utc>,
    pub node: Option<MetricsPoint>,
    /// By (namespace, name).
    pub pods: BTreeMap<(String, String), PodPoints>,
}

/// A point needs a CPU reading and a working set, as metrics-server requires.
fn point(
    start_time: Option<DateTime<Utc>>,
    cpu: Option<&CpuStats>,
    memory: Option<&MemoryStats>,
) -> Option<MetricsPoint> {
    let cpu = cpu?;
    if cpu.usage_core_nano_seconds.is_none() && cpu.usage_nano_cores.is_none() {
        return None;
    }
    Some(MetricsPoint {
        start_time,
        cumulative_cpu_nanos: cpu.usage_core_nano_seconds,
        usage_nano_cores: cpu.usage_nano_cores,
        working_set_bytes: memory?.working_set_bytes?,
    })
}

/// Read a summary received at `timestamp`. Pods with a container lacking metrics are left
/// out (metrics-server serves a pod only with all of its containers).
pub fn decode_summary(
    bytes: &[u8],
    timestamp: DateTime<Utc>,
) -> Result<NodeScrape, serde_json::Error> {
    let summary: Summary = serde_json::from_slice(bytes)?;
    let node = point(
        summary.node.start_time,
        summary.node.cpu.as_ref(),
        summary.node.memory.as_ref(),
    );
    let mut pods = BTreeMap::new();
    for pod in summary.pods {
        let containers: Option<Vec<(String, MetricsPoint)>> = pod
            .containers
            .iter()
            .map(|c| {
                Some((
                    c.name.clone(),
                    point(c.start_time, c.cpu.as_ref(), c.memory.as_ref())?,
                ))
            })
            .collect();
        match containers {
            Some(containers) if !containers.is_empty() => {
                pods.insert(
                    (pod.pod_ref.namespace, pod.pod_ref.name),
                    PodPoints {
                        uid: pod.pod_ref.uid,
                        containers,
                    },
                );
            }
            _ => {}
        }
    }
    Ok(NodeScrape {
        timestamp,
        node,
        pods,
    })
}

/// CPU use in nanocores: the rate of cumulative CPU time since `prev` if it is an earlier
/// point of the same (not restarted) node or container, else the kubelet's own rate.
pub fn cpu_nano_cores(
    last: &MetricsPoint,
    prev: Option<&MetricsPoint>,
    window: Duration,
) -> Option<u64> {
    let from_cumulative = prev.and_then(|prev| {
        if prev.start_time != last.start_time || window.is_zero() {
            return None;
        }
        let used = last
            .cumulative_cpu_nanos?
            .checked_sub(prev.cumulative_cpu_nanos?)?;
        let rate = u128::from(used) * 1_000_000_000 / window.as_nanos();
        u64::try_from(rate).ok()
    });
    from_cumulative.or(last.usage_nano_cores)
}

fn usage(cpu_nano_cores: u64, working_set_bytes: u64) -> Value {
    json!({
        "cpu": decimal_quantity(u128::from(cpu_nano_cores), -9),
        "memory": binary_quantity(working_set_bytes),
    })
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

fn object_labels(object: &Value) -> Value {
    object
        .pointer("/metadata/labels")
        .cloned()
        .filter(Value::is_object)
        .unwrap_or_else(|| json!({}))
}

/// A node's `NodeMetrics` (a list item: no kind), if both scrapes have its metrics.
pub fn node_metrics(node: &Value, history: &NodeHistory, now: DateTime<Utc>) -> Option<Value> {
    let window = history.window()?;
    let last = history.last.node.as_ref()?;
    let prev = history.prev.as_ref()?.node.as_ref()?;
    let cpu = cpu_nano_cores(last, Some(prev), window)?;
    Some(json!({
        "metadata": {
            "name": str_at(node, "/metadata/name"),
            "creationTimestamp": rfc3339(now),
            "labels": object_labels(node),
        },
        "timestamp": rfc3339(history.last.timestamp),
        "window": go_duration(window),
        "usage": usage(cpu, last.working_set_bytes),
    }))
}

/// A pod's `PodMetrics` (a list item: no kind), if the node's last scrape has it.
pub fn pod_metrics(pod: &Value, history: &NodeHistory, now: DateTime<Utc>) -> Option<Value> {
    let window = history.window()?;
    let namespace = str_at(pod, "/metadata/namespace");
    let name = str_at(pod, "/metadata/name");
    let key = (namespace.to_string(), name.to_string());
    let last = history.last.pods.get(&key)?;
    let uid = str_at(pod, "/metadata/uid");
    if !uid.is_empty() && !last.uid.is_empty() && uid != last.uid {
        // A pod of the same name that is gone: not this one's metrics.
        return None;
    }
    let prev = history
        .prev
        .as_ref()
        .and_then(|p| p.pods.get(&key))
        .filter(|p| p.uid == last.uid);
    let containers: Option<Vec<Value>> = last
        .containers
        .iter()
        .map(|(container, point)| {
            let earlier = prev.and_then(|p| {
                p.containers
                    .iter()
                    .find(|(c, _)| c == container)
                    .map(|(_, pt)| pt)
            });
            let cpu = cpu_nano_cores(point, earlier, window)?;
            Some(json!({"name": container, "usage": usage(cpu, point.working_set_bytes)}))
        })
        .collect();
    Some(json!({
        "metadata": {
            "name": name,
            "namespace": namespace,
            "creationTimestamp": rfc3339(now),
            "labels": object_labels(pod),
        },
        "timestamp": rfc3339(history.last.timestamp),
        "window": go_duration(window),
        "containers": containers?,
    }))
}

// ---------------------------------------------------------------------------------------------
// Formatting, as apimachinery's Quantity and Go's time.Duration print

/// A `DecimalSI` quantity of `value × 10^exponent` in canonical form: trailing zeros folded
/// into the largest SI suffix that keeps an integer (`5000000n` → `5m`, `1500000000n` → `1500m`).
pub fn decimal_quantity(value: u128, exponent: i32) -> String {
    if value == 0 {
        return "0".to_string();
    }
    let (mut mantissa, mut exponent) = (value, exponent);
    while mantissa % 10 == 0 {
        mantissa /= 10;
        exponent += 1;
    }
    // Down to a multiple of three, the suffixes' step.
    let r = exponent.rem_euclid(3);
    mantissa *= 10u128.pow(r as u32);
    exponent -= r;
    if exponent > 18 {
        mantissa *= 10u128.pow((exponent - 18) as u32);
        exponent = 18;
    }
    let suffix = match exponent {
        -9 => "n",
        -6 => "u",
        -3 => "m",
        0 => "",
        3 => "k",
        6 => "M",
        9 => "G",
        12 => "T",
        15 => "P",
        _ => "E",
    };
    format!("{mantissa}{suffix}")
}

/// A `BinarySI` quantity of bytes in canonical form: the largest power-of-1024 suffix that
/// divides it (`1263616` → `1234Ki`); below 1024 it prints as a decimal, as upstream does.
pub fn binary_quantity(bytes: u64) -> String {
    if bytes < 1024 {
        return decimal_quantity(u128::from(bytes), 0);
    }
    const SUFFIXES: [&str; 7] = ["", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei"];
    let (mut n, mut i) = (bytes, 0);
    while n % 1024 == 0 && i < SUFFIXES.len() - 1 {
        n /= 1024;
        i += 1;
    }
    format!("{n}{}", SUFFIXES[i])
}

/// A duration as Go's `time.Duration.String` prints it (`10s`, `10.062s`, `1m0.5s`, `500ms`).
pub fn go_duration(d: Duration) -> String {
    let nanos = d.as_nanos();
    if nanos == 0 {
        return "0s".to_string();
    }
    // Decimal digits of `value / 10^digits`, without trailing zeros.
    fn fraction(value: u128, digits: u32) -> String {
        let whole = value / 10u128.pow(digits);
        let rest = value % 10u128.pow(digits);
        if rest == 0 {
            return whole.to_string();
        }
        let frac = format!("{rest:0width$}", width = digits as usize);
        format!("{whole}.{}", frac.trim_end_matches('0'))
    }
    if nanos < 1_000 {
        return format!("{nanos}ns");
    }
    if nanos < 1_000_000 {
        return format!("{}µs", fraction(nanos, 3));
    }
    if nanos < 1_000_000_000 {
        return format!("{}ms", fraction(nanos, 6));
    }
    let hours = nanos / 3_600_000_000_000;
    let minutes = nanos / 60_000_000_000 % 60;
    let seconds = fraction(nanos % 60_000_000_000, 9);
    match (hours, minutes) {
        (0, 0) => format!("{seconds}s"),
        (0, m) => format!("{m}m{seconds}s"),
        (h, m) => format!("{h}h{m}m{seconds}s"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A kubelet summary as `crates/kubelet/src/server/stats.rs` writes it.
    fn summary(cpu_seconds: f64, nginx_cpu: u64, nginx_memory: u64) -> Vec<u8> {
        let node_cpu = (cpu_seconds * 1e9) as u64;
        serde_json::to_vec(&json!({
            "node": {
                "nodeName": "n1",
                "cpu": {"time": "2024-05-01T10:00:00Z", "usageNanoCores": 250_000_000u64, "usageCoreNanoSeconds": node_cpu},
                "memory": {"time": "2024-05-01T10:00:00Z", "usageBytes": 3_000_000_000u64, "workingSetBytes": 2_147_483_648u64},
            },
            "pods": [
                {
                    "podRef": {"name": "web", "namespace": "default", "uid": "u1"},
                    "startTime": "2024-05-01T09:00:00Z",
                    "containers": [
                        {
                            "name": "nginx",
                            "startTime": "2024-05-01T09:00:01Z",
                            "cpu": {"time": "2024-05-01T10:00:00Z", "usageNanoCores": 7u64, "usageCoreNanoSeconds": nginx_cpu},
                            "memory": {"time": "2024-05-01T10:00:00Z", "usageBytes": 9_000_000u64, "workingSetBytes": nginx_memory},
                        },
                        {
                            "name": "sidecar",
                            "startTime": "2024-05-01T09:00:01Z",
                            "cpu": {"usageNanoCores": 1_000_000u64, "usageCoreNanoSeconds": 5u64},
                            "memory": {"workingSetBytes": 4096u64},
                        },
                    ],
                    "cpu": {"usageNanoCores": 9u64, "usageCoreNanoSeconds": 11u64},
                    "memory": {"workingSetBytes": 12u64},
                },
                {
                    "podRef": {"name": "starting", "namespace": "default", "uid": "u2"},
                    "containers": [{"name": "c", "startTime": "2024-05-01T09:59:59Z"}],
                },
            ],
        }))
        .unwrap()
    }

    fn at(seconds: i64, millis: u32) -> DateTime<Utc> {
        DateTime::from_timestamp(1_714_557_600 + seconds, millis * 1_000_000).unwrap()
    }

    fn history() -> NodeHistory {
        let first = decode_summary(&summary(100.0, 2_000_000_000, 1_263_616), at(0, 0)).unwrap();
        let mut history = NodeHistory::new(first);
        // 10.5 s later: the node used 5.25 CPU-seconds (half a core), nginx 0.105 (10m).
        let second =
            decode_summary(&summary(105.25, 2_105_000_000, 1_267_712), at(10, 500)).unwrap();
        history.push(second);
        history
    }

    fn pod(name: &str, uid: &str) -> Value {
        json!({"metadata": {"name": name, "namespace": "default", "uid": uid, "labels": {"app": "web"}},
               "spec": {"nodeName": "n1"}, "status": {"phase": "Running"}})
    }

    #[test]
    fn quantities_print_as_apimachinery_does() {
        assert_eq!(decimal_quantity(0, -9), "0");
        assert_eq!(decimal_quantity(123_456, -9), "123456n");
        assert_eq!(decimal_quantity(5_000_000, -9), "5m");
        assert_eq!(decimal_quantity(5_100_000, -9), "5100u");
        assert_eq!(decimal_quantity(1_500_000_000, -9), "1500m");
        assert_eq!(decimal_quantity(2_000_000_000, -9), "2");
        assert_eq!(decimal_quantity(1000, 0), "1k");
        assert_eq!(binary_quantity(0), "0");
        assert_eq!(binary_quantity(512), "512");
        assert_eq!(binary_quantity(1_263_616), "1234Ki");
        assert_eq!(binary_quantity(2 << 30), "2Gi");
        assert_eq!(binary_quantity(1_234_567), "1234567");
    }

    #[test]
    fn durations_print_as_go_does() {
        assert_eq!(go_duration(Duration::from_secs(10)), "10s");
        assert_eq!(go_duration(Duration::from_millis(10_062)), "10.062s");
        assert_eq!(go_duration(Duration::from_millis(60_500)), "1m0.5s");
        assert_eq!(go_duration(Duration::from_secs(3_600)), "1h0m0s");
        assert_eq!(go_duration(Duration::from_millis(500)), "500ms");
        assert_eq!(go_duration(Duration::from_micros(1_500)), "1.5ms");
        assert_eq!(go_duration(Duration::ZERO), "0s");
    }

    #[test]
    fn summaries_decode_into_points() {
        let scrape = decode_summary(&summary(1.0, 2, 4096), at(0, 0)).unwrap();
        let node = scrape.node.unwrap();
        assert_eq!(node.cumulative_cpu_nanos, Some(1_000_000_000));
        assert_eq!(node.working_set_bytes, 2_147_483_648);
        let web = &scrape.pods[&("default".to_string(), "web".to_string())];
        assert_eq!(web.uid, "u1");
        let names: Vec<&str> = web.containers.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["nginx", "sidecar"]);
        assert!(
            !scrape
                .pods
                .contains_key(&("default".to_string(), "starting".to_string())),
            "a pod whose container has no stats yet has no metrics"
        );
        assert!(decode_summary(b"{\"pods\": []}", at(0, 0)).is_err());
    }

    #[test]
    fn node_metrics_are_rates_between_scrapes() {
        let node = json!({"metadata": {"name": "n1", "labels": {"kubernetes.io/hostname": "n1"}}});
        let item = node_metrics(&node, &history(), at(11, 0)).unwrap();
        assert_eq!(item["metadata"]["name"], "n1");
        assert_eq!(item["metadata"]["labels"]["kubernetes.io/hostname"], "n1");
        assert_eq!(
            item["metadata"]["creationTimestamp"],
            "2024-05-01T10:00:11Z"
        );
        assert_eq!(item["timestamp"], "2024-05-01T10:00:10Z");
        assert_eq!(item["window"], "10.5s");
        assert_eq!(item["usage"]["cpu"], "500m");
        assert_eq!(item["usage"]["memory"], "2Gi");
        assert!(item.get("kind").is_none(), "list items carry no kind");

        let only_one = NodeHistory::new(decode_summary(&summary(1.0, 2, 4096), at(0, 0)).unwrap());
        assert!(
            node_metrics(&node, &only_one, at(0, 0)).is_none(),
            "one scrape has no window"
        );
    }

    #[test]
    fn pod_metrics_have_every_container() {
        let item = pod_metrics(&pod("web", "u1"), &history(), at(11, 0)).unwrap();
        assert_eq!(item["metadata"]["namespace"], "default");
        assert_eq!(item["metadata"]["labels"]["app"], "web");
        assert_eq!(item["window"], "10.5s");
        let containers = item["containers"].as_array().unwrap();
        assert_eq!(containers.len(), 2);
        assert_eq!(containers[0]["name"], "nginx");
        assert_eq!(containers[0]["usage"]["cpu"], "10m");
        assert_eq!(containers[0]["usage"]["memory"], "1238Ki");
        // The sidecar's cumulative time did not move: no use, not the kubelet's rate.
        assert_eq!(containers[1]["usage"]["cpu"], "0");
        assert_eq!(containers[1]["usage"]["memory"], "4Ki");

        assert!(pod_metrics(&pod("web", "other-uid"), &history(), at(11, 0)).is_none());
        assert!(pod_metrics(&pod("nope", "u3"), &history(), at(11, 0)).is_none());
    }

    #[test]
    fn cpu_falls_back_to_the_kubelet_rate() {
        let point = |start: i64, cumulative: u64| MetricsPoint {
            start_time: Some(at(start, 0)),
            cumulative_cpu_nanos: Some(cumulative),
            usage_nano_cores: Some(42),
            working_set_bytes: 0,
        };
        let window = Duration::from_secs(2);
        assert_eq!(
            cpu_nano_cores(
                &point(0, 3_000_000_000),
                Some(&point(0, 1_000_000_000)),
                window
            ),
            Some(1_000_000_000)
        );
        assert_eq!(
            cpu_nano_cores(&point(0, 5), None, window),
            Some(42),
            "a new container"
        );
        assert_eq!(
            cpu_nano_cores(&point(5, 5), Some(&point(0, 9)), window),
            Some(42),
            "a restarted container"
        );
        assert_eq!(
            cpu_nano_cores(&point(0, 5), Some(&point(0, 9)), window),
            Some(42),
            "a reset counter"
        );
    }

    #[test]
    fn histories_keep_only_recent_windows() {
        let scrape = |s| decode_summary(&summary(1.0, 2, 4096), at(s, 0)).unwrap();
        let mut history = NodeHistory::new(scrape(0));
        history.push(scrape(30));
        assert_eq!(history.window(), Some(Duration::from_secs(30)));
        history.push(scrape(30 + MAX_WINDOW.as_secs() as i64 + 1));
        assert!(history.prev.is_none(), "a stale scrape makes no window");
    }

    #[test]
    fn paths_route_to_metrics_resources() {
        assert_eq!(
            route("/apis/metrics.k8s.io/v1beta1/nodes"),
            Some(MetricsTarget::Nodes { name: None })
        );
        assert_eq!(
            route("/apis/metrics.k8s.io/v1beta1/nodes/n1"),
            Some(MetricsTarget::Nodes {
                name: Some("n1".into())
            })
        );
        assert_eq!(
            route("/apis/metrics.k8s.io/v1beta1/pods"),
            Some(MetricsTarget::Pods {
                namespace: None,
                name: None
            })
        );
        assert_eq!(
            route("/apis/metrics.k8s.io/v1beta1/namespaces/ns/pods/p"),
            Some(MetricsTarget::Pods {
                namespace: Some("ns".into()),
                name: Some("p".into())
            })
        );
        assert_eq!(route("/apis/metrics.k8s.io/v1beta1"), None);
        assert_eq!(
            route("/apis/metrics.k8s.io/v1beta1/namespaces/ns/nodes"),
            None
        );
        assert_eq!(route("/apis/metrics.k8s.io/v1beta1/pods/p/x"), None);
        assert_eq!(route("/api/v1/nodes"), None);
    }

    #[test]
    fn discovery_lists_nodes_and_pods() {
        let list = api_resource_list();
        let resources = list["resources"].as_array().unwrap();
        assert_eq!(resources[0]["name"], "nodes");
        assert_eq!(resources[0]["kind"], "NodeMetrics");
        assert_eq!(resources[0]["namespaced"], false);
        assert_eq!(resources[1]["name"], "pods");
        assert_eq!(resources[1]["namespaced"], true);
        assert_eq!(resources[1]["verbs"], json!(["get", "list"]));
        let aggregated = aggregated_group();
        assert_eq!(aggregated["metadata"]["name"], GROUP);
        assert_eq!(
            aggregated["versions"][0]["resources"][0]["scope"],
            "Cluster"
        );
        assert_eq!(
            aggregated["versions"][0]["resources"][1]["responseKind"]["kind"],
            "PodMetrics"
        );
        assert_eq!(
            api_group()["preferredVersion"]["groupVersion"],
            GROUP_VERSION
        );
    }
}
