//! Defaulting: the values upstream's `SetDefaults_*` functions (and a few mutating admission
//! plugins that every cluster runs) fill in before an object is validated and stored.
//!
//! Everything works on the JSON object in place and only fills what is absent, so applying the
//! defaults twice changes nothing. Go's zero values count as absent where upstream tests for
//! them (`""` for strings, `0` for non-pointer integers).
//!
//! Pod-only behaviour (admission plugins `ServiceAccount`, `DefaultTolerationSeconds`,
//! `Priority`, and `SetDefaults_Pod`) applies to `Pod` objects, never to pod templates, as
//! upstream does: a Deployment's template does not gain tolerations or requests.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde_json::{Map, Value, json};

use crate::ResourceInfo;
use crate::validation::quantity::parse_quantity;

type Object = Map<String, Value>;

/// The label every namespace carries with its own name (`NamespaceDefaultLabelName`).
pub const NAMESPACE_NAME_LABEL: &str = "kubernetes.io/metadata.name";
/// Labels the Job controller puts on its pods and selects them by.
pub const JOB_CONTROLLER_UID_LABEL: &str = "batch.kubernetes.io/controller-uid";
pub const JOB_NAME_LABEL: &str = "batch.kubernetes.io/job-name";
pub const LEGACY_JOB_CONTROLLER_UID_LABEL: &str = "controller-uid";
pub const LEGACY_JOB_NAME_LABEL: &str = "job-name";
/// Where the service account token volume is mounted in every container.
pub const SERVICE_ACCOUNT_MOUNT_PATH: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

/// Apply upstream's defaults for `resource` to `obj` (a full object of that resource).
pub fn apply(resource: &ResourceInfo, obj: &mut Value) {
    let Some(root) = obj.as_object_mut() else {
        return;
    };
    match (resource.group, resource.kind) {
        ("", "Pod") => pod(root),
        ("", "PodTemplate") => {
            if let Some(t) = obj_at(root, &["template"]) {
                pod_template(t);
            }
        }
        ("", "ReplicationController") => replication_controller(root),
        ("", "Service") => service(root),
        ("", "Secret") => secret(root),
        ("", "Namespace") => namespace(root),
        ("", "Node") => node(root),
        ("", "PersistentVolume") => persistent_volume(root),
        ("", "PersistentVolumeClaim") => persistent_volume_claim(root),
        ("", "Endpoints") => {
            for subset in array_objs(root, "subsets") {
                for port in array_objs(subset, "ports") {
                    set_str(port, "protocol", "TCP");
                }
            }
        }
        ("", "LimitRange") => {
            if let Some(spec) = obj_at(root, &["spec"]) {
                for item in array_objs(spec, "limits") {
                    limit_range_item(item);
                }
            }
        }
        ("apps", "Deployment") => deployment(root),
        ("apps", "ReplicaSet") => {
            if let Some(spec) = obj_at(root, &["spec"]) {
                set_val(spec, "replicas", json!(1));
                template_in(spec);
            }
        }
        ("apps", "StatefulSet") => stateful_set(root),
        ("apps", "DaemonSet") => daemon_set(root),
        ("batch", "Job") => job(root),
        ("batch", "CronJob") => cron_job(root),
        ("autoscaling", "HorizontalPodAutoscaler") => hpa(root, resource.version),
        ("discovery.k8s.io", "EndpointSlice") => {
            for port in array_objs(root, "ports") {
                set_val(port, "name", json!(""));
                set_str(port, "protocol", "TCP");
            }
        }
        ("networking.k8s.io", "NetworkPolicy") => network_policy(root),
        ("storage.k8s.io", "StorageClass") => {
            set_str(root, "reclaimPolicy", "Delete");
            set_str(root, "volumeBindingMode", "Immediate");
        }
        ("scheduling.k8s.io", "PriorityClass") => {
            set_str(root, "preemptionPolicy", "PreemptLowerPriority");
        }
        ("rbac.authorization.k8s.io", "RoleBinding" | "ClusterRoleBinding") => {
            for subject in array_objs(root, "subjects") {
                rbac_subject(subject);
            }
        }
        _ => {}
    }
}

/// Update-time defaults: fields the API server allocated that a client may omit when it
/// replaces an object (`kubectl replace`), carried over from the stored object `old`.
/// Upstream does this in the Service REST storage (`patchAllocatedValues`).
pub fn apply_update(resource: &ResourceInfo, new: &mut Value, old: &Value) {
    if resource.group.is_empty() && resource.kind == "Service" {
        service_keep_allocated(new, old);
    }
}

