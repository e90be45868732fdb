//! The ReplicaSet controller, and the ReplicationController controller as a thin adapter of the
//! same logic on the core/v1 type (upstream does the same).
//!
//! Keeps `spec.replicas` active pods matching the selector: claims pods (adopting matching
//! orphans, releasing owned pods that stopped matching), creates missing pods from the template
//! in slow-start batches, deletes surplus pods in upstream's ranking order, and reports status.
//! Expectations keep a sync from acting twice on a cache that has not caught up.
//!
//! One pod watch feeds both controllers through a cache indexed by controller UID; each
//! controller has a reflector of its own objects and a work queue of `namespace/name` keys.

pub mod expectations;
pub mod logic;
pub mod pods;

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use api::selector::LabelSelector;
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::apps::v1::{ReplicaSet, ReplicaSetStatus};
use k8s_openapi::api::core::v1::{Pod, PodTemplateSpec, ReplicationController};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{
    LabelSelector as MetaLabelSelector, ObjectMeta, OwnerReference,
};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::events::{EventType, Reporter};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;

use self::expectations::{EXPECTATIONS_TIMEOUT, Expectations};
use self::logic::{BURST_REPLICAS, SLOW_START_INITIAL_BATCH_SIZE};
use self::pods::{Change, PodCache};
use crate::Context;
use crate::util::{Outcome, WorkQueue, controller_of, controller_ref, is_pod_active, record_event};

/// Upstream's `--concurrent-replicaset-syncs` default.
const WORKERS: usize = 5;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{kind} {key} has no pod template")]
    NoTemplate { kind: &'static str, key: String },
    #[error("{0}")]
    Api(String),
    #[error("{kind} {key}: {source}")]
    Request {
        kind: &'static str,
        key: String,
        source: kube::Error,
    },
}

/// The message of an API error as upstream prints it (the Status message), else the error.
pub(crate) fn api_message(error: &kube::Error) -> String {
    match error {
        kube::Error::Api(status) => status.message.clone(),
        other => other.to_string(),
    }
}

fn is_status(error: &kube::Error, code: u16) -> bool {
    matches!(error, kube::Error::Api(status) if status.code == code)
}

/// What differs between a ReplicaSet and a ReplicationController.
pub trait ReplicaOwner:
    Resource<DynamicType = (), Scope = NamespaceResourceScope>
    + Clone
    + DeserializeOwned
    + Serialize
    + Debug
    + Send
    + Sync
    + 'static
{
    /// The reporting component of its Events.
    const CONTROLLER: &'static str;
    fn spec_replicas(&self) -> i32;
    fn label_selector(&self) -> LabelSelector;
    fn template(&self) -> Option<&PodTemplateSpec>;
    fn min_ready_seconds(&self) -> i32;
    /// The status, in the ReplicaSet shape (the ReplicationController's has the same fields).
    fn replica_status(&self) -> ReplicaSetStatus;
    /// Whether a controller reference points at this kind.
    fn is_kind_of(reference: &OwnerReference) -> bool;
}

impl ReplicaOwner for ReplicaSet {
    const CONTROLLER: &'static str = "replicaset-controller";
    fn spec_replicas(&self) -> i32 {
        self.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1)
    }
    fn label_selector(&self) -> LabelSelector {
        LabelSelector::from_optional(self.spec.as_ref().map(|s| &s.selector))
            .unwrap_or_else(|_| LabelSelector::nothing())
    }
    fn template(&self) -> Option<&PodTemplateSpec> {
        self.spec.as_ref()?.template.as_ref()
    }
    fn min_ready_seconds(&self) -> i32 {
        self.spec
            .as_ref()
            .and_then(|s| s.min_ready_seconds)
            .unwrap_or(0)
    }
    fn replica_status(&self) -> ReplicaSetStatus {
        self.status.clone().unwrap_or_default()
    }
    fn is_kind_of(reference: &OwnerReference) -> bool {
        reference.kind == "ReplicaSet" && reference.api_version.starts_with("apps/")
    }
}

