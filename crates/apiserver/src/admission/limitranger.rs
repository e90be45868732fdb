//! LimitRanger, as upstream's admission plugin: default container requests and limits from the
//! namespace's LimitRanges, then enforce their min, max and maxLimitRequestRatio on pods and
//! their storage min and max on PersistentVolumeClaims. Pure functions over one LimitRange.

use std::collections::BTreeMap;

use api::quota::{ResourceList, parse_list, pod_limits, pod_requests};
use api::validation::quantity::Quantity;
use k8s_openapi::api::core::v1::{LimitRange, LimitRangeItem, PersistentVolumeClaim, Pod};
use serde_json::{Map, Value};

/// The annotation that tells what LimitRanger set on a pod.
pub const ANNOTATION: &str = "kubernetes.io/limit-ranger";

fn items(range: &LimitRange) -> impl Iterator<Item = &LimitRangeItem> {
    range.spec.iter().flat_map(|s| s.limits.iter())
}

/// The default requests and limits of the Container-type items of a LimitRange.
fn container_defaults(range: &LimitRange) -> (ResourceList, ResourceList) {
    let mut requests = ResourceList::new();
    let mut limits = ResourceList::new();
    for item in items(range).filter(|i| i.type_ == "Container") {
        requests.extend(parse_list(item.default_request.as_ref()));
        limits.extend(parse_list(item.default.as_ref()));
    }
    (requests, limits)
}

/// Fill in what a container's `resources.<field>` lacks; returns the names it set, sorted.
fn merge(resources: &mut Map<String, Value>, field: &str, defaults: &ResourceList) -> Vec<String> {
    let entry = resources
        .entry(field)
        .or_insert_with(|| Value::Object(Map::new()));
    if !entry.is_object() {
        *entry = Value::Object(Map::new());
    }
    let Some(list) = entry.as_object_mut() else {
        return Vec::new();
    };
    let mut set = Vec::new();
    for (name, q) in defaults {
        if !list.contains_key(name) {
            list.insert(name.clone(), Value::String(q.to_string()));
            set.push(name.clone());
        }
    }
    if list.is_empty() {
        resources.remove(field);
    }
    set
}

/// Apply a LimitRange's container defaults to a pod (storage-version JSON) and record what was
/// set in the `kubernetes.io/limit-ranger` annotation, as upstream does.
pub fn default_pod(pod: &mut Value, range: &LimitRange) {
    let (requests, limits) = container_defaults(range);
    if requests.is_empty() && limits.is_empty() {
        return;
    }
    let mut notes = Vec::new();
    for (field, what) in [
        ("containers", "container"),
        ("initContainers", "init container"),
    ] {
        let Some(containers) = pod
            .pointer_mut(&format!("/spec/{field}"))
            .and_then(Value::as_array_mut)
        else {
            continue;
        };
        for c in containers.iter_mut().filter_map(Value::as_object_mut) {
            let name = c
                .get("name")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            let resources = c
                .entry("resources")
                .or_insert_with(|| Value::Object(Map::new()));
            if !resources.is_object() {
                *resources = Value::Object(Map::new());
            }
            let Some(resources) = resources.as_object_mut() else {
                continue;
            };
            let set_limits = merge(resources, "limits", &limits);
            let set_requests = merge(resources, "requests", &requests);
            if !set_requests.is_empty() {
                notes.push(format!(
                    "{} request for {what} {name}",
                    set_requests.join(", ")
                ));
            }
            if !set_limits.is_empty() {
                notes.push(format!("{} limit for {what} {name}", set_limits.join(", ")));
            }
        }
    }
    if notes.is_empty() {
        return;
    }
    if let Some(meta) = pod.get_mut("metadata").and_then(Value::as_object_mut) {
        let annotations = meta
            .entry("annotations")
            .or_insert_with(|| Value::Object(Map::new()));
        if let Some(annotations) = annotations.as_object_mut() {
            annotations.insert(
                ANNOTATION.into(),
                Value::String(format!("LimitRanger plugin set: {}", notes.join("; "))),
            );
        }
    }
}

/// Values compared at milli precision (as upstream does when nothing overflows).
fn milli(q: Option<&Quantity>) -> i128 {
    q.map_or(0, Quantity::milli_value)
}

fn min_constraint(
    kind: &str,
    name: &str,
    enforced: &Quantity,
    requests: &ResourceList,
    limits: &ResourceList,
) -> Option<String> {
    let (req, lim) = (requests.get(name), limits.get(name));
    let Some(req) = req else {
        return Some(format!(
            "minimum {name} usage per {kind} is {enforced}.  No request is specified"
        ));
    };
    if req.milli_value() < enforced.milli_value() {
        return Some(format!(
            "minimum {name} usage per {kind} is {enforced}, but request is {req}"
        ));
    }
    if let Some(lim) = lim
        && lim.milli_value() < enforced.milli_value()
    {
        return Some(format!(
            "minimum {name} usage per {kind} is {enforced}, but limit is {lim}"
        ));
    }
    None
}

