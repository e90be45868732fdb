//! Simulated nodes (being written): register Nodes, renew Leases, run bound pods instantly.

/// How many nodes to simulate and what each offers.
#[derive(Debug, Clone)]
pub struct SimConfig {
    pub nodes: usize,
    pub name_prefix: String,
    pub cpu: String,
    pub memory: String,
    pub pods: u32,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            nodes: 1,
            name_prefix: "sim-".into(),
            cpu: "32".into(),
            memory: "256Gi".into(),
            pods: 110,
        }
    }
}

/// Run the simulated nodes until the process ends (or the returned future is dropped).
pub async fn run(client: kube::Client, config: SimConfig) -> anyhow::Result<()> {
    let _ = (client, config);
    futures::future::pending::<()>().await;
    Ok(())
}
