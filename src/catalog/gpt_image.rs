//! gpt-image-1's APIXO input (seed 002).

use serde_json::Value;

use super::fields::{Checked, Fields, invalid, prompt, url_list};
use super::{OutputFormat, Size, TaskSpec};

const MAX_PROMPT: usize = 32_000;
const MAX_REFERENCES: usize = 16;

/// The aspect ratios seed 002 offers and the sizes the model renders them at.
pub const SIZES: [(&str, Size); 3] =
    [("1:1", Size::new(1024, 1024)), ("3:2", Size::new(1536, 1024)), ("2:3", Size::new(1024, 1536))];

pub fn parse_input(model: &str, input: &Value) -> Checked<TaskSpec> {
    let f = Fields::of("input", input)?;
    f.choice("mode", &["gpt-image-1"], None)?;
    let prompt = prompt(&f, MAX_PROMPT)?;
    let ratios: Vec<&'static str> = SIZES.iter().map(|(r, _)| *r).collect();
    let ratio = f.choice("aspect_ratio", &ratios, Some("1:1"))?;
    let size = SIZES.iter().find(|(r, _)| *r == ratio).map(|(_, s)| *s).expect("checked above");
    let images = match f.get("num_images") {
        None => 1,
        Some(v) => match v.as_i64() {
            Some(n @ (1 | 2 | 4)) => n as u32,
            _ => return invalid("input.num_images must be 1, 2 or 4"),
        },
    };
    let references = url_list(&f, "image_urls", 0, MAX_REFERENCES)?;
    // GPT image models answer PNG unless asked otherwise; seed 002 offers no choice.
    Ok(TaskSpec {
        model: model.to_owned(),
        prompt,
        images,
        size,
        output_format: OutputFormat::Png,
        references,
        sequential: false,
        web_search: false,
        mask: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn maps_ratios_to_1024_sizes() {
        let spec = parse_input(
            "gpt-image-1",
            &json!({"mode": "gpt-image-1", "prompt": "p", "aspect_ratio": "3:2", "num_images": 2}),
        )
        .unwrap();
        assert_eq!((spec.size, spec.images), (Size::new(1536, 1024), 2));
    }

    #[test]
    fn num_images_is_1_2_or_4() {
        let err =
            parse_input("gpt-image-1", &json!({"mode": "gpt-image-1", "prompt": "p", "num_images": 3})).unwrap_err();
        assert_eq!(err.0, "input.num_images must be 1, 2 or 4");
    }
}
