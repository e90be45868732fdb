//! End to end: Deployments, ReplicaSets and ReplicationControllers on simulated nodes, driven
//! with the real kubectl: the seed nginx Deployment, scaling, pod replacement, rolling updates
//! within maxSurge/maxUnavailable, rollout status/history/undo/pause/resume/restart, a stalled
//! rollout ending in ProgressDeadlineExceeded, adoption, and quota failures.

mod support;

use std::time::{Duration, Instant};

use serde_json::Value;
use support::{Server, eventually, seed_manifests};

const WAIT: Duration = Duration::from_secs(90);

fn start() -> Server {
    Server::start_with(&["--sim-nodes", "3"])
}

fn int(v: &Value, pointer: &str) -> i64 {
    v.pointer(pointer).and_then(Value::as_i64).unwrap_or(0)
}

fn text<'a>(v: &'a Value, pointer: &str) -> &'a str {
    v.pointer(pointer).and_then(Value::as_str).unwrap_or("")
}

fn condition<'a>(d: &'a Value, type_: &str) -> Option<&'a Value> {
    d.pointer("/status/conditions")?
        .as_array()?
        .iter()
        .find(|c| c["type"] == type_)
}

/// A Deployment `name` with `replicas` pods; `strategy` and `pod_extra` are spliced into the
/// Deployment spec and the pod spec.
fn deployment(name: &str, replicas: u32, image: &str, spec_extra: &str, pod_extra: &str) -> String {
    format!(
        r#"apiVersion: apps/v1
kind: Deployment
metadata:
  name: {name}
spec:
  replicas: {replicas}
  selector:
    matchLabels:
      app: {name}
{spec_extra}
  template:
    metadata:
      labels:
        app: {name}
    spec:
{pod_extra}
      containers:
      - name: web
        image: {image}
"#
    )
}

/// Wait until the Deployment's status says every desired pod is updated, ready and available
/// and no old pod is left.
fn wait_complete(server: &Server, name: &str, replicas: i64) -> Value {
    eventually(
        WAIT,
        &format!("deployment {name} complete with {replicas} replicas"),
        || {
            let d = server.get_json(&["deployment", name]);
            let done = int(&d, "/status/observedGeneration") >= int(&d, "/metadata/generation")
                && int(&d, "/status/updatedReplicas") == replicas
                && int(&d, "/status/replicas") == replicas
                && int(&d, "/status/readyReplicas") == replicas
                && int(&d, "/status/availableReplicas") == replicas;
            done.then_some(d)
        },
    )
}

fn rollout_status(server: &Server, name: &str) -> String {
    server.kubectl_ok(&[
        "rollout",
        "status",
        &format!("deployment/{name}"),
        "--timeout=90s",
    ])
}

/// The ReplicaSets controlled by the Deployment `name`.
fn replica_sets(server: &Server, name: &str) -> Vec<Value> {
    let d = server.get_json(&["deployment", name]);
    let uid = d["metadata"]["uid"].clone();
    let list = server.get_json(&["replicasets"]);
    list["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|rs| {
            rs.pointer("/metadata/ownerReferences")
                .and_then(Value::as_array)
                .is_some_and(|refs| {
                    refs.iter()
                        .any(|r| r["uid"] == uid && r["controller"] == true)
                })
        })
        .cloned()
        .collect()
}

fn revision(rs: &Value) -> i64 {
    text(
        rs,
        "/metadata/annotations/deployment.kubernetes.io~1revision",
    )
    .parse()
    .unwrap_or(0)
}

