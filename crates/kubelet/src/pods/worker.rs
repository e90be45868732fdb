//! One pod's worker: drives the pod from its spec to running containers (sandbox, cgroup,
//! volumes, images, init containers, sidecars, containers), restarts them by the pod's
//! restartPolicy with back-off, reacts to probes, reports status, and tears everything down
//! when the pod is deleted.
//!
//! Level-triggered: every wake-up (pod update, probe change, poll or timer) runs one `sync`
//! that compares what runs with what should, then reports the status if it changed.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{
    Container, ContainerState as ApiState, ContainerStateRunning, ContainerStateTerminated,
    ContainerStateWaiting, ContainerStatus, HostIP, Pod, PodCondition, PodIP, PodStatus, Secret,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, Patch, PatchParams, Preconditions};
use runtime::container::{
    ContainerInfo, ContainerMeta, ContainerSpec, ContainerState, Mount, RuntimeError,
    SandboxNamespaces,
};
use runtime::images::pull::ProgressFn;
use runtime::images::{Credentials, Image, PullOptions, PullPolicy};
use runtime::sandbox::{PortMapping, Sandbox, SandboxSpec};
use tokio::sync::{Notify, watch};

use super::backoff::{Backoff, go_duration};
use super::status::{self, Cond};
use super::{PodContext, dns, spec};
use crate::prober::{ContainerProbes, ProbeTarget};
use crate::volumes::PodVolumes;
use crate::volumes::env::{EnvContext, container_env};

/// How often containers are checked while the pod winds down (running ones otherwise wake the
/// worker when they exit: see [`ExitWatch`]).
const POLL: Duration = Duration::from_secs(1);
/// Periodic resync: volumes are set up again (ConfigMap/Secret updates reach the files).
const RESYNC: Duration = Duration::from_secs(10);
/// Retry of a start that failed for a reason back-off does not cover (missing ConfigMap,
/// volume not ready, sandbox failure).
const RETRY: Duration = Duration::from_secs(5);
/// Upstream's floor for the grace period left after preStop hooks.
const MIN_GRACE: Duration = Duration::from_secs(2);
/// Termination messages are cut to this size (upstream: 4096 bytes per container).
const MAX_TERMINATION_MESSAGE: usize = 4096;
/// FallbackToLogsOnError takes the last lines of the log, at most this much.
const FALLBACK_LOG_LINES: usize = 80;
const FALLBACK_LOG_BYTES: usize = 2048;
/// Log files rotate at this size.
const LOG_MAX_SIZE: u64 = 10 * 1024 * 1024;
/// Prefix of container IDs in statuses (`<runtime>://<id>`).
pub const CONTAINER_ID_PREFIX: &str = "runc://";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Init,
    Sidecar,
    App,
}

/// How a container run ended, as its status reports it.
#[derive(Debug, Clone, PartialEq)]
struct Terminated {
    exit_code: i32,
    signal: Option<i32>,
    reason: String,
    message: Option<String>,
    started_at: Option<i64>,
    finished_at: i64,
    container_id: String,
}

impl Terminated {
    fn to_api(&self) -> ContainerStateTerminated {
        ContainerStateTerminated {
            exit_code: self.exit_code,
            signal: self.signal,
            reason: Some(self.reason.clone()),
            message: self.message.clone(),
            started_at: self.started_at.map(time_of),
            finished_at: Some(time_of(self.finished_at)),
            container_id: (!self.container_id.is_empty())
                .then(|| format!("{CONTAINER_ID_PREFIX}{}", self.container_id)),
        }
    }
}

/// One runtime container of a slot.
#[derive(Debug, Clone)]
struct Instance {
    id: String,
    attempt: u32,
    /// The image's full name and its repo digest, as statuses report them.
    image: String,
    image_id: String,
    state: ContainerState,
    /// Set once the exit has been seen (with the termination message read).
    terminated: Option<Terminated>,
}

/// The probe workers of a running container and the task that wakes the pod worker when
/// their verdicts change.
struct ProbeHandle {
    probes: ContainerProbes,
    forward: tokio::task::JoinHandle<()>,
}

impl Drop for ProbeHandle {
    fn drop(&mut self) {
        self.forward.abort();
    }
}

/// A task that wakes the pod worker when one running container's process exits, so that
/// steady state costs nothing per pod and an exit is seen at once.
struct ExitWatch {
    container_id: String,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for ExitWatch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// One container of the pod spec and what runs for it.
struct Slot {
    name: String,
    kind: Kind,
    current: Option<Instance>,
    /// The previous run's end (lastState) and the container that holds it on disk.
    last: Option<Terminated>,
    last_id: Option<String>,
    last_attempt: Option<u32>,
    /// Why it is not running (ErrImagePull, CrashLoopBackOff, CreateContainerConfigError, ...).
    waiting: Option<(String, String)>,
    /// Do not try to start before this.
    retry_at: Option<Instant>,
    crash_backoff: Backoff,
    /// The finish time (unix ns) of the exit that the back-off has already counted.
    backoff_counted: Option<i64>,
    probes: Option<ProbeHandle>,
    exit_watch: Option<ExitWatch>,
    failures_seen: u64,
    /// An adopted container's (started, ready) as the API last showed them, kept until this
    /// moment unless its new probe workers decide sooner: a restarted agent does not turn
    /// Ready pods NotReady while their probes run for the first time.
    carried: Option<(bool, bool, Instant)>,
}

impl Slot {
    fn new(name: String, kind: Kind) -> Slot {
        Slot {
            name,
            kind,
            current: None,
            last: None,
            last_id: None,
            last_attempt: None,
            waiting: None,
            retry_at: None,
            crash_backoff: Backoff::default(),
            backoff_counted: None,
            probes: None,
            exit_watch: None,
            failures_seen: 0,
            carried: None,
        }
    }

    /// The carried (started, ready) of an adopted container, while they hold.
    fn carried(&self) -> (bool, bool) {
        match self.carried {
            Some((started, ready, until)) if Instant::now() < until => (started, ready),
            _ => (false, false),
        }
    }

    fn is_running(&self) -> bool {
        matches!(
            self.current.as_ref().map(|c| &c.state),
            Some(ContainerState::Running { .. } | ContainerState::Created)
        )
    }

    fn exited(&self) -> Option<&Terminated> {
        self.current.as_ref().and_then(|c| c.terminated.as_ref())
    }

    fn started(&self) -> bool {
        self.is_running()
            && (self
                .probes
                .as_ref()
                .is_some_and(|p| *p.probes.started.borrow())
                || self.carried().0)
    }

    fn ready(&self) -> bool {
        self.started()
            && (self
                .probes
                .as_ref()
                .is_some_and(|p| *p.probes.ready.borrow())
                || self.carried().1)
    }
}

/// Why the pod ended, when the kubelet decided it (deadline, failed init, completion).
#[derive(Debug, Clone)]
struct TerminalState {
    reason: Option<String>,
    message: Option<String>,
    /// Its sandbox, volumes and cgroup are released.
    cleaned: bool,
}

/// What a worker is told about its pod: the latest object, or None once it is gone from
/// the API (or its static manifest was removed).
pub type PodUpdates = watch::Receiver<Option<Arc<Pod>>>;

pub struct Worker {
    ctx: Arc<PodContext>,
    pod: Arc<Pod>,
    uid: String,
    key: String,
    updates: PodUpdates,
    slots: Vec<Slot>,
    sandbox: Option<Sandbox>,
    needs_new_sandbox: bool,
    pod_ips: Vec<IpAddr>,
    pod_cgroup: Option<String>,
    volumes: Option<PodVolumes>,
    last_volume_setup: Option<Instant>,
    image_backoff: HashMap<String, (Backoff, String)>,
    start_time: Option<Time>,
    initialized: bool,
    terminal: Option<TerminalState>,
    last_patch: Option<serde_json::Value>,
    last_conditions: Vec<PodCondition>,
    notify: Arc<Notify>,
    retry_at: Option<Instant>,
    status_retry_at: Option<Instant>,
    is_static: bool,
}

fn now_nanos() -> i64 {
    Timestamp::now().as_nanosecond() as i64
}

/// A unix-nanosecond time as the API shows it (whole seconds).
fn time_of(nanos: i64) -> Time {
    Time(Timestamp::from_second(nanos.div_euclid(1_000_000_000)).unwrap_or(Timestamp::UNIX_EPOCH))
}

/// Where a unix-nanosecond moment lies on the monotonic clock (for back-off arithmetic).
fn instant_of(nanos: i64) -> Instant {
    let ago = now_nanos().saturating_sub(nanos).max(0) as u64;
    Instant::now()
        .checked_sub(Duration::from_nanos(ago))
        .unwrap_or_else(Instant::now)
}

/// Go's `%v` of a time.Duration for a pull's timing (`1.234s`, `523ms`).
fn go_elapsed(d: Duration) -> String {
    if d >= Duration::from_secs(1) {
        format!("{:.3}s", d.as_secs_f64())
    } else {
        format!("{}ms", d.as_millis())
    }
}

impl Worker {
    pub fn new(
        ctx: Arc<PodContext>,
        pod: Arc<Pod>,
        updates: PodUpdates,
        adopted: Vec<ContainerInfo>,
        is_static: bool,
    ) -> Worker {
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        let key = format!(
            "{}/{}",
            pod.metadata.namespace.as_deref().unwrap_or_default(),
            pod.metadata.name.as_deref().unwrap_or_default()
        );
        let spec = pod.spec.clone().unwrap_or_default();
        let mut slots: Vec<Slot> = spec
            .init_containers
            .iter()
            .flatten()
            .map(|c| {
                let kind = if spec::is_sidecar(c) {
                    Kind::Sidecar
                } else {
                    Kind::Init
                };
                Slot::new(c.name.clone(), kind)
            })
            .collect();
        slots.extend(
            spec.containers
                .iter()
                .map(|c| Slot::new(c.name.clone(), Kind::App)),
        );
        let start_time = pod.status.as_ref().and_then(|s| s.start_time.clone());
        let mut worker = Worker {
            ctx,
            uid,
            key,
            updates,
            slots,
            sandbox: None,
            needs_new_sandbox: false,
            pod_ips: Vec::new(),
            pod_cgroup: None,
            volumes: None,
            last_volume_setup: None,
            image_backoff: HashMap::new(),
            start_time,
            initialized: false,
            terminal: None,
            last_patch: None,
            last_conditions: Vec::new(),
            notify: Arc::new(Notify::new()),
            retry_at: None,
            status_retry_at: None,
            is_static,
            pod,
        };
        worker.adopt(adopted);
        worker.carry_probe_results();
        worker
    }

