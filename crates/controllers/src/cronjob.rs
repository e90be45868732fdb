//! The CronJob controller: creates a Job for each run of the schedule (in `spec.timeZone`),
//! honours `concurrencyPolicy`, `startingDeadlineSeconds` and `suspend`, keeps
//! `status.active`/`lastScheduleTime`/`lastSuccessfulTime`, and deletes finished Jobs beyond the
//! history limits. Jobs are named `<cronjob>-<minutes since the epoch>`, so a run is never
//! created twice.

pub mod schedule;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, PostParams, PropagationPolicy};
use kube::runtime::controller::{self, Action, ReconcileRequest};
use kube::runtime::events::{EventType, Reporter};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Resource, ResourceExt};

use self::schedule::{CronSchedule, Missed, Timing};
use crate::job::logic::{COMPLETE, FAILED};
use crate::{Context, util};

/// The annotation with the run's scheduled time, in the CronJob's zone.
pub const SCHEDULED_TIMESTAMP_ANNOTATION: &str = "batch.kubernetes.io/cronjob-scheduled-timestamp";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("updating the status of cronjob {key}: {source}")]
    UpdateStatus { key: String, source: kube::Error },
    #[error("creating job {job} for cronjob {key}: {source}")]
    CreateJob {
        key: String,
        job: String,
        source: kube::Error,
    },
    #[error("reading job {job} of cronjob {key}: {source}")]
    GetJob {
        key: String,
        job: String,
        source: kube::Error,
    },
    #[error("reading cronjob {key}: {source}")]
    GetCronJob { key: String, source: kube::Error },
    #[error("could not replace job {job} of cronjob {key}")]
    Replace { key: String, job: String },
}

pub struct CronJobController {
    client: kube::Client,
    jobs: Store<Job>,
    jobs_by_cronjob: util::OwnerIndex,
    ready: AtomicBool,
    reporter: Reporter,
}

pub async fn run(ctx: Arc<Context>) -> anyhow::Result<()> {
    let client = ctx.client.clone();
    let (cronjobs, cronjob_writer) = reflector::store::<CronJob>();
    let (jobs, job_writer) = reflector::store::<Job>();
    let c = Arc::new(CronJobController {
        client: client.clone(),
        jobs: jobs.clone(),
        jobs_by_cronjob: util::OwnerIndex::default(),
        ready: AtomicBool::new(false),
        reporter: Reporter {
            controller: "cronjob-controller".into(),
            instance: None,
        },
    });
    {
        let c = c.clone();
        tokio::spawn(async move {
            // Only the Job store: the applier waits for the CronJob store itself, and a store
            // wakes just one of several waiters.
            if c.jobs.wait_until_ready().await.is_ok() {
                c.ready.store(true, Ordering::Release);
            }
        });
    }
    let cronjob_events = reflector::reflector(
        cronjob_writer,
        watcher(
            Api::<CronJob>::all(client.clone()),
            watcher::Config::default(),
        )
        .default_backoff(),
    )
    .touched_objects()
    .map_ok(|cj| ReconcileRequest::from(ObjectRef::from_obj(&cj)));
    let job_events = {
        let c = c.clone();
        reflector::reflector(
            job_writer,
            watcher(Api::<Job>::all(client.clone()), watcher::Config::default()).default_backoff(),
        )
        .touched_objects()
        .try_filter_map(move |job| {
            let owner = c.jobs_by_cronjob.observe(&job, "CronJob");
            let namespace = job.namespace().unwrap_or_default();
            futures::future::ready(Ok(owner.map(|o| {
                ReconcileRequest::from(ObjectRef::<CronJob>::new(&o.name).within(&namespace))
            })))
        })
    };
    controller::applier(
        |cj, c| Box::pin(reconcile(cj, c)),
        error_policy,
        c,
        cronjobs,
        futures::stream::select(cronjob_events, job_events),
        controller::Config::default(),
    )
    .for_each(|result| async move {
        match result {
            Err(controller::Error::ObjectNotFound(_)) | Ok(_) => {}
            Err(e) => tracing::debug!(error = %e, "cronjob reconcile"),
        }
    })
    .await;
    Ok(())
}

