//! fal's queue (docs/PROVIDERS.md §4): `POST {base}/{model_path}` with `Authorization: Key …`
//! answers `{request_id, status_url, response_url, cancel_url}`. The status URL is recorded on
//! the task and polled (202 while `IN_QUEUE`/`IN_PROGRESS`, 200 once `COMPLETED`, a failed job
//! included); the result (`images[].url`) is then read from the response URL and downloaded at
//! once. Status, result and cancel drop the model's subpath:
//! `{base}/{owner}/{alias}/requests/{id}[/status|/cancel]`.

use std::time::Duration;

use futures::FutureExt;
use futures::future::BoxFuture;
use reqwest::StatusCode;
use reqwest::header::HeaderMap;
use serde_json::{Value, json};

use super::polling::{self, PollError, Status};
use super::upstream::{Upstream, cancel_call, clip, data_uri, is_http, jpeg_or_png, json_of, send, status_error};
use super::{GeneratedImage, Job, Provider, ProviderError};
use crate::catalog::Family;
use crate::config::{ChannelConfig, PollOptions};

pub const FAMILIES: &[Family] = &[Family::Flux, Family::Diffusion];

pub const DEFAULT_BASE_URL: &str = "https://queue.fal.run";

/// Namespaces whose app ids have three segments, not two (fal_client's `APP_NAMESPACES`).
const NAMESPACES: &[&str] = &["workflows", "comfy"];

/// Where fal keeps a request: everything else is derived from its status URL, so that the one
/// URL recorded on the task is enough to resume and to cancel.
#[derive(Debug, Clone, PartialEq)]
struct Request {
    status_url: String,
    response_url: String,
}

impl Request {
    fn from_status_url(status_url: &str) -> Self {
        let response_url = status_url.strip_suffix("/status").unwrap_or(status_url).to_owned();
        Self { status_url: status_url.to_owned(), response_url }
    }

    fn cancel_url_of(status_url: &str) -> String {
        format!("{}/cancel", Self::from_status_url(status_url).response_url)
    }
}

pub struct FalProvider {
    upstream: Upstream,
    polling: PollOptions,
}

impl FalProvider {
    pub fn from_channel(c: &ChannelConfig) -> anyhow::Result<Self> {
        let upstream = Upstream::from_channel(c, Some(DEFAULT_BASE_URL))?;
        Ok(Self { upstream, polling: c.polling.clone().unwrap_or_default() })
    }

    async fn run(&self, job: Job<'_>) -> Result<Vec<GeneratedImage>, ProviderError> {
        let request = match job.upstream_task_id {
            Some(recorded) => {
                tracing::info!(upstream_task = recorded, "resuming the fal request");
                Request::from_status_url(recorded)
            }
            None => {
                let request = self.submit(job.upstream_model, &request_body(&job)).await?;
                polling::record(job.checkpoint, &request.status_url).await?;
                tokio::time::sleep(Duration::from_millis(self.polling.first_poll_ms)).await;
                request
            }
        };
        let interval = Duration::from_millis(self.polling.poll_interval_ms);
        let urls = polling::wait(job.checkpoint, &request.status_url, interval, || self.poll(&request)).await?;
        polling::download_all(&self.upstream, &urls).await
    }

    async fn submit(&self, model_path: &str, body: &Value) -> Result<Request, ProviderError> {
        let request =
            self.upstream.http.post(self.upstream.url(model_path)).header("authorization", self.key()).json(body);
        let text = send(request, map_error).await?;
        let answer = json_of(&text);
        let status_url = match (answer["status_url"].as_str(), answer["request_id"].as_str()) {
            (Some(url), _) if is_http(url) => url.to_owned(),
            (_, Some(id)) if !id.is_empty() => {
                self.upstream.url(&format!("{}/requests/{id}/status", app_id(model_path)))
            }
            // Something may have been accepted: no other channel is tried.
            _ => {
                return Err(ProviderError::Permanent(format!(
                    "fal accepted the request without a status_url: {}",
                    clip(&text)
                )));
            }
        };
        let mut request = Request::from_status_url(&status_url);
        if let Some(url) = answer["response_url"].as_str().filter(|u| is_http(u)) {
            request.response_url = url.to_owned();
        }
        Ok(request)
    }

