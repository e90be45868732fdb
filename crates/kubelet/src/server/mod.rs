//! The kubelet's HTTPS endpoint (port 10250): `containerLogs`, `exec`, `attach`, `portForward`,
//! `stats/summary`, `healthz`. Only clients with a certificate from the cluster's client CA get
//! in (the API server proxies users' requests here).
//!
//! - [`logs`]: CRI log files back into what the container wrote (follow, tail, since, ...).
//! - [`exec`]: exec and attach sessions over either transport.
//! - [`portforward`]: port-forward stream pairs, connected inside the pod's network namespace.
//! - [`spdy`]: SPDY/3.1 framing and connections; [`websocket`]: the WebSocket channel
//!   protocols and the SPDY-over-WebSocket tunnel.
//! - [`stats`]: the Summary API from cgroups.

pub mod exec;
pub mod logs;
pub mod portforward;
pub mod spdy;
pub mod stats;
pub mod websocket;

use std::convert::Infallible;
use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use futures::future::BoxFuture;
use http::{Method, Request, Response, StatusCode};
use http_body_util::BodyExt as _;
use http_body_util::combinators::BoxBody;
use hyper_util::rt::{TokioExecutor, TokioIo};
use runtime::container::{ContainerInfo, ContainerRuntime, ContainerState, ExecProcess, ExecSpec};
use runtime::sandbox::SandboxManager;

use self::exec::StreamOptions;
use self::websocket::ChannelProtocol;

pub struct StreamingContext {
    pub runtime: ContainerRuntime,
    pub sandboxes: SandboxManager,
    /// Pod logs: see [`crate::pod_log_dir`].
    pub log_root: PathBuf,
    /// This node's name, for the stats summary.
    pub node_name: String,
}

/// Why a request is refused before any upgrade: status and plain-text message.
type Refusal = (StatusCode, String);

/// Response bodies: fixed text or a stream (logs).
pub type Body = BoxBody<Bytes, std::io::Error>;

fn full(text: impl Into<Bytes>) -> Body {
    http_body_util::Full::new(text.into())
        .map_err(|never: Infallible| match never {})
        .boxed()
}

/// A plain-text response, as upstream's kubelet writes its errors.
fn text(status: StatusCode, message: impl Into<String>) -> Response<Body> {
    let mut message = message.into();
    if !message.ends_with('\n') {
        message.push('\n');
    }
    Response::builder()
        .status(status)
        .header(http::header::CONTENT_TYPE, "text/plain; charset=utf-8")
        .body(full(message))
        .expect("static response parts are valid")
}

/// Serve HTTPS (HTTP/1.1 with upgrades, and HTTP/2 when the client negotiates it) until the
/// listener fails.
pub async fn serve(
    listener: tokio::net::TcpListener,
    tls: Arc<rustls::ServerConfig>,
    ctx: Arc<StreamingContext>,
) -> anyhow::Result<()> {
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    tracing::info!(address = ?listener.local_addr().ok(), "kubelet server listening");
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of file descriptors and the like: wait rather than spin or stop.
                tracing::warn!(error = %e, "accepting a kubelet server connection");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let ctx = ctx.clone();
        tokio::spawn(async move {
            let tls = match acceptor.accept(tcp).await {
                Ok(tls) => tls,
                Err(e) => {
                    tracing::debug!(%peer, error = %e, "kubelet server TLS handshake");
                    return;
                }
            };
            let service = hyper::service::service_fn(move |req| {
                let ctx = ctx.clone();
                async move { Ok::<_, Infallible>(handle(ctx, req).await) }
            });
            let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            if let Err(e) = builder
                .serve_connection_with_upgrades(TokioIo::new(tls), service)
                .await
            {
                tracing::debug!(%peer, error = %e, "kubelet server connection");
            }
        });
    }
}

fn query_pairs<B>(req: &Request<B>) -> Vec<(String, String)> {
    form_urlencoded::parse(req.uri().query().unwrap_or("").as_bytes())
        .into_owned()
        .collect()
}

