//! Unit tests of the StatefulSet decisions: which ordinals are created, deleted and updated next.

use std::sync::Arc;

use k8s_openapi::api::apps::v1::{
    RollingUpdateStatefulSetStrategy, StatefulSet, StatefulSetPersistentVolumeClaimRetentionPolicy,
    StatefulSetSpec, StatefulSetUpdateStrategy,
};
use k8s_openapi::api::core::v1::{
    Container, PersistentVolumeClaim, Pod, PodCondition, PodSpec, PodStatus, PodTemplateSpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{
    LabelSelector, ObjectMeta, OwnerReference, Time,
};
use k8s_openapi::jiff::{SignedDuration, Timestamp};

use super::plan::{self, DeleteReason, Revisions, Step};

fn set(replicas: i32) -> StatefulSet {
    StatefulSet {
        metadata: ObjectMeta {
            name: Some("web".into()),
            namespace: Some("default".into()),
            uid: Some("set-uid".into()),
            generation: Some(2),
            ..Default::default()
        },
        spec: Some(StatefulSetSpec {
            replicas: Some(replicas),
            service_name: Some("nginx".into()),
            selector: LabelSelector {
                match_labels: Some([("app".to_string(), "web".to_string())].into()),
                ..Default::default()
            },
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some([("app".to_string(), "web".to_string())].into()),
                    ..Default::default()
                }),
                spec: Some(PodSpec {
                    containers: vec![Container {
                        name: "nginx".into(),
                        image: Some("nginx:1".into()),
                        ..Default::default()
                    }],
                    ..Default::default()
                }),
            },
            volume_claim_templates: Some(vec![PersistentVolumeClaim {
                metadata: ObjectMeta {
                    name: Some("www".into()),
                    ..Default::default()
                },
                ..Default::default()
            }]),
            pod_management_policy: Some("OrderedReady".into()),
            update_strategy: Some(StatefulSetUpdateStrategy {
                type_: Some("RollingUpdate".into()),
                rolling_update: Some(RollingUpdateStatefulSetStrategy {
                    partition: Some(0),
                    max_unavailable: None,
                }),
            }),
            ..Default::default()
        }),
        status: None,
    }
}

fn with_policy(mut s: StatefulSet, policy: &str) -> StatefulSet {
    s.spec.as_mut().unwrap().pod_management_policy = Some(policy.into());
    s
}

fn with_partition(mut s: StatefulSet, partition: i32) -> StatefulSet {
    s.spec
        .as_mut()
        .unwrap()
        .update_strategy
        .as_mut()
        .unwrap()
        .rolling_update
        .as_mut()
        .unwrap()
        .partition = Some(partition);
    s
}

fn on_delete(mut s: StatefulSet) -> StatefulSet {
    s.spec.as_mut().unwrap().update_strategy = Some(StatefulSetUpdateStrategy {
        type_: Some("OnDelete".into()),
        rolling_update: None,
    });
    s
}

#[derive(Clone, Copy)]
enum State {
    Pending,
    Ready,
    Failed,
    Terminating,
}

fn pod(set: &StatefulSet, ordinal: i32, revision: &str, state: State) -> Arc<Pod> {
    let mut pod = plan::new_pod(set, ordinal, revision);
    pod.metadata.uid = Some(format!("pod-uid-{ordinal}"));
    let (phase, ready) = match state {
        State::Pending => ("Pending", "False"),
        State::Ready | State::Terminating => ("Running", "True"),
        State::Failed => ("Failed", "False"),
    };
    if matches!(state, State::Terminating) {
        pod.metadata.deletion_timestamp = Some(Time(Timestamp::now()));
    }
    pod.status = Some(PodStatus {
        phase: Some(phase.into()),
        conditions: Some(vec![PodCondition {
            type_: "Ready".into(),
            status: ready.into(),
            last_transition_time: Some(Time(
                Timestamp::now()
                    .checked_sub(SignedDuration::from_secs(60))
                    .unwrap(),
            )),
            ..Default::default()
        }]),
        ..Default::default()
    });
    Arc::new(pod)
}

