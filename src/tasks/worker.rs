//! Runs tasks: claim with a lease, fetch references, call the chosen channel's provider, store
//! the images, then finish and settle in one transaction. A crash at any point leaves the task
//! leased; once the lease runs out, another worker (or the restarted process) takes it again.
//!
//! The database and storage steps around the provider call are awaited boxed (`Box::pin`): a
//! task's future is as large as its largest await point, and every task waiting on a slow
//! upstream holds one (10,000 in flight took 259 MB before, 105 MB since).

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use futures::FutureExt;
use futures::future::BoxFuture;
use serde_json::json;
use tokio::sync::{broadcast, watch};
use tokio_util::sync::CancellationToken;

use super::events::EventKind;
use super::store::{Holder, Lease, Note, Outcome, StoreError, TaskStore, lease_token};
use super::{ChannelAttempt, FailCode, Task};
use crate::catalog::price::ImageFacts;
use crate::catalog::{Catalog, Model, Quality};
use crate::claim_loop;
use crate::db::now_ms;
use crate::egress::Egress;
use crate::ids::TaskId;
use crate::media::{self, Media};
use crate::providers::{Checkpoint, GeneratedImage, Job, ProviderError, Reference};
use crate::routing::{Busy, MAX_CHANNELS_PER_TASK, Router, Slot};
use crate::signals::{Bus, Change, TaskNews};
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
    /// Wakes idle workers when a task is queued, and tells of cancels asked for.
    pub bus: Bus,
    /// The tasks this node is running, each with what stops it.
    pub running: Mutex<HashMap<TaskId, Stop>>,
    /// This node's id, carried in its lease tokens.
    pub node: String,
}

/// How often idle workers look for work without being woken (other processes may add tasks).
const IDLE_POLL: Duration = Duration::from_millis(500);
/// The most tasks one claim takes: a burst of submits is claimed in a round trip or a few.
const MOST_PER_CLAIM: usize = 32;
/// How often pending tasks are checked against their `Cancel-After` deadline.
const DEADLINE_SWEEP: Duration = Duration::from_secs(1);
/// The longest a cancelled task waits for its upstream to take the cancel.
const UPSTREAM_CANCEL_TIME: Duration = Duration::from_secs(10);
/// The most progress events a task writes a second: providers may report far more often.
const PROGRESS_EVERY: Duration = Duration::from_millis(500);

use super::store::{CANCELLED_AT_DEADLINE, CANCELLED_BY_OWNER};

/// Passes each freed channel slot on as a wake-up of the claim loop, until `shutdown`.
async fn forward(freed: Arc<tokio::sync::Notify>, wake: Arc<tokio::sync::Notify>, shutdown: CancellationToken) {
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = freed.notified() => wake.notify_one(),
        }
    }
}

/// Stops a running task, once, saying why.
#[derive(Clone, Default)]
pub struct Stop {
    token: CancellationToken,
    why: Arc<OnceLock<&'static str>>,
}

impl Stop {
    pub fn stop(&self, why: &'static str) {
        let _ = self.why.set(why);
        self.token.cancel();
    }

    async fn stopped(&self) -> &'static str {
        self.token.cancelled().await;
        self.why.get().copied().unwrap_or(CANCELLED_BY_OWNER)
    }
}

/// What a run has done so far: the images it stored (what a cancelled task keeps, and is
/// charged for), and the upstream job it left running (what a cancel stops).
#[derive(Default)]
struct Stored {
    result_keys: Vec<String>,
    images: Vec<ImageFacts>,
    /// The channel and upstream id of the job an asynchronous upstream accepted.
    upstream_job: Option<(String, String)>,
    /// The channels tried so far, when this run tried any: written with the task's end.
    channel_log: Option<Vec<ChannelAttempt>>,
}

