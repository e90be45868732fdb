//! The benchmark suite behind `rkube bench`: scenarios that measure rkube beside the
//! references that run on the same machine, and the table, document and JSON they produce.
//!
//! Every load loop is bounded in count and in time ([`stats::Budget`]); every process a
//! scenario starts (etcd, `rkube server`) is owned by a guard that kills it on drop.
//!
//! API Boundary: [`run`], [`Scenario`], [`Options`], [`figure::Report`] (also the JSON format
//! that [`compare`] reads), [`output`].

use std::path::PathBuf;

pub mod client;
pub mod compare;
pub mod figure;
pub(crate) mod node;
pub mod output;
pub mod process;
pub mod scenarios;
pub mod stats;

pub use figure::{Figure, Machine, Report, Target, Unit};

#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("kubeconfig {path}: {reason}")]
    Kubeconfig { path: String, reason: String },
    #[error("{method} {path}: {reason}")]
    Http {
        method: String,
        path: String,
        reason: String,
    },
    #[error("{method} {path}: unexpected status {status}: {body}")]
    Status {
        method: String,
        path: String,
        status: u16,
        body: String,
    },
    #[error("{backend} store: {source}")]
    Store {
        backend: &'static str,
        #[source]
        source: store::StoreError,
    },
    #[error(transparent)]
    Etcd(#[from] testing::Error),
    #[error("rkube server {reason}; last lines of its log:\n{log}")]
    Server { reason: String, log: String },
    #[error("{0}")]
    Scenario(String),
    #[error("report {path}: {reason}")]
    Report { path: String, reason: String },
}

/// A benchmark scenario.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scenario {
    Store,
    Api,
    Startup,
    Memory,
    Bulk,
    Scheduler,
    Pods,
    Proxy,
    Dns,
    Footprint,
}

impl Scenario {
    /// Every scenario, in the order `all` runs them and the document lists them.
    pub const ALL: [Scenario; 10] = [
        Scenario::Store,
        Scenario::Api,
        Scenario::Startup,
        Scenario::Memory,
        Scenario::Bulk,
        Scenario::Scheduler,
        Scenario::Pods,
        Scenario::Proxy,
        Scenario::Dns,
        Scenario::Footprint,
    ];

    /// Whether the scenario needs root (it runs containers or programs the kernel's
    /// packet filter); it fails early otherwise.
    pub fn needs_root(self) -> bool {
        matches!(self, Scenario::Pods | Scenario::Proxy | Scenario::Footprint)
    }

