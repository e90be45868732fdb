//! The embedded store: the shared conformance suite, plus durability, file size and full disk.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use store::sqlite::{SqliteOptions, SqliteStore};
use store::{RangeRequest, Store, StoreError, StoreExt};
use tempfile::TempDir;

async fn make() -> (SqliteStore, TempDir) {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = SqliteStore::open(&dir.path().join("store.db"), SqliteOptions::default())
        .expect("open store");
    (store, dir)
}

store::conformance_tests!(make());

#[tokio::test]
async fn run_all_on_one_store() {
    let (store, _dir) = make().await;
    store::conformance::run_all(&store).await;
}

#[tokio::test]
async fn reopen_keeps_everything() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.db");
    let (revision, compacted);
    {
        let store = SqliteStore::open(&path, SqliteOptions::default()).unwrap();
        for i in 0..20 {
            store
                .create(&format!("/k/{i:02}"), Bytes::from(format!("v{i}")))
                .await
                .unwrap();
        }
        store
            .txn(
                vec![],
                vec![store::Op::Delete {
                    key: "/k/00".into(),
                }],
            )
            .await
            .unwrap();
        store.compact(5).await.unwrap();
        (revision, compacted) = store.revisions().await.unwrap();
    }
    let store = SqliteStore::open(&path, SqliteOptions::default()).unwrap();
    assert_eq!(store.revisions().await.unwrap(), (revision, compacted));
    let resp = store.range(RangeRequest::prefix("/k/")).await.unwrap();
    assert_eq!(resp.count, 19);
    assert_eq!(resp.kvs[0].key, "/k/01");
    assert_eq!(resp.kvs[0].value.as_ref(), b"v1");
    let next = store
        .create("/k/new", Bytes::from_static(b"x"))
        .await
        .unwrap();
    assert_eq!(
        next.revision,
        revision + 1,
        "revisions continue after a restart"
    );
}

#[tokio::test]
async fn second_open_of_one_database_fails() {
    let (store, dir) = make().await;
    let second = SqliteStore::open(&dir.path().join("store.db"), SqliteOptions::default());
    assert!(
        matches!(&second, Err(StoreError::Backend(msg)) if msg.contains("in use")),
        "a second writer must be refused"
    );
    drop(store);
}

const CHILD_ENV: &str = "RKUBE_STORE_SIGKILL_CHILD";

