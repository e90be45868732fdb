//! The watch cache: every object of every resource, held in memory as serialized JSON, fed by
//! one watch on the store. Lists, gets and watches are served from here, so the store sees
//! only writes (and the initial list at start).
//!
//! Objects are kept as bytes (with `metadata.resourceVersion` filled in) plus the little that
//! selectors need (labels, selectable fields): parsed JSON trees would cost several times the
//! memory.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use api::ResourceInfo;
use api::fields::FieldSet;
use bytes::Bytes;
use futures::StreamExt;
use serde_json::{Map, Value};
use store::{EventKind, KeyValue, RangeRequest, Revision, Store};
use tokio::sync::{broadcast, watch};

/// Most events each resource keeps for watches that resume from a resourceVersion.
const EVENT_WINDOW: usize = 10_000;
/// Most bytes of object JSON those events may hold per resource, beyond [`MIN_WINDOW`] events.
/// A busy resource of large objects (thousands of nodes posting heartbeats, pods changing
/// phase) would otherwise keep tens of MiB of superseded versions. Watchers resume from the
/// last event or bookmark they saw, seconds old, so a shorter window costs at worst a re-list.
const WINDOW_BYTES: usize = 4 << 20;
/// Fewest events each resource keeps, whatever their size.
const MIN_WINDOW: usize = 256;
/// Events whose encoded watch lines are kept for the next watcher that sends them. Live
/// watchers send an event soon after it happens; a watcher replaying older history encodes
/// its lines again rather than every event holding a second copy of its object.
const LINE_WINDOW: usize = 1_024;
/// Capacity of the live event channel of each resource; a watcher that falls this far behind
/// is closed (its client re-watches from its last resourceVersion).
const LIVE_CAPACITY: usize = 4_096;
/// How often the cache's size is logged (at debug level).
const STATS_INTERVAL: Duration = Duration::from_secs(10);

pub const REGISTRY_PREFIX: &str = "/registry/";

/// One object as the cache holds it.
#[derive(Debug)]
pub struct CachedObject {
    pub key: Box<str>,
    /// Storage-version JSON with `metadata.resourceVersion` set.
    pub json: Bytes,
    pub mod_revision: Revision,
    /// Shared with the object's previous version while they are the same (a node's heartbeats
    /// change neither), so the event window holds them once.
    pub labels: Arc<Map<String, Value>>,
    pub fields: Arc<FieldSet>,
}

impl CachedObject {
    /// Build from a stored value: parse once, stamp the resourceVersion, extract selector data.
    pub fn from_store(
        resource: &ResourceInfo,
        key: &str,
        value: &[u8],
        revision: Revision,
    ) -> Option<Self> {
        let mut obj: Value = match serde_json::from_slice(value) {
            Ok(v) => v,
            Err(e) => {
                tracing::error!(key, error = %e, "stored object is not valid JSON; skipped");
                return None;
            }
        };
        Some(Self::from_value(resource, key, &mut obj, revision))
    }

    pub fn from_value(
        resource: &ResourceInfo,
        key: &str,
        obj: &mut Value,
        revision: Revision,
    ) -> Self {
        if let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
            meta.insert(
                "resourceVersion".into(),
                Value::String(revision.to_string()),
            );
        }
        let labels = obj
            .pointer("/metadata/labels")
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default();
        let fields = api::fields::object_fields(resource, obj);
        let mut json = serde_json::to_vec(obj).expect("a JSON value always serializes");
        // `to_vec` grows by doubling: without this a quarter of the cache would be spare capacity.
        json.shrink_to_fit();
        let json = Bytes::from(json);
        CachedObject {
            key: key.into(),
            json,
            mod_revision: revision,
            labels: Arc::new(labels),
            fields: Arc::new(fields),
        }
    }

    /// Take `prev`'s selector data where it is equal to this version's.
    fn share_unchanged(&mut self, prev: &CachedObject) {
        if prev.labels == self.labels {
            self.labels = prev.labels.clone();
        }
        if prev.fields == self.fields {
            self.fields = prev.fields.clone();
        }
    }

    /// The object without its JSON: what a selector reads of an event's previous version,
    /// which need not keep a whole superseded copy alive.
    fn selector_view(&self) -> CachedObject {
        CachedObject {
            key: self.key.clone(),
            json: Bytes::new(),
            mod_revision: self.mod_revision,
            labels: self.labels.clone(),
            fields: self.fields.clone(),
        }
    }

    pub fn value(&self) -> Value {
        serde_json::from_slice(&self.json).expect("cached JSON is valid")
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    Added,
    Modified,
    Deleted,
}

