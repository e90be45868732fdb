//! The Job controller's decisions, free of IO: which pods count as what, how many to run, which
//! indexes to start, which pods to remove, how pods are made from the template.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, HashSet};

use k8s_openapi::api::batch::v1::{Job, JobCondition, SuccessPolicy};
use k8s_openapi::api::core::v1::{EnvVar, EnvVarSource, ObjectFieldSelector, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::jiff::Timestamp;

use super::failure_policy::{self, Action};
use super::indexes::IndexSet;
use crate::util;

/// Keeps a finished pod around until the controller has counted it.
pub const TRACKING_FINALIZER: &str = "batch.kubernetes.io/job-tracking";
/// The completion index of an Indexed Job's pod (annotation and label).
pub const COMPLETION_INDEX: &str = "batch.kubernetes.io/job-completion-index";
/// How often this pod's index failed before it (with `backoffLimitPerIndex`).
pub const INDEX_FAILURE_COUNT: &str = "batch.kubernetes.io/job-index-failure-count";
/// Failures of this pod's index that the pod failure policy ignored.
pub const INDEX_IGNORED_FAILURE_COUNT: &str = "batch.kubernetes.io/job-index-ignored-failure-count";
/// The environment variable with the completion index, in every container.
pub const COMPLETION_INDEX_ENV: &str = "JOB_COMPLETION_INDEX";
/// Most pods created, deleted or counted in one sync, so one big Job does not starve others.
pub const MAX_POD_CREATE_DELETE_PER_SYNC: usize = 500;
pub const MAX_UNCOUNTED_PODS: usize = 500;

pub const COMPLETE: &str = "Complete";
pub const FAILED: &str = "Failed";
pub const SUSPENDED: &str = "Suspended";
pub const FAILURE_TARGET: &str = "FailureTarget";
pub const SUCCESS_CRITERIA_MET: &str = "SuccessCriteriaMet";

// ---- the Job ----

pub fn completions(job: &Job) -> Option<i32> {
    job.spec.as_ref()?.completions
}

pub fn parallelism(job: &Job) -> i32 {
    job.spec.as_ref().and_then(|s| s.parallelism).unwrap_or(1)
}

pub fn backoff_limit(job: &Job) -> i32 {
    job.spec.as_ref().and_then(|s| s.backoff_limit).unwrap_or(6)
}

pub fn backoff_limit_per_index(job: &Job) -> Option<i32> {
    job.spec.as_ref()?.backoff_limit_per_index
}

pub fn is_indexed(job: &Job) -> bool {
    job.spec
        .as_ref()
        .and_then(|s| s.completion_mode.as_deref())
        .is_some_and(|m| m == "Indexed")
}

pub fn is_suspended(job: &Job) -> bool {
    job.spec.as_ref().and_then(|s| s.suspend).unwrap_or(false)
}

/// `podReplacementPolicy: Failed` (the default with a pod failure policy): a replacement waits
/// until the old pod is fully terminated.
pub fn only_replace_failed(job: &Job) -> bool {
    let spec = job.spec.as_ref();
    spec.and_then(|s| s.pod_replacement_policy.as_deref()) == Some("Failed")
        || spec.is_some_and(|s| s.pod_failure_policy.is_some())
}

pub fn conditions(job: &Job) -> &[JobCondition] {
    job.status
        .as_ref()
        .and_then(|s| s.conditions.as_deref())
        .unwrap_or_default()
}

pub fn find_condition<'a>(job: &'a Job, type_: &str) -> Option<&'a JobCondition> {
    conditions(job)
        .iter()
        .find(|c| c.type_ == type_ && c.status == "True")
}

/// `Complete` or `Failed`, if the Job has finished.
pub fn finished_type(job: &Job) -> Option<&str> {
    conditions(job)
        .iter()
        .find(|c| (c.type_ == COMPLETE || c.type_ == FAILED) && c.status == "True")
        .map(|c| c.type_.as_str())
}

