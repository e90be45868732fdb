//! What a DaemonSet needs next, without IO: which nodes should run its pod (node name, node
//! selector and required node affinity, taints against the pod's tolerations plus the ones
//! upstream adds to every daemon pod), which pods to create and delete, how far a rolling
//! update may go (maxUnavailable / maxSurge), and the status.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use k8s_openapi::api::apps::v1::{DaemonSet, DaemonSetStatus};
use k8s_openapi::api::core::v1::{
    Affinity, Node, NodeAffinity, NodeSelector, NodeSelectorRequirement, NodeSelectorTerm, Pod,
    PodSpec, Taint, Toleration,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use k8s_openapi::jiff::Timestamp;

use crate::util::{self, CONTROLLER_REVISION_HASH_LABEL};

/// The deprecated label upstream still puts on daemon pods, from the DaemonSet's
/// `deprecated.daemonset.template.generation` annotation.
pub const TEMPLATE_GENERATION_LABEL: &str = "pod-template-generation";
pub const TEMPLATE_GENERATION_ANNOTATION: &str = "deprecated.daemonset.template.generation";

/// The node field daemon pods are pinned to through node affinity.
const NODE_NAME_FIELD: &str = "metadata.name";

/// Add the tolerations every daemon pod gets (upstream `AddOrUpdateDaemonPodTolerations`): it
/// stays on nodes that are not ready, unreachable or under pressure, and lands on cordoned
/// nodes; host-network pods also on nodes whose network is not ready yet.
pub fn add_daemon_tolerations(spec: &mut PodSpec) {
    let mut wanted = vec![
        ("node.kubernetes.io/not-ready", "NoExecute"),
        ("node.kubernetes.io/unreachable", "NoExecute"),
        ("node.kubernetes.io/disk-pressure", "NoSchedule"),
        ("node.kubernetes.io/memory-pressure", "NoSchedule"),
        ("node.kubernetes.io/pid-pressure", "NoSchedule"),
        ("node.kubernetes.io/unschedulable", "NoSchedule"),
    ];
    if spec.host_network == Some(true) {
        wanted.push(("node.kubernetes.io/network-unavailable", "NoSchedule"));
    }
    let tolerations = spec.tolerations.get_or_insert_with(Vec::new);
    for (key, effect) in wanted {
        let toleration = Toleration {
            key: Some(key.into()),
            operator: Some("Exists".into()),
            effect: Some(effect.into()),
            ..Default::default()
        };
        // Replace an equal toleration (e.g. one with tolerationSeconds) rather than duplicate it.
        match tolerations.iter_mut().find(|t| {
            t.key == toleration.key
                && t.operator.as_deref().unwrap_or("Equal") == "Exists"
                && t.effect == toleration.effect
        }) {
            Some(existing) => *existing = toleration,
            None => tolerations.push(toleration),
        }
    }
}

/// Pin the pod to `node_name` with a required node affinity on the node's name, replacing any
/// other required terms (upstream `ReplaceDaemonSetPodNodeNameNodeAffinity`): the scheduler
/// then binds it there.
pub fn pin_to_node(affinity: Option<Affinity>, node_name: &str) -> Affinity {
    let terms = vec![NodeSelectorTerm {
        match_fields: Some(vec![NodeSelectorRequirement {
            key: NODE_NAME_FIELD.into(),
            operator: "In".into(),
            values: Some(vec![node_name.into()]),
        }]),
        match_expressions: None,
    }];
    let mut affinity = affinity.unwrap_or_default();
    let node_affinity = affinity
        .node_affinity
        .get_or_insert_with(NodeAffinity::default);
    node_affinity.required_during_scheduling_ignored_during_execution = Some(NodeSelector {
        node_selector_terms: terms,
    });
    affinity
}

/// The node a daemon pod is for: its `nodeName`, or the node its affinity pins it to.
pub fn target_node(pod: &Pod) -> Option<&str> {
    let spec = pod.spec.as_ref()?;
    if let Some(name) = spec.node_name.as_deref().filter(|n| !n.is_empty()) {
        return Some(name);
    }
    let terms = &spec
        .affinity
        .as_ref()?
        .node_affinity
        .as_ref()?
        .required_during_scheduling_ignored_during_execution
        .as_ref()?
        .node_selector_terms;
    terms.iter().find_map(|t| {
        t.match_fields.iter().flatten().find_map(|f| {
            (f.key == NODE_NAME_FIELD && f.operator == "In")
                .then(|| f.values.as_ref()?.first().map(String::as_str))
                .flatten()
        })
    })
}

fn requirement_matches(req: &NodeSelectorRequirement, value: Option<&str>) -> bool {
    let values = req.values.as_deref().unwrap_or_default();
    match req.operator.as_str() {
        "In" => value.is_some_and(|v| values.iter().any(|x| x == v)),
        "NotIn" => !value.is_some_and(|v| values.iter().any(|x| x == v)),
        "Exists" => value.is_some(),
        "DoesNotExist" => value.is_none(),
        "Gt" | "Lt" => {
            let (Some(v), Some(bound)) = (
                value.and_then(|v| v.parse::<i64>().ok()),
                values.first().and_then(|b| b.parse::<i64>().ok()),
            ) else {
                return false;
            };
            if req.operator == "Gt" {
                v > bound
            } else {
                v < bound
            }
        }
        _ => false,
    }
}

/// Whether a node selector term matches the node: every expression on labels and every field
/// requirement (only `metadata.name`); a term with neither matches nothing.
fn term_matches(term: &NodeSelectorTerm, node: &Node) -> bool {
    let expressions = term.match_expressions.as_deref().unwrap_or_default();
    let fields = term.match_fields.as_deref().unwrap_or_default();
    if expressions.is_empty() && fields.is_empty() {
        return false;
    }
    let labels = node.metadata.labels.as_ref();
    expressions
        .iter()
        .all(|r| requirement_matches(r, labels.and_then(|l| l.get(&r.key)).map(String::as_str)))
        && fields.iter().all(|r| {
            r.key == NODE_NAME_FIELD && requirement_matches(r, node.metadata.name.as_deref())
        })
}

/// The pod's nodeSelector and required node affinity both match the node.
pub fn fits_node_affinity(spec: &PodSpec, node: &Node) -> bool {
    let labels = node.metadata.labels.as_ref();
    let selector_ok = spec
        .node_selector
        .iter()
        .flatten()
        .all(|(k, v)| labels.and_then(|l| l.get(k)) == Some(v));
    let affinity_ok = spec
        .affinity
        .as_ref()
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|n| {
            n.required_during_scheduling_ignored_during_execution
                .as_ref()
        })
        .is_none_or(|s| s.node_selector_terms.iter().any(|t| term_matches(t, node)));
    selector_ok && affinity_ok
}

