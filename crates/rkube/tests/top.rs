//! End to end: the resource metrics API (`metrics.k8s.io/v1beta1`) behind `kubectl top`.
//! The API server scrapes its node agent's `/stats/summary`; a busybox image built offline is
//! imported so that a pod runs as a real container.
//!
//! `top_reads_kubelet_summaries` runs as root (runc, cgroups, CNI), as CI does.

mod support;

use std::time::Duration;

use serde_json::Value;
use support::{Server, eventually, tail};

const IMAGE: &str = "docker.io/library/busybox:1.36";
const METRICS_WAIT: Duration = Duration::from_secs(30);
const POD_WAIT: Duration = Duration::from_secs(90);

/// `123m`, `0`, `1500m`, `2` as `kubectl top` prints CPU.
fn is_cpu_column(s: &str) -> bool {
    let digits = s.strip_suffix('m').unwrap_or(s);
    !digits.is_empty() && digits.chars().all(|c| c.is_ascii_digit())
}

/// `12Mi` as `kubectl top` prints memory.
fn is_memory_column(s: &str) -> bool {
    s.strip_suffix("Mi")
        .is_some_and(|d| !d.is_empty() && d.chars().all(|c| c.is_ascii_digit()))
}

/// A quantity as the API serializes one: digits and an optional SI or binary suffix.
fn is_quantity(s: &str) -> bool {
    let digits = s.trim_end_matches(|c: char| c.is_ascii_alphabetic());
    let suffix = &s[digits.len()..];
    !digits.is_empty()
        && digits.chars().all(|c| c.is_ascii_digit())
        && ["", "n", "u", "m", "k", "M", "G", "Ki", "Mi", "Gi", "Ti"].contains(&suffix)
}

/// A Go duration as metrics-server prints a window (`10s`, `10.062s`, `1m0.5s`, `500ms`).
fn is_window(s: &str) -> bool {
    !s.is_empty()
        && s.ends_with('s')
        && s.chars()
            .all(|c| c.is_ascii_digit() || matches!(c, '.' | 'h' | 'm' | 's' | 'µ' | 'n'))
}

fn raw_json(server: &Server, path: &str) -> Value {
    serde_json::from_str(&server.kubectl_ok(&["get", "--raw", path])).expect("raw JSON")
}

/// The row of `kubectl top` output whose first column is `name`.
fn row(output: &str, name: &str) -> Option<Vec<String>> {
    output
        .lines()
        .map(|l| l.split_whitespace().map(str::to_string).collect::<Vec<_>>())
        .find(|cols| cols.first().is_some_and(|c| c == name))
}

#[test]
fn metrics_api_is_discoverable_without_nodes() {
    let server = Server::start();
    let resources = server.kubectl_ok(&["api-resources", "--api-group=metrics.k8s.io"]);
    let nodes = row(&resources, "nodes").expect("nodes in api-resources");
    assert_eq!(
        nodes[1..],
        ["metrics.k8s.io/v1beta1", "false", "NodeMetrics"],
        "{resources}"
    );
    let pods = row(&resources, "pods").expect("pods in api-resources");
    assert_eq!(
        pods[1..],
        ["metrics.k8s.io/v1beta1", "true", "PodMetrics"],
        "{resources}"
    );

    let groups = raw_json(&server, "/apis");
    let metrics = groups["groups"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["name"] == "metrics.k8s.io")
        .expect("metrics.k8s.io in the legacy group list");
    assert_eq!(
        metrics["preferredVersion"]["groupVersion"],
        "metrics.k8s.io/v1beta1"
    );
    let list = raw_json(&server, "/apis/metrics.k8s.io/v1beta1");
    assert_eq!(list["kind"], "APIResourceList");
    assert_eq!(
        list["resources"][0]["verbs"],
        serde_json::json!(["get", "list"])
    );
    assert_eq!(
        raw_json(&server, "/apis/metrics.k8s.io")["kind"],
        "APIGroup"
    );

    // No node answers: empty lists, and kubectl says so.
    let nodes = raw_json(&server, "/apis/metrics.k8s.io/v1beta1/nodes");
    assert_eq!(nodes["kind"], "NodeMetricsList");
    assert_eq!(nodes["apiVersion"], "metrics.k8s.io/v1beta1");
    assert_eq!(nodes["items"], serde_json::json!([]));
    let err = server.kubectl_err(&["top", "nodes"]);
    assert!(err.contains("metrics not available yet"), "{err}");
    let err = server.kubectl_err(&["top", "node", "nosuch"]);
    assert!(
        err.contains("NotFound") && err.contains("\"nosuch\" not found"),
        "{err}"
    );
    let (code, body) = server.raw(
        "GET",
        "/apis/metrics.k8s.io/v1beta1/namespaces/default/pods/nosuch",
        None,
        "application/json",
        false,
    );
    assert_eq!(code, 404, "{body}");
    let status: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(status["kind"], "Status");
    assert_eq!(status["reason"], "NotFound");
    let (code, _) = server.raw(
        "DELETE",
        "/apis/metrics.k8s.io/v1beta1/nodes/x",
        None,
        "application/json",
        false,
    );
    assert_eq!(code, 405);
}

