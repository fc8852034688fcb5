//! Images Easel did not make are decoded within limits: a PNG bomb fails its task with
//! INVALID_IMAGE_URL and no charge, references reach each upstream at the size it needs, and a
//! task whose processing keeps being lost ends `failed` instead of running for ever.

mod common;

use std::time::Duration;

use common::fakes::*;
use common::media::*;
use common::*;
use easel::config::ProviderKind;
use image::ImageFormat;
use serde_json::{Value, json};
use sqlx::Row;

const GPT: &str = "gpt-image-1";
const START_MICROS: i64 = 10_000_000;

async fn balance_and_held(app: &TestApp) -> (i64, i64) {
    let account = app.state.accounts.find("default").await.unwrap();
    (account.balance.0, account.held.0)
}

fn gpt_edit(urls: Vec<String>) -> Value {
    json!({"input": {"mode": "gpt-image-1", "prompt": "a boat", "num_images": 1, "image_urls": urls}})
}

#[tokio::test]
async fn bomb_references_fail_the_task_without_decoding_or_charging() {
    let host = serve_pngs(vec![("/bomb.png", png_bomb(13_000, 13_000))]).await;
    let app = spawn_app_with(|c| c.server.allow_private_network = true).await;
    let before = peak_rss_mib(std::process::id());
    let urls = (0..16).map(|_| format!("http://{host}/bomb.png")).collect();
    let task = app.submit_ok(GPT, &gpt_edit(urls)).await;
    let data = app.wait_done(GPT, &task).await;
    assert_eq!(data["state"], "failed", "{data}");
    assert_eq!(data["failCode"], "INVALID_IMAGE_URL", "{data}");
    let message = data["failMsg"].as_str().unwrap();
    assert!(message.starts_with("image_urls[0] is 13000×13000 pixels"), "{message}");
    assert_eq!(balance_and_held(&app).await, (START_MICROS, 0), "the hold is released, nothing charged");
    assert_ledger_invariant(&app.state, "default").await;
    // One decode of one bomb would be 169 MB, sixteen of them over 8 GB as RGB.
    if let (Some(before), Some(after)) = (before, peak_rss_mib(std::process::id())) {
        assert!(after < before + 100, "peak RSS grew from {before} to {after} MiB");
    }
}

#[tokio::test]
async fn the_pixel_limit_is_configurable_and_names_the_reference() {
    let refs = spawn_reference_server().await;
    // red.png is 64×48 = 3072 pixels.
    let app = spawn_app_with(|c| {
        c.server.allow_private_network = true;
        c.media.max_pixels = 3000;
    })
    .await;
    let small = serve_pngs(vec![("/tiny.png", encoded(20, 20, [1, 2, 3], ImageFormat::Png))]).await;
    let urls = vec![format!("http://{small}/tiny.png"), format!("http://{refs}/red.png")];
    let task = app.submit_ok(GPT, &gpt_edit(urls)).await;
    let data = app.wait_done(GPT, &task).await;
    assert_eq!(data["failCode"], "INVALID_IMAGE_URL", "{data}");
    assert_eq!(data["failMsg"], "image_urls[1] is 64×48 pixels; at most 3000 pixels are accepted");
    assert_eq!(balance_and_held(&app).await, (START_MICROS, 0));
}

#[tokio::test]
async fn a_reference_within_the_limits_but_over_the_decode_budget_fails_at_once() {
    let refs = spawn_reference_server().await;
    let app = spawn_app_with(|c| {
        c.server.allow_private_network = true;
        c.media.decode_budget_bytes = 4096;
    })
    .await;
    let task = app.submit_ok(GPT, &gpt_edit(vec![format!("http://{refs}/red.png")])).await;
    let data = app.wait_done(GPT, &task).await;
    assert_eq!(data["failCode"], "INVALID_IMAGE_URL", "{data}");
    let message = data["failMsg"].as_str().unwrap();
    assert!(message.starts_with("image_urls[0] would take"), "{message}");
    assert_eq!(balance_and_held(&app).await, (START_MICROS, 0));
}

/// A fake OpenAI answering every request, and an app whose gpt-image-1 channel is that fake.
async fn app_on_openai() -> (Fake, TestApp) {
    let fake = Fake::start(Wire::OpenAi, |seen, _, _| Reply::ok(openai_images(seen))).await;
    let base = fake.base_url.clone();
    let app = spawn_app_with(|c| {
        c.server.allow_private_network = true;
        c.channels = vec![channel("openai", ProviderKind::Openai, &base, &[(GPT, "gpt-image-1")])];
    })
    .await;
    (fake, app)
}

