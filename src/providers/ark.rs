//! Seedream on BytePlus ModelArk / Volcengine Ark: `POST {base}/images/generations`, synchronous,
//! result URLs downloaded at once. References travel as data URIs of the bytes Easel already
//! fetched, so the upstream never reaches out to user URLs.

use std::borrow::Cow;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use futures::FutureExt;
use futures::future::BoxFuture;
use reqwest::StatusCode;
use reqwest::header::HeaderMap;
use serde::Deserialize;
use serde_json::{Value, json};

use super::upstream::{Upstream, clip, data_uri, retry_after, status_error, transport_error};
use super::{GeneratedImage, Job, Provider, ProviderError, Reference};
use crate::catalog::{Family, OutputFormat, Size};
use crate::media::{self, Fit, Media};

pub const DEFAULT_BASE_URL: &str = "https://ark.ap-southeast.bytepluses.com/api/v3";

/// The families an Ark channel serves.
pub const FAMILIES: &[Family] = &[Family::Seedream];

pub struct ArkProvider {
    upstream: Upstream,
}

#[derive(Debug, Default, Deserialize)]
struct ArkResponse {
    #[serde(default)]
    data: Vec<ArkItem>,
    #[serde(default)]
    error: Option<ArkError>,
    #[serde(default)]
    created: Option<i64>,
    #[serde(default)]
    created_at: Option<i64>,
    #[serde(default)]
    usage: Option<ArkUsage>,
}

#[derive(Debug, Default, Deserialize)]
struct ArkItem {
    #[serde(default)]
    url: Option<String>,
    #[serde(default)]
    b64_json: Option<String>,
    #[serde(default)]
    size: Option<String>,
    #[serde(default)]
    error: Option<ArkError>,
}

#[derive(Debug, Default, Clone, Deserialize)]
struct ArkError {
    #[serde(default)]
    code: Option<String>,
    #[serde(default)]
    message: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
struct ArkUsage {
    #[serde(default)]
    generated_images: Option<u64>,
}

/// The JSON body of one request; `sequential` asks for a series of up to `spec.images`.
fn request_body(job: &Job<'_>, references: &[Cow<'_, Reference>], sequential: bool) -> Value {
    let spec = job.spec;
    // Models that render more than one format are told which; the others (4.x: JPEG only) are
    // converted by the worker.
    let chooses_format = job.model.native_formats.len() > 1 && job.model.native_formats.contains(&spec.output_format);
    let mut body = json!({
        "model": job.upstream_model,
        "prompt": spec.prompt,
        "size": spec.size.to_string(),
        "response_format": "url",
        "watermark": false,
        "sequential_image_generation": if sequential { "auto" } else { "disabled" },
    });
    if sequential {
        body["sequential_image_generation_options"] = json!({ "max_images": spec.images });
    }
    match references {
        [] => {}
        [one] => body["image"] = Value::String(data_uri(one)),
        many => body["image"] = Value::Array(many.iter().map(|r| Value::String(data_uri(r))).collect()),
    }
    if chooses_format {
        body["output_format"] = Value::String(spec.output_format.extension().to_owned());
    }
    if spec.web_search {
        body["tools"] = json!([{ "type": "web_search" }]);
    }
    body
}

/// Maps an Ark error object (request-level, in an HTTP 200 body, or per image) to a verdict.
fn map_error(status: StatusCode, headers: &HeaderMap, error: &ArkError) -> ProviderError {
    let code = error.code.as_deref().unwrap_or("");
    let message = clip(&format!("{code}: {}", error.message.as_deref().unwrap_or("no message")));
    if code.contains("SensitiveContentDetected") {
        return ProviderError::ContentViolation(message);
    }
    if code.starts_with("RateLimitExceeded")
        || code.starts_with("ServerOverloaded")
        || code.starts_with("QuotaExceeded")
        || code.starts_with("InternalServiceError")
        || code.starts_with("ServiceUnavailable")
    {
        return ProviderError::Retryable { message: format!("Ark: {message}"), retry_after: retry_after(headers) };
    }
    if code.starts_with("InvalidParameter")
        || code.starts_with("MissingParameter")
        || code.starts_with("AuthenticationError")
        || code.starts_with("AccountOverdueError")
        || code.starts_with("AccessDenied")
        || code.starts_with("InvalidEndpoint")
        || code.starts_with("ModelNotOpen")
    {
        return ProviderError::Permanent(format!("Ark: {message}"));
    }
    if status.is_success() {
        // An unknown error code inside a 200: the request itself was answered with a refusal.
        ProviderError::Permanent(format!("Ark: {message}"))
    } else {
        status_error(status, headers, format!("Ark: {message}"))
    }
}

