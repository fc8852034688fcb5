//! What the HTTP providers share: the channel's endpoint and secret key, one client, result
//! downloads, and the mapping of transport failures and HTTP statuses to [`ProviderError`].

use std::fmt;
use std::time::Duration;

use anyhow::Context;
use futures::StreamExt;
use reqwest::StatusCode;
use reqwest::header::{HeaderMap, RETRY_AFTER};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;

use super::{GeneratedImage, ProviderError, Reference};
use crate::catalog::OutputFormat;
use crate::config::ChannelConfig;

/// An upstream API key: never printed, never logged.
#[derive(Clone)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: String) -> Self {
        Self(value)
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(…)")
    }
}

/// Largest result image accepted from an upstream.
pub const MAX_RESULT_BYTES: usize = 50 * 1024 * 1024;

/// A channel's endpoint: base URL, key and the HTTP client to reach it.
#[derive(Clone, Debug)]
pub struct Upstream {
    pub base_url: String,
    pub api_key: Secret,
    pub http: reqwest::Client,
}

impl Upstream {
    /// Reads the channel's `base_url` and the key from the environment variable it names.
    pub fn from_channel(c: &ChannelConfig, default_base: Option<&str>) -> anyhow::Result<Self> {
        let base_url = c
            .base_url
            .clone()
            .or_else(|| default_base.map(str::to_owned))
            .with_context(|| format!("channel {:?} needs a base_url", c.id))?;
        let key = channel_key(c)?.with_context(|| format!("channel {:?} needs api_key_env", c.id))?;
        Self::with_key(c, base_url, key)
    }

    /// A self-hosted backend's endpoint, whose key (basic auth, a proxy's token) is optional:
    /// `None` when the channel names none.
    pub fn self_hosted(c: &ChannelConfig) -> anyhow::Result<(Self, Option<Secret>)> {
        let base_url = c.base_url.clone().with_context(|| format!("channel {:?} needs a base_url", c.id))?;
        let key = channel_key(c)?;
        let upstream = Self::with_key(c, base_url, key.clone().unwrap_or_default())?;
        Ok((upstream, key.map(Secret::new)))
    }

    fn with_key(c: &ChannelConfig, base_url: String, key: String) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(c.timeout_secs.unwrap_or(300)))
            .user_agent(concat!("easel/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Self { base_url: base_url.trim_end_matches('/').to_owned(), api_key: Secret::new(key), http })
    }

    /// `{base_url}/{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("{}/{}", self.base_url, path.trim_start_matches('/'))
    }

    /// Downloads a result image the upstream hosts, up to [`MAX_RESULT_BYTES`].
    pub async fn download(&self, url: &str) -> Result<Vec<u8>, ProviderError> {
        self.fetch(self.http.get(url)).await
    }

    /// Downloads what `request` answers (with whatever auth it carries), up to [`MAX_RESULT_BYTES`].
    pub async fn fetch(&self, request: reqwest::RequestBuilder) -> Result<Vec<u8>, ProviderError> {
        let response = request.send().await.map_err(transport_error)?;
        if !response.status().is_success() {
            return Err(ProviderError::retryable(format!("downloading a result answered HTTP {}", response.status())));
        }
        let mut body = Vec::new();
        let mut stream = response.bytes_stream();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(transport_error)?;
            if body.len() + chunk.len() > MAX_RESULT_BYTES {
                return Err(ProviderError::Permanent("a result image is larger than 50 MB".into()));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    }
}

/// Longest upstream message kept on a task.
const MAX_MESSAGE: usize = 300;

/// An upstream's message cut to a length a task can carry.
pub fn clip(s: &str) -> String {
    if s.chars().count() <= MAX_MESSAGE {
        s.to_owned()
    } else {
        s.chars().take(MAX_MESSAGE).collect::<String>() + "…"
    }
}

/// The format to ask of an upstream that renders JPEG or PNG only (BFL, fal): the task's, or
/// PNG for a WebP task (the worker converts it, losslessly from PNG).
pub fn jpeg_or_png(format: OutputFormat) -> &'static str {
    match format {
        OutputFormat::Jpeg => "jpeg",
        OutputFormat::Png | OutputFormat::Webp => "png",
    }
}

/// The MIME type of a reference's format.
pub fn mime_of(format: image::ImageFormat) -> &'static str {
    match format {
        image::ImageFormat::Png => "image/png",
        image::ImageFormat::WebP => "image/webp",
        image::ImageFormat::Gif => "image/gif",
        _ => "image/jpeg",
    }
}

/// A reference as a `data:` URI, for upstreams that take images inline in JSON.
pub fn data_uri(r: &Reference) -> String {
    format!("data:{};base64,{}", mime_of(r.format), BASE64.encode(&r.bytes))
}

