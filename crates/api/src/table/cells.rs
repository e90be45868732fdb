//! Row cells of every printer but the pod one, computed as upstream's printers compute them
//! with wide output on (the server always sends every column; kubectl hides priority 1).

use std::collections::BTreeSet;

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::Value;

use super::format::{
    age, arr_at, bool_at, containers_and_images, format_label_selector, format_labels, get, int_at,
    int_or_string, join_host_port, label_selector_string, len_at, list_with_more, name, opt_str,
    quantity, since, str_at, time_at,
};
use super::{Printer, human_duration, pod};

pub(super) fn cells(printer: Printer, obj: &Value, now: DateTime<Utc>) -> Vec<Value> {
    use Printer as P;
    match printer {
        P::Pod => pod::cells(obj, now),
        P::PodTemplate => pod_template(obj),
        P::PodDisruptionBudget => pod_disruption_budget(obj, now),
        P::ReplicationController => replication_controller(obj, now),
        P::ReplicaSet => replica_set(obj, now),
        P::DaemonSet => daemon_set(obj, now),
        P::Job => job(obj, now),
        P::CronJob => cron_job(obj, now),
        P::Service => service(obj, now),
        P::Ingress => ingress(obj, now),
        P::IngressClass => ingress_class(obj, now),
        P::StatefulSet => stateful_set(obj, now),
        P::Endpoints => endpoints(obj, now),
        P::Node => node(obj, now),
        P::Event => event(obj, now, &CORE_EVENT),
        P::EventsV1 => event(obj, now, &EVENTS_V1_EVENT),
        P::Namespace => vec![
            name(obj).into(),
            str_at(obj, &["status", "phase"]).into(),
            age(obj, now),
        ],
        P::Secret => vec![
            name(obj).into(),
            str_at(obj, &["type"]).into(),
            len_at(obj, &["data"]).into(),
            age(obj, now),
        ],
        P::ServiceAccount => vec![
            name(obj).into(),
            len_at(obj, &["secrets"]).into(),
            age(obj, now),
        ],
        P::PersistentVolume => persistent_volume(obj, now),
        P::PersistentVolumeClaim => persistent_volume_claim(obj, now),
        P::Deployment => deployment(obj, now),
        P::HorizontalPodAutoscaler => horizontal_pod_autoscaler(obj, now),
        P::ConfigMap => vec![
            name(obj).into(),
            (len_at(obj, &["data"]) + len_at(obj, &["binaryData"])).into(),
            age(obj, now),
        ],
        P::NetworkPolicy => vec![
            name(obj).into(),
            format_label_selector(get(obj, &["spec", "podSelector"])).into(),
            age(obj, now),
        ],
        P::RoleBinding | P::ClusterRoleBinding => role_binding(obj, now),
        P::Lease => vec![
            name(obj).into(),
            str_at(obj, &["spec", "holderIdentity"]).into(),
            age(obj, now),
        ],
        P::StorageClass => storage_class(obj, now),
        P::ControllerRevision => controller_revision(obj, now),
        P::ResourceQuota => resource_quota(obj, now),
        P::PriorityClass => vec![
            name(obj).into(),
            int_at(obj, &["value"]).into(),
            bool_at(obj, &["globalDefault"]).into(),
            age(obj, now),
            str_at(obj, &["preemptionPolicy"]).into(),
        ],
        P::EndpointSlice => endpoint_slice(obj, now),
        P::Default => {
            // Upstream formats the zero time when the object has none.
            let created = time_at(obj, &["metadata", "creationTimestamp"])
                .map(|t| t.to_rfc3339_opts(SecondsFormat::Secs, true))
                .unwrap_or_else(|| "0001-01-01T00:00:00Z".to_string());
            vec![name(obj).into(), created.into()]
        }
    }
}

/// `spec.replicas`, which defaulting sets to 1 when omitted.
fn desired_replicas(obj: &Value) -> i64 {
    get(obj, &["spec", "replicas"])
        .and_then(Value::as_i64)
        .unwrap_or(1)
}

fn push_template(out: &mut Vec<Value>, template_spec: &Value) {
    let (names, images) = containers_and_images(arr_at(template_spec, &["containers"]));
    out.push(names.into());
    out.push(images.into());
}

fn template_spec(obj: &Value) -> &Value {
    static NULL: Value = Value::Null;
    get(obj, &["spec", "template", "spec"]).unwrap_or(&NULL)
}

fn pod_template(obj: &Value) -> Vec<Value> {
    let mut out = vec![name(obj).into()];
    push_template(
        &mut out,
        get(obj, &["template", "spec"]).unwrap_or(&Value::Null),
    );
    out.push(format_labels(get(obj, &["template", "metadata", "labels"])).into());
    out
}

fn pod_disruption_budget(obj: &Value, now: DateTime<Utc>) -> Vec<Value> {
    let bound =
        |field: &str| get(obj, &["spec", field]).map_or_else(|| "N/A".to_string(), int_or_string);
    vec![
        name(obj).into(),
        bound("minAvailable").into(),
        bound("maxUnavailable").into(),
        int_at(obj, &["status", "disruptionsAllowed"]).into(),
        age(obj, now),
    ]
}

fn replication_controller(obj: &Value, now: DateTime<Utc>) -> Vec<Value> {
    let mut out = vec![
        name(obj).into(),
        desired_replicas(obj).into(),
        int_at(obj, &["status", "replicas"]).into(),
        int_at(obj, &["status", "readyReplicas"]).into(),
        age(obj, now),
    ];
    push_template(&mut out, template_spec(obj));
    out.push(format_labels(get(obj, &["spec", "selector"])).into());
    out
}

fn replica_set(obj: &Value, now: DateTime<Utc>) -> Vec<Value> {
    let mut out = vec![
        name(obj).into(),
        desired_replicas(obj).into(),
        int_at(obj, &["status", "replicas"]).into(),
        int_at(obj, &["status", "readyReplicas"]).into(),
        age(obj, now),
    ];
    push_template(&mut out, template_spec(obj));
    out.push(format_label_selector(get(obj, &["spec", "selector"])).into());
    out
}

fn daemon_set(obj: &Value, now: DateTime<Utc>) -> Vec<Value> {
    let status = |f: &str| Value::from(int_at(obj, &["status", f]));
    let mut out = vec![
        name(obj).into(),
        status("desiredNumberScheduled"),
        status("currentNumberScheduled"),
        status("numberReady"),
        status("updatedNumberScheduled"),
        status("numberAvailable"),
        format_labels(get(template_spec(obj), &["nodeSelector"])).into(),
        age(obj, now),
    ];
    push_template(&mut out, template_spec(obj));
    out.push(format_label_selector(get(obj, &["spec", "selector"])).into());
    out
}