impl EventType {
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Added => "ADDED",
            EventType::Modified => "MODIFIED",
            EventType::Deleted => "DELETED",
        }
    }
}

/// One change of one object. For a delete, `object` is the last state stamped with the
/// revision of the delete, as upstream sends it.
#[derive(Debug)]
pub struct WatchEvent {
    pub kind: EventType,
    pub object: Arc<CachedObject>,
    /// The previous version's labels and fields (its JSON left out), for selectors.
    pub prev: Option<Arc<CachedObject>>,
    pub revision: Revision,
    /// The event's JSON watch line for each type a watcher may see it as (selectors turn
    /// modifications into additions and deletions), made by the first watcher that sends it
    /// and shared by every other: one copy of the object per event, not one per watcher.
    /// Dropped once the event is [`LINE_WINDOW`] events old.
    lines: Mutex<Lines>,
}

#[derive(Debug, Default)]
struct Lines {
    encoded: [Option<Bytes>; 3],
    /// Too old to keep lines for.
    expired: bool,
}

impl WatchEvent {
    fn new(
        kind: EventType,
        object: Arc<CachedObject>,
        prev: Option<Arc<CachedObject>>,
        revision: Revision,
    ) -> WatchEvent {
        WatchEvent {
            kind,
            object,
            prev: prev.map(|p| Arc::new(p.selector_view())),
            revision,
            lines: Mutex::default(),
        }
    }

    /// The event's watch line as `kind`: the one already encoded, or `encode`'s (kept while
    /// the event is recent, for the other watchers).
    pub fn line(&self, kind: EventType, encode: impl FnOnce() -> Bytes) -> Bytes {
        let mut lines = self.lines.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(line) = &lines.encoded[kind as usize] {
            return line.clone();
        }
        let line = encode();
        if !lines.expired {
            lines.encoded[kind as usize] = Some(line.clone());
        }
        line
    }

    fn expire_lines(&self) {
        let mut lines = self.lines.lock().unwrap_or_else(|e| e.into_inner());
        lines.encoded = Default::default();
        lines.expired = true;
    }

    /// Bytes of encoded lines held (for the cache's size report).
    fn line_bytes(&self) -> usize {
        let lines = self.lines.lock().unwrap_or_else(|e| e.into_inner());
        lines.encoded.iter().flatten().map(Bytes::len).sum()
    }
}

struct ResourceCache {
    resource: &'static ResourceInfo,
    objects: BTreeMap<Box<str>, Arc<CachedObject>>,
    events: VecDeque<Arc<WatchEvent>>,
    /// JSON bytes of the objects of `events`.
    window_bytes: usize,
    /// Watches may resume from any revision >= this one.
    window_start: Revision,
    live: broadcast::Sender<Arc<WatchEvent>>,
}

impl ResourceCache {
    fn new(resource: &'static ResourceInfo) -> ResourceCache {
        let (live, _) = broadcast::channel(LIVE_CAPACITY);
        ResourceCache {
            resource,
            objects: BTreeMap::new(),
            events: VecDeque::new(),
            window_bytes: 0,
            window_start: 0,
            live,
        }
    }

    fn push(&mut self, event: Arc<WatchEvent>) {
        self.window_bytes += event.object.json.len();
        self.events.push_back(event.clone());
        while self.events.len() > EVENT_WINDOW
            || (self.window_bytes > WINDOW_BYTES && self.events.len() > MIN_WINDOW)
        {
            let Some(old) = self.events.pop_front() else {
                break;
            };
            self.window_bytes -= old.object.json.len();
            self.window_start = old.revision;
        }
        if let Some(aged) = self
            .events
            .len()
            .checked_sub(LINE_WINDOW + 1)
            .and_then(|i| self.events.get(i))
        {
            aged.expire_lines();
        }
        // No receivers is fine.
        let _ = self.live.send(event);
    }

    fn stats(&self) -> ResourceStats {
        let current: usize = self.objects.values().map(|o| o.json.len()).sum();
        // Versions only the event window still holds.
        let superseded: usize = self
            .events
            .iter()
            .flat_map(|e| std::iter::once(&e.object).chain(e.prev.as_ref()))
            .filter(|o| {
                self.objects
                    .get(&o.key)
                    .is_none_or(|cur| !Arc::ptr_eq(cur, o))
            })
            .map(|o| o.json.len())
            .sum();
        ResourceStats {
            resource: self.resource.storage,
            objects: self.objects.len(),
            object_bytes: current,
            events: self.events.len(),
            superseded_bytes: superseded,
            line_bytes: self.events.iter().map(|e| e.line_bytes()).sum(),
        }
    }
}