fn max_constraint(
    kind: &str,
    name: &str,
    enforced: &Quantity,
    requests: &ResourceList,
    limits: &ResourceList,
) -> Option<String> {
    let (req, lim) = (requests.get(name), limits.get(name));
    let Some(lim) = lim else {
        return Some(format!(
            "maximum {name} usage per {kind} is {enforced}.  No limit is specified"
        ));
    };
    if lim.milli_value() > enforced.milli_value() {
        return Some(format!(
            "maximum {name} usage per {kind} is {enforced}, but limit is {lim}"
        ));
    }
    if let Some(req) = req
        && req.milli_value() > enforced.milli_value()
    {
        return Some(format!(
            "maximum {name} usage per {kind} is {enforced}, but request is {req}"
        ));
    }
    None
}

/// The max of a PersistentVolumeClaim item applies to what the claim requests.
fn max_request_constraint(
    kind: &str,
    name: &str,
    enforced: &Quantity,
    requests: &ResourceList,
) -> Option<String> {
    let Some(req) = requests.get(name) else {
        return Some(format!(
            "maximum {name} usage per {kind} is {enforced}.  No request is specified"
        ));
    };
    if req.milli_value() > enforced.milli_value() {
        return Some(format!(
            "maximum {name} usage per {kind} is {enforced}, but request is {req}"
        ));
    }
    None
}

fn ratio_constraint(
    kind: &str,
    name: &str,
    enforced: &Quantity,
    requests: &ResourceList,
    limits: &ResourceList,
) -> Option<String> {
    let (req, lim) = (milli(requests.get(name)), milli(limits.get(name)));
    if req == 0 {
        return Some(format!(
            "{name} max limit to request ratio per {kind} is {enforced}, but no request is specified or request is 0"
        ));
    }
    if lim == 0 {
        return Some(format!(
            "{name} max limit to request ratio per {kind} is {enforced}, but no limit is specified or limit is 0"
        ));
    }
    let observed = lim as f64 / req as f64;
    if observed * 1000.0 > enforced.milli_value() as f64 {
        return Some(format!(
            "{name} max limit to request ratio per {kind} is {enforced}, but provided ratio is {observed:.6}"
        ));
    }
    None
}

/// One error as is, several as `[a, b]` (upstream's aggregate).
fn aggregate(errors: Vec<String>) -> Result<(), String> {
    match errors.len() {
        0 => Ok(()),
        1 => Err(errors.into_iter().next().unwrap_or_default()),
        _ => Err(format!("[{}]", errors.join(", "))),
    }
}

fn check_item(
    item: &LimitRangeItem,
    kind: &str,
    requests: &ResourceList,
    limits: &ResourceList,
    errors: &mut Vec<String>,
) {
    for (name, q) in parse_list(item.min.as_ref()) {
        errors.extend(min_constraint(kind, &name, &q, requests, limits));
    }
    for (name, q) in parse_list(item.max.as_ref()) {
        errors.extend(max_constraint(kind, &name, &q, requests, limits));
    }
    for (name, q) in parse_list(item.max_limit_request_ratio.as_ref()) {
        errors.extend(ratio_constraint(kind, &name, &q, requests, limits));
    }
}

/// Check a (defaulted) pod against a LimitRange's Container and Pod items.
pub fn validate_pod(pod: &Pod, range: &LimitRange) -> Result<(), String> {
    let mut errors = Vec::new();
    let Some(spec) = &pod.spec else {
        return Ok(());
    };
    for item in items(range) {
        match item.type_.as_str() {
            "Container" => {
                for c in spec
                    .containers
                    .iter()
                    .chain(spec.init_containers.iter().flatten())
                {
                    let r = c.resources.as_ref();
                    let requests = parse_list(r.and_then(|r| r.requests.as_ref()));
                    let limits = parse_list(r.and_then(|r| r.limits.as_ref()));
                    check_item(item, "Container", &requests, &limits, &mut errors);
                }
            }
            "Pod" => {
                check_item(
                    item,
                    "Pod",
                    &pod_requests(pod),
                    &pod_limits(pod),
                    &mut errors,
                );
            }
            _ => {}
        }
    }
    aggregate(errors)
}

