//! `store`: the embedded store against Debian's etcd, both fsyncing every acknowledged write.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use store::{Compare, Op, Store, StoreExt};
use tokio::sync::oneshot;

use crate::figure::{Figure, Target, Unit};
use crate::stats::{Budget, Samples, timed_loop};
use crate::{BenchError, Options};

const SCENARIO: &str = "store";
const VALUE_BYTES: usize = 256;

/// The embedded store with fsync on, in a temporary directory removed on drop.
pub struct EmbeddedStore {
    pub store: Arc<dyn Store>,
    _dir: tempfile::TempDir,
}

impl EmbeddedStore {
    pub fn open() -> Result<Self, BenchError> {
        let dir = tempfile::Builder::new()
            .prefix("rkube-bench-store-")
            .tempdir()
            .map_err(|source| BenchError::Io {
                context: "create a temporary directory for the store".into(),
                source,
            })?;
        let options = store::sqlite::SqliteOptions {
            fsync: true,
            ..Default::default()
        };
        let store = store::sqlite::SqliteStore::open(&dir.path().join("state.db"), options)
            .map_err(|source| BenchError::Store {
                backend: "sqlite",
                source,
            })?;
        Ok(Self {
            store: Arc::new(store),
            _dir: dir,
        })
    }
}

fn store_error(store: &dyn Store) -> impl Fn(store::StoreError) -> BenchError + '_ {
    move |source| BenchError::Store {
        backend: store.backend(),
        source,
    }
}

/// Creates distinct keys under `prefix` from `workers` concurrent writers; returns the
/// latencies and the writes per second.
pub async fn create_load(
    store: &dyn Store,
    workers: usize,
    prefix: &str,
    value: Bytes,
    budget: Budget,
) -> Result<(Samples, f64), BenchError> {
    let start = Instant::now();
    let runs = (0..workers).map(|w| {
        let value = value.clone();
        timed_loop(start, budget, async move |i| {
            let key = format!("{prefix}/{w}/{i}");
            let response = store
                .create(&key, value.clone())
                .await
                .map_err(store_error(store))?;
            if !response.succeeded {
                return Err(BenchError::Scenario(format!(
                    "create {key}: key already exists"
                )));
            }
            Ok(())
        })
    });
    let mut all = Samples::new();
    for samples in futures::future::try_join_all(runs).await? {
        all.extend(samples);
    }
    let rate = all.len() as f64 / start.elapsed().as_secs_f64();
    Ok((all, rate))
}

/// Reads one existing key per worker, over and over.
pub async fn get_load(
    store: &dyn Store,
    workers: usize,
    prefix: &str,
    value: Bytes,
    budget: Budget,
) -> Result<Samples, BenchError> {
    for w in 0..workers {
        store
            .txn(
                vec![],
                vec![Op::Put {
                    key: format!("{prefix}/{w}"),
                    value: value.clone(),
                }],
            )
            .await
            .map_err(store_error(store))?;
    }
    let start = Instant::now();
    let runs = (0..workers).map(|w| {
        timed_loop(start, budget, async move |_| {
            let key = format!("{prefix}/{w}");
            match store.get(&key).await.map_err(store_error(store))? {
                Some(_) => Ok(()),
                None => Err(BenchError::Scenario(format!("get {key}: not found"))),
            }
        })
    });
    let mut all = Samples::new();
    for samples in futures::future::try_join_all(runs).await? {
        all.extend(samples);
    }
    Ok(all)
}

/// Compare-and-swap updates of one key per worker, as the API server does for an update.
pub async fn update_load(
    store: &dyn Store,
    workers: usize,
    prefix: &str,
    value: Bytes,
    budget: Budget,
) -> Result<Samples, BenchError> {
    let start = Instant::now();
    let runs = (0..workers).map(|w| {
        let value = value.clone();
        async move {
            let key = format!("{prefix}/{w}");
            let mut revision = store
                .create(&key, value.clone())
                .await
                .map_err(store_error(store))?
                .revision;
            timed_loop(start, budget, async |_| {
                let response = store
                    .txn(
                        vec![Compare {
                            key: key.clone(),
                            mod_revision: revision,
                        }],
                        vec![Op::Put {
                            key: key.clone(),
                            value: value.clone(),
                        }],
                    )
                    .await
                    .map_err(store_error(store))?;
                if !response.succeeded {
                    return Err(BenchError::Scenario(format!("update {key}: conflict")));
                }
                revision = response.revision;
                Ok(())
            })
            .await
        }
    });
    let mut all = Samples::new();
    for samples in futures::future::try_join_all(runs).await? {
        all.extend(samples);
    }
    Ok(all)
}

