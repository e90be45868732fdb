//! DaemonSet controller: one pod on every eligible node, pinned there by a required node
//! affinity on the node's name (the scheduler binds it), replaced node by node when the
//! template changes (maxUnavailable / maxSurge) or only when deleted (OnDelete). Every template
//! is recorded as a ControllerRevision whose hash labels the pods.
//!
//! The decisions live in [`plan`] (pure); this module reads the caches, records revisions,
//! carries out the changes and writes the status.
//!
//! Architecture Invariant: only pods labelled `controller-revision-hash` are watched (every
//! daemon pod has it). Pods created or deleted but not yet seen in the cache are remembered
//! for a while ([`Expectations`]), so a lagging cache never causes a second pod on a node.

pub mod plan;

use std::collections::{HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::apps::v1::{ControllerRevision, DaemonSet, DaemonSetStatus};
use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::apimachinery::pkg::runtime::RawExtension;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, ObjectMeta, Patch, PatchParams, PostParams, Preconditions};
use kube::runtime::events::{EventType, Reporter};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use serde_json::json;

use crate::Context;
use crate::statefulset::history;
use crate::util::{self, CONTROLLER_REVISION_HASH_LABEL, Outcome, WorkQueue};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("daemonset {key}: {action}: {source}")]
    Api {
        key: String,
        action: String,
        source: kube::Error,
    },
    #[error(
        "daemonset {key}: revision name {name} is taken by other data; retrying with collision count {count}"
    )]
    Collision {
        key: String,
        name: String,
        count: i32,
    },
}

/// DaemonSets reconciled at once (upstream's `--concurrent-daemonset-syncs` is 2).
const WORKERS: usize = 2;
/// Pod creations in flight at once for one DaemonSet.
const CREATE_BURST: usize = 16;
/// How long a pod we created or deleted may stay unseen by the cache before we stop
/// waiting for it (upstream's expectations time out after 5 minutes).
const EXPECTATION_TTL: Duration = Duration::from_secs(60);

/// A DaemonSet's namespace and name.
type Key = (String, String);

struct State {
    client: kube::Client,
    reporter: Reporter,
    sets: Store<DaemonSet>,
    pods: Store<Pod>,
    nodes: Store<Node>,
    revisions: Store<ControllerRevision>,
    expectations: Expectations,
}

