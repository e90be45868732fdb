//! `startup`: how fast the server is ready on a warm data dir, what it holds in memory when
//! idle, and how large the binary is.

use std::time::{Duration, Instant};

use crate::figure::{Figure, MIB, Target, Unit};
use crate::process::ServerProcess;
use crate::stats::Samples;
use crate::{BenchError, Options};

const SCENARIO: &str = "startup";

/// k3s's published figures, not measured here: the minimum RAM of a k3s server with a
/// workload on kine/SQLite (docs.k3s.io, "Resource Profiling", the k3s 1.19 profile) and the
/// approximate size of the k3s binary.
const K3S_SERVER_RSS: f64 = 768.0 * MIB;
const K3S_BINARY: f64 = 80.0 * MIB;

pub async fn run(options: &Options) -> Result<Vec<Figure>, BenchError> {
    let dir = tempfile::Builder::new()
        .prefix("rkube-bench-startup-")
        .tempdir()
        .map_err(|source| BenchError::Io {
            context: "create a temporary directory for rkube server".into(),
            source,
        })?;
    let data = dir.path().join("data");
    let port = testing::free_port();

    // The first start creates the certificates and the database: that is the cold start.
    let began = Instant::now();
    let (mut server, client) = ServerProcess::start(&options.binary, &data, port).await?;
    let cold_ms = began.elapsed().as_secs_f64() * 1000.0;
    server.stop()?;

    let runs = if options.quick { 2 } else { 7 };
    let mut warm = Samples::new();
    let mut idle_rss = 0;
    for run in 0..runs {
        let began = Instant::now();
        let mut server = ServerProcess::spawn(&options.binary, &data, port)?;
        server.wait_ready(Some(client.clone())).await?;
        warm.push(began.elapsed());
        if run + 1 == runs {
            // Let start-up work (bootstrap objects, the watch cache) settle before measuring.
            let settle = if options.quick {
                Duration::from_millis(300)
            } else {
                Duration::from_secs(3)
            };
            tokio::time::sleep(settle).await;
            idle_rss = server.rss_bytes()?;
        }
        server.stop()?;
    }

    let binary_bytes = std::fs::metadata(&options.binary)
        .map_err(|source| BenchError::Io {
            context: format!("size of {}", options.binary.display()),
            source,
        })?
        .len();

    Ok(vec![
        Figure::new(
            SCENARIO,
            "startup.warm_ready_ms",
            format!("server start to /readyz OK, warm data dir (median of {runs})"),
            warm.median_ms(),
            Unit::Millis,
        )
        .target(Target::AtMost(300.0)),
        Figure::new(
            SCENARIO,
            "startup.cold_ready_ms",
            "server start to /readyz OK, empty data dir (certificates generated)",
            cold_ms,
            Unit::Millis,
        ),
        Figure::new(
            SCENARIO,
            "startup.idle_rss_bytes",
            "idle RSS of `rkube server --disable-agent`",
            idle_rss as f64,
            Unit::Bytes,
        )
        .published_reference("k3s server min RAM (published)", K3S_SERVER_RSS)
        .target(Target::AtMost(40.0 * MIB)),
        Figure::new(
            SCENARIO,
            "startup.binary_bytes",
            format!("size of {}", options.binary.display()),
            binary_bytes as f64,
            Unit::Bytes,
        )
        .published_reference("k3s binary (published)", K3S_BINARY),
    ])
}