    /// Adopted running containers keep the started and ready flags that the API shows for
    /// them (same container ID) for one probe period, until their probes report again.
    fn carry_probe_results(&mut self) {
        let status = self.pod.status.clone().unwrap_or_default();
        let shown: Vec<ContainerStatus> = status
            .container_statuses
            .into_iter()
            .flatten()
            .chain(status.init_container_statuses.into_iter().flatten())
            .collect();
        let spec = self.spec();
        for slot in &mut self.slots {
            let Some(current) = slot.current.as_ref().filter(|_| slot.is_running()) else {
                continue;
            };
            let id = format!("{CONTAINER_ID_PREFIX}{}", current.id);
            let Some(s) = shown
                .iter()
                .find(|s| s.name == slot.name && s.container_id.as_deref() == Some(&id))
            else {
                continue;
            };
            let container = spec
                .init_containers
                .iter()
                .flatten()
                .chain(spec.containers.iter())
                .find(|c| c.name == slot.name);
            let window = container
                .into_iter()
                .flat_map(|c| [&c.startup_probe, &c.readiness_probe])
                .flatten()
                .map(|p| {
                    let period = p.period_seconds.unwrap_or(10).max(1) as u64;
                    let timeout = p.timeout_seconds.unwrap_or(1).max(1) as u64;
                    Duration::from_secs(period + timeout)
                })
                .max()
                .unwrap_or_default();
            slot.carried = Some((
                s.started.unwrap_or(false),
                s.ready,
                Instant::now() + window + Duration::from_secs(2),
            ));
        }
    }

    /// Take over the containers found on disk: the newest run of each container is the
    /// current one, the one before it holds lastState, older ones go.
    fn adopt(&mut self, mut adopted: Vec<ContainerInfo>) {
        adopted.sort_by_key(|c| std::cmp::Reverse(c.meta.attempt));
        let mut leftovers = Vec::new();
        for info in adopted {
            let Some(i) = self
                .slots
                .iter()
                .position(|s| s.name == info.meta.container_name)
            else {
                leftovers.push(info.id.clone());
                continue;
            };
            if matches!(info.state, ContainerState::Unknown) {
                // Its process vanished (a reboot-like cleanup): the pod gets a new sandbox.
                self.needs_new_sandbox = true;
            }
            let image = runtime::images::normalize_name(&info.meta.image)
                .unwrap_or_else(|_| info.meta.image.clone());
            let slot = &mut self.slots[i];
            if slot.current.is_none() {
                slot.current = Some(Instance {
                    id: info.id.clone(),
                    attempt: info.meta.attempt,
                    image,
                    image_id: info.meta.image_id.clone(),
                    state: info.state.clone(),
                    terminated: None,
                });
            } else if slot.last_id.is_none()
                && !matches!(info.state, ContainerState::Running { .. })
            {
                slot.last_id = Some(info.id.clone());
                slot.last_attempt = Some(info.meta.attempt);
                slot.last = Some(self_terminated(&info.id, &info.state));
            } else {
                leftovers.push(info.id.clone());
            }
        }
        if self
            .slots
            .iter()
            .any(|s| s.kind == Kind::App && s.current.is_some())
        {
            self.initialized = true;
        }
        for slot in &self.slots {
            if let Some(c) = &slot.current {
                tracing::info!(pod = %self.key, container = %slot.name, id = %c.id, attempt = c.attempt, "adopted container");
            }
        }
        if !leftovers.is_empty() {
            let runtime = self.ctx.runtime.clone();
            tokio::spawn(async move {
                for id in leftovers {
                    let _ = runtime.stop_container(&id, Duration::ZERO).await;
                    let _ = runtime.remove_container(&id).await;
                }
            });
        }
    }

    fn spec(&self) -> k8s_openapi::api::core::v1::PodSpec {
        self.pod.spec.clone().unwrap_or_default()
    }

    fn container(&self, i: usize) -> Container {
        let spec = self.spec();
        let name = &self.slots[i].name;
        spec.init_containers
            .iter()
            .flatten()
            .chain(spec.containers.iter())
            .find(|c| &c.name == name)
            .cloned()
            .unwrap_or_default()
    }

    fn pod_dir(&self) -> PathBuf {
        self.ctx.volumes.pod_dir(&self.uid)
    }

    fn pod_log_dir(&self) -> PathBuf {
        crate::pod_log_dir(
            &self.ctx.log_root,
            self.pod.metadata.namespace.as_deref().unwrap_or_default(),
            self.pod.metadata.name.as_deref().unwrap_or_default(),
            &self.uid,
        )
    }

    fn termination_log_path(&self, container: &str, attempt: u32) -> PathBuf {
        self.pod_dir()
            .join("containers")
            .join(container)
            .join(format!("{attempt}.termination-log"))
    }

    fn event(&self, i: Option<usize>, type_: &str, reason: &str, message: impl Into<String>) {
        let container = i.map(|i| (self.slots[i].name.as_str(), self.slots[i].kind != Kind::App));
        self.ctx
            .events
            .pod_event(&self.pod, container, type_, reason, message);
    }

    /// `name_namespace(uid)`, as upstream's `format.Pod`.
    fn format_pod(&self) -> String {
        format!(
            "{}_{}({})",
            self.pod.metadata.name.as_deref().unwrap_or_default(),
            self.pod.metadata.namespace.as_deref().unwrap_or_default(),
            self.uid
        )
    }

    /// Run until the pod is gone (or deleted and cleaned up).
    pub async fn run(mut self) {
        let mut next_resync = Instant::now();
        loop {
            let update = self.updates.borrow_and_update().clone();
            let Some(pod) = update else {
                self.cleanup_gone().await;
                return;
            };
            self.pod = pod;
            if self.pod.metadata.deletion_timestamp.is_some() && !self.is_static {
                if self.terminate_and_delete().await {
                    return;
                }
            } else {
                let resync = Instant::now() >= next_resync;
                if resync {
                    next_resync = Instant::now() + RESYNC;
                    if self.is_static {
                        // The mirror pod may have been deleted and made again since the
                        // last patch: it gets the status anew.
                        self.last_patch = None;
                    }
                }
                self.sync(resync).await;
            }
            self.watch_exits();
            self.report_status().await;
            let wake = self.next_wakeup().min(next_resync);
            tokio::select! {
                changed = self.updates.changed() => {
                    if changed.is_err() {
                        // The dispatcher is gone (the kubelet stops): leave containers running.
                        return;
                    }
                }
                _ = self.notify.notified() => {}
                _ = tokio::time::sleep_until(wake.into()) => {}
            }
        }
    }

    fn next_wakeup(&self) -> Instant {
        let now = Instant::now();
        let mut wake = now + RESYNC;
        let mut consider = |t: Option<Instant>| {
            if let Some(t) = t {
                wake = wake.min(t.max(now));
            }
        };
        consider(self.status_retry_at);
        if self.terminal.is_none() {
            for slot in &self.slots {
                consider(slot.retry_at);
            }
            consider(self.retry_at);
            consider(self.deadline());
        } else if self.slots.iter().any(Slot::is_running) {
            consider(Some(now + POLL));
        }
        wake
    }

    /// Every running container has a task that wakes the worker when it exits (a new one
    /// after a restart, and for adopted containers).
    fn watch_exits(&mut self) {
        for slot in &mut self.slots {
            let running = match slot.current.as_ref() {
                Some(c) if matches!(c.state, ContainerState::Running { .. }) => Some(c.id.clone()),
                _ => None,
            };
            let Some(id) = running else {
                slot.exit_watch = None;
                continue;
            };
            if slot
                .exit_watch
                .as_ref()
                .is_some_and(|w| w.container_id == id && !w.task.is_finished())
            {
                continue;
            }
            let runtime = self.ctx.runtime.clone();
            let notify = self.notify.clone();
            let container_id = id.clone();
            let task = tokio::spawn(async move {
                if runtime.wait_exit(&container_id).await.is_ok() {
                    notify.notify_one();
                }
            });
            slot.exit_watch = Some(ExitWatch {
                container_id: id,
                task,
            });
        }
    }

    /// When activeDeadlineSeconds runs out.
    fn deadline(&self) -> Option<Instant> {
        let secs = self.spec().active_deadline_seconds?;
        let start = self.start_time.as_ref()?;
        let start_nanos = start.0.as_nanosecond() as i64;
        Some(instant_of(start_nanos) + Duration::from_secs(secs.max(0) as u64))
    }

    /// Bring every slot's state up to date with the runtime.
    async fn refresh(&mut self) {
        for i in 0..self.slots.len() {
            let Some(current) = self.slots[i].current.clone() else {
                continue;
            };
            if current.terminated.is_some() {
                continue;
            }
            let state = match self.ctx.runtime.container_state(&current.id).await {
                Ok(s) => s,
                Err(RuntimeError::NotFound { .. }) => ContainerState::Unknown,
                Err(e) => {
                    tracing::warn!(pod = %self.key, container = %self.slots[i].name, error = %e, "reading container state");
                    continue;
                }
            };
            let terminated = match &state {
                ContainerState::Exited(_) | ContainerState::Unknown => {
                    Some(self.terminated_of(i, &current, &state))
                }
                _ => None,
            };
            if let Some(t) = &terminated {
                tracing::info!(pod = %self.key, container = %self.slots[i].name, exit_code = t.exit_code, reason = %t.reason, "container exited");
                if matches!(state, ContainerState::Unknown) {
                    self.needs_new_sandbox = true;
                }
            }
            let slot = &mut self.slots[i];
            if terminated.is_some() {
                slot.probes = None;
            }
            if let Some(c) = slot.current.as_mut() {
                c.state = state;
                c.terminated = terminated;
            }
        }
    }

