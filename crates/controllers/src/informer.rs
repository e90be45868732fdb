//! Shared informers, as kube-controller-manager's SharedInformerFactory: one watch and one cache
//! of a resource for every controller that reads it, instead of one each. With thousands of
//! nodes and pods, every private watch of them costs a decode of every change and a full copy
//! of every object.
//!
//! An [`Informer`] applies its watch to one reflector [`Store`] (managedFields dropped: no
//! controller reads them) and hands each subscriber the same events with the objects shared
//! (`Arc`). A subscriber starts with the cache's current contents as a list (`Init`,
//! `InitApply`…, `InitDone`), then follows; one that falls too far behind is given the whole
//! cache again as a list, which level-triggered consumers handle as a re-list.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, OnceLock};

use futures::stream::BoxStream;
use futures::{Stream, StreamExt};
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::Resource;
use kube::api::Api;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use serde::de::DeserializeOwned;
use tokio::sync::{broadcast, watch};

/// Events a subscriber may fall behind by before it is handed the whole cache again.
const BUFFER: usize = 16_384;

/// What a subscriber receives: the informer's events, objects shared.
pub type Event<K> = watcher::Event<Arc<K>>;

/// The informers of one controller-manager term, started on first use; their watches stop
/// when this is dropped.
pub struct Informers {
    client: kube::Client,
    pods: OnceLock<Arc<Informer<Pod>>>,
    nodes: OnceLock<Arc<Informer<Node>>>,
}

impl Informers {
    pub fn new(client: kube::Client) -> Informers {
        Informers {
            client,
            pods: OnceLock::new(),
            nodes: OnceLock::new(),
        }
    }

    /// Every Pod of the cluster, as [`trim_pod`] leaves it.
    pub fn pods(&self) -> Arc<Informer<Pod>> {
        self.pods
            .get_or_init(|| Informer::start(Api::all(self.client.clone()), trim_pod))
            .clone()
    }

    /// Every Node, as [`trim_node`] leaves it.
    pub fn nodes(&self) -> Arc<Informer<Node>> {
        self.nodes
            .get_or_init(|| Informer::start(Api::all(self.client.clone()), trim_node))
            .clone()
    }
}

/// What the shared cache keeps of a Pod: all but the volumes no controller reads (only claims
/// and ephemeral volumes are; a pod's projected service account token volume alone is a
/// large part of its memory).
pub fn trim_pod(pod: &mut Pod) {
    if let Some(volumes) = pod.spec.as_mut().and_then(|s| s.volumes.as_mut()) {
        volumes.retain(|v| v.persistent_volume_claim.is_some() || v.ephemeral.is_some());
        volumes.shrink_to_fit();
    }
}

/// What the shared cache keeps of a Node: all but the status fields no controller reads (the
/// scheduler reads them from its own cache): its images (up to 50 a node, with their digests),
/// resources, system info and kubelet endpoint. Controllers patch nodes, never replace them
/// from this cache, so nothing is lost.
pub fn trim_node(node: &mut Node) {
    if let Some(status) = node.status.as_mut() {
        status.images = None;
        status.capacity = None;
        status.allocatable = None;
        status.node_info = None;
        status.daemon_endpoints = None;
    }
}

/// One watch of a resource, its cache, and the subscribers' channel.
pub struct Informer<K: Resource<DynamicType = ()> + Clone + 'static> {
    store: Store<K>,
    shared: Arc<Mutex<Shared<K>>>,
    synced: watch::Receiver<bool>,
    task: tokio::task::AbortHandle,
}

/// What the watch task and new subscribers agree on under one lock, so that a subscriber's
/// starting list and the events after it neither miss nor repeat a change.
struct Shared<K> {
    events: broadcast::Sender<Event<K>>,
    /// The objects of a re-list in progress (between `Init` and `InitDone`).
    relisting: Option<Vec<Arc<K>>>,
}

impl<K> Informer<K>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + std::fmt::Debug + Send + Sync,
{
    /// Watch `api`, every object trimmed by `trim` (and its managedFields dropped).
    fn start(api: Api<K>, trim: fn(&mut K)) -> Arc<Informer<K>> {
        let (store, writer) = reflector::store::<K>();
        let (events, _) = broadcast::channel(BUFFER);
        let shared = Arc::new(Mutex::new(Shared {
            events,
            relisting: None,
        }));
        let (synced_tx, synced) = watch::channel(false);
        let stream = watcher(api, watcher::Config::default())
            .default_backoff()
            .modify(move |o: &mut K| {
                o.meta_mut().managed_fields = None;
                trim(o);
            });
        let task = tokio::spawn(run(
            stream,
            writer,
            store.clone(),
            shared.clone(),
            synced_tx,
        ));
        Arc::new(Informer {
            store,
            shared,
            synced,
            task: task.abort_handle(),
        })
    }