/// Upstream `Toleration.ToleratesTaint`.
pub fn tolerates(toleration: &Toleration, taint: &Taint) -> bool {
    if let Some(effect) = toleration.effect.as_deref().filter(|e| !e.is_empty())
        && effect != taint.effect
    {
        return false;
    }
    if let Some(key) = toleration.key.as_deref().filter(|k| !k.is_empty())
        && key != taint.key
    {
        return false;
    }
    match toleration.operator.as_deref().unwrap_or("Equal") {
        "Exists" => true,
        "Equal" | "" => {
            toleration.value.as_deref().unwrap_or("") == taint.value.as_deref().unwrap_or("")
        }
        _ => false,
    }
}

/// The first taint passing `filter` that no toleration tolerates.
pub fn untolerated_taint<'a>(
    taints: &'a [Taint],
    tolerations: &[Toleration],
    filter: impl Fn(&Taint) -> bool,
) -> Option<&'a Taint> {
    taints
        .iter()
        .filter(|t| filter(t))
        .find(|t| !tolerations.iter().any(|tol| tolerates(tol, t)))
}

/// The DaemonSet's pod spec as its pods get it (with the daemon tolerations).
pub fn daemon_pod_spec(ds: &DaemonSet) -> PodSpec {
    let mut spec = ds
        .spec
        .as_ref()
        .and_then(|s| s.template.spec.clone())
        .unwrap_or_default();
    add_daemon_tolerations(&mut spec);
    spec
}

