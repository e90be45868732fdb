//! Disruption controller: the status of every PodDisruptionBudget (currentHealthy,
//! desiredHealthy, expectedPods, disruptionsAllowed, observedGeneration and the
//! DisruptionAllowed condition) from the pods its selector matches, as upstream computes it.
//! The eviction subresource reads `disruptionsAllowed` to decide whether a pod may go.
//!
//! Pods are not cached here: each sync lists the budget's pods (served from the API server's
//! watch cache), and pod events only map to the budgets whose selector matches.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::core::v1::{Pod, ReplicationController};
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{
    Condition, LabelSelector, OwnerReference, Time,
};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::ResourceExt;
use kube::api::{Api, ListParams, PostParams};
use kube::core::{Selector, SelectorExt};
use kube::runtime::controller::{self, Action, ReconcileRequest};
use kube::runtime::events::{EventType, Reporter};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};

use crate::Context;
use crate::util::{controller_of, is_pod_ready, record_event};

/// How long a pod the eviction subresource approved may take to be deleted before it counts
/// as healthy again (upstream `DeletionTimeout`).
pub const DELETION_TIMEOUT: Duration = Duration::from_secs(120);

/// The condition type and its reasons, as upstream names them.
pub const DISRUPTION_ALLOWED: &str = "DisruptionAllowed";
pub const SUFFICIENT_PODS: &str = "SufficientPods";
pub const INSUFFICIENT_PODS: &str = "InsufficientPods";
pub const SYNC_FAILED: &str = "SyncFailed";

/// Recount every budget this often even without events (disrupted pods expiring, owners'
/// scale changing).
const RESYNC: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("listing the pods of PodDisruptionBudget {key}: {source}")]
    ListPods { key: String, source: kube::Error },
    #[error("reading the controller of a pod of PodDisruptionBudget {key}: {source}")]
    GetController { key: String, source: kube::Error },
    #[error("updating the status of PodDisruptionBudget {key}: {source}")]
    UpdateStatus { key: String, source: kube::Error },
}

pub async fn run(ctx: Arc<Context>) -> anyhow::Result<()> {
    let client = ctx.client.clone();
    let (budgets, writer) = reflector::store::<PodDisruptionBudget>();
    let budget_events = reflector::reflector(
        writer,
        watcher(
            Api::<PodDisruptionBudget>::all(client.clone()),
            watcher::Config::default(),
        )
        .default_backoff(),
    )
    .applied_objects()
    .map_ok(|pdb| ReconcileRequest::from(ObjectRef::from_obj(&pdb)));
    // Pods from the controllers' shared cache.
    let pod_events = {
        let budgets_of = budgets_of_pod(budgets.clone());
        ctx.informers
            .pods()
            .subscribe()
            .touched_objects()
            .map_ok(move |pod| {
                futures::stream::iter(
                    budgets_of(&pod)
                        .into_iter()
                        .map(|r| Ok(ReconcileRequest::from(r))),
                )
            })
            .try_flatten()
    };
    controller::applier(
        |pdb, ctx| Box::pin(reconcile(pdb, ctx)),
        error_policy,
        ctx,
        budgets,
        futures::stream::select(budget_events, pod_events),
        controller::Config::default().debounce(Duration::from_millis(300)),
    )
    .for_each(|result| async move {
        if let Err(e) = result {
            tracing::debug!(error = %e, "disruption reconcile");
        }
    })
    .await;
    Ok(())
}

/// The budgets in a pod's namespace whose selector matches it.
fn budgets_of_pod(
    budgets: Store<PodDisruptionBudget>,
) -> impl Fn(&Pod) -> Vec<ObjectRef<PodDisruptionBudget>> + Send + Sync + Clone + 'static {
    move |pod: &Pod| {
        let Some(ns) = pod.metadata.namespace.as_deref() else {
            return Vec::new();
        };
        let labels = pod.metadata.labels.clone().unwrap_or_default();
        budgets
            .state()
            .iter()
            .filter(|b| b.metadata.namespace.as_deref() == Some(ns))
            .filter(|b| selector_of(b).is_some_and(|s| s.matches(&labels)))
            .map(|b| ObjectRef::from_obj(b.as_ref()))
            .collect()
    }
}

