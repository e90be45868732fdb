//! The pods bound to this node: one worker per pod drives it from its spec to running
//! containers and back to nothing, and reports its status.

use std::sync::Arc;

use runtime::container::ContainerRuntime;
use runtime::images::{ImageStore, RegistryConfig};
use runtime::sandbox::SandboxManager;

use crate::KubeletConfig;
use crate::events::EventRecorder;
use crate::volumes::VolumeManager;

/// What every pod worker shares.
pub struct PodContext {
    pub client: kube::Client,
    pub config: Arc<KubeletConfig>,
    pub runtime: ContainerRuntime,
    pub sandboxes: SandboxManager,
    pub images: ImageStore,
    pub registries: RegistryConfig,
    pub volumes: VolumeManager,
    pub events: EventRecorder,
    /// `<agent-root>/logs`
    pub log_root: std::path::PathBuf,
}

/// Watch the pods bound to this node and run them until the task is dropped. On start, adopt
/// the containers and sandboxes already on disk and remove those whose pods are gone.
pub async fn run(ctx: Arc<PodContext>) -> anyhow::Result<()> {
    let _ = ctx;
    todo!("pods helper")
}
