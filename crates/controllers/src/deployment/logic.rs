//! The pure decisions of the Deployment controller, after upstream's `deployment/util`:
//! fenceposts (maxSurge/maxUnavailable), template hashes, revisions and their annotations,
//! how far each ReplicaSet may scale in a rolling update or a proportional scale, status and
//! conditions. No IO here.

use std::cmp::Ordering;
use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{Deployment, DeploymentCondition, DeploymentStatus, ReplicaSet};
use k8s_openapi::api::core::v1::PodTemplateSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use serde_json::Value;

use crate::util::{fnv32a, safe_encode_string};

pub const REVISION_ANNOTATION: &str = "deployment.kubernetes.io/revision";
pub const REVISION_HISTORY_ANNOTATION: &str = "deployment.kubernetes.io/revision-history";
pub const DESIRED_REPLICAS_ANNOTATION: &str = "deployment.kubernetes.io/desired-replicas";
pub const MAX_REPLICAS_ANNOTATION: &str = "deployment.kubernetes.io/max-replicas";
pub const ROLLBACK_TO_ANNOTATION: &str = "deprecated.deployment.rollback.to";
pub const LAST_APPLIED_ANNOTATION: &str = "kubectl.kubernetes.io/last-applied-configuration";
pub const POD_TEMPLATE_HASH_LABEL: &str = "pod-template-hash";
/// Upstream keeps at most this many characters of revision history on a ReplicaSet.
pub const MAX_REVISION_HISTORY_CHARS: usize = 2000;

pub const AVAILABLE: &str = "Available";
pub const PROGRESSING: &str = "Progressing";
pub const REPLICA_FAILURE: &str = "ReplicaFailure";

pub const MINIMUM_REPLICAS_AVAILABLE: &str = "MinimumReplicasAvailable";
pub const MINIMUM_REPLICAS_UNAVAILABLE: &str = "MinimumReplicasUnavailable";
pub const NEW_REPLICA_SET_REASON: &str = "NewReplicaSetCreated";
pub const FOUND_NEW_RS_REASON: &str = "FoundNewReplicaSet";
pub const REPLICA_SET_UPDATED_REASON: &str = "ReplicaSetUpdated";
pub const NEW_RS_AVAILABLE_REASON: &str = "NewReplicaSetAvailable";
pub const TIMED_OUT_REASON: &str = "ProgressDeadlineExceeded";
pub const FAILED_RS_CREATE_REASON: &str = "ReplicaSetCreateError";
pub const PAUSED_DEPLOY_REASON: &str = "DeploymentPaused";
pub const RESUMED_DEPLOY_REASON: &str = "DeploymentResumed";

/// Now, at the precision the API keeps (seconds), so that a status we compute compares equal to
/// the same status read back.
pub fn now() -> Timestamp {
    Timestamp::from_second(Timestamp::now().as_second()).unwrap_or_else(|_| Timestamp::now())
}

pub fn spec_replicas(d: &Deployment) -> i32 {
    d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1)
}

pub fn rs_replicas(rs: &ReplicaSet) -> i32 {
    rs.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1)
}

fn rs_status(rs: &ReplicaSet) -> (i32, i32, i32) {
    let s = rs.status.as_ref();
    (
        s.map_or(0, |s| s.replicas),
        s.and_then(|s| s.ready_replicas).unwrap_or(0),
        s.and_then(|s| s.available_replicas).unwrap_or(0),
    )
}

pub fn is_recreate(d: &Deployment) -> bool {
    d.spec
        .as_ref()
        .and_then(|s| s.strategy.as_ref())
        .and_then(|s| s.type_.as_deref())
        == Some("Recreate")
}

