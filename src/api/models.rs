//! `GET /api/v1/models`: the catalog as clients see it, with no key needed: each model's APIs
//! and routes, limits, sizes, formats, capabilities and prices.

use axum::Json;
use axum::extract::State;
use serde::Serialize;
use utoipa::ToSchema;

use super::AppState;
use super::house::{Envelope, success};
use crate::catalog::price::PriceRow;
use crate::catalog::size::SizeBounds;
use crate::catalog::{Api, Model};

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = CatalogModelView)]
pub struct ModelView {
    #[schema(example = "seedream-5-0")]
    pub id: String,
    /// `seedream`, `gpt-image`, …
    #[schema(example = "seedream")]
    pub family: &'static str,
    pub name: String,
    pub description: String,
    /// Other names accepted for it.
    pub aliases: Vec<String>,
    /// `apixo`, `unified`, `openai`.
    pub apis: Vec<&'static str>,
    /// Where it is asked for, one route per API.
    pub routes: Vec<String>,
    pub limits: LimitsView,
    pub sizes: SizesView,
    /// Output formats; the first is the default.
    pub formats: Vec<&'static str>,
    /// `mask`, `web_search`, `sequential`, `transparent_background`.
    pub capabilities: Vec<&'static str>,
    /// Quality levels, for models that have them.
    pub qualities: Vec<&'static str>,
    pub default_limits: DefaultLimits,
    pub prices: PricesView,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = ModelLimits)]
pub struct LimitsView {
    pub max_prompt_chars: usize,
    pub max_references: usize,
    /// Images one task may ask for.
    pub max_images: u32,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = ModelSizes)]
pub struct SizesView {
    /// Size tiers (`2K`), each rendered at the aspect ratios below.
    pub tiers: Vec<String>,
    pub default_tier: Option<String>,
    pub aspect_ratios: Vec<String>,
    /// Listed sizes, `WIDTHxHEIGHT`.
    pub sizes: Vec<String>,
    pub default_size: Option<String>,
    /// Bounds of explicit `WIDTHxHEIGHT` sizes, where the model takes them.
    pub custom: Option<CustomSizes>,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = ModelCustomSizes)]
pub struct CustomSizes {
    /// Fewest pixels, as a size.
    pub min: String,
    /// Most pixels, as a size.
    pub max: String,
    pub max_ratio: u32,
    pub multiple_of: Option<u32>,
    pub max_side: Option<u32>,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = ModelDefaultLimits)]
pub struct DefaultLimits {
    /// Task creations per minute per account.
    pub rpm: u32,
    /// Unfinished tasks per account.
    pub max_concurrent: u32,
}

/// Prices per delivered image in USD: the first row that matches an image sets its price.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = ModelPrices)]
pub struct PricesView {
    /// Images no row matches.
    pub usd: f64,
    pub rows: Vec<PriceRowView>,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = ModelPriceRow)]
pub struct PriceRowView {
    pub quality: Option<&'static str>,
    pub size: Option<String>,
    pub tier: Option<String>,
    pub usd: f64,
    /// Added per reference image of the task.
    pub per_reference_usd: f64,
}

fn custom(b: &SizeBounds) -> CustomSizes {
    CustomSizes {
        min: b.min.to_string(),
        max: b.max.to_string(),
        max_ratio: b.max_ratio,
        multiple_of: b.multiple_of,
        max_side: b.max_side,
    }
}

fn row(model: &Model, r: &PriceRow) -> PriceRowView {
    PriceRowView {
        quality: r.quality.map(|q| q.as_str()),
        size: r.size.map(|s| s.to_string()),
        tier: r.tier.clone(),
        usd: r.price.unwrap_or(model.price()).to_usd(),
        per_reference_usd: r.per_reference.to_usd(),
    }
}

pub fn view(model: &Model) -> ModelView {
    let route = |api: &Api| api.route().replace("{model}", &model.id);
    let mut formats = vec![model.default_format];
    formats.extend(model.formats.iter().filter(|f| **f != model.default_format));
    ModelView {
        id: model.id.clone(),
        family: model.family.as_str(),
        name: model.name.clone(),
        description: model.description.clone(),
        aliases: model.aliases.clone(),
        apis: model.apis.iter().map(|a| a.as_str()).collect(),
        routes: model.apis.iter().map(route).collect(),
        limits: LimitsView {
            max_prompt_chars: model.limits.max_prompt_chars,
            max_references: model.limits.max_references,
            max_images: model.limits.max_images,
        },
        sizes: SizesView {
            tiers: model.sizes.tiers.clone(),
            default_tier: model.sizes.default_tier.clone(),
            aspect_ratios: model.sizes.aspect_ratios.clone(),
            sizes: model.sizes.fixed.iter().map(|s| s.to_string()).collect(),
            default_size: model.sizes.default_size.map(|s| s.to_string()),
            custom: model.sizes.custom.as_ref().map(custom),
        },
        formats: formats.iter().map(|f| f.extension()).collect(),
        capabilities: model.capabilities.iter().map(|c| c.as_str()).collect(),
        qualities: model.qualities.iter().map(|q| q.as_str()).collect(),
        default_limits: DefaultLimits { rpm: model.rpm, max_concurrent: model.max_concurrent },
        prices: PricesView {
            usd: model.price().to_usd(),
            rows: model.tariff.rows.iter().map(|r| row(model, r)).collect(),
        },
    }
}

/// The catalog.
#[utoipa::path(
    get,
    path = "/api/v1/models",
    operation_id = "listCatalog",
    tag = "Models",
    security(()),
    responses(
        (status = 200, description = "Every model this server offers", body = Envelope<Vec<ModelView>>),
    ),
)]
pub async fn list(State(state): State<AppState>) -> Json<Envelope<Vec<ModelView>>> {
    success(state.catalog.models().iter().map(view).collect())
}
