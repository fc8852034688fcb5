//! Seedream: the APIXO input of seeds 000 and 001, the size fields of seed 003, and Seedream's
//! size tiers (seed 001's preset table at 2K and 3K; 4K computed at the pixel limit).

use serde_json::Value;

use crate::catalog::fields::{Checked, Fields, ValidationError, invalid, prompt, url_list};
use crate::catalog::size::{SEEDREAM_PRESETS, SizeBounds, four_k};
use crate::catalog::{Capability, Model, Size, TaskSpec};

/// The widest sizes Seedream renders: 1280×720 to 4096×4096 pixels, ratios up to 16:1.
pub const BOUNDS: SizeBounds = SizeBounds {
    min: Size::new(1280, 720),
    max: Size::new(4096, 4096),
    max_ratio: 16,
    multiple_of: None,
    max_side: None,
};

/// Tiers by the most pixels a size of theirs has (the widest preset of each).
pub const TIERS: [(&str, u64); 3] = [("2K", 2848 * 1600), ("3K", 4704 * 2016), ("4K", 4096 * 4096)];

/// One upstream request may carry at most 15 images in and out together (Ark's limit).
const MAX_IMAGES_IN_AND_OUT: usize = 15;

pub fn tier_size(tier: &str, aspect_ratio: &str) -> Option<Size> {
    let preset = SEEDREAM_PRESETS.iter().find(|(ratio, ..)| *ratio == aspect_ratio);
    match tier {
        "2K" => preset.map(|(_, two_k, _)| *two_k),
        "3K" => preset.map(|(_, _, three_k)| *three_k),
        "4K" => four_k(aspect_ratio, BOUNDS.max.pixels()),
        _ => None,
    }
}

pub fn parse_apixo_input(model: &Model, input: &Value) -> Checked<TaskSpec> {
    let f = Fields::of("input", input)?;
    let mode = f.choice("mode", &["text-to-image", "image-to-image"], None)?;
    let prompt = prompt(&f, model.limits.max_prompt_chars)?;
    let max = i64::from(model.limits.max_images);
    let images = f
        .int_in("max_images", 1, max)?
        .ok_or_else(|| ValidationError(format!("input.max_images is required (an integer from 1 to {max})")))?
        as u32;
    let tiers = model.sizes.tier_names();
    let resolution = f.choice("resolution", &tiers, model.sizes.default_tier.as_deref())?;
    let ratios = model.sizes.ratio_names();
    let aspect_ratio = f.choice("aspect_ratio", &ratios, Some(&model.sizes.default_aspect_ratio))?;
    let size = match f.str("size")? {
        // `size` wins over resolution and aspect ratio.
        Some(raw) => super::tiered::tier_or_explicit(model, "input.size", raw.trim(), aspect_ratio)?,
        None => tier_size(resolution, aspect_ratio).expect("catalog ratios and tiers have sizes"),
    };
    let series = if model.can(Capability::Sequential) { &["disabled", "auto"][..] } else { &["disabled"][..] };
    let sequential = f.choice("sequential_image_generation", series, Some("disabled"))? == "auto";
    let web_search = f.bool("web_search")?.unwrap_or(false);
    if web_search && !model.can(Capability::WebSearch) {
        return invalid(format!("input.web_search is not supported by {}", model.id));
    }
    let output_format = model.format_field(&f, "output_format")?;
    f.choice("prompt_optimize_mode", &["standard"], Some("standard"))?;

    let references = match mode {
        "image-to-image" => url_list(&f, "image_urls", 1, model.limits.max_references)?,
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
    Ok(TaskSpec { sequential, web_search, ..TaskSpec::new(model, prompt, images, size, output_format, references) })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::{Catalog, OutputFormat};
    use serde_json::json;

    fn parse(input: Value) -> Checked<TaskSpec> {
        let catalog = Catalog::builtin();
        let model = catalog.get("seedream-5-0").unwrap();
        parse_apixo_input(model, &input)
    }

    #[test]
    fn presets_follow_seed_001() {
        assert_eq!(tier_size("2K", "16:9"), Some(Size::new(2848, 1600)));
        assert_eq!(tier_size("3K", "21:9"), Some(Size::new(4704, 2016)));
        assert_eq!(tier_size("2K", "5:4"), None);
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

    #[test]
    fn the_tiers_pixel_ceilings_hold_their_presets() {
        for (ratio, two_k, three_k) in SEEDREAM_PRESETS {
            assert_eq!(crate::catalog::Family::Seedream.tier_of(two_k), Some("2K"), "{ratio}");
            assert_eq!(crate::catalog::Family::Seedream.tier_of(three_k), Some("3K"), "{ratio}");
            let four = tier_size("4K", ratio).unwrap();
            assert_eq!(crate::catalog::Family::Seedream.tier_of(four), Some("4K"), "{ratio}");
        }
    }
}