/// Pods matching `selector` that are not terminating.
fn live_pods(server: &Server, selector: &str) -> Vec<Value> {
    let list = server.get_json(&["pods", "-l", selector]);
    list["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p.pointer("/metadata/deletionTimestamp").is_none())
        .cloned()
        .collect()
}

fn image_of(d: &Value) -> String {
    text(d, "/spec/template/spec/containers/0/image").to_string()
}

#[test]
fn seed_nginx_deployment_scales_and_replaces_pods() {
    let server = start();
    let manifest = seed_manifests().join("nginx-deployment.yaml");
    server.kubectl_ok(&["apply", "-f", manifest.to_str().unwrap()]);
    let d = wait_complete(&server, "nginx-deployment", 3);
    let out = rollout_status(&server, "nginx-deployment");
    assert!(out.contains("successfully rolled out"), "{out}");

    // Conditions as upstream words them.
    let available = condition(&d, "Available").expect("Available condition");
    assert_eq!(available["status"], "True");
    assert_eq!(available["reason"], "MinimumReplicasAvailable");
    let progressing = condition(&d, "Progressing").expect("Progressing condition");
    assert_eq!(progressing["reason"], "NewReplicaSetAvailable");
    assert_eq!(
        text(
            &d,
            "/metadata/annotations/deployment.kubernetes.io~1revision"
        ),
        "1"
    );

    // One ReplicaSet named after the template hash, carrying it in its labels and selector.
    let rss = replica_sets(&server, "nginx-deployment");
    assert_eq!(rss.len(), 1);
    let rs = &rss[0];
    let hash = text(rs, "/metadata/labels/pod-template-hash").to_string();
    assert!(!hash.is_empty());
    assert_eq!(
        text(rs, "/metadata/name"),
        format!("nginx-deployment-{hash}")
    );
    assert_eq!(
        text(rs, "/spec/selector/matchLabels/pod-template-hash"),
        hash
    );
    assert_eq!(revision(rs), 1);
    assert_eq!(
        text(
            rs,
            "/metadata/annotations/deployment.kubernetes.io~1desired-replicas"
        ),
        "3"
    );
    assert_eq!(
        text(
            rs,
            "/metadata/annotations/deployment.kubernetes.io~1max-replicas"
        ),
        "4"
    );
    assert_eq!(int(rs, "/status/readyReplicas"), 3);
    assert_eq!(int(rs, "/status/fullyLabeledReplicas"), 3);
    let rs_name = text(rs, "/metadata/name").to_string();

    // Its pods are owned by it and carry the hash.
    let pods = live_pods(&server, "app=nginx");
    assert_eq!(pods.len(), 3);
    for pod in &pods {
        assert_eq!(text(pod, "/metadata/ownerReferences/0/name"), rs_name);
        assert_eq!(text(pod, "/metadata/labels/pod-template-hash"), hash);
        assert!(text(pod, "/metadata/name").starts_with(&format!("{rs_name}-")));
    }

    // A deleted pod is replaced.
    let victim = text(&pods[0], "/metadata/name").to_string();
    server.kubectl_ok(&["delete", "pod", &victim, "--wait=false"]);
    eventually(WAIT, "a replacement pod", || {
        let pods = live_pods(&server, "app=nginx");
        let replaced = pods.len() == 3 && pods.iter().all(|p| text(p, "/metadata/name") != victim);
        replaced.then_some(())
    });
    wait_complete(&server, "nginx-deployment", 3);

    // Scale up and down.
    server.kubectl_ok(&["scale", "deployment/nginx-deployment", "--replicas=5"]);
    wait_complete(&server, "nginx-deployment", 5);
    assert_eq!(live_pods(&server, "app=nginx").len(), 5);
    server.kubectl_ok(&["scale", "deployment/nginx-deployment", "--replicas=2"]);
    wait_complete(&server, "nginx-deployment", 2);
    eventually(WAIT, "2 pods left", || {
        (live_pods(&server, "app=nginx").len() == 2).then_some(())
    });
    assert_eq!(
        replica_sets(&server, "nginx-deployment").len(),
        1,
        "scaling makes no new revision"
    );

    // The story is told in Events.
    let events = eventually(WAIT, "scaling events", || {
        let out = server.kubectl_ok(&["get", "events", "-o", "json"]);
        (out.contains("ScalingReplicaSet") && out.contains("SuccessfulDelete")).then_some(out)
    });
    assert!(
        events.contains(&format!("Scaled up replica set {rs_name} from 0 to 3")),
        "{events}"
    );
    assert!(
        events.contains(&format!("Scaled up replica set {rs_name} from 3 to 5")),
        "{events}"
    );
    assert!(
        events.contains(&format!("Scaled down replica set {rs_name} from 5 to 2")),
        "{events}"
    );
    assert!(
        events.contains("SuccessfulCreate") && events.contains("Created pod: "),
        "{events}"
    );
    let describe = server.kubectl_ok(&["describe", "deployment", "nginx-deployment"]);
    assert!(describe.contains("ScalingReplicaSet"), "{describe}");
}

#[test]
fn rolling_update_history_undo_pause_and_restart() {
    let server = start();
    let manifest = seed_manifests().join("my-web.yaml");
    server.kubectl_ok(&["apply", "-f", manifest.to_str().unwrap()]);
    wait_complete(&server, "my-web", 3);

    // A rolling update: never more than 4 pods (maxSurge 1) nor fewer than 2 available
    // (maxUnavailable 1), watched while `rollout status` waits.
    server.kubectl_ok(&[
        "set",
        "image",
        "deployment/my-web",
        "web=rkube-test/web:2.0",
    ]);
    server.kubectl_ok(&[
        "annotate",
        "deployment/my-web",
        "kubernetes.io/change-cause=web 2.0",
    ]);
    let mut status = server
        .kubectl_cmd(&["rollout", "status", "deployment/my-web", "--timeout=90s"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + WAIT;
    let mut samples = 0;
    while status.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "rollout status did not finish");
        let d = server.get_json(&["deployment", "my-web"]);
        let rss = replica_sets(&server, "my-web");
        let pods: i64 = rss.iter().map(|rs| int(rs, "/spec/replicas")).sum();
        let available: i64 = rss
            .iter()
            .map(|rs| int(rs, "/status/availableReplicas"))
            .sum();
        assert!(pods <= 4, "{pods} pods wanted during the rollout: {d}");
        assert!(
            available >= 2,
            "only {available} pods available during the rollout: {d}"
        );
        samples += 1;
    }
    let out = status.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "rollout status: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("successfully rolled out"));
    assert!(samples > 0);
    let d = wait_complete(&server, "my-web", 3);
    assert_eq!(
        text(
            &d,
            "/metadata/annotations/deployment.kubernetes.io~1revision"
        ),
        "2"
    );

    let rss = replica_sets(&server, "my-web");
    assert_eq!(rss.len(), 2);
    let old = rss.iter().find(|rs| revision(rs) == 1).expect("revision 1");
    let new = rss.iter().find(|rs| revision(rs) == 2).expect("revision 2");
    assert_eq!(int(old, "/spec/replicas"), 0);
    assert_eq!(int(new, "/spec/replicas"), 3);
    eventually(WAIT, "change-cause on the new replica set", || {
        let rss = replica_sets(&server, "my-web");
        rss.iter()
            .any(|rs| {
                revision(rs) == 2
                    && text(rs, "/metadata/annotations/kubernetes.io~1change-cause") == "web 2.0"
            })
            .then_some(())
    });
    let history = server.kubectl_ok(&["rollout", "history", "deployment/my-web"]);
    assert!(history.contains("REVISION"), "{history}");
    let lines: Vec<&str> = history.lines().collect();
    assert!(lines.iter().any(|l| l.starts_with("1 ")), "{history}");
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("2 ") && l.contains("web 2.0")),
        "{history}"
    );
    let events = server.kubectl_ok(&["get", "events", "-o", "json"]);
    assert!(events.contains("Scaled down replica set"), "{events}");

    // Undo goes back to revision 1's template, which becomes revision 3.
    let out = server.kubectl_ok(&["rollout", "undo", "deployment/my-web"]);
    assert!(out.contains("rolled back"), "{out}");
    rollout_status(&server, "my-web");
    let d = wait_complete(&server, "my-web", 3);
    assert_eq!(image_of(&d), "rkube-test/web:1.0");
    let rss = replica_sets(&server, "my-web");
    assert_eq!(rss.len(), 2, "the old replica set is reused");
    let current = rss
        .iter()
        .find(|rs| int(rs, "/spec/replicas") == 3)
        .unwrap();
    assert_eq!(revision(current), 3);
    assert_eq!(
        text(
            current,
            "/metadata/annotations/deployment.kubernetes.io~1revision-history"
        ),
        "1"
    );
    let history = server.kubectl_ok(&["rollout", "history", "deployment/my-web"]);
    assert!(!history.lines().any(|l| l.starts_with("1 ")), "{history}");
    assert!(history.lines().any(|l| l.starts_with("3 ")), "{history}");

    // Undo to an explicit revision.
    server.kubectl_ok(&["rollout", "undo", "deployment/my-web", "--to-revision=2"]);
    rollout_status(&server, "my-web");
    let d = wait_complete(&server, "my-web", 3);
    assert_eq!(image_of(&d), "rkube-test/web:2.0");

    // Paused: a template change makes no new ReplicaSet until resumed.
    server.kubectl_ok(&["rollout", "pause", "deployment/my-web"]);
    server.kubectl_ok(&[
        "set",
        "image",
        "deployment/my-web",
        "web=rkube-test/web:3.0",
    ]);
    let d = eventually(WAIT, "paused condition", || {
        let d = server.get_json(&["deployment", "my-web"]);
        let paused =
            condition(&d, "Progressing").is_some_and(|c| c["reason"] == "DeploymentPaused");
        (paused && int(&d, "/status/observedGeneration") >= int(&d, "/metadata/generation"))
            .then_some(d)
    });
    assert_eq!(condition(&d, "Progressing").unwrap()["status"], "Unknown");
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        replica_sets(&server, "my-web").len(),
        2,
        "no rollout while paused"
    );
    let err = server.kubectl_err(&["rollout", "undo", "deployment/my-web"]);
    assert!(err.contains("paused"), "{err}");
    server.kubectl_ok(&["rollout", "resume", "deployment/my-web"]);
    rollout_status(&server, "my-web");
    let d = wait_complete(&server, "my-web", 3);
    assert_eq!(image_of(&d), "rkube-test/web:3.0");
    assert_eq!(replica_sets(&server, "my-web").len(), 3);

    // Restart: a new ReplicaSet for the same image.
    server.kubectl_ok(&["rollout", "restart", "deployment/my-web"]);
    rollout_status(&server, "my-web");
    let d = wait_complete(&server, "my-web", 3);
    assert!(
        d.pointer("/spec/template/metadata/annotations/kubectl.kubernetes.io~1restartedAt")
            .is_some(),
        "{d}"
    );
    let rss = replica_sets(&server, "my-web");
    assert_eq!(rss.len(), 4);
    assert_eq!(rss.iter().map(revision).max(), Some(6));
    assert_eq!(
        rss.iter()
            .filter(|rs| int(rs, "/spec/replicas") > 0)
            .count(),
        1
    );
}

