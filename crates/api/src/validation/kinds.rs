//! Per-kind validation of an object's own fields (create and update alike).

use std::collections::HashSet;

use base64::Engine;
use serde_json::{Value, json};

use super::pod::{self, port_num_or_name, protocol, quantity, resource_quantity};
use super::{
    MAX_SECRET_SIZE, NONNEGATIVE, arr, child, cron, get, index, invalid_each, key, map_of, names,
    nonnegative, selector_is_empty, selector_matches, str_of, validate_label_selector,
    validate_labels,
};
use crate::{FieldError, ResourceInfo};

type Errs = Vec<FieldError>;

pub(crate) fn validate(resource: &ResourceInfo, obj: &Value, old: Option<&Value>, errs: &mut Errs) {
    let spec = get(obj, "spec");
    match (resource.group, resource.kind) {
        ("", "Pod") => pod::validate_spec(spec, "spec", true, errs),
        ("", "PodTemplate") => pod::validate_template(get(obj, "template"), "template", errs),
        ("", "ReplicationController") => replication_controller(spec, errs),
        ("", "Service") => service(spec, errs),
        ("", "ConfigMap") => config_map(obj, errs),
        ("", "Secret") => secret(obj, errs),
        ("", "Namespace") => {
            for (i, f) in arr(spec, "finalizers").iter().enumerate() {
                let p = index("spec.finalizers", i);
                let name = f.as_str().unwrap_or("");
                let msgs = names::is_qualified_name(name);
                if !msgs.is_empty() {
                    invalid_each(errs, &p, f, msgs);
                } else if !name.contains('/') && name != "kubernetes" {
                    errs.push(FieldError::invalid(
                        &p,
                        f,
                        "name is neither a standard finalizer name nor is it fully qualified",
                    ));
                }
            }
        }
        ("", "Node") => node(spec, errs),
        ("", "Event") => core_event(obj, errs),
        ("events.k8s.io", "Event") => new_event(obj, errs),
        ("", "PersistentVolumeClaim") => pvc_spec(spec, "spec", errs),
        ("", "PersistentVolume") => persistent_volume(spec, errs),
        ("", "ResourceQuota") => {
            if let Some(hard) = map_of(spec, "hard") {
                for (name, value) in hard {
                    resource_quantity(name, value, &key("spec.hard", name), errs);
                }
            }
        }
        ("", "LimitRange") => limit_range(spec, errs),
        ("", "Endpoints") => endpoints(obj, errs),
        ("apps", "Deployment") => deployment(spec, errs),
        ("apps", "ReplicaSet") => replica_set(spec, errs),
        ("apps", "StatefulSet") => stateful_set(spec, errs),
        ("apps", "DaemonSet") => daemon_set(spec, errs),
        ("apps", "ControllerRevision") => {
            if obj.get("data").is_none_or(Value::is_null) {
                errs.push(FieldError::required("data", "data is mandatory"));
            }
            nonnegative(obj, "revision", "", errs);
        }
        ("batch", "Job") => job(obj, errs),
        ("batch", "CronJob") => cron_job(obj, old, errs),
        ("autoscaling", "HorizontalPodAutoscaler") => hpa(spec, errs),
        ("coordination.k8s.io", "Lease") => lease(spec, errs),
        ("discovery.k8s.io", "EndpointSlice") => endpoint_slice(obj, errs),
        ("networking.k8s.io", "Ingress") => ingress(spec, errs),
        ("networking.k8s.io", "IngressClass") => ingress_class(spec, errs),
        ("networking.k8s.io", "NetworkPolicy") => network_policy(spec, errs),
        ("policy", "PodDisruptionBudget") => pdb(spec, errs),
        ("rbac.authorization.k8s.io", "Role") => {
            for (i, rule) in arr(obj, "rules").iter().enumerate() {
                policy_rule(rule, true, &index("rules", i), errs);
            }
        }
        ("rbac.authorization.k8s.io", "ClusterRole") => cluster_role(obj, errs),
        ("rbac.authorization.k8s.io", "RoleBinding") => binding(obj, true, errs),
        ("rbac.authorization.k8s.io", "ClusterRoleBinding") => binding(obj, false, errs),
        ("storage.k8s.io", "StorageClass") => storage_class(obj, errs),
        ("scheduling.k8s.io", "PriorityClass") => priority_class(obj, errs),
        _ => {}
    }
}

// ---------------------------------------------------------------------------------------------
// Workloads

fn non_empty_selector(spec: &Value, kind: &str, errs: &mut Errs) -> Option<()> {
    let Some(selector) = spec.get("selector").filter(|s| !s.is_null()) else {
        errs.push(FieldError::required("spec.selector", ""));
        return None;
    };
    validate_label_selector(selector, "spec.selector", errs);
    if selector_is_empty(selector) {
        errs.push(FieldError::invalid(
            "spec.selector",
            selector,
            format!("empty selector is invalid for {kind}"),
        ));
    }
    Some(())
}

fn template_labels(spec: &Value) -> Option<&serde_json::Map<String, Value>> {
    spec.get("template")
        .and_then(|t| t.get("metadata"))
        .and_then(|m| m.get("labels"))
        .and_then(Value::as_object)
}

fn template_labels_value(spec: &Value) -> Value {
    template_labels(spec).map_or(Value::Null, |m| Value::Object(m.clone()))
}

fn selector_matches_template(spec: &Value, errs: &mut Errs) {
    let selector = get(spec, "selector");
    if selector.is_null() || selector_is_empty(selector) {
        return;
    }
    if !selector_matches(selector, template_labels(spec)) {
        errs.push(FieldError::invalid(
            "spec.template.metadata.labels",
            &template_labels_value(spec),
            "`selector` does not match template `labels`",
        ));
    }
}

/// `ValidatePodTemplateSpecForReplicaSet` and friends: a template that restarts always.
fn long_running_template(spec: &Value, owner: &str, errs: &mut Errs) {
    let Some(template) = spec.get("template").filter(|t| !t.is_null()) else {
        errs.push(FieldError::required("spec.template", ""));
        return;
    };
    pod::validate_template(template, "spec.template", errs);
    let template_spec = get(template, "spec");
    let restart = get(template_spec, "restartPolicy");
    if restart.as_str() != Some("Always") {
        errs.push(FieldError::not_supported(
            "spec.template.spec.restartPolicy",
            restart,
            &["Always"],
        ));
    }
    if let Some(deadline) = template_spec
        .get("activeDeadlineSeconds")
        .filter(|v| !v.is_null())
    {
        if owner == "DaemonSet" {
            errs.push(FieldError::invalid(
                "spec.template.spec.activeDeadlineSeconds",
                deadline,
                "activeDeadlineSeconds must be nil for DaemonSets",
            ));
        } else {
            errs.push(FieldError::forbidden(
                "spec.template.spec.activeDeadlineSeconds",
                format!("activeDeadlineSeconds in {owner} is not Supported"),
            ));
        }
    }
}

fn replication_controller(spec: &Value, errs: &mut Errs) {
    nonnegative(spec, "replicas", "spec", errs);
    nonnegative(spec, "minReadySeconds", "spec", errs);
    let selector = map_of(spec, "selector");
    if selector.is_none_or(serde_json::Map::is_empty) {
        errs.push(FieldError::required("spec.selector", ""));
    }
    validate_labels(spec.get("selector"), "spec.selector", errs);
    if let Some(selector) = selector.filter(|s| !s.is_empty()) {
        let labels = template_labels(spec);
        let matches = selector
            .iter()
            .all(|(k, v)| labels.and_then(|l| l.get(k)) == Some(v));
        if spec.get("template").is_some() && !matches {
            errs.push(FieldError::invalid(
                "spec.template.metadata.labels",
                &template_labels_value(spec),
                "`selector` does not match template `labels`",
            ));
        }
    }
    long_running_template(spec, "ReplicationController", errs);
}

fn deployment(spec: &Value, errs: &mut Errs) {
    nonnegative(spec, "replicas", "spec", errs);
    if non_empty_selector(spec, "deployment", errs).is_some() {
        selector_matches_template(spec, errs);
    }
    long_running_template(spec, "ReplicaSet", errs);
    let strategy = get(spec, "strategy");
    let kind = get(strategy, "type");
    match kind.as_str() {
        Some("Recreate") => {
            if strategy.get("rollingUpdate").is_some_and(|r| !r.is_null()) {
                errs.push(FieldError::forbidden(
                    "spec.strategy.rollingUpdate",
                    "may not be specified when strategy `type` is 'Recreate'",
                ));
            }
        }
        Some("RollingUpdate") => match strategy.get("rollingUpdate").filter(|r| !r.is_null()) {
            None => errs.push(FieldError::required(
                "spec.strategy.rollingUpdate",
                "this should be defaulted and never be nil",
            )),
            Some(rolling) => {
                let p = "spec.strategy.rollingUpdate";
                let unavailable = get(rolling, "maxUnavailable");
                let surge = get(rolling, "maxSurge");
                positive_int_or_percent(unavailable, &child(p, "maxUnavailable"), errs);
                positive_int_or_percent(surge, &child(p, "maxSurge"), errs);
                if int_or_percent_value(unavailable) == 0 && int_or_percent_value(surge) == 0 {
                    errs.push(FieldError::invalid(
                        child(p, "maxUnavailable"),
                        unavailable,
                        "may not be 0 when `maxSurge` is 0",
                    ));
                }
                not_more_than_100_percent(unavailable, &child(p, "maxUnavailable"), errs);
            }
        },
        _ => errs.push(FieldError::not_supported(
            "spec.strategy.type",
            kind,
            &["Recreate", "RollingUpdate"],
        )),
    }
    nonnegative(spec, "minReadySeconds", "spec", errs);
    nonnegative(spec, "revisionHistoryLimit", "spec", errs);
    if let Some(deadline) = spec.get("progressDeadlineSeconds").and_then(Value::as_i64) {
        nonnegative(spec, "progressDeadlineSeconds", "spec", errs);
        let min_ready = spec
            .get("minReadySeconds")
            .and_then(Value::as_i64)
            .unwrap_or(0);
        if deadline <= min_ready {
            errs.push(FieldError::invalid(
                "spec.progressDeadlineSeconds",
                &Value::from(deadline),
                "must be greater than minReadySeconds",
            ));
        }
    }
}

