//! Graceful shutdown: once the shutdown token is cancelled, work in hand gets a grace period
//! to end on its own before it is cut short (and its task lease handed back).

use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// Resolves `grace` after `shutdown` is cancelled.
pub async fn grace_over(shutdown: &CancellationToken, grace: Duration) {
    shutdown.cancelled().await;
    tokio::time::sleep(grace).await;
}
