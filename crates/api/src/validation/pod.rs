//! Pods and pod templates (`ValidatePodSpec` and what it calls).

use std::collections::HashSet;

use serde_json::Value;

use super::names;
use super::quantity::{QUANTITY_FORMAT_MESSAGE, parse_quantity};
use super::{
    NONNEGATIVE, arr, child, get, index, invalid_each, key, map_of, nonnegative, str_of,
    validate_annotations, validate_labels,
};
use crate::FieldError;

type Errs = Vec<FieldError>;

/// A pod template: its metadata labels and annotations, and its spec (images may be empty).
pub(crate) fn validate_template(template: &Value, path: &str, errs: &mut Errs) {
    let meta = get(template, "metadata");
    let meta_path = child(path, "metadata");
    validate_labels(meta.get("labels"), &child(&meta_path, "labels"), errs);
    validate_annotations(
        meta.get("annotations"),
        &child(&meta_path, "annotations"),
        errs,
    );
    validate_spec(get(template, "spec"), &child(path, "spec"), false, errs);
}

/// `ValidatePodSpec`; `is_pod` adds the rules only pods have (an image is required).
pub(crate) fn validate_spec(spec: &Value, path: &str, is_pod: bool, errs: &mut Errs) {
    let volumes = validate_volumes(arr(spec, "volumes"), &child(path, "volumes"), errs);
    let mut container_names = HashSet::new();
    let mut host_ports = HashSet::new();
    for (i, c) in arr(spec, "initContainers").iter().enumerate() {
        let p = index(&child(path, "initContainers"), i);
        validate_container(c, &p, is_pod, &volumes, &mut container_names, errs);
        host_ports_unique(c, &p, &mut host_ports, errs);
        match c.get("restartPolicy").and_then(Value::as_str) {
            None => {
                for field in [
                    "lifecycle",
                    "livenessProbe",
                    "readinessProbe",
                    "startupProbe",
                ] {
                    if c.get(field).is_some_and(|v| !v.is_null()) {
                        errs.push(FieldError::forbidden(
                            child(&p, field),
                            "may not be set for init containers without restartPolicy=Always",
                        ));
                    }
                }
            }
            Some("Always") => {}
            Some(other) => errs.push(FieldError::not_supported(
                child(&p, "restartPolicy"),
                &Value::from(other),
                &["Always"],
            )),
        }
    }
    let containers = arr(spec, "containers");
    if containers.is_empty() {
        errs.push(FieldError::required(child(path, "containers"), ""));
    }
    for (i, c) in containers.iter().enumerate() {
        let p = index(&child(path, "containers"), i);
        validate_container(c, &p, is_pod, &volumes, &mut container_names, errs);
        host_ports_unique(c, &p, &mut host_ports, errs);
        if c.get("restartPolicy").is_some_and(|v| !v.is_null()) {
            errs.push(FieldError::forbidden(
                child(&p, "restartPolicy"),
                "may not be set for non-init containers",
            ));
        }
        if let Some(probe) = c.get("livenessProbe") {
            success_threshold_is_one(probe, &child(&p, "livenessProbe"), errs);
        }
        if let Some(probe) = c.get("startupProbe") {
            success_threshold_is_one(probe, &child(&p, "startupProbe"), errs);
        }
    }

    let restart = get(spec, "restartPolicy");
    match restart.as_str() {
        Some("Always" | "OnFailure" | "Never") => {}
        None | Some("") => errs.push(FieldError::required(child(path, "restartPolicy"), "")),
        Some(_) => errs.push(FieldError::not_supported(
            child(path, "restartPolicy"),
            restart,
            &["Always", "OnFailure", "Never"],
        )),
    }
    let dns = get(spec, "dnsPolicy");
    match dns.as_str() {
        Some("ClusterFirstWithHostNet" | "ClusterFirst" | "Default") => {}
        Some("None") => {
            if spec.get("dnsConfig").is_none_or(Value::is_null) {
                errs.push(FieldError::required(
                    child(path, "dnsConfig"),
                    "must provide `dnsConfig` when `dnsPolicy` is None",
                ));
            }
        }
        None | Some("") => errs.push(FieldError::required(child(path, "dnsPolicy"), "")),
        Some(_) => errs.push(FieldError::not_supported(
            child(path, "dnsPolicy"),
            dns,
            &["ClusterFirstWithHostNet", "ClusterFirst", "Default", "None"],
        )),
    }
    validate_labels(spec.get("nodeSelector"), &child(path, "nodeSelector"), errs);
    for (field, rule) in [
        (
            "serviceAccountName",
            names::is_dns1123_subdomain as fn(&str) -> Vec<String>,
        ),
        ("nodeName", names::is_dns1123_subdomain),
        ("priorityClassName", names::is_dns1123_subdomain),
        ("hostname", names::is_dns1123_label),
        ("subdomain", names::is_dns1123_label),
    ] {
        let value = str_of(spec, field);
        if !value.is_empty() {
            invalid_each(errs, &child(path, field), get(spec, field), rule(value));
        }
    }
    if let Some(deadline) = spec.get("activeDeadlineSeconds").and_then(Value::as_i64)
        && !(1..=i64::from(i32::MAX)).contains(&deadline)
    {
        errs.push(FieldError::invalid(
            child(path, "activeDeadlineSeconds"),
            &Value::from(deadline),
            names::inclusive_range_error(1, i64::from(i32::MAX)),
        ));
    }
    validate_tolerations(arr(spec, "tolerations"), &child(path, "tolerations"), errs);
    for (i, secret) in arr(spec, "imagePullSecrets").iter().enumerate() {
        if str_of(secret, "name").is_empty() {
            errs.push(FieldError::required(
                child(&index(&child(path, "imagePullSecrets"), i), "name"),
                "",
            ));
        }
    }
}

