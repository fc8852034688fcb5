//! An APIXO-compatible upstream (APIXO itself, or another Easel): submit with
//! `POST {base}/generateTask/{model}`, record the upstream task id, then poll
//! `GET {base}/statusTask/{model}?taskId=…` until `success` or `failed` and download the results.
//!
//! Recording, polling and downloading are [`polling`]'s, shared with the other asynchronous
//! upstreams.

use std::time::Duration;

use futures::FutureExt;
use futures::future::BoxFuture;
use reqwest::StatusCode;
use reqwest::header::HeaderMap;
use serde_json::{Value, json};

use super::polling::{self, PollError, Status};
use super::upstream::{Upstream, status_error, transport_error};
use super::{GeneratedImage, Job, Provider, ProviderError};
use crate::catalog::{Family, Size, TaskSpec};
use crate::config::{ApixoOptions, ChannelConfig};

pub const DEFAULT_BASE_URL: &str = "https://api.apixo.ai/api/v1";

/// The families an APIXO-compatible channel serves: those of seeds 000-002.
pub const FAMILIES: &[Family] = &[Family::Seedream, Family::GptImage];

pub struct ApixoProvider {
    upstream: Upstream,
    options: ApixoOptions,
}

/// How an upstream task ended.
#[derive(Debug, PartialEq)]
enum Ended {
    Succeeded(Vec<String>),
    Failed { code: String, message: String },
}

impl ApixoProvider {
    pub fn from_channel(c: &ChannelConfig) -> anyhow::Result<Self> {
        let upstream = Upstream::from_channel(c, Some(DEFAULT_BASE_URL))?;
        Ok(Self { upstream, options: c.apixo.clone().unwrap_or_default() })
    }

    async fn run(&self, job: Job<'_>) -> Result<Vec<GeneratedImage>, ProviderError> {
        let model = job.upstream_model;
        let task_id = match job.upstream_task_id {
            Some(id) => {
                tracing::info!(upstream_task = id, "resuming the upstream task");
                id.to_owned()
            }
            None => {
                let id = self.submit(model, &request_body(job.model.family, model, job.spec)).await?;
                polling::record(job.checkpoint, &id).await?;
                tokio::time::sleep(Duration::from_millis(self.options.first_poll_ms)).await;
                id
            }
        };
        let interval = Duration::from_millis(self.options.poll_interval_ms);
        let ended = polling::wait(job.checkpoint, &task_id, interval, || self.poll(model, &task_id)).await?;
        match ended {
            Ended::Succeeded(urls) => polling::download_all(&self.upstream, &urls).await,
            Ended::Failed { code, message } => Err(failure(&code, message)),
        }
    }

    /// Submits the task; any error here means the upstream accepted nothing.
    async fn submit(&self, model: &str, body: &Value) -> Result<String, ProviderError> {
        let response = self
            .upstream
            .http
            .post(self.upstream.url(&format!("generateTask/{model}")))
            .bearer_auth(self.upstream.api_key.expose())
            .json(body)
            .send()
            .await
            .map_err(transport_error)?;
        let (status, headers) = (response.status(), response.headers().clone());
        let body = response.text().await.map_err(transport_error)?;
        let envelope: Option<Value> = serde_json::from_str(&body).ok();
        if let Some(e) = envelope_error(status, &headers, envelope.as_ref(), &body) {
            return Err(submit_error(e));
        }
        envelope
            .as_ref()
            .and_then(|v| v["data"]["taskId"].as_str())
            .filter(|id| !id.is_empty())
            .map(str::to_owned)
            // Something may have been accepted: no other channel is tried.
            .ok_or_else(|| ProviderError::Permanent("the upstream accepted the task without a taskId".into()))
    }

    async fn poll(&self, model: &str, task_id: &str) -> Result<Status<Ended>, PollError> {
        let response = self
            .upstream
            .http
            .get(self.upstream.url(&format!("statusTask/{model}")))
            .query(&[("taskId", task_id)])
            .bearer_auth(self.upstream.api_key.expose())
            .send()
            .await?;
        let (status, headers) = (response.status(), response.headers().clone());
        let body = response.text().await?;
        let envelope: Option<Value> = serde_json::from_str(&body).ok();
        if let Some(e) = envelope_error(status, &headers, envelope.as_ref(), &body) {
            return Err(e.into());
        }
        let data = envelope.as_ref().map(|v| &v["data"]).unwrap_or(&Value::Null);
        read_status(data).map_err(|m| PollError::Fatal(ProviderError::Permanent(m)))
    }
}