pub async fn run(ctx: Arc<Context>) -> anyhow::Result<()> {
    let client = ctx.client.clone();
    let queue: Arc<WorkQueue<Key>> = WorkQueue::new();

    let (sets, set_writer) = reflector::store();
    let set_driver = {
        let queue = queue.clone();
        watcher(
            Api::<DaemonSet>::all(client.clone()),
            watcher::Config::default(),
        )
        .default_backoff()
        .modify(|d: &mut DaemonSet| d.managed_fields_mut().clear())
        .reflect(set_writer)
        .touched_objects()
        .for_each(move |ds| {
            if let Ok(ds) = ds {
                queue.add((ds.namespace().unwrap_or_default(), ds.name_any()));
            }
            futures::future::ready(())
        })
    };
    let (pods, pod_writer) = reflector::store();
    let pod_driver = {
        let queue = queue.clone();
        watcher(
            Api::<Pod>::all(client.clone()),
            watcher::Config::default().labels(CONTROLLER_REVISION_HASH_LABEL),
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
    // Nodes from the controllers' shared cache.
    let node_informer = ctx.informers.nodes();
    let nodes = node_informer.store().await;
    let node_driver = {
        let queue = queue.clone();
        let sets = sets.clone();
        // Heartbeats change nodes all the time; only what decides placement queues the sets.
        let mut seen: HashMap<String, u64> = HashMap::new();
        node_informer.subscribe().for_each(move |event| {
            let changed = match event {
                Ok(watcher::Event::Apply(node) | watcher::Event::InitApply(node)) => {
                    let sig = node_signature(&node);
                    seen.insert(node.name_any(), sig) != Some(sig)
                }
                Ok(watcher::Event::Delete(node)) => {
                    seen.remove(&node.name_any());
                    true
                }
                Ok(watcher::Event::InitDone) => true,
                _ => false,
            };
            if changed {
                for ds in sets.state() {
                    queue.add((ds.namespace().unwrap_or_default(), ds.name_any()));
                }
            }
            futures::future::ready(())
        })
    };

    let state = Arc::new(State {
        reporter: Reporter {
            controller: "daemonset-controller".into(),
            instance: None,
        },
        client,
        sets,
        pods,
        nodes,
        revisions,
        expectations: Expectations::default(),
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
        () = node_driver => {}
    }
    Ok(())
}

/// What about a node decides whether a daemon pod belongs there.
fn node_signature(node: &Node) -> u64 {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    node.metadata.labels.hash(&mut hasher);
    if let Some(spec) = node.spec.as_ref() {
        spec.unschedulable.hash(&mut hasher);
        for taint in spec.taints.iter().flatten() {
            (&taint.key, &taint.value, &taint.effect).hash(&mut hasher);
        }
    }
    for condition in node
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .into_iter()
        .flatten()
    {
        (&condition.type_, &condition.status).hash(&mut hasher);
    }
    hasher.finish()
}

fn enqueue_owner(queue: &WorkQueue<Key>, meta: &ObjectMeta) {
    if let Some(owner) = util::controller_of(meta)
        && owner.kind == "DaemonSet"
        && owner.api_version.starts_with("apps/")
    {
        queue.add((
            meta.namespace.clone().unwrap_or_default(),
            owner.name.clone(),
        ));
    }
}

/// Pods this controller created or deleted that the cache has not caught up with yet.
#[derive(Default)]
struct Expectations {
    by_set: Mutex<HashMap<String, Pending>>,
}

#[derive(Default)]
struct Pending {
    created: HashMap<String, (Arc<Pod>, Instant)>,
    deleted: HashMap<String, Instant>,
}

impl Expectations {
    /// The set's pods as they are after our own writes: the cache's, without the ones we
    /// deleted, with the ones we created. Also whether every write has been seen.
    fn view(&self, uid: &str, cached: Vec<Arc<Pod>>) -> (Vec<Arc<Pod>>, bool) {
        let mut by_set = self.by_set.lock().unwrap_or_else(|e| e.into_inner());
        let Some(pending) = by_set.get_mut(uid) else {
            return (cached, true);
        };
        let live: HashMap<&str, &Arc<Pod>> = cached
            .iter()
            .filter_map(|p| Some((p.metadata.name.as_deref()?, p)))
            .collect();
        pending.created.retain(|name, (_, at)| {
            !live.contains_key(name.as_str()) && at.elapsed() < EXPECTATION_TTL
        });
        pending.deleted.retain(|name, at| {
            live.get(name.as_str())
                .is_some_and(|p| p.metadata.deletion_timestamp.is_none())
                && at.elapsed() < EXPECTATION_TTL
        });
        let settled = pending.created.is_empty() && pending.deleted.is_empty();
        let mut view: Vec<Arc<Pod>> = cached
            .iter()
            .filter(|p| {
                !p.metadata
                    .name
                    .as_ref()
                    .is_some_and(|n| pending.deleted.contains_key(n))
            })
            .cloned()
            .collect();
        view.extend(pending.created.values().map(|(p, _)| p.clone()));
        if settled {
            by_set.remove(uid);
        }
        (view, settled)
    }

    fn created(&self, uid: &str, pod: Pod) {
        let mut by_set = self.by_set.lock().unwrap_or_else(|e| e.into_inner());
        let name = pod.name_any();
        by_set
            .entry(uid.to_string())
            .or_default()
            .created
            .insert(name, (Arc::new(pod), Instant::now()));
    }

    fn deleted(&self, uid: &str, name: &str) {
        let mut by_set = self.by_set.lock().unwrap_or_else(|e| e.into_inner());
        by_set
            .entry(uid.to_string())
            .or_default()
            .deleted
            .insert(name.to_string(), Instant::now());
    }
}

async fn sync(state: &State, (namespace, name): Key) -> Outcome {
    let _ = state.sets.wait_until_ready().await;
    let _ = state.pods.wait_until_ready().await;
    let _ = state.nodes.wait_until_ready().await;
    let _ = state.revisions.wait_until_ready().await;
    let Some(ds) = state.sets.get(&ObjectRef::new(&name).within(&namespace)) else {
        return Outcome::Done;
    };
    match reconcile(&ds, state).await {
        Ok(Some(after)) => Outcome::After(after),
        Ok(None) => Outcome::Done,
        Err(error) => {
            tracing::warn!(%error, "daemonset controller");
            Outcome::Retry
        }
    }
}

fn key_of(ds: &DaemonSet) -> String {
    format!(
        "{}/{}",
        ds.metadata.namespace.as_deref().unwrap_or_default(),
        ds.metadata.name.as_deref().unwrap_or_default()
    )
}

fn owned_by(meta: &ObjectMeta, uid: &str) -> bool {
    util::controller_of(meta).is_some_and(|r| r.uid == uid)
}

async fn reconcile(ds: &DaemonSet, state: &State) -> Result<Option<Duration>, Error> {
    let key = key_of(ds);
    let (Some(namespace), Some(uid)) = (ds.metadata.namespace.clone(), ds.metadata.uid.clone())
    else {
        return Ok(None);
    };
    let Some(spec) = ds.spec.as_ref() else {
        return Ok(None);
    };
    let nodes = state.nodes.state();
    let cached: Vec<Arc<Pod>> = state
        .pods
        .state()
        .into_iter()
        .filter(|p| {
            p.metadata.namespace.as_deref() == Some(namespace.as_str())
                && owned_by(&p.metadata, &uid)
        })
        .collect();
    let (pods, settled) = state.expectations.view(&uid, cached);
    let now = Timestamp::now();

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
    let (current, old) = record_history(state, ds, &key, &revisions).await?;
    let hash = current
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(CONTROLLER_REVISION_HASH_LABEL))
        .cloned()
        .unwrap_or_default();

    let by_node = plan::pods_by_node(&pods);
    let mut pending = !settled;
    if ds.metadata.deletion_timestamp.is_none() {
        let changes = plan::manage(ds, &nodes, &by_node, &hash, now);
        if !changes.is_empty() {
            apply_changes(state, ds, &key, &pods, &changes, &hash).await?;
            pending = true;
        } else if settled
            && spec
                .update_strategy
                .as_ref()
                .and_then(|u| u.type_.as_deref())
                .unwrap_or("RollingUpdate")
                == "RollingUpdate"
        {
            let changes = plan::rolling_update(ds, &nodes, &by_node, &hash, now);
            if !changes.is_empty() {
                apply_changes(state, ds, &key, &pods, &changes, &hash).await?;
                pending = true;
            }
        }
    }

    cleanup_history(state, ds, &key, &pods, &old).await?;
    let status = plan::status(ds, &nodes, &by_node, &hash, now);
    update_status(state, ds, &key, &status).await?;

    let min_ready = spec.min_ready_seconds.unwrap_or(0);
    Ok(Some(if pending {
        // Our writes come back as pod events; this is only a safety net.
        Duration::from_secs(5)
    } else if min_ready > 0 && status.number_ready != status.number_available.unwrap_or(0) {
        Duration::from_secs(min_ready as u64)
    } else {
        Duration::from_secs(300)
    }))
}

/// Upstream `ComputeHash` of the template: FNV-1a of it and the collision count.
fn template_hash(ds: &DaemonSet, collision_count: Option<i32>) -> String {
    let template = ds
        .spec
        .as_ref()
        .map(|s| serde_json::to_vec(&s.template).unwrap_or_default())
        .unwrap_or_default();
    let probe = collision_count.map(|c| c.to_string()).unwrap_or_default();
    util::safe_encode_string(&util::fnv32a(&[&template, probe.as_bytes()]).to_string())
}

/// Find or record the revision of the current template (upstream `constructHistory`): the
/// newest revision with its data, renumbered to be the newest if it was an older one.
/// Returns it and the other revisions.
async fn record_history(
    state: &State,
    ds: &DaemonSet,
    key: &str,
    revisions: &[Arc<ControllerRevision>],
) -> Result<(ControllerRevision, Vec<Arc<ControllerRevision>>), Error> {
    let namespace = ds.metadata.namespace.clone().unwrap_or_default();
    let api: Api<ControllerRevision> = Api::namespaced(state.client.clone(), &namespace);
    let template = ds
        .spec
        .as_ref()
        .map(|s| s.template.clone())
        .unwrap_or_default();
    let data = history::template_patch(&template);
    let max_revision = revisions.iter().map(|r| r.revision).max().unwrap_or(0);
    let (matching, old): (Vec<_>, Vec<_>) = revisions
        .iter()
        .cloned()
        .partition(|r| history::same_data(r, &data));
    // Duplicates of the current revision: keep the newest.
    let current = match matching.last() {
        Some(newest) => {
            for duplicate in &matching[..matching.len() - 1] {
                match api
                    .delete(&duplicate.name_any(), &DeleteParams::default())
                    .await
                {
                    Ok(_) | Err(kube::Error::Api(_)) => {}
                    Err(source) => {
                        return Err(Error::Api {
                            key: key.into(),
                            action: format!("deleting duplicate revision {}", duplicate.name_any()),
                            source,
                        });
                    }
                }
            }
            if newest.revision < max_revision {
                let patch = json!({"revision": max_revision + 1});
                let updated = api
                    .patch(
                        &newest.name_any(),
                        &PatchParams::default(),
                        &Patch::Merge(&patch),
                    )
                    .await
                    .map_err(|source| Error::Api {
                        key: key.into(),
                        action: format!("renumbering revision {}", newest.name_any()),
                        source,
                    })?;
                tracing::info!(daemonset = %key, revision = %newest.name_any(), number = max_revision + 1, "reused revision");
                updated
            } else {
                (**newest).clone()
            }
        }
        None => {
            let collision_count = ds.status.as_ref().and_then(|s| s.collision_count);
            let hash = template_hash(ds, collision_count);
            let name = history::revision_name(&ds.name_any(), &hash);
            let mut labels = template
                .metadata
                .as_ref()
                .and_then(|m| m.labels.clone())
                .unwrap_or_default();
            labels.insert(CONTROLLER_REVISION_HASH_LABEL.into(), hash);
            let revision = ControllerRevision {
                metadata: ObjectMeta {
                    name: Some(name.clone()),
                    namespace: Some(namespace.clone()),
                    labels: Some(labels),
                    annotations: ds.metadata.annotations.clone(),
                    owner_references: util::controller_ref(ds).map(|r| vec![r]),
                    ..Default::default()
                },
                data: Some(RawExtension(data.clone())),
                revision: max_revision + 1,
            };
            match api.create(&PostParams::default(), &revision).await {
                Ok(created) => {
                    tracing::info!(daemonset = %key, revision = %name, number = max_revision + 1, "created revision");
                    created
                }
                Err(kube::Error::Api(e)) if e.code == 409 => {
                    let existing = api.get(&name).await.map_err(|source| Error::Api {
                        key: key.into(),
                        action: format!("reading revision {name}"),
                        source,
                    })?;
                    if history::same_data(&existing, &data) {
                        existing
                    } else {
                        let count = collision_count.unwrap_or(0) + 1;
                        let sets: Api<DaemonSet> =
                            Api::namespaced(state.client.clone(), &namespace);
                        let patch = json!({"status": {"collisionCount": count}});
                        sets.patch_status(
                            &ds.name_any(),
                            &PatchParams::default(),
                            &Patch::Merge(&patch),
                        )
                        .await
                        .map_err(|source| Error::Api {
                            key: key.into(),
                            action: "recording a hash collision".into(),
                            source,
                        })?;
                        return Err(Error::Collision {
                            key: key.into(),
                            name,
                            count,
                        });
                    }
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
    };
    Ok((current, old))
}

/// Delete old revisions no pod uses beyond revisionHistoryLimit, oldest first.
async fn cleanup_history(
    state: &State,
    ds: &DaemonSet,
    key: &str,
    pods: &[Arc<Pod>],
    old: &[Arc<ControllerRevision>],
) -> Result<(), Error> {
    let limit = ds
        .spec
        .as_ref()
        .and_then(|s| s.revision_history_limit)
        .unwrap_or(10)
        .max(0) as usize;
    if old.len() <= limit {
        return Ok(());
    }
    let live: HashSet<&str> = pods
        .iter()
        .filter_map(|p| {
            p.metadata
                .labels
                .as_ref()?
                .get(CONTROLLER_REVISION_HASH_LABEL)
        })
        .map(String::as_str)
        .collect();
    let api: Api<ControllerRevision> = Api::namespaced(
        state.client.clone(),
        ds.metadata.namespace.as_deref().unwrap_or_default(),
    );
    let mut to_delete = old.len() - limit;
    for revision in old {
        if to_delete == 0 {
            break;
        }
        let hash = revision
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(CONTROLLER_REVISION_HASH_LABEL))
            .map(String::as_str)
            .unwrap_or_default();
        if live.contains(hash) {
            continue;
        }
        match api
            .delete(&revision.name_any(), &DeleteParams::default())
            .await
        {
            Ok(_) => {
                tracing::info!(daemonset = %key, revision = %revision.name_any(), "deleted old revision")
            }
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(source) => {
                return Err(Error::Api {
                    key: key.into(),
                    action: format!("deleting revision {}", revision.name_any()),
                    source,
                });
            }
        }
        to_delete -= 1;
    }
    Ok(())
}

fn publish(
    state: &State,
    ds: &DaemonSet,
    type_: EventType,
    reason: &str,
    action: &str,
    note: String,
) {
    util::record_event(
        &state.client,
        &state.reporter,
        ds,
        type_,
        reason,
        action,
        note,
    );
}

/// Create pods on the nodes and delete the pods named, remembering each write until the
/// cache shows it.
async fn apply_changes(
    state: &State,
    ds: &DaemonSet,
    key: &str,
    pods: &[Arc<Pod>],
    changes: &plan::Changes,
    hash: &str,
) -> Result<(), Error> {
    let namespace = ds.metadata.namespace.clone().unwrap_or_default();
    let uid = ds.metadata.uid.clone().unwrap_or_default();
    let api: Api<Pod> = Api::namespaced(state.client.clone(), &namespace);
    let mut first_error = None;

    for name in &changes.delete {
        let Some(pod) = pods.iter().find(|p| p.metadata.name.as_ref() == Some(name)) else {
            continue;
        };
        if matches!(
            pod.status.as_ref().and_then(|s| s.phase.as_deref()),
            Some("Failed")
        ) {
            publish(
                state,
                ds,
                EventType::Warning,
                "FailedDaemonPod",
                "Delete",
                format!(
                    "Found failed daemon pod {namespace}/{name} on node {}, will try to kill it",
                    plan::target_node(pod).unwrap_or_default()
                ),
            );
        }
        let params = DeleteParams {
            preconditions: Some(Preconditions {
                uid: pod.metadata.uid.clone(),
                resource_version: None,
            }),
            ..Default::default()
        };
        match api.delete(name, &params).await {
            Ok(_) => {
                state.expectations.deleted(&uid, name);
                tracing::info!(daemonset = %key, pod = %name, "deleted pod");
                publish(
                    state,
                    ds,
                    EventType::Normal,
                    "SuccessfulDelete",
                    "Delete",
                    format!("Deleted pod: {name}"),
                );
            }
            Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => {}
            Err(source) => {
                publish(
                    state,
                    ds,
                    EventType::Warning,
                    "FailedDelete",
                    "Delete",
                    format!("Error deleting: {source}"),
                );
                first_error.get_or_insert(Error::Api {
                    key: key.into(),
                    action: format!("deleting pod {name}"),
                    source,
                });
            }
        }
    }

    let new_pods: Vec<(String, Pod)> = changes
        .create_on
        .iter()
        .map(|node| (node.clone(), plan::new_pod(ds, node, hash)))
        .collect();
    let creations = futures::stream::iter(new_pods.into_iter().map(|(node, pod)| {
        let api = api.clone();
        async move {
            let result = api.create(&PostParams::default(), &pod).await;
            (node, result)
        }
    }))
    .buffer_unordered(CREATE_BURST)
    .collect::<Vec<_>>()
    .await;
    for (node, result) in creations {
        match result {
            Ok(pod) => {
                let name = pod.name_any();
                tracing::info!(daemonset = %key, pod = %name, node = %node, "created pod");
                state.expectations.created(&uid, pod);
                publish(
                    state,
                    ds,
                    EventType::Normal,
                    "SuccessfulCreate",
                    "Create",
                    format!("Created pod: {name}"),
                );
            }
            Err(source) => {
                publish(
                    state,
                    ds,
                    EventType::Warning,
                    "FailedCreate",
                    "Create",
                    format!("Error creating: {source}"),
                );
                first_error.get_or_insert(Error::Api {
                    key: key.into(),
                    action: format!("creating a pod for node {node}"),
                    source,
                });
            }
        }
    }
    match first_error {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

async fn update_status(
    state: &State,
    ds: &DaemonSet,
    key: &str,
    status: &DaemonSetStatus,
) -> Result<(), Error> {
    let old = ds.status.clone().unwrap_or_default();
    let unchanged = old.desired_number_scheduled == status.desired_number_scheduled
        && old.current_number_scheduled == status.current_number_scheduled
        && old.number_misscheduled == status.number_misscheduled
        && old.number_ready == status.number_ready
        && old.number_available.unwrap_or(0) == status.number_available.unwrap_or(0)
        && old.number_unavailable.unwrap_or(0) == status.number_unavailable.unwrap_or(0)
        && old.updated_number_scheduled.unwrap_or(0)
            == status.updated_number_scheduled.unwrap_or(0)
        && old.observed_generation == status.observed_generation;
    if unchanged {
        return Ok(());
    }
    let api: Api<DaemonSet> = Api::namespaced(
        state.client.clone(),
        ds.metadata.namespace.as_deref().unwrap_or_default(),
    );
    let mut body = serde_json::to_value(status).unwrap_or_default();
    // The collision count is written by `record_history` only.
    if let Some(b) = body.as_object_mut() {
        b.remove("collisionCount");
    }
    let patch = json!({ "status": body });
    match api
        .patch_status(
            &ds.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await
    {
        Ok(_) => {
            tracing::debug!(daemonset = %key, desired = status.desired_number_scheduled, ready = status.number_ready, "updated status");
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
