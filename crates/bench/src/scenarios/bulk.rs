//! `bulk`: kwok's benchmark. Simulated nodes (`rkube sim`, its own process) join a real
//! `rkube server`; then pods are created until all are Running, then deleted until gone.
//!
//! Also the pieces the `scheduler` scenario shares: the cluster of a server and a simulator,
//! and watches that keep what they saw in a shared state.

use std::collections::{HashMap, HashSet};
use std::fs::OpenOptions;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http::{Method, StatusCode};
use serde_json::{Value, json};
use tokio::task::JoinHandle;

use crate::client::Connection;
use crate::figure::{Figure, MIB, Target, Unit};
use crate::process::{ServerProcess, rss_bytes};
use crate::scenarios::api::{create_namespace, to_bytes};
use crate::{BenchError, Options};

const SCENARIO: &str = "bulk";
const NAMESPACE: &str = "bench-bulk";
/// Clients creating and deleting pods at once, each on its own keep-alive connection.
pub(crate) const WRITERS: usize = 16;
/// A /8 holds 65,536 /24s: one per simulated node, as node IPAM hands them out.
const CLUSTER_CIDR: &str = "10.0.0.0/8";

/// kwok's own benchmark limits (kwok `test/e2e` / `kwokctl` benchmark: 5,000 nodes in 60 s,
/// 10,000 pods Running in 60 s, deleted in 90 s); published, not measured here.
const KWOK_NODES_MS: f64 = 60_000.0;
const KWOK_PODS_MS: f64 = 60_000.0;
const KWOK_DELETE_MS: f64 = 90_000.0;

/// `rkube sim` as its own process, killed (and reaped) on drop.
pub(crate) struct SimProcess {
    child: Option<Child>,
    log: std::path::PathBuf,
}

impl SimProcess {
    pub(crate) fn spawn(
        binary: &Path,
        kubeconfig: &Path,
        nodes: usize,
        log: &Path,
        args: &[&str],
    ) -> Result<Self, BenchError> {
        let io = |context: String| move |source| BenchError::Io { context, source };
        let out = OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .map_err(io(format!("open simulator log {}", log.display())))?;
        let child = Command::new(binary)
            .arg("sim")
            .arg("--kubeconfig")
            .arg(kubeconfig)
            .arg("--nodes")
            .arg(nodes.to_string())
            .args(args)
            .env_remove("KUBECONFIG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(out)
            .spawn()
            .map_err(io(format!("start {} sim", binary.display())))?;
        Ok(Self {
            child: Some(child),
            log: log.to_path_buf(),
        })
    }

    pub(crate) fn rss_bytes(&self) -> Result<u64, BenchError> {
        let pid = self
            .child
            .as_ref()
            .map(Child::id)
            .ok_or_else(|| BenchError::Scenario("rkube sim is not running".into()))?;
        rss_bytes(pid)
    }

    /// Fails if the simulator exited, with the end of its log.
    pub(crate) fn check(&mut self) -> Result<(), BenchError> {
        if let Some(child) = self.child.as_mut()
            && let Ok(Some(status)) = child.try_wait()
        {
            self.child = None;
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            let lines: Vec<&str> = log.lines().collect();
            return Err(BenchError::Scenario(format!(
                "rkube sim exited with {status}; last lines of its log:\n{}",
                lines[lines.len().saturating_sub(20)..].join("\n")
            )));
        }
        Ok(())
    }
}

impl Drop for SimProcess {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A server (pod network large enough for every node) and a simulator of `nodes` nodes, all
/// Ready. Dropped in field order: the simulator first, then the server, then the directory.
pub(crate) struct Cluster {
    pub sim: SimProcess,
    pub server: ServerProcess,
    pub client: crate::client::ApiClient,
    /// From the simulator's start until every node was Ready.
    pub nodes_ready: Duration,
    _nodes: Watch<NodeState>,
    _dir: tempfile::TempDir,
}

impl Cluster {
    pub(crate) async fn start(
        options: &Options,
        nodes: usize,
        limit: Duration,
    ) -> Result<Self, BenchError> {
        Self::start_with(options, nodes, limit, &[]).await
    }

