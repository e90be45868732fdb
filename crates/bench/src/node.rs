//! A real node for the scenarios that run containers (root, runc, the CNI plugins): the
//! names that keep the benchmark's node apart from other agents on the machine, the busybox
//! image built offline, the processes and their clean-up, pods created and waited for through
//! a watch, and [`AgentNode`]: `rkube agent` as its own process, whose cost is read with a
//! given number of pods.
//!
//! Needs busybox-static, umoci and tar besides (scripts/install-deps.sh). The image is built
//! offline with umoci and imported into the node's image store, so nothing is pulled. Every
//! process is stopped by PID and `rkube killall` removes what the agent set up.

use std::collections::HashMap;
use std::fs::OpenOptions;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use http::{Method, StatusCode};
use serde_json::{Value, json};

use crate::client::{ApiClient, Connection};
use crate::figure::kib_field;
use crate::process::{CpuUse, ServerProcess, cpu_use, pss_bytes, rss_bytes};
use crate::scenarios::api::{create_namespace, to_bytes};
use crate::scenarios::bulk::Watch;
use crate::{BenchError, Options};

/// The namespace the pods are created in.
pub(crate) const NAMESPACE: &str = "bench-pods";
/// The name the benchmark's image is imported under (pods name it `busybox:rkube-bench`).
const IMAGE: &str = "docker.io/library/busybox:rkube-bench";
const POD_IMAGE: &str = "busybox:rkube-bench";
/// Clients creating pods, each on its own connection.
const WRITERS: usize = 16;
/// How long a start, a node registration, or pods becoming Ready may take.
pub(crate) const READY_TIMEOUT: Duration = Duration::from_secs(120);
/// How long the pods may take to go away after their delete.
const DELETE_TIMEOUT: Duration = Duration::from_secs(90);
/// How long a process gets to exit after SIGTERM before SIGKILL.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

pub(crate) fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> BenchError {
    let context = context.into();
    move |source| BenchError::Io { context, source }
}

pub(crate) fn fail(message: impl Into<String>) -> BenchError {
    BenchError::Scenario(message.into())
}

/// Whether this process runs as root (real uid 0).
pub(crate) fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| kib_field(&s, "Uid:"))
        == Some(0)
}

