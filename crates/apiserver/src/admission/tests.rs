//! Admission against a real API server state (SQLite store in a temp dir, watch cache), with
//! no HTTP: creates go through `rest::create_object` as every create does.

use std::sync::Arc;

use serde_json::{Value, json};

use crate::auth::UserInfo;
use crate::rest::create_object;
use crate::{ApiServer, Config};

async fn server(dir: &tempfile::TempDir) -> Arc<ApiServer> {
    let store = store::sqlite::SqliteStore::open(
        &dir.path().join("db.sqlite"),
        store::sqlite::SqliteOptions {
            fsync: false,
            ..Default::default()
        },
    )
    .expect("open store");
    let config = Config {
        bind: "127.0.0.1:6443".parse().unwrap(),
        advertise_address: "127.0.0.1".parse().unwrap(),
        service_cidr: "10.43.0.0/16".parse().unwrap(),
        node_port_range: (30000, 32767),
        cluster_tls: None,
    };
    let tokens = crate::TokenAuthenticator::parse("").unwrap();
    ApiServer::new(config, Arc::new(store), tokens)
        .await
        .expect("api server")
}

fn admin() -> UserInfo {
    UserInfo::from_cert("admin".into(), vec!["system:masters".into()])
}

async fn create(
    server: &Arc<ApiServer>,
    plural: &str,
    obj: Value,
) -> Result<Value, crate::error::ApiError> {
    let resource = api::resources::storage_row(plural).unwrap();
    create_object(server, resource, Some("default"), obj, &admin(), false).await
}

fn configmap(name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}})
}

fn pod(name: &str, resources: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
        "spec": {"containers": [{"name": "web", "image": "nginx", "resources": resources}]}})
}

fn quota_used(server: &Arc<ApiServer>, name: &str) -> Value {
    let rq = api::resources::storage_row("resourcequotas").unwrap();
    server
        .cache
        .get(rq, &rq.key(Some("default"), name))
        .expect("quota exists")
        .value()["status"]["used"]
        .clone()
}

#[tokio::test]
async fn object_count_quota_rejects_past_the_limit() {
    let dir = tempfile::tempdir().unwrap();
    let server = server(&dir).await;
    create(
        &server,
        "resourcequotas",
        json!({"apiVersion": "v1", "kind": "ResourceQuota",
        "metadata": {"name": "objects"}, "spec": {"hard": {"count/configmaps": "2"}}}),
    )
    .await
    .unwrap();
    create(&server, "configmaps", configmap("one"))
        .await
        .unwrap();
    create(&server, "configmaps", configmap("two"))
        .await
        .unwrap();
    let err = create(&server, "configmaps", configmap("three"))
        .await
        .unwrap_err();
    assert_eq!(err.code.as_u16(), 403);
    assert_eq!(
        err.message,
        "configmaps \"three\" is forbidden: exceeded quota: objects, requested: count/configmaps=1, used: count/configmaps=2, limited: count/configmaps=2"
    );
    assert_eq!(
        quota_used(&server, "objects"),
        json!({"count/configmaps": "2"})
    );
}

#[tokio::test]
async fn concurrent_creates_cannot_share_the_last_slot() {
    let dir = tempfile::tempdir().unwrap();
    let server = server(&dir).await;
    create(
        &server,
        "resourcequotas",
        json!({"apiVersion": "v1", "kind": "ResourceQuota",
        "metadata": {"name": "objects"}, "spec": {"hard": {"configmaps": "3"}}}),
    )
    .await
    .unwrap();
    let tasks: Vec<_> = (0..8)
        .map(|i| {
            let server = server.clone();
            tokio::spawn(
                async move { create(&server, "configmaps", configmap(&format!("c{i}"))).await },
            )
        })
        .collect();
    let mut created = 0;
    for t in tasks {
        if t.await.unwrap().is_ok() {
            created += 1;
        }
    }
    assert_eq!(created, 3, "exactly the quota's worth of creates succeed");
    assert_eq!(quota_used(&server, "objects"), json!({"configmaps": "3"}));
}

#[tokio::test]
async fn compute_quota_charges_requests_and_requires_them() {
    let dir = tempfile::tempdir().unwrap();
    let server = server(&dir).await;
    create(
        &server,
        "resourcequotas",
        json!({"apiVersion": "v1", "kind": "ResourceQuota",
        "metadata": {"name": "compute"}, "spec": {"hard": {"requests.cpu": "2", "pods": "5"}}}),
    )
    .await
    .unwrap();
    create(
        &server,
        "pods",
        pod("a", json!({"requests": {"cpu": "1500m"}})),
    )
    .await
    .unwrap();
    let err = create(&server, "pods", pod("b", json!({"requests": {"cpu": "1"}})))
        .await
        .unwrap_err();
    assert_eq!(err.code.as_u16(), 403);
    assert_eq!(
        err.message,
        "pods \"b\" is forbidden: exceeded quota: compute, requested: requests.cpu=1, used: requests.cpu=1500m, limited: requests.cpu=2"
    );
    let err = create(&server, "pods", pod("c", json!({})))
        .await
        .unwrap_err();
    assert_eq!(
        err.message,
        "pods \"c\" is forbidden: failed quota: compute: must specify requests.cpu for: web"
    );
    assert_eq!(
        quota_used(&server, "compute"),
        json!({"pods": "1", "requests.cpu": "1500m"})
    );
}

