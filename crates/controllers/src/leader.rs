//! Leader election on a coordination.k8s.io/v1 Lease, as upstream's leaderelection package
//! does: one holder at a time, renewed every `retry_period`, taken over after `lease_duration`
//! without renewal.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, PostParams};

#[derive(Debug, Clone)]
pub struct LeaderElection {
    pub namespace: String,
    pub name: String,
    pub identity: String,
    pub lease_duration: Duration,
    pub retry_period: Duration,
}

impl LeaderElection {
    pub fn new(name: &str, identity: &str) -> Self {
        LeaderElection {
            namespace: "kube-system".into(),
            name: name.into(),
            identity: identity.into(),
            lease_duration: Duration::from_secs(15),
            retry_period: Duration::from_secs(2),
        }
    }

    /// Try once to take or renew the lease; true if we hold it afterwards.
    pub async fn try_acquire(&self, client: &kube::Client) -> Result<bool, kube::Error> {
        let leases: Api<Lease> = Api::namespaced(client.clone(), &self.namespace);
        let now = MicroTime(Timestamp::now());
        let desired = |transitions: i32, acquire_time: MicroTime| LeaseSpec {
            holder_identity: Some(self.identity.clone()),
            lease_duration_seconds: Some(self.lease_duration.as_secs() as i32),
            acquire_time: Some(acquire_time),
            renew_time: Some(now.clone()),
            lease_transitions: Some(transitions),
            ..Default::default()
        };
        let Some(mut lease) = leases.get_opt(&self.name).await? else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.name.clone()),
                    ..Default::default()
                },
                spec: Some(desired(0, now.clone())),
            };
            return match leases.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(true),
                Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
                Err(e) => Err(e),
            };
        };
        let spec = lease.spec.clone().unwrap_or_default();
        let holder = spec.holder_identity.clone().unwrap_or_default();
        let transitions = spec.lease_transitions.unwrap_or(0);
        if holder == self.identity {
            lease.spec = Some(desired(
                transitions,
                spec.acquire_time.clone().unwrap_or(now.clone()),
            ));
        } else {
            let duration = i64::from(spec.lease_duration_seconds.unwrap_or(15));
            let expired = spec
                .renew_time
                .as_ref()
                .is_none_or(|t| t.0.as_second() + duration < Timestamp::now().as_second());
            if !holder.is_empty() && !expired {
                return Ok(false);
            }
            lease.spec = Some(desired(transitions + 1, now.clone()));
        }
        // The resourceVersion in `lease` makes this a compare-and-swap: a racing candidate gets 409.
        match leases
            .replace(&self.name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Run `work` while holding the lease; stop it as soon as the lease is lost, and try again.
    pub async fn run<F, Fut>(&self, client: kube::Client, mut work: F)
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = ()> + Send + 'static,
    {
        loop {
            match self.try_acquire(&client).await {
                Ok(true) => {
                    tracing::info!(lease = %self.name, identity = %self.identity, "became leader");
                    let task = tokio::spawn(work());
                    loop {
                        tokio::time::sleep(self.retry_period).await;
                        match self.try_acquire(&client).await {
                            Ok(true) => continue,
                            Ok(false) => {
                                tracing::warn!(lease = %self.name, "lost the lease; stopping");
                                break;
                            }
                            Err(e) => {
                                tracing::warn!(lease = %self.name, error = %e, "cannot renew the lease");
                            }
                        }
                    }
                    task.abort();
                }
                Ok(false) => {}
                Err(e) => tracing::warn!(lease = %self.name, error = %e, "leader election failed"),
            }
            tokio::time::sleep(self.retry_period).await;
        }
    }
}
