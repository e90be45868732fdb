//! The scheduler: a plugin framework like kube-scheduler's (queue, cache and snapshot,
//! PreFilter/Filter/PostFilter/PreScore/Score/Reserve/Bind plugins), binding pending pods to
//! nodes through `pods/binding`, preempting lower-priority pods when that makes room.
//!
//! It is an API client like any other: informers (reflectors) of nodes, pods, namespaces and
//! PriorityClasses feed one scheduling loop; binding, status updates and events happen off the
//! loop. Only the holder of the `kube-scheduler` Lease schedules.

pub mod cache;
pub mod framework;
pub mod metrics;
pub mod plugins;
pub mod queue;
pub mod resource;
pub mod scheduler;

use std::sync::Arc;

use futures::{Stream, StreamExt};
use k8s_openapi::api::core::v1::{Namespace, Node, PersistentVolume, PersistentVolumeClaim, Pod};
use k8s_openapi::api::scheduling::v1::PriorityClass;
use k8s_openapi::api::storage::v1::StorageClass;
use kube::api::Api;
use kube::runtime::{WatchStreamExt, reflector, watcher};
use tokio::sync::mpsc;

pub use framework::Framework;
pub use scheduler::{DEFAULT_SCHEDULER_NAME, Msg, Scheduler};

/// The Lease the schedulers of a cluster elect their leader on.
pub const LEASE_NAME: &str = "kube-scheduler";

/// Run the scheduler with leader election on the `kube-scheduler` Lease, until the process ends.
pub async fn run(client: kube::Client, identity: String) {
    let election = controllers::leader::LeaderElection::new(LEASE_NAME, &identity);
    let lead_client = client.clone();
    election
        .run(client, move || lead(lead_client.clone(), identity.clone()))
        .await;
}

/// Schedule until the future is dropped (the lease was lost): informers, loop and workers.
pub async fn lead(client: kube::Client, identity: String) {
    tracing::info!(%identity, "scheduler starting");
    let (tx, rx) = mpsc::unbounded_channel();
    let mut tasks = tokio::task::JoinSet::new();

    let (classes, writer) = reflector::store::<PriorityClass>();
    let stream = reflector(
        writer,
        watcher(
            Api::<PriorityClass>::all(client.clone()),
            watcher::Config::default(),
        )
        .default_backoff(),
    );
    tasks.spawn(forward(stream, tx.clone(), |_| {
        Some(Msg::PriorityClassesChanged)
    }));
    // Priorities must be known before pods are queued.
    if classes.wait_until_ready().await.is_err() {
        tracing::warn!("priority class informer stopped before syncing");
    }

    let stream = watcher(
        Api::<Namespace>::all(client.clone()),
        watcher::Config::default(),
    )
    .default_backoff();
    tasks.spawn(forward(stream, tx.clone(), |e| Some(Msg::Namespace(e))));

    // The cache keeps the nodes: no reflector store of them besides.
    let stream = watcher(Api::<Node>::all(client.clone()), watcher::Config::default())
        .default_backoff()
        .modify(|n: &mut Node| n.metadata.managed_fields = None);
    tasks.spawn(forward(stream, tx.clone(), |e| Some(Msg::Node(e))));

    // The cache and the queue keep the pods: no reflector store of them besides (with
    // thousands of pods, every copy of them counts).
    let stream = watcher(Api::<Pod>::all(client.clone()), watcher::Config::default())
        .default_backoff()
        .modify(|p: &mut Pod| p.metadata.managed_fields = None);
    tasks.spawn(forward(stream, tx.clone(), |e| Some(Msg::Pod(e))));

    let volume_listers = watch_storage(&client, &tx, &mut tasks).await;
    let mut framework = Framework::default_profile();
    framework.replace_plugin(plugins::volume_binding::with_listers(volume_listers));

    let scheduler = Scheduler::new(client, &identity, Arc::new(framework), classes, tx);
    scheduler.run(rx).await;
    tasks.abort_all();
}

/// Informers of claims, volumes and classes for VolumeBinding; their changes retry the pods it
/// rejected. Returns once they are synced.
async fn watch_storage(
    client: &kube::Client,
    tx: &mpsc::UnboundedSender<Msg>,
    tasks: &mut tokio::task::JoinSet<()>,
) -> plugins::volume_binding::VolumeListers {
    let (claims, writer) = reflector::store::<PersistentVolumeClaim>();
    let stream = reflector(
        writer,
        watcher(
            Api::<PersistentVolumeClaim>::all(client.clone()),
            watcher::Config::default(),
        )
        .default_backoff(),
    );
    tasks.spawn(forward(stream, tx.clone(), |_| Some(Msg::StorageChanged)));
    let (volumes, writer) = reflector::store::<PersistentVolume>();
    let stream = reflector(
        writer,
        watcher(
            Api::<PersistentVolume>::all(client.clone()),
            watcher::Config::default(),
        )
        .default_backoff(),
    );
    tasks.spawn(forward(stream, tx.clone(), |_| Some(Msg::StorageChanged)));
    let (classes, writer) = reflector::store::<StorageClass>();
    let stream = reflector(
        writer,
        watcher(
            Api::<StorageClass>::all(client.clone()),
            watcher::Config::default(),
        )
        .default_backoff(),
    );
    tasks.spawn(forward(stream, tx.clone(), |_| Some(Msg::StorageChanged)));
    for ready in [
        claims.wait_until_ready().await,
        volumes.wait_until_ready().await,
        classes.wait_until_ready().await,
    ] {
        if ready.is_err() {
            tracing::warn!("storage informer stopped before syncing");
        }
    }
    plugins::volume_binding::VolumeListers {
        claims,
        volumes,
        classes,
    }
}

/// Send each watch event into the loop; watch errors are retried by the backoff.
async fn forward<K, S>(
    stream: S,
    tx: mpsc::UnboundedSender<Msg>,
    wrap: impl Fn(watcher::Event<K>) -> Option<Msg>,
) where
    S: Stream<Item = Result<watcher::Event<K>, watcher::Error>>,
{
    let mut stream = std::pin::pin!(stream);
    while let Some(item) = stream.next().await {
        match item {
            Ok(event) => {
                if let Some(msg) = wrap(event)
                    && tx.send(msg).is_err()
                {
                    return;
                }
            }
            Err(e) => tracing::warn!(error = %e, "scheduler watch failed; retrying"),
        }
    }
}
