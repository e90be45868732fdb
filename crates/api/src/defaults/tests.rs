use serde_json::{Value, json};

use super::*;
use crate::resources::by_kind;

fn defaulted(api_version: &str, kind: &str, mut obj: Value) -> Value {
    let resource = by_kind(api_version, kind).expect("known kind");
    apply(resource, &mut obj);
    // Defaulting is idempotent.
    let mut again = obj.clone();
    apply(resource, &mut again);
    assert_eq!(again, obj, "second apply changed {kind}");
    obj
}

fn pod(spec: Value) -> Value {
    json!({"metadata": {"name": "p", "namespace": "default"}, "spec": spec})
}

#[test]
fn table() {
    let container = json!({"name": "c", "image": "nginx"});
    let template =
        json!({"metadata": {"labels": {"app": "a"}}, "spec": {"containers": [container]}});
    // (apiVersion, kind, object, JSON pointer, expected value; Null = absent)
    let cases: Vec<(&str, &str, Value, &str, Value)> = vec![
        (
            "v1",
            "Pod",
            pod(json!({"containers": [container]})),
            "/spec/restartPolicy",
            json!("Always"),
        ),
        (
            "v1",
            "Pod",
            pod(json!({"containers": [container]})),
            "/spec/dnsPolicy",
            json!("ClusterFirst"),
        ),
        (
            "v1",
            "Pod",
            pod(json!({"containers": [container]})),
            "/spec/schedulerName",
            json!("default-scheduler"),
        ),
        (
            "v1",
            "Pod",
            pod(json!({"containers": [container]})),
            "/spec/terminationGracePeriodSeconds",
            json!(30),
        ),
        (
            "v1",
            "Pod",
            pod(json!({"containers": [container]})),
            "/spec/securityContext",
            json!({}),
        ),
        (
            "v1",
            "Pod",
            pod(json!({"containers": [container]})),
            "/spec/enableServiceLinks",
            json!(true),
        ),
        (
            "v1",
            "Pod",
            pod(json!({"containers": [container]})),
            "/spec/priority",
            json!(0),
        ),
        (
            "v1",
            "Pod",
            pod(json!({"containers": [container]})),
            "/spec/preemptionPolicy",
            json!("PreemptLowerPriority"),
        ),
        (
            "v1",
            "Pod",
            pod(json!({"containers": [container]})),
            "/spec/serviceAccountName",
            json!("default"),
        ),
        (
            "v1",
            "Pod",
            pod(json!({"containers": [container]})),
            "/spec/serviceAccount",
            json!("default"),
        ),
        (
            "v1",
            "Pod",
            pod(json!({"containers": [container]})),
            "/status/phase",
            json!("Pending"),
        ),
        (
            "v1",
            "Pod",
            pod(json!({"containers": [container]})),
            "/status/qosClass",
            json!("BestEffort"),
        ),
        (
            "v1",
            "Pod",
            pod(json!({"containers": [container]})),
            "/spec/tolerations/1/key",
            json!("node.kubernetes.io/unreachable"),
        ),
        (
            "v1",
            "Pod",
            pod(json!({"containers": [container]})),
            "/spec/tolerations/0/tolerationSeconds",
            json!(300),
        ),
        (
            "v1",
            "Pod",
            pod(json!({"containers": [container]})),
            "/spec/containers/0/terminationMessagePath",
            json!("/dev/termination-log"),
        ),
        (
            "v1",
            "Pod",
            pod(json!({"containers": [container]})),
            "/spec/containers/0/terminationMessagePolicy",
            json!("File"),
        ),
        (
            "v1",
            "Pod",
            pod(json!({"containers": [container]})),
            "/spec/containers/0/imagePullPolicy",
            json!("Always"),
        ),
        (
            "v1",
            "Pod",
            pod(json!({"containers": [{"name": "c", "image": "nginx:latest"}]})),
            "/spec/containers/0/imagePullPolicy",
            json!("Always"),
        ),
        (
            "v1",
            "Pod",
            pod(json!({"containers": [{"name": "c", "image": "nginx:1.27"}]})),
            "/spec/containers/0/imagePullPolicy",
            json!("IfNotPresent"),
        ),
        (
            "v1",
            "Pod",
            pod(json!({"containers": [{"name": "c", "image": "localhost:5000/app"}]})),
            "/spec/containers/0/imagePullPolicy",
            json!("Always"),
        ),
        (
            "v1",
            "Pod",
            pod(json!({"containers": [{"name": "c", "image": "app@sha256:abc"}]})),
            "/spec/containers/0/imagePullPolicy",
            json!("IfNotPresent"),
        ),
        (
            "v1",
            "Pod",
            pod(json!({"containers": [{"name": "c", "image": "a", "imagePullPolicy": "Never"}]})),
            "/spec/containers/0/imagePullPolicy",
            json!("Never"),
        ),
        (
            "v1",
            "Pod",
            pod(
                json!({"containers": [{"name": "c", "image": "a", "ports": [{"containerPort": 80}]}]}),
            ),
            "/spec/containers/0/ports/0/protocol",
            json!("TCP"),
        ),
        (
            "v1",
            "Pod",
            pod(
                json!({"hostNetwork": true, "containers": [{"name": "c", "image": "a", "ports": [{"containerPort": 80}]}]}),
            ),
            "/spec/containers/0/ports/0/hostPort",
            json!(80),
        ),
        (
            "v1",
            "Pod",
            pod(
                json!({"containers": [{"name": "c", "image": "a", "livenessProbe": {"httpGet": {"port": 80}}}]}),
            ),
            "/spec/containers/0/livenessProbe",
            json!({"httpGet": {"port": 80, "path": "/", "scheme": "HTTP"}, "timeoutSeconds": 1, "periodSeconds": 10, "successThreshold": 1, "failureThreshold": 3}),
        ),
        (
            "v1",
            "Pod",
            pod(
                json!({"containers": [{"name": "c", "image": "a", "resources": {"limits": {"cpu": "1", "memory": "1Gi"}}}]}),
            ),
            "/spec/containers/0/resources/requests",
            json!({"cpu": "1", "memory": "1Gi"}),
        ),
        (
            "v1",
            "Pod",
            pod(
                json!({"containers": [{"name": "c", "image": "a", "resources": {"limits": {"cpu": "1", "memory": "1Gi"}}}]}),
            ),
            "/status/qosClass",
            json!("Guaranteed"),
        ),
        (
            "v1",
            "Pod",
            pod(
                json!({"containers": [{"name": "c", "image": "a", "resources": {"requests": {"cpu": "100m"}}}]}),
            ),
            "/status/qosClass",
            json!("Burstable"),
        ),
        (
            "v1",
            "Pod",
            pod(
                json!({"containers": [{"name": "c", "image": "a", "env": [{"name": "N", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}]}]}),
            ),
            "/spec/containers/0/env/0/valueFrom/fieldRef/apiVersion",
            json!("v1"),
        ),
        (
            "v1",
            "Pod",
            pod(json!({"containers": [container], "volumes": [{"name": "v"}]})),
            "/spec/volumes/0/emptyDir",
            json!({}),
        ),
        (
            "v1",
            "Pod",
            pod(
                json!({"containers": [container], "volumes": [{"name": "v", "configMap": {"name": "c"}}]}),
            ),
            "/spec/volumes/0/configMap/defaultMode",
            json!(420),
        ),
        (
            "v1",
            "Pod",
            pod(
                json!({"containers": [container], "volumes": [{"name": "v", "secret": {"secretName": "s"}}]}),
            ),
            "/spec/volumes/0/secret/defaultMode",
            json!(420),
        ),
        (
            "v1",
            "Pod",
            pod(
                json!({"containers": [container], "volumes": [{"name": "v", "hostPath": {"path": "/x"}}]}),
            ),
            "/spec/volumes/0/hostPath/type",
            json!(""),
        ),
        (
            "v1",
            "Pod",
            pod(json!({"containers": [container], "priorityClassName": "system-node-critical"})),
            "/spec/priority",
            json!(2_000_001_000),
        ),
        (
            "v1",
            "Pod",
            pod(json!({"containers": [container], "tolerations": [{"operator": "Exists"}]})),
            "/spec/tolerations/1",
            Value::Null,
        ),
        (
            "v1",
            "Pod",
            pod(json!({"containers": [container], "serviceAccount": "builder"})),
            "/spec/serviceAccountName",
            json!("builder"),
        ),
        (
            "apps/v1",
            "Deployment",
            json!({"spec": {"template": template}}),
            "/spec/replicas",
            json!(1),
        ),
        (
            "apps/v1",
            "Deployment",
            json!({"spec": {"template": template}}),
            "/spec/strategy",
            json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": "25%"}}),
        ),
        (
            "apps/v1",
            "Deployment",
            json!({"spec": {"template": template, "strategy": {"type": "Recreate"}}}),
            "/spec/strategy",
            json!({"type": "Recreate"}),
        ),
        (
            "apps/v1",
            "Deployment",
            json!({"spec": {"template": template}}),
            "/spec/revisionHistoryLimit",
            json!(10),
        ),
        (
            "apps/v1",
            "Deployment",
            json!({"spec": {"template": template}}),
            "/spec/progressDeadlineSeconds",
            json!(600),
        ),
        (
            "apps/v1",
            "Deployment",
            json!({"spec": {"template": template}}),
            "/spec/template/spec/restartPolicy",
            json!("Always"),
        ),
        // Templates do not get pod-only admission defaults.
        (
            "apps/v1",
            "Deployment",
            json!({"spec": {"template": template}}),
            "/spec/template/spec/enableServiceLinks",
            Value::Null,
        ),
        (
            "apps/v1",
            "Deployment",
            json!({"spec": {"template": template}}),
            "/spec/template/spec/tolerations",
            Value::Null,
        ),
        (
            "apps/v1",
            "Deployment",
            json!({"spec": {"template": template}}),
            "/spec/template/spec/serviceAccountName",
            Value::Null,
        ),
        (
            "apps/v1",
            "ReplicaSet",
            json!({"spec": {"template": template}}),
            "/spec/replicas",
            json!(1),
        ),
        (
            "apps/v1",
            "StatefulSet",
            json!({"spec": {"template": template}}),
            "/spec/updateStrategy",
            json!({"type": "RollingUpdate", "rollingUpdate": {"partition": 0}}),
        ),
        (
            "apps/v1",
            "StatefulSet",
            json!({"spec": {"template": template}}),
            "/spec/podManagementPolicy",
            json!("OrderedReady"),
        ),
        (
            "apps/v1",
            "StatefulSet",
            json!({"spec": {"template": template}}),
            "/spec/persistentVolumeClaimRetentionPolicy",
            json!({"whenDeleted": "Retain", "whenScaled": "Retain"}),
        ),
        (
            "apps/v1",
            "StatefulSet",
            json!({"spec": {"template": template, "volumeClaimTemplates": [{"metadata": {"name": "d"}, "spec": {}}]}}),
            "/spec/volumeClaimTemplates/0/spec/volumeMode",
            json!("Filesystem"),
        ),
        (
            "apps/v1",
            "DaemonSet",
            json!({"spec": {"template": template}}),
            "/spec/updateStrategy",
            json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1, "maxSurge": 0}}),
        ),
        (
            "batch/v1",
            "Job",
            json!({"spec": {"template": template}}),
            "/spec/completions",
            json!(1),
        ),
        (
            "batch/v1",
            "Job",
            json!({"spec": {"template": template, "parallelism": 3}}),
            "/spec/completions",
            Value::Null,
        ),
        (
            "batch/v1",
            "Job",
            json!({"spec": {"template": template}}),
            "/spec/backoffLimit",
            json!(6),
        ),
        (
            "batch/v1",
            "Job",
            json!({"spec": {"template": template}}),
            "/spec/completionMode",
            json!("NonIndexed"),
        ),
        (
            "batch/v1",
            "Job",
            json!({"spec": {"template": template}}),
            "/spec/suspend",
            json!(false),
        ),
        (
            "batch/v1",
            "Job",
            json!({"spec": {"template": template}}),
            "/spec/podReplacementPolicy",
            json!("TerminatingOrFailed"),
        ),
        (
            "batch/v1",
            "Job",
            json!({"spec": {"template": template}}),
            "/metadata/labels",
            json!({"app": "a"}),
        ),
        (
            "batch/v1",
            "CronJob",
            json!({"spec": {"schedule": "* * * * *", "jobTemplate": {"spec": {"template": template}}}}),
            "/spec/concurrencyPolicy",
            json!("Allow"),
        ),
        (
            "batch/v1",
            "CronJob",
            json!({"spec": {"schedule": "* * * * *", "jobTemplate": {"spec": {"template": template}}}}),
            "/spec/successfulJobsHistoryLimit",
            json!(3),
        ),
        (
            "batch/v1",
            "CronJob",
            json!({"spec": {"schedule": "* * * * *", "jobTemplate": {"spec": {"template": template}}}}),
            "/spec/failedJobsHistoryLimit",
            json!(1),
        ),
        (
            "batch/v1",
            "CronJob",
            json!({"spec": {"schedule": "* * * * *", "jobTemplate": {"spec": {"template": template}}}}),
            "/spec/jobTemplate/spec/backoffLimit",
            Value::Null,
        ),
        (
            "batch/v1",
            "CronJob",
            json!({"spec": {"schedule": "* * * * *", "jobTemplate": {"spec": {"template": template}}}}),
            "/spec/jobTemplate/spec/template/spec/dnsPolicy",
            json!("ClusterFirst"),
        ),
        (
            "v1",
            "Service",
            json!({"spec": {"ports": [{"port": 80}]}}),
            "/spec/ports/0",
            json!({"port": 80, "protocol": "TCP", "targetPort": 80}),
        ),
        (
            "v1",
            "Service",
            json!({"spec": {"ports": [{"port": 80}]}}),
            "/spec/type",
            json!("ClusterIP"),
        ),
        (
            "v1",
            "Service",
            json!({"spec": {"ports": [{"port": 80}]}}),
            "/spec/sessionAffinity",
            json!("None"),
        ),
        (
            "v1",
            "Service",
            json!({"spec": {"ports": [{"port": 80}]}}),
            "/spec/ipFamilies",
            json!(["IPv4"]),
        ),
        (
            "v1",
            "Service",
            json!({"spec": {"ports": [{"port": 80}]}}),
            "/spec/ipFamilyPolicy",
            json!("SingleStack"),
        ),
        (
            "v1",
            "Service",
            json!({"spec": {"ports": [{"port": 80}]}}),
            "/spec/internalTrafficPolicy",
            json!("Cluster"),
        ),
        (
            "v1",
            "Service",
            json!({"spec": {"ports": [{"port": 80}]}}),
            "/spec/externalTrafficPolicy",
            Value::Null,
        ),
        (
            "v1",
            "Service",
            json!({"spec": {"type": "NodePort", "ports": [{"port": 80}]}}),
            "/spec/externalTrafficPolicy",
            json!("Cluster"),
        ),
        (
            "v1",
            "Service",
            json!({"spec": {"type": "LoadBalancer", "ports": [{"port": 80}]}}),
            "/spec/allocateLoadBalancerNodePorts",
            json!(true),
        ),
        (
            "v1",
            "Service",
            json!({"spec": {"type": "ExternalName", "externalName": "example.com"}}),
            "/spec/ipFamilies",
            Value::Null,
        ),
        (
            "v1",
            "Service",
            json!({"spec": {"clusterIP": "None"}}),
            "/spec/ipFamilyPolicy",
            json!("RequireDualStack"),
        ),
        (
            "v1",
            "Service",
            json!({"spec": {"clusterIP": "None"}}),
            "/spec/clusterIPs",
            json!(["None"]),
        ),
        (
            "v1",
            "Service",
            json!({"spec": {"sessionAffinity": "ClientIP"}}),
            "/spec/sessionAffinityConfig/clientIP/timeoutSeconds",
            json!(10800),
        ),
        (
            "v1",
            "Secret",
            json!({"metadata": {"name": "s"}}),
            "/type",
            json!("Opaque"),
        ),
        (
            "v1",
            "Secret",
            json!({"stringData": {"user": "admin"}}),
            "/data/user",
            json!("YWRtaW4="),
        ),
        (
            "v1",
            "Secret",
            json!({"stringData": {"user": "admin"}}),
            "/stringData",
            Value::Null,
        ),
        (
            "v1",
            "Namespace",
            json!({"metadata": {"name": "team"}}),
            "/metadata/labels/kubernetes.io~1metadata.name",
            json!("team"),
        ),
        (
            "v1",
            "Namespace",
            json!({"metadata": {"name": "team"}}),
            "/spec/finalizers",
            json!(["kubernetes"]),
        ),
        (
            "v1",
            "Namespace",
            json!({"metadata": {"name": "team", "deletionTimestamp": "2024-01-01T00:00:00Z"}, "spec": {}}),
            "/spec/finalizers",
            Value::Null,
        ),
        (
            "v1",
            "Namespace",
            json!({"metadata": {"name": "team"}}),
            "/status/phase",
            json!("Active"),
        ),
        (
            "v1",
            "Node",
            json!({"status": {"capacity": {"cpu": "2"}}}),
            "/status/allocatable",
            json!({"cpu": "2"}),
        ),
        (
            "v1",
            "PersistentVolumeClaim",
            json!({"spec": {}}),
            "/spec/volumeMode",
            json!("Filesystem"),
        ),
        (
            "v1",
            "PersistentVolumeClaim",
            json!({"spec": {}}),
            "/status/phase",
            json!("Pending"),
        ),
        (
            "v1",
            "PersistentVolume",
            json!({"spec": {}}),
            "/spec/persistentVolumeReclaimPolicy",
            json!("Retain"),
        ),
        (
            "v1",
            "ReplicationController",
            json!({"spec": {"template": template}}),
            "/spec/selector",
            json!({"app": "a"}),
        ),
        (
            "v1",
            "ReplicationController",
            json!({"spec": {"template": template}}),
            "/metadata/labels",
            json!({"app": "a"}),
        ),
        (
            "v1",
            "Endpoints",
            json!({"subsets": [{"ports": [{"port": 80}]}]}),
            "/subsets/0/ports/0/protocol",
            json!("TCP"),
        ),
        (
            "v1",
            "LimitRange",
            json!({"spec": {"limits": [{"type": "Container", "max": {"cpu": "2"}}]}}),
            "/spec/limits/0/defaultRequest",
            json!({"cpu": "2"}),
        ),
        (
            "discovery.k8s.io/v1",
            "EndpointSlice",
            json!({"ports": [{"port": 80}]}),
            "/ports/0",
            json!({"port": 80, "name": "", "protocol": "TCP"}),
        ),
        (
            "networking.k8s.io/v1",
            "NetworkPolicy",
            json!({"spec": {"egress": [{}]}}),
            "/spec/policyTypes",
            json!(["Ingress", "Egress"]),
        ),
        (
            "networking.k8s.io/v1",
            "NetworkPolicy",
            json!({"spec": {}}),
            "/spec/policyTypes",
            json!(["Ingress"]),
        ),
        (
            "storage.k8s.io/v1",
            "StorageClass",
            json!({"provisioner": "p"}),
            "/reclaimPolicy",
            json!("Delete"),
        ),
        (
            "storage.k8s.io/v1",
            "StorageClass",
            json!({"provisioner": "p"}),
            "/volumeBindingMode",
            json!("Immediate"),
        ),
        (
            "scheduling.k8s.io/v1",
            "PriorityClass",
            json!({"value": 5}),
            "/preemptionPolicy",
            json!("PreemptLowerPriority"),
        ),
        (
            "rbac.authorization.k8s.io/v1",
            "RoleBinding",
            json!({"subjects": [{"kind": "User", "name": "u"}]}),
            "/subjects/0/apiGroup",
            json!("rbac.authorization.k8s.io"),
        ),
        (
            "rbac.authorization.k8s.io/v1",
            "ClusterRoleBinding",
            json!({"subjects": [{"kind": "ServiceAccount", "name": "s", "namespace": "n"}]}),
            "/subjects/0/apiGroup",
            json!(""),
        ),
        (
            "autoscaling/v2",
            "HorizontalPodAutoscaler",
            json!({"spec": {"maxReplicas": 3}}),
            "/spec/minReplicas",
            json!(1),
        ),
        (
            "autoscaling/v2",
            "HorizontalPodAutoscaler",
            json!({"spec": {"maxReplicas": 3}}),
            "/spec/metrics/0/resource/target/averageUtilization",
            json!(80),
        ),
        (
            "autoscaling/v2",
            "HorizontalPodAutoscaler",
            json!({"spec": {"maxReplicas": 3}}),
            "/spec/behavior",
            Value::Null,
        ),
        (
            "autoscaling/v2",
            "HorizontalPodAutoscaler",
            json!({"spec": {"maxReplicas": 3, "behavior": {}}}),
            "/spec/behavior/scaleUp/policies/0",
            json!({"type": "Pods", "value": 4, "periodSeconds": 15}),
        ),
        (
            "autoscaling/v1",
            "HorizontalPodAutoscaler",
            json!({"spec": {"maxReplicas": 3}}),
            "/spec/metrics",
            Value::Null,
        ),
    ];
    for (api_version, kind, obj, pointer, want) in cases {
        let out = defaulted(api_version, kind, obj.clone());
        let got = out.pointer(pointer).cloned().unwrap_or(Value::Null);
        assert_eq!(got, want, "{kind} {obj} at {pointer}");
    }
}

