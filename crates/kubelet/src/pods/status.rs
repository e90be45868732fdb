//! The pod's phase and conditions from its container statuses, as upstream's kubelet computes
//! them (`getPhase`, `GeneratePodInitializedCondition`, `GenerateContainersReadyCondition`,
//! `GeneratePodReadyCondition`), and the status patch. Pure functions.

use k8s_openapi::api::core::v1::{ContainerStatus, Pod, PodCondition};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use serde_json::{Value, json};

use super::spec::is_sidecar;

pub const PENDING: &str = "Pending";
pub const RUNNING: &str = "Running";
pub const SUCCEEDED: &str = "Succeeded";
pub const FAILED: &str = "Failed";

/// The conditions this kubelet owns; others (PodScheduled, readiness gates, DisruptionTarget)
/// are left to their writers.
pub const OWNED_CONDITIONS: [&str; 4] = [
    "PodReadyToStartContainers",
    "Initialized",
    "ContainersReady",
    "Ready",
];

fn find<'a>(statuses: &'a [ContainerStatus], name: &str) -> Option<&'a ContainerStatus> {
    statuses.iter().find(|s| s.name == name)
}

fn running(s: &ContainerStatus) -> bool {
    s.state.as_ref().is_some_and(|st| st.running.is_some())
}

fn terminated_exit(s: &ContainerStatus) -> Option<i32> {
    s.state
        .as_ref()
        .and_then(|st| st.terminated.as_ref())
        .map(|t| t.exit_code)
}

fn waiting(s: &ContainerStatus) -> bool {
    s.state.as_ref().is_some_and(|st| st.waiting.is_some())
}

fn last_exit(s: &ContainerStatus) -> Option<i32> {
    s.last_state
        .as_ref()
        .and_then(|st| st.terminated.as_ref())
        .map(|t| t.exit_code)
}

/// Any regular container has run (is running or has terminated): the pod was initialized.
pub fn has_any_regular_container_started(pod: &Pod, statuses: &[ContainerStatus]) -> bool {
    let spec = pod.spec.clone().unwrap_or_default();
    spec.containers.iter().any(|c| {
        find(statuses, &c.name).is_some_and(|s| running(s) || terminated_exit(s).is_some())
    })
}

/// The pod's phase. `statuses` holds init and regular containers' statuses together.
/// `terminal`: the kubelet will not run the pod's containers again.
pub fn pod_phase(
    pod: &Pod,
    statuses: &[ContainerStatus],
    terminal: bool,
    initialized: bool,
) -> &'static str {
    let spec = pod.spec.clone().unwrap_or_default();
    let policy = spec.restart_policy.as_deref().unwrap_or("Always");
    let init = spec.init_containers.clone().unwrap_or_default();
    let mut pending_regular_init = 0;
    let mut pending_sidecars = 0;
    let mut failed_init = 0;
    for c in init.iter().filter(|c| !is_sidecar(c)) {
        let Some(s) = find(statuses, &c.name) else {
            pending_regular_init += 1;
            continue;
        };
        if running(s) {
            pending_regular_init += 1;
        } else if let Some(code) = terminated_exit(s) {
            if code != 0 {
                failed_init += 1;
            }
        } else if waiting(s) {
            match last_exit(s) {
                Some(code) if code != 0 => failed_init += 1,
                Some(_) => {}
                None => pending_regular_init += 1,
            }
        } else {
            pending_regular_init += 1;
        }
    }
    let (mut unknown, mut run, mut wait, mut stopped, mut succeeded) = (0, 0, 0, 0, 0);
    for c in init.iter().filter(|c| is_sidecar(c)) {
        let Some(s) = find(statuses, &c.name) else {
            unknown += 1;
            continue;
        };
        if running(s) {
            if s.started != Some(true) {
                pending_sidecars += 1;
            }
            run += 1;
        } else if terminated_exit(s).is_some() {
            // Stopped sidecars do not count for the phase.
        } else if waiting(s) {
            if last_exit(s).is_none() {
                pending_sidecars += 1;
                wait += 1;
            }
        } else {
            pending_sidecars += 1;
            unknown += 1;
        }
    }
    for c in &spec.containers {
        let Some(s) = find(statuses, &c.name) else {
            unknown += 1;
            continue;
        };
        if running(s) {
            run += 1;
        } else if let Some(code) = terminated_exit(s) {
            stopped += 1;
            if code == 0 {
                succeeded += 1;
            }
        } else if waiting(s) {
            if last_exit(s).is_some() {
                stopped += 1;
            } else {
                wait += 1;
            }
        } else {
            unknown += 1;
        }
    }
    if failed_init > 0 && policy == "Never" {
        return FAILED;
    }
    if pending_regular_init > 0 || (pending_sidecars > 0 && !initialized) || wait > 0 {
        return PENDING;
    }
    if run > 0 && unknown == 0 {
        return RUNNING;
    }
    if run == 0 && stopped > 0 && unknown == 0 {
        if terminal {
            return if stopped == succeeded {
                SUCCEEDED
            } else {
                FAILED
            };
        }
        if policy == "Always" {
            return RUNNING;
        }
        if stopped == succeeded {
            return SUCCEEDED;
        }
        if policy == "Never" {
            return FAILED;
        }
        return RUNNING;
    }
    PENDING
}

