use super::*;
use k8s_openapi::api::apps::v1::{
    DeploymentSpec, DeploymentStrategy, ReplicaSetSpec, ReplicaSetStatus, RollingUpdateDeployment,
};
use k8s_openapi::api::core::v1::{Container, PodSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};

fn t0() -> Timestamp {
    "2025-01-01T12:00:00Z".parse().unwrap()
}

fn template(image: &str) -> PodTemplateSpec {
    PodTemplateSpec {
        metadata: Some(ObjectMeta {
            labels: Some([("app".to_string(), "web".to_string())].into()),
            ..Default::default()
        }),
        spec: Some(PodSpec {
            containers: vec![Container {
                name: "web".into(),
                image: Some(image.into()),
                ..Default::default()
            }],
            ..Default::default()
        }),
    }
}

fn deployment(replicas: i32, surge: IntOrString, unavailable: IntOrString) -> Deployment {
    Deployment {
        metadata: ObjectMeta {
            name: Some("web".into()),
            namespace: Some("default".into()),
            generation: Some(1),
            ..Default::default()
        },
        spec: Some(DeploymentSpec {
            replicas: Some(replicas),
            selector: LabelSelector {
                match_labels: Some([("app".to_string(), "web".to_string())].into()),
                ..Default::default()
            },
            template: template("nginx:1"),
            strategy: Some(DeploymentStrategy {
                type_: Some("RollingUpdate".into()),
                rolling_update: Some(RollingUpdateDeployment {
                    max_surge: Some(surge),
                    max_unavailable: Some(unavailable),
                }),
            }),
            progress_deadline_seconds: Some(600),
            ..Default::default()
        }),
        status: None,
    }
}

fn int(v: i32) -> IntOrString {
    IntOrString::Int(v)
}

fn pct(v: &str) -> IntOrString {
    IntOrString::String(v.into())
}

/// A ReplicaSet of `replicas`, all of them existing and `available` of them available.
fn rs(name: &str, replicas: i32, available: i32, created_secs: i64) -> ReplicaSet {
    ReplicaSet {
        metadata: ObjectMeta {
            name: Some(name.into()),
            creation_timestamp: Some(Time(t0() + SignedDuration::from_secs(created_secs))),
            generation: Some(1),
            ..Default::default()
        },
        spec: Some(ReplicaSetSpec {
            replicas: Some(replicas),
            template: Some(template(name)),
            ..Default::default()
        }),
        status: Some(ReplicaSetStatus {
            replicas,
            ready_replicas: Some(available),
            available_replicas: Some(available),
            observed_generation: Some(1),
            ..Default::default()
        }),
    }
}

fn annotate(mut rs: ReplicaSet, key: &str, value: &str) -> ReplicaSet {
    rs.metadata
        .annotations
        .get_or_insert_with(BTreeMap::new)
        .insert(key.into(), value.into());
    rs
}

#[test]
fn percentages_round_up_for_surge_and_down_for_unavailable() {
    assert_eq!(scaled_value(&pct("25%"), 10, true), Ok(3));
    assert_eq!(scaled_value(&pct("25%"), 10, false), Ok(2));
    assert_eq!(scaled_value(&pct("25%"), 4, true), Ok(1));
    assert_eq!(scaled_value(&pct("25%"), 4, false), Ok(1));
    assert_eq!(scaled_value(&pct("0%"), 7, true), Ok(0));
    assert_eq!(scaled_value(&pct("100%"), 7, false), Ok(7));
    assert_eq!(scaled_value(&pct("33%"), 1, true), Ok(1));
    assert_eq!(scaled_value(&int(5), 1, false), Ok(5));
    assert!(
        scaled_value(&pct("25"), 4, true)
            .unwrap_err()
            .contains("not a percentage")
    );
    assert!(
        scaled_value(&pct("x%"), 4, true)
            .unwrap_err()
            .contains("invalid value")
    );
}

#[test]
fn fenceposts_never_both_zero() {
    assert_eq!(
        resolve_fenceposts(Some(&int(0)), Some(&int(0)), 3),
        Ok((0, 1))
    );
    assert_eq!(
        resolve_fenceposts(Some(&pct("25%")), Some(&pct("25%")), 3),
        Ok((1, 0))
    );
    assert_eq!(
        resolve_fenceposts(Some(&pct("25%")), Some(&pct("25%")), 4),
        Ok((1, 1))
    );
    assert_eq!(
        resolve_fenceposts(Some(&pct("10%")), Some(&pct("10%")), 5),
        Ok((1, 0))
    );
    assert_eq!(resolve_fenceposts(None, None, 5), Ok((0, 1)));
}