/// From just before a create until a watcher of the prefix receives its event, with
/// `workers` concurrent writers (each waits for its own event before the next write).
pub async fn watch_load(
    store: &dyn Store,
    workers: usize,
    prefix: &str,
    value: Bytes,
    budget: Budget,
) -> Result<Samples, BenchError> {
    let (current, _) = store.revisions().await.map_err(store_error(store))?;
    let mut stream = store
        .watch(prefix, current)
        .await
        .map_err(store_error(store))?;
    let waiting: Arc<Mutex<HashMap<String, oneshot::Sender<Instant>>>> = Arc::default();
    let watcher = {
        let waiting = waiting.clone();
        tokio::spawn(async move {
            while let Some(Ok(batch)) = stream.next().await {
                let seen = Instant::now();
                let mut waiting = waiting.lock().unwrap_or_else(|e| e.into_inner());
                for event in batch {
                    if let Some(tx) = waiting.remove(&event.kv.key) {
                        let _ = tx.send(seen);
                    }
                }
            }
        })
    };
    let start = Instant::now();
    let runs = (0..workers).map(|w| {
        let value = value.clone();
        let waiting = waiting.clone();
        timed_loop(start, budget, async move |i| {
            let key = format!("{prefix}/{w}/{i}");
            let (tx, rx) = oneshot::channel();
            waiting
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(key.clone(), tx);
            store
                .create(&key, value.clone())
                .await
                .map_err(store_error(store))?;
            tokio::time::timeout(Duration::from_secs(10), rx)
                .await
                .map_err(|_| {
                    BenchError::Scenario(format!(
                        "watch of {prefix}: no event for {key} within 10 s"
                    ))
                })?
                .map_err(|_| BenchError::Scenario(format!("watch of {prefix} ended")))?;
            Ok(())
        })
    });
    let result = futures::future::try_join_all(runs).await;
    watcher.abort();
    let mut all = Samples::new();
    for samples in result? {
        all.extend(samples);
    }
    Ok(all)
}

/// What one backend did.
struct Measured {
    label: String,
    rate: [f64; 2],
    writes: [Samples; 2],
    watch: Samples,
}

const WRITERS: [usize; 2] = [1, 16];

/// One round of every load on one backend: a third of the whole run's time and count.
async fn measure_round(
    store: &dyn Store,
    label: String,
    options: &Options,
    round: usize,
) -> Result<Measured, BenchError> {
    let value = Bytes::from(vec![b'v'; VALUE_BYTES]);
    let (time, count) = if options.quick {
        (Duration::from_millis(500) / ROUNDS as u32, 2_000 / ROUNDS)
    } else {
        (Duration::from_secs(10) / ROUNDS as u32, 200_000 / ROUNDS)
    };
    let mut rate = [0.0; 2];
    let mut writes = [Samples::new(), Samples::new()];
    for (n, writers) in WRITERS.iter().enumerate() {
        let prefix = format!("/bench/writes-{writers}-{round}");
        let (samples, r) = create_load(
            store,
            *writers,
            &prefix,
            value.clone(),
            Budget::new(count, time),
        )
        .await?;
        rate[n] = r;
        writes[n] = samples;
    }
    let events = if options.quick { 20 } else { 1_000 / ROUNDS };
    let watch = watch_load(
        store,
        1,
        &format!("/bench/watch-{round}"),
        value,
        Budget::new(events, time.max(Duration::from_secs(1))),
    )
    .await?;
    Ok(Measured {
        label,
        rate,
        writes,
        watch,
    })
}

/// Rounds each backend gets, alternating, so that a burst of load from elsewhere on the
/// machine lands on both sides rather than on one.
const ROUNDS: usize = 3;

impl Measured {
    fn absorb(&mut self, round: Measured) {
        for n in 0..WRITERS.len() {
            self.rate[n] += round.rate[n] / ROUNDS as f64;
        }
        for (mine, theirs) in self.writes.iter_mut().zip(round.writes) {
            mine.extend(theirs);
        }
        self.watch.extend(round.watch);
    }

    fn empty(label: String) -> Measured {
        Measured {
            label,
            rate: [0.0; 2],
            writes: [Samples::new(), Samples::new()],
            watch: Samples::new(),
        }
    }
}

