//! Open diffusion models (SDXL, FLUX.1 dev and schnell, …) as the operator runs them: on fal or
//! Replicate, or on their own GPUs. They take a prompt, a negative prompt, any size within
//! their bounds, a count, a seed and reference images.

use serde_json::Value;

use crate::catalog::fields::{Checked, Fields, prompt, url_list};
use crate::catalog::size::SizeBounds;
use crate::catalog::{Model, Size, TaskSpec};

/// Sizes an SDXL- or FLUX-class model renders: 256 to 2048 pixels a side, multiples of 8.
pub const BOUNDS: SizeBounds = SizeBounds {
    min: Size::new(256, 256),
    max: Size::new(2048, 2048),
    max_ratio: 4,
    multiple_of: Some(8),
    max_side: Some(2048),
};

/// Tiers by the most pixels a size of theirs has.
pub const TIERS: [(&str, u64); 2] = [("1K", 1152 * 1152), ("2K", 2048 * 2048)];

/// Longest negative prompt accepted.
const MAX_NEGATIVE_PROMPT_CHARS: usize = 2000;

/// The APIXO `input` of a diffusion model: `prompt`, `negative_prompt`, `size` (a listed size,
/// `auto` or `W×H`), `num_images`, `seed`, `image_urls`, `output_format`.
pub fn parse_apixo_input(model: &Model, input: &Value) -> Checked<TaskSpec> {
    let f = Fields::of("input", input)?;
    let prompt = prompt(&f, model.limits.max_prompt_chars)?;
    let negative_prompt = match f.str("negative_prompt")? {
        Some(text) if text.chars().count() > MAX_NEGATIVE_PROMPT_CHARS => {
            return crate::catalog::fields::invalid(format!(
                "input.negative_prompt must be at most {MAX_NEGATIVE_PROMPT_CHARS} characters"
            ));
        }
        Some(text) if !text.trim().is_empty() => Some(text.to_owned()),
        _ => None,
    };
    let size = super::gpt_image::size(model, "input.size", f.str("size")?)?;
    let images = f.int_in("num_images", 1, i64::from(model.limits.max_images))?.unwrap_or(1) as u32;
    let seed = f.int_in("seed", 0, i64::from(u32::MAX))?.map(|s| s as u64);
    let output_format = model.format_field(&f, "output_format")?;
    let references = url_list(&f, "image_urls", 0, model.limits.max_references)?;
    let spec = TaskSpec::new(model, prompt, images, size, output_format, references);
    Ok(TaskSpec { negative_prompt, seed, ..spec })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::{Catalog, ModelEntry};
    use serde_json::json;
    use std::collections::BTreeMap;

    fn catalog() -> Catalog {
        let entry = ModelEntry {
            family: Some("diffusion".into()),
            price_usd: Some(0.01),
            sizes: Some(vec!["1024x1024".into(), "1216x832".into()]),
            custom_size: Some(BOUNDS),
            ..Default::default()
        };
        Catalog::new(&BTreeMap::from([("house-sdxl".to_owned(), entry)])).unwrap()
    }

    #[test]
    fn reads_negative_prompt_seed_and_explicit_sizes() {
        let c = catalog();
        let model = c.get("house-sdxl").unwrap();
        let spec = parse_apixo_input(
            model,
            &json!({"prompt": "p", "negative_prompt": "blurry", "seed": 42, "size": "768x1344", "num_images": 2}),
        )
        .unwrap();
        assert_eq!(spec.negative_prompt.as_deref(), Some("blurry"));
        assert_eq!(spec.seed, Some(42));
        assert_eq!((spec.size, spec.images), (Size::new(768, 1344), 2));
        let spec = parse_apixo_input(model, &json!({"prompt": "p"})).unwrap();
        assert_eq!((spec.size, spec.seed), (Size::new(1024, 1024), None));
        assert!(parse_apixo_input(model, &json!({"prompt": "p", "size": "1000x1001"})).is_err());
        assert!(parse_apixo_input(model, &json!({"prompt": "p", "seed": -1})).is_err());
    }
}
