//! Pod garbage collector, as upstream's: every period it force-deletes
//! - terminated pods (Succeeded/Failed) beyond the threshold, oldest first;
//! - pods bound to nodes that no longer exist (after a quarantine, and a check with the API
//!   server), first marking them Failed with a DisruptionTarget condition;
//! - terminating pods that were never scheduled;
//! - terminating pods on nodes that are not Ready and carry the `out-of-service` taint.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, Patch, PatchParams, Preconditions};
use kube::runtime::reflector::Store;
use serde_json::json;

use crate::Context;

/// Upstream's `--terminated-pod-gc-threshold` default.
pub const DEFAULT_TERMINATED_POD_GC_THRESHOLD: usize = 12_500;
const OUT_OF_SERVICE_TAINT: &str = "node.kubernetes.io/out-of-service";

/// Settings of the pod garbage collector.
#[derive(Debug, Clone)]
pub struct PodGcConfig {
    /// Terminated pods kept before the oldest are deleted; 0 turns this collection off.
    pub terminated_pod_gc_threshold: usize,
    /// How often to look (upstream: 20 s).
    pub period: Duration,
    /// How long a node must be missing before its pods count as orphaned (upstream: 40 s).
    pub quarantine: Duration,
}

impl Default for PodGcConfig {
    fn default() -> Self {
        PodGcConfig {
            terminated_pod_gc_threshold: DEFAULT_TERMINATED_POD_GC_THRESHOLD,
            period: Duration::from_secs(20),
            quarantine: Duration::from_secs(40),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("deleting pod {pod}: {source}")]
    Delete { pod: String, source: kube::Error },
    #[error("marking orphaned pod {pod} failed: {source}")]
    MarkFailed { pod: String, source: kube::Error },
}

fn is_terminated(pod: &Pod) -> bool {
    matches!(
        pod.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded" | "Failed")
    )
}

fn node_name(pod: &Pod) -> &str {
    pod.spec
        .as_ref()
        .and_then(|s| s.node_name.as_deref())
        .unwrap_or("")
}

/// The terminated pods to delete so that at most `threshold` remain: the oldest first.
pub fn terminated_to_delete(pods: &[Arc<Pod>], threshold: usize) -> Vec<Arc<Pod>> {
    if threshold == 0 {
        return Vec::new();
    }
    let mut terminated: Vec<Arc<Pod>> = pods
        .iter()
        .filter(|p| is_terminated(p) && p.metadata.deletion_timestamp.is_none())
        .cloned()
        .collect();
    if terminated.len() <= threshold {
        return Vec::new();
    }
    terminated.sort_by(|a, b| {
        let key = |p: &Pod| {
            (
                p.metadata.creation_timestamp.as_ref().map(|t| t.0),
                p.name_any(),
            )
        };
        key(a).cmp(&key(b))
    });
    let excess = terminated.len() - threshold;
    terminated.truncate(excess);
    terminated
}

/// Pods bound to a node that is not in `nodes`.
pub fn orphaned(pods: &[Arc<Pod>], nodes: &HashSet<String>) -> Vec<Arc<Pod>> {
    pods.iter()
        .filter(|p| {
            let node = node_name(p);
            !node.is_empty() && !nodes.contains(node)
        })
        .cloned()
        .collect()
}

/// Terminating pods that no kubelet will finish: never scheduled, or on a node that is out of
/// service (not Ready and tainted `node.kubernetes.io/out-of-service`).
pub fn stuck_terminating(pods: &[Arc<Pod>], out_of_service: &HashSet<String>) -> Vec<Arc<Pod>> {
    pods.iter()
        .filter(|p| p.metadata.deletion_timestamp.is_some())
        .filter(|p| {
            let node = node_name(p);
            node.is_empty() || out_of_service.contains(node)
        })
        .cloned()
        .collect()
}

fn is_out_of_service(node: &Node) -> bool {
    let tainted = node
        .spec
        .as_ref()
        .and_then(|s| s.taints.as_ref())
        .is_some_and(|ts| ts.iter().any(|t| t.key == OUT_OF_SERVICE_TAINT));
    let ready = node
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
    tainted && !ready
}

pub async fn run(ctx: Arc<Context>) -> anyhow::Result<()> {
    run_with(ctx, PodGcConfig::default()).await
}

pub async fn run_with(ctx: Arc<Context>, config: PodGcConfig) -> anyhow::Result<()> {
    let client = ctx.client.clone();
    // Pods and nodes from the controllers' shared caches.
    let pods = ctx.informers.pods().store().await;
    let nodes = ctx.informers.nodes().store().await;
    let mut gc = PodGc {
        client,
        config: config.clone(),
        pods,
        nodes,
        missing_since: HashMap::new(),
    };
    let mut tick = tokio::time::interval(config.period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        gc.pass().await;
    }
}

struct PodGc {
    client: kube::Client,
    config: PodGcConfig,
    pods: Store<Pod>,
    nodes: Store<Node>,
    /// When each node that pods point to was first seen missing.
    missing_since: HashMap<String, Instant>,
}

fn key(pod: &Pod) -> String {
    format!("{}/{}", pod.namespace().unwrap_or_default(), pod.name_any())
}

impl PodGc {
    async fn pass(&mut self) {
        let pods = self.pods.state();
        let nodes = self.nodes.state();
        let names: HashSet<String> = nodes.iter().map(|n| n.name_any()).collect();

        for pod in terminated_to_delete(&pods, self.config.terminated_pod_gc_threshold) {
            self.force_delete(&pod, "terminated pods beyond the threshold")
                .await;
        }

        // Orphans: a node missing for the quarantine, and confirmed gone by the API server.
        let now = Instant::now();
        let orphans = orphaned(&pods, &names);
        let missing: HashSet<String> = orphans.iter().map(|p| node_name(p).to_string()).collect();
        self.missing_since.retain(|n, _| missing.contains(n));
        let mut gone = HashSet::new();
        for node in &missing {
            let since = *self.missing_since.entry(node.clone()).or_insert(now);
            if now.duration_since(since) < self.config.quarantine {
                continue;
            }
            let api: Api<Node> = Api::all(self.client.clone());
            match api.get_opt(node).await {
                Ok(None) => {
                    gone.insert(node.clone());
                }
                Ok(Some(_)) => {}
                Err(e) => tracing::warn!(node = %node, error = %e, "pod gc: checking node"),
            }
        }
        for pod in orphans.iter().filter(|p| gone.contains(node_name(p))) {
            if let Err(e) = self.mark_failed(pod).await {
                tracing::warn!(error = %e, "pod gc");
                continue;
            }
            self.force_delete(pod, "its node no longer exists").await;
        }

        let out_of_service: HashSet<String> = nodes
            .iter()
            .filter(|n| is_out_of_service(n))
            .map(|n| n.name_any())
            .collect();
        for pod in stuck_terminating(&pods, &out_of_service) {
            self.force_delete(&pod, "terminating and no kubelet will finish it")
                .await;
        }
    }

