//! Probes (liveness, readiness, startup: exec, httpGet, tcpSocket, grpc) and lifecycle hooks
//! (postStart, preStop: exec, httpGet, sleep).
//!
//! - [`probe_once`]: one probe attempt, as upstream's `pkg/probe/{exec,http,tcp,grpc}`.
//! - [`ContainerProbes`] (`worker.rs`): the periodic workers of one container, with the
//!   thresholds, the startup gate and the Unhealthy events of upstream's prober worker.
//! - [`run_handler`] (`hooks.rs`): postStart/preStop handlers.
//!
//! Network probes connect from the agent's own network namespace to the pod IP, which the node
//! reaches through the pod bridge (hostNetwork pods: the node's address), so no probe needs to
//! enter the pod's namespace.

mod exec;
mod grpc;
mod hooks;
mod http;
mod tcp;
mod worker;

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, LifecycleHandler, Pod, Probe};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use runtime::container::ContainerRuntime;

pub use worker::ContainerProbes;

/// The User-Agent of probes, as upstream's `kube-probe/<major>.<minor>`.
const PROBE_USER_AGENT: &str = "kube-probe/1.33";
/// The User-Agent of httpGet lifecycle hooks.
const LIFECYCLE_USER_AGENT: &str = "kube-lifecycle/1.33";
/// timeoutSeconds when unset (or not positive).
const DEFAULT_TIMEOUT_SECONDS: i32 = 1;

/// What a probe or hook runs against.
#[derive(Clone)]
pub struct ProbeTarget {
    pub runtime: ContainerRuntime,
    pub container_id: String,
    /// Where httpGet (without `host`), tcpSocket (without `host`) and grpc probes connect.
    /// With hostNetwork and no IP, the node itself (127.0.0.1).
    pub pod_ip: Option<IpAddr>,
    /// The pod's network namespace (None with hostNetwork). Probes do not enter it: they reach
    /// `pod_ip` through the node's pod bridge.
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

/// The result of one probe attempt with upstream's four outcomes; [`ProbeResult`] folds them
/// into two.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// Passed; the output (response body, command output) is kept for logs only.
    Success(String),
    /// Passed, with a ProbeWarning event (an httpGet redirect to another host that was not
    /// followed).
    Warning(String),
    Failure(String),
    /// The probe could not be run (unknown named port, the runtime failed to exec): upstream
    /// records the error and discards the result, so it counts neither way.
    Error(String),
}

impl Outcome {
    fn into_result(self) -> ProbeResult {
        match self {
            Outcome::Success(_) | Outcome::Warning(_) => ProbeResult::Success,
            Outcome::Failure(message) | Outcome::Error(message) => ProbeResult::Failure(message),
        }
    }
}

/// Run a probe once.
pub async fn probe_once(probe: &Probe, target: &ProbeTarget) -> ProbeResult {
    run_probe(probe, target).await.into_result()
}

/// Run a lifecycle hook to completion. Err carries the message of the FailedPostStartHook /
/// FailedPreStopHook event.
pub async fn run_handler(handler: &LifecycleHandler, target: &ProbeTarget) -> Result<(), String> {
    hooks::run(handler, target).await
}

/// One probe attempt, bounded by the probe's timeoutSeconds.
pub(crate) async fn run_probe(probe: &Probe, target: &ProbeTarget) -> Outcome {
    let timeout = probe_timeout(probe);
    if let Some(action) = &probe.exec {
        let command = exec::expand_command(
            action.command.as_deref().unwrap_or_default(),
            &target.container,
        );
        return exec::probe(target, &command, timeout).await;
    }
    if let Some(action) = &probe.http_get {
        let request = match http::Request::for_action(action, target, PROBE_USER_AGENT) {
            Ok(request) => request,
            Err(message) => return Outcome::Error(message),
        };
        return http::probe(request, timeout).await;
    }
    if let Some(action) = &probe.tcp_socket {
        let host = match action.host.as_deref().filter(|h| !h.is_empty()) {
            Some(host) => host.to_string(),
            None => match target_host(target) {
                Ok(host) => host,
                Err(message) => return Outcome::Error(message),
            },
        };
        let port = match resolve_port(&action.port, &target.container) {
            Ok(port) => port,
            Err(message) => return Outcome::Error(message),
        };
        return tcp::probe(&host, port, timeout).await;
    }
    if let Some(action) = &probe.grpc {
        let host = match target_host(target) {
            Ok(host) => host,
            Err(message) => return Outcome::Error(message),
        };
        let Some(port) = u16::try_from(action.port).ok().filter(|p| *p > 0) else {
            return Outcome::Error(format!("invalid port number: {}", action.port));
        };
        return grpc::probe(
            &host,
            port,
            action.service.as_deref().unwrap_or_default(),
            timeout,
        )
        .await;
    }
    Outcome::Error("probe has no handler (exec, httpGet, tcpSocket or grpc)".to_string())
}

