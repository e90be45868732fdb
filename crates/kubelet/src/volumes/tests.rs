//! Volume setup, mounts, teardown and environment against a small fake API server on loopback
//! (GETs of objects and lists from an in-memory map). Tests that mount need root and skip
//! otherwise.

use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::Full;
use k8s_openapi::api::core::v1::{Container, Pod};
use serde_json::{Value, json};

use super::*;

type Objects = Arc<Mutex<BTreeMap<String, Value>>>;

/// Serves `GET <path>` from `objects`, and lists for collection paths.
struct FakeApi {
    objects: Objects,
    port: u16,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeApi {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FakeApi {
    async fn start() -> FakeApi {
        let objects: Objects = Default::default();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let state = objects.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let state = state.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req| {
                        let state = state.clone();
                        async move { Ok::<_, std::convert::Infallible>(respond(&state, req)) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        FakeApi {
            objects,
            port,
            task,
        }
    }

    fn client(&self) -> kube::Client {
        let config = kube::Config::new(format!("http://127.0.0.1:{}", self.port).parse().unwrap());
        kube::Client::try_from(config).unwrap()
    }

    fn put(&self, path: &str, object: Value) {
        self.objects
            .lock()
            .unwrap()
            .insert(path.to_string(), object);
    }

    fn config_map(&self, ns: &str, name: &str, data: Value) {
        self.put(
            &format!("/api/v1/namespaces/{ns}/configmaps/{name}"),
            json!({"apiVersion": "v1", "kind": "ConfigMap",
                   "metadata": {"name": name, "namespace": ns}, "data": data}),
        );
    }

    fn secret(&self, ns: &str, name: &str, data: Value) {
        self.put(
            &format!("/api/v1/namespaces/{ns}/secrets/{name}"),
            json!({"apiVersion": "v1", "kind": "Secret",
                   "metadata": {"name": name, "namespace": ns}, "data": data}),
        );
    }

    fn service(&self, ns: &str, name: &str, ip: &str, ports: Value) {
        self.put(
            &format!("/api/v1/namespaces/{ns}/services/{name}"),
            json!({"apiVersion": "v1", "kind": "Service",
                   "metadata": {"name": name, "namespace": ns},
                   "spec": {"clusterIP": ip, "ports": ports}}),
        );
    }

    fn node(&self, name: &str, cpu: &str, memory: &str) {
        self.put(
            &format!("/api/v1/nodes/{name}"),
            json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": name},
                   "status": {"allocatable": {"cpu": cpu, "memory": memory}}}),
        );
    }
}

fn respond(
    state: &Objects,
    req: hyper::Request<hyper::body::Incoming>,
) -> hyper::Response<Full<Bytes>> {
    let path = req.uri().path().to_string();
    let objects = state.lock().unwrap();
    let (status, body) = match objects.get(&path) {
        Some(obj) => (200, obj.clone()),
        None => {
            let prefix = format!("{path}/");
            let items: Vec<Value> = objects
                .iter()
                .filter(|(k, _)| k.starts_with(&prefix) && !k[prefix.len()..].contains('/'))
                .map(|(_, v)| v.clone())
                .collect();
            if path.ends_with("s") && !items.is_empty() || path.ends_with("/services") {
                (
                    200,
                    json!({"apiVersion": "v1", "kind": "List", "metadata": {}, "items": items}),
                )
            } else {
                let name = path.rsplit('/').next().unwrap_or("");
                (
                    404,
                    json!({"apiVersion": "v1", "kind": "Status", "status": "Failure",
                           "reason": "NotFound", "code": 404,
                           "message": format!("{name:?} not found")}),
                )
            }
        }
    };
    hyper::Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap()
}

fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

fn pod(uid: &str, volumes: Value) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": "web-0", "namespace": "ns", "uid": uid,
                     "labels": {"app": "web", "tier": "front"}},
        "spec": {"nodeName": "node-a", "containers": [{"name": "app", "image": "busybox"}],
                 "volumes": volumes}
    }))
    .unwrap()
}

