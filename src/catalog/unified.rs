//! apimodels' unified request (seed 003): one body for every model,
//! `{"model","prompt","size","aspect_ratio","n","image_url","mask_url","callback_url"}`.

use serde_json::Value;

use super::fields::{Checked, Fields, http_url, invalid, prompt};
use super::{Api, Capability, Catalog, Model, TaskSpec};

/// Seed 003's most images per request.
const MAX_IMAGES: u32 = 4;

/// A parsed unified request: what to generate and where to report.
pub struct UnifiedRequest<'c> {
    pub model: &'c Model,
    pub spec: TaskSpec,
    pub callback_url: Option<String>,
}

/// `image_url` as one string or an array of strings.
fn image_urls(f: &Fields<'_>, max: usize) -> Checked<Vec<String>> {
    let list: Vec<&str> = match f.get("image_url") {
        None => Vec::new(),
        Some(Value::String(one)) => vec![one.as_str()],
        Some(Value::Array(_)) => f.str_list("image_url")?.unwrap_or_default(),
        Some(_) => return invalid("image_url must be a URL or an array of URLs"),
    };
    if list.len() > max {
        return invalid(format!("image_url must hold at most {max} URLs (got {})", list.len()));
    }
    let name = |i: usize| if list.len() == 1 { "image_url".to_owned() } else { format!("image_url[{i}]") };
    list.iter().enumerate().map(|(i, raw)| http_url(&name(i), raw).map(String::from)).collect()
}

pub fn parse<'c>(catalog: &'c Catalog, body: &Value) -> Checked<UnifiedRequest<'c>> {
    let f = Fields::of("", body)?;
    let id = f.required_str("model")?;
    let model = catalog.offered(id, Api::Unified).ok_or_else(|| {
        let ids: Vec<&str> = catalog.in_api(Api::Unified).map(|m| m.id.as_str()).collect();
        super::ValidationError(format!("model must be one of {}", ids.join(", ")))
    })?;
    let prompt = prompt(&f, model.limits.max_prompt_chars)?;
    let size = model.family.unified_size(model, &f)?;
    let images = f.int_in("n", 1, i64::from(MAX_IMAGES.min(model.limits.max_images)))?.unwrap_or(1) as u32;
    let references = image_urls(&f, model.limits.max_references)?;
    let mask = f.str("mask_url")?.map(|raw| http_url("mask_url", raw)).transpose()?.map(String::from);
    if mask.is_some() && !model.can(Capability::Mask) {
        return invalid(format!("mask_url is not supported by {}", model.id));
    }
    if mask.is_some() && references.is_empty() {
        return invalid("mask_url needs an image_url to apply to");
    }
    let callback_url = f.str("callback_url")?.map(|raw| http_url("callback_url", raw)).transpose()?.map(String::from);
    let spec = TaskSpec { mask, ..TaskSpec::new(model, prompt, images, size, model.default_format, references) };
    Ok(UnifiedRequest { model, spec, callback_url })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::Size;
    use serde_json::json;

    fn catalog() -> Catalog {
        Catalog::builtin()
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
