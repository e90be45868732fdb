//! httpGet probes and hooks: one GET over a fresh HTTP/1.1 connection (`Connection: close`, as
//! upstream's prober disables keep-alives), HTTPS without certificate verification, redirects
//! followed only to the same host, at most 10 KiB of the body read.

use std::fmt;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http_body_util::{BodyExt as _, Empty};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use k8s_openapi::api::core::v1::HTTPGetAction;
use tokio::net::TcpStream;

use super::{Outcome, ProbeTarget, describe_io_error, join_host_port, resolve_port, target_host};

/// How much of a response body is read (upstream's maxRespBodyLength).
const MAX_BODY: usize = 10 * 1024;
/// Redirects followed before giving up, as Go's HTTP client.
const MAX_REQUESTS: usize = 10;

/// Where a GET goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Url {
    pub(super) scheme: String,
    pub(super) host: String,
    pub(super) port: u16,
    /// Path and query, starting with `/`.
    pub(super) path: String,
}

impl fmt::Display for Url {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}://{}{}",
            self.scheme,
            join_host_port(&self.host, self.port),
            self.path
        )
    }
}

impl Url {
    /// Resolves a redirect's Location against this URL.
    fn join(&self, location: &str) -> Result<Url, String> {
        let location = location.split('#').next().unwrap_or_default();
        if let Some((scheme, rest)) = location.split_once("://")
            && !scheme.is_empty()
            && scheme
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))
        {
            return parse_authority_and_path(&scheme.to_ascii_lowercase(), rest);
        }
        if let Some(rest) = location.strip_prefix("//") {
            return parse_authority_and_path(&self.scheme, rest);
        }
        let path = if location.starts_with('/') {
            location.to_string()
        } else if location.starts_with('?') {
            let current = self.path.split('?').next().unwrap_or("/");
            format!("{current}{location}")
        } else {
            let current = self.path.split('?').next().unwrap_or("/");
            let dir = &current[..current.rfind('/').map_or(0, |i| i + 1)];
            format!("{dir}{location}")
        };
        Ok(Url {
            path: escape_path(&path),
            ..self.clone()
        })
    }
}

fn parse_authority_and_path(scheme: &str, rest: &str) -> Result<Url, String> {
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(end);
    let authority = authority.rsplit('@').next().unwrap_or_default();
    let default_port = if scheme == "https" { 443 } else { 80 };
    let (host, port) = if let Some(bracketed) = authority.strip_prefix('[') {
        let (host, after) = bracketed
            .split_once(']')
            .ok_or_else(|| format!("invalid host in redirect: {authority:?}"))?;
        (host, after.strip_prefix(':'))
    } else {
        match authority.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        }
    };
    let port = match port.filter(|p| !p.is_empty()) {
        Some(p) => p
            .parse()
            .map_err(|_| format!("invalid port {p:?} in redirect"))?,
        None => default_port,
    };
    let path = if path.starts_with('/') {
        path.to_string()
    } else {
        format!("/{path}")
    };
    Ok(Url {
        scheme: scheme.to_string(),
        host: host.to_string(),
        port,
        path: escape_path(&path),
    })
}

