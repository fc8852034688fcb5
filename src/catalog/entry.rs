//! A model as data: the shape of `[models."<id>"]` in `easel.toml`, of the built-in catalog
//! file and of its `[families.<name>]` defaults. Every key is optional so that layers can be
//! stacked (family defaults, then the built-in model, then the operator's table); the stacked
//! entry is checked and resolved into a [`Model`](super::Model) once, at start-up.

use std::collections::BTreeMap;

use anyhow::{Context, bail, ensure};
use serde::{Deserialize, Serialize};

use super::family::Family;
use super::price::{PriceRow, Tariff};
use super::size::{ASPECT_RATIOS, SizeBounds};
use super::{Api, Capability, Limits, Model, OutputFormat, Quality, Size, Sizes};
use crate::money::Micros;

/// The most a price may be: far above any image's, far below what could overflow a hold.
const MAX_PRICE_USD: f64 = 1_000.0;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelEntry {
    pub family: Option<String>,
    /// Display name.
    pub name: Option<String>,
    pub description: Option<String>,
    /// Other names accepted for the model.
    pub aliases: Option<Vec<String>>,
    /// Where it is offered: `apixo`, `unified`, `openai`.
    pub apis: Option<Vec<String>>,
    /// The id channels send upstream when their `models` table does not map this model.
    pub upstream_model: Option<String>,
    /// `false` withdraws the model.
    pub enabled: Option<bool>,
    /// Flat price per delivered image, for images no price row matches.
    pub price_usd: Option<f64>,
    /// Price rows: the first that matches an image sets its price.
    pub prices: Option<Vec<PriceEntry>>,
    /// Default task creations per minute per account.
    pub rpm: Option<u32>,
    /// Default unfinished tasks per account.
    pub max_concurrent: Option<u32>,
    pub max_prompt_chars: Option<usize>,
    pub max_references: Option<usize>,
    pub max_images: Option<u32>,
    /// Listed sizes (`"1024x1024"`), for families that list theirs.
    pub sizes: Option<Vec<String>>,
    pub default_size: Option<String>,
    /// Size tiers (`"2K"`), for families with tier tables.
    pub tiers: Option<Vec<String>>,
    pub default_tier: Option<String>,
    pub aspect_ratios: Option<Vec<String>>,
    pub default_aspect_ratio: Option<String>,
    /// Bounds of explicit `W×H` sizes, where the model takes them.
    pub custom_size: Option<SizeBounds>,
    pub formats: Option<Vec<String>>,
    pub default_format: Option<String>,
    /// The formats the upstream renders itself (default: all of `formats`); Easel converts to the others.
    pub native_formats: Option<Vec<String>>,
    /// `mask`, `web_search`, `sequential`, `transparent_background`.
    pub capabilities: Option<Vec<String>>,
    /// `low`, `medium`, `high`.
    pub qualities: Option<Vec<String>>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PriceEntry {
    pub quality: Option<String>,
    /// An exact size, `"1536x1024"`.
    pub size: Option<String>,
    /// A size tier of the family, `"2K"`.
    pub tier: Option<String>,
    pub usd: Option<f64>,
    pub per_reference_usd: Option<f64>,
}

/// The built-in catalog file: family defaults and models.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CatalogFile {
    /// The model `/v1/images/*` uses when a request names none.
    pub openai_default_model: String,
    pub families: BTreeMap<String, ModelEntry>,
    pub models: BTreeMap<String, ModelEntry>,
}

macro_rules! stack {
    ($top:expr, $base:expr, $($field:ident),* $(,)?) => {
        ModelEntry { $($field: $top.$field.or($base.$field)),* }
    };
}

impl ModelEntry {
    /// This entry's keys, and `base`'s where this one has none.
    pub fn over(self, base: ModelEntry) -> ModelEntry {
        stack!(
            self,
            base,
            family,
            name,
            description,
            aliases,
            apis,
            upstream_model,
            enabled,
            price_usd,
            prices,
            rpm,
            max_concurrent,
            max_prompt_chars,
            max_references,
            max_images,
            sizes,
            default_size,
            tiers,
            default_tier,
            aspect_ratios,
            default_aspect_ratio,
            custom_size,
            formats,
            default_format,
            native_formats,
            capabilities,
            qualities,
        )
    }

