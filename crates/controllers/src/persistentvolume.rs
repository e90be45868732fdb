//! PersistentVolume binder (upstream `pkg/controller/volume/persistentvolume`): binds claims
//! to volumes, asks provisioners for volumes, and releases volumes whose claim is gone.
//!
//! - A claim binds to the best Available volume ([`matching::find_matching_volume`]) or to the
//!   volume it names; binding writes `PV.spec.claimRef`, the volume's phase, the claim's
//!   `spec.volumeName` with the `pv.kubernetes.io/*` annotations, then the claim's status.
//! - With no volume to bind, a claim of a class with a provisioner gets the
//!   `volume.kubernetes.io/storage-provisioner` annotation and that provisioner (for
//!   `rancher.io/local-path`, [`crate::localpath`]) creates a volume pre-bound to it.
//! - A claim of a WaitForFirstConsumer class waits for a pod using it to be scheduled. Unlike
//!   upstream, where the scheduler's VolumeBinding PreBind writes
//!   `volume.kubernetes.io/selected-node` before binding the pod, this controller writes it
//!   from the node of the first scheduled pod using the claim (level-triggered, so it survives
//!   restarts; the kubelet waits for the claim to be bound before mounting). The scheduler's
//!   plugin still keeps later pods off other nodes once a node is selected.
//! - When a bound claim is deleted its volume becomes Released; Retain keeps it, Delete leaves
//!   it to the provisioner that made it (a volume nobody provisioned goes Failed, as upstream).

pub mod matching;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{
    Node, ObjectReference, PersistentVolume, PersistentVolumeClaim, Pod,
};
use k8s_openapi::api::storage::v1::StorageClass;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::events::{EventType, Reporter};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Resource, ResourceExt};
use serde_json::json;

use crate::Context;
use crate::util::{self, Outcome, WorkQueue};
use matching::*;

/// Everything is looked at again this often (upstream's `--pvclaimbinder-sync-period`).
pub const RESYNC_PERIOD: Duration = Duration::from_secs(15);
const REPORTER: &str = "persistentvolume-controller";
pub const WAIT_FOR_FIRST_CONSUMER_MESSAGE: &str =
    "waiting for first consumer to be created before binding";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("updating {kind} {name}: {source}")]
    Write {
        kind: &'static str,
        name: String,
        source: kube::Error,
    },
    #[error("reading {kind} {name}: {source}")]
    Read {
        kind: &'static str,
        name: String,
        source: kube::Error,
    },
}