fn replica_set(spec: &Value, errs: &mut Errs) {
    nonnegative(spec, "replicas", "spec", errs);
    nonnegative(spec, "minReadySeconds", "spec", errs);
    if non_empty_selector(spec, "deployment", errs).is_some() {
        selector_matches_template(spec, errs);
    }
    long_running_template(spec, "ReplicaSet", errs);
}

fn stateful_set(spec: &Value, errs: &mut Errs) {
    let policy = get(spec, "podManagementPolicy");
    match policy.as_str() {
        Some("OrderedReady" | "Parallel") => {}
        None | Some("") => errs.push(FieldError::required("spec.podManagementPolicy", "")),
        Some(_) => errs.push(FieldError::invalid(
            "spec.podManagementPolicy",
            policy,
            "must be 'OrderedReady' or 'Parallel'",
        )),
    }
    let strategy = get(spec, "updateStrategy");
    match str_of(strategy, "type") {
        "" => errs.push(FieldError::required("spec.updateStrategy", "")),
        "OnDelete" => {
            if let Some(r) = strategy.get("rollingUpdate").filter(|r| !r.is_null()) {
                errs.push(FieldError::invalid(
                    "spec.updateStrategy.rollingUpdate",
                    r,
                    "only allowed for updateStrategy 'RollingUpdate'",
                ));
            }
        }
        "RollingUpdate" => {
            if let Some(r) = strategy.get("rollingUpdate") {
                nonnegative(r, "partition", "spec.updateStrategy.rollingUpdate", errs);
            }
        }
        _ => errs.push(FieldError::invalid(
            "spec.updateStrategy",
            strategy,
            "must be 'RollingUpdate' or 'OnDelete'",
        )),
    }
    nonnegative(spec, "revisionHistoryLimit", "spec", errs);
    nonnegative(spec, "replicas", "spec", errs);
    nonnegative(spec, "minReadySeconds", "spec", errs);
    if let Some(ordinals) = spec.get("ordinals") {
        nonnegative(ordinals, "start", "spec.ordinals", errs);
    }
    if non_empty_selector(spec, "statefulset", errs).is_some() {
        selector_matches_template(spec, errs);
    }
    long_running_template(spec, "StatefulSet", errs);
    for (i, claim) in arr(spec, "volumeClaimTemplates").iter().enumerate() {
        let p = index("spec.volumeClaimTemplates", i);
        let name = str_of(get(claim, "metadata"), "name");
        if name.is_empty() {
            errs.push(FieldError::required(child(&p, "metadata.name"), ""));
        }
        pvc_spec(get(claim, "spec"), &child(&p, "spec"), errs);
    }
}

fn daemon_set(spec: &Value, errs: &mut Errs) {
    if non_empty_selector(spec, "daemonset", errs).is_some() {
        selector_matches_template(spec, errs);
    }
    long_running_template(spec, "DaemonSet", errs);
    nonnegative(spec, "minReadySeconds", "spec", errs);
    nonnegative(spec, "revisionHistoryLimit", "spec", errs);
    let strategy = get(spec, "updateStrategy");
    match str_of(strategy, "type") {
        "OnDelete" => {}
        "RollingUpdate" => match strategy.get("rollingUpdate").filter(|r| !r.is_null()) {
            None => errs.push(FieldError::required(
                "spec.updateStrategy.rollingUpdate",
                "",
            )),
            Some(rolling) => {
                let p = "spec.updateStrategy.rollingUpdate";
                let unavailable = get(rolling, "maxUnavailable");
                let surge = get(rolling, "maxSurge");
                positive_int_or_percent(unavailable, &child(p, "maxUnavailable"), errs);
                positive_int_or_percent(surge, &child(p, "maxSurge"), errs);
                not_more_than_100_percent(unavailable, &child(p, "maxUnavailable"), errs);
                not_more_than_100_percent(surge, &child(p, "maxSurge"), errs);
                let has_unavailable = int_or_percent_value(unavailable) != 0;
                let has_surge = int_or_percent_value(surge) != 0;
                if has_unavailable && has_surge {
                    errs.push(FieldError::invalid(
                        child(p, "maxSurge"),
                        surge,
                        "may not be set when maxUnavailable is non-zero",
                    ));
                } else if !has_unavailable && !has_surge {
                    errs.push(FieldError::required(
                        child(p, "maxUnavailable"),
                        "cannot be 0 when maxSurge is 0",
                    ));
                }
            }
        },
        _ => errs.push(FieldError::not_supported(
            "spec.updateStrategy",
            strategy,
            &["RollingUpdate", "OnDelete"],
        )),
    }
}

/// `ValidatePositiveIntOrPercent`.
fn positive_int_or_percent(value: &Value, path: &str, errs: &mut Errs) {
    match value {
        Value::Null => {}
        Value::String(s) => invalid_each(errs, path, value, names::is_valid_percent(s)),
        Value::Number(n) => {
            if n.as_i64().unwrap_or(0) < 0 {
                errs.push(FieldError::invalid(path, value, NONNEGATIVE));
            }
        }
        _ => errs.push(FieldError::invalid(
            path,
            value,
            "must be an integer or percentage (e.g '5%')",
        )),
    }
}

fn int_or_percent_value(value: &Value) -> i64 {
    match value {
        Value::Number(n) => n.as_i64().unwrap_or(0),
        Value::String(s) => s.trim_end_matches('%').parse().unwrap_or(0),
        _ => 0,
    }
}

fn not_more_than_100_percent(value: &Value, path: &str, errs: &mut Errs) {
    if let Some(s) = value.as_str()
        && s.ends_with('%')
        && int_or_percent_value(value) > 100
    {
        errs.push(FieldError::invalid(
            path,
            value,
            "must not be greater than 100%",
        ));
    }
}

// ---------------------------------------------------------------------------------------------
// Batch

/// `validateJobSpec`, shared by Jobs and CronJob job templates (`path` is the spec's path).
fn job_spec(spec: &Value, path: &str, errs: &mut Errs) {
    for field in [
        "parallelism",
        "completions",
        "activeDeadlineSeconds",
        "backoffLimit",
        "ttlSecondsAfterFinished",
    ] {
        nonnegative(spec, field, path, errs);
    }
    let mode = get(spec, "completionMode");
    match mode.as_str() {
        None | Some("NonIndexed") => {}
        Some("Indexed") => {
            if spec.get("completions").is_none_or(Value::is_null) {
                errs.push(FieldError::required(
                    child(path, "completions"),
                    "when completion mode is Indexed",
                ));
            }
        }
        Some(_) => errs.push(FieldError::not_supported(
            child(path, "completionMode"),
            mode,
            &["NonIndexed", "Indexed"],
        )),
    }
    let template_path = child(path, "template");
    let template = get(spec, "template");
    pod::validate_template(template, &template_path, errs);
    let restart = get(get(template, "spec"), "restartPolicy");
    let restart_path = child(&template_path, "spec.restartPolicy");
    match restart.as_str() {
        None | Some("" | "Always") => errs.push(FieldError::required(
            &restart_path,
            "valid values: \"OnFailure\", \"Never\"",
        )),
        Some("OnFailure" | "Never") => {
            if spec.get("podFailurePolicy").is_some_and(|p| !p.is_null())
                && restart.as_str() != Some("Never")
            {
                errs.push(FieldError::invalid(
                    &restart_path,
                    restart,
                    "only \"Never\" is supported when podFailurePolicy is specified",
                ));
            }
        }
        Some(_) => errs.push(FieldError::not_supported(
            &restart_path,
            restart,
            &["OnFailure", "Never"],
        )),
    }
}

