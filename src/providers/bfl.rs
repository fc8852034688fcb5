//! Black Forest Labs' API (docs/PROVIDERS.md §3): `POST {base}/v1/{model}` with `x-key`
//! answers `{"id","polling_url"}`; the polling URL (which may be on another of BFL's hosts) is
//! recorded on the task and polled until `Ready` (`result.sample`, a URL that lives ten minutes,
//! downloaded at once), `Error`, or moderated. BFL has no cancel.

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use futures::FutureExt;
use futures::future::BoxFuture;
use reqwest::StatusCode;
use reqwest::header::HeaderMap;
use serde_json::{Value, json};

use super::polling::{self, PollError, Status};
use super::upstream::{Upstream, clip, is_http, jpeg_or_png, json_of, send, status_error};
use super::{GeneratedImage, Job, Provider, ProviderError};
use crate::catalog::Family;
use crate::catalog::family::tiered;
use crate::config::{BflRegion, ChannelConfig, PollOptions};

/// The families a `bfl` channel serves.
pub const FAMILIES: &[Family] = &[Family::Flux];

/// The most reference images a request carries (`input_image` … `input_image_8`).
const MAX_REFERENCES: usize = 8;

fn base_of(region: BflRegion) -> &'static str {
    match region {
        BflRegion::Global => "https://api.bfl.ai",
        BflRegion::Eu => "https://api.eu.bfl.ai",
        BflRegion::Us => "https://api.us.bfl.ai",
    }
}

pub struct BflProvider {
    upstream: Upstream,
    polling: PollOptions,
}

impl BflProvider {
    pub fn from_channel(c: &ChannelConfig) -> anyhow::Result<Self> {
        let region = c.bfl.clone().unwrap_or_default().region;
        let upstream = Upstream::from_channel(c, Some(base_of(region)))?;
        Ok(Self { upstream, polling: c.polling.clone().unwrap_or_default() })
    }

    async fn run(&self, job: Job<'_>) -> Result<Vec<GeneratedImage>, ProviderError> {
        let polling_url = match job.upstream_task_id {
            Some(recorded) => {
                tracing::info!(upstream_task = recorded, "resuming the BFL task");
                self.polling_url_of(recorded)
            }
            None => {
                let url = self.submit(job.upstream_model, &request_body(&job)).await?;
                polling::record(job.checkpoint, &url).await?;
                tokio::time::sleep(Duration::from_millis(self.polling.first_poll_ms)).await;
                url
            }
        };
        let interval = Duration::from_millis(self.polling.poll_interval_ms);
        let sample = polling::wait(job.checkpoint, &polling_url, interval, || self.poll(&polling_url)).await?;
        polling::download_all(&self.upstream, &[sample]).await
    }

    /// What was recorded: the polling URL, or (from an older record) the bare task id.
    fn polling_url_of(&self, recorded: &str) -> String {
        if is_http(recorded) {
            recorded.to_owned()
        } else {
            format!("{}?id={recorded}", self.upstream.url("v1/get_result"))
        }
    }

    /// Submits the request; returns the URL to poll.
    async fn submit(&self, model: &str, body: &Value) -> Result<String, ProviderError> {
        let request = self
            .upstream
            .http
            .post(self.upstream.url(&format!("v1/{model}")))
            .header("x-key", self.upstream.api_key.expose())
            .json(body);
        let text = send(request, map_error).await?;
        let answer = json_of(&text);
        match (answer["polling_url"].as_str(), answer["id"].as_str()) {
            (Some(url), _) if is_http(url) => Ok(url.to_owned()),
            (_, Some(id)) if !id.is_empty() => Ok(self.polling_url_of(id)),
            // Something may have been accepted: no other channel is tried.
            _ => Err(ProviderError::Permanent(format!("BFL accepted the task without a polling_url: {}", clip(&text)))),
        }
    }

    async fn poll(&self, polling_url: &str) -> Result<Status<String>, PollError> {
        let request = self.upstream.http.get(polling_url).header("x-key", self.upstream.api_key.expose());
        let answer = json_of(&send(request, map_error).await?);
        read_result(&answer).map_err(PollError::Fatal)
    }
}

impl Provider for BflProvider {
    fn generate<'a>(&'a self, job: Job<'a>) -> BoxFuture<'a, Result<Vec<GeneratedImage>, ProviderError>> {
        self.run(job).boxed()
    }
}

