//! HTTPS serving: TLS with optional client certificates, HTTP/1.1 and HTTP/2, authentication,
//! and dispatch of non-resource paths (health, version, metrics, discovery, OpenAPI).

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, combinators::BoxBody};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::Value;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use crate::ApiServer;
use crate::auth::UserInfo;
use crate::error::ApiError;
use crate::request::{DiscoveryPath, Route};

pub type Body = BoxBody<Bytes, std::io::Error>;

/// Accept connections until the listener fails; each connection is served on its own task.
pub async fn serve(
    server: Arc<ApiServer>,
    tls: Arc<rustls::ServerConfig>,
    listener: TcpListener,
) -> std::io::Result<()> {
    let acceptor = TlsAcceptor::from(tls);
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(conn) => conn,
            Err(e) => {
                // Running out of file descriptors must not stop the server.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let server = server.clone();
        tokio::spawn(async move {
            let tls = match acceptor.accept(tcp).await {
                Ok(tls) => tls,
                Err(e) => {
                    tracing::debug!(%peer, error = %e, "TLS handshake failed");
                    return;
                }
            };
            let cert_user = tls
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|certs| certs.first())
                .and_then(|cert| pki::identity_from_cert(cert.as_ref()))
                .map(|(name, groups)| UserInfo::from_cert(name, groups));
            let service = service_fn(move |req| {
                let server = server.clone();
                let cert_user = cert_user.clone();
                async move { Ok::<_, Infallible>(handle(server, req, cert_user).await) }
            });
            let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            if let Err(e) = builder
                .serve_connection_with_upgrades(TokioIo::new(tls), service)
                .await
            {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        });
    }
}

async fn handle(
    server: Arc<ApiServer>,
    req: Request<Incoming>,
    cert_user: Option<UserInfo>,
) -> Response<Body> {
    let started = Instant::now();
    let path = req.uri().path().to_string();
    let (mut response, verb, resource) = dispatch(&server, req, cert_user).await;
    let code = response.status().as_u16();
    server
        .metrics
        .observe_request(&verb, &resource, code, started.elapsed().as_secs_f64());
    if verb != "watch" {
        tracing::debug!(%path, verb, code, micros = started.elapsed().as_micros() as u64, "request");
    }
    response.headers_mut().insert(
        "cache-control",
        HeaderValue::from_static("no-cache, private"),
    );
    response
}

async fn dispatch(
    server: &Arc<ApiServer>,
    req: Request<Incoming>,
    cert_user: Option<UserInfo>,
) -> (Response<Body>, String, String) {
    let path = req.uri().path().to_string();
    let get = req.method() == http::Method::GET;
    // Probes and version are open to anonymous clients, as upstream's default RBAC allows.
    match path.as_str() {
        "/healthz" | "/livez" | "/readyz" if get => {
            return (text(StatusCode::OK, "ok"), "get".into(), path);
        }
        "/version" if get => return (json(StatusCode::OK, &version()), "get".into(), path),
        // Agents joining with a node token fetch the CA here and check it against the token.
        "/cacerts" if get => {
            let response = match &server.config.cluster_tls {
                Some(tls) => bytes(
                    StatusCode::OK,
                    "text/plain; charset=utf-8",
                    Bytes::from(tls.server_ca_pem.clone()),
                ),
                None => error(&not_found_path(&path)),
            };
            return (response, "get".into(), path);
        }
        _ => {}
    }
    let authorization = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let user = server.tokens.authenticate(authorization).or(cert_user);
    let Some(user) = user else {
        return (
            error(&ApiError::unauthorized()),
            "unauthenticated".into(),
            path,
        );
    };
    let accept = header_str(&req, header::ACCEPT).to_string();
    // metrics.k8s.io is served from kubelet summaries, not from the store.
    if let Some(target) = crate::metrics_api::route(&path) {
        return crate::metrics_api::handle(server, req.method(), req.uri(), target).await;
    }
    match crate::request::route(&path) {
        // Logs, exec, attach and port-forward go to the pod's kubelet; upgraded requests must
        // reach it with their body unread.
        Route::Resource(target) if crate::proxy::is_kubelet_subresource(&target) => {
            let resource = target.resource.group_resource();
            let (response, verb) = crate::proxy::handle(server, req, target, user).await;
            (response, verb, resource)
        }
        Route::Resource(target) => {
            let resource = target.resource.group_resource();
            let (response, verb) = crate::rest::handle(server, req, target, user).await;
            (response, verb, resource)
        }
        Route::Discovery(d) => (
            discovery(server, &d, &accept, get),
            "get".into(),
            "discovery".into(),
        ),
        Route::NotFound => (
            error(&not_found_path(&path)),
            "get".into(),
            "unknown".into(),
        ),
        Route::NonResource if get => (
            non_resource(server, &path, req.uri().query(), &accept),
            "get".into(),
            path,
        ),
        Route::NonResource => (error(&not_found_path(&path)), "unknown".into(), path),
    }
}

