//! apimodels' unified API (seed 003): its curl examples as written, the query, its envelope
//! and statuses, its callback body; and `Prefer: wait` on both task APIs.

mod common;

use std::time::Duration;

use common::*;
use serde_json::{Value, json};

async fn create(app: &TestApp, body: &Value) -> (u16, Value) {
    let res =
        app.client.post(app.url("/api/v1/images/generations")).bearer_auth(&app.key).json(body).send().await.unwrap();
    (res.status().as_u16(), res.json().await.unwrap())
}

async fn query_until_done(app: &TestApp, task: &str) -> Value {
    wait_until(Duration::from_secs(60), || async {
        let res = app
            .client
            .get(app.url(&format!("/api/v1/images/generations?task_id={task}")))
            .bearer_auth(&app.key)
            .send()
            .await
            .unwrap();
        let body: Value = res.json().await.unwrap();
        assert_eq!((body["code"].as_u64(), body["msg"].as_str()), (Some(200), Some("success")), "{body}");
        matches!(body["data"]["state"].as_str(), Some("completed" | "failed")).then(|| body["data"].clone())
    })
    .await
}

async fn expect_completed(app: &TestApp, body: Value, size: (u32, u32), format: image::ImageFormat) -> Value {
    let (status, created) = create(app, &body).await;
    assert_eq!(status, 200, "{created}");
    assert_eq!(created["msg"], "success");
    assert_eq!(created["data"]["state"], "pending");
    let task = created["data"]["taskId"].as_str().unwrap().to_owned();
    let data = query_until_done(app, &task).await;
    assert_eq!(data["state"], "completed", "{data}");
    assert!(data["createTime"].is_i64() && data["completeTime"].is_i64());
    assert!(data.get("failMsg").is_none());
    for url in data["resultUrls"].as_array().unwrap() {
        let (got, img) = download(&app.client, url.as_str().unwrap()).await;
        assert_eq!(got, format);
        assert_eq!((img.width(), img.height()), size);
    }
    data
}

#[tokio::test]
async fn seed_003_examples_work_verbatim() {
    let app = spawn_app_with(|c| c.server.allow_private_network = true).await;
    // Step 1a: text-to-image.
    let t2i = json!({
        "model": "doubao-seedream-5-0-260128",
        "prompt": "A cherry blossom tree by a tranquil river, impressionist painting style",
        "size": "2K"
    });
    expect_completed(&app, t2i, (2048, 2048), image::ImageFormat::Jpeg).await;
    // Step 1b: image-to-image, with the seed's unreachable reference and with a local one.
    let i2i = |url: String| {
        json!({
            "model": "doubao-seedream-5-0-260128",
            "prompt": "Change the season to winter with snow",
            "image_url": url,
            "size": "4K"
        })
    };
    let (_, created) = create(&app, &i2i("https://ref.invalid/landscape.jpg".into())).await;
    let failed = query_until_done(&app, created["data"]["taskId"].as_str().unwrap()).await;
    assert_eq!(failed["state"], "failed");
    // The message names the field as this API spells it.
    assert!(failed["failMsg"].as_str().unwrap().starts_with("image_url[0] "), "{failed}");
    assert!(failed.get("resultUrls").is_none());
    let refs = spawn_reference_server().await;
    expect_completed(&app, i2i(format!("http://{refs}/red.png")), (4096, 4096), image::ImageFormat::Jpeg).await;
}

#[tokio::test]
async fn seedream_4_5_and_gpt_image_sizes() {
    let app = spawn_app_with(|c| c.server.allow_private_network = true).await;
    let body =
        json!({"model": "doubao-seedream-4-5-251128", "prompt": "a harbour", "size": "2K", "aspect_ratio": "16:9"});
    expect_completed(&app, body, (2848, 1600), image::ImageFormat::Jpeg).await;
    let refs = spawn_reference_server().await;
    let body = json!({"model": "gpt-image-1", "prompt": "a fusion", "size": "1536x1024", "n": 2,
        "image_url": [format!("http://{refs}/red.png"), format!("http://{refs}/blue.jpg")]});
    let data = expect_completed(&app, body, (1536, 1024), image::ImageFormat::Png).await;
    assert_eq!(data["resultUrls"].as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn errors_use_seed_003_envelope_and_statuses() {
    let app = spawn_app_with(|c| c.server.bootstrap_credits_usd = 0.05).await;
    let (status, body) = create(&app, &json!({"model": "dall-e-9", "prompt": "p"})).await;
    assert_eq!(status, 400);
    assert_eq!(body["code"], 400);
    assert!(body["msg"].as_str().unwrap().starts_with("model must be one of"), "{body}");
    assert!(body["data"].is_null() && body.get("message").is_none());
    // $0.05 buys one gpt-image-1 image, not two: 402 here (APIXO's routes say 400).
    let (status, body) = create(&app, &json!({"model": "gpt-image-1", "prompt": "p", "n": 2})).await;
    assert_eq!((status, body["code"].as_u64(), body["msg"].as_str()), (402, Some(402), Some("Insufficient credits")));
    let res = app
        .client
        .get(app.url("/api/v1/images/generations?task_id=task_nope"))
        .bearer_auth(&app.key)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 404);
    let res = app.client.post(app.url("/api/v1/images/generations")).json(&json!({})).send().await.unwrap();
    assert_eq!(res.status(), 401);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["code"], 401);
    assert!(body["msg"].is_string());
}

#[tokio::test]
async fn prefer_wait_answers_with_the_finished_task() {
    let app = spawn_app().await;
    let res = app
        .client
        .post(app.url("/api/v1/images/generations"))
        .bearer_auth(&app.key)
        .header("Prefer", "wait=30")
        .json(&json!({"model": "gpt-image-1", "prompt": "now please"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.headers()["preference-applied"], "wait=30");
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["data"]["state"], "completed", "{body}");
    assert_eq!(body["data"]["resultUrls"].as_array().unwrap().len(), 1);

    let res = app
        .client
        .post(app.url("/api/v1/generateTask/gpt-image-1"))
        .bearer_auth(&app.key)
        .header("Prefer", "wait=30")
        .json(&gpt_t2i(1))
        .send()
        .await
        .unwrap();
    assert_eq!(res.headers()["preference-applied"], "wait=30");
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["data"]["state"], "success", "{body}");
    assert!(body["data"]["resultJson"].is_string());
}

#[tokio::test]
async fn prefer_wait_gives_up_after_its_time_with_the_task_as_it_is() {
    let app = spawn_app_with(|c| c.local.latency_ms = 600_000).await;
    let res = app
        .client
        .post(app.url("/api/v1/generateTask/gpt-image-1"))
        .bearer_auth(&app.key)
        .header("Prefer", "wait=1")
        .json(&gpt_t2i(1))
        .send()
        .await
        .unwrap();
    assert_eq!(res.headers()["preference-applied"], "wait=1");
    let body: Value = res.json().await.unwrap();
    assert!(matches!(body["data"]["state"].as_str(), Some("pending" | "processing")), "{body}");
    assert!(body["data"]["taskId"].as_str().unwrap().starts_with("task_"));
}
