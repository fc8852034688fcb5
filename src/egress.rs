//! The HTTP client for user-supplied URLs (reference images). Bounded in time and size, no
//! proxy from the environment, few redirects, and image formats sniffed from the bytes.

use std::time::Duration;

use futures::StreamExt;

use crate::providers::Reference;

/// Largest reference image accepted.
pub const MAX_IMAGE_BYTES: usize = 10 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("could not be fetched: {0}")]
    Unreachable(String),
    #[error("answered HTTP {0}")]
    Status(u16),
    #[error("is larger than {} MB", MAX_IMAGE_BYTES / 1024 / 1024)]
    TooLarge,
    #[error("is not a JPEG, PNG, WebP or GIF image")]
    NotAnImage,
}

#[derive(Clone)]
pub struct Egress {
    client: reqwest::Client,
}

impl Egress {
    pub fn new() -> anyhow::Result<Self> {
        let client = reqwest::Client::builder()
            .no_proxy()
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(30))
            .redirect(reqwest::redirect::Policy::limited(3))
            .user_agent(concat!("easel/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Self { client })
    }

    pub async fn fetch_image(&self, url: &str) -> Result<Reference, FetchError> {
        let unreachable = |e: reqwest::Error| FetchError::Unreachable(describe(&e));
        let response = self.client.get(url).send().await.map_err(unreachable)?;
        if !response.status().is_success() {
            return Err(FetchError::Status(response.status().as_u16()));
        }
        if response.content_length().is_some_and(|n| n > MAX_IMAGE_BYTES as u64) {
            return Err(FetchError::TooLarge);
        }
        let mut body = Vec::new();
        let mut stream = response.bytes_stream();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(unreachable)?;
            if body.len() + chunk.len() > MAX_IMAGE_BYTES {
                return Err(FetchError::TooLarge);
            }
            body.extend_from_slice(&chunk);
        }
        let format = sniff(&body).ok_or(FetchError::NotAnImage)?;
        Ok(Reference { bytes: body, format })
    }
}

/// The image format from the first bytes; the server's Content-Type is not trusted.
pub fn sniff(bytes: &[u8]) -> Option<image::ImageFormat> {
    use image::ImageFormat::*;
    image::guess_format(bytes).ok().filter(|f| matches!(f, Jpeg | Png | WebP | Gif))
}

/// reqwest's error chain, flattened: its top-level text alone hides the cause (DNS, refused…).
fn describe(e: &reqwest::Error) -> String {
    let mut text = if e.is_timeout() { "timed out".to_owned() } else { e.to_string() };
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        text = format!("{text}: {s}");
        source = s.source();
    }
    text
}

impl Egress {
    /// POSTs a body and answers the receiver's status. Redirects are not followed.
    pub async fn post_json(
        &self,
        url: &str,
        headers: &[(String, String)],
        body: Vec<u8>,
        timeout: Duration,
    ) -> Result<u16, FetchError> {
        let mut request = self.client.post(url).timeout(timeout).body(body);
        for (name, value) in headers {
            request = request.header(name, value);
        }
        let response = request.send().await.map_err(|e| FetchError::Unreachable(describe(&e)))?;
        Ok(response.status().as_u16())
    }
}
