//! What happens to an object on its way into the store, per resource, as upstream's registry
//! strategies and admission plugins do: server-set metadata, status/spec separation,
//! generation, defaulting, namespace lifecycle, allocations, and deletion plans.

use std::net::IpAddr;
use std::sync::Arc;

use api::{FieldError, ResourceInfo};
use rand::Rng;
use serde_json::{Value, json};

use crate::ApiServer;
use crate::allocator::Allocator;
use crate::error::{ApiError, ApiResult};
use crate::rest::DeleteOptions;

/// Resources whose `metadata.generation` tracks spec changes.
fn tracks_generation(resource: &ResourceInfo) -> bool {
    matches!(
        resource.plural,
        "deployments"
            | "replicasets"
            | "statefulsets"
            | "daemonsets"
            | "jobs"
            | "cronjobs"
            | "replicationcontrollers"
            | "horizontalpodautoscalers"
            | "poddisruptionbudgets"
            | "networkpolicies"
            | "ingresses"
            | "pods"
    )
}

pub fn now_rfc3339() -> String {
    rfc3339(chrono::Utc::now())
}

/// A timestamp as Kubernetes writes metadata times: RFC 3339, whole seconds, UTC.
fn rfc3339(at: chrono::DateTime<chrono::Utc>) -> String {
    at.format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

fn meta_mut(obj: &mut Value) -> &mut serde_json::Map<String, Value> {
    if !obj.get("metadata").is_some_and(Value::is_object) {
        obj["metadata"] = json!({});
    }
    obj["metadata"]
        .as_object_mut()
        .expect("just made an object")
}

/// Five characters as upstream's name generator picks them (no vowels, no confusable digits).
fn random_suffix() -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut rng = rand::rng();
    (0..5)
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
        .collect()
}

/// The namespaces every cluster keeps (upstream's NamespaceLifecycle admission).
pub const IMMORTAL_NAMESPACES: [&str; 3] = ["default", "kube-system", "kube-public"];

pub fn check_deletable(resource: &ResourceInfo, name: &str) -> ApiResult<()> {
    if resource.plural == "namespaces"
        && resource.group.is_empty()
        && IMMORTAL_NAMESPACES.contains(&name)
    {
        return Err(ApiError::forbidden(format!(
            "namespaces \"{name}\" is forbidden: this namespace may not be deleted"
        ))
        .with_details(json!({"name": name, "kind": "namespaces"})));
    }
    Ok(())
}

/// Namespaced writes need the namespace to exist and not be terminating.
pub fn check_namespace_writable(
    server: &ApiServer,
    namespace: &str,
    resource: &ResourceInfo,
) -> ApiResult<()> {
    let namespaces = api::resources::lookup("", "v1", "namespaces").expect("registered");
    let Some(ns) = server
        .cache
        .get(namespaces, &namespaces.key(None, namespace))
    else {
        return Err(ApiError::not_found(crate::error::Subject {
            group: "",
            resource: "namespaces",
            name: namespace,
        }));
    };
    let terminating = ns.value().pointer("/metadata/deletionTimestamp").is_some();
    if terminating && resource.plural != "events" {
        return Err(ApiError::forbidden(format!(
            "{} is forbidden: unable to create new content in namespace {namespace} because it is being terminated",
            resource.plural
        ))
        .with_details(json!({"name": namespace, "kind": "namespaces", "causes": [{"reason": "NamespaceTerminating", "message": format!("namespace {namespace} is being terminated"), "field": "metadata.namespace"}]})));
    }
    Ok(())
}