#[test]
fn max_surge_and_unavailable_follow_the_strategy() {
    let d = deployment(3, int(1), int(1));
    assert_eq!((max_surge(&d), max_unavailable(&d)), (1, 1));
    // maxUnavailable never exceeds the replicas.
    let d = deployment(2, int(0), int(5));
    assert_eq!(max_unavailable(&d), 2);
    let d = deployment(0, int(1), int(1));
    assert_eq!(max_unavailable(&d), 0);
    // Defaults (25%/25%) when the strategy says nothing.
    let mut d = deployment(10, int(0), int(0));
    d.spec.as_mut().unwrap().strategy = None;
    assert_eq!((max_surge(&d), max_unavailable(&d)), (3, 2));
    let mut d = deployment(10, int(3), int(3));
    d.spec.as_mut().unwrap().strategy = Some(DeploymentStrategy {
        type_: Some("Recreate".into()),
        rolling_update: None,
    });
    assert_eq!((max_surge(&d), max_unavailable(&d)), (0, 0));
}

#[test]
fn template_hash_is_stable_and_collision_aware() {
    let a = compute_hash(&template("nginx:1"), None);
    assert_eq!(a, compute_hash(&template("nginx:1"), None));
    assert_ne!(a, compute_hash(&template("nginx:2"), None));
    assert_ne!(a, compute_hash(&template("nginx:1"), Some(1)));
    assert_ne!(
        compute_hash(&template("nginx:1"), Some(1)),
        compute_hash(&template("nginx:1"), Some(2))
    );
    assert!(!a.is_empty() && a.len() <= 10);
    // Pinned: a change of the hashing would rename every ReplicaSet a Deployment creates next.
    assert_eq!(a, "75f67448f4");
    assert!(
        a.chars().all(|c| "bcdfghjklmnpqrstvwxz2456789".contains(c)),
        "{a}"
    );
}

#[test]
fn template_equality_ignores_the_hash_label_and_empty_fields() {
    let plain = template("nginx:1");
    let mut hashed = plain.clone();
    hashed
        .metadata
        .as_mut()
        .unwrap()
        .labels
        .as_mut()
        .unwrap()
        .insert(POD_TEMPLATE_HASH_LABEL.into(), "abc".into());
    hashed.metadata.as_mut().unwrap().annotations = Some(BTreeMap::new());
    assert!(equal_ignore_hash(&plain, &hashed));
    assert!(!equal_ignore_hash(&plain, &template("nginx:2")));
}

#[test]
fn new_replica_set_grows_within_the_surge() {
    let d = deployment(3, int(1), int(1));
    let old = rs("old", 3, 3, 0);
    let new = rs("new", 0, 0, 10);
    assert_eq!(new_rs_new_replicas(&d, &[&old, &new], &new), 1);
    let new = rs("new", 1, 0, 10);
    assert_eq!(
        new_rs_new_replicas(&d, &[&old, &new], &new),
        1,
        "at 4 = 3 + surge: wait"
    );
    let old = rs("old", 2, 2, 0);
    assert_eq!(new_rs_new_replicas(&d, &[&old, &new], &new), 2);
    // Never beyond the desired count.
    let old = rs("old", 0, 0, 0);
    let new = rs("new", 2, 2, 10);
    assert_eq!(new_rs_new_replicas(&d, &[&old, &new], &new), 3);
    let mut recreate = d.clone();
    recreate.spec.as_mut().unwrap().strategy = Some(DeploymentStrategy {
        type_: Some("Recreate".into()),
        rolling_update: None,
    });
    assert_eq!(
        new_rs_new_replicas(&recreate, &[&new], &rs("new", 0, 0, 10)),
        3
    );
}

