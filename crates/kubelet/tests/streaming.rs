//! The kubelet's HTTPS endpoint served for real over TLS with client certificates: health,
//! container logs (options, errors, follow) and the upgrade negotiation errors a client sees.

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt as _, Empty};
use hyper_util::rt::TokioIo;
use kubelet::server::{StreamingContext, serve};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};

struct Pki {
    ca_pem: String,
    ca_der: CertificateDer<'static>,
    server: (String, String),
    client: (CertificateDer<'static>, PrivateKeyDer<'static>),
}

fn pki() -> Pki {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::default();
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "test-ca");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, &ca_key);
    let leaf = |names: Vec<String>, cn: &str| {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(names).unwrap();
        params.distinguished_name.push(DnType::CommonName, cn);
        let cert = params.signed_by(&key, &issuer).unwrap();
        (cert, key)
    };
    let (server_cert, server_key) = leaf(vec!["localhost".into()], "node");
    let (client_cert, client_key) = leaf(vec![], "kube-apiserver-kubelet-client");
    Pki {
        ca_pem: ca.pem(),
        ca_der: ca.der().clone(),
        server: (server_cert.pem(), server_key.serialize_pem()),
        client: (
            client_cert.der().clone(),
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(client_key.serialize_der())),
        ),
    }
}

struct Kubelet {
    addr: SocketAddr,
    pki: Pki,
    dir: tempfile::TempDir,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Drop for Kubelet {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Kubelet {
    async fn start() -> Kubelet {
        let dir = tempfile::tempdir().unwrap();
        let pki = pki();
        let tls = pki::kubelet_server_config(&pki.server.0, &pki.server.1, &pki.ca_pem).unwrap();
        let runtime =
            runtime::container::ContainerRuntime::new(runtime::container::RuntimeConfig {
                root: dir.path().join("containers"),
                runc: "/usr/sbin/runc".into(),
                runc_root: dir.path().join("runc"),
                shim_exe: "/nonexistent".into(),
                cgroup_root: "/rkube-streaming-test/kubepods".into(),
            })
            .unwrap();
        std::fs::create_dir_all(dir.path().join("containers")).unwrap();
        let sandboxes = runtime::sandbox::SandboxManager::new(runtime::sandbox::NetworkConfig {
            root: dir.path().join("sandboxes"),
            cni_bin_dir: "/usr/lib/cni".into(),
            cni_conf_dir: dir.path().join("cni"),
            bridge: "cni-test0".into(),
            mtu: 1500,
        })
        .unwrap();
        std::fs::create_dir_all(dir.path().join("sandboxes")).unwrap();
        let ctx = Arc::new(StreamingContext {
            runtime,
            sandboxes,
            log_root: dir.path().join("logs"),
            node_name: "node-1".into(),
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(serve(listener, tls, ctx));
        Kubelet {
            addr,
            pki,
            dir,
            task,
        }
    }

    fn log_root(&self) -> std::path::PathBuf {
        self.dir.path().join("logs")
    }

    async fn connect(
        &self,
        client_cert: bool,
    ) -> std::io::Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.pki.ca_der.clone()).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots);
        let config = if client_cert {
            builder
                .with_client_auth_cert(
                    vec![self.pki.client.0.clone()],
                    self.pki.client.1.clone_key(),
                )
                .unwrap()
        } else {
            builder.with_no_client_auth()
        };
        let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
        let tcp = tokio::net::TcpStream::connect(self.addr).await?;
        connector
            .connect(ServerName::try_from("localhost").unwrap(), tcp)
            .await
    }

    /// Send one request; the response with its body still streaming.
    async fn request(&self, req: Request<Empty<Bytes>>) -> http::Response<hyper::body::Incoming> {
        let tls = self.connect(true).await.unwrap();
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .unwrap();
        tokio::spawn(conn.with_upgrades());
        sender.send_request(req).await.unwrap()
    }

    async fn get(&self, path: &str) -> (StatusCode, String) {
        let req = Request::get(path)
            .header("host", "localhost")
            .body(Empty::new())
            .unwrap();
        let response = self.request(req).await;
        let status = response.status();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8(body.to_vec()).unwrap())
    }
}

fn write_log(
    root: &Path,
    dir: &str,
    container: &str,
    file: &str,
    lines: &[&str],
) -> std::path::PathBuf {
    let path = root.join(dir).join(container).join(file);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let mut content = lines.join("\n");
    content.push('\n');
    std::fs::write(&path, content).unwrap();
    path
}

#[tokio::test]
async fn healthz_requires_a_client_certificate() {
    let kubelet = Kubelet::start().await;
    assert_eq!(
        kubelet.get("/healthz").await,
        (StatusCode::OK, "ok\n".to_string())
    );
    assert_eq!(kubelet.get("/nothing/here").await.0, StatusCode::NOT_FOUND);
    // Without a client certificate the handshake (or the first read) fails.
    let refused = async {
        let mut tls = kubelet.connect(false).await?;
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        tls.write_all(b"GET /healthz HTTP/1.1\r\nhost: localhost\r\n\r\n")
            .await?;
        let mut buf = [0u8; 64];
        let n = tls.read(&mut buf).await?;
        if n == 0 {
            return Err(std::io::Error::other("closed"));
        }
        Ok(())
    };
    assert!(
        refused.await.is_err(),
        "a client without a certificate got an answer"
    );
}

