//! The models Easel sells, as data: the built-in catalog file (`builtin.toml`) with the
//! operator's `[models."<id>"]` tables over it, resolved at start-up into [`Model`]s. What a
//! model of a kind can be asked and how lives in its [`Family`]; this module holds the catalog,
//! the model's data and the canonical [`TaskSpec`] every dialect parses into.

pub mod entry;
pub mod family;
pub mod fields;
pub mod price;
pub mod size;
pub mod unified;

use std::collections::BTreeMap;

use anyhow::Context;
use figment::providers::{Format, Toml};
use serde::{Deserialize, Serialize};

pub use entry::ModelEntry;
pub use family::Family;
pub use fields::ValidationError;
use fields::{Checked, Fields};
use price::{ImageFacts, Tariff};
pub use size::Size;
use size::SizeBounds;

use crate::money::Micros;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OutputFormat {
    Jpeg,
    Png,
    Webp,
}

impl OutputFormat {
    pub const ALL: [OutputFormat; 3] = [OutputFormat::Jpeg, OutputFormat::Png, OutputFormat::Webp];

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|f| f.extension() == s)
    }

    pub fn extension(self) -> &'static str {
        match self {
            OutputFormat::Jpeg => "jpeg",
            OutputFormat::Png => "png",
            OutputFormat::Webp => "webp",
        }
    }

    pub fn mime(self) -> &'static str {
        match self {
            OutputFormat::Jpeg => "image/jpeg",
            OutputFormat::Png => "image/png",
            OutputFormat::Webp => "image/webp",
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
    /// The quality level asked for; none (or `auto`) lets the model choose.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quality: Option<Quality>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub transparent_background: bool,
    /// Preview frames to stream before the first image (OpenAI's `partial_images`, 0-3), where
    /// the client streams the answer.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub partial_images: u32,
    /// What the image should not show, for models that take it (diffusion models).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub negative_prompt: Option<String>,
    /// The sampler's seed, for models that take one; none lets the upstream choose.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

impl TaskSpec {
    /// A task of `model` with every option at its default.
    pub fn new(
        model: &Model,
        prompt: String,
        images: u32,
        size: Size,
        output_format: OutputFormat,
        references: Vec<String>,
    ) -> Self {
        Self::of(model.id.clone(), prompt, images, size, output_format, references)
    }

    fn of(
        model: String,
        prompt: String,
        images: u32,
        size: Size,
        output_format: OutputFormat,
        references: Vec<String>,
    ) -> Self {
        TaskSpec {
            model,
            prompt,
            images,
            size,
            output_format,
            references,
            sequential: false,
            web_search: false,
            mask: None,
            quality: None,
            transparent_background: false,
            partial_images: 0,
            negative_prompt: None,
            seed: None,
        }
    }
}

#[cfg(test)]
impl TaskSpec {
    /// One PNG image of `model` at `size`, every option at its default: for unit tests.
    pub fn example(model: &str, size: Size) -> Self {
        Self::of(model.into(), "p".into(), 1, size, OutputFormat::Png, Vec::new())
    }
}

/// A quality level of models that have them (GPT image models).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Quality {
    Auto,
    Low,
    Medium,
    High,
}

impl Quality {
    pub const LEVELS: [Quality; 3] = [Quality::Low, Quality::Medium, Quality::High];

    pub fn as_str(self) -> &'static str {
        match self {
            Quality::Auto => "auto",
            Quality::Low => "low",
            Quality::Medium => "medium",
            Quality::High => "high",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [Quality::Auto, Quality::Low, Quality::Medium, Quality::High].into_iter().find(|q| q.as_str() == s)
    }
}

/// What a model may be asked for besides prompt, size, count and references.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Capability {
    /// An inpainting mask for the first reference.
    Mask,
    WebSearch,
    /// One coherent series of images (Seedream's `sequential_image_generation`).
    Sequential,
    TransparentBackground,
}

impl Capability {
    const ALL: [Capability; 4] =
        [Capability::Mask, Capability::WebSearch, Capability::Sequential, Capability::TransparentBackground];

    pub fn as_str(self) -> &'static str {
        match self {
            Capability::Mask => "mask",
            Capability::WebSearch => "web_search",
            Capability::Sequential => "sequential",
            Capability::TransparentBackground => "transparent_background",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.as_str() == s)
    }
}

/// The public APIs a model can be offered in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Api {
    /// APIXO's `generateTask/{model}` (seeds 000-002).
    Apixo,
    /// The unified `POST /api/v1/images/generations` (seed 003).
    Unified,
    /// The OpenAI-compatible `/v1/images/*`.
    Openai,
}

