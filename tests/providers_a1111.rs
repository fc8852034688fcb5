//! A self-hosted Automatic1111/Forge server behind an `a1111` channel, against a fake that checks
//! the `--api` routes, basic auth and body fields: txt2img and img2img, progress while it
//! works, cancel as an interrupt, a restart, failover when the backend fails and the channel test.

mod common;

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use common::fakes::{b64, encoded};
use common::*;
use easel::catalog::ModelEntry;
use easel::config::{ChannelConfig, PollOptions, ProviderKind, Tier};
use image::ImageFormat;
use serde_json::{Value, json};

const MODEL: &str = "house-sdxl";
const CHECKPOINT: &str = "sd_xl_base_1.0.safetensors";
/// `--api-auth easel:gpu-secret`.
const AUTH: &str = "easel:gpu-secret";
const PRICE: i64 = 20_000;
const TOKEN: &str = "gpu-ops";

#[derive(Default)]
struct Backend {
    /// While set, a generation waits (and progress reads 0.5).
    hold: AtomicBool,
    /// Answer every generation with this status and body.
    fail: Mutex<Option<(u16, Value)>>,
    generations: Mutex<Vec<(String, Value)>>,
    interrupts: AtomicU32,
    /// Generations running now, and the most that ever ran at once.
    active: AtomicU32,
    most_active: AtomicU32,
    violations: Mutex<Vec<String>>,
}

impl Backend {
    fn generations(&self) -> Vec<(String, Value)> {
        self.generations.lock().unwrap().clone()
    }

    fn assert_clean(&self) {
        let v = self.violations.lock().unwrap();
        assert!(v.is_empty(), "wire-format violations: {v:?}");
    }
}

async fn spawn_backend() -> (String, Arc<Backend>) {
    let backend = Arc::new(Backend::default());
    let app = Router::new().fallback(handle).with_state(backend.clone());
    let addr = serve_on_loopback(app).await;
    (format!("http://{addr}"), backend)
}

fn refuse(backend: &Backend, what: String) -> Response {
    backend.violations.lock().unwrap().push(what.clone());
    (StatusCode::UNPROCESSABLE_ENTITY, axum::Json(json!({"detail": what}))).into_response()
}

async fn handle(
    State(backend): State<Arc<Backend>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let expected = format!("Basic {}", BASE64.encode(AUTH));
    if headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()) != Some(expected.as_str()) {
        // What the server says to a request without its --api-auth credentials.
        return (StatusCode::UNAUTHORIZED, axum::Json(json!({"detail": "Incorrect username or password"})))
            .into_response();
    }
    match (method, uri.path()) {
        (Method::GET, "/sdapi/v1/progress") => {
            let progress = if backend.hold.load(Ordering::SeqCst) { 0.5 } else { 0.0 };
            axum::Json(json!({"progress": progress, "eta_relative": 3.2, "state": {"job_count": 1}})).into_response()
        }
        (Method::POST, "/sdapi/v1/interrupt") => {
            backend.interrupts.fetch_add(1, Ordering::SeqCst);
            backend.hold.store(false, Ordering::SeqCst);
            axum::Json(json!({})).into_response()
        }
        (Method::POST, path @ ("/sdapi/v1/txt2img" | "/sdapi/v1/img2img")) => {
            let Ok(request) = serde_json::from_slice::<Value>(&body) else {
                return refuse(&backend, format!("{path}: the body is not JSON"));
            };
            if let Some(problem) = check(path, &request) {
                return refuse(&backend, problem);
            }
            backend.generations.lock().unwrap().push((path.to_owned(), request.clone()));
            if let Some((status, body)) = backend.fail.lock().unwrap().clone() {
                return (StatusCode::from_u16(status).unwrap(), axum::Json(body)).into_response();
            }
            let now = backend.active.fetch_add(1, Ordering::SeqCst) + 1;
            backend.most_active.fetch_max(now, Ordering::SeqCst);
            while backend.hold.load(Ordering::SeqCst) {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            backend.active.fetch_sub(1, Ordering::SeqCst);
            let (w, h) = (request["width"].as_u64().unwrap() as u32, request["height"].as_u64().unwrap() as u32);
            let count = request["batch_size"].as_u64().unwrap();
            let mut images: Vec<String> =
                (0..count).map(|i| b64(&encoded(w, h, [40 * i as u8, 90, 160], ImageFormat::Png))).collect();
            if count > 1 && request["do_not_save_grid"] != true {
                // The grid A1111 puts first with a batch, unless told not to make one.
                images.insert(0, b64(&encoded(w * 2, h, [0, 0, 0], ImageFormat::Png)));
            }
            // An extension's extra output (a ControlNet map) comes after the batch.
            images.push(b64(&encoded(64, 64, [255, 255, 255], ImageFormat::Png)));
            axum::Json(json!({"images": images, "parameters": request, "info": "{}"})).into_response()
        }
        (method, path) => refuse(&backend, format!("unexpected {method} {path}")),
    }
}

