//! Names outside the cluster zone: forwarded to the upstream resolvers (UDP, retried over TCP
//! when truncated), with a small cache that respects the records' TTLs.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use hickory_proto::op::{Edns, Message, ResponseCode};
use hickory_proto::rr::{RData, Record};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

use crate::answer::MAX_UDP_PAYLOAD;
use crate::metrics::metrics;

/// Longest a positive answer is cached, and a negative one (CoreDNS's cache defaults).
const MAX_SUCCESS_TTL: u32 = 3600;
const MAX_DENIAL_TTL: u32 = 1800;

#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    #[error("no upstream resolvers configured")]
    NoUpstream,
    #[error("upstream {upstream} timed out")]
    Timeout { upstream: SocketAddr },
    #[error("upstream {upstream}: {source}")]
    Io {
        upstream: SocketAddr,
        source: std::io::Error,
    },
    #[error("upstream {upstream} sent an invalid response: {detail}")]
    Invalid {
        upstream: SocketAddr,
        detail: String,
    },
    #[error("encode query for upstream: {0}")]
    Encode(#[from] hickory_proto::ProtoError),
}

/// The nameservers of a resolv.conf file, on port 53.
pub fn nameservers_from_resolv_conf(path: &Path) -> Vec<SocketAddr> {
    match std::fs::read_to_string(path) {
        Ok(text) => parse_resolv_conf(&text),
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "cannot read resolv.conf");
            Vec::new()
        }
    }
}

pub(crate) fn parse_resolv_conf(text: &str) -> Vec<SocketAddr> {
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.split(['#', ';']).next().unwrap_or("");
        let mut words = line.split_whitespace();
        if words.next() != Some("nameserver") {
            continue;
        }
        let Some(addr) = words.next() else { continue };
        // a scoped IPv6 address (fe80::1%eth0) keeps only its address here
        let addr = addr.split('%').next().unwrap_or(addr);
        if let Ok(ip) = addr.parse::<IpAddr>() {
            let sa = SocketAddr::new(ip, 53);
            if !out.contains(&sa) {
                out.push(sa);
            }
        }
    }
    out
}

/// Sends queries to the upstream resolvers, one after the other until one answers.
pub struct Forwarder {
    upstreams: Vec<SocketAddr>,
    timeout: Duration,
    /// Where the next query starts, spreading load over the upstreams.
    next: AtomicUsize,
}

impl Forwarder {
    pub fn new(upstreams: Vec<SocketAddr>, timeout: Duration) -> Forwarder {
        Forwarder {
            upstreams,
            timeout,
            next: AtomicUsize::new(0),
        }
    }

    pub fn upstreams(&self) -> &[SocketAddr] {
        &self.upstreams
    }

    /// Ask the upstreams for `request`'s question; the reply keeps the upstream's id.
    pub async fn forward(&self, request: &Message) -> Result<Message, ForwardError> {
        if self.upstreams.is_empty() {
            return Err(ForwardError::NoUpstream);
        }
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let mut last = ForwardError::NoUpstream;
        for i in 0..self.upstreams.len() {
            let upstream = self.upstreams[(start + i) % self.upstreams.len()];
            match self.exchange(upstream, request).await {
                Ok(m) => {
                    metrics()
                        .forward_requests
                        .get_or_create(&[("outcome", "ok")])
                        .inc();
                    return Ok(m);
                }
                Err(e) => {
                    let outcome = if matches!(e, ForwardError::Timeout { .. }) {
                        "timeout"
                    } else {
                        "error"
                    };
                    metrics()
                        .forward_requests
                        .get_or_create(&[("outcome", outcome)])
                        .inc();
                    tracing::debug!(error = %e, "forwarding a dns query failed");
                    last = e;
                }
            }
        }
        Err(last)
    }

