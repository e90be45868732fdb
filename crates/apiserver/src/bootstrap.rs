//! Objects every cluster has from the start: the system namespaces, the `kubernetes` Service
//! with its endpoints, and the system priority classes.

use std::sync::Arc;

use serde_json::{Value, json};

use crate::ApiServer;
use crate::auth::UserInfo;
use crate::error::ApiError;

fn system_user() -> UserInfo {
    UserInfo {
        name: "system:apiserver".into(),
        uid: String::new(),
        groups: vec!["system:masters".into()],
    }
}

async fn ensure(
    server: &Arc<ApiServer>,
    group: &str,
    plural: &str,
    obj: Value,
) -> anyhow::Result<()> {
    let resource = api::resources::all()
        .iter()
        .find(|r| r.group == group && r.plural == plural && r.storage_version)
        .expect("bootstrap resources are registered");
    let namespace = obj
        .pointer("/metadata/namespace")
        .and_then(Value::as_str)
        .map(String::from);
    match crate::rest::create_object(
        server,
        resource,
        namespace.as_deref(),
        obj,
        &system_user(),
        false,
    )
    .await
    {
        Ok(_) => Ok(()),
        Err(ApiError {
            reason: "AlreadyExists",
            ..
        }) => Ok(()),
        Err(e) => Err(anyhow::anyhow!("creating built-in {plural}: {e}")),
    }
}

pub async fn ensure_builtin_objects(server: &Arc<ApiServer>) -> anyhow::Result<()> {
    for ns in ["default", "kube-system", "kube-public", "kube-node-lease"] {
        ensure(
            server,
            "",
            "namespaces",
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}),
        )
        .await?;
    }
    let service_ip = server.config.service_cidr.nth(1).to_string();
    let host = server.config.advertise_address.to_string();
    let port = server.config.bind.port();
    ensure(
        server,
        "",
        "services",
        json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "kubernetes", "namespace": "default", "labels": {"component": "apiserver", "provider": "kubernetes"}},
            "spec": {"type": "ClusterIP", "clusterIP": service_ip, "ports": [{"name": "https", "port": 443, "protocol": "TCP", "targetPort": port}]},
        }),
    )
    .await?;
    ensure(
        server,
        "",
        "endpoints",
        json!({
            "apiVersion": "v1", "kind": "Endpoints",
            "metadata": {"name": "kubernetes", "namespace": "default", "labels": {"endpointslice.kubernetes.io/skip-mirror": "true"}},
            "subsets": [{"addresses": [{"ip": host}], "ports": [{"name": "https", "port": port, "protocol": "TCP"}]}],
        }),
    )
    .await?;
    ensure(
        server,
        "discovery.k8s.io",
        "endpointslices",
        json!({
            "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": "kubernetes", "namespace": "default", "labels": {"kubernetes.io/service-name": "kubernetes"}},
            "addressType": "IPv4",
            "endpoints": [{"addresses": [host], "conditions": {"ready": true}}],
            "ports": [{"name": "https", "port": port, "protocol": "TCP"}],
        }),
    )
    .await?;
    for (name, value) in [
        ("system-node-critical", 2_000_001_000i64),
        ("system-cluster-critical", 2_000_000_000),
    ] {
        ensure(
            server,
            "scheduling.k8s.io",
            "priorityclasses",
            json!({
                "apiVersion": "scheduling.k8s.io/v1", "kind": "PriorityClass",
                "metadata": {"name": name}, "value": value,
                "description": "Used for system critical pods that must not be moved from their current node.",
            }),
        )
        .await?;
    }
    Ok(())
}
