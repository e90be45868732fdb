//! `rkube server`: the control plane.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, bail};
use clap::Args;

#[derive(Args, Debug)]
pub struct ServerArgs {
    /// Where the store, certificates and kubeconfig live.
    #[arg(long, default_value = "/var/lib/rkube", env = "RKUBE_DATA_DIR")]
    pub data_dir: PathBuf,
    /// HTTPS port of the API server.
    #[arg(long, default_value_t = 6443)]
    pub https_port: u16,
    /// Address the API server listens on.
    #[arg(long, default_value = "0.0.0.0")]
    pub bind_address: IpAddr,
    /// Address advertised to the cluster (the `kubernetes` Service's endpoint); default: the host's primary address.
    #[arg(long)]
    pub advertise_address: Option<IpAddr>,
    /// `embedded` (SQLite under the data dir) or `etcd://host:2379,host2:2379`.
    #[arg(long, default_value = "embedded")]
    pub datastore: String,
    /// Do not run a node agent on this host.
    #[arg(long)]
    pub disable_agent: bool,
    /// Do not run the scheduler in this process.
    #[arg(long)]
    pub disable_scheduler: bool,
    /// Do not run the controllers in this process.
    #[arg(long)]
    pub disable_controller_manager: bool,
    /// Pod network of the cluster; each node gets a /24 of it.
    #[arg(long, default_value = "10.42.0.0/16")]
    pub cluster_cidr: String,
    /// Range Service cluster IPs are allocated from.
    #[arg(long, default_value = "10.43.0.0/16")]
    pub service_cidr: String,
    /// Port range of NodePort Services.
    #[arg(long, default_value = "30000-32767")]
    pub service_node_port_range: String,
    /// Name of this host's Node (default: the hostname).
    #[arg(long)]
    pub node_name: Option<String>,
    /// Static bearer tokens, upstream's CSV format: token,user,uid,"group1,group2".
    #[arg(long)]
    pub token_file: Option<PathBuf>,
    /// Extra names for the serving certificate.
    #[arg(long = "tls-san")]
    pub tls_san: Vec<String>,
    /// Node monitor grace period: a node whose Lease is not renewed for this long becomes NotReady.
    #[arg(long, default_value = "40s", value_parser = parse_duration)]
    pub node_monitor_grace_period: std::time::Duration,
    /// Addresses for LoadBalancer Services, comma separated IPs or CIDRs (default: the nodes'
    /// own addresses, like k3s's service load balancer).
    #[arg(long, value_parser = parse_ip_pool)]
    pub lb_ip_pool: Option<Vec<IpAddr>>,
    /// Port of the cluster DNS server on the advertise address (the `kube-dns` Service sends
    /// port 53 there); 0 runs no DNS server.
    #[arg(long, default_value_t = 53)]
    pub cluster_dns_port: u16,
    /// Also run this many simulated nodes in the server (see `rkube sim`).
    #[arg(long, default_value_t = 0)]
    pub sim_nodes: usize,
    /// The node agent's address (InternalIP); default: the advertise address.
    #[arg(long)]
    pub node_ip: Option<IpAddr>,
    #[command(flatten)]
    pub kubelet: super::agent::KubeletArgs,
    /// Skip fsync on store commits (faster, loses recent writes on power loss). For tests only.
    #[arg(long, hide = true)]
    pub unsafe_no_fsync: bool,
}

fn host_addresses() -> Vec<IpAddr> {
    if_addrs::get_if_addrs()
        .map(|ifs| {
            ifs.into_iter()
                .map(|i| i.ip())
                .filter(|ip| !ip.is_loopback())
                .collect()
        })
        .unwrap_or_default()
}

/// `40s`, `5m`, `1h` or plain seconds.
pub fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    let s = s.trim();
    let (number, unit) = s
        .find(|c: char| !c.is_ascii_digit())
        .map_or((s, "s"), |i| s.split_at(i));
    let n: u64 = number
        .parse()
        .map_err(|_| format!("invalid duration {s:?}"))?;
    let seconds = match unit {
        "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        _ => return Err(format!("invalid duration {s:?}: use s, m or h")),
    };
    Ok(std::time::Duration::from_secs(seconds))
}

