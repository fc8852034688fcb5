//! Families: the code behind models. A family knows how a model of its kind is asked in each
//! dialect it is offered in (the APIXO `input` object, the size fields), which sizes, formats and
//! capabilities it can honour, and what its size tiers are. Models themselves are data
//! (`builtin.toml` and `[models."<id>"]` in `easel.toml`).

pub mod gpt_image;
pub mod seedream;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::fields::{Checked, Fields};
use super::size::SizeBounds;
use super::{Capability, Model, OutputFormat, Size, TaskSpec};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Family {
    /// ByteDance's Seedream models (seeds 000, 001 and 003).
    Seedream,
    /// OpenAI's GPT image models (seeds 002 and 003).
    GptImage,
}

impl Family {
    pub const ALL: [Family; 2] = [Family::Seedream, Family::GptImage];

    pub fn as_str(self) -> &'static str {
        match self {
            Family::Seedream => "seedream",
            Family::GptImage => "gpt-image",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|f| f.as_str() == s)
    }

    /// Who makes the models: the `<provider>` of seed 003's `"<provider>/<model_name>"`.
    pub fn vendor(self) -> &'static str {
        match self {
            Family::Seedream => "bytedance",
            Family::GptImage => "openai",
        }
    }

    /// What a model of this family may be given.
    pub fn capabilities(self) -> &'static [Capability] {
        match self {
            Family::Seedream => &[Capability::WebSearch, Capability::Sequential],
            Family::GptImage => &[Capability::Mask, Capability::TransparentBackground],
        }
    }

    /// Whether the family has quality levels (`low`, `medium`, `high`).
    pub fn has_qualities(self) -> bool {
        self == Family::GptImage
    }

    /// The formats a model of the family may offer (GPT image models render WebP; Seedream none).
    pub fn formats(self) -> &'static [OutputFormat] {
        match self {
            Family::Seedream => &[OutputFormat::Jpeg, OutputFormat::Png],
            Family::GptImage => &[OutputFormat::Png, OutputFormat::Jpeg, OutputFormat::Webp],
        }
    }

    /// The widest sizes any model of the family renders.
    pub fn bounds(self) -> SizeBounds {
        match self {
            Family::Seedream => seedream::BOUNDS,
            Family::GptImage => gpt_image::BOUNDS,
        }
    }

    /// The size tiers the family names, smallest first, each with the most pixels it holds.
    pub fn tiers(self) -> &'static [(&'static str, u64)] {
        match self {
            Family::Seedream => &seedream::TIERS,
            Family::GptImage => &gpt_image::TIERS,
        }
    }

    /// The tier an image of `size` belongs to: the smallest that holds its pixels.
    pub fn tier_of(self, size: Size) -> Option<&'static str> {
        self.tiers().iter().find(|(_, max)| size.pixels() <= *max).map(|(name, _)| *name)
    }

    /// The size a tier gives at an aspect ratio, for families whose tiers are size tables.
    pub fn tier_size(self, tier: &str, aspect_ratio: &str) -> Option<Size> {
        match self {
            Family::Seedream => seedream::tier_size(tier, aspect_ratio),
            Family::GptImage => None,
        }
    }

    /// OpenAI's API answers GPT image models with base64 only; others default to links.
    pub fn answers_in_base64(self) -> bool {
        self == Family::GptImage
    }

    /// Parses the `input` object of an APIXO task request for `model`.
    pub fn parse_apixo_input(self, model: &Model, input: &Value) -> Checked<TaskSpec> {
        match self {
            Family::Seedream => seedream::parse_apixo_input(model, input),
            Family::GptImage => gpt_image::parse_apixo_input(model, input),
        }
    }

    /// The size a unified request (seed 003) asks for, from its `size` and `aspect_ratio`.
    pub fn unified_size(self, model: &Model, f: &Fields<'_>) -> Checked<Size> {
        match self {
            Family::Seedream => seedream::unified_size(model, f),
            Family::GptImage => gpt_image::size(model, "size", f.str("size")?),
        }
    }

    /// The size an OpenAI-style request asks for with its `size` field.
    pub fn openai_size(self, model: &Model, raw: Option<&str>) -> Checked<Size> {
        match self {
            Family::Seedream => seedream::openai_size(model, raw),
            Family::GptImage => gpt_image::size(model, "size", raw),
        }
    }
}