/// A value of maxSurge/maxUnavailable: an int, or a percentage of `total` rounded up or down
/// (upstream's `GetScaledValueFromIntOrPercent`).
pub fn scaled_value(value: &IntOrString, total: i32, round_up: bool) -> Result<i32, String> {
    match value {
        IntOrString::Int(v) => Ok(*v),
        IntOrString::String(s) => {
            let Some(number) = s.strip_suffix('%') else {
                return Err(format!(
                    "invalid value for IntOrString: invalid type: string is not a percentage: {s:?}"
                ));
            };
            let percent: i64 = number
                .parse()
                .map_err(|e| format!("invalid value for IntOrString: invalid value {s:?}: {e}"))?;
            let scaled = percent * i64::from(total);
            let value = if round_up {
                scaled.div_euclid(100) + i64::from(scaled.rem_euclid(100) != 0)
            } else {
                scaled.div_euclid(100)
            };
            Ok(value as i32)
        }
    }
}

/// (maxSurge, maxUnavailable) for `desired` replicas; both zero would stall a rollout, so
/// maxUnavailable becomes 1 then (upstream's `ResolveFenceposts`).
pub fn resolve_fenceposts(
    surge: Option<&IntOrString>,
    unavailable: Option<&IntOrString>,
    desired: i32,
) -> Result<(i32, i32), String> {
    let zero = IntOrString::Int(0);
    let surge = scaled_value(surge.unwrap_or(&zero), desired, true)?;
    let unavailable = scaled_value(unavailable.unwrap_or(&zero), desired, false)?;
    if surge == 0 && unavailable == 0 {
        return Ok((0, 1));
    }
    Ok((surge, unavailable))
}

fn fenceposts(d: &Deployment) -> Option<(i32, i32)> {
    if is_recreate(d) {
        return None;
    }
    let default = IntOrString::String("25%".into());
    let rolling = d
        .spec
        .as_ref()
        .and_then(|s| s.strategy.as_ref())
        .and_then(|s| s.rolling_update.as_ref());
    let (surge, unavailable) = match rolling {
        Some(r) => (r.max_surge.as_ref(), r.max_unavailable.as_ref()),
        None => (Some(&default), Some(&default)),
    };
    resolve_fenceposts(surge, unavailable, spec_replicas(d)).ok()
}

/// How many pods above the desired count a rolling update may run.
pub fn max_surge(d: &Deployment) -> i32 {
    fenceposts(d).map_or(0, |(surge, _)| surge)
}

/// How many of the desired pods may be unavailable during a rolling update.
pub fn max_unavailable(d: &Deployment) -> i32 {
    let replicas = spec_replicas(d);
    if replicas == 0 {
        return 0;
    }
    fenceposts(d).map_or(0, |(_, unavailable)| unavailable.min(replicas))
}

/// The pod-template-hash of a template: FNV-1a over its canonical JSON form (and the collision
/// count, which changes the hash when a name is taken), encoded as upstream does.
pub fn compute_hash(template: &PodTemplateSpec, collision_count: Option<i32>) -> String {
    let bytes = serde_json::to_vec(template).unwrap_or_default();
    let hash = match collision_count {
        Some(count) => {
            let mut extra = [0u8; 8];
            extra[..4].copy_from_slice(&(count as u32).to_le_bytes());
            fnv32a(&[&bytes, &extra])
        }
        None => fnv32a(&[&bytes]),
    };
    safe_encode_string(&hash.to_string())
}

/// Drop nulls, empty objects and empty arrays: the API treats an empty map or list as absent.
fn prune(value: &mut Value) -> bool {
    match value {
        Value::Null => true,
        Value::Object(map) => {
            map.retain(|_, v| !prune(v));
            map.is_empty()
        }
        Value::Array(items) => {
            for item in items.iter_mut() {
                prune(item);
            }
            items.is_empty()
        }
        _ => false,
    }
}

fn template_without_hash(template: &PodTemplateSpec) -> Value {
    let mut value = serde_json::to_value(template).unwrap_or_default();
    if let Some(labels) = value
        .pointer_mut("/metadata/labels")
        .and_then(Value::as_object_mut)
    {
        labels.remove(POD_TEMPLATE_HASH_LABEL);
    }
    prune(&mut value);
    value
}

/// Whether two templates are equal but for the pod-template-hash label.
pub fn equal_ignore_hash(a: &PodTemplateSpec, b: &PodTemplateSpec) -> bool {
    template_without_hash(a) == template_without_hash(b)
}