fn dimensions(bytes: &[u8]) -> (u32, u32) {
    let img = image::load_from_memory(bytes).unwrap();
    (img.width(), img.height())
}

#[tokio::test]
async fn openai_gets_large_references_scaled_down_and_small_ones_untouched() {
    let (fake, app) = app_on_openai().await;
    let small = encoded(64, 48, [220, 20, 20], ImageFormat::Png);
    let large = encoded(3000, 1500, [20, 200, 20], ImageFormat::Png);
    let host = serve_pngs(vec![("/small.png", small.clone()), ("/large.png", large)]).await;
    let urls = vec![format!("http://{host}/small.png"), format!("http://{host}/large.png")];
    let task = app.submit_ok(GPT, &gpt_edit(urls)).await;
    let data = app.wait_done(GPT, &task).await;
    assert_eq!(data["state"], "success", "{data}");
    let seen = fake.seen_ok();
    let images: Vec<&MultipartPart> = seen[0].parts.iter().filter(|p| p.name == "image[]").collect();
    assert_eq!(images.len(), 2);
    assert_eq!(images[0].data, small, "a small PNG is sent as it came");
    assert_eq!(images[1].content_type.as_deref(), Some("image/png"));
    assert_eq!(dimensions(&images[1].data), (2048, 1024), "scaled to a 2048 px longest side");
    let pixel = image::load_from_memory(&images[1].data).unwrap().to_rgb8().get_pixel(100, 100).0;
    assert_eq!(pixel, [20, 200, 20]);
    assert_ledger_invariant(&app.state, "default").await;
}

#[tokio::test]
async fn a_mask_is_scaled_with_its_image() {
    let (fake, app) = app_on_openai().await;
    let mut mask = image::RgbaImage::from_pixel(3000, 1500, image::Rgba([0, 0, 0, 255]));
    mask.put_pixel(0, 0, image::Rgba([0, 0, 0, 0]));
    let mut mask_png = std::io::Cursor::new(Vec::new());
    mask.write_to(&mut mask_png, ImageFormat::Png).unwrap();
    let large = encoded(3000, 1500, [20, 200, 20], ImageFormat::Png);
    let host = serve_pngs(vec![("/large.png", large), ("/mask.png", mask_png.into_inner())]).await;
    let body = json!({"model": GPT, "prompt": "fill the hole", "image_url": format!("http://{host}/large.png"),
        "mask_url": format!("http://{host}/mask.png")});
    let res = app.client.post(app.url("/api/v1/images/generations")).bearer_auth(&app.key).json(&body).send().await;
    let created: Value = res.unwrap().json().await.unwrap();
    let task = created["data"]["taskId"].as_str().expect("a taskId").to_owned();
    let data = app.wait_done(GPT, &task).await;
    assert_eq!(data["state"], "success", "{data}");
    let seen = fake.seen_ok();
    let image = seen[0].part("image[]").unwrap();
    let mask = seen[0].part("mask").unwrap();
    assert_eq!(dimensions(&image.data), (2048, 1024));
    assert_eq!(dimensions(&mask.data), (2048, 1024), "the mask matches its image");
    assert!(image::load_from_memory(&mask.data).unwrap().color().has_alpha());
}

/// A local channel slow enough that a claimed task stays in hand until the test lets go.
async fn app_with_a_slow_task() -> (TestApp, String) {
    let app = spawn_app_with(|c| c.local.latency_ms = 10_000_000).await;
    let task = app.submit_ok(GPT, &gpt_t2i(1)).await;
    (app, task)
}

/// (attempts, interruptions, state) of a task, from the database.
async fn counters(app: &TestApp, task: &str) -> (i64, i64, String) {
    let row = sqlx::query("SELECT attempts, interruptions, state FROM tasks WHERE id = $1")
        .bind(task)
        .fetch_one(&app.state.db.read)
        .await
        .unwrap();
    (row.get("attempts"), row.get("interruptions"), row.get("state"))
}

async fn wait_for_attempt(app: &TestApp, task: &str, attempt: i64) {
    wait_until(Duration::from_secs(30), || async { (counters(app, task).await.0 >= attempt).then_some(()) }).await;
}

