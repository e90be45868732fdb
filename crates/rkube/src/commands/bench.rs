//! `rkube bench`: the benchmark suite (crate `bench`), its table, document and JSON.

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::{Args, Subcommand};

/// Where the published figures live, relative to the repository root.
const DEFAULT_DOC: &str = "docs/benchmarks.md";

#[derive(Args, Debug)]
pub struct BenchArgs {
    #[command(subcommand)]
    pub command: BenchCommand,
}

#[derive(Subcommand, Debug)]
pub enum BenchCommand {
    /// Embedded store vs Debian's etcd (started on loopback): writes/s and latency with 1 and 16 writers, watch latency.
    Store(RunArgs),
    /// A real server over HTTPS keep-alive, 8 clients: GET/create/update/list/watch latency, beside the store alone.
    Api(RunArgs),
    /// Start to /readyz on a warm data dir, idle RSS, binary size.
    Startup(RunArgs),
    /// 100,000 ConfigMaps of 1 KiB through the API: server RSS against the stored bytes.
    Memory(RunArgs),
    /// kwok's benchmark: 5,000 simulated nodes Ready, 10,000 pods Running, then deleted; server and simulator RSS.
    Bulk(RunArgs),
    /// scheduler_perf SchedulingBasic 5000Nodes_10000Pods: pods bound per second (average, p50, p90, p99).
    Scheduler(RunArgs),
    /// Real containers (root): 20 pods created at once to Running and Ready, p50/p99, beside a bare runc run; agent and shim RSS and agent CPU with 100 pods.
    Pods(RunArgs),
    /// Service proxy (root): nftables full sync and one-endpoint change for 1,000 and 10,000 Services × 10 endpoints, beside iptables-restore of kube-proxy's rules.
    Proxy(RunArgs),
    /// Cluster DNS: queries/s and p50/p99 from one client, 16 in flight, beside dnsmasq serving the same names.
    Dns(RunArgs),
    /// Binary size; RSS and CPU of the server idle, with its agent (root), of `rkube agent` idle and with 20 and 100 pods (root), and of the server with 5,000 simulated nodes; k3s's published profile.
    Footprint(RunArgs),
    /// Every scenario; rewrites the whole document.
    All(RunArgs),
    /// Print which figures of NEW got worse than in OLD beyond their noise; exit 1 if any did.
    Compare {
        /// A report written by `--json`.
        old: PathBuf,
        new: PathBuf,
    },
}

#[derive(Args, Debug)]
pub struct RunArgs {
    /// Small sizes and short loops: seconds per scenario (for CI). Writes no document unless --doc is given.
    #[arg(long)]
    pub quick: bool,
    /// Also write the figures as JSON here (the input of `rkube bench compare`).
    #[arg(long, value_name = "PATH")]
    pub json: Option<PathBuf>,
    /// The document to write [default: docs/benchmarks.md, when run from the repository root].
    #[arg(long, value_name = "PATH", conflicts_with = "no_doc")]
    pub doc: Option<PathBuf>,
    /// Write no document.
    #[arg(long)]
    pub no_doc: bool,
    /// The rkube binary to start as a server [default: this one].
    #[arg(long, value_name = "PATH")]
    pub binary: Option<PathBuf>,
}

pub fn run(args: BenchArgs) -> anyhow::Result<()> {
    let (scenarios, run_args) = match args.command {
        BenchCommand::Compare { old, new } => return compare(&old, &new),
        BenchCommand::Store(a) => (vec![bench::Scenario::Store], a),
        BenchCommand::Api(a) => (vec![bench::Scenario::Api], a),
        BenchCommand::Startup(a) => (vec![bench::Scenario::Startup], a),
        BenchCommand::Memory(a) => (vec![bench::Scenario::Memory], a),
        BenchCommand::Bulk(a) => (vec![bench::Scenario::Bulk], a),
        BenchCommand::Scheduler(a) => (vec![bench::Scenario::Scheduler], a),
        BenchCommand::Pods(a) => (vec![bench::Scenario::Pods], a),
        BenchCommand::Proxy(a) => (vec![bench::Scenario::Proxy], a),
        BenchCommand::Dns(a) => (vec![bench::Scenario::Dns], a),
        BenchCommand::Footprint(a) => (vec![bench::Scenario::Footprint], a),
        BenchCommand::All(a) => (bench::Scenario::ALL.to_vec(), a),
    };
    let rewrite = scenarios.len() == bench::Scenario::ALL.len();
    let binary = match run_args.binary {
        Some(path) => path,
        None => std::env::current_exe().context("finding the rkube binary to benchmark")?,
    };
    let options = bench::Options {
        quick: run_args.quick,
        binary,
    };
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    if let Some(load) = bench::figure::load_average()
        && load > cores as f64 / 2.0
    {
        eprintln!(
            "bench: load average {load:.2} on {cores} cores: other work on this machine will skew the figures"
        );
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let report = runtime.block_on(bench::run(
        &scenarios,
        &options,
        command_line(),
        |scenario| {
            eprintln!("bench: running {}", scenario.name());
        },
    ))?;
    drop(runtime);

    print!("{}", bench::output::table(&report));
    if let Some(path) = &run_args.json {
        bench::write_report(path, &report)?;
        eprintln!("bench: figures written to {}", path.display());
    }
    let doc = match (run_args.doc, run_args.no_doc || run_args.quick) {
        (Some(path), _) => Some(path),
        (None, true) => None,
        (None, false) if Path::new(DEFAULT_DOC).parent().is_some_and(Path::is_dir) => {
            Some(DEFAULT_DOC.into())
        }
        (None, false) => {
            eprintln!(
                "bench: not writing {DEFAULT_DOC}: no docs/ here (run from the repository root, or pass --doc)"
            );
            None
        }
    };
    if let Some(path) = doc {
        let existing = std::fs::read_to_string(&path).ok();
        let text =
            bench::output::update_markdown(existing.as_deref(), &report, &scenarios, rewrite);
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
        eprintln!("bench: {} updated", path.display());
    }
    Ok(())
}

fn compare(old: &Path, new: &Path) -> anyhow::Result<()> {
    let comparison = bench::compare::compare(&bench::read_report(old)?, &bench::read_report(new)?);
    print!("{}", bench::compare::render(&comparison));
    if comparison.regressions().next().is_some() {
        std::process::exit(1);
    }
    Ok(())
}

/// The command as typed, for the document (arguments with spaces quoted).
fn command_line() -> String {
    std::env::args()
        .map(|arg| {
            if arg.is_empty() || arg.contains(char::is_whitespace) {
                format!("'{arg}'")
            } else {
                arg
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}
