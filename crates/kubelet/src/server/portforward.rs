//! `portForward/{namespace}/{pod}`: SPDY (`portforward.k8s.io`), directly or tunnelled through
//! a WebSocket (kubectl). Each forwarded connection is a pair of streams with the same
//! `requestID`: an `error` stream (we write a message there if the connection fails) and a
//! `data` stream spliced to a TCP connection to the port inside the pod's network namespace.
//!
//! Other clients (the Python client, ...) use a WebSocket with channels instead
//! (`v4.channel.k8s.io`, ports in the query): channel 2n carries port n's data, 2n+1 its errors,
//! and each begins with the port number (16 bits, little-endian).

use std::collections::HashMap;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;

use super::spdy;
use super::websocket::ChannelProtocol;

pub const PROTOCOL: &str = "portforward.k8s.io";
/// How long the second stream of a pair may take to arrive.
const PAIR_TIMEOUT: Duration = Duration::from_secs(30);

/// Where to connect: the pod's network namespace file, or the host's (hostNetwork).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub pod: String,
    pub netns: Option<PathBuf>,
}

/// Connect to `localhost:port` inside the network namespace `netns` (the host's when
/// `None`), as upstream's runtimes do: IPv4 first, then IPv6.
pub async fn connect(netns: Option<&Path>, port: u16) -> std::io::Result<TcpStream> {
    let addrs = [
        SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
        SocketAddr::from((Ipv6Addr::LOCALHOST, port)),
    ];
    let Some(netns) = netns else {
        return TcpStream::connect(&addrs[..]).await;
    };
    let netns = netns.to_path_buf();
    // setns(2) changes the namespace of the calling thread only: connect from a thread of
    // our own, then hand the connected socket to tokio.
    let stream = tokio::task::spawn_blocking(move || -> std::io::Result<std::net::TcpStream> {
        std::thread::spawn(move || {
            let file = std::fs::File::open(&netns)?;
            rustix::thread::move_into_link_name_space(
                std::os::fd::AsFd::as_fd(&file),
                Some(rustix::thread::LinkNameSpaceType::Network),
            )
            .map_err(|e| std::io::Error::other(format!("entering {}: {e}", netns.display())))?;
            let mut last = None;
            for addr in addrs {
                match std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(10)) {
                    Ok(stream) => return Ok(stream),
                    Err(e) => last = Some(e),
                }
            }
            Err(last.expect("two addresses were tried"))
        })
        .join()
        .map_err(|_| std::io::Error::other("the connecting thread panicked"))?
    })
    .await
    .map_err(std::io::Error::other)??;
    stream.set_nonblocking(true)?;
    TcpStream::from_std(stream)
}

/// The ports of a WebSocket port-forward (`port` or `ports`, repeated or comma-separated).
pub fn parse_ports(query: &[(String, String)]) -> Result<Vec<u16>, String> {
    let mut ports = Vec::new();
    for (name, value) in query {
        if name != "port" && name != "ports" {
            continue;
        }
        for p in value.split(',') {
            match p.trim().parse::<u16>() {
                Ok(port) if port > 0 => ports.push(port),
                Ok(_) => return Err(format!("port {p:?} must be > 0")),
                Err(e) => return Err(format!("unable to parse {p:?} as a port: {e}")),
            }
        }
    }
    Ok(ports)
}

