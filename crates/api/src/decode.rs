//! Decoding a request body into an object of a resource, with `fieldValidation` semantics.
//!
//! Unknown fields are found by the typed round trip: every object member present in the
//! body but absent after decoding into the resource's Rust type and encoding again is a field
//! the type does not know. Maps (labels, data, ...) and free-form values (`RawExtension`)
//! keep all their members through the round trip, so they are never flagged. Duplicate
//! members are found while parsing the text. Messages follow upstream's
//! (`strict decoding error: unknown field "spec.foo"`), wrapped the way the API server wraps
//! decoding errors (`Pod in version "v1" cannot be handled as a Pod: ...`).

use std::cell::RefCell;
use std::collections::HashMap;
use std::fmt;

use serde::Serialize;
use serde::de::{DeserializeOwned, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde_json::Value;

use crate::field_error::FieldError;
use crate::resources::{self, ResourceInfo};

/// What a body is decoded into: a served resource's type or a subresource body type.
struct Target {
    kind: &'static str,
    api_version: String,
    roundtrip: fn(Value) -> Result<Value, serde_json::Error>,
}

impl Target {
    fn of(resource: &ResourceInfo) -> Self {
        Self {
            kind: resource.kind,
            api_version: resource.api_version(),
            roundtrip: resource.typed.roundtrip,
        }
    }

    fn of_type<T>() -> Self
    where
        T: k8s_openapi::Resource + DeserializeOwned + Serialize,
    {
        Self {
            kind: T::KIND,
            api_version: T::API_VERSION.to_string(),
            roundtrip: roundtrip_typed::<T>,
        }
    }
}

fn roundtrip_typed<T: DeserializeOwned + Serialize>(
    value: Value,
) -> Result<Value, serde_json::Error> {
    serde_json::to_value(serde_json::from_value::<T>(value)?)
}

/// The `fieldValidation` query parameter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FieldValidation {
    /// Drop unknown and duplicate fields silently.
    Ignore,
    /// Drop them and return a warning for each (the server default).
    #[default]
    Warn,
    /// Reject the request.
    Strict,
}

impl FieldValidation {
    /// Parse the query parameter; absent or empty means `Warn`. Values are case-sensitive,
    /// as upstream.
    pub fn parse(value: Option<&str>) -> Result<Self, DecodeError> {
        match value.unwrap_or("") {
            "" | "Warn" => Ok(Self::Warn),
            "Ignore" => Ok(Self::Ignore),
            "Strict" => Ok(Self::Strict),
            other => Err(DecodeError::InvalidFieldValidation(
                FieldError::not_supported(
                    "fieldValidation",
                    &Value::String(other.to_string()),
                    &["", "Ignore", "Strict", "Warn"],
                ),
            )),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ignore => "Ignore",
            Self::Warn => "Warn",
            Self::Strict => "Strict",
        }
    }
}

impl fmt::Display for FieldValidation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The body cannot become an object of the resource (syntax, type, kind or version
    /// mismatch, strict field validation): a 400 BadRequest with this message.
    #[error("{0}")]
    BadRequest(String),
    /// An unsupported `fieldValidation` value: upstream answers 422 Invalid for the
    /// request's options kind (`CreateOptions`, `UpdateOptions`, `PatchOptions`).
    #[error("{0}")]
    InvalidFieldValidation(FieldError),
}

impl DecodeError {
    /// The HTTP status code the API server answers with.
    pub fn status_code(&self) -> u16 {
        match self {
            Self::BadRequest(_) => 400,
            Self::InvalidFieldValidation(_) => 422,
        }
    }

    /// The `reason` of the Status object.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::BadRequest(_) => "BadRequest",
            Self::InvalidFieldValidation(_) => "Invalid",
        }
    }
}

/// A decoded object: the round-tripped (normalised) JSON, with `apiVersion` and `kind` set
/// and fields the type does not know dropped, plus warnings to return to the client.
#[derive(Debug, Clone, PartialEq)]
pub struct Decoded {
    pub object: Value,
    pub warnings: Vec<String>,
}

/// Decode a JSON request body for `resource`.
pub fn decode(
    resource: &ResourceInfo,
    body: &[u8],
    validation: FieldValidation,
) -> Result<Decoded, DecodeError> {
    decode_body(&Target::of(resource), body, validation)
}

