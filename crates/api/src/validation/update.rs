//! What may not change on update (`Validate<Kind>Update`).

use serde_json::{Map, Value};

use super::kinds::pv_sources;
use super::{IMMUTABLE, arr, get, immutable, json_diff, parse_quantity, str_of};
use crate::{FieldError, ResourceInfo};

type Errs = Vec<FieldError>;

/// The fields of a pod spec a client may change, in upstream's words.
pub const POD_UPDATABLE_FIELDS: &str = "pod updates may not change fields other than `spec.containers[*].image`,`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` (only additions to existing tolerations),`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was previously negative)";

const STATEFULSET_UPDATABLE_FIELDS: &str = "updates to statefulset spec for fields other than 'replicas', 'ordinals', 'template', 'updateStrategy', 'revisionHistoryLimit', 'persistentVolumeClaimRetentionPolicy' and 'minReadySeconds' are forbidden";

pub(crate) fn validate(resource: &ResourceInfo, new: &Value, old: &Value, errs: &mut Errs) {
    let spec = get(new, "spec");
    let old_spec = get(old, "spec");
    match (resource.group, resource.kind) {
        ("", "Pod") => pod(spec, old_spec, errs),
        ("", "Service") => service(spec, old_spec, errs),
        ("", "Secret") => {
            immutable(new, old, "type", "", errs);
            immutable_data(new, old, &["data"], errs);
        }
        ("", "ConfigMap") => immutable_data(new, old, &["data", "binaryData"], errs),
        ("", "PersistentVolumeClaim") => pvc(new, old, errs),
        ("", "PersistentVolume") => pv(spec, old_spec, errs),
        ("", "Node") => node(spec, old_spec, errs),
        ("apps", "Deployment" | "ReplicaSet" | "DaemonSet") => {
            immutable(spec, old_spec, "selector", "spec", errs)
        }
        ("apps", "StatefulSet") => {
            immutable(spec, old_spec, "selector", "spec", errs);
            stateful_set(spec, old_spec, errs);
        }
        ("apps", "ControllerRevision") => immutable(new, old, "data", "", errs),
        ("batch", "Job") => job(spec, old_spec, errs),
        ("discovery.k8s.io", "EndpointSlice") => immutable(new, old, "addressType", "", errs),
        ("networking.k8s.io", "IngressClass") => {
            immutable(spec, old_spec, "controller", "spec", errs)
        }
        ("rbac.authorization.k8s.io", "RoleBinding" | "ClusterRoleBinding") => {
            let role_ref = get(new, "roleRef");
            if role_ref != get(old, "roleRef") {
                errs.push(FieldError::invalid(
                    "roleRef",
                    role_ref,
                    "cannot change roleRef",
                ));
            }
        }
        ("storage.k8s.io", "StorageClass") => {
            for field in ["parameters", "provisioner", "reclaimPolicy"] {
                if get(new, field) != get(old, field) {
                    errs.push(FieldError::forbidden(
                        field,
                        format!("updates to {field} are forbidden."),
                    ));
                }
            }
            immutable(new, old, "volumeBindingMode", "", errs);
        }
        ("scheduling.k8s.io", "PriorityClass") => {
            if get(new, "value") != get(old, "value") {
                errs.push(FieldError::forbidden(
                    "value",
                    "may not be changed in an update.",
                ));
            }
            immutable(new, old, "preemptionPolicy", "", errs);
        }
        _ => {}
    }
}

/// `ValidatePodUpdate`: only images, the deadline, added tolerations and a negative grace
/// period set to 1 may change.
fn pod(spec: &Value, old_spec: &Value, errs: &mut Errs) {
    let mut munged = spec.clone();
    let Some(m) = munged.as_object_mut() else {
        return;
    };
    for key in ["containers", "initContainers"] {
        let old_list = arr(old_spec, key);
        if let Some(list) = m.get_mut(key).and_then(Value::as_array_mut)
            && list.len() == old_list.len()
        {
            for (c, old_c) in list.iter_mut().zip(old_list) {
                if let (Some(c), Some(image)) = (c.as_object_mut(), old_c.get("image")) {
                    c.insert("image".into(), image.clone());
                }
            }
        }
    }
    // The deadline may be set or lowered, not raised or removed.
    let new_deadline = spec.get("activeDeadlineSeconds").and_then(Value::as_i64);
    let old_deadline = old_spec
        .get("activeDeadlineSeconds")
        .and_then(Value::as_i64);
    match (new_deadline, old_deadline) {
        (Some(n), Some(o)) if n > o => {
            errs.push(FieldError::invalid(
                "spec.activeDeadlineSeconds",
                &Value::from(n),
                "must be less than or equal to previous value",
            ));
            return;
        }
        (None, Some(_)) => errs.push(FieldError::invalid(
            "spec.activeDeadlineSeconds",
            &Value::Null,
            "must not update from a positive integer to nil value",
        )),
        _ => {}
    }
    restore(m, old_spec, "activeDeadlineSeconds");
    let old_tolerations = arr(old_spec, "tolerations");
    let new_tolerations = arr(spec, "tolerations");
    let kept = old_tolerations.iter().all(|o| {
        new_tolerations.iter().any(|n| {
            let same = |k: &str| get(n, k) == get(o, k);
            same("key") && same("operator") && same("value") && same("effect")
        })
    });
    if kept {
        restore(m, old_spec, "tolerations");
    } else {
        errs.push(FieldError::forbidden(
            "spec.tolerations",
            "existing toleration can not be modified except its tolerationSeconds",
        ));
    }
    let old_grace = old_spec
        .get("terminationGracePeriodSeconds")
        .and_then(Value::as_i64);
    let new_grace = spec
        .get("terminationGracePeriodSeconds")
        .and_then(Value::as_i64);
    if old_grace.is_some_and(|g| g < 0) && new_grace == Some(1) {
        restore(m, old_spec, "terminationGracePeriodSeconds");
    }
    if &munged != old_spec {
        errs.push(FieldError::forbidden(
            "spec",
            format!("{POD_UPDATABLE_FIELDS}{}", json_diff(old_spec, &munged)),
        ));
    }
}

