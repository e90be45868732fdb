//! DefaultBinder: bind through the `pods/binding` subresource.

use std::sync::Arc;

use futures::future::BoxFuture;
use k8s_openapi::api::core::v1::{Binding, ObjectReference, Pod};
use kube::api::{Api, ObjectMeta, PostParams};

use crate::framework::{BindPlugin, Plugin, PodInfo, Status};

pub const NAME: &str = "DefaultBinder";

pub struct DefaultBinder;

pub fn new() -> Arc<dyn Plugin> {
    Arc::new(DefaultBinder)
}

/// The Binding object that assigns `pod` to `node`.
pub fn binding_for(pod: &PodInfo, node: &str) -> Binding {
    Binding {
        metadata: ObjectMeta {
            name: Some(pod.name.clone()),
            namespace: Some(pod.namespace.clone()),
            uid: Some(pod.uid.clone()).filter(|u| !u.is_empty()),
            ..Default::default()
        },
        target: ObjectReference {
            kind: Some("Node".into()),
            name: Some(node.to_string()),
            ..Default::default()
        },
    }
}

impl Plugin for DefaultBinder {
    fn name(&self) -> &'static str {
        NAME
    }
    fn as_bind(&self) -> Option<&dyn BindPlugin> {
        Some(self)
    }
}

impl BindPlugin for DefaultBinder {
    fn bind(
        &self,
        client: kube::Client,
        pod: Arc<PodInfo>,
        node: String,
    ) -> BoxFuture<'static, Status> {
        Box::pin(async move {
            let pods: Api<Pod> = Api::namespaced(client, &pod.namespace);
            let binding = binding_for(&pod, &node);
            match pods
                .create_subresource::<Binding, serde_json::Value>(
                    "binding",
                    &pod.name,
                    &PostParams::default(),
                    &binding,
                )
                .await
            {
                Ok(_) => Status::success(),
                Err(e) => Status::error(format!("binding {} to {node}: {e}", pod.key)),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugins::testutil::pod_info;
    use serde_json::json;

    #[test]
    fn binding_names_pod_and_node() {
        let p = pod_info(json!({"metadata": {"name": "web", "namespace": "prod", "uid": "u1"}}));
        let b = serde_json::to_value(binding_for(&p, "n1")).unwrap();
        assert_eq!(b["metadata"]["name"], "web");
        assert_eq!(b["metadata"]["namespace"], "prod");
        assert_eq!(b["metadata"]["uid"], "u1");
        assert_eq!(b["target"]["kind"], "Node");
        assert_eq!(b["target"]["name"], "n1");
    }
}
