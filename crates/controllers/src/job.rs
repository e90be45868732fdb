//! The Job controller: runs pods from a Job's template until enough succeed (`completions`,
//! `parallelism`, NonIndexed or Indexed), or the Job fails (`backoffLimit` with exponential
//! backoff between pods, `backoffLimitPerIndex`, `activeDeadlineSeconds`, `podFailurePolicy`).
//!
//! Pods carry the `batch.kubernetes.io/job-tracking` finalizer until counted, so the counts in
//! status survive pods being deleted: a finished pod is first listed in
//! `status.uncountedTerminatedPods`, then its finalizer is removed, then it moves to the
//! `succeeded`/`failed` counters. Finished Jobs get the interim `SuccessCriteriaMet` /
//! `FailureTarget` condition first and `Complete` / `Failed` once no pod is terminating.
//!
//! The controller keeps reflector caches of Jobs and of the pods Jobs own (selected by the
//! `batch.kubernetes.io/controller-uid` label), an index from Job to pods, and expectations of
//! its own writes, so a stale cache never makes it create a pod twice.

mod backoff;
mod failure_policy;
mod indexes;
pub(crate) mod logic;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::batch::v1::{Job, JobCondition, UncountedTerminatedPods};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::{self, Action, ReconcileRequest};
use kube::runtime::events::{EventType, Reporter};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use tokio::sync::mpsc;

use self::indexes::IndexSet;
use self::logic::*;
use crate::{Context, util};

/// The label every Job pod carries (set by the API server's Job defaulting); the pod watch
/// selects on it.
const CONTROLLER_UID_LABEL: &str = "batch.kubernetes.io/controller-uid";
/// `spec.managedBy` of Jobs this controller manages (or none).
const JOB_CONTROLLER_NAME: &str = "kubernetes.io/job-controller";
/// Expectations older than this are given up on (upstream `ExpectationsTimeout`).
const EXPECTATIONS_TIMEOUT: Duration = Duration::from_secs(300);
/// How long a sync waits for the cache to show the Job's last status write.
const STALE_CACHE_WAIT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("updating the status of job {key}: {source}")]
    UpdateStatus { key: String, source: kube::Error },
    #[error("creating a pod for job {key}: {source}")]
    CreatePod { key: String, source: kube::Error },
    #[error("deleting pod {namespace}/{name}: {source}")]
    DeletePod {
        namespace: String,
        name: String,
        source: kube::Error,
    },
    #[error("removing the job-tracking finalizer from pod {namespace}/{name}: {source}")]
    RemoveFinalizer {
        namespace: String,
        name: String,
        source: kube::Error,
    },
}

/// Writes the controller made and has not yet seen in its cache, per Job uid.
#[derive(Default)]
struct Pending {
    /// Names of pods created.
    creates: HashSet<String>,
    /// Uids of pods deleted.
    deletes: HashSet<String>,
    /// Uids of pods whose finalizer was removed.
    finalizers: HashSet<String>,
    since: Option<Instant>,
}

impl Pending {
    fn touch(&mut self) {
        self.since.get_or_insert_with(Instant::now);
    }
}

pub struct JobController {
    client: kube::Client,
    jobs: Store<Job>,
    pods: Store<Pod>,
    /// The pods each Job controls.
    pods_by_job: util::OwnerIndex,
    expectations: Mutex<HashMap<String, Pending>>,
    /// Job uid → the resourceVersion of our last status write and when: a cache older than that
    /// would count pods twice (their finalizers are gone but the counts are not in it yet).
    written: Mutex<HashMap<String, (u64, Instant)>>,
    ready: AtomicBool,
    reporter: Reporter,
    orphans: mpsc::UnboundedSender<Arc<Pod>>,
}

pub async fn run(ctx: Arc<Context>) -> anyhow::Result<()> {
    let client = ctx.client.clone();
    let (jobs, job_writer) = reflector::store::<Job>();
    let (pods, pod_writer) = reflector::store::<Pod>();
    let (orphans_tx, orphans_rx) = mpsc::unbounded_channel();
    let controller = Arc::new(JobController {
        client: client.clone(),
        jobs: jobs.clone(),
        pods: pods.clone(),
        pods_by_job: util::OwnerIndex::default(),
        expectations: Mutex::default(),
        written: Mutex::default(),
        ready: AtomicBool::new(false),
        reporter: Reporter {
            controller: "job-controller".into(),
            instance: None,
        },
        orphans: orphans_tx,
    });
    {
        let c = controller.clone();
        tokio::spawn(async move {
            // Only the pod store: the applier waits for the Job store, and a store wakes
            // just one of several waiters. Reconciles run once the Job store is ready.
            if c.pods.wait_until_ready().await.is_ok() {
                c.ready.store(true, Ordering::Release);
                tracing::info!("job controller caches synced");
            }
        });
    }
    let orphan_task = tokio::spawn(remove_orphan_finalizers(controller.clone(), orphans_rx));

    let job_events = {
        let c = controller.clone();
        reflector::reflector(
            job_writer,
            watcher(Api::<Job>::all(client.clone()), watcher::Config::default()).default_backoff(),
        )
        .touched_objects()
        .map_ok(move |job| {
            c.job_touched(&job);
            ReconcileRequest::from(ObjectRef::from_obj(&job))
        })
    };
    let pod_events = {
        let c = controller.clone();
        reflector::reflector(
            pod_writer,
            watcher(
                Api::<Pod>::all(client.clone()),
                watcher::Config::default().labels(CONTROLLER_UID_LABEL),
            )
            .default_backoff(),
        )
        .touched_objects()
        .try_filter_map(move |pod| {
            let request = c.pod_touched(pod);
            futures::future::ready(Ok(request))
        })
    };
    let queue = futures::stream::select(job_events, pod_events);
    controller::applier(
        |job, c| Box::pin(reconcile(job, c)),
        error_policy,
        controller,
        jobs,
        queue,
        controller::Config::default(),
    )
    .for_each(|result| async move {
        if let Err(e) = result {
            match e {
                controller::Error::ObjectNotFound(_) => {}
                e => tracing::debug!(error = %e, "job reconcile"),
            }
        }
    })
    .await;
    orphan_task.abort();
    Ok(())
}

