//! The serving loop: UDP and TCP listeners in front of a [`Resolver`].
//!
//! Why not hickory-server: its `Catalog`/`Authority` machinery looks a name up through
//! boxed async traits, record sets and a per-request `ResponseHandler` allocation, and serves a
//! zone that must be loaded as record sets. Our zone is computed from a snapshot on each query
//! (a hash lookup by `<service>.<namespace>`), and a local answer needs no `.await` at all: the
//! UDP loop decodes, answers and sends in one pass, and only forwarded queries get a task. That
//! keeps the hot path to two syscalls and a handful of small allocations.

use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use hickory_proto::op::{Message, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::{RData, RecordType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::Semaphore;

use crate::answer::{Lookup, resolve, response_to};
use crate::forward::{Cache, CacheKey, Forwarder};
use crate::metrics::metrics;
use crate::records::Records;

/// A client that keeps a TCP connection idle this long is dropped.
const TCP_IDLE_TIMEOUT: Duration = Duration::from_secs(10);
/// The largest UDP response we send, whatever the client offers.
const MAX_UDP_RESPONSE: usize = 4096;
/// Responses over UDP without EDNS fit in the classic 512 bytes.
const CLASSIC_UDP_SIZE: usize = 512;

/// Answers queries: the cluster zone from the current [`Records`] snapshot, anything else from
/// the cache or the upstream resolvers.
pub struct Resolver {
    records: RwLock<Arc<Records>>,
    forwarder: Forwarder,
    cache: Cache,
    /// Bounds the forwarded queries in flight (CoreDNS's `max_concurrent`); more get REFUSED.
    forwards: Arc<Semaphore>,
}

/// Where an answer came from, for the metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Kubernetes,
    Cache,
    Forward,
    Error,
}

impl Source {
    fn label(self) -> &'static str {
        match self {
            Source::Kubernetes => "kubernetes",
            Source::Cache => "cache",
            Source::Forward => "forward",
            Source::Error => "error",
        }
    }
}

/// The first step of a query: answered at once, or to be finished asynchronously.
enum Step {
    Reply(Vec<u8>),
    /// To forward; with the response size limit.
    Async(Box<Message>, usize),
    Ignore,
}

impl Resolver {
    pub fn new(records: Records, forwarder: Forwarder, cache_size: usize) -> Resolver {
        Resolver {
            records: RwLock::new(Arc::new(records)),
            forwarder,
            cache: Cache::new(cache_size),
            forwards: Arc::new(Semaphore::new(1000)),
        }
    }

    /// Limit the forwarded queries in flight.
    pub fn with_max_concurrent_forwards(mut self, n: usize) -> Resolver {
        self.forwards = Arc::new(Semaphore::new(n.max(1)));
        self
    }

    /// Serve a new snapshot from now on.
    pub fn set_records(&self, records: Records) {
        metrics().services.set(records.service_count() as i64);
        *self.records.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(records);
    }