fn job(obj: &Value, errs: &mut Errs) {
    let spec = get(obj, "spec");
    job_spec(spec, "spec", errs);
    match spec.get("selector").filter(|s| !s.is_null()) {
        None => errs.push(FieldError::required("spec.selector", "")),
        Some(selector) => {
            validate_label_selector(selector, "spec.selector", errs);
            if !selector_matches(selector, template_labels(spec)) {
                errs.push(FieldError::invalid(
                    "spec.template.metadata.labels",
                    &template_labels_value(spec),
                    "`selector` does not match template `labels`",
                ));
            }
        }
    }
    // A generated selector must select on this Job's uid.
    let manual = spec.get("manualSelector") == Some(&Value::Bool(true));
    let uid = str_of(get(obj, "metadata"), "uid");
    if !manual
        && !uid.is_empty()
        && let Some(selector) = spec.get("selector").filter(|s| !s.is_null())
    {
        let label = crate::defaults::JOB_CONTROLLER_UID_LABEL;
        let template_uid = template_labels(spec).and_then(|l| l.get(label));
        if template_uid.and_then(Value::as_str) != Some(uid) {
            errs.push(FieldError::invalid(
                "spec.template.metadata",
                &template_labels_value(spec),
                "`selector` not auto-generated",
            ));
        }
        let selected = map_of(selector, "matchLabels").and_then(|m| m.get(label));
        if selected.and_then(Value::as_str) != Some(uid) {
            errs.push(FieldError::invalid(
                "spec.selector",
                selector,
                "`selector` not auto-generated",
            ));
        }
    }
}

fn cron_job(obj: &Value, old: Option<&Value>, errs: &mut Errs) {
    let name = str_of(get(obj, "metadata"), "name");
    if old.is_none() && name.len() > 52 {
        errs.push(FieldError::invalid(
            "metadata.name",
            &Value::from(name),
            "must be no more than 52 characters",
        ));
    }
    let spec = get(obj, "spec");
    let old_spec = old.map(|o| get(o, "spec"));
    let schedule = str_of(spec, "schedule");
    if schedule.is_empty() {
        errs.push(FieldError::required("spec.schedule", ""));
    } else {
        let value = Value::from(schedule);
        if let Err(reason) = cron::parse_standard(schedule) {
            errs.push(FieldError::invalid("spec.schedule", &value, reason));
        }
        let allow_tz = old_spec.is_some_and(|o| str_of(o, "schedule").contains("TZ"));
        let has_zone = spec.get("timeZone").is_some_and(|z| !z.is_null());
        if allow_tz && schedule.contains("TZ") && has_zone {
            errs.push(FieldError::invalid(
                "spec.schedule",
                &value,
                "cannot use both timeZone field and TZ or CRON_TZ in schedule",
            ));
        } else if !allow_tz && schedule.contains("TZ") {
            errs.push(FieldError::invalid(
                "spec.schedule",
                &value,
                "cannot use TZ or CRON_TZ in schedule, use timeZone field instead",
            ));
        }
    }
    nonnegative(spec, "startingDeadlineSeconds", "spec", errs);
    let zone = get(spec, "timeZone");
    let zone_changed = old_spec.is_none_or(|o| get(o, "timeZone") != zone);
    if let (Some(tz), true) = (zone.as_str(), zone_changed) {
        time_zone(tz, zone, errs);
    }
    let policy = get(spec, "concurrencyPolicy");
    match policy.as_str() {
        Some("Allow" | "Forbid" | "Replace") => {}
        None | Some("") => errs.push(FieldError::required("spec.concurrencyPolicy", "")),
        Some(_) => errs.push(FieldError::not_supported(
            "spec.concurrencyPolicy",
            policy,
            &["Allow", "Forbid", "Replace"],
        )),
    }
    let job_spec_value = get(get(spec, "jobTemplate"), "spec");
    job_spec(job_spec_value, "spec.jobTemplate.spec", errs);
    if let Some(selector) = job_spec_value.get("selector").filter(|s| !s.is_null()) {
        errs.push(FieldError::invalid(
            "spec.jobTemplate.spec.selector",
            selector,
            "`selector` will be auto-generated",
        ));
    }
    if job_spec_value.get("manualSelector") == Some(&Value::Bool(true)) {
        errs.push(FieldError::not_supported(
            "spec.jobTemplate.spec.manualSelector",
            &Value::Bool(true),
            &["nil", "false"],
        ));
    }
    nonnegative(spec, "successfulJobsHistoryLimit", "spec", errs);
    nonnegative(spec, "failedJobsHistoryLimit", "spec", errs);
}

/// Time zone names by IANA's naming rules; whether the zone exists needs the tz database,
/// which the API server may check.
fn time_zone(tz: &str, value: &Value, errs: &mut Errs) {
    if tz.is_empty() {
        errs.push(FieldError::invalid(
            "spec.timeZone",
            value,
            "timeZone must be nil or non-empty string",
        ));
        return;
    }
    if tz.eq_ignore_ascii_case("Local") {
        errs.push(FieldError::invalid(
            "spec.timeZone",
            value,
            "timeZone must be an explicit time zone as defined in https://www.iana.org/time-zones",
        ));
        return;
    }
    let valid_part = |p: &str| {
        p != "."
            && p != ".."
            && !p.starts_with('-')
            && (1..=14).contains(&p.len())
            && p.bytes()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'-' | b'_' | b'+'))
    };
    if !tz.split('/').all(valid_part) {
        errs.push(FieldError::invalid(
            "spec.timeZone",
            value,
            format!("unknown time zone {tz}"),
        ));
    }
}

// ---------------------------------------------------------------------------------------------
// Services and networking

