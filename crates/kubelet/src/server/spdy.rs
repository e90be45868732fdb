//! SPDY/3.1, as far as Kubernetes' streaming protocols use it: kubectl (through the API server)
//! opens one SPDY stream per channel (`streamType: stdin|stdout|...` for exec and attach,
//! `streamType: data|error` pairs for port-forward) on a connection upgraded from HTTP/1.1, or
//! tunnelled through a WebSocket.
//!
//! Written here rather than taken from a crate because no maintained Rust crate speaks SPDY/3.
//! We are always the server: the peer opens streams (odd IDs), we reply and write DATA frames.
//! Flow control (WINDOW_UPDATE) is not enforced, like Go's spdystream, which kubectl uses.

use std::collections::HashMap;
use std::sync::OnceLock;
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;

const VERSION: u16 = 3;
const TYPE_SYN_STREAM: u16 = 1;
const TYPE_SYN_REPLY: u16 = 2;
const TYPE_RST_STREAM: u16 = 3;
const TYPE_SETTINGS: u16 = 4;
const TYPE_PING: u16 = 6;
const TYPE_GOAWAY: u16 = 7;
const TYPE_HEADERS: u16 = 8;
const TYPE_WINDOW_UPDATE: u16 = 9;
pub const FLAG_FIN: u8 = 0x01;
pub const FLAG_UNIDIRECTIONAL: u8 = 0x02;
/// RST_STREAM status codes we send.
pub const RST_PROTOCOL_ERROR: u32 = 1;
pub const RST_REFUSED_STREAM: u32 = 3;
pub const RST_CANCEL: u32 = 5;
/// Largest DATA payload we write in one frame.
const MAX_DATA_FRAME: usize = 32 * 1024;
/// Control frames carry headers or a few integers; anything bigger is a broken peer.
const MAX_CONTROL_FRAME: usize = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub enum SpdyError {
    #[error("spdy connection: {0}")]
    Io(#[from] std::io::Error),
    #[error("spdy frame: {0}")]
    Protocol(String),
    #[error("spdy header block: {0}")]
    Compression(String),
}

pub type Result<T, E = SpdyError> = std::result::Result<T, E>;

/// A header block: lower-case names; several values of one name are joined by NUL on the wire.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Headers(pub Vec<(String, String)>);

impl Headers {
    /// The first value of `name` (case-insensitive), as Go's `http.Header.Get`.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.split('\0').next().unwrap_or(""))
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    SynStream {
        stream_id: u32,
        associated_to: u32,
        priority: u8,
        flags: u8,
        headers: Headers,
    },
    SynReply {
        stream_id: u32,
        flags: u8,
        headers: Headers,
    },
    RstStream {
        stream_id: u32,
        status: u32,
    },
    Settings {
        /// (flags, id, value)
        entries: Vec<(u8, u32, u32)>,
    },
    Ping {
        id: u32,
    },
    GoAway {
        last_good_stream_id: u32,
        status: u32,
    },
    Headers {
        stream_id: u32,
        flags: u8,
        headers: Headers,
    },
    WindowUpdate {
        stream_id: u32,
        delta: u32,
    },
    Data {
        stream_id: u32,
        flags: u8,
        data: Bytes,
    },
    /// A control frame type SPDY/3.1 defines but we have no use for (CREDENTIAL, ...).
    Unknown {
        frame_type: u16,
    },
}

/// The zlib preset dictionary of SPDY/3 header compression (draft 3, section 2.6.10.1):
/// length-prefixed header names and values, then common value fragments. 1423 bytes.
pub fn dictionary() -> &'static [u8] {
    static DICTIONARY: OnceLock<Vec<u8>> = OnceLock::new();
    DICTIONARY.get_or_init(|| {
        const WORDS: &[&str] = &[
            "options",
            "head",
            "post",
            "put",
            "delete",
            "trace",
            "accept",
            "accept-charset",
            "accept-encoding",
            "accept-language",
            "accept-ranges",
            "age",
            "allow",
            "authorization",
            "cache-control",
            "connection",
            "content-base",
            "content-encoding",
            "content-language",
            "content-length",
            "content-location",
            "content-md5",
            "content-range",
            "content-type",
            "date",
            "etag",
            "expect",
            "expires",
            "from",
            "host",
            "if-match",
            "if-modified-since",
            "if-none-match",
            "if-range",
            "if-unmodified-since",
            "last-modified",
            "location",
            "max-forwards",
            "pragma",
            "proxy-authenticate",
            "proxy-authorization",
            "range",
            "referer",
            "retry-after",
            "server",
            "te",
            "trailer",
            "transfer-encoding",
            "upgrade",
            "user-agent",
            "vary",
            "via",
            "warning",
            "www-authenticate",
            "method",
            "get",
            "status",
            "200 OK",
            "version",
            "HTTP/1.1",
            "url",
            "public",
            "set-cookie",
            "keep-alive",
            "origin",
        ];
        const TAIL: &[&str] = &[
            "100101201202205206300302303304305306307402405406407408409410411412413414415416417502504505",
            "203 Non-Authoritative Information",
            "204 No Content",
            "301 Moved Permanently",
            "400 Bad Request",
            "401 Unauthorized",
            "403 Forbidden",
            "404 Not Found",
            "500 Internal Server Error",
            "501 Not Implemented",
            "503 Service Unavailable",
            "Jan Feb Mar Apr May Jun Jul Aug Sept Oct Nov Dec",
            " 00:00:00",
            " Mon, Tue, Wed, Thu, Fri, Sat, Sun, GMT",
            "chunked,text/html,image/png,image/jpg,image/gif,application/xml,application/xhtml+xml,",
            "text/plain,text/javascript,publicprivatemax-age=gzip,deflate,sdch",
            "charset=utf-8charset=iso-8859-1,utf-,*,enq=0.",
        ];
        let mut dictionary = Vec::with_capacity(1423);
        for word in WORDS {
            dictionary.extend_from_slice(&(word.len() as u32).to_be_bytes());
            dictionary.extend_from_slice(word.as_bytes());
        }
        for part in TAIL {
            dictionary.extend_from_slice(part.as_bytes());
        }
        dictionary
    })
}

