//! Price rows: a task holds the highest price its request can reach and settles each delivered
//! image at what it actually was (its quality, size or tier), exactly once; the ledger invariant
//! holds under concurrency. Models are added the way an operator adds them, as catalog data.

mod common;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use common::fakes::*;
use common::*;
use easel::catalog::ModelEntry;
use easel::catalog::entry::PriceEntry;
use easel::config::ProviderKind;
use serde_json::{Value, json};

fn row(quality: Option<&str>, size: Option<&str>, tier: Option<&str>, usd: f64) -> PriceEntry {
    PriceEntry {
        quality: quality.map(str::to_owned),
        size: size.map(str::to_owned),
        tier: tier.map(str::to_owned),
        usd: Some(usd),
        per_reference_usd: None,
    }
}

/// A GPT image model of the operator's, priced by quality and size like OpenAI's list.
fn house_gpt() -> ModelEntry {
    ModelEntry {
        family: Some("gpt-image".into()),
        price_usd: Some(0.04),
        prices: Some(vec![
            row(Some("low"), Some("1024x1024"), None, 0.011),
            row(Some("low"), None, None, 0.016),
            row(Some("medium"), Some("1024x1024"), None, 0.042),
            row(Some("medium"), None, None, 0.063),
            row(Some("high"), Some("1024x1024"), None, 0.167),
            row(Some("high"), None, None, 0.25),
        ]),
        ..ModelEntry::default()
    }
}

/// A Seedream model of the operator's, priced by tier, with a per-reference add-on at 4K.
fn house_seedream() -> ModelEntry {
    ModelEntry {
        family: Some("seedream".into()),
        price_usd: Some(0.03),
        capabilities: Some(vec!["sequential".into()]),
        // Served by Seedream 4.5 upstream, which renders JPEG only.
        native_formats: Some(vec!["jpeg".into()]),
        prices: Some(vec![
            PriceEntry { per_reference_usd: Some(0.005), ..row(None, None, Some("4K"), 0.06) },
            row(None, None, Some("2K"), 0.03),
        ]),
        ..ModelEntry::default()
    }
}

/// The ledger rows of one task, by kind, in micro-dollars.
async fn ledger_of(app: &TestApp, task: &str) -> (i64, i64, i64) {
    let (status, page) = app.get_json("/api/v1/account/ledger?limit=200").await;
    assert_eq!(status, 200, "{page}");
    let mut sums = (0, 0, 0);
    for entry in page["data"]["entries"].as_array().unwrap().iter().filter(|e| e["taskId"] == task) {
        let micros = (entry["amount"].as_f64().unwrap() * 1e6).round() as i64;
        match entry["kind"].as_str().unwrap() {
            "hold" => sums.0 += micros,
            "settle" => sums.1 += micros,
            "release" => sums.2 += micros,
            other => panic!("unexpected ledger row {other}"),
        }
    }
    sums
}

async fn post_json(app: &TestApp, path: &str, body: &Value) -> (u16, Value, Option<String>) {
    let res = app.client.post(app.url(path)).bearer_auth(&app.key).json(body).send().await.unwrap();
    let task = res.headers().get("x-easel-task-id").map(|v| v.to_str().unwrap().to_owned());
    (res.status().as_u16(), res.json().await.unwrap(), task)
}

/// An OpenAI answer of `n` images, saying it rendered them at `quality`.
fn openai_images(seen: &Seen, quality: &str) -> Value {
    let req = seen.json.as_ref().unwrap();
    let n = req["n"].as_u64().unwrap() as usize;
    let png = encoded(16, 16, [10, 200, 30], image::ImageFormat::Png);
    let data: Vec<Value> = (0..n).map(|_| json!({"b64_json": BASE64.encode(&png)})).collect();
    json!({"created": 1_767_000_000, "data": data, "background": "opaque", "output_format": "png",
        "size": req["size"], "quality": quality, "usage": {"input_tokens": 0, "output_tokens": 0, "total_tokens": 0}})
}

#[tokio::test]
async fn a_request_that_leaves_the_quality_to_the_model_holds_the_dearest_and_pays_what_it_got() {
    let fake = Fake::start(Wire::OpenAi, |seen, _, _| Reply::ok(openai_images(seen, "medium"))).await;
    let base = fake.base_url.clone();
    let app = spawn_app_with(|c| {
        c.models.insert("house-gpt".into(), house_gpt());
        c.channels = vec![channel("openai", ProviderKind::Openai, &base, &[("house-gpt", "gpt-image-1")])];
    })
    .await;
    let body = json!({"model": "house-gpt", "prompt": "a lantern", "size": "1536x1024", "n": 2});
    let (status, answer, task) = post_json(&app, "/v1/images/generations", &body).await;
    assert_eq!(status, 200, "{answer}");
    let task = task.expect("the answer names its task");
    // Held at high (the dearest quality at 1536x1024), settled at medium, the rest released.
    assert_eq!(ledger_of(&app, &task).await, (2 * 250_000, 2 * 63_000, 2 * (250_000 - 63_000)));
    let seen = fake.seen_ok();
    assert_eq!(seen[0].json.as_ref().unwrap()["quality"], "auto", "the model chooses");
    assert_eq!(seen[0].json.as_ref().unwrap()["model"], "gpt-image-1", "the channel's upstream id");

    // A fixed quality holds its own price only.
    let body = json!({"model": "house-gpt", "prompt": "a lantern", "size": "1024x1024", "quality": "low"});
    let (status, answer, task) = post_json(&app, "/v1/images/generations", &body).await;
    assert_eq!(status, 200, "{answer}");
    // The fake says medium whatever was asked; the charge never passes the hold.
    assert_eq!(ledger_of(&app, &task.unwrap()).await, (11_000, 11_000, 0));
    assert_eq!(fake.seen_ok()[1].json.as_ref().unwrap()["quality"], "low");
    assert_ledger_invariant(&app.state, "default").await;
}

