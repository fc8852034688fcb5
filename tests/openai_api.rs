//! The OpenAI-compatible Images API: generations, edits, models, and OpenAI-shaped errors.

mod common;

use base64::Engine;
use common::*;
use serde_json::{Value, json};

async fn post(app: &TestApp, path: &str, body: Value) -> (u16, Value) {
    let res = app.client.post(app.url(path)).bearer_auth(&app.key).json(&body).send().await.unwrap();
    (res.status().as_u16(), res.json().await.unwrap())
}

fn decode_b64(item: &Value) -> image::DynamicImage {
    let bytes = base64::engine::general_purpose::STANDARD.decode(item["b64_json"].as_str().unwrap()).unwrap();
    image::load_from_memory(&bytes).unwrap()
}

#[tokio::test]
async fn generations_answer_b64_for_gpt_image_and_urls_on_request() {
    let app = spawn_app().await;
    let (status, body) =
        post(&app, "/v1/images/generations", json!({"model": "gpt-image-1", "prompt": "a koi", "n": 2})).await;
    assert_eq!(status, 200, "{body}");
    assert!(body["created"].is_i64());
    let data = body["data"].as_array().unwrap();
    assert_eq!(data.len(), 2);
    for item in data {
        let img = decode_b64(item);
        assert_eq!((img.width(), img.height()), (1024, 1024));
    }
    assert!(body["usage"]["total_tokens"].is_u64());

    let (_, body) = post(
        &app,
        "/v1/images/generations",
        json!({"model": "gpt-image-1", "prompt": "a koi", "size": "1536x1024", "response_format": "url"}),
    )
    .await;
    let (_, img) = download(&app.client, body["data"][0]["url"].as_str().unwrap()).await;
    assert_eq!((img.width(), img.height()), (1536, 1024));
    // Other catalog models answer with links by default, at explicit sizes.
    let (_, body) =
        post(&app, "/v1/images/generations", json!({"model": "seedream-5-0", "prompt": "a koi", "size": "2048x2048"}))
            .await;
    let (format, img) = download(&app.client, body["data"][0]["url"].as_str().unwrap()).await;
    assert_eq!((format, img.width(), img.height()), (image::ImageFormat::Jpeg, 2048, 2048));
}

#[tokio::test]
async fn edits_take_multipart_images() {
    let app = spawn_app().await;
    let part =
        |bytes: Vec<u8>| reqwest::multipart::Part::bytes(bytes).file_name("ref.png").mime_str("image/png").unwrap();
    let form = reqwest::multipart::Form::new()
        .part("image[]", part(green_png()))
        .part("image[]", part(green_png()))
        .text("model", "gpt-image-1")
        .text("prompt", "make it green")
        .text("n", "1");
    let res = app.client.post(app.url("/v1/images/edits")).bearer_auth(&app.key).multipart(form).send().await.unwrap();
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.unwrap();
    let img = decode_b64(&body["data"][0]).to_rgb8();
    let green = green_pixels(&img);
    assert!(green > img.pixels().len() / 4, "the uploaded references show through ({green} green pixels)");

    let form = reqwest::multipart::Form::new().part("image", part(b"<html>".to_vec())).text("prompt", "x");
    let res = app.client.post(app.url("/v1/images/edits")).bearer_auth(&app.key).multipart(form).send().await.unwrap();
    assert_eq!(res.status(), 400);
    let body: Value = res.json().await.unwrap();
    assert!(body["error"]["message"].as_str().unwrap().contains("not a PNG"), "{body}");
}

/// Files under the app's local store's `uploads/`.
fn uploads(app: &TestApp) -> Vec<std::path::PathBuf> {
    fn walk(dir: &std::path::Path, found: &mut Vec<std::path::PathBuf>) {
        for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() { walk(&path, found) } else { found.push(path) }
        }
    }
    let mut found = Vec::new();
    walk(&app.data_dir.path().join("files").join("uploads"), &mut found);
    found
}

#[tokio::test]
async fn a_refused_edit_leaves_no_upload_behind() {
    let app = spawn_app_with(|c| c.server.bootstrap_credits_usd = 0.0).await;
    let edit = |size: &'static str| {
        let png = common::fakes::encoded(8, 8, [200, 10, 10], image::ImageFormat::Png);
        let png = reqwest::multipart::Part::bytes(png).file_name("a.png");
        let form = reqwest::multipart::Form::new().part("image", png).text("prompt", "p").text("size", size);
        app.client.post(app.url("/v1/images/edits")).bearer_auth(&app.key).multipart(form).send()
    };
    let invalid = edit("999x999").await.unwrap();
    assert_eq!(invalid.status(), 400);
    let body: Value = invalid.json().await.unwrap();
    assert!(body["error"]["message"].as_str().unwrap().contains("size"), "{body}");
    assert_eq!(uploads(&app), Vec::<std::path::PathBuf>::new(), "an invalid request stores nothing");

    let unpaid = edit("1024x1024").await.unwrap();
    assert_eq!(unpaid.status(), 429);
    let body: Value = unpaid.json().await.unwrap();
    assert_eq!(body["error"]["code"], "insufficient_quota", "{body}");
    assert_eq!(uploads(&app), Vec::<std::path::PathBuf>::new(), "a refused task takes its uploads with it");
}

