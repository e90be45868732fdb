//! What a StatefulSet needs next, without IO: given the set, its current and update revisions
//! and the pods it owns, the pods to create, delete or fix (in upstream's order) and the status.
//!
//! OrderedReady: a pod is created only once every lower ordinal is Running and Ready (and
//! available for `minReadySeconds`), pods are removed highest ordinal first, one at a time.
//! Parallel: every missing pod is created and every condemned pod removed at once.
//! RollingUpdate: ordinals at or above the partition are replaced, highest first, one at a time,
//! each waiting for the previous to be healthy again. OnDelete: pods are replaced only when
//! deleted by someone else.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::{StatefulSet, StatefulSetStatus};
use k8s_openapi::api::core::v1::{
    PersistentVolumeClaim, PersistentVolumeClaimVolumeSource, Pod, PodSpec, Volume,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use k8s_openapi::jiff::Timestamp;

use crate::util::{self, CONTROLLER_REVISION_HASH_LABEL};

pub const POD_NAME_LABEL: &str = "statefulset.kubernetes.io/pod-name";
pub const POD_INDEX_LABEL: &str = "apps.kubernetes.io/pod-index";

/// The parent name and ordinal encoded in a stateful pod's name (`<parent>-<ordinal>`).
pub fn parent_and_ordinal(pod_name: &str) -> Option<(&str, i32)> {
    let (parent, ordinal) = pod_name.rsplit_once('-')?;
    if ordinal.is_empty() || !ordinal.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((parent, ordinal.parse().ok()?))
}

pub fn ordinal_of(pod: &Pod) -> Option<i32> {
    parent_and_ordinal(pod.metadata.name.as_deref()?).map(|(_, o)| o)
}

pub fn pod_name(set: &StatefulSet, ordinal: i32) -> String {
    format!(
        "{}-{ordinal}",
        set.metadata.name.as_deref().unwrap_or_default()
    )
}

/// `<template>-<set>-<ordinal>`.
pub fn claim_name(set: &StatefulSet, template: &PersistentVolumeClaim, ordinal: i32) -> String {
    format!(
        "{}-{}-{ordinal}",
        template.metadata.name.as_deref().unwrap_or_default(),
        set.metadata.name.as_deref().unwrap_or_default()
    )
}

pub fn start_ordinal(set: &StatefulSet) -> i32 {
    set.spec
        .as_ref()
        .and_then(|s| s.ordinals.as_ref())
        .and_then(|o| o.start)
        .unwrap_or(0)
}

pub fn replicas(set: &StatefulSet) -> i32 {
    set.spec
        .as_ref()
        .and_then(|s| s.replicas)
        .unwrap_or(1)
        .max(0)
}

fn min_ready_seconds(set: &StatefulSet) -> i32 {
    set.spec
        .as_ref()
        .and_then(|s| s.min_ready_seconds)
        .unwrap_or(0)
}

fn is_parallel(set: &StatefulSet) -> bool {
    set.spec
        .as_ref()
        .and_then(|s| s.pod_management_policy.as_deref())
        == Some("Parallel")
}

fn strategy_type(set: &StatefulSet) -> &str {
    set.spec
        .as_ref()
        .and_then(|s| s.update_strategy.as_ref())
        .and_then(|u| u.type_.as_deref())
        .unwrap_or("RollingUpdate")
}

/// The partition of a RollingUpdate (ordinals below it keep the current revision).
pub fn partition(set: &StatefulSet) -> Option<i32> {
    set.spec
        .as_ref()
        .and_then(|s| s.update_strategy.as_ref())
        .and_then(|u| u.rolling_update.as_ref())
        .and_then(|r| r.partition)
}

pub fn in_ordinal_range(set: &StatefulSet, ordinal: i32) -> bool {
    let start = start_ordinal(set);
    ordinal >= start && ordinal < start + replicas(set)
}

/// The claims a pod of `set` with `ordinal` uses, named per ordinal and labelled with the
/// template's labels and the set's selector labels.
pub fn claims_for(set: &StatefulSet, ordinal: i32) -> Vec<PersistentVolumeClaim> {
    let Some(spec) = set.spec.as_ref() else {
        return Vec::new();
    };
    spec.volume_claim_templates
        .iter()
        .flatten()
        .map(|template| {
            let mut claim = template.clone();
            let mut labels = claim.metadata.labels.take().unwrap_or_default();
            for (k, v) in spec.selector.match_labels.iter().flatten() {
                labels.insert(k.clone(), v.clone());
            }
            claim.metadata = ObjectMeta {
                name: Some(claim_name(set, template, ordinal)),
                namespace: set.metadata.namespace.clone(),
                labels: Some(labels),
                annotations: claim.metadata.annotations.take(),
                ..Default::default()
            };
            claim.status = None;
            claim
        })
        .collect()
}

/// Whether the pod has the name, hostname, subdomain and labels of its ordinal.
pub fn identity_matches(set: &StatefulSet, pod: &Pod) -> bool {
    let Some(ordinal) = ordinal_of(pod) else {
        return false;
    };
    let name = pod_name(set, ordinal);
    let spec = pod.spec.as_ref();
    let labels = pod.metadata.labels.as_ref();
    pod.metadata.name.as_deref() == Some(name.as_str())
        && pod.metadata.namespace == set.metadata.namespace
        && spec.and_then(|s| s.hostname.as_deref()) == Some(name.as_str())
        && spec.and_then(|s| s.subdomain.as_deref()).unwrap_or("")
            == set
                .spec
                .as_ref()
                .and_then(|s| s.service_name.as_deref())
                .unwrap_or("")
        && labels.and_then(|l| l.get(POD_NAME_LABEL)) == Some(&name)
        && labels.and_then(|l| l.get(POD_INDEX_LABEL)) == Some(&ordinal.to_string())
}

/// Whether the pod mounts the claims of its ordinal.
pub fn storage_matches(set: &StatefulSet, pod: &Pod) -> bool {
    let Some(ordinal) = ordinal_of(pod) else {
        return false;
    };
    let volumes = pod.spec.as_ref().and_then(|s| s.volumes.as_ref());
    set.spec
        .as_ref()
        .and_then(|s| s.volume_claim_templates.as_ref())
        .into_iter()
        .flatten()
        .all(|template| {
            let want = claim_name(set, template, ordinal);
            volumes.into_iter().flatten().any(|v| {
                Some(&v.name) == template.metadata.name.as_ref()
                    && v.persistent_volume_claim
                        .as_ref()
                        .is_some_and(|c| c.claim_name == want)
            })
        })
}

/// Give the pod its ordinal's name, hostname, subdomain and identity labels.
pub fn update_identity(set: &StatefulSet, pod: &mut Pod, ordinal: i32) {
    let name = pod_name(set, ordinal);
    pod.metadata.name = Some(name.clone());
    pod.metadata.namespace = set.metadata.namespace.clone();
    let labels = pod.metadata.labels.get_or_insert_with(BTreeMap::new);
    labels.insert(POD_NAME_LABEL.into(), name.clone());
    labels.insert(POD_INDEX_LABEL.into(), ordinal.to_string());
    let spec = pod.spec.get_or_insert_with(PodSpec::default);
    spec.hostname = Some(name);
    spec.subdomain = set
        .spec
        .as_ref()
        .and_then(|s| s.service_name.clone())
        .filter(|s| !s.is_empty());
}

/// Mount the ordinal's claims, replacing any template volume of the same name.
pub fn update_storage(set: &StatefulSet, pod: &mut Pod, ordinal: i32) {
    let claims = claims_for(set, ordinal);
    if claims.is_empty() {
        return;
    }
    let spec = pod.spec.get_or_insert_with(PodSpec::default);
    let current = spec.volumes.take().unwrap_or_default();
    let templates = set
        .spec
        .as_ref()
        .and_then(|s| s.volume_claim_templates.as_ref());
    let mut volumes: Vec<Volume> = templates
        .into_iter()
        .flatten()
        .zip(&claims)
        .map(|(template, claim)| Volume {
            name: template.metadata.name.clone().unwrap_or_default(),
            persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                claim_name: claim.metadata.name.clone().unwrap_or_default(),
                read_only: None,
            }),
            ..Default::default()
        })
        .collect();
    for v in current {
        if !volumes.iter().any(|c| c.name == v.name) {
            volumes.push(v);
        }
    }
    spec.volumes = Some(volumes);
}