/// The A1111 API's `StableDiffusionProcessingTxt2Img` / `…Img2Img` fields Easel may send.
fn check(path: &str, body: &Value) -> Option<String> {
    let known = [
        "prompt",
        "negative_prompt",
        "width",
        "height",
        "batch_size",
        "n_iter",
        "seed",
        "send_images",
        "save_images",
        "do_not_save_grid",
        "override_settings",
        "init_images",
        "denoising_strength",
    ];
    let object = body.as_object()?;
    if let Some(k) = object.keys().find(|k| !known.contains(&k.as_str())) {
        return Some(format!("{path}: unknown field {k}"));
    }
    if !body["prompt"].is_string() || !body["negative_prompt"].is_string() {
        return Some(format!("{path}: prompt and negative_prompt must be strings"));
    }
    for side in ["width", "height"] {
        if !body[side].as_u64().is_some_and(|n| n % 8 == 0 && n >= 64) {
            return Some(format!("{path}: {side} must be a multiple of 8"));
        }
    }
    if !body["seed"].is_i64() || body["batch_size"].as_u64().is_none_or(|n| n < 1) {
        return Some(format!("{path}: seed and batch_size must be integers"));
    }
    let images = body["init_images"].as_array();
    match (path, images) {
        ("/sdapi/v1/img2img", Some(list)) if list.len() == 1 => {
            let bytes = list[0].as_str().and_then(|s| BASE64.decode(s).ok());
            if bytes.is_none_or(|b| image::guess_format(&b).is_err()) {
                return Some("init_images[0] must be an image in base64".into());
            }
        }
        ("/sdapi/v1/txt2img", None) => {}
        _ => return Some(format!("{path}: init_images {images:?}")),
    }
    None
}

fn a1111_channel(id: &str, base_url: &str, priority: i32) -> ChannelConfig {
    ChannelConfig {
        base_url: Some(base_url.into()),
        api_key: Some(AUTH.into()),
        models: [(MODEL.to_owned(), CHECKPOINT.to_owned())].into(),
        priority,
        max_concurrency: Some(1),
        polling: Some(PollOptions { first_poll_ms: 20, poll_interval_ms: 20 }),
        ..ChannelConfig::new(id, ProviderKind::A1111, Tier::Official)
    }
}

fn adjust(c: &mut easel::Config, channels: Vec<ChannelConfig>) {
    c.server.allow_private_network = true;
    c.admin_token = Some(TOKEN.into());
    let entry = ModelEntry { family: Some("diffusion".into()), price_usd: Some(0.02), ..Default::default() };
    c.models.insert(MODEL.into(), entry);
    c.channels = channels;
}

fn body(images: u32) -> Value {
    json!({"input": {"prompt": "a lighthouse", "negative_prompt": "blurry", "size": "1216x832", "num_images": images,
        "seed": 42}})
}

#[tokio::test]
async fn txt2img_reports_progress_and_delivers_the_batch_alone() {
    let (base, backend) = spawn_backend().await;
    backend.hold.store(true, Ordering::SeqCst);
    let app = spawn_app_with(|c| adjust(c, vec![a1111_channel("gpu-1", &base, 0)])).await;
    let before = balance(&app).await;

    let task = app.submit_ok(MODEL, &body(2)).await;
    let view = app.wait_for_percent(&task, 50).await;
    assert_eq!(view["state"], "processing");
    backend.hold.store(false, Ordering::SeqCst);
    let data = app.wait_done(MODEL, &task).await;
    assert_eq!(data["state"], "success", "{data}");
    assert_hosted_results(&app, &data, 2, ImageFormat::Png, (1216, 832)).await;

    backend.assert_clean();
    let generations = backend.generations();
    assert_eq!(generations.len(), 1);
    let (path, sent) = &generations[0];
    assert_eq!(path, "/sdapi/v1/txt2img");
    assert_eq!(
        sent["override_settings"]["sd_model_checkpoint"], CHECKPOINT,
        "the channel's mapping names the checkpoint"
    );
    assert_eq!((sent["seed"].clone(), sent["batch_size"].clone()), (json!(42), json!(2)));
    assert_eq!(sent["negative_prompt"], "blurry");
    assert_eq!(sent["do_not_save_grid"], true);
    assert_eq!(balance(&app).await, (before.0 - 2 * PRICE, 0));
    assert_ledger_invariant(&app.state, &app.account_id).await;
}

