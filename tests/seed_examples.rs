//! Every curl example of seeds 000, 001 and 002, sent as written (local host and key), ends in
//! the seed's response shape with images of exactly the documented size and format.

mod common;

use common::*;
use image::ImageFormat;
use serde_json::{Value, json};

/// Submits `body`, waits, and checks every image's size and format.
async fn expect_images(app: &TestApp, model: &str, body: Value, count: usize, size: (u32, u32), format: ImageFormat) {
    let task = app.submit_ok(model, &body).await;
    assert!(task.starts_with("task_"));
    let data = app.wait_done(model, &task).await;
    assert_eq!(data["taskId"], task.as_str());
    let urls = result_urls(&data);
    assert_eq!(urls.len(), count, "{data}");
    for key in ["createTime", "completeTime", "costTime"] {
        assert!(data[key].as_i64().is_some(), "{key} missing in {data}");
    }
    assert_eq!(
        data["costTime"].as_i64(),
        Some(data["completeTime"].as_i64().unwrap() - data["createTime"].as_i64().unwrap())
    );
    assert!(data.get("failCode").is_none() && data.get("failMsg").is_none(), "{data}");
    for url in urls {
        assert!(url.starts_with(&app.base), "results are re-hosted by Easel: {url}");
        let (got_format, img) = download(&app.client, &url).await;
        assert_eq!(got_format, format);
        assert_eq!((img.width(), img.height()), size);
    }
}

/// The seed's image-to-image body points at example.com; here the refs are unreachable
/// (`.invalid`) so the task must end `failed` with INVALID_IMAGE_URL, naming the URL.
async fn expect_invalid_refs(app: &TestApp, model: &str, body: Value) {
    let task = app.submit_ok(model, &body).await;
    let data = app.wait_done(model, &task).await;
    assert_eq!(data["state"], "failed", "{data}");
    assert_eq!(data["failCode"], "INVALID_IMAGE_URL");
    assert!(data["failMsg"].as_str().unwrap().contains("image_urls[0]"), "{data}");
    assert!(data.get("resultJson").is_none());
}

/// An image-to-image example twice: with the seed's unreachable references (fails with
/// INVALID_IMAGE_URL) and with references from a loopback server (succeeds; the private
/// network is allowed for it).
async fn expect_refs_both_ways(
    model: &str,
    body: fn([String; 2]) -> Value,
    count: usize,
    size: (u32, u32),
    format: ImageFormat,
) {
    // The reference server is on loopback, which the egress guard refuses by default.
    let app = spawn_app_with(|c| c.server.allow_private_network = true).await;
    let unreachable = ["https://ref.invalid/ref1.jpg".to_owned(), "https://ref.invalid/ref2.jpg".to_owned()];
    expect_invalid_refs(&app, model, body(unreachable)).await;
    let refs = spawn_reference_server().await;
    let local = [format!("http://{refs}/red.png"), format!("http://{refs}/blue.jpg")];
    expect_images(&app, model, body(local), count, size, format).await;
}

#[tokio::test]
async fn seed_000_text_to_image() {
    let app = spawn_app().await;
    let body = json!({
        "request_type": "async",
        "provider": "value",
        "input": {
            "mode": "text-to-image",
            "prompt": "a cozy cyberpunk cafe with neon lights, ultra detailed",
            "max_images": 4,
            "resolution": "2K",
            "aspect_ratio": "16:9",
            "sequential_image_generation": "disabled",
            "output_format": "jpeg"
        }
    });
    expect_images(&app, "seedream-5-0", body, 4, (2848, 1600), ImageFormat::Jpeg).await;
}

fn seed_000_i2i_body(refs: [String; 2]) -> Value {
    json!({
        "request_type": "async",
        "provider": "official",
        "input": {
            "mode": "image-to-image",
            "prompt": "make this scene look like sunrise with warm colors",
            "max_images": 3,
            "resolution": "3K",
            "aspect_ratio": "3:4",
            "sequential_image_generation": "auto",
            "output_format": "png",
            "image_urls": refs
        }
    })
}

#[tokio::test]
async fn seed_000_image_to_image() {
    expect_refs_both_ways("seedream-5-0", seed_000_i2i_body, 3, (2592, 3456), ImageFormat::Png).await;
}

#[tokio::test]
async fn seed_000_web_search() {
    let app = spawn_app().await;
    let body = json!({
        "request_type": "async",
        "provider": "value",
        "input": {
            "mode": "text-to-image",
            "prompt": "latest flagship smartphone design trends 2024",
            "max_images": 1,
            "resolution": "2K",
            "web_search": true,
            "output_format": "jpeg"
        }
    });
    expect_images(&app, "seedream-5-0", body, 1, (2048, 2048), ImageFormat::Jpeg).await;
}