impl JobController {
    /// A Job changed or went away; a deleted Job's pods lose their finalizers.
    fn job_touched(&self, job: &Job) {
        if self.jobs.get(&ObjectRef::from_obj(job)).is_some() {
            return;
        }
        let Some(uid) = job.metadata.uid.clone() else {
            return;
        };
        let pods = self.pods_of(job.namespace().as_deref().unwrap_or(""), &uid);
        for pod in pods {
            let _ = self.orphans.send(pod);
        }
        self.pods_by_job.remove_owner(&uid);
        self.expectations.lock().unwrap().remove(&uid);
        self.written.lock().unwrap().remove(&uid);
    }

    /// Index a pod under its Job and ask for that Job's sync.
    fn pod_touched(&self, pod: Pod) -> Option<ReconcileRequest<Job>> {
        if has_tracking_finalizer(&pod) {
            let _ = self.orphans.send(Arc::new(pod.clone()));
        }
        let owner = self.pods_by_job.observe(&pod, "Job")?;
        let namespace = pod.metadata.namespace.clone().unwrap_or_default();
        Some(ReconcileRequest::from(
            ObjectRef::<Job>::new(&owner.name).within(&namespace),
        ))
    }

    /// The pods the Job (by uid) controls, from the cache.
    fn pods_of(&self, namespace: &str, job_uid: &str) -> Vec<Arc<Pod>> {
        self.pods_by_job.owned_by(&self.pods, namespace, job_uid)
    }

    /// Whether every write recorded for the Job shows in the cache (or is too old to wait for);
    /// also the uids of pods whose finalizer removal is not yet seen.
    fn expectations(&self, job_uid: &str, pods: &[Arc<Pod>]) -> (bool, HashSet<String>) {
        let mut all = self.expectations.lock().unwrap();
        let Some(pending) = all.get_mut(job_uid) else {
            return (true, HashSet::new());
        };
        let names: HashSet<&str> = pods
            .iter()
            .filter_map(|p| p.metadata.name.as_deref())
            .collect();
        let by_uid: HashMap<&str, &Pod> = pods.iter().map(|p| (uid(p), p.as_ref())).collect();
        pending.creates.retain(|n| !names.contains(n.as_str()));
        pending.deletes.retain(|u| {
            by_uid
                .get(u.as_str())
                .is_some_and(|p| p.metadata.deletion_timestamp.is_none())
        });
        pending.finalizers.retain(|u| {
            by_uid
                .get(u.as_str())
                .is_some_and(|p| has_tracking_finalizer(p))
        });
        let expired = pending
            .since
            .is_some_and(|s| s.elapsed() > EXPECTATIONS_TIMEOUT);
        let empty = pending.creates.is_empty()
            && pending.deletes.is_empty()
            && pending.finalizers.is_empty();
        if empty || expired {
            all.remove(job_uid);
            return (true, HashSet::new());
        }
        let satisfied = pending.creates.is_empty() && pending.deletes.is_empty();
        (satisfied, pending.finalizers.clone())
    }

    fn expect(&self, job_uid: &str, f: impl FnOnce(&mut Pending)) {
        let mut all = self.expectations.lock().unwrap();
        let pending = all.entry(job_uid.to_string()).or_default();
        pending.touch();
        f(pending);
    }

    fn event(&self, job: &Job, type_: EventType, reason: &str, note: String) {
        util::record_event(
            &self.client,
            &self.reporter,
            job,
            type_,
            reason,
            reason,
            note,
        );
    }

    async fn update_status(&self, job: &Job) -> Result<Job, Error> {
        let ns = job.namespace().unwrap_or_default();
        let api: Api<Job> = Api::namespaced(self.client.clone(), &ns);
        let written = api
            .replace_status(&job.name_any(), &PostParams::default(), job)
            .await
            .map_err(|source| Error::UpdateStatus {
                key: format!("{ns}/{}", job.name_any()),
                source,
            })?;
        if let (Some(uid), Some(rv)) = (written.uid(), written.resource_version())
            && let Ok(rv) = rv.parse::<u64>()
        {
            self.written
                .lock()
                .unwrap()
                .insert(uid, (rv, Instant::now()));
        }
        Ok(written)
    }

    /// Whether the cached Job predates our last status write (resourceVersions of this API
    /// server are increasing numbers; give up waiting after a few seconds).
    fn cache_is_stale(&self, job: &Job) -> bool {
        let Some(uid) = job.metadata.uid.as_deref() else {
            return false;
        };
        let mut written = self.written.lock().unwrap();
        let Some((rv, at)) = written.get(uid).copied() else {
            return false;
        };
        let cached = job.resource_version().and_then(|v| v.parse::<u64>().ok());
        match cached {
            Some(cached) if cached < rv && at.elapsed() < STALE_CACHE_WAIT => true,
            _ => {
                written.remove(uid);
                false
            }
        }
    }

    /// Remove the tracking finalizer; true once it is gone (or the pod is).
    async fn remove_finalizer(&self, pod: &Pod) -> Result<(), Error> {
        let ns = pod.namespace().unwrap_or_default();
        let api: Api<Pod> = Api::namespaced(self.client.clone(), &ns);
        let patch = serde_json::json!({
            "metadata": { "$deleteFromPrimitiveList/finalizers": [TRACKING_FINALIZER] }
        });
        match api
            .patch(
                &pod.name_any(),
                &PatchParams::default(),
                &Patch::Strategic(patch),
            )
            .await
        {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
            Err(source) => Err(Error::RemoveFinalizer {
                namespace: ns,
                name: pod.name_any(),
                source,
            }),
        }
    }