#[tokio::test]
async fn a_reference_goes_to_img2img() {
    let (base, backend) = spawn_backend().await;
    let app = spawn_app_with(|c| adjust(c, vec![a1111_channel("gpu-1", &base, 0)])).await;
    let refs = spawn_reference_server().await;
    let mut request = body(1);
    request["input"]["image_urls"] = json!([format!("http://{refs}/blue.jpg")]);
    let task = app.submit_ok(MODEL, &request).await;
    let data = app.wait_done(MODEL, &task).await;
    assert_eq!(data["state"], "success", "{data}");
    backend.assert_clean();
    assert_eq!(backend.generations()[0].0, "/sdapi/v1/img2img");
}

#[tokio::test]
async fn cancelling_a_running_task_interrupts_the_backend() {
    let (base, backend) = spawn_backend().await;
    backend.hold.store(true, Ordering::SeqCst);
    let app = spawn_app_with(|c| adjust(c, vec![a1111_channel("gpu-1", &base, 0)])).await;
    let before = balance(&app).await;
    let task = app.submit_ok(MODEL, &body(1)).await;
    wait_until(Duration::from_secs(30), || async { (!backend.generations().is_empty()).then_some(()) }).await;

    let (status, answer) = app.post_json(&format!("/api/v1/tasks/{task}/cancel"), &[], &json!({})).await;
    assert_eq!(status, 200, "{answer}");
    wait_until(Duration::from_secs(30), || async { (backend.interrupts.load(Ordering::SeqCst) == 1).then_some(()) })
        .await;
    let view = app.wait_for_state(&task, "cancelled").await;
    assert_eq!(view["chargedUsd"], 0.0, "{view}");
    assert_eq!(balance(&app).await, before);
    backend.assert_clean();
}

#[tokio::test]
async fn after_a_restart_the_task_runs_again_and_is_charged_once() {
    let (base, backend) = spawn_backend().await;
    backend.hold.store(true, Ordering::SeqCst);
    let channels = vec![a1111_channel("gpu-1", &base, 0)];
    let app = spawn_app_with(|c| adjust(c, channels.clone())).await;
    let before = balance(&app).await;
    let task = app.submit_ok(MODEL, &body(1)).await;
    wait_until(Duration::from_secs(30), || async { (!backend.generations().is_empty()).then_some(()) }).await;

    let app = app.restart(|c| adjust(c, channels.clone())).await;
    backend.hold.store(false, Ordering::SeqCst);
    let data = app.wait_done(MODEL, &task).await;
    assert_eq!(data["state"], "success", "{data}");
    // The server has no job ids: the lost run cannot be followed, so the task ran again.
    assert_eq!(backend.generations().len(), 2);
    assert_eq!(balance(&app).await, (before.0 - PRICE, 0), "charged once");
    assert_ledger_invariant(&app.state, &app.account_id).await;
}

#[tokio::test]
async fn a_failing_backend_fails_over_but_a_refused_request_does_not() {
    let (down, broken) = spawn_backend().await;
    *broken.fail.lock().unwrap() =
        Some((500, json!({"error": "OutOfMemoryError", "detail": "", "body": "", "errors": "CUDA out of memory"})));
    let (up, healthy) = spawn_backend().await;
    let channels = vec![a1111_channel("gpu-1", &down, 10), a1111_channel("gpu-2", &up, 0)];
    let app = spawn_app_with(|c| adjust(c, channels)).await;
    let task = app.submit_ok(MODEL, &body(1)).await;
    let data = app.wait_done(MODEL, &task).await;
    assert_eq!(data["state"], "success", "{data}");
    assert_eq!((broken.generations().len(), healthy.generations().len()), (1, 1));

    let (strict, refusing) = spawn_backend().await;
    *refusing.fail.lock().unwrap() = Some((422, json!({"detail": [{"loc": ["body", "width"], "msg": "bad width"}]})));
    let (spare, idle) = spawn_backend().await;
    let channels = vec![a1111_channel("gpu-1", &strict, 10), a1111_channel("gpu-2", &spare, 0)];
    let app = spawn_app_with(|c| adjust(c, channels)).await;
    let task = app.submit_ok(MODEL, &body(1)).await;
    let data = app.wait_done(MODEL, &task).await;
    assert_eq!(data["failCode"], "GENERATION_FAILED", "{data}");
    assert!(data["failMsg"].as_str().unwrap().contains("bad width"), "{data}");
    assert!(idle.generations().is_empty(), "a refused request is not tried elsewhere");
}

