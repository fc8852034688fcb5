//! Google's Gemini API (docs/PROVIDERS.md §1-2), one channel kind for two request shapes told
//! apart by the model's family: Gemini image models through
//! `POST {base}/v1beta/models/{model}:generateContent` (one image per call, so a task of N
//! images sends N calls side by side), Imagen through `…:predict` (up to four per call).
//! Both are synchronous and authenticate with `x-goog-api-key`.

use futures::FutureExt;
use futures::future::BoxFuture;
use reqwest::StatusCode;
use reqwest::header::HeaderMap;
use serde_json::{Value, json};

use super::upstream::{Upstream, clip, decoded_image, mime_of, seconds, send, status_error};
use super::{GeneratedImage, Job, Provider, ProviderError};
use crate::catalog::Family;
use crate::catalog::family::tiered;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;

pub const DEFAULT_BASE_URL: &str = "https://generativelanguage.googleapis.com";

/// The families a `gemini` channel serves.
pub const FAMILIES: &[Family] = &[Family::GeminiImage, Family::Imagen];

/// The image size both APIs assume when none is named.
const DEFAULT_IMAGE_SIZE: &str = "1K";

/// Why Gemini stopped without an image that mean the content was refused.
const BLOCKING_FINISH_REASONS: [&str; 9] = [
    "SAFETY",
    "IMAGE_SAFETY",
    "PROHIBITED_CONTENT",
    "IMAGE_PROHIBITED_CONTENT",
    "BLOCKLIST",
    "SPII",
    "RECITATION",
    "IMAGE_RECITATION",
    "LANGUAGE",
];

pub struct GeminiProvider {
    upstream: Upstream,
}

impl GeminiProvider {
    pub fn new(upstream: Upstream) -> Self {
        Self { upstream }
    }

    async fn call(&self, model: &str, method: &str, body: &Value) -> Result<Value, ProviderError> {
        let request = self
            .upstream
            .http
            .post(self.upstream.url(&format!("v1beta/models/{model}:{method}")))
            .header("x-goog-api-key", self.upstream.api_key.expose())
            .json(body);
        let text = send(request, map_error).await?;
        serde_json::from_str(&text).map_err(|_| ProviderError::Permanent(format!("Gemini answered: {}", clip(&text))))
    }

