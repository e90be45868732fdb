//! Patches as the API server applies them: JSON patch (RFC 6902), JSON merge patch
//! (RFC 7386) and strategic merge patch, the three `kubectl apply`, `edit`, `label`,
//! `annotate`, `scale`, `set image`, `patch` and `rollout` send.
//!
//! Architecture Invariant: pure functions from (object, patch bytes) to object. Decoding the
//! result into the typed object, defaulting and validation happen afterwards, in the caller.

mod apply;
pub mod merge_keys;
mod schema;
mod strategic;

use serde_json::Value;

use crate::ResourceInfo;

pub use apply::{ApplyOptions, server_side_apply};
pub use merge_keys::{PatchMeta, patch_meta};

/// Upstream's limit on the operations of one JSON patch.
pub const MAX_JSON_PATCH_OPERATIONS: usize = 10_000;

/// The patch formats, by the request's `Content-Type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchType {
    /// `application/json-patch+json`
    Json,
    /// `application/merge-patch+json`
    Merge,
    /// `application/strategic-merge-patch+json`
    StrategicMerge,
    /// `application/apply-patch+yaml` (server-side apply, simplified: see [`server_side_apply`])
    Apply,
}

impl PatchType {
    /// The patch type of a `Content-Type` header value; parameters (`; charset=utf-8`) are
    /// ignored. None for anything else (upstream answers 415 Unsupported Media Type).
    pub fn from_content_type(content_type: &str) -> Option<Self> {
        let media = content_type.split(';').next().unwrap_or("").trim();
        match media.to_ascii_lowercase().as_str() {
            "application/json-patch+json" => Some(Self::Json),
            "application/merge-patch+json" => Some(Self::Merge),
            "application/strategic-merge-patch+json" => Some(Self::StrategicMerge),
            "application/apply-patch+yaml" => Some(Self::Apply),
            _ => None,
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Self::Json => "application/json-patch+json",
            Self::Merge => "application/merge-patch+json",
            Self::StrategicMerge => "application/strategic-merge-patch+json",
            Self::Apply => "application/apply-patch+yaml",
        }
    }

    /// All patch types, as listed in discovery and OpenAPI `consumes`.
    pub fn all() -> [Self; 4] {
        [Self::Json, Self::Merge, Self::StrategicMerge, Self::Apply]
    }
}

/// Why a patch could not be applied. [`PatchError::status_code`] is the HTTP status upstream
/// answers with; the message goes into the `Status` as is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PatchError {
    /// The body is not what the content type promises (not JSON, not a list of operations,
    /// not an object): 400.
    #[error("error decoding patch: {0}")]
    Decode(String),
    /// A strategic merge patch that is malformed: unknown directive, list item without its
    /// merge key, `$setElementOrder` not matching the patch list: 400.
    #[error("{0}")]
    BadRequest(String),
    /// A JSON patch operation that does not apply: a `test` that failed, a path that does not
    /// exist: 422, as upstream.
    #[error("{0}")]
    JsonPatch(String),
    /// A well-formed strategic merge patch that contradicts itself (content not matching its
    /// `$retainKeys`, lists of lists): 422.
    #[error("{0}")]
    Invalid(String),
    /// More operations than [`MAX_JSON_PATCH_OPERATIONS`]: 413.
    #[error("the allowed maximum operations in a JSON patch is {max}, got {got}")]
    TooManyOperations { max: usize, got: usize },
    /// A patch type this server does not apply (yet): 415.
    #[error("{0} is not supported for this resource")]
    Unsupported(&'static str),
}

impl PatchError {
    /// The HTTP status code of the `Status` answered for this error.
    pub fn status_code(&self) -> u16 {
        match self {
            Self::Decode(_) | Self::BadRequest(_) => 400,
            Self::JsonPatch(_) | Self::Invalid(_) => 422,
            Self::TooManyOperations { .. } => 413,
            Self::Unsupported(_) => 415,
        }
    }

    /// The `reason` of that `Status`.
    pub fn reason(&self) -> &'static str {
        match self.status_code() {
            400 => "BadRequest",
            413 => "RequestEntityTooLarge",
            415 => "UnsupportedMediaType",
            _ => "Invalid",
        }
    }
}

/// The field manager [`apply_patch`] records for server-side apply. Callers that have the
/// request's `fieldManager` (required by upstream for apply) call [`server_side_apply`].
pub const DEFAULT_APPLY_MANAGER: &str = "unknown";

