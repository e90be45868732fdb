//! Small helpers shared by the printers: borrowing JSON access, time, label and selector
//! rendering in the same shapes upstream prints them.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde_json::Value;

use super::human_duration;

/// The value at `path`, treating `null` as absent.
pub(super) fn get<'a>(v: &'a Value, path: &[&str]) -> Option<&'a Value> {
    let mut cur = v;
    for key in path {
        cur = cur.as_object()?.get(*key)?;
    }
    (!cur.is_null()).then_some(cur)
}

pub(super) fn str_at<'a>(v: &'a Value, path: &[&str]) -> &'a str {
    get(v, path).and_then(Value::as_str).unwrap_or("")
}

/// Optional string: `None` when absent, so "<unset>"-style defaults can be told from "".
pub(super) fn opt_str<'a>(v: &'a Value, path: &[&str]) -> Option<&'a str> {
    get(v, path).and_then(Value::as_str)
}

pub(super) fn int_at(v: &Value, path: &[&str]) -> i64 {
    get(v, path).and_then(Value::as_i64).unwrap_or(0)
}

pub(super) fn bool_at(v: &Value, path: &[&str]) -> bool {
    get(v, path).and_then(Value::as_bool).unwrap_or(false)
}

pub(super) fn arr_at<'a>(v: &'a Value, path: &[&str]) -> &'a [Value] {
    get(v, path)
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[])
}

/// Entries of a map (or items of an array) at `path`.
pub(super) fn len_at(v: &Value, path: &[&str]) -> usize {
    match get(v, path) {
        Some(Value::Object(m)) => m.len(),
        Some(Value::Array(a)) => a.len(),
        _ => 0,
    }
}

pub(super) fn name(obj: &Value) -> &str {
    str_at(obj, &["metadata", "name"])
}

pub(super) fn parse_time(s: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

pub(super) fn time_at(v: &Value, path: &[&str]) -> Option<DateTime<Utc>> {
    opt_str(v, path).and_then(parse_time)
}

/// Upstream's `translateTimestampSince`: "<unknown>" for a zero (absent) time.
pub(super) fn since(t: Option<DateTime<Utc>>, now: DateTime<Utc>) -> String {
    match t {
        Some(t) => human_duration(now - t),
        None => "<unknown>".to_string(),
    }
}

/// The AGE cell: time since `metadata.creationTimestamp`.
pub(super) fn age(obj: &Value, now: DateTime<Utc>) -> Value {
    Value::String(since(time_at(obj, &["metadata", "creationTimestamp"]), now))
}

/// `labels.FormatLabels`: sorted `k=v` joined by commas, "<none>" when empty.
pub(super) fn format_labels(map: Option<&Value>) -> String {
    let Some(Value::Object(m)) = map else {
        return "<none>".to_string();
    };
    if m.is_empty() {
        return "<none>".to_string();
    }
    let sorted: BTreeMap<&str, &str> = m
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str().unwrap_or("")))
        .collect();
    let mut out = String::new();
    for (k, v) in sorted {
        if !out.is_empty() {
            out.push(',');
        }
        out.push_str(k);
        out.push('=');
        out.push_str(v);
    }
    out
}

/// A label selector rendered as `labels.Selector.String()` does: requirements sorted by
/// key, `k=v`, `k in (a,b)`, `k notin (a,b)`, `k`, `!k`. `None` for a nil selector (which
/// selects nothing), `Some("")` for an empty one (which selects everything), `Err` for an
/// operator that does not exist.
pub(super) fn label_selector_string(selector: Option<&Value>) -> Result<Option<String>, ()> {
    let Some(selector) = selector else {
        return Ok(None);
    };
    let mut requirements: Vec<(&str, String)> = Vec::new();
    if let Some(Value::Object(labels)) = get(selector, &["matchLabels"]) {
        for (k, v) in labels {
            requirements.push((k, format!("{k}={}", v.as_str().unwrap_or(""))));
        }
    }
    for expr in arr_at(selector, &["matchExpressions"]) {
        let key = str_at(expr, &["key"]);
        let mut values: Vec<&str> = arr_at(expr, &["values"])
            .iter()
            .filter_map(Value::as_str)
            .collect();
        values.sort_unstable();
        let rendered = match str_at(expr, &["operator"]) {
            "In" => format!("{key} in ({})", values.join(",")),
            "NotIn" => format!("{key} notin ({})", values.join(",")),
            "Exists" => key.to_string(),
            "DoesNotExist" => format!("!{key}"),
            _ => return Err(()),
        };
        requirements.push((key, rendered));
    }
    requirements.sort_by(|a, b| a.0.cmp(b.0));
    let parts: Vec<String> = requirements.into_iter().map(|(_, r)| r).collect();
    Ok(Some(parts.join(",")))
}