/// The Job controller's selector and pod labels, generated from the Job's `metadata.uid`
/// (upstream `generateSelector`); call once the uid is set. Jobs with `manualSelector: true`
/// keep the selector they were given.
pub fn job_selector(obj: &mut Value) {
    let Some(root) = obj.as_object_mut() else {
        return;
    };
    let uid = str_at(root, &["metadata", "uid"])
        .unwrap_or_default()
        .to_string();
    let name = str_at(root, &["metadata", "name"])
        .unwrap_or_default()
        .to_string();
    if uid.is_empty() {
        return;
    }
    let manual = root
        .get("spec")
        .and_then(|s| s.get("manualSelector"))
        .and_then(Value::as_bool)
        .unwrap_or(false);
    if manual {
        return;
    }
    let spec = child(root, "spec");
    let template = child(spec, "template");
    let template_meta = child(template, "metadata");
    let labels = child(template_meta, "labels");
    for (key, value) in [
        (JOB_CONTROLLER_UID_LABEL, &uid),
        (LEGACY_JOB_CONTROLLER_UID_LABEL, &uid),
        (JOB_NAME_LABEL, &name),
        (LEGACY_JOB_NAME_LABEL, &name),
    ] {
        labels
            .entry(key)
            .or_insert_with(|| Value::String(value.clone()));
    }
    let template_labels = labels.clone();
    let selector = child(spec, "selector");
    let match_labels = child(selector, "matchLabels");
    match_labels
        .entry(JOB_CONTROLLER_UID_LABEL)
        .or_insert_with(|| Value::String(uid.clone()));
    // SetDefaults_Job copies template labels to the Job when it has none; upstream sees the
    // generated labels there because defaults run again when the object is read back.
    let meta = child(root, "metadata");
    if meta
        .get("labels")
        .and_then(Value::as_object)
        .is_none_or(Map::is_empty)
    {
        meta.insert("labels".into(), Value::Object(template_labels));
    }
}

/// Set a Pod's `priority` and `preemptionPolicy` from its PriorityClass (admission plugin
/// `Priority`), for the API server that looked the class up. Leaves values the pod has.
pub fn set_pod_priority(obj: &mut Value, value: i32, preemption_policy: &str) {
    if let Some(spec) = obj.get_mut("spec").and_then(Value::as_object_mut) {
        set_val(spec, "priority", json!(value));
        set_str(spec, "preemptionPolicy", preemption_policy);
    }
}

/// Value of the built-in priority classes, which exist in every cluster.
pub fn system_priority_class(name: &str) -> Option<i32> {
    match name {
        "system-node-critical" => Some(2_000_001_000),
        "system-cluster-critical" => Some(2_000_000_000),
        _ => None,
    }
}

