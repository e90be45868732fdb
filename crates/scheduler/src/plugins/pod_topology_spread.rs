//! PodTopologySpread: keep matching pods evenly spread over topology domains. Constraints
//! with `whenUnsatisfiable: DoNotSchedule` filter (skew ≤ maxSkew, with minDomains), those with
//! `ScheduleAnyway` score (fewer matching pods in the domain is better).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use api::selector::LabelSelector;
use k8s_openapi::api::core::v1::TopologySpreadConstraint;

use crate::cache::Snapshot;
use crate::framework::types::{Labels, selector_with_match_label_keys};
use crate::framework::{
    CycleState, FilterPlugin, MAX_NODE_SCORE, NodeInfo, Plugin, PodInfo, PreFilterPlugin,
    PreScorePlugin, ScorePlugin, Status,
};
use crate::plugins::node_affinity;
use crate::plugins::taint_toleration::find_untolerated_taint;

pub const NAME: &str = "PodTopologySpread";
pub const ERR_REASON_CONSTRAINTS_NOT_MATCH: &str =
    "node(s) didn't match pod topology spread constraints";
pub const ERR_REASON_NODE_LABEL_NOT_MATCH: &str =
    "node(s) didn't match pod topology spread constraints (missing required label)";

pub struct PodTopologySpread;

pub fn new() -> Arc<dyn Plugin> {
    Arc::new(PodTopologySpread)
}

/// One constraint, parsed.
#[derive(Debug, Clone)]
pub struct Constraint {
    pub max_skew: i64,
    pub topology_key: String,
    pub selector: LabelSelector,
    pub min_domains: i64,
    pub honor_node_affinity: bool,
    pub honor_node_taints: bool,
}

/// The pod's constraints with the given `whenUnsatisfiable`.
pub fn constraints(pod: &PodInfo, when_unsatisfiable: &str) -> Vec<Constraint> {
    let labels = pod.labels();
    pod.pod
        .spec
        .as_ref()
        .and_then(|s| s.topology_spread_constraints.as_ref())
        .into_iter()
        .flatten()
        .filter(|c| c.when_unsatisfiable == when_unsatisfiable)
        .map(|c: &TopologySpreadConstraint| Constraint {
            max_skew: i64::from(c.max_skew.max(1)),
            topology_key: c.topology_key.clone(),
            selector: selector_with_match_label_keys(
                c.label_selector.as_ref(),
                c.match_label_keys.as_ref(),
                labels,
            ),
            min_domains: i64::from(c.min_domains.unwrap_or(1).max(1)),
            honor_node_affinity: c.node_affinity_policy.as_deref() != Some("Ignore"),
            honor_node_taints: c.node_taints_policy.as_deref() == Some("Honor"),
        })
        .collect()
}

/// Whether the node counts for the constraints: it has every topology key and passes the
/// pod's node affinity / taints when the policies say so.
fn node_counts(pod: &PodInfo, node: &NodeInfo, constraints: &[Constraint]) -> bool {
    let labels = node.labels();
    if !constraints
        .iter()
        .all(|c| labels.contains_key(&c.topology_key))
    {
        return false;
    }
    let Some(n) = node.node.as_ref() else {
        return false;
    };
    if constraints.iter().any(|c| c.honor_node_affinity)
        && !node_affinity::required_matches(&pod.pod, n)
    {
        return false;
    }
    if constraints.iter().any(|c| c.honor_node_taints) {
        let tolerations = pod
            .pod
            .spec
            .as_ref()
            .and_then(|s| s.tolerations.as_deref())
            .unwrap_or(&[]);
        if find_untolerated_taint(node.taints(), tolerations, &["NoSchedule", "NoExecute"])
            .is_some()
        {
            return false;
        }
    }
    true
}

fn matching_pods(pod: &PodInfo, node: &NodeInfo, selector: &LabelSelector) -> i64 {
    node.pods
        .iter()
        .filter(|p| {
            p.namespace == pod.namespace && !p.is_terminating() && selector.matches(p.labels())
        })
        .count() as i64
}