fn manager(api: &FakeApi, root: &Path) -> VolumeManager {
    VolumeManager::new(api.client(), root.join("pods"), "node-a".into())
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap()
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o7777
}

/// Unmounts whatever a failed test left under the temp dir.
struct Cleanup(PathBuf);

impl Drop for Cleanup {
    fn drop(&mut self) {
        if let Ok(mounts) = mount::mount_points_under(&self.0) {
            for m in mounts {
                let _ = mount::unmount(&m);
            }
        }
    }
}

#[tokio::test]
async fn empty_dir_on_disk_is_idempotent() {
    let api = FakeApi::start().await;
    let tmp = tempfile::tempdir().unwrap();
    let _c = Cleanup(tmp.path().to_path_buf());
    let vm = manager(&api, tmp.path());
    let p = pod("u1", json!([{"name": "cache", "emptyDir": {}}]));
    let vols = vm.setup(&p).await.unwrap();
    let cache = &vols.paths["cache"];
    assert_eq!(
        cache.host_path,
        tmp.path()
            .join("pods/u1/volumes/kubernetes.io~empty-dir/cache")
    );
    assert!(!cache.read_only);
    assert_eq!(mode(&cache.host_path), 0o777);
    std::fs::write(cache.host_path.join("f"), "kept").unwrap();
    let again = vm.setup(&p).await.unwrap();
    assert_eq!(again.paths["cache"], *cache);
    assert_eq!(read(&cache.host_path.join("f")), "kept");
    assert!(
        tmp.path()
            .join("pods/u1/plugins/kubernetes.io~empty-dir/cache/ready")
            .exists()
    );
    vm.teardown("u1").await.unwrap();
    assert!(!tmp.path().join("pods/u1").exists());
    vm.teardown("u1").await.unwrap();
}

#[tokio::test]
async fn memory_empty_dir_is_a_sized_tmpfs_mounted_once() {
    if !is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let api = FakeApi::start().await;
    let tmp = tempfile::tempdir().unwrap();
    let _c = Cleanup(tmp.path().to_path_buf());
    let vm = manager(&api, tmp.path());
    let p = pod(
        "u2",
        json!([{"name": "mem", "emptyDir": {"medium": "Memory", "sizeLimit": "2Mi"}}]),
    );
    let vols = vm.setup(&p).await.unwrap();
    let dir = &vols.paths["mem"].host_path;
    assert!(mount::is_mount_point(dir).unwrap());
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let canonical = std::fs::canonicalize(dir).unwrap();
    let lines: Vec<&str> = info
        .lines()
        .filter(|l| l.split(' ').nth(4) == Some(canonical.to_str().unwrap()))
        .collect();
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(
        lines[0].contains("tmpfs") && lines[0].contains("size=2048k"),
        "{}",
        lines[0]
    );
    vm.setup(&p).await.unwrap();
    let after = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert_eq!(
        after
            .lines()
            .filter(|l| l.split(' ').nth(4) == Some(canonical.to_str().unwrap()))
            .count(),
        1,
        "not mounted twice"
    );
    vm.teardown("u2").await.unwrap();
    assert!(mount::mount_points_under(tmp.path()).unwrap().is_empty());
    assert!(!tmp.path().join("pods/u2").exists());
}

#[tokio::test]
async fn host_path_types() {
    let api = FakeApi::start().await;
    let tmp = tempfile::tempdir().unwrap();
    let vm = manager(&api, tmp.path());
    let made = tmp.path().join("made");
    let missing = tmp.path().join("missing");
    let p = pod(
        "u3",
        json!([{"name": "made", "hostPath": {"path": made, "type": "DirectoryOrCreate"}}]),
    );
    let vols = vm.setup(&p).await.unwrap();
    assert!(made.is_dir());
    assert_eq!(vols.paths["made"].host_path, made);
    let p = pod(
        "u3",
        json!([{"name": "m", "hostPath": {"path": missing, "type": "Directory"}}]),
    );
    let err = vm.setup(&p).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "MountVolume.SetUp failed for volume \"m\" : hostPath type check failed: {} is not a directory",
            missing.display()
        )
    );
}

