use super::*;
use serde_json::json;

const T0: i64 = 1_700_000_000_000;

fn pod(spec: Value) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": "p", "namespace": "default", "uid": "u-1"},
        "spec": spec,
    }))
    .unwrap()
}

fn env(now_ms: i64) -> PodEnv {
    PodEnv {
        pod_ip: "10.42.0.2".into(),
        host_ip: "10.240.0.1".into(),
        now_ms,
        time_scale: 1.0,
    }
}

/// Apply the desired status to the pod, as the API server would after the patch.
fn settle(mut p: Pod, now_ms: i64) -> (Pod, Desired) {
    let desired = desired_status(&p, &env(now_ms));
    if let Some(patch) = status_patch(&p, &desired.status) {
        p.status = Some(serde_json::from_value(patch["status"].clone()).unwrap());
    }
    (p, desired)
}

fn condition<'a>(status: &'a PodStatus, type_: &str) -> &'a PodCondition {
    status
        .conditions
        .as_ref()
        .unwrap()
        .iter()
        .find(|c| c.type_ == type_)
        .unwrap_or_else(|| panic!("no {type_} condition"))
}

fn container(name: &str, command: &[&str]) -> Value {
    json!({"name": name, "image": "busybox:1.36", "command": command})
}

#[test]
fn a_long_running_pod_is_running_and_ready_with_an_ip() {
    let p = pod(json!({"containers": [{"name": "web", "image": "nginx:1.25"}]}));
    let (p, desired) = settle(p, T0);
    let s = p.status.as_ref().unwrap();
    assert_eq!(s.phase.as_deref(), Some("Running"));
    assert_eq!(s.pod_ip.as_deref(), Some("10.42.0.2"));
    assert_eq!(s.host_ip.as_deref(), Some("10.240.0.1"));
    assert!(s.start_time.is_some());
    let c = &s.container_statuses.as_ref().unwrap()[0];
    assert!(c.ready);
    assert_eq!(c.started, Some(true));
    assert_eq!(c.restart_count, 0);
    assert!(c.state.as_ref().unwrap().running.is_some());
    assert!(c.image_id.starts_with("nginx@sha256:"), "{}", c.image_id);
    for t in [
        "PodReadyToStartContainers",
        "Initialized",
        "ContainersReady",
        "Ready",
        "PodScheduled",
    ] {
        assert_eq!(condition(s, t).status, "True", "{t}");
    }
    assert_eq!(desired.next_change, None);
    // Reconciling again later changes nothing: no patch.
    let again = desired_status(&p, &env(T0 + 60_000));
    assert_eq!(status_patch(&p, &again.status), None);
}

#[test]
fn exit_1_with_restart_never_fails() {
    let p = pod(
        json!({"restartPolicy": "Never", "containers": [container("c", &["sh", "-c", "exit 1"])]}),
    );
    let (p, _) = settle(p, T0);
    let s = p.status.as_ref().unwrap();
    assert_eq!(s.phase.as_deref(), Some("Failed"));
    let t = s.container_statuses.as_ref().unwrap()[0]
        .state
        .as_ref()
        .unwrap()
        .terminated
        .clone()
        .unwrap();
    assert_eq!(t.exit_code, 1);
    assert_eq!(t.reason.as_deref(), Some("Error"));
    assert_eq!(
        condition(s, "Ready").reason.as_deref(),
        Some("PodCompleted")
    );
}

#[test]
fn sleep_then_exit_0_succeeds_after_the_sleep() {
    let p = pod(
        json!({"restartPolicy": "OnFailure", "containers": [container("c", &["sh", "-c", "sleep 5; exit 0"])]}),
    );
    let (p, desired) = settle(p, T0);
    assert_eq!(p.status.as_ref().unwrap().phase.as_deref(), Some("Running"));
    assert_eq!(desired.next_change, Some(Duration::from_secs(5)));
    let (p, desired) = settle(p, T0 + 5_000);
    let s = p.status.as_ref().unwrap();
    assert_eq!(s.phase.as_deref(), Some("Succeeded"));
    assert_eq!(desired.next_change, None);
    let t = s.container_statuses.as_ref().unwrap()[0]
        .state
        .as_ref()
        .unwrap()
        .terminated
        .clone()
        .unwrap();
    assert_eq!((t.exit_code, t.reason.as_deref()), (0, Some("Completed")));
}