pub fn prepare_create(
    server: &Arc<ApiServer>,
    resource: &ResourceInfo,
    obj: &mut Value,
) -> ApiResult<()> {
    {
        let meta = meta_mut(obj);
        let has_name = meta
            .get("name")
            .and_then(Value::as_str)
            .is_some_and(|n| !n.is_empty());
        if !has_name
            && let Some(prefix) = meta
                .get("generateName")
                .and_then(Value::as_str)
                .filter(|p| !p.is_empty())
        {
            let name = format!("{prefix}{}", random_suffix());
            meta.insert("name".into(), json!(name));
        }
        meta.insert("uid".into(), json!(uuid::Uuid::new_v4().to_string()));
        meta.insert("creationTimestamp".into(), json!(now_rfc3339()));
        meta.remove("resourceVersion");
        meta.remove("deletionTimestamp");
        meta.remove("deletionGracePeriodSeconds");
        if tracks_generation(resource) {
            meta.insert("generation".into(), json!(1));
        } else {
            meta.remove("generation");
        }
    }
    match resource.plural {
        "services" => {
            obj["status"] = json!({"loadBalancer": {}});
        }
        // Defaulting fills in the status a new object starts with (Pending and the QoS
        // class for pods, Active for namespaces).
        "pods"
        | "namespaces"
        | "deployments"
        | "replicasets"
        | "statefulsets"
        | "daemonsets"
        | "jobs"
        | "cronjobs"
        | "replicationcontrollers"
        | "horizontalpodautoscalers"
        | "poddisruptionbudgets" => {
            if let Some(o) = obj.as_object_mut() {
                o.remove("status");
            }
        }
        _ => {}
    }
    api::defaults::apply(resource, obj);
    if resource.plural == "jobs" {
        api::defaults::job_selector(obj);
    }
    if resource.plural == "services" {
        allocate_service(&server.allocator, obj, None)?;
    }
    Ok(())
}

fn service_uses_node_ports(svc: &Value) -> bool {
    matches!(
        svc.pointer("/spec/type").and_then(Value::as_str),
        Some("NodePort" | "LoadBalancer")
    )
}

/// Fill in cluster IPs and node ports the client left empty; check the ones it chose.
fn allocate_service(allocator: &Allocator, svc: &mut Value, old: Option<&Value>) -> ApiResult<()> {
    let svc_type = svc
        .pointer("/spec/type")
        .and_then(Value::as_str)
        .unwrap_or("ClusterIP")
        .to_string();
    if svc_type == "ExternalName" {
        if let Some(spec) = svc.get_mut("spec").and_then(Value::as_object_mut) {
            spec.remove("clusterIP");
            spec.remove("clusterIPs");
        }
        return Ok(());
    }
    // Keep what the old object had when the new one leaves it out (as upstream's service REST does).
    if let Some(old) = old {
        let services = api::resources::lookup("", "v1", "services").expect("registered");
        api::defaults::apply_update(services, svc, old);
    }
    let ip = svc
        .pointer("/spec/clusterIP")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    if ip.is_empty() {
        let ip = allocator.random_ip().to_string();
        svc["spec"]["clusterIP"] = json!(ip);
        svc["spec"]["clusterIPs"] = json!([ip]);
    } else if ip != "None" {
        let parsed: Option<IpAddr> = ip.parse().ok();
        if !parsed.is_some_and(|p| allocator.service_cidr.contains_usable(p)) {
            return Err(invalid_service(
                svc,
                FieldError::invalid(
                    "spec.clusterIPs[0]",
                    &json!(ip),
                    format!(
                        "failed to allocate IP {ip}: provided IP is not in the valid range. The range of valid IPs is {}",
                        allocator.service_cidr
                    ),
                ),
            ));
        }
        if svc
            .pointer("/spec/clusterIPs")
            .and_then(Value::as_array)
            .is_none_or(|a| a.is_empty())
        {
            svc["spec"]["clusterIPs"] = json!([ip]);
        }
    } else if svc.pointer("/spec/clusterIPs").is_none() {
        svc["spec"]["clusterIPs"] = json!(["None"]);
    }
    let node_ports = service_uses_node_ports(svc);
    if let Some(ports) = svc.pointer_mut("/spec/ports").and_then(Value::as_array_mut) {
        for port in ports.iter_mut() {
            if !node_ports {
                if let Some(p) = port.as_object_mut() {
                    p.remove("nodePort");
                }
                continue;
            }
            if port
                .get("nodePort")
                .and_then(Value::as_i64)
                .is_some_and(|p| p != 0)
            {
                continue;
            }
            port["nodePort"] = json!(allocator.random_node_port());
        }
    }
    for (i, port) in svc
        .pointer("/spec/ports")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
        .iter()
        .enumerate()
    {
        if let Some(np) = port.get("nodePort").and_then(Value::as_i64)
            && (np < i64::from(allocator.node_ports.0) || np > i64::from(allocator.node_ports.1))
        {
            return Err(invalid_service(
                svc,
                FieldError::invalid(
                    format!("spec.ports[{i}].nodePort"),
                    &json!(np),
                    format!(
                        "provided port is not in the valid range. The range of valid ports is {}-{}",
                        allocator.node_ports.0, allocator.node_ports.1
                    ),
                ),
            ));
        }
    }
    Ok(())
}

