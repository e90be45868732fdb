//! ResourceQuota accounting with no IO, as upstream's quota evaluators do it: what one object
//! charges against a quota, which quotas cover it (resources and scopes), the checks of the
//! ResourceQuota admission plugin, and the exact messages it rejects with.
//!
//! API Boundary: shared by the API server's admission (charging on create) and the resource
//! quota controller (recomputing `status.used` from the objects that exist), so both count alike.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::{
    Container, PersistentVolumeClaim, Pod, ResourceQuota, ScopedResourceSelectorRequirement,
    Service,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity as KubeQuantity;
use k8s_openapi::jiff::Timestamp;
use serde_json::Value;

use crate::validation::quantity::{Quantity, QuantityFormat, parse_quantity};

/// Named quantities (`requests.cpu` → `1500m`), in name order as upstream prints them.
pub type ResourceList = BTreeMap<String, Quantity>;

/// Resources a quota on cpu or memory requires every container to state (upstream keeps this
/// coupling for backward compatibility only).
const VALIDATION_SET: &[&str] = &[
    "cpu",
    "memory",
    "requests.cpu",
    "requests.memory",
    "limits.cpu",
    "limits.memory",
];

/// The resources the pod evaluator tracks by exact name.
const POD_RESOURCES: &[&str] = &[
    "count/pods",
    "cpu",
    "memory",
    "ephemeral-storage",
    "requests.cpu",
    "requests.memory",
    "requests.ephemeral-storage",
    "limits.cpu",
    "limits.memory",
    "limits.ephemeral-storage",
    "pods",
];

const STORAGE_CLASS_SUFFIX: &str = ".storageclass.storage.k8s.io/";

/// Parse a list of API quantities, skipping any that do not parse (validation rejects them).
pub fn parse_list(list: Option<&BTreeMap<String, KubeQuantity>>) -> ResourceList {
    list.into_iter()
        .flatten()
        .filter_map(|(k, v)| Some((k.clone(), parse_quantity(&v.0).ok()?)))
        .collect()
}

/// The API form of a list, each quantity in its canonical form.
pub fn to_api(list: &ResourceList) -> BTreeMap<String, KubeQuantity> {
    list.iter()
        .map(|(k, v)| (k.clone(), KubeQuantity(v.to_string())))
        .collect()
}

/// `a + b`, keeping the format of `a` unless it is zero (as `Quantity.Add`).
pub fn add_quantity(a: Quantity, b: Quantity) -> Quantity {
    let format = if a.is_zero() { b.format } else { a.format };
    Quantity::from_nanos(a.nanos() + b.nanos(), format)
}

/// Add every quantity of `b` into `a`.
pub fn add_into(a: &mut ResourceList, b: &ResourceList) {
    for (k, v) in b {
        let sum = match a.get(k) {
            Some(existing) => add_quantity(*existing, *v),
            None => *v,
        };
        a.insert(k.clone(), sum);
    }
}

/// Raise each quantity of `a` to at least the one in `b`.
fn max_into(a: &mut ResourceList, b: &ResourceList) {
    for (k, v) in b {
        match a.get(k) {
            Some(existing) if existing >= v => {}
            _ => {
                a.insert(k.clone(), *v);
            }
        }
    }
}

/// Only the entries of `list` whose names are in `names`.
pub fn mask<'a>(list: &ResourceList, names: impl IntoIterator<Item = &'a str>) -> ResourceList {
    names
        .into_iter()
        .filter_map(|n| list.get(n).map(|q| (n.to_string(), *q)))
        .collect()
}

/// `a=1,b=2`: upstream's rendering of a list in its messages.
pub fn pretty_print(list: &ResourceList) -> String {
    list.iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

fn one() -> Quantity {
    Quantity::from_nanos(1_000_000_000, QuantityFormat::DecimalSI)
}

fn count(n: usize) -> Quantity {
    Quantity::from_nanos(n as i128 * 1_000_000_000, QuantityFormat::DecimalSI)
}

/// `count/pods`, `count/deployments.apps`: the object-count name of a resource.
pub fn object_count_name(group: &str, plural: &str) -> String {
    if group.is_empty() {
        format!("count/{plural}")
    } else {
        format!("count/{plural}.{group}")
    }
}

/// The pre-`count/` names that also count objects of some core resources.
fn legacy_count_name(group: &str, plural: &str) -> Option<&'static str> {
    if !group.is_empty() {
        return None;
    }
    match plural {
        "configmaps" => Some("configmaps"),
        "secrets" => Some("secrets"),
        "replicationcontrollers" => Some("replicationcontrollers"),
        "resourcequotas" => Some("resourcequotas"),
        "services" => Some("services"),
        "persistentvolumeclaims" => Some("persistentvolumeclaims"),
        _ => None,
    }
}

