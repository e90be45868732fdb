//! The [`Store`] backed by a real etcd v3 cluster, for servers that share state (HA).
//!
//! The trait is etcd's own data model, so most calls map one to one onto etcd RPCs. Two
//! things etcd does not hand out directly are derived here:
//!
//! - `RangeResponse::count` must count the whole matching range even when `start_after`
//!   narrows the page; the page and the count are read in one read-only etcd transaction,
//!   so both see the same revision.
//! - The compacted revision: etcd has no RPC that returns it. A read at revision `r` fails
//!   with "compacted" exactly when `r` is below it, so [`EtcdStore`] remembers the highest
//!   revision it compacted to (or learnt from a cancelled watch), confirms it with one read,
//!   and only if another client compacted further searches for it with a bisection of reads.
//! - Watch start: the trait refuses a watch whose `after` is compacted. etcd's own check is
//!   one revision laxer and arrives later on the stream, so `watch` first reads at `after`.

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use etcd_client::{
    Client, CompareOp, ConnectOptions, DeleteOptions, EventType, GetOptions, GetResponse,
    PutOptions, Txn, TxnOp, TxnOpResponse, WatchOptions, WatchResponse,
};
use futures::StreamExt;

use crate::{
    Compare, Event, EventKind, KeyValue, Op, RangeRequest, RangeResponse, Result, Revision, Store,
    StoreError, TxnResponse, WatchStream, prefix_end,
};

/// How long one request may wait, including for a connection to a member, before it fails.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// How long [`EtcdStore::connect`] waits for a first answer.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

// etcd's messages for its ErrCompacted and ErrFutureRev (gRPC OutOfRange); the gRPC code alone
// does not tell them apart.
const COMPACTED_MESSAGE: &str = "required revision has been compacted";
const FUTURE_REVISION_MESSAGE: &str = "required revision is a future revision";

/// Turns `etcd://h1:2379,h2:2379` (the `--datastore` flag) into client URLs
/// `["http://h1:2379", "http://h2:2379"]`. `None` if it is not an etcd URL or names no host.
pub fn parse_datastore(url: &str) -> Option<Vec<String>> {
    let hosts = url.strip_prefix("etcd://")?;
    let endpoints: Vec<String> = hosts
        .split(',')
        .map(str::trim)
        .filter(|host| !host.is_empty())
        .map(|host| format!("http://{}", host.trim_end_matches('/')))
        .collect();
    (!endpoints.is_empty()).then_some(endpoints)
}

/// A [`Store`] on an etcd v3 cluster (etcd 3.4 or newer), speaking gRPC without TLS.
#[derive(Clone)]
pub struct EtcdStore {
    client: Client,
    /// The endpoints joined by commas, for error messages.
    endpoints: Arc<str>,
    /// A lower bound of etcd's compacted revision; see the module docs.
    compacted: Arc<AtomicI64>,
}

impl fmt::Debug for EtcdStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EtcdStore")
            .field("endpoints", &self.endpoints)
            .finish_non_exhaustive()
    }
}

impl EtcdStore {
    /// Connects to the cluster behind `endpoints` (`http://host:port`) and checks that it
    /// answers a read.
    pub async fn connect(endpoints: &[String]) -> Result<Self> {
        let joined: Arc<str> = endpoints.join(",").into();
        if endpoints.is_empty() {
            return Err(StoreError::Backend("etcd: no endpoints given".into()));
        }
        let options = ConnectOptions::new()
            .with_connect_timeout(Duration::from_secs(5))
            .with_keep_alive(Duration::from_secs(10), Duration::from_secs(5));
        let client = Client::connect(endpoints, Some(options))
            .await
            .map_err(|e| StoreError::Backend(format!("connect to etcd at {joined}: {e}")))?;
        let store = Self {
            client,
            endpoints: joined,
            compacted: Arc::new(AtomicI64::new(0)),
        };
        match tokio::time::timeout(CONNECT_TIMEOUT, store.current_revision()).await {
            Ok(result) => result?,
            Err(_) => {
                return Err(StoreError::Backend(format!(
                    "etcd at {} did not answer within {} s",
                    store.endpoints,
                    CONNECT_TIMEOUT.as_secs()
                )));
            }
        };
        Ok(store)
    }

