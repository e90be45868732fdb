//! The conformance suite every backend passes: etcd v3 semantics as the [`Store`] trait states
//! them.
//!
//! Each check is a `pub async fn` taking the store; it panics on a violation. Checks write
//! under their own unique key prefix and use revisions relative to what they observe, so they
//! may share a store that already holds data (a long-lived etcd). Checks whose assertions are
//! global (revision steps, compaction) take an exclusive turn when run through
//! [`conformance_tests!`](crate::conformance_tests), so other checks in the same test binary
//! never run beside them.
//!
//! ```ignore
//! async fn make() -> (SqliteStore, tempfile::TempDir) { ... }
//! store::conformance_tests!(make());
//! ```

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use futures::StreamExt;
use tokio::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};

use crate::{
    Compare, Event, EventKind, KeyValue, Op, RangeRequest, Revision, Store, StoreError, StoreExt,
    WatchStream,
};

/// Expands into one `#[tokio::test]` per check. `$make` is an expression evaluating to a
/// future of `(store, guard)`: the store implements [`Store`], the guard lives as long as the
/// test (a temporary directory, a server process).
#[macro_export]
macro_rules! conformance_tests {
    ($make:expr) => {
        $crate::conformance_tests!(@each $make;
            revisions_are_global_and_step_by_one,
            create_and_mod_revision,
            range_single_key_and_prefix,
            range_limit_and_pagination,
            range_at_older_revision,
            txn_compare_conflicts,
            txn_multi_op_atomicity,
            watch_events_in_order,
            watch_resume_under_concurrent_writers,
            watch_prefix_isolation,
            compaction,
            concurrent_writers,
        );
    };
    (@each $make:expr; $($check:ident),* $(,)?) => {$(
        #[::tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $check() {
            let _turn = $crate::conformance::turn(stringify!($check)).await;
            let (store, _guard) = $make.await;
            $crate::conformance::$check(&store).await;
        }
    )*};
}

/// Checks that assert global facts and must not run beside other checks.
const EXCLUSIVE: &[&str] = &["revisions_are_global_and_step_by_one", "compaction"];

static TURNS: RwLock<()> = RwLock::const_new(());