/// Resources quota admission never looks at (as upstream's default ignored set).
pub fn is_ignored(group: &str, plural: &str) -> bool {
    plural == "events" && (group.is_empty() || group == "events.k8s.io")
}

/// A name in the native `kubernetes.io` namespace (no domain, or that domain).
fn is_native_resource(name: &str) -> bool {
    !name.contains('/') || name.contains("kubernetes.io/")
}

fn is_extended_resource_name(name: &str) -> bool {
    !is_native_resource(name) && !name.starts_with("requests.")
}

/// Of the quota's resource names, those that objects of this resource are charged for.
pub fn matching_resources<'a>(
    group: &str,
    plural: &str,
    hard: impl IntoIterator<Item = &'a String>,
) -> Vec<String> {
    let count = object_count_name(group, plural);
    let legacy = legacy_count_name(group, plural);
    hard.into_iter()
        .filter(|name| {
            let name = name.as_str();
            if name == count || Some(name) == legacy {
                return true;
            }
            match (group, plural) {
                ("", "pods") => {
                    POD_RESOURCES.contains(&name)
                        || name.starts_with("hugepages-")
                        || name.starts_with("requests.hugepages-")
                        || (name.starts_with("requests.") && !is_native_resource(name))
                }
                ("", "services") => {
                    matches!(name, "services.loadbalancers" | "services.nodeports")
                }
                ("", "persistentvolumeclaims") => {
                    name == "requests.storage"
                        || name.split_once(STORAGE_CLASS_SUFFIX).is_some_and(|(_, r)| {
                            r == "requests.storage" || r == "persistentvolumeclaims"
                        })
                }
                _ => false,
            }
        })
        .cloned()
        .collect()
}

fn container_list(c: &Container, limits: bool) -> ResourceList {
    let r = c.resources.as_ref();
    parse_list(r.and_then(|r| {
        if limits {
            r.limits.as_ref()
        } else {
            r.requests.as_ref()
        }
    }))
}

/// Effective requests (or limits) of a pod as upstream's `PodRequests`/`PodLimits`: containers
/// summed, restartable (sidecar) init containers added, each other init container raising the
/// total to what it needs alongside the sidecars started before it, plus the pod overhead.
fn pod_aggregate(pod: &Pod, limits: bool) -> ResourceList {
    let Some(spec) = &pod.spec else {
        return ResourceList::new();
    };
    let mut total = ResourceList::new();
    for c in &spec.containers {
        add_into(&mut total, &container_list(c, limits));
    }
    let mut sidecars = ResourceList::new();
    let mut init_max = ResourceList::new();
    for c in spec.init_containers.iter().flatten() {
        let own = container_list(c, limits);
        let needed = if c.restart_policy.as_deref() == Some("Always") {
            add_into(&mut total, &own);
            add_into(&mut sidecars, &own);
            sidecars.clone()
        } else {
            let mut needed = own;
            add_into(&mut needed, &sidecars);
            needed
        };
        max_into(&mut init_max, &needed);
    }
    max_into(&mut total, &init_max);
    let overhead = parse_list(spec.overhead.as_ref());
    if limits {
        // Overhead only raises limits that are set.
        for (k, v) in overhead {
            if let Some(existing) = total.get(&k) {
                total.insert(k, add_quantity(*existing, v));
            }
        }
    } else {
        add_into(&mut total, &overhead);
    }
    total
}

pub fn pod_requests(pod: &Pod) -> ResourceList {
    pod_aggregate(pod, false)
}

pub fn pod_limits(pod: &Pod) -> ResourceList {
    pod_aggregate(pod, true)
}

