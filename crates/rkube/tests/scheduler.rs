//! End to end: the scheduler in `rkube server` places pods on Node objects created through the
//! API (no simulated nodes, no kubelet), reports unschedulable pods as upstream does, honours
//! taints, selectors and anti-affinity, and preempts lower-priority pods.
//! The nodes here have no kubelet renewing their Lease, so the node lifecycle controller is
//! given a long grace period: otherwise a slow run would see them turn NotReady mid-test.

mod support;

use std::time::Duration;

use serde_json::{Value, json};
use support::{Server, eventually};

const WAIT: Duration = Duration::from_secs(30);

/// Register a Ready node with this much cpu/memory, labels and taints.
fn add_node(server: &Server, name: &str, cpu: &str, labels: Value, taints: Value) {
    let mut labels = labels;
    labels["kubernetes.io/hostname"] = json!(name);
    let node = json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "labels": labels},
        "spec": {"taints": taints},
    });
    server.apply(&node.to_string());
    let status = json!({"status": {
        "capacity": {"cpu": cpu, "memory": "8Gi", "pods": "110"},
        "allocatable": {"cpu": cpu, "memory": "8Gi", "pods": "110"},
        "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady", "message": "ready"}],
    }});
    server.kubectl_ok(&[
        "patch",
        "node",
        name,
        "--subresource=status",
        "--type=merge",
        "-p",
        &status.to_string(),
    ]);
}

fn pod_manifest(name: &str, cpu: &str, extra_spec: Value) -> String {
    let mut spec = json!({
        "terminationGracePeriodSeconds": 0,
        "containers": [{"name": "c", "image": "registry.k8s.io/pause:3.9",
                        "resources": {"requests": {"cpu": cpu, "memory": "64Mi"}}}],
    });
    if let (Some(spec), Some(extra)) = (spec.as_object_mut(), extra_spec.as_object()) {
        for (k, v) in extra {
            spec.insert(k.clone(), v.clone());
        }
    }
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": {"app": name}}, "spec": spec})
        .to_string()
}

fn node_of(server: &Server, pod: &str) -> Option<String> {
    let p = server.get_json(&["pod", pod]);
    p["spec"]["nodeName"]
        .as_str()
        .filter(|n| !n.is_empty())
        .map(str::to_string)
}

fn wait_bound(server: &Server, pod: &str) -> String {
    eventually(WAIT, &format!("pod {pod} bound"), || node_of(server, pod))
}

