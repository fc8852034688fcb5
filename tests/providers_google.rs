//! Google's Gemini API behind a `gemini` channel: Gemini image models through
//! `generateContent` (one call per image) and Imagen through `predict`, against a fake that
//! checks Google's wire format; safety blocks, rate limits and refused keys.

mod common;

use common::fakes::*;
use common::*;
use easel::config::ProviderKind;
use image::ImageFormat;
use serde_json::{Value, json};

const GEMINI: &str = "gemini-2.5-flash-image";
const IMAGEN: &str = "imagen-4.0-generate-001";
const TOKEN: &str = "google-ops";

/// A `generateContent` answer with one PNG of `w`×`h`, after a thought part and some text.
fn content_answer(w: u32, h: u32) -> Value {
    json!({
        "candidates": [{
            "content": {"role": "model", "parts": [
                {"text": "drafting", "thought": true},
                {"text": "Here is your image."},
                {"inlineData": {"mimeType": "image/png", "data": b64(&encoded(w, h, [10, 200, 40], ImageFormat::Png))}},
            ]},
            "finishReason": "STOP",
        }],
        "usageMetadata": {"promptTokenCount": 12, "candidatesTokenCount": 1290},
    })
}

#[tokio::test]
async fn gemini_sends_one_call_per_image_with_the_references_inline() {
    let fake = Fake::start(Wire::Gemini, |_, _, _| Reply::ok(content_answer(1344, 768))).await;
    let channel = channel("google", ProviderKind::Gemini, &fake.base_url, &[]);
    let app = spawn_app_with(|c| {
        c.channels = vec![channel];
        c.server.allow_private_network = true;
    })
    .await;
    let refs = spawn_reference_server().await;
    let before = balance(&app).await.0;

    // The alias names the model, as OpenAI-style clients say it.
    let body = json!({"input": {"prompt": "a banana on a desk", "aspect_ratio": "16:9", "num_images": 2,
        "image_urls": [format!("http://{refs}/red.png"), format!("http://{refs}/blue.jpg")]}});
    let task = app.submit_ok("nano-banana", &body).await;
    let data = app.wait_done("nano-banana", &task).await;
    assert_eq!(data["state"], "success", "{data}");

    let seen = fake.seen_ok();
    assert_eq!(seen.len(), 2, "one generateContent call per image");
    for s in &seen {
        assert_eq!(s.path, format!("/v1beta/models/{GEMINI}:generateContent"));
        let body = s.json.as_ref().unwrap();
        let parts = body["contents"][0]["parts"].as_array().unwrap();
        assert_eq!(parts[0]["text"], "a banana on a desk");
        assert_eq!(parts[1]["inlineData"]["mimeType"], "image/png");
        assert_eq!(parts[2]["inlineData"]["mimeType"], "image/jpeg");
        assert_eq!(body["generationConfig"]["imageConfig"], json!({"aspectRatio": "16:9"}), "1K is not named");
    }
    let urls = result_urls(&data);
    assert_eq!(urls.len(), 2);
    for url in urls {
        assert!(url.starts_with(&app.base), "re-hosted: {url}");
        let (format, img) = download(&app.client, &url).await;
        assert_eq!((format, img.width(), img.height()), (ImageFormat::Png, 1344, 768));
    }
    assert_eq!(balance(&app).await.0, before - 2 * 39_000, "two images at $0.039");
    assert_ledger_invariant(&app.state, &app.account_id).await;
}