/// Route one request.
pub async fn handle<B>(ctx: Arc<StreamingContext>, mut req: Request<B>) -> Response<Body>
where
    B: Send + 'static,
{
    let path = req.uri().path().to_string();
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let method = req.method().clone();
    let read = method == Method::GET || method == Method::HEAD;
    let stream = read || method == Method::POST;
    let query = query_pairs(&req);
    match segments.as_slice() {
        ["healthz"] if read => text(StatusCode::OK, "ok"),
        ["containerLogs", ns, pod, container] if read => {
            container_logs(&ctx, ns, pod, container, &query).await
        }
        ["exec", ns, pod, container] | ["exec", ns, pod, _, container] if stream => {
            let (ns, pod, container) = (ns.to_string(), pod.to_string(), container.to_string());
            remote_command(ctx, &mut req, Command::Exec, &ns, &pod, &container, &query).await
        }
        ["attach", ns, pod, container] | ["attach", ns, pod, _, container] if stream => {
            let (ns, pod, container) = (ns.to_string(), pod.to_string(), container.to_string());
            remote_command(
                ctx,
                &mut req,
                Command::Attach,
                &ns,
                &pod,
                &container,
                &query,
            )
            .await
        }
        ["portForward", ns, pod] | ["portForward", ns, pod, _] if stream => {
            let (ns, pod) = (ns.to_string(), pod.to_string());
            port_forward(ctx, &mut req, &ns, &pod, &query).await
        }
        ["stats", "summary"] if read => stats_summary(&ctx).await,
        _ => text(StatusCode::NOT_FOUND, "404 page not found"),
    }
}

async fn container_logs(
    ctx: &StreamingContext,
    ns: &str,
    pod: &str,
    container: &str,
    query: &[(String, String)],
) -> Response<Body> {
    let opts = match logs::LogOptions::from_query(query, chrono::Utc::now()) {
        Ok(opts) => opts,
        Err(message) => return text(StatusCode::BAD_REQUEST, message),
    };
    let source = match logs::locate(&ctx.log_root, ns, pod, container, opts.previous) {
        Ok(source) => source,
        Err(e) => return text(e.status, e.message),
    };
    let still_running = if opts.follow && !opts.previous {
        running_check(
            ctx.runtime.clone(),
            source.pod_uid.clone(),
            container.to_string(),
            source.attempt,
        )
    } else {
        Box::new(|| Box::pin(async { false }) as BoxFuture<'static, bool>)
    };
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(16);
    let file = source.current.clone();
    tokio::spawn(async move {
        if let Err(e) = logs::stream(source, opts, still_running, tx).await {
            tracing::debug!(path = %file.display(), error = %e, "reading a container log");
        }
    });
    let chunks = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|chunk| (Ok::<_, std::io::Error>(hyper::body::Frame::data(chunk)), rx))
    });
    Response::builder()
        .status(StatusCode::OK)
        .header(http::header::CONTENT_TYPE, "text/plain")
        .body(http_body_util::StreamBody::new(chunks).boxed())
        .expect("static response parts are valid")
}

/// Whether the container that writes a log (pod UID, name, attempt) still runs: looked up
/// once in the runtime's list, then by ID.
fn running_check(
    runtime: ContainerRuntime,
    pod_uid: String,
    container: String,
    attempt: u32,
) -> logs::StillRunning {
    let id = Arc::new(tokio::sync::Mutex::new(None::<String>));
    Box::new(move || {
        let (runtime, id) = (runtime.clone(), id.clone());
        let (pod_uid, container) = (pod_uid.clone(), container.clone());
        Box::pin(async move {
            // Its own task: a runtime failure ends the follow rather than the connection.
            let check = tokio::spawn(async move {
                let mut id = id.lock().await;
                if id.is_none() {
                    let list = runtime.list_containers().await.ok()?;
                    *id = list
                        .into_iter()
                        .find(|c| {
                            c.meta.pod_uid == pod_uid
                                && c.meta.container_name == container
                                && c.meta.attempt == attempt
                        })
                        .map(|c| c.id);
                }
                let state = runtime.container_state(id.as_deref()?).await.ok()?;
                Some(matches!(state, ContainerState::Running { .. }))
            });
            matches!(check.await, Ok(Some(true)))
        })
    })
}