    /// The terminated state of a run that ended, with its termination message.
    fn terminated_of(&self, i: usize, current: &Instance, state: &ContainerState) -> Terminated {
        let mut t = self_terminated(&current.id, state);
        let container = self.container(i);
        let path = self.termination_log_path(&self.slots[i].name, current.attempt);
        let mut message = std::fs::read(&path)
            .map(|mut b| {
                b.truncate(MAX_TERMINATION_MESSAGE);
                String::from_utf8_lossy(&b).into_owned()
            })
            .unwrap_or_default();
        if message.is_empty()
            && t.exit_code != 0
            && container.termination_message_policy.as_deref() == Some("FallbackToLogsOnError")
        {
            let log = crate::container_log_path(
                &self.pod_log_dir(),
                &self.slots[i].name,
                current.attempt,
            );
            message = log_tail(&log);
        }
        t.message = (!message.is_empty()).then_some(message);
        t
    }

    /// One pass of reconciliation for a pod that is not being deleted.
    async fn sync(&mut self, resync: bool) {
        self.refresh().await;
        if self.start_time.is_none() {
            self.start_time = Some(time_of(now_nanos()));
        }
        if let Some(terminal) = &self.terminal {
            if !terminal.cleaned {
                self.release_terminal().await;
            }
            return;
        }
        if self
            .pod
            .status
            .as_ref()
            .and_then(|s| s.phase.as_deref())
            .is_some_and(|p| p == status::SUCCEEDED || p == status::FAILED)
            && self.slots.iter().all(|s| !s.is_running())
            && self.last_patch.is_none()
        {
            // Terminal before this agent started (restart): never run it again.
            self.terminal = Some(TerminalState {
                reason: self.pod.status.as_ref().and_then(|s| s.reason.clone()),
                message: self.pod.status.as_ref().and_then(|s| s.message.clone()),
                cleaned: false,
            });
            self.release_terminal().await;
            return;
        }
        if let Some(deadline) = self.deadline()
            && Instant::now() >= deadline
        {
            let message = "Pod was active on the node longer than the specified deadline";
            self.event(None, "Normal", "DeadlineExceeded", message);
            self.terminal = Some(TerminalState {
                reason: Some("DeadlineExceeded".into()),
                message: Some(message.into()),
                cleaned: false,
            });
            self.release_terminal().await;
            return;
        }
        self.handle_probe_failures().await;
        if !self.ensure_sandbox().await {
            return;
        }
        self.ensure_cgroup();
        self.ensure_probes();
        if !self.ensure_volumes(resync).await {
            return;
        }
        self.sync_containers().await;
        if self.terminal.is_some() {
            self.release_terminal().await;
        }
    }

    /// Liveness (or startup) probes that reached their failureThreshold: stop the container;
    /// the restart follows the usual rules.
    async fn handle_probe_failures(&mut self) {
        for i in 0..self.slots.len() {
            let Some(handle) = &self.slots[i].probes else {
                continue;
            };
            let failures = *handle.probes.failures.borrow();
            let started = *handle.probes.started.borrow();
            if failures <= self.slots[i].failures_seen || !self.slots[i].is_running() {
                continue;
            }
            self.slots[i].failures_seen = failures;
            let probe = if started { "liveness" } else { "startup" };
            let container = self.container(i);
            let message = format!(
                "Container {} failed {probe} probe, will be restarted",
                container.name
            );
            self.event(Some(i), "Normal", "Killing", message);
            let probe_grace = if started {
                container.liveness_probe.as_ref()
            } else {
                container.startup_probe.as_ref()
            }
            .and_then(|p| p.termination_grace_period_seconds)
            .map(|s| Duration::from_secs(s.max(0) as u64));
            let grace = probe_grace.unwrap_or_else(|| spec::grace_period(&self.pod));
            self.stop_slot(i, grace).await;
        }
        self.refresh().await;
    }

    async fn stop_slot(&mut self, i: usize, grace: Duration) {
        let Some(id) = self.slots[i].current.as_ref().map(|c| c.id.clone()) else {
            return;
        };
        self.slots[i].probes = None;
        tracing::info!(pod = %self.key, container = %self.slots[i].name, id = %id, ?grace, "stopping container");
        if let Err(e) = self.ctx.runtime.stop_container(&id, grace).await {
            tracing::warn!(pod = %self.key, container = %self.slots[i].name, error = %e, "stopping container");
        }
    }

    async fn ensure_sandbox(&mut self) -> bool {
        let spec = self.spec();
        if self.needs_new_sandbox {
            self.needs_new_sandbox = false;
            if self.sandbox.is_some() || self.ctx.sandboxes.get(&self.uid).ok().flatten().is_some()
            {
                self.event(
                    None,
                    "Normal",
                    "SandboxChanged",
                    "Pod sandbox changed, it will be killed and re-created.",
                );
            }
            // Containers still in the old namespaces go with it.
            let grace = spec::grace_period(&self.pod);
            for i in 0..self.slots.len() {
                if self.slots[i].is_running() {
                    self.stop_slot(i, grace).await;
                }
            }
            self.refresh().await;
            if let Err(e) = self.ctx.sandboxes.remove(&self.uid).await {
                tracing::warn!(pod = %self.key, error = %e, "removing the old sandbox");
            }
            self.sandbox = None;
            // A pod in a new sandbox starts over with its init containers, as upstream's;
            // a Never pod whose containers ran is not started again anyway.
            if spec::restart_policy(&self.pod) != "Never" {
                self.rerun_init_containers();
            }
        }
        if let Some(sandbox) = &self.sandbox {
            let gone = sandbox.netns.as_ref().is_some_and(|p| !p.exists());
            if !gone {
                return true;
            }
            self.needs_new_sandbox = true;
            return Box::pin(self.ensure_sandbox()).await;
        }
        let (hostname, _) = dns::pod_hostname(&self.pod, &self.ctx.config.cluster_domain);
        let port_mappings = spec
            .containers
            .iter()
            .chain(spec.init_containers.iter().flatten())
            .flat_map(|c| c.ports.iter().flatten())
            .filter_map(|p| {
                let host_port = u16::try_from(p.host_port?).ok().filter(|p| *p != 0)?;
                Some(PortMapping {
                    host_port,
                    container_port: u16::try_from(p.container_port).ok()?,
                    protocol: p.protocol.as_deref().unwrap_or("TCP").to_ascii_lowercase(),
                    host_ip: p.host_ip.clone().filter(|ip| !ip.is_empty()),
                })
            })
            .collect();
        let sandbox_spec = SandboxSpec {
            pod_uid: self.uid.clone(),
            pod_namespace: self.pod.metadata.namespace.clone().unwrap_or_default(),
            pod_name: self.pod.metadata.name.clone().unwrap_or_default(),
            hostname,
            host_network: spec.host_network.unwrap_or(false),
            host_ipc: spec.host_ipc.unwrap_or(false),
            port_mappings,
        };
        match self.ctx.sandboxes.create(&sandbox_spec).await {
            Ok(sandbox) => {
                tracing::info!(pod = %self.key, ips = ?sandbox.ips, "sandbox ready");
                self.pod_ips = if sandbox_spec.host_network || sandbox.ips.is_empty() {
                    vec![self.ctx.config.node_ip]
                } else {
                    sandbox.ips.clone()
                };
                self.sandbox = Some(sandbox);
                true
            }
            Err(e) => {
                tracing::warn!(pod = %self.key, error = %e, "creating the pod sandbox");
                self.event(
                    None,
                    "Warning",
                    "FailedCreatePodSandBox",
                    format!("Failed to create pod sandbox: {e}"),
                );
                self.retry_at = Some(Instant::now() + RETRY);
                false
            }
        }
    }

    /// Make the init containers run again: each one's last run becomes its lastState.
    fn rerun_init_containers(&mut self) {
        if !self.slots.iter().any(|s| s.kind == Kind::Init) {
            return;
        }
        self.initialized = false;
        let mut stale = Vec::new();
        for slot in self.slots.iter_mut().filter(|s| s.kind == Kind::Init) {
            let Some(prev) = slot.current.take() else {
                continue;
            };
            stale.extend(slot.last_id.take());
            slot.last = prev
                .terminated
                .clone()
                .or_else(|| Some(self_terminated(&prev.id, &prev.state)));
            slot.last_attempt = Some(prev.attempt);
            slot.last_id = Some(prev.id);
            slot.waiting = None;
            slot.retry_at = None;
        }
        if !stale.is_empty() {
            let runtime = self.ctx.runtime.clone();
            tokio::spawn(async move {
                for id in stale {
                    let _ = runtime.remove_container(&id).await;
                }
            });
        }
    }

    fn ensure_cgroup(&mut self) {
        if self.pod_cgroup.is_some() {
            return;
        }
        let qos = spec::qos_class(&self.pod);
        let path = runtime::cgroups::pod_cgroup_path(&self.ctx.config.cgroup_root, &qos, &self.uid);
        match runtime::cgroups::ensure_pod_cgroup(&path, spec::pod_memory_limit(&self.spec())) {
            Ok(()) => self.pod_cgroup = Some(path),
            Err(e) => {
                // Containers still run (under the path, which runc creates), only unlimited.
                tracing::warn!(pod = %self.key, error = %e, "creating the pod cgroup");
                self.pod_cgroup = Some(path);
            }
        }
    }

    async fn ensure_volumes(&mut self, resync: bool) -> bool {
        let due = self.volumes.is_none()
            || resync
            || self.last_volume_setup.is_none_or(|t| t.elapsed() >= RESYNC);
        if !due {
            return true;
        }
        if self.volumes.is_none() && self.retry_at.is_some_and(|t| Instant::now() < t) {
            return false;
        }
        match boxed_setup(&self.ctx.volumes, &self.pod).await {
            Ok(v) => {
                self.volumes = Some(v);
                self.last_volume_setup = Some(Instant::now());
                self.retry_at = None;
                true
            }
            Err(e) => {
                tracing::warn!(pod = %self.key, error = %e, "setting up volumes");
                self.event(None, "Warning", "FailedMount", e.to_string());
                self.retry_at = Some(Instant::now() + RETRY);
                // Running containers keep their (older) volume contents.
                self.volumes.is_some()
            }
        }
    }

