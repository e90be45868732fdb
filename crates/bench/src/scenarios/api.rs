//! `api`: a real `rkube server` driven over HTTPS keep-alive by concurrent clients, beside the
//! same operations on the store alone (the API layer's own cost is the difference).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Method, StatusCode};
use serde_json::{Value, json};
use tokio::sync::oneshot;

use crate::client::{ApiClient, Connection};
use crate::figure::{Figure, Target, Unit};
use crate::process::ServerProcess;
use crate::scenarios::store::{EmbeddedStore, create_load, get_load, update_load, watch_load};
use crate::stats::{Budget, Samples, timed_loop};
use crate::{BenchError, Options};

const SCENARIO: &str = "api";
/// Concurrent clients, each on its own keep-alive connection.
pub const CLIENTS: usize = 8;
pub const NAMESPACE: &str = "bench";
const STORE_ALONE: &str = "store alone";

/// A running server in a temporary directory, with its client; both go away on drop.
pub struct BenchServer {
    pub process: ServerProcess,
    pub client: ApiClient,
    _dir: tempfile::TempDir,
}

impl BenchServer {
    pub async fn start(options: &Options) -> Result<Self, BenchError> {
        let dir = tempfile::Builder::new()
            .prefix("rkube-bench-")
            .tempdir()
            .map_err(|source| BenchError::Io {
                context: "create a temporary directory for rkube server".into(),
                source,
            })?;
        // The API server alone: its own cost is what these figures are about, so the
        // in-process scheduler and controllers (which react to every pod) are left out.
        let (process, client) = ServerProcess::start_with(
            &options.binary,
            &dir.path().join("data"),
            testing::free_port(),
            &["--disable-scheduler", "--disable-controller-manager"],
        )
        .await?;
        Ok(Self {
            process,
            client,
            _dir: dir,
        })
    }

    pub async fn connections(&self, n: usize) -> Result<Vec<Connection>, BenchError> {
        let mut conns = Vec::with_capacity(n);
        for _ in 0..n {
            conns.push(self.client.connect().await?);
        }
        Ok(conns)
    }
}

pub async fn create_namespace(conn: &mut Connection, name: &str) -> Result<(), BenchError> {
    let body = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}});
    conn.expect(
        Method::POST,
        "/api/v1/namespaces",
        Some(to_bytes(&body)),
        StatusCode::CREATED,
    )
    .await?;
    Ok(())
}

pub fn to_bytes(value: &Value) -> Bytes {
    Bytes::from(value.to_string())
}

fn pod(name: &str) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": NAMESPACE, "labels": {"app": "bench", "tier": "web"}},
        "spec": {"containers": [{
            "name": "app",
            "image": "registry.local/bench/app:1.0",
            "ports": [{"containerPort": 8080}],
            "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}}
        }]}
    })
}

fn configmap(name: &str, resource_version: Option<&str>, n: usize) -> Value {
    let mut cm = json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "data": {"generation": n.to_string()}
    });
    if let Some(rv) = resource_version {
        cm["metadata"]["resourceVersion"] = json!(rv);
    }
    cm
}

fn resource_version(body: &[u8]) -> Result<String, BenchError> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| BenchError::Scenario(format!("response is not JSON: {e}")))?;
    value["metadata"]["resourceVersion"]
        .as_str()
        .map(str::to_string)
        .ok_or_else(|| BenchError::Scenario("response has no metadata.resourceVersion".into()))
}

/// Sizes and budgets of one run.
struct Plan {
    pods: usize,
    time: Duration,
    /// Upper bound of the create phase.
    create_time: Duration,
    lists: usize,
    watch_events_per_client: usize,
}

impl Plan {
    fn new(quick: bool) -> Self {
        if quick {
            Self {
                pods: 200,
                time: Duration::from_millis(500),
                create_time: Duration::from_secs(60),
                lists: 3,
                watch_events_per_client: 10,
            }
        } else {
            Self {
                pods: 10_000,
                time: Duration::from_secs(5),
                create_time: Duration::from_secs(600),
                lists: 10,
                watch_events_per_client: 250,
            }
        }
    }
}

/// Everything measured through the API.
struct ApiMeasured {
    create: Samples,
    create_rate: f64,
    get: Samples,
    update: Samples,
    list: Samples,
    watch: Samples,
    list_bytes: usize,
    pod_bytes: usize,
    configmap_bytes: usize,
}

