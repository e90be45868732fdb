//! Garbage collector: deletes objects whose owners are gone, as upstream's does.
//!
//! Metadata-only watches over every resource the API serves build a graph of owners and
//! dependents ([`graph`]). Workers then act on single objects:
//! - attempt to delete: an object whose every owner is gone (verified by a GET of the owner by
//!   name, a different uid counting as gone) is deleted, with the propagation its own
//!   finalizers ask for; an owner being deleted in the foreground (`foregroundDeletion`
//!   finalizer) has its dependents deleted and loses the finalizer once no dependent with
//!   `blockOwnerDeletion` remains, which lets the API server remove it;
//! - attempt to orphan: an owner being deleted with the `orphan` finalizer has its reference
//!   removed from every dependent, then loses the finalizer.
//!
//! Adoption is left to the controllers that own objects.

pub mod graph;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use api::resources::ResourceInfo;
use futures::StreamExt;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, Patch, PatchParams, Preconditions,
    PropagationPolicy,
};
use kube::core::PartialObjectMeta;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use serde_json::json;

use crate::Context;
use crate::util::{Outcome, WorkQueue, run_workers};
use graph::{
    Decision, FOREGROUND_FINALIZER, Graph, Identity, ORPHAN_FINALIZER, Observed, OwnerState,
    Propagation, Work,
};

/// Workers for each queue, as upstream's `--concurrent-gc-syncs` default.
const WORKERS: usize = 20;
/// Owner uids verified absent; uids are never reused, so the answer stays right.
const ABSENT_CACHE_SIZE: usize = 10_000;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("getting {identity}: {source}")]
    Get {
        identity: String,
        source: kube::Error,
    },
    #[error("deleting {identity}: {source}")]
    Delete {
        identity: String,
        source: kube::Error,
    },
    #[error("patching {identity}: {source}")]
    Patch {
        identity: String,
        source: kube::Error,
    },
    #[error("patching {identity}: too many conflicts")]
    Conflicts { identity: String },
    #[error(
        "owner reference of {dependent} to {api_version}, Kind={kind} cannot be resolved to a served resource"
    )]
    Unresolvable {
        dependent: String,
        api_version: String,
        kind: String,
    },
}

/// The resources the collector watches: every served storage version but events, which
/// upstream ignores too.
pub fn watched_resources() -> Vec<&'static ResourceInfo> {
    api::resources::all()
        .iter()
        .filter(|r| r.storage_version && r.plural != "events")
        .collect()
}

/// The served resource for an owner reference's apiVersion and kind.
pub fn resolve(api_version: &str, kind: &str) -> Option<&'static ResourceInfo> {
    let (group, version) = match api_version.split_once('/') {
        Some((g, v)) => (g, v),
        None => ("", api_version),
    };
    let rows = api::resources::all()
        .iter()
        .filter(|r| r.group == group && r.kind == kind);
    let mut best = None;
    for row in rows {
        if row.version == version {
            return Some(row);
        }
        if best.is_none() || row.storage_version {
            best = Some(row);
        }
    }
    best
}

fn api_resource(row: &ResourceInfo) -> ApiResource {
    ApiResource {
        group: row.group.into(),
        version: row.version.into(),
        api_version: row.api_version(),
        kind: row.kind.into(),
        plural: row.plural.into(),
    }
}

struct Gc {
    client: kube::Client,
    graph: Mutex<Graph>,
    watched: Vec<&'static ResourceInfo>,
    attempt_to_delete: Arc<WorkQueue<String>>,
    attempt_to_orphan: Arc<WorkQueue<String>>,
    absent: Mutex<HashSet<String>>,
}

