//! TTL after finished: deletes a finished Job `spec.ttlSecondsAfterFinished` seconds after it
//! finished (the transition time of its Complete or Failed condition), cascading to its pods.

use std::sync::Arc;
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, Preconditions, PropagationPolicy};
use kube::runtime::controller::{self, Action, ReconcileRequest};
use kube::runtime::reflector::{self, ObjectRef};
use kube::runtime::{WatchStreamExt, watcher};

use crate::Context;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("reading job {key}: {source}")]
    Get { key: String, source: kube::Error },
    #[error("deleting job {key}: {source}")]
    Delete { key: String, source: kube::Error },
}

pub async fn run(ctx: Arc<Context>) -> anyhow::Result<()> {
    let client = ctx.client.clone();
    let (jobs, writer) = reflector::store::<Job>();
    let events = reflector::reflector(
        writer,
        watcher(Api::<Job>::all(client.clone()), watcher::Config::default()).default_backoff(),
    )
    .touched_objects()
    .try_filter(|job| futures::future::ready(needs_cleanup(job)))
    .map_ok(|job| ReconcileRequest::from(ObjectRef::from_obj(&job)));
    controller::applier(
        |job, ctx| Box::pin(reconcile(job, ctx)),
        error_policy,
        ctx,
        jobs,
        events,
        controller::Config::default(),
    )
    .for_each(|result| async move {
        match result {
            Err(controller::Error::ObjectNotFound(_)) | Ok(_) => {}
            Err(e) => tracing::debug!(error = %e, "ttlafterfinished reconcile"),
        }
    })
    .await;
    Ok(())
}

/// A Job with a TTL that has finished and is not being deleted yet.
fn needs_cleanup(job: &Job) -> bool {
    job.metadata.deletion_timestamp.is_none()
        && job
            .spec
            .as_ref()
            .and_then(|s| s.ttl_seconds_after_finished)
            .is_some()
        && finish_time(job).is_some()
}

/// When the Job finished: its Complete or Failed condition's transition.
pub fn finish_time(job: &Job) -> Option<Timestamp> {
    let conditions = job.status.as_ref()?.conditions.as_ref()?;
    conditions
        .iter()
        .find(|c| (c.type_ == "Complete" || c.type_ == "Failed") && c.status == "True")
        .map(|c| {
            c.last_transition_time
                .as_ref()
                .map_or(Timestamp::now(), |t| t.0)
        })
}

/// Time left before the Job is due for deletion (zero once due); None if it never is.
pub fn time_left(job: &Job, now: Timestamp) -> Option<Duration> {
    let ttl = job.spec.as_ref()?.ttl_seconds_after_finished?;
    let finished = finish_time(job)?;
    let elapsed = now.duration_since(finished).as_secs_f64();
    Some(Duration::from_secs_f64((f64::from(ttl) - elapsed).max(0.0)))
}

fn key(job: &Job) -> String {
    format!("{}/{}", job.namespace().unwrap_or_default(), job.name_any())
}

fn error_policy(job: Arc<Job>, error: &Error, _ctx: Arc<Context>) -> Action {
    tracing::warn!(job = %key(&job), %error, "ttlafterfinished");
    Action::requeue(Duration::from_secs(5))
}

async fn reconcile(job: Arc<Job>, ctx: Arc<Context>) -> Result<Action, Error> {
    if !needs_cleanup(&job) {
        return Ok(Action::await_change());
    }
    match time_left(&job, Timestamp::now()) {
        None => return Ok(Action::await_change()),
        Some(left) if !left.is_zero() => return Ok(Action::requeue(left)),
        Some(_) => {}
    }
    // The cache may be stale (the TTL changed, the Job was recreated): check the live object.
    let api: Api<Job> = Api::namespaced(ctx.client.clone(), &job.namespace().unwrap_or_default());
    let fresh = match api.get_opt(&job.name_any()).await {
        Ok(Some(j)) => j,
        Ok(None) => return Ok(Action::await_change()),
        Err(source) => {
            return Err(Error::Get {
                key: key(&job),
                source,
            });
        }
    };
    if !needs_cleanup(&fresh) {
        return Ok(Action::await_change());
    }
    if let Some(left) = time_left(&fresh, Timestamp::now())
        && !left.is_zero()
    {
        return Ok(Action::requeue(left));
    }
    let params = DeleteParams {
        propagation_policy: Some(PropagationPolicy::Foreground),
        preconditions: Some(Preconditions {
            uid: fresh.uid(),
            resource_version: None,
        }),
        ..DeleteParams::default()
    };
    match api.delete(&fresh.name_any(), &params).await {
        Ok(_) => tracing::info!(job = %key(&fresh), "deleted a finished job whose ttl expired"),
        Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => {}
        Err(source) => {
            return Err(Error::Delete {
                key: key(&fresh),
                source,
            });
        }
    }
    Ok(Action::await_change())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn job(ttl: Option<i32>, finished_at: Option<&str>) -> Job {
        let conditions: Vec<_> = finished_at
            .map(|t| json!({"type": "Complete", "status": "True", "lastTransitionTime": t}))
            .into_iter()
            .collect();
        serde_json::from_value(json!({
            "metadata": {"name": "j", "namespace": "ns"},
            "spec": {"ttlSecondsAfterFinished": ttl, "template": {}},
            "status": {"conditions": conditions},
        }))
        .unwrap()
    }

    #[test]
    fn due_after_the_ttl() {
        let now: Timestamp = "2024-03-01T10:00:30Z".parse().unwrap();
        let j = job(Some(60), Some("2024-03-01T10:00:00Z"));
        assert!(needs_cleanup(&j));
        assert_eq!(time_left(&j, now), Some(Duration::from_secs(30)));
        let j = job(Some(10), Some("2024-03-01T10:00:00Z"));
        assert_eq!(time_left(&j, now), Some(Duration::ZERO));
        assert!(!needs_cleanup(&job(None, Some("2024-03-01T10:00:00Z"))));
        assert!(!needs_cleanup(&job(Some(0), None)));
    }
}
