//! Object lifecycle end to end: the garbage collector (background, foreground and orphan
//! propagation), namespace deletion, and the Endpoints / EndpointSlice controllers, driven by
//! the real kubectl against `rkube server`.

mod support;

use std::time::Duration;

use serde_json::{Value, json};
use support::{Server, eventually};

const WAIT: Duration = Duration::from_secs(30);

fn uid(server: &Server, args: &[&str]) -> String {
    server.get_json(args)["metadata"]["uid"]
        .as_str()
        .expect("uid")
        .to_string()
}

/// Whether `kubectl get` finds the object (NotFound is false; other failures panic).
fn exists(server: &Server, args: &[&str]) -> bool {
    let mut all = vec!["get"];
    all.extend_from_slice(args);
    let out = server.kubectl(&all);
    if out.status.success() {
        return true;
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("NotFound") || stderr.contains("not found"),
        "kubectl get {args:?}: {stderr}"
    );
    false
}

fn config_map(name: &str, owners: Value) -> String {
    json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "ownerReferences": owners},
        "data": {"k": "v"}
    })
    .to_string()
}

fn owner_ref(name: &str, uid: &str, block: bool) -> Value {
    json!({"apiVersion": "v1", "kind": "ConfigMap", "name": name, "uid": uid, "blockOwnerDeletion": block})
}

#[test]
fn background_deletion_removes_dependents_whose_owners_are_all_gone() {
    let server = Server::start();
    server.kubectl_ok(&["create", "configmap", "owner"]);
    server.kubectl_ok(&["create", "configmap", "other-owner"]);
    let owner = uid(&server, &["configmap", "owner"]);
    let other = uid(&server, &["configmap", "other-owner"]);
    server.apply(&config_map(
        "child-a",
        json!([owner_ref("owner", &owner, false)]),
    ));
    server.apply(&config_map(
        "child-b",
        json!([owner_ref("owner", &owner, true)]),
    ));
    // Two owners, one of which stays: kept, with only the live reference.
    server.apply(&config_map(
        "child-shared",
        json!([
            owner_ref("owner", &owner, false),
            owner_ref("other-owner", &other, false)
        ]),
    ));
    // A reference whose uid is not the live object's dangles: collected.
    server.apply(&config_map(
        "child-dangling",
        json!([owner_ref(
            "other-owner",
            "00000000-0000-0000-0000-000000000000",
            false
        )]),
    ));
    server.apply(&config_map("bystander", json!([])));

    eventually(WAIT, "the dangling dependent to be collected", || {
        (!exists(&server, &["configmap", "child-dangling"])).then_some(())
    });
    assert!(
        exists(&server, &["configmap", "child-a"]),
        "a dependent of a live owner was collected"
    );

    server.kubectl_ok(&["delete", "configmap", "owner"]);
    eventually(WAIT, "dependents of the deleted owner to go", || {
        (!exists(&server, &["configmap", "child-a"]) && !exists(&server, &["configmap", "child-b"]))
            .then_some(())
    });
    let shared = eventually(WAIT, "the shared dependent to lose its dead owner", || {
        let cm = server.get_json(&["configmap", "child-shared"]);
        let refs = cm["metadata"]["ownerReferences"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        (refs.len() == 1).then_some(refs)
    });
    assert_eq!(shared[0]["uid"], other.as_str());
    assert!(exists(&server, &["configmap", "bystander"]));
    assert!(exists(&server, &["configmap", "other-owner"]));
}

#[test]
fn foreground_deletion_keeps_the_owner_until_blocking_dependents_are_gone() {
    let server = Server::start();
    server.kubectl_ok(&["create", "configmap", "owner"]);
    let owner = uid(&server, &["configmap", "owner"]);
    // A finalizer holds the dependent, so the owner's wait can be seen.
    server.apply(
        &json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "held", "finalizers": ["example.com/hold"],
                         "ownerReferences": [owner_ref("owner", &owner, true)]}
        })
        .to_string(),
    );
    server.apply(&config_map(
        "loose",
        json!([owner_ref("owner", &owner, false)]),
    ));

    server.kubectl_ok(&[
        "delete",
        "configmap",
        "owner",
        "--cascade=foreground",
        "--wait=false",
    ]);
    eventually(WAIT, "the dependents to be deleted", || {
        let held = server.get_json(&["configmap", "held"]);
        (held["metadata"]["deletionTimestamp"].is_string()
            && !exists(&server, &["configmap", "loose"]))
        .then_some(())
    });
    // The blocking dependent is still there, so is the owner, waiting in the foreground.
    std::thread::sleep(Duration::from_secs(2));
    let waiting = server.get_json(&["configmap", "owner"]);
    assert!(waiting["metadata"]["deletionTimestamp"].is_string());
    assert_eq!(
        waiting["metadata"]["finalizers"],
        json!(["foregroundDeletion"])
    );

    server.kubectl_ok(&[
        "patch",
        "configmap",
        "held",
        "--type=merge",
        "-p",
        r#"{"metadata":{"finalizers":null}}"#,
    ]);
    eventually(WAIT, "the owner to go once its dependent is gone", || {
        (!exists(&server, &["configmap", "held"]) && !exists(&server, &["configmap", "owner"]))
            .then_some(())
    });
}