/// What the cache holds of one resource, in JSON bytes (for logs and tests).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourceStats {
    pub resource: &'static str,
    pub objects: usize,
    pub object_bytes: usize,
    pub events: usize,
    /// Older versions of objects that the event window alone keeps (counted once per event
    /// that holds them).
    pub superseded_bytes: usize,
    /// Encoded watch lines kept with recent events.
    pub line_bytes: usize,
}

/// A watch registered with the cache: events after its start revision, history first.
pub struct CacheWatch {
    pub backlog: Vec<Arc<WatchEvent>>,
    pub live: broadcast::Receiver<Arc<WatchEvent>>,
    /// Live events at or below this revision were already in the backlog.
    pub after: Revision,
}

pub struct Cache {
    resources: HashMap<&'static str, RwLock<ResourceCache>>,
    revision: watch::Sender<Revision>,
    store: Arc<dyn Store>,
}

#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error("too old resource version: {requested} ({oldest})")]
    TooOld {
        requested: Revision,
        oldest: Revision,
    },
    #[error("resource {0} is not cached")]
    Unknown(String),
}

impl Cache {
    /// List everything under `/registry/` and follow the store from there.
    pub async fn start(store: Arc<dyn Store>) -> Result<Arc<Cache>, store::StoreError> {
        let mut resources = HashMap::new();
        for r in api::resources::all().iter().filter(|r| r.storage_version) {
            resources.insert(r.storage, RwLock::new(ResourceCache::new(r)));
        }
        let listing = store.range(RangeRequest::prefix(REGISTRY_PREFIX)).await?;
        let revision = listing.revision;
        for kv in &listing.kvs {
            if let Some((storage, _)) = split_key(&kv.key)
                && let Some(rc) = resources.get(storage)
            {
                let mut rc = rc.write().unwrap();
                let resource = rc.resource;
                if let Some(obj) =
                    CachedObject::from_store(resource, &kv.key, &kv.value, kv.mod_revision)
                {
                    rc.objects.insert(kv.key.clone().into(), Arc::new(obj));
                }
            }
        }
        for rc in resources.values() {
            rc.write().unwrap().window_start = revision;
        }
        let (revision_tx, _) = watch::channel(revision);
        let cache = Arc::new(Cache {
            resources,
            revision: revision_tx,
            store,
        });
        tracing::info!(objects = listing.kvs.len(), revision, "watch cache filled");
        let follower = cache.clone();
        tokio::spawn(async move { follower.follow(revision).await });
        if tracing::enabled!(tracing::Level::DEBUG) {
            let reporter = Arc::downgrade(&cache);
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(STATS_INTERVAL);
                loop {
                    tick.tick().await;
                    let Some(cache) = reporter.upgrade() else {
                        return;
                    };
                    for s in cache.stats().iter().filter(|s| s.objects + s.events > 0) {
                        tracing::debug!(
                            resource = s.resource,
                            objects = s.objects,
                            object_bytes = s.object_bytes,
                            events = s.events,
                            superseded_bytes = s.superseded_bytes,
                            line_bytes = s.line_bytes,
                            "watch cache size"
                        );
                    }
                }
            });
        }
        Ok(cache)
    }

    async fn follow(self: Arc<Self>, mut revision: Revision) {
        loop {
            match self.store.watch(REGISTRY_PREFIX, revision).await {
                Ok(mut stream) => {
                    while let Some(batch) = stream.next().await {
                        match batch {
                            Ok(events) => {
                                for event in events {
                                    revision = revision.max(event.kv.mod_revision);
                                    self.apply(event);
                                }
                                self.revision.send_replace(revision);
                            }
                            Err(e) => {
                                tracing::warn!(error = %e, revision, "store watch ended; resynchronising");
                                break;
                            }
                        }
                    }
                }
                Err(e) => tracing::warn!(error = %e, revision, "cannot watch the store; retrying"),
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
            match self.resync().await {
                Ok(r) => revision = r,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot list the store to resynchronise; retrying")
                }
            }
        }
    }

    /// After a broken watch: list again and turn the differences into events.
    async fn resync(&self) -> Result<Revision, store::StoreError> {
        let listing = self
            .store
            .range(RangeRequest::prefix(REGISTRY_PREFIX))
            .await?;
        let revision = listing.revision;
        let mut seen: HashMap<&str, Vec<&KeyValue>> = HashMap::new();
        for kv in &listing.kvs {
            if let Some((storage, _)) = split_key(&kv.key) {
                seen.entry(storage).or_default().push(kv);
            }
        }
        for (storage, rc) in &self.resources {
            let mut rc = rc.write().unwrap();
            let current: HashMap<&str, &KeyValue> = seen
                .get(storage)
                .map(|kvs| kvs.iter().map(|kv| (kv.key.as_str(), *kv)).collect())
                .unwrap_or_default();
            let gone: Vec<Arc<CachedObject>> = rc
                .objects
                .values()
                .filter(|o| !current.contains_key(&*o.key))
                .cloned()
                .collect();
            for old in gone {
                rc.objects.remove(&old.key);
                let object = Arc::new(restamp(rc.resource, &old, revision));
                rc.push(Arc::new(WatchEvent::new(
                    EventType::Deleted,
                    object,
                    Some(old),
                    revision,
                )));
            }
            for (key, kv) in current {
                let prev = rc.objects.get(key).cloned();
                if prev
                    .as_ref()
                    .is_some_and(|p| p.mod_revision == kv.mod_revision)
                {
                    continue;
                }
                let resource = rc.resource;
                if let Some(obj) =
                    CachedObject::from_store(resource, key, &kv.value, kv.mod_revision)
                {
                    let object = Arc::new(obj);
                    rc.objects.insert(key.into(), object.clone());
                    let kind = if prev.is_some() {
                        EventType::Modified
                    } else {
                        EventType::Added
                    };
                    rc.push(Arc::new(WatchEvent::new(
                        kind,
                        object,
                        prev,
                        kv.mod_revision,
                    )));
                }
            }
        }
        self.revision.send_replace(revision);
        Ok(revision)
    }

    fn apply(&self, event: store::Event) {
        let Some((storage, _)) = split_key(&event.kv.key) else {
            return;
        };
        let Some(rc) = self.resources.get(storage) else {
            return;
        };
        let mut rc = rc.write().unwrap();
        let resource = rc.resource;
        let revision = event.kv.mod_revision;
        let prev = rc.objects.get(event.kv.key.as_str()).cloned();
        match event.kind {
            EventKind::Put => {
                let Some(mut obj) =
                    CachedObject::from_store(resource, &event.kv.key, &event.kv.value, revision)
                else {
                    return;
                };
                if let Some(prev) = &prev {
                    obj.share_unchanged(prev);
                }
                let object = Arc::new(obj);
                rc.objects
                    .insert(event.kv.key.as_str().into(), object.clone());
                let kind = if prev.is_some() {
                    EventType::Modified
                } else {
                    EventType::Added
                };
                rc.push(Arc::new(WatchEvent::new(kind, object, prev, revision)));
            }
            EventKind::Delete => {
                let Some(prev) = prev else { return };
                rc.objects.remove(event.kv.key.as_str());
                let object = Arc::new(restamp(resource, &prev, revision));
                rc.push(Arc::new(WatchEvent::new(
                    EventType::Deleted,
                    object,
                    Some(prev),
                    revision,
                )));
            }
        }
    }

    /// The revision the cache has caught up with.
    pub fn revision(&self) -> Revision {
        *self.revision.borrow()
    }

    /// Wait until the cache has seen `revision`; false on timeout.
    pub async fn wait_for(&self, revision: Revision, timeout: Duration) -> bool {
        let mut rx = self.revision.subscribe();
        let reached = tokio::time::timeout(timeout, rx.wait_for(|r| *r >= revision)).await;
        matches!(reached, Ok(Ok(_)))
    }

    /// Wait until the cache reflects everything the store has acknowledged (a consistent read).
    pub async fn sync(&self) -> Result<Revision, store::StoreError> {
        let (current, _) = self.store.revisions().await?;
        if !self.wait_for(current, Duration::from_secs(3)).await {
            tracing::warn!(
                current,
                cached = self.revision(),
                "watch cache is behind the store; serving what it has"
            );
        }
        Ok(self.revision())
    }

    fn resource(&self, resource: &ResourceInfo) -> &RwLock<ResourceCache> {
        self.resources
            .get(resource.storage)
            .expect("every storage resource has a cache")
    }

    pub fn get(&self, resource: &ResourceInfo, key: &str) -> Option<Arc<CachedObject>> {
        self.resource(resource)
            .read()
            .unwrap()
            .objects
            .get(key)
            .cloned()
    }

    /// Objects under `prefix` with keys after `start_after`, in key order, that pass `filter`;
    /// at most `limit` (0: all). Returns them, the revision, and whether more remain.
    pub fn list(
        &self,
        resource: &ResourceInfo,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
        filter: impl Fn(&CachedObject) -> bool,
    ) -> (Vec<Arc<CachedObject>>, Revision, bool) {
        let rc = self.resource(resource).read().unwrap();
        let revision = self.revision();
        let lower = match start_after {
            Some(after) => std::ops::Bound::Excluded(after),
            None => std::ops::Bound::Included(prefix),
        };
        let mut out = Vec::new();
        let mut more = false;
        for (key, obj) in rc
            .objects
            .range::<str, _>((lower, std::ops::Bound::Unbounded))
        {
            if !key.starts_with(prefix) {
                break;
            }
            if !filter(obj) {
                continue;
            }
            if limit > 0 && out.len() == limit {
                more = true;
                break;
            }
            out.push(obj.clone());
        }
        (out, revision, more)
    }

    /// Register a watch on a resource for events after `after`.
    pub fn watch(
        &self,
        resource: &ResourceInfo,
        after: Revision,
    ) -> Result<CacheWatch, CacheError> {
        let rc = self.resource(resource).read().unwrap();
        if after < rc.window_start {
            return Err(CacheError::TooOld {
                requested: after,
                oldest: rc.window_start,
            });
        }
        let live = rc.live.subscribe();
        let backlog: Vec<Arc<WatchEvent>> = rc
            .events
            .iter()
            .filter(|e| e.revision > after)
            .cloned()
            .collect();
        let after = backlog.last().map_or(after, |e| e.revision);
        Ok(CacheWatch {
            backlog,
            live,
            after,
        })
    }

    /// A snapshot of all objects of a resource under a prefix (for watches that start with the current state).
    pub fn snapshot(
        &self,
        resource: &ResourceInfo,
        prefix: &str,
    ) -> (Vec<Arc<CachedObject>>, CacheWatch) {
        let rc = self.resource(resource).read().unwrap();
        let revision = self.revision();
        let objects: Vec<Arc<CachedObject>> = rc
            .objects
            .range::<str, _>((
                std::ops::Bound::Included(prefix),
                std::ops::Bound::Unbounded,
            ))
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(_, o)| o.clone())
            .collect();
        let live = rc.live.subscribe();
        // Everything applied so far is reflected in `objects`.
        let after = rc
            .events
            .back()
            .map_or(revision, |e| e.revision.max(revision));
        (
            objects,
            CacheWatch {
                backlog: Vec::new(),
                live,
                after,
            },
        )
    }

    /// What the cache holds of every resource, by resource name.
    pub fn stats(&self) -> Vec<ResourceStats> {
        let mut stats: Vec<_> = self
            .resources
            .values()
            .map(|rc| rc.read().unwrap().stats())
            .collect();
        stats.sort_by_key(|s| s.resource);
        stats
    }

    /// Number of objects of every resource (for metrics).
    pub fn counts(&self) -> Vec<(&'static str, usize)> {
        let mut counts: Vec<_> = self
            .resources
            .iter()
            .map(|(s, rc)| (*s, rc.read().unwrap().objects.len()))
            .collect();
        counts.sort();
        counts
    }
}