    pub fn records(&self) -> Arc<Records> {
        self.records
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn cache(&self) -> &Cache {
        &self.cache
    }

    pub fn upstreams(&self) -> &[SocketAddr] {
        self.forwarder.upstreams()
    }

    /// Answer one request completely, forwarding when needed.
    pub async fn handle(&self, request: &Message) -> (Message, Source) {
        let lookup = resolve(&self.records(), request);
        match lookup {
            Lookup::Answer(m) => (self.chase_external(request, m).await, Source::Kubernetes),
            Lookup::Forward => self.forward(request).await,
        }
    }

    /// An ExternalName's CNAME to a name outside the zone, asked for A/AAAA: add the target's
    /// addresses from upstream, as CoreDNS does, so that stub resolvers get a complete answer.
    async fn chase_external(&self, request: &Message, mut m: Message) -> Message {
        let Some(query) = request.queries.first() else {
            return m;
        };
        if !matches!(query.query_type, RecordType::A | RecordType::AAAA) {
            return m;
        }
        let Some(RData::CNAME(target)) = m.answers.last().map(|r| &r.data) else {
            return m;
        };
        let mut sub = request.clone();
        sub.queries[0].name = target.0.clone();
        let (reply, _) = self.forward(&sub).await;
        if reply.metadata.response_code == ResponseCode::NoError {
            m.answers.extend(reply.answers);
        }
        m
    }

    async fn forward(&self, request: &Message) -> (Message, Source) {
        let key = CacheKey::of(request);
        let now = Instant::now();
        if let Some(hit) = key.as_ref().and_then(|k| self.cache.get(k, now)) {
            metrics().cache_hits.inc();
            return (reply_from(request, hit), Source::Cache);
        }
        metrics().cache_misses.inc();
        let Ok(_permit) = self.forwards.clone().try_acquire_owned() else {
            let mut m = response_to(request);
            m.metadata.response_code = ResponseCode::Refused;
            return (m, Source::Error);
        };
        match self.forwarder.forward(request).await {
            Ok(reply) => {
                if let Some(key) = key {
                    self.cache.insert(key, &reply, Instant::now());
                }
                (reply_from(request, reply), Source::Forward)
            }
            Err(e) => {
                tracing::debug!(error = %e, "no upstream answered");
                let mut m = response_to(request);
                m.metadata.response_code = ResponseCode::ServFail;
                (m, Source::Error)
            }
        }
    }

    /// Decode and, when possible, answer at once (the cluster zone never waits).
    fn step(&self, bytes: &[u8], transport: &'static str, started: Instant) -> Step {
        let request = match Message::from_vec(bytes) {
            Ok(m) if m.metadata.message_type == MessageType::Query => m,
            Ok(_) => return Step::Ignore,
            Err(_) => return format_error(bytes).map_or(Step::Ignore, Step::Reply),
        };
        let limit = if transport == "udp" {
            udp_limit(request.edns.as_ref().map(|e| e.max_payload()))
        } else {
            u16::MAX as usize
        };
        if !matches!(request.metadata.op_code, OpCode::Query) || request.queries.len() != 1 {
            let m = crate::answer::answer(&self.records(), &request);
            return Step::Reply(self.finish(
                &request,
                &m,
                Source::Kubernetes,
                transport,
                started,
                limit,
            ));
        }
        let records = self.records();
        match resolve(&records, &request) {
            Lookup::Answer(m) if !needs_chase(&records, &m) => Step::Reply(self.finish(
                &request,
                &m,
                Source::Kubernetes,
                transport,
                started,
                limit,
            )),
            _ => Step::Async(Box::new(request), limit),
        }
    }

    fn finish(
        &self,
        request: &Message,
        m: &Message,
        source: Source,
        transport: &'static str,
        started: Instant,
        limit: usize,
    ) -> Vec<u8> {
        let bytes = encode(m, limit);
        metrics().observe(
            transport,
            request.queries.first().map(|q| q.query_type),
            m.metadata.response_code,
            source.label(),
            started.elapsed(),
        );
        bytes
    }
}

/// Whether a local answer ends in a CNAME leaving the zone that [`Resolver::handle`] chases.
fn needs_chase(records: &Records, m: &Message) -> bool {
    let Some(q) = m.queries.first() else {
        return false;
    };
    matches!(q.query_type, RecordType::A | RecordType::AAAA)
        && matches!(m.answers.last().map(|r| &r.data), Some(RData::CNAME(t))
            if !is_in_zone(&t.0, records))
}

fn is_in_zone(name: &hickory_proto::rr::Name, records: &Records) -> bool {
    let mut zone = records.zone_name.clone();
    zone.set_fqdn(true);
    zone.zone_of(&name.to_lowercase())
}

/// An upstream (or cached) reply re-addressed to the client: its id and question as asked,
/// our OPT record if it sent one.
fn reply_from(request: &Message, mut reply: Message) -> Message {
    let ours = response_to(request);
    reply.metadata.id = request.metadata.id;
    reply.metadata.recursion_desired = request.metadata.recursion_desired;
    reply.metadata.recursion_available = true;
    reply.metadata.truncation = false;
    reply.queries = ours.queries;
    reply.edns = ours.edns;
    reply
}

/// FORMERR for a message that does not decode, if at least its header does.
fn format_error(bytes: &[u8]) -> Option<Vec<u8>> {
    if bytes.len() < 12 || bytes[2] & 0x80 != 0 {
        return None;
    }
    let id = u16::from_be_bytes([bytes[0], bytes[1]]);
    let m = Message::error_msg(id, OpCode::Query, ResponseCode::FormErr);
    m.to_vec().ok()
}

/// The largest UDP response a request accepts.
pub fn udp_limit(request_edns_payload: Option<u16>) -> usize {
    match request_edns_payload {
        Some(p) => (p as usize).clamp(CLASSIC_UDP_SIZE, MAX_UDP_RESPONSE),
        None => CLASSIC_UDP_SIZE,
    }
}

/// Encode `m` in at most `limit` bytes: first the additional section goes, then answers are
/// dropped and TC set, so that the client retries over TCP.
pub fn encode(m: &Message, limit: usize) -> Vec<u8> {
    match m.to_vec() {
        Ok(bytes) if bytes.len() <= limit => return bytes,
        Ok(_) => {}
        Err(e) => {
            tracing::warn!(error = %e, "cannot encode a dns response");
            let mut fail =
                Message::error_msg(m.metadata.id, m.metadata.op_code, ResponseCode::ServFail);
            fail.queries = m.queries.clone();
            return fail.to_vec().unwrap_or_default();
        }
    }
    let mut cut = m.clone();
    cut.additionals.clear();
    if let Ok(bytes) = cut.to_vec()
        && bytes.len() <= limit
    {
        return bytes;
    }
    cut.metadata.truncation = true;
    cut.authorities.clear();
    let answers = std::mem::take(&mut cut.answers);
    // the most answers that fit
    let (mut lo, mut hi) = (0usize, answers.len());
    let mut best = None;
    while lo <= hi {
        let mid = (lo + hi) / 2;
        cut.answers = answers[..mid].to_vec();
        match cut.to_vec() {
            Ok(bytes) if bytes.len() <= limit => {
                best = Some(bytes);
                lo = mid + 1;
            }
            _ => {
                if mid == 0 {
                    break;
                }
                hi = mid - 1;
            }
        }
    }
    best.unwrap_or_else(|| {
        let mut bare =
            Message::error_msg(m.metadata.id, m.metadata.op_code, m.metadata.response_code);
        bare.metadata.truncation = true;
        bare.to_vec().unwrap_or_default()
    })
}

/// Bound sockets, ready to serve.
pub struct Listeners {
    udp: Vec<Arc<UdpSocket>>,
    tcp: Vec<TcpListener>,
}

impl Listeners {
    /// Bind UDP and TCP on every address; port 0 gets the same free port for both.
    pub async fn bind(listen: &[SocketAddr]) -> io::Result<Listeners> {
        let mut udp = Vec::new();
        let mut tcp = Vec::new();
        for addr in listen {
            let mut attempts = 0;
            loop {
                let u = UdpSocket::bind(addr)
                    .await
                    .map_err(|e| context(e, "udp", addr))?;
                let bound = u.local_addr()?;
                match TcpListener::bind(bound).await {
                    Ok(t) => {
                        udp.push(Arc::new(u));
                        tcp.push(t);
                        break;
                    }
                    // the port the kernel picked for UDP is taken for TCP: pick again
                    Err(e) if addr.port() == 0 && attempts < 10 => {
                        attempts += 1;
                        tracing::debug!(error = %e, "retrying a free dns port");
                    }
                    Err(e) => return Err(context(e, "tcp", &bound)),
                }
            }
        }
        Ok(Listeners { udp, tcp })
    }