fn key(cj: &CronJob) -> String {
    format!("{}/{}", cj.namespace().unwrap_or_default(), cj.name_any())
}

fn error_policy(cj: Arc<CronJob>, error: &Error, _c: Arc<CronJobController>) -> Action {
    tracing::warn!(cronjob = %key(&cj), %error, "cronjob sync failed");
    Action::requeue(Duration::from_secs(5))
}

/// `Complete` or `Failed`, if the Job has finished.
fn finished_type(job: &Job) -> Option<&str> {
    crate::job::logic::finished_type(job)
}

impl CronJobController {
    fn event(&self, cj: &CronJob, type_: EventType, reason: &str, note: String) {
        util::record_event(
            &self.client,
            &self.reporter,
            cj,
            type_,
            reason,
            reason,
            note,
        );
    }

    /// Delete a Job and its pods; drop it from the active list.
    async fn delete_job(&self, cj: &mut CronJob, job: &Job) -> bool {
        let api: Api<Job> =
            Api::namespaced(self.client.clone(), &job.namespace().unwrap_or_default());
        let params = DeleteParams {
            propagation_policy: Some(PropagationPolicy::Background),
            ..DeleteParams::default()
        };
        match api.delete(&job.name_any(), &params).await {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(e) => {
                tracing::warn!(cronjob = %key(cj), job = %job.name_any(), error = %e, "deleting a job");
                self.event(
                    cj,
                    EventType::Warning,
                    "FailedDelete",
                    format!("Deleted job: {e}"),
                );
                return false;
            }
        }
        remove_active(cj, job.uid().as_deref().unwrap_or(""));
        tracing::info!(cronjob = %key(cj), job = %job.name_any(), "deleted job");
        self.event(
            cj,
            EventType::Normal,
            "SuccessfulDelete",
            format!("Deleted job {}", job.name_any()),
        );
        true
    }
}

fn active(cj: &CronJob) -> &[ObjectReference] {
    cj.status
        .as_ref()
        .and_then(|s| s.active.as_deref())
        .unwrap_or_default()
}

fn in_active_list(cj: &CronJob, uid: &str) -> bool {
    active(cj).iter().any(|r| r.uid.as_deref() == Some(uid))
}

fn remove_active(cj: &mut CronJob, uid: &str) {
    let status = cj.status.get_or_insert_default();
    if let Some(list) = status.active.as_mut() {
        list.retain(|r| r.uid.as_deref() != Some(uid));
        if list.is_empty() {
            status.active = None;
        }
    }
}

fn timing(cj: &CronJob) -> Timing {
    Timing {
        creation: cj
            .metadata
            .creation_timestamp
            .as_ref()
            .map(|t| t.0)
            .unwrap_or(Timestamp::UNIX_EPOCH),
        last_schedule: cj
            .status
            .as_ref()
            .and_then(|s| s.last_schedule_time.as_ref())
            .map(|t| t.0),
        starting_deadline_seconds: cj.spec.as_ref().and_then(|s| s.starting_deadline_seconds),
    }
}

/// The Job for the run at `scheduled`: the template's labels, annotations and spec, owned by
/// the CronJob.
pub fn job_from_template(cj: &CronJob, scheduled: Timestamp, schedule: &CronSchedule) -> Job {
    let template = cj
        .spec
        .as_ref()
        .map(|s| s.job_template.clone())
        .unwrap_or_default();
    let meta = template.metadata.unwrap_or_default();
    let mut annotations = meta.annotations.unwrap_or_default();
    annotations.insert(
        SCHEDULED_TIMESTAMP_ANNOTATION.into(),
        schedule::scheduled_timestamp(scheduled, schedule.zone()),
    );
    Job {
        metadata: ObjectMeta {
            name: Some(schedule::job_name(&cj.name_any(), scheduled)),
            namespace: cj.namespace(),
            labels: meta.labels.filter(|l| !l.is_empty()),
            annotations: Some(annotations),
            owner_references: util::controller_ref(cj).map(|r| vec![r]),
            ..Default::default()
        },
        spec: Some(template.spec.unwrap_or_default()),
        status: None,
    }
}

