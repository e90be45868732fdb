//! The scheduler (being written): binds pending pods to nodes through `pods/binding`.

/// Run the scheduler with leader election on the `kube-scheduler` Lease, until the process ends.
pub async fn run(client: kube::Client, identity: String) {
    let _ = (client, identity);
    futures::future::pending::<()>().await;
}
