//! Runs tasks: claim with a lease, fetch references, call the chosen channel's provider, store
//! the images, then finish and settle in one transaction. A crash at any point leaves the task
//! leased; once the lease runs out, another worker (or the restarted process) takes it again.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::store::{Outcome, StoreError, TaskStore};
use super::{FailCode, Task};
use crate::claim_loop;
use crate::db::now_ms;
use crate::egress::Egress;
use crate::ids::random_hex;
use crate::providers::{ProviderError, Reference};
use crate::routing::Router;
use crate::storage::Storage;

pub struct WorkerPool {
    pub store: TaskStore,
    pub router: Arc<Router>,
    pub egress: Egress,
    pub storage: Storage,
    pub workers: usize,
    pub lease: Duration,
    /// Poked whenever a task is submitted, so idle workers need not poll hard.
    pub wake: Arc<Notify>,
    /// Poked when a task with a callback ends.
    pub callbacks: Arc<Notify>,
}

/// How often idle workers look for work without being woken (other processes may add tasks).
const IDLE_POLL: Duration = Duration::from_millis(500);

impl WorkerPool {
    /// Claims and runs tasks until `shutdown`, then waits for the tasks in hand.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        let lease_ms = self.lease.as_millis() as i64;
        let store = &self.store;
        let claim = || async move {
            let token = random_hex::<16>();
            Ok::<_, StoreError>(store.claim(&token, lease_ms).await?.map(|task| (task, token)))
        };
        let work = |(task, token)| {
            let (pool, shutdown) = (self.clone(), shutdown.clone());
            // Each task either finishes or hands its lease back before its slot frees.
            async move { pool.process(task, token, shutdown).await }
        };
        let idle = || async { IDLE_POLL };
        claim_loop::run("a task", self.workers, shutdown.clone(), self.wake.clone(), claim, work, idle).await;
    }

    #[tracing::instrument(skip_all, fields(task = %task.id, model = %task.model, attempt = task.attempts))]
    async fn process(&self, task: Task, token: String, shutdown: CancellationToken) {
        let remaining = task.deadline_at - now_ms();
        let run = async {
            if remaining <= 0 {
                return Outcome::Failed { code: FailCode::Timeout, message: timeout_message(&task) };
            }
            let work = AssertUnwindSafe(self.execute(&task)).catch_unwind();
            match tokio::time::timeout(Duration::from_millis(remaining as u64), work).await {
                Ok(Ok(outcome)) => outcome,
                Ok(Err(_panic)) => {
                    tracing::error!("the task's provider panicked");
                    Outcome::Failed {
                        code: FailCode::GenerationFailed,
                        message: "internal error while generating".into(),
                    }
                }
                Err(_elapsed) => Outcome::Failed { code: FailCode::Timeout, message: timeout_message(&task) },
            }
        };
        let lost_lease = self.keep_lease(&task, &token);
        tokio::select! {
            outcome = run => {
                match self.store.finish(&task, &token, &outcome).await {
                    Ok(true) => {
                        tracing::info!(state = ?outcome_state(&outcome), "task finished");
                        if task.callback_url.is_some() {
                            self.callbacks.notify_one();
                        }
                    }
                    Ok(false) => tracing::warn!("lease lost before finishing; another worker owns the task"),
                    Err(e) => tracing::error!(error = %e, "could not record the task's end; it will run again"),
                }
            }
            _ = lost_lease => tracing::warn!("lease lost; abandoning the task"),
            _ = shutdown.cancelled() => {
                if let Err(e) = self.store.release_lease(&task.id, &token).await {
                    tracing::warn!(error = %e, "could not hand the lease back; it will expire");
                }
            }
        }
    }

    /// Renews the lease until it is lost (then returns) or the caller stops polling.
    async fn keep_lease(&self, task: &Task, token: &str) {
        let lease_ms = self.lease.as_millis() as i64;
        loop {
            tokio::time::sleep(self.lease / 3).await;
            match self.store.renew_lease(&task.id, token, lease_ms).await {
                Ok(true) => {}
                Ok(false) => return,
                Err(e) => tracing::warn!(error = %e, "renewing the lease failed; trying again"),
            }
        }
    }

    async fn execute(&self, task: &Task) -> Outcome {
        let references = match self.fetch_references(task).await {
            Ok(refs) => refs,
            Err(message) => {
                return Outcome::Failed { code: FailCode::InvalidImageUrl, message };
            }
        };
        let Some(channel) = self.router.pick(&task.model, task.routing) else {
            return Outcome::Failed {
                code: FailCode::GenerationFailed,
                message: format!("no channel serves {} with provider {}", task.model, task.routing.as_str()),
            };
        };
        let images = match channel.provider.generate(&task.spec, &references).await {
            Ok(images) if !images.is_empty() => images,
            Ok(_) => {
                return Outcome::Failed {
                    code: FailCode::GenerationFailed,
                    message: "the model returned no image".into(),
                };
            }
            Err(e) => return failure(e),
        };
        let mut result_keys = Vec::with_capacity(images.len());
        for (i, image) in images.into_iter().take(task.requested_images as usize).enumerate() {
            let key = format!("results/{}/{i}.{}", task.id, image.format.extension());
            if let Err(e) = self.storage.put(&key, image.bytes).await {
                tracing::error!(error = %e, "storing a result failed");
                return Outcome::Failed {
                    code: FailCode::GenerationFailed,
                    message: "could not store the result".into(),
                };
            }
            result_keys.push(key);
        }
        Outcome::Success { result_keys }
    }

    /// Fetches every reference; the first that fails names itself in the message.
    async fn fetch_references(&self, task: &Task) -> Result<Vec<Reference>, String> {
        let fetches = task.spec.references.iter().map(|url| self.egress.fetch_image(url));
        let results = futures::future::join_all(fetches).await;
        results.into_iter().enumerate().map(|(i, r)| r.map_err(|e| format!("image_urls[{i}] {e}"))).collect()
    }
}

fn failure(error: ProviderError) -> Outcome {
    let (code, message) = match error {
        ProviderError::ContentViolation(m) => (FailCode::ContentViolation, m),
        ProviderError::InvalidReference { index, reason } => {
            (FailCode::InvalidImageUrl, format!("image_urls[{index}] {reason}"))
        }
        ProviderError::Retryable(m) | ProviderError::Permanent(m) => (FailCode::GenerationFailed, m),
    };
    Outcome::Failed { code, message }
}

fn timeout_message(task: &Task) -> String {
    let secs = (task.deadline_at - task.created_at) / 1000;
    format!("the task did not finish within {secs} seconds")
}

fn outcome_state(outcome: &Outcome) -> &'static str {
    match outcome {
        Outcome::Success { .. } => "success",
        Outcome::Failed { code, .. } => code.as_str(),
    }
}