/// The PreFilter state: matching pods per (key, value) and the domains of each constraint.
#[derive(Debug, Clone, Default)]
pub struct PreFilterState {
    pub constraints: Vec<Constraint>,
    /// Per constraint: domain value → matching pods.
    pub counts: Vec<HashMap<String, i64>>,
}

impl PreFilterState {
    pub fn compute(
        pod: &PodInfo,
        constraints: Vec<Constraint>,
        nodes: &[Arc<NodeInfo>],
    ) -> PreFilterState {
        let mut counts = vec![HashMap::new(); constraints.len()];
        for node in nodes {
            if !node_counts(pod, node, &constraints) {
                continue;
            }
            let labels = node.labels();
            for (i, c) in constraints.iter().enumerate() {
                let value = labels[&c.topology_key].clone();
                *counts[i].entry(value).or_default() += matching_pods(pod, node, &c.selector);
            }
        }
        PreFilterState {
            constraints,
            counts,
        }
    }

    fn update(&mut self, pod: &PodInfo, other: &PodInfo, node: &NodeInfo, delta: i64) {
        if other.namespace != pod.namespace || !node_counts(pod, node, &self.constraints) {
            return;
        }
        let labels = node.labels();
        for (i, c) in self.constraints.iter().enumerate() {
            if c.selector.matches(other.labels()) {
                *self.counts[i]
                    .entry(labels[&c.topology_key].clone())
                    .or_default() += delta;
            }
        }
    }
}

/// The Filter decision for a node with `labels`.
pub fn filter_node(state: &PreFilterState, pod: &PodInfo, labels: &Labels) -> Status {
    for (i, c) in state.constraints.iter().enumerate() {
        let Some(value) = labels.get(&c.topology_key) else {
            return Status::unresolvable(ERR_REASON_NODE_LABEL_NOT_MATCH);
        };
        let domains = &state.counts[i];
        let mut min = domains.values().copied().min().unwrap_or(0);
        if (domains.len() as i64) < c.min_domains {
            min = 0;
        }
        let self_match = i64::from(c.selector.matches(pod.labels()));
        let here = domains.get(value).copied().unwrap_or(0);
        if here + self_match - min > c.max_skew {
            return Status::unschedulable(ERR_REASON_CONSTRAINTS_NOT_MATCH);
        }
    }
    Status::success()
}

const STATE_KEY: &str = "PreFilterPodTopologySpread";
const SCORE_KEY: &str = "PreScorePodTopologySpread";

impl Plugin for PodTopologySpread {
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

impl PreFilterPlugin for PodTopologySpread {
    fn pre_filter(&self, state: &mut CycleState, pod: &PodInfo, snapshot: &Snapshot) -> Status {
        let hard = constraints(pod, "DoNotSchedule");
        if hard.is_empty() {
            return Status::skip();
        }
        state.write(
            STATE_KEY,
            PreFilterState::compute(pod, hard, &snapshot.node_infos),
        );
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
            s.update(pod, other, node, 1);
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
            s.update(pod, other, node, -1);
        }
    }
}

impl FilterPlugin for PodTopologySpread {
    fn filter(&self, state: &CycleState, pod: &PodInfo, node: &NodeInfo) -> Status {
        match state.read::<PreFilterState>(STATE_KEY) {
            Some(s) => filter_node(s, pod, node.labels()),
            None => Status::error("PodTopologySpread: no PreFilter state"),
        }
    }
}

#[derive(Debug, Clone)]
struct PreScoreState {
    spread: PreFilterState,
    /// Per constraint: weight from the number of domains (more domains, more weight).
    weights: Vec<f64>,
    ignored: HashSet<String>,
}

/// The raw score of a node (lower is better): matching pods in its domains, weighted.
pub fn raw_score(
    counts: &[HashMap<String, i64>],
    constraints: &[Constraint],
    weights: &[f64],
    labels: &Labels,
) -> i64 {
    let mut score = 0.0;
    for (i, c) in constraints.iter().enumerate() {
        if let Some(v) = labels.get(&c.topology_key) {
            let n = counts[i].get(v).copied().unwrap_or(0);
            score += (n + c.max_skew - 1) as f64 * weights[i];
        }
    }
    score.round() as i64
}