fn pod_scheduled_condition(server: &Server, pod: &str) -> Option<Value> {
    let p = server.get_json(&["pod", pod]);
    p["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == "PodScheduled")
        .cloned()
}

/// Wait for PodScheduled=False reason Unschedulable and return its message.
fn wait_unschedulable(server: &Server, pod: &str, containing: &str) -> String {
    eventually(
        WAIT,
        &format!("pod {pod} unschedulable with {containing:?}"),
        || {
            let c = pod_scheduled_condition(server, pod)?;
            let msg = c["message"].as_str()?.to_string();
            (c["status"] == "False" && c["reason"] == "Unschedulable" && msg.contains(containing))
                .then_some(msg)
        },
    )
}

/// Messages of the events with `reason` about `pod` (core/v1 `message` or events.k8s.io `note`).
fn event_messages(server: &Server, pod: &str, reason: &str) -> Vec<String> {
    let events = server.get_json(&["events"]);
    events["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["reason"] == reason)
        .filter(|e| e["involvedObject"]["name"] == pod || e["regarding"]["name"] == pod)
        .filter_map(|e| {
            e["message"]
                .as_str()
                .or(e["note"].as_str())
                .map(str::to_string)
        })
        .collect()
}

#[test]
fn binds_pods_and_explains_unschedulable_ones() {
    let server = Server::start_with(&["--node-monitor-grace-period", "1h"]);
    for n in ["node-a", "node-b", "node-c"] {
        add_node(&server, n, "2", json!({}), json!([]));
    }
    server.apply(&pod_manifest("small", "500m", json!({})));
    let node = wait_bound(&server, "small");
    assert!(node.starts_with("node-"), "{node}");
    let condition = pod_scheduled_condition(&server, "small").expect("PodScheduled condition");
    assert_eq!(condition["status"], "True");
    eventually(WAIT, "Scheduled event", || {
        event_messages(&server, "small", "Scheduled")
            .into_iter()
            .find(|m| m == &format!("Successfully assigned default/small to {node}"))
    });

    // More cpu than any node has: Unschedulable, and preemption cannot help.
    server.apply(&pod_manifest("huge", "100", json!({})));
    let msg = wait_unschedulable(&server, "huge", "Insufficient cpu");
    assert_eq!(
        msg,
        "0/3 nodes are available: 3 Insufficient cpu. preemption: 0/3 nodes are available: 3 Preemption is not helpful for scheduling."
    );
    let events = eventually(WAIT, "FailedScheduling event", || {
        let m = event_messages(&server, "huge", "FailedScheduling");
        (!m.is_empty()).then_some(m)
    });
    assert!(events.iter().any(|m| m == &msg), "{events:?}");
    let described = server.kubectl_ok(&["describe", "pod", "huge"]);
    assert!(described.contains("FailedScheduling"), "{described}");
    assert_eq!(node_of(&server, "huge"), None);

    // A pod for another scheduler is left alone.
    server.apply(&pod_manifest(
        "other",
        "100m",
        json!({"schedulerName": "my-scheduler"}),
    ));
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(node_of(&server, "other"), None);
    assert!(pod_scheduled_condition(&server, "other").is_none());

    // Many small pods all land (0.5 cpu each: 3 nodes x 4 minus the one placed = 11 more).
    for i in 0..11 {
        server.apply(&pod_manifest(&format!("fill-{i}"), "500m", json!({})));
    }
    for i in 0..11 {
        wait_bound(&server, &format!("fill-{i}"));
    }
    // Now the cluster is full: the next one waits, naming the nodes' shortage.
    server.apply(&pod_manifest("one-too-many", "500m", json!({})));
    let msg = wait_unschedulable(&server, "one-too-many", "Insufficient cpu");
    assert!(
        msg.starts_with("0/3 nodes are available: 3 Insufficient cpu."),
        "{msg}"
    );
    assert!(
        msg.contains(
            "preemption: 0/3 nodes are available: 3 No preemption victims found for incoming pod."
        ),
        "{msg}"
    );
    // Deleting a bound pod frees room: the waiting pod is retried and bound.
    server.kubectl_ok(&["delete", "pod", "fill-0", "--wait=false"]);
    wait_bound(&server, "one-too-many");

    // The scheduler holds its Lease.
    let lease = server.get_json(&["lease", "kube-scheduler", "-n", "kube-system"]);
    assert!(
        lease["spec"]["holderIdentity"]
            .as_str()
            .is_some_and(|h| !h.is_empty())
    );
}

#[test]
fn taints_selectors_and_anti_affinity() {
    let server = Server::start_with(&["--node-monitor-grace-period", "1h"]);
    add_node(
        &server,
        "gpu-1",
        "4",
        json!({"disk": "ssd"}),
        json!([{"key": "dedicated", "value": "gpu", "effect": "NoSchedule"}]),
    );
    add_node(&server, "ssd-1", "4", json!({"disk": "ssd"}), json!([]));
    add_node(&server, "hdd-1", "4", json!({"disk": "hdd"}), json!([]));

    // nodeSelector disk=ssd without a toleration: only ssd-1.
    server.apply(&pod_manifest(
        "wants-ssd",
        "100m",
        json!({"nodeSelector": {"disk": "ssd"}}),
    ));
    assert_eq!(wait_bound(&server, "wants-ssd"), "ssd-1");

    // Tolerating the taint and requiring the gpu node by name through node affinity.
    server.apply(&pod_manifest(
        "gpu-job",
        "100m",
        json!({
            "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "gpu", "effect": "NoSchedule"}],
            "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [{"matchExpressions": [{"key": "kubernetes.io/hostname", "operator": "In", "values": ["gpu-1"]}]}]}}}
        }),
    ));
    assert_eq!(wait_bound(&server, "gpu-job"), "gpu-1");

    // Requiring the gpu node without the toleration: the taint is named in the message.
    server.apply(&pod_manifest(
        "no-toleration",
        "100m",
        json!({"nodeSelector": {"kubernetes.io/hostname": "gpu-1"}}),
    ));
    let msg = wait_unschedulable(&server, "no-toleration", "untolerated taint");
    assert!(
        msg.starts_with("0/3 nodes are available: 1 node(s) had untolerated taint {dedicated: gpu}, 2 node(s) didn't match Pod's node affinity/selector."),
        "{msg}"
    );

    // Anti-affinity on hostname: three replicas on three nodes, the fourth waits.
    let anti = |name: &str| {
        let mut m: Value = serde_json::from_str(&pod_manifest(
            name,
            "100m",
            json!({
                "tolerations": [{"operator": "Exists"}],
                "affinity": {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
                    {"labelSelector": {"matchLabels": {"tier": "cache"}}, "topologyKey": "kubernetes.io/hostname"}]}}
            }),
        ))
        .unwrap();
        m["metadata"]["labels"]["tier"] = json!("cache");
        m.to_string()
    };
    for i in 0..3 {
        server.apply(&anti(&format!("cache-{i}")));
    }
    let mut placed: Vec<String> = (0..3)
        .map(|i| wait_bound(&server, &format!("cache-{i}")))
        .collect();
    placed.sort();
    assert_eq!(placed, vec!["gpu-1", "hdd-1", "ssd-1"]);
    server.apply(&anti("cache-3"));
    let msg = wait_unschedulable(&server, "cache-3", "anti-affinity");
    assert!(
        msg.starts_with("0/3 nodes are available: 3 node(s) didn't match pod anti-affinity rules."),
        "{msg}"
    );

    // A pod waiting for a label no node has is retried when such a node appears.
    server.apply(&pod_manifest(
        "wants-zone",
        "100m",
        json!({"nodeSelector": {"zone": "new"}}),
    ));
    wait_unschedulable(
        &server,
        "wants-zone",
        "didn't match Pod's node affinity/selector",
    );
    add_node(
        &server,
        "zone-new-1",
        "4",
        json!({"zone": "new"}),
        json!([]),
    );
    assert_eq!(wait_bound(&server, "wants-zone"), "zone-new-1");
}

