//! The Deployment controller: rolls a Deployment's pod template out through ReplicaSets, one
//! per template revision, following upstream's `deployment` controller step by step (claim the
//! ReplicaSets, keep the new one's revision current, scale new up and old down within
//! maxSurge/maxUnavailable or Recreate, proportional scaling mid-rollout, pause, history
//! cleanup, status with the Available and Progressing conditions).
//!
//! Rollback is kubectl's business (it copies an old ReplicaSet's template back into the
//! Deployment); the controller then finds that ReplicaSet as the new one and gives it the next
//! revision.

pub mod logic;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use api::selector::LabelSelector;
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::apps::v1::{
    Deployment, DeploymentCondition, DeploymentStatus, ReplicaSet, ReplicaSetSpec,
};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::events::{EventType, Reporter};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};

use self::logic::*;
use crate::Context;
use crate::replicaset::api_message;
use crate::util::{Outcome, WorkQueue, controller_of, controller_ref, record_event};

/// Upstream's `--concurrent-deployment-syncs` default.
const WORKERS: usize = 5;
const REPORTER: &str = "deployment-controller";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{action} for deployment {key}: {source}")]
    Request {
        action: String,
        key: String,
        source: kube::Error,
    },
    #[error(
        "deployment {key}: replica set name {name} is taken by another template; collision count raised"
    )]
    Collision { key: String, name: String },
}

fn is_status(error: &kube::Error, code: u16) -> bool {
    matches!(error, kube::Error::Api(status) if status.code == code)
}

fn key_of(namespace: &str, name: &str) -> String {
    format!("{namespace}/{name}")
}

struct Controller {
    client: Client,
    deployments: Store<Deployment>,
    replicasets: Store<ReplicaSet>,
    queue: Arc<WorkQueue<String>>,
    reporter: Reporter,
}

/// One sync's view: the Deployment and its ReplicaSets, kept current as this sync writes them.
struct Work {
    key: String,
    d: Deployment,
    rss: Vec<ReplicaSet>,
}

impl Work {
    fn namespace(&self) -> String {
        self.d.namespace().unwrap_or_default()
    }

    fn new_index(&self) -> Option<usize> {
        find_new(&self.d, &self.rss)
    }

    fn new_rs(&self) -> Option<&ReplicaSet> {
        self.new_index().map(|i| &self.rss[i])
    }

    fn old(&self) -> Vec<&ReplicaSet> {
        let new = self.new_index();
        self.rss
            .iter()
            .enumerate()
            .filter(|(i, _)| Some(*i) != new)
            .map(|(_, rs)| rs)
            .collect()
    }

    fn all(&self) -> Vec<&ReplicaSet> {
        self.rss.iter().collect()
    }

    fn get(&self, name: &str) -> Option<&ReplicaSet> {
        self.rss
            .iter()
            .find(|rs| rs.metadata.name.as_deref() == Some(name))
    }

    fn replace(&mut self, rs: ReplicaSet) {
        match self
            .rss
            .iter_mut()
            .find(|r| r.metadata.name == rs.metadata.name)
        {
            Some(slot) => *slot = rs,
            None => self.rss.push(rs),
        }
    }
}

