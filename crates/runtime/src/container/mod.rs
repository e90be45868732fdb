//! Containers: an overlayfs root filesystem on an image's layers, an OCI runtime bundle built
//! from the pod spec, run by `runc` under a per-container shim process (see [`crate::shim`]).
//!
//! Layout under [`RuntimeConfig::root`]:
//! ```text
//! containers/<id>/config.json   the OCI bundle (rootfs is containers/<id>/rootfs, an overlay mount)
//! containers/<id>/upper, work   overlayfs upper and work dirs
//! containers/<id>/meta.json     ContainerMeta: which pod and container this is (survives agent restarts)
//! containers/<id>/exit.json     written by the shim when the container process exits
//! containers/<id>/started.json  written by the shim once the container runs (pids, start time)
//! containers/<id>/stdin         FIFO of the container's stdin (with `stdin: true`)
//! ```
//! Everything here is rebuilt from disk on start: the agent keeps no state of its own.

mod bundle;
mod exec;
mod rootfs;
mod runc;
mod seccomp;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
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
/// Entrypoint/Cmd, as upstream resolves them: `command` replaces the Entrypoint and drops the
/// Cmd; `args` alone replace the Cmd; neither runs Entrypoint + Cmd.
pub fn resolve_process_args(
    command: &[String],
    args: &[String],
    image: &ImageConfig,
) -> Vec<String> {
    if !command.is_empty() {
        return command.iter().chain(args).cloned().collect();
    }
    let args = if args.is_empty() { &image.cmd } else { args };
    // An image may reset its Entrypoint with [""]: that means none.
    let entrypoint: &[String] = if image.entrypoint.len() == 1 && image.entrypoint[0].is_empty() {
        &[]
    } else {
        &image.entrypoint
    };
    entrypoint.iter().chain(args).cloned().collect()
}

/// What a container is doing now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ContainerState {
    /// Created but not started.
    Created,
    /// Running since this time (unix nanoseconds), with this pid.
    Running {
        started_at: i64,
        pid: u32,
    },
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

const META_FILE: &str = "meta.json";

/// `meta.json`: the container's [`ContainerMeta`] and what the runtime needs after a restart.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct MetaFile {
    #[serde(flatten)]
    meta: ContainerMeta,
    log_path: PathBuf,
    #[serde(default)]
    stop_signal: Option<String>,
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> RuntimeError + '_ {
    move |source| RuntimeError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// A new container ID: 64 hex digits, like containerd's.
fn new_id() -> Result<String> {
    use std::io::Read;
    let mut bytes = [0u8; 32];
    let path = Path::new("/dev/urandom");
    std::fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut bytes))
        .map_err(io_error(path))?;
    Ok(hex::encode(bytes))
}

/// A container directory's name must be an ID we made: no path tricks through the API.
fn valid_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 64 && id.bytes().all(|b| b.is_ascii_alphanumeric())
}

/// The node's container runtime. Cheap to clone (shares its config).
#[derive(Debug, Clone)]
pub struct ContainerRuntime {
    config: std::sync::Arc<RuntimeConfig>,
}

impl ContainerRuntime {
    /// Prepare the directories; does not touch existing containers.
    pub fn new(mut config: RuntimeConfig) -> Result<ContainerRuntime> {
        for dir in [&mut config.root, &mut config.runc_root] {
            std::fs::create_dir_all(&*dir).map_err(io_error(dir))?;
            // The shim and runc run elsewhere: paths must not depend on our cwd.
            *dir = std::path::absolute(&*dir).map_err(io_error(dir))?;
        }
        Ok(ContainerRuntime {
            config: std::sync::Arc::new(config),
        })
    }

    pub fn config(&self) -> &RuntimeConfig {
        &self.config
    }

    fn dir(&self, id: &str) -> Result<PathBuf> {
        if !valid_id(id) {
            return Err(RuntimeError::NotFound { id: id.to_string() });
        }
        Ok(self.config.root.join(id))
    }

    fn existing_dir(&self, id: &str) -> Result<PathBuf> {
        let dir = self.dir(id)?;
        if !dir.join(META_FILE).exists() {
            return Err(RuntimeError::NotFound { id: id.to_string() });
        }
        Ok(dir)
    }

    /// The FIFO that feeds the container's stdin (only for containers created with `stdin`).
    pub fn stdin_path(&self, id: &str) -> Result<PathBuf> {
        Ok(self.existing_dir(id)?.join(crate::shim::STDIN_FIFO))
    }

