//! A fake fal queue on loopback (docs/PROVIDERS.md §4): checks every request against fal's wire
//! format (the `Key` auth header, the model input, status/result/cancel on the app's path
//! without the model's subpath), records what it saw, and answers `IN_QUEUE` (a set number of
//! times), `IN_PROGRESS` (once, or until released), then `COMPLETED` with images it serves.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use easel::catalog::ModelEntry;
use easel::config::{ChannelConfig, PollOptions, ProviderKind, Tier};
use serde_json::{Value, json};

pub const UPSTREAM_KEY: &str = "fal-key";
/// The catalog model the fake's channels serve (an operator's own diffusion model).
pub const MODEL: &str = "house-flux";
/// The endpoint it maps to; status, result and cancel live under `fal-ai/flux`.
pub const MODEL_PATH: &str = "fal-ai/flux/dev";
const APP: &str = "fal-ai/flux";

/// `house-flux` at $0.01 an image.
pub fn model_entry() -> ModelEntry {
    ModelEntry { family: Some("diffusion".into()), price_usd: Some(0.01), ..Default::default() }
}

#[derive(Clone, Debug)]
pub enum Finish {
    Success,
    /// The safety checker flagged (blanked) the first `n` images.
    Nsfw(usize),
    /// The result is a 422 `content_policy_violation`.
    PolicyViolation,
}