    /// Remove finalizers concurrently; which succeeded, and the first error.
    async fn remove_finalizers(&self, job_uid: &str, pods: &[&Pod]) -> (Vec<bool>, Option<Error>) {
        self.expect(job_uid, |p| {
            p.finalizers.extend(pods.iter().map(|p| uid(p).to_string()));
        });
        let results =
            futures::future::join_all(pods.iter().map(|p| self.remove_finalizer(p))).await;
        let mut first_error = None;
        let mut done = Vec::with_capacity(results.len());
        let mut failed_uids = Vec::new();
        for (pod, r) in pods.iter().zip(results) {
            match r {
                Ok(()) => done.push(true),
                Err(e) => {
                    failed_uids.push(uid(pod).to_string());
                    first_error.get_or_insert(e);
                    done.push(false);
                }
            }
        }
        if !failed_uids.is_empty() {
            self.expect(job_uid, |p| {
                for u in &failed_uids {
                    p.finalizers.remove(u);
                }
            });
        }
        (done, first_error)
    }

    /// Delete pods (after removing their finalizer when `uncount`, as for suspension and
    /// scale-down, where they are not counted as failures); (ready deleted, deleted, error).
    async fn delete_pods(
        &self,
        job: &Job,
        pods: &[&Pod],
        uncount: bool,
    ) -> (i32, i32, Option<Error>) {
        let job_uid = job.uid().unwrap_or_default();
        self.expect(&job_uid, |p| {
            p.deletes.extend(pods.iter().map(|p| uid(p).to_string()));
        });
        let results = futures::future::join_all(pods.iter().map(|pod| async move {
            if uncount && has_tracking_finalizer(pod) {
                self.remove_finalizer(pod).await?;
            }
            let ns = pod.namespace().unwrap_or_default();
            let api: Api<Pod> = Api::namespaced(self.client.clone(), &ns);
            match api.delete(&pod.name_any(), &DeleteParams::default()).await {
                Ok(_) => Ok(true),
                Err(kube::Error::Api(e)) if e.code == 404 => Ok(false),
                Err(source) => Err(Error::DeletePod {
                    namespace: ns,
                    name: pod.name_any(),
                    source,
                }),
            }
        }))
        .await;
        let (mut ready, mut deleted, mut first_error) = (0, 0, None);
        let mut unobserved = Vec::new();
        for (pod, r) in pods.iter().zip(results) {
            match r {
                Ok(really) => {
                    deleted += 1;
                    if util::is_pod_ready(pod) {
                        ready += 1;
                    }
                    if really {
                        tracing::info!(job = %key(job), pod = %pod.name_any(), "deleted pod");
                        self.event(
                            job,
                            EventType::Normal,
                            "SuccessfulDelete",
                            format!("Deleted pod: {}", pod.name_any()),
                        );
                    } else {
                        unobserved.push(uid(pod).to_string());
                    }
                }
                Err(e) => {
                    unobserved.push(uid(pod).to_string());
                    self.event(
                        job,
                        EventType::Warning,
                        "FailedDelete",
                        format!("Error deleting: {e}"),
                    );
                    first_error.get_or_insert(e);
                }
            }
        }
        self.expect(&job_uid, |p| {
            for u in &unobserved {
                p.deletes.remove(u);
            }
        });
        (ready, deleted, first_error)
    }

    /// Create pods (one per index given, or `count` for NonIndexed) in slow-start batches of
    /// 1, 2, 4, …; stops at the first failing batch. Returns how many were created.
    async fn create_pods(
        &self,
        job: &Job,
        count: usize,
        indexes: &[i32],
        previous_failures: &BTreeMap<i32, &Pod>,
    ) -> (i32, Option<Error>) {
        let job_uid = job.uid().unwrap_or_default();
        let per_index = backoff_limit_per_index(job).is_some();
        let templates: Vec<Pod> = if is_indexed(job) {
            indexes
                .iter()
                .map(|ix| {
                    let counts = per_index
                        .then(|| next_failure_counts(job, previous_failures.get(ix).copied()));
                    new_pod(job, Some(*ix), counts)
                })
                .collect()
        } else {
            (0..count).map(|_| new_pod(job, None, None)).collect()
        };
        let ns = job.namespace().unwrap_or_default();
        let api: Api<Pod> = Api::namespaced(self.client.clone(), &ns);
        let mut created = 0;
        let mut batch = 1usize;
        let mut rest = templates.as_slice();
        while !rest.is_empty() {
            let (now, later) = rest.split_at(batch.min(rest.len()));
            rest = later;
            let results = futures::future::join_all(now.iter().map(|pod| {
                let mut pod = pod.clone();
                // Pods of a manual selector lack the label the pod watch selects on.
                pod.labels_mut()
                    .entry(CONTROLLER_UID_LABEL.into())
                    .or_insert_with(|| job_uid.clone());
                let api = api.clone();
                async move { api.create(&PostParams::default(), &pod).await }
            }))
            .await;
            let mut error = None;
            for r in results {
                match r {
                    Ok(pod) => {
                        created += 1;
                        let name = pod.name_any();
                        self.expect(&job_uid, |p| {
                            p.creates.insert(name.clone());
                        });
                        tracing::info!(job = %key(job), pod = %name, "created pod");
                        self.event(
                            job,
                            EventType::Normal,
                            "SuccessfulCreate",
                            format!("Created pod: {name}"),
                        );
                    }
                    Err(source) => {
                        let namespace_terminating = matches!(&source, kube::Error::Api(e) if e.code == 403 && e.message.contains("being terminated"));
                        if !namespace_terminating {
                            self.event(
                                job,
                                EventType::Warning,
                                "FailedCreate",
                                format!("Error creating: {source}"),
                            );
                        }
                        error.get_or_insert(Error::CreatePod {
                            key: key(job),
                            source,
                        });
                    }
                }
            }
            if error.is_some() {
                return (created, error);
            }
            batch *= 2;
        }
        (created, None)
    }
}