#[test]
fn orphan_deletion_keeps_dependents_without_the_reference() {
    let server = Server::start();
    server.kubectl_ok(&["create", "configmap", "owner"]);
    let owner = uid(&server, &["configmap", "owner"]);
    server.apply(&config_map(
        "child-a",
        json!([owner_ref("owner", &owner, true)]),
    ));
    server.apply(&config_map(
        "child-b",
        json!([owner_ref("owner", &owner, false)]),
    ));
    // kubectl waits for the owner to be gone, which needs the collector's orphaning.
    server.kubectl_ok(&[
        "delete",
        "configmap",
        "owner",
        "--cascade=orphan",
        "--timeout=30s",
    ]);
    assert!(!exists(&server, &["configmap", "owner"]));
    for child in ["child-a", "child-b"] {
        let cm = server.get_json(&["configmap", child]);
        let refs = cm["metadata"]["ownerReferences"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        assert!(refs.is_empty(), "{child} still has {refs:?}");
        assert!(cm["metadata"]["deletionTimestamp"].is_null());
    }
    // And they stay.
    std::thread::sleep(Duration::from_secs(2));
    assert!(exists(&server, &["configmap", "child-a"]));
}

#[test]
fn deleting_a_namespace_removes_its_contents_and_nothing_else() {
    let server = Server::start();
    let pod = |ns: &str| {
        json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "app", "namespace": ns, "labels": {"app": "web"}},
            "spec": {"containers": [{"name": "c", "image": "nginx"}]}
        })
        .to_string()
    };
    for ns in ["doomed", "kept"] {
        server.kubectl_ok(&["create", "namespace", ns]);
        server.kubectl_ok(&[
            "create",
            "configmap",
            "settings",
            "-n",
            ns,
            "--from-literal=a=b",
        ]);
        server.kubectl_ok(&[
            "create",
            "secret",
            "generic",
            "token",
            "-n",
            ns,
            "--from-literal=t=x",
        ]);
        server.kubectl_ok(&[
            "create",
            "service",
            "clusterip",
            "web",
            "-n",
            ns,
            "--tcp=80:8080",
        ]);
        server.apply(&pod(ns));
    }
    let kept_cm = uid(&server, &["configmap", "settings", "-n", "kept"]);

    // kubectl waits until the namespace is gone.
    server.kubectl_ok(&["delete", "namespace", "doomed", "--timeout=60s"]);
    let out = server.kubectl(&["get", "namespace", "doomed"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("NotFound"));
    for kind in [
        "configmap/settings",
        "secret/token",
        "service/web",
        "pod/app",
    ] {
        assert!(
            !exists(&server, &[kind, "-n", "doomed"]),
            "{kind} survived in doomed"
        );
        assert!(
            exists(&server, &[kind, "-n", "kept"]),
            "{kind} went from kept"
        );
    }
    assert_eq!(
        uid(&server, &["configmap", "settings", "-n", "kept"]),
        kept_cm
    );
    assert_eq!(
        server.get_json(&["namespace", "kept"])["status"]["phase"],
        "Active"
    );

    // The name can be used again at once, empty.
    server.kubectl_ok(&["create", "namespace", "doomed"]);
    assert!(!exists(&server, &["configmap", "settings", "-n", "doomed"]));
}

