//! Validation of objects on create and update, with upstream's field paths and messages
//! (`pkg/apis/*/validation`), on the JSON form of objects that defaults already ran on.
//!
//! The rules cover what clients and users run into: names, labels and annotations, the
//! shape of pods and pod templates, workload selectors, services, storage, RBAC and the
//! immutability of fields on update. Rules that need other objects (quota, admission against
//! existing objects) belong to the API server.

pub mod cron;
mod kinds;
pub mod names;
mod pod;
pub mod quantity;
mod update;

use serde_json::{Map, Value};

use crate::{FieldError, ResourceInfo};
use names::NameFn;
pub use quantity::{Quantity, QuantityError, parse_quantity};

/// Total size of all annotations of one object (`TotalAnnotationSizeLimitB`).
pub const TOTAL_ANNOTATION_SIZE_LIMIT: usize = 256 * 1024;
/// Largest total of ConfigMap or Secret data (`MaxSecretSize`).
pub const MAX_SECRET_SIZE: usize = 1024 * 1024;

/// Validate an object about to be created.
pub fn validate_create(resource: &ResourceInfo, obj: &Value) -> Vec<FieldError> {
    let mut errs = Vec::new();
    if !skips_object_meta(resource) {
        errs.extend(validate_object_meta(
            obj.get("metadata").unwrap_or(&Value::Null),
            resource.namespaced,
            name_fn(resource),
        ));
    }
    kinds::validate(resource, obj, None, &mut errs);
    errs
}

/// Validate an update of `old` to `new`: the new object's own rules plus what may not change.
pub fn validate_update(resource: &ResourceInfo, new: &Value, old: &Value) -> Vec<FieldError> {
    let mut errs = validate_object_meta_update(
        new.get("metadata").unwrap_or(&Value::Null),
        old.get("metadata").unwrap_or(&Value::Null),
    );
    kinds::validate(resource, new, Some(old), &mut errs);
    update::validate(resource, new, old, &mut errs);
    errs
}

/// The `metadata.name` rule of a resource, as upstream's `Validate<Kind>Name`.
pub fn name_fn(resource: &ResourceInfo) -> NameFn {
    match (resource.group, resource.kind) {
        ("", "Service") => names::name_is_dns1035_label,
        ("", "Namespace") => names::name_is_dns_label,
        ("rbac.authorization.k8s.io", _) => names::is_valid_path_segment_name,
        _ => names::name_is_dns_subdomain,
    }
}

/// Legacy core events are validated without object metadata rules (upstream keeps old
/// clients working); everything else validates its metadata.
fn skips_object_meta(resource: &ResourceInfo) -> bool {
    resource.group.is_empty() && resource.kind == "Event"
}

/// `ValidateObjectMeta`: name or generateName, namespace, labels, annotations, finalizers,
/// owner references.
pub fn validate_object_meta(meta: &Value, namespaced: bool, name_fn: NameFn) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let name = str_of(meta, "name");
    let generate_name = str_of(meta, "generateName");
    if !generate_name.is_empty() {
        for msg in name_fn(generate_name, true) {
            errs.push(FieldError::invalid(
                "metadata.generateName",
                &Value::from(generate_name),
                msg,
            ));
        }
    }
    if name.is_empty() {
        errs.push(FieldError::required(
            "metadata.name",
            "name or generateName is required",
        ));
    } else {
        for msg in name_fn(name, false) {
            errs.push(FieldError::invalid(
                "metadata.name",
                &Value::from(name),
                msg,
            ));
        }
    }
    let namespace = str_of(meta, "namespace");
    if namespaced {
        if namespace.is_empty() {
            errs.push(FieldError::required("metadata.namespace", ""));
        } else {
            for msg in names::name_is_dns_label(namespace, false) {
                errs.push(FieldError::invalid(
                    "metadata.namespace",
                    &Value::from(namespace),
                    msg,
                ));
            }
        }
    } else if !namespace.is_empty() {
        errs.push(FieldError::forbidden(
            "metadata.namespace",
            "not allowed on this type",
        ));
    }
    validate_meta_common(meta, &mut errs);
    errs
}

