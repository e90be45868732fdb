//! `rkube`: Kubernetes in one binary.

mod commands;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "rkube", version, about = "Kubernetes in one binary")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the control plane (API server; scheduler, controllers and node agent come later).
    Server(commands::server::ServerArgs),
    /// Measure speed and memory beside the references; write docs/benchmarks.md.
    Bench(commands::bench::BenchArgs),
    /// Simulated nodes that run pods instantly (like kwok), for scale tests.
    Sim(commands::sim::SimArgs),
    /// The node's images: ls, rm, import, pull.
    Images(commands::images::ImagesArgs),
    /// Join a cluster as a node: kubelet and service proxy.
    Agent(commands::agent::AgentArgs),
    /// Stop every container of this node and remove its sandboxes, mounts and cgroups.
    Killall(commands::killall::KillallArgs),
    /// Internal: the per-container shim the node agent starts.
    #[command(hide = true)]
    Shim(runtime::shim::ShimArgs),
}

/// `rkube shim ...` alone: parsed without building the whole command tree, so that a shim
/// (one per container) touches as little of the binary as it can.
#[derive(Parser)]
#[command(name = "rkube shim")]
struct ShimOnly {
    #[command(flatten)]
    args: runtime::shim::ShimArgs,
}

fn main() -> anyhow::Result<()> {
    if std::env::args_os().nth(1).is_some_and(|a| a == "shim") {
        // No logging setup, no async runtime.
        let shim = ShimOnly::parse_from(std::env::args_os().skip(1));
        return runtime::shim::main(shim.args);
    }
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("RKUBE_LOG")
                .unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    match cli.command {
        Command::Server(args) => commands::server::run(args),
        Command::Bench(args) => commands::bench::run(args),
        Command::Sim(args) => commands::sim::run(args),
        Command::Images(args) => commands::images::run(args),
        Command::Agent(args) => commands::agent::run(args),
        Command::Killall(args) => commands::killall::run(args),
        Command::Shim(args) => runtime::shim::main(args),
    }
}