    async fn sync_containers(&mut self) {
        let policy = spec::restart_policy(&self.pod).to_string();
        // Init containers in order; sidecars stay running once started.
        let mut init_done = true;
        for i in 0..self.slots.len() {
            match self.slots[i].kind {
                Kind::App => continue,
                Kind::Init => {
                    if self.initialized {
                        continue;
                    }
                    if self.slots[i].is_running() {
                        init_done = false;
                        break;
                    }
                    match self.slots[i].exited().map(|t| t.exit_code) {
                        Some(0) => continue,
                        Some(_) if policy == "Never" => {
                            self.terminal = Some(TerminalState {
                                reason: None,
                                message: None,
                                cleaned: false,
                            });
                            return;
                        }
                        Some(_) => {
                            self.restart(i).await;
                            init_done = false;
                            break;
                        }
                        None => {
                            self.start_if_due(i).await;
                            init_done = false;
                            break;
                        }
                    }
                }
                Kind::Sidecar => {
                    if self.slots[i].is_running() {
                        if !self.slots[i].started() && !self.initialized {
                            init_done = false;
                            break;
                        }
                        continue;
                    }
                    if self.slots[i].exited().is_some() {
                        self.restart(i).await;
                    } else {
                        self.start_if_due(i).await;
                    }
                    if !self.slots[i].started() && !self.initialized {
                        init_done = false;
                        break;
                    }
                }
            }
        }
        if !init_done {
            return;
        }
        self.initialized = true;
        let mut all_done = true;
        for i in 0..self.slots.len() {
            if self.slots[i].kind != Kind::App || self.slots[i].is_running() {
                if self.slots[i].kind == Kind::App {
                    all_done = false;
                }
                continue;
            }
            match self.slots[i].exited().map(|t| t.exit_code) {
                Some(code) => {
                    let unknown = self.slots[i]
                        .exited()
                        .is_some_and(|t| t.reason == "Unknown");
                    if spec::should_restart(&policy, code) || (unknown && policy == "Always") {
                        all_done = false;
                        self.restart(i).await;
                    }
                }
                None => {
                    all_done = false;
                    self.start_if_due(i).await;
                }
            }
        }
        if all_done {
            tracing::info!(pod = %self.key, "all containers completed");
            self.terminal = Some(TerminalState {
                reason: None,
                message: None,
                cleaned: false,
            });
        }
    }

    async fn start_if_due(&mut self, i: usize) {
        if self.slots[i].retry_at.is_some_and(|t| Instant::now() < t) {
            return;
        }
        self.start(i).await;
    }

    /// Restart an exited container unless CrashLoopBackOff holds it back.
    async fn restart(&mut self, i: usize) {
        let now = Instant::now();
        let Some(t) = self.slots[i].exited().cloned() else {
            return;
        };
        let slot = &mut self.slots[i];
        if slot.retry_at.is_some_and(|r| now < r) {
            return;
        }
        let finished = instant_of(t.finished_at);
        if slot.backoff_counted != Some(t.finished_at) && t.reason != "Unknown" {
            if let Some(remaining) = slot.crash_backoff.remaining_since(finished, now) {
                let delay = slot.crash_backoff.delay();
                slot.retry_at = Some(now + remaining);
                let name = slot.name.clone();
                let message = format!(
                    "back-off {} restarting failed container={name} pod={}",
                    go_duration(delay),
                    self.format_pod()
                );
                let first = self.slots[i]
                    .waiting
                    .as_ref()
                    .is_none_or(|(r, _)| r != "CrashLoopBackOff");
                self.slots[i].waiting = Some(("CrashLoopBackOff".into(), message));
                if first {
                    let pod = self.format_pod();
                    self.event(
                        Some(i),
                        "Warning",
                        "BackOff",
                        format!("Back-off restarting failed container {name} in pod {pod}"),
                    );
                }
                return;
            }
            let slot = &mut self.slots[i];
            slot.crash_backoff.next(finished, now);
            slot.backoff_counted = Some(t.finished_at);
        }
        self.start(i).await;
    }

    /// Pull the image and run container `i` (a first run or a restart).
    async fn start(&mut self, i: usize) -> bool {
        let container = self.container(i);
        let Some(sandbox) = self.sandbox.clone() else {
            return false;
        };
        let image = match self.ensure_image(i, &container).await {
            Ok(image) => image,
            Err(retry) => {
                self.slots[i].retry_at = Some(retry);
                return false;
            }
        };
        let attempt = self.next_attempt(i);
        match self.build_spec(&container, &image, &sandbox, attempt).await {
            Ok(spec) => self.run_spec(i, &container, spec, &image, sandbox).await,
            Err(message) => {
                self.event(Some(i), "Warning", "Failed", format!("Error: {message}"));
                self.slots[i].waiting = Some(("CreateContainerConfigError".into(), message));
                self.slots[i].retry_at = Some(Instant::now() + RETRY);
                false
            }
        }
    }

    fn next_attempt(&self, i: usize) -> u32 {
        let slot = &self.slots[i];
        if let Some(c) = &slot.current {
            return c.attempt + 1;
        }
        if let Some(a) = slot.last_attempt {
            return a + 1;
        }
        // No container left (the runtime lost them): continue after the newest log file,
        // as upstream does, so that logs are not overwritten.
        restart_count_by_log_dir(&self.pod_log_dir().join(&slot.name))
    }

    async fn ensure_image(&mut self, i: usize, container: &Container) -> Result<Image, Instant> {
        let name = container.image.clone().unwrap_or_default();
        let now = Instant::now();
        let policy = match PullPolicy::for_container(container.image_pull_policy.as_deref(), &name)
        {
            Ok(p) => p,
            Err(e) => {
                let message = format!("Failed to apply default image tag {name:?}: {e}");
                self.event(Some(i), "Warning", "InspectFailed", message.clone());
                self.slots[i].waiting = Some(("InvalidImageName".into(), message));
                return Err(now + RETRY);
            }
        };
        let present = {
            let store = self.ctx.images.clone();
            let lookup = name.clone();
            tokio::task::spawn_blocking(move || store.get(&lookup))
                .await
                .map_err(|_| now + RETRY)?
        };
        let present = match present {
            Ok(p) => p,
            Err(e) if e.reason() == "InvalidImageName" => {
                let message = format!("Failed to apply default image tag {name:?}: {e}");
                self.event(Some(i), "Warning", "InspectFailed", message.clone());
                self.slots[i].waiting = Some(("InvalidImageName".into(), message));
                return Err(now + RETRY);
            }
            Err(_) => None,
        };
        if !policy.should_pull(present.is_some()) {
            if let Some(image) = present {
                self.event(
                    Some(i),
                    "Normal",
                    "Pulled",
                    format!("Container image {name:?} already present on machine"),
                );
                return Ok(image);
            }
            let message =
                format!("Container image {name:?} is not present with pull policy of Never");
            self.event(Some(i), "Warning", "ErrImageNeverPull", message.clone());
            self.slots[i].waiting = Some(("ErrImageNeverPull".into(), message));
            return Err(now + RETRY);
        }
        let entry = self.image_backoff.entry(name.clone()).or_default();
        if let Some(remaining) = entry.0.remaining_since_update(now) {
            let last_error = entry.1.clone();
            self.event(
                Some(i),
                "Normal",
                "BackOff",
                format!("Back-off pulling image {name:?}"),
            );
            self.event(Some(i), "Warning", "Failed", "Error: ImagePullBackOff");
            self.slots[i].waiting = Some((
                "ImagePullBackOff".into(),
                format!("Back-off pulling image {name:?}: ErrImagePull: {last_error}"),
            ));
            return Err(now + remaining);
        }
        self.event(
            Some(i),
            "Normal",
            "Pulling",
            format!("Pulling image {name:?}"),
        );
        // Show ContainerCreating while the pull runs.
        self.report_status().await;
        let credentials = self.pull_credentials().await;
        let started = Instant::now();
        let progress: ProgressFn = Arc::new(|_: runtime::images::PullProgress| {});
        let result = pull_image(
            self.ctx.clone(),
            name.clone(),
            PullOptions { credentials },
            progress,
        )
        .await;
        match result {
            Ok(image) => {
                let took = go_elapsed(started.elapsed());
                self.event(
                    Some(i),
                    "Normal",
                    "Pulled",
                    format!(
                        "Successfully pulled image {name:?} in {took} ({took} including waiting). Image size: {} bytes.",
                        image.size
                    ),
                );
                Ok(image)
            }
            Err(e) => {
                tracing::warn!(pod = %self.key, image = %name, error = %e, "pulling image");
                let reason = e.reason();
                let message = format!("Failed to pull image {name:?}: {e}");
                self.event(Some(i), "Warning", "Failed", message.clone());
                self.event(Some(i), "Warning", "Failed", format!("Error: {reason}"));
                let entry = self.image_backoff.entry(name.clone()).or_default();
                let now = Instant::now();
                entry.0.next(now, now);
                entry.1 = e.to_string();
                // Look again shortly: within the back-off the container shows
                // ImagePullBackOff (as upstream's next sync does), and the pull is retried
                // once the back-off is over.
                let retry = now + POLL.min(entry.0.delay());
                self.slots[i].waiting = Some((reason.to_string(), message));
                Err(retry)
            }
        }
    }

    /// Credentials from the pod's imagePullSecrets (dockerconfigjson or dockercfg).
    async fn pull_credentials(&self) -> Credentials {
        let mut credentials = Credentials::default();
        let names: Vec<String> = self
            .spec()
            .image_pull_secrets
            .iter()
            .flatten()
            .filter(|r| !r.name.is_empty())
            .map(|r| r.name.clone())
            .collect();
        if names.is_empty() {
            return credentials;
        }
        let namespace = self.pod.metadata.namespace.clone().unwrap_or_default();
        let api: Api<Secret> = Api::namespaced(self.ctx.client.clone(), &namespace);
        let mut missing = Vec::new();
        for name in names {
            let secret = match api.get_opt(&name).await {
                Ok(Some(s)) => s,
                _ => {
                    missing.push(name);
                    continue;
                }
            };
            let data = secret.data.unwrap_or_default();
            let blob = data
                .get(".dockerconfigjson")
                .or_else(|| data.get(".dockercfg"));
            if let Some(blob) = blob
                && let Err(e) = credentials.add_docker_config(&blob.0)
            {
                tracing::warn!(pod = %self.key, secret = %name, error = %e, "bad image pull secret");
            }
        }
        if !missing.is_empty() {
            self.event(
                None,
                "Warning",
                "FailedToRetrieveImagePullSecret",
                format!(
                    "Unable to retrieve some image pull secrets ({}); attempting to pull the image may not succeed.",
                    missing.join(", ")
                ),
            );
        }
        credentials
    }