#[tokio::test]
async fn config_map_volume_follows_updates() {
    let api = FakeApi::start().await;
    let tmp = tempfile::tempdir().unwrap();
    let vm = manager(&api, tmp.path());
    let p = pod(
        "u4",
        json!([{"name": "config", "configMap": {"name": "app-config"}},
               {"name": "some", "configMap": {"name": "app-config", "defaultMode": 0o400,
                    "items": [{"key": "LEVEL", "path": "conf/level", "mode": 0o600},
                              {"key": "GREETING", "path": "greeting"}]}}]),
    );
    let err = vm.setup(&p).await.unwrap_err();
    assert!(matches!(err, VolumeError::NotReady { .. }));
    assert_eq!(
        err.to_string(),
        "MountVolume.SetUp failed for volume \"config\" : configmap \"app-config\" not found"
    );

    api.config_map(
        "ns",
        "app-config",
        json!({"GREETING": "hello", "LEVEL": "debug"}),
    );
    let vols = vm.setup(&p).await.unwrap();
    let dir = &vols.paths["config"].host_path;
    assert!(vols.paths["config"].read_only);
    assert_eq!(read(&dir.join("LEVEL")), "debug");
    assert_eq!(
        std::fs::read_link(dir.join("LEVEL")).unwrap(),
        Path::new("..data/LEVEL")
    );
    assert_eq!(mode(&dir.join("LEVEL")), 0o644);
    let some = &vols.paths["some"].host_path;
    assert_eq!(read(&some.join("conf/level")), "debug");
    assert_eq!(mode(&some.join("conf/level")), 0o600);
    assert_eq!(mode(&some.join("greeting")), 0o400);
    assert!(!some.join("LEVEL").exists());

    let version = std::fs::read_link(dir.join("..data")).unwrap();
    vm.setup(&p).await.unwrap();
    assert_eq!(
        std::fs::read_link(dir.join("..data")).unwrap(),
        version,
        "unchanged content is not rewritten"
    );

    api.config_map(
        "ns",
        "app-config",
        json!({"GREETING": "hello", "LEVEL": "info"}),
    );
    vm.setup(&p).await.unwrap();
    assert_eq!(read(&dir.join("LEVEL")), "info");
    assert_ne!(std::fs::read_link(dir.join("..data")).unwrap(), version);

    // Optional and missing: an empty volume.
    let p = pod(
        "u4b",
        json!([{"name": "opt", "configMap": {"name": "nope", "optional": true}}]),
    );
    let vols = vm.setup(&p).await.unwrap();
    assert!(vols.paths["opt"].host_path.join("..data").exists());
    vm.teardown("u4").await.unwrap();
    vm.teardown("u4b").await.unwrap();
}

#[tokio::test]
async fn secret_volume_decodes_data() {
    let api = FakeApi::start().await;
    let tmp = tempfile::tempdir().unwrap();
    let _c = Cleanup(tmp.path().to_path_buf());
    let vm = manager(&api, tmp.path());
    // "s3cr3t!" in base64, as the API carries it.
    api.secret("ns", "app-secret", json!({"PASSWORD": "czNjcjN0IQ=="}));
    let p = pod(
        "u5",
        json!([{"name": "secret", "secret": {"secretName": "app-secret"}},
               {"name": "missing", "secret": {"secretName": "nope", "optional": true}}]),
    );
    let vols = vm.setup(&p).await.unwrap();
    let dir = &vols.paths["secret"].host_path;
    assert_eq!(read(&dir.join("PASSWORD")), "s3cr3t!");
    assert_eq!(mode(&dir.join("PASSWORD")), 0o644);
    if is_root() {
        assert!(
            mount::is_mount_point(dir).unwrap(),
            "secrets live on a tmpfs"
        );
    }
    let p = pod(
        "u5",
        json!([{"name": "s", "secret": {"secretName": "app-secret",
                "items": [{"key": "TOKEN", "path": "t"}]}}]),
    );
    assert_eq!(
        vm.setup(&p).await.unwrap_err().to_string(),
        "MountVolume.SetUp failed for volume \"s\" : references non-existent secret key: TOKEN"
    );
    vm.teardown("u5").await.unwrap();
    assert!(mount::mount_points_under(tmp.path()).unwrap().is_empty());
    assert!(!tmp.path().join("pods/u5").exists());
}

