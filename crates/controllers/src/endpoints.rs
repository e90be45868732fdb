//! Endpoints controller: for every Service with a selector, an Endpoints object of the same
//! name listing the selected pods' addresses (ready ones in `addresses`, the others in
//! `notReadyAddresses`) and the ports their named or numbered targetPorts resolve to, as
//! upstream's endpoint controller computes them. Endpoints of a Service that is gone are
//! deleted; Services without a selector (like `kubernetes`) are left alone.

pub mod cache;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{
    EndpointAddress, EndpointPort, EndpointSubset, Endpoints, ObjectReference, Pod, Service,
    ServicePort,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{Api, DeleteParams, PostParams};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher;

use crate::Context;
use crate::util::{Outcome, WorkQueue, run_workers};
use cache::{Cache, Change, ServiceKey, changes, is_newer};

/// Label set on the endpoints of headless services.
pub const HEADLESS_LABEL: &str = "service.kubernetes.io/headless";
/// Annotation upstream sets when an Endpoints object holds more than [`MAX_CAPACITY`] addresses.
pub const OVER_CAPACITY_ANNOTATION: &str = "endpoints.kubernetes.io/over-capacity";
/// The most addresses one Endpoints object lists.
pub const MAX_CAPACITY: usize = 1000;
/// Endpoints carrying a leader-election record are not a Service's: never deleted.
const LEADER_ANNOTATION: &str = "control-plane.alpha.kubernetes.io/leader";
const WORKERS: usize = 5;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("writing endpoints {namespace}/{name}: {source}")]
    Write {
        namespace: String,
        name: String,
        source: kube::Error,
    },
}

// ---- pure helpers shared with the EndpointSlice controller ----

/// Upstream's ShouldPodBeInEndpoints: the pod has an IP, is not terminal for its restart
/// policy, and (unless terminating pods are wanted) is not being deleted.
pub fn should_pod_be_in_endpoints(pod: &Pod, include_terminating: bool) -> bool {
    if pod_ipv4(pod).is_none() {
        return false;
    }
    if !include_terminating && pod.metadata.deletion_timestamp.is_some() {
        return false;
    }
    let phase = pod
        .status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("");
    match pod
        .spec
        .as_ref()
        .and_then(|s| s.restart_policy.as_deref())
        .unwrap_or("Always")
    {
        "Never" => phase != "Failed" && phase != "Succeeded",
        "OnFailure" => phase != "Succeeded",
        _ => true,
    }
}

/// The pod's IPv4 address.
pub fn pod_ipv4(pod: &Pod) -> Option<String> {
    let status = pod.status.as_ref()?;
    let is_v4 = |ip: &str| ip.parse::<std::net::Ipv4Addr>().is_ok();
    status
        .pod_ips
        .iter()
        .flatten()
        .map(|p| p.ip.as_str())
        .chain(status.pod_ip.as_deref())
        .find(|ip| is_v4(ip))
        .map(str::to_string)
}

/// The container port a service port reaches on this pod: a named targetPort is looked up
/// among the containers' ports of the same protocol; a number is taken as is.
pub fn find_port(pod: &Pod, port: &ServicePort) -> Option<i32> {
    let protocol = port.protocol.as_deref().unwrap_or("TCP");
    match &port.target_port {
        None => Some(port.port),
        Some(IntOrString::Int(0)) => Some(port.port),
        Some(IntOrString::Int(n)) => Some(*n),
        Some(IntOrString::String(name)) => {
            if let Ok(n) = name.parse::<i32>() {
                return Some(n);
            }
            pod.spec
                .as_ref()?
                .containers
                .iter()
                .flat_map(|c| c.ports.iter().flatten())
                .find(|p| {
                    p.name.as_deref() == Some(name.as_str())
                        && p.protocol.as_deref().unwrap_or("TCP") == protocol
                })
                .map(|p| p.container_port)
        }
    }
}

pub fn is_headless(service: &Service) -> bool {
    service.spec.as_ref().and_then(|s| s.cluster_ip.as_deref()) == Some("None")
}

/// The pod's hostname, when it asks for one under this service (spec.subdomain).
pub fn hostname_for(pod: &Pod, service: &Service) -> Option<String> {
    let spec = pod.spec.as_ref()?;
    let hostname = spec.hostname.as_ref().filter(|h| !h.is_empty())?;
    (spec.subdomain.as_deref() == service.metadata.name.as_deref()
        && pod.metadata.namespace == service.metadata.namespace)
        .then(|| hostname.clone())
}

