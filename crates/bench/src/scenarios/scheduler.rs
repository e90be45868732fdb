//! `scheduler`: upstream scheduler_perf's SchedulingBasic 5000Nodes_10000Pods shape, with the
//! API server and store in the loop. Simulated nodes join; pods placed first are not
//! measured; then pods are created and a watch sees each one bound (`spec.nodeName` set).
//! Throughput is sampled each second, as scheduler_perf's throughput collector does.
//!
//! As in scheduler_perf, whose nodes are bare Node objects with no kubelet, the nodes run no
//! pods: `rkube sim --no-run-pods` registers the nodes and renews their Leases (so they stay
//! Ready), and bound pods stay Pending. Pods are created during the measurement, as upstream.

use std::time::{Duration, Instant};

use http::{Method, StatusCode};
use serde_json::{Value, json};

use crate::client::Connection;
use crate::figure::{Figure, Target, Unit};
use crate::scenarios::api::{create_namespace, to_bytes};
use crate::scenarios::bulk::{Cluster, PodState, Watch};
use crate::{BenchError, Options};

const SCENARIO: &str = "scheduler";
/// The SchedulingBasic 5000Nodes_10000Pods target.
const TARGET: f64 = 5_000.0;
/// Clients creating pods at once, each on its own keep-alive connection: each create waits
/// for its write to be durable, so a few clients would cap the rate at which pods arrive (and
/// so are scheduled) well below what the scheduler does.
const CREATORS: usize = 96;
/// The zone label scheduler_perf's node templates get (`labelNodePrepareStrategy`).
const ZONE: &str = "topology.kubernetes.io/zone";

/// Which pods a shape creates (scheduler_perf's pod templates).
#[derive(Clone, Copy, Debug, PartialEq)]
enum Template {
    /// `pod-default.yaml`: one container, 100m cpu and 500Mi requested, a container port.
    Default,
    /// `pod-with-node-affinity.yaml`: required node affinity to zone1 or zone2.
    NodeAffinity,
    /// `pod-with-pod-anti-affinity.yaml`: `color: green`, required anti-affinity to green pods
    /// on the same host, in both namespaces.
    PodAntiAffinity,
    /// `pod-with-topology-spreading.yaml`: `color: blue`, maxSkew 5 over zones, DoNotSchedule.
    TopologySpreading,
}

/// One scheduler_perf workload: nodes, pods placed first (not measured), pods measured.
#[derive(Clone, Debug)]
struct Shape {
    /// scheduler_perf's test case and workload name.
    name: &'static str,
    /// The figure ids' prefix.
    id: &'static str,
    nodes: usize,
    initial: usize,
    initial_template: Template,
    measured: usize,
    template: Template,
    /// Zones the nodes are labelled with, round robin.
    zones: &'static [&'static str],
    /// The CI threshold of the upstream workload (pods/s), where it has one.
    threshold: Option<f64>,
    target: Option<f64>,
}

/// The shapes issue 6 names, sized as upstream's performance-config.yaml files
/// (`test/integration/scheduler_perf/{misc,affinity,topology_spreading}`).
fn shapes(quick: bool) -> Vec<Shape> {
    let basic = Shape {
        name: "SchedulingBasic 5000Nodes_10000Pods",
        id: "scheduler",
        nodes: 5_000,
        initial: 1_000,
        initial_template: Template::Default,
        measured: 10_000,
        template: Template::Default,
        zones: &[],
        threshold: Some(680.0),
        target: Some(TARGET),
    };
    let mut all = vec![
        basic.clone(),
        Shape {
            name: "SchedulingBasic 500Nodes",
            id: "scheduler.basic_500",
            nodes: 500,
            initial: 500,
            measured: 1_000,
            threshold: None,
            target: None,
            ..basic.clone()
        },
        Shape {
            name: "SchedulingNodeAffinity 5000Nodes_10000Pods",
            id: "scheduler.node_affinity",
            nodes: 5_000,
            initial: 5_000,
            initial_template: Template::NodeAffinity,
            measured: 10_000,
            template: Template::NodeAffinity,
            zones: &["zone1"],
            threshold: Some(220.0),
            target: None,
        },
        Shape {
            name: "SchedulingPodAntiAffinity 5000Nodes_2000Pods",
            id: "scheduler.pod_anti_affinity",
            nodes: 5_000,
            initial: 1_000,
            initial_template: Template::PodAntiAffinity,
            measured: 2_000,
            template: Template::PodAntiAffinity,
            zones: &[],
            threshold: Some(60.0),
            target: None,
        },
        Shape {
            name: "TopologySpreading 5000Nodes_5000Pods",
            id: "scheduler.topology_spreading",
            nodes: 5_000,
            initial: 5_000,
            initial_template: Template::Default,
            measured: 5_000,
            template: Template::TopologySpreading,
            zones: &["moon-1", "moon-2", "moon-3"],
            threshold: Some(460.0),
            target: None,
        },
    ];
    if quick {
        // Seconds each: that every shape runs, not how fast.
        for shape in &mut all {
            (shape.nodes, shape.initial, shape.measured) = if shape.id == basic.id {
                (100, 50, 200)
            } else {
                (30, 10, 20)
            };
        }
    }
    all
}

