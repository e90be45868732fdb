//! The pure decisions of the ReplicaSet controller: which pods to claim, create or delete, and
//! what status to report. No IO here, so every rule is unit-tested.

use std::cmp::{Ordering, Reverse};
use std::collections::{BTreeMap, HashMap};
use std::future::Future;

use api::selector::LabelSelector;
use k8s_openapi::api::apps::v1::{ReplicaSetCondition, ReplicaSetStatus};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;

use crate::util::{controller_of, is_pod_available, is_pod_ready};

/// Upstream's `BurstReplicas`: at most this many pods created or deleted in one sync.
pub const BURST_REPLICAS: usize = 500;

/// Upstream's `SlowStartInitialBatchSize`.
pub const SLOW_START_INITIAL_BATCH_SIZE: usize = 1;

/// The annotation that lets users say which pods to delete first (lower cost first).
pub const POD_DELETION_COST: &str = "controller.kubernetes.io/pod-deletion-cost";

pub const REPLICA_FAILURE: &str = "ReplicaFailure";

/// The sizes of the batches `slow_start_batch` runs: 1, 2, 4, ... up to `count` in total.
pub fn slow_start_batches(count: usize, initial: usize) -> Vec<usize> {
    let mut batches = Vec::new();
    let mut remaining = count;
    let mut size = initial.max(1).min(remaining);
    while size > 0 {
        batches.push(size);
        remaining -= size;
        size = (2 * size).min(remaining);
    }
    batches
}

/// Call `f` `count` times in batches of doubling size, the calls of a batch concurrently, and
/// stop after the first batch with a failure, so that a systematic error (a quota, an admission
/// rejection) costs a handful of requests rather than hundreds. Returns the successes and the
/// first error.
pub async fn slow_start_batch<T, E, F, Fut>(
    count: usize,
    initial: usize,
    mut f: F,
) -> (Vec<T>, Option<E>)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let mut successes = Vec::with_capacity(count);
    for size in slow_start_batches(count, initial) {
        let results = futures::future::join_all((0..size).map(|_| f())).await;
        let mut first_error = None;
        for result in results {
            match result {
                Ok(v) => successes.push(v),
                Err(e) => {
                    if first_error.is_none() {
                        first_error = Some(e);
                    }
                }
            }
        }
        if first_error.is_some() {
            return (successes, first_error);
        }
    }
    (successes, None)
}

/// What claiming does with the active pods a controller can see.
#[derive(Debug, Default, PartialEq)]
pub struct Claim<'a> {
    /// Controlled and matching: ours.
    pub owned: Vec<&'a Pod>,
    /// Orphans that match the selector: to adopt.
    pub adopt: Vec<&'a Pod>,
    /// Controlled by us but no longer matching: to release.
    pub release: Vec<&'a Pod>,
}

/// Sort `pods` (candidates: the pods controlled by `owner_uid` and the namespace's orphans) as
/// upstream's `ControllerRefManager.ClaimPods` does. An owner being deleted adopts nothing.
pub fn claim<'a>(
    pods: impl IntoIterator<Item = &'a Pod>,
    owner_uid: &str,
    selector: &LabelSelector,
    owner_deleting: bool,
) -> Claim<'a> {
    let mut claim = Claim::default();
    let empty = BTreeMap::new();
    for pod in pods {
        let labels = pod.metadata.labels.as_ref().unwrap_or(&empty);
        let matches = selector.matches(labels);
        match controller_of(&pod.metadata) {
            Some(r) if r.uid == owner_uid => {
                if matches {
                    claim.owned.push(pod)
                } else {
                    claim.release.push(pod)
                }
            }
            Some(_) => {}
            None => {
                if matches && !owner_deleting && pod.metadata.deletion_timestamp.is_none() {
                    claim.adopt.push(pod)
                }
            }
        }
    }
    claim
}

fn phase_ordinal(pod: &Pod) -> u8 {
    match pod.status.as_ref().and_then(|s| s.phase.as_deref()) {
        Some("Pending") => 0,
        Some("Unknown") => 1,
        Some("Running") => 2,
        _ => 3,
    }
}

