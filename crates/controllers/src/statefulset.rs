//! StatefulSet controller: pods with stable names `<set>-<ordinal>`, each with its own claims
//! `<template>-<set>-<ordinal>`, created and removed in order (or in parallel), rolled to new
//! revisions from the highest ordinal down to the partition. Every template the set has had is
//! recorded as a ControllerRevision, so `kubectl rollout history/undo` work.
//!
//! The decisions live in [`plan`] (pure); this module reads the caches, records revisions,
//! carries out the plan and writes the status.
//!
//! Architecture Invariant: only pods labelled `statefulset.kubernetes.io/pod-name` are watched
//! (every pod this controller makes has it), so the pod cache holds stateful pods only.

pub mod history;
pub mod plan;

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::{ControllerRevision, StatefulSet, StatefulSetStatus};
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use k8s_openapi::apimachinery::pkg::runtime::RawExtension;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, ObjectMeta, Patch, PatchParams, PostParams, Preconditions};
use kube::runtime::events::{EventType, Reporter};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use serde_json::json;

use crate::Context;
use crate::util::{self, Outcome, REVISION_DATA_HASH_LABEL, WorkQueue};
use plan::{DeleteReason, Revisions, Step};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("statefulset {key}: {action}: {source}")]
    Api {
        key: String,
        action: String,
        source: kube::Error,
    },
    #[error("statefulset {key}: invalid selector: {message}")]
    Selector { key: String, message: String },
    #[error("statefulset {key}: claim {claim} is being deleted; waiting before creating pod {pod}")]
    StaleClaim {
        key: String,
        claim: String,
        pod: String,
    },
}

struct State {
    client: kube::Client,
    reporter: Reporter,
    sets: Store<StatefulSet>,
    pods: Store<Pod>,
    claims: Store<PersistentVolumeClaim>,
    revisions: Store<ControllerRevision>,
}

pub async fn run(ctx: Arc<Context>) -> anyhow::Result<()> {
    let client = ctx.client.clone();
    let queue: Arc<WorkQueue<Key>> = WorkQueue::new();

    let (sets, set_writer) = reflector::store();
    let set_driver = {
        let queue = queue.clone();
        watcher(
            Api::<StatefulSet>::all(client.clone()),
            watcher::Config::default(),
        )
        .default_backoff()
        .modify(|s: &mut StatefulSet| s.managed_fields_mut().clear())
        .reflect(set_writer)
        .touched_objects()
        .for_each(move |set| {
            if let Ok(set) = set {
                queue.add((set.namespace().unwrap_or_default(), set.name_any()));
            }
            futures::future::ready(())
        })
    };
    let (pods, pod_writer) = reflector::store();
    let pod_driver = {
        let queue = queue.clone();
        watcher(
            Api::<Pod>::all(client.clone()),
            watcher::Config::default().labels(plan::POD_NAME_LABEL),
        )
        .default_backoff()
        .modify(|p: &mut Pod| p.managed_fields_mut().clear())
        .reflect(pod_writer)
        .touched_objects()
        .for_each(move |pod| {
            if let Ok(pod) = pod {
                enqueue_owner(&queue, &pod.metadata);
            }
            futures::future::ready(())
        })
    };
    let (revisions, revision_writer) = reflector::store();
    let revision_driver = {
        let queue = queue.clone();
        watcher(
            Api::<ControllerRevision>::all(client.clone()),
            watcher::Config::default(),
        )
        .default_backoff()
        .modify(|r: &mut ControllerRevision| r.managed_fields_mut().clear())
        .reflect(revision_writer)
        .touched_objects()
        .for_each(move |revision| {
            if let Ok(revision) = revision {
                enqueue_owner(&queue, &revision.metadata);
            }
            futures::future::ready(())
        })
    };
    let (claims, claim_writer) = reflector::store();
    let claim_driver = watcher(
        Api::<PersistentVolumeClaim>::all(client.clone()),
        watcher::Config::default(),
    )
    .default_backoff()
    .modify(|c: &mut PersistentVolumeClaim| c.managed_fields_mut().clear())
    .reflect(claim_writer)
    .for_each(|_| futures::future::ready(()));

    let state = Arc::new(State {
        reporter: Reporter {
            controller: "statefulset-controller".into(),
            instance: None,
        },
        client,
        sets,
        pods,
        claims,
        revisions,
    });
    let workers = util::run_workers(queue, WORKERS, move |key: Key| {
        let state = state.clone();
        async move { sync(&state, key).await }
    });
    tokio::select! {
        () = workers => {}
        () = set_driver => {}
        () = pod_driver => {}
        () = revision_driver => {}
        () = claim_driver => {}
    }
    Ok(())
}

