//! Node lifecycle controller, with upstream's taint-based eviction.
//!
//! Every monitor period it looks at each Node and its Lease in `kube-node-lease`: a node whose
//! Lease and Ready heartbeat did not move for `node_monitor_grace_period` (measured on this
//! process' clock from when it last saw either change, so clock skew does not matter) gets its
//! conditions set to Unknown ("Kubelet stopped posting node status."), and its pods Ready=False.
//!
//! Taints follow the conditions: `node.kubernetes.io/not-ready` (Ready=False) or
//! `node.kubernetes.io/unreachable` (Ready=Unknown) with effect NoSchedule at once and NoExecute
//! at upstream's eviction rate (0.1 node/s per zone; slower or stopped when most of a zone is
//! down; none at all when every node is down, which looks more like a control-plane problem);
//! the pressure conditions and `spec.unschedulable` give their NoSchedule taints. Taints go as
//! soon as the node is back.
//!
//! Pods on a node with NoExecute taints are evicted (deleted, with a DisruptionTarget condition)
//! unless they tolerate every such taint; tolerating with `tolerationSeconds` delays the eviction
//! by the shortest of them from when the taint was added.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, NodeCondition, Pod, Taint, Toleration};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, Patch, PatchParams, Preconditions};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Resource, ResourceExt};
use serde_json::{Value, json};

use crate::Context;

pub const TAINT_NOT_READY: &str = "node.kubernetes.io/not-ready";
pub const TAINT_UNREACHABLE: &str = "node.kubernetes.io/unreachable";
pub const TAINT_UNSCHEDULABLE: &str = "node.kubernetes.io/unschedulable";
const NODE_LEASE_NAMESPACE: &str = "kube-node-lease";
const ZONE_LABEL: &str = "topology.kubernetes.io/zone";
/// Writes in flight at once during a pass.
const CONCURRENCY: usize = 32;

/// Upstream's `--node-eviction-rate`, `--secondary-node-eviction-rate`,
/// `--large-cluster-size-threshold` and `--unhealthy-zone-threshold` defaults.
const EVICTION_RATE: f64 = 0.1;
const SECONDARY_EVICTION_RATE: f64 = 0.01;
const LARGE_CLUSTER_THRESHOLD: usize = 50;
const UNHEALTHY_ZONE_THRESHOLD: f64 = 0.55;

/// The NoSchedule taint each condition gives when it has this status.
const CONDITION_TAINTS: &[(&str, &str, &str)] = &[
    (
        "MemoryPressure",
        "True",
        "node.kubernetes.io/memory-pressure",
    ),
    ("DiskPressure", "True", "node.kubernetes.io/disk-pressure"),
    ("PIDPressure", "True", "node.kubernetes.io/pid-pressure"),
    (
        "NetworkUnavailable",
        "True",
        "node.kubernetes.io/network-unavailable",
    ),
];

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("updating the status of node {node}: {source}")]
    NodeStatus { node: String, source: kube::Error },
    #[error("updating the taints of node {node}: {source}")]
    Taints { node: String, source: kube::Error },
    #[error("marking pod {pod} not ready: {source}")]
    PodStatus { pod: String, source: kube::Error },
    #[error("evicting pod {pod}: {source}")]
    Evict { pod: String, source: kube::Error },
}

/// The status of a node's Ready condition: True, False or Unknown (also when missing).
pub fn ready_status(node: &Node) -> &str {
    condition(node, "Ready").map_or("Unknown", |c| c.status.as_str())
}

fn condition<'a>(node: &'a Node, type_: &str) -> Option<&'a NodeCondition> {
    node.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == type_)
}