pub fn target_ref(pod: &Pod) -> ObjectReference {
    ObjectReference {
        kind: Some("Pod".into()),
        namespace: pod.metadata.namespace.clone(),
        name: pod.metadata.name.clone(),
        uid: pod.metadata.uid.clone(),
        ..Default::default()
    }
}

pub fn publish_not_ready(service: &Service) -> bool {
    service
        .spec
        .as_ref()
        .and_then(|s| s.publish_not_ready_addresses)
        .unwrap_or(false)
}

/// Labels of a Service's endpoints: the service's own, plus the headless marker.
pub fn endpoints_labels(service: &Service) -> BTreeMap<String, String> {
    let mut labels = service.metadata.labels.clone().unwrap_or_default();
    labels.remove(HEADLESS_LABEL);
    if is_headless(service) {
        labels.insert(HEADLESS_LABEL.into(), String::new());
    }
    labels
}

/// Ports of one subset as (name, port, protocol), sorted.
type PortSet = Vec<(String, i32, String)>;
/// Ready and not-ready addresses.
type ReadyAndNot = (Vec<EndpointAddress>, Vec<EndpointAddress>);

/// The subsets of a service's Endpoints from its selected pods, packed as upstream's
/// RepackSubsets does (one subset per distinct port set, addresses sorted), and whether
/// addresses were dropped to stay within [`MAX_CAPACITY`].
pub fn compute_subsets(service: &Service, pods: &[Arc<Pod>]) -> (Vec<EndpointSubset>, bool) {
    let tolerate_unready = publish_not_ready(service);
    let ports = service
        .spec
        .as_ref()
        .and_then(|s| s.ports.clone())
        .unwrap_or_default();
    // port set → (ready, not ready) addresses
    let mut groups: BTreeMap<PortSet, ReadyAndNot> = BTreeMap::new();
    for pod in pods {
        if !should_pod_be_in_endpoints(pod, tolerate_unready) {
            continue;
        }
        let Some(ip) = pod_ipv4(pod) else {
            continue;
        };
        let address = EndpointAddress {
            ip,
            hostname: hostname_for(pod, service),
            node_name: pod
                .spec
                .as_ref()
                .and_then(|s| s.node_name.clone())
                .filter(|n| !n.is_empty()),
            target_ref: Some(target_ref(pod)),
        };
        let ready = tolerate_unready || crate::util::is_pod_ready(pod);
        let mut add = |key: PortSet| {
            let entry = groups.entry(key).or_default();
            if ready {
                entry.0.push(address.clone());
            } else {
                entry.1.push(address.clone());
            }
        };
        if ports.is_empty() {
            // Only headless services list addresses without ports.
            if is_headless(service) {
                add(Vec::new());
            }
            continue;
        }
        for port in &ports {
            let Some(number) = find_port(pod, port) else {
                tracing::debug!(pod = ?pod.metadata.name, port = ?port.name, "pod has no such port");
                continue;
            };
            add(vec![(
                port.name.clone().unwrap_or_default(),
                number,
                port.protocol.clone().unwrap_or_else(|| "TCP".into()),
            )]);
        }
    }
    // Merge port sets of addresses sharing all their ports, as RepackSubsets does: group each
    // address (with its readiness) by the full set of ports it serves.
    let mut per_address: BTreeMap<(String, String, bool), (EndpointAddress, PortSet)> =
        BTreeMap::new();
    for (ports, (ready, not_ready)) in groups {
        for (address, is_ready) in ready
            .into_iter()
            .map(|a| (a, true))
            .chain(not_ready.into_iter().map(|a| (a, false)))
        {
            let uid = address
                .target_ref
                .as_ref()
                .and_then(|r| r.uid.clone())
                .unwrap_or_default();
            let entry = per_address
                .entry((address.ip.clone(), uid, is_ready))
                .or_insert_with(|| (address, Vec::new()));
            entry.1.extend(ports.iter().cloned());
        }
    }
    let mut subsets: BTreeMap<PortSet, ReadyAndNot> = BTreeMap::new();
    for ((_, _, is_ready), (address, mut ports)) in per_address {
        ports.sort();
        ports.dedup();
        let entry = subsets.entry(ports).or_default();
        if is_ready {
            entry.0.push(address);
        } else {
            entry.1.push(address);
        }
    }
    let mut budget = MAX_CAPACITY;
    let mut truncated = false;
    let mut take = |list: Vec<EndpointAddress>| -> Vec<EndpointAddress> {
        if list.len() > budget {
            truncated = true;
        }
        let kept: Vec<EndpointAddress> = list.into_iter().take(budget).collect();
        budget -= kept.len();
        kept
    };
    let mut result = Vec::new();
    let mut pending = Vec::new();
    for (ports, (ready, not_ready)) in subsets {
        let ready = take(ready);
        pending.push((ports, ready, not_ready));
    }
    // Ready addresses are kept before not-ready ones when over capacity.
    for (ports, ready, not_ready) in pending {
        let not_ready = take(not_ready);
        if ready.is_empty() && not_ready.is_empty() {
            continue;
        }
        result.push(EndpointSubset {
            addresses: (!ready.is_empty()).then_some(ready),
            not_ready_addresses: (!not_ready.is_empty()).then_some(not_ready),
            ports: (!ports.is_empty()).then(|| {
                ports
                    .into_iter()
                    .map(|(name, port, protocol)| EndpointPort {
                        name: (!name.is_empty()).then_some(name),
                        port,
                        protocol: Some(protocol),
                        app_protocol: None,
                    })
                    .collect()
            }),
        });
    }
    (result, truncated)
}

