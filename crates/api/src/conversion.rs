//! Conversion between served versions that share one storage resource:
//! core/v1 `Event` ⇄ events.k8s.io/v1 `Event`, and autoscaling/v1 ⇄ autoscaling/v2
//! `HorizontalPodAutoscaler`.
//!
//! As upstream does, what autoscaling/v1 cannot express (other metrics, behavior, conditions,
//! all current metrics) travels in `autoscaling.alpha.kubernetes.io/*` annotations of the v1
//! object, so a v2 → v1 → v2 round trip loses nothing.

use serde_json::{Map, Value, json};

use crate::ResourceInfo;

/// Annotations carrying autoscaling/v2 fields on autoscaling/v1 objects.
pub const HPA_METRICS_ANNOTATION: &str = "autoscaling.alpha.kubernetes.io/metrics";
pub const HPA_CURRENT_METRICS_ANNOTATION: &str = "autoscaling.alpha.kubernetes.io/current-metrics";
pub const HPA_BEHAVIOR_ANNOTATION: &str = "autoscaling.alpha.kubernetes.io/behavior";
pub const HPA_CONDITIONS_ANNOTATION: &str = "autoscaling.alpha.kubernetes.io/conditions";

#[derive(Debug, thiserror::Error)]
pub enum ConversionError {
    #[error("no conversion from {from} {kind} to {to}")]
    Unsupported {
        kind: String,
        from: String,
        to: String,
    },
    #[error("object to convert is not a JSON object")]
    NotAnObject,
    #[error("invalid annotation {annotation}: {source}")]
    Annotation {
        annotation: &'static str,
        source: serde_json::Error,
    },
}

type Object = Map<String, Value>;

/// Convert `obj` (an object of `from`) to the resource `to`, and set its apiVersion and kind.
pub fn convert(
    obj: Value,
    from: &ResourceInfo,
    to: &ResourceInfo,
) -> Result<Value, ConversionError> {
    let Value::Object(mut map) = obj else {
        return Err(ConversionError::NotAnObject);
    };
    let same = from.group == to.group && from.version == to.version && from.kind == to.kind;
    if !same {
        map = match (from.group, from.version, to.group, to.version, from.kind) {
            ("", "v1", "events.k8s.io", "v1", "Event") => core_event_to_events_v1(map),
            ("events.k8s.io", "v1", "", "v1", "Event") => events_v1_to_core_event(map),
            ("autoscaling", "v2", "autoscaling", "v1", "HorizontalPodAutoscaler") => {
                hpa_v2_to_v1(map)?
            }
            ("autoscaling", "v1", "autoscaling", "v2", "HorizontalPodAutoscaler") => {
                hpa_v1_to_v2(map)?
            }
            _ => {
                return Err(ConversionError::Unsupported {
                    kind: from.kind.to_string(),
                    from: from.api_version(),
                    to: to.api_version(),
                });
            }
        };
    }
    let mut out = Map::with_capacity(map.len() + 2);
    out.insert("apiVersion".into(), Value::String(to.api_version()));
    out.insert("kind".into(), Value::String(to.kind.to_string()));
    for (k, v) in map {
        if k != "apiVersion" && k != "kind" {
            out.insert(k, v);
        }
    }
    Ok(Value::Object(out))
}

// ---------------------------------------------------------------------------------------------
// Events

/// Fields renamed between core/v1 (left) and events.k8s.io/v1 (right).
const EVENT_RENAMES: &[(&str, &str)] = &[
    ("involvedObject", "regarding"),
    ("message", "note"),
    ("reportingComponent", "reportingController"),
    ("source", "deprecatedSource"),
    ("firstTimestamp", "deprecatedFirstTimestamp"),
    ("lastTimestamp", "deprecatedLastTimestamp"),
    ("count", "deprecatedCount"),
];

fn core_event_to_events_v1(map: Object) -> Object {
    rename(map, |k| {
        EVENT_RENAMES
            .iter()
            .find(|(core, _)| *core == k)
            .map(|(_, new)| *new)
    })
}