/// The status patch that marks a silent node's conditions Unknown, or None if they already are.
pub fn unknown_conditions_patch(node: &Node, now: Timestamp) -> Option<Value> {
    let mut conditions = Vec::new();
    if condition(node, "Ready").is_none() {
        conditions.push(NodeCondition {
            type_: "Ready".into(),
            status: "Unknown".into(),
            reason: Some("NodeStatusNeverUpdated".into()),
            message: Some("Kubelet never posted node status.".into()),
            last_heartbeat_time: node.metadata.creation_timestamp.clone(),
            last_transition_time: Some(Time(now)),
        });
    }
    for type_ in ["Ready", "MemoryPressure", "DiskPressure", "PIDPressure"] {
        if let Some(c) = condition(node, type_)
            && c.status != "Unknown"
        {
            conditions.push(NodeCondition {
                status: "Unknown".into(),
                reason: Some("NodeStatusUnknown".into()),
                message: Some("Kubelet stopped posting node status.".into()),
                last_transition_time: Some(Time(now)),
                ..c.clone()
            });
        }
    }
    (!conditions.is_empty()).then(|| json!({"status": {"conditions": conditions}}))
}

fn is_managed(key: &str) -> bool {
    key == TAINT_NOT_READY
        || key == TAINT_UNREACHABLE
        || key == TAINT_UNSCHEDULABLE
        || CONDITION_TAINTS.iter().any(|(_, _, k)| *k == key)
}

/// What the taints of a node should be.
#[derive(Debug, Clone, PartialEq)]
pub struct TaintPlan {
    pub taints: Vec<Taint>,
    /// A NoExecute taint is added that was not there (counts against the eviction rate).
    pub adds_no_execute: bool,
}

/// The taints `node` should carry; None if it carries them already. A new NoExecute taint is
/// only added when `may_add_no_execute` (the eviction rate allows it); swapping not-ready for
/// unreachable (or back) is not rate limited.
pub fn plan_taints(node: &Node, may_add_no_execute: bool, now: Timestamp) -> Option<TaintPlan> {
    let current: Vec<Taint> = node
        .spec
        .as_ref()
        .and_then(|s| s.taints.clone())
        .unwrap_or_default();
    let find = |key: &str, effect: &str| {
        current
            .iter()
            .find(|t| t.key == key && t.effect == effect)
            .cloned()
    };
    let mut wanted: Vec<Taint> = current
        .iter()
        .filter(|t| !is_managed(&t.key))
        .cloned()
        .collect();
    let mut no_schedule: Vec<&str> = Vec::new();
    let no_execute = match ready_status(node) {
        "True" => None,
        "False" => Some(TAINT_NOT_READY),
        _ => Some(TAINT_UNREACHABLE),
    };
    no_schedule.extend(no_execute);
    for (type_, status, key) in CONDITION_TAINTS {
        if condition(node, type_).is_some_and(|c| c.status == *status) {
            no_schedule.push(key);
        }
    }
    if node.spec.as_ref().and_then(|s| s.unschedulable) == Some(true) {
        no_schedule.push(TAINT_UNSCHEDULABLE);
    }
    for key in no_schedule {
        wanted.push(find(key, "NoSchedule").unwrap_or(Taint {
            key: key.into(),
            effect: "NoSchedule".into(),
            ..Default::default()
        }));
    }
    let mut adds_no_execute = false;
    if let Some(key) = no_execute {
        let other = if key == TAINT_NOT_READY {
            TAINT_UNREACHABLE
        } else {
            TAINT_NOT_READY
        };
        if let Some(existing) = find(key, "NoExecute") {
            wanted.push(existing);
        } else if find(other, "NoExecute").is_some() || may_add_no_execute {
            adds_no_execute = find(other, "NoExecute").is_none();
            wanted.push(Taint {
                key: key.into(),
                effect: "NoExecute".into(),
                time_added: Some(Time(now)),
                value: None,
            });
        }
    }
    let key_of = |t: &Taint| (t.key.clone(), t.effect.clone(), t.value.clone());
    let before: HashSet<_> = current.iter().map(key_of).collect();
    let after: HashSet<_> = wanted.iter().map(key_of).collect();
    (before != after || current.len() != wanted.len()).then_some(TaintPlan {
        taints: wanted,
        adds_no_execute,
    })
}

/// Whether `toleration` tolerates `taint`, as upstream matches them.
pub fn tolerates(toleration: &Toleration, taint: &Taint) -> bool {
    if let Some(effect) = toleration.effect.as_deref()
        && !effect.is_empty()
        && effect != taint.effect
    {
        return false;
    }
    let key = toleration.key.as_deref().unwrap_or("");
    let operator = toleration.operator.as_deref().unwrap_or("Equal");
    if key.is_empty() {
        return operator == "Exists";
    }
    if key != taint.key {
        return false;
    }
    match operator {
        "Exists" => true,
        "Equal" | "" => {
            toleration.value.as_deref().unwrap_or("") == taint.value.as_deref().unwrap_or("")
        }
        _ => false,
    }
}

