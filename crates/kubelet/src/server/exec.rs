//! `exec` and `attach`: a process's stdin, stdout, stderr and TTY size carried over a
//! WebSocket (channel protocols) or SPDY (one stream per channel), ending with a `Status` on
//! the error channel that carries the exit code.

use std::future::Future;
use std::time::Duration;

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use runtime::container::ExecProcess;
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_tungstenite::WebSocketStream;

use super::spdy;
use super::websocket::{self, ChannelProtocol};

/// How long a SPDY client has to open the streams it asked for.
const STREAM_CREATION_TIMEOUT: Duration = Duration::from_secs(30);
/// After the process exits, how long its output may take to drain (a background child can
/// hold the pipes open forever).
const OUTPUT_DRAIN_TIMEOUT: Duration = Duration::from_secs(2);

/// SPDY sub-protocols of exec and attach, preferred first.
pub const SPDY_PROTOCOLS: [&str; 4] = [
    "v4.channel.k8s.io",
    "v3.channel.k8s.io",
    "v2.channel.k8s.io",
    "channel.k8s.io",
];

/// Which streams the client wants.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StreamOptions {
    pub stdin: bool,
    pub stdout: bool,
    pub stderr: bool,
    pub tty: bool,
}

/// Streams and command from an exec/attach query. The kubelet's own names (`input`,
/// `output`, `error`) and `PodExecOptions`' (`stdin`, `stdout`, `stderr`) are both taken.
pub fn parse_query(query: &[(String, String)]) -> Result<(StreamOptions, Vec<String>), String> {
    let mut opts = StreamOptions::default();
    let mut command = Vec::new();
    for (name, value) in query {
        let flag = || super::logs::parse_bool(name, value);
        match name.as_str() {
            "input" | "stdin" => opts.stdin = flag()?,
            "output" | "stdout" => opts.stdout = flag()?,
            "error" | "stderr" => opts.stderr = flag()?,
            "tty" => opts.tty = flag()?,
            "command" => command.push(value.clone()),
            _ => {}
        }
    }
    // With a TTY, stderr is merged into stdout.
    if opts.tty {
        opts.stderr = false;
    }
    if !opts.stdin && !opts.stdout && !opts.stderr {
        return Err("you must specify at least 1 of stdin, stdout, stderr".into());
    }
    Ok((opts, command))
}

/// A TTY size message on the resize channel (Go field names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TerminalSize {
    #[serde(rename = "Width")]
    pub width: u16,
    #[serde(rename = "Height")]
    pub height: u16,
}

/// How a session ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Exited(i32),
    /// The process could not be run (or its end is unknown): an internal error.
    Failed(String),
}

impl Outcome {
    /// The error channel's message: a `Status` in JSON (v4 and later), or plain text (none
    /// for success) before v4.
    pub fn error_message(&self, command: &[String], json: bool) -> Option<Vec<u8>> {
        let status = match self {
            Outcome::Exited(0) => json!({"metadata": {}, "status": "Success"}),
            Outcome::Exited(code) => {
                let code = code & 0xff;
                json!({
                    "metadata": {},
                    "status": "Failure",
                    "message": format!("command terminated with non-zero exit code: error executing command {command:?}, exit code {code}"),
                    "reason": "NonZeroExitCode",
                    "details": {"causes": [{"reason": "ExitCode", "message": code.to_string()}]},
                })
            }
            Outcome::Failed(message) => json!({
                "metadata": {},
                "status": "Failure",
                "message": format!("Internal error occurred: {message}"),
                "reason": "InternalError",
                "details": {"causes": [{"message": message}]},
                "code": 500,
            }),
        };
        if json {
            return Some(serde_json::to_vec(&status).expect("a json value serializes"));
        }
        match self {
            Outcome::Exited(0) => None,
            _ => Some(
                status["message"]
                    .as_str()
                    .unwrap_or_default()
                    .as_bytes()
                    .to_vec(),
            ),
        }
    }
}

/// What a session sends to the client, in order.
#[derive(Debug, PartialEq, Eq)]
pub enum Out {
    Stdout(Bytes),
    Stderr(Bytes),
    Done(Outcome),
}

/// The client's side of a session, whatever carries it.
pub struct Channels {
    /// Ends when the client closes stdin.
    pub stdin: Option<mpsc::Receiver<Bytes>>,
    pub resize: Option<mpsc::Receiver<TerminalSize>>,
    pub out: mpsc::Sender<Out>,
}

