//! The pod subresources a kubelet serves: `log`, `exec`, `attach` and `portforward`.
//!
//! As upstream's pod registry: resolve the pod and its container (the same checks and messages),
//! find the node's kubelet (`InternalIP` : `daemonEndpoints.kubeletEndpoint.port`), and call it
//! over TLS with the API server's kubelet-client certificate, at the kubelet's own paths
//! (`/containerLogs/{ns}/{pod}/{container}`, `/exec/...`, `/attach/...`,
//! `/portForward/{ns}/{pod}`). Like upstream without `--kubelet-certificate-authority`, the
//! kubelet's serving certificate is not verified.
//!
//! Plain requests (logs) stream the kubelet's response back, so `logs -f` follows. Upgrade
//! requests (WebSocket or SPDY/3.1, as kubectl sends for exec, attach and port-forward) are
//! forwarded with their upgrade headers; the kubelet's `101 Switching Protocols` goes back to
//! the client with its headers, then both upgraded connections are spliced byte for byte, so
//! any stream protocol the two ends agree on works through the API server.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use k8s_openapi::api::core::v1::{Container, Node, Pod};
use rustls::pki_types::ServerName;

use crate::ApiServer;
use crate::auth::UserInfo;
use crate::error::{ApiError, ApiResult, Subject};
use crate::http::Body;
use crate::request::Target;

/// Upstream's default kubelet port, when a Node does not say.
const DEFAULT_KUBELET_PORT: u16 = 10250;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Upstream reads at most this much of a kubelet's error response.
const MAX_ERROR_BODY: usize = 4096;
const DEFAULT_CONTAINER_ANNOTATION: &str = "kubectl.kubernetes.io/default-container";

/// Whether the request addresses a pod subresource that the pod's kubelet serves.
pub fn is_kubelet_subresource(target: &Target) -> bool {
    target.resource.group.is_empty()
        && target.resource.plural == "pods"
        && matches!(
            target.subresource.as_deref(),
            Some("log" | "exec" | "attach" | "portforward")
        )
}

/// Serve a kubelet subresource; returns the response and the verb for metrics.
pub async fn handle(
    server: &Arc<ApiServer>,
    req: Request<Incoming>,
    target: Target,
    _user: UserInfo,
) -> (Response<Body>, String) {
    let sub = target.subresource.clone().unwrap_or_default();
    let verb = if sub == "log" { "get" } else { "connect" };
    let response = match proxy(server, req, &target, &sub).await {
        Ok(response) => response,
        Err(e) => crate::http::error(&e),
    };
    (response, verb.to_string())
}

/// One query parameter as sent (still percent-encoded) and its decoded value.
struct Param<'a> {
    key: String,
    raw: &'a str,
    value: String,
}

fn params(query: Option<&str>) -> Vec<Param<'_>> {
    query
        .unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            Param {
                key: crate::request::percent_decode(k),
                raw: v,
                value: crate::request::percent_decode(v),
            }
        })
        .collect()
}

fn is_true(value: &str) -> bool {
    matches!(value, "1" | "t" | "T" | "true" | "TRUE" | "True")
}

/// The kubelet's query for a subresource request, from the client's query: log options as
/// they are; exec/attach flags renamed to the kubelet's `input`/`output`/`error`/`tty` (set
/// to `1`); exec commands in order; port-forward ports.
pub fn kubelet_query(sub: &str, query: Option<&str>) -> String {
    let mut out: Vec<String> = Vec::new();
    for p in params(query) {
        let key = p.key.as_str();
        match (sub, key) {
            ("log", "follow" | "previous" | "timestamps" | "insecureSkipTLSVerifyBackend")
                if is_true(&p.value) =>
            {
                out.push(format!("{key}=true"));
            }
            ("log", "sinceSeconds" | "sinceTime" | "tailLines" | "limitBytes" | "stream") => {
                out.push(format!("{key}={}", p.raw));
            }
            ("exec" | "attach", "stdin" | "stdout" | "stderr" | "tty") if is_true(&p.value) => {
                let kubelet_key = match key {
                    "stdin" => "input",
                    "stdout" => "output",
                    "stderr" => "error",
                    _ => "tty",
                };
                out.push(format!("{kubelet_key}=1"));
            }
            ("exec", "command") => out.push(format!("command={}", p.raw)),
            ("portforward", "ports") => out.push(format!("ports={}", p.raw)),
            _ => {}
        }
    }
    out.join("&")
}