/// The revision a ReplicaSet carries (0 when none).
pub fn revision(rs: &ReplicaSet) -> i64 {
    rs.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(REVISION_ANNOTATION))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

pub fn max_revision<'a>(rss: impl IntoIterator<Item = &'a ReplicaSet>) -> i64 {
    rss.into_iter().map(revision).max().unwrap_or(0)
}

fn creation(rs: &ReplicaSet) -> Option<Timestamp> {
    rs.metadata.creation_timestamp.as_ref().map(|t| t.0)
}

/// Oldest first, ties by name (upstream's `ReplicaSetsByCreationTimestamp`).
pub fn by_creation(a: &ReplicaSet, b: &ReplicaSet) -> Ordering {
    creation(a)
        .cmp(&creation(b))
        .then_with(|| a.metadata.name.cmp(&b.metadata.name))
}

/// Lowest revision first, ties by creation (upstream's `ReplicaSetsByRevision`).
pub fn by_revision(a: &ReplicaSet, b: &ReplicaSet) -> Ordering {
    revision(a)
        .cmp(&revision(b))
        .then_with(|| by_creation(a, b))
}

/// Larger first; among equals newer first (`ReplicaSetsBySizeNewer`), for scaling up.
fn by_size_newer(a: &ReplicaSet, b: &ReplicaSet) -> Ordering {
    rs_replicas(b)
        .cmp(&rs_replicas(a))
        .then_with(|| by_creation(b, a))
}

/// Larger first; among equals older first (`ReplicaSetsBySizeOlder`), for scaling down.
fn by_size_older(a: &ReplicaSet, b: &ReplicaSet) -> Ordering {
    rs_replicas(b)
        .cmp(&rs_replicas(a))
        .then_with(|| by_creation(a, b))
}

/// The index of the ReplicaSet whose template is the Deployment's: the oldest such.
pub fn find_new(d: &Deployment, rss: &[ReplicaSet]) -> Option<usize> {
    let template = &d.spec.as_ref()?.template;
    let mut candidates: Vec<usize> = (0..rss.len())
        .filter(|&i| {
            rss[i]
                .spec
                .as_ref()
                .and_then(|s| s.template.as_ref())
                .is_some_and(|t| equal_ignore_hash(t, template))
        })
        .collect();
    candidates.sort_by(|&a, &b| by_creation(&rss[a], &rss[b]));
    candidates.first().copied()
}

fn skip_copy(key: &str) -> bool {
    matches!(
        key,
        LAST_APPLIED_ANNOTATION
            | REVISION_ANNOTATION
            | REVISION_HISTORY_ANNOTATION
            | DESIRED_REPLICAS_ANNOTATION
            | MAX_REPLICAS_ANNOTATION
            | ROLLBACK_TO_ANNOTATION
    )
}

/// Set desired-replicas and max-replicas; returns whether anything changed.
pub fn set_replicas_annotations(rs: &mut ReplicaSet, desired: i32, max: i32) -> bool {
    let annotations = rs.metadata.annotations.get_or_insert_with(BTreeMap::new);
    let mut changed = false;
    for (key, value) in [
        (DESIRED_REPLICAS_ANNOTATION, desired),
        (MAX_REPLICAS_ANNOTATION, max),
    ] {
        let value = value.to_string();
        if annotations.get(key) != Some(&value) {
            annotations.insert(key.into(), value);
            changed = true;
        }
    }
    changed
}

