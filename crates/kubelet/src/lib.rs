//! The node agent (kubelet): registers this host as a Node and renews its Lease, runs the pods
//! bound to it as real containers (through [`runtime`]), reports their status, and serves logs,
//! exec, attach and port-forward to the API server.
//!
//! Like every component it talks only to the API server, and keeps no state it cannot rebuild:
//! on start it finds its sandboxes and containers on disk and reconciles them with the API.
//!
//! - [`node`]: Node registration, status and Lease.
//! - [`pods`]: one worker per pod: sandbox, volumes, images, init containers, containers,
//!   restarts, termination, status.
//! - [`volumes`]: emptyDir, hostPath, configMap, secret, downwardAPI, projected, PVCs; and the
//!   container environment ([`volumes::env`]).
//! - [`prober`]: liveness, readiness and startup probes; lifecycle hooks.
//! - [`server`]: the HTTPS endpoint the API server proxies logs, exec, attach and port-forward to.
//! - [`network`]: routes to other nodes' pod CIDRs (host-gw).
//! - [`staticpods`]: pods from a manifest folder, mirrored into the API.

pub mod network;
pub mod node;
pub mod pods;
pub mod prober;
pub mod server;
pub mod staticpods;
pub mod volumes;

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;

/// How this node agent runs.
#[derive(Clone)]
pub struct KubeletConfig {
    pub node_name: String,
    /// `<data-dir>/agent`: containers, sandboxes, pod volumes, logs.
    pub root: PathBuf,
    /// The image store (`<data-dir>/images`, shared with `rkube images`).
    pub image_root: PathBuf,
    /// k3s-format registries.yaml (may not exist).
    pub registry_config: PathBuf,
    /// The address other nodes and the API server reach this node on (InternalIP).
    pub node_ip: IpAddr,
    /// The pod CIDR to use until the node's `spec.podCIDR` is set (single-node default).
    pub default_pod_cidr: Option<String>,
    /// Cluster DNS servers for pods' resolv.conf (the kube-dns Service's IP).
    pub cluster_dns: Vec<IpAddr>,
    pub cluster_domain: String,
    /// Port of the kubelet's HTTPS endpoint (10250).
    pub port: u16,
    /// TLS for that endpoint: serves the node's certificate and requires a client certificate
    /// signed by the cluster's client CA (only the API server has one that passes).
    pub serving_tls: Arc<rustls::ServerConfig>,
    pub runc: PathBuf,
    pub cni_bin_dir: PathBuf,
    /// The bridge pods attach to (`cni0`; unique per agent when several share a network namespace).
    pub cni_bridge: String,
    /// Parent cgroup of all pods: `/kubepods` (`/rkube-<node>/kubepods` when several agents
    /// share a machine).
    pub cgroup_root: String,
    /// Static pod manifests (`<data-dir>/manifests`).
    pub static_pod_dir: Option<PathBuf>,
    pub max_pods: u32,
    pub node_labels: std::collections::BTreeMap<String, String>,
    /// How often the Lease is renewed (10 s).
    pub lease_renew_interval: std::time::Duration,
    /// Hard eviction thresholds (`--eviction-hard`): below these the node reports
    /// MemoryPressure / DiskPressure, and they are kept out of allocatable.
    pub eviction: EvictionThresholds,
    /// Whether this node's Service proxy may still send new connections to an address. A
    /// deleted pod's containers are stopped once it no longer does (see
    /// [`pods::PROXY_DRAIN_LIMIT`]), so that no request goes to a container already stopped.
    pub proxy_routes: Option<ProxyRoutes>,
}

/// Asks the node's Service proxy whether it may still send new connections to an address.
pub type ProxyRoutes = Arc<dyn Fn(IpAddr) -> bool + Send + Sync>;

/// Upstream's `--eviction-hard` signals that rkube honours.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EvictionThresholds {
    /// `memory.available<100Mi`
    pub memory_available_bytes: u64,
    /// `nodefs.available<10%`
    pub nodefs_available_percent: u64,
}

impl Default for EvictionThresholds {
    fn default() -> Self {
        EvictionThresholds {
            memory_available_bytes: 100 * 1024 * 1024,
            nodefs_available_percent: 10,
        }
    }
}

impl std::str::FromStr for EvictionThresholds {
    type Err = String;

    /// `memory.available<100Mi,nodefs.available<10%` (either may be left out: it keeps its
    /// default).
    fn from_str(s: &str) -> Result<Self, String> {
        let mut thresholds = EvictionThresholds::default();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (signal, value) = part
                .split_once('<')
                .ok_or_else(|| format!("eviction threshold {part:?}: expected SIGNAL<VALUE"))?;
            match signal.trim() {
                "memory.available" => {
                    thresholds.memory_available_bytes =
                        api::validation::parse_quantity(value.trim())
                            .ok()
                            .and_then(|q| u64::try_from(q.value()).ok())
                            .ok_or_else(|| {
                                format!("eviction threshold {part:?}: invalid quantity")
                            })?;
                }
                "nodefs.available" => {
                    let percent = value
                        .trim()
                        .strip_suffix('%')
                        .and_then(|p| p.parse::<u64>().ok())
                        .filter(|p| *p <= 100)
                        .ok_or_else(|| {
                            format!("eviction threshold {part:?}: use a percentage, e.g. 10%")
                        })?;
                    thresholds.nodefs_available_percent = percent;
                }
                other => return Err(format!("eviction signal {other:?} is not supported")),
            }
        }
        Ok(thresholds)
    }
}

pub mod events;

