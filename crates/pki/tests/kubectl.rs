//! The real `kubectl` against a minimal HTTPS responder that uses our server configuration:
//! kubectl must trust the server CA, accept the SANs, and present the admin certificate (or a
//! bearer token) from the kubeconfigs this crate writes.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use pki::{Pki, PkiOptions, identity_from_cert, kubeconfig_yaml_with_token, write_kubeconfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

/// One request as the server saw it.
#[derive(Debug, Clone)]
struct Request {
    request_line: String,
    identity: Option<(String, Vec<String>)>,
    authorization: Option<String>,
}

const VERSION_JSON: &str = r#"{"major":"1","minor":"33","gitVersion":"v1.33.0-pki-test"}"#;

/// Serves every request with `VERSION_JSON` over HTTP/1.1 and records it. Returns the port.
async fn serve(pki: &Pki, seen: Arc<Mutex<Vec<Request>>>) -> u16 {
    let mut config = (*pki.server_config().unwrap()).clone();
    // The responder below speaks HTTP/1.1 only.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let acceptor = TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let acceptor = acceptor.clone();
            let seen = seen.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let identity = tls
                    .get_ref()
                    .1
                    .peer_certificates()
                    .and_then(|chain| identity_from_cert(&chain[0]));
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match tls.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let head = String::from_utf8_lossy(&head).into_owned();
                let mut lines = head.split("\r\n");
                let request_line = lines.next().unwrap_or_default().to_string();
                let authorization = lines
                    .filter_map(|line| line.split_once(':'))
                    .find(|(name, _)| name.eq_ignore_ascii_case("authorization"))
                    .map(|(_, value)| value.trim().to_string());
                seen.lock().unwrap().push(Request {
                    request_line,
                    identity,
                    authorization,
                });
                let response = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{VERSION_JSON}",
                    VERSION_JSON.len()
                );
                let _ = tls.write_all(response.as_bytes()).await;
                let _ = tls.shutdown().await;
            });
        }
    });
    port
}

/// Runs `kubectl get --raw /version` with `kubeconfig`; killed if it outlives the timeout.
async fn kubectl_get_version(kubeconfig: &Path, home: &Path) -> String {
    let child = tokio::process::Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(["get", "--raw", "/version", "--request-timeout=10s"])
        .env("HOME", home)
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(30), child)
        .await
        .expect("kubectl timed out")
        .expect("running kubectl");
    assert!(
        out.status.success(),
        "kubectl failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[tokio::test]
async fn kubectl_uses_the_admin_kubeconfig_over_tls() {
    let tmp = tempfile::tempdir().unwrap();
    let pki = Pki::load_or_create(&tmp.path().join("tls"), &PkiOptions::default()).unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let port = serve(&pki, seen.clone()).await;

    let kubeconfig = tmp.path().join("kubeconfig.yaml");
    pki.write_admin_kubeconfig(&kubeconfig, &format!("https://127.0.0.1:{port}"))
        .unwrap();
    let body = kubectl_get_version(&kubeconfig, tmp.path()).await;
    assert_eq!(body.trim(), VERSION_JSON);

    let seen = seen.lock().unwrap().clone();
    let request = seen
        .iter()
        .find(|r| r.request_line.starts_with("GET /version"))
        .expect("request seen");
    assert_eq!(
        request.identity,
        Some((
            "system:admin".to_string(),
            vec!["system:masters".to_string()]
        )),
        "kubectl must present the admin client certificate"
    );
    assert_eq!(request.authorization, None);
}

#[tokio::test]
async fn kubectl_uses_a_token_kubeconfig_and_a_dns_san() {
    let tmp = tempfile::tempdir().unwrap();
    let pki = Pki::load_or_create(&tmp.path().join("tls"), &PkiOptions::default()).unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let port = serve(&pki, seen.clone()).await;

    // "localhost" exercises a DNS SAN (the other test uses the 127.0.0.1 IP SAN).
    let yaml = kubeconfig_yaml_with_token(
        &format!("https://localhost:{port}"),
        pki.ca_pem(),
        "abc.123",
    );
    let kubeconfig = tmp.path().join("token.yaml");
    write_kubeconfig(&kubeconfig, &yaml).unwrap();
    let body = kubectl_get_version(&kubeconfig, tmp.path()).await;
    assert_eq!(body.trim(), VERSION_JSON);

    let seen = seen.lock().unwrap().clone();
    let request = seen
        .iter()
        .find(|r| r.request_line.starts_with("GET /version"))
        .expect("request seen");
    assert_eq!(request.identity, None);
    assert_eq!(request.authorization.as_deref(), Some("Bearer abc.123"));
}
