use serde_json::json;

use super::*;

fn pod(spec: Value) -> Pod {
    serde_json::from_value(json!({"metadata": {"name": "p"}, "spec": spec})).unwrap()
}

fn list(pairs: &[(&str, &str)]) -> ResourceList {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), parse_quantity(v).unwrap()))
        .collect()
}

fn quota(spec: Value) -> ResourceQuota {
    serde_json::from_value(json!({"metadata": {"name": "q"}, "spec": spec})).unwrap()
}

fn now() -> Timestamp {
    Timestamp::from_second(1_700_000_000).unwrap()
}

#[test]
fn pod_usage_sums_containers_and_takes_init_maximum() {
    let p = pod(json!({"containers": [
        {"name": "a", "image": "i", "resources": {"requests": {"cpu": "250m", "memory": "64Mi"}, "limits": {"cpu": "1"}}},
        {"name": "b", "image": "i", "resources": {"requests": {"cpu": "250m", "memory": "64Mi"}}}
    ],
    "initContainers": [
        {"name": "init", "image": "i", "resources": {"requests": {"cpu": "2"}}}
    ]}));
    let usage = pod_usage(&p, now());
    assert_eq!(usage["requests.cpu"].to_string(), "2");
    assert_eq!(usage["cpu"].to_string(), "2");
    assert_eq!(usage["requests.memory"].to_string(), "128Mi");
    assert_eq!(usage["limits.cpu"].to_string(), "1");
    assert_eq!(usage["pods"].to_string(), "1");
    assert_eq!(usage["count/pods"].to_string(), "1");
    assert!(!usage.contains_key("limits.memory"));
}

#[test]
fn sidecars_add_to_the_total() {
    let p = pod(json!({"containers": [
        {"name": "a", "image": "i", "resources": {"requests": {"cpu": "1"}}}
    ],
    "initContainers": [
        {"name": "side", "image": "i", "restartPolicy": "Always", "resources": {"requests": {"cpu": "500m"}}},
        {"name": "init", "image": "i", "resources": {"requests": {"cpu": "1"}}}
    ]}));
    // 1 + 500m sidecar; the init container needs 1 + 500m too.
    assert_eq!(pod_requests(&p)["cpu"].to_string(), "1500m");
}

#[test]
fn terminal_pods_charge_only_their_count() {
    let mut p = pod(
        json!({"containers": [{"name": "a", "image": "i", "resources": {"requests": {"cpu": "1"}}}]}),
    );
    p.status = Some(serde_json::from_value(json!({"phase": "Succeeded"})).unwrap());
    let usage = pod_usage(&p, now());
    assert_eq!(usage.keys().collect::<Vec<_>>(), vec!["count/pods"]);
}