/// The parts of `ValidateObjectMeta` that also apply on update.
fn validate_meta_common(meta: &Value, errs: &mut Vec<FieldError>) {
    if let Some(generation) = meta.get("generation").and_then(Value::as_i64)
        && generation < 0
    {
        errs.push(FieldError::invalid(
            "metadata.generation",
            &Value::from(generation),
            NONNEGATIVE,
        ));
    }
    validate_labels(meta.get("labels"), "metadata.labels", errs);
    validate_annotations(meta.get("annotations"), "metadata.annotations", errs);
    validate_owner_references(meta.get("ownerReferences"), errs);
    validate_finalizers(meta.get("finalizers"), "metadata.finalizers", errs);
}

/// `ValidateObjectMetaUpdate`: identity fields may not change.
pub fn validate_object_meta_update(new: &Value, old: &Value) -> Vec<FieldError> {
    let mut errs = Vec::new();
    for field in ["name", "namespace", "uid", "creationTimestamp"] {
        let new_value = new.get(field).unwrap_or(&Value::Null);
        let old_value = old.get(field).unwrap_or(&Value::Null);
        // An update that leaves uid or creationTimestamp out keeps the stored value.
        if matches!(field, "uid" | "creationTimestamp") && new_value.is_null() {
            continue;
        }
        if new_value != old_value {
            errs.push(FieldError::invalid(
                format!("metadata.{field}"),
                new_value,
                IMMUTABLE,
            ));
        }
    }
    validate_meta_common(new, &mut errs);
    errs
}

/// `ValidateLabels`: keys are qualified names, values label values.
pub fn validate_labels(labels: Option<&Value>, path: &str, errs: &mut Vec<FieldError>) {
    let Some(labels) = labels.and_then(Value::as_object) else {
        return;
    };
    for (k, v) in labels {
        for msg in names::is_qualified_name(k) {
            errs.push(FieldError::invalid(path, &Value::from(k.as_str()), msg));
        }
        let value = v.as_str().unwrap_or("");
        for msg in names::is_valid_label_value(value) {
            errs.push(FieldError::invalid(path, v, msg));
        }
    }
}

/// `ValidateAnnotations`: keys are qualified names, all together at most 256 KiB.
pub fn validate_annotations(annotations: Option<&Value>, path: &str, errs: &mut Vec<FieldError>) {
    let Some(annotations) = annotations.and_then(Value::as_object) else {
        return;
    };
    let mut total = 0;
    for (k, v) in annotations {
        for msg in names::is_qualified_name(&k.to_lowercase()) {
            errs.push(FieldError::invalid(path, &Value::from(k.as_str()), msg));
        }
        total += k.len() + v.as_str().map_or(0, str::len);
    }
    if total > TOTAL_ANNOTATION_SIZE_LIMIT {
        errs.push(FieldError::too_long(path, TOTAL_ANNOTATION_SIZE_LIMIT));
    }
}

fn validate_owner_references(refs: Option<&Value>, errs: &mut Vec<FieldError>) {
    // Upstream reports these on the list's path, without an index.
    let path = "metadata.ownerReferences";
    let mut controller: Option<&str> = None;
    for r in array(refs) {
        let api_version = str_of(r, "apiVersion");
        let version = api_version.rsplit('/').next().unwrap_or("");
        for (field, value, empty) in [
            ("apiVersion", api_version, version.is_empty()),
            ("kind", str_of(r, "kind"), str_of(r, "kind").is_empty()),
            ("name", str_of(r, "name"), str_of(r, "name").is_empty()),
            ("uid", str_of(r, "uid"), str_of(r, "uid").is_empty()),
        ] {
            if empty {
                let what = if field == "apiVersion" {
                    "version"
                } else {
                    field
                };
                errs.push(FieldError::invalid(
                    format!("{path}.{field}"),
                    &Value::from(value),
                    format!("{what} must not be empty"),
                ));
            }
        }
        if r.get("controller") == Some(&Value::Bool(true)) {
            let name = str_of(r, "name");
            match controller {
                Some(first) => errs.push(FieldError::invalid(
                    path,
                    refs.unwrap_or(&Value::Null),
                    format!(
                        "Only one reference can have Controller set to true. Found \"true\" in references for {first} and {name}"
                    ),
                )),
                None => controller = Some(name),
            }
        }
    }
}

