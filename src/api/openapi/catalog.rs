//! The parts of the OpenAPI document that are the catalog's: the model enums, and one input
//! schema per model (APIXO `input` objects and unified requests), built from the models' data at
//! start-up so that the document follows `easel.toml`.

use serde_json::json;
use utoipa::openapi::schema::{AnyOfBuilder, ObjectBuilder, OneOfBuilder, Schema, Type};
use utoipa::openapi::{OpenApi as Document, Ref, RefOr};

use super::schemas::{optional_url, or_null, url, url_list};
use crate::catalog::family::SizeStyle;
use crate::catalog::{Api, Capability, Catalog, Family, Model};

/// Fills the catalog's schemas into `doc`.
pub fn apply(doc: &mut Document, catalog: &Catalog) {
    let Some(components) = doc.components.as_mut() else { return };
    let schemas = &mut components.schemas;
    let names = |models: &mut dyn Iterator<Item = &Model>| -> Vec<String> {
        models.flat_map(|m| std::iter::once(m.id.clone()).chain(m.aliases.iter().cloned())).collect()
    };
    schemas.insert("ApixoModel".into(), string_enum(names(&mut catalog.in_api(Api::Apixo))).into());
    schemas.insert("CatalogModel".into(), string_enum(names(&mut catalog.models().iter())).into());

    let mut inputs = AnyOfBuilder::new()
        .description(Some("The `input` of the model in the path: each model's schema is one of these"));
    for model in catalog.in_api(Api::Apixo) {
        let name = format!("ApixoInput-{}", model.id);
        schemas.insert(name.clone(), apixo_input(model).into());
        inputs = inputs.item(Ref::from_schema_name(name));
    }
    schemas.insert("TaskInput".into(), inputs.into());

    let mut requests = OneOfBuilder::new().description(Some("`model` decides which fields apply"));
    for model in catalog.in_api(Api::Unified) {
        let name = format!("UnifiedRequest-{}", model.id);
        schemas.insert(name.clone(), unified_request(model).into());
        requests = requests.item(Ref::from_schema_name(name));
    }
    schemas.insert("UnifiedRequest".into(), requests.into());
}

fn string_enum(values: Vec<String>) -> ObjectBuilder {
    ObjectBuilder::new().schema_type(Type::String).enum_values(Some(values))
}

fn prompt(model: &Model) -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .min_length(Some(1))
        .max_length(Some(model.limits.max_prompt_chars))
        .pattern(Some(r"\S"))
}

fn int(min: u32, max: u32) -> ObjectBuilder {
    ObjectBuilder::new().schema_type(Type::Integer).minimum(Some(f64::from(min))).maximum(Some(f64::from(max)))
}

/// A `W×H` written with `x`, `X` or `*`, or one of `words`.
fn size_text(words: &[&str]) -> ObjectBuilder {
    let alternatives: Vec<String> =
        words.iter().map(|w| regex_escape(w)).chain(["\\+?[0-9]+\\s*[xX*]\\s*\\+?[0-9]+".into()]).collect();
    ObjectBuilder::new().schema_type(Type::String).pattern(Some(format!(r"^\s*({})\s*$", alternatives.join("|"))))
}

fn regex_escape(s: &str) -> String {
    s.chars().flat_map(|c| if c.is_ascii_alphanumeric() { vec![c] } else { vec!['\\', c] }).collect()
}

fn references(model: &Model) -> RefOr<Schema> {
    or_null(url_list(model.limits.max_references)).into()
}