#[test]
fn old_replica_sets_scale_down_by_available_pods_above_the_minimum() {
    let d = deployment(3, int(1), int(1));
    // 3 old available + 1 new not yet available: minAvailable 2, so one old pod may go.
    let old = rs("old", 3, 3, 0);
    let new = rs("new", 1, 0, 10);
    assert_eq!(max_scaled_down(&d, &[&old, &new], &new), 1);
    assert_eq!(
        scale_down_old(&d, &[&old, &new], &[&old]),
        vec![("old".to_string(), 2)]
    );
    // Just scaled from 3 to 2 with a status that still says 3 available: counting that stale
    // figure would take the old ReplicaSet to 0 and leave 1 available pod, below maxUnavailable.
    let mut stale = rs("old", 2, 2, 0);
    stale.status.as_mut().unwrap().available_replicas = Some(3);
    let ready_new = rs("new", 1, 1, 10);
    assert_eq!(
        scale_down_old(&d, &[&stale, &ready_new], &[&stale]),
        vec![("old".to_string(), 1)]
    );
    // Nothing above the minimum: nothing goes.
    let old = rs("old", 2, 2, 0);
    assert!(scale_down_old(&d, &[&old, &new], &[&old]).is_empty());
    // Oldest first, across several old ReplicaSets.
    let d = deployment(4, int(0), int(3));
    let older = rs("older", 2, 2, 0);
    let old = rs("old", 2, 2, 5);
    let new = rs("new", 0, 0, 10);
    assert_eq!(
        scale_down_old(&d, &[&older, &old, &new], &[&old, &older]),
        vec![("older".to_string(), 0), ("old".to_string(), 1)]
    );
}

#[test]
fn unhealthy_old_pods_go_first() {
    let a = rs("a", 3, 1, 0);
    let b = rs("b", 2, 0, 5);
    let c = rs("c", 2, 2, 6);
    assert_eq!(
        cleanup_unhealthy(&[&a, &b, &c], 3),
        vec![("a".to_string(), 1), ("b".to_string(), 1)]
    );
    assert!(cleanup_unhealthy(&[&c], 5).is_empty());
}

/// Play a whole rolling update against a model of the ReplicaSet controller (`ready` decides
/// whether new pods become available) and check maxSurge/maxUnavailable at every step.
fn simulate(d: &Deployment, old_size: i32, ready: bool) -> (i32, i32, usize) {
    let desired = spec_replicas(d);
    let (surge, unavailable) = (max_surge(d), max_unavailable(d));
    let mut old = rs("old", old_size, old_size, 0);
    let mut new = rs("new", 0, 0, 10);
    let mut steps = 0;
    for _ in 0..100 {
        // The ReplicaSet controller: pods appear at once; available if `ready`.
        for r in [&mut old, &mut new] {
            let n = rs_replicas(r);
            let status = r.status.as_mut().unwrap();
            let available = if r.metadata.name.as_deref() == Some("new") && !ready {
                0
            } else {
                n.min(status.available_replicas.unwrap_or(0).max(n))
            };
            status.replicas = n;
            status.available_replicas = Some(available);
        }
        let total = rs_replicas(&old) + rs_replicas(&new);
        let available = available_replica_count([&old, &new]);
        assert!(
            total <= desired + surge,
            "step {steps}: {total} pods > {desired} + {surge}"
        );
        assert!(
            available >= (desired - unavailable).min(old_size),
            "step {steps}: only {available} available"
        );
        // The deployment controller's step.
        let target = new_rs_new_replicas(d, &[&old, &new], &new);
        if target != rs_replicas(&new) {
            new.spec.as_mut().unwrap().replicas = Some(target);
            steps += 1;
            continue;
        }
        let mut changed = false;
        if max_scaled_down(d, &[&old, &new], &new) > 0 {
            for (_, size) in scale_down_old(d, &[&old, &new], &[&old]) {
                old.spec.as_mut().unwrap().replicas = Some(size);
                changed = true;
            }
        }
        if !changed {
            break;
        }
        steps += 1;
    }
    (rs_replicas(&old), rs_replicas(&new), steps)
}

#[test]
fn rolling_update_completes_within_its_bounds() {
    for (replicas, surge, unavailable) in [
        (3, int(1), int(1)),
        (3, int(1), int(0)),
        (3, int(0), int(1)),
        (10, pct("25%"), pct("25%")),
        (10, pct("50%"), pct("0%")),
        (1, pct("25%"), pct("25%")),
        (7, int(3), int(2)),
    ] {
        let d = deployment(replicas, surge.clone(), unavailable.clone());
        let (old, new, steps) = simulate(&d, replicas, true);
        assert_eq!(
            (old, new),
            (0, replicas),
            "{replicas} {surge:?} {unavailable:?}"
        );
        assert!(steps > 0);
    }
}

#[test]
fn rolling_update_with_unready_pods_stalls_keeping_old_pods() {
    // maxUnavailable 1 of 3: one old pod may go, the rest stay while new pods never get ready.
    let d = deployment(3, int(1), int(1));
    let (old, new, _) = simulate(&d, 3, false);
    assert_eq!(old, 2);
    assert_eq!(new, 2);
    // maxUnavailable 0: no old pod goes at all.
    let d = deployment(3, int(1), int(0));
    let (old, new, _) = simulate(&d, 3, false);
    assert_eq!((old, new), (3, 1));
}