impl Api {
    pub const ALL: [Api; 3] = [Api::Apixo, Api::Unified, Api::Openai];

    pub fn as_str(self) -> &'static str {
        match self {
            Api::Apixo => "apixo",
            Api::Unified => "unified",
            Api::Openai => "openai",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|a| a.as_str() == s)
    }

    /// Where a model is asked for in this API (`{model}` stands for its id).
    pub fn route(self) -> &'static str {
        match self {
            Api::Apixo => "/api/v1/generateTask/{model}",
            Api::Unified => "/api/v1/images/generations",
            Api::Openai => "/v1/images/generations",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Limits {
    pub max_prompt_chars: usize,
    pub max_references: usize,
    /// Images one task may ask for.
    pub max_images: u32,
}

/// The sizes a model renders: tiers (a family's size table) at aspect ratios, listed sizes, and
/// explicit sizes within bounds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sizes {
    pub tiers: Vec<String>,
    pub default_tier: Option<String>,
    pub aspect_ratios: Vec<String>,
    pub default_aspect_ratio: String,
    pub fixed: Vec<Size>,
    pub default_size: Option<Size>,
    pub custom: Option<SizeBounds>,
}

impl Sizes {
    pub fn tier_names(&self) -> Vec<&str> {
        self.tiers.iter().map(String::as_str).collect()
    }

    pub fn ratio_names(&self) -> Vec<&str> {
        self.aspect_ratios.iter().map(String::as_str).collect()
    }
}

/// A model of the catalog, resolved and checked.
#[derive(Debug, Clone)]
pub struct Model {
    pub id: String,
    pub family: Family,
    pub name: String,
    pub description: String,
    pub aliases: Vec<String>,
    pub apis: Vec<Api>,
    /// The id channels send upstream when their `models` table does not map this model.
    pub upstream_model: Option<String>,
    pub limits: Limits,
    pub sizes: Sizes,
    pub formats: Vec<OutputFormat>,
    pub default_format: OutputFormat,
    /// The formats the upstream renders itself; Easel converts to the others.
    pub native_formats: Vec<OutputFormat>,
    pub capabilities: Vec<Capability>,
    pub qualities: Vec<Quality>,
    /// Task creations per minute per account.
    pub rpm: u32,
    /// Pending plus processing tasks per account.
    pub max_concurrent: u32,
    /// The flat price and price rows (with no references yet).
    pub tariff: Tariff,
}

impl Model {
    pub fn can(&self, capability: Capability) -> bool {
        self.capabilities.contains(&capability)
    }

    pub fn offered_in(&self, api: Api) -> bool {
        self.apis.contains(&api)
    }

    /// The flat price per image.
    pub fn price(&self) -> Micros {
        self.tariff.flat
    }

    /// Parses the `input` object of an APIXO task request for this model.
    pub fn parse_apixo_input(&self, input: &serde_json::Value) -> Checked<TaskSpec> {
        if !self.offered_in(Api::Apixo) {
            return fields::invalid(format!(
                "model {} is offered through {}, not generateTask",
                self.id,
                self.apis.iter().map(|a| a.route()).collect::<Vec<_>>().join(" and ")
            ));
        }
        self.family.parse_apixo_input(self, input)
    }

    /// An output-format field: one of the model's formats, its default when absent.
    pub fn format_field(&self, f: &Fields<'_>, field: &str) -> Checked<OutputFormat> {
        let names: Vec<&str> = self.formats.iter().map(|f| f.extension()).collect();
        let chosen = f.choice(field, &names, Some(self.default_format.extension()))?;
        Ok(OutputFormat::parse(chosen).expect("listed formats parse"))
    }

    /// The cheapest request the model takes, and its price: one image at its smallest size (a
    /// listed size, a tier's at any of its aspect ratios, or the least its explicit sizes may
    /// have) and lowest quality, in its default format, with no references. A channel test sends
    /// it.
    pub fn cheapest_request(&self, prompt: &str) -> (TaskSpec, Micros) {
        let sizes = &self.sizes;
        let tiered = sizes
            .tiers
            .iter()
            .flat_map(|tier| sizes.aspect_ratios.iter().filter_map(move |ratio| self.family.tier_size(tier, ratio)));
        let least = sizes.custom.and_then(|bounds| bounds.check("size", bounds.min).ok());
        let size = sizes
            .fixed
            .iter()
            .copied()
            .chain(tiered)
            .chain(least)
            .min_by_key(|s| s.pixels())
            .expect("a model has sizes (checked when the catalog is built)");
        let quality = self.qualities.iter().copied().filter(|q| *q != Quality::Auto).min();
        let mut spec = TaskSpec::new(self, prompt.to_owned(), 1, size, self.default_format, Vec::new());
        spec.quality = quality;
        let price = self.tariff.price(&ImageFacts { size, quality }).unwrap_or(Micros(i64::MAX));
        (spec, price)
    }