#[tokio::test]
async fn limit_range_defaults_then_limits_pods() {
    let dir = tempfile::tempdir().unwrap();
    let server = server(&dir).await;
    create(
        &server,
        "limitranges",
        json!({"apiVersion": "v1", "kind": "LimitRange",
        "metadata": {"name": "limits"}, "spec": {"limits": [{"type": "Container",
            "default": {"cpu": "500m", "memory": "128Mi"}, "defaultRequest": {"cpu": "250m"},
            "max": {"cpu": "1"}}]}}),
    )
    .await
    .unwrap();
    let created = create(&server, "pods", pod("d", json!({}))).await.unwrap();
    let resources = &created["spec"]["containers"][0]["resources"];
    assert_eq!(
        resources["limits"],
        json!({"cpu": "500m", "memory": "128Mi"})
    );
    assert_eq!(
        resources["requests"],
        json!({"cpu": "250m", "memory": "128Mi"})
    );
    let err = create(&server, "pods", pod("e", json!({"limits": {"cpu": "2"}})))
        .await
        .unwrap_err();
    assert_eq!(err.code.as_u16(), 403);
    assert_eq!(
        err.message,
        "pods \"e\" is forbidden: maximum cpu usage per Container is 1, but limit is 2"
    );
}

async fn set_status(server: &Arc<ApiServer>, plural: &str, name: &str, status: Value) {
    let resource = api::resources::storage_row(plural).unwrap();
    let key = resource.key(Some("default"), name);
    let subject = crate::error::Subject {
        group: resource.group,
        resource: resource.plural,
        name,
    };
    crate::rest::update_object(
        server,
        resource,
        &key,
        subject,
        Some("status"),
        false,
        |cur| {
            let mut new = cur.clone();
            new["status"] = status.clone();
            Ok(new)
        },
    )
    .await
    .expect("status update");
}

#[tokio::test]
async fn eviction_takes_a_disruption_from_the_budget() {
    let dir = tempfile::tempdir().unwrap();
    let server = server(&dir).await;
    let mut web = pod("web", json!({}));
    web["metadata"]["labels"] = json!({"app": "web"});
    create(&server, "pods", web).await.unwrap();
    set_status(
        &server,
        "pods",
        "web",
        json!({"phase": "Running",
        "conditions": [{"type": "Ready", "status": "True"}]}),
    )
    .await;
    create(&server, "poddisruptionbudgets", json!({"apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
        "metadata": {"name": "web"}, "spec": {"minAvailable": 1, "selector": {"matchLabels": {"app": "web"}}}}))
    .await
    .unwrap();
    let budget_status = |allowed: i32| {
        json!({"observedGeneration": 1, "currentHealthy": 1, "desiredHealthy": 1,
            "expectedPods": 1, "disruptionsAllowed": allowed,
            "conditions": [{"type": "DisruptionAllowed", "status": if allowed > 0 { "True" } else { "False" },
                "reason": "SufficientPods", "message": "", "lastTransitionTime": "2024-01-01T00:00:00Z"}]})
    };
    set_status(&server, "poddisruptionbudgets", "web", budget_status(0)).await;
    let err = super::admit_eviction(&server, "default", "web")
        .await
        .unwrap_err();
    assert_eq!(err.code.as_u16(), 429);
    assert_eq!(
        err.message,
        "Cannot evict pod as it would violate the pod's disruption budget."
    );
    assert_eq!(
        err.details.unwrap()["causes"][0]["message"],
        "The disruption budget web needs 1 healthy pods and has 1 currently"
    );

    set_status(&server, "poddisruptionbudgets", "web", budget_status(1)).await;
    super::admit_eviction(&server, "default", "web")
        .await
        .unwrap();
    let pdbs = api::resources::storage_row("poddisruptionbudgets").unwrap();
    let after = server
        .cache
        .get(pdbs, &pdbs.key(Some("default"), "web"))
        .unwrap()
        .value();
    assert_eq!(after["status"]["disruptionsAllowed"], 0);
    assert!(
        after["status"]["disruptedPods"]["web"].is_string(),
        "{after}"
    );
    assert_eq!(after["status"]["conditions"][0]["status"], "False");
    // The budget is spent: a second eviction is refused.
    let err = super::admit_eviction(&server, "default", "web")
        .await
        .unwrap_err();
    assert_eq!(err.code.as_u16(), 429);
}
