//! The built-in renderer as a provider: no network, real images. [`render`] draws the pixels,
//! media encodes them in the task's format, so there is nothing for the worker to convert.

pub mod render;

use std::time::Duration;

use futures::FutureExt;
use futures::future::BoxFuture;

use super::{GeneratedImage, Job, Provider, ProviderError};
use crate::catalog::TaskSpec;
use crate::config::LocalOptions;
use crate::media::{self, Fit};

pub struct LocalProvider {
    options: LocalOptions,
}

/// How many progress reports the configured latency is cut into.
const PROGRESS_STEPS: u32 = 10;
/// OpenAI's most `partial_images`.
const MAX_PREVIEWS: u32 = 3;

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

    async fn run(&self, job: Job<'_>) -> Result<Vec<GeneratedImage>, ProviderError> {
        let (spec, media, references) = (job.spec, job.media, job.references);
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
        let decoded = std::sync::Arc::new(decoded);
        // Streaming clients see the first image sharpen: previews of it, coarse to fine.
        let previews = spec.partial_images.min(MAX_PREVIEWS);
        let first = if previews > 0 {
            let (spec, refs) = (spec.clone(), decoded.clone());
            let render = move || render::render(&spec.prompt, spec.size, 0, spec.sequential, &refs);
            Some(
                tokio::task::spawn_blocking(render)
                    .await
                    .map_err(|e| ProviderError::Permanent(format!("renderer crashed: {e}")))?,
            )
        } else {
            None
        };
        // The configured latency passes in steps, each reported as progress, as a diffusion
        // model's sampling steps would be; the previews fall evenly between them.
        let step = self.latency(spec) / PROGRESS_STEPS;
        let mut shown = 0;
        for done in 1..=PROGRESS_STEPS {
            tokio::time::sleep(step).await;
            job.checkpoint.progress(done * 100 / PROGRESS_STEPS);
            if let Some(first) = &first
                && shown < previews
                && done >= (shown + 1) * PROGRESS_STEPS / (previews + 1)
            {
                let frame = render::preview(first, shown, previews);
                let format = spec.output_format;
                let bytes = media::encode(&image::DynamicImage::ImageRgb8(frame), format)
                    .map_err(|e| ProviderError::Permanent(format!("encoding failed: {e}")))?;
                let image =
                    GeneratedImage { bytes, format: media::image_format(format), size: Some(spec.size), quality: None };
                job.checkpoint.partial_image(shown, image).await;
                shown += 1;
            }
        }
        let count = if spec.sequential { render::series_length(&spec.prompt, spec.images) } else { spec.images };
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
        self.run(job).boxed()
    }
}