    /// One status poll; once `COMPLETED`, the result's image URLs (a failed result fetch polls
    /// again rather than giving up).
    async fn poll(&self, request: &Request) -> Result<Status<Vec<String>>, PollError> {
        let answer = json_of(
            &send(self.upstream.http.get(&request.status_url).header("authorization", self.key()), map_error).await?,
        );
        match read_status(&answer).map_err(PollError::Fatal)? {
            Status::Running(progress) => Ok(Status::Running(progress)),
            Status::Done(()) => self.result(request).await.map(Status::Done),
        }
    }

    async fn result(&self, request: &Request) -> Result<Vec<String>, PollError> {
        let answer = json_of(
            &send(self.upstream.http.get(&request.response_url).header("authorization", self.key()), map_error).await?,
        );
        read_images(&answer).map_err(PollError::Fatal)
    }

    fn key(&self) -> String {
        format!("Key {}", self.upstream.api_key.expose())
    }

    async fn cancel_request(&self, status_url: &str) {
        let url = Request::cancel_url_of(status_url);
        cancel_call(self.upstream.http.put(&url).header("authorization", self.key()), "fal").await;
    }
}

impl Provider for FalProvider {
    fn generate<'a>(&'a self, job: Job<'a>) -> BoxFuture<'a, Result<Vec<GeneratedImage>, ProviderError>> {
        self.run(job).boxed()
    }

    fn cancel<'a>(&'a self, upstream_task_id: &'a str) -> BoxFuture<'a, ()> {
        self.cancel_request(upstream_task_id).boxed()
    }
}

/// The app a model path names, without its subpath: `fal-ai/flux/dev` → `fal-ai/flux`.
fn app_id(model_path: &str) -> String {
    let parts: Vec<&str> = model_path.trim_matches('/').split('/').collect();
    let keep = if NAMESPACES.contains(&parts[0]) { 3 } else { 2 };
    parts[..keep.min(parts.len())].join("/")
}

/// The model input: fal's image models share these field names (flux/dev, SDXL, …).
fn request_body(job: &Job<'_>) -> Value {
    let spec = job.spec;
    let mut body = json!({
        "prompt": spec.prompt,
        "image_size": {"width": spec.size.width, "height": spec.size.height},
        "num_images": spec.images,
        "output_format": jpeg_or_png(spec.output_format),
        "enable_safety_checker": true,
    });
    if let Some(seed) = spec.seed {
        body["seed"] = json!(seed);
    }
    if let Some(negative) = &spec.negative_prompt {
        body["negative_prompt"] = json!(negative);
    }
    if let Some(first) = job.references.first() {
        body["image_url"] = json!(data_uri(first));
    }
    body
}

/// A status answer. Queue position becomes a little progress that grows as the request moves
/// up (position 4 or more → 0%, next in line → 4%); running is 50%, as fal tells no more.
fn read_status(answer: &Value) -> Result<Status<()>, ProviderError> {
    match answer["status"].as_str().unwrap_or_default() {
        "IN_QUEUE" => {
            let position = answer["queue_position"].as_u64().unwrap_or(0);
            Ok(Status::Running(Some(4u64.saturating_sub(position) as u32)))
        }
        "IN_PROGRESS" => Ok(Status::Running(Some(50))),
        "COMPLETED" => match &answer["error"] {
            Value::Null => Ok(Status::Done(())),
            error => {
                let message = error.as_str().map(str::to_owned).unwrap_or_else(|| error.to_string());
                if answer["error_type"] == "content_policy_violation" {
                    Err(ProviderError::ContentViolation(clip(&message)))
                } else {
                    Err(ProviderError::Permanent(clip(&format!("the fal request failed: {message}"))))
                }
            }
        },
        other => Err(ProviderError::Permanent(clip(&format!("fal answered an unknown status {other:?}")))),
    }
}

/// The result's image URLs, without those the safety checker blanked (`has_nsfw_concepts`).
fn read_images(answer: &Value) -> Result<Vec<String>, ProviderError> {
    let images = answer["images"].as_array().map(Vec::as_slice).unwrap_or_default();
    if images.is_empty() {
        return Err(ProviderError::Permanent("fal's result has no images".into()));
    }
    let flagged = |i: usize| answer["has_nsfw_concepts"][i].as_bool() == Some(true);
    let urls: Vec<String> = images
        .iter()
        .enumerate()
        .filter(|(i, _)| !flagged(*i))
        .filter_map(|(_, image)| image["url"].as_str().map(str::to_owned))
        .collect();
    if urls.is_empty() && (0..images.len()).all(flagged) {
        return Err(ProviderError::ContentViolation("fal's safety checker blanked every image".into()));
    }
    if urls.is_empty() {
        return Err(ProviderError::Permanent("fal's result has no image URL".into()));
    }
    Ok(urls)
}

