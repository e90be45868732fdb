//! Field selectors: the `fieldSelector` query parameter.
//!
//! As upstream, a selector is a comma-separated AND of `field=value`, `field==value` and
//! `field!=value` terms; `\,`, `\=` and `\\` escape those characters in values. Each kind
//! accepts only some field names (upstream's field label conversion functions) and exposes
//! the selectable values of an object (upstream's `GetAttrs`/`ToSelectableFields`); both
//! lists are here, keyed by group and kind. A field missing from an object's set reads as the
//! empty string, so `spec.nodeName=` selects unscheduled pods.

use std::collections::BTreeMap;
use std::fmt;

use serde_json::Value;

use crate::resources::ResourceInfo;

/// Why a field selector was rejected. Every variant is a 400 BadRequest.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FieldSelectorError {
    /// A term with no `=`, `==` or `!=`.
    #[error("invalid selector: '{selector}'; can't understand '{term}'")]
    Syntax { selector: String, term: String },
    /// A backslash followed by something other than `\`, `,` or `=`.
    #[error("invalid field selector: invalid escape sequence: {0}")]
    InvalidEscape(String),
    /// A bare `,` or `=` inside a value.
    #[error("invalid field selector: unescaped character in value: {0}")]
    UnescapedCharacter(char),
    /// The kind does not support selecting on this field; `message` is upstream's wording
    /// for that kind.
    #[error("{message}")]
    NotSupported { field: String, message: String },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldOperator {
    /// `=` or `==`.
    Equals,
    /// `!=`.
    NotEquals,
}

/// One `field op value` term (the value unescaped).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldRequirement {
    pub field: String,
    pub operator: FieldOperator,
    pub value: String,
}

/// The selectable fields of one object, by name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldSet(BTreeMap<String, String>);

impl FieldSet {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn insert(&mut self, field: impl Into<String>, value: impl Into<String>) {
        self.0.insert(field.into(), value.into());
    }

    /// The field's value; absent fields read as empty, as upstream's `fields.Set.Get`.
    pub fn get(&self, field: &str) -> &str {
        self.0.get(field).map(String::as_str).unwrap_or("")
    }

    pub fn contains(&self, field: &str) -> bool {
        self.0.contains_key(field)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }
}

impl<K: Into<String>, V: Into<String>> FromIterator<(K, V)> for FieldSet {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Self {
        Self(
            iter.into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        )
    }
}

/// A parsed field selector.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldSelector {
    requirements: Vec<FieldRequirement>,
}

impl FieldSelector {
    /// The selector that matches everything.
    pub fn everything() -> Self {
        Self::default()
    }

    /// Parse the `fieldSelector` query parameter. Field names are not checked here; see
    /// [`FieldSelector::convert_for`].
    pub fn parse(selector: &str) -> Result<Self, FieldSelectorError> {
        let mut terms = split_terms(selector);
        // Upstream sorts the raw terms, which fixes the order of the printed form.
        terms.sort_unstable();
        let mut requirements = Vec::new();
        for term in terms {
            if term.is_empty() {
                continue;
            }
            let Some((field, operator, raw)) = split_term(term) else {
                return Err(FieldSelectorError::Syntax {
                    selector: selector.to_string(),
                    term: term.to_string(),
                });
            };
            requirements.push(FieldRequirement {
                field: field.to_string(),
                operator,
                value: unescape_value(raw)?,
            });
        }
        Ok(Self { requirements })
    }

    /// Check every field against what `resource` supports and rewrite legacy or
    /// version-specific names to the names [`object_fields`] produces (`spec.host` →
    /// `spec.nodeName`; `regarding.kind` → `involvedObject.kind` for events.k8s.io).
    pub fn convert_for(&self, resource: &ResourceInfo) -> Result<Self, FieldSelectorError> {
        let requirements = self
            .requirements
            .iter()
            .map(|r| {
                Ok(FieldRequirement {
                    field: convert_field_label(resource, &r.field)?.to_string(),
                    operator: r.operator,
                    value: r.value.clone(),
                })
            })
            .collect::<Result<_, _>>()?;
        Ok(Self { requirements })
    }

