//! Every image Easel reads or writes goes through here: sniffing the format of bytes, decoding
//! within limits, converting between formats and encoding ([`encode`]).
//!
//! Decoding images Easel did not make (references, masks, upstreams' results) must not let one
//! of them take the process's memory. A 480 kB PNG can declare 13000×13000 pixels, so:
//!
//! - [`Media::probe`] reads only the header and refuses an image over `[media] max_pixels` or
//!   whose decoded buffer would pass `[media] max_alloc_bytes`, before any pixel is decoded;
//! - every decode holds a share of one process-wide budget (`[media] decode_budget_bytes`),
//!   weighted by its estimated memory, so many workers decoding at once queue instead of
//!   adding up; a decode needing more than the whole budget fails at once instead of waiting
//!   for ever;
//! - decoding and the work on the pixels run on the blocking pool, and the result is scaled to
//!   what its consumer needs ([`Fit`]) while the budget is held, so only the small copy lives on.

mod encode;

use std::io::Cursor;
use std::sync::Arc;

use image::{DynamicImage, ImageDecoder, ImageFormat, ImageReader, Limits};
use tokio::sync::Semaphore;

use crate::catalog::OutputFormat;
use crate::config::MediaConfig;
pub use encode::{encode, image_format};

/// The budget is counted in KiB so that a `u32` of permits covers terabytes.
const UNIT: u64 = 1024;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MediaError {
    #[error("is {width}×{height} pixels; at most {max} pixels are accepted")]
    TooManyPixels { width: u32, height: u32, max: u64 },
    #[error("would take {} MB to decode; at most {} MB are allowed per image", mb(*.needed), mb(*.max))]
    TooLarge { needed: u64, max: u64 },
    #[error("would take {} MB to decode, more than this server decodes at once ({} MB)", mb(*.needed), mb(*.budget))]
    OverBudget { needed: u64, budget: u64 },
    #[error("cannot be decoded: {0}")]
    Undecodable(String),
}

fn mb(bytes: u64) -> u64 {
    bytes.div_ceil(1 << 20)
}

/// What a header says, before any pixel is decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub width: u32,
    pub height: u32,
    /// The decoder's output buffer (width × height × bytes per pixel).
    pub decoded_bytes: u64,
    pub has_alpha: bool,
}

impl Header {
    pub fn longest_side(&self) -> u32 {
        self.width.max(self.height)
    }
}

/// The size a decoded image is brought to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fit {
    /// As it is.
    Original,
    /// Scaled down, keeping its aspect ratio, until its longest side is at most this.
    Within(u32),
    /// Scaled down, keeping its aspect ratio, until it just covers `width × height` (for
    /// cropping into a cell); never scaled up.
    Cover { width: u32, height: u32 },
    /// Exactly this size (a mask must match its image's dimensions).
    Exact { width: u32, height: u32 },
}

impl Fit {
    /// The size an image of `width × height` ends up at.
    pub fn target(self, width: u32, height: u32) -> (u32, u32) {
        let scaled = |scale: f64| {
            (((f64::from(width) * scale).round() as u32).max(1), ((f64::from(height) * scale).round() as u32).max(1))
        };
        match self {
            Fit::Original => (width, height),
            Fit::Within(side) if width.max(height) > side => scaled(f64::from(side) / f64::from(width.max(height))),
            Fit::Within(_) => (width, height),
            Fit::Cover { width: w, height: h } => {
                let scale = (f64::from(w) / f64::from(width)).max(f64::from(h) / f64::from(height));
                if scale < 1.0 { scaled(scale) } else { (width, height) }
            }
            Fit::Exact { width, height } => (width, height),
        }
    }
}

/// The decode limits and the shared budget; cheap to clone, one per process.
#[derive(Clone, Debug)]
pub struct Media {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    config: MediaConfig,
    budget: Arc<Semaphore>,
    budget_units: u64,
}

