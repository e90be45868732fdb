//! Unit tests of the DaemonSet decisions: which nodes run a pod, what to create and delete,
//! how far a rolling update goes, and the status.

use std::collections::HashMap;
use std::sync::Arc;

use k8s_openapi::api::apps::v1::{
    DaemonSet, DaemonSetSpec, DaemonSetUpdateStrategy, RollingUpdateDaemonSet,
};
use k8s_openapi::api::core::v1::{
    Affinity, Container, Node, NodeAffinity, NodeSelector, NodeSelectorRequirement,
    NodeSelectorTerm, NodeSpec, Pod, PodCondition, PodSpec, PodStatus, PodTemplateSpec, Taint,
    Toleration,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, Time};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use k8s_openapi::jiff::{SignedDuration, Timestamp};

use super::plan::{self, Changes};

fn ds() -> DaemonSet {
    DaemonSet {
        metadata: ObjectMeta {
            name: Some("agent".into()),
            namespace: Some("default".into()),
            uid: Some("ds-uid".into()),
            generation: Some(1),
            ..Default::default()
        },
        spec: Some(DaemonSetSpec {
            selector: LabelSelector {
                match_labels: Some([("app".to_string(), "agent".to_string())].into()),
                ..Default::default()
            },
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some([("app".to_string(), "agent".to_string())].into()),
                    ..Default::default()
                }),
                spec: Some(PodSpec {
                    containers: vec![Container {
                        name: "agent".into(),
                        image: Some("agent:1".into()),
                        ..Default::default()
                    }],
                    ..Default::default()
                }),
            },
            update_strategy: Some(DaemonSetUpdateStrategy {
                type_: Some("RollingUpdate".into()),
                rolling_update: Some(RollingUpdateDaemonSet {
                    max_unavailable: Some(IntOrString::Int(1)),
                    max_surge: Some(IntOrString::Int(0)),
                }),
            }),
            ..Default::default()
        }),
        status: None,
    }
}

fn pod_spec(d: &mut DaemonSet) -> &mut PodSpec {
    d.spec.as_mut().unwrap().template.spec.as_mut().unwrap()
}

fn with_rolling(mut d: DaemonSet, surge: IntOrString, unavailable: IntOrString) -> DaemonSet {
    d.spec.as_mut().unwrap().update_strategy = Some(DaemonSetUpdateStrategy {
        type_: Some("RollingUpdate".into()),
        rolling_update: Some(RollingUpdateDaemonSet {
            max_unavailable: Some(unavailable),
            max_surge: Some(surge),
        }),
    });
    d
}

fn node(name: &str, labels: &[(&str, &str)], taints: &[(&str, &str)]) -> Arc<Node> {
    Arc::new(Node {
        metadata: ObjectMeta {
            name: Some(name.into()),
            labels: Some(
                labels
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            ),
            ..Default::default()
        },
        spec: Some(NodeSpec {
            taints: Some(
                taints
                    .iter()
                    .map(|(key, effect)| Taint {
                        key: key.to_string(),
                        effect: effect.to_string(),
                        ..Default::default()
                    })
                    .collect(),
            ),
            ..Default::default()
        }),
        status: None,
    })
}

fn nodes(n: usize) -> Vec<Arc<Node>> {
    (0..n).map(|i| node(&format!("n{i}"), &[], &[])).collect()
}

/// A daemon pod on `node` at revision `hash`, bound, Running and Ready (for a minute) or not.
fn pod(d: &DaemonSet, name: &str, node: &str, hash: &str, ready: bool) -> Arc<Pod> {
    let mut p = plan::new_pod(d, node, hash);
    p.metadata.name = Some(name.into());
    p.metadata.uid = Some(format!("uid-{name}"));
    p.metadata.creation_timestamp = Some(Time(Timestamp::now()));
    p.spec.as_mut().unwrap().node_name = Some(node.into());
    p.status = Some(PodStatus {
        phase: Some(if ready { "Running" } else { "Pending" }.into()),
        conditions: Some(vec![PodCondition {
            type_: "Ready".into(),
            status: if ready { "True" } else { "False" }.into(),
            last_transition_time: Some(Time(
                Timestamp::now()
                    .checked_sub(SignedDuration::from_secs(60))
                    .unwrap(),
            )),
            ..Default::default()
        }]),
        ..Default::default()
    });
    Arc::new(p)
}