/// `10.0.0.5,10.0.1.0/30`: single addresses and (IPv4) CIDRs, expanded; at most 4096.
fn parse_ip_pool(s: &str) -> Result<Vec<IpAddr>, String> {
    let mut pool = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        if let Some((net, bits)) = part.split_once('/') {
            let net: Ipv4Addr = net.parse().map_err(|_| format!("invalid CIDR {part:?}"))?;
            let bits: u32 = bits.parse().map_err(|_| format!("invalid CIDR {part:?}"))?;
            if !(20..=32).contains(&bits) {
                return Err(format!("CIDR {part:?}: use a prefix from /20 to /32"));
            }
            let base = u32::from(net) & u32::MAX.checked_shl(32 - bits).unwrap_or(0);
            let size = 1u32 << (32 - bits);
            pool.extend((0..size).map(|i| IpAddr::V4(Ipv4Addr::from(base + i))));
        } else {
            pool.push(
                part.parse()
                    .map_err(|_| format!("invalid address {part:?}"))?,
            );
        }
    }
    if pool.is_empty() {
        return Err("empty address pool".into());
    }
    Ok(pool)
}

fn parse_port_range(s: &str) -> anyhow::Result<(u16, u16)> {
    let (low, high) = s
        .split_once('-')
        .with_context(|| format!("invalid port range {s:?}: expected LOW-HIGH"))?;
    let (low, high): (u16, u16) = (low.trim().parse()?, high.trim().parse()?);
    if low == 0 || low > high {
        bail!("invalid port range {s:?}");
    }
    Ok((low, high))
}

pub fn run(args: ServerArgs) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(serve(args))
}

async fn serve(args: ServerArgs) -> anyhow::Result<()> {
    let started = std::time::Instant::now();
    std::fs::create_dir_all(&args.data_dir)
        .with_context(|| format!("creating data dir {}", args.data_dir.display()))?;
    let service_cidr: apiserver::allocator::Cidr = args
        .service_cidr
        .parse()
        .map_err(|e: String| anyhow::anyhow!("--service-cidr: {e}"))?;
    let _cluster_cidr: apiserver::allocator::Cidr = args
        .cluster_cidr
        .parse()
        .map_err(|e: String| anyhow::anyhow!("--cluster-cidr: {e}"))?;
    let node_ports =
        parse_port_range(&args.service_node_port_range).context("--service-node-port-range")?;

    let store: Arc<dyn store::Store> = if args.datastore == "embedded" || args.datastore.is_empty()
    {
        let db_dir = args.data_dir.join("db");
        std::fs::create_dir_all(&db_dir)
            .with_context(|| format!("creating {}", db_dir.display()))?;
        let options = store::sqlite::SqliteOptions {
            fsync: !args.unsafe_no_fsync,
            ..Default::default()
        };
        let path = db_dir.join("state.db");
        Arc::new(
            store::sqlite::SqliteStore::open(&path, options)
                .with_context(|| format!("opening store {}", path.display()))?,
        )
    } else if let Some(endpoints) = store::etcd::parse_datastore(&args.datastore) {
        Arc::new(
            store::etcd::EtcdStore::connect(&endpoints)
                .await
                .with_context(|| format!("connecting to etcd {}", args.datastore))?,
        )
    } else {
        bail!(
            "--datastore {:?}: expected \"embedded\" or etcd://host:port[,host:port...]",
            args.datastore
        );
    };

    let host_ips = host_addresses();
    let advertise = args
        .advertise_address
        .or_else(|| host_ips.iter().copied().find(IpAddr::is_ipv4))
        .unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST));
    let mut ips = host_ips.clone();
    ips.push(IpAddr::V4(service_cidr.nth(1)));
    ips.push(advertise);
    let mut sans = args.tls_san.clone();
    if let Ok(host) = std::fs::read_to_string("/proc/sys/kernel/hostname") {
        sans.push(host.trim().to_string());
    }
    let pki = pki::Pki::load_or_create(&args.data_dir.join("tls"), &pki::PkiOptions { sans, ips })
        .context("preparing certificates")?;
    let tls = pki
        .server_config()
        .context("building the TLS configuration")?;

    let mut tokens = match &args.token_file {
        Some(path) => apiserver::TokenAuthenticator::from_file(path)?,
        None => apiserver::TokenAuthenticator::default(),
    };
    // Agents join with the node token (k3s's format); its secret authenticates them.
    let token_path = args.data_dir.join("node-token");
    let node_token = pki::load_or_create_node_token(&token_path, pki.ca_pem())
        .with_context(|| format!("preparing {}", token_path.display()))?;
    let bootstrap_user = apiserver::UserInfo {
        name: "system:node-bootstrap".into(),
        uid: String::new(),
        groups: vec!["system:nodes".into(), "system:authenticated".into()],
    };
    tokens.insert(node_token.secret.clone(), bootstrap_user.clone());
    tokens.insert(node_token.to_string(), bootstrap_user);
    let (kubelet_client_cert, kubelet_client_key) = pki.kubelet_client_cert()?;
    let bind = SocketAddr::new(args.bind_address, args.https_port);
    let config = apiserver::Config {
        bind,
        advertise_address: advertise,
        service_cidr: service_cidr.clone(),
        node_port_range: node_ports,
        cluster_tls: Some(apiserver::ClusterTls {
            server_ca_pem: pki.ca_pem().to_string(),
            client_ca_pem: pki.client_ca_pem().to_string(),
            kubelet_client: pki::kubelet_client_config(&kubelet_client_cert, &kubelet_client_key)?,
        }),
    };
    let listener = tokio::net::TcpListener::bind(bind)
        .await
        .with_context(|| format!("listening on {bind}"))?;
    let server = apiserver::ApiServer::new(config, store, tokens).await?;

    let kubeconfig = args.data_dir.join("kubeconfig.yaml");
    let local = if args.bind_address.is_unspecified() || args.bind_address.is_loopback() {
        "127.0.0.1".to_string()
    } else {
        args.bind_address.to_string()
    };
    pki.write_admin_kubeconfig(&kubeconfig, &format!("https://{local}:{}", args.https_port))
        .with_context(|| format!("writing {}", kubeconfig.display()))?;
    tracing::info!(%bind, elapsed_ms = started.elapsed().as_millis() as u64, "rkube server is ready");
    println!(
        "rkube server is running at https://{local}:{}",
        args.https_port
    );
    println!("kubeconfig: {}", kubeconfig.display());
    println!(
        "try: kubectl --kubeconfig {} get namespaces",
        kubeconfig.display()
    );

    let serving = tokio::spawn(apiserver::serve(server, tls, listener));
    start_components(&pki, &args, &local).await?;
    if args.cluster_dns_port != 0 {
        start_cluster_dns(&pki, &args, &local, advertise, &service_cidr).await?;
    }
    if !args.disable_agent {
        start_agent(&pki, &args, &local, advertise, &service_cidr).await?;
    }
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        result = serving => { result??; }
        _ = tokio::signal::ctrl_c() => tracing::info!("interrupted; shutting down"),
        _ = term.recv() => tracing::info!("terminated; shutting down"),
    }
    Ok(())
}

