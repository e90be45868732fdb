//! The local-path provisioner, as k3s ships it (`rancher/local-path-provisioner`): for a claim
//! handed to `rancher.io/local-path` (annotation `volume.kubernetes.io/storage-provisioner`)
//! on its selected node, a PersistentVolume `pvc-<claim uid>` pre-bound to the claim, with
//! `spec.local.path` = `<local_storage_path>/pvc-<uid>_<namespace>_<name>` and node affinity
//! to that node; the binder ([`crate::persistentvolume`]) then binds the two.
//!
//! The directory itself is made by the node agent when it first mounts the volume. When a
//! released volume's reclaim policy is Delete, this deletes the PersistentVolume object; the
//! directory stays on the node (the controller cannot reach a remote node's disk).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{
    LocalVolumeSource, Node, NodeSelector, NodeSelectorRequirement, NodeSelectorTerm,
    ObjectReference, PersistentVolume, PersistentVolumeClaim, PersistentVolumeSpec,
    VolumeNodeAffinity,
};
use k8s_openapi::api::storage::v1::StorageClass;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, PostParams, Preconditions};
use kube::runtime::events::{EventType, Reporter};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};

use crate::Context;
use crate::persistentvolume::matching::{
    ANN_DYNAMICALLY_PROVISIONED, ANN_SELECTED_NODE, ANN_STORAGE_PROVISIONER, claim_class,
    is_delay_binding,
};
use crate::util::{self, Outcome, WorkQueue};

/// The provisioner name k3s's default class uses.
pub const PROVISIONER: &str = "rancher.io/local-path";
/// The node label the volume's node affinity selects on.
pub const HOSTNAME_LABEL: &str = "kubernetes.io/hostname";
/// Retry a failed provisioning this often.
const RETRY: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("creating persistentvolume {name}: {source}")]
    Create { name: String, source: kube::Error },
    #[error("deleting persistentvolume {name}: {source}")]
    Delete { name: String, source: kube::Error },
    #[error("reading node {name}: {source}")]
    Node { name: String, source: kube::Error },
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Key {
    Claim(String, String),
    Volume(String),
}

struct State {
    client: kube::Client,
    claims: Store<PersistentVolumeClaim>,
    volumes: Store<PersistentVolume>,
    classes: Store<StorageClass>,
    reporter: Reporter,
    storage_path: String,
}

pub async fn run(ctx: Arc<Context>) -> anyhow::Result<()> {
    let client = ctx.client.clone();
    let queue: Arc<WorkQueue<Key>> = WorkQueue::new();
    let (claims, claim_writer) = reflector::store::<PersistentVolumeClaim>();
    let (volumes, volume_writer) = reflector::store::<PersistentVolume>();
    let (classes, class_writer) = reflector::store::<StorageClass>();
    let state = Arc::new(State {
        client: client.clone(),
        claims,
        volumes,
        classes,
        reporter: Reporter {
            controller: PROVISIONER.into(),
            instance: None,
        },
        storage_path: ctx.config.local_storage_path.clone(),
    });
    let claim_driver = {
        let queue = queue.clone();
        watcher(
            Api::<PersistentVolumeClaim>::all(client.clone()),
            watcher::Config::default(),
        )
        .default_backoff()
        .modify(|c: &mut PersistentVolumeClaim| c.managed_fields_mut().clear())
        .reflect(claim_writer)
        .touched_objects()
        .for_each(move |claim| {
            if let Ok(claim) = claim {
                queue.add(Key::Claim(
                    claim.namespace().unwrap_or_default(),
                    claim.name_any(),
                ));
            }
            futures::future::ready(())
        })
    };
    let volume_driver = {
        let queue = queue.clone();
        watcher(
            Api::<PersistentVolume>::all(client.clone()),
            watcher::Config::default(),
        )
        .default_backoff()
        .modify(|v: &mut PersistentVolume| v.managed_fields_mut().clear())
        .reflect(volume_writer)
        .touched_objects()
        .for_each(move |volume| {
            if let Ok(volume) = volume {
                queue.add(Key::Volume(volume.name_any()));
            }
            futures::future::ready(())
        })
    };
    let class_driver = watcher(
        Api::<StorageClass>::all(client.clone()),
        watcher::Config::default(),
    )
    .default_backoff()
    .reflect(class_writer)
    .for_each(|_| futures::future::ready(()));
    let workers = {
        let state = state.clone();
        let queue = queue.clone();
        async move {
            let _ = state.claims.wait_until_ready().await;
            let _ = state.volumes.wait_until_ready().await;
            let _ = state.classes.wait_until_ready().await;
            util::run_workers(queue, 2, move |key| {
                let state = state.clone();
                async move { state.sync(key).await }
            })
            .await;
        }
    };
    tokio::select! {
        _ = claim_driver => {}
        _ = volume_driver => {}
        _ = class_driver => {}
        _ = workers => {}
    }
    Ok(())
}

