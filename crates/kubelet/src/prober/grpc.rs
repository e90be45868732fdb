//! grpc probes: the standard `grpc.health.v1.Health/Check` call over HTTP/2 cleartext (hyper's
//! HTTP/2 client). The two tiny protobuf messages are encoded by hand:
//! `HealthCheckRequest { string service = 1; }` and
//! `HealthCheckResponse { ServingStatus status = 1; }`.

use std::time::Duration;

use bytes::{BufMut as _, Bytes, BytesMut};
use http_body_util::{BodyExt as _, Full, Limited};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpStream;

use super::{Outcome, PROBE_USER_AGENT, describe_io_error, go_duration, join_host_port};

const CHECK_PATH: &str = "/grpc.health.v1.Health/Check";
/// More than any health response needs.
const MAX_RESPONSE: usize = 64 * 1024;

/// The ServingStatus enum's names.
fn serving_status_name(status: u64) -> String {
    match status {
        0 => "UNKNOWN".into(),
        1 => "SERVING".into(),
        2 => "NOT_SERVING".into(),
        3 => "SERVICE_UNKNOWN".into(),
        other => other.to_string(),
    }
}

/// gRPC status code names, as grpc-go prints them.
fn code_name(code: u32) -> String {
    const NAMES: [&str; 17] = [
        "OK",
        "Canceled",
        "Unknown",
        "InvalidArgument",
        "DeadlineExceeded",
        "NotFound",
        "AlreadyExists",
        "PermissionDenied",
        "ResourceExhausted",
        "FailedPrecondition",
        "Aborted",
        "OutOfRange",
        "Unimplemented",
        "Internal",
        "Unavailable",
        "DataLoss",
        "Unauthenticated",
    ];
    NAMES
        .get(code as usize)
        .map_or_else(|| format!("Code({code})"), |n| n.to_string())
}

const UNKNOWN: u32 = 2;
const DEADLINE_EXCEEDED: u32 = 4;
const UNIMPLEMENTED: u32 = 12;
const INTERNAL: u32 = 13;
const UNAVAILABLE: u32 = 14;

/// A call that ended without a response message.
struct RpcError {
    code: u32,
    message: String,
}

pub(super) async fn probe(host: &str, port: u16, service: &str, timeout: Duration) -> Outcome {
    let address = join_host_port(host, port);
    let deadline = tokio::time::Instant::now() + timeout;
    let connect = async {
        let tcp = TcpStream::connect((host, port))
            .await
            .map_err(|e| format!("dial tcp {address}: {}", describe_io_error(&e)))?;
        let _ = tcp.set_nodelay(true);
        hyper::client::conn::http2::Builder::new(TokioExecutor::new())
            .handshake::<_, Full<Bytes>>(TokioIo::new(tcp))
            .await
            .map_err(|e| e.to_string())
    };
    let (sender, connection) = match tokio::time::timeout_at(deadline, connect).await {
        Err(_) => {
            return Outcome::Failure(format!(
                "timeout: failed to connect service {address:?} within {}: context deadline exceeded",
                go_duration(timeout)
            ));
        }
        Ok(Err(e)) => {
            return Outcome::Failure(format!(
                "error: failed to connect service at {address:?}: {e}"
            ));
        }
        Ok(Ok(handshake)) => handshake,
    };
    let _driver = super::http::AbortOnDrop(tokio::spawn(async move {
        let _ = connection.await;
    }));
    let call = check(sender, &address, service, timeout);
    match tokio::time::timeout_at(deadline, call).await {
        Err(_)
        | Ok(Err(RpcError {
            code: DEADLINE_EXCEEDED,
            ..
        })) => Outcome::Failure(format!(
            "timeout: health rpc did not complete within {}",
            go_duration(timeout)
        )),
        Ok(Err(RpcError {
            code: UNIMPLEMENTED,
            message,
        })) => Outcome::Failure(format!(
            "error: this server does not implement the grpc health protocol (grpc.health.v1.Health): {message}"
        )),
        Ok(Err(RpcError { code, message })) => Outcome::Failure(format!(
            "error: health rpc probe failed: rpc error: code = {} desc = {message}",
            code_name(code)
        )),
        Ok(Ok(1)) => Outcome::Success("service healthy".into()),
        Ok(Ok(status)) => Outcome::Failure(format!(
            "service unhealthy (responded with {:?})",
            serving_status_name(status)
        )),
    }
}

