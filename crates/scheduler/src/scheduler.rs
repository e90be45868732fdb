//! The scheduling loop: pop a pod, run the framework on a snapshot, assume the pod on the
//! chosen node and bind it asynchronously; on failure, preempt if that helps, record why and
//! requeue. Informer events arrive on a channel and are applied between cycles, so each cycle
//! sees a consistent snapshot.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Container, ContainerImage, Namespace, Node, Pod};
use k8s_openapi::api::scheduling::v1::PriorityClass;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::Resource;
use kube::api::{Api, DeleteParams, Patch, PatchParams, Preconditions};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
use serde_json::json;
use tokio::sync::{Semaphore, mpsc};

use crate::cache::{Cache, Snapshot};
use crate::framework::{
    Code, CycleState, Diagnosis, FitError, Framework, NodeInfo, PodInfo, PostFilterResult, Status,
};
use crate::metrics::{self, RESULT_ERROR, RESULT_SCHEDULED, RESULT_UNSCHEDULABLE};
use crate::queue::{ClusterEvent, QueuedPodInfo, SchedulingQueue};

pub const DEFAULT_SCHEDULER_NAME: &str = "default-scheduler";
/// Below this many nodes every node is evaluated.
pub const MIN_FEASIBLE_NODES_TO_FIND: usize = 100;
/// The adaptive percentage never goes below this.
pub const MIN_FEASIBLE_NODES_PERCENTAGE_TO_FIND: usize = 5;
/// Assumed pods whose binding returned but was never confirmed are dropped after this.
pub const ASSUMED_POD_TTL: Duration = Duration::from_secs(30);
/// Binding calls in flight at once.
pub const MAX_CONCURRENT_BINDINGS: usize = 256;
pub const NO_NODES_AVAILABLE: &str = "no nodes available to schedule pods";

/// How many nodes to evaluate (upstream's `numFeasibleNodesToFind`): all of a small cluster;
/// of a large one a share that shrinks as it grows (50% minus 1% per 125 nodes, at least 5%),
/// never fewer than 100. `percentage` > 0 fixes the share.
pub fn num_feasible_nodes_to_find(num_all_nodes: usize, percentage: usize) -> usize {
    if num_all_nodes < MIN_FEASIBLE_NODES_TO_FIND || percentage >= 100 {
        return num_all_nodes;
    }
    let pct = if percentage == 0 {
        50usize
            .saturating_sub(num_all_nodes / 125)
            .max(MIN_FEASIBLE_NODES_PERCENTAGE_TO_FIND)
    } else {
        percentage
    };
    (num_all_nodes * pct / 100).max(MIN_FEASIBLE_NODES_TO_FIND)
}

/// What the cache keeps of a pod on a node: what scheduling reads of pods other than the one
/// being scheduled (metadata, the spec that decides placement, requests, ports, images, phase
/// and start time), without volumes, container statuses and the rest of the containers, which
/// are most of a pod's memory. With thousands of pods that is a large part of the scheduler's.
pub fn trim_bound_pod(mut pod: Pod) -> Pod {
    if let Some(spec) = pod.spec.as_mut() {
        spec.volumes = None;
        let trim = |c: &mut Container| {
            *c = Container {
                name: std::mem::take(&mut c.name),
                image: c.image.take(),
                ports: c.ports.take(),
                resources: c.resources.take(),
                restart_policy: c.restart_policy.take(),
                ..Default::default()
            }
        };
        spec.containers.iter_mut().for_each(trim);
        spec.init_containers.iter_mut().flatten().for_each(trim);
        spec.ephemeral_containers = None;
    }
    if let Some(status) = pod.status.as_mut() {
        status.container_statuses = None;
        status.init_container_statuses = None;
        status.ephemeral_container_statuses = None;
    }
    pod
}

/// Whether this scheduler is responsible for the pod.
pub fn responsible_for(pod: &Pod) -> bool {
    let name = pod
        .spec
        .as_ref()
        .and_then(|s| s.scheduler_name.as_deref())
        .unwrap_or("");
    name.is_empty() || name == DEFAULT_SCHEDULER_NAME
}

fn is_terminal(pod: &Pod) -> bool {
    matches!(
        pod.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded") | Some("Failed")
    )
}

fn is_gated(pod: &Pod) -> bool {
    pod.spec
        .as_ref()
        .and_then(|s| s.scheduling_gates.as_ref())
        .is_some_and(|g| !g.is_empty())
}

/// The pod's priority: its PriorityClass's value if the class is known (the API server may
/// not have resolved it), else spec.priority, else the global default class, else 0.
pub fn resolve_priority(pod: &Pod, classes: &Store<PriorityClass>) -> i32 {
    let spec = pod.spec.as_ref();
    if let Some(class) = spec
        .and_then(|s| s.priority_class_name.as_deref())
        .filter(|c| !c.is_empty())
        && let Some(pc) = classes.get(&ObjectRef::new(class))
    {
        return pc.value;
    }
    if let Some(p) = spec.and_then(|s| s.priority) {
        return p;
    }
    classes
        .state()
        .iter()
        .find(|pc| pc.global_default == Some(true))
        .map(|pc| pc.value)
        .unwrap_or(0)
}

/// The result of one scheduling algorithm run.
#[derive(Debug)]
pub enum ScheduleError {
    /// The pod fits nowhere.
    Fit(Box<FitError>),
    NoNodes,
    Internal(Status),
}

/// Everything that reaches the loop: informer events and outcomes of asynchronous work.
// Each message moves once through the channel; boxing would only add allocations.
#[allow(clippy::large_enum_variant)]
pub enum Msg {
    Node(watcher::Event<Node>),
    Pod(watcher::Event<Pod>),
    Namespace(watcher::Event<Namespace>),
    /// A PriorityClass changed (the store has it); pending pods' priorities are recomputed.
    PriorityClassesChanged,
    /// A claim, volume or StorageClass changed (the stores have it): pods VolumeBinding
    /// rejected are retried.
    StorageChanged,
    Bound {
        queued: QueuedPodInfo,
        node: String,
        status: Status,
        state: CycleState,
        cycle: u64,
    },
}

