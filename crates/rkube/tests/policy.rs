//! End to end: ResourceQuota (admission and the usage controller), LimitRange defaults and
//! limits, and PodDisruptionBudget status, with the real `kubectl` against `rkube server`.

mod support;

use std::time::Duration;

use serde_json::Value;
use support::{Server, eventually};

/// Every wait in this file is bounded by this (the quota controller reacts to changes within
/// a second; its periodic recount is 30 s).
const WAIT: Duration = Duration::from_secs(40);

fn create(server: &Server, manifest: &str) -> std::process::Output {
    server.kubectl_stdin(&["create", "-f", "-"], manifest)
}

fn create_ok(server: &Server, manifest: &str) {
    let out = create(server, manifest);
    assert!(
        out.status.success(),
        "create failed: {}\nserver log tail:\n{}",
        String::from_utf8_lossy(&out.stderr),
        support::tail(&server.log(), 30)
    );
}

fn create_err(server: &Server, manifest: &str) -> String {
    let out = create(server, manifest);
    assert!(
        !out.status.success(),
        "create should have been rejected: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn quota_used(server: &Server, name: &str, resource: &str) -> Option<String> {
    let q = server.get_json(&["resourcequota", name]);
    q["status"]["used"][resource].as_str().map(String::from)
}

fn pod_manifest(name: &str, resources: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\nspec:\n  containers:\n  - name: web\n    image: nginx\n    resources: {resources}\n"
    )
}

#[test]
fn object_count_quota_rejects_the_third_configmap_and_frees_on_delete() {
    let server = Server::start();
    server.kubectl_ok(&["create", "quota", "objects", "--hard=count/configmaps=2"]);
    server.kubectl_ok(&["create", "configmap", "one"]);
    server.kubectl_ok(&["create", "configmap", "two"]);
    let err = server.kubectl_err(&["create", "configmap", "three"]);
    assert!(
        err.contains(
            "configmaps \"three\" is forbidden: exceeded quota: objects, requested: count/configmaps=1, used: count/configmaps=2, limited: count/configmaps=2"
        ),
        "{err}"
    );
    assert_eq!(
        quota_used(&server, "objects", "count/configmaps").as_deref(),
        Some("2")
    );
    let hard = server.get_json(&["resourcequota", "objects"]);
    assert_eq!(hard["status"]["hard"]["count/configmaps"], "2");

    // Deleting frees the slot: the controller recounts.
    server.kubectl_ok(&["delete", "configmap", "one"]);
    eventually(WAIT, "count/configmaps usage to drop to 1", || {
        (quota_used(&server, "objects", "count/configmaps").as_deref() == Some("1")).then_some(())
    });
    server.kubectl_ok(&["create", "configmap", "three"]);
    let out = server.kubectl_ok(&["describe", "quota", "objects"]);
    assert!(
        out.lines()
            .any(|l| l.split_whitespace().collect::<Vec<_>>() == ["count/configmaps", "2", "2"]),
        "{out}"
    );
}

#[test]
fn compute_quota_rejects_pods_over_it_and_pods_without_requests() {
    let server = Server::start();
    create_ok(
        &server,
        "apiVersion: v1\nkind: ResourceQuota\nmetadata:\n  name: compute\nspec:\n  hard:\n    requests.cpu: \"2\"\n    requests.memory: 1Gi\n    pods: \"3\"\n",
    );
    create_ok(
        &server,
        &pod_manifest("a", "{requests: {cpu: 1500m, memory: 256Mi}}"),
    );
    let err = create_err(
        &server,
        &pod_manifest("b", "{requests: {cpu: \"1\", memory: 256Mi}}"),
    );
    assert!(
        err.contains(
            "pods \"b\" is forbidden: exceeded quota: compute, requested: requests.cpu=1, used: requests.cpu=1500m, limited: requests.cpu=2"
        ),
        "{err}"
    );
    let err = create_err(&server, &pod_manifest("c", "{}"));
    assert!(
        err.contains(
            "pods \"c\" is forbidden: failed quota: compute: must specify requests.cpu for: web; requests.memory for: web"
        ),
        "{err}"
    );
    let q = server.get_json(&["resourcequota", "compute"]);
    assert_eq!(q["status"]["used"]["requests.cpu"], "1500m", "{q}");
    assert_eq!(q["status"]["used"]["requests.memory"], "256Mi", "{q}");
    assert_eq!(q["status"]["used"]["pods"], "1", "{q}");

    // Deleting the pod gives its share back.
    server.kubectl_ok(&["delete", "pod", "a", "--grace-period=0", "--force"]);
    eventually(WAIT, "requests.cpu usage to drop to 0", || {
        (quota_used(&server, "compute", "requests.cpu").as_deref() == Some("0")).then_some(())
    });
    create_ok(
        &server,
        &pod_manifest("b", "{requests: {cpu: \"1\", memory: 256Mi}}"),
    );
}

