//! ServiceAccount controller: a `default` ServiceAccount in every active namespace.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use kube::api::{Api, ObjectMeta, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;

use crate::Context;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("creating the default ServiceAccount in namespace {namespace}: {source}")]
    Create {
        namespace: String,
        source: kube::Error,
    },
}

pub async fn run(ctx: Arc<Context>) -> anyhow::Result<()> {
    let namespaces: Api<Namespace> = Api::all(ctx.client.clone());
    let accounts: Api<ServiceAccount> = Api::all(ctx.client.clone());
    Controller::new(namespaces, watcher::Config::default())
        .owns(
            accounts,
            watcher::Config::default().fields("metadata.name=default"),
        )
        .run(reconcile, error_policy, ctx)
        .for_each(|result| async move {
            if let Err(e) = result {
                tracing::debug!(error = %e, "serviceaccount reconcile");
            }
        })
        .await;
    Ok(())
}

async fn reconcile(ns: Arc<Namespace>, ctx: Arc<Context>) -> Result<Action, Error> {
    let Some(name) = ns.metadata.name.clone() else {
        return Ok(Action::await_change());
    };
    if ns.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let accounts: Api<ServiceAccount> = Api::namespaced(ctx.client.clone(), &name);
    let account = ServiceAccount {
        metadata: ObjectMeta {
            name: Some("default".into()),
            ..Default::default()
        },
        ..Default::default()
    };
    match accounts.create(&PostParams::default(), &account).await {
        Ok(_) => tracing::info!(namespace = %name, "created the default ServiceAccount"),
        Err(kube::Error::Api(e)) if e.code == 409 => {}
        // The namespace is going away: nothing to do.
        Err(kube::Error::Api(e)) if e.code == 403 || e.code == 404 => {}
        Err(source) => {
            return Err(Error::Create {
                namespace: name,
                source,
            });
        }
    }
    Ok(Action::requeue(Duration::from_secs(300)))
}

fn error_policy(_ns: Arc<Namespace>, error: &Error, _ctx: Arc<Context>) -> Action {
    tracing::warn!(%error, "serviceaccount controller");
    Action::requeue(Duration::from_secs(2))
}