fn job_reference(job: &Job) -> ObjectReference {
    let mut reference = job.object_ref(&());
    reference.resource_version = job.resource_version();
    reference
}

async fn reconcile(shared: Arc<CronJob>, c: Arc<CronJobController>) -> Result<Action, Error> {
    if !c.ready.load(Ordering::Acquire) {
        return Ok(Action::requeue(Duration::from_millis(200)));
    }
    let namespace = shared.namespace().unwrap_or_default();
    let uid = shared.uid().unwrap_or_default();
    let jobs = c.jobs_by_cronjob.owned_by(&c.jobs, &namespace, &uid);
    let mut cj = (*shared).clone();
    let (requeue, mut update_status) = sync_cronjob(&c, &mut cj, &jobs).await?;
    if cj.metadata.deletion_timestamp.is_none() && cleanup_finished_jobs(&c, &mut cj, &jobs).await {
        update_status = true;
    }
    if update_status {
        let api: Api<CronJob> = Api::namespaced(c.client.clone(), &namespace);
        api.replace_status(&cj.name_any(), &PostParams::default(), &cj)
            .await
            .map_err(|source| Error::UpdateStatus {
                key: key(&cj),
                source,
            })?;
    }
    Ok(match requeue {
        Some(d) => Action::requeue(d),
        None => Action::await_change(),
    })
}

