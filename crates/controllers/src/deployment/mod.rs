//! The deployment controller (being written).

use std::sync::Arc;

use crate::Context;

pub async fn run(ctx: Arc<Context>) -> anyhow::Result<()> {
    let _ = ctx;
    futures::future::pending::<()>().await;
    Ok(())
}