/// An Ark answer whose images say they were rendered at these sizes.
fn ark_sizes(host: &Host, index: usize, sizes: &[&str]) -> Value {
    let data: Vec<Value> = sizes
        .iter()
        .enumerate()
        .map(|(i, size)| {
            let url =
                host.host(&format!("r{index}-{i}.jpeg"), encoded(32, 32, [90, 90, 200], image::ImageFormat::Jpeg));
            json!({"url": url, "size": size})
        })
        .collect();
    json!({"model": "seedream-4-5-251128", "created": 1_767_000_000, "data": data,
        "usage": {"generated_images": sizes.len(), "output_tokens": 1, "total_tokens": 1}})
}

#[tokio::test]
async fn each_delivered_image_is_settled_at_its_own_tier() {
    let fake = Fake::start(Wire::Ark, |_, i, host| Reply::ok(ark_sizes(host, i, &["2048x2048", "4096x4096"]))).await;
    let base = fake.base_url.clone();
    let refs = spawn_reference_server().await;
    let app = spawn_app_with(|c| {
        c.server.allow_private_network = true;
        c.models.insert("house-seedream".into(), house_seedream());
        c.channels = vec![channel("ark", ProviderKind::Ark, &base, &[("house-seedream", "seedream-4-5-251128")])];
    })
    .await;
    let body = json!({"input": {"mode": "image-to-image", "prompt": "a harbour", "max_images": 3, "size": "4K",
        "sequential_image_generation": "auto", "image_urls": [format!("http://{refs}/red.png")]}});
    let task = app.submit_ok("house-seedream", &body).await;
    let data = app.wait_done("house-seedream", &task).await;
    assert_eq!(data["state"], "success", "{data}");
    assert_eq!(result_urls(&data).len(), 2);
    // Held: 3 images at 4K with one reference ($0.065). Settled: one 2K ($0.03, no add-on on that
    // row) and one 4K ($0.065). Released: the rest.
    let (held, settled, released) = ledger_of(&app, &task).await;
    assert_eq!(held, 3 * 65_000);
    assert_eq!(settled, 30_000 + 65_000);
    assert_eq!(released, held - settled);
    let seen = fake.seen_ok();
    assert_eq!(seen[0].json.as_ref().unwrap()["size"], "4096x4096");
    assert_ledger_invariant(&app.state, "default").await;
}

#[tokio::test]
async fn the_ledger_holds_under_concurrent_tasks_of_several_prices() {
    let app = spawn_app_with(|c| {
        c.models.insert("house-gpt".into(), house_gpt());
        c.local.latency_ms = 5;
    })
    .await;
    let qualities = ["low", "medium", "high", "auto"];
    let sizes = ["1024x1024", "1536x1024"];
    let requests = (0..24).map(|i| {
        let body = json!({"model": "house-gpt", "prompt": format!("lantern {i}"), "n": 1 + i % 2,
            "quality": qualities[i % 4], "size": sizes[(i / 4) % 2], "response_format": "url"});
        let app = &app;
        async move { post_json(app, "/v1/images/generations", &body).await }
    });
    let answers = futures::future::join_all(requests).await;
    let mut expected_spend = 0;
    for (i, (status, answer, task)) in answers.iter().enumerate() {
        assert_eq!(*status, 200, "{answer}");
        let n = (1 + i % 2) as i64;
        let square = sizes[(i / 4) % 2] == "1024x1024";
        // The local renderer reports the quality it was asked for; `auto` is unreported, so
        // such an image costs the flat price, after holding the dearest.
        let (price, hold) = match (qualities[i % 4], square) {
            ("low", true) => (11_000, 11_000),
            ("low", false) => (16_000, 16_000),
            ("medium", true) => (42_000, 42_000),
            ("medium", false) => (63_000, 63_000),
            ("high", true) => (167_000, 167_000),
            ("high", false) => (250_000, 250_000),
            (_, true) => (40_000, 167_000),
            (_, false) => (40_000, 250_000),
        };
        let task = task.as_deref().unwrap();
        assert_eq!(ledger_of(&app, task).await, (n * hold, n * price, n * (hold - price)), "request {i}");
        expected_spend += n * price;
    }
    let account = app.state.accounts.find("default").await.unwrap();
    assert_eq!((account.balance.0, account.held.0), (10_000_000 - expected_spend, 0));
    assert_ledger_invariant(&app.state, "default").await;
}