/// When a pod on a node with these NoExecute taints is to be evicted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Eviction {
    Never,
    /// At this time (already past means now).
    At(Timestamp),
}

/// `taints` are the node's NoExecute taints, each with when it was added.
pub fn eviction(pod: &Pod, taints: &[(Taint, Timestamp)]) -> Eviction {
    if taints.is_empty() {
        return Eviction::Never;
    }
    let tolerations = pod
        .spec
        .as_ref()
        .and_then(|s| s.tolerations.as_deref())
        .unwrap_or_default();
    let mut at: Option<Timestamp> = None;
    for (taint, added) in taints {
        let matching: Vec<&Toleration> =
            tolerations.iter().filter(|t| tolerates(t, taint)).collect();
        if matching.is_empty() {
            return Eviction::At(*added);
        }
        // Tolerated forever unless every matching toleration is time-bound.
        let Some(seconds) = matching
            .iter()
            .map(|t| t.toleration_seconds)
            .try_fold(i64::MAX, |min, s| s.map(|s| min.min(s.max(0))))
        else {
            continue;
        };
        let when = added
            .checked_add(k8s_openapi::jiff::SignedDuration::from_secs(seconds))
            .unwrap_or(*added);
        at = Some(at.map_or(when, |a| a.min(when)));
    }
    at.map_or(Eviction::Never, Eviction::At)
}

/// Upstream's zone states.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ZoneState {
    Normal,
    PartialDisruption,
    FullDisruption,
}

pub fn zone_state(ready: usize, not_ready: usize) -> ZoneState {
    if ready == 0 && not_ready > 0 {
        ZoneState::FullDisruption
    } else if not_ready > 2
        && not_ready as f64 / (ready + not_ready) as f64 >= UNHEALTHY_ZONE_THRESHOLD
    {
        ZoneState::PartialDisruption
    } else {
        ZoneState::Normal
    }
}

/// Nodes a second that may get a NoExecute taint in a zone of `size` nodes in `state`.
pub fn eviction_rate(state: ZoneState, size: usize) -> f64 {
    match state {
        ZoneState::Normal | ZoneState::FullDisruption => EVICTION_RATE,
        ZoneState::PartialDisruption if size > LARGE_CLUSTER_THRESHOLD => SECONDARY_EVICTION_RATE,
        ZoneState::PartialDisruption => 0.0,
    }
}

/// What this controller remembers of a node between passes (rebuilt after a restart: every
/// node starts with a fresh grace period).
struct Health {
    probe: Instant,
    renew_time: Option<Timestamp>,
    heartbeat: Option<Timestamp>,
}

struct Monitor {
    ctx: Arc<Context>,
    nodes: Store<Node>,
    leases: Store<Lease>,
    pods: Store<Pod>,
    health: HashMap<String, Health>,
    /// Per zone: when the next NoExecute taint may be added.
    next_taint: HashMap<String, Instant>,
    /// When a NoExecute taint without timeAdded was first seen, by (node, key).
    first_seen: HashMap<(String, String), Timestamp>,
    recorder: Recorder,
    eviction_recorder: Recorder,
}