async fn pump_output(
    mut reader: Box<dyn AsyncRead + Send + Unpin>,
    out: mpsc::Sender<Out>,
    wrap: fn(Bytes) -> Out,
) {
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        match reader.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                if out
                    .send(wrap(Bytes::copy_from_slice(&buf[..n])))
                    .await
                    .is_err()
                {
                    return;
                }
            }
        }
    }
}

/// Connect a started process (or the error that kept it from starting) to the client's
/// channels, and report how it ended.
pub async fn run(process: Result<ExecProcess, String>, channels: Channels) {
    let Channels { stdin, resize, out } = channels;
    let process = match process {
        Ok(p) => p,
        Err(message) => {
            let _ = out.send(Out::Done(Outcome::Failed(message))).await;
            return;
        }
    };
    let ExecProcess {
        stdin: process_stdin,
        stdout,
        stderr,
        exit,
        resize: process_resize,
    } = process;
    let stdin_task = stdin.map(|mut rx| {
        tokio::spawn(async move {
            let mut writer = process_stdin;
            while let Some(data) = rx.recv().await {
                if let Some(w) = &mut writer
                    && (w.write_all(&data).await.is_err() || w.flush().await.is_err())
                {
                    writer = None;
                }
            }
            // The client closed stdin: the process sees EOF.
            if let Some(mut w) = writer {
                let _ = w.shutdown().await;
            }
        })
    });
    let resize_task = resize.map(|mut rx| {
        tokio::spawn(async move {
            while let Some(size) = rx.recv().await {
                if let Some(tx) = &process_resize {
                    let _ = tx.send((size.width, size.height));
                }
            }
        })
    });
    let mut outputs = Vec::new();
    if let Some(reader) = stdout {
        outputs.push(tokio::spawn(pump_output(reader, out.clone(), Out::Stdout)));
    }
    if let Some(reader) = stderr {
        outputs.push(tokio::spawn(pump_output(reader, out.clone(), Out::Stderr)));
    }
    let outcome = match exit.await {
        Ok(code) => Outcome::Exited(code),
        Err(_) => Outcome::Failed("the process's exit status was lost".into()),
    };
    let drained = tokio::time::timeout(
        OUTPUT_DRAIN_TIMEOUT,
        futures::future::join_all(outputs.iter_mut()),
    )
    .await;
    if drained.is_err() {
        for task in &outputs {
            task.abort();
        }
    }
    for task in [stdin_task, resize_task].into_iter().flatten() {
        task.abort();
    }
    let _ = out.send(Out::Done(outcome)).await;
}

/// Parse resize messages out of a byte stream (SPDY's resize stream is a sequence of JSON
/// objects, not framed).
fn resize_decoder(mut data: mpsc::Receiver<Bytes>) -> mpsc::Receiver<TerminalSize> {
    let (tx, rx) = mpsc::channel(4);
    tokio::spawn(async move {
        let mut buf = Vec::new();
        while let Some(chunk) = data.recv().await {
            buf.extend_from_slice(&chunk);
            let mut consumed = 0;
            let mut sizes = serde_json::Deserializer::from_slice(&buf).into_iter::<TerminalSize>();
            loop {
                match sizes.next() {
                    Some(Ok(size)) => {
                        consumed = sizes.byte_offset();
                        if tx.send(size).await.is_err() {
                            return;
                        }
                    }
                    Some(Err(e)) if e.is_eof() => break,
                    Some(Err(_)) => return,
                    None => {
                        consumed = buf.len();
                        break;
                    }
                }
            }
            buf.drain(..consumed);
        }
    });
    rx
}