/// Whether a node update changes what scheduling reads: labels, spec (taints,
/// unschedulable), allocatable or images.
pub fn scheduling_relevant_change(old: &Node, new: &Node) -> bool {
    fn status(n: &Node) -> Option<StatusFields<'_>> {
        n.status
            .as_ref()
            .map(|s| (&s.allocatable, &s.capacity, &s.images))
    }
    old.metadata.labels != new.metadata.labels || old.spec != new.spec || status(old) != status(new)
}

type Quantities =
    std::collections::BTreeMap<String, k8s_openapi::apimachinery::pkg::api::resource::Quantity>;
/// The node status fields scheduling reads: allocatable, capacity, images.
type StatusFields<'a> = (
    &'a Option<Quantities>,
    &'a Option<Quantities>,
    &'a Option<Vec<ContainerImage>>,
);

/// Picks among equal best scores at random, as upstream's `selectHost`.
pub fn select_host(scores: &[i64]) -> Option<usize> {
    let mut best: Option<usize> = None;
    let mut ties = 0u32;
    for (i, s) in scores.iter().enumerate() {
        match best {
            Some(b) if *s < scores[b] => {}
            Some(b) if *s == scores[b] => {
                ties += 1;
                if rand::random_range(0..ties) == 0 {
                    best = Some(i);
                }
            }
            _ => {
                best = Some(i);
                ties = 1;
            }
        }
    }
    best
}

/// The scheduling algorithm proper (no IO): filter, score, pick.
pub struct Algorithm {
    pub framework: Arc<Framework>,
    /// 0: adaptive, as upstream's default.
    pub percentage_of_nodes_to_score: usize,
    next_start_node_index: usize,
}

pub struct ScheduleResult {
    pub node: String,
    pub evaluated_nodes: usize,
    pub feasible_nodes: usize,
}

impl Algorithm {
    pub fn new(framework: Arc<Framework>) -> Algorithm {
        Algorithm {
            framework,
            percentage_of_nodes_to_score: 0,
            next_start_node_index: 0,
        }
    }

    pub fn schedule(
        &mut self,
        state: &mut CycleState,
        pod: &PodInfo,
        snapshot: &Snapshot,
        nominated: &HashMap<String, Vec<Arc<PodInfo>>>,
    ) -> Result<ScheduleResult, ScheduleError> {
        let n = snapshot.num_nodes();
        if n == 0 {
            return Err(ScheduleError::NoNodes);
        }
        let fw = &self.framework;
        let status = fw.run_pre_filter(state, pod, snapshot);
        if !status.is_success() {
            if status.code == Code::Error {
                return Err(ScheduleError::Internal(status));
            }
            let mut diagnosis = Diagnosis {
                pre_filter_msg: Some(status.message()),
                ..Default::default()
            };
            diagnosis.unschedulable_plugins.insert(status.plugin);
            for node in &snapshot.node_infos {
                diagnosis
                    .node_to_status
                    .insert(node.name.clone(), status.clone());
            }
            return Err(ScheduleError::Fit(Box::new(FitError {
                num_all_nodes: n,
                diagnosis,
            })));
        }
        let filters = fw.active_filters(state);
        let wanted = num_feasible_nodes_to_find(n, self.percentage_of_nodes_to_score);
        let mut feasible: Vec<Arc<NodeInfo>> = Vec::with_capacity(wanted.min(n));
        let mut diagnosis = Diagnosis::default();
        let start = self.next_start_node_index % n;
        let mut processed = 0;
        let empty = Vec::new();
        for i in 0..n {
            if feasible.len() >= wanted {
                break;
            }
            processed += 1;
            let node = &snapshot.node_infos[(start + i) % n];
            // Usually no pod is nominated anywhere: no lookup per node then.
            let nominated_here = if nominated.is_empty() {
                &empty
            } else {
                nominated.get(&node.name).unwrap_or(&empty)
            };
            let status = if nominated_here.is_empty() {
                filters.run(state, pod, node)
            } else {
                fw.run_filter_with_nominated(state, pod, node, nominated_here, snapshot)
            };
            match status.code {
                Code::Success => feasible.push(node.clone()),
                Code::Error => return Err(ScheduleError::Internal(status)),
                _ => {
                    diagnosis.unschedulable_plugins.insert(status.plugin);
                    diagnosis.node_to_status.insert(node.name.clone(), status);
                }
            }
        }
        self.next_start_node_index = (start + processed) % n;
        if feasible.is_empty() {
            return Err(ScheduleError::Fit(Box::new(FitError {
                num_all_nodes: n,
                diagnosis,
            })));
        }
        if feasible.len() == 1 {
            return Ok(ScheduleResult {
                node: feasible[0].name.clone(),
                evaluated_nodes: processed,
                feasible_nodes: 1,
            });
        }
        let scores = fw
            .run_score(state, pod, &feasible, snapshot)
            .map_err(ScheduleError::Internal)?;
        let best = select_host(&scores).expect("feasible nodes are not empty");
        Ok(ScheduleResult {
            node: feasible[best].name.clone(),
            evaluated_nodes: processed,
            feasible_nodes: feasible.len(),
        })
    }
}

/// A unit of API work done off the scheduling loop.
enum Work {
    Event {
        pod: Arc<Pod>,
        type_: EventType,
        reason: &'static str,
        action: &'static str,
        note: String,
        related: Option<Arc<Pod>>,
    },
}

pub struct Scheduler {
    client: kube::Client,
    algorithm: Algorithm,
    cache: Cache,
    snapshot: Snapshot,
    queue: SchedulingQueue,
    /// Pods nominated to nodes by preemption: node → pods, and pod key → node.
    nominated: HashMap<String, Vec<Arc<PodInfo>>>,
    nominations: HashMap<String, String>,
    priority_classes: Store<PriorityClass>,
    /// The latest version seen of each pod without a node (what a failed attempt's status
    /// update compares with).
    unassigned: HashMap<String, Arc<Pod>>,
    tx: mpsc::UnboundedSender<Msg>,
    bindings: Arc<Semaphore>,
    work: mpsc::Sender<Work>,
    pods_synced: bool,
    nodes_synced: bool,
    /// Keys seen during a relist (between Init and InitDone).
    relist_pods: Option<HashSet<String>>,
    relist_nodes: Option<HashSet<String>>,
}