/// The scheduler and the controllers run in this process but, like every component, reach
/// objects only through the API server, each with a client certificate of its own.
async fn start_components(pki: &pki::Pki, args: &ServerArgs, host: &str) -> anyhow::Result<()> {
    let url = format!("https://{host}:{}", args.https_port);
    let client_for = |user: &str| -> anyhow::Result<String> {
        // Until RBAC exists, system components are in system:masters.
        let (cert, key) = pki.issue_client_cert(user, &["system:masters"])?;
        Ok(pki::kubeconfig_yaml(&url, pki.ca_pem(), &cert, &key))
    };
    let identity = format!(
        "{}_{}",
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .unwrap_or_default()
            .trim(),
        std::process::id()
    );
    let controller_client =
        controllers::client_from_kubeconfig_yaml(&client_for("system:kube-controller-manager")?)
            .await?;
    let ctx = std::sync::Arc::new(controllers::Context::new(
        controller_client.clone(),
        controllers::ControllerConfig {
            cluster_cidr: args.cluster_cidr.clone(),
            node_monitor_grace_period: args.node_monitor_grace_period,
            local_storage_path: args.data_dir.join("storage").to_string_lossy().into_owned(),
        },
    ));
    if args.sim_nodes > 0 {
        let sim_client =
            controllers::client_from_kubeconfig_yaml(&client_for("system:node:sim")?).await?;
        let config = sim::SimConfig {
            nodes: args.sim_nodes,
            // Renew well within a short --node-monitor-grace-period, or the nodes flap.
            renew_interval: (args.node_monitor_grace_period / 4).clamp(
                std::time::Duration::from_secs(1),
                std::time::Duration::from_secs(10),
            ),
            ..Default::default()
        };
        tokio::spawn(async move {
            if let Err(e) = sim::run(sim_client, config).await {
                tracing::error!(error = %e, "simulated nodes stopped");
            }
        });
    }
    if !args.disable_scheduler {
        let scheduler_client =
            controllers::client_from_kubeconfig_yaml(&client_for("system:kube-scheduler")?).await?;
        tokio::spawn(scheduler::run(scheduler_client, identity.clone()));
    }
    if !args.disable_controller_manager {
        let lb_client = controller_client.clone();
        let pool = args.lb_ip_pool.clone();
        tokio::spawn(async move {
            // Like the controllers, a failed allocator comes back after a pause.
            loop {
                let config = proxy::LbConfig { pool: pool.clone() };
                if let Err(e) = proxy::run_service_lb(lb_client.clone(), config).await {
                    tracing::error!(error = format!("{e:#}"), "the service load balancer failed");
                }
                tokio::time::sleep(std::time::Duration::from_secs(5)).await;
            }
        });
        let election =
            controllers::leader::LeaderElection::new("kube-controller-manager", &identity);
        tokio::spawn(async move {
            election
                .run(controller_client, move || controllers::run_all(ctx.clone()))
                .await;
        });
    }
    Ok(())
}

