//! Static pods: manifests in a folder on the node, run by the kubelet without the API server's
//! say, and mirrored into the API as mirror pods (annotation `kubernetes.io/config.mirror`).
//!
//! A static pod is named `<name>-<node>`; its UID is a hash of its manifest and the node, so
//! that a restarted agent recognizes its containers and a changed manifest is a new pod.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, PostParams};

use crate::pods::{MIRROR_ANNOTATION, PodContext};

/// How often the folder is read again (upstream: 20 s).
const RESCAN: Duration = Duration::from_secs(5);
const HASH_ANNOTATION: &str = "kubernetes.io/config.hash";
const SOURCE_ANNOTATION: &str = "kubernetes.io/config.source";

/// FNV-1a, 64 bits: a stable hash (unlike std's) for manifest UIDs.
fn fnv1a(seed: u64, data: &[u8]) -> u64 {
    let mut hash = seed;
    for b in data {
        hash ^= u64::from(*b);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

/// A UID-shaped 128-bit hash of a manifest on a node.
fn manifest_uid(manifest: &[u8], node: &str) -> String {
    let mut data = manifest.to_vec();
    data.push(0);
    data.extend_from_slice(node.as_bytes());
    let a = fnv1a(0xcbf2_9ce4_8422_2325, &data);
    let b = fnv1a(0x84222325_cbf29ce4, &data);
    let hex = format!("{a:016x}{b:016x}");
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

/// Parse one manifest into the pod this node runs.
pub fn static_pod(manifest: &[u8], node: &str) -> Result<Pod, String> {
    let mut pod: Pod = serde_yaml::from_slice(manifest).map_err(|e| e.to_string())?;
    let name = pod
        .metadata
        .name
        .clone()
        .filter(|n| !n.is_empty())
        .ok_or("the manifest has no metadata.name")?;
    let uid = manifest_uid(manifest, node);
    pod.metadata.name = Some(format!("{name}-{node}"));
    if pod.metadata.namespace.as_deref().is_none_or(str::is_empty) {
        pod.metadata.namespace = Some("default".into());
    }
    pod.metadata.uid = Some(uid.clone());
    let annotations = pod
        .metadata
        .annotations
        .get_or_insert_with(Default::default);
    annotations.insert(HASH_ANNOTATION.into(), uid);
    annotations.insert(SOURCE_ANNOTATION.into(), "file".into());
    let spec = pod.spec.get_or_insert_with(Default::default);
    spec.node_name = Some(node.to_string());
    pod.status = None;
    Ok(pod)
}

/// The static pods of a folder (`*.yaml`, `*.yml`, `*.json`; hidden files skipped), by UID.
pub fn load_manifests(dir: &Path, node: &str) -> HashMap<String, Pod> {
    let mut pods = HashMap::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return pods;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        let wanted = [".yaml", ".yml", ".json"].iter().any(|e| name.ends_with(e));
        if name.starts_with('.') || !wanted || !path.is_file() {
            continue;
        }
        let Ok(bytes) = std::fs::read(&path) else {
            continue;
        };
        match static_pod(&bytes, node) {
            Ok(pod) => {
                pods.insert(pod.metadata.uid.clone().unwrap_or_default(), pod);
            }
            Err(e) => tracing::warn!(path = %path.display(), error = %e, "bad static pod manifest"),
        }
    }
    pods
}

/// The UIDs of the static pods configured now (their containers are not orphans).
pub fn manifest_uids(ctx: &PodContext) -> HashSet<String> {
    match &ctx.config.static_pod_dir {
        Some(dir) => load_manifests(dir, &ctx.config.node_name)
            .into_keys()
            .collect(),
        None => HashSet::new(),
    }
}

/// The mirror pod of a static pod: the same object, annotated, for the API to show.
fn mirror_of(pod: &Pod) -> Pod {
    let mut mirror = pod.clone();
    let uid = pod.metadata.uid.clone().unwrap_or_default();
    mirror.metadata.uid = None;
    mirror
        .metadata
        .annotations
        .get_or_insert_with(Default::default)
        .insert(MIRROR_ANNOTATION.into(), uid);
    mirror.status = None;
    mirror
}

/// Create (or replace a stale) mirror pod.
async fn ensure_mirror(ctx: &PodContext, pod: &Pod) {
    let namespace = pod.metadata.namespace.clone().unwrap_or_default();
    let name = pod.metadata.name.clone().unwrap_or_default();
    let uid = pod.metadata.uid.clone().unwrap_or_default();
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), &namespace);
    match api.get_opt(&name).await {
        Ok(Some(existing)) => {
            let hash = existing
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(MIRROR_ANNOTATION).cloned());
            if hash.as_deref() == Some(uid.as_str())
                && existing.metadata.deletion_timestamp.is_none()
            {
                return;
            }
            // A stale mirror (older manifest) or a pod of the same name: replace it.
            let _ = api
                .delete(&name, &DeleteParams::default().grace_period(0))
                .await;
            return;
        }
        Ok(None) => {}
        Err(e) => {
            tracing::warn!(pod = %format!("{namespace}/{name}"), error = %e, "reading the mirror pod");
            return;
        }
    }
    match api.create(&PostParams::default(), &mirror_of(pod)).await {
        Ok(_) => tracing::info!(pod = %format!("{namespace}/{name}"), "created mirror pod"),
        Err(e) => {
            tracing::warn!(pod = %format!("{namespace}/{name}"), error = %e, "creating the mirror pod")
        }
    }
}

