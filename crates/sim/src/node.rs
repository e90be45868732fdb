//! The Node and Lease objects of a simulated node.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use k8s_openapi::api::core::v1::{
    DaemonEndpoint, Node, NodeAddress, NodeDaemonEndpoints, NodeStatus, NodeSystemInfo,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::jiff::Timestamp;

use crate::SimConfig;

// The conditions and the Lease are the real kubelet's (shared through `api::node`).
pub use api::node::{LEASE_NAMESPACE, healthy_conditions, heartbeat_patch, is_ready, lease};

/// Marks a Node as simulated (as kwok's `kwok.x-k8s.io/node` does).
pub const SIMULATED_ANNOTATION: &str = "rkube.io/simulated-node";

/// The well-known label of a node's zone.
pub const ZONE_LABEL: &str = "topology.kubernetes.io/zone";

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

/// The Node a simulated kubelet registers.
pub fn node(config: &SimConfig, index: usize, now: &Timestamp) -> Node {
    let name = node_name(config, index);
    let ip = node_ip(&config.name_prefix, index).to_string();
    let mut labels: BTreeMap<String, String> = [
        ("beta.kubernetes.io/arch", "amd64"),
        ("beta.kubernetes.io/os", "linux"),
        ("kubernetes.io/arch", "amd64"),
        ("kubernetes.io/hostname", name.as_str()),
        ("kubernetes.io/os", "linux"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    if !config.zones.is_empty() {
        // Round robin, so that every zone gets as many nodes.
        let zone = &config.zones[index % config.zones.len()];
        labels.insert(ZONE_LABEL.to_string(), zone.clone());
    }
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
    fn zones_go_round_robin() {
        let now = Timestamp::now();
        let zone = |config: &SimConfig, i| {
            node(config, i, &now)
                .metadata
                .labels
                .unwrap()
                .get(ZONE_LABEL)
                .cloned()
        };
        assert_eq!(zone(&SimConfig::default(), 0), None);
        let config = SimConfig {
            zones: vec!["moon-1".into(), "moon-2".into(), "moon-3".into()],
            ..Default::default()
        };
        let zones: Vec<_> = (0..4).map(|i| zone(&config, i).unwrap()).collect();
        assert_eq!(zones, ["moon-1", "moon-2", "moon-3", "moon-1"]);
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
}