async fn measure_api(options: &Options, plan: &Plan) -> Result<(ApiMeasured, usize), BenchError> {
    let server = BenchServer::start(options).await?;
    let mut conns = server.connections(CLIENTS).await?;
    create_namespace(&mut conns[0], NAMESPACE).await?;
    let pods_path = format!("/api/v1/namespaces/{NAMESPACE}/pods");
    let configmaps_path = format!("/api/v1/namespaces/{NAMESPACE}/configmaps");

    // Create: the pods the list will return, in parallel.
    let per_client = plan.pods.div_ceil(CLIENTS);
    let pod_bytes = std::sync::atomic::AtomicUsize::new(0);
    let start = Instant::now();
    let runs = conns.iter_mut().enumerate().map(|(w, conn)| {
        let (pods_path, pod_bytes) = (&pods_path, &pod_bytes);
        let count = per_client.min(plan.pods.saturating_sub(w * per_client));
        timed_loop(
            start,
            Budget::new(count, plan.create_time),
            async move |i| {
                let body = to_bytes(&pod(&format!("pod-{w}-{i}")));
                let created = conn
                    .expect(Method::POST, pods_path, Some(body), StatusCode::CREATED)
                    .await?;
                pod_bytes.store(created.len(), std::sync::atomic::Ordering::Relaxed);
                Ok(())
            },
        )
    });
    let mut create = Samples::new();
    for samples in futures::future::try_join_all(runs).await? {
        create.extend(samples);
    }
    let create_rate = create.len() as f64 / start.elapsed().as_secs_f64();
    let pods = create.len();

    // Get: each client reads its own first pod.
    let start = Instant::now();
    let runs = conns.iter_mut().enumerate().map(|(w, conn)| {
        let path = format!("{pods_path}/pod-{w}-0");
        timed_loop(start, Budget::new(100_000, plan.time), async move |_| {
            conn.expect(Method::GET, &path, None, StatusCode::OK)
                .await
                .map(drop)
        })
    });
    let mut get = Samples::new();
    for samples in futures::future::try_join_all(runs).await? {
        get.extend(samples);
    }

    // Update: each client replaces its own ConfigMap, carrying the resourceVersion along.
    let configmap_bytes = std::sync::atomic::AtomicUsize::new(0);
    let start = Instant::now();
    let runs = conns.iter_mut().enumerate().map(|(w, conn)| {
        let (configmaps_path, configmap_bytes) = (&configmaps_path, &configmap_bytes);
        async move {
            let name = format!("update-{w}");
            let path = format!("{configmaps_path}/{name}");
            let created = conn
                .expect(
                    Method::POST,
                    configmaps_path,
                    Some(to_bytes(&configmap(&name, None, 0))),
                    StatusCode::CREATED,
                )
                .await?;
            configmap_bytes.store(created.len(), std::sync::atomic::Ordering::Relaxed);
            let mut rv = resource_version(&created)?;
            timed_loop(start, Budget::new(100_000, plan.time), async |i| {
                let body = to_bytes(&configmap(&name, Some(&rv), i + 1));
                let updated = conn
                    .expect(Method::PUT, &path, Some(body), StatusCode::OK)
                    .await?;
                rv = resource_version(&updated)?;
                Ok(())
            })
            .await
        }
    });
    let mut update = Samples::new();
    for samples in futures::future::try_join_all(runs).await? {
        update.extend(samples);
    }

    // List every pod, one request at a time.
    let mut list = Samples::new();
    let mut list_bytes = 0;
    for n in 0..plan.lists {
        let began = Instant::now();
        let body = conns[0]
            .expect(Method::GET, &pods_path, None, StatusCode::OK)
            .await?;
        list.push(began.elapsed());
        if n == 0 {
            list_bytes = body.len();
            let value: Value = serde_json::from_slice(&body)
                .map_err(|e| BenchError::Scenario(format!("list of pods is not JSON: {e}")))?;
            let items = value["items"].as_array().map_or(0, Vec::len);
            if items != pods {
                return Err(BenchError::Scenario(format!(
                    "list returned {items} pods, {pods} were created"
                )));
            }
        }
    }

    let watch = watch_through_api(&server.client, &mut conns, &configmaps_path, plan).await?;
    drop(conns);
    drop(server);
    let measured = ApiMeasured {
        create,
        create_rate,
        get,
        update,
        list,
        watch,
        list_bytes,
        pod_bytes: pod_bytes.into_inner(),
        configmap_bytes: configmap_bytes.into_inner(),
    };
    Ok((measured, pods))
}