/// `<base>/pvc-<uid>_<namespace>_<name>`, the directory of a claim's volume on its node.
pub fn volume_path(base: &str, volume_name: &str, claim: &PersistentVolumeClaim) -> String {
    let dir = format!(
        "{volume_name}_{}_{}",
        claim.namespace().unwrap_or_default(),
        claim.name_any()
    );
    Path::new(base).join(dir).to_string_lossy().into_owned()
}

/// Why local-path cannot serve the claim (upstream's messages), if it cannot.
pub fn unsupported(claim: &PersistentVolumeClaim) -> Option<&'static str> {
    let spec = claim.spec.as_ref()?;
    if spec.selector.is_some() {
        return Some("claim.Spec.Selector is not supported");
    }
    if spec
        .access_modes
        .iter()
        .flatten()
        .any(|m| m != "ReadWriteOnce" && m != "ReadWriteOncePod")
    {
        return Some("Only support ReadWriteOnce access mode");
    }
    None
}

/// The volume local-path makes for `claim` on the node whose hostname label is `hostname`.
pub fn volume_for(
    claim: &PersistentVolumeClaim,
    class: &StorageClass,
    hostname: &str,
    base: &str,
) -> PersistentVolume {
    let uid = claim.metadata.uid.clone().unwrap_or_default();
    let name = format!("pvc-{uid}");
    let spec = claim.spec.clone().unwrap_or_default();
    let capacity = spec
        .resources
        .as_ref()
        .and_then(|r| r.requests.as_ref())
        .and_then(|r| r.get("storage"))
        .map(|q| BTreeMap::from([("storage".to_string(), q.clone())]));
    PersistentVolume {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            annotations: Some(BTreeMap::from([(
                ANN_DYNAMICALLY_PROVISIONED.to_string(),
                PROVISIONER.to_string(),
            )])),
            ..Default::default()
        },
        spec: Some(PersistentVolumeSpec {
            access_modes: spec.access_modes.clone(),
            capacity,
            claim_ref: Some(ObjectReference {
                api_version: Some("v1".into()),
                kind: Some("PersistentVolumeClaim".into()),
                name: claim.metadata.name.clone(),
                namespace: claim.metadata.namespace.clone(),
                uid: claim.metadata.uid.clone(),
                resource_version: claim.metadata.resource_version.clone(),
                field_path: None,
            }),
            local: Some(LocalVolumeSource {
                path: volume_path(base, &name, claim),
                fs_type: None,
            }),
            node_affinity: Some(VolumeNodeAffinity {
                required: Some(NodeSelector {
                    node_selector_terms: vec![NodeSelectorTerm {
                        match_expressions: Some(vec![NodeSelectorRequirement {
                            key: HOSTNAME_LABEL.into(),
                            operator: "In".into(),
                            values: Some(vec![hostname.to_string()]),
                        }]),
                        match_fields: None,
                    }],
                }),
            }),
            persistent_volume_reclaim_policy: Some(
                class
                    .reclaim_policy
                    .clone()
                    .unwrap_or_else(|| "Delete".into()),
            ),
            storage_class_name: Some(claim_class(claim).to_string()),
            volume_mode: Some("Filesystem".into()),
            ..Default::default()
        }),
        status: None,
    }
}