/// Upstream `NodeShouldRunDaemonPod`: (should run, should keep running). A node whose
/// taints the pod does not tolerate gets no new pod, but a running one stays unless a
/// NoExecute taint is untolerated.
pub fn node_should_run(spec: &PodSpec, node: &Node) -> (bool, bool) {
    let node_name = node.metadata.name.as_deref().unwrap_or_default();
    if spec
        .node_name
        .as_deref()
        .is_some_and(|n| !n.is_empty() && n != node_name)
    {
        return (false, false);
    }
    if !fits_node_affinity(spec, node) {
        return (false, false);
    }
    let taints = node
        .spec
        .as_ref()
        .and_then(|s| s.taints.as_deref())
        .unwrap_or_default();
    let tolerations = spec.tolerations.as_deref().unwrap_or_default();
    let hard = |t: &Taint| t.effect == "NoSchedule" || t.effect == "NoExecute";
    if untolerated_taint(taints, tolerations, hard).is_none() {
        return (true, true);
    }
    let keep = untolerated_taint(taints, tolerations, |t| t.effect == "NoExecute").is_none();
    (false, keep)
}

/// A new pod of the DaemonSet for `node_name`, labelled with the revision `hash`.
pub fn new_pod(ds: &DaemonSet, node_name: &str, hash: &str) -> Pod {
    let template = ds.spec.as_ref().map(|s| &s.template);
    let template_meta = template.and_then(|t| t.metadata.as_ref());
    let mut labels = template_meta
        .and_then(|m| m.labels.clone())
        .unwrap_or_default();
    if let Some(generation) = ds
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(TEMPLATE_GENERATION_ANNOTATION))
    {
        labels.insert(TEMPLATE_GENERATION_LABEL.into(), generation.clone());
    }
    labels.insert(CONTROLLER_REVISION_HASH_LABEL.into(), hash.into());
    let mut spec = daemon_pod_spec(ds);
    spec.affinity = Some(pin_to_node(spec.affinity.take(), node_name));
    Pod {
        metadata: ObjectMeta {
            generate_name: Some(format!(
                "{}-",
                ds.metadata.name.as_deref().unwrap_or_default()
            )),
            namespace: ds.metadata.namespace.clone(),
            labels: Some(labels),
            annotations: template_meta.and_then(|m| m.annotations.clone()),
            finalizers: template_meta.and_then(|m| m.finalizers.clone()),
            owner_references: util::controller_ref(ds).map(|r| vec![r]),
            ..Default::default()
        },
        spec: Some(spec),
        status: None,
    }
}

fn phase(pod: &Pod) -> &str {
    pod.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("")
}

fn min_ready_seconds(ds: &DaemonSet) -> i32 {
    ds.spec
        .as_ref()
        .and_then(|s| s.min_ready_seconds)
        .unwrap_or(0)
}

/// Whether the pod is at the revision `hash` (or the template generation, for pods made
/// before revisions).
pub fn is_updated(ds: &DaemonSet, pod: &Pod, hash: &str) -> bool {
    let labels = pod.metadata.labels.as_ref();
    let hash_matches = !hash.is_empty()
        && labels
            .and_then(|l| l.get(CONTROLLER_REVISION_HASH_LABEL))
            .map(String::as_str)
            == Some(hash);
    let generation = ds
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(TEMPLATE_GENERATION_ANNOTATION));
    let generation_matches = generation
        .is_some_and(|g| labels.and_then(|l| l.get(TEMPLATE_GENERATION_LABEL)) == Some(g));
    hash_matches || generation_matches
}

/// Oldest first, running before pending (upstream `podByCreationTimestampAndPhase`).
fn sort_oldest_first(pods: &mut [Arc<Pod>]) {
    pods.sort_by(|a, b| {
        let running = |p: &Pod| phase(p) == "Running";
        running(b)
            .cmp(&running(a))
            .then_with(|| {
                let t = |p: &Pod| p.metadata.creation_timestamp.as_ref().map(|t| t.0);
                t(a).cmp(&t(b))
            })
            .then_with(|| a.metadata.name.cmp(&b.metadata.name))
    });
}

