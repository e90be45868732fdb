//! Simulated nodes that "run" pods instantly, like kwok: for scale tests and benchmarks, with
//! no containers.
//!
//! [`run`] registers `nodes` Node objects (`{name_prefix}0`, `{name_prefix}1`, …) with
//! capacity, allocatable, the usual node conditions, a fake InternalIP in 10.240.0.0/12 and a
//! `nodeInfo` with a kubelet version; it renews each node's Lease in `kube-node-lease` every
//! `renew_interval` and the Ready condition's heartbeat every `node_status_report_interval` (at
//! once if something else marked the node not Ready). Stopping it stops both, so the node
//! lifecycle controller sees the nodes die.
//!
//! With [`SimConfig::run_pods`] off, the nodes only register and heartbeat; bound pods stay
//! Pending (scheduler benchmarks, like upstream's scheduler_perf, whose nodes run nothing).
//!
//! One watch of all scheduled pods (`spec.nodeName!=`) feeds a level-triggered reconciler
//! (bounded concurrency, status through the `pods/status` subresource, strategic merge so
//! conditions owned by others survive) that reports each pod of its nodes as a kubelet would:
//! Running with a pod IP (from the node's podCIDR once node IPAM gave it one, else a fake
//! range), hostIP, startTime, container statuses, init containers completed in order, and the
//! PodReadyToStartContainers/Initialized/ContainersReady/Ready/PodScheduled conditions, Ready only
//! when every readiness gate's condition is True. A pod marked for deletion is deleted with
//! grace period 0 at once (the kubelet's part of graceful deletion).
//!
//! # What a simulated container does
//!
//! Nothing runs, so a container's command line decides (see [`convention`]):
//!
//! - `["true"]`, `["false"]`, `["sh", "-c", "exit N"]`, `["sleep", "N"]` and `sh -c` scripts
//!   made only of `sleep N`, `exit N`, `true`, `false`, `:`, `echo …` joined by `;`, `&&`, `||`
//!   or newlines run to completion: after the sleeps (multiplied by
//!   [`SimConfig::time_scale`]) the container terminates with the script's exit code. The pod
//!   then goes Succeeded or Failed as its `restartPolicy` says; with `OnFailure` (or `Always`)
//!   the container is restarted with the kubelet's back-off (10 s doubling to 5 min, scaled) and
//!   its `restartCount` grows.
//! - Every other command line (or none: the image's entrypoint) runs forever.
//! - An image reference containing `does-not-exist` never pulls (`ImagePullBackOff`).
//! - A readiness probe whose `exec` command is a simple exit with a non-zero code never passes;
//!   any other readiness probe passes after its `initialDelaySeconds` (scaled).
//! - `activeDeadlineSeconds` fails the pod with reason `DeadlineExceeded`.

pub mod convention;
pub mod ipam;
pub mod node;
pub mod pod;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use kube::runtime::controller::{self, Action, Controller};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use serde_json::json;