    /// Write the pod's hosts, resolv.conf and hostname files (cheap; on every start).
    fn write_pod_files(&self) -> Result<(PathBuf, PathBuf, PathBuf), String> {
        let dir = self.pod_dir();
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let cluster_domain = &self.ctx.config.cluster_domain;
        let spec = self.spec();
        let hosts = if spec.host_network.unwrap_or(false) {
            let host = std::fs::read_to_string("/etc/hosts").unwrap_or_default();
            dns::host_network_hosts(&self.pod, &host)
        } else {
            dns::managed_hosts(&self.pod, &self.pod_ips, cluster_domain)
        };
        let host_resolv = dns::ResolvConf::parse(
            &std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default(),
        );
        let settings = dns::DnsSettings {
            cluster_dns: &self.ctx.config.cluster_dns,
            cluster_domain,
            host: &host_resolv,
        };
        let pod_dns = dns::pod_resolv_conf(&self.pod, &settings);
        if pod_dns.missing_cluster_dns {
            self.event(
                None,
                "Warning",
                "MissingClusterDNS",
                format!(
                    "pod: {:?}. kubelet does not have ClusterDNS IP configured and cannot create Pod using \"ClusterFirst\" policy. Falling back to \"Default\" policy.",
                    self.format_pod()
                ),
            );
        }
        let hostname = if spec.host_network.unwrap_or(false) {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .unwrap_or_default()
                .trim()
                .to_string()
        } else {
            dns::pod_hostname(&self.pod, cluster_domain).0
        };
        let write = |name: &str, text: String| -> Result<PathBuf, String> {
            let path = dir.join(name);
            let tmp = dir.join(format!(".{name}.tmp"));
            std::fs::write(&tmp, text)
                .and_then(|_| std::fs::rename(&tmp, &path))
                .map_err(|e| format!("{}: {e}", path.display()))?;
            Ok(path)
        };
        Ok((
            write("etc-hosts", hosts)?,
            write("resolv.conf", pod_dns.conf.render())?,
            write("hostname", format!("{hostname}\n"))?,
        ))
    }

    /// Everything the runtime needs for one run of container `i`. Err: the
    /// CreateContainerConfigError message.
    async fn build_spec(
        &self,
        container: &Container,
        image: &Image,
        sandbox: &Sandbox,
        attempt: u32,
    ) -> Result<ContainerSpec, String> {
        let pod = &self.pod;
        let spec = self.spec();
        spec::verify_run_as_non_root(pod, container, &image.config.user)?;
        let env_ctx = EnvContext {
            node_name: self.ctx.config.node_name.clone(),
            node_ip: self.ctx.config.node_ip,
            pod_ips: self.pod_ips.clone(),
        };
        let env = boxed_env(&self.ctx.client, pod, container, &env_ctx)
            .await
            .map_err(|e| e.message)?;
        let volumes = self.volumes.clone().unwrap_or_default();
        let mut mounts = self
            .ctx
            .volumes
            .container_mounts(pod, container, &volumes)
            .map_err(|e| e.to_string())?;
        let (hosts, resolv, hostname_file) = self.write_pod_files()?;
        let mounted =
            |path: &str, mounts: &[Mount]| mounts.iter().any(|m| m.container_path == path);
        for (path, host_path) in [
            ("/etc/hosts", hosts),
            ("/etc/resolv.conf", resolv),
            ("/etc/hostname", hostname_file),
        ] {
            if !mounted(path, &mounts) {
                mounts.push(Mount {
                    container_path: path.into(),
                    host_path,
                    read_only: false,
                    propagation: None,
                });
            }
        }
        let termination_path = container
            .termination_message_path
            .clone()
            .filter(|p| !p.is_empty())
            .unwrap_or_else(|| "/dev/termination-log".into());
        let log_file = self.termination_log_path(&container.name, attempt);
        if let Some(parent) = log_file.parent() {
            std::fs::create_dir_all(parent).map_err(|e| format!("{}: {e}", parent.display()))?;
        }
        std::fs::write(&log_file, b"").map_err(|e| format!("{}: {e}", log_file.display()))?;
        {
            use std::os::unix::fs::PermissionsExt as _;
            let _ = std::fs::set_permissions(&log_file, std::fs::Permissions::from_mode(0o666));
        }
        if !mounted(&termination_path, &mounts) {
            mounts.push(Mount {
                container_path: termination_path,
                host_path: log_file,
                read_only: false,
                propagation: None,
            });
        }
        let layers = {
            let store = self.ctx.images.clone();
            let name = image.name.clone();
            tokio::task::spawn_blocking(move || store.rootfs_layers(&name))
                .await
                .map_err(|e| format!("reading image layers: {e}"))?
                .map_err(|e| e.to_string())?
        };
        let log_dir = self.pod_log_dir();
        let log_path = crate::container_log_path(&log_dir, &container.name, attempt);
        if let Some(parent) = log_path.parent() {
            std::fs::create_dir_all(parent).map_err(|e| format!("{}: {e}", parent.display()))?;
        }
        let host_network = spec.host_network.unwrap_or(false);
        let hostname = if host_network {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .unwrap_or_default()
                .trim()
                .to_string()
        } else {
            dns::pod_hostname(pod, &self.ctx.config.cluster_domain).0
        };
        let namespaces = SandboxNamespaces {
            network: sandbox.netns.clone(),
            ipc: if spec.host_ipc.unwrap_or(false) {
                None
            } else {
                sandbox.ipc_ns.clone()
            },
            uts: sandbox.uts_ns.clone(),
            pid: None,
            host_pid: spec.host_pid.unwrap_or(false),
        };
        let image_name = container.image.clone().unwrap_or_default();
        Ok(ContainerSpec {
            meta: ContainerMeta {
                pod_uid: self.uid.clone(),
                pod_namespace: pod.metadata.namespace.clone().unwrap_or_default(),
                pod_name: pod.metadata.name.clone().unwrap_or_default(),
                container_name: container.name.clone(),
                attempt,
                image: image_name,
                image_id: image.repo_digest(),
                created_at: now_nanos(),
            },
            layers,
            image_config: image.config.clone(),
            command: container.command.clone().unwrap_or_default(),
            args: container.args.clone().unwrap_or_default(),
            env,
            working_dir: container.working_dir.clone().filter(|w| !w.is_empty()),
            mounts,
            namespaces,
            hostname,
            sysctls: spec::sysctls(pod),
            resources: spec::container_resources(container),
            security: spec::merged_security(pod, container),
            cgroup_parent: self.pod_cgroup.clone().unwrap_or_default(),
            tty: container.tty.unwrap_or(false),
            stdin: container.stdin.unwrap_or(false),
            stdin_once: container.stdin_once.unwrap_or(false),
            log_path,
            log_max_size: LOG_MAX_SIZE,
            stop_signal: Some(image.config.stop_signal.clone()).filter(|s| !s.is_empty()),
        })
    }

    async fn run_spec(
        &mut self,
        i: usize,
        container: &Container,
        spec: ContainerSpec,
        image: &Image,
        sandbox: Sandbox,
    ) -> bool {
        let attempt = spec.meta.attempt;
        let result = self.ctx.runtime.run_container(&spec).await;
        let id = match result {
            Ok(id) => id,
            Err(RuntimeError::Start { message, .. }) => {
                self.start_failed(i, container, attempt, image, message);
                return false;
            }
            Err(e) => {
                let (reason, message) = match &e {
                    RuntimeError::Create { message, .. } => {
                        ("CreateContainerError", message.clone())
                    }
                    other => ("CreateContainerError", other.to_string()),
                };
                tracing::warn!(pod = %self.key, container = %container.name, error = %e, "running container");
                self.event(Some(i), "Warning", "Failed", format!("Error: {message}"));
                let now = Instant::now();
                let slot = &mut self.slots[i];
                slot.waiting = Some((reason.into(), message));
                // A container that does not start backs off like one that crashes.
                slot.crash_backoff.next(now, now);
                slot.retry_at = Some(now + slot.crash_backoff.delay());
                return false;
            }
        };
        tracing::info!(pod = %self.key, container = %container.name, id = %id, attempt, "container started");
        self.event(
            Some(i),
            "Normal",
            "Created",
            format!("Created container: {}", container.name),
        );
        self.event(
            Some(i),
            "Normal",
            "Started",
            format!("Started container {}", container.name),
        );
        let started_at = now_nanos();
        let state = match self.ctx.runtime.container_state(&id).await {
            Ok(s) => s,
            Err(_) => ContainerState::Running { started_at, pid: 0 },
        };
        let old_last = {
            let slot = &mut self.slots[i];
            let old_last = slot.last_id.take();
            if let Some(prev) = slot.current.take() {
                slot.last = prev.terminated.clone();
                slot.last_attempt = Some(prev.attempt);
                slot.last_id = Some(prev.id);
            }
            slot.carried = None;
            slot.current = Some(Instance {
                id: id.clone(),
                attempt,
                image: image.name.clone(),
                image_id: image.repo_digest(),
                state,
                terminated: None,
            });
            slot.waiting = None;
            slot.retry_at = None;
            old_last
        };
        if let Some(old) = old_last {
            // Only the newest dead container is kept (its status is lastState).
            let runtime = self.ctx.runtime.clone();
            tokio::spawn(async move {
                let _ = runtime.remove_container(&old).await;
            });
        }
        let target = ProbeTarget {
            runtime: self.ctx.runtime.clone(),
            container_id: id.clone(),
            pod_ip: self.pod_ips.first().copied(),
            netns: sandbox.netns.clone(),
            pod: (*self.pod).clone(),
            container: container.clone(),
        };
        self.start_probes(i, target.clone());
        if let Some(post_start) = container
            .lifecycle
            .as_ref()
            .and_then(|l| l.post_start.as_ref())
            && let Err(message) = crate::prober::run_handler(post_start, &target).await
        {
            tracing::warn!(pod = %self.key, container = %container.name, %message, "postStart hook failed");
            self.event(
                Some(i),
                "Warning",
                "FailedPostStartHook",
                "PostStartHook failed",
            );
            let grace = spec::grace_period(&self.pod);
            self.stop_slot(i, grace).await;
            self.refresh().await;
            return false;
        }
        true
    }