impl Error {
    fn is_conflict(&self) -> bool {
        matches!(self, Error::Write { source: kube::Error::Api(e), .. } if e.code == 409)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Key {
    Claim(String, String),
    Volume(String),
}

/// The pods that use claims, indexed by claim, so a WaitForFirstConsumer claim finds its
/// consumers without the controller caching every pod.
#[derive(Default)]
struct ClaimUsers {
    inner: Mutex<UsersInner>,
}

#[derive(Default)]
struct UsersInner {
    /// (namespace, pod) → (claims, node when scheduled).
    pods: HashMap<(String, String), (Vec<String>, Option<String>)>,
    /// (namespace, claim) → pods.
    by_claim: HashMap<(String, String), BTreeSet<String>>,
    /// Pods seen during a relist.
    relist: Option<HashSet<(String, String)>>,
}

impl UsersInner {
    fn remove(&mut self, key: &(String, String)) {
        if let Some((claims, _)) = self.pods.remove(key) {
            for claim in claims {
                let ck = (key.0.clone(), claim);
                if let Some(set) = self.by_claim.get_mut(&ck) {
                    set.remove(&key.1);
                    if set.is_empty() {
                        self.by_claim.remove(&ck);
                    }
                }
            }
        }
    }
}

impl ClaimUsers {
    fn lock(&self) -> std::sync::MutexGuard<'_, UsersInner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Record the pod; the claims whose consumers changed.
    fn apply(&self, pod: &Pod) -> Vec<(String, String)> {
        let ns = pod.namespace().unwrap_or_default();
        let key = (ns.clone(), pod.name_any());
        let mut inner = self.lock();
        if let Some(seen) = inner.relist.as_mut() {
            seen.insert(key.clone());
        }
        let terminal = matches!(
            pod.status.as_ref().and_then(|s| s.phase.as_deref()),
            Some("Succeeded" | "Failed")
        );
        let claims = if terminal {
            Vec::new()
        } else {
            pod_claim_names(pod)
        };
        let node = pod
            .spec
            .as_ref()
            .and_then(|s| s.node_name.clone())
            .filter(|n| !n.is_empty());
        if inner.pods.get(&key) == Some(&(claims.clone(), node.clone())) {
            return Vec::new();
        }
        inner.remove(&key);
        if claims.is_empty() {
            return Vec::new();
        }
        for claim in &claims {
            inner
                .by_claim
                .entry((ns.clone(), claim.clone()))
                .or_default()
                .insert(key.1.clone());
        }
        inner.pods.insert(key, (claims.clone(), node));
        claims.into_iter().map(|c| (ns.clone(), c)).collect()
    }

    fn delete(&self, pod: &Pod) {
        let key = (pod.namespace().unwrap_or_default(), pod.name_any());
        self.lock().remove(&key);
    }

    fn start_relist(&self) {
        self.lock().relist = Some(HashSet::new());
    }

    fn finish_relist(&self) {
        let mut inner = self.lock();
        if let Some(seen) = inner.relist.take() {
            let gone: Vec<_> = inner
                .pods
                .keys()
                .filter(|k| !seen.contains(*k))
                .cloned()
                .collect();
            for key in gone {
                inner.remove(&key);
            }
        }
    }

    /// The claim's consumers: (pod, node if scheduled), by pod name.
    fn consumers(&self, namespace: &str, claim: &str) -> Vec<(String, Option<String>)> {
        let inner = self.lock();
        let Some(pods) = inner
            .by_claim
            .get(&(namespace.to_string(), claim.to_string()))
        else {
            return Vec::new();
        };
        pods.iter()
            .map(|p| {
                let node = inner
                    .pods
                    .get(&(namespace.to_string(), p.clone()))
                    .and_then(|(_, n)| n.clone());
                (p.clone(), node)
            })
            .collect()
    }
}

/// The claims a pod's volumes name: `persistentVolumeClaim.claimName`, and `<pod>-<volume>`
/// for generic ephemeral volumes.
pub fn pod_claim_names(pod: &Pod) -> Vec<String> {
    let pod_name = pod.metadata.name.as_deref().unwrap_or("");
    pod.spec
        .as_ref()
        .and_then(|s| s.volumes.as_ref())
        .map(|volumes| {
            volumes
                .iter()
                .filter_map(|v| {
                    if let Some(claim) = &v.persistent_volume_claim {
                        Some(claim.claim_name.clone())
                    } else {
                        v.ephemeral
                            .as_ref()
                            .map(|_| format!("{pod_name}-{}", v.name))
                    }
                })
                .collect()
        })
        .unwrap_or_default()
}

struct State {
    client: kube::Client,
    claims: Store<PersistentVolumeClaim>,
    volumes: Store<PersistentVolume>,
    classes: Store<StorageClass>,
    users: ClaimUsers,
    queue: Arc<WorkQueue<Key>>,
    reporter: Reporter,
    /// The last event recorded per object uid, so a periodic resync does not repeat it.
    last_event: Mutex<HashMap<String, (String, String)>>,
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
        users: ClaimUsers::default(),
        queue: queue.clone(),
        reporter: Reporter {
            controller: REPORTER.into(),
            instance: None,
        },
        last_event: Mutex::new(HashMap::new()),
    });