fn stateful_set(obj: &Value, now: DateTime<Utc>) -> Vec<Value> {
    let ready = int_at(obj, &["status", "readyReplicas"]);
    let mut out = vec![
        name(obj).into(),
        format!("{ready}/{}", desired_replicas(obj)).into(),
        age(obj, now),
    ];
    push_template(&mut out, template_spec(obj));
    out
}

fn deployment(obj: &Value, now: DateTime<Utc>) -> Vec<Value> {
    let ready = int_at(obj, &["status", "readyReplicas"]);
    // Unlike the other workloads, an empty selector renders as "" here.
    let selector = match label_selector_string(get(obj, &["spec", "selector"])) {
        Ok(s) => s.unwrap_or_default(),
        Err(()) => "<invalid>".to_string(),
    };
    let mut out = vec![
        name(obj).into(),
        format!("{ready}/{}", desired_replicas(obj)).into(),
        int_at(obj, &["status", "updatedReplicas"]).into(),
        int_at(obj, &["status", "availableReplicas"]).into(),
        age(obj, now),
    ];
    push_template(&mut out, template_spec(obj));
    out.push(selector.into());
    out
}

/// Whether the job has a condition of type `ty`; the first such condition decides.
fn job_condition(obj: &Value, ty: &str) -> bool {
    arr_at(obj, &["status", "conditions"])
        .iter()
        .find(|c| str_at(c, &["type"]) == ty)
        .is_some_and(|c| str_at(c, &["status"]) == "True")
}

fn job(obj: &Value, now: DateTime<Utc>) -> Vec<Value> {
    let succeeded = int_at(obj, &["status", "succeeded"]);
    let completions = match get(obj, &["spec", "completions"]).and_then(Value::as_i64) {
        Some(c) => format!("{succeeded}/{c}"),
        None => {
            let parallelism = int_at(obj, &["spec", "parallelism"]);
            if parallelism > 1 {
                format!("{succeeded}/1 of {parallelism}")
            } else {
                format!("{succeeded}/1")
            }
        }
    };
    let start = time_at(obj, &["status", "startTime"]);
    let duration = match (start, time_at(obj, &["status", "completionTime"])) {
        (None, _) => String::new(),
        (Some(start), None) => human_duration(now - start),
        (Some(start), Some(end)) => human_duration(end - start),
    };
    let status = if job_condition(obj, "Complete") {
        "Complete"
    } else if job_condition(obj, "Failed") {
        "Failed"
    } else if get(obj, &["metadata", "deletionTimestamp"]).is_some() {
        "Terminating"
    } else if job_condition(obj, "Suspended") {
        "Suspended"
    } else if job_condition(obj, "FailureTarget") {
        "FailureTarget"
    } else {
        "Running"
    };
    let mut out = vec![
        name(obj).into(),
        status.into(),
        completions.into(),
        duration.into(),
        age(obj, now),
    ];
    push_template(&mut out, template_spec(obj));
    out.push(format_label_selector(get(obj, &["spec", "selector"])).into());
    out
}

/// `printBoolPtr`: "True", "False" or "<unset>".
fn bool_ptr(v: Option<&Value>) -> &'static str {
    match v.and_then(Value::as_bool) {
        Some(true) => "True",
        Some(false) => "False",
        None => "<unset>",
    }
}

fn cron_job(obj: &Value, now: DateTime<Utc>) -> Vec<Value> {
    let last_schedule = match time_at(obj, &["status", "lastScheduleTime"]) {
        Some(t) => since(Some(t), now),
        None => "<none>".to_string(),
    };
    let job_spec = get(obj, &["spec", "jobTemplate", "spec"]).unwrap_or(&Value::Null);
    let mut out = vec![
        name(obj).into(),
        str_at(obj, &["spec", "schedule"]).into(),
        opt_str(obj, &["spec", "timeZone"])
            .unwrap_or("<none>")
            .into(),
        bool_ptr(get(obj, &["spec", "suspend"])).into(),
        len_at(obj, &["status", "active"]).into(),
        last_schedule.into(),
        age(obj, now),
    ];
    push_template(
        &mut out,
        get(job_spec, &["template", "spec"]).unwrap_or(&Value::Null),
    );
    out.push(format_label_selector(get(job_spec, &["selector"])).into());
    out
}

/// Load-balancer ingress points (IP, else hostname), sorted and de-duplicated.
fn load_balancer_ingress(status: Option<&Value>) -> String {
    let mut points = BTreeSet::new();
    if let Some(status) = status {
        for ing in arr_at(status, &["ingress"]) {
            let ip = str_at(ing, &["ip"]);
            let hostname = str_at(ing, &["hostname"]);
            if !ip.is_empty() {
                points.insert(ip);
            } else if !hostname.is_empty() {
                points.insert(hostname);
            }
        }
    }
    points.into_iter().collect::<Vec<_>>().join(",")
}

fn service_external_ip(svc: &Value, svc_type: &str) -> String {
    let external: Vec<&str> = arr_at(svc, &["spec", "externalIPs"])
        .iter()
        .filter_map(Value::as_str)
        .collect();
    match svc_type {
        "ClusterIP" | "NodePort" => {
            if external.is_empty() {
                "<none>".to_string()
            } else {
                external.join(",")
            }
        }
        "LoadBalancer" => {
            let lb = load_balancer_ingress(get(svc, &["status", "loadBalancer"]));
            if !external.is_empty() {
                let mut all: Vec<&str> = if lb.is_empty() {
                    Vec::new()
                } else {
                    lb.split(',').collect()
                };
                all.extend(external);
                all.join(",")
            } else if !lb.is_empty() {
                lb
            } else {
                "<pending>".to_string()
            }
        }
        "ExternalName" => str_at(svc, &["spec", "externalName"]).to_string(),
        _ => "<unknown>".to_string(),
    }
}

fn service_ports(svc: &Value) -> String {
    let ports = arr_at(svc, &["spec", "ports"]);
    if ports.is_empty() {
        return "<none>".to_string();
    }
    let pieces: Vec<String> = ports
        .iter()
        .map(|p| {
            let port = int_at(p, &["port"]);
            let protocol = opt_str(p, &["protocol"]).unwrap_or("TCP");
            match int_at(p, &["nodePort"]) {
                n if n > 0 => format!("{port}:{n}/{protocol}"),
                _ => format!("{port}/{protocol}"),
            }
        })
        .collect();
    pieces.join(",")
}

fn service(obj: &Value, now: DateTime<Utc>) -> Vec<Value> {
    // Defaulting always sets the type; treat an undefaulted object like the default.
    let svc_type = opt_str(obj, &["spec", "type"]).unwrap_or("ClusterIP");
    let cluster_ip = arr_at(obj, &["spec", "clusterIPs"])
        .first()
        .and_then(Value::as_str)
        .or_else(|| opt_str(obj, &["spec", "clusterIP"]))
        .filter(|ip| !ip.is_empty())
        .unwrap_or("<none>");
    vec![
        name(obj).into(),
        svc_type.into(),
        cluster_ip.into(),
        service_external_ip(obj, svc_type).into(),
        service_ports(obj).into(),
        age(obj, now),
        format_labels(get(obj, &["spec", "selector"])).into(),
    ]
}