    /// Build the rootfs and bundle, start the shim, which creates and starts the container with
    /// runc. Returns the new container's ID once it runs (or an error if it could not start).
    pub async fn run_container(&self, spec: &ContainerSpec) -> Result<String> {
        let id = new_id()?;
        let dir = self.config.root.join(&id);
        let name = spec.meta.container_name.clone();
        let prepared = {
            let (dir, id, spec, config) =
                (dir.clone(), id.clone(), spec.clone(), self.config.clone());
            tokio::task::spawn_blocking(move || prepare_bundle(&dir, &id, &spec, &config)).await
        };
        let prepared = prepared.unwrap_or_else(|e| Err(format!("preparing the bundle: {e}")));
        if let Err(message) = prepared {
            let _ = self.remove_container(&id).await;
            return Err(RuntimeError::Create { name, message });
        }
        match self.start_shim(&id, &dir, spec).await {
            Ok(()) => Ok(id),
            Err(message) => {
                let _ = self.remove_container(&id).await;
                Err(RuntimeError::Start { name, message })
            }
        }
    }

    /// Runs the shim and waits for its word on whether the container started.
    async fn start_shim(
        &self,
        id: &str,
        dir: &Path,
        spec: &ContainerSpec,
    ) -> std::result::Result<(), String> {
        use tokio::io::AsyncReadExt;
        let c = &self.config;
        let shim_log = dir.join("shim.log");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&shim_log)
            .map_err(|e| format!("opening {}: {e}", shim_log.display()))?;
        let mut cmd = tokio::process::Command::new(&c.shim_exe);
        // Detached at once: no intermediate shim process to execute (the shim calls setsid;
        // tokio reaps it whenever it exits, after we let go of it below).
        cmd.arg("shim")
            .arg("--id")
            .arg(id)
            .arg("--bundle")
            .arg(dir)
            .arg("--runc")
            .arg(&c.runc)
            .arg("--runc-root")
            .arg(&c.runc_root)
            .arg("--log-path")
            .arg(std::path::absolute(&spec.log_path).unwrap_or(spec.log_path.clone()))
            .arg("--log-max-size")
            .arg(spec.log_max_size.to_string())
            .arg("--detached")
            .current_dir(dir)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::from(log));
        if spec.stdin {
            cmd.arg("--stdin");
        }
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("starting shim {}: {e}", c.shim_exe.display()))?;
        let mut out = Vec::new();
        if let Some(mut stdout) = child.stdout.take() {
            // EOF once the shim reported and let go of the pipe.
            let read = stdout.read_to_end(&mut out);
            if tokio::time::timeout(Duration::from_secs(120), read)
                .await
                .is_err()
            {
                return Err("the shim did not report within 120s".to_string());
            }
        }
        // The shim lives as long as its container: not waited for here (dropping the handle
        // neither kills it nor leaves a zombie: tokio reaps it in the background).
        drop(child);
        let line = String::from_utf8_lossy(&out);
        match serde_json::from_str::<crate::shim::StartStatus>(line.trim()) {
            Ok(crate::shim::StartStatus::Started(_)) => Ok(()),
            Ok(crate::shim::StartStatus::Failed(message)) => Err(message),
            Err(_) => {
                let log = std::fs::read_to_string(dir.join("shim.log")).unwrap_or_default();
                Err(format!("the shim exited without a status: {}", log.trim()))
            }
        }
    }

    /// Every container in the state dir, with its current state.
    pub async fn list_containers(&self) -> Result<Vec<ContainerInfo>> {
        let root = &self.config.root;
        let entries = std::fs::read_dir(root).map_err(io_error(root))?;
        let mut out = Vec::new();
        for entry in entries.flatten() {
            let id = entry.file_name().to_string_lossy().to_string();
            if !valid_id(&id) {
                continue;
            }
            let Ok(meta) = read_meta(&entry.path()) else {
                continue;
            };
            let state = self.state_of(&id, &entry.path()).await;
            out.push(ContainerInfo {
                id,
                meta: meta.meta,
                state,
                log_path: meta.log_path,
            });
        }
        out.sort_by_key(|c| c.meta.created_at);
        Ok(out)
    }

    pub async fn container_state(&self, id: &str) -> Result<ContainerState> {
        let dir = self.existing_dir(id)?;
        Ok(self.state_of(id, &dir).await)
    }

    /// Returns once the container's process has exited, or at once if it has no running
    /// process: callers learn of an exit as it happens rather than by polling
    /// [`ContainerRuntime::container_state`] (which then waits for the shim's exit record).
    /// Waits on a pidfd; polls /proc once a second only where pidfds are unavailable.
    pub async fn wait_exit(&self, id: &str) -> Result<()> {
        let dir = self.existing_dir(id)?;
        if read_exit(&dir).is_some() {
            return Ok(());
        }
        let Some(started) = read_started(&dir) else {
            return Ok(());
        };
        let alive = || crate::shim::process_alive(started.pid, started.pid_start);
        let pidfd = rustix::process::Pid::from_raw(started.pid as i32).and_then(|pid| {
            rustix::process::pidfd_open(pid, rustix::process::PidfdFlags::NONBLOCK).ok()
        });
        // Checked after opening: the pidfd is then known to be the container's process.
        if !alive() {
            return Ok(());
        }
        // SAFETY: the AsyncFd owns the OwnedFd, so the descriptor stays open and the same for
        // the AsyncFd's whole life (tokio's requirement for registering it).
        #[allow(unsafe_code)]
        let registered = pidfd.and_then(|pidfd| {
            unsafe {
                tokio::io::unix::AsyncFd::register_with_interest(
                    pidfd,
                    tokio::io::Interest::READABLE,
                )
            }
            .ok()
        });
        if let Some(fd) = registered {
            // Readable once the process has exited.
            let _ = fd.readable().await;
            return Ok(());
        }
        while alive() {
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        Ok(())
    }

    /// From the shim's records: exit.json wins; started.json with a live process is Running.
    /// /proc is read rather than `runc state` (a Go process per call) for each container on
    /// every sync; runc is asked only about containers not started yet.
    async fn state_of(&self, id: &str, dir: &Path) -> ContainerState {
        if let Some(exit) = read_exit(dir) {
            return ContainerState::Exited(exit);
        }
        let Some(started) = read_started(dir) else {
            return match runc::state(&self.config, id).await.as_deref() {
                Ok("created") | Ok("running") => ContainerState::Created,
                _ if recently_created(dir) => ContainerState::Created,
                _ => ContainerState::Unknown,
            };
        };
        if crate::shim::process_alive(started.pid, started.pid_start) {
            return ContainerState::Running {
                started_at: started.started_at,
                pid: started.pid,
            };
        }
        // The process is gone: a live shim is about to write the exit record.
        if crate::shim::process_alive(started.shim_pid, started.shim_start) {
            for _ in 0..100 {
                tokio::time::sleep(Duration::from_millis(20)).await;
                if let Some(exit) = read_exit(dir) {
                    return ContainerState::Exited(exit);
                }
                if !crate::shim::process_alive(started.shim_pid, started.shim_start) {
                    break;
                }
            }
        }
        read_exit(dir).map_or(ContainerState::Unknown, ContainerState::Exited)
    }

    /// Send the stop signal, wait up to `grace`, then SIGKILL; returns once the process is gone.
    pub async fn stop_container(&self, id: &str, grace: Duration) -> Result<()> {
        let dir = self.existing_dir(id)?;
        let meta = read_meta(&dir)?;
        let started = read_started(&dir);
        let running = match self.state_of(id, &dir).await {
            ContainerState::Running { .. } | ContainerState::Created => true,
            ContainerState::Exited(_) => false,
            // Lost track: make sure, but do not wait for a record nobody will write.
            ContainerState::Unknown => {
                let _ = runc::kill(&self.config, id, "KILL").await;
                false
            }
        };
        if !running {
            return Ok(());
        }
        let signal = meta
            .stop_signal
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "SIGTERM".to_string());
        let gone = |dir: &Path| {
            read_exit(dir).is_some()
                || started
                    .as_ref()
                    .is_some_and(|s| !crate::shim::process_alive(s.shim_pid, s.shim_start))
        };
        if !grace.is_zero() {
            let _ = runc::kill(&self.config, id, &signal).await;
            let pid = started.as_ref().map(|s| s.pid);
            let deadline = if pid.is_some_and(|pid| signal_dropped_by_init(pid, &signal)) {
                // The kernel drops a signal that the init of a PID namespace has no handler for
                // (a shell or httpd as PID 1): nothing in the container saw it, and waiting out
                // the grace period would only delay the same SIGKILL.
                tracing::debug!(%id, %signal, "the container's init cannot receive the stop signal; killing it now");
                tokio::time::Instant::now()
            } else {
                tokio::time::Instant::now() + grace
            };
            while tokio::time::Instant::now() < deadline {
                if gone(&dir) {
                    return Ok(());
                }
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
        }
        let killed = runc::kill(&self.config, id, "KILL").await;
        if killed.is_err()
            && let Some(s) = &started
            && crate::shim::process_alive(s.pid, s.pid_start)
            && let Some(pid) = rustix::process::Pid::from_raw(s.pid as i32)
        {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
        }
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while tokio::time::Instant::now() < deadline {
            if gone(&dir) {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        Err(RuntimeError::Runc {
            command: "kill".to_string(),
            id: id.to_string(),
            message: "the container did not exit 10s after SIGKILL".to_string(),
        })
    }

    /// Delete a stopped container: runc state, overlay mount, bundle dir (its log file stays until
    /// the pod is removed).
    pub async fn remove_container(&self, id: &str) -> Result<()> {
        let dir = self.dir(id)?;
        if !dir.exists() {
            return Ok(());
        }
        let _ = runc::delete_force(&self.config, id).await;
        // A shim still running will record the exit and run runc delete itself: let it finish
        // before its files go.
        if let Some(s) = read_started(&dir) {
            for _ in 0..250 {
                if !crate::shim::process_alive(s.shim_pid, s.shim_start) {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        let d = dir.clone();
        tokio::task::spawn_blocking(move || -> Result<()> {
            rootfs::unmount(&d).map_err(io_error(&d.join("rootfs")))?;
            if rootfs::is_mounted(&d.join("rootfs")) {
                return Err(RuntimeError::Io {
                    path: d.join("rootfs"),
                    source: std::io::Error::other("still mounted"),
                });
            }
            match std::fs::remove_dir_all(&d) {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                Err(e) => Err(io_error(&d)(e)),
            }
        })
        .await
        .map_err(|e| RuntimeError::Io {
            path: dir.clone(),
            source: std::io::Error::other(e.to_string()),
        })?
    }

    /// Run a command inside a running container (`runc exec`).
    pub async fn exec(&self, id: &str, spec: &ExecSpec) -> Result<ExecProcess> {
        let dir = self.existing_dir(id)?;
        exec::exec(&self.config, id, &dir, spec).await
    }

    /// Run a command to completion inside a container, with a timeout: (exit code, combined
    /// output, truncated to 10 KiB). For exec probes and hooks.
    pub async fn exec_sync(
        &self,
        id: &str,
        command: &[String],
        timeout: Duration,
    ) -> Result<(i32, Vec<u8>)> {
        let dir = self.existing_dir(id)?;
        exec::exec_sync(&self.config, id, &dir, command, timeout).await
    }
}

/// Rootfs, config.json and meta.json of a new container (blocking: mounts and file writes).
fn prepare_bundle(
    dir: &Path,
    id: &str,
    spec: &ContainerSpec,
    config: &RuntimeConfig,
) -> std::result::Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    let meta = MetaFile {
        meta: spec.meta.clone(),
        log_path: spec.log_path.clone(),
        stop_signal: spec.stop_signal.clone(),
    };
    let json = serde_json::to_vec_pretty(&meta).map_err(|e| format!("encoding meta: {e}"))?;
    crate::shim::write_atomic(&dir.join(META_FILE), &json).map_err(|e| format!("{e:#}"))?;
    let rootfs =
        rootfs::mount(dir, &spec.layers).map_err(|e| format!("mounting the rootfs: {e}"))?;
    let oci = bundle::build_spec(id, spec, &rootfs, &config.cgroup_root)?;
    let json = serde_json::to_vec_pretty(&oci).map_err(|e| format!("encoding config.json: {e}"))?;
    crate::shim::write_atomic(&dir.join("config.json"), &json).map_err(|e| format!("{e:#}"))?;
    Ok(())
}

fn read_meta(dir: &Path) -> Result<MetaFile> {
    let path = dir.join(META_FILE);
    let bytes = std::fs::read(&path).map_err(io_error(&path))?;
    serde_json::from_slice(&bytes).map_err(|e| RuntimeError::Io {
        path,
        source: std::io::Error::new(std::io::ErrorKind::InvalidData, e),
    })
}

fn read_exit(dir: &Path) -> Option<ExitInfo> {
    let bytes = std::fs::read(dir.join(crate::shim::EXIT_FILE)).ok()?;
    serde_json::from_slice(&bytes).ok()
}

fn read_started(dir: &Path) -> Option<crate::shim::StartRecord> {
    let bytes = std::fs::read(dir.join(crate::shim::STARTED_FILE)).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// A container whose shim may still be starting it (run_container allows the shim 120 s).
fn recently_created(dir: &Path) -> bool {
    std::fs::metadata(dir.join(META_FILE))
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.elapsed().ok())
        .is_some_and(|age| age < Duration::from_secs(130))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn command_and_args_resolve_against_entrypoint_and_cmd() {
        let image = ImageConfig {
            entrypoint: s(&["/entry"]),
            cmd: s(&["serve", "--port=80"]),
            ..Default::default()
        };
        assert_eq!(
            resolve_process_args(&[], &[], &image),
            s(&["/entry", "serve", "--port=80"])
        );
        assert_eq!(
            resolve_process_args(&[], &s(&["x"]), &image),
            s(&["/entry", "x"])
        );
        assert_eq!(resolve_process_args(&s(&["sh"]), &[], &image), s(&["sh"]));
        assert_eq!(
            resolve_process_args(&s(&["sh", "-c"]), &s(&["echo hi"]), &image),
            s(&["sh", "-c", "echo hi"])
        );
        let cmd_only = ImageConfig {
            cmd: s(&["sh"]),
            ..Default::default()
        };
        assert_eq!(resolve_process_args(&[], &[], &cmd_only), s(&["sh"]));
        assert_eq!(
            resolve_process_args(&[], &s(&["ls"]), &cmd_only),
            s(&["ls"])
        );
        let reset = ImageConfig {
            entrypoint: s(&[""]),
            cmd: s(&["top"]),
            ..Default::default()
        };
        assert_eq!(resolve_process_args(&[], &[], &reset), s(&["top"]));
        assert!(resolve_process_args(&[], &[], &ImageConfig::default()).is_empty());
    }

    #[test]
    fn ids_are_hex_and_checked() {
        let id = new_id().unwrap();
        assert_eq!(id.len(), 64);
        assert!(valid_id(&id));
        assert!(!valid_id("../etc") && !valid_id("") && !valid_id("a/b"));
    }
}

/// Whether `signal` sent to `pid` is discarded: `pid` is the init (PID 1) of its own PID
/// namespace and neither catches the signal (`SigCgt` in /proc/<pid>/status).
fn signal_dropped_by_init(pid: u32, signal: &str) -> bool {
    let Some(number) = signal_number(signal) else {
        return false;
    };
    let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
        return false;
    };
    init_drops_signal(&status, number)
}

fn init_drops_signal(proc_status: &str, signal: u32) -> bool {
    let field = |name: &str| {
        proc_status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .map(str::trim)
    };
    // NSpid lists the pid in every namespace from the outermost in: init is 1 in the last.
    let is_init = field("NSpid:")
        .and_then(|v| v.split_whitespace().last())
        .is_some_and(|innermost| innermost == "1")
        && field("NSpid:").is_some_and(|v| v.split_whitespace().count() > 1);
    let caught = field("SigCgt:")
        .and_then(|mask| u64::from_str_radix(mask, 16).ok())
        .is_some_and(|mask| mask & (1u64 << (signal - 1)) != 0);
    is_init && !caught
}

/// `SIGTERM`, `TERM` or `15`.
fn signal_number(signal: &str) -> Option<u32> {
    let name = signal.trim().trim_start_matches("SIG");
    if let Ok(n) = name.parse::<u32>() {
        return (1..=64).contains(&n).then_some(n);
    }
    Some(match name {
        "HUP" => 1,
        "INT" => 2,
        "QUIT" => 3,
        "USR1" => 10,
        "USR2" => 12,
        "TERM" => 15,
        "WINCH" => 28,
        "PWR" => 30,
        _ => return None,
    })
}

#[cfg(test)]
mod stop_signal_tests {
    use super::*;

    const HTTPD_AS_INIT: &str =
        "Name:\thttpd\nNSpid:\t4242\t1\nSigIgn:\t0000000000000000\nSigCgt:\t0000000000000001\n";
    const SHELL_WITH_TRAP: &str = "Name:\tsh\nNSpid:\t4243\t1\nSigCgt:\t0000000000004002\n";
    const HOST_PID: &str = "Name:\thttpd\nNSpid:\t4244\nSigCgt:\t0000000000000000\n";

    #[test]
    fn an_init_without_a_handler_drops_the_stop_signal() {
        assert!(init_drops_signal(HTTPD_AS_INIT, 15));
        // It catches SIGHUP (bit 0), so SIGHUP would reach it.
        assert!(!init_drops_signal(HTTPD_AS_INIT, 1));
        assert!(!init_drops_signal(SHELL_WITH_TRAP, 15));
        // Not the init of a PID namespace of its own: default actions apply.
        assert!(!init_drops_signal(HOST_PID, 15));
    }

    #[test]
    fn signal_names_and_numbers() {
        assert_eq!(signal_number("SIGTERM"), Some(15));
        assert_eq!(signal_number("QUIT"), Some(3));
        assert_eq!(signal_number("9"), Some(9));
        assert_eq!(signal_number("SIGNOPE"), None);
    }
}