    /// How a task of `spec` is priced, and what it holds per image: the highest price among the
    /// images it can produce (its size; its quality, or any of the model's when it leaves the
    /// choice to the model).
    pub fn tariff_for(&self, spec: &TaskSpec) -> anyhow::Result<(Tariff, Micros)> {
        let tariff = Tariff { references: spec.references.len() as u32, ..self.tariff.clone() };
        let qualities: Vec<Option<Quality>> = match spec.quality {
            Some(q) if q != Quality::Auto => vec![Some(q)],
            _ => self.qualities.iter().copied().map(Some).chain([None]).collect(),
        };
        let possible: Vec<ImageFacts> =
            qualities.into_iter().map(|quality| ImageFacts { size: spec.size, quality }).collect();
        let hold = tariff.highest(&possible).context("the price of this request overflows")?;
        Ok((tariff, hold))
    }
}

/// The built-in catalog file, embedded in the binary.
const BUILTIN: &str = include_str!("builtin.toml");

/// The built-in models with the operator's tables applied.
#[derive(Debug, Clone)]
pub struct Catalog {
    models: Vec<Model>,
    openai_default: Option<String>,
}

impl Catalog {
    /// The built-in catalog with the operator's `[models."<id>"]` tables over it. Any mistake in
    /// either stops start-up with a message naming the key.
    pub fn new(tables: &BTreeMap<String, ModelEntry>) -> anyhow::Result<Self> {
        let file: entry::CatalogFile =
            figment::Figment::from(Toml::string(BUILTIN)).extract().context("the built-in catalog is invalid")?;
        let mut entries = file.models;
        for (id, table) in tables {
            let stacked = match entries.remove(id) {
                Some(builtin) => table.clone().over(builtin),
                None => table.clone(),
            };
            entries.insert(id.clone(), stacked);
        }
        let mut models = Vec::with_capacity(entries.len());
        for (id, entry) in entries {
            if entry.enabled == Some(false) {
                continue;
            }
            let family = entry.family.clone().unwrap_or_default();
            let defaults = file.families.get(&family).cloned().unwrap_or_default();
            models.push(entry.over(defaults).resolve(&id)?);
        }
        entry::check_names(&models)?;
        let openai_default = Some(file.openai_default_model).filter(|id| models.iter().any(|m| &m.id == id));
        Ok(Self { models, openai_default })
    }

    /// The built-in catalog alone.
    pub fn builtin() -> Self {
        Self::new(&BTreeMap::new()).expect("the built-in catalog is valid")
    }

    /// A model by its id or one of its aliases.
    pub fn get(&self, name: &str) -> Option<&Model> {
        self.models
            .iter()
            .find(|m| m.id == name)
            .or_else(|| self.models.iter().find(|m| m.aliases.iter().any(|a| a == name)))
    }

    /// A model offered in `api`, by id or alias.
    pub fn offered(&self, name: &str, api: Api) -> Option<&Model> {
        self.get(name).filter(|m| m.offered_in(api))
    }

    pub fn models(&self) -> &[Model] {
        &self.models
    }

    /// The models offered in `api`, in id order.
    pub fn in_api(&self, api: Api) -> impl Iterator<Item = &Model> {
        self.models.iter().filter(move |m| m.offered_in(api))
    }

