//! Output pixel sizes: the preset table of seed 001 and explicit `W×H` sizes.

use serde::{Deserialize, Serialize};

use super::fields::{Checked, invalid};

/// Pixel dimensions. Stored as `{"width","height"}`; read from that or from `"WIDTHxHEIGHT"`
/// (as data files and price rows write it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "SizeRepr")]
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

    /// The reduced ratio: 1536×1024 is `3:2`.
    pub fn aspect_ratio(self) -> String {
        fn gcd(a: u32, b: u32) -> u32 {
            if b == 0 { a } else { gcd(b, a % b) }
        }
        let d = gcd(self.width, self.height).max(1);
        format!("{}:{}", self.width / d, self.height / d)
    }
}

impl std::fmt::Display for Size {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}x{}", self.width, self.height)
    }
}

pub const ASPECT_RATIOS: [&str; 10] = ["1:1", "4:3", "3:4", "16:9", "9:16", "3:2", "2:3", "21:9", "4:5", "5:4"];

/// Seedream 5.0's sizes for each aspect ratio, at 2K and 3K (seed 001).
pub(super) const SEEDREAM_PRESETS: [(&str, Size, Size); 8] = [
    ("1:1", Size::new(2048, 2048), Size::new(3072, 3072)),
    ("4:3", Size::new(2304, 1728), Size::new(3456, 2592)),
    ("3:4", Size::new(1728, 2304), Size::new(2592, 3456)),
    ("16:9", Size::new(2848, 1600), Size::new(4096, 2304)),
    ("9:16", Size::new(1600, 2848), Size::new(2304, 4096)),
    ("3:2", Size::new(2496, 1664), Size::new(3744, 2496)),
    ("2:3", Size::new(1664, 2496), Size::new(2496, 3744)),
    ("21:9", Size::new(3136, 1344), Size::new(4704, 2016)),
];

/// The 4K size for an aspect ratio: the largest multiple-of-16 size at that ratio with at most
/// `max_pixels` (4096×4096 for Seedream: 1:1 gives 4096×4096).
pub fn four_k(aspect_ratio: &str, max_pixels: u64) -> Option<Size> {
    let (a, b) = aspect_ratio.split_once(':')?;
    let (a, b): (f64, f64) = (a.parse().ok()?, b.parse().ok()?);
    let budget = max_pixels as f64;
    let floor16 = |v: f64| ((v / 16.0).floor() * 16.0) as u32;
    let size = Size::new(floor16((budget * a / b).sqrt()), floor16((budget * b / a).sqrt()));
    (size.pixels() <= max_pixels).then_some(size)
}

/// The explicit `W×H` sizes a model takes: total pixels between those of `min` and `max`, an
/// aspect ratio within `max_ratio`:1, and where set, sides that are multiples of `multiple_of`
/// and at most `max_side`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SizeBounds {
    pub min: Size,
    pub max: Size,
    pub max_ratio: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub multiple_of: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_side: Option<u32>,
}

impl SizeBounds {
    /// Why `size` is outside these bounds, if it is; `name` names the field.
    pub fn check(&self, name: &str, size: Size) -> Checked<Size> {
        let Size { width, height } = size;
        if width == 0 || height == 0 || !(self.min.pixels()..=self.max.pixels()).contains(&size.pixels()) {
            return invalid(format!(
                "{name} must have between {} and {} pixels in total (got {size})",
                self.min, self.max
            ));
        }
        let ratio = u64::from(self.max_ratio);
        if u64::from(width) > u64::from(height) * ratio || u64::from(height) > u64::from(width) * ratio {
            let r = self.max_ratio;
            return invalid(format!("{name} must have an aspect ratio between 1:{r} and {r}:1 (got {size})"));
        }
        if let Some(m) = self.multiple_of.filter(|m| *m > 1)
            && (width % m != 0 || height % m != 0)
        {
            return invalid(format!("{name} must have a width and height that are multiples of {m} (got {size})"));
        }
        if let Some(side) = self.max_side
            && width.max(height) > side
        {
            return invalid(format!("{name} must have no side longer than {side} pixels (got {size})"));
        }
        Ok(size)
    }

    /// Whether every size within `self` is also within `outer`.
    pub fn within(&self, outer: &SizeBounds) -> bool {
        self.min.pixels() >= outer.min.pixels()
            && self.max.pixels() <= outer.max.pixels()
            && self.max_ratio <= outer.max_ratio
            && outer.max_side.is_none_or(|side| self.max_side.is_some_and(|s| s <= side))
            && outer.multiple_of.is_none_or(|m| self.multiple_of.is_some_and(|s| s % m == 0))
    }
}

