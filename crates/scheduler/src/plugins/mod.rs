//! The in-tree plugins, one file each, and the registry that builds them by name.

pub mod default_binder;
pub mod default_preemption;
pub mod image_locality;
pub mod inter_pod_affinity;
pub mod node_affinity;
pub mod node_name;
pub mod node_ports;
pub mod node_resources_balanced_allocation;
pub mod node_resources_fit;
pub mod node_unschedulable;
pub mod pod_topology_spread;
pub mod taint_toleration;
pub mod volume_binding;

use std::collections::HashMap;
use std::sync::Arc;

use crate::framework::Plugin;

pub type Constructor = fn() -> Arc<dyn Plugin>;

/// Every plugin by name.
pub fn registry() -> HashMap<&'static str, Constructor> {
    let entries: [(&'static str, Constructor); 13] = [
        (node_name::NAME, node_name::new),
        (node_unschedulable::NAME, node_unschedulable::new),
        (taint_toleration::NAME, taint_toleration::new),
        (node_affinity::NAME, node_affinity::new),
        (node_ports::NAME, node_ports::new),
        (node_resources_fit::NAME, node_resources_fit::new),
        (volume_binding::NAME, volume_binding::new),
        (pod_topology_spread::NAME, pod_topology_spread::new),
        (inter_pod_affinity::NAME, inter_pod_affinity::new),
        (
            node_resources_balanced_allocation::NAME,
            node_resources_balanced_allocation::new,
        ),
        (image_locality::NAME, image_locality::new),
        (default_preemption::NAME, default_preemption::new),
        (default_binder::NAME, default_binder::new),
    ];
    entries.into_iter().collect()
}

/// Upstream's default profile: plugins in the order their Filters run, with Score weights
/// (weights matter only for plugins that score).
pub const DEFAULT_PLUGINS: &[(&str, i64)] = &[
    (node_unschedulable::NAME, 0),
    (node_name::NAME, 0),
    (taint_toleration::NAME, 3),
    (node_affinity::NAME, 2),
    (node_ports::NAME, 0),
    (node_resources_fit::NAME, 1),
    (volume_binding::NAME, 0),
    (pod_topology_spread::NAME, 2),
    (inter_pod_affinity::NAME, 2),
    (default_preemption::NAME, 0),
    (node_resources_balanced_allocation::NAME, 1),
    (image_locality::NAME, 1),
    (default_binder::NAME, 0),
];

#[cfg(test)]
pub(crate) mod testutil {
    //! Builders for plugin tests.
    use std::sync::Arc;

    use k8s_openapi::api::core::v1::{Node, Pod};
    use serde_json::{Value, json};

    use crate::framework::{NodeInfo, PodInfo};

    pub fn pod(v: Value) -> Pod {
        let mut v = v;
        if v.get("metadata").is_none() {
            v["metadata"] = json!({"name": "p", "namespace": "default"});
        }
        if v["metadata"].get("namespace").is_none() {
            v["metadata"]["namespace"] = json!("default");
        }
        if v.get("spec").is_none() {
            v["spec"] = json!({"containers": [{"name": "c", "image": "i"}]});
        }
        if v["spec"].get("containers").is_none() {
            v["spec"]["containers"] = json!([{"name": "c", "image": "i"}]);
        }
        serde_json::from_value(v).expect("a pod")
    }

    pub fn pod_info(v: Value) -> Arc<PodInfo> {
        let p = pod(v);
        let prio = p.spec.as_ref().and_then(|s| s.priority).unwrap_or(0);
        Arc::new(PodInfo::new(Arc::new(p), prio))
    }

    pub fn node(v: Value) -> Node {
        serde_json::from_value(v).expect("a node")
    }

    /// A node named `name` with labels and 4 cpu, 8Gi, 110 pods.
    pub fn simple_node(name: &str, labels: Value) -> Node {
        node(json!({
            "metadata": {"name": name, "labels": labels},
            "status": {"allocatable": {"cpu": "4", "memory": "8Gi", "pods": "110"}}
        }))
    }

    pub fn node_info(node: Node, pods: Vec<Arc<PodInfo>>) -> NodeInfo {
        NodeInfo::with_pods(node, pods)
    }
}
