//! `footprint`: what rkube costs a machine. The binary's size; the resident memory (VmRSS)
//! and CPU (utime+stime from `/proc/<pid>/stat` over a window) of an idle
//! `rkube server --disable-agent`, of an idle server running its node agent with no pods, and
//! of a server running 5,000 simulated nodes once all are Ready. The agent with 20 and 100
//! pods is measured by the `pods` scenario.
//!
//! k3s's figures are quoted from its documentation, not measured here.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use http::{Method, StatusCode};
use serde_json::Value;

use crate::client::ApiClient;
use crate::figure::{Figure, MIB, Unit};
use crate::process::{ServerProcess, rss_bytes};
use crate::scenarios::bulk::Watch;
use crate::scenarios::proxy::is_root;
use crate::{BenchError, Options};

const SCENARIO: &str = "footprint";
/// A /8 holds a /24 per simulated node (as the bulk scenario uses).
const SIM_CLUSTER_CIDR: &str = "10.0.0.0/8";
/// How long the node of the server with its agent may take to be Ready.
const NODE_READY_TIMEOUT: Duration = Duration::from_secs(120);
/// How long the simulated nodes may take to be Ready.
const SIM_READY_TIMEOUT: Duration = Duration::from_secs(600);

/// k3s's published resource profile (docs.k3s.io, "Resource Profiling"; quoted, not
/// measured). Its k3s 1.19.2 profile gives the lower figures used here: minimum RAM of a
/// server with a workload on kine/SQLite 768 M, of an agent 256 M; its k3s v1.26.5 profile
/// gives 1596 M and 275 M, and a server's minimum CPU of 6% of a core (Intel 8375C).
const K3S_SERVER_RSS: f64 = 768.0 * MIB;
const K3S_AGENT_RSS: f64 = 256.0 * MIB;
const K3S_SERVER_CPU_PERCENT: f64 = 6.0;
/// The k3s README: "all in a binary less than 100 MB".
const K3S_BINARY: f64 = 100e6;
const K3S_SERVER_LABEL: &str = "k3s 1.19.2 server with a workload, published";
const K3S_AGENT_LABEL: &str = "k3s 1.19.2 agent, published";
const K3S_CPU_LABEL: &str = "k3s v1.26.5 server with a workload, published";
const K3S_BINARY_LABEL: &str = "k3s binary < 100 MB, published";

fn fail(message: impl Into<String>) -> BenchError {
    BenchError::Scenario(message.into())
}

fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> BenchError {
    let context = context.into();
    move |source| BenchError::Io { context, source }
}

/// utime+stime of a `/proc/<pid>/stat` line, in clock ticks (fields 14 and 15; the command
/// name in parentheses may hold spaces, so fields are counted after the last `)`).
fn parse_cpu_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