#[test]
fn stalled_rollout_exceeds_its_progress_deadline_and_undo_recovers() {
    let server = start();
    let strategy = "  progressDeadlineSeconds: 5
  strategy:
    type: RollingUpdate
    rollingUpdate:
      maxSurge: 1
      maxUnavailable: 1";
    server.apply(&deployment("stuck", 3, "rkube-test/web:1.0", strategy, ""));
    wait_complete(&server, "stuck", 3);

    // The new revision's pods wait for a readiness gate nobody sets.
    let gate = r#"{"spec":{"template":{"spec":{"readinessGates":[{"conditionType":"example.com/never"}]}}}}"#;
    server.kubectl_ok(&["patch", "deployment/stuck", "-p", gate]);
    let d = eventually(WAIT, "ProgressDeadlineExceeded", || {
        let d = server.get_json(&["deployment", "stuck"]);
        condition(&d, "Progressing")
            .is_some_and(|c| c["status"] == "False" && c["reason"] == "ProgressDeadlineExceeded")
            .then_some(d)
    });
    let message = text(condition(&d, "Progressing").unwrap(), "/message");
    assert!(message.contains("has timed out progressing"), "{message}");
    // maxUnavailable 1 of 3: two old pods stay; the new ones run but are not ready.
    assert!(int(&d, "/status/availableReplicas") >= 2, "{d}");
    let rss = replica_sets(&server, "stuck");
    let old = rss.iter().find(|rs| revision(rs) == 1).unwrap();
    let new = rss.iter().find(|rs| revision(rs) == 2).unwrap();
    assert_eq!(int(old, "/spec/replicas"), 2);
    assert_eq!(int(new, "/spec/replicas"), 2);
    assert_eq!(int(new, "/status/availableReplicas"), 0);
    let err = server.kubectl_err(&["rollout", "status", "deployment/stuck", "--timeout=30s"]);
    assert!(err.contains("exceeded its progress deadline"), "{err}");

    // Undo brings the old template back; the rollout completes. (As upstream, the condition
    // stays ProgressDeadlineExceeded until the controller sees progress, so `rollout status`
    // right after the undo could still fail: wait for completion first.)
    server.kubectl_ok(&["rollout", "undo", "deployment/stuck"]);
    let d = wait_complete(&server, "stuck", 3);
    rollout_status(&server, "stuck");
    assert!(
        d.pointer("/spec/template/spec/readinessGates").is_none(),
        "{d}"
    );
    assert_eq!(
        condition(&d, "Progressing").unwrap()["reason"],
        "NewReplicaSetAvailable"
    );
}

