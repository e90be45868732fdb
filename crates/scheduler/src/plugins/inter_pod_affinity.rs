//! InterPodAffinity: required pod affinity and anti-affinity (of the incoming pod, and the
//! anti-affinity of pods already placed) by topology domain; preferred terms score.

use std::collections::HashMap;
use std::sync::Arc;

use crate::cache::Snapshot;
use crate::framework::types::Labels;
use crate::framework::{
    AffinityTerm, CycleState, FilterPlugin, MAX_NODE_SCORE, NodeInfo, Plugin, PodInfo,
    PreFilterPlugin, PreScorePlugin, ScorePlugin, Status,
};

pub const NAME: &str = "InterPodAffinity";
pub const ERR_REASON_AFFINITY: &str = "node(s) didn't match pod affinity rules";
pub const ERR_REASON_ANTI_AFFINITY: &str = "node(s) didn't match pod anti-affinity rules";
pub const ERR_REASON_EXISTING_ANTI_AFFINITY: &str =
    "node(s) didn't satisfy existing pods anti-affinity rules";
/// The weight an existing pod's required affinity to the incoming pod adds when scoring.
pub const HARD_POD_AFFINITY_WEIGHT: i64 = 1;

pub struct InterPodAffinity;

pub fn new() -> Arc<dyn Plugin> {
    Arc::new(InterPodAffinity)
}

/// (topology key, value) → how many pods count there.
pub type TopologyCounts = HashMap<(String, String), i64>;

fn add_count(counts: &mut TopologyCounts, key: &str, labels: &Labels, delta: i64) {
    if let Some(value) = labels.get(key) {
        *counts.entry((key.to_string(), value.clone())).or_default() += delta;
    }
}

/// The PreFilter state: counts of matching pods by topology pair.
#[derive(Debug, Clone, Default)]
pub struct PreFilterState {
    /// Existing pods whose required anti-affinity selects the incoming pod.
    pub existing_anti_affinity: TopologyCounts,
    /// Pods that match all the incoming pod's required affinity terms, per term topology.
    pub affinity: TopologyCounts,
    /// Pods that match each of the incoming pod's required anti-affinity terms.
    pub anti_affinity: TopologyCounts,
    namespaces: Arc<HashMap<String, Labels>>,
}

const STATE_KEY: &str = "PreFilterInterPodAffinity";

impl PreFilterState {
    /// Count `other` on a node with `node_labels`, with `delta` +1 or -1.
    pub fn update(&mut self, pod: &PodInfo, other: &PodInfo, node_labels: &Labels, delta: i64) {
        for term in &other.required_anti_affinity {
            if term.matches(pod, &self.namespaces) {
                add_count(
                    &mut self.existing_anti_affinity,
                    &term.topology_key,
                    node_labels,
                    delta,
                );
            }
        }
        if !pod.required_affinity.is_empty()
            && pod
                .required_affinity
                .iter()
                .all(|t| t.matches(other, &self.namespaces))
        {
            for term in &pod.required_affinity {
                add_count(&mut self.affinity, &term.topology_key, node_labels, delta);
            }
        }
        for term in &pod.required_anti_affinity {
            if term.matches(other, &self.namespaces) {
                add_count(
                    &mut self.anti_affinity,
                    &term.topology_key,
                    node_labels,
                    delta,
                );
            }
        }
    }

    pub fn compute(pod: &PodInfo, snapshot: &Snapshot) -> PreFilterState {
        let mut s = PreFilterState {
            namespaces: snapshot.namespaces.clone(),
            ..Default::default()
        };
        let needs_all = !pod.required_affinity.is_empty() || !pod.required_anti_affinity.is_empty();
        if needs_all {
            for node in &snapshot.node_infos {
                for other in &node.pods {
                    s.update(pod, other, node.labels(), 1);
                }
            }
        } else {
            for &i in &snapshot.have_pods_with_required_anti_affinity {
                let node = &snapshot.node_infos[i];
                for other in node
                    .pods
                    .iter()
                    .filter(|p| !p.required_anti_affinity.is_empty())
                {
                    s.update(pod, other, node.labels(), 1);
                }
            }
        }
        s
    }
}

fn count_at(counts: &TopologyCounts, key: &str, labels: &Labels) -> i64 {
    labels
        .get(key)
        .and_then(|v| counts.get(&(key.to_string(), v.clone())))
        .copied()
        .unwrap_or(0)
}

