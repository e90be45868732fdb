//! DefaultPreemption (PostFilter): when a pod fits nowhere, find a node where evicting pods of
//! lower priority makes it fit, choosing the node that costs least (upstream's criteria minus
//! PodDisruptionBudgets: lowest highest victim priority, then smallest priority sum, then
//! fewest victims, then latest start), and nominate it.

use std::cmp::Ordering;
use std::collections::HashMap;
use std::sync::Arc;

use crate::cache::Snapshot;
use crate::framework::{
    Code, CycleState, Diagnosis, FitError, Framework, NodeInfo, Plugin, PodInfo, PostFilterPlugin,
    PostFilterResult, Status,
};

pub const NAME: &str = "DefaultPreemption";
pub const NO_VICTIMS: &str = "No preemption victims found for incoming pod";
pub const NOT_HELPFUL: &str = "Preemption is not helpful for scheduling";
/// Dry-run at least this share of the candidate nodes…
pub const MIN_CANDIDATE_NODES_PERCENTAGE: usize = 10;
/// …and at least this many.
pub const MIN_CANDIDATE_NODES_ABSOLUTE: usize = 100;

pub struct DefaultPreemption;

pub fn new() -> Arc<dyn Plugin> {
    Arc::new(DefaultPreemption)
}

/// Higher priority first, then the one that started earlier (upstream's `MoreImportantPod`).
pub fn more_important(a: &PodInfo, b: &PodInfo) -> Ordering {
    b.priority
        .cmp(&a.priority)
        .then_with(|| start_time(a).cmp(&start_time(b)))
}

fn start_time(p: &PodInfo) -> i64 {
    p.pod
        .status
        .as_ref()
        .and_then(|s| s.start_time.as_ref())
        .or(p.pod.metadata.creation_timestamp.as_ref())
        .map(|t| t.0.as_second())
        .unwrap_or(i64::MAX)
}

/// Whether the pod may preempt at all; the reason when not.
pub fn eligible(pod: &PodInfo, snapshot: &Snapshot, diagnosis: &Diagnosis) -> Result<(), String> {
    let policy = pod
        .pod
        .spec
        .as_ref()
        .and_then(|s| s.preemption_policy.as_deref());
    if policy == Some("Never") {
        return Err("not eligible due to preemptionPolicy=Never.".into());
    }
    // A pod that already preempted waits for its victims to go rather than preempting again.
    if let Some(nominated) = pod.nominated_node() {
        let unresolvable = diagnosis
            .node_to_status
            .get(nominated)
            .is_some_and(|s| s.code == Code::UnschedulableAndUnresolvable);
        if !unresolvable
            && let Some(node) = snapshot.get(nominated)
            && node
                .pods
                .iter()
                .any(|p| p.is_terminating() && p.priority < pod.priority)
        {
            return Err("not eligible due to a terminating pod on the nominated node.".into());
        }
    }
    Ok(())
}

/// The fewest pods to evict from `node` so that `pod` passes the Filters: remove every
/// lower-priority pod, then put back as many as fit, most important first.
pub fn select_victims_on_node(
    framework: &Framework,
    state: &CycleState,
    pod: &PodInfo,
    node: &NodeInfo,
    snapshot: &Snapshot,
) -> Result<Vec<Arc<PodInfo>>, Status> {
    let mut potential: Vec<Arc<PodInfo>> = node
        .pods
        .iter()
        .filter(|p| p.priority < pod.priority)
        .cloned()
        .collect();
    if potential.is_empty() {
        return Err(Status::unresolvable(NO_VICTIMS));
    }
    let mut state = state.clone();
    let mut node = node.clone();
    for p in &potential {
        node.remove_pod(&p.key);
        framework.run_pre_filter_remove_pod(&mut state, pod, p, &node, snapshot);
    }
    let status = framework.run_filter(&state, pod, &node);
    if !status.is_success() {
        return Err(status);
    }
    potential.sort_by(|a, b| more_important(a, b));
    let mut victims = Vec::new();
    for p in potential {
        node.add_pod(p.clone());
        framework.run_pre_filter_add_pod(&mut state, pod, &p, &node, snapshot);
        if !framework.run_filter(&state, pod, &node).is_success() {
            node.remove_pod(&p.key);
            framework.run_pre_filter_remove_pod(&mut state, pod, &p, &node, snapshot);
            victims.push(p);
        }
    }
    Ok(victims)
}

