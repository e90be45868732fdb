//! LoadBalancer addresses without a cloud: every Service of type LoadBalancer (without a
//! `loadBalancerClass`) gets `status.loadBalancer.ingress`: the next free address of a pool,
//! or else the InternalIPs of the Ready nodes (as k3s's service load balancer). A Service
//! that stops being a LoadBalancer loses its ingress; a deleted one frees its address.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Node, Service};
use kube::Api;
use kube::api::{Patch, PatchParams};
use kube::runtime::{WatchStreamExt, watcher};
use serde_json::json;
use tokio::sync::Notify;

use crate::model::ServiceKey;

#[derive(Debug, Clone, Default)]
pub struct LbConfig {
    /// Addresses to hand out (`--lb-ip-pool`); none: the nodes' addresses.
    pub pool: Option<Vec<IpAddr>>,
}

/// What the allocator needs of a Service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LbService {
    /// type LoadBalancer and no loadBalancerClass: ours to serve.
    pub wants_lb: bool,
    /// Any LoadBalancer Service, ours or another's: its addresses are taken.
    pub is_lb: bool,
    pub requested: Option<IpAddr>,
    pub ingress: Vec<IpAddr>,
}

impl LbService {
    pub fn from_service(svc: &Service) -> LbService {
        let spec = svc.spec.as_ref();
        let is_lb = spec.and_then(|s| s.type_.as_deref()) == Some("LoadBalancer");
        let wants_lb = is_lb && spec.and_then(|s| s.load_balancer_class.as_ref()).is_none();
        let ingress = svc
            .status
            .as_ref()
            .and_then(|s| s.load_balancer.as_ref())
            .and_then(|lb| lb.ingress.as_ref())
            .into_iter()
            .flatten()
            .filter_map(|i| i.ip.as_ref()?.parse().ok())
            .collect();
        LbService {
            wants_lb,
            is_lb,
            requested: spec
                .and_then(|s| s.load_balancer_ip.as_ref())
                .and_then(|ip| ip.parse().ok()),
            ingress,
        }
    }
}

/// The ingress every Service should have, for those whose ingress must change.
pub fn plan(
    services: &BTreeMap<ServiceKey, LbService>,
    pool: Option<&[IpAddr]>,
    node_ips: &[IpAddr],
) -> BTreeMap<ServiceKey, Vec<IpAddr>> {
    let mut want: BTreeMap<ServiceKey, Vec<IpAddr>> = BTreeMap::new();
    match pool {
        None => {
            let mut ips = node_ips.to_vec();
            ips.sort();
            ips.dedup();
            for key in services.iter().filter(|(_, s)| s.wants_lb).map(|(k, _)| k) {
                want.insert(key.clone(), ips.clone());
            }
        }
        Some(pool) => {
            let in_pool: BTreeSet<IpAddr> = pool.iter().copied().collect();
            let mut used: BTreeSet<IpAddr> = BTreeSet::new();
            // Addresses of other implementations are taken too.
            for s in services.values().filter(|s| s.is_lb && !s.wants_lb) {
                used.extend(&s.ingress);
            }
            let mut pending = Vec::new();
            // Keep what a Service already has, first come first kept.
            for (key, s) in services.iter().filter(|(_, s)| s.wants_lb) {
                match s
                    .ingress
                    .iter()
                    .find(|ip| in_pool.contains(ip) && !used.contains(ip))
                {
                    Some(ip) => {
                        used.insert(*ip);
                        want.insert(key.clone(), vec![*ip]);
                    }
                    None => pending.push((key, s)),
                }
            }
            for (key, s) in pending {
                let requested = s
                    .requested
                    .filter(|ip| in_pool.contains(ip) && !used.contains(ip));
                let ip = requested.or_else(|| pool.iter().copied().find(|ip| !used.contains(ip)));
                match ip {
                    Some(ip) => {
                        used.insert(ip);
                        want.insert(key.clone(), vec![ip]);
                    }
                    None => {
                        tracing::warn!(service = %key, "no free address left in the load balancer pool");
                        want.insert(key.clone(), Vec::new());
                    }
                }
            }
        }
    }
    // no longer a LoadBalancer: release
    for (key, s) in services {
        if !s.is_lb && !s.ingress.is_empty() {
            want.insert(key.clone(), Vec::new());
        }
    }
    want.retain(|key, ips| services.get(key).is_some_and(|s| s.ingress != *ips));
    want
}

