//! A revisioned key-value store modelled on etcd's v3 data model.
//!
//! Every write gets a global, strictly increasing revision. Each key remembers the revision
//! that created it (`create_revision`) and the one that last changed it (`mod_revision`).
//! Reads can be served at an older revision until it is compacted; watches replay history
//! from a revision and then follow live writes in revision order.
//!
//! Architecture Invariant: this crate knows nothing about Kubernetes objects; keys and values
//! are opaque. Only the API server uses it.
//!
//! API Boundary: the [`Store`] trait. Every backend passes the shared conformance suite in
//! [`conformance`].

use std::fmt;

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;

pub mod conformance;
pub mod etcd;
pub mod sqlite;

/// A store revision. Revision 0 means "no revision" (a key that does not exist).
pub type Revision = i64;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The requested revision was removed by compaction.
    #[error("required revision {requested} has been compacted (compacted up to {compacted})")]
    Compacted {
        requested: Revision,
        compacted: Revision,
    },
    /// The requested revision is newer than anything the store has seen.
    #[error("required revision {requested} is a future revision (current {current})")]
    FutureRevision {
        requested: Revision,
        current: Revision,
    },
    /// The disk holding the store is full; nothing was written.
    #[error("no space left for the store at {path}: the write was not applied")]
    NoSpace { path: String },
    /// The backend cannot be reached or failed; the message says on what.
    #[error("store backend: {0}")]
    Backend(String),
    #[error("store is closed")]
    Closed,
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// One version of one key.
#[derive(Clone, PartialEq, Eq)]
pub struct KeyValue {
    pub key: String,
    pub value: Bytes,
    pub create_revision: Revision,
    pub mod_revision: Revision,
}

impl fmt::Debug for KeyValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyValue")
            .field("key", &self.key)
            .field("value_len", &self.value.len())
            .field("create_revision", &self.create_revision)
            .field("mod_revision", &self.mod_revision)
            .finish()
    }
}

/// What to read.
#[derive(Debug, Clone, Default)]
pub struct RangeRequest {
    /// A single key, or with `prefix` every key that starts with it.
    pub key: String,
    pub prefix: bool,
    /// Only keys strictly greater than this one (for pagination).
    pub start_after: Option<String>,
    /// At most this many keys; 0 means no limit.
    pub limit: usize,
    /// Read as of this revision; 0 means the current one.
    pub revision: Revision,
    /// Only count matching keys, return no values.
    pub count_only: bool,
}

impl RangeRequest {
    pub fn key(key: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            ..Default::default()
        }
    }
    pub fn prefix(prefix: impl Into<String>) -> Self {
        Self {
            key: prefix.into(),
            prefix: true,
            ..Default::default()
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct RangeResponse {
    /// Keys in ascending byte order.
    pub kvs: Vec<KeyValue>,
    /// True when `limit` cut the result short.
    pub more: bool,
    /// Number of keys matching the request, ignoring `limit` and `start_after`.
    pub count: i64,
    /// The revision the read was served at.
    pub revision: Revision,
}

/// A condition of a transaction: the key's `mod_revision` equals the given one
/// (0 means the key must not exist).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Compare {
    pub key: String,
    pub mod_revision: Revision,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    Put { key: String, value: Bytes },
    Delete { key: String },
}

/// The outcome of a transaction.
#[derive(Debug, Clone)]
pub struct TxnResponse {
    /// Whether every compare held (and so the ops were applied).
    pub succeeded: bool,
    /// On success the revision of the write (or the current one if no op changed anything);
    /// on failure the current revision.
    pub revision: Revision,
    /// On failure: the current value of each compared key, in compare order (None if absent).
    /// On success: the value each op replaced, in op order (None if absent).
    pub prev: Vec<Option<KeyValue>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventKind {
    Put,
    Delete,
}

/// One change. For a delete, `kv.mod_revision` is the revision of the delete and `kv.value`
/// holds the last value the key had (what watchers need to tell subscribers what went away).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub kind: EventKind,
    pub kv: KeyValue,
    /// The previous version of the key, if any.
    pub prev: Option<KeyValue>,
}

/// Events in revision order, in batches (one batch never splits a revision).
/// An `Err(StoreError::Compacted)` ends the stream when the watcher fell behind compaction.
pub type WatchStream = BoxStream<'static, Result<Vec<Event>>>;

#[async_trait]
pub trait Store: Send + Sync + 'static {
    async fn range(&self, req: RangeRequest) -> Result<RangeResponse>;

    /// If every compare holds, apply `success` atomically under one new revision.
    async fn txn(&self, compares: Vec<Compare>, success: Vec<Op>) -> Result<TxnResponse>;

    /// Events for keys under `prefix` with revisions strictly greater than `after`,
    /// then live ones. Fails with `Compacted` if history after `after` is gone.
    async fn watch(&self, prefix: &str, after: Revision) -> Result<WatchStream>;

    /// Drop history older than `revision` (the latest version of each key is kept).
    async fn compact(&self, revision: Revision) -> Result<()>;

    /// The current revision and the compacted one.
    async fn revisions(&self) -> Result<(Revision, Revision)>;

    /// The backend's name, for logs and metrics ("sqlite", "etcd").
    fn backend(&self) -> &'static str;
}

/// Helpers every caller wants, built on the trait.
#[async_trait]
pub trait StoreExt: Store {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>> {
        Ok(self.range(RangeRequest::key(key)).await?.kvs.pop())
    }

    async fn create(&self, key: &str, value: Bytes) -> Result<TxnResponse> {
        self.txn(
            vec![Compare {
                key: key.into(),
                mod_revision: 0,
            }],
            vec![Op::Put {
                key: key.into(),
                value,
            }],
        )
        .await
    }
}

impl<S: Store + ?Sized> StoreExt for S {}

/// The end of the key range that holds every key starting with `prefix`.
pub fn prefix_end(prefix: &str) -> Vec<u8> {
    let mut end = prefix.as_bytes().to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    // Prefix of all 0xff bytes (or empty): everything from it on.
    vec![0]
}
