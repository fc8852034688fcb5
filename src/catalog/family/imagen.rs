//! Google's Imagen 4 models, asked through `predict` with an aspect ratio and, for the
//! standard and ultra models, an image size of 1K or 2K. They take no reference image.

use crate::catalog::Size;
use crate::catalog::size::SizeBounds;

pub const BOUNDS: SizeBounds = SizeBounds {
    min: Size::new(512, 512),
    max: Size::new(2200, 2200),
    max_ratio: 2,
    multiple_of: Some(16),
    max_side: None,
};

const SIDES: [(&str, u32); 2] = [("1K", 1024), ("2K", 2048)];
pub const TIERS: [(&str, u64); 2] = [("1K", 1100 * 1100), ("2K", 2200 * 2200)];

pub fn tier_size(tier: &str, aspect_ratio: &str) -> Option<Size> {
    let (_, side) = SIDES.iter().find(|(name, _)| *name == tier)?;
    super::tiered::scaled(*side, aspect_ratio, 16)
}
