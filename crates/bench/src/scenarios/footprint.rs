//! `footprint`: what rkube costs a machine. The binary's size; the resident memory (VmRSS)
//! and CPU (utime+stime from `/proc/<pid>/stat` over a window) of an idle
//! `rkube server --disable-agent`, of an idle server running its node agent; of `rkube agent`
//! as its own process idle, with 20 and with 100 real pods (and its shims' memory); of a
//! server running 5,000 simulated nodes once all are Ready.
//!
//! k3s's figures are quoted from its documentation, not measured here.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::figure::{Figure, MIB, Unit};
use crate::node::{
    AgentCost, AgentNode, Killall, NodeNames, build_image, condition_true, is_root, wait_node_ready,
};
use crate::process::{ServerProcess, cpu_use, rss_bytes};
use crate::scenarios::bulk::Watch;
use crate::{BenchError, Options};

const SCENARIO: &str = "footprint";
/// A /8 holds a /24 per simulated node (as the bulk scenario uses).
const SIM_CLUSTER_CIDR: &str = "10.0.0.0/8";
/// How long the simulated nodes may take to be Ready.
const SIM_READY_TIMEOUT: Duration = Duration::from_secs(600);

/// k3s's published resource profile (https://docs.k3s.io/reference/resource-profiling;
/// quoted, not measured). The lower of its two profiles is used for each figure: k3s 1.19.2
/// gives the minimum RAM of a server with a workload on kine/SQLite 768 M and of an agent
/// 256 M (its v1.26.5 profile: 1596 M and 275 M); v1.26.5 gives the minimum CPU, 6% of a core
/// for the server and 3% for the agent (Intel 8375C; 1.19.2: 10% and 5%).
const K3S_SERVER_RSS: f64 = 768.0 * MIB;
const K3S_AGENT_RSS: f64 = 256.0 * MIB;
const K3S_SERVER_CPU_PERCENT: f64 = 6.0;
const K3S_AGENT_CPU_PERCENT: f64 = 3.0;
/// The k3s README: "all in a binary less than 100 MB".
const K3S_BINARY: f64 = 100e6;
const K3S_SERVER_LABEL: &str = "k3s 1.19.2 server with a workload, published";
const K3S_AGENT_LABEL: &str = "k3s 1.19.2 agent, published";
const K3S_SERVER_CPU_LABEL: &str = "k3s v1.26.5 server with a workload, published";
const K3S_AGENT_CPU_LABEL: &str = "k3s v1.26.5 agent, published";
const K3S_BINARY_LABEL: &str = "k3s binary < 100 MB, published";

fn fail(message: impl Into<String>) -> BenchError {
    BenchError::Scenario(message.into())
}

fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> BenchError {
    let context = context.into();
    move |source| BenchError::Io { context, source }
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
    let rss = rss_bytes(pid)?;
    let cpu = cpu_use(pid, window).await?;
    Ok(Cost {
        rss,
        cpu_percent: cpu.own_percent,
    })
}

fn temp_dir() -> Result<tempfile::TempDir, BenchError> {
    tempfile::Builder::new()
        .prefix("rkube-bench-footprint-")
        .tempdir()
        .map_err(io(
            "create a temporary directory for the footprint scenario",
        ))
}

/// The nodes a watch saw Ready.
#[derive(Default)]
struct ReadyNodes(HashSet<String>);

