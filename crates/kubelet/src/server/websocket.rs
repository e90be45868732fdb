//! WebSocket side of the streaming protocols: the handshake on a hyper request, the
//! Kubernetes channel sub-protocols (`channel.k8s.io`, `base64.channel.k8s.io`, their `v4.`
//! forms, and `v5.channel.k8s.io` with its close signal), and a byte-stream view of a
//! WebSocket for SPDY tunnelled through it (`SPDY/3.1+portforward.k8s.io`).

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};

/// Channel numbers of the remote command protocols.
pub const STDIN: u8 = 0;
pub const STDOUT: u8 = 1;
pub const STDERR: u8 = 2;
pub const ERROR: u8 = 3;
pub const RESIZE: u8 = 4;
/// v5: `[255, n]` means the peer closed its side of channel `n`.
pub const CLOSE: u8 = 255;

/// The sub-protocol prefix kubectl uses to tunnel SPDY through a WebSocket.
pub const SPDY_TUNNEL_PREFIX: &str = "SPDY/3.1+";

/// A Kubernetes channel sub-protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChannelProtocol {
    /// `channel.k8s.io` (or none): errors are plain text.
    V1,
    /// `base64.channel.k8s.io`: text messages, channel as an ASCII digit, base64 payload.
    V1Base64,
    /// `v4.channel.k8s.io`: the error channel carries a `Status` in JSON.
    V4,
    V4Base64,
    /// `v5.channel.k8s.io`: v4 plus the close signal on channel 255.
    V5,
}

