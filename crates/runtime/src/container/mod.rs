//! Containers: an overlayfs root filesystem on an image's layers, an OCI runtime bundle built
//! from the pod spec, run by `runc` under a per-container shim process (see [`crate::shim`]).
//!
//! Layout under [`RuntimeConfig::root`]:
//! ```text
//! containers/<id>/config.json   the OCI bundle (rootfs is containers/<id>/rootfs, an overlay mount)
//! containers/<id>/upper, work   overlayfs upper and work dirs
//! containers/<id>/meta.json     ContainerMeta: which pod and container this is (survives agent restarts)
//! containers/<id>/exit.json     written by the shim when the container process exits
//! ```
//! Everything here is rebuilt from disk on start: the agent keeps no state of its own.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::images::ImageConfig;

/// Where the runtime keeps its files and what it runs.
#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    /// `<data-dir>/agent/containers`
    pub root: PathBuf,
    /// The `runc` binary.
    pub runc: PathBuf,
    /// `runc --root`: runc's own state (one per agent, so several agents can share a machine).
    pub runc_root: PathBuf,
    /// The executable that runs the shim (`<exe> shim ...`): normally `std::env::current_exe()`.
    pub shim_exe: PathBuf,
    /// Parent cgroup of all pods, e.g. `/kubepods` (`/rkube-<node>/kubepods` for test agents).
    pub cgroup_root: String,
}

/// Which pod and container a runtime container belongs to: recorded beside the bundle so that
/// a restarted agent finds its containers again.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerMeta {
    pub pod_uid: String,
    pub pod_namespace: String,
    pub pod_name: String,
    pub container_name: String,
    /// 0 for the first run, +1 per restart (the restartCount it was started as).
    pub attempt: u32,
    /// The image as the pod spec names it, and the image ID it ran.
    pub image: String,
    pub image_id: String,
    /// Unix nanoseconds.
    pub created_at: i64,
}

/// A bind mount into the container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    pub container_path: String,
    pub host_path: PathBuf,
    pub read_only: bool,
    /// `None`, `HostToContainer` (rslave) or `Bidirectional` (rshared), as mountPropagation says.
    pub propagation: Option<String>,
}

/// Linux namespaces of the pod sandbox that the container joins. `None` = share the host's.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SandboxNamespaces {
    pub network: Option<PathBuf>,
    pub ipc: Option<PathBuf>,
    pub uts: Option<PathBuf>,
    /// With `shareProcessNamespace` (or none: a new PID namespace per container; `hostPID`: the host's).
    pub pid: Option<PathBuf>,
    pub host_pid: bool,
}

/// cgroup limits for one container, already converted from Kubernetes quantities.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Resources {
    /// cpu.shares (v1) / cpu.weight derived from it (v2): from the cpu request, min 2.
    pub cpu_shares: Option<u64>,
    /// cpu.cfs_quota_us from the cpu limit (period 100000).
    pub cpu_quota: Option<i64>,
    pub cpu_period: Option<u64>,
    /// Bytes, from the memory limit.
    pub memory_limit: Option<i64>,
    pub pids_limit: Option<i64>,
}

/// Security settings from the pod's and container's securityContext, merged by the kubelet.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Security {
    pub run_as_user: Option<i64>,
    pub run_as_group: Option<i64>,
    pub supplemental_groups: Vec<i64>,
    pub privileged: bool,
    pub allow_privilege_escalation: Option<bool>,
    pub read_only_root_filesystem: bool,
    /// Capability names as Kubernetes writes them (`NET_ADMIN`, without `CAP_`).
    pub capabilities_add: Vec<String>,
    pub capabilities_drop: Vec<String>,
    /// `RuntimeDefault` (the default), `Unconfined`, or `Localhost/<path>`.
    pub seccomp: Option<String>,
}

/// Everything needed to create one container. Built by the kubelet from the pod spec.
#[derive(Debug, Clone, Default)]
pub struct ContainerSpec {
    pub meta: ContainerMeta,
    /// Image layer directories, base layer first (from [`crate::images::ImageStore::rootfs_layers`]).
    pub layers: Vec<PathBuf>,
    pub image_config: ImageConfig,
    /// The container's `command` and `args` from the pod spec (resolution against the image's
    /// Entrypoint/Cmd is done by [`resolve_process_args`]).
    pub command: Vec<String>,
    pub args: Vec<String>,
    /// Environment from the pod spec, resolved; appended after (and overriding) the image's.
    pub env: Vec<(String, String)>,
    pub working_dir: Option<String>,
    pub mounts: Vec<Mount>,
    pub namespaces: SandboxNamespaces,
    pub hostname: String,
    /// Namespaced sysctls from the pod's securityContext.
    pub sysctls: BTreeMap<String, String>,
    pub resources: Resources,
    pub security: Security,
    /// The pod's cgroup (e.g. `/kubepods/besteffort/pod<uid>`); the container's is `<that>/<id>`.
    pub cgroup_parent: String,
    pub tty: bool,
    pub stdin: bool,
    pub stdin_once: bool,
    /// The container's log file (CRI format), e.g. `<log-root>/<ns>_<pod>_<uid>/<name>/<attempt>.log`.
    pub log_path: PathBuf,
    /// Rotate the log file at this size (bytes); keep one rotated file.
    pub log_max_size: u64,
    /// Signal sent on stop (the image's StopSignal, else SIGTERM).
    pub stop_signal: Option<String>,
}