pub async fn run(ctx: Arc<Context>) -> anyhow::Result<()> {
    let gc = Arc::new(Gc {
        client: ctx.client.clone(),
        graph: Mutex::new(Graph::new()),
        watched: watched_resources(),
        attempt_to_delete: WorkQueue::new(),
        attempt_to_orphan: WorkQueue::new(),
        absent: Mutex::new(HashSet::new()),
    });
    let streams = gc.watched.iter().enumerate().map(|(index, row)| {
        let api: Api<PartialObjectMeta<DynamicObject>> =
            Api::all_with(gc.client.clone(), &api_resource(row));
        watcher::watcher(api, watcher::Config::default())
            .default_backoff()
            .map(move |event| (index, event))
            .boxed()
    });
    let mut events = futures::stream::select_all(streams);
    let mut synced = vec![false; gc.watched.len()];
    let mut listing: Vec<Option<HashSet<String>>> = vec![None; gc.watched.len()];
    let mut workers: Option<tokio::task::JoinSet<()>> = None;
    while let Some((index, event)) = events.next().await {
        let work = match event {
            Ok(Event::Init) => {
                listing[index] = Some(HashSet::new());
                Vec::new()
            }
            Ok(Event::InitApply(obj)) => {
                if let Some(seen) = listing[index].as_mut()
                    && let Some(uid) = obj.metadata.uid.clone()
                {
                    seen.insert(uid);
                }
                gc.observe(index, obj)
            }
            Ok(Event::InitDone) => {
                // Objects deleted while the watch was down are gone from the new listing.
                let seen = listing[index].take().unwrap_or_default();
                let mut graph = gc.lock_graph();
                let mut work = Vec::new();
                for uid in graph.uids_of_resource(index) {
                    if !seen.contains(&uid) {
                        work.extend(graph.remove(&uid));
                    }
                }
                synced[index] = true;
                work
            }
            Ok(Event::Apply(obj)) => gc.observe(index, obj),
            Ok(Event::Delete(obj)) => match obj.metadata.uid.as_deref() {
                Some(uid) => gc.lock_graph().remove(uid),
                None => Vec::new(),
            },
            Err(e) => {
                tracing::warn!(resource = gc.watched[index].group_resource(), error = %e, "garbage collector watch");
                Vec::new()
            }
        };
        gc.enqueue(work);
        // Workers start once every resource has been listed, so "no dependents" is believed
        // only from a complete graph.
        if workers.is_none() && synced.iter().all(|s| *s) {
            tracing::info!(
                nodes = gc.lock_graph().len(),
                "garbage collector synced; starting workers"
            );
            let mut set = tokio::task::JoinSet::new();
            let g = gc.clone();
            set.spawn(run_workers(
                gc.attempt_to_delete.clone(),
                WORKERS,
                move |uid| {
                    let g = g.clone();
                    async move { g.attempt_to_delete(uid).await }
                },
            ));
            let g = gc.clone();
            set.spawn(run_workers(
                gc.attempt_to_orphan.clone(),
                WORKERS,
                move |uid| {
                    let g = g.clone();
                    async move { g.attempt_to_orphan(uid).await }
                },
            ));
            workers = Some(set);
        }
    }
    anyhow::bail!("garbage collector watches ended")
}

fn outcome(result: Result<(), Error>) -> Outcome {
    match result {
        Ok(()) => Outcome::Done,
        Err(e) => {
            tracing::warn!(error = %e, "garbage collector");
            Outcome::Retry
        }
    }
}

fn has_finalizer(meta: &PartialObjectMeta<DynamicObject>, finalizer: &str) -> bool {
    meta.metadata
        .finalizers
        .as_ref()
        .is_some_and(|f| f.iter().any(|x| x == finalizer))
}

fn is_not_found(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 404)
}

fn is_conflict(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 409)
}

impl Gc {
    fn lock_graph(&self) -> std::sync::MutexGuard<'_, Graph> {
        self.graph.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn enqueue(&self, work: Vec<Work>) {
        for w in work {
            match w {
                Work::AttemptToDelete(uid) => self.attempt_to_delete.add(uid),
                Work::AttemptToOrphan(uid) => self.attempt_to_orphan.add(uid),
            }
        }
    }

    fn observe(&self, index: usize, obj: PartialObjectMeta<DynamicObject>) -> Vec<Work> {
        let row = self.watched[index];
        let meta = obj.metadata;
        let (Some(name), Some(uid)) = (meta.name, meta.uid) else {
            return Vec::new();
        };
        let namespace = meta.namespace.filter(|_| row.namespaced);
        let observed = Observed {
            identity: Identity {
                api_version: row.api_version(),
                kind: row.kind.into(),
                namespace: namespace.clone(),
                name,
                uid,
            },
            resource: index,
            owners: meta.owner_references.unwrap_or_default(),
            being_deleted: meta.deletion_timestamp.is_some(),
            finalizers: meta.finalizers.unwrap_or_default(),
        };
        self.lock_graph().observe(observed, |owner| {
            let namespaced = resolve(&owner.api_version, &owner.kind).is_none_or(|r| r.namespaced);
            if namespaced { namespace.clone() } else { None }
        })
    }

