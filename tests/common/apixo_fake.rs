//! A fake APIXO upstream on loopback: checks every request against the seeds' wire format,
//! records what it saw, and answers `pending`, `processing` (a set number of times, or until
//! released), then `success` with PNGs it serves itself, or `failed`.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use axum::Json;
use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use easel::config::{ApixoOptions, ChannelConfig, ProviderKind, Tier};
use serde_json::{Value, json};

pub const UPSTREAM_KEY: &str = "up-key";

#[derive(Clone, Debug)]
pub enum Finish {
    Success,
    Failed { code: &'static str, message: &'static str },
}

pub struct FakeState {
    pub model: String,
    /// Answer every submit with this HTTP status and envelope code instead of accepting it.
    pub refuse_submit: Mutex<Option<(u16, &'static str)>>,
    /// `processing` answers after the first (`pending`) poll before finishing.
    pub processing_polls: AtomicUsize,
    /// While set, polls answer `processing` whatever the count.
    pub hold: AtomicBool,
    pub finish: Mutex<Finish>,
    /// Submitted bodies, in order.
    pub submits: Mutex<Vec<Value>>,
    pub polls: AtomicUsize,
    /// Wire-format violations; a test asserts there were none.
    pub violations: Mutex<Vec<String>>,
    /// Task id -> the requested size and image count.
    tasks: Mutex<BTreeMap<String, (u32, u32, u32)>>,
    base: Mutex<String>,
}

#[derive(Clone)]
pub struct FakeApixo {
    /// `http://127.0.0.1:port/api/v1`
    pub base_url: String,
    pub state: Arc<FakeState>,
}

impl FakeApixo {
    pub fn submits(&self) -> usize {
        self.state.submits.lock().unwrap().len()
    }

    pub fn polls(&self) -> usize {
        self.state.polls.load(Ordering::SeqCst)
    }

    pub fn assert_clean(&self) {
        let v = self.state.violations.lock().unwrap();
        assert!(v.is_empty(), "wire-format violations: {v:?}");
    }

    /// A channel of this fake serving `seedream-5-0` under the same upstream id.
    pub fn channel(&self, id: &str, priority: i32) -> ChannelConfig {
        ChannelConfig {
            base_url: Some(self.base_url.clone()),
            api_key: Some(UPSTREAM_KEY.into()),
            models: BTreeMap::from([("seedream-5-0".to_owned(), self.state.model.clone())]),
            priority,
            apixo: Some(ApixoOptions { first_poll_ms: 50, poll_interval_ms: 50 }),
            ..ChannelConfig::new(id, ProviderKind::Apixo, Tier::Official)
        }
    }
}

pub async fn spawn(model: &str, processing_polls: usize) -> FakeApixo {
    let state = Arc::new(FakeState {
        model: model.into(),
        refuse_submit: Mutex::new(None),
        processing_polls: AtomicUsize::new(processing_polls),
        hold: AtomicBool::new(false),
        finish: Mutex::new(Finish::Success),
        submits: Mutex::new(Vec::new()),
        polls: AtomicUsize::new(0),
        violations: Mutex::new(Vec::new()),
        tasks: Mutex::new(BTreeMap::new()),
        base: Mutex::new(String::new()),
    });
    let app = Router::new()
        .route("/api/v1/generateTask/{model}", post(submit))
        .route("/api/v1/statusTask/{model}", get(status))
        .route("/files/{task}/{file}", get(file))
        .with_state(state.clone());
    let addr = super::serve_on_loopback(app).await;
    *state.base.lock().unwrap() = format!("http://{addr}");
    FakeApixo { base_url: format!("http://{addr}/api/v1"), state }
}

fn violation(state: &FakeState, what: String) -> Response {
    state.violations.lock().unwrap().push(what.clone());
    (StatusCode::BAD_REQUEST, Json(json!({"code": 400, "message": what, "data": null}))).into_response()
}

fn check_common(state: &FakeState, model: &str, headers: &HeaderMap) -> Result<(), String> {
    if model != state.model {
        return Err(format!("path names model {model:?}, expected {:?}", state.model));
    }
    let auth = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
    if auth != Some(&format!("Bearer {UPSTREAM_KEY}")) {
        return Err(format!("Authorization was {auth:?}"));
    }
    Ok(())
}

/// Checks a Seedream body per seeds 000/001; returns (width, height, images).
fn check_seedream(body: &Value) -> Result<(u32, u32, u32), String> {
    let obj = body.as_object().ok_or("the body is not an object")?;
    for key in obj.keys() {
        if !["request_type", "callback_url", "provider", "input"].contains(&key.as_str()) {
            return Err(format!("unknown top-level field {key}"));
        }
    }
    if body["request_type"] != "async" {
        return Err(format!("request_type {}", body["request_type"]));
    }
    let input = body["input"].as_object().ok_or("input is not an object")?;
    let allowed = [
        "mode",
        "prompt",
        "max_images",
        "resolution",
        "aspect_ratio",
        "size",
        "sequential_image_generation",
        "web_search",
        "output_format",
        "image_urls",
    ];
    for key in input.keys() {
        if !allowed.contains(&key.as_str()) {
            return Err(format!("unknown input field {key}"));
        }
    }
    let mode = input.get("mode").and_then(Value::as_str).ok_or("input.mode is not a string")?;
    if !["text-to-image", "image-to-image"].contains(&mode) {
        return Err(format!("input.mode {mode}"));
    }
    if input.get("prompt").and_then(Value::as_str).is_none_or(str::is_empty) {
        return Err("input.prompt is not a non-empty string".into());
    }
    let images = input.get("max_images").and_then(Value::as_u64).filter(|n| (1..=10).contains(n));
    let images = images.ok_or("input.max_images is not an integer from 1 to 10")? as u32;
    let size = input.get("size").and_then(Value::as_str).ok_or("input.size is not a string")?;
    let (w, h) = size.split_once('x').ok_or("input.size is not WxH")?;
    let (w, h) = (w.parse::<u32>().map_err(|_| "bad width")?, h.parse::<u32>().map_err(|_| "bad height")?);
    let seq = input.get("sequential_image_generation").and_then(Value::as_str);
    if !matches!(seq, Some("auto" | "disabled")) {
        return Err(format!("sequential_image_generation {seq:?}"));
    }
    if !input.get("web_search").is_some_and(Value::is_boolean) {
        return Err("web_search is not a boolean".into());
    }
    if !matches!(input.get("output_format").and_then(Value::as_str), Some("jpeg" | "png")) {
        return Err("output_format is not jpeg or png".into());
    }
    match input.get("image_urls") {
        None if mode == "text-to-image" => {}
        Some(Value::Array(urls))
            if mode == "image-to-image" && !urls.is_empty() && urls.iter().all(Value::is_string) => {}
        other => return Err(format!("image_urls {other:?} with mode {mode}")),
    }
    Ok((w, h, images))
}

async fn submit(
    State(state): State<Arc<FakeState>>,
    Path(model): Path<String>,
    headers: HeaderMap,
    body: String,
) -> Response {
    if let Err(e) = check_common(&state, &model, &headers) {
        return violation(&state, e);
    }
    if headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()) != Some("application/json") {
        return violation(&state, "Content-Type is not application/json".into());
    }
    let Ok(body) = serde_json::from_str::<Value>(&body) else {
        return violation(&state, "the body is not JSON".into());
    };
    let checked = check_seedream(&body);
    state.submits.lock().unwrap().push(body);
    let (w, h, images) = match checked {
        Ok(v) => v,
        Err(e) => return violation(&state, e),
    };
    if let Some((status, message)) = *state.refuse_submit.lock().unwrap() {
        let status = StatusCode::from_u16(status).unwrap();
        return (status, Json(json!({"code": status.as_u16(), "message": message, "data": null}))).into_response();
    }
    let task_id = {
        let mut tasks = state.tasks.lock().unwrap();
        let id = format!("task_fake_{}", tasks.len() + 1);
        tasks.insert(id.clone(), (w, h, images));
        id
    };
    Json(json!({"code": 200, "message": "success", "data": {"taskId": task_id}})).into_response()
}