    /// The addresses bound (UDP and TCP share each).
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.udp
            .iter()
            .filter_map(|u| u.local_addr().ok())
            .collect()
    }

    /// Serve until a listener fails.
    pub async fn serve(self, resolver: Arc<Resolver>) -> io::Result<()> {
        let mut tasks = tokio::task::JoinSet::new();
        let workers = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
            .clamp(1, 4);
        for socket in &self.udp {
            tracing::info!(addr = ?socket.local_addr().ok(), "cluster dns listening");
            // several receivers on one socket: a slow send never stalls all queries
            for _ in 0..workers {
                tasks.spawn(serve_udp(socket.clone(), resolver.clone()));
            }
        }
        for listener in self.tcp {
            tasks.spawn(serve_tcp(listener, resolver.clone()));
        }
        match tasks.join_next().await {
            Some(Ok(r)) => r,
            Some(Err(e)) => Err(io::Error::other(e)),
            None => Ok(()),
        }
    }
}

fn context(e: io::Error, what: &str, addr: &SocketAddr) -> io::Error {
    io::Error::new(e.kind(), format!("bind dns {what} listener on {addr}: {e}"))
}

async fn serve_udp(socket: Arc<UdpSocket>, resolver: Arc<Resolver>) -> io::Result<()> {
    let mut buf = vec![0u8; 65535];
    loop {
        let (n, peer) = match socket.recv_from(&mut buf).await {
            Ok(r) => r,
            // ICMP errors of earlier sends surface here on some systems: not fatal
            Err(e) if is_transient(&e) => continue,
            Err(e) => return Err(e),
        };
        let started = Instant::now();
        match resolver.step(&buf[..n], "udp", started) {
            Step::Reply(bytes) => {
                if let Err(e) = socket.send_to(&bytes, peer).await {
                    tracing::debug!(error = %e, %peer, "sending a dns response failed");
                }
            }
            Step::Async(request, limit) => {
                let socket = socket.clone();
                let resolver = resolver.clone();
                tokio::spawn(async move {
                    let (m, source) = resolver.handle(&request).await;
                    let bytes = resolver.finish(&request, &m, source, "udp", started, limit);
                    let _ = socket.send_to(&bytes, peer).await;
                });
            }
            Step::Ignore => {}
        }
    }
}