/// The Filter decision for one node given the PreFilter state.
pub fn filter_node(state: &PreFilterState, pod: &PodInfo, node_labels: &Labels) -> Status {
    // Required affinity: every term needs a matching pod in the node's domain, unless no pod
    // matches anywhere and the pod matches its own terms (the first pod of a group).
    if !pod.required_affinity.is_empty() {
        let satisfied = pod.required_affinity.iter().all(|t| {
            node_labels.contains_key(&t.topology_key)
                && count_at(&state.affinity, &t.topology_key, node_labels) > 0
        });
        if !satisfied {
            let first_of_group = state.affinity.values().all(|c| *c <= 0)
                && pod
                    .required_affinity
                    .iter()
                    .all(|t| t.matches(pod, &state.namespaces))
                && pod
                    .required_affinity
                    .iter()
                    .all(|t| node_labels.contains_key(&t.topology_key));
            if !first_of_group {
                return Status::unresolvable(ERR_REASON_AFFINITY);
            }
        }
    }
    for t in &pod.required_anti_affinity {
        if count_at(&state.anti_affinity, &t.topology_key, node_labels) > 0 {
            return Status::unschedulable(ERR_REASON_ANTI_AFFINITY);
        }
    }
    for ((key, value), count) in &state.existing_anti_affinity {
        if *count > 0 && node_labels.get(key) == Some(value) {
            return Status::unschedulable(ERR_REASON_EXISTING_ANTI_AFFINITY);
        }
    }
    Status::success()
}

impl Plugin for InterPodAffinity {
    fn name(&self) -> &'static str {
        NAME
    }
    fn as_pre_filter(&self) -> Option<&dyn PreFilterPlugin> {
        Some(self)
    }
    fn as_filter(&self) -> Option<&dyn FilterPlugin> {
        Some(self)
    }
    fn as_pre_score(&self) -> Option<&dyn PreScorePlugin> {
        Some(self)
    }
    fn as_score(&self) -> Option<&dyn ScorePlugin> {
        Some(self)
    }
}

impl PreFilterPlugin for InterPodAffinity {
    fn pre_filter(&self, state: &mut CycleState, pod: &PodInfo, snapshot: &Snapshot) -> Status {
        if pod.required_affinity.is_empty()
            && pod.required_anti_affinity.is_empty()
            && snapshot.have_pods_with_required_anti_affinity.is_empty()
        {
            return Status::skip();
        }
        state.write(STATE_KEY, PreFilterState::compute(pod, snapshot));
        Status::success()
    }

    fn add_pod(
        &self,
        state: &mut CycleState,
        pod: &PodInfo,
        other: &PodInfo,
        node: &NodeInfo,
        _snapshot: &Snapshot,
    ) {
        if let Some(s) = state.read_mut::<PreFilterState>(STATE_KEY) {
            s.update(pod, other, node.labels(), 1);
        }
    }

    fn remove_pod(
        &self,
        state: &mut CycleState,
        pod: &PodInfo,
        other: &PodInfo,
        node: &NodeInfo,
        _snapshot: &Snapshot,
    ) {
        if let Some(s) = state.read_mut::<PreFilterState>(STATE_KEY) {
            s.update(pod, other, node.labels(), -1);
        }
    }
}

impl FilterPlugin for InterPodAffinity {
    fn filter(&self, state: &CycleState, pod: &PodInfo, node: &NodeInfo) -> Status {
        match state.read::<PreFilterState>(STATE_KEY) {
            Some(s) => filter_node(s, pod, node.labels()),
            None => Status::error("InterPodAffinity: no PreFilter state"),
        }
    }
}

/// topology key → value → score, from preferred terms both ways and existing pods' required
/// affinity to the incoming pod.
#[derive(Debug, Clone, Default)]
pub struct PreScoreState {
    pub topology_score: HashMap<String, HashMap<String, i64>>,
}

const SCORE_KEY: &str = "PreScoreInterPodAffinity";

fn add_term_score(
    scores: &mut HashMap<String, HashMap<String, i64>>,
    term: &AffinityTerm,
    weight: i64,
    node_labels: &Labels,
) {
    if let Some(v) = node_labels.get(&term.topology_key) {
        *scores
            .entry(term.topology_key.clone())
            .or_default()
            .entry(v.clone())
            .or_default() += weight;
    }
}

