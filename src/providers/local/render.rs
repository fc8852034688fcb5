//! The local renderer: a deterministic picture drawn from the prompt. The same prompt and index
//! give the same pixels; different prompts give different palettes, shapes and compositions.
//! Reference images, when given, form the picture's underlay, so image-to-image visibly uses them.

use image::RgbImage;
use sha2::{Digest, Sha256};

use crate::catalog::Size;

/// A small, fast, seedable generator (SplitMix64); quality is ample for picking shapes.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    fn unit(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 24) as f32
    }

    fn range(&mut self, lo: f32, hi: f32) -> f32 {
        lo + (hi - lo) * self.unit()
    }
}

/// Preview `index` of `of` of a finished picture: the picture seen through ever finer grids,
/// from a blur of 1/64 of its size to 1/4 (each preview four times sharper than the one before).
pub fn preview(picture: &RgbImage, index: u32, of: u32) -> RgbImage {
    use image::imageops::{FilterType, resize};
    let coarseness = 4u32.pow(of.saturating_sub(index).min(3));
    let (w, h) = (picture.width(), picture.height());
    let small = resize(picture, (w / coarseness).max(1), (h / coarseness).max(1), FilterType::Triangle);
    resize(&small, w, h, FilterType::Triangle)
}

fn prompt_seed(prompt: &str) -> u64 {
    let digest = Sha256::digest(prompt.as_bytes());
    u64::from_le_bytes(digest[..8].try_into().expect("8 bytes"))
}

fn hsl(h: f32, s: f32, l: f32) -> [u8; 3] {
    let c = (1.0 - (2.0 * l - 1.0).abs()) * s;
    let hp = (h.rem_euclid(360.0)) / 60.0;
    let x = c * (1.0 - (hp % 2.0 - 1.0).abs());
    let (r, g, b) = match hp as u32 {
        0 => (c, x, 0.0),
        1 => (x, c, 0.0),
        2 => (0.0, c, x),
        3 => (0.0, x, c),
        4 => (x, 0.0, c),
        _ => (c, 0.0, x),
    };
    let m = l - c / 2.0;
    [((r + m) * 255.0) as u8, ((g + m) * 255.0) as u8, ((b + m) * 255.0) as u8]
}

#[derive(Clone, Copy)]
enum Shape {
    Disc {
        cx: f32,
        cy: f32,
        r: f32,
    },
    Ring {
        cx: f32,
        cy: f32,
        r: f32,
        width: f32,
    },
    Rect {
        x0: f32,
        y0: f32,
        x1: f32,
        y1: f32,
    },
    /// A straight band across the canvas: points whose distance to the line is under `half`.
    Band {
        nx: f32,
        ny: f32,
        offset: f32,
        half: f32,
    },
}

struct Stroke {
    shape: Shape,
    color: [u8; 3],
    /// Opacity out of 256.
    alpha: u32,
}

/// What every image of one prompt shares: palette and composition.
struct Scene {
    background: ([u8; 3], [u8; 3], f32),
    strokes: Vec<Stroke>,
}

/// Coordinates are in canvas units (the short side is 1.0), so a scene scales to any size.
fn scene(prompt: &str, variant: u64, drift: f32) -> Scene {
    let mut rng = Rng(prompt_seed(prompt) ^ variant.wrapping_mul(0xA24B_AED4_963E_E407));
    let base_hue = rng.range(0.0, 360.0);
    let spread = rng.range(25.0, 160.0);
    let saturation = rng.range(0.45, 0.9);
    let palette: Vec<[u8; 3]> =
        (0..5).map(|i| hsl(base_hue + spread * i as f32 + drift * 40.0, saturation, rng.range(0.3, 0.75))).collect();
    let background = (
        hsl(base_hue + 180.0, saturation * 0.6, rng.range(0.12, 0.3)),
        hsl(base_hue + spread, saturation * 0.7, rng.range(0.45, 0.7)),
        rng.range(0.0, std::f32::consts::TAU),
    );
    let count = 7 + (rng.next() % 9) as usize;
    let (dx, dy) = (rng.range(-0.25, 0.25) * drift, rng.range(-0.15, 0.15) * drift);
    let strokes = (0..count)
        .map(|_| {
            let (cx, cy) = (rng.range(-0.1, 1.6) + dx, rng.range(-0.1, 1.1) + dy);
            let shape = match rng.next() % 4 {
                0 => Shape::Disc { cx, cy, r: rng.range(0.05, 0.35) },
                1 => Shape::Ring { cx, cy, r: rng.range(0.1, 0.45), width: rng.range(0.01, 0.06) },
                2 => {
                    let (w, h) = (rng.range(0.05, 0.6), rng.range(0.05, 0.6));
                    Shape::Rect { x0: cx - w / 2.0, y0: cy - h / 2.0, x1: cx + w / 2.0, y1: cy + h / 2.0 }
                }
                _ => {
                    let angle = rng.range(0.0, std::f32::consts::PI);
                    let (nx, ny) = (angle.cos(), angle.sin());
                    Shape::Band { nx, ny, offset: nx * cx + ny * cy, half: rng.range(0.01, 0.08) }
                }
            };
            let color = palette[(rng.next() % palette.len() as u64) as usize];
            Stroke { shape, color, alpha: rng.range(90.0, 230.0) as u32 }
        })
        .collect();
    Scene { background, strokes }
}