impl ReplicaOwner for ReplicationController {
    const CONTROLLER: &'static str = "replication-controller";
    fn spec_replicas(&self) -> i32 {
        self.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1)
    }
    fn label_selector(&self) -> LabelSelector {
        match self.spec.as_ref().and_then(|s| s.selector.clone()) {
            // Validation insists on a selector; an empty one must not select everything.
            Some(labels) if !labels.is_empty() => {
                LabelSelector::from_label_selector(&MetaLabelSelector {
                    match_labels: Some(labels),
                    match_expressions: None,
                })
                .unwrap_or_else(|_| LabelSelector::nothing())
            }
            _ => LabelSelector::nothing(),
        }
    }
    fn template(&self) -> Option<&PodTemplateSpec> {
        self.spec.as_ref()?.template.as_ref()
    }
    fn min_ready_seconds(&self) -> i32 {
        self.spec
            .as_ref()
            .and_then(|s| s.min_ready_seconds)
            .unwrap_or(0)
    }
    fn replica_status(&self) -> ReplicaSetStatus {
        self.status
            .as_ref()
            .and_then(|s| serde_json::to_value(s).ok())
            .and_then(|v| serde_json::from_value(v).ok())
            .unwrap_or_default()
    }
    fn is_kind_of(reference: &OwnerReference) -> bool {
        reference.kind == "ReplicationController" && reference.api_version == "v1"
    }
}

/// A pod as the template says, owned by `owner` (upstream's `GetPodFromTemplate`).
pub fn pod_from_template(
    template: &PodTemplateSpec,
    owner_name: &str,
    namespace: &str,
    owner: OwnerReference,
) -> Pod {
    let meta = template.metadata.clone().unwrap_or_default();
    Pod {
        metadata: ObjectMeta {
            generate_name: Some(format!("{owner_name}-")),
            namespace: Some(namespace.into()),
            labels: meta.labels,
            annotations: meta.annotations,
            finalizers: meta.finalizers,
            owner_references: Some(vec![owner]),
            ..Default::default()
        },
        spec: template.spec.clone(),
        status: None,
    }
}

/// One controller (ReplicaSet or ReplicationController).
pub struct Controller<K: ReplicaOwner> {
    client: Client,
    store: Store<K>,
    queue: Arc<WorkQueue<String>>,
    expectations: Expectations,
    pods: Arc<RwLock<PodCache>>,
    reporter: Reporter,
}

impl<K: ReplicaOwner> Controller<K> {
    fn key_of(namespace: &str, name: &str) -> String {
        format!("{namespace}/{name}")
    }

