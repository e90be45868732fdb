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