/// Serve a session over a WebSocket with a channel protocol. `process` starts the process
/// once the connection is up.
pub async fn serve_websocket<IO, F>(
    ws: WebSocketStream<IO>,
    protocol: ChannelProtocol,
    opts: StreamOptions,
    command: Vec<String>,
    process: F,
) where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    F: Future<Output = Result<ExecProcess, String>> + Send + 'static,
{
    let (mut sink, mut stream) = ws.split();
    // An empty message on the lowest channel we write tells the client we are ready.
    let first = if opts.stdout {
        websocket::STDOUT
    } else if opts.stderr {
        websocket::STDERR
    } else {
        websocket::ERROR
    };
    if sink.send(protocol.encode(first, &[])).await.is_err() {
        return;
    }
    let (stdin_tx, stdin_rx) = if opts.stdin {
        let (tx, rx) = mpsc::channel::<Bytes>(16);
        (Some(tx), Some(rx))
    } else {
        (None, None)
    };
    let (resize_tx, resize_rx) = if opts.tty {
        let (tx, rx) = mpsc::channel(4);
        (Some(tx), Some(rx))
    } else {
        (None, None)
    };
    let (out_tx, mut out_rx) = mpsc::channel(32);
    tokio::spawn(async move {
        run(
            process.await,
            Channels {
                stdin: stdin_rx,
                resize: resize_rx,
                out: out_tx,
            },
        )
        .await
    });
    // Reading is its own task, so that a process slow to take stdin never holds up output.
    let mut reader = tokio::spawn(async move {
        let mut stdin_tx = stdin_tx;
        while let Some(Ok(message)) = stream.next().await {
            if message.is_close() {
                break;
            }
            let Some((channel, data)) = protocol.decode(&message) else {
                continue;
            };
            match channel {
                websocket::STDIN => {
                    if let Some(tx) = &stdin_tx
                        && tx.send(data).await.is_err()
                    {
                        stdin_tx = None;
                    }
                }
                websocket::RESIZE => {
                    if let (Some(tx), Ok(size)) = (&resize_tx, serde_json::from_slice(&data)) {
                        let _ = tx.send(size).await;
                    }
                }
                websocket::CLOSE
                    if protocol == ChannelProtocol::V5
                        && data.first() == Some(&websocket::STDIN) =>
                {
                    stdin_tx = None;
                }
                _ => {}
            }
        }
    });
    while let Some(out) = out_rx.recv().await {
        let message = match out {
            Out::Stdout(data) => protocol.encode(websocket::STDOUT, &data),
            Out::Stderr(data) => protocol.encode(websocket::STDERR, &data),
            Out::Done(outcome) => {
                if let Some(message) = outcome.error_message(&command, protocol.status_json()) {
                    let _ = sink.send(protocol.encode(websocket::ERROR, &message)).await;
                }
                break;
            }
        };
        if sink.send(message).await.is_err() {
            break;
        }
    }
    // A normal close; the reader sees the client's close in reply.
    let frame = tokio_tungstenite::tungstenite::protocol::CloseFrame {
        code: tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode::Normal,
        reason: "".into(),
    };
    let _ = sink
        .send(tokio_tungstenite::tungstenite::Message::Close(Some(frame)))
        .await;
    if tokio::time::timeout(Duration::from_secs(2), &mut reader)
        .await
        .is_err()
    {
        reader.abort();
    }
}

