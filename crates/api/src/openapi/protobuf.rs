//! The Swagger 2.0 document in the protobuf encoding of gnostic's `openapi.v2.Document`
//! (`application/com.github.proto-openapi.spec.v2@v1.0+protobuf`).
//!
//! kubectl 1.27 and 1.28 fetch `/openapi/v2` in this encoding only (no JSON fallback) for
//! `kubectl apply` and `kubectl explain`, and fail when it is missing. The encoder is written
//! by hand, as the message subset Kubernetes documents use is small: a protobuf crate plus
//! generated code for the whole gnostic schema would be far more than this.
//!
//! Field numbers are those of gnostic's `openapiv2/OpenAPIv2.proto`. Values that the schema
//! types as `Any` (vendor extensions, `default`, `example`, `enum`) carry YAML text; JSON is
//! YAML, so they are written as JSON.

use serde_json::{Map, Value};

/// Encodes a Swagger 2.0 document (as [`super::v2`] builds it) as an `openapi.v2.Document`.
pub fn encode_document(doc: &Value) -> Vec<u8> {
    let mut m = Msg::default();
    let Some(doc) = doc.as_object() else {
        return m.0;
    };
    m.string(1, str_of(doc, "swagger"));
    if let Some(Value::Object(info)) = doc.get("info") {
        let mut i = Msg::default();
        i.string(1, str_of(info, "title"));
        i.string(2, str_of(info, "version"));
        i.string(3, str_of(info, "description"));
        m.message(2, i);
    }
    m.string(3, str_of(doc, "host"));
    m.string(4, str_of(doc, "basePath"));
    m.strings(5, doc.get("schemes"));
    m.strings(6, doc.get("consumes"));
    m.strings(7, doc.get("produces"));
    if let Some(Value::Object(paths)) = doc.get("paths") {
        let mut p = Msg::default();
        for (name, item) in paths {
            if name.starts_with("x-") {
                p.message(1, named_any(name, item));
            } else {
                p.message(2, named(name, path_item(item)));
            }
        }
        m.message(8, p);
    }
    if let Some(Value::Object(definitions)) = doc.get("definitions") {
        m.message(9, named_schemas(definitions));
    }
    if let Some(Value::Array(security)) = doc.get("security") {
        for requirement in security {
            m.message(12, security_requirement(requirement));
        }
    }
    if let Some(Value::Object(definitions)) = doc.get("securityDefinitions") {
        let mut d = Msg::default();
        for (name, scheme) in definitions {
            d.message(1, named(name, security_scheme(scheme)));
        }
        m.message(13, d);
    }
    m.extensions(16, doc);
    m.0
}

/// A protobuf message being written.
#[derive(Default)]
struct Msg(Vec<u8>);

impl Msg {
    fn varint(&mut self, mut v: u64) {
        while v >= 0x80 {
            self.0.push((v as u8) | 0x80);
            v >>= 7;
        }
        self.0.push(v as u8);
    }

    fn key(&mut self, field: u32, wire_type: u8) {
        self.varint((u64::from(field) << 3) | u64::from(wire_type));
    }

    fn bytes(&mut self, field: u32, bytes: &[u8]) {
        self.key(field, 2);
        self.varint(bytes.len() as u64);
        self.0.extend_from_slice(bytes);
    }

    /// proto3 leaves default values (empty strings, false, zero) out.
    fn string(&mut self, field: u32, s: &str) {
        if !s.is_empty() {
            self.bytes(field, s.as_bytes());
        }
    }

    fn strings(&mut self, field: u32, values: Option<&Value>) {
        if let Some(Value::Array(values)) = values {
            for v in values.iter().filter_map(Value::as_str) {
                // Repeated strings keep empty entries: their count is meaningful.
                self.bytes(field, v.as_bytes());
            }
        }
    }

    fn bool(&mut self, field: u32, v: Option<&Value>) {
        if v.and_then(Value::as_bool) == Some(true) {
            self.key(field, 0);
            self.varint(1);
        }
    }

    fn int64(&mut self, field: u32, v: Option<&Value>) {
        if let Some(n) = v.and_then(Value::as_i64).filter(|n| *n != 0) {
            self.key(field, 0);
            // Two's complement, as protobuf encodes negative int64.
            self.varint(n as u64);
        }
    }

    fn double(&mut self, field: u32, v: Option<&Value>) {
        if let Some(n) = v.and_then(Value::as_f64).filter(|n| *n != 0.0) {
            self.key(field, 1);
            self.0.extend_from_slice(&n.to_le_bytes());
        }
    }

    /// Sub-messages are written even when empty: their presence is meaningful (an empty
    /// `properties` makes an object a kind rather than a map for kubectl).
    fn message(&mut self, field: u32, m: Msg) {
        self.bytes(field, &m.0);
    }

