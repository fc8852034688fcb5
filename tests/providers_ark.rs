//! Seedream through BytePlus/Volcengine Ark, against a fake Ark on loopback that checks the wire
//! format of every request and hosts the result images itself.

mod common;

use common::fakes::*;
use common::*;
use easel::config::ProviderKind;
use image::ImageFormat;
use serde_json::{Value, json};

const MODEL: &str = "seedream-5-0";
const UPSTREAM_5: &str = "seedream-5-0-260128";
const PRICE_MICROS: i64 = 32_000;
const START_MICROS: i64 = 10_000_000;

/// An Ark success: one image per `count`, hosted on the fake, in `format`, at the requested size.
fn ark_images(seen: &Seen, index: usize, host: &Host, count: usize, format: ImageFormat) -> Value {
    let body = seen.json.as_ref().unwrap();
    let size = body["size"].as_str().unwrap();
    let (w, h) = wxh(size);
    let ext = format.extensions_str()[0];
    let data: Vec<Value> = (0..count)
        .map(|i| {
            let url = host.host(&format!("r{index}-{i}.{ext}"), encoded(w, h, [30 * i as u8, 120, 200], format));
            json!({"url": url, "size": size})
        })
        .collect();
    json!({
        "model": body["model"],
        "created": 1_767_000_000,
        "data": data,
        "usage": {"generated_images": count, "output_tokens": 16384 * count, "total_tokens": 16384 * count}
    })
}

fn t2i(max_images: u32, sequential: &str, output_format: &str) -> Value {
    json!({"input": {"mode": "text-to-image", "prompt": "a lighthouse at dusk", "max_images": max_images,
        "sequential_image_generation": sequential, "output_format": output_format, "size": "1024x1024"}})
}

async fn balance_and_held(app: &TestApp) -> (i64, i64) {
    let account = app.state.accounts.find("default").await.unwrap();
    (account.balance.0, account.held.0)
}

async fn expect_results(app: &TestApp, data: &Value, count: usize, format: ImageFormat, size: (u32, u32)) {
    let urls = result_urls(data);
    assert_eq!(urls.len(), count, "{data}");
    for url in urls {
        assert!(url.starts_with(&app.base), "re-hosted by Easel: {url}");
        let (got, img) = download(&app.client, &url).await;
        assert_eq!(got, format);
        assert_eq!((img.width(), img.height()), size);
    }
}

#[tokio::test]
async fn sequential_auto_is_one_request_with_max_images() {
    let fake = Fake::start(Wire::Ark, |seen, i, host| Reply::ok(ark_images(seen, i, host, 3, ImageFormat::Png))).await;
    let base = fake.base_url.clone();
    let app =
        spawn_app_with(|c| c.channels = vec![channel("ark", ProviderKind::Ark, &base, &[(MODEL, UPSTREAM_5)])]).await;
    let mut body = t2i(3, "auto", "png");
    body["input"]["web_search"] = json!(true);
    let task = app.submit_ok(MODEL, &body).await;
    let data = app.wait_done(MODEL, &task).await;
    expect_results(&app, &data, 3, ImageFormat::Png, (1024, 1024)).await;

    let seen = fake.seen_ok();
    assert_eq!(seen.len(), 1, "one request for the whole series");
    let req = seen[0].json.as_ref().unwrap();
    assert_eq!(req["model"], UPSTREAM_5);
    assert_eq!(req["prompt"], "a lighthouse at dusk");
    assert_eq!(req["size"], "1024x1024");
    assert_eq!(req["sequential_image_generation"], "auto");
    assert_eq!(req["sequential_image_generation_options"]["max_images"], 3);
    assert_eq!(req["response_format"], "url");
    assert_eq!(req["watermark"], false);
    assert_eq!(req["output_format"], "png");
    assert_eq!(req["tools"], json!([{"type": "web_search"}]));
    assert!(req.get("image").is_none(), "no references, no image field");
    assert_eq!(balance_and_held(&app).await, (START_MICROS - 3 * PRICE_MICROS, 0));
    assert_ledger_invariant(&app.state, "default").await;
}