/// Compresses header blocks: one zlib stream per connection and direction, flushed after
/// every block.
pub struct HeaderEncoder {
    zlib: Compress,
}

impl Default for HeaderEncoder {
    fn default() -> Self {
        Self::new()
    }
}

impl HeaderEncoder {
    pub fn new() -> HeaderEncoder {
        let mut zlib = Compress::new(Compression::default(), true);
        zlib.set_dictionary(dictionary())
            .expect("a fresh zlib stream takes a preset dictionary");
        HeaderEncoder { zlib }
    }

    pub fn encode(&mut self, headers: &Headers) -> Result<Vec<u8>> {
        let mut raw = Vec::new();
        raw.put_u32(headers.0.len() as u32);
        for (name, value) in &headers.0 {
            raw.put_u32(name.len() as u32);
            raw.extend(name.bytes().map(|b| b.to_ascii_lowercase()));
            raw.put_u32(value.len() as u32);
            raw.extend_from_slice(value.as_bytes());
        }
        let start = self.zlib.total_in();
        let mut out = Vec::with_capacity(raw.len() + 64);
        loop {
            let consumed = (self.zlib.total_in() - start) as usize;
            out.reserve(raw.len() - consumed + 64);
            self.zlib
                .compress_vec(&raw[consumed..], &mut out, FlushCompress::Sync)
                .map_err(|e| SpdyError::Compression(e.to_string()))?;
            let consumed = (self.zlib.total_in() - start) as usize;
            // A sync flush is complete once all input is in and the output was not filled.
            if consumed == raw.len() && out.len() < out.capacity() {
                return Ok(out);
            }
        }
    }
}

/// Decompresses the peer's header blocks (one zlib stream for the connection).
pub struct HeaderDecoder {
    zlib: Decompress,
}

impl Default for HeaderDecoder {
    fn default() -> Self {
        Self::new()
    }
}

impl HeaderDecoder {
    pub fn new() -> HeaderDecoder {
        HeaderDecoder {
            zlib: Decompress::new(true),
        }
    }