    fn kind() -> &'static str {
        if K::CONTROLLER == ReplicaSet::CONTROLLER {
            "ReplicaSet"
        } else {
            "ReplicationController"
        }
    }

    /// Keep the reflector of `K` current and queue every object that changes.
    async fn watch_owners(
        self: Arc<Self>,
        writer: reflector::store::Writer<K>,
    ) -> anyhow::Result<()> {
        let api: Api<K> = Api::all(self.client.clone());
        let mut events = watcher(api, watcher::Config::default())
            .default_backoff()
            .reflect(writer)
            .boxed();
        while let Some(event) = events.try_next().await? {
            match event {
                watcher::Event::Apply(o) | watcher::Event::InitApply(o) => self.enqueue(&o),
                watcher::Event::Delete(o) => {
                    let key = Self::key_of(&o.namespace().unwrap_or_default(), &o.name_any());
                    self.expectations.forget(&key);
                    self.queue.add(key);
                }
                watcher::Event::Init | watcher::Event::InitDone => {}
            }
        }
        Ok(())
    }

    fn enqueue(&self, o: &K) {
        self.queue.add(Self::key_of(
            &o.namespace().unwrap_or_default(),
            &o.name_any(),
        ));
    }

    fn controller_key(pod: &Pod) -> Option<String> {
        let reference = controller_of(&pod.metadata).filter(|r| K::is_kind_of(r))?;
        Some(Self::key_of(
            pod.metadata.namespace.as_deref().unwrap_or_default(),
            &reference.name,
        ))
    }

    /// Queue every controller of `K` whose selector matches the orphan `pod`.
    fn enqueue_matching(&self, pod: &Pod) {
        let namespace = pod.metadata.namespace.as_deref().unwrap_or_default();
        let empty = BTreeMap::new();
        let labels = pod.metadata.labels.as_ref().unwrap_or(&empty);
        for owner in self.store.state() {
            if owner.meta().namespace.as_deref() == Some(namespace)
                && owner.label_selector().matches(labels)
            {
                self.enqueue(&owner);
            }
        }
    }

    /// Upstream's pod event handlers: observe expectations and queue the owners concerned.
    fn on_pod_change(&self, change: &Change) {
        let name = |p: &Pod| p.metadata.name.clone().unwrap_or_default();
        match (&change.old, &change.new) {
            (None, Some(new)) => match Self::controller_key(new) {
                Some(key) => {
                    if new.metadata.deletion_timestamp.is_some() {
                        self.expectations.deletion_observed(&key, &name(new));
                    } else {
                        self.expectations.creations_observed(&key, 1);
                    }
                    self.queue.add(key);
                }
                None if controller_of(&new.metadata).is_none() => self.enqueue_matching(new),
                None => {}
            },
            (Some(old), Some(new)) => {
                let old_key = Self::controller_key(old);
                let new_key = Self::controller_key(new);
                if let Some(key) = &new_key
                    && new.metadata.deletion_timestamp.is_some()
                {
                    self.expectations.deletion_observed(key, &name(new));
                }
                if let Some(key) = &old_key
                    && old_key != new_key
                {
                    self.queue.add(key.clone());
                }
                match new_key {
                    Some(key) => self.queue.add(key),
                    None if controller_of(&new.metadata).is_none() => {
                        let relabeled = old.metadata.labels != new.metadata.labels;
                        let released = controller_of(&old.metadata).is_some();
                        if relabeled || released {
                            self.enqueue_matching(new);
                        }
                    }
                    None => {}
                }
            }
            (Some(old), None) => {
                if let Some(key) = Self::controller_key(old) {
                    self.expectations.deletion_observed(&key, &name(old));
                    self.queue.add(key);
                }
            }
            (None, None) => {}
        }
    }

    async fn run_workers(
        self: Arc<Self>,
        mut pods_synced: tokio::sync::watch::Receiver<bool>,
    ) -> anyhow::Result<()> {
        // Never count pods on a cache that has not listed them all: that would create duplicates
        // after every restart.
        self.store.wait_until_ready().await?;
        pods_synced.wait_for(|synced| *synced).await?;
        tracing::info!(
            controller = K::CONTROLLER,
            "caches synced; starting workers"
        );
        let this = self.clone();
        crate::util::run_workers(self.queue.clone(), WORKERS, move |key: String| {
            let this = this.clone();
            async move {
                // A panic must not leave the key marked as in progress forever.
                match tokio::spawn(this.sync(key.clone())).await {
                    Ok(outcome) => outcome,
                    Err(error) => {
                        tracing::error!(controller = K::CONTROLLER, %key, %error, "sync panicked");
                        Outcome::Retry
                    }
                }
            }
        })
        .await;
        Ok(())
    }

    async fn sync(self: Arc<Self>, key: String) -> Outcome {
        match self.sync_key(&key).await {
            Ok(None) => Outcome::Done,
            Ok(Some(delay)) => Outcome::After(delay),
            Err(error) => {
                tracing::warn!(controller = K::CONTROLLER, %key, %error, "sync failed; retrying");
                Outcome::Retry
            }
        }
    }

    /// Reconcile one controller; `Ok(Some(d))` asks to look again after `d`.
    async fn sync_key(&self, key: &str) -> Result<Option<Duration>, Error> {
        let Some((namespace, name)) = key.split_once('/') else {
            return Ok(None);
        };
        let Some(owner) = self.store.get(&ObjectRef::new(name).within(namespace)) else {
            self.expectations.forget(key);
            return Ok(None);
        };
        let uid = owner.meta().uid.clone().unwrap_or_default();
        let selector = owner.label_selector();
        let needs_sync = self.expectations.satisfied(key);
        let candidates: Vec<Arc<Pod>> = {
            let cache = self.pods.read().unwrap_or_else(|e| e.into_inner());
            let mut pods = cache.controlled_by(&uid);
            pods.extend(cache.orphans(namespace));
            pods
        };
        let deleting = owner.meta().deletion_timestamp.is_some();
        let claim = logic::claim(
            candidates
                .iter()
                .map(|p| p.as_ref())
                .filter(|p| is_pod_active(p)),
            &uid,
            &selector,
            deleting,
        );
        let mut owned: Vec<&Pod> = claim.owned;
        for pod in claim.release {
            self.set_controller(&owner, pod, false).await?;
        }
        if !claim.adopt.is_empty() && self.can_adopt(&owner).await? {
            for pod in claim.adopt {
                if self.set_controller(&owner, pod, true).await? {
                    owned.push(pod);
                }
            }
        }

        let manage_error = if needs_sync && !deleting {
            self.manage_replicas(&owner, key, &owned).await.err()
        } else {
            None
        };

        let now = Timestamp::now();
        let template_labels = owner
            .template()
            .and_then(|t| t.metadata.as_ref())
            .and_then(|m| m.labels.clone())
            .unwrap_or_default();
        let min_ready = owner.min_ready_seconds();
        let current = owner.replica_status();
        let inputs = logic::StatusInputs {
            generation: owner.meta().generation,
            replicas: owner.spec_replicas(),
            template_labels: &template_labels,
            min_ready_seconds: min_ready,
        };
        let status = logic::calculate_status(
            &current,
            &inputs,
            &owned,
            manage_error.as_ref().map(|e| e.to_string()).as_deref(),
            now,
        );
        if logic::normalized(&current) != logic::normalized(&status) {
            self.write_status(&owner, &status).await?;
        }
        if let Some(error) = manage_error {
            return Err(error);
        }
        if !needs_sync {
            // The events we wait for queue us again; this is for one that got lost.
            return Ok(Some(EXPECTATIONS_TIMEOUT));
        }
        // A ready pod becomes available minReadySeconds later, with no event to say so.
        let next_available = owned
            .iter()
            .filter(|p| {
                crate::util::is_pod_ready(p) && !crate::util::is_pod_available(p, min_ready, now)
            })
            .filter_map(|p| {
                let ready = p
                    .status
                    .as_ref()?
                    .conditions
                    .as_ref()?
                    .iter()
                    .find(|c| c.type_ == "Ready")?;
                let since = ready.last_transition_time.as_ref()?.0;
                let at = since
                    .checked_add(SignedDuration::from_secs(i64::from(min_ready)))
                    .ok()?;
                Some(at.duration_since(now).unsigned_abs())
            })
            .min();
        Ok(next_available.map(|d| d + Duration::from_millis(100)))
    }

    /// Create or delete pods so that `owned` reaches `spec.replicas` (upstream's `manageReplicas`).
    async fn manage_replicas(&self, owner: &K, key: &str, owned: &[&Pod]) -> Result<(), Error> {
        let namespace = owner.namespace().unwrap_or_default();
        let name = owner.name_any();
        let wanted = owner.spec_replicas().max(0) as usize;
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), &namespace);
        if owned.len() < wanted {
            let count = (wanted - owned.len()).min(BURST_REPLICAS);
            let template = owner.template().ok_or_else(|| Error::NoTemplate {
                kind: Self::kind(),
                key: key.to_string(),
            })?;
            let Some(reference) = controller_ref(owner) else {
                return Ok(());
            };
            let pod = pod_from_template(template, &name, &namespace, reference);
            self.expectations.expect_creations(key, count);
            let (created, error) =
                logic::slow_start_batch(count, SLOW_START_INITIAL_BATCH_SIZE, || {
                    let pods = pods.clone();
                    let pod = pod.clone();
                    async move { pods.create(&PostParams::default(), &pod).await }
                })
                .await;
            for pod in &created {
                let pod_name = pod.name_any();
                tracing::info!(controller = K::CONTROLLER, %key, pod = %pod_name, "created pod");
                record_event(
                    &self.client,
                    &self.reporter,
                    owner,
                    EventType::Normal,
                    "SuccessfulCreate",
                    "Create",
                    format!("Created pod: {pod_name}"),
                );
            }
            if created.len() < count {
                // Failed or never attempted: the cache will not see these.
                self.expectations
                    .creations_observed(key, count - created.len());
            }
            if let Some(error) = error {
                let message = api_message(&error);
                tracing::warn!(controller = K::CONTROLLER, %key, error = %message, "creating pods failed");
                record_event(
                    &self.client,
                    &self.reporter,
                    owner,
                    EventType::Warning,
                    "FailedCreate",
                    "Create",
                    format!("Error creating: {message}"),
                );
                return Err(Error::Api(message));
            }
        } else if owned.len() > wanted {
            let count = (owned.len() - wanted).min(BURST_REPLICAS);
            let related = self.related_pods(owner);
            let related: Vec<&Pod> = related.iter().map(|p| p.as_ref()).collect();
            let victims = logic::pods_to_delete(owned, &related, count, Timestamp::now());
            self.expectations
                .expect_deletions(key, victims.iter().map(|p| p.name_any()));
            let results = futures::future::join_all(victims.iter().map(|pod| {
                let pods = pods.clone();
                let pod_name = pod.name_any();
                async move {
                    let result = pods.delete(&pod_name, &DeleteParams::default()).await;
                    (pod_name, result)
                }
            }))
            .await;
            let mut failure = None;
            for (pod_name, result) in results {
                match result {
                    Ok(_) => {
                        tracing::info!(controller = K::CONTROLLER, %key, pod = %pod_name, "deleted pod");
                        record_event(
                            &self.client,
                            &self.reporter,
                            owner,
                            EventType::Normal,
                            "SuccessfulDelete",
                            "Delete",
                            format!("Deleted pod: {pod_name}"),
                        );
                    }
                    Err(error) if is_status(&error, 404) => {
                        self.expectations.deletion_observed(key, &pod_name)
                    }
                    Err(error) => {
                        self.expectations.deletion_observed(key, &pod_name);
                        let message = api_message(&error);
                        record_event(
                            &self.client,
                            &self.reporter,
                            owner,
                            EventType::Warning,
                            "FailedDelete",
                            "Delete",
                            format!("Error deleting: {message}"),
                        );
                        failure.get_or_insert(Error::Api(message));
                    }
                }
            }
            if let Some(error) = failure {
                return Err(error);
            }
        }
        Ok(())
    }

    /// The pods of the ReplicaSets that share `owner`'s controller (e.g. all revisions of a
    /// Deployment): scale-down prefers nodes where they are doubled up.
    fn related_pods(&self, owner: &K) -> Vec<Arc<Pod>> {
        let Some(controller) = controller_of(owner.meta()) else {
            return Vec::new();
        };
        let cache = self.pods.read().unwrap_or_else(|e| e.into_inner());
        self.store
            .state()
            .iter()
            .filter(|o| o.meta().namespace == owner.meta().namespace)
            .filter(|o| controller_of(o.meta()).is_some_and(|c| c.uid == controller.uid))
            .filter_map(|o| o.meta().uid.as_deref().map(|uid| cache.controlled_by(uid)))
            .flatten()
            .collect()
    }

    /// Upstream's `canAdopt` check: read the owner fresh, so that a controller deleted (or
    /// replaced by one of the same name) since the cache saw it adopts nothing.
    async fn can_adopt(&self, owner: &K) -> Result<bool, Error> {
        let api: Api<K> =
            Api::namespaced(self.client.clone(), &owner.namespace().unwrap_or_default());
        match api.get(&owner.name_any()).await {
            Ok(fresh) => {
                Ok(fresh.meta().uid == owner.meta().uid
                    && fresh.meta().deletion_timestamp.is_none())
            }
            Err(error) if is_status(&error, 404) => Ok(false),
            Err(source) => Err(Error::Request {
                kind: Self::kind(),
                key: Self::key_of(&owner.namespace().unwrap_or_default(), &owner.name_any()),
                source,
            }),
        }
    }

    /// Adopt (`adopt`) or release a pod by rewriting its ownerReferences, guarded by its
    /// resourceVersion. Returns whether the pod is now ours; a pod gone or changed meanwhile
    /// is left for the next sync.
    async fn set_controller(&self, owner: &K, pod: &Pod, adopt: bool) -> Result<bool, Error> {
        let owner_uid = owner.meta().uid.clone().unwrap_or_default();
        let mut references: Vec<OwnerReference> = pod
            .metadata
            .owner_references
            .clone()
            .unwrap_or_default()
            .into_iter()
            .filter(|r| r.uid != owner_uid)
            .collect();
        if adopt && let Some(reference) = controller_ref(owner) {
            references.push(reference);
        }
        let patch = serde_json::json!({
            "metadata": {
                "ownerReferences": references,
                "uid": pod.metadata.uid,
                "resourceVersion": pod.metadata.resource_version,
            }
        });
        let namespace = pod.metadata.namespace.clone().unwrap_or_default();
        let pod_name = pod.name_any();
        let api: Api<Pod> = Api::namespaced(self.client.clone(), &namespace);
        let key = Self::key_of(&namespace, &owner.name_any());
        match api
            .patch(&pod_name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => {
                let verb = if adopt { "adopted" } else { "released" };
                tracing::info!(controller = K::CONTROLLER, %key, pod = %pod_name, "{verb} pod");
                Ok(adopt)
            }
            Err(error) if is_status(&error, 404) || is_status(&error, 409) => {
                self.queue.add(key);
                Ok(false)
            }
            Err(source) => Err(Error::Request {
                kind: Self::kind(),
                key,
                source,
            }),
        }
    }

    async fn write_status(&self, owner: &K, status: &ReplicaSetStatus) -> Result<(), Error> {
        let mut value = serde_json::to_value(status).unwrap_or_default();
        if status.conditions.is_none() {
            // A merge patch keeps what it does not mention: say the conditions are gone.
            value["conditions"] = serde_json::Value::Null;
        }
        let namespace = owner.namespace().unwrap_or_default();
        let api: Api<K> = Api::namespaced(self.client.clone(), &namespace);
        let patch = serde_json::json!({ "status": value });
        match api
            .patch_status(
                &owner.name_any(),
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await
        {
            Ok(_) => Ok(()),
            Err(error) if is_status(&error, 404) => Ok(()),
            Err(source) => Err(Error::Request {
                kind: Self::kind(),
                key: Self::key_of(&namespace, &owner.name_any()),
                source,
            }),
        }
    }
}