#[test]
fn user_values_are_kept() {
    let obj = pod(json!({
        "restartPolicy": "Never",
        "dnsPolicy": "Default",
        "terminationGracePeriodSeconds": 0,
        "containers": [{"name": "c", "image": "a", "terminationMessagePolicy": "FallbackToLogsOnError",
            "readinessProbe": {"exec": {"command": ["true"]}, "periodSeconds": 2}}]
    }));
    let out = defaulted("v1", "Pod", obj);
    assert_eq!(out["spec"]["restartPolicy"], "Never");
    assert_eq!(out["spec"]["dnsPolicy"], "Default");
    assert_eq!(out["spec"]["terminationGracePeriodSeconds"], 0);
    let c = &out["spec"]["containers"][0];
    assert_eq!(c["terminationMessagePolicy"], "FallbackToLogsOnError");
    assert_eq!(c["readinessProbe"]["periodSeconds"], 2);
    assert_eq!(c["readinessProbe"]["timeoutSeconds"], 1);
}

#[test]
fn job_selector_from_uid() {
    let mut job = json!({
        "metadata": {"name": "pi", "namespace": "default", "uid": "u-1"},
        "spec": {"template": {"spec": {"containers": [{"name": "c", "image": "perl"}]}}}
    });
    defaults_for(&mut job, "batch/v1", "Job");
    job_selector(&mut job);
    assert_eq!(
        job["spec"]["selector"],
        json!({"matchLabels": {"batch.kubernetes.io/controller-uid": "u-1"}})
    );
    let labels = &job["spec"]["template"]["metadata"]["labels"];
    assert_eq!(labels["batch.kubernetes.io/job-name"], "pi");
    assert_eq!(labels["job-name"], "pi");
    assert_eq!(labels["controller-uid"], "u-1");
    assert_eq!(job["metadata"]["labels"], *labels);

    let mut manual = json!({
        "metadata": {"name": "m", "uid": "u-2"},
        "spec": {"manualSelector": true, "selector": {"matchLabels": {"x": "y"}}}
    });
    job_selector(&mut manual);
    assert_eq!(
        manual["spec"]["selector"],
        json!({"matchLabels": {"x": "y"}})
    );
    assert!(manual["spec"].get("template").is_none());
}

