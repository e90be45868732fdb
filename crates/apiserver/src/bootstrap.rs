//! Objects every cluster has from the start: the system namespaces, the `kubernetes` Service
//! with its endpoints, the system priority classes and the default StorageClass.

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
    if let Some(tls) = &server.config.cluster_tls {
        publish_client_ca(server, &tls.client_ca_pem).await?;
    }
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
    // k3s's default StorageClass: claims without a class get local-path volumes on the node
    // of their first consumer.
    ensure(
        server,
        "storage.k8s.io",
        "storageclasses",
        json!({
            "apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
            "metadata": {"name": "local-path", "annotations": {"storageclass.kubernetes.io/is-default-class": "true"}},
            "provisioner": "rancher.io/local-path",
            "reclaimPolicy": "Delete",
            "volumeBindingMode": "WaitForFirstConsumer",
        }),
    )
    .await?;
    Ok(())
}

/// ConfigMap `kube-system/extension-apiserver-authentication` with the client CA under
/// `client-ca-file`, as upstream's API server keeps it: agents read it to verify who calls
/// their kubelet. Kept current when the CA changes.
async fn publish_client_ca(server: &Arc<ApiServer>, client_ca_pem: &str) -> anyhow::Result<()> {
    const NAME: &str = "extension-apiserver-authentication";
    ensure(
        server,
        "",
        "configmaps",
        json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": NAME, "namespace": "kube-system"},
            "data": {"client-ca-file": client_ca_pem},
        }),
    )
    .await?;
    let resource = api::resources::storage_row("configmaps").expect("configmaps are registered");
    let key = resource.key(Some("kube-system"), NAME);
    let current = server.cache.get(resource, &key).map(|o| o.value());
    if current
        .as_ref()
        .and_then(|cm| cm.pointer("/data/client-ca-file"))
        .and_then(Value::as_str)
        == Some(client_ca_pem)
    {
        return Ok(());
    }
    crate::rest::update_object(
        server,
        resource,
        &key,
        crate::error::Subject {
            group: "",
            resource: "configmaps",
            name: NAME,
        },
        None,
        false,
        |old| {
            let mut new = old.clone();
            new["data"]["client-ca-file"] = json!(client_ca_pem);
            Ok(new)
        },
    )
    .await
    .map_err(|e| anyhow::anyhow!("updating configmap kube-system/{NAME}: {e}"))?;
    Ok(())
}