fn controller<K: ReplicaOwner>(
    client: &Client,
    pods: &Arc<RwLock<PodCache>>,
) -> (Arc<Controller<K>>, reflector::store::Writer<K>) {
    let (store, writer) = reflector::store();
    let controller = Arc::new(Controller {
        client: client.clone(),
        store,
        queue: WorkQueue::new(),
        expectations: Expectations::default(),
        pods: pods.clone(),
        reporter: K::CONTROLLER.into(),
    });
    (controller, writer)
}

/// Run the ReplicaSet and ReplicationController controllers until one of their watches fails.
pub async fn run(ctx: Arc<Context>) -> anyhow::Result<()> {
    let client = ctx.client.clone();
    let pods = Arc::new(RwLock::new(PodCache::default()));
    let (replicasets, rs_writer) = controller::<ReplicaSet>(&client, &pods);
    let (replication_controllers, rc_writer) = controller::<ReplicationController>(&client, &pods);
    let (synced_tx, synced_rx) = tokio::sync::watch::channel(false);

    let watch_pods = {
        let pods = pods.clone();
        let replicasets = replicasets.clone();
        let replication_controllers = replication_controllers.clone();
        // Pods from the controllers' shared cache.
        let pod_informer = ctx.informers.pods();
        async move {
            let mut events = pod_informer.subscribe().boxed();
            while let Some(event) = events.try_next().await? {
                let (changes, synced) = {
                    let mut cache = pods.write().unwrap_or_else(|e| e.into_inner());
                    (cache.apply(event), cache.synced())
                };
                for change in &changes {
                    replicasets.on_pod_change(change);
                    replication_controllers.on_pod_change(change);
                }
                if synced && !*synced_tx.borrow() {
                    synced_tx.send_replace(true);
                }
            }
            anyhow::Ok(())
        }
    };

    tokio::try_join!(
        watch_pods,
        replicasets.clone().watch_owners(rs_writer),
        replication_controllers.clone().watch_owners(rc_writer),
        replicasets.run_workers(synced_rx.clone()),
        replication_controllers.run_workers(synced_rx),
    )?;
    Ok(())
}