#[test]
fn limit_range_defaults_requests_and_limits_and_enforces_max() {
    let server = Server::start();
    create_ok(
        &server,
        "apiVersion: v1\nkind: LimitRange\nmetadata:\n  name: limits\nspec:\n  limits:\n  - type: Container\n    default: {cpu: 500m, memory: 256Mi}\n    defaultRequest: {cpu: 100m}\n    max: {cpu: \"1\"}\n  - type: PersistentVolumeClaim\n    max: {storage: 2Gi}\n",
    );
    server.kubectl_ok(&["run", "web", "--image=nginx"]);
    let pod = server.get_json(&["pod", "web"]);
    let resources = &pod["spec"]["containers"][0]["resources"];
    assert_eq!(resources["limits"]["cpu"], "500m", "{pod}");
    assert_eq!(resources["limits"]["memory"], "256Mi", "{pod}");
    assert_eq!(resources["requests"]["cpu"], "100m", "{pod}");
    assert_eq!(resources["requests"]["memory"], "256Mi", "{pod}");
    assert_eq!(
        pod["metadata"]["annotations"]["kubernetes.io/limit-ranger"],
        "LimitRanger plugin set: cpu, memory request for container web; cpu, memory limit for container web",
        "{pod}"
    );

    let err = create_err(&server, &pod_manifest("big", "{limits: {cpu: \"2\"}}"));
    assert!(
        err.contains(
            "pods \"big\" is forbidden: maximum cpu usage per Container is 1, but limit is 2"
        ),
        "{err}"
    );
    let err = create_err(
        &server,
        "apiVersion: v1\nkind: PersistentVolumeClaim\nmetadata:\n  name: data\nspec:\n  accessModes: [ReadWriteOnce]\n  resources:\n    requests: {storage: 5Gi}\n",
    );
    assert!(
        err.contains("persistentvolumeclaims \"data\" is forbidden: maximum storage usage per PersistentVolumeClaim is 2Gi, but request is 5Gi"),
        "{err}"
    );
}

fn pdb_status(server: &Server, name: &str) -> Value {
    server.get_json(&["pdb", name])["status"].clone()
}

/// A pod labelled `app: db`, bound by hand to `node` (none: it stays Pending).
fn bound_pod(name: &str, node: Option<&str>) -> String {
    let node = node.map_or(String::new(), |n| format!("  nodeName: {n}\n"));
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  labels: {{app: db}}\nspec:\n{node}  containers:\n  - name: db\n    image: postgres\n"
    )
}

#[test]
fn disruption_budget_status_counts_matching_pods() {
    let server = Server::start();
    create_ok(
        &server,
        "apiVersion: policy/v1\nkind: PodDisruptionBudget\nmetadata:\n  name: db\nspec:\n  minAvailable: 2\n  selector:\n    matchLabels: {app: db}\n",
    );
    // Pods that are not Ready (no node runs them): nothing may be disrupted.
    for name in ["db-0", "db-1", "db-2"] {
        create_ok(&server, &bound_pod(name, None));
    }
    let status = eventually(WAIT, "PDB status to count 3 expected pods", || {
        let s = pdb_status(&server, "db");
        (s["expectedPods"] == 3).then_some(s)
    });
    assert_eq!(status["currentHealthy"], 0, "{status}");
    assert_eq!(status["desiredHealthy"], 2, "{status}");
    assert_eq!(status["disruptionsAllowed"], 0, "{status}");
    assert_eq!(status["observedGeneration"], 1, "{status}");
    let condition = &status["conditions"][0];
    assert_eq!(condition["type"], "DisruptionAllowed", "{status}");
    assert_eq!(condition["status"], "False", "{status}");
    assert_eq!(condition["reason"], "InsufficientPods", "{status}");

    let out = server.kubectl_ok(&["get", "pdb", "db"]);
    let row: Vec<&str> = out
        .lines()
        .nth(1)
        .unwrap_or("")
        .split_whitespace()
        .collect();
    assert_eq!(&row[..4], ["db", "2", "N/A", "0"], "{out}");
}