#[tokio::test]
async fn seed_001_quickstart_and_text_to_image() {
    let app = spawn_app().await;
    let quickstart = json!({"input": {
        "mode": "text-to-image",
        "prompt": "a cozy cyberpunk cafe with neon lights, ultra detailed",
        "max_images": 1,
        "resolution": "2K",
        "aspect_ratio": "16:9",
        "output_format": "jpeg",
        "prompt_optimize_mode": "standard"
    }});
    expect_images(&app, "seedream-5-0", quickstart, 1, (2848, 1600), ImageFormat::Jpeg).await;
    let product = json!({"input": {
        "mode": "text-to-image",
        "prompt": "a clean product photo of wireless earbuds on soft stone",
        "max_images": 1,
        "resolution": "2K",
        "aspect_ratio": "1:1",
        "sequential_image_generation": "disabled",
        "output_format": "jpeg",
        "prompt_optimize_mode": "standard"
    }});
    expect_images(&app, "seedream-5-0", product, 1, (2048, 2048), ImageFormat::Jpeg).await;
}

fn seed_001_i2i_body(refs: [String; 2]) -> Value {
    json!({"input": {
        "mode": "image-to-image",
        "prompt": "make this scene look like sunrise with warm colors",
        "image_urls": refs,
        "max_images": 2,
        "resolution": "3K",
        "aspect_ratio": "3:4",
        "sequential_image_generation": "auto",
        "output_format": "png",
        "prompt_optimize_mode": "standard"
    }})
}

#[tokio::test]
async fn seed_001_image_to_image() {
    expect_refs_both_ways("seedream-5-0", seed_001_i2i_body, 2, (2592, 3456), ImageFormat::Png).await;
}

#[tokio::test]
async fn seed_001_explicit_size() {
    let app = spawn_app().await;
    let body = json!({"input": {
        "mode": "text-to-image",
        "prompt": "a minimalist industrial poster",
        "max_images": 1,
        "size": "3072X3072",
        "output_format": "jpeg"
    }});
    expect_images(&app, "seedream-5-0", body, 1, (3072, 3072), ImageFormat::Jpeg).await;
}

#[tokio::test]
async fn seed_002_text_to_image() {
    let app = spawn_app().await;
    let body = json!({
        "request_type": "async",
        "input": {
            "mode": "gpt-image-1",
            "prompt": "a cozy cyberpunk cafe with neon lights",
            "aspect_ratio": "3:2",
            "num_images": 2
        }
    });
    expect_images(&app, "gpt-image-1", body, 2, (1536, 1024), ImageFormat::Png).await;
}

fn seed_002_refs_body(refs: [String; 2]) -> Value {
    json!({
        "request_type": "async",
        "provider": "official",
        "input": {
            "mode": "gpt-image-1",
            "prompt": "a futuristic cityscape at sunset",
            "aspect_ratio": "3:2",
            "num_images": 4,
            "image_urls": refs
        }
    })
}

#[tokio::test]
async fn seed_002_reference_guided() {
    expect_refs_both_ways("gpt-image-1", seed_002_refs_body, 4, (1536, 1024), ImageFormat::Png).await;
}

#[tokio::test]
async fn sequential_series_may_be_shorter_and_bills_only_delivered_images() {
    let app = spawn_app().await;
    let body = json!({"input": {"mode": "text-to-image", "prompt": "a comic strip of 2 panels about a cat",
        "max_images": 4, "sequential_image_generation": "auto", "size": "1280x720"}});
    let task = app.submit_ok("seedream-5-0", &body).await;
    let data = app.wait_done("seedream-5-0", &task).await;
    assert_eq!(result_urls(&data).len(), 2);
    let account = app.state.accounts.find("default").await.unwrap();
    // $10 - 2 × $0.032, nothing left on hold.
    assert_eq!(account.balance.0, 10_000_000 - 2 * 32_000);
    assert_eq!(account.held.0, 0);
}

#[tokio::test]
async fn failed_tasks_cost_nothing() {
    let app = spawn_app().await;
    let body = json!({"input": {"mode": "image-to-image", "prompt": "p", "max_images": 2,
        "image_urls": ["https://ref.invalid/a.png"]}});
    let task = app.submit_ok("seedream-5-0", &body).await;
    assert_eq!(app.wait_done("seedream-5-0", &task).await["state"], "failed");
    let account = app.state.accounts.find("default").await.unwrap();
    assert_eq!((account.balance.0, account.held.0), (10_000_000, 0));
}