/// Plan with "old" as current and "new" as update revision, both the set's own template.
fn run(set: &StatefulSet, pods: &[Arc<Pod>]) -> plan::Plan {
    let revs = Revisions {
        current_set: set,
        update_set: set,
        current: "web-old",
        update: "web-new",
    };
    plan::plan(set, &revs, pods, Timestamp::now())
}

/// The steps as short strings: "create web-0", "delete web-2 (ScaleDown)", ...
fn steps(plan: &plan::Plan) -> Vec<String> {
    plan.steps
        .iter()
        .map(|s| match s {
            Step::Create(p) => format!("create {}", p.metadata.name.as_deref().unwrap()),
            Step::Delete(p, why) => {
                format!("delete {} ({why:?})", p.metadata.name.as_deref().unwrap())
            }
            Step::Update(p) => format!("update {}", p.metadata.name.as_deref().unwrap()),
            Step::EnsureClaims(o) => format!("claims {o}"),
        })
        .collect()
}

#[test]
fn ordinals_parse_from_names() {
    assert_eq!(plan::parent_and_ordinal("web-0"), Some(("web", 0)));
    assert_eq!(plan::parent_and_ordinal("my-web-12"), Some(("my-web", 12)));
    assert_eq!(plan::parent_and_ordinal("web-x"), None);
    assert_eq!(plan::parent_and_ordinal("web"), None);
    assert_eq!(plan::parent_and_ordinal("web-"), None);
}

#[test]
fn new_pod_has_stable_identity_and_claims() {
    let s = set(3);
    let p = plan::new_pod(&s, 1, "web-abc");
    assert_eq!(p.metadata.name.as_deref(), Some("web-1"));
    let labels = p.metadata.labels.as_ref().unwrap();
    assert_eq!(labels["statefulset.kubernetes.io/pod-name"], "web-1");
    assert_eq!(labels["apps.kubernetes.io/pod-index"], "1");
    assert_eq!(labels["controller-revision-hash"], "web-abc");
    assert_eq!(labels["app"], "web");
    let spec = p.spec.as_ref().unwrap();
    assert_eq!(spec.hostname.as_deref(), Some("web-1"));
    assert_eq!(spec.subdomain.as_deref(), Some("nginx"));
    let volumes = spec.volumes.as_ref().unwrap();
    assert_eq!(volumes[0].name, "www");
    assert_eq!(
        volumes[0]
            .persistent_volume_claim
            .as_ref()
            .unwrap()
            .claim_name,
        "www-web-1"
    );
    let owner = &p.metadata.owner_references.as_ref().unwrap()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.controller),
        ("StatefulSet", Some(true))
    );
    assert!(plan::identity_matches(&s, &p));
    assert!(plan::storage_matches(&s, &p));

    let claims = plan::claims_for(&s, 2);
    assert_eq!(claims[0].metadata.name.as_deref(), Some("www-web-2"));
    assert_eq!(claims[0].metadata.labels.as_ref().unwrap()["app"], "web");
}

#[test]
fn ordered_ready_creates_one_at_a_time_in_order() {
    let s = set(3);
    assert_eq!(steps(&run(&s, &[])), ["create web-0"]);
    let pending = [pod(&s, 0, "web-new", State::Pending)];
    assert_eq!(steps(&run(&s, &pending)), ["claims 0"]);
    let ready0 = [pod(&s, 0, "web-new", State::Ready)];
    assert_eq!(steps(&run(&s, &ready0)), ["create web-1"]);
    let ready01 = [
        pod(&s, 0, "web-new", State::Ready),
        pod(&s, 1, "web-new", State::Ready),
    ];
    assert_eq!(steps(&run(&s, &ready01)), ["create web-2"]);
    // A missing low ordinal is recreated before anything else.
    let gap = [
        pod(&s, 1, "web-new", State::Ready),
        pod(&s, 2, "web-new", State::Ready),
    ];
    assert_eq!(steps(&run(&s, &gap)), ["create web-0"]);
}

#[test]
fn parallel_creates_and_deletes_all_at_once() {
    let s = with_policy(set(3), "Parallel");
    assert_eq!(
        steps(&run(&s, &[])),
        ["create web-0", "create web-1", "create web-2"]
    );
    let s1 = with_policy(set(1), "Parallel");
    let pods: Vec<_> = (0..4)
        .map(|o| pod(&s1, o, "web-new", State::Pending))
        .collect();
    assert_eq!(
        steps(&run(&s1, &pods)),
        [
            "claims 0",
            "delete web-3 (ScaleDown)",
            "delete web-2 (ScaleDown)",
            "delete web-1 (ScaleDown)"
        ]
    );
}