fn service(spec: &Value, errs: &mut Errs) {
    let kind = str_of(spec, "type");
    let cluster_ips = arr(spec, "clusterIPs");
    let headless = str_of(spec, "clusterIP") == "None"
        || cluster_ips.first().and_then(Value::as_str) == Some("None");
    let ports = arr(spec, "ports");
    if ports.is_empty() && !headless && kind != "ExternalName" {
        errs.push(FieldError::required("spec.ports", ""));
    }
    match kind {
        "LoadBalancer" | "NodePort" if headless => errs.push(FieldError::invalid(
            "spec.clusterIPs[0]",
            &Value::from("None"),
            format!("may not be set to 'None' for {kind} services"),
        )),
        "ExternalName" => {
            if !cluster_ips.is_empty() || !str_of(spec, "clusterIP").is_empty() {
                errs.push(FieldError::forbidden(
                    "spec.clusterIPs",
                    "may not be set for ExternalName services",
                ));
            }
            if !arr(spec, "ipFamilies").is_empty() {
                errs.push(FieldError::forbidden(
                    "spec.ipFamilies",
                    "may not be set for ExternalName services",
                ));
            }
            if spec.get("ipFamilyPolicy").is_some_and(|p| !p.is_null()) {
                errs.push(FieldError::forbidden(
                    "spec.ipFamilyPolicy",
                    "may not be set for ExternalName services",
                ));
            }
            let cname = str_of(spec, "externalName").trim_end_matches('.');
            if cname.is_empty() {
                errs.push(FieldError::required("spec.externalName", ""));
            } else {
                invalid_each(
                    errs,
                    "spec.externalName",
                    &Value::from(cname),
                    names::is_dns1123_subdomain(cname),
                );
            }
        }
        _ => {}
    }
    let mut port_names = HashSet::new();
    let mut seen_ports = HashSet::new();
    let mut node_ports = HashSet::new();
    for (i, port) in ports.iter().enumerate() {
        let p = index("spec.ports", i);
        let name = str_of(port, "name");
        if ports.len() > 1 && name.is_empty() {
            errs.push(FieldError::required(child(&p, "name"), ""));
        } else if !name.is_empty() {
            invalid_each(
                errs,
                &child(&p, "name"),
                get(port, "name"),
                names::is_dns1123_label(name),
            );
            if !port_names.insert(name.to_string()) {
                errs.push(FieldError::duplicate(child(&p, "name"), get(port, "name")));
            }
        }
        let number = port.get("port").and_then(Value::as_i64).unwrap_or(0);
        invalid_each(
            errs,
            &child(&p, "port"),
            &Value::from(number),
            names::is_valid_port_num(number),
        );
        protocol(port, &p, errs);
        if let Some(target) = port.get("targetPort") {
            port_num_or_name(target, &child(&p, "targetPort"), errs);
        }
        let node_port = port.get("nodePort").and_then(Value::as_i64).unwrap_or(0);
        if node_port != 0 {
            if kind == "ClusterIP" {
                errs.push(FieldError::forbidden(
                    child(&p, "nodePort"),
                    "may not be used when `type` is 'ClusterIP'",
                ));
            }
            invalid_each(
                errs,
                &child(&p, "nodePort"),
                &Value::from(node_port),
                names::is_valid_port_num(node_port),
            );
            if !node_ports.insert((str_of(port, "protocol").to_string(), node_port)) {
                errs.push(FieldError::duplicate(
                    child(&p, "nodePort"),
                    &Value::from(node_port),
                ));
            }
        }
        let protocol_name = str_of(port, "protocol");
        if !seen_ports.insert((protocol_name.to_string(), number)) {
            errs.push(FieldError::duplicate(
                &p,
                &json!({"protocol": protocol_name, "port": number}),
            ));
        }
    }
    validate_labels(spec.get("selector"), "spec.selector", errs);
    let affinity = get(spec, "sessionAffinity");
    match affinity.as_str() {
        Some("ClientIP") => {
            let timeout = spec
                .get("sessionAffinityConfig")
                .and_then(|c| c.get("clientIP"))
                .and_then(|c| c.get("timeoutSeconds"))
                .and_then(Value::as_i64);
            if let Some(t) = timeout.filter(|t| !(1..=86400).contains(t)) {
                errs.push(FieldError::invalid(
                    "spec.sessionAffinityConfig.clientIP.timeoutSeconds",
                    &Value::from(t),
                    "must be greater than 0 and less than 86400",
                ));
            }
        }
        Some("None") => {
            if let Some(c) = spec.get("sessionAffinityConfig").filter(|c| !c.is_null()) {
                errs.push(FieldError::invalid(
                    "spec.sessionAffinityConfig",
                    c,
                    "must not be set when session affinity is None",
                ));
            }
        }
        None | Some("") => errs.push(FieldError::required("spec.sessionAffinity", "")),
        Some(_) => errs.push(FieldError::not_supported(
            "spec.sessionAffinity",
            affinity,
            &["ClientIP", "None"],
        )),
    }
    for (i, ip) in cluster_ips.iter().enumerate() {
        let s = ip.as_str().unwrap_or("");
        if i == 0 && s == "None" {
            if cluster_ips.len() > 1 {
                errs.push(FieldError::invalid(
                    "spec.clusterIPs",
                    get(spec, "clusterIPs"),
                    "'None' must be the first and only value",
                ));
            }
            continue;
        }
        invalid_each(
            errs,
            &index("spec.clusterIPs", i),
            ip,
            names::is_valid_ip(s),
        );
    }
    if let (Some(first), Some(ip)) = (cluster_ips.first(), spec.get("clusterIP"))
        && first != ip
    {
        errs.push(FieldError::invalid(
            "spec.clusterIPs",
            get(spec, "clusterIPs"),
            "first value must match `clusterIP`",
        ));
    }
    if let Some(policy) = spec.get("ipFamilyPolicy").filter(|p| !p.is_null())
        && !matches!(
            policy.as_str(),
            Some("SingleStack" | "PreferDualStack" | "RequireDualStack")
        )
    {
        errs.push(FieldError::not_supported(
            "spec.ipFamilyPolicy",
            policy,
            &["PreferDualStack", "RequireDualStack", "SingleStack"],
        ));
    }
    let mut families = HashSet::new();
    for (i, family) in arr(spec, "ipFamilies").iter().enumerate() {
        let p = index("spec.ipFamilies", i);
        if !matches!(family.as_str(), Some("IPv4" | "IPv6")) {
            errs.push(FieldError::not_supported(&p, family, &["IPv4", "IPv6"]));
        } else if !families.insert(family.as_str().unwrap_or("")) {
            errs.push(FieldError::duplicate(&p, family));
        }
    }
    for (i, ip) in arr(spec, "externalIPs").iter().enumerate() {
        invalid_each(
            errs,
            &index("spec.externalIPs", i),
            ip,
            names::is_valid_ip(ip.as_str().unwrap_or("")),
        );
    }
    let kind_value = get(spec, "type");
    if kind.is_empty() {
        errs.push(FieldError::required("spec.type", ""));
    } else if !matches!(
        kind,
        "ClusterIP" | "ExternalName" | "LoadBalancer" | "NodePort"
    ) {
        errs.push(FieldError::not_supported(
            "spec.type",
            kind_value,
            &["ClusterIP", "ExternalName", "LoadBalancer", "NodePort"],
        ));
    }
    let external = get(spec, "externalTrafficPolicy");
    let external_allowed =
        matches!(kind, "NodePort" | "LoadBalancer") || !arr(spec, "externalIPs").is_empty();
    match external.as_str() {
        None | Some("") => {
            if matches!(kind, "NodePort" | "LoadBalancer") {
                errs.push(FieldError::required("spec.externalTrafficPolicy", ""));
            }
        }
        Some(_) if !external_allowed => errs.push(FieldError::invalid(
            "spec.externalTrafficPolicy",
            external,
            "may only be set for externally-accessible services",
        )),
        Some("Cluster" | "Local") => {}
        Some(_) => errs.push(FieldError::not_supported(
            "spec.externalTrafficPolicy",
            external,
            &["Cluster", "Local"],
        )),
    }
    let internal = get(spec, "internalTrafficPolicy");
    if let Some(p) = internal.as_str()
        && !matches!(p, "Cluster" | "Local")
    {
        errs.push(FieldError::not_supported(
            "spec.internalTrafficPolicy",
            internal,
            &["Cluster", "Local"],
        ));
    }
}

fn endpoints(obj: &Value, errs: &mut Errs) {
    for (i, subset) in arr(obj, "subsets").iter().enumerate() {
        let p = index("subsets", i);
        for list in ["addresses", "notReadyAddresses"] {
            for (j, address) in arr(subset, list).iter().enumerate() {
                let ap = index(&child(&p, list), j);
                let ip = str_of(address, "ip");
                invalid_each(
                    errs,
                    &child(&ap, "ip"),
                    get(address, "ip"),
                    names::is_valid_ip(ip),
                );
            }
        }
        let ports = arr(subset, "ports");
        for (j, port) in ports.iter().enumerate() {
            let pp = index(&child(&p, "ports"), j);
            let name = str_of(port, "name");
            if ports.len() > 1 && name.is_empty() {
                errs.push(FieldError::required(child(&pp, "name"), ""));
            } else if !name.is_empty() {
                invalid_each(
                    errs,
                    &child(&pp, "name"),
                    get(port, "name"),
                    names::is_dns1123_label(name),
                );
            }
            let n = port.get("port").and_then(Value::as_i64).unwrap_or(0);
            invalid_each(
                errs,
                &child(&pp, "port"),
                &Value::from(n),
                names::is_valid_port_num(n),
            );
            protocol(port, &pp, errs);
        }
    }
}

fn endpoint_slice(obj: &Value, errs: &mut Errs) {
    let address_type = get(obj, "addressType");
    let family = address_type.as_str().unwrap_or("");
    if !matches!(family, "IPv4" | "IPv6" | "FQDN") {
        errs.push(FieldError::not_supported(
            "addressType",
            address_type,
            &["FQDN", "IPv4", "IPv6"],
        ));
    }
    for (i, endpoint) in arr(obj, "endpoints").iter().enumerate() {
        let p = index("endpoints", i);
        let addresses = arr(endpoint, "addresses");
        if addresses.is_empty() {
            errs.push(FieldError::required(
                child(&p, "addresses"),
                "must contain at least 1 address",
            ));
        } else if addresses.len() > 100 {
            errs.push(FieldError {
                kind: crate::FieldErrorKind::TooMany,
                field: child(&p, "addresses"),
                value: None,
                detail: "must have at most 100 items".into(),
            });
        }
        for (j, address) in addresses.iter().enumerate() {
            let s = address.as_str().unwrap_or("");
            let ap = index(&child(&p, "addresses"), j);
            let msgs = match family {
                "IPv4" if s.parse::<std::net::Ipv4Addr>().is_err() => {
                    vec!["must be a valid IPv4 address".to_string()]
                }
                "IPv6" if s.parse::<std::net::Ipv6Addr>().is_err() => {
                    vec!["must be a valid IPv6 address".to_string()]
                }
                "FQDN" => names::is_dns1123_subdomain(s),
                _ => Vec::new(),
            };
            invalid_each(errs, &ap, address, msgs);
        }
    }
    let mut port_names = HashSet::new();
    for (i, port) in arr(obj, "ports").iter().enumerate() {
        let p = index("ports", i);
        let name = str_of(port, "name");
        if !name.is_empty() {
            invalid_each(
                errs,
                &child(&p, "name"),
                get(port, "name"),
                names::is_dns1123_label(name),
            );
        }
        if !port_names.insert(name.to_string()) {
            errs.push(FieldError::duplicate(child(&p, "name"), get(port, "name")));
        }
        if let Some(n) = port.get("port").and_then(Value::as_i64) {
            invalid_each(
                errs,
                &child(&p, "port"),
                &Value::from(n),
                names::is_valid_port_num(n),
            );
        }
        protocol(port, &p, errs);
    }
}

