//! Every validation rule, each broken once: a 400 in the APIXO envelope whose message names the
//! field and the rule, and no task or hold created.

mod common;

use common::*;
use serde_json::{Value, json};

fn seedream(input: Value) -> Value {
    json!({ "input": input })
}

/// A valid `input` with one field replaced (or removed, with `null`), wrapped in a request.
fn with_field(mut input: Value, field: &str, value: Value) -> Value {
    if value.is_null() {
        input.as_object_mut().unwrap().remove(field);
    } else {
        input[field] = value;
    }
    json!({ "input": input })
}

fn seedream_with(field: &str, value: Value) -> Value {
    with_field(json!({"mode": "text-to-image", "prompt": "a fox", "max_images": 1}), field, value)
}

fn gpt_with(field: &str, value: Value) -> Value {
    with_field(json!({"mode": "gpt-image-1", "prompt": "a fox"}), field, value)
}

fn cases() -> Vec<(&'static str, Value, &'static str)> {
    let long_5001 = "x".repeat(5001);
    let long_32001 = "x".repeat(32001);
    let i2i =
        |urls: Value| seedream(json!({"mode": "image-to-image", "prompt": "p", "max_images": 1, "image_urls": urls}));
    vec![
        // Top level.
        ("seedream-5-0", json!([1, 2]), "the request body must be a JSON object"),
        ("seedream-5-0", json!({}), "input is required"),
        ("seedream-5-0", json!({"input": "text"}), "input must be a JSON object"),
        ("seedream-5-0", json!({"request_type": "sync", "input": {}}), "request_type must be one of async, callback"),
        (
            "seedream-5-0",
            json!({"request_type": "callback", "input": {}}),
            "callback_url is required when request_type is callback",
        ),
        (
            "seedream-5-0",
            json!({"request_type": "callback", "callback_url": "ftp://cb.invalid/x", "input": {}}),
            "callback_url must be an absolute http(s) URL",
        ),
        (
            "seedream-5-0",
            json!({"callback_url": "/relative", "input": {}}),
            "callback_url must be an absolute http(s) URL",
        ),
        ("seedream-5-0", json!({"provider": "cheapest", "input": {}}), "provider must be one of auto, value, official"),
        // Seedream 5.0.
        ("seedream-5-0", seedream_with("mode", Value::Null), "input.mode is required"),
        (
            "seedream-5-0",
            seedream_with("mode", json!("inpaint")),
            "input.mode must be one of text-to-image, image-to-image",
        ),
        ("seedream-5-0", seedream_with("prompt", Value::Null), "input.prompt is required"),
        ("seedream-5-0", seedream_with("prompt", json!("")), "input.prompt must be 1 to 5000 characters"),
        ("seedream-5-0", seedream_with("prompt", json!("   ")), "input.prompt must not be blank"),
        ("seedream-5-0", seedream_with("prompt", json!(long_5001)), "input.prompt must be 1 to 5000 characters"),
        ("seedream-5-0", seedream_with("prompt", json!(42)), "input.prompt must be a string"),
        ("seedream-5-0", seedream_with("max_images", Value::Null), "input.max_images is required"),
        ("seedream-5-0", seedream_with("max_images", json!(0)), "input.max_images must be an integer from 1 to 10"),
        ("seedream-5-0", seedream_with("max_images", json!(11)), "input.max_images must be an integer from 1 to 10"),
        ("seedream-5-0", seedream_with("max_images", json!(2.5)), "input.max_images must be an integer from 1 to 10"),
        ("seedream-5-0", seedream_with("max_images", json!("2")), "input.max_images must be an integer from 1 to 10"),
        ("seedream-5-0", seedream_with("resolution", json!("4K")), "input.resolution must be one of 2K, 3K"),
        (
            "seedream-5-0",
            seedream_with("aspect_ratio", json!("5:4")),
            "input.aspect_ratio must be one of 1:1, 4:3, 3:4, 16:9, 9:16, 3:2, 2:3, 21:9",
        ),
        ("seedream-5-0", seedream_with("size", json!("huge")), "input.size must be 2K, 3K or WIDTHxHEIGHT"),
        (
            "seedream-5-0",
            seedream_with("size", json!("1000x700")),
            "input.size must have between 1280x720 and 4096x4096 pixels",
        ),
        (
            "seedream-5-0",
            seedream_with("size", json!("4097x4096")),
            "input.size must have between 1280x720 and 4096x4096 pixels",
        ),
        (
            "seedream-5-0",
            seedream_with("size", json!("8192x400")),
            "input.size must have an aspect ratio between 1:16 and 16:1",
        ),
        (
            "seedream-5-0",
            seedream_with("sequential_image_generation", json!("on")),
            "input.sequential_image_generation must be one of disabled, auto",
        ),
        ("seedream-5-0", seedream_with("web_search", json!("yes")), "input.web_search must be true or false"),
        ("seedream-5-0", seedream_with("output_format", json!("webp")), "input.output_format must be one of jpeg, png"),
        (
            "seedream-5-0",
            seedream_with("prompt_optimize_mode", json!("fast")),
            "input.prompt_optimize_mode must be one of standard",
        ),
        (
            "seedream-5-0",
            seedream_with("image_urls", json!(["https://ref.invalid/a.png"])),
            "input.image_urls is only allowed with input.mode image-to-image",
        ),
        (
            "seedream-5-0",
            seedream(json!({"mode": "image-to-image", "prompt": "p", "max_images": 1})),
            "input.image_urls must hold 1 to 14 URLs (got 0)",
        ),
        ("seedream-5-0", i2i(json!([])), "input.image_urls must hold 1 to 14 URLs (got 0)"),
        (
            "seedream-5-0",
            i2i(json!(vec!["https://ref.invalid/a.png"; 15])),
            "input.image_urls must hold 1 to 14 URLs (got 15)",
        ),
        ("seedream-5-0", i2i(json!(["not a url"])), "input.image_urls[0] must be an absolute http(s) URL"),
        (
            "seedream-5-0",
            i2i(json!(["https://ref.invalid/a.png", "file:///etc/passwd"])),
            "input.image_urls[1] must be an absolute http(s) URL",
        ),
        ("seedream-5-0", i2i(json!([7])), "input.image_urls[0] must be a string"),
        ("seedream-5-0", i2i(json!("https://ref.invalid/a.png")), "input.image_urls must be an array of strings"),
        (
            "seedream-5-0",
            seedream(
                json!({"mode": "image-to-image", "prompt": "p", "max_images": 10, "sequential_image_generation": "auto",
            "image_urls": vec!["https://ref.invalid/a.png"; 6]}),
            ),
            "must not exceed 15 images",
        ),
        // gpt-image-1.
        ("gpt-image-1", gpt_with("mode", Value::Null), "input.mode is required"),
        ("gpt-image-1", gpt_with("mode", json!("text-to-image")), "input.mode must be one of gpt-image-1"),
        ("gpt-image-1", gpt_with("prompt", json!("")), "input.prompt must be 1 to 32000 characters"),
        ("gpt-image-1", gpt_with("prompt", json!(long_32001)), "input.prompt must be 1 to 32000 characters"),
        ("gpt-image-1", gpt_with("aspect_ratio", json!("16:9")), "input.aspect_ratio must be one of 1:1, 3:2, 2:3"),
        ("gpt-image-1", gpt_with("num_images", json!(3)), "input.num_images must be 1, 2 or 4"),
        ("gpt-image-1", gpt_with("num_images", json!(8)), "input.num_images must be 1, 2 or 4"),
        (
            "gpt-image-1",
            gpt_with("image_urls", json!(vec!["https://ref.invalid/a.png"; 17])),
            "input.image_urls must hold 0 to 16 URLs (got 17)",
        ),
        (
            "gpt-image-1",
            gpt_with("image_urls", json!(["javascript:alert(1)"])),
            "input.image_urls[0] must be an absolute http(s) URL",
        ),
    ]
}

