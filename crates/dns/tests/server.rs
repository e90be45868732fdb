//! The server on 127.0.0.1 with synthetic records and a fake upstream resolver (a UDP and TCP
//! socket of the test's own): cluster names, forwarding, caching, truncation. Loopback only.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use dns::forward::Forwarder;
use dns::records::Records;
use dns::server::{Listeners, Resolver};
use hickory_proto::op::{Edns, Message, Query, ResponseCode};
use hickory_proto::rr::rdata::A;
use hickory_proto::rr::{Name, RData, Record, RecordType};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::task::JoinHandle;

/// Aborts the server and upstream tasks when a test ends, pass or fail.
struct Tasks(Vec<JoinHandle<()>>);

impl Drop for Tasks {
    fn drop(&mut self) {
        for t in &self.0 {
            t.abort();
        }
    }
}

/// What the fake upstream answers: `example.com` A 192.0.2.1 (TTL 60), `big.example` 60
/// addresses (truncated over UDP, whole over TCP), `silent.example` nothing at all.
fn upstream_reply(query: &Message, tcp: bool) -> Option<Message> {
    let q = query.queries.first()?;
    let name = q.name.to_lowercase().to_ascii();
    let mut m = Message::response(query.metadata.id, query.metadata.op_code);
    m.metadata.recursion_available = true;
    m.queries = query.queries.clone();
    match name.as_str() {
        "example.com." => m.answers.push(Record::from_rdata(
            q.name.clone(),
            60,
            RData::A(A(Ipv4Addr::new(192, 0, 2, 1))),
        )),
        "big.example." if tcp => {
            for i in 0..60 {
                m.answers.push(Record::from_rdata(
                    q.name.clone(),
                    60,
                    RData::A(A(Ipv4Addr::new(192, 0, 2, i))),
                ));
            }
        }
        "big.example." => m.metadata.truncation = true,
        "silent.example." => return None,
        _ => m.metadata.response_code = ResponseCode::NXDomain,
    }
    Some(m)
}

struct Upstream {
    addr: SocketAddr,
    udp_queries: Arc<AtomicUsize>,
    tcp_queries: Arc<AtomicUsize>,
}

async fn fake_upstream(tasks: &mut Tasks) -> Upstream {
    let udp = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
    let addr = udp.local_addr().unwrap();
    let tcp = TcpListener::bind(addr).await.unwrap();
    let udp_queries = Arc::new(AtomicUsize::new(0));
    let tcp_queries = Arc::new(AtomicUsize::new(0));
    let count = udp_queries.clone();
    tasks.0.push(tokio::spawn(async move {
        let mut buf = vec![0u8; 4096];
        loop {
            let (n, peer) = udp.recv_from(&mut buf).await.unwrap();
            count.fetch_add(1, Ordering::SeqCst);
            let q = Message::from_vec(&buf[..n]).unwrap();
            if let Some(reply) = upstream_reply(&q, false) {
                udp.send_to(&reply.to_vec().unwrap(), peer).await.unwrap();
            }
        }
    }));
    let count = tcp_queries.clone();
    tasks.0.push(tokio::spawn(async move {
        loop {
            let (mut s, _) = tcp.accept().await.unwrap();
            let count = count.clone();
            tokio::spawn(async move {
                let len = s.read_u16().await.unwrap() as usize;
                let mut buf = vec![0u8; len];
                s.read_exact(&mut buf).await.unwrap();
                count.fetch_add(1, Ordering::SeqCst);
                let q = Message::from_vec(&buf).unwrap();
                let bytes = upstream_reply(&q, true).unwrap().to_vec().unwrap();
                s.write_all(&(bytes.len() as u16).to_be_bytes())
                    .await
                    .unwrap();
                s.write_all(&bytes).await.unwrap();
            });
        }
    }));
    Upstream {
        addr,
        udp_queries,
        tcp_queries,
    }
}

fn objects() -> (Vec<Service>, Vec<EndpointSlice>) {
    let services: Vec<Service> = vec![
        serde_json::from_value(json!({"metadata": {"name": "web", "namespace": "default"},
            "spec": {"clusterIP": "10.96.0.10", "ports": [{"name": "http", "port": 80}]}}))
        .unwrap(),
        serde_json::from_value(json!({"metadata": {"name": "many", "namespace": "default"},
            "spec": {"clusterIP": "None"}}))
        .unwrap(),
        serde_json::from_value(json!({"metadata": {"name": "ext", "namespace": "default"},
            "spec": {"type": "ExternalName", "externalName": "example.com"}}))
        .unwrap(),
    ];
    let endpoints: Vec<_> = (0..100)
        .map(|i| json!({"addresses": [format!("10.244.1.{i}")]}))
        .collect();
    let slices = vec![
        serde_json::from_value(json!({
            "metadata": {"name": "many-1", "namespace": "default",
                "labels": {"kubernetes.io/service-name": "many"}},
            "addressType": "IPv4",
            "endpoints": endpoints,
        }))
        .unwrap(),
    ];
    (services, slices)
}

