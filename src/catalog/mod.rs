//! The models Easel sells: their input schemas, sizes, prices and default limits, and the
//! canonical [`TaskSpec`] every dialect parses into.

pub mod fields;
pub mod gpt_image;
pub mod seedream;
pub mod size;
pub mod unified;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::config::ModelOverride;
use crate::money::Micros;
pub use fields::ValidationError;
pub use size::Size;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OutputFormat {
    Jpeg,
    Png,
}

impl OutputFormat {
    pub fn extension(self) -> &'static str {
        match self {
            OutputFormat::Jpeg => "jpeg",
            OutputFormat::Png => "png",
        }
    }

    pub fn mime(self) -> &'static str {
        match self {
            OutputFormat::Jpeg => "image/jpeg",
            OutputFormat::Png => "image/png",
        }
    }
}

/// The seeds' `provider` field: which tier of upstream channels may serve a task.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Routing {
    Auto,
    Value,
    Official,
}

impl Routing {
    pub fn as_str(self) -> &'static str {
        match self {
            Routing::Auto => "auto",
            Routing::Value => "value",
            Routing::Official => "official",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "auto" => Some(Routing::Auto),
            "value" => Some(Routing::Value),
            "official" => Some(Routing::Official),
            _ => None,
        }
    }
}

/// What to generate, independent of the dialect it was asked in.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskSpec {
    /// Public model id, e.g. `seedream-5-0`.
    pub model: String,
    pub prompt: String,
    /// Images requested (and held for).
    pub images: u32,
    pub size: Size,
    pub output_format: OutputFormat,
    /// Reference images, as absolute http(s) URLs.
    #[serde(default)]
    pub references: Vec<String>,
    /// Seedream's `sequential_image_generation: auto`: one coherent series, possibly shorter.
    #[serde(default)]
    pub sequential: bool,
    #[serde(default)]
    pub web_search: bool,
    /// Inpainting mask (a PNG URL) applying to the first reference, where the model has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mask: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModelKind {
    /// APIXO's `seedream-5-0` (seeds 000 and 001).
    Seedream50,
    /// APIXO's and apimodels' `gpt-image-1` (seeds 002 and 003).
    GptImage1,
    /// apimodels' `doubao-seedream-5-0-260128`, Seedream 5.0 Lite (seed 003).
    DoubaoSeedream50Lite,
    /// apimodels' `doubao-seedream-4-5-251128` (seed 003).
    DoubaoSeedream45,
}

#[derive(Debug, Clone)]
pub struct Model {
    pub id: &'static str,
    pub kind: ModelKind,
    pub price: Micros,
    /// Task creations per minute per account.
    pub rpm: u32,
    /// Pending plus processing tasks per account.
    pub max_concurrent: u32,
}

impl Model {
    /// Parses the `input` object of an APIXO task request for this model.
    pub fn parse_apixo_input(&self, input: &serde_json::Value) -> Result<TaskSpec, ValidationError> {
        match self.kind {
            ModelKind::Seedream50 => seedream::parse_input(self.id, input),
            ModelKind::GptImage1 => gpt_image::parse_input(self.id, input),
            ModelKind::DoubaoSeedream50Lite | ModelKind::DoubaoSeedream45 => Err(ValidationError(format!(
                "model {} is offered through POST /api/v1/images/generations, not generateTask",
                self.id
            ))),
        }
    }
}

/// The built-in models with the operator's overrides applied.
#[derive(Debug, Clone)]
pub struct Catalog {
    models: Vec<Model>,
}

fn builtin() -> Vec<Model> {
    vec![
        // Seed 001: $0.032 per image; seed 000: 60 requests a minute, 10 concurrent tasks.
        Model { id: "seedream-5-0", kind: ModelKind::Seedream50, price: Micros(32_000), rpm: 60, max_concurrent: 10 },
        // Seed 002: 10000 requests a minute, 1000 concurrent tasks.
        Model {
            id: "gpt-image-1",
            kind: ModelKind::GptImage1,
            price: Micros(40_000),
            rpm: 10_000,
            max_concurrent: 1000,
        },
        // Seed 003's Seedream models, at the vendors' public list prices.
        Model {
            id: "doubao-seedream-5-0-260128",
            kind: ModelKind::DoubaoSeedream50Lite,
            price: Micros(35_000),
            rpm: 60,
            max_concurrent: 10,
        },
        Model {
            id: "doubao-seedream-4-5-251128",
            kind: ModelKind::DoubaoSeedream45,
            price: Micros(40_000),
            rpm: 60,
            max_concurrent: 10,
        },
    ]
}

impl Catalog {
    pub fn new(overrides: &BTreeMap<String, ModelOverride>) -> anyhow::Result<Self> {
        let mut models = builtin();
        for (id, o) in overrides {
            let Some(model) = models.iter_mut().find(|m| m.id == id) else {
                anyhow::bail!("[models.{id:?}] names no model in the catalog");
            };
            if let Some(usd) = o.price_usd {
                model.price = Micros::from_usd(usd)?;
            }
            model.rpm = o.rpm.unwrap_or(model.rpm);
            model.max_concurrent = o.max_concurrent.unwrap_or(model.max_concurrent);
        }
        Ok(Self { models })
    }

    pub fn get(&self, id: &str) -> Option<&Model> {
        self.models.iter().find(|m| m.id == id)
    }

    pub fn models(&self) -> &[Model] {
        &self.models
    }
}