/// The `input` object of `generateTask/{model}` for one model.
fn apixo_input(model: &Model) -> Schema {
    let described = |o: ObjectBuilder| {
        o.description(Some(format!("`input` for `{}` ({}). {}", model.id, model.name, model.description)))
    };
    let object = ObjectBuilder::new().schema_type(Type::Object);
    match model.family {
        Family::Seedream => {
            let tiers = model.sizes.tier_names();
            let series: Vec<String> = if model.can(Capability::Sequential) {
                vec!["disabled".into(), "auto".into()]
            } else {
                vec!["disabled".into()]
            };
            let web_search = match model.can(Capability::WebSearch) {
                true => ObjectBuilder::new().schema_type(Type::Boolean),
                false => ObjectBuilder::new().schema_type(Type::Boolean).enum_values(Some([false])),
            };
            let size = if model.sizes.custom.is_some() {
                size_text(&tiers)
            } else {
                string_enum(tiers.iter().map(|t| t.to_string()).collect())
            };
            described(object)
                .property("mode", string_enum(vec!["text-to-image".into(), "image-to-image".into()]))
                .property("prompt", prompt(model))
                .property("max_images", int(1, model.limits.max_images).description(Some("Images to generate, billed per image delivered")))
                .property("resolution", or_null(string_enum(model.sizes.tiers.clone())))
                .property("aspect_ratio", or_null(string_enum(model.sizes.aspect_ratios.clone())))
                .property(
                    "size",
                    or_null(size.description(Some(match &model.sizes.custom {
                        Some(b) => format!(
                            "Wins over `resolution`: a tier or `WIDTHxHEIGHT` with {} to {} pixels in total and a ratio up to {}:1",
                            b.min, b.max, b.max_ratio
                        ),
                        None => "Wins over `resolution`: a tier".into(),
                    }))),
                )
                .property("sequential_image_generation", or_null(string_enum(series)))
                .property("web_search", or_null(web_search))
                .property("output_format", or_null(string_enum(formats(model))))
                .property("prompt_optimize_mode", or_null(string_enum(vec!["standard".into()])))
                .property("image_urls", references(model))
                .required("mode")
                .required("prompt")
                .required("max_images")
                .into()
        }
        Family::GptImage => {
            let names = std::iter::once(model.id.clone()).chain(model.aliases.iter().cloned()).collect();
            let counts: Vec<u32> = [1, 2, 4].into_iter().filter(|n| *n <= model.limits.max_images).collect();
            described(object)
                .property("mode", string_enum(names).description(Some("The model's id or an alias")))
                .property("prompt", prompt(model))
                .property("aspect_ratio", or_null(string_enum(ratios(model))))
                .property(
                    "num_images",
                    or_null(ObjectBuilder::new().schema_type(Type::Integer).enum_values(Some(counts))),
                )
                .property("image_urls", references(model))
                .required("mode")
                .required("prompt")
                .into()
        }
        Family::GeminiImage | Family::Imagen | Family::Flux => described(object)
            .property("prompt", prompt(model))
            .property("resolution", or_null(string_enum(model.sizes.tiers.clone())))
            .property("aspect_ratio", or_null(string_enum(model.sizes.aspect_ratios.clone())))
            .property("num_images", or_null(int(1, model.limits.max_images)))
            .property("output_format", or_null(string_enum(formats(model))))
            .property("image_urls", references(model))
            .required("prompt")
            .into(),
        Family::Diffusion => described(object)
            .property("prompt", prompt(model))
            .property("negative_prompt", or_null(ObjectBuilder::new().schema_type(Type::String).max_length(Some(2000))))
            .property("size", or_null(listed_size(model)))
            .property("num_images", or_null(int(1, model.limits.max_images)))
            .property("seed", or_null(int(0, u32::MAX)))
            .property("output_format", or_null(string_enum(formats(model))))
            .property("image_urls", references(model))
            .required("prompt")
            .into(),
    }
}

/// A listed size, `auto`, or (for a model with bounds) any `W×H`.
fn listed_size(model: &Model) -> ObjectBuilder {
    let listed: Vec<String> = model.sizes.fixed.iter().map(|s| s.to_string()).chain(["auto".into()]).collect();
    match model.sizes.custom {
        Some(_) => size_text(&listed.iter().map(String::as_str).collect::<Vec<_>>()),
        None => string_enum(listed),
    }
}

fn formats(model: &Model) -> Vec<String> {
    model.formats.iter().map(|f| f.extension().to_owned()).collect()
}

/// Seed 002's aspect ratios of a GPT image model: those of its listed sizes.
fn ratios(model: &Model) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for size in &model.sizes.fixed {
        let ratio = size.aspect_ratio();
        if !out.contains(&ratio) {
            out.push(ratio);
        }
    }
    out
}

/// `POST /api/v1/images/generations` for one model.
fn unified_request(model: &Model) -> Schema {
    let names = std::iter::once(model.id.clone()).chain(model.aliases.iter().cloned()).collect();
    let size = match model.family.size_style() {
        SizeStyle::Tiers => string_enum(model.sizes.tiers.clone()),
        SizeStyle::Listed => listed_size(model),
    };
    let mut object = ObjectBuilder::new()
        .schema_type(Type::Object)
        .description(Some(format!("`{}` ({}). {}", model.id, model.name, model.description)))
        .property("model", string_enum(names))
        .property("prompt", prompt(model))
        .property("size", or_null(size))
        .property("n", or_null(int(1, model.limits.max_images.min(4))))
        .property(
            "image_url",
            or_null(url()).item(url_list(model.limits.max_references)).description(Some(format!(
                "One reference image URL, or an array of up to {}",
                model.limits.max_references
            ))),
        )
        .property("callback_url", optional_url())
        .required("model")
        .required("prompt");
    if model.sizes.aspect_ratios.len() > 1 {
        object = object.property("aspect_ratio", or_null(string_enum(model.sizes.aspect_ratios.clone())));
    }
    if model.can(Capability::Mask) {
        object = object
            .property("mask_url", optional_url().description(Some("A PNG mask applying to the first `image_url`")));
    }
    object.examples([json!({"model": model.id, "prompt": "a red fox in the snow"})]).into()
}
