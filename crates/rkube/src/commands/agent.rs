//! `rkube agent --server URL --token T`: a node that joins a cluster: kubelet and service proxy.
//!
//! Joining, as k3s does: the token is `K10<sha256 of the server CA>::node:<secret>`. The agent
//! fetches the CA from `GET /cacerts` without verifying TLS, checks its hash against the
//! token, then talks to the API server trusting that CA and authenticating with the secret.
//! Its kubelet endpoint trusts the cluster's client CA, read from ConfigMap
//! `kube-system/extension-apiserver-authentication`, and serves a self-signed certificate.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use k8s_openapi::api::core::v1::{ConfigMap, Service};
use kube::Api;

/// The node agent's settings, shared by `rkube agent` and the agent inside `rkube server`.
#[derive(Args, Debug, Clone)]
pub struct KubeletArgs {
    /// Port of the kubelet's HTTPS endpoint (logs, exec, attach, port-forward).
    #[arg(long, default_value_t = 10250)]
    pub kubelet_port: u16,
    /// Parent cgroup of all pods (use a distinct one per agent when several share a machine).
    #[arg(long, default_value = "/kubepods")]
    pub cgroup_root: String,
    /// Where the CNI plugins are.
    #[arg(long, default_value = "/usr/lib/cni")]
    pub cni_bin_dir: PathBuf,
    /// The bridge pods attach to (distinct per agent when several share a network namespace).
    #[arg(long, default_value = "cni0")]
    pub cni_bridge: String,
    /// Registry mirrors and credentials, k3s's registries.yaml (default: <data-dir>/registries.yaml).
    #[arg(long)]
    pub registry_config: Option<PathBuf>,
    /// Extra labels of this node, key=value (repeatable).
    #[arg(long = "node-label", value_parser = parse_label)]
    pub node_labels: Vec<(String, String)>,
    /// The OCI runtime (default: runc from PATH).
    #[arg(long)]
    pub runc: Option<PathBuf>,
    /// Pods this node runs at most.
    #[arg(long, default_value_t = 110)]
    pub max_pods: u32,
    /// Hard eviction thresholds, as upstream: below them the node reports MemoryPressure or
    /// DiskPressure (and gets the matching taint).
    #[arg(long, default_value = "memory.available<100Mi,nodefs.available<10%")]
    pub eviction_hard: kubelet::EvictionThresholds,
}

#[derive(Args, Debug)]
pub struct AgentArgs {
    /// The API server to join, e.g. https://10.0.0.1:6443.
    #[arg(long, env = "RKUBE_URL")]
    pub server: String,
    /// The cluster's node token (`<server-data-dir>/node-token`).
    #[arg(long, env = "RKUBE_TOKEN")]
    pub token: String,
    /// Where containers, images, logs and pod volumes live.
    #[arg(long, default_value = "/var/lib/rkube-agent", env = "RKUBE_DATA_DIR")]
    pub data_dir: PathBuf,
    /// Name of this Node (default: the hostname).
    #[arg(long)]
    pub node_name: Option<String>,
    /// The address the API server and other nodes reach this node at (default: the host's
    /// primary address).
    #[arg(long)]
    pub node_ip: Option<IpAddr>,
    /// The cluster's pod network (the server's --cluster-cidr): the proxy masquerades traffic
    /// to Services from anywhere else.
    #[arg(long, default_value = "10.42.0.0/16")]
    pub cluster_cidr: String,
    #[command(flatten)]
    pub kubelet: KubeletArgs,
}

fn parse_label(s: &str) -> Result<(String, String), String> {
    let (k, v) = s
        .split_once('=')
        .ok_or_else(|| format!("invalid label {s:?}: expected key=value"))?;
    if k.is_empty() {
        return Err(format!("invalid label {s:?}: empty key"));
    }
    Ok((k.to_string(), v.to_string()))
}

/// This host's name (the default node name).
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_ascii_lowercase())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

/// The host's first non-loopback IPv4 address, else loopback.
pub fn primary_ip() -> IpAddr {
    if_addrs::get_if_addrs()
        .ok()
        .and_then(|ifs| {
            ifs.into_iter()
                .map(|i| i.ip())
                .find(|ip| ip.is_ipv4() && !ip.is_loopback())
        })
        .unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST))
}

/// `name` in a PATH directory, else `name` itself (left to the OS to find).
fn find_in_path(name: &str) -> PathBuf {
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .chain(["/usr/sbin".into(), "/usr/bin".into(), "/sbin".into()])
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| PathBuf::from(name))
}