fn ingress(spec: &Value, errs: &mut Errs) {
    let rules = arr(spec, "rules");
    let default_backend = spec.get("defaultBackend").filter(|b| !b.is_null());
    if rules.is_empty() && default_backend.is_none() {
        errs.push(FieldError::invalid(
            "spec",
            get(spec, "rules"),
            "either `defaultBackend` or `rules` must be specified",
        ));
    }
    if let Some(backend) = default_backend {
        ingress_backend(backend, "spec.defaultBackend", errs);
    }
    for (i, rule) in rules.iter().enumerate() {
        let p = index("spec.rules", i);
        let host = str_of(rule, "host");
        if !host.is_empty() {
            let host_path = child(&p, "host");
            if host.parse::<std::net::IpAddr>().is_ok() {
                errs.push(FieldError::invalid(
                    &host_path,
                    get(rule, "host"),
                    "must be a DNS name, not an IP address",
                ));
            }
            let msgs = if host.contains('*') {
                names::is_wildcard_dns1123_subdomain(host)
            } else {
                names::is_dns1123_subdomain(host)
            };
            invalid_each(errs, &host_path, get(rule, "host"), msgs);
        }
        let Some(http) = rule.get("http").filter(|h| !h.is_null()) else {
            continue;
        };
        let hp = child(&p, "http");
        let paths = arr(http, "paths");
        if paths.is_empty() {
            errs.push(FieldError::required(child(&hp, "paths"), ""));
        }
        for (j, path) in paths.iter().enumerate() {
            let pp = index(&child(&hp, "paths"), j);
            let value = str_of(path, "path");
            let path_type = get(path, "pathType");
            match path_type.as_str() {
                None => {
                    errs.push(FieldError::required(
                        child(&pp, "pathType"),
                        "pathType must be specified",
                    ));
                    continue;
                }
                Some("Exact" | "Prefix") => {
                    if !value.starts_with('/') {
                        errs.push(FieldError::invalid(
                            child(&pp, "path"),
                            get(path, "path"),
                            "must be an absolute path",
                        ));
                    }
                    for seq in ["//", "/./", "/../", "%2f", "%2F"] {
                        if value.contains(seq) {
                            errs.push(FieldError::invalid(
                                child(&pp, "path"),
                                get(path, "path"),
                                format!("must not contain '{seq}'"),
                            ));
                        }
                    }
                    for suffix in ["/..", "/."] {
                        if value.ends_with(suffix) {
                            errs.push(FieldError::invalid(
                                child(&pp, "path"),
                                get(path, "path"),
                                format!("cannot end with '{suffix}'"),
                            ));
                        }
                    }
                }
                Some("ImplementationSpecific") => {
                    if !value.is_empty() && !value.starts_with('/') {
                        errs.push(FieldError::invalid(
                            child(&pp, "path"),
                            get(path, "path"),
                            "must be an absolute path",
                        ));
                    }
                }
                Some(_) => errs.push(FieldError::not_supported(
                    child(&pp, "pathType"),
                    path_type,
                    &["Exact", "ImplementationSpecific", "Prefix"],
                )),
            }
            ingress_backend(get(path, "backend"), &child(&pp, "backend"), errs);
        }
    }
    if let Some(class) = spec.get("ingressClassName").and_then(Value::as_str) {
        invalid_each(
            errs,
            "spec.ingressClassName",
            &Value::from(class),
            names::is_dns1123_subdomain(class),
        );
    }
}

fn ingress_backend(backend: &Value, path: &str, errs: &mut Errs) {
    let resource = backend.get("resource").filter(|r| !r.is_null());
    let service = backend.get("service").filter(|s| !s.is_null());
    match (resource, service) {
        (Some(_), Some(_)) => errs.push(FieldError::invalid(
            path,
            &Value::from(""),
            "cannot set both resource and service backends",
        )),
        (Some(r), None) => {
            for field in ["kind", "name"] {
                if str_of(r, field).is_empty() {
                    errs.push(FieldError::required(
                        child(&child(path, "resource"), field),
                        "",
                    ));
                }
            }
        }
        (None, Some(s)) => {
            let name = str_of(s, "name");
            let name_path = child(path, "service.name");
            if name.is_empty() {
                errs.push(FieldError::required(&name_path, ""));
            } else {
                invalid_each(
                    errs,
                    &name_path,
                    get(s, "name"),
                    names::is_dns1035_label(name),
                );
            }
            let port = get(s, "port");
            let port_name = str_of(port, "name");
            let number = port.get("number").and_then(Value::as_i64).unwrap_or(0);
            match (port_name.is_empty(), number == 0) {
                (false, false) => errs.push(FieldError::invalid(
                    path,
                    &Value::from(""),
                    "cannot set both port name & port number",
                )),
                (false, true) => invalid_each(
                    errs,
                    &child(path, "service.port.name"),
                    get(port, "name"),
                    names::is_valid_port_name(port_name),
                ),
                (true, false) => invalid_each(
                    errs,
                    &child(path, "service.port.number"),
                    &Value::from(number),
                    names::is_valid_port_num(number),
                ),
                (true, true) => errs.push(FieldError::required(
                    path,
                    "port name or number is required",
                )),
            }
        }
        (None, None) => errs.push(FieldError::invalid(
            path,
            &Value::from(""),
            "resource or service backend is required",
        )),
    }
}

fn ingress_class(spec: &Value, errs: &mut Errs) {
    let controller = str_of(spec, "controller");
    if controller.is_empty() {
        errs.push(FieldError::required("spec.controller", ""));
    } else if controller.len() > 250 {
        errs.push(FieldError::too_long("spec.controller", 250));
    } else {
        let ok = controller.split_once('/').is_some_and(|(domain, rest)| {
            names::is_dns1123_subdomain(domain).is_empty() && !rest.is_empty()
        });
        if !ok {
            errs.push(FieldError::invalid(
                "spec.controller",
                get(spec, "controller"),
                "must be a domain-prefixed path (such as \"acme.io/foo\")",
            ));
        }
    }
}

fn network_policy(spec: &Value, errs: &mut Errs) {
    validate_label_selector(get(spec, "podSelector"), "spec.podSelector", errs);
    for (direction, peers_key) in [("ingress", "from"), ("egress", "to")] {
        for (i, rule) in arr(spec, direction).iter().enumerate() {
            let p = index(&child("spec", direction), i);
            for (j, port) in arr(rule, "ports").iter().enumerate() {
                let pp = index(&child(&p, "ports"), j);
                protocol(port, &pp, errs);
                if let Some(number) = port.get("port") {
                    port_num_or_name(number, &child(&pp, "port"), errs);
                }
            }
            for (j, peer) in arr(rule, peers_key).iter().enumerate() {
                let pp = index(&child(&p, peers_key), j);
                let set: Vec<&str> = ["podSelector", "namespaceSelector", "ipBlock"]
                    .into_iter()
                    .filter(|k| peer.get(*k).is_some_and(|v| !v.is_null()))
                    .collect();
                if set.is_empty() {
                    errs.push(FieldError::required(&pp, "must specify a peer"));
                } else if set.contains(&"ipBlock") && set.len() > 1 {
                    errs.push(FieldError::forbidden(
                        &pp,
                        "may not specify both ipBlock and another peer",
                    ));
                }
                for selector in ["podSelector", "namespaceSelector"] {
                    if let Some(s) = peer.get(selector) {
                        validate_label_selector(s, &child(&pp, selector), errs);
                    }
                }
                if let Some(block) = peer.get("ipBlock") {
                    let cidr = str_of(block, "cidr");
                    let bp = child(&pp, "ipBlock");
                    if cidr.is_empty() {
                        errs.push(FieldError::required(child(&bp, "cidr"), ""));
                    } else {
                        invalid_each(
                            errs,
                            &child(&bp, "cidr"),
                            get(block, "cidr"),
                            names::is_valid_cidr(cidr),
                        );
                    }
                }
            }
        }
    }
    let types = arr(spec, "policyTypes");
    for (i, t) in types.iter().enumerate() {
        if !matches!(t.as_str(), Some("Ingress" | "Egress")) {
            errs.push(FieldError::not_supported(
                index("spec.policyTypes", i),
                t,
                &["Egress", "Ingress"],
            ));
        }
    }
    if types.len() > 2 {
        errs.push(FieldError::invalid(
            "spec.policyTypes",
            get(spec, "policyTypes"),
            "may not specify more than two policyTypes",
        ));
    }
}

// ---------------------------------------------------------------------------------------------
// Configuration

fn config_map(obj: &Value, errs: &mut Errs) {
    let data = map_of(obj, "data");
    let binary = map_of(obj, "binaryData");
    let mut total = 0;
    if let Some(data) = data {
        for (k, v) in data {
            let p = key("data", k);
            invalid_each(
                errs,
                &p,
                &Value::from(k.as_str()),
                names::is_config_map_key(k),
            );
            if binary.is_some_and(|b| b.contains_key(k)) {
                errs.push(FieldError::invalid(
                    &p,
                    &Value::from(k.as_str()),
                    "duplicate of key present in binaryData",
                ));
            }
            total += v.as_str().map_or(0, str::len);
        }
    }
    if let Some(binary) = binary {
        for (k, v) in binary {
            let p = key("binaryData", k);
            invalid_each(
                errs,
                &p,
                &Value::from(k.as_str()),
                names::is_config_map_key(k),
            );
            if data.is_some_and(|d| d.contains_key(k)) {
                errs.push(FieldError::invalid(
                    &p,
                    &Value::from(k.as_str()),
                    "duplicate of key present in data",
                ));
            }
            total += decoded_len(v);
        }
    }
    if total > MAX_SECRET_SIZE {
        // Upstream reports the size on the whole object, with an empty path.
        errs.push(FieldError::too_long("", MAX_SECRET_SIZE));
    }
}

fn decoded_len(v: &Value) -> usize {
    let s = v.as_str().unwrap_or("");
    base64::engine::general_purpose::STANDARD
        .decode(s)
        .map_or(s.len() * 3 / 4, |b| b.len())
}

