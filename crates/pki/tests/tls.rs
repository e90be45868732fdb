//! Real TLS handshakes over loopback between the server configuration and rustls clients.

use std::sync::Arc;
use std::time::Duration;

use pki::{Pki, PkiOptions, identity_from_cert};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, ProtocolVersion, RootCertStore};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::{TlsAcceptor, TlsConnector};

/// What the server saw of a completed handshake.
#[derive(Debug)]
struct Seen {
    identity: Option<(String, Vec<String>)>,
    alpn: Option<Vec<u8>>,
    version: Option<ProtocolVersion>,
}

fn certs(pem: &str) -> Vec<CertificateDer<'static>> {
    rustls_pemfile::certs(&mut pem.as_bytes())
        .collect::<Result<_, _>>()
        .unwrap()
}

fn key(pem: &str) -> PrivateKeyDer<'static> {
    rustls_pemfile::private_key(&mut pem.as_bytes())
        .unwrap()
        .unwrap()
}

fn client_config(
    trust_pem: &str,
    client_cert: Option<(&str, &str)>,
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    for cert in certs(trust_pem) {
        roots.add(cert).unwrap();
    }
    let builder =
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_protocol_versions(versions)
            .unwrap()
            .with_root_certificates(roots);
    let mut config = match client_cert {
        Some((cert, k)) => builder.with_client_auth_cert(certs(cert), key(k)).unwrap(),
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Arc::new(config)
}

/// One connection: the server accepts and echoes "ping" with "pong" (so that the client's
/// certificate, sent late in TLS 1.3, has surely been judged).
async fn handshake(
    pki: &Pki,
    client: Arc<ClientConfig>,
    server_name: &str,
) -> (Result<Seen, String>, Result<(), String>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let acceptor = TlsAcceptor::from(pki.server_config().unwrap());
    let server = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.map_err(|e| e.to_string())?;
        let mut tls = acceptor.accept(tcp).await.map_err(|e| e.to_string())?;
        let (_, conn) = tls.get_ref();
        let seen = Seen {
            identity: conn
                .peer_certificates()
                .and_then(|chain| identity_from_cert(&chain[0])),
            alpn: conn.alpn_protocol().map(<[u8]>::to_vec),
            version: conn.protocol_version(),
        };
        let mut buf = [0u8; 4];
        tls.read_exact(&mut buf).await.map_err(|e| e.to_string())?;
        tls.write_all(b"pong").await.map_err(|e| e.to_string())?;
        tls.shutdown().await.map_err(|e| e.to_string())?;
        Ok::<_, String>(seen)
    });
    let name = ServerName::try_from(server_name.to_string()).unwrap();
    let client_side = async {
        let tcp = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
        let mut tls = TlsConnector::from(client)
            .connect(name, tcp)
            .await
            .map_err(|e| e.to_string())?;
        tls.write_all(b"ping").await.map_err(|e| e.to_string())?;
        let mut buf = [0u8; 4];
        tls.read_exact(&mut buf).await.map_err(|e| e.to_string())?;
        if &buf != b"pong" {
            return Err(format!("unexpected reply {buf:?}"));
        }
        Ok(())
    };
    let client_result = tokio::time::timeout(Duration::from_secs(10), client_side)
        .await
        .unwrap_or_else(|_| Err("client timed out".to_string()));
    let server_result = tokio::time::timeout(Duration::from_secs(10), server)
        .await
        .expect("server timed out")
        .expect("server task panicked");
    (server_result, client_result)
}

fn new_pki() -> (tempfile::TempDir, Pki) {
    let tmp = tempfile::tempdir().unwrap();
    let pki = Pki::load_or_create(tmp.path(), &PkiOptions::default()).unwrap();
    (tmp, pki)
}

const ALL: &[&rustls::SupportedProtocolVersion] =
    &[&rustls::version::TLS13, &rustls::version::TLS12];

#[tokio::test]
async fn handshake_with_admin_certificate_identifies_the_user() {
    let (_tmp, pki) = new_pki();
    let client = client_config(pki.ca_pem(), Some(pki.admin_credentials()), ALL);
    let (server, client) = handshake(&pki, client, "127.0.0.1").await;
    client.unwrap();
    let seen = server.unwrap();
    assert_eq!(
        seen.identity,
        Some((
            "system:admin".to_string(),
            vec!["system:masters".to_string()]
        ))
    );
    assert_eq!(seen.alpn.as_deref(), Some(&b"h2"[..]));
    assert_eq!(seen.version, Some(ProtocolVersion::TLSv1_3));
}

#[tokio::test]
async fn handshake_without_client_certificate_is_allowed_and_anonymous() {
    let (_tmp, pki) = new_pki();
    let client = client_config(pki.ca_pem(), None, ALL);
    let (server, client) = handshake(&pki, client, "kubernetes.default.svc").await;
    client.unwrap();
    let seen = server.unwrap();
    assert_eq!(seen.identity, None);
}

#[tokio::test]
async fn tls12_and_issued_client_certificates_work() {
    let (_tmp, pki) = new_pki();
    let (cert, key) = pki
        .issue_client_cert("system:node:n1", &["system:nodes"])
        .unwrap();
    let client = client_config(
        pki.ca_pem(),
        Some((&cert, &key)),
        &[&rustls::version::TLS12],
    );
    let (server, client) = handshake(&pki, client, "localhost").await;
    client.unwrap();
    let seen = server.unwrap();
    assert_eq!(seen.version, Some(ProtocolVersion::TLSv1_2));
    assert_eq!(
        seen.identity,
        Some((
            "system:node:n1".to_string(),
            vec!["system:nodes".to_string()]
        ))
    );
}

#[tokio::test]
async fn client_certificate_from_another_cluster_is_rejected() {
    let (_tmp, pki) = new_pki();
    let (_other_tmp, other) = new_pki();
    let client = client_config(pki.ca_pem(), Some(other.admin_credentials()), ALL);
    let (server, _client) = handshake(&pki, client, "127.0.0.1").await;
    let err = server.unwrap_err();
    assert!(err.to_lowercase().contains("certificate"), "{err}");
}

#[tokio::test]
async fn clients_must_trust_the_server_ca_not_the_client_ca() {
    let (_tmp, pki) = new_pki();
    let client = client_config(pki.client_ca_pem(), None, ALL);
    let (_server, client) = handshake(&pki, client, "127.0.0.1").await;
    let err = client.unwrap_err();
    assert!(err.contains("UnknownIssuer"), "{err}");
}

#[tokio::test]
async fn server_name_outside_the_sans_is_rejected() {
    let (_tmp, pki) = new_pki();
    let client = client_config(pki.ca_pem(), None, ALL);
    let (_server, client) = handshake(&pki, client, "example.com").await;
    let err = client.unwrap_err();
    assert!(err.contains("not valid for name"), "{err}");
}
