//! The Node and Lease objects of a simulated node.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::{
    DaemonEndpoint, Node, NodeAddress, NodeCondition, NodeDaemonEndpoints, NodeStatus,
    NodeSystemInfo,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta, OwnerReference, Time};
use k8s_openapi::jiff::Timestamp;
use serde_json::{Value, json};

use crate::SimConfig;

/// The namespace of node heartbeat Leases.
pub const LEASE_NAMESPACE: &str = "kube-node-lease";
/// Marks a Node as simulated (as kwok's `kwok.x-k8s.io/node` does).
pub const SIMULATED_ANNOTATION: &str = "rkube.io/simulated-node";

/// The name of the `index`th node.
pub fn node_name(config: &SimConfig, index: usize) -> String {
    format!("{}{index}", config.name_prefix)
}

/// A fake InternalIP in 10.240.0.0/12: the prefix picks a /16 so that two simulators with
/// different prefixes rarely collide, the index an address within it.
pub fn node_ip(prefix: &str, index: usize) -> Ipv4Addr {
    let block = (fnv(prefix) % 16) as u32;
    let host = (index as u32 % 65_534) + 1;
    Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 240, 0, 0)) + (block << 16) + host)
}

pub(crate) fn fnv(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// The node conditions a healthy kubelet reports, heartbeat now.
pub fn healthy_conditions(now: &Timestamp) -> Vec<NodeCondition> {
    let c = |type_: &str, status: &str, reason: &str, message: &str| NodeCondition {
        type_: type_.into(),
        status: status.into(),
        reason: Some(reason.into()),
        message: Some(message.into()),
        last_heartbeat_time: Some(Time(*now)),
        last_transition_time: Some(Time(*now)),
    };
    vec![
        c(
            "MemoryPressure",
            "False",
            "KubeletHasSufficientMemory",
            "kubelet has sufficient memory available",
        ),
        c(
            "DiskPressure",
            "False",
            "KubeletHasNoDiskPressure",
            "kubelet has no disk pressure",
        ),
        c(
            "PIDPressure",
            "False",
            "KubeletHasSufficientPID",
            "kubelet has sufficient PID available",
        ),
        c(
            "Ready",
            "True",
            "KubeletReady",
            "kubelet is posting ready status",
        ),
    ]
}

/// The Node a simulated kubelet registers.
pub fn node(config: &SimConfig, index: usize, now: &Timestamp) -> Node {
    let name = node_name(config, index);
    let ip = node_ip(&config.name_prefix, index).to_string();
    let labels: BTreeMap<String, String> = [
        ("beta.kubernetes.io/arch", "amd64"),
        ("beta.kubernetes.io/os", "linux"),
        ("kubernetes.io/arch", "amd64"),
        ("kubernetes.io/hostname", name.as_str()),
        ("kubernetes.io/os", "linux"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let annotations: BTreeMap<String, String> = [
        ("node.alpha.kubernetes.io/ttl", "0"),
        (
            "volumes.kubernetes.io/controller-managed-attach-detach",
            "true",
        ),
        (SIMULATED_ANNOTATION, "true"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let resources: BTreeMap<String, Quantity> = [
        ("cpu", config.cpu.clone()),
        ("memory", config.memory.clone()),
        ("pods", config.pods.to_string()),
        ("ephemeral-storage", config.ephemeral_storage.clone()),
        ("hugepages-1Gi", "0".to_string()),
        ("hugepages-2Mi", "0".to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), Quantity(v)))
    .collect();
    let id = format!("{:016x}{:016x}", fnv(&name), fnv(&ip));
    Node {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            labels: Some(labels),
            annotations: Some(annotations),
            ..Default::default()
        },
        spec: None,
        status: Some(NodeStatus {
            capacity: Some(resources.clone()),
            allocatable: Some(resources),
            conditions: Some(healthy_conditions(now)),
            addresses: Some(vec![
                NodeAddress {
                    type_: "InternalIP".into(),
                    address: ip,
                },
                NodeAddress {
                    type_: "Hostname".into(),
                    address: name,
                },
            ]),
            daemon_endpoints: Some(NodeDaemonEndpoints {
                kubelet_endpoint: Some(DaemonEndpoint { port: 10250 }),
            }),
            node_info: Some(NodeSystemInfo {
                machine_id: id.clone(),
                system_uuid: id.clone(),
                boot_id: id,
                kernel_version: "6.1.0-sim".into(),
                os_image: "rkube simulated node".into(),
                container_runtime_version: "sim://0.0.0".into(),
                kubelet_version: config.kubelet_version.clone(),
                kube_proxy_version: String::new(),
                operating_system: "linux".into(),
                architecture: "amd64".into(),
                ..Default::default()
            }),
            ..Default::default()
        }),
    }
}

/// A status patch (strategic merge: conditions by type) that renews every condition's
/// heartbeat and, where a condition is not in its healthy state, sets it back.
pub fn heartbeat_patch(current: Option<&Node>, now: &Timestamp) -> Value {
    let existing = current
        .and_then(|n| n.status.as_ref())
        .and_then(|s| s.conditions.as_deref())
        .unwrap_or_default();
    let conditions: Vec<NodeCondition> = healthy_conditions(now)
        .into_iter()
        .map(|mut c| {
            if let Some(old) = existing.iter().find(|o| o.type_ == c.type_)
                && old.status == c.status
            {
                c.last_transition_time = old.last_transition_time.clone();
            }
            c
        })
        .collect();
    json!({"status": {"conditions": conditions}})
}

/// Whether the node reports itself Ready.
pub fn is_ready(node: &Node) -> bool {
    node.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// The heartbeat Lease of a node, owned by the Node (so it goes when the Node goes).
pub fn lease(node: &Node, duration_seconds: i32, now: &Timestamp) -> Lease {
    let name = node.metadata.name.clone().unwrap_or_default();
    Lease {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            namespace: Some(LEASE_NAMESPACE.into()),
            owner_references: node.metadata.uid.clone().map(|uid| {
                vec![OwnerReference {
                    api_version: "v1".into(),
                    kind: "Node".into(),
                    name: name.clone(),
                    uid,
                    ..Default::default()
                }]
            }),
            ..Default::default()
        },
        spec: Some(LeaseSpec {
            holder_identity: Some(name),
            lease_duration_seconds: Some(duration_seconds),
            renew_time: Some(MicroTime(*now)),
            ..Default::default()
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_has_capacity_conditions_and_addresses() {
        let config = SimConfig::default();
        let now = Timestamp::now();
        let n = node(&config, 3, &now);
        assert_eq!(n.metadata.name.as_deref(), Some("sim-3"));
        let status = n.status.as_ref().unwrap();
        let cap = status.capacity.as_ref().unwrap();
        assert_eq!(cap["cpu"].0, "32");
        assert_eq!(cap["memory"].0, "256Gi");
        assert_eq!(cap["pods"].0, "110");
        assert!(cap.contains_key("ephemeral-storage"));
        assert!(is_ready(&n));
        let addresses = status.addresses.as_ref().unwrap();
        assert_eq!(addresses[0].type_, "InternalIP");
        assert!(addresses[0].address.starts_with("10.2"));
        assert_eq!(
            status.node_info.as_ref().unwrap().kubelet_version,
            config.kubelet_version
        );
    }

    #[test]
    fn node_ips_are_distinct_within_a_simulator() {
        let ips: std::collections::HashSet<_> = (0..5000).map(|i| node_ip("sim-", i)).collect();
        assert_eq!(ips.len(), 5000);
        assert!(
            ips.iter()
                .all(|ip| ip.octets()[0] == 10 && (240..=255).contains(&ip.octets()[1]))
        );
    }

    #[test]
    fn heartbeat_restores_ready_and_keeps_transition_times() {
        let then = Timestamp::from_second(1_700_000_000).unwrap();
        let mut n = node(&SimConfig::default(), 0, &then);
        for c in n.status.as_mut().unwrap().conditions.as_mut().unwrap() {
            if c.type_ == "Ready" {
                c.status = "Unknown".into();
            }
        }
        let now = Timestamp::from_second(1_700_000_100).unwrap();
        let patch = heartbeat_patch(Some(&n), &now);
        let conditions = patch["status"]["conditions"].as_array().unwrap();
        let ready = conditions.iter().find(|c| c["type"] == "Ready").unwrap();
        assert_eq!(ready["status"], "True");
        assert_eq!(ready["lastTransitionTime"], "2023-11-14T22:15:00Z");
        let memory = conditions
            .iter()
            .find(|c| c["type"] == "MemoryPressure")
            .unwrap();
        assert_eq!(memory["lastTransitionTime"], "2023-11-14T22:13:20Z");
        assert_eq!(memory["lastHeartbeatTime"], "2023-11-14T22:15:00Z");
    }
}