/// Percent-encodes what may not appear in a request target (spaces, controls, non-ASCII), as
/// Go's URL type does when it prints a path.
fn escape_path(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    for b in path.bytes() {
        if b.is_ascii_graphic()
            && !matches!(
                b,
                b'"' | b'<' | b'>' | b'\\' | b'^' | b'`' | b'{' | b'|' | b'}'
            )
        {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A GET ready to send: the URL, the `Host` header override, and the other headers in order.
#[derive(Debug, Clone)]
pub(super) struct Request {
    pub(super) url: Url,
    pub(super) host_header: Option<String>,
    pub(super) headers: Vec<(String, String)>,
}

impl Request {
    /// The request an httpGet action describes (upstream's NewRequestForHTTPGetAction): host
    /// defaults to the pod IP, the port may be named, `User-Agent` and `Accept: */*` are added
    /// unless httpHeaders set them (an empty Accept removes it).
    pub(super) fn for_action(
        action: &HTTPGetAction,
        target: &ProbeTarget,
        user_agent: &str,
    ) -> Result<Request, String> {
        let scheme = action
            .scheme
            .as_deref()
            .filter(|s| !s.is_empty())
            .unwrap_or("HTTP")
            .to_ascii_lowercase();
        let host = match action.host.as_deref().filter(|h| !h.is_empty()) {
            Some(host) => host.to_string(),
            None => target_host(target)?,
        };
        let port = resolve_port(&action.port, &target.container)?;
        let path = action.path.as_deref().unwrap_or_default();
        let path = if path.starts_with('/') {
            path.to_string()
        } else {
            format!("/{path}")
        };
        let mut headers: Vec<(String, String)> = action
            .http_headers
            .iter()
            .flatten()
            .map(|h| (h.name.clone(), h.value.clone()))
            .collect();
        let has = |headers: &[(String, String)], name: &str| {
            headers
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.clone())
        };
        if has(&headers, "User-Agent").is_none() {
            headers.push(("User-Agent".into(), user_agent.into()));
        }
        match has(&headers, "Accept") {
            None => headers.push(("Accept".into(), "*/*".into())),
            Some(value) if value.is_empty() => {
                headers.retain(|(n, _)| !n.eq_ignore_ascii_case("Accept"))
            }
            Some(_) => {}
        }
        // Go sends the Host header from the request's Host, never from the header list.
        let host_header = has(&headers, "Host").filter(|h| !h.is_empty());
        headers.retain(|(n, _)| !n.eq_ignore_ascii_case("Host"));
        Ok(Request {
            url: Url {
                scheme,
                host,
                port,
                path: escape_path(&path),
            },
            host_header,
            headers,
        })
    }
}

/// The final response of a GET (after same-host redirects).
#[derive(Debug)]
pub(super) struct Response {
    pub(super) status: u16,
    /// At most [`MAX_BODY`] bytes.
    pub(super) body: Bytes,
}

/// Why a GET got no response, with the URL in Go's words (`Get "http://...": ...`).
#[derive(Debug)]
pub(super) struct GetError {
    pub(super) message: String,
    /// The TLS handshake was answered in plain HTTP (hooks retry over HTTP then).
    pub(super) plain_http_reply: bool,
}

/// An httpGet probe: 2xx passes, 3xx passes with a warning (a redirect not followed), anything
/// else fails with the status code (never the body, as upstream).
pub(super) async fn probe(request: Request, timeout: Duration) -> Outcome {
    let url = request.url.to_string();
    match tokio::time::timeout(timeout, get(&request)).await {
        Err(_) => Outcome::Failure(format!(
            "Get {url:?}: context deadline exceeded (Client.Timeout exceeded while awaiting headers)"
        )),
        Ok(Err(e)) => Outcome::Failure(e.message),
        Ok(Ok(response)) => {
            let body = String::from_utf8_lossy(&response.body).into_owned();
            match response.status {
                200..=299 => Outcome::Success(body),
                300..=399 => {
                    Outcome::Warning(format!("Probe terminated redirects, Response body: {body}"))
                }
                code => Outcome::Failure(format!("HTTP probe failed with statuscode: {code}")),
            }
        }
    }
}

/// Sends the GET, following redirects to the same host name (up to 10 requests); a redirect
/// elsewhere ends it with the redirect response itself.
pub(super) async fn get(request: &Request) -> Result<Response, GetError> {
    let mut url = request.url.clone();
    let mut host_header = request.host_header.clone();
    let mut requests = 0;
    loop {
        let sent = send(&url, host_header.as_deref(), &request.headers).await;
        let (response, location) = sent.map_err(|e| GetError {
            message: format!("Get {:?}: {}", url.to_string(), e.message),
            ..e
        })?;
        requests += 1;
        let Some(location) =
            location.filter(|_| matches!(response.status, 301 | 302 | 303 | 307 | 308))
        else {
            return Ok(response);
        };
        let next = url.join(&location).map_err(|e| GetError {
            message: format!("Get {:?}: {e}", url.to_string()),
            plain_http_reply: false,
        })?;
        if next.host != request.url.host {
            return Ok(response);
        }
        let failed = |message: String| GetError {
            message: format!("Get {:?}: {message}", next.to_string()),
            plain_http_reply: false,
        };
        if requests >= MAX_REQUESTS {
            return Err(failed(format!("stopped after {MAX_REQUESTS} redirects")));
        }
        if next.scheme != "http" && next.scheme != "https" {
            return Err(failed(format!(
                "unsupported protocol scheme {:?}",
                next.scheme
            )));
        }
        // A Host override survives only a redirect that stays on the same authority.
        if (&next.scheme, &next.port) != (&url.scheme, &url.port) {
            host_header = None;
        }
        url = next;
    }
}

/// One request on a new connection: the response (body read up to the limit) and its Location.
async fn send(
    url: &Url,
    host_header: Option<&str>,
    headers: &[(String, String)],
) -> Result<(Response, Option<String>), GetError> {
    let plain = |message: String| GetError {
        message,
        plain_http_reply: false,
    };
    if url.scheme != "http" && url.scheme != "https" {
        return Err(plain(format!(
            "unsupported protocol scheme {:?}",
            url.scheme
        )));
    }
    let authority = join_host_port(&url.host, url.port);
    let mut builder = http::Request::get(url.path.as_str())
        .header(http::header::HOST, host_header.unwrap_or(&authority));
    for (name, value) in headers {
        builder = builder.header(name.as_str(), value.as_str());
    }
    let request = builder
        .header(http::header::CONNECTION, "close")
        .body(Empty::<Bytes>::new())
        .map_err(|e| plain(format!("net/http: invalid request: {e}")))?;

    let tcp = TcpStream::connect((url.host.as_str(), url.port))
        .await
        .map_err(|e| plain(format!("dial tcp {authority}: {}", describe_io_error(&e))))?;
    let _ = tcp.set_nodelay(true);
    if url.scheme == "https" {
        let name = rustls::pki_types::ServerName::try_from(url.host.clone())
            .map_err(|e| plain(format!("tls: invalid server name {:?}: {e}", url.host)))?;
        let tls = tls_connector().connect(name, tcp).await.map_err(|e| {
            let plain_http_reply = e
                .get_ref()
                .and_then(|inner| inner.downcast_ref::<rustls::Error>())
                .is_some_and(|e| matches!(e, rustls::Error::InvalidMessage(_)));
            GetError {
                message: format!("tls: {e}"),
                plain_http_reply,
            }
        })?;
        exchange(TokioIo::new(tls), request).await.map_err(plain)
    } else {
        exchange(TokioIo::new(tcp), request).await.map_err(plain)
    }
}

async fn exchange<T>(
    io: T,
    request: http::Request<Empty<Bytes>>,
) -> Result<(Response, Option<String>), String>
where
    T: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (mut sender, connection) = hyper::client::conn::http1::Builder::new()
        .title_case_headers(true)
        .handshake(io)
        .await
        .map_err(|e| e.to_string())?;
    let _driver = AbortOnDrop(tokio::spawn(async move {
        let _ = connection.await;
    }));
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| e.to_string())?;
    let status = response.status().as_u16();
    let location = response
        .headers()
        .get(http::header::LOCATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let body = read_limited(response.into_body(), MAX_BODY)
        .await
        .map_err(|e| e.to_string())?;
    Ok((Response { status, body }, location))
}

/// Reads at most `limit` bytes of a body; the rest is never read (the connection is dropped).
async fn read_limited(mut body: Incoming, limit: usize) -> Result<Bytes, hyper::Error> {
    let mut buf = BytesMut::new();
    while buf.len() < limit {
        match body.frame().await {
            None => break,
            Some(frame) => {
                if let Ok(data) = frame?.into_data() {
                    buf.extend_from_slice(&data);
                }
            }
        }
    }
    buf.truncate(limit);
    Ok(buf.freeze())
}

/// Aborts a connection's task when the request is done (or abandoned on timeout).
pub(super) struct AbortOnDrop(pub(super) tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// TLS for HTTPS probes and hooks: like upstream's prober, the certificate is not verified
/// (the kubelet cannot know the pod's CA).
fn tls_connector() -> tokio_rustls::TlsConnector {
    static CONFIG: OnceLock<Arc<rustls::ClientConfig>> = OnceLock::new();
    let config = CONFIG.get_or_init(|| {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .expect("the ring provider supports rustls' default protocol versions")
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAnyCertificate(provider)))
            .with_no_client_auth();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Arc::new(config)
    });
    tokio_rustls::TlsConnector::from(config.clone())
}