pub async fn run(ctx: Arc<Context>) -> anyhow::Result<()> {
    let client = ctx.client.clone();
    let (leases, lease_writer) = reflector::store();
    let mut tasks = tokio::task::JoinSet::new();
    let lease_api: Api<Lease> = Api::namespaced(client.clone(), NODE_LEASE_NAMESPACE);
    tasks.spawn(
        reflector::reflector(
            lease_writer,
            watcher(lease_api, watcher::Config::default()).default_backoff(),
        )
        .for_each(|_| futures::future::ready(())),
    );
    // Nodes and pods from the controllers' shared caches.
    let nodes = ctx.informers.nodes().store().await;
    let pods = ctx.informers.pods().store().await;
    let reporter = |name: &str| Reporter {
        controller: name.into(),
        instance: None,
    };
    let mut monitor = Monitor {
        recorder: Recorder::new(client.clone(), reporter("node-controller")),
        eviction_recorder: Recorder::new(client.clone(), reporter("taint-eviction-controller")),
        ctx: ctx.clone(),
        nodes,
        leases,
        pods,
        health: HashMap::new(),
        next_taint: HashMap::new(),
        first_seen: HashMap::new(),
    };
    monitor.leases.wait_until_ready().await?;
    // Upstream monitors every 5 s; a shorter grace period needs a shorter period to be honoured.
    let period = (ctx.config.node_monitor_grace_period / 8)
        .clamp(Duration::from_millis(250), Duration::from_secs(5));
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => monitor.pass().await,
            Some(_) = tasks.join_next() => anyhow::bail!("a node lifecycle watch ended"),
        }
    }
}

fn lease_renew_time(lease: &Lease) -> Option<Timestamp> {
    lease.spec.as_ref()?.renew_time.as_ref().map(|t| t.0)
}

fn pod_key(pod: &Pod) -> String {
    format!("{}/{}", pod.namespace().unwrap_or_default(), pod.name_any())
}