fn events_v1_to_core_event(map: Object) -> Object {
    rename(map, |k| {
        EVENT_RENAMES
            .iter()
            .find(|(_, new)| *new == k)
            .map(|(core, _)| *core)
    })
}

fn rename(map: Object, renamed: impl Fn(&str) -> Option<&'static str>) -> Object {
    map.into_iter()
        .map(|(k, v)| match renamed(&k) {
            Some(new) => (new.to_string(), v),
            None => (k, v),
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// HorizontalPodAutoscaler

fn is_cpu_utilization(metric: &Value) -> bool {
    metric.get("type").and_then(Value::as_str) == Some("Resource")
        && metric.pointer("/resource/name").and_then(Value::as_str) == Some("cpu")
        && metric
            .pointer("/resource/target/averageUtilization")
            .is_some_and(|v| !v.is_null())
}

fn hpa_v2_to_v1(mut map: Object) -> Result<Object, ConversionError> {
    let spec = map.remove("spec").unwrap_or(Value::Null);
    let status = map.remove("status");
    let mut annotations = Object::new();

    let mut v1_spec = Object::new();
    for key in ["scaleTargetRef", "minReplicas", "maxReplicas"] {
        if let Some(v) = spec.get(key) {
            v1_spec.insert(key.into(), v.clone());
        }
    }
    let metrics = spec.get("metrics").and_then(Value::as_array);
    let mut others = Vec::new();
    for metric in metrics.into_iter().flatten() {
        if is_cpu_utilization(metric) && !v1_spec.contains_key("targetCPUUtilizationPercentage") {
            v1_spec.insert(
                "targetCPUUtilizationPercentage".into(),
                metric["resource"]["target"]["averageUtilization"].clone(),
            );
        } else {
            others.push(metric.clone());
        }
    }
    if !others.is_empty() {
        annotations.insert(HPA_METRICS_ANNOTATION.into(), encode(&Value::Array(others)));
    }
    if let Some(behavior) = spec.get("behavior").filter(|b| !b.is_null()) {
        annotations.insert(HPA_BEHAVIOR_ANNOTATION.into(), encode(behavior));
    }

    if let Some(status) = status.filter(|s| s.is_object()) {
        let mut v1_status = Object::new();
        for key in [
            "observedGeneration",
            "lastScaleTime",
            "currentReplicas",
            "desiredReplicas",
        ] {
            if let Some(v) = status.get(key) {
                v1_status.insert(key.into(), v.clone());
            }
        }
        let current = status.get("currentMetrics").and_then(Value::as_array);
        if let Some(current) = current.filter(|c| !c.is_empty()) {
            let cpu = current.iter().find_map(|m| {
                (m.get("type").and_then(Value::as_str) == Some("Resource")
                    && m.pointer("/resource/name").and_then(Value::as_str) == Some("cpu"))
                .then(|| m.pointer("/resource/current/averageUtilization"))
                .flatten()
                .filter(|v| !v.is_null())
            });
            if let Some(cpu) = cpu {
                v1_status.insert("currentCPUUtilizationPercentage".into(), cpu.clone());
            }
            annotations.insert(
                HPA_CURRENT_METRICS_ANNOTATION.into(),
                encode(&Value::Array(current.clone())),
            );
        }
        if let Some(conditions) = status
            .get("conditions")
            .and_then(Value::as_array)
            .filter(|c| !c.is_empty())
        {
            annotations.insert(
                HPA_CONDITIONS_ANNOTATION.into(),
                encode(&Value::Array(conditions.clone())),
            );
        }
        map.insert("status".into(), Value::Object(v1_status));
    }
    map.insert("spec".into(), Value::Object(v1_spec));
    if !annotations.is_empty() {
        let meta = map
            .entry("metadata")
            .or_insert_with(|| Value::Object(Object::new()));
        if let Some(meta) = meta.as_object_mut() {
            let target = meta
                .entry("annotations")
                .or_insert_with(|| Value::Object(Object::new()));
            if let Some(target) = target.as_object_mut() {
                target.extend(annotations);
            }
        }
    }
    Ok(map)
}

fn hpa_v1_to_v2(mut map: Object) -> Result<Object, ConversionError> {
    let taken = take_annotations(&mut map);
    let decode_annotation = |name: &'static str| -> Result<Option<Value>, ConversionError> {
        taken
            .get(name)
            .and_then(Value::as_str)
            .map(|s| {
                serde_json::from_str(s).map_err(|source| ConversionError::Annotation {
                    annotation: name,
                    source,
                })
            })
            .transpose()
    };
    let other_metrics = decode_annotation(HPA_METRICS_ANNOTATION)?;
    let behavior = decode_annotation(HPA_BEHAVIOR_ANNOTATION)?;
    let current_metrics = decode_annotation(HPA_CURRENT_METRICS_ANNOTATION)?;
    let conditions = decode_annotation(HPA_CONDITIONS_ANNOTATION)?;

    let spec = map.remove("spec").unwrap_or(Value::Null);
    let mut v2_spec = Object::new();
    for key in ["scaleTargetRef", "minReplicas", "maxReplicas"] {
        if let Some(v) = spec.get(key) {
            v2_spec.insert(key.into(), v.clone());
        }
    }
    let mut metrics: Vec<Value> = other_metrics
        .and_then(|m| m.as_array().cloned())
        .unwrap_or_default();
    if let Some(cpu) = spec
        .get("targetCPUUtilizationPercentage")
        .filter(|v| !v.is_null())
    {
        metrics.push(json!({
            "type": "Resource",
            "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": cpu}}
        }));
    }
    if !metrics.is_empty() {
        v2_spec.insert("metrics".into(), Value::Array(metrics));
    }
    if let Some(behavior) = behavior {
        v2_spec.insert("behavior".into(), behavior);
    }

    if let Some(status) = map.remove("status").filter(|s| s.is_object()) {
        let mut v2_status = Object::new();
        for key in [
            "observedGeneration",
            "lastScaleTime",
            "currentReplicas",
            "desiredReplicas",
        ] {
            if let Some(v) = status.get(key) {
                v2_status.insert(key.into(), v.clone());
            }
        }
        let current = match current_metrics {
            Some(m) => Some(m),
            None => status
                .get("currentCPUUtilizationPercentage")
                .filter(|v| !v.is_null())
                .map(|cpu| {
                    json!([{
                        "type": "Resource",
                        "resource": {"name": "cpu", "current": {"averageUtilization": cpu}}
                    }])
                }),
        };
        if let Some(current) = current {
            v2_status.insert("currentMetrics".into(), current);
        }
        if let Some(conditions) = conditions {
            v2_status.insert("conditions".into(), conditions);
        }
        map.insert("status".into(), Value::Object(v2_status));
    }
    map.insert("spec".into(), Value::Object(v2_spec));
    Ok(map)
}

/// Remove the v2-carrying annotations from a v1 object and return them.
fn take_annotations(map: &mut Object) -> Object {
    let mut taken = Object::new();
    let Some(meta) = map.get_mut("metadata").and_then(Value::as_object_mut) else {
        return taken;
    };
    if let Some(annotations) = meta.get_mut("annotations").and_then(Value::as_object_mut) {
        for name in [
            HPA_METRICS_ANNOTATION,
            HPA_CURRENT_METRICS_ANNOTATION,
            HPA_BEHAVIOR_ANNOTATION,
            HPA_CONDITIONS_ANNOTATION,
        ] {
            if let Some(v) = annotations.remove(name) {
                taken.insert(name.into(), v);
            }
        }
        if annotations.is_empty() {
            meta.remove("annotations");
        }
    }
    taken
}

fn encode(v: &Value) -> Value {
    Value::String(v.to_string())
}

#[cfg(test)]
mod tests;
