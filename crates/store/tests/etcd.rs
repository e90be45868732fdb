//! The etcd backend against a real etcd (Debian's `etcd-server`) on loopback.
//! Fails when etcd is missing, unless RKUBE_SKIP_ETCD=1.

use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use store::etcd::EtcdStore;
use store::{EventKind, Op, RangeRequest, Store, StoreError, StoreExt, WatchStream};
use testing::EtcdProcess;

/// The shared conformance suite, one test (and one etcd) per check. Not
/// `store::conformance_tests!`: its stores cannot be skipped when etcd is missing
/// and RKUBE_SKIP_ETCD=1. `run_all_on_one_etcd` runs every check, including any added later.
macro_rules! conformance {
    ($($check:ident),* $(,)?) => {
        mod conformance {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $check() {
                    let Some((_etcd, store)) = super::start().await else {
                        return;
                    };
                    store::conformance::$check(&store).await;
                }
            )*
        }
    };
}

conformance!(
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_all_on_one_etcd() {
    let Some((_etcd, store)) = start().await else {
        return;
    };
    store::conformance::run_all(&store).await;
}

async fn start() -> Option<(EtcdProcess, EtcdStore)> {
    let etcd = EtcdProcess::start_for_test()?;
    let store = EtcdStore::connect(&[etcd.endpoint()])
        .await
        .expect("connect to fresh etcd");
    Some((etcd, store))
}

fn put(key: &str, value: &str) -> Op {
    Op::Put {
        key: key.into(),
        value: Bytes::from(value.to_owned()),
    }
}

async fn next_batch(stream: &mut WatchStream) -> Vec<store::Event> {
    tokio::time::timeout(Duration::from_secs(10), stream.next())
        .await
        .expect("watch batch within 10 s")
        .expect("watch stream still open")
        .expect("watch batch is not an error")
}

#[tokio::test]
async fn connect_fails_with_endpoint_in_message() {
    let port = testing::free_port();
    let endpoint = format!("http://127.0.0.1:{port}");
    let err = EtcdStore::connect(std::slice::from_ref(&endpoint))
        .await
        .expect_err("nothing listens there");
    assert!(
        matches!(&err, StoreError::Backend(msg) if msg.contains(&endpoint)),
        "{err}"
    );
}

#[tokio::test]
async fn range_edges() {
    let Some((_etcd, store)) = start().await else {
        return;
    };
    for key in ["/p/a", "/p/b", "/p/c", "/p/d", "/q/a", "/p"] {
        store
            .create(key, Bytes::from(key.to_owned()))
            .await
            .unwrap();
    }
    let keys = |resp: &store::RangeResponse| -> Vec<String> {
        resp.kvs.iter().map(|kv| kv.key.clone()).collect()
    };

    let all = store.range(RangeRequest::prefix("/p/")).await.unwrap();
    assert_eq!(keys(&all), ["/p/a", "/p/b", "/p/c", "/p/d"]);
    assert_eq!((all.count, all.more), (4, false));
    let (current, _) = store.revisions().await.unwrap();
    assert_eq!(all.revision, current);

    let page1 = store
        .range(RangeRequest {
            limit: 2,
            ..RangeRequest::prefix("/p/")
        })
        .await
        .unwrap();
    assert_eq!(keys(&page1), ["/p/a", "/p/b"]);
    assert_eq!((page1.count, page1.more), (4, true));
    let page2 = store
        .range(RangeRequest {
            limit: 2,
            start_after: Some("/p/b".into()),
            ..RangeRequest::prefix("/p/")
        })
        .await
        .unwrap();
    assert_eq!(keys(&page2), ["/p/c", "/p/d"]);
    assert_eq!(page2.count, 4, "count ignores start_after");
    assert!(!page2.more);
    let past_end = store
        .range(RangeRequest {
            start_after: Some("/p/z".into()),
            ..RangeRequest::prefix("/p/")
        })
        .await
        .unwrap();
    assert!(past_end.kvs.is_empty());
    assert_eq!(past_end.count, 4);
    let beyond_prefix = store
        .range(RangeRequest {
            start_after: Some("/q".into()),
            ..RangeRequest::prefix("/p/")
        })
        .await
        .unwrap();
    assert!(beyond_prefix.kvs.is_empty());
    assert_eq!(beyond_prefix.count, 4);
    let before_prefix = store
        .range(RangeRequest {
            start_after: Some("/a".into()),
            limit: 1,
            ..RangeRequest::prefix("/p/")
        })
        .await
        .unwrap();
    assert_eq!(keys(&before_prefix), ["/p/a"]);
    assert!(before_prefix.more);
    let single = store
        .range(RangeRequest {
            start_after: Some("/p/a".into()),
            ..RangeRequest::key("/p/a")
        })
        .await
        .unwrap();
    assert!(single.kvs.is_empty());
    assert_eq!(single.count, 1);

    let counted = store
        .range(RangeRequest {
            count_only: true,
            ..RangeRequest::prefix("/p/")
        })
        .await
        .unwrap();
    assert!(counted.kvs.is_empty());
    assert_eq!(counted.count, 4);

    let everything = store.range(RangeRequest::prefix("")).await.unwrap();
    assert_eq!(everything.count, 6);

    // A read at an older revision sees the old value and reports that revision.
    let before = store.get("/p/a").await.unwrap().unwrap();
    store
        .txn(
            vec![],
            vec![put("/p/a", "new"), Op::Delete { key: "/p/b".into() }],
        )
        .await
        .unwrap();
    let old = store
        .range(RangeRequest {
            revision: before.mod_revision,
            ..RangeRequest::prefix("/p/")
        })
        .await
        .unwrap();
    assert_eq!(old.revision, before.mod_revision);
    assert_eq!(old.count, 1, "only /p/a existed at its own create revision");
    assert_eq!(old.kvs, vec![before]);

    let (current, _) = store.revisions().await.unwrap();
    let future = store
        .range(RangeRequest {
            revision: current + 10,
            ..RangeRequest::key("/p/a")
        })
        .await
        .unwrap_err();
    assert!(
        matches!(future, StoreError::FutureRevision { requested, current: c } if requested == current + 10 && c == current),
        "{future:?}"
    );
}

#[tokio::test]
async fn watch_replays_then_follows() {
    let Some((_etcd, store)) = start().await else {
        return;
    };
    let first = store
        .create("/w/a", Bytes::from_static(b"1"))
        .await
        .unwrap();
    store
        .create("/other", Bytes::from_static(b"x"))
        .await
        .unwrap();

    let mut from_start = store.watch("/w/", 0).await.unwrap();
    let batch = next_batch(&mut from_start).await;
    assert_eq!(batch.len(), 1);
    assert_eq!(batch[0].kind, EventKind::Put);
    assert_eq!(batch[0].kv.mod_revision, first.revision);
    assert_eq!(batch[0].prev, None);

    let mut live = store.watch("/w/", first.revision).await.unwrap();
    let txn = store
        .txn(
            vec![],
            vec![put("/w/a", "2"), put("/w/b", "3"), put("/other", "y")],
        )
        .await
        .unwrap();
    let batch = next_batch(&mut live).await;
    let keys: Vec<_> = batch.iter().map(|e| e.kv.key.as_str()).collect();
    assert_eq!(keys, ["/w/a", "/w/b"], "one batch holds the whole revision");
    assert!(batch.iter().all(|e| e.kv.mod_revision == txn.revision));
    assert_eq!(
        batch[0].prev.as_ref().map(|p| p.value.clone()),
        Some(Bytes::from_static(b"1"))
    );

    let deleted = store
        .txn(vec![], vec![Op::Delete { key: "/w/a".into() }])
        .await
        .unwrap();
    let batch = next_batch(&mut live).await;
    assert_eq!(batch.len(), 1);
    let event = &batch[0];
    assert_eq!(event.kind, EventKind::Delete);
    assert_eq!(event.kv.key, "/w/a");
    assert_eq!(event.kv.mod_revision, deleted.revision);
    assert_eq!(
        event.kv.value,
        Bytes::from_static(b"2"),
        "delete carries the last value"
    );
    assert_eq!(event.prev.as_ref().unwrap().mod_revision, txn.revision);

    // The replaying watch saw the same history in order.
    let replayed: Vec<i64> = [
        next_batch(&mut from_start).await,
        next_batch(&mut from_start).await,
    ]
    .iter()
    .map(|b| b[0].kv.mod_revision)
    .collect();
    assert_eq!(replayed, [txn.revision, deleted.revision]);
}

#[tokio::test]
async fn compaction_ends_old_reads_and_watches() {
    let Some((_etcd, store)) = start().await else {
        return;
    };
    let mut revs = Vec::new();
    for i in 0..5 {
        let resp = store
            .txn(vec![], vec![put("/c/k", &i.to_string())])
            .await
            .unwrap();
        revs.push(resp.revision);
    }
    assert_eq!(store.revisions().await.unwrap(), (revs[4], 0));
    store.compact(revs[3]).await.unwrap();
    assert_eq!(store.revisions().await.unwrap(), (revs[4], revs[3]));
    // Compacting again, or to an older revision, is refused and changes nothing.
    for again in [revs[3], revs[1]] {
        let err = store.compact(again).await.unwrap_err();
        assert!(
            matches!(err, StoreError::Compacted { requested, compacted } if requested == again && compacted == revs[3]),
            "{err:?}"
        );
    }
    let err = store.compact(revs[4] + 1).await.unwrap_err();
    assert!(matches!(err, StoreError::FutureRevision { .. }), "{err:?}");
    assert_eq!(store.revisions().await.unwrap(), (revs[4], revs[3]));

    let old = store
        .range(RangeRequest {
            revision: revs[1],
            ..RangeRequest::key("/c/k")
        })
        .await
        .unwrap_err();
    assert!(
        matches!(old, StoreError::Compacted { requested, compacted } if requested == revs[1] && compacted == revs[3]),
        "{old:?}"
    );
    let at = store
        .range(RangeRequest {
            revision: revs[3],
            ..RangeRequest::key("/c/k")
        })
        .await
        .unwrap();
    assert_eq!(at.kvs[0].value, Bytes::from_static(b"3"));

    for after in [0, revs[1], revs[3] - 1] {
        let err = store.watch("/c/", after).await.err().expect("compacted");
        assert!(
            matches!(err, StoreError::Compacted { requested, compacted } if requested == after && compacted == revs[3]),
            "watch after {after}: {err:?}"
        );
    }
    let mut ok = store.watch("/c/", revs[3]).await.unwrap();
    assert_eq!(next_batch(&mut ok).await[0].kv.mod_revision, revs[4]);

    // A second client finds the compaction done by the first.
    let other = EtcdStore::connect(&[_etcd.endpoint()]).await.unwrap();
    assert_eq!(other.revisions().await.unwrap(), (revs[4], revs[3]));
}

#[tokio::test]
async fn acknowledged_writes_survive_kill_9() {
    let Some((mut etcd, store)) = start().await else {
        return;
    };
    let (current, _) = store.revisions().await.unwrap();
    let mut watch = store.watch("/durable/", current).await.unwrap();
    // A writer keeps writing while etcd is killed; every write it was told succeeded must
    // be there after the restart.
    let writer = tokio::spawn({
        let store = store.clone();
        async move {
            let mut acked = Vec::new();
            for i in 0..10_000 {
                let key = format!("/durable/{i:05}");
                match store.create(&key, Bytes::from(format!("v{i}"))).await {
                    Ok(resp) if resp.succeeded => acked.push((key, resp.revision)),
                    Ok(resp) => panic!("create {key} conflicted: {resp:?}"),
                    Err(_) => break,
                }
            }
            acked
        }
    });
    // Let some writes land, then crash etcd under the writer.
    loop {
        let n = store
            .range(RangeRequest {
                count_only: true,
                ..RangeRequest::prefix("/durable/")
            })
            .await
            .unwrap()
            .count;
        if n >= 50 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    etcd.kill_9().unwrap();
    let acked = tokio::time::timeout(Duration::from_secs(60), writer)
        .await
        .expect("writer stops after etcd died")
        .unwrap();
    assert!(acked.len() >= 50, "{} writes acknowledged", acked.len());
    assert!(acked.len() < 10_000, "the kill interrupted the writer");

    // A watch on the dead etcd ends with an error rather than going quiet.
    let end = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            match watch.next().await {
                Some(Ok(_)) => continue,
                other => return other,
            }
        }
    })
    .await
    .expect("watch ends within 30 s of the crash");
    assert!(matches!(end, Some(Err(StoreError::Backend(_)))), "{end:?}");
    assert!(watch.next().await.is_none(), "the error ends the stream");

    etcd.restart().unwrap();
    let store = EtcdStore::connect(&[etcd.endpoint()]).await.unwrap();
    for (i, (key, revision)) in acked.iter().enumerate() {
        let kv = store
            .get(key)
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("acknowledged write {key} lost"));
        assert_eq!(kv.value, Bytes::from(format!("v{i}")));
        assert_eq!(kv.mod_revision, *revision);
    }
    // The store goes on from where it was.
    let after = store.create("/after", Bytes::new()).await.unwrap();
    assert!(after.revision > acked.last().unwrap().1);
}
