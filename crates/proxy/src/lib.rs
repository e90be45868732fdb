//! The node's service proxy: Services and EndpointSlices become rules in one nftables table of
//! our own (`inet <table>`), as in kube-proxy's nftables mode; and the LoadBalancer address
//! allocator ([`servicelb`]).
//!
//! Architecture Invariant: the proxy only ever writes its own table, in whole transactions
//! (`nft -f` for the table's fixed part, one nf_tables netlink batch for the Services: see
//! [`netlink`]); it never reads or changes anyone else's rules.
//!
//! [`model`] extracts what matters of the API objects, [`rules`] turns a service port and its
//! endpoints into chains and map elements (pure), [`proxier`] keeps what is programmed and
//! writes the difference, [`nft`] runs the transactions.

pub mod bench;
pub mod metrics;
pub mod model;
pub mod netlink;
pub mod nft;
pub mod proxier;
pub mod rules;
pub mod servicelb;

use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::Api;
use kube::runtime::{WatchStreamExt, watcher};
use tokio::sync::{Notify, watch};

pub use bench::{BenchReport, bench};
pub use metrics::metrics_text;
pub use nft::Nft;
pub use proxier::{Cache, Proxier, Routes};
pub use rules::RuleConfig;
pub use servicelb::{LbConfig, run_service_lb};

/// Settings of one node's proxy.
#[derive(Debug, Clone)]
pub struct ProxyConfig {
    pub node_name: String,
    /// Addresses NodePorts answer on; empty: every local address.
    pub node_ips: Vec<IpAddr>,
    /// Pod network(s), comma separated: traffic from elsewhere to a ClusterIP is masqueraded.
    pub cluster_cidr: String,
    /// Name of our nftables table (`inet <table>`).
    pub table: String,
    /// Period of the full resync.
    pub sync_period: Duration,
    /// Changes arriving within this window go into one transaction.
    pub min_sync_interval: Duration,
    pub masquerade_all: bool,
    /// NodePorts on 127.0.0.1 too (sets `route_localnet`).
    pub localhost_node_ports: bool,
    /// Kept up to date with where the table sends new connections (for the kubelet).
    pub routes: Routes,
}

impl Default for ProxyConfig {
    fn default() -> Self {
        ProxyConfig {
            node_name: String::new(),
            node_ips: Vec::new(),
            cluster_cidr: "10.42.0.0/16".into(),
            table: "rkube".into(),
            sync_period: Duration::from_secs(30),
            min_sync_interval: Duration::from_millis(10),
            masquerade_all: false,
            localhost_node_ports: true,
            routes: Routes::default(),
        }
    }
}

impl ProxyConfig {
    pub fn rule_config(&self) -> RuleConfig {
        RuleConfig {
            node_name: self.node_name.clone(),
            cluster_cidrs: self
                .cluster_cidr
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(String::from)
                .collect(),
            masquerade_all: self.masquerade_all,
            node_ips: self.node_ips.clone(),
            localhost_node_ports: self.localhost_node_ports,
        }
    }
}

fn write_sysctl(path: &str) {
    match std::fs::read_to_string(path) {
        Ok(v) if v.trim() == "1" => {}
        _ => {
            if let Err(e) = std::fs::write(path, "1") {
                tracing::warn!(path, error = %e, "cannot enable sysctl");
            }
        }
    }
}

