//! EndpointSlice controller: for every Service with a selector, discovery.k8s.io/v1 IPv4
//! EndpointSlices (labelled `kubernetes.io/service-name` and managed by
//! `endpointslice-controller.k8s.io`, owned by the Service) listing the selected pods with
//! their ready/serving/terminating conditions, at most 100 endpoints a slice
//! ([`reconciler`] packs them). Slices of a Service that is gone or lost its selector are
//! deleted (the garbage collector would too, through the owner reference).

pub mod reconciler;

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use futures::StreamExt;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::Resource;
use kube::api::{Api, DeleteParams, PostParams};
use kube::runtime::WatchStreamExt;
use kube::runtime::events::{Event as Recorded, EventType, Recorder, Reporter};
use kube::runtime::watcher;

use crate::Context;
use crate::endpoints::cache::{self, Cache, Change, ServiceKey, changes, is_newer};
use crate::util::{Outcome, WorkQueue, run_workers};
use reconciler::{CONTROLLER_NAME, MANAGED_BY_LABEL, MAX_ENDPOINTS_PER_SLICE, SERVICE_NAME_LABEL};

const WORKERS: usize = 5;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{verb} endpointslice for service {namespace}/{service}: {source}")]
    Write {
        verb: &'static str,
        namespace: String,
        service: String,
        source: kube::Error,
    },
}

struct State {
    client: kube::Client,
    cache: Arc<RwLock<Cache>>,
    /// Managed slices by service, then by slice name.
    slices: RwLock<HashMap<ServiceKey, HashMap<String, Arc<EndpointSlice>>>>,
    recorder: Recorder,
}

fn service_key_of(slice: &EndpointSlice) -> Option<(ServiceKey, String)> {
    let ns = slice.metadata.namespace.clone()?;
    let service = slice
        .metadata
        .labels
        .as_ref()?
        .get(SERVICE_NAME_LABEL)?
        .clone();
    Some(((ns, service), slice.metadata.name.clone()?))
}

pub async fn run(ctx: Arc<Context>) -> anyhow::Result<()> {
    let queue: Arc<WorkQueue<ServiceKey>> = WorkQueue::new();
    let state = Arc::new(State {
        client: ctx.client.clone(),
        cache: Arc::new(RwLock::new(Cache::default())),
        slices: RwLock::new(HashMap::new()),
        recorder: Recorder::new(
            ctx.client.clone(),
            Reporter {
                controller: "endpoint-slice-controller".into(),
                instance: None,
            },
        ),
    });
    let (synced_tx, mut synced_rx) = tokio::sync::watch::channel(false);
    let (slices_synced_tx, mut slices_synced_rx) = tokio::sync::watch::channel(false);
    let mut tasks = tokio::task::JoinSet::new();
    tasks.spawn(cache::run_sources(
        ctx.client.clone(),
        (ctx.informers.pods(), ctx.informers.nodes()),
        state.cache.clone(),
        queue.clone(),
        true,
        synced_tx,
    ));
    tasks.spawn(watch_slices(state.clone(), queue.clone(), slices_synced_tx));
    let _ = synced_rx.wait_for(|s| *s).await;
    let _ = slices_synced_rx.wait_for(|s| *s).await;
    tracing::info!("endpointslice controller synced; starting workers");
    let worker_state = state.clone();
    tasks.spawn(run_workers(queue, WORKERS, move |key| {
        let state = worker_state.clone();
        async move {
            match sync_service(&state, &key).await {
                Ok(()) => Outcome::Done,
                Err(e) => {
                    tracing::warn!(error = %e, "endpointslice controller");
                    Outcome::Retry
                }
            }
        }
    }));
    while tasks.join_next().await.is_some() {}
    anyhow::bail!("endpointslice controller tasks ended")
}

async fn watch_slices(
    state: Arc<State>,
    queue: Arc<WorkQueue<ServiceKey>>,
    synced: tokio::sync::watch::Sender<bool>,
) {
    let config =
        watcher::Config::default().labels(&format!("{MANAGED_BY_LABEL}={CONTROLLER_NAME}"));
    let stream = changes(
        watcher::watcher(Api::<EndpointSlice>::all(state.client.clone()), config).default_backoff(),
    );
    futures::pin_mut!(stream);
    while let Some(change) = stream.next().await {
        let mut keys = Vec::new();
        {
            let mut map = state.slices.write().unwrap_or_else(|e| e.into_inner());
            match change {
                Change::Upsert(slice) => {
                    if let Some((key, name)) = service_key_of(&slice) {
                        let slices = map.entry(key.clone()).or_default();
                        let newer = slices
                            .get(&name)
                            .is_none_or(|old| is_newer(&slice.metadata, &old.metadata));
                        if newer {
                            slices.insert(name, Arc::new(slice));
                        }
                        keys.push(key);
                    }
                }
                Change::Remove(slice) => {
                    if let Some((key, name)) = service_key_of(&slice) {
                        if let Some(slices) = map.get_mut(&key) {
                            slices.remove(&name);
                        }
                        keys.push(key);
                    }
                }
                Change::Replace(all) => {
                    keys.extend(map.keys().cloned());
                    map.clear();
                    for slice in all {
                        if let Some((key, name)) = service_key_of(&slice) {
                            map.entry(key.clone())
                                .or_default()
                                .insert(name, Arc::new(slice));
                            keys.push(key);
                        }
                    }
                    let _ = synced.send(true);
                }
            }
        }
        for key in keys {
            queue.add(key);
        }
    }
}