#[inline]
fn blend(dst: &mut [u8], color: [u8; 3], alpha: u32) {
    for (d, c) in dst.iter_mut().zip(color) {
        *d = ((u32::from(*d) * (256 - alpha) + u32::from(c) * alpha) >> 8) as u8;
    }
}

fn paint_background(img: &mut RgbImage, (from, to, angle): ([u8; 3], [u8; 3], f32)) {
    let (w, h) = (img.width() as f32, img.height() as f32);
    let (ux, uy) = (angle.cos() / (w + h), angle.sin() / (w + h));
    let width = img.width() as usize;
    for (y, row) in img.chunks_exact_mut(width * 3).enumerate() {
        for (x, px) in row.chunks_exact_mut(3).enumerate() {
            let t = (0.5 + x as f32 * ux + y as f32 * uy).clamp(0.0, 1.0);
            let a = (t * 256.0) as u32;
            px.copy_from_slice(&from);
            blend(px, to, a);
        }
    }
}

/// Columns and rows of the grid `n` references are laid out in.
fn grid(n: u32) -> (u32, u32) {
    let cols = (n as f32).sqrt().ceil().max(1.0) as u32;
    (cols, n.max(1).div_ceil(cols))
}

/// The cell one of `n` references fills in a picture of `size`: a reference larger than that
/// (in both directions) shows no more of itself than a copy scaled down to it would.
pub fn reference_cell(size: Size, n: usize) -> (u32, u32) {
    let (cols, rows) = grid(n.try_into().unwrap_or(u32::MAX));
    ((size.width / cols).max(1), (size.height / rows).max(1))
}

fn paint_references(img: &mut RgbImage, refs: &[RgbImage], rotate: usize) {
    let (w, h) = (img.width(), img.height());
    let (cols, rows) = grid(refs.len() as u32);
    let width = w as usize;
    for (y, row) in img.chunks_exact_mut(width * 3).enumerate() {
        let y = y as u32;
        let cell_row = (y * rows / h).min(rows - 1);
        for (x, px) in row.chunks_exact_mut(3).enumerate() {
            let x = x as u32;
            let cell_col = (x * cols / w).min(cols - 1);
            let idx = ((cell_row * cols + cell_col) as usize + rotate) % refs.len();
            let r = &refs[idx];
            // Cover-fit the reference into its cell, sampling the nearest pixel.
            let (cx0, cw) = (cell_col * w / cols, w / cols);
            let (cy0, ch) = (cell_row * h / rows, h / rows);
            let scale = (r.width() as f32 / cw as f32).min(r.height() as f32 / ch as f32);
            let ox = (r.width() as f32 - cw as f32 * scale) / 2.0;
            let oy = (r.height() as f32 - ch as f32 * scale) / 2.0;
            let sx = ((ox + (x - cx0) as f32 * scale) as u32).min(r.width() - 1);
            let sy = ((oy + (y - cy0) as f32 * scale) as u32).min(r.height() - 1);
            px.copy_from_slice(&r.get_pixel(sx, sy).0);
        }
    }
}

fn paint_stroke(img: &mut RgbImage, stroke: &Stroke, unit: f32) {
    let (w, h) = (img.width() as i64, img.height() as i64);
    let clamp_x = |v: f32| (v as i64).clamp(0, w) as usize;
    let clamp_y = |v: f32| (v as i64).clamp(0, h) as usize;
    let width = w as usize;
    let data: &mut [u8] = img;
    let mut fill = |x0: usize, x1: usize, y0: usize, y1: usize, inside: &dyn Fn(f32, f32) -> bool| {
        for y in y0..y1 {
            let row = &mut data[y * width * 3..(y + 1) * width * 3];
            for x in x0..x1 {
                if inside(x as f32 / unit, y as f32 / unit) {
                    blend(&mut row[x * 3..x * 3 + 3], stroke.color, stroke.alpha);
                }
            }
        }
    };
    match stroke.shape {
        Shape::Disc { cx, cy, r } => fill(
            clamp_x((cx - r) * unit),
            clamp_x((cx + r) * unit + 1.0),
            clamp_y((cy - r) * unit),
            clamp_y((cy + r) * unit + 1.0),
            &|x, y| (x - cx).powi(2) + (y - cy).powi(2) <= r * r,
        ),
        Shape::Ring { cx, cy, r, width } => {
            let (inner, outer) = ((r - width).max(0.0).powi(2), r * r);
            fill(
                clamp_x((cx - r) * unit),
                clamp_x((cx + r) * unit + 1.0),
                clamp_y((cy - r) * unit),
                clamp_y((cy + r) * unit + 1.0),
                &|x, y| {
                    let d = (x - cx).powi(2) + (y - cy).powi(2);
                    d <= outer && d >= inner
                },
            )
        }
        Shape::Rect { x0, y0, x1, y1 } => {
            fill(clamp_x(x0 * unit), clamp_x(x1 * unit), clamp_y(y0 * unit), clamp_y(y1 * unit), &|_, _| true)
        }
        Shape::Band { nx, ny, offset, half } => {
            fill(0, w as usize, 0, h as usize, &|x, y| (nx * x + ny * y - offset).abs() <= half)
        }
    }
}