fn key(job: &Job) -> String {
    format!("{}/{}", job.namespace().unwrap_or_default(), job.name_any())
}

fn error_policy(job: Arc<Job>, error: &Error, _c: Arc<JobController>) -> Action {
    tracing::warn!(job = %key(&job), %error, "job sync failed");
    Action::requeue(Duration::from_secs(1))
}

/// What one sync found and decided, threaded through its steps.
struct Sync<'a> {
    job: Job,
    pods: Vec<&'a Pod>,
    active_pods: Vec<&'a Pod>,
    active: i32,
    ready: i32,
    terminating: i32,
    succeeded: i32,
    expected_rm: HashSet<String>,
    uncounted_succeeded: HashSet<String>,
    uncounted_failed: HashSet<String>,
    prev_succeeded_indexes: IndexSet,
    succeeded_indexes: IndexSet,
    failed_indexes: Option<IndexSet>,
    delayed: BTreeMap<i32, &'a Pod>,
    backoff: backoff::Record,
    finished: Option<JobCondition>,
    requeue: Option<Duration>,
    now: Timestamp,
}

impl Sync<'_> {
    fn requeue_after(&mut self, d: Duration) {
        self.requeue = Some(self.requeue.map_or(d, |r| r.min(d)));
    }
}

async fn reconcile(shared: Arc<Job>, c: Arc<JobController>) -> Result<Action, Error> {
    if !c.ready.load(Ordering::Acquire) {
        return Ok(Action::requeue(Duration::from_millis(200)));
    }
    let managed_by = shared.spec.as_ref().and_then(|s| s.managed_by.as_deref());
    if managed_by.is_some_and(|m| m != JOB_CONTROLLER_NAME) {
        return Ok(Action::await_change());
    }
    let Some(job_uid) = shared.uid() else {
        return Ok(Action::await_change());
    };
    let namespace = shared.namespace().unwrap_or_default();
    let owned = c.pods_of(&namespace, &job_uid);
    let pods: Vec<&Pod> = owned.iter().map(|p| p.as_ref()).collect();

    if finished_type(&shared).is_some() {
        // Leftovers, e.g. pods counted just before a restart.
        let leftover: Vec<&Pod> = pods
            .iter()
            .copied()
            .filter(|p| has_tracking_finalizer(p))
            .collect();
        if !leftover.is_empty() {
            let (_, err) = c.remove_finalizers(&job_uid, &leftover).await;
            if let Some(e) = err {
                return Err(e);
            }
        }
        return Ok(Action::await_change());
    }
    if let Some(mode) = shared
        .spec
        .as_ref()
        .and_then(|s| s.completion_mode.as_deref())
        && mode != "Indexed"
        && mode != "NonIndexed"
    {
        c.event(
            &shared,
            EventType::Warning,
            "UnknownCompletionMode",
            "Skipped Job sync because completion mode is unknown".into(),
        );
        return Ok(Action::await_change());
    }

    if c.cache_is_stale(&shared) {
        return Ok(Action::requeue(Duration::from_millis(100)));
    }
    let (satisfied, expected_rm) = c.expectations(&job_uid, &owned);
    let mut job = (*shared).clone();
    let status = job.status.get_or_insert_default();
    let uncounted = status.uncounted_terminated_pods.get_or_insert_default();
    let uncounted_succeeded: HashSet<String> =
        uncounted.succeeded.iter().flatten().cloned().collect();
    let uncounted_failed: HashSet<String> = uncounted.failed.iter().flatten().cloned().collect();
    let now = Timestamp::now();
    let active_pods: Vec<&Pod> = pods
        .iter()
        .copied()
        .filter(|p| util::is_pod_active(p))
        .collect();
    let indexed_completions = is_indexed(&job).then(|| completions(&job).unwrap_or(0));
    let valid = |p: &Pod| {
        has_tracking_finalizer(p)
            && !expected_rm.contains(uid(p))
            && indexed_completions.is_none_or(|c| valid_index(p, c).is_some())
    };
    let new_succeeded: Vec<&Pod> = pods
        .iter()
        .copied()
        .filter(|p| valid(p) && !uncounted_succeeded.contains(uid(p)) && phase(p) == "Succeeded")
        .collect();
    let new_failed: Vec<&Pod> = pods
        .iter()
        .copied()
        .filter(|p| valid(p) && !uncounted_failed.contains(uid(p)) && is_pod_failed(p, &job))
        .collect();
    let status = job.status.as_ref().expect("status set above");
    let succeeded = status.succeeded.unwrap_or(0)
        + new_succeeded.len() as i32
        + uncounted_succeeded.len() as i32;
    let failed = status.failed.unwrap_or(0)
        + new_failed
            .iter()
            .filter(|p| counts_as_failure(p, &job))
            .count() as i32
        + uncounted_failed.len() as i32;
    let finished_times = |f: &dyn Fn(&Pod) -> bool| -> Vec<Timestamp> {
        pods.iter()
            .copied()
            .filter(|p| f(p))
            .map(finish_time)
            .collect()
    };
    let backoff = backoff::record(
        &finished_times(&|p| phase(p) == "Succeeded"),
        &finished_times(&|p| is_pod_failed(p, &job) && counts_as_failure(p, &job)),
    );
    let mut s = Sync {
        active: active_pods.len() as i32,
        ready: active_pods.iter().filter(|p| util::is_pod_ready(p)).count() as i32,
        terminating: pods.iter().filter(|p| is_terminating(p)).count() as i32,
        active_pods,
        pods,
        succeeded,
        expected_rm,
        uncounted_succeeded,
        uncounted_failed,
        prev_succeeded_indexes: IndexSet::default(),
        succeeded_indexes: IndexSet::default(),
        failed_indexes: None,
        delayed: BTreeMap::new(),
        backoff,
        finished: None,
        requeue: None,
        now,
        job,
    };
    if s.job
        .status
        .as_ref()
        .and_then(|st| st.start_time.as_ref())
        .is_none()
        && !is_suspended(&s.job)
    {
        s.job.status.get_or_insert_default().start_time = Some(Time(now));
    }

    // Why the Job is finishing, if it is.
    s.finished = find_condition(&s.job, SUCCESS_CRITERIA_MET).cloned();
    if s.finished.is_none() {
        if let Some(target) = find_condition(&s.job, FAILURE_TARGET) {
            s.finished = Some(new_condition(
                FAILED,
                "True",
                target.reason.as_deref().unwrap_or(""),
                target.message.as_deref().unwrap_or(""),
                now,
            ));
        } else if let Some(message) = fail_job_message(&s.job, &s.pods) {
            s.finished = Some(new_condition(
                FAILURE_TARGET,
                "True",
                "PodFailurePolicy",
                &message,
                now,
            ));
        }
    }
    if s.finished.is_none() {
        if failed > backoff_limit(&s.job) || past_backoff_limit_on_failure(&s.job, &s.pods) {
            s.finished = Some(new_condition(
                FAILURE_TARGET,
                "True",
                "BackoffLimitExceeded",
                "Job has reached the specified backoff limit",
                now,
            ));
        } else if let Some(left) = active_deadline_left(&s.job, now) {
            if left.is_zero() {
                s.finished = Some(new_condition(
                    FAILURE_TARGET,
                    "True",
                    "DeadlineExceeded",
                    "Job was active longer than specified deadline",
                    now,
                ));
            } else {
                s.requeue_after(left);
            }
        }
    }

    if let Some(completions) = indexed_completions {
        let status = s.job.status.as_ref().expect("status set above");
        s.prev_succeeded_indexes = IndexSet::parse(
            status.completed_indexes.as_deref().unwrap_or(""),
            completions,
        );
        s.succeeded_indexes = s.prev_succeeded_indexes.clone();
        for p in &s.pods {
            if phase(p) == "Succeeded"
                && has_tracking_finalizer(p)
                && !s.expected_rm.contains(uid(p))
                && let Some(ix) = valid_index(p, completions)
            {
                s.succeeded_indexes.insert(ix);
            }
        }
        s.succeeded = s.succeeded_indexes.len() as i32;
        if backoff_limit_per_index(&s.job).is_some() {
            let mut failed_indexes =
                IndexSet::parse(status.failed_indexes.as_deref().unwrap_or(""), completions);
            for p in &s.pods {
                if has_tracking_finalizer(p)
                    && let Some(ix) = valid_index(p, completions)
                    && is_index_failed(&s.job, p)
                {
                    failed_indexes.insert(ix);
                }
            }
            if s.finished.is_none() {
                let max = s.job.spec.as_ref().and_then(|sp| sp.max_failed_indexes);
                if max.is_some_and(|m| failed_indexes.len() as i32 > m) {
                    s.finished = Some(new_condition(
                        FAILURE_TARGET,
                        "True",
                        "MaxFailedIndexesExceeded",
                        "Job has exceeded the specified maximal number of failed indexes",
                        now,
                    ));
                } else if !failed_indexes.is_empty()
                    && (failed_indexes.len() + s.succeeded_indexes.len()) as i32 >= completions
                {
                    s.finished = Some(new_condition(
                        FAILURE_TARGET,
                        "True",
                        "FailedIndexes",
                        "Job has failed indexes",
                        now,
                    ));
                }
            }
            s.delayed =
                last_failed_pod_per_index(&s.job, &s.pods, &s.succeeded_indexes, &failed_indexes);
            s.failed_indexes = Some(failed_indexes);
        }
        if s.finished.is_none() {
            let policy = s
                .job
                .spec
                .as_ref()
                .and_then(|sp| sp.success_policy.as_ref());
            if let Some(message) = match_success_policy(policy, completions, &s.succeeded_indexes) {
                s.finished = Some(new_condition(
                    SUCCESS_CRITERIA_MET,
                    "True",
                    "SuccessPolicy",
                    &message,
                    now,
                ));
            }
        }
    }

    let mut manage_error = None;
    let mut suspend_changed = false;
    if s.finished.is_some() {
        // Finishing: stop whatever still runs; the finalizers stay so they get counted.
        let active_pods = s.active_pods.clone();
        let (ready, deleted, err) = c.delete_pods(&s.job, &active_pods, false).await;
        if deleted != s.active || !satisfied {
            s.finished = None;
        }
        s.active -= deleted;
        s.terminating += deleted;
        s.ready -= ready;
        manage_error = err;
    } else {
        let mut managed = false;
        if satisfied && s.job.metadata.deletion_timestamp.is_none() {
            manage_error = manage_job(&c, &mut s).await;
            managed = true;
        }
        let complete = match completions(&s.job) {
            None => s.succeeded > 0 && s.active == 0,
            Some(want) => s.succeeded >= want && s.active == 0,
        };
        if complete {
            s.finished = Some(new_condition(
                SUCCESS_CRITERIA_MET,
                "True",
                "CompletionsReached",
                "Reached expected number of succeeded pods",
                now,
            ));
        } else if managed {
            let suspended = is_suspended(&s.job);
            let status = s.job.status.get_or_insert_default();
            let list = status.conditions.get_or_insert_with(Vec::new);
            if suspended {
                suspend_changed = ensure_condition(
                    list,
                    SUSPENDED,
                    "True",
                    "JobSuspended",
                    "Job suspended",
                    now,
                );
            } else {
                suspend_changed =
                    ensure_condition(list, SUSPENDED, "False", "JobResumed", "Job resumed", now);
                if suspend_changed {
                    // The active deadline counts from the resumption.
                    status.start_time = Some(Time(now));
                }
            }
            if status.conditions.as_ref().is_some_and(Vec::is_empty) {
                status.conditions = None;
            }
            if suspend_changed {
                let (reason, note) = if suspended {
                    ("Suspended", "Job suspended")
                } else {
                    ("Resumed", "Job resumed")
                };
                tracing::info!(job = %key(&s.job), "{note}");
                c.event(&s.job, EventType::Normal, reason, note.into());
            }
        }
    }

    let status = s.job.status.get_or_insert_default();
    let needs_update = suspend_changed
        || status.active.unwrap_or(0) != s.active
        || status.ready != Some(s.ready)
        || status.terminating != Some(s.terminating)
        || shared.status.as_ref().and_then(|st| st.start_time.as_ref())
            != status.start_time.as_ref();
    status.active = Some(s.active);
    status.ready = Some(s.ready);
    status.terminating = Some(s.terminating);
    track_and_remove_finalizers(&c, &mut s, needs_update).await?;
    if let Some(e) = manage_error {
        return Err(e);
    }
    Ok(match s.requeue {
        Some(d) => Action::requeue(d),
        None if !satisfied => Action::requeue(Duration::from_secs(5)),
        None => Action::await_change(),
    })
}