/// Reads `W×H` written with `x`, `X` or `*`; `forms` says what the field takes, for the message.
pub fn parse_wxh(name: &str, raw: &str, forms: &str) -> Checked<Size> {
    let rule = || invalid(format!("{name} must be {forms}"));
    let Some((w, h)) = raw.split_once(['x', 'X', '*']) else {
        return rule();
    };
    let (Ok(width), Ok(height)) = (w.trim().parse::<u32>(), h.trim().parse::<u32>()) else {
        return rule();
    };
    Ok(Size::new(width, height))
}

/// An explicit size within `bounds`.
pub fn parse_explicit(name: &str, raw: &str, bounds: &SizeBounds, forms: &str) -> Checked<Size> {
    bounds.check(name, parse_wxh(name, raw, forms)?)
}

#[derive(Deserialize)]
#[serde(untagged)]
enum SizeRepr {
    Text(String),
    Fields { width: u32, height: u32 },
}

impl TryFrom<SizeRepr> for Size {
    type Error = String;

    fn try_from(repr: SizeRepr) -> Result<Self, String> {
        match repr {
            SizeRepr::Text(text) => text.parse(),
            SizeRepr::Fields { width, height } => Ok(Size::new(width, height)),
        }
    }
}

impl std::str::FromStr for Size {
    type Err = String;

    fn from_str(raw: &str) -> Result<Self, String> {
        let (w, h) = raw.split_once(['x', 'X']).ok_or_else(|| format!("{raw:?} is not WIDTHxHEIGHT"))?;
        match (w.trim().parse::<u32>(), h.trim().parse::<u32>()) {
            (Ok(w), Ok(h)) if w > 0 && h > 0 => Ok(Size::new(w, h)),
            _ => Err(format!("{raw:?} is not WIDTHxHEIGHT")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEEDREAM: SizeBounds = SizeBounds {
        min: Size::new(1280, 720),
        max: Size::new(4096, 4096),
        max_ratio: 16,
        multiple_of: None,
        max_side: None,
    };
    const FORMS: &str = "2K, 3K or WIDTHxHEIGHT such as 2048x2048";

    #[test]
    fn four_k_sizes_stay_within_the_pixel_limit() {
        let max = 4096 * 4096;
        assert_eq!(four_k("1:1", max), Some(Size::new(4096, 4096)));
        assert_eq!(four_k("16:9", max), Some(Size::new(5456, 3072)));
        for ratio in ASPECT_RATIOS {
            let size = four_k(ratio, max).unwrap();
            assert!(size.pixels() <= max && size.pixels() > 4000 * 4000, "{ratio}: {size}");
        }
    }

    #[test]
    fn explicit_sizes_accept_three_separators() {
        for raw in ["3072x3072", "3072X3072", "3072*3072"] {
            assert_eq!(parse_explicit("size", raw, &SEEDREAM, FORMS), Ok(Size::new(3072, 3072)));
        }
    }

    #[test]
    fn explicit_sizes_are_bounded() {
        let parse = |raw| parse_explicit("size", raw, &SEEDREAM, FORMS);
        assert!(parse("1280x720").is_ok());
        assert!(parse("1279x720").is_err());
        assert!(parse("4096x4097").is_err());
        // 17:1 fits the pixel range but not the ratio.
        assert!(parse("8160x480").is_err());
        assert_eq!(parse("big").unwrap_err().0, format!("size must be {FORMS}"));
        assert!(parse("-5x100").is_err());
    }

    #[test]
    fn sides_and_multiples_where_bounded() {
        let gpt = SizeBounds { max_ratio: 3, multiple_of: Some(16), max_side: Some(3840), ..SEEDREAM };
        assert!(gpt.check("size", Size::new(3840, 2160)).is_ok());
        assert!(gpt.check("size", Size::new(3850, 2160)).is_err());
        assert!(gpt.check("size", Size::new(4096, 1024)).is_err());
        assert!(gpt.within(&SEEDREAM) && !SEEDREAM.within(&gpt));
    }

    #[test]
    fn sizes_read_as_width_x_height() {
        assert_eq!("1536x1024".parse::<Size>(), Ok(Size::new(1536, 1024)));
        assert!("0x5".parse::<Size>().is_err());
    }
}