    pub fn is_empty(&self) -> bool {
        self.requirements.is_empty()
    }

    pub fn requirements(&self) -> &[FieldRequirement] {
        &self.requirements
    }

    /// Whether an object with these selectable fields satisfies every term.
    pub fn matches(&self, fields: &FieldSet) -> bool {
        self.requirements.iter().all(|r| match r.operator {
            FieldOperator::Equals => fields.get(&r.field) == r.value,
            FieldOperator::NotEquals => fields.get(&r.field) != r.value,
        })
    }

    /// The value the selector pins `field` to with `=`, if any (for indexed lookups such as
    /// pods by `spec.nodeName`).
    pub fn requires_exact_match(&self, field: &str) -> Option<&str> {
        self.requirements
            .iter()
            .find(|r| r.field == field && r.operator == FieldOperator::Equals)
            .map(|r| r.value.as_str())
    }
}

impl fmt::Display for FieldSelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, r) in self.requirements.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            let op = match r.operator {
                FieldOperator::Equals => "=",
                FieldOperator::NotEquals => "!=",
            };
            write!(f, "{}{op}{}", r.field, escape_value(&r.value))?;
        }
        Ok(())
    }
}

impl std::str::FromStr for FieldSelector {
    type Err = FieldSelectorError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

/// Split on commas not preceded by a backslash escape.
fn split_terms(selector: &str) -> Vec<&str> {
    if selector.is_empty() {
        return Vec::new();
    }
    let mut terms = Vec::new();
    let mut start = 0;
    let mut escaped = false;
    for (i, c) in selector.char_indices() {
        if escaped {
            escaped = false;
        } else if c == '\\' {
            escaped = true;
        } else if c == ',' {
            terms.push(&selector[start..i]);
            start = i + 1;
        }
    }
    terms.push(&selector[start..]);
    terms
}

/// The first operator in the term wins; at one position `!=` and `==` beat `=`.
fn split_term(term: &str) -> Option<(&str, FieldOperator, &str)> {
    for (i, _) in term.char_indices() {
        let rest = &term[i..];
        for (op, operator) in [
            ("!=", FieldOperator::NotEquals),
            ("==", FieldOperator::Equals),
            ("=", FieldOperator::Equals),
        ] {
            if let Some(value) = rest.strip_prefix(op) {
                return Some((&term[..i], operator, value));
            }
        }
    }
    None
}

/// Upstream `fields.EscapeValue`.
pub fn escape_value(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        if matches!(c, '\\' | ',' | '=') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Upstream `fields.UnescapeValue`.
pub fn unescape_value(value: &str) -> Result<String, FieldSelectorError> {
    let mut out = String::with_capacity(value.len());
    let mut escaped = false;
    for c in value.chars() {
        if escaped {
            if !matches!(c, '\\' | ',' | '=') {
                return Err(FieldSelectorError::InvalidEscape(format!("\\{c}")));
            }
            out.push(c);
            escaped = false;
            continue;
        }
        match c {
            '\\' => escaped = true,
            ',' | '=' => return Err(FieldSelectorError::UnescapedCharacter(c)),
            _ => out.push(c),
        }
    }
    if escaped {
        return Err(FieldSelectorError::InvalidEscape("\\".into()));
    }
    Ok(out)
}

// ---- per-kind field labels ----

const META: &[&str] = &["metadata.name", "metadata.namespace"];

/// Which field names a kind accepts, mirroring upstream's `AddFieldLabelConversionFunc`
/// registrations. `aliases` map accepted names to the names `object_fields` produces.
struct Labels {
    accepted: &'static [&'static str],
    aliases: &'static [(&'static str, &'static str)],
    reject: fn(&str) -> String,
}

fn not_supported(field: &str) -> String {
    format!("field label not supported: {field}")
}

fn not_known(field: &str) -> String {
    format!(
        "\"{field}\" is not a known field selector: only \"metadata.name\", \"metadata.namespace\""
    )
}

fn job_not_supported(field: &str) -> String {
    format!("field label \"{field}\" not supported for batchv1.Job")
}

const EVENT_FIELDS: &[&str] = &[
    "involvedObject.kind",
    "involvedObject.namespace",
    "involvedObject.name",
    "involvedObject.uid",
    "involvedObject.apiVersion",
    "involvedObject.resourceVersion",
    "involvedObject.fieldPath",
    "reason",
    "reportingComponent",
    "source",
    "type",
    "metadata.namespace",
    "metadata.name",
];

fn labels_for(resource: &ResourceInfo) -> Labels {
    let (accepted, aliases, reject): (&'static [&'static str], _, fn(&str) -> String) =
        match (resource.group, resource.kind) {
            ("", "Pod") => (
                &[
                    "metadata.name",
                    "metadata.namespace",
                    "spec.nodeName",
                    "spec.restartPolicy",
                    "spec.schedulerName",
                    "spec.serviceAccountName",
                    "spec.hostNetwork",
                    "status.phase",
                    "status.podIP",
                    "status.podIPs",
                    "status.nominatedNodeName",
                ],
                // Old v1 clients send spec.host.
                &[("spec.host", "spec.nodeName")][..],
                not_supported,
            ),
            ("", "Node") => (
                &["metadata.name", "spec.unschedulable"],
                &[][..],
                not_supported,
            ),
            ("", "ReplicationController") => (
                &["metadata.name", "metadata.namespace", "status.replicas"],
                &[][..],
                not_supported,
            ),
            ("", "Event") => (EVENT_FIELDS, &[][..], not_supported),
            ("", "Namespace") => (&["status.phase", "metadata.name"], &[][..], not_supported),
            ("", "Secret") => (
                &["type", "metadata.namespace", "metadata.name"],
                &[][..],
                not_supported,
            ),
            ("", "Service") => (
                &[
                    "metadata.namespace",
                    "metadata.name",
                    "spec.clusterIP",
                    "spec.type",
                ],
                &[][..],
                not_supported,
            ),
            ("batch", "Job") => (
                &["metadata.name", "metadata.namespace", "status.successful"],
                &[][..],
                job_not_supported,
            ),
            // events.k8s.io/v1 names its fields differently but selects on the core ones.
            ("events.k8s.io", "Event") => (
                &[
                    "reason",
                    "source",
                    "type",
                    "metadata.namespace",
                    "metadata.name",
                ],
                &[
                    ("regarding.kind", "involvedObject.kind"),
                    ("regarding.namespace", "involvedObject.namespace"),
                    ("regarding.name", "involvedObject.name"),
                    ("regarding.uid", "involvedObject.uid"),
                    ("regarding.apiVersion", "involvedObject.apiVersion"),
                    (
                        "regarding.resourceVersion",
                        "involvedObject.resourceVersion",
                    ),
                    ("regarding.fieldPath", "involvedObject.fieldPath"),
                    ("reportingController", "reportingComponent"),
                ][..],
                not_supported,
            ),
            // Kinds with no registration get upstream's metadata-only default (this includes
            // the whole apps group).
            _ => (META, &[][..], not_known),
        };
    Labels {
        accepted,
        aliases,
        reject,
    }
}