/// The InternalIPs of a node if it is Ready (none otherwise): kept per node, so a change of
/// one node does not re-read every other.
fn ready_ips(node: &Node) -> Vec<IpAddr> {
    let Some(status) = &node.status else {
        return Vec::new();
    };
    let ready = status
        .conditions
        .iter()
        .flatten()
        .any(|c| c.type_ == "Ready" && c.status == "True");
    if !ready {
        return Vec::new();
    }
    status
        .addresses
        .iter()
        .flatten()
        .filter(|a| a.type_ == "InternalIP")
        .filter_map(|a| a.address.parse().ok())
        .collect()
}

/// The InternalIPs of the Ready nodes.
fn ready_node_ips(nodes: &BTreeMap<String, Vec<IpAddr>>) -> Vec<IpAddr> {
    nodes.values().flatten().copied().collect()
}

#[derive(Default)]
struct State {
    services: BTreeMap<ServiceKey, LbService>,
    /// Each node's InternalIPs while it is Ready.
    nodes: BTreeMap<String, Vec<IpAddr>>,
    synced_services: bool,
    synced_nodes: bool,
}

/// Run the allocator until an error.
pub async fn run_service_lb(client: kube::Client, config: LbConfig) -> anyhow::Result<()> {
    let state = Arc::new(Mutex::new(State::default()));
    let notify = Arc::new(Notify::new());
    let mut tasks = tokio::task::JoinSet::new();
    {
        let (state, notify) = (state.clone(), notify.clone());
        let api = Api::<Service>::all(client.clone());
        tasks.spawn(async move {
            let stream = watcher::watcher(api, watcher::Config::default()).default_backoff();
            futures::pin_mut!(stream);
            let mut listing = BTreeMap::new();
            while let Some(ev) = stream.next().await {
                let mut st = state.lock().unwrap_or_else(|e| e.into_inner());
                let key_of = |s: &Service| {
                    Some(ServiceKey::new(
                        s.metadata.namespace.as_deref()?,
                        s.metadata.name.as_deref()?,
                    ))
                };
                match ev {
                    Ok(watcher::Event::Init) => listing.clear(),
                    Ok(watcher::Event::InitApply(s)) => {
                        if let Some(k) = key_of(&s) {
                            listing.insert(k, LbService::from_service(&s));
                        }
                    }
                    Ok(watcher::Event::InitDone) => {
                        st.services = std::mem::take(&mut listing);
                        st.synced_services = true;
                    }
                    Ok(watcher::Event::Apply(s)) => {
                        if let Some(k) = key_of(&s) {
                            st.services.insert(k, LbService::from_service(&s));
                        }
                    }
                    Ok(watcher::Event::Delete(s)) => {
                        if let Some(k) = key_of(&s) {
                            st.services.remove(&k);
                        }
                    }
                    Err(e) => tracing::debug!(error = %e, "service load balancer: service watch"),
                }
                notify.notify_one();
            }
        });
    }
    if config.pool.is_none() {
        let (state, notify) = (state.clone(), notify.clone());
        let api = Api::<Node>::all(client.clone());
        tasks.spawn(async move {
            let stream = watcher::watcher(api, watcher::Config::default()).default_backoff();
            futures::pin_mut!(stream);
            let mut listing = BTreeMap::new();
            while let Some(ev) = stream.next().await {
                let mut st = state.lock().unwrap_or_else(|e| e.into_inner());
                match ev {
                    Ok(watcher::Event::Init) => listing.clear(),
                    Ok(watcher::Event::InitApply(n)) => {
                        if let Some(name) = n.metadata.name.clone() {
                            listing.insert(name, ready_ips(&n));
                        }
                    }
                    Ok(watcher::Event::InitDone) => {
                        st.nodes = std::mem::take(&mut listing);
                        st.synced_nodes = true;
                    }
                    Ok(watcher::Event::Apply(n)) => {
                        if let Some(name) = n.metadata.name.clone() {
                            let ips = ready_ips(&n);
                            if st.nodes.get(&name) == Some(&ips) {
                                // A heartbeat: nothing the allocator reads changed.
                                continue;
                            }
                            st.nodes.insert(name, ips);
                        }
                    }
                    Ok(watcher::Event::Delete(n)) => {
                        if let Some(name) = &n.metadata.name {
                            st.nodes.remove(name);
                        }
                    }
                    Err(e) => tracing::debug!(error = %e, "service load balancer: node watch"),
                }
                notify.notify_one();
            }
        });
    } else {
        state.lock().unwrap_or_else(|e| e.into_inner()).synced_nodes = true;
    }
    loop {
        tokio::select! {
            _ = notify.notified() => {}
            // retry failed writes
            _ = tokio::time::sleep(std::time::Duration::from_secs(10)) => {}
            Some(res) = tasks.join_next() => anyhow::bail!("service load balancer watch ended: {res:?}"),
        }
        let changes = {
            let st = state.lock().unwrap_or_else(|e| e.into_inner());
            if !st.synced_services || !st.synced_nodes {
                continue;
            }
            // Node addresses matter only to a Service that wants them.
            let node_ips = if st.services.values().any(|s| s.wants_lb) {
                ready_node_ips(&st.nodes)
            } else {
                Vec::new()
            };
            plan(&st.services, config.pool.as_deref(), &node_ips)
        };
        for (key, ips) in changes {
            let ingress = if ips.is_empty() {
                serde_json::Value::Null
            } else {
                json!(
                    ips.iter()
                        .map(|ip| json!({"ip": ip.to_string(), "ipMode": "VIP"}))
                        .collect::<Vec<_>>()
                )
            };
            let patch = json!({"status": {"loadBalancer": {"ingress": ingress}}});
            let api = Api::<Service>::namespaced(client.clone(), &key.namespace);
            match api
                .patch_status(&key.name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                Ok(svc) => {
                    tracing::info!(service = %key, ?ips, "load balancer ingress set");
                    state
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .services
                        .insert(key, LbService::from_service(&svc));
                }
                Err(kube::Error::Api(e)) if e.code == 404 => {}
                Err(e) => {
                    tracing::warn!(service = %key, error = %e, "setting load balancer ingress")
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lb(ingress: &[&str]) -> LbService {
        LbService {
            wants_lb: true,
            is_lb: true,
            requested: None,
            ingress: ingress.iter().map(|s| s.parse().unwrap()).collect(),
        }
    }

    fn ips(s: &[&str]) -> Vec<IpAddr> {
        s.iter().map(|s| s.parse().unwrap()).collect()
    }

    #[test]
    fn pool_hands_out_free_addresses_and_keeps_given_ones() {
        let pool = ips(&["10.0.0.1", "10.0.0.2", "10.0.0.3"]);
        let mut services = BTreeMap::new();
        services.insert(ServiceKey::new("a", "kept"), lb(&["10.0.0.1"]));
        services.insert(ServiceKey::new("a", "new"), lb(&[]));
        let mut requested = lb(&[]);
        requested.requested = Some("10.0.0.3".parse().unwrap());
        services.insert(ServiceKey::new("b", "asks"), requested);
        services.insert(
            ServiceKey::new("c", "plain"),
            LbService {
                wants_lb: false,
                is_lb: false,
                requested: None,
                ingress: vec![],
            },
        );
        let plan = plan(&services, Some(&pool), &[]);
        assert_eq!(plan.len(), 2, "{plan:?}");
        assert_eq!(plan[&ServiceKey::new("a", "new")], ips(&["10.0.0.2"]));
        assert_eq!(plan[&ServiceKey::new("b", "asks")], ips(&["10.0.0.3"]));
    }

    #[test]
    fn exhausted_pool_leaves_the_service_pending() {
        let pool = ips(&["10.0.0.1"]);
        let mut services = BTreeMap::new();
        services.insert(ServiceKey::new("a", "x"), lb(&["10.0.0.1"]));
        services.insert(ServiceKey::new("a", "y"), lb(&[]));
        assert!(plan(&services, Some(&pool), &[]).is_empty());
        // deleting x frees its address for y
        services.remove(&ServiceKey::new("a", "x"));
        assert_eq!(
            plan(&services, Some(&pool), &[])[&ServiceKey::new("a", "y")],
            pool
        );
    }

    #[test]
    fn node_addresses_without_pool_and_release_on_type_change() {
        let mut services = BTreeMap::new();
        services.insert(ServiceKey::new("a", "lb"), lb(&[]));
        services.insert(
            ServiceKey::new("a", "was-lb"),
            LbService {
                wants_lb: false,
                is_lb: false,
                requested: None,
                ingress: ips(&["192.168.1.5"]),
            },
        );
        let nodes = ips(&["192.168.1.6", "192.168.1.5"]);
        let plan = plan(&services, None, &nodes);
        assert_eq!(
            plan[&ServiceKey::new("a", "lb")],
            ips(&["192.168.1.5", "192.168.1.6"])
        );
        assert_eq!(plan[&ServiceKey::new("a", "was-lb")], Vec::<IpAddr>::new());
    }
}