/// Sets reconciled at once (upstream's `--concurrent-statefulset-syncs` default).
const WORKERS: usize = 5;

/// A StatefulSet's namespace and name.
type Key = (String, String);

/// Queue the StatefulSet controlling an object, if one does.
fn enqueue_owner(queue: &WorkQueue<Key>, meta: &ObjectMeta) {
    if let Some(owner) = util::controller_of(meta)
        && owner.kind == "StatefulSet"
        && owner.api_version.starts_with("apps/")
    {
        queue.add((
            meta.namespace.clone().unwrap_or_default(),
            owner.name.clone(),
        ));
    }
}

async fn sync(state: &State, (namespace, name): Key) -> Outcome {
    // Decisions need complete caches; otherwise a missing pod would look deleted.
    let _ = state.sets.wait_until_ready().await;
    let _ = state.pods.wait_until_ready().await;
    let _ = state.revisions.wait_until_ready().await;
    let _ = state.claims.wait_until_ready().await;
    let Some(set) = state.sets.get(&ObjectRef::new(&name).within(&namespace)) else {
        return Outcome::Done;
    };
    match reconcile(set, state).await {
        Ok(Some(after)) => Outcome::After(after),
        Ok(None) => Outcome::Done,
        Err(error) => {
            tracing::warn!(%error, "statefulset controller");
            Outcome::Retry
        }
    }
}

fn key_of(set: &StatefulSet) -> String {
    format!(
        "{}/{}",
        set.metadata.namespace.as_deref().unwrap_or_default(),
        set.metadata.name.as_deref().unwrap_or_default()
    )
}

fn owned_by(meta: &ObjectMeta, uid: &str) -> bool {
    util::controller_of(meta).is_some_and(|r| r.uid == uid)
}