impl ChannelProtocol {
    /// Remote command protocols in the order we prefer them.
    pub const ALL: [(&'static str, ChannelProtocol); 5] = [
        ("v5.channel.k8s.io", ChannelProtocol::V5),
        ("v4.channel.k8s.io", ChannelProtocol::V4),
        ("v4.base64.channel.k8s.io", ChannelProtocol::V4Base64),
        ("channel.k8s.io", ChannelProtocol::V1),
        ("base64.channel.k8s.io", ChannelProtocol::V1Base64),
    ];

    pub fn from_name(name: &str) -> Option<ChannelProtocol> {
        if name.is_empty() {
            return Some(ChannelProtocol::V1);
        }
        Self::ALL.iter().find(|(n, _)| *n == name).map(|(_, p)| *p)
    }

    fn base64(self) -> bool {
        matches!(self, ChannelProtocol::V1Base64 | ChannelProtocol::V4Base64)
    }

    /// Whether the error channel carries a JSON `Status` (else plain text).
    pub fn status_json(self) -> bool {
        matches!(
            self,
            ChannelProtocol::V4 | ChannelProtocol::V4Base64 | ChannelProtocol::V5
        )
    }

    /// Encode a message on `channel`.
    pub fn encode(self, channel: u8, data: &[u8]) -> Message {
        if self.base64() {
            use base64::Engine as _;
            let mut text = String::with_capacity(1 + data.len() * 4 / 3 + 4);
            text.push(char::from(b'0' + channel));
            base64::engine::general_purpose::STANDARD.encode_string(data, &mut text);
            Message::Text(text.into())
        } else {
            let mut frame = Vec::with_capacity(1 + data.len());
            frame.push(channel);
            frame.extend_from_slice(data);
            Message::Binary(frame.into())
        }
    }

    /// Decode a data message into (channel, payload); `None` for empty or malformed ones.
    pub fn decode(self, message: &Message) -> Option<(u8, Bytes)> {
        match message {
            Message::Binary(data) if !self.base64() && !data.is_empty() => {
                Some((data[0], data.slice(1..)))
            }
            Message::Text(text) if self.base64() && !text.is_empty() => {
                use base64::Engine as _;
                let bytes = text.as_bytes();
                let channel = bytes[0].checked_sub(b'0')?;
                let payload = base64::engine::general_purpose::STANDARD
                    .decode(&bytes[1..])
                    .ok()?;
                Some((channel, payload.into()))
            }
            _ => None,
        }
    }
}

/// Whether a request asks for a WebSocket (`Upgrade: websocket`, `Connection: upgrade`).
pub fn is_websocket_request<B>(req: &Request<B>) -> bool {
    header_has_token(req.headers(), http::header::UPGRADE, "websocket")
        && header_has_token(req.headers(), http::header::CONNECTION, "upgrade")
}

pub(crate) fn header_has_token(
    headers: &HeaderMap,
    name: http::header::HeaderName,
    token: &str,
) -> bool {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

/// The sub-protocols the client offers, in its order of preference.
pub fn offered_protocols(headers: &HeaderMap) -> Vec<String> {
    headers
        .get_all(http::header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|p| p.trim().to_string())
        .filter(|p| !p.is_empty())
        .collect()
}

/// The 101 response accepting a WebSocket with `protocol`, or an error response when the
/// request is not a valid WebSocket handshake.
pub fn handshake_response<B>(
    req: &Request<B>,
    protocol: Option<&str>,
) -> Result<Response<()>, (StatusCode, String)> {
    let headers = req.headers();
    let version_ok = headers
        .get(http::header::SEC_WEBSOCKET_VERSION)
        .is_some_and(|v| v.as_bytes() == b"13");
    let Some(key) = headers.get(http::header::SEC_WEBSOCKET_KEY) else {
        return Err((
            StatusCode::BAD_REQUEST,
            "missing Sec-WebSocket-Key header".into(),
        ));
    };
    if !version_ok {
        return Err((
            StatusCode::BAD_REQUEST,
            "unsupported Sec-WebSocket-Version: only 13 is supported".into(),
        ));
    }
    let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
    let mut response = Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(http::header::UPGRADE, "websocket")
        .header(http::header::CONNECTION, "Upgrade")
        .header(http::header::SEC_WEBSOCKET_ACCEPT, accept);
    if let Some(protocol) = protocol {
        let value = HeaderValue::from_str(protocol)
            .map_err(|_| (StatusCode::BAD_REQUEST, "invalid sub-protocol".to_string()))?;
        response = response.header(http::header::SEC_WEBSOCKET_PROTOCOL, value);
    }
    Ok(response.body(()).expect("static response parts are valid"))
}

/// Wrap an upgraded connection as the server side of a WebSocket.
pub async fn from_upgraded<IO>(io: IO) -> WebSocketStream<IO>
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    let config = WebSocketConfig::default().max_message_size(Some(16 << 20));
    WebSocketStream::from_raw_socket(io, Role::Server, Some(config)).await
}

/// Send a normal close and wait (briefly) for the peer's close, so that the last messages
/// are not lost to a reset.
pub async fn close<IO>(ws: &mut WebSocketStream<IO>)
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    let frame = CloseFrame {
        code: CloseCode::Normal,
        reason: "".into(),
    };
    if ws.send(Message::Close(Some(frame))).await.is_err() {
        return;
    }
    let _ = tokio::time::timeout(std::time::Duration::from_secs(2), async {
        while let Some(Ok(message)) = ws.next().await {
            if message.is_close() {
                break;
            }
        }
    })
    .await;
}