#[test]
fn time_scale_shortens_sleeps() {
    let p =
        pod(json!({"restartPolicy": "Never", "containers": [container("c", &["sleep", "10"])]}));
    let e = PodEnv {
        time_scale: 0.1,
        ..env(T0)
    };
    let desired = desired_status(&p, &e);
    assert_eq!(desired.next_change, Some(Duration::from_secs(1)));
}

#[test]
fn on_failure_restarts_with_back_off() {
    let p = pod(json!({"restartPolicy": "OnFailure", "containers": [container("c", &["false"])]}));
    let (p, desired) = settle(p, T0);
    let s = p.status.as_ref().unwrap();
    assert_eq!(s.phase.as_deref(), Some("Running"));
    let c = &s.container_statuses.as_ref().unwrap()[0];
    assert_eq!(
        c.state
            .as_ref()
            .unwrap()
            .waiting
            .as_ref()
            .unwrap()
            .reason
            .as_deref(),
        Some("CrashLoopBackOff")
    );
    assert_eq!(
        c.last_state
            .as_ref()
            .unwrap()
            .terminated
            .as_ref()
            .unwrap()
            .exit_code,
        1
    );
    assert_eq!(c.restart_count, 0);
    assert_eq!(desired.next_change, Some(Duration::from_secs(10)));
    // Restarted at 10 s, fails again, back-off 20 s; restarted at 30 s.
    let (p, _) = settle(p, T0 + 31_000);
    let c = &p
        .status
        .as_ref()
        .unwrap()
        .container_statuses
        .as_ref()
        .unwrap()[0];
    assert_eq!(c.restart_count, 2);
}

#[test]
fn init_containers_complete_in_order_before_the_containers_start() {
    let p = pod(json!({
        "initContainers": [container("first", &["sh", "-c", "sleep 2"]), container("second", &["true"])],
        "containers": [{"name": "app", "image": "app:1"}],
    }));
    let (p, desired) = settle(p, T0);
    let s = p.status.as_ref().unwrap();
    assert_eq!(s.phase.as_deref(), Some("Pending"));
    let init = s.init_container_statuses.as_ref().unwrap();
    assert!(init[0].state.as_ref().unwrap().running.is_some());
    assert_eq!(
        init[1]
            .state
            .as_ref()
            .unwrap()
            .waiting
            .as_ref()
            .unwrap()
            .reason
            .as_deref(),
        Some("PodInitializing")
    );
    assert_eq!(condition(s, "Initialized").status, "False");
    assert_eq!(
        condition(s, "Initialized").message.as_deref(),
        Some("containers with incomplete status: [first second]")
    );
    assert_eq!(desired.next_change, Some(Duration::from_secs(2)));
    let (p, _) = settle(p, T0 + 2_000);
    let s = p.status.as_ref().unwrap();
    assert_eq!(s.phase.as_deref(), Some("Running"));
    let init = s.init_container_statuses.as_ref().unwrap();
    let first = init[0].state.as_ref().unwrap().terminated.clone().unwrap();
    let second = init[1].state.as_ref().unwrap().terminated.clone().unwrap();
    assert!(first.finished_at.unwrap().0 <= second.started_at.unwrap().0);
    assert!(init.iter().all(|c| c.ready));
    assert_eq!(condition(s, "Initialized").status, "True");
    assert_eq!(condition(s, "Ready").status, "True");
}

#[test]
fn failed_init_container_with_restart_never_fails_the_pod() {
    let p = pod(json!({
        "restartPolicy": "Never",
        "initContainers": [container("init", &["sh", "-c", "exit 3"])],
        "containers": [{"name": "app", "image": "app:1"}],
    }));
    let (p, _) = settle(p, T0);
    assert_eq!(p.status.as_ref().unwrap().phase.as_deref(), Some("Failed"));
}