/// Check a claim's requested storage against a LimitRange's PersistentVolumeClaim items.
pub fn validate_pvc(pvc: &PersistentVolumeClaim, range: &LimitRange) -> Result<(), String> {
    let kind = "PersistentVolumeClaim";
    let requests = parse_list(
        pvc.spec
            .as_ref()
            .and_then(|s| s.resources.as_ref())
            .and_then(|r| r.requests.as_ref()),
    );
    let mut errors = Vec::new();
    for item in items(range).filter(|i| i.type_ == kind) {
        for (name, q) in parse_list(item.min.as_ref()) {
            errors.extend(min_constraint(kind, &name, &q, &requests, &BTreeMap::new()));
        }
        for (name, q) in parse_list(item.max.as_ref()) {
            errors.extend(max_request_constraint(kind, &name, &q, &requests));
        }
    }
    aggregate(errors)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn range(limits: Value) -> LimitRange {
        serde_json::from_value(json!({"metadata": {"name": "lr"}, "spec": {"limits": limits}}))
            .unwrap()
    }

    #[test]
    fn defaults_fill_only_what_containers_lack() {
        let lr = range(json!([{"type": "Container",
            "default": {"cpu": "500m", "memory": "256Mi"},
            "defaultRequest": {"cpu": "0.1", "memory": "128Mi"}}]));
        let mut pod = json!({"metadata": {"name": "p"}, "spec": {"containers": [
            {"name": "web", "image": "i", "resources": {"limits": {"cpu": "1"}}},
            {"name": "side", "image": "i"}
        ]}});
        default_pod(&mut pod, &lr);
        let web = &pod["spec"]["containers"][0]["resources"];
        assert_eq!(web["limits"], json!({"cpu": "1", "memory": "256Mi"}));
        assert_eq!(web["requests"], json!({"cpu": "100m", "memory": "128Mi"}));
        let side = &pod["spec"]["containers"][1]["resources"];
        assert_eq!(side["limits"], json!({"cpu": "500m", "memory": "256Mi"}));
        assert_eq!(
            pod["metadata"]["annotations"][ANNOTATION],
            "LimitRanger plugin set: cpu, memory request for container web; memory limit for container web; cpu, memory request for container side; cpu, memory limit for container side"
        );
    }

    #[test]
    fn no_defaults_leave_the_pod_alone() {
        let lr = range(json!([{"type": "PersistentVolumeClaim", "max": {"storage": "1Gi"}}]));
        let mut pod = json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": "i"}]}});
        let before = pod.clone();
        default_pod(&mut pod, &lr);
        assert_eq!(pod, before);
    }

    fn pod(resources: Value) -> Pod {
        serde_json::from_value(json!({"metadata": {"name": "p"}, "spec": {"containers": [
            {"name": "c", "image": "i", "resources": resources}]}}))
        .unwrap()
    }

    #[test]
    fn min_max_and_ratio_messages() {
        let lr = range(json!([{"type": "Container",
            "min": {"cpu": "100m"}, "max": {"cpu": "1", "memory": "1Gi"},
            "maxLimitRequestRatio": {"cpu": "2"}}]));
        assert!(validate_pod(&pod(json!({"requests": {"cpu": "500m", "memory": "1Gi"}, "limits": {"cpu": "1", "memory": "1Gi"}})), &lr).is_ok());
        assert_eq!(
            validate_pod(
                &pod(
                    json!({"requests": {"cpu": "500m"}, "limits": {"cpu": "2", "memory": "512Mi"}})
                ),
                &lr
            )
            .unwrap_err(),
            "[maximum cpu usage per Container is 1, but limit is 2, cpu max limit to request ratio per Container is 2, but provided ratio is 4.000000]"
        );
        assert_eq!(
            validate_pod(
                &pod(
                    json!({"requests": {"cpu": "50m"}, "limits": {"cpu": "100m", "memory": "1Gi"}})
                ),
                &lr
            )
            .unwrap_err(),
            "minimum cpu usage per Container is 100m, but request is 50m"
        );
        assert_eq!(
            validate_pod(
                &pod(json!({"requests": {"cpu": "500m"}, "limits": {"cpu": "500m"}})),
                &lr
            )
            .unwrap_err(),
            "maximum memory usage per Container is 1Gi.  No limit is specified"
        );
    }

    #[test]
    fn pod_items_use_pod_totals() {
        let lr = range(json!([{"type": "Pod", "max": {"cpu": "1"}}]));
        let two: Pod = serde_json::from_value(json!({"spec": {"containers": [
            {"name": "a", "image": "i", "resources": {"limits": {"cpu": "600m"}}},
            {"name": "b", "image": "i", "resources": {"limits": {"cpu": "600m"}}}]}}))
        .unwrap();
        assert_eq!(
            validate_pod(&two, &lr).unwrap_err(),
            "maximum cpu usage per Pod is 1, but limit is 1200m"
        );
    }

    #[test]
    fn claims_are_held_to_storage_min_and_max() {
        let lr = range(
            json!([{"type": "PersistentVolumeClaim", "min": {"storage": "1Gi"}, "max": {"storage": "2Gi"}}]),
        );
        let claim = |size: &str| -> PersistentVolumeClaim {
            serde_json::from_value(json!({"spec": {"resources": {"requests": {"storage": size}}}}))
                .unwrap()
        };
        assert!(validate_pvc(&claim("1536Mi"), &lr).is_ok());
        assert_eq!(
            validate_pvc(&claim("5Gi"), &lr).unwrap_err(),
            "maximum storage usage per PersistentVolumeClaim is 2Gi, but request is 5Gi"
        );
        assert_eq!(
            validate_pvc(&claim("500Mi"), &lr).unwrap_err(),
            "minimum storage usage per PersistentVolumeClaim is 1Gi, but request is 500Mi"
        );
    }
}