    async fn exchange(
        &self,
        upstream: SocketAddr,
        request: &Message,
    ) -> Result<Message, ForwardError> {
        let id: u16 = rand::random();
        let mut query = Message::query();
        query.metadata.id = id;
        query.metadata.recursion_desired = true;
        query.metadata.checking_disabled = request.metadata.checking_disabled;
        query.queries = request.queries.clone();
        let mut edns = Edns::new();
        edns.set_max_payload(MAX_UDP_PAYLOAD);
        if let Some(theirs) = &request.edns {
            edns.set_dnssec_ok(theirs.flags().dnssec_ok);
        }
        query.edns = Some(edns);
        let bytes = query.to_vec()?;
        let io = |source: std::io::Error| ForwardError::Io { upstream, source };

        let reply = tokio::time::timeout(self.timeout, async {
            let bind: SocketAddr = match upstream {
                SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
                SocketAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
            };
            let socket = UdpSocket::bind(bind).await.map_err(io)?;
            socket.connect(upstream).await.map_err(io)?;
            socket.send(&bytes).await.map_err(io)?;
            let mut buf = vec![0u8; 65535];
            loop {
                let n = socket.recv(&mut buf).await.map_err(io)?;
                // a stray or spoofed datagram is skipped, not taken as the answer
                match Message::from_vec(&buf[..n]) {
                    Ok(m) if is_reply_to(&m, &query) => return Ok::<_, ForwardError>(m),
                    _ => continue,
                }
            }
        })
        .await
        .map_err(|_| ForwardError::Timeout { upstream })??;
        if !reply.metadata.truncation {
            return Ok(reply);
        }
        tokio::time::timeout(self.timeout, async {
            let mut stream = TcpStream::connect(upstream).await.map_err(io)?;
            let mut framed = Vec::with_capacity(bytes.len() + 2);
            framed.extend_from_slice(&(bytes.len() as u16).to_be_bytes());
            framed.extend_from_slice(&bytes);
            stream.write_all(&framed).await.map_err(io)?;
            let len = stream.read_u16().await.map_err(io)? as usize;
            let mut buf = vec![0u8; len];
            stream.read_exact(&mut buf).await.map_err(io)?;
            let m = Message::from_vec(&buf).map_err(|e| ForwardError::Invalid {
                upstream,
                detail: e.to_string(),
            })?;
            if !is_reply_to(&m, &query) {
                return Err(ForwardError::Invalid {
                    upstream,
                    detail: "id or question does not match the query".into(),
                });
            }
            Ok(m)
        })
        .await
        .map_err(|_| ForwardError::Timeout { upstream })?
    }
}

fn is_reply_to(reply: &Message, query: &Message) -> bool {
    reply.metadata.id == query.metadata.id
        && reply.queries.len() == query.queries.len()
        && reply.queries.iter().zip(&query.queries).all(|(a, b)| {
            a.query_type == b.query_type
                && a.query_class == b.query_class
                && a.name.eq_ignore_root(&b.name)
        })
}

/// What a cached response answers: the question, and whether DNSSEC records were asked for.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CacheKey {
    name: String,
    qtype: u16,
    qclass: u16,
    dnssec_ok: bool,
}

impl CacheKey {
    pub fn of(request: &Message) -> Option<CacheKey> {
        let [q] = request.queries.as_slice() else {
            return None;
        };
        Some(CacheKey {
            name: q.name.to_lowercase().to_ascii(),
            qtype: u16::from(q.query_type),
            qclass: u16::from(q.query_class),
            dnssec_ok: request.edns.as_ref().is_some_and(|e| e.flags().dnssec_ok),
        })
    }
}

struct CacheEntry {
    message: Message,
    stored: Instant,
    expires: Instant,
}

/// Upstream responses by question, kept for the smallest TTL they carry (RFC 2308's SOA
/// minimum for negative answers); full means evicting expired entries, then any.
pub struct Cache {
    capacity: usize,
    entries: Mutex<HashMap<CacheKey, CacheEntry>>,
}

impl Cache {
    pub fn new(capacity: usize) -> Cache {
        Cache {
            capacity,
            entries: Mutex::new(HashMap::new()),
        }
    }