    /// runc could not start the container (e.g. its executable is missing). As upstream with
    /// containerd: the run counts as a container that ended at once with exit code 128,
    /// reason StartError and runc's message; the restart policy and CrashLoopBackOff apply.
    fn start_failed(
        &mut self,
        i: usize,
        container: &Container,
        attempt: u32,
        image: &Image,
        message: String,
    ) {
        tracing::warn!(pod = %self.key, container = %container.name, %message, "starting container");
        self.event(
            Some(i),
            "Normal",
            "Created",
            format!("Created container: {}", container.name),
        );
        self.event(Some(i), "Warning", "Failed", format!("Error: {message}"));
        let slot = &mut self.slots[i];
        let stale = slot.last_id.take();
        if let Some(prev) = slot.current.take() {
            slot.last = prev.terminated.clone();
            slot.last_attempt = Some(prev.attempt);
            slot.last_id = Some(prev.id);
        }
        slot.carried = None;
        slot.current = Some(start_error(
            attempt,
            image.name.clone(),
            image.repo_digest(),
            message.clone(),
        ));
        slot.waiting = Some(("RunContainerError".into(), message));
        slot.retry_at = None;
        if let Some(old) = stale.filter(|id| !id.is_empty()) {
            let runtime = self.ctx.runtime.clone();
            tokio::spawn(async move {
                let _ = runtime.remove_container(&old).await;
            });
        }
    }

    /// Running containers without probe workers (adopted after an agent restart) get them.
    fn ensure_probes(&mut self) {
        let Some(sandbox) = self.sandbox.clone() else {
            return;
        };
        for i in 0..self.slots.len() {
            let slot = &self.slots[i];
            if slot.probes.is_some() || !slot.is_running() {
                continue;
            }
            let Some(id) = slot.current.as_ref().map(|c| c.id.clone()) else {
                continue;
            };
            let target = ProbeTarget {
                runtime: self.ctx.runtime.clone(),
                container_id: id,
                pod_ip: self.pod_ips.first().copied(),
                netns: sandbox.netns.clone(),
                pod: (*self.pod).clone(),
                container: self.container(i),
            };
            self.start_probes(i, target);
        }
    }

    fn start_probes(&mut self, i: usize, target: ProbeTarget) {
        let probes = ContainerProbes::start(target, self.ctx.events.clone());
        let mut ready = probes.ready.clone();
        let mut started = probes.started.clone();
        let mut failures = probes.failures.clone();
        let notify = self.notify.clone();
        let forward = tokio::spawn(async move {
            loop {
                let alive = tokio::select! {
                    r = ready.changed() => r.is_ok(),
                    r = started.changed() => r.is_ok(),
                    r = failures.changed() => r.is_ok(),
                };
                if !alive {
                    return;
                }
                notify.notify_one();
            }
        });
        let slot = &mut self.slots[i];
        slot.failures_seen = *probes.failures.borrow();
        slot.probes = Some(ProbeHandle { probes, forward });
    }

    /// Stop containers: regular (and init) ones together, then sidecars in reverse order, each
    /// after its preStop hook, within the grace period.
    async fn kill_all(&mut self, grace: Duration, run_pre_stop: bool) {
        let deadline = Instant::now() + grace;
        let mut order: Vec<usize> = (0..self.slots.len())
            .filter(|&i| self.slots[i].kind != Kind::Sidecar)
            .collect();
        let sidecars: Vec<usize> = (0..self.slots.len())
            .rev()
            .filter(|&i| self.slots[i].kind == Kind::Sidecar)
            .collect();
        // Regular containers in parallel.
        let mut batch = Vec::new();
        for i in order.drain(..) {
            if let Some(job) = self.stop_job(i, deadline, run_pre_stop) {
                batch.push(job);
            }
        }
        futures::future::join_all(batch).await;
        for i in sidecars {
            if let Some(job) = self.stop_job(i, deadline, run_pre_stop) {
                job.await;
            }
        }
        for slot in &mut self.slots {
            slot.probes = None;
        }
        self.refresh().await;
    }

    fn stop_job(
        &self,
        i: usize,
        deadline: Instant,
        run_pre_stop: bool,
    ) -> Option<impl std::future::Future<Output = ()> + use<>> {
        if !self.slots[i].is_running() {
            return None;
        }
        let id = self.slots[i].current.as_ref()?.id.clone();
        let container = self.container(i);
        let runtime = self.ctx.runtime.clone();
        let events = self.ctx.events.clone();
        let pod = self.pod.clone();
        let key = self.key.clone();
        let init = self.slots[i].kind != Kind::App;
        let target = ProbeTarget {
            runtime: runtime.clone(),
            container_id: id.clone(),
            pod_ip: self.pod_ips.first().copied(),
            netns: self.sandbox.as_ref().and_then(|s| s.netns.clone()),
            pod: (*self.pod).clone(),
            container: container.clone(),
        };
        Some(async move {
            events.pod_event(
                &pod,
                Some((&container.name, init)),
                "Normal",
                "Killing",
                format!("Stopping container {}", container.name),
            );
            if run_pre_stop
                && let Some(pre_stop) = container
                    .lifecycle
                    .as_ref()
                    .and_then(|l| l.pre_stop.as_ref())
            {
                let budget = deadline.saturating_duration_since(Instant::now());
                match tokio::time::timeout(budget, crate::prober::run_handler(pre_stop, &target))
                    .await
                {
                    Ok(Ok(())) => {}
                    Ok(Err(message)) => {
                        tracing::warn!(pod = %key, container = %container.name, %message, "preStop hook failed");
                        events.pod_event(
                            &pod,
                            Some((&container.name, init)),
                            "Warning",
                            "FailedPreStopHook",
                            "PreStopHook failed",
                        );
                    }
                    Err(_) => {
                        tracing::warn!(pod = %key, container = %container.name, "preStop hook ran out of the grace period");
                    }
                }
            }
            let grace = deadline
                .saturating_duration_since(Instant::now())
                .max(MIN_GRACE);
            tracing::info!(pod = %key, container = %container.name, ?grace, "stopping container");
            if let Err(e) = runtime.stop_container(&id, grace).await {
                tracing::warn!(pod = %key, container = %container.name, error = %e, "stopping container");
            }
        })
    }

    /// A terminal pod: stop what still runs (sidecars), release its IP, volumes and cgroup.
    /// Containers and logs stay until the pod is deleted.
    async fn release_terminal(&mut self) {
        let grace = spec::grace_period(&self.pod);
        self.kill_all(grace, true).await;
        if let Err(e) = self.ctx.sandboxes.remove(&self.uid).await {
            tracing::warn!(pod = %self.key, error = %e, "removing the sandbox of a finished pod");
            return;
        }
        self.sandbox = None;
        if let Err(e) = self.ctx.volumes.teardown(&self.uid).await {
            tracing::warn!(pod = %self.key, error = %e, "removing the volumes of a finished pod");
        }
        self.volumes = None;
        if let Some(path) = self.pod_cgroup.take() {
            let _ = runtime::cgroups::remove_pod_cgroup(&path);
        }
        tracing::info!(pod = %self.key, "pod finished; sandbox released");
        if let Some(t) = self.terminal.as_mut() {
            t.cleaned = true;
        }
    }

    /// Remove everything of the pod on this node; `logs` too when the pod is gone for good.
    async fn remove_all(&mut self, logs: bool) -> bool {
        let mut ok = true;
        for slot in &mut self.slots {
            slot.probes = None;
            let ids = slot
                .current
                .as_ref()
                .map(|c| c.id.clone())
                .into_iter()
                .chain(slot.last_id.clone());
            for id in ids {
                if let Err(e) = self.ctx.runtime.remove_container(&id).await
                    && !matches!(e, RuntimeError::NotFound { .. })
                {
                    tracing::warn!(pod = %self.key, id = %id, error = %e, "removing container");
                    ok = false;
                }
            }
        }
        if let Err(e) = self.ctx.sandboxes.remove(&self.uid).await {
            tracing::warn!(pod = %self.key, error = %e, "removing the sandbox");
            ok = false;
        }
        self.sandbox = None;
        if let Err(e) = self.ctx.volumes.teardown(&self.uid).await {
            tracing::warn!(pod = %self.key, error = %e, "removing volumes");
            ok = false;
        }
        let qos = spec::qos_class(&self.pod);
        let path = self.pod_cgroup.take().unwrap_or_else(|| {
            runtime::cgroups::pod_cgroup_path(&self.ctx.config.cgroup_root, &qos, &self.uid)
        });
        let _ = runtime::cgroups::remove_pod_cgroup(&path);
        if logs {
            let _ = std::fs::remove_dir_all(self.pod_log_dir());
        }
        ok
    }

    /// The pod has a deletionTimestamp: stop it gracefully, clean up, report the final
    /// status and delete it from the API. True once done.
    async fn terminate_and_delete(&mut self) -> bool {
        tracing::info!(pod = %self.key, "terminating pod");
        let grace = spec::grace_period(&self.pod);
        self.refresh().await;
        self.wait_for_proxy_drain(grace).await;
        self.kill_all(grace, true).await;
        if self.terminal.is_none() {
            self.terminal = Some(TerminalState {
                reason: None,
                message: None,
                cleaned: false,
            });
        }
        self.report_status().await;
        if !self.remove_all(false).await {
            self.retry_at = Some(Instant::now() + RETRY);
        }
        if let Some(t) = self.terminal.as_mut() {
            t.cleaned = true;
        }
        let namespace = self.pod.metadata.namespace.clone().unwrap_or_default();
        let api: Api<Pod> = Api::namespaced(self.ctx.client.clone(), &namespace);
        let params = DeleteParams {
            grace_period_seconds: Some(0),
            preconditions: Some(Preconditions {
                uid: Some(self.uid.clone()),
                resource_version: None,
            }),
            ..Default::default()
        };
        let name = self.pod.metadata.name.clone().unwrap_or_default();
        match api.delete(&name, &params).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => {}
            Err(e) => {
                tracing::warn!(pod = %self.key, error = %e, "deleting the pod");
                tokio::time::sleep(Duration::from_secs(1)).await;
                return false;
            }
        }
        let _ = std::fs::remove_dir_all(self.pod_log_dir());
        tracing::info!(pod = %self.key, "pod deleted");
        true
    }