/// A new pod of `set` (whose template is the revision's) for `ordinal`, labelled with
/// `revision`.
pub fn new_pod(set: &StatefulSet, ordinal: i32, revision: &str) -> Pod {
    let template = set.spec.as_ref().map(|s| &s.template);
    let template_meta = template.and_then(|t| t.metadata.as_ref());
    let mut labels = template_meta
        .and_then(|m| m.labels.clone())
        .unwrap_or_default();
    labels.insert(CONTROLLER_REVISION_HASH_LABEL.into(), revision.into());
    let mut pod = Pod {
        metadata: ObjectMeta {
            labels: Some(labels),
            annotations: template_meta.and_then(|m| m.annotations.clone()),
            finalizers: template_meta.and_then(|m| m.finalizers.clone()),
            owner_references: util::controller_ref(set).map(|r| vec![r]),
            ..Default::default()
        },
        spec: template.and_then(|t| t.spec.clone()),
        status: None,
    };
    update_identity(set, &mut pod, ordinal);
    update_storage(set, &mut pod, ordinal);
    pod
}

pub fn revision_of(pod: &Pod) -> &str {
    pod.metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(CONTROLLER_REVISION_HASH_LABEL))
        .map_or("", String::as_str)
}

fn phase(pod: &Pod) -> &str {
    pod.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("")
}