    /// Wait until the first list is in the cache.
    pub async fn wait_synced(&self) {
        let mut synced = self.synced.clone();
        // Only fails if the watch task is gone, which ends the process's use of it anyway.
        let _ = synced.wait_for(|s| *s).await;
    }

    /// The cache, once the first list is in it. (Handed out only then: a reflector store wakes
    /// only one of several tasks waiting for it to become ready.)
    pub async fn store(&self) -> Store<K> {
        self.wait_synced().await;
        let _ = self.store.wait_until_ready().await;
        self.store.clone()
    }

    /// The cache's contents as a list, then every change; never ends while the informer runs.
    /// Items are `Result`s so that kube's stream adapters apply; they are never errors.
    pub fn subscribe(
        self: &Arc<Self>,
    ) -> impl Stream<Item = Result<Event<K>, watcher::Error>> + Send + 'static {
        struct Sub<K: Resource<DynamicType = ()> + Clone + 'static> {
            informer: Arc<Informer<K>>,
            rx: Option<broadcast::Receiver<Event<K>>>,
            pending: VecDeque<Event<K>>,
        }
        let sub = Sub {
            informer: self.clone(),
            rx: None,
            pending: VecDeque::new(),
        };
        futures::stream::unfold(sub, |mut sub| async move {
            loop {
                if let Some(event) = sub.pending.pop_front() {
                    return Some((Ok(event), sub));
                }
                let Some(rx) = sub.rx.as_mut() else {
                    sub.informer.wait_synced().await;
                    let (rx, list) = sub.informer.snapshot();
                    sub.rx = Some(rx);
                    sub.pending = list;
                    continue;
                };
                match rx.recv().await {
                    Ok(event) => return Some((Ok(event), sub)),
                    Err(broadcast::error::RecvError::Lagged(missed)) => {
                        tracing::debug!(
                            kind = %K::kind(&()),
                            missed,
                            "informer subscriber fell behind; listing the cache again"
                        );
                        sub.rx = None;
                    }
                    Err(broadcast::error::RecvError::Closed) => return None,
                }
            }
        })
    }

    /// A receiver of the events after now, and the events that bring a new subscriber to now.
    fn snapshot(&self) -> (broadcast::Receiver<Event<K>>, VecDeque<Event<K>>) {
        let shared = self.shared.lock().unwrap_or_else(|e| e.into_inner());
        let rx = shared.events.subscribe();
        let mut list = VecDeque::new();
        list.push_back(watcher::Event::Init);
        match &shared.relisting {
            // The rest of the re-list follows on the channel.
            Some(partial) => list.extend(partial.iter().cloned().map(watcher::Event::InitApply)),
            None => {
                list.extend(
                    self.store
                        .state()
                        .into_iter()
                        .map(watcher::Event::InitApply),
                );
                list.push_back(watcher::Event::InitDone);
            }
        }
        (rx, list)
    }
}

