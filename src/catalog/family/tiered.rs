//! What the families whose sizes are tiers at aspect ratios share (Seedream, Gemini image
//! models, Imagen, FLUX): reading a tier and a ratio in each dialect, and finding them again
//! from a size for upstreams that take names rather than pixels.

use serde_json::Value;

use crate::catalog::fields::{Checked, Fields, ValidationError, invalid, prompt, url_list};
use crate::catalog::size::{parse_explicit, parse_wxh};
use crate::catalog::{Model, Size, TaskSpec};

/// The size a tier of `side`×`side` pixels has at `ratio`: the same pixel count, each side a
/// multiple of `multiple`. The vendors' own tables differ from it by a few pixels at most; the
/// image a model returns keeps its real size.
pub fn scaled(side: u32, ratio: &str, multiple: u32) -> Option<Size> {
    let (a, b) = ratio.split_once(':')?;
    let (a, b): (f64, f64) = (a.parse().ok()?, b.parse().ok()?);
    let pixels = f64::from(side) * f64::from(side);
    let m = f64::from(multiple);
    let round = |v: f64| ((v / m).round() * m) as u32;
    Some(Size::new(round((pixels * a / b).sqrt()), round((pixels * b / a).sqrt())))
}

/// Every size the model's tiers give at its ratios, with the tier and ratio that give it.
fn table(model: &Model) -> impl Iterator<Item = (&str, &str, Size)> {
    let sizes = &model.sizes;
    sizes.tiers.iter().flat_map(move |tier| {
        sizes.aspect_ratios.iter().filter_map(move |ratio| {
            model.family.tier_size(tier, ratio).map(|size| (tier.as_str(), ratio.as_str(), size))
        })
    })
}

/// The tier and aspect ratio of the model's that give `size`, for upstreams that are asked by
/// name (`imageSize: "2K"`, `aspectRatio: "16:9"`); `None` for an explicit size.
pub fn tier_and_ratio(model: &Model, size: Size) -> Option<(&str, &str)> {
    table(model).find(|(.., s)| *s == size).map(|(tier, ratio, _)| (tier, ratio))
}

/// The model's tier at `ratio`.
fn at(model: &Model, tier: &str, ratio: &str) -> Size {
    model.family.tier_size(tier, ratio).expect("catalog ratios and tiers have sizes (checked at start-up)")
}

/// `2K, 4K or WIDTHxHEIGHT such as 2048x2048`: what a size field of this model takes.
fn size_forms(model: &Model) -> String {
    let example = at(model, model.sizes.default_tier.as_deref().unwrap_or(&model.sizes.tiers[0]), "1:1");
    format!("{} or WIDTHxHEIGHT such as {example}", model.sizes.tiers.join(", "))
}

/// A tier name of the model (at `ratio`), a size of its table, or an explicit size within its
/// bounds.
pub fn tier_or_explicit(model: &Model, name: &str, raw: &str, ratio: &str) -> Checked<Size> {
    if let Some(tier) = model.sizes.tiers.iter().find(|t| t.as_str() == raw) {
        return Ok(at(model, tier, ratio));
    }
    let forms = size_forms(model);
    match &model.sizes.custom {
        Some(bounds) => parse_explicit(name, raw, bounds, &forms),
        None => {
            let asked = parse_wxh(name, raw, &forms).ok();
            // `1536x1024` from an OpenAI client: the model's 3:2 size nearest in pixels.
            let nearest = |asked: Size| {
                let ratio = asked.aspect_ratio();
                table(model).filter(|(_, r, _)| *r == ratio).min_by_key(|(.., s)| s.pixels().abs_diff(asked.pixels()))
            };
            asked.and_then(nearest).map(|(.., size)| size).ok_or_else(|| {
                let sizes: Vec<String> = table(model).map(|(.., s)| s.to_string()).collect();
                ValidationError(format!(
                    "{name} must be one of {} or a size at one of the model's aspect ratios ({})",
                    model.sizes.tiers.join(", "),
                    sizes.join(", ")
                ))
            })
        }
    }
}