/// The budget's selector; `None` (no selector, or one that does not parse) selects nothing.
fn selector_of(pdb: &PodDisruptionBudget) -> Option<Selector> {
    let selector: LabelSelector = pdb.spec.as_ref()?.selector.clone()?;
    Selector::try_from(selector).ok()
}

fn reporter() -> Reporter {
    Reporter {
        controller: "controllermanager".into(),
        instance: None,
    }
}

async fn reconcile(pdb: Arc<PodDisruptionBudget>, ctx: Arc<Context>) -> Result<Action, Error> {
    let (Some(namespace), Some(name)) = (pdb.metadata.namespace.clone(), pdb.metadata.name.clone())
    else {
        return Ok(Action::await_change());
    };
    let key = format!("{namespace}/{name}");
    let now = Timestamp::now();
    let pods: Vec<Pod> = match selector_of(&pdb) {
        Some(selector) => {
            Api::<Pod>::namespaced(ctx.client.clone(), &namespace)
                .list(&ListParams::default().labels_from(&selector))
                .await
                .map_err(|source| Error::ListPods {
                    key: key.clone(),
                    source,
                })?
                .items
        }
        None => Vec::new(),
    };
    // Once per change to "no pods", not on every resync.
    if pods.is_empty()
        && pdb
            .status
            .as_ref()
            .is_none_or(|s| s.expected_pods != 0 || s.conditions.is_none())
    {
        record_event(
            &ctx.client,
            &reporter(),
            pdb.as_ref(),
            EventType::Normal,
            "NoPods",
            "Sync",
            "No matching pods found".into(),
        );
    }
    let spec = pdb.spec.clone().unwrap_or_default();
    let needs_scale = spec.max_unavailable.is_some()
        || matches!(spec.min_available, Some(IntOrString::String(_)));
    let scale = if needs_scale {
        match expected_scale(&ctx.client, &namespace, &pods, &key).await? {
            Ok(scale) => Some(scale),
            Err(message) => {
                record_event(
                    &ctx.client,
                    &reporter(),
                    pdb.as_ref(),
                    EventType::Warning,
                    "CalculateExpectedPodCountFailed",
                    "Sync",
                    format!("Failed to calculate the number of expected pods: {message}"),
                );
                return fail_safe(&ctx.client, &pdb, &key, &message).await;
            }
        }
    } else {
        None
    };
    let (expected, desired) = match expected_and_desired(&spec, pods.len(), scale) {
        Ok(v) => v,
        Err(message) => return fail_safe(&ctx.client, &pdb, &key, &message).await,
    };
    let (disrupted, recheck) = live_disrupted_pods(&pdb, &pods, now);
    let healthy = count_healthy(&pods, &disrupted, now);
    let status = next_status(&pdb, healthy, desired, expected, disrupted, now);
    if pdb.status.as_ref() != Some(&status) {
        write_status(&ctx.client, &pdb, status.clone(), &key).await?;
        tracing::info!(
            pdb = %key,
            current_healthy = status.current_healthy,
            desired_healthy = status.desired_healthy,
            disruptions_allowed = status.disruptions_allowed,
            "updated disruption budget status"
        );
    }
    let after = recheck
        .map(|at| at.duration_since(now).unsigned_abs() + Duration::from_secs(1))
        .map_or(RESYNC, |d| d.min(RESYNC));
    Ok(Action::requeue(after))
}

