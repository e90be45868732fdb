//! This host's Node: registration (capacity, allocatable, addresses, nodeInfo, daemon
//! endpoint), status conditions, and the Lease renewed every `lease_renew_interval`.

use std::sync::Arc;

use tokio::sync::watch;

use crate::KubeletConfig;

/// Register the Node (or adopt the existing one), then keep its status and Lease fresh until
/// the task is dropped. Publishes the node's `spec.podCIDR` on `pod_cidr` when it is set.
pub async fn run(
    client: kube::Client,
    config: Arc<KubeletConfig>,
    pod_cidr: watch::Sender<Option<String>>,
) -> anyhow::Result<()> {
    let _ = (client, config, pod_cidr);
    todo!("node helper")
}