    pub fn len(&self) -> usize {
        self.entries.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A cached response with its TTLs lowered by the time it spent here.
    pub fn get(&self, key: &CacheKey, now: Instant) -> Option<Message> {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        let entry = entries.get(key)?;
        if entry.expires <= now {
            entries.remove(key);
            metrics().cache_entries.set(entries.len() as i64);
            return None;
        }
        let age = now.duration_since(entry.stored).as_secs() as u32;
        let mut m = entry.message.clone();
        drop(entries);
        for r in m
            .answers
            .iter_mut()
            .chain(m.authorities.iter_mut())
            .chain(m.additionals.iter_mut())
        {
            r.ttl = r.ttl.saturating_sub(age);
        }
        Some(m)
    }

    pub fn insert(&self, key: CacheKey, message: &Message, now: Instant) {
        if self.capacity == 0 || message.metadata.truncation {
            return;
        }
        let Some(ttl) = cache_ttl(message) else {
            return;
        };
        if ttl == 0 {
            return;
        }
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if entries.len() >= self.capacity && !entries.contains_key(&key) {
            entries.retain(|_, e| e.expires > now);
            if entries.len() >= self.capacity {
                // drop about a tenth, whichever come first: cheap and good enough for a
                // cache in front of a recursive resolver that caches too
                let evict: Vec<CacheKey> = entries
                    .keys()
                    .take((self.capacity / 10).max(1))
                    .cloned()
                    .collect();
                for k in evict {
                    entries.remove(&k);
                }
            }
        }
        let mut stored = message.clone();
        stored.metadata.id = 0;
        entries.insert(
            key,
            CacheEntry {
                message: stored,
                stored: now,
                expires: now + Duration::from_secs(u64::from(ttl)),
            },
        );
        metrics().cache_entries.set(entries.len() as i64);
    }
}

/// How long a response may be cached: `None` for what must not be (errors, referrals).
fn cache_ttl(m: &Message) -> Option<u32> {
    let min_ttl = |records: &[Record]| records.iter().map(|r| r.ttl).min();
    match m.metadata.response_code {
        ResponseCode::NoError if !m.answers.is_empty() => {
            let ttl = min_ttl(&m.answers)?.min(min_ttl(&m.authorities).unwrap_or(u32::MAX));
            Some(ttl.min(MAX_SUCCESS_TTL))
        }
        ResponseCode::NoError | ResponseCode::NXDomain => {
            let soa = m.authorities.iter().find_map(|r| match &r.data {
                RData::SOA(soa) => Some(r.ttl.min(soa.minimum)),
                _ => None,
            })?;
            Some(soa.min(MAX_DENIAL_TTL))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::op::Query;
    use hickory_proto::rr::rdata::{A, SOA};
    use hickory_proto::rr::{Name, RecordType};

    #[test]
    fn resolv_conf_nameservers() {
        let text = "# comment\nsearch example.com\nnameserver 10.0.0.1\nnameserver  fe80::1%eth0 \n\
                    nameserver 10.0.0.1\noptions ndots:5\nnameserver bogus\n";
        assert_eq!(
            parse_resolv_conf(text),
            vec![
                "10.0.0.1:53".parse::<SocketAddr>().unwrap(),
                "[fe80::1]:53".parse().unwrap()
            ]
        );
    }

    fn reply(name: &str, ttl: u32) -> Message {
        let mut m = Message::response(7, hickory_proto::op::OpCode::Query);
        let name = Name::from_ascii(name).unwrap();
        m.queries.push(Query::query(name.clone(), RecordType::A));
        m.answers.push(Record::from_rdata(
            name,
            ttl,
            RData::A(A("192.0.2.1".parse().unwrap())),
        ));
        m
    }

    #[test]
    fn cache_respects_ttl_and_ages_records() {
        let cache = Cache::new(10);
        let m = reply("example.com.", 30);
        let key = CacheKey::of(&m).unwrap();
        let t0 = Instant::now();
        cache.insert(key.clone(), &m, t0);
        let hit = cache.get(&key, t0 + Duration::from_secs(10)).unwrap();
        assert_eq!(hit.answers[0].ttl, 20);
        assert_eq!(hit.metadata.id, 0);
        assert!(cache.get(&key, t0 + Duration::from_secs(31)).is_none());
        assert!(cache.is_empty(), "expired entries are dropped on lookup");
    }

    #[test]
    fn cache_keys_ignore_case_and_skip_errors() {
        let cache = Cache::new(10);
        let m = reply("Example.COM.", 30);
        cache.insert(CacheKey::of(&m).unwrap(), &m, Instant::now());
        let lower = reply("example.com.", 30);
        assert!(
            cache
                .get(&CacheKey::of(&lower).unwrap(), Instant::now())
                .is_some()
        );

        let mut fail = reply("fail.example.", 30);
        fail.metadata.response_code = ResponseCode::ServFail;
        cache.insert(CacheKey::of(&fail).unwrap(), &fail, Instant::now());
        assert!(
            cache
                .get(&CacheKey::of(&fail).unwrap(), Instant::now())
                .is_none()
        );
    }

    #[test]
    fn negative_answers_live_for_the_soa_minimum() {
        let mut m = reply("nx.example.", 30);
        m.answers.clear();
        m.metadata.response_code = ResponseCode::NXDomain;
        let zone = Name::from_ascii("example.").unwrap();
        m.authorities.push(Record::from_rdata(
            zone.clone(),
            900,
            RData::SOA(SOA::new(zone.clone(), zone, 1, 1, 1, 1, 60)),
        ));
        assert_eq!(cache_ttl(&m), Some(60));
        m.authorities.clear();
        assert_eq!(cache_ttl(&m), None, "no SOA, no negative caching");
    }

    #[test]
    fn full_cache_evicts() {
        let cache = Cache::new(3);
        let now = Instant::now();
        for i in 0..5 {
            let m = reply(&format!("n{i}.example."), 30);
            cache.insert(CacheKey::of(&m).unwrap(), &m, now);
            assert!(cache.len() <= 3);
        }
        let last = reply("n4.example.", 30);
        assert!(cache.get(&CacheKey::of(&last).unwrap(), now).is_some());
    }
}