    /// The EndpointSlices mark a deleted pod not ready at once, but this node's Service proxy
    /// acts on that a little later: stop the containers only once it sends them no new
    /// connection, or it would send some to a stopped container (refused or reset). Bounded by
    /// [`super::PROXY_DRAIN_LIMIT`] and the grace period; host-network pods share the node's
    /// address and do not wait.
    async fn wait_for_proxy_drain(&self, grace: Duration) {
        let Some(routes) = self.ctx.config.proxy_routes.clone() else {
            return;
        };
        if self.spec().host_network == Some(true) || self.pod_ips.is_empty() {
            return;
        }
        let started = Instant::now();
        let deadline = started + grace.min(super::PROXY_DRAIN_LIMIT);
        while self.pod_ips.iter().any(|ip| routes(*ip)) {
            if Instant::now() >= deadline {
                // e.g. its last endpoints: terminating ones serve when none is ready
                tracing::debug!(pod = %self.key, "Services still send connections to the pod; stopping it anyway");
                return;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        tracing::debug!(pod = %self.key, waited = ?started.elapsed(), "no Service sends new connections to the pod");
    }

    /// The pod is gone from the API (or its manifest from the static pod folder).
    async fn cleanup_gone(&mut self) {
        tracing::info!(pod = %self.key, "pod is gone; removing its containers");
        let grace = spec::grace_period(&self.pod);
        self.refresh().await;
        self.kill_all(grace, true).await;
        for _ in 0..3 {
            if self.remove_all(true).await {
                break;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }

    /// The status as it should be now.
    fn compute_status(&self) -> PodStatus {
        let spec = self.spec();
        let has_init = spec.init_containers.as_ref().is_some_and(|c| !c.is_empty());
        let default_reason = if has_init && !self.initialized {
            "PodInitializing"
        } else {
            "ContainerCreating"
        };
        let mut init_statuses = Vec::new();
        let mut app_statuses = Vec::new();
        for (i, slot) in self.slots.iter().enumerate() {
            let container = self.container(i);
            let reason = if slot.kind == Kind::App {
                default_reason
            } else if has_init {
                "PodInitializing"
            } else {
                "ContainerCreating"
            };
            let s = slot_status(slot, &container, reason);
            if slot.kind == Kind::App {
                app_statuses.push(s);
            } else {
                init_statuses.push(s);
            }
        }
        let all: Vec<ContainerStatus> = init_statuses
            .iter()
            .chain(app_statuses.iter())
            .cloned()
            .collect();
        let terminal = self.terminal.is_some();
        let initialized =
            self.initialized || status::has_any_regular_container_started(&self.pod, &all);
        let mut phase = status::pod_phase(&self.pod, &all, terminal, initialized);
        let reason = self.terminal.as_ref().and_then(|t| t.reason.clone());
        let message = self.terminal.as_ref().and_then(|t| t.message.clone());
        if reason.as_deref() == Some("DeadlineExceeded") {
            phase = status::FAILED;
        }
        if terminal && phase != status::SUCCEEDED && phase != status::FAILED {
            // Stopped before all containers ran (deleted, deadline): the pod failed.
            phase = status::FAILED;
        }
        let sandbox_ready = self.sandbox.is_some();
        let mut computed = vec![Cond {
            type_: "PodReadyToStartContainers",
            status: sandbox_ready,
            reason: None,
            message: None,
        }];
        computed.push(status::initialized_condition(&self.pod, &all, phase));
        let containers_ready = status::containers_ready_condition(&self.pod, &all, phase);
        let others: Vec<PodCondition> = self
            .pod
            .status
            .as_ref()
            .and_then(|s| s.conditions.clone())
            .unwrap_or_default();
        let ready = status::ready_condition(&self.pod, &containers_ready, &others);
        computed.push(containers_ready);
        computed.push(ready);
        let previous = if self.last_conditions.is_empty() {
            &others
        } else {
            &self.last_conditions
        };
        let now = time_of(now_nanos());
        let conditions = status::to_pod_conditions(&computed, previous, &now);
        let host_ip = self.ctx.config.node_ip.to_string();
        let pod_ips = if self.pod_ips.is_empty() {
            self.pod
                .status
                .as_ref()
                .and_then(|s| s.pod_ips.clone())
                .map(|ips| ips.into_iter().filter_map(|p| p.ip.parse().ok()).collect())
                .unwrap_or_default()
        } else {
            self.pod_ips.clone()
        };
        PodStatus {
            phase: Some(phase.to_string()),
            conditions: Some(conditions),
            host_ip: Some(host_ip.clone()),
            host_ips: Some(vec![HostIP { ip: host_ip }]),
            pod_ip: pod_ips.first().map(IpAddr::to_string),
            pod_ips: (!pod_ips.is_empty()).then(|| {
                pod_ips
                    .iter()
                    .map(|ip| PodIP { ip: ip.to_string() })
                    .collect()
            }),
            start_time: self.start_time.clone(),
            qos_class: Some(spec::qos_class(&self.pod)),
            container_statuses: Some(app_statuses),
            init_container_statuses: has_init.then_some(init_statuses),
            reason,
            message,
            ..Default::default()
        }
    }

    /// Patch pods/status when it changed since the last patch.
    async fn report_status(&mut self) {
        let status = self.compute_status();
        let patch = status::status_patch(&status);
        if self.last_patch.as_ref() == Some(&patch) {
            return;
        }
        let namespace = self.pod.metadata.namespace.clone().unwrap_or_default();
        let name = self.pod.metadata.name.clone().unwrap_or_default();
        let api: Api<Pod> = Api::namespaced(self.ctx.client.clone(), &namespace);
        match api
            .patch_status(&name, &PatchParams::default(), &Patch::Strategic(&patch))
            .await
        {
            Ok(_) => {
                tracing::debug!(pod = %self.key, phase = ?status.phase, "status updated");
                self.last_conditions = status.conditions.unwrap_or_default();
                self.last_patch = Some(patch);
                self.status_retry_at = None;
            }
            Err(e) => {
                if !self.is_static {
                    tracing::warn!(pod = %self.key, error = %e, "updating pod status");
                }
                // Try again soon.
                self.status_retry_at = Some(Instant::now() + Duration::from_secs(1));
            }
        }
    }
}

// Other modules' futures, boxed at a plain function boundary: rustc cannot prove some of
// them Send ("not general enough") when they are awaited deep inside the worker's future.
type SendFuture<'a, T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send + 'a>>;

/// The puller's future is not provably Send (a closure over borrowed layers inside it), so
/// it runs on a blocking thread of its own, driven by the runtime's handle.
async fn pull_image(
    ctx: Arc<PodContext>,
    name: String,
    options: PullOptions,
    progress: ProgressFn,
) -> runtime::images::Result<Image> {
    let handle = tokio::runtime::Handle::current();
    let joined = tokio::task::spawn_blocking(move || {
        let puller = ctx.workers.puller(&ctx);
        handle.block_on(puller.pull(&ctx.images, &name, &options, progress))
    })
    .await;
    joined.map_err(|e| runtime::images::ImageError::Io {
        path: PathBuf::from("<pull>"),
        source: std::io::Error::other(e.to_string()),
    })?
}

fn boxed_env<'a>(
    client: &'a kube::Client,
    pod: &'a Pod,
    container: &'a Container,
    ctx: &'a EnvContext,
) -> SendFuture<'a, Result<Vec<(String, String)>, crate::volumes::env::EnvError>> {
    Box::pin(container_env(client, pod, container, ctx))
}

fn boxed_setup<'a>(
    volumes: &'a crate::volumes::VolumeManager,
    pod: &'a Pod,
) -> SendFuture<'a, Result<PodVolumes, crate::volumes::VolumeError>> {
    Box::pin(volumes.setup(pod))
}

/// The termination a runtime state stands for (no message yet).
fn self_terminated(id: &str, state: &ContainerState) -> Terminated {
    match state {
        ContainerState::Exited(info) => Terminated {
            exit_code: info.exit_code,
            signal: info.signal,
            reason: if info.reason.is_empty() {
                if info.exit_code == 0 {
                    "Completed"
                } else {
                    "Error"
                }
                .to_string()
            } else {
                info.reason.clone()
            },
            message: None,
            started_at: (info.started_at > 0).then_some(info.started_at),
            finished_at: info.finished_at,
            container_id: id.to_string(),
        },
        // Gone without a trace (reboot-like): upstream reports exit code 255, reason Unknown.
        _ => Terminated {
            exit_code: 255,
            signal: None,
            reason: "Unknown".into(),
            message: None,
            started_at: None,
            finished_at: now_nanos(),
            container_id: id.to_string(),
        },
    }
}

/// A run that runc could not start, as upstream reports it: exit code 128, reason
/// StartError, never started (the zero time), and no container left to name.
fn start_error(attempt: u32, image: String, image_id: String, message: String) -> Instance {
    let finished_at = now_nanos();
    let exit = runtime::container::ExitInfo {
        exit_code: 128,
        signal: None,
        reason: "StartError".into(),
        started_at: 0,
        finished_at,
    };
    Instance {
        id: String::new(),
        attempt,
        image,
        image_id,
        state: ContainerState::Exited(exit),
        terminated: Some(Terminated {
            exit_code: 128,
            signal: None,
            reason: "StartError".into(),
            message: Some(message),
            started_at: Some(0),
            finished_at,
            container_id: String::new(),
        }),
    }
}