#[tokio::test]
async fn errors_have_openai_shape_and_statuses() {
    let app = spawn_app_with(|c| c.server.bootstrap_credits_usd = 0.04).await;
    let res = app
        .client
        .post(app.url("/v1/images/generations"))
        .bearer_auth("sk-wrong")
        .json(&json!({"prompt": "p"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["error"]["code"], "invalid_api_key");
    assert!(body["error"]["message"].is_string() && body["error"]["type"].is_string());

    let (status, body) = post(&app, "/v1/images/generations", json!({"prompt": "p", "size": "512x512"})).await;
    assert_eq!(status, 400);
    assert!(body["error"]["message"].as_str().unwrap().starts_with("size must be one of"));
    let (status, body) = post(&app, "/v1/images/generations", json!({"model": "dall-e-3", "prompt": "p"})).await;
    assert_eq!(status, 400, "{body}");
    // $0.04 buys one image, not two: OpenAI's 429 insufficient_quota.
    let (status, body) = post(&app, "/v1/images/generations", json!({"prompt": "p", "n": 2})).await;
    assert_eq!((status, body["error"]["code"].as_str()), (429, Some("insufficient_quota")), "{body}");

    let res = app.client.get(app.url("/v1/models")).bearer_auth(&app.key).send().await.unwrap();
    let models: Value = res.json().await.unwrap();
    let ids: Vec<&str> = models["data"].as_array().unwrap().iter().map(|m| m["id"].as_str().unwrap()).collect();
    assert!(ids.contains(&"gpt-image-1") && ids.contains(&"seedream-5-0"), "{ids:?}");
}

#[tokio::test]
async fn a_task_outliving_the_wait_is_a_504_naming_it() {
    let app = spawn_app_with(|c| {
        c.server.openai_wait_secs = 1;
        c.local.latency_ms = 600_000;
    })
    .await;
    let res = app
        .client
        .post(app.url("/v1/images/generations"))
        .bearer_auth(&app.key)
        .json(&json!({"prompt": "slow"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 504);
    let task = res.headers()["x-easel-task-id"].to_str().unwrap().to_owned();
    let body: Value = res.json().await.unwrap();
    assert!(body["error"]["message"].as_str().unwrap().contains(&task), "{body}");
    // The task is still there to poll.
    let (status, status_body) = app.status("gpt-image-1", &task).await;
    assert_eq!(status, 200, "{status_body}");
}

#[tokio::test]
async fn webp_is_made_for_gpt_image_models() {
    let app = spawn_app().await;
    let (status, body) =
        post(&app, "/v1/images/generations", json!({"prompt": "a koi", "output_format": "webp"})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["output_format"], "webp");
    let bytes =
        base64::engine::general_purpose::STANDARD.decode(body["data"][0]["b64_json"].as_str().unwrap()).unwrap();
    assert_eq!((&bytes[..4], &bytes[8..12]), (&b"RIFF"[..], &b"WEBP"[..]), "WebP's magic bytes");
    let img = image::load_from_memory_with_format(&bytes, image::ImageFormat::WebP).unwrap();
    assert_eq!((img.width(), img.height()), (1024, 1024));

    let (_, body) = post(
        &app,
        "/v1/images/generations",
        json!({"prompt": "a koi", "output_format": "webp", "response_format": "url"}),
    )
    .await;
    let url = body["data"][0]["url"].as_str().unwrap();
    assert!(key_of(url).ends_with(".webp"), "{url}");
    // `download` checks that /files serves it as image/webp.
    let (format, img) = download(&app.client, url).await;
    assert_eq!((format, img.width(), img.height()), (image::ImageFormat::WebP, 1024, 1024));

    let (status, body) = post(
        &app,
        "/v1/images/generations",
        json!({"model": "seedream-5-0", "prompt": "a koi", "output_format": "webp"}),
    )
    .await;
    assert_eq!(status, 400, "Seedream makes no WebP: {body}");
    assert!(body["error"]["message"].as_str().unwrap().starts_with("output_format"), "{body}");
}