#[test]
fn preemption_by_priority_class() {
    let server = Server::start_with(&["--node-monitor-grace-period", "1h"]);
    add_node(&server, "only", "2", json!({}), json!([]));
    for (name, value) in [("low", 10), ("high", 1000)] {
        server.apply(
            &json!({"apiVersion": "scheduling.k8s.io/v1", "kind": "PriorityClass",
                    "metadata": {"name": name}, "value": value})
            .to_string(),
        );
    }
    server.apply(&pod_manifest(
        "victim",
        "1500m",
        json!({"priorityClassName": "low"}),
    ));
    assert_eq!(wait_bound(&server, "victim"), "only");

    // A lower-priority pod that does not fit does not preempt.
    server.apply(&pod_manifest(
        "peer",
        "1500m",
        json!({"priorityClassName": "low"}),
    ));
    wait_unschedulable(&server, "peer", "Insufficient cpu");

    server.apply(&pod_manifest(
        "preemptor",
        "1500m",
        json!({"priorityClassName": "high"}),
    ));
    // The victim is evicted and the preemptor takes its place.
    eventually(WAIT, "victim deleted", || {
        let out = server.kubectl(&["get", "pod", "victim", "-o", "json"]);
        (!out.status.success()).then_some(())
    });
    assert_eq!(wait_bound(&server, "preemptor"), "only");
    eventually(WAIT, "Preempted event", || {
        let m = event_messages(&server, "victim", "Preempted");
        (!m.is_empty()).then_some(m)
    });
    // The low-priority peer still waits: the node is taken by the preemptor.
    assert_eq!(node_of(&server, "peer"), None);
}
