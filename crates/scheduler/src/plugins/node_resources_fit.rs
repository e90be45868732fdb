//! NodeResourcesFit: the pod's requests (cpu, memory, ephemeral-storage, pod count, extended
//! resources) must fit in what the node has left; scoring prefers the least allocated node.

use std::sync::Arc;

use crate::framework::{
    Code, CycleState, FilterPlugin, NodeInfo, Plugin, PodInfo, ScorePlugin, Status,
};
use crate::resource::{CPU, EPHEMERAL_STORAGE, MEMORY, PODS, Resource};

pub const NAME: &str = "NodeResourcesFit";

pub struct NodeResourcesFit;

pub fn new() -> Arc<dyn Plugin> {
    Arc::new(NodeResourcesFit)
}

/// A resource the node is short of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InsufficientResource {
    pub resource_name: String,
    pub reason: String,
    pub requested: i64,
    pub used: i64,
    pub capacity: i64,
    /// The request exceeds the node's whole allocatable: evicting pods cannot help.
    pub unresolvable: bool,
}

/// What the node lacks for `request` given what its pods (`pod_count` of them) already
/// request (upstream's `fitsRequest`).
pub fn insufficient_resources(
    request: &Resource,
    pod_count: usize,
    requested: &Resource,
    allocatable: &Resource,
) -> Vec<InsufficientResource> {
    let mut out = Vec::new();
    if pod_count as i64 + 1 > allocatable.allowed_pod_number {
        out.push(InsufficientResource {
            resource_name: PODS.into(),
            reason: "Too many pods".into(),
            requested: 1,
            used: pod_count as i64,
            capacity: allocatable.allowed_pod_number,
            unresolvable: false,
        });
    }
    if request.is_zero() {
        return out;
    }
    let mut check = |name: &str, want: i64| {
        if want <= 0 {
            return;
        }
        let cap = allocatable.get(name);
        let used = requested.get(name);
        if want > cap - used {
            out.push(InsufficientResource {
                resource_name: name.to_string(),
                reason: format!("Insufficient {name}"),
                requested: want,
                used,
                capacity: cap,
                unresolvable: want > cap,
            });
        }
    };
    check(CPU, request.milli_cpu);
    check(MEMORY, request.memory);
    check(EPHEMERAL_STORAGE, request.ephemeral_storage);
    for (name, want) in &request.scalar {
        check(name, *want);
    }
    out
}

/// One resource's LeastAllocated score: the free share after placing the pod, 0..=100.
pub fn least_requested_score(requested: i64, capacity: i64) -> i64 {
    if capacity == 0 || requested > capacity {
        return 0;
    }
    (capacity - requested) * crate::framework::MAX_NODE_SCORE / capacity
}

/// LeastAllocated over cpu and memory (weight 1 each), counting `pod` on the node with
/// non-zero defaults for request-less containers.
pub fn least_allocated_score(
    pod: &Resource,
    node_requested: &Resource,
    allocatable: &Resource,
) -> i64 {
    let mut score = 0;
    let mut weights = 0;
    for (req, cap) in [
        (
            node_requested.milli_cpu + pod.milli_cpu,
            allocatable.milli_cpu,
        ),
        (node_requested.memory + pod.memory, allocatable.memory),
    ] {
        if cap == 0 {
            continue;
        }
        score += least_requested_score(req, cap);
        weights += 1;
    }
    if weights == 0 { 0 } else { score / weights }
}

impl Plugin for NodeResourcesFit {
    fn name(&self) -> &'static str {
        NAME
    }
    fn as_filter(&self) -> Option<&dyn FilterPlugin> {
        Some(self)
    }
    fn as_score(&self) -> Option<&dyn ScorePlugin> {
        Some(self)
    }
}

