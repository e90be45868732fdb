//! NodeUnschedulable: cordoned nodes (spec.unschedulable) take only pods that tolerate the
//! `node.kubernetes.io/unschedulable:NoSchedule` taint.

use std::sync::Arc;

use k8s_openapi::api::core::v1::{Taint, Toleration};

use crate::framework::{CycleState, FilterPlugin, NodeInfo, Plugin, PodInfo, Status};
use crate::plugins::taint_toleration::tolerates;

pub const NAME: &str = "NodeUnschedulable";
pub const ERR_REASON_UNSCHEDULABLE: &str = "node(s) were unschedulable";
pub const TAINT_NODE_UNSCHEDULABLE: &str = "node.kubernetes.io/unschedulable";

pub struct NodeUnschedulable;

pub fn new() -> Arc<dyn Plugin> {
    Arc::new(NodeUnschedulable)
}

/// Whether a pod with these tolerations may go to a node with this `spec.unschedulable`.
pub fn fits(unschedulable: bool, tolerations: &[Toleration]) -> bool {
    if !unschedulable {
        return true;
    }
    let taint = Taint {
        key: TAINT_NODE_UNSCHEDULABLE.into(),
        effect: "NoSchedule".into(),
        ..Default::default()
    };
    tolerations.iter().any(|t| tolerates(t, &taint))
}

impl Plugin for NodeUnschedulable {
    fn name(&self) -> &'static str {
        NAME
    }
    fn as_filter(&self) -> Option<&dyn FilterPlugin> {
        Some(self)
    }
}

impl FilterPlugin for NodeUnschedulable {
    fn filter(&self, _state: &CycleState, pod: &PodInfo, node: &NodeInfo) -> Status {
        let unschedulable = node.unschedulable;
        let tolerations = pod
            .pod
            .spec
            .as_ref()
            .and_then(|s| s.tolerations.as_deref())
            .unwrap_or(&[]);
        if fits(unschedulable, tolerations) {
            Status::success()
        } else {
            Status::unresolvable(ERR_REASON_UNSCHEDULABLE)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tol(key: Option<&str>, op: &str, effect: Option<&str>) -> Toleration {
        Toleration {
            key: key.map(Into::into),
            operator: Some(op.into()),
            effect: effect.map(Into::into),
            ..Default::default()
        }
    }

    #[test]
    fn table() {
        let cases = [
            ("schedulable node", false, vec![], true),
            ("cordoned, no toleration", true, vec![], false),
            (
                "cordoned, tolerated",
                true,
                vec![tol(
                    Some(TAINT_NODE_UNSCHEDULABLE),
                    "Exists",
                    Some("NoSchedule"),
                )],
                true,
            ),
            (
                "cordoned, tolerate everything",
                true,
                vec![tol(None, "Exists", None)],
                true,
            ),
            (
                "cordoned, other effect",
                true,
                vec![tol(
                    Some(TAINT_NODE_UNSCHEDULABLE),
                    "Exists",
                    Some("NoExecute"),
                )],
                false,
            ),
        ];
        for (what, unschedulable, tolerations, want) in cases {
            assert_eq!(fits(unschedulable, &tolerations), want, "{what}");
        }
    }
}