impl WorkerPool {
    /// Claims and runs tasks until `shutdown`, then waits for the tasks in hand: each finishes
    /// within the grace period or hands its lease back.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        let lease_ms = self.lease.as_millis() as i64;
        let (pool, store, node, router) = (&*self, &self.store, self.node.as_str(), &self.router);
        let claim = |most| async move {
            let token = lease_token(node);
            let held_back = router.held_back();
            let claimed = store.claim(&token, lease_ms, &held_back, most).await?;
            let asked = claimed.len();
            let mut ready = Vec::with_capacity(asked);
            let mut busy = Vec::new();
            for task in claimed {
                match pool.reserve(&task) {
                    Ok(slot) => ready.push((task, token.clone(), slot)),
                    // Its channels filled since the look (with tasks of this very claim, say).
                    Err(Busy) => busy.push(task),
                }
            }
            if let Err(e) = store.requeue(&busy.iter().map(|task| &task.id).collect::<Vec<_>>(), &token).await {
                // They stay leased and are taken again when the lease runs out; the rest run.
                tracing::error!(error = %e, tasks = busy.len(), "could not put tasks back in the queue");
            }
            Ok::<_, StoreError>(claim_loop::Claimed { items: ready, more: asked >= most })
        };
        // Each task either finishes or hands its lease back before its slot frees.
        let work = |(task, token, slot)| self.clone().process(task, token, slot, shutdown.clone());
        let idle = || async { IDLE_POLL };
        let cancels = tokio::spawn(self.clone().follow_cancels(shutdown.clone()));
        let wake = self.bus.tasks_queued();
        let freed = tokio::spawn(forward(self.router.capacity_freed(), wake.clone(), shutdown.clone()));
        let slots = claim_loop::Slots { total: self.workers, most_per_claim: MOST_PER_CLAIM };
        claim_loop::run("a task", slots, shutdown.clone(), wake, claim, work, idle).await;
        let _ = tokio::join!(cancels, freed);
    }

    /// A slot for a claimed task that will start a new job, taken before the next claim so
    /// that a channel's `max_concurrency` holds the queue back at once. A task about to fail
    /// (past its deadline, interrupted too often) or resuming an upstream job needs none.
    fn reserve(&self, task: &Task) -> Result<Option<Slot>, Busy> {
        let ends_at_once = task.deadline_at <= now_ms() || self.interrupted_too_often(task);
        if ends_at_once || task.upstream_task_id.is_some() {
            return Ok(None);
        }
        self.router.reserve(&task.model, task.routing)
    }

    /// Whatever killed its runs before may kill this one too: a poison task, failed unrun.
    fn interrupted_too_often(&self, task: &Task) -> bool {
        self.max_interruptions > 0 && task.interruptions >= self.max_interruptions
    }

    /// Stops the tasks this node runs when a cancel is asked for, on whatever node it was asked.
    async fn follow_cancels(self: Arc<Self>, shutdown: CancellationToken) {
        let mut news = self.bus.subscribe();
        loop {
            let heard = tokio::select! {
                _ = shutdown.cancelled() => return,
                heard = news.recv() => heard,
            };
            match heard {
                Ok(TaskNews { task, change: Change::CancelRequested }) => {
                    if let Some(stop) = self.running.lock().expect("not poisoned").get(&task) {
                        stop.stop(CANCELLED_BY_OWNER);
                    }
                }
                Ok(_) => {}
                // Missed news is found by the lease renewal, which reads the cancel flag.
                Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => return,
            }
        }
    }

    #[tracing::instrument(skip_all, fields(task = %task.id, model = %task.model, attempt = task.attempts))]
    async fn process(self: Arc<Self>, task: Task, token: String, slot: Option<Slot>, shutdown: CancellationToken) {
        let stop = Stop::default();
        self.running.lock().expect("not poisoned").insert(task.id.clone(), stop.clone());
        if task.cancel_requested_at.is_some() {
            stop.stop(CANCELLED_BY_OWNER);
        }
        self.run_to_end(&task, &token, slot, &stop, shutdown).await;
        self.running.lock().expect("not poisoned").remove(&task.id);
    }

    async fn run_to_end(&self, task: &Task, token: &str, slot: Option<Slot>, stop: &Stop, shutdown: CancellationToken) {
        let remaining = task.deadline_at - now_ms();
        let upstream_job = task.upstream_channel.clone().zip(task.upstream_task_id.clone());
        let stored = Mutex::new(Stored { upstream_job, ..Stored::default() });
        let (progress, reports) = watch::channel(None);
        let run = async {
            if remaining <= 0 {
                return Outcome::Failed { code: FailCode::Timeout, message: timeout_message(task) };
            }
            if self.interrupted_too_often(task) {
                tracing::error!(interruptions = task.interruptions, "processing was lost too often; failing the task");
                return Outcome::Failed { code: FailCode::GenerationFailed, message: interrupted_message(task) };
            }
            let work = AssertUnwindSafe(self.execute(task, token, slot, &stored, &progress)).catch_unwind();
            let work = async {
                tokio::select! {
                    done = work => done,
                    never = self.write_progress(task, token, reports) => match never {},
                }
            };
            match tokio::time::timeout(Duration::from_millis(remaining as u64), work).await {
                Ok(Ok(outcome)) => outcome,
                Ok(Err(_panic)) => {
                    tracing::error!("the task's provider panicked");
                    Outcome::Failed {
                        code: FailCode::GenerationFailed,
                        message: "internal error while generating".into(),
                    }
                }
                Err(_elapsed) => Outcome::Failed { code: FailCode::Timeout, message: timeout_message(task) },
            }
        };
        let lost_lease = self.keep_lease(task, token, stop);
        // Asked to stop, or past its `Cancel-After` deadline: either way, why.
        let stopped = async {
            let deadline = async {
                match task.cancel_at {
                    Some(at) => tokio::time::sleep(Duration::from_millis((at - now_ms()).max(0) as u64)).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                why = stop.stopped() => why,
                () = deadline => CANCELLED_AT_DEADLINE,
            }
        };
        let holder = Holder::Lease(token.to_owned());
        tokio::select! {
            // A stop that lands with the end loses to it: what was done is done.
            biased;
            outcome = run => {
                let tried = stored.lock().expect("not poisoned").channel_log.take();
                self.end(&with_log(task, tried), &holder, outcome).await
            }
            why = stopped => {
                let mut kept = std::mem::take(&mut *stored.lock().expect("not poisoned"));
                let (upstream_job, tried) = (kept.upstream_job.take(), kept.channel_log.take());
                self.end(&with_log(task, tried), &holder, cancelled(kept, why)).await;
                if let Some((channel, id)) = upstream_job {
                    Box::pin(self.cancel_upstream(&channel, &id)).await;
                }
            }
            _ = lost_lease => tracing::warn!("lease lost; abandoning the task"),
            _ = crate::shutdown::grace_over(&shutdown, self.grace) => {
                match Box::pin(self.store.release_lease(&task.id, token)).await {
                    Ok(()) => tracing::info!("shutting down; handed the task back for another worker"),
                    Err(e) => tracing::warn!(error = %e, "could not hand the lease back; it will expire"),
                }
            }
        }
    }

    /// Tells the upstream holding a cancelled task's job to stop it, within [`UPSTREAM_CANCEL_TIME`].
    async fn cancel_upstream(&self, channel: &str, upstream_id: &str) {
        let Ok(channel) = self.router.channel(channel) else { return };
        match tokio::time::timeout(UPSTREAM_CANCEL_TIME, channel.provider.cancel(upstream_id)).await {
            Ok(()) => {
                tracing::info!(channel = %channel.id, upstream_task = upstream_id, "asked the upstream to cancel")
            }
            Err(_) => {
                tracing::warn!(channel = %channel.id, upstream_task = upstream_id, "the upstream's cancel timed out")
            }
        }
    }

    async fn end(&self, task: &Task, holder: &Holder, outcome: Outcome) {
        match Box::pin(self.store.finish(task, holder, &outcome)).await {
            Ok(true) => tracing::info!(state = ?outcome_state(&outcome), "task finished"),
            Ok(false) => tracing::warn!("lease lost before finishing; another worker owns the task"),
            Err(e) => tracing::error!(error = %e, "could not record the task's end; it will run again"),
        }
    }

    /// Renews the lease until it is lost (then returns) or the caller stops polling; a cancel
    /// found on the task (its notification lost) stops it.
    async fn keep_lease(&self, task: &Task, token: &str, stop: &Stop) {
        let lease_ms = self.lease.as_millis() as i64;
        loop {
            tokio::time::sleep(self.lease / 3).await;
            match Box::pin(self.store.renew_lease(&task.id, token, lease_ms)).await {
                Ok(Lease::Kept { cancel_requested }) => {
                    if cancel_requested {
                        stop.stop(CANCELLED_BY_OWNER);
                    }
                }
                Ok(Lease::Lost) => return,
                Err(e) => tracing::warn!(error = %e, "renewing the lease failed; trying again"),
            }
        }
    }

    /// Writes the provider's progress reports as events, at most one per [`PROGRESS_EVERY`].
    async fn write_progress(
        &self,
        task: &Task,
        token: &str,
        mut reports: watch::Receiver<Option<u32>>,
    ) -> std::convert::Infallible {
        loop {
            if reports.changed().await.is_err() {
                return std::future::pending().await;
            }
            let Some(percent) = *reports.borrow_and_update() else { continue };
            let note = Note {
                kind: EventKind::Progress,
                data: json!({"percent": percent, "imagesDone": 0, "imagesRequested": task.requested_images}),
                channel: None,
                percent: Some(percent),
            };
            if let Err(e) = Box::pin(self.store.note(task, token, note)).await {
                tracing::warn!(error = %e, "could not record the task's progress");
            }
            tokio::time::sleep(PROGRESS_EVERY).await;
        }
    }

    async fn execute(
        &self,
        task: &Task,
        token: &str,
        slot: Option<Slot>,
        stored: &Mutex<Stored>,
        progress: &watch::Sender<Option<u32>>,
    ) -> Outcome {
        let Some(model) = self.catalog.get(&task.model) else {
            let message = format!("the model {} is no longer offered", task.model);
            return Outcome::Failed { code: FailCode::GenerationFailed, message };
        };
        let references = match Box::pin(self.fetch_references(task)).await {
            Ok(refs) => refs,
            Err(message) => return Outcome::Failed { code: FailCode::InvalidImageUrl, message },
        };
        let mask = match &task.spec.mask {
            Some(url) => match Box::pin(self.reference(url)).await {
                Ok(mask) => Some(mask),
                Err(e) => return Outcome::Failed { code: FailCode::InvalidImageUrl, message: format!("mask_url {e}") },
            },
            None => None,
        };
        let inputs = Inputs { references: &references, mask: mask.as_ref() };
        let images = match self.generate(task, model, token, slot, inputs, progress, stored).await {
            Ok(images) => images,
            Err(outcome) => return outcome,
        };
        let mut result_keys = Vec::with_capacity(images.len());
        let mut facts = Vec::with_capacity(images.len());
        let mut unconverted = None;
        for image in images.into_iter().take(task.requested_images as usize) {
            let image_facts = image_facts(task, &image);
            // The result's one conversion, when the upstream made another format than the task
            // asked for (Seedream 4.x always answers JPEG); otherwise it is stored as it came,
            // undecoded (its thumbnail is made when first asked for). One that cannot be
            // converted is left out, as an upstream's missing image would be, and not charged.
            let bytes = match Box::pin(self.media.convert(image.bytes, image.format, task.spec.output_format)).await {
                Ok(bytes) => bytes,
                Err(e) => {
                    tracing::warn!(error = %e, "a result could not be converted; leaving it out");
                    unconverted.get_or_insert(e);
                    continue;
                }
            };
            let index = result_keys.len();
            let key = super::result_key(&task.id, index, task.spec.output_format);
            if let Err(e) = Box::pin(self.storage.put_and_keep(&key, bytes)).await {
                tracing::error!(error = format!("{e:#}"), "storing a result failed");
                return Outcome::Failed {
                    code: FailCode::GenerationFailed,
                    message: "could not store the result".into(),
                };
            }
            {
                let mut kept = stored.lock().expect("not poisoned");
                kept.result_keys.push(key.clone());
                kept.images.push(image_facts.clone());
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
    /// only after a retryable failure: first the one `reserved` at the claim, or the one whose
    /// upstream job it resumes. Every try is logged on the task.
    #[allow(clippy::too_many_arguments)]
    async fn generate(
        &self,
        task: &Task,
        model: &Model,
        token: &str,
        mut reserved: Option<Slot>,
        Inputs { references, mask }: Inputs<'_>,
        progress: &watch::Sender<Option<u32>>,
        stored: &Mutex<Stored>,
    ) -> Result<Vec<GeneratedImage>, Outcome> {
        let mut log = task.channel_log.clone();
        let mut last_error = None;
        let mut tried = 0;
        let first = reserved.as_ref().map(|s| s.channel.id.as_str()).or(task.upstream_channel.as_deref());
        for channel in self.router.candidates(&task.model, task.routing, first) {
            if tried == MAX_CHANNELS_PER_TASK {
                break;
            }
            let resume = task.upstream_channel.as_deref() == Some(channel.id.as_str());
            let slot = match reserved.take_if(|s| s.channel.id == channel.id) {
                Some(slot) => slot,
                // The upstream runs the job already: following it takes no slot of its own.
                None if resume && task.upstream_task_id.is_some() => channel.force_slot(),
                None => match channel.try_acquire() {
                    Some(slot) => slot,
                    None => continue,
                },
            };
            tried += 1;
            let started = Note {
                kind: EventKind::Started,
                data: json!({"channel": channel.id, "attempt": task.attempts}),
                channel: Some(channel.id.clone()),
                percent: None,
            };
            if let Err(e) = Box::pin(self.store.note(task, token, started)).await {
                tracing::warn!(error = %e, "could not record the task's start");
            }
            let checkpoint = TaskCheckpoint { pool: self, task, token, channel: &channel.id, progress, stored };
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
            stored.lock().expect("not poisoned").channel_log = Some(log.clone());
            // The last try is written with the end; one the task moves on from, at once, so
            // that a crash during the next keeps it.
            let moving_on = matches!(result, Err(ProviderError::Retryable { .. }));
            if moving_on && let Err(e) = Box::pin(self.store.log_channel_attempt(&task.id, token, &log)).await {
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
                Reference { bytes: bytes.to_vec(), format }
            }
        };
        self.media.probe(&reference.bytes, reference.format).map_err(|e| e.to_string())?;
        Ok(reference)
    }
}

/// Cancels pending tasks whose `Cancel-After` deadline passed before a worker took them
/// (running ones watch their own deadline). Every node runs it, whatever its role: only one can
/// end each task.
pub async fn cancel_overdue(store: TaskStore, shutdown: CancellationToken) {
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(DEADLINE_SWEEP) => {}
        }
        let overdue = match store.overdue_pending(now_ms(), 100).await {
            Ok(overdue) => overdue,
            Err(e) => {
                tracing::warn!(error = %e, "could not look for tasks past their Cancel-After deadline");
                continue;
            }
        };
        for task in overdue {
            if let Err(e) =
                store.finish(&task, &Holder::Queue, &Outcome::cancelled_waiting(CANCELLED_AT_DEADLINE)).await
            {
                tracing::warn!(task = %task.id, error = %e, "could not cancel a task past its deadline");
            }
        }
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
        Outcome::Cancelled { .. } => FailCode::Cancelled.as_str(),
    }
}

/// The task as it ends: with the channels this run tried, if it tried any.
fn with_log(task: &Task, tried: Option<Vec<ChannelAttempt>>) -> std::borrow::Cow<'_, Task> {
    match tried {
        Some(channel_log) => std::borrow::Cow::Owned(Task { channel_log, ..task.clone() }),
        None => std::borrow::Cow::Borrowed(task),
    }
}