fn secret(obj: &Value, errs: &mut Errs) {
    let data = map_of(obj, "data");
    let mut total = 0;
    if let Some(data) = data {
        for (k, v) in data {
            invalid_each(
                errs,
                &key("data", k),
                &Value::from(k.as_str()),
                names::is_config_map_key(k),
            );
            total += decoded_len(v);
        }
    }
    if total > MAX_SECRET_SIZE {
        errs.push(FieldError::too_long("data", MAX_SECRET_SIZE));
    }
    let has = |k: &str| data.is_some_and(|d| d.contains_key(k));
    let decoded = |k: &str| {
        data.and_then(|d| d.get(k))
            .and_then(Value::as_str)
            .and_then(|s| base64::engine::general_purpose::STANDARD.decode(s).ok())
    };
    match str_of(obj, "type") {
        "kubernetes.io/service-account-token" => {
            let annotation = "kubernetes.io/service-account.name";
            let name = get(obj, "metadata")
                .get("annotations")
                .and_then(|a| a.get(annotation))
                .and_then(Value::as_str)
                .unwrap_or("");
            if name.is_empty() {
                errs.push(FieldError::required(
                    key("metadata.annotations", annotation),
                    "",
                ));
            }
        }
        t @ ("kubernetes.io/dockercfg" | "kubernetes.io/dockerconfigjson") => {
            let k = if t == "kubernetes.io/dockercfg" {
                ".dockercfg"
            } else {
                ".dockerconfigjson"
            };
            if !has(k) {
                errs.push(FieldError::required(key("data", k), ""));
            } else if let Some(bytes) = decoded(k)
                && let Err(e) = serde_json::from_slice::<serde_json::Map<String, Value>>(&bytes)
            {
                errs.push(FieldError::invalid(
                    key("data", k),
                    &Value::from("<secret contents redacted>"),
                    e.to_string(),
                ));
            }
        }
        "kubernetes.io/basic-auth" if !has("username") && !has("password") => {
            errs.push(FieldError::required("data[username]", ""));
            errs.push(FieldError::required("data[password]", ""));
        }
        "kubernetes.io/ssh-auth" if decoded("ssh-privatekey").is_none_or(|b| b.is_empty()) => {
            errs.push(FieldError::required("data[ssh-privatekey]", ""));
        }
        "kubernetes.io/tls" => {
            for k in ["tls.crt", "tls.key"] {
                if !has(k) {
                    errs.push(FieldError::required(key("data", k), ""));
                }
            }
        }
        _ => {}
    }
}

// ---------------------------------------------------------------------------------------------
// Cluster objects

fn node(spec: &Value, errs: &mut Errs) {
    let mut seen = HashSet::new();
    for (i, taint) in arr(spec, "taints").iter().enumerate() {
        let p = index("spec.taints", i);
        let k = str_of(taint, "key");
        invalid_each(
            errs,
            &child(&p, "key"),
            get(taint, "key"),
            names::is_qualified_name(k),
        );
        let msgs = names::is_valid_label_value(str_of(taint, "value"));
        if !msgs.is_empty() {
            errs.push(FieldError::invalid(
                child(&p, "value"),
                get(taint, "value"),
                msgs.join(";"),
            ));
        }
        let effect = get(taint, "effect");
        if str_of(taint, "effect").is_empty() {
            errs.push(FieldError::required(child(&p, "effect"), ""));
        } else {
            pod::taint_effect(effect, &child(&p, "effect"), errs);
        }
        if !seen.insert((k.to_string(), str_of(taint, "effect").to_string())) {
            errs.push(FieldError::duplicate(
                &p,
                &json!({"key": k, "effect": effect}),
            ));
        }
    }
    let cidrs = arr(spec, "podCIDRs");
    for (i, cidr) in cidrs.iter().enumerate() {
        invalid_each(
            errs,
            &index("spec.podCIDRs", i),
            cidr,
            names::is_valid_cidr(cidr.as_str().unwrap_or("")),
        );
    }
    if cidrs.len() > 2 {
        errs.push(FieldError::invalid(
            "spec.podCIDRs",
            get(spec, "podCIDRs"),
            "may specify no more than one CIDR for each IP family",
        ));
    }
}

fn lease(spec: &Value, errs: &mut Errs) {
    if let Some(d) = spec.get("leaseDurationSeconds").and_then(Value::as_i64)
        && d <= 0
    {
        errs.push(FieldError::invalid(
            "spec.leaseDurationSeconds",
            &Value::from(d),
            "must be greater than 0",
        ));
    }
    nonnegative(spec, "leaseTransitions", "spec", errs);
}

/// Legacy (core v1) events: the namespace must agree with the involved object's.
fn core_event(obj: &Value, errs: &mut Errs) {
    let namespace = str_of(get(obj, "metadata"), "namespace");
    let involved = get(obj, "involvedObject");
    let involved_ns = str_of(involved, "namespace");
    let mismatch = |errs: &mut Errs| {
        errs.push(FieldError::invalid(
            "involvedObject.namespace",
            &Value::from(involved_ns),
            "does not match event.namespace",
        ));
    };
    let event_time = obj.get("eventTime").is_some_and(|t| !t.is_null());
    if !event_time {
        if involved_ns.is_empty() {
            if !namespace.is_empty() && namespace != "default" {
                mismatch(errs);
            }
        } else if namespace != involved_ns {
            mismatch(errs);
        }
    } else {
        if involved_ns.is_empty() && namespace != "default" && namespace != "kube-system" {
            mismatch(errs);
        }
        let controller = str_of(obj, "reportingComponent");
        if controller.is_empty() {
            errs.push(FieldError::required("reportingComponent", ""));
        }
        invalid_each(
            errs,
            "reportingComponent",
            &Value::from(controller),
            names::is_qualified_name(controller),
        );
        for (field, limit) in [("reportingInstance", 128), ("action", 128), ("reason", 128)] {
            let v = str_of(obj, field);
            if v.is_empty() {
                errs.push(FieldError::required(field, ""));
            } else if v.len() > limit {
                errs.push(FieldError::invalid(
                    field,
                    &Value::from(""),
                    format!("can have at most {limit} characters"),
                ));
            }
        }
        if str_of(obj, "message").len() > 1024 {
            errs.push(FieldError::invalid(
                "message",
                &Value::from(""),
                "can have at most 1024 characters",
            ));
        }
    }
    invalid_each(
        errs,
        "namespace",
        &Value::from(namespace),
        names::is_dns1123_subdomain(namespace),
    );
}

/// events.k8s.io/v1 events: the strict rules for new events.
fn new_event(obj: &Value, errs: &mut Errs) {
    let namespace = str_of(get(obj, "metadata"), "namespace");
    let regarding_ns = str_of(get(obj, "regarding"), "namespace");
    if regarding_ns.is_empty() && namespace != "default" && namespace != "kube-system" {
        errs.push(FieldError::invalid(
            "involvedObject.namespace",
            &Value::from(regarding_ns),
            "does not match event.namespace",
        ));
    }
    if obj.get("eventTime").is_none_or(Value::is_null) {
        errs.push(FieldError::required("eventTime", ""));
    }
    let controller = str_of(obj, "reportingController");
    if controller.is_empty() {
        errs.push(FieldError::required("reportingController", ""));
    }
    invalid_each(
        errs,
        "reportingController",
        &Value::from(controller),
        names::is_qualified_name(controller),
    );
    for (field, limit) in [("reportingInstance", 128), ("action", 128), ("reason", 128)] {
        let v = str_of(obj, field);
        if v.is_empty() {
            errs.push(FieldError::required(field, ""));
        } else if v.len() > limit {
            errs.push(FieldError::invalid(
                field,
                &Value::from(""),
                format!("can have at most {limit} characters"),
            ));
        }
    }
    if str_of(obj, "note").len() > 1024 {
        errs.push(FieldError::invalid(
            "note",
            &Value::from(""),
            "can have at most 1024 characters",
        ));
    }
    let kind = str_of(obj, "type");
    if kind != "Normal" && kind != "Warning" {
        errs.push(FieldError::invalid(
            "type",
            &Value::from(""),
            format!("has invalid value: {kind}"),
        ));
    }
    for (field, name) in [
        ("deprecatedFirstTimestamp", "firstTimestamp"),
        ("deprecatedLastTimestamp", "lastTimestamp"),
        ("deprecatedSource", "source"),
    ] {
        let set = obj
            .get(field)
            .is_some_and(|v| !v.is_null() && v != &json!({}));
        if set {
            errs.push(FieldError::invalid(
                name,
                &Value::from(""),
                "needs to be unset",
            ));
        }
    }
    if obj
        .get("deprecatedCount")
        .and_then(Value::as_i64)
        .unwrap_or(0)
        != 0
    {
        errs.push(FieldError::invalid(
            "count",
            &Value::from(""),
            "needs to be unset",
        ));
    }
}

const ACCESS_MODES: &[&str] = &[
    "ReadOnlyMany",
    "ReadWriteMany",
    "ReadWriteOnce",
    "ReadWriteOncePod",
];

fn access_modes(spec: &Value, path: &str, errs: &mut Errs) {
    let modes = arr(spec, "accessModes");
    let mode_path = child(path, "accessModes");
    let (mut once_pod, mut other) = (false, false);
    for mode in modes {
        let m = mode.as_str().unwrap_or("");
        if !ACCESS_MODES.contains(&m) {
            errs.push(FieldError::not_supported(&mode_path, mode, ACCESS_MODES));
        } else if m == "ReadWriteOncePod" {
            once_pod = true;
        } else {
            other = true;
        }
    }
    if once_pod && other {
        errs.push(FieldError::forbidden(
            &mode_path,
            "may not use ReadWriteOncePod with other access modes",
        ));
    }
}

