//! Events about pods, as the kubelet records them (`source.component: kubelet`,
//! `involvedObject.fieldPath: spec.containers{name}`), so that `kubectl describe` shows them.

use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, PostParams};

/// Records events without blocking the caller: each is posted on a task of its own, and a
/// failure to post is logged, never returned (events are best effort, as upstream's).
#[derive(Clone)]
pub struct EventRecorder {
    client: kube::Client,
    node_name: String,
}

impl EventRecorder {
    pub fn new(client: kube::Client, node_name: String) -> EventRecorder {
        EventRecorder { client, node_name }
    }

    /// `event_type` is `Normal` or `Warning`; `container` sets the fieldPath
    /// (`spec.containers{name}`, or `spec.initContainers{name}` when `init`).
    pub fn pod_event(
        &self,
        pod: &Pod,
        container: Option<(&str, bool)>,
        event_type: &str,
        reason: &str,
        message: impl Into<String>,
    ) {
        let namespace = pod.metadata.namespace.clone().unwrap_or_default();
        let name = pod.metadata.name.clone().unwrap_or_default();
        let field_path = container.map(|(c, init)| {
            if init {
                format!("spec.initContainers{{{c}}}")
            } else {
                format!("spec.containers{{{c}}}")
            }
        });
        let now = Time(Timestamp::now());
        let event = Event {
            metadata: ObjectMeta {
                generate_name: Some(format!("{name}.")),
                namespace: Some(namespace.clone()),
                ..Default::default()
            },
            involved_object: ObjectReference {
                api_version: Some("v1".into()),
                kind: Some("Pod".into()),
                name: Some(name.clone()),
                namespace: Some(namespace.clone()),
                uid: pod.metadata.uid.clone(),
                resource_version: pod.metadata.resource_version.clone(),
                field_path,
            },
            reason: Some(reason.to_string()),
            message: Some(message.into()),
            type_: Some(event_type.to_string()),
            count: Some(1),
            first_timestamp: Some(now.clone()),
            last_timestamp: Some(now),
            source: Some(EventSource {
                component: Some("kubelet".into()),
                host: Some(self.node_name.clone()),
            }),
            reporting_component: Some("kubelet".into()),
            reporting_instance: Some(self.node_name.clone()),
            ..Default::default()
        };
        let api: Api<Event> = Api::namespaced(self.client.clone(), &namespace);
        tokio::spawn(async move {
            if let Err(e) = api.create(&PostParams::default(), &event).await {
                tracing::debug!(pod = %format!("{namespace}/{name}"), error = %e, "recording an event failed");
            }
        });
    }
}