fn restore(map: &mut Map<String, Value>, old: &Value, key: &str) {
    match old.get(key) {
        Some(v) => {
            map.insert(key.into(), v.clone());
        }
        None => {
            map.remove(key);
        }
    }
}

fn service(spec: &Value, old_spec: &Value, errs: &mut Errs) {
    if str_of(spec, "type") == "ExternalName" || str_of(old_spec, "type") == "ExternalName" {
        return;
    }
    let new_ips = arr(spec, "clusterIPs");
    let old_ips = arr(old_spec, "clusterIPs");
    match (old_ips.first(), new_ips.first()) {
        (Some(o), Some(n)) if o != n => errs.push(FieldError::invalid(
            "spec.clusterIPs[0]",
            get(spec, "clusterIPs"),
            "may not change once set",
        )),
        (Some(_), None) => errs.push(FieldError::invalid(
            "spec.clusterIPs[0]",
            get(spec, "clusterIPs"),
            "primary clusterIP can not be unset",
        )),
        _ => {}
    }
    let new_families = arr(spec, "ipFamilies");
    let old_families = arr(old_spec, "ipFamilies");
    if let (Some(o), Some(n)) = (old_families.first(), new_families.first())
        && o != n
    {
        errs.push(FieldError::invalid(
            "spec.ipFamilies[0]",
            n,
            "may not change once set",
        ));
    }
}

/// `immutable: true` freezes data and the flag itself.
fn immutable_data(new: &Value, old: &Value, fields: &[&str], errs: &mut Errs) {
    if old.get("immutable") != Some(&Value::Bool(true)) {
        return;
    }
    let message = "field is immutable when `immutable` is set";
    if new.get("immutable") != Some(&Value::Bool(true)) {
        errs.push(FieldError::forbidden("immutable", message));
    }
    for field in fields {
        if get(new, field) != get(old, field) {
            errs.push(FieldError::forbidden(*field, message));
        }
    }
}

fn pvc(new: &Value, old: &Value, errs: &mut Errs) {
    let spec = get(new, "spec");
    let old_spec = get(old, "spec");
    let mut new_clone = spec.clone();
    let mut old_clone = old_spec.clone();
    // volumeName may be set once; a storage class may be set when none was.
    if str_of(old_spec, "volumeName").is_empty() {
        copy_field(&mut old_clone, spec, "volumeName");
    }
    if old_spec.get("storageClassName").is_none_or(Value::is_null) {
        copy_field(&mut old_clone, spec, "storageClassName");
    }
    copy_field(&mut new_clone, old_spec, "volumeAttributesClassName");
    let bound = str_of(get(new, "status"), "phase") == "Bound";
    if bound {
        let old_storage = storage_request(old_spec).cloned();
        if let Some(requests) = new_clone
            .get_mut("resources")
            .and_then(|r| r.get_mut("requests"))
            .and_then(Value::as_object_mut)
        {
            match old_storage {
                Some(s) => requests.insert("storage".into(), s),
                None => requests.remove("storage"),
            };
        }
    }
    if new_clone != old_clone {
        errs.push(FieldError::forbidden(
            "spec",
            format!(
                "spec is immutable after creation except resources.requests and volumeAttributesClassName for bound claims{}",
                json_diff(&old_clone, &new_clone)
            ),
        ));
    }
    let quantity = |v: Option<&Value>| {
        v.and_then(Value::as_str)
            .and_then(|s| parse_quantity(s).ok())
    };
    let new_size = quantity(storage_request(spec));
    let old_size = quantity(storage_request(old_spec));
    let status_size = quantity(
        get(old, "status")
            .get("capacity")
            .and_then(|c| c.get("storage")),
    );
    if let (Some(n), Some(o)) = (new_size, old_size)
        && n < o
        && status_size.is_some_and(|s| n <= s)
    {
        errs.push(FieldError::forbidden(
            "spec.resources.requests.storage",
            "field can not be less than status.capacity",
        ));
    }
    immutable(spec, old_spec, "volumeMode", "", errs);
}