fn success_threshold_is_one(probe: &Value, path: &str, errs: &mut Errs) {
    if let Some(n) = probe.get("successThreshold").and_then(Value::as_i64)
        && n != 1
    {
        errs.push(FieldError::invalid(
            child(path, "successThreshold"),
            &Value::from(n),
            "must be 1",
        ));
    }
}

fn validate_volumes(volumes: &[Value], path: &str, errs: &mut Errs) -> HashSet<String> {
    let mut seen = HashSet::new();
    for (i, v) in volumes.iter().enumerate() {
        let p = index(path, i);
        let name = str_of(v, "name");
        let name_path = child(&p, "name");
        if name.is_empty() {
            errs.push(FieldError::required(&name_path, ""));
        } else {
            invalid_each(
                errs,
                &name_path,
                get(v, "name"),
                names::is_dns1123_label(name),
            );
        }
        if !name.is_empty() && !seen.insert(name.to_string()) {
            errs.push(FieldError::duplicate(&name_path, get(v, "name")));
        }
        let sources: Vec<&String> = v
            .as_object()
            .map(|m| m.keys().filter(|k| k.as_str() != "name").collect())
            .unwrap_or_default();
        if sources.is_empty() {
            errs.push(FieldError::required(&p, "must specify a volume type"));
        }
        for extra in sources.iter().skip(1) {
            errs.push(FieldError::forbidden(
                child(&p, extra),
                "may not specify more than 1 volume type",
            ));
        }
        let required = [
            ("hostPath", "path"),
            ("secret", "secretName"),
            ("persistentVolumeClaim", "claimName"),
            ("nfs", "server"),
            ("nfs", "path"),
            ("csi", "driver"),
        ];
        for (source, field) in required {
            if let Some(s) = v.get(source)
                && str_of(s, field).is_empty()
            {
                errs.push(FieldError::required(child(&child(&p, source), field), ""));
            }
        }
        for source in ["secret", "configMap", "downwardAPI", "projected"] {
            if let Some(mode) = v.get(source).and_then(|s| s.get("defaultMode")) {
                file_mode(mode, &child(&child(&p, source), "defaultMode"), errs);
            }
        }
        if let Some(host_path) = v.get("hostPath") {
            host_path_type(host_path, &child(&p, "hostPath"), errs);
        }
        if let Some(limit) = v.get("emptyDir").and_then(|e| e.get("sizeLimit")) {
            quantity(limit, &child(&child(&p, "emptyDir"), "sizeLimit"), errs);
        }
    }
    seen
}