/// The Endpoints object a Service should have.
pub fn desired_endpoints(service: &Service, pods: &[Arc<Pod>]) -> Endpoints {
    let (subsets, truncated) = compute_subsets(service, pods);
    let mut annotations = BTreeMap::new();
    if truncated {
        annotations.insert(
            OVER_CAPACITY_ANNOTATION.to_string(),
            "truncated".to_string(),
        );
    }
    Endpoints {
        metadata: ObjectMeta {
            name: service.metadata.name.clone(),
            namespace: service.metadata.namespace.clone(),
            labels: Some(endpoints_labels(service)),
            annotations: (!annotations.is_empty()).then_some(annotations),
            ..Default::default()
        },
        subsets: (!subsets.is_empty()).then_some(subsets),
    }
}

/// Whether `existing` already says what `desired` does.
fn up_to_date(existing: &Endpoints, desired: &Endpoints) -> bool {
    let subsets = |e: &Endpoints| e.subsets.clone().unwrap_or_default();
    let labels = |e: &Endpoints| e.metadata.labels.clone().unwrap_or_default();
    let over = |e: &Endpoints| {
        e.metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(OVER_CAPACITY_ANNOTATION).cloned())
    };
    subsets(existing) == subsets(desired)
        && labels(existing) == labels(desired)
        && over(existing) == over(desired)
}

// ---- the controller ----

/// A create refused because the namespace is being deleted.
pub fn is_namespace_terminating(status: &kube::core::Status) -> bool {
    status.code == 403
        && status
            .details
            .as_ref()
            .is_some_and(|d| d.causes.iter().any(|c| c.reason == "NamespaceTerminating"))
}

struct State {
    client: kube::Client,
    cache: Arc<RwLock<Cache>>,
    /// Endpoints by namespace/name, as watched (and as written by us).
    endpoints: RwLock<HashMap<ServiceKey, Arc<Endpoints>>>,
}

pub async fn run(ctx: Arc<Context>) -> anyhow::Result<()> {
    let queue: Arc<WorkQueue<ServiceKey>> = WorkQueue::new();
    let state = Arc::new(State {
        client: ctx.client.clone(),
        cache: Arc::new(RwLock::new(Cache::default())),
        endpoints: RwLock::new(HashMap::new()),
    });
    let (synced_tx, mut synced_rx) = tokio::sync::watch::channel(false);
    let (endpoints_synced_tx, mut endpoints_synced_rx) = tokio::sync::watch::channel(false);
    let mut tasks = tokio::task::JoinSet::new();
    tasks.spawn(cache::run_sources(
        ctx.client.clone(),
        (ctx.informers.pods(), ctx.informers.nodes()),
        state.cache.clone(),
        queue.clone(),
        false,
        synced_tx,
    ));
    tasks.spawn(watch_endpoints(
        state.clone(),
        queue.clone(),
        endpoints_synced_tx,
    ));
    let _ = synced_rx.wait_for(|s| *s).await;
    let _ = endpoints_synced_rx.wait_for(|s| *s).await;
    tracing::info!("endpoints controller synced; starting workers");
    let worker_state = state.clone();
    tasks.spawn(run_workers(queue, WORKERS, move |key| {
        let state = worker_state.clone();
        async move {
            match sync_service(&state, &key).await {
                Ok(()) => Outcome::Done,
                Err(e) => {
                    tracing::warn!(error = %e, "endpoints controller");
                    Outcome::Retry
                }
            }
        }
    }));
    while tasks.join_next().await.is_some() {}
    anyhow::bail!("endpoints controller tasks ended")
}

