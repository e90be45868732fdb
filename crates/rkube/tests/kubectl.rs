//! End to end: the real `kubectl` against a started `rkube server` (embedded store).

mod support;

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;
use support::{Server, eventually, seed_manifests};

#[test]
fn builtin_namespaces_and_kubernetes_service_exist() {
    let server = Server::start();
    let out = server.kubectl_ok(&["get", "namespaces"]);
    let header = out.lines().next().unwrap();
    assert!(
        header.starts_with("NAME") && header.contains("STATUS") && header.contains("AGE"),
        "{out}"
    );
    for ns in ["default", "kube-system", "kube-public", "kube-node-lease"] {
        assert!(
            out.lines()
                .any(|l| l.starts_with(ns) && l.contains("Active")),
            "{ns} missing:\n{out}"
        );
    }
    let err = server.kubectl_err(&["delete", "namespace", "kube-system"]);
    assert!(err.contains("this namespace may not be deleted"), "{err}");
    let svc = server.kubectl_ok(&["get", "service", "kubernetes", "-n", "default"]);
    assert!(
        svc.contains("10.43.0.1") && svc.contains("443/TCP"),
        "{svc}"
    );
    let version = server.kubectl_ok(&["version", "-o", "json"]);
    let version: Value = serde_json::from_str(&version).unwrap();
    assert_eq!(version["serverVersion"]["major"], "1");
}

#[test]
fn seed_manifests_apply_and_get_with_columns() {
    let server = Server::start();
    let dir = seed_manifests();
    let out = server.kubectl_ok(&["apply", "-f", dir.to_str().unwrap()]);
    assert!(
        out.contains("deployment.apps/nginx-deployment created"),
        "{out}"
    );
    assert!(out.contains("service/flask-app-service created"), "{out}");

    let deploys = server.kubectl_ok(&["get", "deployments"]);
    let header: Vec<&str> = deploys.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(
        header,
        ["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"],
        "{deploys}"
    );
    assert!(
        deploys.contains("nginx-deployment") && deploys.contains("0/3"),
        "{deploys}"
    );

    let wide = server.kubectl_ok(&["get", "deployment", "nginx-deployment", "-o", "wide"]);
    assert!(
        wide.contains("CONTAINERS") && wide.contains("nginx:1.14.2") && wide.contains("app=nginx"),
        "{wide}"
    );

    let svc = server.kubectl_ok(&["get", "svc", "flask-app-service"]);
    let header: Vec<&str> = svc.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(
        header,
        [
            "NAME",
            "TYPE",
            "CLUSTER-IP",
            "EXTERNAL-IP",
            "PORT(S)",
            "AGE"
        ],
        "{svc}"
    );
    assert!(
        svc.contains("LoadBalancer") && svc.contains("80:3"),
        "{svc}"
    );

    let deploy = server.get_json(&["deployment", "nginx-deployment"]);
    assert_eq!(
        deploy["spec"]["strategy"]["type"], "RollingUpdate",
        "defaults applied"
    );
    assert_eq!(deploy["metadata"]["generation"], 1);
    assert!(
        deploy["metadata"]["uid"]
            .as_str()
            .is_some_and(|u| u.len() == 36)
    );
    let name = server.kubectl_ok(&[
        "get",
        "deploy",
        "nginx-deployment",
        "-o",
        "jsonpath={.spec.template.spec.containers[0].image}",
    ]);
    assert_eq!(name, "nginx:1.14.2");
    let yaml = server.kubectl_ok(&["get", "deploy", "nginx-deployment", "-o", "yaml"]);
    assert!(
        yaml.contains("kind: Deployment") && yaml.contains("replicas: 3"),
        "{yaml}"
    );

    // Applying again changes nothing.
    let again = server.kubectl_ok(&["apply", "-f", dir.to_str().unwrap()]);
    assert!(
        again.contains("deployment.apps/nginx-deployment unchanged"),
        "{again}"
    );
}

