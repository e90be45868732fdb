//! The controller manager: one module a controller, each level-triggered (reconcile a key to
//! its desired state, idempotently, requeue with backoff), each an API client through `kube`.
//!
//! Architecture Invariant: controllers never touch the store; they hold no state they cannot
//! rebuild by listing and watching, so any of them may restart at any time.
//!
//! Controllers are registered in one table ([`registry`]) and started together once this
//! process holds the controller-manager Lease ([`leader`]).

pub mod cronjob;
pub mod daemonset;
pub mod deployment;
pub mod disruption;
pub mod endpoints;
pub mod endpointslice;
pub mod garbagecollector;
pub mod informer;
pub mod job;
pub mod leader;
pub mod localpath;
pub mod namespace;
pub mod nodeipam;
pub mod nodelifecycle;
pub mod persistentvolume;
pub mod podgc;
pub mod replicaset;
pub mod resourcequota;
pub mod serviceaccount;
pub mod statefulset;
pub mod ttlafterfinished;
pub mod util;

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;

/// Settings shared by the controllers.
#[derive(Debug, Clone)]
pub struct ControllerConfig {
    /// Pod network of the cluster; nodes get a /24 each.
    pub cluster_cidr: String,
    /// How long a node may miss its Lease renewals before it is NotReady.
    pub node_monitor_grace_period: Duration,
    /// Where local-path volumes live on the nodes (`<data-dir>/storage` of `rkube server`).
    pub local_storage_path: String,
}

impl Default for ControllerConfig {
    fn default() -> Self {
        ControllerConfig {
            cluster_cidr: "10.42.0.0/16".into(),
            node_monitor_grace_period: Duration::from_secs(40),
            local_storage_path: "/var/lib/rkube/storage".into(),
        }
    }
}

/// What every controller gets.
pub struct Context {
    pub client: kube::Client,
    pub config: ControllerConfig,
    /// Watches and caches of Pods and Nodes shared by every controller (see [`informer`]).
    pub informers: informer::Informers,
}

impl Context {
    pub fn new(client: kube::Client, config: ControllerConfig) -> Context {
        Context {
            informers: informer::Informers::new(client.clone()),
            client,
            config,
        }
    }
}

/// A controller as the registry knows it.
pub struct Registration {
    pub name: &'static str,
    pub start: fn(Arc<Context>) -> BoxFuture<'static, anyhow::Result<()>>,
}

/// Every controller, by name.
pub fn registry() -> Vec<Registration> {
    vec![
        Registration {
            name: "serviceaccount",
            start: |ctx| Box::pin(serviceaccount::run(ctx)),
        },
        Registration {
            // ReplicaSets and ReplicationControllers, sharing one pod watch.
            name: "replicaset",
            start: |ctx| Box::pin(replicaset::run(ctx)),
        },
        Registration {
            name: "deployment",
            start: |ctx| Box::pin(deployment::run(ctx)),
        },
        Registration {
            name: "garbagecollector",
            start: |ctx| Box::pin(garbagecollector::run(ctx)),
        },
        Registration {
            name: "namespace",
            start: |ctx| Box::pin(namespace::run(ctx)),
        },
        Registration {
            name: "endpoints",
            start: |ctx| Box::pin(endpoints::run(ctx)),
        },
        Registration {
            name: "endpointslice",
            start: |ctx| Box::pin(endpointslice::run(ctx)),
        },
        Registration {
            name: "job",
            start: |ctx| Box::pin(job::run(ctx)),
        },
        Registration {
            name: "cronjob",
            start: |ctx| Box::pin(cronjob::run(ctx)),
        },
        Registration {
            name: "ttlafterfinished",
            start: |ctx| Box::pin(ttlafterfinished::run(ctx)),
        },
        Registration {
            name: "resourcequota",
            start: |ctx| Box::pin(resourcequota::run(ctx)),
        },
        Registration {
            name: "disruption",
            start: |ctx| Box::pin(disruption::run(ctx)),
        },
        Registration {
            name: "nodelifecycle",
            start: |ctx| Box::pin(nodelifecycle::run(ctx)),
        },
        Registration {
            name: "nodeipam",
            start: |ctx| Box::pin(nodeipam::run(ctx)),
        },
        Registration {
            name: "podgc",
            start: |ctx| Box::pin(podgc::run(ctx)),
        },
        Registration {
            name: "statefulset",
            start: |ctx| Box::pin(statefulset::run(ctx)),
        },
        Registration {
            name: "daemonset",
            start: |ctx| Box::pin(daemonset::run(ctx)),
        },
        Registration {
            name: "persistentvolume-binder",
            start: |ctx| Box::pin(persistentvolume::run(ctx)),
        },
        Registration {
            // k3s's dynamic provisioner for the default `local-path` StorageClass.
            name: "local-path-provisioner",
            start: |ctx| Box::pin(localpath::run(ctx)),
        },
    ]
}

/// Run every registered controller (restarting any that fails) for as long as `leading` is true.
pub async fn run_all(ctx: Arc<Context>) {
    // Shared watches of this term: they stop with it, like the controllers.
    let ctx = Arc::new(Context::new(ctx.client.clone(), ctx.config.clone()));
    let mut tasks = tokio::task::JoinSet::new();
    for registration in registry() {
        let ctx = ctx.clone();
        tasks.spawn(async move {
            loop {
                tracing::info!(controller = registration.name, "starting controller");
                match (registration.start)(ctx.clone()).await {
                    Ok(()) => tracing::warn!(controller = registration.name, "controller stopped; restarting"),
                    Err(e) => tracing::error!(controller = registration.name, error = %e, "controller failed; restarting"),
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        });
    }
    while tasks.join_next().await.is_some() {}
}

/// A client for an in-process component, from a kubeconfig document.
pub async fn client_from_kubeconfig_yaml(yaml: &str) -> anyhow::Result<kube::Client> {
    let kubeconfig = kube::config::Kubeconfig::from_yaml(yaml)?;
    let config = kube::Config::from_custom_kubeconfig(
        kubeconfig,
        &kube::config::KubeConfigOptions::default(),
    )
    .await?;
    Ok(kube::Client::try_from(config)?)
}

/// The requeue delay after a failed reconcile: exponential from 100 ms to 1 min, as upstream's
/// default rate limiter.
pub fn backoff(attempt: u32) -> Duration {
    Duration::from_millis(100u64.saturating_mul(1u64 << attempt.min(10)))
        .min(Duration::from_secs(60))
}