fn deletion_cost(pod: &Pod) -> i32 {
    pod.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(POD_DELETION_COST))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn ready_time(pod: &Pod) -> Option<Timestamp> {
    if !is_pod_ready(pod) {
        return None;
    }
    pod.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "Ready")?
        .last_transition_time
        .as_ref()
        .map(|t| t.0)
}

/// The highest restart count of the regular containers, then of restartable init containers.
fn max_restarts(pod: &Pod) -> (i32, i32) {
    let Some(status) = pod.status.as_ref() else {
        return (0, 0);
    };
    let regular = status
        .container_statuses
        .iter()
        .flatten()
        .map(|c| c.restart_count)
        .max()
        .unwrap_or(0);
    let sidecar = status
        .init_container_statuses
        .iter()
        .flatten()
        .map(|c| c.restart_count)
        .max()
        .unwrap_or(0);
    (regular, sidecar)
}

/// Upstream's logarithmic bucketing (LogarithmicScaleDown): times whose ages are within the same
/// power of two count as equal, so that scale-down does not always pick the very newest pods.
/// A missing time sorts first.
fn age_bucket(t: Option<Timestamp>, now: Timestamp) -> i64 {
    let Some(t) = t else { return i64::MIN };
    let age = now.as_nanosecond() - t.as_nanosecond();
    if age > 0 {
        (age as f64).log2() as i64
    } else {
        -1
    }
}

/// A pod's place in the deletion order, smallest first: upstream's `ActivePodsWithRanks.Less`
/// as a sort key. `rank` is how many related pods share the pod's node.
///
/// Upstream compares pairwise and, within one age bucket, jumps straight to the UID; that is
/// not a total order (Rust's sort rightly refuses such a comparator), so here times in the
/// same bucket are equal and the later criteria decide, the UID last.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct DeletionKey {
    /// 1. Unassigned before assigned.
    assigned: bool,
    /// 2. Pending before Unknown before Running.
    phase: u8,
    /// 3. Not ready before ready.
    ready: bool,
    /// 4. Lower deletion cost first.
    cost: i32,
    /// 5. Doubled up (more related pods on the same node) first.
    rank: Reverse<usize>,
    /// 6. Ready for a shorter time first (both ready).
    ready_age: i64,
    /// 7. More restarts first (regular containers, then restartable init containers).
    restarts: Reverse<(i32, i32)>,
    /// 8. Newer first.
    created_age: i64,
    uid: String,
}

pub fn deletion_key(pod: &Pod, rank: usize, now: Timestamp) -> DeletionKey {
    let ready = is_pod_ready(pod);
    DeletionKey {
        assigned: pod
            .spec
            .as_ref()
            .and_then(|s| s.node_name.as_deref())
            .is_some_and(|n| !n.is_empty()),
        phase: phase_ordinal(pod),
        ready,
        cost: deletion_cost(pod),
        rank: Reverse(rank),
        ready_age: if ready {
            age_bucket(ready_time(pod), now)
        } else {
            0
        },
        restarts: Reverse(max_restarts(pod)),
        created_age: age_bucket(pod.metadata.creation_timestamp.as_ref().map(|t| t.0), now),
        uid: pod.metadata.uid.clone().unwrap_or_default(),
    }
}

/// `Less` means "delete first".
pub fn deletion_order(a: &Pod, rank_a: usize, b: &Pod, rank_b: usize, now: Timestamp) -> Ordering {
    deletion_key(a, rank_a, now).cmp(&deletion_key(b, rank_b, now))
}

/// The `diff` pods to delete first, as upstream's `getPodsToDelete`: ranked by how many
/// `related` pods (those of the sibling ReplicaSets of the same Deployment) share their node.
pub fn pods_to_delete<'a>(
    pods: &[&'a Pod],
    related: &[&Pod],
    diff: usize,
    now: Timestamp,
) -> Vec<&'a Pod> {
    if diff >= pods.len() {
        return pods.to_vec();
    }
    let mut on_node: HashMap<&str, usize> = HashMap::new();
    for pod in related {
        if let Some(node) = pod.spec.as_ref().and_then(|s| s.node_name.as_deref()) {
            *on_node.entry(node).or_default() += 1;
        }
    }
    let rank = |p: &Pod| {
        p.spec
            .as_ref()
            .and_then(|s| s.node_name.as_deref())
            .map_or(0, |n| on_node.get(n).copied().unwrap_or(0))
    };
    let mut ranked: Vec<(DeletionKey, &Pod)> = pods
        .iter()
        .map(|p| (deletion_key(p, rank(p), now), *p))
        .collect();
    ranked.sort_by(|(a, _), (b, _)| a.cmp(b));
    ranked.into_iter().take(diff).map(|(_, p)| p).collect()
}