/// The FailJob rule a failed pod matches, as the condition message.
fn fail_job_message(job: &Job, pods: &[&Pod]) -> Option<String> {
    let policy = job.spec.as_ref()?.pod_failure_policy.as_ref()?;
    pods.iter()
        .filter(|p| is_pod_failed(p, job))
        .find_map(|p| failure_policy::match_pod(policy, p).fail_job_message)
}

/// Time left before `activeDeadlineSeconds` passes (zero once past); None without a deadline
/// or while suspended.
fn active_deadline_left(job: &Job, now: Timestamp) -> Option<Duration> {
    let seconds = job.spec.as_ref()?.active_deadline_seconds?;
    if is_suspended(job) {
        return None;
    }
    let start = job.status.as_ref()?.start_time.as_ref()?.0;
    let elapsed = now.duration_since(start).as_secs_f64().max(0.0);
    Some(Duration::from_secs_f64((seconds as f64 - elapsed).max(0.0)))
}

/// Bring the number of active pods to what the Job wants: delete extra or duplicate pods, or
/// create missing ones once the backoff allows. Updates `s.active` and friends.
async fn manage_job(c: &JobController, s: &mut Sync<'_>) -> Option<Error> {
    let job = s.job.clone();
    if is_suspended(&job) {
        let pods = s.active_pods.clone();
        if pods.is_empty() {
            return None;
        }
        tracing::info!(job = %key(&job), active = s.active, "deleting the pods of a suspended job");
        let (ready, removed, err) = c.delete_pods(&job, &pods, true).await;
        s.active -= removed;
        s.terminating += removed;
        s.ready -= ready;
        return err;
    }
    let want = want_active(completions(&job), parallelism(&job), s.succeeded, s.active);
    let rm_at_least = (s.active - want).max(0) as usize;
    let indexed_completions = is_indexed(&job).then(|| completions(&job).unwrap_or(0));
    let mut remove = active_pods_for_removal(&s.active_pods, indexed_completions, rm_at_least);
    remove.truncate(MAX_POD_CREATE_DELETE_PER_SYNC);
    if !remove.is_empty() {
        let pods: Vec<&Pod> = remove.iter().map(|i| s.active_pods[*i]).collect();
        tracing::info!(job = %key(&job), deleting = pods.len(), want, "too many pods running for job");
        let (ready, removed, err) = c.delete_pods(&job, &pods, true).await;
        s.active -= removed;
        s.terminating += removed;
        s.ready -= ready;
        return err;
    }
    let terminating = if only_replace_failed(&job) {
        s.terminating
    } else {
        0
    };
    let diff = want - terminating - s.active;
    if diff <= 0 {
        return None;
    }
    let per_index = backoff_limit_per_index(&job).is_some();
    if !per_index {
        let left = backoff::remaining(&s.backoff, s.now);
        if !left.is_zero() {
            tracing::debug!(job = %key(&job), wait = ?left, "backing off before creating pods");
            s.requeue_after(left);
            return None;
        }
    }
    let mut count = (diff as usize).min(MAX_POD_CREATE_DELETE_PER_SYNC);
    let mut indexes = Vec::new();
    if let Some(completions) = indexed_completions {
        let running: HashSet<i32> = s
            .active_pods
            .iter()
            .filter_map(|p| valid_index(p, completions))
            .collect();
        let none = IndexSet::default();
        let failed = s.failed_indexes.as_ref().unwrap_or(&none);
        indexes = first_pending_indexes(completions, &s.succeeded_indexes, failed, &running, count);
        if per_index {
            let mut now_ready = Vec::new();
            let mut soonest: Option<Duration> = None;
            for ix in indexes {
                let left = s.delayed.get(&ix).map_or(Duration::ZERO, |prev| {
                    let (failures, ignored) = next_failure_counts(&job, Some(prev));
                    let record = backoff::Record {
                        failures_after_last_success: (failures + ignored) as u32,
                        last_failure_time: Some(finish_time(prev)),
                    };
                    backoff::remaining(&record, s.now)
                });
                if left.is_zero() {
                    now_ready.push(ix);
                } else {
                    soonest = Some(soonest.map_or(left, |d| d.min(left)));
                }
            }
            if now_ready.is_empty() {
                if let Some(d) = soonest {
                    s.requeue_after(d);
                }
                return None;
            }
            indexes = now_ready;
        }
        count = indexes.len();
    }
    tracing::info!(job = %key(&job), creating = count, want, "too few pods running for job");
    let delayed = s.delayed.clone();
    let (created, err) = c.create_pods(&job, count, &indexes, &delayed).await;
    s.active += created;
    err
}