pub fn new_condition(
    type_: &str,
    status: &str,
    reason: &str,
    message: &str,
    now: Timestamp,
) -> JobCondition {
    JobCondition {
        type_: type_.into(),
        status: status.into(),
        reason: (!reason.is_empty()).then(|| reason.into()),
        message: (!message.is_empty()).then(|| message.into()),
        last_probe_time: Some(Time(now)),
        last_transition_time: Some(Time(now)),
    }
}

/// Set a condition of `type_` to `status` (adding it only when True, as upstream); whether the
/// list changed.
pub fn ensure_condition(
    list: &mut Vec<JobCondition>,
    type_: &str,
    status: &str,
    reason: &str,
    message: &str,
    now: Timestamp,
) -> bool {
    if let Some(c) = list.iter_mut().find(|c| c.type_ == type_) {
        let same = c.status == status
            && c.reason.as_deref().unwrap_or("") == reason
            && c.message.as_deref().unwrap_or("") == message;
        if same {
            return false;
        }
        *c = new_condition(type_, status, reason, message, now);
        return true;
    }
    if status == "True" {
        list.push(new_condition(type_, status, reason, message, now));
        return true;
    }
    false
}

// ---- its pods ----

pub fn phase(pod: &Pod) -> &str {
    pod.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("")
}

pub fn uid(pod: &Pod) -> &str {
    pod.metadata.uid.as_deref().unwrap_or("")
}

pub fn has_tracking_finalizer(pod: &Pod) -> bool {
    pod.metadata
        .finalizers
        .as_ref()
        .is_some_and(|f| f.iter().any(|f| f == TRACKING_FINALIZER))
}

/// The pod's completion index, from its annotation.
pub fn completion_index(pod: &Pod) -> Option<i32> {
    let value = pod.metadata.annotations.as_ref()?.get(COMPLETION_INDEX)?;
    value.parse::<i32>().ok().filter(|i| *i >= 0)
}

/// The index, if the pod has one below `completions`.
pub fn valid_index(pod: &Pod, completions: i32) -> Option<i32> {
    completion_index(pod).filter(|i| *i < completions)
}

fn annotation_count(pod: &Pod, key: &str) -> i32 {
    pod.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(key))
        .and_then(|v| v.parse::<i32>().ok())
        .filter(|v| *v >= 0)
        .unwrap_or(0)
}

pub fn index_failure_count(pod: &Pod) -> i32 {
    annotation_count(pod, INDEX_FAILURE_COUNT)
}

/// Being deleted, not yet terminal.
pub fn is_terminating(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_some() && !matches!(phase(pod), "Succeeded" | "Failed")
}

/// Failed, or (unless only failed pods are replaced) deleted before finishing: such pods never
/// get the chance to reach the Failed phase.
pub fn is_pod_failed(pod: &Pod, job: &Job) -> bool {
    if phase(pod) == "Failed" {
        return true;
    }
    if only_replace_failed(job) {
        return false;
    }
    pod.metadata.deletion_timestamp.is_some() && phase(pod) != "Succeeded"
}

/// Whether a failed pod counts against the backoff limit (the failure policy may ignore it).
pub fn counts_as_failure(pod: &Pod, job: &Job) -> bool {
    match job
        .spec
        .as_ref()
        .and_then(|s| s.pod_failure_policy.as_ref())
    {
        Some(policy) => failure_policy::match_pod(policy, pod).count_failed,
        None => true,
    }
}