fn by_node(pods: &[Arc<Pod>]) -> HashMap<String, Vec<Arc<Pod>>> {
    plan::pods_by_node(pods)
}

fn changes(create: &[&str], delete: &[&str]) -> Changes {
    Changes {
        create_on: create.iter().map(|s| s.to_string()).collect(),
        delete: delete.iter().map(|s| s.to_string()).collect(),
    }
}

#[test]
fn daemon_pods_get_default_tolerations_and_pinned_affinity() {
    let mut d = ds();
    pod_spec(&mut d).tolerations = Some(vec![Toleration {
        key: Some("node.kubernetes.io/not-ready".into()),
        operator: Some("Exists".into()),
        effect: Some("NoExecute".into()),
        toleration_seconds: Some(30),
        ..Default::default()
    }]);
    let p = plan::new_pod(&d, "n1", "abc");
    assert_eq!(p.metadata.generate_name.as_deref(), Some("agent-"));
    assert_eq!(
        p.metadata.labels.as_ref().unwrap()["controller-revision-hash"],
        "abc"
    );
    let spec = p.spec.as_ref().unwrap();
    let keys: Vec<(&str, &str)> = spec
        .tolerations
        .iter()
        .flatten()
        .map(|t| (t.key.as_deref().unwrap(), t.effect.as_deref().unwrap()))
        .collect();
    assert_eq!(
        keys,
        [
            ("node.kubernetes.io/not-ready", "NoExecute"),
            ("node.kubernetes.io/unreachable", "NoExecute"),
            ("node.kubernetes.io/disk-pressure", "NoSchedule"),
            ("node.kubernetes.io/memory-pressure", "NoSchedule"),
            ("node.kubernetes.io/pid-pressure", "NoSchedule"),
            ("node.kubernetes.io/unschedulable", "NoSchedule"),
        ]
    );
    // The user's toleration is replaced in place, not duplicated.
    assert_eq!(
        spec.tolerations.as_ref().unwrap()[0].toleration_seconds,
        None
    );
    assert_eq!(plan::target_node(&p), Some("n1"));
    let required = spec
        .affinity
        .as_ref()
        .unwrap()
        .node_affinity
        .as_ref()
        .unwrap()
        .required_during_scheduling_ignored_during_execution
        .as_ref()
        .unwrap();
    let field = &required.node_selector_terms[0]
        .match_fields
        .as_ref()
        .unwrap()[0];
    assert_eq!(
        (
            field.key.as_str(),
            field.operator.as_str(),
            field.values.as_ref().unwrap()[0].as_str()
        ),
        ("metadata.name", "In", "n1")
    );

    let mut host = ds();
    pod_spec(&mut host).host_network = Some(true);
    let p = plan::new_pod(&host, "n1", "abc");
    assert!(
        p.spec
            .unwrap()
            .tolerations
            .unwrap()
            .iter()
            .any(|t| t.key.as_deref() == Some("node.kubernetes.io/network-unavailable"))
    );
}

#[test]
fn which_nodes_should_run_a_daemon_pod() {
    let d = ds();
    let spec = plan::daemon_pod_spec(&d);
    assert_eq!(
        plan::node_should_run(&spec, &node("a", &[], &[])),
        (true, true)
    );
    // Cordoned and not-ready nodes are tolerated by default.
    let tolerated = node(
        "b",
        &[],
        &[
            ("node.kubernetes.io/unschedulable", "NoSchedule"),
            ("node.kubernetes.io/not-ready", "NoExecute"),
        ],
    );
    assert_eq!(plan::node_should_run(&spec, &tolerated), (true, true));
    // A NoSchedule taint: no new pod, but a running one stays.
    let no_schedule = node("c", &[], &[("dedicated", "NoSchedule")]);
    assert_eq!(plan::node_should_run(&spec, &no_schedule), (false, true));
    let no_execute = node("d", &[], &[("dedicated", "NoExecute")]);
    assert_eq!(plan::node_should_run(&spec, &no_execute), (false, false));
    let prefer = node("e", &[], &[("dedicated", "PreferNoSchedule")]);
    assert_eq!(plan::node_should_run(&spec, &prefer), (true, true));

    // nodeSelector.
    let mut selective = ds();
    pod_spec(&mut selective).node_selector = Some([("disk".to_string(), "ssd".to_string())].into());
    let spec = plan::daemon_pod_spec(&selective);
    assert_eq!(
        plan::node_should_run(&spec, &node("f", &[("disk", "ssd")], &[])),
        (true, true)
    );
    assert_eq!(
        plan::node_should_run(&spec, &node("g", &[("disk", "hdd")], &[])),
        (false, false)
    );

    // Required node affinity.
    let mut affine = ds();
    pod_spec(&mut affine).affinity = Some(Affinity {
        node_affinity: Some(NodeAffinity {
            required_during_scheduling_ignored_during_execution: Some(NodeSelector {
                node_selector_terms: vec![NodeSelectorTerm {
                    match_expressions: Some(vec![NodeSelectorRequirement {
                        key: "zone".into(),
                        operator: "NotIn".into(),
                        values: Some(vec!["z1".into()]),
                    }]),
                    match_fields: None,
                }],
            }),
            ..Default::default()
        }),
        ..Default::default()
    });
    let spec = plan::daemon_pod_spec(&affine);
    assert!(plan::node_should_run(&spec, &node("h", &[("zone", "z2")], &[])).0);
    assert!(plan::node_should_run(&spec, &node("i", &[], &[])).0);
    assert!(!plan::node_should_run(&spec, &node("j", &[("zone", "z1")], &[])).0);

    // A toleration for a custom taint.
    let mut tolerant = ds();
    pod_spec(&mut tolerant).tolerations = Some(vec![Toleration {
        key: Some("dedicated".into()),
        operator: Some("Exists".into()),
        ..Default::default()
    }]);
    let spec = plan::daemon_pod_spec(&tolerant);
    assert_eq!(plan::node_should_run(&spec, &no_execute), (true, true));
}

