//! Prices per delivered image: a model's flat `price_usd` and its price rows, keyed on what an
//! image turned out to be (quality, exact size, size tier) and adding a per-reference amount.
//!
//! At submit a task holds, per image, the highest price its request can reach; at the end each
//! delivered image is charged what it actually was (never more than its hold). The tariff is
//! copied onto the task, so a price change after submit does not change what it settles at.

use serde::{Deserialize, Serialize};

use super::family::Family;
use super::{Quality, Size};
use crate::money::Micros;

/// One price row: the first row whose every key matches an image sets its price.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PriceRow {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quality: Option<Quality>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<Size>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tier: Option<String>,
    /// The image's price; the model's flat price where the row sets none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub price: Option<Micros>,
    /// Added to the image's price once per reference image of the task.
    #[serde(default)]
    pub per_reference: Micros,
}

/// What a delivered image was, as far as pricing asks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageFacts {
    pub size: Size,
    /// Unknown when the upstream did not say (such an image matches no row keyed on quality).
    pub quality: Option<Quality>,
}

/// How one task is priced: the model's prices at submit, and what the request fixed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tariff {
    pub family: Family,
    pub flat: Micros,
    #[serde(default)]
    pub rows: Vec<PriceRow>,
    /// The task's reference images, for the rows' per-reference amounts.
    #[serde(default)]
    pub references: u32,
}

impl Tariff {
    /// The price of one image, or `None` if it overflows (the catalog bounds prices far below).
    pub fn price(&self, image: &ImageFacts) -> Option<Micros> {
        let tier = self.family.tier_of(image.size);
        let row = self.rows.iter().find(|row| {
            row.quality.is_none_or(|q| image.quality == Some(q))
                && row.size.is_none_or(|s| s == image.size)
                && row.tier.as_deref().is_none_or(|t| tier == Some(t))
        });
        let (base, per_reference) = match row {
            Some(row) => (row.price.unwrap_or(self.flat), row.per_reference),
            None => (self.flat, Micros::ZERO),
        };
        base.checked_add(Micros(per_reference.0.checked_mul(i64::from(self.references))?))
    }

    /// The hold per image: the highest price among the images a request can produce.
    pub fn highest(&self, possible: &[ImageFacts]) -> Option<Micros> {
        possible.iter().map(|image| self.price(image)).try_fold(Micros::ZERO, |max, p| Some(max.max(p?)))
    }

    /// What the delivered images cost, each at its own price but never above `per_image_hold`.
    pub fn charge(&self, delivered: &[ImageFacts], per_image_hold: Micros) -> Micros {
        delivered.iter().fold(Micros::ZERO, |sum, image| {
            let price = self.price(image).unwrap_or(per_image_hold).min(per_image_hold);
            sum.checked_add(price).unwrap_or(sum)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(quality: Option<Quality>, size: Option<Size>, tier: Option<&str>, usd: i64) -> PriceRow {
        PriceRow { quality, size, tier: tier.map(str::to_owned), price: Some(Micros(usd)), per_reference: Micros::ZERO }
    }

    fn gpt() -> Tariff {
        Tariff {
            family: Family::GptImage,
            flat: Micros(40_000),
            rows: vec![
                row(Some(Quality::High), Some(Size::new(1024, 1024)), None, 167_000),
                row(Some(Quality::High), None, None, 250_000),
                row(Some(Quality::Low), None, None, 11_000),
            ],
            references: 0,
        }
    }

    #[test]
    fn the_first_matching_row_wins_else_the_flat_price() {
        let t = gpt();
        let facts = |w, h, q| ImageFacts { size: Size::new(w, h), quality: q };
        assert_eq!(t.price(&facts(1024, 1024, Some(Quality::High))), Some(Micros(167_000)));
        assert_eq!(t.price(&facts(1536, 1024, Some(Quality::High))), Some(Micros(250_000)));
        assert_eq!(t.price(&facts(1536, 1024, Some(Quality::Low))), Some(Micros(11_000)));
        // Medium has no row, and an unreported quality matches no quality row.
        assert_eq!(t.price(&facts(1024, 1024, Some(Quality::Medium))), Some(Micros(40_000)));
        assert_eq!(t.price(&facts(1024, 1024, None)), Some(Micros(40_000)));
    }

    #[test]
    fn tiers_follow_the_familys_pixel_ceilings() {
        let t = Tariff {
            family: Family::Seedream,
            flat: Micros(30_000),
            rows: vec![row(None, None, Some("4K"), 60_000), row(None, None, Some("2K"), 30_000)],
            references: 0,
        };
        let at = |w, h| t.price(&ImageFacts { size: Size::new(w, h), quality: None }).unwrap();
        assert_eq!(at(2848, 1600), Micros(30_000));
        assert_eq!(at(4096, 4096), Micros(60_000));
        // 3K has no row: the flat price.
        assert_eq!(at(3072, 3072), Micros(30_000));
    }

    #[test]
    fn references_add_their_amount_per_image() {
        let mut t = gpt();
        t.rows.insert(0, PriceRow { per_reference: Micros(5_000), ..row(None, None, None, 20_000) });
        t.references = 3;
        assert_eq!(t.price(&ImageFacts { size: Size::new(1024, 1024), quality: None }), Some(Micros(35_000)));
    }

    #[test]
    fn a_charge_never_passes_the_hold() {
        let t = gpt();
        let high = ImageFacts { size: Size::new(1536, 1024), quality: Some(Quality::High) };
        let low = ImageFacts { size: Size::new(1024, 1024), quality: Some(Quality::Low) };
        assert_eq!(t.highest(&[low.clone(), high.clone()]), Some(Micros(250_000)));
        assert_eq!(t.charge(&[low.clone(), high.clone()], Micros(250_000)), Micros(261_000));
        assert_eq!(t.charge(&[high], Micros(100_000)), Micros(100_000));
    }
}
