//! ImageLocality: prefer nodes that already have the pod's images (node.status.images),
//! weighted by image size and by how widely the image is spread (so one node holding a popular
//! image does not attract everything).

use std::collections::HashMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::Pod;

use crate::cache::Snapshot;
use crate::framework::types::normalized_image_name;
use crate::framework::{
    CycleState, MAX_NODE_SCORE, NodeInfo, Plugin, PodInfo, PreScorePlugin, ScorePlugin, Status,
};

pub const NAME: &str = "ImageLocality";
const MB: i64 = 1024 * 1024;
/// Below this sum a node scores 0 (tiny images say nothing).
pub const MIN_THRESHOLD: i64 = 23 * MB;
/// Per container, above this a node scores 100.
pub const MAX_CONTAINER_THRESHOLD: i64 = 1000 * MB;

pub struct ImageLocality;

pub fn new() -> Arc<dyn Plugin> {
    Arc::new(ImageLocality)
}

fn images(pod: &Pod) -> Vec<String> {
    let Some(spec) = pod.spec.as_ref() else {
        return Vec::new();
    };
    spec.init_containers
        .iter()
        .flatten()
        .chain(&spec.containers)
        .filter_map(|c| c.image.as_deref())
        .map(normalized_image_name)
        .collect()
}

/// The score of a node holding `node_images` for a pod with `pod_images`, with `spread`
/// giving on how many of `total_nodes` each image is present.
pub fn image_locality_score(
    pod_images: &[String],
    node_images: &HashMap<String, i64>,
    spread: &HashMap<String, usize>,
    total_nodes: usize,
) -> i64 {
    if pod_images.is_empty() || total_nodes == 0 {
        return 0;
    }
    let mut sum: i64 = 0;
    for image in pod_images {
        if let Some(size) = node_images.get(image) {
            let nodes = spread.get(image).copied().unwrap_or(1) as f64;
            sum += (*size as f64 * (nodes / total_nodes as f64)) as i64;
        }
    }
    let max = MAX_CONTAINER_THRESHOLD * pod_images.len() as i64;
    let sum = sum.clamp(MIN_THRESHOLD, max);
    MAX_NODE_SCORE * (sum - MIN_THRESHOLD) / (max - MIN_THRESHOLD)
}

#[derive(Clone)]
struct PreScoreState {
    images: Vec<String>,
    spread: Arc<HashMap<String, usize>>,
    total_nodes: usize,
}

const STATE_KEY: &str = "PreScoreImageLocality";

impl Plugin for ImageLocality {
    fn name(&self) -> &'static str {
        NAME
    }
    fn as_pre_score(&self) -> Option<&dyn PreScorePlugin> {
        Some(self)
    }
    fn as_score(&self) -> Option<&dyn ScorePlugin> {
        Some(self)
    }
}

impl PreScorePlugin for ImageLocality {
    fn pre_score(
        &self,
        state: &mut CycleState,
        pod: &PodInfo,
        _nodes: &[Arc<NodeInfo>],
        snapshot: &Snapshot,
    ) -> Status {
        if snapshot.image_nodes.is_empty() {
            return Status::skip();
        }
        state.write(
            STATE_KEY,
            PreScoreState {
                images: images(&pod.pod),
                spread: snapshot.image_nodes.clone(),
                total_nodes: snapshot.num_nodes(),
            },
        );
        Status::success()
    }
}

impl ScorePlugin for ImageLocality {
    fn score(&self, state: &CycleState, _pod: &PodInfo, node: &NodeInfo) -> Result<i64, Status> {
        let Some(s) = state.read::<PreScoreState>(STATE_KEY) else {
            return Ok(0);
        };
        Ok(image_locality_score(
            &s.images,
            &node.images,
            &s.spread,
            s.total_nodes,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table() {
        let node: HashMap<String, i64> = [
            ("big:latest".to_string(), 500 * MB),
            ("small:1".to_string(), MB),
        ]
        .into();
        let spread: HashMap<String, usize> =
            [("big:latest".to_string(), 1), ("small:1".to_string(), 1)].into();
        let s = |imgs: &[&str], total| {
            let imgs: Vec<String> = imgs.iter().map(|i| normalized_image_name(i)).collect();
            image_locality_score(&imgs, &node, &spread, total)
        };
        assert_eq!(s(&["absent"], 1), 0);
        assert_eq!(s(&["small:1"], 1), 0, "below the minimum threshold");
        // 500MB on the only node: (500-23)/(1000-23) of 100.
        assert_eq!(s(&["big"], 1), 100 * (477 * MB) / (977 * MB));
        // The same image on 1 of 4 nodes counts a quarter of its size: 125MB.
        assert_eq!(s(&["big"], 4), 100 * (102 * MB) / (977 * MB));
    }

    #[test]
    fn names_are_normalized() {
        assert_eq!(normalized_image_name("nginx"), "nginx:latest");
        assert_eq!(
            normalized_image_name("reg:5000/nginx"),
            "reg:5000/nginx:latest"
        );
        assert_eq!(normalized_image_name("nginx:1.25"), "nginx:1.25");
        assert_eq!(
            normalized_image_name("nginx@sha256:abc"),
            "nginx@sha256:abc"
        );
    }
}