/// Runs a tool to completion; its stderr is in the error when it fails.
pub(crate) fn run_tool(program: &str, args: &[&str]) -> Result<(), BenchError> {
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(io(format!("run {program} (is it installed?)")))?;
    if !out.status.success() {
        return Err(fail(format!(
            "{program} {}: {}: {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(())
}

pub(crate) fn path_str(path: &Path) -> Result<&str, BenchError> {
    path.to_str()
        .ok_or_else(|| fail(format!("path {} is not UTF-8", path.display())))
}

/// What keeps one node of this run apart from other agents on the machine.
#[derive(Debug, Clone)]
pub(crate) struct NodeNames {
    pub(crate) node_name: String,
    pub(crate) kubelet_port: u16,
    pub(crate) cgroup_root: String,
    pub(crate) bridge: String,
    pub(crate) cluster_cidr: String,
}

impl NodeNames {
    /// The `n`th node of this process (distinct `n` for nodes that may exist at once).
    pub(crate) fn unique(n: u32) -> Self {
        let id = std::process::id() % 100_000;
        Self {
            node_name: format!("bench-{id}-{n}"),
            kubelet_port: testing::free_port(),
            cgroup_root: format!("/rkube-bench-{id}-{n}/kubepods"),
            bridge: format!("rkb{id}x{n}"),
            // Outside 10.64.0.0/10, which the test harness hands to its clusters.
            cluster_cidr: format!("10.{}.0.0/16", 160 + (id * 7 + n) % 64),
        }
    }

    /// The flags of `rkube agent` (or `rkube server` with its agent) for this node.
    pub(crate) fn agent_args(&self) -> Vec<String> {
        vec![
            "--node-name".into(),
            self.node_name.clone(),
            "--kubelet-port".into(),
            self.kubelet_port.to_string(),
            "--cgroup-root".into(),
            self.cgroup_root.clone(),
            "--cni-bridge".into(),
            self.bridge.clone(),
        ]
    }
}

/// A process the scenario started (a server with its agent, or `rkube agent`): stopped by
/// PID on drop.
pub(crate) struct Process {
    child: Option<Child>,
    pub(crate) what: String,
    log: PathBuf,
}

impl Process {
    pub(crate) fn spawn(
        binary: &Path,
        args: &[String],
        what: &str,
        log: &Path,
    ) -> Result<Self, BenchError> {
        let out = OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .map_err(io(format!("open {what} log {}", log.display())))?;
        let child = Command::new(binary)
            .args(args)
            .env_remove("RKUBE_DATA_DIR")
            .env_remove("RKUBE_URL")
            .env_remove("RKUBE_TOKEN")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(out)
            .spawn()
            .map_err(io(format!("start {what}")))?;
        Ok(Self {
            child: Some(child),
            what: what.into(),
            log: log.to_path_buf(),
        })
    }

    pub(crate) fn pid(&self) -> Result<u32, BenchError> {
        self.child
            .as_ref()
            .map(Child::id)
            .ok_or_else(|| fail(format!("{} is not running", self.what)))
    }

    /// Fails if the process exited, with the end of its log.
    pub(crate) fn check(&mut self) -> Result<(), BenchError> {
        if let Some(child) = self.child.as_mut()
            && let Ok(Some(status)) = child.try_wait()
        {
            self.child = None;
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            let lines: Vec<&str> = log.lines().collect();
            return Err(fail(format!(
                "{} exited with {status}; last lines of its log:\n{}",
                self.what,
                lines[lines.len().saturating_sub(20)..].join("\n")
            )));
        }
        Ok(())
    }

    /// SIGTERM, as a user would stop it; SIGKILL if it does not exit in time.
    pub(crate) fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        // std has no way to send SIGTERM; `kill(1)` from procps is on every Linux.
        let sent = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        let deadline = Instant::now() + STOP_TIMEOUT;
        while sent && Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Runs `rkube killall` for a node's data dir on drop, after the processes that ran it are
/// gone (declare it before them: locals drop in reverse order, fields in order).
pub(crate) struct Killall {
    pub(crate) binary: PathBuf,
    pub(crate) data_dir: PathBuf,
    pub(crate) node: NodeNames,
}

impl Drop for Killall {
    fn drop(&mut self) {
        let out = Command::new(&self.binary)
            .arg("killall")
            .arg("--data-dir")
            .arg(&self.data_dir)
            .arg("--cgroup-root")
            .arg(&self.node.cgroup_root)
            .arg("--cni-bridge")
            .arg(&self.node.bridge)
            .env_remove("RKUBE_DATA_DIR")
            .stdin(Stdio::null())
            .output();
        match out {
            Ok(out) if out.status.success() => {}
            Ok(out) => eprintln!(
                "bench: rkube killall --data-dir {} failed: {}",
                self.data_dir.display(),
                String::from_utf8_lossy(&out.stderr).trim()
            ),
            Err(e) => eprintln!("bench: rkube killall: {e}"),
        }
        // killall removes the pods' cgroups; the benchmark's own parent is left empty.
        if let Some(parent) = Path::new(&self.node.cgroup_root).parent()
            && parent != Path::new("/")
            && let Ok(controllers) = std::fs::read_dir("/sys/fs/cgroup")
        {
            for controller in controllers.flatten() {
                let dir = controller
                    .path()
                    .join(parent.strip_prefix("/").unwrap_or(parent));
                let _ = std::fs::remove_dir(dir.join("kubepods"));
                let _ = std::fs::remove_dir(dir);
            }
        }
    }
}

/// The busybox image: an OCI layout tarball to import, and an unpacked rootfs for runc.
pub(crate) struct BusyboxImage {
    pub(crate) layout_tar: PathBuf,
    /// For a bare `runc run` of the same rootfs (the pods scenario's reference).
    #[allow(dead_code)]
    pub(crate) rootfs: PathBuf,
}

/// Builds the image offline with umoci, as the acceptance scripts do: busybox-static and its
/// applets as symlinks, `PATH=/bin`.
pub(crate) fn build_image(dir: &Path) -> Result<BusyboxImage, BenchError> {
    let busybox = Path::new("/usr/bin/busybox");
    if !busybox.is_file() {
        return Err(fail(
            "/usr/bin/busybox is missing: apt-get install -y busybox-static",
        ));
    }
    let layout = dir.join("oci");
    let bundle = dir.join("bundle");
    let (layout_s, bundle_s) = (path_str(&layout)?, path_str(&bundle)?);
    let image = format!("{layout_s}:bench");
    run_tool("umoci", &["init", "--layout", layout_s])?;
    run_tool("umoci", &["new", "--image", &image])?;
    run_tool(
        "umoci",
        &["unpack", "--rootless", "--image", &image, bundle_s],
    )?;
    let rootfs = bundle.join("rootfs");
    let bin = rootfs.join("bin");
    std::fs::create_dir_all(&bin).map_err(io(format!("create {}", bin.display())))?;
    std::fs::copy(busybox, bin.join("busybox")).map_err(io("copy /usr/bin/busybox"))?;
    for applet in ["sh", "sleep", "cat", "echo", "true"] {
        std::os::unix::fs::symlink("busybox", bin.join(applet))
            .map_err(io(format!("link /bin/{applet}")))?;
    }
    run_tool("umoci", &["repack", "--image", &image, bundle_s])?;
    run_tool(
        "umoci",
        &[
            "config",
            "--image",
            &image,
            "--config.env",
            "PATH=/bin",
            "--config.workingdir",
            "/",
            "--config.cmd",
            "sh",
        ],
    )?;
    let layout_tar = dir.join("busybox-oci.tar");
    run_tool("tar", &["-C", layout_s, "-cf", path_str(&layout_tar)?, "."])?;
    Ok(BusyboxImage { layout_tar, rootfs })
}

/// Imports the image into the image store of a node whose data dir is `data_dir`.
pub(crate) fn import_image(
    binary: &Path,
    data_dir: &Path,
    image: &BusyboxImage,
) -> Result<(), BenchError> {
    run_tool(
        path_str(binary)?,
        &[
            "images",
            "--data-dir",
            path_str(data_dir)?,
            "import",
            path_str(&image.layout_tar)?,
            "--name",
            IMAGE,
        ],
    )
}

pub(crate) fn condition_true(object: &Value, kind: &str) -> bool {
    object["status"]["conditions"].as_array().is_some_and(|cs| {
        cs.iter()
            .any(|c| c["type"] == kind && c["status"] == "True")
    })
}

/// Polls the Node until its Ready condition is True, checking that `alive` still runs.
pub(crate) async fn wait_node_ready(
    conn: &mut Connection,
    node: &str,
    mut alive: impl FnMut() -> Result<(), BenchError>,
) -> Result<(), BenchError> {
    let deadline = Instant::now() + READY_TIMEOUT;
    let path = format!("/api/v1/nodes/{node}");
    loop {
        alive()?;
        let response = conn.send(Method::GET, &path, None).await?;
        if response.status == StatusCode::OK {
            let node: Value = serde_json::from_slice(&response.body)
                .map_err(|e| fail(format!("GET {path}: {e}")))?;
            if condition_true(&node, "Ready") {
                return Ok(());
            }
        }
        if Instant::now() >= deadline {
            return Err(fail(format!(
                "node {node} not Ready within {READY_TIMEOUT:?}"
            )));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Creates the namespace and waits for its default ServiceAccount, which the pods run as.
pub(crate) async fn prepare_namespace(conn: &mut Connection) -> Result<(), BenchError> {
    create_namespace(conn, NAMESPACE).await?;
    let path = format!("/api/v1/namespaces/{NAMESPACE}/serviceaccounts/default");
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if conn.send(Method::GET, &path, None).await?.status == StatusCode::OK {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Err(fail(format!("no {path} within 30 s")))
}

/// What the pod watch saw: when each pod was first Running and Ready, how many are gone.
#[derive(Default)]
pub(crate) struct PodStarts {
    pub(crate) ready: HashMap<String, Instant>,
    pub(crate) deleted: usize,
}

impl PodStarts {
    pub(crate) fn apply(&mut self, kind: &str, pod: &Value, now: Instant) {
        let Some(name) = pod["metadata"]["name"].as_str() else {
            return;
        };
        if kind == "DELETED" {
            self.deleted += 1;
            return;
        }
        if pod["status"]["phase"] == "Running"
            && condition_true(pod, "Ready")
            && !self.ready.contains_key(name)
        {
            self.ready.insert(name.to_string(), now);
        }
    }
}

/// A busybox pod that sleeps, its image already on the node.
pub(crate) fn pod(name: &str) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": NAMESPACE, "labels": {"app": "bench-pods"}},
        "spec": {"containers": [{
            "name": "sleep",
            "image": POD_IMAGE,
            "imagePullPolicy": "IfNotPresent",
            "command": ["sleep", "3600"]
        }]}
    })
}

/// Creates the pods `names`, one connection each taking every `conns.len()`-th; returns when
/// each create was sent.
pub(crate) async fn create_pods(
    conns: &mut [Connection],
    names: &[String],
) -> Result<HashMap<String, Instant>, BenchError> {
    let path = format!("/api/v1/namespaces/{NAMESPACE}/pods");
    let writers = conns.len();
    let runs = conns.iter_mut().enumerate().map(|(w, conn)| {
        let path = &path;
        async move {
            let mut sent = Vec::new();
            for name in names.iter().skip(w).step_by(writers) {
                let body = to_bytes(&pod(name));
                let at = Instant::now();
                conn.expect(Method::POST, path, Some(body), StatusCode::CREATED)
                    .await?;
                sent.push((name.clone(), at));
            }
            Ok::<_, BenchError>(sent)
        }
    });
    Ok(futures::future::try_join_all(runs)
        .await?
        .into_iter()
        .flatten()
        .collect())
}

/// Waits until `done` holds for what the watch saw, checking the processes.
pub(crate) async fn wait_pods(
    watch: &Watch<PodStarts>,
    processes: &mut [&mut Process],
    what: &str,
    timeout: Duration,
    done: impl Fn(&PodStarts) -> Result<(), usize>,
) -> Result<(), BenchError> {
    let deadline = Instant::now() + timeout;
    loop {
        let progress = match watch.with(&done) {
            Ok(()) => return Ok(()),
            Err(n) => n,
        };
        for p in processes.iter_mut() {
            p.check()?;
        }
        if Instant::now() >= deadline {
            return Err(fail(format!(
                "waiting for {what}: {progress} after {timeout:?}"
            )));
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Deletes the pods (1 s grace: `sleep` as PID 1 ignores SIGTERM) and waits until the watch
/// saw them all go.
pub(crate) async fn delete_pods(
    conns: &mut [Connection],
    names: &[String],
    watch: &Watch<PodStarts>,
    processes: &mut [&mut Process],
) -> Result<(), BenchError> {
    let before = watch.with(|s| s.deleted);
    let writers = conns.len();
    let runs = conns.iter_mut().enumerate().map(|(w, conn)| async move {
        for name in names.iter().skip(w).step_by(writers) {
            let path = format!("/api/v1/namespaces/{NAMESPACE}/pods/{name}?gracePeriodSeconds=1");
            let response = conn.send(Method::DELETE, &path, None).await?;
            if !matches!(response.status, StatusCode::OK | StatusCode::ACCEPTED) {
                return Err(BenchError::Status {
                    method: "DELETE".into(),
                    path,
                    status: response.status.as_u16(),
                    body: String::from_utf8_lossy(&response.body).into_owned(),
                });
            }
        }
        Ok(())
    });
    futures::future::try_join_all(runs).await?;
    let want = before + names.len();
    wait_pods(watch, processes, "pods deleted", DELETE_TIMEOUT, |s| {
        (s.deleted >= want).then_some(()).ok_or(s.deleted - before)
    })
    .await
}

pub(crate) async fn connections(
    client: &ApiClient,
    n: usize,
) -> Result<Vec<Connection>, BenchError> {
    let mut conns = Vec::with_capacity(n);
    for _ in 0..n {
        conns.push(client.connect().await?);
    }
    Ok(conns)
}

/// The `rkube shim` processes of the agent whose data dir is `data_dir`.
pub(crate) fn shim_pids(data_dir: &Path) -> Vec<u32> {
    let marker = data_dir.to_string_lossy().into_owned();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
                return false;
            };
            let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
            args.get(1) == Some(&&b"shim"[..])
                && args
                    .iter()
                    .any(|a| String::from_utf8_lossy(a).starts_with(&marker))
        })
        .collect()
}

/// What the agent costs at one moment of steady state.
#[derive(Debug, Clone)]
pub(crate) struct AgentCost {
    pub(crate) pods: usize,
    pub(crate) rss: u64,
    pub(crate) cpu: CpuUse,
    /// PSS of each shim: its private pages and its share of the pages shims share.
    pub(crate) shim_pss: Vec<u64>,
}

impl AgentCost {
    /// The agent's RSS plus its shims' PSS: what the node's own processes take, shared pages
    /// counted once.
    pub(crate) fn with_shims_bytes(&self) -> u64 {
        self.rss + self.shim_pss.iter().sum::<u64>()
    }
}

/// `rkube agent` as its own process against a `rkube server --disable-agent`, its node Ready
/// and the busybox image imported: [`AgentNode::scale_to`] adds pods, [`AgentNode::cost`]
/// reads what the agent costs. Everything stops on drop (fields drop in order: the watch and
/// connections, the agent, the server, then `rkube killall`).
pub(crate) struct AgentNode {
    watch: Watch<PodStarts>,
    conns: Vec<Connection>,
    agent: Process,
    _server: ServerProcess,
    _killall: Killall,
    data_dir: PathBuf,
    pods: Vec<String>,
}

impl AgentNode {
    /// Starts the server and the agent in `dir` (node `n` of [`NodeNames::unique`]) and waits
    /// until the node is Ready and the namespace can hold pods.
    pub(crate) async fn start(
        options: &Options,
        dir: &Path,
        image: &BusyboxImage,
        n: u32,
    ) -> Result<Self, BenchError> {
        let node = NodeNames::unique(n);
        let data_dir = dir.join("agent");
        std::fs::create_dir_all(&data_dir).map_err(io(format!("create {}", data_dir.display())))?;
        import_image(&options.binary, &data_dir, image)?;
        let killall = Killall {
            binary: options.binary.clone(),
            data_dir: data_dir.clone(),
            node: node.clone(),
        };
        let (server, client) = ServerProcess::start_with(
            &options.binary,
            &dir.join("cluster"),
            testing::free_port(),
            &["--cluster-cidr", &node.cluster_cidr],
        )
        .await?;
        let token = std::fs::read_to_string(dir.join("cluster").join("node-token"))
            .map_err(io("read the server's node-token"))?;
        let mut args: Vec<String> = [
            "agent",
            "--server",
            &format!("https://127.0.0.1:{}", server.port()),
            "--token",
            token.trim(),
            "--data-dir",
            path_str(&data_dir)?,
        ]
        .map(String::from)
        .to_vec();
        args.extend(node.agent_args());
        let mut agent = Process::spawn(
            &options.binary,
            &args,
            "rkube agent",
            &dir.join("agent.log"),
        )?;
        let mut conns = connections(&client, WRITERS).await?;
        wait_node_ready(&mut conns[0], &node.node_name, || agent.check()).await?;
        prepare_namespace(&mut conns[0]).await?;
        let watch = Watch::start(
            client.connect().await?,
            &format!("/api/v1/namespaces/{NAMESPACE}/pods?watch=1"),
            PodStarts::default(),
            PodStarts::apply,
        )
        .await?;
        Ok(Self {
            watch,
            conns,
            agent,
            _server: server,
            _killall: killall,
            data_dir,
            pods: Vec::new(),
        })
    }

    /// Creates pods until there are `count`, and waits until every one is Running and Ready.
    pub(crate) async fn scale_to(&mut self, count: usize) -> Result<(), BenchError> {
        let names: Vec<String> = (self.pods.len()..count)
            .map(|i| format!("idle-{i}"))
            .collect();
        let writers = WRITERS.min(names.len()).max(1);
        create_pods(&mut self.conns[..writers], &names).await?;
        self.pods.extend(names);
        let want = &self.pods;
        wait_pods(
            &self.watch,
            &mut [&mut self.agent],
            "pods Running and Ready",
            READY_TIMEOUT * 2,
            |s| {
                let n = want.iter().filter(|p| s.ready.contains_key(*p)).count();
                (n >= want.len()).then_some(()).ok_or(n)
            },
        )
        .await
    }

    /// Waits `settle` (start-up work done, nothing changing), then reads the agent's and its
    /// shims' memory, and the agent's CPU over `window`.
    pub(crate) async fn cost(
        &mut self,
        settle: Duration,
        window: Duration,
    ) -> Result<AgentCost, BenchError> {
        tokio::time::sleep(settle).await;
        self.agent.check()?;
        let pid = self.agent.pid()?;
        let rss = rss_bytes(pid)?;
        let shims = shim_pids(&self.data_dir);
        let shim_pss = shims.iter().filter_map(|p| pss_bytes(*p)).collect();
        let cpu = cpu_use(pid, window).await?;
        self.agent.check()?;
        Ok(AgentCost {
            pods: self.pods.len(),
            rss,
            cpu,
            shim_pss,
        })
    }

    /// Deletes the pods (so the agent stops its containers itself) and stops the agent.
    pub(crate) async fn finish(mut self) -> Result<(), BenchError> {
        let pods = std::mem::take(&mut self.pods);
        delete_pods(&mut self.conns, &pods, &self.watch, &mut [&mut self.agent]).await?;
        self.agent.stop();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pod_starts_keep_the_first_ready() {
        let mut s = PodStarts::default();
        let t0 = Instant::now();
        let mut p = pod("a");
        s.apply("ADDED", &p, t0);
        p["status"] =
            json!({"phase": "Running", "conditions": [{"type": "Ready", "status": "False"}]});
        s.apply("MODIFIED", &p, t0);
        assert!(s.ready.is_empty());
        p["status"]["conditions"][0]["status"] = json!("True");
        let t1 = t0 + Duration::from_millis(3);
        s.apply("MODIFIED", &p, t1);
        s.apply("MODIFIED", &p, t1 + Duration::from_millis(9));
        assert_eq!(s.ready["a"], t1);
        s.apply("DELETED", &p, t1);
        assert_eq!(s.deleted, 1);
    }

    #[test]
    fn own_processes_are_not_shims() {
        assert!(shim_pids(Path::new("/nonexistent-rkube-bench")).is_empty());
    }

    #[test]
    fn nodes_of_one_run_do_not_collide() {
        let (a, b) = (NodeNames::unique(0), NodeNames::unique(2));
        assert_ne!(a.node_name, b.node_name);
        assert_ne!(a.cgroup_root, b.cgroup_root);
        assert_ne!(a.cluster_cidr, b.cluster_cidr);
        // Linux interface names hold at most 15 bytes.
        assert!(a.bridge.len() <= 15 && a.bridge != b.bridge, "{}", a.bridge);
        let args = a.agent_args();
        assert_eq!(args[1], a.node_name);
        assert_eq!(args[3], a.kubelet_port.to_string());
    }

    #[test]
    fn the_node_costs_its_agent_and_its_shims_shared_pages_once() {
        let cost = AgentCost {
            pods: 2,
            rss: 10,
            cpu: CpuUse {
                own_percent: 0.0,
                with_children_percent: 0.0,
                window: Duration::from_secs(1),
            },
            shim_pss: vec![2, 3],
        };
        assert_eq!(cost.with_shims_bytes(), 15);
    }
}