fn not_found_path(path: &str) -> ApiError {
    ApiError::not_found_message(format!(
        "the server could not find the requested resource ({path})"
    ))
}

fn discovery(server: &ApiServer, path: &DiscoveryPath, accept: &str, get: bool) -> Response<Body> {
    if !get {
        return error(&ApiError::method_not_allowed(
            "discovery documents are read-only",
        ));
    }
    let aggregated = crate::discovery::negotiate_aggregated(accept);
    let doc = match (path, aggregated) {
        (DiscoveryPath::Api, Some(v)) => {
            return aggregated_response(crate::discovery::aggregated(true, v), v);
        }
        (DiscoveryPath::Apis, Some(v)) => {
            return aggregated_response(crate::discovery::aggregated(false, v), v);
        }
        (DiscoveryPath::Api, None) => Some(crate::discovery::api_versions(
            &server.config.advertise_address.to_string(),
        )),
        (DiscoveryPath::Apis, None) => Some(crate::discovery::api_group_list()),
        (DiscoveryPath::Group(g), _) => crate::discovery::api_group_doc(g),
        (DiscoveryPath::GroupVersion(g, v), _) => crate::discovery::api_resource_list(g, v),
    };
    match doc {
        Some(doc) => json(StatusCode::OK, &doc),
        None => error(&ApiError::not_found_message(
            "the server could not find the requested resource",
        )),
    }
}

