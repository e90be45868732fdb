//! `rkube sim`: simulated nodes that run pods instantly (see the `sim` crate for what a
//! simulated container does).

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;

#[derive(Args, Debug)]
pub struct SimArgs {
    /// Kubeconfig of the cluster to join (e.g. the server's `<data-dir>/kubeconfig.yaml`).
    #[arg(long, env = "KUBECONFIG")]
    pub kubeconfig: PathBuf,
    /// How many nodes to simulate.
    #[arg(long, default_value_t = 1)]
    pub nodes: usize,
    /// CPU capacity of each node.
    #[arg(long, default_value = "32")]
    pub cpu: String,
    /// Memory capacity of each node.
    #[arg(long, default_value = "256Gi")]
    pub memory: String,
    /// Pod capacity of each node.
    #[arg(long, default_value_t = 110)]
    pub pods: u32,
    /// Ephemeral storage capacity of each node.
    #[arg(long, default_value = "100Gi")]
    pub ephemeral_storage: String,
    /// Nodes are named PREFIX0, PREFIX1, ...
    #[arg(long, default_value = "sim-")]
    pub name_prefix: String,
    /// Multiplies simulated durations (container sleeps, probe delays, crash-loop back-off).
    #[arg(long, default_value_t = 1.0)]
    pub time_scale: f64,
    /// Requests in flight at once.
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
    /// `spec.leaseDurationSeconds` of the node Leases; as the kubelet does, each Lease is renewed
    /// every quarter of it. Lower it below the default when the server runs with a short
    /// `--node-monitor-grace-period`, or the nodes flap to NotReady between renewals.
    #[arg(long, default_value_t = 40, value_parser = clap::value_parser!(i32).range(1..))]
    pub node_lease_duration_seconds: i32,
    /// Register and heartbeat the nodes only: bound pods stay Pending (as on scheduler_perf's
    /// nodes, which run no kubelet), for scheduler benchmarks.
    #[arg(long)]
    pub no_run_pods: bool,
    /// Label the nodes with these zones (`topology.kubernetes.io/zone`), round robin.
    #[arg(long, value_delimiter = ',')]
    pub zones: Vec<String>,
}

pub fn run(args: SimArgs) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(simulate(args))
}

async fn simulate(args: SimArgs) -> anyhow::Result<()> {
    if !(args.time_scale.is_finite() && args.time_scale >= 0.0) {
        anyhow::bail!(
            "--time-scale {}: must be a non-negative number",
            args.time_scale
        );
    }
    let client = sim::client_from_kubeconfig_file(&args.kubeconfig).await?;
    let config = sim::SimConfig {
        nodes: args.nodes,
        name_prefix: args.name_prefix,
        cpu: args.cpu,
        memory: args.memory,
        pods: args.pods,
        ephemeral_storage: args.ephemeral_storage,
        time_scale: args.time_scale,
        concurrency: args.concurrency,
        run_pods: !args.no_run_pods,
        zones: args.zones,
        lease_duration_seconds: args.node_lease_duration_seconds,
        renew_interval: std::time::Duration::from_millis(
            u64::from(args.node_lease_duration_seconds.unsigned_abs()) * 250,
        ),
        ..Default::default()
    };
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        result = sim::run(client, config) => result,
        _ = tokio::signal::ctrl_c() => {
            tracing::info!("interrupted; the simulated nodes stop renewing their leases");
            Ok(())
        }
        _ = term.recv() => {
            tracing::info!("terminated; the simulated nodes stop renewing their leases");
            Ok(())
        }
    }
}