/// One pass of the CronJob's logic; (when to look again, whether status changed).
async fn sync_cronjob(
    c: &CronJobController,
    cj: &mut CronJob,
    jobs: &[Arc<Job>],
) -> Result<(Option<Duration>, bool), Error> {
    let now = Timestamp::now();
    let mut update_status = false;
    let namespace = cj.namespace().unwrap_or_default();
    let jobs_api: Api<Job> = Api::namespaced(c.client.clone(), &namespace);

    for job in jobs {
        let job_uid = job.uid().unwrap_or_default();
        let found = in_active_list(cj, &job_uid);
        let finished = finished_type(job);
        if !found && finished.is_none() {
            // Perhaps our status write is not in the cache yet: look at the CronJob itself.
            let api: Api<CronJob> = Api::namespaced(c.client.clone(), &namespace);
            let fresh = api
                .get(&cj.name_any())
                .await
                .map_err(|source| Error::GetCronJob {
                    key: key(cj),
                    source,
                })?;
            if in_active_list(&fresh, &job_uid) {
                *cj = fresh;
                continue;
            }
            c.event(
                cj,
                EventType::Warning,
                "UnexpectedJob",
                format!(
                    "Saw a job that the controller did not create or forgot: {}",
                    job.name_any()
                ),
            );
        } else if found && let Some(status) = finished {
            remove_active(cj, &job_uid);
            c.event(
                cj,
                EventType::Normal,
                "SawCompletedJob",
                format!("Saw completed job: {}, status: {status}", job.name_any()),
            );
            update_status = true;
        }
        if finished == Some(COMPLETE) {
            let completed = job.status.as_ref().and_then(|s| s.completion_time.clone());
            let status = cj.status.get_or_insert_default();
            if let Some(t) = completed
                && status
                    .last_successful_time
                    .as_ref()
                    .is_none_or(|last| t.0 > last.0)
            {
                status.last_successful_time = Some(t);
                update_status = true;
            }
        }
    }

    // Active Jobs that no longer exist.
    let children: std::collections::HashSet<String> = jobs.iter().filter_map(|j| j.uid()).collect();
    let missing: Vec<ObjectReference> = active(cj)
        .iter()
        .filter(|r| !r.uid.as_ref().is_some_and(|u| children.contains(u)))
        .cloned()
        .collect();
    for reference in missing {
        let name = reference.name.clone().unwrap_or_default();
        match jobs_api.get_opt(&name).await {
            Ok(None) => {
                c.event(
                    cj,
                    EventType::Normal,
                    "MissingJob",
                    format!("Active job went missing: {name}"),
                );
                remove_active(cj, reference.uid.as_deref().unwrap_or(""));
                update_status = true;
            }
            Ok(Some(_)) => {}
            Err(source) => {
                return Err(Error::GetJob {
                    key: key(cj),
                    job: name,
                    source,
                });
            }
        }
    }

    if cj.metadata.deletion_timestamp.is_some() {
        return Ok((None, update_status));
    }
    let spec = cj.spec.clone().unwrap_or_default();
    let schedule = match CronSchedule::new(&spec.schedule, spec.time_zone.as_deref()) {
        Ok(s) => s,
        Err(schedule::Error::UnknownTimeZone { zone }) => {
            c.event(
                cj,
                EventType::Warning,
                "UnknownTimeZone",
                format!("invalid timeZone: {zone:?}: unknown time zone {zone}"),
            );
            return Ok((None, update_status));
        }
        Err(schedule::Error::Unparseable(reason)) => {
            c.event(
                cj,
                EventType::Warning,
                "UnparseableSchedule",
                format!("unparseable schedule: {:?} : {reason}", spec.schedule),
            );
            return Ok((None, update_status));
        }
    };
    if spec.schedule.contains("TZ") {
        c.event(
            cj,
            EventType::Warning,
            "UnsupportedSchedule",
            format!(
                "CRON_TZ or TZ used in schedule {:?} is not officially supported, see https://kubernetes.io/docs/concepts/workloads/controllers/cron-jobs/ for more details",
                spec.schedule
            ),
        );
    }
    if spec.suspend == Some(true) {
        tracing::debug!(cronjob = %key(cj), "not starting job because the cronjob is suspended");
        return Ok((None, update_status));
    }

    let timing = timing(cj);
    let next_delay =
        |cj: &CronJob| schedule::next_schedule_delay(&self::timing(cj), now, &schedule);
    let scheduled = match schedule::most_recent_schedule_time(&timing, now, &schedule, true) {
        Err(reason) => {
            c.event(
                cj,
                EventType::Warning,
                "InvalidSchedule",
                format!("invalid schedule: {} : {reason}", spec.schedule),
            );
            return Ok((None, update_status));
        }
        Ok((_, None, _)) => return Ok((next_delay(cj), update_status)),
        Ok((_, Some(t), missed)) => {
            if missed == Missed::Many {
                c.event(
                    cj,
                    EventType::Warning,
                    "TooManyMissedTimes",
                    "too many missed start times. Set or decrease .spec.startingDeadlineSeconds or check clock skew".into(),
                );
                tracing::info!(cronjob = %key(cj), "too many missed times");
            }
            t
        }
    };

    if let Some(deadline) = spec.starting_deadline_seconds
        && scheduled + k8s_openapi::jiff::SignedDuration::from_secs(deadline) < now
    {
        c.event(
            cj,
            EventType::Warning,
            "MissSchedule",
            format!(
                "Missed scheduled time to start a job: {}",
                rfc1123z(scheduled)
            ),
        );
        return Ok((next_delay(cj), update_status));
    }
    let name = schedule::job_name(&cj.name_any(), scheduled);
    let already = active(cj)
        .iter()
        .any(|r| r.name.as_deref() == Some(name.as_str()))
        || timing.last_schedule == Some(scheduled);
    if already {
        return Ok((next_delay(cj), update_status));
    }
    let policy = spec.concurrency_policy.as_deref().unwrap_or("Allow");
    if policy == "Forbid" && !active(cj).is_empty() {
        tracing::info!(cronjob = %key(cj), "not starting job because the prior one is still running (Forbid)");
        c.event(
            cj,
            EventType::Normal,
            "JobAlreadyActive",
            "Not starting job because prior execution is running and concurrency policy is Forbid"
                .into(),
        );
        return Ok((next_delay(cj), update_status));
    }
    if policy == "Replace" {
        for reference in active(cj).to_vec() {
            let job_name = reference.name.clone().unwrap_or_default();
            let job = match jobs_api.get_opt(&job_name).await {
                Ok(Some(job)) => job,
                Ok(None) => {
                    remove_active(cj, reference.uid.as_deref().unwrap_or(""));
                    update_status = true;
                    continue;
                }
                Err(source) => {
                    c.event(
                        cj,
                        EventType::Warning,
                        "FailedGet",
                        format!("Get job: {source}"),
                    );
                    return Err(Error::GetJob {
                        key: key(cj),
                        job: job_name,
                        source,
                    });
                }
            };
            if !c.delete_job(cj, &job).await {
                return Err(Error::Replace {
                    key: key(cj),
                    job: job_name,
                });
            }
            update_status = true;
        }
    }

    let request = job_from_template(cj, scheduled, &schedule);
    let created = match jobs_api.create(&PostParams::default(), &request).await {
        Ok(job) => {
            tracing::info!(cronjob = %key(cj), job = %job.name_any(), "created job");
            c.event(
                cj,
                EventType::Normal,
                "SuccessfulCreate",
                format!("Created job {}", job.name_any()),
            );
            job
        }
        Err(kube::Error::Api(e)) if e.code == 409 => {
            // Created before (our status write was lost) or by someone else.
            let job = jobs_api.get(&name).await.map_err(|source| Error::GetJob {
                key: key(cj),
                job: name.clone(),
                source,
            })?;
            let ours = util::controller_of(&job.metadata)
                .is_some_and(|o| Some(&o.uid) == cj.metadata.uid.as_ref());
            if !ours || in_active_list(cj, &job.uid().unwrap_or_default()) {
                return Ok((None, update_status));
            }
            tracing::info!(cronjob = %key(cj), job = %name, "job already exists");
            job
        }
        Err(kube::Error::Api(e)) if e.code == 403 && e.message.contains("being terminated") => {
            return Ok((None, update_status));
        }
        Err(source) => {
            c.event(
                cj,
                EventType::Warning,
                "FailedCreate",
                format!("Error creating job: {source}"),
            );
            return Err(Error::CreateJob {
                key: key(cj),
                job: name,
                source,
            });
        }
    };
    let status = cj.status.get_or_insert_default();
    status
        .active
        .get_or_insert_with(Vec::new)
        .push(job_reference(&created));
    status.last_schedule_time = Some(Time(scheduled));
    Ok((next_delay(cj), true))
}