    /// Checks the stacked entry and builds the model; errors name `[models."<id>"].<key>`.
    pub fn resolve(self, id: &str) -> anyhow::Result<Model> {
        let key = |k: &str| format!("[models.{id:?}].{k}");
        let family_name = self.family.as_deref().with_context(|| format!("{} is required", key("family")))?;
        let family = Family::parse(family_name).with_context(|| {
            let known: Vec<&str> = Family::ALL.iter().map(|f| f.as_str()).collect();
            format!("{}: unknown family {family_name:?} (known: {})", key("family"), known.join(", "))
        })?;
        ensure!(
            !id.trim().is_empty() && !id.contains('/'),
            "[models.{id:?}]: a model id must be non-empty, without '/'"
        );
        let apis = match &self.apis {
            None => Api::ALL.to_vec(),
            some => {
                each(some, |n| Api::parse(n).with_context(|| format!("unknown API {n:?} (apixo, unified, openai)")))
                    .with_context(|| key("apis"))?
            }
        };
        let limits = Limits {
            max_prompt_chars: positive(self.max_prompt_chars, &key("max_prompt_chars"))?,
            max_references: self.max_references.with_context(|| format!("{} is required", key("max_references")))?,
            max_images: positive(self.max_images, &key("max_images"))?,
        };
        ensure!(limits.max_images <= 15, "{}: at most 15 images per task", key("max_images"));
        let sizes = sizes(&self, family, &key)?;
        let family_name = family.as_str();
        let formats = each(&self.formats, |f| {
            let format = OutputFormat::parse(f).with_context(|| format!("unknown format {f:?}"))?;
            ensure!(family.formats().contains(&format), "the {family_name} family cannot output {f}");
            Ok(format)
        })
        .with_context(|| key("formats"))?;
        ensure!(!formats.is_empty(), "{} must list at least one format", key("formats"));
        let of_the_model = |f: &str| {
            OutputFormat::parse(f)
                .filter(|f| formats.contains(f))
                .with_context(|| format!("{f:?} is not one of the model's formats"))
        };
        let default_format = match &self.default_format {
            Some(f) => of_the_model(f).with_context(|| key("default_format"))?,
            None => formats[0],
        };
        let native_formats = match &self.native_formats {
            None => formats.clone(),
            some => each(some, of_the_model).with_context(|| key("native_formats"))?,
        };
        let capabilities = each(&self.capabilities, |c| {
            let cap = Capability::parse(c).with_context(|| format!("unknown capability {c:?}"))?;
            ensure!(family.capabilities().contains(&cap), "the {family_name} family cannot do {c}");
            Ok(cap)
        })
        .with_context(|| key("capabilities"))?;
        let qualities = each(&self.qualities, |q| {
            let quality = Quality::parse(q).filter(|q| *q != Quality::Auto);
            let quality = quality.with_context(|| format!("unknown quality {q:?} (low, medium, high)"))?;
            ensure!(family.has_qualities(), "the {family_name} family has no quality levels");
            Ok(quality)
        })
        .with_context(|| key("qualities"))?;
        let flat =
            price(self.price_usd, &key("price_usd"))?.with_context(|| format!("{} is required", key("price_usd")))?;
        let rows = self
            .prices
            .clone()
            .unwrap_or_default()
            .iter()
            .enumerate()
            .map(|(i, row)| price_row(row, family, &qualities, &format!("[[models.{id:?}.prices]] #{}", i + 1)))
            .collect::<anyhow::Result<_>>()?;
        let aliases = self.aliases.clone().unwrap_or_default();
        for alias in &aliases {
            ensure!(!alias.trim().is_empty() && alias != id, "{}: {alias:?} is not a usable alias", key("aliases"));
        }
        Ok(Model {
            id: id.to_owned(),
            family,
            name: self.name.clone().unwrap_or_else(|| id.to_owned()),
            description: self.description.clone().unwrap_or_default(),
            aliases,
            apis,
            upstream_model: self.upstream_model.clone(),
            limits,
            sizes,
            formats,
            default_format,
            native_formats,
            capabilities,
            qualities,
            rpm: self.rpm.with_context(|| format!("{} is required", key("rpm")))?,
            max_concurrent: self.max_concurrent.with_context(|| format!("{} is required", key("max_concurrent")))?,
            tariff: Tariff { family, flat, rows, references: 0 },
        })
    }
}

/// Each name of a list key, read with `read`; an absent key is an empty list.
fn each<T>(names: &Option<Vec<String>>, read: impl Fn(&str) -> anyhow::Result<T>) -> anyhow::Result<Vec<T>> {
    names.iter().flatten().map(|n| read(n)).collect()
}

fn positive<T: Copy + Default + PartialOrd>(value: Option<T>, key: &str) -> anyhow::Result<T> {
    let value = value.with_context(|| format!("{key} is required"))?;
    ensure!(value > T::default(), "{key} must be at least 1");
    Ok(value)
}

fn price(usd: Option<f64>, key: &str) -> anyhow::Result<Option<Micros>> {
    let Some(usd) = usd else { return Ok(None) };
    ensure!(usd.is_finite() && usd >= 0.0, "{key}: {usd} is not a finite, non-negative amount of USD");
    ensure!(usd <= MAX_PRICE_USD, "{key}: {usd} is more than ${MAX_PRICE_USD} an image");
    Ok(Some(Micros::from_usd(usd)?))
}

fn size(raw: &str, key: &str) -> anyhow::Result<Size> {
    raw.parse::<Size>().map_err(|e| anyhow::anyhow!("{key}: {e}"))
}