fn ingress(obj: &Value, now: DateTime<Utc>) -> Vec<Value> {
    const MAX: usize = 3;
    let rules = arr_at(obj, &["spec", "rules"]);
    let mut hosts = Vec::new();
    let mut more = false;
    for rule in rules {
        if hosts.len() == MAX {
            more = true;
        }
        let host = str_at(rule, &["host"]);
        if !more && !host.is_empty() {
            hosts.push(host);
        }
    }
    let hosts = if hosts.is_empty() {
        "*".to_string()
    } else if more {
        format!("{} + {} more...", hosts.join(","), rules.len() - MAX)
    } else {
        hosts.join(",")
    };
    let ports = if arr_at(obj, &["spec", "tls"]).is_empty() {
        "80"
    } else {
        "80, 443"
    };
    vec![
        name(obj).into(),
        opt_str(obj, &["spec", "ingressClassName"])
            .unwrap_or("<none>")
            .into(),
        hosts.into(),
        load_balancer_ingress(get(obj, &["status", "loadBalancer"])).into(),
        ports.into(),
        age(obj, now),
    ]
}

fn ingress_class(obj: &Value, now: DateTime<Utc>) -> Vec<Value> {
    let parameters = match get(obj, &["spec", "parameters"]) {
        None => "<none>".to_string(),
        Some(p) => {
            let mut s = str_at(p, &["kind"]).to_string();
            if let Some(group) = opt_str(p, &["apiGroup"]) {
                s.push('.');
                s.push_str(group);
            }
            s.push('/');
            s.push_str(str_at(p, &["name"]));
            s
        }
    };
    vec![
        name(obj).into(),
        str_at(obj, &["spec", "controller"]).into(),
        parameters.into(),
        age(obj, now),
    ]
}

/// Endpoint addresses as `ip:port`, the first three, then "+ N more...".
fn format_endpoints(obj: &Value) -> String {
    const MAX: usize = 3;
    let subsets = arr_at(obj, &["subsets"]);
    if subsets.is_empty() {
        return "<none>".to_string();
    }
    let mut list: Vec<String> = Vec::new();
    let mut more = false;
    let mut count = 0usize;
    for ss in subsets {
        let addresses = arr_at(ss, &["addresses"]);
        let ports = arr_at(ss, &["ports"]);
        if ports.is_empty() {
            // Headless services may have no ports.
            count += addresses.len();
            for addr in addresses {
                if list.len() == MAX {
                    more = true;
                    break;
                }
                list.push(str_at(addr, &["ip"]).to_string());
            }
            continue;
        }
        for port in ports {
            count += addresses.len();
            for addr in addresses {
                if list.len() == MAX {
                    more = true;
                    break;
                }
                list.push(join_host_port(
                    str_at(addr, &["ip"]),
                    int_at(port, &["port"]),
                ));
            }
        }
    }
    let joined = list.join(",");
    if more {
        format!("{joined} + {} more...", count - MAX)
    } else {
        joined
    }
}

fn endpoints(obj: &Value, now: DateTime<Utc>) -> Vec<Value> {
    vec![
        name(obj).into(),
        format_endpoints(obj).into(),
        age(obj, now),
    ]
}

fn endpoint_slice(obj: &Value, now: DateTime<Utc>) -> Vec<Value> {
    const MAX: usize = 3;
    let mut ports = Vec::new();
    let mut more = false;
    let mut count = 0;
    for port in arr_at(obj, &["ports"]) {
        if ports.len() < MAX {
            let shown = match get(port, &["port"]).and_then(Value::as_i64) {
                Some(p) => p.to_string(),
                None => opt_str(port, &["name"]).unwrap_or("*").to_string(),
            };
            ports.push(shown);
        } else if ports.len() == MAX {
            more = true;
        }
        count += 1;
    }
    let ports = list_with_more(&ports, more, count, MAX);

    let mut addresses = Vec::new();
    let mut more = false;
    let mut count = 0;
    for endpoint in arr_at(obj, &["endpoints"]) {
        for address in arr_at(endpoint, &["addresses"]) {
            if addresses.len() < MAX {
                addresses.push(address.as_str().unwrap_or("").to_string());
            } else if addresses.len() == MAX {
                more = true;
            }
            count += 1;
        }
    }
    let addresses = list_with_more(&addresses, more, count, MAX);
    vec![
        name(obj).into(),
        str_at(obj, &["addressType"]).into(),
        ports.into(),
        addresses.into(),
        age(obj, now),
    ]
}

/// Roles from `node-role.kubernetes.io/<role>` keys and the `kubernetes.io/role` value.
pub(super) fn node_roles(node: &Value) -> String {
    let mut roles = BTreeSet::new();
    if let Some(Value::Object(labels)) = get(node, &["metadata", "labels"]) {
        for (k, v) in labels {
            if let Some(role) = k.strip_prefix("node-role.kubernetes.io/") {
                if !role.is_empty() {
                    roles.insert(role);
                }
            } else if k == "kubernetes.io/role"
                && let Some(v) = v.as_str()
                && !v.is_empty()
            {
                roles.insert(v);
            }
        }
    }
    if roles.is_empty() {
        return "<none>".to_string();
    }
    roles.into_iter().collect::<Vec<_>>().join(",")
}

fn node_address(node: &Value, ty: &str) -> String {
    arr_at(node, &["status", "addresses"])
        .iter()
        .find(|a| str_at(a, &["type"]) == ty)
        .map_or_else(
            || "<none>".to_string(),
            |a| str_at(a, &["address"]).to_string(),
        )
}

fn node(obj: &Value, now: DateTime<Utc>) -> Vec<Value> {
    // Only the Ready condition makes up the STATUS column.
    let mut status = match arr_at(obj, &["status", "conditions"])
        .iter()
        .rev()
        .find(|c| str_at(c, &["type"]) == "Ready")
    {
        Some(c) if str_at(c, &["status"]) == "True" => "Ready".to_string(),
        Some(_) => "NotReady".to_string(),
        None => "Unknown".to_string(),
    };
    if bool_at(obj, &["spec", "unschedulable"]) {
        status.push_str(",SchedulingDisabled");
    }
    let info = |field: &str| -> Value {
        let v = str_at(obj, &["status", "nodeInfo", field]);
        if v.is_empty() { "<unknown>" } else { v }.into()
    };
    vec![
        name(obj).into(),
        status.into(),
        node_roles(obj).into(),
        age(obj, now),
        str_at(obj, &["status", "nodeInfo", "kubeletVersion"]).into(),
        node_address(obj, "InternalIP").into(),
        node_address(obj, "ExternalIP").into(),
        info("osImage"),
        info("kernelVersion"),
        info("containerRuntimeVersion"),
    ]
}