fn container_names(containers: &[Container]) -> String {
    containers
        .iter()
        .map(|c| c.name.as_str())
        .collect::<Vec<_>>()
        .join(" ")
}

/// The container a request is for, with upstream's checks and messages: the named one (a
/// container or an init container), else the only container, else the one the
/// `kubectl.kubernetes.io/default-container` annotation names.
pub fn select_container(pod: &Pod, name: &str, requested: Option<&str>) -> ApiResult<String> {
    let spec = pod.spec.clone().unwrap_or_default();
    let init = spec.init_containers.unwrap_or_default();
    let has = |c: &str| {
        spec.containers
            .iter()
            .chain(init.iter())
            .any(|x| x.name == c)
    };
    if let Some(container) = requested {
        if has(container) {
            return Ok(container.to_string());
        }
        return Err(ApiError::bad_request(format!(
            "container {container} is not valid for pod {name}"
        )));
    }
    match spec.containers.as_slice() {
        [only] => return Ok(only.name.clone()),
        [] => {
            return Err(ApiError::bad_request(format!(
                "a container name must be specified for pod {name}"
            )));
        }
        _ => {}
    }
    if let Some(default) = pod
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(DEFAULT_CONTAINER_ANNOTATION))
        && has(default)
    {
        return Ok(default.clone());
    }
    let mut message = format!(
        "a container name must be specified for pod {name}, choose one of: [{}]",
        container_names(&spec.containers)
    );
    if !init.is_empty() {
        message.push_str(&format!(
            " or one of the init containers: [{}]",
            container_names(&init)
        ));
    }
    Err(ApiError::bad_request(message))
}

/// Where a node's kubelet listens: its InternalIP (else another address that is an IP) and
/// `daemonEndpoints.kubeletEndpoint.port`.
pub fn kubelet_address(node: &Node) -> Option<SocketAddr> {
    let status = node.status.as_ref()?;
    let addresses = status.addresses.as_deref().unwrap_or_default();
    let ip: IpAddr = ["InternalIP", "ExternalIP", "Hostname"]
        .iter()
        .flat_map(|t| addresses.iter().filter(move |a| a.type_ == *t))
        .find_map(|a| a.address.parse().ok())?;
    let port = status
        .daemon_endpoints
        .as_ref()
        .and_then(|d| d.kubelet_endpoint.as_ref())
        .map(|e| e.port)
        .and_then(|p| u16::try_from(p).ok())
        .filter(|p| *p != 0)
        .unwrap_or(DEFAULT_KUBELET_PORT);
    Some(SocketAddr::new(ip, port))
}

fn is_upgrade<B>(req: &Request<B>) -> bool {
    let has_token = |name: header::HeaderName, token: &str| {
        req.headers().get_all(name).iter().any(|v| {
            v.to_str()
                .is_ok_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
        })
    };
    has_token(header::CONNECTION, "upgrade") && req.headers().contains_key(header::UPGRADE)
}

fn get_cached<T: serde::de::DeserializeOwned>(
    server: &ApiServer,
    plural: &str,
    namespace: Option<&str>,
    name: &str,
) -> ApiResult<T> {
    let resource = api::resources::storage_row(plural).expect("core resources are registered");
    let not_found = || {
        ApiError::not_found(Subject {
            group: "",
            resource: plural,
            name,
        })
    };
    let object = server
        .cache
        .get(resource, &resource.key(namespace, name))
        .ok_or_else(not_found)?;
    serde_json::from_slice(&object.json)
        .map_err(|e| ApiError::internal(format!("decoding {plural} {name:?}: {e}")))
}