/// What of a ReplicaSet's metadata and spec its status depends on.
#[derive(Debug, Clone, Copy)]
pub struct StatusInputs<'a> {
    pub generation: Option<i64>,
    pub replicas: i32,
    pub template_labels: &'a BTreeMap<String, String>,
    pub min_ready_seconds: i32,
}

/// The status a ReplicaSet should report, as upstream's `calculateStatus`: counts over the
/// claimed active pods, and the ReplicaFailure condition while creating or deleting fails.
pub fn calculate_status(
    current: &ReplicaSetStatus,
    inputs: &StatusInputs<'_>,
    pods: &[&Pod],
    manage_error: Option<&str>,
    now: Timestamp,
) -> ReplicaSetStatus {
    let StatusInputs {
        generation,
        replicas: spec_replicas,
        template_labels,
        min_ready_seconds,
    } = *inputs;
    let empty = BTreeMap::new();
    let fully_labeled = pods
        .iter()
        .filter(|p| {
            let labels = p.metadata.labels.as_ref().unwrap_or(&empty);
            template_labels
                .iter()
                .all(|(k, v)| labels.get(k) == Some(v))
        })
        .count();
    let ready = pods.iter().filter(|p| is_pod_ready(p)).count();
    let available = pods
        .iter()
        .filter(|p| is_pod_available(p, min_ready_seconds, now))
        .count();
    let mut conditions: Vec<ReplicaSetCondition> = current.conditions.clone().unwrap_or_default();
    let has_failure = conditions.iter().any(|c| c.type_ == REPLICA_FAILURE);
    match manage_error {
        Some(message) if !has_failure => {
            let diff = pods.len() as i64 - i64::from(spec_replicas);
            let reason = match diff.cmp(&0) {
                Ordering::Less => "FailedCreate",
                Ordering::Greater => "FailedDelete",
                Ordering::Equal => "",
            };
            conditions.push(ReplicaSetCondition {
                type_: REPLICA_FAILURE.into(),
                status: "True".into(),
                reason: Some(reason.into()),
                message: Some(message.into()),
                last_transition_time: Some(Time(now)),
            });
        }
        None if has_failure => conditions.retain(|c| c.type_ != REPLICA_FAILURE),
        _ => {}
    }
    ReplicaSetStatus {
        replicas: pods.len() as i32,
        fully_labeled_replicas: Some(fully_labeled as i32),
        ready_replicas: Some(ready as i32),
        available_replicas: Some(available as i32),
        observed_generation: generation.or(current.observed_generation),
        conditions: (!conditions.is_empty()).then_some(conditions),
        terminating_replicas: current.terminating_replicas,
    }
}