fn storage_request(spec: &Value) -> Option<&Value> {
    spec.get("resources")
        .and_then(|r| r.get("requests"))
        .and_then(|r| r.get("storage"))
}

fn copy_field(target: &mut Value, source: &Value, key: &str) {
    if let Some(t) = target.as_object_mut() {
        match source.get(key) {
            Some(v) => {
                t.insert(key.into(), v.clone());
            }
            None => {
                t.remove(key);
            }
        }
    }
}

fn pv(spec: &Value, old_spec: &Value, errs: &mut Errs) {
    let source = |s: &Value| -> Value {
        let mut m = Map::new();
        for key in pv_sources() {
            if let Some(v) = s.get(*key) {
                m.insert((*key).to_string(), v.clone());
            }
        }
        Value::Object(m)
    };
    let (new_source, old_source) = (source(spec), source(old_spec));
    if new_source != old_source {
        errs.push(FieldError::forbidden(
            "spec.persistentvolumesource",
            format!(
                "spec.persistentvolumesource is immutable after creation{}",
                json_diff(&old_source, &new_source)
            ),
        ));
    }
    immutable(spec, old_spec, "volumeMode", "", errs);
    if old_spec.get("nodeAffinity").is_some_and(|a| !a.is_null()) {
        immutable(spec, old_spec, "nodeAffinity", "", errs);
    }
}

fn node(spec: &Value, old_spec: &Value, errs: &mut Errs) {
    let old_cidrs = arr(old_spec, "podCIDRs");
    if !old_cidrs.is_empty() && old_cidrs != arr(spec, "podCIDRs") {
        errs.push(FieldError::forbidden(
            "spec.podCIDRs",
            "node updates may not change podCIDR except from \"\" to valid",
        ));
    }
    let old_provider = str_of(old_spec, "providerID");
    if !old_provider.is_empty() && old_provider != str_of(spec, "providerID") {
        errs.push(FieldError::forbidden(
            "spec.providerID",
            "node updates may not change providerID except from \"\" to valid",
        ));
    }
}

fn stateful_set(spec: &Value, old_spec: &Value, errs: &mut Errs) {
    let strip = |s: &Value| -> Value {
        let mut s = s.clone();
        if let Some(m) = s.as_object_mut() {
            for key in [
                "replicas",
                "ordinals",
                "template",
                "updateStrategy",
                "revisionHistoryLimit",
                "persistentVolumeClaimRetentionPolicy",
                "minReadySeconds",
                // Reported on its own as immutable.
                "selector",
            ] {
                m.remove(key);
            }
        }
        s
    };
    if strip(spec) != strip(old_spec) {
        errs.push(FieldError::forbidden("spec", STATEFULSET_UPDATABLE_FIELDS));
    }
}

fn job(spec: &Value, old_spec: &Value, errs: &mut Errs) {
    immutable(spec, old_spec, "selector", "spec", errs);
    // A suspended Job that never started may change its pods' scheduling directives.
    let mut template = get(spec, "template").clone();
    let old_template = get(old_spec, "template");
    let suspended = spec.get("suspend") == Some(&Value::Bool(true));
    if suspended {
        for (path, key) in [
            (&["metadata"][..], "labels"),
            (&["metadata"][..], "annotations"),
            (&["spec"][..], "nodeSelector"),
            (&["spec"][..], "tolerations"),
            (&["spec"][..], "affinity"),
            (&["spec"][..], "schedulingGates"),
        ] {
            let old_value = path
                .iter()
                .try_fold(old_template, |v, p| v.get(*p))
                .and_then(|v| v.get(key));
            if let Some(target) = path
                .iter()
                .try_fold(&mut template, |v, p| v.get_mut(*p))
                .and_then(Value::as_object_mut)
            {
                match old_value {
                    Some(v) => target.insert(key.into(), v.clone()),
                    None => target.remove(key),
                };
            }
        }
    }
    if &template != old_template {
        errs.push(FieldError::invalid(
            "spec.template",
            get(spec, "template"),
            IMMUTABLE,
        ));
    }
    immutable(spec, old_spec, "completionMode", "spec", errs);
    immutable(spec, old_spec, "podFailurePolicy", "spec", errs);
    immutable(spec, old_spec, "backoffLimitPerIndex", "spec", errs);
    // Indexed Jobs may scale completions together with parallelism.
    let elastic = str_of(spec, "completionMode") == "Indexed"
        && get(spec, "completions") == get(spec, "parallelism");
    if !elastic {
        immutable(spec, old_spec, "completions", "spec", errs);
    }
}