#[tokio::test]
async fn sequential_disabled_sends_one_single_image_request_per_image() {
    let fake = Fake::start(Wire::Ark, |seen, i, host| Reply::ok(ark_images(seen, i, host, 1, ImageFormat::Jpeg))).await;
    let base = fake.base_url.clone();
    let app =
        spawn_app_with(|c| c.channels = vec![channel("ark", ProviderKind::Ark, &base, &[(MODEL, UPSTREAM_5)])]).await;
    let task = app.submit_ok(MODEL, &t2i(3, "disabled", "jpeg")).await;
    let data = app.wait_done(MODEL, &task).await;
    expect_results(&app, &data, 3, ImageFormat::Jpeg, (1024, 1024)).await;

    let seen = fake.seen_ok();
    assert_eq!(seen.len(), 3, "one request per image");
    for s in &seen {
        let req = s.json.as_ref().unwrap();
        assert_eq!(req["sequential_image_generation"], "disabled");
        assert!(req.get("sequential_image_generation_options").is_none());
        assert_eq!(req["output_format"], "jpeg");
        assert!(req.get("tools").is_none(), "web_search was not asked for");
    }
    assert_eq!(balance_and_held(&app).await, (START_MICROS - 3 * PRICE_MICROS, 0));
    assert_ledger_invariant(&app.state, "default").await;
}

#[tokio::test]
async fn a_failed_image_in_a_batch_is_left_out_and_not_charged() {
    let fake = Fake::start(Wire::Ark, |seen, i, host| {
        let mut body = ark_images(seen, i, host, 3, ImageFormat::Png);
        body["data"][1] = json!({"error": {"code": "OutputImageSensitiveContentDetected",
            "message": "The request failed because the output image may contain sensitive information."}});
        body["usage"]["generated_images"] = json!(2);
        Reply::ok(body)
    })
    .await;
    let base = fake.base_url.clone();
    let app =
        spawn_app_with(|c| c.channels = vec![channel("ark", ProviderKind::Ark, &base, &[(MODEL, UPSTREAM_5)])]).await;
    let task = app.submit_ok(MODEL, &t2i(3, "auto", "png")).await;
    let data = app.wait_done(MODEL, &task).await;
    expect_results(&app, &data, 2, ImageFormat::Png, (1024, 1024)).await;
    assert_eq!(fake.seen_ok().len(), 1);
    assert_eq!(balance_and_held(&app).await, (START_MICROS - 2 * PRICE_MICROS, 0), "charged for 2 delivered images");
    assert_ledger_invariant(&app.state, "default").await;
}

#[tokio::test]
async fn output_sensitive_content_fails_the_task_without_failover_or_charge() {
    let refusing = Fake::start(Wire::Ark, |_, _, _| {
        Reply::status(
            400,
            json!({"error": {"code": "OutputImageSensitiveContentDetected",
                "message": "The request failed because the output image may contain sensitive information.",
                "param": "", "type": "BadRequest"}}),
        )
    })
    .await;
    let spare =
        Fake::start(Wire::Ark, |seen, i, host| Reply::ok(ark_images(seen, i, host, 1, ImageFormat::Jpeg))).await;
    let (a, b) = (refusing.base_url.clone(), spare.base_url.clone());
    let app = spawn_app_with(|c| {
        let mut first = channel("ark-first", ProviderKind::Ark, &a, &[(MODEL, UPSTREAM_5)]);
        first.priority = 10;
        c.channels = vec![first, channel("ark-spare", ProviderKind::Ark, &b, &[(MODEL, UPSTREAM_5)])];
    })
    .await;
    let task = app.submit_ok(MODEL, &t2i(1, "disabled", "jpeg")).await;
    let data = app.wait_done(MODEL, &task).await;
    assert_eq!(data["state"], "failed", "{data}");
    assert_eq!(data["failCode"], "CONTENT_VIOLATION", "{data}");
    assert_eq!(refusing.seen_ok().len(), 1, "exactly one request");
    assert!(spare.seen().is_empty(), "a content verdict does not fail over");
    assert_eq!(balance_and_held(&app).await, (START_MICROS, 0), "nothing charged");
    assert_ledger_invariant(&app.state, "default").await;
}