    let claim_driver = {
        let state = state.clone();
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
                state.claim_changed(&claim);
            }
            futures::future::ready(())
        })
    };
    let volume_driver = {
        let state = state.clone();
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
                state.volume_changed(&volume);
            }
            futures::future::ready(())
        })
    };
    let class_driver = {
        let state = state.clone();
        watcher(
            Api::<StorageClass>::all(client.clone()),
            watcher::Config::default(),
        )
        .default_backoff()
        .reflect(class_writer)
        .touched_objects()
        .for_each(move |_| {
            state.enqueue_unbound_claims();
            futures::future::ready(())
        })
    };
    let pod_driver = {
        let state = state.clone();
        // Pods from the controllers' shared cache.
        ctx.informers.pods().subscribe().for_each(move |event| {
            match event {
                Ok(watcher::Event::Init) => state.users.start_relist(),
                Ok(watcher::Event::InitDone) => state.users.finish_relist(),
                Ok(watcher::Event::Apply(pod) | watcher::Event::InitApply(pod)) => {
                    for (ns, claim) in state.users.apply(&pod) {
                        state.queue.add(Key::Claim(ns, claim));
                    }
                }
                Ok(watcher::Event::Delete(pod)) => state.users.delete(&pod),
                Err(_) => {}
            }
            futures::future::ready(())
        })
    };
    let resync = {
        let state = state.clone();
        async move {
            let mut tick = tokio::time::interval(RESYNC_PERIOD);
            loop {
                tick.tick().await;
                for claim in state.claims.state() {
                    state.queue.add(claim_key(&claim));
                }
                for volume in state.volumes.state() {
                    state.queue.add(Key::Volume(volume.name_any()));
                }
            }
        }
    };
    let workers = {
        let state = state.clone();
        async move {
            let _ = state.claims.wait_until_ready().await;
            let _ = state.volumes.wait_until_ready().await;
            let _ = state.classes.wait_until_ready().await;
            let sync_state = state.clone();
            util::run_workers(state.queue.clone(), 2, move |key| {
                let state = sync_state.clone();
                async move { state.sync(key).await }
            })
            .await;
        }
    };
    tokio::select! {
        _ = claim_driver => {}
        _ = volume_driver => {}
        _ = class_driver => {}
        _ = pod_driver => {}
        _ = resync => {}
        _ = workers => {}
    }
    Ok(())
}

fn claim_key(claim: &PersistentVolumeClaim) -> Key {
    Key::Claim(claim.namespace().unwrap_or_default(), claim.name_any())
}

fn claim_name(claim: &PersistentVolumeClaim) -> String {
    format!(
        "{}/{}",
        claim.namespace().unwrap_or_default(),
        claim.name_any()
    )
}

fn claim_phase(claim: &PersistentVolumeClaim) -> &str {
    claim
        .status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("")
}

fn volume_phase(volume: &PersistentVolume) -> &str {
    volume
        .status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("")
}

fn spec_volume_name(claim: &PersistentVolumeClaim) -> &str {
    claim
        .spec
        .as_ref()
        .and_then(|s| s.volume_name.as_deref())
        .unwrap_or("")
}

fn reclaim_policy(volume: &PersistentVolume) -> &str {
    volume
        .spec
        .as_ref()
        .and_then(|s| s.persistent_volume_reclaim_policy.as_deref())
        .unwrap_or("Retain")
}

fn set_annotation(
    meta: &mut k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
    key: &str,
    value: &str,
) {
    meta.annotations
        .get_or_insert_with(BTreeMap::new)
        .insert(key.into(), value.into());
}

fn write_error(kind: &'static str, name: &str) -> impl FnOnce(kube::Error) -> Error {
    let name = name.to_string();
    move |source| Error::Write { kind, name, source }
}

impl State {
    fn claim_changed(&self, claim: &PersistentVolumeClaim) {
        self.queue.add(claim_key(claim));
        let volume = spec_volume_name(claim);
        if !volume.is_empty() {
            self.queue.add(Key::Volume(volume.to_string()));
        }
        if claim.metadata.deletion_timestamp.is_some()
            || self.claims.get(&ObjectRef::from_obj(claim)).is_none()
        {
            // Deleted (or going): volumes pre-bound to it may be released.
            for v in self.volumes.state() {
                if v.spec
                    .as_ref()
                    .and_then(|s| s.claim_ref.as_ref())
                    .is_some_and(|r| {
                        r.name == claim.metadata.name && r.namespace == claim.metadata.namespace
                    })
                {
                    self.queue.add(Key::Volume(v.name_any()));
                }
            }
        }
    }

    fn volume_changed(&self, volume: &PersistentVolume) {
        self.queue.add(Key::Volume(volume.name_any()));
        match volume.spec.as_ref().and_then(|s| s.claim_ref.as_ref()) {
            Some(r) => self.queue.add(Key::Claim(
                r.namespace.clone().unwrap_or_default(),
                r.name.clone().unwrap_or_default(),
            )),
            None => self.enqueue_unbound_claims(),
        }
    }

    fn enqueue_unbound_claims(&self) {
        for claim in self.claims.state() {
            if claim_phase(&claim) != "Bound" {
                self.queue.add(claim_key(&claim));
            }
        }
    }