/// Upstream's field label conversion: the name `object_fields` uses for `field`, or the
/// kind's "not supported" error.
pub fn convert_field_label(
    resource: &ResourceInfo,
    field: &str,
) -> Result<&'static str, FieldSelectorError> {
    let labels = labels_for(resource);
    if let Some(name) = labels.accepted.iter().find(|a| **a == field) {
        return Ok(name);
    }
    if let Some((_, to)) = labels.aliases.iter().find(|(from, _)| *from == field) {
        return Ok(to);
    }
    Err(FieldSelectorError::NotSupported {
        field: field.to_string(),
        message: (labels.reject)(field),
    })
}

/// Whether `resource` supports selecting on `field`.
pub fn validate_field(resource: &ResourceInfo, field: &str) -> Result<(), FieldSelectorError> {
    convert_field_label(resource, field).map(|_| ())
}

/// The string at a dotted path, or "" when absent or not a string.
fn string_at(obj: &Value, path: &str) -> String {
    lookup(obj, path)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
}

fn lookup<'a>(obj: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.').try_fold(obj, |v, key| v.get(key))
}

/// A boolean field formatted as Go's `strconv.FormatBool`, false when absent.
fn bool_at(obj: &Value, path: &str) -> String {
    lookup(obj, path)
        .and_then(Value::as_bool)
        .unwrap_or(false)
        .to_string()
}