async fn reconcile(set: Arc<StatefulSet>, state: &State) -> Result<Option<Duration>, Error> {
    let key = key_of(&set);
    let (Some(namespace), Some(name), Some(uid)) = (
        set.metadata.namespace.clone(),
        set.metadata.name.clone(),
        set.metadata.uid.clone(),
    ) else {
        return Ok(None);
    };
    let Some(spec) = set.spec.as_ref() else {
        return Ok(None);
    };
    let selector =
        api::selector::LabelSelector::from_label_selector(&spec.selector).map_err(|e| {
            Error::Selector {
                key: key.clone(),
                message: e.to_string(),
            }
        })?;
    let pod_api: Api<Pod> = Api::namespaced(state.client.clone(), &namespace);
    let mut pods: Vec<Arc<Pod>> = Vec::new();
    for pod in state.pods.state() {
        if pod.metadata.namespace.as_deref() != Some(namespace.as_str()) {
            continue;
        }
        if owned_by(&pod.metadata, &uid) {
            pods.push(pod);
        } else if util::controller_of(&pod.metadata).is_none()
            && set.metadata.deletion_timestamp.is_none()
            && pod.metadata.deletion_timestamp.is_none()
            && plan::parent_and_ordinal(&pod.name_any()).is_some_and(|(p, _)| p == name)
            && selector.matches(pod.metadata.labels.as_ref().unwrap_or(&Default::default()))
        {
            // An orphan of this set (e.g. left by an orphaning delete): adopt it.
            let mut refs = pod.metadata.owner_references.clone().unwrap_or_default();
            refs.extend(util::controller_ref(&*set));
            let patch = json!({"metadata": {"ownerReferences": refs, "uid": pod.metadata.uid}});
            match pod_api
                .patch(
                    &pod.name_any(),
                    &PatchParams::default(),
                    &Patch::Merge(&patch),
                )
                .await
            {
                Ok(adopted) => {
                    tracing::info!(statefulset = %key, pod = %pod.name_any(), "adopted pod");
                    pods.push(Arc::new(adopted));
                }
                Err(e) => tracing::debug!(statefulset = %key, error = %e, "adopting pod"),
            }
        }
    }

    let mut revisions: Vec<Arc<ControllerRevision>> = state
        .revisions
        .state()
        .into_iter()
        .filter(|r| {
            r.metadata.namespace.as_deref() == Some(namespace.as_str())
                && owned_by(&r.metadata, &uid)
        })
        .collect();
    history::sort_revisions(&mut revisions);
    let mut collision_count = set
        .status
        .as_ref()
        .and_then(|s| s.collision_count)
        .unwrap_or(0);
    let (current, update) =
        record_revisions(state, &set, &key, &revisions, &mut collision_count).await?;
    let current_set = apply_revision(&set, &current);
    let update_set = apply_revision(&set, &update);
    let current_name = current.name_any();
    let update_name = update.name_any();
    let revs = Revisions {
        current_set: &current_set,
        update_set: &update_set,
        current: &current_name,
        update: &update_name,
    };
    let now = Timestamp::now();
    let mut plan = plan::plan(&set, &revs, &pods, now);

    sync_claim_owners(state, &set, &key, &pods).await?;
    for step in &plan.steps {
        execute(state, &set, &key, step).await?;
    }

    plan.status.collision_count = (collision_count > 0
        || set
            .status
            .as_ref()
            .is_some_and(|s| s.collision_count.is_some()))
    .then_some(collision_count);
    update_status(state, &set, &key, &plan.status).await?;

    // Keep every revision a pod or the status uses, and revisionHistoryLimit others.
    let limit = spec.revision_history_limit.unwrap_or(10).max(0) as usize;
    let live = |r: &ControllerRevision| {
        let n = r.metadata.name.as_deref().unwrap_or_default();
        n == current_name || n == update_name || pods.iter().any(|p| plan::revision_of(p) == n)
    };
    let old: Vec<&Arc<ControllerRevision>> = revisions.iter().filter(|r| !live(r)).collect();
    if old.len() > limit {
        let api: Api<ControllerRevision> = Api::namespaced(state.client.clone(), &namespace);
        for revision in &old[..old.len() - limit] {
            match api
                .delete(&revision.name_any(), &DeleteParams::default())
                .await
            {
                Ok(_) => {
                    tracing::info!(statefulset = %key, revision = %revision.name_any(), "deleted old revision")
                }
                Err(kube::Error::Api(e)) if e.code == 404 => {}
                Err(source) => {
                    return Err(Error::Api {
                        key,
                        action: format!("deleting revision {}", revision.name_any()),
                        source,
                    });
                }
            }
        }
    }
    // Look again after a while even without events, as upstream's periodic resync.
    Ok(Some(plan.requeue_after.unwrap_or(Duration::from_secs(300))))
}

/// The set with its template replaced by the one `revision` records.
fn apply_revision(set: &StatefulSet, revision: &ControllerRevision) -> StatefulSet {
    let mut clone = set.clone();
    if let (Some(spec), Some(template)) = (clone.spec.as_mut(), history::template_of(revision)) {
        spec.template = template;
    }
    clone
}

