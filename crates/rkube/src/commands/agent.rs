//! `rkube agent --server URL --token T`: a node that joins a cluster: kubelet (and, with the
//! next issue, the service proxy).

use clap::Args;

#[derive(Args, Debug)]
pub struct AgentArgs {
    /// The API server to join, e.g. https://10.0.0.1:6443.
    #[arg(long, env = "RKUBE_URL")]
    pub server: String,
    /// The cluster's node token (`<server-data-dir>/node-token`).
    #[arg(long, env = "RKUBE_TOKEN")]
    pub token: String,
}

pub fn run(args: AgentArgs) -> anyhow::Result<()> {
    let _ = args;
    anyhow::bail!("rkube agent is not written yet")
}