/// A copy of an object with a new resourceVersion (deleted objects carry the delete's revision).
fn restamp(resource: &ResourceInfo, obj: &CachedObject, revision: Revision) -> CachedObject {
    let mut value = obj.value();
    CachedObject::from_value(resource, &obj.key, &mut value, revision)
}

/// `/registry/pods/ns/name` → (`pods`, `ns/name`).
pub fn split_key(key: &str) -> Option<(&str, &str)> {
    key.strip_prefix(REGISTRY_PREFIX)?.split_once('/')
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pods() -> &'static ResourceInfo {
        api::resources::all()
            .iter()
            .find(|r| r.storage == "pods" && r.storage_version)
            .expect("pods are a resource")
    }

    /// A pod whose JSON is about `size` bytes.
    fn pod(name: &str, size: usize, revision: Revision) -> Arc<CachedObject> {
        let mut obj = json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name, "namespace": "ns", "annotations": {"pad": "x".repeat(size)}},
        });
        let key = format!("/registry/pods/ns/{name}");
        Arc::new(CachedObject::from_value(pods(), &key, &mut obj, revision))
    }

    fn put(rc: &mut ResourceCache, name: &str, size: usize, revision: Revision) {
        let object = pod(name, size, revision);
        let prev = rc.objects.insert(object.key.clone(), object.clone());
        let kind = if prev.is_some() {
            EventType::Modified
        } else {
            EventType::Added
        };
        rc.push(Arc::new(WatchEvent::new(kind, object, prev, revision)));
    }

    #[test]
    fn cached_json_carries_the_resource_version() {
        let obj = pod("a", 10, 42);
        let value = obj.value();
        assert_eq!(value["metadata"]["resourceVersion"], "42");
        assert_eq!(obj.fields.get("metadata.name"), "a");
    }

    #[test]
    fn the_event_window_is_bounded_by_bytes_but_keeps_a_minimum() {
        // Events of 4 KiB: the byte budget, not the count, bounds the window.
        let mut rc = ResourceCache::new(pods());
        let n = 3 * WINDOW_BYTES / (4 << 10);
        assert!(n < EVENT_WINDOW);
        for i in 0..n {
            put(&mut rc, &format!("p{}", i % 10), 4 << 10, i as Revision + 1);
        }
        assert!(rc.events.len() > MIN_WINDOW && rc.events.len() < n / 2);
        let held: usize = rc.events.iter().map(|e| e.object.json.len()).sum();
        assert_eq!(held, rc.window_bytes);
        assert!(held <= WINDOW_BYTES, "{held} bytes held");
        assert!(held + (5 << 10) > WINDOW_BYTES, "only {held} bytes held");
        // Resuming is possible exactly from the revision before the oldest event kept.
        let oldest = rc.events.front().unwrap().revision;
        assert_eq!(rc.window_start, oldest - 1);

        // Events of 64 KiB: at least MIN_WINDOW of them anyway.
        let mut rc = ResourceCache::new(pods());
        for i in 0..2 * MIN_WINDOW {
            put(&mut rc, "p", 64 << 10, i as Revision + 1);
        }
        assert_eq!(rc.events.len(), MIN_WINDOW);
        assert_eq!(rc.window_start, MIN_WINDOW as Revision);

        // Small events: the count bounds it.
        let mut rc = ResourceCache::new(pods());
        for i in 0..EVENT_WINDOW + 10 {
            put(&mut rc, "p", 0, i as Revision + 1);
        }
        assert_eq!(rc.events.len(), EVENT_WINDOW);
        assert_eq!(rc.window_start, 10);
    }

    #[test]
    fn watch_lines_are_shared_while_recent_then_dropped() {
        let mut rc = ResourceCache::new(pods());
        put(&mut rc, "first", 100, 1);
        let first = rc.events[0].clone();
        let encoded = std::cell::Cell::new(0);
        let encode = || {
            encoded.set(encoded.get() + 1);
            Bytes::from_static(b"line\n")
        };
        assert_eq!(first.line(EventType::Added, encode), "line\n");
        assert_eq!(first.line(EventType::Added, encode), "line\n");
        assert_eq!(
            encoded.get(),
            1,
            "the second watcher shares the first one's line"
        );
        assert_eq!(first.line_bytes(), 5);

        // Still among the LINE_WINDOW newest events.
        for i in 0..LINE_WINDOW - 1 {
            put(&mut rc, "other", 10, i as Revision + 2);
        }
        assert_eq!(first.line_bytes(), 5, "still recent");
        put(&mut rc, "other", 10, LINE_WINDOW as Revision + 1);
        assert_eq!(first.line_bytes(), 0, "aged out");
        // An old event is encoded again for whoever replays it, and not kept.
        first.line(EventType::Added, encode);
        assert_eq!(encoded.get(), 2);
        assert_eq!(first.line_bytes(), 0);
    }

    #[test]
    fn stats_count_versions_only_the_window_holds() {
        let mut rc = ResourceCache::new(pods());
        put(&mut rc, "a", 100, 1);
        put(&mut rc, "a", 100, 2);
        let s = rc.stats();
        assert_eq!(s.objects, 1);
        assert_eq!(s.events, 2);
        let len = rc.objects.values().next().unwrap().json.len();
        assert_eq!(s.object_bytes, len);
        // The first version, held by the first event; the second's `prev` keeps only its
        // selector data.
        assert_eq!(s.superseded_bytes, rc.events[0].object.json.len());
        let prev = rc.events[1].prev.as_ref().unwrap();
        assert!(prev.json.is_empty());
        assert!(Arc::ptr_eq(&prev.fields, &rc.events[0].object.fields));
    }
}
