//! A minimal HTTPS client for the API server: one HTTP/1.1 keep-alive connection per worker,
//! authenticated with the admin client certificate of `<data-dir>/kubeconfig.yaml`.
//!
//! Hand-rolled on hyper's connection API rather than a full client (kube, reqwest) so that
//! what is timed is one request on one already-open connection, with no pool in between.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use serde::Deserialize;
use tokio::task::JoinHandle;

use crate::BenchError;

/// No single request of the benchmark may take longer (the largest is a list of 100,000
/// objects); a stuck server fails the run instead of hanging it.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Deserialize)]
struct Kubeconfig {
    clusters: Vec<NamedCluster>,
    users: Vec<NamedUser>,
}

#[derive(Deserialize)]
struct NamedCluster {
    cluster: ClusterInfo,
}

#[derive(Deserialize)]
struct ClusterInfo {
    server: String,
    #[serde(rename = "certificate-authority-data")]
    certificate_authority_data: String,
}

#[derive(Deserialize)]
struct NamedUser {
    user: AuthInfo,
}

#[derive(Deserialize)]
struct AuthInfo {
    #[serde(rename = "client-certificate-data")]
    client_certificate_data: Option<String>,
    #[serde(rename = "client-key-data")]
    client_key_data: Option<String>,
}

/// Where and how to reach one API server. Cheap to clone.
#[derive(Clone)]
pub struct ApiClient {
    addr: SocketAddr,
    authority: String,
    server_name: ServerName<'static>,
    connector: tokio_rustls::TlsConnector,
}

impl std::fmt::Debug for ApiClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiClient")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl ApiClient {
    /// Reads the first cluster and user of a kubeconfig written by `rkube server`: the server
    /// URL must be `https://IP:PORT`, the credentials a client certificate and key.
    pub fn from_kubeconfig(path: &Path) -> Result<Self, BenchError> {
        let bad = |reason: String| BenchError::Kubeconfig {
            path: path.display().to_string(),
            reason,
        };
        let text = std::fs::read_to_string(path).map_err(|e| bad(format!("read: {e}")))?;
        let config: Kubeconfig =
            serde_yaml::from_str(&text).map_err(|e| bad(format!("parse: {e}")))?;
        let cluster = &config
            .clusters
            .first()
            .ok_or_else(|| bad("no cluster".into()))?
            .cluster;
        let user = &config
            .users
            .first()
            .ok_or_else(|| bad("no user".into()))?
            .user;
        let decode = |field: &str, value: Option<&String>| -> Result<Vec<u8>, BenchError> {
            let value = value.ok_or_else(|| bad(format!("{field} is missing")))?;
            BASE64
                .decode(value.trim())
                .map_err(|e| bad(format!("{field}: invalid base64: {e}")))
        };
        let ca = decode(
            "certificate-authority-data",
            Some(&cluster.certificate_authority_data),
        )?;
        let cert = decode(
            "client-certificate-data",
            user.client_certificate_data.as_ref(),
        )?;
        let key = decode("client-key-data", user.client_key_data.as_ref())?;

        let authority = cluster
            .server
            .strip_prefix("https://")
            .ok_or_else(|| bad(format!("server {:?} is not an https URL", cluster.server)))?
            .trim_end_matches('/')
            .to_string();
        let addr: SocketAddr = authority.parse().map_err(|e| {
            bad(format!(
                "server {:?}: expected https://IP:PORT: {e}",
                cluster.server
            ))
        })?;
        let tls = client_tls(&ca, &cert, &key).map_err(bad)?;
        Ok(Self {
            addr,
            authority,
            server_name: ServerName::IpAddress(addr.ip().into()),
            connector: tokio_rustls::TlsConnector::from(Arc::new(tls)),
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Opens a new TLS connection and its HTTP/1.1 session.
    pub async fn connect(&self) -> Result<Connection, BenchError> {
        let failed = |reason: String| BenchError::Http {
            method: "CONNECT".into(),
            path: self.authority.clone(),
            reason,
        };
        let tcp = tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::TcpStream::connect(self.addr))
            .await
            .map_err(|_| failed("timed out".into()))?
            .map_err(|e| failed(e.to_string()))?;
        tcp.set_nodelay(true)
            .map_err(|e| failed(format!("set TCP_NODELAY: {e}")))?;
        let tls = tokio::time::timeout(
            CONNECT_TIMEOUT,
            self.connector.connect(self.server_name.clone(), tcp),
        )
        .await
        .map_err(|_| failed("TLS handshake timed out".into()))?
        .map_err(|e| failed(format!("TLS handshake: {e}")))?;
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .map_err(|e| failed(format!("HTTP handshake: {e}")))?;
        let driver = tokio::spawn(async move {
            // Ends when the server closes the connection or the sender is dropped.
            let _ = connection.await;
        });
        Ok(Connection {
            sender,
            authority: self.authority.clone(),
            driver,
        })
    }
}

fn client_tls(ca: &[u8], cert: &[u8], key: &[u8]) -> Result<rustls::ClientConfig, String> {
    let mut roots = rustls::RootCertStore::empty();
    for ca in rustls_pemfile::certs(&mut &ca[..]) {
        let ca = ca.map_err(|e| format!("certificate-authority-data: {e}"))?;
        roots
            .add(ca)
            .map_err(|e| format!("certificate-authority-data: {e}"))?;
    }
    if roots.is_empty() {
        return Err("certificate-authority-data holds no certificate".into());
    }
    let chain: Vec<CertificateDer<'static>> = rustls_pemfile::certs(&mut &cert[..])
        .collect::<Result<_, _>>()
        .map_err(|e| format!("client-certificate-data: {e}"))?;
    if chain.is_empty() {
        return Err("client-certificate-data holds no certificate".into());
    }
    let key: PrivateKeyDer<'static> = rustls_pemfile::private_key(&mut &key[..])
        .map_err(|e| format!("client-key-data: {e}"))?
        .ok_or("client-key-data holds no private key")?;
    // Name the provider: the process may link more than one, and then rustls cannot pick.
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS versions: {e}"))?
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .map_err(|e| format!("client certificate: {e}"))
}

/// One keep-alive connection; requests on it run one after the other.
pub struct Connection {
    sender: SendRequest<Full<Bytes>>,
    authority: String,
    driver: JoinHandle<()>,
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.driver.abort();
    }
}