#[test]
fn ordered_scale_down_is_reverse_and_waits_for_termination() {
    let s = set(1);
    let pods: Vec<_> = (0..3)
        .map(|o| pod(&s, o, "web-new", State::Ready))
        .collect();
    assert_eq!(steps(&run(&s, &pods)), ["delete web-2 (ScaleDown)"]);
    let terminating = vec![
        pods[0].clone(),
        pods[1].clone(),
        pod(&s, 2, "web-new", State::Terminating),
    ];
    assert!(steps(&run(&s, &terminating)).is_empty());
    assert_eq!(steps(&run(&s, &pods[..2])), ["delete web-1 (ScaleDown)"]);
    // An unready condemned pod that is not the first unhealthy one blocks scale down...
    let blocked = vec![
        pods[0].clone(),
        pod(&s, 1, "web-new", State::Pending),
        pod(&s, 2, "web-new", State::Pending),
    ];
    assert!(steps(&run(&s, &blocked)).is_empty());
    // ...but the first unhealthy pod itself may go.
    let first = vec![pods[0].clone(), pod(&s, 1, "web-new", State::Pending)];
    assert_eq!(steps(&run(&s, &first)), ["delete web-1 (ScaleDown)"]);
}

#[test]
fn rolling_update_replaces_from_the_top_down_to_the_partition() {
    let s = with_partition(set(3), 2);
    let old: Vec<_> = (0..3)
        .map(|o| pod(&s, o, "web-old", State::Ready))
        .collect();
    assert_eq!(steps(&run(&s, &old)), ["delete web-2 (Update)"]);
    // The replacement of web-2 is made at the update revision; lower ordinals at the current one.
    let r = run(&s, &old[..2]);
    match &r.steps[..] {
        [Step::Create(p)] => assert_eq!(plan::revision_of(p), "web-new"),
        other => panic!("unexpected {other:?}"),
    }
    let r = Revisions {
        current_set: &s,
        update_set: &s,
        current: "web-old",
        update: "web-new",
    };
    assert_eq!(plan::revision_of(&r.new_pod(1)), "web-old");
    // Once web-2 is updated and ready, the partition stops the rollout.
    let updated = vec![
        old[0].clone(),
        old[1].clone(),
        pod(&s, 2, "web-new", State::Ready),
    ];
    assert!(steps(&run(&s, &updated)).is_empty());
    // Without a partition, web-1 is next, but only once web-2 is ready.
    let s0 = with_partition(set(3), 0);
    assert_eq!(steps(&run(&s0, &updated)), ["delete web-1 (Update)"]);
    let unready = vec![
        old[0].clone(),
        old[1].clone(),
        pod(&s, 2, "web-new", State::Pending),
    ];
    assert_eq!(steps(&run(&s0, &unready)), ["claims 2"]);
}