/// A condition as computed: type, status, reason, message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cond {
    pub type_: &'static str,
    pub status: bool,
    pub reason: Option<String>,
    pub message: Option<String>,
}

impl Cond {
    fn ok(type_: &'static str) -> Cond {
        Cond {
            type_,
            status: true,
            reason: None,
            message: None,
        }
    }

    fn not(type_: &'static str, reason: &str, message: Option<String>) -> Cond {
        Cond {
            type_,
            status: false,
            reason: Some(reason.to_string()),
            message,
        }
    }
}

/// Go's `%s` of a string slice: `[a b]`.
fn go_list(names: &[String]) -> String {
    format!("[{}]", names.join(" "))
}

pub fn initialized_condition(pod: &Pod, statuses: &[ContainerStatus], phase: &str) -> Cond {
    let spec = pod.spec.clone().unwrap_or_default();
    let mut unknown = Vec::new();
    let mut incomplete = Vec::new();
    for c in spec.init_containers.iter().flatten() {
        let Some(s) = find(statuses, &c.name) else {
            unknown.push(c.name.clone());
            continue;
        };
        if is_sidecar(c) {
            if s.started != Some(true) {
                incomplete.push(c.name.clone());
            }
        } else if terminated_exit(s) != Some(0) {
            incomplete.push(c.name.clone());
        }
    }
    if phase == SUCCEEDED && unknown.is_empty() {
        let mut c = Cond::ok("Initialized");
        c.reason = Some("PodCompleted".into());
        return c;
    }
    if has_any_regular_container_started(pod, statuses) {
        return Cond::ok("Initialized");
    }
    let mut messages = Vec::new();
    if !unknown.is_empty() {
        messages.push(format!(
            "containers with unknown status: {}",
            go_list(&unknown)
        ));
    }
    if !incomplete.is_empty() {
        messages.push(format!(
            "containers with incomplete status: {}",
            go_list(&incomplete)
        ));
    }
    if messages.is_empty() {
        Cond::ok("Initialized")
    } else {
        Cond::not(
            "Initialized",
            "ContainersNotInitialized",
            Some(messages.join(", ")),
        )
    }
}

pub fn containers_ready_condition(pod: &Pod, statuses: &[ContainerStatus], phase: &str) -> Cond {
    let spec = pod.spec.clone().unwrap_or_default();
    let mut unknown = Vec::new();
    let mut unready = Vec::new();
    let sidecars = spec
        .init_containers
        .iter()
        .flatten()
        .filter(|c| is_sidecar(c));
    for c in sidecars.chain(spec.containers.iter()) {
        match find(statuses, &c.name) {
            Some(s) if !s.ready => unready.push(c.name.clone()),
            Some(_) => {}
            None => unknown.push(c.name.clone()),
        }
    }
    if phase == SUCCEEDED && unknown.is_empty() {
        return Cond::not("ContainersReady", "PodCompleted", None);
    }
    if phase == FAILED {
        return Cond::not("ContainersReady", "PodFailed", None);
    }
    let mut messages = Vec::new();
    if !unknown.is_empty() {
        messages.push(format!(
            "containers with unknown status: {}",
            go_list(&unknown)
        ));
    }
    if !unready.is_empty() {
        messages.push(format!(
            "containers with unready status: {}",
            go_list(&unready)
        ));
    }
    if messages.is_empty() {
        Cond::ok("ContainersReady")
    } else {
        Cond::not(
            "ContainersReady",
            "ContainersNotReady",
            Some(messages.join(", ")),
        )
    }
}

