use serde_json::{Value, json};

use super::*;
use crate::defaults;
use crate::resources::by_kind;

fn prepared(api_version: &str, kind: &str, mut obj: Value) -> (&'static ResourceInfo, Value) {
    let resource = by_kind(api_version, kind).expect("known kind");
    defaults::apply(resource, &mut obj);
    (resource, obj)
}

fn create_errors(api_version: &str, kind: &str, obj: Value) -> Vec<String> {
    let (resource, obj) = prepared(api_version, kind, obj);
    validate_create(resource, &obj)
        .iter()
        .map(ToString::to_string)
        .collect()
}

fn meta(name: &str) -> Value {
    json!({"name": name, "namespace": "default"})
}

fn pod_with(spec: Value) -> Value {
    json!({"metadata": meta("p"), "spec": spec})
}

fn template(labels: Value, restart: &str) -> Value {
    json!({"metadata": {"labels": labels}, "spec": {"restartPolicy": restart, "containers": [{"name": "c", "image": "busybox"}]}})
}

#[test]
fn valid_objects_have_no_errors() {
    let ok = template(json!({"app": "web"}), "Always");
    let cases: Vec<(&str, &str, Value)> = vec![
        (
            "v1",
            "Pod",
            pod_with(json!({"containers": [{"name": "web", "image": "nginx:1.27",
            "ports": [{"name": "http", "containerPort": 80}],
            "env": [{"name": "MODE", "value": "x"}],
            "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}, "limits": {"cpu": "1", "memory": "128Mi"}},
            "volumeMounts": [{"name": "data", "mountPath": "/data"}],
            "livenessProbe": {"httpGet": {"port": "http"}}}],
            "volumes": [{"name": "data", "emptyDir": {}}]})),
        ),
        (
            "apps/v1",
            "Deployment",
            json!({"metadata": meta("web"), "spec": {"selector": {"matchLabels": {"app": "web"}}, "template": ok}}),
        ),
        (
            "apps/v1",
            "ReplicaSet",
            json!({"metadata": meta("web"), "spec": {"selector": {"matchExpressions": [{"key": "app", "operator": "In", "values": ["web"]}]}, "template": ok}}),
        ),
        (
            "apps/v1",
            "StatefulSet",
            json!({"metadata": meta("db"), "spec": {"serviceName": "db", "selector": {"matchLabels": {"app": "web"}}, "template": ok}}),
        ),
        (
            "apps/v1",
            "DaemonSet",
            json!({"metadata": meta("agent"), "spec": {"selector": {"matchLabels": {"app": "web"}}, "template": ok}}),
        ),
        (
            "batch/v1",
            "CronJob",
            json!({"metadata": meta("tick"), "spec": {"schedule": "@hourly", "jobTemplate": {"spec": {"template": template(json!({}), "OnFailure")}}}}),
        ),
        (
            "v1",
            "Service",
            json!({"metadata": meta("web"), "spec": {"selector": {"app": "web"}, "ports": [{"name": "http", "port": 80, "targetPort": "http"}, {"name": "https", "port": 443}]}}),
        ),
        (
            "v1",
            "Service",
            json!({"metadata": meta("db"), "spec": {"clusterIP": "None", "selector": {"app": "db"}}}),
        ),
        (
            "v1",
            "Service",
            json!({"metadata": meta("ext"), "spec": {"type": "ExternalName", "externalName": "example.com."}}),
        ),
        (
            "v1",
            "ConfigMap",
            json!({"metadata": meta("cfg"), "data": {"app.properties": "a=b"}}),
        ),
        (
            "v1",
            "Secret",
            json!({"metadata": meta("tls"), "type": "kubernetes.io/tls", "data": {"tls.crt": "YQ==", "tls.key": "YQ=="}}),
        ),
        ("v1", "Namespace", json!({"metadata": {"name": "team-a"}})),
        (
            "v1",
            "PersistentVolumeClaim",
            json!({"metadata": meta("data"), "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}}),
        ),
        (
            "v1",
            "PersistentVolume",
            json!({"metadata": {"name": "pv1"}, "spec": {"capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"], "hostPath": {"path": "/tmp/pv1"}}}),
        ),
        (
            "v1",
            "Event",
            json!({"metadata": meta("web.1"), "involvedObject": {"kind": "Pod", "name": "web", "namespace": "default"}, "reason": "Started"}),
        ),
        (
            "coordination.k8s.io/v1",
            "Lease",
            json!({"metadata": meta("node-1"), "spec": {"holderIdentity": "node-1", "leaseDurationSeconds": 40}}),
        ),
        (
            "rbac.authorization.k8s.io/v1",
            "ClusterRole",
            json!({"metadata": {"name": "system:reader"}, "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]}, {"nonResourceURLs": ["/healthz"], "verbs": ["get"]}]}),
        ),
        (
            "rbac.authorization.k8s.io/v1",
            "RoleBinding",
            json!({"metadata": meta("rb"), "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "r"}, "subjects": [{"kind": "ServiceAccount", "name": "default"}, {"kind": "User", "name": "alice"}]}),
        ),
        (
            "storage.k8s.io/v1",
            "StorageClass",
            json!({"metadata": {"name": "local"}, "provisioner": "rancher.io/local-path"}),
        ),
        (
            "scheduling.k8s.io/v1",
            "PriorityClass",
            json!({"metadata": {"name": "high"}, "value": 1000}),
        ),
        (
            "scheduling.k8s.io/v1",
            "PriorityClass",
            json!({"metadata": {"name": "system-node-critical"}, "value": 2_000_001_000}),
        ),
        (
            "policy/v1",
            "PodDisruptionBudget",
            json!({"metadata": meta("pdb"), "spec": {"minAvailable": "50%", "selector": {"matchLabels": {"app": "web"}}}}),
        ),
        (
            "autoscaling/v2",
            "HorizontalPodAutoscaler",
            json!({"metadata": meta("web"), "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"}, "maxReplicas": 3}}),
        ),
        (
            "autoscaling/v1",
            "HorizontalPodAutoscaler",
            json!({"metadata": meta("web"), "spec": {"scaleTargetRef": {"kind": "Deployment", "name": "web"}, "maxReplicas": 3, "targetCPUUtilizationPercentage": 50}}),
        ),
        (
            "networking.k8s.io/v1",
            "Ingress",
            json!({"metadata": meta("web"), "spec": {"rules": [{"host": "*.example.com", "http": {"paths": [{"path": "/", "pathType": "Prefix", "backend": {"service": {"name": "web", "port": {"number": 80}}}}]}}]}}),
        ),
        (
            "networking.k8s.io/v1",
            "NetworkPolicy",
            json!({"metadata": meta("deny"), "spec": {"podSelector": {}, "ingress": [{"from": [{"ipBlock": {"cidr": "10.0.0.0/8"}}], "ports": [{"port": 80}]}]}}),
        ),
        (
            "discovery.k8s.io/v1",
            "EndpointSlice",
            json!({"metadata": meta("web-abc"), "addressType": "IPv4", "endpoints": [{"addresses": ["10.42.0.5"]}], "ports": [{"name": "http", "port": 80}]}),
        ),
    ];
    for (api_version, kind, obj) in cases {
        let errs = create_errors(api_version, kind, obj.clone());
        assert!(errs.is_empty(), "{kind} {obj}: {errs:#?}");
    }
}

#[test]
fn create_errors_match_upstream() {
    let ok = template(json!({"app": "web"}), "Always");
    // (apiVersion, kind, object, an expected error, exactly as rendered)
    let cases: Vec<(&str, &str, Value, &str)> = vec![
        (
            "v1",
            "ConfigMap",
            json!({"metadata": {"namespace": "default"}}),
            "metadata.name: Required value: name or generateName is required",
        ),
        (
            "v1",
            "ConfigMap",
            json!({"metadata": {"name": "Bad_Name", "namespace": "default"}}),
            "metadata.name: Invalid value: \"Bad_Name\": a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')",
        ),
        (
            "v1",
            "ConfigMap",
            json!({"metadata": {"generateName": "Web-", "namespace": "default"}}),
            "metadata.generateName: Invalid value: \"Web-\": a lowercase RFC 1123 subdomain",
        ),
        (
            "v1",
            "ConfigMap",
            json!({"metadata": {"name": "a"}}),
            "metadata.namespace: Required value",
        ),
        (
            "v1",
            "Namespace",
            json!({"metadata": {"name": "a", "namespace": "x"}}),
            "metadata.namespace: Forbidden: not allowed on this type",
        ),
        (
            "v1",
            "Namespace",
            json!({"metadata": {"name": "a.b"}}),
            "metadata.name: Invalid value: \"a.b\": must not contain dots",
        ),
        (
            "v1",
            "Service",
            json!({"metadata": meta("1web"), "spec": {"ports": [{"port": 80}]}}),
            "metadata.name: Invalid value: \"1web\": a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic character, and end with an alphanumeric character (e.g. 'my-name',  or 'abc-123', regex used for validation is '[a-z]([-a-z0-9]*[a-z0-9])?')",
        ),
        (
            "rbac.authorization.k8s.io/v1",
            "ClusterRole",
            json!({"metadata": {"name": "a/b"}}),
            "metadata.name: Invalid value: \"a/b\": may not contain '/'",
        ),
        (
            "v1",
            "ConfigMap",
            json!({"metadata": {"name": "a", "namespace": "default", "labels": {"bad key": "v"}}}),
            "metadata.labels: Invalid value: \"bad key\": name part must consist of alphanumeric characters",
        ),
        (
            "v1",
            "ConfigMap",
            json!({"metadata": {"name": "a", "namespace": "default", "labels": {"k": "bad value"}}}),
            "metadata.labels: Invalid value: \"bad value\": a valid label must be an empty string or consist of alphanumeric characters",
        ),
        (
            "v1",
            "ConfigMap",
            json!({"metadata": {"name": "a", "namespace": "default", "annotations": {"big": "x".repeat(300_000)}}}),
            "metadata.annotations: Too long: may not be more than 262144 bytes",
        ),
        (
            "v1",
            "ConfigMap",
            json!({"metadata": {"name": "a", "namespace": "default", "finalizers": ["custom"]}}),
            "metadata.finalizers[0]: Invalid value: \"custom\": name is neither a standard finalizer name nor is it fully qualified",
        ),
        (
            "v1",
            "Pod",
            pod_with(json!({"containers": []})),
            "spec.containers: Required value",
        ),
        (
            "v1",
            "Pod",
            pod_with(json!({"containers": [{"name": "c"}]})),
            "spec.containers[0].image: Required value",
        ),
        (
            "v1",
            "Pod",
            pod_with(
                json!({"containers": [{"name": "c", "image": "a"}, {"name": "c", "image": "b"}]}),
            ),
            "spec.containers[1].name: Duplicate value: \"c\"",
        ),
        (
            "v1",
            "Pod",
            pod_with(json!({"containers": [{"name": "C", "image": "a"}]})),
            "spec.containers[0].name: Invalid value: \"C\": a lowercase RFC 1123 label",
        ),
        (
            "v1",
            "Pod",
            pod_with(
                json!({"containers": [{"name": "c", "image": "a", "ports": [{"containerPort": 70000}]}]}),
            ),
            "spec.containers[0].ports[0].containerPort: Invalid value: 70000: must be between 1 and 65535, inclusive",
        ),
        (
            "v1",
            "Pod",
            pod_with(
                json!({"containers": [{"name": "c", "image": "a", "ports": [{"containerPort": 80, "protocol": "HTTP"}]}]}),
            ),
            "spec.containers[0].ports[0].protocol: Unsupported value: \"HTTP\": supported values: \"SCTP\", \"TCP\", \"UDP\"",
        ),
        (
            "v1",
            "Pod",
            pod_with(
                json!({"restartPolicy": "Sometimes", "containers": [{"name": "c", "image": "a"}]}),
            ),
            "spec.restartPolicy: Unsupported value: \"Sometimes\": supported values: \"Always\", \"OnFailure\", \"Never\"",
        ),
        (
            "v1",
            "Pod",
            pod_with(
                json!({"containers": [{"name": "c", "image": "a", "env": [{"name": "A=B"}]}]}),
            ),
            "spec.containers[0].env[0].name: Invalid value: \"A=B\": a valid environment variable name must consist only of printable ASCII characters other than '='",
        ),
        (
            "v1",
            "Pod",
            pod_with(
                json!({"containers": [{"name": "c", "image": "a", "volumeMounts": [{"name": "missing", "mountPath": "/m"}]}]}),
            ),
            "spec.containers[0].volumeMounts[0].name: Not found: \"missing\"",
        ),
        (
            "v1",
            "Pod",
            pod_with(
                json!({"containers": [{"name": "c", "image": "a"}], "volumes": [{"name": "v"}, {"name": "v"}]}),
            ),
            "spec.volumes[1].name: Duplicate value: \"v\"",
        ),
        (
            "v1",
            "Pod",
            pod_with(
                json!({"containers": [{"name": "c", "image": "a", "resources": {"requests": {"cpu": "2"}, "limits": {"cpu": "1"}}}]}),
            ),
            "spec.containers[0].resources.requests: Invalid value: \"2\": must be less than or equal to cpu limit of 1",
        ),
        (
            "v1",
            "Pod",
            pod_with(
                json!({"containers": [{"name": "c", "image": "a", "resources": {"limits": {"memory": "lots"}}}]}),
            ),
            "spec.containers[0].resources.limits[memory]: Invalid value: \"lots\": quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'",
        ),
        (
            "v1",
            "Pod",
            pod_with(
                json!({"containers": [{"name": "c", "image": "a", "resources": {"limits": {"gpu": "1"}}}]}),
            ),
            "spec.containers[0].resources.limits[gpu]: Invalid value: \"gpu\": must be a standard resource for containers",
        ),
        (
            "v1",
            "Pod",
            pod_with(
                json!({"containers": [{"name": "c", "image": "a", "livenessProbe": {"exec": {"command": ["true"]}, "successThreshold": 2}}]}),
            ),
            "spec.containers[0].livenessProbe.successThreshold: Invalid value: 2: must be 1",
        ),
        (
            "v1",
            "Pod",
            pod_with(
                json!({"containers": [{"name": "c", "image": "a"}], "tolerations": [{"key": "k", "operator": "Exists", "value": "v"}]}),
            ),
            "spec.tolerations[0].operator: Invalid value:",
        ),
        (
            "apps/v1",
            "Deployment",
            json!({"metadata": meta("web"), "spec": {"template": ok}}),
            "spec.selector: Required value",
        ),
        (
            "apps/v1",
            "Deployment",
            json!({"metadata": meta("web"), "spec": {"selector": {"matchLabels": {"app": "other"}}, "template": ok}}),
            "spec.template.metadata.labels: Invalid value: {\"app\":\"web\"}: `selector` does not match template `labels`",
        ),
        (
            "apps/v1",
            "Deployment",
            json!({"metadata": meta("web"), "spec": {"selector": {}, "template": ok}}),
            "spec.selector: Invalid value: {}: empty selector is invalid for deployment",
        ),
        (
            "apps/v1",
            "Deployment",
            json!({"metadata": meta("web"), "spec": {"replicas": -1, "selector": {"matchLabels": {"app": "web"}}, "template": ok}}),
            "spec.replicas: Invalid value: -1: must be greater than or equal to 0",
        ),
        (
            "apps/v1",
            "Deployment",
            json!({"metadata": meta("web"), "spec": {"selector": {"matchLabels": {"app": "web"}}, "template": ok, "strategy": {"rollingUpdate": {"maxSurge": 0, "maxUnavailable": 0}}}}),
            "spec.strategy.rollingUpdate.maxUnavailable: Invalid value: 0: may not be 0 when `maxSurge` is 0",
        ),
        (
            "apps/v1",
            "Deployment",
            json!({"metadata": meta("web"), "spec": {"selector": {"matchLabels": {"app": "web"}}, "template": ok, "strategy": {"type": "Recreate", "rollingUpdate": {}}}}),
            "spec.strategy.rollingUpdate: Forbidden: may not be specified when strategy `type` is 'Recreate'",
        ),
        (
            "apps/v1",
            "Deployment",
            json!({"metadata": meta("web"), "spec": {"selector": {"matchLabels": {"app": "web"}}, "template": ok, "strategy": {"rollingUpdate": {"maxUnavailable": "150%"}}}}),
            "spec.strategy.rollingUpdate.maxUnavailable: Invalid value: \"150%\": must not be greater than 100%",
        ),
        (
            "apps/v1",
            "Deployment",
            json!({"metadata": meta("web"), "spec": {"selector": {"matchLabels": {"app": "web"}}, "template": template(json!({"app": "web"}), "Never")}}),
            "spec.template.spec.restartPolicy: Unsupported value: \"Never\": supported values: \"Always\"",
        ),
        (
            "apps/v1",
            "DaemonSet",
            json!({"metadata": meta("d"), "spec": {"selector": {"matchLabels": {"app": "web"}}, "template": ok, "updateStrategy": {"type": "Sometimes"}}}),
            "spec.updateStrategy: Unsupported value:",
        ),
        (
            "apps/v1",
            "StatefulSet",
            json!({"metadata": meta("s"), "spec": {"selector": {"matchLabels": {"app": "web"}}, "template": ok, "podManagementPolicy": "Random"}}),
            "spec.podManagementPolicy: Invalid value: \"Random\": must be 'OrderedReady' or 'Parallel'",
        ),
        (
            "batch/v1",
            "Job",
            json!({"metadata": {"name": "pi", "namespace": "default", "uid": "u"}, "spec": {"template": template(json!({}), "Always")}}),
            "spec.template.spec.restartPolicy: Required value: valid values: \"OnFailure\", \"Never\"",
        ),
        (
            "batch/v1",
            "Job",
            json!({"metadata": {"name": "pi", "namespace": "default", "uid": "u"}, "spec": {"template": template(json!({}), "Never")}}),
            "spec.selector: Required value",
        ),
        (
            "batch/v1",
            "Job",
            json!({"metadata": {"name": "pi", "namespace": "default"}, "spec": {"parallelism": -1, "template": template(json!({}), "Never")}}),
            "spec.parallelism: Invalid value: -1: must be greater than or equal to 0",
        ),
        (
            "batch/v1",
            "CronJob",
            json!({"metadata": meta("c"), "spec": {"schedule": "61 * * * *", "jobTemplate": {"spec": {"template": template(json!({}), "Never")}}}}),
            "spec.schedule: Invalid value: \"61 * * * *\": end of range (61) above maximum (59): 61",
        ),
        (
            "batch/v1",
            "CronJob",
            json!({"metadata": meta("c"), "spec": {"schedule": "CRON_TZ=UTC * * * * *", "jobTemplate": {"spec": {"template": template(json!({}), "Never")}}}}),
            "spec.schedule: Invalid value: \"CRON_TZ=UTC * * * * *\": cannot use TZ or CRON_TZ in schedule, use timeZone field instead",
        ),
        (
            "batch/v1",
            "CronJob",
            json!({"metadata": meta(&"c".repeat(53)), "spec": {"schedule": "@daily", "jobTemplate": {"spec": {"template": template(json!({}), "Never")}}}}),
            "must be no more than 52 characters",
        ),
        (
            "batch/v1",
            "CronJob",
            json!({"metadata": meta("c"), "spec": {"schedule": "@daily", "jobTemplate": {"spec": {"template": template(json!({}), "Always")}}}}),
            "spec.jobTemplate.spec.template.spec.restartPolicy: Required value: valid values: \"OnFailure\", \"Never\"",
        ),
        (
            "v1",
            "Service",
            json!({"metadata": meta("web"), "spec": {}}),
            "spec.ports: Required value",
        ),
        (
            "v1",
            "Service",
            json!({"metadata": meta("web"), "spec": {"ports": [{"port": 0}]}}),
            "spec.ports[0].port: Invalid value: 0: must be between 1 and 65535, inclusive",
        ),
        (
            "v1",
            "Service",
            json!({"metadata": meta("web"), "spec": {"ports": [{"port": 80}, {"port": 81}]}}),
            "spec.ports[0].name: Required value",
        ),
        (
            "v1",
            "Service",
            json!({"metadata": meta("web"), "spec": {"type": "Magic", "ports": [{"port": 80}]}}),
            "spec.type: Unsupported value: \"Magic\": supported values: \"ClusterIP\", \"ExternalName\", \"LoadBalancer\", \"NodePort\"",
        ),
        (
            "v1",
            "Service",
            json!({"metadata": meta("web"), "spec": {"type": "ExternalName"}}),
            "spec.externalName: Required value",
        ),
        (
            "v1",
            "Service",
            json!({"metadata": meta("web"), "spec": {"ports": [{"port": 80, "nodePort": 30000}]}}),
            "spec.ports[0].nodePort: Forbidden: may not be used when `type` is 'ClusterIP'",
        ),
        (
            "v1",
            "Service",
            json!({"metadata": meta("web"), "spec": {"clusterIP": "10.0.0.300", "ports": [{"port": 80}]}}),
            "spec.clusterIPs[0]: Invalid value: \"10.0.0.300\": must be a valid IP address",
        ),
        (
            "v1",
            "ConfigMap",
            json!({"metadata": meta("c"), "data": {"bad key": "v"}}),
            "data[bad key]: Invalid value: \"bad key\": a valid config key must consist of alphanumeric characters, '-', '_' or '.' (e.g. 'key.name',  or 'KEY_NAME',  or 'key-name', regex used for validation is '[-._a-zA-Z0-9]+')",
        ),
        (
            "v1",
            "ConfigMap",
            json!({"metadata": meta("c"), "data": {"a": "x".repeat(1024 * 1024 + 1)}}),
            ": Too long: may not be more than 1048576 bytes",
        ),
        (
            "v1",
            "Secret",
            json!({"metadata": meta("s"), "type": "kubernetes.io/tls", "data": {"tls.crt": "YQ=="}}),
            "data[tls.key]: Required value",
        ),
        (
            "v1",
            "Secret",
            json!({"metadata": meta("s"), "type": "kubernetes.io/dockerconfigjson", "data": {}}),
            "data[.dockerconfigjson]: Required value",
        ),
        (
            "v1",
            "PersistentVolumeClaim",
            json!({"metadata": meta("d"), "spec": {}}),
            "spec.accessModes: Required value: at least 1 access mode is required",
        ),
        (
            "v1",
            "PersistentVolumeClaim",
            json!({"metadata": meta("d"), "spec": {"accessModes": ["ReadWriteOnce"]}}),
            "spec.resources[storage]: Required value",
        ),
        (
            "v1",
            "PersistentVolumeClaim",
            json!({"metadata": meta("d"), "spec": {"accessModes": ["ReadWriteSome"], "resources": {"requests": {"storage": "1Gi"}}}}),
            "spec.accessModes: Unsupported value: \"ReadWriteSome\"",
        ),
        (
            "v1",
            "PersistentVolume",
            json!({"metadata": {"name": "pv"}, "spec": {"accessModes": ["ReadWriteOnce"], "capacity": {"storage": "1Gi"}}}),
            "spec: Required value: must specify a volume type",
        ),
        (
            "v1",
            "Event",
            json!({"metadata": meta("e"), "involvedObject": {"kind": "Pod", "name": "p", "namespace": "other"}}),
            "involvedObject.namespace: Invalid value: \"other\": does not match event.namespace",
        ),
        (
            "coordination.k8s.io/v1",
            "Lease",
            json!({"metadata": meta("l"), "spec": {"leaseDurationSeconds": 0}}),
            "spec.leaseDurationSeconds: Invalid value: 0: must be greater than 0",
        ),
        (
            "rbac.authorization.k8s.io/v1",
            "Role",
            json!({"metadata": meta("r"), "rules": [{"apiGroups": [""], "resources": ["pods"]}]}),
            "rules[0].verbs: Required value: verbs must contain at least one value",
        ),
        (
            "rbac.authorization.k8s.io/v1",
            "ClusterRoleBinding",
            json!({"metadata": {"name": "b"}, "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "r"}, "subjects": [{"kind": "ServiceAccount", "name": "sa"}]}),
            "roleRef.kind: Unsupported value: \"Role\": supported values: \"ClusterRole\"",
        ),
        (
            "rbac.authorization.k8s.io/v1",
            "ClusterRoleBinding",
            json!({"metadata": {"name": "b"}, "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "r"}, "subjects": [{"kind": "ServiceAccount", "name": "sa"}]}),
            "subjects[0].namespace: Required value",
        ),
        (
            "storage.k8s.io/v1",
            "StorageClass",
            json!({"metadata": {"name": "s"}}),
            "provisioner: Required value",
        ),
        (
            "scheduling.k8s.io/v1",
            "PriorityClass",
            json!({"metadata": {"name": "huge"}, "value": 2_000_000_000}),
            "value: Forbidden: maximum allowed value of a user defined priority is 1000000000",
        ),
        (
            "scheduling.k8s.io/v1",
            "PriorityClass",
            json!({"metadata": {"name": "system-mine"}, "value": 1}),
            "metadata.name: Forbidden: priority class names with 'system-' prefix are reserved for system use only. error: system-mine is not a known system priority class",
        ),
        (
            "policy/v1",
            "PodDisruptionBudget",
            json!({"metadata": meta("p"), "spec": {"minAvailable": 1, "maxUnavailable": 1}}),
            "minAvailable and maxUnavailable cannot be both set",
        ),
        (
            "autoscaling/v2",
            "HorizontalPodAutoscaler",
            json!({"metadata": meta("h"), "spec": {"scaleTargetRef": {"kind": "Deployment", "name": "web"}, "minReplicas": 5, "maxReplicas": 3}}),
            "spec.maxReplicas: Invalid value: 3: must be greater than or equal to `minReplicas`",
        ),
        (
            "networking.k8s.io/v1",
            "Ingress",
            json!({"metadata": meta("i"), "spec": {"rules": [{"http": {"paths": [{"path": "/", "backend": {"service": {"name": "web", "port": {"number": 80}}}}]}}]}}),
            "spec.rules[0].http.paths[0].pathType: Required value: pathType must be specified",
        ),
        (
            "networking.k8s.io/v1",
            "Ingress",
            json!({"metadata": meta("i"), "spec": {}}),
            "spec: Invalid value: null: either `defaultBackend` or `rules` must be specified",
        ),
    ];
    for (api_version, kind, obj, want) in cases {
        let errs = create_errors(api_version, kind, obj);
        assert!(
            errs.iter().any(|e| e.contains(want)),
            "{kind}: want {want:?}, got {errs:#?}"
        );
    }
}

fn update_errors(
    api_version: &str,
    kind: &str,
    old: Value,
    change: impl Fn(&mut Value),
) -> Vec<String> {
    let (resource, old) = prepared(api_version, kind, old);
    let mut new = old.clone();
    change(&mut new);
    defaults::apply(resource, &mut new);
    validate_update(resource, &new, &old)
        .iter()
        .map(ToString::to_string)
        .collect()
}

#[test]
fn update_rules() {
    let stored_meta = json!({"name": "web", "namespace": "default", "uid": "u-1", "creationTimestamp": "2024-01-01T00:00:00Z"});
    let pod = json!({"metadata": stored_meta, "spec": {"containers": [{"name": "c", "image": "nginx:1"}],
        "tolerations": [{"key": "a", "operator": "Exists", "effect": "NoSchedule"}]}});
    let deploy = json!({"metadata": stored_meta, "spec": {"selector": {"matchLabels": {"app": "web"}}, "template": template(json!({"app": "web"}), "Always")}});
    let job = json!({"metadata": stored_meta, "spec": {"selector": {"matchLabels": {"batch.kubernetes.io/controller-uid": "u-1"}},
        "template": template(json!({"batch.kubernetes.io/controller-uid": "u-1"}), "Never")}});
    let svc = json!({"metadata": stored_meta, "spec": {"clusterIP": "10.43.0.10", "ports": [{"port": 80}]}});
    let cm = json!({"metadata": stored_meta, "immutable": true, "data": {"a": "1"}});
    let secret = json!({"metadata": stored_meta, "data": {"a": "MQ=="}});
    let pvc = json!({"metadata": stored_meta, "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}});
    let sc = json!({"metadata": {"name": "s"}, "provisioner": "a.io/b"});
    let binding = json!({"metadata": stored_meta, "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "r"}});
    let pc = json!({"metadata": {"name": "high"}, "value": 10});
    let node = json!({"metadata": {"name": "n1"}, "spec": {"podCIDRs": ["10.42.0.0/24"], "podCIDR": "10.42.0.0/24"}});
    let sts = json!({"metadata": stored_meta, "spec": {"serviceName": "a", "selector": {"matchLabels": {"app": "web"}}, "template": template(json!({"app": "web"}), "Always")}});

    type Change = Box<dyn Fn(&mut Value)>;
    // (apiVersion, kind, stored object, change, expected error prefix; "" = no errors)
    let cases: Vec<(&str, &str, &Value, Change, &str)> = vec![
        (
            "v1",
            "Pod",
            &pod,
            Box::new(|p| p["spec"]["containers"][0]["image"] = json!("nginx:2")),
            "",
        ),
        (
            "v1",
            "Pod",
            &pod,
            Box::new(|p| p["spec"]["activeDeadlineSeconds"] = json!(60)),
            "",
        ),
        (
            "v1",
            "Pod",
            &pod,
            Box::new(|p| {
                p["spec"]["tolerations"]
                    .as_array_mut()
                    .unwrap()
                    .push(json!({"key": "k", "operator": "Exists"}))
            }),
            "",
        ),
        (
            "v1",
            "Pod",
            &pod,
            Box::new(|p| p["metadata"]["labels"] = json!({"a": "b"})),
            "",
        ),
        (
            "v1",
            "Pod",
            &pod,
            Box::new(|p| p["spec"]["containers"][0]["ports"] = json!([{"containerPort": 80}])),
            "spec: Forbidden: pod updates may not change fields other than `spec.containers[*].image`,`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` (only additions to existing tolerations),`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was previously negative)",
        ),
        (
            "v1",
            "Pod",
            &pod,
            Box::new(|p| {
                p["spec"]["tolerations"]
                    .as_array_mut()
                    .unwrap()
                    .retain(|t| t["key"] != "a")
            }),
            "spec.tolerations: Forbidden: existing toleration can not be modified except its tolerationSeconds",
        ),
        (
            "v1",
            "Pod",
            &pod,
            Box::new(|p| p["metadata"]["name"] = json!("other")),
            "metadata.name: Invalid value: \"other\": field is immutable",
        ),
        (
            "v1",
            "Pod",
            &pod,
            Box::new(|p| p["metadata"]["uid"] = json!("u-2")),
            "metadata.uid: Invalid value: \"u-2\": field is immutable",
        ),
        (
            "apps/v1",
            "Deployment",
            &deploy,
            Box::new(|d| d["spec"]["replicas"] = json!(3)),
            "",
        ),
        (
            "apps/v1",
            "Deployment",
            &deploy,
            Box::new(|d| {
                d["spec"]["selector"] = json!({"matchLabels": {"app": "web", "v": "2"}});
                d["spec"]["template"]["metadata"]["labels"]["v"] = json!("2");
            }),
            "spec.selector: Invalid value: {\"matchLabels\":{\"app\":\"web\",\"v\":\"2\"}}: field is immutable",
        ),
        (
            "apps/v1",
            "StatefulSet",
            &sts,
            Box::new(|s| s["spec"]["serviceName"] = json!("b")),
            "spec: Forbidden: updates to statefulset spec for fields other than 'replicas', 'ordinals', 'template', 'updateStrategy', 'revisionHistoryLimit', 'persistentVolumeClaimRetentionPolicy' and 'minReadySeconds' are forbidden",
        ),
        (
            "apps/v1",
            "StatefulSet",
            &sts,
            Box::new(|s| s["spec"]["replicas"] = json!(3)),
            "",
        ),
        (
            "batch/v1",
            "Job",
            &job,
            Box::new(|j| j["spec"]["template"]["spec"]["containers"][0]["image"] = json!("other")),
            "spec.template: Invalid value:",
        ),
        (
            "batch/v1",
            "Job",
            &job,
            Box::new(|j| j["spec"]["suspend"] = json!(true)),
            "",
        ),
        (
            "batch/v1",
            "Job",
            &job,
            Box::new(|j| j["spec"]["completions"] = json!(3)),
            "spec.completions: Invalid value: 3: field is immutable",
        ),
        (
            "v1",
            "Service",
            &svc,
            Box::new(|s| {
                s["spec"]["clusterIP"] = json!("None");
                s["spec"]["clusterIPs"] = json!(["None"]);
            }),
            "spec.clusterIPs[0]: Invalid value: [\"None\"]: may not change once set",
        ),
        (
            "v1",
            "Service",
            &svc,
            Box::new(|s| s["spec"]["ports"][0]["port"] = json!(81)),
            "",
        ),
        (
            "v1",
            "ConfigMap",
            &cm,
            Box::new(|c| c["data"]["a"] = json!("2")),
            "data: Forbidden: field is immutable when `immutable` is set",
        ),
        (
            "v1",
            "ConfigMap",
            &cm,
            Box::new(|c| c["immutable"] = json!(false)),
            "immutable: Forbidden: field is immutable when `immutable` is set",
        ),
        (
            "v1",
            "Secret",
            &secret,
            Box::new(|s| s["type"] = json!("kubernetes.io/basic-auth")),
            "type: Invalid value: \"kubernetes.io/basic-auth\": field is immutable",
        ),
        (
            "v1",
            "Secret",
            &secret,
            Box::new(|s| s["data"]["a"] = json!("Mg==")),
            "",
        ),
        (
            "v1",
            "PersistentVolumeClaim",
            &pvc,
            Box::new(|c| c["spec"]["accessModes"] = json!(["ReadWriteMany"])),
            "spec: Forbidden: spec is immutable after creation except resources.requests and volumeAttributesClassName for bound claims",
        ),
        (
            "v1",
            "PersistentVolumeClaim",
            &pvc,
            Box::new(|c| c["spec"]["volumeName"] = json!("pv-1")),
            "",
        ),
        (
            "v1",
            "PersistentVolumeClaim",
            &pvc,
            Box::new(|c| {
                c["status"]["phase"] = json!("Bound");
                c["spec"]["resources"]["requests"]["storage"] = json!("2Gi");
            }),
            "",
        ),
        (
            "storage.k8s.io/v1",
            "StorageClass",
            &sc,
            Box::new(|s| s["parameters"] = json!({"a": "b"})),
            "parameters: Forbidden: updates to parameters are forbidden.",
        ),
        (
            "rbac.authorization.k8s.io/v1",
            "RoleBinding",
            &binding,
            Box::new(|b| b["roleRef"]["name"] = json!("other")),
            "roleRef: Invalid value: {\"apiGroup\":\"rbac.authorization.k8s.io\",\"kind\":\"Role\",\"name\":\"other\"}: cannot change roleRef",
        ),
        (
            "scheduling.k8s.io/v1",
            "PriorityClass",
            &pc,
            Box::new(|p| p["value"] = json!(11)),
            "value: Forbidden: may not be changed in an update.",
        ),
        (
            "v1",
            "Node",
            &node,
            Box::new(|n| n["spec"]["podCIDRs"] = json!(["10.42.1.0/24"])),
            "spec.podCIDRs: Forbidden: node updates may not change podCIDR except from \"\" to valid",
        ),
        (
            "v1",
            "Node",
            &node,
            Box::new(|n| n["spec"]["unschedulable"] = json!(true)),
            "",
        ),
    ];
    for (api_version, kind, old, change, want) in cases {
        let errs = update_errors(api_version, kind, old.clone(), change);
        if want.is_empty() {
            assert!(errs.is_empty(), "{kind}: want no errors, got {errs:#?}");
        } else {
            assert!(
                errs.iter().any(|e| e.starts_with(want)),
                "{kind}: want {want:?}, got {errs:#?}"
            );
        }
    }
}

#[test]
fn cron_job_keeps_tz_it_already_had() {
    let resource = by_kind("batch/v1", "CronJob").unwrap();
    let mut old = json!({"metadata": meta("c"), "spec": {"schedule": "TZ=UTC 0 * * * *",
        "jobTemplate": {"spec": {"template": template(json!({}), "Never")}}}});
    defaults::apply(resource, &mut old);
    let mut new = old.clone();
    new["spec"]["suspend"] = json!(true);
    assert!(validate_update(resource, &new, &old).is_empty());
    new["spec"]["timeZone"] = json!("Etc/UTC");
    let errs: Vec<String> = validate_update(resource, &new, &old)
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(
        errs,
        vec![
            "spec.schedule: Invalid value: \"TZ=UTC 0 * * * *\": cannot use both timeZone field and TZ or CRON_TZ in schedule"
        ]
    );
}

#[test]
fn job_with_generated_selector_is_valid() {
    let resource = by_kind("batch/v1", "Job").unwrap();
    let mut job = json!({"metadata": {"name": "pi", "namespace": "default", "uid": "u-9"},
        "spec": {"template": template(json!({}), "Never")}});
    defaults::apply(resource, &mut job);
    defaults::job_selector(&mut job);
    let errs = validate_create(resource, &job);
    assert!(errs.is_empty(), "{errs:#?}");
    // A selector that does not carry the uid was not generated for this Job.
    job["spec"]["selector"] = json!({"matchLabels": {"job-name": "pi"}});
    let errs: Vec<String> = validate_create(resource, &job)
        .iter()
        .map(ToString::to_string)
        .collect();
    assert!(
        errs.iter()
            .any(|e| e.starts_with("spec.selector: Invalid value")
                && e.ends_with("`selector` not auto-generated")),
        "{errs:#?}"
    );
}

#[test]
fn diff_shows_changed_lines() {
    let diff = json_diff(&json!({"a": 1, "b": 2}), &json!({"a": 1, "b": 3}));
    assert_eq!(diff, "\n-   \"b\": 2\n+   \"b\": 3");
}