/// Decode a JSON body of a type that is not a served resource, such as the `Binding`,
/// `Eviction` or `Scale` a subresource accepts.
pub fn decode_as<T>(body: &[u8], validation: FieldValidation) -> Result<Decoded, DecodeError>
where
    T: k8s_openapi::Resource + DeserializeOwned + Serialize,
{
    decode_body(&Target::of_type::<T>(), body, validation)
}

fn decode_body(
    target: &Target,
    body: &[u8],
    validation: FieldValidation,
) -> Result<Decoded, DecodeError> {
    let (value, duplicates) = match parse_with_duplicates(body) {
        Ok(parsed) => parsed,
        Err(e) => {
            return Err(unrecognized(
                target,
                &format!("couldn't get version/kind; json parse error: {e}"),
                body,
            ));
        }
    };
    decode_parsed(target, value, duplicates, validation, Some(body))
}

/// Decode an already parsed object (e.g. the result of applying a patch). Duplicate fields
/// cannot be seen any more; unknown fields are handled as in [`decode`].
pub fn decode_value(
    resource: &ResourceInfo,
    value: Value,
    validation: FieldValidation,
) -> Result<Decoded, DecodeError> {
    decode_parsed(
        &Target::of(resource),
        value,
        Duplicates::default(),
        validation,
        None,
    )
}

fn decode_parsed(
    target: &Target,
    value: Value,
    duplicates: Duplicates,
    validation: FieldValidation,
    body: Option<&[u8]>,
) -> Result<Decoded, DecodeError> {
    // Error messages quote the start of the body; a parsed value is printed for that.
    let text = || {
        body.map_or_else(
            || serde_json::to_vec(&value).unwrap_or_default(),
            <[u8]>::to_vec,
        )
    };
    let Value::Object(map) = &value else {
        return Err(unrecognized(
            target,
            &format!(
                "couldn't get version/kind; json parse error: json: cannot unmarshal {} into Go value of type struct {{ APIVersion string; Kind string }}",
                go_type(&value)
            ),
            &text(),
        ));
    };
    let (api_version, kind) =
        type_meta(target, map).map_err(|detail| unrecognized(target, &detail, &text()))?;
    let (_, version) = resources::split_api_version(&api_version);
    let cannot_handle = |detail: &str| {
        DecodeError::BadRequest(format!(
            "{kind} in version \"{version}\" cannot be handled as a {}: {detail}",
            target.kind
        ))
    };
    if kind != target.kind {
        let detail = if resources::by_kind(&api_version, &kind).is_some() {
            format!(
                "the kind in the data ({kind}) does not match the expected kind ({})",
                target.kind
            )
        } else {
            format!("no kind \"{kind}\" is registered for version \"{api_version}\"")
        };
        return Err(cannot_handle(&detail));
    }
    if api_version != target.api_version {
        return Err(DecodeError::BadRequest(format!(
            "the API version in the data ({api_version}) does not match the expected API version ({})",
            target.api_version
        )));
    }

    let roundtrip = target.roundtrip;
    let decoded = match roundtrip(value.clone()) {
        Ok(decoded) => decoded,
        Err(_) => {
            // Go leaves a field untouched when it reads null; serde rejects null for
            // non-optional fields, so retry without nulls before calling it an error.
            let stripped = strip_nulls(value.clone());
            match roundtrip(stripped.clone()) {
                Ok(decoded) => decoded,
                Err(_) => return Err(cannot_handle(&type_error(target, &stripped))),
            }
        }
    };

    let mut problems: Vec<(usize, String)> = duplicates
        .found
        .into_iter()
        .map(|(seq, path)| (seq, format!("duplicate field \"{path}\"")))
        .collect();
    let mut unknown = Vec::new();
    unknown_fields(&value, &decoded, &mut String::new(), &mut unknown);
    problems.extend(unknown.into_iter().map(|path| {
        let seq = duplicates
            .first_seen
            .get(&path)
            .copied()
            .unwrap_or(usize::MAX);
        (seq, format!("unknown field \"{path}\""))
    }));
    // Report in document order, as upstream's decoder meets them.
    problems.sort_by_key(|(seq, _)| *seq);
    let problems: Vec<String> = problems.into_iter().map(|(_, p)| p).collect();

    let warnings = match validation {
        FieldValidation::Strict if !problems.is_empty() => {
            return Err(cannot_handle(&format!(
                "strict decoding error: {}",
                problems.join(", ")
            )));
        }
        FieldValidation::Warn => problems,
        _ => Vec::new(),
    };
    Ok(Decoded {
        object: decoded,
        warnings,
    })
}