/// A 422 naming `content_policy_violation` is a refusal of the content; others are bad input.
fn map_error(status: StatusCode, headers: &HeaderMap, text: &str) -> ProviderError {
    let body: Value = serde_json::from_str(text).unwrap_or(Value::Null);
    let details = body["detail"].as_array().map(Vec::as_slice).unwrap_or_default();
    let refused = details.iter().find(|d| d["type"] == "content_policy_violation");
    let message = match (&body["detail"], refused) {
        (_, Some(d)) => d["msg"].as_str().unwrap_or("the content was refused").to_owned(),
        (Value::String(s), None) => s.clone(),
        (Value::Null, None) => text.chars().take(200).collect(),
        (other, None) => other.to_string(),
    };
    if refused.is_some() || body["error_type"] == "content_policy_violation" {
        return ProviderError::ContentViolation(clip(&message));
    }
    status_error(status, headers, clip(&message))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_drop_the_subpath_and_derive_from_the_status_url() {
        assert_eq!(app_id("fal-ai/flux/dev"), "fal-ai/flux");
        assert_eq!(app_id("fal-ai/flux/dev/image-to-image"), "fal-ai/flux");
        assert_eq!(app_id("workflows/me/my-flow/sub"), "workflows/me/my-flow");
        let status = "https://queue.fal.run/fal-ai/flux/requests/r1/status";
        assert_eq!(Request::from_status_url(status).response_url, "https://queue.fal.run/fal-ai/flux/requests/r1");
        assert_eq!(Request::cancel_url_of(status), "https://queue.fal.run/fal-ai/flux/requests/r1/cancel");
    }

    #[test]
    fn statuses_map_to_progress_or_failures() {
        let queued = |p: u64| read_status(&json!({"status": "IN_QUEUE", "queue_position": p})).unwrap();
        assert_eq!(
            (queued(9), queued(3), queued(0)),
            (Status::Running(Some(0)), Status::Running(Some(1)), Status::Running(Some(4)))
        );
        assert_eq!(read_status(&json!({"status": "IN_PROGRESS"})).unwrap(), Status::Running(Some(50)));
        assert_eq!(read_status(&json!({"status": "COMPLETED", "logs": []})).unwrap(), Status::Done(()));
        let failed = json!({"status": "COMPLETED", "error": "boom", "error_type": "runner_disconnected"});
        assert!(matches!(read_status(&failed), Err(ProviderError::Permanent(_))));
    }

    #[test]
    fn blanked_images_are_left_out() {
        let two = json!({"images": [{"url": "http://x/a"}, {"url": "http://x/b"}], "has_nsfw_concepts": [true, false]});
        assert_eq!(read_images(&two).unwrap(), ["http://x/b"]);
        let none = json!({"images": [{"url": "http://x/a"}], "has_nsfw_concepts": [true]});
        assert!(matches!(read_images(&none), Err(ProviderError::ContentViolation(_))));
    }

    #[test]
    fn content_policy_422s_are_violations_and_other_422s_are_final() {
        let h = HeaderMap::new();
        let policy =
            json!({"detail": [{"loc": ["body", "prompt"], "msg": "flagged", "type": "content_policy_violation"}]});
        let e = map_error(StatusCode::UNPROCESSABLE_ENTITY, &h, &policy.to_string());
        assert!(matches!(e, ProviderError::ContentViolation(ref m) if m == "flagged"), "{e:?}");
        let invalid =
            json!({"detail": [{"loc": ["body", "num_images"], "msg": "too many", "type": "less_than_equal"}]});
        assert!(matches!(
            map_error(StatusCode::UNPROCESSABLE_ENTITY, &h, &invalid.to_string()),
            ProviderError::Permanent(_)
        ));
        let timeout = json!({"detail": "Request timed out", "error_type": "request_timeout"});
        assert!(matches!(
            map_error(StatusCode::GATEWAY_TIMEOUT, &h, &timeout.to_string()),
            ProviderError::Retryable { .. }
        ));
    }
}