fn invalid_service(svc: &Value, error: FieldError) -> ApiError {
    let name = svc
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("");
    ApiError::invalid(
        crate::error::Subject {
            group: "",
            resource: "services",
            name,
        },
        "Service",
        &[error],
    )
}

/// The reservation keys an object holds (service IPs and node ports).
pub fn reservations(resource: &ResourceInfo, obj: &Value) -> Vec<String> {
    if resource.plural != "services" || !resource.group.is_empty() {
        return Vec::new();
    }
    let mut keys = Vec::new();
    for ip in obj
        .pointer("/spec/clusterIPs")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        if let Some(ip) = ip.as_str().filter(|ip| !ip.is_empty() && *ip != "None") {
            keys.push(Allocator::ip_key(ip));
        }
    }
    for port in obj
        .pointer("/spec/ports")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        if let Some(np) = port
            .get("nodePort")
            .and_then(Value::as_i64)
            .filter(|p| *p != 0)
        {
            let key = Allocator::node_port_key(np);
            if !keys.contains(&key) {
                keys.push(key);
            }
        }
    }
    keys
}

/// When a reservation was already taken: the field error if the client chose that value.
pub fn explicit_reservation_conflict(
    resource: &ResourceInfo,
    requested: &Value,
    reservations: &[String],
    taken: &[Option<store::KeyValue>],
) -> Option<FieldError> {
    if resource.plural != "services" {
        return None;
    }
    for (key, prev) in reservations.iter().zip(taken) {
        if prev.is_none() {
            continue;
        }
        if let Some(ip) = key.strip_prefix(crate::allocator::SERVICE_IP_PREFIX)
            && requested.pointer("/spec/clusterIP").and_then(Value::as_str) == Some(ip)
        {
            return Some(FieldError::invalid(
                "spec.clusterIPs",
                &json!([ip]),
                format!("failed to allocate IP {ip}: provided IP is already allocated"),
            ));
        }
        if let Some(port) = key
            .strip_prefix(crate::allocator::NODE_PORT_PREFIX)
            .and_then(|p| p.parse::<i64>().ok())
        {
            let ports = requested
                .pointer("/spec/ports")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            if let Some(i) = ports
                .iter()
                .position(|p| p.get("nodePort").and_then(Value::as_i64) == Some(port))
            {
                return Some(FieldError::invalid(
                    format!("spec.ports[{i}].nodePort"),
                    &json!(port),
                    "provided port is already allocated",
                ));
            }
        }
    }
    None
}

