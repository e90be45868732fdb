//! Storage: the default `local-path` StorageClass, the DefaultStorageClass admission, the
//! PersistentVolume binder, the local-path provisioner and the scheduler's VolumeBinding,
//! driven with the real kubectl against simulated nodes.

mod support;

use std::time::Duration;

use serde_json::Value;
use support::{Server, eventually};

const WAIT: Duration = Duration::from_secs(30);

fn start(nodes: &str) -> Server {
    Server::start_with(&["--sim-nodes", nodes])
}

fn events_for(server: &Server, name: &str) -> String {
    server.kubectl_ok(&[
        "get",
        "events",
        "--field-selector",
        &format!("involvedObject.name={name}"),
        "-o",
        "custom-columns=REASON:.reason,MESSAGE:.message",
    ])
}

fn wait_event(server: &Server, name: &str, needle: &str) -> String {
    eventually(WAIT, &format!("event {needle:?} about {name}"), || {
        let events = events_for(server, name);
        events.contains(needle).then_some(events)
    })
}

/// The object as JSON, or None when it does not exist.
fn get(server: &Server, kind: &str, name: &str) -> Option<Value> {
    let out = server.kubectl(&["get", kind, name, "-o", "json"]);
    out.status
        .success()
        .then(|| serde_json::from_slice(&out.stdout).expect("JSON"))
}

fn phase(server: &Server, kind: &str, name: &str) -> String {
    get(server, kind, name)
        .and_then(|o| o["status"]["phase"].as_str().map(String::from))
        .unwrap_or_default()
}

fn wait_phase(server: &Server, kind: &str, name: &str, want: &str) -> Value {
    eventually(WAIT, &format!("{kind} {name} {want}"), || {
        get(server, kind, name).filter(|o| o["status"]["phase"] == want)
    })
}

/// `kubectl get <kind> <name> --no-headers` split into columns.
fn row(server: &Server, kind: &str, name: &str) -> Vec<String> {
    server
        .kubectl_ok(&["get", kind, name, "--no-headers"])
        .split_whitespace()
        .map(String::from)
        .collect()
}

fn pod_yaml(name: &str, claim: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: {name}
spec:
  containers:
  - name: c
    image: busybox:1.36
    command: ["sleep", "3600"]
    volumeMounts:
    - name: data
      mountPath: /data
  volumes:
  - name: data
    persistentVolumeClaim:
      claimName: {claim}
"#
    )
}

fn node_of(server: &Server, pod: &str) -> String {
    eventually(WAIT, &format!("pod {pod} scheduled"), || {
        get(server, "pod", pod)?["spec"]["nodeName"]
            .as_str()
            .map(String::from)
    })
}

