//! Small helpers several controllers share. Add here rather than copy between controllers.

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::Resource;

/// The owner reference with `controller: true`, if any.
pub fn controller_of(meta: &ObjectMeta) -> Option<&OwnerReference> {
    meta.owner_references
        .as_ref()?
        .iter()
        .find(|r| r.controller == Some(true))
}

/// An owner reference that makes `owner` the controller of what carries it.
pub fn controller_ref<K: Resource<DynamicType = ()>>(owner: &K) -> Option<OwnerReference> {
    let meta = owner.meta();
    Some(OwnerReference {
        api_version: K::api_version(&()).into_owned(),
        kind: K::kind(&()).into_owned(),
        name: meta.name.clone()?,
        uid: meta.uid.clone()?,
        controller: Some(true),
        block_owner_deletion: Some(true),
    })
}

/// Whether the pod's Ready condition is True.
pub fn is_pod_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// Not terminal and not being deleted: the pods a workload controller counts.
pub fn is_pod_active(pod: &Pod) -> bool {
    let phase = pod
        .status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("");
    phase != "Succeeded" && phase != "Failed" && pod.metadata.deletion_timestamp.is_none()
}

/// A deduplicating work queue in the manner of client-go's: a key queued twice is handed out
/// once, and a key is never handed to two workers at once (one added while it is being processed
/// comes back after [`WorkQueue::done`]). Failed keys come back with [`crate::backoff`].
pub struct WorkQueue<T> {
    state: std::sync::Mutex<QueueState<T>>,
    notify: tokio::sync::Notify,
}

struct QueueState<T> {
    queue: std::collections::VecDeque<T>,
    /// Keys waiting in `queue`, or to be queued again once their processing is done.
    dirty: std::collections::HashSet<T>,
    processing: std::collections::HashSet<T>,
    failures: std::collections::HashMap<T, u32>,
}