/// Upstream's `SetNewReplicaSetAnnotations`: copy the Deployment's annotations (e.g.
/// `kubernetes.io/change-cause`), move the revision forward (keeping the revisions this
/// ReplicaSet had before in revision-history: a rollback reuses an old ReplicaSet), and on a
/// ReplicaSet about to be created, the replica annotations. Returns whether anything changed.
pub fn set_new_rs_annotations(
    d: &Deployment,
    rs: &mut ReplicaSet,
    new_revision: i64,
    exists: bool,
) -> bool {
    let mut changed = false;
    let annotations = rs.metadata.annotations.get_or_insert_with(BTreeMap::new);
    for (key, value) in d.metadata.annotations.iter().flatten() {
        if skip_copy(key) || annotations.get(key) == Some(value) {
            continue;
        }
        annotations.insert(key.clone(), value.clone());
        changed = true;
    }
    let old = annotations.get(REVISION_ANNOTATION).cloned();
    let old_revision: i64 = match old.as_deref() {
        None | Some("") => 0,
        Some(v) => match v.parse() {
            Ok(v) => v,
            Err(_) => return false,
        },
    };
    if old_revision < new_revision {
        annotations.insert(REVISION_ANNOTATION.into(), new_revision.to_string());
        changed = true;
        if let Some(old) = old.filter(|o| !o.is_empty()) {
            let history = annotations
                .get(REVISION_HISTORY_ANNOTATION)
                .cloned()
                .unwrap_or_default();
            let mut revisions: Vec<&str> = history.split(',').filter(|r| !r.is_empty()).collect();
            revisions.push(&old);
            // Forget the oldest revisions past the length limit.
            while revisions.join(",").len() > MAX_REVISION_HISTORY_CHARS && revisions.len() > 1 {
                revisions.remove(0);
            }
            let joined = revisions.join(",");
            annotations.insert(REVISION_HISTORY_ANNOTATION.into(), joined);
        }
    }
    if !exists && set_replicas_annotations(rs, spec_replicas(d), spec_replicas(d) + max_surge(d)) {
        changed = true;
    }
    changed
}

fn annotation_i32(rs: &ReplicaSet, key: &str) -> Option<i32> {
    rs.metadata.annotations.as_ref()?.get(key)?.parse().ok()
}

pub fn desired_replicas_annotation(rs: &ReplicaSet) -> Option<i32> {
    annotation_i32(rs, DESIRED_REPLICAS_ANNOTATION)
}

/// Active ReplicaSets: with any replicas wanted.
pub fn is_active(rs: &ReplicaSet) -> bool {
    rs_replicas(rs) > 0
}

/// Sum of spec.replicas.
pub fn replica_count<'a>(rss: impl IntoIterator<Item = &'a ReplicaSet>) -> i32 {
    rss.into_iter().map(rs_replicas).sum()
}

/// Sum of status.replicas.
pub fn actual_replica_count<'a>(rss: impl IntoIterator<Item = &'a ReplicaSet>) -> i32 {
    rss.into_iter().map(|rs| rs_status(rs).0).sum()
}

pub fn available_replica_count<'a>(rss: impl IntoIterator<Item = &'a ReplicaSet>) -> i32 {
    rss.into_iter().map(|rs| rs_status(rs).2).sum()
}

/// The size of the new ReplicaSet in this step of the rollout (upstream's `NewRSNewReplicas`).
pub fn new_rs_new_replicas(d: &Deployment, all: &[&ReplicaSet], new: &ReplicaSet) -> i32 {
    let desired = spec_replicas(d);
    if is_recreate(d) {
        return desired;
    }
    let current = replica_count(all.iter().copied());
    let max_total = desired + max_surge(d);
    if current >= max_total {
        return rs_replicas(new);
    }
    let scale_up = (max_total - current).min(desired - rs_replicas(new));
    rs_replicas(new) + scale_up
}

/// The new ReplicaSet runs every desired pod and all are available.
pub fn is_saturated(d: &Deployment, new: Option<&ReplicaSet>) -> bool {
    let Some(rs) = new else { return false };
    let desired = spec_replicas(d);
    rs_replicas(rs) == desired
        && desired_replicas_annotation(rs) == Some(desired)
        && rs_status(rs).2 == desired
}

