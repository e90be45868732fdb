//! Status codes and `Status` bodies for bad input, and authentication, over raw HTTPS.

mod support;

use serde_json::Value;
use support::Server;

fn status(body: &str) -> Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not a Status ({e}): {body}"))
}

#[test]
fn anonymous_requests_are_unauthorized_except_health_and_version() {
    let server = Server::start();
    for open in ["/healthz", "/livez", "/readyz", "/version"] {
        let (code, _) = server.raw("GET", open, None, "application/json", true);
        assert_eq!(code, 200, "{open} is open to anonymous clients");
    }
    let (code, body) = server.raw("GET", "/api/v1/namespaces", None, "application/json", true);
    assert_eq!(code, 401, "{body}");
    assert_eq!(status(&body)["reason"], "Unauthorized");
}

#[test]
fn token_file_users_are_authenticated() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("tokens.csv");
    std::fs::write(&tokens, "s3cr3t-token,alice,1001,\"dev,ops\"\n").unwrap();
    let server = Server::start_with(&["--token-file", tokens.to_str().unwrap()]);
    let url = format!("https://127.0.0.1:{}", server.port);
    let ca = server.data_dir.path().join("tls/server-ca.crt");
    let run = |token: &str| {
        std::process::Command::new(support::kubectl_binary())
            .args([
                "--server",
                &url,
                "--certificate-authority",
                ca.to_str().unwrap(),
                "--token",
                token,
                "get",
                "namespaces",
                "-o",
                "name",
            ])
            .env_remove("KUBECONFIG")
            .env("KUBECONFIG", "/dev/null")
            .output()
            .unwrap()
    };
    let ok = run("s3cr3t-token");
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert!(String::from_utf8_lossy(&ok.stdout).contains("namespace/default"));
    let bad = run("wrong");
    assert!(!bad.status.success());
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("Unauthorized"),
        "{}",
        String::from_utf8_lossy(&bad.stderr)
    );
}

#[test]
fn malformed_and_oversized_bodies_change_nothing() {
    let server = Server::start();
    let path = "/api/v1/namespaces/default/configmaps";
    let (code, body) = server.raw(
        "POST",
        path,
        Some(b"{\"apiVersion\":\"v1\",\"kind\":\"ConfigMap\",\"metadata\":{\"name\":"),
        "application/json",
        false,
    );
    assert_eq!(code, 400, "{body}");
    assert_eq!(status(&body)["reason"], "BadRequest");

    let (code, body) = server.raw("POST", path, Some(b"{\"apiVersion\":\"v1\",\"kind\":\"ConfigMap\",\"metadata\":{\"name\":\"typed\"},\"data\":{\"a\":1}}"), "application/json", false);
    assert_eq!(code, 400, "a number where a string belongs: {body}");

    let big = format!(
        "{{\"apiVersion\":\"v1\",\"kind\":\"ConfigMap\",\"metadata\":{{\"name\":\"big\"}},\"data\":{{\"a\":\"{}\"}}}}",
        "x".repeat(4 * 1024 * 1024)
    );
    let (code, body) = server.raw(
        "POST",
        path,
        Some(big.as_bytes()),
        "application/json",
        false,
    );
    assert_eq!(code, 413, "{body}");
    assert_eq!(status(&body)["reason"], "RequestEntityTooLarge");

    let (code, body) = server.raw("POST", path, Some(b"a: b"), "text/plain", false);
    assert_eq!(code, 415, "{body}");

    let (code, body) = server.raw("PUT", path, Some(b"{}"), "application/json", false);
    assert_eq!(code, 405, "{body}");

    let (code, body) = server.raw(
        "GET",
        "/api/v1/namespaces/default/configmaps/missing",
        None,
        "application/json",
        false,
    );
    assert_eq!(code, 404, "{body}");
    let st = status(&body);
    assert_eq!(st["reason"], "NotFound");
    assert_eq!(st["details"]["name"], "missing");
    assert_eq!(st["message"], "configmaps \"missing\" not found");

    let invalid = br#"{"apiVersion":"apps/v1","kind":"Deployment","metadata":{"name":"bad"},"spec":{"replicas":-1,"selector":{"matchLabels":{"a":"b"}},"template":{"metadata":{"labels":{"a":"c"}},"spec":{"containers":[{"name":"c","image":"x"}]}}}}"#;
    let (code, body) = server.raw(
        "POST",
        "/apis/apps/v1/namespaces/default/deployments",
        Some(invalid),
        "application/json",
        false,
    );
    assert_eq!(code, 422, "{body}");
    let st = status(&body);
    assert_eq!(st["reason"], "Invalid");
    let fields: Vec<&str> = st["details"]["causes"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|c| c["field"].as_str())
        .collect();
    assert!(fields.contains(&"spec.replicas"), "{body}");
    assert!(
        fields
            .iter()
            .any(|f| f.starts_with("spec.template.metadata.labels") || *f == "spec.selector"),
        "{body}"
    );

    let (code, body) = server.raw(
        "GET",
        "/api/v1/namespaces/default/configmaps?labelSelector=a%20in%20(",
        None,
        "application/json",
        false,
    );
    assert_eq!(code, 400, "{body}");
    let (code, body) = server.raw(
        "GET",
        "/api/v1/namespaces/default/configmaps?fieldSelector=spec.bogus%3Dx",
        None,
        "application/json",
        false,
    );
    assert_eq!(code, 400, "{body}");

    // Nothing was stored, and the server still answers.
    let (code, body) = server.raw("GET", path, None, "application/json", false);
    assert_eq!(code, 200);
    let list = status(&body);
    assert_eq!(list["items"].as_array().unwrap().len(), 0, "{body}");
}

#[test]
fn watch_from_a_compacted_or_unknown_revision_is_gone() {
    let mut server = Server::start();
    for i in 0..3 {
        let body = format!(
            "{{\"apiVersion\":\"v1\",\"kind\":\"ConfigMap\",\"metadata\":{{\"name\":\"c{i}\"}}}}"
        );
        assert_eq!(
            server
                .raw(
                    "POST",
                    "/api/v1/namespaces/default/configmaps",
                    Some(body.as_bytes()),
                    "application/json",
                    false
                )
                .0,
            201
        );
    }
    // After a restart the watch cache starts at the current revision: a resourceVersion from
    // before it is too old, and the stream carries a 410 ERROR event, as upstream's does.
    server.restart();
    let (code, body) = server.raw(
        "GET",
        "/api/v1/namespaces/default/configmaps?watch=1&resourceVersion=1&timeoutSeconds=1",
        None,
        "application/json",
        false,
    );
    assert_eq!(code, 200, "{body}");
    let first: Value = serde_json::from_str(body.lines().next().unwrap_or("{}")).unwrap();
    assert_eq!(first["type"], "ERROR", "{body}");
    assert_eq!(first["object"]["code"], 410);
    assert_eq!(first["object"]["reason"], "Expired");
}