impl FilterPlugin for NodeResourcesFit {
    fn filter(&self, _state: &CycleState, pod: &PodInfo, node: &NodeInfo) -> Status {
        let missing = insufficient_resources(
            &pod.requests,
            node.pods.len(),
            &node.requested,
            &node.allocatable,
        );
        if missing.is_empty() {
            return Status::success();
        }
        let code = if missing.iter().any(|m| m.unresolvable) {
            Code::UnschedulableAndUnresolvable
        } else {
            Code::Unschedulable
        };
        Status::with_reasons(code, missing.into_iter().map(|m| m.reason).collect())
    }
}

impl ScorePlugin for NodeResourcesFit {
    fn score(&self, _state: &CycleState, pod: &PodInfo, node: &NodeInfo) -> Result<i64, Status> {
        Ok(least_allocated_score(
            &pod.non_zero_requests,
            &node.non_zero_requested,
            &node.allocatable,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn res(cpu: i64, mem: i64, pods: i64) -> Resource {
        Resource {
            milli_cpu: cpu,
            memory: mem,
            allowed_pod_number: pods,
            ..Default::default()
        }
    }

    fn reasons(v: &[InsufficientResource]) -> Vec<(&str, bool)> {
        v.iter()
            .map(|r| (r.reason.as_str(), r.unresolvable))
            .collect()
    }

    #[test]
    fn fit_table() {
        let alloc = res(4000, 8 << 30, 3);
        type Case = (
            &'static str,
            Resource,
            usize,
            Resource,
            Vec<(&'static str, bool)>,
        );
        let cases: Vec<Case> = vec![
            ("fits", res(1000, 1 << 30, 0), 0, res(0, 0, 0), vec![]),
            (
                "cpu used up",
                res(1000, 0, 0),
                1,
                res(3500, 0, 0),
                vec![("Insufficient cpu", false)],
            ),
            (
                "more cpu than the node has",
                res(5000, 0, 0),
                0,
                res(0, 0, 0),
                vec![("Insufficient cpu", true)],
            ),
            (
                "cpu and memory",
                res(1000, 8 << 30, 0),
                1,
                res(3500, 1, 0),
                vec![("Insufficient cpu", false), ("Insufficient memory", false)],
            ),
            (
                "too many pods",
                res(0, 0, 0),
                3,
                res(0, 0, 0),
                vec![("Too many pods", false)],
            ),
        ];
        for (what, request, pods, used, want) in cases {
            let got = insufficient_resources(&request, pods, &used, &alloc);
            assert_eq!(reasons(&got), want, "{what}");
        }
    }

    #[test]
    fn extended_resources() {
        let mut alloc = res(4000, 1 << 30, 10);
        alloc.scalar.insert("example.com/gpu".into(), 2);
        let mut used = res(0, 0, 0);
        used.scalar.insert("example.com/gpu".into(), 1);
        let mut req = res(0, 0, 0);
        req.scalar.insert("example.com/gpu".into(), 2);
        assert_eq!(
            reasons(&insufficient_resources(&req, 1, &used, &alloc)),
            vec![("Insufficient example.com/gpu", false)]
        );
        req.scalar.insert("example.com/fpga".into(), 1);
        let got = insufficient_resources(&req, 1, &used, &alloc);
        assert!(
            got.iter()
                .any(|r| r.reason == "Insufficient example.com/fpga" && r.unresolvable)
        );
    }

    #[test]
    fn least_allocated() {
        let alloc = res(4000, 4000, 10);
        // Empty node, pod takes a quarter of each: 75.
        assert_eq!(
            least_allocated_score(&res(1000, 1000, 0), &res(0, 0, 0), &alloc),
            75
        );
        // Half used already: 25.
        assert_eq!(
            least_allocated_score(&res(1000, 1000, 0), &res(2000, 2000, 0), &alloc),
            25
        );
        // Over capacity scores 0 for that resource.
        assert_eq!(
            least_allocated_score(&res(5000, 0, 0), &res(0, 0, 0), &alloc),
            50
        );
    }
}