    pub fn name(self) -> &'static str {
        match self {
            Scenario::Store => "store",
            Scenario::Api => "api",
            Scenario::Startup => "startup",
            Scenario::Memory => "memory",
            Scenario::Bulk => "bulk",
            Scenario::Scheduler => "scheduler",
            Scenario::Pods => "pods",
            Scenario::Proxy => "proxy",
            Scenario::Dns => "dns",
            Scenario::Footprint => "footprint",
        }
    }

    /// What the scenario does, for the document.
    pub fn summary(self) -> &'static str {
        match self {
            Scenario::Store => {
                "The embedded store (SQLite, fsync on every commit) against Debian's etcd started on \
                 loopback (fsync by default): creates of distinct keys with 256-byte values from 1 and \
                 16 concurrent writers, and the time from a write until a watcher of its prefix sees it."
            }
            Scenario::Api => {
                "A real `rkube server --disable-agent --disable-scheduler --disable-controller-manager` (the API server alone, fsync on) driven by 8 clients, each on its own \
                 HTTPS keep-alive connection with the admin client certificate. Creates of pods (the \
                 pods the list returns), GETs, updates of ConfigMaps and a create until a watch of the \
                 namespace sees it; the reference is the same operation on the embedded store alone \
                 (same concurrency, values of the stored objects' size), so the ratio is the API \
                 layer's own cost."
            }
            Scenario::Startup => {
                "`rkube server --disable-agent` from exec to the first `/readyz` that answers 200 (polled \
                 every 2 ms), on a warm data dir; its RSS (`VmRSS`) a few seconds after start; the size \
                 of the binary."
            }
            Scenario::Memory => {
                "ConfigMaps with 1 KiB of data created through the API by 8 clients, then the server's \
                 RSS against the bytes of the objects as stored (the JSON the server returns on create)."
            }
            Scenario::Bulk => {
                "kwok's benchmark: `rkube server --disable-agent --cluster-cidr 10.0.0.0/8` (fsync on) \
                 and `rkube sim --nodes 5000` as its own process; the time until every node is Ready \
                 (seen by a watch), then 10,000 pods created directly by 16 clients until a watch \
                 sees all Running, then deleted until all are gone; the RSS of the server and of the \
                 simulator with every node and pod. The references are kwok's own limits (60 s, \
                 60 s, 90 s)."
            }
            Scenario::Scheduler => {
                "scheduler_perf's SchedulingBasic 5000Nodes_10000Pods shape with the API server and \
                 store in the loop: 5,000 simulated nodes (`rkube sim`), 1,000 pods placed first (not \
                 measured), then 10,000 pods created by 16 clients; a watch records when each pod is \
                 bound (`spec.nodeName` set) and throughput is sampled per second from the first \
                 bind to the last (average, p50, p90, p99 as scheduler_perf reports). The reference \
                 is upstream's CI threshold for the shape."
            }
            Scenario::Pods => {
                "Real containers on one node (root, runc, CNI bridge). A busybox image built \
                 offline with umoci and imported, so nothing is pulled. `rkube server` with its \
                 node agent: one warm-up pod, then 20 pods (`sleep 3600`, imagePullPolicy \
                 IfNotPresent) created at once by 20 clients; each pod's time from its create \
                 request to the first watch event showing it Running and Ready. The reference is \
                 `runc run -d` of the same rootfs with runc's default spec (no CNI, no shim, no \
                 API), 20 started at once in the same run; also 20 one after the other. Then \
                 `rkube agent` as its own process against a `--disable-agent` server with 100 \
                 such pods: the agent's RSS (and before any pod), every `rkube shim`'s RSS (max and mean) and PSS, and the \
                 agent's CPU (utime+stime from /proc) over 20 s of steady state."
            }
            Scenario::Proxy => {
                "The service proxy (root, nftables): crate `proxy`'s benchmark, in a throwaway \
                 network namespace, for 1,000 and 10,000 ClusterIP Services × 10 endpoints: the \
                 full sync (rules generated from the objects and loaded in one `nft` \
                 transaction) and one EndpointSlice change (an endpoint not ready) programmed. \
                 The reference, in the same run in another throwaway namespace: \
                 `iptables-restore --noflush`, with each of its backends (legacy, and nf_tables \
                 given 60 s: it grows faster than linearly), the faster being the reference, of \
                 the rule set kube-proxy's iptables mode writes \
                 for the same Services (KUBE-SERVICES, a KUBE-SVC chain per Service with \
                 `statistic random` jumps, a KUBE-SEP chain per endpoint with its DNAT), then of \
                 its partial sync after the same change (KUBE-SERVICES rewritten, one \
                 Service's chains, the stale endpoint chain deleted); script generation is not \
                 timed for the reference."
            }
            Scenario::Dns => {
                "The cluster DNS server (crate `dns`'s benchmark): 1,000 synthetic Services \
                 (every tenth headless), A queries for their names from one UDP client on \
                 loopback with 16 in flight; queries/s and latency percentiles. The reference \
                 is Debian's dnsmasq serving the same names from a hosts file (no upstream), \
                 driven by the same client in the same run."
            }
            Scenario::Footprint => {
                "What rkube costs a machine (root): the size of the binary; RSS (`VmRSS`) and CPU \
                 (utime+stime from `/proc/<pid>/stat`, % of one core) of an idle `rkube server \
                 --disable-agent` and of an idle `rkube server` running its node agent (node \
                 Ready, no pods); of `rkube agent` as its own process against a \
                 `--disable-agent` server, idle, then with 20 and with 100 busybox pods Running \
                 (built offline with umoci and imported; its CPU counts the runc runs it reaped; \
                 beside k3s its RSS plus its shims' PSS, as k3s's agent figure holds containerd \
                 and the shims); and of `rkube server --sim-nodes 5000` once every node is Ready \
                 (all with `--cluster-dns-port 0`). k3s's figures are *published*, quoted from \
                 https://docs.k3s.io/reference/resource-profiling (the lower of its two \
                 profiles for each: k3s 1.19.2 minimum RAM of a server with a workload 768 M, \
                 of an agent 256 M, where v1.26.5 gives 1596 M and 275 M; v1.26.5 minimum CPU, \
                 server 6% and agent 3% of a core) and the k3s README (binary under 100 MB), \
                 not measured here."
            }
        }
    }
}