async fn watch_endpoints(
    state: Arc<State>,
    queue: Arc<WorkQueue<ServiceKey>>,
    synced: tokio::sync::watch::Sender<bool>,
) {
    let stream = changes(
        watcher::watcher(
            Api::<Endpoints>::all(state.client.clone()),
            watcher::Config::default(),
        )
        .default_backoff(),
    );
    futures::pin_mut!(stream);
    let key_of = |e: &Endpoints| -> Option<ServiceKey> {
        Some((e.metadata.namespace.clone()?, e.metadata.name.clone()?))
    };
    while let Some(change) = stream.next().await {
        let mut keys = Vec::new();
        {
            let mut map = state.endpoints.write().unwrap_or_else(|e| e.into_inner());
            match change {
                Change::Upsert(ep) => {
                    if let Some(key) = key_of(&ep) {
                        let newer = map
                            .get(&key)
                            .is_none_or(|old| is_newer(&ep.metadata, &old.metadata));
                        if newer {
                            map.insert(key.clone(), Arc::new(ep));
                        }
                        keys.push(key);
                    }
                }
                Change::Remove(ep) => {
                    if let Some(key) = key_of(&ep) {
                        map.remove(&key);
                        keys.push(key);
                    }
                }
                Change::Replace(all) => {
                    map.clear();
                    for ep in all {
                        if let Some(key) = key_of(&ep) {
                            map.insert(key.clone(), Arc::new(ep));
                            keys.push(key);
                        }
                    }
                    let _ = synced.send(true);
                }
            }
        }
        for key in keys {
            queue.add(key);
        }
    }
}

