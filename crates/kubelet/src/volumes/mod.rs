//! Pod volumes, prepared on the node before the containers start, and the container
//! environment ([`env`]).
//!
//! Layout: `<root>/<pod-uid>/volumes/<plugin>/<volume-name>` (as upstream's
//! `/var/lib/kubelet/pods/<uid>/volumes/kubernetes.io~<plugin>/<name>`).

pub mod env;

use std::collections::BTreeMap;
use std::path::PathBuf;

use k8s_openapi::api::core::v1::{Container, Pod};
use runtime::container::Mount;

/// A volume ready on the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumePath {
    pub host_path: PathBuf,
    /// The volume itself is read-only (configMap, secret, downwardAPI, projected, or a
    /// `readOnly` PVC/hostPath).
    pub read_only: bool,
}

/// The volumes of one pod, by volume name.
#[derive(Debug, Clone, Default)]
pub struct PodVolumes {
    pub paths: BTreeMap<String, VolumePath>,
}

#[derive(Debug, thiserror::Error)]
pub enum VolumeError {
    /// A source that does not exist (yet): the pod waits and the kubelet retries
    /// (event FailedMount, as upstream).
    #[error("MountVolume.SetUp failed for volume {volume:?} : {message}")]
    NotReady { volume: String, message: String },
    #[error("volume {volume:?}: {message}")]
    Invalid { volume: String, message: String },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Prepares and removes pod volumes on this node.
#[derive(Clone)]
pub struct VolumeManager {
    pub client: kube::Client,
    /// `<agent-root>/pods`
    pub root: PathBuf,
    pub node_name: String,
}

impl VolumeManager {
    pub fn new(client: kube::Client, root: PathBuf, node_name: String) -> VolumeManager {
        VolumeManager {
            client,
            root,
            node_name,
        }
    }

    /// `<root>/<pod-uid>`: the pod's directory (volumes, etc-hosts, termination logs).
    pub fn pod_dir(&self, pod_uid: &str) -> PathBuf {
        self.root.join(pod_uid)
    }

    /// Prepare every volume of the pod. Idempotent, and called again periodically: configMap,
    /// secret, downwardAPI and projected contents are rewritten atomically when their source
    /// changed.
    pub async fn setup(&self, pod: &Pod) -> Result<PodVolumes, VolumeError> {
        let _ = pod;
        todo!("volumes helper")
    }

    /// The bind mounts of one container (volumeMounts with subPath, readOnly, propagation).
    pub fn container_mounts(
        &self,
        pod: &Pod,
        container: &Container,
        volumes: &PodVolumes,
    ) -> Result<Vec<Mount>, VolumeError> {
        let _ = (pod, container, volumes);
        todo!("volumes helper")
    }

    /// Unmount and delete everything of the pod's directory (a PV's data stays where it is).
    pub async fn teardown(&self, pod_uid: &str) -> Result<(), VolumeError> {
        let _ = pod_uid;
        todo!("volumes helper")
    }
}