/// The running container `<ns>/<pod>/<container>` (its latest attempt).
async fn running_container(
    runtime: &ContainerRuntime,
    ns: &str,
    pod: &str,
    container: &str,
) -> Result<ContainerInfo, Refusal> {
    let list = runtime.list_containers().await.map_err(|e| {
        (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("listing containers: {e}"),
        )
    })?;
    let mut of_pod = list
        .into_iter()
        .filter(|c| c.meta.pod_namespace == ns && c.meta.pod_name == pod)
        .peekable();
    if of_pod.peek().is_none() {
        return Err((
            StatusCode::NOT_FOUND,
            format!("pod \"{pod}\" does not exist on this node"),
        ));
    }
    of_pod
        .filter(|c| c.meta.container_name == container)
        .filter(|c| matches!(c.state, ContainerState::Running { .. }))
        .max_by_key(|c| (c.meta.attempt, c.meta.created_at))
        .ok_or_else(|| {
            (
                StatusCode::NOT_FOUND,
                format!("container \"{container}\" in pod \"{pod}\" is not running"),
            )
        })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Command {
    Exec,
    Attach,
}

/// What to do with a connection once it is upgraded.
enum Transport {
    /// With the channel protocol negotiated, if the sub-protocol is one.
    WebSocket(
        Option<ChannelProtocol>,
        Box<tokio_tungstenite::WebSocketStream<TokioIo<hyper::upgrade::Upgraded>>>,
    ),
    Spdy(String, spdy::Connection),
}

type OnUpgrade = Box<dyn FnOnce(Transport) -> BoxFuture<'static, ()> + Send>;

/// Negotiate a WebSocket (one of `ws_protocols`) or SPDY (one of `spdy_protocols`) upgrade;
/// answer 101 and run `then` on the upgraded connection, or answer the error.
fn upgrade<B>(
    req: &mut Request<B>,
    ws_protocols: &[&str],
    spdy_protocols: &[&str],
    then: OnUpgrade,
) -> Response<Body> {
    if websocket::is_websocket_request(req) {
        let offered = websocket::offered_protocols(req.headers());
        let chosen = if offered.is_empty() {
            ws_protocols.contains(&"").then(String::new)
        } else {
            offered
                .iter()
                .find(|p| ws_protocols.contains(&p.as_str()))
                .cloned()
        };
        let Some(chosen) = chosen else {
            return text(
                StatusCode::BAD_REQUEST,
                format!(
                    "requested protocol(s) are not supported: {offered:?}; supports {:?}",
                    ws_protocols
                        .iter()
                        .filter(|p| !p.is_empty())
                        .collect::<Vec<_>>()
                ),
            );
        };
        let response = match websocket::handshake_response(
            req,
            (!chosen.is_empty()).then_some(chosen.as_str()),
        ) {
            Ok(response) => response,
            Err((status, message)) => return text(status, message),
        };
        let on_upgrade = hyper::upgrade::on(req);
        tokio::spawn(async move {
            match on_upgrade.await {
                Ok(upgraded) => {
                    let ws = websocket::from_upgraded(TokioIo::new(upgraded)).await;
                    let protocol = ChannelProtocol::from_name(&chosen);
                    then(Transport::WebSocket(protocol, Box::new(ws))).await;
                }
                Err(e) => tracing::debug!(error = %e, "websocket upgrade"),
            }
        });
        return response.map(|()| full(Bytes::new()));
    }
    if websocket::header_has_token(req.headers(), http::header::UPGRADE, "SPDY/3.1") {
        let offered: Vec<String> = req
            .headers()
            .get_all("X-Stream-Protocol-Version")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
            .collect();
        if offered.is_empty() {
            return text(
                StatusCode::BAD_REQUEST,
                "unable to upgrade: X-Stream-Protocol-Version is required",
            );
        }
        let Some(chosen) = offered
            .iter()
            .find(|p| spdy_protocols.contains(&p.as_str()))
            .cloned()
        else {
            let mut response = text(
                StatusCode::FORBIDDEN,
                format!(
                    "unable to upgrade: unable to negotiate protocol: client supports {offered:?}, server accepts {spdy_protocols:?}"
                ),
            );
            for p in spdy_protocols {
                if let Ok(value) = http::HeaderValue::from_str(p) {
                    response
                        .headers_mut()
                        .append("X-Accepted-Stream-Protocol-Versions", value);
                }
            }
            return response;
        };
        let on_upgrade = hyper::upgrade::on(req);
        let value = http::HeaderValue::from_str(&chosen).expect("one of our own protocol names");
        tokio::spawn(async move {
            match on_upgrade.await {
                Ok(upgraded) => {
                    let conn = spdy::Connection::serve(TokioIo::new(upgraded));
                    then(Transport::Spdy(chosen, conn)).await;
                }
                Err(e) => tracing::debug!(error = %e, "spdy upgrade"),
            }
        });
        return Response::builder()
            .status(StatusCode::SWITCHING_PROTOCOLS)
            .header(http::header::CONNECTION, "Upgrade")
            .header(http::header::UPGRADE, "SPDY/3.1")
            .header("X-Stream-Protocol-Version", value)
            .body(full(Bytes::new()))
            .expect("static response parts are valid");
    }
    text(
        StatusCode::BAD_REQUEST,
        "unable to upgrade: missing upgrade headers in request",
    )
}

#[allow(clippy::too_many_arguments)]
async fn remote_command<B>(
    ctx: Arc<StreamingContext>,
    req: &mut Request<B>,
    command_kind: Command,
    ns: &str,
    pod: &str,
    container: &str,
    query: &[(String, String)],
) -> Response<Body> {
    let (opts, command) = match exec::parse_query(query) {
        Ok(parsed) => parsed,
        Err(message) => return text(StatusCode::BAD_REQUEST, message),
    };
    if command_kind == Command::Exec && command.is_empty() {
        return text(StatusCode::BAD_REQUEST, "you must specify a command");
    }
    let info = match running_container(&ctx.runtime, ns, pod, container).await {
        Ok(info) => info,
        Err((status, message)) => return text(status, message),
    };
    let runtime = ctx.runtime.clone();
    let start_command = command.clone();
    let start: BoxFuture<'static, Result<ExecProcess, String>> = match command_kind {
        Command::Exec => Box::pin(async move {
            let spec = ExecSpec {
                command: start_command,
                tty: opts.tty,
                stdin: opts.stdin,
                stdout: opts.stdout,
                stderr: opts.stderr,
            };
            runtime
                .exec(&info.id, &spec)
                .await
                .map_err(|e| format!("error executing command in container: {e}"))
        }),
        Command::Attach => Box::pin(async move { attach_process(runtime, info, opts).await }),
    };
    let ws_protocols: Vec<&str> = ChannelProtocol::ALL
        .iter()
        .map(|(n, _)| *n)
        .chain([""])
        .collect();
    upgrade(
        req,
        &ws_protocols,
        &exec::SPDY_PROTOCOLS,
        Box::new(move |transport| {
            Box::pin(async move {
                match transport {
                    Transport::WebSocket(protocol, ws) => {
                        let protocol = protocol.unwrap_or(ChannelProtocol::V1);
                        exec::serve_websocket(*ws, protocol, opts, command, start).await
                    }
                    Transport::Spdy(protocol, conn) => {
                        exec::serve_spdy(conn, &protocol, opts, command, start).await
                    }
                }
            })
        }),
    )
}

