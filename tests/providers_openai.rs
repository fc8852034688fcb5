//! GPT image models through the OpenAI Images API, against a fake OpenAI on loopback that checks
//! the wire format of every request (JSON generations, multipart edits).

mod common;

use base64::Engine;
use common::fakes::*;
use common::*;
use easel::catalog::OutputFormat;
use easel::config::ProviderKind;
use easel::media;
use image::ImageFormat;
use serde_json::{Value, json};

const MODEL: &str = "gpt-image-1";
const UPSTREAM: &str = "gpt-image-1.5";
const START_MICROS: i64 = 10_000_000;

async fn balance_and_held(app: &TestApp) -> (i64, i64) {
    let account = app.state.accounts.find("default").await.unwrap();
    (account.balance.0, account.held.0)
}

async fn expect_pngs(app: &TestApp, data: &Value, count: usize, size: (u32, u32)) {
    let urls = result_urls(data);
    assert_eq!(urls.len(), count, "{data}");
    for url in urls {
        let (format, img) = download(&app.client, &url).await;
        assert_eq!(format, ImageFormat::Png);
        assert_eq!((img.width(), img.height()), size);
    }
}

/// A fake OpenAI that answers every request with its images, and an app whose one channel for
/// gpt-image-1 is that fake; references on loopback are allowed.
async fn app_on_working_openai() -> (Fake, TestApp) {
    let fake = Fake::start(Wire::OpenAi, |seen, _, _| Reply::ok(openai_images(seen))).await;
    let base = fake.base_url.clone();
    let app = spawn_app_with(|c| {
        c.server.allow_private_network = true;
        c.channels = vec![channel("openai", ProviderKind::Openai, &base, &[(MODEL, UPSTREAM)])];
    })
    .await;
    (fake, app)
}

#[tokio::test]
async fn generations_return_the_requested_pngs() {
    let (fake, app) = app_on_working_openai().await;
    let mut body = gpt_t2i(2);
    body["input"]["aspect_ratio"] = json!("3:2");
    let task = app.submit_ok(MODEL, &body).await;
    let data = app.wait_done(MODEL, &task).await;
    expect_pngs(&app, &data, 2, (1536, 1024)).await;

    let seen = fake.seen_ok();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].path, "/v1/images/generations");
    let req = seen[0].json.as_ref().unwrap();
    assert_eq!(req["model"], UPSTREAM);
    assert_eq!(req["prompt"], "a paper boat");
    assert_eq!(req["n"], 2);
    assert_eq!(req["size"], "1536x1024");
    assert_eq!(req["quality"], "auto");
    assert_eq!(req["output_format"], "png");
    assert!(req.get("response_format").is_none(), "GPT image models reject response_format");
    assert_ledger_invariant(&app.state, "default").await;
}

#[tokio::test]
async fn references_go_to_edits_as_multipart_image_parts() {
    let (fake, app) = app_on_working_openai().await;
    let refs = spawn_reference_server().await;
    let body = json!({"input": {"mode": "gpt-image-1", "prompt": "put the boat on a lake", "num_images": 1,
        "image_urls": [format!("http://{refs}/red.png"), format!("http://{refs}/blue.jpg")]}});
    let task = app.submit_ok(MODEL, &body).await;
    let data = app.wait_done(MODEL, &task).await;
    expect_pngs(&app, &data, 1, (1024, 1024)).await;

    let seen = fake.seen_ok();
    assert_eq!(seen.len(), 1);
    let req = &seen[0];
    assert_eq!(req.path, "/v1/images/edits");
    let images: Vec<&MultipartPart> = req.parts.iter().filter(|p| p.name == "image[]").collect();
    assert_eq!(images.len(), 2, "one image[] part per reference");
    assert_eq!(images[0].content_type.as_deref(), Some("image/png"));
    assert!(images[0].filename.as_deref().unwrap().ends_with(".png"));
    assert_eq!(images[1].content_type.as_deref(), Some("image/jpeg"));
    assert!(images[1].filename.as_deref().unwrap().ends_with(".jpg"));
    assert_eq!(image::load_from_memory(&images[0].data).unwrap().to_rgb8().get_pixel(0, 0).0, [220, 20, 20]);
    for (name, value) in [("model", UPSTREAM), ("prompt", "put the boat on a lake"), ("n", "1"), ("size", "1024x1024")]
    {
        assert_eq!(req.part(name).map(|p| p.text()).as_deref(), Some(value), "part {name}");
    }
    assert_eq!(req.part("quality").unwrap().text(), "auto");
    assert_eq!(req.part("output_format").unwrap().text(), "png");
    assert!(req.part("response_format").is_none());
}

