//! End to end: DaemonSets on three simulated nodes, driven with the real kubectl: a pod per
//! node, node selectors as node labels change, a rolling image update with rollout
//! status/history, and node-pinning affinity and tolerations on the pods.

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::Value;
use support::{Server, eventually};

const WAIT: Duration = Duration::from_secs(90);

fn start() -> Server {
    Server::start_with(&["--sim-nodes", "3"])
}

fn manifest(image: &str, pod_extra: &str) -> String {
    format!(
        r#"apiVersion: apps/v1
kind: DaemonSet
metadata:
  name: agent
spec:
  selector:
    matchLabels:
      app: agent
  template:
    metadata:
      labels:
        app: agent
    spec:
{pod_extra}
      containers:
      - name: agent
        image: {image}
"#
    )
}

fn is_ready(pod: &Value) -> bool {
    pod["status"]["phase"] == "Running"
        && pod["status"]["conditions"].as_array().is_some_and(|cs| {
            cs.iter()
                .any(|c| c["type"] == "Ready" && c["status"] == "True")
        })
}

/// Live (not terminating) daemon pods by node.
fn pods_by_node(server: &Server) -> BTreeMap<String, Vec<Value>> {
    let list = server.get_json(&["pods", "-l", "app=agent"]);
    let mut by_node: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for pod in list["items"].as_array().cloned().unwrap_or_default() {
        if pod["metadata"]["deletionTimestamp"].is_string() {
            continue;
        }
        let node = pod["spec"]["nodeName"].as_str().unwrap_or("").to_string();
        by_node.entry(node).or_default().push(pod);
    }
    by_node
}

fn image(pod: &Value) -> &str {
    pod["spec"]["containers"][0]["image"].as_str().unwrap_or("")
}

fn node_names(server: &Server) -> Vec<String> {
    let list = server.get_json(&["nodes"]);
    let mut names: Vec<String> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["metadata"]["name"].as_str().unwrap().to_string())
        .collect();
    names.sort();
    names
}

fn ds(server: &Server) -> Value {
    server.get_json(&["daemonset", "agent"])
}

/// Wait (bounded) until exactly `nodes` run one Ready pod each of `image` and the status agrees.
fn wait_rolled_out(server: &Server, nodes: &[String], image_name: &str) -> Value {
    eventually(
        WAIT,
        &format!("one ready {image_name} pod on {nodes:?}"),
        || {
            let by_node = pods_by_node(server);
            let placed = by_node.keys().cloned().collect::<Vec<_>>() == nodes
                && by_node.values().all(|pods| {
                    pods.len() == 1 && is_ready(&pods[0]) && image(&pods[0]) == image_name
                });
            let s = ds(server);
            let n = nodes.len() as i64;
            let status_ok = s["status"]["desiredNumberScheduled"] == n
                && s["status"]["currentNumberScheduled"] == n
                && s["status"]["numberReady"] == n
                && s["status"]["numberAvailable"] == n
                && s["status"]["updatedNumberScheduled"] == n
                && s["status"]["numberMisscheduled"] == 0
                && s["status"]["observedGeneration"] == s["metadata"]["generation"];
            (placed && status_ok).then_some(s)
        },
    )
}