#[test]
fn on_delete_never_replaces_pods_itself() {
    let s = on_delete(set(2));
    let old: Vec<_> = (0..2)
        .map(|o| pod(&s, o, "web-old", State::Ready))
        .collect();
    assert!(steps(&run(&s, &old)).is_empty());
    // A deleted pod comes back at the update revision.
    let r = run(&s, &old[..1]);
    match &r.steps[..] {
        [Step::Create(p)] => assert_eq!(plan::revision_of(p), "web-new"),
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn failed_pods_are_recreated() {
    let s = set(1);
    let failed = [pod(&s, 0, "web-new", State::Failed)];
    assert_eq!(
        steps(&run(&s, &failed)),
        ["delete web-0 (Terminated)", "create web-0"]
    );
    assert!(matches!(
        run(&s, &failed).steps[0],
        Step::Delete(_, DeleteReason::Terminated)
    ));
}

#[test]
fn status_counts_revisions_and_completes_the_rollout() {
    let s = set(3);
    let mixed = vec![
        pod(&s, 0, "web-old", State::Ready),
        pod(&s, 1, "web-new", State::Ready),
        pod(&s, 2, "web-new", State::Pending),
    ];
    let status = run(&s, &mixed).status;
    assert_eq!(status.replicas, 3);
    assert_eq!(status.ready_replicas, Some(2));
    assert_eq!(status.available_replicas, Some(2));
    assert_eq!(status.current_replicas, Some(1));
    assert_eq!(status.updated_replicas, Some(2));
    assert_eq!(status.current_revision.as_deref(), Some("web-old"));
    assert_eq!(status.update_revision.as_deref(), Some("web-new"));
    assert_eq!(status.observed_generation, Some(2));

    let done: Vec<_> = (0..3)
        .map(|o| pod(&s, o, "web-new", State::Ready))
        .collect();
    let status = run(&s, &done).status;
    assert_eq!(status.current_revision.as_deref(), Some("web-new"));
    assert_eq!(status.current_replicas, Some(3));
}

#[test]
fn min_ready_seconds_holds_the_next_pod_back() {
    let mut s = set(2);
    s.spec.as_mut().unwrap().min_ready_seconds = Some(3600);
    let ready0 = [pod(&s, 0, "web-new", State::Ready)];
    let r = run(&s, &ready0);
    assert!(r.steps.is_empty());
    assert_eq!(r.status.ready_replicas, Some(1));
    assert_eq!(r.status.available_replicas, Some(0));
    assert!(r.requeue_after.is_some());
}

#[test]
fn deleting_set_only_reports_status() {
    let mut s = set(3);
    s.metadata.deletion_timestamp = Some(Time(Timestamp::now()));
    assert!(run(&s, &[]).steps.is_empty());
}

#[test]
fn claim_owners_follow_the_retention_policy() {
    let set_ref = OwnerReference {
        uid: "set-uid".into(),
        kind: "StatefulSet".into(),
        ..Default::default()
    };
    let pod_ref = OwnerReference {
        uid: "pod-uid".into(),
        kind: "Pod".into(),
        ..Default::default()
    };
    let policy = |deleted: &str, scaled: &str| {
        let mut s = set(1);
        s.spec
            .as_mut()
            .unwrap()
            .persistent_volume_claim_retention_policy =
            Some(StatefulSetPersistentVolumeClaimRetentionPolicy {
                when_deleted: Some(deleted.into()),
                when_scaled: Some(scaled.into()),
            });
        s
    };
    let in_range = pod(&set(1), 0, "r", State::Ready);
    let scaled = pod(&set(3), 2, "r", State::Ready);
    let uids = |refs: Option<Vec<OwnerReference>>| {
        refs.map(|r| r.into_iter().map(|o| o.uid).collect::<Vec<_>>())
    };
    // Retain/Retain: nothing to change, and stray references are removed.
    let s = policy("Retain", "Retain");
    assert_eq!(
        uids(plan::claim_owner_refs(
            &[],
            &s,
            &in_range,
            &set_ref,
            &pod_ref
        )),
        None
    );
    assert_eq!(
        uids(plan::claim_owner_refs(
            std::slice::from_ref(&set_ref),
            &s,
            &in_range,
            &set_ref,
            &pod_ref
        )),
        Some(vec![])
    );
    // whenDeleted=Delete: the set owns the claim.
    let s = policy("Delete", "Retain");
    assert_eq!(
        uids(plan::claim_owner_refs(
            &[],
            &s,
            &in_range,
            &set_ref,
            &pod_ref
        )),
        Some(vec!["set-uid".to_string()])
    );
    // whenScaled=Delete: a scaled-down pod owns its claim.
    let s = policy("Retain", "Delete");
    assert_eq!(
        uids(plan::claim_owner_refs(
            &[],
            &s,
            &in_range,
            &set_ref,
            &pod_ref
        )),
        None
    );
    assert_eq!(
        uids(plan::claim_owner_refs(&[], &s, &scaled, &set_ref, &pod_ref)),
        Some(vec!["pod-uid".to_string()])
    );
    // Both: the set while in range, the pod once scaled down.
    let s = policy("Delete", "Delete");
    assert_eq!(
        uids(plan::claim_owner_refs(
            std::slice::from_ref(&set_ref),
            &s,
            &scaled,
            &set_ref,
            &pod_ref
        )),
        Some(vec!["pod-uid".to_string()])
    );
}