#[test]
fn top_reads_kubelet_summaries() {
    let server = Server::start_with_agent(&[], |data_dir| support::import_busybox(data_dir, IMAGE));
    let node = server.agent.as_ref().unwrap().node_name.clone();
    eventually(POD_WAIT, "the node to be Ready", || {
        let out = server.kubectl(&[
            "get",
            "node",
            &node,
            "-o",
            "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}",
        ]);
        (String::from_utf8_lossy(&out.stdout) == "True").then_some(())
    });

    // kubectl top nodes: the node with its CPU and memory.
    let columns = eventually(METRICS_WAIT, "kubectl top nodes to list the node", || {
        let out = server.kubectl(&["top", "nodes"]);
        row(&String::from_utf8_lossy(&out.stdout), &node)
    });
    assert!(is_cpu_column(&columns[1]), "CPU column: {columns:?}");
    assert!(columns[2].ends_with('%'), "CPU% column: {columns:?}");
    assert!(is_memory_column(&columns[3]), "memory column: {columns:?}");
    assert_ne!(columns[3], "0Mi", "the node uses memory: {columns:?}");

    // The JSON as metrics-server serves it.
    let list = raw_json(&server, "/apis/metrics.k8s.io/v1beta1/nodes");
    assert_eq!(list["kind"], "NodeMetricsList");
    assert_eq!(list["apiVersion"], "metrics.k8s.io/v1beta1");
    let item = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["metadata"]["name"] == node.as_str())
        .unwrap_or_else(|| panic!("node {node} in {list:#}"));
    assert!(
        is_quantity(item["usage"]["cpu"].as_str().unwrap()),
        "{item:#}"
    );
    let memory = item["usage"]["memory"].as_str().unwrap();
    assert!(is_quantity(memory) && memory != "0", "{item:#}");
    assert!(is_window(item["window"].as_str().unwrap()), "{item:#}");
    let timestamp = item["timestamp"].as_str().unwrap();
    assert!(
        timestamp.len() == 20 && timestamp.ends_with('Z'),
        "RFC 3339 timestamp: {timestamp}"
    );
    assert!(item["metadata"]["labels"].is_object(), "{item:#}");
    let one = raw_json(
        &server,
        &format!("/apis/metrics.k8s.io/v1beta1/nodes/{node}"),
    );
    assert_eq!(one["kind"], "NodeMetrics");
    assert_eq!(one["metadata"]["name"], node.as_str());
    let unlabeled = raw_json(
        &server,
        "/apis/metrics.k8s.io/v1beta1/nodes?labelSelector=rkube-test%3Dnone",
    );
    assert_eq!(unlabeled["items"], serde_json::json!([]));

    // A running pod shows up in kubectl top pods once its container has metrics.
    server.kubectl_ok(&["create", "namespace", "busy"]);
    server.apply(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: spinner\n  namespace: busy\n  labels:\n    app: spin\n\
         spec:\n  terminationGracePeriodSeconds: 1\n  containers:\n  - name: main\n    image: busybox:1.36\n    \
         imagePullPolicy: IfNotPresent\n    command: [\"sh\", \"-c\", \"while true; do i=0; while [ $i -lt 20000 ]; do i=$((i+1)); done; sleep 0.2; done\"]\n",
    );
    eventually(POD_WAIT, "pod spinner to run", || {
        let out = server.kubectl(&[
            "get",
            "pod",
            "spinner",
            "-n",
            "busy",
            "-o",
            "jsonpath={.status.phase}",
        ]);
        (String::from_utf8_lossy(&out.stdout) == "Running").then_some(())
    });
    let deadline = std::time::Instant::now() + METRICS_WAIT;
    let columns = loop {
        let out = server.kubectl(&["top", "pods", "-n", "busy"]);
        if let Some(columns) = row(&String::from_utf8_lossy(&out.stdout), "spinner") {
            break columns;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "kubectl top pods -n busy never listed spinner:\nstdout: {}\nstderr: {}\nlog tail:\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            tail(&server.log(), 40)
        );
        std::thread::sleep(Duration::from_millis(500));
    };
    assert!(is_cpu_column(&columns[1]), "CPU column: {columns:?}");
    assert!(is_memory_column(&columns[2]), "memory column: {columns:?}");

    let pods = raw_json(&server, "/apis/metrics.k8s.io/v1beta1/namespaces/busy/pods");
    assert_eq!(pods["kind"], "PodMetricsList");
    let spinner = &pods["items"][0];
    assert_eq!(spinner["metadata"]["name"], "spinner");
    assert_eq!(spinner["metadata"]["namespace"], "busy");
    assert_eq!(spinner["metadata"]["labels"]["app"], "spin");
    assert_eq!(spinner["containers"][0]["name"], "main");
    assert!(is_quantity(
        spinner["containers"][0]["usage"]["cpu"].as_str().unwrap()
    ));
    assert!(is_quantity(
        spinner["containers"][0]["usage"]["memory"]
            .as_str()
            .unwrap()
    ));
    assert!(is_window(spinner["window"].as_str().unwrap()));

    // The busy loop shows as CPU use once a window covers it.
    eventually(METRICS_WAIT, "the spinner's CPU use to show", || {
        let one = raw_json(
            &server,
            "/apis/metrics.k8s.io/v1beta1/namespaces/busy/pods/spinner",
        );
        (one["kind"] == "PodMetrics" && one["containers"][0]["usage"]["cpu"] != "0").then_some(())
    });

    // Selectors, --containers and all namespaces.
    let all = server.kubectl_ok(&["top", "pods", "-A"]);
    assert!(
        all.lines()
            .any(|l| l.starts_with("busy ") && l.contains("spinner")),
        "{all}"
    );
    let containers = server.kubectl_ok(&["top", "pods", "-n", "busy", "--containers"]);
    assert!(
        row(&containers, "spinner").is_some_and(|c| c[1] == "main"),
        "{containers}"
    );
    let out = server.kubectl(&["top", "pods", "-n", "busy", "-l", "app=other"]);
    assert!(out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("No resources found in busy namespace."),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let selected = server.kubectl_ok(&["top", "pods", "-n", "busy", "-l", "app=spin"]);
    assert!(row(&selected, "spinner").is_some(), "{selected}");
    let err = server.kubectl_err(&["top", "pod", "nosuch", "-n", "busy"]);
    assert!(err.contains("not found"), "{err}");

    server.kubectl_ok(&["delete", "pod", "spinner", "-n", "busy", "--wait=false"]);
}
