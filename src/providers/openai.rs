//! GPT image models on the OpenAI Images API: `images/generations` (JSON) without references,
//! `images/edits` (multipart, one `image[]` part per reference) with them. Results come back
//! base64-encoded; `response_format` is never sent (GPT image models reject it).

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use futures::FutureExt;
use futures::future::BoxFuture;
use reqwest::multipart::{Form, Part};
use serde::Deserialize;
use serde_json::json;

use image::ImageFormat;

use super::upstream::{Upstream, clip, status_error, transport_error};
use super::{GeneratedImage, Job, Provider, ProviderError, Reference};
use crate::catalog::{Family, OutputFormat, Quality, Size};
use crate::media::{self, Fit, Media, MediaError};
use crate::sse_reader::{Frame, SseReader};

pub const DEFAULT_BASE_URL: &str = "https://api.openai.com/v1";

/// The families an OpenAI channel serves.
pub const FAMILIES: &[Family] = &[Family::GptImage];

pub struct OpenAiProvider {
    upstream: Upstream,
}

#[derive(Debug, Default, Deserialize)]
struct ImagesResponse {
    #[serde(default)]
    data: Vec<ImageItem>,
    /// What the images were rendered at, for their price (`auto` requests learn it here).
    #[serde(default)]
    size: Option<String>,
    #[serde(default)]
    quality: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
struct ImageItem {
    #[serde(default)]
    b64_json: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
struct ErrorBody {
    error: ApiError,
}

#[derive(Debug, Default, Deserialize)]
struct ApiError {
    #[serde(default)]
    message: Option<String>,
    #[serde(default)]
    code: Option<String>,
    #[serde(default, rename = "type")]
    kind: Option<String>,
}

/// GPT image models work on references no larger than this on their longest side (they scale
/// bigger ones down themselves), so a bigger one is scaled down here rather than uploaded whole.
const MAX_REFERENCE_SIDE: u32 = 2048;

/// A reference as an `image[]` part, with the size it is sent at. PNG, JPEG and WebP within
/// [`MAX_REFERENCE_SIDE`] go as they are (nothing decoded); a larger one is scaled down (JPEG
/// stays JPEG, anything else becomes PNG, keeping its alpha), and GIF becomes PNG.
async fn image_part(media: &Media, index: usize, r: &Reference) -> Result<(Part, (u32, u32)), ProviderError> {
    let invalid = |e: MediaError| ProviderError::InvalidReference { index, reason: e.to_string() };
    let header = media.probe(&r.bytes, r.format).map_err(invalid)?;
    let accepted = matches!(r.format, ImageFormat::Png | ImageFormat::Jpeg | ImageFormat::WebP);
    let (bytes, ext, mime, size) = if accepted && header.longest_side() <= MAX_REFERENCE_SIDE {
        let (ext, mime) = match r.format {
            ImageFormat::Png => ("png", "image/png"),
            ImageFormat::Jpeg => ("jpg", "image/jpeg"),
            _ => ("webp", "image/webp"),
        };
        (r.bytes.clone(), ext, mime, (header.width, header.height))
    } else {
        let jpeg = r.format == ImageFormat::Jpeg;
        let format = if jpeg { OutputFormat::Jpeg } else { OutputFormat::Png };
        let encode =
            move |image: image::DynamicImage| Ok((media::encode(&image, format)?, (image.width(), image.height())));
        let (bytes, size) =
            media.decode(r.bytes.clone(), r.format, Fit::Within(MAX_REFERENCE_SIDE), encode).await.map_err(invalid)?;
        let (ext, mime) = if jpeg { ("jpg", "image/jpeg") } else { ("png", "image/png") };
        (bytes, ext, mime, size)
    };
    let part = Part::bytes(bytes)
        .file_name(format!("reference-{index}.{ext}"))
        .mime_str(mime)
        .map_err(|e| ProviderError::Permanent(format!("building the upload failed: {e}")))?;
    Ok((part, size))
}

/// The mask as a PNG part: OpenAI wants a PNG with an alpha channel the size of the first
/// image, so one in another format is converted (keeping its alpha, where it has any), and
/// one whose image was scaled down is scaled to match.
async fn mask_part(media: &Media, mask: &Reference, image_size: (u32, u32)) -> Result<Part, ProviderError> {
    let bad = |e: String| ProviderError::Permanent(format!("the mask could not be read: {e}"));
    let header = media.probe(&mask.bytes, mask.format).map_err(|e| bad(e.to_string()))?;
    let png = if mask.format == ImageFormat::Png && (header.width, header.height) == image_size {
        mask.bytes.clone()
    } else {
        let fit = if (header.width, header.height) == image_size {
            Fit::Original
        } else {
            Fit::Exact { width: image_size.0, height: image_size.1 }
        };
        let to_png = |image: image::DynamicImage| {
            media::encode(&image::DynamicImage::ImageRgba8(image.into_rgba8()), OutputFormat::Png)
        };
        media.decode(mask.bytes.clone(), mask.format, fit, to_png).await.map_err(|e| bad(e.to_string()))?
    };
    Part::bytes(png).file_name("mask.png").mime_str("image/png").map_err(|e| bad(e.to_string()))
}

fn map_error(status: reqwest::StatusCode, headers: &reqwest::header::HeaderMap, text: &str) -> ProviderError {
    let parsed: Option<ErrorBody> = serde_json::from_str(text).ok();
    let (code, message) = match &parsed {
        Some(b) => (
            b.error.code.clone().unwrap_or_default(),
            clip(&format!(
                "{}{}",
                b.error.code.as_deref().or(b.error.kind.as_deref()).map(|c| format!("{c}: ")).unwrap_or_default(),
                b.error.message.as_deref().unwrap_or("no message")
            )),
        ),
        None => (String::new(), clip(text.trim())),
    };
    if code == "moderation_blocked" || code == "content_policy_violation" {
        return ProviderError::ContentViolation(message);
    }
    status_error(status, headers, format!("OpenAI: {message}"))
}

impl OpenAiProvider {
    pub fn new(upstream: Upstream) -> Self {
        Self { upstream }
    }

