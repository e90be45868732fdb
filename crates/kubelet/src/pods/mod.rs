//! The pods bound to this node: one worker per pod drives it from its spec to running
//! containers and back to nothing, and reports its status.
//!
//! - [`worker`]: the per-pod state machine (start, restart, probes, termination, status).
//! - [`status`]: phase and conditions, as upstream computes them.
//! - [`spec`]: resources, security context, restart rules.
//! - [`dns`]: the pod's `/etc/hosts` and `/etc/resolv.conf`.
//! - [`backoff`]: CrashLoopBackOff and ImagePullBackOff timing.
//!
//! Architecture Invariant: a pod's containers are only ever touched by its own worker; the
//! dispatcher here only routes pod updates and cleans up what no pod owns.

pub mod backoff;
pub mod dns;
pub mod spec;
pub mod status;
pub mod worker;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use anyhow::Context as _;
use futures::StreamExt as _;
use k8s_openapi::api::core::v1::Pod;
use kube::api::Api;
use kube::runtime::WatchStreamExt as _;
use kube::runtime::watcher::{self, Event};
use runtime::container::{ContainerInfo, ContainerRuntime};
use runtime::images::pull::Puller;
use runtime::images::{ImageStore, RegistryConfig};
use runtime::sandbox::{Sandbox, SandboxManager};
use tokio::sync::watch;

use crate::KubeletConfig;
use crate::events::EventRecorder;
use crate::volumes::VolumeManager;

/// The annotation of a mirror pod (the API's copy of a static pod).
pub const MIRROR_ANNOTATION: &str = "kubernetes.io/config.mirror";

/// How long a deleted pod's containers wait, at most (and never past the grace period), for
/// this node's Service proxy to stop sending them new connections: kube-proxy's default
/// minimum sync period, the time upstream proxies take to act on an EndpointSlice change.
pub const PROXY_DRAIN_LIMIT: Duration = Duration::from_secs(1);

/// What every pod worker shares.
pub struct PodContext {
    pub client: kube::Client,
    pub config: Arc<KubeletConfig>,
    pub runtime: ContainerRuntime,
    pub sandboxes: SandboxManager,
    pub images: ImageStore,
    pub registries: RegistryConfig,
    pub volumes: VolumeManager,
    pub events: EventRecorder,
    /// `<agent-root>/logs`
    pub log_root: std::path::PathBuf,
    /// The running pod workers (API pods and static pods).
    pub workers: PodWorkers,
}

struct WorkerHandle {
    updates: watch::Sender<Option<Arc<Pod>>>,
    task: tokio::task::JoinHandle<()>,
}

#[derive(Default)]
struct WorkersState {
    workers: HashMap<String, WorkerHandle>,
    /// Containers found on disk at start, by pod UID, until that pod's worker takes them.
    adoptable: HashMap<String, Vec<ContainerInfo>>,
    /// Pods whose workers finished (deleted and cleaned up): later updates are ignored.
    finished: HashSet<String>,
}

/// Routes pod updates to one worker per pod UID.
pub struct PodWorkers {
    state: Mutex<WorkersState>,
    puller: OnceLock<Puller>,
    /// True once the containers on disk are known (workers may start).
    inventory: watch::Sender<bool>,
}

impl Default for PodWorkers {
    fn default() -> Self {
        PodWorkers::new()
    }
}

impl PodWorkers {
    pub fn new() -> PodWorkers {
        PodWorkers {
            state: Mutex::new(WorkersState::default()),
            puller: OnceLock::new(),
            inventory: watch::channel(false).0,
        }
    }