#[test]
fn proportional_scaling_spreads_over_active_replica_sets() {
    let mut d = deployment(15, int(0), int(1));
    let old = annotate(rs("old", 5, 5, 0), MAX_REPLICAS_ANNOTATION, "10");
    let new = annotate(rs("new", 5, 0, 10), MAX_REPLICAS_ANNOTATION, "10");
    let (sizes, op) = proportional_scale(&d, &[&old, &new]);
    assert_eq!(op, "up");
    // Equal sizes: the newer first; 7.5 rounds to 8.
    assert_eq!(sizes, vec![("new".to_string(), 8), ("old".to_string(), 7)]);

    d.spec.as_mut().unwrap().replicas = Some(5);
    let (sizes, op) = proportional_scale(&d, &[&old, &new]);
    assert_eq!(op, "down");
    // Equal sizes: the older first; it also takes the leftover.
    assert_eq!(sizes, vec![("old".to_string(), 2), ("new".to_string(), 3)]);
    assert_eq!(sizes.iter().map(|(_, s)| s).sum::<i32>(), 5);

    d.spec.as_mut().unwrap().replicas = Some(0);
    let (sizes, _) = proportional_scale(&d, &[&old, &new]);
    assert!(sizes.iter().all(|(_, s)| *s == 0));

    // Without the annotation the leftover all goes to the largest.
    d.spec.as_mut().unwrap().replicas = Some(12);
    let old = rs("old", 6, 6, 0);
    let new = rs("new", 4, 0, 10);
    let (sizes, _) = proportional_scale(&d, &[&old, &new]);
    assert_eq!(sizes, vec![("old".to_string(), 8), ("new".to_string(), 4)]);
}

#[test]
fn active_or_latest_picks_the_one_to_scale() {
    let new = rs("new", 0, 0, 10);
    let old1 = rs("old1", 0, 0, 0);
    let old2 = rs("old2", 0, 0, 5);
    assert_eq!(
        find_active_or_latest(Some(&new), &[&old1, &old2])
            .unwrap()
            .metadata
            .name
            .as_deref(),
        Some("new")
    );
    assert_eq!(
        find_active_or_latest(None, &[&old1, &old2])
            .unwrap()
            .metadata
            .name
            .as_deref(),
        Some("old2")
    );
    let active = rs("old1", 2, 2, 0);
    assert_eq!(
        find_active_or_latest(Some(&new), &[&active, &old2])
            .unwrap()
            .metadata
            .name
            .as_deref(),
        Some("old1")
    );
    let active_new = rs("new", 1, 0, 10);
    assert!(find_active_or_latest(Some(&active_new), &[&active]).is_none());
    assert!(find_active_or_latest(None, &[]).is_none());
}

#[test]
fn saturation_needs_size_annotation_and_availability() {
    let d = deployment(3, int(1), int(1));
    let full = annotate(rs("new", 3, 3, 0), DESIRED_REPLICAS_ANNOTATION, "3");
    assert!(is_saturated(&d, Some(&full)));
    assert!(!is_saturated(&d, Some(&rs("new", 3, 3, 0))));
    assert!(!is_saturated(
        &d,
        Some(&annotate(
            rs("new", 3, 2, 0),
            DESIRED_REPLICAS_ANNOTATION,
            "3"
        ))
    ));
    assert!(!is_saturated(&d, None));
}

#[test]
fn history_limit_deletes_the_lowest_idle_revisions() {
    let r = |name: &str, rev: &str, replicas: i32| {
        annotate(rs(name, replicas, replicas, 0), REVISION_ANNOTATION, rev)
    };
    let (a, b, c, busy) = (
        r("a", "1", 0),
        r("b", "2", 0),
        r("c", "3", 0),
        r("busy", "0", 2),
    );
    assert_eq!(
        cleanup_candidates(&[&c, &a, &b], 1),
        vec!["a".to_string(), "b".to_string()]
    );
    assert!(cleanup_candidates(&[&c, &a, &b], 3).is_empty());
    // A ReplicaSet that still has replicas is never deleted, even when it is the oldest.
    assert_eq!(cleanup_candidates(&[&busy, &a], 0), vec!["a".to_string()]);
    let mut lagging = r("lagging", "1", 0);
    lagging.metadata.generation = Some(5);
    assert!(cleanup_candidates(&[&lagging], 0).is_empty());
}

