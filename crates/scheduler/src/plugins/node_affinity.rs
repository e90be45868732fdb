//! NodeAffinity: `nodeSelector` and required node affinity filter nodes; preferred node
//! affinity terms add their weights to a node's score.

use std::sync::Arc;

use k8s_openapi::api::core::v1::{Node, NodeSelectorRequirement, NodeSelectorTerm, Pod};

use crate::cache::Snapshot;
use crate::framework::types::{Labels, empty_labels};
use crate::framework::{
    CycleState, FilterPlugin, MAX_NODE_SCORE, NodeInfo, Plugin, PodInfo, PreFilterPlugin,
    PreScorePlugin, ScorePlugin, Status, default_normalize_score,
};

pub const NAME: &str = "NodeAffinity";
pub const ERR_REASON_POD: &str = "node(s) didn't match Pod's node affinity/selector";

pub struct NodeAffinity;

pub fn new() -> Arc<dyn Plugin> {
    Arc::new(NodeAffinity)
}

fn requirement_matches(r: &NodeSelectorRequirement, value: Option<&str>) -> bool {
    let values = r.values.as_deref().unwrap_or(&[]);
    match r.operator.as_str() {
        "In" => value.is_some_and(|v| values.iter().any(|x| x == v)),
        "NotIn" => value.is_none_or(|v| !values.iter().any(|x| x == v)),
        "Exists" => value.is_some(),
        "DoesNotExist" => value.is_none(),
        "Gt" | "Lt" => {
            let (Some(v), Some(bound)) = (
                value.and_then(|v| v.parse::<i64>().ok()),
                values.first().and_then(|b| b.parse::<i64>().ok()),
            ) else {
                return false;
            };
            if r.operator == "Gt" {
                v > bound
            } else {
                v < bound
            }
        }
        _ => false,
    }
}

/// One node selector term: all its expressions (on labels) and fields (`metadata.name`)
/// hold; an empty term matches nothing.
pub fn term_matches(term: &NodeSelectorTerm, node_name: &str, labels: &Labels) -> bool {
    let expressions = term.match_expressions.as_deref().unwrap_or(&[]);
    let fields = term.match_fields.as_deref().unwrap_or(&[]);
    if expressions.is_empty() && fields.is_empty() {
        return false;
    }
    expressions
        .iter()
        .all(|r| requirement_matches(r, labels.get(&r.key).map(String::as_str)))
        && fields.iter().all(|r| {
            let value = (r.key == "metadata.name").then_some(node_name);
            requirement_matches(r, value)
        })
}

/// Whether the node satisfies the pod's `nodeSelector` and required node affinity (terms ORed).
pub fn required_matches(pod: &Pod, node: &Node) -> bool {
    let Some(spec) = pod.spec.as_ref() else {
        return true;
    };
    let labels = node.metadata.labels.as_ref().unwrap_or(empty_labels());
    let name = node.metadata.name.as_deref().unwrap_or("");
    if let Some(selector) = spec.node_selector.as_ref()
        && !selector.iter().all(|(k, v)| labels.get(k) == Some(v))
    {
        return false;
    }
    let required = spec
        .affinity
        .as_ref()
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|a| {
            a.required_during_scheduling_ignored_during_execution
                .as_ref()
        });
    match required {
        None => true,
        Some(selector) => selector
            .node_selector_terms
            .iter()
            .any(|t| term_matches(t, name, labels)),
    }
}

/// Sum of the weights of the pod's preferred terms the node matches.
pub fn preferred_score(pod: &Pod, node: &Node) -> i64 {
    let labels = node.metadata.labels.as_ref().unwrap_or(empty_labels());
    let name = node.metadata.name.as_deref().unwrap_or("");
    pod.spec
        .as_ref()
        .and_then(|s| s.affinity.as_ref())
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|a| {
            a.preferred_during_scheduling_ignored_during_execution
                .as_ref()
        })
        .into_iter()
        .flatten()
        .filter(|t| term_matches(&t.preference, name, labels))
        .map(|t| i64::from(t.weight))
        .sum()
}

fn has_preferred(pod: &Pod) -> bool {
    pod.spec
        .as_ref()
        .and_then(|s| s.affinity.as_ref())
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|a| {
            a.preferred_during_scheduling_ignored_during_execution
                .as_ref()
        })
        .is_some_and(|p| !p.is_empty())
}

/// Whether the pod restricts its nodes at all (a `nodeSelector` or required node affinity).
fn has_required(pod: &Pod) -> bool {
    let Some(spec) = pod.spec.as_ref() else {
        return false;
    };
    spec.node_selector.as_ref().is_some_and(|s| !s.is_empty())
        || spec
            .affinity
            .as_ref()
            .and_then(|a| a.node_affinity.as_ref())
            .is_some_and(|a| {
                a.required_during_scheduling_ignored_during_execution
                    .is_some()
            })
}