#[test]
fn recreate_history_limit_and_min_ready_seconds() {
    let server = start();
    let strategy = "  revisionHistoryLimit: 1
  strategy:
    type: Recreate";
    server.apply(&deployment("batch", 2, "rkube-test/web:1.0", strategy, ""));
    wait_complete(&server, "batch", 2);
    server.kubectl_ok(&["set", "image", "deployment/batch", "web=rkube-test/web:2.0"]);
    rollout_status(&server, "batch");
    wait_complete(&server, "batch", 2);
    let rss = replica_sets(&server, "batch");
    assert_eq!(rss.len(), 2);
    let old = rss.iter().find(|rs| revision(rs) == 1).unwrap();
    assert_eq!(int(old, "/spec/replicas"), 0);
    // The old ReplicaSet went down to 0 before the new one was created with 2.
    let events = server.kubectl_ok(&["get", "events", "-o", "json"]);
    let old_name = text(old, "/metadata/name");
    let new_name = text(
        rss.iter().find(|rs| revision(rs) == 2).unwrap(),
        "/metadata/name",
    );
    let down = events
        .find(&format!("Scaled down replica set {old_name} from 2 to 0"))
        .unwrap_or_else(|| panic!("{events}"));
    let up = events
        .find(&format!("Scaled up replica set {new_name} from 0 to 2"))
        .unwrap_or_else(|| panic!("{events}"));
    assert!(down < up, "{events}");

    // revisionHistoryLimit 1: one more revision, and the oldest ReplicaSet is deleted.
    server.kubectl_ok(&["set", "image", "deployment/batch", "web=rkube-test/web:3.0"]);
    wait_complete(&server, "batch", 2);
    let rss = eventually(WAIT, "history trimmed to one old replica set", || {
        let rss = replica_sets(&server, "batch");
        (rss.len() == 2).then_some(rss)
    });
    let mut revisions: Vec<i64> = rss.iter().map(revision).collect();
    revisions.sort();
    assert_eq!(revisions, [2, 3]);

    // minReadySeconds: pods are ready at once but available only 3 s later.
    server.apply(&deployment(
        "slow",
        2,
        "rkube-test/web:1.0",
        "  minReadySeconds: 3",
        "",
    ));
    let started = Instant::now();
    eventually(WAIT, "ready but not yet available", || {
        let d = server.get_json(&["deployment", "slow"]);
        (int(&d, "/status/readyReplicas") == 2).then_some(())
    });
    let d = server.get_json(&["deployment", "slow"]);
    if started.elapsed() < Duration::from_secs(2) {
        assert!(int(&d, "/status/availableReplicas") < 2, "{d}");
    }
    wait_complete(&server, "slow", 2);
    // Condition times have a resolution of one second (RFC 3339 without fractions), so a pod
    // that turned Ready at 0.9 s may count as Ready since 0 s: available after 2 s at the earliest.
    assert!(started.elapsed() >= Duration::from_secs(2));
    let rs = &replica_sets(&server, "slow")[0];
    assert_eq!(int(rs, "/spec/minReadySeconds"), 3);
}