fn sizes(entry: &ModelEntry, family: Family, key: &dyn Fn(&str) -> String) -> anyhow::Result<Sizes> {
    let bounds = family.bounds();
    let fixed: Vec<Size> = entry
        .sizes
        .clone()
        .unwrap_or_default()
        .iter()
        .map(|raw| {
            let s = size(raw, &key("sizes"))?;
            bounds.check(&key("sizes"), s).map_err(|e| anyhow::anyhow!("{e}, the {} family's bounds", family.as_str()))
        })
        .collect::<anyhow::Result<_>>()?;
    let default_size = entry.default_size.as_deref().map(|raw| size(raw, &key("default_size"))).transpose()?;
    if let Some(d) = default_size {
        ensure!(fixed.contains(&d), "{}: {d} is not one of the model's sizes", key("default_size"));
    }
    let known_tiers: Vec<&str> = family.tiers().iter().map(|(t, _)| *t).collect();
    let tiers = entry.tiers.clone().unwrap_or_default();
    for tier in &tiers {
        ensure!(
            family.tier_size(tier, "1:1").is_some(),
            "{}: the {} family has no size table for {tier:?} (it has {})",
            key("tiers"),
            family.as_str(),
            if family.tier_size("2K", "1:1").is_some() { known_tiers.join(", ") } else { "none".into() }
        );
    }
    let default_tier = entry.default_tier.clone().or_else(|| tiers.first().cloned());
    if let Some(d) = &default_tier {
        ensure!(tiers.contains(d), "{}: {d:?} is not one of the model's tiers", key("default_tier"));
    }
    let aspect_ratios = entry.aspect_ratios.clone().unwrap_or_else(|| vec!["1:1".into()]);
    for ratio in &aspect_ratios {
        ensure!(ASPECT_RATIOS.contains(&ratio.as_str()), "{}: unknown aspect ratio {ratio:?}", key("aspect_ratios"));
    }
    for (tier, ratio) in tiers.iter().flat_map(|t| aspect_ratios.iter().map(move |r| (t, r))) {
        ensure!(
            family.tier_size(tier, ratio).is_some(),
            "{}: the {} family has no {tier} size at {ratio}",
            key("aspect_ratios"),
            family.as_str()
        );
    }
    let default_aspect_ratio = entry.default_aspect_ratio.clone().unwrap_or_else(|| aspect_ratios[0].clone());
    ensure!(
        aspect_ratios.contains(&default_aspect_ratio),
        "{}: {default_aspect_ratio:?} is not one of the model's aspect ratios",
        key("default_aspect_ratio")
    );
    if let Some(custom) = &entry.custom_size {
        ensure!(
            custom.min.pixels() <= custom.max.pixels() && custom.max_ratio >= 1 && custom.within(&bounds),
            "{}: {}..{} (ratio {}) is outside the {} family's bounds ({}..{}, ratio {})",
            key("custom_size"),
            custom.min,
            custom.max,
            custom.max_ratio,
            family.as_str(),
            bounds.min,
            bounds.max,
            bounds.max_ratio
        );
    }
    ensure!(
        !fixed.is_empty() || !tiers.is_empty(),
        "[{}]: a model needs sizes (listed sizes or tiers)",
        key("sizes").trim_start_matches('[').trim_end_matches(".sizes")
    );
    Ok(Sizes {
        tiers,
        default_tier,
        aspect_ratios,
        default_aspect_ratio,
        fixed,
        default_size,
        custom: entry.custom_size,
    })
}

fn price_row(row: &PriceEntry, family: Family, qualities: &[Quality], key: &str) -> anyhow::Result<PriceRow> {
    let quality = row
        .quality
        .as_deref()
        .map(|q| {
            Quality::parse(q)
                .filter(|q| qualities.contains(q))
                .with_context(|| format!("{key}.quality: {q:?} is not one of the model's qualities"))
        })
        .transpose()?;
    let size = row.size.as_deref().map(|raw| size(raw, &format!("{key}.size"))).transpose()?;
    if let Some(tier) = &row.tier {
        ensure!(
            family.tiers().iter().any(|(t, _)| t == tier),
            "{key}.tier: the {} family has no tier {tier:?}",
            family.as_str()
        );
    }
    let usd = price(row.usd, &format!("{key}.usd"))?;
    let per_reference = price(row.per_reference_usd, &format!("{key}.per_reference_usd"))?.unwrap_or_default();
    ensure!(usd.is_some() || row.per_reference_usd.is_some(), "{key}: a price row needs usd or per_reference_usd");
    Ok(PriceRow { quality, size, tier: row.tier.clone(), price: usd, per_reference })
}

/// Every id and alias names one model.
pub fn check_names(models: &[Model]) -> anyhow::Result<()> {
    let mut owners: BTreeMap<&str, &str> = models.iter().map(|m| (m.id.as_str(), m.id.as_str())).collect();
    for m in models {
        for alias in &m.aliases {
            if let Some(owner) = owners.insert(alias, &m.id) {
                bail!("[models.{:?}].aliases: {alias:?} already names {owner:?}", m.id);
            }
        }
    }
    Ok(())
}