    pub fn decode(&mut self, block: &[u8]) -> Result<Headers> {
        if block.is_empty() {
            return Ok(Headers::default());
        }
        let start = self.zlib.total_in();
        let mut out = Vec::with_capacity(block.len() * 4 + 64);
        loop {
            let consumed = (self.zlib.total_in() - start) as usize;
            let produced = out.len();
            out.reserve(4096);
            match self
                .zlib
                .decompress_vec(&block[consumed..], &mut out, FlushDecompress::Sync)
            {
                Ok(_) => {}
                Err(e) if e.needs_dictionary().is_some() => {
                    self.zlib
                        .set_dictionary(dictionary())
                        .map_err(|e| SpdyError::Compression(e.to_string()))?;
                    continue;
                }
                Err(e) => return Err(SpdyError::Compression(e.to_string())),
            }
            let now_consumed = (self.zlib.total_in() - start) as usize;
            if now_consumed == block.len() && out.len() < out.capacity() {
                break;
            }
            if now_consumed == consumed && out.len() == produced {
                return Err(SpdyError::Compression(
                    "truncated compressed header block".into(),
                ));
            }
        }
        parse_name_values(&out)
    }
}

fn parse_name_values(mut raw: &[u8]) -> Result<Headers> {
    fn take<'a>(raw: &mut &'a [u8]) -> Result<&'a [u8]> {
        if raw.len() < 4 {
            return Err(SpdyError::Protocol("header block too short".into()));
        }
        let len = raw.get_u32() as usize;
        if raw.len() < len {
            return Err(SpdyError::Protocol("header block too short".into()));
        }
        let (value, rest) = raw.split_at(len);
        *raw = rest;
        Ok(value)
    }
    if raw.len() < 4 {
        return Err(SpdyError::Protocol("header block too short".into()));
    }
    let count = raw.get_u32() as usize;
    let mut headers = Vec::with_capacity(count.min(64));
    for _ in 0..count {
        let name = String::from_utf8_lossy(take(&mut raw)?).to_ascii_lowercase();
        let value = String::from_utf8_lossy(take(&mut raw)?).into_owned();
        headers.push((name, value));
    }
    Ok(Headers(headers))
}

fn control_header(out: &mut Vec<u8>, frame_type: u16, flags: u8, len: usize) {
    out.put_u16(0x8000 | VERSION);
    out.put_u16(frame_type);
    out.put_u8(flags);
    out.put_uint(len as u64, 3);
}

/// Append the wire form of `frame` to `out`.
pub fn encode_frame(frame: &Frame, headers: &mut HeaderEncoder, out: &mut Vec<u8>) -> Result<()> {
    match frame {
        Frame::SynStream {
            stream_id,
            associated_to,
            priority,
            flags,
            headers: h,
        } => {
            let block = headers.encode(h)?;
            control_header(out, TYPE_SYN_STREAM, *flags, 10 + block.len());
            out.put_u32(stream_id & 0x7fff_ffff);
            out.put_u32(associated_to & 0x7fff_ffff);
            out.put_u8((priority & 0x7) << 5);
            out.put_u8(0);
            out.extend_from_slice(&block);
        }
        Frame::SynReply {
            stream_id,
            flags,
            headers: h,
        } => {
            let block = headers.encode(h)?;
            control_header(out, TYPE_SYN_REPLY, *flags, 4 + block.len());
            out.put_u32(stream_id & 0x7fff_ffff);
            out.extend_from_slice(&block);
        }
        Frame::Headers {
            stream_id,
            flags,
            headers: h,
        } => {
            let block = headers.encode(h)?;
            control_header(out, TYPE_HEADERS, *flags, 4 + block.len());
            out.put_u32(stream_id & 0x7fff_ffff);
            out.extend_from_slice(&block);
        }
        Frame::RstStream { stream_id, status } => {
            control_header(out, TYPE_RST_STREAM, 0, 8);
            out.put_u32(stream_id & 0x7fff_ffff);
            out.put_u32(*status);
        }
        Frame::Settings { entries } => {
            control_header(out, TYPE_SETTINGS, 0, 4 + 8 * entries.len());
            out.put_u32(entries.len() as u32);
            for (flags, id, value) in entries {
                out.put_u8(*flags);
                out.put_uint(u64::from(*id), 3);
                out.put_u32(*value);
            }
        }
        Frame::Ping { id } => {
            control_header(out, TYPE_PING, 0, 4);
            out.put_u32(*id);
        }
        Frame::GoAway {
            last_good_stream_id,
            status,
        } => {
            control_header(out, TYPE_GOAWAY, 0, 8);
            out.put_u32(last_good_stream_id & 0x7fff_ffff);
            out.put_u32(*status);
        }
        Frame::WindowUpdate { stream_id, delta } => {
            control_header(out, TYPE_WINDOW_UPDATE, 0, 8);
            out.put_u32(stream_id & 0x7fff_ffff);
            out.put_u32(delta & 0x7fff_ffff);
        }
        Frame::Data {
            stream_id,
            flags,
            data,
        } => {
            if data.len() >= 1 << 24 {
                return Err(SpdyError::Protocol(format!(
                    "data frame of {} bytes is too large",
                    data.len()
                )));
            }
            out.put_u32(stream_id & 0x7fff_ffff);
            out.put_u8(*flags);
            out.put_uint(data.len() as u64, 3);
            out.extend_from_slice(data);
        }
        Frame::Unknown { frame_type } => {
            return Err(SpdyError::Protocol(format!(
                "cannot encode unknown frame type {frame_type}"
            )));
        }
    }
    Ok(())
}