    /// `Any` fields: the value as YAML text (`Any.yaml` = 2).
    fn any(&mut self, field: u32, v: Option<&Value>) {
        if let Some(v) = v {
            self.message(field, any(v));
        }
    }

    /// The `x-` keys of `object`, as repeated `NamedAny`.
    fn extensions(&mut self, field: u32, object: &Map<String, Value>) {
        for (name, value) in object.iter().filter(|(k, _)| k.starts_with("x-")) {
            self.message(field, named_any(name, value));
        }
    }
}

fn str_of<'a>(object: &'a Map<String, Value>, key: &str) -> &'a str {
    object.get(key).and_then(Value::as_str).unwrap_or("")
}

fn any(v: &Value) -> Msg {
    let mut m = Msg::default();
    // An empty YAML text would read back as "no value": a JSON string is never empty.
    m.string(2, &v.to_string());
    m
}

fn named(name: &str, value: Msg) -> Msg {
    let mut m = Msg::default();
    m.string(1, name);
    m.message(2, value);
    m
}

fn named_any(name: &str, value: &Value) -> Msg {
    named(name, any(value))
}

fn named_schemas(schemas: &Map<String, Value>) -> Msg {
    let mut m = Msg::default();
    for (name, s) in schemas {
        m.message(1, named(name, schema(s)));
    }
    m
}

fn schema(v: &Value) -> Msg {
    let mut m = Msg::default();
    let Some(s) = v.as_object() else {
        return m;
    };
    m.string(1, str_of(s, "$ref"));
    m.string(2, str_of(s, "format"));
    m.string(3, str_of(s, "title"));
    m.string(4, str_of(s, "description"));
    m.any(5, s.get("default"));
    m.double(6, s.get("multipleOf"));
    m.double(7, s.get("maximum"));
    m.bool(8, s.get("exclusiveMaximum"));
    m.double(9, s.get("minimum"));
    m.bool(10, s.get("exclusiveMinimum"));
    m.int64(11, s.get("maxLength"));
    m.int64(12, s.get("minLength"));
    m.string(13, str_of(s, "pattern"));
    m.int64(14, s.get("maxItems"));
    m.int64(15, s.get("minItems"));
    m.bool(16, s.get("uniqueItems"));
    m.int64(17, s.get("maxProperties"));
    m.int64(18, s.get("minProperties"));
    m.strings(19, s.get("required"));
    if let Some(Value::Array(values)) = s.get("enum") {
        for v in values {
            m.message(20, any(v));
        }
    }
    match s.get("additionalProperties") {
        Some(Value::Bool(b)) => {
            let mut a = Msg::default();
            a.key(2, 0);
            a.varint(u64::from(*b));
            m.message(21, a);
        }
        Some(sub @ Value::Object(_)) => {
            let mut a = Msg::default();
            a.message(1, schema(sub));
            m.message(21, a);
        }
        _ => {}
    }
    match s.get("type") {
        Some(Value::String(t)) => {
            let mut t_msg = Msg::default();
            t_msg.string(1, t);
            m.message(22, t_msg);
        }
        Some(types @ Value::Array(_)) => {
            let mut t_msg = Msg::default();
            t_msg.strings(1, Some(types));
            m.message(22, t_msg);
        }
        _ => {}
    }
    match s.get("items") {
        Some(Value::Array(items)) => {
            let mut i = Msg::default();
            for item in items {
                i.message(1, schema(item));
            }
            m.message(23, i);
        }
        Some(item @ Value::Object(_)) => {
            let mut i = Msg::default();
            i.message(1, schema(item));
            m.message(23, i);
        }
        _ => {}
    }
    if let Some(Value::Array(all_of)) = s.get("allOf") {
        for sub in all_of {
            m.message(24, schema(sub));
        }
    }
    if let Some(Value::Object(properties)) = s.get("properties") {
        m.message(25, named_schemas(properties));
    }
    m.string(26, str_of(s, "discriminator"));
    m.bool(27, s.get("readOnly"));
    m.any(30, s.get("example"));
    m.extensions(31, s);
    m
}

fn path_item(v: &Value) -> Msg {
    let mut m = Msg::default();
    let Some(item) = v.as_object() else {
        return m;
    };
    m.string(1, str_of(item, "$ref"));
    for (field, method) in [
        (2, "get"),
        (3, "put"),
        (4, "post"),
        (5, "delete"),
        (6, "options"),
        (7, "head"),
        (8, "patch"),
    ] {
        if let Some(op) = item.get(method) {
            m.message(field, operation(op));
        }
    }
    parameters(&mut m, 9, item.get("parameters"));
    m.extensions(10, item);
    m
}