/// How many nodes to simulate and what each offers.
///
/// Construct with `SimConfig { nodes: 3, ..Default::default() }`: fields may be added.
#[derive(Debug, Clone)]
pub struct SimConfig {
    pub nodes: usize,
    pub name_prefix: String,
    pub cpu: String,
    pub memory: String,
    pub pods: u32,
    pub ephemeral_storage: String,
    /// Reported as `status.nodeInfo.kubeletVersion`.
    pub kubelet_version: String,
    /// `spec.leaseDurationSeconds` of the node Leases.
    pub lease_duration_seconds: i32,
    /// How often each node's Lease is renewed.
    pub renew_interval: Duration,
    /// How often the node conditions' heartbeat is posted when nothing changed.
    pub node_status_report_interval: Duration,
    /// Multiplies simulated durations: container sleeps, probe delays, crash-loop back-off.
    pub time_scale: f64,
    /// Requests in flight at once (registration, renewals, pod status).
    pub concurrency: usize,
    /// Whether bound pods are run (reported Running, completed, deleted). Without it the nodes
    /// only register and heartbeat, and pods stay bound but Pending, as on scheduler_perf's
    /// nodes, which have no kubelet.
    pub run_pods: bool,
    /// Zones the nodes are spread over, round robin (`topology.kubernetes.io/zone`); none if
    /// empty.
    pub zones: Vec<String>,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            nodes: 1,
            name_prefix: "sim-".into(),
            cpu: "32".into(),
            memory: "256Gi".into(),
            pods: 110,
            ephemeral_storage: "100Gi".into(),
            kubelet_version: "v1.33.0".into(),
            lease_duration_seconds: 40,
            renew_interval: Duration::from_secs(10),
            node_status_report_interval: Duration::from_secs(60),
            time_scale: 1.0,
            concurrency: 64,
            run_pods: true,
            zones: Vec::new(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("registering node {node}: {source}")]
    Register { node: String, source: kube::Error },
    #[error("renewing the lease of node {node}: {source}")]
    Lease { node: String, source: kube::Error },
    #[error("updating the status of node {node}: {source}")]
    NodeStatus { node: String, source: kube::Error },
    #[error("updating the status of pod {namespace}/{name}: {source}")]
    PodStatus {
        namespace: String,
        name: String,
        source: kube::Error,
    },
    #[error("deleting pod {namespace}/{name}: {source}")]
    PodDelete {
        namespace: String,
        name: String,
        source: kube::Error,
    },
    #[error("no free pod IP on node {node}")]
    NoPodIp { node: String },
}

/// A simulated node as the simulator knows it.
#[derive(Debug, Clone)]
struct OwnNode {
    name: String,
    ip: String,
}

struct Sim {
    client: kube::Client,
    config: SimConfig,
    own: HashMap<String, OwnNode>,
    /// All Nodes (the simulator's are picked by name).
    nodes: Store<Node>,
    ips: Mutex<ipam::PodIps>,
}

/// Run the simulated nodes until the process ends (or the returned future is dropped: every
/// task it started stops with it).
pub async fn run(client: kube::Client, config: SimConfig) -> anyhow::Result<()> {
    let (nodes, writer) = reflector::store();
    let own: HashMap<String, OwnNode> = (0..config.nodes)
        .map(|i| {
            let name = node::node_name(&config, i);
            let ip = node::node_ip(&config.name_prefix, i).to_string();
            (name.clone(), OwnNode { name, ip })
        })
        .collect();
    let sim = Arc::new(Sim {
        client: client.clone(),
        config,
        own,
        nodes,
        ips: Mutex::new(ipam::PodIps::default()),
    });
    let mut tasks = tokio::task::JoinSet::new();
    let node_api: Api<Node> = Api::all(client.clone());
    tasks.spawn(async move {
        reflector::reflector(
            writer,
            watcher(node_api, watcher::Config::default()).default_backoff(),
        )
        .for_each(|_| futures::future::ready(()))
        .await;
        Ok(())
    });
    let started = std::time::Instant::now();
    sim.register_nodes().await?;
    tracing::info!(
        nodes = sim.config.nodes,
        prefix = %sim.config.name_prefix,
        elapsed_ms = started.elapsed().as_millis() as u64,
        "registered simulated nodes"
    );
    tasks.spawn(sim.clone().heartbeats());
    if sim.config.run_pods {
        tasks.spawn(sim.clone().run_pods());
    } else {
        tracing::info!("not running pods: bound pods stay Pending");
    }
    while let Some(result) = tasks.join_next().await {
        result??;
    }
    Ok(())
}

fn is_code(e: &kube::Error, code: u16) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == code)
}

impl Sim {
    fn now() -> Timestamp {
        Timestamp::now()
    }