/// The compute names charged for some requests and limits (`requests.cpu` and `cpu` for a cpu
/// request, ...), plus one `pods`.
fn compute_usage(requests: &ResourceList, limits: &ResourceList) -> ResourceList {
    let mut out = ResourceList::new();
    out.insert("pods".into(), one());
    for r in ["cpu", "memory", "ephemeral-storage"] {
        if let Some(q) = requests.get(r) {
            out.insert(r.into(), *q);
            out.insert(format!("requests.{r}"), *q);
        }
        if let Some(q) = limits.get(r) {
            out.insert(format!("limits.{r}"), *q);
        }
    }
    for (name, q) in requests {
        if name.starts_with("hugepages-") {
            out.insert(name.clone(), *q);
            out.insert(format!("requests.{name}"), *q);
        }
        if is_extended_resource_name(name) {
            out.insert(format!("requests.{name}"), *q);
        }
    }
    out
}

/// Whether a pod still counts for compute quota: not terminal, and not stuck past the end of
/// its deletion grace period (a lost node must not block its replacements).
pub fn pod_charged(pod: &Pod, now: Timestamp) -> bool {
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
    if matches!(phase, Some("Succeeded" | "Failed")) {
        return false;
    }
    if let (Some(deleted), Some(grace)) = (
        &pod.metadata.deletion_timestamp,
        pod.metadata.deletion_grace_period_seconds,
    ) && let Ok(end) = deleted
        .0
        .checked_add(k8s_openapi::jiff::SignedDuration::from_secs(grace))
        && now > end
    {
        return false;
    }
    true
}

/// What a pod charges: always `count/pods`; compute resources while it is charged.
pub fn pod_usage(pod: &Pod, now: Timestamp) -> ResourceList {
    let mut out = ResourceList::new();
    out.insert("count/pods".into(), one());
    if !pod_charged(pod, now) {
        return out;
    }
    add_into(
        &mut out,
        &compute_usage(&pod_requests(pod), &pod_limits(pod)),
    );
    out
}

pub fn service_usage(svc: &Service) -> ResourceList {
    let mut out = ResourceList::new();
    out.insert("count/services".into(), one());
    out.insert("services".into(), one());
    let spec = svc.spec.as_ref();
    let ports = spec.and_then(|s| s.ports.as_ref()).map_or(0, Vec::len);
    let mut load_balancers = 0;
    let mut node_ports = 0;
    match spec.and_then(|s| s.type_.as_deref()) {
        Some("NodePort") => node_ports = ports,
        Some("LoadBalancer") => {
            load_balancers = 1;
            if spec.and_then(|s| s.allocate_load_balancer_node_ports) != Some(false) {
                node_ports = ports;
            }
        }
        _ => {}
    }
    out.insert("services.loadbalancers".into(), count(load_balancers));
    out.insert("services.nodeports".into(), count(node_ports));
    out
}

pub fn pvc_usage(pvc: &PersistentVolumeClaim) -> ResourceList {
    let mut out = ResourceList::new();
    out.insert("count/persistentvolumeclaims".into(), one());
    out.insert("persistentvolumeclaims".into(), one());
    let class = pvc
        .spec
        .as_ref()
        .and_then(|s| s.storage_class_name.as_deref())
        .filter(|c| !c.is_empty());
    if let Some(class) = class {
        out.insert(
            format!("{class}{STORAGE_CLASS_SUFFIX}persistentvolumeclaims"),
            one(),
        );
    }
    let requested = parse_list(
        pvc.spec
            .as_ref()
            .and_then(|s| s.resources.as_ref())
            .and_then(|r| r.requests.as_ref()),
    )
    .remove("storage");
    // A resize that is in progress is charged at the larger of the two sizes.
    let allocated = parse_list(
        pvc.status
            .as_ref()
            .and_then(|s| s.allocated_resources.as_ref()),
    )
    .remove("storage");
    let storage = match (requested, allocated) {
        (Some(r), Some(a)) => Some(r.max(a)),
        (r, a) => r.or(a),
    };
    if let Some(storage) = storage {
        out.insert("requests.storage".into(), storage);
        if let Some(class) = class {
            out.insert(
                format!("{class}{STORAGE_CLASS_SUFFIX}requests.storage"),
                storage,
            );
        }
    }
    out
}