async fn status(
    State(state): State<Arc<FakeState>>,
    Path(model): Path<String>,
    Query(query): Query<BTreeMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    if let Err(e) = check_common(&state, &model, &headers) {
        return violation(&state, e);
    }
    let Some(task_id) = query.get("taskId").cloned() else {
        return violation(&state, "no taskId in the query".into());
    };
    let Some((_, _, images)) = state.tasks.lock().unwrap().get(&task_id).copied() else {
        return violation(&state, format!("unknown taskId {task_id}"));
    };
    let n = state.polls.fetch_add(1, Ordering::SeqCst);
    let running = |s: &str| json!({"taskId": task_id, "state": s, "createTime": 1767965610929u64});
    let data = if n == 0 {
        running("pending")
    } else if state.hold.load(Ordering::SeqCst) || n <= state.processing_polls.load(Ordering::SeqCst) {
        running("processing")
    } else {
        match state.finish.lock().unwrap().clone() {
            Finish::Success => {
                let base = state.base.lock().unwrap().clone();
                let urls: Vec<String> = (0..images).map(|i| format!("{base}/files/{task_id}/{i}.png")).collect();
                json!({"taskId": task_id, "state": "success",
                    "resultJson": json!({"resultUrls": urls}).to_string(),
                    "createTime": 1767965610929u64, "completeTime": 1767965652317u64, "costTime": 41388})
            }
            Finish::Failed { code, message } => json!({"taskId": task_id, "state": "failed",
                "failCode": code, "failMsg": message,
                "createTime": 1767965610929u64, "completeTime": 1767965652317u64, "costTime": 41388}),
        }
    };
    Json(json!({"code": 200, "message": "success", "data": data})).into_response()
}

/// A real PNG at the task's requested size.
async fn file(State(state): State<Arc<FakeState>>, Path((task, _file)): Path<(String, String)>) -> Response {
    let Some((w, h, _)) = state.tasks.lock().unwrap().get(&task).copied() else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let png = tokio::task::spawn_blocking(move || {
        let img = image::RgbImage::from_pixel(w, h, image::Rgb([30, 144, 255]));
        let mut out = std::io::Cursor::new(Vec::new());
        img.write_to(&mut out, image::ImageFormat::Png).unwrap();
        out.into_inner()
    })
    .await
    .unwrap();
    // The wrong Content-Type on purpose: Easel must sniff the bytes.
    ([(header::CONTENT_TYPE, "application/octet-stream")], png).into_response()
}