/// Forward `ports` over a WebSocket with a channel protocol, one connection per port, until
/// the pod closes them all or the client goes.
pub async fn serve_websocket<IO>(
    ws: WebSocketStream<IO>,
    protocol: ChannelProtocol,
    ports: Vec<u16>,
    target: Target,
) where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sink, mut stream) = ws.split();
    let (out_tx, mut out_rx) = mpsc::channel::<Message>(32);
    let mut to_pods = Vec::new();
    let mut forwards = Vec::new();
    for (i, port) in ports.iter().copied().enumerate() {
        let (data, error) = ((2 * i) as u8, (2 * i + 1) as u8);
        for channel in [data, error] {
            let _ = out_tx
                .send(protocol.encode(channel, &port.to_le_bytes()))
                .await;
        }
        let (to_pod, mut from_client) = mpsc::channel::<Bytes>(16);
        to_pods.push(to_pod);
        let (out, netns, pod) = (out_tx.clone(), target.netns.clone(), target.pod.clone());
        forwards.push(tokio::spawn(async move {
            let socket = match connect(netns.as_deref(), port).await {
                Ok(socket) => socket,
                Err(e) => {
                    let message = format!("error forwarding port {port} to pod {pod}: {e}");
                    let _ = out.send(protocol.encode(error, message.as_bytes())).await;
                    return;
                }
            };
            let (mut from_pod, mut to_pod) = socket.into_split();
            let upstream = tokio::spawn(async move {
                while let Some(chunk) = from_client.recv().await {
                    if to_pod.write_all(&chunk).await.is_err() {
                        return;
                    }
                }
                let _ = to_pod.shutdown().await;
            });
            let mut buf = vec![0u8; 32 * 1024];
            loop {
                match from_pod.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if out.send(protocol.encode(data, &buf[..n])).await.is_err() {
                            break;
                        }
                    }
                }
            }
            upstream.abort();
        }));
    }
    drop(out_tx);
    let reader = tokio::spawn(async move {
        while let Some(Ok(message)) = stream.next().await {
            if message.is_close() {
                break;
            }
            let Some((channel, payload)) = protocol.decode(&message) else {
                continue;
            };
            // Only data channels take input.
            if channel % 2 == 0
                && let Some(to_pod) = to_pods.get(usize::from(channel / 2))
            {
                let _ = to_pod.send(payload).await;
            }
        }
    });
    let writer = async {
        while let Some(message) = out_rx.recv().await {
            if sink.send(message).await.is_err() {
                break;
            }
        }
    };
    // Until every forward ended (they hold the senders), or the client went away.
    tokio::select! {
        _ = writer => {}
        _ = futures::future::join_all(forwards.iter_mut()) => {
            while let Ok(message) = out_rx.try_recv() {
                let _ = sink.send(message).await;
            }
        }
    }
    for forward in &forwards {
        forward.abort();
    }
    reader.abort();
    let _ = sink.close().await;
}

#[derive(Default)]
struct Pair {
    data: Option<spdy::Stream>,
    error: Option<u32>,
    port: u16,
}

/// Serve port-forward streams on a SPDY connection until the client closes it.
pub async fn serve_spdy(mut conn: spdy::Connection, target: Target) {
    let mut pairs: HashMap<String, (Pair, tokio::time::Instant)> = HashMap::new();
    while let Some(stream) = conn.streams.recv().await {
        let writer = conn.writer.clone();
        let port = stream.headers.get("port").unwrap_or("");
        let port: u16 = match port.parse() {
            Ok(p) if p > 0 => p,
            _ => {
                tracing::debug!(port, "port-forward stream with an invalid port header");
                let _ = writer.reset(stream.id, spdy::RST_PROTOCOL_ERROR).await;
                continue;
            }
        };
        let stream_type = stream.headers.get("streamType").unwrap_or("").to_string();
        // Old clients send no requestID: pair the error stream n with the data stream n+2.
        let request_id = match stream.headers.get("requestID") {
            Some(id) if !id.is_empty() => id.to_string(),
            _ => match stream_type.as_str() {
                "data" => stream.id.saturating_sub(2).to_string(),
                _ => stream.id.to_string(),
            },
        };
        pairs.retain(|_, (_, since)| since.elapsed() < PAIR_TIMEOUT);
        let (pair, _) = pairs
            .entry(request_id.clone())
            .or_insert_with(|| (Pair::default(), tokio::time::Instant::now()));
        pair.port = port;
        match stream_type.as_str() {
            "error" if pair.error.is_none() => pair.error = Some(stream.id),
            "data" if pair.data.is_none() => pair.data = Some(stream),
            other => {
                tracing::debug!(
                    stream_type = other,
                    request_id,
                    "unexpected port-forward stream"
                );
                let _ = writer.reset(stream.id, spdy::RST_PROTOCOL_ERROR).await;
                continue;
            }
        }
        if pair.data.is_some() && pair.error.is_some() {
            let (pair, _) = pairs
                .remove(&request_id)
                .expect("the pair was just updated");
            let target = target.clone();
            tokio::spawn(forward(pair, target, writer));
        }
    }
    conn.close(Duration::from_secs(1)).await;
}

