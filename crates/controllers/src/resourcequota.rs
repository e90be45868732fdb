//! ResourceQuota controller: keeps each quota's `status.hard` equal to its spec and recomputes
//! `status.used` from the objects that exist, on changes and every [`RESYNC`], so that usage
//! goes down when objects are deleted or pods finish. Admission charges quotas on create; this
//! controller is what gives the charge back. Usage is computed by `api::quota`, the same code
//! admission charges with.

use std::sync::Arc;
use std::time::Duration;

use api::quota::{self, ResourceList};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{
    ConfigMap, PersistentVolumeClaim, Pod, ResourceQuota, ResourceQuotaStatus, Secret, Service,
};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, ListParams, PostParams};
use kube::core::{ApiResource, DynamicObject, GroupVersionKind};
use kube::runtime::controller::{self, Action, ReconcileRequest};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Resource, ResourceExt};

use crate::Context;

/// How often every quota is recounted even when nothing was seen to change (objects of
/// resources this controller does not watch, pods passing their deletion grace period).
pub const RESYNC: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("listing {resource} in namespace {namespace} for quota {quota}: {source}")]
    List {
        resource: String,
        namespace: String,
        quota: String,
        source: kube::Error,
    },
    #[error("updating the status of ResourceQuota {namespace}/{quota}: {source}")]
    UpdateStatus {
        namespace: String,
        quota: String,
        source: kube::Error,
    },
}

pub async fn run(ctx: Arc<Context>) -> anyhow::Result<()> {
    let client = ctx.client.clone();
    let (quotas, writer) = reflector::store::<ResourceQuota>();
    let quota_events = reflector::reflector(
        writer,
        watcher(
            Api::<ResourceQuota>::all(client.clone()),
            watcher::Config::default(),
        )
        .default_backoff(),
    )
    .applied_objects()
    .map_ok(|q| ReconcileRequest::from(ObjectRef::from_obj(&q)));
    // A change to an object a quota may count recounts the quotas of its namespace.
    fn recount<S, K, O>(
        objects: S,
        quotas: &Store<ResourceQuota>,
    ) -> impl futures::Stream<Item = Result<ReconcileRequest<ResourceQuota>, watcher::Error>>
    + Send
    + 'static
    where
        S: futures::Stream<Item = Result<O, watcher::Error>> + Send + 'static,
        O: std::borrow::Borrow<K>,
        K: Resource,
    {
        let in_ns = in_namespace::<K>(quotas);
        objects
            .map_ok(move |obj| {
                futures::stream::iter(
                    in_ns(obj.borrow())
                        .into_iter()
                        .map(|r| Ok(ReconcileRequest::from(r))),
                )
            })
            .try_flatten()
    }
    fn watch<K>(
        client: &kube::Client,
    ) -> impl futures::Stream<Item = Result<K, watcher::Error>> + Send + 'static
    where
        K: Resource<DynamicType = ()>
            + Clone
            + serde::de::DeserializeOwned
            + std::fmt::Debug
            + Send
            + 'static,
    {
        watcher(Api::<K>::all(client.clone()), watcher::Config::default())
            .default_backoff()
            .touched_objects()
    }
    let triggers = futures::stream::select_all([
        quota_events.boxed(),
        // Pods from the controllers' shared cache.
        recount::<_, Pod, _>(ctx.informers.pods().subscribe().touched_objects(), &quotas).boxed(),
        recount::<_, Service, _>(watch::<Service>(&client), &quotas).boxed(),
        recount::<_, PersistentVolumeClaim, _>(watch::<PersistentVolumeClaim>(&client), &quotas)
            .boxed(),
        recount::<_, ConfigMap, _>(watch::<ConfigMap>(&client), &quotas).boxed(),
        recount::<_, Secret, _>(watch::<Secret>(&client), &quotas).boxed(),
    ]);
    controller::applier(
        |q, ctx| Box::pin(reconcile(q, ctx)),
        error_policy,
        ctx,
        quotas,
        triggers,
        controller::Config::default().debounce(Duration::from_millis(500)),
    )
    .for_each(|result| async move {
        if let Err(e) = result {
            tracing::debug!(error = %e, "resourcequota reconcile");
        }
    })
    .await;
    Ok(())
}

fn in_namespace<K: Resource>(
    quotas: &Store<ResourceQuota>,
) -> impl Fn(&K) -> Vec<ObjectRef<ResourceQuota>> + Send + Sync + Clone + 'static {
    let quotas = quotas.clone();
    move |obj: &K| {
        let Some(ns) = obj.meta().namespace.as_deref() else {
            return Vec::new();
        };
        quotas
            .state()
            .iter()
            .filter(|q| q.metadata.namespace.as_deref() == Some(ns))
            .map(|q| ObjectRef::from_obj(q.as_ref()))
            .collect()
    }
}