/// The DaemonSet's pods by the node they are for.
pub fn pods_by_node(pods: &[Arc<Pod>]) -> HashMap<String, Vec<Arc<Pod>>> {
    let mut by_node: HashMap<String, Vec<Arc<Pod>>> = HashMap::new();
    for pod in pods {
        if let Some(node) = target_node(pod) {
            by_node
                .entry(node.to_string())
                .or_default()
                .push(pod.clone());
        }
    }
    by_node
}

/// Pods to create (by node) and delete (by name).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Changes {
    pub create_on: Vec<String>,
    pub delete: Vec<String>,
}

impl Changes {
    pub fn is_empty(&self) -> bool {
        self.create_on.is_empty() && self.delete.is_empty()
    }
}

fn allows_surge(ds: &DaemonSet, desired: i32) -> bool {
    max_surge_and_unavailable(ds, desired).0 > 0
}

/// Upstream `manage`: a pod on every node that should run one, none where it should not,
/// failed pods replaced, extra pods on a node removed (keeping the oldest, or during a surge
/// the old and new pod pair).
pub fn manage(
    ds: &DaemonSet,
    nodes: &[Arc<Node>],
    by_node: &HashMap<String, Vec<Arc<Pod>>>,
    hash: &str,
    now: Timestamp,
) -> Changes {
    let spec = daemon_pod_spec(ds);
    let desired = nodes.iter().filter(|n| node_should_run(&spec, n).0).count() as i32;
    let surge = allows_surge(ds, desired);
    let mut changes = Changes::default();
    for node in nodes {
        let name = node.metadata.name.as_deref().unwrap_or_default();
        let (should_run, should_continue) = node_should_run(&spec, node);
        let pods = by_node.get(name);
        match pods {
            None if should_run => changes.create_on.push(name.to_string()),
            None => {}
            Some(pods) if should_continue => {
                let mut running: Vec<Arc<Pod>> = Vec::new();
                for pod in pods {
                    if pod.metadata.deletion_timestamp.is_some() {
                        continue;
                    }
                    if matches!(phase(pod), "Failed" | "Succeeded") {
                        changes
                            .delete
                            .push(pod.metadata.name.clone().unwrap_or_default());
                    } else {
                        running.push(pod.clone());
                    }
                }
                sort_oldest_first(&mut running);
                if !surge {
                    if running.is_empty() && should_run {
                        // Every pod here failed: the next pass creates a fresh one.
                        continue;
                    }
                    for extra in running.iter().skip(1) {
                        changes
                            .delete
                            .push(extra.metadata.name.clone().unwrap_or_default());
                    }
                    continue;
                }
                if running.len() <= 1 {
                    if running.is_empty() && should_run {
                        changes.create_on.push(name.to_string());
                    }
                    continue;
                }
                // Surging: keep the oldest new pod and the oldest old pod, the old one only
                // while it is ready and the new one is not yet available.
                let mut oldest_new: Option<&Arc<Pod>> = None;
                let mut oldest_old: Option<&Arc<Pod>> = None;
                for pod in &running {
                    let slot = if is_updated(ds, pod, hash) {
                        &mut oldest_new
                    } else {
                        &mut oldest_old
                    };
                    if slot.is_none() {
                        *slot = Some(pod);
                    } else {
                        changes
                            .delete
                            .push(pod.metadata.name.clone().unwrap_or_default());
                    }
                }
                if let (Some(new), Some(old)) = (oldest_new, oldest_old)
                    && (!util::is_pod_ready(old)
                        || util::is_pod_available(new, min_ready_seconds(ds), now))
                {
                    changes
                        .delete
                        .push(old.metadata.name.clone().unwrap_or_default());
                }
            }
            Some(pods) => {
                for pod in pods {
                    if pod.metadata.deletion_timestamp.is_none() {
                        changes
                            .delete
                            .push(pod.metadata.name.clone().unwrap_or_default());
                    }
                }
            }
        }
    }
    // Pods for nodes that no longer exist and that were never scheduled: nobody else will
    // remove them (scheduled ones are the pod garbage collector's).
    let known: std::collections::HashSet<&str> = nodes
        .iter()
        .filter_map(|n| n.metadata.name.as_deref())
        .collect();
    for (node, pods) in by_node {
        if known.contains(node.as_str()) {
            continue;
        }
        for pod in pods {
            let scheduled = pod
                .spec
                .as_ref()
                .and_then(|s| s.node_name.as_deref())
                .is_some_and(|n| !n.is_empty());
            if !scheduled && pod.metadata.deletion_timestamp.is_none() {
                changes
                    .delete
                    .push(pod.metadata.name.clone().unwrap_or_default());
            }
        }
    }
    changes.create_on.sort();
    changes
}