/// Find or record the update revision (the set's template now) and find the current one
/// (`status.currentRevision`, or the update revision when there is none), as upstream's
/// `getStatefulSetRevisions`.
async fn record_revisions(
    state: &State,
    set: &StatefulSet,
    key: &str,
    revisions: &[Arc<ControllerRevision>],
    collision_count: &mut i32,
) -> Result<(ControllerRevision, ControllerRevision), Error> {
    let spec = set.spec.as_ref().expect("checked by the caller");
    let namespace = set.metadata.namespace.clone().unwrap_or_default();
    let api: Api<ControllerRevision> = Api::namespaced(state.client.clone(), &namespace);
    let data = history::template_patch(&spec.template);
    let next = history::next_revision(revisions.iter().map(|r| &**r));
    let equal: Vec<&Arc<ControllerRevision>> = revisions
        .iter()
        .filter(|r| history::same_data(r, &data))
        .collect();
    let update = match (equal.last(), revisions.last()) {
        (Some(eq), Some(last)) if eq.metadata.name == last.metadata.name => (***eq).clone(),
        (Some(eq), _) => {
            // Back to an earlier template (e.g. `rollout undo`): that revision becomes the newest.
            let patch = json!({"revision": next});
            let updated = api
                .patch(
                    &eq.name_any(),
                    &PatchParams::default(),
                    &Patch::Merge(&patch),
                )
                .await
                .map_err(|source| Error::Api {
                    key: key.into(),
                    action: format!("renumbering revision {}", eq.name_any()),
                    source,
                })?;
            tracing::info!(statefulset = %key, revision = %eq.name_any(), number = next, "reused revision");
            updated
        }
        (None, _) => {
            let mut labels = spec
                .template
                .metadata
                .as_ref()
                .and_then(|m| m.labels.clone())
                .unwrap_or_default();
            labels.insert(
                REVISION_DATA_HASH_LABEL.into(),
                history::hash_revision_data(&data, None),
            );
            let mut revision = ControllerRevision {
                metadata: ObjectMeta {
                    namespace: Some(namespace.clone()),
                    labels: Some(labels),
                    annotations: set.metadata.annotations.clone(),
                    owner_references: util::controller_ref(set).map(|r| vec![r]),
                    ..Default::default()
                },
                data: Some(RawExtension(data.clone())),
                revision: next,
            };
            create_revision(&api, set, key, &mut revision, collision_count).await?
        }
    };
    let current_name = set
        .status
        .as_ref()
        .and_then(|s| s.current_revision.as_deref());
    let current = revisions
        .iter()
        .find(|r| {
            r.metadata
                .name
                .as_deref()
                .is_some_and(|n| Some(n) == current_name)
        })
        .map(|r| (**r).clone())
        .unwrap_or_else(|| update.clone());
    Ok((current, update))
}

/// Create `revision` named `<set>-<hash>`; on a name taken by different data, count a
/// collision and try the next name.
async fn create_revision(
    api: &Api<ControllerRevision>,
    set: &StatefulSet,
    key: &str,
    revision: &mut ControllerRevision,
    collision_count: &mut i32,
) -> Result<ControllerRevision, Error> {
    let data = revision.data.clone().map(|d| d.0).unwrap_or_default();
    loop {
        let hash = history::hash_revision_data(&data, Some(*collision_count));
        let name = history::revision_name(&set.name_any(), &hash);
        revision.metadata.name = Some(name.clone());
        match api.create(&PostParams::default(), revision).await {
            Ok(created) => {
                tracing::info!(statefulset = %key, revision = %name, number = revision.revision, "created revision");
                return Ok(created);
            }
            Err(kube::Error::Api(e)) if e.code == 409 => {
                let existing = api.get(&name).await.map_err(|source| Error::Api {
                    key: key.into(),
                    action: format!("reading revision {name}"),
                    source,
                })?;
                if history::same_data(&existing, &data) {
                    return Ok(existing);
                }
                *collision_count += 1;
            }
            Err(source) => {
                return Err(Error::Api {
                    key: key.into(),
                    action: format!("creating revision {name}"),
                    source,
                });
            }
        }
    }
}

fn publish(
    state: &State,
    set: &StatefulSet,
    type_: EventType,
    reason: &str,
    action: &str,
    note: String,
) {
    util::record_event(
        &state.client,
        &state.reporter,
        set,
        type_,
        reason,
        action,
        note,
    );
}