/// Decode one frame from its 8-byte header and payload.
pub fn decode_frame(
    head: [u8; 8],
    mut payload: Bytes,
    headers: &mut HeaderDecoder,
) -> Result<Frame> {
    let flags = head[4];
    if head[0] & 0x80 == 0 {
        let stream_id = u32::from_be_bytes([head[0], head[1], head[2], head[3]]) & 0x7fff_ffff;
        return Ok(Frame::Data {
            stream_id,
            flags,
            data: payload,
        });
    }
    let version = u16::from_be_bytes([head[0], head[1]]) & 0x7fff;
    if version != VERSION {
        return Err(SpdyError::Protocol(format!(
            "unsupported SPDY version {version}"
        )));
    }
    let frame_type = u16::from_be_bytes([head[2], head[3]]);
    let need = |payload: &Bytes, n: usize| {
        if payload.len() < n {
            Err(SpdyError::Protocol(format!(
                "control frame type {frame_type} is {} bytes, shorter than {n}",
                payload.len()
            )))
        } else {
            Ok(())
        }
    };
    Ok(match frame_type {
        TYPE_SYN_STREAM => {
            need(&payload, 10)?;
            let stream_id = payload.get_u32() & 0x7fff_ffff;
            let associated_to = payload.get_u32() & 0x7fff_ffff;
            let priority = payload.get_u8() >> 5;
            payload.advance(1);
            Frame::SynStream {
                stream_id,
                associated_to,
                priority,
                flags,
                headers: headers.decode(&payload)?,
            }
        }
        TYPE_SYN_REPLY | TYPE_HEADERS => {
            need(&payload, 4)?;
            let stream_id = payload.get_u32() & 0x7fff_ffff;
            let h = headers.decode(&payload)?;
            if frame_type == TYPE_SYN_REPLY {
                Frame::SynReply {
                    stream_id,
                    flags,
                    headers: h,
                }
            } else {
                Frame::Headers {
                    stream_id,
                    flags,
                    headers: h,
                }
            }
        }
        TYPE_RST_STREAM => {
            need(&payload, 8)?;
            Frame::RstStream {
                stream_id: payload.get_u32() & 0x7fff_ffff,
                status: payload.get_u32(),
            }
        }
        TYPE_SETTINGS => {
            need(&payload, 4)?;
            let count = payload.get_u32() as usize;
            need(&payload, count.saturating_mul(8))?;
            let entries = (0..count)
                .map(|_| {
                    let flags = payload.get_u8();
                    let id = payload.get_uint(3) as u32;
                    (flags, id, payload.get_u32())
                })
                .collect();
            Frame::Settings { entries }
        }
        TYPE_PING => {
            need(&payload, 4)?;
            Frame::Ping {
                id: payload.get_u32(),
            }
        }
        TYPE_GOAWAY => {
            need(&payload, 4)?;
            let last_good_stream_id = payload.get_u32() & 0x7fff_ffff;
            // SPDY/2 peers send no status.
            let status = if payload.len() >= 4 {
                payload.get_u32()
            } else {
                0
            };
            Frame::GoAway {
                last_good_stream_id,
                status,
            }
        }
        TYPE_WINDOW_UPDATE => {
            need(&payload, 8)?;
            Frame::WindowUpdate {
                stream_id: payload.get_u32() & 0x7fff_ffff,
                delta: payload.get_u32() & 0x7fff_ffff,
            }
        }
        other => Frame::Unknown { frame_type: other },
    })
}

