//! The node agent's volume setup and container environment against a real `rkube server`
//! (no agent): ConfigMaps, Secrets, Services and a bound local PersistentVolume are created with
//! kubectl, and the kubelet's `VolumeManager` / `container_env` read them through the API.

mod support;

use std::path::Path;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, Pod};
use kubelet::volumes::{VolumeError, VolumeManager, env};
use serde_json::json;
use support::{Server, eventually};

async fn client(server: &Server) -> kube::Client {
    let kubeconfig = kube::config::Kubeconfig::read_from(server.kubeconfig()).expect("kubeconfig");
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .expect("client config");
    kube::Client::try_from(config).expect("client")
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

#[tokio::test(flavor = "multi_thread")]
async fn volumes_and_environment_from_the_api() {
    let server = Server::start();
    let client = client(&server).await;
    let tmp = tempfile::tempdir().unwrap();
    let vm = VolumeManager::new(client.clone(), tmp.path().join("pods"), "node-a".into());

    server.kubectl_ok(&[
        "create",
        "configmap",
        "app-config",
        "--from-literal=GREETING=hello",
        "--from-literal=LEVEL=debug",
    ]);
    server.kubectl_ok(&[
        "create",
        "secret",
        "generic",
        "app-secret",
        "--from-literal=PASSWORD=s3cr3t!",
    ]);
    server.kubectl_ok(&["create", "service", "clusterip", "db", "--tcp=5432:5432"]);

    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": "configured", "namespace": "default", "uid": "vol-test-1",
                     "labels": {"app": "configured"}},
        "spec": {
            "nodeName": "node-a",
            "containers": [{
                "name": "app", "image": "busybox",
                "envFrom": [{"configMapRef": {"name": "app-config"}}],
                "env": [
                    {"name": "PASSWORD", "valueFrom": {"secretKeyRef": {"name": "app-secret", "key": "PASSWORD"}}},
                    {"name": "DB", "value": "$(DB_SERVICE_HOST):$(DB_SERVICE_PORT)"}
                ],
                "volumeMounts": [
                    {"name": "config", "mountPath": "/etc/config"},
                    {"name": "secret", "mountPath": "/etc/secret", "readOnly": true},
                    {"name": "info", "mountPath": "/etc/info"}
                ]
            }],
            "volumes": [
                {"name": "config", "configMap": {"name": "app-config"}},
                {"name": "secret", "secret": {"secretName": "app-secret"}},
                {"name": "info", "downwardAPI": {"items": [
                    {"path": "labels", "fieldRef": {"fieldPath": "metadata.labels"}}]}}
            ]
        }
    }))
    .unwrap();

    let volumes = vm.setup(&pod).await.expect("volumes set up");
    let config = &volumes.paths["config"].host_path;
    assert_eq!(read(&config.join("LEVEL")), "debug");
    assert_eq!(
        read(&volumes.paths["secret"].host_path.join("PASSWORD")),
        "s3cr3t!"
    );
    assert_eq!(
        read(&volumes.paths["info"].host_path.join("labels")),
        "app=\"configured\""
    );

    let container: &Container = &pod.spec.as_ref().unwrap().containers[0];
    let mounts = vm.container_mounts(&pod, container, &volumes).unwrap();
    assert_eq!(mounts.len(), 3);
    assert!(mounts.iter().all(|m| m.read_only));

    let ctx = env::EnvContext {
        node_name: "node-a".into(),
        node_ip: "127.0.0.1".parse().unwrap(),
        pod_ips: vec!["10.42.0.5".parse().unwrap()],
    };
    let vars = env::container_env(&client, &pod, container, &ctx)
        .await
        .expect("env");
    let get = |k: &str| vars.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    assert_eq!(get("GREETING").as_deref(), Some("hello"));
    assert_eq!(get("PASSWORD").as_deref(), Some("s3cr3t!"));
    assert_eq!(get("KUBERNETES_SERVICE_PORT").as_deref(), Some("443"));
    assert!(get("KUBERNETES_SERVICE_HOST").is_some_and(|h| !h.is_empty()));
    let db_ip = server
        .kubectl_ok(&["get", "service", "db", "-o", "jsonpath={.spec.clusterIP}"])
        .trim()
        .to_string();
    assert_eq!(get("DB"), Some(format!("{db_ip}:5432")));

    // A ConfigMap update reaches the file on the next setup.
    server.apply(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: app-config\n  namespace: default\ndata:\n  GREETING: hello\n  LEVEL: info\n",
    );
    vm.setup(&pod).await.expect("volumes refreshed");
    assert_eq!(read(&config.join("LEVEL")), "info");

    // A missing source is a FailedMount the kubelet retries.
    server.kubectl_ok(&["delete", "secret", "app-secret"]);
    match vm.setup(&pod).await {
        Err(VolumeError::NotReady { volume, message }) => {
            assert_eq!(volume, "secret");
            assert_eq!(message, "secret \"app-secret\" not found");
        }
        other => panic!("expected NotReady, got {other:?}"),
    }
    let err = env::container_env(&client, &pod, container, &ctx)
        .await
        .unwrap_err();
    assert_eq!(err.to_string(), "secret \"app-secret\" not found");

    vm.teardown("vol-test-1").await.unwrap();
    assert!(!tmp.path().join("pods/vol-test-1").exists());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_bound_local_volume_keeps_its_data() {
    let server = Server::start();
    let client = client(&server).await;
    let tmp = tempfile::tempdir().unwrap();
    let vm = VolumeManager::new(client.clone(), tmp.path().join("pods"), "node-a".into());
    let data_dir = tmp.path().join("storage/pv-vol-test");

    server.apply(&format!(
        r#"apiVersion: v1
kind: PersistentVolume
metadata:
  name: pv-vol-test
spec:
  capacity: {{storage: 64Mi}}
  accessModes: [ReadWriteOnce]
  storageClassName: ""
  claimRef: {{namespace: default, name: data}}
  local: {{path: "{}"}}
  nodeAffinity:
    required:
      nodeSelectorTerms:
      - matchExpressions:
        - {{key: kubernetes.io/hostname, operator: In, values: [node-a]}}
---
apiVersion: v1
kind: PersistentVolumeClaim
metadata:
  name: data
  namespace: default
spec:
  accessModes: [ReadWriteOnce]
  storageClassName: ""
  volumeName: pv-vol-test
  resources: {{requests: {{storage: 64Mi}}}}
"#,
        data_dir.display()
    ));
    let pod = |uid: &str| -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": "writer", "namespace": "default", "uid": uid},
            "spec": {"containers": [{"name": "w", "image": "busybox"}],
                     "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": "data"}}]}
        }))
        .unwrap()
    };
    eventually(Duration::from_secs(30), "pvc data bound", || {
        let phase = server.kubectl_ok(&["get", "pvc", "data", "-o", "jsonpath={.status.phase}"]);
        (phase.trim() == "Bound").then_some(())
    });

    let volumes = vm.setup(&pod("pvc-pod-1")).await.expect("claim set up");
    assert_eq!(volumes.paths["data"].host_path, data_dir);
    assert!(!volumes.paths["data"].read_only);
    std::fs::write(data_dir.join("file"), "persisted").unwrap();
    vm.teardown("pvc-pod-1").await.unwrap();

    let volumes = vm
        .setup(&pod("pvc-pod-2"))
        .await
        .expect("claim set up again");
    assert_eq!(
        read(&volumes.paths["data"].host_path.join("file")),
        "persisted"
    );
    vm.teardown("pvc-pod-2").await.unwrap();
}