impl PreScorePlugin for PodTopologySpread {
    fn pre_score(
        &self,
        state: &mut CycleState,
        pod: &PodInfo,
        nodes: &[Arc<NodeInfo>],
        snapshot: &Snapshot,
    ) -> Status {
        let soft = constraints(pod, "ScheduleAnyway");
        if soft.is_empty() {
            return Status::skip();
        }
        let ignored = nodes
            .iter()
            .filter(|n| {
                !soft
                    .iter()
                    .all(|c| n.labels().contains_key(&c.topology_key))
            })
            .map(|n| n.name.clone())
            .collect();
        let spread = PreFilterState::compute(pod, soft, &snapshot.node_infos);
        let weights = spread
            .counts
            .iter()
            .map(|domains| ((domains.len() + 2) as f64).ln())
            .collect();
        state.write(
            SCORE_KEY,
            PreScoreState {
                spread,
                weights,
                ignored,
            },
        );
        Status::success()
    }
}

impl ScorePlugin for PodTopologySpread {
    fn score(&self, state: &CycleState, _pod: &PodInfo, node: &NodeInfo) -> Result<i64, Status> {
        let Some(s) = state.read::<PreScoreState>(SCORE_KEY) else {
            return Ok(0);
        };
        if s.ignored.contains(&node.name) {
            return Ok(-1);
        }
        Ok(raw_score(
            &s.spread.counts,
            &s.spread.constraints,
            &s.weights,
            node.labels(),
        ))
    }

