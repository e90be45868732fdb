//! Cluster DNS, in process, as CoreDNS's kubernetes plugin: answers for the cluster domain
//! from Services and EndpointSlices, forwards everything else to the host's resolvers with a
//! small cache.
//!
//! [`records`] compiles the API objects into an immutable snapshot, [`answer`] answers a
//! request from a snapshot (pure), [`forward`] asks the upstream resolvers and caches,
//! [`server`] runs the UDP and TCP listeners.
//!
//! Architecture Invariant: the hot path never waits for the API: watchers build a new
//! snapshot and swap it in; queries read whatever snapshot is current.

pub mod answer;
pub mod bench;
pub mod forward;
pub mod metrics;
pub mod records;
pub mod server;

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::Api;
use kube::runtime::{WatchStreamExt, watcher};
use tokio::sync::{Notify, watch};

pub use answer::{Lookup, answer, resolve};
pub use bench::{BenchReport, bench};
pub use forward::{Cache, Forwarder, nameservers_from_resolv_conf};
pub use metrics::{Metrics, metrics, metrics_text};
pub use records::Records;
pub use server::{Listeners, Resolver};

/// Settings of the cluster DNS server.
#[derive(Debug, Clone)]
pub struct DnsConfig {
    /// Addresses to serve on, UDP and TCP each.
    pub listen: Vec<SocketAddr>,
    /// The cluster domain (`cluster.local`).
    pub cluster_domain: String,
    /// Resolvers for names outside the cluster domain. Default: the nameservers of
    /// `/etc/resolv.conf`; at start those on loopback (a local stub such as 127.0.0.53) are
    /// kept only if they answer.
    pub upstream: Vec<SocketAddr>,
    /// Most responses of upstream resolvers kept.
    pub cache_size: usize,
    /// TTL of the cluster zone's records.
    pub ttl: u32,
    /// How long to wait for one upstream before trying the next.
    pub upstream_timeout: Duration,
    /// Forwarded queries in flight; more get REFUSED.
    pub max_concurrent_forwards: usize,
    /// Changes arriving within this window make one new snapshot.
    pub rebuild_interval: Duration,
}

pub const RESOLV_CONF: &str = "/etc/resolv.conf";

impl Default for DnsConfig {
    fn default() -> Self {
        DnsConfig {
            listen: vec![SocketAddr::from((Ipv4Addr::UNSPECIFIED, 53))],
            cluster_domain: "cluster.local".into(),
            upstream: nameservers_from_resolv_conf(Path::new(RESOLV_CONF)),
            // CoreDNS's cache default capacity
            cache_size: 9984,
            ttl: records::DEFAULT_TTL,
            upstream_timeout: Duration::from_secs(2),
            max_concurrent_forwards: 1000,
            rebuild_interval: Duration::from_millis(20),
        }
    }
}

/// Run the DNS server until a listener or a watch fails: watch Services and EndpointSlices,
/// answer on every `listen` address.
pub async fn run(client: kube::Client, config: DnsConfig) -> anyhow::Result<()> {
    let upstream =
        usable_upstreams(&config.upstream, &config.listen, config.upstream_timeout).await;
    if upstream.is_empty() {
        tracing::warn!(
            "cluster dns has no upstream resolver: names outside the cluster get SERVFAIL"
        );
    }
    let empty = Records::new(&config.cluster_domain)?.with_ttl(config.ttl);
    let resolver = Arc::new(
        Resolver::new(
            empty,
            Forwarder::new(upstream.clone(), config.upstream_timeout),
            config.cache_size,
        )
        .with_max_concurrent_forwards(config.max_concurrent_forwards),
    );

    let objects = Arc::new(Mutex::new(Objects::default()));
    let notify = Arc::new(Notify::new());
    let (services_synced, mut services_ready) = watch::channel(false);
    let (slices_synced, mut slices_ready) = watch::channel(false);
    let mut tasks = tokio::task::JoinSet::new();
    tasks.spawn(watch_objects(
        Api::<Service>::all(client.clone()),
        objects.clone(),
        notify.clone(),
        services_synced,
        |o: &mut Objects| &mut o.services,
    ));
    tasks.spawn(watch_objects(
        Api::<EndpointSlice>::all(client),
        objects.clone(),
        notify.clone(),
        slices_synced,
        |o: &mut Objects| &mut o.slices,
    ));
    // Like CoreDNS, wait a little for the caches before serving, so that the first queries
    // do not get (and negatively cache) NXDOMAIN for names that exist.
    let synced = tokio::time::timeout(Duration::from_secs(5), async {
        let _ = services_ready.wait_for(|s| *s).await;
        let _ = slices_ready.wait_for(|s| *s).await;
    })
    .await;
    if synced.is_err() {
        tracing::warn!("cluster dns starts before its Service and EndpointSlice caches synced");
    }
    rebuild(&resolver, &objects, &config)?;

    let listeners = Listeners::bind(&config.listen).await?;
    tracing::info!(
        listen = ?listeners.local_addrs(),
        domain = %config.cluster_domain,
        ?upstream,
        "cluster dns serving"
    );
    let mut serving = Box::pin(listeners.serve(resolver.clone()));
    loop {
        tokio::select! {
            r = &mut serving => {
                r?;
                anyhow::bail!("cluster dns listeners stopped");
            }
            Some(res) = tasks.join_next() => {
                anyhow::bail!("cluster dns watch ended: {res:?}");
            }
            _ = notify.notified() => {
                // gather what else arrives in the window into the same snapshot
                tokio::time::sleep(config.rebuild_interval).await;
                rebuild(&resolver, &objects, &config)?;
            }
        }
    }
}