/// Every client creates ConfigMaps one after the other; one watch of the namespace's
/// ConfigMaps tells each when its object was seen.
async fn watch_through_api(
    client: &ApiClient,
    conns: &mut [Connection],
    configmaps_path: &str,
    plan: &Plan,
) -> Result<Samples, BenchError> {
    let listed = conns[0]
        .expect(Method::GET, configmaps_path, None, StatusCode::OK)
        .await?;
    let rv = resource_version(&listed)?;
    let mut stream = client
        .connect()
        .await?
        .watch(&format!("{configmaps_path}?watch=1&resourceVersion={rv}"))
        .await?;
    let waiting: Arc<Mutex<HashMap<String, oneshot::Sender<Instant>>>> = Arc::default();
    let watcher = {
        let waiting = waiting.clone();
        tokio::spawn(async move {
            while let Ok(Some(event)) = stream.next().await {
                let seen = Instant::now();
                if event.kind == "ADDED"
                    && let Some(tx) = waiting
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .remove(&event.name)
                {
                    let _ = tx.send(seen);
                }
            }
        })
    };
    let start = Instant::now();
    let budget = Budget::new(
        plan.watch_events_per_client,
        plan.time.max(Duration::from_secs(1)) * 2,
    );
    let runs = conns.iter_mut().enumerate().map(|(w, conn)| {
        let waiting = waiting.clone();
        timed_loop(start, budget, async move |i| {
            let name = format!("watched-{w}-{i}");
            let (tx, rx) = oneshot::channel();
            waiting
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(name.clone(), tx);
            let body = to_bytes(&configmap(&name, None, i));
            conn.expect(
                Method::POST,
                configmaps_path,
                Some(body),
                StatusCode::CREATED,
            )
            .await?;
            tokio::time::timeout(Duration::from_secs(10), rx)
                .await
                .map_err(|_| {
                    BenchError::Scenario(format!(
                        "watch saw no ADDED for ConfigMap {name} within 10 s"
                    ))
                })?
                .map_err(|_| BenchError::Scenario("the watch stream ended".into()))?;
            Ok(())
        })
    });
    let result = futures::future::try_join_all(runs).await;
    watcher.abort();
    let mut all = Samples::new();
    for samples in result? {
        all.extend(samples);
    }
    Ok(all)
}

/// The same operations on the embedded store directly, with values of the size the API
/// server stored.
struct StoreMeasured {
    create: Samples,
    create_rate: f64,
    get: Samples,
    update: Samples,
    watch: Samples,
}

async fn measure_store(
    plan: &Plan,
    pods: usize,
    api: &ApiMeasured,
) -> Result<StoreMeasured, BenchError> {
    let embedded = EmbeddedStore::open()?;
    let store = embedded.store.as_ref();
    let pod_value = Bytes::from(vec![b'p'; api.pod_bytes.max(1)]);
    let cm_value = Bytes::from(vec![b'c'; api.configmap_bytes.max(1)]);
    let create_budget = Budget::new(pods.div_ceil(CLIENTS), plan.create_time);
    let (create, create_rate) = create_load(
        store,
        CLIENTS,
        "/registry/pods/bench",
        pod_value.clone(),
        create_budget,
    )
    .await?;
    let budget = Budget::new(100_000, plan.time);
    let get = get_load(store, CLIENTS, "/registry/pods/get", pod_value, budget).await?;
    let update = update_load(
        store,
        CLIENTS,
        "/registry/configmaps/update",
        cm_value.clone(),
        budget,
    )
    .await?;
    let watch_budget = Budget::new(
        plan.watch_events_per_client,
        plan.time.max(Duration::from_secs(1)) * 2,
    );
    let watch = watch_load(
        store,
        CLIENTS,
        "/registry/configmaps/watched",
        cm_value,
        watch_budget,
    )
    .await?;
    Ok(StoreMeasured {
        create,
        create_rate,
        get,
        update,
        watch,
    })
}

pub async fn run(options: &Options) -> Result<Vec<Figure>, BenchError> {
    let plan = Plan::new(options.quick);
    let (mut api, pods) = measure_api(options, &plan).await?;
    let mut alone = measure_store(&plan, pods, &api).await?;

    let mut figures = Vec::new();
    let mut latency = |op: &str,
                       what: &str,
                       ours: &mut Samples,
                       theirs: &mut Samples,
                       target_p99: Option<f64>| {
        for p in [50.0, 99.0] {
            let mut f = Figure::new(
                SCENARIO,
                &format!("api.{op}_p{p}_ms"),
                format!("{what} p{p}, {CLIENTS} clients over HTTPS keep-alive"),
                ours.percentile_ms(p),
                Unit::Millis,
            )
            .reference(STORE_ALONE, theirs.percentile_ms(p));
            if p == 99.0
                && let Some(limit) = target_p99
            {
                f = f.target(Target::AtMost(limit));
            }
            figures.push(f);
        }
    };
    latency(
        "get",
        "GET of a pod",
        &mut api.get,
        &mut alone.get,
        Some(2.0),
    );
    latency(
        "create",
        "create of a pod (fsync)",
        &mut api.create,
        &mut alone.create,
        Some(10.0),
    );
    latency(
        "update",
        "update of a ConfigMap",
        &mut api.update,
        &mut alone.update,
        None,
    );
    latency(
        "watch",
        "a create until a watch sees it",
        &mut api.watch,
        &mut alone.watch,
        Some(10.0),
    );
    figures.push(
        Figure::new(
            SCENARIO,
            "api.creates_per_s",
            format!("pod creates/s, {CLIENTS} clients"),
            api.create_rate,
            Unit::PerSecond,
        )
        .reference(STORE_ALONE, alone.create_rate),
    );
    figures.push(
        Figure::new(
            SCENARIO,
            "api.list_ms",
            format!(
                "list of {pods} pods in one namespace, {:.1} MiB of JSON (median of {})",
                api.list_bytes as f64 / crate::figure::MIB,
                api.list.len()
            ),
            api.list.median_ms(),
            Unit::Millis,
        )
        .target(Target::AtMost(150.0)),
    );
    Ok(figures)
}
