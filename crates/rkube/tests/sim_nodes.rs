//! Simulated nodes (`rkube sim`, `rkube server --sim-nodes`) and the node-side controllers
//! (node IPAM, node lifecycle with taint-based eviction), driven with the real kubectl.

mod support;

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;
use support::{Server, eventually};

/// A process the test started, killed (SIGKILL) when dropped.
struct ChildGuard(Option<Child>);

impl ChildGuard {
    fn kill(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        self.kill();
    }
}

fn condition<'a>(obj: &'a Value, type_: &str) -> Option<&'a Value> {
    obj["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == type_)
}

fn condition_status(obj: &Value, type_: &str) -> String {
    condition(obj, type_)
        .and_then(|c| c["status"].as_str())
        .unwrap_or("")
        .to_string()
}

/// `kubectl get nodes` rows (without the header), split into columns.
fn node_rows(server: &Server) -> Vec<Vec<String>> {
    server
        .kubectl_ok(&["get", "nodes", "--no-headers"])
        .lines()
        .map(|l| l.split_whitespace().map(str::to_string).collect())
        .collect()
}

fn pod_json(server: &Server, name: &str) -> Option<Value> {
    let out = server.kubectl(&["get", "pod", name, "-o", "json"]);
    out.status
        .success()
        .then(|| serde_json::from_slice(&out.stdout).expect("pod JSON"))
}

fn in_cidr(ip: &str, cidr: &str) -> bool {
    // Our node ranges are /24s: the first three octets match.
    let (net, prefix) = cidr.split_once('/').unwrap();
    assert_eq!(prefix, "24");
    let a: Vec<&str> = ip.split('.').collect();
    let b: Vec<&str> = net.split('.').collect();
    a.len() == 4 && a[..3] == b[..3]
}