#[test]
fn replica_sets_adopt_orphans_and_report_quota_failures() {
    let server = start();
    // An orphan pod that matches: adopted, so only one more pod is created.
    server.apply(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: orphan
  labels:
    app: adopt
spec:
  containers:
  - name: web
    image: rkube-test/web:1.0
"#,
    );
    server.apply(
        r#"apiVersion: apps/v1
kind: ReplicaSet
metadata:
  name: adopter
spec:
  replicas: 2
  selector:
    matchLabels:
      app: adopt
  template:
    metadata:
      labels:
        app: adopt
    spec:
      containers:
      - name: web
        image: rkube-test/web:1.0
"#,
    );
    eventually(WAIT, "replica set adopter ready", || {
        let rs = server.get_json(&["replicaset", "adopter"]);
        (int(&rs, "/status/readyReplicas") == 2 && int(&rs, "/status/observedGeneration") >= 1)
            .then_some(())
    });
    let orphan = server.get_json(&["pod", "orphan"]);
    assert_eq!(text(&orphan, "/metadata/ownerReferences/0/name"), "adopter");
    assert_eq!(orphan["metadata"]["ownerReferences"][0]["controller"], true);
    assert_eq!(live_pods(&server, "app=adopt").len(), 2);

    // A pod relabeled out of the selector is released and replaced.
    server.kubectl_ok(&["label", "pod", "orphan", "app=gone", "--overwrite"]);
    eventually(WAIT, "orphan released and replaced", || {
        let pod = server.get_json(&["pod", "orphan"]);
        let released = pod
            .pointer("/metadata/ownerReferences")
            .and_then(Value::as_array)
            .is_none_or(|r| r.is_empty());
        (released && live_pods(&server, "app=adopt").len() == 2).then_some(())
    });

    // ReplicationControllers work the same way.
    server.apply(
        r#"apiVersion: v1
kind: ReplicationController
metadata:
  name: legacy
spec:
  replicas: 2
  selector:
    app: legacy
  template:
    metadata:
      labels:
        app: legacy
    spec:
      containers:
      - name: web
        image: rkube-test/web:1.0
"#,
    );
    eventually(WAIT, "replication controller ready", || {
        let rc = server.get_json(&["rc", "legacy"]);
        (int(&rc, "/status/readyReplicas") == 2 && int(&rc, "/status/availableReplicas") == 2)
            .then_some(())
    });
    for pod in live_pods(&server, "app=legacy") {
        assert_eq!(
            text(&pod, "/metadata/ownerReferences/0/kind"),
            "ReplicationController"
        );
    }
    server.kubectl_ok(&["scale", "rc/legacy", "--replicas=1"]);
    eventually(WAIT, "replication controller scaled down", || {
        (live_pods(&server, "app=legacy").len() == 1).then_some(())
    });

    // A quota that allows fewer pods: ReplicaFailure with the admission message.
    server.kubectl_ok(&["create", "namespace", "tight"]);
    server.kubectl_ok(&["create", "quota", "pods", "--hard=pods=1", "-n", "tight"]);
    let rs = r#"apiVersion: apps/v1
kind: ReplicaSet
metadata:
  name: greedy
  namespace: tight
spec:
  replicas: 3
  selector:
    matchLabels:
      app: greedy
  template:
    metadata:
      labels:
        app: greedy
    spec:
      containers:
      - name: web
        image: rkube-test/web:1.0
"#;
    server.apply(rs);
    let rs = eventually(WAIT, "ReplicaFailure condition", || {
        let rs = server.get_json(&["replicaset", "greedy", "-n", "tight"]);
        let failed = rs
            .pointer("/status/conditions")
            .and_then(Value::as_array)
            .is_some_and(|cs| cs.iter().any(|c| c["type"] == "ReplicaFailure"));
        failed.then_some(rs)
    });
    let c = &rs["status"]["conditions"][0];
    assert_eq!(c["reason"], "FailedCreate");
    assert!(text(c, "/message").contains("exceeded quota"), "{c}");
    let events = server.kubectl_ok(&["get", "events", "-n", "tight", "-o", "json"]);
    assert!(events.contains("FailedCreate"), "{events}");
}