impl Monitor {
    async fn pass(&mut self) {
        let grace = self.ctx.config.node_monitor_grace_period;
        let now = Instant::now();
        let wall = Timestamp::now();
        let leases: HashMap<String, Timestamp> = self
            .leases
            .state()
            .iter()
            .filter_map(|l| Some((l.name_any(), lease_renew_time(l)?)))
            .collect();
        let mut nodes = self.nodes.state();
        nodes.sort_by_key(|n| n.name_any());
        let names: HashSet<String> = nodes.iter().map(|n| n.name_any()).collect();
        self.health.retain(|name, _| names.contains(name));
        self.first_seen.retain(|(name, _), _| names.contains(name));

        // 1. Health: conditions go Unknown when nothing was heard for the grace period.
        let mut silent = Vec::new();
        for node in &nodes {
            let name = node.name_any();
            let renew_time = leases.get(&name).copied();
            let heartbeat = condition(node, "Ready")
                .and_then(|c| c.last_heartbeat_time.as_ref())
                .map(|t| t.0);
            let health = self.health.entry(name.clone()).or_insert(Health {
                probe: now,
                renew_time,
                heartbeat,
            });
            if health.renew_time != renew_time || health.heartbeat != heartbeat {
                *health = Health {
                    probe: now,
                    renew_time,
                    heartbeat,
                };
            }
            if now.duration_since(health.probe) <= grace {
                continue;
            }
            if let Some(patch) = unknown_conditions_patch(node, wall) {
                silent.push((node.clone(), patch));
            }
        }
        let this = &*self;
        futures::stream::iter(silent)
            .for_each_concurrent(CONCURRENCY, |(node, patch)| async move {
                let name = node.name_any();
                let was_ready = ready_status(&node) == "True";
                if let Err(e) = this.patch_node_status(&name, patch).await {
                    tracing::warn!(error = %e, "node lifecycle");
                    return;
                }
                tracing::info!(node = %name, grace_s = grace.as_secs_f64(), "node stopped posting status; Ready=Unknown");
                if was_ready {
                    this.node_event(&node, "NodeNotReady").await;
                }
            })
            .await;

        // Fresh view after our own writes.
        let mut nodes = self.nodes.state();
        nodes.sort_by_key(|n| n.name_any());
        let mut pods_by_node: HashMap<String, Vec<Arc<Pod>>> = HashMap::new();
        for pod in self.pods.state() {
            if let Some(node) = pod.spec.as_ref().and_then(|s| s.node_name.clone()) {
                pods_by_node.entry(node).or_default().push(pod);
            }
        }

        // 2. Zones decide whether NoExecute taints may be added.
        let zone_of = |n: &Node| n.labels().get(ZONE_LABEL).cloned().unwrap_or_default();
        let mut zones: BTreeMap<String, (usize, usize)> = BTreeMap::new();
        for node in &nodes {
            let entry = zones.entry(zone_of(node)).or_default();
            if ready_status(node) == "True" {
                entry.0 += 1;
            } else {
                entry.1 += 1;
            }
        }
        let all_down = !zones.is_empty()
            && zones.values().all(|(ready, not_ready)| {
                zone_state(*ready, *not_ready) == ZoneState::FullDisruption
            });

        // 3. Taints, and pods of nodes that are not Ready.
        let mut retaint = Vec::new();
        let mut unready_pods = Vec::new();
        for node in &nodes {
            let name = node.name_any();
            let zone = zone_of(node);
            let (ready, not_ready) = zones.get(&zone).copied().unwrap_or_default();
            let rate = eviction_rate(zone_state(ready, not_ready), ready + not_ready);
            let may_add =
                !all_down && rate > 0.0 && self.next_taint.get(&zone).is_none_or(|at| now >= *at);
            let mut plan = plan_taints(node, may_add, wall);
            if all_down {
                // Every node is down: more likely our own connectivity; evict nothing.
                let current = node
                    .spec
                    .as_ref()
                    .and_then(|s| s.taints.clone())
                    .unwrap_or_default();
                let mut taints = plan
                    .as_ref()
                    .map_or_else(|| current.clone(), |p| p.taints.clone());
                taints.retain(|t| {
                    !(t.effect == "NoExecute"
                        && (t.key == TAINT_UNREACHABLE || t.key == TAINT_NOT_READY))
                });
                plan = (taints != current).then_some(TaintPlan {
                    taints,
                    adds_no_execute: false,
                });
            }
            if let Some(plan) = plan {
                if plan.adds_no_execute {
                    self.next_taint
                        .insert(zone.clone(), now + Duration::from_secs_f64(1.0 / rate));
                }
                retaint.push((node.clone(), plan.taints));
            }
            if ready_status(node) != "True" {
                unready_pods.extend(
                    pods_by_node
                        .get(&name)
                        .map(Vec::as_slice)
                        .unwrap_or_default()
                        .iter()
                        .filter(|p| {
                            crate::util::is_pod_ready(p) && p.metadata.deletion_timestamp.is_none()
                        })
                        .cloned(),
                );
            }
        }
        let this = &*self;
        futures::stream::iter(retaint)
            .for_each_concurrent(CONCURRENCY, |(node, taints)| async move {
                match this.update_taints(&node, &taints).await {
                    Ok(()) => {
                        let keys: Vec<String> =
                            taints.iter().map(|t| format!("{}:{}", t.key, t.effect)).collect();
                        tracing::info!(node = %node.name_any(), taints = ?keys, "node taints updated");
                    }
                    // Someone else (the kubelet) wrote the node: the next pass retries.
                    Err(Error::Taints {
                        source: kube::Error::Api(e),
                        node,
                    }) if e.code == 409 => tracing::debug!(%node, "node taints: conflict"),
                    Err(e) => tracing::warn!(error = %e, "node lifecycle"),
                }
            })
            .await;
        futures::stream::iter(unready_pods)
            .for_each_concurrent(CONCURRENCY, |pod| async move {
                if let Err(e) = this.mark_pod_not_ready(&pod, wall).await {
                    tracing::warn!(error = %e, "node lifecycle");
                }
            })
            .await;

        // 4. Taint-based eviction.
        let mut evictions = Vec::new();
        for node in &nodes {
            let name = node.name_any();
            let taints: Vec<(Taint, Timestamp)> = node
                .spec
                .as_ref()
                .and_then(|s| s.taints.as_deref())
                .unwrap_or_default()
                .iter()
                .filter(|t| t.effect == "NoExecute")
                .map(|t| {
                    let added = t.time_added.as_ref().map(|t| t.0).unwrap_or_else(|| {
                        *self
                            .first_seen
                            .entry((name.clone(), t.key.clone()))
                            .or_insert(wall)
                    });
                    (t.clone(), added)
                })
                .collect();
            if taints.is_empty() {
                continue;
            }
            for pod in pods_by_node
                .get(&name)
                .map(Vec::as_slice)
                .unwrap_or_default()
            {
                if pod.metadata.deletion_timestamp.is_some() {
                    continue;
                }
                if let Eviction::At(at) = eviction(pod, &taints)
                    && at <= wall
                {
                    evictions.push((pod.clone(), name.clone()));
                }
            }
        }
        let this = &*self;
        futures::stream::iter(evictions)
            .for_each_concurrent(CONCURRENCY, |(pod, node)| async move {
                if let Err(e) = this.evict(&pod, &node).await {
                    tracing::warn!(error = %e, "taint eviction");
                }
            })
            .await;
    }