#[derive(Debug)]
struct AcceptAnyCertificate(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AcceptAnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::prober::tests::{container_with_port, target};
    use crate::prober::{ProbeResult, probe_once};
    use http_body_util::Full;
    use hyper::service::service_fn;
    use k8s_openapi::api::core::v1::{HTTPHeader, Probe};
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
    use std::sync::Mutex;

    /// What the test server saw of each request.
    #[derive(Debug, Clone)]
    pub(crate) struct Seen {
        pub(crate) path: String,
        pub(crate) headers: http::HeaderMap,
    }

    /// A local HTTP/1.1 server answering by path:
    /// `/ok` 200, `/status/N` N, `/big` 200 with 64 KiB, `/redirect-same` 302 to `/ok`,
    /// `/redirect-other` 302 to `http://localhost:<port>/ok`, `/loop` 302 to itself,
    /// `/slow` never answers.
    pub(crate) struct TestServer {
        pub(crate) port: u16,
        pub(crate) seen: Arc<Mutex<Vec<Seen>>>,
        task: tokio::task::JoinHandle<()>,
    }

    impl Drop for TestServer {
        fn drop(&mut self) {
            self.task.abort();
        }
    }

    async fn respond(
        req: http::Request<Incoming>,
        port: u16,
        seen: Arc<Mutex<Vec<Seen>>>,
    ) -> Result<http::Response<Full<Bytes>>, std::convert::Infallible> {
        let path = req.uri().path().to_string();
        seen.lock().unwrap().push(Seen {
            path: req.uri().to_string(),
            headers: req.headers().clone(),
        });
        let reply = |status: u16, body: Bytes| {
            http::Response::builder()
                .status(status)
                .body(Full::new(body))
                .unwrap()
        };
        let redirect = |to: String| {
            http::Response::builder()
                .status(302)
                .header("Location", to)
                .body(Full::new(Bytes::from_static(b"moved")))
                .unwrap()
        };
        Ok(match path.as_str() {
            "/ok" => reply(200, Bytes::from_static(b"fine")),
            "/big" => reply(200, Bytes::from(vec![b'x'; 64 * 1024])),
            "/redirect-same" => redirect("/ok".into()),
            "/redirect-other" => redirect(format!("http://localhost:{port}/ok")),
            "/loop" => redirect("loop".into()),
            "/slow" => {
                tokio::time::sleep(Duration::from_secs(30)).await;
                reply(200, Bytes::new())
            }
            p if p.starts_with("/status/") => {
                reply(p[8..].parse().unwrap(), Bytes::from_static(b"secret body"))
            }
            _ => reply(404, Bytes::new()),
        })
    }

    pub(crate) async fn serve() -> TestServer {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let seen2 = seen.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let seen = seen2.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req| respond(req, port, seen.clone()));
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        TestServer { port, seen, task }
    }

    fn http_probe(path: &str, port: IntOrString) -> Probe {
        Probe {
            http_get: Some(HTTPGetAction {
                path: Some(path.into()),
                port,
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    async fn run(path: &str, server: &TestServer) -> Outcome {
        let (t, _dir) = target(container_with_port("http", i32::from(server.port)));
        crate::prober::run_probe(&http_probe(path, IntOrString::String("http".into())), &t).await
    }

    #[tokio::test]
    async fn success_sends_upstream_headers() {
        let server = serve().await;
        let (t, _dir) = target(container_with_port("http", i32::from(server.port)));
        let mut probe = http_probe("/ok", IntOrString::String("http".into()));
        probe.http_get.as_mut().unwrap().http_headers = Some(vec![
            HTTPHeader {
                name: "X-Custom".into(),
                value: "a".into(),
            },
            HTTPHeader {
                name: "x-custom".into(),
                value: "b".into(),
            },
            HTTPHeader {
                name: "Host".into(),
                value: "example.test".into(),
            },
        ]);
        assert_eq!(probe_once(&probe, &t).await, ProbeResult::Success);
        let seen = server.seen.lock().unwrap().clone();
        assert_eq!(seen.len(), 1);
        let h = &seen[0].headers;
        assert_eq!(h["user-agent"], "kube-probe/1.33");
        assert_eq!(h["accept"], "*/*");
        assert_eq!(h["host"], "example.test");
        assert_eq!(h["connection"], "close");
        let custom: Vec<_> = h
            .get_all("x-custom")
            .iter()
            .map(|v| v.to_str().unwrap())
            .collect();
        assert_eq!(custom, ["a", "b"]);
    }

    #[tokio::test]
    async fn user_agent_and_accept_can_be_overridden_or_removed() {
        let server = serve().await;
        let (t, _dir) = target(Container::default());
        let mut probe = http_probe("ok", IntOrString::Int(i32::from(server.port)));
        probe.http_get.as_mut().unwrap().http_headers = Some(vec![
            HTTPHeader {
                name: "user-agent".into(),
                value: "mine".into(),
            },
            HTTPHeader {
                name: "Accept".into(),
                value: String::new(),
            },
        ]);
        assert_eq!(probe_once(&probe, &t).await, ProbeResult::Success);
        let seen = server.seen.lock().unwrap().clone();
        assert_eq!(seen[0].path, "/ok");
        assert_eq!(seen[0].headers["user-agent"], "mine");
        assert!(seen[0].headers.get("accept").is_none());
        assert_eq!(
            seen[0].headers["host"],
            format!("127.0.0.1:{}", server.port)
        );
    }

    use k8s_openapi::api::core::v1::Container;

    #[tokio::test]
    async fn status_codes() {
        let server = serve().await;
        assert_eq!(
            run("/status/204", &server).await,
            Outcome::Success(String::new())
        );
        assert_eq!(
            run("/status/399", &server).await,
            Outcome::Warning("Probe terminated redirects, Response body: secret body".into())
        );
        for code in [400, 404, 500, 503] {
            assert_eq!(
                run(&format!("/status/{code}"), &server).await,
                Outcome::Failure(format!("HTTP probe failed with statuscode: {code}"))
            );
        }
    }

    #[tokio::test]
    async fn redirects_follow_same_host_only() {
        let server = serve().await;
        assert_eq!(
            run("/redirect-same", &server).await,
            Outcome::Success("fine".into())
        );
        let paths: Vec<_> = server
            .seen
            .lock()
            .unwrap()
            .iter()
            .map(|s| s.path.clone())
            .collect();
        assert_eq!(paths, ["/redirect-same", "/ok"]);

        // localhost is another host name than 127.0.0.1: not followed, a warning.
        assert_eq!(
            run("/redirect-other", &server).await,
            Outcome::Warning("Probe terminated redirects, Response body: moved".into())
        );
        assert_eq!(server.seen.lock().unwrap().len(), 3);

        let port = server.port;
        assert_eq!(
            run("/loop", &server).await,
            Outcome::Failure(format!(
                "Get \"http://127.0.0.1:{port}/loop\": stopped after 10 redirects"
            ))
        );
    }

    #[tokio::test]
    async fn body_is_read_at_most_10_kib() {
        let server = serve().await;
        match run("/big", &server).await {
            Outcome::Success(body) => assert_eq!(body.len(), MAX_BODY),
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn timeout_and_refused() {
        let server = serve().await;
        let port = server.port;
        let started = std::time::Instant::now();
        let outcome = run("/slow", &server).await;
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "{:?}",
            started.elapsed()
        );
        assert_eq!(
            outcome,
            Outcome::Failure(format!(
                "Get \"http://127.0.0.1:{port}/slow\": context deadline exceeded (Client.Timeout exceeded while awaiting headers)"
            ))
        );
        drop(server);
        tokio::time::sleep(Duration::from_millis(50)).await;
        let (t, _dir) = target(Container::default());
        let outcome =
            crate::prober::run_probe(&http_probe("/", IntOrString::Int(i32::from(port))), &t).await;
        assert_eq!(
            outcome,
            Outcome::Failure(format!(
                "Get \"http://127.0.0.1:{port}/\": dial tcp 127.0.0.1:{port}: connect: connection refused"
            ))
        );
    }

    #[tokio::test]
    async fn https_without_verification() {
        let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        let key =
            rustls::pki_types::PrivateKeyDer::try_from(cert.signing_key.serialize_der()).unwrap();
        let server_config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert.cert.der().clone()], key)
        .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server_config));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = tokio::spawn(async move {
            let (stream, _) = listener.accept().await.unwrap();
            let tls = acceptor.accept(stream).await.unwrap();
            let service = service_fn(|_req| async {
                Ok::<_, std::convert::Infallible>(
                    http::Response::builder()
                        .status(503)
                        .body(Full::new(Bytes::new()))
                        .unwrap(),
                )
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(tls), service)
                .await;
        });
        let (t, _dir) = target(Container::default());
        let mut probe = http_probe("/", IntOrString::Int(i32::from(port)));
        probe.http_get.as_mut().unwrap().scheme = Some("HTTPS".into());
        assert_eq!(
            probe_once(&probe, &t).await,
            ProbeResult::Failure("HTTP probe failed with statuscode: 503".into())
        );
        server.abort();
    }

    #[test]
    fn redirect_locations_resolve() {
        let base = Url {
            scheme: "http".into(),
            host: "10.0.0.1".into(),
            port: 8080,
            path: "/a/b?x=1".into(),
        };
        let at = |path: &str| Url {
            path: path.into(),
            ..base.clone()
        };
        assert_eq!(base.join("/c").unwrap(), at("/c"));
        assert_eq!(base.join("c#frag").unwrap(), at("/a/c"));
        assert_eq!(base.join("?y=2").unwrap(), at("/a/b?y=2"));
        assert_eq!(
            base.join("HTTPS://[::1]/z").unwrap(),
            Url {
                scheme: "https".into(),
                host: "::1".into(),
                port: 443,
                path: "/z".into()
            }
        );
        assert_eq!(
            base.join("//other:81").unwrap(),
            Url {
                scheme: "http".into(),
                host: "other".into(),
                port: 81,
                path: "/".into()
            }
        );
        assert_eq!(escape_path("/a b"), "/a%20b");
    }
}
