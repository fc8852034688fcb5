//! Upstream providers behind one trait. A provider turns a canonical task into encoded images or
//! a typed failure; fetching references, storing results and billing happen around it.

pub mod a1111;
pub mod apixo;
pub mod ark;
pub mod bfl;
pub mod comfyui;
pub mod fal;
pub mod gemini;
pub mod local;
pub mod openai;
pub mod polling;
pub mod replicate;
pub mod upstream;

use std::time::Duration;

use crate::catalog::{Model, Quality, Size, TaskSpec};
use crate::media::{self, Media};
use futures::future::BoxFuture;

/// A reference image the worker already fetched and checked.
#[derive(Debug, Clone)]
pub struct Reference {
    pub bytes: Vec<u8>,
    pub format: image::ImageFormat,
}

/// An image as the upstream delivered it, in whatever format that really is (a GIF too): the
/// worker converts it to the task's format, if it is not in it already.
#[derive(Debug, Clone)]
pub struct GeneratedImage {
    pub bytes: Vec<u8>,
    pub format: image::ImageFormat,
    /// The size and quality the upstream says it rendered, where it says (they set the price).
    pub size: Option<Size>,
    pub quality: Option<Quality>,
}

impl GeneratedImage {
    /// The upstream's bytes with their sniffed format; `None` when they are not an image.
    pub fn sniffed(bytes: Vec<u8>) -> Option<Self> {
        media::sniff(&bytes).map(|format| Self { bytes, format, size: None, quality: None })
    }
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum ProviderError {
    /// The prompt, a reference or an output broke the upstream's content rules.
    #[error("{0}")]
    ContentViolation(String),
    #[error("reference image {index}: {reason}")]
    InvalidReference { index: usize, reason: String },
    /// Worth trying again, here or on another channel (429, 5xx, timeouts, connection errors).
    #[error("{message}")]
    Retryable { message: String, retry_after: Option<Duration> },
    /// The upstream refused the request itself (bad parameters, auth, model not found).
    #[error("{0}")]
    Permanent(String),
}

impl ProviderError {
    pub fn retryable(message: impl Into<String>) -> Self {
        ProviderError::Retryable { message: message.into(), retry_after: None }
    }
}

/// Durable notes a provider keeps about its work on a task, so that a retry after a crash
/// resumes instead of starting over (an asynchronous upstream's task id).
pub trait Checkpoint: Send + Sync {
    fn record_upstream_id<'a>(&'a self, upstream_id: &'a str) -> BoxFuture<'a, anyhow::Result<()>>;

    /// The upstream's own progress on the task, 0-100; cheap to call often.
    fn progress(&self, percent: u32);

    /// A preview of the first image (`index` 0, 1, … up to the task's `partial_images`), for
    /// clients that stream: stored and announced before this returns. A preview that cannot
    /// be kept is skipped; the task goes on.
    fn partial_image<'a>(&'a self, index: u32, image: GeneratedImage) -> BoxFuture<'a, ()>;
}

/// One attempt at a task on one channel.
pub struct Job<'a> {
    pub task_id: &'a str,
    pub spec: &'a TaskSpec,
    /// The task's model, as the catalog describes it (its family shapes the upstream request).
    pub model: &'a Model,
    /// Every decode of a reference or the mask goes through it (limits, shared memory budget).
    pub media: &'a Media,
    /// The references, already fetched and checked by the egress guard.
    pub references: &'a [Reference],
    /// The inpainting mask for the first reference (`spec.mask`, fetched like a reference).
    pub mask: Option<&'a Reference>,
    /// The channel's id for the model (`seedream-5-0-260128`, `doubao-…`, an endpoint id…).
    pub upstream_model: &'a str,
    /// The upstream task id an earlier attempt on this channel recorded, if any.
    pub upstream_task_id: Option<&'a str>,
    pub checkpoint: &'a dyn Checkpoint,
}

pub trait Provider: Send + Sync {
    /// Generates the job's images. Fewer than requested is a partial success. A provider does
    /// not convert its results: the worker converts each at most once, to the task's format.
    fn generate<'a>(&'a self, job: Job<'a>) -> BoxFuture<'a, Result<Vec<GeneratedImage>, ProviderError>>;

    /// Asks the upstream to stop the job a `generate` recorded (its upstream id), once its task
    /// was cancelled. Upstreams with no way to cancel do nothing. Best effort: a failure is
    /// logged, and the task stays cancelled whatever the upstream says.
    fn cancel<'a>(&'a self, _upstream_task_id: &'a str) -> BoxFuture<'a, ()> {
        Box::pin(async {})
    }
}
