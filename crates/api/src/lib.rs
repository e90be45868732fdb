//! Kubernetes API machinery with no IO.
//!
//! Architecture Invariant: nothing here touches the network, the disk or the store; every
//! function is a pure transformation of JSON objects, so it is unit-tested in isolation.
//!
//! API Boundary: used by the API server (and later by clients inside rkube) for resource
//! metadata, selectors, patches, defaulting, validation and `kubectl get` tables.

pub mod conversion;
pub mod decode;
pub mod defaults;
pub mod field_error;
pub mod fields;
pub mod node;
pub mod openapi;
pub mod patch;
pub mod protobuf;
pub mod quota;
pub mod resources;
pub mod selector;
pub mod table;
pub mod validation;

pub use field_error::{FieldError, FieldErrorKind};
pub use resources::ResourceInfo;