/// Read one frame; `None` at a clean end of the connection (between frames).
pub async fn read_frame<R: AsyncRead + Unpin>(
    reader: &mut R,
    headers: &mut HeaderDecoder,
) -> Result<Option<Frame>> {
    let mut head = [0u8; 8];
    let mut filled = 0;
    while filled < head.len() {
        let n = reader.read(&mut head[filled..]).await?;
        if n == 0 {
            if filled == 0 {
                return Ok(None);
            }
            return Err(SpdyError::Protocol(
                "connection ended inside a frame header".into(),
            ));
        }
        filled += n;
    }
    let len = u32::from_be_bytes([0, head[5], head[6], head[7]]) as usize;
    if head[0] & 0x80 != 0 && len > MAX_CONTROL_FRAME {
        return Err(SpdyError::Protocol(format!(
            "control frame of {len} bytes is too large"
        )));
    }
    let mut payload = BytesMut::zeroed(len);
    reader.read_exact(&mut payload).await?;
    decode_frame(head, payload.freeze(), headers).map(Some)
}

/// A stream the peer opened: its headers and the data it sends (the channel ends at the
/// peer's FIN or RST_STREAM, or when the connection ends).
#[derive(Debug)]
pub struct Stream {
    pub id: u32,
    pub headers: Headers,
    pub data: mpsc::Receiver<Bytes>,
}

enum Command {
    Frame(Frame),
    /// Write GOAWAY, flush, and close our side of the connection.
    Shutdown {
        last_good_stream_id: u32,
    },
}

/// Writes frames on a connection; cheap to clone. Writes after the connection ended fail
/// with `Closed` and can be ignored.
#[derive(Clone)]
pub struct Writer {
    commands: mpsc::Sender<Command>,
}

#[derive(Debug, thiserror::Error)]
#[error("the spdy connection is closed")]
pub struct Closed;

impl Writer {
    async fn send(&self, frame: Frame) -> Result<(), Closed> {
        self.commands
            .send(Command::Frame(frame))
            .await
            .map_err(|_| Closed)
    }

    /// Write `data` on a stream (split into frames of at most 32 KiB).
    pub async fn data(&self, stream_id: u32, mut data: Bytes) -> Result<(), Closed> {
        while !data.is_empty() {
            let chunk = data.split_to(data.len().min(MAX_DATA_FRAME));
            self.send(Frame::Data {
                stream_id,
                flags: 0,
                data: chunk,
            })
            .await?;
        }
        Ok(())
    }

    /// Half-close a stream: we send nothing more on it.
    pub async fn fin(&self, stream_id: u32) -> Result<(), Closed> {
        self.send(Frame::Data {
            stream_id,
            flags: FLAG_FIN,
            data: Bytes::new(),
        })
        .await
    }

    pub async fn reset(&self, stream_id: u32, status: u32) -> Result<(), Closed> {
        self.send(Frame::RstStream { stream_id, status }).await
    }
}

/// A server-side SPDY connection: new streams arrive on `streams`; `writer` writes frames.
pub struct Connection {
    pub streams: mpsc::Receiver<Stream>,
    pub writer: Writer,
    reader: tokio::task::JoinHandle<u32>,
    done: tokio::sync::oneshot::Receiver<()>,
}