/// Count finished pods through `status.uncountedTerminatedPods`, remove their finalizers, move
/// them to the counters, and set the final condition once nothing is left to count.
async fn track_and_remove_finalizers(
    c: &JobController,
    s: &mut Sync<'_>,
    mut needs_flush: bool,
) -> Result<(), Error> {
    let job_uid = s.job.uid().unwrap_or_default();
    let indexed_completions = is_indexed(&s.job).then(|| completions(&s.job).unwrap_or(0));
    let mut pods = s.pods.clone();
    if let Some(completions) = indexed_completions {
        pods.sort_by_key(|p| valid_index(p, completions).unwrap_or(i32::MAX));
    }
    let mut with_finalizer: HashSet<String> = pods
        .iter()
        .filter(|p| has_tracking_finalizer(p) && !s.expected_rm.contains(uid(p)))
        .map(|p| uid(p).to_string())
        .collect();
    if clean_uncounted(&mut s.job, &with_finalizer) {
        needs_flush = true;
    }
    let failing = s
        .finished
        .as_ref()
        .is_some_and(|f| f.type_ != SUCCESS_CRITERIA_MET);
    let mut to_remove: Vec<&Pod> = Vec::new();
    let mut reached_max = false;
    let mut new_uncounted_succeeded = Vec::new();
    let mut new_uncounted_failed = Vec::new();
    let job = s.job.clone();
    for pod in pods {
        if !has_tracking_finalizer(pod) || s.expected_rm.contains(uid(pod)) {
            continue;
        }
        let considered_failed = is_pod_failed(pod, &job);
        if !can_remove_finalizer(s, pod, considered_failed) {
            continue;
        }
        to_remove.push(pod);
        let pod_uid = uid(pod).to_string();
        if phase(pod) == "Succeeded" && !s.uncounted_failed.contains(&pod_uid) {
            if indexed_completions.is_none() && !s.uncounted_succeeded.contains(&pod_uid) {
                new_uncounted_succeeded.push(pod_uid);
                needs_flush = true;
            }
        } else if (considered_failed || failing)
            && !s.uncounted_failed.contains(&pod_uid)
            && indexed_completions.is_none_or(|c| valid_index(pod, c).is_some())
            && counts_as_failure(pod, &job)
        {
            new_uncounted_failed.push(pod_uid);
            needs_flush = true;
        }
        let uncounted = s
            .job
            .status
            .as_ref()
            .and_then(|st| st.uncounted_terminated_pods.as_ref())
            .map_or(0, |u| {
                u.succeeded.as_ref().map_or(0, Vec::len) + u.failed.as_ref().map_or(0, Vec::len)
            });
        if uncounted + new_uncounted_succeeded.len() + new_uncounted_failed.len()
            >= MAX_UNCOUNTED_PODS
        {
            reached_max = true;
            break;
        }
    }
    let status = s.job.status.get_or_insert_default();
    let uncounted = status.uncounted_terminated_pods.get_or_insert_default();
    uncounted
        .succeeded
        .get_or_insert_with(Vec::new)
        .extend(new_uncounted_succeeded);
    uncounted
        .failed
        .get_or_insert_with(Vec::new)
        .extend(new_uncounted_failed);
    tidy_uncounted(uncounted);
    if indexed_completions.is_some() {
        let completed = s.succeeded_indexes.to_string();
        if status.completed_indexes.as_deref().unwrap_or("") != completed {
            needs_flush = true;
        }
        status.succeeded = Some(s.succeeded_indexes.len() as i32);
        status.completed_indexes = Some(completed);
        let failed = s.failed_indexes.as_ref().map(|f| f.to_string());
        if status.failed_indexes != failed {
            status.failed_indexes = failed;
            needs_flush = true;
        }
    }
    if let Some(f) = s.finished.clone() {
        let conditions = status.conditions.get_or_insert_with(Vec::new);
        if f.type_ == FAILURE_TARGET {
            // Record why before the pods may go, then fail for good once they are counted.
            conditions.push(f.clone());
            needs_flush = true;
            s.finished = Some(new_condition(
                FAILED,
                "True",
                f.reason.as_deref().unwrap_or(""),
                f.message.as_deref().unwrap_or(""),
                s.now,
            ));
        } else if f.type_ == SUCCESS_CRITERIA_MET {
            if !conditions
                .iter()
                .any(|c| c.type_ == SUCCESS_CRITERIA_MET && c.status == "True")
            {
                conditions.push(f.clone());
                needs_flush = true;
            }
            s.finished = Some(new_condition(
                COMPLETE,
                "True",
                f.reason.as_deref().unwrap_or(""),
                f.message.as_deref().unwrap_or(""),
                s.now,
            ));
        }
    }

    // 1. Persist what is about to be counted.
    if needs_flush {
        s.job = c.update_status(&s.job).await?;
        needs_flush = false;
    }
    // 2. Remove the finalizers.
    let mut remove_error = None;
    if !to_remove.is_empty() {
        let (done, err) = c.remove_finalizers(&job_uid, &to_remove).await;
        for (pod, ok) in to_remove.iter().zip(done) {
            if ok {
                with_finalizer.remove(uid(pod));
            }
        }
        remove_error = err;
    }
    // 3. Count the pods whose finalizer is gone.
    if clean_uncounted(&mut s.job, &with_finalizer) {
        needs_flush = true;
    }
    if let Some(e) = remove_error {
        if needs_flush {
            c.update_status(&s.job).await?;
        }
        return Err(e);
    }
    // 4. Finish.
    let finished = !reached_max && enact_finished(s);
    if finished {
        needs_flush = true;
    }
    if needs_flush {
        s.job = c.update_status(&s.job).await?;
        if finished {
            record_finished(c, &s.job, s.finished.as_ref().expect("finished"));
        }
    }
    Ok(())
}