/// Ark takes references of at most 6000×6000 pixels in all; a larger one (within
/// `[media] max_pixels`) is scaled down to fit, the others go as they are, undecoded.
const MAX_REFERENCE_PIXELS: u64 = 6000 * 6000;

async fn fit_references<'a>(
    media: &Media,
    references: &'a [Reference],
) -> Result<Vec<Cow<'a, Reference>>, ProviderError> {
    let mut fitted = Vec::with_capacity(references.len());
    for (index, r) in references.iter().enumerate() {
        let invalid = |e: crate::media::MediaError| ProviderError::InvalidReference { index, reason: e.to_string() };
        let header = media.probe(&r.bytes, r.format).map_err(invalid)?;
        let pixels = u64::from(header.width) * u64::from(header.height);
        if pixels <= MAX_REFERENCE_PIXELS {
            fitted.push(Cow::Borrowed(r));
            continue;
        }
        let side = (f64::from(header.longest_side()) * (MAX_REFERENCE_PIXELS as f64 / pixels as f64).sqrt()) as u32;
        // JPEG stays JPEG; anything else becomes PNG, keeping its alpha.
        let format = if r.format == image::ImageFormat::Jpeg { OutputFormat::Jpeg } else { OutputFormat::Png };
        let encode = move |i: image::DynamicImage| media::encode(&i, format);
        let bytes = media.decode(r.bytes.clone(), r.format, Fit::Within(side), encode).await.map_err(invalid)?;
        fitted.push(Cow::Owned(Reference { bytes, format: media::image_format(format) }));
    }
    Ok(fitted)
}

impl ArkProvider {
    pub fn new(upstream: Upstream) -> Self {
        Self { upstream }
    }

    /// One `images/generations` call: the images it delivered (a partial batch is fine) or
    /// the reason it delivered none.
    async fn request(&self, body: &Value) -> Result<Vec<GeneratedImage>, ProviderError> {
        let response = self
            .upstream
            .http
            .post(self.upstream.url("images/generations"))
            .bearer_auth(self.upstream.api_key.expose())
            .json(body)
            .send()
            .await
            .map_err(transport_error)?;
        let status = response.status();
        let headers = response.headers().clone();
        let text = response.text().await.map_err(transport_error)?;
        let parsed: Option<ArkResponse> = serde_json::from_str(&text).ok();
        if let Some(error) = parsed.as_ref().and_then(|p| p.error.as_ref()) {
            return Err(map_error(status, &headers, error));
        }
        if !status.is_success() {
            return Err(status_error(status, &headers, format!("Ark: {}", clip(text.trim()))));
        }
        let Some(parsed) = parsed else {
            return Err(ProviderError::retryable("Ark answered with a body that is not JSON"));
        };
        tracing::debug!(
            created = parsed.created.or(parsed.created_at),
            generated = parsed.usage.as_ref().and_then(|u| u.generated_images),
            items = parsed.data.len(),
            "Ark answered"
        );
        let mut first_item_error = None;
        let mut fetches = Vec::new();
        for (i, item) in parsed.data.iter().enumerate() {
            if let Some(error) = &item.error {
                tracing::warn!(index = i, code = error.code.as_deref(), "Ark left one image of the batch out");
                first_item_error.get_or_insert_with(|| map_error(status, &headers, error));
                continue;
            }
            let fetch = match (&item.url, &item.b64_json) {
                (Some(url), _) => {
                    let url = url.clone();
                    async move { self.upstream.download(&url).await }.boxed()
                }
                (None, Some(b64)) => {
                    let decoded = BASE64
                        .decode(b64.trim())
                        .map_err(|_| ProviderError::Permanent("Ark returned invalid base64".into()));
                    async move { decoded }.boxed()
                }
                (None, None) => continue,
            };
            tracing::debug!(index = i, size = item.size.as_deref(), "Ark delivered an image");
            // The size Ark says it rendered prices the image.
            let size = item.size.as_deref().and_then(|s| s.parse::<Size>().ok());
            fetches.push(async move {
                let image = GeneratedImage::sniffed(fetch.await?)
                    .ok_or_else(|| ProviderError::Permanent("Ark returned a result that is not an image".into()))?;
                Ok(GeneratedImage { size, ..image })
            });
        }
        let mut images = Vec::new();
        let mut first_error = None;
        for result in futures::future::join_all(fetches).await {
            match result {
                Ok(image) => images.push(image),
                Err(e) => {
                    tracing::warn!(error = %e, "an Ark result could not be fetched");
                    first_error.get_or_insert(e);
                }
            }
        }
        match first_item_error.or(first_error) {
            Some(e) if images.is_empty() => Err(e),
            _ => Ok(images),
        }
    }
}