impl Media {
    pub fn new(config: &MediaConfig) -> Self {
        let budget_units = (config.decode_budget_bytes / UNIT).min(Semaphore::MAX_PERMITS as u64);
        let inner =
            Inner { config: config.clone(), budget: Arc::new(Semaphore::new(budget_units as usize)), budget_units };
        Self { inner: Arc::new(inner) }
    }

    fn limits(&self) -> Limits {
        let config = &self.inner.config;
        let side = u32::try_from(config.max_pixels).unwrap_or(u32::MAX);
        let mut limits = Limits::default();
        limits.max_image_width = Some(side);
        limits.max_image_height = Some(side);
        limits.max_alloc = Some(config.max_alloc_bytes);
        limits
    }

    /// Reads the header of `bytes` and checks it against the limits; decodes no pixel.
    pub fn probe(&self, bytes: &[u8], format: ImageFormat) -> Result<Header, MediaError> {
        let mut reader = ImageReader::with_format(Cursor::new(bytes), format);
        reader.limits(self.limits());
        let decoder = reader.into_decoder().map_err(|e| self.refusal(e))?;
        let (width, height) = decoder.dimensions();
        let header =
            Header { width, height, decoded_bytes: decoder.total_bytes(), has_alpha: decoder.color_type().has_alpha() };
        let config = &self.inner.config;
        if u64::from(width) * u64::from(height) > config.max_pixels {
            return Err(MediaError::TooManyPixels { width, height, max: config.max_pixels });
        }
        if header.decoded_bytes > config.max_alloc_bytes {
            return Err(MediaError::TooLarge { needed: header.decoded_bytes, max: config.max_alloc_bytes });
        }
        Ok(header)
    }

    /// Decodes `bytes`, brings the image to `fit` and hands it to `then`, all on the blocking
    /// pool and under a share of the decode budget.
    pub async fn decode<T, F>(&self, bytes: Vec<u8>, format: ImageFormat, fit: Fit, then: F) -> Result<T, MediaError>
    where
        T: Send + 'static,
        F: FnOnce(DynamicImage) -> anyhow::Result<T> + Send + 'static,
    {
        let header = self.probe(&bytes, format)?;
        let (width, height) = fit.target(header.width, header.height);
        // The decoder's buffer, the scaled copy (at most RGBA8 or RGB16) and the bytes' own copy.
        let needed = header.decoded_bytes + u64::from(width) * u64::from(height) * 8 + bytes.len() as u64;
        let units = needed.div_ceil(UNIT);
        if units > self.inner.budget_units {
            return Err(MediaError::OverBudget { needed, budget: self.inner.config.decode_budget_bytes });
        }
        let permit = self.inner.budget.clone().acquire_many_owned(units as u32).await.expect("the budget stays open");
        let limits = self.limits();
        let work = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            let mut reader = ImageReader::with_format(Cursor::new(&bytes), format);
            reader.limits(limits);
            let image = reader.decode().map_err(|e| MediaError::Undecodable(e.to_string()))?;
            let image = resize(image, fit, (width, height));
            then(image).map_err(|e| MediaError::Undecodable(format!("{e:#}")))
        });
        work.await.map_err(|e| MediaError::Undecodable(format!("the decoder crashed: {e}")))?
    }

    /// `bytes`, which are in `format`, as `wanted`: as they are when already in it, otherwise
    /// decoded once (within the limits) and encoded.
    pub async fn convert(
        &self,
        bytes: Vec<u8>,
        format: ImageFormat,
        wanted: OutputFormat,
    ) -> Result<Vec<u8>, MediaError> {
        if format == image_format(wanted) {
            return Ok(bytes);
        }
        self.decode(bytes, format, Fit::Original, move |image| encode(&image, wanted)).await
    }

    /// The thumbnail of a result in `format`: lossless WebP, its longest side at most
    /// [`THUMBNAIL_SIDE`] (never scaled up), the aspect ratio kept; decoded within the limits
    /// and the budget, scaled while decoding.
    pub async fn thumbnail(&self, bytes: Vec<u8>, format: ImageFormat) -> Result<Vec<u8>, MediaError> {
        // WebP: every browser shows it and `image` encodes it without a C library.
        self.decode(bytes, format, Fit::Within(THUMBNAIL_SIDE), |image| encode(&image, OutputFormat::Webp)).await
    }

    /// Memory the budget has free right now, for tests and metrics.
    pub fn budget_available_bytes(&self) -> u64 {
        self.inner.budget.available_permits() as u64 * UNIT
    }

    fn refusal(&self, e: image::ImageError) -> MediaError {
        match e {
            image::ImageError::Limits(_) => MediaError::TooLarge {
                needed: self.inner.config.max_alloc_bytes.saturating_add(1),
                max: self.inner.config.max_alloc_bytes,
            },
            other => MediaError::Undecodable(other.to_string()),
        }
    }
}

