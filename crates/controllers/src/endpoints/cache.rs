//! The watch cache the Endpoints and EndpointSlice controllers share the shape of: Services,
//! Pods (stripped to what endpoints need) and Node zones, with every change mapped to the keys
//! of the Services it concerns.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};

use futures::{Stream, StreamExt};
use k8s_openapi::api::core::v1::{Node, Pod, Service};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::Api;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};

use crate::informer::Informer;
use crate::util::WorkQueue;

/// Namespace and name of a Service.
pub type ServiceKey = (String, String);

/// The node label that gives an endpoint its zone.
pub const ZONE_LABEL: &str = "topology.kubernetes.io/zone";

/// A watch's events as changes to a cache: a (re)list replaces everything at once, so
/// objects deleted while the watch was down disappear.
pub enum Change<K> {
    Upsert(K),
    Remove(K),
    Replace(Vec<K>),
}

pub fn changes<K: Send + 'static>(
    events: impl Stream<Item = Result<Event<K>, watcher::Error>> + Send + 'static,
) -> impl Stream<Item = Change<K>> + Send {
    let mut listing: Vec<K> = Vec::new();
    events.filter_map(move |event| {
        let change = match event {
            Ok(Event::Init) => {
                listing.clear();
                None
            }
            Ok(Event::InitApply(obj)) => {
                listing.push(obj);
                None
            }
            Ok(Event::InitDone) => Some(Change::Replace(std::mem::take(&mut listing))),
            Ok(Event::Apply(obj)) => Some(Change::Upsert(obj)),
            Ok(Event::Delete(obj)) => Some(Change::Remove(obj)),
            Err(e) => {
                tracing::debug!(error = %e, "endpoints watch");
                None
            }
        };
        futures::future::ready(change)
    })
}

/// Whether `newer` may replace `older` in a cache: resourceVersions compare as numbers
/// (our API server's revisions), so a late watch event cannot undo a write we cached.
pub fn is_newer(newer: &ObjectMeta, older: &ObjectMeta) -> bool {
    match (
        newer
            .resource_version
            .as_deref()
            .and_then(|v| v.parse::<u64>().ok()),
        older
            .resource_version
            .as_deref()
            .and_then(|v| v.parse::<u64>().ok()),
    ) {
        (Some(n), Some(o)) => n >= o,
        _ => true,
    }
}

/// The service's selector, if it selects pods at all.
pub fn selector(service: &Service) -> Option<&BTreeMap<String, String>> {
    let spec = service.spec.as_ref()?;
    if spec.type_.as_deref() == Some("ExternalName") {
        return None;
    }
    spec.selector.as_ref().filter(|s| !s.is_empty())
}

pub fn selects(selector: &BTreeMap<String, String>, pod: &Pod) -> bool {
    let labels = pod.metadata.labels.as_ref();
    selector
        .iter()
        .all(|(k, v)| labels.and_then(|l| l.get(k)) == Some(v))
}

#[derive(Default)]
pub struct Cache {
    services: HashMap<String, HashMap<String, Arc<Service>>>,
    pods: HashMap<String, HashMap<String, Arc<Pod>>>,
    zones: HashMap<String, String>,
    /// The services each pod was last found to belong to, so a pod that stops matching (or
    /// goes) still updates them.
    pod_services: HashMap<(String, String), Vec<String>>,
}

fn key_of(meta: &ObjectMeta) -> Option<(String, String)> {
    Some((meta.namespace.clone()?, meta.name.clone()?))
}

impl Cache {
    pub fn service(&self, key: &ServiceKey) -> Option<Arc<Service>> {
        self.services.get(&key.0)?.get(&key.1).cloned()
    }

    pub fn service_keys(&self) -> Vec<ServiceKey> {
        self.services
            .iter()
            .flat_map(|(ns, m)| m.keys().map(move |n| (ns.clone(), n.clone())))
            .collect()
    }

    /// The pods of the service's namespace its selector selects, by name.
    pub fn selected_pods(&self, service: &Service) -> Vec<Arc<Pod>> {
        let (Some(ns), Some(selector)) = (service.metadata.namespace.as_ref(), selector(service))
        else {
            return Vec::new();
        };
        let mut pods: Vec<Arc<Pod>> = self
            .pods
            .get(ns)
            .map(|m| {
                m.values()
                    .filter(|p| selects(selector, p))
                    .cloned()
                    .collect()
            })
            .unwrap_or_default();
        pods.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
        pods
    }

    pub fn zone(&self, node: &str) -> Option<String> {
        self.zones.get(node).cloned()
    }