#[tokio::test]
async fn moderation_blocked_is_a_content_violation() {
    let fake = Fake::start(Wire::OpenAi, |_, _, _| {
        Reply::status(
            400,
            json!({"error": {"message": "Your request was rejected as a result of our safety system.",
                "type": "image_generation_user_error", "param": null, "code": "moderation_blocked"}}),
        )
    })
    .await;
    let base = fake.base_url.clone();
    let app =
        spawn_app_with(|c| c.channels = vec![channel("openai", ProviderKind::Openai, &base, &[(MODEL, UPSTREAM)])])
            .await;
    let task = app.submit_ok(MODEL, &gpt_t2i(1)).await;
    let data = app.wait_done(MODEL, &task).await;
    assert_eq!(data["state"], "failed", "{data}");
    assert_eq!(data["failCode"], "CONTENT_VIOLATION", "{data}");
    assert_eq!(fake.seen_ok().len(), 1);
    assert_eq!(balance_and_held(&app).await, (START_MICROS, 0), "nothing charged");
    assert_ledger_invariant(&app.state, "default").await;
}

#[tokio::test]
async fn retryable_failures_fail_over_to_the_next_channel() {
    let unavailable = Fake::start(Wire::OpenAi, |_, _, _| {
        Reply::status(
            503,
            json!({"error": {"message": "The engine is currently overloaded, please try again later.",
                "type": "server_error", "param": null, "code": null}}),
        )
    })
    .await;
    let limited = Fake::start(Wire::OpenAi, |_, _, _| {
        Reply::status(
            429,
            json!({"error": {"message": "Rate limit reached for gpt-image-1.5 on requests per min (RPM).",
                "type": "requests", "param": null, "code": "rate_limit_exceeded"}}),
        )
        .header("retry-after", "1")
        .header("x-ratelimit-reset-requests", "1s")
    })
    .await;
    let working = Fake::start(Wire::OpenAi, |seen, _, _| Reply::ok(openai_images(seen))).await;
    let (a, b, w) = (unavailable.base_url.clone(), limited.base_url.clone(), working.base_url.clone());
    let app = spawn_app_with(|c| {
        let mut first = channel("openai-a", ProviderKind::Openai, &a, &[(MODEL, UPSTREAM)]);
        first.priority = 30;
        let mut second = channel("openai-b", ProviderKind::Openai, &b, &[(MODEL, UPSTREAM)]);
        second.priority = 20;
        let mut third = channel("openai-c", ProviderKind::Openai, &w, &[(MODEL, UPSTREAM)]);
        third.priority = 10;
        c.channels = vec![third, first, second];
    })
    .await;
    let task = app.submit_ok(MODEL, &gpt_t2i(1)).await;
    let data = app.wait_done(MODEL, &task).await;
    expect_pngs(&app, &data, 1, (1024, 1024)).await;
    assert_eq!(unavailable.seen_ok().len(), 1);
    assert_eq!(limited.seen_ok().len(), 1);
    assert_eq!(working.seen_ok().len(), 1);
    assert_ledger_invariant(&app.state, "default").await;
}

/// Inpaints the reference server's red PNG through the unified API with the mask at `mask_path`
/// on that server; returns the fake OpenAI, the app and the finished task's status.
async fn inpaint_with_mask(mask_path: &str) -> (Fake, TestApp, Value) {
    let (fake, app) = app_on_working_openai().await;
    let refs = spawn_reference_server().await;
    let body = json!({"model": MODEL, "prompt": "fill the hole", "image_url": format!("http://{refs}/red.png"),
        "mask_url": format!("http://{refs}/{mask_path}")});
    let res = app.client.post(app.url("/api/v1/images/generations")).bearer_auth(&app.key).json(&body).send().await;
    let created: Value = res.unwrap().json().await.unwrap();
    let task = created["data"]["taskId"].as_str().expect("a taskId").to_owned();
    let data = app.wait_done(MODEL, &task).await;
    (fake, app, data)
}

