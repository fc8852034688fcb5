//! The built-in renderer as a provider: no network, real images. [`render`] draws the pixels,
//! media encodes them in the task's format, so there is nothing for the worker to convert.

pub mod render;

use std::time::Duration;

use futures::FutureExt;
use futures::future::BoxFuture;

use super::{GeneratedImage, Job, Provider, ProviderError, Reference};
use crate::catalog::TaskSpec;
use crate::config::LocalOptions;
use crate::media::{self, Fit, Media};

pub struct LocalProvider {
    options: LocalOptions,
}

/// The pixel count the configured latency refers to (2K square).
const LATENCY_REFERENCE_PIXELS: f64 = 2048.0 * 2048.0;

impl LocalProvider {
    pub fn new(options: LocalOptions) -> Self {
        Self { options }
    }

    fn latency(&self, spec: &TaskSpec) -> Duration {
        let scale = spec.size.pixels() as f64 / LATENCY_REFERENCE_PIXELS;
        Duration::from_millis((self.options.latency_ms as f64 * scale) as u64)
    }

    async fn run(
        &self,
        spec: &TaskSpec,
        media: &Media,
        references: &[Reference],
    ) -> Result<Vec<GeneratedImage>, ProviderError> {
        // Each reference only ever fills its cell of the picture: keep no more of it than that.
        let (width, height) = render::reference_cell(spec.size, references.len());
        let mut decoded = Vec::with_capacity(references.len());
        for (index, r) in references.iter().enumerate() {
            let fit = Fit::Cover { width, height };
            let image = media
                .decode(r.bytes.clone(), r.format, fit, |image| Ok(image.into_rgb8()))
                .await
                .map_err(|e| ProviderError::InvalidReference { index, reason: e.to_string() })?;
            decoded.push(image);
        }
        tokio::time::sleep(self.latency(spec)).await;
        let count = if spec.sequential { render::series_length(&spec.prompt, spec.images) } else { spec.images };
        let decoded = std::sync::Arc::new(decoded);
        let jobs = (0..count).map(|index| {
            let (spec, refs) = (spec.clone(), decoded.clone());
            tokio::task::spawn_blocking(move || {
                let img = render::render(&spec.prompt, spec.size, index, spec.sequential, &refs);
                let format = spec.output_format;
                media::encode(&image::DynamicImage::ImageRgb8(img), format).map(|bytes| GeneratedImage {
                    bytes,
                    format: media::image_format(format),
                    size: Some(spec.size),
                    // The local renderer has one quality; it reports what was asked.
                    quality: spec.quality.filter(|q| *q != crate::catalog::Quality::Auto),
                })
            })
        });
        let mut images = Vec::with_capacity(count as usize);
        for job in futures::future::join_all(jobs).await {
            let encoded = job.map_err(|e| ProviderError::Permanent(format!("renderer crashed: {e}")))?;
            images.push(encoded.map_err(|e| ProviderError::Permanent(format!("encoding failed: {e}")))?);
        }
        Ok(images)
    }
}

impl Provider for LocalProvider {
    fn generate<'a>(&'a self, job: Job<'a>) -> BoxFuture<'a, Result<Vec<GeneratedImage>, ProviderError>> {
        self.run(job.spec, job.media, job.references).boxed()
    }
}
