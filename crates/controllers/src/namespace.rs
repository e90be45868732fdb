//! Namespace lifecycle: a namespace being deleted (deletionTimestamp set, phase Terminating,
//! `kubernetes` in spec.finalizers) has every namespaced object in it deleted; its status
//! conditions say what remains, as upstream's namespace controller does; once nothing
//! remains, the `kubernetes` finalizer is removed through the `finalize` subresource, which
//! lets the API server remove the namespace.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use api::resources::ResourceInfo;
use futures::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, NamespaceCondition};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams,
};
use kube::core::PartialObjectMeta;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;
use serde_json::json;

use crate::Context;

/// The finalizer the namespace controller owns in `spec.finalizers`.
pub const KUBERNETES_FINALIZER: &str = "kubernetes";

/// How often a terminating namespace is looked at while content remains.
const RECHECK: Duration = Duration::from_secs(1);

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("updating the status of namespace {namespace}: {source}")]
    Status {
        namespace: String,
        source: kube::Error,
    },
    #[error("finalizing namespace {namespace}: {source}")]
    Finalize {
        namespace: String,
        source: kube::Error,
    },
    #[error("deleting namespace {namespace}: {source}")]
    Delete {
        namespace: String,
        source: kube::Error,
    },
}

pub async fn run(ctx: Arc<Context>) -> anyhow::Result<()> {
    let namespaces: Api<Namespace> = Api::all(ctx.client.clone());
    Controller::new(namespaces, watcher::Config::default())
        .run(reconcile, error_policy, ctx)
        .for_each(|result| async move {
            if let Err(e) = result {
                tracing::debug!(error = %e, "namespace reconcile");
            }
        })
        .await;
    Ok(())
}

fn error_policy(_ns: Arc<Namespace>, error: &Error, _ctx: Arc<Context>) -> Action {
    tracing::warn!(%error, "namespace controller");
    Action::requeue(Duration::from_secs(2))
}

/// The namespaced resources whose objects a namespace deletion removes (each storage once).
pub fn namespaced_resources() -> Vec<&'static ResourceInfo> {
    api::resources::all()
        .iter()
        .filter(|r| r.namespaced && r.storage_version)
        .collect()
}

/// Whether the `kubernetes` finalizer is gone from spec.finalizers.
pub fn finalized(ns: &Namespace) -> bool {
    !ns.spec
        .as_ref()
        .and_then(|s| s.finalizers.as_ref())
        .is_some_and(|f| f.iter().any(|x| x == KUBERNETES_FINALIZER))
}

/// What deleting the content of a namespace left behind.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ContentTotals {
    /// `resource.group` → objects remaining.
    pub remaining: BTreeMap<String, usize>,
    /// finalizer → objects remaining that carry it.
    pub finalizers: BTreeMap<String, usize>,
    /// Errors deleting or listing content, one message a resource.
    pub errors: Vec<String>,
}

impl ContentTotals {
    pub fn done(&self) -> bool {
        self.remaining.values().all(|n| *n == 0) && self.errors.is_empty()
    }
}

const CONDITION_TYPES: [&str; 5] = [
    "NamespaceDeletionDiscoveryFailure",
    "NamespaceDeletionGroupVersionParsingFailure",
    "NamespaceDeletionContentFailure",
    "NamespaceContentRemaining",
    "NamespaceFinalizersRemaining",
];

/// The (status, reason, message) of each condition type, as upstream words them.
fn desired_condition(kind: &str, totals: &ContentTotals) -> (&'static str, &'static str, String) {
    match kind {
        "NamespaceDeletionDiscoveryFailure" => (
            "False",
            "ResourcesDiscovered",
            "All resources successfully discovered".into(),
        ),
        "NamespaceDeletionGroupVersionParsingFailure" => (
            "False",
            "ParsedGroupVersions",
            "All legacy kube types successfully parsed".into(),
        ),
        "NamespaceDeletionContentFailure" if !totals.errors.is_empty() => {
            let mut errors = totals.errors.clone();
            errors.sort();
            (
                "True",
                "ContentDeletionFailed",
                format!(
                    "Failed to delete all resource types, {} remaining: {}",
                    errors.len(),
                    errors.join(", ")
                ),
            )
        }
        "NamespaceDeletionContentFailure" => (
            "False",
            "ContentDeleted",
            "All content successfully deleted, may be waiting on finalization".into(),
        ),
        "NamespaceContentRemaining" if totals.remaining.values().any(|n| *n > 0) => {
            let parts: Vec<String> = totals
                .remaining
                .iter()
                .filter(|(_, n)| **n > 0)
                .map(|(resource, n)| format!("{resource} has {n} resource instances"))
                .collect();
            (
                "True",
                "SomeResourcesRemain",
                format!("Some resources are remaining: {}", parts.join(", ")),
            )
        }
        "NamespaceFinalizersRemaining" if totals.finalizers.values().any(|n| *n > 0) => {
            let parts: Vec<String> = totals
                .finalizers
                .iter()
                .filter(|(_, n)| **n > 0)
                .map(|(finalizer, n)| format!("{finalizer} in {n} resource instances"))
                .collect();
            (
                "True",
                "SomeFinalizersRemain",
                format!("Some finalizers are remaining: {}", parts.join(", ")),
            )
        }
        _ => (
            "False",
            "ContentRemoved",
            "All content successfully removed".into(),
        ),
    }
}