    async fn mark_failed(&self, pod: &Pod) -> Result<(), Error> {
        let api: Api<Pod> =
            Api::namespaced(self.client.clone(), &pod.namespace().unwrap_or_default());
        let mut status = json!({"conditions": [{
            "type": "DisruptionTarget",
            "status": "True",
            "reason": "DeletionByPodGC",
            "message": "PodGC: node no longer exists",
            "lastTransitionTime": Time(Timestamp::now()),
        }]});
        if !is_terminated(pod) {
            status["phase"] = json!("Failed");
        }
        match api
            .patch_status(
                &pod.name_any(),
                &PatchParams::default(),
                &Patch::Strategic(json!({"status": status})),
            )
            .await
        {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
            Err(source) => Err(Error::MarkFailed {
                pod: key(pod),
                source,
            }),
        }
    }

    async fn force_delete(&self, pod: &Pod, why: &str) {
        let api: Api<Pod> =
            Api::namespaced(self.client.clone(), &pod.namespace().unwrap_or_default());
        let params = DeleteParams {
            grace_period_seconds: Some(0),
            preconditions: pod.uid().map(|uid| Preconditions {
                uid: Some(uid),
                resource_version: None,
            }),
            ..Default::default()
        };
        match api.delete(&pod.name_any(), &params).await {
            Ok(_) => tracing::info!(pod = %key(pod), reason = why, "pod gc deleted pod"),
            Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => {}
            Err(source) => tracing::warn!(
                error = %Error::Delete { pod: key(pod), source },
                "pod gc"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(name: &str, node: &str, phase: &str, created: &str, deleting: bool) -> Arc<Pod> {
        let mut meta = json!({"name": name, "namespace": "d", "creationTimestamp": created});
        if deleting {
            meta["deletionTimestamp"] = json!("2024-01-02T00:00:00Z");
        }
        Arc::new(
            serde_json::from_value(json!({
                "metadata": meta,
                "spec": {"nodeName": node, "containers": []},
                "status": {"phase": phase},
            }))
            .unwrap(),
        )
    }

    fn names(pods: &[Arc<Pod>]) -> Vec<String> {
        pods.iter().map(|p| p.name_any()).collect()
    }

    #[test]
    fn oldest_terminated_pods_beyond_the_threshold() {
        let pods = vec![
            pod("new-done", "n", "Succeeded", "2024-01-01T00:00:03Z", false),
            pod("running", "n", "Running", "2024-01-01T00:00:00Z", false),
            pod("old-failed", "n", "Failed", "2024-01-01T00:00:01Z", false),
            pod("mid-done", "n", "Succeeded", "2024-01-01T00:00:02Z", false),
        ];
        assert_eq!(
            names(&terminated_to_delete(&pods, 1)),
            ["old-failed", "mid-done"]
        );
        assert!(terminated_to_delete(&pods, 3).is_empty());
        assert!(terminated_to_delete(&pods, 0).is_empty(), "0 turns it off");
    }

    #[test]
    fn pods_on_missing_nodes_are_orphans() {
        let pods = vec![
            pod("here", "n1", "Running", "2024-01-01T00:00:00Z", false),
            pod("gone", "n2", "Running", "2024-01-01T00:00:00Z", false),
            pod("pending", "", "Pending", "2024-01-01T00:00:00Z", false),
        ];
        let nodes: HashSet<String> = ["n1".to_string()].into();
        assert_eq!(names(&orphaned(&pods, &nodes)), ["gone"]);
    }

    #[test]
    fn terminating_pods_nobody_will_finish() {
        let pods = vec![
            pod("unscheduled", "", "Pending", "2024-01-01T00:00:00Z", true),
            pod(
                "on-live-node",
                "n1",
                "Running",
                "2024-01-01T00:00:00Z",
                true,
            ),
            pod(
                "out-of-service",
                "n2",
                "Running",
                "2024-01-01T00:00:00Z",
                true,
            ),
            pod("not-deleting", "", "Pending", "2024-01-01T00:00:00Z", false),
        ];
        let oos: HashSet<String> = ["n2".to_string()].into();
        assert_eq!(
            names(&stuck_terminating(&pods, &oos)),
            ["unscheduled", "out-of-service"]
        );
    }
}