async fn reconcile(q: Arc<ResourceQuota>, ctx: Arc<Context>) -> Result<Action, Error> {
    let (Some(namespace), Some(name)) = (q.metadata.namespace.clone(), q.metadata.name.clone())
    else {
        return Ok(Action::await_change());
    };
    if q.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let hard = quota::hard(&q);
    let names: Vec<String> = hard.keys().cloned().collect();
    let used = compute_used(&ctx.client, &q, &namespace, &names).await?;
    let status = ResourceQuotaStatus {
        hard: Some(quota::to_api(&hard)),
        used: Some(quota::to_api(&used)),
    };
    if q.status.as_ref() != Some(&status) {
        let mut updated = (*q).clone();
        updated.status = Some(status);
        let api: Api<ResourceQuota> = Api::namespaced(ctx.client.clone(), &namespace);
        // The resourceVersion read is sent back: a concurrent charge by admission makes this
        // write conflict, and the quota is recounted rather than overwritten.
        match api
            .replace_status(&name, &PostParams::default(), &updated)
            .await
        {
            Ok(_) => tracing::info!(
                quota = %format!("{namespace}/{name}"),
                used = %quota::pretty_print(&used),
                "updated resource quota usage"
            ),
            Err(kube::Error::Api(e)) if e.code == 409 => {
                return Ok(Action::requeue(Duration::from_millis(200)));
            }
            Err(kube::Error::Api(e)) if e.code == 404 => return Ok(Action::await_change()),
            Err(source) => {
                return Err(Error::UpdateStatus {
                    namespace,
                    quota: name,
                    source,
                });
            }
        }
    }
    Ok(Action::requeue(RESYNC))
}

fn now() -> Timestamp {
    Timestamp::now()
}

/// The usage of every hard resource of a quota, from the objects in its namespace.
async fn compute_used(
    client: &kube::Client,
    q: &ResourceQuota,
    namespace: &str,
    names: &[String],
) -> Result<ResourceList, Error> {
    let list_error = |resource: &str| {
        let resource = resource.to_string();
        let namespace = namespace.to_string();
        let quota = q.name_any();
        move |source| Error::List {
            resource,
            namespace,
            quota,
            source,
        }
    };
    let now = now();
    let mut usages: Vec<ResourceList> = Vec::new();
    for r in api::resources::all()
        .iter()
        .filter(|r| r.storage_version && r.namespaced)
    {
        if quota::matching_resources(r.group, r.plural, names).is_empty() {
            continue;
        }
        match (r.group, r.plural) {
            ("", "pods") => {
                let pods = Api::<Pod>::namespaced(client.clone(), namespace)
                    .list(&ListParams::default())
                    .await
                    .map_err(list_error("pods"))?;
                usages.extend(
                    pods.items
                        .iter()
                        .filter(|p| quota::quota_matches(q, "", "pods", Some(p)))
                        .map(|p| quota::pod_usage(p, now)),
                );
            }
            _ if !quota::scope_selectors(q).is_empty() => {
                // Scoped quotas cover pods only.
            }
            ("", "services") => {
                let services = Api::<Service>::namespaced(client.clone(), namespace)
                    .list(&ListParams::default())
                    .await
                    .map_err(list_error("services"))?;
                usages.extend(services.items.iter().map(quota::service_usage));
            }
            ("", "persistentvolumeclaims") => {
                let claims = Api::<PersistentVolumeClaim>::namespaced(client.clone(), namespace)
                    .list(&ListParams::default())
                    .await
                    .map_err(list_error("persistentvolumeclaims"))?;
                usages.extend(claims.items.iter().map(quota::pvc_usage));
            }
            (group, plural) => {
                // Only a count: metadata is enough.
                let gvk = GroupVersionKind::gvk(group, r.version, r.kind);
                let resource = ApiResource::from_gvk_with_plural(&gvk, plural);
                let objects =
                    Api::<DynamicObject>::namespaced_with(client.clone(), namespace, &resource)
                        .list_metadata(&ListParams::default())
                        .await
                        .map_err(list_error(&r.group_resource()))?;
                let one = quota::usage(group, plural, &serde_json::Value::Null, now);
                usages.extend(std::iter::repeat_n(one, objects.items.len()));
            }
        }
    }
    Ok(quota::sum_usage(names, &usages))
}

fn error_policy(q: Arc<ResourceQuota>, error: &Error, _ctx: Arc<Context>) -> Action {
    tracing::warn!(quota = %q.name_any(), %error, "resourcequota controller");
    Action::requeue(Duration::from_secs(2))
}
