//! Upstream providers behind one trait. A provider turns a canonical task into encoded images or
//! a typed failure; fetching references, storing results and billing happen around it.

pub mod local;

use futures::future::BoxFuture;
use image::RgbImage;

use crate::catalog::{OutputFormat, TaskSpec};

/// A reference image the worker already fetched and checked.
#[derive(Debug, Clone)]
pub struct Reference {
    pub bytes: Vec<u8>,
    pub format: image::ImageFormat,
}

impl Reference {
    pub fn decode(&self) -> anyhow::Result<RgbImage> {
        Ok(image::load_from_memory_with_format(&self.bytes, self.format)?.to_rgb8())
    }
}

#[derive(Debug, Clone)]
pub struct GeneratedImage {
    pub bytes: Vec<u8>,
    pub format: OutputFormat,
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum ProviderError {
    #[error("{0}")]
    ContentViolation(String),
    #[error("reference image {index}: {reason}")]
    InvalidReference { index: usize, reason: String },
    /// Worth trying again, here or on another channel.
    #[error("{0}")]
    Retryable(String),
    #[error("{0}")]
    Permanent(String),
}

pub trait Provider: Send + Sync {
    /// Generates the task's images. Fewer than requested is a partial success.
    fn generate<'a>(
        &'a self,
        spec: &'a TaskSpec,
        references: &'a [Reference],
    ) -> BoxFuture<'a, Result<Vec<GeneratedImage>, ProviderError>>;
}