/// The namespaces scheduler_perf puts the pods placed first and the measured pods in.
const INITIAL_NAMESPACE: &str = "sched-0";
const MEASURED_NAMESPACE: &str = "sched-1";

/// A pod of `template` (what upstream's template says, with our name and namespace).
fn pod(template: Template, namespace: &str, name: &str) -> Value {
    let mut pod = json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"containers": [{
            "name": "pause",
            "image": "registry.k8s.io/pause:3.10",
            "ports": [{"containerPort": 80}],
            "resources": {
                "limits": {"cpu": "100m", "memory": "500Mi"},
                "requests": {"cpu": "100m", "memory": "500Mi"}
            }
        }]}
    });
    match template {
        Template::Default => {}
        Template::NodeAffinity => {
            pod["spec"]["affinity"] = json!({"nodeAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
                    {"matchExpressions": [{"key": ZONE, "operator": "In", "values": ["zone1", "zone2"]}]}
                ]}
            }});
        }
        Template::PodAntiAffinity => {
            pod["metadata"]["labels"] = json!({"color": "green"});
            pod["spec"]["affinity"] = json!({"podAntiAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": [{
                    "labelSelector": {"matchLabels": {"color": "green"}},
                    "topologyKey": "kubernetes.io/hostname",
                    "namespaces": [MEASURED_NAMESPACE, INITIAL_NAMESPACE]
                }]
            }});
        }
        Template::TopologySpreading => {
            pod["metadata"]["labels"] = json!({"color": "blue"});
            pod["spec"]["topologySpreadConstraints"] = json!([{
                "maxSkew": 5,
                "topologyKey": ZONE,
                "whenUnsatisfiable": "DoNotSchedule",
                "labelSelector": {"matchLabels": {"color": "blue"}}
            }]);
        }
    }
    pod
}

/// Creates pods `{prefix}0` … `{prefix}{count-1}` of `template` from `conns.len()` clients at
/// once, each on its own keep-alive connection.
async fn create_pods(
    conns: &mut [Connection],
    namespace: &str,
    template: Template,
    prefix: &str,
    count: usize,
) -> Result<(), BenchError> {
    let path = format!("/api/v1/namespaces/{namespace}/pods");
    let writers = conns.len();
    let runs = conns.iter_mut().enumerate().map(|(w, conn)| {
        let path = &path;
        async move {
            for i in (w..count).step_by(writers) {
                let body = pod(template, namespace, &format!("{prefix}{i}"));
                conn.expect(
                    Method::POST,
                    path,
                    Some(to_bytes(&body)),
                    StatusCode::CREATED,
                )
                .await?;
            }
            Ok::<_, BenchError>(())
        }
    });
    futures::future::try_join_all(runs).await?;
    Ok(())
}

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
    let mut figures = Vec::new();
    // `RKUBE_BENCH_SCHEDULER_SHAPES=scheduler,scheduler.basic_500` runs only these shapes (by
    // figure id prefix), to iterate on one of them.
    let only: Option<Vec<String>> = std::env::var("RKUBE_BENCH_SCHEDULER_SHAPES")
        .ok()
        .map(|v| v.split(',').map(|s| s.trim().to_string()).collect());
    for shape in shapes(options.quick)
        .into_iter()
        .filter(|s| only.as_ref().is_none_or(|o| o.iter().any(|id| id == s.id)))
    {
        eprintln!("bench: scheduler shape {}", shape.name);
        figures.extend(run_shape(options, &shape).await?);
    }
    Ok(figures)
}