/// Where the fields of the shared event printer live in each event API.
struct EventFields {
    involved: &'static str,
    first: &'static str,
    last: &'static str,
    count: &'static str,
    source: &'static str,
    message: &'static str,
}

const CORE_EVENT: EventFields = EventFields {
    involved: "involvedObject",
    first: "firstTimestamp",
    last: "lastTimestamp",
    count: "count",
    source: "source",
    message: "message",
};

const EVENTS_V1_EVENT: EventFields = EventFields {
    involved: "regarding",
    first: "deprecatedFirstTimestamp",
    last: "deprecatedLastTimestamp",
    count: "deprecatedCount",
    source: "deprecatedSource",
    message: "note",
};

fn first_non_empty<'a>(a: &'a str, b: &'a str) -> &'a str {
    if a.is_empty() { b } else { a }
}

fn event(obj: &Value, now: DateTime<Utc>, f: &EventFields) -> Vec<Value> {
    let first_seen = match time_at(obj, &[f.first]) {
        Some(t) => since(Some(t), now),
        None => since(time_at(obj, &["eventTime"]), now),
    };
    let mut last_seen = match time_at(obj, &[f.last]) {
        Some(t) => since(Some(t), now),
        None => first_seen.clone(),
    };
    let mut count = int_at(obj, &[f.count]);
    if let Some(series) = get(obj, &["series"]) {
        last_seen = since(time_at(series, &["lastObservedTime"]), now);
        count = int_at(series, &["count"]);
    } else if count == 0 {
        // Singleton events of the new API carry no count.
        count = 1;
    }
    let kind = str_at(obj, &[f.involved, "kind"]).to_lowercase();
    let involved_name = str_at(obj, &[f.involved, "name"]);
    let target = if involved_name.is_empty() {
        kind
    } else {
        format!("{kind}/{involved_name}")
    };
    let component = first_non_empty(
        str_at(obj, &[f.source, "component"]),
        str_at(obj, &["reportingController"]),
    );
    let instance = first_non_empty(
        str_at(obj, &[f.source, "host"]),
        str_at(obj, &["reportingInstance"]),
    );
    let source = if instance.is_empty() {
        component.to_string()
    } else {
        format!("{component}, {instance}")
    };
    vec![
        last_seen.into(),
        str_at(obj, &["type"]).into(),
        str_at(obj, &["reason"]).into(),
        target.into(),
        str_at(obj, &[f.involved, "fieldPath"]).into(),
        source.into(),
        str_at(obj, &[f.message]).trim().into(),
        first_seen.into(),
        count.into(),
        name(obj).into(),
    ]
}

/// `GetAccessModesAsString`: fixed order, de-duplicated.
fn access_modes(modes: &[Value]) -> String {
    let has = |m: &str| modes.iter().any(|v| v.as_str() == Some(m));
    [
        ("ReadWriteOnce", "RWO"),
        ("ReadOnlyMany", "ROX"),
        ("ReadWriteMany", "RWX"),
        ("ReadWriteOncePod", "RWOP"),
    ]
    .iter()
    .filter(|(mode, _)| has(mode))
    .map(|(_, short)| *short)
    .collect::<Vec<_>>()
    .join(",")
}

const BETA_STORAGE_CLASS_ANNOTATION: &str = "volume.beta.kubernetes.io/storage-class";

/// The storage class of a PV or PVC: the beta annotation wins over the field.
fn storage_class_of(obj: &Value) -> &str {
    opt_str(
        obj,
        &["metadata", "annotations", BETA_STORAGE_CLASS_ANNOTATION],
    )
    .unwrap_or_else(|| str_at(obj, &["spec", "storageClassName"]))
}

fn persistent_volume(obj: &Value, now: DateTime<Utc>) -> Vec<Value> {
    let claim = match get(obj, &["spec", "claimRef"]) {
        Some(c) => format!("{}/{}", str_at(c, &["namespace"]), str_at(c, &["name"])),
        None => String::new(),
    };
    let phase = if get(obj, &["metadata", "deletionTimestamp"]).is_some() {
        "Terminating"
    } else {
        str_at(obj, &["status", "phase"])
    };
    vec![
        name(obj).into(),
        quantity(get(obj, &["spec", "capacity", "storage"])).into(),
        access_modes(arr_at(obj, &["spec", "accessModes"])).into(),
        str_at(obj, &["spec", "persistentVolumeReclaimPolicy"]).into(),
        phase.into(),
        claim.into(),
        storage_class_of(obj).into(),
        opt_str(obj, &["spec", "volumeAttributesClassName"])
            .unwrap_or("<unset>")
            .into(),
        str_at(obj, &["status", "reason"]).into(),
        age(obj, now),
        opt_str(obj, &["spec", "volumeMode"])
            .unwrap_or("<unset>")
            .into(),
    ]
}

fn persistent_volume_claim(obj: &Value, now: DateTime<Utc>) -> Vec<Value> {
    let phase = if get(obj, &["metadata", "deletionTimestamp"]).is_some() {
        "Terminating"
    } else {
        str_at(obj, &["status", "phase"])
    };
    let volume = str_at(obj, &["spec", "volumeName"]);
    // Capacity and access modes are only shown once the claim is bound to a volume.
    let (capacity, modes) = if volume.is_empty() {
        (String::new(), String::new())
    } else {
        (
            quantity(get(obj, &["status", "capacity", "storage"])),
            access_modes(arr_at(obj, &["status", "accessModes"])),
        )
    };
    vec![
        name(obj).into(),
        phase.into(),
        volume.into(),
        capacity.into(),
        modes.into(),
        storage_class_of(obj).into(),
        opt_str(obj, &["spec", "volumeAttributesClassName"])
            .unwrap_or("<unset>")
            .into(),
        age(obj, now),
        opt_str(obj, &["spec", "volumeMode"])
            .unwrap_or("<unset>")
            .into(),
    ]
}

/// A `*resource.Quantity` as text: "<nil>" when absent, as Go prints a nil pointer.
fn quantity_ptr(v: Option<&Value>) -> String {
    match v {
        None => "<nil>".to_string(),
        some => quantity(some),
    }
}

fn percent(v: Option<&Value>) -> Option<String> {
    v.and_then(Value::as_i64).map(|p| format!("{p}%"))
}

