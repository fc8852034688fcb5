//! GPT image models: seed 002's APIXO input, and the `size` field of seed 003 and OpenAI's API
//! (a listed size or `auto`, and `W×H` within bounds for models that take any size).

use serde_json::Value;

use crate::catalog::fields::{Checked, Fields, invalid, prompt, url_list};
use crate::catalog::size::{SizeBounds, parse_explicit};
use crate::catalog::{Model, Size, TaskSpec};

/// The widest sizes GPT image models render: up to 3840 pixels a side and 3840×2160 in all,
/// ratios up to 3:1, sides in multiples of 16.
pub const BOUNDS: SizeBounds = SizeBounds {
    min: Size::new(1024, 640),
    max: Size::new(3840, 2160),
    max_ratio: 3,
    multiple_of: Some(16),
    max_side: Some(3840),
};

/// Tiers by the most pixels a size of theirs has.
pub const TIERS: [(&str, u64); 3] = [("1K", 1536 * 1024), ("2K", 2048 * 2048), ("4K", 3840 * 2160)];

/// Seed 002's image counts.
const IMAGE_COUNTS: [u32; 3] = [1, 2, 4];

/// Seed 002's aspect ratios: those of the model's listed sizes, reduced (1536×1024 is `3:2`).
fn ratio_of(size: Size) -> String {
    size.aspect_ratio()
}

pub fn parse_apixo_input(model: &Model, input: &Value) -> Checked<TaskSpec> {
    let f = Fields::of("input", input)?;
    // Seed 002's `mode` names the model: its id, or one of its aliases.
    let names: Vec<&str> = std::iter::once(model.id.as_str()).chain(model.aliases.iter().map(String::as_str)).collect();
    f.choice("mode", &names, None)?;
    let prompt = prompt(&f, model.limits.max_prompt_chars)?;
    let mut by_ratio: Vec<(String, Size)> = Vec::new();
    for size in &model.sizes.fixed {
        let ratio = ratio_of(*size);
        if !by_ratio.iter().any(|(r, _)| *r == ratio) {
            by_ratio.push((ratio, *size));
        }
    }
    let ratios: Vec<&str> = by_ratio.iter().map(|(r, _)| r.as_str()).collect();
    let default = model.sizes.default_size.map(ratio_of);
    let ratio = f.choice("aspect_ratio", &ratios, default.as_deref().or(ratios.first().copied()))?;
    let size = by_ratio.iter().find(|(r, _)| r == ratio).map(|(_, s)| *s).expect("checked above");
    let counts: Vec<u32> = IMAGE_COUNTS.into_iter().filter(|n| *n <= model.limits.max_images).collect();
    let images = match f.get("num_images") {
        None => 1,
        Some(v) => match v.as_i64() {
            Some(n) if counts.iter().any(|c| i64::from(*c) == n) => n as u32,
            _ => {
                let listed: Vec<String> = counts.iter().map(u32::to_string).collect();
                return invalid(format!("input.num_images must be {}", or_list(&listed)));
            }
        },
    };
    let references = url_list(&f, "image_urls", 0, model.limits.max_references)?;
    // Seed 002 offers no choice of format: the model's default.
    Ok(TaskSpec::new(model, prompt, images, size, model.default_format, references))
}

/// `1, 2 or 4`.
fn or_list(items: &[String]) -> String {
    match items {
        [] => String::new(),
        [one] => one.clone(),
        [init @ .., last] => format!("{} or {last}", init.join(", ")),
    }
}

/// A listed size, `auto` (the model's default), or for a model with bounds any `W×H` in them.
pub fn size(model: &Model, name: &str, raw: Option<&str>) -> Checked<Size> {
    let default = model.sizes.default_size.or(model.sizes.fixed.first().copied());
    let raw = raw.unwrap_or("auto");
    if raw == "auto" {
        return default.ok_or_else(|| crate::catalog::ValidationError(format!("{name} is required")));
    }
    if let Some(size) = model.sizes.fixed.iter().find(|s| s.to_string() == raw) {
        return Ok(*size);
    }
    let listed: Vec<String> = model.sizes.fixed.iter().map(Size::to_string).chain(["auto".to_owned()]).collect();
    match &model.sizes.custom {
        Some(bounds) => {
            let forms = format!("one of {} or WIDTHxHEIGHT", listed.join(", "));
            parse_explicit(name, raw, bounds, &forms)
        }
        None => invalid(format!("{name} must be one of {}", listed.join(", "))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::Catalog;
    use serde_json::json;

    #[test]
    fn maps_ratios_to_1024_sizes() {
        let catalog = Catalog::builtin();
        let model = catalog.get("gpt-image-1").unwrap();
        let spec = parse_apixo_input(
            model,
            &json!({"mode": "gpt-image-1", "prompt": "p", "aspect_ratio": "3:2", "num_images": 2}),
        )
        .unwrap();
        assert_eq!((spec.size, spec.images), (Size::new(1536, 1024), 2));
    }

    #[test]
    fn num_images_is_1_2_or_4() {
        let catalog = Catalog::builtin();
        let model = catalog.get("gpt-image-1").unwrap();
        let err =
            parse_apixo_input(model, &json!({"mode": "gpt-image-1", "prompt": "p", "num_images": 3})).unwrap_err();
        assert_eq!(err.0, "input.num_images must be 1, 2 or 4");
    }

    #[test]
    fn ratios_reduce() {
        assert_eq!(ratio_of(Size::new(1536, 1024)), "3:2");
        assert_eq!(ratio_of(Size::new(3840, 2160)), "16:9");
    }
}