#[test]
fn new_replica_set_annotations_carry_revision_history_and_change_cause() {
    let mut d = deployment(3, int(1), int(1));
    d.metadata.annotations = Some(
        [
            (
                "kubernetes.io/change-cause".to_string(),
                "kubectl set image".to_string(),
            ),
            (LAST_APPLIED_ANNOTATION.to_string(), "{}".to_string()),
            (REVISION_ANNOTATION.to_string(), "7".to_string()),
        ]
        .into(),
    );
    let mut fresh = rs("new", 0, 0, 0);
    assert!(set_new_rs_annotations(&d, &mut fresh, 3, false));
    let a = fresh.metadata.annotations.clone().unwrap();
    assert_eq!(
        a.get("kubernetes.io/change-cause").map(String::as_str),
        Some("kubectl set image")
    );
    assert!(!a.contains_key(LAST_APPLIED_ANNOTATION));
    assert_eq!(a.get(REVISION_ANNOTATION).map(String::as_str), Some("3"));
    assert_eq!(
        a.get(DESIRED_REPLICAS_ANNOTATION).map(String::as_str),
        Some("3")
    );
    assert_eq!(
        a.get(MAX_REPLICAS_ANNOTATION).map(String::as_str),
        Some("4")
    );
    assert!(!a.contains_key(REVISION_HISTORY_ANNOTATION));
    // Nothing new: no change.
    assert!(!set_new_rs_annotations(&d, &mut fresh, 3, true));
    // A rollback to this ReplicaSet: revision 5, and 3 remembered.
    assert!(set_new_rs_annotations(&d, &mut fresh, 5, true));
    assert!(set_new_rs_annotations(&d, &mut fresh, 8, true));
    let a = fresh.metadata.annotations.unwrap();
    assert_eq!(a.get(REVISION_ANNOTATION).map(String::as_str), Some("8"));
    assert_eq!(
        a.get(REVISION_HISTORY_ANNOTATION).map(String::as_str),
        Some("3,5")
    );
}

#[test]
fn status_adds_up_replica_sets_and_sets_available() {
    let d = deployment(3, int(1), int(1));
    let old = rs("old", 2, 2, 0);
    let new = rs("new", 2, 0, 10);
    let status = calculate_status(&d, &[&old, &new], Some(&new), t0());
    assert_eq!(status.replicas, Some(4));
    assert_eq!(status.updated_replicas, Some(2));
    assert_eq!(status.available_replicas, Some(2));
    assert_eq!(status.unavailable_replicas, Some(2));
    assert_eq!(status.observed_generation, Some(1));
    let available = get_condition(&status, AVAILABLE).unwrap();
    assert_eq!(
        (available.status.as_str(), available.reason.as_deref()),
        ("True", Some(MINIMUM_REPLICAS_AVAILABLE))
    );

    let old = rs("old", 1, 1, 0);
    let status = calculate_status(&d, &[&old, &new], Some(&new), t0());
    let available = get_condition(&status, AVAILABLE).unwrap();
    assert_eq!(
        (available.status.as_str(), available.reason.as_deref()),
        ("False", Some(MINIMUM_REPLICAS_UNAVAILABLE))
    );
    assert_eq!(
        available.message.as_deref(),
        Some("Deployment does not have minimum availability.")
    );
}

#[test]
fn conditions_keep_transition_time_unless_status_changes() {
    let mut status = DeploymentStatus::default();
    set_condition(
        &mut status,
        new_condition(
            PROGRESSING,
            "True",
            NEW_REPLICA_SET_REASON,
            "a".into(),
            t0(),
        ),
    );
    let later = t0() + SignedDuration::from_secs(30);
    set_condition(
        &mut status,
        new_condition(
            PROGRESSING,
            "True",
            NEW_REPLICA_SET_REASON,
            "b".into(),
            later,
        ),
    );
    assert_eq!(
        get_condition(&status, PROGRESSING)
            .unwrap()
            .message
            .as_deref(),
        Some("a"),
        "same reason: unchanged"
    );
    set_condition(
        &mut status,
        new_condition(
            PROGRESSING,
            "True",
            REPLICA_SET_UPDATED_REASON,
            "c".into(),
            later,
        ),
    );
    let c = get_condition(&status, PROGRESSING).unwrap();
    assert_eq!(c.last_transition_time, Some(Time(t0())));
    assert_eq!(c.last_update_time, Some(Time(later)));
    set_condition(
        &mut status,
        new_condition(PROGRESSING, "False", TIMED_OUT_REASON, "d".into(), later),
    );
    assert_eq!(
        get_condition(&status, PROGRESSING)
            .unwrap()
            .last_transition_time,
        Some(Time(later))
    );
}