    /// The endpoints this store talks to, joined by commas.
    pub fn endpoints(&self) -> &str {
        &self.endpoints
    }

    /// Runs one etcd call with a deadline and maps its error.
    async fn call<T>(
        &self,
        what: &str,
        fut: impl Future<Output = Result<T, etcd_client::Error>>,
    ) -> Result<T> {
        match tokio::time::timeout(REQUEST_TIMEOUT, fut).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(err)) => Err(self.error(what, &err)),
            Err(_) => Err(StoreError::Backend(format!(
                "etcd at {}: {what}: no answer within {} s",
                self.endpoints,
                REQUEST_TIMEOUT.as_secs()
            ))),
        }
    }

    fn error(&self, what: &str, err: &etcd_client::Error) -> StoreError {
        StoreError::Backend(format!("etcd at {}: {what}: {err}", self.endpoints))
    }

    /// The current revision, from the header of the cheapest read there is.
    async fn current_revision(&self) -> Result<Revision> {
        let resp = self.probe(0).await?;
        Ok(header_revision(&resp))
    }

    /// A count-only read of one key at `revision` (0: current).
    async fn probe(&self, revision: Revision) -> Result<GetResponse> {
        let mut kv = self.client.kv_client();
        let options = GetOptions::new().with_count_only().with_revision(revision);
        self.call("read revision", kv.get(vec![0u8], Some(options)))
            .await
    }

    /// Whether history at `revision` can still be read, i.e. it is not compacted.
    async fn readable(&self, revision: Revision) -> Result<bool> {
        match self.probe(revision).await {
            Ok(_) => Ok(true),
            Err(StoreError::Backend(msg)) if msg.contains(COMPACTED_MESSAGE) => Ok(false),
            Err(err) => Err(err),
        }
    }

    /// etcd's compacted revision (0 if nothing beyond revision 1 was compacted).
    async fn compacted_revision(&self, current: Revision) -> Result<Revision> {
        let known = self.compacted.load(Ordering::Acquire);
        // Reads at `r` succeed iff `r >= compacted`, and `known <= compacted` always.
        if known >= current || self.readable(known.max(1)).await? {
            return Ok(known);
        }
        // Somebody compacted past `known`: find the lowest readable revision.
        let (mut unreadable, mut readable) = (known.max(1), current);
        while readable - unreadable > 1 {
            let mid = unreadable + (readable - unreadable) / 2;
            if self.readable(mid).await? {
                readable = mid;
            } else {
                unreadable = mid;
            }
        }
        self.compacted.fetch_max(readable, Ordering::AcqRel);
        Ok(readable)
    }

    /// Maps etcd's revision errors to the store's typed ones.
    async fn revision_error(&self, err: StoreError, requested: Revision) -> StoreError {
        let StoreError::Backend(msg) = &err else {
            return err;
        };
        if msg.contains(COMPACTED_MESSAGE) {
            let compacted = match self.current_revision().await {
                Ok(current) => self.compacted_revision(current).await,
                Err(e) => Err(e),
            };
            return match compacted {
                Ok(compacted) => StoreError::Compacted {
                    requested,
                    compacted,
                },
                Err(e) => e,
            };
        }
        if msg.contains(FUTURE_REVISION_MESSAGE) {
            return match self.current_revision().await {
                Ok(current) => StoreError::FutureRevision { requested, current },
                Err(e) => e,
            };
        }
        err
    }

    async fn range_inner(&self, req: &RangeRequest) -> Result<RangeResponse> {
        // The whole matching range: one key, or [prefix, prefix_end). etcd has no empty key,
        // so the empty prefix starts at "\0".
        let full_start: Vec<u8> = if req.prefix && req.key.is_empty() {
            vec![0]
        } else {
            req.key.as_bytes().to_vec()
        };
        let full_end: Option<Vec<u8>> = req.prefix.then(|| prefix_end(&req.key));
        // The page: the part of the range after `start_after`.
        let page_start: Option<Vec<u8>> = match &req.start_after {
            None => Some(full_start.clone()),
            Some(after) => {
                let mut after_next = after.as_bytes().to_vec();
                after_next.push(0);
                match &full_end {
                    // "\0" as range end means "to the last key".
                    Some(end) if end.as_slice() != [0] && after_next >= *end => None,
                    Some(_) => Some(after_next.max(full_start.clone())),
                    // A single key is on the page only if it sorts after `start_after`.
                    None => (req.key.as_str() > after.as_str()).then(|| full_start.clone()),
                }
            }
        };

        let options = |count_only: bool| {
            let mut options = GetOptions::new().with_revision(req.revision);
            if let Some(end) = &full_end {
                options = options.with_range(end.clone());
            }
            if count_only {
                options = options.with_count_only();
            } else if req.limit > 0 {
                options = options.with_limit(i64::try_from(req.limit).unwrap_or(i64::MAX));
            }
            options
        };

        let mut kv = self.client.kv_client();
        let (page, count, header) = if page_start.as_ref() == Some(&full_start) {
            let mut resp = self
                .call(
                    "range",
                    kv.get(full_start.clone(), Some(options(req.count_only))),
                )
                .await?;
            let count = resp.count();
            let header = header_revision(&resp);
            (Some(resp_take(&mut resp)), count, header)
        } else if let (Some(start), false) = (&page_start, req.count_only) {
            // Page and whole-range count in one read-only transaction: one revision for both.
            let txn = Txn::new().and_then(vec![
                TxnOp::get(start.clone(), Some(options(false))),
                TxnOp::get(full_start.clone(), Some(options(true))),
            ]);
            let resp = self.call("range", kv.txn(txn)).await?;
            let header = resp.header().map_or(0, |h| h.revision());
            let mut responses = resp.op_responses().into_iter();
            let (Some(TxnOpResponse::Get(mut page)), Some(TxnOpResponse::Get(count))) =
                (responses.next(), responses.next())
            else {
                return Err(StoreError::Backend(format!(
                    "etcd at {}: range: transaction answered without two reads",
                    self.endpoints
                )));
            };
            (Some(resp_take(&mut page)), count.count(), header)
        } else {
            // Nothing can be on the page (or only the count is wanted): count the range.
            let resp = self
                .call("range", kv.get(full_start.clone(), Some(options(true))))
                .await?;
            (None, resp.count(), header_revision(&resp))
        };

        let (kvs, more) = match page {
            Some((kvs, more)) if !req.count_only => (
                kvs.into_iter()
                    .map(|kv| self.key_value(kv))
                    .collect::<Result<Vec<_>>>()?,
                more,
            ),
            _ => (Vec::new(), false),
        };
        Ok(RangeResponse {
            kvs,
            more,
            count,
            // etcd's header carries the current revision even for a read in the past.
            revision: if req.revision > 0 {
                req.revision
            } else {
                header
            },
        })
    }

    fn key_value(&self, kv: etcd_client::KeyValue) -> Result<KeyValue> {
        let (create_revision, mod_revision) = (kv.create_revision(), kv.mod_revision());
        let (key, value) = kv.into_key_value();
        let key = String::from_utf8(key).map_err(|e| {
            StoreError::Backend(format!(
                "etcd at {}: key {:?} is not UTF-8",
                self.endpoints,
                String::from_utf8_lossy(e.as_bytes())
            ))
        })?;
        Ok(KeyValue {
            key,
            value: Bytes::from(value),
            create_revision,
            mod_revision,
        })
    }
}