#[tokio::test]
async fn each_broken_rule_is_a_400_naming_field_and_rule() {
    let app = spawn_app().await;
    for (model, body, expected) in cases() {
        let (status, json) = app.submit(model, &body).await;
        assert_eq!(status, 400, "{model} {body}: {json}");
        assert_eq!(json["code"], 400);
        assert!(json["data"].is_null());
        let message = json["message"].as_str().unwrap();
        assert!(message.contains(expected), "for {body}\n expected: {expected}\n got: {message}");
    }
    // Nothing was accepted, so nothing was held.
    let account = app.state.accounts.find("default").await.unwrap();
    assert_eq!((account.balance.0, account.held.0), (10_000_000, 0));
}

#[tokio::test]
async fn unknown_fields_are_ignored_and_nulls_mean_absent() {
    let app = spawn_app().await;
    let body = json!({"extra": 1, "callback_url": null, "input": {"mode": "text-to-image", "prompt": "日本の庭",
        "max_images": 1, "aspect_ratio": null, "unknown": [1, 2], "size": "1280*720"}});
    let task = app.submit_ok("seedream-5-0", &body).await;
    let data = app.wait_done("seedream-5-0", &task).await;
    let (_, img) = download(&app.client, &result_urls(&data)[0]).await;
    assert_eq!((img.width(), img.height()), (1280, 720));
}

#[tokio::test]
async fn prompt_length_counts_characters_not_bytes() {
    let app = spawn_app().await;
    // 5000 three-byte characters: 15000 bytes, within the 5000-character limit.
    let body = seedream_with("prompt", json!("日".repeat(5000)));
    let (status, json) = app.submit("seedream-5-0", &body).await;
    assert_eq!(status, 200, "{json}");
}
