//! End to end: StatefulSets on simulated nodes, driven with the real kubectl: ordered creation
//! with a claim per ordinal, reverse scale down, parallel pod management, rolling updates with a
//! partition, rollout status/history/undo.

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::Value;
use support::{Server, eventually};

const WAIT: Duration = Duration::from_secs(90);

fn start() -> Server {
    Server::start_with(&["--sim-nodes", "3"])
}

/// A headless Service and a StatefulSet `web` of nginx pods with a `www` claim each; `extra`
/// is spliced into the StatefulSet spec, `pod_extra` into the pod spec.
fn manifest(replicas: u32, image: &str, extra: &str, pod_extra: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: Service
metadata:
  name: nginx
spec:
  clusterIP: None
  selector:
    app: web
  ports:
  - port: 80
    name: web
---
apiVersion: apps/v1
kind: StatefulSet
metadata:
  name: web
spec:
  serviceName: nginx
  replicas: {replicas}
{extra}
  selector:
    matchLabels:
      app: web
  template:
    metadata:
      labels:
        app: web
    spec:
{pod_extra}
      containers:
      - name: nginx
        image: {image}
        ports:
        - containerPort: 80
  volumeClaimTemplates:
  - metadata:
      name: www
    spec:
      accessModes: ["ReadWriteOnce"]
      resources:
        requests:
          storage: 1Gi
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

/// The set's pods by name.
fn pods(server: &Server) -> BTreeMap<String, Value> {
    pods_in(server, "default")
}

fn pods_in(server: &Server, namespace: &str) -> BTreeMap<String, Value> {
    let list = server.get_json(&["pods", "-n", namespace, "-l", "app=web"]);
    list["items"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .map(|p| (p["metadata"]["name"].as_str().unwrap().to_string(), p))
        .collect()
}

fn image(pod: &Value) -> &str {
    pod["spec"]["containers"][0]["image"].as_str().unwrap_or("")
}

fn revision(pod: &Value) -> &str {
    pod["metadata"]["labels"]["controller-revision-hash"]
        .as_str()
        .unwrap_or("")
}

fn sts(server: &Server) -> Value {
    server.get_json(&["statefulset", "web"])
}

/// Wait (bounded) until `replicas` pods are Running and Ready and the status says so.
fn wait_ready(server: &Server, replicas: i64) -> Value {
    eventually(WAIT, &format!("{replicas} ready replicas"), || {
        let s = sts(server);
        let ready = s["status"]["readyReplicas"].as_i64().unwrap_or(0) == replicas
            && s["status"]["replicas"].as_i64() == Some(replicas)
            && s["status"]["observedGeneration"] == s["metadata"]["generation"];
        (ready && pods(server).values().filter(|p| is_ready(p)).count() == replicas as usize)
            .then_some(s)
    })
}

#[test]
fn ordered_creation_with_claims_and_reverse_scale_down() {
    let server = start();
    server.apply(&manifest(3, "nginx:1", "", ""));

    // Whenever web-N exists, every lower ordinal is already Running and Ready.
    let mut seen = Vec::new();
    eventually(WAIT, "web-0..2 ready in order", || {
        let pods = pods(&server);
        for name in pods.keys() {
            let ordinal: usize = name.trim_start_matches("web-").parse().unwrap();
            for lower in 0..ordinal {
                let below = pods.get(&format!("web-{lower}"));
                assert!(
                    below.is_some_and(is_ready),
                    "{name} exists while web-{lower} is not ready: {:?}",
                    pods.keys().collect::<Vec<_>>()
                );
            }
            if !seen.contains(name) {
                seen.push(name.clone());
            }
        }
        (pods.len() == 3 && pods.values().all(is_ready)).then_some(())
    });
    assert_eq!(seen, ["web-0", "web-1", "web-2"]);
    let set = wait_ready(&server, 3);
    let update_revision = set["status"]["updateRevision"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(set["status"]["currentRevision"], update_revision.as_str());
    assert_eq!(set["status"]["currentReplicas"], 3);
    assert_eq!(set["status"]["updatedReplicas"], 3);
    assert_eq!(set["status"]["availableReplicas"], 3);

    // Stable identity, the revision label, and a claim per ordinal mounted by the pod.
    for (name, pod) in pods(&server) {
        let ordinal = name.trim_start_matches("web-");
        let labels = &pod["metadata"]["labels"];
        assert_eq!(labels["statefulset.kubernetes.io/pod-name"], name.as_str());
        assert_eq!(labels["apps.kubernetes.io/pod-index"], ordinal);
        assert_eq!(revision(&pod), update_revision);
        assert_eq!(pod["spec"]["hostname"], name.as_str());
        assert_eq!(pod["spec"]["subdomain"], "nginx");
        assert_eq!(pod["metadata"]["ownerReferences"][0]["kind"], "StatefulSet");
        let volume = pod["spec"]["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["name"] == "www")
            .cloned()
            .expect("www volume");
        assert_eq!(
            volume["persistentVolumeClaim"]["claimName"],
            format!("www-web-{ordinal}").as_str()
        );
        let claim = server.get_json(&["pvc", &format!("www-web-{ordinal}")]);
        assert_eq!(claim["metadata"]["labels"]["app"], "web");
        assert_eq!(claim["spec"]["resources"]["requests"]["storage"], "1Gi");
    }
    // The template is recorded as revision 1.
    let revision_obj = server.get_json(&["controllerrevision", &update_revision]);
    assert_eq!(revision_obj["revision"], 1);
    assert_eq!(
        revision_obj["metadata"]["ownerReferences"][0]["name"],
        "web"
    );
    assert_eq!(
        revision_obj["data"]["spec"]["template"]["spec"]["containers"][0]["image"],
        "nginx:1"
    );

    // Scale down: web-2 goes before web-1, and the claims stay.
    server.kubectl_ok(&["scale", "statefulset", "web", "--replicas=1"]);
    eventually(WAIT, "scaled down to web-0", || {
        let pods = pods(&server);
        assert!(
            !pods.contains_key("web-2") || pods.contains_key("web-1"),
            "web-1 removed before web-2"
        );
        (pods.keys().collect::<Vec<_>>() == ["web-0"]).then_some(())
    });
    wait_ready(&server, 1);
    let claims = server.kubectl_ok(&["get", "pvc", "-o", "name"]);
    for ordinal in 0..3 {
        assert!(
            claims.contains(&format!("persistentvolumeclaim/www-web-{ordinal}")),
            "{claims}"
        );
    }

    // Scaling up again reuses the claims.
    server.kubectl_ok(&["scale", "statefulset", "web", "--replicas=2"]);
    wait_ready(&server, 2);

    let describe = eventually(WAIT, "events on the statefulset", || {
        let text = server.kubectl_ok(&["describe", "statefulset", "web"]);
        text.contains("delete Pod web-2 in StatefulSet web successful")
            .then_some(text)
    });
    assert!(describe.contains("SuccessfulCreate"), "{describe}");
    assert!(
        describe.contains("create Pod web-0 in StatefulSet web successful"),
        "{describe}"
    );
}

/// A readiness gate nobody satisfies keeps pods unready: OrderedReady then waits at web-0,
/// Parallel creates every pod at once.
#[test]
fn ordered_ready_waits_and_parallel_does_not() {
    let server = start();
    let gate = "      readinessGates:\n      - conditionType: example.com/never\n";
    server.apply(&manifest(3, "nginx:1", "", gate));
    eventually(WAIT, "web-0 running", || {
        pods(&server)
            .get("web-0")
            .filter(|p| p["status"]["phase"] == "Running")
            .map(|_| ())
    });
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(pods(&server).keys().collect::<Vec<_>>(), ["web-0"]);

    server.kubectl_ok(&["create", "namespace", "parallel"]);
    let out = server.kubectl_stdin(
        &["apply", "-n", "parallel", "-f", "-"],
        &manifest(3, "nginx:1", "  podManagementPolicy: Parallel", gate),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    eventually(WAIT, "three pods at once", || {
        (pods_in(&server, "parallel").len() == 3).then_some(())
    });
    let set = eventually(WAIT, "status of three unready pods", || {
        let s = server.get_json(&["statefulset", "web", "-n", "parallel"]);
        (s["status"]["replicas"] == 3).then_some(s)
    });
    assert_eq!(set["status"]["readyReplicas"].as_i64().unwrap_or(0), 0);
}

#[test]
fn rolling_update_with_partition_then_rollout_and_undo() {
    let server = start();
    let partitioned =
        "  updateStrategy:\n    type: RollingUpdate\n    rollingUpdate:\n      partition: 2";
    server.apply(&manifest(3, "nginx:1", partitioned, ""));
    let before = wait_ready(&server, 3);
    let first_revision = before["status"]["currentRevision"]
        .as_str()
        .unwrap()
        .to_string();

    // Only ordinals at or above the partition move to the new template.
    server.kubectl_ok(&["set", "image", "statefulset/web", "nginx=nginx:2"]);
    let set = eventually(WAIT, "web-2 updated", || {
        let s = sts(&server);
        let pods = pods(&server);
        let done = s["status"]["updatedReplicas"] == 1
            && s["status"]["readyReplicas"] == 3
            && pods
                .get("web-2")
                .is_some_and(|p| image(p) == "nginx:2" && is_ready(p));
        done.then_some(s)
    });
    let second_revision = set["status"]["updateRevision"]
        .as_str()
        .unwrap()
        .to_string();
    assert_ne!(second_revision, first_revision);
    assert_eq!(set["status"]["currentRevision"], first_revision.as_str());
    std::thread::sleep(Duration::from_secs(2));
    let pods_now = pods(&server);
    for low in ["web-0", "web-1"] {
        assert_eq!(
            image(&pods_now[low]),
            "nginx:1",
            "{low} must keep the old template"
        );
        assert_eq!(revision(&pods_now[low]), first_revision);
    }
    assert_eq!(revision(&pods_now["web-2"]), second_revision);
    let status = server.kubectl_ok(&["rollout", "status", "statefulset/web", "--timeout=60s"]);
    assert!(
        status.contains("partitioned roll out complete: 1 new pods have been updated"),
        "{status}"
    );

    // Lowering the partition rolls the rest, highest ordinal first.
    server.kubectl_ok(&[
        "patch",
        "statefulset",
        "web",
        "-p",
        r#"{"spec":{"updateStrategy":{"rollingUpdate":{"partition":0}}}}"#,
    ]);
    eventually(WAIT, "all pods at nginx:2", || {
        let pods = pods(&server);
        let updated = |n: &str| pods.get(n).is_some_and(|p| image(p) == "nginx:2");
        assert!(
            !updated("web-0") || updated("web-1"),
            "web-0 updated before web-1"
        );
        (pods.len() == 3 && pods.values().all(|p| image(p) == "nginx:2" && is_ready(p)))
            .then_some(())
    });
    let status = server.kubectl_ok(&["rollout", "status", "statefulset/web", "--timeout=60s"]);
    assert!(status.contains("3 new pods have been updated"), "{status}");
    let set = eventually(WAIT, "rollout complete", || {
        let s = sts(&server);
        (s["status"]["currentRevision"] == second_revision.as_str()
            && s["status"]["currentReplicas"] == 3)
            .then_some(s)
    });
    assert_eq!(set["status"]["updatedReplicas"], 3);

    let history = server.kubectl_ok(&["rollout", "history", "statefulset/web"]);
    let numbers: Vec<&str> = history
        .lines()
        .skip(2)
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert_eq!(numbers, ["1", "2"], "{history}");
    let detail = server.kubectl_ok(&["rollout", "history", "statefulset/web", "--revision=1"]);
    assert!(detail.contains("nginx:1"), "{detail}");

    // Undo restores the first template; its revision becomes number 3.
    server.kubectl_ok(&["rollout", "undo", "statefulset/web"]);
    eventually(WAIT, "all pods back at nginx:1", || {
        let pods = pods(&server);
        (pods.len() == 3 && pods.values().all(|p| image(p) == "nginx:1" && is_ready(p)))
            .then_some(())
    });
    let set = eventually(WAIT, "undo complete", || {
        let s = sts(&server);
        (s["status"]["currentRevision"] == first_revision.as_str()
            && s["status"]["updateRevision"] == first_revision.as_str())
        .then_some(s)
    });
    assert_eq!(set["status"]["currentReplicas"], 3);
    let reused = server.get_json(&["controllerrevision", &first_revision]);
    assert_eq!(reused["revision"], 3);
}

#[test]
fn on_delete_waits_for_manual_deletion() {
    let server = start();
    server.apply(&manifest(
        2,
        "nginx:1",
        "  updateStrategy:\n    type: OnDelete",
        "",
    ));
    wait_ready(&server, 2);
    server.kubectl_ok(&["set", "image", "statefulset/web", "nginx=nginx:2"]);
    eventually(WAIT, "new update revision", || {
        let s = sts(&server);
        (s["status"]["observedGeneration"] == 2
            && s["status"]["updateRevision"] != s["status"]["currentRevision"])
            .then_some(())
    });
    std::thread::sleep(Duration::from_secs(2));
    assert!(pods(&server).values().all(|p| image(p) == "nginx:1"));
    server.kubectl_ok(&["delete", "pod", "web-1"]);
    eventually(WAIT, "web-1 recreated at the new template", || {
        pods(&server)
            .get("web-1")
            .filter(|p| image(p) == "nginx:2" && is_ready(p))
            .map(|_| ())
    });
    assert_eq!(image(&pods(&server)["web-0"]), "nginx:1");
}