async fn sync_service(state: &State, key: &ServiceKey) -> Result<(), Error> {
    let (namespace, name) = key;
    let (service, pods) = {
        let c = state.cache.read().unwrap_or_else(|e| e.into_inner());
        let service = c.service(key);
        let pods = service
            .as_ref()
            .map(|s| c.selected_pods(s))
            .unwrap_or_default();
        (service, pods)
    };
    let existing: Vec<EndpointSlice> = state
        .slices
        .read()
        .unwrap_or_else(|e| e.into_inner())
        .get(key)
        .map(|m| m.values().map(|s| (**s).clone()).collect())
        .unwrap_or_default();
    let api: Api<EndpointSlice> = Api::namespaced(state.client.clone(), namespace);
    let error = |verb: &'static str, source| Error::Write {
        verb,
        namespace: namespace.clone(),
        service: name.clone(),
        source,
    };
    let plan = match &service {
        Some(service) if cache::selector(service).is_some() => {
            let desired = {
                let c = state.cache.read().unwrap_or_else(|e| e.into_inner());
                reconciler::desired_endpoints(service, &pods, |node| c.zone(node))
            };
            reconciler::plan(service, &existing, &desired, MAX_ENDPOINTS_PER_SLICE)
        }
        // Gone, or no longer selecting pods: its managed slices go.
        _ => reconciler::Plan {
            delete: existing,
            ..Default::default()
        },
    };
    if plan.is_empty() {
        return Ok(());
    }
    let mut written: Vec<EndpointSlice> = Vec::new();
    let mut deleted: Vec<String> = Vec::new();
    let result: Result<(), Error> = async {
        for slice in &plan.delete {
            let Some(slice_name) = slice.metadata.name.as_deref() else {
                continue;
            };
            match api.delete(slice_name, &DeleteParams::default()).await {
                Ok(_) => {}
                Err(kube::Error::Api(e)) if e.code == 404 => {}
                Err(e) => return Err(error("deleting", e)),
            }
            deleted.push(slice_name.to_string());
        }
        for slice in &plan.update {
            let Some(slice_name) = slice.metadata.name.as_deref() else {
                continue;
            };
            written.push(
                api.replace(slice_name, &PostParams::default(), slice)
                    .await
                    .map_err(|e| error("updating", e))?,
            );
        }
        for slice in &plan.create {
            match api.create(&PostParams::default(), slice).await {
                Ok(created) => written.push(created),
                // The namespace is being deleted: its slices are not needed.
                Err(kube::Error::Api(e)) if crate::endpoints::is_namespace_terminating(&e) => {}
                Err(e) => return Err(error("creating", e)),
            }
        }
        Ok(())
    }
    .await;
    // What we wrote is cached at once, so the next sync does not act on a stale view.
    {
        let mut map = state.slices.write().unwrap_or_else(|e| e.into_inner());
        let slices = map.entry(key.clone()).or_default();
        for name in &deleted {
            slices.remove(name);
        }
        for slice in written {
            if let Some(slice_name) = slice.metadata.name.clone() {
                slices.insert(slice_name, Arc::new(slice));
            }
        }
    }
    tracing::info!(
        service = %format!("{namespace}/{name}"),
        created = plan.create.len(),
        updated = plan.update.len(),
        deleted = plan.delete.len(),
        endpoints = pods.len(),
        "reconciled endpointslices"
    );
    if let (Err(e), Some(service)) = (&result, &service) {
        let event = Recorded {
            type_: EventType::Warning,
            reason: "FailedToUpdateEndpointSlices".into(),
            note: Some(format!(
                "Error updating Endpoint Slices for Service {namespace}/{name}: {e}"
            )),
            action: "Update".into(),
            secondary: None,
        };
        if let Err(err) = state
            .recorder
            .publish(&event, &service.object_ref(&()))
            .await
        {
            tracing::debug!(error = %err, "recording event");
        }
    }
    result
}