fn cancelled(kept: Stored, why: &str) -> Outcome {
    Outcome::Cancelled { result_keys: kept.result_keys, images: kept.images, message: why.to_owned() }
}

/// What a task's upstream request is made from besides its spec, fetched and checked.
#[derive(Clone, Copy)]
struct Inputs<'a> {
    references: &'a [Reference],
    mask: Option<&'a Reference>,
}

/// What an image was, for its price: what the upstream said of it, else what the task asked.
fn image_facts(task: &Task, image: &GeneratedImage) -> ImageFacts {
    let asked = task.spec.quality.filter(|q| *q != Quality::Auto);
    ImageFacts { size: image.size.unwrap_or(task.spec.size), quality: image.quality.or(asked) }
}

/// What a provider records on the task while it works, under the worker's lease: an
/// asynchronous upstream's task id, its progress, its preview frames.
struct TaskCheckpoint<'a> {
    pool: &'a WorkerPool,
    task: &'a Task,
    token: &'a str,
    channel: &'a str,
    progress: &'a watch::Sender<Option<u32>>,
    stored: &'a Mutex<Stored>,
}

impl TaskCheckpoint<'_> {
    async fn store_partial(&self, index: u32, image: GeneratedImage) -> anyhow::Result<()> {
        let spec = &self.task.spec;
        let bytes = self.pool.media.convert(image.bytes, image.format, spec.output_format).await?;
        self.pool.storage.put_and_keep(&super::partial_key(&self.task.id, index, spec), bytes).await?;
        let note = Note {
            kind: EventKind::Progress,
            data: json!({"partialImageIndex": index, "imagesDone": 0, "imagesRequested": self.task.requested_images}),
            channel: None,
            percent: None,
        };
        self.pool.store.note(self.task, self.token, note).await?;
        Ok(())
    }
}

impl Checkpoint for TaskCheckpoint<'_> {
    fn record_upstream_id<'a>(&'a self, upstream_id: &'a str) -> BoxFuture<'a, anyhow::Result<()>> {
        async move {
            self.pool.store.record_upstream(&self.task.id, self.token, self.channel, upstream_id).await?;
            let job = Some((self.channel.to_owned(), upstream_id.to_owned()));
            self.stored.lock().expect("not poisoned").upstream_job = job;
            Ok(())
        }
        .boxed()
    }

    fn progress(&self, percent: u32) {
        // The latest report wins; the writer samples them at its own pace.
        self.progress.send_replace(Some(percent.min(100)));
    }

    fn partial_image<'a>(&'a self, index: u32, image: GeneratedImage) -> BoxFuture<'a, ()> {
        async move {
            if index >= self.task.spec.partial_images {
                return;
            }
            if let Err(e) = self.store_partial(index, image).await {
                tracing::warn!(index, error = format!("{e:#}"), "could not keep a preview frame; skipping it");
            }
        }
        .boxed()
    }
}