    /// The image puller, shared by all workers so that registry connections and tokens are
    /// reused.
    pub fn puller(&self, ctx: &PodContext) -> &Puller {
        self.puller
            .get_or_init(|| Puller::new(ctx.registries.clone()))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, WorkersState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Wait until the containers on disk have been listed.
    pub async fn inventory_ready(&self) {
        let mut rx = self.inventory.subscribe();
        let _ = rx.wait_for(|ready| *ready).await;
    }

    fn load_inventory(&self, containers: Vec<ContainerInfo>) {
        let mut state = self.lock();
        for c in containers {
            state
                .adoptable
                .entry(c.meta.pod_uid.clone())
                .or_default()
                .push(c);
        }
        drop(state);
        self.inventory.send_replace(true);
    }

    /// A pod was added or changed: start its worker or hand it the new object.
    pub fn update(&self, ctx: &Arc<PodContext>, pod: Pod, is_static: bool) {
        let Some(uid) = pod.metadata.uid.clone() else {
            return;
        };
        let mut state = self.lock();
        if state.finished.contains(&uid) {
            return;
        }
        if let Some(handle) = state.workers.get(&uid) {
            if !handle.task.is_finished() {
                handle.updates.send_replace(Some(Arc::new(pod)));
                return;
            }
            // The worker died (a panic): start over, adopting its containers from disk.
            tracing::error!(pod_uid = %uid, "pod worker stopped unexpectedly; restarting it");
        }
        let restarted = state.workers.contains_key(&uid);
        let adopted = state.adoptable.remove(&uid).unwrap_or_default();
        let pod = Arc::new(pod);
        let (tx, rx) = watch::channel(Some(pod.clone()));
        let ctx2 = ctx.clone();
        let uid2 = uid.clone();
        let task = tokio::spawn(async move {
            let adopted = if restarted {
                // A restarted worker finds its containers on disk again.
                match ctx2.runtime.list_containers().await {
                    Ok(all) => all.into_iter().filter(|c| c.meta.pod_uid == uid2).collect(),
                    Err(_) => adopted,
                }
            } else {
                adopted
            };
            let worker = worker::Worker::new(ctx2.clone(), pod, rx, adopted, is_static);
            worker.run().await;
            ctx2.workers.mark_finished(&uid2);
        });
        state
            .workers
            .insert(uid, WorkerHandle { updates: tx, task });
    }

    /// The pod is gone: its worker removes everything it ran.
    pub fn remove(&self, uid: &str) {
        let mut state = self.lock();
        state.finished.remove(uid);
        if let Some(handle) = state.workers.get(uid) {
            handle.updates.send_replace(None);
        }
        state.workers.retain(|_, h| !h.task.is_finished());
    }

    fn mark_finished(&self, uid: &str) {
        let mut state = self.lock();
        state.workers.remove(uid);
        state.finished.insert(uid.to_string());
    }

    /// The UIDs with a worker (running or not yet cleaned).
    pub fn uids(&self) -> HashSet<String> {
        self.lock().workers.keys().cloned().collect()
    }

    /// After a full list: pods no longer listed are gone (except `keep`: static pods).
    fn retain_listed(&self, listed: &HashSet<String>, keep: &HashSet<String>) {
        let mut state = self.lock();
        for (uid, handle) in &state.workers {
            if !listed.contains(uid) && !keep.contains(uid) {
                handle.updates.send_replace(None);
            }
        }
        state.finished.retain(|uid| listed.contains(uid));
    }

    /// Containers on disk that no pod took.
    fn take_unclaimed(&self, keep: &HashSet<String>) -> Vec<ContainerInfo> {
        let mut state = self.lock();
        let orphans: Vec<String> = state
            .adoptable
            .keys()
            .filter(|uid| !keep.contains(*uid))
            .cloned()
            .collect();
        orphans
            .into_iter()
            .flat_map(|uid| state.adoptable.remove(&uid).unwrap_or_default())
            .collect()
    }
}

fn is_mirror(pod: &Pod) -> bool {
    pod.metadata
        .annotations
        .as_ref()
        .is_some_and(|a| a.contains_key(MIRROR_ANNOTATION))
}

/// Watch the pods bound to this node and run them until the task is dropped. On start, adopt
/// the containers and sandboxes already on disk and remove those whose pods are gone.
pub async fn run(ctx: Arc<PodContext>) -> anyhow::Result<()> {
    let containers = ctx
        .runtime
        .list_containers()
        .await
        .context("listing the containers on disk")?;
    let sandboxes = ctx
        .sandboxes
        .list()
        .context("listing the pod sandboxes on disk")?;
    tracing::info!(
        containers = containers.len(),
        sandboxes = sandboxes.len(),
        "found containers and sandboxes from an earlier run"
    );
    ctx.workers.load_inventory(containers);
    let api: Api<Pod> = Api::all(ctx.client.clone());
    let selector = format!("spec.nodeName={}", ctx.config.node_name);
    let mut stream = watcher::watcher(api, watcher::Config::default().fields(&selector))
        .default_backoff()
        .boxed();
    let mut listed = HashSet::new();
    let mut orphans_cleaned = false;
    let mut sandboxes = Some(sandboxes);
    while let Some(event) = stream.next().await {
        match event {
            Ok(Event::Init) => listed.clear(),
            Ok(Event::InitApply(pod)) => {
                if let Some(uid) = &pod.metadata.uid {
                    listed.insert(uid.clone());
                }
                if !is_mirror(&pod) {
                    ctx.workers.update(&ctx, pod, false);
                }
            }
            Ok(Event::InitDone) => {
                let static_uids = crate::staticpods::manifest_uids(&ctx);
                ctx.workers.retain_listed(&listed, &static_uids);
                if !orphans_cleaned {
                    orphans_cleaned = true;
                    let mut keep = listed.clone();
                    keep.extend(static_uids);
                    let ctx = ctx.clone();
                    let sandboxes = sandboxes.take().unwrap_or_default();
                    tokio::spawn(async move { cleanup_orphans(&ctx, &keep, sandboxes).await });
                }
            }
            Ok(Event::Apply(pod)) => {
                if !is_mirror(&pod) {
                    ctx.workers.update(&ctx, pod, false);
                }
            }
            Ok(Event::Delete(pod)) => {
                if let Some(uid) = &pod.metadata.uid
                    && !is_mirror(&pod)
                {
                    ctx.workers.remove(uid);
                }
            }
            Err(e) => tracing::warn!(error = %e, "watching this node's pods"),
        }
    }
    anyhow::bail!("the watch of this node's pods ended")
}

/// Remove what belongs to no pod any more: containers, sandboxes (CNI DEL frees their IPs),
/// pod directories and logs, left by pods deleted while the agent was down.
async fn cleanup_orphans(ctx: &PodContext, keep: &HashSet<String>, sandboxes: Vec<Sandbox>) {
    let orphans = ctx.workers.take_unclaimed(keep);
    for c in &orphans {
        tracing::info!(pod_uid = %c.meta.pod_uid, container = %c.meta.container_name, id = %c.id, "removing the container of a vanished pod");
        if matches!(c.state, runtime::container::ContainerState::Running { .. })
            && let Err(e) = ctx
                .runtime
                .stop_container(&c.id, Duration::from_secs(2))
                .await
        {
            tracing::warn!(id = %c.id, error = %e, "stopping an orphaned container");
        }
        if let Err(e) = ctx.runtime.remove_container(&c.id).await {
            tracing::warn!(id = %c.id, error = %e, "removing an orphaned container");
        }
    }
    let active = ctx.workers.uids();
    let owned = |uid: &str| keep.contains(uid) || active.contains(uid);
    let mut gone_uids: HashSet<String> = orphans.iter().map(|c| c.meta.pod_uid.clone()).collect();
    for sandbox in sandboxes {
        if owned(&sandbox.pod_uid) {
            continue;
        }
        tracing::info!(pod_uid = %sandbox.pod_uid, "removing the sandbox of a vanished pod");
        if let Err(e) = ctx.sandboxes.remove(&sandbox.pod_uid).await {
            tracing::warn!(pod_uid = %sandbox.pod_uid, error = %e, "removing an orphaned sandbox");
        }
        gone_uids.insert(sandbox.pod_uid);
    }
    if let Ok(entries) = std::fs::read_dir(&ctx.volumes.root) {
        for entry in entries.flatten() {
            let uid = entry.file_name().to_string_lossy().into_owned();
            if !owned(&uid) {
                gone_uids.insert(uid);
            }
        }
    }
    for uid in &gone_uids {
        if let Err(e) = ctx.volumes.teardown(uid).await {
            tracing::warn!(pod_uid = %uid, error = %e, "removing an orphaned pod directory");
        }
    }
    if let Ok(entries) = std::fs::read_dir(&ctx.log_root) {
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let uid = name.rsplit('_').next().unwrap_or_default();
            if !uid.is_empty() && !owned(uid) {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
    }
}
