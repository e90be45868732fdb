//! A container's environment: `env` (values, configMapKeyRef, secretKeyRef, fieldRef,
//! resourceFieldRef), `envFrom`, and the Service variables (`enableServiceLinks`, and always the
//! `kubernetes` Service's `KUBERNETES_SERVICE_HOST`/`PORT`).

use std::net::IpAddr;

use k8s_openapi::api::core::v1::{Container, Pod};

/// Facts about the running pod that fieldRefs read.
#[derive(Debug, Clone)]
pub struct EnvContext {
    pub node_name: String,
    pub node_ip: IpAddr,
    pub pod_ips: Vec<IpAddr>,
}

/// A missing ConfigMap/Secret or key (not optional): the kubelet reports
/// CreateContainerConfigError with this message, as upstream (`configmap "x" not found`,
/// `couldn't find key K in ConfigMap ns/x`).
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct EnvError {
    pub message: String,
}

pub async fn container_env(
    client: &kube::Client,
    pod: &Pod,
    container: &Container,
    ctx: &EnvContext,
) -> Result<Vec<(String, String)>, EnvError> {
    let _ = (client, pod, container, ctx);
    todo!("volumes helper")
}