/// `metav1.FormatLabelSelector`: "<none>" when the selector selects everything or nothing.
pub(super) fn format_label_selector(selector: Option<&Value>) -> String {
    match label_selector_string(selector) {
        Err(()) => "<error>".to_string(),
        Ok(Some(s)) if !s.is_empty() => s,
        Ok(_) => "<none>".to_string(),
    }
}

/// `layoutContainerCells`: container names and images, each joined by commas.
pub(super) fn containers_and_images(containers: &[Value]) -> (String, String) {
    let mut names = String::new();
    let mut images = String::new();
    for (i, c) in containers.iter().enumerate() {
        if i > 0 {
            names.push(',');
            images.push(',');
        }
        names.push_str(str_at(c, &["name"]));
        images.push_str(str_at(c, &["image"]));
    }
    (names, images)
}

/// A resource.Quantity as a display string. Stored quantities are kept as given (already
/// canonical when written through the API), so only numbers need converting.
pub(super) fn quantity(v: Option<&Value>) -> String {
    match v {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        _ => "0".to_string(),
    }
}

/// An IntOrString as text.
pub(super) fn int_or_string(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        other => other.to_string(),
    }
}

/// `"first + N more..."` lists, as upstream's `listWithMoreString`.
pub(super) fn list_with_more(list: &[String], more: bool, count: usize, max: usize) -> String {
    let joined = list.join(",");
    if more {
        return format!("{joined} + {} more...", count - max);
    }
    if joined.is_empty() {
        return "<unset>".to_string();
    }
    joined
}

/// `net.JoinHostPort`: brackets around IPv6 hosts.
pub(super) fn join_host_port(host: &str, port: i64) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn selector_rendering_sorts_requirements_and_values() {
        let sel = json!({
            "matchLabels": {"app": "web", "tier": "front"},
            "matchExpressions": [
                {"key": "env", "operator": "In", "values": ["prod", "dev"]},
                {"key": "zz", "operator": "DoesNotExist"},
                {"key": "b", "operator": "Exists"},
                {"key": "x", "operator": "NotIn", "values": ["1"]}
            ]
        });
        assert_eq!(
            format_label_selector(Some(&sel)),
            "app=web,b,env in (dev,prod),tier=front,x notin (1),!zz"
        );
        assert_eq!(format_label_selector(Some(&json!({}))), "<none>");
        assert_eq!(format_label_selector(None), "<none>");
        assert_eq!(
            label_selector_string(Some(&json!({}))),
            Ok(Some(String::new()))
        );
        assert_eq!(
            format_label_selector(Some(
                &json!({"matchExpressions": [{"key": "a", "operator": "Bogus"}]})
            )),
            "<error>"
        );
    }

    #[test]
    fn labels_are_sorted_and_none_when_empty() {
        assert_eq!(format_labels(Some(&json!({"b": "2", "a": "1"}))), "a=1,b=2");
        assert_eq!(format_labels(Some(&json!({}))), "<none>");
        assert_eq!(format_labels(None), "<none>");
    }

    #[test]
    fn null_counts_as_absent() {
        let v = json!({"a": {"b": null}});
        assert!(get(&v, &["a", "b"]).is_none());
        assert_eq!(str_at(&v, &["a", "b"]), "");
        assert_eq!(join_host_port("fd00::1", 80), "[fd00::1]:80");
        assert_eq!(join_host_port("10.0.0.1", 80), "10.0.0.1:80");
    }
}