    /// As [`Cluster::start`], with more arguments for `rkube sim`.
    pub(crate) async fn start_with(
        options: &Options,
        nodes: usize,
        limit: Duration,
        sim_args: &[&str],
    ) -> Result<Self, BenchError> {
        let dir = tempfile::Builder::new()
            .prefix("rkube-bench-cluster-")
            .tempdir()
            .map_err(|source| BenchError::Io {
                context: "create a temporary directory for rkube server".into(),
                source,
            })?;
        let data = dir.path().join("data");
        let mut server = ServerProcess::spawn_with(
            &options.binary,
            &data,
            testing::free_port(),
            &["--cluster-cidr", CLUSTER_CIDR],
        )?;
        let client = server.wait_ready(None).await?;
        let node_watch = Watch::start(
            client.connect().await?,
            "/api/v1/nodes?watch=1",
            NodeState::default(),
            NodeState::apply,
        )
        .await?;
        let began = Instant::now();
        let mut sim = SimProcess::spawn(
            &options.binary,
            &server.kubeconfig(),
            nodes,
            &dir.path().join("sim.log"),
            sim_args,
        )?;
        node_watch
            .wait_until(&mut sim, began + limit, "nodes Ready", |s| {
                (s.ready.len() >= nodes).then_some(()).ok_or(s.ready.len())
            })
            .await?;
        let nodes_ready = began.elapsed();
        Ok(Self {
            sim,
            server,
            client,
            nodes_ready,
            _nodes: node_watch,
            _dir: dir,
        })
    }

    pub(crate) async fn connections(&self, n: usize) -> Result<Vec<Connection>, BenchError> {
        let mut conns = Vec::with_capacity(n);
        for _ in 0..n {
            conns.push(self.client.connect().await?);
        }
        Ok(conns)
    }
}

/// A watch read by its own task into a shared state; the task ends on drop.
pub(crate) struct Watch<S> {
    state: Arc<Mutex<S>>,
    task: JoinHandle<Result<(), BenchError>>,
}

impl<S: Send + 'static> Watch<S> {
    pub(crate) async fn start(
        conn: Connection,
        path: &str,
        state: S,
        apply: fn(&mut S, &str, &Value, Instant),
    ) -> Result<Self, BenchError> {
        let mut reader = conn.watch(path).await?;
        let state = Arc::new(Mutex::new(state));
        let shared = state.clone();
        let path = path.to_string();
        let task = tokio::spawn(async move {
            while let Some((kind, object)) = reader.next_object().await? {
                let now = Instant::now();
                if kind == "ERROR" {
                    return Err(BenchError::Scenario(format!("watch {path}: {object}")));
                }
                apply(
                    &mut shared.lock().expect("watch state"),
                    &kind,
                    &object,
                    now,
                );
            }
            Err(BenchError::Scenario(format!(
                "watch {path}: the server ended it"
            )))
        });
        Ok(Self { state, task })
    }

