//! Examples for the OpenAPI document, transcribed from the seeds (`example.com` and the vendors'
//! hosts become `.invalid` ones). `tests/openapi.rs` submits every request example to a server.

use serde_json::{Value, json};

/// Where the examples' result links point: Easel serves results itself, behind signed links.
const RESULT: &str = "https://easel.invalid/files/results/78/task_12345678";

fn apixo(data: Value) -> Value {
    json!({"code": 200, "message": "success", "data": data})
}

fn unified(data: Value) -> Value {
    json!({"code": 200, "msg": "success", "data": data})
}

// Seed 000: Seedream 5.0's request examples.
pub fn seedream_text_to_image() -> Value {
    json!({
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
    })
}

pub fn seedream_image_to_image() -> Value {
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
            "image_urls": ["https://example.invalid/ref1.jpg", "https://example.invalid/ref2.jpg"]
        }
    })
}

pub fn seedream_web_search() -> Value {
    json!({
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
    })
}

// Seed 001: an explicit size.
pub fn seedream_explicit_size() -> Value {
    json!({
        "input": {
            "mode": "text-to-image",
            "prompt": "a minimalist industrial poster",
            "max_images": 1,
            "size": "3072X3072",
            "output_format": "jpeg"
        }
    })
}

// Seed 002: gpt-image-1's request examples.
pub fn gpt_text_to_image() -> Value {
    json!({
        "request_type": "async",
        "input": {
            "mode": "gpt-image-1",
            "prompt": "a cozy cyberpunk cafe with neon lights",
            "aspect_ratio": "3:2",
            "num_images": 2
        }
    })
}

pub fn gpt_reference_guided() -> Value {
    json!({
        "request_type": "async",
        "provider": "official",
        "input": {
            "mode": "gpt-image-1",
            "prompt": "a futuristic cityscape at sunset",
            "aspect_ratio": "3:2",
            "num_images": 4,
            "image_urls": ["https://example.invalid/ref1.jpg", "https://example.invalid/ref2.jpg"]
        }
    })
}

pub fn task_created() -> Value {
    apixo(json!({"taskId": "task_12345678"}))
}

pub fn task_succeeded() -> Value {
    apixo(json!({
        "taskId": "task_12345678",
        "state": "success",
        "resultJson": json!({"resultUrls": [
            format!("{RESULT}-0.png?exp=1769261652&sig=1Xq3dK9"),
            format!("{RESULT}-1.png?exp=1769261652&sig=c8V0fPz"),
        ]})
        .to_string(),
        "createTime": 1767965610929_i64,
        "completeTime": 1767965652317_i64,
        "costTime": 41388
    }))
}

pub fn task_failed() -> Value {
    apixo(json!({
        "taskId": "task_12345678",
        "state": "failed",
        "failCode": "CONTENT_VIOLATION",
        "failMsg": "Content does not meet safety guidelines",
        "createTime": 1767965610929_i64,
        "completeTime": 1767965652317_i64,
        "costTime": 41388
    }))
}

pub fn task_pending() -> Value {
    apixo(json!({"taskId": "task_12345678", "state": "pending", "createTime": 1767965610929_i64}))
}

pub fn insufficient_credits() -> Value {
    json!({"code": 400, "message": "Insufficient credits", "data": null})
}

// Seed 003: the unified API.
pub fn unified_text_to_image() -> Value {
    json!({
        "model": "doubao-seedream-5-0-260128",
        "prompt": "A cherry blossom tree by a tranquil river, impressionist painting style",
        "size": "2K"
    })
}

pub fn unified_image_to_image() -> Value {
    json!({
        "model": "doubao-seedream-5-0-260128",
        "prompt": "Change the season to winter with snow",
        "image_url": "https://example.invalid/landscape.jpg",
        "size": "4K"
    })
}

pub fn unified_created() -> Value {
    unified(json!({"taskId": "task_12345678", "state": "pending"}))
}

pub fn unified_completed() -> Value {
    unified(json!({
        "taskId": "task_12345678",
        "state": "completed",
        "resultUrls": [format!("{RESULT}-0.jpeg?exp=1706419465&sig=1Xq3dK9")],
        "createTime": 1705123450000_i64,
        "completeTime": 1705123465000_i64
    }))
}

pub fn unified_failed() -> Value {
    unified(json!({
        "taskId": "task_12345678",
        "state": "failed",
        "createTime": 1705123450000_i64,
        "completeTime": 1705123465000_i64,
        "failMsg": "Content policy violation"
    }))
}

pub fn unified_insufficient_credits() -> Value {
    json!({"code": 402, "msg": "Insufficient credits", "data": null})
}

// The OpenAI-compatible routes, in the shapes of OpenAI's Images API.
pub fn openai_generation() -> Value {
    json!({"model": "gpt-image-1", "prompt": "a lighthouse in fog", "n": 1, "size": "1024x1024"})
}

pub fn openai_generation_seedream() -> Value {
    json!({"model": "seedream-5-0", "prompt": "a lighthouse in fog", "size": "2K", "response_format": "url"})
}

pub fn openai_images() -> Value {
    json!({
        "created": 1767965652,
        "data": [{"b64_json": "iVBORw0KGgoAAAANSUhEUgAA…"}],
        "background": "opaque",
        "output_format": "png",
        "size": "1024x1024",
        "quality": "auto",
        "usage": {"input_tokens": 0, "input_tokens_details": {"image_tokens": 0, "text_tokens": 0},
                  "output_tokens": 0, "total_tokens": 0}
    })
}

pub fn openai_timeout() -> Value {
    json!({"error": {
        "message": "the image is not ready yet; poll task task_12345678 on /api/v1/statusTask/gpt-image-1",
        "type": "server_error", "param": null, "code": "timeout"
    }})
}