/// What `existing` (on a node with `node_labels`) contributes to the incoming pod's scores.
pub fn score_existing_pod(
    scores: &mut HashMap<String, HashMap<String, i64>>,
    pod: &PodInfo,
    existing: &PodInfo,
    node_labels: &Labels,
    namespaces: &HashMap<String, Labels>,
) {
    for t in &pod.preferred_affinity {
        if t.term.matches(existing, namespaces) {
            add_term_score(scores, &t.term, t.weight, node_labels);
        }
    }
    for t in &pod.preferred_anti_affinity {
        if t.term.matches(existing, namespaces) {
            add_term_score(scores, &t.term, -t.weight, node_labels);
        }
    }
    for t in &existing.required_affinity {
        if t.matches(pod, namespaces) {
            add_term_score(scores, t, HARD_POD_AFFINITY_WEIGHT, node_labels);
        }
    }
    for t in &existing.preferred_affinity {
        if t.term.matches(pod, namespaces) {
            add_term_score(scores, &t.term, t.weight, node_labels);
        }
    }
    for t in &existing.preferred_anti_affinity {
        if t.term.matches(pod, namespaces) {
            add_term_score(scores, &t.term, -t.weight, node_labels);
        }
    }
}

impl PreScorePlugin for InterPodAffinity {
    fn pre_score(
        &self,
        state: &mut CycleState,
        pod: &PodInfo,
        _nodes: &[Arc<NodeInfo>],
        snapshot: &Snapshot,
    ) -> Status {
        let has_preferred =
            !pod.preferred_affinity.is_empty() || !pod.preferred_anti_affinity.is_empty();
        if !has_preferred && snapshot.have_pods_with_affinity.is_empty() {
            return Status::skip();
        }
        let mut s = PreScoreState::default();
        let indices: Box<dyn Iterator<Item = usize>> = if has_preferred {
            Box::new(0..snapshot.num_nodes())
        } else {
            Box::new(snapshot.have_pods_with_affinity.iter().copied())
        };
        for i in indices {
            let node = &snapshot.node_infos[i];
            for existing in &node.pods {
                if has_preferred || existing.has_affinity() {
                    score_existing_pod(
                        &mut s.topology_score,
                        pod,
                        existing,
                        node.labels(),
                        &snapshot.namespaces,
                    );
                }
            }
        }
        if s.topology_score.is_empty() {
            return Status::skip();
        }
        state.write(SCORE_KEY, s);
        Status::success()
    }
}

impl ScorePlugin for InterPodAffinity {
    fn score(&self, state: &CycleState, _pod: &PodInfo, node: &NodeInfo) -> Result<i64, Status> {
        let Some(s) = state.read::<PreScoreState>(SCORE_KEY) else {
            return Ok(0);
        };
        let labels = node.labels();
        Ok(s.topology_score
            .iter()
            .filter_map(|(key, values)| labels.get(key).and_then(|v| values.get(v)))
            .sum())
    }