/// When the pod finished: its containers' last exit, else when it stopped being ready, else
/// its deletion, else its creation.
pub fn finish_time(pod: &Pod) -> Timestamp {
    let status = pod.status.as_ref();
    let from_containers = status
        .and_then(|s| s.container_statuses.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|cs| cs.state.as_ref()?.terminated.as_ref()?.finished_at.as_ref())
        .map(|t| t.0)
        .max();
    if let Some(t) = from_containers {
        return t;
    }
    let not_ready = status
        .and_then(|s| s.conditions.as_ref())
        .and_then(|cs| {
            cs.iter()
                .find(|c| c.type_ == "Ready" && c.status == "False")
        })
        .and_then(|c| c.last_transition_time.as_ref())
        .map(|t| t.0);
    if let Some(t) = not_ready {
        return t;
    }
    if let Some(t) = &pod.metadata.deletion_timestamp {
        return t.0;
    }
    pod.metadata
        .creation_timestamp
        .as_ref()
        .map(|t| t.0)
        .unwrap_or(Timestamp::UNIX_EPOCH)
}

/// The sum of container restarts of running pods exceeds the backoff limit
/// (`restartPolicy: OnFailure`, where pods never fail but restart).
pub fn past_backoff_limit_on_failure(job: &Job, pods: &[&Pod]) -> bool {
    let policy = job
        .spec
        .as_ref()
        .and_then(|s| s.template.spec.as_ref())
        .and_then(|s| s.restart_policy.as_deref());
    if policy != Some("OnFailure") {
        return false;
    }
    let mut restarts = 0i32;
    for pod in pods {
        if !matches!(phase(pod), "Running" | "Pending") {
            continue;
        }
        let Some(status) = pod.status.as_ref() else {
            continue;
        };
        for list in [&status.init_container_statuses, &status.container_statuses]
            .into_iter()
            .flatten()
        {
            restarts += list.iter().map(|c| c.restart_count).sum::<i32>();
        }
    }
    let limit = backoff_limit(job);
    if limit == 0 {
        restarts > 0
    } else {
        restarts >= limit
    }
}

// ---- how many, which ----

/// How many pods should be active.
pub fn want_active(completions: Option<i32>, parallelism: i32, succeeded: i32, active: i32) -> i32 {
    match completions {
        // Without completions, any success means done: leave whatever runs, running.
        None if succeeded > 0 => active,
        None => parallelism,
        Some(c) => (c - succeeded).clamp(0, parallelism.max(0)),
    }
}

/// The lowest `count` indexes that are neither succeeded, failed nor running.
pub fn first_pending_indexes(
    completions: i32,
    succeeded: &IndexSet,
    failed: &IndexSet,
    active: &HashSet<i32>,
    count: usize,
) -> Vec<i32> {
    (0..completions)
        .filter(|i| !succeeded.contains(*i) && !failed.contains(*i) && !active.contains(i))
        .take(count)
        .collect()
}

/// How early in its life an active pod is: earlier pods are removed first (unscheduled before
/// scheduled, pending before running, not ready before ready, newer before older).
fn removal_rank(pod: &Pod) -> (bool, u8, bool, Reverse<Timestamp>) {
    let scheduled = pod
        .spec
        .as_ref()
        .and_then(|s| s.node_name.as_deref())
        .is_some_and(|n| !n.is_empty());
    let phase_rank = match phase(pod) {
        "Pending" | "" => 0,
        "Unknown" => 1,
        _ => 2,
    };
    let created = pod
        .metadata
        .creation_timestamp
        .as_ref()
        .map(|t| t.0)
        .unwrap_or(Timestamp::UNIX_EPOCH);
    (
        scheduled,
        phase_rank,
        util::is_pod_ready(pod),
        Reverse(created),
    )
}