#[tokio::test]
async fn a_mask_goes_to_edits_as_a_png_mask_part() {
    // The unified API's mask_url; a JPEG mask must reach OpenAI as the PNG it requires.
    let (fake, app, data) = inpaint_with_mask("blue.jpg").await;
    expect_pngs(&app, &data, 1, (1024, 1024)).await;

    let seen = fake.seen_ok();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].path, "/v1/images/edits");
    let mask = seen[0].part("mask").expect("a mask part");
    assert_eq!(mask.content_type.as_deref(), Some("image/png"));
    assert_eq!(image::guess_format(&mask.data).unwrap(), ImageFormat::Png);
    let decoded = image::load_from_memory(&mask.data).unwrap().to_rgb8();
    assert_eq!(decoded.dimensions(), (64, 48));
    let [r, _, b] = decoded.get_pixel(10, 10).0;
    assert!(b > 180 && r < 60, "the mask is the blue image");
    assert_eq!(seen[0].parts.iter().filter(|p| p.name == "image[]").count(), 1);
}

#[tokio::test]
async fn a_mask_that_cannot_be_fetched_fails_the_task_without_charge() {
    let (fake, app, data) = inpaint_with_mask("missing.png").await;
    assert_eq!(data["state"], "failed");
    assert_eq!(data["failCode"], "INVALID_IMAGE_URL", "{data}");
    assert!(data["failMsg"].as_str().unwrap().starts_with("mask_url"), "{data}");
    assert!(fake.seen().is_empty(), "the upstream is never called");
    assert_eq!(balance_and_held(&app).await, (START_MICROS, 0));
}

#[tokio::test]
async fn a_retry_after_rests_the_channel_for_later_tasks() {
    let limited = Fake::start(Wire::OpenAi, |_, _, _| {
        Reply::status(
            429,
            json!({"error": {"message": "Rate limit reached", "type": "requests", "param": null,
            "code": "rate_limit_exceeded"}}),
        )
        .header("retry-after", "120")
    })
    .await;
    let working = Fake::start(Wire::OpenAi, |seen, _, _| Reply::ok(openai_images(seen))).await;
    let (l, w) = (limited.base_url.clone(), working.base_url.clone());
    let app = spawn_app_with(|c| {
        c.admin_token = Some("ops".into());
        let mut first = channel("limited", ProviderKind::Openai, &l, &[(MODEL, UPSTREAM)]);
        first.priority = 20;
        c.channels = vec![first, channel("working", ProviderKind::Openai, &w, &[(MODEL, UPSTREAM)])];
    })
    .await;
    for _ in 0..2 {
        let task = app.submit_ok(MODEL, &gpt_t2i(1)).await;
        expect_pngs(&app, &app.wait_done(MODEL, &task).await, 1, (1024, 1024)).await;
    }
    assert_eq!(limited.seen_ok().len(), 1, "no task reaches a channel inside its Retry-After");
    assert_eq!(working.seen_ok().len(), 2);
    let res = app.client.get(app.url("/admin/v1/channels")).bearer_auth("ops").send().await.unwrap();
    let body: Value = res.json().await.unwrap();
    let resting = body["data"].as_array().unwrap().iter().find(|c| c["id"] == "limited").unwrap()["restingMs"].clone();
    let ms = resting.as_u64().expect("restingMs while resting");
    assert!(ms > 100_000 && ms <= 120_000, "{ms}");
}

/// A gradient in `format`, so that a second lossy conversion would show in the bytes.
fn gradient(format: ImageFormat) -> Vec<u8> {
    let img =
        image::RgbImage::from_fn(96, 64, |x, y| image::Rgb([(x * 2) as u8, (y * 3) as u8, ((x * y) % 256) as u8]));
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, format).unwrap();
    out.into_inner()
}

