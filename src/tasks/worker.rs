//! Runs tasks: claim with a lease, fetch references, call the chosen channel's provider, store
//! the images, then finish and settle in one transaction. A crash at any point leaves the task
//! leased; once the lease runs out, another worker (or the restarted process) takes it again.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use futures::future::BoxFuture;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::store::{Outcome, StoreError, TaskStore, lease_token};
use super::{ChannelAttempt, FailCode, Task};
use crate::catalog::price::ImageFacts;
use crate::catalog::{Catalog, Model, Quality};
use crate::claim_loop;
use crate::db::now_ms;
use crate::egress::Egress;
use crate::ids::TaskId;
use crate::media::{self, Media};
use crate::providers::{Checkpoint, GeneratedImage, Job, ProviderError, Reference};
use crate::routing::MAX_CHANNELS_PER_TASK;
use crate::routing::Router;
use crate::storage::Storage;
use crate::storage::UPLOAD_SCHEME;

pub struct WorkerPool {
    pub store: TaskStore,
    /// The models, for what a task's family needs upstream.
    pub catalog: Arc<Catalog>,
    pub router: Arc<Router>,
    pub egress: Egress,
    pub storage: Storage,
    /// Decode limits and the memory budget every worker's decodes share.
    pub media: Media,
    /// A task whose processing was lost this many times fails instead of running again (0: never).
    pub max_interruptions: u32,
    pub workers: usize,
    pub lease: Duration,
    /// On shutdown, how long a task in hand may run on before its lease is handed back.
    pub grace: Duration,
    /// Poked whenever a task is submitted, so idle workers need not poll hard.
    pub wake: Arc<Notify>,
    /// Poked when a task with a callback ends.
    pub callbacks: Arc<Notify>,
    /// Told the id of every task that ends, for requests waiting on it.
    pub finished: tokio::sync::broadcast::Sender<TaskId>,
    /// This node's id, carried in its lease tokens.
    pub node: String,
}

/// How often idle workers look for work without being woken (other processes may add tasks).
const IDLE_POLL: Duration = Duration::from_millis(500);