    /// Gemini image models: one call per image, side by side; the images of the calls that
    /// delivered, or the first refusal when none did.
    async fn generate_content(&self, job: &Job<'_>) -> Result<Vec<GeneratedImage>, ProviderError> {
        let body = content_body(job);
        let calls = (0..job.spec.images).map(|_| self.call(job.upstream_model, "generateContent", &body));
        let mut images = Vec::new();
        let mut first_error = None;
        for answer in futures::future::join_all(calls).await {
            match answer.and_then(|v| content_image(&v)) {
                Ok(image) => images.push(image),
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        match (images.is_empty(), first_error) {
            (true, Some(e)) => Err(e),
            _ => Ok(images),
        }
    }

    async fn predict(&self, job: &Job<'_>) -> Result<Vec<GeneratedImage>, ProviderError> {
        let answer = self.call(job.upstream_model, "predict", &predict_body(job)).await?;
        predicted_images(&answer)
    }
}

impl Provider for GeminiProvider {
    fn generate<'a>(&'a self, job: Job<'a>) -> BoxFuture<'a, Result<Vec<GeneratedImage>, ProviderError>> {
        async move {
            match job.model.family {
                Family::Imagen => self.predict(&job).await,
                _ => self.generate_content(&job).await,
            }
        }
        .boxed()
    }
}

/// The tier and ratio the task's size comes from, as the APIs name them (`"2K"`, `"16:9"`).
fn size_names<'a>(job: &'a Job<'_>) -> (&'a str, String) {
    match tiered::tier_and_ratio(job.model, job.spec.size) {
        Some((tier, ratio)) => (tier, ratio.to_owned()),
        None => (DEFAULT_IMAGE_SIZE, job.spec.size.aspect_ratio()),
    }
}

/// `generateContent`'s body: the prompt and references as parts, asking for an image only.
fn content_body(job: &Job<'_>) -> Value {
    let mut parts = vec![json!({"text": job.spec.prompt})];
    for r in job.references {
        parts.push(json!({"inlineData": {"mimeType": mime_of(r.format), "data": BASE64.encode(&r.bytes)}}));
    }
    let (tier, ratio) = size_names(job);
    let mut image_config = json!({"aspectRatio": ratio});
    // 1K is the default, and the only size some models (2.5 Flash Image) take: named only when other.
    if tier != DEFAULT_IMAGE_SIZE {
        image_config["imageSize"] = json!(tier);
    }
    json!({
        "contents": [{"role": "user", "parts": parts}],
        "generationConfig": {"responseModalities": ["IMAGE"], "imageConfig": image_config},
    })
}

/// `predict`'s body for Imagen.
fn predict_body(job: &Job<'_>) -> Value {
    let (tier, ratio) = size_names(job);
    let mut parameters = json!({"sampleCount": job.spec.images, "aspectRatio": ratio, "includeRaiReason": true});
    if tier != DEFAULT_IMAGE_SIZE {
        parameters["sampleImageSize"] = json!(tier);
    }
    json!({"instances": [{"prompt": job.spec.prompt}], "parameters": parameters})
}

/// The image of a `generateContent` answer, or why there is none.
fn content_image(answer: &Value) -> Result<GeneratedImage, ProviderError> {
    if let Some(reason) = answer["promptFeedback"]["blockReason"].as_str() {
        let detail = answer["promptFeedback"]["blockReasonMessage"].as_str().unwrap_or_default();
        return Err(ProviderError::ContentViolation(clip(&format!("Gemini blocked the prompt ({reason}) {detail}"))));
    }
    let candidate = &answer["candidates"][0];
    let parts = candidate["content"]["parts"].as_array().map(Vec::as_slice).unwrap_or_default();
    // Thought parts are the model's drafts, not its answer.
    let image = parts.iter().filter(|p| p["thought"] != json!(true)).find_map(|p| p["inlineData"]["data"].as_str());
    if let Some(b64) = image {
        return decoded_image(b64, "Gemini");
    }
    let reason = candidate["finishReason"].as_str().unwrap_or("no candidate");
    let said = parts.iter().filter_map(|p| p["text"].as_str()).collect::<Vec<_>>().join(" ");
    let message = clip(format!("Gemini returned no image ({reason}) {said}").trim());
    if BLOCKING_FINISH_REASONS.contains(&reason) {
        Err(ProviderError::ContentViolation(message))
    } else {
        Err(ProviderError::Permanent(message))
    }
}

/// Imagen's images; filtered ones are left out of `predictions`, so none at all is a refusal.
fn predicted_images(answer: &Value) -> Result<Vec<GeneratedImage>, ProviderError> {
    let predictions = answer["predictions"].as_array().map(Vec::as_slice).unwrap_or_default();
    let mut images = Vec::new();
    let mut filtered = Vec::new();
    for p in predictions {
        match p["bytesBase64Encoded"].as_str() {
            Some(b64) => images.push(decoded_image(b64, "Imagen")?),
            None => filtered.extend(p["raiFilteredReason"].as_str().map(str::to_owned)),
        }
    }
    if images.is_empty() {
        let why = if filtered.is_empty() { "every image was filtered".to_owned() } else { filtered.join("; ") };
        return Err(ProviderError::ContentViolation(clip(&format!("Imagen returned no image: {why}"))));
    }
    Ok(images)
}

/// Google's error envelope `{"error":{"code","message","status","details"}}`: 429 and 5xx are
/// retryable, after the `Retry-After` header or the `RetryInfo` detail's `retryDelay`.
fn map_error(status: StatusCode, headers: &HeaderMap, text: &str) -> ProviderError {
    let body: Value = serde_json::from_str(text).unwrap_or(Value::Null);
    let error = &body["error"];
    let message = match (error["status"].as_str(), error["message"].as_str()) {
        (Some(s), Some(m)) => format!("{s}: {m}"),
        (_, Some(m)) => m.to_owned(),
        _ => text.chars().take(200).collect(),
    };
    match status_error(status, headers, clip(&message)) {
        ProviderError::Retryable { message, retry_after: None } => {
            ProviderError::Retryable { message, retry_after: retry_delay(error) }
        }
        other => other,
    }
}

/// `"58s"` or `"1.5s"` from a `google.rpc.RetryInfo` detail.
fn retry_delay(error: &Value) -> Option<std::time::Duration> {
    let details = error["details"].as_array()?;
    let info = details.iter().find(|d| d["@type"].as_str().is_some_and(|t| t.ends_with("google.rpc.RetryInfo")))?;
    seconds(info["retryDelay"].as_str()?.strip_suffix('s')?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_map_to_content_violations() {
        let blocked = json!({"promptFeedback": {"blockReason": "PROHIBITED_CONTENT"}});
        assert!(matches!(content_image(&blocked), Err(ProviderError::ContentViolation(_))));
        let unsafe_image = json!({"candidates": [{"finishReason": "IMAGE_SAFETY", "content": {"parts": []}}]});
        assert!(matches!(content_image(&unsafe_image), Err(ProviderError::ContentViolation(_))));
        let talk = json!({"candidates": [{"finishReason": "STOP", "content": {"parts": [{"text": "I can't"}]}}]});
        match content_image(&talk) {
            Err(ProviderError::Permanent(m)) => assert!(m.contains("I can't"), "{m}"),
            other => panic!("{other:?}"),
        }
        assert!(matches!(predicted_images(&json!({"predictions": []})), Err(ProviderError::ContentViolation(_))));
    }

    #[test]
    fn rate_limits_wait_as_long_as_retry_info_says() {
        let body = json!({"error": {"code": 429, "status": "RESOURCE_EXHAUSTED", "message": "quota",
            "details": [{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "7s"}]}});
        match map_error(StatusCode::TOO_MANY_REQUESTS, &HeaderMap::new(), &body.to_string()) {
            ProviderError::Retryable { retry_after, message } => {
                assert_eq!(retry_after, Some(std::time::Duration::from_secs(7)));
                assert!(message.contains("RESOURCE_EXHAUSTED"));
            }
            other => panic!("{other:?}"),
        }
        let auth = json!({"error": {"code": 403, "status": "PERMISSION_DENIED", "message": "bad key"}});
        assert!(matches!(
            map_error(StatusCode::FORBIDDEN, &HeaderMap::new(), &auth.to_string()),
            ProviderError::Permanent(_)
        ));
    }
}