#[test]
fn one_pod_per_node_and_rolling_image_update() {
    let server = start();
    let nodes = eventually(WAIT, "three nodes", || {
        let names = node_names(&server);
        (names.len() == 3).then_some(names)
    });
    server.apply(&manifest("agent:1", ""));
    let set = wait_rolled_out(&server, &nodes, "agent:1");
    assert!(set["status"]["numberUnavailable"].as_i64().unwrap_or(0) == 0);

    // Each pod is pinned to its node by affinity and carries the daemon tolerations.
    for (node, pods) in pods_by_node(&server) {
        let pod = &pods[0];
        let term = &pod["spec"]["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
            ["nodeSelectorTerms"][0];
        assert_eq!(term["matchFields"][0]["key"], "metadata.name");
        assert_eq!(term["matchFields"][0]["values"][0], node.as_str());
        let tolerations: Vec<&str> = pod["spec"]["tolerations"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|t| t["key"].as_str())
            .collect();
        for key in [
            "node.kubernetes.io/not-ready",
            "node.kubernetes.io/unreachable",
            "node.kubernetes.io/unschedulable",
            "node.kubernetes.io/disk-pressure",
        ] {
            assert!(tolerations.contains(&key), "{key} missing: {tolerations:?}");
        }
        assert!(pod["metadata"]["labels"]["controller-revision-hash"].is_string());
        assert_eq!(pod["metadata"]["ownerReferences"][0]["kind"], "DaemonSet");
    }

    // A deleted pod is replaced on its node.
    let victim_node = nodes[1].clone();
    let victim = pods_by_node(&server)[&victim_node][0]["metadata"]["name"]
        .as_str()
        .unwrap()
        .to_string();
    server.kubectl_ok(&["delete", "pod", &victim, "--wait=false"]);
    eventually(WAIT, "replacement pod", || {
        let by_node = pods_by_node(&server);
        by_node
            .get(&victim_node)
            .filter(|pods| {
                pods.len() == 1
                    && pods[0]["metadata"]["name"] != victim.as_str()
                    && is_ready(&pods[0])
            })
            .map(|_| ())
    });

    // Rolling update: never more than one node without a ready pod (maxUnavailable 1).
    server.kubectl_ok(&["set", "image", "daemonset/agent", "agent=agent:2"]);
    eventually(WAIT, "all pods at agent:2", || {
        let by_node = pods_by_node(&server);
        let ready_nodes = by_node
            .values()
            .filter(|pods| pods.iter().any(is_ready))
            .count();
        assert!(
            ready_nodes >= 2,
            "more than one node unavailable: {by_node:?}"
        );
        (by_node.len() == 3
            && by_node
                .values()
                .all(|p| p.len() == 1 && image(&p[0]) == "agent:2" && is_ready(&p[0])))
        .then_some(())
    });
    wait_rolled_out(&server, &nodes, "agent:2");
    let status = server.kubectl_ok(&["rollout", "status", "daemonset/agent", "--timeout=60s"]);
    assert!(status.contains("successfully rolled out"), "{status}");

    let history = server.kubectl_ok(&["rollout", "history", "daemonset/agent"]);
    let numbers: Vec<&str> = history
        .lines()
        .skip(2)
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert_eq!(numbers, ["1", "2"], "{history}");

    let describe = server.kubectl_ok(&["describe", "daemonset", "agent"]);
    assert!(describe.contains("SuccessfulCreate"), "{describe}");
}

#[test]
fn node_selector_follows_node_labels() {
    let server = start();
    let nodes = eventually(WAIT, "three nodes", || {
        let names = node_names(&server);
        (names.len() == 3).then_some(names)
    });
    server.kubectl_ok(&["label", "node", &nodes[1], "role=edge"]);
    server.apply(&manifest(
        "agent:1",
        "      nodeSelector:\n        role: edge\n",
    ));
    wait_rolled_out(&server, &nodes[1..2], "agent:1");

    // A newly labelled node gets a pod.
    server.kubectl_ok(&["label", "node", &nodes[2], "role=edge"]);
    wait_rolled_out(&server, &nodes[1..3], "agent:1");

    // A node losing the label loses its pod.
    server.kubectl_ok(&["label", "node", &nodes[1], "role-"]);
    wait_rolled_out(&server, &nodes[2..3], "agent:1");

    // A NoExecute taint the pod does not tolerate evicts the daemon pod; removing it brings
    // the pod back.
    server.kubectl_ok(&["taint", "node", &nodes[2], "dedicated=infra:NoExecute"]);
    eventually(WAIT, "pod removed from the tainted node", || {
        let s = ds(&server);
        (pods_by_node(&server).is_empty() && s["status"]["desiredNumberScheduled"] == 0)
            .then_some(())
    });
    server.kubectl_ok(&["taint", "node", &nodes[2], "dedicated=infra:NoExecute-"]);
    wait_rolled_out(&server, &nodes[2..3], "agent:1");
}