async fn proxy(
    server: &Arc<ApiServer>,
    mut req: Request<Incoming>,
    target: &Target,
    sub: &str,
) -> ApiResult<Response<Body>> {
    let allowed = if sub == "log" {
        req.method() == Method::GET
    } else {
        matches!(*req.method(), Method::GET | Method::POST)
    };
    if !allowed {
        return Err(ApiError::method_not_allowed(format!(
            "the {sub} subresource of pods does not accept {}",
            req.method()
        )));
    }
    let namespace = target.namespace.as_deref().unwrap_or("default");
    let name = target.name.as_deref().ok_or_else(|| {
        ApiError::not_found_message(format!("the {sub} subresource needs a pod name"))
    })?;
    let pod: Pod = get_cached(server, "pods", Some(namespace), name)?;
    let query = req.uri().query().map(str::to_string);
    let requested = params(query.as_deref())
        .into_iter()
        .find(|p| p.key == "container" && !p.value.is_empty())
        .map(|p| p.value);
    let container = match sub {
        "portforward" => None,
        _ => Some(select_container(&pod, name, requested.as_deref())?),
    };
    let node_name = pod
        .spec
        .as_ref()
        .and_then(|s| s.node_name.clone())
        .filter(|n| !n.is_empty());
    let Some(node_name) = node_name else {
        if sub == "log" {
            // Upstream: a pod not yet on a node has no logs, and that is not an error.
            return Ok(crate::http::bytes(
                StatusCode::OK,
                "text/plain",
                Bytes::new(),
            ));
        }
        return Err(ApiError::bad_request(format!(
            "pod {name} does not have a host assigned"
        )));
    };
    if sub != "log" && !is_upgrade(&req) {
        return Err(ApiError::bad_request("Upgrade request required"));
    }
    let node: Node = get_cached(server, "nodes", None, &node_name)?;
    let address = kubelet_address(&node).ok_or_else(|| {
        ApiError::internal(format!(
            "node {node_name} has no address to reach its kubelet at"
        ))
    })?;
    let tls = server
        .config
        .cluster_tls
        .as_ref()
        .ok_or_else(|| ApiError::unavailable("this API server has no credentials for kubelets"))?
        .kubelet_client
        .clone();
    let path = match (sub, &container) {
        ("log", Some(c)) => format!("/containerLogs/{namespace}/{name}/{c}"),
        ("exec", Some(c)) => format!("/exec/{namespace}/{name}/{c}"),
        ("attach", Some(c)) => format!("/attach/{namespace}/{name}/{c}"),
        _ => format!("/portForward/{namespace}/{name}"),
    };
    let kubelet_query = kubelet_query(sub, query.as_deref());
    let path_and_query = if kubelet_query.is_empty() {
        path
    } else {
        format!("{path}?{kubelet_query}")
    };
    let url = format!("https://{address}{path_and_query}");
    let upgrade = is_upgrade(&req);
    let method = req.method().clone();
    let go_error = |e: &dyn std::fmt::Display| {
        // Upstream reports transport errors as Go's url.Error, with no reason.
        let verb = if method == Method::GET { "Get" } else { "Post" };
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "",
            format!("{verb} \"{url}\": {e}"),
        )
    };
    let mut sender = connect(address, tls).await.map_err(|e| go_error(&e))?;

    let mut outgoing = Request::builder()
        .method(method.clone())
        .uri(&path_and_query)
        .body(Empty::<Bytes>::new())
        .map_err(|e| ApiError::internal(format!("building the kubelet request: {e}")))?;
    *outgoing.headers_mut() = forwarded_headers(req.headers(), upgrade);
    if let Ok(host) = HeaderValue::from_str(&address.to_string()) {
        outgoing.headers_mut().insert(header::HOST, host);
    }
    let mut response = sender
        .send_request(outgoing)
        .await
        .map_err(|e| go_error(&e))?;

    if upgrade && response.status() == StatusCode::SWITCHING_PROTOCOLS {
        let kubelet_side = hyper::upgrade::on(&mut response);
        let client_side = hyper::upgrade::on(&mut req);
        let pod_ref = format!("{namespace}/{name}");
        tokio::spawn(async move {
            let (kubelet, client) = match tokio::try_join!(kubelet_side, client_side) {
                Ok(both) => both,
                Err(e) => {
                    tracing::debug!(pod = %pod_ref, error = %e, "upgrading the kubelet stream");
                    return;
                }
            };
            let mut kubelet = TokioIo::new(kubelet);
            let mut client = TokioIo::new(client);
            match tokio::io::copy_bidirectional(&mut client, &mut kubelet).await {
                Ok((up, down)) => {
                    tracing::debug!(pod = %pod_ref, up, down, "kubelet stream ended")
                }
                Err(e) => tracing::debug!(pod = %pod_ref, error = %e, "kubelet stream ended"),
            }
        });
        let mut switching = Response::new(crate::http::full(Bytes::new()));
        *switching.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        *switching.headers_mut() = response.headers().clone();
        return Ok(switching);
    }

    let status = response.status();
    let headers = response.headers().clone();
    if sub == "log" && !status.is_success() {
        // As upstream's response checker: the kubelet's text becomes a Status.
        let body = read_limited(response.into_body()).await;
        return Err(kubelet_error(status, body.trim()));
    }
    let mut out = Response::new(response.into_body().map_err(std::io::Error::other).boxed());
    *out.status_mut() = status;
    for (key, value) in &headers {
        let hop_by_hop = matches!(
            key.as_str(),
            "connection" | "upgrade" | "keep-alive" | "transfer-encoding" | "te" | "trailer"
        );
        if !hop_by_hop {
            out.headers_mut().append(key.clone(), value.clone());
        }
    }
    Ok(out)
}

