//! Pixels to bytes, in the formats Easel delivers. JPEG goes through `jpeg-encoder` (faster than
//! `image`'s), PNG at fast compression (results are large and made often), WebP lossless (the
//! only WebP encoder `image` has).

use std::borrow::Cow;

use image::codecs::png::{CompressionType, FilterType, PngEncoder};
use image::codecs::webp::WebPEncoder;
use image::{DynamicImage, ImageEncoder, ImageFormat};

use crate::catalog::OutputFormat;

/// JPEG quality: indistinguishable from the upstreams' own results at a fraction of PNG's size.
const JPEG_QUALITY: u8 = 90;

/// The `image` format an output format is.
pub fn image_format(format: OutputFormat) -> ImageFormat {
    match format {
        OutputFormat::Jpeg => ImageFormat::Jpeg,
        OutputFormat::Png => ImageFormat::Png,
        OutputFormat::Webp => ImageFormat::WebP,
    }
}

/// Encodes `image` as `format`. PNG and WebP keep its alpha; JPEG has none and drops it.
pub fn encode(image: &DynamicImage, format: OutputFormat) -> anyhow::Result<Vec<u8>> {
    let mut out = Vec::with_capacity(image.as_bytes().len() / 8);
    match format {
        OutputFormat::Jpeg => {
            let (width, height) = (u16::try_from(image.width())?, u16::try_from(image.height())?);
            let (pixels, color) = match image {
                DynamicImage::ImageLuma8(i) => (Cow::Borrowed(i.as_raw()), jpeg_encoder::ColorType::Luma),
                DynamicImage::ImageRgb8(i) => (Cow::Borrowed(i.as_raw()), jpeg_encoder::ColorType::Rgb),
                other => (Cow::Owned(other.to_rgb8().into_raw()), jpeg_encoder::ColorType::Rgb),
            };
            jpeg_encoder::Encoder::new(&mut out, JPEG_QUALITY).encode(&pixels, width, height, color)?;
        }
        OutputFormat::Png => {
            let image = eight_bit(image);
            PngEncoder::new_with_quality(&mut out, CompressionType::Fast, FilterType::Adaptive).write_image(
                image.as_bytes(),
                image.width(),
                image.height(),
                image.color().into(),
            )?;
        }
        OutputFormat::Webp => {
            let image = eight_bit(image);
            WebPEncoder::new_lossless(&mut out).write_image(
                image.as_bytes(),
                image.width(),
                image.height(),
                image.color().into(),
            )?;
        }
    }
    Ok(out)
}

/// The image in a colour type both PNG and WebP encoders take (8 bits, grey or RGB, alpha where
/// it has any); already one, it is not copied.
fn eight_bit(image: &DynamicImage) -> Cow<'_, DynamicImage> {
    match image {
        DynamicImage::ImageLuma8(_)
        | DynamicImage::ImageLumaA8(_)
        | DynamicImage::ImageRgb8(_)
        | DynamicImage::ImageRgba8(_) => Cow::Borrowed(image),
        other if other.color().has_alpha() => Cow::Owned(DynamicImage::ImageRgba8(other.to_rgba8())),
        other => Cow::Owned(DynamicImage::ImageRgb8(other.to_rgb8())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::sniff;

    /// A gradient, so that the encoders have something to compress.
    fn gradient(width: u32, height: u32) -> DynamicImage {
        DynamicImage::ImageRgb8(image::RgbImage::from_fn(width, height, |x, y| {
            image::Rgb([(x * 4) as u8, (y * 4) as u8, ((x + y) * 2) as u8])
        }))
    }

    #[test]
    fn each_format_encodes_as_itself() {
        let img = gradient(64, 48);
        for format in [OutputFormat::Jpeg, OutputFormat::Png, OutputFormat::Webp] {
            let bytes = encode(&img, format).unwrap();
            assert_eq!(sniff(&bytes), Some(image_format(format)), "{format:?}");
            let back = image::load_from_memory_with_format(&bytes, image_format(format)).unwrap();
            assert_eq!((back.width(), back.height()), (64, 48), "{format:?}");
        }
    }

    #[test]
    fn webp_is_lossless_and_keeps_alpha() {
        let rgb = gradient(40, 30);
        let webp = encode(&rgb, OutputFormat::Webp).unwrap();
        assert_eq!(&webp[..4], b"RIFF");
        assert_eq!(&webp[8..12], b"WEBP");
        let back = image::load_from_memory_with_format(&webp, ImageFormat::WebP).unwrap();
        assert_eq!(back.to_rgb8(), rgb.to_rgb8(), "the pixels survive exactly");

        let mut rgba = rgb.to_rgba8();
        rgba.get_pixel_mut(3, 4).0[3] = 0;
        let back =
            image::load_from_memory(&encode(&DynamicImage::ImageRgba8(rgba.clone()), OutputFormat::Webp).unwrap())
                .unwrap();
        assert_eq!(back.to_rgba8(), rgba);
    }

    #[test]
    fn png_keeps_alpha_and_jpeg_drops_it() {
        let mut rgba = gradient(16, 16).to_rgba8();
        rgba.get_pixel_mut(0, 0).0[3] = 10;
        let rgba = DynamicImage::ImageRgba8(rgba);
        let png = image::load_from_memory(&encode(&rgba, OutputFormat::Png).unwrap()).unwrap();
        assert_eq!(png.to_rgba8().get_pixel(0, 0).0[3], 10);
        let jpeg = image::load_from_memory(&encode(&rgba, OutputFormat::Jpeg).unwrap()).unwrap();
        assert!(!jpeg.color().has_alpha());
    }

    #[test]
    fn sixteen_bit_images_are_brought_to_eight() {
        let deep = DynamicImage::ImageRgb16(image::ImageBuffer::from_pixel(8, 8, image::Rgb([65535u16, 0, 0])));
        for format in [OutputFormat::Png, OutputFormat::Webp, OutputFormat::Jpeg] {
            let back = image::load_from_memory(&encode(&deep, format).unwrap()).unwrap().to_rgb8();
            let [r, g, b] = back.get_pixel(4, 4).0;
            assert!(r > 240 && g < 15 && b < 15, "{format:?}: {r} {g} {b}");
        }
    }
}