fn validate_finalizers(finalizers: Option<&Value>, path: &str, errs: &mut Vec<FieldError>) {
    let list = array(finalizers);
    for (i, f) in list.iter().enumerate() {
        let name = f.as_str().unwrap_or("");
        let item = format!("{path}[{i}]");
        let msgs = names::is_qualified_name(name);
        if !msgs.is_empty() {
            for msg in msgs {
                errs.push(FieldError::invalid(&item, f, msg));
            }
        } else if !name.contains('/')
            && !matches!(name, "kubernetes" | "orphan" | "foregroundDeletion")
        {
            errs.push(FieldError::invalid(
                &item,
                f,
                "name is neither a standard finalizer name nor is it fully qualified",
            ));
        }
    }
    let has = |n: &str| list.iter().any(|f| f.as_str() == Some(n));
    if has("orphan") && has("foregroundDeletion") {
        errs.push(FieldError::invalid(
            path,
            finalizers.unwrap_or(&Value::Null),
            "finalizers orphan and foregroundDeletion cannot be both set",
        ));
    }
}

// ---------------------------------------------------------------------------------------------
// Shared helpers for the submodules

pub(crate) const NONNEGATIVE: &str = "must be greater than or equal to 0";
pub(crate) const IMMUTABLE: &str = "field is immutable";

pub(crate) fn child(path: &str, name: &str) -> String {
    if path.is_empty() {
        name.to_string()
    } else {
        format!("{path}.{name}")
    }
}

pub(crate) fn index(path: &str, i: usize) -> String {
    format!("{path}[{i}]")
}

pub(crate) fn key(path: &str, k: &str) -> String {
    format!("{path}[{k}]")
}

/// A string field, `""` when absent.
pub(crate) fn str_of<'a>(v: &'a Value, k: &str) -> &'a str {
    v.get(k).and_then(Value::as_str).unwrap_or("")
}

pub(crate) fn array(v: Option<&Value>) -> &[Value] {
    v.and_then(Value::as_array).map_or(&[], Vec::as_slice)
}

pub(crate) fn arr<'a>(v: &'a Value, k: &str) -> &'a [Value] {
    array(v.get(k))
}

pub(crate) fn map_of<'a>(v: &'a Value, k: &str) -> Option<&'a Map<String, Value>> {
    v.get(k).and_then(Value::as_object)
}

pub(crate) fn get<'a>(v: &'a Value, k: &str) -> &'a Value {
    v.get(k).unwrap_or(&Value::Null)
}

/// `ValidateNonnegativeField` for an optional integer field.
pub(crate) fn nonnegative(v: &Value, k: &str, path: &str, errs: &mut Vec<FieldError>) {
    if let Some(n) = v.get(k).and_then(Value::as_i64)
        && n < 0
    {
        errs.push(FieldError::invalid(
            child(path, k),
            &Value::from(n),
            NONNEGATIVE,
        ));
    }
}

pub(crate) fn invalid_each(
    errs: &mut Vec<FieldError>,
    path: &str,
    value: &Value,
    msgs: Vec<String>,
) {
    for msg in msgs {
        errs.push(FieldError::invalid(path, value, msg));
    }
}

/// `ValidateImmutableField`.
pub(crate) fn immutable(new: &Value, old: &Value, k: &str, path: &str, errs: &mut Vec<FieldError>) {
    let n = get(new, k);
    let o = get(old, k);
    if n != o {
        errs.push(FieldError::invalid(child(path, k), n, IMMUTABLE));
    }
}