/// With at most one active ReplicaSet, the one a scale applies to (upstream's
/// `FindActiveOrLatest`): the active one, else the new one, else the newest old one. `None`
/// when several are active (proportional scaling then).
pub fn find_active_or_latest<'a>(
    new: Option<&'a ReplicaSet>,
    old: &[&'a ReplicaSet],
) -> Option<&'a ReplicaSet> {
    if new.is_none() && old.is_empty() {
        return None;
    }
    let mut old: Vec<&ReplicaSet> = old.to_vec();
    old.sort_by(|a, b| by_creation(b, a));
    let active: Vec<&ReplicaSet> = old
        .iter()
        .copied()
        .chain(new)
        .filter(|rs| is_active(rs))
        .collect();
    match active.len() {
        0 => new.or_else(|| old.first().copied()),
        1 => Some(active[0]),
        _ => None,
    }
}

/// Upstream's `getReplicaSetFraction`: the change of one ReplicaSet's size when the Deployment
/// scales, in proportion to its share of the size it had before (its max-replicas annotation).
fn replica_set_fraction(rs: &ReplicaSet, d: &Deployment) -> i32 {
    if spec_replicas(d) == 0 {
        return -rs_replicas(rs);
    }
    let max_replicas = spec_replicas(d) + max_surge(d);
    let Some(before) = annotation_i32(rs, MAX_REPLICAS_ANNOTATION).filter(|b| *b != 0) else {
        return 0;
    };
    let size = f64::from(rs_replicas(rs)) * f64::from(max_replicas) / f64::from(before);
    size.round() as i32 - rs_replicas(rs)
}

fn proportion(rs: &ReplicaSet, d: &Deployment, to_add: i32, added: i32) -> i32 {
    if rs_replicas(rs) == 0 || to_add == 0 || to_add == added {
        return 0;
    }
    let fraction = replica_set_fraction(rs, d);
    let allowed = to_add - added;
    if to_add > 0 {
        fraction.min(allowed)
    } else {
        fraction.max(allowed)
    }
}

/// A scale of a Deployment in the middle of a rolling update, spread over its active
/// ReplicaSets in proportion to their sizes, the rounding leftover to the largest (upstream's
/// `scale`). Returns (name, new size) for every active ReplicaSet, and "up"/"down".
pub fn proportional_scale(
    d: &Deployment,
    active: &[&ReplicaSet],
) -> (Vec<(String, i32)>, &'static str) {
    let desired = spec_replicas(d);
    let allowed = if desired > 0 {
        desired + max_surge(d)
    } else {
        0
    };
    let to_add = allowed - replica_count(active.iter().copied());
    let mut sorted: Vec<&ReplicaSet> = active.to_vec();
    let operation = match to_add.cmp(&0) {
        Ordering::Greater => {
            sorted.sort_by(|a, b| by_size_newer(a, b));
            "up"
        }
        Ordering::Less => {
            sorted.sort_by(|a, b| by_size_older(a, b));
            "down"
        }
        Ordering::Equal => "",
    };
    let mut added = 0;
    let mut sizes: Vec<(String, i32)> = Vec::with_capacity(sorted.len());
    for rs in &sorted {
        let name = rs.metadata.name.clone().unwrap_or_default();
        if to_add != 0 {
            let p = proportion(rs, d, to_add, added);
            sizes.push((name, rs_replicas(rs) + p));
            added += p;
        } else {
            sizes.push((name, rs_replicas(rs)));
        }
    }
    if to_add != 0
        && let Some(first) = sizes.first_mut()
    {
        first.1 = (first.1 + to_add - added).max(0);
    }
    (sizes, operation)
}

/// How many old pods a rolling update may remove now without going below the minimum
/// available, counting the new ReplicaSet's unavailable pods (upstream's
/// `reconcileOldReplicaSets`' maxScaledDown). Zero or less: none.
pub fn max_scaled_down(d: &Deployment, all: &[&ReplicaSet], new: &ReplicaSet) -> i32 {
    let min_available = spec_replicas(d) - max_unavailable(d);
    let new_unavailable = rs_replicas(new) - rs_status(new).2;
    replica_count(all.iter().copied()) - min_available - new_unavailable
}