#[test]
fn disruption_budget_allows_disruptions_once_pods_are_ready() {
    let server = Server::start_with(&["--sim-nodes", "2"]);
    eventually(WAIT, "simulated nodes to register", || {
        let nodes = server.get_json(&["nodes"]);
        (nodes["items"].as_array().map_or(0, Vec::len) >= 2).then_some(())
    });
    create_ok(
        &server,
        "apiVersion: policy/v1\nkind: PodDisruptionBudget\nmetadata:\n  name: db\nspec:\n  maxUnavailable: 1\n  selector:\n    matchLabels: {app: db}\n",
    );
    create_ok(
        &server,
        "apiVersion: policy/v1\nkind: PodDisruptionBudget\nmetadata:\n  name: db-min\nspec:\n  minAvailable: 1\n  selector:\n    matchLabels: {app: db}\n",
    );
    for (name, node) in [("db-0", "sim-0"), ("db-1", "sim-1"), ("db-2", "sim-0")] {
        create_ok(&server, &bound_pod(name, Some(node)));
    }
    let status = eventually(WAIT, "3 healthy pods in the PDB status", || {
        let s = pdb_status(&server, "db-min");
        (s["currentHealthy"] == 3).then_some(s)
    });
    assert_eq!(status["desiredHealthy"], 1, "{status}");
    assert_eq!(status["expectedPods"], 3, "{status}");
    assert_eq!(status["disruptionsAllowed"], 2, "{status}");
    assert_eq!(status["conditions"][0]["status"], "True", "{status}");
    assert_eq!(
        status["conditions"][0]["reason"], "SufficientPods",
        "{status}"
    );

    // maxUnavailable counts the owners' scale; these pods have no owner, so none are expected
    // (as upstream) and no disruption is allowed.
    let status = eventually(WAIT, "maxUnavailable PDB status", || {
        let s = pdb_status(&server, "db");
        (s["currentHealthy"] == 3).then_some(s)
    });
    assert_eq!(status["expectedPods"], 0, "{status}");
    assert_eq!(status["disruptionsAllowed"], 0, "{status}");

    // Losing pods lowers the count.
    server.kubectl_ok(&[
        "delete",
        "pod",
        "db-0",
        "db-1",
        "--grace-period=0",
        "--force",
    ]);
    let status = eventually(WAIT, "PDB status after deletes", || {
        let s = pdb_status(&server, "db-min");
        (s["currentHealthy"] == 1).then_some(s)
    });
    assert_eq!(status["disruptionsAllowed"], 0, "{status}");
    assert_eq!(
        status["conditions"][0]["reason"], "InsufficientPods",
        "{status}"
    );
}

fn evict(server: &Server, pod: &str) -> (u16, String) {
    let body = format!(
        r#"{{"apiVersion":"policy/v1","kind":"Eviction","metadata":{{"name":"{pod}","namespace":"default"}}}}"#
    );
    server.raw(
        "POST",
        &format!("/api/v1/namespaces/default/pods/{pod}/eviction"),
        Some(body.as_bytes()),
        "application/json",
        false,
    )
}

#[test]
fn eviction_respects_the_disruption_budget() {
    let server = Server::start_with(&["--sim-nodes", "2"]);
    eventually(WAIT, "simulated nodes to register", || {
        let nodes = server.get_json(&["nodes"]);
        (nodes["items"].as_array().map_or(0, Vec::len) >= 2).then_some(())
    });
    create_ok(
        &server,
        "apiVersion: policy/v1\nkind: PodDisruptionBudget\nmetadata:\n  name: db\nspec:\n  minAvailable: 2\n  selector:\n    matchLabels: {app: db}\n",
    );
    for (name, node) in [("db-0", "sim-0"), ("db-1", "sim-1"), ("db-2", "sim-0")] {
        create_ok(&server, &bound_pod(name, Some(node)));
    }
    eventually(WAIT, "one disruption allowed", || {
        (pdb_status(&server, "db")["disruptionsAllowed"] == 1).then_some(())
    });
    let (code, body) = evict(&server, "db-0");
    assert_eq!(code, 201, "{body}");
    // The budget is spent until the controller sees the pod gone and recounts.
    let (code, body) = evict(&server, "db-1");
    assert_eq!(code, 429, "{body}");
    let status: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(status["reason"], "TooManyRequests", "{body}");
    assert_eq!(
        status["message"], "Cannot evict pod as it would violate the pod's disruption budget.",
        "{body}"
    );
    assert_eq!(
        status["details"]["causes"][0]["reason"], "DisruptionBudget",
        "{body}"
    );
    let status = eventually(WAIT, "PDB recount after the eviction", || {
        let s = pdb_status(&server, "db");
        (s["currentHealthy"] == 2 && s["expectedPods"] == 2).then_some(s)
    });
    assert_eq!(status["disruptionsAllowed"], 0, "{status}");
}