#[test]
fn a_terminating_namespace_reports_what_remains() {
    let server = Server::start();
    server.kubectl_ok(&["create", "namespace", "slow"]);
    server.apply(
        &json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "held", "namespace": "slow", "finalizers": ["example.com/hold"]}
        })
        .to_string(),
    );
    server.kubectl_ok(&["delete", "namespace", "slow", "--wait=false"]);
    let conditions = eventually(WAIT, "the ContentRemaining condition", || {
        let ns = server.get_json(&["namespace", "slow"]);
        let conditions = ns["status"]["conditions"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        conditions
            .iter()
            .any(|c| c["type"] == "NamespaceContentRemaining" && c["status"] == "True")
            .then_some(conditions)
    });
    let find = |kind: &str| {
        conditions
            .iter()
            .find(|c| c["type"] == kind)
            .cloned()
            .unwrap()
    };
    assert_eq!(
        find("NamespaceContentRemaining")["reason"],
        "SomeResourcesRemain"
    );
    assert_eq!(
        find("NamespaceContentRemaining")["message"],
        "Some resources are remaining: configmaps. has 1 resource instances"
    );
    assert_eq!(
        find("NamespaceFinalizersRemaining")["message"],
        "Some finalizers are remaining: example.com/hold in 1 resource instances"
    );
    assert_eq!(
        server.get_json(&["namespace", "slow"])["status"]["phase"],
        "Terminating"
    );
    server.kubectl_ok(&[
        "patch",
        "configmap",
        "held",
        "-n",
        "slow",
        "--type=merge",
        "-p",
        r#"{"metadata":{"finalizers":null}}"#,
    ]);
    eventually(WAIT, "the namespace to go", || {
        (!exists(&server, &["namespace", "slow"])).then_some(())
    });
}

/// Set a pod's IP and readiness through the status subresource, as a node would.
fn set_pod_status(server: &Server, name: &str, ip: &str, ready: bool) {
    let status = json!({"status": {
        "phase": "Running",
        "podIP": ip,
        "podIPs": [{"ip": ip}],
        "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}]
    }});
    server.kubectl_ok(&[
        "patch",
        "pod",
        name,
        "--subresource=status",
        "--type=merge",
        "-p",
        &status.to_string(),
    ]);
}

fn web_pod(name: &str, port_name: &str, port: i32, node: Option<&str>) -> String {
    let mut pod = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": "web"}},
        "spec": {"containers": [{"name": "c", "image": "nginx",
                                 "ports": [{"name": port_name, "containerPort": port}]}]}
    });
    match node {
        Some(node) => pod["spec"]["nodeName"] = json!(node),
        // Nobody schedules or runs it: the test plays the node.
        None => pod["spec"]["schedulerName"] = json!("none"),
    }
    pod.to_string()
}

const WEB_SERVICE: &str = r#"{"apiVersion": "v1", "kind": "Service",
  "metadata": {"name": "web", "labels": {"tier": "front"}},
  "spec": {"selector": {"app": "web"}, "ports": [{"name": "http", "port": 80, "targetPort": "web"}]}}"#;

/// Ready and not-ready addresses of the Endpoints, as sorted (ip, port) pairs.
/// (ip, port) pairs of one kind of Endpoints address.
type Addresses = Vec<(String, i64)>;

fn endpoint_addresses(server: &Server) -> (Addresses, Addresses) {
    let ep = server.get_json(&["endpoints", "web"]);
    let mut ready = Vec::new();
    let mut not_ready = Vec::new();
    for subset in ep["subsets"].as_array().into_iter().flatten() {
        let port = subset["ports"][0]["port"].as_i64().unwrap_or(0);
        for a in subset["addresses"].as_array().into_iter().flatten() {
            ready.push((a["ip"].as_str().unwrap().to_string(), port));
        }
        for a in subset["notReadyAddresses"].as_array().into_iter().flatten() {
            not_ready.push((a["ip"].as_str().unwrap().to_string(), port));
        }
    }
    ready.sort();
    not_ready.sort();
    (ready, not_ready)
}

/// Every endpoint of the service's slices as (ip, ready), sorted.
fn slice_endpoints(server: &Server) -> Vec<(String, bool)> {
    let slices = server.get_json(&["endpointslices", "-l", "kubernetes.io/service-name=web"]);
    let mut all = Vec::new();
    for slice in slices["items"].as_array().into_iter().flatten() {
        for e in slice["endpoints"].as_array().into_iter().flatten() {
            all.push((
                e["addresses"][0].as_str().unwrap().to_string(),
                e["conditions"]["ready"].as_bool().unwrap_or(false),
            ));
        }
    }
    all.sort();
    all
}

