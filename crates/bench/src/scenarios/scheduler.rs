//! `scheduler`: upstream scheduler_perf's SchedulingBasic 5000Nodes_10000Pods shape, with the
//! API server and store in the loop. Simulated nodes join; pods placed first are not
//! measured; then pods are created and a watch sees each one bound (`spec.nodeName` set).
//! Throughput is sampled each second, as scheduler_perf's throughput collector does.

use std::time::{Duration, Instant};

use crate::figure::{Figure, Target, Unit};
use crate::scenarios::api::create_namespace;
use crate::scenarios::bulk::{Cluster, PodState, WRITERS, Watch, create_pods};
use crate::{BenchError, Options};

const SCENARIO: &str = "scheduler";
const NAMESPACE: &str = "bench-scheduler";
/// scheduler_perf's CI threshold for SchedulingBasic 5000Nodes_10000Pods
/// (`test/integration/scheduler_perf/misc/performance-config.yaml`); published, not measured.
const UPSTREAM_THRESHOLD: f64 = 680.0;
const TARGET: f64 = 5_000.0;

/// Pods bound per second in consecutive one-second windows from the first bind to the last; a
/// last partial window counts if it is at least 200 ms long (or is the only one), scaled to
/// its length.
pub(crate) fn throughput_samples(mut binds: Vec<Instant>) -> Vec<f64> {
    binds.sort_unstable();
    let (Some(&first), Some(&last)) = (binds.first(), binds.last()) else {
        return Vec::new();
    };
    let span = last.duration_since(first).as_secs_f64();
    let full = span.floor() as usize;
    let mut counts = vec![0usize; full + 1];
    for bind in &binds {
        let at = bind.duration_since(first).as_secs_f64();
        counts[(at.floor() as usize).min(full)] += 1;
    }
    let rest = span - full as f64;
    let mut samples: Vec<f64> = counts[..full].iter().map(|c| *c as f64).collect();
    if full == 0 {
        samples.push(counts[0] as f64 / rest.max(0.001));
    } else if rest >= 0.2 {
        samples.push(counts[full] as f64 / rest);
    } else if let Some(previous) = samples.last_mut() {
        // Too short to be a rate of its own: these binds belong to the window before.
        *previous += counts[full] as f64;
    }
    samples
}

/// The nearest-rank percentile of ascending `sorted` (0 when empty).
fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

pub async fn run(options: &Options) -> Result<Vec<Figure>, BenchError> {
    let (nodes, initial, measured, limit) = if options.quick {
        (100, 50, 200, Duration::from_secs(60))
    } else {
        (5_000, 1_000, 10_000, Duration::from_secs(300))
    };
    let mut cluster = Cluster::start(options, nodes, limit).await?;
    let mut conns = cluster.connections(WRITERS).await?;
    create_namespace(&mut conns[0], NAMESPACE).await?;
    let watch = Watch::start(
        cluster.client.connect().await?,
        &format!("/api/v1/namespaces/{NAMESPACE}/pods?watch=1"),
        PodState::default(),
        PodState::apply,
    )
    .await?;

    // The pods already placed: scheduled, not measured.
    let began = Instant::now();
    create_pods(&mut conns, NAMESPACE, "init-", initial).await?;
    watch
        .wait_until(&mut cluster.sim, began + limit, "initial pods bound", |s| {
            (s.bound.len() >= initial)
                .then_some(())
                .ok_or(s.bound.len())
        })
        .await?;

    let began = Instant::now();
    create_pods(&mut conns, NAMESPACE, "pod-", measured).await?;
    let binds = watch
        .wait_until(&mut cluster.sim, began + limit, "pods bound", |s| {
            let binds: Vec<Instant> = s
                .bound
                .iter()
                .filter(|(name, _)| name.starts_with("pod-"))
                .map(|(_, at)| *at)
                .collect();
            if binds.len() >= measured {
                Ok(binds)
            } else {
                Err(binds.len())
            }
        })
        .await?;
    let last = binds.iter().max().copied().unwrap_or(began);
    let overall = measured as f64 / last.duration_since(began).as_secs_f64().max(0.001);
    let running = watch.with(|s| s.running.len());
    drop(watch);
    drop(conns);
    drop(cluster);

    let mut samples = throughput_samples(binds);
    let average = samples.iter().sum::<f64>() / samples.len().max(1) as f64;
    samples.sort_unstable_by(f64::total_cmp);
    let shape = format!("{nodes} nodes, {initial} pods placed, {measured} measured");
    let mut figures = vec![
        Figure::new(
            SCENARIO,
            "scheduler.throughput_avg",
            format!(
                "SchedulingBasic ({shape}): pods bound/s, average of {} one-second samples",
                samples.len()
            ),
            average,
            Unit::PerSecond,
        )
        .published_reference("scheduler_perf CI threshold", UPSTREAM_THRESHOLD)
        .target(Target::AtLeast(TARGET)),
    ];
    for p in [50.0, 90.0, 99.0] {
        figures.push(Figure::new(
            SCENARIO,
            &format!("scheduler.throughput_p{p}"),
            format!("SchedulingBasic ({shape}): pods bound/s, p{p} of the one-second samples"),
            percentile(&samples, p),
            Unit::PerSecond,
        ));
    }
    figures.push(Figure::new(
        SCENARIO,
        "scheduler.create_to_bound_per_s",
        format!(
            "{measured} pods from the first create ({WRITERS} clients) to the last bound, per second \
             ({running} Running by then)"
        ),
        overall,
        Unit::PerSecond,
    ));
    Ok(figures)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(start: Instant, ms: &[u64]) -> Vec<Instant> {
        ms.iter()
            .map(|ms| start + Duration::from_millis(*ms))
            .collect()
    }

    #[test]
    fn samples_per_second_window() {
        let t = Instant::now();
        // 3 binds in the first second, 1 in the second, 2 in a 500 ms tail.
        let s = throughput_samples(at(t, &[0, 100, 900, 1500, 2200, 2500]));
        assert_eq!(s, vec![3.0, 1.0, 4.0]);
        // A tail shorter than 200 ms joins the window before.
        let s = throughput_samples(at(t, &[0, 500, 1100]));
        assert_eq!(s, vec![3.0]);
        // Everything within one second: one sample, scaled.
        let s = throughput_samples(at(t, &[0, 250, 500]));
        assert_eq!(s, vec![6.0]);
        assert!(throughput_samples(Vec::new()).is_empty());
    }

    #[test]
    fn nearest_rank() {
        let sorted = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0];
        assert_eq!(percentile(&sorted, 50.0), 5.0);
        assert_eq!(percentile(&sorted, 90.0), 9.0);
        assert_eq!(percentile(&sorted, 99.0), 10.0);
        assert_eq!(percentile(&[], 50.0), 0.0);
    }
}