struct Setup {
    server: SocketAddr,
    upstream: Upstream,
    resolver: Arc<Resolver>,
    _tasks: Tasks,
}

async fn setup() -> Setup {
    let mut tasks = Tasks(Vec::new());
    let upstream = fake_upstream(&mut tasks).await;
    let (services, slices) = objects();
    let records = Records::build("cluster.local", &services, &slices).unwrap();
    let resolver = Arc::new(Resolver::new(
        records,
        Forwarder::new(vec![upstream.addr], Duration::from_millis(300)),
        100,
    ));
    let listeners = Listeners::bind(&[SocketAddr::from((Ipv4Addr::LOCALHOST, 0))])
        .await
        .unwrap();
    let server = listeners.local_addrs()[0];
    let r = resolver.clone();
    tasks.0.push(tokio::spawn(async move {
        listeners.serve(r).await.unwrap();
    }));
    Setup {
        server,
        upstream,
        resolver,
        _tasks: tasks,
    }
}

fn query(name: &str, qtype: RecordType, edns_payload: Option<u16>) -> Message {
    let mut m = Message::query();
    m.metadata.recursion_desired = true;
    m.queries
        .push(Query::query(Name::from_ascii(name).unwrap(), qtype));
    if let Some(p) = edns_payload {
        let mut e = Edns::new();
        e.set_max_payload(p);
        m.edns = Some(e);
    }
    m
}

/// One query over UDP; returns the reply and its size on the wire.
async fn udp(server: SocketAddr, q: &Message) -> (Message, usize) {
    let s = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
    s.connect(server).await.unwrap();
    s.send(&q.to_vec().unwrap()).await.unwrap();
    let mut buf = vec![0u8; 65535];
    let n = tokio::time::timeout(Duration::from_secs(5), s.recv(&mut buf))
        .await
        .expect("a udp reply within 5 s")
        .unwrap();
    let m = Message::from_vec(&buf[..n]).unwrap();
    assert_eq!(m.metadata.id, q.metadata.id);
    (m, n)
}

async fn tcp(server: SocketAddr, q: &Message) -> Message {
    let mut s = TcpStream::connect(server).await.unwrap();
    let bytes = q.to_vec().unwrap();
    s.write_all(&(bytes.len() as u16).to_be_bytes())
        .await
        .unwrap();
    s.write_all(&bytes).await.unwrap();
    let len = tokio::time::timeout(Duration::from_secs(5), s.read_u16())
        .await
        .expect("a tcp reply within 5 s")
        .unwrap() as usize;
    let mut buf = vec![0u8; len];
    s.read_exact(&mut buf).await.unwrap();
    let m = Message::from_vec(&buf).unwrap();
    assert_eq!(m.metadata.id, q.metadata.id);
    m
}