    /// The model `/v1/images/*` uses when a request names none.
    pub fn openai_default(&self) -> Option<&Model> {
        self.openai_default.as_deref().and_then(|id| self.offered(id, Api::Openai))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(toml: &str) -> BTreeMap<String, ModelEntry> {
        #[derive(Deserialize)]
        struct File {
            models: BTreeMap<String, ModelEntry>,
        }
        let file: File = figment::Figment::from(Toml::string(toml)).extract().unwrap();
        file.models
    }

    fn refused(toml: &str) -> String {
        format!("{:#}", Catalog::new(&table(toml)).unwrap_err())
    }

    #[test]
    fn the_builtin_catalog_keeps_the_seeds_prices() {
        let c = Catalog::builtin();
        assert_eq!(c.get("seedream-5-0").unwrap().price(), Micros(32_000));
        assert_eq!(c.get("gpt-image-1").unwrap().price(), Micros(40_000));
        assert_eq!(c.get("doubao-seedream-5-0-260128").unwrap().price(), Micros(35_000));
        assert_eq!(c.get("doubao-seedream-4-5-251128").unwrap().price(), Micros(40_000));
        assert_eq!(c.openai_default().unwrap().id, "gpt-image-1");
    }

    #[test]
    fn a_table_adds_overrides_or_withdraws_models() {
        let c = Catalog::new(&table(
            r#"
            [models."house-gpt"]
            family = "gpt-image"
            aliases = ["house-dalle"]
            price_usd = 0.05
            [models."seedream-5-0"]
            price_usd = 0.02
            [models."gpt-image-1-mini"]
            enabled = false
            "#,
        ))
        .unwrap();
        let house = c.get("house-dalle").unwrap();
        assert_eq!(
            (house.id.as_str(), house.price(), house.limits.max_prompt_chars),
            ("house-gpt", Micros(50_000), 32_000)
        );
        assert_eq!(c.get("seedream-5-0").unwrap().price(), Micros(20_000));
        assert_eq!(c.get("seedream-5-0").unwrap().rpm, 60);
        assert!(c.get("gpt-image-1-mini").is_none());
    }

    #[test]
    fn mistakes_name_their_key() {
        let cases = [
            ("family = \"dall-e\"\nprice_usd = 1", "[models.\"x\"].family: unknown family \"dall-e\""),
            ("family = \"gpt-image\"", "[models.\"x\"].price_usd is required"),
            ("family = \"gpt-image\"\nprice_usd = -1", "[models.\"x\"].price_usd: -1 is not a finite"),
            ("family = \"gpt-image\"\nprice_usd = inf", "[models.\"x\"].price_usd: inf is not a finite"),
            ("family = \"gpt-image\"\nprice_usd = 1\nsizes = [\"9000x9000\"]", "[models.\"x\"].sizes"),
            ("family = \"seedream\"\nprice_usd = 1\ncapabilities = [\"mask\"]", "the seedream family cannot do mask"),
            ("family = \"seedream\"\nprice_usd = 1\nformats = [\"webp\"]", "the seedream family cannot output webp"),
            ("family = \"gpt-image\"\nprice_usd = 1\naliases = [\"gpt-image-1\"]", "already names \"gpt-image-1\""),
            ("family = \"gpt-image\"\nprice_usd = 1\n[[models.x.prices]]\ntier = \"9K\"\nusd = 1", "no tier \"9K\""),
            (
                "family = \"seedream\"\nprice_usd = 1\ncustom_size = { min = \"64x64\", max = \"9000x9000\", max_ratio = 16 }",
                "custom_size",
            ),
        ];
        for (table, expected) in cases {
            let message = refused(&format!("[models.x]\n{table}"));
            assert!(message.contains(expected), "{table}: {message}");
        }
    }

    #[test]
    fn the_cheapest_request_is_one_image_at_the_smallest_size_and_lowest_quality() {
        let c = Catalog::builtin();
        let (spec, price) = c.get("gpt-image-1.5").unwrap().cheapest_request("p");
        assert_eq!((spec.images, spec.size, spec.quality), (1, Size::new(1024, 1024), Some(Quality::Low)));
        assert_eq!(price, Micros(9_000));
        // Seedream 5.0's explicit sizes go below its 2K presets.
        let (spec, price) = c.get("seedream-5-0").unwrap().cheapest_request("p");
        assert_eq!((spec.size, spec.quality, spec.references.len()), (Size::new(1280, 720), None, 0));
        assert_eq!(price, Micros(32_000));
        // Seedream 4.5's explicit sizes start at 2560x1440, still below its presets.
        let (spec, _) = c.get("seedream-4-5").unwrap().cheapest_request("p");
        assert_eq!(spec.size, Size::new(2560, 1440));
        let (spec, price) = c.get("gpt-image-2").unwrap().cheapest_request("p");
        assert_eq!((spec.size, spec.quality, price), (Size::new(1024, 640), Some(Quality::Low), Micros(20_000)));
    }

    #[test]
    fn a_hold_is_the_highest_reachable_price() {
        let c = Catalog::builtin();
        let model = c.get("gpt-image-1.5").unwrap();
        let mut spec = TaskSpec::new(model, "p".into(), 1, Size::new(1536, 1024), OutputFormat::Png, vec![]);
        assert_eq!(model.tariff_for(&spec).unwrap().1, Micros(200_000));
        spec.quality = Some(Quality::Low);
        assert_eq!(model.tariff_for(&spec).unwrap().1, Micros(13_000));
    }
}