async fn write_status(
    client: &kube::Client,
    pdb: &PodDisruptionBudget,
    status: PodDisruptionBudgetStatus,
    key: &str,
) -> Result<(), Error> {
    let mut updated = pdb.clone();
    updated.status = Some(status);
    let api: Api<PodDisruptionBudget> = Api::namespaced(
        client.clone(),
        pdb.metadata.namespace.as_deref().unwrap_or_default(),
    );
    match api
        .replace_status(&pdb.name_any(), &PostParams::default(), &updated)
        .await
    {
        Ok(_) => Ok(()),
        // Stale or gone: the watch brings the new state and another sync.
        Err(kube::Error::Api(e)) if e.code == 409 || e.code == 404 => Ok(()),
        Err(source) => Err(Error::UpdateStatus {
            key: key.to_string(),
            source,
        }),
    }
}

/// After a failed sync, at least make sure no eviction is allowed (upstream's fail-safe).
async fn fail_safe(
    client: &kube::Client,
    pdb: &PodDisruptionBudget,
    key: &str,
    message: &str,
) -> Result<Action, Error> {
    tracing::warn!(pdb = %key, error = %message, "cannot compute disruption budget");
    let mut status = pdb.status.clone().unwrap_or_default();
    status.disruptions_allowed = 0;
    let generation = status.observed_generation;
    set_condition(
        &mut status,
        Condition {
            type_: DISRUPTION_ALLOWED.into(),
            status: "False".into(),
            reason: SYNC_FAILED.into(),
            message: message.into(),
            observed_generation: generation,
            last_transition_time: Time(Timestamp::now()),
        },
    );
    if pdb.status.as_ref() != Some(&status) {
        write_status(client, pdb, status, key).await?;
    }
    Ok(Action::requeue(Duration::from_secs(10)))
}

/// `value` of `total`: an integer as is, a percentage rounded up.
pub fn scaled_value(value: &IntOrString, total: i32) -> Result<i32, String> {
    match value {
        IntOrString::Int(v) => Ok(*v),
        IntOrString::String(s) => {
            let percent: i64 = s
                .strip_suffix('%')
                .and_then(|p| p.parse().ok())
                .ok_or_else(|| format!("invalid value for IntOrString: invalid value {s:?}"))?;
            Ok(((percent * i64::from(total) + 99) / 100) as i32)
        }
    }
}

/// (expectedPods, desiredHealthy) as upstream: maxUnavailable and percentage minAvailable are
/// relative to the owners' scale; an integer minAvailable counts the matching pods.
pub fn expected_and_desired(
    spec: &k8s_openapi::api::policy::v1::PodDisruptionBudgetSpec,
    matching_pods: usize,
    scale: Option<i32>,
) -> Result<(i32, i32), String> {
    if let Some(max_unavailable) = &spec.max_unavailable {
        let expected = scale.unwrap_or(0);
        let unavailable = scaled_value(max_unavailable, expected)?;
        return Ok((expected, (expected - unavailable).max(0)));
    }
    match &spec.min_available {
        Some(IntOrString::Int(min)) => Ok((matching_pods as i32, *min)),
        Some(min @ IntOrString::String(_)) => {
            let expected = scale.unwrap_or(0);
            Ok((expected, scaled_value(min, expected)?))
        }
        None => Ok((0, 0)),
    }
}

/// Pods that are Ready and not on their way out.
pub fn count_healthy(pods: &[Pod], disrupted: &BTreeMap<String, Time>, now: Timestamp) -> i32 {
    pods.iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .filter(|p| {
            disrupted
                .get(&p.name_any())
                .is_none_or(|at| deletion_expected_by(at) <= now)
        })
        .filter(|p| is_pod_ready(p))
        .count() as i32
}

fn deletion_expected_by(at: &Time) -> Timestamp {
    at.0.checked_add(SignedDuration::from_secs(DELETION_TIMEOUT.as_secs() as i64))
        .unwrap_or(at.0)
}