async fn sync_service(state: &State, key: &ServiceKey) -> Result<(), Error> {
    let (namespace, name) = key;
    let (service, pods) = {
        let cache = state.cache.read().unwrap_or_else(|e| e.into_inner());
        let service = cache.service(key);
        let pods = service
            .as_ref()
            .map(|s| cache.selected_pods(s))
            .unwrap_or_default();
        (service, pods)
    };
    let existing = state
        .endpoints
        .read()
        .unwrap_or_else(|e| e.into_inner())
        .get(key)
        .cloned();
    let api: Api<Endpoints> = Api::namespaced(state.client.clone(), namespace);
    let write_error = |source| Error::Write {
        namespace: namespace.clone(),
        name: name.clone(),
        source,
    };
    let Some(service) = service else {
        // The service is gone: so are its endpoints (leader-election records excepted).
        let Some(existing) = existing else {
            return Ok(());
        };
        if existing
            .metadata
            .annotations
            .as_ref()
            .is_some_and(|a| a.contains_key(LEADER_ANNOTATION))
        {
            return Ok(());
        }
        match api.delete(name, &DeleteParams::default()).await {
            Ok(_) => {
                tracing::info!(endpoints = %format!("{namespace}/{name}"), "deleted endpoints of a deleted service")
            }
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(e) => return Err(write_error(e)),
        }
        state
            .endpoints
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(key);
        return Ok(());
    };
    if cache::selector(&service).is_none() {
        // Endpoints of selector-less services are written by someone else.
        return Ok(());
    }
    let mut desired = desired_endpoints(&service, &pods);
    if let Some(existing) = &existing
        && up_to_date(existing, &desired)
    {
        return Ok(());
    }
    let written = match &existing {
        Some(existing) => {
            // Keep what others put in metadata; replace what we own.
            let mut meta = existing.metadata.clone();
            let mut annotations = meta.annotations.take().unwrap_or_default();
            annotations.remove(OVER_CAPACITY_ANNOTATION);
            annotations.extend(desired.metadata.annotations.take().unwrap_or_default());
            meta.annotations = (!annotations.is_empty()).then_some(annotations);
            meta.labels = desired.metadata.labels.take();
            desired.metadata = meta;
            api.replace(name, &PostParams::default(), &desired).await
        }
        None => match api.create(&PostParams::default(), &desired).await {
            // The namespace is being deleted: nothing can be created there, nor is needed.
            Err(kube::Error::Api(e)) if is_namespace_terminating(&e) => return Ok(()),
            other => other,
        },
    }
    .map_err(write_error)?;
    let ready: usize = written
        .subsets
        .iter()
        .flatten()
        .map(|s| s.addresses.as_ref().map_or(0, Vec::len))
        .sum();
    tracing::info!(endpoints = %format!("{namespace}/{name}"), ready, "updated endpoints");
    state
        .endpoints
        .write()
        .unwrap_or_else(|e| e.into_inner())
        .insert(key.clone(), Arc::new(written));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{
        Container, ContainerPort, PodCondition, PodIP, PodSpec, PodStatus, ServiceSpec,
    };
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use k8s_openapi::jiff::Timestamp;

    pub fn pod(name: &str, ip: &str, ready: bool, port_name: &str, port: i32) -> Arc<Pod> {
        Arc::new(Pod {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("default".into()),
                uid: Some(format!("uid-{name}")),
                labels: Some([("app".to_string(), "web".to_string())].into()),
                ..Default::default()
            },
            spec: Some(PodSpec {
                node_name: Some("sim-0".into()),
                containers: vec![Container {
                    name: "c".into(),
                    ports: Some(vec![ContainerPort {
                        name: Some(port_name.into()),
                        container_port: port,
                        ..Default::default()
                    }]),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            status: Some(PodStatus {
                phase: Some("Running".into()),
                pod_ip: Some(ip.into()),
                pod_ips: Some(vec![PodIP { ip: ip.into() }]),
                conditions: Some(vec![PodCondition {
                    type_: "Ready".into(),
                    status: if ready { "True" } else { "False" }.into(),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
        })
    }

    fn service(target: IntOrString) -> Service {
        Service {
            metadata: ObjectMeta {
                name: Some("web".into()),
                namespace: Some("default".into()),
                labels: Some([("tier".to_string(), "front".to_string())].into()),
                ..Default::default()
            },
            spec: Some(ServiceSpec {
                selector: Some([("app".to_string(), "web".to_string())].into()),
                ports: Some(vec![ServicePort {
                    name: Some("http".into()),
                    port: 80,
                    protocol: Some("TCP".into()),
                    target_port: Some(target),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn ready_and_not_ready_pods_split_between_addresses() {
        let svc = service(IntOrString::Int(8080));
        let pods = vec![
            pod("b", "10.42.0.2", true, "http", 8080),
            pod("a", "10.42.0.1", true, "http", 8080),
            pod("c", "10.42.0.3", false, "http", 8080),
        ];
        let (subsets, truncated) = compute_subsets(&svc, &pods);
        assert!(!truncated);
        assert_eq!(subsets.len(), 1);
        let ips: Vec<&str> = subsets[0]
            .addresses
            .iter()
            .flatten()
            .map(|a| a.ip.as_str())
            .collect();
        assert_eq!(ips, vec!["10.42.0.1", "10.42.0.2"]);
        let not_ready = subsets[0].not_ready_addresses.as_ref().unwrap();
        assert_eq!(not_ready[0].ip, "10.42.0.3");
        assert_eq!(not_ready[0].node_name.as_deref(), Some("sim-0"));
        assert_eq!(
            not_ready[0].target_ref.as_ref().unwrap().name.as_deref(),
            Some("c")
        );
        let port = &subsets[0].ports.as_ref().unwrap()[0];
        assert_eq!((port.name.as_deref(), port.port), (Some("http"), 8080));
        // publishNotReadyAddresses lists every pod as ready.
        let mut publish = svc.clone();
        publish.spec.as_mut().unwrap().publish_not_ready_addresses = Some(true);
        let (subsets, _) = compute_subsets(&publish, &pods);
        assert_eq!(subsets[0].addresses.as_ref().unwrap().len(), 3);
        assert!(subsets[0].not_ready_addresses.is_none());
    }

    #[test]
    fn named_target_ports_resolve_per_pod() {
        let svc = service(IntOrString::String("web".into()));
        let pods = vec![
            pod("a", "10.42.0.1", true, "web", 8080),
            pod("b", "10.42.0.2", true, "web", 9090),
            // No port of that name: left out.
            pod("c", "10.42.0.3", true, "other", 7070),
        ];
        let (subsets, _) = compute_subsets(&svc, &pods);
        let mut seen: Vec<(i32, String)> = subsets
            .iter()
            .map(|s| {
                (
                    s.ports.as_ref().unwrap()[0].port,
                    s.addresses.as_ref().unwrap()[0].ip.clone(),
                )
            })
            .collect();
        seen.sort();
        assert_eq!(
            seen,
            vec![
                (8080, "10.42.0.1".to_string()),
                (9090, "10.42.0.2".to_string())
            ]
        );
    }

    #[test]
    fn pods_without_ips_terminal_or_terminating_are_left_out() {
        let svc = service(IntOrString::Int(80));
        let mut no_ip = (*pod("a", "10.42.0.1", true, "http", 80)).clone();
        no_ip.status.as_mut().unwrap().pod_ip = None;
        no_ip.status.as_mut().unwrap().pod_ips = None;
        let mut done = (*pod("b", "10.42.0.2", true, "http", 80)).clone();
        done.spec.as_mut().unwrap().restart_policy = Some("Never".into());
        done.status.as_mut().unwrap().phase = Some("Succeeded".into());
        let mut terminating = (*pod("c", "10.42.0.3", true, "http", 80)).clone();
        terminating.metadata.deletion_timestamp = Some(Time(Timestamp::now()));
        assert!(!should_pod_be_in_endpoints(&no_ip, true));
        assert!(!should_pod_be_in_endpoints(&done, true));
        assert!(!should_pod_be_in_endpoints(&terminating, false));
        assert!(should_pod_be_in_endpoints(&terminating, true));
        let pods = vec![Arc::new(no_ip), Arc::new(done), Arc::new(terminating)];
        let (subsets, _) = compute_subsets(&svc, &pods);
        assert!(subsets.is_empty());
    }

    #[test]
    fn headless_services_without_ports_list_addresses_and_hostnames() {
        let mut svc = service(IntOrString::Int(80));
        let spec = svc.spec.as_mut().unwrap();
        spec.ports = None;
        spec.cluster_ip = Some("None".into());
        let mut named = (*pod("a", "10.42.0.1", true, "http", 80)).clone();
        let pod_spec = named.spec.as_mut().unwrap();
        pod_spec.hostname = Some("a-host".into());
        pod_spec.subdomain = Some("web".into());
        let (subsets, _) = compute_subsets(&svc, &[Arc::new(named)]);
        assert_eq!(subsets.len(), 1);
        assert!(subsets[0].ports.is_none());
        assert_eq!(
            subsets[0].addresses.as_ref().unwrap()[0]
                .hostname
                .as_deref(),
            Some("a-host")
        );
        let desired = desired_endpoints(&svc, &[]);
        let labels = desired.metadata.labels.unwrap();
        assert_eq!(labels.get(HEADLESS_LABEL).map(String::as_str), Some(""));
        assert_eq!(labels.get("tier").map(String::as_str), Some("front"));
        // A service with a cluster IP and no ports lists nothing.
        let mut plain = service(IntOrString::Int(80));
        plain.spec.as_mut().unwrap().ports = None;
        assert!(
            compute_subsets(&plain, &[pod("a", "10.42.0.1", true, "http", 80)])
                .0
                .is_empty()
        );
    }

    #[test]
    fn addresses_beyond_capacity_are_truncated() {
        let svc = service(IntOrString::Int(80));
        let pods: Vec<Arc<Pod>> = (0..MAX_CAPACITY + 5)
            .map(|i| {
                pod(
                    &format!("p{i}"),
                    &format!("10.42.{}.{}", i / 250, i % 250),
                    i % 2 == 0,
                    "http",
                    80,
                )
            })
            .collect();
        let desired = desired_endpoints(&svc, &pods);
        let subsets = desired.subsets.unwrap();
        let total: usize = subsets
            .iter()
            .map(|s| {
                s.addresses.as_ref().map_or(0, Vec::len)
                    + s.not_ready_addresses.as_ref().map_or(0, Vec::len)
            })
            .sum();
        assert_eq!(total, MAX_CAPACITY);
        // Every ready address is kept.
        assert_eq!(
            subsets[0].addresses.as_ref().unwrap().len(),
            (MAX_CAPACITY + 5).div_ceil(2)
        );
        assert_eq!(
            desired
                .metadata
                .annotations
                .unwrap()
                .get(OVER_CAPACITY_ANNOTATION)
                .map(String::as_str),
            Some("truncated")
        );
    }

    #[test]
    fn up_to_date_ignores_server_metadata() {
        let svc = service(IntOrString::Int(80));
        let pods = vec![pod("a", "10.42.0.1", true, "http", 80)];
        let desired = desired_endpoints(&svc, &pods);
        let mut existing = desired.clone();
        existing.metadata.resource_version = Some("7".into());
        existing.metadata.uid = Some("u".into());
        assert!(up_to_date(&existing, &desired));
        let other = desired_endpoints(&svc, &[pod("a", "10.42.0.9", true, "http", 80)]);
        assert!(!up_to_date(&existing, &other));
    }
}