/// The longest side of a result's thumbnail, in pixels.
pub const THUMBNAIL_SIDE: u32 = 256;

/// The format of `bytes` by their first bytes, whatever a name or a `Content-Type` said: one
/// of the four Easel accepts (JPEG, PNG, WebP, GIF), or `None`.
pub fn sniff(bytes: &[u8]) -> Option<ImageFormat> {
    use ImageFormat::*;
    image::guess_format(bytes).ok().filter(|f| matches!(f, Jpeg | Png | WebP | Gif))
}

fn resize(image: DynamicImage, fit: Fit, (width, height): (u32, u32)) -> DynamicImage {
    if (width, height) == (image.width(), image.height()) {
        return image;
    }
    match fit {
        // Area averaging: fast, and good enough for references a model looks at.
        Fit::Within(_) | Fit::Cover { .. } => image.thumbnail_exact(width, height),
        Fit::Exact { .. } => image.resize_exact(width, height, image::imageops::FilterType::Triangle),
        Fit::Original => image,
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A PNG declaring `width × height` pixels of zeros in very few bytes: the IDAT is one
    /// deflate stream of zero rows, written a row at a time.
    pub fn png_bomb(width: u32, height: u32) -> Vec<u8> {
        let mut out = Vec::new();
        let mut encoder = png::Encoder::new(&mut out, width, height);
        encoder.set_color(png::ColorType::Grayscale);
        encoder.set_depth(png::BitDepth::Eight);
        encoder.set_compression(png::Compression::Fast);
        let mut writer = encoder.write_header().unwrap();
        let mut stream = writer.stream_writer().unwrap();
        let row = vec![0u8; width as usize];
        for _ in 0..height {
            std::io::Write::write_all(&mut stream, &row).unwrap();
        }
        stream.finish().unwrap();
        drop(writer);
        out
    }

    fn png(width: u32, height: u32) -> Vec<u8> {
        let mut out = Cursor::new(Vec::new());
        image::RgbImage::new(width, height).write_to(&mut out, ImageFormat::Png).unwrap();
        out.into_inner()
    }

    fn encoded(width: u32, height: u32, format: ImageFormat) -> Vec<u8> {
        let mut out = Cursor::new(Vec::new());
        image::RgbImage::from_fn(width, height, |x, y| image::Rgb([x as u8, y as u8, 90]))
            .write_to(&mut out, format)
            .unwrap();
        out.into_inner()
    }

    fn media(max_pixels: u64, max_alloc_bytes: u64, decode_budget_bytes: u64) -> Media {
        Media::new(&MediaConfig { max_pixels, max_alloc_bytes, decode_budget_bytes })
    }

    #[test]
    fn probe_reads_the_header_only() {
        let m = media(100, 1 << 20, 1 << 20);
        assert_eq!(
            m.probe(&png(10, 10), ImageFormat::Png),
            Ok(Header { width: 10, height: 10, decoded_bytes: 300, has_alpha: false })
        );
        assert_eq!(
            m.probe(&png(11, 10), ImageFormat::Png),
            Err(MediaError::TooManyPixels { width: 11, height: 10, max: 100 })
        );
    }

    #[test]
    fn a_bomb_is_refused_from_its_header() {
        let bomb = png_bomb(13_000, 13_000);
        assert!(bomb.len() < 1 << 20, "the bomb is {} bytes", bomb.len());
        let m = Media::new(&MediaConfig::default());
        match m.probe(&bomb, ImageFormat::Png) {
            Err(MediaError::TooManyPixels { width: 13_000, height: 13_000, .. }) => {}
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn the_allocation_limit_applies_within_the_pixel_limit() {
        // 1000×1000 RGB is 3 MB of pixels: within 2 M pixels, over a 2 MB allocation.
        let m = media(2_000_000, 2 << 20, 1 << 30);
        assert_eq!(
            m.probe(&png(1000, 1000), ImageFormat::Png),
            Err(MediaError::TooLarge { needed: 3_000_000, max: 2 << 20 })
        );
    }

    #[tokio::test]
    async fn a_decode_larger_than_the_whole_budget_fails_at_once() {
        let m = media(1 << 30, 1 << 30, 64 << 10);
        let got = m.decode(png(200, 200), ImageFormat::Png, Fit::Original, |_| Ok(())).await;
        assert!(matches!(got, Err(MediaError::OverBudget { .. })), "{got:?}");
        assert_eq!(m.budget_available_bytes(), 64 << 10);
    }

    #[tokio::test]
    async fn decodes_share_the_budget_and_give_it_back() {
        let m = media(1 << 30, 1 << 30, 1 << 20);
        let (held_tx, held_rx) = std::sync::mpsc::channel();
        let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
        let first = {
            let m = m.clone();
            tokio::spawn(async move {
                m.decode(png(300, 300), ImageFormat::Png, Fit::Original, move |_| {
                    held_tx.send(()).unwrap();
                    go_rx.recv().unwrap();
                    Ok(())
                })
                .await
            })
        };
        tokio::task::spawn_blocking(move || held_rx.recv().unwrap()).await.unwrap();
        let held = (1 << 20) - m.budget_available_bytes();
        assert!(held >= 300 * 300 * 3, "a decode holds at least its pixels: {held}");
        // A second decode of the same size does not fit beside the first, so it waits.
        let second = m.decode(png(300, 300), ImageFormat::Png, Fit::Original, |_| Ok(()));
        tokio::pin!(second);
        assert!(tokio::time::timeout(std::time::Duration::from_millis(100), &mut second).await.is_err());
        go_tx.send(()).unwrap();
        first.await.unwrap().unwrap();
        second.await.unwrap();
        assert_eq!(m.budget_available_bytes(), 1 << 20);
    }

    #[tokio::test]
    async fn images_are_brought_to_their_fit() {
        let m = Media::new(&MediaConfig::default());
        let size = |fit| {
            let m = m.clone();
            async move { m.decode(png(400, 200), ImageFormat::Png, fit, |i| Ok((i.width(), i.height()))).await.unwrap() }
        };
        assert_eq!(size(Fit::Original).await, (400, 200));
        assert_eq!(size(Fit::Within(100)).await, (100, 50));
        assert_eq!(size(Fit::Within(1000)).await, (400, 200));
        assert_eq!(size(Fit::Cover { width: 50, height: 50 }).await, (100, 50));
        assert_eq!(size(Fit::Cover { width: 800, height: 800 }).await, (400, 200));
        assert_eq!(size(Fit::Exact { width: 30, height: 70 }).await, (30, 70));
    }

    #[test]
    fn sniffs_only_the_four_formats() {
        assert_eq!(sniff(b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR"), Some(ImageFormat::Png));
        assert_eq!(sniff(&encoded(4, 4, ImageFormat::Jpeg)), Some(ImageFormat::Jpeg));
        assert_eq!(sniff(&encoded(4, 4, ImageFormat::WebP)), Some(ImageFormat::WebP));
        assert_eq!(sniff(&encoded(4, 4, ImageFormat::Gif)), Some(ImageFormat::Gif));
        assert_eq!(sniff(b"<html>not an image</html>"), None);
        assert_eq!(sniff(b"BM\0\0\0\0"), None);
    }

    #[tokio::test]
    async fn converting_to_the_same_format_keeps_the_bytes() {
        // Nothing is decoded, so not even the pixel limit applies.
        let m = media(100, 1 << 20, 1 << 20);
        let png = encoded(30, 20, ImageFormat::Png);
        assert_eq!(m.convert(png.clone(), ImageFormat::Png, OutputFormat::Png).await.unwrap(), png);
        assert!(m.convert(png, ImageFormat::Png, OutputFormat::Jpeg).await.is_err());
    }

    #[tokio::test]
    async fn conversions_decode_once_within_the_limits() {
        let m = Media::new(&MediaConfig::default());
        for (from, to) in [
            (ImageFormat::Png, OutputFormat::Jpeg),
            (ImageFormat::Png, OutputFormat::Webp),
            (ImageFormat::WebP, OutputFormat::Png),
            (ImageFormat::Gif, OutputFormat::Jpeg),
            (ImageFormat::Jpeg, OutputFormat::Webp),
        ] {
            let got = m.convert(encoded(30, 20, from), from, to).await.unwrap();
            assert_eq!(sniff(&got), Some(image_format(to)), "{from:?} to {to:?}");
            let back = image::load_from_memory(&got).unwrap();
            assert_eq!((back.width(), back.height()), (30, 20), "{from:?} to {to:?}");
        }
        let small = media(100, 1 << 20, 1 << 20);
        let big = small.convert(encoded(11, 10, ImageFormat::Png), ImageFormat::Png, OutputFormat::Webp).await;
        assert!(matches!(big, Err(MediaError::TooManyPixels { width: 11, height: 10, .. })), "{big:?}");
    }

    #[tokio::test]
    async fn a_thumbnail_is_a_small_webp_of_the_same_aspect() {
        let m = Media::new(&MediaConfig::default());
        let size = |bytes: &[u8]| {
            assert_eq!(sniff(bytes), Some(ImageFormat::WebP));
            let thumb = image::load_from_memory(bytes).unwrap();
            (thumb.width(), thumb.height())
        };
        let png = m.thumbnail(encoded(600, 300, ImageFormat::Png), ImageFormat::Png).await.unwrap();
        assert_eq!(size(&png), (256, 128));
        let portrait = m.thumbnail(encoded(300, 900, ImageFormat::Jpeg), ImageFormat::Jpeg).await.unwrap();
        assert_eq!(size(&portrait), (85, 256));
        // Never scaled up.
        let tiny = m.thumbnail(encoded(40, 90, ImageFormat::Jpeg), ImageFormat::Jpeg).await.unwrap();
        assert_eq!(size(&tiny), (40, 90));
        // Over the decode limits there is none, and the budget is whole again.
        let strict = media(100, 1 << 20, 1 << 20);
        let big = strict.thumbnail(encoded(11, 10, ImageFormat::Png), ImageFormat::Png).await;
        assert!(matches!(big, Err(MediaError::TooManyPixels { .. })), "{big:?}");
        assert_eq!(strict.budget_available_bytes(), 1 << 20);
    }

    #[tokio::test]
    async fn a_webp_conversion_round_trips() {
        let m = Media::new(&MediaConfig::default());
        let png = encoded(50, 40, ImageFormat::Png);
        let webp = m.convert(png.clone(), ImageFormat::Png, OutputFormat::Webp).await.unwrap();
        assert_eq!((&webp[..4], &webp[8..12]), (&b"RIFF"[..], &b"WEBP"[..]));
        assert_eq!(sniff(&webp), Some(ImageFormat::WebP));
        let back = m.convert(webp, ImageFormat::WebP, OutputFormat::Png).await.unwrap();
        let (a, b) = (image::load_from_memory(&png).unwrap(), image::load_from_memory(&back).unwrap());
        assert_eq!((b.width(), b.height()), (50, 40));
        assert_eq!(a.to_rgb8(), b.to_rgb8(), "lossless both ways");
    }
}