/// The client's headers, minus its credentials and (unless upgrading) hop-by-hop headers.
fn forwarded_headers(incoming: &HeaderMap, upgrade: bool) -> HeaderMap {
    let mut headers = HeaderMap::new();
    for (key, value) in incoming {
        let hop_by_hop = matches!(
            key.as_str(),
            "connection" | "upgrade" | "keep-alive" | "te" | "trailer" | "proxy-connection"
        );
        let dropped = matches!(
            key.as_str(),
            "authorization" | "host" | "content-length" | "transfer-encoding"
        ) || key.as_str().starts_with("impersonate-");
        if dropped || (hop_by_hop && !upgrade) {
            continue;
        }
        headers.append(key.clone(), value.clone());
    }
    headers
}

/// An HTTP/1.1 connection to a kubelet over TLS (also used by [`crate::metrics_api`]).
pub(crate) async fn connect(
    address: SocketAddr,
    tls: Arc<rustls::ClientConfig>,
) -> std::io::Result<hyper::client::conn::http1::SendRequest<Empty<Bytes>>> {
    let tcp = tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::TcpStream::connect(address))
        .await
        .map_err(|_| {
            std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("dial tcp {address}: i/o timeout"),
            )
        })?
        .map_err(|e| std::io::Error::new(e.kind(), format!("dial tcp {address}: connect: {e}")))?;
    let _ = tcp.set_nodelay(true);
    let stream = tokio_rustls::TlsConnector::from(tls)
        .connect(ServerName::IpAddress(address.ip().into()), tcp)
        .await
        .map_err(|e| std::io::Error::new(e.kind(), format!("tls handshake with {address}: {e}")))?;
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(std::io::Error::other)?;
    tokio::spawn(async move {
        if let Err(e) = connection.with_upgrades().await {
            tracing::debug!(%address, error = %e, "kubelet connection ended");
        }
    });
    Ok(sender)
}

async fn read_limited(mut body: Incoming) -> String {
    let mut collected = Vec::new();
    while collected.len() < MAX_ERROR_BODY {
        match body.frame().await {
            Some(Ok(frame)) => {
                if let Ok(data) = frame.into_data() {
                    collected.extend_from_slice(&data);
                }
            }
            _ => break,
        }
    }
    collected.truncate(MAX_ERROR_BODY);
    String::from_utf8_lossy(&collected).into_owned()
}