impl State {
    async fn sync(&self, key: Key) -> Outcome {
        let result = match &key {
            Key::Claim(ns, name) => match self.claims.get(&ObjectRef::new(name).within(ns)) {
                Some(claim) => self.provision(&claim).await,
                None => Ok(None),
            },
            Key::Volume(name) => match self.volumes.get(&ObjectRef::new(name)) {
                Some(volume) => self.delete(&volume).await.map(|()| None),
                None => Ok(None),
            },
        };
        match result {
            Ok(None) => Outcome::Done,
            Ok(Some(after)) => Outcome::After(after),
            Err(error) => {
                tracing::warn!(%error, "local-path provisioner");
                Outcome::Retry
            }
        }
    }

    fn event(&self, claim: &PersistentVolumeClaim, type_: EventType, reason: &str, note: String) {
        util::record_event(
            &self.client,
            &self.reporter,
            claim,
            type_,
            reason,
            reason,
            note,
        );
    }

    /// Create the claim's volume if the claim is ours and ready for it (upstream
    /// external-provisioner's `shouldProvision` then local-path's `Provision`).
    async fn provision(&self, claim: &PersistentVolumeClaim) -> Result<Option<Duration>, Error> {
        let annotations = claim.metadata.annotations.clone().unwrap_or_default();
        if annotations.get(ANN_STORAGE_PROVISIONER).map(String::as_str) != Some(PROVISIONER)
            || claim
                .spec
                .as_ref()
                .and_then(|s| s.volume_name.as_deref())
                .is_some_and(|v| !v.is_empty())
            || claim.metadata.deletion_timestamp.is_some()
        {
            return Ok(None);
        }
        let class_name = claim_class(claim);
        let Some(class) = self.classes.get(&ObjectRef::new(class_name)) else {
            return Ok(None);
        };
        if class.provisioner != PROVISIONER {
            return Ok(None);
        }
        let uid = claim.metadata.uid.clone().unwrap_or_default();
        let volume_name = format!("pvc-{uid}");
        if self.volumes.get(&ObjectRef::new(&volume_name)).is_some() {
            return Ok(None);
        }
        let selected = annotations.get(ANN_SELECTED_NODE);
        let failed = |why: &str| {
            format!("failed to provision volume with StorageClass \"{class_name}\": {why}")
        };
        let Some(node) = selected else {
            if !is_delay_binding(Some(&class)) {
                // local-path always needs a node: an Immediate class cannot work.
                self.event(
                    claim,
                    EventType::Warning,
                    "ProvisioningFailed",
                    failed("configuration error, no node was specified"),
                );
                return Ok(Some(RETRY * 6));
            }
            return Ok(None);
        };
        if let Some(why) = unsupported(claim) {
            self.event(claim, EventType::Warning, "ProvisioningFailed", failed(why));
            return Ok(Some(RETRY * 6));
        }
        let key = format!(
            "{}/{}",
            claim.namespace().unwrap_or_default(),
            claim.name_any()
        );
        self.event(
            claim,
            EventType::Normal,
            "Provisioning",
            format!("External provisioner is provisioning volume for claim \"{key}\""),
        );
        let hostname = match Api::<Node>::all(self.client.clone()).get_opt(node).await {
            Ok(Some(n)) => n
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(HOSTNAME_LABEL))
                .cloned()
                .unwrap_or_else(|| node.clone()),
            Ok(None) => {
                self.event(
                    claim,
                    EventType::Warning,
                    "ProvisioningFailed",
                    failed(&format!("nodes \"{node}\" not found")),
                );
                return Ok(Some(RETRY));
            }
            Err(source) => {
                return Err(Error::Node {
                    name: node.clone(),
                    source,
                });
            }
        };
        let volume = volume_for(claim, &class, &hostname, &self.storage_path);
        let api: Api<PersistentVolume> = Api::all(self.client.clone());
        match api.create(&PostParams::default(), &volume).await {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 409 => return Ok(None),
            Err(source) => {
                self.event(
                    claim,
                    EventType::Warning,
                    "ProvisioningFailed",
                    failed(&source.to_string()),
                );
                return Err(Error::Create {
                    name: volume_name,
                    source,
                });
            }
        }
        let path = volume
            .spec
            .as_ref()
            .and_then(|s| s.local.as_ref())
            .map(|l| l.path.clone())
            .unwrap_or_default();
        tracing::info!(claim = %key, volume = %volume_name, %node, %path, "provisioned a local-path volume");
        self.event(
            claim,
            EventType::Normal,
            "ProvisioningSucceeded",
            format!("Successfully provisioned volume {volume_name}"),
        );
        Ok(None)
    }

    /// Delete a released volume we made whose policy is Delete.
    async fn delete(&self, volume: &PersistentVolume) -> Result<(), Error> {
        let ours = volume
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(ANN_DYNAMICALLY_PROVISIONED))
            .is_some_and(|p| p == PROVISIONER);
        let released = volume.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Released");
        let policy = volume
            .spec
            .as_ref()
            .and_then(|s| s.persistent_volume_reclaim_policy.as_deref());
        if !ours
            || !released
            || policy != Some("Delete")
            || volume.metadata.deletion_timestamp.is_some()
        {
            return Ok(());
        }
        let name = volume.name_any();
        let params = DeleteParams {
            preconditions: Some(Preconditions {
                uid: volume.uid(),
                resource_version: None,
            }),
            ..Default::default()
        };
        match Api::<PersistentVolume>::all(self.client.clone())
            .delete(&name, &params)
            .await
        {
            Ok(_) => {
                let path = volume
                    .spec
                    .as_ref()
                    .and_then(|s| s.local.as_ref())
                    .map(|l| l.path.clone())
                    .unwrap_or_default();
                tracing::info!(volume = %name, %path, "deleted a released local-path volume (its directory stays on the node)");
                Ok(())
            }
            Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => Ok(()),
            Err(source) => Err(Error::Delete { name, source }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn claim(modes: &[&str]) -> PersistentVolumeClaim {
        serde_json::from_value(json!({
            "metadata": {"name": "data", "namespace": "ns", "uid": "1234", "resourceVersion": "7"},
            "spec": {"accessModes": modes, "resources": {"requests": {"storage": "64Mi"}},
                     "storageClassName": "local-path"},
        }))
        .unwrap()
    }

    fn class() -> StorageClass {
        serde_json::from_value(json!({
            "metadata": {"name": "local-path"}, "provisioner": PROVISIONER,
            "reclaimPolicy": "Delete", "volumeBindingMode": "WaitForFirstConsumer",
        }))
        .unwrap()
    }

    #[test]
    fn volume_is_pre_bound_local_and_pinned_to_the_node() {
        let v = volume_for(
            &claim(&["ReadWriteOnce"]),
            &class(),
            "node-1",
            "/data/storage",
        );
        let v = serde_json::to_value(&v).unwrap();
        assert_eq!(v["metadata"]["name"], "pvc-1234");
        assert_eq!(
            v["metadata"]["annotations"][ANN_DYNAMICALLY_PROVISIONED],
            PROVISIONER
        );
        let spec = &v["spec"];
        assert_eq!(spec["local"]["path"], "/data/storage/pvc-1234_ns_data");
        assert_eq!(spec["capacity"]["storage"], "64Mi");
        assert_eq!(spec["accessModes"], json!(["ReadWriteOnce"]));
        assert_eq!(spec["persistentVolumeReclaimPolicy"], "Delete");
        assert_eq!(spec["storageClassName"], "local-path");
        assert_eq!(spec["claimRef"]["uid"], "1234");
        assert_eq!(spec["claimRef"]["name"], "data");
        assert_eq!(
            spec["nodeAffinity"]["required"]["nodeSelectorTerms"][0]["matchExpressions"][0],
            json!({"key": HOSTNAME_LABEL, "operator": "In", "values": ["node-1"]})
        );
    }

    #[test]
    fn only_read_write_once_without_selector() {
        assert_eq!(unsupported(&claim(&["ReadWriteOnce"])), None);
        assert_eq!(
            unsupported(&claim(&["ReadWriteMany"])),
            Some("Only support ReadWriteOnce access mode")
        );
        let mut c = claim(&["ReadWriteOnce"]);
        c.spec.as_mut().unwrap().selector = Some(Default::default());
        assert_eq!(
            unsupported(&c),
            Some("claim.Spec.Selector is not supported")
        );
    }
}