impl Controller {
    fn request_error(
        key: &str,
        action: impl Into<String>,
    ) -> impl FnOnce(kube::Error) -> Error + '_ {
        let action = action.into();
        move |source| Error::Request {
            action,
            key: key.to_string(),
            source,
        }
    }

    fn enqueue_deployment(&self, d: &Deployment) {
        self.queue
            .add(key_of(&d.namespace().unwrap_or_default(), &d.name_any()));
    }

    /// Queue the Deployment that owns `rs`, or for an orphan every Deployment that selects it.
    fn enqueue_for_replica_set(&self, rs: &ReplicaSet) {
        let namespace = rs.namespace().unwrap_or_default();
        match controller_of(&rs.metadata) {
            Some(r) if r.kind == "Deployment" => self.queue.add(key_of(&namespace, &r.name)),
            Some(_) => {}
            None => {
                let empty = BTreeMap::new();
                let labels = rs.metadata.labels.as_ref().unwrap_or(&empty);
                for d in self.deployments.state() {
                    if d.metadata.namespace.as_deref() != Some(namespace.as_str()) {
                        continue;
                    }
                    let selector = d
                        .spec
                        .as_ref()
                        .and_then(|s| LabelSelector::from_label_selector(&s.selector).ok());
                    if selector.is_some_and(|s| !s.is_empty() && s.matches(labels)) {
                        self.enqueue_deployment(&d);
                    }
                }
            }
        }
    }

    async fn watch_deployments(
        self: Arc<Self>,
        writer: reflector::store::Writer<Deployment>,
    ) -> anyhow::Result<()> {
        let api: Api<Deployment> = Api::all(self.client.clone());
        let mut events = watcher(api, watcher::Config::default())
            .default_backoff()
            .reflect(writer)
            .boxed();
        while let Some(event) = events.try_next().await? {
            match event {
                watcher::Event::Apply(d)
                | watcher::Event::InitApply(d)
                | watcher::Event::Delete(d) => self.enqueue_deployment(&d),
                watcher::Event::Init | watcher::Event::InitDone => {}
            }
        }
        Ok(())
    }

    async fn watch_replica_sets(
        self: Arc<Self>,
        writer: reflector::store::Writer<ReplicaSet>,
    ) -> anyhow::Result<()> {
        let api: Api<ReplicaSet> = Api::all(self.client.clone());
        let mut events = watcher(api, watcher::Config::default())
            .default_backoff()
            .reflect(writer)
            .boxed();
        while let Some(event) = events.try_next().await? {
            match event {
                watcher::Event::Apply(rs)
                | watcher::Event::InitApply(rs)
                | watcher::Event::Delete(rs) => self.enqueue_for_replica_set(&rs),
                watcher::Event::Init | watcher::Event::InitDone => {}
            }
        }
        Ok(())
    }

    async fn run_workers(self: Arc<Self>) -> anyhow::Result<()> {
        self.deployments.wait_until_ready().await?;
        self.replicasets.wait_until_ready().await?;
        tracing::info!(controller = REPORTER, "caches synced; starting workers");
        let this = self.clone();
        crate::util::run_workers(self.queue.clone(), WORKERS, move |key: String| {
            let this = this.clone();
            async move {
                let sync = {
                    let key = key.clone();
                    tokio::spawn(async move { this.sync(&key).await })
                };
                // A panic must not leave the key marked as in progress forever.
                match sync.await {
                    Ok(Ok(None)) => Outcome::Done,
                    Ok(Ok(Some(delay))) => Outcome::After(delay),
                    Ok(Err(error)) => {
                        tracing::warn!(controller = REPORTER, %key, %error, "sync failed; retrying");
                        Outcome::Retry
                    }
                    Err(error) => {
                        tracing::error!(controller = REPORTER, %key, %error, "sync panicked");
                        Outcome::Retry
                    }
                }
            }
        })
        .await;
        Ok(())
    }

    fn event(&self, d: &Deployment, type_: EventType, reason: &str, action: &str, note: String) {
        record_event(&self.client, &self.reporter, d, type_, reason, action, note);
    }

    /// Upstream's `syncDeployment`.
    async fn sync(&self, key: &str) -> Result<Option<Duration>, Error> {
        let Some((namespace, name)) = key.split_once('/') else {
            return Ok(None);
        };
        let Some(d) = self
            .deployments
            .get(&ObjectRef::new(name).within(namespace))
        else {
            return Ok(None);
        };
        let d = (*d).clone();
        let Some(spec) = d.spec.as_ref() else {
            return Ok(None);
        };
        let selector = match LabelSelector::from_label_selector(&spec.selector) {
            Ok(s) => s,
            Err(error) => {
                tracing::warn!(controller = REPORTER, %key, %error, "invalid selector");
                return Ok(None);
            }
        };
        let mut work = Work {
            key: key.to_string(),
            d,
            rss: Vec::new(),
        };
        if selector.is_empty() {
            self.event(
                &work.d,
                EventType::Warning,
                "SelectingAll",
                "Select",
                "This deployment is selecting all pods. A non-empty selector is required.".into(),
            );
            let observed = work.d.status.as_ref().and_then(|s| s.observed_generation);
            if work.d.metadata.generation != observed {
                let mut status = work.d.status.clone().unwrap_or_default();
                status.observed_generation = work.d.metadata.generation;
                self.write_status(&mut work, status, None).await?;
            }
            return Ok(None);
        }
        work.rss = self.claim_replica_sets(&work.d, &selector).await?;

        if work.d.metadata.deletion_timestamp.is_some() {
            self.get_all_and_sync_revision(&mut work, false).await?;
            self.sync_deployment_status(&mut work).await?;
            return Ok(None);
        }
        self.check_paused_conditions(&mut work).await?;
        let paused = work.d.spec.as_ref().and_then(|s| s.paused).unwrap_or(false);
        if paused || self.is_scaling_event(&mut work).await? {
            return self.sync_scale(&mut work, paused).await;
        }
        if is_recreate(&work.d) {
            self.rollout_recreate(&mut work).await
        } else {
            self.rollout_rolling(&mut work).await
        }
    }

    /// The ReplicaSets this Deployment controls, adopting matching orphans and releasing
    /// those it controls that no longer match (upstream's `getReplicaSetsForDeployment`).
    async fn claim_replica_sets(
        &self,
        d: &Deployment,
        selector: &LabelSelector,
    ) -> Result<Vec<ReplicaSet>, Error> {
        let namespace = d.namespace().unwrap_or_default();
        let uid = d.metadata.uid.clone().unwrap_or_default();
        let deleting = d.metadata.deletion_timestamp.is_some();
        let key = key_of(&namespace, &d.name_any());
        let empty = BTreeMap::new();
        let mut owned = Vec::new();
        let mut adopt = Vec::new();
        let mut release = Vec::new();
        for rs in self.replicasets.state() {
            if rs.metadata.namespace.as_deref() != Some(namespace.as_str()) {
                continue;
            }
            let matches = selector.matches(rs.metadata.labels.as_ref().unwrap_or(&empty));
            match controller_of(&rs.metadata) {
                Some(r) if r.uid == uid => {
                    if matches {
                        owned.push((*rs).clone())
                    } else {
                        release.push(rs)
                    }
                }
                Some(_) => {}
                None if matches && !deleting && rs.metadata.deletion_timestamp.is_none() => {
                    adopt.push(rs)
                }
                None => {}
            }
        }
        for rs in release {
            self.set_controller(d, &rs, false, &key).await?;
        }
        if !adopt.is_empty() && self.can_adopt(d, &key).await? {
            for rs in adopt {
                if let Some(adopted) = self.set_controller(d, &rs, true, &key).await? {
                    owned.push(adopted);
                }
            }
        }
        Ok(owned)
    }

    async fn can_adopt(&self, d: &Deployment, key: &str) -> Result<bool, Error> {
        let api: Api<Deployment> =
            Api::namespaced(self.client.clone(), &d.namespace().unwrap_or_default());
        match api.get(&d.name_any()).await {
            Ok(fresh) => {
                Ok(fresh.metadata.uid == d.metadata.uid
                    && fresh.metadata.deletion_timestamp.is_none())
            }
            Err(error) if is_status(&error, 404) => Ok(false),
            Err(source) => Err(Self::request_error(
                key,
                "reading the deployment before adoption",
            )(source)),
        }
    }

    /// Adopt or release `rs`; returns the adopted ReplicaSet.
    async fn set_controller(
        &self,
        d: &Deployment,
        rs: &ReplicaSet,
        adopt: bool,
        key: &str,
    ) -> Result<Option<ReplicaSet>, Error> {
        let uid = d.metadata.uid.clone().unwrap_or_default();
        let mut references: Vec<OwnerReference> = rs
            .metadata
            .owner_references
            .clone()
            .unwrap_or_default()
            .into_iter()
            .filter(|r| r.uid != uid)
            .collect();
        if adopt && let Some(reference) = controller_ref(d) {
            references.push(reference);
        }
        let patch = serde_json::json!({
            "metadata": {
                "ownerReferences": references,
                "uid": rs.metadata.uid,
                "resourceVersion": rs.metadata.resource_version,
            }
        });
        let api: Api<ReplicaSet> =
            Api::namespaced(self.client.clone(), &rs.namespace().unwrap_or_default());
        let name = rs.name_any();
        match api
            .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(updated) => {
                let verb = if adopt { "adopted" } else { "released" };
                tracing::info!(controller = REPORTER, %key, replicaset = %name, "{verb} replica set");
                Ok(adopt.then_some(updated))
            }
            Err(error) if is_status(&error, 404) || is_status(&error, 409) => {
                self.queue.add(key.to_string());
                Ok(None)
            }
            Err(source) => Err(Self::request_error(
                key,
                format!("claiming replica set {name}"),
            )(source)),
        }
    }

    /// Write `status` (and the revision annotation, which upstream also sets through /status).
    async fn write_status(
        &self,
        work: &mut Work,
        status: DeploymentStatus,
        revision: Option<String>,
    ) -> Result<(), Error> {
        let mut value = serde_json::to_value(&status).unwrap_or_default();
        if status.conditions.is_none() {
            value["conditions"] = serde_json::Value::Null;
        }
        let mut patch = serde_json::json!({ "status": value });
        if let Some(revision) = revision {
            patch["metadata"] =
                serde_json::json!({ "annotations": { REVISION_ANNOTATION: revision } });
        }
        let api: Api<Deployment> = Api::namespaced(self.client.clone(), &work.namespace());
        match api
            .patch_status(
                &work.d.name_any(),
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await
        {
            Ok(updated) => {
                work.d = updated;
                Ok(())
            }
            Err(source) => Err(Self::request_error(&work.key, "updating the status")(
                source,
            )),
        }
    }

    /// The revision annotation the Deployment should carry, if it does not yet.
    fn revision_update(d: &Deployment, revision: &str) -> Option<String> {
        let current = d
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(REVISION_ANNOTATION));
        (current.map(String::as_str) != Some(revision)).then(|| revision.to_string())
    }

    /// Find (or with `create`, create) the new ReplicaSet and keep revisions in step (upstream's
    /// `getAllReplicaSetsAndSyncRevision` / `getNewReplicaSet`).
    async fn get_all_and_sync_revision(&self, work: &mut Work, create: bool) -> Result<(), Error> {
        let new_revision = max_revision(work.old()) + 1;
        let d_replicas = work.d.spec.as_ref().and_then(|s| s.min_ready_seconds);
        let deadline = progress_deadline(&work.d).is_some();
        if let Some(index) = work.new_index() {
            // An older ReplicaSet becoming the new one again (`rollout undo`) starts a new
            // rollout: its progress deadline counts from now, not from the rollout that timed
            // out before it (upstream keeps the timed-out condition until progress shows, so
            // `rollout status` right after an undo can fail at once).
            let rolled_back = logic::revision(&work.rss[index]) < new_revision;
            if deadline && rolled_back {
                let status = work.d.status.get_or_insert_with(Default::default);
                let timed_out = get_condition(status, PROGRESSING)
                    .is_some_and(|c| c.reason.as_deref() == Some(TIMED_OUT_REASON));
                if timed_out {
                    let message =
                        format!("Found new replica set \"{}\"", work.rss[index].name_any());
                    remove_condition(status, PROGRESSING);
                    set_condition(
                        status,
                        new_condition(PROGRESSING, "True", FOUND_NEW_RS_REASON, message, now()),
                    );
                }
            }
            let mut copy = work.rss[index].clone();
            let annotations_updated =
                set_new_rs_annotations(&work.d, &mut copy, new_revision, true);
            let spec = copy.spec.get_or_insert_with(ReplicaSetSpec::default);
            let min_ready_changed = spec.min_ready_seconds.unwrap_or(0) != d_replicas.unwrap_or(0);
            if annotations_updated || min_ready_changed {
                spec.min_ready_seconds = d_replicas;
                let updated = self.update_replica_set(work, &copy).await?;
                work.replace(updated);
                return Ok(());
            }
            let revision = copy
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(REVISION_ANNOTATION))
                .cloned()
                .unwrap_or_default();
            let revision_update = Self::revision_update(&work.d, &revision);
            let mut status = work.d.status.clone().unwrap_or_default();
            let mut needs_update = revision_update.is_some();
            if deadline && get_condition(&status, PROGRESSING).is_none() {
                let message = format!("Found new replica set \"{}\"", copy.name_any());
                set_condition(
                    &mut status,
                    new_condition(PROGRESSING, "True", FOUND_NEW_RS_REASON, message, now()),
                );
                needs_update = true;
            }
            if needs_update {
                self.write_status(work, status, revision_update).await?;
            }
            return Ok(());
        }
        if !create {
            return Ok(());
        }

        let namespace = work.namespace();
        let spec = work.d.spec.clone().unwrap_or_default();
        let collision_count = work.d.status.as_ref().and_then(|s| s.collision_count);
        let hash = compute_hash(&spec.template, collision_count);
        let mut template = spec.template.clone();
        let template_meta = template.metadata.get_or_insert_with(ObjectMeta::default);
        template_meta
            .labels
            .get_or_insert_with(BTreeMap::new)
            .insert(POD_TEMPLATE_HASH_LABEL.into(), hash.clone());
        let labels = template_meta.labels.clone();
        let mut selector = spec.selector.clone();
        selector
            .match_labels
            .get_or_insert_with(BTreeMap::new)
            .insert(POD_TEMPLATE_HASH_LABEL.into(), hash.clone());
        let name = format!("{}-{hash}", work.d.name_any());
        let mut rs = ReplicaSet {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                namespace: Some(namespace.clone()),
                labels,
                owner_references: controller_ref(&work.d).map(|r| vec![r]),
                ..Default::default()
            },
            spec: Some(ReplicaSetSpec {
                replicas: Some(0),
                min_ready_seconds: spec.min_ready_seconds,
                selector,
                template: Some(template),
            }),
            status: None,
        };
        let mut all = work.all();
        all.push(&rs);
        let replicas = new_rs_new_replicas(&work.d, &all, &rs);
        if let Some(spec) = rs.spec.as_mut() {
            spec.replicas = Some(replicas);
        }
        set_new_rs_annotations(&work.d, &mut rs, new_revision, false);

        let api: Api<ReplicaSet> = Api::namespaced(self.client.clone(), &namespace);
        let (created, already_existed) = match api.create(&PostParams::default(), &rs).await {
            Ok(created) => (created, false),
            Err(kube::Error::Api(status)) if status.reason == "AlreadyExists" => {
                // Ours from an earlier sync the cache has not seen yet, or a hash collision.
                let existing = api.get(&name).await.map_err(Self::request_error(
                    &work.key,
                    format!("reading replica set {name}"),
                ))?;
                let ours = controller_of(&existing.metadata)
                    .is_some_and(|r| Some(&r.uid) == work.d.metadata.uid.as_ref());
                let same = existing
                    .spec
                    .as_ref()
                    .and_then(|s| s.template.as_ref())
                    .is_some_and(|t| equal_ignore_hash(t, &spec.template));
                if ours && same {
                    (existing, true)
                } else {
                    let mut status = work.d.status.clone().unwrap_or_default();
                    status.collision_count = Some(collision_count.unwrap_or(0) + 1);
                    tracing::info!(controller = REPORTER, key = %work.key, replicaset = %name, "hash collision; raising collisionCount");
                    self.write_status(work, status, None).await?;
                    return Err(Error::Collision {
                        key: work.key.clone(),
                        name,
                    });
                }
            }
            Err(error) => {
                let message = format!(
                    "Failed to create new replica set \"{name}\": {}",
                    api_message(&error)
                );
                if deadline {
                    let mut status = work.d.status.clone().unwrap_or_default();
                    set_condition(
                        &mut status,
                        new_condition(
                            PROGRESSING,
                            "False",
                            FAILED_RS_CREATE_REASON,
                            message.clone(),
                            now(),
                        ),
                    );
                    self.write_status(work, status, None).await?;
                }
                self.event(
                    &work.d,
                    EventType::Warning,
                    FAILED_RS_CREATE_REASON,
                    "Create",
                    message,
                );
                return Err(Self::request_error(
                    &work.key,
                    format!("creating replica set {name}"),
                )(error));
            }
        };
        if !already_existed {
            tracing::info!(controller = REPORTER, key = %work.key, replicaset = %name, replicas, "created new replica set");
            if replicas > 0 {
                self.event(
                    &work.d,
                    EventType::Normal,
                    "ScalingReplicaSet",
                    "Scale",
                    format!("Scaled up replica set {name} from 0 to {replicas}"),
                );
            }
        }
        work.replace(created);
        let revision_update = Self::revision_update(&work.d, &new_revision.to_string());
        let mut status = work.d.status.clone().unwrap_or_default();
        let mut needs_update = revision_update.is_some();
        if !already_existed && deadline {
            let message = format!("Created new replica set \"{name}\"");
            set_condition(
                &mut status,
                new_condition(PROGRESSING, "True", NEW_REPLICA_SET_REASON, message, now()),
            );
            needs_update = true;
        }
        if needs_update {
            self.write_status(work, status, revision_update).await?;
        }
        Ok(())
    }

    /// Write what this controller owns of a ReplicaSet (its size, minReadySeconds and
    /// annotations) as a merge patch: the ReplicaSet controller writes its status all the time,
    /// and a full update from the cache would keep losing that race.
    async fn update_replica_set(&self, work: &Work, rs: &ReplicaSet) -> Result<ReplicaSet, Error> {
        let api: Api<ReplicaSet> = Api::namespaced(self.client.clone(), &work.namespace());
        let name = rs.name_any();
        let spec = rs.spec.clone().unwrap_or_default();
        let patch = serde_json::json!({
            "metadata": { "annotations": rs.metadata.annotations },
            "spec": { "replicas": spec.replicas, "minReadySeconds": spec.min_ready_seconds },
        });
        api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .map_err(Self::request_error(
                &work.key,
                format!("updating replica set {name}"),
            ))
    }

    /// Set a ReplicaSet's size and replica annotations (upstream's `scaleReplicaSet`); an event
    /// when the size changes. Returns whether it did.
    async fn scale_replica_set(
        &self,
        work: &mut Work,
        name: &str,
        size: i32,
        operation: &str,
    ) -> Result<bool, Error> {
        let Some(rs) = work.get(name) else {
            return Ok(false);
        };
        let before = rs_replicas(rs);
        let mut copy = rs.clone();
        let desired = spec_replicas(&work.d);
        let size_changed = before != size;
        let annotations_changed =
            set_replicas_annotations(&mut copy, desired, desired + max_surge(&work.d));
        if !size_changed && !annotations_changed {
            return Ok(false);
        }
        copy.spec
            .get_or_insert_with(ReplicaSetSpec::default)
            .replicas = Some(size);
        let updated = self.update_replica_set(work, &copy).await?;
        work.replace(updated);
        if size_changed {
            tracing::info!(controller = REPORTER, key = %work.key, replicaset = %name, from = before, to = size, "scaled replica set");
            self.event(
                &work.d,
                EventType::Normal,
                "ScalingReplicaSet",
                "Scale",
                format!("Scaled {operation} replica set {name} from {before} to {size}"),
            );
        }
        Ok(size_changed)
    }

    /// Scale to `size` if that is a change (upstream's `scaleReplicaSetAndRecordEvent`).
    async fn scale_and_record(
        &self,
        work: &mut Work,
        name: &str,
        size: i32,
    ) -> Result<bool, Error> {
        let Some(rs) = work.get(name) else {
            return Ok(false);
        };
        let before = rs_replicas(rs);
        if before == size {
            return Ok(false);
        }
        let operation = if before < size { "up" } else { "down" };
        self.scale_replica_set(work, name, size, operation).await
    }

    /// Upstream's `checkPausedConditions`.
    async fn check_paused_conditions(&self, work: &mut Work) -> Result<(), Error> {
        if progress_deadline(&work.d).is_none() {
            return Ok(());
        }
        let mut status = work.d.status.clone().unwrap_or_default();
        let reason = get_condition(&status, PROGRESSING).and_then(|c| c.reason.clone());
        if reason.as_deref() == Some(TIMED_OUT_REASON) {
            return Ok(());
        }
        let paused = work.d.spec.as_ref().and_then(|s| s.paused).unwrap_or(false);
        let paused_condition = reason.as_deref() == Some(PAUSED_DEPLOY_REASON);
        let condition = if paused && !paused_condition {
            new_condition(
                PROGRESSING,
                "Unknown",
                PAUSED_DEPLOY_REASON,
                "Deployment is paused".into(),
                now(),
            )
        } else if !paused && paused_condition {
            new_condition(
                PROGRESSING,
                "Unknown",
                RESUMED_DEPLOY_REASON,
                "Deployment is resumed".into(),
                now(),
            )
        } else {
            return Ok(());
        };
        set_condition(&mut status, condition);
        self.write_status(work, status, None).await
    }

    /// Whether the Deployment's size changed since its active ReplicaSets were annotated.
    async fn is_scaling_event(&self, work: &mut Work) -> Result<bool, Error> {
        self.get_all_and_sync_revision(work, false).await?;
        let desired = spec_replicas(&work.d);
        Ok(work
            .rss
            .iter()
            .filter(|rs| is_active(rs))
            .any(|rs| desired_replicas_annotation(rs).is_some_and(|d| d != desired)))
    }

    /// Scaling without a rollout, for paused Deployments and size changes (upstream's `sync`).
    async fn sync_scale(&self, work: &mut Work, paused: bool) -> Result<Option<Duration>, Error> {
        self.get_all_and_sync_revision(work, false).await?;
        self.scale(work).await?;
        if paused {
            self.cleanup(work).await?;
        }
        self.sync_deployment_status(work).await?;
        Ok(None)
    }

    /// Upstream's `scale`.
    async fn scale(&self, work: &mut Work) -> Result<(), Error> {
        let desired = spec_replicas(&work.d);
        let target = {
            let old = work.old();
            find_active_or_latest(work.new_rs(), &old).map(|rs| (rs.name_any(), rs_replicas(rs)))
        };
        if let Some((name, size)) = target {
            if size != desired {
                self.scale_and_record(work, &name, desired).await?;
            }
            return Ok(());
        }
        if is_saturated(&work.d, work.new_rs()) {
            let old: Vec<String> = work
                .old()
                .into_iter()
                .filter(|rs| is_active(rs))
                .map(|rs| rs.name_any())
                .collect();
            for name in old {
                self.scale_and_record(work, &name, 0).await?;
            }
            return Ok(());
        }
        if !is_recreate(&work.d) {
            let (sizes, operation) = {
                let active: Vec<&ReplicaSet> = work.rss.iter().filter(|rs| is_active(rs)).collect();
                proportional_scale(&work.d, &active)
            };
            for (name, size) in sizes {
                self.scale_replica_set(work, &name, size, operation).await?;
            }
        }
        Ok(())
    }

    /// Delete old ReplicaSets beyond revisionHistoryLimit (upstream's `cleanupDeployment`).
    async fn cleanup(&self, work: &mut Work) -> Result<(), Error> {
        let Some(limit) = work.d.spec.as_ref().and_then(|s| s.revision_history_limit) else {
            return Ok(());
        };
        let doomed = cleanup_candidates(&work.old(), limit);
        let api: Api<ReplicaSet> = Api::namespaced(self.client.clone(), &work.namespace());
        for name in doomed {
            match api.delete(&name, &DeleteParams::default()).await {
                Ok(_) => {
                    tracing::info!(controller = REPORTER, key = %work.key, replicaset = %name, "deleted old replica set beyond the history limit");
                    work.rss
                        .retain(|rs| rs.metadata.name.as_deref() != Some(name.as_str()));
                }
                Err(error) if is_status(&error, 404) => {}
                Err(source) => {
                    return Err(Self::request_error(
                        &work.key,
                        format!("deleting old replica set {name}"),
                    )(source));
                }
            }
        }
        Ok(())
    }

    /// Status without the Progressing bookkeeping (upstream's `syncDeploymentStatus`).
    async fn sync_deployment_status(&self, work: &mut Work) -> Result<(), Error> {
        let status = calculate_status(&work.d, &work.all(), work.new_rs(), now());
        if normalized(&status) != normalized(&work.d.status.clone().unwrap_or_default()) {
            self.write_status(work, status, None).await?;
        }
        Ok(())
    }

    /// Status with the Progressing and ReplicaFailure conditions (upstream's
    /// `syncRolloutStatus`); asks to look again when the progress deadline will pass.
    async fn sync_rollout_status(&self, work: &mut Work) -> Result<Option<Duration>, Error> {
        let now = now();
        let new_name = work.new_rs().map(|rs| rs.name_any());
        let mut status = calculate_status(&work.d, &work.all(), work.new_rs(), now);
        rollout_conditions(&work.d, &mut status, new_name.as_deref(), now);
        match replica_failure(work.new_rs(), &work.all()) {
            Some(condition) => set_condition(&mut status, condition),
            None => remove_condition(&mut status, REPLICA_FAILURE),
        }
        if normalized(&status) == normalized(&work.d.status.clone().unwrap_or_default()) {
            return Ok(requeue_stuck_after(&work.d, &status, now));
        }
        self.write_status(work, status, None).await?;
        Ok(None)
    }

    /// Upstream's `rolloutRolling`.
    async fn rollout_rolling(&self, work: &mut Work) -> Result<Option<Duration>, Error> {
        self.get_all_and_sync_revision(work, true).await?;
        if self.reconcile_new_replica_set(work).await? {
            return self.sync_rollout_status(work).await;
        }
        if self.reconcile_old_replica_sets(work).await? {
            return self.sync_rollout_status(work).await;
        }
        let status = work.d.status.clone().unwrap_or_default();
        if deployment_complete(&work.d, &status) {
            self.cleanup(work).await?;
        }
        self.sync_rollout_status(work).await
    }

    async fn reconcile_new_replica_set(&self, work: &mut Work) -> Result<bool, Error> {
        let desired = spec_replicas(&work.d);
        let Some(new) = work.new_rs() else {
            return Ok(false);
        };
        let name = new.name_any();
        let size = rs_replicas(new);
        if size == desired {
            return Ok(false);
        }
        let target = if size > desired {
            desired
        } else {
            new_rs_new_replicas(&work.d, &work.all(), new)
        };
        self.scale_and_record(work, &name, target).await
    }

    async fn reconcile_old_replica_sets(&self, work: &mut Work) -> Result<bool, Error> {
        let Some(new) = work.new_rs() else {
            return Ok(false);
        };
        let new_name = new.name_any();
        let old_active = |work: &Work| -> Vec<String> {
            let mut old: Vec<&ReplicaSet> =
                work.old().into_iter().filter(|rs| is_active(rs)).collect();
            old.sort_by(|a, b| by_creation(a, b));
            old.into_iter().map(|rs| rs.name_any()).collect()
        };
        if old_active(work).is_empty() {
            return Ok(false);
        }
        let max_down = {
            let new = work
                .get(&new_name)
                .expect("the new replica set is in the work set");
            max_scaled_down(&work.d, &work.all(), new)
        };
        if max_down <= 0 {
            return Ok(false);
        }
        let mut scaled = false;
        let plan = {
            let old: Vec<&ReplicaSet> = old_active(work)
                .iter()
                .filter_map(|n| work.get(n))
                .collect();
            cleanup_unhealthy(&old, max_down)
        };
        for (name, size) in plan {
            scaled |= self.scale_and_record(work, &name, size).await?;
        }
        let plan = {
            let names = old_active(work);
            let old: Vec<&ReplicaSet> = names.iter().filter_map(|n| work.get(n)).collect();
            let mut all = old.clone();
            all.extend(work.get(&new_name));
            scale_down_old(&work.d, &all, &old)
        };
        for (name, size) in plan {
            scaled |= self.scale_and_record(work, &name, size).await?;
        }
        Ok(scaled)
    }

    /// Upstream's `rolloutRecreate`: all old pods gone before any new one starts.
    async fn rollout_recreate(&self, work: &mut Work) -> Result<Option<Duration>, Error> {
        self.get_all_and_sync_revision(work, false).await?;
        let old: Vec<String> = work
            .old()
            .into_iter()
            .filter(|rs| is_active(rs))
            .map(|rs| rs.name_any())
            .collect();
        let mut scaled_down = false;
        for name in old {
            scaled_down |= self.scale_and_record(work, &name, 0).await?;
        }
        if scaled_down {
            return self.sync_rollout_status(work).await;
        }
        if self.old_pods_running(work).await? {
            // Pods going away queue nothing here: look again shortly.
            let requeue = self.sync_rollout_status(work).await?;
            return Ok(Some(
                requeue
                    .unwrap_or(Duration::from_secs(1))
                    .min(Duration::from_secs(1)),
            ));
        }
        if work.new_rs().is_none() {
            self.get_all_and_sync_revision(work, true).await?;
        }
        if let Some(new) = work.new_rs() {
            let name = new.name_any();
            let desired = spec_replicas(&work.d);
            self.scale_and_record(work, &name, desired).await?;
        }
        let status = work.d.status.clone().unwrap_or_default();
        if deployment_complete(&work.d, &status) {
            self.cleanup(work).await?;
        }
        self.sync_rollout_status(work).await
    }

    /// Whether a pod of an old ReplicaSet may still run (upstream's `oldPodsRunning`).
    async fn old_pods_running(&self, work: &Work) -> Result<bool, Error> {
        let old = work.old();
        if actual_replica_count(old.iter().copied()) > 0 {
            return Ok(true);
        }
        let old_uids: Vec<&str> = old
            .iter()
            .filter_map(|rs| rs.metadata.uid.as_deref())
            .collect();
        if old_uids.is_empty() {
            return Ok(false);
        }
        let selector = work
            .d
            .spec
            .as_ref()
            .and_then(|s| LabelSelector::from_label_selector(&s.selector).ok())
            .map(|s| s.to_string())
            .unwrap_or_default();
        let api: Api<Pod> = Api::namespaced(self.client.clone(), &work.namespace());
        let pods = api
            .list(&ListParams::default().labels(&selector))
            .await
            .map_err(Self::request_error(&work.key, "listing pods"))?;
        Ok(pods.items.iter().any(|pod| {
            let phase = pod
                .status
                .as_ref()
                .and_then(|s| s.phase.as_deref())
                .unwrap_or("");
            controller_of(&pod.metadata).is_some_and(|r| old_uids.contains(&r.uid.as_str()))
                && phase != "Failed"
                && phase != "Succeeded"
        }))
    }
}