fn operation(v: &Value) -> Msg {
    let mut m = Msg::default();
    let Some(op) = v.as_object() else {
        return m;
    };
    m.strings(1, op.get("tags"));
    m.string(2, str_of(op, "summary"));
    m.string(3, str_of(op, "description"));
    m.string(5, str_of(op, "operationId"));
    m.strings(6, op.get("produces"));
    m.strings(7, op.get("consumes"));
    parameters(&mut m, 8, op.get("parameters"));
    if let Some(Value::Object(responses)) = op.get("responses") {
        let mut r = Msg::default();
        for (code, response) in responses {
            if code.starts_with("x-") {
                r.message(2, named_any(code, response));
            } else {
                r.message(1, named(code, response_value(response)));
            }
        }
        m.message(9, r);
    }
    m.strings(10, op.get("schemes"));
    m.bool(11, op.get("deprecated"));
    if let Some(Value::Array(security)) = op.get("security") {
        for requirement in security {
            m.message(12, security_requirement(requirement));
        }
    }
    m.extensions(13, op);
    m
}

/// `ResponseValue`: a `Response` (1) or a `JsonReference` (2).
fn response_value(v: &Value) -> Msg {
    let mut m = Msg::default();
    let Some(response) = v.as_object() else {
        return m;
    };
    if let Some(reference) = response.get("$ref").and_then(Value::as_str) {
        m.message(
            2,
            json_reference(reference, str_of(response, "description")),
        );
        return m;
    }
    let mut r = Msg::default();
    r.string(1, str_of(response, "description"));
    if let Some(s) = response.get("schema") {
        // SchemaItem: a Schema (1).
        let mut item = Msg::default();
        item.message(1, schema(s));
        r.message(2, item);
    }
    r.extensions(5, response);
    m.message(1, r);
    m
}

fn json_reference(reference: &str, description: &str) -> Msg {
    let mut m = Msg::default();
    m.string(1, reference);
    m.string(2, description);
    m
}

/// Repeated `ParametersItem`: a `Parameter` (1) or a `JsonReference` (2).
fn parameters(m: &mut Msg, field: u32, params: Option<&Value>) {
    let Some(Value::Array(params)) = params else {
        return;
    };
    for p in params.iter().filter_map(Value::as_object) {
        let mut item = Msg::default();
        if let Some(reference) = p.get("$ref").and_then(Value::as_str) {
            item.message(2, json_reference(reference, str_of(p, "description")));
        } else {
            item.message(1, parameter(p));
        }
        m.message(field, item);
    }
}

/// `Parameter`: a `BodyParameter` (1) or a `NonBodyParameter` (2) holding the sub-schema of
/// its location.
fn parameter(p: &Map<String, Value>) -> Msg {
    let mut m = Msg::default();
    let location = str_of(p, "in");
    if location == "body" {
        let mut b = Msg::default();
        b.string(1, str_of(p, "description"));
        b.string(2, str_of(p, "name"));
        b.string(3, location);
        b.bool(4, p.get("required"));
        if let Some(s) = p.get("schema") {
            b.message(5, schema(s));
        }
        b.extensions(6, p);
        m.message(1, b);
        return m;
    }
    // (oneof field, unique_items field, vendor_extension field): query and formData
    // sub-schemas have `allow_empty_value` at 5, which shifts their later fields by one.
    let (oneof, shift) = match location {
        "header" => (1, 0),
        "formData" => (2, 1),
        "query" => (3, 1),
        _ => (4, 0), // path
    };
    let mut s = Msg::default();
    s.bool(1, p.get("required"));
    s.string(2, location);
    s.string(3, str_of(p, "description"));
    s.string(4, str_of(p, "name"));
    if shift == 1 {
        s.bool(5, p.get("allowEmptyValue"));
    }
    s.string(5 + shift, str_of(p, "type"));
    s.string(6 + shift, str_of(p, "format"));
    s.string(8 + shift, str_of(p, "collectionFormat"));
    s.any(9 + shift, p.get("default"));
    s.bool(19 + shift, p.get("uniqueItems"));
    if let Some(Value::Array(values)) = p.get("enum") {
        for v in values {
            s.message(20 + shift, any(v));
        }
    }
    s.extensions(22 + shift, p);
    let mut non_body = Msg::default();
    non_body.message(oneof, s);
    m.message(2, non_body);
    m
}

fn security_requirement(v: &Value) -> Msg {
    let mut m = Msg::default();
    if let Some(requirement) = v.as_object() {
        for (name, scopes) in requirement {
            let mut array = Msg::default();
            array.strings(1, Some(scopes));
            m.message(1, named(name, array));
        }
    }
    m
}

/// `SecurityDefinitionsItem`; only API keys (2) are used here.
fn security_scheme(v: &Value) -> Msg {
    let mut m = Msg::default();
    let Some(s) = v.as_object() else {
        return m;
    };
    if str_of(s, "type") == "apiKey" {
        let mut k = Msg::default();
        k.string(1, "apiKey");
        k.string(2, str_of(s, "name"));
        k.string(3, str_of(s, "in"));
        k.string(4, str_of(s, "description"));
        k.extensions(5, s);
        m.message(2, k);
    }
    m
}
