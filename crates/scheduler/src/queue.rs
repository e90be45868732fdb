//! The scheduling queue, as upstream's `PriorityQueue`: pods to try now (activeQ, by priority
//! then age), pods waiting out their backoff after a failure (backoffQ), and pods that fit
//! nowhere (unschedulable) until a cluster event that may help them, or a periodic flush.

use std::cmp::Ordering;
use std::collections::{BTreeSet, BinaryHeap, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::framework::PodInfo;
use crate::plugins;

/// The first retry after a failure waits this long…
pub const INITIAL_BACKOFF: Duration = Duration::from_secs(1);
/// …doubling up to this.
pub const MAX_BACKOFF: Duration = Duration::from_secs(10);
/// Unschedulable pods are retried at least this often even without a helpful event.
pub const MAX_IN_UNSCHEDULABLE: Duration = Duration::from_secs(60);

/// Backoff after `attempts` failed attempts: 1 s, 2 s, 4 s, 8 s, 10 s, 10 s…
pub fn backoff_duration(attempts: u32) -> Duration {
    let exp = attempts.saturating_sub(1).min(16);
    INITIAL_BACKOFF.saturating_mul(1 << exp).min(MAX_BACKOFF)
}

/// A cluster change that may make unschedulable pods schedulable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ClusterEvent {
    NodeAdd,
    NodeUpdate,
    /// A bound pod was deleted (or finished): resources, ports and spread counts free up.
    AssignedPodDelete,
    /// A pod was bound or its labels changed: affinity and spread may now be satisfied.
    AssignedPodAddOrUpdate,
    /// The periodic flush, or anything else: every pod moves.
    Other,
    /// A PersistentVolumeClaim, PersistentVolume or StorageClass changed.
    StorageChange,
}

/// Whether `event` can help a pod rejected by `plugin` (upstream's EventsToRegister).
pub fn plugin_interested(plugin: &str, event: ClusterEvent) -> bool {
    use ClusterEvent::*;
    match event {
        NodeAdd | NodeUpdate | Other => true,
        AssignedPodDelete => matches!(
            plugin,
            plugins::node_resources_fit::NAME
                | plugins::node_ports::NAME
                | plugins::inter_pod_affinity::NAME
                | plugins::pod_topology_spread::NAME
                | plugins::default_preemption::NAME
                | plugins::volume_binding::NAME
        ),
        AssignedPodAddOrUpdate => matches!(
            plugin,
            plugins::inter_pod_affinity::NAME | plugins::pod_topology_spread::NAME
        ),
        StorageChange => plugin == plugins::volume_binding::NAME,
    }
}

/// A pod in the queue with its scheduling history.
#[derive(Debug, Clone)]
pub struct QueuedPodInfo {
    pub pod: Arc<PodInfo>,
    /// When it was (re)queued: the active queue serves equal priorities oldest first.
    pub timestamp: Instant,
    /// When it was first seen, for the end-to-end latency metric.
    pub initial_attempt: Instant,
    pub attempts: u32,
    /// Plugins that rejected it last time; only events they care about move it.
    pub unschedulable_plugins: BTreeSet<&'static str>,
    /// The backoff is computed from when the last attempt failed.
    last_failure: Option<Instant>,
}

impl QueuedPodInfo {
    pub fn new(pod: Arc<PodInfo>, now: Instant) -> QueuedPodInfo {
        QueuedPodInfo {
            pod,
            timestamp: now,
            initial_attempt: now,
            attempts: 0,
            unschedulable_plugins: BTreeSet::new(),
            last_failure: None,
        }
    }

    fn backoff_expiry(&self) -> Option<Instant> {
        self.last_failure
            .map(|t| t + backoff_duration(self.attempts))
    }
}

struct ActiveEntry {
    priority: i32,
    timestamp: Instant,
    seq: u64,
    key: String,
}