#[tokio::test]
async fn downward_api_and_projected_volumes() {
    let api = FakeApi::start().await;
    let tmp = tempfile::tempdir().unwrap();
    let _c = Cleanup(tmp.path().to_path_buf());
    let vm = manager(&api, tmp.path());
    api.node("node-a", "4", "8Gi");
    api.config_map(
        "ns",
        "kube-root-ca.crt",
        json!({"ca.crt": "-----BEGIN CERTIFICATE-----"}),
    );
    let mut p = pod(
        "u6",
        json!([
            {"name": "info", "downwardAPI": {"items": [
                {"path": "labels", "fieldRef": {"fieldPath": "metadata.labels"}},
                {"path": "cpu_limit", "resourceFieldRef": {"containerName": "app",
                    "resource": "limits.cpu", "divisor": "1m"}}]}},
            {"name": "kube-api-access", "projected": {"defaultMode": 0o644, "sources": [
                {"serviceAccountToken": {"path": "token", "expirationSeconds": 3607}},
                {"configMap": {"name": "kube-root-ca.crt",
                               "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
                {"downwardAPI": {"items": [
                    {"path": "namespace", "fieldRef": {"apiVersion": "v1",
                                                       "fieldPath": "metadata.namespace"}}]}}]}}
        ]),
    );
    let vols = vm.setup(&p).await.unwrap();
    let info = &vols.paths["info"].host_path;
    assert_eq!(read(&info.join("labels")), "app=\"web\"\ntier=\"front\"");
    assert_eq!(read(&info.join("cpu_limit")), "4000");
    let access = &vols.paths["kube-api-access"].host_path;
    assert_eq!(read(&access.join("ca.crt")), "-----BEGIN CERTIFICATE-----");
    assert_eq!(read(&access.join("namespace")), "ns");
    assert!(!access.join("token").exists());

    // A label change reaches the file.
    p.metadata
        .labels
        .as_mut()
        .unwrap()
        .insert("version".into(), "2".into());
    vm.setup(&p).await.unwrap();
    assert_eq!(
        read(&info.join("labels")),
        "app=\"web\"\ntier=\"front\"\nversion=\"2\""
    );
    vm.teardown("u6").await.unwrap();
}

#[tokio::test]
async fn persistent_volume_claims() {
    let api = FakeApi::start().await;
    let tmp = tempfile::tempdir().unwrap();
    let vm = manager(&api, tmp.path());
    let pv_dir = tmp.path().join("storage/pvc-1");
    let claim = |phase: &str| {
        json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
               "metadata": {"name": "data", "namespace": "ns", "uid": "c1"},
               "spec": {"volumeName": "pvc-1"}, "status": {"phase": phase}})
    };
    let p = pod(
        "u7",
        json!([{"name": "data", "persistentVolumeClaim": {"claimName": "data", "readOnly": true}}]),
    );
    assert_eq!(
        vm.setup(&p).await.unwrap_err().to_string(),
        "MountVolume.SetUp failed for volume \"data\" : persistentvolumeclaim \"data\" not found"
    );
    api.put(
        "/api/v1/namespaces/ns/persistentvolumeclaims/data",
        claim("Pending"),
    );
    assert!(
        vm.setup(&p)
            .await
            .unwrap_err()
            .to_string()
            .contains("has non-bound phase (\"Pending\")")
    );
    api.put(
        "/api/v1/namespaces/ns/persistentvolumeclaims/data",
        claim("Bound"),
    );
    api.put(
        "/api/v1/persistentvolumes/pvc-1",
        json!({"apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": "pvc-1"},
               "spec": {"hostPath": {"path": pv_dir}, "claimRef": {"uid": "c1"}}}),
    );
    let vols = vm.setup(&p).await.unwrap();
    assert_eq!(
        vols.paths["data"],
        VolumePath {
            host_path: pv_dir.clone(),
            read_only: true
        }
    );
    assert_eq!(mode(&pv_dir), 0o777);
    std::fs::write(pv_dir.join("file"), "persisted").unwrap();
    vm.teardown("u7").await.unwrap();
    assert_eq!(read(&pv_dir.join("file")), "persisted", "PV data survives");
}