/// Draws image `index` of a task. In a `series`, all images share one scene that drifts from
/// frame to frame; otherwise each index gets its own composition from the same prompt.
pub fn render(prompt: &str, size: Size, index: u32, series: bool, refs: &[RgbImage]) -> RgbImage {
    let (variant, drift) = if series { (0, index as f32) } else { (u64::from(index), 0.0) };
    let scene = scene(prompt, variant, drift);
    let mut img = RgbImage::new(size.width, size.height);
    paint_background(&mut img, scene.background);
    let stroke_scale = if refs.is_empty() {
        1.0
    } else {
        // The references are the picture; the gradient and shapes only tint them.
        let mut under = RgbImage::new(size.width, size.height);
        paint_references(&mut under, refs, index as usize);
        for (u, b) in under.chunks_exact_mut(3).zip(img.chunks_exact(3)) {
            blend(u, [b[0], b[1], b[2]], 64);
        }
        img = under;
        0.45
    };
    let unit = size.width.min(size.height) as f32;
    for stroke in &scene.strokes {
        let softened = Stroke { alpha: (stroke.alpha as f32 * stroke_scale) as u32, ..*stroke };
        paint_stroke(&mut img, &softened, unit);
    }
    img
}

/// How many images a sequential request yields: like the real model, the prompt decides. A
/// number in the prompt ("a 3-panel comic") sets the length when it is within `max`.
pub fn series_length(prompt: &str, max: u32) -> u32 {
    prompt
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|digits| digits.parse::<u32>().ok())
        .find(|n| (1..=max).contains(n))
        .unwrap_or(max)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mean(img: &RgbImage) -> [f64; 3] {
        let mut sum = [0f64; 3];
        for p in img.pixels() {
            for (total, channel) in sum.iter_mut().zip(p.0) {
                *total += f64::from(channel);
            }
        }
        sum.map(|s| s / (img.width() * img.height()) as f64)
    }

    #[test]
    fn same_prompt_and_index_same_pixels() {
        let size = Size::new(320, 200);
        assert_eq!(render("a red fox", size, 0, false, &[]), render("a red fox", size, 0, false, &[]));
        assert_ne!(render("a red fox", size, 0, false, &[]), render("a red fox", size, 1, false, &[]));
    }

    #[test]
    fn different_prompts_differ_widely() {
        let size = Size::new(256, 256);
        let a = render("a cozy cyberpunk cafe", size, 0, false, &[]);
        let b = render("a minimalist industrial poster", size, 0, false, &[]);
        let differing = a.pixels().zip(b.pixels()).filter(|(p, q)| p != q).count();
        assert!(differing > 256 * 256 / 2, "only {differing} pixels differ");
    }

    #[test]
    fn previews_sharpen_towards_the_picture() {
        let picture = render("a harbour at noon", Size::new(256, 256), 0, false, &[]);
        let distance = |a: &RgbImage| -> u64 {
            a.pixels()
                .zip(picture.pixels())
                .flat_map(|(p, q)| p.0.into_iter().zip(q.0))
                .map(|(x, y)| x.abs_diff(y) as u64)
                .sum()
        };
        let previews: Vec<RgbImage> = (0..3).map(|i| preview(&picture, i, 3)).collect();
        let distances: Vec<u64> = previews.iter().map(distance).collect();
        assert!(previews.iter().all(|p| p.dimensions() == picture.dimensions()));
        assert!(distances.windows(2).all(|w| w[0] > w[1]), "each preview is closer: {distances:?}");
        assert!(distances[2] > 0, "the last preview is still not the picture");
    }

    #[test]
    fn image_is_not_a_flat_colour() {
        let img = render("anything", Size::new(200, 200), 0, false, &[]);
        let distinct: std::collections::HashSet<_> = img.pixels().map(|p| p.0).collect();
        assert!(distinct.len() > 50, "{} colours", distinct.len());
    }

    #[test]
    fn references_show_through() {
        let red = RgbImage::from_pixel(40, 30, image::Rgb([230, 10, 10]));
        let img = render("sunrise", Size::new(300, 300), 0, false, &[red]);
        let [r, g, b] = mean(&img);
        assert!(r > g + 60.0 && r > b + 60.0, "mean colour {r} {g} {b} does not carry the red reference");
    }

    #[test]
    fn series_length_comes_from_the_prompt() {
        assert_eq!(series_length("a comic strip in 3 panels", 4), 3);
        assert_eq!(series_length("four seasons", 4), 4);
        assert_eq!(series_length("the 12 apostles, then 2 more", 4), 2);
    }
}