/// What differs between the agent in `rkube server` and `rkube agent`.
pub struct NodeIdentity {
    pub node_name: String,
    pub node_ip: IpAddr,
    pub serving_tls: Arc<rustls::ServerConfig>,
    pub default_pod_cidr: Option<String>,
    pub cluster_dns: Vec<IpAddr>,
    pub extra_labels: BTreeMap<String, String>,
    /// Where this node's Service proxy sends new connections (shared with its kubelet).
    pub proxy_routes: proxy::Routes,
}

/// The kubelet's configuration for a node whose files live under `data_dir`.
pub fn kubelet_config(
    data_dir: &Path,
    args: &KubeletArgs,
    node: NodeIdentity,
) -> anyhow::Result<kubelet::KubeletConfig> {
    let static_pod_dir = data_dir.join("manifests");
    std::fs::create_dir_all(&static_pod_dir)
        .with_context(|| format!("creating {}", static_pod_dir.display()))?;
    let mut node_labels = node.extra_labels;
    node_labels.extend(args.node_labels.iter().cloned());
    Ok(kubelet::KubeletConfig {
        node_name: node.node_name,
        root: data_dir.join("agent"),
        image_root: data_dir.join("images"),
        registry_config: args
            .registry_config
            .clone()
            .unwrap_or_else(|| data_dir.join("registries.yaml")),
        node_ip: node.node_ip,
        default_pod_cidr: node.default_pod_cidr,
        cluster_dns: node.cluster_dns,
        cluster_domain: "cluster.local".into(),
        port: args.kubelet_port,
        serving_tls: node.serving_tls,
        runc: args.runc.clone().unwrap_or_else(|| find_in_path("runc")),
        cni_bin_dir: args.cni_bin_dir.clone(),
        cni_bridge: args.cni_bridge.clone(),
        cgroup_root: args.cgroup_root.clone(),
        static_pod_dir: Some(static_pod_dir),
        max_pods: args.max_pods,
        node_labels,
        lease_renew_interval: Duration::from_secs(10),
        eviction: args.eviction_hard,
        proxy_routes: Some(Arc::new(move |ip| node.proxy_routes.contains(ip))),
    })
}

/// Run the kubelet until the process ends; a failed kubelet is restarted after a pause, so
/// one bad moment never leaves the node dead while the process lives.
pub async fn run_kubelet_forever(client: kube::Client, config: kubelet::KubeletConfig) {
    run_forever("kubelet", || kubelet::run(client.clone(), config.clone())).await
}

/// The node's service proxy, restarted like the kubelet when it fails.
pub async fn run_proxy_forever(client: kube::Client, config: proxy::ProxyConfig) {
    run_forever("service proxy", || {
        proxy::run(client.clone(), config.clone())
    })
    .await
}

/// The service proxy of a node whose pods hang off `bridge`. Its nftables table is named after
/// the bridge, so that several agents sharing a machine keep apart.
pub fn proxy_config(
    node_name: &str,
    node_ip: IpAddr,
    cluster_cidr: &str,
    bridge: &str,
    routes: proxy::Routes,
) -> proxy::ProxyConfig {
    proxy::ProxyConfig {
        node_name: node_name.to_string(),
        node_ips: vec![node_ip],
        cluster_cidr: cluster_cidr.to_string(),
        table: proxy_table(bridge),
        routes,
        ..Default::default()
    }
}

/// `rkube` for the default bridge `cni0`, else `rkube-<bridge>`.
pub fn proxy_table(bridge: &str) -> String {
    if bridge == "cni0" {
        "rkube".into()
    } else {
        format!("rkube-{bridge}")
    }
}

async fn run_forever<F, Fut>(what: &'static str, mut start: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    let mut pause = Duration::from_secs(1);
    loop {
        let started = std::time::Instant::now();
        match start().await {
            Ok(()) => tracing::error!("the {what} stopped"),
            Err(e) => tracing::error!(error = format!("{e:#}"), "the {what} failed"),
        }
        if started.elapsed() > Duration::from_secs(60) {
            pause = Duration::from_secs(1);
        }
        tracing::info!(retry_in_s = pause.as_secs(), "restarting the {what}");
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_secs(30));
    }
}

/// The cluster DNS address: the tenth of the service range, whose first address the
/// `kubernetes` Service has.
fn cluster_dns_from(kubernetes_service_ip: &str) -> Option<IpAddr> {
    let ip: Ipv4Addr = kubernetes_service_ip.parse().ok()?;
    Some(IpAddr::V4(Ipv4Addr::from(u32::from(ip).checked_add(9)?)))
}

