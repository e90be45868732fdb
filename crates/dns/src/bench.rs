//! The DNS benchmark: a server on 127.0.0.1 with synthetic records (no API server), and one
//! client socket firing queries for cluster names with a bounded number in flight.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hickory_proto::op::{Edns, Message, Query};
use hickory_proto::rr::{Name, RecordType};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use tokio::net::UdpSocket;
use tokio::sync::Semaphore;

use crate::forward::Forwarder;
use crate::records::Records;
use crate::server::{Listeners, Resolver};

/// Services in the synthetic zone; every tenth is headless with three endpoints.
pub const BENCH_SERVICES: usize = 1000;
const NAMESPACES: usize = 10;
/// A query unanswered this long counts as lost.
const LOST_AFTER: Duration = Duration::from_secs(1);

#[derive(Debug, Clone)]
pub struct BenchReport {
    pub services: usize,
    pub queries: usize,
    pub concurrency: usize,
    /// Replies with NOERROR and at least one answer.
    pub answered: usize,
    /// Replies that were not (wrong rcode or empty).
    pub errors: usize,
    /// Queries without a reply within a second.
    pub lost: usize,
    pub elapsed: Duration,
    pub qps: f64,
    pub p50: Duration,
    pub p99: Duration,
    pub max: Duration,
}

impl std::fmt::Display for BenchReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "dns: {} queries for {} services, {} in flight: {:.0} queries/s, p50 {:.3} ms, p99 {:.3} ms, max {:.3} ms ({} errors, {} lost)",
            self.queries,
            self.services,
            self.concurrency,
            self.qps,
            self.p50.as_secs_f64() * 1000.0,
            self.p99.as_secs_f64() * 1000.0,
            self.max.as_secs_f64() * 1000.0,
            self.errors,
            self.lost
        )
    }
}

#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("dns benchmark: {0}")]
    Io(#[from] std::io::Error),
    #[error("dns benchmark: build records: {0}")]
    Records(#[from] crate::records::RecordsError),
    #[error("dns benchmark: encode query: {0}")]
    Encode(#[from] hickory_proto::ProtoError),
}

/// The synthetic cluster: `svc-<i>.ns-<i % 10>`; ClusterIPs in 10.96.0.0/16, every tenth
/// Service headless with three ready endpoints in 10.42.0.0/16.
pub fn synthetic_objects(services: usize) -> (Vec<Service>, Vec<EndpointSlice>) {
    use k8s_openapi::api::core::v1::{ServicePort, ServiceSpec};
    use k8s_openapi::api::discovery::v1::{Endpoint, EndpointPort};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    let mut svcs = Vec::with_capacity(services);
    let mut slices = Vec::new();
    for i in 0..services {
        let name = format!("svc-{i}");
        let namespace = format!("ns-{}", i % NAMESPACES);
        let headless = i % 10 == 9;
        let cluster_ip = if headless {
            "None".to_string()
        } else {
            Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 96, 0, 10)) + i as u32).to_string()
        };
        svcs.push(Service {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                namespace: Some(namespace.clone()),
                ..Default::default()
            },
            spec: Some(ServiceSpec {
                cluster_ip: Some(cluster_ip.clone()),
                cluster_ips: Some(vec![cluster_ip]),
                ports: Some(vec![ServicePort {
                    name: Some("http".into()),
                    port: 80,
                    protocol: Some("TCP".into()),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            ..Default::default()
        });
        if headless {
            let endpoints = (0..3u32)
                .map(|j| Endpoint {
                    addresses: vec![
                        Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 42, 0, 0)) + (i as u32) * 4 + j)
                            .to_string(),
                    ],
                    hostname: Some(format!("{name}-{j}")),
                    ..Default::default()
                })
                .collect();
            slices.push(EndpointSlice {
                metadata: ObjectMeta {
                    name: Some(format!("{name}-abcde")),
                    namespace: Some(namespace),
                    labels: Some([("kubernetes.io/service-name".to_string(), name.clone())].into()),
                    ..Default::default()
                },
                address_type: "IPv4".into(),
                endpoints,
                ports: Some(vec![EndpointPort {
                    name: Some("http".into()),
                    port: Some(8080),
                    protocol: Some("TCP".into()),
                    ..Default::default()
                }]),
            });
        }
    }
    (svcs, slices)
}

/// Start a server on 127.0.0.1 with [`BENCH_SERVICES`] synthetic Services, send `queries`
/// A queries (cycling over the Service names, as a client's resolver would ask them) from one
/// UDP socket with at most `concurrency` in flight, and measure.
pub async fn bench(queries: usize, concurrency: usize) -> Result<BenchReport, BenchError> {
    let (services, slices) = synthetic_objects(BENCH_SERVICES);
    let records = Records::build("cluster.local", &services, &slices)?;
    let resolver = Arc::new(Resolver::new(
        records,
        Forwarder::new(Vec::new(), Duration::from_secs(1)),
        0,
    ));
    let listeners = Listeners::bind(&[SocketAddr::from((Ipv4Addr::LOCALHOST, 0))]).await?;
    let server_addr = listeners.local_addrs()[0];
    let server = tokio::spawn(listeners.serve(resolver));
    let result = fire(server_addr, queries, concurrency).await;
    server.abort();
    result
}