impl<T: Clone + Eq + std::hash::Hash + Send + Sync + 'static> WorkQueue<T> {
    pub fn new() -> std::sync::Arc<Self> {
        std::sync::Arc::new(WorkQueue {
            state: std::sync::Mutex::new(QueueState {
                queue: Default::default(),
                dirty: Default::default(),
                processing: Default::default(),
                failures: Default::default(),
            }),
            notify: tokio::sync::Notify::new(),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, QueueState<T>> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn add(&self, key: T) {
        let mut state = self.lock();
        if !state.dirty.insert(key.clone()) || state.processing.contains(&key) {
            return;
        }
        state.queue.push_back(key);
        drop(state);
        self.notify.notify_one();
    }

    /// Queue `key` after `delay`.
    pub fn add_after(self: &std::sync::Arc<Self>, key: T, delay: std::time::Duration) {
        let queue = std::sync::Arc::downgrade(self);
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            if let Some(queue) = queue.upgrade() {
                queue.add(key);
            }
        });
    }

    /// Queue `key` again after a delay that grows with its consecutive failures.
    pub fn add_rate_limited(self: &std::sync::Arc<Self>, key: T) {
        let attempt = {
            let mut state = self.lock();
            let failures = state.failures.entry(key.clone()).or_insert(0);
            *failures += 1;
            *failures - 1
        };
        self.add_after(key, crate::backoff(attempt));
    }

    /// Clear the failure count of `key`.
    pub fn forget(&self, key: &T) {
        self.lock().failures.remove(key);
    }

    /// The next key to process; call [`WorkQueue::done`] when finished with it.
    pub async fn get(&self) -> T {
        loop {
            {
                let mut state = self.lock();
                if let Some(key) = state.queue.pop_front() {
                    state.dirty.remove(&key);
                    state.processing.insert(key.clone());
                    return key;
                }
            }
            self.notify.notified().await;
        }
    }

    pub fn done(&self, key: &T) {
        let mut state = self.lock();
        state.processing.remove(key);
        if state.dirty.contains(key) {
            state.queue.push_back(key.clone());
            drop(state);
            self.notify.notify_one();
        }
    }

    /// Keys waiting to be processed.
    pub fn len(&self) -> usize {
        self.lock().queue.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// What a worker decided about a key.
pub enum Outcome {
    /// Done; nothing more until the key is queued again.
    Done,
    /// Look again after this delay.
    After(std::time::Duration),
    /// Failed; retry with backoff.
    Retry,
}

/// Run `workers` tasks taking keys from `queue` and handing them to `sync`, forever.
pub async fn run_workers<T, F, Fut>(queue: std::sync::Arc<WorkQueue<T>>, workers: usize, sync: F)
where
    T: Clone + Eq + std::hash::Hash + Send + Sync + 'static,
    F: Fn(T) -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = Outcome> + Send + 'static,
{
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..workers.max(1) {
        let queue = queue.clone();
        let sync = sync.clone();
        tasks.spawn(async move {
            loop {
                let key = queue.get().await;
                match sync(key.clone()).await {
                    Outcome::Done => queue.forget(&key),
                    Outcome::After(delay) => {
                        queue.forget(&key);
                        queue.add_after(key.clone(), delay);
                    }
                    Outcome::Retry => queue.add_rate_limited(key.clone()),
                }
                queue.done(&key);
            }
        });
    }
    while tasks.join_next().await.is_some() {}
}

/// The label pods carry naming the revision of their controller's template they were made from
/// (StatefulSet and DaemonSet; upstream `controller-revision-hash`).
pub const CONTROLLER_REVISION_HASH_LABEL: &str = "controller-revision-hash";

/// The label on a ControllerRevision carrying the hash of its data (upstream
/// `controller.kubernetes.io/hash`).
pub const REVISION_DATA_HASH_LABEL: &str = "controller.kubernetes.io/hash";

/// 32-bit FNV-1 (upstream's `fnv.New32`, used to name ControllerRevisions).
pub fn fnv32(parts: &[&[u8]]) -> u32 {
    let mut hash: u32 = 0x811c_9dc5;
    for byte in parts.iter().flat_map(|p| p.iter()) {
        hash = hash.wrapping_mul(0x0100_0193);
        hash ^= u32::from(*byte);
    }
    hash
}

/// 32-bit FNV-1a (upstream's `fnv.New32a`, used for template hashes).
pub fn fnv32a(parts: &[&[u8]]) -> u32 {
    let mut hash: u32 = 0x811c_9dc5;
    for byte in parts.iter().flat_map(|p| p.iter()) {
        hash ^= u32::from(*byte);
        hash = hash.wrapping_mul(0x0100_0193);
    }
    hash
}

/// Upstream's `rand.SafeEncodeString`: maps every byte onto consonants and digits so that a
/// hash cannot spell words, and stays a valid label value and name suffix.
pub fn safe_encode_string(s: &str) -> String {
    const ALPHANUMS: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    s.bytes()
        .map(|b| ALPHANUMS[usize::from(b) % ALPHANUMS.len()] as char)
        .collect()
}

/// Whether the pod has been Ready for at least `min_ready_seconds` at `now` (upstream
/// `podutil.IsPodAvailable`).
pub fn is_pod_available(
    pod: &Pod,
    min_ready_seconds: i32,
    now: k8s_openapi::jiff::Timestamp,
) -> bool {
    let Some(ready) = pod
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.type_ == "Ready"))
    else {
        return false;
    };
    if ready.status != "True" {
        return false;
    }
    if min_ready_seconds <= 0 {
        return true;
    }
    match &ready.last_transition_time {
        Some(t) => {
            t.0.checked_add(k8s_openapi::jiff::SignedDuration::from_secs(i64::from(
                min_ready_seconds,
            )))
            .is_ok_and(|available_at| available_at < now)
        }
        None => false,
    }
}

/// Record an Event about `object` in the background (as upstream's event broadcaster does, a
/// failure to record never fails a sync). A fresh `Recorder` each time: kube's recorder folds
/// events with the same reason into a series that keeps the first note, which would lose
/// messages such as "Scaled down replica set ... from 3 to 2".
pub fn record_event<K: Resource<DynamicType = ()>>(
    client: &kube::Client,
    reporter: &kube::runtime::events::Reporter,
    object: &K,
    type_: kube::runtime::events::EventType,
    reason: &str,
    action: &str,
    note: String,
) {
    let recorder = kube::runtime::events::Recorder::new(client.clone(), reporter.clone());
    let reference = object.object_ref(&());
    let event = kube::runtime::events::Event {
        type_,
        reason: reason.into(),
        note: Some(note),
        action: action.into(),
        secondary: None,
    };
    tokio::spawn(async move {
        if let Err(error) = recorder.publish(&event, &reference).await {
            tracing::debug!(%error, reason = %event.reason, "recording an event");
        }
    });
}