fn probe_timeout(probe: &Probe) -> Duration {
    let seconds = probe
        .timeout_seconds
        .filter(|s| *s > 0)
        .unwrap_or(DEFAULT_TIMEOUT_SECONDS);
    Duration::from_secs(seconds as u64)
}

/// The address network probes connect to when their action names no host: the pod IP; for a
/// hostNetwork pod without one, the node itself.
fn target_host(target: &ProbeTarget) -> Result<String, String> {
    if let Some(ip) = target.pod_ip {
        return Ok(ip.to_string());
    }
    let host_network = target
        .pod
        .spec
        .as_ref()
        .and_then(|s| s.host_network)
        .unwrap_or(false);
    if host_network {
        return Ok("127.0.0.1".to_string());
    }
    Err(format!(
        "pod {}/{} has no IP address to probe container {:?}",
        target.pod.metadata.namespace.as_deref().unwrap_or_default(),
        target.pod.metadata.name.as_deref().unwrap_or_default(),
        target.container.name
    ))
}

/// A probe's or hook's port: a number, or the name of one of the container's ports (a numeric
/// string is accepted too, as upstream's last resort).
fn resolve_port(port: &IntOrString, container: &Container) -> Result<u16, String> {
    let number = match port {
        IntOrString::Int(n) => i64::from(*n),
        IntOrString::String(name) => {
            let named = container
                .ports
                .iter()
                .flatten()
                .find(|p| p.name.as_deref() == Some(name.as_str()))
                .map(|p| i64::from(p.container_port));
            match named {
                Some(n) => n,
                None => name.parse::<i64>().map_err(|_| {
                    format!("port {name:?} not found in container {:?}", container.name)
                })?,
            }
        }
    };
    u16::try_from(number)
        .ok()
        .filter(|p| *p > 0)
        .ok_or_else(|| format!("invalid port number: {number}"))
}