pub(crate) fn host_path_type(host_path: &Value, path: &str, errs: &mut Errs) {
    let kind = get(host_path, "type");
    if let Some(t) = kind.as_str() {
        const TYPES: &[&str] = &[
            "",
            "BlockDevice",
            "CharDevice",
            "Directory",
            "DirectoryOrCreate",
            "File",
            "FileOrCreate",
            "Socket",
        ];
        if !TYPES.contains(&t) {
            errs.push(FieldError::not_supported(child(path, "type"), kind, TYPES));
        }
    }
}

fn file_mode(mode: &Value, path: &str, errs: &mut Errs) {
    if let Some(m) = mode.as_i64()
        && !(0..=0o777).contains(&m)
    {
        errs.push(FieldError::invalid(
            path,
            mode,
            "must be a number between 0 and 0777 (octal), both inclusive",
        ));
    }
}

fn validate_container(
    c: &Value,
    path: &str,
    is_pod: bool,
    volumes: &HashSet<String>,
    names_seen: &mut HashSet<String>,
    errs: &mut Errs,
) {
    let name = str_of(c, "name");
    let name_path = child(path, "name");
    if name.is_empty() {
        errs.push(FieldError::required(&name_path, ""));
    } else {
        invalid_each(
            errs,
            &name_path,
            get(c, "name"),
            names::is_dns1123_label(name),
        );
        if !names_seen.insert(name.to_string()) {
            errs.push(FieldError::duplicate(&name_path, get(c, "name")));
        }
    }
    let image = str_of(c, "image");
    if image.is_empty() {
        if is_pod {
            errs.push(FieldError::required(child(path, "image"), ""));
        }
    } else if image.trim() != image {
        errs.push(FieldError::invalid(
            child(path, "image"),
            get(c, "image"),
            "must not have leading or trailing whitespace",
        ));
    }
    let pull = get(c, "imagePullPolicy");
    match pull.as_str() {
        Some("Always" | "IfNotPresent" | "Never") => {}
        None | Some("") => errs.push(FieldError::required(child(path, "imagePullPolicy"), "")),
        Some(_) => errs.push(FieldError::not_supported(
            child(path, "imagePullPolicy"),
            pull,
            &["Always", "IfNotPresent", "Never"],
        )),
    }
    let message_policy = get(c, "terminationMessagePolicy");
    match message_policy.as_str() {
        Some("File" | "FallbackToLogsOnError") => {}
        None | Some("") => errs.push(FieldError::required(
            child(path, "terminationMessagePolicy"),
            "",
        )),
        Some(_) => errs.push(FieldError::not_supported(
            child(path, "terminationMessagePolicy"),
            message_policy,
            &["File", "FallbackToLogsOnError"],
        )),
    }
    validate_ports(arr(c, "ports"), &child(path, "ports"), errs);
    validate_env(arr(c, "env"), &child(path, "env"), errs);
    for (i, from) in arr(c, "envFrom").iter().enumerate() {
        let p = index(&child(path, "envFrom"), i);
        let prefix = str_of(from, "prefix");
        if !prefix.is_empty() {
            invalid_each(
                errs,
                &child(&p, "prefix"),
                get(from, "prefix"),
                names::is_env_var_name(prefix),
            );
        }
        let refs = ["configMapRef", "secretRef"]
            .iter()
            .filter(|k| from.get(**k).is_some())
            .count();
        if refs == 0 {
            errs.push(FieldError::invalid(
                &p,
                &Value::from(""),
                "must specify one of: `configMapRef` or `secretRef`",
            ));
        } else if refs > 1 {
            errs.push(FieldError::invalid(
                &p,
                &Value::from(""),
                "may not have more than one field specified at a time",
            ));
        }
    }
    validate_mounts(
        arr(c, "volumeMounts"),
        &child(path, "volumeMounts"),
        volumes,
        errs,
    );
    for probe in ["livenessProbe", "readinessProbe", "startupProbe"] {
        if let Some(p) = c.get(probe).filter(|p| !p.is_null()) {
            validate_probe(p, &child(path, probe), errs);
        }
    }
    for hook in ["postStart", "preStop"] {
        if let Some(h) = c.get("lifecycle").and_then(|l| l.get(hook)) {
            validate_handler(h, &child(&child(path, "lifecycle"), hook), errs);
        }
    }
    if let Some(resources) = c.get("resources") {
        validate_resources(resources, &child(path, "resources"), errs);
    }
}