    /// Create every node (or take over an existing one: its status is set healthy again) and
    /// its Lease.
    async fn register_nodes(self: &Arc<Self>) -> Result<(), Error> {
        let now = Self::now();
        let results: Vec<Result<(), Error>> = futures::stream::iter(0..self.config.nodes)
            .map(|i| {
                let sim = self.clone();
                async move { sim.register(i, &now).await }
            })
            .buffer_unordered(self.config.concurrency.max(1))
            .collect()
            .await;
        results.into_iter().collect()
    }

    async fn register(&self, index: usize, now: &Timestamp) -> Result<(), Error> {
        let nodes: Api<Node> = Api::all(self.client.clone());
        let wanted = node::node(&self.config, index, now);
        let name = wanted.metadata.name.clone().unwrap_or_default();
        let err = |source| Error::Register {
            node: name.clone(),
            source,
        };
        let created = match nodes.create(&PostParams::default(), &wanted).await {
            Ok(created) => created,
            Err(e) if is_code(&e, 409) => {
                tracing::info!(node = %name, "node exists; taking it over");
                nodes.get(&name).await.map_err(err)?
            }
            Err(e) => return Err(err(e)),
        };
        let has_status = created
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|c| !c.is_empty());
        if !has_status || !node::is_ready(&created) {
            let mut status = serde_json::to_value(&wanted.status).unwrap_or_default();
            status["conditions"] =
                node::heartbeat_patch(Some(&created), now)["status"]["conditions"].take();
            nodes
                .patch_status(
                    &name,
                    &PatchParams::default(),
                    &Patch::Strategic(json!({"status": status})),
                )
                .await
                .map_err(err)?;
        }
        self.renew_lease(&created, now).await
    }

    async fn renew_lease(&self, node: &Node, now: &Timestamp) -> Result<(), Error> {
        let name = node.metadata.name.clone().unwrap_or_default();
        let leases: Api<Lease> = Api::namespaced(self.client.clone(), node::LEASE_NAMESPACE);
        let err = |source| Error::Lease {
            node: name.clone(),
            source,
        };
        let patch = api::node::lease_renew_patch(&name, self.config.lease_duration_seconds, now);
        match leases
            .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if is_code(&e, 404) => {
                let lease = node::lease(node, self.config.lease_duration_seconds, now);
                match leases.create(&PostParams::default(), &lease).await {
                    Ok(_) => Ok(()),
                    Err(e) if is_code(&e, 409) => Ok(()),
                    Err(e) => Err(err(e)),
                }
            }
            Err(e) => Err(err(e)),
        }
    }

    /// Renew every Lease each `renew_interval`, and post the node conditions when due.
    async fn heartbeats(self: Arc<Self>) -> anyhow::Result<()> {
        let mut tick = tokio::time::interval(self.config.renew_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await; // Registration just renewed everything.
        let mut names: Vec<String> = self.own.keys().cloned().collect();
        names.sort();
        loop {
            tick.tick().await;
            let now = Self::now();
            futures::stream::iter(names.iter())
                .for_each_concurrent(self.config.concurrency.max(1), |name| {
                    let sim = self.clone();
                    async move {
                        if let Err(e) = sim.heartbeat(name, &now).await {
                            tracing::warn!(node = %name, error = %e, "heartbeat failed");
                        }
                    }
                })
                .await;
        }
    }

    async fn heartbeat(&self, name: &str, now: &Timestamp) -> Result<(), Error> {
        let Some(current) = self.nodes.get(&ObjectRef::new(name)) else {
            // Deleted while we run: a kubelet does not re-register until restarted.
            return Ok(());
        };
        self.renew_lease(&current, now).await?;
        let last_heartbeat = current
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .and_then(|cs| cs.iter().find(|c| c.type_ == "Ready"))
            .and_then(|c| c.last_heartbeat_time.as_ref())
            .map(|t| t.0);
        let due = match last_heartbeat {
            Some(at) => {
                now.duration_since(at).as_secs_f64()
                    >= self.config.node_status_report_interval.as_secs_f64()
            }
            None => true,
        };
        if due || !node::is_ready(&current) {
            let nodes: Api<Node> = Api::all(self.client.clone());
            let patch = node::heartbeat_patch(Some(&current), now);
            nodes
                .patch_status(name, &PatchParams::default(), &Patch::Strategic(patch))
                .await
                .map_err(|source| Error::NodeStatus {
                    node: name.to_string(),
                    source,
                })?;
            if !node::is_ready(&current) {
                tracing::info!(node = %name, "node is Ready again");
            }
        }
        Ok(())
    }

    /// One watch of every scheduled pod; reconcile those on our nodes.
    async fn run_pods(self: Arc<Self>) -> anyhow::Result<()> {
        let pods: Api<Pod> = Api::all(self.client.clone());
        let controller =
            Controller::new(pods, watcher::Config::default().fields("spec.nodeName!="))
                .with_config(
                    controller::Config::default()
                        .concurrency(self.config.concurrency.clamp(1, u16::MAX as usize) as u16),
                );
        let ctx = Arc::new(PodContext {
            sim: self.clone(),
            pods: controller.store(),
            seeded: tokio::sync::OnceCell::new(),
        });
        controller
            .run(reconcile_pod, pod_error_policy, ctx)
            .for_each(|result| async move {
                if let Err(e) = result {
                    tracing::debug!(error = %e, "simulated pod reconcile");
                }
            })
            .await;
        Ok(())
    }
}

