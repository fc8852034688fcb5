//! Seedream 5.0's APIXO input (seeds 000 and 001).

use serde_json::Value;

use super::fields::{Checked, Fields, invalid, prompt, url_list};
use super::size::{ASPECT_RATIOS, Resolution, parse_explicit, seedream_preset};
use super::{OutputFormat, TaskSpec};

const MAX_PROMPT: usize = 5000;
const MAX_REFERENCES: usize = 14;
/// One upstream request may carry at most 15 images in and out together (Ark's limit).
const MAX_IMAGES_IN_AND_OUT: usize = 15;

pub fn parse_input(model: &str, input: &Value) -> Checked<TaskSpec> {
    let f = Fields::of("input", input)?;
    let mode = f.choice("mode", &["text-to-image", "image-to-image"], None)?;
    let prompt = prompt(&f, MAX_PROMPT)?;
    let images = f
        .int_in("max_images", 1, 10)?
        .ok_or_else(|| super::ValidationError("input.max_images is required (an integer from 1 to 10)".into()))?
        as u32;
    let resolution = f.choice("resolution", &["2K", "3K"], Some("2K"))?;
    let aspect_ratio = f.choice("aspect_ratio", &ASPECT_RATIOS, Some("1:1"))?;
    let size = match f.str("size")? {
        // `size` wins over resolution and aspect ratio.
        Some(raw) => match Resolution::parse(raw.trim()) {
            Some(tier) => seedream_preset(tier, aspect_ratio),
            None => Some(parse_explicit("input.size", raw)?),
        },
        None => seedream_preset(Resolution::parse(resolution).expect("checked above"), aspect_ratio),
    }
    .expect("aspect ratios come from the preset table");
    let sequential = f.choice("sequential_image_generation", &["disabled", "auto"], Some("disabled"))? == "auto";
    let web_search = f.bool("web_search")?.unwrap_or(false);
    let output_format = match f.choice("output_format", &["jpeg", "png"], Some("jpeg"))? {
        "png" => OutputFormat::Png,
        _ => OutputFormat::Jpeg,
    };
    f.choice("prompt_optimize_mode", &["standard"], Some("standard"))?;

    let references = match mode {
        "image-to-image" => url_list(&f, "image_urls", 1, MAX_REFERENCES)?,
        _ => {
            if f.str_list("image_urls")?.is_some_and(|l| !l.is_empty()) {
                return invalid("input.image_urls is only allowed with input.mode image-to-image");
            }
            Vec::new()
        }
    };
    if sequential && references.len() + images as usize > MAX_IMAGES_IN_AND_OUT {
        return invalid(format!(
            "with sequential_image_generation auto, input.image_urls and input.max_images together must not exceed \
             {MAX_IMAGES_IN_AND_OUT} images (got {} + {images})",
            references.len()
        ));
    }
    Ok(TaskSpec {
        model: model.to_owned(),
        prompt,
        images,
        size,
        output_format,
        references,
        sequential,
        web_search,
        mask: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::Size;
    use serde_json::json;

    fn parse(input: Value) -> Checked<TaskSpec> {
        parse_input("seedream-5-0", &input)
    }

    #[test]
    fn defaults_to_2k_square_jpeg() {
        let spec = parse(json!({"mode": "text-to-image", "prompt": "p", "max_images": 1})).unwrap();
        assert_eq!(spec.size, Size::new(2048, 2048));
        assert_eq!(spec.output_format, OutputFormat::Jpeg);
        assert!(!spec.sequential);
    }

    #[test]
    fn size_wins_over_resolution_and_ratio() {
        let spec = parse(json!({"mode": "text-to-image", "prompt": "p", "max_images": 1,
            "resolution": "2K", "aspect_ratio": "16:9", "size": "3072X3072"}))
        .unwrap();
        assert_eq!(spec.size, Size::new(3072, 3072));
        let spec = parse(json!({"mode": "text-to-image", "prompt": "p", "max_images": 1,
            "resolution": "2K", "aspect_ratio": "16:9", "size": "3K"}))
        .unwrap();
        assert_eq!(spec.size, Size::new(4096, 2304));
    }

    #[test]
    fn image_urls_follow_the_mode() {
        let err = parse(json!({"mode": "image-to-image", "prompt": "p", "max_images": 1})).unwrap_err();
        assert_eq!(err.0, "input.image_urls must hold 1 to 14 URLs (got 0)");
        let err = parse(json!({"mode": "text-to-image", "prompt": "p", "max_images": 1,
            "image_urls": ["https://ref.invalid/a.jpg"]}))
        .unwrap_err();
        assert!(err.0.contains("only allowed"));
    }
}
