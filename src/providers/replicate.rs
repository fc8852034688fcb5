//! Replicate's predictions API (docs/PROVIDERS.md §5): `POST {base}/models/{owner}/{name}/predictions`
//! (or `POST {base}/predictions` with a `version` for `owner/name:version`) with
//! `Authorization: Bearer …` and `{"input":{…}}`, optionally waiting (`Prefer: wait=N`) for the
//! prediction to end. Its `id` is recorded on the task and `GET {base}/predictions/{id}` polled
//! until `succeeded` (`output`: a list of URLs or one URL, downloaded at once), `failed`,
//! `canceled` or `aborted`. Errors are RFC 7807 problem details.

use std::time::Duration;

use futures::FutureExt;
use futures::future::BoxFuture;
use reqwest::StatusCode;
use reqwest::header::HeaderMap;
use serde_json::{Value, json};

use super::polling::{self, PollError, Status};
use super::upstream::{Upstream, cancel_call, clip, data_uri, json_of, send, status_error};
use super::{GeneratedImage, Job, Provider, ProviderError};
use crate::catalog::{Family, OutputFormat};
use crate::config::{ChannelConfig, PollOptions};

pub const FAMILIES: &[Family] = &[Family::Flux, Family::Diffusion];

pub const DEFAULT_BASE_URL: &str = "https://api.replicate.com/v1";

/// The aspect ratios Replicate's image models name (flux-schnell's list).
const ASPECT_RATIOS: &[&str] = &["1:1", "16:9", "21:9", "3:2", "2:3", "4:5", "5:4", "3:4", "4:3", "9:16", "9:21"];

/// The longest `Prefer: wait` Replicate honours.
const MAX_WAIT_SECS: u64 = 60;

pub struct ReplicateProvider {
    upstream: Upstream,
    polling: PollOptions,
    wait_secs: u64,
}

impl ReplicateProvider {
    pub fn from_channel(c: &ChannelConfig) -> anyhow::Result<Self> {
        let upstream = Upstream::from_channel(c, Some(DEFAULT_BASE_URL))?;
        // A create that outlives the channel's timeout would be retried elsewhere while it runs
        // here: the wait stays well inside it.
        let timeout = c.timeout_secs.unwrap_or(300);
        let wait_secs = c.replicate.clone().unwrap_or_default().wait_secs.min(MAX_WAIT_SECS).min(timeout / 2);
        Ok(Self { upstream, polling: c.polling.clone().unwrap_or_default(), wait_secs })
    }

    async fn run(&self, job: Job<'_>) -> Result<Vec<GeneratedImage>, ProviderError> {
        let id = match job.upstream_task_id {
            Some(recorded) => {
                tracing::info!(upstream_task = recorded, "resuming the Replicate prediction");
                recorded.to_owned()
            }
            None => {
                let prediction = self.create(job.upstream_model, input(&job)).await?;
                let id = prediction["id"].as_str().unwrap_or_default().to_owned();
                polling::record(job.checkpoint, &id).await?;
                // Waited for (`Prefer: wait`) and already over: no poll.
                if let Status::Done(urls) = read_prediction(&prediction)? {
                    return polling::download_all(&self.upstream, &urls).await;
                }
                tokio::time::sleep(Duration::from_millis(self.polling.first_poll_ms)).await;
                id
            }
        };
        let interval = Duration::from_millis(self.polling.poll_interval_ms);
        let urls = polling::wait(job.checkpoint, &id, interval, || self.poll(&id)).await?;
        polling::download_all(&self.upstream, &urls).await
    }