/// Positions (in `pods`, the active pods) of the pods to remove: for Indexed Jobs every pod
/// with a missing, out-of-range or repeated index, then the earliest in their life until at
/// least `rm_at_least` are chosen.
pub fn active_pods_for_removal(
    pods: &[&Pod],
    indexed_completions: Option<i32>,
    rm_at_least: usize,
) -> Vec<usize> {
    let mut remove = Vec::new();
    let mut left: Vec<usize> = Vec::new();
    if let Some(completions) = indexed_completions {
        let mut by_index: BTreeMap<i32, Vec<usize>> = BTreeMap::new();
        for (i, pod) in pods.iter().enumerate() {
            match valid_index(pod, completions) {
                Some(ix) => by_index.entry(ix).or_default().push(i),
                None => remove.push(i),
            }
        }
        for (_, mut group) in by_index {
            // Keep the most advanced pod of an index.
            group.sort_by_key(|i| Reverse(removal_rank(pods[*i])));
            left.push(group[0]);
            remove.extend_from_slice(&group[1..]);
        }
    } else {
        left = (0..pods.len()).collect();
    }
    if remove.len() < rm_at_least {
        left.sort_by_key(|i| removal_rank(pods[*i]));
        let more = rm_at_least - remove.len();
        remove.extend(left.into_iter().take(more));
    }
    remove
}

/// The success policy's verdict on the succeeded indexes: the condition message when met.
pub fn match_success_policy(
    policy: Option<&SuccessPolicy>,
    completions: i32,
    succeeded: &IndexSet,
) -> Option<String> {
    let policy = policy?;
    for (i, rule) in policy.rules.iter().enumerate() {
        let met = match (&rule.succeeded_indexes, rule.succeeded_count) {
            (Some(indexes), count) => {
                let wanted = IndexSet::parse(indexes, completions);
                let done = wanted.iter().filter(|ix| succeeded.contains(*ix)).count();
                match count {
                    Some(c) => done >= c.max(0) as usize,
                    None => !wanted.is_empty() && done == wanted.len(),
                }
            }
            (None, Some(c)) => succeeded.len() >= c.max(0) as usize,
            (None, None) => false,
        };
        if met {
            return Some(format!("Matched rules at index {i}"));
        }
    }
    None
}

/// Whether a failed pod's index has now failed for good (`backoffLimitPerIndex`).
pub fn is_index_failed(job: &Job, pod: &Pod) -> bool {
    let Some(limit) = backoff_limit_per_index(job) else {
        return false;
    };
    if !is_pod_failed(pod, job) {
        return false;
    }
    let counted = match job
        .spec
        .as_ref()
        .and_then(|s| s.pod_failure_policy.as_ref())
    {
        Some(policy) => {
            let verdict = failure_policy::match_pod(policy, pod);
            if verdict.action == Some(Action::FailIndex) {
                return true;
            }
            verdict.count_failed
        }
        None => true,
    };
    counted && index_failure_count(pod) >= limit
}

/// For `backoffLimitPerIndex`: per index still to run, its latest failed pod (the replacement
/// inherits its failure counts; its finalizer stays until a replacement exists).
pub fn last_failed_pod_per_index<'a>(
    job: &Job,
    pods: &[&'a Pod],
    succeeded: &IndexSet,
    failed: &IndexSet,
) -> BTreeMap<i32, &'a Pod> {
    let completions = completions(job).unwrap_or(0);
    let active: BTreeSet<i32> = pods
        .iter()
        .filter(|p| util::is_pod_active(p))
        .filter_map(|p| valid_index(p, completions))
        .collect();
    let mut out: BTreeMap<i32, &Pod> = BTreeMap::new();
    for pod in pods {
        if !is_pod_failed(pod, job) || !has_tracking_finalizer(pod) {
            continue;
        }
        let Some(ix) = valid_index(pod, completions) else {
            continue;
        };
        if succeeded.contains(ix) || failed.contains(ix) || active.contains(&ix) {
            continue;
        }
        let newer = out
            .get(&ix)
            .is_none_or(|p| finish_time(p) < finish_time(pod));
        if newer {
            out.insert(ix, pod);
        }
    }
    out
}

/// The failure counts a replacement of `previous` (a failed pod of the same index) starts with.
pub fn next_failure_counts(job: &Job, previous: Option<&Pod>) -> (i32, i32) {
    let Some(prev) = previous else {
        return (0, 0);
    };
    let failures = index_failure_count(prev);
    let ignored = annotation_count(prev, INDEX_IGNORED_FAILURE_COUNT);
    if counts_as_failure(prev, job) {
        (failures + 1, ignored)
    } else {
        (failures, ignored + 1)
    }
}