fn validate_ports(ports: &[Value], path: &str, errs: &mut Errs) {
    let mut names_seen = HashSet::new();
    for (i, port) in ports.iter().enumerate() {
        let p = index(path, i);
        let name = str_of(port, "name");
        if !name.is_empty() {
            let msgs = names::is_valid_port_name(name);
            if !msgs.is_empty() {
                invalid_each(errs, &child(&p, "name"), get(port, "name"), msgs);
            } else if !names_seen.insert(name.to_string()) {
                errs.push(FieldError::duplicate(child(&p, "name"), get(port, "name")));
            }
        }
        match port.get("containerPort").and_then(Value::as_i64) {
            None | Some(0) => errs.push(FieldError::required(child(&p, "containerPort"), "")),
            Some(n) => invalid_each(
                errs,
                &child(&p, "containerPort"),
                &Value::from(n),
                names::is_valid_port_num(n),
            ),
        }
        if let Some(n) = port
            .get("hostPort")
            .and_then(Value::as_i64)
            .filter(|n| *n != 0)
        {
            invalid_each(
                errs,
                &child(&p, "hostPort"),
                &Value::from(n),
                names::is_valid_port_num(n),
            );
        }
        protocol(port, &p, errs);
    }
}

pub(crate) fn protocol(port: &Value, path: &str, errs: &mut Errs) {
    let protocol = get(port, "protocol");
    match protocol.as_str() {
        Some("TCP" | "UDP" | "SCTP") => {}
        None | Some("") => errs.push(FieldError::required(child(path, "protocol"), "")),
        Some(_) => errs.push(FieldError::not_supported(
            child(path, "protocol"),
            protocol,
            &["SCTP", "TCP", "UDP"],
        )),
    }
}

fn host_ports_unique(c: &Value, path: &str, seen: &mut HashSet<String>, errs: &mut Errs) {
    for (i, port) in arr(c, "ports").iter().enumerate() {
        let host_port = port.get("hostPort").and_then(Value::as_i64).unwrap_or(0);
        if host_port == 0 {
            continue;
        }
        let id = format!(
            "{}/{}/{}",
            str_of(port, "protocol"),
            str_of(port, "hostIP"),
            host_port
        );
        if !seen.insert(id.clone()) {
            errs.push(FieldError::duplicate(
                child(&index(&child(path, "ports"), i), "hostPort"),
                &Value::from(id),
            ));
        }
    }
}