/// The ReplicaFailure condition to carry from the ReplicaSets: the new one's first.
fn replica_failure(new: Option<&ReplicaSet>, all: &[&ReplicaSet]) -> Option<DeploymentCondition> {
    let failure = |rs: &ReplicaSet| {
        rs.status
            .as_ref()?
            .conditions
            .as_ref()?
            .iter()
            .find(|c| c.type_ == REPLICA_FAILURE)
            .map(|c| DeploymentCondition {
                type_: c.type_.clone(),
                status: c.status.clone(),
                reason: c.reason.clone(),
                message: c.message.clone(),
                last_update_time: c.last_transition_time.clone(),
                last_transition_time: c.last_transition_time.clone(),
            })
    };
    new.and_then(failure)
        .or_else(|| all.iter().find_map(|rs| failure(rs)))
}

/// Run the Deployment controller until one of its watches fails.
pub async fn run(ctx: Arc<Context>) -> anyhow::Result<()> {
    let (deployments, deployment_writer) = reflector::store();
    let (replicasets, replicaset_writer) = reflector::store();
    let controller = Arc::new(Controller {
        client: ctx.client.clone(),
        deployments,
        replicasets,
        queue: WorkQueue::new(),
        reporter: REPORTER.into(),
    });
    tokio::try_join!(
        controller.clone().watch_deployments(deployment_writer),
        controller.clone().watch_replica_sets(replicaset_writer),
        controller.run_workers(),
    )?;
    Ok(())
}