/// A base64 image an upstream returned, with its real format.
pub fn decoded_image(b64: &str, upstream: &str) -> Result<GeneratedImage, ProviderError> {
    let bytes = BASE64
        .decode(b64.trim())
        .map_err(|_| ProviderError::Permanent(format!("{upstream} returned invalid base64")))?;
    GeneratedImage::sniffed(bytes)
        .ok_or_else(|| ProviderError::Permanent(format!("{upstream} returned something that is not an image")))
}

/// The key a channel names: from the environment variable `api_key_env` (preferred), else
/// `api_key`; `None` when it names neither.
fn channel_key(c: &ChannelConfig) -> anyhow::Result<Option<String>> {
    match (&c.api_key_env, &c.api_key) {
        (Some(var), _) => std::env::var(var)
            .map(Some)
            .with_context(|| format!("channel {:?}: the environment variable {var} is not set", c.id)),
        (None, key) => Ok(key.clone()),
    }
}

/// How a provider reads an upstream's failed answer: its status, headers and body.
pub type ErrorReader = fn(StatusCode, &HeaderMap, &str) -> ProviderError;

/// Sends `request` and returns the body of a successful answer; a failed one is read by
/// `read_error`, and a connection failure or timeout is retryable.
pub async fn send(request: reqwest::RequestBuilder, read_error: ErrorReader) -> Result<String, ProviderError> {
    let response = request.send().await.map_err(transport_error)?;
    let (status, headers) = (response.status(), response.headers().clone());
    let text = response.text().await.map_err(transport_error)?;
    if !status.is_success() {
        return Err(read_error(status, &headers, &text));
    }
    Ok(text)
}

/// A body as JSON; `null` when it is not JSON (the caller then finds none of its fields).
pub fn json_of(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or(serde_json::Value::Null)
}

/// Whether an upstream's URL is one Easel may call back (an absolute http(s) URL).
pub fn is_http(url: &str) -> bool {
    url.starts_with("https://") || url.starts_with("http://")
}

/// Sends an upstream's cancel and logs its answer; whatever it says, the task stays cancelled.
pub async fn cancel_call(request: reqwest::RequestBuilder, upstream: &str) {
    match request.send().await {
        Ok(response) => {
            let status = response.status();
            let text = response.text().await.unwrap_or_default();
            tracing::info!(%status, answer = %clip(&text), "{upstream} answered the cancel");
        }
        Err(e) => tracing::warn!(error = %transport_error(e), "cancelling at {upstream} failed"),
    }
}

/// Connection failures and timeouts are worth another try, here or elsewhere.
pub fn transport_error(e: reqwest::Error) -> ProviderError {
    ProviderError::retryable(format!("the upstream request failed: {}", crate::transport::classify(&e)))
}

/// The `Retry-After` an upstream sent, in seconds.
pub fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    seconds(headers.get(RETRY_AFTER)?.to_str().ok()?)
}

/// A wait an upstream wrote in seconds (`"2"`, `"1.5"`); `None` when it is no such number.
pub fn seconds(value: &str) -> Option<Duration> {
    value.trim().parse::<f64>().ok().filter(|s| s.is_finite() && *s >= 0.0).map(Duration::from_secs_f64)
}

/// The generic reading of an HTTP status: 408, 409, 429 and 5xx are retryable, other 4xx are
/// permanent. Providers map their content-policy codes before falling back to this.
pub fn status_error(status: StatusCode, headers: &HeaderMap, message: String) -> ProviderError {
    if status == StatusCode::TOO_MANY_REQUESTS
        || status == StatusCode::REQUEST_TIMEOUT
        || status == StatusCode::CONFLICT
        || status.is_server_error()
    {
        ProviderError::Retryable { message: format!("HTTP {status}: {message}"), retry_after: retry_after(headers) }
    } else {
        ProviderError::Permanent(format!("HTTP {status}: {message}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_do_not_print() {
        let s = Secret::new("sk-live-123".into());
        assert_eq!(format!("{s:?}"), "Secret(…)");
        let up = Upstream { base_url: "http://u".into(), api_key: s, http: reqwest::Client::new() };
        assert!(!format!("{up:?}").contains("sk-live"));
    }

    #[test]
    fn statuses_map_to_retryable_or_permanent() {
        let mut h = HeaderMap::new();
        h.insert(RETRY_AFTER, "2".parse().unwrap());
        match status_error(StatusCode::TOO_MANY_REQUESTS, &h, "slow down".into()) {
            ProviderError::Retryable { retry_after, .. } => assert_eq!(retry_after, Some(Duration::from_secs(2))),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            status_error(StatusCode::BAD_GATEWAY, &HeaderMap::new(), "x".into()),
            ProviderError::Retryable { .. }
        ));
        assert!(matches!(
            status_error(StatusCode::BAD_REQUEST, &HeaderMap::new(), "x".into()),
            ProviderError::Permanent(_)
        ));
    }
}