#[test]
fn claim_without_class_is_provisioned_on_its_first_consumers_node() {
    let server = start("3");

    // The default class, as k3s has it.
    let sc = row(&server, "storageclass", "local-path");
    assert_eq!(
        sc[..6],
        [
            "local-path",
            "(default)",
            "rancher.io/local-path",
            "Delete",
            "WaitForFirstConsumer",
            "false"
        ],
        "{sc:?}"
    );

    server.apply(
        r#"apiVersion: v1
kind: PersistentVolumeClaim
metadata:
  name: data
spec:
  accessModes: ["ReadWriteOnce"]
  resources:
    requests:
      storage: 64Mi
"#,
    );
    let claim = get(&server, "pvc", "data").expect("claim");
    assert_eq!(
        claim["spec"]["storageClassName"], "local-path",
        "DefaultStorageClass admission"
    );
    let uid = claim["metadata"]["uid"].as_str().unwrap().to_string();

    // No consumer yet: it waits, and says so.
    let events = wait_event(&server, "data", "WaitForFirstConsumer");
    assert!(
        events.contains("waiting for first consumer to be created before binding"),
        "{events}"
    );
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(phase(&server, "pvc", "data"), "Pending");
    assert!(
        server
            .kubectl_ok(&["get", "pv", "--no-headers"])
            .trim()
            .is_empty()
    );
    let pending = row(&server, "pvc", "data");
    assert_eq!(pending[..2], ["data", "Pending"], "{pending:?}");

    server.apply(&pod_yaml("writer", "data"));
    let node = node_of(&server, "writer");
    let claim = wait_phase(&server, "pvc", "data", "Bound");
    let annotations = &claim["metadata"]["annotations"];
    assert_eq!(
        annotations["volume.kubernetes.io/selected-node"],
        node.as_str()
    );
    assert_eq!(
        annotations["volume.kubernetes.io/storage-provisioner"],
        "rancher.io/local-path"
    );
    assert_eq!(annotations["pv.kubernetes.io/bind-completed"], "yes");
    assert_eq!(annotations["pv.kubernetes.io/bound-by-controller"], "yes");
    let pv_name = format!("pvc-{uid}");
    assert_eq!(claim["spec"]["volumeName"], pv_name.as_str());
    assert_eq!(claim["status"]["capacity"]["storage"], "64Mi");
    assert_eq!(claim["status"]["accessModes"][0], "ReadWriteOnce");

    let pv = wait_phase(&server, "pv", &pv_name, "Bound");
    let expected_path = server
        .data_dir
        .path()
        .join("storage")
        .join(format!("{pv_name}_default_data"));
    assert_eq!(pv["spec"]["local"]["path"], expected_path.to_str().unwrap());
    assert_eq!(
        pv["spec"]["nodeAffinity"]["required"]["nodeSelectorTerms"][0]["matchExpressions"][0],
        serde_json::json!({"key": "kubernetes.io/hostname", "operator": "In", "values": [node]})
    );
    assert_eq!(pv["spec"]["claimRef"]["uid"], uid.as_str());
    assert_eq!(pv["spec"]["persistentVolumeReclaimPolicy"], "Delete");
    assert_eq!(pv["spec"]["storageClassName"], "local-path");
    assert_eq!(pv["spec"]["capacity"]["storage"], "64Mi");
    assert_eq!(
        pv["metadata"]["annotations"]["pv.kubernetes.io/provisioned-by"],
        "rancher.io/local-path"
    );
    let events = wait_event(&server, "data", "ProvisioningSucceeded");
    assert!(
        events.contains(&format!("Successfully provisioned volume {pv_name}")),
        "{events}"
    );

    // kubectl's columns.
    let pvc_row = row(&server, "pvc", "data");
    assert_eq!(
        pvc_row[..7],
        [
            "data",
            "Bound",
            pv_name.as_str(),
            "64Mi",
            "RWO",
            "local-path",
            "<unset>"
        ],
        "{pvc_row:?}"
    );
    let pv_row = row(&server, "pv", &pv_name);
    assert_eq!(
        pv_row[..8],
        [
            pv_name.as_str(),
            "64Mi",
            "RWO",
            "Delete",
            "Bound",
            "default/data",
            "local-path",
            "<unset>"
        ],
        "{pv_row:?}"
    );

    // Every later consumer follows the volume to its node.
    for name in ["reader-1", "reader-2", "reader-3"] {
        server.apply(&pod_yaml(name, "data"));
    }
    for name in ["reader-1", "reader-2", "reader-3"] {
        assert_eq!(
            node_of(&server, name),
            node,
            "{name} must run where the volume is"
        );
    }

    // Deleting the claim releases the volume, and Delete removes it.
    server.kubectl_ok(&[
        "delete",
        "pod",
        "writer",
        "reader-1",
        "reader-2",
        "reader-3",
        "--wait=false",
    ]);
    server.kubectl_ok(&["delete", "pvc", "data", "--wait=false"]);
    eventually(WAIT, "provisioned volume deleted", || {
        get(&server, "pv", &pv_name).is_none().then_some(())
    });
}