fn validate_env(env: &[Value], path: &str, errs: &mut Errs) {
    for (i, var) in env.iter().enumerate() {
        let p = index(path, i);
        let name = str_of(var, "name");
        if name.is_empty() {
            errs.push(FieldError::required(child(&p, "name"), ""));
        } else {
            invalid_each(
                errs,
                &child(&p, "name"),
                get(var, "name"),
                names::is_env_var_name(name),
            );
        }
        let Some(from) = var.get("valueFrom").filter(|v| !v.is_null()) else {
            continue;
        };
        let from_path = child(&p, "valueFrom");
        let sources: Vec<&str> = [
            "fieldRef",
            "resourceFieldRef",
            "configMapKeyRef",
            "secretKeyRef",
        ]
        .into_iter()
        .filter(|k| from.get(*k).is_some_and(|v| !v.is_null()))
        .collect();
        if sources.is_empty() {
            errs.push(FieldError::invalid(
                &from_path,
                &Value::from(""),
                "must specify one of: `fieldRef`, `resourceFieldRef`, `configMapKeyRef` or `secretKeyRef`",
            ));
        } else if sources.len() > 1 {
            errs.push(FieldError::invalid(
                &from_path,
                &Value::from(""),
                "may not have more than one field specified at a time",
            ));
        }
        if !str_of(var, "value").is_empty() {
            errs.push(FieldError::invalid(
                &from_path,
                &Value::from(""),
                "may not be specified when `value` is not empty",
            ));
        }
        for source in ["configMapKeyRef", "secretKeyRef"] {
            if let Some(r) = from.get(source) {
                let sp = child(&from_path, source);
                let k = str_of(r, "key");
                if k.is_empty() {
                    errs.push(FieldError::required(child(&sp, "key"), ""));
                } else {
                    invalid_each(
                        errs,
                        &child(&sp, "key"),
                        get(r, "key"),
                        names::is_config_map_key(k),
                    );
                }
                if str_of(r, "name").is_empty() {
                    errs.push(FieldError::required(child(&sp, "name"), ""));
                }
            }
        }
        if let Some(r) = from.get("fieldRef")
            && str_of(r, "fieldPath").is_empty()
        {
            errs.push(FieldError::required(
                child(&child(&from_path, "fieldRef"), "fieldPath"),
                "",
            ));
        }
    }
}

fn validate_mounts(mounts: &[Value], path: &str, volumes: &HashSet<String>, errs: &mut Errs) {
    let mut paths = HashSet::new();
    for (i, m) in mounts.iter().enumerate() {
        let p = index(path, i);
        let name = str_of(m, "name");
        if name.is_empty() {
            errs.push(FieldError::required(child(&p, "name"), ""));
        } else if !volumes.contains(name) {
            errs.push(FieldError::not_found(child(&p, "name"), get(m, "name")));
        }
        let mount_path = str_of(m, "mountPath");
        if mount_path.is_empty() {
            errs.push(FieldError::required(child(&p, "mountPath"), ""));
        } else if !paths.insert(mount_path.to_string()) {
            errs.push(FieldError::invalid(
                child(&p, "mountPath"),
                get(m, "mountPath"),
                "must be unique",
            ));
        }
        let sub_path = str_of(m, "subPath");
        if !sub_path.is_empty() {
            if sub_path.starts_with('/') {
                errs.push(FieldError::invalid(
                    child(&p, "subPath"),
                    get(m, "subPath"),
                    "must be a relative path",
                ));
            }
            if sub_path.split('/').any(|part| part == "..") {
                errs.push(FieldError::invalid(
                    child(&p, "subPath"),
                    get(m, "subPath"),
                    "must not contain '..'",
                ));
            }
        }
    }
}

fn validate_probe(probe: &Value, path: &str, errs: &mut Errs) {
    validate_handler(probe, path, errs);
    for field in [
        "initialDelaySeconds",
        "timeoutSeconds",
        "periodSeconds",
        "successThreshold",
        "failureThreshold",
    ] {
        nonnegative(probe, field, path, errs);
    }
    if let Some(n) = probe
        .get("terminationGracePeriodSeconds")
        .and_then(Value::as_i64)
        && n <= 0
    {
        errs.push(FieldError::invalid(
            child(path, "terminationGracePeriodSeconds"),
            &Value::from(n),
            "must be greater than 0",
        ));
    }
}