impl Scheduler {
    pub fn new(
        client: kube::Client,
        identity: &str,
        framework: Arc<Framework>,
        priority_classes: Store<PriorityClass>,
        tx: mpsc::UnboundedSender<Msg>,
    ) -> Scheduler {
        let recorder = Recorder::new(
            client.clone(),
            Reporter {
                controller: DEFAULT_SCHEDULER_NAME.into(),
                instance: Some(identity.to_string()),
            },
        );
        let work = spawn_workers(client.clone(), recorder, identity);
        Scheduler {
            client,
            algorithm: Algorithm::new(framework),
            cache: Cache::new(),
            snapshot: Snapshot::default(),
            queue: SchedulingQueue::new(),
            nominated: HashMap::new(),
            nominations: HashMap::new(),
            priority_classes,
            unassigned: HashMap::new(),
            tx,
            bindings: Arc::new(Semaphore::new(MAX_CONCURRENT_BINDINGS)),
            work,
            pods_synced: false,
            nodes_synced: false,
            relist_pods: None,
            relist_nodes: None,
        }
    }

    /// Process messages and schedule pods until the channel closes.
    pub async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Msg>) {
        let mut last_flush = Instant::now();
        let mut last_yield = Instant::now();
        loop {
            loop {
                match rx.try_recv() {
                    Ok(msg) => self.handle(msg),
                    Err(mpsc::error::TryRecvError::Empty) => break,
                    Err(mpsc::error::TryRecvError::Disconnected) => return,
                }
            }
            let now = Instant::now();
            self.queue.flush_backoff_completed(now);
            if now.duration_since(last_flush) >= Duration::from_secs(1) {
                self.queue.flush_unschedulable_left_over(now);
                tracing::debug!(
                    queued = self.queue.len(),
                    unschedulable = self.queue.unschedulable_len(),
                    nodes = self.snapshot.num_nodes(),
                    "scheduling queue"
                );
                for key in self.cache.cleanup_assumed(now, ASSUMED_POD_TTL) {
                    tracing::warn!(pod = %key, "assumed pod expired without its binding being observed");
                }
                last_flush = now;
            }
            if self.pods_synced
                && self.nodes_synced
                && let Some(queued) = self.queue.pop()
            {
                self.schedule_one(queued);
                // Let binding tasks and the informers run now and then; yielding after every
                // pod would queue each cycle behind every other task of a busy runtime.
                if last_yield.elapsed() >= Duration::from_millis(5) {
                    tokio::task::yield_now().await;
                    last_yield = Instant::now();
                }
                continue;
            }
            let mut wake = now + Duration::from_secs(1);
            if let Some(t) = self.queue.next_backoff_expiry() {
                wake = wake.min(t);
            }
            tokio::select! {
                msg = rx.recv() => match msg {
                    Some(msg) => self.handle(msg),
                    None => return,
                },
                _ = tokio::time::sleep_until(wake.into()) => {}
            }
        }
    }

    fn pod_info(&self, pod: Pod) -> Arc<PodInfo> {
        self.shared_pod_info(Arc::new(pod))
    }

    fn shared_pod_info(&self, pod: Arc<Pod>) -> Arc<PodInfo> {
        let priority = resolve_priority(&pod, &self.priority_classes);
        Arc::new(PodInfo::new(pod, priority))
    }

    fn set_nomination(&mut self, info: &Arc<PodInfo>, node: Option<&str>) {
        if let Some(old) = self.nominations.remove(&info.key)
            && let Some(list) = self.nominated.get_mut(&old)
        {
            list.retain(|p| p.key != info.key);
            if list.is_empty() {
                self.nominated.remove(&old);
            }
        }
        if let Some(node) = node {
            self.nominations.insert(info.key.clone(), node.to_string());
            self.nominated
                .entry(node.to_string())
                .or_default()
                .push(info.clone());
        }
    }

    fn clear_nomination(&mut self, key: &str) {
        if let Some(old) = self.nominations.remove(key)
            && let Some(list) = self.nominated.get_mut(&old)
        {
            list.retain(|p| p.key != key);
            if list.is_empty() {
                self.nominated.remove(&old);
            }
        }
    }

    fn handle(&mut self, msg: Msg) {
        let now = Instant::now();
        match msg {
            Msg::Node(event) => self.handle_node(event, now),
            Msg::Pod(event) => self.handle_pod(event, now),
            Msg::Namespace(event) => match event {
                watcher::Event::Apply(ns) | watcher::Event::InitApply(ns) => {
                    let name = ns.metadata.name.clone().unwrap_or_default();
                    self.cache
                        .set_namespace(&name, Some(ns.metadata.labels.unwrap_or_default()));
                }
                watcher::Event::Delete(ns) => {
                    self.cache
                        .set_namespace(ns.metadata.name.as_deref().unwrap_or(""), None);
                }
                watcher::Event::Init | watcher::Event::InitDone => {}
            },
            Msg::StorageChanged => {
                self.queue
                    .move_all_to_active_or_backoff(ClusterEvent::StorageChange, now);
            }
            Msg::PriorityClassesChanged => {
                // Recompute pending pods' priorities (the order of the active queue).
                let pending: Vec<Arc<PodInfo>> = self.queue.pods().cloned().collect();
                for p in pending {
                    let info = self.pod_info((*p.pod).clone());
                    if info.priority != p.priority {
                        self.queue.update(info, now);
                    }
                }
            }
            Msg::Bound {
                queued,
                node,
                status,
                mut state,
                cycle,
            } => {
                let key = queued.pod.key.clone();
                if status.is_success() {
                    self.cache.finish_binding(&key, now);
                    self.queue.done(&key);
                    metrics::metrics()
                        .e2e_scheduling_duration
                        .observe(now.duration_since(queued.initial_attempt).as_secs_f64());
                    tracing::debug!(pod = %key, %node, "bound");
                    self.record(
                        &queued.pod.pod,
                        EventType::Normal,
                        "Scheduled",
                        "Binding",
                        format!("Successfully assigned {key} to {node}"),
                        None,
                    );
                } else {
                    metrics::metrics().binding_errors.inc();
                    tracing::warn!(pod = %key, %node, error = %status.message(), "binding failed");
                    self.cache.forget_pod(&key);
                    self.algorithm
                        .framework
                        .run_unreserve(&mut state, &queued.pod, &node);
                    self.handle_failure(queued, cycle, Err(ScheduleError::Internal(status)), None);
                }
            }
        }
    }

    fn handle_node(&mut self, event: watcher::Event<Node>, now: Instant) {
        match event {
            watcher::Event::Init => self.relist_nodes = Some(HashSet::new()),
            watcher::Event::InitApply(node) | watcher::Event::Apply(node) => {
                let name = node.metadata.name.clone().unwrap_or_default();
                if let Some(seen) = self.relist_nodes.as_mut() {
                    seen.insert(name.clone());
                }
                let event = match self.cache.node(&name) {
                    None => ClusterEvent::NodeAdd,
                    // Heartbeats (conditions, times) change nothing the plugins read.
                    Some(old) if !scheduling_relevant_change(old, &node) => return,
                    Some(_) => ClusterEvent::NodeUpdate,
                };
                self.cache.add_or_update_node(Arc::new(node));
                self.queue.move_all_to_active_or_backoff(event, now);
            }
            watcher::Event::Delete(node) => {
                self.cache
                    .remove_node(node.metadata.name.as_deref().unwrap_or(""));
            }
            watcher::Event::InitDone => {
                if let Some(seen) = self.relist_nodes.take() {
                    for name in self.cache.node_names() {
                        if !seen.contains(&name) {
                            self.cache.remove_node(&name);
                        }
                    }
                }
                if !self.nodes_synced {
                    tracing::info!(
                        nodes = self.cache.node_names().len(),
                        "scheduler node cache synced"
                    );
                }
                self.nodes_synced = true;
            }
        }
    }

    fn handle_pod(&mut self, event: watcher::Event<Pod>, now: Instant) {
        match event {
            watcher::Event::Init => self.relist_pods = Some(HashSet::new()),
            watcher::Event::InitApply(pod) | watcher::Event::Apply(pod) => {
                if let Some(seen) = self.relist_pods.as_mut() {
                    seen.insert(crate::framework::types::pod_key(&pod));
                }
                self.apply_pod(pod, now);
            }
            watcher::Event::Delete(pod) => {
                let key = crate::framework::types::pod_key(&pod);
                self.delete_pod(&key, now);
            }
            watcher::Event::InitDone => {
                if let Some(seen) = self.relist_pods.take() {
                    self.unassigned.retain(|key, _| seen.contains(key));
                    for key in self.cache.bound_pod_keys() {
                        if !seen.contains(&key) {
                            self.delete_pod(&key, now);
                        }
                    }
                    let queued: Vec<String> = self.queue.pods().map(|p| p.key.clone()).collect();
                    for key in queued {
                        if !seen.contains(&key) {
                            self.queue.delete(&key);
                        }
                    }
                }
                if !self.pods_synced {
                    tracing::info!(pending = self.queue.len(), "scheduler pod cache synced");
                }
                self.pods_synced = true;
            }
        }
    }

    fn delete_pod(&mut self, key: &str, now: Instant) {
        self.unassigned.remove(key);
        self.queue.delete(key);
        self.clear_nomination(key);
        if self.cache.contains_pod(key) {
            self.cache.remove_pod(key);
            self.queue
                .move_all_to_active_or_backoff(ClusterEvent::AssignedPodDelete, now);
        }
    }

    fn apply_pod(&mut self, pod: Pod, now: Instant) {
        let key = crate::framework::types::pod_key(&pod);
        let assigned = pod
            .spec
            .as_ref()
            .and_then(|s| s.node_name.as_deref())
            .is_some_and(|n| !n.is_empty());
        if assigned {
            self.unassigned.remove(&key);
            self.queue.delete(&key);
            self.clear_nomination(&key);
            if is_terminal(&pod) {
                // Finished pods use nothing.
                self.delete_pod(&key, now);
                return;
            }
            let known = self.cache.pod(&key).cloned();
            let was_assumed = self.cache.is_assumed(&key);
            let info = self.pod_info(trim_bound_pod(pod));
            let labels_changed = known
                .as_ref()
                .is_none_or(|k| k.pod.metadata.labels != info.pod.metadata.labels);
            self.cache.add_or_update_pod(info);
            if labels_changed && !was_assumed {
                self.queue
                    .move_all_to_active_or_backoff(ClusterEvent::AssignedPodAddOrUpdate, now);
            }
            return;
        }
        let pod = Arc::new(pod);
        self.unassigned.insert(key.clone(), pod.clone());
        if !responsible_for(&pod) || is_terminal(&pod) || pod.metadata.deletion_timestamp.is_some()
        {
            self.queue.delete(&key);
            self.clear_nomination(&key);
            return;
        }
        if self.cache.is_assumed(&key) {
            // Being bound by us; the event is our own older state.
            return;
        }
        if is_gated(&pod) {
            self.queue.delete(&key);
            return;
        }
        let info = self.shared_pod_info(pod);
        let nominated = info.nominated_node().map(str::to_string);
        match nominated {
            Some(n) => self.set_nomination(&info, Some(&n)),
            None => self.clear_nomination(&info.key),
        }
        if self.queue.contains(&key) {
            self.queue.update(info, now);
        } else {
            self.queue.add(info, now);
        }
    }

    fn schedule_one(&mut self, queued: QueuedPodInfo) {
        let started = Instant::now();
        let cycle = self.queue.scheduling_cycle();
        let pod = queued.pod.clone();
        if self.cache.contains_pod(&pod.key) {
            // Already bound or assumed.
            self.queue.done(&pod.key);
            return;
        }
        self.cache.update_snapshot(&mut self.snapshot);
        let mut state = CycleState::default();
        let result = self
            .algorithm
            .schedule(&mut state, &pod, &self.snapshot, &self.nominated);
        let profile = DEFAULT_SCHEDULER_NAME;
        match result {
            Ok(result) => {
                let node = result.node;
                let fw = self.algorithm.framework.clone();
                let mut assumed_pod = (*pod.pod).clone();
                assumed_pod
                    .spec
                    .get_or_insert_with(Default::default)
                    .node_name = Some(node.clone());
                let mut assumed = (*pod).clone();
                assumed.pod = Arc::new(assumed_pod);
                let assumed = Arc::new(assumed);
                let status = fw.run_reserve(&mut state, &assumed, &node);
                if !status.is_success() {
                    metrics::metrics().attempt(RESULT_ERROR, profile, started.elapsed());
                    self.handle_failure(queued, cycle, Err(ScheduleError::Internal(status)), None);
                    return;
                }
                self.cache.assume_pod(assumed.clone(), &node);
                self.clear_nomination(&pod.key);
                metrics::metrics().attempt(RESULT_SCHEDULED, profile, started.elapsed());
                tracing::debug!(
                    pod = %pod.key,
                    %node,
                    evaluated = result.evaluated_nodes,
                    feasible = result.feasible_nodes,
                    "scheduled; binding"
                );
                let Some(binder) = fw.binder() else {
                    let status = Status::error("no Bind plugin enabled");
                    self.cache.forget_pod(&pod.key);
                    self.handle_failure(queued, cycle, Err(ScheduleError::Internal(status)), None);
                    return;
                };
                let client = self.client.clone();
                let tx = self.tx.clone();
                let permits = self.bindings.clone();
                tokio::spawn(async move {
                    let _permit = permits.acquire_owned().await;
                    let status = binder
                        .as_bind()
                        .expect("the binder binds")
                        .bind(client, assumed, node.clone())
                        .await;
                    let _ = tx.send(Msg::Bound {
                        queued,
                        node,
                        status,
                        state,
                        cycle,
                    });
                });
            }
            Err(ScheduleError::Fit(mut fit)) => {
                let fw = self.algorithm.framework.clone();
                let mut post: Option<PostFilterResult> = None;
                if fw.has_post_filter() {
                    let (result, status) =
                        fw.run_post_filter(&state, &pod, &self.snapshot, &fit.diagnosis);
                    if !status.is_success() {
                        let msg = status.message();
                        if !msg.is_empty() {
                            fit.diagnosis.post_filter_msg = Some(msg);
                        }
                    }
                    post = result;
                }
                metrics::metrics().attempt(RESULT_UNSCHEDULABLE, profile, started.elapsed());
                self.handle_failure(queued, cycle, Err(ScheduleError::Fit(fit)), post);
            }
            Err(e) => {
                let result = if matches!(e, ScheduleError::NoNodes) {
                    RESULT_UNSCHEDULABLE
                } else {
                    RESULT_ERROR
                };
                metrics::metrics().attempt(result, profile, started.elapsed());
                self.handle_failure(queued, cycle, Err(e), None);
            }
        }
    }

    /// Requeue the pod, preempt if PostFilter chose victims, and tell the API why.
    fn handle_failure(
        &mut self,
        queued: QueuedPodInfo,
        cycle: u64,
        err: Result<(), ScheduleError>,
        post: Option<PostFilterResult>,
    ) {
        let Err(err) = err else { return };
        let pod = queued.pod.clone();
        let now = Instant::now();
        let (reason, message, plugins, is_error) = match &err {
            ScheduleError::Fit(fit) => (
                "Unschedulable",
                fit.to_string(),
                fit.diagnosis.unschedulable_plugins.clone(),
                false,
            ),
            ScheduleError::NoNodes => (
                "Unschedulable",
                NO_NODES_AVAILABLE.to_string(),
                BTreeSet::new(),
                false,
            ),
            ScheduleError::Internal(status) => {
                ("SchedulerError", status.message(), BTreeSet::new(), true)
            }
        };
        let mut plugins = plugins;
        let mut nominated: Option<Option<String>> = None;
        if let Some(post) = post {
            if let Some(node) = post.nominated_node.clone() {
                plugins.insert(crate::plugins::default_preemption::NAME);
                self.preempt(&pod, &node, post.victims);
                self.set_nomination(&pod, Some(&node));
                nominated = Some(Some(node));
            } else if pod.nominated_node().is_some() {
                // Preemption cannot help any more: clear the nomination.
                self.clear_nomination(&pod.key);
                nominated = Some(None);
            }
        }
        tracing::info!(pod = %pod.key, %reason, %message, "unable to schedule pod; waiting");
        self.queue
            .add_unschedulable(queued, cycle, plugins, is_error, now);
        self.update_pod_status(&pod, reason, &message, nominated);
        self.record(
            &pod.pod,
            EventType::Warning,
            "FailedScheduling",
            "Scheduling",
            message,
            None,
        );
    }

    /// Evict the victims (DisruptionTarget condition, then delete) off the loop.
    fn preempt(&mut self, preemptor: &Arc<PodInfo>, node: &str, victims: Vec<Arc<PodInfo>>) {
        let m = metrics::metrics();
        m.preemption_attempts.inc();
        m.preemption_victims.inc_by(victims.len() as u64);
        for victim in victims {
            if victim.is_terminating() {
                continue;
            }
            tracing::info!(preemptor = %preemptor.key, victim = %victim.key, %node, "preempting");
            let client = self.client.clone();
            let work = self.work.clone();
            let preemptor = preemptor.clone();
            let node = node.to_string();
            tokio::spawn(async move {
                let api: Api<Pod> = Api::namespaced(client, &victim.namespace);
                let condition = json!({"status": {"conditions": [{
                    "type": "DisruptionTarget",
                    "status": "True",
                    "reason": "PreemptionByScheduler",
                    "message": format!("{DEFAULT_SCHEDULER_NAME}: preempting to accommodate a higher priority pod"),
                    "lastTransitionTime": Time(Timestamp::now()),
                }]}});
                if let Err(e) = api
                    .patch_status(
                        &victim.name,
                        &PatchParams::default(),
                        &Patch::Strategic(&condition),
                    )
                    .await
                {
                    tracing::debug!(victim = %victim.key, error = %e, "cannot set DisruptionTarget");
                }
                let params = DeleteParams {
                    preconditions: Some(Preconditions {
                        uid: Some(victim.uid.clone()).filter(|u| !u.is_empty()),
                        resource_version: None,
                    }),
                    ..Default::default()
                };
                match api.delete(&victim.name, &params).await {
                    Ok(_) => {
                        let _ = work
                            .send(Work::Event {
                                pod: victim.pod.clone(),
                                type_: EventType::Normal,
                                reason: "Preempted",
                                action: "Preempting",
                                note: format!("Preempted by pod {} on node {node}", preemptor.uid),
                                related: Some(preemptor.pod.clone()),
                            })
                            .await;
                    }
                    Err(kube::Error::Api(e)) if e.code == 404 => {}
                    Err(e) => {
                        tracing::warn!(victim = %victim.key, error = %e, "cannot delete preemption victim")
                    }
                }
            });
        }
    }

    /// Set PodScheduled=False (and nominatedNodeName) unless the pod already says so.
    fn update_pod_status(
        &self,
        pod: &Arc<PodInfo>,
        reason: &str,
        message: &str,
        nominated: Option<Option<String>>,
    ) {
        let latest = self
            .unassigned
            .get(&pod.key)
            .map(|p| (**p).clone())
            .unwrap_or_else(|| (*pod.pod).clone());
        let status = latest.status.as_ref();
        let current = status
            .and_then(|s| s.conditions.as_ref())
            .and_then(|cs| cs.iter().find(|c| c.type_ == "PodScheduled"));
        let same_condition = current.is_some_and(|c| {
            c.status == "False"
                && c.reason.as_deref() == Some(reason)
                && c.message.as_deref() == Some(message)
        });
        let current_nominated = status
            .and_then(|s| s.nominated_node_name.clone())
            .filter(|n| !n.is_empty());
        let nominated_changed = nominated.as_ref().is_some_and(|n| *n != current_nominated);
        if same_condition && !nominated_changed {
            return;
        }
        let transition = match current {
            Some(c) if c.status == "False" => c.last_transition_time.clone(),
            _ => None,
        }
        .unwrap_or(Time(Timestamp::now()));
        let mut patch = json!({"status": {"conditions": [{
            "type": "PodScheduled",
            "status": "False",
            "reason": reason,
            "message": message,
            "lastProbeTime": null,
            "lastTransitionTime": transition,
        }]}});
        if let Some(n) = nominated {
            patch["status"]["nominatedNodeName"] = json!(n);
        }
        let api: Api<Pod> = Api::namespaced(self.client.clone(), &pod.namespace);
        let name = pod.name.clone();
        let key = pod.key.clone();
        tokio::spawn(async move {
            match api
                .patch_status(&name, &PatchParams::default(), &Patch::Strategic(&patch))
                .await
            {
                Ok(_) => {}
                Err(kube::Error::Api(e)) if e.code == 404 => {}
                Err(e) => {
                    tracing::warn!(pod = %key, error = %e, "cannot update the pod's PodScheduled condition")
                }
            }
        });
    }

    fn record(
        &self,
        pod: &Arc<Pod>,
        type_: EventType,
        reason: &'static str,
        action: &'static str,
        note: String,
        related: Option<Arc<Pod>>,
    ) {
        let work = Work::Event {
            pod: pod.clone(),
            type_,
            reason,
            action,
            note,
            related,
        };
        if self.work.try_send(work).is_err() {
            tracing::debug!(pod = ?pod.metadata.name, reason, "event dropped: too many pending");
        }
    }
}