#[test]
fn immediate_claims_bind_to_matching_volumes_and_release_per_policy() {
    let server = start("2");
    let nodes = server.kubectl_ok(&["get", "nodes", "-o", "jsonpath={.items[*].metadata.name}"]);
    let nodes: Vec<&str> = nodes.split_whitespace().collect();
    assert_eq!(nodes.len(), 2, "{nodes:?}");
    let pinned = nodes[1];

    let volume = |name: &str, size: &str, policy: &str, affinity: &str| {
        format!(
            r#"apiVersion: v1
kind: PersistentVolume
metadata:
  name: {name}
spec:
  capacity: {{storage: {size}}}
  accessModes: ["ReadWriteOnce"]
  persistentVolumeReclaimPolicy: {policy}
  storageClassName: manual
  hostPath: {{path: /tmp/{name}}}
{affinity}---
"#
        )
    };
    let affinity = format!(
        "  nodeAffinity:\n    required:\n      nodeSelectorTerms:\n      - matchExpressions:\n        - {{key: kubernetes.io/hostname, operator: In, values: [{pinned}]}}\n"
    );
    let manifest = [
        "apiVersion: storage.k8s.io/v1\nkind: StorageClass\nmetadata:\n  name: manual\nprovisioner: kubernetes.io/no-provisioner\nvolumeBindingMode: Immediate\n---\n".to_string(),
        volume("pv-1g", "1Gi", "Retain", ""),
        volume("pv-5g", "5Gi", "Retain", &affinity),
        volume("pv-10g", "10Gi", "Retain", ""),
        volume("pv-3g-delete", "3Gi", "Delete", ""),
    ]
    .concat();
    server.apply(&manifest);
    for pv in ["pv-1g", "pv-5g", "pv-10g", "pv-3g-delete"] {
        wait_phase(&server, "pv", pv, "Available");
    }

    let claim = |name: &str, size: &str, class: &str| {
        format!(
            "apiVersion: v1\nkind: PersistentVolumeClaim\nmetadata:\n  name: {name}\nspec:\n  storageClassName: {class}\n  accessModes: [ReadWriteOnce]\n  resources:\n    requests:\n      storage: {size}\n"
        )
    };
    // 4Gi: the smallest volume that fits is the 5Gi one.
    server.apply(&claim("big", "4Gi", "manual"));
    let bound = wait_phase(&server, "pvc", "big", "Bound");
    assert_eq!(bound["spec"]["volumeName"], "pv-5g");
    assert_eq!(bound["status"]["capacity"]["storage"], "5Gi");
    let pv = wait_phase(&server, "pv", "pv-5g", "Bound");
    assert_eq!(pv["spec"]["claimRef"]["name"], "big");
    assert_eq!(pv["spec"]["claimRef"]["namespace"], "default");
    assert_eq!(
        pv["metadata"]["annotations"]["pv.kubernetes.io/bound-by-controller"],
        "yes"
    );
    let pv_row = row(&server, "pv", "pv-5g");
    assert_eq!(
        pv_row[..7],
        [
            "pv-5g",
            "5Gi",
            "RWO",
            "Retain",
            "Bound",
            "default/big",
            "manual"
        ],
        "{pv_row:?}"
    );

    // A pod using it may only run on the volume's node.
    server.apply(&pod_yaml("user", "big"));
    assert_eq!(node_of(&server, "user"), pinned);

    // A pod whose claim does not exist is unschedulable, with upstream's words.
    server.apply(&pod_yaml("orphan", "nope"));
    let events = wait_event(&server, "orphan", "FailedScheduling");
    assert!(
        events.contains("persistentvolumeclaim \"nope\" not found"),
        "{events}"
    );
    // ...until the claim appears.
    server.apply(&claim("nope", "1Gi", "manual"));
    wait_phase(&server, "pvc", "nope", "Bound");
    node_of(&server, "orphan");

    // Retain: the volume stays, Released.
    server.kubectl_ok(&["delete", "pod", "user", "orphan", "--wait=false"]);
    server.kubectl_ok(&["delete", "pvc", "big"]);
    wait_phase(&server, "pv", "pv-5g", "Released");
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(phase(&server, "pv", "pv-5g"), "Released");

    // Delete on a volume no provisioner made: Failed, as upstream.
    server.apply(&claim("three", "3Gi", "manual"));
    assert_eq!(
        wait_phase(&server, "pvc", "three", "Bound")["spec"]["volumeName"],
        "pv-3g-delete"
    );
    server.kubectl_ok(&["delete", "pvc", "three"]);
    let failed = wait_phase(&server, "pv", "pv-3g-delete", "Failed");
    assert!(
        failed["status"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("no deletable volume plugin matched"),
        "{failed}"
    );

    // No class at all, explicitly: no default, no provisioning.
    server.apply(&claim("classless", "1Gi", "\"\""));
    let classless = get(&server, "pvc", "classless").unwrap();
    assert_eq!(classless["spec"]["storageClassName"], "");
    let events = wait_event(&server, "classless", "FailedBinding");
    assert!(events.contains("no storage class is set"), "{events}");
    // An unbound Immediate claim keeps its pods out.
    server.apply(&claim("toolarge", "100Gi", "manual"));
    server.apply(&pod_yaml("waiting", "toolarge"));
    let events = wait_event(&server, "waiting", "FailedScheduling");
    assert!(
        events.contains("pod has unbound immediate PersistentVolumeClaims"),
        "{events}"
    );
    assert_eq!(phase(&server, "pvc", "toolarge"), "Pending");
}