impl ReadyNodes {
    fn apply(&mut self, kind: &str, node: &Value, _: Instant) {
        let Some(name) = node["metadata"]["name"].as_str() else {
            return;
        };
        if kind != "DELETED" && condition_true(node, "Ready") {
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

/// An idle `rkube server` running its node agent (node Ready, no pods): its cost.
async fn server_with_agent(
    options: &Options,
    settle: Duration,
    window: Duration,
) -> Result<Cost, BenchError> {
    let dir = temp_dir()?;
    let data = dir.path().join("data");
    let node = NodeNames::unique(1);
    // Declared before the server: it runs after the server is gone.
    let _killall = Killall {
        binary: options.binary.clone(),
        data_dir: data.clone(),
        node: node.clone(),
    };
    let mut args = node.agent_args();
    args.extend(["--cluster-cidr".to_string(), node.cluster_cidr.clone()]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut server =
        ServerProcess::spawn_with_agent(&options.binary, &data, testing::free_port(), &args)?;
    let client = server.wait_ready(None).await?;
    let mut conn = client.connect().await?;
    wait_node_ready(&mut conn, &node.node_name, || server.rss_bytes().map(drop)).await?;
    drop(conn);
    let cost = steady_cost(&server, settle, window).await?;
    server.stop()?;
    Ok(cost)
}

/// `rkube agent` as its own process: idle, then with each count of pods in `pods`.
async fn agent_alone(
    options: &Options,
    pods: &[usize],
    settle: Duration,
    window: Duration,
) -> Result<Vec<AgentCost>, BenchError> {
    let dir = temp_dir()?;
    let image = build_image(dir.path())?;
    let mut node = AgentNode::start(options, dir.path(), &image, 2).await?;
    let mut costs = vec![node.cost(settle, window).await?];
    for count in pods {
        node.scale_to(*count).await?;
        costs.push(node.cost(settle, window).await?);
    }
    node.finish().await?;
    Ok(costs)
}

pub async fn run(options: &Options) -> Result<Vec<Figure>, BenchError> {
    if !is_root() {
        return Err(fail(
            "the footprint scenario runs a node agent with real containers: run it as root \
             (with runc, the CNI plugins, busybox-static and umoci installed)",
        ));
    }
    let (sim_nodes, pods, settle, window): (usize, &[usize], _, _) = if options.quick {
        (
            50,
            &[2, 5],
            Duration::from_millis(300),
            Duration::from_secs(1),
        )
    } else {
        (
            5_000,
            &[20, 100],
            Duration::from_secs(5),
            Duration::from_secs(20),
        )
    };
    let binary_bytes = std::fs::metadata(&options.binary)
        .map_err(io(format!("size of {}", options.binary.display())))?
        .len();

    let alone = {
        let dir = temp_dir()?;
        let (server, _client) = ServerProcess::start(
            &options.binary,
            &dir.path().join("data"),
            testing::free_port(),
        )
        .await?;
        steady_cost(&server, settle, window).await?
    };
    let with_agent = server_with_agent(options, settle, window).await?;
    let agent = agent_alone(options, pods, settle, window).await?;
    let (sim, sim_ready) = sim_server(options, sim_nodes, settle, window).await?;

    let window_s = window.as_secs_f64();
    let mut figures = vec![
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
            format!(
                "CPU of `rkube server --disable-agent`, idle, % of one core over {window_s:.0} s"
            ),
            alone.cpu_percent,
            Unit::Ratio,
        )
        .published_reference(K3S_SERVER_CPU_LABEL, K3S_SERVER_CPU_PERCENT),
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
            "footprint.server_agent_cpu_percent",
            format!(
                "CPU of `rkube server` with its node agent, no pods, % of one core over {window_s:.0} s"
            ),
            with_agent.cpu_percent,
            Unit::Ratio,
        )
        .published_reference(K3S_SERVER_CPU_LABEL, K3S_SERVER_CPU_PERCENT),
    ];
    for cost in &agent {
        figures.extend(agent_figures(cost));
    }
    figures.extend([
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
    ]);
    Ok(figures)
}

/// The figures of `rkube agent` with `cost.pods` pods (keys end in the count; `idle` without
/// pods). k3s's agent figure is its whole service (agent, kubelet, containerd and shims), so
/// the agent's RSS plus its shims' PSS is held beside it once there are pods.
fn agent_figures(cost: &AgentCost) -> Vec<Figure> {
    let window_s = cost.cpu.window.as_secs_f64();
    if cost.pods == 0 {
        return vec![
            Figure::new(
                SCENARIO,
                "footprint.agent_idle_rss_bytes",
                "RSS of `rkube agent` (its own process), node Ready, no pods",
                cost.rss as f64,
                Unit::Bytes,
            )
            .published_reference(K3S_AGENT_LABEL, K3S_AGENT_RSS),
            Figure::new(
                SCENARIO,
                "footprint.agent_idle_cpu_percent",
                format!("CPU of `rkube agent`, no pods, % of one core over {window_s:.0} s"),
                cost.cpu.with_children_percent,
                Unit::Ratio,
            )
            .published_reference(K3S_AGENT_CPU_LABEL, K3S_AGENT_CPU_PERCENT),
        ];
    }
    let n = cost.pods;
    let shims = cost.shim_pss.len();
    vec![
        Figure::new(
            SCENARIO,
            &format!("footprint.agent_rss_bytes.{n}"),
            format!("RSS of `rkube agent` with {n} pods Running"),
            cost.rss as f64,
            Unit::Bytes,
        ),
        Figure::new(
            SCENARIO,
            &format!("footprint.node_rss_bytes.{n}"),
            format!(
                "`rkube agent` with {n} pods: its RSS plus the PSS of its {shims} shims (shared pages counted once)"
            ),
            cost.with_shims_bytes() as f64,
            Unit::Bytes,
        )
        .published_reference(K3S_AGENT_LABEL, K3S_AGENT_RSS),
        Figure::new(
            SCENARIO,
            &format!("footprint.agent_cpu_percent.{n}"),
            format!(
                "CPU of `rkube agent` with {n} pods (with the runc runs it reaped), % of one core over {window_s:.0} s"
            ),
            cost.cpu.with_children_percent,
            Unit::Ratio,
        )
        .published_reference(K3S_AGENT_CPU_LABEL, K3S_AGENT_CPU_PERCENT),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::process::CpuUse;

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

    fn cost(pods: usize) -> AgentCost {
        AgentCost {
            pods,
            rss: 20 << 20,
            cpu: CpuUse {
                own_percent: 0.5,
                with_children_percent: 1.5,
                window: Duration::from_secs(20),
            },
            shim_pss: vec![1 << 19; pods],
        }
    }

    #[test]
    fn agent_figures_are_keyed_by_pod_count_and_held_beside_k3s() {
        let idle = agent_figures(&cost(0));
        let keys: Vec<&str> = idle.iter().map(|f| f.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "footprint.agent_idle_rss_bytes",
                "footprint.agent_idle_cpu_percent"
            ]
        );
        assert_eq!(idle[1].value, 1.5, "CPU counts the children it reaped");

        let busy = agent_figures(&cost(100));
        let node = busy
            .iter()
            .find(|f| f.key == "footprint.node_rss_bytes.100")
            .unwrap();
        assert_eq!(node.value, (20u64 * MIB as u64 + 100 * (1 << 19)) as f64);
        let reference = node.reference.as_ref().unwrap();
        assert!(reference.published);
        assert_eq!(reference.value, K3S_AGENT_RSS);
        assert!(
            busy.iter()
                .any(|f| f.key == "footprint.agent_rss_bytes.100")
        );
        assert!(
            busy.iter()
                .any(|f| f.key == "footprint.agent_cpu_percent.100")
        );
    }
}