#[test]
fn endpoints_follow_pod_readiness_and_named_ports() {
    let server = Server::start();
    server.apply(WEB_SERVICE);
    server.apply(&web_pod("web-1", "web", 8080, None));
    server.apply(&web_pod("web-2", "web", 9090, None));
    // Selected but without the named port: left out of the Endpoints.
    server.apply(&web_pod("web-3", "other", 7070, None));
    set_pod_status(&server, "web-1", "10.42.0.11", true);
    set_pod_status(&server, "web-2", "10.42.0.12", false);
    set_pod_status(&server, "web-3", "10.42.0.13", true);

    let (ready, not_ready) = eventually(WAIT, "endpoints of both pods", || {
        let (ready, not_ready) = endpoint_addresses(&server);
        (ready.len() == 1 && not_ready.len() == 1).then_some((ready, not_ready))
    });
    assert_eq!(ready, vec![("10.42.0.11".to_string(), 8080)]);
    assert_eq!(not_ready, vec![("10.42.0.12".to_string(), 9090)]);
    let ep = server.get_json(&["endpoints", "web"]);
    assert_eq!(ep["metadata"]["labels"]["tier"], "front");
    let address = &ep["subsets"][0]["addresses"][0];
    assert_eq!(address["targetRef"]["kind"], "Pod");

    // The slices say the same, with conditions.
    let slices = eventually(WAIT, "endpointslice endpoints", || {
        let all = slice_endpoints(&server);
        (all.len() == 3).then_some(all)
    });
    assert_eq!(
        slices,
        vec![
            ("10.42.0.11".to_string(), true),
            ("10.42.0.12".to_string(), false),
            ("10.42.0.13".to_string(), true)
        ]
    );
    let list = server.get_json(&["endpointslices", "-l", "kubernetes.io/service-name=web"]);
    let slice = &list["items"][0];
    assert_eq!(slice["addressType"], "IPv4");
    assert_eq!(
        slice["metadata"]["labels"]["endpointslice.kubernetes.io/managed-by"],
        "endpointslice-controller.k8s.io"
    );
    assert_eq!(slice["metadata"]["ownerReferences"][0]["kind"], "Service");
    assert_eq!(slice["metadata"]["ownerReferences"][0]["name"], "web");

    // Readiness changes move the address.
    set_pod_status(&server, "web-2", "10.42.0.12", true);
    eventually(WAIT, "web-2 to become ready", || {
        let (ready, not_ready) = endpoint_addresses(&server);
        (ready.len() == 2 && not_ready.is_empty()).then_some(())
    });

    // The `kubernetes` service keeps the endpoints the API server gives it.
    let kubernetes = server.get_json(&["endpoints", "kubernetes"]);
    assert!(kubernetes["subsets"][0]["addresses"][0]["ip"].is_string());

    // A deleted service takes its Endpoints and slices with it.
    server.kubectl_ok(&["delete", "service", "web"]);
    eventually(
        WAIT,
        "the endpoints and slices of the deleted service to go",
        || {
            let slices =
                server.get_json(&["endpointslices", "-l", "kubernetes.io/service-name=web"]);
            (!exists(&server, &["endpoints", "web"])
                && slices["items"].as_array().is_some_and(|i| i.is_empty()))
            .then_some(())
        },
    );
}