fn volume_mode(spec: &Value, path: &str, errs: &mut Errs) {
    if let Some(mode) = spec.get("volumeMode").filter(|m| !m.is_null())
        && !matches!(mode.as_str(), Some("Block" | "Filesystem"))
    {
        errs.push(FieldError::not_supported(
            child(path, "volumeMode"),
            mode,
            &["Block", "Filesystem"],
        ));
    }
}

fn storage_class_name(spec: &Value, field: &str, path: &str, errs: &mut Errs) {
    let class = str_of(spec, field);
    if !class.is_empty() {
        invalid_each(
            errs,
            &child(path, field),
            get(spec, field),
            names::is_dns1123_subdomain(class),
        );
    }
}

/// `ValidatePersistentVolumeClaimSpec`.
fn pvc_spec(spec: &Value, path: &str, errs: &mut Errs) {
    if arr(spec, "accessModes").is_empty() {
        errs.push(FieldError::required(
            child(path, "accessModes"),
            "at least 1 access mode is required",
        ));
    }
    if let Some(selector) = spec.get("selector").filter(|s| !s.is_null()) {
        validate_label_selector(selector, &child(path, "selector"), errs);
    }
    access_modes(spec, path, errs);
    let storage_path = key(&child(path, "resources"), "storage");
    match spec
        .get("resources")
        .and_then(|r| r.get("requests"))
        .and_then(|r| r.get("storage"))
    {
        None => errs.push(FieldError::required(&storage_path, "")),
        Some(value) => {
            if let Some(q) = quantity(value, &storage_path, errs)
                && q.nanos() <= 0
            {
                errs.push(FieldError::invalid(
                    &storage_path,
                    &Value::from(q.to_string()),
                    "must be greater than zero",
                ));
            }
        }
    }
    storage_class_name(spec, "storageClassName", path, errs);
    volume_mode(spec, path, errs);
}

const PV_SOURCES: &[&str] = &[
    "hostPath",
    "gcePersistentDisk",
    "awsElasticBlockStore",
    "glusterfs",
    "nfs",
    "rbd",
    "quobyte",
    "cinder",
    "cephfs",
    "fc",
    "flocker",
    "flexVolume",
    "azureFile",
    "vsphereVolume",
    "azureDisk",
    "photonPersistentDisk",
    "portworxVolume",
    "scaleIO",
    "local",
    "storageos",
    "csi",
    "iscsi",
];

pub(crate) fn pv_sources() -> &'static [&'static str] {
    PV_SOURCES
}

fn persistent_volume(spec: &Value, errs: &mut Errs) {
    if arr(spec, "accessModes").is_empty() {
        errs.push(FieldError::required("spec.accessModes", ""));
    }
    access_modes(spec, "spec", errs);
    match map_of(spec, "capacity") {
        None => errs.push(FieldError::required("spec.capacity", "")),
        Some(capacity) => {
            if !capacity.contains_key("storage") || capacity.len() > 1 {
                errs.push(FieldError::not_supported(
                    "spec.capacity",
                    get(spec, "capacity"),
                    &["storage"],
                ));
            }
            for (name, value) in capacity {
                let p = key("spec.capacity", name);
                if let Some(q) = quantity(value, &p, errs)
                    && q.nanos() <= 0
                {
                    errs.push(FieldError::invalid(
                        &p,
                        &Value::from(q.to_string()),
                        "must be greater than zero",
                    ));
                }
            }
        }
    }
    let policy = get(spec, "persistentVolumeReclaimPolicy");
    if let Some(p) = policy.as_str().filter(|p| !p.is_empty())
        && !matches!(p, "Delete" | "Recycle" | "Retain")
    {
        errs.push(FieldError::not_supported(
            "spec.persistentVolumeReclaimPolicy",
            policy,
            &["Delete", "Recycle", "Retain"],
        ));
    }
    storage_class_name(spec, "storageClassName", "spec", errs);
    volume_mode(spec, "spec", errs);
    let sources: Vec<&str> = PV_SOURCES
        .iter()
        .copied()
        .filter(|s| spec.get(*s).is_some_and(|v| !v.is_null()))
        .collect();
    if sources.is_empty() {
        errs.push(FieldError::required("spec", "must specify a volume type"));
    }
    for extra in sources.iter().skip(1) {
        errs.push(FieldError::forbidden(
            child("spec", extra),
            "may not specify more than 1 volume type",
        ));
    }
    if let Some(host_path) = spec.get("hostPath") {
        if str_of(host_path, "path").is_empty() {
            errs.push(FieldError::required("spec.hostPath.path", ""));
        }
        pod::host_path_type(host_path, "spec.hostPath", errs);
    }
    if let Some(local) = spec.get("local") {
        if str_of(local, "path").is_empty() {
            errs.push(FieldError::required("spec.local.path", ""));
        }
        if spec.get("nodeAffinity").is_none_or(Value::is_null) {
            errs.push(FieldError::required(
                "spec.nodeAffinity",
                "Local volume requires node affinity",
            ));
        }
    }
}

fn limit_range(spec: &Value, errs: &mut Errs) {
    for (i, item) in arr(spec, "limits").iter().enumerate() {
        let p = index("spec.limits", i);
        let kind = get(item, "type");
        if !matches!(
            kind.as_str(),
            Some("Container" | "Pod" | "PersistentVolumeClaim")
        ) {
            errs.push(FieldError::not_supported(
                child(&p, "type"),
                kind,
                &["Container", "PersistentVolumeClaim", "Pod"],
            ));
        }
        let mut parsed = std::collections::HashMap::new();
        for field in [
            "max",
            "min",
            "default",
            "defaultRequest",
            "maxLimitRequestRatio",
        ] {
            if let Some(map) = map_of(item, field) {
                for (name, value) in map {
                    let fp = key(&child(&p, field), name);
                    if let Some(q) = resource_quantity(name, value, &fp, errs) {
                        parsed.insert((field, name.as_str()), q);
                    }
                }
            }
        }
        for ((field, name), min) in &parsed {
            if *field != "min" {
                continue;
            }
            if let Some(max) = parsed.get(&("max", *name))
                && min > max
            {
                errs.push(FieldError::invalid(
                    key(&child(&p, "min"), name),
                    &Value::from(min.to_string()),
                    format!("min value {min} is greater than max value {max}"),
                ));
            }
        }
    }
}

fn hpa(spec: &Value, errs: &mut Errs) {
    let min = spec.get("minReplicas").and_then(Value::as_i64);
    let max = spec.get("maxReplicas").and_then(Value::as_i64).unwrap_or(0);
    if let Some(min) = min.filter(|m| *m < 1) {
        errs.push(FieldError::invalid(
            "spec.minReplicas",
            &Value::from(min),
            "must be greater than or equal to 1",
        ));
    }
    if max < 1 {
        errs.push(FieldError::invalid(
            "spec.maxReplicas",
            &Value::from(max),
            "must be greater than 0",
        ));
    }
    if min.is_some_and(|m| max < m) {
        errs.push(FieldError::invalid(
            "spec.maxReplicas",
            &Value::from(max),
            "must be greater than or equal to `minReplicas`",
        ));
    }
    let target = get(spec, "scaleTargetRef");
    for field in ["kind", "name"] {
        let v = str_of(target, field);
        let p = child("spec.scaleTargetRef", field);
        if v.is_empty() {
            errs.push(FieldError::required(&p, ""));
        } else {
            invalid_each(
                errs,
                &p,
                get(target, field),
                names::is_valid_path_segment_name(v, false),
            );
        }
    }
    if let Some(cpu) = spec
        .get("targetCPUUtilizationPercentage")
        .and_then(Value::as_i64)
        && cpu < 1
    {
        errs.push(FieldError::invalid(
            "spec.targetCPUUtilizationPercentage",
            &Value::from(cpu),
            "must be greater than 0",
        ));
    }
    for (i, metric) in arr(spec, "metrics").iter().enumerate() {
        let p = index("spec.metrics", i);
        let kind = get(metric, "type");
        let source = match kind.as_str() {
            Some("Resource") => "resource",
            Some("ContainerResource") => "containerResource",
            Some("Pods") => "pods",
            Some("Object") => "object",
            Some("External") => "external",
            _ => {
                errs.push(FieldError::not_supported(
                    child(&p, "type"),
                    kind,
                    &[
                        "ContainerResource",
                        "External",
                        "Object",
                        "Pods",
                        "Resource",
                    ],
                ));
                continue;
            }
        };
        let Some(body) = metric.get(source).filter(|b| !b.is_null()) else {
            errs.push(FieldError::required(
                child(&p, source),
                format!(
                    "must populate information for the given metric source (type {})",
                    kind.as_str().unwrap_or("")
                ),
            ));
            continue;
        };
        let target = get(body, "target");
        let tp = child(&child(&p, source), "target");
        let target_type = get(target, "type");
        match target_type.as_str() {
            Some("Utilization") => {
                let u = target.get("averageUtilization").and_then(Value::as_i64);
                match u {
                    None => errs.push(FieldError::required(
                        child(&tp, "averageUtilization"),
                        "must set either a target raw value or a target utilization",
                    )),
                    Some(u) if u <= 0 => errs.push(FieldError::invalid(
                        child(&tp, "averageUtilization"),
                        &Value::from(u),
                        "must be greater than 0",
                    )),
                    _ => {}
                }
            }
            Some("Value" | "AverageValue") => {
                for field in ["value", "averageValue"] {
                    if let Some(v) = target.get(field) {
                        quantity(v, &child(&tp, field), errs);
                    }
                }
            }
            _ => errs.push(FieldError::not_supported(
                child(&tp, "type"),
                target_type,
                &["AverageValue", "Utilization", "Value"],
            )),
        }
    }
}

