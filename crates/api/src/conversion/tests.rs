use serde_json::{Value, json};

use super::*;
use crate::resources::by_kind;

fn conv(obj: Value, from: (&str, &str), to: (&str, &str)) -> Value {
    convert(
        obj,
        by_kind(from.0, from.1).unwrap(),
        by_kind(to.0, to.1).unwrap(),
    )
    .unwrap()
}

#[test]
fn events_rename_fields_both_ways() {
    let core = json!({
        "apiVersion": "v1", "kind": "Event",
        "metadata": {"name": "web.1", "namespace": "default"},
        "involvedObject": {"kind": "Pod", "name": "web", "namespace": "default"},
        "reason": "Started", "message": "Started container web",
        "source": {"component": "kubelet", "host": "node-1"},
        "firstTimestamp": "2024-01-01T00:00:00Z", "lastTimestamp": "2024-01-01T00:01:00Z",
        "count": 2, "type": "Normal", "eventTime": null, "action": "Start",
        "reportingComponent": "kubelet", "reportingInstance": "node-1",
        "series": {"count": 2, "lastObservedTime": "2024-01-01T00:01:00.000000Z"},
        "related": {"kind": "Node", "name": "node-1"}
    });
    let v1 = conv(core.clone(), ("v1", "Event"), ("events.k8s.io/v1", "Event"));
    let cases = [
        ("/apiVersion", json!("events.k8s.io/v1")),
        ("/kind", json!("Event")),
        ("/regarding/name", json!("web")),
        ("/note", json!("Started container web")),
        ("/deprecatedSource/host", json!("node-1")),
        ("/deprecatedFirstTimestamp", json!("2024-01-01T00:00:00Z")),
        ("/deprecatedLastTimestamp", json!("2024-01-01T00:01:00Z")),
        ("/deprecatedCount", json!(2)),
        ("/reportingController", json!("kubelet")),
        ("/reportingInstance", json!("node-1")),
        ("/series/count", json!(2)),
        ("/related/kind", json!("Node")),
        ("/action", json!("Start")),
        ("/reason", json!("Started")),
        ("/type", json!("Normal")),
        ("/message", Value::Null),
        ("/involvedObject", Value::Null),
    ];
    for (pointer, want) in cases {
        assert_eq!(
            v1.pointer(pointer).cloned().unwrap_or(Value::Null),
            want,
            "{pointer}"
        );
    }
    let back = conv(v1, ("events.k8s.io/v1", "Event"), ("v1", "Event"));
    assert_eq!(back, core);
}

#[test]
fn hpa_v1_to_v2_and_back() {
    let v1 = json!({
        "apiVersion": "autoscaling/v1", "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": "web", "namespace": "default"},
        "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"},
                 "minReplicas": 1, "maxReplicas": 5, "targetCPUUtilizationPercentage": 50},
        "status": {"currentReplicas": 2, "desiredReplicas": 3, "currentCPUUtilizationPercentage": 70}
    });
    let v2 = conv(
        v1.clone(),
        ("autoscaling/v1", "HorizontalPodAutoscaler"),
        ("autoscaling/v2", "HorizontalPodAutoscaler"),
    );
    assert_eq!(v2["apiVersion"], "autoscaling/v2");
    assert_eq!(
        v2["spec"]["metrics"],
        json!([{"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 50}}}])
    );
    assert_eq!(
        v2["status"]["currentMetrics"][0]["resource"]["current"]["averageUtilization"],
        70
    );
    assert!(v2["spec"].get("targetCPUUtilizationPercentage").is_none());

    let back = conv(
        v2,
        ("autoscaling/v2", "HorizontalPodAutoscaler"),
        ("autoscaling/v1", "HorizontalPodAutoscaler"),
    );
    assert_eq!(back["spec"], v1["spec"]);
    assert_eq!(back["status"]["currentCPUUtilizationPercentage"], 70);
    assert_eq!(back["status"]["desiredReplicas"], 3);
}

#[test]
fn hpa_v2_only_fields_survive_a_v1_round_trip() {
    let v2 = json!({
        "apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": "web", "namespace": "default", "annotations": {"team": "a"}},
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"},
            "minReplicas": 2, "maxReplicas": 10,
            "metrics": [
                {"type": "Resource", "resource": {"name": "memory", "target": {"type": "AverageValue", "averageValue": "500Mi"}}},
                {"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 60}}}
            ],
            "behavior": {"scaleDown": {"stabilizationWindowSeconds": 60}}
        },
        "status": {
            "currentReplicas": 2, "desiredReplicas": 2,
            "currentMetrics": [{"type": "Resource", "resource": {"name": "cpu", "current": {"averageUtilization": 40, "averageValue": "100m"}}}],
            "conditions": [{"type": "AbleToScale", "status": "True", "reason": "ReadyForNewScale"}]
        }
    });
    let v1 = conv(
        v2.clone(),
        ("autoscaling/v2", "HorizontalPodAutoscaler"),
        ("autoscaling/v1", "HorizontalPodAutoscaler"),
    );
    assert_eq!(v1["spec"]["targetCPUUtilizationPercentage"], 60);
    assert_eq!(v1["status"]["currentCPUUtilizationPercentage"], 40);
    let annotations = v1["metadata"]["annotations"].as_object().unwrap();
    for name in [
        HPA_METRICS_ANNOTATION,
        HPA_BEHAVIOR_ANNOTATION,
        HPA_CURRENT_METRICS_ANNOTATION,
        HPA_CONDITIONS_ANNOTATION,
    ] {
        assert!(annotations.contains_key(name), "{name}");
    }
    let back = conv(
        v1,
        ("autoscaling/v1", "HorizontalPodAutoscaler"),
        ("autoscaling/v2", "HorizontalPodAutoscaler"),
    );
    assert_eq!(back["metadata"], v2["metadata"]);
    assert_eq!(back["spec"]["behavior"], v2["spec"]["behavior"]);
    assert_eq!(back["status"], v2["status"]);
    // The cpu metric moves after the others, as upstream's conversion orders it.
    let metrics = back["spec"]["metrics"].as_array().unwrap();
    assert_eq!(metrics.len(), 2);
    assert_eq!(metrics[0]["resource"]["name"], "memory");
    assert_eq!(metrics[1]["resource"]["target"]["averageUtilization"], 60);
}

#[test]
fn identity_and_errors() {
    let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "a"}});
    assert_eq!(conv(pod.clone(), ("v1", "Pod"), ("v1", "Pod")), pod);
    let err = convert(
        pod,
        by_kind("v1", "Pod").unwrap(),
        by_kind("apps/v1", "Deployment").unwrap(),
    )
    .unwrap_err();
    assert_eq!(err.to_string(), "no conversion from v1 Pod to apps/v1");
    let bad =
        json!({"metadata": {"annotations": {HPA_METRICS_ANNOTATION: "{not json"}}, "spec": {}});
    let err = convert(
        bad,
        by_kind("autoscaling/v1", "HorizontalPodAutoscaler").unwrap(),
        by_kind("autoscaling/v2", "HorizontalPodAutoscaler").unwrap(),
    )
    .unwrap_err();
    assert!(
        err.to_string()
            .starts_with("invalid annotation autoscaling.alpha.kubernetes.io/metrics")
    );
}
