//! This host's Node: registration (capacity, allocatable, addresses, nodeInfo, daemon
//! endpoint), status conditions, and the Lease renewed every `lease_renew_interval`.
//!
//! As upstream's kubelet: the Lease is the heartbeat (renewed every 10 s); the status is
//! computed at the same pace but posted only when it changed or a minute went by since it
//! was last posted. Both are what the node lifecycle controller reads. The conditions and the
//! Lease object are shared with the simulated nodes (`api::node`).
//!
//! The node is Ready once it knows its pod CIDR (the default one, or `spec.podCIDR` from the
//! node IPAM controller): before that no pod can get a network, as upstream reports while
//! the CNI plugin is not initialized.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use api::node::{self as shared, Pressure};
use futures::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{
    DaemonEndpoint, Node, NodeAddress, NodeCondition, NodeDaemonEndpoints, NodeStatus,
    NodeSystemInfo,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use serde_json::{Value, json};
use tokio::sync::watch;

use crate::KubeletConfig;

/// The kubelet version nodes report (the API version rkube serves).
pub const KUBELET_VERSION: &str = "v1.33.0";
/// How long a Lease stays valid without renewal (upstream's default).
pub const LEASE_DURATION_SECONDS: i32 = 40;
/// Upstream's `nodeStatusReportFrequency` is 5 min; a minute keeps `kubectl describe` fresh.
const STATUS_REPORT_INTERVAL: Duration = Duration::from_secs(60);

const NETWORK_NOT_READY: &str = "container runtime network not ready: NetworkReady=false \
     reason:NetworkPluginNotReady message:Network plugin returns error: cni plugin not initialized";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("registering node {node}: {source}")]
    Register { node: String, source: kube::Error },
    #[error("renewing the lease of node {node}: {source}")]
    Lease { node: String, source: kube::Error },
    #[error("updating the status of node {node}: {source}")]
    Status { node: String, source: kube::Error },
}

/// What does not change while the agent runs.
#[derive(Debug, Clone, PartialEq)]
pub struct HostFacts {
    pub cpus: usize,
    pub memory_bytes: u64,
    pub node_info: NodeSystemInfo,
}

impl HostFacts {
    /// Reads the host: CPUs, memory, kernel, OS image, machine and boot IDs, runc's version.
    pub async fn read(runc: &Path) -> HostFacts {
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        let memory_bytes = read_meminfo().map_or(0, |m| m.total);
        let read = |path: &str| {
            std::fs::read_to_string(path)
                .map(|s| s.trim().to_string())
                .unwrap_or_default()
        };
        let machine_id = [read("/etc/machine-id"), read("/var/lib/dbus/machine-id")]
            .into_iter()
            .find(|s| !s.is_empty())
            .unwrap_or_default();
        let system_uuid = match read("/sys/class/dmi/id/product_uuid").to_ascii_lowercase() {
            uuid if uuid.is_empty() => machine_id.clone(),
            uuid => uuid,
        };
        let runc_version = tokio::process::Command::new(runc)
            .arg("--version")
            .output()
            .await
            .ok()
            .filter(|out| out.status.success())
            .and_then(|out| parse_runc_version(&String::from_utf8_lossy(&out.stdout)))
            .unwrap_or_else(|| "unknown".into());
        HostFacts {
            cpus,
            memory_bytes,
            node_info: NodeSystemInfo {
                machine_id,
                system_uuid,
                boot_id: read("/proc/sys/kernel/random/boot_id"),
                kernel_version: read("/proc/sys/kernel/osrelease"),
                os_image: std::fs::read_to_string("/etc/os-release")
                    .ok()
                    .and_then(|text| parse_os_release(&text))
                    .unwrap_or_else(|| "Linux".into()),
                container_runtime_version: format!("runc://{runc_version}"),
                kubelet_version: KUBELET_VERSION.into(),
                kube_proxy_version: String::new(),
                operating_system: "linux".into(),
                architecture: "amd64".into(),
                ..Default::default()
            },
        }
    }
}

/// `runc version 1.1.5` → `1.1.5`.
pub fn parse_runc_version(output: &str) -> Option<String> {
    output
        .lines()
        .find_map(|l| l.trim().strip_prefix("runc version "))
        .map(|v| v.trim().to_string())
}