/// Spec and status are written through separate endpoints; server-owned metadata is kept.
pub fn prepare_update(
    resource: &ResourceInfo,
    subresource: Option<&str>,
    new: &mut Value,
    old: &Value,
) -> ApiResult<()> {
    let has_status = resource.has_subresource("status");
    match subresource {
        Some("status") => {
            // Only status (and labels/annotations) change through /status.
            let status = new.get("status").cloned();
            let labels = new.pointer("/metadata/labels").cloned();
            let annotations = new.pointer("/metadata/annotations").cloned();
            let mut merged = old.clone();
            match status {
                Some(s) => merged["status"] = s,
                None => {
                    if let Some(o) = merged.as_object_mut() {
                        o.remove("status");
                    }
                }
            }
            let meta = meta_mut(&mut merged);
            for (field, value) in [("labels", labels), ("annotations", annotations)] {
                match value {
                    Some(v) => meta.insert(field.into(), v),
                    None => meta.remove(field),
                };
            }
            *new = merged;
        }
        Some("finalize") => {
            let finalizers = new.pointer("/spec/finalizers").cloned();
            let mut merged = old.clone();
            match finalizers {
                Some(f) => merged["spec"]["finalizers"] = f,
                None => {
                    if let Some(spec) = merged.get_mut("spec").and_then(Value::as_object_mut) {
                        spec.remove("finalizers");
                    }
                }
            }
            *new = merged;
        }
        Some(_) => {}
        None => {
            if has_status {
                match old.get("status") {
                    Some(s) => new["status"] = s.clone(),
                    None => {
                        if let Some(o) = new.as_object_mut() {
                            o.remove("status");
                        }
                    }
                }
            }
            if resource.plural == "namespaces" {
                match old.pointer("/spec/finalizers") {
                    Some(f) => new["spec"]["finalizers"] = f.clone(),
                    None => {
                        if let Some(spec) = new.get_mut("spec").and_then(Value::as_object_mut) {
                            spec.remove("finalizers");
                        }
                    }
                }
            }
            api::defaults::apply(resource, new);
        }
    }
    // Server-owned metadata never changes through an update.
    {
        let old_meta = old.get("metadata").cloned().unwrap_or(json!({}));
        let meta = meta_mut(new);
        for field in [
            "uid",
            "creationTimestamp",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "generation",
        ] {
            match old_meta.get(field) {
                Some(v) => meta.insert(field.into(), v.clone()),
                None => meta.remove(field),
            };
        }
        if !meta.contains_key("namespace")
            && let Some(ns) = old_meta.get("namespace")
        {
            meta.insert("namespace".into(), ns.clone());
        }
        if let Some(name) = old_meta.get("name") {
            meta.entry("name").or_insert(name.clone());
        }
    }
    if tracks_generation(resource) && spec_changed(new, old) {
        let generation = old
            .pointer("/metadata/generation")
            .and_then(Value::as_i64)
            .unwrap_or(0)
            + 1;
        meta_mut(new).insert("generation".into(), json!(generation));
    }
    Ok(())
}

/// Service updates need the server's allocator (kept separate because prepare_update is pure).
pub fn prepare_service_update(server: &ApiServer, new: &mut Value, old: &Value) -> ApiResult<()> {
    allocate_service(&server.allocator, new, Some(old))
}

/// Whether anything outside metadata and status differs.
fn spec_changed(new: &Value, old: &Value) -> bool {
    let strip = |v: &Value| -> Value {
        let mut v = v.clone();
        if let Some(o) = v.as_object_mut() {
            o.remove("metadata");
            o.remove("status");
        }
        v
    };
    strip(new) != strip(old)
}

fn has_finalizers(obj: &Value) -> bool {
    obj.pointer("/metadata/finalizers")
        .and_then(Value::as_array)
        .is_some_and(|f| !f.is_empty())
}

fn has_namespace_finalizers(obj: &Value) -> bool {
    obj.pointer("/spec/finalizers")
        .and_then(Value::as_array)
        .is_some_and(|f| !f.is_empty())
}