    async fn call(&self, job: &Job<'_>) -> Result<Vec<GeneratedImage>, ProviderError> {
        let spec = job.spec;
        let n = spec.images.clamp(1, 10);
        let size = spec.size.to_string();
        // GPT image models make all three of Easel's formats.
        let format = spec.output_format.extension();
        let quality = spec.quality.unwrap_or(Quality::Auto).as_str();
        let background = if spec.transparent_background { "transparent" } else { "auto" };
        // Previews are asked for only when the client streams; the upstream then streams too.
        let partials = spec.partial_images.min(3);
        let request = if job.references.is_empty() {
            let mut body = json!({
                "model": job.upstream_model,
                "prompt": spec.prompt,
                "n": n,
                "size": size,
                "quality": quality,
                "background": background,
                "output_format": format,
            });
            if partials > 0 {
                body["stream"] = json!(true);
                body["partial_images"] = json!(partials);
            }
            self.upstream.http.post(self.upstream.url("images/generations")).json(&body)
        } else {
            let mut form = Form::new()
                .text("model", job.upstream_model.to_owned())
                .text("prompt", spec.prompt.clone())
                .text("n", n.to_string())
                .text("size", size)
                .text("quality", quality)
                .text("background", background)
                .text("output_format", format);
            if partials > 0 {
                form = form.text("stream", "true").text("partial_images", partials.to_string());
            }
            let mut first_size = None;
            for (i, r) in job.references.iter().enumerate() {
                let (part, size) = image_part(job.media, i, r).await?;
                first_size.get_or_insert(size);
                form = form.part("image[]", part);
            }
            if let (Some(mask), Some(size)) = (job.mask, first_size) {
                form = form.part("mask", mask_part(job.media, mask, size).await?);
            }
            self.upstream.http.post(self.upstream.url("images/edits")).multipart(form)
        };
        let mut response = request.bearer_auth(self.upstream.api_key.expose()).send().await.map_err(transport_error)?;
        let status = response.status();
        let headers = response.headers().clone();
        if status.is_success() && partials > 0 {
            return streamed(&mut response, job).await;
        }
        let text = response.text().await.map_err(transport_error)?;
        if !status.is_success() {
            return Err(map_error(status, &headers, &text));
        }
        let parsed: ImagesResponse = serde_json::from_str(&text)
            .map_err(|_| ProviderError::retryable("OpenAI answered with a body that is not the expected JSON"))?;
        let mut images = Vec::with_capacity(parsed.data.len());
        for item in parsed.data {
            let Some(b64) = item.b64_json else { continue };
            images.push(rendered(&b64, parsed.size.as_deref(), parsed.quality.as_deref())?);
        }
        Ok(images)
    }
}

/// An image OpenAI returned (base64), with the size and quality it says it rendered at.
fn rendered(b64: &str, size: Option<&str>, quality: Option<&str>) -> Result<GeneratedImage, ProviderError> {
    let bytes =
        BASE64.decode(b64.trim()).map_err(|_| ProviderError::Permanent("OpenAI returned invalid base64".into()))?;
    let image = GeneratedImage::sniffed(bytes)
        .ok_or_else(|| ProviderError::Permanent("OpenAI returned a result that is not an image".into()))?;
    Ok(GeneratedImage {
        size: size.and_then(|s| s.parse::<Size>().ok()),
        quality: quality.and_then(Quality::parse).filter(|q| *q != Quality::Auto),
        ..image
    })
}

/// Reads OpenAI's image event stream: each preview goes to the task's checkpoint as it comes,
/// each `….completed` event is an image, and an `error` event fails the call as an error
/// answer would.
async fn streamed(response: &mut reqwest::Response, job: &Job<'_>) -> Result<Vec<GeneratedImage>, ProviderError> {
    let mut reader = SseReader::default();
    let mut images = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(transport_error)? {
        for frame in reader.push(&chunk) {
            let Frame::Event { data, .. } = frame else { continue };
            let event: serde_json::Value = serde_json::from_str(&data)
                .map_err(|_| ProviderError::retryable("OpenAI streamed an event that is not JSON"))?;
            let kind = event["type"].as_str().unwrap_or_default();
            let b64 = event["b64_json"].as_str();
            if kind == "error" || event.get("error").is_some() {
                let status = reqwest::StatusCode::BAD_REQUEST;
                return Err(map_error(status, &reqwest::header::HeaderMap::new(), &event.to_string()));
            } else if kind.ends_with(".partial_image")
                && let (Some(b64), Some(index)) = (b64, event["partial_image_index"].as_u64())
            {
                // A preview that is not an image is the upstream's loss, not the task's.
                if let Ok(image) = rendered(b64, None, None) {
                    job.checkpoint.partial_image(index as u32, image).await;
                }
            } else if kind.ends_with(".completed")
                && let Some(b64) = b64
            {
                images.push(rendered(b64, event["size"].as_str(), event["quality"].as_str())?);
            }
        }
    }
    Ok(images)
}

impl Provider for OpenAiProvider {
    fn generate<'a>(&'a self, job: Job<'a>) -> BoxFuture<'a, Result<Vec<GeneratedImage>, ProviderError>> {
        async move { self.call(&job).await }.boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::StatusCode;
    use reqwest::header::HeaderMap;

    #[test]
    fn errors_map_to_verdicts() {
        let h = HeaderMap::new();
        let blocked = r#"{"error":{"message":"Your request was rejected by the safety system.","type":"image_generation_user_error","param":null,"code":"moderation_blocked"}}"#;
        assert!(matches!(map_error(StatusCode::BAD_REQUEST, &h, blocked), ProviderError::ContentViolation(_)));
        let old = r#"{"error":{"message":"x","type":"invalid_request_error","param":null,"code":"content_policy_violation"}}"#;
        assert!(matches!(map_error(StatusCode::BAD_REQUEST, &h, old), ProviderError::ContentViolation(_)));
        let bad = r#"{"error":{"message":"Unknown parameter: 'response_format'.","type":"invalid_request_error","param":"response_format","code":"unknown_parameter"}}"#;
        assert!(matches!(map_error(StatusCode::BAD_REQUEST, &h, bad), ProviderError::Permanent(_)));
        assert!(matches!(map_error(StatusCode::UNAUTHORIZED, &h, "{}"), ProviderError::Permanent(_)));
        let mut h429 = HeaderMap::new();
        h429.insert(reqwest::header::RETRY_AFTER, "2".parse().unwrap());
        match map_error(
            StatusCode::TOO_MANY_REQUESTS,
            &h429,
            r#"{"error":{"message":"slow","type":"requests","code":"rate_limit_exceeded"}}"#,
        ) {
            ProviderError::Retryable { retry_after, .. } => {
                assert_eq!(retry_after, Some(std::time::Duration::from_secs(2)))
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(map_error(StatusCode::SERVICE_UNAVAILABLE, &h, "oops"), ProviderError::Retryable { .. }));
    }
}