/// The client half of [`bench`]: `queries` A queries for the synthetic Service names sent to
/// `server` (any DNS server holding those names, e.g. a reference one), at most `concurrency`
/// in flight.
pub async fn fire(
    server: SocketAddr,
    queries: usize,
    concurrency: usize,
) -> Result<BenchReport, BenchError> {
    let concurrency = concurrency.clamp(1, 4096);
    // Queries are encoded up front; only the id changes per send.
    let mut packets = Vec::with_capacity(BENCH_SERVICES);
    for i in 0..BENCH_SERVICES {
        let name = Name::from_ascii(format!("svc-{i}.ns-{}.svc.cluster.local.", i % NAMESPACES))?;
        let mut m = Message::query();
        m.metadata.recursion_desired = true;
        m.queries.push(Query::query(name, RecordType::A));
        let mut edns = Edns::new();
        edns.set_max_payload(1232);
        m.edns = Some(edns);
        packets.push(m.to_vec()?);
    }

    let socket = Arc::new(UdpSocket::bind((IpAddr::V4(Ipv4Addr::LOCALHOST), 0)).await?);
    socket.connect(server).await?;
    let window = Arc::new(Semaphore::new(concurrency));
    // send time per id, as nanoseconds since `epoch` + 1 (0: nothing in flight)
    let slots: Arc<Vec<AtomicU64>> = Arc::new((0..65536).map(|_| AtomicU64::new(0)).collect());
    let epoch = Instant::now();

    let receiver = {
        let socket = socket.clone();
        let window = window.clone();
        let slots = slots.clone();
        tokio::spawn(async move {
            let mut latencies: Vec<Duration> = Vec::with_capacity(queries);
            let (mut errors, mut lost) = (0usize, 0usize);
            let mut buf = vec![0u8; 4096];
            while latencies.len() + errors + lost < queries {
                match tokio::time::timeout(LOST_AFTER, socket.recv(&mut buf)).await {
                    Ok(Ok(n)) if n >= 12 => {
                        let id = u16::from_be_bytes([buf[0], buf[1]]) as usize;
                        let sent = slots[id].swap(0, Ordering::AcqRel);
                        if sent == 0 {
                            continue; // a late reply to a query counted lost
                        }
                        let now = epoch.elapsed().as_nanos() as u64 + 1;
                        let rcode = buf[3] & 0x0f;
                        let answers = u16::from_be_bytes([buf[6], buf[7]]);
                        if rcode == 0 && answers > 0 {
                            latencies.push(Duration::from_nanos(now.saturating_sub(sent)));
                        } else {
                            errors += 1;
                        }
                        window.add_permits(1);
                    }
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => return Err(e),
                    Err(_) => {
                        for slot in slots.iter() {
                            if slot.swap(0, Ordering::AcqRel) != 0 {
                                lost += 1;
                                window.add_permits(1);
                            }
                        }
                    }
                }
            }
            Ok((latencies, errors, lost))
        })
    };

    let started = Instant::now();
    let mut packet = Vec::with_capacity(512);
    for i in 0..queries {
        window
            .acquire()
            .await
            .expect("the window is never closed")
            .forget();
        let id = (i % 65536) as u16;
        packet.clear();
        packet.extend_from_slice(&packets[i % packets.len()]);
        packet[..2].copy_from_slice(&id.to_be_bytes());
        slots[id as usize].store(epoch.elapsed().as_nanos() as u64 + 1, Ordering::Release);
        if let Err(e) = socket.send(&packet).await {
            receiver.abort();
            return Err(e.into());
        }
    }
    let (mut latencies, errors, lost) = receiver.await.map_err(std::io::Error::other)??;
    let elapsed = started.elapsed();
    latencies.sort();
    let pick = |q: f64| -> Duration {
        if latencies.is_empty() {
            return Duration::ZERO;
        }
        latencies[((latencies.len() as f64 * q) as usize).min(latencies.len() - 1)]
    };
    Ok(BenchReport {
        services: BENCH_SERVICES,
        queries,
        concurrency,
        answered: latencies.len(),
        errors,
        lost,
        elapsed,
        qps: latencies.len() as f64 / elapsed.as_secs_f64().max(1e-9),
        p50: pick(0.50),
        p99: pick(0.99),
        max: latencies.last().copied().unwrap_or_default(),
    })
}