/// Applies a patch to an object of `resource` and returns the patched object, not yet
/// decoded, defaulted or validated. `original` is left untouched.
pub fn apply_patch(
    resource: &ResourceInfo,
    original: &Value,
    patch_type: PatchType,
    patch: &[u8],
) -> Result<Value, PatchError> {
    match patch_type {
        PatchType::Json => json_patch(original, patch),
        PatchType::Merge => merge_patch(original, patch),
        PatchType::StrategicMerge => strategic_merge_patch(resource, original, patch),
        PatchType::Apply => server_side_apply(
            resource,
            original,
            patch,
            &ApplyOptions {
                field_manager: DEFAULT_APPLY_MANAGER,
                force: false,
            },
        ),
    }
}

/// RFC 6902. All operations apply or none.
pub fn json_patch(original: &Value, patch: &[u8]) -> Result<Value, PatchError> {
    let operations: json_patch::Patch =
        serde_json::from_slice(patch).map_err(|e| PatchError::Decode(e.to_string()))?;
    if operations.0.len() > MAX_JSON_PATCH_OPERATIONS {
        return Err(PatchError::TooManyOperations {
            max: MAX_JSON_PATCH_OPERATIONS,
            got: operations.0.len(),
        });
    }
    let mut doc = original.clone();
    json_patch::patch(&mut doc, &operations)
        .map_err(|e| describe_json_patch_error(&operations, &e))?;
    Ok(doc)
}

/// Words close to upstream's (evanphx/json-patch) for a failed operation.
fn describe_json_patch_error(
    operations: &json_patch::Patch,
    error: &json_patch::PatchError,
) -> PatchError {
    use json_patch::{PatchErrorKind, PatchOperation};
    let operation = operations.0.get(error.operation);
    let (name, from) = match operation {
        Some(PatchOperation::Add(_)) => ("add", None),
        Some(PatchOperation::Remove(_)) => ("remove", None),
        Some(PatchOperation::Replace(_)) => ("replace", None),
        Some(PatchOperation::Move(op)) => ("move", Some(op.from.to_string())),
        Some(PatchOperation::Copy(op)) => ("copy", Some(op.from.to_string())),
        Some(PatchOperation::Test(_)) => ("test", None),
        None => ("unknown", None),
    };
    let path = &error.path;
    PatchError::JsonPatch(match error.kind {
        PatchErrorKind::TestFailed => format!("testing value {path} failed: test failed"),
        PatchErrorKind::InvalidFromPointer => format!(
            "{name} operation does not apply: doc is missing from path: {}: missing value",
            from.unwrap_or_default()
        ),
        PatchErrorKind::CannotMoveInsideItself => format!(
            "move operation does not apply: cannot move {} into its own child {path}",
            from.unwrap_or_default()
        ),
        _ => format!("{name} operation does not apply: doc is missing path: {path}: missing value"),
    })
}

/// RFC 7386: objects merge, `null` deletes, everything else (lists included) replaces.
pub fn merge_patch(original: &Value, patch: &[u8]) -> Result<Value, PatchError> {
    let patch = decode_object(patch)?;
    let mut doc = original.clone();
    json_patch::merge(&mut doc, &patch);
    Ok(doc)
}

/// Strategic merge patch, driven by the resource type's schema and [`patch_meta`].
pub fn strategic_merge_patch(
    resource: &ResourceInfo,
    original: &Value,
    patch: &[u8],
) -> Result<Value, PatchError> {
    let Value::Object(patch) = decode_object(patch)? else {
        unreachable!("decode_object returns objects")
    };
    let original = match original {
        Value::Object(map) => map.clone(),
        _ => serde_json::Map::new(),
    };
    let schemas = schema::Schemas::of(resource);
    strategic::merge_map(original, patch, schemas.root()).map(Value::Object)
}

/// Merge patches of both kinds must be JSON objects.
fn decode_object(patch: &[u8]) -> Result<Value, PatchError> {
    match serde_json::from_slice(patch) {
        Ok(value @ Value::Object(_)) => Ok(value),
        Ok(other) => Err(PatchError::Decode(format!(
            "a merge patch must be a JSON object, got {}",
            kind_of(&other)
        ))),
        Err(e) => Err(PatchError::Decode(e.to_string())),
    }
}

fn kind_of(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests;