/// The budget's disrupted pods that are still expected to go: present, not yet being deleted,
/// and within the deletion timeout. Also when the earliest of them expires.
pub fn live_disrupted_pods(
    pdb: &PodDisruptionBudget,
    pods: &[Pod],
    now: Timestamp,
) -> (BTreeMap<String, Time>, Option<Timestamp>) {
    let Some(disrupted) = pdb.status.as_ref().and_then(|s| s.disrupted_pods.as_ref()) else {
        return (BTreeMap::new(), None);
    };
    let mut live = BTreeMap::new();
    let mut recheck: Option<Timestamp> = None;
    for pod in pods
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
    {
        let name = pod.name_any();
        let Some(at) = disrupted.get(&name) else {
            continue;
        };
        let expires = deletion_expected_by(at);
        if expires < now {
            continue;
        }
        recheck = Some(recheck.map_or(expires, |r| r.min(expires)));
        live.insert(name, at.clone());
    }
    (live, recheck)
}

/// The status upstream writes for these counts, keeping the condition's transition time when
/// its status does not change.
pub fn next_status(
    pdb: &PodDisruptionBudget,
    current_healthy: i32,
    desired_healthy: i32,
    expected_pods: i32,
    disrupted: BTreeMap<String, Time>,
    now: Timestamp,
) -> PodDisruptionBudgetStatus {
    let mut allowed = current_healthy - desired_healthy;
    // No pods expected yet: stay safe until the first sync that sees them.
    if expected_pods <= 0 || allowed <= 0 {
        allowed = 0;
    }
    let generation = pdb.metadata.generation;
    let mut status = PodDisruptionBudgetStatus {
        conditions: pdb.status.as_ref().and_then(|s| s.conditions.clone()),
        current_healthy,
        desired_healthy,
        disrupted_pods: (!disrupted.is_empty()).then_some(disrupted),
        disruptions_allowed: allowed,
        expected_pods,
        observed_generation: generation,
    };
    let (value, reason) = if allowed > 0 {
        ("True", SUFFICIENT_PODS)
    } else {
        ("False", INSUFFICIENT_PODS)
    };
    set_condition(
        &mut status,
        Condition {
            type_: DISRUPTION_ALLOWED.into(),
            status: value.into(),
            reason: reason.into(),
            message: String::new(),
            observed_generation: generation,
            last_transition_time: Time(now),
        },
    );
    status
}

/// Upstream's `SetStatusCondition`: replace the condition of that type, keeping its transition
/// time unless its status changed.
fn set_condition(status: &mut PodDisruptionBudgetStatus, condition: Condition) {
    let conditions = status.conditions.get_or_insert_with(Vec::new);
    match conditions.iter_mut().find(|c| c.type_ == condition.type_) {
        Some(existing) => {
            let transition = if existing.status == condition.status {
                existing.last_transition_time.clone()
            } else {
                condition.last_transition_time.clone()
            };
            *existing = Condition {
                last_transition_time: transition,
                ..condition
            };
        }
        None => conditions.push(condition),
    }
}

/// The sum of the scales of the pods' controllers (each counted once). Pods without a
/// controller are left out, as upstream does; a pod whose controller has no known scale fails
/// the sync (the inner `Err` message).
async fn expected_scale(
    client: &kube::Client,
    namespace: &str,
    pods: &[Pod],
    key: &str,
) -> Result<Result<i32, String>, Error> {
    let mut scales: HashMap<String, i32> = HashMap::new();
    let mut known_owner: HashMap<String, Option<(String, i32)>> = HashMap::new();
    for pod in pods {
        let Some(owner) = controller_of(&pod.metadata) else {
            continue;
        };
        if !known_owner.contains_key(&owner.uid) {
            let found = controller_scale(client, namespace, owner)
                .await
                .map_err(|source| Error::GetController {
                    key: key.to_string(),
                    source,
                })?;
            known_owner.insert(owner.uid.clone(), found);
        }
        match &known_owner[&owner.uid] {
            Some((uid, scale)) => {
                scales.insert(uid.clone(), *scale);
            }
            None => {
                return Ok(Err(format!(
                    "found no controllers for pod {:?}",
                    pod.name_any()
                )));
            }
        }
    }
    Ok(Ok(scales.values().sum()))
}