fn defaults_for(obj: &mut Value, api_version: &str, kind: &str) {
    apply(by_kind(api_version, kind).unwrap(), obj);
}

#[test]
fn service_account_token_is_mounted() {
    let mut p = pod(
        json!({"containers": [{"name": "a", "image": "x"}, {"name": "b", "image": "y",
        "volumeMounts": [{"name": "own", "mountPath": SERVICE_ACCOUNT_MOUNT_PATH}]}],
        "volumes": [{"name": "own", "emptyDir": {}}]}),
    );
    mount_service_account_token(&mut p, "abcde");
    let volumes = p["spec"]["volumes"].as_array().unwrap();
    assert_eq!(volumes.len(), 2);
    assert_eq!(volumes[1]["name"], "kube-api-access-abcde");
    assert_eq!(
        p["spec"]["containers"][0]["volumeMounts"][0],
        json!({"name": "kube-api-access-abcde", "readOnly": true, "mountPath": SERVICE_ACCOUNT_MOUNT_PATH})
    );
    assert_eq!(
        p["spec"]["containers"][1]["volumeMounts"]
            .as_array()
            .unwrap()
            .len(),
        1
    );

    let mut opted_out = pod(
        json!({"automountServiceAccountToken": false, "containers": [{"name": "a", "image": "x"}]}),
    );
    mount_service_account_token(&mut opted_out, "abcde");
    assert!(opted_out["spec"].get("volumes").is_none());
}

#[test]
fn service_update_keeps_allocated_values() {
    let svc = by_kind("v1", "Service").unwrap();
    let old = json!({"spec": {"type": "NodePort", "clusterIP": "10.43.0.10", "clusterIPs": ["10.43.0.10"],
        "ports": [{"port": 80, "protocol": "TCP", "nodePort": 30080}]}});
    let mut new = json!({"spec": {"type": "NodePort", "ports": [{"port": 80, "protocol": "TCP"}, {"port": 81, "protocol": "TCP"}]}});
    apply_update(svc, &mut new, &old);
    assert_eq!(new["spec"]["clusterIP"], "10.43.0.10");
    assert_eq!(new["spec"]["clusterIPs"], json!(["10.43.0.10"]));
    assert_eq!(new["spec"]["ports"][0]["nodePort"], 30080);
    assert!(new["spec"]["ports"][1].get("nodePort").is_none());

    let mut external = json!({"spec": {"type": "ExternalName", "externalName": "x.example"}});
    apply_update(svc, &mut external, &old);
    assert!(external["spec"].get("clusterIP").is_none());
}