/// PRETTY_NAME of `/etc/os-release`, unquoted.
pub fn parse_os_release(text: &str) -> Option<String> {
    text.lines()
        .find_map(|l| l.strip_prefix("PRETTY_NAME="))
        .map(|v| v.trim().trim_matches('"').trim_matches('\'').to_string())
        .filter(|v| !v.is_empty())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemInfo {
    pub total: u64,
    pub available: u64,
}

/// MemTotal and MemAvailable of `/proc/meminfo`, in bytes.
pub fn parse_meminfo(text: &str) -> Option<MemInfo> {
    let field = |name: &str| -> Option<u64> {
        let line = text.lines().find(|l| l.starts_with(name))?;
        let kib: u64 = line[name.len()..]
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse()
            .ok()?;
        Some(kib * 1024)
    };
    let total = field("MemTotal:")?;
    Some(MemInfo {
        total,
        available: field("MemAvailable:").unwrap_or(total),
    })
}

fn read_meminfo() -> Option<MemInfo> {
    parse_meminfo(&std::fs::read_to_string("/proc/meminfo").ok()?)
}

/// What changes: the disk the data dir is on, free memory, whether the network is set up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Observed {
    pub disk: runtime::images::DiskStats,
    pub memory_available: u64,
    pub network_ready: bool,
}

fn observe(config: &KubeletConfig, network_ready: bool) -> Observed {
    use runtime::images::DiskUsage as _;
    let disk = runtime::images::FsDiskUsage(config.root.clone())
        .stats()
        .unwrap_or(runtime::images::DiskStats {
            capacity: 0,
            available: 0,
        });
    Observed {
        disk,
        // Unknown memory counts as plenty: a failed read must not evict anything.
        memory_available: read_meminfo().map_or(u64::MAX, |m| m.available),
        network_ready,
    }
}

fn kib(bytes: u64) -> Quantity {
    Quantity(format!("{}Ki", bytes / 1024))
}