/// One metric target of a v2 HPA, with its current value from the status at the same index.
fn hpa_metric(spec: &Value, status: Option<&Value>) -> String {
    let current_of = |source: &str| status.and_then(|s| get(s, &[source, "current"]));
    let unknown = || "<unknown>".to_string();
    match str_at(spec, &["type"]) {
        ty @ ("External" | "Object") => {
            let source = if ty == "External" {
                "external"
            } else {
                "object"
            };
            let target = get(spec, &[source, "target"]).unwrap_or(&Value::Null);
            let current = current_of(source);
            if let Some(avg) = get(target, &["averageValue"]) {
                let cur = current
                    .and_then(|c| get(c, &["averageValue"]))
                    .map_or_else(unknown, |q| quantity(Some(q)));
                format!("{cur}/{} (avg)", quantity(Some(avg)))
            } else {
                let cur = current.map_or_else(unknown, |c| quantity_ptr(get(c, &["value"])));
                format!("{cur}/{}", quantity_ptr(get(target, &["value"])))
            }
        }
        "Pods" => {
            let cur = current_of("pods")
                .map_or_else(unknown, |c| quantity_ptr(get(c, &["averageValue"])));
            let target = quantity_ptr(get(spec, &["pods", "target", "averageValue"]));
            format!("{cur}/{target}")
        }
        ty @ ("Resource" | "ContainerResource") => {
            let source = if ty == "Resource" {
                "resource"
            } else {
                "containerResource"
            };
            let resource = str_at(spec, &[source, "name"]);
            let target = get(spec, &[source, "target"]).unwrap_or(&Value::Null);
            let current = current_of(source);
            if let Some(avg) = get(target, &["averageValue"]) {
                let cur = current.map_or_else(unknown, |c| quantity_ptr(get(c, &["averageValue"])));
                format!("{resource}: {cur}/{}", quantity(Some(avg)))
            } else {
                let cur = current
                    .and_then(|c| percent(get(c, &["averageUtilization"])))
                    .unwrap_or_else(unknown);
                let target = percent(get(target, &["averageUtilization"]))
                    .unwrap_or_else(|| "<auto>".to_string());
                format!("{resource}: {cur}/{target}")
            }
        }
        _ => "<unknown type>".to_string(),
    }
}

fn hpa_targets(obj: &Value) -> String {
    const MAX: usize = 2;
    let specs = arr_at(obj, &["spec", "metrics"]);
    if specs.is_empty() {
        // autoscaling/v1 carries a single CPU utilization target instead of metrics.
        return match get(obj, &["spec", "targetCPUUtilizationPercentage"]) {
            Some(target) => {
                let cur = percent(get(obj, &["status", "currentCPUUtilizationPercentage"]))
                    .unwrap_or_else(|| "<unknown>".to_string());
                format!("cpu: {cur}/{}", percent(Some(target)).unwrap_or_default())
            }
            None => "<none>".to_string(),
        };
    }
    let statuses = arr_at(obj, &["status", "currentMetrics"]);
    let list: Vec<String> = specs
        .iter()
        .enumerate()
        .map(|(i, spec)| hpa_metric(spec, statuses.get(i)))
        .collect();
    if list.len() > MAX {
        format!("{} + {} more...", list[..MAX].join(", "), list.len() - MAX)
    } else {
        list.join(", ")
    }
}

fn horizontal_pod_autoscaler(obj: &Value, now: DateTime<Utc>) -> Vec<Value> {
    let reference = format!(
        "{}/{}",
        str_at(obj, &["spec", "scaleTargetRef", "kind"]),
        str_at(obj, &["spec", "scaleTargetRef", "name"])
    );
    let min_pods = get(obj, &["spec", "minReplicas"])
        .and_then(Value::as_i64)
        .map_or_else(|| "<unset>".to_string(), |m| m.to_string());
    vec![
        name(obj).into(),
        reference.into(),
        hpa_targets(obj).into(),
        min_pods.into(),
        int_at(obj, &["spec", "maxReplicas"]).into(),
        int_at(obj, &["status", "currentReplicas"]).into(),
        age(obj, now),
    ]
}

fn role_binding(obj: &Value, now: DateTime<Utc>) -> Vec<Value> {
    let mut users = Vec::new();
    let mut groups = Vec::new();
    let mut service_accounts = Vec::new();
    for subject in arr_at(obj, &["subjects"]) {
        let subject_name = str_at(subject, &["name"]);
        match str_at(subject, &["kind"]) {
            "User" => users.push(subject_name.to_string()),
            "Group" => groups.push(subject_name.to_string()),
            "ServiceAccount" => service_accounts.push(format!(
                "{}/{subject_name}",
                str_at(subject, &["namespace"])
            )),
            _ => {}
        }
    }
    vec![
        name(obj).into(),
        format!(
            "{}/{}",
            str_at(obj, &["roleRef", "kind"]),
            str_at(obj, &["roleRef", "name"])
        )
        .into(),
        age(obj, now),
        users.join(", ").into(),
        groups.join(", ").into(),
        service_accounts.join(", ").into(),
    ]
}

fn storage_class(obj: &Value, now: DateTime<Utc>) -> Vec<Value> {
    let is_default = |key: &str| str_at(obj, &["metadata", "annotations", key]) == "true";
    let mut shown = name(obj).to_string();
    if is_default("storageclass.kubernetes.io/is-default-class")
        || is_default("storageclass.beta.kubernetes.io/is-default-class")
    {
        shown.push_str(" (default)");
    }
    vec![
        shown.into(),
        str_at(obj, &["provisioner"]).into(),
        opt_str(obj, &["reclaimPolicy"]).unwrap_or("Delete").into(),
        opt_str(obj, &["volumeBindingMode"])
            .unwrap_or("Immediate")
            .into(),
        bool_at(obj, &["allowVolumeExpansion"]).into(),
        age(obj, now),
    ]
}

fn controller_revision(obj: &Value, now: DateTime<Utc>) -> Vec<Value> {
    let controller = arr_at(obj, &["metadata", "ownerReferences"])
        .iter()
        .find(|r| bool_at(r, &["controller"]))
        .map_or_else(
            || "<none>".to_string(),
            |r| {
                let kind = str_at(r, &["kind"]);
                let group = str_at(r, &["apiVersion"])
                    .rsplit_once('/')
                    .map_or("", |(g, _)| g);
                let owner = str_at(r, &["name"]);
                match (kind.is_empty() && group.is_empty(), group.is_empty()) {
                    (true, _) => owner.to_string(),
                    (false, true) => format!("{}/{owner}", kind.to_lowercase()),
                    (false, false) => format!("{}.{group}/{owner}", kind.to_lowercase()),
                }
            },
        );
    vec![
        name(obj).into(),
        controller.into(),
        int_at(obj, &["revision"]).into(),
        age(obj, now),
    ]
}