/// Cluster DNS in this process, on `<advertise>:<port>`, behind the `kube-system/kube-dns`
/// Service at the tenth address of the service range (what kubelets write into pods'
/// resolv.conf). The Service has no selector: its EndpointSlice, kept by this server, points at
/// the DNS server itself.
async fn start_cluster_dns(
    pki: &pki::Pki,
    args: &ServerArgs,
    host: &str,
    advertise: IpAddr,
    service_cidr: &apiserver::allocator::Cidr,
) -> anyhow::Result<()> {
    let url = format!("https://{host}:{}", args.https_port);
    let (cert, key) = pki.issue_client_cert("system:kube-dns", &["system:masters"])?;
    let client = controllers::client_from_kubeconfig_yaml(&pki::kubeconfig_yaml(
        &url,
        pki.ca_pem(),
        &cert,
        &key,
    ))
    .await?;
    let listen = SocketAddr::new(advertise, args.cluster_dns_port);
    // Check the port now: a taken one means no cluster DNS, said once and clearly, while the
    // rest of the cluster works.
    if let Err(e) = std::net::UdpSocket::bind(listen) {
        tracing::error!(%listen, error = %e, "cluster DNS cannot listen (another DNS server on this port?): pods will not resolve Service names; pick a free --cluster-dns-port");
        return Ok(());
    }
    let cluster_ip = IpAddr::V4(service_cidr.nth(10));
    let dns_client = client.clone();
    tokio::spawn(async move {
        loop {
            let config = dns::DnsConfig {
                listen: vec![listen],
                ..Default::default()
            };
            if let Err(e) = dns::run(dns_client.clone(), config).await {
                tracing::error!(error = format!("{e:#}"), "cluster DNS failed");
            }
            tokio::time::sleep(std::time::Duration::from_secs(2)).await;
        }
    });
    tokio::spawn(async move {
        // The Service and its endpoints may race with namespace bootstrap: retry until done.
        let mut pause = std::time::Duration::from_millis(200);
        loop {
            match ensure_kube_dns_service(&client, cluster_ip, listen).await {
                Ok(()) => break,
                Err(e) => tracing::warn!(error = format!("{e:#}"), "creating the kube-dns Service"),
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(std::time::Duration::from_secs(10));
        }
    });
    tracing::info!(%listen, %cluster_ip, "cluster DNS serving");
    Ok(())
}

async fn ensure_kube_dns_service(
    client: &kube::Client,
    cluster_ip: IpAddr,
    dns: SocketAddr,
) -> anyhow::Result<()> {
    use k8s_openapi::api::core::v1::Service;
    use k8s_openapi::api::discovery::v1::EndpointSlice;
    use kube::api::Api;
    let ports = serde_json::json!([
        {"name": "dns", "port": 53, "protocol": "UDP", "targetPort": dns.port()},
        {"name": "dns-tcp", "port": 53, "protocol": "TCP", "targetPort": dns.port()},
    ]);
    let service: Service = serde_json::from_value(serde_json::json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": "kube-dns",
            "namespace": "kube-system",
            "labels": {"k8s-app": "kube-dns", "kubernetes.io/name": "CoreDNS", "kubernetes.io/cluster-service": "true"},
        },
        "spec": {"clusterIP": cluster_ip.to_string(), "ports": ports},
    }))?;
    // A merge patch, not apply: our apply still tells list items apart by the strategic merge
    // key alone (`port`), which would fold the UDP and TCP ports into one.
    create_or_merge(
        &Api::<Service>::namespaced(client.clone(), "kube-system"),
        "kube-dns",
        &service,
    )
    .await
    .context("Service kube-system/kube-dns")?;
    let slice: EndpointSlice = serde_json::from_value(serde_json::json!({
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": "kube-dns-rkube",
            "namespace": "kube-system",
            "labels": {
                "kubernetes.io/service-name": "kube-dns",
                "endpointslice.kubernetes.io/managed-by": "rkube-server",
            },
        },
        "addressType": if dns.is_ipv4() { "IPv4" } else { "IPv6" },
        "endpoints": [{"addresses": [dns.ip().to_string()], "conditions": {"ready": true, "serving": true, "terminating": false}}],
        "ports": [
            {"name": "dns", "port": dns.port(), "protocol": "UDP"},
            {"name": "dns-tcp", "port": dns.port(), "protocol": "TCP"},
        ],
    }))?;
    create_or_merge(
        &Api::<EndpointSlice>::namespaced(client.clone(), "kube-system"),
        "kube-dns-rkube",
        &slice,
    )
    .await
    .context("EndpointSlice kube-system/kube-dns-rkube")?;
    Ok(())
}

