//! Families: the code behind models. A family knows how a model of its kind is asked in each
//! dialect it is offered in (the APIXO `input` object, the size fields), which sizes, formats and
//! capabilities it can honour, and what its size tiers are. Models themselves are data
//! (`builtin.toml` and `[models."<id>"]` in `easel.toml`).

pub mod diffusion;
pub mod flux;
pub mod gemini_image;
pub mod gpt_image;
pub mod imagen;
pub mod seedream;
pub mod tiered;

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
    /// Google's Gemini image models (`generateContent`).
    GeminiImage,
    /// Google's Imagen models (`predict`).
    Imagen,
    /// Black Forest Labs' FLUX models on their own API.
    Flux,
    /// Open diffusion models the operator runs on fal, Replicate or their own GPUs.
    Diffusion,
}

/// How a family's sizes are asked for: tiers at aspect ratios, or listed `W×H` sizes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SizeStyle {
    /// `size: "2K"` with `aspect_ratio` (Seedream, Gemini, Imagen, FLUX).
    Tiers,
    /// `size: "1024x1024"` or `auto` (GPT image models, diffusion models).
    Listed,
}

impl Family {
    pub const ALL: [Family; 6] =
        [Family::Seedream, Family::GptImage, Family::GeminiImage, Family::Imagen, Family::Flux, Family::Diffusion];

    pub fn as_str(self) -> &'static str {
        match self {
            Family::Seedream => "seedream",
            Family::GptImage => "gpt-image",
            Family::GeminiImage => "gemini-image",
            Family::Imagen => "imagen",
            Family::Flux => "flux",
            Family::Diffusion => "diffusion",
        }
    }

    pub fn size_style(self) -> SizeStyle {
        match self {
            Family::GptImage | Family::Diffusion => SizeStyle::Listed,
            Family::Seedream | Family::GeminiImage | Family::Imagen | Family::Flux => SizeStyle::Tiers,
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
            Family::GeminiImage | Family::Imagen => "google",
            Family::Flux => "black-forest-labs",
            Family::Diffusion => "open",
        }
    }

    /// What a model of this family may be given.
    pub fn capabilities(self) -> &'static [Capability] {
        match self {
            Family::Seedream => &[Capability::WebSearch, Capability::Sequential],
            Family::GptImage => &[Capability::Mask, Capability::TransparentBackground],
            Family::GeminiImage | Family::Imagen | Family::Flux | Family::Diffusion => &[],
        }
    }

    /// Whether the family has quality levels (`low`, `medium`, `high`).
    pub fn has_qualities(self) -> bool {
        self == Family::GptImage
    }

    /// The formats a model of the family may offer (Easel converts to those the upstream does
    /// not render; Seedream offers no WebP).
    pub fn formats(self) -> &'static [OutputFormat] {
        match self {
            Family::Seedream => &[OutputFormat::Jpeg, OutputFormat::Png],
            _ => &[OutputFormat::Png, OutputFormat::Jpeg, OutputFormat::Webp],
        }
    }

    /// The widest sizes any model of the family renders.
    pub fn bounds(self) -> SizeBounds {
        match self {
            Family::Seedream => seedream::BOUNDS,
            Family::GptImage => gpt_image::BOUNDS,
            Family::GeminiImage => gemini_image::BOUNDS,
            Family::Imagen => imagen::BOUNDS,
            Family::Flux => flux::BOUNDS,
            Family::Diffusion => diffusion::BOUNDS,
        }
    }

    /// The size tiers the family names, smallest first, each with the most pixels it holds.
    pub fn tiers(self) -> &'static [(&'static str, u64)] {
        match self {
            Family::Seedream => &seedream::TIERS,
            Family::GptImage => &gpt_image::TIERS,
            Family::GeminiImage => &gemini_image::TIERS,
            Family::Imagen => &imagen::TIERS,
            Family::Flux => &flux::TIERS,
            Family::Diffusion => &diffusion::TIERS,
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
            Family::GeminiImage => gemini_image::tier_size(tier, aspect_ratio),
            Family::Imagen => imagen::tier_size(tier, aspect_ratio),
            Family::Flux => flux::tier_size(tier, aspect_ratio),
            Family::GptImage | Family::Diffusion => None,
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
            Family::GeminiImage | Family::Imagen | Family::Flux => tiered::parse_apixo_input(model, input),
            Family::Diffusion => diffusion::parse_apixo_input(model, input),
        }
    }

    /// The size a unified request (seed 003) asks for, from its `size` and `aspect_ratio`.
    pub fn unified_size(self, model: &Model, f: &Fields<'_>) -> Checked<Size> {
        match self.size_style() {
            SizeStyle::Tiers => tiered::unified_size(model, f),
            SizeStyle::Listed => gpt_image::size(model, "size", f.str("size")?),
        }
    }

    /// The size an OpenAI-style request asks for with its `size` field.
    pub fn openai_size(self, model: &Model, raw: Option<&str>) -> Checked<Size> {
        match self.size_style() {
            SizeStyle::Tiers => tiered::openai_size(model, raw),
            SizeStyle::Listed => gpt_image::size(model, "size", raw),
        }
    }
}