struct PodContext {
    sim: Arc<Sim>,
    pods: Store<Pod>,
    /// IPs pods had before we started are known once the first list completed.
    seeded: tokio::sync::OnceCell<()>,
}

impl PodContext {
    fn range_of(&self, node: &str) -> ipam::Range {
        self.sim
            .nodes
            .get(&ObjectRef::new(node))
            .and_then(|n| n.spec.as_ref()?.pod_cidr.clone())
            .and_then(|cidr| ipam::Range::parse(&cidr))
            .unwrap_or_else(|| ipam::Range::fallback(node))
    }

    fn pods_on(&self, node: &str) -> Vec<Arc<Pod>> {
        self.pods
            .state_filter(|p| p.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some(node))
    }

    async fn seed(&self) {
        self.seeded
            .get_or_init(|| async {
                let _ = self.pods.wait_until_ready().await;
                let _ = self.sim.nodes.wait_until_ready().await;
                let mut ips = self.sim.ips.lock().unwrap_or_else(|e| e.into_inner());
                for pod in self.pods.state() {
                    let node = pod
                        .spec
                        .as_ref()
                        .and_then(|s| s.node_name.clone())
                        .unwrap_or_default();
                    if !self.sim.own.contains_key(&node) {
                        continue;
                    }
                    if let Some(ip) = pod.status.as_ref().and_then(|s| s.pod_ip.as_deref()) {
                        let uid = pod.metadata.uid.as_deref().unwrap_or_default();
                        ips.observe(&node, self.range_of(&node), uid, ip);
                    }
                }
            })
            .await;
    }

    /// The pod's IP: kept if it has one, else a free one of its node's range.
    async fn pod_ip(&self, pod: &Pod, node: &str) -> Result<String, Error> {
        if let Some(ip) = pod.status.as_ref().and_then(|s| s.pod_ip.clone()) {
            return Ok(ip);
        }
        self.seed().await;
        let uid = pod.metadata.uid.as_deref().unwrap_or_default();
        let range = self.range_of(node);
        let mut ips = self.sim.ips.lock().unwrap_or_else(|e| e.into_inner());
        ips.allocate(node, range, uid, || {
            self.pods_on(node)
                .iter()
                .filter_map(|p| Some((p.metadata.uid.clone()?, p.status.as_ref()?.pod_ip.clone()?)))
                .collect()
        })
        .map(|ip| ip.to_string())
        .ok_or_else(|| Error::NoPodIp {
            node: node.to_string(),
        })
    }
}