#[tokio::test]
async fn stats_summary_reports_the_node() {
    let kubelet = Kubelet::start().await;
    let (status, body) = kubelet.get("/stats/summary").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let summary: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(summary["node"]["nodeName"], "node-1");
    assert!(
        summary["node"]["cpu"]["usageCoreNanoSeconds"]
            .as_u64()
            .unwrap()
            > 0,
        "{summary}"
    );
    assert!(
        summary["node"]["memory"]["workingSetBytes"]
            .as_u64()
            .unwrap()
            > 0,
        "{summary}"
    );
    assert_eq!(
        summary["pods"],
        serde_json::json!([]),
        "no containers run here"
    );
}

#[tokio::test]
async fn container_logs_with_options() {
    let kubelet = Kubelet::start().await;
    let root = kubelet.log_root();
    write_log(
        &root,
        "default_web_uid-1",
        "app",
        "0.log",
        &["2024-01-01T00:00:01Z stdout F first run"],
    );
    write_log(
        &root,
        "default_web_uid-1",
        "app",
        "1.log.1",
        &["2024-01-01T00:01:00.5Z stdout F rotated line"],
    );
    write_log(
        &root,
        "default_web_uid-1",
        "app",
        "1.log",
        &[
            "2024-01-01T00:02:00Z stdout F hello",
            "2024-01-01T00:02:01Z stderr P par",
            "2024-01-01T00:02:01Z stderr F tial",
            "2024-01-01T00:02:02Z stdout F bye",
        ],
    );
    let base = "/containerLogs/default/web/app";
    assert_eq!(
        kubelet.get(base).await,
        (
            StatusCode::OK,
            "rotated line\nhello\npartial\nbye\n".to_string()
        )
    );
    assert_eq!(
        kubelet.get(&format!("{base}?tailLines=2")).await.1,
        "partial\nbye\n"
    );
    assert_eq!(
        kubelet
            .get(&format!("{base}?timestamps=true&tailLines=1"))
            .await
            .1,
        "2024-01-01T00:02:02.000000000Z bye\n"
    );
    assert_eq!(
        kubelet.get(&format!("{base}?limitBytes=8")).await.1,
        "rotated "
    );
    assert_eq!(
        kubelet
            .get(&format!("{base}?sinceTime=2024-01-01T00%3A02%3A01Z"))
            .await
            .1,
        "partial\nbye\n"
    );
    assert_eq!(
        kubelet.get(&format!("{base}?previous=true")).await.1,
        "first run\n"
    );

    let (status, body) = kubelet.get("/containerLogs/default/nope/app").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(body.contains("\"nope\""), "{body}");
    let (status, body) = kubelet.get("/containerLogs/default/web/sidecar").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body.contains("waiting to start"), "{body}");
    let (status, body) = kubelet.get(&format!("{base}?limitBytes=-3")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
}

#[tokio::test]
async fn follow_streams_appended_lines_and_ends_when_the_container_is_not_running() {
    let kubelet = Kubelet::start().await;
    let path = write_log(
        &kubelet.log_root(),
        "default_ticker_uid-2",
        "ticker",
        "0.log",
        &[
            "2024-01-01T00:00:00Z stdout F tick 0",
            "2024-01-01T00:00:00Z stdout F tick 1",
        ],
    );
    let req = Request::get("/containerLogs/default/ticker/ticker?follow=true&tailLines=1")
        .header("host", "localhost")
        .body(Empty::new())
        .unwrap();
    let response = kubelet.request(req).await;
    assert_eq!(response.status(), StatusCode::OK);
    let mut body = response.into_body();
    let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
    assert_eq!(first, Bytes::from_static(b"tick 1\n"));
    // Lines written while following come through. The runtime knows no such container, so
    // the follow ends on its own after its next check (upstream stops for a container that
    // is not running).
    let appender = std::thread::spawn(move || {
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        for i in 2..40 {
            writeln!(file, "2024-01-01T00:00:00Z stdout F tick {i}").unwrap();
            std::thread::sleep(Duration::from_millis(50));
        }
    });
    let rest = tokio::time::timeout(Duration::from_secs(20), body.collect())
        .await
        .expect("the follow did not end")
        .unwrap()
        .to_bytes();
    let rest = String::from_utf8(rest.to_vec()).unwrap();
    assert!(rest.starts_with("tick 2\n"), "{rest}");
    let ticks: Vec<&str> = rest.lines().collect();
    for (i, line) in ticks.iter().enumerate() {
        assert_eq!(
            *line,
            format!("tick {}", i + 2),
            "lines arrive in order, once"
        );
    }
    appender.join().unwrap();
}

#[tokio::test]
async fn upgrade_errors_are_plain_http_answers() {
    let kubelet = Kubelet::start().await;
    // No such pod: refused before any upgrade, so kubectl shows the message.
    let req = Request::get("/exec/default/nope/app?command=ls&output=1")
        .header("host", "localhost")
        .header("connection", "Upgrade")
        .header("upgrade", "websocket")
        .header("sec-websocket-version", "13")
        .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
        .header("sec-websocket-protocol", "v5.channel.k8s.io")
        .body(Empty::new())
        .unwrap();
    let response = kubelet.request(req).await;
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert!(String::from_utf8_lossy(&body).contains("\"nope\""));
    // No streams asked for.
    let (status, body) = kubelet.get("/exec/default/web/app?command=ls").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        body.contains("at least 1 of stdin, stdout, stderr"),
        "{body}"
    );
    let (status, _) = kubelet.get("/portForward/default/nope").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}