/// A status with omitted counts read as zero, so that a status written by us compares equal to
/// the same status read back (Go's `omitempty` drops zeros).
pub fn normalized(status: &ReplicaSetStatus) -> ReplicaSetStatus {
    ReplicaSetStatus {
        replicas: status.replicas,
        fully_labeled_replicas: Some(status.fully_labeled_replicas.unwrap_or(0)),
        ready_replicas: Some(status.ready_replicas.unwrap_or(0)),
        available_replicas: Some(status.available_replicas.unwrap_or(0)),
        observed_generation: status.observed_generation,
        conditions: status.conditions.clone().filter(|c| !c.is_empty()),
        terminating_replicas: status.terminating_replicas,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{ContainerStatus, PodCondition, PodSpec, PodStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
    use k8s_openapi::jiff::SignedDuration;

    fn now() -> Timestamp {
        "2025-01-01T12:00:00Z".parse().unwrap()
    }

    fn ago(secs: i64) -> Timestamp {
        now() - SignedDuration::from_secs(secs)
    }

    struct P(Pod);

    impl P {
        fn new(name: &str) -> P {
            P(Pod {
                metadata: ObjectMeta {
                    name: Some(name.into()),
                    uid: Some(format!("uid-{name}")),
                    labels: Some([("app".to_string(), "web".to_string())].into()),
                    creation_timestamp: Some(Time(ago(1000))),
                    ..Default::default()
                },
                spec: Some(PodSpec::default()),
                status: Some(PodStatus {
                    phase: Some("Pending".into()),
                    ..Default::default()
                }),
            })
        }
        fn node(mut self, node: &str) -> P {
            self.0.spec.as_mut().unwrap().node_name = Some(node.into());
            self
        }
        fn phase(mut self, phase: &str) -> P {
            self.0.status.as_mut().unwrap().phase = Some(phase.into());
            self
        }
        fn ready_since(mut self, secs_ago: i64) -> P {
            self.0.status.as_mut().unwrap().conditions = Some(vec![PodCondition {
                type_: "Ready".into(),
                status: "True".into(),
                last_transition_time: Some(Time(ago(secs_ago))),
                ..Default::default()
            }]);
            self
        }
        fn created(mut self, secs_ago: i64) -> P {
            self.0.metadata.creation_timestamp = Some(Time(ago(secs_ago)));
            self
        }
        fn cost(mut self, cost: &str) -> P {
            self.0.metadata.annotations =
                Some([(POD_DELETION_COST.to_string(), cost.to_string())].into());
            self
        }
        fn restarts(mut self, n: i32) -> P {
            self.0.status.as_mut().unwrap().container_statuses = Some(vec![ContainerStatus {
                name: "c".into(),
                restart_count: n,
                ..Default::default()
            }]);
            self
        }
        fn owner(mut self, uid: &str) -> P {
            self.0.metadata.owner_references = Some(vec![OwnerReference {
                api_version: "apps/v1".into(),
                kind: "ReplicaSet".into(),
                name: "rs".into(),
                uid: uid.into(),
                controller: Some(true),
                block_owner_deletion: Some(true),
            }]);
            self
        }
        fn labels(mut self, labels: &[(&str, &str)]) -> P {
            self.0.metadata.labels = Some(
                labels
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            );
            self
        }
    }

    fn names(pods: &[&Pod]) -> Vec<String> {
        pods.iter()
            .map(|p| p.metadata.name.clone().unwrap())
            .collect()
    }

    #[test]
    fn slow_start_doubles_up_to_the_total() {
        assert_eq!(slow_start_batches(0, 1), Vec::<usize>::new());
        assert_eq!(slow_start_batches(1, 1), vec![1]);
        assert_eq!(slow_start_batches(10, 1), vec![1, 2, 4, 3]);
        assert_eq!(slow_start_batches(15, 1), vec![1, 2, 4, 8]);
        assert_eq!(slow_start_batches(5, 4), vec![4, 1]);
        assert_eq!(slow_start_batches(500, 1).iter().sum::<usize>(), 500);
    }

    #[tokio::test]
    async fn slow_start_stops_after_a_failing_batch() {
        // Every call from the fourth on fails: batches 1 and 2 succeed, batch 4 has one success
        // and three failures, and the rest is never attempted.
        let mut calls = 0;
        let (ok, err) = slow_start_batch(20, 1, || {
            calls += 1;
            let n = calls;
            async move {
                if n <= 4 {
                    Ok(n)
                } else {
                    Err(format!("quota exceeded at {n}"))
                }
            }
        })
        .await;
        assert_eq!(calls, 7);
        assert_eq!(ok, vec![1, 2, 3, 4]);
        assert_eq!(err.as_deref(), Some("quota exceeded at 5"));

        let (ok, err) = slow_start_batch(6, 1, || async { Ok::<_, String>(()) }).await;
        assert_eq!(ok.len(), 6);
        assert!(err.is_none());
    }

    #[test]
    fn claim_adopts_orphans_releases_mismatches_ignores_others() {
        let selector = LabelSelector::parse("app=web").unwrap();
        let mine = P::new("mine").owner("me").0;
        let relabeled = P::new("relabeled")
            .owner("me")
            .labels(&[("app", "other")])
            .0;
        let orphan = P::new("orphan").0;
        let orphan_other = P::new("orphan-other").labels(&[("app", "db")]).0;
        let foreign = P::new("foreign").owner("someone-else").0;
        let pods = [&mine, &relabeled, &orphan, &orphan_other, &foreign];
        let claim = claim(pods.iter().copied(), "me", &selector, false);
        assert_eq!(names(&claim.owned), ["mine"]);
        assert_eq!(names(&claim.adopt), ["orphan"]);
        assert_eq!(names(&claim.release), ["relabeled"]);

        let deleting = super::claim(pods.iter().copied(), "me", &selector, true);
        assert!(deleting.adopt.is_empty());
        assert_eq!(names(&deleting.owned), ["mine"]);
    }

    #[test]
    fn deletion_prefers_unscheduled_pending_unready_pods() {
        let unscheduled = P::new("unscheduled").0;
        let pending = P::new("pending").node("n1").0;
        let unknown = P::new("unknown").node("n1").phase("Unknown").0;
        let running = P::new("running").node("n1").phase("Running").0;
        let ready = P::new("ready")
            .node("n1")
            .phase("Running")
            .ready_since(100)
            .0;
        let pods = [&ready, &running, &unknown, &pending, &unscheduled];
        let order = pods_to_delete(&pods, &[], 4, now());
        assert_eq!(
            names(&order),
            ["unscheduled", "pending", "unknown", "running"]
        );
    }

    #[test]
    fn deletion_cost_doubling_up_and_restarts_break_ties() {
        let cheap = P::new("cheap").node("n1").phase("Running").cost("-10").0;
        let plain = P::new("plain").node("n2").phase("Running").0;
        let doubled = P::new("doubled").node("n1").phase("Running").0;
        let restarted = P::new("restarted")
            .node("n2")
            .phase("Running")
            .restarts(5)
            .0;
        let related_a = P::new("a").node("n1").0;
        let related_b = P::new("b").node("n1").0;
        let pods = [&plain, &doubled, &cheap, &restarted];
        let related = [&related_a, &related_b, &doubled, &cheap, &plain];
        let order = pods_to_delete(&pods, &related, 3, now());
        // The cheap pod first, then the one sharing n1 with many related pods, then (n2 ranks tie)
        // the one with restarts.
        assert_eq!(names(&order), ["cheap", "doubled", "restarted"]);
    }

    #[test]
    fn deletion_prefers_recently_ready_and_newer_pods() {
        let long_ready = P::new("long")
            .node("n1")
            .phase("Running")
            .ready_since(10_000)
            .0;
        let short_ready = P::new("short")
            .node("n1")
            .phase("Running")
            .ready_since(10)
            .0;
        assert_eq!(
            names(&pods_to_delete(&[&long_ready, &short_ready], &[], 1, now())),
            ["short"]
        );

        let old = P::new("old").node("n1").created(100_000).0;
        let new = P::new("new").node("n1").created(5).0;
        assert_eq!(
            names(&pods_to_delete(&[&old, &new], &[], 1, now())),
            ["new"]
        );

        // Within the same power-of-two age bucket the order is by UID, not by exact age.
        let a = P::new("a").node("n1").created(1000).0;
        let b = P::new("b").node("n1").created(1001).0;
        assert_eq!(names(&pods_to_delete(&[&b, &a], &[], 1, now())), ["a"]);
    }

    #[test]
    fn deletion_order_is_a_total_order() {
        // Many pods whose times share and straddle age buckets, with every criterion mixed:
        // sorting must not find an inconsistency, and the order must be transitive.
        let mut seed: u64 = 42;
        let mut next = |n: u64| {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (seed >> 33) % n
        };
        let mut pods = Vec::new();
        for i in 0..400 {
            let mut p = P::new(&format!("p{i}")).created(next(5000) as i64 + 1);
            if next(4) > 0 {
                p = p.node(&format!("n{}", next(3)));
            }
            p = match next(3) {
                0 => p,
                1 => p.phase("Unknown"),
                _ => p.phase("Running"),
            };
            if next(2) == 0 {
                p = p.ready_since(next(3000) as i64);
            }
            if next(5) == 0 {
                p = p.restarts(next(3) as i32);
            }
            if next(6) == 0 {
                p = p.cost(&format!("{}", next(3)));
            }
            pods.push(p.0);
        }
        let mut ranked: Vec<(&Pod, usize)> = pods.iter().map(|p| (p, next(3) as usize)).collect();
        ranked.sort_by(|(a, ra), (b, rb)| deletion_order(a, *ra, b, *rb, now()));
        let sample = &ranked[..40];
        for (a, ra) in sample {
            for (b, rb) in sample {
                let ab = deletion_order(a, *ra, b, *rb, now());
                assert_eq!(ab, deletion_order(b, *rb, a, *ra, now()).reverse());
                for (c, rc) in sample {
                    if ab != Ordering::Greater
                        && deletion_order(b, *rb, c, *rc, now()) != Ordering::Greater
                    {
                        assert_ne!(deletion_order(a, *ra, c, *rc, now()), Ordering::Greater);
                    }
                }
            }
        }
    }

    #[test]
    fn deleting_everything_needs_no_ranking() {
        let a = P::new("a").0;
        let b = P::new("b").0;
        assert_eq!(names(&pods_to_delete(&[&a, &b], &[], 5, now())), ["a", "b"]);
    }

    #[test]
    fn status_counts_labels_readiness_and_availability() {
        let template: BTreeMap<String, String> = [
            ("app".into(), "web".into()),
            ("tier".into(), "front".into()),
        ]
        .into();
        let full = P::new("full")
            .labels(&[("app", "web"), ("tier", "front")])
            .ready_since(100)
            .0;
        let partial = P::new("partial").ready_since(5).0;
        let unready = P::new("unready").0;
        let pods = [&full, &partial, &unready];
        let inputs = StatusInputs {
            generation: Some(4),
            replicas: 3,
            template_labels: &template,
            min_ready_seconds: 10,
        };
        let status = calculate_status(&ReplicaSetStatus::default(), &inputs, &pods, None, now());
        assert_eq!(status.replicas, 3);
        assert_eq!(status.fully_labeled_replicas, Some(1));
        assert_eq!(status.ready_replicas, Some(2));
        assert_eq!(status.available_replicas, Some(1));
        assert_eq!(status.observed_generation, Some(4));
        assert!(status.conditions.is_none());
    }

    #[test]
    fn replica_failure_condition_is_set_once_and_cleared() {
        let template = BTreeMap::new();
        let pod = P::new("p").0;
        let inputs = StatusInputs {
            generation: Some(1),
            replicas: 3,
            template_labels: &template,
            min_ready_seconds: 0,
        };
        let failed = calculate_status(
            &ReplicaSetStatus::default(),
            &inputs,
            &[&pod],
            Some("pods \"web-x\" is forbidden: exceeded quota"),
            now(),
        );
        let conditions = failed.conditions.clone().unwrap();
        assert_eq!(conditions.len(), 1);
        assert_eq!(conditions[0].type_, REPLICA_FAILURE);
        assert_eq!(conditions[0].reason.as_deref(), Some("FailedCreate"));

        // A second failure keeps the first condition (and its time).
        let later = now() + SignedDuration::from_secs(60);
        let again = calculate_status(&failed, &inputs, &[&pod], Some("other"), later);
        assert_eq!(again.conditions, failed.conditions);

        let cleared = calculate_status(&failed, &inputs, &[&pod], None, later);
        assert!(cleared.conditions.is_none());

        let scaled_to_zero = StatusInputs {
            replicas: 0,
            ..inputs
        };
        let deleting = calculate_status(
            &ReplicaSetStatus::default(),
            &scaled_to_zero,
            &[&pod],
            Some("x"),
            now(),
        );
        assert_eq!(
            deleting.conditions.unwrap()[0].reason.as_deref(),
            Some("FailedDelete")
        );
    }

    #[test]
    fn normalized_reads_missing_counts_as_zero() {
        let written = ReplicaSetStatus {
            replicas: 0,
            fully_labeled_replicas: Some(0),
            ready_replicas: Some(0),
            available_replicas: Some(0),
            observed_generation: Some(2),
            ..Default::default()
        };
        let read_back = ReplicaSetStatus {
            observed_generation: Some(2),
            conditions: Some(vec![]),
            ..Default::default()
        };
        assert_eq!(normalized(&read_back), normalized(&written));
    }
}