/// Splice one data stream to a connection in the pod; report failures on the error stream.
async fn forward(pair: Pair, target: Target, writer: spdy::Writer) {
    let Pair {
        data: Some(mut data),
        error: Some(error_id),
        port,
    } = pair
    else {
        return;
    };
    let data_id = data.id;
    match connect(target.netns.as_deref(), port).await {
        Err(e) => {
            let message = format!(
                "error forwarding port {port} to pod {}: failed to connect to localhost:{port} inside the pod's network namespace: {e}",
                target.pod
            );
            tracing::debug!(%message);
            let _ = writer.data(error_id, Bytes::from(message)).await;
        }
        Ok(socket) => {
            let (mut from_pod, mut to_pod) = socket.into_split();
            // Client to pod: until the client's FIN (or reset), then half-close our side.
            let upstream = tokio::spawn(async move {
                while let Some(chunk) = data.data.recv().await {
                    if to_pod.write_all(&chunk).await.is_err() {
                        return;
                    }
                }
                let _ = to_pod.shutdown().await;
            });
            // Pod to client: until the pod closes; then the stream is finished.
            let mut buf = vec![0u8; 32 * 1024];
            loop {
                match from_pod.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if writer
                            .data(data_id, Bytes::copy_from_slice(&buf[..n]))
                            .await
                            .is_err()
                        {
                            break;
                        }
                    }
                }
            }
            upstream.abort();
        }
    }
    // Both ends as upstream's kubelet: the data stream, then the error stream.
    let _ = writer.fin(data_id).await;
    let _ = writer.fin(error_id).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use spdy::{Frame, HeaderDecoder, HeaderEncoder, Headers};

    fn syn(id: u32, kind: &str, port: u16, request: &str) -> Frame {
        Frame::SynStream {
            stream_id: id,
            associated_to: 0,
            priority: 0,
            flags: 0,
            headers: Headers(vec![
                ("streamtype".into(), kind.into()),
                ("port".into(), port.to_string()),
                ("requestid".into(), request.into()),
            ]),
        }
    }

    #[test]
    fn ports_from_the_query() {
        let q = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
            pairs
                .iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect()
        };
        assert_eq!(
            parse_ports(&q(&[("ports", "80,8080"), ("port", "9")])).unwrap(),
            [80, 8080, 9]
        );
        assert!(parse_ports(&q(&[("ports", "0")])).is_err());
        assert!(parse_ports(&q(&[("ports", "http")])).is_err());
        assert!(parse_ports(&q(&[("other", "1")])).unwrap().is_empty());
    }

    #[tokio::test]
    async fn websocket_channels_forward_each_port() {
        use tokio_tungstenite::tungstenite::protocol::Role;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut buf = [0u8; 5];
            socket.read_exact(&mut buf).await.unwrap();
            socket.write_all(b"echo:").await.unwrap();
            socket.write_all(&buf).await.unwrap();
        });
        let closed_port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let (a, b) = tokio::io::duplex(1 << 16);
        let target = Target {
            pod: "web".into(),
            netns: None,
        };
        let server = tokio::spawn(async move {
            let ws = super::super::websocket::from_upgraded(a).await;
            serve_websocket(ws, ChannelProtocol::V4, vec![port, closed_port], target).await
        });
        let mut client = WebSocketStream::from_raw_socket(b, Role::Client, None).await;
        client
            .send(Message::Binary(Bytes::from_static(b"\x00hello")))
            .await
            .unwrap();
        let mut by_channel: HashMap<u8, Vec<Vec<u8>>> = HashMap::new();
        while let Some(Ok(message)) = client.next().await {
            if let Message::Binary(data) = message {
                by_channel
                    .entry(data[0])
                    .or_default()
                    .push(data[1..].to_vec());
            }
        }
        // Every channel starts with its port.
        assert_eq!(by_channel[&0][0], port.to_le_bytes());
        assert_eq!(by_channel[&1][0], port.to_le_bytes());
        assert_eq!(by_channel[&2][0], closed_port.to_le_bytes());
        assert_eq!(by_channel[&0][1..].concat(), b"echo:hello");
        assert_eq!(by_channel[&1].len(), 1, "no error for the good port");
        let error = String::from_utf8(by_channel[&3][1..].concat()).unwrap();
        assert!(
            error.contains(&format!("error forwarding port {closed_port} to pod web")),
            "{error}"
        );
        server.await.unwrap();
    }

    #[tokio::test]
    async fn forwards_a_connection_and_reports_refused_ones() {
        // A one-shot echo-with-prefix server on the host (hostNetwork target).
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut request = Vec::new();
            socket.read_to_end(&mut request).await.unwrap();
            socket.write_all(b"got ").await.unwrap();
            socket.write_all(&request).await.unwrap();
        });
        let closed_port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };

        let (client, server) = tokio::io::duplex(1 << 16);
        let target = Target {
            pod: "web".into(),
            netns: None,
        };
        let task = tokio::spawn(serve_spdy(spdy::Connection::serve(server), target));
        let (mut rd, mut wr) = tokio::io::split(client);
        let mut enc = HeaderEncoder::new();
        let mut wire = Vec::new();
        for frame in [
            syn(1, "error", port, "0"),
            Frame::Data {
                stream_id: 1,
                flags: spdy::FLAG_FIN,
                data: Bytes::new(),
            },
            syn(3, "data", port, "0"),
            Frame::Data {
                stream_id: 3,
                flags: 0,
                data: Bytes::from_static(b"ping"),
            },
            Frame::Data {
                stream_id: 3,
                flags: spdy::FLAG_FIN,
                data: Bytes::new(),
            },
            syn(5, "error", closed_port, "1"),
            syn(7, "data", closed_port, "1"),
        ] {
            spdy::encode_frame(&frame, &mut enc, &mut wire).unwrap();
        }
        wr.write_all(&wire).await.unwrap();

        let mut dec = HeaderDecoder::new();
        let mut by_stream: HashMap<u32, Vec<u8>> = HashMap::new();
        let mut fins = Vec::new();
        while fins.len() < 4 {
            let frame = spdy::read_frame(&mut rd, &mut dec).await.unwrap().unwrap();
            if let Frame::Data {
                stream_id,
                flags,
                data,
            } = frame
            {
                by_stream
                    .entry(stream_id)
                    .or_default()
                    .extend_from_slice(&data);
                if flags & spdy::FLAG_FIN != 0 {
                    fins.push(stream_id);
                }
            }
        }
        fins.sort();
        assert_eq!(fins, [1, 3, 5, 7]);
        assert_eq!(by_stream[&3], b"got ping");
        assert!(by_stream[&1].is_empty(), "no error for a good connection");
        let error = String::from_utf8(by_stream[&5].clone()).unwrap();
        assert!(
            error.contains(&format!("error forwarding port {closed_port} to pod web")),
            "{error}"
        );
        drop(wr);
        drop(rd);
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .unwrap()
            .unwrap();
    }
}