impl Provider for ArkProvider {
    fn generate<'a>(&'a self, job: Job<'a>) -> BoxFuture<'a, Result<Vec<GeneratedImage>, ProviderError>> {
        async move {
            let references = fit_references(job.media, job.references).await?;
            if job.spec.sequential || job.spec.images <= 1 {
                let body = request_body(&job, &references, job.spec.sequential);
                return self.request(&body).await;
            }
            // Sequential generation off: Ark makes one image per request, so ask N times at once.
            let body = request_body(&job, &references, false);
            let calls = (0..job.spec.images).map(|_| self.request(&body));
            let mut images = Vec::new();
            let mut first_error = None;
            for result in futures::future::join_all(calls).await {
                match result {
                    Ok(mut got) => images.append(&mut got),
                    Err(e) => {
                        first_error.get_or_insert(e);
                    }
                }
            }
            match first_error {
                Some(e) if images.is_empty() => Err(e),
                _ => Ok(images),
            }
        }
        .boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(code: &str) -> ArkError {
        ArkError { code: Some(code.into()), message: Some("m".into()) }
    }

    #[test]
    fn error_codes_map_to_verdicts() {
        let h = HeaderMap::new();
        let bad = StatusCode::BAD_REQUEST;
        for code in [
            "SensitiveContentDetected",
            "SensitiveContentDetected.SevereViolation",
            "InputTextSensitiveContentDetected",
            "InputImageSensitiveContentDetected",
            "OutputImageSensitiveContentDetected",
        ] {
            assert!(matches!(map_error(bad, &h, &err(code)), ProviderError::ContentViolation(_)), "{code}");
        }
        for code in ["InvalidParameter", "MissingParameter"] {
            assert!(matches!(map_error(bad, &h, &err(code)), ProviderError::Permanent(_)), "{code}");
        }
        let nf = map_error(StatusCode::NOT_FOUND, &h, &err("InvalidEndpointOrModel.NotFound"));
        assert!(matches!(nf, ProviderError::Permanent(_)));
        assert!(matches!(
            map_error(StatusCode::UNAUTHORIZED, &h, &err("AuthenticationError")),
            ProviderError::Permanent(_)
        ));
        let mut h429 = HeaderMap::new();
        h429.insert(reqwest::header::RETRY_AFTER, "3".parse().unwrap());
        match map_error(StatusCode::TOO_MANY_REQUESTS, &h429, &err("RateLimitExceeded.EndpointRPMExceeded")) {
            ProviderError::Retryable { retry_after, .. } => {
                assert_eq!(retry_after, Some(std::time::Duration::from_secs(3)))
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(map_error(StatusCode::OK, &h, &err("ServerOverloaded")), ProviderError::Retryable { .. }));
        assert!(matches!(
            map_error(StatusCode::BAD_GATEWAY, &h, &err("SomethingNew")),
            ProviderError::Retryable { .. }
        ));
    }

    #[test]
    fn response_accepts_created_at_and_item_errors() {
        let r: ArkResponse = serde_json::from_str(
            r#"{"model":"m","created_at":1,"data":[{"url":"http://x/a.png","size":"2048x2048"},
                {"error":{"code":"OutputImageSensitiveContentDetected","message":"no"}}],
                "usage":{"generated_images":1,"output_tokens":16384,"total_tokens":16384}}"#,
        )
        .unwrap();
        assert_eq!(r.created_at, Some(1));
        assert_eq!(r.data.len(), 2);
        assert!(r.data[1].error.is_some());
    }
}
