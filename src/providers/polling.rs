//! What the providers of asynchronous upstreams share (APIXO, Black Forest Labs, fal,
//! Replicate): recording the upstream's job on the task before anything else, polling it to
//! its end through passing failures, and downloading its results at once.
//!
//! Once an upstream has accepted a job, nothing here answers `Retryable`: the worker would
//! fail over and the images would be generated (and paid for) twice.

use std::future::Future;
use std::time::Duration;

use tokio::sync::Notify;

use super::upstream::{Upstream, transport_error};
use super::{Checkpoint, GeneratedImage, ProviderError};

/// Consecutive failed polls (transport errors, 429, 5xx) tolerated before giving up on a job.
const MAX_POLL_FAILURES: u32 = 5;
/// Tries per result download.
const MAX_DOWNLOAD_TRIES: u32 = 3;
/// Tries at recording the upstream's job on the task.
const MAX_CHECKPOINT_TRIES: u32 = 3;
/// Longest wait between polls after failures.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// Where a poll found the upstream's job.
#[derive(Debug, PartialEq)]
pub enum Status<T> {
    /// Still queued or running, with its progress (0-100) where the upstream tells it.
    Running(Option<u32>),
    Done(T),
}

/// Why a poll gave no answer.
#[derive(Debug)]
pub enum PollError {
    /// Worth polling again (transport errors, 429, 5xx).
    Transient { message: String, retry_after: Option<Duration> },
    /// The job failed, or the upstream will not tell us of it (auth, unknown job).
    Fatal(ProviderError),
}

impl From<ProviderError> for PollError {
    fn from(e: ProviderError) -> Self {
        match e {
            ProviderError::Retryable { message, retry_after } => PollError::Transient { message, retry_after },
            other => PollError::Fatal(other),
        }
    }
}

impl From<reqwest::Error> for PollError {
    fn from(e: reqwest::Error) -> Self {
        transport_error(e).into()
    }
}

/// Records the upstream's id for the job on the task, so that a restart resumes it. A job that
/// cannot be recorded is not followed (a restart would submit it again).
pub async fn record(checkpoint: &dyn Checkpoint, id: &str) -> Result<(), ProviderError> {
    let mut tries = 0;
    loop {
        tries += 1;
        match checkpoint.record_upstream_id(id).await {
            Ok(()) => return Ok(()),
            Err(e) if tries >= MAX_CHECKPOINT_TRIES => {
                tracing::error!(error = format!("{e:#}"), upstream_task = id, "could not record the upstream task");
                return Err(ProviderError::Permanent("could not record the upstream task".into()));
            }
            Err(e) => {
                tracing::warn!(error = format!("{e:#}"), "recording the upstream task failed; trying again");
                tokio::time::sleep(Duration::from_millis(200 * u64::from(tries))).await;
            }
        }
    }
}

/// Polls with `poll` every `interval` (jittered) until the job ends; progress goes to
/// `checkpoint`. Passing failures back off (or wait as long as the upstream's `Retry-After`
/// says); more than [`MAX_POLL_FAILURES`] in a row give up.
pub async fn wait<T, F, Fut>(
    checkpoint: &dyn Checkpoint,
    upstream_id: &str,
    interval: Duration,
    poll: F,
) -> Result<T, ProviderError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Status<T>, PollError>>,
{
    wait_woken(checkpoint, upstream_id, interval, &Notify::new(), poll).await
}

/// [`wait`], polling at once whenever `woken` is told the job may have ended (an upstream's
/// own live messages say so before a poll would).
pub async fn wait_woken<T, F, Fut>(
    checkpoint: &dyn Checkpoint,
    upstream_id: &str,
    interval: Duration,
    woken: &Notify,
    mut poll: F,
) -> Result<T, ProviderError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Status<T>, PollError>>,
{
    let mut failures = 0u32;
    loop {
        let pause = match poll().await {
            Ok(Status::Running(progress)) => {
                failures = 0;
                if let Some(percent) = progress {
                    checkpoint.progress(percent);
                }
                jitter(interval)
            }
            Ok(Status::Done(result)) => return Ok(result),
            Err(PollError::Fatal(e)) => return Err(after_acceptance(e)),
            Err(PollError::Transient { message, retry_after }) => {
                failures += 1;
                if failures > MAX_POLL_FAILURES {
                    return Err(ProviderError::Permanent(format!(
                        "lost track of the upstream task after {MAX_POLL_FAILURES} failed polls: {message}"
                    )));
                }
                tracing::warn!(upstream_task = upstream_id, %message, "polling the upstream failed; polling again");
                let backoff = interval.max(Duration::from_millis(100)) * 2u32.pow(failures.min(8));
                retry_after.unwrap_or(backoff).min(MAX_BACKOFF)
            }
        };
        tokio::select! {
            () = tokio::time::sleep(pause) => {}
            () = woken.notified() => {}
        }
    }
}

/// A failure after the upstream took the job: never worth another channel.
fn after_acceptance(e: ProviderError) -> ProviderError {
    match e {
        ProviderError::Retryable { message, .. } => ProviderError::Permanent(message),
        other => other,
    }
}

/// Downloads every result at once (upstreams keep them minutes to an hour); one that cannot be
/// fetched is left out (a partial success), and none at all fails the job.
pub async fn download_all(upstream: &Upstream, urls: &[String]) -> Result<Vec<GeneratedImage>, ProviderError> {
    let mut images = Vec::with_capacity(urls.len());
    let mut last_error = None;
    for url in urls {
        match download(upstream, url).await {
            Ok(image) => images.push(image),
            Err(e) => {
                tracing::warn!(error = %e, "a result could not be downloaded");
                last_error = Some(e);
            }
        }
    }
    match (images.is_empty(), last_error) {
        (true, Some(e)) => Err(ProviderError::Permanent(format!("downloading the results failed: {e}"))),
        _ => Ok(images),
    }
}

/// A result with its real format, whatever the URL or headers said.
async fn download(upstream: &Upstream, url: &str) -> Result<GeneratedImage, ProviderError> {
    let mut tries = 0;
    let bytes = loop {
        tries += 1;
        match upstream.download(url).await {
            Ok(bytes) => break bytes,
            Err(ProviderError::Retryable { .. }) if tries < MAX_DOWNLOAD_TRIES => {
                tokio::time::sleep(Duration::from_millis(250 * u64::from(tries))).await;
            }
            Err(e) => return Err(e),
        }
    };
    GeneratedImage::sniffed(bytes)
        .ok_or_else(|| ProviderError::Permanent("a result is not a JPEG, PNG, WebP or GIF image".into()))
}

/// ±20% around `interval`, so that many jobs do not poll in step.
pub fn jitter(interval: Duration) -> Duration {
    let r = u16::from_le_bytes(crate::ids::random_bytes::<2>()) as f64 / f64::from(u16::MAX);
    interval.mul_f64(0.8 + 0.4 * r)
}