    fn api_for(&self, identity: &Identity) -> Option<(Api<DynamicObject>, &'static ResourceInfo)> {
        let row = resolve(&identity.api_version, &identity.kind)?;
        let ar = api_resource(row);
        let api = match (&identity.namespace, row.namespaced) {
            (Some(ns), true) => Api::namespaced_with(self.client.clone(), ns, &ar),
            _ => Api::all_with(self.client.clone(), &ar),
        };
        Some((api, row))
    }

    /// The object as the API server has it now; None when it is gone or has another uid.
    async fn get_current(
        &self,
        identity: &Identity,
    ) -> Result<Option<PartialObjectMeta<DynamicObject>>, Error> {
        let Some((api, row)) = self.api_for(identity) else {
            return Err(Error::Unresolvable {
                dependent: identity.to_string(),
                api_version: identity.api_version.clone(),
                kind: identity.kind.clone(),
            });
        };
        // A namespaced kind named without a namespace (referenced from a cluster-scoped
        // object) cannot exist.
        if row.namespaced && identity.namespace.is_none() {
            return Ok(None);
        }
        match api.get_metadata_opt(&identity.name).await {
            Ok(Some(obj)) if obj.metadata.uid.as_deref() == Some(identity.uid.as_str()) => {
                Ok(Some(obj))
            }
            Ok(_) => Ok(None),
            Err(source) => Err(Error::Get {
                identity: identity.to_string(),
                source,
            }),
        }
    }

    /// Forget a node found absent; its dependents are looked at next.
    fn absent_found(&self, uid: &str) {
        let work = self.lock_graph().remove(uid);
        self.enqueue(work);
    }

    async fn attempt_to_delete(&self, uid: String) -> Outcome {
        outcome(self.attempt_to_delete_item(&uid).await)
    }

    async fn attempt_to_delete_item(&self, uid: &str) -> Result<(), Error> {
        let (identity, is_virtual, being_deleted, deleting_dependents) = {
            let graph = self.lock_graph();
            let Some(node) = graph.get(uid) else {
                return Ok(());
            };
            (
                node.identity.clone(),
                node.is_virtual,
                node.being_deleted,
                node.deleting_dependents,
            )
        };
        // Being deleted already, and not waiting on its dependents: nothing to do.
        if being_deleted && !deleting_dependents {
            return Ok(());
        }
        let Some(latest) = self.get_current(&identity).await? else {
            tracing::debug!(object = %identity, virtual_node = is_virtual, "object is gone");
            self.absent_found(uid);
            return Ok(());
        };
        if deleting_dependents {
            return self.process_deleting_dependents(&identity).await;
        }
        let references = latest.metadata.owner_references.clone().unwrap_or_default();
        if references.is_empty() {
            return Ok(());
        }
        let mut classified = Vec::with_capacity(references.len());
        for reference in references {
            let state = self.owner_state(&identity, &reference).await?;
            classified.push((reference, state));
        }
        let (has_dependents, a_dependent_is_deleting_dependents) = {
            let graph = self.lock_graph();
            let deps = graph.dependents(uid);
            let deleting = deps
                .iter()
                .any(|d| graph.get(d).is_some_and(|n| n.deleting_dependents));
            (!deps.is_empty(), deleting)
        };
        let finalizers = latest.metadata.finalizers.clone().unwrap_or_default();
        match graph::decide(
            &classified,
            has_dependents,
            a_dependent_is_deleting_dependents,
            &finalizers,
        ) {
            Decision::Keep => Ok(()),
            Decision::RemoveReferences(uids) => {
                tracing::info!(object = %identity, owners = ?uids, "removing references to owners that are gone or waiting");
                self.remove_references(&identity, &uids).await
            }
            Decision::UnblockThenDelete(uids) => {
                self.unblock_references(&identity, &uids).await?;
                self.delete(&identity, Propagation::Foreground).await
            }
            Decision::Delete(policy) => self.delete(&identity, policy).await,
        }
    }