/// An integer field formatted in decimal, 0 when absent.
fn int_at(obj: &Value, path: &str) -> String {
    lookup(obj, path)
        .and_then(Value::as_i64)
        .unwrap_or(0)
        .to_string()
}

/// The selectable fields of `obj` (JSON of `resource`'s kind), under the names
/// [`FieldSelector::convert_for`] produces: `metadata.name`, `metadata.namespace` (for
/// namespaced kinds) and the kind's own fields.
pub fn object_fields(resource: &ResourceInfo, obj: &Value) -> FieldSet {
    let mut set = FieldSet::new();
    set.insert("metadata.name", string_at(obj, "metadata.name"));
    if resource.namespaced {
        set.insert("metadata.namespace", string_at(obj, "metadata.namespace"));
    }
    match (resource.group, resource.kind) {
        ("", "Pod") => {
            for f in [
                "spec.nodeName",
                "spec.restartPolicy",
                "spec.schedulerName",
                "spec.serviceAccountName",
                "status.phase",
                "status.nominatedNodeName",
            ] {
                set.insert(f, string_at(obj, f));
            }
            set.insert("spec.hostNetwork", bool_at(obj, "spec.hostNetwork"));
            // Upstream reads the first of status.podIPs; status.podIP mirrors it.
            let pod_ip = lookup(obj, "status.podIPs")
                .and_then(|ips| ips.get(0))
                .and_then(|ip| ip.get("ip"))
                .and_then(Value::as_str)
                .map(str::to_string)
                .unwrap_or_else(|| string_at(obj, "status.podIP"));
            set.insert("status.podIP", pod_ip);
        }
        ("", "Node") => set.insert("spec.unschedulable", bool_at(obj, "spec.unschedulable")),
        ("", "ReplicationController") | ("apps", "ReplicaSet") => {
            set.insert("status.replicas", int_at(obj, "status.replicas"));
        }
        ("batch", "Job") => set.insert("status.successful", int_at(obj, "status.succeeded")),
        ("", "Secret") => set.insert("type", string_at(obj, "type")),
        ("", "Namespace") => set.insert("status.phase", string_at(obj, "status.phase")),
        ("", "Service") => {
            set.insert("spec.clusterIP", string_at(obj, "spec.clusterIP"));
            set.insert("spec.type", string_at(obj, "spec.type"));
        }
        (_, "Event") if resource.storage == "events" => event_fields(resource, obj, &mut set),
        _ => {}
    }
    set
}

