//! Transport-level mistakes answer in the APIXO envelope with HTTP status = code, never with
//! axum's plain-text rejections.

mod common;

use common::*;
use reqwest::header::CONTENT_TYPE;
use serde_json::Value;

async fn expect_envelope(res: reqwest::Response, status: u16, needle: &str) {
    assert_eq!(res.status().as_u16(), status);
    assert!(res.headers()[CONTENT_TYPE].to_str().unwrap().starts_with("application/json"));
    let json: Value = res.json().await.unwrap();
    assert_eq!(json["code"], status, "{json}");
    assert!(json["data"].is_null(), "{json}");
    let message = json["message"].as_str().unwrap();
    assert!(message.contains(needle), "expected {needle:?} in {message:?}");
}

#[tokio::test]
async fn body_mistakes_are_400s_in_the_envelope() {
    let app = spawn_app().await;
    let url = app.url("/api/v1/generateTask/seedream-5-0");
    let post = |body: &'static str, ct: Option<&'static str>| {
        let mut req = app.client.post(&url).bearer_auth(&app.key).body(body);
        if let Some(ct) = ct {
            req = req.header(CONTENT_TYPE, ct);
        }
        req.send()
    };
    expect_envelope(post("{\"input\":", Some("application/json")).await.unwrap(), 400, "malformed JSON").await;
    expect_envelope(post("{}", Some("text/plain")).await.unwrap(), 400, "Content-Type must be application/json").await;
    expect_envelope(post("{}", None).await.unwrap(), 400, "Content-Type must be application/json").await;
    expect_envelope(post("", Some("application/json")).await.unwrap(), 400, "the request body is empty").await;
    // A charset parameter is fine.
    let res = post("{}", Some("application/json; charset=utf-8")).await.unwrap();
    expect_envelope(res, 400, "input is required").await;
}

#[tokio::test]
async fn oversized_body_is_413() {
    let app = spawn_app().await;
    let huge = format!("{{\"input\":{{\"prompt\":\"{}\"}}}}", "x".repeat(1024 * 1024 + 10));
    let res = app
        .client
        .post(app.url("/api/v1/generateTask/seedream-5-0"))
        .bearer_auth(&app.key)
        .header(CONTENT_TYPE, "application/json")
        .body(huge)
        .send()
        .await
        .unwrap();
    expect_envelope(res, 413, "larger than 1 MiB").await;
}

#[tokio::test]
async fn unknown_model_route_and_method() {
    let app = spawn_app().await;
    let (status, json) = app.submit("dall-e-9", &seedream_t2i(1)).await;
    assert_eq!((status, json["code"].as_u64()), (404, Some(404)));
    assert_eq!(json["message"], "model dall-e-9 not found");

    let res = app
        .client
        .get(app.url("/api/v1/statusTask/dall-e-9?taskId=task_1"))
        .bearer_auth(&app.key)
        .send()
        .await
        .unwrap();
    expect_envelope(res, 404, "model dall-e-9 not found").await;
    let res = app.client.get(app.url("/api/v1/nothing-here")).send().await.unwrap();
    expect_envelope(res, 404, "no such route").await;
    let res = app.client.get(app.url("/api/v1/generateTask/seedream-5-0")).bearer_auth(&app.key).send().await.unwrap();
    expect_envelope(res, 405, "method not allowed").await;
}

#[tokio::test]
async fn status_needs_a_known_task_id() {
    let app = spawn_app().await;
    let status_of = |query: &'static str| {
        app.client.get(app.url(&format!("/api/v1/statusTask/seedream-5-0{query}"))).bearer_auth(&app.key).send()
    };
    expect_envelope(status_of("").await.unwrap(), 400, "taskId is required").await;
    expect_envelope(status_of("?taskId=").await.unwrap(), 400, "taskId is required").await;
    expect_envelope(status_of("?taskId=task_doesnotexist").await.unwrap(), 404, "task task_doesnotexist not found")
        .await;
    expect_envelope(status_of("?taskId=../../etc").await.unwrap(), 404, "not found").await;

    // A real task asked for under another model's route is not found there.
    let task = app.submit_ok("seedream-5-0", &seedream_t2i(1)).await;
    let (status, json) = app.status("gpt-image-1", &task).await;
    assert_eq!((status, json["code"].as_u64()), (404, Some(404)), "{json}");
    let (status, json) = app.status("seedream-5-0", &task).await;
    assert_eq!(status, 200);
    assert!(matches!(json["data"]["state"].as_str(), Some("pending" | "processing" | "success")), "{json}");
}

/// `(status, JSON body)` of a request.
async fn answer(req: reqwest::RequestBuilder) -> (u16, Value) {
    let res = req.send().await.unwrap();
    let status = res.status().as_u16();
    assert!(res.headers()[CONTENT_TYPE].to_str().unwrap().starts_with("application/json"));
    (status, res.json().await.unwrap())
}

#[tokio::test]
async fn unknown_routes_and_methods_answer_in_each_dialects_envelope() {
    let app = spawn_app().await;
    let c = &app.client;
    // OpenAI's error object under /v1.
    for (req, status, message) in [
        (c.get(app.url("/v1/nothing-here")), 404, "no such route"),
        (c.get(app.url("/v1/images/generations")).bearer_auth(&app.key), 405, "method not allowed"),
        (c.delete(app.url("/v1/models")).bearer_auth(&app.key), 405, "method not allowed"),
    ] {
        let (got, json) = answer(req).await;
        assert_eq!(got, status, "{json}");
        assert_eq!(json["error"]["message"], message, "{json}");
        assert_eq!(json["error"]["type"], "invalid_request_error", "{json}");
        assert!(json.get("code").is_none(), "not APIXO's envelope: {json}");
    }
    // The unified API's `{code, msg, data}` under its paths.
    for (req, status, message) in [
        (c.get(app.url("/api/v1/images/nothing-here")), 404, "no such route"),
        (c.delete(app.url("/api/v1/images/generations")).bearer_auth(&app.key), 405, "method not allowed"),
        (c.post(app.url("/api/v1/balance")).bearer_auth(&app.key), 405, "method not allowed"),
    ] {
        let (got, json) = answer(req).await;
        assert_eq!(got, status, "{json}");
        assert_eq!((json["code"].as_u64(), json["msg"].as_str()), (Some(status.into()), Some(message)), "{json}");
        assert!(json["data"].is_null() && json.get("message").is_none(), "{json}");
    }
    // APIXO's elsewhere.
    let (got, json) = answer(c.get(app.url("/nothing-here"))).await;
    assert_eq!((got, json["code"].as_u64(), json["message"].as_str()), (404, Some(404), Some("no such route")));
}

#[tokio::test]
async fn oversized_bodies_are_413_in_each_routes_envelope() {
    let app = spawn_app().await;
    let huge = format!("{{\"prompt\":\"{}\"}}", "x".repeat(1024 * 1024 + 10));
    let post = |path: &str| {
        app.client.post(app.url(path)).bearer_auth(&app.key).header(CONTENT_TYPE, "application/json").body(huge.clone())
    };
    let (status, json) = answer(post("/v1/images/generations")).await;
    assert_eq!(status, 413);
    assert_eq!(json["error"]["message"], "the request body is larger than 1 MiB", "{json}");
    let (status, json) = answer(post("/api/v1/images/generations")).await;
    assert_eq!((status, json["code"].as_u64()), (413, Some(413)), "{json}");
    assert_eq!(json["msg"], "the request body is larger than 1 MiB", "{json}");
}