impl Plugin for NodeAffinity {
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

impl PreFilterPlugin for NodeAffinity {
    /// Nothing to filter for a pod without a selector or required affinity (as upstream, so
    /// that thousands of nodes are not checked against nothing).
    fn pre_filter(&self, _state: &mut CycleState, pod: &PodInfo, _snapshot: &Snapshot) -> Status {
        if has_required(&pod.pod) {
            Status::success()
        } else {
            Status::skip()
        }
    }
}

impl FilterPlugin for NodeAffinity {
    fn filter(&self, _state: &CycleState, pod: &PodInfo, node: &NodeInfo) -> Status {
        match node.node.as_ref() {
            Some(n) if required_matches(&pod.pod, n) => Status::success(),
            _ => Status::unresolvable(ERR_REASON_POD),
        }
    }
}

impl PreScorePlugin for NodeAffinity {
    fn pre_score(
        &self,
        _state: &mut CycleState,
        pod: &PodInfo,
        _nodes: &[Arc<NodeInfo>],
        _snapshot: &crate::cache::Snapshot,
    ) -> Status {
        if has_preferred(&pod.pod) {
            Status::success()
        } else {
            Status::skip()
        }
    }
}

impl ScorePlugin for NodeAffinity {
    fn score(&self, _state: &CycleState, pod: &PodInfo, node: &NodeInfo) -> Result<i64, Status> {
        Ok(node
            .node
            .as_ref()
            .map(|n| preferred_score(&pod.pod, n))
            .unwrap_or(0))
    }
    fn normalize_score(&self, _state: &CycleState, _pod: &PodInfo, scores: &mut [i64]) {
        default_normalize_score(MAX_NODE_SCORE, false, scores);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugins::testutil::{pod, simple_node};
    use serde_json::json;

    #[test]
    fn required_table() {
        let node = simple_node("n1", json!({"zone": "a", "disk": "ssd", "gen": "5"}));
        let aff = |terms: serde_json::Value| {
            pod(json!({"spec": {"containers": [{"name": "c", "image": "i"}],
                "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": terms}}}}}))
        };
        let cases = [
            ("no constraints", pod(json!({})), true),
            (
                "nodeSelector matches",
                pod(
                    json!({"spec": {"containers": [{"name": "c", "image": "i"}], "nodeSelector": {"zone": "a"}}}),
                ),
                true,
            ),
            (
                "nodeSelector differs",
                pod(
                    json!({"spec": {"containers": [{"name": "c", "image": "i"}], "nodeSelector": {"zone": "b"}}}),
                ),
                false,
            ),
            (
                "In",
                aff(
                    json!([{"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a", "b"]}]}]),
                ),
                true,
            ),
            (
                "NotIn",
                aff(
                    json!([{"matchExpressions": [{"key": "zone", "operator": "NotIn", "values": ["a"]}]}]),
                ),
                false,
            ),
            (
                "NotIn on a missing label",
                aff(
                    json!([{"matchExpressions": [{"key": "x", "operator": "NotIn", "values": ["a"]}]}]),
                ),
                true,
            ),
            (
                "Exists",
                aff(json!([{"matchExpressions": [{"key": "disk", "operator": "Exists"}]}])),
                true,
            ),
            (
                "DoesNotExist",
                aff(json!([{"matchExpressions": [{"key": "disk", "operator": "DoesNotExist"}]}])),
                false,
            ),
            (
                "Gt",
                aff(
                    json!([{"matchExpressions": [{"key": "gen", "operator": "Gt", "values": ["4"]}]}]),
                ),
                true,
            ),
            (
                "Lt",
                aff(
                    json!([{"matchExpressions": [{"key": "gen", "operator": "Lt", "values": ["4"]}]}]),
                ),
                false,
            ),
            (
                "terms are ORed",
                aff(json!([
                    {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["b"]}]},
                    {"matchExpressions": [{"key": "disk", "operator": "In", "values": ["ssd"]}]}
                ])),
                true,
            ),
            (
                "expressions are ANDed",
                aff(json!([{"matchExpressions": [
                    {"key": "zone", "operator": "In", "values": ["a"]},
                    {"key": "disk", "operator": "In", "values": ["hdd"]}
                ]}])),
                false,
            ),
            (
                "matchFields on the name",
                aff(
                    json!([{"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["n1"]}]}]),
                ),
                true,
            ),
            (
                "matchFields other name",
                aff(
                    json!([{"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["n2"]}]}]),
                ),
                false,
            ),
            ("empty term matches nothing", aff(json!([{}])), false),
        ];
        for (what, p, want) in cases {
            assert_eq!(required_matches(&p, &node), want, "{what}");
        }
    }

    #[test]
    fn preferred_weights_add_up() {
        let node = simple_node("n1", json!({"zone": "a", "disk": "ssd"}));
        let p = pod(json!({"spec": {"containers": [{"name": "c", "image": "i"}],
        "affinity": {"nodeAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
            {"weight": 10, "preference": {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a"]}]}},
            {"weight": 5, "preference": {"matchExpressions": [{"key": "disk", "operator": "In", "values": ["ssd"]}]}},
            {"weight": 70, "preference": {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["b"]}]}}
        ]}}}}));
        assert_eq!(preferred_score(&p, &node), 15);
    }

    #[test]
    fn pre_filter_skips_pods_without_requirements() {
        use crate::framework::{Code, Framework};
        use crate::plugins::testutil::{node_info, pod_info};
        let snapshot = Snapshot::default();
        let run = |p: serde_json::Value| {
            NodeAffinity
                .pre_filter(&mut CycleState::default(), &pod_info(p), &snapshot)
                .code
        };
        let c = json!([{"name": "c", "image": "i"}]);
        assert_eq!(run(json!({"spec": {"containers": c}})), Code::Skip);
        assert_eq!(
            run(json!({"spec": {"containers": c, "nodeSelector": {"zone": "a"}}})),
            Code::Success
        );
        let required = json!({"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
            {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["b"]}]}]}});
        let constrained =
            json!({"spec": {"containers": c, "affinity": {"nodeAffinity": required}}});
        assert_eq!(run(constrained.clone()), Code::Success);
        // Through the framework: the constrained pod is still filtered out of zone a.
        let fw = Framework::default_profile();
        let mut state = CycleState::default();
        let p = pod_info(constrained);
        assert!(fw.run_pre_filter(&mut state, &p, &snapshot).is_success());
        let n = node_info(simple_node("n1", json!({"zone": "a"})), vec![]);
        assert_eq!(fw.run_filter(&state, &p, &n).plugin, NAME);
    }
}