#[test]
fn manage_creates_missing_and_removes_misplaced_pods() {
    let d = ds();
    let mut ns = nodes(3);
    let pods = vec![pod(&d, "p0", "n0", "h1", true)];
    assert_eq!(
        plan::manage(&d, &ns, &by_node(&pods), "h1", Timestamp::now()),
        changes(&["n1", "n2"], &[])
    );
    // A node that became tainted NoExecute loses its pod.
    ns[0] = node("n0", &[], &[("dedicated", "NoExecute")]);
    let all: Vec<_> = (0..3)
        .map(|i| pod(&d, &format!("p{i}"), &format!("n{i}"), "h1", true))
        .collect();
    assert_eq!(
        plan::manage(&d, &ns, &by_node(&all), "h1", Timestamp::now()),
        changes(&[], &["p0"])
    );
    // Two pods on a node without surge: the extra one goes.
    let ns = nodes(1);
    let mut older = (*pod(&d, "old", "n0", "h1", true)).clone();
    older.metadata.creation_timestamp = Some(Time(
        Timestamp::now()
            .checked_sub(SignedDuration::from_secs(10))
            .unwrap(),
    ));
    let two = vec![pod(&d, "young", "n0", "h1", true), Arc::new(older)];
    assert_eq!(
        plan::manage(&d, &ns, &by_node(&two), "h1", Timestamp::now()),
        changes(&[], &["young"])
    );
    // A failed pod is deleted (and replaced on the next pass).
    let mut failed = (*pod(&d, "f", "n0", "h1", false)).clone();
    failed.status.as_mut().unwrap().phase = Some("Failed".into());
    assert_eq!(
        plan::manage(
            &d,
            &ns,
            &by_node(&[Arc::new(failed)]),
            "h1",
            Timestamp::now()
        ),
        changes(&[], &["f"])
    );
    // Unscheduled pods for a node that is gone are removed.
    let mut orphan = (*pod(&d, "o", "gone", "h1", false)).clone();
    orphan.spec.as_mut().unwrap().node_name = None;
    assert_eq!(
        plan::manage(
            &d,
            &ns,
            &by_node(&[Arc::new(orphan)]),
            "h1",
            Timestamp::now()
        ),
        changes(&["n0"], &["o"])
    );
}