/// `host:port`, with brackets around an IPv6 address (Go's `net.JoinHostPort`).
fn join_host_port(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// A duration as Go prints it (`1s`, `1m30s`), for messages that quote upstream's.
fn go_duration(d: Duration) -> String {
    let total = d.as_secs();
    let millis = d.subsec_millis();
    if total == 0 {
        return format!("{millis}ms");
    }
    // Probe timeouts are whole seconds: sub-second parts are not shown.
    let (h, m, s) = (total / 3600, (total % 3600) / 60, total % 60);
    let seconds = format!("{s}s");
    match (h, m) {
        (0, 0) => seconds,
        (0, m) => format!("{m}m{seconds}"),
        (h, m) => format!("{h}h{m}m{seconds}"),
    }
}

/// An I/O error as Go's net package words it (`connect: connection refused`), so that probe
/// messages read as upstream's.
fn describe_io_error(e: &std::io::Error) -> String {
    use std::io::ErrorKind;
    match e.kind() {
        ErrorKind::ConnectionRefused => "connect: connection refused".to_string(),
        ErrorKind::ConnectionReset => "read: connection reset by peer".to_string(),
        ErrorKind::HostUnreachable => "connect: no route to host".to_string(),
        ErrorKind::NetworkUnreachable => "connect: network is unreachable".to_string(),
        ErrorKind::TimedOut => "i/o timeout".to_string(),
        _ => {
            let text = e.to_string();
            // Drop Rust's " (os error N)" suffix and lower the first letter.
            let text = match text.find(" (os error") {
                Some(i) => text[..i].to_string(),
                None => text,
            };
            let mut chars = text.chars();
            match chars.next() {
                Some(first) => first.to_lowercase().chain(chars).collect(),
                None => text,
            }
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{ContainerPort, PodSpec};

    /// A target for network probes against 127.0.0.1 (the runtime is never used by them).
    pub(crate) fn target(container: Container) -> (ProbeTarget, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let runtime = ContainerRuntime::new(runtime::container::RuntimeConfig {
            root: dir.path().join("containers"),
            runc: "/usr/sbin/runc".into(),
            runc_root: dir.path().join("runc"),
            shim_exe: "/bin/false".into(),
            cgroup_root: "/rkube-test/kubepods".into(),
        })
        .unwrap();
        let pod = Pod {
            metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
                name: Some("web".into()),
                namespace: Some("default".into()),
                uid: Some("uid-1".into()),
                ..Default::default()
            },
            spec: Some(PodSpec {
                containers: vec![container.clone()],
                ..Default::default()
            }),
            ..Default::default()
        };
        let target = ProbeTarget {
            runtime,
            container_id: "c1".into(),
            pod_ip: Some("127.0.0.1".parse().unwrap()),
            netns: None,
            pod,
            container,
        };
        (target, dir)
    }

    pub(crate) fn container_with_port(name: &str, port: i32) -> Container {
        Container {
            name: "app".into(),
            ports: Some(vec![ContainerPort {
                name: Some(name.into()),
                container_port: port,
                ..Default::default()
            }]),
            ..Default::default()
        }
    }

    #[test]
    fn ports_resolve_by_number_name_or_numeric_string() {
        let c = container_with_port("http", 8080);
        assert_eq!(resolve_port(&IntOrString::Int(81), &c), Ok(81));
        assert_eq!(
            resolve_port(&IntOrString::String("http".into()), &c),
            Ok(8080)
        );
        assert_eq!(
            resolve_port(&IntOrString::String("9090".into()), &c),
            Ok(9090)
        );
        let missing = resolve_port(&IntOrString::String("grpc".into()), &c).unwrap_err();
        assert!(missing.contains("\"grpc\" not found"), "{missing}");
        assert_eq!(
            resolve_port(&IntOrString::Int(70000), &c),
            Err("invalid port number: 70000".to_string())
        );
        assert!(resolve_port(&IntOrString::Int(0), &c).is_err());
    }

    #[test]
    fn no_pod_ip_is_an_error_unless_host_network() {
        let (mut t, _dir) = target(Container::default());
        t.pod_ip = None;
        let err = target_host(&t).unwrap_err();
        assert!(err.contains("default/web has no IP"), "{err}");
        t.pod.spec.as_mut().unwrap().host_network = Some(true);
        assert_eq!(target_host(&t).unwrap(), "127.0.0.1");
    }

    #[tokio::test]
    async fn no_pod_ip_fails_a_network_probe_with_a_clear_message() {
        let (mut t, _dir) = target(Container::default());
        t.pod_ip = None;
        let probe = Probe {
            tcp_socket: Some(k8s_openapi::api::core::v1::TCPSocketAction {
                port: IntOrString::Int(80),
                host: None,
            }),
            ..Default::default()
        };
        match probe_once(&probe, &t).await {
            ProbeResult::Failure(m) => assert!(m.contains("has no IP address"), "{m}"),
            other => panic!("expected a failure, got {other:?}"),
        }
    }

    #[test]
    fn go_style_formatting() {
        assert_eq!(join_host_port("10.0.0.1", 80), "10.0.0.1:80");
        assert_eq!(join_host_port("::1", 80), "[::1]:80");
        assert_eq!(go_duration(Duration::from_secs(1)), "1s");
        assert_eq!(go_duration(Duration::from_secs(90)), "1m30s");
        assert_eq!(go_duration(Duration::from_millis(500)), "500ms");
        let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        assert_eq!(describe_io_error(&refused), "connect: connection refused");
    }
}