fn container(mounts: Value, env: Value) -> Container {
    serde_json::from_value(json!({"name": "app", "volumeMounts": mounts, "env": env})).unwrap()
}

#[tokio::test]
async fn container_mounts_with_sub_paths() {
    let api = FakeApi::start().await;
    let tmp = tempfile::tempdir().unwrap();
    let vm = manager(&api, tmp.path());
    api.config_map("ns", "cfg", json!({"app.conf": "x=1"}));
    let p = pod(
        "u8",
        json!([{"name": "cache", "emptyDir": {}}, {"name": "cfg", "configMap": {"name": "cfg"}}]),
    );
    let vols = vm.setup(&p).await.unwrap();
    let cache = vols.paths["cache"].host_path.clone();
    let c = container(
        json!([
            {"name": "cache", "mountPath": "/cache"},
            {"name": "cache", "mountPath": "/logs", "subPathExpr": "logs/$(POD_NAME)",
             "mountPropagation": "HostToContainer"},
            {"name": "cfg", "mountPath": "/etc/app.conf", "subPath": "app.conf"},
            {"name": "cache", "mountPath": "/ro", "readOnly": true, "subPath": "ro"}
        ]),
        json!([{"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}]),
    );
    let mounts = vm.container_mounts(&p, &c, &vols).unwrap();
    let canonical = std::fs::canonicalize(&cache).unwrap();
    assert_eq!(mounts.len(), 4);
    assert_eq!(mounts[0].host_path, cache);
    assert!(!mounts[0].read_only);
    assert_eq!(mounts[0].propagation, None);
    assert_eq!(mounts[1].host_path, canonical.join("logs/web-0"));
    assert!(mounts[1].host_path.is_dir());
    assert_eq!(mounts[1].propagation.as_deref(), Some("HostToContainer"));
    assert_eq!(read(&mounts[2].host_path), "x=1");
    assert!(mounts[2].read_only, "configMap volumes are read-only");
    assert!(mounts[3].read_only);
    assert_eq!(mounts[3].container_path, "/ro");

    let bad = |m: Value| {
        vm.container_mounts(&p, &container(m, json!([])), &vols)
            .unwrap_err()
    };
    let err = bad(json!([{"name": "nope", "mountPath": "/x"}]));
    assert!(matches!(err, VolumeError::Invalid { .. }));
    assert!(err.to_string().contains("cannot find volume \"nope\""));
    assert!(
        bad(json!([{"name": "cache", "mountPath": "/x", "subPath": "../../etc"}]))
            .to_string()
            .contains("must not contain '..'")
    );
    assert!(
        bad(json!([{"name": "cache", "mountPath": "/x", "subPath": "/etc"}]))
            .to_string()
            .contains("must not be an absolute path")
    );
    std::os::unix::fs::symlink("/etc", cache.join("evil")).unwrap();
    assert!(
        bad(json!([{"name": "cache", "mountPath": "/x", "subPath": "evil"}]))
            .to_string()
            .contains("failed to prepare subPath")
    );
    assert!(
        bad(json!([{"name": "cache", "mountPath": "/x", "subPathExpr": "$(UNSET)"}]))
            .to_string()
            .contains("missing value for UNSET")
    );
    vm.teardown("u8").await.unwrap();
}

#[tokio::test]
async fn fs_group_owns_volumes() {
    if !is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let api = FakeApi::start().await;
    let tmp = tempfile::tempdir().unwrap();
    let _c = Cleanup(tmp.path().to_path_buf());
    let vm = manager(&api, tmp.path());
    api.config_map("ns", "cfg", json!({"k": "v"}));
    let mut p = pod(
        "u9",
        json!([{"name": "cache", "emptyDir": {}}, {"name": "cfg", "configMap": {"name": "cfg"}}]),
    );
    p.spec.as_mut().unwrap().security_context =
        Some(serde_json::from_value(json!({"fsGroup": 2345})).unwrap());
    let vols = vm.setup(&p).await.unwrap();
    let cache = &vols.paths["cache"].host_path;
    assert_eq!(std::fs::metadata(cache).unwrap().gid(), 2345);
    assert_eq!(mode(cache) & 0o2000, 0o2000, "setgid");
    let cfg = &vols.paths["cfg"].host_path;
    assert_eq!(std::fs::metadata(cfg.join("k")).unwrap().gid(), 2345);
    assert_eq!(mode(&cfg.join("k")), 0o644);
    vm.teardown("u9").await.unwrap();
}

#[tokio::test]
async fn teardown_rejects_paths() {
    let api = FakeApi::start().await;
    let tmp = tempfile::tempdir().unwrap();
    let vm = manager(&api, tmp.path());
    assert!(vm.teardown("../x").await.is_err());
    assert!(vm.teardown("").await.is_err());
    vm.teardown("never-existed").await.unwrap();
}

fn env_ctx() -> env::EnvContext {
    env::EnvContext {
        node_name: "node-a".into(),
        node_ip: "192.168.1.5".parse().unwrap(),
        pod_ips: vec!["10.42.0.9".parse().unwrap()],
    }
}

#[tokio::test]
async fn container_environment() {
    let api = FakeApi::start().await;
    let client = api.client();
    api.service(
        "default",
        "kubernetes",
        "10.43.0.1",
        json!([{"name": "https", "port": 443}]),
    );
    api.service("ns", "db", "10.43.0.20", json!([{"port": 5432}]));
    api.service("ns", "headless", "None", json!([{"port": 80}]));
    api.node("node-a", "2", "4Gi");
    api.config_map(
        "ns",
        "app-config",
        json!({"GREETING": "hello", "LEVEL": "debug", "bad=key": "x"}),
    );
    api.secret("ns", "app-secret", json!({"PASSWORD": "czNjcjN0IQ=="}));
    let mut p = pod("u10", json!([]));
    let c: Container = serde_json::from_value(json!({
        "name": "app",
        "envFrom": [{"configMapRef": {"name": "app-config"}},
                    {"prefix": "S_", "secretRef": {"name": "app-secret"}},
                    {"configMapRef": {"name": "gone", "optional": true}}],
        "env": [
            {"name": "LEVEL", "value": "override"},
            {"name": "PASSWORD", "valueFrom": {"secretKeyRef": {"name": "app-secret", "key": "PASSWORD"}}},
            {"name": "URL", "value": "http://$(DB_SERVICE_HOST):$(DB_SERVICE_PORT)/$(GREETING)$$(X)"},
            {"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
            {"name": "IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
            {"name": "MEM", "valueFrom": {"resourceFieldRef": {"resource": "limits.memory", "divisor": "1Mi"}}},
            {"name": "OPT", "valueFrom": {"configMapKeyRef": {"name": "app-config", "key": "NOPE", "optional": true}}}
        ]
    }))
    .unwrap();
    let env = env::container_env(&client, &p, &c, &env_ctx())
        .await
        .unwrap();
    let get = |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    assert_eq!(get("KUBERNETES_SERVICE_HOST"), Some("10.43.0.1"));
    assert_eq!(get("KUBERNETES_SERVICE_PORT"), Some("443"));
    assert_eq!(get("KUBERNETES_PORT_443_TCP"), Some("tcp://10.43.0.1:443"));
    assert_eq!(get("DB_SERVICE_HOST"), Some("10.43.0.20"));
    assert_eq!(get("HEADLESS_SERVICE_HOST"), None);
    assert_eq!(get("GREETING"), Some("hello"));
    assert_eq!(get("LEVEL"), Some("override"));
    assert_eq!(get("bad=key"), None);
    assert_eq!(get("S_PASSWORD"), Some("s3cr3t!"));
    assert_eq!(get("PASSWORD"), Some("s3cr3t!"));
    assert_eq!(get("URL"), Some("http://10.43.0.20:5432/hello$(X)"));
    assert_eq!(get("NODE"), Some("node-a"));
    assert_eq!(get("IP"), Some("10.42.0.9"));
    assert_eq!(get("MEM"), Some("4096"));
    assert_eq!(get("OPT"), None);
    // Service variables first, then envFrom, then env.
    let pos = |k: &str| env.iter().position(|(n, _)| n == k).unwrap();
    assert!(pos("KUBERNETES_SERVICE_HOST") < pos("GREETING"));
    assert!(pos("GREETING") < pos("PASSWORD"));
    assert!(pos("PASSWORD") < pos("URL"));

    // enableServiceLinks: false keeps only the master service.
    p.spec.as_mut().unwrap().enable_service_links = Some(false);
    let env = env::container_env(&client, &p, &c, &env_ctx())
        .await
        .unwrap();
    assert!(env.iter().any(|(k, _)| k == "KUBERNETES_SERVICE_HOST"));
    assert!(!env.iter().any(|(k, _)| k == "DB_SERVICE_HOST"));
}

#[tokio::test]
async fn container_environment_errors() {
    let api = FakeApi::start().await;
    let client = api.client();
    api.config_map("ns", "cfg", json!({"A": "1"}));
    api.secret("ns", "sec", json!({}));
    let p = pod("u11", json!([]));
    let with_env = |env: Value| -> Container {
        serde_json::from_value(json!({"name": "app", "env": env})).unwrap()
    };
    let err = |c: Container| {
        let client = client.clone();
        let p = p.clone();
        async move {
            env::container_env(&client, &p, &c, &env_ctx())
                .await
                .unwrap_err()
                .to_string()
        }
    };
    assert_eq!(
        err(with_env(json!([{"name": "X", "valueFrom": {"configMapKeyRef": {"name": "missing", "key": "A"}}}]))).await,
        "configmap \"missing\" not found"
    );
    assert_eq!(
        err(with_env(
            json!([{"name": "X", "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "B"}}}])
        ))
        .await,
        "couldn't find key B in ConfigMap ns/cfg"
    );
    assert_eq!(
        err(with_env(
            json!([{"name": "X", "valueFrom": {"secretKeyRef": {"name": "sec", "key": "K"}}}])
        ))
        .await,
        "couldn't find key K in Secret ns/sec"
    );
    assert_eq!(
        err(with_env(
            json!([{"name": "X", "valueFrom": {"secretKeyRef": {"name": "nosec", "key": "K"}}}])
        ))
        .await,
        "secret \"nosec\" not found"
    );
    let from: Container = serde_json::from_value(
        json!({"name": "app", "envFrom": [{"secretRef": {"name": "nosec"}}]}),
    )
    .unwrap();
    assert_eq!(err(from).await, "secret \"nosec\" not found");
}

/// The pod worker spawns these futures: they must be `Send`.
#[allow(dead_code)]
fn futures_are_send(
    vm: &VolumeManager,
    pod: &Pod,
    c: &Container,
    client: &kube::Client,
    ctx: &env::EnvContext,
) {
    fn is_send<T: Send>(_: T) {}
    is_send(vm.setup(pod));
    is_send(vm.teardown("x"));
    is_send(env::container_env(client, pod, c, ctx));
}