fn header_revision(resp: &GetResponse) -> Revision {
    resp.header().map_or(0, |h| h.revision())
}

fn resp_take(resp: &mut GetResponse) -> (Vec<etcd_client::KeyValue>, bool) {
    (resp.take_kvs(), resp.more())
}

#[async_trait]
impl Store for EtcdStore {
    async fn range(&self, req: RangeRequest) -> Result<RangeResponse> {
        match self.range_inner(&req).await {
            Ok(resp) => Ok(resp),
            Err(err) => Err(self.revision_error(err, req.revision).await),
        }
    }

    async fn txn(&self, compares: Vec<Compare>, success: Vec<Op>) -> Result<TxnResponse> {
        // A missing key compares like one with every revision 0, so `mod_revision == 0`
        // means "does not exist" without a separate version check.
        let when: Vec<etcd_client::Compare> = compares
            .iter()
            .map(|c| {
                etcd_client::Compare::mod_revision(
                    c.key.as_bytes(),
                    CompareOp::Equal,
                    c.mod_revision,
                )
            })
            .collect();
        let then: Vec<TxnOp> = success
            .iter()
            .map(|op| match op {
                Op::Put { key, value } => TxnOp::put(
                    key.as_bytes(),
                    value.to_vec(),
                    Some(PutOptions::new().with_prev_key()),
                ),
                Op::Delete { key } => {
                    TxnOp::delete(key.as_bytes(), Some(DeleteOptions::new().with_prev_key()))
                }
            })
            .collect();
        // On conflict, read what the compared keys hold now, so callers need no second read.
        let otherwise: Vec<TxnOp> = compares
            .iter()
            .map(|c| TxnOp::get(c.key.as_bytes(), None))
            .collect();
        let txn = Txn::new().when(when).and_then(then).or_else(otherwise);
        let mut kv = self.client.kv_client();
        let resp = self.call("transaction", kv.txn(txn)).await?;
        let revision = resp.header().map_or(0, |h| h.revision());
        let prev = resp
            .op_responses()
            .into_iter()
            .map(|op| {
                let kv = match op {
                    TxnOpResponse::Put(mut put) => put.take_prev_key(),
                    TxnOpResponse::Delete(mut delete) => delete.take_prev_kvs().pop(),
                    TxnOpResponse::Get(mut get) => get.take_kvs().pop(),
                    TxnOpResponse::Txn(_) => None,
                };
                kv.map(|kv| self.key_value(kv)).transpose()
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(TxnResponse {
            succeeded: resp.succeeded(),
            revision,
            prev,
        })
    }

    async fn watch(&self, prefix: &str, after: Revision) -> Result<WatchStream> {
        let start = after + 1;
        // The rule every backend shares: history after `after` is whole only while `after`
        // itself is not compacted. A read at `after` fails exactly then. (etcd's own watch
        // would accept `after == compacted - 1`, and says so only later, on the stream.)
        match self.probe(after.max(1)).await {
            Ok(_) => {}
            Err(StoreError::Backend(m)) if m.contains(FUTURE_REVISION_MESSAGE) => {}
            Err(err) => return Err(self.revision_error(err, after).await),
        }

        let (key, end) = if prefix.is_empty() {
            (vec![0u8], vec![0u8])
        } else {
            (prefix.as_bytes().to_vec(), prefix_end(prefix))
        };
        let options = WatchOptions::new()
            .with_range(end)
            .with_start_revision(start)
            .with_prev_key();
        let mut client = self.client.watch_client();
        let stream = self.call("watch", client.watch(key, Some(options))).await?;
        let (sender, mut responses) = stream.split();
        // Wait for etcd to confirm the watch, so a refusal is this call's error.
        let first = self.call("watch", responses.message()).await?;
        match first {
            Some(resp) if resp.created() && !resp.canceled() => {}
            Some(resp) if resp.compact_revision() > 0 => {
                self.compacted
                    .fetch_max(resp.compact_revision(), Ordering::AcqRel);
                return Err(StoreError::Compacted {
                    requested: after,
                    compacted: resp.compact_revision(),
                });
            }
            Some(resp) => {
                return Err(StoreError::Backend(format!(
                    "etcd at {}: watch {prefix:?} was not created: {}",
                    self.endpoints,
                    resp.cancel_reason()
                )));
            }
            None => {
                return Err(StoreError::Backend(format!(
                    "etcd at {}: watch {prefix:?}: stream closed before the watch was created",
                    self.endpoints
                )));
            }
        }

        let state = WatchState {
            store: self.clone(),
            prefix: prefix.to_owned(),
            // Dropping the sender would half-close the gRPC stream; keep it for the stream's life.
            _sender: sender,
            responses,
            next: start,
            done: false,
        };
        Ok(futures::stream::unfold(state, WatchState::next_batch).boxed())
    }

    async fn compact(&self, revision: Revision) -> Result<()> {
        let mut kv = self.client.kv_client();
        match self.call("compact", kv.compact(revision, None)).await {
            Ok(_) => {
                self.compacted.fetch_max(revision, Ordering::AcqRel);
                Ok(())
            }
            // Like etcd: compacting at or below the compacted revision is `Compacted`.
            Err(err) => Err(self.revision_error(err, revision).await),
        }
    }

    async fn revisions(&self) -> Result<(Revision, Revision)> {
        let current = self.current_revision().await?;
        let compacted = self.compacted_revision(current).await?;
        Ok((current, compacted))
    }

    fn backend(&self) -> &'static str {
        "etcd"
    }
}

struct WatchState {
    store: EtcdStore,
    prefix: String,
    _sender: etcd_client::WatchRequestSender,
    responses: etcd_client::WatchResponseStream,
    /// The lowest revision not yet delivered (one past the last delivered).
    next: Revision,
    done: bool,
}

impl WatchState {
    async fn next_batch(mut self) -> Option<(Result<Vec<Event>>, Self)> {
        if self.done {
            return None;
        }
        loop {
            let item = match self.responses.message().await {
                Ok(Some(resp)) => match self.batch(resp) {
                    Ok(batch) if batch.is_empty() => continue,
                    other => other,
                },
                Ok(None) => Err(StoreError::Backend(format!(
                    "etcd at {}: watch {:?}: stream closed by the server",
                    self.store.endpoints, self.prefix
                ))),
                Err(err) => Err(self.store.error(&format!("watch {:?}", self.prefix), &err)),
            };
            // Every error ends the stream; the caller starts a new watch.
            self.done = item.is_err();
            return Some((item, self));
        }
    }