/// A probe or lifecycle handler: exactly one action.
fn validate_handler(handler: &Value, path: &str, errs: &mut Errs) {
    let actions: Vec<&str> = ["exec", "httpGet", "tcpSocket", "grpc", "sleep"]
        .into_iter()
        .filter(|k| handler.get(*k).is_some_and(|v| !v.is_null()))
        .collect();
    if actions.is_empty() {
        errs.push(FieldError::required(path, "must specify a handler type"));
    }
    for extra in actions.iter().skip(1) {
        errs.push(FieldError::forbidden(
            child(path, extra),
            "may not specify more than 1 handler type",
        ));
    }
    if let Some(exec) = handler.get("exec")
        && arr(exec, "command").is_empty()
    {
        errs.push(FieldError::required(
            child(&child(path, "exec"), "command"),
            "",
        ));
    }
    for action in ["httpGet", "tcpSocket"] {
        if let Some(a) = handler.get(action) {
            port_num_or_name(get(a, "port"), &child(&child(path, action), "port"), errs);
        }
    }
    if let Some(http) = handler.get("httpGet") {
        let scheme = get(http, "scheme");
        if let Some(s) = scheme.as_str()
            && s != "HTTP"
            && s != "HTTPS"
        {
            errs.push(FieldError::not_supported(
                child(&child(path, "httpGet"), "scheme"),
                scheme,
                &["HTTP", "HTTPS"],
            ));
        }
    }
    if let Some(grpc) = handler.get("grpc") {
        let port = grpc.get("port").and_then(Value::as_i64).unwrap_or(0);
        invalid_each(
            errs,
            &child(&child(path, "grpc"), "port"),
            &Value::from(port),
            names::is_valid_port_num(port),
        );
    }
}

/// `ValidatePortNumOrName` for an int-or-string port.
pub(crate) fn port_num_or_name(port: &Value, path: &str, errs: &mut Errs) {
    match port {
        Value::Number(n) => {
            let n = n.as_i64().unwrap_or(0);
            invalid_each(errs, path, port, names::is_valid_port_num(n));
        }
        Value::String(s) => invalid_each(errs, path, port, names::is_valid_port_name(s)),
        _ => errs.push(FieldError::invalid(path, port, "unknown type")),
    }
}

pub(crate) fn quantity(value: &Value, path: &str, errs: &mut Errs) -> Option<super::Quantity> {
    let raw = value
        .as_str()
        .map(str::to_string)
        .unwrap_or_else(|| value.to_string());
    match parse_quantity(&raw) {
        Ok(q) => Some(q),
        Err(_) => {
            errs.push(FieldError::invalid(path, value, QUANTITY_FORMAT_MESSAGE));
            None
        }
    }
}

fn is_native_resource(name: &str) -> bool {
    !name.contains('/') || name.contains("kubernetes.io/")
}

fn is_standard_container_resource(name: &str) -> bool {
    matches!(name, "cpu" | "memory" | "ephemeral-storage") || name.starts_with("hugepages-")
}

fn overcommit_allowed(name: &str) -> bool {
    is_native_resource(name) && !name.starts_with("hugepages-")
}

/// `ValidateResourceRequirements` for a container.
fn validate_resources(resources: &Value, path: &str, errs: &mut Errs) {
    let limits_path = child(path, "limits");
    let requests_path = child(path, "requests");
    let mut limits = Vec::new();
    if let Some(map) = map_of(resources, "limits") {
        for (name, value) in map {
            let p = key(&limits_path, name);
            container_resource_name(name, &p, errs);
            if let Some(q) = resource_quantity(name, value, &p, errs) {
                limits.push((name.as_str(), q));
            }
        }
    }
    if let Some(map) = map_of(resources, "requests") {
        for (name, value) in map {
            let p = key(&requests_path, name);
            container_resource_name(name, &p, errs);
            let Some(q) = resource_quantity(name, value, &p, errs) else {
                continue;
            };
            match limits.iter().find(|(n, _)| *n == name.as_str()) {
                Some((_, limit)) => {
                    if q != *limit && !overcommit_allowed(name) {
                        errs.push(FieldError::invalid(
                            &requests_path,
                            &Value::from(q.to_string()),
                            format!("must be equal to {name} limit of {limit}"),
                        ));
                    } else if q > *limit {
                        errs.push(FieldError::invalid(
                            &requests_path,
                            &Value::from(q.to_string()),
                            format!("must be less than or equal to {name} limit of {limit}"),
                        ));
                    }
                }
                None if !overcommit_allowed(name) => errs.push(FieldError::required(
                    &limits_path,
                    "Limit must be set for non overcommitable resources",
                )),
                None => {}
            }
        }
    }
}