async fn delete_mirror(ctx: &PodContext, pod: &Pod) {
    let namespace = pod.metadata.namespace.clone().unwrap_or_default();
    let name = pod.metadata.name.clone().unwrap_or_default();
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), &namespace);
    if let Ok(Some(existing)) = api.get_opt(&name).await {
        let ours = existing
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(MIRROR_ANNOTATION))
            == pod.metadata.uid.as_ref();
        if ours {
            let _ = api
                .delete(&name, &DeleteParams::default().grace_period(0))
                .await;
        }
    }
}

/// Watch `static_pod_dir` and keep its pods running and mirrored; without a folder it waits
/// forever, so that the kubelet's select does not end.
pub async fn run(ctx: Arc<PodContext>) -> anyhow::Result<()> {
    let Some(dir) = ctx.config.static_pod_dir.clone() else {
        std::future::pending::<()>().await;
        return Ok(());
    };
    ctx.workers.inventory_ready().await;
    let node = ctx.config.node_name.clone();
    let mut known: HashMap<String, Pod> = HashMap::new();
    loop {
        let pods = load_manifests(&dir, &node);
        for (uid, pod) in &known {
            if !pods.contains_key(uid) {
                tracing::info!(pod = ?pod.metadata.name, "static pod manifest removed");
                ctx.workers.remove(uid);
                delete_mirror(&ctx, pod).await;
            }
        }
        for (uid, pod) in &pods {
            if !known.contains_key(uid) {
                tracing::info!(pod = ?pod.metadata.name, "starting static pod");
                ctx.workers.update(&ctx, pod.clone(), true);
            }
            ensure_mirror(&ctx, pod).await;
        }
        known = pods;
        tokio::time::sleep(RESCAN).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MANIFEST: &str = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: web\nspec:\n  containers:\n  - name: app\n    image: busybox:1.36\n";

    #[test]
    fn static_pods_are_named_for_the_node_with_a_stable_uid() {
        let a = static_pod(MANIFEST.as_bytes(), "node-1").unwrap();
        assert_eq!(a.metadata.name.as_deref(), Some("web-node-1"));
        assert_eq!(a.metadata.namespace.as_deref(), Some("default"));
        assert_eq!(
            a.spec.as_ref().unwrap().node_name.as_deref(),
            Some("node-1")
        );
        let again = static_pod(MANIFEST.as_bytes(), "node-1").unwrap();
        assert_eq!(a.metadata.uid, again.metadata.uid);
        let other_node = static_pod(MANIFEST.as_bytes(), "node-2").unwrap();
        assert_ne!(a.metadata.uid, other_node.metadata.uid);
        let changed = static_pod(MANIFEST.replace("1.36", "1.37").as_bytes(), "node-1").unwrap();
        assert_ne!(a.metadata.uid, changed.metadata.uid);
        assert_eq!(a.metadata.uid.as_ref().unwrap().len(), 36);
        let mirror = mirror_of(&a);
        assert_eq!(mirror.metadata.uid, None);
        assert_eq!(
            mirror.metadata.annotations.unwrap().get(MIRROR_ANNOTATION),
            a.metadata.uid.as_ref()
        );
        assert!(static_pod(b"kind: Pod\n", "n").is_err());
    }

    #[test]
    fn manifests_are_read_from_the_folder() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("web.yaml"), MANIFEST).unwrap();
        std::fs::write(dir.path().join(".hidden.yaml"), MANIFEST).unwrap();
        std::fs::write(dir.path().join("notes.txt"), "x").unwrap();
        std::fs::write(dir.path().join("bad.yaml"), "{{{").unwrap();
        let pods = load_manifests(dir.path(), "n1");
        assert_eq!(pods.len(), 1);
        assert_eq!(
            pods.values().next().unwrap().metadata.name.as_deref(),
            Some("web-n1")
        );
    }
}
