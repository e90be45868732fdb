//! The kubelet's HTTPS endpoint (port 10250): `containerLogs`, `exec`, `attach`, `portForward`,
//! `stats/summary`, `healthz`, `metrics`. Only clients with a certificate from the cluster's
//! client CA get in (the API server proxies users' requests here).

use std::path::PathBuf;
use std::sync::Arc;

use runtime::container::ContainerRuntime;
use runtime::sandbox::SandboxManager;

pub struct StreamingContext {
    pub runtime: ContainerRuntime,
    pub sandboxes: SandboxManager,
    /// Pod logs: see [`crate::pod_log_dir`].
    pub log_root: PathBuf,
}

pub async fn serve(
    listener: tokio::net::TcpListener,
    tls: Arc<rustls::ServerConfig>,
    ctx: Arc<StreamingContext>,
) -> anyhow::Result<()> {
    let _ = (listener, tls, ctx);
    todo!("streaming helper")
}
