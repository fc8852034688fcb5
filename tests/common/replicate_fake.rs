//! A fake Replicate API on loopback (docs/PROVIDERS.md §5): checks every request against
//! Replicate's wire format (Bearer auth, the create paths for a model and for a pinned version,
//! `Prefer: wait=N`, the model input), records what it saw, and answers predictions that go
//! `starting`, `processing` (a set number of times, or until released), then end as told.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use easel::catalog::ModelEntry;
use easel::config::{ChannelConfig, PollOptions, ProviderKind, ReplicateOptions, Tier};
use serde_json::{Value, json};

pub const UPSTREAM_KEY: &str = "r8_fake";
/// The catalog model the fake's channels serve (an operator's own FLUX model).
pub const MODEL: &str = "house-schnell";
pub const MODEL_PATH: &str = "black-forest-labs/flux-schnell";
/// A second catalog model, pinned to a version of another model.
pub const PINNED: &str = "house-sdxl";
pub const VERSION: &str = "39ed52f2a78e934b3ba6e2a89f5b1c712de7dfea535525255b1aa35c5565e08b";
pub const PINNED_PATH: &str = "stability-ai/sdxl";

const ASPECT_RATIOS: &[&str] = &["1:1", "16:9", "21:9", "3:2", "2:3", "4:5", "5:4", "3:4", "4:3", "9:16", "9:21"];

/// A diffusion model at $0.01 an image.
pub fn model_entry() -> ModelEntry {
    ModelEntry { family: Some("diffusion".into()), price_usd: Some(0.01), ..Default::default() }
}

