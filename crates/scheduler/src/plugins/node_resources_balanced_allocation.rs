//! NodeResourcesBalancedAllocation: prefer nodes whose cpu and memory would be used in
//! similar proportions after placing the pod.

use std::sync::Arc;

use crate::cache::Snapshot;
use crate::framework::{
    CycleState, MAX_NODE_SCORE, NodeInfo, Plugin, PodInfo, PreScorePlugin, ScorePlugin, Status,
};

pub const NAME: &str = "NodeResourcesBalancedAllocation";

pub struct BalancedAllocation;

pub fn new() -> Arc<dyn Plugin> {
    Arc::new(BalancedAllocation)
}

/// `(1 - standard deviation of the used fractions) * 100`; fractions are capped at 1.
pub fn balanced_score(fractions: &[f64]) -> i64 {
    if fractions.is_empty() {
        return 0;
    }
    let f: Vec<f64> = fractions.iter().map(|x| x.min(1.0)).collect();
    let std = if f.len() == 2 {
        (f[0] - f[1]).abs() / 2.0
    } else {
        let mean = f.iter().sum::<f64>() / f.len() as f64;
        (f.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / f.len() as f64).sqrt()
    };
    ((1.0 - std) * MAX_NODE_SCORE as f64) as i64
}

impl Plugin for BalancedAllocation {
    fn name(&self) -> &'static str {
        NAME
    }
    fn as_pre_score(&self) -> Option<&dyn PreScorePlugin> {
        Some(self)
    }
    fn as_score(&self) -> Option<&dyn ScorePlugin> {
        Some(self)
    }
}

impl PreScorePlugin for BalancedAllocation {
    fn pre_score(
        &self,
        _state: &mut CycleState,
        pod: &PodInfo,
        _nodes: &[Arc<NodeInfo>],
        _snapshot: &Snapshot,
    ) -> Status {
        // Best-effort pods change no balance.
        if pod.requests.milli_cpu == 0 && pod.requests.memory == 0 {
            Status::skip()
        } else {
            Status::success()
        }
    }
}

impl ScorePlugin for BalancedAllocation {
    fn score(&self, _state: &CycleState, pod: &PodInfo, node: &NodeInfo) -> Result<i64, Status> {
        let mut fractions = Vec::with_capacity(2);
        for (used, want, cap) in [
            (
                node.requested.milli_cpu,
                pod.requests.milli_cpu,
                node.allocatable.milli_cpu,
            ),
            (
                node.requested.memory,
                pod.requests.memory,
                node.allocatable.memory,
            ),
        ] {
            if cap > 0 {
                fractions.push((used + want) as f64 / cap as f64);
            }
        }
        Ok(balanced_score(&fractions))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table() {
        for (fractions, want) in [
            (vec![0.5, 0.5], 100),
            (vec![0.25, 0.75], 75),
            (vec![0.0, 1.0], 50),
            (vec![2.0, 1.0], 100),
            (vec![], 0),
        ] {
            assert_eq!(balanced_score(&fractions), want, "{fractions:?}");
        }
    }
}