#[tokio::test]
async fn larger_sizes_are_named_and_a_blocked_prompt_is_a_content_violation() {
    let fake = Fake::start(Wire::Gemini, |seen, _, _| {
        let prompt = seen.json.as_ref().unwrap()["contents"][0]["parts"][0]["text"].as_str().unwrap().to_owned();
        match prompt.as_str() {
            "forbidden" => Reply::ok(json!({"promptFeedback": {"blockReason": "PROHIBITED_CONTENT"}})),
            "unsafe picture" => {
                Reply::ok(json!({"candidates": [{"finishReason": "IMAGE_SAFETY", "content": {"parts": []}}]}))
            }
            _ => Reply::ok(content_answer(4096, 4096)),
        }
    })
    .await;
    let channel = channel("google", ProviderKind::Gemini, &fake.base_url, &[]);
    let app = spawn_app_with(|c| c.channels = vec![channel]).await;
    let before = balance(&app).await.0;

    let (status, body) = app
        .post_json(
            "/api/v1/images/generations",
            &[],
            &json!({"model": "gemini-3-pro-image", "prompt": "a map", "size": "4K", "aspect_ratio": "1:1"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let id = body["data"]["taskId"].as_str().unwrap().to_owned();
    let view = app.wait_for_state(&id, "success").await;
    assert_eq!(view["chargedUsd"], 0.24, "the 4K price row");
    let sent = &fake.seen_ok()[0].json.clone().unwrap()["generationConfig"]["imageConfig"];
    assert_eq!(sent, &json!({"aspectRatio": "1:1", "imageSize": "4K"}));

    for prompt in ["forbidden", "unsafe picture"] {
        let task = app.submit_ok(GEMINI, &json!({"input": {"prompt": prompt}})).await;
        let data = app.wait_done(GEMINI, &task).await;
        assert_eq!((data["state"].as_str(), data["failCode"].as_str()), (Some("failed"), Some("CONTENT_VIOLATION")));
    }
    assert_eq!(balance(&app).await.0, before - 240_000, "refusals cost nothing");
    assert_ledger_invariant(&app.state, &app.account_id).await;
}

#[tokio::test]
async fn a_rate_limit_fails_over_and_a_refused_key_does_not() {
    let limited = Fake::start(Wire::Gemini, |_, _, _| {
        Reply::status(
            429,
            json!({"error": {"code": 429, "status": "RESOURCE_EXHAUSTED", "message": "Quota exceeded",
                "details": [{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "40s"}]}}),
        )
    })
    .await;
    let good = Fake::start(Wire::Gemini, |_, _, _| Reply::ok(content_answer(1024, 1024))).await;
    let mut first = channel("limited", ProviderKind::Gemini, &limited.base_url, &[]);
    first.priority = 10;
    let second = channel("good", ProviderKind::Gemini, &good.base_url, &[]);
    let app = spawn_app_with(|c| {
        c.channels = vec![first, second];
        c.admin_token = Some(TOKEN.into());
    })
    .await;
    let task = app.submit_ok(GEMINI, &json!({"input": {"prompt": "a kite"}})).await;
    let data = app.wait_done(GEMINI, &task).await;
    assert_eq!(data["state"], "success", "{data}");
    assert_eq!((limited.seen_ok().len(), good.seen_ok().len()), (1, 1));
    // The limited channel rests as long as Google's RetryInfo said.
    let res = app.client.get(app.url("/admin/v1/channels")).bearer_auth(TOKEN).send().await.unwrap();
    let channels: Value = res.json().await.unwrap();
    let rest = channels["data"].as_array().unwrap().iter().find(|c| c["id"] == "limited").unwrap()["restingMs"].clone();
    assert!(rest.as_u64().is_some_and(|ms| ms > 30_000 && ms <= 40_000), "{channels}");

    let locked = Fake::start(Wire::Gemini, |_, _, _| {
        Reply::status(
            403,
            json!({"error": {"code": 403, "status": "PERMISSION_DENIED", "message": "API key not valid"}}),
        )
    })
    .await;
    let spare = Fake::start(Wire::Gemini, |_, _, _| Reply::ok(content_answer(1024, 1024))).await;
    let mut first = channel("locked", ProviderKind::Gemini, &locked.base_url, &[]);
    first.priority = 10;
    let second = channel("spare", ProviderKind::Gemini, &spare.base_url, &[]);
    let app = spawn_app_with(|c| c.channels = vec![first, second]).await;
    let task = app.submit_ok(GEMINI, &json!({"input": {"prompt": "a kite"}})).await;
    let data = app.wait_done(GEMINI, &task).await;
    assert_eq!(data["failCode"], "GENERATION_FAILED", "{data}");
    assert!(data["failMsg"].as_str().unwrap().contains("PERMISSION_DENIED"), "{data}");
    assert_eq!((locked.seen_ok().len(), spare.seen().len()), (1, 0), "a refused key is final");
}

#[tokio::test]
async fn imagen_predicts_several_images_in_one_call_and_charges_those_not_filtered() {
    let fake = Fake::start(Wire::Gemini, |seen, _, _| {
        let count = seen.json.as_ref().unwrap()["parameters"]["sampleCount"].as_u64().unwrap();
        let mut predictions: Vec<Value> = (1..count)
            .map(|_| {
                json!({"mimeType": "image/png", "bytesBase64Encoded": b64(&encoded(2816, 1536, [9, 9, 200], ImageFormat::Png))})
            })
            .collect();
        predictions.push(json!({"raiFilteredReason": "filtered for safety"}));
        Reply::ok(json!({"predictions": predictions}))
    })
    .await;
    let channel = channel("google", ProviderKind::Gemini, &fake.base_url, &[]);
    let app = spawn_app_with(|c| c.channels = vec![channel]).await;
    let (status, body) = app
        .post_json(
            "/api/v1/images/generations",
            &[],
            &json!({"model": IMAGEN, "prompt": "a harbour", "size": "2K", "aspect_ratio": "16:9", "n": 3}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let id = body["data"]["taskId"].as_str().unwrap().to_owned();
    let view = app.wait_for_state(&id, "success").await;
    let seen = fake.seen_ok();
    assert_eq!(seen.len(), 1, "one predict call for all three");
    assert_eq!(seen[0].path, format!("/v1beta/models/{IMAGEN}:predict"));
    let params = &seen[0].json.as_ref().unwrap()["parameters"];
    assert_eq!((params["sampleCount"].clone(), params["aspectRatio"].clone()), (json!(3), json!("16:9")));
    assert_eq!(params["sampleImageSize"], "2K");
    assert_eq!(view["chargedUsd"], 0.08, "two delivered images at $0.04, the filtered one free: {view}");
    assert_ledger_invariant(&app.state, &app.account_id).await;
}

#[tokio::test]
async fn the_channel_test_sends_the_cheapest_request_and_bills_nobody() {
    let fake = Fake::start(Wire::Gemini, |_, _, _| Reply::ok(content_answer(1024, 1024))).await;
    let channel = channel("google", ProviderKind::Gemini, &fake.base_url, &[]);
    let app = spawn_app_with(|c| {
        c.channels = vec![channel];
        c.admin_token = Some(TOKEN.into());
    })
    .await;
    let before = balance(&app).await.0;
    let res = app.client.post(app.url("/admin/v1/channels/google/test")).bearer_auth(TOKEN).send().await.unwrap();
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["data"]["ok"], true, "{body}");
    assert_eq!(body["data"]["model"], GEMINI, "the cheapest of the channel's models");
    let seen = fake.seen_ok();
    assert_eq!(seen.len(), 1, "one image");
    let config = &seen[0].json.as_ref().unwrap()["generationConfig"]["imageConfig"];
    assert!(config.get("imageSize").is_none(), "the smallest size, 1K: {config}");
    assert_eq!(balance(&app).await.0, before);
}

#[tokio::test]
async fn a_scheduled_test_rests_a_failing_channel_until_one_passes() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    let broken = Arc::new(AtomicBool::new(true));
    let flag = broken.clone();
    let fake = Fake::start(Wire::Gemini, move |_, _, _| {
        if flag.load(Ordering::SeqCst) {
            Reply::status(500, json!({"error": {"code": 500, "status": "INTERNAL", "message": "backend error"}}))
        } else {
            Reply::ok(content_answer(1024, 1024))
        }
    })
    .await;
    let mut probed = channel("probed", ProviderKind::Gemini, &fake.base_url, &[]);
    probed.probe_interval_secs = Some(1);
    let app = spawn_app_with(|c| {
        c.channels = vec![probed];
        c.admin_token = Some(TOKEN.into());
    })
    .await;
    let status = || async {
        let res = app.client.get(app.url("/admin/v1/channels")).bearer_auth(TOKEN).send().await.unwrap();
        let body: Value = res.json().await.unwrap();
        body["data"][0].clone()
    };
    let resting = wait_until(std::time::Duration::from_secs(20), || async {
        let s = status().await;
        (s["lastTest"]["ok"] == false && s["restingMs"].as_u64().is_some()).then_some(s)
    })
    .await;
    assert!(resting["lastTest"]["message"].as_str().unwrap().contains("INTERNAL"), "{resting}");

    broken.store(false, Ordering::SeqCst);
    let recovered = wait_until(std::time::Duration::from_secs(20), || async {
        let s = status().await;
        (s["lastTest"]["ok"] == true).then_some(s)
    })
    .await;
    assert!(recovered["restingMs"].is_null(), "a passing test ends the rest: {recovered}");
    assert!(fake.seen_ok().len() >= 2);
}

#[tokio::test]
async fn the_new_models_are_listed_with_their_families_and_prices() {
    let app = spawn_app().await;
    let (status, body) = app.get_json("/api/v1/models").await;
    assert_eq!(status, 200, "{body}");
    let models = body["data"].as_array().unwrap();
    let model =
        |id: &str| models.iter().find(|m| m["id"] == id).unwrap_or_else(|| panic!("{id} listed: {body}")).clone();
    let gemini = model(GEMINI);
    assert_eq!((gemini["family"].as_str(), gemini["aliases"][0].as_str()), (Some("gemini-image"), Some("nano-banana")));
    assert_eq!(gemini["prices"]["usd"], 0.039, "{gemini}");
    assert_eq!(model(IMAGEN)["family"], "imagen");
    assert_eq!(model("flux-kontext-pro")["family"], "flux");
    let flux2 = model("flux-2-pro");
    assert_eq!(flux2["sizes"]["custom"]["multipleOf"], 16, "{flux2}");
}