/// Mount the service account token (admission plugin `ServiceAccount`): a projected volume
/// `kube-api-access-<suffix>` with the token, the cluster CA (`kube-root-ca.crt`) and the
/// namespace, mounted read-only in every container. Nothing is done when the pod opts out
/// (`automountServiceAccountToken: false`) or already mounts that path.
pub fn mount_service_account_token(obj: &mut Value, suffix: &str) {
    let Some(spec) = obj.get_mut("spec").and_then(Value::as_object_mut) else {
        return;
    };
    if spec.get("automountServiceAccountToken") == Some(&Value::Bool(false)) {
        return;
    }
    let volume_name = format!("kube-api-access-{suffix}");
    let volume = json!({
        "name": volume_name,
        "projected": {
            "defaultMode": 420,
            "sources": [
                {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
                {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
                {"downwardAPI": {"items": [{"path": "namespace", "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}}]}}
            ]
        }
    });
    let mut mounted = false;
    for key in ["initContainers", "containers"] {
        for container in array_objs(spec, key) {
            let mounts = container
                .entry("volumeMounts")
                .or_insert_with(|| Value::Array(Vec::new()));
            let Some(mounts) = mounts.as_array_mut() else {
                continue;
            };
            let taken = mounts.iter().any(|m| {
                m.get("mountPath").and_then(Value::as_str) == Some(SERVICE_ACCOUNT_MOUNT_PATH)
            });
            if !taken {
                mounts.push(json!({
                    "name": volume_name,
                    "readOnly": true,
                    "mountPath": SERVICE_ACCOUNT_MOUNT_PATH
                }));
                mounted = true;
            }
        }
    }
    if mounted {
        let volumes = spec
            .entry("volumes")
            .or_insert_with(|| Value::Array(Vec::new()));
        if let Some(volumes) = volumes.as_array_mut() {
            volumes.push(volume);
        }
    }
}

/// The pod's quality of service class (`Guaranteed`, `Burstable` or `BestEffort`), as
/// upstream's `GetPodQOS` computes it from the containers' cpu and memory resources.
pub fn pod_qos_class(spec: &Value) -> &'static str {
    let mut any_set = false;
    let mut guaranteed = true;
    let containers = ["containers", "initContainers"]
        .iter()
        .filter_map(|k| spec.get(*k).and_then(Value::as_array))
        .flatten();
    for container in containers {
        let resources = container.get("resources");
        let list = |key: &str| -> Vec<(String, String)> {
            resources
                .and_then(|r| r.get(key))
                .and_then(Value::as_object)
                .map(|m| {
                    m.iter()
                        .filter(|(k, _)| k.as_str() == "cpu" || k.as_str() == "memory")
                        .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                        .collect()
                })
                .unwrap_or_default()
        };
        let reqs = list("requests");
        let limits = list("limits");
        let nonzero = |q: &String| parse_quantity(q).map(|q| !q.is_zero()).unwrap_or(false);
        if reqs.iter().any(|(_, q)| nonzero(q)) || limits.iter().any(|(_, q)| nonzero(q)) {
            any_set = true;
        }
        for resource in ["cpu", "memory"] {
            let limit = limits.iter().find(|(k, _)| k == resource);
            let request = reqs.iter().find(|(k, _)| k == resource).or(limit);
            match (limit, request) {
                (Some((_, l)), Some((_, r))) => {
                    let equal = match (parse_quantity(l), parse_quantity(r)) {
                        (Ok(l), Ok(r)) => l == r,
                        _ => false,
                    };
                    if !equal {
                        guaranteed = false;
                    }
                }
                _ => guaranteed = false,
            }
        }
    }
    if !any_set {
        "BestEffort"
    } else if guaranteed {
        "Guaranteed"
    } else {
        "Burstable"
    }
}

// ---------------------------------------------------------------------------------------------
// Pods and templates

fn pod(root: &mut Object) {
    let Some(spec) = obj_at(root, &["spec"]) else {
        return;
    };
    pod_spec(spec, true);

    // Admission plugin ServiceAccount.
    let account = spec
        .get("serviceAccountName")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .unwrap_or("default")
        .to_string();
    spec.insert("serviceAccountName".into(), Value::String(account.clone()));
    spec.insert("serviceAccount".into(), Value::String(account));

    // Admission plugin Priority: pods without a class get the global default, 0. A named
    // class is resolved by the API server (`set_pod_priority`); the system classes are known.
    let class = spec
        .get("priorityClassName")
        .and_then(Value::as_str)
        .unwrap_or("");
    if class.is_empty() {
        set_val(spec, "priority", json!(0));
        set_str(spec, "preemptionPolicy", "PreemptLowerPriority");
    } else if let Some(value) = system_priority_class(class) {
        set_val(spec, "priority", json!(value));
        set_str(spec, "preemptionPolicy", "PreemptLowerPriority");
    }

    // Admission plugin DefaultTolerationSeconds.
    let tolerations = spec
        .entry("tolerations")
        .or_insert_with(|| Value::Array(Vec::new()));
    if let Some(list) = tolerations.as_array_mut() {
        for taint in [
            "node.kubernetes.io/not-ready",
            "node.kubernetes.io/unreachable",
        ] {
            let tolerated = list.iter().any(|t| {
                let key = t.get("key").and_then(Value::as_str).unwrap_or("");
                let effect = t.get("effect").and_then(Value::as_str).unwrap_or("");
                let operator = t.get("operator").and_then(Value::as_str).unwrap_or("Equal");
                (key == taint || (key.is_empty() && operator == "Exists"))
                    && (effect.is_empty() || effect == "NoExecute")
            });
            if !tolerated {
                list.push(json!({
                    "key": taint,
                    "operator": "Exists",
                    "effect": "NoExecute",
                    "tolerationSeconds": 300
                }));
            }
        }
    }

    // The pod strategy's PrepareForCreate: a new pod is Pending with its QoS class.
    let qos = pod_qos_class(root.get("spec").unwrap_or(&Value::Null));
    let status = child(root, "status");
    set_str(status, "phase", "Pending");
    set_str(status, "qosClass", qos);
}

fn template_in(spec: &mut Object) {
    if let Some(template) = obj_at(spec, &["template"]) {
        pod_template(template);
    }
}

fn pod_template(template: &mut Object) {
    if let Some(spec) = obj_at(template, &["spec"]) {
        pod_spec(spec, false);
    }
}

/// `SetDefaults_PodSpec` and everything below it; `is_pod` adds `SetDefaults_Pod`.
fn pod_spec(spec: &mut Object, is_pod: bool) {
    set_str(spec, "dnsPolicy", "ClusterFirst");
    set_str(spec, "restartPolicy", "Always");
    set_val(spec, "securityContext", json!({}));
    set_val(spec, "terminationGracePeriodSeconds", json!(30));
    set_str(spec, "schedulerName", "default-scheduler");
    if is_pod {
        set_val(spec, "enableServiceLinks", json!(true));
    }
    // v1 conversion keeps the deprecated alias in step with serviceAccountName.
    let account = spec
        .get("serviceAccountName")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .or_else(|| spec.get("serviceAccount").and_then(Value::as_str))
        .filter(|s| !s.is_empty())
        .map(str::to_string);
    if let Some(account) = account {
        spec.insert("serviceAccountName".into(), Value::String(account.clone()));
        spec.insert("serviceAccount".into(), Value::String(account));
    }
    let host_network = spec.get("hostNetwork") == Some(&Value::Bool(true));
    for key in ["initContainers", "containers", "ephemeralContainers"] {
        for c in array_objs(spec, key) {
            container(c, is_pod && host_network);
            if is_pod && key != "ephemeralContainers" {
                requests_from_limits(c);
            }
        }
    }
    for v in array_objs(spec, "volumes") {
        volume(v);
    }
}

fn container(c: &mut Object, host_network: bool) {
    set_str(c, "terminationMessagePath", "/dev/termination-log");
    set_str(c, "terminationMessagePolicy", "File");
    if is_absent(c.get("imagePullPolicy")) {
        let image = c.get("image").and_then(Value::as_str).unwrap_or("");
        let policy = if image_tag(image) == Some("latest") {
            "Always"
        } else {
            "IfNotPresent"
        };
        c.insert("imagePullPolicy".into(), json!(policy));
    }
    for port in array_objs(c, "ports") {
        set_str(port, "protocol", "TCP");
        if host_network
            && port.get("hostPort").and_then(Value::as_i64).unwrap_or(0) == 0
            && let Some(p) = port.get("containerPort").cloned()
        {
            port.insert("hostPort".into(), p);
        }
    }
    for env in array_objs(c, "env") {
        if let Some(field_ref) = obj_at(env, &["valueFrom", "fieldRef"]) {
            set_str(field_ref, "apiVersion", "v1");
        }
    }
    for probe_key in ["livenessProbe", "readinessProbe", "startupProbe"] {
        if let Some(p) = obj_at(c, &[probe_key]) {
            probe(p);
        }
    }
    for hook in ["postStart", "preStop"] {
        if let Some(http) = obj_at(c, &["lifecycle", hook, "httpGet"]) {
            http_get(http);
        }
    }
}

fn probe(p: &mut Object) {
    set_nonzero(p, "timeoutSeconds", 1);
    set_nonzero(p, "periodSeconds", 10);
    set_nonzero(p, "successThreshold", 1);
    set_nonzero(p, "failureThreshold", 3);
    if let Some(http) = obj_at(p, &["httpGet"]) {
        http_get(http);
    }
    if let Some(grpc) = obj_at(p, &["grpc"]) {
        set_val(grpc, "service", json!(""));
    }
}

fn http_get(http: &mut Object) {
    set_str(http, "path", "/");
    set_str(http, "scheme", "HTTP");
}

/// The tag of an image reference; `latest` when it has neither tag nor digest, as upstream's
/// `parsers.ParseImageName` reports it.
fn image_tag(image: &str) -> Option<&str> {
    if image.is_empty() {
        return None;
    }
    let (name, digest) = match image.split_once('@') {
        Some((n, d)) => (n, Some(d)),
        None => (image, None),
    };
    let last = name.rsplit('/').next().unwrap_or(name);
    match last.rsplit_once(':') {
        Some((_, tag)) => Some(tag),
        None if digest.is_some() => None,
        None => Some("latest"),
    }
}

/// `SetDefaults_Pod`: requests default to limits, resource by resource.
fn requests_from_limits(c: &mut Object) {
    let Some(resources) = obj_at(c, &["resources"]) else {
        return;
    };
    let Some(limits) = resources.get("limits").and_then(Value::as_object).cloned() else {
        return;
    };
    if limits.is_empty() {
        return;
    }
    let requests = child(resources, "requests");
    for (name, quantity) in limits {
        requests.entry(name).or_insert(quantity);
    }
}

const VOLUME_SOURCES: &[&str] = &[
    "hostPath",
    "emptyDir",
    "gcePersistentDisk",
    "awsElasticBlockStore",
    "gitRepo",
    "secret",
    "nfs",
    "iscsi",
    "glusterfs",
    "persistentVolumeClaim",
    "rbd",
    "flexVolume",
    "cinder",
    "cephfs",
    "flocker",
    "downwardAPI",
    "fc",
    "azureFile",
    "configMap",
    "vsphereVolume",
    "quobyte",
    "azureDisk",
    "photonPersistentDisk",
    "projected",
    "portworxVolume",
    "scaleIO",
    "storageos",
    "csi",
    "ephemeral",
    "image",
];

fn volume(v: &mut Object) {
    if !VOLUME_SOURCES.iter().any(|s| v.contains_key(*s)) {
        v.insert("emptyDir".into(), json!({}));
    }
    if let Some(s) = obj_at(v, &["secret"]) {
        set_val(s, "defaultMode", json!(420));
    }
    if let Some(s) = obj_at(v, &["configMap"]) {
        set_val(s, "defaultMode", json!(420));
    }
    if let Some(s) = obj_at(v, &["downwardAPI"]) {
        set_val(s, "defaultMode", json!(420));
        downward_api_items(s);
    }
    if let Some(s) = obj_at(v, &["projected"]) {
        set_val(s, "defaultMode", json!(420));
        for source in array_objs(s, "sources") {
            if let Some(token) = obj_at(source, &["serviceAccountToken"]) {
                set_val(token, "expirationSeconds", json!(3600));
            }
            if let Some(d) = obj_at(source, &["downwardAPI"]) {
                downward_api_items(d);
            }
        }
    }
    if let Some(s) = obj_at(v, &["hostPath"]) {
        set_val(s, "type", json!(""));
    }
    if let Some(s) = obj_at(v, &["iscsi"]) {
        set_str(s, "iscsiInterface", "default");
    }
    if let Some(s) = obj_at(v, &["rbd"]) {
        set_str(s, "pool", "rbd");
        set_str(s, "user", "admin");
        set_str(s, "keyring", "/etc/ceph/keyring");
    }
    if let Some(spec) = obj_at(v, &["ephemeral", "volumeClaimTemplate", "spec"]) {
        set_str(spec, "volumeMode", "Filesystem");
    }
}

fn downward_api_items(source: &mut Object) {
    for item in array_objs(source, "items") {
        if let Some(field_ref) = obj_at(item, &["fieldRef"]) {
            set_str(field_ref, "apiVersion", "v1");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Workloads

fn replication_controller(root: &mut Object) {
    let template_labels = root
        .get("spec")
        .and_then(|s| s.get("template"))
        .and_then(|t| t.get("metadata"))
        .and_then(|m| m.get("labels"))
        .filter(|l| l.is_object())
        .cloned();
    if let Some(labels) = template_labels {
        let spec = child(root, "spec");
        if is_empty_map(spec.get("selector")) {
            spec.insert("selector".into(), labels.clone());
        }
        let meta = child(root, "metadata");
        if is_empty_map(meta.get("labels")) {
            meta.insert("labels".into(), labels);
        }
    }
    if let Some(spec) = obj_at(root, &["spec"]) {
        set_val(spec, "replicas", json!(1));
        template_in(spec);
    }
}

fn deployment(root: &mut Object) {
    let Some(spec) = obj_at(root, &["spec"]) else {
        return;
    };
    set_val(spec, "replicas", json!(1));
    let strategy = child(spec, "strategy");
    set_str(strategy, "type", "RollingUpdate");
    if strategy.get("type").and_then(Value::as_str) == Some("RollingUpdate") {
        let rolling = child(strategy, "rollingUpdate");
        set_val(rolling, "maxUnavailable", json!("25%"));
        set_val(rolling, "maxSurge", json!("25%"));
    }
    set_val(spec, "revisionHistoryLimit", json!(10));
    set_val(spec, "progressDeadlineSeconds", json!(600));
    template_in(spec);
}

fn stateful_set(root: &mut Object) {
    let Some(spec) = obj_at(root, &["spec"]) else {
        return;
    };
    set_str(spec, "podManagementPolicy", "OrderedReady");
    let strategy = child(spec, "updateStrategy");
    if is_absent(strategy.get("type")) {
        strategy.insert("type".into(), json!("RollingUpdate"));
        child(strategy, "rollingUpdate");
    }
    if strategy.get("type").and_then(Value::as_str) == Some("RollingUpdate")
        && let Some(rolling) = obj_at(strategy, &["rollingUpdate"])
    {
        set_val(rolling, "partition", json!(0));
    }
    let retention = child(spec, "persistentVolumeClaimRetentionPolicy");
    set_str(retention, "whenDeleted", "Retain");
    set_str(retention, "whenScaled", "Retain");
    set_val(spec, "replicas", json!(1));
    set_val(spec, "revisionHistoryLimit", json!(10));
    for claim in array_objs(spec, "volumeClaimTemplates") {
        persistent_volume_claim(claim);
    }
    template_in(spec);
}

fn daemon_set(root: &mut Object) {
    let Some(spec) = obj_at(root, &["spec"]) else {
        return;
    };
    let strategy = child(spec, "updateStrategy");
    set_str(strategy, "type", "RollingUpdate");
    if strategy.get("type").and_then(Value::as_str) == Some("RollingUpdate") {
        let rolling = child(strategy, "rollingUpdate");
        set_val(rolling, "maxUnavailable", json!(1));
        set_val(rolling, "maxSurge", json!(0));
    }
    set_val(spec, "revisionHistoryLimit", json!(10));
    template_in(spec);
}

fn job(root: &mut Object) {
    let template_labels = root
        .get("spec")
        .and_then(|s| s.get("template"))
        .and_then(|t| t.get("metadata"))
        .and_then(|m| m.get("labels"))
        .filter(|l| !is_empty_map(Some(l)))
        .cloned();
    if let Some(labels) = template_labels {
        let meta = child(root, "metadata");
        if is_empty_map(meta.get("labels")) {
            meta.insert("labels".into(), labels);
        }
    }
    let Some(spec) = obj_at(root, &["spec"]) else {
        return;
    };
    job_spec(spec);
}

/// `SetDefaults_Job` on the spec (used for Jobs only, not CronJob job templates).
fn job_spec(spec: &mut Object) {
    if is_absent(spec.get("completions")) && is_absent(spec.get("parallelism")) {
        spec.insert("completions".into(), json!(1));
        spec.insert("parallelism".into(), json!(1));
    }
    set_val(spec, "parallelism", json!(1));
    if is_absent(spec.get("backoffLimit")) {
        let limit = if is_absent(spec.get("backoffLimitPerIndex")) {
            6
        } else {
            i32::MAX
        };
        spec.insert("backoffLimit".into(), json!(limit));
    }
    set_str(spec, "completionMode", "NonIndexed");
    set_val(spec, "suspend", json!(false));
    let has_failure_policy = !is_absent(spec.get("podFailurePolicy"));
    if let Some(policy) = obj_at(spec, &["podFailurePolicy"]) {
        for rule in array_objs(policy, "rules") {
            for pattern in array_objs(rule, "onPodConditions") {
                set_str(pattern, "status", "True");
            }
        }
    }
    let replacement = if has_failure_policy {
        "Failed"
    } else {
        "TerminatingOrFailed"
    };
    set_str(spec, "podReplacementPolicy", replacement);
    template_in(spec);
}

fn cron_job(root: &mut Object) {
    let Some(spec) = obj_at(root, &["spec"]) else {
        return;
    };
    set_str(spec, "concurrencyPolicy", "Allow");
    set_val(spec, "suspend", json!(false));
    set_val(spec, "successfulJobsHistoryLimit", json!(3));
    set_val(spec, "failedJobsHistoryLimit", json!(1));
    if let Some(job_spec) = obj_at(spec, &["jobTemplate", "spec"]) {
        template_in(job_spec);
    }
}

fn hpa(root: &mut Object, version: &str) {
    let Some(spec) = obj_at(root, &["spec"]) else {
        return;
    };
    set_val(spec, "minReplicas", json!(1));
    if version == "v1" {
        return;
    }
    if spec
        .get("metrics")
        .and_then(Value::as_array)
        .is_none_or(Vec::is_empty)
    {
        spec.insert(
            "metrics".into(),
            json!([{
                "type": "Resource",
                "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 80}}
            }]),
        );
    }
    // Behavior is only completed when the user gave one.
    if let Some(behavior) = obj_at(spec, &["behavior"]) {
        let up = child(behavior, "scaleUp");
        set_val(up, "stabilizationWindowSeconds", json!(0));
        set_str(up, "selectPolicy", "Max");
        set_val(
            up,
            "policies",
            json!([
                {"type": "Pods", "value": 4, "periodSeconds": 15},
                {"type": "Percent", "value": 100, "periodSeconds": 15}
            ]),
        );
        let down = child(behavior, "scaleDown");
        // stabilizationWindowSeconds stays unset: the controller's flag decides (300s).
        set_str(down, "selectPolicy", "Max");
        set_val(
            down,
            "policies",
            json!([{"type": "Percent", "value": 100, "periodSeconds": 15}]),
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Core and cluster objects

fn service(root: &mut Object) {
    let has_selector = !is_empty_map(root.get("spec").and_then(|s| s.get("selector")));
    let Some(spec) = obj_at(root, &["spec"]) else {
        return;
    };
    set_str(spec, "sessionAffinity", "None");
    match spec.get("sessionAffinity").and_then(Value::as_str) {
        Some("None") => {
            spec.remove("sessionAffinityConfig");
        }
        Some("ClientIP") => {
            let config = child(spec, "sessionAffinityConfig");
            let client_ip = child(config, "clientIP");
            set_val(client_ip, "timeoutSeconds", json!(10800));
        }
        _ => {}
    }
    set_str(spec, "type", "ClusterIP");
    // The strategy keeps clusterIP and clusterIPs[0] in step (normalizeClusterIPs).
    let cluster_ip = spec
        .get("clusterIP")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let first = spec
        .get("clusterIPs")
        .and_then(Value::as_array)
        .and_then(|a| a.first())
        .and_then(Value::as_str)
        .map(str::to_string);
    match first {
        None if !cluster_ip.is_empty() => {
            spec.insert("clusterIPs".into(), json!([cluster_ip]));
        }
        Some(ip) if cluster_ip.is_empty() => {
            spec.insert("clusterIP".into(), json!(ip));
        }
        _ => {}
    }
    for port in array_objs(spec, "ports") {
        set_str(port, "protocol", "TCP");
        let target = port.get("targetPort");
        let unset = match target {
            None | Some(Value::Null) => true,
            Some(Value::Number(n)) => n.as_i64() == Some(0),
            Some(Value::String(s)) => s.is_empty(),
            _ => false,
        };
        if unset && let Some(p) = port.get("port").cloned() {
            port.insert("targetPort".into(), p);
        }
    }
    let kind = spec
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or("ClusterIP")
        .to_string();
    if kind == "NodePort" || kind == "LoadBalancer" {
        set_str(spec, "externalTrafficPolicy", "Cluster");
    }
    if kind != "ExternalName" {
        set_str(spec, "internalTrafficPolicy", "Cluster");
        // The registry's IP family initialisation, for a single-stack IPv4 cluster.
        let headless = spec.get("clusterIP").and_then(Value::as_str) == Some("None");
        let policy = if headless && !has_selector {
            "RequireDualStack"
        } else {
            "SingleStack"
        };
        set_str(spec, "ipFamilyPolicy", policy);
        if spec
            .get("ipFamilies")
            .and_then(Value::as_array)
            .is_none_or(Vec::is_empty)
        {
            spec.insert("ipFamilies".into(), json!(["IPv4"]));
        }
    }
    if kind == "LoadBalancer" {
        set_val(spec, "allocateLoadBalancerNodePorts", json!(true));
    }
}

fn service_keep_allocated(new: &mut Value, old: &Value) {
    let Some(old_spec) = old.get("spec") else {
        return;
    };
    let Some(spec) = new.get_mut("spec").and_then(Value::as_object_mut) else {
        return;
    };
    let new_type = spec
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or("ClusterIP")
        .to_string();
    if new_type == "ExternalName" {
        return;
    }
    if is_absent(spec.get("clusterIP")) && spec.get("clusterIPs").is_none() {
        for key in ["clusterIP", "clusterIPs"] {
            if let Some(v) = old_spec.get(key) {
                spec.insert(key.into(), v.clone());
            }
        }
    }
    if new_type == "NodePort" || new_type == "LoadBalancer" {
        let old_ports: Vec<&Value> = old_spec
            .get("ports")
            .and_then(Value::as_array)
            .map(|a| a.iter().collect())
            .unwrap_or_default();
        for port in array_objs(spec, "ports") {
            if port.get("nodePort").and_then(Value::as_i64).unwrap_or(0) != 0 {
                continue;
            }
            let same = old_ports.iter().find(|o| {
                o.get("port") == port.get("port")
                    && o.get("protocol").and_then(Value::as_str).unwrap_or("TCP")
                        == port
                            .get("protocol")
                            .and_then(Value::as_str)
                            .unwrap_or("TCP")
            });
            if let Some(node_port) = same.and_then(|o| o.get("nodePort")) {
                port.insert("nodePort".into(), node_port.clone());
            }
        }
        if spec.get("healthCheckNodePort").is_none()
            && let Some(v) = old_spec.get("healthCheckNodePort")
        {
            spec.insert("healthCheckNodePort".into(), v.clone());
        }
    }
}

/// v1 conversion merges `stringData` into `data` (base64), overwriting; it is never stored.
fn secret(root: &mut Object) {
    set_str(root, "type", "Opaque");
    let Some(Value::Object(strings)) = root.remove("stringData") else {
        return;
    };
    let data = child(root, "data");
    for (k, v) in strings {
        let text = v.as_str().unwrap_or_default();
        data.insert(k, Value::String(BASE64.encode(text.as_bytes())));
    }
}

fn namespace(root: &mut Object) {
    let name = str_at(root, &["metadata", "name"]).map(str::to_string);
    let deleting = root
        .get("metadata")
        .and_then(|m| m.get("deletionTimestamp"))
        .is_some();
    if let Some(name) = name.filter(|n| !n.is_empty()) {
        let labels = child(child(root, "metadata"), "labels");
        labels.insert(NAMESPACE_NAME_LABEL.into(), Value::String(name));
    }
    // The namespace strategy adds the `kubernetes` finalizer on create; once a namespace is
    // being deleted, the finalize step removes it and it must not come back.
    if !deleting {
        let spec = child(root, "spec");
        if spec.get("finalizers").is_none() {
            spec.insert("finalizers".into(), json!(["kubernetes"]));
        }
    }
    set_str(child(root, "status"), "phase", "Active");
}

fn node(root: &mut Object) {
    let Some(status) = obj_at(root, &["status"]) else {
        return;
    };
    if is_absent(status.get("allocatable"))
        && let Some(capacity) = status.get("capacity").cloned()
    {
        status.insert("allocatable".into(), capacity);
    }
}

fn persistent_volume(root: &mut Object) {
    if let Some(spec) = obj_at(root, &["spec"]) {
        set_str(spec, "persistentVolumeReclaimPolicy", "Retain");
        set_str(spec, "volumeMode", "Filesystem");
        if let Some(host_path) = obj_at(spec, &["hostPath"]) {
            set_val(host_path, "type", json!(""));
        }
    }
    set_str(child(root, "status"), "phase", "Pending");
}

fn persistent_volume_claim(root: &mut Object) {
    if let Some(spec) = obj_at(root, &["spec"]) {
        set_str(spec, "volumeMode", "Filesystem");
    }
    set_str(child(root, "status"), "phase", "Pending");
}

fn limit_range_item(item: &mut Object) {
    if item.get("type").and_then(Value::as_str) != Some("Container") {
        return;
    }
    let map = |key: &str, item: &Object| -> Object {
        item.get(key)
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default()
    };
    let mut default = map("default", item);
    let mut default_request = map("defaultRequest", item);
    for (k, v) in map("max", item) {
        default.entry(k).or_insert(v);
    }
    for (k, v) in default.clone() {
        default_request.entry(k).or_insert(v);
    }
    for (k, v) in map("min", item) {
        default_request.entry(k).or_insert(v);
    }
    if !default.is_empty() {
        item.insert("default".into(), Value::Object(default));
    }
    if !default_request.is_empty() {
        item.insert("defaultRequest".into(), Value::Object(default_request));
    }
}

fn network_policy(root: &mut Object) {
    let Some(spec) = obj_at(root, &["spec"]) else {
        return;
    };
    for direction in ["ingress", "egress"] {
        for rule in array_objs(spec, direction) {
            for port in array_objs(rule, "ports") {
                set_str(port, "protocol", "TCP");
            }
        }
    }
    if spec
        .get("policyTypes")
        .and_then(Value::as_array)
        .is_none_or(Vec::is_empty)
    {
        let has_egress = spec
            .get("egress")
            .and_then(Value::as_array)
            .is_some_and(|e| !e.is_empty());
        let types = if has_egress {
            json!(["Ingress", "Egress"])
        } else {
            json!(["Ingress"])
        };
        spec.insert("policyTypes".into(), types);
    }
}

fn rbac_subject(subject: &mut Object) {
    if !is_absent(subject.get("apiGroup")) {
        return;
    }
    match subject.get("kind").and_then(Value::as_str) {
        Some("ServiceAccount") => {
            subject.insert("apiGroup".into(), json!(""));
        }
        Some("User" | "Group") => {
            subject.insert("apiGroup".into(), json!("rbac.authorization.k8s.io"));
        }
        _ => {}
    }
}

// ---------------------------------------------------------------------------------------------
// JSON helpers

fn is_absent(v: Option<&Value>) -> bool {
    matches!(v, None | Some(Value::Null)) || v.and_then(Value::as_str) == Some("")
}

fn is_empty_map(v: Option<&Value>) -> bool {
    v.and_then(Value::as_object).is_none_or(Map::is_empty)
}

/// Set a string field when absent or empty.
fn set_str(map: &mut Object, key: &str, value: &str) {
    if is_absent(map.get(key)) {
        map.insert(key.into(), Value::String(value.into()));
    }
}

/// Set a field when absent or null (a Go pointer that is nil).
fn set_val(map: &mut Object, key: &str, value: Value) {
    if matches!(map.get(key), None | Some(Value::Null)) {
        map.insert(key.into(), value);
    }
}

/// Set an integer field when absent or zero (a Go non-pointer integer).
fn set_nonzero(map: &mut Object, key: &str, value: i64) {
    if map.get(key).and_then(Value::as_i64).unwrap_or(0) == 0 {
        map.insert(key.into(), json!(value));
    }
}

/// The object under `key`, created empty when absent or not an object.
fn child<'a>(map: &'a mut Object, key: &str) -> &'a mut Object {
    let slot = map.entry(key).or_insert_with(|| Value::Object(Map::new()));
    if !slot.is_object() {
        *slot = Value::Object(Map::new());
    }
    slot.as_object_mut().expect("just made an object")
}

/// The existing object at a path, if every step is an object.
fn obj_at<'a>(map: &'a mut Object, path: &[&str]) -> Option<&'a mut Object> {
    let (first, rest) = path.split_first()?;
    let next = map.get_mut(*first)?.as_object_mut()?;
    if rest.is_empty() {
        Some(next)
    } else {
        obj_at(next, rest)
    }
}

fn str_at<'a>(map: &'a Object, path: &[&str]) -> Option<&'a str> {
    let (first, rest) = path.split_first()?;
    let next = map.get(*first)?;
    if rest.is_empty() {
        next.as_str()
    } else {
        str_at(next.as_object()?, rest)
    }
}

/// The objects of the array under `key` (none when absent).
fn array_objs<'a>(map: &'a mut Object, key: &str) -> impl Iterator<Item = &'a mut Object> {
    map.get_mut(key)
        .and_then(Value::as_array_mut)
        .into_iter()
        .flatten()
        .filter_map(Value::as_object_mut)
}

#[cfg(test)]
mod tests;