#[test]
fn server_sim_nodes_run_pods() {
    let server = Server::start_with(&["--sim-nodes", "3"]);

    // Three Ready nodes with the usual columns, each with its own podCIDR.
    let header = server.kubectl_ok(&["get", "nodes"]);
    let first = header
        .lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect::<Vec<_>>();
    assert_eq!(
        first,
        ["NAME", "STATUS", "ROLES", "AGE", "VERSION"],
        "{header}"
    );
    let rows = eventually(Duration::from_secs(30), "3 Ready nodes", || {
        let rows = node_rows(&server);
        (rows.len() == 3 && rows.iter().all(|r| r[1] == "Ready")).then_some(rows)
    });
    let names: Vec<&str> = rows.iter().map(|r| r[0].as_str()).collect();
    assert_eq!(names, ["sim-0", "sim-1", "sim-2"]);
    for row in &rows {
        assert_eq!(row[2], "<none>", "roles of {}", row[0]);
        assert!(
            row[4].starts_with("v1."),
            "version of {}: {}",
            row[0],
            row[4]
        );
    }
    let nodes = eventually(Duration::from_secs(30), "podCIDRs on every node", || {
        let nodes = server.get_json(&["nodes"]);
        let items = nodes["items"].as_array()?.clone();
        items
            .iter()
            .all(|n| n["spec"]["podCIDR"].is_string())
            .then_some(items)
    });
    let mut cidrs: Vec<String> = Vec::new();
    for node in &nodes {
        let cidr = node["spec"]["podCIDR"].as_str().unwrap().to_string();
        assert!(
            cidr.starts_with("10.42.") && cidr.ends_with(".0/24"),
            "{cidr}"
        );
        assert_eq!(node["spec"]["podCIDRs"], serde_json::json!([cidr]));
        let capacity = &node["status"]["capacity"];
        assert_eq!(capacity["cpu"], "32");
        assert_eq!(capacity["memory"], "256Gi");
        assert_eq!(capacity["pods"], "110");
        assert!(capacity["ephemeral-storage"].is_string());
        assert_eq!(node["status"]["allocatable"]["pods"], "110");
        let internal = node["status"]["addresses"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["type"] == "InternalIP")
            .expect("an InternalIP");
        assert!(internal["address"].as_str().unwrap().starts_with("10.2"));
        for c in ["Ready", "MemoryPressure", "DiskPressure", "PIDPressure"] {
            assert!(condition(node, c).is_some(), "condition {c}");
        }
        cidrs.push(cidr);
    }
    cidrs.sort();
    cidrs.dedup();
    assert_eq!(cidrs.len(), 3, "podCIDRs collide: {cidrs:?}");
    let wide = server.kubectl_ok(&["get", "nodes", "-o", "wide"]);
    assert!(
        wide.contains("INTERNAL-IP") && wide.contains("10.2"),
        "{wide}"
    );

    // Each node has a Lease in kube-node-lease.
    let leases = server.get_json(&["leases", "-n", "kube-node-lease"]);
    let holders: Vec<&str> = leases["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|l| l["spec"]["holderIdentity"].as_str())
        .collect();
    for name in ["sim-0", "sim-1", "sim-2"] {
        assert!(holders.contains(&name), "lease of {name}: {holders:?}");
    }

    // A pod bound by hand runs, becomes Ready and gets an IP from its node's podCIDR.
    server.apply(
        r#"
apiVersion: v1
kind: Pod
metadata: {name: web, namespace: default}
spec:
  nodeName: sim-0
  initContainers:
  - {name: setup, image: busybox:1.36, command: ["sh", "-c", "exit 0"]}
  containers:
  - {name: web, image: nginx:1.25}
"#,
    );
    let pod = eventually(Duration::from_secs(30), "pod web Running and Ready", || {
        let pod = pod_json(&server, "web")?;
        (pod["status"]["phase"] == "Running" && condition_status(&pod, "Ready") == "True")
            .then_some(pod)
    });
    let ip = pod["status"]["podIP"].as_str().expect("a pod IP");
    let sim0 = nodes
        .iter()
        .find(|n| n["metadata"]["name"] == "sim-0")
        .unwrap();
    assert!(
        in_cidr(ip, sim0["spec"]["podCIDR"].as_str().unwrap()),
        "pod IP {ip} outside sim-0's podCIDR"
    );
    assert!(
        pod["status"]["hostIP"]
            .as_str()
            .unwrap()
            .starts_with("10.2")
    );
    assert!(pod["status"]["startTime"].is_string());
    let container = &pod["status"]["containerStatuses"][0];
    assert_eq!(container["ready"], true);
    assert_eq!(container["started"], true);
    assert_eq!(container["restartCount"], 0);
    assert!(container["state"]["running"]["startedAt"].is_string());
    assert_eq!(container["image"], "nginx:1.25");
    assert!(container["imageID"].as_str().unwrap().contains("sha256:"));
    let init = &pod["status"]["initContainerStatuses"][0];
    assert_eq!(init["state"]["terminated"]["reason"], "Completed");
    for c in ["Initialized", "ContainersReady", "PodScheduled"] {
        assert_eq!(condition_status(&pod, c), "True", "{c}");
    }
    let wide = server.kubectl_ok(&["get", "pod", "web", "-o", "wide"]);
    assert!(
        wide.contains("Running") && wide.contains(ip) && wide.contains("sim-0"),
        "{wide}"
    );

    // `exit 1` with restartPolicy Never fails the pod.
    server.apply(
        r#"
apiVersion: v1
kind: Pod
metadata: {name: fails, namespace: default}
spec:
  nodeName: sim-1
  restartPolicy: Never
  containers:
  - {name: main, image: busybox:1.36, command: ["sh", "-c", "exit 1"]}
"#,
    );
    let failed = eventually(Duration::from_secs(30), "pod fails Failed", || {
        let pod = pod_json(&server, "fails")?;
        (pod["status"]["phase"] == "Failed").then_some(pod)
    });
    let terminated = &failed["status"]["containerStatuses"][0]["state"]["terminated"];
    assert_eq!(terminated["exitCode"], 1);
    assert_eq!(terminated["reason"], "Error");

    // Deleting a pod (graceful) removes it: the simulated kubelet finishes the deletion.
    let started = std::time::Instant::now();
    server.kubectl_ok(&["delete", "pod", "web", "--timeout=30s"]);
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "deletion took {:?}",
        started.elapsed()
    );
    let out = server.kubectl(&["get", "pod", "web"]);
    assert!(!out.status.success(), "pod web still exists");
}