    async fn owner_state(
        &self,
        dependent: &Identity,
        reference: &OwnerReference,
    ) -> Result<OwnerState, Error> {
        if self
            .absent
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(&reference.uid)
        {
            return Ok(OwnerState::Absent);
        }
        let Some(row) = resolve(&reference.api_version, &reference.kind) else {
            return Err(Error::Unresolvable {
                dependent: dependent.to_string(),
                api_version: reference.api_version.clone(),
                kind: reference.kind.clone(),
            });
        };
        // A cluster-scoped object cannot be owned by a namespaced one.
        if row.namespaced && dependent.namespace.is_none() {
            return Ok(OwnerState::Absent);
        }
        let owner = Identity {
            api_version: reference.api_version.clone(),
            kind: reference.kind.clone(),
            namespace: if row.namespaced {
                dependent.namespace.clone()
            } else {
                None
            },
            name: reference.name.clone(),
            uid: reference.uid.clone(),
        };
        match self.get_current(&owner).await? {
            None => {
                let mut absent = self.absent.lock().unwrap_or_else(|e| e.into_inner());
                if absent.len() >= ABSENT_CACHE_SIZE {
                    absent.clear();
                }
                absent.insert(reference.uid.clone());
                Ok(OwnerState::Absent)
            }
            Some(meta)
                if meta.metadata.deletion_timestamp.is_some()
                    && has_finalizer(&meta, FOREGROUND_FINALIZER) =>
            {
                Ok(OwnerState::WaitingForDependentsDeletion)
            }
            Some(_) => Ok(OwnerState::Solid),
        }
    }

    async fn delete(&self, identity: &Identity, policy: Propagation) -> Result<(), Error> {
        let Some((api, _)) = self.api_for(identity) else {
            return Ok(());
        };
        let params = DeleteParams {
            propagation_policy: Some(match policy {
                Propagation::Background => PropagationPolicy::Background,
                Propagation::Foreground => PropagationPolicy::Foreground,
                Propagation::Orphan => PropagationPolicy::Orphan,
            }),
            preconditions: Some(Preconditions {
                uid: Some(identity.uid.clone()),
                resource_version: None,
            }),
            ..Default::default()
        };
        tracing::info!(object = %identity, propagation = policy.as_str(), "deleting object whose owners are gone");
        match api.delete(&identity.name, &params).await {
            Ok(_) => Ok(()),
            // Gone already, or replaced by another object of that name.
            Err(e) if is_not_found(&e) || is_conflict(&e) => Ok(()),
            Err(source) => Err(Error::Delete {
                identity: identity.to_string(),
                source,
            }),
        }
    }

    /// Rewrite the object's ownerReferences with `edit`, guarded by its resourceVersion,
    /// retrying on conflicts.
    async fn edit_references(
        &self,
        identity: &Identity,
        edit: impl Fn(&mut Vec<OwnerReference>) -> bool,
    ) -> Result<(), Error> {
        let Some((api, _)) = self.api_for(identity) else {
            return Ok(());
        };
        for _ in 0..5 {
            let Some(current) = self.get_current(identity).await? else {
                return Ok(());
            };
            let mut references = current
                .metadata
                .owner_references
                .clone()
                .unwrap_or_default();
            if !edit(&mut references) {
                return Ok(());
            }
            let value = if references.is_empty() {
                serde_json::Value::Null
            } else {
                json!(references)
            };
            let patch = json!({"metadata": {
                "ownerReferences": value,
                "resourceVersion": current.metadata.resource_version,
            }});
            match api
                .patch_metadata(
                    &identity.name,
                    &PatchParams::default(),
                    &Patch::Merge(&patch),
                )
                .await
            {
                Ok(_) => return Ok(()),
                Err(e) if is_not_found(&e) => return Ok(()),
                Err(e) if is_conflict(&e) => continue,
                Err(source) => {
                    return Err(Error::Patch {
                        identity: identity.to_string(),
                        source,
                    });
                }
            }
        }
        Err(Error::Conflicts {
            identity: identity.to_string(),
        })
    }

    async fn remove_references(&self, identity: &Identity, uids: &[String]) -> Result<(), Error> {
        self.edit_references(identity, |refs| {
            let before = refs.len();
            refs.retain(|r| !uids.contains(&r.uid));
            refs.len() != before
        })
        .await
    }

    async fn unblock_references(&self, identity: &Identity, uids: &[String]) -> Result<(), Error> {
        self.edit_references(identity, |refs| {
            let mut changed = false;
            for r in refs.iter_mut().filter(|r| uids.contains(&r.uid)) {
                if r.block_owner_deletion == Some(true) {
                    r.block_owner_deletion = Some(false);
                    changed = true;
                }
            }
            changed
        })
        .await
    }

