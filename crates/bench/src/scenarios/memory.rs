//! `memory`: many 1 KiB ConfigMaps held by the server, against the bytes they take.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use http::{Method, StatusCode};
use serde_json::json;

use crate::figure::{Figure, Target, Unit};
use crate::scenarios::api::{BenchServer, CLIENTS, create_namespace, to_bytes};
use crate::stats::{Budget, Samples, timed_loop};
use crate::{BenchError, Options};

const SCENARIO: &str = "memory";
const NAMESPACE: &str = "bench-memory";
const DATA_BYTES: usize = 1024;

pub async fn run(options: &Options) -> Result<Vec<Figure>, BenchError> {
    let (objects, limit): (usize, Duration) = if options.quick {
        (1_000, Duration::from_secs(60))
    } else {
        (100_000, Duration::from_secs(900))
    };
    let server = BenchServer::start(options).await?;
    let mut conns = server.connections(CLIENTS).await?;
    create_namespace(&mut conns[0], NAMESPACE).await?;
    let path = format!("/api/v1/namespaces/{NAMESPACE}/configmaps");
    let rss_before = server.process.rss_bytes()?;

    // What the server stores is the object as it returns it (with uid, timestamps, ...).
    let stored = AtomicU64::new(0);
    let per_client = objects.div_ceil(CLIENTS);
    let start = Instant::now();
    let runs = conns.iter_mut().enumerate().map(|(w, conn)| {
        let (path, stored) = (&path, &stored);
        let count = per_client.min(objects.saturating_sub(w * per_client));
        timed_loop(start, Budget::new(count, limit), async move |i| {
            let body = json!({
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": format!("cm-{w}-{i}"), "namespace": NAMESPACE},
                "data": {"payload": "x".repeat(DATA_BYTES)}
            });
            let created = conn
                .expect(
                    Method::POST,
                    path,
                    Some(to_bytes(&body)),
                    StatusCode::CREATED,
                )
                .await?;
            stored.fetch_add(created.len() as u64, Ordering::Relaxed);
            Ok(())
        })
    });
    let mut creates = Samples::new();
    for samples in futures::future::try_join_all(runs).await? {
        creates.extend(samples);
    }
    let rate = creates.len() as f64 / start.elapsed().as_secs_f64();
    let created = creates.len();
    drop(conns);

    // Let the server finish what the writes started (compaction, caches) before measuring.
    let settle = if options.quick {
        Duration::from_millis(300)
    } else {
        Duration::from_secs(5)
    };
    tokio::time::sleep(settle).await;
    let rss = server.process.rss_bytes()? as f64;
    let stored = stored.into_inner() as f64;
    drop(server);

    Ok(vec![
        Figure::new(
            SCENARIO,
            "memory.rss_over_stored",
            format!("server RSS / stored bytes with {created} ConfigMaps of {DATA_BYTES} B"),
            rss / stored.max(1.0),
            Unit::Ratio,
        )
        .target(Target::AtMost(3.0)),
        Figure::new(
            SCENARIO,
            "memory.rss_bytes",
            format!(
                "server RSS with {created} ConfigMaps (idle before: {:.1} MiB)",
                rss_before as f64 / crate::figure::MIB
            ),
            rss,
            Unit::Bytes,
        ),
        Figure::new(
            SCENARIO,
            "memory.stored_bytes",
            format!("bytes of the {created} ConfigMaps as stored"),
            stored,
            Unit::Bytes,
        ),
        Figure::new(
            SCENARIO,
            "memory.creates_per_s",
            format!("ConfigMap creates/s, {CLIENTS} clients"),
            rate,
            Unit::PerSecond,
        ),
    ])
}