/// What one object of a resource charges. Objects without a dedicated evaluator count once
/// under `count/<resource>` (and the legacy name, if the resource has one).
pub fn usage(group: &str, plural: &str, obj: &Value, now: Timestamp) -> ResourceList {
    if group.is_empty() {
        let typed = match plural {
            "pods" => serde_json::from_value::<Pod>(obj.clone()).map(|p| pod_usage(&p, now)),
            "services" => serde_json::from_value::<Service>(obj.clone()).map(|s| service_usage(&s)),
            "persistentvolumeclaims" => {
                serde_json::from_value::<PersistentVolumeClaim>(obj.clone()).map(|p| pvc_usage(&p))
            }
            _ => Ok(ResourceList::new()),
        };
        if let Ok(list) = typed
            && !list.is_empty()
        {
            return list;
        }
    }
    let mut out = ResourceList::new();
    out.insert(object_count_name(group, plural), one());
    if let Some(legacy) = legacy_count_name(group, plural) {
        out.insert(legacy.into(), one());
    }
    out
}

/// The scopes of a quota as selector requirements (`spec.scopes` are `Exists` requirements).
pub fn scope_selectors(quota: &ResourceQuota) -> Vec<ScopedResourceSelectorRequirement> {
    let Some(spec) = &quota.spec else {
        return Vec::new();
    };
    let mut out: Vec<ScopedResourceSelectorRequirement> = spec
        .scopes
        .iter()
        .flatten()
        .map(|s| ScopedResourceSelectorRequirement {
            scope_name: s.clone(),
            operator: "Exists".into(),
            values: None,
        })
        .collect();
    if let Some(selector) = &spec.scope_selector {
        out.extend(selector.match_expressions.iter().flatten().cloned());
    }
    out
}

/// Quality of service BestEffort: no container requests or limits any cpu or memory.
pub fn is_best_effort(pod: &Pod) -> bool {
    let Some(spec) = &pod.spec else { return true };
    spec.containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
        .all(|c| {
            [false, true].iter().all(|limits| {
                let list = container_list(c, *limits);
                ["cpu", "memory"]
                    .iter()
                    .all(|r| list.get(*r).is_none_or(|q| q.is_zero()))
            })
        })
}

fn is_terminating(pod: &Pod) -> bool {
    pod.spec
        .as_ref()
        .and_then(|s| s.active_deadline_seconds)
        .is_some_and(|d| d >= 0)
}

/// Whether a pod falls in one scope of a quota.
pub fn pod_matches_scope(pod: &Pod, selector: &ScopedResourceSelectorRequirement) -> bool {
    match selector.scope_name.as_str() {
        "Terminating" => is_terminating(pod),
        "NotTerminating" => !is_terminating(pod),
        "BestEffort" => is_best_effort(pod),
        "NotBestEffort" => !is_best_effort(pod),
        "PriorityClass" => {
            let class = pod
                .spec
                .as_ref()
                .and_then(|s| s.priority_class_name.as_deref())
                .filter(|c| !c.is_empty());
            let values = selector.values.as_deref().unwrap_or_default();
            match selector.operator.as_str() {
                "Exists" => class.is_some(),
                "DoesNotExist" => class.is_none(),
                "In" => class.is_some_and(|c| values.iter().any(|v| v == c)),
                "NotIn" => class.is_none_or(|c| !values.iter().any(|v| v == c)),
                _ => false,
            }
        }
        "CrossNamespacePodAffinity" => {
            let uses = |terms: Option<&Vec<k8s_openapi::api::core::v1::PodAffinityTerm>>| {
                terms.into_iter().flatten().any(|t| {
                    t.namespaces.as_ref().is_some_and(|n| !n.is_empty())
                        || t.namespace_selector.is_some()
                })
            };
            let weighted =
                |terms: Option<&Vec<k8s_openapi::api::core::v1::WeightedPodAffinityTerm>>| {
                    terms.into_iter().flatten().any(|t| {
                        let t = &t.pod_affinity_term;
                        t.namespaces.as_ref().is_some_and(|n| !n.is_empty())
                            || t.namespace_selector.is_some()
                    })
                };
            let affinity = pod.spec.as_ref().and_then(|s| s.affinity.as_ref());
            let a = affinity.and_then(|a| a.pod_affinity.as_ref());
            let anti = affinity.and_then(|a| a.pod_anti_affinity.as_ref());
            uses(a.and_then(|a| {
                a.required_during_scheduling_ignored_during_execution
                    .as_ref()
            })) || weighted(a.and_then(|a| {
                a.preferred_during_scheduling_ignored_during_execution
                    .as_ref()
            })) || uses(anti.and_then(|a| {
                a.required_during_scheduling_ignored_during_execution
                    .as_ref()
            })) || weighted(anti.and_then(|a| {
                a.preferred_during_scheduling_ignored_during_execution
                    .as_ref()
            }))
        }
        _ => false,
    }
}