/// Serve a session over SPDY: wait for the streams the client asked for, then run.
pub async fn serve_spdy<F>(
    mut conn: spdy::Connection,
    protocol: &str,
    opts: StreamOptions,
    command: Vec<String>,
    process: F,
) where
    F: Future<Output = Result<ExecProcess, String>> + Send + 'static,
{
    let json_status = protocol == "v4.channel.k8s.io";
    let resize_supported = matches!(protocol, "v4.channel.k8s.io" | "v3.channel.k8s.io");
    let expected = 1
        + usize::from(opts.stdin)
        + usize::from(opts.stdout)
        + usize::from(opts.stderr)
        + usize::from(opts.tty && resize_supported);
    let mut error_id = None;
    let mut stdout_id = None;
    let mut stderr_id = None;
    let mut stdin = None;
    let mut resize = None;
    let mut received = 0;
    let deadline = tokio::time::sleep(STREAM_CREATION_TIMEOUT);
    tokio::pin!(deadline);
    while received < expected {
        let stream = tokio::select! {
            stream = conn.streams.recv() => match stream {
                Some(stream) => stream,
                None => return,
            },
            _ = &mut deadline => {
                tracing::debug!("timed out waiting for the client to create streams");
                conn.close(Duration::from_secs(1)).await;
                return;
            }
        };
        match stream.headers.get("streamType").unwrap_or("") {
            "error" => error_id = Some(stream.id),
            "stdout" => stdout_id = Some(stream.id),
            "stderr" => stderr_id = Some(stream.id),
            "stdin" => stdin = Some(stream.data),
            "resize" => resize = Some(resize_decoder(stream.data)),
            other => {
                tracing::debug!(stream_type = other, "unexpected stream type");
                continue;
            }
        }
        received += 1;
    }
    // Before v2 the server closes stdin at once: the client sends nothing on it.
    if protocol == "channel.k8s.io" || protocol.is_empty() {
        stdin = None;
    }
    let stdin = match (opts.stdin, stdin) {
        (true, Some(rx)) => Some(rx),
        (true, None) => Some(mpsc::channel(1).1),
        (false, _) => None,
    };
    let (out_tx, mut out_rx) = mpsc::channel(32);
    let session = Channels {
        stdin,
        resize,
        out: out_tx,
    };
    tokio::spawn(async move { run(process.await, session).await });
    let writer = conn.writer.clone();
    while let Some(out) = out_rx.recv().await {
        let sent = match out {
            Out::Stdout(data) => match stdout_id {
                Some(id) => writer.data(id, data).await,
                None => Ok(()),
            },
            Out::Stderr(data) => match stderr_id {
                Some(id) => writer.data(id, data).await,
                None => Ok(()),
            },
            Out::Done(outcome) => {
                if let (Some(id), Some(message)) =
                    (error_id, outcome.error_message(&command, json_status))
                {
                    let _ = writer.data(id, message.into()).await;
                }
                break;
            }
        };
        if sent.is_err() {
            break;
        }
    }
    for id in [stdout_id, stderr_id, error_id].into_iter().flatten() {
        let _ = writer.fin(id).await;
    }
    drop(writer);
    conn.close(Duration::from_secs(2)).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio_tungstenite::tungstenite::Message;
    use tokio_tungstenite::tungstenite::protocol::Role;

    fn q(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    #[test]
    fn query_takes_both_naming_styles() {
        let (opts, command) = parse_query(&q(&[
            ("command", "sh"),
            ("command", "-c"),
            ("command", "echo hi"),
            ("input", "1"),
            ("output", "1"),
            ("error", "1"),
        ]))
        .unwrap();
        assert_eq!(command, ["sh", "-c", "echo hi"]);
        assert_eq!(
            opts,
            StreamOptions {
                stdin: true,
                stdout: true,
                stderr: true,
                tty: false
            }
        );
        let (opts, _) = parse_query(&q(&[
            ("stdout", "true"),
            ("stderr", "true"),
            ("tty", "true"),
        ]))
        .unwrap();
        assert!(
            opts.tty && opts.stdout && !opts.stderr,
            "a TTY has no separate stderr"
        );
        assert!(parse_query(&q(&[("command", "ls")])).is_err());
    }

    #[test]
    fn exit_codes_become_statuses_kubectl_understands() {
        let cmd = vec!["false".to_string()];
        let ok: serde_json::Value =
            serde_json::from_slice(&Outcome::Exited(0).error_message(&cmd, true).unwrap()).unwrap();
        assert_eq!(ok["status"], "Success");
        let failed: serde_json::Value =
            serde_json::from_slice(&Outcome::Exited(3).error_message(&cmd, true).unwrap()).unwrap();
        assert_eq!(failed["status"], "Failure");
        assert_eq!(failed["reason"], "NonZeroExitCode");
        assert_eq!(failed["details"]["causes"][0]["reason"], "ExitCode");
        assert_eq!(failed["details"]["causes"][0]["message"], "3");
        let internal: serde_json::Value = serde_json::from_slice(
            &Outcome::Failed("no such container".into())
                .error_message(&cmd, true)
                .unwrap(),
        )
        .unwrap();
        assert_eq!(internal["reason"], "InternalError");
        assert_eq!(internal["code"], 500);
        assert_eq!(Outcome::Exited(0).error_message(&cmd, false), None);
        assert!(
            String::from_utf8(Outcome::Exited(2).error_message(&cmd, false).unwrap())
                .unwrap()
                .contains("exit code 2")
        );
    }

    /// A fake process: echoes stdin to stdout (upper-cased to stderr), reports resizes, and
    /// exits with the number of bytes it read once stdin ends.
    fn echo_process() -> (ExecProcess, mpsc::UnboundedReceiver<(u16, u16)>) {
        let (stdin_w, mut stdin_r) = tokio::io::duplex(1024);
        let (mut stdout_w, stdout_r) = tokio::io::duplex(1024);
        let (mut stderr_w, stderr_r) = tokio::io::duplex(1024);
        let (exit_tx, exit) = tokio::sync::oneshot::channel();
        let (resize_tx, resize_rx) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut total = 0;
            let mut buf = [0u8; 256];
            loop {
                let n = stdin_r.read(&mut buf).await.unwrap();
                if n == 0 {
                    break;
                }
                total += n;
                stdout_w.write_all(&buf[..n]).await.unwrap();
                stderr_w
                    .write_all(&buf[..n].to_ascii_uppercase())
                    .await
                    .unwrap();
            }
            drop(stdout_w);
            drop(stderr_w);
            let _ = exit_tx.send(total as i32);
        });
        (
            ExecProcess {
                stdin: Some(Box::new(stdin_w)),
                stdout: Some(Box::new(stdout_r)),
                stderr: Some(Box::new(stderr_r)),
                exit,
                resize: Some(resize_tx),
            },
            resize_rx,
        )
    }

    #[tokio::test]
    async fn websocket_v5_session_end_to_end() {
        let (a, b) = tokio::io::duplex(1 << 16);
        let (process, mut resizes) = echo_process();
        let opts = StreamOptions {
            stdin: true,
            stdout: true,
            stderr: true,
            tty: true,
        };
        let server = tokio::spawn(async move {
            let ws = websocket::from_upgraded(a).await;
            serve_websocket(
                ws,
                ChannelProtocol::V5,
                opts,
                vec!["cat".into()],
                async move { Ok(process) },
            )
            .await
        });
        let mut client = WebSocketStream::from_raw_socket(b, Role::Client, None).await;
        // The ready signal: an empty stdout message.
        assert_eq!(
            client.next().await.unwrap().unwrap(),
            Message::Binary(Bytes::from_static(&[1]))
        );
        client
            .send(Message::Binary(Bytes::from_static(
                b"\x04{\"Width\":80,\"Height\":24}",
            )))
            .await
            .unwrap();
        client
            .send(Message::Binary(Bytes::from_static(b"\x00hello")))
            .await
            .unwrap();
        client
            .send(Message::Binary(Bytes::from_static(&[255, 0])))
            .await
            .unwrap();
        let mut stdout = Vec::new();
        let mut stderr = Vec::new();
        let mut status = None;
        while let Some(Ok(message)) = client.next().await {
            match message {
                Message::Binary(data) => match data[0] {
                    1 => stdout.extend_from_slice(&data[1..]),
                    2 => stderr.extend_from_slice(&data[1..]),
                    3 => {
                        status =
                            Some(serde_json::from_slice::<serde_json::Value>(&data[1..]).unwrap())
                    }
                    other => panic!("unexpected channel {other}"),
                },
                Message::Close(_) => break,
                _ => {}
            }
        }
        assert_eq!(stdout, b"hello");
        assert_eq!(stderr, b"HELLO");
        let status = status.unwrap();
        assert_eq!(status["details"]["causes"][0]["message"], "5");
        assert_eq!(resizes.recv().await, Some((80, 24)));
        server.await.unwrap();
    }

    /// client-go pings every 5 s and gives up after 60 s without a pong.
    #[tokio::test]
    async fn websocket_pings_are_answered_during_a_session() {
        let (a, b) = tokio::io::duplex(1 << 16);
        let (process, _resizes) = echo_process();
        let opts = StreamOptions {
            stdin: true,
            stdout: true,
            ..Default::default()
        };
        tokio::spawn(async move {
            let ws = websocket::from_upgraded(a).await;
            serve_websocket(
                ws,
                ChannelProtocol::V5,
                opts,
                vec![],
                async move { Ok(process) },
            )
            .await
        });
        let mut client = WebSocketStream::from_raw_socket(b, Role::Client, None).await;
        assert_eq!(
            client.next().await.unwrap().unwrap(),
            Message::Binary(Bytes::from_static(&[1]))
        );
        client
            .send(Message::Ping(Bytes::from_static(b"beat")))
            .await
            .unwrap();
        let pong = tokio::time::timeout(Duration::from_secs(5), client.next())
            .await
            .unwrap();
        assert_eq!(
            pong.unwrap().unwrap(),
            Message::Pong(Bytes::from_static(b"beat"))
        );
        client
            .send(Message::Binary(Bytes::from_static(&[255, 0])))
            .await
            .unwrap();
        while let Some(Ok(message)) = client.next().await {
            if message.is_close() {
                break;
            }
        }
    }

    #[tokio::test]
    async fn failed_start_reports_an_internal_error() {
        let (a, b) = tokio::io::duplex(1 << 16);
        let opts = StreamOptions {
            stdout: true,
            ..Default::default()
        };
        tokio::spawn(async move {
            let ws = websocket::from_upgraded(a).await;
            serve_websocket(ws, ChannelProtocol::V4, opts, vec![], async {
                Err("container is gone".to_string())
            })
            .await
        });
        let mut client = WebSocketStream::from_raw_socket(b, Role::Client, None).await;
        let mut status = None;
        while let Some(Ok(message)) = client.next().await {
            if let Message::Binary(data) = message
                && data[0] == 3
            {
                status = Some(serde_json::from_slice::<serde_json::Value>(&data[1..]).unwrap());
            }
        }
        let status = status.unwrap();
        assert_eq!(status["status"], "Failure");
        assert!(
            status["message"]
                .as_str()
                .unwrap()
                .contains("container is gone")
        );
    }

    #[tokio::test]
    async fn spdy_session_end_to_end() {
        use spdy::{Frame, HeaderDecoder, HeaderEncoder, Headers};
        let (client, server) = tokio::io::duplex(1 << 16);
        let (process, _resizes) = echo_process();
        let opts = StreamOptions {
            stdin: true,
            stdout: true,
            stderr: true,
            tty: false,
        };
        let task = tokio::spawn(async move {
            serve_spdy(
                spdy::Connection::serve(server),
                "v4.channel.k8s.io",
                opts,
                vec!["cat".into()],
                async move { Ok(process) },
            )
            .await
        });
        let (mut rd, mut wr) = tokio::io::split(client);
        let mut enc = HeaderEncoder::new();
        let mut wire = Vec::new();
        for (id, kind) in [(1, "error"), (3, "stdin"), (5, "stdout"), (7, "stderr")] {
            let frame = Frame::SynStream {
                stream_id: id,
                associated_to: 0,
                priority: 0,
                flags: 0,
                headers: Headers(vec![("streamtype".into(), kind.into())]),
            };
            spdy::encode_frame(&frame, &mut enc, &mut wire).unwrap();
        }
        for frame in [
            Frame::Data {
                stream_id: 3,
                flags: 0,
                data: Bytes::from_static(b"spdy"),
            },
            Frame::Data {
                stream_id: 3,
                flags: spdy::FLAG_FIN,
                data: Bytes::new(),
            },
        ] {
            spdy::encode_frame(&frame, &mut enc, &mut wire).unwrap();
        }
        wr.write_all(&wire).await.unwrap();
        let mut dec = HeaderDecoder::new();
        let mut by_stream: std::collections::HashMap<u32, Vec<u8>> = Default::default();
        let mut fins = Vec::new();
        while let Some(frame) = spdy::read_frame(&mut rd, &mut dec).await.unwrap() {
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
        assert_eq!(by_stream[&5], b"spdy");
        assert_eq!(by_stream[&7], b"SPDY");
        let status: serde_json::Value = serde_json::from_slice(&by_stream[&1]).unwrap();
        assert_eq!(status["details"]["causes"][0]["message"], "4");
        fins.sort();
        assert_eq!(fins, [1, 5, 7]);
        drop(wr);
        task.await.unwrap();
    }

    #[tokio::test]
    async fn resize_stream_is_split_into_json_messages() {
        let (tx, rx) = mpsc::channel(4);
        let mut sizes = resize_decoder(rx);
        tx.send(Bytes::from_static(b"{\"Width\":10,\"Height\":2}{\"Wid"))
            .await
            .unwrap();
        tx.send(Bytes::from_static(b"th\":11,\"Height\":3}\n"))
            .await
            .unwrap();
        assert_eq!(
            sizes.recv().await,
            Some(TerminalSize {
                width: 10,
                height: 2
            })
        );
        assert_eq!(
            sizes.recv().await,
            Some(TerminalSize {
                width: 11,
                height: 3
            })
        );
    }
}