    async fn sync(&self, key: Key) -> Outcome {
        let result = match &key {
            Key::Claim(ns, name) => match self.claims.get(&ObjectRef::new(name).within(ns)) {
                Some(claim) => self.sync_claim(&claim).await,
                None => Ok(()),
            },
            Key::Volume(name) => match self.volumes.get(&ObjectRef::new(name)) {
                Some(volume) => self.sync_volume(&volume).await,
                None => Ok(()),
            },
        };
        match result {
            Ok(()) => Outcome::Done,
            // Our cache is behind our own write: the watch brings the new version.
            Err(e) if e.is_conflict() => {
                tracing::debug!(error = %e, "persistentvolume controller: conflict, retrying");
                Outcome::Retry
            }
            Err(e) => {
                tracing::warn!(error = %e, "persistentvolume controller");
                Outcome::Retry
            }
        }
    }

    /// Record an event unless it repeats the last one recorded for the object.
    fn event<K: Resource<DynamicType = ()>>(
        &self,
        object: &K,
        type_: EventType,
        reason: &str,
        note: String,
    ) {
        let uid = object.meta().uid.clone().unwrap_or_default();
        {
            let mut last = self.last_event.lock().unwrap_or_else(|e| e.into_inner());
            let entry = (reason.to_string(), note.clone());
            if last.get(&uid) == Some(&entry) {
                return;
            }
            last.insert(uid, entry);
        }
        util::record_event(
            &self.client,
            &self.reporter,
            object,
            type_,
            reason,
            reason,
            note,
        );
    }

    fn forget_events(&self, uid: Option<&str>) {
        if let Some(uid) = uid {
            self.last_event
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(uid);
        }
    }

    fn claim_api(&self, claim: &PersistentVolumeClaim) -> Api<PersistentVolumeClaim> {
        Api::namespaced(self.client.clone(), &claim.namespace().unwrap_or_default())
    }

    fn volume_api(&self) -> Api<PersistentVolume> {
        Api::all(self.client.clone())
    }

    fn class_of(&self, claim: &PersistentVolumeClaim) -> Option<Arc<StorageClass>> {
        let name = claim_class(claim);
        (!name.is_empty())
            .then(|| self.classes.get(&ObjectRef::new(name)))
            .flatten()
    }

    async fn sync_claim(&self, claim: &PersistentVolumeClaim) -> Result<(), Error> {
        if has_annotation(&claim.metadata, ANN_BIND_COMPLETED) {
            self.sync_bound_claim(claim).await
        } else {
            self.sync_unbound_claim(claim).await
        }
    }