/// A check's turn to run; exclusive for the checks in `EXCLUSIVE`.
#[doc(hidden)]
pub enum Turn {
    Shared(#[allow(dead_code)] RwLockReadGuard<'static, ()>),
    Exclusive(#[allow(dead_code)] RwLockWriteGuard<'static, ()>),
}

#[doc(hidden)]
pub async fn turn(check: &str) -> Turn {
    if EXCLUSIVE.contains(&check) {
        Turn::Exclusive(TURNS.write().await)
    } else {
        Turn::Shared(TURNS.read().await)
    }
}

/// Run every check, one after another, on one store.
pub async fn run_all(store: &dyn Store) {
    revisions_are_global_and_step_by_one(store).await;
    create_and_mod_revision(store).await;
    range_single_key_and_prefix(store).await;
    range_limit_and_pagination(store).await;
    range_at_older_revision(store).await;
    txn_compare_conflicts(store).await;
    txn_multi_op_atomicity(store).await;
    watch_events_in_order(store).await;
    watch_resume_under_concurrent_writers(store).await;
    watch_prefix_isolation(store).await;
    compaction(store).await;
    concurrent_writers(store).await;
}

// ---------------------------------------------------------------------------------------------
// Helpers

/// A key prefix no other check or earlier run uses.
fn unique(check: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("/conformance/{check}/{nanos:x}-{n}/")
}

fn value(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

fn put(key: &str, v: &str) -> Op {
    Op::Put {
        key: key.into(),
        value: value(v),
    }
}

fn delete(key: &str) -> Op {
    Op::Delete { key: key.into() }
}

fn compare(key: &str, mod_revision: Revision) -> Compare {
    Compare {
        key: key.into(),
        mod_revision,
    }
}

/// Unconditional write; returns its revision.
async fn write(store: &dyn Store, ops: Vec<Op>) -> Revision {
    let resp = store.txn(vec![], ops).await.expect("unconditional txn");
    assert!(resp.succeeded, "a txn without compares must succeed");
    resp.revision
}

async fn current(store: &dyn Store) -> Revision {
    store.revisions().await.expect("revisions").0
}

async fn keys(store: &dyn Store, req: RangeRequest) -> Vec<String> {
    let resp = store.range(req).await.expect("range");
    resp.kvs.into_iter().map(|kv| kv.key).collect()
}

const WATCH_TIMEOUT: Duration = Duration::from_secs(20);

/// Read events until `n` arrived; fails on a stream error, an early end or a timeout.
async fn next_events(stream: &mut WatchStream, n: usize) -> Vec<Event> {
    let mut events = Vec::new();
    while events.len() < n {
        match tokio::time::timeout(WATCH_TIMEOUT, stream.next()).await {
            Err(_) => panic!(
                "watch: got {} of {n} events within {WATCH_TIMEOUT:?}: {events:?}",
                events.len()
            ),
            Ok(None) => panic!("watch ended after {} of {n} events", events.len()),
            Ok(Some(Err(e))) => panic!("watch failed after {} of {n} events: {e}", events.len()),
            Ok(Some(Ok(batch))) => {
                assert!(!batch.is_empty(), "watch sent an empty batch");
                events.extend(batch);
            }
        }
    }
    assert_eq!(
        events.len(),
        n,
        "watch sent more events than written: {events:?}"
    );
    events
}

/// Nothing more arrives for a short while.
async fn assert_quiet(stream: &mut WatchStream) {
    if let Ok(item) = tokio::time::timeout(Duration::from_millis(300), stream.next()).await {
        panic!("watch sent more than expected: {item:?}");
    }
}

fn assert_ordered(events: &[Event]) {
    for pair in events.windows(2) {
        assert!(
            pair[0].kv.mod_revision <= pair[1].kv.mod_revision,
            "events out of revision order: {events:?}"
        );
    }
}

fn is_compacted<T>(result: &Result<T, StoreError>) -> bool {
    matches!(result, Err(StoreError::Compacted { .. }))
}

// ---------------------------------------------------------------------------------------------
// Checks

/// Every successful change takes the next global revision, whatever key it touches; failed
/// compares and no-op deletes take none.
pub async fn revisions_are_global_and_step_by_one(store: &dyn Store) {
    let p = unique("revisions");
    let start = current(store).await;
    let mut expected = start;
    for (i, key) in ["a", "b", "a", "c"].iter().enumerate() {
        let rev = write(store, vec![put(&format!("{p}{key}"), &i.to_string())]).await;
        expected += 1;
        assert_eq!(rev, expected, "write {i} took revision {rev}");
    }
    assert_eq!(current(store).await, expected);

    let failed = store.create(&format!("{p}a"), value("x")).await.unwrap();
    assert!(!failed.succeeded, "create of an existing key must fail");
    assert_eq!(
        failed.revision, expected,
        "a failed txn reports the current revision"
    );

    let noop = store
        .txn(vec![], vec![delete(&format!("{p}missing"))])
        .await
        .unwrap();
    assert!(noop.succeeded);
    assert_eq!(
        noop.revision, expected,
        "deleting a missing key changes nothing"
    );
    assert_eq!(current(store).await, expected);

    let multi = write(
        store,
        vec![put(&format!("{p}d"), "1"), put(&format!("{p}e"), "1")],
    )
    .await;
    assert_eq!(multi, expected + 1, "one txn, one revision");
    let kvs = store.range(RangeRequest::prefix(&p)).await.unwrap().kvs;
    let max = kvs.iter().map(|kv| kv.mod_revision).max().unwrap();
    assert_eq!(max, multi);
}

/// `create_revision` stays from creation until delete; `mod_revision` moves with each change.
pub async fn create_and_mod_revision(store: &dyn Store) {
    let key = format!("{}k", unique("create_mod"));
    assert!(store.get(&key).await.unwrap().is_none());
    let created = store.create(&key, value("v1")).await.unwrap();
    assert!(created.succeeded);
    assert_eq!(created.prev, vec![None], "a create replaces nothing");
    let r1 = created.revision;
    let kv = store.get(&key).await.unwrap().expect("created key");
    assert_eq!(
        (kv.value.as_ref(), kv.create_revision, kv.mod_revision),
        (&b"v1"[..], r1, r1)
    );

    let updated = store
        .txn(vec![compare(&key, r1)], vec![put(&key, "v2")])
        .await
        .unwrap();
    assert!(updated.succeeded);
    let r2 = updated.revision;
    assert!(r2 > r1);
    let kv = store.get(&key).await.unwrap().unwrap();
    assert_eq!(
        (kv.value.as_ref(), kv.create_revision, kv.mod_revision),
        (&b"v2"[..], r1, r2)
    );

    let r3 = write(store, vec![delete(&key)]).await;
    assert!(r3 > r2);
    assert!(store.get(&key).await.unwrap().is_none());
    let recreated = store.create(&key, value("v3")).await.unwrap();
    assert!(recreated.succeeded, "create after delete must succeed");
    let kv = store.get(&key).await.unwrap().unwrap();
    assert_eq!(
        kv.create_revision, recreated.revision,
        "a new life gets a new create_revision"
    );
    assert_eq!(kv.mod_revision, recreated.revision);
}

/// A single key reads only itself; a prefix reads every key under it, sorted by bytes.
pub async fn range_single_key_and_prefix(store: &dyn Store) {
    let p = unique("range_prefix");
    let inside = ["a", "b", "b/x", "B", "a-", "\u{e9}"];
    let mut ops: Vec<Op> = inside.iter().map(|k| put(&format!("{p}{k}"), k)).collect();
    // Neighbours just outside the prefix.
    let base = p.trim_end_matches('/');
    ops.push(put(&format!("{base}0"), "outside"));
    ops.push(put(base, "outside"));
    write(store, ops).await;

    let single = store
        .range(RangeRequest::key(format!("{p}b")))
        .await
        .unwrap();
    assert_eq!(
        single.kvs.len(),
        1,
        "a single key read returned {:?}",
        single.kvs
    );
    assert_eq!(single.kvs[0].key, format!("{p}b"));
    assert_eq!(single.kvs[0].value.as_ref(), b"b");
    assert_eq!(single.count, 1);
    assert!(!single.more);

    let resp = store.range(RangeRequest::prefix(&p)).await.unwrap();
    let mut expected: Vec<String> = inside.iter().map(|k| format!("{p}{k}")).collect();
    expected.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
    let got: Vec<String> = resp.kvs.iter().map(|kv| kv.key.clone()).collect();
    assert_eq!(got, expected, "prefix read in byte order");
    assert_eq!(resp.count, inside.len() as i64);
    assert!(!resp.more);
    assert!(resp.revision >= resp.kvs.iter().map(|kv| kv.mod_revision).max().unwrap());

    let missing = store
        .range(RangeRequest::key(format!("{p}zz")))
        .await
        .unwrap();
    assert!(missing.kvs.is_empty());
    assert_eq!(missing.count, 0);
    let empty = store
        .range(RangeRequest::prefix(format!("{p}nothing/")))
        .await
        .unwrap();
    assert!(empty.kvs.is_empty());
}

/// `limit` cuts pages and sets `more`; `start_after` continues; `count` ignores both.
pub async fn range_limit_and_pagination(store: &dyn Store) {
    let p = unique("range_pages");
    let all: Vec<String> = (0..10).map(|i| format!("{p}{i:02}")).collect();
    write(store, all.iter().map(|k| put(k, "v")).collect()).await;

    let first = store
        .range(RangeRequest {
            limit: 3,
            ..RangeRequest::prefix(&p)
        })
        .await
        .unwrap();
    assert_eq!(first.kvs.len(), 3);
    assert!(first.more, "a cut page must say there is more");
    assert_eq!(first.count, 10, "count ignores limit");

    let mut seen = Vec::new();
    let mut after: Option<String> = None;
    let mut pages = 0;
    loop {
        let resp = store
            .range(RangeRequest {
                limit: 4,
                start_after: after.clone(),
                ..RangeRequest::prefix(&p)
            })
            .await
            .unwrap();
        assert_eq!(resp.count, 10, "count ignores start_after");
        pages += 1;
        seen.extend(resp.kvs.iter().map(|kv| kv.key.clone()));
        if !resp.more {
            break;
        }
        assert_eq!(resp.kvs.len(), 4);
        after = resp.kvs.last().map(|kv| kv.key.clone());
        assert!(pages < 10, "pagination does not end");
    }
    assert_eq!(pages, 3);
    assert_eq!(seen, all, "pages cover every key once, in order");

    let exact = store
        .range(RangeRequest {
            limit: 10,
            ..RangeRequest::prefix(&p)
        })
        .await
        .unwrap();
    assert_eq!(exact.kvs.len(), 10);
    assert!(!exact.more, "a limit equal to the count is not cut");

    let counted = store
        .range(RangeRequest {
            count_only: true,
            ..RangeRequest::prefix(&p)
        })
        .await
        .unwrap();
    assert_eq!(counted.count, 10);
    assert!(counted.kvs.is_empty(), "count_only returns no keys");
}

/// A read at an older revision sees the store as it was then.
pub async fn range_at_older_revision(store: &dyn Store) {
    let p = unique("range_old");
    let (a, b) = (format!("{p}a"), format!("{p}b"));
    let r1 = write(store, vec![put(&a, "1")]).await;
    let r2 = write(store, vec![put(&a, "2")]).await;
    let r3 = write(store, vec![put(&b, "1")]).await;
    let r4 = write(store, vec![delete(&a)]).await;

    let at = |revision: Revision| {
        let p = p.clone();
        async move {
            let resp = store
                .range(RangeRequest {
                    revision,
                    ..RangeRequest::prefix(p)
                })
                .await
                .unwrap();
            assert_eq!(
                resp.revision, revision,
                "a read at a revision is served at it"
            );
            resp.kvs
                .into_iter()
                .map(|kv| {
                    (
                        kv.key,
                        String::from_utf8_lossy(&kv.value).into_owned(),
                        kv.mod_revision,
                    )
                })
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(at(r1).await, vec![(a.clone(), "1".into(), r1)]);
    assert_eq!(at(r2).await, vec![(a.clone(), "2".into(), r2)]);
    assert_eq!(
        at(r3).await,
        vec![(a.clone(), "2".into(), r2), (b.clone(), "1".into(), r3)]
    );
    assert_eq!(at(r4).await, vec![(b.clone(), "1".into(), r3)]);
    if r1 > 1 {
        // Revision 0 would mean "current".
        assert_eq!(
            at(r1 - 1).await,
            vec![],
            "before the first write nothing existed"
        );
    }

    let old_single = store
        .range(RangeRequest {
            revision: r1,
            ..RangeRequest::key(&a)
        })
        .await
        .unwrap();
    assert_eq!(old_single.kvs.len(), 1);
    assert_eq!(old_single.kvs[0].create_revision, r1);
    let old_count = store
        .range(RangeRequest {
            revision: r3,
            count_only: true,
            ..RangeRequest::prefix(&p)
        })
        .await
        .unwrap();
    assert_eq!(old_count.count, 2);

    let now = current(store).await;
    let future = store
        .range(RangeRequest {
            revision: now + 1000,
            ..RangeRequest::prefix(&p)
        })
        .await;
    assert!(
        matches!(future, Err(StoreError::FutureRevision { .. })),
        "a read past the current revision must fail: {future:?}"
    );
}

/// Compare-and-swap: failures change nothing and return the current values.
pub async fn txn_compare_conflicts(store: &dyn Store) {
    let key = format!("{}k", unique("cas"));
    let created = store.create(&key, value("v1")).await.unwrap();
    let r1 = created.revision;

    let again = store.create(&key, value("other")).await.unwrap();
    assert!(!again.succeeded, "create of an existing key must fail");
    assert_eq!(again.prev.len(), 1);
    let prev = again.prev[0]
        .as_ref()
        .expect("failure returns the current value");
    assert_eq!(
        (prev.key.as_str(), prev.value.as_ref(), prev.mod_revision),
        (key.as_str(), &b"v1"[..], r1)
    );

    let updated = store
        .txn(vec![compare(&key, r1)], vec![put(&key, "v2")])
        .await
        .unwrap();
    assert!(updated.succeeded);
    let r2 = updated.revision;
    assert_eq!(updated.prev.len(), 1);
    assert_eq!(
        updated.prev[0].as_ref().map(|kv| kv.value.clone()),
        Some(value("v1")),
        "success returns the replaced value"
    );

    let stale = store
        .txn(vec![compare(&key, r1)], vec![put(&key, "v3")])
        .await
        .unwrap();
    assert!(
        !stale.succeeded,
        "update with a stale mod_revision must fail"
    );
    assert!(stale.revision >= r2);
    assert_eq!(stale.prev[0].as_ref().map(|kv| kv.mod_revision), Some(r2));
    assert_eq!(store.get(&key).await.unwrap().unwrap().value, value("v2"));

    let stale_delete = store
        .txn(vec![compare(&key, r1)], vec![delete(&key)])
        .await
        .unwrap();
    assert!(
        !stale_delete.succeeded,
        "delete with a stale mod_revision must fail"
    );
    assert!(store.get(&key).await.unwrap().is_some());

    let deleted = store
        .txn(vec![compare(&key, r2)], vec![delete(&key)])
        .await
        .unwrap();
    assert!(deleted.succeeded);
    assert_eq!(
        deleted.prev[0].as_ref().map(|kv| kv.value.clone()),
        Some(value("v2")),
        "delete returns the deleted value"
    );
    assert!(store.get(&key).await.unwrap().is_none());

    let gone = store
        .txn(vec![compare(&key, r2)], vec![put(&key, "v4")])
        .await
        .unwrap();
    assert!(
        !gone.succeeded,
        "compare on a deleted key's old revision must fail"
    );
    assert_eq!(gone.prev, vec![None], "an absent key compares as None");
    assert!(store.get(&key).await.unwrap().is_none());
}

/// All ops of a txn apply under one revision, or none do.
pub async fn txn_multi_op_atomicity(store: &dyn Store) {
    let p = unique("atomic");
    let (x, y, z) = (format!("{p}x"), format!("{p}y"), format!("{p}z"));
    let rz = write(store, vec![put(&z, "z")]).await;

    // One compare fails: nothing of the ops may apply.
    let failed = store
        .txn(
            vec![compare(&x, 0), compare(&z, rz + 1000)],
            vec![put(&x, "x"), put(&y, "y"), delete(&z)],
        )
        .await
        .unwrap();
    assert!(!failed.succeeded);
    assert_eq!(
        failed.prev.len(),
        2,
        "failure returns one value per compare"
    );
    assert!(failed.prev[0].is_none());
    assert_eq!(failed.prev[1].as_ref().map(|kv| kv.mod_revision), Some(rz));
    assert_eq!(keys(store, RangeRequest::prefix(&p)).await, vec![z.clone()]);

    let done = store
        .txn(
            vec![compare(&x, 0), compare(&z, rz)],
            vec![put(&x, "x"), put(&y, "y"), delete(&z)],
        )
        .await
        .unwrap();
    assert!(done.succeeded);
    assert_eq!(done.prev.len(), 3, "success returns one value per op");
    assert!(done.prev[0].is_none() && done.prev[1].is_none());
    assert_eq!(
        done.prev[2].as_ref().map(|kv| kv.value.clone()),
        Some(value("z"))
    );
    let kvs = store.range(RangeRequest::prefix(&p)).await.unwrap().kvs;
    let got: Vec<_> = kvs
        .iter()
        .map(|kv| (kv.key.clone(), kv.mod_revision))
        .collect();
    assert_eq!(got, vec![(x, done.revision), (y, done.revision)]);
}

/// Watch delivers puts and deletes in revision order, with values and previous versions.
pub async fn watch_events_in_order(store: &dyn Store) {
    let p = unique("watch_order");
    let key = format!("{p}k");
    let start = current(store).await;
    let mut stream = store.watch(&p, start).await.expect("watch");
    let r1 = write(store, vec![put(&key, "v1")]).await;
    let r2 = write(store, vec![put(&key, "v2")]).await;
    let r3 = write(store, vec![delete(&key)]).await;
    let other = format!("{p}other");
    let r4 = write(store, vec![put(&other, "o")]).await;

    let events = next_events(&mut stream, 4).await;
    assert_ordered(&events);
    let kv = |v: &str, create: Revision, modr: Revision| KeyValue {
        key: key.clone(),
        value: value(v),
        create_revision: create,
        mod_revision: modr,
    };
    assert_eq!(events[0].kind, EventKind::Put);
    assert_eq!(events[0].kv, kv("v1", r1, r1));
    assert_eq!(events[0].prev, None);
    assert_eq!(events[1].kind, EventKind::Put);
    assert_eq!(events[1].kv, kv("v2", r1, r2));
    assert_eq!(events[1].prev, Some(kv("v1", r1, r1)));
    assert_eq!(events[2].kind, EventKind::Delete);
    assert_eq!(events[2].kv.key, key);
    assert_eq!(events[2].kv.mod_revision, r3);
    assert_eq!(
        events[2].kv.value,
        value("v2"),
        "a delete carries the last value"
    );
    assert_eq!(events[2].prev, Some(kv("v2", r1, r2)));
    assert_eq!(events[3].kv.key, other);
    assert_eq!(events[3].kv.mod_revision, r4);
    assert_quiet(&mut stream).await;
}

/// A watch from an old revision replays history, then follows live writes, with no gap and no
/// duplicate, while writers keep writing.
pub async fn watch_resume_under_concurrent_writers(store: &dyn Store) {
    let p = unique("watch_resume");
    let mut history = Vec::new();
    for i in 0..20 {
        let key = format!("{p}h{i:02}");
        history.push((key.clone(), write(store, vec![put(&key, "h")]).await));
    }
    let resume_after = history[9].1;

    // Writers race the watch: some of their writes land before it starts, some after.
    let writers = futures::future::join_all((0..4).map(|w| {
        let p = p.clone();
        async move {
            let mut written = Vec::new();
            for i in 0..25 {
                let key = format!("{p}w{w}-{i:02}");
                written.push((key.clone(), write(store, vec![put(&key, "w")]).await));
                if i % 5 == 0 {
                    tokio::task::yield_now().await;
                }
            }
            written
        }
    }));
    let watcher = async {
        tokio::time::sleep(Duration::from_millis(5)).await;
        let mut stream = store.watch(&p, resume_after).await.expect("watch");
        let events = next_events(&mut stream, 10 + 100).await;
        (stream, events)
    };
    let (written, (mut stream, events)) = tokio::join!(writers, watcher);

    let mut expected: Vec<(String, Revision)> = history[10..].to_vec();
    expected.extend(written.into_iter().flatten());
    expected.sort_by_key(|(_, rev)| *rev);
    let got: Vec<(String, Revision)> = events
        .iter()
        .map(|e| (e.kv.key.clone(), e.kv.mod_revision))
        .collect();
    assert_eq!(
        got, expected,
        "replay + live must be exactly the writes after the revision"
    );
    assert_quiet(&mut stream).await;
}

/// A watch sees only its prefix, not keys that merely share leading bytes.
pub async fn watch_prefix_isolation(store: &dyn Store) {
    let p = unique("watch_prefix");
    let watched = format!("{p}a/");
    let start = current(store).await;
    let mut stream = store.watch(&watched, start).await.expect("watch");
    write(store, vec![put(&format!("{p}ab"), "no")]).await;
    write(store, vec![put(&format!("{p}b/x"), "no")]).await;
    write(store, vec![put(&format!("{p}a"), "no")]).await;
    let inside = write(
        store,
        vec![
            put(&format!("{watched}x"), "yes"),
            put(&format!("{p}a0"), "no"),
        ],
    )
    .await;
    write(store, vec![delete(&format!("{p}ab"))]).await;
    let last = write(store, vec![put(&format!("{watched}y/z"), "yes")]).await;

    let events = next_events(&mut stream, 2).await;
    let got: Vec<_> = events
        .iter()
        .map(|e| (e.kv.key.clone(), e.kv.mod_revision))
        .collect();
    assert_eq!(
        got,
        vec![
            (format!("{watched}x"), inside),
            (format!("{watched}y/z"), last)
        ]
    );
    assert_quiet(&mut stream).await;
}

/// Compaction drops history below a revision: old reads and watches fail with `Compacted`,
/// the latest values stay.
pub async fn compaction(store: &dyn Store) {
    let p = unique("compaction");
    let (a, b) = (format!("{p}a"), format!("{p}b"));
    let r1 = write(store, vec![put(&a, "1")]).await;
    write(store, vec![put(&a, "2")]).await;
    write(store, vec![put(&b, "1"), put(&a, "3")]).await;
    write(store, vec![delete(&b)]).await;
    let at = write(store, vec![put(&a, "4")]).await;
    let after = write(store, vec![put(&a, "5")]).await;
    assert!(at - r1 >= 4);

    store.compact(at).await.expect("compact");
    let (now, compacted) = store.revisions().await.unwrap();
    assert!(
        compacted >= at,
        "compacted revision {compacted} is below the requested {at}"
    );
    assert!(now >= after);

    let old = store
        .range(RangeRequest {
            revision: r1,
            ..RangeRequest::prefix(&p)
        })
        .await;
    assert!(
        is_compacted(&old),
        "a read below the compaction must fail: {old:?}"
    );
    let old = store
        .range(RangeRequest {
            revision: at - 1,
            ..RangeRequest::key(&a)
        })
        .await;
    assert!(
        is_compacted(&old),
        "a read just below the compaction must fail: {old:?}"
    );

    // At the compacted revision the store still reads as it was.
    let kept = store
        .range(RangeRequest {
            revision: at,
            ..RangeRequest::prefix(&p)
        })
        .await
        .expect("read at the compacted revision");
    let got: Vec<_> = kept
        .kvs
        .iter()
        .map(|kv| (kv.key.clone(), kv.value.clone()))
        .collect();
    assert_eq!(got, vec![(a.clone(), value("4"))]);
    assert_eq!(
        kept.kvs[0].create_revision, r1,
        "compaction keeps create_revision"
    );

    let latest = store.get(&a).await.unwrap().expect("latest value survives");
    assert_eq!(
        (latest.value.clone(), latest.mod_revision),
        (value("5"), after)
    );
    assert!(store.get(&b).await.unwrap().is_none());

    // Watching from below the compaction fails, at once or as the stream's first item.
    match store.watch(&p, r1).await {
        Err(e) => assert!(
            matches!(e, StoreError::Compacted { .. }),
            "watch error: {e}"
        ),
        Ok(mut stream) => {
            let first = tokio::time::timeout(WATCH_TIMEOUT, stream.next()).await;
            match first {
                Ok(Some(item)) => assert!(is_compacted(&item), "watch item: {item:?}"),
                other => panic!("a watch below the compaction must fail: {other:?}"),
            }
        }
    }
    // From the compacted revision on, history is intact.
    let mut stream = store
        .watch(&p, at)
        .await
        .expect("watch from the compacted revision");
    let events = next_events(&mut stream, 1).await;
    assert_eq!(
        (events[0].kv.mod_revision, events[0].kv.value.clone()),
        (after, value("5"))
    );
    assert_eq!(events[0].prev.as_ref().map(|kv| kv.mod_revision), Some(at));

    let again = store.compact(r1).await;
    assert!(
        is_compacted(&again),
        "compacting below the compaction must fail: {again:?}"
    );
    let updated = store
        .txn(vec![compare(&a, after)], vec![put(&a, "6")])
        .await
        .unwrap();
    assert!(updated.succeeded, "writes go on after compaction");
}

/// Many concurrent creates all succeed, each with its own revision.
pub async fn concurrent_writers(store: &dyn Store) {
    let p = unique("concurrent");
    let results = futures::future::join_all((0..16).map(|t| {
        let p = p.clone();
        async move {
            let mut revisions = Vec::new();
            for i in 0..50 {
                let resp = store
                    .create(&format!("{p}{t:02}-{i:02}"), value("v"))
                    .await
                    .expect("create");
                assert!(resp.succeeded, "create of a fresh key must succeed");
                revisions.push(resp.revision);
            }
            revisions
        }
    }))
    .await;
    let mut all: Vec<Revision> = results.into_iter().flatten().collect();
    all.sort_unstable();
    all.dedup();
    assert_eq!(all.len(), 16 * 50, "every create gets its own revision");
    let resp = store
        .range(RangeRequest {
            count_only: true,
            ..RangeRequest::prefix(&p)
        })
        .await
        .unwrap();
    assert_eq!(resp.count, 16 * 50);
}
