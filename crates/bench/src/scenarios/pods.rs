//! `pods`: the node agent with real containers. Pod startup (creation to Running and Ready
//! through a watch) beside a bare `runc run -d` of the same busybox rootfs in the same run;
//! then the agent's and its shims' footprint with 100 pods on one node.
//!
//! Needs root, runc, the CNI plugins, busybox-static, umoci and tar (scripts/install-deps.sh).
//! The image is built offline with umoci and imported into the node's image store, so no pull
//! is timed. Every process is killed by PID and `rkube killall` removes what the agent set up.

use std::collections::HashMap;
use std::fs::OpenOptions;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use http::{Method, StatusCode};
use serde_json::{Value, json};

use crate::client::{ApiClient, Connection};
use crate::figure::{Figure, MIB, Target, Unit, kib_field};
use crate::process::{ServerProcess, rss_bytes};
use crate::scenarios::api::{create_namespace, to_bytes};
use crate::scenarios::bulk::Watch;
use crate::stats::Samples;
use crate::{BenchError, Options};

const SCENARIO: &str = "pods";
const NAMESPACE: &str = "bench-pods";
/// The name the benchmark's image is imported under (pods name it `busybox:rkube-bench`).
const IMAGE: &str = "docker.io/library/busybox:rkube-bench";
const POD_IMAGE: &str = "busybox:rkube-bench";
/// Clients creating the footprint pods, each on its own connection.
const WRITERS: usize = 16;
/// How long a start, a node registration, or all pods becoming Ready may take.
const READY_TIMEOUT: Duration = Duration::from_secs(120);
/// How long the pods may take to go away after their delete.
const DELETE_TIMEOUT: Duration = Duration::from_secs(90);
/// How long a process gets to exit after SIGTERM before SIGKILL.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> BenchError {
    let context = context.into();
    move |source| BenchError::Io { context, source }
}

fn fail(message: impl Into<String>) -> BenchError {
    BenchError::Scenario(message.into())
}