#[test]
fn endpoints_of_sim_node_pods_update_on_scale() {
    let server = Server::start_with(&["--sim-nodes", "2"]);
    server.apply(WEB_SERVICE);
    for i in 0..3 {
        server.apply(&web_pod(&format!("web-{i}"), "web", 8080, Some("sim-0")));
    }
    let pod_ips = |server: &Server| -> Vec<String> {
        let pods = server.get_json(&["pods", "-l", "app=web"]);
        let mut ips: Vec<String> = pods["items"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
            .filter_map(|p| p["status"]["podIP"].as_str().map(str::to_string))
            .collect();
        ips.sort();
        ips
    };
    let ips = eventually(Duration::from_secs(60), "three pods with IPs", || {
        let ips = pod_ips(&server);
        (ips.len() == 3).then_some(ips)
    });
    let expected: Vec<(String, i64)> = ips.iter().map(|ip| (ip.clone(), 8080)).collect();
    eventually(WAIT, "endpoints of the three ready pods", || {
        (endpoint_addresses(&server).0 == expected).then_some(())
    });
    eventually(WAIT, "slices of the three ready pods", || {
        let all = slice_endpoints(&server);
        (all == ips.iter().map(|ip| (ip.clone(), true)).collect::<Vec<_>>()).then_some(())
    });

    // Scale up by two, then down by one.
    for i in 3..5 {
        server.apply(&web_pod(&format!("web-{i}"), "web", 8080, Some("sim-1")));
    }
    let ips = eventually(Duration::from_secs(60), "five pods with IPs", || {
        let ips = pod_ips(&server);
        (ips.len() == 5).then_some(ips)
    });
    eventually(WAIT, "endpoints of five pods", || {
        let ready: Vec<String> = endpoint_addresses(&server)
            .0
            .into_iter()
            .map(|(ip, _)| ip)
            .collect();
        (ready == ips).then_some(())
    });
    server.kubectl_ok(&["delete", "pod", "web-0", "--wait=false"]);
    eventually(
        Duration::from_secs(60),
        "the deleted pod to leave the endpoints",
        || {
            let (ready, _) = endpoint_addresses(&server);
            let all = slice_endpoints(&server);
            let ready_slices = all.iter().filter(|(_, r)| *r).count();
            (ready.len() == 4 && ready_slices == 4).then_some(())
        },
    );
    let slice = server.get_json(&["endpointslices", "-l", "kubernetes.io/service-name=web"]);
    let endpoint = slice["items"][0]["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["conditions"]["ready"] == true)
        .cloned()
        .unwrap();
    assert!(
        endpoint["nodeName"]
            .as_str()
            .is_some_and(|n| n.starts_with("sim-"))
    );
    assert_eq!(endpoint["targetRef"]["kind"], "Pod");
}

/// Needs the Deployment and ReplicaSet controllers, the scheduler and simulated nodes.
#[test]
fn endpoints_of_a_deployment_follow_scale_and_its_deletion_cascades() {
    let server = Server::start_with(&["--sim-nodes", "2"]);
    server.apply(WEB_SERVICE);
    server.apply(
        r#"{"apiVersion": "apps/v1", "kind": "Deployment",
  "metadata": {"name": "web"},
  "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "web"}},
           "template": {"metadata": {"labels": {"app": "web"}},
                        "spec": {"containers": [{"name": "c", "image": "nginx",
                                                 "ports": [{"name": "web", "containerPort": 8080}]}]}}}}"#,
    );
    let ready_ips = |server: &Server| -> Vec<String> {
        let pods = server.get_json(&["pods", "-l", "app=web"]);
        let mut ips: Vec<String> = pods["items"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
            .filter(|p| {
                p["status"]["conditions"].as_array().is_some_and(|cs| {
                    cs.iter()
                        .any(|c| c["type"] == "Ready" && c["status"] == "True")
                })
            })
            .filter_map(|p| p["status"]["podIP"].as_str().map(str::to_string))
            .collect();
        ips.sort();
        ips
    };
    for replicas in [3usize, 5, 2] {
        server.kubectl_ok(&[
            "scale",
            "deployment",
            "web",
            &format!("--replicas={replicas}"),
        ]);
        eventually(
            Duration::from_secs(60),
            &format!("endpoints of {replicas} ready pods"),
            || {
                let ips = ready_ips(&server);
                let endpoints: Vec<String> = endpoint_addresses(&server)
                    .0
                    .into_iter()
                    .map(|(ip, _)| ip)
                    .collect();
                let slices: Vec<String> = slice_endpoints(&server)
                    .into_iter()
                    .filter(|(_, ready)| *ready)
                    .map(|(ip, _)| ip)
                    .collect();
                (ips.len() == replicas && endpoints == ips && slices == ips).then_some(())
            },
        );
    }
    // Background deletion: the ReplicaSet and its pods follow the Deployment.
    server.kubectl_ok(&["delete", "deployment", "web"]);
    eventually(
        Duration::from_secs(60),
        "replicasets and pods of the deleted deployment to go",
        || {
            let rs = server.get_json(&["replicasets", "-l", "app=web"]);
            let pods = server.get_json(&["pods", "-l", "app=web"]);
            (rs["items"].as_array().is_some_and(|i| i.is_empty())
                && pods["items"].as_array().is_some_and(|i| i.is_empty()))
            .then_some(())
        },
    );
    eventually(WAIT, "the endpoints to empty", || {
        let (ready, not_ready) = endpoint_addresses(&server);
        (ready.is_empty() && not_ready.is_empty()).then_some(())
    });
}