async fn execute(state: &State, set: &StatefulSet, key: &str, step: &Step) -> Result<(), Error> {
    let namespace = set.metadata.namespace.clone().unwrap_or_default();
    let set_name = set.name_any();
    let pods: Api<Pod> = Api::namespaced(state.client.clone(), &namespace);
    match step {
        Step::Create(pod) => {
            let pod_name = pod.name_any();
            let ordinal = plan::ordinal_of(pod).unwrap_or_default();
            ensure_claims(state, set, key, ordinal, &pod_name).await?;
            match pods.create(&PostParams::default(), pod).await {
                Ok(_) => {
                    tracing::info!(statefulset = %key, pod = %pod_name, "created pod");
                    publish(
                        state,
                        set,
                        EventType::Normal,
                        "SuccessfulCreate",
                        "Create",
                        format!("create Pod {pod_name} in StatefulSet {set_name} successful"),
                    );
                }
                // The cache is behind: the pod is there already.
                Err(kube::Error::Api(e)) if e.code == 409 => {}
                Err(source) => {
                    publish(
                        state,
                        set,
                        EventType::Warning,
                        "FailedCreate",
                        "Create",
                        format!(
                            "create Pod {pod_name} in StatefulSet {set_name} failed error: {source}"
                        ),
                    );
                    return Err(Error::Api {
                        key: key.into(),
                        action: format!("creating pod {pod_name}"),
                        source,
                    });
                }
            }
        }
        Step::Delete(pod, reason) => {
            let pod_name = pod.name_any();
            if *reason == DeleteReason::Terminated {
                publish(
                    state,
                    set,
                    EventType::Warning,
                    "RecreatingTerminatedPod",
                    "Delete",
                    format!(
                        "StatefulSet {namespace}/{set_name} is recreating terminated Pod {pod_name}"
                    ),
                );
            }
            // The UID precondition keeps a stale cache from deleting a recreated pod.
            let params = DeleteParams {
                preconditions: Some(Preconditions {
                    uid: pod.metadata.uid.clone(),
                    resource_version: None,
                }),
                ..Default::default()
            };
            match pods.delete(&pod_name, &params).await {
                Ok(_) => {
                    tracing::info!(statefulset = %key, pod = %pod_name, ?reason, "deleted pod");
                    publish(
                        state,
                        set,
                        EventType::Normal,
                        "SuccessfulDelete",
                        "Delete",
                        format!("delete Pod {pod_name} in StatefulSet {set_name} successful"),
                    );
                }
                Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => {}
                Err(source) => {
                    publish(
                        state,
                        set,
                        EventType::Warning,
                        "FailedDelete",
                        "Delete",
                        format!(
                            "delete Pod {pod_name} in StatefulSet {set_name} failed error: {source}"
                        ),
                    );
                    return Err(Error::Api {
                        key: key.into(),
                        action: format!("deleting pod {pod_name}"),
                        source,
                    });
                }
            }
        }
        Step::Update(pod) => {
            let pod_name = pod.name_any();
            let ordinal = plan::ordinal_of(pod).unwrap_or_default();
            ensure_claims(state, set, key, ordinal, &pod_name).await?;
            match pods.replace(&pod_name, &PostParams::default(), pod).await {
                Ok(_) => {
                    tracing::info!(statefulset = %key, pod = %pod_name, "updated pod identity");
                    publish(
                        state,
                        set,
                        EventType::Normal,
                        "SuccessfulUpdate",
                        "Update",
                        format!("update Pod {pod_name} in StatefulSet {set_name} successful"),
                    );
                }
                Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => {}
                Err(source) => {
                    return Err(Error::Api {
                        key: key.into(),
                        action: format!("updating pod {pod_name}"),
                        source,
                    });
                }
            }
        }
        Step::EnsureClaims(ordinal) => {
            ensure_claims(state, set, key, *ordinal, &plan::pod_name(set, *ordinal)).await?;
        }
    }
    Ok(())
}

/// Create the claims of `ordinal` that do not exist yet.
async fn ensure_claims(
    state: &State,
    set: &StatefulSet,
    key: &str,
    ordinal: i32,
    pod_name: &str,
) -> Result<(), Error> {
    let namespace = set.metadata.namespace.clone().unwrap_or_default();
    let api: Api<PersistentVolumeClaim> = Api::namespaced(state.client.clone(), &namespace);
    let set_ref = util::controller_ref(set);
    for mut claim in plan::claims_for(set, ordinal) {
        let claim_name = claim.name_any();
        if let Some(existing) = state
            .claims
            .get(&ObjectRef::new(&claim_name).within(&namespace))
        {
            if existing.metadata.deletion_timestamp.is_some() {
                return Err(Error::StaleClaim {
                    key: key.into(),
                    claim: claim_name,
                    pod: pod_name.into(),
                });
            }
            continue;
        }
        if let Some(set_ref) = &set_ref {
            let pod = Pod {
                metadata: ObjectMeta {
                    name: Some(pod_name.into()),
                    ..Default::default()
                },
                ..Default::default()
            };
            if let Some(refs) =
                plan::claim_owner_refs(&[], set, &pod, set_ref, &OwnerReference::default())
                && !refs.is_empty()
            {
                claim.metadata.owner_references = Some(refs);
            }
        }
        match api.create(&PostParams::default(), &claim).await {
            Ok(_) => {
                tracing::info!(statefulset = %key, claim = %claim_name, "created claim");
                publish(
                    state,
                    set,
                    EventType::Normal,
                    "SuccessfulCreate",
                    "Create",
                    format!(
                        "create Claim {claim_name} Pod {pod_name} in StatefulSet {} success",
                        set.name_any()
                    ),
                );
            }
            Err(kube::Error::Api(e)) if e.code == 409 => {}
            Err(source) => {
                publish(
                    state,
                    set,
                    EventType::Warning,
                    "FailedCreate",
                    "Create",
                    format!(
                        "create Claim {claim_name} for Pod {pod_name} in StatefulSet {} failed error: {source}",
                        set.name_any()
                    ),
                );
                return Err(Error::Api {
                    key: key.into(),
                    action: format!("creating claim {claim_name}"),
                    source,
                });
            }
        }
    }
    Ok(())
}