/// Workers that publish events, so the loop never waits on the API for them.
///
/// A pod is scheduled once, so its `Scheduled` event is created as it is; the kube Recorder,
/// which aggregates repeats into series (what FailedScheduling needs), keeps every event of
/// the last minutes and scans them all on each publish: with thousands of pods scheduled that
/// scan was most of the events' cost.
fn spawn_workers(client: kube::Client, recorder: Recorder, identity: &str) -> mpsc::Sender<Work> {
    let (tx, rx) = mpsc::channel::<Work>(10_000);
    let rx = Arc::new(tokio::sync::Mutex::new(rx));
    // As the Recorder's Reporter: (reportingController, reportingInstance).
    let reporter = Arc::new((DEFAULT_SCHEDULER_NAME.to_string(), identity.to_string()));
    for _ in 0..8 {
        let rx = rx.clone();
        let recorder = recorder.clone();
        let client = client.clone();
        let reporter = reporter.clone();
        tokio::spawn(async move {
            loop {
                let next = rx.lock().await.recv().await;
                let Some(work) = next else { return };
                match work {
                    Work::Event {
                        pod,
                        type_,
                        reason,
                        action,
                        note,
                        related,
                    } => {
                        let mut reference = pod.object_ref(&());
                        // Events are about the pod, not one of its versions.
                        reference.resource_version = None;
                        let event = Event {
                            type_,
                            reason: reason.into(),
                            note: Some(truncate_note(note)),
                            action: action.into(),
                            secondary: related.map(|r| r.object_ref(&())),
                        };
                        let published = if reason == "Scheduled" {
                            create_event(&client, &reporter, &event, reference).await
                        } else {
                            recorder.publish(&event, &reference).await
                        };
                        if let Err(e) = published {
                            tracing::debug!(error = %e, reason, "cannot record event");
                        }
                    }
                }
            }
        });
    }
    tx
}