#[test]
fn readiness_gates_hold_ready_until_their_condition_is_true() {
    let p = pod(json!({
        "readinessGates": [{"conditionType": "example.com/lb"}],
        "containers": [{"name": "app", "image": "app:1"}],
    }));
    let (mut p, _) = settle(p, T0);
    {
        let s = p.status.as_ref().unwrap();
        assert_eq!(condition(s, "ContainersReady").status, "True");
        let ready = condition(s, "Ready");
        assert_eq!(ready.status, "False");
        assert_eq!(ready.reason.as_deref(), Some("ReadinessGatesNotReady"));
        assert_eq!(
            ready.message.as_deref(),
            Some(
                "corresponding condition of pod readiness gate \"example.com/lb\" does not exist."
            )
        );
    }
    // Another controller sets the gate's condition; the strategic patch keeps it.
    p.status
        .as_mut()
        .unwrap()
        .conditions
        .as_mut()
        .unwrap()
        .push(PodCondition {
            type_: "example.com/lb".into(),
            status: "True".into(),
            ..Default::default()
        });
    let desired = desired_status(&p, &env(T0 + 1_000));
    assert_eq!(condition(&desired.status, "Ready").status, "True");
    let patch = status_patch(&p, &desired.status).expect("Ready changes");
    let types: Vec<&str> = patch["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["type"].as_str().unwrap())
        .collect();
    assert!(
        !types.contains(&"example.com/lb"),
        "the gate's condition is not ours to write"
    );
}

#[test]
fn failing_readiness_probe_and_missing_images_never_get_ready() {
    let p = pod(json!({"containers": [
        {"name": "a", "image": "app:1", "readinessProbe": {"exec": {"command": ["sh", "-c", "exit 1"]}}},
    ]}));
    let (p, _) = settle(p, T0);
    let s = p.status.as_ref().unwrap();
    assert_eq!(s.phase.as_deref(), Some("Running"));
    assert_eq!(condition(s, "Ready").status, "False");
    assert_eq!(
        condition(s, "Ready").message.as_deref(),
        Some("containers with unready status: [a]")
    );

    let p = pod(json!({"containers": [{"name": "a", "image": "nginx:does-not-exist"}]}));
    let (p, _) = settle(p, T0);
    let s = p.status.as_ref().unwrap();
    assert_eq!(s.phase.as_deref(), Some("Pending"));
    let c = &s.container_statuses.as_ref().unwrap()[0];
    assert_eq!(
        c.state
            .as_ref()
            .unwrap()
            .waiting
            .as_ref()
            .unwrap()
            .reason
            .as_deref(),
        Some("ImagePullBackOff")
    );
}

#[test]
fn readiness_probe_delay_is_honoured() {
    let p = pod(json!({"containers": [
        {"name": "a", "image": "app:1", "readinessProbe": {"httpGet": {"port": 80}, "initialDelaySeconds": 3}},
    ]}));
    let (p, desired) = settle(p, T0);
    assert_eq!(
        condition(p.status.as_ref().unwrap(), "Ready").status,
        "False"
    );
    assert_eq!(desired.next_change, Some(Duration::from_secs(3)));
    let (p, _) = settle(p, T0 + 3_000);
    assert_eq!(
        condition(p.status.as_ref().unwrap(), "Ready").status,
        "True"
    );
}

#[test]
fn active_deadline_fails_the_pod() {
    let p =
        pod(json!({"activeDeadlineSeconds": 5, "containers": [{"name": "a", "image": "app:1"}]}));
    let (p, desired) = settle(p, T0);
    assert_eq!(desired.next_change, Some(Duration::from_secs(5)));
    let (p, _) = settle(p, T0 + 5_000);
    let s = p.status.as_ref().unwrap();
    assert_eq!(s.phase.as_deref(), Some("Failed"));
    assert_eq!(s.reason.as_deref(), Some("DeadlineExceeded"));
}

#[test]
fn host_network_pods_use_the_host_ip() {
    let p = pod(json!({"hostNetwork": true, "containers": [{"name": "a", "image": "app:1"}]}));
    let desired = desired_status(&p, &env(T0));
    assert_eq!(desired.status.pod_ip.as_deref(), Some("10.240.0.1"));
}