pub fn is_terminating(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_some()
}

/// Running with Ready=True.
pub fn is_running_and_ready(pod: &Pod) -> bool {
    phase(pod) == "Running" && util::is_pod_ready(pod)
}

pub fn is_running_and_available(pod: &Pod, min_ready_seconds: i32, now: Timestamp) -> bool {
    phase(pod) == "Running" && util::is_pod_available(pod, min_ready_seconds, now)
}

fn is_healthy(pod: &Pod) -> bool {
    is_running_and_ready(pod) && !is_terminating(pod)
}

/// The revisions a plan works with: the set as recorded in each, and their names.
pub struct Revisions<'a> {
    pub current_set: &'a StatefulSet,
    pub update_set: &'a StatefulSet,
    pub current: &'a str,
    pub update: &'a str,
}

impl Revisions<'_> {
    /// Upstream `newVersionedStatefulSetPod`: ordinals below the partition (or, without one,
    /// below the current replica count) are made at the current revision.
    pub fn new_pod(&self, ordinal: i32) -> Pod {
        let set = self.current_set;
        let start = start_ordinal(set);
        let rolling = strategy_type(set) == "RollingUpdate";
        let keep_current = rolling
            && match partition(set) {
                Some(p) => ordinal < start + p,
                None => {
                    ordinal
                        < start
                            + set
                                .status
                                .as_ref()
                                .and_then(|s| s.current_replicas)
                                .unwrap_or(0)
                }
            };
        if keep_current {
            new_pod(self.current_set, ordinal, self.current)
        } else {
            new_pod(self.update_set, ordinal, self.update)
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeleteReason {
    /// The pod failed or succeeded; it is recreated.
    Terminated,
    /// Its ordinal is beyond the replica count.
    ScaleDown,
    /// It is at an old revision.
    Update,
}

#[derive(Debug, Clone)]
pub enum Step {
    /// Create the pod (after its claims).
    Create(Pod),
    Delete(Arc<Pod>, DeleteReason),
    /// Replace the pod's identity or storage with this corrected copy.
    Update(Pod),
    /// Make sure the claims of a pending pod exist.
    EnsureClaims(i32),
}

#[derive(Debug, Clone)]
pub struct Plan {
    pub steps: Vec<Step>,
    pub status: StatefulSetStatus,
    /// Look again after this long: a Ready pod will then have been available for
    /// `minReadySeconds`.
    pub requeue_after: Option<Duration>,
}

enum Slot {
    Existing(Arc<Pod>),
    Missing(Box<Pod>),
}

impl Slot {
    fn pod(&self) -> &Pod {
        match self {
            Slot::Existing(p) => p,
            Slot::Missing(p) => p,
        }
    }
}

/// Plan the next steps for `set` given the pods it owns.
pub fn plan(set: &StatefulSet, revisions: &Revisions, pods: &[Arc<Pod>], now: Timestamp) -> Plan {
    let start = start_ordinal(set);
    let count = replicas(set);
    let min_ready = min_ready_seconds(set);
    let mut slots: Vec<Option<Arc<Pod>>> = vec![None; count as usize];
    let mut condemned: Vec<Arc<Pod>> = Vec::new();
    for pod in pods {
        let Some(ordinal) = ordinal_of(pod) else {
            continue;
        };
        if in_ordinal_range(set, ordinal) {
            slots[(ordinal - start) as usize] = Some(pod.clone());
        } else {
            condemned.push(pod.clone());
        }
    }
    let mut replicas: Vec<Slot> = slots
        .into_iter()
        .enumerate()
        .map(|(i, pod)| match pod {
            Some(p) => Slot::Existing(p),
            None => Slot::Missing(Box::new(revisions.new_pod(start + i as i32))),
        })
        .collect();
    // Highest ordinal first.
    condemned.sort_by_key(|p| std::cmp::Reverse(ordinal_of(p)));

    let status = compute_status(set, revisions, &replicas, &condemned, now);
    let requeue_after = (min_ready > 0
        && replicas
            .iter()
            .filter_map(|s| match s {
                Slot::Existing(p) => Some(p),
                Slot::Missing(_) => None,
            })
            .chain(condemned.iter())
            .any(|p| is_running_and_ready(p) && !is_running_and_available(p, min_ready, now)))
    .then(|| Duration::from_secs(min_ready as u64));
    let mut plan = Plan {
        steps: Vec::new(),
        status,
        requeue_after,
    };
    if set.metadata.deletion_timestamp.is_some() {
        return plan;
    }
    let monotonic = !is_parallel(set);

    // The lowest unhealthy ordinal: in monotonic mode it may be removed even though unhealthy.
    let first_unhealthy = replicas
        .iter()
        .map(Slot::pod)
        .chain(condemned.iter().map(|p| &**p))
        .filter(|p| !is_healthy(p))
        .min_by_key(|p| ordinal_of(p))
        .and_then(|p| p.metadata.name.clone());

    for (i, slot) in replicas.iter_mut().enumerate() {
        let ordinal = start + i as i32;
        if let Slot::Existing(pod) = slot
            && matches!(phase(pod), "Failed" | "Succeeded")
            && !is_terminating(pod)
        {
            plan.steps
                .push(Step::Delete(pod.clone(), DeleteReason::Terminated));
            *slot = Slot::Missing(Box::new(revisions.new_pod(ordinal)));
        }
        let pod = match slot {
            Slot::Missing(pod) => {
                plan.steps.push(Step::Create((**pod).clone()));
                if monotonic {
                    return plan;
                }
                continue;
            }
            Slot::Existing(pod) => pod.clone(),
        };
        if phase(&pod) == "Pending" && !is_terminating(&pod) {
            plan.steps.push(Step::EnsureClaims(ordinal));
        }
        if monotonic
            && (is_terminating(&pod)
                || !is_running_and_ready(&pod)
                || !is_running_and_available(&pod, min_ready, now))
        {
            return plan;
        }
        if is_terminating(&pod) {
            continue;
        }
        if !identity_matches(revisions.update_set, &pod)
            || !storage_matches(revisions.update_set, &pod)
        {
            let mut fixed = (*pod).clone();
            update_identity(revisions.update_set, &mut fixed, ordinal);
            update_storage(revisions.update_set, &mut fixed, ordinal);
            plan.steps.push(Step::Update(fixed));
        }
    }

    for pod in &condemned {
        if is_terminating(pod) {
            if monotonic {
                return plan;
            }
            continue;
        }
        let is_first_unhealthy = first_unhealthy.is_some() && pod.metadata.name == first_unhealthy;
        if monotonic
            && !is_first_unhealthy
            && (!is_running_and_ready(pod) || !is_running_and_available(pod, min_ready, now))
        {
            return plan;
        }
        plan.steps
            .push(Step::Delete(pod.clone(), DeleteReason::ScaleDown));
        if monotonic {
            return plan;
        }
    }

    if strategy_type(set) != "RollingUpdate" {
        return plan;
    }
    let update_min = partition(set).unwrap_or(0).max(0) as usize;
    for slot in replicas.iter().skip(update_min).rev() {
        let pod = slot.pod();
        if revision_of(pod) != revisions.update && !is_terminating(pod) {
            if let Slot::Existing(pod) = slot {
                plan.steps
                    .push(Step::Delete(pod.clone(), DeleteReason::Update));
            }
            return plan;
        }
        if !is_healthy(pod) || !is_running_and_available(pod, min_ready, now) {
            return plan;
        }
    }
    plan
}

fn compute_status(
    set: &StatefulSet,
    revisions: &Revisions,
    replicas: &[Slot],
    condemned: &[Arc<Pod>],
    now: Timestamp,
) -> StatefulSetStatus {
    let min_ready = min_ready_seconds(set);
    let mut status = StatefulSetStatus {
        observed_generation: set.metadata.generation,
        current_revision: Some(revisions.current.to_string()),
        update_revision: Some(revisions.update.to_string()),
        collision_count: set.status.as_ref().and_then(|s| s.collision_count),
        ..Default::default()
    };
    let (mut ready, mut available, mut current, mut updated) = (0, 0, 0, 0);
    let existing = replicas
        .iter()
        .filter_map(|s| match s {
            Slot::Existing(p) => Some(p),
            Slot::Missing(_) => None,
        })
        .chain(condemned.iter());
    for pod in existing {
        status.replicas += 1;
        if is_running_and_ready(pod) {
            ready += 1;
            if is_running_and_available(pod, min_ready, now) {
                available += 1;
            }
        }
        if !is_terminating(pod) {
            if revision_of(pod) == revisions.current {
                current += 1;
            }
            if revision_of(pod) == revisions.update {
                updated += 1;
            }
        }
    }
    status.ready_replicas = Some(ready);
    status.available_replicas = Some(available);
    status.current_replicas = Some(current);
    status.updated_replicas = Some(updated);
    // A finished rolling update makes the update revision current.
    let want = replicas.len() as i32;
    if strategy_type(set) == "RollingUpdate"
        && updated == want
        && ready == want
        && status.replicas == want
    {
        status.current_replicas = Some(updated);
        status.current_revision = status.update_revision.clone();
    }
    status
}

/// The retention policy as (whenDeleted, whenScaled), Retain when unset.
pub fn retention_policy(set: &StatefulSet) -> (&str, &str) {
    let policy = set
        .spec
        .as_ref()
        .and_then(|s| s.persistent_volume_claim_retention_policy.as_ref());
    (
        policy
            .and_then(|p| p.when_deleted.as_deref())
            .unwrap_or("Retain"),
        policy
            .and_then(|p| p.when_scaled.as_deref())
            .unwrap_or("Retain"),
    )
}

/// The owner references a claim should carry under the set's retention policy, or None when
/// the current ones are right: the set owns claims deleted with it (`whenDeleted: Delete`,
/// while their pod is in range if `whenScaled` is Delete too), a pod scaled away owns its
/// claims when `whenScaled: Delete`.
pub fn claim_owner_refs(
    claim_refs: &[OwnerReference],
    set: &StatefulSet,
    pod: &Pod,
    set_ref: &OwnerReference,
    pod_ref: &OwnerReference,
) -> Option<Vec<OwnerReference>> {
    let (when_deleted, when_scaled) = retention_policy(set);
    let scaled_down = ordinal_of(pod).is_some_and(|o| !in_ordinal_range(set, o));
    let want_set = when_deleted == "Delete" && !(when_scaled == "Delete" && scaled_down);
    let want_pod = when_scaled == "Delete" && scaled_down;
    let has = |r: &OwnerReference| claim_refs.iter().any(|c| c.uid == r.uid);
    if has(set_ref) == want_set && has(pod_ref) == want_pod {
        return None;
    }
    let mut refs: Vec<OwnerReference> = claim_refs
        .iter()
        .filter(|c| c.uid != set_ref.uid && c.uid != pod_ref.uid)
        .cloned()
        .collect();
    let plain = |r: &OwnerReference| OwnerReference {
        controller: None,
        block_owner_deletion: None,
        ..r.clone()
    };
    if want_set {
        refs.push(plain(set_ref));
    }
    if want_pod {
        refs.push(plain(pod_ref));
    }
    Some(refs)
}