/// The finalizer of a pod can go when the Job is going away or finishing, the pod succeeded, or
/// it failed (unless it must stay to hand its index's failure count to a replacement).
fn can_remove_finalizer(s: &Sync<'_>, pod: &Pod, considered_failed: bool) -> bool {
    if s.job.metadata.deletion_timestamp.is_some()
        || s.finished.is_some()
        || phase(pod) == "Succeeded"
    {
        return true;
    }
    if !considered_failed {
        return false;
    }
    if backoff_limit_per_index(&s.job).is_some()
        && let Some(ix) = completion_index(pod)
        && s.delayed.get(&ix).is_some_and(|p| uid(p) == uid(pod))
    {
        return false;
    }
    true
}

/// Move uncounted pods whose finalizer is gone into the counters; whether anything moved.
fn clean_uncounted(job: &mut Job, with_finalizer: &HashSet<String>) -> bool {
    let status = job.status.get_or_insert_default();
    let uncounted = status.uncounted_terminated_pods.get_or_insert_default();
    let mut changed = false;
    let succeeded = uncounted.succeeded.take().unwrap_or_default();
    let (keep, counted): (Vec<String>, Vec<String>) = succeeded
        .into_iter()
        .partition(|u| with_finalizer.contains(u));
    if !counted.is_empty() {
        changed = true;
        status.succeeded = Some(status.succeeded.unwrap_or(0) + counted.len() as i32);
    }
    uncounted.succeeded = Some(keep);
    let failed = uncounted.failed.take().unwrap_or_default();
    let (keep, counted): (Vec<String>, Vec<String>) =
        failed.into_iter().partition(|u| with_finalizer.contains(u));
    if !counted.is_empty() {
        changed = true;
        status.failed = Some(status.failed.unwrap_or(0) + counted.len() as i32);
    }
    uncounted.failed = Some(keep);
    tidy_uncounted(uncounted);
    changed
}