/// The hard limits of a quota (its spec: what the controller copies into `status.hard`).
pub fn hard(quota: &ResourceQuota) -> ResourceList {
    parse_list(quota.spec.as_ref().and_then(|s| s.hard.as_ref()))
}

pub fn used(quota: &ResourceQuota) -> ResourceList {
    parse_list(quota.status.as_ref().and_then(|s| s.used.as_ref()))
}

/// Whether a quota covers an object: it limits something the object is charged for, and the
/// object is in every one of its scopes (only pods have scopes).
pub fn quota_matches(quota: &ResourceQuota, group: &str, plural: &str, pod: Option<&Pod>) -> bool {
    let hard = hard(quota);
    if matching_resources(group, plural, hard.keys()).is_empty() {
        return false;
    }
    scope_selectors(quota).iter().all(|s| match pod {
        Some(pod) => pod_matches_scope(pod, s),
        None => false,
    })
}

/// Upstream's constraint on pods under a cpu/memory quota: every container (and init container)
/// states each such resource. Err is the message after `failed quota: <name>: `.
pub fn pod_constraints(required: &[String], pod: &Pod) -> Result<(), String> {
    let required: BTreeSet<&str> = required
        .iter()
        .map(String::as_str)
        .filter(|r| VALIDATION_SET.contains(r))
        .collect();
    if required.is_empty() {
        return Ok(());
    }
    let mut missing: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    let Some(spec) = &pod.spec else {
        return Ok(());
    };
    for c in spec
        .containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
    {
        let usage = compute_usage(&container_list(c, false), &container_list(c, true));
        for r in &required {
            if !usage.contains_key(*r) {
                missing.entry(r).or_default().insert(c.name.as_str());
            }
        }
    }
    if missing.is_empty() {
        return Ok(());
    }
    let parts: Vec<String> = missing
        .iter()
        .map(|(r, names)| {
            format!(
                "{r} for: {}",
                names.iter().copied().collect::<Vec<_>>().join(",")
            )
        })
        .collect();
    Err(format!("must specify {}", parts.join("; ")))
}

/// Charge `delta` (what the new object uses) to a quota that covers it. Returns the new
/// `status.used`, or upstream's `exceeded quota: ...` message. Zero entries charge nothing.
pub fn charge(
    quota_name: &str,
    hard: &ResourceList,
    used: &ResourceList,
    delta: &ResourceList,
) -> Result<ResourceList, String> {
    let requested: ResourceList = delta
        .iter()
        .filter(|(k, v)| !v.is_zero() && hard.contains_key(*k))
        .map(|(k, v)| (k.clone(), *v))
        .collect();
    let mut new_used = used.clone();
    add_into(&mut new_used, &requested);
    let exceeded: Vec<&str> = requested
        .keys()
        .filter(|k| new_used.get(*k) > hard.get(*k))
        .map(String::as_str)
        .collect();
    if !exceeded.is_empty() {
        return Err(format!(
            "exceeded quota: {quota_name}, requested: {}, used: {}, limited: {}",
            pretty_print(&mask(&requested, exceeded.iter().copied())),
            pretty_print(&mask(used, exceeded.iter().copied())),
            pretty_print(&mask(hard, exceeded.iter().copied())),
        ));
    }
    Ok(new_used)
}

/// `status.used` for a quota computed from scratch: each hard resource, summed over the
/// objects (already filtered to the quota's namespace and resource) that the quota covers.
/// Every hard name the given resources are charged for appears, zero if nothing uses it.
pub fn sum_usage<'a>(
    names: &[String],
    usages: impl IntoIterator<Item = &'a ResourceList>,
) -> ResourceList {
    let mut out: ResourceList = names
        .iter()
        .map(|n| {
            (
                n.clone(),
                Quantity::from_nanos(0, QuantityFormat::DecimalSI),
            )
        })
        .collect();
    for u in usages {
        for n in names {
            if let Some(q) = u.get(n) {
                let sum = add_quantity(out[n], *q);
                out.insert(n.clone(), sum);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests;