/// Seed 003's `size` (a tier) and `aspect_ratio`. A model with one aspect ratio ignores the
/// field, as seed 003 says of Seedream 5.0 Lite; others honour it.
pub fn unified_size(model: &Model, f: &Fields<'_>) -> Checked<Size> {
    let tiers = model.sizes.tier_names();
    let tier = f.choice("size", &tiers, model.sizes.default_tier.as_deref())?;
    let ratio = if model.sizes.aspect_ratios.len() > 1 {
        f.choice("aspect_ratio", &model.sizes.ratio_names(), Some(&model.sizes.default_aspect_ratio))?
    } else {
        &model.sizes.default_aspect_ratio
    };
    Ok(at(model, tier, ratio))
}

/// OpenAI's `size`: `auto` (the default tier), a tier, or `W×H`; square where the model has
/// square sizes, else at its default ratio.
pub fn openai_size(model: &Model, raw: Option<&str>) -> Checked<Size> {
    let ratio =
        if model.sizes.aspect_ratios.iter().any(|r| r == "1:1") { "1:1" } else { &model.sizes.default_aspect_ratio };
    match raw {
        None | Some("auto") => {
            let tier = model.sizes.default_tier.as_deref().unwrap_or(&model.sizes.tiers[0]);
            Ok(at(model, tier, ratio))
        }
        Some(raw) => tier_or_explicit(model, "size", raw, ratio),
    }
}

/// The APIXO `input` of a tiered model that has no seed of its own (Gemini, Imagen, FLUX):
/// `prompt`, `image_urls`, `resolution` (a tier), `aspect_ratio`, `num_images`, `output_format`.
pub fn parse_apixo_input(model: &Model, input: &Value) -> Checked<TaskSpec> {
    let f = Fields::of("input", input)?;
    let prompt = prompt(&f, model.limits.max_prompt_chars)?;
    let tiers = model.sizes.tier_names();
    let tier = f.choice("resolution", &tiers, model.sizes.default_tier.as_deref())?;
    let ratio = f.choice("aspect_ratio", &model.sizes.ratio_names(), Some(&model.sizes.default_aspect_ratio))?;
    let max = i64::from(model.limits.max_images);
    let images = f.int_in("num_images", 1, max)?.unwrap_or(1) as u32;
    let output_format = model.format_field(&f, "output_format")?;
    let references = url_list(&f, "image_urls", 0, model.limits.max_references)?;
    if !references.is_empty() && model.limits.max_references == 0 {
        return invalid(format!("input.image_urls is not supported by {}", model.id));
    }
    Ok(TaskSpec::new(model, prompt, images, at(model, tier, ratio), output_format, references))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn explicit_sizes_map_to_the_nearest_size_at_their_ratio() {
        let catalog = crate::catalog::Catalog::builtin();
        let gemini = catalog.get("gemini-3-pro-image").unwrap();
        assert_eq!(tier_or_explicit(gemini, "size", "1536x1024", "1:1"), Ok(scaled(1024, "3:2", 16).unwrap()));
        assert_eq!(tier_or_explicit(gemini, "size", "3000x2000", "1:1"), Ok(scaled(2048, "3:2", 16).unwrap()));
        assert_eq!(tier_or_explicit(gemini, "size", "4K", "16:9"), Ok(scaled(4096, "16:9", 16).unwrap()));
        assert!(tier_or_explicit(gemini, "size", "1000x100", "1:1").is_err(), "10:1 is none of its ratios");
    }

    #[test]
    fn scaled_sizes_keep_the_pixel_count_near_the_tier() {
        assert_eq!(scaled(1024, "1:1", 16), Some(Size::new(1024, 1024)));
        assert_eq!(scaled(1024, "16:9", 16), Some(Size::new(1360, 768)));
        assert_eq!(scaled(2048, "9:16", 16), Some(Size::new(1536, 2736)));
        let wide = scaled(1024, "21:9", 16).unwrap();
        assert!(wide.pixels().abs_diff(1024 * 1024) < 1024 * 1024 / 50, "{wide}");
        assert_eq!(scaled(1024, "wide", 16), None);
    }
}