/// Upstream `GetScaledValueFromIntOrPercent`: a count, or a percentage of `total`.
pub fn scaled_value(value: Option<&IntOrString>, total: i32, round_up: bool) -> i32 {
    match value {
        None => 0,
        Some(IntOrString::Int(i)) => *i,
        Some(IntOrString::String(s)) => {
            let Some(percent) = s.strip_suffix('%').and_then(|p| p.parse::<i64>().ok()) else {
                return 0;
            };
            let scaled = percent * i64::from(total);
            let value = if round_up {
                (scaled + 99).div_euclid(100)
            } else {
                scaled.div_euclid(100)
            };
            value as i32
        }
    }
}

/// (maxSurge, maxUnavailable) for `desired` nodes; at least one pod may be unavailable when
/// neither allows anything.
pub fn max_surge_and_unavailable(ds: &DaemonSet, desired: i32) -> (i32, i32) {
    let rolling = ds
        .spec
        .as_ref()
        .and_then(|s| s.update_strategy.as_ref())
        .filter(|u| u.type_.as_deref().unwrap_or("RollingUpdate") == "RollingUpdate")
        .and_then(|u| u.rolling_update.as_ref());
    let Some(rolling) = rolling else {
        return (0, 1);
    };
    let surge = scaled_value(rolling.max_surge.as_ref(), desired, true).max(0);
    let mut unavailable = scaled_value(rolling.max_unavailable.as_ref(), desired, true).max(0);
    if surge == 0 && unavailable == 0 {
        unavailable = 1;
    }
    (surge, unavailable)
}

/// A node's pod at the current revision and its pod at an older one.
type NewAndOld<'a> = (Option<&'a Arc<Pod>>, Option<&'a Arc<Pod>>);

/// Upstream `findUpdatedPodsOnNode`: the node's one new and one old live pod; None when there
/// are more than one of either (the manage pass sorts that out first).
fn updated_and_old<'a>(ds: &DaemonSet, pods: &'a [Arc<Pod>], hash: &str) -> Option<NewAndOld<'a>> {
    let (mut new, mut old) = (None, None);
    for pod in pods {
        if pod.metadata.deletion_timestamp.is_some() {
            continue;
        }
        let slot = if is_updated(ds, pod, hash) {
            &mut new
        } else {
            &mut old
        };
        if slot.is_some() {
            return None;
        }
        *slot = Some(pod);
    }
    Some((new, old))
}

