//! Admission: what happens to a create after defaulting and around validation, as upstream's
//! admission plugins do it. `mutate` is LimitRanger (container defaults, then min/max checks);
//! `validate` is ResourceQuota (reject what would exceed a quota, otherwise charge the quota's
//! `status.used` atomically before the object is written). Both read the namespace's
//! LimitRanges and ResourceQuotas from the watch cache.

mod defaultstorageclass;
mod limitranger;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use api::ResourceInfo;
use api::quota::{self, ResourceList};
use k8s_openapi::api::core::v1::{LimitRange, PersistentVolumeClaim, Pod, ResourceQuota};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::jiff::Timestamp;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use crate::ApiServer;
use crate::error::{ApiError, ApiResult, Subject};

pub use limitranger::ANNOTATION as LIMIT_RANGER_ANNOTATION;

/// Mutating admission on create (after defaulting, before validation): the default
/// StorageClass of PersistentVolumeClaims, LimitRange defaults and limits for pods, storage
/// limits for PersistentVolumeClaims.
pub async fn mutate(
    server: &Arc<ApiServer>,
    resource: &ResourceInfo,
    obj: &mut Value,
) -> ApiResult<()> {
    if resource.group.is_empty() && resource.plural == "persistentvolumeclaims" {
        defaultstorageclass::admit(server, obj);
    }
    if !resource.group.is_empty() || !matches!(resource.plural, "pods" | "persistentvolumeclaims") {
        return Ok(());
    }
    let Some(namespace) = namespace_of(obj) else {
        return Ok(());
    };
    let ranges: Vec<LimitRange> = cached_objects(server, "limitranges", &namespace);
    if ranges.is_empty() {
        return Ok(());
    }
    let name = name_of(obj);
    let result = if resource.plural == "pods" {
        for range in &ranges {
            limitranger::default_pod(obj, range);
        }
        let pod: Pod = typed(obj)?;
        ranges
            .iter()
            .try_for_each(|r| limitranger::validate_pod(&pod, r))
    } else {
        let claim: PersistentVolumeClaim = typed(obj)?;
        ranges
            .iter()
            .try_for_each(|r| limitranger::validate_pvc(&claim, r))
    };
    result.map_err(|message| forbidden(resource, &name, &message))
}

/// Validating admission on create (after validation, before the write): ResourceQuota.
pub async fn validate(
    server: &Arc<ApiServer>,
    resource: &ResourceInfo,
    obj: &Value,
) -> ApiResult<()> {
    let (group, plural) = (resource.group, resource.plural);
    if !resource.namespaced || quota::is_ignored(group, plural) {
        return Ok(());
    }
    let Some(namespace) = namespace_of(obj) else {
        return Ok(());
    };
    let Some(quotas_resource) = api::resources::storage_row("resourcequotas") else {
        return Ok(());
    };
    let prefix = quotas_resource.prefix(Some(&namespace));
    if server
        .cache
        .list(quotas_resource, &prefix, None, 1, |_| true)
        .0
        .is_empty()
    {
        return Ok(());
    }
    let name = name_of(obj);
    let pod: Option<Pod> = if group.is_empty() && plural == "pods" {
        Some(typed(obj)?)
    } else {
        None
    };
    let now = now();
    let delta = quota::usage(group, plural, obj, now);

    // One evaluation at a time per namespace in this server, so concurrent creates queue
    // instead of racing on the quota's resourceVersion (the compare-and-swap below still
    // guards against other servers and the controller).
    let lock = namespace_lock(&namespace);
    let _serialized = lock.lock().await;

    // Every quota that covers the object, checked for constraints before any is charged.
    let mut covering = Vec::new();
    for cached in server
        .cache
        .list(quotas_resource, &prefix, None, 0, |_| true)
        .0
    {
        let Ok(q) = serde_json::from_slice::<ResourceQuota>(&cached.json) else {
            continue;
        };
        if !quota::quota_matches(&q, group, plural, pod.as_ref()) {
            continue;
        }
        let quota_name = q.metadata.name.clone().unwrap_or_default();
        let restricted = quota::matching_resources(group, plural, quota::hard(&q).keys());
        if let Some(pod) = &pod
            && let Err(e) = quota::pod_constraints(&restricted, pod)
        {
            return Err(forbidden(
                resource,
                &name,
                &format!("failed quota: {quota_name}: {e}"),
            ));
        }
        let charged = quota::mask(&delta, restricted.iter().map(String::as_str));
        if charged.values().all(|q| q.is_zero()) {
            continue;
        }
        covering.push((cached.key.to_string(), quota_name, restricted));
    }

    for (key, quota_name, restricted) in covering {
        let subject = Subject {
            group: "",
            resource: "resourcequotas",
            name: &quota_name,
        };
        crate::rest::update_object(
            server,
            quotas_resource,
            &key,
            subject,
            Some("status"),
            false,
            |current| {
                let q: ResourceQuota = typed(current)?;
                let hard = quota::hard(&q);
                let mut used = quota::used(&q);
                // A quota the controller has not counted yet: count its objects here.
                let missing: Vec<String> = restricted
                    .iter()
                    .filter(|n| !used.contains_key(*n))
                    .cloned()
                    .collect();
                if !missing.is_empty() {
                    used.extend(count_usage(server, resource, &namespace, &q, &missing, now));
                }
                let new_used = quota::charge(&quota_name, &hard, &used, &delta)
                    .map_err(|e| forbidden(resource, &name, &e))?;
                let mut updated = current.clone();
                updated["status"] = json!({
                    "hard": quota::to_api(&hard),
                    "used": quota::to_api(&new_used),
                });
                Ok(updated)
            },
        )
        .await?;
        tracing::debug!(quota = %key, object = %name, "charged resource quota");
    }
    Ok(())
}