/// What failed while joining, in words that tell the user what to fix.
fn explain(e: kube::Error, server: &str) -> anyhow::Error {
    match &e {
        kube::Error::Api(s) if s.code == 401 => anyhow::anyhow!(
            "the server {server} refused the node token (401 Unauthorized): check --token against the server's node-token file"
        ),
        _ => anyhow::Error::new(e).context(format!("talking to the server {server}")),
    }
}

/// `GET /cacerts` without verifying the server: the token's hash is the check.
async fn fetch_ca(server: &str) -> anyhow::Result<String> {
    let url: http::Uri = server
        .parse()
        .with_context(|| format!("--server {server:?} is not a URL"))?;
    let mut config = kube::Config::new(url);
    config.accept_invalid_certs = true;
    config.connect_timeout = Some(Duration::from_secs(10));
    let client = kube::Client::try_from(config).context("building the bootstrap client")?;
    let request = http::Request::get("/cacerts")
        .body(Vec::new())
        .context("building the /cacerts request")?;
    client
        .request_text(request)
        .await
        .with_context(|| format!("fetching the CA certificate from {server}/cacerts"))
}

pub fn run(args: AgentArgs) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(join(args))
}

async fn join(args: AgentArgs) -> anyhow::Result<()> {
    let token: pki::NodeToken = args.token.parse().context("--token")?;
    std::fs::create_dir_all(&args.data_dir)
        .with_context(|| format!("creating data dir {}", args.data_dir.display()))?;
    let server = args.server.trim_end_matches('/').to_string();
    let ca = fetch_ca(&server).await?;
    token.verify_ca(&ca).with_context(|| {
        format!("refusing to join {server}: it may not be the server the token was made for")
    })?;
    let kubeconfig = pki::kubeconfig_yaml_with_token(&server, &ca, &token.secret);
    let client = controllers::client_from_kubeconfig_yaml(&kubeconfig)
        .await
        .context("building the API client")?;
    let configmaps: Api<ConfigMap> = Api::namespaced(client.clone(), "kube-system");
    let authentication = configmaps
        .get("extension-apiserver-authentication")
        .await
        .map_err(|e| explain(e, &server))?;
    let client_ca = authentication
        .data
        .as_ref()
        .and_then(|d| d.get("client-ca-file"))
        .cloned()
        .context(
            "configmap kube-system/extension-apiserver-authentication has no client-ca-file",
        )?;
    let services: Api<Service> = Api::namespaced(client.clone(), "default");
    let cluster_dns = services
        .get("kubernetes")
        .await
        .map_err(|e| explain(e, &server))?
        .spec
        .and_then(|s| s.cluster_ip)
        .and_then(|ip| cluster_dns_from(&ip))
        .into_iter()
        .collect();

    let node_name = args.node_name.clone().unwrap_or_else(hostname);
    let node_ip = args.node_ip.unwrap_or_else(primary_ip);
    let (cert, key) = pki::self_signed_serving_cert(
        &node_name,
        &[node_name.clone(), "localhost".into()],
        &[node_ip, IpAddr::V4(Ipv4Addr::LOCALHOST)],
    )?;
    let serving_tls = pki::kubelet_server_config(&cert, &key, &client_ca)?;
    let proxy_routes = proxy::Routes::default();
    let config = kubelet_config(
        &args.data_dir,
        &args.kubelet,
        NodeIdentity {
            node_name: node_name.clone(),
            node_ip,
            serving_tls,
            default_pod_cidr: None,
            cluster_dns,
            extra_labels: BTreeMap::new(),
            proxy_routes: proxy_routes.clone(),
        },
    )?;
    tracing::info!(node = %node_name, %node_ip, server = %server, "joined the cluster; starting the kubelet");
    println!("rkube agent: node {node_name} joined {server}");
    let proxy = run_proxy_forever(
        client.clone(),
        proxy_config(
            &node_name,
            node_ip,
            &args.cluster_cidr,
            &args.kubelet.cni_bridge,
            proxy_routes,
        ),
    );
    let kubelet = run_kubelet_forever(client, config);
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = kubelet => {}
        _ = proxy => {}
        _ = tokio::signal::ctrl_c() => tracing::info!("interrupted; shutting down"),
        _ = term.recv() => tracing::info!("terminated; shutting down"),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_and_dns() {
        assert_eq!(
            parse_label("a/b=c").unwrap(),
            ("a/b".to_string(), "c".to_string())
        );
        assert!(parse_label("novalue").is_err());
        assert_eq!(
            cluster_dns_from("10.43.0.1"),
            Some("10.43.0.10".parse().unwrap())
        );
        assert_eq!(cluster_dns_from("nope"), None);
    }
}