fn resource_quota(obj: &Value, now: DateTime<Utc>) -> Vec<Value> {
    let mut requests = Vec::new();
    let mut limits = Vec::new();
    if let Some(Value::Object(hard)) = get(obj, &["status", "hard"]) {
        let mut names: Vec<&String> = hard.keys().collect();
        names.sort();
        for resource in names {
            let used = quantity(get(obj, &["status", "used", resource]));
            let entry = format!("{resource}: {used}/{}", quantity(hard.get(resource)));
            match resource.split_once('.') {
                Some(("limits", _)) => limits.push(entry),
                _ => requests.push(entry),
            }
        }
    }
    vec![
        name(obj).into(),
        requests.join(", ").into(),
        limits.join(", ").into(),
        age(obj, now),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use serde_json::json;

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2024, 1, 10, 0, 0, 0).unwrap()
    }

    fn meta(name: &str) -> Value {
        json!({"name": name, "creationTimestamp": "2024-01-07T21:00:00Z"})
    }

    #[test]
    fn service_cells() {
        let svc = json!({"metadata": meta("web"), "spec": {
            "type": "NodePort", "clusterIP": "10.96.0.10", "clusterIPs": ["10.96.0.10"],
            "ports": [{"port": 80, "nodePort": 30080, "protocol": "TCP"}, {"port": 53, "protocol": "UDP"}],
            "selector": {"app": "web"}}});
        let c = cells(Printer::Service, &svc, now());
        assert_eq!(
            c,
            vec![
                json!("web"),
                json!("NodePort"),
                json!("10.96.0.10"),
                json!("<none>"),
                json!("80:30080/TCP,53/UDP"),
                json!("2d3h"),
                json!("app=web")
            ]
        );

        let pending = json!({"metadata": meta("lb"), "spec": {"type": "LoadBalancer", "clusterIPs": ["10.0.0.1"], "ports": [{"port": 443, "nodePort": 31000}]}});
        let c = cells(Printer::Service, &pending, now());
        assert_eq!(c[3], "<pending>");
        assert_eq!(c[4], "443:31000/TCP");
        assert_eq!(c[6], "<none>");

        let lb = json!({"metadata": meta("lb"), "spec": {"type": "LoadBalancer", "externalIPs": ["1.1.1.1"]},
            "status": {"loadBalancer": {"ingress": [{"ip": "5.5.5.5"}, {"hostname": "a.example"}, {"ip": "5.5.5.5"}]}}});
        assert_eq!(
            cells(Printer::Service, &lb, now())[3],
            "5.5.5.5,a.example,1.1.1.1"
        );

        let headless = json!({"metadata": meta("h"), "spec": {"clusterIP": "None"}});
        let c = cells(Printer::Service, &headless, now());
        assert_eq!(c[1], "ClusterIP");
        assert_eq!(c[2], "None");
        assert_eq!(c[4], "<none>");

        let ext = json!({"metadata": meta("e"), "spec": {"type": "ExternalName", "externalName": "db.example.com"}});
        let c = cells(Printer::Service, &ext, now());
        assert_eq!(c[2], "<none>");
        assert_eq!(c[3], "db.example.com");
    }

    #[test]
    fn deployment_cells() {
        let d = json!({"metadata": meta("web"),
            "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "web"}},
                     "template": {"spec": {"containers": [
                         {"name": "nginx", "image": "nginx:1.25"}, {"name": "side", "image": "busybox"}]}}},
            "status": {"readyReplicas": 2, "updatedReplicas": 3, "availableReplicas": 2}});
        assert_eq!(
            cells(Printer::Deployment, &d, now()),
            vec![
                json!("web"),
                json!("2/3"),
                json!(3),
                json!(2),
                json!("2d3h"),
                json!("nginx,side"),
                json!("nginx:1.25,busybox"),
                json!("app=web")
            ]
        );
        let fresh = json!({"metadata": meta("new"), "spec": {"template": {"spec": {}}}});
        let c = cells(Printer::Deployment, &fresh, now());
        assert_eq!(c[1], "0/1");
        assert_eq!(c[2], 0);
        assert_eq!(c[7], "");
    }

    #[test]
    fn workload_counts() {
        let rs = json!({"metadata": meta("rs"), "spec": {"replicas": 2, "selector": {"matchLabels": {"a": "b"}}},
                        "status": {"replicas": 2, "readyReplicas": 1}});
        let c = cells(Printer::ReplicaSet, &rs, now());
        assert_eq!(&c[..4], &[json!("rs"), json!(2), json!(2), json!(1)]);
        assert_eq!(c[7], "a=b");

        let sts = json!({"metadata": meta("db"), "spec": {"replicas": 3}, "status": {"readyReplicas": 3}});
        assert_eq!(cells(Printer::StatefulSet, &sts, now())[1], "3/3");

        let ds = json!({"metadata": meta("ds"), "spec": {"template": {"spec": {"nodeSelector": {"os": "linux"}}}},
                        "status": {"desiredNumberScheduled": 3, "currentNumberScheduled": 3, "numberReady": 2,
                                   "updatedNumberScheduled": 3, "numberAvailable": 2}});
        let c = cells(Printer::DaemonSet, &ds, now());
        assert_eq!(
            &c[..7],
            &[
                json!("ds"),
                json!(3),
                json!(3),
                json!(2),
                json!(3),
                json!(2),
                json!("os=linux")
            ]
        );
        assert_eq!(c[10], "<none>");

        let rc = json!({"metadata": meta("rc"), "spec": {"replicas": 1, "selector": {"app": "x"}}});
        assert_eq!(
            cells(Printer::ReplicationController, &rc, now())[7],
            "app=x"
        );
    }

    #[test]
    fn job_completions_status_and_duration() {
        let running = json!({"metadata": meta("j"),
            "spec": {"completions": 3, "parallelism": 1, "selector": {"matchLabels": {"job": "j"}}},
            "status": {"succeeded": 1, "startTime": "2024-01-09T23:58:01Z"}});
        let c = cells(Printer::Job, &running, now());
        assert_eq!(&c[1..4], &[json!("Running"), json!("1/3"), json!("119s")]);
        assert_eq!(c[7], "job=j");

        let done = json!({"metadata": meta("j"),
            "spec": {"parallelism": 1},
            "status": {"succeeded": 1, "startTime": "2024-01-09T23:00:00Z",
                       "completionTime": "2024-01-09T23:03:20Z",
                       "conditions": [{"type": "SuccessCriteriaMet", "status": "True"},
                                      {"type": "Complete", "status": "True"}]}});
        let c = cells(Printer::Job, &done, now());
        assert_eq!(&c[1..4], &[json!("Complete"), json!("1/1"), json!("3m20s")]);

        let parallel = json!({"metadata": meta("j"), "spec": {"parallelism": 4},
            "status": {"conditions": [{"type": "Failed", "status": "True"}]}});
        let c = cells(Printer::Job, &parallel, now());
        assert_eq!(&c[1..4], &[json!("Failed"), json!("0/1 of 4"), json!("")]);

        let suspended = json!({"metadata": meta("j"), "spec": {"completions": 1},
            "status": {"conditions": [{"type": "Suspended", "status": "True"}]}});
        assert_eq!(cells(Printer::Job, &suspended, now())[1], "Suspended");

        let mut deleting = suspended.clone();
        deleting["metadata"]["deletionTimestamp"] = json!("2024-01-09T00:00:00Z");
        assert_eq!(cells(Printer::Job, &deleting, now())[1], "Terminating");
    }

    #[test]
    fn cron_job_cells() {
        let cj = json!({"metadata": meta("cj"), "spec": {"schedule": "*/5 * * * *", "suspend": false,
            "jobTemplate": {"spec": {"template": {"spec": {"containers": [{"name": "c", "image": "busybox"}]}}}}},
            "status": {"active": [{"name": "cj-1"}], "lastScheduleTime": "2024-01-09T23:55:00Z"}});
        assert_eq!(
            cells(Printer::CronJob, &cj, now()),
            vec![
                json!("cj"),
                json!("*/5 * * * *"),
                json!("<none>"),
                json!("False"),
                json!(1),
                json!("5m"),
                json!("2d3h"),
                json!("c"),
                json!("busybox"),
                json!("<none>")
            ]
        );
    }

    #[test]
    fn node_status_roles_and_addresses() {
        let n = json!({"metadata": {"name": "n1", "creationTimestamp": "2024-01-09T00:00:00Z",
                "labels": {"node-role.kubernetes.io/control-plane": "", "node-role.kubernetes.io/worker": "",
                           "node-role.kubernetes.io/": "", "kubernetes.io/role": "edge", "other": "x"}},
            "spec": {"unschedulable": true},
            "status": {"conditions": [{"type": "MemoryPressure", "status": "False"},
                                      {"type": "Ready", "status": "True"}],
                       "addresses": [{"type": "InternalIP", "address": "192.168.1.5"},
                                     {"type": "Hostname", "address": "n1"}],
                       "nodeInfo": {"kubeletVersion": "v1.33.0", "osImage": "Debian",
                                    "kernelVersion": "6.1", "containerRuntimeVersion": ""}}});
        assert_eq!(
            cells(Printer::Node, &n, now()),
            vec![
                json!("n1"),
                json!("Ready,SchedulingDisabled"),
                json!("control-plane,edge,worker"),
                json!("24h"),
                json!("v1.33.0"),
                json!("192.168.1.5"),
                json!("<none>"),
                json!("Debian"),
                json!("6.1"),
                json!("<unknown>")
            ]
        );
        let not_ready = json!({"metadata": {"name": "n2"},
            "status": {"conditions": [{"type": "Ready", "status": "Unknown"}]}});
        let c = cells(Printer::Node, &not_ready, now());
        assert_eq!(c[1], "NotReady");
        assert_eq!(c[2], "<none>");
        assert_eq!(c[3], "<unknown>");
        let no_conditions = json!({"metadata": {"name": "n3"}});
        assert_eq!(cells(Printer::Node, &no_conditions, now())[1], "Unknown");
    }

    #[test]
    fn event_cells_for_both_apis() {
        let core = json!({"metadata": {"name": "web.17a"}, "type": "Normal", "reason": "Scheduled",
            "involvedObject": {"kind": "Pod", "name": "web", "fieldPath": "spec.containers{a}"},
            "source": {"component": "kubelet", "host": "n1"},
            "message": " Successfully assigned \n", "count": 3,
            "firstTimestamp": "2024-01-09T23:00:00Z", "lastTimestamp": "2024-01-09T23:59:00Z"});
        assert_eq!(
            cells(Printer::Event, &core, now()),
            vec![
                json!("60s"),
                json!("Normal"),
                json!("Scheduled"),
                json!("pod/web"),
                json!("spec.containers{a}"),
                json!("kubelet, n1"),
                json!("Successfully assigned"),
                json!("60m"),
                json!(3),
                json!("web.17a")
            ]
        );
        let v1 = json!({"metadata": {"name": "e"}, "type": "Warning", "reason": "BackOff",
            "regarding": {"kind": "Node"}, "note": "x", "reportingController": "sched",
            "eventTime": "2024-01-09T23:59:30.000000Z"});
        let c = cells(Printer::EventsV1, &v1, now());
        assert_eq!(c[0], "30s");
        assert_eq!(c[3], "node");
        assert_eq!(c[5], "sched");
        assert_eq!(c[7], "30s");
        assert_eq!(c[8], 1);

        let series = json!({"metadata": {"name": "e"}, "eventTime": "2024-01-09T20:00:00.000000Z",
            "series": {"count": 7, "lastObservedTime": "2024-01-09T23:50:00.000000Z"},
            "regarding": {"kind": "Pod", "name": "p"}});
        let c = cells(Printer::EventsV1, &series, now());
        assert_eq!(c[0], "10m");
        assert_eq!(c[7], "4h");
        assert_eq!(c[8], 7);
    }

    #[test]
    fn endpoints_and_slices() {
        let ep = json!({"metadata": meta("svc"), "subsets": [
            {"addresses": [{"ip": "10.0.0.1"}, {"ip": "10.0.0.2"}], "ports": [{"port": 80}, {"port": 443}]}]});
        assert_eq!(
            cells(Printer::Endpoints, &ep, now())[1],
            "10.0.0.1:80,10.0.0.2:80,10.0.0.1:443 + 1 more..."
        );
        let empty = json!({"metadata": meta("svc")});
        assert_eq!(cells(Printer::Endpoints, &empty, now())[1], "<none>");

        let slice = json!({"metadata": meta("svc-abc"), "addressType": "IPv4",
            "ports": [{"port": 80}, {"name": "dns"}],
            "endpoints": [{"addresses": ["10.0.0.1"]}, {"addresses": ["10.0.0.2"]}]});
        let c = cells(Printer::EndpointSlice, &slice, now());
        assert_eq!(
            &c[1..4],
            &[json!("IPv4"), json!("80,dns"), json!("10.0.0.1,10.0.0.2")]
        );
        let bare = json!({"metadata": meta("s"), "addressType": "IPv4"});
        let c = cells(Printer::EndpointSlice, &bare, now());
        assert_eq!(&c[2..4], &[json!("<unset>"), json!("<unset>")]);
    }

    #[test]
    fn storage_cells() {
        let pv = json!({"metadata": meta("pv1"), "spec": {"capacity": {"storage": "10Gi"},
            "accessModes": ["ReadWriteMany", "ReadWriteOnce", "ReadWriteOnce"],
            "persistentVolumeReclaimPolicy": "Retain", "storageClassName": "fast",
            "claimRef": {"namespace": "default", "name": "data"}}, "status": {"phase": "Bound"}});
        assert_eq!(
            cells(Printer::PersistentVolume, &pv, now()),
            vec![
                json!("pv1"),
                json!("10Gi"),
                json!("RWO,RWX"),
                json!("Retain"),
                json!("Bound"),
                json!("default/data"),
                json!("fast"),
                json!("<unset>"),
                json!(""),
                json!("2d3h"),
                json!("<unset>")
            ]
        );
        let pending = json!({"metadata": meta("data"), "spec": {"storageClassName": "fast",
            "resources": {"requests": {"storage": "1Gi"}}}, "status": {"phase": "Pending"}});
        let c = cells(Printer::PersistentVolumeClaim, &pending, now());
        assert_eq!(
            &c[1..6],
            &[
                json!("Pending"),
                json!(""),
                json!(""),
                json!(""),
                json!("fast")
            ]
        );
        let bound = json!({"metadata": meta("data"), "spec": {"volumeName": "pv1", "volumeMode": "Filesystem"},
            "status": {"phase": "Bound", "capacity": {"storage": "10Gi"}, "accessModes": ["ReadWriteOnce"]}});
        let c = cells(Printer::PersistentVolumeClaim, &bound, now());
        assert_eq!(&c[2..5], &[json!("pv1"), json!("10Gi"), json!("RWO")]);
        assert_eq!(c[8], "Filesystem");

        let sc = json!({"metadata": {"name": "standard", "creationTimestamp": "2024-01-09T00:00:00Z",
            "annotations": {"storageclass.kubernetes.io/is-default-class": "true"}},
            "provisioner": "rancher.io/local-path"});
        assert_eq!(
            cells(Printer::StorageClass, &sc, now()),
            vec![
                json!("standard (default)"),
                json!("rancher.io/local-path"),
                json!("Delete"),
                json!("Immediate"),
                json!(false),
                json!("24h")
            ]
        );
    }

    #[test]
    fn hpa_targets_for_v2_and_v1() {
        let v2 = json!({"metadata": meta("h"), "spec": {"scaleTargetRef": {"kind": "Deployment", "name": "web"},
            "minReplicas": 1, "maxReplicas": 5, "metrics": [
                {"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 80}}},
                {"type": "Resource", "resource": {"name": "memory", "target": {"type": "AverageValue", "averageValue": "100Mi"}}},
                {"type": "Pods", "pods": {"metric": {"name": "qps"}, "target": {"type": "AverageValue", "averageValue": "10"}}}]},
            "status": {"currentReplicas": 2, "currentMetrics": [
                {"type": "Resource", "resource": {"name": "cpu", "current": {"averageUtilization": 35, "averageValue": "100m"}}}]}});
        let c = cells(Printer::HorizontalPodAutoscaler, &v2, now());
        assert_eq!(
            c,
            vec![
                json!("h"),
                json!("Deployment/web"),
                json!("cpu: 35%/80%, memory: <unknown>/100Mi + 1 more..."),
                json!("1"),
                json!(5),
                json!(2),
                json!("2d3h")
            ]
        );
        let v1 = json!({"metadata": meta("h"), "spec": {"scaleTargetRef": {"kind": "Deployment", "name": "web"},
            "maxReplicas": 3, "targetCPUUtilizationPercentage": 50}});
        let c = cells(Printer::HorizontalPodAutoscaler, &v1, now());
        assert_eq!(c[2], "cpu: <unknown>/50%");
        assert_eq!(c[3], "<unset>");
    }

    #[test]
    fn small_printers() {
        let cm = json!({"metadata": meta("cm"), "data": {"a": "1", "b": "2"}, "binaryData": {"c": "AA=="}});
        assert_eq!(cells(Printer::ConfigMap, &cm, now())[1], 3);
        let secret = json!({"metadata": meta("s"), "type": "Opaque", "data": {"k": "dg=="}});
        assert_eq!(
            &cells(Printer::Secret, &secret, now())[1..3],
            &[json!("Opaque"), json!(1)]
        );
        let pdb = json!({"metadata": meta("p"), "spec": {"minAvailable": "50%"}, "status": {"disruptionsAllowed": 1}});
        assert_eq!(
            &cells(Printer::PodDisruptionBudget, &pdb, now())[1..4],
            &[json!("50%"), json!("N/A"), json!(1)]
        );
        let rb = json!({"metadata": meta("rb"), "roleRef": {"kind": "ClusterRole", "name": "view"},
            "subjects": [{"kind": "User", "name": "alice"}, {"kind": "Group", "name": "devs"},
                         {"kind": "ServiceAccount", "name": "sa", "namespace": "ns"}, {"kind": "User", "name": "bob"}]});
        assert_eq!(
            cells(Printer::RoleBinding, &rb, now()),
            vec![
                json!("rb"),
                json!("ClusterRole/view"),
                json!("2d3h"),
                json!("alice, bob"),
                json!("devs"),
                json!("ns/sa")
            ]
        );
        let cr = json!({"metadata": {"name": "web-7d", "ownerReferences": [
            {"apiVersion": "apps/v1", "kind": "StatefulSet", "name": "web", "controller": true}]}, "revision": 2});
        assert_eq!(
            &cells(Printer::ControllerRevision, &cr, now())[1..3],
            &[json!("statefulset.apps/web"), json!(2)]
        );
        let rq = json!({"metadata": meta("q"), "status": {
            "hard": {"pods": "10", "limits.cpu": "2", "requests.cpu": "1"},
            "used": {"pods": "3", "requests.cpu": "500m"}}});
        assert_eq!(
            &cells(Printer::ResourceQuota, &rq, now())[1..3],
            &[
                json!("pods: 3/10, requests.cpu: 500m/1"),
                json!("limits.cpu: 0/2")
            ]
        );
        let ing = json!({"metadata": meta("i"), "spec": {"ingressClassName": "nginx",
            "rules": [{"host": "a.com"}, {}, {"host": "b.com"}, {"host": "c.com"}, {"host": "d.com"}],
            "tls": [{"hosts": ["a.com"]}]}});
        assert_eq!(
            &cells(Printer::Ingress, &ing, now())[1..5],
            &[
                json!("nginx"),
                json!("a.com,b.com,c.com + 2 more..."),
                json!(""),
                json!("80, 443")
            ]
        );
        let ic = json!({"metadata": meta("nginx"), "spec": {"controller": "k8s.io/ingress-nginx",
            "parameters": {"apiGroup": "k8s.example.com", "kind": "IngressParameters", "name": "p"}}});
        assert_eq!(
            cells(Printer::IngressClass, &ic, now())[2],
            "IngressParameters.k8s.example.com/p"
        );
        let np = json!({"metadata": meta("np"), "spec": {"podSelector": {}}});
        assert_eq!(cells(Printer::NetworkPolicy, &np, now())[1], "<none>");
        let pt = json!({"metadata": meta("pt"), "template": {"metadata": {"labels": {"a": "b"}},
            "spec": {"containers": [{"name": "c", "image": "i"}]}}});
        assert_eq!(
            &cells(Printer::PodTemplate, &pt, now())[1..4],
            &[json!("c"), json!("i"), json!("a=b")]
        );
        let role =
            json!({"metadata": {"name": "r", "creationTimestamp": "2024-01-08T21:00:00.5Z"}});
        assert_eq!(
            cells(Printer::Default, &role, now()),
            vec![json!("r"), json!("2024-01-08T21:00:00Z")]
        );
    }
}