#[tokio::test]
async fn a_task_lost_again_and_again_fails_and_releases_its_hold() {
    let (app, task) = app_with_a_slow_task().await;
    for lost in 1..=3 {
        wait_for_attempt(&app, &task, lost).await;
        // The worker holding the task is gone: its lease names a dead node and has run out.
        sqlx::query("UPDATE tasks SET lease_token = 'dead-node.0', lease_until = 0 WHERE id = $1")
            .bind(&task)
            .execute(&app.state.db.write)
            .await
            .unwrap();
        app.state.bus.tasks_queued().notify_one();
    }
    let data = app.wait_done(GPT, &task).await;
    assert_eq!(data["state"], "failed", "{data}");
    assert_eq!(data["failCode"], "GENERATION_FAILED", "{data}");
    assert_eq!(data["failMsg"].as_str().unwrap().split(" (").next(), Some("processing was interrupted 3 times"));
    assert_eq!(counters(&app, &task).await, (4, 3, "failed".into()));
    assert_eq!(balance_and_held(&app).await, (START_MICROS, 0), "released, not charged");
    assert_ledger_invariant(&app.state, "default").await;
}

#[tokio::test]
async fn a_lease_handed_back_on_shutdown_is_not_an_interruption() {
    let (mut app, task) = app_with_a_slow_task().await;
    for attempt in 1..=4 {
        wait_for_attempt(&app, &task, attempt).await;
        app = app.restart(|c| c.local.latency_ms = 10_000_000).await;
    }
    wait_for_attempt(&app, &task, 5).await;
    // At least one claim per start (on PostgreSQL a stopping node may take it once more before
    // its last hand-back), and none of them counted as an interruption.
    let (attempts, interruptions, state) = counters(&app, &task).await;
    assert!(attempts >= 5, "{attempts} claims");
    assert_eq!((interruptions, state.as_str()), (0, "processing"));
}

#[tokio::test]
async fn a_result_too_large_to_convert_is_left_out() {
    // PNG answers to JPEG tasks: of the first task's two, only the small one fits the pixel
    // limit; the second task's one does not.
    let small = encoded(64, 48, [220, 20, 20], ImageFormat::Png);
    let large = encoded(200, 100, [20, 200, 20], ImageFormat::Png);
    let answers = [vec![small, large.clone()], vec![large]];
    let fake = Fake::start(Wire::OpenAi, move |_, i, _| {
        let data: Vec<Value> = answers[i].iter().map(|png| json!({"b64_json": b64(png)})).collect();
        Reply::ok(json!({"data": data}))
    })
    .await;
    let base = fake.base_url.clone();
    let app = spawn_app_with(|c| {
        c.media.max_pixels = 10_000;
        c.channels = vec![channel("openai", ProviderKind::Openai, &base, &[(GPT, "gpt-image-1")])];
    })
    .await;
    let price = app.state.catalog.get(GPT).unwrap().price().0;
    let generate = |n: u32| {
        let body = json!({"prompt": "a boat", "n": n, "output_format": "jpeg", "response_format": "url"});
        app.client.post(app.url("/v1/images/generations")).bearer_auth(&app.key).json(&body).send()
    };

    let body: Value = generate(2).await.unwrap().json().await.unwrap();
    let data = body["data"].as_array().expect("a partial success");
    assert_eq!(data.len(), 1, "{body}");
    let (format, img) = download(&app.client, data[0]["url"].as_str().unwrap()).await;
    assert_eq!((format, img.width(), img.height()), (ImageFormat::Jpeg, 64, 48));
    assert_eq!(balance_and_held(&app).await, (START_MICROS - price, 0), "one image charged");

    let res = generate(1).await.unwrap();
    let task = res.headers()["x-easel-task-id"].to_str().unwrap().to_owned();
    let data = app.wait_done(GPT, &task).await;
    assert_eq!(data["state"], "failed", "{data}");
    assert_eq!(data["failCode"], "GENERATION_FAILED", "{data}");
    let message = data["failMsg"].as_str().unwrap();
    assert!(message.starts_with("a result is 200×100 pixels"), "{message}");
    assert_eq!(balance_and_held(&app).await, (START_MICROS - price, 0), "nothing more charged");
    assert_ledger_invariant(&app.state, "default").await;
}