/// Pods a budget holds at most this many of in `status.disruptedPods` (upstream's limit).
const MAX_DISRUPTED_PODS: usize = 2000;

/// The eviction subresource's check against PodDisruptionBudgets, as upstream's: a pod that
/// is terminal, pending or already being deleted goes freely; otherwise its one budget must
/// allow a disruption, which this takes (decrementing `disruptionsAllowed` and recording the
/// pod in `disruptedPods`, atomically) before the caller deletes the pod.
pub async fn admit_eviction(
    server: &Arc<ApiServer>,
    namespace: &str,
    pod_name: &str,
) -> ApiResult<()> {
    let Some(pods) = api::resources::storage_row("pods") else {
        return Ok(());
    };
    let Some(cached) = server.cache.get(pods, &pods.key(Some(namespace), pod_name)) else {
        // The delete reports the NotFound.
        return Ok(());
    };
    let pod: Pod = typed(&cached.value())?;
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
    if pod.metadata.deletion_timestamp.is_some()
        || matches!(phase, Some("Succeeded" | "Failed" | "Pending"))
    {
        return Ok(());
    }
    let Some(budgets) = api::resources::storage_row("poddisruptionbudgets") else {
        return Ok(());
    };
    let labels: std::collections::BTreeMap<String, String> =
        pod.metadata.labels.clone().unwrap_or_default();
    let (all, _, _) = server
        .cache
        .list(budgets, &budgets.prefix(Some(namespace)), None, 0, |_| true);
    let matching: Vec<(String, PodDisruptionBudget)> = all
        .iter()
        .filter_map(|o| Some((o.key.to_string(), serde_json::from_slice(&o.json).ok()?)))
        .filter(|(_, b): &(String, PodDisruptionBudget)| selects(b, &labels))
        .collect();
    let (key, budget) = match matching.as_slice() {
        [] => return Ok(()),
        [one] => one.clone(),
        _ => {
            return Err(ApiError::internal(
                "This pod has more than one PodDisruptionBudget, which the eviction subresource does not support.",
            ));
        }
    };
    let budget_name = budget.metadata.name.clone().unwrap_or_default();
    let ready = pod
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
    if !ready {
        let policy = budget
            .spec
            .as_ref()
            .and_then(|s| s.unhealthy_pod_eviction_policy.as_deref());
        let status = budget.status.clone().unwrap_or_default();
        // An unready pod does not count as healthy: taking it costs the budget nothing when
        // the budget is met (or always, if the budget says so).
        if policy == Some("AlwaysAllow")
            || (status.current_healthy >= status.desired_healthy && status.desired_healthy > 0)
        {
            return Ok(());
        }
    }
    let subject = Subject {
        group: "policy",
        resource: "poddisruptionbudgets",
        name: &budget_name,
    };
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    crate::rest::update_object(
        server,
        budgets,
        &key,
        subject,
        Some("status"),
        false,
        |current| {
            let b: PodDisruptionBudget = typed(current)?;
            let status = b.status.clone().unwrap_or_default();
            if status.observed_generation.unwrap_or(0) < b.metadata.generation.unwrap_or(0) {
                return Err(too_many_requests(
                    "Cannot evict pod as it would violate the pod's disruption budget.",
                    &format!("The disruption budget {budget_name} is still being processed by the server."),
                ));
            }
            if status.disruptions_allowed < 0 {
                return Err(ApiError::forbidden("pdb disruptions allowed is negative"));
            }
            if status.disrupted_pods.as_ref().map_or(0, |d| d.len()) > MAX_DISRUPTED_PODS {
                return Err(ApiError::forbidden(
                    "DisruptedPods map too big - too many evictions not confirmed by PDB controller",
                ));
            }
            if status.disruptions_allowed == 0 {
                return Err(too_many_requests(
                    "Cannot evict pod as it would violate the pod's disruption budget.",
                    &format!(
                        "The disruption budget {budget_name} needs {} healthy pods and has {} currently",
                        status.desired_healthy, status.current_healthy
                    ),
                ));
            }
            let mut updated = current.clone();
            let allowed = status.disruptions_allowed - 1;
            updated["status"]["disruptionsAllowed"] = json!(allowed);
            updated["status"]["disruptedPods"][pod_name] = json!(now);
            if allowed == 0
                && let Some(conditions) = updated["status"]["conditions"].as_array_mut()
            {
                for c in conditions.iter_mut().filter(|c| c["type"] == "DisruptionAllowed") {
                    if c["status"] != "False" {
                        c["lastTransitionTime"] = json!(now);
                    }
                    c["status"] = json!("False");
                    c["reason"] = json!("InsufficientPods");
                }
            }
            Ok(updated)
        },
    )
    .await?;
    tracing::info!(pod = %format!("{namespace}/{pod_name}"), budget = %budget_name, "eviction allowed by disruption budget");
    Ok(())
}