fn container_resource_name(name: &str, path: &str, errs: &mut Errs) {
    let value = Value::from(name);
    let msgs = names::is_qualified_name(name);
    if !msgs.is_empty() {
        invalid_each(errs, path, &value, msgs);
        return;
    }
    if !name.contains('/') {
        if !is_standard_container_resource(name) {
            errs.push(FieldError::invalid(
                path,
                &value,
                "must be a standard resource for containers",
            ));
        }
    } else if !is_native_resource(name)
        && !names::is_qualified_name(&format!("requests.{name}")).is_empty()
    {
        errs.push(FieldError::invalid(
            path,
            &value,
            "doesn't follow extended resource name standard",
        ));
    }
}

/// `ValidateResourceQuantityValue`: parses, not negative, whole for extended resources.
pub(crate) fn resource_quantity(
    name: &str,
    value: &Value,
    path: &str,
    errs: &mut Errs,
) -> Option<super::Quantity> {
    let q = quantity(value, path, errs)?;
    if q.is_negative() {
        errs.push(FieldError::invalid(
            path,
            &Value::from(q.to_string()),
            NONNEGATIVE,
        ));
    }
    if !is_native_resource(name) && !q.is_integer() {
        errs.push(FieldError::invalid(
            path,
            &Value::from(q.to_string()),
            "must be an integer",
        ));
    }
    Some(q)
}

pub(crate) fn validate_tolerations(tolerations: &[Value], path: &str, errs: &mut Errs) {
    for (i, t) in tolerations.iter().enumerate() {
        let p = index(path, i);
        let k = str_of(t, "key");
        if !k.is_empty() {
            invalid_each(
                errs,
                &child(&p, "key"),
                get(t, "key"),
                names::is_qualified_name(k),
            );
        }
        let operator = str_of(t, "operator");
        if k.is_empty() && operator != "Exists" {
            errs.push(FieldError::invalid(
                child(&p, "operator"),
                get(t, "operator"),
                "operator must be Exists when `key` is empty, which means \"match all values and all keys\"",
            ));
        }
        let effect = str_of(t, "effect");
        if t.get("tolerationSeconds").is_some_and(|v| !v.is_null()) && effect != "NoExecute" {
            errs.push(FieldError::invalid(
                child(&p, "effect"),
                get(t, "effect"),
                "effect must be 'NoExecute' when `tolerationSeconds` is set",
            ));
        }
        match operator {
            "" | "Equal" => {
                let msgs = names::is_valid_label_value(str_of(t, "value"));
                if !msgs.is_empty() {
                    errs.push(FieldError::invalid(
                        child(&p, "operator"),
                        get(t, "value"),
                        msgs.join(";"),
                    ));
                }
            }
            "Exists" => {
                if !str_of(t, "value").is_empty() {
                    errs.push(FieldError::invalid(
                        child(&p, "operator"),
                        t,
                        "value must be empty when `operator` is 'Exists'",
                    ));
                }
            }
            _ => errs.push(FieldError::not_supported(
                child(&p, "operator"),
                get(t, "operator"),
                &["Equal", "Exists"],
            )),
        }
        if !effect.is_empty() {
            taint_effect(get(t, "effect"), &child(&p, "effect"), errs);
        }
    }
}

pub(crate) fn taint_effect(effect: &Value, path: &str, errs: &mut Errs) {
    if !matches!(
        effect.as_str(),
        Some("NoSchedule" | "PreferNoSchedule" | "NoExecute")
    ) {
        errs.push(FieldError::not_supported(
            path,
            effect,
            &["NoSchedule", "PreferNoSchedule", "NoExecute"],
        ));
    }
}