impl std::str::FromStr for Scenario {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Scenario::ALL
            .into_iter()
            .find(|sc| sc.name() == s)
            .ok_or_else(|| {
                format!(
                    "unknown scenario {s:?}: expected one of {}",
                    Scenario::ALL.map(Scenario::name).join(", ")
                )
            })
    }
}

/// How to run.
#[derive(Debug, Clone)]
pub struct Options {
    /// Small sizes and short loops, seconds per scenario (for CI).
    pub quick: bool,
    /// The `rkube` binary to start as a server.
    pub binary: PathBuf,
}

/// Runs one scenario.
pub async fn run_scenario(
    scenario: Scenario,
    options: &Options,
) -> Result<Vec<Figure>, BenchError> {
    match scenario {
        Scenario::Store => scenarios::store::run(options).await,
        Scenario::Api => scenarios::api::run(options).await,
        Scenario::Startup => scenarios::startup::run(options).await,
        Scenario::Memory => scenarios::memory::run(options).await,
        Scenario::Bulk => scenarios::bulk::run(options).await,
        Scenario::Scheduler => scenarios::scheduler::run(options).await,
        Scenario::Pods => scenarios::pods::run(options).await,
        Scenario::Proxy => scenarios::proxy::run(options).await,
        Scenario::Dns => scenarios::dns::run(options).await,
        Scenario::Footprint => scenarios::footprint::run(options).await,
    }
}

/// Runs the scenarios one after the other; `progress` is called with each scenario's name
/// before it starts.
pub async fn run(
    scenarios: &[Scenario],
    options: &Options,
    command: String,
    mut progress: impl FnMut(Scenario),
) -> Result<Report, BenchError> {
    let date = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let load_average = figure::load_average();
    let mut figures = Vec::new();
    for scenario in scenarios {
        progress(*scenario);
        figures.extend(run_scenario(*scenario, options).await?);
    }
    Ok(Report {
        machine: Machine::detect(),
        command,
        date,
        quick: options.quick,
        load_average,
        figures,
    })
}

/// Reads a report written with `--json`.
pub fn read_report(path: &std::path::Path) -> Result<Report, BenchError> {
    let bad = |reason: String| BenchError::Report {
        path: path.display().to_string(),
        reason,
    };
    let text = std::fs::read_to_string(path).map_err(|e| bad(format!("read: {e}")))?;
    serde_json::from_str(&text).map_err(|e| bad(format!("parse: {e}")))
}

/// Writes a report as pretty JSON.
pub fn write_report(path: &std::path::Path, report: &Report) -> Result<(), BenchError> {
    let bad = |reason: String| BenchError::Report {
        path: path.display().to_string(),
        reason,
    };
    let json = serde_json::to_string_pretty(report).map_err(|e| bad(format!("serialize: {e}")))?;
    std::fs::write(path, json + "\n").map_err(|e| bad(format!("write: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scenario_names_round_trip() {
        for scenario in Scenario::ALL {
            assert_eq!(scenario.name().parse::<Scenario>(), Ok(scenario));
        }
        assert!(
            "etcd"
                .parse::<Scenario>()
                .unwrap_err()
                .contains("store, api, startup, memory")
        );
    }

    #[test]
    fn only_containers_and_packet_filters_need_root() {
        let root: Vec<&str> = Scenario::ALL
            .into_iter()
            .filter(|s| s.needs_root())
            .map(Scenario::name)
            .collect();
        assert_eq!(root, ["pods", "proxy", "footprint"]);
    }
}