/// The namespace's conditions after a round of content deletion; None when nothing changed.
/// lastTransitionTime moves only when a condition's status does.
pub fn updated_conditions(
    existing: &[NamespaceCondition],
    totals: &ContentTotals,
    now: Timestamp,
) -> Option<Vec<NamespaceCondition>> {
    let mut conditions = existing.to_vec();
    let mut changed = false;
    for kind in CONDITION_TYPES {
        let (status, reason, message) = desired_condition(kind, totals);
        match conditions.iter_mut().find(|c| c.type_ == kind) {
            None => {
                conditions.push(NamespaceCondition {
                    type_: kind.into(),
                    status: status.into(),
                    reason: Some(reason.into()),
                    message: Some(message),
                    last_transition_time: Some(Time(now)),
                });
                changed = true;
            }
            Some(c) => {
                if c.status != status
                    || c.reason.as_deref() != Some(reason)
                    || c.message.as_deref() != Some(message.as_str())
                {
                    if c.status != status {
                        c.last_transition_time = Some(Time(now));
                    }
                    c.status = status.into();
                    c.reason = Some(reason.into());
                    c.message = Some(message);
                    changed = true;
                }
            }
        }
    }
    changed.then_some(conditions)
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

/// Delete everything in the namespace and count what is left.
async fn delete_all_content(client: &kube::Client, namespace: &str) -> ContentTotals {
    let mut totals = ContentTotals::default();
    for row in namespaced_resources() {
        let ar = api_resource(row);
        let metadata: Api<PartialObjectMeta<DynamicObject>> =
            Api::namespaced_with(client.clone(), namespace, &ar);
        let key = format!("{}.{}", row.plural, row.group);
        let listed = match metadata.list_metadata(&ListParams::default()).await {
            Ok(list) => list.items,
            Err(e) => {
                totals.errors.push(format!("{key}: {e}"));
                continue;
            }
        };
        // Only what is not already on its way out needs a delete.
        if listed
            .iter()
            .any(|o| o.metadata.deletion_timestamp.is_none())
        {
            let objects: Api<DynamicObject> = Api::namespaced_with(client.clone(), namespace, &ar);
            match objects
                .delete_collection(&DeleteParams::background(), &ListParams::default())
                .await
            {
                Ok(_) => tracing::info!(namespace, resource = %key, "deleted namespace content"),
                Err(e) => {
                    totals.errors.push(format!("{key}: {e}"));
                    continue;
                }
            }
        }
        let left = if listed.is_empty() {
            Vec::new()
        } else {
            match metadata.list_metadata(&ListParams::default()).await {
                Ok(list) => list.items,
                Err(e) => {
                    totals.errors.push(format!("{key}: {e}"));
                    continue;
                }
            }
        };
        if !left.is_empty() {
            totals.remaining.insert(key, left.len());
        }
        for object in &left {
            for finalizer in object.metadata.finalizers.iter().flatten() {
                *totals.finalizers.entry(finalizer.clone()).or_insert(0) += 1;
            }
        }
    }
    totals
}

async fn reconcile(ns: Arc<Namespace>, ctx: Arc<Context>) -> Result<Action, Error> {
    let Some(name) = ns.metadata.name.clone() else {
        return Ok(Action::await_change());
    };
    if ns.metadata.deletion_timestamp.is_none() || finalized(&ns) {
        return Ok(Action::await_change());
    }
    let namespaces: Api<Namespace> = Api::all(ctx.client.clone());
    let totals = delete_all_content(&ctx.client, &name).await;
    let existing = ns
        .status
        .as_ref()
        .and_then(|s| s.conditions.clone())
        .unwrap_or_default();
    if let Some(conditions) = updated_conditions(&existing, &totals, Timestamp::now()) {
        let patch = json!({"status": {"conditions": conditions}});
        match namespaces
            .patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 404 => return Ok(Action::await_change()),
            Err(source) => {
                return Err(Error::Status {
                    namespace: name,
                    source,
                });
            }
        }
    }
    if !totals.done() {
        tracing::debug!(namespace = %name, remaining = ?totals.remaining, "namespace content remains");
        return Ok(Action::requeue(RECHECK));
    }
    finalize(&namespaces, &name).await?;
    Ok(Action::await_change())
}

