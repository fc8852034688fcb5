//! The loop shared by every background consumer of a durable queue (task workers, callback
//! dispatcher): claim as many items as slots are free, work on each in its own task, and when
//! the queue is empty wait for a wake-up or a poll interval.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

/// Pause after a failed claim (the database may be briefly unavailable).
const AFTER_ERROR: Duration = Duration::from_millis(500);

/// What one claim took.
pub struct Claimed<T> {
    pub items: Vec<T>,
    /// Whether the queue may hold more claimable items now: the claim took all it was allowed.
    pub more: bool,
}

impl<T> Claimed<T> {
    /// Items from a claim that was allowed `asked`: there may be more if it got them all.
    pub fn of(items: Vec<T>, asked: usize) -> Self {
        let more = items.len() >= asked;
        Self { items, more }
    }
}

/// How many items a consumer works on at once, and takes in one claim at most.
#[derive(Debug, Clone, Copy)]
pub struct Slots {
    pub total: usize,
    pub most_per_claim: usize,
}

/// Runs until `shutdown`, then waits for the items in hand. `claim(n)` takes up to `n` items,
/// `n` being the slots free at once (at most `most_per_claim`): one round trip for a burst.
/// `idle` says how long to sleep when nothing is claimable (a wake-up on `wake` cuts it short).
pub async fn run<T, E, Claim, ClaimFut, Work, WorkFut, Idle, IdleFut>(
    what: &'static str,
    slots: Slots,
    shutdown: CancellationToken,
    wake: Arc<Notify>,
    claim: Claim,
    work: Work,
    idle: Idle,
) where
    T: Send + 'static,
    E: std::fmt::Display,
    Claim: Fn(usize) -> ClaimFut,
    ClaimFut: Future<Output = Result<Claimed<T>, E>>,
    Work: Fn(T) -> WorkFut,
    WorkFut: Future<Output = ()> + Send + 'static,
    Idle: Fn() -> IdleFut,
    IdleFut: Future<Output = Duration>,
{
    let free = Arc::new(Semaphore::new(slots.total));
    loop {
        let first = tokio::select! {
            _ = shutdown.cancelled() => break,
            permit = free.clone().acquire_owned() => permit.expect("semaphore stays open"),
        };
        let mut permits = more_permits(&free, first, slots.most_per_claim.max(1));
        match claim(permits.len()).await {
            Ok(Claimed { items, more }) => {
                for item in items {
                    let permit = permits.pop().expect("a claim takes no more than it was allowed");
                    // `map`, not an `async move` block around `job`: such a block would keep
                    // room for `job` twice (once captured, once being polled).
                    tokio::spawn(work(item).map(move |()| drop(permit)));
                }
                drop(permits);
                if !more {
                    let pause = idle().await;
                    tokio::select! {
                        _ = shutdown.cancelled() => break,
                        _ = wake.notified() => {}
                        _ = tokio::time::sleep(pause) => {}
                    }
                }
            }
            Err(e) => {
                drop(permits);
                tracing::error!(error = %e, "claiming {what} failed");
                tokio::time::sleep(AFTER_ERROR).await;
            }
        }
    }
    let _ = free.acquire_many(slots.total as u32).await;
}

/// `first` and as many more free permits as can be had at once, up to `most`.
fn more_permits(free: &Arc<Semaphore>, first: OwnedSemaphorePermit, most: usize) -> Vec<OwnedSemaphorePermit> {
    let mut permits = vec![first];
    while permits.len() < most {
        match free.clone().try_acquire_owned() {
            Ok(permit) => permits.push(permit),
            Err(_) => break,
        }
    }
    permits
}
