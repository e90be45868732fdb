//! The Kubernetes API server.
//!
//! Requests flow: TLS → authentication → routing (`request`) → the generic REST handlers
//! (`rest`) → the resource's strategy (`strategy`: defaulting, validation, status/spec rules,
//! allocations) → the store. Reads and watches are served from the watch cache (`cache`).
//!
//! Architecture Invariant: this is the only crate that holds a `store::Store`; every other
//! component reaches objects through HTTP.

pub mod admission;
pub mod allocator;
pub mod auth;
pub mod bootstrap;
pub mod cache;
pub mod discovery;
pub mod error;
pub mod http;
pub mod metrics;
pub mod metrics_api;
pub mod proxy;
pub mod request;
pub mod rest;
pub mod strategy;

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, OnceLock};

use bytes::Bytes;

pub use auth::{TokenAuthenticator, UserInfo};
pub use http::serve;

/// What the API server needs to know about the cluster it serves.
#[derive(Debug, Clone)]
pub struct Config {
    pub bind: SocketAddr,
    /// The address other hosts and pods reach the API server at (for the `kubernetes` Service's endpoints).
    pub advertise_address: IpAddr,
    pub service_cidr: allocator::Cidr,
    pub node_port_range: (u16, u16),
    /// The cluster's certificates, for nodes: None in tests that run no nodes.
    pub cluster_tls: Option<ClusterTls>,
}

/// What the API server shares with nodes, or uses to reach them.
#[derive(Debug, Clone)]
pub struct ClusterTls {
    /// The server CA (PEM), served unauthenticated at `/cacerts` to agents that join with a
    /// node token (they check its hash against the token).
    pub server_ca_pem: String,
    /// The client CA (PEM), published in ConfigMap `kube-system/extension-apiserver-authentication`
    /// (`client-ca-file`), as upstream does: kubelets trust it for their HTTPS endpoint.
    pub client_ca_pem: String,
    /// TLS towards kubelets (logs, exec, attach, port-forward), with the API server's
    /// kubelet-client certificate.
    pub kubelet_client: Arc<rustls::ClientConfig>,
}

/// Shared state of a running API server.
pub struct ApiServer {
    pub config: Config,
    pub store: Arc<dyn store::Store>,
    pub cache: Arc<cache::Cache>,
    pub tokens: TokenAuthenticator,
    pub metrics: metrics::Metrics,
    pub allocator: allocator::Allocator,
    /// The `metrics.k8s.io` scraper and its cache of kubelet summaries.
    pub metrics_api: metrics_api::MetricsApi,
    /// The OpenAPI v2 document as JSON and as protobuf, built on first request.
    openapi_v2: OnceLock<(Bytes, Bytes)>,
    openapi_v3: OnceLock<std::collections::BTreeMap<String, (String, Bytes)>>,
}

impl ApiServer {
    /// Fill the watch cache from the store and make the built-in objects exist.
    pub async fn new(
        config: Config,
        store: Arc<dyn store::Store>,
        tokens: TokenAuthenticator,
    ) -> anyhow::Result<Arc<ApiServer>> {
        let cache = cache::Cache::start(store.clone()).await?;
        let allocator =
            allocator::Allocator::new(config.service_cidr.clone(), config.node_port_range);
        let server = Arc::new(ApiServer {
            config,
            store,
            cache,
            tokens,
            metrics: metrics::Metrics::new(),
            allocator,
            metrics_api: metrics_api::MetricsApi::new(),
            openapi_v2: OnceLock::new(),
            openapi_v3: OnceLock::new(),
        });
        bootstrap::ensure_builtin_objects(&server).await?;
        Ok(server)
    }
}