/// The API objects the zone is compiled from, by namespace/name.
#[derive(Default)]
struct Objects {
    services: HashMap<String, Service>,
    slices: HashMap<String, EndpointSlice>,
}

fn rebuild(
    resolver: &Resolver,
    objects: &Mutex<Objects>,
    config: &DnsConfig,
) -> anyhow::Result<()> {
    let started = std::time::Instant::now();
    let serial = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as u32)
        .unwrap_or(1);
    let records = {
        let o = objects.lock().unwrap_or_else(|e| e.into_inner());
        Records::build(
            &config.cluster_domain,
            o.services.values(),
            o.slices.values(),
        )?
    }
    .with_ttl(config.ttl)
    .with_serial(serial);
    let services = records.service_count();
    resolver.set_records(records);
    metrics().record_rebuilds.inc();
    tracing::debug!(services, took = ?started.elapsed(), "cluster dns zone rebuilt");
    Ok(())
}

fn key_of(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> String {
    format!(
        "{}/{}",
        meta.namespace.as_deref().unwrap_or(""),
        meta.name.as_deref().unwrap_or("")
    )
}

async fn watch_objects<K>(
    api: Api<K>,
    objects: Arc<Mutex<Objects>>,
    notify: Arc<Notify>,
    synced: watch::Sender<bool>,
    map: fn(&mut Objects) -> &mut HashMap<String, K>,
) where
    K: kube::Resource
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + Send
        + Sync
        + 'static,
{
    let stream = watcher::watcher(api, watcher::Config::default()).default_backoff();
    futures::pin_mut!(stream);
    let mut listing: HashMap<String, K> = HashMap::new();
    while let Some(event) = stream.next().await {
        let mut o = objects.lock().unwrap_or_else(|e| e.into_inner());
        match event {
            Ok(watcher::Event::Init) => {
                listing.clear();
                continue;
            }
            Ok(watcher::Event::InitApply(obj)) => {
                listing.insert(key_of(obj.meta()), obj);
                continue;
            }
            Ok(watcher::Event::InitDone) => {
                *map(&mut o) = std::mem::take(&mut listing);
                let _ = synced.send(true);
            }
            Ok(watcher::Event::Apply(obj)) => {
                map(&mut o).insert(key_of(obj.meta()), obj);
            }
            Ok(watcher::Event::Delete(obj)) => {
                map(&mut o).remove(&key_of(obj.meta()));
            }
            Err(e) => {
                tracing::debug!(error = %e, "cluster dns watch");
                continue;
            }
        }
        drop(o);
        notify.notify_one();
    }
}

/// The upstreams to use: never one of our own listen addresses (a forwarding loop), and a
/// loopback resolver (a local stub such as systemd-resolved's 127.0.0.53) only if it answers.
/// When the stub is dropped, systemd-resolved's list of real upstreams is used if present.
pub async fn usable_upstreams(
    upstream: &[SocketAddr],
    listen: &[SocketAddr],
    timeout: Duration,
) -> Vec<SocketAddr> {
    let mut out = Vec::new();
    let mut dropped_stub = false;
    for addr in upstream {
        if listen.contains(addr) {
            tracing::warn!(%addr, "skipping upstream resolver: it is this dns server");
            continue;
        }
        if addr.ip().is_loopback() && !answers(*addr, timeout.min(Duration::from_secs(1))).await {
            tracing::warn!(%addr, "skipping loopback upstream resolver: it does not answer");
            dropped_stub = true;
            continue;
        }
        out.push(*addr);
    }
    if out.is_empty() && dropped_stub {
        let resolved: PathBuf = "/run/systemd/resolve/resolv.conf".into();
        if resolved.exists() {
            out = nameservers_from_resolv_conf(&resolved)
                .into_iter()
                .filter(|a| !a.ip().is_loopback())
                .collect();
        }
    }
    out
}

/// Whether a resolver answers a query for the root's NS records at all.
async fn answers(addr: SocketAddr, timeout: Duration) -> bool {
    use hickory_proto::op::{Message, Query};
    use hickory_proto::rr::{Name, RecordType};
    let mut m = Message::query();
    m.metadata.recursion_desired = true;
    m.queries.push(Query::query(Name::root(), RecordType::NS));
    Forwarder::new(vec![addr], timeout)
        .forward(&m)
        .await
        .is_ok()
}