/// The process a container runs: the pod spec's command/args against the image's
/// Entrypoint/Cmd, as upstream resolves them.
pub fn resolve_process_args(
    command: &[String],
    args: &[String],
    image: &ImageConfig,
) -> Vec<String> {
    let _ = (command, args, image);
    todo!("runtime helper: resolve command/args against entrypoint/cmd")
}

/// What a container is doing now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ContainerState {
    /// Created but not started.
    Created,
    /// Running since this time (unix nanoseconds), with this pid.
    Running { started_at: i64, pid: u32 },
    Exited(ExitInfo),
    /// The runtime lost track of it (e.g. its process vanished without an exit record).
    Unknown,
}

/// How a container ended, as the shim recorded it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExitInfo {
    pub exit_code: i32,
    /// Set when a signal killed it (exit_code is then 128 + signal).
    pub signal: Option<i32>,
    /// `OOMKilled` when the memory limit killed it, `Error` for a non-zero exit, `Completed` for 0.
    pub reason: String,
    pub started_at: i64,
    pub finished_at: i64,
}

/// A container the runtime knows about (from its state dir).
#[derive(Debug, Clone)]
pub struct ContainerInfo {
    pub id: String,
    pub meta: ContainerMeta,
    pub state: ContainerState,
    pub log_path: PathBuf,
}

/// An exec'd process (kubectl exec, exec probes, exec hooks).
#[derive(Debug, Clone, Default)]
pub struct ExecSpec {
    pub command: Vec<String>,
    pub tty: bool,
    pub stdin: bool,
    pub stdout: bool,
    pub stderr: bool,
}

/// A running exec. With `tty`, output comes through `stdout` only and `resize` works.
pub struct ExecProcess {
    pub stdin: Option<Box<dyn tokio::io::AsyncWrite + Send + Unpin>>,
    pub stdout: Option<Box<dyn tokio::io::AsyncRead + Send + Unpin>>,
    pub stderr: Option<Box<dyn tokio::io::AsyncRead + Send + Unpin>>,
    /// Resolves to the exit code when the process ends.
    pub exit: tokio::sync::oneshot::Receiver<i32>,
    /// Send (columns, rows) to resize the TTY.
    pub resize: Option<tokio::sync::mpsc::UnboundedSender<(u16, u16)>>,
}

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("container {id}: not found")]
    NotFound { id: String },
    /// The bundle could not be built from the spec (bad user, missing mount source, ...):
    /// the kubelet reports CreateContainerError.
    #[error("creating container {name}: {message}")]
    Create { name: String, message: String },
    /// runc refused to start it (bad command, ...): RunContainerError.
    #[error("starting container {name}: {message}")]
    Start { name: String, message: String },
    #[error("runc {command} {id}: {message}")]
    Runc {
        command: String,
        id: String,
        message: String,
    },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

pub type Result<T, E = RuntimeError> = std::result::Result<T, E>;

/// The node's container runtime. Cheap to clone (shares its config).
#[derive(Debug, Clone)]
pub struct ContainerRuntime {
    config: std::sync::Arc<RuntimeConfig>,
}

impl ContainerRuntime {
    /// Prepare the directories; does not touch existing containers.
    pub fn new(config: RuntimeConfig) -> Result<ContainerRuntime> {
        Ok(ContainerRuntime {
            config: std::sync::Arc::new(config),
        })
    }

    pub fn config(&self) -> &RuntimeConfig {
        &self.config
    }

    /// Build the rootfs and bundle, start the shim, which creates and starts the container with
    /// runc. Returns the new container's ID once it runs (or an error if it could not start).
    pub async fn run_container(&self, spec: &ContainerSpec) -> Result<String> {
        let _ = spec;
        todo!("runtime helper")
    }

    /// Every container in the state dir, with its current state.
    pub async fn list_containers(&self) -> Result<Vec<ContainerInfo>> {
        todo!("runtime helper")
    }

    pub async fn container_state(&self, id: &str) -> Result<ContainerState> {
        let _ = id;
        todo!("runtime helper")
    }

    /// Send the stop signal, wait up to `grace`, then SIGKILL; returns once the process is gone.
    pub async fn stop_container(&self, id: &str, grace: Duration) -> Result<()> {
        let _ = (id, grace);
        todo!("runtime helper")
    }

    /// Delete a stopped container: runc state, overlay mount, bundle dir (its log file stays until
    /// the pod is removed).
    pub async fn remove_container(&self, id: &str) -> Result<()> {
        let _ = id;
        todo!("runtime helper")
    }

    /// Run a command inside a running container (`runc exec`).
    pub async fn exec(&self, id: &str, spec: &ExecSpec) -> Result<ExecProcess> {
        let _ = (id, spec);
        todo!("runtime helper")
    }

    /// Run a command to completion inside a container, with a timeout: (exit code, combined
    /// output, truncated to 10 KiB). For exec probes and hooks.
    pub async fn exec_sync(
        &self,
        id: &str,
        command: &[String],
        timeout: Duration,
    ) -> Result<(i32, Vec<u8>)> {
        let _ = (id, command, timeout);
        todo!("runtime helper")
    }
}