#[test]
fn progressing_condition_tracks_the_rollout_and_its_deadline() {
    let mut d = deployment(3, int(1), int(1));
    d.spec.as_mut().unwrap().progress_deadline_seconds = Some(30);
    let mut before = DeploymentStatus::default();
    set_condition(
        &mut before,
        new_condition(
            PROGRESSING,
            "True",
            NEW_REPLICA_SET_REASON,
            "Created new replica set \"web-1\"".into(),
            t0(),
        ),
    );
    before.updated_replicas = Some(1);
    before.replicas = Some(4);
    d.status = Some(before.clone());

    // Progress (one more updated pod): ReplicaSetUpdated, deadline restarted.
    let old = rs("old", 2, 2, 0);
    let new = rs("web-1", 2, 0, 10);
    let at = t0() + SignedDuration::from_secs(20);
    let mut status = calculate_status(&d, &[&old, &new], Some(&new), at);
    rollout_conditions(&d, &mut status, Some("web-1"), at);
    let c = get_condition(&status, PROGRESSING).unwrap();
    assert_eq!(c.reason.as_deref(), Some(REPLICA_SET_UPDATED_REASON));
    assert_eq!(
        c.message.as_deref(),
        Some("ReplicaSet \"web-1\" is progressing.")
    );
    assert_eq!(c.last_update_time, Some(Time(at)));
    assert_eq!(c.last_transition_time, Some(Time(t0())));
    assert_eq!(
        requeue_stuck_after(&d, &status, at),
        Some(std::time::Duration::from_millis(30_500))
    );

    // No progress within the deadline: timed out.
    d.status = Some(status.clone());
    let late = at + SignedDuration::from_secs(31);
    let mut stalled = calculate_status(&d, &[&old, &new], Some(&new), late);
    rollout_conditions(&d, &mut stalled, Some("web-1"), late);
    let c = get_condition(&stalled, PROGRESSING).unwrap();
    assert_eq!(
        (c.status.as_str(), c.reason.as_deref()),
        ("False", Some(TIMED_OUT_REASON))
    );
    assert_eq!(
        c.message.as_deref(),
        Some("ReplicaSet \"web-1\" has timed out progressing.")
    );
    assert_eq!(requeue_stuck_after(&d, &stalled, late), None);

    // Done: NewReplicaSetAvailable.
    let old = rs("old", 0, 0, 0);
    let new = rs("web-1", 3, 3, 10);
    let mut done = calculate_status(&d, &[&old, &new], Some(&new), late);
    rollout_conditions(&d, &mut done, Some("web-1"), late);
    let c = get_condition(&done, PROGRESSING).unwrap();
    assert_eq!(
        (c.status.as_str(), c.reason.as_deref()),
        ("True", Some(NEW_RS_AVAILABLE_REASON))
    );
    assert_eq!(
        c.message.as_deref(),
        Some("ReplicaSet \"web-1\" has successfully progressed.")
    );
    assert!(deployment_complete(&d, &done));

    // Without a deadline there is no Progressing condition.
    d.spec.as_mut().unwrap().progress_deadline_seconds = Some(i32::MAX);
    rollout_conditions(&d, &mut done, Some("web-1"), late);
    assert!(get_condition(&done, PROGRESSING).is_none());
}

#[test]
fn replica_sets_sort_by_creation_and_revision() {
    let a = annotate(rs("a", 1, 1, 10), REVISION_ANNOTATION, "2");
    let b = annotate(rs("b", 1, 1, 0), REVISION_ANNOTATION, "3");
    let c = annotate(rs("c", 1, 1, 0), REVISION_ANNOTATION, "1");
    let mut v = [&a, &b, &c];
    v.sort_by(|x, y| by_creation(x, y));
    assert_eq!(
        v.iter()
            .map(|r| r.metadata.name.clone().unwrap())
            .collect::<Vec<_>>(),
        ["b", "c", "a"]
    );
    v.sort_by(|x, y| by_revision(x, y));
    assert_eq!(
        v.iter()
            .map(|r| r.metadata.name.clone().unwrap())
            .collect::<Vec<_>>(),
        ["c", "a", "b"]
    );
    assert_eq!(max_revision([&a, &b, &c]), 3);
}