impl Provider for ApixoProvider {
    fn generate<'a>(&'a self, job: Job<'a>) -> BoxFuture<'a, Result<Vec<GeneratedImage>, ProviderError>> {
        self.run(job).boxed()
    }
}

/// The seeds' request body for a canonical task of `family`, for the upstream's `model`.
fn request_body(family: Family, model: &str, spec: &TaskSpec) -> Value {
    let mut input = if family == Family::GptImage {
        json!({
            // Seed 002's `mode` names the model.
            "mode": model,
            "prompt": spec.prompt,
            "num_images": spec.images,
            "aspect_ratio": gpt_aspect_ratio(spec),
        })
    } else {
        json!({
            "mode": if spec.references.is_empty() { "text-to-image" } else { "image-to-image" },
            "prompt": spec.prompt,
            "max_images": spec.images,
            "size": spec.size.to_string(),
            "sequential_image_generation": if spec.sequential { "auto" } else { "disabled" },
            "web_search": spec.web_search,
            "output_format": spec.output_format.extension(),
        })
    };
    if !spec.references.is_empty() {
        // The upstream fetches them itself; Easel's egress guard already checked them.
        input["image_urls"] = json!(spec.references);
    }
    json!({"request_type": "async", "input": input})
}

/// Seed 002's aspect ratio nearest the task's size: square, landscape or portrait.
fn gpt_aspect_ratio(spec: &TaskSpec) -> &'static str {
    const SEED_002: [(&str, Size); 3] =
        [("1:1", Size::new(1024, 1024)), ("3:2", Size::new(1536, 1024)), ("2:3", Size::new(1024, 1536))];
    if let Some((ratio, _)) = SEED_002.iter().find(|(_, size)| *size == spec.size) {
        return ratio;
    }
    match spec.size.width.cmp(&spec.size.height) {
        std::cmp::Ordering::Greater => "3:2",
        std::cmp::Ordering::Less => "2:3",
        std::cmp::Ordering::Equal => "1:1",
    }
}

/// The error an answer carries, by its HTTP status or, when that is 2xx, by the envelope's
/// `code` (APIXO-style services may answer HTTP 200 with `{"code":400,…}`).
fn envelope_error(
    status: StatusCode,
    headers: &HeaderMap,
    envelope: Option<&Value>,
    body: &str,
) -> Option<ProviderError> {
    let message = envelope
        .and_then(|v| v["message"].as_str())
        .map(str::to_owned)
        .unwrap_or_else(|| body.chars().take(200).collect());
    if !status.is_success() {
        return Some(status_error(status, headers, message));
    }
    let code = envelope?.get("code")?.as_u64()?;
    if code == 200 {
        return None;
    }
    Some(match u16::try_from(code).ok().and_then(|c| StatusCode::from_u16(c).ok()) {
        Some(code) => status_error(code, headers, message),
        None => ProviderError::Permanent(format!("code {code}: {message}")),
    })
}

/// A refused submit: 429/5xx/transport stay retryable, and so does a lack of credit (another
/// channel may have some); other refusals are permanent.
fn submit_error(e: ProviderError) -> ProviderError {
    match e {
        ProviderError::Permanent(message)
            if message.to_ascii_lowercase().contains("insufficient credit") || message.starts_with("HTTP 402") =>
        {
            ProviderError::Retryable { message, retry_after: None }
        }
        other => other,
    }
}

/// Reads a status answer's `data`.
fn read_status(data: &Value) -> Result<Status<Ended>, String> {
    let text = |key: &str| data[key].as_str().unwrap_or_default().to_owned();
    match data["state"].as_str() {
        Some("success") => {
            let result = match &data["resultJson"] {
                Value::String(s) => serde_json::from_str::<Value>(s)
                    .map_err(|e| format!("the upstream's resultJson is not JSON: {e}"))?,
                other => other.clone(),
            };
            let urls = result["resultUrls"]
                .as_array()
                .ok_or("the upstream's resultJson has no resultUrls")?
                .iter()
                .filter_map(|u| u.as_str().map(str::to_owned))
                .collect();
            Ok(Status::Done(Ended::Succeeded(urls)))
        }
        Some("failed") => Ok(Status::Done(Ended::Failed { code: text("failCode"), message: text("failMsg") })),
        Some("pending" | "processing") => Ok(Status::Running(None)),
        Some(other) => {
            tracing::warn!(state = other, "the upstream answered an unknown task state; polling on");
            Ok(Status::Running(None))
        }
        None => Err("the upstream's status answer has no state".into()),
    }
}