/// The controller that owns pods through `owner`, as (uid, replicas): a ReplicationController,
/// the Deployment of a ReplicaSet (or the ReplicaSet itself), or a StatefulSet.
async fn controller_scale(
    client: &kube::Client,
    namespace: &str,
    owner: &OwnerReference,
) -> Result<Option<(String, i32)>, kube::Error> {
    let matches = |uid: Option<&String>| uid == Some(&owner.uid);
    match (owner.api_version.as_str(), owner.kind.as_str()) {
        ("v1", "ReplicationController") => {
            let rc = Api::<ReplicationController>::namespaced(client.clone(), namespace)
                .get_opt(&owner.name)
                .await?;
            Ok(rc.filter(|rc| matches(rc.metadata.uid.as_ref())).map(|rc| {
                let replicas = rc.spec.and_then(|s| s.replicas).unwrap_or(1);
                (owner.uid.clone(), replicas)
            }))
        }
        ("apps/v1", "ReplicaSet") => {
            let Some(rs) = Api::<ReplicaSet>::namespaced(client.clone(), namespace)
                .get_opt(&owner.name)
                .await?
                .filter(|rs| matches(rs.metadata.uid.as_ref()))
            else {
                return Ok(None);
            };
            if let Some(deploy_ref) = controller_of(&rs.metadata).filter(|r| r.kind == "Deployment")
            {
                let deployment = Api::<Deployment>::namespaced(client.clone(), namespace)
                    .get_opt(&deploy_ref.name)
                    .await?
                    .filter(|d| d.metadata.uid.as_ref() == Some(&deploy_ref.uid));
                return Ok(deployment.map(|d| {
                    let replicas = d.spec.and_then(|s| s.replicas).unwrap_or(1);
                    (deploy_ref.uid.clone(), replicas)
                }));
            }
            let replicas = rs.spec.and_then(|s| s.replicas).unwrap_or(1);
            Ok(Some((owner.uid.clone(), replicas)))
        }
        ("apps/v1", "StatefulSet") => {
            let sts = Api::<StatefulSet>::namespaced(client.clone(), namespace)
                .get_opt(&owner.name)
                .await?;
            Ok(sts.filter(|s| matches(s.metadata.uid.as_ref())).map(|s| {
                let replicas = s.spec.and_then(|s| s.replicas).unwrap_or(1);
                (owner.uid.clone(), replicas)
            }))
        }
        _ => Ok(None),
    }
}