fn addresses(m: &Message) -> Vec<IpAddr> {
    m.answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::A(a) => Some(IpAddr::V4(a.0)),
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn cluster_names_over_udp_and_tcp() {
    let s = setup().await;
    let q = query("web.default.svc.cluster.local.", RecordType::A, None);
    let (m, _) = udp(s.server, &q).await;
    assert_eq!(addresses(&m), [IpAddr::from([10, 96, 0, 10])]);
    assert!(m.metadata.authoritative);
    let m = tcp(s.server, &q).await;
    assert_eq!(addresses(&m), [IpAddr::from([10, 96, 0, 10])]);
    let (m, _) = udp(
        s.server,
        &query("nope.default.svc.cluster.local.", RecordType::A, None),
    )
    .await;
    assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
    assert_eq!(
        s.upstream.udp_queries.load(Ordering::SeqCst),
        0,
        "never forwarded"
    );
}

#[tokio::test]
async fn other_names_are_forwarded_and_cached() {
    let s = setup().await;
    let q = query("Example.COM.", RecordType::A, None);
    let (m, _) = udp(s.server, &q).await;
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    assert_eq!(addresses(&m), [IpAddr::from([192, 0, 2, 1])]);
    assert_eq!(
        m.queries[0].name.to_ascii(),
        "Example.COM.",
        "question as asked"
    );
    assert!(m.answers[0].ttl <= 60);
    assert_eq!(s.upstream.udp_queries.load(Ordering::SeqCst), 1);

    // again, over UDP and TCP: from the cache
    let (m, _) = udp(s.server, &query("example.com.", RecordType::A, None)).await;
    assert_eq!(addresses(&m), [IpAddr::from([192, 0, 2, 1])]);
    let m = tcp(s.server, &query("example.com.", RecordType::A, None)).await;
    assert_eq!(addresses(&m), [IpAddr::from([192, 0, 2, 1])]);
    assert_eq!(
        s.upstream.udp_queries.load(Ordering::SeqCst),
        1,
        "served from the cache"
    );
    assert_eq!(s.resolver.cache().len(), 1);

    // negative answers without SOA are not cached
    let (m, _) = udp(s.server, &query("missing.example.", RecordType::A, None)).await;
    assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
    let (_, _) = udp(s.server, &query("missing.example.", RecordType::A, None)).await;
    assert_eq!(s.upstream.udp_queries.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn truncated_upstream_answers_are_retried_over_tcp() {
    let s = setup().await;
    let m = tcp(s.server, &query("big.example.", RecordType::A, None)).await;
    assert_eq!(addresses(&m).len(), 60);
    assert!(!m.metadata.truncation);
    assert_eq!(s.upstream.tcp_queries.load(Ordering::SeqCst), 1);

    // the same answer does not fit a 512-byte UDP reply: TC, and the client retries on TCP
    let (m, n) = udp(s.server, &query("big.example.", RecordType::A, None)).await;
    assert!(m.metadata.truncation);
    assert!(n <= 512);
    // with a large EDNS buffer it fits
    let (m, n) = udp(s.server, &query("big.example.", RecordType::A, Some(4096))).await;
    assert!(!m.metadata.truncation);
    assert_eq!(addresses(&m).len(), 60);
    assert!(n > 512);
    assert_eq!(s.upstream.tcp_queries.load(Ordering::SeqCst), 1, "cached");
}

#[tokio::test]
async fn big_cluster_answers_are_truncated_over_udp() {
    let s = setup().await;
    let name = "many.default.svc.cluster.local.";
    let (m, n) = udp(s.server, &query(name, RecordType::A, None)).await;
    assert!(m.metadata.truncation, "100 addresses do not fit 512 bytes");
    assert!(n <= 512);
    assert!(!addresses(&m).is_empty() && addresses(&m).len() < 100);

    let (m, n) = udp(s.server, &query(name, RecordType::A, Some(1232))).await;
    assert!(n <= 1232);
    assert!(m.metadata.truncation);

    let (m, _) = udp(s.server, &query(name, RecordType::A, Some(4096))).await;
    assert!(!m.metadata.truncation);
    assert_eq!(addresses(&m).len(), 100);

    let m = tcp(s.server, &query(name, RecordType::A, None)).await;
    assert!(!m.metadata.truncation);
    assert_eq!(addresses(&m).len(), 100);
}

#[tokio::test]
async fn silent_upstream_gives_servfail() {
    let s = setup().await;
    let (m, _) = udp(s.server, &query("silent.example.", RecordType::A, None)).await;
    assert_eq!(m.metadata.response_code, ResponseCode::ServFail);
    assert!(s.upstream.udp_queries.load(Ordering::SeqCst) >= 1);
}

#[tokio::test]
async fn external_names_are_chased_upstream() {
    let s = setup().await;
    let (m, _) = udp(
        s.server,
        &query("ext.default.svc.cluster.local.", RecordType::A, None),
    )
    .await;
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    assert!(matches!(&m.answers[0].data, RData::CNAME(c) if c.0.to_ascii() == "example.com."));
    assert_eq!(addresses(&m), [IpAddr::from([192, 0, 2, 1])]);
}

#[tokio::test]
async fn snapshots_are_swapped_in() {
    let s = setup().await;
    let q = query("new.default.svc.cluster.local.", RecordType::A, None);
    let (m, _) = udp(s.server, &q).await;
    assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
    let service: Service = serde_json::from_value(json!({
        "metadata": {"name": "new", "namespace": "default"},
        "spec": {"clusterIP": "10.96.0.99"}}))
    .unwrap();
    s.resolver
        .set_records(Records::build("cluster.local", [&service], []).unwrap());
    let (m, _) = udp(s.server, &q).await;
    assert_eq!(addresses(&m), [IpAddr::from([10, 96, 0, 99])]);
    assert!(dns::metrics_text().contains("coredns_dns_requests_total"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn benchmark_answers_every_query() {
    let report = dns::bench(3000, 32).await.unwrap();
    println!("{report}");
    assert_eq!(report.answered, 3000, "{report}");
    assert_eq!(report.errors + report.lost, 0);
    assert!(report.p50 <= report.p99 && report.p99 <= report.max);
}
