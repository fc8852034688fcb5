//! A stand-in upstream for `bench/run` that answers at once with small pre-encoded images:
//! - `POST /v1/images/generations`: OpenAI's shape, one PNG as `b64_json`;
//! - `POST /api/v3/images/generations`: Ark's shape, one JPEG as a `url` on this server, which
//!   the gateway then downloads;
//! - `GET /images/result.jpeg`: that JPEG.
//!
//! Every answer is encoded once at start, and one thread serves them, so that the stand-in
//! costs the benchmark little CPU. Request bodies are read and dropped.
//!
//! Usage: `bench_fake_upstream ADDR`

use std::io::Cursor;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Bytes;
use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use image::{ImageFormat, Rgb, RgbImage};
use serde_json::json;

/// Side of the square result image.
const SIDE: u32 = 128;

fn encoded(format: ImageFormat) -> anyhow::Result<Vec<u8>> {
    let image = RgbImage::from_fn(SIDE, SIDE, |x, y| Rgb([(x * 2) as u8, (y * 2) as u8, 128]));
    let mut out = Cursor::new(Vec::new());
    image.write_to(&mut out, format)?;
    Ok(out.into_inner())
}

fn json_answer(body: Bytes) -> impl IntoResponse {
    ([(CONTENT_TYPE, "application/json")], body)
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let addr = std::env::args().nth(1).ok_or_else(|| anyhow::anyhow!("usage: bench_fake_upstream ADDR"))?;
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    let bound = listener.local_addr()?;
    let created = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
    let openai = Bytes::from(serde_json::to_vec(&json!({
        "created": created,
        "data": [{"b64_json": BASE64.encode(encoded(ImageFormat::Png)?)}],
        "background": "opaque",
        "output_format": "png",
        "size": "1024x1024",
        "quality": "low",
        "usage": {
            "input_tokens": 10,
            "input_tokens_details": {"image_tokens": 0, "text_tokens": 10},
            "output_tokens": 272,
            "total_tokens": 282
        }
    }))?);
    let ark = Bytes::from(serde_json::to_vec(&json!({
        "model": "seedream-5-0-260128",
        "created": created,
        "data": [{"url": format!("http://{bound}/images/result.jpeg"), "size": format!("{SIDE}x{SIDE}")}],
        "usage": {"generated_images": 1, "output_tokens": 16384, "total_tokens": 16384}
    }))?);
    let jpeg = Bytes::from(encoded(ImageFormat::Jpeg)?);
    let app = Router::new()
        .route("/v1/images/generations", post(move |_: Bytes| async move { json_answer(openai.clone()) }))
        .route("/api/v3/images/generations", post(move |_: Bytes| async move { json_answer(ark.clone()) }))
        .route("/images/result.jpeg", get(move || async move { ([(CONTENT_TYPE, "image/jpeg")], jpeg.clone()) }));
    println!("bench_fake_upstream listening on http://{bound}");
    axum::serve(listener, app).await?;
    Ok(())
}