async fn reconcile_pod(pod: Arc<Pod>, ctx: Arc<PodContext>) -> Result<Action, Error> {
    let Some(node) = pod.spec.as_ref().and_then(|s| s.node_name.as_deref()) else {
        return Ok(Action::await_change());
    };
    let Some(own) = ctx.sim.own.get(node) else {
        return Ok(Action::await_change());
    };
    let name = pod.metadata.name.clone().unwrap_or_default();
    let namespace = pod.metadata.namespace.clone().unwrap_or_default();
    let uid = pod.metadata.uid.clone().unwrap_or_default();
    let pods: Api<Pod> = Api::namespaced(ctx.sim.client.clone(), &namespace);
    if pod.metadata.deletion_timestamp.is_some() {
        // The containers are "stopped" at once: finish the graceful deletion.
        let params = DeleteParams {
            grace_period_seconds: Some(0),
            preconditions: Some(Preconditions {
                uid: Some(uid.clone()),
                resource_version: None,
            }),
            ..Default::default()
        };
        match pods.delete(&name, &params).await {
            Ok(_) => {
                tracing::debug!(pod = %format!("{namespace}/{name}"), node = %own.name, "deleted terminating pod")
            }
            Err(e) if is_code(&e, 404) || is_code(&e, 409) => {}
            Err(source) => {
                return Err(Error::PodDelete {
                    namespace,
                    name,
                    source,
                });
            }
        }
        ctx.sim
            .ips
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .release(node, &uid);
        return Ok(Action::await_change());
    }
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
    if matches!(phase, Some("Succeeded" | "Failed")) {
        // A terminated pod's IP goes back to the node; its status stays as it is.
        ctx.sim
            .ips
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .release(node, &uid);
        return Ok(Action::await_change());
    }
    let env = pod::PodEnv {
        pod_ip: ctx.pod_ip(&pod, node).await?,
        host_ip: own.ip.clone(),
        now_ms: Timestamp::now().as_millisecond(),
        time_scale: ctx.sim.config.time_scale,
    };
    let desired = pod::desired_status(&pod, &env);
    if let Some(patch) = pod::status_patch(&pod, &desired.status) {
        match pods
            .patch_status(&name, &PatchParams::default(), &Patch::Strategic(patch))
            .await
        {
            Ok(_) => tracing::debug!(
                pod = %format!("{namespace}/{name}"),
                node = %own.name,
                phase = desired.status.phase.as_deref().unwrap_or_default(),
                "pod status"
            ),
            Err(e) if is_code(&e, 404) => return Ok(Action::await_change()),
            Err(source) => {
                return Err(Error::PodStatus {
                    namespace,
                    name,
                    source,
                });
            }
        }
    }
    Ok(match desired.next_change {
        // A little late rather than early, so the change has happened when we look.
        Some(after) => Action::requeue(after + Duration::from_millis(20)),
        None => Action::await_change(),
    })
}

fn pod_error_policy(_pod: Arc<Pod>, error: &Error, _ctx: Arc<PodContext>) -> Action {
    tracing::warn!(%error, "simulated kubelet");
    Action::requeue(Duration::from_secs(1))
}

/// A client from a kubeconfig file (its current context), for `rkube sim --kubeconfig`.
pub async fn client_from_kubeconfig_file(path: &std::path::Path) -> anyhow::Result<kube::Client> {
    use anyhow::Context as _;
    let kubeconfig = kube::config::Kubeconfig::read_from(path)
        .with_context(|| format!("reading kubeconfig {}", path.display()))?;
    let config = kube::Config::from_custom_kubeconfig(
        kubeconfig,
        &kube::config::KubeConfigOptions::default(),
    )
    .await
    .with_context(|| format!("loading kubeconfig {}", path.display()))?;
    Ok(kube::Client::try_from(config)?)
}