/// Empty lists are left out, as upstream serializes them.
fn tidy_uncounted(u: &mut UncountedTerminatedPods) {
    if u.succeeded.as_ref().is_some_and(Vec::is_empty) {
        u.succeeded = None;
    }
    if u.failed.as_ref().is_some_and(Vec::is_empty) {
        u.failed = None;
    }
}

/// Add the Complete/Failed condition once every pod is counted and none is terminating.
fn enact_finished(s: &mut Sync<'_>) -> bool {
    let Some(f) = s.finished.clone() else {
        return false;
    };
    let status = s.job.status.get_or_insert_default();
    if let Some(u) = &status.uncounted_terminated_pods
        && (u.succeeded.as_ref().is_some_and(|v| !v.is_empty())
            || u.failed.as_ref().is_some_and(|v| !v.is_empty()))
    {
        return false;
    }
    if s.terminating > 0 {
        return false;
    }
    let conditions = status.conditions.get_or_insert_with(Vec::new);
    ensure_condition(
        conditions,
        &f.type_,
        "True",
        f.reason.as_deref().unwrap_or(""),
        f.message.as_deref().unwrap_or(""),
        s.now,
    );
    if f.type_ == COMPLETE {
        status.completion_time = Some(Time(s.now));
    }
    true
}

fn record_finished(c: &JobController, job: &Job, finished: &JobCondition) {
    tracing::info!(job = %key(job), condition = %finished.type_, reason = ?finished.reason, "job finished");
    if finished.type_ == COMPLETE {
        let succeeded = job.status.as_ref().and_then(|s| s.succeeded).unwrap_or(0);
        if completions(job).is_some_and(|c| succeeded > c) {
            c.event(
                job,
                EventType::Warning,
                "TooManySucceededPods",
                "Too many succeeded pods running after completion count reached".into(),
            );
        }
        c.event(job, EventType::Normal, "Completed", "Job completed".into());
    } else {
        c.event(
            job,
            EventType::Warning,
            finished.reason.as_deref().unwrap_or(FAILED),
            finished.message.clone().unwrap_or_default(),
        );
    }
}

/// Pods with the tracking finalizer whose Job is gone (or is another Job now): nothing will
/// count them, so the finalizer goes. Also sweeps the cache every minute.
async fn remove_orphan_finalizers(
    c: Arc<JobController>,
    mut rx: mpsc::UnboundedReceiver<Arc<Pod>>,
) {
    // Not `wait_until_ready` again: a store wakes only one of several waiters.
    while !c.ready.load(Ordering::Acquire) {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let mut sweep = tokio::time::interval(Duration::from_secs(60));
    loop {
        let candidates: Vec<Arc<Pod>> = tokio::select! {
            pod = rx.recv() => match pod {
                Some(p) => vec![p],
                None => return,
            },
            _ = sweep.tick() => c.pods.state().into_iter().filter(|p| has_tracking_finalizer(p)).collect(),
        };
        for pod in candidates {
            if !has_tracking_finalizer(&pod) || !is_orphan(&c, &pod) {
                continue;
            }
            // Act on the cached state, which may have moved on since the event.
            let current = c.pods.get(&ObjectRef::from_obj(&*pod));
            if current
                .as_ref()
                .is_some_and(|p| !has_tracking_finalizer(p) || !is_orphan(&c, p))
            {
                continue;
            }
            match c.remove_finalizer(&pod).await {
                Ok(()) => {
                    tracing::info!(pod = %format!("{}/{}", pod.namespace().unwrap_or_default(), pod.name_any()), "removed the job-tracking finalizer of an orphan pod")
                }
                Err(e) => tracing::warn!(error = %e, "orphan pod"),
            }
        }
    }
}

fn is_orphan(c: &JobController, pod: &Pod) -> bool {
    let Some(owner) = util::controller_of(&pod.metadata).filter(|o| o.kind == "Job") else {
        return true;
    };
    let ns = pod.namespace().unwrap_or_default();
    match c.jobs.get(&ObjectRef::new(&owner.name).within(&ns)) {
        None => true,
        Some(job) => job.metadata.uid.as_deref() != Some(owner.uid.as_str()),
    }
}