/// A response read to its end.
#[derive(Debug)]
pub struct Response {
    pub status: StatusCode,
    pub body: Bytes,
}

impl Connection {
    async fn start(
        &mut self,
        method: &Method,
        path: &str,
        body: Option<Bytes>,
    ) -> Result<http::Response<Incoming>, BenchError> {
        let failed = |reason: String| BenchError::Http {
            method: method.to_string(),
            path: path.into(),
            reason,
        };
        let mut builder = Request::builder()
            .method(method.clone())
            .uri(path)
            .header(http::header::HOST, &self.authority)
            .header(http::header::ACCEPT, "application/json");
        if body.is_some() {
            builder = builder.header(http::header::CONTENT_TYPE, "application/json");
        }
        let request = builder
            .body(Full::new(body.unwrap_or_default()))
            .map_err(|e| failed(format!("build request: {e}")))?;
        self.sender
            .ready()
            .await
            .map_err(|e| failed(format!("connection lost: {e}")))?;
        self.sender
            .send_request(request)
            .await
            .map_err(|e| failed(e.to_string()))
    }

    /// Sends a request and reads the whole response.
    pub async fn send(
        &mut self,
        method: Method,
        path: &str,
        body: Option<Bytes>,
    ) -> Result<Response, BenchError> {
        let exchange = async {
            let response = self.start(&method, path, body).await?;
            let status = response.status();
            let body = response
                .into_body()
                .collect()
                .await
                .map_err(|e| BenchError::Http {
                    method: method.to_string(),
                    path: path.into(),
                    reason: format!("read body: {e}"),
                })?
                .to_bytes();
            Ok(Response { status, body })
        };
        tokio::time::timeout(REQUEST_TIMEOUT, exchange)
            .await
            .map_err(|_| BenchError::Http {
                method: method.to_string(),
                path: path.into(),
                reason: format!("no response within {} s", REQUEST_TIMEOUT.as_secs()),
            })?
    }

    /// Sends a request and insists on `want`; returns the body.
    pub async fn expect(
        &mut self,
        method: Method,
        path: &str,
        body: Option<Bytes>,
        want: StatusCode,
    ) -> Result<Bytes, BenchError> {
        let response = self.send(method.clone(), path, body).await?;
        if response.status != want {
            return Err(BenchError::Status {
                method: method.to_string(),
                path: path.into(),
                status: response.status.as_u16(),
                body: String::from_utf8_lossy(&response.body[..response.body.len().min(500)])
                    .into_owned(),
            });
        }
        Ok(response.body)
    }

