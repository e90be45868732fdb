//! What a kubelet reports about its Node: the four standard conditions with upstream's reasons
//! and messages, and the heartbeat Lease in `kube-node-lease`. Shared by the real node agent
//! (`kubelet`) and the simulated one (`sim`), so both look the same to the node lifecycle
//! controller and to `kubectl describe node`.

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::{Node, NodeCondition};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta, OwnerReference, Time};
use k8s_openapi::jiff::Timestamp;
use serde_json::{Value, json};

/// The namespace of node heartbeat Leases.
pub const LEASE_NAMESPACE: &str = "kube-node-lease";

/// Which pressure conditions hold.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pressure {
    pub memory: bool,
    pub disk: bool,
    pub pid: bool,
}

fn condition(
    type_: &str,
    status: bool,
    reason: &str,
    message: &str,
    now: &Timestamp,
) -> NodeCondition {
    NodeCondition {
        type_: type_.into(),
        status: if status { "True" } else { "False" }.into(),
        reason: Some(reason.into()),
        message: Some(message.into()),
        last_heartbeat_time: Some(Time(*now)),
        last_transition_time: Some(Time(*now)),
    }
}

/// The conditions a kubelet posts, heartbeat (and transition) now: Ready unless `not_ready`
/// gives why not.
pub fn conditions(
    now: &Timestamp,
    pressure: Pressure,
    not_ready: Option<&str>,
) -> Vec<NodeCondition> {
    let memory = if pressure.memory {
        (
            "KubeletHasInsufficientMemory",
            "kubelet has insufficient memory available",
        )
    } else {
        (
            "KubeletHasSufficientMemory",
            "kubelet has sufficient memory available",
        )
    };
    let disk = if pressure.disk {
        ("KubeletHasDiskPressure", "kubelet has disk pressure")
    } else {
        ("KubeletHasNoDiskPressure", "kubelet has no disk pressure")
    };
    let pid = if pressure.pid {
        (
            "KubeletHasInsufficientPID",
            "kubelet has insufficient PID available",
        )
    } else {
        (
            "KubeletHasSufficientPID",
            "kubelet has sufficient PID available",
        )
    };
    let ready = match not_ready {
        None => condition(
            "Ready",
            true,
            "KubeletReady",
            "kubelet is posting ready status",
            now,
        ),
        Some(why) => condition("Ready", false, "KubeletNotReady", why, now),
    };
    vec![
        condition("MemoryPressure", pressure.memory, memory.0, memory.1, now),
        condition("DiskPressure", pressure.disk, disk.0, disk.1, now),
        condition("PIDPressure", pressure.pid, pid.0, pid.1, now),
        ready,
    ]
}

/// The conditions a healthy kubelet reports, heartbeat now.
pub fn healthy_conditions(now: &Timestamp) -> Vec<NodeCondition> {
    conditions(now, Pressure::default(), None)
}

/// `wanted` with each condition's lastTransitionTime taken from `current` where its status
/// did not change.
pub fn keep_transition_times(
    mut wanted: Vec<NodeCondition>,
    current: Option<&Node>,
) -> Vec<NodeCondition> {
    let existing = current
        .and_then(|n| n.status.as_ref())
        .and_then(|s| s.conditions.as_deref())
        .unwrap_or_default();
    for c in &mut wanted {
        if let Some(old) = existing.iter().find(|o| o.type_ == c.type_)
            && old.status == c.status
            && old.last_transition_time.is_some()
        {
            c.last_transition_time = old.last_transition_time.clone();
        }
    }
    wanted
}

/// A status patch (strategic merge: conditions by type) that renews every condition's
/// heartbeat and, where a condition is not in its healthy state, sets it back.
pub fn heartbeat_patch(current: Option<&Node>, now: &Timestamp) -> Value {
    let conditions = keep_transition_times(healthy_conditions(now), current);
    json!({"status": {"conditions": conditions}})
}

/// Whether the conditions differ other than in heartbeat times.
pub fn conditions_changed(current: Option<&Node>, wanted: &[NodeCondition]) -> bool {
    let existing = current
        .and_then(|n| n.status.as_ref())
        .and_then(|s| s.conditions.as_deref())
        .unwrap_or_default();
    wanted.iter().any(|c| {
        !existing.iter().any(|o| {
            o.type_ == c.type_
                && o.status == c.status
                && o.reason == c.reason
                && o.message == c.message
        })
    })
}

/// The last heartbeat of the node's Ready condition.
pub fn ready_heartbeat(node: &Node) -> Option<Timestamp> {
    node.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "Ready")?
        .last_heartbeat_time
        .as_ref()
        .map(|t| t.0)
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

/// The merge patch that renews a node's Lease.
pub fn lease_renew_patch(node_name: &str, duration_seconds: i32, now: &Timestamp) -> Value {
    json!({"spec": {
        "holderIdentity": node_name,
        "leaseDurationSeconds": duration_seconds,
        "renewTime": MicroTime(*now),
    }})
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node_with(conditions: Vec<NodeCondition>) -> Node {
        Node {
            status: Some(k8s_openapi::api::core::v1::NodeStatus {
                conditions: Some(conditions),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn heartbeat_restores_ready_and_keeps_transition_times() {
        let then = Timestamp::from_second(1_700_000_000).unwrap();
        let mut conditions = healthy_conditions(&then);
        conditions[3].status = "Unknown".into();
        let n = node_with(conditions);
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

    #[test]
    fn pressure_and_not_ready_use_upstream_reasons() {
        let now = Timestamp::from_second(1_700_000_000).unwrap();
        let cs = conditions(
            &now,
            Pressure {
                disk: true,
                ..Default::default()
            },
            Some("network not ready"),
        );
        let find = |t: &str| cs.iter().find(|c| c.type_ == t).unwrap();
        assert_eq!(find("DiskPressure").status, "True");
        assert_eq!(
            find("DiskPressure").reason.as_deref(),
            Some("KubeletHasDiskPressure")
        );
        assert_eq!(
            find("MemoryPressure").reason.as_deref(),
            Some("KubeletHasSufficientMemory")
        );
        assert_eq!(find("Ready").status, "False");
        assert_eq!(find("Ready").reason.as_deref(), Some("KubeletNotReady"));
        let healthy = node_with(healthy_conditions(&now));
        assert!(is_ready(&healthy));
        assert!(conditions_changed(Some(&healthy), &cs));
        let later = Timestamp::from_second(1_700_000_050).unwrap();
        assert!(!conditions_changed(
            Some(&healthy),
            &healthy_conditions(&later)
        ));
        assert_eq!(ready_heartbeat(&healthy), Some(now));
    }

    #[test]
    fn lease_is_owned_by_its_node() {
        let now = Timestamp::from_second(1_700_000_000).unwrap();
        let mut n = node_with(vec![]);
        n.metadata.name = Some("a".into());
        n.metadata.uid = Some("u1".into());
        let l = lease(&n, 40, &now);
        assert_eq!(l.metadata.namespace.as_deref(), Some(LEASE_NAMESPACE));
        assert_eq!(l.metadata.owner_references.unwrap()[0].uid, "u1");
        let spec = l.spec.unwrap();
        assert_eq!(spec.holder_identity.as_deref(), Some("a"));
        assert_eq!(spec.lease_duration_seconds, Some(40));
        let patch = lease_renew_patch("a", 40, &now);
        assert_eq!(patch["spec"]["renewTime"], "2023-11-14T22:13:20.000000Z");
    }
}
