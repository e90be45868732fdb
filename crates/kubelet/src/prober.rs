//! Probes (liveness, readiness, startup: exec, httpGet, tcpSocket, grpc) and lifecycle hooks
//! (postStart, preStop: exec, httpGet, sleep).

use std::net::IpAddr;
use std::path::PathBuf;

use k8s_openapi::api::core::v1::{Container, LifecycleHandler, Pod, Probe};
use runtime::container::ContainerRuntime;

/// What a probe or hook runs against.
#[derive(Clone)]
pub struct ProbeTarget {
    pub runtime: ContainerRuntime,
    pub container_id: String,
    pub pod_ip: Option<IpAddr>,
    /// The pod's network namespace (None with hostNetwork): httpGet/tcpSocket/grpc probes
    /// connect from inside it to `pod_ip` or localhost.
    pub netns: Option<PathBuf>,
    pub pod: Pod,
    /// The container's spec (for named ports).
    pub container: Container,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProbeResult {
    Success,
    /// Why it failed, as the Unhealthy event's message says it.
    Failure(String),
}

/// Run a probe once.
pub async fn probe_once(probe: &Probe, target: &ProbeTarget) -> ProbeResult {
    let _ = (probe, target);
    todo!("prober helper")
}

/// Run a lifecycle hook to completion. Err carries the message of the FailedPostStartHook /
/// FailedPreStopHook event.
pub async fn run_handler(handler: &LifecycleHandler, target: &ProbeTarget) -> Result<(), String> {
    let _ = (handler, target);
    todo!("prober helper")
}

/// The probe workers of one running container. Dropping it stops them.
pub struct ContainerProbes {
    /// The readiness probe's verdict (true at once when the container has no readiness
    /// probe, false until it first passes when it has one; readiness waits for startup).
    pub ready: tokio::sync::watch::Receiver<bool>,
    /// The startup probe has passed (true at once without one).
    pub started: tokio::sync::watch::Receiver<bool>,
    /// Counts how often the liveness probe (or the startup probe) reached its
    /// failureThreshold: each increment means "kill and restart this container".
    pub failures: tokio::sync::watch::Receiver<u64>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl ContainerProbes {
    /// Start the container's liveness, readiness and startup probe workers (initialDelaySeconds,
    /// periodSeconds, timeoutSeconds, successThreshold, failureThreshold as upstream), recording
    /// Unhealthy events (`Liveness probe failed: ...`).
    pub fn start(target: ProbeTarget, events: crate::events::EventRecorder) -> ContainerProbes {
        let _ = (target, events);
        todo!("prober helper")
    }
}

impl Drop for ContainerProbes {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}