/// An `events.k8s.io/v1` Event about `regarding`, named as upstream names them
/// (`<object>.<hex nanoseconds>`).
pub fn new_event(
    reporter: &(String, String),
    event: &Event,
    regarding: k8s_openapi::api::core::v1::ObjectReference,
    now: Timestamp,
) -> k8s_openapi::api::events::v1::Event {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
    let (controller, instance) = reporter;
    k8s_openapi::api::events::v1::Event {
        action: Some(event.action.clone()),
        reason: Some(event.reason.clone()),
        event_time: Some(MicroTime(now)),
        note: event.note.clone(),
        metadata: kube::api::ObjectMeta {
            namespace: regarding.namespace.clone(),
            name: Some(format!(
                "{}.{:x}",
                regarding.name.as_deref().unwrap_or(controller),
                now.as_nanosecond()
            )),
            ..Default::default()
        },
        reporting_controller: Some(controller.clone()),
        reporting_instance: Some(if instance.is_empty() {
            controller.clone()
        } else {
            instance.clone()
        }),
        type_: Some(
            match event.type_ {
                EventType::Normal => "Normal",
                EventType::Warning => "Warning",
            }
            .into(),
        ),
        regarding: Some(regarding),
        related: event.secondary.clone(),
        ..Default::default()
    }
}