/// Scale-downs of old ReplicaSets' unavailable pods, oldest first, up to `max` in total
/// (upstream's `cleanupUnhealthyReplicas`). `old` must be sorted by creation.
pub fn cleanup_unhealthy(old: &[&ReplicaSet], max: i32) -> Vec<(String, i32)> {
    let mut total = 0;
    let mut plan = Vec::new();
    for rs in old {
        if total >= max {
            break;
        }
        let replicas = rs_replicas(rs);
        let available = rs_status(rs).2;
        if replicas == 0 || replicas == available {
            continue;
        }
        let down = (max - total).min(replicas - available);
        if down <= 0 {
            continue;
        }
        plan.push((
            rs.metadata.name.clone().unwrap_or_default(),
            replicas - down,
        ));
        total += down;
    }
    plan
}

/// Scale-downs of old ReplicaSets, oldest first, by as many available pods as exceed the
/// minimum available (upstream's `scaleDownOldReplicaSetsForRollingUpdate`).
pub fn scale_down_old(
    d: &Deployment,
    all: &[&ReplicaSet],
    old: &[&ReplicaSet],
) -> Vec<(String, i32)> {
    let min_available = spec_replicas(d) - max_unavailable(d);
    // A ReplicaSet this controller just scaled down still reports its old availableReplicas
    // until its own controller catches up; counting more than its spec would scale the old
    // pods down twice and break maxUnavailable.
    let available: i32 = all
        .iter()
        .map(|rs| rs_status(rs).2.min(rs_replicas(rs)))
        .sum();
    if available <= min_available {
        return Vec::new();
    }
    let to_scale = available - min_available;
    let mut old: Vec<&ReplicaSet> = old.to_vec();
    old.sort_by(|a, b| by_creation(a, b));
    let mut total = 0;
    let mut plan = Vec::new();
    for rs in old {
        if total >= to_scale {
            break;
        }
        let replicas = rs_replicas(rs);
        if replicas == 0 {
            continue;
        }
        let down = replicas.min(to_scale - total);
        plan.push((
            rs.metadata.name.clone().unwrap_or_default(),
            replicas - down,
        ));
        total += down;
    }
    plan
}

/// Old ReplicaSets past revisionHistoryLimit that may be deleted: lowest revisions first, only
/// those scaled to zero with no pods left and a status that has caught up.
pub fn cleanup_candidates(old: &[&ReplicaSet], limit: i32) -> Vec<String> {
    let mut alive: Vec<&ReplicaSet> = old
        .iter()
        .copied()
        .filter(|rs| rs.metadata.deletion_timestamp.is_none())
        .collect();
    let diff = alive.len() as i64 - i64::from(limit.max(0));
    if diff <= 0 {
        return Vec::new();
    }
    alive.sort_by(|a, b| by_revision(a, b));
    alive
        .into_iter()
        .take(diff as usize)
        .filter(|rs| {
            let observed = rs
                .status
                .as_ref()
                .and_then(|s| s.observed_generation)
                .unwrap_or(0);
            rs_status(rs).0 == 0
                && rs_replicas(rs) == 0
                && rs.metadata.generation.unwrap_or(0) <= observed
        })
        .filter_map(|rs| rs.metadata.name.clone())
        .collect()
}

pub fn get_condition<'a>(
    status: &'a DeploymentStatus,
    type_: &str,
) -> Option<&'a DeploymentCondition> {
    status
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == type_)
}

pub fn new_condition(
    type_: &str,
    status: &str,
    reason: &str,
    message: String,
    now: Timestamp,
) -> DeploymentCondition {
    DeploymentCondition {
        type_: type_.into(),
        status: status.into(),
        reason: Some(reason.into()),
        message: Some(message),
        last_update_time: Some(Time(now)),
        last_transition_time: Some(Time(now)),
    }
}

/// Upstream's `SetDeploymentCondition`: no change when status and reason are the same; the
/// transition time kept when only the reason changes; the condition moves to the end.
pub fn set_condition(status: &mut DeploymentStatus, mut condition: DeploymentCondition) {
    if let Some(current) = get_condition(status, &condition.type_) {
        if current.status == condition.status && current.reason == condition.reason {
            return;
        }
        if current.status == condition.status {
            condition.last_transition_time = current.last_transition_time.clone();
        }
    }
    let mut conditions: Vec<DeploymentCondition> = status.conditions.take().unwrap_or_default();
    conditions.retain(|c| c.type_ != condition.type_);
    conditions.push(condition);
    status.conditions = Some(conditions);
}