impl Connection {
    /// Serve SPDY on `io` (whose HTTP upgrade is done). Every stream the peer opens is
    /// accepted (SYN_REPLY) and handed out on `streams`; PINGs are answered.
    pub fn serve<IO>(io: IO) -> Connection
    where
        IO: AsyncRead + AsyncWrite + Send + 'static,
    {
        let (mut read_half, mut write_half) = tokio::io::split(io);
        let (commands, mut command_rx) = mpsc::channel::<Command>(64);
        let (done_tx, done) = tokio::sync::oneshot::channel();
        tokio::spawn(async move {
            let mut encoder = HeaderEncoder::new();
            let mut buf = Vec::with_capacity(MAX_DATA_FRAME + 64);
            'outer: while let Some(command) = command_rx.recv().await {
                let mut next = Some(command);
                // Batch what is queued into one write.
                while let Some(command) = next.take() {
                    match command {
                        Command::Frame(frame) => {
                            if let Err(e) = encode_frame(&frame, &mut encoder, &mut buf) {
                                tracing::warn!(error = %e, "encoding a spdy frame");
                            }
                        }
                        Command::Shutdown {
                            last_good_stream_id,
                        } => {
                            let frame = Frame::GoAway {
                                last_good_stream_id,
                                status: 0,
                            };
                            let _ = encode_frame(&frame, &mut encoder, &mut buf);
                            let _ = write_half.write_all(&buf).await;
                            let _ = write_half.flush().await;
                            break 'outer;
                        }
                    }
                    if buf.len() < 256 * 1024 {
                        next = command_rx.try_recv().ok();
                    }
                }
                if write_half.write_all(&buf).await.is_err() || write_half.flush().await.is_err() {
                    break;
                }
                buf.clear();
            }
            let _ = write_half.shutdown().await;
            let _ = done_tx.send(());
        });
        let (stream_tx, streams) = mpsc::channel::<Stream>(16);
        let writer = Writer { commands };
        let reader_writer = writer.clone();
        let reader = tokio::spawn(async move {
            let writer = reader_writer;
            let mut decoder = HeaderDecoder::new();
            let mut open: HashMap<u32, mpsc::Sender<Bytes>> = HashMap::new();
            let mut last_stream_id = 0;
            loop {
                let frame = match read_frame(&mut read_half, &mut decoder).await {
                    Ok(Some(frame)) => frame,
                    Ok(None) => break,
                    Err(e) => {
                        tracing::debug!(error = %e, "reading a spdy frame");
                        break;
                    }
                };
                match frame {
                    Frame::SynStream {
                        stream_id,
                        flags,
                        headers,
                        ..
                    } => {
                        if stream_id % 2 == 0 || stream_id <= last_stream_id {
                            let _ = writer.reset(stream_id, RST_PROTOCOL_ERROR).await;
                            continue;
                        }
                        last_stream_id = stream_id;
                        let reply = Frame::SynReply {
                            stream_id,
                            flags: 0,
                            headers: Headers::default(),
                        };
                        if writer.send(reply).await.is_err() {
                            break;
                        }
                        let (data_tx, data) = mpsc::channel(64);
                        if flags & FLAG_FIN == 0 {
                            open.insert(stream_id, data_tx);
                        }
                        let stream = Stream {
                            id: stream_id,
                            headers,
                            data,
                        };
                        if stream_tx.send(stream).await.is_err() {
                            // Nobody takes new streams any more.
                            let _ = writer.reset(stream_id, RST_REFUSED_STREAM).await;
                        }
                    }
                    Frame::Data {
                        stream_id,
                        flags,
                        data,
                    } => {
                        // Dropped if the handler stopped reading this stream.
                        if let Some(tx) = open.get(&stream_id)
                            && !data.is_empty()
                        {
                            let _ = tx.send(data).await;
                        }
                        if flags & FLAG_FIN != 0 {
                            open.remove(&stream_id);
                        }
                    }
                    Frame::Headers {
                        stream_id, flags, ..
                    } => {
                        if flags & FLAG_FIN != 0 {
                            open.remove(&stream_id);
                        }
                    }
                    Frame::RstStream { stream_id, .. } => {
                        open.remove(&stream_id);
                    }
                    Frame::Ping { id } => {
                        // Only answer the peer's pings (odd IDs from a client); we send none.
                        if id % 2 == 1 && writer.send(Frame::Ping { id }).await.is_err() {
                            break;
                        }
                    }
                    Frame::GoAway { .. } => {
                        // No new streams will come; existing ones go on until the peer closes.
                    }
                    Frame::SynReply { .. }
                    | Frame::Settings { .. }
                    | Frame::WindowUpdate { .. }
                    | Frame::Unknown { .. } => {}
                }
            }
            last_stream_id
        });
        Connection {
            streams,
            writer,
            reader,
            done,
        }
    }

    /// Say GOAWAY, close our side, and give the peer a moment to close its side.
    pub async fn close(self, grace: Duration) {
        let Connection {
            streams,
            writer,
            mut reader,
            done,
        } = self;
        drop(streams);
        let _ = writer
            .commands
            .send(Command::Shutdown {
                last_good_stream_id: 0,
            })
            .await;
        drop(writer);
        let _ = tokio::time::timeout(grace, done).await;
        if tokio::time::timeout(grace, &mut reader).await.is_err() {
            reader.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> Headers {
        Headers(
            pairs
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect(),
        )
    }

    #[test]
    fn dictionary_is_the_spdy3_one() {
        use sha2::Digest;
        let dict = dictionary();
        assert_eq!(dict.len(), 1423);
        assert!(dict.starts_with(b"\0\0\0\x07options\0\0\0\x04head"));
        assert!(dict.ends_with(b"enq=0."));
        let digest = sha2::Sha256::digest(dict);
        let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(
            hex,
            "51d27341373f923f3cd88e1eb7162aeaa3723d7585ff2399201dc06498407f02"
        );
    }

    #[test]
    fn header_blocks_round_trip_through_one_zlib_stream_each_way() {
        let mut encoder = HeaderEncoder::new();
        let mut decoder = HeaderDecoder::new();
        let first = headers(&[
            ("streamtype", "error"),
            ("port", "8080"),
            ("requestid", "0"),
        ]);
        let block = encoder.encode(&first).unwrap();
        // zlib header with FDICT set: the peer needs the SPDY dictionary.
        assert_eq!(block[0] & 0x0f, 8);
        assert_ne!(block[1] & 0x20, 0);
        assert_eq!(decoder.decode(&block).unwrap(), first);
        // Later blocks continue the same stream (and compress better thanks to history).
        let second = headers(&[("streamtype", "data"), ("port", "8080"), ("requestid", "0")]);
        let block2 = encoder.encode(&second).unwrap();
        assert!(block2.len() < block.len());
        assert_eq!(decoder.decode(&block2).unwrap(), second);
        assert_eq!(
            decoder
                .decode(&encoder.encode(&Headers::default()).unwrap())
                .unwrap(),
            Headers::default()
        );
    }

    #[test]
    fn header_names_are_lower_cased_and_lookup_ignores_case() {
        let mut encoder = HeaderEncoder::new();
        let mut decoder = HeaderDecoder::new();
        let block = encoder
            .encode(&headers(&[("StreamType", "stdout"), ("X-Multi", "a\0b")]))
            .unwrap();
        let decoded = decoder.decode(&block).unwrap();
        assert_eq!(decoded.0[0].0, "streamtype");
        assert_eq!(decoded.get("STREAMTYPE"), Some("stdout"));
        assert_eq!(decoded.get("x-multi"), Some("a"));
        assert_eq!(decoded.get("missing"), None);
    }

    #[test]
    fn corrupt_header_block_is_an_error() {
        let mut decoder = HeaderDecoder::new();
        assert!(
            decoder
                .decode(&[0x78, 0xbb, 0xff, 0xff, 0xff, 0xff, 1, 2, 3])
                .is_err()
        );
    }

    fn round_trip(frames: &[Frame]) -> Vec<Frame> {
        let mut encoder = HeaderEncoder::new();
        let mut wire = Vec::new();
        for frame in frames {
            encode_frame(frame, &mut encoder, &mut wire).unwrap();
        }
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(async {
            let mut decoder = HeaderDecoder::new();
            let mut reader = &wire[..];
            let mut out = Vec::new();
            while let Some(frame) = read_frame(&mut reader, &mut decoder).await.unwrap() {
                out.push(frame);
            }
            out
        })
    }

    #[test]
    fn every_frame_type_round_trips() {
        let frames = vec![
            Frame::SynStream {
                stream_id: 1,
                associated_to: 0,
                priority: 3,
                flags: FLAG_FIN,
                headers: headers(&[("streamtype", "error")]),
            },
            Frame::SynReply {
                stream_id: 1,
                flags: 0,
                headers: Headers::default(),
            },
            Frame::Data {
                stream_id: 3,
                flags: 0,
                data: Bytes::from_static(b"hello"),
            },
            Frame::Data {
                stream_id: 3,
                flags: FLAG_FIN,
                data: Bytes::new(),
            },
            Frame::RstStream {
                stream_id: 5,
                status: RST_CANCEL,
            },
            Frame::Settings {
                entries: vec![(0, 7, 65536), (1, 4, 100)],
            },
            Frame::Ping { id: 7 },
            Frame::GoAway {
                last_good_stream_id: 5,
                status: 0,
            },
            Frame::Headers {
                stream_id: 3,
                flags: FLAG_FIN,
                headers: headers(&[("a", "b")]),
            },
            Frame::WindowUpdate {
                stream_id: 3,
                delta: 4096,
            },
        ];
        assert_eq!(round_trip(&frames), frames);
    }

    #[test]
    fn frame_layout_matches_the_spec() {
        let mut encoder = HeaderEncoder::new();
        let mut wire = Vec::new();
        encode_frame(&Frame::Ping { id: 0x01020304 }, &mut encoder, &mut wire).unwrap();
        assert_eq!(
            wire,
            [0x80, 0x03, 0x00, 0x06, 0x00, 0x00, 0x00, 0x04, 1, 2, 3, 4]
        );
        wire.clear();
        let data = Frame::Data {
            stream_id: 3,
            flags: FLAG_FIN,
            data: Bytes::from_static(b"ab"),
        };
        encode_frame(&data, &mut encoder, &mut wire).unwrap();
        assert_eq!(wire, [0, 0, 0, 3, 1, 0, 0, 2, b'a', b'b']);
    }

    #[test]
    fn unknown_control_frames_are_skipped_and_wrong_versions_rejected() {
        let mut decoder = HeaderDecoder::new();
        let frame = decode_frame([0x80, 3, 0, 10, 0, 0, 0, 0], Bytes::new(), &mut decoder).unwrap();
        assert_eq!(frame, Frame::Unknown { frame_type: 10 });
        assert!(
            decode_frame(
                [0x80, 2, 0, 6, 0, 0, 0, 4],
                Bytes::from_static(&[0, 0, 0, 1]),
                &mut decoder
            )
            .is_err()
        );
        assert!(
            decode_frame(
                [0x80, 3, 0, 3, 0, 0, 0, 2],
                Bytes::from_static(&[0, 1]),
                &mut decoder
            )
            .is_err()
        );
    }

    /// A minimal client on the other end of a duplex pipe: opens streams, sends data, and
    /// checks the server's replies, pings and FINs.
    #[tokio::test]
    async fn connection_accepts_streams_answers_pings_and_carries_data() {
        let (client, server) = tokio::io::duplex(1 << 16);
        let mut conn = Connection::serve(server);
        let (mut client_read, mut client_write) = tokio::io::split(client);
        let mut encoder = HeaderEncoder::new();
        let mut decoder = HeaderDecoder::new();
        let mut wire = Vec::new();
        for frame in [
            Frame::SynStream {
                stream_id: 1,
                associated_to: 0,
                priority: 0,
                flags: 0,
                headers: headers(&[("streamtype", "stdin")]),
            },
            Frame::Data {
                stream_id: 1,
                flags: 0,
                data: Bytes::from_static(b"input"),
            },
            Frame::Data {
                stream_id: 1,
                flags: FLAG_FIN,
                data: Bytes::new(),
            },
            Frame::Ping { id: 1 },
            Frame::SynStream {
                stream_id: 3,
                associated_to: 0,
                priority: 0,
                flags: 0,
                headers: headers(&[("streamtype", "stdout")]),
            },
        ] {
            encode_frame(&frame, &mut encoder, &mut wire).unwrap();
        }
        client_write.write_all(&wire).await.unwrap();

        let mut stdin = conn.streams.recv().await.unwrap();
        assert_eq!(stdin.id, 1);
        assert_eq!(stdin.headers.get("streamType"), Some("stdin"));
        assert_eq!(
            stdin.data.recv().await.unwrap(),
            Bytes::from_static(b"input")
        );
        assert!(
            stdin.data.recv().await.is_none(),
            "FIN ends the stream's data"
        );
        let stdout = conn.streams.recv().await.unwrap();
        assert_eq!(stdout.id, 3);
        conn.writer
            .data(3, Bytes::from(vec![b'x'; MAX_DATA_FRAME + 10]))
            .await
            .unwrap();
        conn.writer.fin(3).await.unwrap();
        conn.close(Duration::from_secs(2)).await;

        let mut seen = Vec::new();
        while let Some(frame) = read_frame(&mut client_read, &mut decoder).await.unwrap() {
            seen.push(frame);
        }
        let replies: Vec<u32> = seen
            .iter()
            .filter_map(|f| match f {
                Frame::SynReply { stream_id, .. } => Some(*stream_id),
                _ => None,
            })
            .collect();
        assert_eq!(replies, [1, 3]);
        assert!(seen.contains(&Frame::Ping { id: 1 }));
        let data: Vec<(usize, u8)> = seen
            .iter()
            .filter_map(|f| match f {
                Frame::Data {
                    stream_id: 3,
                    flags,
                    data,
                } => Some((data.len(), *flags)),
                _ => None,
            })
            .collect();
        assert_eq!(data, [(MAX_DATA_FRAME, 0), (10, 0), (0, FLAG_FIN)]);
        assert!(matches!(seen.last(), Some(Frame::GoAway { .. })));
    }
}