/// A pod for the Job from its template: the Job's controller reference, the tracking
/// finalizer and, for Indexed Jobs, the index (annotation, label, hostname, environment).
pub fn new_pod(job: &Job, index: Option<i32>, failure_counts: Option<(i32, i32)>) -> Pod {
    let job_name = job.metadata.name.clone().unwrap_or_default();
    let template = job
        .spec
        .as_ref()
        .map(|s| s.template.clone())
        .unwrap_or_default();
    let template_meta = template.metadata.unwrap_or_default();
    let mut spec = template.spec.unwrap_or_default();
    let mut labels = template_meta.labels.unwrap_or_default();
    let mut annotations = template_meta.annotations.unwrap_or_default();
    let mut finalizers = template_meta.finalizers.unwrap_or_default();
    if !finalizers.iter().any(|f| f == TRACKING_FINALIZER) {
        finalizers.push(TRACKING_FINALIZER.into());
    }
    let generate_name = match index {
        Some(ix) => {
            annotations.insert(COMPLETION_INDEX.into(), ix.to_string());
            labels.insert(COMPLETION_INDEX.into(), ix.to_string());
            spec.hostname = Some(format!("{job_name}-{ix}"));
            let env = EnvVar {
                name: COMPLETION_INDEX_ENV.into(),
                value: None,
                value_from: Some(EnvVarSource {
                    field_ref: Some(ObjectFieldSelector {
                        api_version: None,
                        field_path: format!("metadata.annotations['{COMPLETION_INDEX}']"),
                    }),
                    ..Default::default()
                }),
            };
            let containers = spec
                .containers
                .iter_mut()
                .chain(spec.init_containers.iter_mut().flatten());
            for c in containers {
                let vars = c.env.get_or_insert_with(Vec::new);
                if !vars.iter().any(|v| v.name == COMPLETION_INDEX_ENV) {
                    vars.push(env.clone());
                }
            }
            if let Some((failures, ignored)) = failure_counts {
                annotations.insert(INDEX_FAILURE_COUNT.into(), failures.to_string());
                if ignored > 0 {
                    annotations.insert(INDEX_IGNORED_FAILURE_COUNT.into(), ignored.to_string());
                }
            }
            generate_name_with_index(&job_name, ix)
        }
        None => format!("{}-", truncate(&job_name, MAX_GENERATED_PREFIX)),
    };
    Pod {
        metadata: ObjectMeta {
            generate_name: Some(generate_name),
            namespace: job.metadata.namespace.clone(),
            labels: (!labels.is_empty()).then_some(labels),
            annotations: (!annotations.is_empty()).then_some(annotations),
            finalizers: Some(finalizers),
            owner_references: util::controller_ref(job).map(|r| vec![r]),
            ..Default::default()
        },
        spec: Some(spec),
        status: None,
    }
}

/// Names are at most 63 characters; the server adds 5 random ones to a generateName.
const MAX_GENERATED_PREFIX: usize = 58;

fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// `<job>-<index>-`, shortening the Job's name so the prefix leaves room for the random part.
pub fn generate_name_with_index(job_name: &str, index: i32) -> String {
    let suffix = format!("-{index}-");
    let room = MAX_GENERATED_PREFIX.saturating_sub(suffix.len());
    format!("{}{suffix}", truncate(job_name, room))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn job(spec: serde_json::Value) -> Job {
        serde_json::from_value(json!({
            "metadata": {"name": "pi", "namespace": "ns", "uid": "job-uid"},
            "spec": spec,
        }))
        .unwrap()
    }

    fn pod(v: serde_json::Value) -> Pod {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn want_active_respects_completions_and_parallelism() {
        // completions 3, parallelism 2: two at a time, then the last one.
        assert_eq!(want_active(Some(3), 2, 0, 0), 2);
        assert_eq!(want_active(Some(3), 2, 2, 0), 1);
        assert_eq!(want_active(Some(3), 2, 3, 0), 0);
        assert_eq!(want_active(Some(3), 2, 5, 0), 0);
        // Work queue style: parallelism until one succeeds, then let the rest finish.
        assert_eq!(want_active(None, 4, 0, 1), 4);
        assert_eq!(want_active(None, 4, 1, 3), 3);
        assert_eq!(want_active(Some(2), 0, 0, 0), 0);
    }

    #[test]
    fn pending_indexes_skip_done_failed_and_running() {
        let succeeded = IndexSet::parse("0,2", 6);
        let failed = IndexSet::parse("4", 6);
        let active: HashSet<i32> = [1].into_iter().collect();
        assert_eq!(
            first_pending_indexes(6, &succeeded, &failed, &active, 5),
            vec![3, 5]
        );
        assert_eq!(
            first_pending_indexes(6, &succeeded, &failed, &active, 1),
            vec![3]
        );
    }

    #[test]
    fn removal_prefers_duplicates_then_unscheduled_pods() {
        let p = |name: &str, index: Option<i32>, node: Option<&str>, phase: &str| {
            let mut annotations = serde_json::Map::new();
            if let Some(i) = index {
                annotations.insert(COMPLETION_INDEX.into(), json!(i.to_string()));
            }
            pod(json!({
                "metadata": {"name": name, "annotations": annotations,
                             "creationTimestamp": "2024-01-01T00:00:00Z"},
                "spec": {"containers": [], "nodeName": node},
                "status": {"phase": phase},
            }))
        };
        let pods = [
            p("a", Some(0), Some("n1"), "Running"),
            p("b", Some(0), None, "Pending"),
            p("c", Some(1), Some("n1"), "Running"),
            p("d", Some(9), Some("n1"), "Running"),
            p("e", Some(2), None, "Pending"),
        ];
        let refs: Vec<&Pod> = pods.iter().collect();
        let mut rm = active_pods_for_removal(&refs, Some(3), 0);
        rm.sort();
        // The out-of-range index and the less advanced duplicate of index 0.
        assert_eq!(rm, vec![1, 3]);
        let rm = active_pods_for_removal(&refs, Some(3), 3);
        assert_eq!(rm.len(), 3);
        assert_eq!(rm[2], 4, "then the unscheduled pod");
        // NonIndexed: the least advanced first.
        let rm = active_pods_for_removal(&refs, None, 2);
        let mut names: Vec<_> = rm
            .iter()
            .map(|i| refs[*i].metadata.name.clone().unwrap())
            .collect();
        names.sort();
        assert_eq!(names, vec!["b", "e"]);
    }

    #[test]
    fn deleted_pods_fail_unless_only_failed_pods_are_replaced() {
        let deleted = pod(json!({
            "metadata": {"name": "x", "deletionTimestamp": "2024-01-01T00:00:00Z"},
            "status": {"phase": "Running"},
        }));
        let plain = job(json!({"template": {}}));
        assert!(is_pod_failed(&deleted, &plain));
        assert!(is_terminating(&deleted));
        let failed_only = job(json!({"template": {}, "podReplacementPolicy": "Failed"}));
        assert!(!is_pod_failed(&deleted, &failed_only));
    }

    #[test]
    fn indexed_pod_from_template() {
        let j = job(json!({
            "completionMode": "Indexed", "completions": 3,
            "template": {
                "metadata": {"labels": {"batch.kubernetes.io/job-name": "pi"}},
                "spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "busybox"}]},
            },
        }));
        let p = new_pod(&j, Some(2), None);
        assert_eq!(p.metadata.generate_name.as_deref(), Some("pi-2-"));
        assert_eq!(
            p.metadata.annotations.as_ref().unwrap()[COMPLETION_INDEX],
            "2"
        );
        assert_eq!(p.metadata.labels.as_ref().unwrap()[COMPLETION_INDEX], "2");
        assert_eq!(
            p.metadata.labels.as_ref().unwrap()["batch.kubernetes.io/job-name"],
            "pi"
        );
        assert_eq!(
            p.metadata.finalizers.as_deref(),
            Some(&[TRACKING_FINALIZER.to_string()][..])
        );
        let spec = p.spec.as_ref().unwrap();
        assert_eq!(spec.hostname.as_deref(), Some("pi-2"));
        let env = &spec.containers[0].env.as_ref().unwrap()[0];
        assert_eq!(env.name, COMPLETION_INDEX_ENV);
        let owner = &p.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!(
            (owner.kind.as_str(), owner.uid.as_str(), owner.controller),
            ("Job", "job-uid", Some(true))
        );
        let p = new_pod(&j, None, None);
        assert_eq!(p.metadata.generate_name.as_deref(), Some("pi-"));
        assert!(p.metadata.annotations.is_none());
        let long = "x".repeat(70);
        assert_eq!(generate_name_with_index(&long, 12).len(), 58);
    }

    #[test]
    fn success_policy_rules() {
        let policy: SuccessPolicy = serde_json::from_value(json!({"rules": [
            {"succeededIndexes": "0-2", "succeededCount": 2},
            {"succeededIndexes": "4"},
        ]}))
        .unwrap();
        assert_eq!(
            match_success_policy(Some(&policy), 5, &IndexSet::parse("0,3", 5)),
            None
        );
        assert_eq!(
            match_success_policy(Some(&policy), 5, &IndexSet::parse("0,2", 5)).as_deref(),
            Some("Matched rules at index 0")
        );
        assert_eq!(
            match_success_policy(Some(&policy), 5, &IndexSet::parse("4", 5)).as_deref(),
            Some("Matched rules at index 1")
        );
    }

    #[test]
    fn index_failure_counts_carry_over() {
        let j = job(
            json!({"completionMode": "Indexed", "completions": 2, "backoffLimitPerIndex": 1, "template": {}}),
        );
        let failed = pod(json!({
            "metadata": {"name": "x", "annotations": {COMPLETION_INDEX: "1", INDEX_FAILURE_COUNT: "0"},
                         "finalizers": [TRACKING_FINALIZER]},
            "status": {"phase": "Failed"},
        }));
        assert!(!is_index_failed(&j, &failed));
        assert_eq!(next_failure_counts(&j, Some(&failed)), (1, 0));
        let again = pod(json!({
            "metadata": {"name": "y", "annotations": {COMPLETION_INDEX: "1", INDEX_FAILURE_COUNT: "1"}},
            "status": {"phase": "Failed"},
        }));
        assert!(is_index_failed(&j, &again));
        let pods = [&failed];
        let last = last_failed_pod_per_index(&j, &pods, &IndexSet::default(), &IndexSet::default());
        assert_eq!(last.keys().copied().collect::<Vec<_>>(), vec![1]);
    }

    #[test]
    fn conditions_are_added_only_when_true() {
        let now = Timestamp::from_second(1_700_000_000).unwrap();
        let mut list = Vec::new();
        assert!(!ensure_condition(
            &mut list,
            SUSPENDED,
            "False",
            "JobResumed",
            "Job resumed",
            now
        ));
        assert!(ensure_condition(
            &mut list,
            SUSPENDED,
            "True",
            "JobSuspended",
            "Job suspended",
            now
        ));
        assert!(!ensure_condition(
            &mut list,
            SUSPENDED,
            "True",
            "JobSuspended",
            "Job suspended",
            now
        ));
        assert!(ensure_condition(
            &mut list,
            SUSPENDED,
            "False",
            "JobResumed",
            "Job resumed",
            now
        ));
        assert_eq!(list.len(), 1);
        assert_eq!(list[0].status, "False");
    }
}