fn error_policy(pdb: Arc<PodDisruptionBudget>, error: &Error, _ctx: Arc<Context>) -> Action {
    tracing::warn!(pdb = %pdb.name_any(), %error, "disruption controller");
    Action::requeue(Duration::from_secs(2))
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::policy::v1::PodDisruptionBudgetSpec;
    use serde_json::json;

    use super::*;

    fn spec(v: serde_json::Value) -> PodDisruptionBudgetSpec {
        serde_json::from_value(v).unwrap()
    }

    fn pod(name: &str, ready: bool) -> Pod {
        serde_json::from_value(
            json!({"metadata": {"name": name}, "status": {"conditions": [
            {"type": "Ready", "status": if ready { "True" } else { "False" }}]}}),
        )
        .unwrap()
    }

    fn t(secs: i64) -> Timestamp {
        Timestamp::from_second(secs).unwrap()
    }

    #[test]
    fn percentages_round_up() {
        assert_eq!(scaled_value(&IntOrString::String("50%".into()), 5), Ok(3));
        assert_eq!(scaled_value(&IntOrString::String("10%".into()), 3), Ok(1));
        assert_eq!(scaled_value(&IntOrString::Int(2), 5), Ok(2));
        assert!(scaled_value(&IntOrString::String("half".into()), 5).is_err());
    }

    #[test]
    fn expected_and_desired_follow_the_spec() {
        // Integer minAvailable counts matching pods.
        assert_eq!(
            expected_and_desired(&spec(json!({"minAvailable": 2})), 3, None),
            Ok((3, 2))
        );
        // Percentage minAvailable is of the owners' scale.
        assert_eq!(
            expected_and_desired(&spec(json!({"minAvailable": "50%"})), 3, Some(4)),
            Ok((4, 2))
        );
        // maxUnavailable: desired is the scale minus the (rounded up) unavailable.
        assert_eq!(
            expected_and_desired(&spec(json!({"maxUnavailable": "30%"})), 3, Some(5)),
            Ok((5, 3))
        );
        assert_eq!(
            expected_and_desired(&spec(json!({"maxUnavailable": 9})), 3, Some(5)),
            Ok((5, 0))
        );
    }

    #[test]
    fn healthy_excludes_unready_deleting_and_recently_disrupted() {
        let mut deleting = pod("d", true);
        deleting.metadata.deletion_timestamp = Some(Time(t(100)));
        let pods = vec![pod("a", true), pod("b", false), deleting, pod("e", true)];
        let mut disrupted = BTreeMap::new();
        disrupted.insert("e".to_string(), Time(t(1000)));
        assert_eq!(count_healthy(&pods, &disrupted, t(1010)), 1);
        // Past the deletion timeout, the disrupted pod counts again.
        assert_eq!(count_healthy(&pods, &disrupted, t(1000 + 121)), 2);
    }

    #[test]
    fn status_allows_disruptions_beyond_desired() {
        let pdb: PodDisruptionBudget = serde_json::from_value(json!({
            "metadata": {"name": "b", "namespace": "n", "generation": 3},
            "spec": {"minAvailable": 2}}))
        .unwrap();
        let status = next_status(&pdb, 3, 2, 3, BTreeMap::new(), t(50));
        assert_eq!(status.disruptions_allowed, 1);
        assert_eq!(status.observed_generation, Some(3));
        let cond = &status.conditions.as_ref().unwrap()[0];
        assert_eq!(
            (
                cond.type_.as_str(),
                cond.status.as_str(),
                cond.reason.as_str()
            ),
            (DISRUPTION_ALLOWED, "True", SUFFICIENT_PODS)
        );

        // Same condition status later keeps its transition time; a change moves it.
        let mut pdb2 = pdb.clone();
        pdb2.status = Some(status);
        let same = next_status(&pdb2, 4, 2, 4, BTreeMap::new(), t(90));
        assert_eq!(
            same.conditions.as_ref().unwrap()[0].last_transition_time,
            Time(t(50))
        );
        let changed = next_status(&pdb2, 2, 2, 3, BTreeMap::new(), t(90));
        let cond = &changed.conditions.as_ref().unwrap()[0];
        assert_eq!(
            (cond.status.as_str(), cond.reason.as_str()),
            ("False", INSUFFICIENT_PODS)
        );
        assert_eq!(cond.last_transition_time, Time(t(90)));
        assert_eq!(changed.disruptions_allowed, 0);

        // No expected pods: never allowed.
        assert_eq!(
            next_status(&pdb, 3, 0, 0, BTreeMap::new(), t(1)).disruptions_allowed,
            0
        );
    }

    #[test]
    fn disrupted_pods_expire() {
        let pdb: PodDisruptionBudget = serde_json::from_value(json!({
            "metadata": {"name": "b"},
            "status": {"currentHealthy": 0, "desiredHealthy": 0, "disruptionsAllowed": 0, "expectedPods": 0,
                "disruptedPods": {"a": "1970-01-01T00:16:40Z", "gone": "1970-01-01T00:16:40Z"}}})).unwrap();
        let pods = vec![pod("a", true)];
        let (live, recheck) = live_disrupted_pods(&pdb, &pods, t(1010));
        assert_eq!(live.keys().collect::<Vec<_>>(), vec!["a"]);
        assert_eq!(recheck, Some(t(1120)));
        let (live, _) = live_disrupted_pods(&pdb, &pods, t(1200));
        assert!(live.is_empty());
    }
}