impl WorkerPool {
    /// Claims and runs tasks until `shutdown`, then waits for the tasks in hand: each finishes
    /// within the grace period or hands its lease back.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        let lease_ms = self.lease.as_millis() as i64;
        let (store, node) = (&self.store, self.node.as_str());
        let claim = || async move {
            let token = lease_token(node);
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
            if self.max_interruptions > 0 && task.interruptions >= self.max_interruptions {
                // Whatever killed the runs before may kill this one too: a poison task.
                tracing::error!(interruptions = task.interruptions, "processing was lost too often; failing the task");
                return Outcome::Failed { code: FailCode::GenerationFailed, message: interrupted_message(&task) };
            }
            let work = AssertUnwindSafe(self.execute(&task, &token)).catch_unwind();
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
                        // Nobody may be waiting; that is fine.
                        let _ = self.finished.send(task.id.clone());
                        if task.callback_url.is_some() {
                            self.callbacks.notify_one();
                        }
                    }
                    Ok(false) => tracing::warn!("lease lost before finishing; another worker owns the task"),
                    Err(e) => tracing::error!(error = %e, "could not record the task's end; it will run again"),
                }
            }
            _ = lost_lease => tracing::warn!("lease lost; abandoning the task"),
            _ = crate::shutdown::grace_over(&shutdown, self.grace) => {
                match self.store.release_lease(&task.id, &token).await {
                    Ok(()) => tracing::info!("shutting down; handed the task back for another worker"),
                    Err(e) => tracing::warn!(error = %e, "could not hand the lease back; it will expire"),
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

    async fn execute(&self, task: &Task, token: &str) -> Outcome {
        let Some(model) = self.catalog.get(&task.model) else {
            let message = format!("the model {} is no longer offered", task.model);
            return Outcome::Failed { code: FailCode::GenerationFailed, message };
        };
        let references = match self.fetch_references(task).await {
            Ok(refs) => refs,
            Err(message) => return Outcome::Failed { code: FailCode::InvalidImageUrl, message },
        };
        let mask = match &task.spec.mask {
            Some(url) => match self.reference(url).await {
                Ok(mask) => Some(mask),
                Err(e) => return Outcome::Failed { code: FailCode::InvalidImageUrl, message: format!("mask_url {e}") },
            },
            None => None,
        };
        let images = match self.generate(task, model, token, &references, mask.as_ref()).await {
            Ok(images) => images,
            Err(outcome) => return outcome,
        };
        let mut result_keys = Vec::with_capacity(images.len());
        let mut facts = Vec::with_capacity(images.len());
        let mut unconverted = None;
        for image in images.into_iter().take(task.requested_images as usize) {
            let image_facts = image_facts(task, &image);
            // The result's one conversion, when the upstream made another format than the task
            // asked for (Seedream 4.x always answers JPEG). One that cannot be converted is left
            // out, as an upstream's missing image would be, and not charged.
            let bytes = match self.media.convert(image.bytes, image.format, task.spec.output_format).await {
                Ok(bytes) => bytes,
                Err(e) => {
                    tracing::warn!(error = %e, "a result could not be converted; leaving it out");
                    unconverted.get_or_insert(e);
                    continue;
                }
            };
            let key = format!("results/{}/{}.{}", task.id, result_keys.len(), task.spec.output_format.extension());
            if let Err(e) = self.storage.put(&key, bytes).await {
                tracing::error!(error = format!("{e:#}"), "storing a result failed");
                return Outcome::Failed {
                    code: FailCode::GenerationFailed,
                    message: "could not store the result".into(),
                };
            }
            result_keys.push(key);
            facts.push(image_facts);
        }
        match unconverted {
            Some(e) if result_keys.is_empty() => {
                Outcome::Failed { code: FailCode::GenerationFailed, message: format!("a result {e}") }
            }
            _ => Outcome::Success { result_keys, images: facts },
        }
    }

    /// Tries the task's channels in routing order, at most [`MAX_CHANNELS_PER_TASK`], moving on
    /// only after a retryable failure. Every try is logged on the task.
    async fn generate(
        &self,
        task: &Task,
        model: &Model,
        token: &str,
        references: &[Reference],
        mask: Option<&Reference>,
    ) -> Result<Vec<GeneratedImage>, Outcome> {
        let mut log = task.channel_log.clone();
        let mut last_error = None;
        let mut tried = 0;
        for channel in self.router.candidates(&task.model, task.routing, task.upstream_channel.as_deref()) {
            if tried == MAX_CHANNELS_PER_TASK {
                break;
            }
            let Some(slot) = channel.try_acquire() else { continue };
            tried += 1;
            let resume = task.upstream_channel.as_deref() == Some(channel.id.as_str());
            let checkpoint = TaskCheckpoint { store: &self.store, task: &task.id, token, channel: &channel.id };
            let job = Job {
                task_id: task.id.as_str(),
                spec: &task.spec,
                model,
                media: &self.media,
                references,
                mask,
                upstream_model: channel.upstream_model(model),
                upstream_task_id: task.upstream_task_id.as_deref().filter(|_| resume),
                checkpoint: &checkpoint,
            };
            let result = channel.provider.generate(job).await;
            let (outcome, message) = match &result {
                Ok(images) if images.is_empty() => ("permanent", Some("the model returned no image".to_owned())),
                Ok(_) => ("success", None),
                Err(ProviderError::Retryable { message, .. }) => ("retryable", Some(message.clone())),
                Err(ProviderError::ContentViolation(m)) => ("content_violation", Some(m.clone())),
                Err(ProviderError::InvalidReference { reason, .. }) => ("invalid_reference", Some(reason.clone())),
                Err(ProviderError::Permanent(m)) => ("permanent", Some(m.clone())),
            };
            if let Err(ProviderError::Retryable { retry_after, .. }) = &result {
                slot.failed(*retry_after)
            } else {
                slot.succeeded()
            }
            log.push(ChannelAttempt {
                channel: channel.id.clone(),
                outcome: outcome.into(),
                message,
                latency_ms: slot.elapsed().as_millis() as i64,
            });
            if let Err(e) = self.store.log_channel_attempt(&task.id, token, &log).await {
                tracing::warn!(error = %e, "could not log the channel attempt");
            }
            match result {
                Ok(images) if !images.is_empty() => return Ok(images),
                Ok(_) => {
                    let message = "the model returned no image".into();
                    return Err(Outcome::Failed { code: FailCode::GenerationFailed, message });
                }
                Err(e @ ProviderError::Retryable { .. }) => {
                    tracing::warn!(channel = %channel.id, error = %e, "retryable failure; trying the next channel");
                    last_error = Some(e);
                }
                Err(e) => return Err(failure(e, task)),
            }
        }
        let message = match last_error {
            Some(e) => format!("no channel could serve the task; last error: {e}"),
            None => format!("no channel is available for {} with provider {}", task.model, task.routing.as_str()),
        };
        Err(Outcome::Failed { code: FailCode::GenerationFailed, message })
    }

    /// Fetches every reference; the first that fails names itself in the message.
    async fn fetch_references(&self, task: &Task) -> Result<Vec<Reference>, String> {
        let fetches = task.spec.references.iter().map(|url| self.reference(url));
        let results = futures::future::join_all(fetches).await;
        results.into_iter().enumerate().map(|(i, r)| r.map_err(|e| reference_failure(task, i, e))).collect()
    }

    /// A reference from the web (through the egress guard) or one the client uploaded.
    /// Its header is checked against the decode limits here, before any provider decodes it.
    async fn reference(&self, url: &str) -> Result<Reference, String> {
        let reference = match url.strip_prefix(UPLOAD_SCHEME) {
            None => self.egress.fetch_image(url).await.map_err(|e| e.to_string())?,
            Some(key) => {
                let bytes = self.storage.read(key).await.map_err(|_| "the uploaded image is gone".to_owned())?;
                let format = media::sniff(&bytes).ok_or("is not a JPEG, PNG, WebP or GIF image")?;
                Reference { bytes, format }
            }
        };
        self.media.probe(&reference.bytes, reference.format).map_err(|e| e.to_string())?;
        Ok(reference)
    }
}

/// Why a reference image failed, naming it as the task's own API does (`image_urls[1] …`).
fn reference_failure(task: &Task, index: usize, reason: impl std::fmt::Display) -> String {
    format!("{}[{index}] {reason}", task.dialect.references_field())
}

fn failure(error: ProviderError, task: &Task) -> Outcome {
    let (code, message) = match error {
        ProviderError::ContentViolation(m) => (FailCode::ContentViolation, m),
        ProviderError::InvalidReference { index, reason } => {
            (FailCode::InvalidImageUrl, reference_failure(task, index, reason))
        }
        ProviderError::Retryable { message, .. } | ProviderError::Permanent(message) => {
            (FailCode::GenerationFailed, message)
        }
    };
    Outcome::Failed { code, message }
}

fn interrupted_message(task: &Task) -> String {
    format!(
        "processing was interrupted {} times (the server stopped or lost the task); not trying again",
        task.interruptions
    )
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

/// What an image was, for its price: what the upstream said of it, else what the task asked.
fn image_facts(task: &Task, image: &GeneratedImage) -> ImageFacts {
    let asked = task.spec.quality.filter(|q| *q != Quality::Auto);
    ImageFacts { size: image.size.unwrap_or(task.spec.size), quality: image.quality.or(asked) }
}

/// Records an asynchronous upstream's task id on the task, under the worker's lease.
struct TaskCheckpoint<'a> {
    store: &'a TaskStore,
    task: &'a TaskId,
    token: &'a str,
    channel: &'a str,
}

impl Checkpoint for TaskCheckpoint<'_> {
    fn record_upstream_id<'a>(&'a self, upstream_id: &'a str) -> BoxFuture<'a, anyhow::Result<()>> {
        async move { Ok(self.store.record_upstream(self.task, self.token, self.channel, upstream_id).await?) }.boxed()
    }
}