/// One Check call: the response's serving status.
async fn check(
    mut sender: hyper::client::conn::http2::SendRequest<Full<Bytes>>,
    address: &str,
    service: &str,
    timeout: Duration,
) -> Result<u64, RpcError> {
    let request = http::Request::post(format!("http://{address}{CHECK_PATH}"))
        .header(http::header::CONTENT_TYPE, "application/grpc")
        .header(http::header::TE, "trailers")
        .header(http::header::USER_AGENT, PROBE_USER_AGENT)
        .header("grpc-timeout", format!("{}m", timeout.as_millis()))
        .body(Full::new(encode_request(service)))
        .map_err(|e| rpc_error(INTERNAL, e.to_string()))?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| rpc_error(UNAVAILABLE, e.to_string()))?;
    let (parts, body) = response.into_parts();
    if parts.status != http::StatusCode::OK {
        return Err(http_status_error(parts.status));
    }
    // A "trailers-only" response carries the status in its headers.
    if let Some(error) = status_error(&parts.headers) {
        return Err(error);
    }
    let collected = Limited::new(body, MAX_RESPONSE)
        .collect()
        .await
        .map_err(|e| rpc_error(INTERNAL, e.to_string()))?;
    let trailers = collected.trailers().cloned().unwrap_or_default();
    if !trailers.contains_key("grpc-status") && !parts.headers.contains_key("grpc-status") {
        return Err(rpc_error(
            INTERNAL,
            "server closed the stream without sending trailers".into(),
        ));
    }
    if let Some(error) = status_error(&trailers) {
        return Err(error);
    }
    decode_response(&collected.to_bytes()).map_err(|e| rpc_error(INTERNAL, e))
}

fn rpc_error(code: u32, message: String) -> RpcError {
    RpcError { code, message }
}

/// A non-OK `grpc-status` (with its percent-encoded `grpc-message`).
fn status_error(headers: &http::HeaderMap) -> Option<RpcError> {
    let code = headers
        .get("grpc-status")?
        .to_str()
        .ok()?
        .parse::<u32>()
        .ok()?;
    if code == 0 {
        return None;
    }
    let message = headers
        .get("grpc-message")
        .map(|v| percent_decode(v.as_bytes()))
        .unwrap_or_default();
    Some(rpc_error(code, message))
}

/// grpc-go's mapping of a non-200 HTTP status to a gRPC code.
fn http_status_error(status: http::StatusCode) -> RpcError {
    let code = match status.as_u16() {
        400 => INTERNAL,
        401 => 16,
        403 => 7,
        404 => UNIMPLEMENTED,
        429 | 502 | 503 | 504 => UNAVAILABLE,
        _ => UNKNOWN,
    };
    rpc_error(
        code,
        format!(
            "unexpected HTTP status code received from server: {} ({})",
            status.as_u16(),
            status.canonical_reason().unwrap_or("")
        ),
    )
}

