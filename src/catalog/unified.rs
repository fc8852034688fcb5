//! apimodels' unified request (seed 003): one body for every model,
//! `{"model","prompt","size","aspect_ratio","n","image_url","mask_url","callback_url"}`.

use serde_json::Value;

use super::fields::{Checked, Fields, http_url, invalid, prompt};
use super::size::{ASPECT_RATIOS, Resolution, four_k, seedream_preset};
use super::{Catalog, Model, ModelKind, OutputFormat, Size, TaskSpec, gpt_image};

/// The models seed 003 offers, in its order.
pub const MODELS: [&str; 3] = ["doubao-seedream-5-0-260128", "doubao-seedream-4-5-251128", "gpt-image-1"];

const MAX_REFERENCES: usize = 14;

/// A parsed unified request: what to generate and where to report.
pub struct UnifiedRequest<'c> {
    pub model: &'c Model,
    pub spec: TaskSpec,
    pub callback_url: Option<String>,
}

/// `image_url` as one string or an array of strings.
fn image_urls(f: &Fields<'_>) -> Checked<Vec<String>> {
    let list: Vec<&str> = match f.get("image_url") {
        None => Vec::new(),
        Some(Value::String(one)) => vec![one.as_str()],
        Some(Value::Array(_)) => f.str_list("image_url")?.unwrap_or_default(),
        Some(_) => return invalid("image_url must be a URL or an array of URLs"),
    };
    if list.len() > MAX_REFERENCES {
        return invalid(format!("image_url must hold at most {MAX_REFERENCES} URLs (got {})", list.len()));
    }
    let name = |i: usize| if list.len() == 1 { "image_url".to_owned() } else { format!("image_url[{i}]") };
    list.iter().enumerate().map(|(i, raw)| http_url(&name(i), raw).map(String::from)).collect()
}

fn seedream_size(f: &Fields<'_>, ratios: bool) -> Checked<Size> {
    let tier = f.choice("size", &["2K", "4K"], Some("2K"))?;
    // 5.0 Lite ignores aspect_ratio, as seed 003 says; 4.5 honours it.
    let ratio = if ratios { f.choice("aspect_ratio", &ASPECT_RATIOS, Some("1:1"))? } else { "1:1" };
    Ok(match tier {
        "4K" => four_k(ratio),
        _ => seedream_preset(Resolution::TwoK, ratio),
    }
    .expect("the ratios come from the preset table"))
}

pub fn parse<'c>(catalog: &'c Catalog, body: &Value) -> Checked<UnifiedRequest<'c>> {
    let f = Fields::of("", body)?;
    let id = f.required_str("model")?;
    let model = catalog
        .get(id)
        .filter(|m| MODELS.contains(&m.id))
        .ok_or_else(|| super::ValidationError(format!("model must be one of {}", MODELS.join(", "))))?;
    let gpt = model.kind == ModelKind::GptImage1;
    let prompt = prompt(&f, if gpt { 32_000 } else { 5000 })?;
    let size = match model.kind {
        ModelKind::GptImage1 => {
            let size = f.choice("size", &["1024x1024", "1536x1024", "1024x1536", "auto"], Some("auto"))?;
            // `auto` lets the model choose; Easel chooses the square.
            let pick = if size == "auto" { "1024x1024" } else { size };
            gpt_image::SIZES.iter().map(|(_, s)| *s).find(|s| s.to_string() == pick).expect("listed sizes")
        }
        ModelKind::DoubaoSeedream45 => seedream_size(&f, true)?,
        _ => seedream_size(&f, false)?,
    };
    let images = f.int_in("n", 1, 4)?.unwrap_or(1) as u32;
    let references = image_urls(&f)?;
    let mask = f.str("mask_url")?.map(|raw| http_url("mask_url", raw)).transpose()?.map(String::from);
    if mask.is_some() && !gpt {
        return invalid(format!("mask_url is not supported by {}", model.id));
    }
    if mask.is_some() && references.is_empty() {
        return invalid("mask_url needs an image_url to apply to");
    }
    let callback_url = f.str("callback_url")?.map(|raw| http_url("callback_url", raw)).transpose()?.map(String::from);
    let output_format = if gpt { OutputFormat::Png } else { OutputFormat::Jpeg };
    let spec = TaskSpec {
        model: model.id.to_owned(),
        prompt,
        images,
        size,
        output_format,
        references,
        sequential: false,
        web_search: false,
        mask,
    };
    Ok(UnifiedRequest { model, spec, callback_url })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn catalog() -> Catalog {
        Catalog::new(&Default::default()).unwrap()
    }

    #[test]
    fn lite_ignores_aspect_ratio_and_offers_2k_and_4k() {
        let c = catalog();
        let body = json!({"model": "doubao-seedream-5-0-260128", "prompt": "p", "size": "4K", "aspect_ratio": "16:9"});
        assert_eq!(parse(&c, &body).unwrap().spec.size, Size::new(4096, 4096));
        let body = json!({"model": "doubao-seedream-5-0-260128", "prompt": "p"});
        assert_eq!(parse(&c, &body).unwrap().spec.size, Size::new(2048, 2048));
    }

    #[test]
    fn four_five_honours_aspect_ratio() {
        let c = catalog();
        let body = json!({"model": "doubao-seedream-4-5-251128", "prompt": "p", "aspect_ratio": "16:9"});
        assert_eq!(parse(&c, &body).unwrap().spec.size, Size::new(2848, 1600));
    }

    #[test]
    fn image_url_may_be_one_or_many() {
        let c = catalog();
        let one = json!({"model": "gpt-image-1", "prompt": "p", "image_url": "https://ref.invalid/a.png"});
        assert_eq!(parse(&c, &one).unwrap().spec.references.len(), 1);
        let many = json!({"model": "gpt-image-1", "prompt": "p", "image_url": ["https://ref.invalid/a.png", "https://ref.invalid/b.png"]});
        assert_eq!(parse(&c, &many).unwrap().spec.references.len(), 2);
        let bad = json!({"model": "gpt-image-1", "prompt": "p", "image_url": 5});
        assert!(parse(&c, &bad).is_err());
    }

    #[test]
    fn masks_only_for_gpt_image_with_an_image() {
        let c = catalog();
        let ok = json!({"model": "gpt-image-1", "prompt": "p", "image_url": "https://ref.invalid/a.png", "mask_url": "https://ref.invalid/m.png"});
        assert!(parse(&c, &ok).unwrap().spec.mask.is_some());
        let no_image = json!({"model": "gpt-image-1", "prompt": "p", "mask_url": "https://ref.invalid/m.png"});
        assert!(parse(&c, &no_image).is_err());
        let seedream = json!({"model": "doubao-seedream-4-5-251128", "prompt": "p", "image_url": "https://ref.invalid/a.png", "mask_url": "https://ref.invalid/m.png"});
        assert!(parse(&c, &seedream).is_err());
    }
}