    fn normalize_score(&self, _state: &CycleState, _pod: &PodInfo, scores: &mut [i64]) {
        let (min, max) = scores
            .iter()
            .fold((i64::MAX, i64::MIN), |(lo, hi), s| (lo.min(*s), hi.max(*s)));
        let diff = max - min;
        for s in scores.iter_mut() {
            *s = if diff > 0 {
                MAX_NODE_SCORE * (*s - min) / diff
            } else {
                0
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugins::testutil::{node_info, pod_info, simple_node};
    use serde_json::{Value, json};

    fn with_affinity(name: &str, labels: Value, affinity: Value) -> Arc<PodInfo> {
        pod_info(json!({
            "metadata": {"name": name, "labels": labels},
            "spec": {"containers": [{"name": "c", "image": "i"}], "affinity": affinity}
        }))
    }

    fn term(app: &str, key: &str) -> Value {
        json!({"labelSelector": {"matchLabels": {"app": app}}, "topologyKey": key})
    }

    fn snapshot(placement: Vec<(&str, &str, Vec<Arc<PodInfo>>)>) -> Snapshot {
        Snapshot::from_nodes(
            placement
                .into_iter()
                .map(|(n, zone, pods)| {
                    node_info(
                        simple_node(n, json!({"kubernetes.io/hostname": n, "zone": zone})),
                        pods,
                    )
                })
                .collect(),
        )
    }

    fn feasible(pod: &PodInfo, snap: &Snapshot) -> Vec<(String, Status)> {
        let state = PreFilterState::compute(pod, snap);
        snap.node_infos
            .iter()
            .map(|n| (n.name.clone(), filter_node(&state, pod, n.labels())))
            .collect()
    }

    fn ok_nodes(pod: &PodInfo, snap: &Snapshot) -> Vec<String> {
        feasible(pod, snap)
            .into_iter()
            .filter(|(_, s)| s.is_success())
            .map(|(n, _)| n)
            .collect()
    }

    #[test]
    fn anti_affinity_spreads_over_hostnames() {
        let web = |n: &str| {
            with_affinity(
                n,
                json!({"app": "web"}),
                json!({"podAntiAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": [term("web", "kubernetes.io/hostname")]}}),
            )
        };
        let snap = snapshot(vec![
            ("a", "z1", vec![web("w1")]),
            ("b", "z1", vec![]),
            ("c", "z2", vec![]),
        ]);
        assert_eq!(ok_nodes(&web("w2"), &snap), vec!["b", "c"]);
        let reasons = feasible(&web("w2"), &snap);
        assert_eq!(
            reasons[0].1.reasons,
            vec![ERR_REASON_ANTI_AFFINITY.to_string()]
        );
        // A pod without anti-affinity of its own is kept off by the existing pod's rule.
        let plain = pod_info(json!({"metadata": {"name": "x", "labels": {"app": "web"}}}));
        let result = feasible(&plain, &snap);
        assert_eq!(
            result[0].1.reasons,
            vec![ERR_REASON_EXISTING_ANTI_AFFINITY.to_string()]
        );
        assert!(result[1].1.is_success());
    }

    #[test]
    fn affinity_by_zone_and_first_of_group() {
        let db = pod_info(json!({"metadata": {"name": "db", "labels": {"app": "db"}}}));
        let snap = snapshot(vec![
            ("a", "z1", vec![db]),
            ("b", "z1", vec![]),
            ("c", "z2", vec![]),
        ]);
        let app = with_affinity(
            "app",
            json!({"app": "app"}),
            json!({"podAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": [term("db", "zone")]}}),
        );
        assert_eq!(ok_nodes(&app, &snap), vec!["a", "b"]);
        assert_eq!(
            feasible(&app, &snap)[2].1.code,
            crate::framework::Code::UnschedulableAndUnresolvable
        );

        // No pod matches anywhere, but the pod matches its own term: it may go anywhere.
        let empty = snapshot(vec![("a", "z1", vec![]), ("c", "z2", vec![])]);
        let self_affine = with_affinity(
            "s",
            json!({"app": "cache"}),
            json!({"podAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": [term("cache", "zone")]}}),
        );
        assert_eq!(ok_nodes(&self_affine, &empty), vec!["a", "c"]);
        // Not self-matching: nowhere.
        assert!(ok_nodes(&app, &empty).is_empty());
    }

    #[test]
    fn namespaces_limit_terms() {
        let other_ns = pod_info(
            json!({"metadata": {"name": "w", "namespace": "other", "labels": {"app": "web"}}}),
        );
        let snap = snapshot(vec![("a", "z1", vec![other_ns])]);
        let anti = with_affinity(
            "w2",
            json!({"app": "web"}),
            json!({"podAntiAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": [term("web", "kubernetes.io/hostname")]}}),
        );
        assert_eq!(
            ok_nodes(&anti, &snap),
            vec!["a"],
            "terms default to the pod's own namespace"
        );
        let all_ns = with_affinity(
            "w3",
            json!({"app": "web"}),
            json!({"podAntiAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": [
                {"labelSelector": {"matchLabels": {"app": "web"}}, "topologyKey": "kubernetes.io/hostname", "namespaceSelector": {}}]}}),
        );
        assert!(
            ok_nodes(&all_ns, &snap).is_empty(),
            "an empty namespaceSelector selects all"
        );
    }

    #[test]
    fn preferred_scores() {
        let db = pod_info(json!({"metadata": {"name": "db", "labels": {"app": "db"}}}));
        let snap = snapshot(vec![
            ("a", "z1", vec![db]),
            ("b", "z1", vec![]),
            ("c", "z2", vec![]),
        ]);
        let p = with_affinity(
            "p",
            json!({}),
            json!({"podAffinity": {
            "preferredDuringSchedulingIgnoredDuringExecution": [{"weight": 10, "podAffinityTerm": term("db", "zone")}]}}),
        );
        let mut scores = HashMap::new();
        for n in &snap.node_infos {
            for e in &n.pods {
                score_existing_pod(&mut scores, &p, e, n.labels(), &snap.namespaces);
            }
        }
        let mut state = CycleState::default();
        state.write(
            SCORE_KEY,
            PreScoreState {
                topology_score: scores,
            },
        );
        let plugin = InterPodAffinity;
        let mut raw: Vec<i64> = snap
            .node_infos
            .iter()
            .map(|n| plugin.score(&state, &p, n).unwrap())
            .collect();
        assert_eq!(raw, vec![10, 10, 0]);
        plugin.normalize_score(&state, &p, &mut raw);
        assert_eq!(raw, vec![100, 100, 0]);
    }
}