async fn create_event(
    client: &kube::Client,
    reporter: &(String, String),
    event: &Event,
    regarding: k8s_openapi::api::core::v1::ObjectReference,
) -> Result<(), kube::Error> {
    let namespace = regarding
        .namespace
        .clone()
        .unwrap_or_else(|| "default".into());
    let api: Api<k8s_openapi::api::events::v1::Event> = Api::namespaced(client.clone(), &namespace);
    let event = new_event(reporter, event, regarding, Timestamp::now());
    api.create(&kube::api::PostParams::default(), &event)
        .await
        .map(|_| ())
}

/// Event notes are limited to 1 KiB.
fn truncate_note(mut note: String) -> String {
    const MAX: usize = 1024;
    if note.len() > MAX {
        let mut cut = MAX - 3;
        while !note.is_char_boundary(cut) {
            cut -= 1;
        }
        note.truncate(cut);
        note.push_str("...");
    }
    note
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugins::testutil::{node_info, pod_info, simple_node};
    use serde_json::json;

    #[test]
    fn a_bound_pod_keeps_what_scheduling_reads() {
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": "p", "namespace": "ns", "labels": {"app": "x"}},
            "spec": {
                "nodeName": "n1",
                "containers": [{"name": "app", "image": "img:1", "env": [{"name": "A", "value": "1"}],
                                "ports": [{"containerPort": 80, "hostPort": 8080}],
                                "resources": {"requests": {"cpu": "250m", "memory": "64Mi"}}}],
                "initContainers": [{"name": "side", "image": "side:1", "restartPolicy": "Always",
                                    "resources": {"requests": {"cpu": "100m"}}}],
                "affinity": {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
                    {"labelSelector": {"matchLabels": {"app": "x"}}, "topologyKey": "kubernetes.io/hostname"}]}},
                "volumes": [{"name": "data", "emptyDir": {}}]
            },
            "status": {"phase": "Running", "startTime": "2026-01-01T00:00:00Z",
                       "containerStatuses": [{"name": "app", "image": "img:1", "imageID": "", "ready": true, "restartCount": 0}]}
        }))
        .unwrap();
        let full = PodInfo::new(Arc::new(pod.clone()), 0);
        let trimmed = trim_bound_pod(pod);
        let kept = PodInfo::new(Arc::new(trimmed.clone()), 0);
        assert_eq!(kept.requests, full.requests);
        assert_eq!(kept.non_zero_requests, full.non_zero_requests);
        assert_eq!(kept.required_anti_affinity.len(), 1);
        assert_eq!(kept.labels(), full.labels());
        let spec = trimmed.spec.as_ref().unwrap();
        assert!(spec.volumes.is_none());
        assert!(spec.containers[0].env.is_none());
        assert_eq!(
            spec.containers[0].ports.as_ref().unwrap()[0].host_port,
            Some(8080)
        );
        let status = trimmed.status.as_ref().unwrap();
        assert!(status.container_statuses.is_none());
        assert!(status.start_time.is_some());
    }

    #[test]
    fn nodes_to_find() {
        assert_eq!(num_feasible_nodes_to_find(50, 0), 50);
        assert_eq!(num_feasible_nodes_to_find(100, 0), 100);
        // 1000 nodes: 50 - 8 = 42%.
        assert_eq!(num_feasible_nodes_to_find(1000, 0), 420);
        // 5000 nodes: 50 - 40 = 10%.
        assert_eq!(num_feasible_nodes_to_find(5000, 0), 500);
        // 10000 nodes: floor of 5%.
        assert_eq!(num_feasible_nodes_to_find(10000, 0), 500);
        assert_eq!(num_feasible_nodes_to_find(200, 10), 100);
        assert_eq!(num_feasible_nodes_to_find(5000, 100), 5000);
    }

    #[test]
    fn select_host_picks_a_best() {
        assert_eq!(select_host(&[]), None);
        assert_eq!(select_host(&[1, 5, 3]), Some(1));
        let mut seen = HashSet::new();
        for _ in 0..200 {
            seen.insert(select_host(&[7, 2, 7]).unwrap());
        }
        assert_eq!(seen, HashSet::from([0, 2]), "ties are broken at random");
    }

    #[test]
    fn responsibility() {
        let p = |name: Option<&str>| -> Pod {
            serde_json::from_value(json!({"metadata": {"name": "p"}, "spec": {"schedulerName": name, "containers": []}})).unwrap()
        };
        assert!(responsible_for(&p(None)));
        assert!(responsible_for(&p(Some("default-scheduler"))));
        assert!(!responsible_for(&p(Some("my-scheduler"))));
    }

    fn cpu_pod(name: &str, cpu: &str) -> Arc<PodInfo> {
        pod_info(
            json!({"metadata": {"name": name}, "spec": {"containers": [{"name": "c", "image": "i",
            "resources": {"requests": {"cpu": cpu}}}]}}),
        )
    }

    #[test]
    fn algorithm_filters_and_scores() {
        let fw = Arc::new(Framework::default_profile());
        let mut alg = Algorithm::new(fw);
        let busy = node_info(simple_node("busy", json!({})), vec![cpu_pod("x", "3")]);
        let idle = node_info(simple_node("idle", json!({})), vec![]);
        let snap = Snapshot::from_nodes(vec![busy, idle]);
        // 2 cpu fits only on idle.
        let r = alg
            .schedule(
                &mut CycleState::default(),
                &cpu_pod("p", "2"),
                &snap,
                &HashMap::new(),
            )
            .unwrap();
        assert_eq!(r.node, "idle");
        // 500m fits on both; LeastAllocated prefers idle.
        for _ in 0..5 {
            let r = alg
                .schedule(
                    &mut CycleState::default(),
                    &cpu_pod("q", "500m"),
                    &snap,
                    &HashMap::new(),
                )
                .unwrap();
            assert_eq!(r.node, "idle");
        }
        // 5 cpu fits nowhere: the fit error counts nodes per reason.
        match alg.schedule(
            &mut CycleState::default(),
            &cpu_pod("r", "5"),
            &snap,
            &HashMap::new(),
        ) {
            Err(ScheduleError::Fit(fit)) => {
                assert_eq!(
                    fit.to_string(),
                    "0/2 nodes are available: 2 Insufficient cpu."
                );
                assert!(
                    fit.diagnosis
                        .unschedulable_plugins
                        .contains("NodeResourcesFit")
                );
            }
            other => panic!("expected a fit error, got {:?}", other.map(|r| r.node)),
        }
    }

    #[test]
    fn nominated_pods_hold_their_room() {
        let fw = Arc::new(Framework::default_profile());
        let mut alg = Algorithm::new(fw);
        let snap = Snapshot::from_nodes(vec![node_info(simple_node("n", json!({})), vec![])]);
        let high = pod_info(
            json!({"metadata": {"name": "high"}, "spec": {"priority": 100, "containers": [{"name": "c", "image": "i",
            "resources": {"requests": {"cpu": "3"}}}]}}),
        );
        let nominated = HashMap::from([("n".to_string(), vec![high])]);
        assert!(matches!(
            alg.schedule(
                &mut CycleState::default(),
                &cpu_pod("low", "2"),
                &snap,
                &nominated
            ),
            Err(ScheduleError::Fit(_))
        ));
        assert!(
            alg.schedule(
                &mut CycleState::default(),
                &cpu_pod("low", "1"),
                &snap,
                &nominated
            )
            .is_ok()
        );
    }

    #[test]
    fn heartbeats_are_not_scheduling_changes() {
        let node = simple_node("n", json!({"zone": "a"}));
        let mut heartbeat = node.clone();
        heartbeat.status.as_mut().unwrap().conditions = Some(vec![Default::default()]);
        assert!(!scheduling_relevant_change(&node, &heartbeat));
        let mut relabeled = node.clone();
        relabeled
            .metadata
            .labels
            .as_mut()
            .unwrap()
            .insert("zone".into(), "b".into());
        assert!(scheduling_relevant_change(&node, &relabeled));
        let mut tainted = node.clone();
        tainted.spec = Some(k8s_openapi::api::core::v1::NodeSpec {
            unschedulable: Some(true),
            ..Default::default()
        });
        assert!(scheduling_relevant_change(&node, &tainted));
    }

    #[test]
    fn scheduled_events_name_the_pod_and_reporter() {
        let pod: Pod = serde_json::from_value(
            json!({"metadata": {"name": "web", "namespace": "prod", "uid": "u1"}}),
        )
        .unwrap();
        let reference = pod.object_ref(&());
        let event = Event {
            type_: EventType::Normal,
            reason: "Scheduled".into(),
            note: Some("Successfully assigned prod/web to n1".into()),
            action: "Binding".into(),
            secondary: None,
        };
        let now = Timestamp::from_second(1_700_000_000).unwrap();
        let reporter = ("default-scheduler".to_string(), "host-1".to_string());
        let e = serde_json::to_value(new_event(&reporter, &event, reference, now)).unwrap();
        assert_eq!(e["metadata"]["namespace"], "prod");
        assert_eq!(
            e["metadata"]["name"],
            format!("web.{:x}", now.as_nanosecond())
        );
        assert_eq!(e["regarding"]["name"], "web");
        assert_eq!(e["regarding"]["uid"], "u1");
        assert_eq!(e["reason"], "Scheduled");
        assert_eq!(e["type"], "Normal");
        assert_eq!(e["action"], "Binding");
        assert_eq!(e["reportingController"], "default-scheduler");
        assert_eq!(e["reportingInstance"], "host-1");
        assert_eq!(e["note"], "Successfully assigned prod/web to n1");
        assert!(e["eventTime"].is_string());
    }

    #[test]
    fn note_truncation() {
        assert_eq!(truncate_note("short".into()), "short");
        let long = "é".repeat(1000);
        let t = truncate_note(long);
        assert!(t.len() <= 1024 && t.ends_with("..."));
    }
}