/// A byte stream over a WebSocket: binary messages in, binary messages out. The returned end
/// reads what the peer sends and writes messages to it; the pump ends with either side.
pub fn byte_stream<IO>(ws: WebSocketStream<IO>) -> tokio::io::DuplexStream
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (ours, mut theirs) = tokio::io::duplex(256 * 1024);
    tokio::spawn(async move {
        let mut ws = ws;
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            tokio::select! {
                message = ws.next() => match message {
                    Some(Ok(Message::Binary(data))) => {
                        if theirs.write_all(&data).await.is_err() {
                            break;
                        }
                    }
                    Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
                    Some(Ok(_)) => {}
                },
                n = theirs.read(&mut buf) => match n {
                    Ok(0) | Err(_) => {
                        close(&mut ws).await;
                        break;
                    }
                    Ok(n) => {
                        if ws.send(Message::Binary(Bytes::copy_from_slice(&buf[..n]))).await.is_err() {
                            break;
                        }
                    }
                },
            }
        }
        let _ = theirs.shutdown().await;
    });
    ours
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binary_channel_framing() {
        for protocol in [
            ChannelProtocol::V1,
            ChannelProtocol::V4,
            ChannelProtocol::V5,
        ] {
            let message = protocol.encode(STDOUT, b"hello");
            assert_eq!(message, Message::Binary(Bytes::from_static(b"\x01hello")));
            assert_eq!(
                protocol.decode(&message),
                Some((STDOUT, Bytes::from_static(b"hello")))
            );
        }
        assert_eq!(
            ChannelProtocol::V5.decode(&Message::Binary(Bytes::from_static(&[CLOSE, STDIN]))),
            Some((CLOSE, Bytes::from_static(&[STDIN])))
        );
        assert_eq!(
            ChannelProtocol::V5.decode(&Message::Binary(Bytes::new())),
            None
        );
        assert_eq!(
            ChannelProtocol::V5.decode(&Message::Text("0aGk=".into())),
            None
        );
    }

    #[test]
    fn base64_channel_framing() {
        let message = ChannelProtocol::V4Base64.encode(STDERR, b"hi");
        assert_eq!(message, Message::Text("2aGk=".into()));
        assert_eq!(
            ChannelProtocol::V4Base64.decode(&Message::Text("0aGk=".into())),
            Some((STDIN, Bytes::from_static(b"hi")))
        );
        assert_eq!(
            ChannelProtocol::V1Base64.decode(&Message::Text("0!!".into())),
            None
        );
    }

    #[test]
    fn protocol_names_and_status_format() {
        assert_eq!(
            ChannelProtocol::from_name("v5.channel.k8s.io"),
            Some(ChannelProtocol::V5)
        );
        assert_eq!(ChannelProtocol::from_name(""), Some(ChannelProtocol::V1));
        assert_eq!(ChannelProtocol::from_name("v6.channel.k8s.io"), None);
        assert!(ChannelProtocol::V4.status_json());
        assert!(!ChannelProtocol::V1.status_json());
    }

    #[test]
    fn handshake_accepts_with_the_rfc_6455_key() {
        let req = Request::builder()
            .header("Upgrade", "websocket")
            .header("Connection", "keep-alive, Upgrade")
            .header("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")
            .header("Sec-WebSocket-Version", "13")
            .header(
                "Sec-WebSocket-Protocol",
                "v5.channel.k8s.io, v4.channel.k8s.io",
            )
            .body(())
            .unwrap();
        assert!(is_websocket_request(&req));
        assert_eq!(
            offered_protocols(req.headers()),
            ["v5.channel.k8s.io", "v4.channel.k8s.io"]
        );
        let response = handshake_response(&req, Some("v5.channel.k8s.io")).unwrap();
        assert_eq!(response.status(), StatusCode::SWITCHING_PROTOCOLS);
        assert_eq!(
            response.headers()["sec-websocket-accept"],
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
        assert_eq!(
            response.headers()["sec-websocket-protocol"],
            "v5.channel.k8s.io"
        );
        let no_key = Request::builder()
            .header("Upgrade", "websocket")
            .body(())
            .unwrap();
        assert_eq!(
            handshake_response(&no_key, None).unwrap_err().0,
            StatusCode::BAD_REQUEST
        );
    }

    #[tokio::test]
    async fn byte_stream_carries_bytes_both_ways() {
        let (a, b) = tokio::io::duplex(1 << 16);
        let server = from_upgraded(a).await;
        let mut client = WebSocketStream::from_raw_socket(b, Role::Client, None).await;
        let mut bytes = byte_stream(server);
        client
            .send(Message::Binary(Bytes::from_static(b"abc")))
            .await
            .unwrap();
        client
            .send(Message::Binary(Bytes::from_static(b"def")))
            .await
            .unwrap();
        let mut got = [0u8; 6];
        bytes.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"abcdef");
        bytes.write_all(b"reply").await.unwrap();
        let message = client.next().await.unwrap().unwrap();
        assert_eq!(message, Message::Binary(Bytes::from_static(b"reply")));
        client.close(None).await.unwrap();
        let mut rest = Vec::new();
        bytes.read_to_end(&mut rest).await.unwrap();
        assert!(rest.is_empty());
    }
}