/// A kubelet's error response as the Status upstream makes of it.
pub fn kubelet_error(code: StatusCode, body: &str) -> ApiError {
    let (reason, fallback) = match code {
        StatusCode::BAD_REQUEST => (
            "BadRequest",
            "the server rejected our request for an unknown reason",
        ),
        StatusCode::NOT_FOUND => (
            "NotFound",
            "the server could not find the requested resource",
        ),
        StatusCode::UNAUTHORIZED => (
            "Unauthorized",
            "the server has asked for the client to provide credentials",
        ),
        StatusCode::FORBIDDEN => (
            "Forbidden",
            "the server does not allow access to the requested resource",
        ),
        StatusCode::INTERNAL_SERVER_ERROR => (
            "InternalError",
            "an error on the server has prevented the request from succeeding",
        ),
        StatusCode::SERVICE_UNAVAILABLE => (
            "ServiceUnavailable",
            "the server is currently unable to handle the request",
        ),
        _ => ("", "the server responded with an error"),
    };
    let message = if body.is_empty() {
        fallback.to_string()
    } else if code == StatusCode::INTERNAL_SERVER_ERROR {
        format!("Internal error occurred: {body}")
    } else {
        body.to_string()
    };
    ApiError::new(code, reason, message)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(value: serde_json::Value) -> Pod {
        serde_json::from_value(value).unwrap()
    }

    #[test]
    fn container_selection_follows_upstream() {
        let two = pod(json!({
            "metadata": {"name": "web"},
            "spec": {"containers": [{"name": "a"}, {"name": "b"}], "initContainers": [{"name": "init"}]}
        }));
        let e = select_container(&two, "web", None).unwrap_err();
        assert_eq!(e.code, StatusCode::BAD_REQUEST);
        assert_eq!(
            e.message,
            "a container name must be specified for pod web, choose one of: [a b] or one of the init containers: [init]"
        );
        assert_eq!(select_container(&two, "web", Some("init")).unwrap(), "init");
        let e = select_container(&two, "web", Some("nope")).unwrap_err();
        assert_eq!(e.message, "container nope is not valid for pod web");
        let one =
            pod(json!({"metadata": {"name": "x"}, "spec": {"containers": [{"name": "only"}]}}));
        assert_eq!(select_container(&one, "x", None).unwrap(), "only");
        let annotated = pod(json!({
            "metadata": {"name": "y", "annotations": {DEFAULT_CONTAINER_ANNOTATION: "b"}},
            "spec": {"containers": [{"name": "a"}, {"name": "b"}]}
        }));
        assert_eq!(select_container(&annotated, "y", None).unwrap(), "b");
    }

    #[test]
    fn kubelet_queries_use_the_kubelet_names() {
        assert_eq!(
            kubelet_query(
                "exec",
                Some(
                    "command=sh&command=-c&command=echo%20hi&container=a&stdin=true&stdout=true&stderr=false&tty=1"
                )
            ),
            "command=sh&command=-c&command=echo%20hi&input=1&output=1&tty=1"
        );
        assert_eq!(
            kubelet_query(
                "log",
                Some(
                    "container=a&follow=true&tailLines=10&previous=false&sinceTime=2024-01-01T00%3A00%3A00Z"
                )
            ),
            "follow=true&tailLines=10&sinceTime=2024-01-01T00%3A00%3A00Z"
        );
        assert_eq!(
            kubelet_query("portforward", Some("ports=8080,9090")),
            "ports=8080,9090"
        );
        assert_eq!(kubelet_query("attach", None), "");
    }

    #[test]
    fn kubelet_address_prefers_the_internal_ip_and_the_node_port() {
        let node: Node = serde_json::from_value(json!({
            "metadata": {"name": "n"},
            "status": {
                "addresses": [{"type": "Hostname", "address": "n"}, {"type": "InternalIP", "address": "10.1.2.3"}],
                "daemonEndpoints": {"kubeletEndpoint": {"Port": 12345}}
            }
        }))
        .unwrap();
        assert_eq!(
            kubelet_address(&node),
            Some("10.1.2.3:12345".parse().unwrap())
        );
        let bare: Node = serde_json::from_value(json!({
            "metadata": {"name": "n"},
            "status": {"addresses": [{"type": "InternalIP", "address": "10.1.2.3"}]}
        }))
        .unwrap();
        assert_eq!(
            kubelet_address(&bare),
            Some("10.1.2.3:10250".parse().unwrap())
        );
    }

    #[test]
    fn kubelet_errors_become_statuses() {
        let e = kubelet_error(
            StatusCode::BAD_REQUEST,
            "container \"a\" in pod \"p\" is waiting to start: ContainerCreating",
        );
        assert_eq!(e.reason, "BadRequest");
        assert!(e.message.starts_with("container \"a\""));
        let e = kubelet_error(StatusCode::INTERNAL_SERVER_ERROR, "boom");
        assert_eq!(e.message, "Internal error occurred: boom");
    }
}