/// An answer to every submit instead of accepting it: status, `Retry-After`, body.
pub type Refusal = (u16, Option<&'static str>, Value);

struct Request {
    width: u32,
    height: u32,
    images: u32,
    format: image::ImageFormat,
    completed: bool,
}

pub struct FakeState {
    pub refuse_submit: Mutex<Option<Refusal>>,
    /// `IN_QUEUE` answers before the request starts.
    pub queued_polls: AtomicUsize,
    /// While set, a started request stays `IN_PROGRESS`.
    pub hold: AtomicBool,
    pub finish: Mutex<Finish>,
    /// Submitted bodies, in order.
    pub submits: Mutex<Vec<Value>>,
    pub polls: AtomicUsize,
    pub results: AtomicUsize,
    /// Request ids a cancel named.
    pub cancels: Mutex<Vec<String>>,
    /// Wire-format violations; a test asserts there were none.
    pub violations: Mutex<Vec<String>>,
    requests: Mutex<BTreeMap<String, Request>>,
    base: Mutex<String>,
}

#[derive(Clone)]
pub struct FakeFal {
    /// `http://127.0.0.1:port`
    pub base_url: String,
    pub state: Arc<FakeState>,
}

impl FakeFal {
    pub fn submits(&self) -> usize {
        self.state.submits.lock().unwrap().len()
    }

    pub fn polls(&self) -> usize {
        self.state.polls.load(Ordering::SeqCst)
    }

    pub fn cancels(&self) -> Vec<String> {
        self.state.cancels.lock().unwrap().clone()
    }

    pub fn assert_clean(&self) {
        let v = self.state.violations.lock().unwrap();
        assert!(v.is_empty(), "wire-format violations: {v:?}");
    }

    /// A `fal` channel of this fake serving [`MODEL`] as [`MODEL_PATH`], polling every 20 ms.
    pub fn channel(&self, id: &str, priority: i32) -> ChannelConfig {
        ChannelConfig {
            base_url: Some(self.base_url.clone()),
            api_key: Some(UPSTREAM_KEY.into()),
            models: BTreeMap::from([(MODEL.to_owned(), MODEL_PATH.to_owned())]),
            priority,
            polling: Some(PollOptions { first_poll_ms: 20, poll_interval_ms: 20 }),
            ..ChannelConfig::new(id, ProviderKind::Fal, Tier::Official)
        }
    }
}

pub async fn spawn() -> FakeFal {
    let state = Arc::new(FakeState {
        refuse_submit: Mutex::new(None),
        queued_polls: AtomicUsize::new(1),
        hold: AtomicBool::new(false),
        finish: Mutex::new(Finish::Success),
        submits: Mutex::new(Vec::new()),
        polls: AtomicUsize::new(0),
        results: AtomicUsize::new(0),
        cancels: Mutex::new(Vec::new()),
        violations: Mutex::new(Vec::new()),
        requests: Mutex::new(BTreeMap::new()),
        base: Mutex::new(String::new()),
    });
    // One handler for every path, so that a request off fal's layout is recorded, not a 404.
    let app = Router::new().fallback(dispatch).with_state(state.clone());
    let addr = super::serve_on_loopback(app).await;
    *state.base.lock().unwrap() = format!("http://{addr}");
    FakeFal { base_url: format!("http://{addr}"), state }
}

fn violation(state: &FakeState, what: String) -> Response {
    state.violations.lock().unwrap().push(what.clone());
    (StatusCode::BAD_REQUEST, Json(json!({"detail": what}))).into_response()
}

async fn dispatch(
    State(state): State<Arc<FakeState>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: String,
) -> Response {
    let path = uri.path().trim_start_matches('/').to_owned();
    if let Some(file) = path.strip_prefix("files/") {
        return serve_file(&state, file);
    }
    let auth = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
    if auth != Some(&format!("Key {UPSTREAM_KEY}")) {
        return violation(&state, format!("{method} /{path}: Authorization was {auth:?}"));
    }
    if path == MODEL_PATH && method == Method::POST {
        return submit(&state, &headers, &body);
    }
    let Some(rest) = path.strip_prefix(&format!("{APP}/requests/")) else {
        return violation(&state, format!("unexpected {method} /{path}"));
    };
    match (method.clone(), rest.split_once('/')) {
        (Method::GET, Some((id, "status"))) => status(&state, id),
        (Method::GET, None) => result(&state, rest),
        (Method::PUT, Some((id, "cancel"))) => cancel(&state, id),
        _ => violation(&state, format!("unexpected {method} /{path}")),
    }
}

/// Checks a flux/dev input; returns (width, height, images, format).
fn check_input(body: &Value) -> Result<(u32, u32, u32, image::ImageFormat), String> {
    let obj = body.as_object().ok_or("the body is not an object")?;
    let allowed = [
        "prompt",
        "image_size",
        "num_images",
        "output_format",
        "seed",
        "negative_prompt",
        "enable_safety_checker",
        "image_url",
    ];
    if let Some(key) = obj.keys().find(|k| !allowed.contains(&k.as_str())) {
        return Err(format!("unknown field {key}"));
    }
    if obj.get("prompt").and_then(Value::as_str).is_none_or(str::is_empty) {
        return Err("prompt is not a non-empty string".into());
    }
    let side = |name: &str| {
        obj.get("image_size")
            .and_then(|s| s.get(name))
            .and_then(Value::as_u64)
            .filter(|n| (64..=4096).contains(n))
            .map(|n| n as u32)
            .ok_or(format!("image_size.{name} is not an integer from 64 to 4096"))
    };
    let (width, height) = (side("width")?, side("height")?);
    if obj["image_size"].as_object().map(|o| o.len()) != Some(2) {
        return Err("image_size has fields other than width and height".into());
    }
    let images = obj.get("num_images").and_then(Value::as_u64).filter(|n| (1..=4).contains(n));
    let images = images.ok_or("num_images is not an integer from 1 to 4")? as u32;
    let format = match obj.get("output_format").and_then(Value::as_str) {
        Some("jpeg") => image::ImageFormat::Jpeg,
        Some("png") => image::ImageFormat::Png,
        other => return Err(format!("output_format {other:?} is not jpeg or png")),
    };
    if obj.get("enable_safety_checker") != Some(&Value::Bool(true)) {
        return Err("enable_safety_checker is not true".into());
    }
    if obj.get("seed").is_some_and(|s| !s.is_u64()) {
        return Err("seed is not an integer".into());
    }
    if obj.get("negative_prompt").is_some_and(|s| !s.is_string()) {
        return Err("negative_prompt is not a string".into());
    }
    if obj.get("image_url").is_some_and(|u| !u.as_str().is_some_and(|u| u.starts_with("data:image/"))) {
        return Err("image_url is not a data URI of an image".into());
    }
    Ok((width, height, images, format))
}

fn submit(state: &FakeState, headers: &HeaderMap, body: &str) -> Response {
    if headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()) != Some("application/json") {
        return violation(state, "Content-Type is not application/json".into());
    }
    let Ok(body) = serde_json::from_str::<Value>(body) else {
        return violation(state, "the body is not JSON".into());
    };
    let checked = check_input(&body);
    state.submits.lock().unwrap().push(body);
    let (width, height, images, format) = match checked {
        Ok(v) => v,
        Err(e) => return violation(state, e),
    };
    if let Some((status, retry_after, body)) = state.refuse_submit.lock().unwrap().clone() {
        let mut response = (StatusCode::from_u16(status).unwrap(), Json(body)).into_response();
        if let Some(seconds) = retry_after {
            response.headers_mut().insert(header::RETRY_AFTER, seconds.parse().unwrap());
        }
        return response;
    }
    let id = {
        let mut requests = state.requests.lock().unwrap();
        let id = format!("0196-fake-{}", requests.len() + 1);
        requests.insert(id.clone(), Request { width, height, images, format, completed: false });
        id
    };
    let base = state.base.lock().unwrap().clone();
    let at = format!("{base}/{APP}/requests/{id}");
    Json(json!({"status": "IN_QUEUE", "request_id": id, "response_url": at, "status_url": format!("{at}/status"),
        "cancel_url": format!("{at}/cancel"), "queue_position": 0}))
    .into_response()
}