/// `apiVersion` and `kind` of the body, defaulted from the resource when absent (as the API
/// server defaults them from the URL).
fn type_meta(
    target: &Target,
    map: &serde_json::Map<String, Value>,
) -> Result<(String, String), String> {
    let field = |name: &str, default: String| match map.get(name) {
        None | Some(Value::Null) => Ok(default),
        Some(Value::String(s)) if s.is_empty() => Ok(default),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(other) => Err(format!(
            "couldn't get version/kind; json parse error: json: cannot unmarshal {} into Go struct field .{name} of type string",
            go_type(other)
        )),
    };
    Ok((
        field("apiVersion", target.api_version.clone())?,
        field("kind", target.kind.to_string())?,
    ))
}

/// Upstream's message for a body it cannot even get a kind from.
fn unrecognized(target: &Target, detail: &str, body: &[u8]) -> DecodeError {
    DecodeError::BadRequest(format!(
        "the object provided is unrecognized (must be of type {}): {detail} ({})",
        target.kind,
        summarize(body)
    ))
}

/// A short view of the body for error messages: text when it looks like JSON, else hex.
fn summarize(body: &[u8]) -> String {
    const MAX: usize = 30;
    let (shown, more) = if body.len() > MAX {
        (&body[..MAX], " ...")
    } else {
        (body, "")
    };
    match body.first() {
        None => "<empty>".to_string(),
        Some(b'{') => format!("{}{more}", String::from_utf8_lossy(shown)),
        Some(_) => {
            let hex: String = shown.iter().map(|b| format!("{b:02x}")).collect();
            format!("{hex}{more}")
        }
    }
}

/// JSON type names as Go's decoder words them.
fn go_type(value: &Value) -> String {
    match value {
        Value::Null => "null".into(),
        Value::Bool(_) => "bool".into(),
        Value::Number(n) => format!("number {n}"),
        Value::String(_) => "string".into(),
        Value::Array(_) => "array".into(),
        Value::Object(_) => "object".into(),
    }
}

fn strip_nulls(value: Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.into_iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k, strip_nulls(v)))
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.into_iter().map(strip_nulls).collect()),
        other => other,
    }
}

// ---- unknown fields ----