    /// Creates the prediction; returns it as Replicate answered (with an `id`).
    async fn create(&self, model: &str, input: Value) -> Result<Value, ProviderError> {
        let (url, body) = match model.split_once(':') {
            Some((_, version)) => (self.upstream.url("predictions"), json!({"version": version, "input": input})),
            None => (self.upstream.url(&format!("models/{model}/predictions")), json!({"input": input})),
        };
        let mut request = self.upstream.http.post(url).bearer_auth(self.upstream.api_key.expose()).json(&body);
        if self.wait_secs > 0 {
            request = request.header("prefer", format!("wait={}", self.wait_secs));
        }
        let text = send(request, map_error).await?;
        let prediction = json_of(&text);
        match prediction["id"].as_str() {
            Some(id) if !id.is_empty() => Ok(prediction),
            // Something may have been accepted: no other channel is tried.
            _ => Err(ProviderError::Permanent(format!(
                "Replicate accepted the prediction without an id: {}",
                clip(&text)
            ))),
        }
    }

    async fn poll(&self, id: &str) -> Result<Status<Vec<String>>, PollError> {
        let url = self.upstream.url(&format!("predictions/{id}"));
        let prediction =
            json_of(&send(self.upstream.http.get(url).bearer_auth(self.upstream.api_key.expose()), map_error).await?);
        read_prediction(&prediction).map_err(PollError::Fatal)
    }

    async fn cancel_prediction(&self, id: &str) {
        let url = self.upstream.url(&format!("predictions/{id}/cancel"));
        cancel_call(self.upstream.http.post(url).bearer_auth(self.upstream.api_key.expose()), "Replicate").await;
    }
}

impl Provider for ReplicateProvider {
    fn generate<'a>(&'a self, job: Job<'a>) -> BoxFuture<'a, Result<Vec<GeneratedImage>, ProviderError>> {
        self.run(job).boxed()
    }

    fn cancel<'a>(&'a self, upstream_task_id: &'a str) -> BoxFuture<'a, ()> {
        self.cancel_prediction(upstream_task_id).boxed()
    }
}

/// The model input, in the field names of Replicate's FLUX and SDXL models. The size goes both
/// as an aspect ratio (where it is one Replicate names) and as width and height: each model
/// reads the fields its schema has.
fn input(job: &Job<'_>) -> Value {
    let spec = job.spec;
    let format = match spec.output_format {
        OutputFormat::Jpeg => "jpg",
        OutputFormat::Png => "png",
        OutputFormat::Webp => "webp",
    };
    let mut input = json!({
        "prompt": spec.prompt,
        "num_outputs": spec.images,
        "width": spec.size.width,
        "height": spec.size.height,
        "output_format": format,
    });
    let ratio = spec.size.aspect_ratio();
    if ASPECT_RATIOS.contains(&ratio.as_str()) {
        input["aspect_ratio"] = json!(ratio);
    }
    if let Some(seed) = spec.seed {
        input["seed"] = json!(seed);
    }
    if let Some(negative) = &spec.negative_prompt {
        input["negative_prompt"] = json!(negative);
    }
    if let Some(first) = job.references.first() {
        input["image"] = json!(data_uri(first));
    }
    input
}

/// A prediction: still going, its output URLs, or how it ended.
fn read_prediction(prediction: &Value) -> Result<Status<Vec<String>>, ProviderError> {
    let status = prediction["status"].as_str().unwrap_or_default();
    match status {
        "starting" => Ok(Status::Running(Some(0))),
        "processing" => Ok(Status::Running(Some(logs_percent(prediction["logs"].as_str()).unwrap_or(50)))),
        "succeeded" => {
            let urls: Vec<String> = match &prediction["output"] {
                Value::String(url) => vec![url.clone()],
                Value::Array(items) => items.iter().filter_map(Value::as_str).map(str::to_owned).collect(),
                _ => Vec::new(),
            };
            if urls.is_empty() {
                let gone = prediction["data_removed"] == true;
                let why = if gone { "its outputs were removed" } else { "it has no output" };
                return Err(ProviderError::Permanent(format!("the Replicate prediction succeeded but {why}")));
            }
            Ok(Status::Done(urls))
        }
        "failed" => {
            let error = match &prediction["error"] {
                Value::String(s) => s.clone(),
                Value::Null => "no reason given".to_owned(),
                other => other.to_string(),
            };
            // cog-flux fails a prediction whose every image was flagged ("… NSFW content …").
            if error.to_ascii_uppercase().contains("NSFW") {
                Err(ProviderError::ContentViolation(clip(&error)))
            } else {
                Err(ProviderError::Permanent(clip(&format!("the Replicate prediction failed: {error}"))))
            }
        }
        "canceled" | "aborted" => Err(ProviderError::Permanent(format!("the Replicate prediction was {status}"))),
        other => Err(ProviderError::Permanent(clip(&format!("Replicate answered an unknown status {other:?}")))),
    }
}