/// The request body: the prompt, the references as base64 (`input_image`, `input_image_2`, …),
/// and the size as width and height for models that take any size (FLUX.2), else as the
/// aspect ratio (Kontext).
fn request_body(job: &Job<'_>) -> Value {
    let spec = job.spec;
    let mut body = json!({"prompt": spec.prompt, "output_format": jpeg_or_png(spec.output_format)});
    if job.model.sizes.custom.is_some() {
        body["width"] = json!(spec.size.width);
        body["height"] = json!(spec.size.height);
    } else {
        let ratio = tiered::tier_and_ratio(job.model, spec.size)
            .map(|(_, ratio)| ratio.to_owned())
            .unwrap_or_else(|| spec.size.aspect_ratio());
        body["aspect_ratio"] = json!(ratio);
    }
    for (i, r) in job.references.iter().take(MAX_REFERENCES).enumerate() {
        let field = if i == 0 { "input_image".to_owned() } else { format!("input_image_{}", i + 1) };
        body[field] = json!(BASE64.encode(&r.bytes));
    }
    if let Some(seed) = spec.seed {
        body["seed"] = json!(seed);
    }
    body
}

/// A poll's answer: still going, the result's URL, or how it failed.
fn read_result(answer: &Value) -> Result<Status<String>, ProviderError> {
    let status = answer["status"].as_str().unwrap_or_default();
    match status {
        "Ready" => answer["result"]["sample"]
            .as_str()
            .map(|url| Status::Done(url.to_owned()))
            .ok_or_else(|| ProviderError::Permanent("BFL's result has no sample".into())),
        "Pending" | "Queued" | "Processing" => {
            let progress = answer["progress"].as_f64().map(|p| if p <= 1.0 { p * 100.0 } else { p } as u32);
            Ok(Status::Running(progress))
        }
        "Content Moderated" | "Request Moderated" => {
            Err(ProviderError::ContentViolation(format!("BFL refused the content ({status})")))
        }
        "Task not found" => Err(ProviderError::Permanent("BFL no longer knows the task".into())),
        _ => {
            let detail = answer["details"].to_string();
            Err(ProviderError::Permanent(clip(&format!("the BFL task failed ({status}): {detail}"))))
        }
    }
}

/// 402 (no credits left) is worth another channel, as 429 and 5xx are; other refusals are final.
fn map_error(status: StatusCode, headers: &HeaderMap, text: &str) -> ProviderError {
    let body: Value = serde_json::from_str(text).unwrap_or(Value::Null);
    let message = match &body["detail"] {
        Value::String(s) => s.clone(),
        Value::Null => body["message"].as_str().map(str::to_owned).unwrap_or_else(|| text.chars().take(200).collect()),
        other => other.to_string(),
    };
    if status == StatusCode::PAYMENT_REQUIRED {
        return ProviderError::retryable(format!("HTTP 402: {}", clip(&message)));
    }
    status_error(status, headers, clip(&message))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_map_by_status() {
        let ready = json!({"id": "t", "status": "Ready", "result": {"sample": "https://delivery.invalid/a.jpeg"}});
        assert_eq!(read_result(&ready).unwrap(), Status::Done("https://delivery.invalid/a.jpeg".into()));
        assert_eq!(read_result(&json!({"status": "Pending", "progress": 0.4})).unwrap(), Status::Running(Some(40)));
        assert!(matches!(
            read_result(&json!({"status": "Content Moderated"})),
            Err(ProviderError::ContentViolation(_))
        ));
        assert!(matches!(read_result(&json!({"status": "Error", "details": {}})), Err(ProviderError::Permanent(_))));
    }

    #[test]
    fn no_credits_fail_over_but_bad_input_does_not() {
        let h = HeaderMap::new();
        assert!(matches!(map_error(StatusCode::PAYMENT_REQUIRED, &h, "{}"), ProviderError::Retryable { .. }));
        let invalid = json!({"detail": [{"loc": ["body", "width"], "msg": "must be a multiple of 16"}]});
        match map_error(StatusCode::UNPROCESSABLE_ENTITY, &h, &invalid.to_string()) {
            ProviderError::Permanent(m) => assert!(m.contains("multiple of 16"), "{m}"),
            other => panic!("{other:?}"),
        }
    }
}
