//! A self-hosted Automatic1111 or Forge server, started with `--api` (docs/PROVIDERS.md §6):
//! `POST /sdapi/v1/txt2img`, or `/sdapi/v1/img2img` with the first reference as `init_images`,
//! answers the images in base64 once they are done; while it works, `GET /sdapi/v1/progress`
//! gives the task's progress. A cancel is `POST /sdapi/v1/interrupt`. A server started with
//! `--api-auth user:pass` takes HTTP basic auth: the channel's key is `user:pass`.
//!
//! The server runs one job at a time and has no job ids: the channel's `max_concurrency` should
//! be 1, and an interrupt stops whatever it runs. A restart cannot resume a job; the task runs
//! again (nothing was delivered, nothing charged).

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use futures::FutureExt;
use futures::future::BoxFuture;
use reqwest::RequestBuilder;
use serde_json::{Value, json};

use super::polling;
use super::upstream::{Secret, Upstream, cancel_call, clip, decoded_image, json_of, send, status_error};
use super::{GeneratedImage, Job, Provider, ProviderError};
use crate::catalog::Family;
use crate::config::{ChannelConfig, PollOptions};

/// The families an `a1111` channel serves.
pub const FAMILIES: &[Family] = &[Family::Diffusion];

pub struct A1111Provider {
    upstream: Upstream,
    /// `user:pass` for `--api-auth`, if the server asks for it.
    auth: Option<Secret>,
    polling: PollOptions,
}

impl A1111Provider {
    pub fn from_channel(c: &ChannelConfig) -> anyhow::Result<Self> {
        let (upstream, auth) = Upstream::self_hosted(c)?;
        Ok(Self { upstream, auth, polling: c.polling.clone().unwrap_or_default() })
    }

    fn authorized(&self, request: RequestBuilder) -> RequestBuilder {
        match self.auth.as_ref().map(|s| s.expose().split_once(':').unwrap_or((s.expose(), ""))) {
            Some((user, pass)) => request.basic_auth(user, Some(pass)),
            None => request,
        }
    }

    async fn run(&self, job: Job<'_>) -> Result<Vec<GeneratedImage>, ProviderError> {
        // Noted on the task, so that a cancel reaches the server (`interrupt`).
        polling::record(job.checkpoint, &format!("a1111:{}", job.task_id)).await?;
        let (path, body) = request(&job);
        let generate = send(self.authorized(self.upstream.http.post(self.upstream.url(path)).json(&body)), map_error);
        let interval = Duration::from_millis(self.polling.poll_interval_ms.max(100));
        let text = tokio::select! {
            answer = generate => answer?,
            never = self.follow_progress(&job, interval) => match never {},
        };
        let answer = json_of(&text);
        let encoded = answer["images"].as_array().map(Vec::as_slice).unwrap_or_default();
        // No grid was asked for; extensions (ControlNet's maps) append theirs after the batch.
        let images = &encoded[..encoded.len().min(job.spec.images as usize)];
        if images.is_empty() {
            return Err(ProviderError::Permanent(format!("the server returned no image: {}", clip(&text))));
        }
        images.iter().map(|b64| decoded_image(b64.as_str().unwrap_or_default(), "the A1111 server")).collect()
    }

    /// Reports the server's progress until dropped (when the generation answered).
    async fn follow_progress(&self, job: &Job<'_>, interval: Duration) -> std::convert::Infallible {
        loop {
            tokio::time::sleep(interval).await;
            let url = self.upstream.url("sdapi/v1/progress?skip_current_image=true");
            if let Ok(text) = send(self.authorized(self.upstream.http.get(url)), map_error).await
                && let Some(progress) = json_of(&text)["progress"].as_f64()
            {
                job.checkpoint.progress((progress.clamp(0.0, 1.0) * 100.0) as u32);
            }
        }
    }
}

impl Provider for A1111Provider {
    fn generate<'a>(&'a self, job: Job<'a>) -> BoxFuture<'a, Result<Vec<GeneratedImage>, ProviderError>> {
        self.run(job).boxed()
    }

    fn cancel<'a>(&'a self, _upstream_task_id: &'a str) -> BoxFuture<'a, ()> {
        let interrupt = self.authorized(self.upstream.http.post(self.upstream.url("sdapi/v1/interrupt")));
        cancel_call(interrupt, "the A1111 server").boxed()
    }
}

/// The server's error answers: FastAPI's `{"detail": …}` (422) or its own `{"error", "errors"}`.
fn map_error(status: reqwest::StatusCode, headers: &reqwest::header::HeaderMap, text: &str) -> ProviderError {
    let body = json_of(text);
    let message = match (&body["errors"], &body["error"], &body["detail"]) {
        (Value::String(e), _, _) if !e.is_empty() => e.clone(),
        (_, Value::String(e), _) => e.clone(),
        (_, _, Value::Null) => text.chars().take(200).collect(),
        (_, _, detail) => detail.to_string(),
    };
    status_error(status, headers, clip(&message))
}

/// The route and body for the job: `txt2img`, or `img2img` with the first reference. The
/// channel's model mapping names the checkpoint (`sd_model_checkpoint`).
fn request(job: &Job<'_>) -> (&'static str, Value) {
    let spec = job.spec;
    let mut body = json!({
        "prompt": spec.prompt,
        "negative_prompt": spec.negative_prompt.as_deref().unwrap_or_default(),
        "width": spec.size.width,
        "height": spec.size.height,
        "batch_size": spec.images,
        "n_iter": 1,
        "seed": spec.seed.map_or(-1, |s| s as i64),
        "send_images": true,
        "save_images": false,
        // Else a batch comes back with a grid of itself first (`opts.return_grid`).
        "do_not_save_grid": true,
        "override_settings": {"sd_model_checkpoint": job.upstream_model},
    });
    match job.references.first() {
        Some(first) => {
            body["init_images"] = json!([BASE64.encode(&first.bytes)]);
            ("sdapi/v1/img2img", body)
        }
        None => ("sdapi/v1/txt2img", body),
    }
}