/// Events are selectable by their core/v1 field names whichever version the JSON is in.
fn event_fields(resource: &ResourceInfo, obj: &Value, set: &mut FieldSet) {
    let events_group = match obj.get("apiVersion").and_then(Value::as_str) {
        Some(api_version) => api_version.starts_with("events.k8s.io/"),
        None => resource.group == "events.k8s.io",
    };
    let (object, reporting, source) = if events_group {
        (
            "regarding",
            "reportingController",
            "deprecatedSource.component",
        )
    } else {
        ("involvedObject", "reportingComponent", "source.component")
    };
    for f in [
        "kind",
        "namespace",
        "name",
        "uid",
        "apiVersion",
        "resourceVersion",
        "fieldPath",
    ] {
        set.insert(
            format!("involvedObject.{f}"),
            string_at(obj, &format!("{object}.{f}")),
        );
    }
    set.insert("reason", string_at(obj, "reason"));
    let reporting = string_at(obj, reporting);
    let mut source = string_at(obj, source);
    if source.is_empty() {
        source = reporting.clone();
    }
    set.insert("source", source);
    set.insert("reportingComponent", reporting);
    set.insert("type", string_at(obj, "type"));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::lookup as resource;
    use serde_json::json;

    /// (field, is `=`, value)
    type Term<'a> = (&'a str, bool, &'a str);
    /// (group, version, plural, field, the converted name or the error message)
    type LabelCase<'a> = (&'a str, &'a str, &'a str, &'a str, Result<&'a str, &'a str>);

    #[test]
    fn parses_terms_and_prints_them_escaped() {
        // (input, printed form, requirements)
        let cases: &[(&str, &str, &[Term])] = &[
            ("", "", &[]),
            (",", "", &[]),
            ("a=b", "a=b", &[("a", true, "b")]),
            ("a==b", "a=b", &[("a", true, "b")]),
            ("a!=b", "a!=b", &[("a", false, "b")]),
            ("a=", "a=", &[("a", true, "")]),
            ("b=2,a=1", "a=1,b=2", &[("a", true, "1"), ("b", true, "2")]),
            (r"a=x\,y", r"a=x\,y", &[("a", true, "x,y")]),
            (r"a=x\=y", r"a=x\=y", &[("a", true, "x=y")]),
            (r"a=x\\y", r"a=x\\y", &[("a", true, r"x\y")]),
            (
                "metadata.name=web,spec.nodeName!=",
                "metadata.name=web,spec.nodeName!=",
                &[("metadata.name", true, "web"), ("spec.nodeName", false, "")],
            ),
            // The first operator wins, even inside what looks like a value.
            (r"a!=b\=c", r"a!=b\=c", &[("a", false, "b=c")]),
            (" a = b ", " a = b ", &[(" a ", true, " b ")]),
        ];
        for (input, printed, want) in cases {
            let s = FieldSelector::parse(input).unwrap_or_else(|e| panic!("{input:?}: {e}"));
            assert_eq!(&s.to_string(), printed, "input {input:?}");
            let got: Vec<Term> = s
                .requirements()
                .iter()
                .map(|r| {
                    (
                        r.field.as_str(),
                        r.operator == FieldOperator::Equals,
                        r.value.as_str(),
                    )
                })
                .collect();
            assert_eq!(&got, want, "input {input:?}");
            assert_eq!(FieldSelector::parse(&s.to_string()).unwrap(), s);
        }
        assert!(FieldSelector::parse("").unwrap().is_empty());
    }

    #[test]
    fn rejects_malformed_selectors() {
        let cases = [
            ("a", "invalid selector: 'a'; can't understand 'a'"),
            ("x=1,b", "invalid selector: 'x=1,b'; can't understand 'b'"),
            (
                "a=b=c",
                "invalid field selector: unescaped character in value: =",
            ),
            (
                r"a=b\c",
                r"invalid field selector: invalid escape sequence: \c",
            ),
            (
                r"a=b\",
                r"invalid field selector: invalid escape sequence: \",
            ),
        ];
        for (input, want) in cases {
            let err = FieldSelector::parse(input).expect_err(input);
            assert_eq!(err.to_string(), want, "input {input:?}");
        }
    }

    #[test]
    fn matches_with_absent_fields_reading_empty() {
        let fields: FieldSet = [("metadata.name", "web"), ("spec.nodeName", "")]
            .into_iter()
            .collect();
        let cases = [
            ("", true),
            ("metadata.name=web", true),
            ("metadata.name==web", true),
            ("metadata.name=db", false),
            ("metadata.name!=db", true),
            ("metadata.name!=web", false),
            ("spec.nodeName=", true),
            ("spec.nodeName!=", false),
            ("missing=", true),
            ("missing=x", false),
            ("missing!=x", true),
            ("metadata.name=web,spec.nodeName=", true),
            ("metadata.name=web,spec.nodeName=n1", false),
        ];
        for (input, want) in cases {
            let s = FieldSelector::parse(input).unwrap();
            assert_eq!(s.matches(&fields), want, "selector {input:?}");
        }
        let s = FieldSelector::parse("spec.nodeName=n1,status.phase!=Failed").unwrap();
        assert_eq!(s.requires_exact_match("spec.nodeName"), Some("n1"));
        assert_eq!(s.requires_exact_match("status.phase"), None);
    }

    #[test]
    fn validates_field_names_per_kind() {
        let cases: &[LabelCase] = &[
            ("", "v1", "pods", "spec.nodeName", Ok("spec.nodeName")),
            ("", "v1", "pods", "spec.host", Ok("spec.nodeName")),
            ("", "v1", "pods", "status.podIPs", Ok("status.podIPs")),
            ("", "v1", "pods", "spec.hostNetwork", Ok("spec.hostNetwork")),
            (
                "",
                "v1",
                "pods",
                "metadata.namespace",
                Ok("metadata.namespace"),
            ),
            (
                "",
                "v1",
                "pods",
                "spec.foo",
                Err("field label not supported: spec.foo"),
            ),
            (
                "",
                "v1",
                "nodes",
                "spec.unschedulable",
                Ok("spec.unschedulable"),
            ),
            (
                "",
                "v1",
                "nodes",
                "metadata.namespace",
                Err("field label not supported: metadata.namespace"),
            ),
            ("", "v1", "namespaces", "status.phase", Ok("status.phase")),
            ("", "v1", "secrets", "type", Ok("type")),
            ("", "v1", "services", "spec.clusterIP", Ok("spec.clusterIP")),
            (
                "",
                "v1",
                "services",
                "spec.ports",
                Err("field label not supported: spec.ports"),
            ),
            (
                "",
                "v1",
                "replicationcontrollers",
                "status.replicas",
                Ok("status.replicas"),
            ),
            (
                "",
                "v1",
                "events",
                "involvedObject.name",
                Ok("involvedObject.name"),
            ),
            (
                "",
                "v1",
                "events",
                "regarding.name",
                Err("field label not supported: regarding.name"),
            ),
            (
                "events.k8s.io",
                "v1",
                "events",
                "regarding.name",
                Ok("involvedObject.name"),
            ),
            (
                "events.k8s.io",
                "v1",
                "events",
                "reportingController",
                Ok("reportingComponent"),
            ),
            (
                "events.k8s.io",
                "v1",
                "events",
                "involvedObject.name",
                Err("field label not supported: involvedObject.name"),
            ),
            (
                "batch",
                "v1",
                "jobs",
                "status.successful",
                Ok("status.successful"),
            ),
            (
                "batch",
                "v1",
                "jobs",
                "status.active",
                Err("field label \"status.active\" not supported for batchv1.Job"),
            ),
            (
                "apps",
                "v1",
                "deployments",
                "metadata.name",
                Ok("metadata.name"),
            ),
            (
                "apps",
                "v1",
                "replicasets",
                "status.replicas",
                Err(
                    "\"status.replicas\" is not a known field selector: only \"metadata.name\", \"metadata.namespace\"",
                ),
            ),
            (
                "",
                "v1",
                "configmaps",
                "data",
                Err(
                    "\"data\" is not a known field selector: only \"metadata.name\", \"metadata.namespace\"",
                ),
            ),
        ];
        for (group, version, plural, field, want) in cases {
            let r = resource(group, version, plural).unwrap();
            let got = convert_field_label(r, field).map_err(|e| e.to_string());
            assert_eq!(
                got,
                want.map_err(str::to_string),
                "{plural}.{group} {field}"
            );
            assert_eq!(validate_field(r, field).is_ok(), want.is_ok());
        }
    }

    #[test]
    fn converts_selectors_for_a_resource() {
        let pods = resource("", "v1", "pods").unwrap();
        let s = FieldSelector::parse("spec.host=n1")
            .unwrap()
            .convert_for(pods)
            .unwrap();
        assert_eq!(s.to_string(), "spec.nodeName=n1");
        let err = FieldSelector::parse("metadata.name=a,bogus=1")
            .unwrap()
            .convert_for(pods)
            .unwrap_err();
        assert_eq!(err.to_string(), "field label not supported: bogus");
        assert!(matches!(err, FieldSelectorError::NotSupported { field, .. } if field == "bogus"));
    }

    #[test]
    fn computes_pod_fields() {
        let pods = resource("", "v1", "pods").unwrap();
        let pod = json!({
            "metadata": {"name": "web-1", "namespace": "prod"},
            "spec": {"nodeName": "n1", "restartPolicy": "Always", "schedulerName": "default-scheduler",
                     "serviceAccountName": "default", "hostNetwork": true},
            "status": {"phase": "Running", "podIP": "10.0.0.9", "podIPs": [{"ip": "10.0.0.9"}, {"ip": "fd00::9"}],
                       "nominatedNodeName": "n2"}
        });
        let f = object_fields(pods, &pod);
        let want: FieldSet = [
            ("metadata.name", "web-1"),
            ("metadata.namespace", "prod"),
            ("spec.nodeName", "n1"),
            ("spec.restartPolicy", "Always"),
            ("spec.schedulerName", "default-scheduler"),
            ("spec.serviceAccountName", "default"),
            ("spec.hostNetwork", "true"),
            ("status.phase", "Running"),
            ("status.podIP", "10.0.0.9"),
            ("status.nominatedNodeName", "n2"),
        ]
        .into_iter()
        .collect();
        assert_eq!(f, want);
        let bare = object_fields(pods, &json!({"metadata": {"name": "p", "namespace": "d"}}));
        assert_eq!(bare.get("spec.hostNetwork"), "false");
        assert_eq!(bare.get("spec.nodeName"), "");
        let sel = FieldSelector::parse("spec.host=")
            .unwrap()
            .convert_for(pods)
            .unwrap();
        assert!(sel.matches(&bare));
        assert!(!sel.matches(&f));
    }

    #[test]
    fn computes_fields_of_other_kinds() {
        // (group, version, plural, object, field, expected value)
        let cases = [
            (
                "",
                "v1",
                "nodes",
                json!({"metadata": {"name": "n1"}, "spec": {"unschedulable": true}}),
                "spec.unschedulable",
                "true",
            ),
            (
                "",
                "v1",
                "nodes",
                json!({"metadata": {"name": "n1"}}),
                "spec.unschedulable",
                "false",
            ),
            (
                "",
                "v1",
                "nodes",
                json!({"metadata": {"name": "n1"}}),
                "metadata.name",
                "n1",
            ),
            (
                "",
                "v1",
                "namespaces",
                json!({"metadata": {"name": "x"}, "status": {"phase": "Terminating"}}),
                "status.phase",
                "Terminating",
            ),
            (
                "",
                "v1",
                "secrets",
                json!({"metadata": {"name": "s", "namespace": "d"}, "type": "kubernetes.io/tls"}),
                "type",
                "kubernetes.io/tls",
            ),
            (
                "",
                "v1",
                "services",
                json!({"metadata": {"name": "s"}, "spec": {"clusterIP": "10.96.0.1", "type": "ClusterIP"}}),
                "spec.clusterIP",
                "10.96.0.1",
            ),
            (
                "",
                "v1",
                "replicationcontrollers",
                json!({"metadata": {"name": "r"}, "status": {"replicas": 3}}),
                "status.replicas",
                "3",
            ),
            (
                "",
                "v1",
                "replicationcontrollers",
                json!({"metadata": {"name": "r"}}),
                "status.replicas",
                "0",
            ),
            (
                "apps",
                "v1",
                "replicasets",
                json!({"metadata": {"name": "r"}, "status": {"replicas": 2}}),
                "status.replicas",
                "2",
            ),
            (
                "batch",
                "v1",
                "jobs",
                json!({"metadata": {"name": "j"}, "status": {"succeeded": 1}}),
                "status.successful",
                "1",
            ),
            (
                "",
                "v1",
                "configmaps",
                json!({"metadata": {"name": "c", "namespace": "kube-system"}}),
                "metadata.namespace",
                "kube-system",
            ),
        ];
        for (group, version, plural, obj, field, want) in cases {
            let r = resource(group, version, plural).unwrap();
            assert_eq!(object_fields(r, &obj).get(field), want, "{plural} {field}");
        }
        // Cluster-scoped objects have no namespace field.
        let nodes = resource("", "v1", "nodes").unwrap();
        assert!(
            !object_fields(nodes, &json!({"metadata": {"name": "n"}}))
                .contains("metadata.namespace")
        );
    }

    #[test]
    fn computes_event_fields_in_either_version() {
        let core = resource("", "v1", "events").unwrap();
        let events = resource("events.k8s.io", "v1", "events").unwrap();
        let core_event = json!({
            "apiVersion": "v1", "kind": "Event",
            "metadata": {"name": "e", "namespace": "d"},
            "involvedObject": {"kind": "Pod", "name": "web", "namespace": "d", "uid": "u1",
                               "apiVersion": "v1", "resourceVersion": "5", "fieldPath": "spec.containers{c}"},
            "reason": "Started", "type": "Normal", "reportingComponent": "kubelet"
        });
        let new_event = json!({
            "apiVersion": "events.k8s.io/v1", "kind": "Event",
            "metadata": {"name": "e", "namespace": "d"},
            "regarding": {"kind": "Pod", "name": "web", "namespace": "d", "uid": "u1",
                          "apiVersion": "v1", "resourceVersion": "5", "fieldPath": "spec.containers{c}"},
            "reason": "Started", "type": "Normal", "reportingController": "kubelet",
            "deprecatedSource": {"component": "kubelet-src"}
        });
        for (r, obj, source) in [
            (core, &core_event, "kubelet"),
            (events, &new_event, "kubelet-src"),
            (core, &new_event, "kubelet-src"),
            (events, &core_event, "kubelet"),
        ] {
            let f = object_fields(r, obj);
            assert_eq!(f.get("involvedObject.kind"), "Pod");
            assert_eq!(f.get("involvedObject.name"), "web");
            assert_eq!(f.get("involvedObject.uid"), "u1");
            assert_eq!(f.get("involvedObject.fieldPath"), "spec.containers{c}");
            assert_eq!(f.get("reason"), "Started");
            assert_eq!(f.get("type"), "Normal");
            assert_eq!(f.get("reportingComponent"), "kubelet");
            assert_eq!(f.get("source"), source);
        }
        let sel = FieldSelector::parse("regarding.kind=Pod,regarding.name=web")
            .unwrap()
            .convert_for(events)
            .unwrap();
        assert!(sel.matches(&object_fields(events, &new_event)));
        assert!(!sel.matches(&object_fields(
            events,
            &json!({"regarding": {"kind": "Node"}})
        )));
    }
}