/// Runs a tool to completion; its stderr is in the error when it fails.
fn run_tool(program: &str, args: &[&str]) -> Result<(), BenchError> {
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

fn path_str(path: &Path) -> Result<&str, BenchError> {
    path.to_str()
        .ok_or_else(|| fail(format!("path {} is not UTF-8", path.display())))
}

/// What keeps this run's node apart from other agents on the machine.
#[derive(Debug, Clone)]
struct NodeNames {
    node_name: String,
    kubelet_port: u16,
    cgroup_root: String,
    bridge: String,
    cluster_cidr: String,
}

impl NodeNames {
    fn unique(n: u32) -> Self {
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

    fn agent_args(&self) -> Vec<String> {
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
struct Process {
    child: Option<Child>,
    what: String,
    log: PathBuf,
}

impl Process {
    fn spawn(binary: &Path, args: &[String], what: &str, log: &Path) -> Result<Self, BenchError> {
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

    fn pid(&self) -> Result<u32, BenchError> {
        self.child
            .as_ref()
            .map(Child::id)
            .ok_or_else(|| fail(format!("{} is not running", self.what)))
    }

    /// Fails if the process exited, with the end of its log.
    fn check(&mut self) -> Result<(), BenchError> {
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
    fn stop(&mut self) {
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
/// gone (declare it before them: locals drop in reverse order).
struct Killall {
    binary: PathBuf,
    data_dir: PathBuf,
    node: NodeNames,
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
struct BusyboxImage {
    layout_tar: PathBuf,
    rootfs: PathBuf,
}

/// Builds the image offline with umoci, as the acceptance scripts do: busybox-static and its
/// applets as symlinks, `PATH=/bin`.
fn build_image(dir: &Path) -> Result<BusyboxImage, BenchError> {
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
fn import_image(binary: &Path, data_dir: &Path, image: &BusyboxImage) -> Result<(), BenchError> {
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

/// Polls `/readyz` (with the admin kubeconfig once the server wrote it) until it answers 200.
async fn wait_server(process: &mut Process, kubeconfig: &Path) -> Result<ApiClient, BenchError> {
    let deadline = Instant::now() + READY_TIMEOUT;
    let mut last_error = String::from("no kubeconfig yet");
    loop {
        process.check()?;
        if kubeconfig.exists() {
            match ApiClient::from_kubeconfig(kubeconfig) {
                Ok(client) => match client.connect().await {
                    Ok(mut conn) => {
                        match conn
                            .expect(Method::GET, "/readyz", None, StatusCode::OK)
                            .await
                        {
                            Ok(_) => return Ok(client),
                            Err(e) => last_error = e.to_string(),
                        }
                    }
                    Err(e) => last_error = e.to_string(),
                },
                // The file may be half written at the first look.
                Err(e) => last_error = e.to_string(),
            }
        }
        if Instant::now() >= deadline {
            return Err(fail(format!("{} not ready: {last_error}", process.what)));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Polls the Node until its Ready condition is True.
async fn wait_node_ready(
    conn: &mut Connection,
    node: &str,
    processes: &mut [&mut Process],
) -> Result<(), BenchError> {
    let deadline = Instant::now() + READY_TIMEOUT;
    let path = format!("/api/v1/nodes/{node}");
    loop {
        for p in processes.iter_mut() {
            p.check()?;
        }
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
async fn prepare_namespace(conn: &mut Connection) -> Result<(), BenchError> {
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

fn condition_true(object: &Value, kind: &str) -> bool {
    object["status"]["conditions"].as_array().is_some_and(|cs| {
        cs.iter()
            .any(|c| c["type"] == kind && c["status"] == "True")
    })
}

/// What the pod watch saw: when each pod was first Running and Ready, which are gone.
#[derive(Default)]
struct PodStarts {
    ready: HashMap<String, Instant>,
    deleted: usize,
}

impl PodStarts {
    fn apply(&mut self, kind: &str, pod: &Value, now: Instant) {
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
fn pod(name: &str) -> Value {
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
async fn create_pods(
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

/// Waits until the watch saw `want` pods Ready (or `want` deletions), checking the processes.
async fn wait_pods(
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
async fn delete_pods(
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

async fn connections(client: &ApiClient, n: usize) -> Result<Vec<Connection>, BenchError> {
    let mut conns = Vec::with_capacity(n);
    for _ in 0..n {
        conns.push(client.connect().await?);
    }
    Ok(conns)
}

/// Pod startup on `rkube server` with its agent: returns the creation-to-Ready latencies.
async fn pod_startup(
    options: &Options,
    dir: &Path,
    image: &BusyboxImage,
    pods: usize,
) -> Result<Samples, BenchError> {
    let node = NodeNames::unique(0);
    let data = dir.join("server");
    std::fs::create_dir_all(&data).map_err(io(format!("create {}", data.display())))?;
    import_image(&options.binary, &data, image)?;
    let mut args: Vec<String> = [
        "server",
        "--data-dir",
        path_str(&data)?,
        "--https-port",
        &testing::free_port().to_string(),
        "--bind-address",
        "127.0.0.1",
        "--cluster-cidr",
        &node.cluster_cidr,
    ]
    .map(String::from)
    .to_vec();
    args.extend(node.agent_args());
    let _killall = Killall {
        binary: options.binary.clone(),
        data_dir: data.clone(),
        node: node.clone(),
    };
    let mut server = Process::spawn(
        &options.binary,
        &args,
        "rkube server (with its agent)",
        &dir.join("server.log"),
    )?;
    let client = wait_server(&mut server, &data.join("kubeconfig.yaml")).await?;
    let mut conns = connections(&client, pods.max(1)).await?;
    wait_node_ready(&mut conns[0], &node.node_name, &mut [&mut server]).await?;
    prepare_namespace(&mut conns[0]).await?;
    let watch = Watch::start(
        client.connect().await?,
        &format!("/api/v1/namespaces/{NAMESPACE}/pods?watch=1"),
        PodStarts::default(),
        PodStarts::apply,
    )
    .await?;

    // One pod first, not measured: the node's one-time work (the pod bridge) is not startup.
    let warm = vec!["warm-0".to_string()];
    create_pods(&mut conns[..1], &warm).await?;
    wait_pods(
        &watch,
        &mut [&mut server],
        "the warm-up pod Ready",
        READY_TIMEOUT,
        |s| (!s.ready.is_empty()).then_some(()).ok_or(0),
    )
    .await?;

    let names: Vec<String> = (0..pods).map(|i| format!("start-{i}")).collect();
    let created = create_pods(&mut conns, &names).await?;
    wait_pods(
        &watch,
        &mut [&mut server],
        "pods Running and Ready",
        READY_TIMEOUT,
        |s| {
            let n = names.iter().filter(|n| s.ready.contains_key(*n)).count();
            (n >= names.len()).then_some(()).ok_or(n)
        },
    )
    .await?;
    let mut samples = Samples::new();
    watch.with(|s| {
        for (name, at) in &created {
            samples.push(s.ready[name].saturating_duration_since(*at));
        }
    });

    let all: Vec<String> = warm.into_iter().chain(names).collect();
    delete_pods(&mut conns, &all, &watch, &mut [&mut server]).await?;
    drop(watch);
    drop(conns);
    server.stop();
    Ok(samples)
}

/// A bare `runc run -d` of the busybox rootfs with runc's default spec (`runc spec`, no
/// terminal, `sleep 3600`): each container's time from exec of runc to its return, one at a
/// time and then all at once. The containers are deleted on drop.
struct BareRunc {
    root: PathBuf,
    /// Containers that may exist.
    ids: Vec<String>,
    made: usize,
}

impl BareRunc {
    fn bundle(dir: &Path, rootfs: &Path) -> Result<PathBuf, BenchError> {
        let bundle = dir.join("runc-bundle");
        std::fs::create_dir_all(&bundle).map_err(io(format!("create {}", bundle.display())))?;
        run_tool("runc", &["spec", "--bundle", path_str(&bundle)?])?;
        let path = bundle.join("config.json");
        let text =
            std::fs::read_to_string(&path).map_err(io(format!("read {}", path.display())))?;
        let mut spec: Value =
            serde_json::from_str(&text).map_err(|e| fail(format!("{}: {e}", path.display())))?;
        spec["process"]["terminal"] = json!(false);
        spec["process"]["args"] = json!(["sleep", "3600"]);
        spec["process"]["env"] = json!(["PATH=/bin"]);
        spec["root"]["path"] = json!(path_str(rootfs)?);
        std::fs::write(&path, spec.to_string()).map_err(io(format!("write {}", path.display())))?;
        Ok(bundle)
    }

    /// `count` containers one after the other, then `count` at once.
    async fn measure(
        &mut self,
        bundle: &Path,
        count: usize,
    ) -> Result<(Samples, Samples), BenchError> {
        let mut sequential = Samples::new();
        for _ in 0..count {
            let id = self.next_id();
            sequential.push(runc_run(&self.root, bundle, &id).await?);
        }
        self.delete_all();
        // Ids are recorded before the runs start, so that a failed run still gets deleted.
        let ids: Vec<String> = (0..count).map(|_| self.next_id()).collect();
        let root = &self.root;
        let runs = ids.iter().map(|id| runc_run(root, bundle, id));
        let mut concurrent = Samples::new();
        for took in futures::future::try_join_all(runs).await? {
            concurrent.push(took);
        }
        self.delete_all();
        Ok((sequential, concurrent))
    }

    fn next_id(&mut self) -> String {
        self.made += 1;
        let id = format!("rkube-bench-{}-{}", std::process::id(), self.made);
        self.ids.push(id.clone());
        id
    }

    fn delete_all(&mut self) {
        for id in self.ids.drain(..) {
            let _ = Command::new("runc")
                .arg("--root")
                .arg(&self.root)
                .args(["delete", "--force", &id])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
}

/// `runc run -d` of one container: the time from exec of runc until it returns (the
/// container's process started).
async fn runc_run(root: &Path, bundle: &Path, id: &str) -> Result<Duration, BenchError> {
    // runc's errors go to --log: a detached container without a terminal inherits runc's
    // stdio, so a pipe there would stay open for as long as the container runs.
    let log = root.with_extension(format!("{id}.log"));
    let began = Instant::now();
    let status = tokio::process::Command::new("runc")
        .arg("--root")
        .arg(root)
        .arg("--log")
        .arg(&log)
        .args(["run", "-d", "--bundle"])
        .arg(bundle)
        .arg(id)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .await
        .map_err(io("run runc"))?;
    let took = began.elapsed();
    if !status.success() {
        return Err(fail(format!(
            "runc run -d {id}: {status}: {}",
            std::fs::read_to_string(&log).unwrap_or_default().trim()
        )));
    }
    Ok(took)
}

impl Drop for BareRunc {
    fn drop(&mut self) {
        self.delete_all();
    }
}

/// The `rkube shim` processes of the agent whose data dir is `data_dir`.
fn shim_pids(data_dir: &Path) -> Vec<u32> {
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

/// The proportional set size of a process (`Pss:` of `/proc/<pid>/smaps_rollup`).
fn pss_bytes(pid: u32) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok()?;
    kib_field(&text, "Pss:").map(|kib| kib * 1024)
}

/// CPU time of a process so far (its own, and that of the children it reaped), in clock ticks.
fn cpu_ticks(pid: u32) -> Result<(u64, u64), BenchError> {
    let path = format!("/proc/{pid}/stat");
    let text = std::fs::read_to_string(&path).map_err(io(format!("read {path}")))?;
    parse_cpu_ticks(&text).ok_or_else(|| fail(format!("{path}: unexpected format")))
}

/// utime+stime and cutime+cstime of a `/proc/<pid>/stat` line (fields 14–17; the command
/// name in parentheses may hold spaces, so fields are counted after the last `)`).
fn parse_cpu_ticks(stat: &str) -> Option<(u64, u64)> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<u64> = rest
        .split_whitespace()
        .skip(11)
        .take(4)
        .map(str::parse)
        .collect::<Result<_, _>>()
        .ok()?;
    (fields.len() == 4).then(|| (fields[0] + fields[1], fields[2] + fields[3]))
}

/// Clock ticks per second (`getconf CLK_TCK`; 100 on every Linux this runs on otherwise).
fn clock_ticks() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

struct Footprint {
    pods: usize,
    agent_idle_rss: u64,
    agent_rss: u64,
    shims: Vec<u64>,
    /// Proportional set sizes of the shims: what each adds, its share of the shared pages.
    shim_pss: Vec<u64>,
    cpu_percent: f64,
    cpu_with_children_percent: f64,
    window: Duration,
}

/// `rkube agent` against a `--disable-agent` server, `pods` pods Running and Ready, then its
/// RSS, its shims' RSS and its CPU over `window`.
async fn footprint(
    options: &Options,
    dir: &Path,
    image: &BusyboxImage,
    pods: usize,
    window: Duration,
    settle: Duration,
) -> Result<Footprint, BenchError> {
    let node = NodeNames::unique(1);
    let agent_data = dir.join("agent");
    std::fs::create_dir_all(&agent_data).map_err(io(format!("create {}", agent_data.display())))?;
    import_image(&options.binary, &agent_data, image)?;
    let _killall = Killall {
        binary: options.binary.clone(),
        data_dir: agent_data.clone(),
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
        path_str(&agent_data)?,
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
    let mut conns = connections(&client, WRITERS.min(pods.max(1))).await?;
    wait_node_ready(&mut conns[0], &node.node_name, &mut [&mut agent]).await?;
    prepare_namespace(&mut conns[0]).await?;
    tokio::time::sleep(settle).await;
    agent.check()?;
    let agent_idle_rss = rss_bytes(agent.pid()?)?;
    let watch = Watch::start(
        client.connect().await?,
        &format!("/api/v1/namespaces/{NAMESPACE}/pods?watch=1"),
        PodStarts::default(),
        PodStarts::apply,
    )
    .await?;
    let names: Vec<String> = (0..pods).map(|i| format!("idle-{i}")).collect();
    create_pods(&mut conns, &names).await?;
    wait_pods(
        &watch,
        &mut [&mut agent],
        "pods Running and Ready",
        READY_TIMEOUT * 2,
        |s| (s.ready.len() >= pods).then_some(()).ok_or(s.ready.len()),
    )
    .await?;

    // Steady state: the start-up work done, nothing changing.
    tokio::time::sleep(settle).await;
    agent.check()?;
    let pid = agent.pid()?;
    let agent_rss = rss_bytes(pid)?;
    let shim_pids = shim_pids(&agent_data);
    let shims: Vec<u64> = shim_pids
        .iter()
        .filter_map(|pid| rss_bytes(*pid).ok())
        .collect();
    let shim_pss: Vec<u64> = shim_pids.iter().filter_map(|pid| pss_bytes(*pid)).collect();
    let (own_before, children_before) = cpu_ticks(pid)?;
    let began = Instant::now();
    tokio::time::sleep(window).await;
    let (own_after, children_after) = cpu_ticks(pid)?;
    let elapsed = began.elapsed().as_secs_f64();
    agent.check()?;
    let ticks = clock_ticks();
    let percent = |ticks_used: u64| ticks_used as f64 / ticks / elapsed * 100.0;
    let own = own_after - own_before;
    let children = children_after - children_before;

    delete_pods(&mut conns, &names, &watch, &mut [&mut agent]).await?;
    drop(watch);
    drop(conns);
    agent.stop();
    drop(server);
    Ok(Footprint {
        pods,
        agent_idle_rss,
        agent_rss,
        shims,
        shim_pss,
        cpu_percent: percent(own),
        cpu_with_children_percent: percent(own + children),
        window: Duration::from_secs_f64(elapsed),
    })
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| kib_field(&s, "Uid:"))
        == Some(0)
}

pub async fn run(options: &Options) -> Result<Vec<Figure>, BenchError> {
    if !is_root() {
        return Err(fail(
            "the pods scenario runs real containers: run it as root (with runc, the CNI plugins, busybox-static and umoci installed)",
        ));
    }
    let (start_pods, idle_pods, window, settle) = if options.quick {
        (3, 5, Duration::from_secs(1), Duration::from_millis(500))
    } else {
        (20, 100, Duration::from_secs(20), Duration::from_secs(5))
    };
    let dir = tempfile::Builder::new()
        .prefix("rkube-bench-pods-")
        .tempdir()
        .map_err(io("create a temporary directory for the pods scenario"))?;
    let image = build_image(dir.path())?;

    let mut startup = pod_startup(options, dir.path(), &image, start_pods).await?;

    // The same container with runc alone, in the same run.
    let mut runc = BareRunc {
        root: dir.path().join("runc-root"),
        ids: Vec::new(),
        made: 0,
    };
    let bundle = BareRunc::bundle(dir.path(), &image.rootfs)?;
    let (mut runc_sequential, mut runc_concurrent) = runc.measure(&bundle, start_pods).await?;
    drop(runc);

    let foot = footprint(options, dir.path(), &image, idle_pods, window, settle).await?;
    let shim_max = foot.shims.iter().copied().max().unwrap_or(0) as f64;
    let mean = |values: &[u64]| {
        if values.is_empty() {
            0.0
        } else {
            values.iter().sum::<u64>() as f64 / values.len() as f64
        }
    };
    let runc_label = format!("bare runc run -d, {start_pods} at once");
    Ok(vec![
        Figure::new(
            SCENARIO,
            "pods.startup_p50_ms",
            format!(
                "pod creation to Running and Ready (watch), p50 of {start_pods} pods created at once, image present"
            ),
            startup.median_ms(),
            Unit::Millis,
        )
        .reference(&runc_label, runc_concurrent.median_ms())
        .target(Target::AtMost(100.0)),
        Figure::new(
            SCENARIO,
            "pods.startup_p99_ms",
            format!("pod creation to Running and Ready (watch), p99 of {start_pods} pods"),
            startup.percentile_ms(99.0),
            Unit::Millis,
        )
        .reference(&runc_label, runc_concurrent.percentile_ms(99.0))
        .target(Target::AtMost(300.0)),
        Figure::new(
            SCENARIO,
            "pods.runc_sequential_p50_ms",
            format!("bare runc run -d of the same rootfs, one at a time, p50 of {start_pods}"),
            runc_sequential.median_ms(),
            Unit::Millis,
        ),
        Figure::new(
            SCENARIO,
            "pods.agent_rss_bytes",
            format!("rkube agent RSS with {} pods Running", foot.pods),
            foot.agent_rss as f64,
            Unit::Bytes,
        )
        .target(Target::AtMost(40.0 * MIB)),
        Figure::new(
            SCENARIO,
            "pods.agent_idle_rss_bytes",
            "rkube agent RSS with its node Ready and no pods",
            foot.agent_idle_rss as f64,
            Unit::Bytes,
        ),
        Figure::new(
            SCENARIO,
            "pods.shim_rss_max_bytes",
            format!("largest shim RSS of {} shims", foot.shims.len()),
            shim_max,
            Unit::Bytes,
        )
        .target(Target::AtMost(2.0 * MIB)),
        Figure::new(
            SCENARIO,
            "pods.shim_rss_mean_bytes",
            format!("mean shim RSS of {} shims", foot.shims.len()),
            mean(&foot.shims),
            Unit::Bytes,
        ),
        Figure::new(
            SCENARIO,
            "pods.shim_pss_mean_bytes",
            format!(
                "mean shim PSS of {} shims (shared pages divided among their users)",
                foot.shim_pss.len()
            ),
            mean(&foot.shim_pss),
            Unit::Bytes,
        ),
        Figure::new(
            SCENARIO,
            "pods.agent_cpu_percent",
            format!(
                "rkube agent CPU at steady state with {} pods, % of one core over {:.0} s",
                foot.pods,
                foot.window.as_secs_f64()
            ),
            foot.cpu_percent,
            Unit::Ratio,
        )
        .target(Target::AtMost(2.0)),
        Figure::new(
            SCENARIO,
            "pods.agent_cpu_with_children_percent",
            "the same, with the children it ran and reaped (runc), % of one core",
            foot.cpu_with_children_percent,
            Unit::Ratio,
        ),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_cpu_ticks_after_the_command_name() {
        let stat =
            "1234 (rkube agent) S 1 1234 1234 0 -1 4194560 5000 0 0 0 150 25 7 3 20 0 4 0 100 0 0";
        assert_eq!(parse_cpu_ticks(stat), Some((175, 10)));
        assert_eq!(parse_cpu_ticks("1234 (x) S 1"), None);
    }

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
}