#[test]
fn rolling_update_respects_max_unavailable() {
    let d = with_rolling(ds(), IntOrString::Int(0), IntOrString::Int(1));
    let ns = nodes(3);
    let old: Vec<_> = (0..3)
        .map(|i| pod(&d, &format!("p{i}"), &format!("n{i}"), "h1", true))
        .collect();
    assert_eq!(
        plan::rolling_update(&d, &ns, &by_node(&old), "h2", Timestamp::now()),
        changes(&[], &["p0"])
    );
    // A new pod not yet ready uses the one unavailable slot.
    let mid = vec![
        pod(&d, "q0", "n0", "h2", false),
        old[1].clone(),
        old[2].clone(),
    ];
    assert_eq!(
        plan::rolling_update(&d, &ns, &by_node(&mid), "h2", Timestamp::now()),
        Changes::default()
    );
    let next = vec![
        pod(&d, "q0", "n0", "h2", true),
        old[1].clone(),
        old[2].clone(),
    ];
    assert_eq!(
        plan::rolling_update(&d, &ns, &by_node(&next), "h2", Timestamp::now()),
        changes(&[], &["p1"])
    );
    // An old pod that is not available is replaced at once, on top of the budget.
    let broken = vec![
        pod(&d, "p0", "n0", "h1", false),
        old[1].clone(),
        old[2].clone(),
    ];
    assert_eq!(
        plan::rolling_update(&d, &ns, &by_node(&broken), "h2", Timestamp::now()),
        changes(&[], &["p0", "p1"])
    );
    // 50% of 3 rounds up to 2.
    let half = with_rolling(ds(), IntOrString::Int(0), IntOrString::String("50%".into()));
    assert_eq!(
        plan::rolling_update(&half, &ns, &by_node(&old), "h2", Timestamp::now())
            .delete
            .len(),
        2
    );
}

#[test]
fn rolling_update_with_surge_starts_new_pods_first() {
    let d = with_rolling(ds(), IntOrString::Int(1), IntOrString::Int(0));
    let ns = nodes(2);
    let old: Vec<_> = (0..2)
        .map(|i| pod(&d, &format!("p{i}"), &format!("n{i}"), "h1", true))
        .collect();
    assert_eq!(
        plan::rolling_update(&d, &ns, &by_node(&old), "h2", Timestamp::now()),
        changes(&["n0"], &[])
    );
    // While the surge pod is not available, nothing else happens.
    let surging = vec![
        old[0].clone(),
        pod(&d, "q0", "n0", "h2", false),
        old[1].clone(),
    ];
    assert_eq!(
        plan::rolling_update(&d, &ns, &by_node(&surging), "h2", Timestamp::now()),
        Changes::default()
    );
    // Once it is, the old pod goes and the next node surges.
    let ready = vec![
        old[0].clone(),
        pod(&d, "q0", "n0", "h2", true),
        old[1].clone(),
    ];
    assert_eq!(
        plan::rolling_update(&d, &ns, &by_node(&ready), "h2", Timestamp::now()),
        changes(&["n1"], &["p0"])
    );
    // The manage pass keeps both pods of a surging node.
    assert_eq!(
        plan::manage(&d, &ns, &by_node(&surging), "h2", Timestamp::now()),
        Changes::default()
    );
}

#[test]
fn status_counts_nodes() {
    let mut d = ds();
    pod_spec(&mut d).node_selector = Some([("role".to_string(), "edge".to_string())].into());
    let ns = vec![
        node("n0", &[("role", "edge")], &[]),
        node("n1", &[("role", "edge")], &[]),
        node("n2", &[("role", "edge")], &[]),
        node("n3", &[], &[]),
    ];
    let pods = vec![
        pod(&d, "p0", "n0", "h2", true),
        pod(&d, "p1", "n1", "h1", true),
        pod(&d, "p3", "n3", "h1", true),
    ];
    let s = plan::status(&d, &ns, &by_node(&pods), "h2", Timestamp::now());
    assert_eq!(s.desired_number_scheduled, 3);
    assert_eq!(s.current_number_scheduled, 2);
    assert_eq!(s.number_misscheduled, 1);
    assert_eq!(s.number_ready, 2);
    assert_eq!(s.number_available, Some(2));
    assert_eq!(s.number_unavailable, Some(1));
    assert_eq!(s.updated_number_scheduled, Some(1));
    assert_eq!(s.observed_generation, Some(1));
}

#[test]
fn scaled_values() {
    assert_eq!(plan::scaled_value(Some(&IntOrString::Int(2)), 10, true), 2);
    assert_eq!(
        plan::scaled_value(Some(&IntOrString::String("25%".into())), 10, true),
        3
    );
    assert_eq!(
        plan::scaled_value(Some(&IntOrString::String("25%".into())), 10, false),
        2
    );
    assert_eq!(plan::scaled_value(None, 10, true), 0);
    let d = with_rolling(ds(), IntOrString::Int(0), IntOrString::Int(0));
    assert_eq!(plan::max_surge_and_unavailable(&d, 5), (0, 1));
}