fn cpu_ticks(pid: u32) -> Result<u64, BenchError> {
    let path = format!("/proc/{pid}/stat");
    let text = std::fs::read_to_string(&path).map_err(io(format!("read {path}")))?;
    parse_cpu_ticks(&text).ok_or_else(|| fail(format!("{path}: unexpected format")))
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

/// What one process costs at steady state.
struct Cost {
    rss: u64,
    /// CPU over the window, % of one core.
    cpu_percent: f64,
}

/// Waits `settle` (start-up work done), then reads the RSS and the CPU used over `window`.
async fn steady_cost(
    server: &ServerProcess,
    settle: Duration,
    window: Duration,
) -> Result<Cost, BenchError> {
    tokio::time::sleep(settle).await;
    let pid = server
        .pid()
        .ok_or_else(|| fail("rkube server is not running"))?;
    let before = cpu_ticks(pid)?;
    let began = Instant::now();
    tokio::time::sleep(window).await;
    let after = cpu_ticks(pid)?;
    let elapsed = began.elapsed().as_secs_f64();
    let rss = rss_bytes(pid)?;
    Ok(Cost {
        rss,
        cpu_percent: after.saturating_sub(before) as f64 / clock_ticks() / elapsed * 100.0,
    })
}

fn temp_dir() -> Result<tempfile::TempDir, BenchError> {
    tempfile::Builder::new()
        .prefix("rkube-bench-footprint-")
        .tempdir()
        .map_err(io("create a temporary directory for rkube server"))
}

/// What keeps the benchmark's node apart from other agents on the machine, and `rkube
/// killall` of what its agent set up, run on drop (declare it before the server: locals drop
/// in reverse order).
struct Node {
    binary: PathBuf,
    data_dir: PathBuf,
    name: String,
    cgroup_root: String,
    bridge: String,
    args: Vec<String>,
}

impl Node {
    fn new(binary: &Path, data_dir: &Path) -> Self {
        let id = std::process::id() % 100_000;
        let name = format!("bench-footprint-{id}");
        let cgroup_root = format!("/rkube-bench-footprint-{id}/kubepods");
        let bridge = format!("rkf{id}");
        let args = vec![
            "--node-name".to_string(),
            name.clone(),
            "--kubelet-port".into(),
            testing::free_port().to_string(),
            "--cgroup-root".into(),
            cgroup_root.clone(),
            "--cni-bridge".into(),
            bridge.clone(),
            // Outside 10.64.0.0/10, which the test harness hands to its clusters, and apart
            // from the pods scenario's.
            "--cluster-cidr".into(),
            format!("10.{}.0.0/16", 224 + id % 32),
        ];
        Self {
            binary: binary.to_path_buf(),
            data_dir: data_dir.to_path_buf(),
            name,
            cgroup_root,
            bridge,
            args,
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let out = Command::new(&self.binary)
            .arg("killall")
            .arg("--data-dir")
            .arg(&self.data_dir)
            .arg("--cgroup-root")
            .arg(&self.cgroup_root)
            .arg("--cni-bridge")
            .arg(&self.bridge)
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
        if let Some(parent) = Path::new(&self.cgroup_root).parent()
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

fn is_ready(node: &Value) -> bool {
    node["status"]["conditions"].as_array().is_some_and(|cs| {
        cs.iter()
            .any(|c| c["type"] == "Ready" && c["status"] == "True")
    })
}

/// Polls the Node until its Ready condition is True, checking that the server still runs.
async fn wait_node_ready(
    server: &ServerProcess,
    client: &ApiClient,
    name: &str,
) -> Result<(), BenchError> {
    let mut conn = client.connect().await?;
    let path = format!("/api/v1/nodes/{name}");
    let deadline = Instant::now() + NODE_READY_TIMEOUT;
    loop {
        // Fails once the server has exited.
        server.rss_bytes()?;
        let response = conn.send(Method::GET, &path, None).await?;
        if response.status == StatusCode::OK {
            let node: Value = serde_json::from_slice(&response.body)
                .map_err(|e| fail(format!("GET {path}: {e}")))?;
            if is_ready(&node) {
                return Ok(());
            }
        }
        if Instant::now() >= deadline {
            return Err(fail(format!(
                "node {name} not Ready within {NODE_READY_TIMEOUT:?}"
            )));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The nodes a watch saw Ready.
#[derive(Default)]
struct ReadyNodes(HashSet<String>);

impl ReadyNodes {
    fn apply(&mut self, kind: &str, node: &Value, _: Instant) {
        let Some(name) = node["metadata"]["name"].as_str() else {
            return;
        };
        if kind != "DELETED" && is_ready(node) {
            self.0.insert(name.to_string());
        } else {
            self.0.remove(name);
        }
    }
}

/// A server with `nodes` simulated nodes in its process: its cost once all are Ready.
async fn sim_server(
    options: &Options,
    nodes: usize,
    settle: Duration,
    window: Duration,
) -> Result<(Cost, Duration), BenchError> {
    let dir = temp_dir()?;
    let count = nodes.to_string();
    let began = Instant::now();
    let (server, client) = ServerProcess::start_with(
        &options.binary,
        &dir.path().join("data"),
        testing::free_port(),
        &["--cluster-cidr", SIM_CLUSTER_CIDR, "--sim-nodes", &count],
    )
    .await?;
    let watch = Watch::start(
        client.connect().await?,
        "/api/v1/nodes?watch=1",
        ReadyNodes::default(),
        ReadyNodes::apply,
    )
    .await?;
    let deadline = began + SIM_READY_TIMEOUT;
    loop {
        let ready = watch.with(|s| s.0.len());
        if ready >= nodes {
            break;
        }
        server.rss_bytes()?;
        if Instant::now() >= deadline {
            return Err(fail(format!(
                "{ready} of {nodes} simulated nodes Ready after {SIM_READY_TIMEOUT:?}"
            )));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let ready_after = began.elapsed();
    drop(watch);
    let cost = steady_cost(&server, settle, window).await?;
    drop(server);
    Ok((cost, ready_after))
}

pub async fn run(options: &Options) -> Result<Vec<Figure>, BenchError> {
    if !is_root() {
        return Err(fail(
            "the footprint scenario runs a node agent: run it as root (with runc and the CNI plugins installed)",
        ));
    }
    let (sim_nodes, settle, window) = if options.quick {
        (50, Duration::from_millis(300), Duration::from_secs(1))
    } else {
        (5_000, Duration::from_secs(5), Duration::from_secs(20))
    };
    let binary_bytes = std::fs::metadata(&options.binary)
        .map_err(io(format!("size of {}", options.binary.display())))?
        .len();

    // The server alone.
    let dir = temp_dir()?;
    let (server, _client) = ServerProcess::start(
        &options.binary,
        &dir.path().join("data"),
        testing::free_port(),
    )
    .await?;
    let alone = steady_cost(&server, settle, window).await?;
    drop(server);
    drop(dir);

    // The server with its node agent, the node Ready, no pods.
    let dir = temp_dir()?;
    let data = dir.path().join("data");
    let node = Node::new(&options.binary, &data);
    let args: Vec<&str> = node.args.iter().map(String::as_str).collect();
    let mut server =
        ServerProcess::spawn_with_agent(&options.binary, &data, testing::free_port(), &args)?;
    let client = server.wait_ready(None).await?;
    wait_node_ready(&server, &client, &node.name).await?;
    let with_agent = steady_cost(&server, settle, window).await?;
    server.stop()?;
    drop(server);
    drop(node);
    drop(dir);

    let (sim, sim_ready) = sim_server(options, sim_nodes, settle, window).await?;

    let window_s = window.as_secs_f64();
    let agent_share = with_agent.rss.saturating_sub(alone.rss);
    Ok(vec![
        Figure::new(
            SCENARIO,
            "footprint.binary_bytes",
            format!("size of {}", options.binary.display()),
            binary_bytes as f64,
            Unit::Bytes,
        )
        .published_reference(K3S_BINARY_LABEL, K3S_BINARY),
        Figure::new(
            SCENARIO,
            "footprint.server_rss_bytes",
            "RSS of `rkube server --disable-agent`, idle",
            alone.rss as f64,
            Unit::Bytes,
        )
        .published_reference(K3S_SERVER_LABEL, K3S_SERVER_RSS),
        Figure::new(
            SCENARIO,
            "footprint.server_cpu_percent",
            format!("CPU of `rkube server --disable-agent`, idle, % of one core over {window_s:.0} s"),
            alone.cpu_percent,
            Unit::Ratio,
        ),
        Figure::new(
            SCENARIO,
            "footprint.server_agent_rss_bytes",
            "RSS of `rkube server` with its node agent, node Ready, no pods",
            with_agent.rss as f64,
            Unit::Bytes,
        )
        .published_reference(K3S_SERVER_LABEL, K3S_SERVER_RSS),
        Figure::new(
            SCENARIO,
            "footprint.agent_share_rss_bytes",
            "the agent's share: RSS of the server with its agent minus without",
            agent_share as f64,
            Unit::Bytes,
        )
        .published_reference(K3S_AGENT_LABEL, K3S_AGENT_RSS),
        Figure::new(
            SCENARIO,
            "footprint.server_agent_cpu_percent",
            format!(
                "CPU of `rkube server` with its node agent, no pods, % of one core over {window_s:.0} s"
            ),
            with_agent.cpu_percent,
            Unit::Ratio,
        )
        .published_reference(K3S_CPU_LABEL, K3S_SERVER_CPU_PERCENT),
        Figure::new(
            SCENARIO,
            "footprint.sim_server_rss_bytes",
            format!(
                "RSS of `rkube server --sim-nodes {sim_nodes}` once all nodes are Ready ({:.1} s after start)",
                sim_ready.as_secs_f64()
            ),
            sim.rss as f64,
            Unit::Bytes,
        ),
        Figure::new(
            SCENARIO,
            "footprint.sim_server_cpu_percent",
            format!(
                "CPU of `rkube server --sim-nodes {sim_nodes}` at steady state (node leases renewed), % of one core over {window_s:.0} s"
            ),
            sim.cpu_percent,
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
            "1234 (rkube server) S 1 1234 1234 0 -1 4194560 5000 0 0 0 150 25 7 3 20 0 4 0 100 0 0";
        assert_eq!(parse_cpu_ticks(stat), Some(175));
        assert_eq!(parse_cpu_ticks("1234 (x) S 1"), None);
    }

    #[test]
    fn own_cpu_ticks_are_read() {
        assert!(cpu_ticks(std::process::id()).is_ok());
    }

    #[test]
    fn ready_nodes_follow_the_condition() {
        let mut s = ReadyNodes::default();
        let mut node = serde_json::json!({
            "metadata": {"name": "n1"},
            "status": {"conditions": [{"type": "Ready", "status": "True"}]}
        });
        s.apply("ADDED", &node, Instant::now());
        assert_eq!(s.0.len(), 1);
        node["status"]["conditions"][0]["status"] = "Unknown".into();
        s.apply("MODIFIED", &node, Instant::now());
        assert!(s.0.is_empty());
    }
}