    /// One etcd response is one batch: etcd never splits a revision across responses
    /// (fragmenting is off). Responses without events (progress) give an empty batch.
    fn batch(&mut self, resp: WatchResponse) -> Result<Vec<Event>> {
        if resp.canceled() {
            if resp.compact_revision() > 0 {
                self.store
                    .compacted
                    .fetch_max(resp.compact_revision(), Ordering::AcqRel);
                return Err(StoreError::Compacted {
                    requested: self.next - 1,
                    compacted: resp.compact_revision(),
                });
            }
            return Err(StoreError::Backend(format!(
                "etcd at {}: watch {:?} cancelled: {}",
                self.store.endpoints,
                self.prefix,
                resp.cancel_reason()
            )));
        }
        let mut events = Vec::with_capacity(resp.events().len());
        for event in resp.events() {
            let Some(kv) = event.kv() else { continue };
            let prev = event
                .prev_kv()
                .map(|p| self.store.key_value(p.clone()))
                .transpose()?;
            let mut kv = self.store.key_value(kv.clone())?;
            let kind = match event.event_type() {
                EventType::Put => EventKind::Put,
                EventType::Delete => {
                    // etcd sends a tombstone; the store's contract is the last value.
                    if let Some(prev) = &prev {
                        kv.value = prev.value.clone();
                        kv.create_revision = prev.create_revision;
                    }
                    EventKind::Delete
                }
            };
            self.next = self.next.max(kv.mod_revision + 1);
            events.push(Event { kind, kv, prev });
        }
        Ok(events)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_datastore_lists_endpoints() {
        assert_eq!(
            parse_datastore("etcd://h1:2379,h2:2379"),
            Some(vec![
                "http://h1:2379".to_string(),
                "http://h2:2379".to_string()
            ])
        );
        assert_eq!(
            parse_datastore("etcd://127.0.0.1:2379"),
            Some(vec!["http://127.0.0.1:2379".to_string()])
        );
        assert_eq!(
            parse_datastore("etcd:// a:1 , ,b:2/"),
            Some(vec!["http://a:1".to_string(), "http://b:2".to_string()])
        );
    }

    #[test]
    fn parse_datastore_rejects_other_urls() {
        assert_eq!(parse_datastore("etcd://"), None);
        assert_eq!(parse_datastore("etcd://,"), None);
        assert_eq!(parse_datastore("sqlite:///var/lib/rkube"), None);
        assert_eq!(parse_datastore("http://h1:2379"), None);
        assert_eq!(parse_datastore(""), None);
    }
}