/// An upstream `failed` task; none is worth another channel (the upstream already took it).
fn failure(code: &str, message: String) -> ProviderError {
    match code {
        "CONTENT_VIOLATION" => ProviderError::ContentViolation(if message.is_empty() {
            "the content does not meet the upstream's safety guidelines".into()
        } else {
            message
        }),
        "INVALID_IMAGE_URL" => ProviderError::InvalidReference { index: 0, reason: message },
        _ => ProviderError::Permanent(format!("the upstream task failed: {code}: {message}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(model: &str, size: Size, references: Vec<String>) -> TaskSpec {
        TaskSpec { images: 2, references, sequential: true, web_search: true, ..TaskSpec::example(model, size) }
    }

    #[test]
    fn seedream_bodies_follow_the_seeds() {
        let body = request_body(Family::Seedream, "seedream-5-0", &spec("seedream-5-0", Size::new(2848, 1600), vec![]));
        assert_eq!(
            body,
            json!({"request_type": "async", "input": {"mode": "text-to-image", "prompt": "p", "max_images": 2,
                "size": "2848x1600", "sequential_image_generation": "auto", "web_search": true,
                "output_format": "png"}})
        );
        let body = request_body(
            Family::Seedream,
            "seedream-5-0",
            &spec("seedream-5-0", Size::new(2048, 2048), vec!["https://r/a.png".into()]),
        );
        assert_eq!(body["input"]["mode"], "image-to-image");
        assert_eq!(body["input"]["image_urls"], json!(["https://r/a.png"]));
    }

    #[test]
    fn gpt_image_bodies_carry_an_aspect_ratio() {
        let body = request_body(
            Family::GptImage,
            "gpt-image-1",
            &spec("gpt-image-1", Size::new(1024, 1536), vec!["https://r/a.png".into()]),
        );
        assert_eq!(
            body,
            json!({"request_type": "async", "input": {"mode": "gpt-image-1", "prompt": "p", "num_images": 2,
                "aspect_ratio": "2:3", "image_urls": ["https://r/a.png"]}})
        );
    }

    #[test]
    fn envelope_codes_count_even_under_http_200() {
        let h = HeaderMap::new();
        let credits = json!({"code": 400, "message": "Insufficient credits", "data": null});
        let e = envelope_error(StatusCode::OK, &h, Some(&credits), "").map(submit_error);
        assert!(matches!(e, Some(ProviderError::Retryable { .. })), "{e:?}");
        let e = envelope_error(StatusCode::BAD_REQUEST, &h, Some(&credits), "").map(submit_error);
        assert!(matches!(e, Some(ProviderError::Retryable { .. })), "{e:?}");
        let auth = json!({"code": 401, "message": "Invalid API key", "data": null});
        let e = envelope_error(StatusCode::OK, &h, Some(&auth), "").map(submit_error);
        assert!(matches!(e, Some(ProviderError::Permanent(_))), "{e:?}");
        let busy = json!({"code": 429, "message": "slow down", "data": null});
        let e = envelope_error(StatusCode::OK, &h, Some(&busy), "").map(submit_error);
        assert!(matches!(e, Some(ProviderError::Retryable { .. })), "{e:?}");
        let e = envelope_error(StatusCode::SERVICE_UNAVAILABLE, &h, None, "<html>").map(submit_error);
        assert!(matches!(e, Some(ProviderError::Retryable { .. })), "{e:?}");
        let ok = json!({"code": 200, "message": "success", "data": {"taskId": "t"}});
        assert!(envelope_error(StatusCode::OK, &h, Some(&ok), "").is_none());
    }

    #[test]
    fn statuses_and_fail_codes_map() {
        let data = json!({"state": "success", "resultJson": "{\"resultUrls\":[\"http://u/1.png\"]}"});
        assert_eq!(read_status(&data), Ok(Status::Done(Ended::Succeeded(vec!["http://u/1.png".into()]))));
        assert_eq!(read_status(&json!({"state": "processing"})), Ok(Status::Running(None)));
        assert!(read_status(&json!({"state": "success", "resultJson": "nope"})).is_err());
        assert!(matches!(failure("CONTENT_VIOLATION", "no".into()), ProviderError::ContentViolation(_)));
        assert!(matches!(
            failure("INVALID_IMAGE_URL", "cannot fetch".into()),
            ProviderError::InvalidReference { index: 0, .. }
        ));
        assert!(matches!(failure("GENERATION_FAILED", "x".into()), ProviderError::Permanent(_)));
    }
}