pub async fn run(options: &Options) -> Result<Vec<Figure>, BenchError> {
    let embedded = EmbeddedStore::open()?;
    let reference = start_etcd().await?;
    let mut ours = Measured::empty("embedded".into());
    let mut etcd = reference
        .as_ref()
        .map(|(_, _, version)| Measured::empty(format!("etcd {version}")));
    for round in 0..ROUNDS {
        let label = format!("embedded-{round}");
        ours.absorb(measure_round(embedded.store.as_ref(), label, options, round).await?);
        if let (Some((_, client, _)), Some(etcd)) = (&reference, etcd.as_mut()) {
            etcd.absorb(measure_round(client, format!("etcd-{round}"), options, round).await?);
        }
    }
    drop(embedded);
    drop(reference);

    let mut figures = Vec::new();
    for (n, writers) in WRITERS.iter().enumerate() {
        let mut rate = Figure::new(
            SCENARIO,
            &format!("store.embedded.writes_per_s.{writers}"),
            format!("embedded store writes/s, {writers} writer(s), {VALUE_BYTES} B values, fsync"),
            ours.rate[n],
            Unit::PerSecond,
        );
        if let Some(etcd) = &etcd {
            rate = rate.reference(etcd.label.clone(), etcd.rate[n]);
        }
        if *writers == 16 {
            rate = rate.target(Target::RatioAtLeast(5.0));
        }
        figures.push(rate);
        for p in [50.0, 99.0] {
            let mut f = Figure::new(
                SCENARIO,
                &format!("store.embedded.write_p{p}_ms.{writers}"),
                format!("embedded store write latency p{p}, {writers} writer(s)"),
                ours.writes[n].percentile_ms(p),
                Unit::Millis,
            );
            if let Some(etcd) = etcd.as_mut() {
                f = f.reference(etcd.label.clone(), etcd.writes[n].percentile_ms(p));
            }
            figures.push(f);
        }
    }
    for p in [50.0, 99.0] {
        let mut f = Figure::new(
            SCENARIO,
            &format!("store.embedded.watch_p{p}_ms"),
            format!("embedded store watch latency p{p} (write until a watcher sees it)"),
            ours.watch.percentile_ms(p),
            Unit::Millis,
        );
        if let Some(etcd) = etcd.as_mut() {
            f = f.reference(etcd.label.clone(), etcd.watch.percentile_ms(p));
        }
        figures.push(f);
    }
    Ok(figures)
}

/// Starts etcd on loopback, or `None` when it is not installed and `RKUBE_SKIP_ETCD=1`
/// allows going without (the figures then have no reference).
async fn start_etcd()
-> Result<Option<(testing::EtcdProcess, store::etcd::EtcdStore, String)>, BenchError> {
    let started = tokio::task::spawn_blocking(testing::EtcdProcess::start)
        .await
        .map_err(|e| BenchError::Scenario(format!("start etcd: {e}")))?;
    let process = match started {
        Ok(process) => process,
        Err(err @ testing::Error::EtcdNotInstalled { .. }) if testing::skip_etcd() => {
            eprintln!("store: no etcd reference: {err}");
            return Ok(None);
        }
        Err(err) => return Err(err.into()),
    };
    let client = store::etcd::EtcdStore::connect(&[process.endpoint()])
        .await
        .map_err(|source| BenchError::Store {
            backend: "etcd",
            source,
        })?;
    Ok(Some((process, client, etcd_version())))
}

/// `3.4.23` from `etcd --version`, or `3.4` if it cannot be read.
fn etcd_version() -> String {
    std::process::Command::new(testing::ETCD_BINARY)
        .arg("--version")
        .output()
        .ok()
        .and_then(|out| {
            let text = String::from_utf8_lossy(&out.stdout).into_owned();
            text.lines().find_map(|l| {
                l.strip_prefix("etcd Version:")
                    .map(|v| v.trim().to_string())
            })
        })
        .unwrap_or_else(|| "3.4".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn loads_on_the_embedded_store() {
        let embedded = EmbeddedStore::open().unwrap();
        let store = embedded.store.as_ref();
        let value = Bytes::from_static(b"value");
        let budget = Budget::new(5, Duration::from_secs(10));
        let (writes, rate) = create_load(store, 2, "/t/c", value.clone(), budget)
            .await
            .unwrap();
        assert_eq!(writes.len(), 10);
        assert!(rate > 0.0);
        assert_eq!(
            store
                .range(store::RangeRequest::prefix("/t/c/"))
                .await
                .unwrap()
                .count,
            10
        );

        assert_eq!(
            get_load(store, 2, "/t/g", value.clone(), budget)
                .await
                .unwrap()
                .len(),
            10
        );
        assert_eq!(
            update_load(store, 2, "/t/u", value.clone(), budget)
                .await
                .unwrap()
                .len(),
            10
        );
        let updated = store.get("/t/u/0").await.unwrap().unwrap();
        assert!(updated.mod_revision > updated.create_revision);
        assert_eq!(
            watch_load(store, 2, "/t/w", value, budget)
                .await
                .unwrap()
                .len(),
            10
        );
    }
}
