//! Google's Gemini image models ("Nano Banana": `gemini-2.5-flash-image` and its successors),
//! asked through `generateContent` with an aspect ratio and an image size of 1K, 2K or 4K.

use crate::catalog::Size;
use crate::catalog::size::SizeBounds;

/// Every size the Gemini image models render, 1K at 21:9 to 4K at 1:1.
pub const BOUNDS: SizeBounds = SizeBounds {
    min: Size::new(512, 512),
    max: Size::new(4400, 4400),
    max_ratio: 3,
    multiple_of: Some(16),
    max_side: None,
};

/// `imageSize`'s values, each by the side of its square and the most pixels any of its ratios has.
const SIDES: [(&str, u32); 3] = [("1K", 1024), ("2K", 2048), ("4K", 4096)];
pub const TIERS: [(&str, u64); 3] = [("1K", 1100 * 1100), ("2K", 2200 * 2200), ("4K", 4400 * 4400)];

pub fn tier_size(tier: &str, aspect_ratio: &str) -> Option<Size> {
    let (_, side) = SIDES.iter().find(|(name, _)| *name == tier)?;
    super::tiered::scaled(*side, aspect_ratio, 16)
}