/// `<log-root>/<namespace>_<name>_<uid>`: a pod's log directory, as upstream's `/var/log/pods`.
pub fn pod_log_dir(log_root: &std::path::Path, namespace: &str, name: &str, uid: &str) -> PathBuf {
    log_root.join(format!("{namespace}_{name}_{uid}"))
}

/// `<pod-log-dir>/<container>/<restart-count>.log`; the rotated file is `<...>.log.1`.
pub fn container_log_path(pod_log_dir: &std::path::Path, container: &str, attempt: u32) -> PathBuf {
    pod_log_dir.join(container).join(format!("{attempt}.log"))
}

/// Run the node agent until an essential part of it fails.
pub async fn run(client: kube::Client, config: KubeletConfig) -> anyhow::Result<()> {
    use anyhow::Context as _;
    let config = Arc::new(config);
    let root = &config.root;
    let runtime = runtime::container::ContainerRuntime::new(runtime::container::RuntimeConfig {
        root: root.join("containers"),
        runc: config.runc.clone(),
        runc_root: root.join("runc"),
        shim_exe: std::env::current_exe().context("finding the rkube executable for the shim")?,
        cgroup_root: config.cgroup_root.clone(),
    })?;
    let sandboxes = runtime::sandbox::SandboxManager::new(runtime::sandbox::NetworkConfig {
        root: root.join("sandboxes"),
        cni_bin_dir: config.cni_bin_dir.clone(),
        cni_conf_dir: root.join("cni"),
        bridge: config.cni_bridge.clone(),
        mtu: 1500,
    })?;
    let images = runtime::images::ImageStore::open(&config.image_root)?;
    let registries = if config.registry_config.exists() {
        runtime::images::RegistryConfig::load(&config.registry_config)?
    } else {
        runtime::images::RegistryConfig::default()
    };
    let log_root = root.join("logs");
    let (pod_cidr_tx, mut pod_cidr_rx) = tokio::sync::watch::channel(None::<String>);
    if let Some(cidr) = &config.default_pod_cidr {
        sandboxes.configure(cidr)?;
    }
    let ctx = Arc::new(pods::PodContext {
        client: client.clone(),
        config: config.clone(),
        runtime: runtime.clone(),
        sandboxes: sandboxes.clone(),
        images,
        registries,
        volumes: volumes::VolumeManager::new(
            client.clone(),
            root.join("pods"),
            config.node_name.clone(),
        ),
        events: events::EventRecorder::new(client.clone(), config.node_name.clone()),
        log_root: log_root.clone(),
        workers: pods::PodWorkers::new(),
    });
    let listener = tokio::net::TcpListener::bind((std::net::Ipv4Addr::UNSPECIFIED, config.port))
        .await
        .with_context(|| format!("listening on kubelet port {}", config.port))?;
    let streaming = Arc::new(server::StreamingContext {
        runtime,
        sandboxes: sandboxes.clone(),
        log_root,
        node_name: config.node_name.clone(),
    });
    let network_sandboxes = sandboxes.clone();
    tokio::spawn(async move {
        // The node's podCIDR from node IPAM replaces the default once it is known.
        while pod_cidr_rx.changed().await.is_ok() {
            let cidr = pod_cidr_rx.borrow_and_update().clone();
            if let Some(cidr) = cidr
                && let Err(e) = network_sandboxes.configure(&cidr)
            {
                tracing::error!(%cidr, error = %e, "writing the CNI configuration");
            }
        }
    });
    let mut node = tokio::spawn(node::run(client.clone(), config.clone(), pod_cidr_tx));
    let mut serving = tokio::spawn(server::serve(
        listener,
        config.serving_tls.clone(),
        streaming,
    ));
    let mut routes = tokio::spawn(network::run_routes(
        client.clone(),
        config.node_name.clone(),
        config.node_ip,
        config.cni_bridge.clone(),
    ));
    let mut pods = tokio::spawn(pods::run(ctx.clone()));
    let mut static_pods = tokio::spawn(staticpods::run(ctx));
    let (what, result) = tokio::select! {
        r = &mut node => ("node status", r),
        r = &mut serving => ("kubelet server", r),
        r = &mut routes => ("node routes", r),
        r = &mut pods => ("pod workers", r),
        r = &mut static_pods => ("static pods", r),
    };
    for task in [node, serving, routes, pods, static_pods] {
        task.abort();
    }
    match result {
        Ok(Ok(())) => anyhow::bail!("the kubelet's {what} stopped"),
        Ok(Err(e)) => Err(e.context(format!("the kubelet's {what} failed"))),
        Err(e) => Err(anyhow::anyhow!("the kubelet's {what} panicked: {e}")),
    }
}

#[cfg(test)]
mod eviction_tests {
    use super::EvictionThresholds;

    #[test]
    fn eviction_thresholds_parse_as_upstream_writes_them() {
        let t: EvictionThresholds = "memory.available<200Mi,nodefs.available<5%"
            .parse()
            .unwrap();
        assert_eq!(t.memory_available_bytes, 200 * 1024 * 1024);
        assert_eq!(t.nodefs_available_percent, 5);
        let t: EvictionThresholds = "nodefs.available<1%".parse().unwrap();
        assert_eq!(t.memory_available_bytes, 100 * 1024 * 1024);
        assert!(
            "imagefs.available<5%"
                .parse::<EvictionThresholds>()
                .is_err()
        );
        assert!(
            "nodefs.available<5Gi"
                .parse::<EvictionThresholds>()
                .is_err()
        );
    }
}