    async fn sync_unbound_claim(&self, claim: &PersistentVolumeClaim) -> Result<(), Error> {
        let volume_name = spec_volume_name(claim);
        if !volume_name.is_empty() {
            // The user asked for a volume by name.
            let Some(volume) = self.volumes.get(&ObjectRef::new(volume_name)) else {
                tracing::debug!(claim = %claim_name(claim), volume = volume_name, "requested volume not found, waiting");
                return self.update_claim_status(claim, "Pending", None).await;
            };
            let claim_ref = volume.spec.as_ref().and_then(|s| s.claim_ref.as_ref());
            if claim_ref.is_none() {
                if let Err(why) = check_volume_satisfies_claim(&volume, claim) {
                    self.event(
                        claim,
                        EventType::Warning,
                        "VolumeMismatch",
                        format!("Cannot bind to requested volume \"{volume_name}\": {why}"),
                    );
                    return self.update_claim_status(claim, "Pending", None).await;
                }
                return self.bind(&volume, claim).await;
            }
            if is_volume_bound_to_claim(&volume, claim) {
                return self.bind(&volume, claim).await;
            }
            self.event(
                claim,
                EventType::Warning,
                "FailedBinding",
                format!("volume \"{volume_name}\" already bound to a different claim."),
            );
            return self.update_claim_status(claim, "Pending", None).await;
        }

        let class = self.class_of(claim);
        let delay = is_delay_binding(class.as_deref());
        let selected = claim
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(ANN_SELECTED_NODE))
            .cloned();
        let node = match (&selected, delay) {
            (Some(node), true) => Some((node.clone(), self.node_labels(node).await?)),
            _ => None,
        };
        let volumes = self.volumes.state();
        let found = find_matching_volume(
            claim,
            volumes.iter().map(|v| v.as_ref()),
            node.as_ref().map(|(n, l)| (n.as_str(), l)),
            delay,
        );
        if let Some(volume) = found {
            return self.bind(volume, claim).await;
        }
        if delay && selected.is_none() {
            let consumers = self
                .users
                .consumers(&claim.namespace().unwrap_or_default(), &claim.name_any());
            if let Some((pod, Some(node))) = consumers.iter().find(|(_, n)| n.is_some()) {
                let patch = json!({"metadata": {"annotations": {ANN_SELECTED_NODE: node}}});
                self.claim_api(claim)
                    .patch(
                        &claim.name_any(),
                        &PatchParams::default(),
                        &Patch::Merge(&patch),
                    )
                    .await
                    .map_err(write_error("persistentvolumeclaim", &claim_name(claim)))?;
                tracing::info!(claim = %claim_name(claim), %node, %pod, "selected the node of the claim's first scheduled consumer");
                return Ok(());
            }
            let (reason, message) = match consumers.as_slice() {
                [] => (
                    "WaitForFirstConsumer",
                    WAIT_FOR_FIRST_CONSUMER_MESSAGE.to_string(),
                ),
                [(pod, _)] => (
                    "WaitForPodScheduled",
                    format!("waiting for pod {pod} to be scheduled"),
                ),
                pods => (
                    "WaitForPodScheduled",
                    format!(
                        "waiting for pods {} to be scheduled",
                        pods.iter()
                            .map(|(p, _)| p.as_str())
                            .collect::<Vec<_>>()
                            .join(",")
                    ),
                ),
            };
            self.event(claim, EventType::Normal, reason, message);
        } else if !claim_class(claim).is_empty() {
            self.provision(claim, class.as_deref()).await?;
        } else {
            self.event(
                claim,
                EventType::Normal,
                "FailedBinding",
                "no persistent volumes available for this claim and no storage class is set".into(),
            );
        }
        self.update_claim_status(claim, "Pending", None).await
    }

    /// Hand the claim to its class's provisioner (upstream `provisionClaimOperationExternal`).
    async fn provision(
        &self,
        claim: &PersistentVolumeClaim,
        class: Option<&StorageClass>,
    ) -> Result<(), Error> {
        let Some(class) = class else {
            self.event(
                claim,
                EventType::Warning,
                "ProvisioningFailed",
                format!(
                    "storageclass.storage.k8s.io \"{}\" not found",
                    claim_class(claim)
                ),
            );
            return Ok(());
        };
        let provisioner = class.provisioner.as_str();
        let annotations = claim.metadata.annotations.as_ref();
        let current = annotations.and_then(|a| a.get(ANN_STORAGE_PROVISIONER));
        let current_beta = annotations.and_then(|a| a.get(ANN_BETA_STORAGE_PROVISIONER));
        if current.map(String::as_str) != Some(provisioner)
            || current_beta.map(String::as_str) != Some(provisioner)
        {
            let patch = json!({"metadata": {"annotations": {
                ANN_STORAGE_PROVISIONER: provisioner,
                ANN_BETA_STORAGE_PROVISIONER: provisioner,
            }}});
            self.claim_api(claim)
                .patch(
                    &claim.name_any(),
                    &PatchParams::default(),
                    &Patch::Merge(&patch),
                )
                .await
                .map_err(write_error("persistentvolumeclaim", &claim_name(claim)))?;
            tracing::info!(claim = %claim_name(claim), %provisioner, "waiting for the provisioner to create a volume");
        }
        self.event(
            claim,
            EventType::Normal,
            "ExternalProvisioning",
            format!(
                "Waiting for a volume to be created either by the external provisioner '{provisioner}' or manually by the system administrator. If volume creation is delayed, please verify that the provisioner is running and correctly registered."
            ),
        );
        Ok(())
    }

    /// The labels of a node (for volume node affinity); a node that is gone has only its
    /// hostname label.
    async fn node_labels(&self, node: &str) -> Result<BTreeMap<String, String>, Error> {
        let api: Api<Node> = Api::all(self.client.clone());
        match api.get_opt(node).await {
            Ok(Some(n)) => Ok(n.metadata.labels.unwrap_or_default()),
            Ok(None) => Ok(BTreeMap::from([(
                "kubernetes.io/hostname".to_string(),
                node.to_string(),
            )])),
            Err(source) => Err(Error::Read {
                kind: "node",
                name: node.to_string(),
                source,
            }),
        }
    }

    async fn sync_bound_claim(&self, claim: &PersistentVolumeClaim) -> Result<(), Error> {
        let volume_name = spec_volume_name(claim);
        if volume_name.is_empty() {
            self.event(
                claim,
                EventType::Warning,
                "ClaimLost",
                "Bound claim has lost reference to PersistentVolume. Data on the volume is lost!"
                    .into(),
            );
            return self.update_claim_status(claim, "Lost", None).await;
        }
        let Some(volume) = self.volumes.get(&ObjectRef::new(volume_name)) else {
            self.event(
                claim,
                EventType::Warning,
                "ClaimLost",
                "Bound claim has lost its PersistentVolume. Data on the volume is lost!".into(),
            );
            return self.update_claim_status(claim, "Lost", None).await;
        };
        let claim_ref = volume.spec.as_ref().and_then(|s| s.claim_ref.as_ref());
        match claim_ref {
            None => self.bind(&volume, claim).await,
            Some(r)
                if r.uid.as_deref().is_none_or(str::is_empty)
                    && is_volume_bound_to_claim(&volume, claim) =>
            {
                self.bind(&volume, claim).await
            }
            Some(r) if r.uid == claim.metadata.uid => {
                self.update_claim_status(claim, "Bound", Some(&volume))
                    .await
            }
            Some(_) => {
                self.event(
                    claim,
                    EventType::Warning,
                    "ClaimMisbound",
                    "Two claims are bound to the same volume, this one is bound incorrectly".into(),
                );
                self.update_claim_status(claim, "Lost", None).await
            }
        }
    }

    /// Bind volume and claim both ways, each step skipped when already done (upstream `bind`).
    async fn bind(
        &self,
        volume: &PersistentVolume,
        claim: &PersistentVolumeClaim,
    ) -> Result<(), Error> {
        let volume_name = volume.name_any();
        let mut volume = volume.clone();
        let reference = ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("PersistentVolumeClaim".into()),
            name: claim.metadata.name.clone(),
            namespace: claim.metadata.namespace.clone(),
            uid: claim.metadata.uid.clone(),
            resource_version: claim.metadata.resource_version.clone(),
            field_path: None,
        };
        let current = volume.spec.as_ref().and_then(|s| s.claim_ref.as_ref());
        let points_here = current.is_some_and(|r| {
            r.name == reference.name && r.namespace == reference.namespace && r.uid == reference.uid
        });
        if !points_here {
            let was_unclaimed = current.is_none();
            volume.spec.get_or_insert_with(Default::default).claim_ref = Some(reference);
            if was_unclaimed {
                set_annotation(&mut volume.metadata, ANN_BOUND_BY_CONTROLLER, YES);
            }
            volume = self
                .volume_api()
                .replace(&volume_name, &PostParams::default(), &volume)
                .await
                .map_err(write_error("persistentvolume", &volume_name))?;
        }
        if volume_phase(&volume) != "Bound" {
            volume = self.set_volume_phase(&volume, "Bound", None).await?;
        }

        let mut claim = claim.clone();
        let name = claim_name(&claim);
        if spec_volume_name(&claim) != volume_name
            || !has_annotation(&claim.metadata, ANN_BIND_COMPLETED)
        {
            if spec_volume_name(&claim) != volume_name {
                claim.spec.get_or_insert_with(Default::default).volume_name =
                    Some(volume_name.clone());
                set_annotation(&mut claim.metadata, ANN_BOUND_BY_CONTROLLER, YES);
            }
            set_annotation(&mut claim.metadata, ANN_BIND_COMPLETED, YES);
            claim = self
                .claim_api(&claim)
                .replace(&claim.name_any(), &PostParams::default(), &claim)
                .await
                .map_err(write_error("persistentvolumeclaim", &name))?;
        }
        self.update_claim_status(&claim, "Bound", Some(&volume))
            .await?;
        self.forget_events(claim.metadata.uid.as_deref());
        Ok(())
    }

    /// Write the claim's phase (and, once Bound, the volume's access modes and capacity).
    async fn update_claim_status(
        &self,
        claim: &PersistentVolumeClaim,
        phase: &str,
        volume: Option<&PersistentVolume>,
    ) -> Result<(), Error> {
        let mut updated = claim.clone();
        let status = updated.status.get_or_insert_with(Default::default);
        status.phase = Some(phase.into());
        if let Some(volume) = volume {
            let spec = volume.spec.clone().unwrap_or_default();
            status.access_modes = spec.access_modes;
            status.capacity = spec.capacity;
        } else if phase == "Pending" {
            status.access_modes = None;
            status.capacity = None;
        }
        if updated.status == claim.status {
            return Ok(());
        }
        let was = claim_phase(claim).to_string();
        self.claim_api(claim)
            .replace_status(&claim.name_any(), &PostParams::default(), &updated)
            .await
            .map_err(write_error("persistentvolumeclaim", &claim_name(claim)))?;
        if was != phase {
            tracing::info!(claim = %claim_name(claim), from = %was, to = phase, volume = volume.map(|v| v.name_any()).unwrap_or_default(), "claim phase changed");
        }
        Ok(())
    }

    async fn set_volume_phase(
        &self,
        volume: &PersistentVolume,
        phase: &str,
        message: Option<String>,
    ) -> Result<PersistentVolume, Error> {
        let mut updated = volume.clone();
        let status = updated.status.get_or_insert_with(Default::default);
        if status.phase.as_deref() == Some(phase) && status.message == message {
            return Ok(volume.clone());
        }
        if status.phase.as_deref() != Some(phase) {
            status.last_phase_transition_time = Some(Time(Timestamp::now()));
        }
        status.phase = Some(phase.into());
        status.message = message;
        let name = volume.name_any();
        let written = self
            .volume_api()
            .replace_status(&name, &PostParams::default(), &updated)
            .await
            .map_err(write_error("persistentvolume", &name))?;
        tracing::info!(volume = %name, from = volume_phase(volume), to = phase, "volume phase changed");
        Ok(written)
    }

    async fn sync_volume(&self, volume: &PersistentVolume) -> Result<(), Error> {
        let Some(claim_ref) = volume.spec.as_ref().and_then(|s| s.claim_ref.clone()) else {
            if volume_phase(volume) != "Available" {
                self.set_volume_phase(volume, "Available", None).await?;
            }
            return Ok(());
        };
        if claim_ref.uid.as_deref().is_none_or(str::is_empty) {
            // Pre-bound by the user: available to that claim only, which binds it.
            if volume_phase(volume) != "Available" {
                self.set_volume_phase(volume, "Available", None).await?;
            }
            return Ok(());
        }
        let ns = claim_ref.namespace.clone().unwrap_or_default();
        let name = claim_ref.name.clone().unwrap_or_default();
        let cached = self
            .claims
            .get(&ObjectRef::new(&name).within(&ns))
            .filter(|c| c.metadata.uid == claim_ref.uid);
        let claim = match cached {
            Some(c) => Some(c),
            // Not in the cache: make sure with the API server before releasing anything.
            None => Api::<PersistentVolumeClaim>::namespaced(self.client.clone(), &ns)
                .get_opt(&name)
                .await
                .map_err(|source| Error::Read {
                    kind: "persistentvolumeclaim",
                    name: format!("{ns}/{name}"),
                    source,
                })?
                .filter(|c| c.metadata.uid == claim_ref.uid)
                .map(Arc::new),
        };
        let Some(claim) = claim else {
            return self.release(volume).await;
        };
        let bound_to = spec_volume_name(&claim);
        if bound_to.is_empty() {
            // Binding in progress (or a provisioned volume waiting): the claim's sync finishes.
            self.queue.add(claim_key(&claim));
            return Ok(());
        }
        if bound_to == volume.name_any() {
            if volume_phase(volume) != "Bound" {
                self.set_volume_phase(volume, "Bound", None).await?;
            }
            return Ok(());
        }
        // The claim is bound to another volume.
        if has_annotation(&volume.metadata, ANN_DYNAMICALLY_PROVISIONED)
            && reclaim_policy(volume) == "Delete"
        {
            return self.release(volume).await;
        }
        let mut updated = volume.clone();
        let spec = updated.spec.get_or_insert_with(Default::default);
        if has_annotation(&volume.metadata, ANN_BOUND_BY_CONTROLLER) {
            spec.claim_ref = None;
            if let Some(a) = updated.metadata.annotations.as_mut() {
                a.remove(ANN_BOUND_BY_CONTROLLER);
            }
        } else if let Some(r) = spec.claim_ref.as_mut() {
            // The user's pre-binding stays; only the binding to that claim object goes.
            r.uid = None;
        }
        let volume_name = volume.name_any();
        let written = self
            .volume_api()
            .replace(&volume_name, &PostParams::default(), &updated)
            .await
            .map_err(write_error("persistentvolume", &volume_name))?;
        tracing::info!(volume = %volume_name, "unbound a volume whose claim is bound to another volume");
        self.set_volume_phase(&written, "Available", None).await?;
        Ok(())
    }

    /// The claim is gone: Released, then the reclaim policy (upstream `reclaimVolume`).
    async fn release(&self, volume: &PersistentVolume) -> Result<(), Error> {
        let mut volume = volume.clone();
        let phase = volume_phase(&volume).to_string();
        if phase != "Released" && phase != "Failed" {
            volume = self.set_volume_phase(&volume, "Released", None).await?;
        }
        let name = volume.name_any();
        match reclaim_policy(&volume) {
            "Retain" => {}
            "Delete" => {
                // A provisioned volume is deleted by its provisioner; nothing can delete the
                // others.
                if !has_annotation(&volume.metadata, ANN_DYNAMICALLY_PROVISIONED)
                    && volume_phase(&volume) != "Failed"
                {
                    let message = format!(
                        "error getting deleter volume plugin for volume \"{name}\": no deletable volume plugin matched"
                    );
                    self.event(
                        &volume,
                        EventType::Warning,
                        "VolumeFailedDelete",
                        message.clone(),
                    );
                    self.set_volume_phase(&volume, "Failed", Some(message))
                        .await?;
                }
            }
            _ => {
                if volume_phase(&volume) != "Failed" {
                    let message = "No recycler plugin found for the volume!".to_string();
                    self.event(
                        &volume,
                        EventType::Warning,
                        "VolumeFailedRecycle",
                        message.clone(),
                    );
                    self.set_volume_phase(&volume, "Failed", Some(message))
                        .await?;
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(name: &str, node: Option<&str>, phase: &str, claims: &[&str]) -> Pod {
        let volumes: Vec<_> = claims
            .iter()
            .map(|c| json!({"name": format!("v-{c}"), "persistentVolumeClaim": {"claimName": c}}))
            .collect();
        serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": "ns"},
            "spec": {"containers": [], "volumes": volumes, "nodeName": node},
            "status": {"phase": phase},
        }))
        .unwrap()
    }

    #[test]
    fn claim_names_of_a_pod() {
        let p: Pod = serde_json::from_value(json!({
            "metadata": {"name": "web-0", "namespace": "ns"},
            "spec": {"containers": [], "volumes": [
                {"name": "data", "persistentVolumeClaim": {"claimName": "data-web-0"}},
                {"name": "cache", "ephemeral": {"volumeClaimTemplate": {"spec": {}}}},
                {"name": "tmp", "emptyDir": {}},
            ]},
        }))
        .unwrap();
        assert_eq!(pod_claim_names(&p), vec!["data-web-0", "web-0-cache"]);
    }

    #[test]
    fn claim_users_track_scheduling_and_finish() {
        let users = ClaimUsers::default();
        assert_eq!(
            users.apply(&pod("a", None, "Pending", &["data"])),
            vec![("ns".into(), "data".into())]
        );
        // The same state again changes nothing.
        assert!(
            users
                .apply(&pod("a", None, "Pending", &["data"]))
                .is_empty()
        );
        assert_eq!(users.consumers("ns", "data"), vec![("a".to_string(), None)]);
        users.apply(&pod("a", Some("n1"), "Pending", &["data"]));
        assert_eq!(
            users.consumers("ns", "data"),
            vec![("a".to_string(), Some("n1".to_string()))]
        );
        // A finished pod no longer consumes.
        users.apply(&pod("a", Some("n1"), "Succeeded", &["data"]));
        assert!(users.consumers("ns", "data").is_empty());
        users.apply(&pod("b", None, "Pending", &["data"]));
        users.delete(&pod("b", None, "Pending", &["data"]));
        assert!(users.consumers("ns", "data").is_empty());
    }

    #[test]
    fn relist_forgets_pods_that_are_gone() {
        let users = ClaimUsers::default();
        users.apply(&pod("a", None, "Pending", &["x"]));
        users.apply(&pod("b", None, "Pending", &["x"]));
        users.start_relist();
        users.apply(&pod("b", None, "Pending", &["x"]));
        users.finish_relist();
        assert_eq!(users.consumers("ns", "x"), vec![("b".to_string(), None)]);
    }
}