#[test]
fn label_annotate_patch_scale_set_image() {
    let server = Server::start();
    server.kubectl_ok(&[
        "create",
        "deployment",
        "web",
        "--image=nginx:1.14.2",
        "--replicas=2",
    ]);
    server.kubectl_ok(&["label", "deployment", "web", "tier=frontend"]);
    server.kubectl_ok(&["annotate", "deployment", "web", "owner=team-a"]);
    let d = server.get_json(&["deploy", "web"]);
    assert_eq!(d["metadata"]["labels"]["tier"], "frontend");
    assert_eq!(d["metadata"]["annotations"]["owner"], "team-a");
    let selected = server.kubectl_ok(&["get", "deploy", "-l", "tier=frontend", "-o", "name"]);
    assert_eq!(selected.trim(), "deployment.apps/web");
    let none = server.kubectl_ok(&["get", "deploy", "-l", "tier notin (frontend)", "-o", "name"]);
    assert_eq!(none.trim(), "");
    server.kubectl_ok(&["label", "deployment", "web", "tier-"]);
    assert!(
        server.get_json(&["deploy", "web"])["metadata"]["labels"]
            .get("tier")
            .is_none()
    );

    server.kubectl_ok(&["scale", "deployment", "web", "--replicas=5"]);
    assert_eq!(server.get_json(&["deploy", "web"])["spec"]["replicas"], 5);

    server.kubectl_ok(&["set", "image", "deployment/web", "nginx=nginx:1.16.1"]);
    let d = server.get_json(&["deploy", "web"]);
    assert_eq!(
        d["spec"]["template"]["spec"]["containers"][0]["image"],
        "nginx:1.16.1"
    );
    assert_eq!(
        d["metadata"]["generation"], 3,
        "scale and set image each bump the generation"
    );

    server.kubectl_ok(&[
        "patch",
        "deployment",
        "web",
        "--type=merge",
        "-p",
        r#"{"spec":{"replicas":1}}"#,
    ]);
    server.kubectl_ok(&[
        "patch",
        "deployment",
        "web",
        "--type=json",
        "-p",
        r#"[{"op":"add","path":"/metadata/labels/patched","value":"json"}]"#,
    ]);
    server.kubectl_ok(&[
        "patch",
        "deployment",
        "web",
        "-p",
        r#"{"spec":{"template":{"spec":{"containers":[{"name":"sidecar","image":"busybox:1.36"}]}}}}"#,
    ]);
    let d = server.get_json(&["deploy", "web"]);
    assert_eq!(d["spec"]["replicas"], 1);
    assert_eq!(d["metadata"]["labels"]["patched"], "json");
    let names: Vec<&str> = d["spec"]["template"]["spec"]["containers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert!(
        names.contains(&"nginx") && names.contains(&"sidecar"),
        "strategic merge keeps both containers: {names:?}"
    );
    let err = server.kubectl_err(&[
        "patch",
        "deployment",
        "web",
        "--type=json",
        "-p",
        r#"[{"op":"test","path":"/spec/replicas","value":7}]"#,
    ]);
    assert!(!err.is_empty());
}

#[test]
fn stale_update_conflicts_and_unknown_fields_are_rejected() {
    let server = Server::start();
    server.kubectl_ok(&["create", "configmap", "settings", "--from-literal=a=1"]);
    let stale = server.kubectl_ok(&["get", "configmap", "settings", "-o", "json"]);
    server.kubectl_ok(&[
        "patch",
        "configmap",
        "settings",
        "-p",
        r#"{"data":{"a":"2"}}"#,
    ]);
    let mut obj: Value = serde_json::from_str(&stale).unwrap();
    obj["data"]["a"] = "3".into();
    let out = server.kubectl_stdin(&["replace", "-f", "-"], &obj.to_string());
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("the object has been modified"), "{err}");
    assert_eq!(
        server.get_json(&["cm", "settings"])["data"]["a"],
        "2",
        "a rejected write changes nothing"
    );

    let bad = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: bad\nbogus: 1\ndata:\n  a: b\n";
    let out = server.kubectl_stdin(&["apply", "-f", "-"], bad);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("unknown field \"bogus\""), "{err}");
    assert!(
        !server.kubectl(&["get", "cm", "bad"]).status.success(),
        "nothing was created"
    );

    let invalid = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: Not_Valid\n";
    let err =
        String::from_utf8_lossy(&server.kubectl_stdin(&["create", "-f", "-"], invalid).stderr)
            .into_owned();
    assert!(
        err.contains("is invalid") && err.contains("metadata.name"),
        "{err}"
    );
}