/// Whether a budget's selector matches these labels (no selector matches nothing).
fn selects(
    budget: &PodDisruptionBudget,
    labels: &std::collections::BTreeMap<String, String>,
) -> bool {
    let selector = budget.spec.as_ref().and_then(|s| s.selector.as_ref());
    api::selector::LabelSelector::from_optional(selector).is_ok_and(|s| s.matches(labels))
}

fn too_many_requests(message: &str, cause: &str) -> ApiError {
    ApiError::new(
        http::StatusCode::TOO_MANY_REQUESTS,
        "TooManyRequests",
        message,
    )
    .with_details(json!({"causes": [{"reason": "DisruptionBudget", "message": cause}]}))
}

/// The usage of `names` in a namespace, summed over the cached objects of one resource that the
/// quota covers.
fn count_usage(
    server: &ApiServer,
    resource: &ResourceInfo,
    namespace: &str,
    q: &ResourceQuota,
    names: &[String],
    now: Timestamp,
) -> ResourceList {
    let Some(storage) = api::resources::storage_row(resource.storage) else {
        return ResourceList::new();
    };
    let (objects, _, _) =
        server
            .cache
            .list(storage, &storage.prefix(Some(namespace)), None, 0, |_| true);
    let usages: Vec<ResourceList> = objects
        .iter()
        .filter_map(|o| {
            let value = o.value();
            let pod: Option<Pod> = if resource.group.is_empty() && resource.plural == "pods" {
                Some(serde_json::from_value(value.clone()).ok()?)
            } else {
                None
            };
            quota::quota_matches(q, resource.group, resource.plural, pod.as_ref())
                .then(|| quota::usage(resource.group, resource.plural, &value, now))
        })
        .collect();
    quota::sum_usage(names, &usages)
}

fn namespace_lock(namespace: &str) -> Arc<tokio::sync::Mutex<()>> {
    static LOCKS: OnceLock<Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>> = OnceLock::new();
    let mut locks = LOCKS
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    locks.entry(namespace.to_string()).or_default().clone()
}

fn now() -> Timestamp {
    Timestamp::from_second(chrono::Utc::now().timestamp()).unwrap_or(Timestamp::UNIX_EPOCH)
}

fn namespace_of(obj: &Value) -> Option<String> {
    obj.pointer("/metadata/namespace")
        .and_then(Value::as_str)
        .filter(|ns| !ns.is_empty())
        .map(String::from)
}

fn name_of(obj: &Value) -> String {
    obj.pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string()
}

fn typed<T: DeserializeOwned>(obj: &Value) -> ApiResult<T> {
    serde_json::from_value(obj.clone())
        .map_err(|e| ApiError::internal(format!("admission: decoding the object: {e}")))
}

/// Typed objects of a core resource in a namespace, from the watch cache.
fn cached_objects<T: DeserializeOwned>(
    server: &ApiServer,
    storage: &str,
    namespace: &str,
) -> Vec<T> {
    let Some(resource) = api::resources::storage_row(storage) else {
        return Vec::new();
    };
    let (objects, _, _) =
        server
            .cache
            .list(resource, &resource.prefix(Some(namespace)), None, 0, |_| {
                true
            });
    objects
        .iter()
        .filter_map(|o| serde_json::from_slice(&o.json).ok())
        .collect()
}

/// Upstream's admission rejection: `pods "web" is forbidden: <why>`.
fn forbidden(resource: &ResourceInfo, name: &str, why: &str) -> ApiError {
    let qualified = resource.group_resource();
    let message = if name.is_empty() {
        format!("{qualified} is forbidden: {why}")
    } else {
        format!("{qualified} \"{name}\" is forbidden: {why}")
    };
    let mut details = json!({"name": name, "kind": resource.plural});
    if !resource.group.is_empty() {
        details["group"] = json!(resource.group);
    }
    ApiError::forbidden(message).with_details(details)
}

#[cfg(test)]
mod tests;
