//! Decoding of Kubernetes protobuf request bodies (`application/vnd.kubernetes.protobuf`) to
//! the JSON the rest of the API server speaks.
//!
//! kubectl 1.32+ sends typed creates (`kubectl create configmap`, evictions from `kubectl
//! drain`, ...) as protobuf. A body is the magic `k8s\0` then a `runtime.Unknown` envelope whose
//! `raw` holds the object's own message. Messages are decoded with a table generated from the
//! upstream `generated.proto` field numbers joined with the OpenAPI JSON names (see
//! `generate.rs`), so the JSON is what the same Go object would serialise to.

mod decode;
#[cfg(test)]
mod generate;
#[rustfmt::skip]
mod schema;
#[cfg(test)]
mod tests;

use serde_json::{Map, Value};

/// The prefix of every Kubernetes protobuf body.
pub const MAGIC: &[u8; 4] = b"k8s\0";

/// The media type of Kubernetes protobuf.
pub const CONTENT_TYPE: &str = "application/vnd.kubernetes.protobuf";

#[derive(Debug, thiserror::Error)]
pub enum ProtobufError {
    #[error("protobuf body does not start with the k8s magic prefix")]
    MissingMagic,
    #[error("protobuf envelope has no typeMeta kind")]
    MissingKind,
    #[error("unsupported protobuf content encoding {0:?}")]
    ContentEncoding(String),
    #[error("no protobuf schema for kind {kind:?} in apiVersion {api_version:?}")]
    UnknownKind { api_version: String, kind: String },
    #[error("no protobuf schema for message {0}")]
    UnknownMessage(String),
    #[error("truncated protobuf message {message} at {field}")]
    Truncated { message: String, field: String },
    #[error("unexpected protobuf wire type {wire} for {message}.{field}")]
    WireType {
        message: String,
        field: String,
        wire: u8,
    },
    #[error("invalid utf-8 in protobuf string {message}.{field}")]
    InvalidUtf8 { message: String, field: String },
    #[error("timestamp out of range in {message}.{field}")]
    InvalidTime {
        message: &'static str,
        field: &'static str,
    },
    #[error("invalid embedded json in {message}.{field}: {source}")]
    EmbeddedJson {
        message: &'static str,
        field: &'static str,
        source: serde_json::Error,
    },
    #[error("protobuf message {0} nests too deeply")]
    TooDeep(&'static str),
}

impl ProtobufError {
    fn truncated(message: &str, field: &str) -> Self {
        ProtobufError::Truncated {
            message: message.to_string(),
            field: field.to_string(),
        }
    }
}

/// Whether a `Content-Type` header value is Kubernetes protobuf (parameters ignored).
pub fn is_protobuf(content_type: &str) -> bool {
    content_type
        .split(';')
        .next()
        .is_some_and(|media| media.trim().eq_ignore_ascii_case(CONTENT_TYPE))
}

/// Decodes a protobuf request body to `(apiVersion, kind, object)`; the object is the JSON
/// form with `apiVersion` and `kind` set.
pub fn decode_envelope(body: &[u8]) -> Result<(String, String, Value), ProtobufError> {
    let rest = body
        .strip_prefix(MAGIC.as_slice())
        .ok_or(ProtobufError::MissingMagic)?;
    let unknown = Unknown::parse(rest)?;
    if !unknown.content_encoding.is_empty() {
        return Err(ProtobufError::ContentEncoding(unknown.content_encoding));
    }
    if unknown.kind.is_empty() {
        return Err(ProtobufError::MissingKind);
    }
    let message = message_for(&unknown.api_version, &unknown.kind).ok_or_else(|| {
        ProtobufError::UnknownKind {
            api_version: unknown.api_version.clone(),
            kind: unknown.kind.clone(),
        }
    })?;
    let fields = decode::decode_message(message, unknown.raw)?;
    let mut object = Map::new();
    object.insert(
        "apiVersion".into(),
        Value::String(unknown.api_version.clone()),
    );
    object.insert("kind".into(), Value::String(unknown.kind.clone()));
    object.extend(fields);
    Ok((unknown.api_version, unknown.kind, Value::Object(object)))
}

/// The message of a kind: a served type of that group/version, else a `meta/v1` kind
/// (`DeleteOptions`) that every group/version carries.
fn message_for(api_version: &str, kind: &str) -> Option<&'static str> {
    if let Ok(i) = schema::KINDS.binary_search_by(|(v, k, _)| (*v, *k).cmp(&(api_version, kind))) {
        return Some(schema::KINDS[i].2);
    }
    let meta = format!("io.k8s.apimachinery.pkg.apis.meta.v1.{kind}");
    decode::message(&meta).map(|m| m.name)
}

/// `runtime.Unknown`: typeMeta = 1 (apiVersion = 1, kind = 2), raw = 2, contentEncoding = 3,
/// contentType = 4.
struct Unknown<'a> {
    api_version: String,
    kind: String,
    raw: &'a [u8],
    content_encoding: String,
}

impl<'a> Unknown<'a> {
    fn parse(buf: &'a [u8]) -> Result<Self, ProtobufError> {
        let mut out = Unknown {
            api_version: String::new(),
            kind: String::new(),
            raw: &[],
            content_encoding: String::new(),
        };
        for (tag, bytes) in len_fields(buf, "runtime.Unknown")? {
            match tag {
                1 => {
                    for (tag, bytes) in len_fields(bytes, "runtime.TypeMeta")? {
                        let text = utf8(bytes, "runtime.TypeMeta")?;
                        match tag {
                            1 => out.api_version = text,
                            2 => out.kind = text,
                            _ => {}
                        }
                    }
                }
                2 => out.raw = bytes,
                3 => out.content_encoding = utf8(bytes, "runtime.Unknown")?,
                _ => {}
            }
        }
        Ok(out)
    }
}

/// The length-delimited fields of a message with only such fields.
fn len_fields<'a>(buf: &'a [u8], message: &str) -> Result<Vec<(u32, &'a [u8])>, ProtobufError> {
    let mut reader = decode::Reader::new(buf);
    let mut out = Vec::new();
    while !reader.done() {
        let (tag, wire) = reader
            .key()
            .ok_or_else(|| ProtobufError::truncated(message, "field key"))?;
        if wire != 2 {
            return Err(ProtobufError::WireType {
                message: message.to_string(),
                field: format!("field {tag}"),
                wire,
            });
        }
        let bytes = reader
            .len_delimited()
            .ok_or_else(|| ProtobufError::truncated(message, &format!("field {tag}")))?;
        out.push((tag, bytes));
    }
    Ok(out)
}

fn utf8(bytes: &[u8], message: &str) -> Result<String, ProtobufError> {
    String::from_utf8(bytes.to_vec()).map_err(|_| ProtobufError::InvalidUtf8 {
        message: message.to_string(),
        field: "string".to_string(),
    })
}