fn child_path(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

/// Paths of members of `original` the round trip dropped. Nulls are not fields (Go ignores
/// them); below a dropped member nothing more is reported.
fn unknown_fields(original: &Value, decoded: &Value, path: &mut String, out: &mut Vec<String>) {
    match (original, decoded) {
        (Value::Object(orig), Value::Object(dec)) => {
            for (key, value) in orig {
                if value.is_null() {
                    continue;
                }
                let len = path.len();
                if !path.is_empty() {
                    path.push('.');
                }
                path.push_str(key);
                match dec.get(key) {
                    None => out.push(path.clone()),
                    Some(d) => unknown_fields(value, d, path, out),
                }
                path.truncate(len);
            }
        }
        (Value::Array(orig), Value::Array(dec)) => {
            for (i, (o, d)) in orig.iter().zip(dec).enumerate() {
                let len = path.len();
                path.push_str(&format!("[{i}]"));
                unknown_fields(o, d, path, out);
                path.truncate(len);
            }
        }
        _ => {}
    }
}

// ---- type errors ----

#[derive(Clone)]
enum Segment<'a> {
    Key(&'a str),
    Index(usize),
}

fn render_path(path: &[Segment<'_>]) -> String {
    let mut out = String::new();
    for seg in path {
        match seg {
            Segment::Key(k) => out = child_path(&out, k),
            Segment::Index(i) => out.push_str(&format!("[{i}]")),
        }
    }
    out
}

/// A document holding only `leaf` at `path`: since absent fields default, it decodes iff
/// `leaf` itself does.
fn skeleton(path: &[Segment<'_>], leaf: &Value) -> Value {
    path.iter()
        .rev()
        .fold(leaf.clone(), |inner, seg| match seg {
            Segment::Key(k) => Value::Object(serde_json::Map::from_iter([(k.to_string(), inner)])),
            Segment::Index(_) => Value::Array(vec![inner]),
        })
}

/// Find the member that fails to decode (the serde error has no path) by decoding it alone,
/// descending while a single child still fails, and describe it as Go's decoder would.
fn type_error(target: &Target, doc: &Value) -> String {
    let roundtrip = target.roundtrip;
    let mut path: Vec<Segment<'_>> = Vec::new();
    let mut node = doc;
    loop {
        let children: Vec<(Segment<'_>, &Value)> = match node {
            Value::Object(map) => map
                .iter()
                .map(|(k, v)| (Segment::Key(k.as_str()), v))
                .collect(),
            Value::Array(items) => items
                .iter()
                .enumerate()
                .map(|(i, v)| (Segment::Index(i), v))
                .collect(),
            _ => Vec::new(),
        };
        let failing = children.into_iter().find(|(seg, child)| {
            path.push(seg.clone());
            let fails = roundtrip(skeleton(&path, child)).is_err();
            path.pop();
            fails
        });
        match failing {
            Some((seg, child)) => {
                path.push(seg);
                node = child;
            }
            None => break,
        }
    }
    let message = match roundtrip(skeleton(&path, node)) {
        Err(e) => e.to_string(),
        Ok(_) => match roundtrip(doc.clone()) {
            Err(e) => e.to_string(),
            Ok(_) => "invalid object".to_string(),
        },
    };
    let field = render_path(&path);
    // serde: "invalid type: string \"x\", expected i32" or "invalid value: ..., expected ...".
    let is_type = message.starts_with("invalid type: ") || message.starts_with("invalid value: ");
    match message.split_once(", expected ") {
        Some((_, expected)) if is_type && !field.is_empty() => format!(
            "json: cannot unmarshal {} into Go struct field {}.{field} of type {}",
            go_type(node),
            target.kind,
            go_type_name(expected)
        ),
        _ if field.is_empty() => format!("json: {message}"),
        _ => format!("json: error decoding {}.{field}: {message}", target.kind),
    }
}

/// serde's "expected ..." phrase in Go's type vocabulary where they differ.
fn go_type_name(expected: &str) -> String {
    let expected = expected.split(" at line ").next().unwrap_or(expected);
    match expected {
        "i32" => "int32".into(),
        "i64" => "int64".into(),
        "u32" => "uint32".into(),
        "u64" => "uint64".into(),
        "f64" => "float64".into(),
        "a string" => "string".into(),
        "a boolean" => "bool".into(),
        "a sequence" => "array".into(),
        "a map" => "object".into(),
        other => other
            .strip_prefix("struct ")
            .or_else(|| other.strip_prefix("a "))
            .or_else(|| other.strip_prefix("an "))
            .unwrap_or(other)
            .to_string(),
    }
}

// ---- parsing with duplicate detection ----

/// Duplicate members met while parsing, and where each member path was first seen (to
/// order all problems as they appear in the text).
#[derive(Debug, Default)]
struct Duplicates {
    seq: usize,
    first_seen: HashMap<String, usize>,
    found: Vec<(usize, String)>,
}

fn parse_with_duplicates(body: &[u8]) -> Result<(Value, Duplicates), serde_json::Error> {
    let state = RefCell::new(Duplicates::default());
    let mut de = serde_json::Deserializer::from_slice(body);
    let value = Scan {
        path: String::new(),
        state: &state,
    }
    .deserialize(&mut de)?;
    de.end()?;
    Ok((value, state.into_inner()))
}

/// Builds a `Value` like serde_json does (later duplicates win, as in Go), recording
/// duplicate members on the way.
struct Scan<'a> {
    path: String,
    state: &'a RefCell<Duplicates>,
}

impl<'de> DeserializeSeed<'de> for Scan<'_> {
    type Value = Value;

    fn deserialize<D: serde::Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Scan<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_string()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        loop {
            let scan = Scan {
                path: format!("{}[{}]", self.path, items.len()),
                state: self.state,
            };
            match seq.next_element_seed(scan)? {
                Some(v) => items.push(v),
                None => return Ok(Value::Array(items)),
            }
        }
    }

    fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<Value, A::Error> {
        let mut map = serde_json::Map::new();
        while let Some(key) = access.next_key::<String>()? {
            let path = child_path(&self.path, &key);
            {
                let mut state = self.state.borrow_mut();
                state.seq += 1;
                let seq = state.seq;
                state.first_seen.entry(path.clone()).or_insert(seq);
                if map.contains_key(&key) {
                    state.found.push((seq, path.clone()));
                }
            }
            let value = access.next_value_seed(Scan {
                path,
                state: self.state,
            })?;
            map.insert(key, value);
        }
        Ok(Value::Object(map))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::lookup;
    use serde_json::json;

    fn pods() -> &'static ResourceInfo {
        lookup("", "v1", "pods").unwrap()
    }

    fn deployments() -> &'static ResourceInfo {
        lookup("apps", "v1", "deployments").unwrap()
    }

    fn body(v: &Value) -> Vec<u8> {
        serde_json::to_vec(v).unwrap()
    }

    #[test]
    fn parses_field_validation() {
        let cases = [
            (None, Ok(FieldValidation::Warn)),
            (Some(""), Ok(FieldValidation::Warn)),
            (Some("Warn"), Ok(FieldValidation::Warn)),
            (Some("Ignore"), Ok(FieldValidation::Ignore)),
            (Some("Strict"), Ok(FieldValidation::Strict)),
            (
                Some("strict"),
                Err(
                    "fieldValidation: Unsupported value: \"strict\": supported values: \"\", \"Ignore\", \"Strict\", \"Warn\"",
                ),
            ),
        ];
        for (input, want) in cases {
            let got = FieldValidation::parse(input).map_err(|e| {
                assert_eq!(e.status_code(), 422);
                assert_eq!(e.reason(), "Invalid");
                e.to_string()
            });
            assert_eq!(got, want.map_err(str::to_string), "{input:?}");
        }
    }

    #[test]
    fn decodes_a_valid_pod_and_fills_type_meta() {
        let pod = json!({
            "metadata": {"name": "web", "labels": {"any-key": "v", "example.com/x": "y"},
                         "annotations": {"free": "form"}, "creationTimestamp": null},
            "spec": {"containers": [{"name": "c", "image": "busybox", "resources": {"limits": {"cpu": "1", "memory": 64}}}],
                     "nodeSelector": {"disk": "ssd"}}
        });
        for validation in [
            FieldValidation::Strict,
            FieldValidation::Warn,
            FieldValidation::Ignore,
        ] {
            let d = decode(pods(), &body(&pod), validation).unwrap();
            assert!(d.warnings.is_empty(), "{:?}", d.warnings);
            assert_eq!(d.object["apiVersion"], "v1");
            assert_eq!(d.object["kind"], "Pod");
            assert_eq!(d.object["metadata"]["labels"]["example.com/x"], "y");
            assert_eq!(
                d.object["spec"]["containers"][0]["resources"]["limits"]["cpu"],
                "1"
            );
            // Go accepts a bare number for a quantity; it comes back as its string form.
            assert_eq!(
                d.object["spec"]["containers"][0]["resources"]["limits"]["memory"],
                "64"
            );
            assert_eq!(d.object["spec"]["nodeSelector"]["disk"], "ssd");
            assert!(d.object["metadata"].get("creationTimestamp").is_none());
        }
    }

    #[test]
    fn reports_unknown_and_duplicate_fields_by_mode() {
        // (body text, problems in document order)
        let cases: &[(&str, &[&str])] = &[
            (
                r#"{"kind":"Pod","apiVersion":"v1","metadata":{"name":"a"}}"#,
                &[],
            ),
            (
                r#"{"metadata":{"name":"a"},"bogus":1}"#,
                &[r#"unknown field "bogus""#],
            ),
            (
                r#"{"metadata":{"name":"a","nmae":"b"},"spec":{"containers":[{"name":"c"},{"name":"d","imagee":"x"}],"foo":{"bar":1}}}"#,
                &[
                    r#"unknown field "metadata.nmae""#,
                    r#"unknown field "spec.containers[1].imagee""#,
                    r#"unknown field "spec.foo""#,
                ],
            ),
            (
                r#"{"metadata":{"name":"a","name":"b"},"spec":{"Containers":[]}}"#,
                &[
                    r#"duplicate field "metadata.name""#,
                    r#"unknown field "spec.Containers""#,
                ],
            ),
            (
                r#"{"spec":{"extra":1},"metadata":{"name":"a","labels":{"x":"1","x":"2"}}}"#,
                &[
                    r#"unknown field "spec.extra""#,
                    r#"duplicate field "metadata.labels.x""#,
                ],
            ),
            // Null members are not fields.
            (r#"{"metadata":{"name":"a"},"nothing":null}"#, &[]),
        ];
        for (text, want) in cases {
            let warned = decode(pods(), text.as_bytes(), FieldValidation::Warn).unwrap();
            assert_eq!(warned.warnings, *want, "{text}");
            let ignored = decode(pods(), text.as_bytes(), FieldValidation::Ignore).unwrap();
            assert!(ignored.warnings.is_empty());
            assert_eq!(ignored.object, warned.object);
            let strict = decode(pods(), text.as_bytes(), FieldValidation::Strict);
            if want.is_empty() {
                assert!(strict.is_ok(), "{text}: {strict:?}");
            } else {
                let err = strict.unwrap_err();
                assert_eq!(err.status_code(), 400);
                assert_eq!(
                    err.to_string(),
                    format!(
                        "Pod in version \"v1\" cannot be handled as a Pod: strict decoding error: {}",
                        want.join(", ")
                    ),
                    "{text}"
                );
            }
        }
        // The decoded object drops the unknown fields and keeps the last duplicate.
        let d = decode(
            pods(),
            br#"{"metadata":{"name":"a","name":"b","zz":1},"spec":{"foo":1}}"#,
            FieldValidation::Ignore,
        )
        .unwrap();
        assert_eq!(d.object["metadata"]["name"], "b");
        assert!(d.object["metadata"].get("zz").is_none());
        assert!(d.object["spec"].get("foo").is_none());
    }

    #[test]
    fn free_form_values_are_not_unknown() {
        let deploy = json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "d", "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{}"}},
            "spec": {"selector": {"matchLabels": {"app": "d"}},
                     "template": {"metadata": {"labels": {"app": "d"}},
                                  "spec": {"containers": [{"name": "c", "image": "i", "bogus": true}]}}}
        });
        let err = decode(deployments(), &body(&deploy), FieldValidation::Strict).unwrap_err();
        assert_eq!(
            err.to_string(),
            "Deployment in version \"v1\" cannot be handled as a Deployment: strict decoding error: unknown field \"spec.template.spec.containers[0].bogus\""
        );
        // RawExtension holds anything.
        let rs = lookup("apps", "v1", "controllerrevisions").unwrap();
        let rev = json!({"metadata": {"name": "r"}, "revision": 1,
                         "data": {"spec": {"anything": [1, {"deep": null}]}, "x": "y"}});
        let d = decode(rs, &body(&rev), FieldValidation::Strict).unwrap();
        assert_eq!(
            d.object["data"]["spec"]["anything"][1],
            json!({"deep": null})
        );
    }

    #[test]
    fn rejects_kind_and_version_mismatches() {
        let cases = [
            (
                json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "a"}}),
                "Service in version \"v1\" cannot be handled as a Pod: the kind in the data (Service) does not match the expected kind (Pod)",
            ),
            (
                json!({"apiVersion": "v1", "kind": "Bogus"}),
                "Bogus in version \"v1\" cannot be handled as a Pod: no kind \"Bogus\" is registered for version \"v1\"",
            ),
            (
                json!({"apiVersion": "apps/v1", "kind": "Pod"}),
                "the API version in the data (apps/v1) does not match the expected API version (v1)",
            ),
            (
                json!({"apiVersion": 1, "kind": "Pod"}),
                "the object provided is unrecognized (must be of type Pod): couldn't get version/kind; json parse error: json: cannot unmarshal number 1 into Go struct field .apiVersion of type string ({\"apiVersion\":1,\"kind\":\"Pod\"})",
            ),
        ];
        for (input, want) in cases {
            let err = decode(pods(), &body(&input), FieldValidation::Warn).unwrap_err();
            assert_eq!(err.to_string(), want, "{input}");
            assert_eq!(err.status_code(), 400);
        }
    }

    #[test]
    fn reports_type_errors_with_the_field_path() {
        let cases = [
            (
                json!({"spec": {"containers": "nope"}}),
                "Pod in version \"v1\" cannot be handled as a Pod: json: cannot unmarshal string into Go struct field Pod.spec.containers of type array",
            ),
            (
                json!({"metadata": {"name": "a"}, "spec": {"containers": [{"name": "c"}, {"name": "d", "ports": [{"containerPort": "80"}]}]}}),
                "Pod in version \"v1\" cannot be handled as a Pod: json: cannot unmarshal string into Go struct field Pod.spec.containers[1].ports[0].containerPort of type int32",
            ),
            (
                json!({"spec": {"activeDeadlineSeconds": 1.5}}),
                "Pod in version \"v1\" cannot be handled as a Pod: json: cannot unmarshal number 1.5 into Go struct field Pod.spec.activeDeadlineSeconds of type int64",
            ),
            (
                json!({"metadata": {"labels": {"a": 1}}}),
                "Pod in version \"v1\" cannot be handled as a Pod: json: cannot unmarshal number 1 into Go struct field Pod.metadata.labels.a of type string",
            ),
        ];
        for (input, want) in cases {
            let err = decode(pods(), &body(&input), FieldValidation::Ignore).unwrap_err();
            assert_eq!(err.to_string(), want, "{input}");
        }
    }

    #[test]
    fn nulls_in_required_fields_are_ignored_like_go() {
        let pod = json!({"metadata": {"name": "a"}, "spec": {"containers": [{"name": null, "image": "i"}]}});
        let d = decode(pods(), &body(&pod), FieldValidation::Strict).unwrap();
        assert_eq!(d.object["spec"]["containers"][0]["image"], "i");
    }

    #[test]
    fn rejects_bodies_that_are_not_objects() {
        let cases: [(&[u8], &str); 4] = [
            (
                b"",
                "couldn't get version/kind; json parse error: EOF while parsing a value at line 1 column 0 (<empty>)",
            ),
            (
                b"{\"a\":",
                "json parse error: EOF while parsing a value at line 1 column 5 ({\"a\":)",
            ),
            (
                b"[1]",
                "json: cannot unmarshal array into Go value of type struct { APIVersion string; Kind string } (5b315d)",
            ),
            (
                b"{} x",
                "json parse error: trailing characters at line 1 column 4 ({} x)",
            ),
        ];
        for (input, fragment) in cases {
            let err = decode(pods(), input, FieldValidation::Warn)
                .unwrap_err()
                .to_string();
            assert!(
                err.starts_with("the object provided is unrecognized (must be of type Pod): "),
                "{err}"
            );
            assert!(err.ends_with(fragment), "{err:?} lacks {fragment:?}");
        }
    }

    #[test]
    fn decodes_subresource_bodies() {
        use k8s_openapi::api::core::v1::Binding;
        use k8s_openapi::api::policy::v1::Eviction;
        let binding = br#"{"kind":"Binding","apiVersion":"v1","metadata":{"name":"p"},"target":{"kind":"Node","name":"n1"}}"#;
        let d = decode_as::<Binding>(binding, FieldValidation::Strict).unwrap();
        assert_eq!(d.object["target"]["name"], "n1");
        let err = decode_as::<Binding>(br#"{"target":{"nmae":"n1"}}"#, FieldValidation::Strict)
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "Binding in version \"v1\" cannot be handled as a Binding: strict decoding error: unknown field \"target.nmae\""
        );
        let eviction = br#"{"apiVersion":"policy/v1","kind":"Eviction","metadata":{"name":"p"},"deleteOptions":{"gracePeriodSeconds":0}}"#;
        let d = decode_as::<Eviction>(eviction, FieldValidation::Strict).unwrap();
        assert_eq!(d.object["deleteOptions"]["gracePeriodSeconds"], 0);
        let err = decode_as::<Eviction>(
            br#"{"apiVersion":"policy/v1beta1","kind":"Eviction"}"#,
            FieldValidation::Warn,
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "the API version in the data (policy/v1beta1) does not match the expected API version (policy/v1)"
        );
    }

    #[test]
    fn decode_value_checks_unknown_fields() {
        let err = decode_value(pods(), json!(["x"]), FieldValidation::Warn).unwrap_err();
        assert!(err.to_string().ends_with(r#"cannot unmarshal array into Go value of type struct { APIVersion string; Kind string } (5b2278225d)"#), "{err}");
        let v = json!({"metadata": {"name": "a"}, "spec": {"bogus": 1}});
        let d = decode_value(pods(), v.clone(), FieldValidation::Warn).unwrap();
        assert_eq!(d.warnings, vec!["unknown field \"spec.bogus\"".to_string()]);
        assert!(decode_value(pods(), v, FieldValidation::Strict).is_err());
    }
}