fn is_transient(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::Interrupted
    )
}

async fn serve_tcp(listener: TcpListener, resolver: Arc<Resolver>) -> io::Result<()> {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                // out of file descriptors and the like: wait rather than spin or die
                tracing::warn!(error = %e, "accepting a dns tcp connection failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let resolver = resolver.clone();
        tokio::spawn(async move {
            if let Err(e) = serve_tcp_connection(stream, resolver).await {
                tracing::debug!(error = %e, %peer, "dns tcp connection ended");
            }
        });
    }
}

async fn serve_tcp_connection(mut stream: TcpStream, resolver: Arc<Resolver>) -> io::Result<()> {
    let _ = stream.set_nodelay(true);
    loop {
        let len = match tokio::time::timeout(TCP_IDLE_TIMEOUT, stream.read_u16()).await {
            Ok(Ok(len)) => len as usize,
            Ok(Err(e)) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(()),
            Ok(Err(e)) => return Err(e),
            Err(_) => return Ok(()),
        };
        let mut buf = vec![0u8; len];
        tokio::time::timeout(TCP_IDLE_TIMEOUT, stream.read_exact(&mut buf))
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "reading a dns query"))??;
        let started = Instant::now();
        let bytes = match resolver.step(&buf, "tcp", started) {
            Step::Reply(bytes) => bytes,
            Step::Async(request, limit) => {
                let (m, source) = resolver.handle(&request).await;
                resolver.finish(&request, &m, source, "tcp", started, limit)
            }
            Step::Ignore => continue,
        };
        let mut framed = Vec::with_capacity(bytes.len() + 2);
        framed.extend_from_slice(&(bytes.len() as u16).to_be_bytes());
        framed.extend_from_slice(&bytes);
        stream.write_all(&framed).await?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn udp_limits_follow_the_offered_payload() {
        assert_eq!(udp_limit(Some(1400)), 1400);
        assert_eq!(udp_limit(Some(100)), 512);
        assert_eq!(udp_limit(Some(65000)), 4096);
        assert_eq!(udp_limit(None), 512);
    }

    #[test]
    fn garbage_gets_formerr_when_the_header_is_readable() {
        let mut bytes = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
        bytes.extend_from_slice(&[0x3f, 0xff]); // a label running past the end
        let reply = Message::from_vec(&format_error(&bytes).unwrap()).unwrap();
        assert_eq!(reply.metadata.id, 0x1234);
        assert_eq!(reply.metadata.response_code, ResponseCode::FormErr);
        assert!(format_error(&bytes[..5]).is_none());
    }
}
