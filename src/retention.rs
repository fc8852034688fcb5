//! Deletes result files once their links have expired.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::db::now_ms;
use crate::storage::Storage;
use crate::tasks::TaskStore;

const BATCH: i64 = 500;
const EVERY: Duration = Duration::from_secs(3600);

/// Removes the files of every task completed before `cutoff_ms`; returns how many tasks.
pub async fn sweep(store: &TaskStore, storage: &Storage, cutoff_ms: i64) -> anyhow::Result<usize> {
    let mut swept = 0;
    loop {
        let batch = store.expired_results(cutoff_ms, BATCH).await?;
        if batch.is_empty() {
            return Ok(swept);
        }
        for (task, keys) in &batch {
            for key in keys {
                storage.delete(key).await?;
            }
            store.mark_purged(task).await?;
        }
        swept += batch.len();
    }
}

/// Sweeps at start-up and then every hour until shutdown.
pub async fn run(store: TaskStore, storage: Storage, retention_ms: i64, shutdown: CancellationToken) {
    loop {
        match sweep(&store, &storage, now_ms() - retention_ms).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(tasks = n, "deleted expired results"),
            Err(e) => tracing::warn!(error = %e, "sweeping expired results failed"),
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(EVERY) => {}
        }
    }
}
