//! The status a simulated kubelet reports for a pod: a pure function of the pod, the node's
//! addresses and the clock, so that reconciling is level-triggered and idempotent (the same
//! inputs give the same status, with the same timestamps).

use std::time::Duration;

use k8s_openapi::api::core::v1::{
    Container, ContainerState, ContainerStateRunning, ContainerStateTerminated,
    ContainerStateWaiting, ContainerStatus, HostIP, Pod, PodCondition, PodIP, PodStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use serde_json::{Value, json};

use crate::convention::{self, Behaviour};

/// Upstream kubelet's crash-loop back-off: 10 s doubling to 5 min.
const BACKOFF_BASE_MS: i64 = 10_000;
const BACKOFF_MAX_MS: i64 = 300_000;

/// What the status depends on besides the pod.
#[derive(Debug, Clone)]
pub struct PodEnv {
    /// The IP given to the pod (ignored for hostNetwork pods, which use the host's).
    pub pod_ip: String,
    pub host_ip: String,
    /// Milliseconds since the Unix epoch.
    pub now_ms: i64,
    /// Factor applied to simulated durations (sleeps, probe delays, back-off).
    pub time_scale: f64,
}

/// The status to report and when it next changes by itself (a container exits, a back-off ends).
#[derive(Debug, Clone, PartialEq)]
pub struct Desired {
    pub status: PodStatus,
    pub next_change: Option<Duration>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Restart {
    Never,
    OnFailure,
    Always,
}

#[derive(Debug, Clone, Copy, PartialEq)]
struct Run {
    started_ms: i64,
    finished_ms: i64,
    code: i32,
}

#[derive(Debug, Clone, PartialEq)]
enum State {
    Running {
        started_ms: i64,
    },
    /// Back-off after a failed (or, for `Always`, any) exit.
    CrashLoop,
    Terminated(Run),
}

#[derive(Debug, Clone, PartialEq)]
struct Timeline {
    state: State,
    last: Option<Run>,
    restarts: i32,
    next_ms: Option<i64>,
}

fn scaled(d: Duration, scale: f64) -> i64 {
    (d.as_secs_f64() * 1000.0 * scale).round() as i64
}

/// Where a container started at `start_ms` is at `now_ms`.
fn timeline(
    behaviour: Behaviour,
    policy: Restart,
    start_ms: i64,
    now_ms: i64,
    scale: f64,
) -> Timeline {
    let (code, run_ms) = match behaviour {
        Behaviour::RunForever => {
            return Timeline {
                state: State::Running {
                    started_ms: start_ms,
                },
                last: None,
                restarts: 0,
                next_ms: None,
            };
        }
        Behaviour::Exit { code, after } => (code, scaled(after, scale)),
    };
    let mut started_ms = start_ms;
    let mut last = None;
    let mut restarts = 0;
    loop {
        let finished_ms = started_ms + run_ms;
        if now_ms < finished_ms {
            return Timeline {
                state: State::Running { started_ms },
                last,
                restarts,
                next_ms: Some(finished_ms),
            };
        }
        let run = Run {
            started_ms,
            finished_ms,
            code,
        };
        let restart = match policy {
            Restart::Never => false,
            Restart::OnFailure => code != 0,
            Restart::Always => true,
        };
        if !restart {
            return Timeline {
                state: State::Terminated(run),
                last,
                restarts,
                next_ms: None,
            };
        }
        let backoff = BACKOFF_BASE_MS
            .saturating_mul(1 << restarts.min(16))
            .min(BACKOFF_MAX_MS);
        let backoff = ((backoff as f64 * scale).round() as i64).max(100);
        let next_start = finished_ms + backoff;
        if now_ms < next_start || restarts >= 100_000 {
            return Timeline {
                state: State::CrashLoop,
                last: Some(run),
                restarts,
                next_ms: Some(next_start),
            };
        }
        last = Some(run);
        started_ms = next_start;
        restarts += 1;
    }
}

fn time(ms: i64) -> Time {
    Time(Timestamp::from_second(ms.div_euclid(1000)).unwrap_or(Timestamp::UNIX_EPOCH))
}

fn terminated(run: &Run, container_id: Option<String>) -> ContainerState {
    ContainerState {
        terminated: Some(ContainerStateTerminated {
            container_id,
            exit_code: run.code,
            reason: Some(if run.code == 0 { "Completed" } else { "Error" }.into()),
            started_at: Some(time(run.started_ms)),
            finished_at: Some(time(run.finished_ms)),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn waiting(reason: &str, message: Option<String>) -> ContainerState {
    ContainerState {
        waiting: Some(ContainerStateWaiting {
            reason: Some(reason.into()),
            message,
        }),
        ..Default::default()
    }
}

/// FNV-1a, for stable fake container and image digests.
fn fnv(seed: u64, parts: &[&str]) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325u64 ^ seed;
    for part in parts {
        for b in part.bytes().chain(std::iter::once(0)) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    h
}

fn digest(parts: &[&str]) -> String {
    (0..4).map(|i| format!("{:016x}", fnv(i, parts))).collect()
}

/// `docker.io/library/nginx@sha256:…` style, without contacting any registry.
fn image_id(image: &str) -> String {
    let without_digest = image.split('@').next().unwrap_or(image);
    let repository = match without_digest.rfind(':') {
        Some(i) if !without_digest[i..].contains('/') => &without_digest[..i],
        _ => without_digest,
    };
    format!("{repository}@sha256:{}", digest(&[image]))
}

fn container_id(pod_uid: &str, name: &str, restarts: i32) -> String {
    format!("sim://{}", digest(&[pod_uid, name, &restarts.to_string()]))
}

/// The image-pull convention: a reference containing `does-not-exist` never pulls.
pub fn image_pull_fails(image: &str) -> bool {
    image.contains("does-not-exist")
}

fn behaviour_of(c: &Container) -> Behaviour {
    convention::behaviour(
        c.command.as_deref().unwrap_or_default(),
        c.args.as_deref().unwrap_or_default(),
    )
}

/// Whether a running container's readiness probe passes at `now_ms`, and when that changes.
fn probe_ready(c: &Container, started_ms: i64, env: &PodEnv) -> (bool, Option<i64>) {
    let Some(probe) = &c.readiness_probe else {
        return (true, None);
    };
    if let Some(exec) = &probe.exec {
        let command = exec.command.as_deref().unwrap_or_default();
        if let Behaviour::Exit { code, .. } = convention::behaviour(command, &[])
            && code != 0
        {
            return (false, None);
        }
    }
    let delay = Duration::from_secs(probe.initial_delay_seconds.unwrap_or(0).max(0) as u64);
    let ready_at = started_ms + scaled(delay, env.time_scale);
    if env.now_ms >= ready_at {
        (true, None)
    } else {
        (false, Some(ready_at))
    }
}

struct Statuses {
    statuses: Vec<ContainerStatus>,
    /// Containers not (yet) done initialising, or not ready.
    pending: Vec<String>,
    next_ms: Option<i64>,
}

fn earliest(a: Option<i64>, b: Option<i64>) -> Option<i64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// A container status from its timeline.
fn status_of(c: &Container, pod: &Pod, tl: &Timeline, ready: bool) -> ContainerStatus {
    let uid = pod.metadata.uid.as_deref().unwrap_or_default();
    let id = container_id(uid, &c.name, tl.restarts);
    let pod_name = pod.metadata.name.as_deref().unwrap_or_default();
    let namespace = pod.metadata.namespace.as_deref().unwrap_or_default();
    let state = match &tl.state {
        State::Running { started_ms } => ContainerState {
            running: Some(ContainerStateRunning {
                started_at: Some(time(*started_ms)),
            }),
            ..Default::default()
        },
        State::CrashLoop => {
            let backoff = BACKOFF_BASE_MS
                .saturating_mul(1 << tl.restarts.min(16))
                .min(BACKOFF_MAX_MS)
                / 1000;
            waiting(
                "CrashLoopBackOff",
                Some(format!(
                    "back-off {backoff}s restarting failed container={} pod={pod_name}_{namespace}({uid})",
                    c.name
                )),
            )
        }
        State::Terminated(run) => terminated(run, Some(id.clone())),
    };
    let image = c.image.clone().unwrap_or_default();
    ContainerStatus {
        name: c.name.clone(),
        image_id: image_id(&image),
        image,
        container_id: Some(id),
        ready,
        restart_count: tl.restarts,
        started: Some(matches!(tl.state, State::Running { .. })),
        state: Some(state),
        last_state: Some(
            tl.last
                .as_ref()
                .map(|run| terminated(run, Some(container_id(uid, &c.name, tl.restarts - 1))))
                .unwrap_or_default(),
        ),
        ..Default::default()
    }
}

/// A container that has not started: waiting with `reason`.
fn not_started(c: &Container, reason: &str, message: Option<String>) -> ContainerStatus {
    ContainerStatus {
        name: c.name.clone(),
        image: c.image.clone().unwrap_or_default(),
        image_id: String::new(),
        ready: false,
        restart_count: 0,
        started: Some(false),
        state: Some(waiting(reason, message)),
        last_state: Some(ContainerState::default()),
        ..Default::default()
    }
}

fn pull_failure(c: &Container) -> ContainerStatus {
    let image = c.image.clone().unwrap_or_default();
    not_started(
        c,
        "ImagePullBackOff",
        Some(format!("Back-off pulling image \"{image}\"")),
    )
}

/// The init containers, in order: each starts when the one before it completed (a sidecar,
/// `restartPolicy: Always`, once it started). Returns the statuses, whether all are done, whether
/// one failed for good, and when the main containers start.
fn init_containers(
    pod: &Pod,
    policy: Restart,
    start_ms: i64,
    env: &PodEnv,
) -> (Statuses, bool, bool, i64) {
    let spec = pod.spec.as_ref();
    let containers = spec
        .and_then(|s| s.init_containers.as_deref())
        .unwrap_or_default();
    let mut out = Statuses {
        statuses: Vec::new(),
        pending: Vec::new(),
        next_ms: None,
    };
    let mut t = start_ms;
    let mut done = true;
    let mut failed = false;
    for c in containers {
        if !done {
            out.statuses.push(not_started(c, "PodInitializing", None));
            out.pending.push(c.name.clone());
            continue;
        }
        if image_pull_fails(c.image.as_deref().unwrap_or_default()) {
            out.statuses.push(pull_failure(c));
            out.pending.push(c.name.clone());
            done = false;
            continue;
        }
        let sidecar = c.restart_policy.as_deref() == Some("Always");
        let container_policy = if sidecar {
            Restart::Always
        } else if policy == Restart::Never {
            Restart::Never
        } else {
            Restart::OnFailure
        };
        let tl = timeline(
            behaviour_of(c),
            container_policy,
            t,
            env.now_ms,
            env.time_scale,
        );
        out.next_ms = earliest(out.next_ms, tl.next_ms);
        match (&tl.state, sidecar) {
            (State::Running { started_ms }, true) => {
                let (ready, at) = probe_ready(c, *started_ms, env);
                out.next_ms = earliest(out.next_ms, at);
                out.statuses.push(status_of(c, pod, &tl, ready));
            }
            (State::Terminated(run), false) if run.code == 0 => {
                t = run.finished_ms;
                out.statuses.push(status_of(c, pod, &tl, true));
            }
            (State::Terminated(_), false) => {
                failed = true;
                done = false;
                out.pending.push(c.name.clone());
                out.statuses.push(status_of(c, pod, &tl, false));
            }
            _ => {
                // Still running, or crash-looping (a sidecar in back-off holds the next one).
                done = false;
                out.pending.push(c.name.clone());
                out.statuses.push(status_of(c, pod, &tl, false));
            }
        }
    }
    (out, done, failed, t)
}

fn condition(
    pod: &Pod,
    type_: &str,
    ok: bool,
    reason: Option<&str>,
    message: Option<String>,
    now_ms: i64,
) -> PodCondition {
    let status = if ok { "True" } else { "False" };
    // Keep the transition time while the status does not change.
    let last_transition_time = pod
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.type_ == type_))
        .filter(|c| c.status == status)
        .and_then(|c| c.last_transition_time.clone())
        .unwrap_or_else(|| time(now_ms));
    PodCondition {
        type_: type_.into(),
        status: status.into(),
        reason: reason.map(str::to_string),
        message,
        last_transition_time: Some(last_transition_time),
        ..Default::default()
    }
}

/// Why readiness gates hold a pod back, as upstream words it; None if they all pass.
fn readiness_gates_message(pod: &Pod) -> Option<String> {
    let gates = pod.spec.as_ref()?.readiness_gates.as_ref()?;
    let conditions = pod
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_deref())
        .unwrap_or_default();
    let mut messages = Vec::new();
    for gate in gates {
        match conditions.iter().find(|c| c.type_ == gate.condition_type) {
            None => messages.push(format!(
                "corresponding condition of pod readiness gate \"{}\" does not exist.",
                gate.condition_type
            )),
            Some(c) if c.status != "True" => messages.push(format!(
                "the status of pod readiness gate \"{}\" is not \"True\", but {}",
                gate.condition_type, c.status
            )),
            Some(_) => {}
        }
    }
    (!messages.is_empty()).then(|| messages.join(", "))
}

/// The phase from the main containers' states, as upstream's kubelet decides it.
fn phase(statuses: &[ContainerStatus], policy: Restart) -> &'static str {
    let (mut running, mut waiting, mut stopped, mut succeeded) = (0, 0, 0, 0);
    for s in statuses {
        let state = s.state.as_ref();
        if state.is_some_and(|s| s.running.is_some()) {
            running += 1;
        } else if let Some(t) = state.and_then(|s| s.terminated.as_ref()) {
            stopped += 1;
            if t.exit_code == 0 {
                succeeded += 1;
            }
        } else if s
            .last_state
            .as_ref()
            .is_some_and(|l| l.terminated.is_some())
        {
            stopped += 1;
        } else {
            waiting += 1;
        }
    }
    if waiting > 0 {
        "Pending"
    } else if running > 0 {
        "Running"
    } else if stopped > 0 {
        match policy {
            Restart::Always => "Running",
            _ if stopped == succeeded => "Succeeded",
            Restart::Never => "Failed",
            Restart::OnFailure => "Running",
        }
    } else {
        // A pod without containers: nothing to run.
        "Succeeded"
    }
}

/// When the pod started on the node: kept from the status, else now (whole seconds, as the API
/// stores it, so recomputing gives the same timestamps).
pub fn start_ms(pod: &Pod, now_ms: i64) -> i64 {
    pod.status
        .as_ref()
        .and_then(|s| s.start_time.as_ref())
        .map(|t| t.0.as_second() * 1000)
        .unwrap_or(now_ms.div_euclid(1000) * 1000)
}

/// The status a kubelet would report for `pod` at `env.now_ms`.
pub fn desired_status(pod: &Pod, env: &PodEnv) -> Desired {
    let spec = pod.spec.clone().unwrap_or_default();
    let policy = match spec.restart_policy.as_deref() {
        Some("Never") => Restart::Never,
        Some("OnFailure") => Restart::OnFailure,
        _ => Restart::Always,
    };
    let start = start_ms(pod, env.now_ms);
    let (init, initialized, init_failed, main_start) = init_containers(pod, policy, start, env);
    let mut next_ms = init.next_ms;
    let mut statuses = Vec::new();
    let mut unready = Vec::new();
    for c in &spec.containers {
        if !initialized {
            statuses.push(not_started(c, "PodInitializing", None));
            unready.push(c.name.clone());
            continue;
        }
        if image_pull_fails(c.image.as_deref().unwrap_or_default()) {
            statuses.push(pull_failure(c));
            unready.push(c.name.clone());
            continue;
        }
        let tl = timeline(
            behaviour_of(c),
            policy,
            main_start,
            env.now_ms,
            env.time_scale,
        );
        next_ms = earliest(next_ms, tl.next_ms);
        let ready = match tl.state {
            State::Running { started_ms } => {
                let (ready, at) = probe_ready(c, started_ms, env);
                next_ms = earliest(next_ms, at);
                ready
            }
            _ => false,
        };
        if !ready {
            unready.push(c.name.clone());
        }
        statuses.push(status_of(c, pod, &tl, ready));
    }
    let mut init_statuses = init.statuses;
    let mut phase = if init_failed {
        "Failed"
    } else if !initialized {
        "Pending"
    } else {
        phase(&statuses, policy)
    };
    let (mut reason, mut message) = (None, None);
    if let Some(deadline) = spec.active_deadline_seconds
        && !matches!(phase, "Succeeded" | "Failed")
    {
        let at = start + deadline.saturating_mul(1000);
        if env.now_ms >= at {
            phase = "Failed";
            reason = Some("DeadlineExceeded".to_string());
            message =
                Some("Pod was active on the node longer than the specified deadline".to_string());
        } else {
            next_ms = earliest(next_ms, Some(at));
        }
    }
    let terminal = matches!(phase, "Succeeded" | "Failed");
    if terminal {
        // The kubelet stops whatever still runs (sidecars, or everything past a deadline).
        let stop = |s: &mut ContainerStatus| {
            if let Some(running) = s.state.as_ref().and_then(|st| st.running.as_ref()) {
                let started = running
                    .started_at
                    .as_ref()
                    .map_or(start, |t| t.0.as_second() * 1000);
                let code = if reason.is_some() { 137 } else { 0 };
                s.state = Some(terminated(
                    &Run {
                        started_ms: started,
                        finished_ms: env.now_ms,
                        code,
                    },
                    s.container_id.clone(),
                ));
                s.ready = false;
                s.started = Some(false);
            }
        };
        statuses.iter_mut().for_each(stop);
        init_statuses.iter_mut().for_each(stop);
        next_ms = None;
    }

    let now = env.now_ms;
    let mut conditions = vec![condition(
        pod,
        "PodReadyToStartContainers",
        !terminal,
        None,
        None,
        now,
    )];
    conditions.push(if initialized || (terminal && !init_failed) {
        condition(pod, "Initialized", true, None, None, now)
    } else {
        condition(
            pod,
            "Initialized",
            false,
            Some("ContainersNotInitialized"),
            Some(format!(
                "containers with incomplete status: [{}]",
                init.pending.join(" ")
            )),
            now,
        )
    });
    let (containers_ready, ready) = if terminal {
        (
            condition(
                pod,
                "ContainersReady",
                false,
                Some("PodCompleted"),
                None,
                now,
            ),
            condition(pod, "Ready", false, Some("PodCompleted"), None, now),
        )
    } else if !unready.is_empty() {
        let message = format!("containers with unready status: [{}]", unready.join(" "));
        (
            condition(
                pod,
                "ContainersReady",
                false,
                Some("ContainersNotReady"),
                Some(message.clone()),
                now,
            ),
            condition(
                pod,
                "Ready",
                false,
                Some("ContainersNotReady"),
                Some(message),
                now,
            ),
        )
    } else if let Some(message) = readiness_gates_message(pod) {
        (
            condition(pod, "ContainersReady", true, None, None, now),
            condition(
                pod,
                "Ready",
                false,
                Some("ReadinessGatesNotReady"),
                Some(message),
                now,
            ),
        )
    } else {
        (
            condition(pod, "ContainersReady", true, None, None, now),
            condition(pod, "Ready", true, None, None, now),
        )
    };
    conditions.push(containers_ready);
    conditions.push(ready);
    conditions.push(condition(pod, "PodScheduled", true, None, None, now));

    let pod_ip = if spec.host_network == Some(true) {
        env.host_ip.clone()
    } else {
        env.pod_ip.clone()
    };
    let status = PodStatus {
        phase: Some(phase.into()),
        reason,
        message,
        conditions: Some(conditions),
        host_ip: Some(env.host_ip.clone()),
        host_ips: Some(vec![HostIP {
            ip: env.host_ip.clone(),
        }]),
        pod_ip: Some(pod_ip.clone()),
        pod_ips: Some(vec![PodIP { ip: pod_ip }]),
        start_time: Some(time(start)),
        container_statuses: Some(statuses),
        init_container_statuses: (!init_statuses.is_empty()).then_some(init_statuses),
        ..Default::default()
    };
    Desired {
        status,
        next_change: next_ms.map(|at| Duration::from_millis((at - env.now_ms).max(0) as u64)),
    }
}

/// A strategic-merge patch of `pods/status` that brings the pod to `desired`, or None if it
/// already reports it. Conditions merge by type, so conditions other writers own (readiness
/// gates, DisruptionTarget) are kept.
pub fn status_patch(pod: &Pod, desired: &PodStatus) -> Option<Value> {
    let current = pod.status.clone().unwrap_or_default();
    let same_conditions = desired.conditions.iter().flatten().all(|want| {
        current
            .conditions
            .iter()
            .flatten()
            .find(|c| c.type_ == want.type_)
            .is_some_and(|c| {
                c.status == want.status && c.reason == want.reason && c.message == want.message
            })
    });
    let same = same_conditions
        && current.phase == desired.phase
        && current.pod_ip == desired.pod_ip
        && current.pod_ips == desired.pod_ips
        && current.host_ip == desired.host_ip
        && current.host_ips == desired.host_ips
        && current.start_time == desired.start_time
        && current.container_statuses == desired.container_statuses
        && current.init_container_statuses == desired.init_container_statuses
        && (desired.reason.is_none() || current.reason == desired.reason);
    if same {
        return None;
    }
    let mut status = serde_json::to_value(desired).ok()?;
    // Strategic merge keeps unlisted conditions; lists without a merge key are replaced whole.
    if let Some(map) = status.as_object_mut() {
        map.retain(|_, v| !v.is_null());
    }
    Some(json!({ "status": status }))
}

#[cfg(test)]
mod tests;