/// Go's `time.RFC1123Z` in UTC, as upstream's MissSchedule event prints the time.
fn rfc1123z(t: Timestamp) -> String {
    t.to_zoned(k8s_openapi::jiff::tz::TimeZone::UTC)
        .strftime("%a, %d %b %Y %H:%M:%S %z")
        .to_string()
}

/// Delete the oldest finished Jobs beyond the history limits; whether status changed.
async fn cleanup_finished_jobs(c: &CronJobController, cj: &mut CronJob, jobs: &[Arc<Job>]) -> bool {
    let spec = cj.spec.clone().unwrap_or_default();
    if spec.successful_jobs_history_limit.is_none() && spec.failed_jobs_history_limit.is_none() {
        return false;
    }
    let mut succeeded: Vec<&Job> = Vec::new();
    let mut failed: Vec<&Job> = Vec::new();
    for job in jobs {
        match finished_type(job) {
            Some(t) if t == COMPLETE => succeeded.push(job),
            Some(t) if t == FAILED => failed.push(job),
            _ => {}
        }
    }
    let mut changed = false;
    for (list, limit) in [
        (succeeded, spec.successful_jobs_history_limit),
        (failed, spec.failed_jobs_history_limit),
    ] {
        let Some(limit) = limit else {
            continue;
        };
        for job in oldest_beyond_limit(list, limit) {
            if c.delete_job(cj, job).await {
                changed = true;
            }
        }
    }
    changed
}

