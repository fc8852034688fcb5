//! How long the local renderer takes per image (CPU time of one core), at the sizes the seeds
//! use. Run with `cargo bench --bench render`. A benchmark, not a test: it asserts nothing.

use std::time::Instant;

use easel::catalog::{OutputFormat, Size};
use easel::media::encode;
use easel::providers::local::render::render;
use image::DynamicImage;

fn main() {
    let cases = [
        ("1024x1024 png (gpt-image-1)", Size::new(1024, 1024), OutputFormat::Png),
        ("1024x1024 webp (gpt-image-1)", Size::new(1024, 1024), OutputFormat::Webp),
        ("2048x2048 jpeg (2K)", Size::new(2048, 2048), OutputFormat::Jpeg),
        ("3072x3072 jpeg (3K)", Size::new(3072, 3072), OutputFormat::Jpeg),
        ("3072x3072 png (3K)", Size::new(3072, 3072), OutputFormat::Png),
        ("4096x4096 jpeg (largest)", Size::new(4096, 4096), OutputFormat::Jpeg),
    ];
    println!("{:<28} {:>10} {:>10} {:>10}", "image", "draw ms", "encode ms", "bytes");
    for (name, size, format) in cases {
        let runs = 5;
        let (mut draw, mut enc, mut bytes) = (0.0, 0.0, 0);
        for i in 0..runs {
            let t = Instant::now();
            let img = DynamicImage::ImageRgb8(render("a cozy cyberpunk cafe with neon lights", size, i, false, &[]));
            draw += t.elapsed().as_secs_f64();
            let t = Instant::now();
            bytes = encode(&img, format).expect("encodes").len();
            enc += t.elapsed().as_secs_f64();
        }
        let ms = |s: f64| s * 1000.0 / f64::from(runs);
        println!("{name:<28} {:>10.1} {:>10.1} {bytes:>10}", ms(draw), ms(enc));
    }
}