/// Does a label selector (`matchLabels`/`matchExpressions`) select these labels?
pub(crate) fn selector_matches(selector: &Value, labels: Option<&Map<String, Value>>) -> bool {
    let empty = Map::new();
    let labels = labels.unwrap_or(&empty);
    let label = |k: &str| labels.get(k).and_then(Value::as_str);
    if let Some(match_labels) = map_of(selector, "matchLabels") {
        for (k, v) in match_labels {
            if label(k) != v.as_str() {
                return false;
            }
        }
    }
    for expr in arr(selector, "matchExpressions") {
        let k = str_of(expr, "key");
        let values: Vec<&str> = arr(expr, "values")
            .iter()
            .filter_map(Value::as_str)
            .collect();
        let ok = match str_of(expr, "operator") {
            "In" => label(k).is_some_and(|v| values.contains(&v)),
            "NotIn" => label(k).is_none_or(|v| !values.contains(&v)),
            "Exists" => label(k).is_some(),
            "DoesNotExist" => label(k).is_none(),
            _ => false,
        };
        if !ok {
            return false;
        }
    }
    true
}

pub(crate) fn selector_is_empty(selector: &Value) -> bool {
    map_of(selector, "matchLabels").is_none_or(Map::is_empty)
        && arr(selector, "matchExpressions").is_empty()
}

/// `ValidateLabelSelector`.
pub(crate) fn validate_label_selector(selector: &Value, path: &str, errs: &mut Vec<FieldError>) {
    validate_labels(
        selector.get("matchLabels"),
        &child(path, "matchLabels"),
        errs,
    );
    for (i, expr) in arr(selector, "matchExpressions").iter().enumerate() {
        let p = index(&child(path, "matchExpressions"), i);
        let values = arr(expr, "values");
        match str_of(expr, "operator") {
            "In" | "NotIn" => {
                if values.is_empty() {
                    errs.push(FieldError::required(
                        child(&p, "values"),
                        "must be specified when `operator` is 'In' or 'NotIn'",
                    ));
                }
            }
            "Exists" | "DoesNotExist" => {
                if !values.is_empty() {
                    errs.push(FieldError::forbidden(
                        child(&p, "values"),
                        "may not be specified when `operator` is 'Exists' or 'DoesNotExist'",
                    ));
                }
            }
            other => errs.push(FieldError::invalid(
                child(&p, "operator"),
                &Value::from(other),
                "not a valid selector operator",
            )),
        }
        let k = str_of(expr, "key");
        invalid_each(
            errs,
            &child(&p, "key"),
            &Value::from(k),
            names::is_qualified_name(k),
        );
        for (j, v) in values.iter().enumerate() {
            invalid_each(
                errs,
                &index(&child(&p, "values"), j),
                v,
                names::is_valid_label_value(v.as_str().unwrap_or("")),
            );
        }
    }
}

/// A very small line diff of two JSON values (pretty printed), appended to "may not change"
/// messages as upstream appends its own diff.
pub(crate) fn json_diff(old: &Value, new: &Value) -> String {
    let a = serde_json::to_string_pretty(old).unwrap_or_default();
    let b = serde_json::to_string_pretty(new).unwrap_or_default();
    let a: Vec<&str> = a.lines().collect();
    let b: Vec<&str> = b.lines().collect();
    // Longest common subsequence table; specs are small.
    let (n, m) = (a.len(), b.len());
    if n * m > 4_000_000 {
        return String::new();
    }
    let mut lcs = vec![vec![0u32; m + 1]; n + 1];
    for i in (0..n).rev() {
        for j in (0..m).rev() {
            lcs[i][j] = if a[i] == b[j] {
                lcs[i + 1][j + 1] + 1
            } else {
                lcs[i + 1][j].max(lcs[i][j + 1])
            };
        }
    }
    let mut out = String::new();
    let (mut i, mut j) = (0, 0);
    while i < n || j < m {
        if i < n && j < m && a[i] == b[j] {
            i += 1;
            j += 1;
        } else if i < n && (j == m || lcs[i + 1][j] >= lcs[i][j + 1]) {
            out.push_str(&format!("\n- {}", a[i]));
            i += 1;
        } else {
            out.push_str(&format!("\n+ {}", b[j]));
            j += 1;
        }
    }
    out
}

#[cfg(test)]
mod tests;