    async fn patch_node_status(&self, name: &str, patch: Value) -> Result<(), Error> {
        let api: Api<Node> = Api::all(self.ctx.client.clone());
        api.patch_status(name, &PatchParams::default(), &Patch::Strategic(patch))
            .await
            .map(|_| ())
            .map_err(|source| Error::NodeStatus {
                node: name.into(),
                source,
            })
    }

    async fn update_taints(&self, node: &Node, taints: &[Taint]) -> Result<(), Error> {
        let api: Api<Node> = Api::all(self.ctx.client.clone());
        let name = node.name_any();
        // The resourceVersion makes this a compare-and-swap: a conflict is retried next pass.
        let patch = json!({
            "metadata": {"resourceVersion": node.resource_version()},
            "spec": {"taints": taints},
        });
        api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .map(|_| ())
            .map_err(|source| Error::Taints { node: name, source })
    }

    async fn mark_pod_not_ready(&self, pod: &Pod, now: Timestamp) -> Result<(), Error> {
        let api: Api<Pod> = Api::namespaced(
            self.ctx.client.clone(),
            &pod.namespace().unwrap_or_default(),
        );
        let patch = json!({"status": {"conditions": [{
            "type": "Ready",
            "status": "False",
            "lastTransitionTime": Time(now),
        }]}});
        match api
            .patch_status(
                &pod.name_any(),
                &PatchParams::default(),
                &Patch::Strategic(patch),
            )
            .await
        {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 404 => return Ok(()),
            Err(source) => {
                return Err(Error::PodStatus {
                    pod: pod_key(pod),
                    source,
                });
            }
        }
        tracing::info!(pod = %pod_key(pod), "marked pod not ready: its node is not ready");
        let event = Event {
            type_: EventType::Warning,
            reason: "NodeNotReady".into(),
            note: Some("Node is not ready".into()),
            action: "MarkPodNotReady".into(),
            secondary: None,
        };
        if let Err(e) = self.recorder.publish(&event, &pod.object_ref(&())).await {
            tracing::debug!(error = %e, "recording event");
        }
        Ok(())
    }

    async fn evict(&self, pod: &Pod, node: &str) -> Result<(), Error> {
        let key = pod_key(pod);
        let api: Api<Pod> = Api::namespaced(
            self.ctx.client.clone(),
            &pod.namespace().unwrap_or_default(),
        );
        let name = pod.name_any();
        let condition = json!({"status": {"conditions": [{
            "type": "DisruptionTarget",
            "status": "True",
            "reason": "DeletionByTaintManager",
            "message": "Taint manager: deleting due to NoExecute taint",
            "lastTransitionTime": Time(Timestamp::now()),
        }]}});
        if let Err(e) = api
            .patch_status(&name, &PatchParams::default(), &Patch::Strategic(condition))
            .await
        {
            tracing::debug!(pod = %key, error = %e, "adding the DisruptionTarget condition");
        }
        let params = DeleteParams {
            preconditions: pod.uid().map(|uid| Preconditions {
                uid: Some(uid),
                resource_version: None,
            }),
            ..Default::default()
        };
        match api.delete(&name, &params).await {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => return Ok(()),
            Err(source) => return Err(Error::Evict { pod: key, source }),
        }
        tracing::info!(pod = %key, node, "evicted pod: it does not tolerate the node's NoExecute taints");
        let event = Event {
            type_: EventType::Normal,
            reason: "TaintManagerEviction".into(),
            note: Some(format!("Marking for deletion Pod {key}")),
            action: "Delete".into(),
            secondary: None,
        };
        if let Err(e) = self
            .eviction_recorder
            .publish(&event, &pod.object_ref(&()))
            .await
        {
            tracing::debug!(error = %e, "recording event");
        }
        Ok(())
    }

