//! `pods`: the node agent with real containers. Pod startup (creation to Running and Ready
//! through a watch) beside a bare `runc run -d` of the same busybox rootfs in the same run;
//! then the agent's and its shims' footprint with 100 pods on one node.
//!
//! Needs root, runc, the CNI plugins, busybox-static, umoci and tar (scripts/install-deps.sh).
//! The image is built offline with umoci and imported into the node's image store, so no pull
//! is timed. Every process is killed by PID and `rkube killall` removes what the agent set up.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use http::{Method, StatusCode};
use serde_json::{Value, json};

use crate::client::ApiClient;
use crate::figure::{Figure, MIB, Target, Unit};
use crate::node::{
    BusyboxImage, Killall, NAMESPACE, NodeNames, PodStarts, Process, READY_TIMEOUT, build_image,
    connections, create_pods, delete_pods, fail, import_image, io, is_root, path_str,
    prepare_namespace, run_tool, shim_pids, wait_node_ready, wait_pods,
};
use crate::process::{CpuTicks, ServerProcess, clock_ticks, pss_bytes, rss_bytes};
use crate::scenarios::bulk::Watch;
use crate::stats::Samples;
use crate::{BenchError, Options};

const SCENARIO: &str = "pods";
/// Clients creating the footprint pods, each on its own connection.
const WRITERS: usize = 16;