#[tokio::test]
async fn the_channel_test_generates_one_small_image() {
    let (base, backend) = spawn_backend().await;
    let app = spawn_app_with(|c| adjust(c, vec![a1111_channel("gpu-1", &base, 0)])).await;
    let before = balance(&app).await;
    let test = test_channel(&app, TOKEN, "gpu-1").await;
    assert_eq!((test["ok"].as_bool(), test["model"].as_str()), (Some(true), Some(MODEL)), "{test}");
    let sent = &backend.generations()[0].1;
    assert_eq!(
        (sent["width"].clone(), sent["height"].clone(), sent["batch_size"].clone()),
        (json!(256), json!(256), json!(1))
    );
    assert_eq!(balance(&app).await, before);
}

#[tokio::test]
async fn a_busy_backend_queues_its_tasks_in_order_without_holding_up_other_models() {
    let (base, backend) = spawn_backend().await;
    backend.hold.store(true, Ordering::SeqCst);
    let mut cpu = ChannelConfig::new("cpu", ProviderKind::Local, Tier::Official);
    cpu.models = [("gpt-image-1".to_owned(), "gpt-image-1".to_owned())].into();
    let app = spawn_app_with(|c| adjust(c, vec![a1111_channel("gpu-1", &base, 0), cpu])).await;
    let before = balance(&app).await;
    let prompt = |n: usize| {
        let mut request = body(1);
        request["input"]["prompt"] = json!(format!("lighthouse {n}"));
        request
    };

    let switch = |on: bool| {
        let request = app.client.put(app.url("/admin/v1/channels/cpu")).bearer_auth(TOKEN);
        async move { assert_eq!(request.json(&json!({"enabled": on})).send().await.unwrap().status(), 200) }
    };
    // A task of another model, waiting ahead of them all for its own channel.
    switch(false).await;
    let other = app.submit_ok("gpt-image-1", &gpt_t2i(1)).await;
    let running = app.submit_ok(MODEL, &prompt(0)).await;
    wait_until(Duration::from_secs(30), || async { (!backend.generations().is_empty()).then_some(()) }).await;
    let waiting = [app.submit_ok(MODEL, &prompt(1)).await, app.submit_ok(MODEL, &prompt(2)).await];
    for (place, task) in waiting.iter().enumerate() {
        let view = app.task_view(task).await;
        assert_eq!(view["state"], "pending", "max_concurrency 1 holds it back: {view}");
        assert_eq!(view["progress"]["queuePosition"], place + 1, "its place in the GPU's queue alone: {view}");
    }
    // Nor does that task wait for the GPU once its own channel is back.
    switch(true).await;
    assert_eq!(app.wait_done("gpt-image-1", &other).await["state"], "success");
    assert_eq!(app.task_view(&waiting[1]).await["state"], "pending");
    assert_eq!(app.task_view(&running).await["state"], "processing");
    assert_eq!(backend.generations().len(), 1, "the backend got one job at a time");

    backend.hold.store(false, Ordering::SeqCst);
    for task in std::iter::once(&running).chain(&waiting) {
        let data = app.wait_done(MODEL, task).await;
        assert_eq!(data["state"], "success", "{data}");
    }
    let prompts: Vec<Value> = backend.generations().iter().map(|(_, sent)| sent["prompt"].clone()).collect();
    assert_eq!(prompts, ["lighthouse 0", "lighthouse 1", "lighthouse 2"], "in the order they came");
    assert_eq!(backend.most_active.load(Ordering::SeqCst), 1);
    backend.assert_clean();
    assert_eq!(balance(&app).await.1, 0, "nothing left held");
    assert!(balance(&app).await.0 < before.0 - 3 * PRICE, "three GPU images and one other charged");
    assert_ledger_invariant(&app.state, &app.account_id).await;
}

#[tokio::test]
async fn a_backend_that_is_down_fails_over_to_the_next() {
    // A port nothing listens on: the connection is refused.
    let gone = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let (up, healthy) = spawn_backend().await;
    let channels = vec![a1111_channel("gpu-1", &format!("http://{gone}"), 10), a1111_channel("gpu-2", &up, 0)];
    let app = spawn_app_with(|c| adjust(c, channels)).await;
    let task = app.submit_ok(MODEL, &body(1)).await;
    let data = app.wait_done(MODEL, &task).await;
    assert_eq!(data["state"], "success", "{data}");
    assert_eq!(healthy.generations().len(), 1);
    let view = app.task_view(&task).await;
    let tried: Vec<&str> = view["channelAttempts"]
        .as_array()
        .map(|l| l.iter().filter_map(|a| a["channel"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(tried, ["gpu-1", "gpu-2"], "{view}");
}