/// Upstream `rollingUpdate`: without surge, delete old pods while the unavailable count allows
/// (unavailable old pods first, they cost nothing) and let `manage` recreate them; with surge,
/// start new pods beside old ones up to maxSurge and remove each old pod once its replacement
/// is available.
pub fn rolling_update(
    ds: &DaemonSet,
    nodes: &[Arc<Node>],
    by_node: &HashMap<String, Vec<Arc<Pod>>>,
    hash: &str,
    now: Timestamp,
) -> Changes {
    let spec = daemon_pod_spec(ds);
    let desired = nodes.iter().filter(|n| node_should_run(&spec, n).0).count() as i32;
    let (max_surge, max_unavailable) = max_surge_and_unavailable(ds, desired);
    let min_ready = min_ready_seconds(ds);
    let available = |p: &Pod| util::is_pod_available(p, min_ready, now);
    // Deterministic order, so that the same nodes are picked on every pass.
    let by_node: BTreeMap<&String, &Vec<Arc<Pod>>> = by_node.iter().collect();
    let mut changes = Changes::default();
    if max_surge == 0 {
        let mut unavailable = 0;
        let mut replace_now = Vec::new();
        let mut candidates = Vec::new();
        for pods in by_node.values() {
            match updated_and_old(ds, pods, hash) {
                None | Some((None, None)) | Some((Some(_), Some(_))) => unavailable += 1,
                Some((Some(new), None)) => {
                    if !available(new) {
                        unavailable += 1;
                    }
                }
                Some((None, Some(old))) => {
                    if !available(old) {
                        replace_now.push(old.metadata.name.clone().unwrap_or_default());
                    } else if unavailable < max_unavailable {
                        candidates.push(old.metadata.name.clone().unwrap_or_default());
                    }
                }
            }
        }
        let room = (max_unavailable - unavailable).clamp(0, candidates.len() as i32) as usize;
        changes.delete = replace_now;
        changes.delete.extend(candidates.into_iter().take(room));
        return changes;
    }
    let nodes_by_name: HashMap<&str, &Arc<Node>> = nodes
        .iter()
        .filter_map(|n| Some((n.metadata.name.as_deref()?, n)))
        .collect();
    let mut surging = 0;
    let mut replace_now = Vec::new();
    let mut candidates = Vec::new();
    for (node, pods) in by_node {
        let Some((new, old)) = updated_and_old(ds, pods, hash) else {
            surging += 1;
            continue;
        };
        match (new, old) {
            (_, None) => {}
            (None, Some(old)) => {
                if !available(old) {
                    let should_run = nodes_by_name
                        .get(node.as_str())
                        .is_some_and(|n| node_should_run(&spec, n).0);
                    if should_run {
                        replace_now.push(node.clone());
                    } else {
                        changes
                            .delete
                            .push(old.metadata.name.clone().unwrap_or_default());
                    }
                } else if surging < max_surge {
                    candidates.push(node.clone());
                }
            }
            (Some(new), Some(old)) => {
                if available(new) {
                    changes
                        .delete
                        .push(old.metadata.name.clone().unwrap_or_default());
                } else {
                    surging += 1;
                }
            }
        }
    }
    let room = (max_surge - surging).clamp(0, candidates.len() as i32) as usize;
    changes.create_on = replace_now;
    changes.create_on.extend(candidates.into_iter().take(room));
    changes
}

/// Upstream `updateDaemonSetStatus`, counting the oldest pod of each node.
pub fn status(
    ds: &DaemonSet,
    nodes: &[Arc<Node>],
    by_node: &HashMap<String, Vec<Arc<Pod>>>,
    hash: &str,
    now: Timestamp,
) -> DaemonSetStatus {
    let spec = daemon_pod_spec(ds);
    let min_ready = min_ready_seconds(ds);
    let mut status = DaemonSetStatus {
        observed_generation: ds.metadata.generation,
        collision_count: ds.status.as_ref().and_then(|s| s.collision_count),
        ..Default::default()
    };
    let (mut available, mut updated) = (0, 0);
    for node in nodes {
        let name = node.metadata.name.as_deref().unwrap_or_default();
        let (should_run, _) = node_should_run(&spec, node);
        let pods = by_node.get(name).filter(|p| !p.is_empty());
        if !should_run {
            if pods.is_some() {
                status.number_misscheduled += 1;
            }
            continue;
        }
        status.desired_number_scheduled += 1;
        let Some(pods) = pods else {
            continue;
        };
        status.current_number_scheduled += 1;
        let mut pods = pods.clone();
        sort_oldest_first(&mut pods);
        let pod = &pods[0];
        if util::is_pod_ready(pod) {
            status.number_ready += 1;
            if util::is_pod_available(pod, min_ready, now) {
                available += 1;
            }
        }
        if is_updated(ds, pod, hash) {
            updated += 1;
        }
    }
    status.number_available = Some(available);
    status.updated_number_scheduled = Some(updated);
    status.number_unavailable = Some(status.desired_number_scheduled - available);
    status
}