    /// Starts a watch (`path` must ask for one, e.g. `...?watch=1`); the connection is
    /// given to the stream, which owns it until dropped.
    pub async fn watch(mut self, path: &str) -> Result<WatchReader, BenchError> {
        let response = tokio::time::timeout(REQUEST_TIMEOUT, self.start(&Method::GET, path, None))
            .await
            .map_err(|_| BenchError::Http {
                method: "GET".into(),
                path: path.into(),
                reason: "no watch response".into(),
            })??;
        if response.status() != StatusCode::OK {
            let status = response.status().as_u16();
            let body = response
                .into_body()
                .collect()
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            return Err(BenchError::Status {
                method: "GET".into(),
                path: path.into(),
                status,
                body: String::from_utf8_lossy(&body).into_owned(),
            });
        }
        Ok(WatchReader {
            body: response.into_body(),
            buf: Vec::new(),
            path: path.into(),
            _connection: self,
        })
    }
}

/// One event of a watch stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchEvent {
    /// `ADDED`, `MODIFIED`, `DELETED`, `BOOKMARK` or `ERROR`.
    pub kind: String,
    /// The object's `metadata.name` (empty for bookmarks and errors).
    pub name: String,
}

/// The events of a watch, one JSON object per line.
pub struct WatchReader {
    body: Incoming,
    buf: Vec<u8>,
    path: String,
    _connection: Connection,
}

impl WatchReader {
    /// The next event, or `None` when the server ended the stream.
    pub async fn next(&mut self) -> Result<Option<WatchEvent>, BenchError> {
        let Some(line) = self.next_line().await? else {
            return Ok(None);
        };
        parse_event(&line)
            .map(Some)
            .map_err(|reason| self.failed(reason))
    }

    /// The next event as its type and whole object (for scenarios that look at more than the
    /// name), or `None` when the server ended the stream.
    pub async fn next_object(&mut self) -> Result<Option<(String, serde_json::Value)>, BenchError> {
        let Some(line) = self.next_line().await? else {
            return Ok(None);
        };
        let mut event: serde_json::Value = serde_json::from_slice(&line)
            .map_err(|e| self.failed(format!("malformed watch event: {e}")))?;
        let kind = event["type"].as_str().unwrap_or_default().to_string();
        Ok(Some((kind, event["object"].take())))
    }

    async fn next_line(&mut self) -> Result<Option<Vec<u8>>, BenchError> {
        loop {
            if let Some(end) = self.buf.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = self.buf.drain(..=end).collect();
                if line.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                return Ok(Some(line));
            }
            match self.body.frame().await {
                None => return Ok(None),
                Some(Err(e)) => return Err(self.failed(format!("read watch stream: {e}"))),
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        self.buf.extend_from_slice(&data);
                    }
                }
            }
        }
    }

    fn failed(&self, reason: String) -> BenchError {
        BenchError::Http {
            method: "GET".into(),
            path: self.path.clone(),
            reason,
        }
    }
}

fn parse_event(line: &[u8]) -> Result<WatchEvent, String> {
    #[derive(Deserialize)]
    struct Event {
        #[serde(rename = "type")]
        kind: String,
        object: Object,
    }
    #[derive(Deserialize)]
    struct Object {
        #[serde(default)]
        metadata: Metadata,
    }
    #[derive(Deserialize, Default)]
    struct Metadata {
        #[serde(default)]
        name: String,
    }
    let event: Event = serde_json::from_slice(line).map_err(|e| {
        format!(
            "malformed watch event {:?}: {e}",
            String::from_utf8_lossy(&line[..line.len().min(200)])
        )
    })?;
    Ok(WatchEvent {
        kind: event.kind,
        name: event.object.metadata.name,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_watch_events() {
        let e = parse_event(br#"{"type":"ADDED","object":{"kind":"ConfigMap","metadata":{"name":"w-1","namespace":"bench"}}}"#).unwrap();
        assert_eq!(
            e,
            WatchEvent {
                kind: "ADDED".into(),
                name: "w-1".into()
            }
        );
        let b = parse_event(br#"{"type":"BOOKMARK","object":{"kind":"ConfigMap","metadata":{"resourceVersion":"12"}}}"#).unwrap();
        assert_eq!(b.kind, "BOOKMARK");
        assert_eq!(b.name, "");
        assert!(
            parse_event(b"{not json")
                .unwrap_err()
                .contains("malformed watch event")
        );
    }

    #[test]
    fn rejects_kubeconfig_without_client_certificate() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kubeconfig.yaml");
        std::fs::write(
            &path,
            "clusters:\n- name: default\n  cluster:\n    server: https://127.0.0.1:6443\n    certificate-authority-data: AAAA\nusers:\n- name: default\n  user:\n    token: abc\n",
        )
        .unwrap();
        let err = ApiClient::from_kubeconfig(&path).unwrap_err().to_string();
        assert!(err.contains("client-certificate-data is missing"), "{err}");
    }
}