/// The labels the kubelet puts on its Node (upstream's well-known ones plus `--node-labels`).
pub fn node_labels(config: &KubeletConfig) -> BTreeMap<String, String> {
    let mut labels: BTreeMap<String, String> = [
        ("beta.kubernetes.io/arch", "amd64"),
        ("beta.kubernetes.io/os", "linux"),
        ("kubernetes.io/arch", "amd64"),
        ("kubernetes.io/hostname", config.node_name.as_str()),
        ("kubernetes.io/os", "linux"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    labels.extend(config.node_labels.clone());
    labels
}

/// The node's status: everything but the conditions' history.
pub fn node_status(
    config: &KubeletConfig,
    facts: &HostFacts,
    observed: &Observed,
    now: &Timestamp,
) -> NodeStatus {
    let mut capacity: BTreeMap<String, Quantity> = BTreeMap::new();
    capacity.insert("cpu".into(), Quantity(facts.cpus.to_string()));
    capacity.insert("memory".into(), kib(facts.memory_bytes));
    capacity.insert("ephemeral-storage".into(), kib(observed.disk.capacity));
    capacity.insert("pods".into(), Quantity(config.max_pods.to_string()));
    capacity.insert("hugepages-1Gi".into(), Quantity("0".into()));
    capacity.insert("hugepages-2Mi".into(), Quantity("0".into()));
    let mut allocatable = capacity.clone();
    allocatable.insert(
        "memory".into(),
        kib(facts
            .memory_bytes
            .saturating_sub(config.eviction.memory_available_bytes)),
    );
    let disk_capacity = observed.disk.capacity / 1024 * 1024;
    allocatable.insert(
        "ephemeral-storage".into(),
        Quantity(
            (disk_capacity - disk_capacity * config.eviction.nodefs_available_percent / 100)
                .to_string(),
        ),
    );
    let pressure = Pressure {
        memory: observed.memory_available < config.eviction.memory_available_bytes,
        disk: observed.disk.capacity > 0
            && observed.disk.available * 100
                < observed.disk.capacity * config.eviction.nodefs_available_percent,
        pid: false,
    };
    let not_ready = (!observed.network_ready).then_some(NETWORK_NOT_READY);
    NodeStatus {
        capacity: Some(capacity),
        allocatable: Some(allocatable),
        conditions: Some(shared::conditions(now, pressure, not_ready)),
        addresses: Some(vec![
            NodeAddress {
                type_: "InternalIP".into(),
                address: config.node_ip.to_string(),
            },
            NodeAddress {
                type_: "Hostname".into(),
                address: config.node_name.clone(),
            },
        ]),
        daemon_endpoints: Some(NodeDaemonEndpoints {
            kubelet_endpoint: Some(DaemonEndpoint {
                port: i32::from(config.port),
            }),
        }),
        node_info: Some(facts.node_info.clone()),
        ..Default::default()
    }
}

/// The Node object the kubelet registers.
pub fn initial_node(config: &KubeletConfig, status: NodeStatus) -> Node {
    let annotations: BTreeMap<String, String> = [
        ("node.alpha.kubernetes.io/ttl", "0"),
        (
            "volumes.kubernetes.io/controller-managed-attach-detach",
            "true",
        ),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    Node {
        metadata: ObjectMeta {
            name: Some(config.node_name.clone()),
            labels: Some(node_labels(config)),
            annotations: Some(annotations),
            ..Default::default()
        },
        spec: None,
        status: Some(status),
    }
}

/// The status patch to post: `status` with the conditions' transition times kept from
/// `current` where their status did not change.
fn status_patch(status: &NodeStatus, current: Option<&Node>) -> Value {
    let mut status = status.clone();
    status.conditions = status
        .conditions
        .take()
        .map(|wanted| shared::keep_transition_times(wanted, current));
    json!({ "status": status })
}

/// The parts of a status whose change makes it worth posting at once.
fn status_fingerprint(status: &NodeStatus) -> Value {
    let mut status = status.clone();
    status.conditions = None;
    serde_json::to_value(status).unwrap_or_default()
}

fn pod_cidr_of(node: &Node) -> Option<String> {
    node.spec
        .as_ref()?
        .pod_cidr
        .clone()
        .filter(|c| !c.is_empty())
}

fn is_code(e: &kube::Error, code: u16) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == code)
}

struct NodeAgent {
    client: kube::Client,
    config: Arc<KubeletConfig>,
    facts: HostFacts,
    pod_cidr: watch::Sender<Option<String>>,
    /// The Node as last seen (registration, then the watch).
    current: Option<Node>,
    /// When the status was last posted, and what it was.
    posted: Option<(Instant, Value)>,
}

/// Register the Node (or adopt the existing one), then keep its status and Lease fresh until
/// the task is dropped. Publishes the node's `spec.podCIDR` on `pod_cidr` when it is set.
pub async fn run(
    client: kube::Client,
    config: Arc<KubeletConfig>,
    pod_cidr: watch::Sender<Option<String>>,
) -> anyhow::Result<()> {
    let facts = HostFacts::read(&config.runc).await;
    let mut agent = NodeAgent {
        client: client.clone(),
        config: config.clone(),
        facts,
        pod_cidr,
        current: None,
        posted: None,
    };
    // Registration is retried until it works (the API server may still be starting).
    let mut backoff = Duration::from_millis(200);
    loop {
        match agent.register().await {
            Ok(()) => break,
            Err(e) => {
                tracing::warn!(error = %e, retry_in_ms = backoff.as_millis() as u64, "node registration failed");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(7));
            }
        }
    }
    let nodes: Api<Node> = Api::all(client);
    let own = watcher::Config::default().fields(&format!("metadata.name={}", config.node_name));
    let mut events = watcher(nodes, own).default_backoff().boxed();
    let mut tick = tokio::time::interval(config.lease_renew_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await; // Registration just renewed everything.
    loop {
        tokio::select! {
            event = events.next() => match event {
                Some(Ok(watcher::Event::Apply(node) | watcher::Event::InitApply(node))) => {
                    let network_was_ready = agent.network_ready();
                    agent.observe_node(node);
                    if agent.network_ready() != network_was_ready {
                        // The pod CIDR just arrived: report Ready without waiting for the tick.
                        agent.post_status_if_due(true).await;
                    }
                }
                Some(Ok(watcher::Event::Delete(_))) => {
                    tracing::warn!(node = %config.node_name, "the Node was deleted; it is registered again when the agent restarts");
                    agent.current = None;
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => tracing::debug!(error = %e, "watching the node"),
                None => anyhow::bail!("the watch of node {} ended", config.node_name),
            },
            _ = tick.tick() => {
                if agent.current.is_none() {
                    continue;
                }
                if let Err(e) = agent.renew_lease().await {
                    tracing::warn!(error = %e, "node heartbeat failed");
                }
                agent.post_status_if_due(false).await;
            }
        }
    }
}

impl NodeAgent {
    fn network_ready(&self) -> bool {
        self.config.default_pod_cidr.is_some() || self.pod_cidr.borrow().is_some()
    }

    fn observe_node(&mut self, node: Node) {
        if let Some(cidr) = pod_cidr_of(&node) {
            self.pod_cidr.send_if_modified(|current| {
                if current.as_deref() == Some(cidr.as_str()) {
                    return false;
                }
                tracing::info!(node = %self.config.node_name, %cidr, "node podCIDR");
                *current = Some(cidr.clone());
                true
            });
        }
        self.current = Some(node);
    }

    fn status_now(&self) -> NodeStatus {
        let observed = observe(&self.config, self.network_ready());
        node_status(&self.config, &self.facts, &observed, &Timestamp::now())
    }

    /// Create the Node, or take over the existing one (its labels completed, its status
    /// replaced), and its Lease.
    async fn register(&mut self) -> Result<(), Error> {
        let name = self.config.node_name.clone();
        let err = |source| Error::Register {
            node: name.clone(),
            source,
        };
        let nodes: Api<Node> = Api::all(self.client.clone());
        let wanted = initial_node(&self.config, self.status_now());
        let node = match nodes.create(&PostParams::default(), &wanted).await {
            Ok(created) => {
                tracing::info!(node = %name, ip = %self.config.node_ip, "registered the node");
                created
            }
            Err(e) if is_code(&e, 409) => {
                let existing = nodes.get(&name).await.map_err(err)?;
                let labels = node_labels(&self.config);
                let have = existing.metadata.labels.clone().unwrap_or_default();
                let node = if labels.iter().any(|(k, v)| have.get(k) != Some(v)) {
                    nodes
                        .patch(
                            &name,
                            &PatchParams::default(),
                            &Patch::Merge(json!({"metadata": {"labels": labels}})),
                        )
                        .await
                        .map_err(err)?
                } else {
                    existing
                };
                tracing::info!(node = %name, "the node exists; taking it over");
                node
            }
            Err(e) => return Err(err(e)),
        };
        self.observe_node(node);
        // The status is posted apart: the create may have dropped it, and a taken-over node
        // has an old one.
        self.post_status().await?;
        self.renew_lease().await
    }

    async fn post_status(&mut self) -> Result<(), Error> {
        let name = &self.config.node_name;
        let status = self.status_now();
        let patch = status_patch(&status, self.current.as_ref());
        let nodes: Api<Node> = Api::all(self.client.clone());
        let node = nodes
            .patch_status(name, &PatchParams::default(), &Patch::Strategic(patch))
            .await
            .map_err(|source| Error::Status {
                node: name.clone(),
                source,
            })?;
        let was_ready = self.current.as_ref().is_some_and(shared::is_ready);
        if shared::is_ready(&node) != was_ready {
            let ready = shared::is_ready(&node);
            tracing::info!(node = %name, ready, "node readiness");
        }
        self.posted = Some((Instant::now(), status_fingerprint(&status)));
        self.observe_node(node);
        Ok(())
    }

    /// Post the status when it changed, when its conditions differ from the Node's (someone
    /// else, e.g. the node lifecycle controller, changed them), or when it is due anyway.
    async fn post_status_if_due(&mut self, force: bool) {
        if self.current.is_none() {
            return;
        }
        let status = self.status_now();
        let conditions: &[NodeCondition] = status.conditions.as_deref().unwrap_or_default();
        let due = force
            || match &self.posted {
                None => true,
                Some((at, fingerprint)) => {
                    at.elapsed() >= STATUS_REPORT_INTERVAL
                        || *fingerprint != status_fingerprint(&status)
                        || shared::conditions_changed(self.current.as_ref(), conditions)
                }
            };
        if due && let Err(e) = self.post_status().await {
            tracing::warn!(error = %e, "posting node status failed");
        }
    }

    async fn renew_lease(&self) -> Result<(), Error> {
        let name = &self.config.node_name;
        let err = |source| Error::Lease {
            node: name.clone(),
            source,
        };
        let leases: Api<Lease> = Api::namespaced(self.client.clone(), shared::LEASE_NAMESPACE);
        let now = Timestamp::now();
        let patch = shared::lease_renew_patch(name, LEASE_DURATION_SECONDS, &now);
        match leases
            .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if is_code(&e, 404) => {
                let Some(node) = &self.current else {
                    return Ok(());
                };
                let lease = shared::lease(node, LEASE_DURATION_SECONDS, &now);
                match leases.create(&PostParams::default(), &lease).await {
                    Ok(_) => Ok(()),
                    Err(e) if is_code(&e, 409) => Ok(()),
                    Err(e) => Err(err(e)),
                }
            }
            Err(e) => Err(err(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A KubeletConfig needs a rustls server config; these tests never serve, so any will do.
    fn serving_tls() -> Arc<rustls::ServerConfig> {
        #[derive(Debug)]
        struct NoCert;
        impl rustls::server::ResolvesServerCert for NoCert {
            fn resolve(
                &self,
                _: rustls::server::ClientHello<'_>,
            ) -> Option<Arc<rustls::sign::CertifiedKey>> {
                None
            }
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("default protocol versions")
            .with_no_client_auth()
            .with_cert_resolver(Arc::new(NoCert));
        Arc::new(config)
    }

    fn config() -> KubeletConfig {
        KubeletConfig {
            node_name: "node-a".into(),
            root: "/nonexistent".into(),
            image_root: "/nonexistent".into(),
            registry_config: "/nonexistent".into(),
            node_ip: "10.0.0.5".parse().unwrap(),
            default_pod_cidr: None,
            cluster_dns: vec![],
            cluster_domain: "cluster.local".into(),
            port: 10250,
            serving_tls: serving_tls(),
            runc: "runc".into(),
            cni_bin_dir: "/usr/lib/cni".into(),
            cni_bridge: "cni0".into(),
            cgroup_root: "/kubepods".into(),
            static_pod_dir: None,
            max_pods: 110,
            node_labels: [(
                "node-role.kubernetes.io/control-plane".to_string(),
                "true".to_string(),
            )]
            .into(),
            lease_renew_interval: Duration::from_secs(10),
            eviction: crate::EvictionThresholds::default(),
            proxy_routes: None,
        }
    }

    fn facts() -> HostFacts {
        HostFacts {
            cpus: 4,
            memory_bytes: 8 * 1024 * 1024 * 1024,
            node_info: NodeSystemInfo {
                kubelet_version: KUBELET_VERSION.into(),
                container_runtime_version: "runc://1.1.5".into(),
                ..Default::default()
            },
        }
    }

    fn observed(available_percent: u64, network_ready: bool) -> Observed {
        Observed {
            disk: runtime::images::DiskStats {
                capacity: 100 * 1024 * 1024 * 1024,
                available: available_percent * 1024 * 1024 * 1024,
            },
            memory_available: 4 * 1024 * 1024 * 1024,
            network_ready,
        }
    }

    fn condition<'a>(status: &'a NodeStatus, type_: &str) -> &'a NodeCondition {
        status
            .conditions
            .as_ref()
            .unwrap()
            .iter()
            .find(|c| c.type_ == type_)
            .unwrap()
    }

    #[test]
    fn status_has_capacity_allocatable_addresses_and_endpoint() {
        let now = Timestamp::from_second(1_700_000_000).unwrap();
        let config = config();
        let status = node_status(&config, &facts(), &observed(50, true), &now);
        let cap = status.capacity.as_ref().unwrap();
        assert_eq!(cap["cpu"].0, "4");
        assert_eq!(cap["memory"].0, "8388608Ki");
        assert_eq!(cap["pods"].0, "110");
        assert_eq!(cap["ephemeral-storage"].0, "104857600Ki");
        let alloc = status.allocatable.as_ref().unwrap();
        assert_eq!(alloc["memory"].0, "8286208Ki");
        assert_eq!(alloc["ephemeral-storage"].0, "96636764160");
        let addresses = status.addresses.as_ref().unwrap();
        assert_eq!(addresses[0].type_, "InternalIP");
        assert_eq!(addresses[0].address, "10.0.0.5");
        assert_eq!(addresses[1].type_, "Hostname");
        assert_eq!(addresses[1].address, "node-a");
        assert_eq!(
            status
                .daemon_endpoints
                .as_ref()
                .unwrap()
                .kubelet_endpoint
                .as_ref()
                .unwrap()
                .port,
            10250
        );
        assert_eq!(condition(&status, "Ready").status, "True");
        assert_eq!(condition(&status, "DiskPressure").status, "False");
        let node = initial_node(&config, status);
        let labels = node.metadata.labels.unwrap();
        assert_eq!(labels["kubernetes.io/hostname"], "node-a");
        assert_eq!(labels["kubernetes.io/os"], "linux");
        assert_eq!(labels["node-role.kubernetes.io/control-plane"], "true");
    }

    #[test]
    fn disk_pressure_below_ten_percent_and_not_ready_without_network() {
        let now = Timestamp::from_second(1_700_000_000).unwrap();
        let status = node_status(&config(), &facts(), &observed(5, false), &now);
        let disk = condition(&status, "DiskPressure");
        assert_eq!(disk.status, "True");
        assert_eq!(disk.reason.as_deref(), Some("KubeletHasDiskPressure"));
        let ready = condition(&status, "Ready");
        assert_eq!(ready.status, "False");
        assert!(
            ready
                .message
                .as_deref()
                .unwrap()
                .contains("cni plugin not initialized")
        );
    }

    #[test]
    fn status_patch_keeps_transition_times_of_unchanged_conditions() {
        let then = Timestamp::from_second(1_700_000_000).unwrap();
        let now = Timestamp::from_second(1_700_000_100).unwrap();
        let config = config();
        let before = initial_node(
            &config,
            node_status(&config, &facts(), &observed(50, false), &then),
        );
        let status = node_status(&config, &facts(), &observed(50, true), &now);
        let patch = status_patch(&status, Some(&before));
        let conditions = patch["status"]["conditions"].as_array().unwrap();
        let find = |t: &str| conditions.iter().find(|c| c["type"] == t).unwrap();
        assert_eq!(find("Ready")["status"], "True");
        assert_eq!(find("Ready")["lastTransitionTime"], "2023-11-14T22:15:00Z");
        assert_eq!(
            find("MemoryPressure")["lastTransitionTime"],
            "2023-11-14T22:13:20Z"
        );
        assert_eq!(
            find("MemoryPressure")["lastHeartbeatTime"],
            "2023-11-14T22:15:00Z"
        );
        assert_eq!(
            patch["status"]["nodeInfo"]["kubeletVersion"],
            KUBELET_VERSION
        );
    }

    #[test]
    fn parses_host_files() {
        assert_eq!(
            parse_runc_version("runc version 1.1.5+ds1\ncommit: 1.1.5+ds1-1\nspec: 1.0.2-dev\n"),
            Some("1.1.5+ds1".into())
        );
        assert_eq!(
            parse_os_release(
                "NAME=\"Debian GNU/Linux\"\nPRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\n"
            ),
            Some("Debian GNU/Linux 12 (bookworm)".into())
        );
        let mem = parse_meminfo(
            "MemTotal:        8048576 kB\nMemFree:  1 kB\nMemAvailable:    4000000 kB\n",
        )
        .unwrap();
        assert_eq!(mem.total, 8048576 * 1024);
        assert_eq!(mem.available, 4000000 * 1024);
        assert!(parse_meminfo("nothing").is_none());
    }
}