/// One container's status from its slot.
fn slot_status(slot: &Slot, container: &Container, default_reason: &str) -> ContainerStatus {
    let spec_image = container.image.clone().unwrap_or_default();
    let waiting_state = |reason: &str, message: Option<String>| ApiState {
        waiting: Some(ContainerStateWaiting {
            reason: Some(reason.to_string()),
            message,
        }),
        ..Default::default()
    };
    let last = |t: Option<&Terminated>| {
        t.map(|t| ApiState {
            terminated: Some(t.to_api()),
            ..Default::default()
        })
    };
    let (state, last_state) = match &slot.current {
        Some(c) => match (&c.state, &c.terminated) {
            (ContainerState::Running { started_at, .. }, None) => (
                ApiState {
                    running: Some(ContainerStateRunning {
                        started_at: Some(time_of(*started_at)),
                    }),
                    ..Default::default()
                },
                last(slot.last.as_ref()),
            ),
            (_, Some(t)) => match &slot.waiting {
                Some((reason, message)) => {
                    (waiting_state(reason, Some(message.clone())), last(Some(t)))
                }
                None => (
                    ApiState {
                        terminated: Some(t.to_api()),
                        ..Default::default()
                    },
                    last(slot.last.as_ref()),
                ),
            },
            _ => (
                waiting_state("ContainerCreating", None),
                last(slot.last.as_ref()),
            ),
        },
        None => match &slot.waiting {
            Some((reason, message)) => (
                waiting_state(reason, Some(message.clone())),
                last(slot.last.as_ref()),
            ),
            None => (
                waiting_state(default_reason, None),
                last(slot.last.as_ref()),
            ),
        },
    };
    let (image, image_id, container_id, restart_count) = match &slot.current {
        Some(c) => (
            c.image.clone(),
            c.image_id.clone(),
            (!c.id.is_empty()).then(|| format!("{CONTAINER_ID_PREFIX}{}", c.id)),
            c.attempt as i32,
        ),
        None => (
            spec_image,
            String::new(),
            None,
            slot.last_attempt.map_or(0, |a| a as i32 + 1),
        ),
    };
    ContainerStatus {
        name: slot.name.clone(),
        state: Some(state),
        last_state: Some(last_state.unwrap_or_default()),
        ready: slot.ready(),
        started: Some(slot.started()),
        restart_count,
        image,
        image_id,
        container_id,
        ..Default::default()
    }
}

/// The last lines of a CRI log file, without the CRI prefixes (FallbackToLogsOnError).
fn log_tail(path: &std::path::Path) -> String {
    let Ok(text) = std::fs::read_to_string(path) else {
        return String::new();
    };
    let mut out = String::new();
    for line in text.lines() {
        // `<time> <stream> <F|P> <content>`
        let mut parts = line.splitn(4, ' ');
        let (_, _, tag, content) = (parts.next(), parts.next(), parts.next(), parts.next());
        out.push_str(content.unwrap_or(""));
        if tag != Some("P") {
            out.push('\n');
        }
    }
    let lines: Vec<&str> = out.lines().collect();
    let start = lines.len().saturating_sub(FALLBACK_LOG_LINES);
    let mut tail = lines[start..].join("\n");
    if !tail.is_empty() {
        tail.push('\n');
    }
    if tail.len() > FALLBACK_LOG_BYTES {
        let mut cut = tail.len() - FALLBACK_LOG_BYTES;
        while !tail.is_char_boundary(cut) {
            cut += 1;
        }
        tail = tail[cut..].to_string();
    }
    tail
}

/// The attempt after the newest `<n>.log` in a container's log directory (0 when none).
pub fn restart_count_by_log_dir(dir: &std::path::Path) -> u32 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let (n, _) = name.split_once(".log")?;
            n.parse::<u32>().ok().map(|n| n + 1)
        })
        .max()
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_tail_strips_cri_prefixes_and_joins_partial_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("0.log");
        std::fs::write(
            &path,
            "2024-01-01T00:00:00.000000001Z stdout F hello\n\
             2024-01-01T00:00:00.000000002Z stderr P par\n\
             2024-01-01T00:00:00.000000003Z stderr F tial line\n",
        )
        .unwrap();
        assert_eq!(log_tail(&path), "hello\npartial line\n");
        let many: String = (0..100)
            .map(|n| format!("2024-01-01T00:00:00Z stdout F line {n}\n"))
            .collect();
        std::fs::write(&path, many).unwrap();
        let tail = log_tail(&path);
        assert_eq!(tail.lines().count(), 80);
        assert!(tail.starts_with("line 20\n"));
    }

    #[test]
    fn restart_count_continues_after_existing_logs() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(restart_count_by_log_dir(&dir.path().join("missing")), 0);
        for name in ["0.log", "3.log", "3.log.1", "notes.txt"] {
            std::fs::write(dir.path().join(name), "").unwrap();
        }
        assert_eq!(restart_count_by_log_dir(dir.path()), 4);
    }

    fn exited(code: i32) -> ContainerState {
        ContainerState::Exited(runtime::container::ExitInfo {
            exit_code: code,
            signal: None,
            reason: String::new(),
            started_at: 1_700_000_000_000_000_000,
            finished_at: 1_700_000_005_000_000_000,
        })
    }

    #[test]
    fn slot_status_shows_crash_loop_with_the_last_termination() {
        let container = Container {
            name: "app".into(),
            image: Some("busybox:1.36".into()),
            ..Default::default()
        };
        let mut slot = Slot::new("app".into(), Kind::App);
        let s = slot_status(&slot, &container, "ContainerCreating");
        assert_eq!(
            s.state
                .as_ref()
                .unwrap()
                .waiting
                .as_ref()
                .unwrap()
                .reason
                .as_deref(),
            Some("ContainerCreating")
        );
        assert_eq!(
            (s.restart_count, s.image.as_str(), s.ready),
            (0, "busybox:1.36", false)
        );
        let state = exited(1);
        slot.current = Some(Instance {
            id: "abc".into(),
            attempt: 2,
            image: "docker.io/library/busybox:1.36".into(),
            image_id: "docker.io/library/busybox@sha256:00".into(),
            terminated: Some(self_terminated("abc", &state)),
            state,
        });
        // Not restarting (Never / OnFailure with 0): terminated.
        let s = slot_status(&slot, &container, "ContainerCreating");
        let t = s.state.as_ref().unwrap().terminated.as_ref().unwrap();
        assert_eq!((t.exit_code, t.reason.as_deref()), (1, Some("Error")));
        assert_eq!(t.container_id.as_deref(), Some("runc://abc"));
        assert_eq!(s.container_id.as_deref(), Some("runc://abc"));
        assert_eq!(s.restart_count, 2);
        // Backing off: waiting CrashLoopBackOff, lastState is this run's end.
        slot.waiting = Some(("CrashLoopBackOff".into(), "back-off 10s".into()));
        let s = slot_status(&slot, &container, "ContainerCreating");
        assert_eq!(
            s.state
                .as_ref()
                .unwrap()
                .waiting
                .as_ref()
                .unwrap()
                .reason
                .as_deref(),
            Some("CrashLoopBackOff")
        );
        assert_eq!(s.last_state.unwrap().terminated.unwrap().exit_code, 1);
    }

    #[test]
    fn a_start_error_waits_with_run_container_error_over_its_termination() {
        let container = Container {
            name: "app".into(),
            image: Some("busybox:1.36".into()),
            ..Default::default()
        };
        let mut slot = Slot::new("app".into(), Kind::App);
        let message = "exec: \"nope\": executable file not found in $PATH".to_string();
        slot.current = Some(start_error(
            1,
            "busybox:1.36".into(),
            String::new(),
            message.clone(),
        ));
        slot.waiting = Some(("RunContainerError".into(), message.clone()));
        assert!(!slot.is_running());
        assert_eq!(slot.exited().map(|t| t.exit_code), Some(128));
        let s = slot_status(&slot, &container, "ContainerCreating");
        let waiting = s.state.as_ref().unwrap().waiting.as_ref().unwrap();
        assert_eq!(waiting.reason.as_deref(), Some("RunContainerError"));
        let last = s.last_state.as_ref().unwrap().terminated.as_ref().unwrap();
        assert_eq!(
            (
                last.exit_code,
                last.reason.as_deref(),
                last.message.as_deref()
            ),
            (128, Some("StartError"), Some(message.as_str()))
        );
        assert_eq!(last.started_at.as_ref().map(|t| t.0.as_second()), Some(0));
        // Nothing on disk to name: no container ID rather than a bare prefix.
        assert_eq!(
            (last.container_id.as_deref(), s.container_id.as_deref()),
            (None, None)
        );
        assert_eq!(s.restart_count, 1);
    }

    #[test]
    fn adopted_containers_keep_their_shown_readiness_for_a_while() {
        let mut slot = Slot::new("app".into(), Kind::App);
        slot.current = Some(Instance {
            id: "abc".into(),
            attempt: 0,
            image: "busybox".into(),
            image_id: String::new(),
            state: ContainerState::Running {
                started_at: 1,
                pid: 1,
            },
            terminated: None,
        });
        assert!(!slot.started() && !slot.ready(), "no probe verdict yet");
        slot.carried = Some((true, true, Instant::now() + Duration::from_secs(60)));
        assert!(slot.started() && slot.ready());
        slot.carried = Some((true, false, Instant::now() + Duration::from_secs(60)));
        assert!(slot.started() && !slot.ready());
        slot.carried = Some((true, true, Instant::now() - Duration::from_secs(1)));
        assert!(!slot.started() && !slot.ready(), "the carried flags expire");
        slot.carried = Some((true, true, Instant::now() + Duration::from_secs(60)));
        slot.current.as_mut().unwrap().state = exited(0);
        assert!(!slot.ready(), "only a running container is ready");
    }

    #[test]
    fn lost_containers_end_as_unknown() {
        let t = self_terminated("x", &ContainerState::Unknown);
        assert_eq!((t.exit_code, t.reason.as_str()), (255, "Unknown"));
        let t = self_terminated("x", &exited(0));
        assert_eq!(t.reason, "Completed");
        assert_eq!(
            time_of(1_700_000_000_900_000_000).0.as_second(),
            1_700_000_000
        );
    }
}