/// Polls `/readyz` (with the admin kubeconfig once the server wrote it) until it answers 200.
async fn wait_server(process: &mut Process, kubeconfig: &Path) -> Result<ApiClient, BenchError> {
    let deadline = Instant::now() + READY_TIMEOUT;
    let mut last_error = String::from("no kubeconfig yet");
    loop {
        process.check()?;
        if kubeconfig.exists() {
            match ApiClient::from_kubeconfig(kubeconfig) {
                Ok(client) => match client.connect().await {
                    Ok(mut conn) => {
                        match conn
                            .expect(Method::GET, "/readyz", None, StatusCode::OK)
                            .await
                        {
                            Ok(_) => return Ok(client),
                            Err(e) => last_error = e.to_string(),
                        }
                    }
                    Err(e) => last_error = e.to_string(),
                },
                // The file may be half written at the first look.
                Err(e) => last_error = e.to_string(),
            }
        }
        if Instant::now() >= deadline {
            return Err(fail(format!("{} not ready: {last_error}", process.what)));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Pod startup on `rkube server` with its agent: returns the creation-to-Ready latencies.
async fn pod_startup(
    options: &Options,
    dir: &Path,
    image: &BusyboxImage,
    pods: usize,
) -> Result<Samples, BenchError> {
    let node = NodeNames::unique(0);
    let data = dir.join("server");
    std::fs::create_dir_all(&data).map_err(io(format!("create {}", data.display())))?;
    import_image(&options.binary, &data, image)?;
    let mut args: Vec<String> = [
        "server",
        "--data-dir",
        path_str(&data)?,
        "--https-port",
        &testing::free_port().to_string(),
        "--bind-address",
        "127.0.0.1",
        "--cluster-cidr",
        &node.cluster_cidr,
    ]
    .map(String::from)
    .to_vec();
    args.extend(node.agent_args());
    let _killall = Killall {
        binary: options.binary.clone(),
        data_dir: data.clone(),
        node: node.clone(),
    };
    let mut server = Process::spawn(
        &options.binary,
        &args,
        "rkube server (with its agent)",
        &dir.join("server.log"),
    )?;
    let client = wait_server(&mut server, &data.join("kubeconfig.yaml")).await?;
    let mut conns = connections(&client, pods.max(1)).await?;
    wait_node_ready(&mut conns[0], &node.node_name, || server.check()).await?;
    prepare_namespace(&mut conns[0]).await?;
    let watch = Watch::start(
        client.connect().await?,
        &format!("/api/v1/namespaces/{NAMESPACE}/pods?watch=1"),
        PodStarts::default(),
        PodStarts::apply,
    )
    .await?;

    // One pod first, not measured: the node's one-time work (the pod bridge) is not startup.
    let warm = vec!["warm-0".to_string()];
    create_pods(&mut conns[..1], &warm).await?;
    wait_pods(
        &watch,
        &mut [&mut server],
        "the warm-up pod Ready",
        READY_TIMEOUT,
        |s| (!s.ready.is_empty()).then_some(()).ok_or(0),
    )
    .await?;

    let names: Vec<String> = (0..pods).map(|i| format!("start-{i}")).collect();
    let created = create_pods(&mut conns, &names).await?;
    wait_pods(
        &watch,
        &mut [&mut server],
        "pods Running and Ready",
        READY_TIMEOUT,
        |s| {
            let n = names.iter().filter(|n| s.ready.contains_key(*n)).count();
            (n >= names.len()).then_some(()).ok_or(n)
        },
    )
    .await?;
    let mut samples = Samples::new();
    watch.with(|s| {
        for (name, at) in &created {
            samples.push(s.ready[name].saturating_duration_since(*at));
        }
    });

    let all: Vec<String> = warm.into_iter().chain(names).collect();
    delete_pods(&mut conns, &all, &watch, &mut [&mut server]).await?;
    drop(watch);
    drop(conns);
    server.stop();
    Ok(samples)
}

/// A bare `runc run -d` of the busybox rootfs with runc's default spec (`runc spec`, no
/// terminal, `sleep 3600`): each container's time from exec of runc to its return, one at a
/// time and then all at once. The containers are deleted on drop.
struct BareRunc {
    root: PathBuf,
    /// Containers that may exist.
    ids: Vec<String>,
    made: usize,
}

impl BareRunc {
    fn bundle(dir: &Path, rootfs: &Path) -> Result<PathBuf, BenchError> {
        let bundle = dir.join("runc-bundle");
        std::fs::create_dir_all(&bundle).map_err(io(format!("create {}", bundle.display())))?;
        run_tool("runc", &["spec", "--bundle", path_str(&bundle)?])?;
        let path = bundle.join("config.json");
        let text =
            std::fs::read_to_string(&path).map_err(io(format!("read {}", path.display())))?;
        let mut spec: Value =
            serde_json::from_str(&text).map_err(|e| fail(format!("{}: {e}", path.display())))?;
        spec["process"]["terminal"] = json!(false);
        spec["process"]["args"] = json!(["sleep", "3600"]);
        spec["process"]["env"] = json!(["PATH=/bin"]);
        spec["root"]["path"] = json!(path_str(rootfs)?);
        std::fs::write(&path, spec.to_string()).map_err(io(format!("write {}", path.display())))?;
        Ok(bundle)
    }

    /// `count` containers one after the other, then `count` at once.
    async fn measure(
        &mut self,
        bundle: &Path,
        count: usize,
    ) -> Result<(Samples, Samples), BenchError> {
        let mut sequential = Samples::new();
        for _ in 0..count {
            let id = self.next_id();
            sequential.push(runc_run(&self.root, bundle, &id).await?);
        }
        self.delete_all();
        // Ids are recorded before the runs start, so that a failed run still gets deleted.
        let ids: Vec<String> = (0..count).map(|_| self.next_id()).collect();
        let root = &self.root;
        let runs = ids.iter().map(|id| runc_run(root, bundle, id));
        let mut concurrent = Samples::new();
        for took in futures::future::try_join_all(runs).await? {
            concurrent.push(took);
        }
        self.delete_all();
        Ok((sequential, concurrent))
    }

    fn next_id(&mut self) -> String {
        self.made += 1;
        let id = format!("rkube-bench-{}-{}", std::process::id(), self.made);
        self.ids.push(id.clone());
        id
    }

    fn delete_all(&mut self) {
        for id in self.ids.drain(..) {
            let _ = Command::new("runc")
                .arg("--root")
                .arg(&self.root)
                .args(["delete", "--force", &id])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
}

/// `runc run -d` of one container: the time from exec of runc until it returns (the
/// container's process started).
async fn runc_run(root: &Path, bundle: &Path, id: &str) -> Result<Duration, BenchError> {
    // runc's errors go to --log: a detached container without a terminal inherits runc's
    // stdio, so a pipe there would stay open for as long as the container runs.
    let log = root.with_extension(format!("{id}.log"));
    let began = Instant::now();
    let status = tokio::process::Command::new("runc")
        .arg("--root")
        .arg(root)
        .arg("--log")
        .arg(&log)
        .args(["run", "-d", "--bundle"])
        .arg(bundle)
        .arg(id)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .await
        .map_err(io("run runc"))?;
    let took = began.elapsed();
    if !status.success() {
        return Err(fail(format!(
            "runc run -d {id}: {status}: {}",
            std::fs::read_to_string(&log).unwrap_or_default().trim()
        )));
    }
    Ok(took)
}

impl Drop for BareRunc {
    fn drop(&mut self) {
        self.delete_all();
    }
}

struct Footprint {
    pods: usize,
    agent_idle_rss: u64,
    agent_rss: u64,
    shims: Vec<u64>,
    /// Proportional set sizes of the shims: what each adds, its share of the shared pages.
    shim_pss: Vec<u64>,
    cpu_percent: f64,
    cpu_with_children_percent: f64,
    window: Duration,
}

/// `rkube agent` against a `--disable-agent` server, `pods` pods Running and Ready, then its
/// RSS, its shims' RSS and its CPU over `window`.
async fn footprint(
    options: &Options,
    dir: &Path,
    image: &BusyboxImage,
    pods: usize,
    window: Duration,
    settle: Duration,
) -> Result<Footprint, BenchError> {
    let node = NodeNames::unique(1);
    let agent_data = dir.join("agent");
    std::fs::create_dir_all(&agent_data).map_err(io(format!("create {}", agent_data.display())))?;
    import_image(&options.binary, &agent_data, image)?;
    let _killall = Killall {
        binary: options.binary.clone(),
        data_dir: agent_data.clone(),
        node: node.clone(),
    };
    let (server, client) = ServerProcess::start_with(
        &options.binary,
        &dir.join("cluster"),
        testing::free_port(),
        &["--cluster-cidr", &node.cluster_cidr],
    )
    .await?;
    let token = std::fs::read_to_string(dir.join("cluster").join("node-token"))
        .map_err(io("read the server's node-token"))?;
    let mut args: Vec<String> = [
        "agent",
        "--server",
        &format!("https://127.0.0.1:{}", server.port()),
        "--token",
        token.trim(),
        "--data-dir",
        path_str(&agent_data)?,
    ]
    .map(String::from)
    .to_vec();
    args.extend(node.agent_args());
    let mut agent = Process::spawn(
        &options.binary,
        &args,
        "rkube agent",
        &dir.join("agent.log"),
    )?;
    let mut conns = connections(&client, WRITERS.min(pods.max(1))).await?;
    wait_node_ready(&mut conns[0], &node.node_name, || agent.check()).await?;
    prepare_namespace(&mut conns[0]).await?;
    tokio::time::sleep(settle).await;
    agent.check()?;
    let agent_idle_rss = rss_bytes(agent.pid()?)?;
    let watch = Watch::start(
        client.connect().await?,
        &format!("/api/v1/namespaces/{NAMESPACE}/pods?watch=1"),
        PodStarts::default(),
        PodStarts::apply,
    )
    .await?;
    let names: Vec<String> = (0..pods).map(|i| format!("idle-{i}")).collect();
    create_pods(&mut conns, &names).await?;
    wait_pods(
        &watch,
        &mut [&mut agent],
        "pods Running and Ready",
        READY_TIMEOUT * 2,
        |s| (s.ready.len() >= pods).then_some(()).ok_or(s.ready.len()),
    )
    .await?;

    // Steady state: the start-up work done, nothing changing.
    tokio::time::sleep(settle).await;
    agent.check()?;
    let pid = agent.pid()?;
    let agent_rss = rss_bytes(pid)?;
    let shim_pids = shim_pids(&agent_data);
    let shims: Vec<u64> = shim_pids
        .iter()
        .filter_map(|pid| rss_bytes(*pid).ok())
        .collect();
    let shim_pss: Vec<u64> = shim_pids.iter().filter_map(|pid| pss_bytes(*pid)).collect();
    let CpuTicks {
        own: own_before,
        children: children_before,
    } = CpuTicks::of(pid)?;
    let began = Instant::now();
    tokio::time::sleep(window).await;
    let CpuTicks {
        own: own_after,
        children: children_after,
    } = CpuTicks::of(pid)?;
    let elapsed = began.elapsed().as_secs_f64();
    agent.check()?;
    let ticks = clock_ticks();
    let percent = |ticks_used: u64| ticks_used as f64 / ticks / elapsed * 100.0;
    let own = own_after - own_before;
    let children = children_after - children_before;

    delete_pods(&mut conns, &names, &watch, &mut [&mut agent]).await?;
    drop(watch);
    drop(conns);
    agent.stop();
    drop(server);
    Ok(Footprint {
        pods,
        agent_idle_rss,
        agent_rss,
        shims,
        shim_pss,
        cpu_percent: percent(own),
        cpu_with_children_percent: percent(own + children),
        window: Duration::from_secs_f64(elapsed),
    })
}

pub async fn run(options: &Options) -> Result<Vec<Figure>, BenchError> {
    if !is_root() {
        return Err(fail(
            "the pods scenario runs real containers: run it as root (with runc, the CNI plugins, busybox-static and umoci installed)",
        ));
    }
    let (start_pods, idle_pods, window, settle) = if options.quick {
        (3, 5, Duration::from_secs(1), Duration::from_millis(500))
    } else {
        (20, 100, Duration::from_secs(20), Duration::from_secs(5))
    };
    let dir = tempfile::Builder::new()
        .prefix("rkube-bench-pods-")
        .tempdir()
        .map_err(io("create a temporary directory for the pods scenario"))?;
    let image = build_image(dir.path())?;

    let mut startup = pod_startup(options, dir.path(), &image, start_pods).await?;

    // The same container with runc alone, in the same run.
    let mut runc = BareRunc {
        root: dir.path().join("runc-root"),
        ids: Vec::new(),
        made: 0,
    };
    let bundle = BareRunc::bundle(dir.path(), &image.rootfs)?;
    let (mut runc_sequential, mut runc_concurrent) = runc.measure(&bundle, start_pods).await?;
    drop(runc);

    let foot = footprint(options, dir.path(), &image, idle_pods, window, settle).await?;
    let shim_max = foot.shims.iter().copied().max().unwrap_or(0) as f64;
    let mean = |values: &[u64]| {
        if values.is_empty() {
            0.0
        } else {
            values.iter().sum::<u64>() as f64 / values.len() as f64
        }
    };
    let runc_label = format!("bare runc run -d, {start_pods} at once");
    Ok(vec![
        Figure::new(
            SCENARIO,
            "pods.startup_p50_ms",
            format!(
                "pod creation to Running and Ready (watch), p50 of {start_pods} pods created at once, image present"
            ),
            startup.median_ms(),
            Unit::Millis,
        )
        .reference(&runc_label, runc_concurrent.median_ms())
        .target(Target::AtMost(100.0)),
        Figure::new(
            SCENARIO,
            "pods.startup_p99_ms",
            format!("pod creation to Running and Ready (watch), p99 of {start_pods} pods"),
            startup.percentile_ms(99.0),
            Unit::Millis,
        )
        .reference(&runc_label, runc_concurrent.percentile_ms(99.0))
        .target(Target::AtMost(300.0)),
        Figure::new(
            SCENARIO,
            "pods.runc_sequential_p50_ms",
            format!("bare runc run -d of the same rootfs, one at a time, p50 of {start_pods}"),
            runc_sequential.median_ms(),
            Unit::Millis,
        ),
        Figure::new(
            SCENARIO,
            "pods.agent_rss_bytes",
            format!("rkube agent RSS with {} pods Running", foot.pods),
            foot.agent_rss as f64,
            Unit::Bytes,
        )
        .target(Target::AtMost(40.0 * MIB)),
        Figure::new(
            SCENARIO,
            "pods.agent_idle_rss_bytes",
            "rkube agent RSS with its node Ready and no pods",
            foot.agent_idle_rss as f64,
            Unit::Bytes,
        ),
        Figure::new(
            SCENARIO,
            "pods.shim_rss_max_bytes",
            format!("largest shim RSS of {} shims", foot.shims.len()),
            shim_max,
            Unit::Bytes,
        )
        .target(Target::AtMost(2.0 * MIB)),
        Figure::new(
            SCENARIO,
            "pods.shim_rss_mean_bytes",
            format!("mean shim RSS of {} shims", foot.shims.len()),
            mean(&foot.shims),
            Unit::Bytes,
        ),
        Figure::new(
            SCENARIO,
            "pods.shim_pss_mean_bytes",
            format!(
                "mean shim PSS of {} shims (shared pages divided among their users)",
                foot.shim_pss.len()
            ),
            mean(&foot.shim_pss),
            Unit::Bytes,
        ),
        Figure::new(
            SCENARIO,
            "pods.agent_cpu_percent",
            format!(
                "rkube agent CPU at steady state with {} pods, % of one core over {:.0} s",
                foot.pods,
                foot.window.as_secs_f64()
            ),
            foot.cpu_percent,
            Unit::Ratio,
        )
        .target(Target::AtMost(2.0)),
        Figure::new(
            SCENARIO,
            "pods.agent_cpu_with_children_percent",
            "the same, with the children it ran and reaped (runc), % of one core",
            foot.cpu_with_children_percent,
            Unit::Ratio,
        ),
    ])
}