pub fn remove_condition(status: &mut DeploymentStatus, type_: &str) {
    if let Some(conditions) = status.conditions.as_mut() {
        conditions.retain(|c| c.type_ != type_);
    }
}

pub fn progress_deadline(d: &Deployment) -> Option<i32> {
    d.spec
        .as_ref()
        .and_then(|s| s.progress_deadline_seconds)
        .filter(|s| *s != i32::MAX)
}

/// The status the ReplicaSets add up to (upstream's `calculateStatus`), with the Available
/// condition.
pub fn calculate_status(
    d: &Deployment,
    all: &[&ReplicaSet],
    new: Option<&ReplicaSet>,
    now: Timestamp,
) -> DeploymentStatus {
    let current = d.status.clone().unwrap_or_default();
    let available = available_replica_count(all.iter().copied());
    let total = replica_count(all.iter().copied());
    let mut status = DeploymentStatus {
        observed_generation: d.metadata.generation,
        replicas: Some(actual_replica_count(all.iter().copied())),
        updated_replicas: Some(actual_replica_count(new)),
        ready_replicas: Some(all.iter().map(|rs| rs_status(rs).1).sum()),
        available_replicas: Some(available),
        unavailable_replicas: Some((total - available).max(0)),
        collision_count: current.collision_count,
        conditions: current.conditions.clone(),
        terminating_replicas: current.terminating_replicas,
    };
    if available >= spec_replicas(d) - max_unavailable(d) {
        let c = new_condition(
            AVAILABLE,
            "True",
            MINIMUM_REPLICAS_AVAILABLE,
            "Deployment has minimum availability.".into(),
            now,
        );
        set_condition(&mut status, c);
    } else {
        let c = new_condition(
            AVAILABLE,
            "False",
            MINIMUM_REPLICAS_UNAVAILABLE,
            "Deployment does not have minimum availability.".into(),
            now,
        );
        set_condition(&mut status, c);
    }
    status
}

/// Every desired pod is updated and available, and the latest spec has been seen.
pub fn deployment_complete(d: &Deployment, status: &DeploymentStatus) -> bool {
    let desired = spec_replicas(d);
    status.updated_replicas.unwrap_or(0) == desired
        && status.replicas.unwrap_or(0) == desired
        && status.available_replicas.unwrap_or(0) == desired
        && status.observed_generation.unwrap_or(0) >= d.metadata.generation.unwrap_or(0)
}

/// Whether `new` shows progress over the Deployment's current status.
pub fn deployment_progressing(d: &Deployment, new: &DeploymentStatus) -> bool {
    let old = d.status.clone().unwrap_or_default();
    let old_old = old.replicas.unwrap_or(0) - old.updated_replicas.unwrap_or(0);
    let new_old = new.replicas.unwrap_or(0) - new.updated_replicas.unwrap_or(0);
    new.updated_replicas.unwrap_or(0) > old.updated_replicas.unwrap_or(0)
        || new_old < old_old
        || new.ready_replicas.unwrap_or(0) > old.ready_replicas.unwrap_or(0)
        || new.available_replicas.unwrap_or(0) > old.available_replicas.unwrap_or(0)
}

/// Whether the rollout has made no progress for progressDeadlineSeconds.
pub fn deployment_timed_out(d: &Deployment, status: &DeploymentStatus, now: Timestamp) -> bool {
    let Some(deadline) = progress_deadline(d) else {
        return false;
    };
    let Some(condition) = get_condition(status, PROGRESSING) else {
        return false;
    };
    match condition.reason.as_deref() {
        Some(NEW_RS_AVAILABLE_REASON) => return false,
        Some(TIMED_OUT_REASON) => return true,
        _ => {}
    }
    let Some(from) = condition.last_update_time.as_ref() else {
        return false;
    };
    from.0
        .checked_add(SignedDuration::from_secs(i64::from(deadline)))
        .is_ok_and(|at| at < now)
}