/// Which objects each owner controls, by owner uid, kept up to date from a watch of the owned
/// kind so a sync finds its children without scanning the whole cache. Entries are checked
/// against the cache on read (and dropped once gone or no longer controlled by that owner).
#[derive(Default)]
pub struct OwnerIndex {
    owned: std::sync::Mutex<
        std::collections::HashMap<String, std::collections::HashSet<(String, String)>>,
    >,
}

impl OwnerIndex {
    /// Note `object` under its controller, if that is of `owner_kind`; the controller reference.
    pub fn observe<K: Resource>(&self, object: &K, owner_kind: &str) -> Option<OwnerReference> {
        let meta = object.meta();
        let owner = controller_of(meta)?;
        if owner.kind != owner_kind {
            return None;
        }
        self.owned
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(owner.uid.clone())
            .or_default()
            .insert((
                meta.namespace.clone().unwrap_or_default(),
                meta.name.clone().unwrap_or_default(),
            ));
        Some(owner.clone())
    }

    /// Forget an owner that is gone; the keys it had.
    pub fn remove_owner(&self, owner_uid: &str) -> Vec<(String, String)> {
        self.owned
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(owner_uid)
            .map(|s| s.into_iter().collect())
            .unwrap_or_default()
    }

    /// The cached objects in `namespace` the owner (by uid) controls.
    pub fn owned_by<K>(
        &self,
        store: &kube::runtime::reflector::Store<K>,
        namespace: &str,
        owner_uid: &str,
    ) -> Vec<std::sync::Arc<K>>
    where
        K: Resource<DynamicType = ()>
            + kube::runtime::reflector::Lookup<DynamicType = ()>
            + Clone
            + 'static,
    {
        let mut all = self.owned.lock().unwrap_or_else(|e| e.into_inner());
        let Some(keys) = all.get_mut(owner_uid) else {
            return Vec::new();
        };
        let mut out = Vec::with_capacity(keys.len());
        keys.retain(|(ns, name)| {
            let Some(object) =
                store.get(&kube::runtime::reflector::ObjectRef::new(name).within(ns))
            else {
                return false;
            };
            let owned =
                ns == namespace && controller_of(object.meta()).is_some_and(|o| o.uid == owner_uid);
            if owned {
                out.push(object);
            }
            owned
        });
        out
    }
}

/// Whether any of the node selector terms matches a node with this name and these labels
/// (upstream `MatchNodeSelectorTerms`): a term holds when all its label expressions and field
/// requirements (only `metadata.name`) do; a term with neither matches nothing.
pub fn node_selector_terms_match(
    terms: &[k8s_openapi::api::core::v1::NodeSelectorTerm],
    node_name: &str,
    labels: &std::collections::BTreeMap<String, String>,
) -> bool {
    fn requirement(
        req: &k8s_openapi::api::core::v1::NodeSelectorRequirement,
        value: Option<&str>,
    ) -> bool {
        let values = req.values.as_deref().unwrap_or_default();
        match req.operator.as_str() {
            "In" => value.is_some_and(|v| values.iter().any(|x| x == v)),
            "NotIn" => !value.is_some_and(|v| values.iter().any(|x| x == v)),
            "Exists" => value.is_some(),
            "DoesNotExist" => value.is_none(),
            "Gt" | "Lt" => {
                let (Some(v), Some(bound)) = (
                    value.and_then(|v| v.parse::<i64>().ok()),
                    values.first().and_then(|b| b.parse::<i64>().ok()),
                ) else {
                    return false;
                };
                if req.operator == "Gt" {
                    v > bound
                } else {
                    v < bound
                }
            }
            _ => false,
        }
    }
    terms.iter().any(|term| {
        let expressions = term.match_expressions.as_deref().unwrap_or_default();
        let fields = term.match_fields.as_deref().unwrap_or_default();
        (!expressions.is_empty() || !fields.is_empty())
            && expressions
                .iter()
                .all(|r| requirement(r, labels.get(&r.key).map(String::as_str)))
            && fields
                .iter()
                .all(|r| r.key == "metadata.name" && requirement(r, Some(node_name)))
    })
}
