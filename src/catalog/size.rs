//! Output pixel sizes: the preset table of seed 001 and explicit `W×H` sizes.

use serde::{Deserialize, Serialize};

use super::fields::{Checked, invalid};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Size {
    pub width: u32,
    pub height: u32,
}

impl Size {
    pub const fn new(width: u32, height: u32) -> Self {
        Self { width, height }
    }

    pub fn pixels(self) -> u64 {
        u64::from(self.width) * u64::from(self.height)
    }
}

impl std::fmt::Display for Size {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}x{}", self.width, self.height)
    }
}

pub const ASPECT_RATIOS: [&str; 8] = ["1:1", "4:3", "3:4", "16:9", "9:16", "3:2", "2:3", "21:9"];

/// Seedream 5.0's sizes for each aspect ratio, at 2K and 3K (seed 001).
const SEEDREAM_PRESETS: [(&str, Size, Size); 8] = [
    ("1:1", Size::new(2048, 2048), Size::new(3072, 3072)),
    ("4:3", Size::new(2304, 1728), Size::new(3456, 2592)),
    ("3:4", Size::new(1728, 2304), Size::new(2592, 3456)),
    ("16:9", Size::new(2848, 1600), Size::new(4096, 2304)),
    ("9:16", Size::new(1600, 2848), Size::new(2304, 4096)),
    ("3:2", Size::new(2496, 1664), Size::new(3744, 2496)),
    ("2:3", Size::new(1664, 2496), Size::new(2496, 3744)),
    ("21:9", Size::new(3136, 1344), Size::new(4704, 2016)),
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resolution {
    TwoK,
    ThreeK,
}

impl Resolution {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "2K" => Some(Self::TwoK),
            "3K" => Some(Self::ThreeK),
            _ => None,
        }
    }
}

/// The size for a resolution tier and one of [`ASPECT_RATIOS`].
pub fn seedream_preset(resolution: Resolution, aspect_ratio: &str) -> Option<Size> {
    SEEDREAM_PRESETS.iter().find(|(ratio, ..)| *ratio == aspect_ratio).map(|(_, two_k, three_k)| match resolution {
        Resolution::TwoK => *two_k,
        Resolution::ThreeK => *three_k,
    })
}

/// The 4K size for an aspect ratio: the largest multiple-of-16 size at that ratio with at most
/// 4096×4096 pixels, the upstream's limit (1:1 gives 4096×4096).
pub fn four_k(aspect_ratio: &str) -> Option<Size> {
    let (a, b) = aspect_ratio.split_once(':')?;
    let (a, b): (f64, f64) = (a.parse().ok()?, b.parse().ok()?);
    let budget = MAX_PIXELS as f64;
    let floor16 = |v: f64| ((v / 16.0).floor() * 16.0) as u32;
    let size = Size::new(floor16((budget * a / b).sqrt()), floor16((budget * b / a).sqrt()));
    (size.pixels() <= MAX_PIXELS).then_some(size)
}

const MIN_PIXELS: u64 = 1280 * 720;
const MAX_PIXELS: u64 = 4096 * 4096;

/// Parses `W×H` written with `x`, `X` or `*`, within Seedream's bounds: 1280×720 to 4096×4096
/// pixels in total and an aspect ratio between 1:16 and 16:1.
pub fn parse_explicit(name: &str, raw: &str) -> Checked<Size> {
    let Some((w, h)) = raw.split_once(['x', 'X', '*']) else {
        return invalid(format!("{name} must be 2K, 3K or WIDTHxHEIGHT such as 2048x2048"));
    };
    let (Ok(width), Ok(height)) = (w.trim().parse::<u32>(), h.trim().parse::<u32>()) else {
        return invalid(format!("{name} must be 2K, 3K or WIDTHxHEIGHT such as 2048x2048"));
    };
    let size = Size::new(width, height);
    if width == 0 || height == 0 || !(MIN_PIXELS..=MAX_PIXELS).contains(&size.pixels()) {
        return invalid(format!("{name} must have between 1280x720 and 4096x4096 pixels in total (got {size})"));
    }
    if width > height * 16 || height > width * 16 {
        return invalid(format!("{name} must have an aspect ratio between 1:16 and 16:1 (got {size})"));
    }
    Ok(size)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_follow_seed_001() {
        assert_eq!(seedream_preset(Resolution::TwoK, "16:9"), Some(Size::new(2848, 1600)));
        assert_eq!(seedream_preset(Resolution::ThreeK, "21:9"), Some(Size::new(4704, 2016)));
        assert_eq!(seedream_preset(Resolution::TwoK, "5:4"), None);
    }

    #[test]
    fn four_k_sizes_stay_within_the_pixel_limit() {
        assert_eq!(four_k("1:1"), Some(Size::new(4096, 4096)));
        assert_eq!(four_k("16:9"), Some(Size::new(5456, 3072)));
        for ratio in ASPECT_RATIOS {
            let size = four_k(ratio).unwrap();
            assert!(size.pixels() <= 4096 * 4096 && size.pixels() > 4000 * 4000, "{ratio}: {size}");
        }
    }

    #[test]
    fn explicit_sizes_accept_three_separators() {
        for raw in ["3072x3072", "3072X3072", "3072*3072"] {
            assert_eq!(parse_explicit("size", raw), Ok(Size::new(3072, 3072)));
        }
    }

    #[test]
    fn explicit_sizes_are_bounded() {
        assert!(parse_explicit("size", "1280x720").is_ok());
        assert!(parse_explicit("size", "1279x720").is_err());
        assert!(parse_explicit("size", "4096x4097").is_err());
        // 17:1 fits the pixel range but not the ratio.
        assert!(parse_explicit("size", "8160x480").is_err());
        assert!(parse_explicit("size", "big").is_err());
        assert!(parse_explicit("size", "-5x100").is_err());
    }
}