/// Run the proxy until an error: watch Services and EndpointSlices, program the table.
pub async fn run(client: kube::Client, config: ProxyConfig) -> anyhow::Result<()> {
    write_sysctl("/proc/sys/net/ipv4/ip_forward");
    if config.localhost_node_ports {
        write_sysctl("/proc/sys/net/ipv4/conf/all/route_localnet");
    }
    let rule_config = config.rule_config();
    let cache = Arc::new(Mutex::new(Cache::default()));
    let notify = Arc::new(Notify::new());
    let (services_synced, mut services_ready) = watch::channel(false);
    let (slices_synced, mut slices_ready) = watch::channel(false);
    let mut tasks = tokio::task::JoinSet::new();
    tasks.spawn(watch_objects(
        Api::<Service>::all(client.clone()),
        cache.clone(),
        notify.clone(),
        services_synced,
        |c: &mut Cache, ev| match ev {
            Change::Upsert(s) => c.upsert_service(&s),
            Change::Remove(s) => c.remove_service(&s),
            Change::Replace(all) => c.replace_services(&all),
        },
    ));
    tasks.spawn(watch_objects(
        Api::<EndpointSlice>::all(client.clone()),
        cache.clone(),
        notify.clone(),
        slices_synced,
        |c: &mut Cache, ev| match ev {
            Change::Upsert(s) => c.upsert_slice(&s),
            Change::Remove(s) => c.remove_slice(&s),
            Change::Replace(all) => c.replace_slices(&all),
        },
    ));
    let _ = services_ready.wait_for(|s| *s).await;
    let _ = slices_ready.wait_for(|s| *s).await;
    tracing::info!(table = %config.table, "service proxy synced its caches");

    let mut proxier = Some(Proxier::new(
        &config.table,
        rule_config.clone(),
        Nft::default(),
    ));
    if let Some(p) = proxier.as_mut() {
        p.routes = config.routes.clone();
    }
    let mut need_full = true;
    let mut next_full = tokio::time::Instant::now();
    loop {
        let mut full = need_full;
        if !full {
            tokio::select! {
                _ = notify.notified() => {
                    // gather what else arrives in the window into the same transaction
                    tokio::time::sleep(config.min_sync_interval).await;
                }
                _ = tokio::time::sleep_until(next_full) => full = true,
                Some(res) = tasks.join_next() => {
                    anyhow::bail!("service proxy watch ended: {res:?}");
                }
            }
        }
        let started = Instant::now();
        let mut p = proxier.take().expect("proxier is back after each sync");
        // A periodic resync rewrites only what differs, unless the table is gone.
        let replace = need_full || (full && !p.nft.table_exists(&config.table));
        let changes = {
            let mut c = cache.lock().unwrap_or_else(|e| e.into_inner());
            let dirty = c.take_dirty();
            let keys = if full {
                let mut all = c.service_keys();
                all.extend(dirty);
                all.sort();
                all.dedup();
                all
            } else {
                dirty
            };
            keys.into_iter()
                .map(|k| {
                    let d = c.desired(&k, &rule_config);
                    (k, d)
                })
                .collect::<Vec<_>>()
        };
        let (p, result) = tokio::task::spawn_blocking(move || {
            let result = if replace {
                p.full_sync(changes)
            } else {
                p.partial_sync(changes)
            };
            (p, result)
        })
        .await?;
        let (chains, rules) = p.counts();
        proxier = Some(p);
        if full {
            next_full = tokio::time::Instant::now() + config.sync_period;
        }
        match result {
            Ok(stats) => {
                need_full = false;
                metrics::metrics().observe(replace, started.elapsed(), chains, rules);
                tracing::debug!(
                    services = stats.services,
                    full = replace,
                    took = ?started.elapsed(),
                    "synced proxy rules"
                );
            }
            Err(e) => {
                // The table may differ from what we think: rewrite it whole, after a pause.
                tracing::warn!(error = %e, "programming the service proxy's table failed");
                metrics::metrics().sync_failures.inc();
                need_full = true;
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

enum Change<K> {
    Upsert(K),
    Remove(K),
    Replace(Vec<K>),
}

async fn watch_objects<K>(
    api: Api<K>,
    cache: Arc<Mutex<Cache>>,
    notify: Arc<Notify>,
    synced: watch::Sender<bool>,
    apply: fn(&mut Cache, Change<K>),
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
    let mut listing: Vec<K> = Vec::new();
    while let Some(event) = stream.next().await {
        let change = match event {
            Ok(watcher::Event::Init) => {
                listing.clear();
                continue;
            }
            Ok(watcher::Event::InitApply(obj)) => {
                listing.push(obj);
                continue;
            }
            Ok(watcher::Event::InitDone) => Change::Replace(std::mem::take(&mut listing)),
            Ok(watcher::Event::Apply(obj)) => Change::Upsert(obj),
            Ok(watcher::Event::Delete(obj)) => Change::Remove(obj),
            Err(e) => {
                tracing::debug!(error = %e, "service proxy watch");
                continue;
            }
        };
        let replace = matches!(change, Change::Replace(_));
        apply(&mut cache.lock().unwrap_or_else(|e| e.into_inner()), change);
        if replace {
            let _ = synced.send(true);
        }
        notify.notify_one();
    }
}