/// One shape in a cluster of its own: the pods placed first are scheduled and not measured,
/// then the measured pods are created and each one's bind is seen by a watch.
async fn run_shape(options: &Options, shape: &Shape) -> Result<Vec<Figure>, BenchError> {
    let limit = Duration::from_secs(300);
    let (nodes, initial, measured) = (shape.nodes, shape.initial, shape.measured);
    // Nodes that register and heartbeat but do not run the pods bound to them.
    let zones = shape.zones.join(",");
    let mut sim_args = vec!["--no-run-pods"];
    if !zones.is_empty() {
        sim_args.extend(["--zones", zones.as_str()]);
    }
    let mut cluster = Cluster::start_with(options, nodes, limit, &sim_args).await?;
    let mut conns = cluster.connections(CREATORS).await?;
    create_namespace(&mut conns[0], INITIAL_NAMESPACE).await?;
    create_namespace(&mut conns[0], MEASURED_NAMESPACE).await?;
    let watch = Watch::start(
        cluster.client.connect().await?,
        "/api/v1/pods?watch=1",
        PodState::default(),
        PodState::apply,
    )
    .await?;

    // The pods already placed: scheduled, not measured.
    let began = Instant::now();
    create_pods(
        &mut conns,
        INITIAL_NAMESPACE,
        shape.initial_template,
        "init-",
        initial,
    )
    .await?;
    watch
        .wait_until(&mut cluster.sim, began + limit, "initial pods bound", |s| {
            (s.bound.len() >= initial)
                .then_some(())
                .ok_or(s.bound.len())
        })
        .await?;

    let began = Instant::now();
    create_pods(
        &mut conns,
        MEASURED_NAMESPACE,
        shape.template,
        "pod-",
        measured,
    )
    .await?;
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
    drop(watch);
    drop(conns);
    drop(cluster);

    let mut samples = throughput_samples(binds);
    let average = samples.iter().sum::<f64>() / samples.len().max(1) as f64;
    samples.sort_unstable_by(f64::total_cmp);
    let what = format!(
        "{} ({nodes} nodes, {initial} pods placed, {measured} measured)",
        shape.name
    );
    let mut avg = Figure::new(
        SCENARIO,
        &format!("{}.throughput_avg", shape.id),
        format!(
            "{what}: pods bound/s, average of {} one-second samples",
            samples.len()
        ),
        average,
        Unit::PerSecond,
    );
    if let Some(threshold) = shape.threshold {
        avg = avg.published_reference("scheduler_perf CI threshold", threshold);
    }
    if let Some(target) = shape.target {
        avg = avg.target(Target::AtLeast(target));
    }
    let mut figures = vec![avg];
    for p in [50.0, 90.0, 99.0] {
        figures.push(Figure::new(
            SCENARIO,
            &format!("{}.throughput_p{p}", shape.id),
            format!("{what}: pods bound/s, p{p} of the one-second samples"),
            percentile(&samples, p),
            Unit::PerSecond,
        ));
    }
    figures.push(Figure::new(
        SCENARIO,
        &format!("{}.create_to_bound_per_s", shape.id),
        format!(
            "{what}: pods from the first create ({CREATORS} clients) to the last bound, per second \
             (nodes of rkube sim --no-run-pods: pods stay Pending, as scheduler_perf's)"
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
    fn templates_are_upstreams() {
        let p = pod(Template::Default, "sched-1", "pod-1");
        assert_eq!(p["metadata"]["namespace"], "sched-1");
        assert_eq!(
            p["spec"]["containers"][0]["resources"]["requests"]["cpu"],
            "100m"
        );
        assert!(p["spec"].get("affinity").is_none());
        let p = pod(Template::NodeAffinity, "sched-1", "pod-1");
        assert_eq!(
            p["spec"]["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
                ["nodeSelectorTerms"][0]["matchExpressions"][0]["key"],
            ZONE
        );
        let p = pod(Template::PodAntiAffinity, "sched-0", "init-1");
        assert_eq!(p["metadata"]["labels"]["color"], "green");
        let term = &p["spec"]["affinity"]["podAntiAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
            [0];
        assert_eq!(term["topologyKey"], "kubernetes.io/hostname");
        assert_eq!(term["namespaces"], json!(["sched-1", "sched-0"]));
        let p = pod(Template::TopologySpreading, "sched-1", "pod-1");
        assert_eq!(p["spec"]["topologySpreadConstraints"][0]["maxSkew"], 5);
        assert_eq!(p["metadata"]["labels"]["color"], "blue");
    }

    #[test]
    fn shapes_are_sized_as_upstream() {
        let full = shapes(false);
        assert_eq!(full[0].id, "scheduler");
        assert_eq!(
            (full[0].nodes, full[0].initial, full[0].measured),
            (5_000, 1_000, 10_000)
        );
        assert_eq!(full[0].threshold, Some(680.0));
        // Every id is distinct (they name the figures).
        let ids: std::collections::HashSet<_> = full.iter().map(|s| s.id).collect();
        assert_eq!(ids.len(), full.len());
        let quick = shapes(true);
        assert_eq!(quick.len(), full.len());
        // Every anti-affine pod needs a node of its own.
        assert!(
            quick
                .iter()
                .filter(|s| s.template == Template::PodAntiAffinity)
                .all(|s| s.initial + s.measured <= s.nodes)
        );
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