#[test]
fn stopped_simulator_nodes_go_unknown_and_their_pods_are_evicted() {
    let server = Server::start_with(&["--sim-nodes", "3", "--node-monitor-grace-period", "5s"]);
    let mut sim = ChildGuard(Some(
        Command::new(env!("CARGO_BIN_EXE_rkube"))
            .args([
                "sim",
                "--nodes",
                "2",
                "--name-prefix",
                "extra-",
                "--kubeconfig",
            ])
            .arg(server.kubeconfig())
            .env_remove("KUBECONFIG")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start rkube sim"),
    ));
    eventually(Duration::from_secs(30), "5 Ready nodes", || {
        let rows = node_rows(&server);
        (rows.len() == 5 && rows.iter().all(|r| r[1] == "Ready")).then_some(())
    });

    // One pod that gives up on an unreachable node after 2 s, one that tolerates everything.
    server.apply(
        r#"
apiVersion: v1
kind: Pod
metadata: {name: short, namespace: default}
spec:
  nodeName: extra-0
  tolerations:
  - {key: node.kubernetes.io/unreachable, operator: Exists, effect: NoExecute, tolerationSeconds: 2}
  containers:
  - {name: main, image: nginx:1.25}
---
apiVersion: v1
kind: Pod
metadata: {name: stays, namespace: default}
spec:
  nodeName: extra-1
  tolerations:
  - {operator: Exists}
  containers:
  - {name: main, image: nginx:1.25}
"#,
    );
    for name in ["short", "stays"] {
        eventually(
            Duration::from_secs(30),
            "pods Ready on the extra nodes",
            || {
                let pod = pod_json(&server, name)?;
                (condition_status(&pod, "Ready") == "True").then_some(())
            },
        );
    }

    sim.kill();

    // Past the grace period the nodes are NotReady (Ready=Unknown) and tainted unreachable.
    eventually(Duration::from_secs(40), "extra nodes NotReady", || {
        let rows = node_rows(&server);
        let extra: Vec<_> = rows.iter().filter(|r| r[0].starts_with("extra-")).collect();
        let sims: Vec<_> = rows.iter().filter(|r| r[0].starts_with("sim-")).collect();
        (extra.len() == 2
            && extra.iter().all(|r| r[1] == "NotReady")
            && sims.iter().all(|r| r[1] == "Ready"))
        .then_some(())
    });
    let node = server.get_json(&["node", "extra-0"]);
    let ready = condition(&node, "Ready").expect("Ready condition");
    assert_eq!(ready["status"], "Unknown");
    assert_eq!(ready["reason"], "NodeStatusUnknown");
    assert_eq!(ready["message"], "Kubelet stopped posting node status.");
    eventually(
        Duration::from_secs(30),
        "unreachable taints on extra-0",
        || {
            let node = server.get_json(&["node", "extra-0"]);
            let taints = node["spec"]["taints"].as_array()?.clone();
            let has = |effect: &str| {
                taints
                    .iter()
                    .any(|t| t["key"] == "node.kubernetes.io/unreachable" && t["effect"] == effect)
            };
            (has("NoSchedule") && has("NoExecute")).then_some(())
        },
    );

    // The pod without a lasting toleration is evicted (marked for deletion, or gone)...
    eventually(
        Duration::from_secs(30),
        "pod short evicted",
        || match pod_json(&server, "short") {
            None => Some(()),
            Some(pod) => pod["metadata"]["deletionTimestamp"]
                .is_string()
                .then_some(()),
        },
    );
    // ...the tolerating one stays, marked not Ready.
    let stays = eventually(Duration::from_secs(30), "pod stays not Ready", || {
        let pod = pod_json(&server, "stays")?;
        (condition_status(&pod, "Ready") == "False").then_some(pod)
    });
    assert!(stays["metadata"]["deletionTimestamp"].is_null());

    // The eviction is told as upstream tells it.
    eventually(
        Duration::from_secs(20),
        "a TaintManagerEviction event",
        || {
            let events = server.kubectl_ok(&["get", "events", "-n", "default"]);
            events.contains("TaintManagerEviction").then_some(())
        },
    );
}