/// The Jobs to delete so that `limit` remain: the oldest by start time (Jobs that never
/// started count as newest), names breaking ties.
pub fn oldest_beyond_limit(mut jobs: Vec<&Job>, limit: i32) -> Vec<&Job> {
    let excess = jobs.len().saturating_sub(limit.max(0) as usize);
    if excess == 0 {
        return Vec::new();
    }
    let start = |j: &Job| {
        j.status
            .as_ref()
            .and_then(|s| s.start_time.as_ref())
            .map(|t| t.0)
    };
    jobs.sort_by(|a, b| match (start(a), start(b)) {
        (Some(x), Some(y)) if x != y => x.cmp(&y),
        (Some(_), None) => std::cmp::Ordering::Less,
        (None, Some(_)) => std::cmp::Ordering::Greater,
        _ => a.name_any().cmp(&b.name_any()),
    });
    jobs.truncate(excess);
    jobs
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn cronjob() -> CronJob {
        serde_json::from_value(json!({
            "metadata": {"name": "hello", "namespace": "ns", "uid": "cj-uid",
                         "creationTimestamp": "2024-03-01T10:00:00Z"},
            "spec": {
                "schedule": "*/5 * * * *",
                "timeZone": "Europe/Paris",
                "jobTemplate": {
                    "metadata": {"labels": {"app": "hello"}, "annotations": {"team": "a"}},
                    "spec": {"template": {"spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "busybox"}]}}},
                },
            },
        }))
        .unwrap()
    }

    #[test]
    fn job_for_a_run() {
        let cj = cronjob();
        let schedule = CronSchedule::new("*/5 * * * *", Some("Europe/Paris")).unwrap();
        let at: Timestamp = "2024-03-01T10:05:00Z".parse().unwrap();
        let job = job_from_template(&cj, at, &schedule);
        assert_eq!(job.metadata.name.as_deref(), Some("hello-28488125"));
        let annotations = job.metadata.annotations.as_ref().unwrap();
        assert_eq!(
            annotations[SCHEDULED_TIMESTAMP_ANNOTATION],
            "2024-03-01T11:05:00+01:00"
        );
        assert_eq!(annotations["team"], "a");
        assert_eq!(job.metadata.labels.as_ref().unwrap()["app"], "hello");
        let owner = &job.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!(
            (owner.kind.as_str(), owner.uid.as_str(), owner.controller),
            ("CronJob", "cj-uid", Some(true))
        );
        assert!(job.spec.unwrap().template.spec.is_some());
    }

    #[test]
    fn history_cleanup_deletes_the_oldest() {
        let job = |name: &str, start: Option<&str>| -> Job {
            serde_json::from_value(
                json!({"metadata": {"name": name}, "status": {"startTime": start}}),
            )
            .unwrap()
        };
        let jobs = [
            job("c", Some("2024-03-01T10:03:00Z")),
            job("a", Some("2024-03-01T10:01:00Z")),
            job("never", None),
            job("b", Some("2024-03-01T10:02:00Z")),
        ];
        let names = |v: Vec<&Job>| v.into_iter().map(|j| j.name_any()).collect::<Vec<_>>();
        assert_eq!(
            names(oldest_beyond_limit(jobs.iter().collect(), 2)),
            vec!["a", "b"]
        );
        assert_eq!(
            names(oldest_beyond_limit(jobs.iter().collect(), 0)).len(),
            4
        );
        assert!(oldest_beyond_limit(jobs.iter().collect(), 5).is_empty());
    }

    #[test]
    fn rfc1123z_like_go() {
        let t: Timestamp = "2024-03-01T10:05:00Z".parse().unwrap();
        assert_eq!(rfc1123z(t), "Fri, 01 Mar 2024 10:05:00 +0000");
    }
}