#[cfg(test)]
mod perf {
    use super::*;
    use crate::plugins::testutil::{pod_info, simple_node};
    use serde_json::json;

    /// The scheduling loop's own cost (no API) for upstream's SchedulingBasic shape:
    /// 5000 nodes, 10000 pods. `cargo test --release -p scheduler -- --ignored --nocapture`.
    #[test]
    #[ignore]
    fn scheduling_basic_5000_nodes_10000_pods() {
        let mut cache = Cache::new();
        for i in 0..5000 {
            let mut node =
                simple_node(&format!("node-{i}"), json!({"zone": format!("z{}", i % 3)}));
            node.status.as_mut().unwrap().allocatable = Some(
                [("cpu", "32"), ("memory", "256Gi"), ("pods", "110")]
                    .into_iter()
                    .map(|(k, v)| {
                        (
                            k.to_string(),
                            k8s_openapi::apimachinery::pkg::api::resource::Quantity(v.into()),
                        )
                    })
                    .collect(),
            );
            cache.add_or_update_node(Arc::new(node));
        }
        let mut snapshot = Snapshot::default();
        let mut alg = Algorithm::new(Arc::new(Framework::default_profile()));
        let pods: Vec<Arc<PodInfo>> = (0..10000)
            .map(|i| {
                pod_info(json!({"metadata": {"name": format!("p{i}")}, "spec": {"containers": [{"name": "c", "image": "pause",
                    "resources": {"requests": {"cpu": "100m", "memory": "500Mi"}}}]}}))
            })
            .collect();
        let started = Instant::now();
        for p in &pods {
            cache.update_snapshot(&mut snapshot);
            let mut state = CycleState::default();
            let r = alg
                .schedule(&mut state, p, &snapshot, &HashMap::new())
                .unwrap_or_else(|_| panic!("{} fits", p.key));
            cache.assume_pod(p.clone(), &r.node);
        }
        let took = started.elapsed();
        let per_second = pods.len() as f64 / took.as_secs_f64();
        println!(
            "scheduled {} pods on 5000 nodes in {took:?}: {per_second:.0} pods/s",
            pods.len()
        );
        cache.update_snapshot(&mut snapshot);
        let max = snapshot
            .node_infos
            .iter()
            .map(|n| n.pods.len())
            .max()
            .unwrap();
        assert!(max <= 3, "pods spread over nodes (max {max} on one node)");
    }
}