#[derive(Clone, Debug)]
pub enum Finish {
    Success,
    /// Failed the way cog-flux fails when every image was flagged.
    Nsfw,
    Failed(&'static str),
}

/// An answer to every create instead of accepting it: status, `Retry-After`, title, detail.
pub type Refusal = (u16, Option<&'static str>, &'static str, &'static str);

/// A create as it arrived.
#[derive(Clone, Debug)]
pub struct Create {
    pub path: String,
    pub prefer: Option<String>,
    pub body: Value,
}

struct Prediction {
    width: u32,
    height: u32,
    images: u32,
    format: &'static str,
    polls: usize,
    canceled: bool,
}

pub struct FakeState {
    pub refuse_create: Mutex<Option<Refusal>>,
    /// `processing` answers after the first (`starting`) poll before the end.
    pub processing_polls: AtomicUsize,
    /// While set, polls answer `processing` whatever the count.
    pub hold: AtomicBool,
    /// A create that may wait (`Prefer: wait`) is answered with the ended prediction.
    pub instant: AtomicBool,
    pub finish: Mutex<Finish>,
    pub creates: Mutex<Vec<Create>>,
    pub polls: AtomicUsize,
    /// Prediction ids a cancel named.
    pub cancels: Mutex<Vec<String>>,
    /// Wire-format violations; a test asserts there were none.
    pub violations: Mutex<Vec<String>>,
    predictions: Mutex<BTreeMap<String, Prediction>>,
    base: Mutex<String>,
}

#[derive(Clone)]
pub struct FakeReplicate {
    /// `http://127.0.0.1:port/v1`
    pub base_url: String,
    pub state: Arc<FakeState>,
}

impl FakeReplicate {
    pub fn creates(&self) -> Vec<Create> {
        self.state.creates.lock().unwrap().clone()
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

    /// A `replicate` channel of this fake serving [`MODEL`] and [`PINNED`], creating with
    /// `Prefer: wait=wait_secs` (none when 0) and polling every 20 ms.
    pub fn channel(&self, id: &str, priority: i32, wait_secs: u64) -> ChannelConfig {
        ChannelConfig {
            base_url: Some(self.base_url.clone()),
            api_key: Some(UPSTREAM_KEY.into()),
            models: BTreeMap::from([
                (MODEL.to_owned(), MODEL_PATH.to_owned()),
                (PINNED.to_owned(), format!("{PINNED_PATH}:{VERSION}")),
            ]),
            priority,
            polling: Some(PollOptions { first_poll_ms: 20, poll_interval_ms: 20 }),
            replicate: Some(ReplicateOptions { wait_secs }),
            ..ChannelConfig::new(id, ProviderKind::Replicate, Tier::Official)
        }
    }
}

pub async fn spawn() -> FakeReplicate {
    let state = Arc::new(FakeState {
        refuse_create: Mutex::new(None),
        processing_polls: AtomicUsize::new(1),
        hold: AtomicBool::new(false),
        instant: AtomicBool::new(false),
        finish: Mutex::new(Finish::Success),
        creates: Mutex::new(Vec::new()),
        polls: AtomicUsize::new(0),
        cancels: Mutex::new(Vec::new()),
        violations: Mutex::new(Vec::new()),
        predictions: Mutex::new(BTreeMap::new()),
        base: Mutex::new(String::new()),
    });
    // One handler for every path, so that a request off Replicate's layout is recorded.
    let app = Router::new().fallback(dispatch).with_state(state.clone());
    let addr = super::serve_on_loopback(app).await;
    *state.base.lock().unwrap() = format!("http://{addr}");
    FakeReplicate { base_url: format!("http://{addr}/v1"), state }
}

fn violation(state: &FakeState, what: String) -> Response {
    state.violations.lock().unwrap().push(what.clone());
    problem(StatusCode::BAD_REQUEST, "Invalid request", &what, None)
}

fn problem(status: StatusCode, title: &str, detail: &str, retry_after: Option<&str>) -> Response {
    let body = json!({"type": "about:blank", "title": title, "detail": detail, "status": status.as_u16()});
    let mut response = (status, [(header::CONTENT_TYPE, "application/problem+json")], body.to_string()).into_response();
    if let Some(seconds) = retry_after {
        response.headers_mut().insert(header::RETRY_AFTER, seconds.parse().unwrap());
    }
    response
}

async fn dispatch(
    State(state): State<Arc<FakeState>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: String,
) -> Response {
    let path = uri.path().to_owned();
    if let Some(file) = path.strip_prefix("/files/") {
        return serve_file(&state, file);
    }
    let auth = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
    if auth != Some(&format!("Bearer {UPSTREAM_KEY}")) {
        return violation(&state, format!("{method} {path}: Authorization was {auth:?}"));
    }
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    match (method.clone(), segments.as_slice()) {
        (Method::POST, ["v1", "models", owner, name, "predictions"]) => {
            let model = format!("{owner}/{name}");
            create(&state, &path, &headers, &body, (model == MODEL_PATH).then_some(()).ok_or(model))
        }
        (Method::POST, ["v1", "predictions"]) => create(&state, &path, &headers, &body, Ok(())),
        (Method::GET, ["v1", "predictions", id]) => poll(&state, id),
        (Method::POST, ["v1", "predictions", id, "cancel"]) => cancel(&state, id),
        _ => violation(&state, format!("unexpected {method} {path}")),
    }
}

/// Checks a create's body; returns (width, height, images, format).
fn check_body(path: &str, body: &Value) -> Result<(u32, u32, u32, &'static str), String> {
    let obj = body.as_object().ok_or("the body is not an object")?;
    let pinned = path == "/v1/predictions";
    let allowed: &[&str] = if pinned { &["version", "input"] } else { &["input"] };
    if let Some(key) = obj.keys().find(|k| !allowed.contains(&k.as_str())) {
        return Err(format!("unknown top-level field {key} on {path}"));
    }
    if pinned && obj.get("version").and_then(Value::as_str) != Some(VERSION) {
        return Err(format!("version {:?}", obj.get("version")));
    }
    let input = obj.get("input").and_then(Value::as_object).ok_or("input is not an object")?;
    let allowed = [
        "prompt",
        "num_outputs",
        "aspect_ratio",
        "width",
        "height",
        "output_format",
        "seed",
        "negative_prompt",
        "image",
    ];
    if let Some(key) = input.keys().find(|k| !allowed.contains(&k.as_str())) {
        return Err(format!("unknown input field {key}"));
    }
    if input.get("prompt").and_then(Value::as_str).is_none_or(str::is_empty) {
        return Err("input.prompt is not a non-empty string".into());
    }
    let images = input.get("num_outputs").and_then(Value::as_u64).filter(|n| (1..=4).contains(n));
    let images = images.ok_or("input.num_outputs is not an integer from 1 to 4")? as u32;
    let side = |name: &str| {
        input.get(name).and_then(Value::as_u64).map(|n| n as u32).ok_or(format!("input.{name} is not an integer"))
    };
    let (width, height) = (side("width")?, side("height")?);
    let reduced = {
        fn gcd(a: u32, b: u32) -> u32 {
            if b == 0 { a } else { gcd(b, a % b) }
        }
        let d = gcd(width, height).max(1);
        format!("{}:{}", width / d, height / d)
    };
    match input.get("aspect_ratio") {
        None if !ASPECT_RATIOS.contains(&reduced.as_str()) => {}
        Some(Value::String(r)) if *r == reduced && ASPECT_RATIOS.contains(&r.as_str()) => {}
        other => return Err(format!("aspect_ratio {other:?} for {width}x{height}")),
    }
    let format = match input.get("output_format").and_then(Value::as_str) {
        Some("webp") => "webp",
        Some("jpg") => "jpg",
        Some("png") => "png",
        other => return Err(format!("output_format {other:?} is not webp, jpg or png")),
    };
    if input.get("seed").is_some_and(|s| !s.is_u64()) {
        return Err("seed is not an integer".into());
    }
    if input.get("negative_prompt").is_some_and(|s| !s.is_string()) {
        return Err("negative_prompt is not a string".into());
    }
    if input.get("image").is_some_and(|u| !u.as_str().is_some_and(|u| u.starts_with("data:image/"))) {
        return Err("image is not a data URI of an image".into());
    }
    Ok((width, height, images, format))
}

fn create(state: &FakeState, path: &str, headers: &HeaderMap, body: &str, model: Result<(), String>) -> Response {
    if let Err(model) = model {
        return violation(state, format!("created a prediction of {model}, expected {MODEL_PATH}"));
    }
    if headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()) != Some("application/json") {
        return violation(state, "Content-Type is not application/json".into());
    }
    let prefer = headers.get("prefer").and_then(|v| v.to_str().ok()).map(str::to_owned);
    let waits = match prefer.as_deref() {
        None => false,
        Some(p) => match p.strip_prefix("wait=").and_then(|n| n.parse::<u64>().ok()) {
            Some(1..=60) => true,
            _ => return violation(state, format!("Prefer: {p}")),
        },
    };
    let Ok(body) = serde_json::from_str::<Value>(body) else {
        return violation(state, "the body is not JSON".into());
    };
    let checked = check_body(path, &body);
    state.creates.lock().unwrap().push(Create { path: path.to_owned(), prefer, body });
    let (width, height, images, format) = match checked {
        Ok(v) => v,
        Err(e) => return violation(state, e),
    };
    if let Some((status, retry_after, title, detail)) = *state.refuse_create.lock().unwrap() {
        return problem(StatusCode::from_u16(status).unwrap(), title, detail, retry_after);
    }
    let id = {
        let mut predictions = state.predictions.lock().unwrap();
        let id = format!("fakepred{}", predictions.len() + 1);
        predictions.insert(id.clone(), Prediction { width, height, images, format, polls: 0, canceled: false });
        id
    };
    let prediction = if waits && state.instant.load(Ordering::SeqCst) {
        ended(state, &id)
    } else {
        prediction_json(state, &id, "starting", Value::Null, Value::Null)
    };
    (StatusCode::CREATED, Json(prediction)).into_response()
}

fn prediction_json(state: &FakeState, id: &str, status: &str, output: Value, error: Value) -> Value {
    let base = state.base.lock().unwrap().clone();
    json!({"id": id, "model": MODEL_PATH, "version": "hidden", "status": status, "output": output, "error": error,
        "logs": "", "source": "api", "data_removed": false, "created_at": "2026-12-02T06:30:00.000Z",
        "urls": {"get": format!("{base}/v1/predictions/{id}"), "cancel": format!("{base}/v1/predictions/{id}/cancel"),
            "web": format!("https://replicate.com/p/{id}")}})
}

/// The prediction at its end, as the fake was told to end it.
fn ended(state: &FakeState, id: &str) -> Value {
    let (images, format) = {
        let predictions = state.predictions.lock().unwrap();
        let p = &predictions[id];
        (p.images, p.format)
    };
    let base = state.base.lock().unwrap().clone();
    match state.finish.lock().unwrap().clone() {
        Finish::Success => {
            let urls: Vec<String> = (0..images).map(|i| format!("{base}/files/{id}/out-{i}.{format}")).collect();
            prediction_json(state, id, "succeeded", json!(urls), Value::Null)
        }
        Finish::Nsfw => prediction_json(
            state,
            id,
            "failed",
            Value::Null,
            json!("All generated images contained NSFW content. Try running it again with a different prompt."),
        ),
        Finish::Failed(message) => prediction_json(state, id, "failed", Value::Null, json!(message)),
    }
}

fn poll(state: &FakeState, id: &str) -> Response {
    let (n, canceled) = {
        let mut predictions = state.predictions.lock().unwrap();
        let Some(p) = predictions.get_mut(id) else {
            drop(predictions);
            return violation(state, format!("poll of an unknown prediction {id}"));
        };
        p.polls += 1;
        (p.polls - 1, p.canceled)
    };
    state.polls.fetch_add(1, Ordering::SeqCst);
    let prediction = if canceled {
        prediction_json(state, id, "canceled", Value::Null, Value::Null)
    } else if n == 0 {
        prediction_json(state, id, "starting", Value::Null, Value::Null)
    } else if state.hold.load(Ordering::SeqCst) || n <= state.processing_polls.load(Ordering::SeqCst) {
        prediction_json(state, id, "processing", Value::Null, Value::Null)
    } else {
        ended(state, id)
    };
    Json(prediction).into_response()
}

fn cancel(state: &FakeState, id: &str) -> Response {
    match state.predictions.lock().unwrap().get_mut(id) {
        Some(p) => p.canceled = true,
        None => return violation(state, format!("cancel of an unknown prediction {id}")),
    }
    state.cancels.lock().unwrap().push(id.to_owned());
    Json(prediction_json(state, id, "canceled", Value::Null, Value::Null)).into_response()
}

/// A real image at the prediction's size. PNG bytes whatever the extension: Easel sniffs.
fn serve_file(state: &FakeState, file: &str) -> Response {
    let Some((id, _name)) = file.split_once('/') else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let Some((w, h)) = state.predictions.lock().unwrap().get(id).map(|p| (p.width, p.height)) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let bytes = super::fakes::encoded(w, h, [40, 90, 200], image::ImageFormat::Png);
    ([(header::CONTENT_TYPE, "application/octet-stream")], bytes).into_response()
}