async fn create_or_merge<K>(api: &kube::Api<K>, name: &str, object: &K) -> kube::Result<()>
where
    K: kube::Resource + Clone + serde::Serialize + serde::de::DeserializeOwned + std::fmt::Debug,
{
    use kube::api::{Patch, PatchParams, PostParams};
    match api.create(&PostParams::default(), object).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 409 => api
            .patch(name, &PatchParams::default(), &Patch::Merge(object))
            .await
            .map(|_| ()),
        Err(e) => Err(e),
    }
}

/// The node agent of this host, in this process: like any kubelet it reaches the API server
/// over HTTPS, as `system:node:<name>` (group `system:nodes`).
async fn start_agent(
    pki: &pki::Pki,
    args: &ServerArgs,
    host: &str,
    advertise: IpAddr,
    service_cidr: &apiserver::allocator::Cidr,
) -> anyhow::Result<()> {
    let node_name = args
        .node_name
        .clone()
        .unwrap_or_else(super::agent::hostname);
    let node_ip = args.node_ip.unwrap_or(advertise);
    let url = format!("https://{host}:{}", args.https_port);
    let (cert, key) =
        pki.issue_client_cert(&format!("system:node:{node_name}"), &["system:nodes"])?;
    let client = controllers::client_from_kubeconfig_yaml(&pki::kubeconfig_yaml(
        &url,
        pki.ca_pem(),
        &cert,
        &key,
    ))
    .await?;
    let mut dns = vec![node_name.clone(), "localhost".to_string()];
    let host_name = super::agent::hostname();
    if !dns.contains(&host_name) {
        dns.push(host_name);
    }
    let mut ips = vec![node_ip, IpAddr::V4(Ipv4Addr::LOCALHOST)];
    ips.dedup();
    let (serving_cert, serving_key) = pki.issue_serving_cert(&node_name, &dns, &ips)?;
    let serving_tls = pki::kubelet_server_config(&serving_cert, &serving_key, pki.client_ca_pem())?;
    // Without the controllers there is no node IPAM to give the node its podCIDR.
    let default_pod_cidr = args.disable_controller_manager.then(|| {
        let cluster: apiserver::allocator::Cidr = args
            .cluster_cidr
            .parse()
            .expect("--cluster-cidr was checked at start");
        format!("{}/24", cluster.network)
    });
    let proxy_routes = proxy::Routes::default();
    let config = super::agent::kubelet_config(
        &args.data_dir,
        &args.kubelet,
        super::agent::NodeIdentity {
            node_name: node_name.clone(),
            node_ip,
            serving_tls,
            default_pod_cidr,
            cluster_dns: vec![IpAddr::V4(service_cidr.nth(10))],
            extra_labels: [(
                "node-role.kubernetes.io/control-plane".to_string(),
                "true".to_string(),
            )]
            .into(),
            proxy_routes: proxy_routes.clone(),
        },
    )?;
    tracing::info!(node = %node_name, %node_ip, port = args.kubelet.kubelet_port, "starting the node agent");
    tokio::spawn(super::agent::run_proxy_forever(
        client.clone(),
        super::agent::proxy_config(
            &node_name,
            node_ip,
            &args.cluster_cidr,
            &args.kubelet.cni_bridge,
            proxy_routes,
        ),
    ));
    tokio::spawn(super::agent::run_kubelet_forever(client, config));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ip_pools_expand_cidrs_and_keep_single_addresses() {
        let pool = parse_ip_pool("192.168.1.9, 10.0.0.4/30").unwrap();
        let pool: Vec<String> = pool.iter().map(ToString::to_string).collect();
        assert_eq!(
            pool,
            [
                "192.168.1.9",
                "10.0.0.4",
                "10.0.0.5",
                "10.0.0.6",
                "10.0.0.7"
            ]
        );
        assert!(parse_ip_pool("10.0.0.0/8").is_err());
        assert!(parse_ip_pool("nope").is_err());
        assert!(parse_ip_pool("").is_err());
    }
}