#[test]
fn matching_resources_by_evaluator() {
    let names: Vec<String> = [
        "pods",
        "requests.cpu",
        "count/configmaps",
        "configmaps",
        "services.nodeports",
        "requests.storage",
        "gold.storageclass.storage.k8s.io/requests.storage",
        "count/deployments.apps",
        "requests.example.com/gpu",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    assert_eq!(
        matching_resources("", "pods", &names),
        vec!["pods", "requests.cpu", "requests.example.com/gpu"]
    );
    assert_eq!(
        matching_resources("", "configmaps", &names),
        vec!["count/configmaps", "configmaps"]
    );
    assert_eq!(
        matching_resources("", "services", &names),
        vec!["services.nodeports"]
    );
    assert_eq!(
        matching_resources("", "persistentvolumeclaims", &names),
        vec![
            "requests.storage",
            "gold.storageclass.storage.k8s.io/requests.storage"
        ]
    );
    assert_eq!(
        matching_resources("apps", "deployments", &names),
        vec!["count/deployments.apps"]
    );
    assert!(matching_resources("", "secrets", &names).is_empty());
}

#[test]
fn charge_accepts_within_and_rejects_over_with_upstream_message() {
    let hard = list(&[("requests.cpu", "2"), ("pods", "10")]);
    let used = list(&[("requests.cpu", "1500m"), ("pods", "1")]);
    let ok = charge(
        "compute",
        &hard,
        &used,
        &list(&[("requests.cpu", "500m"), ("pods", "1"), ("limits.cpu", "9")]),
    )
    .unwrap();
    assert_eq!(pretty_print(&ok), "pods=2,requests.cpu=2");
    let err = charge(
        "compute",
        &hard,
        &used,
        &list(&[("requests.cpu", "1"), ("pods", "1")]),
    )
    .unwrap_err();
    assert_eq!(
        err,
        "exceeded quota: compute, requested: requests.cpu=1, used: requests.cpu=1500m, limited: requests.cpu=2"
    );
}

#[test]
fn object_counts_use_count_and_legacy_names() {
    let hard = list(&[("count/configmaps", "2")]);
    let delta = usage("", "configmaps", &json!({"metadata": {"name": "c"}}), now());
    assert_eq!(pretty_print(&delta), "configmaps=1,count/configmaps=1");
    let used = list(&[("count/configmaps", "2")]);
    assert_eq!(
        charge("q", &hard, &used, &delta).unwrap_err(),
        "exceeded quota: q, requested: count/configmaps=1, used: count/configmaps=2, limited: count/configmaps=2"
    );
    let apps = usage("apps", "deployments", &json!({}), now());
    assert_eq!(pretty_print(&apps), "count/deployments.apps=1");
}

#[test]
fn service_usage_counts_node_ports_and_load_balancers() {
    let svc: Service = serde_json::from_value(
        json!({"spec": {"type": "LoadBalancer", "ports": [{"port": 80}, {"port": 443}]}}),
    )
    .unwrap();
    let u = service_usage(&svc);
    assert_eq!(u["services.loadbalancers"].to_string(), "1");
    assert_eq!(u["services.nodeports"].to_string(), "2");
    let svc: Service = serde_json::from_value(json!({"spec": {"ports": [{"port": 80}]}})).unwrap();
    assert!(service_usage(&svc)["services.nodeports"].is_zero());
}

#[test]
fn pvc_usage_counts_storage_per_class() {
    let pvc: PersistentVolumeClaim = serde_json::from_value(json!({"spec": {"storageClassName": "gold", "resources": {"requests": {"storage": "1Gi"}}}})).unwrap();
    let u = pvc_usage(&pvc);
    assert_eq!(u["requests.storage"].to_string(), "1Gi");
    assert_eq!(
        u["gold.storageclass.storage.k8s.io/requests.storage"].to_string(),
        "1Gi"
    );
    assert_eq!(
        u["gold.storageclass.storage.k8s.io/persistentvolumeclaims"].to_string(),
        "1"
    );
}

#[test]
fn constraints_name_missing_resources_and_containers() {
    let p = pod(json!({"containers": [
        {"name": "web", "image": "i"},
        {"name": "side", "image": "i", "resources": {"requests": {"cpu": "1"}}}
    ]}));
    let required = vec![
        "requests.cpu".to_string(),
        "requests.memory".to_string(),
        "pods".to_string(),
    ];
    assert_eq!(
        pod_constraints(&required, &p).unwrap_err(),
        "must specify requests.cpu for: web; requests.memory for: side,web"
    );
    assert!(pod_constraints(&["pods".to_string()], &p).is_ok());
}

#[test]
fn scopes_select_pods() {
    let best_effort = pod(json!({"containers": [{"name": "a", "image": "i"}]}));
    let burstable = pod(
        json!({"containers": [{"name": "a", "image": "i", "resources": {"requests": {"cpu": "1"}}}], "activeDeadlineSeconds": 10, "priorityClassName": "high"}),
    );
    let q = quota(json!({"hard": {"pods": "1"}, "scopes": ["BestEffort"]}));
    assert!(quota_matches(&q, "", "pods", Some(&best_effort)));
    assert!(!quota_matches(&q, "", "pods", Some(&burstable)));
    // Scoped quotas never cover other resources.
    let q = quota(json!({"hard": {"count/configmaps": "1"}, "scopes": ["NotTerminating"]}));
    assert!(!quota_matches(&q, "", "configmaps", None));
    let q = quota(json!({"hard": {"pods": "1"}, "scopes": ["Terminating"]}));
    assert!(quota_matches(&q, "", "pods", Some(&burstable)));
    assert!(!quota_matches(&q, "", "pods", Some(&best_effort)));
    let q = quota(
        json!({"hard": {"pods": "1"}, "scopeSelector": {"matchExpressions": [
            {"scopeName": "PriorityClass", "operator": "In", "values": ["high", "medium"]}
        ]}}),
    );
    assert!(quota_matches(&q, "", "pods", Some(&burstable)));
    assert!(!quota_matches(&q, "", "pods", Some(&best_effort)));
    // A quota that limits nothing pods use does not cover them.
    let q = quota(json!({"hard": {"count/secrets": "1"}}));
    assert!(!quota_matches(&q, "", "pods", Some(&best_effort)));
}

#[test]
fn sum_usage_reports_zero_for_unused_names() {
    let a = list(&[("count/pods", "1"), ("requests.cpu", "500m")]);
    let b = list(&[("count/pods", "1"), ("requests.cpu", "1")]);
    let names = vec!["requests.cpu".to_string(), "requests.memory".to_string()];
    let sum = sum_usage(&names, [&a, &b]);
    assert_eq!(pretty_print(&sum), "requests.cpu=1500m,requests.memory=0");
}