/// Ready: ContainersReady, then every readiness gate's condition (among `conditions`, the
/// pod's current ones) True.
pub fn ready_condition(pod: &Pod, containers_ready: &Cond, conditions: &[PodCondition]) -> Cond {
    if !containers_ready.status {
        let mut c = containers_ready.clone();
        c.type_ = "Ready";
        return c;
    }
    let gates = pod
        .spec
        .as_ref()
        .and_then(|s| s.readiness_gates.clone())
        .unwrap_or_default();
    let mut messages = Vec::new();
    for gate in gates {
        match conditions.iter().find(|c| c.type_ == gate.condition_type) {
            None => messages.push(format!(
                "corresponding condition of pod readiness gate {:?} does not exist.",
                gate.condition_type
            )),
            Some(c) if c.status != "True" => messages.push(format!(
                "the status of pod readiness gate {:?} is not \"True\", but {}",
                gate.condition_type, c.status
            )),
            Some(_) => {}
        }
    }
    if messages.is_empty() {
        Cond::ok("Ready")
    } else {
        Cond::not("Ready", "ReadinessGatesNotReady", Some(messages.join(", ")))
    }
}

/// Turn computed conditions into API conditions, keeping `lastTransitionTime` of those whose
/// status did not change.
pub fn to_pod_conditions(
    computed: &[Cond],
    previous: &[PodCondition],
    now: &Time,
) -> Vec<PodCondition> {
    computed
        .iter()
        .map(|c| {
            let status = if c.status { "True" } else { "False" };
            let transition = previous
                .iter()
                .find(|p| p.type_ == c.type_ && p.status == status)
                .and_then(|p| p.last_transition_time.clone())
                .unwrap_or_else(|| now.clone());
            PodCondition {
                type_: c.type_.to_string(),
                status: status.to_string(),
                reason: c.reason.clone(),
                message: c.message.clone(),
                last_transition_time: Some(transition),
                last_probe_time: None,
                observed_generation: None,
            }
        })
        .collect()
}

