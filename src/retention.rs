//! Deletes result files once their links have expired.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::db::{Db, now_ms};
use crate::ids::TaskId;
use crate::storage::Storage;
use crate::tasks::TaskStore;

const BATCH: i64 = 500;
const EVERY: Duration = Duration::from_secs(3600);
/// The advisory lock that lets one node of a cluster sweep at a time.
const SWEEP_LOCK: i64 = 0x6561_7365_6c01; // "easel" 1

/// Removes the files of every task completed before `cutoff_ms`; returns how many tasks.
pub async fn sweep(store: &TaskStore, storage: &Storage, cutoff_ms: i64) -> anyhow::Result<usize> {
    let mut swept = 0;
    loop {
        let batch = store.expired_results(cutoff_ms, BATCH).await?;
        if batch.is_empty() {
            return Ok(swept);
        }
        for (task, keys) in &batch {
            purge(store, storage, task, keys).await?;
        }
        swept += batch.len();
    }
}

/// Deletes a task's files and notes that they are gone (only once they are, so a failure part
/// way is tried again); returns when.
pub async fn purge(store: &TaskStore, storage: &Storage, task: &TaskId, keys: &[String]) -> anyhow::Result<i64> {
    for key in keys {
        storage.delete(key).await?;
    }
    Ok(store.mark_purged(task).await?)
}

/// Sweeps at start-up and then every hour until shutdown, skipping a round another node of the
/// cluster is already sweeping.
pub async fn run(db: Db, store: TaskStore, storage: Storage, retention_ms: i64, shutdown: CancellationToken) {
    loop {
        match db.run_exclusive(SWEEP_LOCK, sweep(&store, &storage, now_ms() - retention_ms)).await {
            Ok(Some(Ok(0))) => {}
            Ok(Some(Ok(n))) => tracing::info!(tasks = n, "deleted expired results"),
            Ok(None) => tracing::debug!("another node is sweeping"),
            Ok(Some(Err(e))) => tracing::warn!(error = %e, "sweeping expired results failed"),
            Err(e) => tracing::warn!(error = %e, "could not take the sweep lock"),
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(EVERY) => {}
        }
    }
}