    fn services_selecting(&self, pod: &Pod) -> Vec<String> {
        let Some(ns) = pod.metadata.namespace.as_ref() else {
            return Vec::new();
        };
        self.services
            .get(ns)
            .map(|m| {
                m.iter()
                    .filter(|(_, s)| selector(s).is_some_and(|sel| selects(sel, pod)))
                    .map(|(n, _)| n.clone())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Apply a pod change; returns the services to sync.
    fn pod_changed(&mut self, pod: Option<Arc<Pod>>, removed: Option<&Pod>) -> Vec<ServiceKey> {
        let mut keys = Vec::new();
        let Some(key) = pod.as_deref().or(removed).and_then(|p| key_of(&p.metadata)) else {
            return keys;
        };
        let mut names = self.pod_services.remove(&key).unwrap_or_default();
        match pod {
            Some(pod) => {
                let now = self.services_selecting(&pod);
                if !now.is_empty() {
                    self.pod_services.insert(key.clone(), now.clone());
                }
                names.extend(now);
                let pods = self.pods.entry(key.0.clone()).or_default();
                let newer = pods
                    .get(&key.1)
                    .is_none_or(|old| is_newer(&pod.metadata, &old.metadata));
                if newer {
                    pods.insert(key.1.clone(), pod);
                }
            }
            None => {
                if let Some(pods) = self.pods.get_mut(&key.0) {
                    pods.remove(&key.1);
                }
            }
        }
        names.sort();
        names.dedup();
        keys.extend(names.into_iter().map(|n| (key.0.clone(), n)));
        keys
    }
}

/// Watch Services, Pods and (if `zones`) Nodes into `cache`, queueing the keys of the
/// services each change concerns; `synced` turns true once every watch has listed.
pub async fn run_sources(
    client: kube::Client,
    informers: (Arc<Informer<Pod>>, Arc<Informer<Node>>),
    cache: Arc<RwLock<Cache>>,
    queue: Arc<WorkQueue<ServiceKey>>,
    zones: bool,
    synced: tokio::sync::watch::Sender<bool>,
) {
    enum Source {
        Service(Box<Change<Service>>),
        Pod(Box<Change<Arc<Pod>>>),
        Node(Box<Change<Arc<Node>>>),
    }
    let services = changes(
        watcher::watcher(
            Api::<Service>::all(client.clone()),
            watcher::Config::default(),
        )
        .default_backoff(),
    )
    .map(|c| Source::Service(Box::new(c)))
    .boxed();
    // Pods and nodes from the controllers' shared caches: the pods themselves, not copies.
    let (pod_informer, node_informer) = informers;
    let pods = changes(pod_informer.subscribe())
        .map(|c| Source::Pod(Box::new(c)))
        .boxed();
    let mut streams = vec![services, pods];
    if zones {
        let nodes = changes(node_informer.subscribe())
            .map(|c| Source::Node(Box::new(c)))
            .boxed();
        streams.push(nodes);
    }
    let mut pending_lists = streams.len();
    let mut listed = [false; 3];
    let mut merged = futures::stream::select_all(streams);
    while let Some(source) = merged.next().await {
        let mut keys = Vec::new();
        {
            let mut c = cache.write().unwrap_or_else(|e| e.into_inner());
            match source {
                Source::Service(change) => {
                    if let Change::Replace(_) = *change
                        && !std::mem::replace(&mut listed[0], true)
                    {
                        pending_lists -= 1;
                    }
                    service_changed(&mut c, *change, &mut keys);
                }
                Source::Pod(change) => {
                    if let Change::Replace(_) = *change
                        && !std::mem::replace(&mut listed[1], true)
                    {
                        pending_lists -= 1;
                    }
                    match *change {
                        Change::Upsert(pod) => keys.extend(c.pod_changed(Some(pod), None)),
                        Change::Remove(pod) => keys.extend(c.pod_changed(None, Some(&pod))),
                        Change::Replace(all) => {
                            c.pods.clear();
                            c.pod_services.clear();
                            for pod in all {
                                c.pod_changed(Some(pod), None);
                            }
                            keys.extend(c.service_keys());
                        }
                    }
                }
                Source::Node(change) => {
                    if let Change::Replace(_) = *change
                        && !std::mem::replace(&mut listed[2], true)
                    {
                        pending_lists -= 1;
                    }
                    if node_changed(&mut c, *change) {
                        keys.extend(c.service_keys());
                    }
                }
            }
        }
        for key in keys {
            queue.add(key);
        }
        if pending_lists == 0 && !*synced.borrow() {
            let _ = synced.send(true);
        }
    }
}

fn service_changed(c: &mut Cache, change: Change<Service>, keys: &mut Vec<ServiceKey>) {
    match change {
        Change::Upsert(svc) => {
            if let Some(key) = key_of(&svc.metadata) {
                c.services
                    .entry(key.0.clone())
                    .or_default()
                    .insert(key.1.clone(), Arc::new(svc));
                remap_namespace(c, &key.0);
                keys.push(key);
            }
        }
        Change::Remove(svc) => {
            if let Some(key) = key_of(&svc.metadata) {
                if let Some(m) = c.services.get_mut(&key.0) {
                    m.remove(&key.1);
                }
                remap_namespace(c, &key.0);
                keys.push(key);
            }
        }
        Change::Replace(all) => {
            keys.extend(c.service_keys());
            c.services.clear();
            for svc in all {
                if let Some(key) = key_of(&svc.metadata) {
                    c.services
                        .entry(key.0.clone())
                        .or_default()
                        .insert(key.1.clone(), Arc::new(svc));
                    keys.push(key);
                }
            }
            let namespaces: Vec<String> = c.pods.keys().cloned().collect();
            for ns in namespaces {
                remap_namespace(c, &ns);
            }
        }
    }
}

/// Recompute which services each pod of a namespace belongs to, after a selector changed.
fn remap_namespace(c: &mut Cache, namespace: &str) {
    let pods: Vec<Arc<Pod>> = c
        .pods
        .get(namespace)
        .map(|m| m.values().cloned().collect())
        .unwrap_or_default();
    for pod in pods {
        let Some(key) = key_of(&pod.metadata) else {
            continue;
        };
        let now = c.services_selecting(&pod);
        if now.is_empty() {
            c.pod_services.remove(&key);
        } else {
            c.pod_services.insert(key, now);
        }
    }
}

/// Apply a node change; true when some node's zone changed.
fn node_changed(c: &mut Cache, change: Change<Arc<Node>>) -> bool {
    let zone = |n: &Node| {
        n.metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(ZONE_LABEL))
            .cloned()
    };
    match change {
        Change::Upsert(node) => {
            let Some(name) = node.metadata.name.clone() else {
                return false;
            };
            let new = zone(&node);
            let old = match &new {
                Some(z) => c.zones.insert(name, z.clone()),
                None => c.zones.remove(&name),
            };
            old != new
        }
        Change::Remove(node) => node
            .metadata
            .name
            .as_ref()
            .is_some_and(|n| c.zones.remove(n).is_some()),
        Change::Replace(all) => {
            let before = std::mem::take(&mut c.zones);
            for node in all {
                if let (Some(name), Some(z)) = (node.metadata.name.clone(), zone(&node)) {
                    c.zones.insert(name, z);
                }
            }
            before != c.zones
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::ServiceSpec;

    fn pod(name: &str, labels: &[(&str, &str)]) -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("default".into()),
                labels: Some(
                    labels
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect(),
                ),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    fn service(name: &str, selector: &[(&str, &str)]) -> Service {
        Service {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("default".into()),
                ..Default::default()
            },
            spec: Some(ServiceSpec {
                selector: Some(
                    selector
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect(),
                ),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn a_pod_that_stops_matching_still_syncs_its_old_service() {
        let mut c = Cache::default();
        let mut keys = Vec::new();
        service_changed(
            &mut c,
            Change::Upsert(service("web", &[("app", "web")])),
            &mut keys,
        );
        let key = ("default".to_string(), "web".to_string());
        assert_eq!(
            c.pod_changed(Some(Arc::new(pod("p", &[("app", "web")]))), None),
            vec![key.clone()]
        );
        assert_eq!(c.selected_pods(&c.service(&key).unwrap()).len(), 1);
        // Relabelled: the old service is synced once more, then no longer.
        assert_eq!(
            c.pod_changed(Some(Arc::new(pod("p", &[("app", "db")]))), None),
            vec![key.clone()]
        );
        assert!(
            c.pod_changed(Some(Arc::new(pod("p", &[("app", "db")]))), None)
                .is_empty()
        );
        assert!(c.selected_pods(&c.service(&key).unwrap()).is_empty());
        // A removed pod syncs the services it belonged to.
        c.pod_changed(Some(Arc::new(pod("q", &[("app", "web")]))), None);
        assert_eq!(c.pod_changed(None, Some(&pod("q", &[]))), vec![key]);
    }

    #[test]
    fn services_without_selectors_select_nothing() {
        let mut svc = service("ext", &[]);
        assert!(selector(&svc).is_none());
        svc = service("web", &[("app", "web")]);
        svc.spec.as_mut().unwrap().type_ = Some("ExternalName".into());
        assert!(selector(&svc).is_none());
    }

    #[test]
    fn stale_watch_events_do_not_undo_newer_writes() {
        let meta = |rv: &str| ObjectMeta {
            resource_version: Some(rv.into()),
            ..Default::default()
        };
        assert!(is_newer(&meta("10"), &meta("9")));
        assert!(!is_newer(&meta("9"), &meta("10")));
        assert!(is_newer(&meta("x"), &meta("10")));
    }
}