impl PartialEq for ActiveEntry {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for ActiveEntry {}
impl PartialOrd for ActiveEntry {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for ActiveEntry {
    /// The max-heap pops the highest priority, then the oldest, then the first pushed.
    fn cmp(&self, other: &Self) -> Ordering {
        self.priority
            .cmp(&other.priority)
            .then_with(|| other.timestamp.cmp(&self.timestamp))
            .then_with(|| other.seq.cmp(&self.seq))
    }
}

#[derive(PartialEq, Eq)]
struct BackoffEntry {
    expiry: Instant,
    seq: u64,
    key: String,
}
impl PartialOrd for BackoffEntry {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for BackoffEntry {
    /// Earliest expiry on top of the max-heap.
    fn cmp(&self, other: &Self) -> Ordering {
        other
            .expiry
            .cmp(&self.expiry)
            .then_with(|| other.seq.cmp(&self.seq))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Where {
    Active,
    Backoff,
    Unschedulable,
    /// Popped and being scheduled.
    InFlight,
}

struct Entry {
    info: QueuedPodInfo,
    place: Where,
    /// Matches the heap entry that is current (older heap entries are stale and skipped).
    seq: u64,
    unschedulable_since: Option<Instant>,
}

#[derive(Default)]
pub struct SchedulingQueue {
    entries: HashMap<String, Entry>,
    /// Keys of the pods in the unschedulable pool (so events do not scan the whole queue).
    unschedulable: HashSet<String>,
    active: BinaryHeap<ActiveEntry>,
    backoff: BinaryHeap<BackoffEntry>,
    seq: u64,
    /// Incremented by every pop: identifies scheduling cycles.
    scheduling_cycle: u64,
    /// The cycle during which the last move request (cluster event) arrived.
    move_request_cycle: u64,
}

impl SchedulingQueue {
    pub fn new() -> SchedulingQueue {
        SchedulingQueue::default()
    }

    fn next_seq(&mut self) -> u64 {
        self.seq += 1;
        self.seq
    }

    fn push_active(&mut self, key: &str, now: Instant) {
        let seq = self.next_seq();
        self.unschedulable.remove(key);
        let Some(e) = self.entries.get_mut(key) else {
            return;
        };
        e.place = Where::Active;
        e.seq = seq;
        e.unschedulable_since = None;
        e.info.timestamp = now;
        self.active.push(ActiveEntry {
            priority: e.info.pod.priority,
            timestamp: now,
            seq,
            key: key.to_string(),
        });
    }

    fn push_backoff(&mut self, key: &str, expiry: Instant) {
        let seq = self.next_seq();
        self.unschedulable.remove(key);
        let Some(e) = self.entries.get_mut(key) else {
            return;
        };
        e.place = Where::Backoff;
        e.seq = seq;
        e.unschedulable_since = None;
        self.backoff.push(BackoffEntry {
            expiry,
            seq,
            key: key.to_string(),
        });
    }

    /// Move a pod to the active queue, or to backoff if it is still backing off.
    fn requeue(&mut self, key: &str, now: Instant) {
        let expiry = self.entries.get(key).and_then(|e| e.info.backoff_expiry());
        match expiry {
            Some(t) if t > now => self.push_backoff(key, t),
            _ => self.push_active(key, now),
        }
    }

    /// A new pending pod.
    pub fn add(&mut self, pod: Arc<PodInfo>, now: Instant) {
        let key = pod.key.clone();
        if let Some(e) = self.entries.get_mut(&key) {
            e.info.pod = pod;
            return;
        }
        self.entries.insert(
            key.clone(),
            Entry {
                info: QueuedPodInfo::new(pod, now),
                place: Where::Active,
                seq: 0,
                unschedulable_since: None,
            },
        );
        self.push_active(&key, now);
    }

    /// The pending pod changed: keep its place, but an unschedulable pod gets another try
    /// (its spec may now fit).
    pub fn update(&mut self, pod: Arc<PodInfo>, now: Instant) {
        let key = pod.key.clone();
        let Some(e) = self.entries.get_mut(&key) else {
            self.add(pod, now);
            return;
        };
        let spec_changed = e.info.pod.pod.spec != pod.pod.spec
            || e.info.pod.pod.metadata.labels != pod.pod.metadata.labels;
        let priority_changed = e.info.pod.priority != pod.priority;
        e.info.pod = pod;
        match e.place {
            Where::Unschedulable if spec_changed => self.requeue(&key, now),
            Where::Active if priority_changed => self.push_active(&key, now),
            _ => {}
        }
    }

    pub fn delete(&mut self, key: &str) {
        // Heap entries become stale and are skipped when they surface.
        self.entries.remove(key);
        self.unschedulable.remove(key);
    }

    pub fn contains(&self, key: &str) -> bool {
        self.entries.contains_key(key)
    }

    pub fn place(&self, key: &str) -> Option<Where> {
        self.entries.get(key).map(|e| e.place)
    }

    /// The next pod to schedule (marked in flight), if any is active.
    pub fn pop(&mut self) -> Option<QueuedPodInfo> {
        while let Some(top) = self.active.pop() {
            let Some(e) = self.entries.get_mut(&top.key) else {
                continue;
            };
            if e.seq != top.seq || e.place != Where::Active {
                continue;
            }
            e.place = Where::InFlight;
            e.info.attempts += 1;
            self.scheduling_cycle += 1;
            return Some(e.info.clone());
        }
        None
    }

    pub fn scheduling_cycle(&self) -> u64 {
        self.scheduling_cycle
    }

    pub fn active_len(&self) -> usize {
        self.entries
            .values()
            .filter(|e| e.place == Where::Active)
            .count()
    }

    pub fn has_active(&self) -> bool {
        // Cheap check: stale entries may make this true spuriously; pop handles that.
        !self.active.is_empty()
    }

    pub fn unschedulable_len(&self) -> usize {
        self.unschedulable.len()
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The pod was scheduled (assumed and sent to bind): it leaves the queue.
    pub fn done(&mut self, key: &str) {
        if self
            .entries
            .get(key)
            .is_some_and(|e| e.place == Where::InFlight)
        {
            self.entries.remove(key);
        }
    }

    /// The attempt failed. Unschedulable pods wait for an event, unless one arrived while the
    /// pod was being scheduled (then it backs off); errors back off.
    pub fn add_unschedulable(
        &mut self,
        info: QueuedPodInfo,
        pod_cycle: u64,
        unschedulable_plugins: BTreeSet<&'static str>,
        is_error: bool,
        now: Instant,
    ) {
        let key = info.pod.key.clone();
        let Some(e) = self.entries.get_mut(&key) else {
            // Deleted while in flight.
            return;
        };
        if e.place != Where::InFlight {
            return;
        }
        // Keep the newest pod object (an update may have arrived meanwhile).
        let newest = e.info.pod.clone();
        e.info = info;
        e.info.pod = newest;
        e.info.last_failure = Some(now);
        e.info.unschedulable_plugins = unschedulable_plugins;
        if is_error || self.move_request_cycle >= pod_cycle {
            let expiry = now + backoff_duration(e.info.attempts);
            self.push_backoff(&key, expiry);
        } else {
            e.place = Where::Unschedulable;
            e.unschedulable_since = Some(now);
            self.unschedulable.insert(key);
        }
    }

    /// A cluster event: move the unschedulable pods it may help.
    pub fn move_all_to_active_or_backoff(&mut self, event: ClusterEvent, now: Instant) {
        let keys: Vec<String> = self
            .unschedulable
            .iter()
            .filter_map(|k| self.entries.get_key_value(k))
            .filter(|(_, e)| {
                e.info.unschedulable_plugins.is_empty()
                    || e.info
                        .unschedulable_plugins
                        .iter()
                        .any(|p| plugin_interested(p, event))
            })
            .map(|(k, _)| k.clone())
            .collect();
        for key in keys {
            self.requeue(&key, now);
        }
        self.move_request_cycle = self.scheduling_cycle;
    }

    /// Move pods whose backoff has expired to the active queue.
    pub fn flush_backoff_completed(&mut self, now: Instant) {
        while let Some(top) = self.backoff.peek() {
            if top.expiry > now {
                break;
            }
            let top = self.backoff.pop().expect("peeked");
            if self
                .entries
                .get(&top.key)
                .is_some_and(|e| e.seq == top.seq && e.place == Where::Backoff)
            {
                self.push_active(&top.key, now);
            }
        }
    }

    /// Retry pods unschedulable for longer than [`MAX_IN_UNSCHEDULABLE`].
    pub fn flush_unschedulable_left_over(&mut self, now: Instant) {
        let keys: Vec<String> = self
            .unschedulable
            .iter()
            .filter_map(|k| self.entries.get_key_value(k))
            .filter(|(_, e)| {
                e.place == Where::Unschedulable
                    && e.unschedulable_since
                        .is_some_and(|t| now.duration_since(t) >= MAX_IN_UNSCHEDULABLE)
            })
            .map(|(k, _)| k.clone())
            .collect();
        for key in keys {
            self.requeue(&key, now);
        }
    }

    /// When the earliest backoff expires (to sleep until then).
    pub fn next_backoff_expiry(&self) -> Option<Instant> {
        self.backoff.peek().map(|e| e.expiry)
    }

    /// Pending pods (not in flight) nominated to nodes, for the nominator.
    pub fn pods(&self) -> impl Iterator<Item = &Arc<PodInfo>> {
        self.entries.values().map(|e| &e.info.pod)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugins::testutil::pod_info;
    use serde_json::json;

    fn p(name: &str, priority: i32) -> Arc<PodInfo> {
        pod_info(
            json!({"metadata": {"name": name}, "spec": {"priority": priority, "containers": [{"name": "c", "image": "i"}]}}),
        )
    }

    #[test]
    fn backoff_doubles_to_ten_seconds() {
        let got: Vec<u64> = (1..=6).map(|a| backoff_duration(a).as_secs()).collect();
        assert_eq!(got, vec![1, 2, 4, 8, 10, 10]);
    }

    #[test]
    fn active_order_is_priority_then_age() {
        let mut q = SchedulingQueue::new();
        let t = Instant::now();
        q.add(p("low", 0), t);
        q.add(p("high", 100), t + Duration::from_millis(1));
        q.add(p("low2", 0), t + Duration::from_millis(2));
        let order: Vec<String> = std::iter::from_fn(|| q.pop())
            .map(|i| i.pod.name.clone())
            .collect();
        assert_eq!(order, vec!["high", "low", "low2"]);
    }

    #[test]
    fn unschedulable_waits_for_a_relevant_event() {
        let mut q = SchedulingQueue::new();
        let t = Instant::now();
        q.add(p("a", 0), t);
        let info = q.pop().unwrap();
        let cycle = q.scheduling_cycle();
        q.add_unschedulable(
            info,
            cycle,
            [plugins::node_resources_fit::NAME].into(),
            false,
            t,
        );
        assert_eq!(q.place("default/a"), Some(Where::Unschedulable));
        assert!(q.pop().is_none());

        // A new bound pod does not help a resource shortage.
        q.move_all_to_active_or_backoff(ClusterEvent::AssignedPodAddOrUpdate, t);
        assert_eq!(q.place("default/a"), Some(Where::Unschedulable));

        // A deleted pod does; the pod is still backing off (1 s after its first failure).
        q.move_all_to_active_or_backoff(
            ClusterEvent::AssignedPodDelete,
            t + Duration::from_millis(100),
        );
        assert_eq!(q.place("default/a"), Some(Where::Backoff));
        q.flush_backoff_completed(t + Duration::from_millis(500));
        assert!(q.pop().is_none());
        q.flush_backoff_completed(t + Duration::from_millis(1001));
        let again = q.pop().unwrap();
        assert_eq!(again.attempts, 2);
    }

    #[test]
    fn event_during_the_attempt_means_backoff_not_unschedulable() {
        let mut q = SchedulingQueue::new();
        let t = Instant::now();
        q.add(p("a", 0), t);
        let info = q.pop().unwrap();
        let cycle = q.scheduling_cycle();
        q.move_all_to_active_or_backoff(ClusterEvent::NodeAdd, t);
        q.add_unschedulable(
            info,
            cycle,
            [plugins::node_resources_fit::NAME].into(),
            false,
            t,
        );
        assert_eq!(q.place("default/a"), Some(Where::Backoff));
    }

    #[test]
    fn periodic_flush_and_spec_updates() {
        let mut q = SchedulingQueue::new();
        let t = Instant::now();
        q.add(p("a", 0), t);
        let info = q.pop().unwrap();
        q.add_unschedulable(
            info,
            q.scheduling_cycle(),
            [plugins::taint_toleration::NAME].into(),
            false,
            t,
        );
        q.flush_unschedulable_left_over(t + Duration::from_secs(59));
        assert_eq!(q.place("default/a"), Some(Where::Unschedulable));
        q.flush_unschedulable_left_over(t + Duration::from_secs(60));
        assert_eq!(q.place("default/a"), Some(Where::Active));

        let info = q.pop().unwrap();
        q.add_unschedulable(
            info,
            q.scheduling_cycle(),
            [plugins::taint_toleration::NAME].into(),
            false,
            t,
        );
        // Adding a toleration (spec change) retries it.
        let updated = pod_info(
            json!({"metadata": {"name": "a"}, "spec": {"containers": [{"name": "c", "image": "i"}],
            "tolerations": [{"operator": "Exists"}]}}),
        );
        q.update(updated, t + Duration::from_secs(5));
        assert_eq!(q.place("default/a"), Some(Where::Active));
    }

    #[test]
    fn errors_back_off_and_deleted_pods_vanish() {
        let mut q = SchedulingQueue::new();
        let t = Instant::now();
        q.add(p("a", 0), t);
        q.add(p("b", 0), t);
        let a = q.pop().unwrap();
        q.add_unschedulable(a, q.scheduling_cycle(), BTreeSet::new(), true, t);
        assert_eq!(q.place("default/a"), Some(Where::Backoff));
        q.delete("default/b");
        assert!(q.pop().is_none());
        assert_eq!(q.next_backoff_expiry(), Some(t + Duration::from_secs(1)));
        q.done("default/a");
        assert!(q.contains("default/a"), "done only removes in-flight pods");
    }
}
