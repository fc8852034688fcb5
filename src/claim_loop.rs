//! The loop shared by every background consumer of a durable queue (task workers, callback
//! dispatcher): claim an item while a slot is free, work on it in its own task, and when the
//! queue is empty wait for a wake-up or a poll interval.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Notify, Semaphore};
use tokio_util::sync::CancellationToken;

/// Pause after a failed claim (the database may be briefly unavailable).
const AFTER_ERROR: Duration = Duration::from_millis(500);

/// Runs until `shutdown`, then waits for the items in hand. `idle` says how long to sleep when
/// nothing is claimable (a wake-up on `wake` cuts it short).
pub async fn run<T, E, Claim, ClaimFut, Work, WorkFut, Idle, IdleFut>(
    what: &'static str,
    slots: usize,
    shutdown: CancellationToken,
    wake: Arc<Notify>,
    claim: Claim,
    work: Work,
    idle: Idle,
) where
    T: Send + 'static,
    E: std::fmt::Display,
    Claim: Fn() -> ClaimFut,
    ClaimFut: Future<Output = Result<Option<T>, E>>,
    Work: Fn(T) -> WorkFut,
    WorkFut: Future<Output = ()> + Send + 'static,
    Idle: Fn() -> IdleFut,
    IdleFut: Future<Output = Duration>,
{
    let free = Arc::new(Semaphore::new(slots));
    loop {
        let permit = tokio::select! {
            _ = shutdown.cancelled() => break,
            permit = free.clone().acquire_owned() => permit.expect("semaphore stays open"),
        };
        match claim().await {
            Ok(Some(item)) => {
                let job = work(item);
                tokio::spawn(async move {
                    job.await;
                    drop(permit);
                });
            }
            Ok(None) => {
                drop(permit);
                let pause = idle().await;
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = wake.notified() => {}
                    _ = tokio::time::sleep(pause) => {}
                }
            }
            Err(e) => {
                drop(permit);
                tracing::error!(error = %e, "claiming {what} failed");
                tokio::time::sleep(AFTER_ERROR).await;
            }
        }
    }
    let _ = free.acquire_many(slots as u32).await;
}