    async fn node_event(&self, node: &Node, status: &str) {
        let event = Event {
            type_: EventType::Normal,
            reason: status.into(),
            note: Some(format!("Node {} status is now: {status}", node.name_any())),
            action: "NodeStatusChange".into(),
            secondary: None,
        };
        if let Err(e) = self.recorder.publish(&event, &node.object_ref(&())).await {
            tracing::debug!(error = %e, "recording event");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(ready: Option<&str>, taints: Value) -> Node {
        let conditions: Vec<Value> = ready
            .map(|s| vec![json!({"type": "Ready", "status": s, "reason": "KubeletReady", "lastHeartbeatTime": "2024-01-01T00:00:00Z"}),
                          json!({"type": "MemoryPressure", "status": "False"})])
            .unwrap_or_default();
        serde_json::from_value(json!({
            "metadata": {"name": "n1", "creationTimestamp": "2024-01-01T00:00:00Z"},
            "spec": {"taints": taints},
            "status": {"conditions": conditions},
        }))
        .unwrap()
    }

    fn ts(s: i64) -> Timestamp {
        Timestamp::from_second(1_704_067_200 + s).unwrap()
    }

    fn keys(plan: &TaintPlan) -> Vec<String> {
        let mut k: Vec<String> = plan
            .taints
            .iter()
            .map(|t| format!("{}:{}", t.key, t.effect))
            .collect();
        k.sort();
        k
    }

    #[test]
    fn silent_node_conditions_go_unknown() {
        let n = node(Some("True"), json!([]));
        let patch = unknown_conditions_patch(&n, ts(100)).unwrap();
        let conditions = patch["status"]["conditions"].as_array().unwrap();
        assert_eq!(conditions.len(), 2);
        let ready = &conditions[0];
        assert_eq!(ready["type"], "Ready");
        assert_eq!(ready["status"], "Unknown");
        assert_eq!(ready["reason"], "NodeStatusUnknown");
        assert_eq!(ready["message"], "Kubelet stopped posting node status.");
        assert_eq!(ready["lastHeartbeatTime"], "2024-01-01T00:00:00Z");
        let unknown = node(Some("Unknown"), json!([]));
        let mut unknown = unknown;
        unknown
            .status
            .as_mut()
            .unwrap()
            .conditions
            .as_mut()
            .unwrap()[1]
            .status = "Unknown".into();
        assert_eq!(unknown_conditions_patch(&unknown, ts(100)), None);
        let never = node(None, json!([]));
        let patch = unknown_conditions_patch(&never, ts(100)).unwrap();
        assert_eq!(
            patch["status"]["conditions"][0]["reason"],
            "NodeStatusNeverUpdated"
        );
    }

    #[test]
    fn taints_follow_the_ready_condition() {
        let n = node(
            Some("Unknown"),
            json!([{"key": "dedicated", "value": "x", "effect": "NoSchedule"}]),
        );
        let plan = plan_taints(&n, true, ts(5)).unwrap();
        assert_eq!(
            keys(&plan),
            [
                "dedicated:NoSchedule",
                "node.kubernetes.io/unreachable:NoExecute",
                "node.kubernetes.io/unreachable:NoSchedule"
            ]
        );
        assert!(plan.adds_no_execute);
        let no_execute = plan
            .taints
            .iter()
            .find(|t| t.effect == "NoExecute")
            .unwrap();
        assert_eq!(no_execute.time_added, Some(Time(ts(5))));

        // Rate limited: the NoSchedule taint comes at once, NoExecute later.
        let plan = plan_taints(&n, false, ts(5)).unwrap();
        assert_eq!(
            keys(&plan),
            [
                "dedicated:NoSchedule",
                "node.kubernetes.io/unreachable:NoSchedule"
            ]
        );

        // Already tainted: nothing to do.
        let tainted = node(
            Some("Unknown"),
            json!([{"key": TAINT_UNREACHABLE, "effect": "NoSchedule"}, {"key": TAINT_UNREACHABLE, "effect": "NoExecute", "timeAdded": "2024-01-01T00:00:01Z"}]),
        );
        assert_eq!(plan_taints(&tainted, true, ts(9)), None);

        // Back to Ready: our taints go, others stay.
        let mut back = tainted.clone();
        back.status.as_mut().unwrap().conditions.as_mut().unwrap()[0].status = "True".into();
        assert_eq!(
            keys(&plan_taints(&back, false, ts(9)).unwrap()),
            Vec::<String>::new()
        );

        // Ready=False: not-ready, swapped in for unreachable without waiting for the rate.
        let mut not_ready = tainted.clone();
        not_ready
            .status
            .as_mut()
            .unwrap()
            .conditions
            .as_mut()
            .unwrap()[0]
            .status = "False".into();
        let plan = plan_taints(&not_ready, false, ts(9)).unwrap();
        assert_eq!(
            keys(&plan),
            [
                "node.kubernetes.io/not-ready:NoExecute",
                "node.kubernetes.io/not-ready:NoSchedule"
            ]
        );
        assert!(!plan.adds_no_execute);
    }

    #[test]
    fn cordoned_and_pressured_nodes_get_no_schedule_taints() {
        let mut n = node(Some("True"), json!([]));
        n.spec.as_mut().unwrap().unschedulable = Some(true);
        n.status.as_mut().unwrap().conditions.as_mut().unwrap()[1].status = "True".into();
        let plan = plan_taints(&n, true, ts(0)).unwrap();
        assert_eq!(
            keys(&plan),
            [
                "node.kubernetes.io/memory-pressure:NoSchedule",
                "node.kubernetes.io/unschedulable:NoSchedule"
            ]
        );
    }

    fn pod(tolerations: Value) -> Pod {
        serde_json::from_value(json!({"metadata": {"name": "p", "namespace": "d"}, "spec": {"containers": [], "tolerations": tolerations}})).unwrap()
    }

    fn unreachable() -> Vec<(Taint, Timestamp)> {
        vec![(
            Taint {
                key: TAINT_UNREACHABLE.into(),
                effect: "NoExecute".into(),
                ..Default::default()
            },
            ts(10),
        )]
    }

    #[test]
    fn eviction_honours_tolerations() {
        assert_eq!(
            eviction(&pod(json!([])), &unreachable()),
            Eviction::At(ts(10))
        );
        let timed = pod(json!([
            {"key": TAINT_UNREACHABLE, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300},
            {"key": TAINT_NOT_READY, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 2},
        ]));
        assert_eq!(eviction(&timed, &unreachable()), Eviction::At(ts(310)));
        let forever = pod(json!([{"operator": "Exists"}]));
        assert_eq!(eviction(&forever, &unreachable()), Eviction::Never);
        let other_effect =
            pod(json!([{"key": TAINT_UNREACHABLE, "operator": "Exists", "effect": "NoSchedule"}]));
        assert_eq!(
            eviction(&other_effect, &unreachable()),
            Eviction::At(ts(10))
        );
        assert_eq!(eviction(&pod(json!([])), &[]), Eviction::Never);
    }

    #[test]
    fn toleration_matching() {
        let taint = Taint {
            key: "k".into(),
            value: Some("v".into()),
            effect: "NoExecute".into(),
            ..Default::default()
        };
        let t = |v: Value| -> Toleration { serde_json::from_value(v).unwrap() };
        assert!(tolerates(&t(json!({"key": "k", "value": "v"})), &taint));
        assert!(!tolerates(&t(json!({"key": "k", "value": "w"})), &taint));
        assert!(tolerates(
            &t(json!({"key": "k", "operator": "Exists"})),
            &taint
        ));
        assert!(tolerates(&t(json!({"operator": "Exists"})), &taint));
        assert!(!tolerates(
            &t(json!({"key": "k", "operator": "Exists", "effect": "NoSchedule"})),
            &taint
        ));
    }

    #[test]
    fn zones_slow_down_evictions_when_many_nodes_are_down() {
        assert_eq!(zone_state(3, 2), ZoneState::Normal);
        assert_eq!(zone_state(2, 3), ZoneState::PartialDisruption);
        assert_eq!(zone_state(0, 2), ZoneState::FullDisruption);
        assert_eq!(eviction_rate(ZoneState::Normal, 5), 0.1);
        assert_eq!(eviction_rate(ZoneState::PartialDisruption, 5), 0.0);
        assert_eq!(eviction_rate(ZoneState::PartialDisruption, 100), 0.01);
    }
}