/// The strategic merge patch for pods/status: conditions merge by type (so conditions others
/// own survive), container status lists are replaced whole, and a removed reason or message
/// is nulled.
pub fn status_patch(status: &k8s_openapi::api::core::v1::PodStatus) -> Value {
    let mut value = serde_json::to_value(status).unwrap_or_else(|_| json!({}));
    if let Some(conditions) = value.get_mut("conditions").and_then(Value::as_array_mut) {
        for c in conditions {
            if let Some(obj) = c.as_object_mut() {
                for key in ["reason", "message", "lastProbeTime"] {
                    obj.entry(key).or_insert(Value::Null);
                }
            }
        }
    }
    if let Some(obj) = value.as_object_mut() {
        // Fields that can go away again (a waiting pod loses its terminal reason only
        // when deleted, but the reason/message of a phase must not linger).
        for key in ["reason", "message"] {
            obj.entry(key).or_insert(Value::Null);
        }
    }
    json!({ "status": value })
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{
        Container, ContainerState, ContainerStateRunning, ContainerStateTerminated,
        ContainerStateWaiting, PodReadinessGate, PodSpec,
    };

    fn pod(policy: &str, init: &[(&str, bool)], app: &[&str]) -> Pod {
        Pod {
            spec: Some(PodSpec {
                restart_policy: Some(policy.into()),
                init_containers: (!init.is_empty()).then(|| {
                    init.iter()
                        .map(|(n, sidecar)| Container {
                            name: n.to_string(),
                            restart_policy: sidecar.then(|| "Always".to_string()),
                            ..Default::default()
                        })
                        .collect()
                }),
                containers: app
                    .iter()
                    .map(|n| Container {
                        name: n.to_string(),
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn st(name: &str, state: &str, code: i32, last: Option<i32>, ready: bool) -> ContainerStatus {
        let state = match state {
            "running" => ContainerState {
                running: Some(ContainerStateRunning::default()),
                ..Default::default()
            },
            "terminated" => ContainerState {
                terminated: Some(ContainerStateTerminated {
                    exit_code: code,
                    ..Default::default()
                }),
                ..Default::default()
            },
            _ => ContainerState {
                waiting: Some(ContainerStateWaiting {
                    reason: Some("ContainerCreating".into()),
                    ..Default::default()
                }),
                ..Default::default()
            },
        };
        ContainerStatus {
            name: name.into(),
            state: Some(state),
            last_state: last.map(|code| ContainerState {
                terminated: Some(ContainerStateTerminated {
                    exit_code: code,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ready,
            started: Some(ready),
            ..Default::default()
        }
    }

    #[test]
    fn phase_of_regular_containers() {
        let p = pod("Always", &[], &["a", "b"]);
        assert_eq!(pod_phase(&p, &[], false, false), PENDING);
        let s = [
            st("a", "running", 0, None, true),
            st("b", "waiting", 0, None, false),
        ];
        assert_eq!(pod_phase(&p, &s, false, true), PENDING);
        let s = [
            st("a", "running", 0, None, true),
            st("b", "running", 0, None, true),
        ];
        assert_eq!(pod_phase(&p, &s, false, true), RUNNING);
        // Crash looping under Always is still Running.
        let s = [
            st("a", "waiting", 0, Some(1), false),
            st("b", "terminated", 1, None, false),
        ];
        assert_eq!(pod_phase(&p, &s, false, true), RUNNING);
        assert_eq!(pod_phase(&p, &s, true, true), FAILED);
    }

    #[test]
    fn phase_of_jobs() {
        let never = pod("Never", &[], &["a"]);
        assert_eq!(
            pod_phase(
                &never,
                &[st("a", "terminated", 0, None, false)],
                false,
                true
            ),
            SUCCEEDED
        );
        assert_eq!(
            pod_phase(
                &never,
                &[st("a", "terminated", 3, None, false)],
                false,
                true
            ),
            FAILED
        );
        let on_failure = pod("OnFailure", &[], &["a"]);
        assert_eq!(
            pod_phase(
                &on_failure,
                &[st("a", "terminated", 3, None, false)],
                false,
                true
            ),
            RUNNING
        );
        assert_eq!(
            pod_phase(
                &on_failure,
                &[st("a", "terminated", 0, None, false)],
                false,
                true
            ),
            SUCCEEDED
        );
    }

    #[test]
    fn phase_with_init_containers_and_sidecars() {
        let p = pod("Never", &[("init", false)], &["a"]);
        let s = [
            st("init", "running", 0, None, false),
            st("a", "waiting", 0, None, false),
        ];
        assert_eq!(pod_phase(&p, &s, false, false), PENDING);
        let s = [
            st("init", "terminated", 1, None, false),
            st("a", "waiting", 0, None, false),
        ];
        assert_eq!(pod_phase(&p, &s, false, false), FAILED);
        let p = pod("Always", &[("init", false)], &["a"]);
        // A failed init container restarting under Always keeps the pod Pending.
        let s = [
            st("init", "waiting", 0, Some(1), false),
            st("a", "waiting", 0, None, false),
        ];
        assert_eq!(pod_phase(&p, &s, false, false), PENDING);
        let p = pod("Never", &[("proxy", true)], &["a"]);
        let s = [
            st("proxy", "running", 0, None, true),
            st("a", "terminated", 0, None, false),
        ];
        assert_eq!(pod_phase(&p, &s, false, true), RUNNING);
        let s = [
            st("proxy", "terminated", 137, None, false),
            st("a", "terminated", 0, None, false),
        ];
        assert_eq!(pod_phase(&p, &s, true, true), SUCCEEDED);
        // A sidecar not yet started keeps an uninitialized pod Pending.
        let mut starting = st("proxy", "running", 0, None, false);
        starting.started = Some(false);
        assert_eq!(pod_phase(&p, &[starting], false, false), PENDING);
    }

    #[test]
    fn conditions_name_the_containers_that_hold_them_back() {
        let p = pod("Always", &[("init", false), ("proxy", true)], &["a", "b"]);
        let s = [st("init", "running", 0, None, false)];
        let init = initialized_condition(&p, &s, PENDING);
        assert_eq!(init.reason.as_deref(), Some("ContainersNotInitialized"));
        assert_eq!(
            init.message.as_deref(),
            Some(
                "containers with unknown status: [proxy], containers with incomplete status: [init]"
            )
        );
        let s = [
            st("init", "terminated", 0, None, false),
            st("proxy", "running", 0, None, true),
            st("a", "running", 0, None, true),
            st("b", "running", 0, None, false),
        ];
        assert!(initialized_condition(&p, &s, RUNNING).status);
        let cr = containers_ready_condition(&p, &s, RUNNING);
        assert_eq!(cr.reason.as_deref(), Some("ContainersNotReady"));
        assert_eq!(
            cr.message.as_deref(),
            Some("containers with unready status: [b]")
        );
        let ready = ready_condition(&p, &cr, &[]);
        assert_eq!((ready.type_, ready.status), ("Ready", false));
        assert_eq!(ready.message, cr.message);
        let done = containers_ready_condition(&p, &s, SUCCEEDED);
        assert_eq!(done.reason.as_deref(), Some("PodCompleted"));
    }

    #[test]
    fn readiness_gates_hold_ready_back() {
        let mut p = pod("Always", &[], &["a"]);
        p.spec.as_mut().unwrap().readiness_gates = Some(vec![
            PodReadinessGate {
                condition_type: "example.com/lb".into(),
            },
            PodReadinessGate {
                condition_type: "example.com/db".into(),
            },
        ]);
        let s = [st("a", "running", 0, None, true)];
        let cr = containers_ready_condition(&p, &s, RUNNING);
        assert!(cr.status);
        let conditions = vec![PodCondition {
            type_: "example.com/db".into(),
            status: "False".into(),
            ..Default::default()
        }];
        let ready = ready_condition(&p, &cr, &conditions);
        assert_eq!(ready.reason.as_deref(), Some("ReadinessGatesNotReady"));
        assert_eq!(
            ready.message.as_deref(),
            Some(
                "corresponding condition of pod readiness gate \"example.com/lb\" does not exist., \
                 the status of pod readiness gate \"example.com/db\" is not \"True\", but False"
            )
        );
        let all_true = vec![
            PodCondition {
                type_: "example.com/db".into(),
                status: "True".into(),
                ..Default::default()
            },
            PodCondition {
                type_: "example.com/lb".into(),
                status: "True".into(),
                ..Default::default()
            },
        ];
        assert!(ready_condition(&p, &cr, &all_true).status);
    }

    #[test]
    fn transition_times_survive_unchanged_statuses() {
        let old_time = Time("2024-01-01T00:00:00Z".parse().unwrap());
        let now = Time("2024-01-02T00:00:00Z".parse().unwrap());
        let previous = vec![PodCondition {
            type_: "Ready".into(),
            status: "False".into(),
            last_transition_time: Some(old_time.clone()),
            ..Default::default()
        }];
        let kept = to_pod_conditions(&[Cond::not("Ready", "X", None)], &previous, &now);
        assert_eq!(kept[0].last_transition_time, Some(old_time));
        let flipped = to_pod_conditions(&[Cond::ok("Ready")], &previous, &now);
        assert_eq!(flipped[0].last_transition_time, Some(now));
        let patch = status_patch(&k8s_openapi::api::core::v1::PodStatus {
            conditions: Some(flipped),
            ..Default::default()
        });
        assert_eq!(patch["status"]["conditions"][0]["reason"], Value::Null);
        assert!(
            patch["status"]["conditions"][0]
                .as_object()
                .unwrap()
                .contains_key("message")
        );
    }
}