fn aggregated_response(doc: Value, version: &'static str) -> Response<Body> {
    let mut response = json(StatusCode::OK, &doc);
    let content_type = if version == "v2" {
        crate::discovery::AGGREGATED_V2
    } else {
        crate::discovery::AGGREGATED_V2BETA1
    };
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

fn non_resource(
    server: &ApiServer,
    path: &str,
    query: Option<&str>,
    accept: &str,
) -> Response<Body> {
    match path {
        "/metrics" => {
            server
                .metrics
                .cached_objects
                .set(server.cache.counts().iter().map(|(_, n)| *n as i64).sum());
            bytes(
                StatusCode::OK,
                "text/plain; version=0.0.4; charset=utf-8",
                Bytes::from(server.metrics.encode()),
            )
        }
        "/openapi/v2" => {
            let doc = server.openapi_v2.get_or_init(|| {
                let v2 = api::openapi::v2();
                let protobuf = Bytes::from(api::openapi::v2_protobuf(&v2));
                (
                    Bytes::from(serde_json::to_vec(&v2).expect("serializes")),
                    protobuf,
                )
            });
            // kubectl 1.27 and 1.28 only read the protobuf form.
            if api::openapi::accepts_v2_protobuf(accept) {
                bytes(
                    StatusCode::OK,
                    api::openapi::V2_PROTOBUF_CONTENT_TYPE,
                    doc.1.clone(),
                )
            } else if accept_json(accept) {
                bytes(StatusCode::OK, "application/json", doc.0.clone())
            } else {
                error(&ApiError::not_acceptable(accept))
            }
        }
        "/openapi/v3" => {
            let docs = openapi_v3(server);
            let paths: serde_json::Map<String, Value> = docs
                .iter()
                .map(|(p, (hash, _))| {
                    (p.clone(), serde_json::json!({"serverRelativeURL": format!("/openapi/v3/{p}?hash={hash}")}))
                })
                .collect();
            json(StatusCode::OK, &serde_json::json!({"paths": paths}))
        }
        p if p.starts_with("/openapi/v3/") => {
            let wanted = &p["/openapi/v3/".len()..];
            match openapi_v3(server).get(wanted) {
                Some((hash, doc)) => {
                    let mut response = bytes(StatusCode::OK, "application/json", doc.clone());
                    if query.is_some_and(|q| q.contains("hash=")) {
                        response.headers_mut().insert(
                            header::CACHE_CONTROL,
                            HeaderValue::from_static("public, immutable"),
                        );
                    }
                    if let Ok(etag) = HeaderValue::from_str(&format!("\"{hash}\"")) {
                        response.headers_mut().insert(header::ETAG, etag);
                    }
                    response
                }
                None => error(&not_found_path(path)),
            }
        }
        _ => error(&not_found_path(path)),
    }
}

fn openapi_v3(server: &ApiServer) -> &std::collections::BTreeMap<String, (String, Bytes)> {
    server.openapi_v3.get_or_init(|| {
        api::openapi::v3_paths()
            .into_iter()
            .filter_map(|p| {
                let doc = api::openapi::v3_document(&p)?;
                let bytes = Bytes::from(serde_json::to_vec(&doc).ok()?);
                let hash = content_hash(&bytes);
                Some((p, (hash, bytes)))
            })
            .collect()
    })
}

/// A stable hash of a document, used as its cache key in the OpenAPI v3 index.
fn content_hash(bytes: &[u8]) -> String {
    // FNV-1a, 64 bits: enough to tell versions of a document apart.
    let mut hash: u64 = 0xcbf29ce484222325;
    for b in bytes {
        hash ^= u64::from(*b);
        hash = hash.wrapping_mul(0x100000001b3);
    }
    format!("{hash:016X}")
}

pub fn version() -> Value {
    serde_json::json!({
        "major": "1",
        "minor": "33",
        "gitVersion": concat!("v1.33.0+rkube.", env!("CARGO_PKG_VERSION")),
        "gitCommit": "",
        "gitTreeState": "clean",
        "buildDate": "1970-01-01T00:00:00Z",
        "goVersion": "rust",
        "compiler": "rustc",
        "platform": "linux/amd64",
    })
}

/// Whether a client accepts JSON (absent, `*/*`, `application/*` or `application/json`).
pub fn accept_json(accept: &str) -> bool {
    accept.is_empty()
        || accept.split(',').any(|part| {
            let media = part.split(';').next().unwrap_or("").trim();
            matches!(media, "*/*" | "application/*" | "application/json" | "")
        })
}

pub fn header_str<B>(req: &Request<B>, name: header::HeaderName) -> &str {
    req.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

pub fn full(body: impl Into<Bytes>) -> Body {
    Full::new(body.into())
        .map_err(|never| match never {})
        .boxed()
}

pub fn bytes(code: StatusCode, content_type: &'static str, body: Bytes) -> Response<Body> {
    let mut response = Response::new(full(body));
    *response.status_mut() = code;
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

pub fn json(code: StatusCode, value: &Value) -> Response<Body> {
    bytes(
        code,
        "application/json",
        Bytes::from(serde_json::to_vec(value).expect("JSON values serialize")),
    )
}

pub fn text(code: StatusCode, body: &'static str) -> Response<Body> {
    bytes(
        code,
        "text/plain; charset=utf-8",
        Bytes::from_static(body.as_bytes()),
    )
}

pub fn error(err: &ApiError) -> Response<Body> {
    json(err.code, &err.to_status())
}