    /// Polls every 5 ms until `done` holds (it returns what it has so far otherwise, for the
    /// error), the watch failed, the simulator exited or the deadline passed.
    pub(crate) async fn wait_until<T, P: std::fmt::Debug>(
        &self,
        sim: &mut SimProcess,
        deadline: Instant,
        what: &str,
        mut done: impl FnMut(&S) -> Result<T, P>,
    ) -> Result<T, BenchError> {
        loop {
            let progress = match done(&self.state.lock().expect("watch state")) {
                Ok(t) => return Ok(t),
                Err(p) => p,
            };
            if self.task.is_finished() {
                return Err(BenchError::Scenario(format!(
                    "waiting for {what}: the watch ended (at {progress:?})"
                )));
            }
            sim.check()?;
            if Instant::now() >= deadline {
                return Err(BenchError::Scenario(format!(
                    "waiting for {what}: deadline passed at {progress:?}"
                )));
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    pub(crate) fn with<T>(&self, f: impl FnOnce(&S) -> T) -> T {
        f(&self.state.lock().expect("watch state"))
    }
}

impl<S> Drop for Watch<S> {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The nodes whose Ready condition is True.
#[derive(Default)]
pub(crate) struct NodeState {
    ready: HashSet<String>,
}

impl NodeState {
    fn apply(&mut self, kind: &str, node: &Value, _: Instant) {
        let Some(name) = node["metadata"]["name"].as_str() else {
            return;
        };
        let ready = node["status"]["conditions"].as_array().is_some_and(|cs| {
            cs.iter()
                .any(|c| c["type"] == "Ready" && c["status"] == "True")
        });
        if ready && kind != "DELETED" {
            self.ready.insert(name.to_string());
        } else {
            self.ready.remove(name);
        }
    }
}

/// What a watch of pods saw: when each was first bound to a node, which are Running, which
/// are gone.
#[derive(Default)]
pub(crate) struct PodState {
    pub bound: HashMap<String, Instant>,
    pub running: HashSet<String>,
    pub deleted: HashSet<String>,
}

impl PodState {
    pub(crate) fn apply(&mut self, kind: &str, pod: &Value, now: Instant) {
        let Some(name) = pod["metadata"]["name"].as_str() else {
            return;
        };
        if kind == "DELETED" {
            self.deleted.insert(name.to_string());
            self.running.remove(name);
            return;
        }
        if pod["spec"]["nodeName"]
            .as_str()
            .is_some_and(|n| !n.is_empty())
            && !self.bound.contains_key(name)
        {
            self.bound.insert(name.to_string(), now);
        }
        if pod["status"]["phase"] == "Running" {
            self.running.insert(name.to_string());
        }
    }
}

/// A pod like the ones kwok's and scheduler_perf's benchmarks create: one container, small
/// requests, no node chosen.
pub(crate) fn pod(namespace: &str, name: &str) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "labels": {"app": "bench"}},
        "spec": {"containers": [{
            "name": "app",
            "image": "registry.local/bench/pause:3.10",
            "resources": {"requests": {"cpu": "100m", "memory": "500Mi"}}
        }]}
    })
}

/// Creates pods `{prefix}0` … `{prefix}{count-1}` from `conns.len()` clients at once.
pub(crate) async fn create_pods(
    conns: &mut [Connection],
    namespace: &str,
    prefix: &str,
    count: usize,
) -> Result<(), BenchError> {
    let path = format!("/api/v1/namespaces/{namespace}/pods");
    let writers = conns.len();
    let runs = conns.iter_mut().enumerate().map(|(w, conn)| {
        let path = &path;
        async move {
            for i in (w..count).step_by(writers) {
                let body = pod(namespace, &format!("{prefix}{i}"));
                conn.expect(
                    Method::POST,
                    path,
                    Some(to_bytes(&body)),
                    StatusCode::CREATED,
                )
                .await?;
            }
            Ok::<_, BenchError>(())
        }
    });
    futures::future::try_join_all(runs).await?;
    Ok(())
}

/// Deletes pods `{prefix}0` … `{prefix}{count-1}` from `conns.len()` clients at once.
async fn delete_pods(
    conns: &mut [Connection],
    namespace: &str,
    prefix: &str,
    count: usize,
) -> Result<(), BenchError> {
    let writers = conns.len();
    let runs = conns.iter_mut().enumerate().map(|(w, conn)| async move {
        for i in (w..count).step_by(writers) {
            let path = format!("/api/v1/namespaces/{namespace}/pods/{prefix}{i}");
            // 202 while the pod terminates gracefully (the simulator then removes it).
            let response = conn.send(Method::DELETE, &path, None).await?;
            if !matches!(response.status, StatusCode::OK | StatusCode::ACCEPTED) {
                return Err(BenchError::Status {
                    method: "DELETE".into(),
                    path,
                    status: response.status.as_u16(),
                    body: String::from_utf8_lossy(&response.body[..response.body.len().min(500)])
                        .into_owned(),
                });
            }
        }
        Ok::<_, BenchError>(())
    });
    futures::future::try_join_all(runs).await?;
    Ok(())
}

pub async fn run(options: &Options) -> Result<Vec<Figure>, BenchError> {
    let (nodes, pods, limit) = if options.quick {
        (50, 100, Duration::from_secs(60))
    } else {
        (5_000, 10_000, Duration::from_secs(300))
    };
    let mut cluster = Cluster::start(options, nodes, limit).await?;
    let mut conns = cluster.connections(WRITERS).await?;
    create_namespace(&mut conns[0], NAMESPACE).await?;
    let watch = Watch::start(
        cluster.client.connect().await?,
        &format!("/api/v1/namespaces/{NAMESPACE}/pods?watch=1"),
        PodState::default(),
        PodState::apply,
    )
    .await?;

    let began = Instant::now();
    create_pods(&mut conns, NAMESPACE, "pod-", pods).await?;
    let created = began.elapsed();
    watch
        .wait_until(&mut cluster.sim, began + limit, "pods Running", |s| {
            (s.running.len() >= pods)
                .then_some(())
                .ok_or((s.bound.len(), s.running.len()))
        })
        .await?;
    let running = began.elapsed();
    // What the target is about: the server holding every node and every pod.
    let server_rss = cluster.server.rss_bytes()? as f64;
    let sim_rss = cluster.sim.rss_bytes()? as f64;

    let began = Instant::now();
    delete_pods(&mut conns, NAMESPACE, "pod-", pods).await?;
    watch
        .wait_until(&mut cluster.sim, began + limit, "pods deleted", |s| {
            (s.deleted.len() >= pods)
                .then_some(())
                .ok_or(s.deleted.len())
        })
        .await?;
    let deleted = began.elapsed();
    drop(watch);
    drop(conns);
    let nodes_ready = cluster.nodes_ready;
    drop(cluster);

    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    Ok(vec![
        Figure::new(
            SCENARIO,
            "bulk.nodes_ready_ms",
            format!("{nodes} simulated nodes registered and Ready (rkube sim start to the last Ready)"),
            ms(nodes_ready),
            Unit::Millis,
        )
        .published_reference("kwok benchmark limit", KWOK_NODES_MS)
        .target(Target::AtMost(10_000.0)),
        Figure::new(
            SCENARIO,
            "bulk.pods_running_ms",
            format!(
                "{pods} pods created ({WRITERS} clients), scheduled and Running (first create to the last Running)"
            ),
            ms(running),
            Unit::Millis,
        )
        .published_reference("kwok benchmark limit", KWOK_PODS_MS)
        .target(Target::AtMost(20_000.0)),
        Figure::new(
            SCENARIO,
            "bulk.pod_creates_per_s",
            format!("pod creates/s while creating the {pods} pods, {WRITERS} clients"),
            pods as f64 / created.as_secs_f64(),
            Unit::PerSecond,
        ),
        Figure::new(
            SCENARIO,
            "bulk.pods_deleted_ms",
            format!("{pods} pods deleted ({WRITERS} clients) until the last is gone"),
            ms(deleted),
            Unit::Millis,
        )
        .published_reference("kwok benchmark limit", KWOK_DELETE_MS)
        .target(Target::AtMost(20_000.0)),
        Figure::new(
            SCENARIO,
            "bulk.server_rss_bytes",
            format!("server RSS with {nodes} nodes and {pods} Running pods"),
            server_rss,
            Unit::Bytes,
        )
        .target(Target::AtMost(500.0 * MIB)),
        Figure::new(
            SCENARIO,
            "bulk.sim_rss_bytes",
            format!("rkube sim RSS with {nodes} nodes and {pods} pods (its own process)"),
            sim_rss,
            Unit::Bytes,
        ),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pod_state_tracks_binding_running_and_deletion() {
        let mut s = PodState::default();
        let t0 = Instant::now();
        let pending = pod("ns", "p");
        s.apply("ADDED", &pending, t0);
        assert!(s.bound.is_empty() && s.running.is_empty());
        let mut bound = pending.clone();
        bound["spec"]["nodeName"] = json!("sim-3");
        let t1 = t0 + Duration::from_millis(5);
        s.apply("MODIFIED", &bound, t1);
        let mut running = bound.clone();
        running["status"]["phase"] = json!("Running");
        s.apply("MODIFIED", &running, t1 + Duration::from_millis(5));
        // The first bind is kept, not a later update of a bound pod.
        assert_eq!(s.bound["p"], t1);
        assert!(s.running.contains("p"));
        s.apply("DELETED", &running, t1);
        assert!(s.deleted.contains("p") && s.running.is_empty());
    }

    #[test]
    fn node_state_counts_ready_nodes() {
        let mut s = NodeState::default();
        let node = |status: &str| {
            json!({"metadata": {"name": "sim-0"},
                   "status": {"conditions": [{"type": "MemoryPressure", "status": "False"},
                                             {"type": "Ready", "status": status}]}})
        };
        s.apply("ADDED", &node("False"), Instant::now());
        assert!(s.ready.is_empty());
        s.apply("MODIFIED", &node("True"), Instant::now());
        assert_eq!(s.ready.len(), 1);
        s.apply("DELETED", &node("True"), Instant::now());
        assert!(s.ready.is_empty());
    }
}
