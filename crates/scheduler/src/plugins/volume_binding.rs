//! VolumeBinding: the hook where PersistentVolumeClaims will be matched to volumes and nodes.
//! Until volumes exist it passes every node, and skips pods without claims.

use std::sync::Arc;

use crate::cache::Snapshot;
use crate::framework::{
    CycleState, FilterPlugin, NodeInfo, Plugin, PodInfo, PreFilterPlugin, ReservePlugin, Status,
};

pub const NAME: &str = "VolumeBinding";

pub struct VolumeBinding;

pub fn new() -> Arc<dyn Plugin> {
    Arc::new(VolumeBinding)
}

/// Whether the pod uses any PersistentVolumeClaim (directly or as an ephemeral volume).
pub fn has_claims(pod: &PodInfo) -> bool {
    pod.pod
        .spec
        .as_ref()
        .and_then(|s| s.volumes.as_ref())
        .is_some_and(|vs| {
            vs.iter()
                .any(|v| v.persistent_volume_claim.is_some() || v.ephemeral.is_some())
        })
}

impl Plugin for VolumeBinding {
    fn name(&self) -> &'static str {
        NAME
    }
    fn as_pre_filter(&self) -> Option<&dyn PreFilterPlugin> {
        Some(self)
    }
    fn as_filter(&self) -> Option<&dyn FilterPlugin> {
        Some(self)
    }
    fn as_reserve(&self) -> Option<&dyn ReservePlugin> {
        Some(self)
    }
}

impl PreFilterPlugin for VolumeBinding {
    fn pre_filter(&self, _state: &mut CycleState, pod: &PodInfo, _snapshot: &Snapshot) -> Status {
        if has_claims(pod) {
            Status::success()
        } else {
            Status::skip()
        }
    }
}

impl FilterPlugin for VolumeBinding {
    fn filter(&self, _state: &CycleState, _pod: &PodInfo, _node: &NodeInfo) -> Status {
        Status::success()
    }
}

impl ReservePlugin for VolumeBinding {
    fn reserve(&self, _state: &mut CycleState, _pod: &PodInfo, _node: &str) -> Status {
        Status::success()
    }
    fn unreserve(&self, _state: &mut CycleState, _pod: &PodInfo, _node: &str) {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugins::testutil::pod_info;
    use serde_json::json;

    #[test]
    fn claims() {
        let without = pod_info(json!({}));
        assert!(!has_claims(&without));
        let with = pod_info(json!({"spec": {"containers": [{"name": "c", "image": "i"}],
            "volumes": [{"name": "d", "persistentVolumeClaim": {"claimName": "data"}}]}}));
        assert!(has_claims(&with));
    }
}