/// Not a test on its own: the child of `acknowledged_writes_survive_sigkill`.
#[tokio::test]
async fn sigkill_child() {
    let Ok(path) = std::env::var(CHILD_ENV) else {
        return;
    };
    let store = SqliteStore::open(Path::new(&path), SqliteOptions::default()).unwrap();
    // Several writers at once, so group commit is what gets killed mid-flight.
    let store = std::sync::Arc::new(store);
    let tasks: Vec<_> = (0..8)
        .map(|w| {
            let store = store.clone();
            tokio::spawn(async move {
                for i in 0.. {
                    let key = format!("/crash/{w}-{i}");
                    let resp = store.create(&key, Bytes::from(key.clone())).await.unwrap();
                    let mut out = std::io::stdout().lock();
                    writeln!(out, "ACK {key} {}", resp.revision).unwrap();
                    out.flush().unwrap();
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
}

/// Kills the child when the test ends, however it ends.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn acknowledged_writes_survive_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.db");
    let child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "sigkill_child",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, &path)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start child");
    let mut child = KillOnDrop(child);
    let stdout = child.0.stdout.take().unwrap();
    let mut acked = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    for line in BufReader::new(stdout).lines() {
        let line = line.unwrap();
        if let Some(rest) = line.strip_prefix("ACK ") {
            let (key, rev) = rest.split_once(' ').unwrap();
            acked.push((key.to_string(), rev.parse::<i64>().unwrap()));
            if acked.len() >= 2000 {
                // SIGKILL while writers are mid-flight.
                child.0.kill().unwrap();
                break;
            }
        }
        assert!(Instant::now() < deadline, "child wrote too slowly");
    }
    child.0.wait().unwrap();
    assert!(
        acked.len() >= 2000,
        "child stopped after {} acks",
        acked.len()
    );

    let store = SqliteStore::open(&path, SqliteOptions::default()).unwrap();
    let (current, _) = store.revisions().await.unwrap();
    for (key, rev) in &acked {
        let kv = store
            .get(key)
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("acknowledged key {key} (revision {rev}) was lost"));
        assert_eq!(kv.mod_revision, *rev, "{key}");
        assert_eq!(kv.value.as_ref(), key.as_bytes());
        assert!(*rev <= current);
    }
    // Revisions stay dense across the crash: every revision up to the current one is a key.
    let all = store.range(RangeRequest::prefix("/crash/")).await.unwrap();
    assert_eq!(all.count, current, "every committed revision is one create");
}

fn db_size(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .sum()
}

#[tokio::test]
async fn file_size_stays_bounded_under_overwrites() {
    let dir = tempfile::tempdir().unwrap();
    let options = SqliteOptions {
        fsync: false,
        ..SqliteOptions::default()
    };
    let store = SqliteStore::open(&dir.path().join("store.db"), options).unwrap();
    let value = Bytes::from(vec![b'x'; 4096]);
    let mut sizes = Vec::new();
    for round in 0..10 {
        for i in 0..200 {
            store
                .txn(
                    vec![],
                    vec![store::Op::Put {
                        key: format!("/size/{}", i % 50),
                        value: value.clone(),
                    }],
                )
                .await
                .unwrap();
        }
        let (current, _) = store.revisions().await.unwrap();
        store.compact(current).await.unwrap();
        if round >= 1 {
            sizes.push(db_size(dir.path()));
        }
    }
    // 2000 writes of 4 KiB are 8 MB of history; 50 live keys are 200 KB.
    let max = *sizes.iter().max().unwrap();
    assert!(max < 2 << 20, "store files grew to {max} bytes: {sizes:?}");
    assert!(
        sizes.last().unwrap() <= &(sizes[0] + (256 << 10)),
        "store files keep growing: {sizes:?}"
    );
    assert_eq!(
        store
            .range(RangeRequest::prefix("/size/"))
            .await
            .unwrap()
            .count,
        50
    );
}

#[tokio::test]
async fn automatic_compaction_keeps_recent_history() {
    let dir = tempfile::tempdir().unwrap();
    let options = SqliteOptions {
        fsync: false,
        compaction_interval: Duration::from_millis(100),
        compaction_keep: 10,
        ..SqliteOptions::default()
    };
    let store = SqliteStore::open(&dir.path().join("store.db"), options).unwrap();
    for i in 0..50 {
        store
            .txn(
                vec![],
                vec![store::Op::Put {
                    key: "/auto/k".into(),
                    value: Bytes::from(format!("{i}")),
                }],
            )
            .await
            .unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (current, compacted) = store.revisions().await.unwrap();
        assert!(compacted <= current - 10, "kept fewer than 10 revisions");
        // Writes have stopped, so the next run compacts to exactly 10 behind.
        if compacted == current - 10 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no automatic compaction happened"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (current, compacted) = store.revisions().await.unwrap();
    let old = store
        .range(RangeRequest {
            revision: compacted - 1,
            ..RangeRequest::key("/auto/k")
        })
        .await;
    assert!(matches!(old, Err(StoreError::Compacted { .. })), "{old:?}");
    let recent = store
        .range(RangeRequest {
            revision: current - 5,
            ..RangeRequest::key("/auto/k")
        })
        .await
        .unwrap();
    assert_eq!(recent.kvs[0].mod_revision, current - 5);
}

#[tokio::test]
async fn full_disk_fails_cleanly_and_store_stays_consistent() {
    let dir = tempfile::tempdir().unwrap();
    let options = SqliteOptions {
        fsync: false,
        quota_bytes: Some(512 << 10),
        ..SqliteOptions::default()
    };
    let path = dir.path().join("store.db");
    let store = SqliteStore::open(&path, options.clone()).unwrap();
    let value = Bytes::from(vec![b'v'; 8 << 10]);
    let mut written = Vec::new();
    let mut full = None;
    for i in 0..1000 {
        let key = format!("/full/{i:04}");
        match store.create(&key, value.clone()).await {
            Ok(resp) => written.push((key, resp.revision)),
            Err(e) => {
                full = Some(e);
                break;
            }
        }
    }
    let Some(StoreError::NoSpace { path: reported }) = full else {
        panic!("expected NoSpace, got {full:?}");
    };
    assert!(reported.contains("store.db"), "{reported}");
    let (current, _) = store.revisions().await.unwrap();
    assert_eq!(
        current,
        written.last().unwrap().1,
        "the failed write took no revision"
    );

    let resp = store.range(RangeRequest::prefix("/full/")).await.unwrap();
    assert_eq!(
        resp.count as usize,
        written.len(),
        "nothing of the failed write is visible"
    );
    for (kv, (key, rev)) in resp.kvs.iter().zip(&written) {
        assert_eq!((&kv.key, kv.mod_revision), (key, *rev));
    }
    let again = store.create("/full/again", value.clone()).await;
    assert!(
        matches!(again, Err(StoreError::NoSpace { .. })),
        "{again:?}"
    );
    drop(store);

    // With room again (a larger quota), the same database takes writes and kept everything.
    let options = SqliteOptions {
        quota_bytes: Some(8 << 20),
        ..options
    };
    let store = SqliteStore::open(&path, options).unwrap();
    assert_eq!(store.revisions().await.unwrap().0, current);
    let resp = store.range(RangeRequest::prefix("/full/")).await.unwrap();
    assert_eq!(resp.count as usize, written.len());
    let after = store.create("/full/after", value).await.unwrap();
    assert_eq!(after.revision, current + 1);
}

/// Collects exactly `n` events from a watch, failing on errors or a stall.
async fn collect(stream: &mut store::WatchStream, n: usize) -> Vec<store::Event> {
    use futures::StreamExt;
    let mut events = Vec::new();
    while events.len() < n {
        let batch = tokio::time::timeout(Duration::from_secs(20), stream.next())
            .await
            .unwrap_or_else(|_| panic!("stalled after {} of {n} events", events.len()))
            .expect("stream ended")
            .expect("watch error");
        events.extend(batch);
    }
    assert_eq!(events.len(), n);
    events
}

#[tokio::test]
async fn slow_watcher_catches_up_from_the_database() {
    let (store, _dir) = make().await;
    let (start, _) = store.revisions().await.unwrap();
    let mut stream = store.watch("/slow/", start).await.unwrap();
    // Far more committed groups than the live channel holds, while nobody reads the stream.
    let mut expected = Vec::new();
    for i in 0..700 {
        let resp = store
            .create(&format!("/slow/{i:04}"), Bytes::from_static(b"v"))
            .await
            .unwrap();
        expected.push(resp.revision);
    }
    let events = collect(&mut stream, expected.len()).await;
    let got: Vec<i64> = events.iter().map(|e| e.kv.mod_revision).collect();
    assert_eq!(
        got, expected,
        "a lagging watcher gets every event exactly once"
    );
}

#[tokio::test]
async fn long_replay_pages_without_splitting_revisions() {
    let dir = tempfile::tempdir().unwrap();
    let options = SqliteOptions {
        fsync: false,
        ..SqliteOptions::default()
    };
    let store = SqliteStore::open(&dir.path().join("store.db"), options).unwrap();
    let mut expected = Vec::new();
    for i in 0..1500 {
        let key = format!("/replay/a{i:04}");
        let resp = store.create(&key, Bytes::from_static(b"v")).await.unwrap();
        expected.push((key, resp.revision));
    }
    // One revision larger than a replay page.
    let ops: Vec<_> = (0..1200)
        .map(|i| store::Op::Put {
            key: format!("/replay/b{i:04}"),
            value: Bytes::from_static(b"v"),
        })
        .collect();
    let keys: Vec<String> = ops
        .iter()
        .map(|op| match op {
            store::Op::Put { key, .. } => key.clone(),
            store::Op::Delete { key } => key.clone(),
        })
        .collect();
    let big = store.txn(vec![], ops).await.unwrap().revision;
    expected.extend(keys.into_iter().map(|k| (k, big)));
    let last = store
        .create("/replay/c", Bytes::from_static(b"v"))
        .await
        .unwrap();
    expected.push(("/replay/c".into(), last.revision));

    let mut stream = store.watch("/replay/", 0).await.unwrap();
    let mut got = Vec::new();
    while got.len() < expected.len() {
        use futures::StreamExt;
        let batch = tokio::time::timeout(Duration::from_secs(20), stream.next())
            .await
            .expect("replay stalled")
            .unwrap()
            .unwrap();
        // A batch never ends inside a revision: the next one starts at a new revision.
        if let (Some(prev), Some(first)) = (got.last(), batch.first()) {
            let (_, prev_rev): &(String, i64) = prev;
            assert!(
                first.kv.mod_revision > *prev_rev,
                "a revision was split across batches"
            );
        }
        got.extend(batch.into_iter().map(|e| (e.kv.key, e.kv.mod_revision)));
    }
    assert_eq!(got, expected);
}

#[tokio::test]
async fn database_uses_wal_and_incremental_vacuum() {
    let (store, dir) = make().await;
    store
        .create("/pragma", Bytes::from_static(b"v"))
        .await
        .unwrap();
    let conn = rusqlite::Connection::open(dir.path().join("store.db")).unwrap();
    let mode: String = conn
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .unwrap();
    let auto_vacuum: i64 = conn
        .query_row("PRAGMA auto_vacuum", [], |r| r.get(0))
        .unwrap();
    assert_eq!((mode.as_str(), auto_vacuum), ("wal", 2));
}