impl<K: Resource<DynamicType = ()> + Clone + 'static> Drop for Informer<K> {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The watch task: apply each event to the cache, then hand it to the subscribers.
async fn run<K, S>(
    stream: S,
    mut writer: reflector::store::Writer<K>,
    store: Store<K>,
    shared: Arc<Mutex<Shared<K>>>,
    synced: watch::Sender<bool>,
) where
    K: Resource<DynamicType = ()> + Clone + Send + Sync + 'static,
    S: Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send,
{
    let mut stream: BoxStream<'_, _> = stream.boxed();
    while let Some(item) = stream.next().await {
        let event = match item {
            Ok(event) => event,
            Err(e) => {
                tracing::warn!(kind = %K::kind(&()), error = %e, "shared informer watch failed; retrying");
                continue;
            }
        };
        let mut shared = shared.lock().unwrap_or_else(|e| e.into_inner());
        writer.apply_watcher_event(&event);
        let out = match event {
            watcher::Event::Apply(obj) => {
                // The store's copy, rather than another.
                let stored = store.get(&ObjectRef::from_obj(&obj));
                watcher::Event::Apply(stored.unwrap_or_else(|| Arc::new(obj)))
            }
            watcher::Event::Delete(obj) => watcher::Event::Delete(Arc::new(obj)),
            watcher::Event::Init => {
                shared.relisting = Some(Vec::new());
                watcher::Event::Init
            }
            watcher::Event::InitApply(obj) => {
                let obj = Arc::new(obj);
                if let Some(partial) = shared.relisting.as_mut() {
                    partial.push(obj.clone());
                }
                watcher::Event::InitApply(obj)
            }
            watcher::Event::InitDone => {
                shared.relisting = None;
                watcher::Event::InitDone
            }
        };
        let done = matches!(out, watcher::Event::InitDone);
        // No subscribers is fine.
        let _ = shared.events.send(out);
        drop(shared);
        if done && !*synced.borrow() {
            synced.send_replace(true);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn pod(name: &str, rv: &str) -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("ns".into()),
                resource_version: Some(rv.into()),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    /// An informer fed by a channel instead of a watch.
    fn fed() -> (
        tokio::sync::mpsc::UnboundedSender<watcher::Event<Pod>>,
        Arc<Informer<Pod>>,
    ) {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let (store, writer) = reflector::store::<Pod>();
        let (events, _) = broadcast::channel(4);
        let shared = Arc::new(Mutex::new(Shared {
            events,
            relisting: None,
        }));
        let (synced_tx, synced) = watch::channel(false);
        let stream = tokio_stream_of(rx).map(Ok);
        let task = tokio::spawn(run(
            stream,
            writer,
            store.clone(),
            shared.clone(),
            synced_tx,
        ));
        (
            tx,
            Arc::new(Informer {
                store,
                shared,
                synced,
                task: task.abort_handle(),
            }),
        )
    }

    fn tokio_stream_of<T: Send + 'static>(
        mut rx: tokio::sync::mpsc::UnboundedReceiver<T>,
    ) -> impl Stream<Item = T> + Send {
        futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
    }

    fn describe(event: &Event<Pod>) -> String {
        let name = |p: &Arc<Pod>| {
            format!(
                "{}@{}",
                p.metadata.name.clone().unwrap_or_default(),
                p.metadata.resource_version.clone().unwrap_or_default()
            )
        };
        match event {
            watcher::Event::Init => "Init".into(),
            watcher::Event::InitApply(p) => format!("InitApply {}", name(p)),
            watcher::Event::InitDone => "InitDone".into(),
            watcher::Event::Apply(p) => format!("Apply {}", name(p)),
            watcher::Event::Delete(p) => format!("Delete {}", name(p)),
        }
    }

    async fn next(
        sub: &mut (impl Stream<Item = Result<Event<Pod>, watcher::Error>> + Unpin),
    ) -> String {
        let event = tokio::time::timeout(std::time::Duration::from_secs(5), sub.next())
            .await
            .expect("an event in time")
            .expect("the stream goes on")
            .expect("never an error");
        describe(&event)
    }

    #[test]
    fn trimmed_pods_keep_their_claims() {
        let mut p: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p", "managedFields": [{"manager": "kubectl"}]},
            "spec": {"containers": [{"name": "c"}], "volumes": [
                {"name": "token", "projected": {"sources": []}},
                {"name": "data", "persistentVolumeClaim": {"claimName": "data"}},
                {"name": "scratch", "ephemeral": {"volumeClaimTemplate": {"spec": {}}}},
                {"name": "cfg", "configMap": {"name": "cfg"}}
            ]}
        }))
        .unwrap();
        trim_pod(&mut p);
        let names: Vec<&str> = p
            .spec
            .as_ref()
            .unwrap()
            .volumes
            .as_ref()
            .unwrap()
            .iter()
            .map(|v| v.name.as_str())
            .collect();
        assert_eq!(names, vec!["data", "scratch"]);
        assert_eq!(p.spec.as_ref().unwrap().containers[0].name, "c");
    }

    #[test]
    fn trimmed_nodes_keep_what_controllers_read() {
        let mut n: Node = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "n", "labels": {"zone": "a"}},
            "status": {
                "images": [{"names": ["registry.local/app@sha256:00", "registry.local/app:1"], "sizeBytes": 1}],
                "conditions": [{"type": "Ready", "status": "True"}],
                "allocatable": {"cpu": "4"},
                "nodeInfo": {"kubeletVersion": "v1.33.0", "architecture": "amd64", "bootID": "",
                             "containerRuntimeVersion": "", "kernelVersion": "", "kubeProxyVersion": "",
                             "machineID": "", "operatingSystem": "linux", "osImage": "", "systemUUID": ""}
            },
            "spec": {"podCIDR": "10.42.0.0/24", "taints": [{"key": "k", "effect": "NoSchedule"}]}
        }))
        .unwrap();
        trim_node(&mut n);
        let status = n.status.as_ref().unwrap();
        assert!(status.images.is_none() && status.allocatable.is_none());
        assert_eq!(status.conditions.as_ref().unwrap()[0].type_, "Ready");
        assert!(status.node_info.is_none());
        let spec = n.spec.as_ref().unwrap();
        assert_eq!(spec.pod_cidr.as_deref(), Some("10.42.0.0/24"));
        assert_eq!(spec.taints.as_ref().unwrap()[0].key, "k");
        assert_eq!(n.metadata.labels.as_ref().unwrap()["zone"], "a");
    }

    #[tokio::test]
    async fn subscribers_start_from_the_cache_then_follow() {
        let (tx, informer) = fed();
        tx.send(watcher::Event::Init).unwrap();
        tx.send(watcher::Event::InitApply(pod("a", "1"))).unwrap();
        tx.send(watcher::Event::InitDone).unwrap();
        let store = informer.store().await;
        assert_eq!(store.state().len(), 1);

        let mut sub = Box::pin(informer.subscribe());
        assert_eq!(next(&mut sub).await, "Init");
        assert_eq!(next(&mut sub).await, "InitApply a@1");
        assert_eq!(next(&mut sub).await, "InitDone");
        tx.send(watcher::Event::Apply(pod("b", "2"))).unwrap();
        tx.send(watcher::Event::Delete(pod("a", "3"))).unwrap();
        assert_eq!(next(&mut sub).await, "Apply b@2");
        assert_eq!(next(&mut sub).await, "Delete a@3");
        // The cache saw the same.
        let names: Vec<String> = store
            .state()
            .iter()
            .map(|p| p.metadata.name.clone().unwrap())
            .collect();
        assert_eq!(names, vec!["b".to_string()]);
        // Objects are the store's, not copies.
        let stored = store.get(&ObjectRef::new("b").within("ns")).unwrap();
        let mut late = Box::pin(informer.subscribe());
        assert_eq!(next(&mut late).await, "Init");
        match late.next().await {
            Some(Ok(watcher::Event::InitApply(p))) => assert!(Arc::ptr_eq(&p, &stored)),
            _ => panic!("expected the cached pod"),
        }
    }

    #[tokio::test]
    async fn a_subscriber_that_falls_behind_gets_the_cache_again() {
        let (tx, informer) = fed();
        tx.send(watcher::Event::Init).unwrap();
        tx.send(watcher::Event::InitDone).unwrap();
        informer.wait_synced().await;
        let mut sub = Box::pin(informer.subscribe());
        assert_eq!(next(&mut sub).await, "Init");
        assert_eq!(next(&mut sub).await, "InitDone");
        // More than the channel holds (4), while the subscriber is not reading.
        for i in 0..10 {
            tx.send(watcher::Event::Apply(pod(&format!("p{i}"), "1")))
                .unwrap();
        }
        // Let the informer apply them all.
        while informer.store.state().len() < 10 {
            tokio::task::yield_now().await;
        }
        assert_eq!(next(&mut sub).await, "Init");
        let mut listed = Vec::new();
        loop {
            let e = next(&mut sub).await;
            if e == "InitDone" {
                break;
            }
            listed.push(e);
        }
        listed.sort();
        let mut want: Vec<String> = (0..10).map(|i| format!("InitApply p{i}@1")).collect();
        want.sort();
        assert_eq!(listed, want);
    }

    #[tokio::test]
    async fn a_subscriber_joining_during_a_relist_sees_it_whole() {
        let (tx, informer) = fed();
        tx.send(watcher::Event::Init).unwrap();
        tx.send(watcher::Event::InitApply(pod("old", "1"))).unwrap();
        tx.send(watcher::Event::InitDone).unwrap();
        informer.wait_synced().await;
        // A re-list starts and is half done when a subscriber joins.
        tx.send(watcher::Event::Init).unwrap();
        tx.send(watcher::Event::InitApply(pod("a", "5"))).unwrap();
        while informer
            .shared
            .lock()
            .unwrap()
            .relisting
            .as_ref()
            .is_none_or(|r| r.is_empty())
        {
            tokio::task::yield_now().await;
        }
        let mut sub = Box::pin(informer.subscribe());
        assert_eq!(next(&mut sub).await, "Init");
        assert_eq!(next(&mut sub).await, "InitApply a@5");
        tx.send(watcher::Event::InitApply(pod("b", "6"))).unwrap();
        tx.send(watcher::Event::InitDone).unwrap();
        assert_eq!(next(&mut sub).await, "InitApply b@6");
        assert_eq!(next(&mut sub).await, "InitDone");
        let store = informer.store().await;
        let mut names: Vec<String> = store
            .state()
            .iter()
            .map(|p| p.metadata.name.clone().unwrap())
            .collect();
        names.sort();
        assert_eq!(names, vec!["a".to_string(), "b".to_string()]);
    }
}