fn status(state: &FakeState, id: &str) -> Response {
    let mut requests = state.requests.lock().unwrap();
    let Some(request) = requests.get_mut(id) else {
        drop(requests);
        return violation(state, format!("status of an unknown request {id}"));
    };
    let n = state.polls.fetch_add(1, Ordering::SeqCst);
    let queued = state.queued_polls.load(Ordering::SeqCst);
    let base = state.base.lock().unwrap().clone();
    let response_url = format!("{base}/{APP}/requests/{id}");
    if n < queued {
        let position = queued - n - 1;
        let answer = json!({"status": "IN_QUEUE", "queue_position": position, "response_url": response_url});
        return (StatusCode::ACCEPTED, Json(answer)).into_response();
    }
    if n == queued || state.hold.load(Ordering::SeqCst) {
        let answer = json!({"status": "IN_PROGRESS", "logs": [], "response_url": response_url});
        return (StatusCode::ACCEPTED, Json(answer)).into_response();
    }
    request.completed = true;
    Json(json!({"status": "COMPLETED", "logs": [], "metrics": {"inference_time": 1.2}, "response_url": response_url}))
        .into_response()
}

fn result(state: &FakeState, id: &str) -> Response {
    let (images, completed) = match state.requests.lock().unwrap().get(id) {
        Some(r) => (r.images as usize, r.completed),
        None => return violation(state, format!("result of an unknown request {id}")),
    };
    if !completed {
        return violation(state, format!("result of {id} fetched before its status read COMPLETED"));
    }
    state.results.fetch_add(1, Ordering::SeqCst);
    let base = state.base.lock().unwrap().clone();
    let flagged = match state.finish.lock().unwrap().clone() {
        Finish::Success => 0,
        Finish::Nsfw(n) => n,
        Finish::PolicyViolation => {
            let detail = json!({"detail": [{"loc": ["body", "prompt"], "msg": "The prompt was flagged by the content checker",
                "type": "content_policy_violation"}]});
            return (StatusCode::UNPROCESSABLE_ENTITY, Json(detail)).into_response();
        }
    };
    let list: Vec<Value> = (0..images)
        .map(|i| json!({"url": format!("{base}/files/{id}/{i}"), "content_type": "image/png", "width": 0, "height": 0}))
        .collect();
    let nsfw: Vec<bool> = (0..images).map(|i| i < flagged).collect();
    Json(json!({"images": list, "has_nsfw_concepts": nsfw, "seed": 7, "prompt": "…", "timings": {"inference": 1.2}}))
        .into_response()
}

fn cancel(state: &FakeState, id: &str) -> Response {
    if !state.requests.lock().unwrap().contains_key(id) {
        return violation(state, format!("cancel of an unknown request {id}"));
    }
    state.cancels.lock().unwrap().push(id.to_owned());
    (StatusCode::ACCEPTED, Json(json!({"status": "CANCELLATION_REQUESTED"}))).into_response()
}

/// A real image at the request's size, in its format (a flagged one would be black; any will do).
fn serve_file(state: &FakeState, file: &str) -> Response {
    let Some((id, _index)) = file.split_once('/') else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let Some((w, h, format)) = state.requests.lock().unwrap().get(id).map(|r| (r.width, r.height, r.format)) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let bytes = super::fakes::encoded(w, h, [200, 120, 30], format);
    ([(header::CONTENT_TYPE, format.to_mime_type())], bytes).into_response()
}