/// The last percentage a progress bar printed in the logs (`…  42%|████▎ | …`).
fn logs_percent(logs: Option<&str>) -> Option<u32> {
    let logs = logs?;
    let end = logs.rfind("%|")?;
    let digits: String = logs[..end].chars().rev().take_while(char::is_ascii_digit).collect();
    let percent: u32 = digits.chars().rev().collect::<String>().parse().ok()?;
    Some(percent.min(99))
}

/// 402 (no credit left) is worth another channel, as 429 and 5xx are; other refusals are final.
fn map_error(status: StatusCode, headers: &HeaderMap, text: &str) -> ProviderError {
    let body: Value = serde_json::from_str(text).unwrap_or(Value::Null);
    let message = match (body["title"].as_str(), body["detail"].as_str()) {
        (Some(title), Some(detail)) => format!("{title}: {detail}"),
        (None, Some(detail)) => detail.to_owned(),
        (Some(title), None) => title.to_owned(),
        (None, None) => text.chars().take(200).collect(),
    };
    if status == StatusCode::PAYMENT_REQUIRED {
        return ProviderError::Retryable { message: format!("HTTP 402: {}", clip(&message)), retry_after: None };
    }
    status_error(status, headers, clip(&message))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn predictions_map_by_status() {
        let list = json!({"id": "p", "status": "succeeded", "output": ["https://r.invalid/a.webp", "https://r.invalid/b.webp"]});
        assert_eq!(
            read_prediction(&list).unwrap(),
            Status::Done(vec!["https://r.invalid/a.webp".into(), "https://r.invalid/b.webp".into()])
        );
        let one = json!({"id": "p", "status": "succeeded", "output": "https://r.invalid/a.png"});
        assert_eq!(read_prediction(&one).unwrap(), Status::Done(vec!["https://r.invalid/a.png".into()]));
        assert_eq!(read_prediction(&json!({"status": "starting"})).unwrap(), Status::Running(Some(0)));
        let logs = "Using seed: 1\n 25%|██▌       | 1/4 [00:00<00:01]\n 75%|███████▌  | 3/4";
        assert_eq!(read_prediction(&json!({"status": "processing", "logs": logs})).unwrap(), Status::Running(Some(75)));
        let nsfw = json!({"status": "failed", "error": "All generated images contained NSFW content. Try running it again with a different prompt."});
        assert!(matches!(read_prediction(&nsfw), Err(ProviderError::ContentViolation(_))));
        assert!(matches!(
            read_prediction(&json!({"status": "failed", "error": "CUDA OOM"})),
            Err(ProviderError::Permanent(_))
        ));
        assert!(matches!(read_prediction(&json!({"status": "aborted"})), Err(ProviderError::Permanent(_))));
    }

    #[test]
    fn no_credit_fails_over_but_a_bad_token_does_not() {
        let h = HeaderMap::new();
        let problem = json!({"title": "Insufficient credit", "detail": "Add a payment method", "status": 402});
        assert!(matches!(
            map_error(StatusCode::PAYMENT_REQUIRED, &h, &problem.to_string()),
            ProviderError::Retryable { .. }
        ));
        let problem = json!({"title": "Unauthenticated", "detail": "Invalid token", "status": 401});
        match map_error(StatusCode::UNAUTHORIZED, &h, &problem.to_string()) {
            ProviderError::Permanent(m) => assert!(m.contains("Invalid token"), "{m}"),
            other => panic!("{other:?}"),
        }
    }
}