    fn normalize_score(&self, _state: &CycleState, _pod: &PodInfo, scores: &mut [i64]) {
        let valid = scores.iter().copied().filter(|s| *s >= 0);
        let (min, max) = valid.fold((i64::MAX, 0), |(lo, hi), s| (lo.min(s), hi.max(s)));
        for s in scores.iter_mut() {
            *s = if *s < 0 {
                0
            } else if max == 0 {
                MAX_NODE_SCORE
            } else {
                MAX_NODE_SCORE * (max + min - *s) / max
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugins::testutil::{node_info, pod_info, simple_node};
    use serde_json::{Value, json};

    fn web(name: &str) -> Arc<PodInfo> {
        pod_info(json!({"metadata": {"name": name, "labels": {"app": "web"}}}))
    }

    fn spread_pod(constraint: Value) -> Arc<PodInfo> {
        pod_info(json!({
            "metadata": {"name": "new", "labels": {"app": "web"}},
            "spec": {"containers": [{"name": "c", "image": "i"}], "topologySpreadConstraints": [constraint]}
        }))
    }

    fn nodes(layout: Vec<(&str, Option<&str>, usize)>) -> Vec<Arc<NodeInfo>> {
        layout
            .into_iter()
            .map(|(name, zone, pods)| {
                let labels = match zone {
                    Some(z) => json!({"zone": z}),
                    None => json!({}),
                };
                let pods = (0..pods).map(|i| web(&format!("{name}-{i}"))).collect();
                Arc::new(node_info(simple_node(name, labels), pods))
            })
            .collect()
    }

    fn run(pod: &PodInfo, nodes: &[Arc<NodeInfo>]) -> Vec<Status> {
        let state = PreFilterState::compute(pod, constraints(pod, "DoNotSchedule"), nodes);
        nodes
            .iter()
            .map(|n| filter_node(&state, pod, n.labels()))
            .collect()
    }

    fn codes(statuses: &[Status]) -> Vec<bool> {
        statuses.iter().map(Status::is_success).collect()
    }

    #[test]
    fn max_skew_table() {
        let c = |skew: i32| {
            json!({"maxSkew": skew, "topologyKey": "zone", "whenUnsatisfiable": "DoNotSchedule",
                   "labelSelector": {"matchLabels": {"app": "web"}}})
        };
        let layout = || {
            nodes(vec![
                ("a", Some("z1"), 2),
                ("b", Some("z2"), 0),
                ("c", Some("z2"), 0),
            ])
        };
        // z1 has 2, z2 has 0: with skew 1 only z2 is allowed.
        assert_eq!(
            codes(&run(&spread_pod(c(1)), &layout())),
            vec![false, true, true]
        );
        // With skew 3 both are (2 + 1 - 0 = 3).
        assert_eq!(
            codes(&run(&spread_pod(c(3)), &layout())),
            vec![true, true, true]
        );
        let statuses = run(&spread_pod(c(1)), &layout());
        assert_eq!(
            statuses[0].reasons,
            vec![ERR_REASON_CONSTRAINTS_NOT_MATCH.to_string()]
        );
    }

    #[test]
    fn missing_label_is_unresolvable() {
        let c = json!({"maxSkew": 1, "topologyKey": "zone", "whenUnsatisfiable": "DoNotSchedule",
                       "labelSelector": {"matchLabels": {"app": "web"}}});
        let statuses = run(
            &spread_pod(c),
            &nodes(vec![("a", Some("z1"), 0), ("b", None, 0)]),
        );
        assert!(statuses[0].is_success());
        assert_eq!(
            statuses[1].code,
            crate::framework::Code::UnschedulableAndUnresolvable
        );
        assert_eq!(
            statuses[1].reasons,
            vec![ERR_REASON_NODE_LABEL_NOT_MATCH.to_string()]
        );
    }

    #[test]
    fn min_domains_treats_missing_domains_as_empty() {
        // One domain with 1 pod; minDomains 2 means the global minimum is 0, so skew would be 2.
        let c = json!({"maxSkew": 1, "topologyKey": "zone", "whenUnsatisfiable": "DoNotSchedule",
                       "minDomains": 2, "labelSelector": {"matchLabels": {"app": "web"}}});
        assert_eq!(
            codes(&run(
                &spread_pod(c.clone()),
                &nodes(vec![("a", Some("z1"), 1)])
            )),
            vec![false]
        );
        let mut without = c;
        without.as_object_mut().unwrap().remove("minDomains");
        assert_eq!(
            codes(&run(
                &spread_pod(without),
                &nodes(vec![("a", Some("z1"), 1)])
            )),
            vec![true]
        );
    }

    #[test]
    fn node_affinity_policy_excludes_nodes() {
        let pod = pod_info(json!({
            "metadata": {"name": "new", "labels": {"app": "web"}},
            "spec": {"containers": [{"name": "c", "image": "i"}], "nodeSelector": {"zone": "z1"},
                     "topologySpreadConstraints": [{"maxSkew": 1, "topologyKey": "zone", "whenUnsatisfiable": "DoNotSchedule",
                        "labelSelector": {"matchLabels": {"app": "web"}}}]}
        }));
        // z2 is excluded by the nodeSelector, so its zero does not count as the minimum.
        let statuses = run(
            &pod,
            &nodes(vec![("a", Some("z1"), 3), ("b", Some("z2"), 0)]),
        );
        assert!(statuses[0].is_success());
    }

    #[test]
    fn scoring_prefers_emptier_domains() {
        let pod = spread_pod(
            json!({"maxSkew": 1, "topologyKey": "zone", "whenUnsatisfiable": "ScheduleAnyway",
                                    "labelSelector": {"matchLabels": {"app": "web"}}}),
        );
        let ns = nodes(vec![
            ("a", Some("z1"), 3),
            ("b", Some("z2"), 1),
            ("c", None, 0),
        ]);
        let snap = Snapshot::from_nodes(ns.iter().map(|n| (**n).clone()).collect());
        let plugin = PodTopologySpread;
        let mut state = CycleState::default();
        assert!(
            plugin
                .pre_score(&mut state, &pod, &snap.node_infos, &snap)
                .is_success()
        );
        let mut scores: Vec<i64> = snap
            .node_infos
            .iter()
            .map(|n| plugin.score(&state, &pod, n).unwrap())
            .collect();
        plugin.normalize_score(&state, &pod, &mut scores);
        assert!(scores[1] > scores[0], "{scores:?}");
        assert_eq!(scores[2], 0, "nodes without the key score 0");
    }
}