    /// Remove `finalizer` from the object, guarded by its resourceVersion; the API server
    /// deletes an object being deleted once its last finalizer is gone.
    async fn remove_finalizer(&self, identity: &Identity, finalizer: &str) -> Result<(), Error> {
        let Some((api, _)) = self.api_for(identity) else {
            return Ok(());
        };
        for _ in 0..5 {
            let Some(current) = self.get_current(identity).await? else {
                return Ok(());
            };
            let mut finalizers = current.metadata.finalizers.clone().unwrap_or_default();
            if !finalizers.iter().any(|f| f == finalizer) {
                return Ok(());
            }
            finalizers.retain(|f| f != finalizer);
            let patch = json!({"metadata": {
                "finalizers": finalizers,
                "resourceVersion": current.metadata.resource_version,
            }});
            match api
                .patch_metadata(
                    &identity.name,
                    &PatchParams::default(),
                    &Patch::Merge(&patch),
                )
                .await
            {
                Ok(_) => {
                    tracing::info!(object = %identity, finalizer, "removed finalizer");
                    return Ok(());
                }
                Err(e) if is_not_found(&e) => return Ok(()),
                Err(e) if is_conflict(&e) => continue,
                Err(source) => {
                    return Err(Error::Patch {
                        identity: identity.to_string(),
                        source,
                    });
                }
            }
        }
        Err(Error::Conflicts {
            identity: identity.to_string(),
        })
    }

    /// An owner in foreground deletion: finished once no blocking dependent remains;
    /// otherwise its blocking dependents are (again) asked to go.
    async fn process_deleting_dependents(&self, owner: &Identity) -> Result<(), Error> {
        let pending: Vec<String> = {
            let graph = self.lock_graph();
            graph
                .blocking_dependents(&owner.uid)
                .into_iter()
                .filter(|d| graph.get(d).is_some_and(|n| !n.deleting_dependents))
                .collect()
        };
        let blocking = self.lock_graph().blocking_dependents(&owner.uid);
        if blocking.is_empty() {
            return self.remove_finalizer(owner, FOREGROUND_FINALIZER).await;
        }
        tracing::debug!(object = %owner, blocking = blocking.len(), "waiting for blocking dependents");
        for uid in pending {
            self.attempt_to_delete.add(uid);
        }
        Ok(())
    }

    async fn attempt_to_orphan(&self, uid: String) -> Outcome {
        outcome(self.orphan_dependents(&uid).await)
    }

    async fn orphan_dependents(&self, uid: &str) -> Result<(), Error> {
        let (owner, dependents) = {
            let graph = self.lock_graph();
            let Some(node) = graph.get(uid) else {
                return Ok(());
            };
            let dependents: Vec<Identity> = graph
                .dependents(uid)
                .iter()
                .filter_map(|d| graph.get(d).map(|n| n.identity.clone()))
                .collect();
            (node.identity.clone(), dependents)
        };
        for dependent in &dependents {
            self.remove_references(dependent, &[uid.to_string()])
                .await?;
        }
        tracing::info!(object = %owner, dependents = dependents.len(), "orphaned dependents");
        self.remove_finalizer(&owner, ORPHAN_FINALIZER).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_work_queue_dedups_and_holds_keys_in_process() {
        let queue: Arc<WorkQueue<String>> = WorkQueue::new();
        queue.add("a".into());
        queue.add("a".into());
        queue.add("b".into());
        assert_eq!(queue.len(), 2);
        let a = queue.get().await;
        assert_eq!(a, "a");
        // Added again while being processed: handed out only after done.
        queue.add("a".into());
        assert_eq!(queue.get().await, "b");
        assert!(queue.is_empty());
        queue.done(&"b".to_string());
        queue.done(&a);
        assert_eq!(queue.len(), 1);
        assert_eq!(queue.get().await, "a");
        queue.done(&a);
        assert!(queue.is_empty());
    }

    #[test]
    fn owner_kinds_resolve_to_served_resources() {
        assert_eq!(resolve("v1", "ConfigMap").unwrap().plural, "configmaps");
        assert_eq!(
            resolve("apps/v1", "ReplicaSet").unwrap().plural,
            "replicasets"
        );
        // Another version of a served group/kind still resolves.
        assert_eq!(
            resolve("apps/v1beta2", "Deployment").unwrap().plural,
            "deployments"
        );
        assert!(resolve("example.com/v1", "Widget").is_none());
        assert!(!resolve("v1", "Node").unwrap().namespaced);
    }

    #[test]
    fn events_are_not_watched_and_every_storage_resource_is() {
        let watched = watched_resources();
        assert!(watched.iter().all(|r| r.plural != "events"));
        assert!(watched.iter().any(|r| r.plural == "pods"));
        assert!(watched.iter().any(|r| r.plural == "namespaces"));
        let mut storage: Vec<&str> = watched.iter().map(|r| r.storage).collect();
        let before = storage.len();
        storage.sort();
        storage.dedup();
        assert_eq!(before, storage.len(), "a storage resource is watched twice");
    }
}