/// Pick the node whose victims cost least (victims sorted most important first).
pub fn pick_one_node(candidates: &[(String, Vec<Arc<PodInfo>>)]) -> Option<usize> {
    if candidates.is_empty() {
        return None;
    }
    let key = |victims: &Vec<Arc<PodInfo>>| {
        let highest = victims
            .first()
            .map(|p| i64::from(p.priority))
            .unwrap_or(i64::MIN);
        let sum: i64 = victims
            .iter()
            .map(|p| i64::from(p.priority) + i64::from(i32::MAX) + 1)
            .sum();
        let earliest_of_highest = victims
            .iter()
            .filter(|p| i64::from(p.priority) == highest)
            .map(|p| start_time(p))
            .min()
            .unwrap_or(i64::MAX);
        // Smaller is better for each, except the start time where later is better.
        (
            highest,
            sum,
            victims.len(),
            std::cmp::Reverse(earliest_of_highest),
        )
    };
    (0..candidates.len()).min_by_key(|&i| key(&candidates[i].1))
}

impl Plugin for DefaultPreemption {
    fn name(&self) -> &'static str {
        NAME
    }
    fn as_post_filter(&self) -> Option<&dyn PostFilterPlugin> {
        Some(self)
    }
}

impl PostFilterPlugin for DefaultPreemption {
    fn post_filter(
        &self,
        framework: &Framework,
        state: &CycleState,
        pod: &PodInfo,
        snapshot: &Snapshot,
        diagnosis: &Diagnosis,
    ) -> (Option<PostFilterResult>, Status) {
        if let Err(reason) = eligible(pod, snapshot, diagnosis) {
            return (None, Status::unschedulable(format!("preemption: {reason}")));
        }
        // Only nodes that failed for a reason evicting pods can change.
        let potential: Vec<&Arc<NodeInfo>> = snapshot
            .node_infos
            .iter()
            .filter(|n| {
                diagnosis
                    .node_to_status
                    .get(&n.name)
                    .is_some_and(|s| s.code == Code::Unschedulable)
            })
            .collect();
        let wanted = (potential.len() * MIN_CANDIDATE_NODES_PERCENTAGE / 100)
            .max(MIN_CANDIDATE_NODES_ABSOLUTE)
            .min(potential.len());
        let offset = if potential.is_empty() {
            0
        } else {
            rand::random_range(0..potential.len())
        };
        let mut statuses: HashMap<String, Status> = HashMap::new();
        let mut candidates = Vec::new();
        for i in 0..potential.len() {
            if candidates.len() >= wanted {
                break;
            }
            let node = potential[(offset + i) % potential.len()];
            match select_victims_on_node(framework, state, pod, node, snapshot) {
                Ok(victims) if !victims.is_empty() => candidates.push((node.name.clone(), victims)),
                Ok(_) => {
                    statuses.insert(
                        node.name.clone(),
                        Status::error(format!(
                            "expected at least one victim pod on node {:?}",
                            node.name
                        )),
                    );
                }
                Err(status) => {
                    statuses.insert(node.name.clone(), status);
                }
            }
        }
        let Some(best) = pick_one_node(&candidates) else {
            for n in &snapshot.node_infos {
                statuses
                    .entry(n.name.clone())
                    .or_insert_with(|| Status::unresolvable(NOT_HELPFUL));
            }
            let fit = FitError {
                num_all_nodes: snapshot.num_nodes(),
                diagnosis: Diagnosis {
                    node_to_status: statuses,
                    ..Default::default()
                },
            };
            return (
                Some(PostFilterResult::default()),
                Status::unschedulable(format!("preemption: {fit}")),
            );
        };
        let (node, victims) = candidates.swap_remove(best);
        (
            Some(PostFilterResult {
                nominated_node: Some(node),
                victims,
            }),
            Status::success(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugins::testutil::{node, node_info, pod_info};
    use serde_json::json;

    fn pod(name: &str, cpu: &str, priority: i32) -> Arc<PodInfo> {
        pod_info(json!({
            "metadata": {"name": name, "creationTimestamp": "2024-01-01T00:00:00Z"},
            "spec": {"priority": priority, "containers": [{"name": "c", "image": "i", "resources": {"requests": {"cpu": cpu}}}]}
        }))
    }

    fn small_node(name: &str, pods: Vec<Arc<PodInfo>>) -> NodeInfo {
        node_info(
            node(
                json!({"metadata": {"name": name}, "status": {"allocatable": {"cpu": "2", "memory": "1Gi", "pods": "10"}}}),
            ),
            pods,
        )
    }

    fn preempt(pod: &PodInfo, nodes: Vec<NodeInfo>) -> (Option<PostFilterResult>, Status) {
        let fw = Framework::default_profile();
        let snap = Snapshot::from_nodes(nodes);
        let mut state = CycleState::default();
        assert!(fw.run_pre_filter(&mut state, pod, &snap).is_success());
        let mut diagnosis = Diagnosis::default();
        for n in &snap.node_infos {
            let s = fw.run_filter(&state, pod, n);
            assert!(!s.is_success());
            diagnosis.node_to_status.insert(n.name.clone(), s);
        }
        DefaultPreemption.post_filter(&fw, &state, pod, &snap, &diagnosis)
    }

    #[test]
    fn evicts_the_cheapest_victims() {
        // n1 holds a priority-100 pod, n2 two priority-10 pods: n2's victims are cheaper.
        let n1 = small_node("n1", vec![pod("a", "2", 100)]);
        let n2 = small_node("n2", vec![pod("b", "1", 10), pod("c", "1", 10)]);
        let (result, status) = preempt(&pod("hi", "2", 1000), vec![n1, n2]);
        assert!(status.is_success(), "{status:?}");
        let result = result.unwrap();
        assert_eq!(result.nominated_node.as_deref(), Some("n2"));
        let mut victims: Vec<&str> = result.victims.iter().map(|v| v.name.as_str()).collect();
        victims.sort();
        assert_eq!(victims, vec!["b", "c"]);
    }

    #[test]
    fn reprieves_pods_that_can_stay() {
        let n = small_node("n1", vec![pod("big", "1500m", 10), pod("small", "500m", 5)]);
        // Needs 1500m: evicting `big` alone suffices; `small` (less important) is... also
        // considered, but `big` goes back first and does not fit, `small` fits back.
        let (result, status) = preempt(&pod("hi", "1500m", 1000), vec![n]);
        assert!(status.is_success());
        let victims: Vec<String> = result
            .unwrap()
            .victims
            .iter()
            .map(|v| v.name.clone())
            .collect();
        assert_eq!(victims, vec!["big".to_string()]);
    }

    #[test]
    fn nothing_to_preempt_message() {
        let n = small_node("n1", vec![pod("a", "2", 1000)]);
        let (_, status) = preempt(&pod("low", "1", 10), vec![n]);
        assert_eq!(
            status.message(),
            "preemption: 0/1 nodes are available: 1 No preemption victims found for incoming pod."
        );
        // Too big for any node: the node is unresolvable, so preemption does not help.
        let n = small_node("n1", vec![]);
        let (_, status) = preempt(&pod("huge", "64", 10), vec![n]);
        assert_eq!(
            status.message(),
            "preemption: 0/1 nodes are available: 1 Preemption is not helpful for scheduling."
        );
    }

    #[test]
    fn preemption_policy_never() {
        let n = small_node("n1", vec![pod("a", "2", 1)]);
        let p = pod_info(json!({"metadata": {"name": "never"},
            "spec": {"priority": 100, "preemptionPolicy": "Never", "containers": [{"name": "c", "image": "i", "resources": {"requests": {"cpu": "1"}}}]}}));
        let (_, status) = preempt(&p, vec![n]);
        assert_eq!(
            status.message(),
            "preemption: not eligible due to preemptionPolicy=Never."
        );
    }

    #[test]
    fn pick_one_node_criteria() {
        let c = |name: &str, prios: &[i32]| {
            (
                name.to_string(),
                prios
                    .iter()
                    .enumerate()
                    .map(|(i, p)| pod(&format!("{name}{i}"), "1", *p))
                    .collect::<Vec<_>>(),
            )
        };
        // Lowest highest-priority victim wins.
        assert_eq!(
            pick_one_node(&[c("a", &[50]), c("b", &[10, 10, 10])]),
            Some(1)
        );
        // Same highest: smaller sum wins.
        assert_eq!(pick_one_node(&[c("a", &[10, 10]), c("b", &[10])]), Some(1));
        assert_eq!(pick_one_node(&[]), None);
    }
}
