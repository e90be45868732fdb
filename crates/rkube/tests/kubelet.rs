//! End to end: pod workers on a real node. `rkube server` runs its node agent; a busybox image
//! built offline is imported into its store. Pods run, exit and restart (restartCount,
//! lastState, CrashLoopBackOff), Never pods end Succeeded/Failed with their exit codes and
//! termination messages, bad specs get upstream's waiting reasons, the agent adopts its running
//! containers after a SIGKILL, and deletion is graceful and removes what the pod had.
//!
//! Runs as root (runc, cgroups, CNI), as CI does.

mod support;

use std::time::Duration;

use serde_json::Value;
use support::{Server, eventually, tail};

const IMAGE: &str = "docker.io/library/busybox:1.36";
const WAIT: Duration = Duration::from_secs(90);

fn pod_json(server: &Server, name: &str) -> Option<Value> {
    let out = server.kubectl(&["get", "pod", name, "-o", "json"]);
    out.status
        .success()
        .then(|| serde_json::from_slice(&out.stdout).ok())
        .flatten()
}

/// Wait until `check` holds for the pod; panics with the pod and the log tail otherwise.
fn wait_pod(server: &Server, name: &str, what: &str, check: impl Fn(&Value) -> bool) -> Value {
    let deadline = std::time::Instant::now() + WAIT;
    let mut last = Value::Null;
    loop {
        if let Some(pod) = pod_json(server, name) {
            if check(&pod) {
                return pod;
            }
            last = pod;
        }
        if std::time::Instant::now() > deadline {
            panic!(
                "pod {name}: {what} not seen in {WAIT:?}; last status:\n{:#}\nlog tail:\n{}",
                last["status"],
                tail(&server.log(), 60)
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn container_status<'a>(pod: &'a Value, name: &str) -> &'a Value {
    pod["status"]["containerStatuses"]
        .as_array()
        .and_then(|list| list.iter().find(|c| c["name"] == name))
        .unwrap_or(&Value::Null)
}

fn condition(pod: &Value, type_: &str) -> String {
    pod["status"]["conditions"]
        .as_array()
        .and_then(|list| list.iter().find(|c| c["type"] == type_))
        .and_then(|c| c["status"].as_str())
        .unwrap_or("")
        .to_string()
}

const STAGED: &str = r#"apiVersion: v1
kind: Pod
metadata:
  name: staged
spec:
  initContainers:
  - name: prepare
    image: busybox:1.36
    imagePullPolicy: IfNotPresent
    command: ["sh", "-c", "echo prepared > /data/x"]
    volumeMounts: [{name: data, mountPath: /data}]
  - name: helper
    image: busybox:1.36
    imagePullPolicy: IfNotPresent
    restartPolicy: Always
    command: ["sleep", "3600"]
  containers:
  - name: main
    image: busybox:1.36
    imagePullPolicy: IfNotPresent
    command: ["sh", "-c", "cat /data/x; sleep 3600"]
    volumeMounts: [{name: data, mountPath: /data}]
  volumes: [{name: data, emptyDir: {}}]
"#;

const BAD_INIT: &str = r#"apiVersion: v1
kind: Pod
metadata:
  name: badinit
spec:
  restartPolicy: Never
  initContainers:
  - name: prepare
    image: busybox:1.36
    imagePullPolicy: IfNotPresent
    command: ["sh", "-c", "exit 4"]
  containers:
  - name: main
    image: busybox:1.36
    imagePullPolicy: IfNotPresent
    command: ["true"]
"#;

const LIVENESS: &str = r#"apiVersion: v1
kind: Pod
metadata:
  name: liveness
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: main
    image: busybox:1.36
    imagePullPolicy: IfNotPresent
    command: ["sh", "-c", "touch /tmp/healthy; sleep 2; rm /tmp/healthy; sleep 600"]
    livenessProbe:
      exec:
        command: ["cat", "/tmp/healthy"]
      periodSeconds: 1
      failureThreshold: 2
"#;

fn pod_manifest(name: &str, policy: &str, script: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\nspec:\n  restartPolicy: {policy}\n  \
         terminationGracePeriodSeconds: 20\n  containers:\n  - name: main\n    image: busybox:1.36\n    \
         imagePullPolicy: IfNotPresent\n    command: [\"sh\", \"-c\", {script:?}]\n"
    )
}

fn events(server: &Server, name: &str) -> String {
    server.kubectl_ok(&[
        "get",
        "events",
        "--field-selector",
        &format!("involvedObject.name={name}"),
        "-o",
        "custom-columns=REASON:.reason,MESSAGE:.message",
    ])
}

#[test]
fn pods_run_restart_finish_and_are_deleted_gracefully() {
    let mut server =
        Server::start_with_agent(&[], |data_dir| support::import_busybox(data_dir, IMAGE));
    let node = server.agent.as_ref().unwrap().node_name.clone();
    eventually(WAIT, "the node to be Ready", || {
        let out = server.kubectl(&[
            "get",
            "node",
            &node,
            "-o",
            "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}",
        ]);
        (String::from_utf8_lossy(&out.stdout) == "True").then_some(())
    });

    let sleeper = pod_manifest(
        "sleeper",
        "Always",
        "trap 'echo bye; exit 0' TERM; cat /etc/hosts /etc/resolv.conf; while true; do sleep 1; done",
    );
    let crasher = pod_manifest("crasher", "Always", "echo crashing; exit 3");
    let done = pod_manifest(
        "done",
        "Never",
        "echo -n all good > /dev/termination-log; exit 0",
    );
    let failed = pod_manifest("failed", "Never", "echo oops; exit 7");
    let fallback = format!(
        "{}    terminationMessagePolicy: FallbackToLogsOnError\n",
        pod_manifest("fallback", "Never", "echo last words; exit 2")
    );
    let no_config = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: noconfig\nspec:\n  containers:\n  \
                     - name: main\n    image: busybox:1.36\n    imagePullPolicy: IfNotPresent\n    \
                     command: [\"sleep\", \"3600\"]\n    env:\n    - name: X\n      valueFrom:\n        \
                     configMapKeyRef:\n          name: missing\n          key: k\n";
    let never_pull = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: neverpull\nspec:\n  containers:\n  \
                      - name: main\n    image: busybox:absent\n    imagePullPolicy: Never\n";
    let all = [
        sleeper.as_str(),
        &crasher,
        &done,
        &failed,
        &fallback,
        no_config,
        never_pull,
        STAGED,
        BAD_INIT,
        LIVENESS,
    ]
    .join("---\n");
    server.apply(&all);

    // A long-running pod: Running, Ready, with IPs and our container ID.
    let pod = wait_pod(&server, "sleeper", "Running and Ready", |p| {
        p["status"]["phase"] == "Running" && condition(p, "Ready") == "True"
    });
    let status = container_status(&pod, "main");
    assert_eq!(status["ready"], true);
    assert_eq!(status["started"], true);
    assert_eq!(status["restartCount"], 0);
    assert!(
        status["state"]["running"]["startedAt"].is_string(),
        "{status:#}"
    );
    let container_id = status["containerID"].as_str().unwrap().to_string();
    assert!(container_id.starts_with("runc://"), "{container_id}");
    assert!(
        status["imageID"].as_str().unwrap().contains("@sha256:"),
        "{status:#}"
    );
    let pod_ip = pod["status"]["podIP"].as_str().expect("podIP").to_string();
    assert!(pod["status"]["hostIP"].is_string());
    assert!(pod["status"]["startTime"].is_string());
    assert_eq!(condition(&pod, "PodScheduled"), "True");
    assert_eq!(condition(&pod, "Initialized"), "True");
    assert_eq!(condition(&pod, "PodReadyToStartContainers"), "True");
    // Its /etc/hosts names the pod at its IP; resolv.conf has the cluster search path.
    let logs = eventually(WAIT, "the sleeper's logs", || {
        let out = server.kubectl(&["logs", "sleeper"]);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        text.contains("nameserver").then_some(text)
    });
    assert!(logs.contains(&format!("{pod_ip}\tsleeper")), "{logs}");
    assert!(logs.contains("search default.svc."), "{logs}");

    // A crashing container restarts, keeps its last state and backs off.
    let pod = wait_pod(&server, "crasher", "a restart", |p| {
        container_status(p, "main")["restartCount"].as_i64() >= Some(1)
            && container_status(p, "main")["lastState"]["terminated"].is_object()
    });
    let last = &container_status(&pod, "main")["lastState"]["terminated"];
    assert_eq!(last["exitCode"], 3, "{last:#}");
    assert_eq!(last["reason"], "Error");
    wait_pod(&server, "crasher", "CrashLoopBackOff", |p| {
        container_status(p, "main")["state"]["waiting"]["reason"] == "CrashLoopBackOff"
    });
    assert_eq!(
        pod_json(&server, "crasher").unwrap()["status"]["phase"],
        "Running"
    );

    // Job-like pods end with their exit codes and termination messages.
    let pod = wait_pod(&server, "done", "Succeeded", |p| {
        p["status"]["phase"] == "Succeeded"
    });
    let t = &container_status(&pod, "main")["state"]["terminated"];
    assert_eq!(t["exitCode"], 0, "{t:#}");
    assert_eq!(t["reason"], "Completed");
    assert_eq!(t["message"], "all good");
    assert_eq!(condition(&pod, "Ready"), "False");
    let pod = wait_pod(&server, "failed", "Failed", |p| {
        p["status"]["phase"] == "Failed"
    });
    let t = &container_status(&pod, "main")["state"]["terminated"];
    assert_eq!(t["exitCode"], 7, "{t:#}");
    assert_eq!(container_status(&pod, "main")["restartCount"], 0);
    let pod = wait_pod(&server, "fallback", "Failed", |p| {
        p["status"]["phase"] == "Failed"
    });
    let t = &container_status(&pod, "main")["state"]["terminated"];
    assert_eq!(t["message"], "last words\n", "{t:#}");
    assert_eq!(
        server.kubectl_ok(&["logs", "failed"]).trim(),
        "oops",
        "logs of a finished pod stay until it is deleted"
    );

    // Init containers run in order before the app; a sidecar keeps running beside it.
    let pod = wait_pod(&server, "staged", "Running and Ready", |p| {
        p["status"]["phase"] == "Running" && condition(p, "Ready") == "True"
    });
    let inits = pod["status"]["initContainerStatuses"]
        .as_array()
        .expect("init statuses");
    assert_eq!(inits[0]["name"], "prepare");
    assert_eq!(
        inits[0]["state"]["terminated"]["reason"], "Completed",
        "{inits:?}"
    );
    assert_eq!(inits[1]["name"], "helper");
    assert!(inits[1]["state"]["running"].is_object(), "{inits:?}");
    assert_eq!(inits[1]["started"], true);
    assert_eq!(condition(&pod, "Initialized"), "True");
    let logs = eventually(WAIT, "the staged pod's logs", || {
        let out = server.kubectl(&["logs", "staged", "-c", "main"]);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        (!text.is_empty()).then_some(text)
    });
    assert_eq!(logs.trim(), "prepared");
    // A failed init container under restartPolicy Never fails the pod.
    let pod = wait_pod(&server, "badinit", "Failed", |p| {
        p["status"]["phase"] == "Failed"
    });
    let init = &pod["status"]["initContainerStatuses"][0];
    assert_eq!(init["state"]["terminated"]["exitCode"], 4, "{init:#}");
    assert_eq!(
        container_status(&pod, "main")["state"]["waiting"]["reason"],
        "PodInitializing"
    );
    assert_eq!(condition(&pod, "Initialized"), "False");
    // A failing liveness probe restarts the container.
    wait_pod(&server, "liveness", "a liveness restart", |p| {
        container_status(p, "main")["restartCount"].as_i64() >= Some(1)
    });
    let ev = events(&server, "liveness");
    assert!(
        ev.contains("Container main failed liveness probe, will be restarted"),
        "{ev}"
    );

    // Bad specs wait with upstream's reasons.
    wait_pod(&server, "noconfig", "CreateContainerConfigError", |p| {
        let w = &container_status(p, "main")["state"]["waiting"];
        w["reason"] == "CreateContainerConfigError"
            && w["message"].as_str().unwrap_or("").contains("missing")
    });
    wait_pod(&server, "neverpull", "ErrImageNeverPull", |p| {
        container_status(p, "main")["state"]["waiting"]["reason"] == "ErrImageNeverPull"
    });
    assert_eq!(
        pod_json(&server, "neverpull").unwrap()["status"]["phase"],
        "Pending"
    );
    let ev = events(&server, "sleeper");
    assert!(ev.contains("Created container: main"), "{ev}");
    assert!(ev.contains("Started container main"), "{ev}");

    // SIGKILL the server (and its agent): the running container is adopted, not restarted.
    server.restart();
    std::thread::sleep(Duration::from_secs(3));
    let pod = wait_pod(&server, "sleeper", "Ready after the restart", |p| {
        condition(p, "Ready") == "True"
    });
    let status = container_status(&pod, "main");
    assert_eq!(status["containerID"], container_id.as_str(), "{status:#}");
    assert_eq!(status["restartCount"], 0);

    // Graceful deletion: the container gets SIGTERM, then everything of the pod goes.
    let uid = pod["metadata"]["uid"].as_str().unwrap().to_string();
    let agent_root = server.data_dir.path().join("agent");
    assert!(agent_root.join("pods").join(&uid).exists());
    server.kubectl_ok(&["delete", "pod", "sleeper", "--wait=false"]);
    eventually(WAIT, "the sleeper to be gone", || {
        (!server.kubectl(&["get", "pod", "sleeper"]).status.success()).then_some(())
    });
    eventually(
        Duration::from_secs(10),
        "the pod's directory to be removed",
        || (!agent_root.join("pods").join(&uid).exists()).then_some(()),
    );
    let log_dirs: Vec<String> = std::fs::read_dir(agent_root.join("logs"))
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    assert!(
        !log_dirs.iter().any(|d| d.ends_with(&uid)),
        "logs of a deleted pod are removed: {log_dirs:?}"
    );
    let ev = events(&server, "sleeper");
    assert!(ev.contains("Stopping container main"), "{ev}");

    // Deleting a finished pod works the same.
    server.kubectl_ok(&[
        "delete",
        "pod",
        "done",
        "failed",
        "fallback",
        "crasher",
        "--wait=false",
    ]);
    eventually(WAIT, "the finished pods to be gone", || {
        let out = server.kubectl(&["get", "pods", "-o", "name"]);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        (!text.contains("pod/done") && !text.contains("pod/crasher")).then_some(())
    });
}