#[tokio::test]
async fn image_to_image_sends_the_references_as_data_uris() {
    let fake = Fake::start(Wire::Ark, |seen, i, host| Reply::ok(ark_images(seen, i, host, 1, ImageFormat::Jpeg))).await;
    let base = fake.base_url.clone();
    let app = spawn_app_with(|c| {
        c.server.allow_private_network = true;
        c.channels = vec![channel("ark", ProviderKind::Ark, &base, &[(MODEL, UPSTREAM_5)])];
    })
    .await;
    let refs = spawn_reference_server().await;
    let i2i = |urls: Vec<String>| {
        json!({"input": {"mode": "image-to-image", "prompt": "make it autumn", "max_images": 1,
            "image_urls": urls, "size": "1024x1024"}})
    };
    // One reference: a single string.
    let task = app.submit_ok(MODEL, &i2i(vec![format!("http://{refs}/red.png")])).await;
    expect_results(&app, &app.wait_done(MODEL, &task).await, 1, ImageFormat::Jpeg, (1024, 1024)).await;
    // Two: an array, in order, each a data URI of the fetched bytes.
    let urls = vec![format!("http://{refs}/red.png"), format!("http://{refs}/blue.jpg")];
    let task = app.submit_ok(MODEL, &i2i(urls)).await;
    expect_results(&app, &app.wait_done(MODEL, &task).await, 1, ImageFormat::Jpeg, (1024, 1024)).await;

    let seen = fake.seen_ok();
    assert_eq!(seen.len(), 2);
    let one = seen[0].json.as_ref().unwrap()["image"].as_str().expect("one reference is a string").to_owned();
    let (fmt, bytes) = decode_data_uri(&one).unwrap();
    assert_eq!(fmt, "png");
    assert_eq!(image::load_from_memory(&bytes).unwrap().to_rgb8().get_pixel(0, 0).0, [220, 20, 20]);
    let many = seen[1].json.as_ref().unwrap()["image"].as_array().expect("two references are an array").clone();
    assert_eq!(many.len(), 2);
    let formats: Vec<String> = many.iter().map(|u| decode_data_uri(u.as_str().unwrap()).unwrap().0).collect();
    assert_eq!(formats, ["png", "jpeg"]);
    for s in &seen {
        let text = serde_json::to_string(s.json.as_ref().unwrap()).unwrap();
        assert!(!text.contains(&refs.to_string()), "the upstream never sees the user's URLs");
    }
}

#[tokio::test]
async fn a_4x_model_answering_jpeg_is_stored_as_the_png_asked_for() {
    // The catalog says Seedream 4.5 renders JPEG only and has no web search: Ark is told
    // neither `output_format` nor `tools`, and the worker converts.
    const MODEL_45: &str = "seedream-4-5";
    let fake = Fake::start(Wire::Ark, |seen, i, host| Reply::ok(ark_images(seen, i, host, 1, ImageFormat::Jpeg))).await;
    let base = fake.base_url.clone();
    let app = spawn_app_with(|c| c.channels = vec![channel("ark-45", ProviderKind::Ark, &base, &[])]).await;
    let mut body = t2i(1, "disabled", "png");
    body["input"]["size"] = json!("2560x1440");
    body["input"]["web_search"] = json!(true);
    let (status, refused) = app.submit(MODEL_45, &body).await;
    assert_eq!(
        (status, refused["message"].as_str().unwrap()),
        (400, "input.web_search is not supported by seedream-4-5")
    );
    body["input"]["web_search"] = json!(false);
    let task = app.submit_ok(MODEL_45, &body).await;
    let data = app.wait_done(MODEL_45, &task).await;
    expect_results(&app, &data, 1, ImageFormat::Png, (2560, 1440)).await;
    let seen = fake.seen_ok();
    assert_eq!(seen.len(), 1);
    let req = seen[0].json.as_ref().unwrap();
    assert_eq!(req["model"], "seedream-4-5-251128", "the catalog's upstream id, the channel mapping none");
    assert!(req.get("output_format").is_none(), "4.x takes no output_format");
    assert!(req.get("tools").is_none(), "4.x takes no tools");
}