/// Point the claims' owner references at the set or the pod as the retention policy says.
async fn sync_claim_owners(
    state: &State,
    set: &StatefulSet,
    key: &str,
    pods: &[Arc<Pod>],
) -> Result<(), Error> {
    let Some(set_ref) = util::controller_ref(set) else {
        return Ok(());
    };
    if set.metadata.deletion_timestamp.is_some() {
        return Ok(());
    }
    let namespace = set.metadata.namespace.clone().unwrap_or_default();
    let api: Api<PersistentVolumeClaim> = Api::namespaced(state.client.clone(), &namespace);
    for pod in pods {
        let (Some(ordinal), Some(pod_ref)) = (plan::ordinal_of(pod), util::controller_ref(&**pod))
        else {
            continue;
        };
        for claim in plan::claims_for(set, ordinal) {
            let name = claim.name_any();
            let Some(existing) = state.claims.get(&ObjectRef::new(&name).within(&namespace)) else {
                continue;
            };
            let refs = existing
                .metadata
                .owner_references
                .clone()
                .unwrap_or_default();
            let Some(want) = plan::claim_owner_refs(&refs, set, pod, &set_ref, &pod_ref) else {
                continue;
            };
            let patch = json!({"metadata": {"ownerReferences": want}});
            match api
                .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                Ok(_) => {
                    tracing::info!(statefulset = %key, claim = %name, "updated claim owners for retention policy")
                }
                Err(kube::Error::Api(e)) if e.code == 404 => {}
                Err(source) => {
                    return Err(Error::Api {
                        key: key.into(),
                        action: format!("updating owners of claim {name}"),
                        source,
                    });
                }
            }
        }
    }
    Ok(())
}

async fn update_status(
    state: &State,
    set: &StatefulSet,
    key: &str,
    status: &StatefulSetStatus,
) -> Result<(), Error> {
    let old = set.status.clone().unwrap_or_default();
    let unchanged = old.replicas == status.replicas
        && old.ready_replicas.unwrap_or(0) == status.ready_replicas.unwrap_or(0)
        && old.available_replicas.unwrap_or(0) == status.available_replicas.unwrap_or(0)
        && old.current_replicas.unwrap_or(0) == status.current_replicas.unwrap_or(0)
        && old.updated_replicas.unwrap_or(0) == status.updated_replicas.unwrap_or(0)
        && old.current_revision == status.current_revision
        && old.update_revision == status.update_revision
        && old.collision_count == status.collision_count
        && old.observed_generation == status.observed_generation;
    if unchanged {
        return Ok(());
    }
    let api: Api<StatefulSet> = Api::namespaced(
        state.client.clone(),
        set.metadata.namespace.as_deref().unwrap_or_default(),
    );
    let patch = json!({ "status": status });
    match api
        .patch_status(
            &set.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await
    {
        Ok(_) => {
            tracing::debug!(statefulset = %key, replicas = status.replicas, ready = ?status.ready_replicas, "updated status");
            Ok(())
        }
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
        Err(source) => Err(Error::Api {
            key: key.into(),
            action: "updating status".into(),
            source,
        }),
    }
}

#[cfg(test)]
mod tests;
