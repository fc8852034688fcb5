//! Black Forest Labs' FLUX models on their own API: FLUX.1 Kontext (asked by aspect ratio, about
//! one megapixel) and FLUX.2 (asked by width and height, up to four megapixels).

use crate::catalog::Size;
use crate::catalog::size::SizeBounds;

/// FLUX.2's explicit sizes: 64 pixels a side at least, four megapixels at most, sides in
/// multiples of 16.
pub const BOUNDS: SizeBounds = SizeBounds {
    min: Size::new(64, 64),
    max: Size::new(2048, 2048),
    max_ratio: 4,
    multiple_of: Some(16),
    max_side: None,
};

/// Tiers by the most pixels a size of theirs has; only 1MP is a size table (Kontext's).
pub const TIERS: [(&str, u64); 2] = [("1MP", 1100 * 1100), ("4MP", 2048 * 2048)];

pub fn tier_size(tier: &str, aspect_ratio: &str) -> Option<Size> {
    match tier {
        "1MP" => super::tiered::scaled(1024, aspect_ratio, 16),
        _ => None,
    }
}