/// Attach to a running container: its output from the log file as it is written, its stdin
/// through the FIFO the shim reads (containers created with `stdin: true`).
async fn attach_process(
    runtime: ContainerRuntime,
    info: ContainerInfo,
    opts: StreamOptions,
) -> Result<ExecProcess, String> {
    let source = logs::LogSource {
        pod_uid: info.meta.pod_uid.clone(),
        dir: info
            .log_path
            .parent()
            .map(PathBuf::from)
            .unwrap_or_default(),
        attempt: info.meta.attempt,
        rotated: None,
        current: info.log_path.clone(),
    };
    // Output written from now on (before stdin is connected); with a TTY everything is stdout.
    let start_at = tokio::fs::metadata(&info.log_path)
        .await
        .map_or(0, |m| m.len());
    let follow = |stream: Option<logs::LogStream>| -> Box<dyn tokio::io::AsyncRead + Send + Unpin> {
        let (reader, mut writer) = tokio::io::duplex(64 * 1024);
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Bytes>(16);
        let log_opts = logs::LogOptions {
            follow: true,
            start_at: Some(start_at),
            stream,
            ..Default::default()
        };
        let check = running_check(
            runtime.clone(),
            info.meta.pod_uid.clone(),
            info.meta.container_name.clone(),
            info.meta.attempt,
        );
        tokio::spawn(logs::stream(source.clone(), log_opts, check, tx));
        tokio::spawn(async move {
            use tokio::io::AsyncWriteExt as _;
            while let Some(chunk) = rx.recv().await {
                if writer.write_all(&chunk).await.is_err() {
                    return;
                }
            }
        });
        Box::new(reader)
    };
    let (stdout, stderr) = match (opts.stdout, opts.stderr && !opts.tty) {
        (true, true) => (
            Some(follow(Some(logs::LogStream::Stdout))),
            Some(follow(Some(logs::LogStream::Stderr))),
        ),
        (true, false) => (Some(follow(None)), None),
        (false, true) => (None, Some(follow(None))),
        (false, false) => (None, None),
    };
    let fifo = runtime.stdin_path(&info.id).ok().filter(|p| p.exists());
    let stdin: Option<Box<dyn tokio::io::AsyncWrite + Send + Unpin>> =
        if let (true, Some(fifo)) = (opts.stdin, &fifo) {
            match tokio::net::unix::pipe::OpenOptions::new().open_sender(fifo) {
                Ok(sender) => Some(Box::new(sender)),
                Err(e) => {
                    return Err(format!(
                        "attaching to the stdin of container {}: {e}",
                        info.id
                    ));
                }
            }
        } else if opts.stdin {
            return Err(format!(
                "container {} in pod {} does not take stdin",
                info.meta.container_name, info.meta.pod_name
            ));
        } else {
            None
        };
    let (exit_tx, exit) = tokio::sync::oneshot::channel();
    let id = info.id.clone();
    tokio::spawn(async move {
        loop {
            match runtime.container_state(&id).await {
                Ok(ContainerState::Running { .. }) => {}
                _ => break,
            }
            if exit_tx.is_closed() {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        }
        // Attach ends well when the container ends.
        let _ = exit_tx.send(0);
    });
    Ok(ExecProcess {
        stdin,
        stdout,
        stderr,
        exit,
        resize: None,
    })
}

/// The network namespace to forward into: the newest sandbox of `<ns>/<pod>`.
fn port_forward_target(
    ctx: &StreamingContext,
    ns: &str,
    pod: &str,
) -> Result<portforward::Target, Refusal> {
    let sandboxes = ctx.sandboxes.list().map_err(|e| {
        (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("listing pod sandboxes: {e}"),
        )
    })?;
    let candidates: Vec<_> = sandboxes
        .into_iter()
        .filter(|s| s.pod_namespace == ns && s.pod_name == pod)
        .collect();
    // A recreated pod of the same name: the log directory tells the newest UID.
    let newest = logs::pod_log_dir(&ctx.log_root, ns, pod).map(|(uid, _)| uid);
    let chosen = candidates
        .iter()
        .find(|s| Some(&s.pod_uid) == newest.as_ref())
        .or(candidates.first());
    match chosen {
        Some(sandbox) => Ok(portforward::Target {
            pod: pod.to_string(),
            netns: sandbox.netns.clone(),
        }),
        None => Err((
            StatusCode::NOT_FOUND,
            format!("pod \"{pod}\" does not exist on this node"),
        )),
    }
}

async fn port_forward<B>(
    ctx: Arc<StreamingContext>,
    req: &mut Request<B>,
    ns: &str,
    pod: &str,
    query: &[(String, String)],
) -> Response<Body> {
    let target = match port_forward_target(&ctx, ns, pod) {
        Ok(target) => target,
        Err((status, message)) => return text(status, message),
    };
    let ports = match portforward::parse_ports(query) {
        Ok(ports) => ports,
        Err(message) => return text(StatusCode::BAD_REQUEST, message),
    };
    let tunnel = format!("{}{}", websocket::SPDY_TUNNEL_PREFIX, portforward::PROTOCOL);
    let tunnelled = websocket::offered_protocols(req.headers()).contains(&tunnel);
    if websocket::is_websocket_request(req) && !tunnelled && ports.is_empty() {
        return text(
            StatusCode::BAD_REQUEST,
            "query parameter \"port\" is required",
        );
    }
    upgrade(
        req,
        &[
            tunnel.as_str(),
            "v4.channel.k8s.io",
            "v4.base64.channel.k8s.io",
            "",
        ],
        &[portforward::PROTOCOL],
        Box::new(move |transport| {
            Box::pin(async move {
                match transport {
                    Transport::WebSocket(Some(protocol), ws) => {
                        portforward::serve_websocket(*ws, protocol, ports, target).await
                    }
                    // The tunnel: SPDY inside the WebSocket.
                    Transport::WebSocket(None, ws) => {
                        let conn = spdy::Connection::serve(websocket::byte_stream(*ws));
                        portforward::serve_spdy(conn, target).await
                    }
                    Transport::Spdy(_, conn) => portforward::serve_spdy(conn, target).await,
                }
            })
        }),
    )
}

async fn stats_summary(ctx: &StreamingContext) -> Response<Body> {
    let containers = match ctx.runtime.list_containers().await {
        Ok(list) => list,
        Err(e) => {
            return text(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("listing containers: {e}"),
            );
        }
    };
    let cgroup_root = ctx.runtime.config().cgroup_root.clone();
    let node_name = ctx.node_name.clone();
    let summary =
        tokio::task::spawn_blocking(move || stats::summary(&node_name, &cgroup_root, &containers))
            .await;
    match summary {
        Ok(summary) => Response::builder()
            .status(StatusCode::OK)
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(full(
                serde_json::to_vec(&summary).expect("a json value serializes"),
            ))
            .expect("static response parts are valid"),
        Err(e) => text(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("collecting stats: {e}"),
        ),
    }
}