#[tokio::test]
async fn a_result_is_stored_as_it_came_or_converted_once() {
    // (the task's format, what the upstream answers), one request each, in order.
    let cases = [
        (OutputFormat::Jpeg, ImageFormat::Png),
        (OutputFormat::Webp, ImageFormat::Png),
        (OutputFormat::Png, ImageFormat::Gif),
        (OutputFormat::Webp, ImageFormat::WebP),
        (OutputFormat::Jpeg, ImageFormat::Jpeg),
    ];
    let answers: Vec<Vec<u8>> = cases.iter().map(|&(_, upstream)| gradient(upstream)).collect();
    let replies = answers.clone();
    let fake =
        Fake::start(Wire::OpenAi, move |_, i, _| Reply::ok(json!({"data": [{"b64_json": b64(&replies[i])}]}))).await;
    let base = fake.base_url.clone();
    let app =
        spawn_app_with(|c| c.channels = vec![channel("openai", ProviderKind::Openai, &base, &[(MODEL, UPSTREAM)])])
            .await;
    for ((wanted, upstream), answer) in cases.into_iter().zip(answers) {
        let case = format!("{wanted:?} from {upstream:?}");
        let body = json!({"model": MODEL, "prompt": "a koi", "output_format": wanted.extension()});
        let res = app.client.post(app.url("/v1/images/generations")).bearer_auth(&app.key).json(&body).send().await;
        let body: Value = res.unwrap().json().await.unwrap();
        assert_eq!(body["output_format"], wanted.extension(), "{case}: {body}");
        let stored = base64::engine::general_purpose::STANDARD.decode(body["data"][0]["b64_json"].as_str().unwrap());
        let stored = stored.unwrap();
        assert_eq!(image::guess_format(&stored).unwrap(), media::image_format(wanted), "{case}");
        let expected = if upstream == media::image_format(wanted) {
            answer
        } else {
            media::encode(&image::load_from_memory(&answer).unwrap(), wanted).unwrap()
        };
        assert!(stored == expected, "{case}: not the upstream's bytes converted exactly once");
    }
    let asked: Vec<Value> = fake.seen_ok().iter().map(|s| s.json.as_ref().unwrap()["output_format"].clone()).collect();
    assert_eq!(asked, ["jpeg", "webp", "png", "webp", "jpeg"], "GPT image models are asked for the task's format");
}

#[tokio::test]
async fn a_streaming_client_gets_the_upstreams_previews_as_they_stream() {
    let preview = |shade: u8| encoded(1024, 1024, [shade, shade, 200], ImageFormat::Png);
    let fake = Fake::start(Wire::OpenAi, move |seen, _, _| {
        let body = seen.json.as_ref().unwrap();
        assert_eq!((body["stream"].as_bool(), body["partial_images"].as_u64()), (Some(true), Some(2)));
        let settings = json!({"size": "1024x1024", "quality": "high", "background": "opaque", "output_format": "png"});
        let event = |kind: &str, bytes: &[u8], extra: Value| {
            let mut data = settings.clone();
            data["type"] = json!(kind);
            data["b64_json"] = json!(b64(bytes));
            data.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
            (kind.to_owned(), data)
        };
        let events = [
            event("image_generation.partial_image", &preview(10), json!({"partial_image_index": 0})),
            event("image_generation.partial_image", &preview(90), json!({"partial_image_index": 1})),
            event("image_generation.completed", &preview(250), json!({"usage": {"total_tokens": 1}})),
        ];
        let pairs: Vec<(&str, Value)> = events.iter().map(|(k, d)| (k.as_str(), d.clone())).collect();
        Reply::events(&pairs)
    })
    .await;
    let base = fake.base_url.clone();
    let app = spawn_app_with(|c| {
        c.server.allow_private_network = true;
        c.channels = vec![channel("openai", ProviderKind::Openai, &base, &[(MODEL, UPSTREAM)])];
    })
    .await;
    let before = balance_and_held(&app).await;
    let res = app
        .client
        .post(app.url("/v1/images/generations"))
        .bearer_auth(&app.key)
        .json(&json!({"model": MODEL, "prompt": "a boat", "quality": "high", "stream": true, "partial_images": 2}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert!(res.headers()["content-type"].to_str().unwrap().starts_with("text/event-stream"));
    let text = res.text().await.unwrap();
    let mut reader = easel::sse_reader::SseReader::default();
    let events: Vec<(String, Value)> = reader
        .push(text.as_bytes())
        .into_iter()
        .filter_map(|f| match f {
            easel::sse_reader::Frame::Event { event, data, .. } => Some((event, serde_json::from_str(&data).unwrap())),
            _ => None,
        })
        .collect();
    let names: Vec<&str> = events.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        ["image_generation.partial_image", "image_generation.partial_image", "image_generation.completed"]
    );
    let bytes =
        |data: &Value| base64::engine::general_purpose::STANDARD.decode(data["b64_json"].as_str().unwrap()).unwrap();
    assert_eq!(bytes(&events[0].1), preview(10), "the upstream's first preview, as it came");
    assert_eq!(bytes(&events[1].1), preview(90));
    assert_eq!(bytes(&events[2].1), preview(250));
    assert_eq!(events[1].1["partial_image_index"], 1);
    // One image, charged at its quality (gpt-image-1 high, square).
    let (after, held) = balance_and_held(&app).await;
    assert_eq!(held, 0);
    assert!(after < before.0, "the image is billed");
    assert_eq!(fake.seen_ok().len(), 1);
    assert_ledger_invariant(&app.state, "default").await;
}