/// An object marked for deletion whose last finalizer is gone is deleted by the update.
pub fn deletion_finished(obj: &Value) -> bool {
    obj.pointer("/metadata/deletionTimestamp").is_some()
        && !has_finalizers(obj)
        && !(obj.get("kind").and_then(Value::as_str) == Some("Namespace")
            && has_namespace_finalizers(obj))
        && obj
            .pointer("/metadata/deletionGracePeriodSeconds")
            .and_then(Value::as_i64)
            .unwrap_or(0)
            == 0
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeletePlan {
    /// Remove from the store now.
    Remove,
    /// Keep, marked with a deletionTimestamp (finalizers or graceful termination pending).
    Mark,
    /// Already marked; nothing changes.
    Unchanged,
}

fn add_finalizer(obj: &mut Value, finalizer: &str) {
    let meta = meta_mut(obj);
    let list = meta.entry("finalizers").or_insert_with(|| json!([]));
    if let Some(list) = list.as_array_mut()
        && !list.iter().any(|f| f == finalizer)
    {
        list.push(json!(finalizer));
    }
}

/// Decide what a delete does, and mark the object accordingly.
pub fn plan_delete(
    resource: &ResourceInfo,
    obj: &mut Value,
    options: &DeleteOptions,
) -> DeletePlan {
    let is_pod = resource.plural == "pods" && resource.group.is_empty();
    let scheduled = obj
        .pointer("/spec/nodeName")
        .and_then(Value::as_str)
        .is_some_and(|n| !n.is_empty());
    let terminal = matches!(
        obj.pointer("/status/phase").and_then(Value::as_str),
        Some("Succeeded" | "Failed")
    );
    let grace = if is_pod && scheduled && !terminal {
        options
            .grace_period_seconds
            .or_else(|| {
                obj.pointer("/spec/terminationGracePeriodSeconds")
                    .and_then(Value::as_i64)
            })
            .unwrap_or(30)
            .max(0)
    } else {
        0
    };
    if obj.pointer("/metadata/deletionTimestamp").is_some() {
        let current = obj
            .pointer("/metadata/deletionGracePeriodSeconds")
            .and_then(Value::as_i64)
            .unwrap_or(0);
        if is_pod && grace < current {
            meta_mut(obj).insert("deletionGracePeriodSeconds".into(), json!(grace));
            let at = chrono::Utc::now() + chrono::Duration::seconds(grace);
            meta_mut(obj).insert("deletionTimestamp".into(), json!(rfc3339(at)));
            return if grace == 0 && !has_finalizers(obj) {
                DeletePlan::Remove
            } else {
                DeletePlan::Mark
            };
        }
        return DeletePlan::Unchanged;
    }
    match options.propagation_policy.as_deref() {
        Some("Orphan") => add_finalizer(obj, "orphan"),
        Some("Foreground") => add_finalizer(obj, "foregroundDeletion"),
        _ => {}
    }
    let namespace_pending = resource.plural == "namespaces" && has_namespace_finalizers(obj);
    if grace == 0 && !has_finalizers(obj) && !namespace_pending {
        return DeletePlan::Remove;
    }
    let at = chrono::Utc::now() + chrono::Duration::seconds(grace);
    let meta = meta_mut(obj);
    meta.insert("deletionTimestamp".into(), json!(rfc3339(at)));
    meta.insert("deletionGracePeriodSeconds".into(), json!(grace));
    if resource.plural == "namespaces" {
        obj["status"]["phase"] = json!("Terminating");
    }
    DeletePlan::Mark
}

/// Set a condition in `status.conditions`, keeping lastTransitionTime when the status is unchanged.
pub fn set_condition(obj: &mut Value, kind: &str, status: &str, reason: Option<&str>) {
    if !obj.get("status").is_some_and(Value::is_object) {
        obj["status"] = json!({});
    }
    let conditions = obj["status"]
        .as_object_mut()
        .expect("object")
        .entry("conditions")
        .or_insert_with(|| json!([]));
    let Some(list) = conditions.as_array_mut() else {
        return;
    };
    let mut condition = json!({"type": kind, "status": status, "lastProbeTime": null, "lastTransitionTime": now_rfc3339()});
    if let Some(reason) = reason {
        condition["reason"] = json!(reason);
    }
    match list
        .iter_mut()
        .find(|c| c.get("type").and_then(Value::as_str) == Some(kind))
    {
        Some(existing) if existing.get("status").and_then(Value::as_str) == Some(status) => {}
        Some(existing) => *existing = condition,
        None => list.push(condition),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_update_only_touches_status() {
        let deploy = api::resources::lookup("apps", "v1", "deployments").unwrap();
        let old = json!({"metadata": {"name": "a", "uid": "u", "generation": 1}, "spec": {"replicas": 1}, "status": {"replicas": 0}});
        let mut new = json!({"metadata": {"name": "a", "uid": "x"}, "spec": {"replicas": 5}, "status": {"replicas": 1}});
        prepare_update(deploy, Some("status"), &mut new, &old).unwrap();
        assert_eq!(new["spec"]["replicas"], 1);
        assert_eq!(new["status"]["replicas"], 1);
        assert_eq!(new["metadata"]["uid"], "u");
        assert_eq!(new["metadata"]["generation"], 1);
    }

    #[test]
    fn spec_update_bumps_generation_and_keeps_status() {
        let deploy = api::resources::lookup("apps", "v1", "deployments").unwrap();
        let mut old = json!({"metadata": {"name": "a", "uid": "u", "generation": 1}, "spec": {"replicas": 1}, "status": {"replicas": 0}});
        // Stored objects are always defaulted.
        api::defaults::apply(deploy, &mut old);
        let mut new =
            json!({"metadata": {"name": "a"}, "spec": {"replicas": 5}, "status": {"replicas": 9}});
        prepare_update(deploy, None, &mut new, &old).unwrap();
        assert_eq!(new["status"]["replicas"], 0);
        assert_eq!(new["metadata"]["generation"], 2);
        let mut same =
            json!({"metadata": {"name": "a", "labels": {"x": "y"}}, "spec": {"replicas": 1}});
        prepare_update(deploy, None, &mut same, &old).unwrap();
        assert_eq!(same["metadata"]["generation"], 1);
    }

    #[test]
    fn delete_plans() {
        let pods = api::resources::lookup("", "v1", "pods").unwrap();
        let mut unscheduled = json!({"metadata": {"name": "p"}, "spec": {}});
        assert_eq!(
            plan_delete(pods, &mut unscheduled, &DeleteOptions::default()),
            DeletePlan::Remove
        );
        let mut running = json!({"metadata": {"name": "p"}, "spec": {"nodeName": "n1"}, "status": {"phase": "Running"}});
        assert_eq!(
            plan_delete(pods, &mut running, &DeleteOptions::default()),
            DeletePlan::Mark
        );
        assert_eq!(running["metadata"]["deletionGracePeriodSeconds"], 30);
        let now = DeleteOptions {
            grace_period_seconds: Some(0),
            ..Default::default()
        };
        assert_eq!(plan_delete(pods, &mut running, &now), DeletePlan::Remove);
        let cms = api::resources::lookup("", "v1", "configmaps").unwrap();
        let mut held = json!({"metadata": {"name": "c", "finalizers": ["example.com/hold"]}});
        assert_eq!(
            plan_delete(cms, &mut held, &DeleteOptions::default()),
            DeletePlan::Mark
        );
        assert!(held["metadata"]["deletionTimestamp"].is_string());
        assert_eq!(
            plan_delete(cms, &mut held, &DeleteOptions::default()),
            DeletePlan::Unchanged
        );
        let mut finished = held.clone();
        finished["metadata"]["finalizers"] = json!([]);
        assert!(deletion_finished(&finished));
        let ns = api::resources::lookup("", "v1", "namespaces").unwrap();
        let mut namespace = json!({"kind": "Namespace", "metadata": {"name": "n"}, "spec": {"finalizers": ["kubernetes"]}, "status": {"phase": "Active"}});
        assert_eq!(
            plan_delete(ns, &mut namespace, &DeleteOptions::default()),
            DeletePlan::Mark
        );
        assert_eq!(namespace["status"]["phase"], "Terminating");
        assert!(!deletion_finished(&namespace));
    }
}