/// The Progressing condition after this sync (upstream's `syncRolloutStatus`), on a status from
/// [`calculate_status`]; `new_rs` is the new ReplicaSet's name.
pub fn rollout_conditions(
    d: &Deployment,
    status: &mut DeploymentStatus,
    new_rs: Option<&str>,
    now: Timestamp,
) {
    if progress_deadline(d).is_none() {
        remove_condition(status, PROGRESSING);
        return;
    }
    let name = d.metadata.name.as_deref().unwrap_or_default();
    let current = d
        .status
        .as_ref()
        .and_then(|s| get_condition(s, PROGRESSING))
        .cloned();
    let complete_before = status.replicas == status.updated_replicas
        && current.as_ref().and_then(|c| c.reason.as_deref()) == Some(NEW_RS_AVAILABLE_REASON);
    if complete_before {
        return;
    }
    if deployment_complete(d, status) {
        let message = match new_rs {
            Some(rs) => format!("ReplicaSet \"{rs}\" has successfully progressed."),
            None => format!("Deployment \"{name}\" has successfully progressed."),
        };
        set_condition(
            status,
            new_condition(PROGRESSING, "True", NEW_RS_AVAILABLE_REASON, message, now),
        );
    } else if deployment_progressing(d, status) {
        let message = match new_rs {
            Some(rs) => format!("ReplicaSet \"{rs}\" is progressing."),
            None => format!("Deployment \"{name}\" is progressing."),
        };
        // Progress refreshes lastUpdateTime even with the same reason, which restarts the
        // deadline; the transition time stays while the status stays True.
        let mut condition = new_condition(
            PROGRESSING,
            "True",
            REPLICA_SET_UPDATED_REASON,
            message,
            now,
        );
        if let Some(current) = &current {
            if current.status == "True" {
                condition.last_transition_time = current.last_transition_time.clone();
            }
            remove_condition(status, PROGRESSING);
        }
        set_condition(status, condition);
    } else if deployment_timed_out(d, status, now) {
        let message = match new_rs {
            Some(rs) => format!("ReplicaSet \"{rs}\" has timed out progressing."),
            None => format!("Deployment \"{name}\" has timed out progressing."),
        };
        set_condition(
            status,
            new_condition(PROGRESSING, "False", TIMED_OUT_REASON, message, now),
        );
    }
}

/// When to look again so that a stalled rollout is marked timed out on time (upstream's
/// `requeueStuckDeployment`); `None` when nothing is pending.
pub fn requeue_stuck_after(
    d: &Deployment,
    status: &DeploymentStatus,
    now: Timestamp,
) -> Option<std::time::Duration> {
    let deadline = progress_deadline(d)?;
    let condition = get_condition(status, PROGRESSING)?;
    if deployment_complete(d, status) || condition.reason.as_deref() == Some(TIMED_OUT_REASON) {
        return None;
    }
    let from = condition.last_update_time.as_ref()?.0;
    let at = from
        .checked_add(SignedDuration::from_secs(i64::from(deadline)))
        .ok()?;
    let wait = at.duration_since(now);
    if wait < SignedDuration::from_secs(1) {
        return Some(std::time::Duration::from_millis(200));
    }
    Some(wait.unsigned_abs() + std::time::Duration::from_millis(500))
}

/// Statuses compared as the API returns them (omitted counts are zero, no empty lists).
pub fn normalized(status: &DeploymentStatus) -> DeploymentStatus {
    let zero = |v: Option<i32>| Some(v.unwrap_or(0));
    DeploymentStatus {
        available_replicas: zero(status.available_replicas),
        collision_count: status.collision_count,
        conditions: status.conditions.clone().filter(|c| !c.is_empty()),
        observed_generation: status.observed_generation,
        ready_replicas: zero(status.ready_replicas),
        replicas: zero(status.replicas),
        terminating_replicas: status.terminating_replicas,
        unavailable_replicas: zero(status.unavailable_replicas),
        updated_replicas: zero(status.updated_replicas),
    }
}

#[cfg(test)]
mod tests;