#[test]
fn watch_streams_changes() {
    let server = Server::start();
    server.kubectl_ok(&["create", "configmap", "watched", "--from-literal=k=v"]);
    let mut child = server
        .kubectl_cmd(&["get", "configmaps", "-w", "-o", "name"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let first = rx
        .recv_timeout(Duration::from_secs(10))
        .expect("initial list");
    assert!(first.contains("configmap/"), "{first}");
    std::thread::sleep(Duration::from_millis(300));
    server.kubectl_ok(&["create", "configmap", "fresh", "--from-literal=k=v"]);
    let seen = eventually(
        Duration::from_secs(10),
        "watch event for the new configmap",
        || {
            rx.recv_timeout(Duration::from_millis(200))
                .ok()
                .filter(|l| l.contains("fresh"))
        },
    );
    assert_eq!(seen, "configmap/fresh");
    child.kill().unwrap();
    child.wait().unwrap();
}

#[test]
fn create_describe_delete_and_finalizers() {
    let server = Server::start();
    server.kubectl_ok(&["create", "namespace", "team"]);
    server.kubectl_ok(&[
        "create",
        "secret",
        "generic",
        "creds",
        "-n",
        "team",
        "--from-literal=password=s3cret",
    ]);
    let secret = server.get_json(&["secret", "creds", "-n", "team"]);
    assert_eq!(secret["type"], "Opaque");
    assert_eq!(secret["data"]["password"], "czNjcmV0");
    let secrets = server.kubectl_ok(&["get", "secrets", "-n", "team"]);
    assert!(
        secrets.lines().next().unwrap().contains("TYPE") && secrets.contains("creds"),
        "{secrets}"
    );

    server.kubectl_ok(&[
        "create",
        "deployment",
        "api",
        "-n",
        "team",
        "--image=nginx:1.14.2",
    ]);
    let described = server.kubectl_ok(&["describe", "deployment", "api", "-n", "team"]);
    assert!(
        described.contains("Name:")
            && described.contains("api")
            && described.contains("nginx:1.14.2"),
        "{described}"
    );

    let held = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: held\n  finalizers: [example.com/hold]\n";
    server.apply(held);
    server.kubectl_ok(&["delete", "configmap", "held", "--wait=false"]);
    let cm = server.get_json(&["cm", "held"]);
    assert!(
        cm["metadata"]["deletionTimestamp"].is_string(),
        "finalizer keeps the object: {cm}"
    );
    server.kubectl_ok(&[
        "patch",
        "configmap",
        "held",
        "--type=merge",
        "-p",
        r#"{"metadata":{"finalizers":null}}"#,
    ]);
    eventually(
        Duration::from_secs(5),
        "configmap gone after its finalizer",
        || (!server.kubectl(&["get", "cm", "held"]).status.success()).then_some(()),
    );

    server.kubectl_ok(&[
        "delete",
        "deployment",
        "api",
        "-n",
        "team",
        "--cascade=background",
    ]);
    let err = server.kubectl_err(&["get", "deployment", "api", "-n", "team"]);
    assert!(
        err.contains("NotFound") || err.contains("not found"),
        "{err}"
    );
    let err = server.kubectl_err(&["create", "configmap", "x", "-n", "nowhere"]);
    assert!(err.contains("namespaces \"nowhere\" not found"), "{err}");
}

#[test]
fn dry_run_diff_explain_and_discovery() {
    let server = Server::start();
    let manifest = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: dry\ndata:\n  a: b\n";
    let out = server.kubectl_stdin(&["apply", "--dry-run=server", "-f", "-"], manifest);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("(server dry run)"));
    assert!(
        !server.kubectl(&["get", "cm", "dry"]).status.success(),
        "dry run stores nothing"
    );

    server.apply(manifest);
    let changed = manifest.replace("a: b", "a: c");
    let out = server.kubectl_stdin(&["diff", "-f", "-"], &changed);
    assert_eq!(
        out.status.code(),
        Some(1),
        "diff exits 1 on differences: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let diff = String::from_utf8_lossy(&out.stdout);
    assert!(
        diff.contains("-  a: b") && diff.contains("+  a: c"),
        "{diff}"
    );

    let explain = server.kubectl_ok(&["explain", "deployment.spec.replicas"]);
    assert!(
        explain.contains("replicas") && explain.contains("integer"),
        "{explain}"
    );
    let resources = server.kubectl_ok(&["api-resources"]);
    for expected in [
        "deployments",
        "deploy",
        "horizontalpodautoscalers",
        "priorityclasses",
        "leases",
    ] {
        assert!(
            resources.contains(expected),
            "{expected} missing:\n{resources}"
        );
    }
    let versions = server.kubectl_ok(&["api-versions"]);
    assert!(
        versions.contains("apps/v1")
            && versions.contains("autoscaling/v2")
            && versions.contains("v1"),
        "{versions}"
    );
    let metrics = server.kubectl_ok(&["get", "--raw", "/metrics"]);
    assert!(metrics.contains("apiserver_request_total"), "{metrics}");
}

#[test]
fn edit_with_an_editor() {
    let server = Server::start();
    server.kubectl_ok(&[
        "create",
        "configmap",
        "editable",
        "--from-literal=color=blue",
    ]);
    let editor = server.data_dir.path().join("editor.sh");
    std::fs::write(
        &editor,
        "#!/bin/sh\nsed -i 's/color: blue/color: green/' \"$1\"\n",
    )
    .unwrap();
    std::fs::set_permissions(&editor, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let out = server
        .kubectl_cmd(&["edit", "configmap", "editable"])
        .env("KUBE_EDITOR", &editor)
        .env("KUBECTL_EDITOR", &editor)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        server.get_json(&["cm", "editable"])["data"]["color"],
        "green"
    );
}

#[test]
fn state_survives_kill_9() {
    let mut server = Server::start();
    for i in 0..20 {
        server.kubectl_ok(&[
            "create",
            "configmap",
            &format!("cm-{i}"),
            &format!("--from-literal=i={i}"),
        ]);
    }
    server.kubectl_ok(&["create", "deployment", "durable", "--image=nginx:1.14.2"]);
    let before = server.get_json(&["deploy", "durable"]);
    server.restart();
    let names = server.kubectl_ok(&["get", "configmaps", "-o", "name"]);
    for i in 0..20 {
        assert!(
            names.contains(&format!("configmap/cm-{i}")),
            "cm-{i} lost after kill -9:\n{names}"
        );
    }
    let after = server.get_json(&["deploy", "durable"]);
    assert_eq!(before["metadata"]["uid"], after["metadata"]["uid"]);
    assert_eq!(
        before["metadata"]["resourceVersion"],
        after["metadata"]["resourceVersion"]
    );
    // The same certificates are reused: the old kubeconfig still works (checked by every call above).
    server.kubectl_ok(&["create", "configmap", "after-restart"]);
}

#[test]
fn pagination_with_limit_and_continue() {
    let server = Server::start();
    for i in 0..25 {
        server.kubectl_ok(&["create", "configmap", &format!("page-{i:02}")]);
    }
    // kubectl fetches in chunks of --chunk-size and follows the continue tokens.
    let names = server.kubectl_ok(&["get", "configmaps", "--chunk-size=7", "-o", "name"]);
    let count = names
        .lines()
        .filter(|l| l.starts_with("configmap/page-"))
        .count();
    assert_eq!(count, 25, "{names}");
}