fn percent_decode(raw: &[u8]) -> String {
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        if raw[i] == b'%'
            && i + 2 < raw.len()
            && let Ok(hex) = std::str::from_utf8(&raw[i + 1..i + 3])
            && let Ok(b) = u8::from_str_radix(hex, 16)
        {
            out.push(b);
            i += 3;
        } else {
            out.push(raw[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A length-prefixed gRPC message holding `HealthCheckRequest { service }`.
pub(super) fn encode_request(service: &str) -> Bytes {
    let mut message = BytesMut::new();
    if !service.is_empty() {
        message.put_u8(0x0a); // field 1, length-delimited
        put_varint(&mut message, service.len() as u64);
        message.put_slice(service.as_bytes());
    }
    frame(&message)
}

/// The 5-byte gRPC message prefix (not compressed, big-endian length) and the message.
pub(super) fn frame(message: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(5 + message.len());
    out.put_u8(0);
    out.put_u32(message.len() as u32);
    out.put_slice(message);
    out.freeze()
}

/// The serving status of a framed `HealthCheckResponse` (UNKNOWN when the field is absent).
pub(super) fn decode_response(data: &[u8]) -> Result<u64, String> {
    let message = unframe(data)?;
    let mut status = 0;
    let mut fields = Fields { data: message };
    while let Some((number, value)) = fields.next_field()? {
        if let (1, Value::Varint(v)) = (number, value) {
            status = v;
        }
    }
    Ok(status)
}

fn unframe(data: &[u8]) -> Result<&[u8], String> {
    if data.len() < 5 {
        return Err("grpc: response has no message".into());
    }
    if data[0] != 0 {
        return Err("grpc: response is compressed, which the probe did not ask for".into());
    }
    let len = u32::from_be_bytes([data[1], data[2], data[3], data[4]]) as usize;
    data.get(5..5 + len)
        .ok_or_else(|| "grpc: response message is truncated".to_string())
}

enum Value<'a> {
    Varint(u64),
    #[cfg_attr(not(test), allow(dead_code))]
    Bytes(&'a [u8]),
    Fixed,
}

/// Walks a protobuf message's fields.
struct Fields<'a> {
    data: &'a [u8],
}

impl<'a> Fields<'a> {
    fn varint(&mut self) -> Result<u64, String> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let (&b, rest) = self
                .data
                .split_first()
                .ok_or_else(|| "protobuf: truncated varint".to_string())?;
            self.data = rest;
            value |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err("protobuf: varint too long".into())
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        if self.data.len() < n {
            return Err("protobuf: truncated field".into());
        }
        let (head, rest) = self.data.split_at(n);
        self.data = rest;
        Ok(head)
    }

    fn next_field(&mut self) -> Result<Option<(u64, Value<'a>)>, String> {
        if self.data.is_empty() {
            return Ok(None);
        }
        let key = self.varint()?;
        let value = match key & 7 {
            0 => Value::Varint(self.varint()?),
            1 => {
                self.take(8)?;
                Value::Fixed
            }
            2 => {
                let len = self.varint()? as usize;
                Value::Bytes(self.take(len)?)
            }
            5 => {
                self.take(4)?;
                Value::Fixed
            }
            other => return Err(format!("protobuf: unsupported wire type {other}")),
        };
        Ok(Some((key >> 3, value)))
    }
}

fn put_varint(out: &mut BytesMut, mut v: u64) {
    while v >= 0x80 {
        out.put_u8((v as u8) | 0x80);
        v >>= 7;
    }
    out.put_u8(v as u8);
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::stream;
    use http_body_util::StreamBody;
    use hyper::body::{Frame, Incoming};
    use hyper::service::service_fn;

    /// The service name of a framed HealthCheckRequest.
    fn decode_request(data: &[u8]) -> String {
        let mut fields = Fields {
            data: unframe(data).unwrap(),
        };
        let mut service = String::new();
        while let Some((number, value)) = fields.next_field().unwrap() {
            if let (1, Value::Bytes(b)) = (number, value) {
                service = String::from_utf8(b.to_vec()).unwrap();
            }
        }
        service
    }

    type Body = StreamBody<
        stream::Iter<std::vec::IntoIter<Result<Frame<Bytes>, std::convert::Infallible>>>,
    >;

    /// Health service: "" SERVING, "down" NOT_SERVING, "missing" NOT_FOUND, "unimplemented"
    /// Unimplemented (trailers-only), "slow" never answers.
    async fn health(
        req: http::Request<Incoming>,
    ) -> Result<http::Response<Body>, std::convert::Infallible> {
        let ok_grpc = |frames: Vec<Frame<Bytes>>| {
            http::Response::builder()
                .header("content-type", "application/grpc")
                .body(StreamBody::new(stream::iter(
                    frames.into_iter().map(Ok).collect::<Vec<_>>(),
                )))
                .unwrap()
        };
        let trailers = |code: &str, message: &str| {
            let mut t = http::HeaderMap::new();
            t.insert("grpc-status", code.parse().unwrap());
            if !message.is_empty() {
                t.insert("grpc-message", message.parse().unwrap());
            }
            Frame::trailers(t)
        };
        assert_eq!(req.uri().path(), CHECK_PATH);
        assert_eq!(req.headers()["user-agent"], "kube-probe/1.33");
        let body = req.into_body().collect().await.unwrap().to_bytes();
        let service = decode_request(&body);
        if service == "unimplemented" {
            let response = http::Response::builder()
                .header("content-type", "application/grpc")
                .header("grpc-status", "12")
                .header("grpc-message", "unknown%20service")
                .body(StreamBody::new(stream::iter(Vec::new())))
                .unwrap();
            return Ok(response);
        }
        let status = |s: u8| Frame::data(frame(&[0x08, s]));
        Ok(match service.as_str() {
            "" => ok_grpc(vec![status(1), trailers("0", "")]),
            "down" => ok_grpc(vec![status(2), trailers("0", "")]),
            "missing" => ok_grpc(vec![trailers("5", "unknown service")]),
            "slow" => {
                tokio::time::sleep(Duration::from_secs(30)).await;
                ok_grpc(vec![])
            }
            other => panic!("unexpected service {other}"),
        })
    }

    async fn serve() -> (u16, tokio::task::JoinHandle<()>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                tokio::spawn(async move {
                    let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service_fn(health))
                        .await;
                });
            }
        });
        (port, task)
    }

    #[tokio::test]
    async fn health_check_results() {
        let (port, server) = serve().await;
        let second = Duration::from_secs(1);
        assert_eq!(
            probe("127.0.0.1", port, "", second).await,
            Outcome::Success("service healthy".into())
        );
        assert_eq!(
            probe("127.0.0.1", port, "down", second).await,
            Outcome::Failure("service unhealthy (responded with \"NOT_SERVING\")".into())
        );
        assert_eq!(
            probe("127.0.0.1", port, "missing", second).await,
            Outcome::Failure(
                "error: health rpc probe failed: rpc error: code = NotFound desc = unknown service"
                    .into()
            )
        );
        assert_eq!(
            probe("127.0.0.1", port, "unimplemented", second).await,
            Outcome::Failure(
                "error: this server does not implement the grpc health protocol (grpc.health.v1.Health): unknown service".into()
            )
        );
        assert_eq!(
            probe("127.0.0.1", port, "slow", second).await,
            Outcome::Failure("timeout: health rpc did not complete within 1s".into())
        );
        server.abort();
    }

    #[tokio::test]
    async fn refused_connection_fails() {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        assert_eq!(
            probe("127.0.0.1", port, "", Duration::from_secs(1)).await,
            Outcome::Failure(format!(
                "error: failed to connect service at \"127.0.0.1:{port}\": dial tcp 127.0.0.1:{port}: connect: connection refused"
            ))
        );
    }

    #[test]
    fn messages_round_trip() {
        assert_eq!(&encode_request("")[..], &[0, 0, 0, 0, 0]);
        let long = "s".repeat(200);
        assert_eq!(decode_request(&encode_request(&long)), long);
        assert_eq!(decode_request(&encode_request("svc")), "svc");
        // Unknown fields are skipped; an absent status is UNKNOWN.
        assert_eq!(
            decode_response(&frame(&[0x12, 0x01, b'x', 0x08, 0x02])),
            Ok(2)
        );
        assert_eq!(decode_response(&frame(&[])), Ok(0));
        assert!(decode_response(&[0, 0, 0, 0, 9, 0x08]).is_err());
        assert_eq!(percent_decode(b"unknown%20service%2"), "unknown service%2");
        assert_eq!(code_name(12), "Unimplemented");
    }
}