fn pdb(spec: &Value, errs: &mut Errs) {
    let min = spec.get("minAvailable").filter(|v| !v.is_null());
    let max = spec.get("maxUnavailable").filter(|v| !v.is_null());
    if min.is_some() && max.is_some() {
        errs.push(FieldError::invalid(
            "spec",
            spec,
            "minAvailable and maxUnavailable cannot be both set",
        ));
    }
    for (field, value) in [("minAvailable", min), ("maxUnavailable", max)] {
        if let Some(v) = value {
            let p = child("spec", field);
            positive_int_or_percent(v, &p, errs);
            not_more_than_100_percent(v, &p, errs);
        }
    }
    if let Some(selector) = spec.get("selector").filter(|s| !s.is_null()) {
        validate_label_selector(selector, "spec.selector", errs);
    }
    if let Some(policy) = spec
        .get("unhealthyPodEvictionPolicy")
        .filter(|p| !p.is_null())
        && !matches!(policy.as_str(), Some("IfHealthyBudget" | "AlwaysAllow"))
    {
        errs.push(FieldError::not_supported(
            "spec.unhealthyPodEvictionPolicy",
            policy,
            &["AlwaysAllow", "IfHealthyBudget"],
        ));
    }
}

// ---------------------------------------------------------------------------------------------
// RBAC, storage classes, priority classes

fn policy_rule(rule: &Value, namespaced: bool, path: &str, errs: &mut Errs) {
    if arr(rule, "verbs").is_empty() {
        errs.push(FieldError::required(
            child(path, "verbs"),
            "verbs must contain at least one value",
        ));
    }
    let urls = arr(rule, "nonResourceURLs");
    if !urls.is_empty() {
        if namespaced {
            errs.push(FieldError::invalid(
                child(path, "nonResourceURLs"),
                get(rule, "nonResourceURLs"),
                "namespaced rules cannot apply to non-resource URLs",
            ));
        }
        if !arr(rule, "apiGroups").is_empty()
            || !arr(rule, "resources").is_empty()
            || !arr(rule, "resourceNames").is_empty()
        {
            errs.push(FieldError::invalid(
                child(path, "nonResourceURLs"),
                get(rule, "nonResourceURLs"),
                "rules cannot apply to both regular resources and non-resource URLs",
            ));
        }
        return;
    }
    if arr(rule, "apiGroups").is_empty() {
        errs.push(FieldError::required(
            child(path, "apiGroups"),
            "resource rules must supply at least one api group",
        ));
    }
    if arr(rule, "resources").is_empty() {
        errs.push(FieldError::required(
            child(path, "resources"),
            "resource rules must supply at least one resource",
        ));
    }
}

fn cluster_role(obj: &Value, errs: &mut Errs) {
    for (i, rule) in arr(obj, "rules").iter().enumerate() {
        policy_rule(rule, false, &index("rules", i), errs);
    }
    if let Some(aggregation) = obj.get("aggregationRule").filter(|a| !a.is_null()) {
        let selectors = arr(aggregation, "clusterRoleSelectors");
        if selectors.is_empty() {
            errs.push(FieldError::required(
                "aggregationRule.clusterRoleSelectors",
                "at least one clusterRoleSelector required if aggregationRule is non-nil",
            ));
        }
        for (i, s) in selectors.iter().enumerate() {
            validate_label_selector(s, &index("aggregationRule.clusterRoleSelectors", i), errs);
        }
    }
}

fn binding(obj: &Value, namespaced: bool, errs: &mut Errs) {
    let role_ref = get(obj, "roleRef");
    let group = get(role_ref, "apiGroup");
    if group.as_str() != Some("rbac.authorization.k8s.io") {
        errs.push(FieldError::not_supported(
            "roleRef.apiGroup",
            group,
            &["rbac.authorization.k8s.io"],
        ));
    }
    let kind = get(role_ref, "kind");
    let kinds: &[&str] = if namespaced {
        &["Role", "ClusterRole"]
    } else {
        &["ClusterRole"]
    };
    if !kinds.contains(&kind.as_str().unwrap_or("")) {
        errs.push(FieldError::not_supported("roleRef.kind", kind, kinds));
    }
    let name = str_of(role_ref, "name");
    if name.is_empty() {
        errs.push(FieldError::required("roleRef.name", ""));
    } else {
        invalid_each(
            errs,
            "roleRef.name",
            get(role_ref, "name"),
            names::is_valid_path_segment_name(name, false),
        );
    }
    for (i, subject) in arr(obj, "subjects").iter().enumerate() {
        let p = index("subjects", i);
        let name = str_of(subject, "name");
        if name.is_empty() {
            errs.push(FieldError::required(child(&p, "name"), ""));
        }
        let group = get(subject, "apiGroup");
        let group_str = group.as_str().unwrap_or("");
        match str_of(subject, "kind") {
            "ServiceAccount" => {
                if !name.is_empty() {
                    invalid_each(
                        errs,
                        &child(&p, "name"),
                        get(subject, "name"),
                        names::is_dns1123_subdomain(name),
                    );
                }
                if !group_str.is_empty() {
                    errs.push(FieldError::not_supported(
                        child(&p, "apiGroup"),
                        group,
                        &[""],
                    ));
                }
                if !namespaced && str_of(subject, "namespace").is_empty() {
                    errs.push(FieldError::required(child(&p, "namespace"), ""));
                }
            }
            "User" | "Group" => {
                if group_str != "rbac.authorization.k8s.io" {
                    errs.push(FieldError::not_supported(
                        child(&p, "apiGroup"),
                        group,
                        &["rbac.authorization.k8s.io"],
                    ));
                }
            }
            _ => errs.push(FieldError::not_supported(
                child(&p, "kind"),
                get(subject, "kind"),
                &["ServiceAccount", "User", "Group"],
            )),
        }
    }
}

fn storage_class(obj: &Value, errs: &mut Errs) {
    let provisioner = str_of(obj, "provisioner");
    if provisioner.is_empty() {
        errs.push(FieldError::required("provisioner", ""));
    } else {
        invalid_each(
            errs,
            "provisioner",
            get(obj, "provisioner"),
            names::is_qualified_name(&provisioner.to_lowercase()),
        );
    }
    let policy = get(obj, "reclaimPolicy");
    if let Some(p) = policy.as_str()
        && p != "Delete"
        && p != "Retain"
    {
        errs.push(FieldError::not_supported(
            "reclaimPolicy",
            policy,
            &["Delete", "Retain"],
        ));
    }
    let mode = get(obj, "volumeBindingMode");
    match mode.as_str() {
        None => errs.push(FieldError::required("volumeBindingMode", "")),
        Some("Immediate" | "WaitForFirstConsumer") => {}
        Some(_) => errs.push(FieldError::not_supported(
            "volumeBindingMode",
            mode,
            &["Immediate", "WaitForFirstConsumer"],
        )),
    }
}

fn priority_class(obj: &Value, errs: &mut Errs) {
    let name = str_of(get(obj, "metadata"), "name");
    let value = obj.get("value").and_then(Value::as_i64).unwrap_or(0);
    let global_default = obj.get("globalDefault") == Some(&Value::Bool(true));
    if let Some(_rest) = name.strip_prefix("system-") {
        let reason = match crate::defaults::system_priority_class(name) {
            None => Some(format!("{name} is not a known system priority class")),
            Some(v) if i64::from(v) != value => {
                Some(format!("value of {name} PriorityClass must be {v}"))
            }
            Some(_) if global_default => Some(format!(
                "globalDefault of {name} PriorityClass must be false"
            )),
            Some(_) => None,
        };
        if let Some(reason) = reason {
            errs.push(FieldError::forbidden(
                "metadata.name",
                format!(
                    "priority class names with 'system-' prefix are reserved for system use only. error: {reason}"
                ),
            ));
        }
    } else if value > 1_000_000_000 {
        errs.push(FieldError::forbidden(
            "value",
            "maximum allowed value of a user defined priority is 1000000000",
        ));
    }
    let policy = get(obj, "preemptionPolicy");
    if let Some(p) = policy.as_str()
        && p != "Never"
        && p != "PreemptLowerPriority"
    {
        errs.push(FieldError::not_supported(
            "preemptionPolicy",
            policy,
            &["Never", "PreemptLowerPriority"],
        ));
    }
}