/// Remove `kubernetes` from spec.finalizers; if nothing else holds the namespace and it is
/// still there, delete it again so the API server removes it.
async fn finalize(namespaces: &Api<Namespace>, name: &str) -> Result<(), Error> {
    let Some(mut current) = namespaces
        .get_opt(name)
        .await
        .map_err(|source| Error::Finalize {
            namespace: name.into(),
            source,
        })?
    else {
        return Ok(());
    };
    if !finalized(&current) {
        if let Some(f) = current.spec.as_mut().and_then(|s| s.finalizers.as_mut()) {
            f.retain(|x| x != KUBERNETES_FINALIZER);
        }
        match namespaces
            .replace_subresource("finalize", name, &PostParams::default(), &current)
            .await
        {
            Ok(_) => tracing::info!(namespace = name, "namespace finalized"),
            Err(kube::Error::Api(e)) if e.code == 404 => return Ok(()),
            Err(source) => {
                return Err(Error::Finalize {
                    namespace: name.into(),
                    source,
                });
            }
        }
    }
    let Some(after) = namespaces
        .get_opt(name)
        .await
        .map_err(|source| Error::Finalize {
            namespace: name.into(),
            source,
        })?
    else {
        return Ok(());
    };
    let spec_empty = after
        .spec
        .as_ref()
        .and_then(|s| s.finalizers.as_ref())
        .is_none_or(|f| f.is_empty());
    let meta_empty = after
        .metadata
        .finalizers
        .as_ref()
        .is_none_or(|f| f.is_empty());
    if spec_empty && meta_empty {
        match namespaces.delete(name, &DeleteParams::default()).await {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(source) => {
                return Err(Error::Delete {
                    namespace: name.into(),
                    source,
                });
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::NamespaceSpec;

    fn condition<'a>(list: &'a [NamespaceCondition], kind: &str) -> &'a NamespaceCondition {
        list.iter().find(|c| c.type_ == kind).expect(kind)
    }

    #[test]
    fn remaining_content_is_reported_as_upstream() {
        let mut totals = ContentTotals::default();
        totals.remaining.insert("pods.".into(), 2);
        totals.remaining.insert("configmaps.".into(), 1);
        totals.finalizers.insert("example.com/hold".into(), 1);
        let now = Timestamp::now();
        let conditions = updated_conditions(&[], &totals, now).unwrap();
        assert_eq!(conditions.len(), 5);
        let remaining = condition(&conditions, "NamespaceContentRemaining");
        assert_eq!(remaining.status, "True");
        assert_eq!(remaining.reason.as_deref(), Some("SomeResourcesRemain"));
        assert_eq!(
            remaining.message.as_deref(),
            Some(
                "Some resources are remaining: configmaps. has 1 resource instances, pods. has 2 resource instances"
            )
        );
        let finalizers = condition(&conditions, "NamespaceFinalizersRemaining");
        assert_eq!(
            finalizers.message.as_deref(),
            Some("Some finalizers are remaining: example.com/hold in 1 resource instances")
        );
        let failure = condition(&conditions, "NamespaceDeletionContentFailure");
        assert_eq!(failure.status, "False");
        assert_eq!(failure.reason.as_deref(), Some("ContentDeleted"));
        // The same totals again change nothing.
        assert!(updated_conditions(&conditions, &totals, now).is_none());
        // Content gone: the condition flips to False with upstream's ok reason.
        let later = Timestamp::from_second(now.as_second() + 10).unwrap();
        let done = updated_conditions(&conditions, &ContentTotals::default(), later).unwrap();
        let remaining = condition(&done, "NamespaceContentRemaining");
        assert_eq!(remaining.status, "False");
        assert_eq!(remaining.reason.as_deref(), Some("ContentRemoved"));
        assert_eq!(remaining.last_transition_time, Some(Time(later)));
        let discovery = condition(&done, "NamespaceDeletionDiscoveryFailure");
        assert_eq!(discovery.last_transition_time, Some(Time(now)));
    }

    #[test]
    fn delete_errors_become_a_content_failure() {
        let totals = ContentTotals {
            errors: vec!["pods.: boom".into()],
            ..Default::default()
        };
        assert!(!totals.done());
        let conditions = updated_conditions(&[], &totals, Timestamp::now()).unwrap();
        let failure = condition(&conditions, "NamespaceDeletionContentFailure");
        assert_eq!(failure.status, "True");
        assert_eq!(failure.reason.as_deref(), Some("ContentDeletionFailed"));
        assert_eq!(
            failure.message.as_deref(),
            Some("Failed to delete all resource types, 1 remaining: pods.: boom")
        );
    }

    #[test]
    fn finalized_means_no_kubernetes_finalizer() {
        let mut ns = Namespace::default();
        assert!(finalized(&ns));
        ns.spec = Some(NamespaceSpec {
            finalizers: Some(vec!["kubernetes".into()]),
        });
        assert!(!finalized(&ns));
        ns.spec = Some(NamespaceSpec {
            finalizers: Some(vec!["example.com/other".into()]),
        });
        assert!(finalized(&ns));
    }

    #[test]
    fn every_namespaced_storage_resource_is_emptied() {
        let resources = namespaced_resources();
        assert!(resources.iter().all(|r| r.namespaced));
        for plural in [
            "pods",
            "configmaps",
            "secrets",
            "deployments",
            "events",
            "endpointslices",
        ] {
            assert!(resources.iter().any(|r| r.plural == plural), "{plural}");
        }
        assert!(!resources.iter().any(|r| r.plural == "namespaces"));
    }
}
