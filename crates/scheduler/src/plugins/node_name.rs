//! NodeName: a pod that names a node fits only there.

use std::sync::Arc;

use crate::framework::{CycleState, FilterPlugin, NodeInfo, Plugin, PodInfo, Status};

pub const NAME: &str = "NodeName";
pub const ERR_REASON: &str = "node(s) didn't match the requested node name";

pub struct NodeName;

pub fn new() -> Arc<dyn Plugin> {
    Arc::new(NodeName)
}

/// Whether a pod asking for `requested` (spec.nodeName, maybe empty) may go to `node`.
pub fn fits(requested: Option<&str>, node: &str) -> bool {
    requested.is_none_or(|r| r.is_empty() || r == node)
}

impl Plugin for NodeName {
    fn name(&self) -> &'static str {
        NAME
    }
    fn as_filter(&self) -> Option<&dyn FilterPlugin> {
        Some(self)
    }
}

impl FilterPlugin for NodeName {
    fn filter(&self, _state: &CycleState, pod: &PodInfo, node: &NodeInfo) -> Status {
        if fits(pod.node_name(), &node.name) {
            Status::success()
        } else {
            Status::unresolvable(ERR_REASON)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table() {
        for (requested, node, want) in [
            (None, "a", true),
            (Some(""), "a", true),
            (Some("a"), "a", true),
            (Some("b"), "a", false),
        ] {
            assert_eq!(fits(requested, node), want, "{requested:?} on {node}");
        }
    }
}
