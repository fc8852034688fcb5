//! A self-hosted ComfyUI behind a `comfyui` channel, against a fake server that checks the
//! routes ComfyUI's own frontend uses (`/prompt`, `/history/{id}`, `/queue`, `/interrupt`,
//! `/upload/image`, `/view`) and its `/ws` socket: the workflow filled by the channel's
//! mapping, a reference uploaded, progress and the end told on the socket (or found by polling
//! without one), node and execution errors, resume after a restart, and cancel of a queued or a
//! running prompt.

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Query, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use common::fakes::encoded;
use common::*;
use easel::catalog::ModelEntry;
use easel::config::{ChannelConfig, ComfyOptions, PollOptions, ProviderKind, Tier};
use image::ImageFormat;
use serde_json::{Value, json};

const MODEL: &str = "house-sdxl";
const PROXY_KEY: &str = "comfy-proxy-key";
const TOKEN: &str = "comfy-ops";

/// An SDXL text-to-image graph in ComfyUI's API format (as "Save (API)" writes it).
fn sdxl_graph() -> Value {
    json!({
        "3": {"class_type": "KSampler", "inputs": {"seed": 1, "steps": 20, "cfg": 7.0, "sampler_name": "euler",
            "scheduler": "normal", "denoise": 1.0, "model": ["4", 0], "positive": ["6", 0], "negative": ["7", 0],
            "latent_image": ["5", 0]}},
        "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "sd_xl_base_1.0.safetensors"}},
        "5": {"class_type": "EmptyLatentImage", "inputs": {"width": 1024, "height": 1024, "batch_size": 1}},
        "6": {"class_type": "CLIPTextEncode", "inputs": {"text": "", "clip": ["4", 1]}},
        "7": {"class_type": "CLIPTextEncode", "inputs": {"text": "", "clip": ["4", 1]}},
        "8": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["4", 2]}},
        "9": {"class_type": "SaveImage", "inputs": {"filename_prefix": "easel", "images": ["8", 0]}},
        "10": {"class_type": "LoadImage", "inputs": {"image": "example.png"}},
    })
}

#[derive(Default)]
struct Comfy {
    /// While set, a queued prompt stays pending (none runs).
    stall: AtomicBool,
    /// While set, the prompt runs and does not finish.
    hold: AtomicBool,
    /// Fail the prompts' execution (an execution_error in their history).
    crash: AtomicBool,
    prompts: Mutex<Vec<Value>>,
    /// prompt id -> (graph, finished)
    queue: Mutex<BTreeMap<String, Value>>,
    uploads: Mutex<Vec<String>>,
    deletes: Mutex<Vec<String>>,
    interrupts: AtomicU32,
    /// Refuse `/ws` (a proxy that passes no websockets).
    no_socket: AtomicBool,
    /// The client id of every socket opened.
    sockets: Mutex<Vec<String>>,
    /// prompt id -> the client id it was queued with
    clients: Mutex<BTreeMap<String, String>>,
    violations: Mutex<Vec<String>>,
}

impl Comfy {
    fn assert_clean(&self) {
        let v = self.violations.lock().unwrap();
        assert!(v.is_empty(), "wire-format violations: {v:?}");
    }

    fn prompts(&self) -> Vec<Value> {
        self.prompts.lock().unwrap().clone()
    }
}

async fn spawn_comfy() -> (String, Arc<Comfy>) {
    let comfy = Arc::new(Comfy::default());
    let app = Router::new().route("/ws", axum::routing::get(open_socket)).fallback(handle).with_state(comfy.clone());
    let addr = serve_on_loopback(app).await;
    (format!("http://{addr}"), comfy)
}

/// What the proxy in front answers a request without its key.
fn proxy_refusal(headers: &HeaderMap) -> Option<Response> {
    let auth = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
    let refused = auth != Some(format!("Bearer {PROXY_KEY}").as_str());
    refused.then(|| (StatusCode::UNAUTHORIZED, "the proxy wants its key").into_response())
}

fn refuse(comfy: &Comfy, what: String) -> Response {
    comfy.violations.lock().unwrap().push(what.clone());
    (StatusCode::BAD_REQUEST, axum::Json(json!({"error": {"type": "bad_request", "message": what}}))).into_response()
}

async fn handle(
    State(comfy): State<Arc<Comfy>>,
    method: Method,
    uri: Uri,
    Query(query): Query<BTreeMap<String, String>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Some(refusal) = proxy_refusal(&headers) {
        return refusal;
    }
    let path = uri.path().to_owned();
    match (method, path.as_str()) {
        (Method::POST, "/prompt") => {
            let Ok(request) = serde_json::from_slice::<Value>(&body) else { return refuse(&comfy, "not JSON".into()) };
            if request["client_id"].as_str().is_none_or(|c| c.is_empty()) {
                return refuse(&comfy, "client_id must be a string".into());
            }
            let graph = request["prompt"].clone();
            if !graph.as_object().is_some_and(|g| g.values().all(|n| n["class_type"].is_string())) {
                return refuse(&comfy, "prompt must be an API-format graph".into());
            }
            comfy.prompts.lock().unwrap().push(graph.clone());
            if graph["6"]["inputs"]["text"] == "bad node" {
                let errors = json!({"6": {"errors": [{"type": "value_not_valid", "message": "Failed to convert an input value",
                    "details": "text: embedding:missing"}], "dependent_outputs": ["9"], "class_type": "CLIPTextEncode"}});
                return (
                    StatusCode::BAD_REQUEST,
                    axum::Json(json!({"error": {"type": "prompt_outputs_failed_validation",
                        "message": "Prompt outputs failed validation", "details": ""}, "node_errors": errors})),
                )
                    .into_response();
            }
            let id = format!("p-{}", comfy.prompts.lock().unwrap().len());
            comfy.queue.lock().unwrap().insert(id.clone(), graph);
            comfy.clients.lock().unwrap().insert(id.clone(), request["client_id"].as_str().unwrap().to_owned());
            let number = comfy.prompts.lock().unwrap().len();
            axum::Json(json!({"prompt_id": id, "number": number, "node_errors": {}})).into_response()
        }
        (Method::GET, "/queue") => {
            let queue = comfy.queue.lock().unwrap();
            let entries: Vec<Value> = queue.keys().enumerate().map(|(i, id)| json!([i, id, {}, {}, ["9"]])).collect();
            if comfy.stall.load(Ordering::SeqCst) {
                axum::Json(json!({"queue_running": [], "queue_pending": entries})).into_response()
            } else {
                axum::Json(json!({"queue_running": entries, "queue_pending": []})).into_response()
            }
        }
        (Method::POST, "/queue") => {
            let request: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
            let Some(ids) = request["delete"].as_array() else {
                return refuse(&comfy, format!("POST /queue {request}"));
            };
            for id in ids.iter().filter_map(Value::as_str) {
                comfy.deletes.lock().unwrap().push(id.to_owned());
                comfy.queue.lock().unwrap().remove(id);
            }
            StatusCode::OK.into_response()
        }
        (Method::POST, "/interrupt") => {
            comfy.interrupts.fetch_add(1, Ordering::SeqCst);
            comfy.hold.store(false, Ordering::SeqCst);
            comfy.queue.lock().unwrap().clear();
            StatusCode::OK.into_response()
        }
        (Method::POST, "/upload/image") => {
            let boundary = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).and_then(|ct| {
                ct.strip_prefix("multipart/form-data; boundary=").map(|b| b.trim_matches('"').to_owned())
            });
            let Some(boundary) = boundary else { return refuse(&comfy, "upload is not multipart".into()) };
            let text = String::from_utf8_lossy(&body);
            if !text.contains(&format!("--{boundary}")) || !text.contains("name=\"image\"; filename=\"") {
                return refuse(&comfy, "upload has no image part".into());
            }
            comfy.uploads.lock().unwrap().push("ref.png".into());
            axum::Json(json!({"name": "ref.png", "subfolder": "easel", "type": "input"})).into_response()
        }
        (Method::GET, p) if p.starts_with("/history/") => {
            let id = p.trim_start_matches("/history/");
            let running = !comfy.stall.load(Ordering::SeqCst) && !comfy.hold.load(Ordering::SeqCst);
            let queue = comfy.queue.lock().unwrap();
            let Some(graph) = queue.get(id).filter(|_| running) else { return axum::Json(json!({})).into_response() };
            if comfy.crash.load(Ordering::SeqCst) {
                return axum::Json(json!({id: {"outputs": {}, "status": {"status_str": "error", "completed": false,
                    "messages": [["execution_error", {"prompt_id": id, "node_id": "3", "node_type": "KSampler",
                        "exception_type": "torch.OutOfMemoryError", "exception_message": "CUDA out of memory"}]]}}}))
                .into_response();
            }
            let count = graph["5"]["inputs"]["batch_size"].as_u64().unwrap_or(1);
            let images: Vec<Value> = (0..count)
                .map(|i| json!({"filename": format!("easel_{id}_{i}.png"), "subfolder": "", "type": "output"}))
                .chain([json!({"filename": "preview.png", "subfolder": "", "type": "temp"})])
                .collect();
            axum::Json(json!({id: {"outputs": {"9": {"images": images}}, "status": {"status_str": "success", "completed": true}}}))
                .into_response()
        }
        (Method::GET, "/view") => {
            let ok = query.get("type").map(String::as_str) == Some("output") && query.contains_key("subfolder");
            let Some(name) = query.get("filename").filter(|_| ok) else {
                return refuse(&comfy, format!("/view {query:?}"));
            };
            let id =
                name.trim_start_matches("easel_").rsplit_once('_').map(|(id, _)| id.to_owned()).unwrap_or_default();
            let queue = comfy.queue.lock().unwrap();
            let Some(graph) = queue.get(&id) else { return StatusCode::NOT_FOUND.into_response() };
            let (w, h) = (
                graph["5"]["inputs"]["width"].as_u64().unwrap() as u32,
                graph["5"]["inputs"]["height"].as_u64().unwrap() as u32,
            );
            ([(header::CONTENT_TYPE, "image/png")], encoded(w, h, [20, 160, 90], ImageFormat::Png)).into_response()
        }
        (method, path) => refuse(&comfy, format!("unexpected {method} {path}")),
    }
}

/// The socket: refused without the proxy's key; then messages of its client's prompts as the
/// real server sends them, with a status on opening and a binary preview frame while running.
async fn open_socket(
    State(comfy): State<Arc<Comfy>>,
    Query(query): Query<BTreeMap<String, String>>,
    headers: HeaderMap,
    upgrade: WebSocketUpgrade,
) -> Response {
    if let Some(refusal) = proxy_refusal(&headers) {
        return refusal;
    }
    let Some(client) = query.get("clientId").cloned().filter(|_| !comfy.no_socket.load(Ordering::SeqCst)) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    comfy.sockets.lock().unwrap().push(client.clone());
    upgrade.on_upgrade(move |socket| feed(comfy, client, socket))
}

async fn feed(comfy: Arc<Comfy>, client: String, mut socket: WebSocket) {
    let status = json!({"type": "status", "data": {"status": {"exec_info": {"queue_remaining": 0}}, "sid": client}});
    let mut told: BTreeMap<String, &str> = BTreeMap::new();
    let mut messages = vec![Message::Text(status.to_string().into())];
    loop {
        for message in messages.drain(..) {
            if socket.send(message).await.is_err() {
                return;
            }
        }
        let ids: Vec<String> = {
            let clients = comfy.clients.lock().unwrap();
            let queue = comfy.queue.lock().unwrap();
            queue.keys().filter(|id| clients.get(*id) == Some(&client)).cloned().collect()
        };
        for id in ids {
            let now = match (comfy.stall.load(Ordering::SeqCst), comfy.hold.load(Ordering::SeqCst)) {
                (true, _) => continue,
                (false, true) => "running",
                (false, false) => "ended",
            };
            if told.get(&id) == Some(&now) {
                continue;
            }
            told.insert(id.clone(), now);
            if now == "running" {
                messages.push(Message::Text(
                    json!({"type": "progress", "data": {"value": 6, "max": 20, "prompt_id": id, "node": "3"}})
                        .to_string()
                        .into(),
                ));
                messages.push(Message::Binary(vec![0, 0, 0, 1, 0xff, 0xd8].into()));
            } else if comfy.crash.load(Ordering::SeqCst) {
                let error = json!({"type": "execution_error", "data": {"prompt_id": id, "node_id": "3"}});
                messages.push(Message::Text(error.to_string().into()));
            } else {
                let end = json!({"type": "executing", "data": {"node": null, "display_node": null, "prompt_id": id}});
                messages.push(Message::Text(end.to_string().into()));
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn comfy_channel(id: &str, base_url: &str, workflow: &std::path::Path) -> ChannelConfig {
    let inputs = [
        ("prompt", "6.text"),
        ("negative_prompt", "7.text"),
        ("width", "5.width"),
        ("height", "5.height"),
        ("batch_size", "5.batch_size"),
        ("seed", "3.seed"),
        ("image", "10.image"),
    ];
    ChannelConfig {
        base_url: Some(base_url.into()),
        api_key: Some(PROXY_KEY.into()),
        models: [(MODEL.to_owned(), "sdxl".to_owned())].into(),
        max_concurrency: Some(1),
        polling: Some(PollOptions { first_poll_ms: 20, poll_interval_ms: 20 }),
        comfyui: Some(ComfyOptions {
            workflow: workflow.to_owned(),
            inputs: inputs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            auth_header: None,
        }),
        ..ChannelConfig::new(id, ProviderKind::Comfyui, Tier::Official)
    }
}

struct Setup {
    base: String,
    comfy: Arc<Comfy>,
    workflow: tempfile::NamedTempFile,
}

async fn setup() -> Setup {
    let (base, comfy) = spawn_comfy().await;
    let workflow = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(workflow.path(), sdxl_graph().to_string()).unwrap();
    Setup { base, comfy, workflow }
}

fn adjust(c: &mut easel::Config, channels: Vec<ChannelConfig>) {
    c.server.allow_private_network = true;
    c.admin_token = Some(TOKEN.into());
    let entry = ModelEntry { family: Some("diffusion".into()), price_usd: Some(0.01), ..Default::default() };
    c.models.insert(MODEL.into(), entry);
    c.channels = channels;
}

fn body(images: u32, size: &str) -> Value {
    json!({"input": {"prompt": "a red barn", "negative_prompt": "people", "size": size, "num_images": images, "seed": 9}})
}

#[tokio::test]
async fn the_workflow_is_filled_by_the_mapping_and_its_outputs_delivered() {
    let s = setup().await;
    let app = spawn_app_with(|c| adjust(c, vec![comfy_channel("gpu-1", &s.base, s.workflow.path())])).await;
    let refs = spawn_reference_server().await;
    let before = balance(&app).await;
    let mut request = body(2, "832x1216");
    request["input"]["image_urls"] = json!([format!("http://{refs}/red.png")]);
    let task = app.submit_ok(MODEL, &request).await;
    let data = app.wait_done(MODEL, &task).await;
    assert_eq!(data["state"], "success", "{data}");
    assert_hosted_results(&app, &data, 2, ImageFormat::Png, (832, 1216)).await;

    s.comfy.assert_clean();
    let graph = &s.comfy.prompts()[0];
    assert_eq!(graph["6"]["inputs"]["text"], "a red barn");
    assert_eq!(graph["7"]["inputs"]["text"], "people");
    assert_eq!(graph["5"]["inputs"], json!({"width": 832, "height": 1216, "batch_size": 2}));
    assert_eq!(graph["3"]["inputs"]["seed"], 9);
    assert_eq!(graph["3"]["inputs"]["model"], json!(["4", 0]), "links stay as they were");
    assert_eq!(graph["10"]["inputs"]["image"], "easel/ref.png", "the uploaded reference, with its subfolder");
    assert_eq!(s.comfy.uploads.lock().unwrap().len(), 1);
    assert_eq!(balance(&app).await, (before.0 - 2 * 10_000, 0));
    assert_ledger_invariant(&app.state, &app.account_id).await;
}

#[tokio::test]
async fn node_and_execution_errors_fail_the_task_with_their_message() {
    let s = setup().await;
    let app = spawn_app_with(|c| adjust(c, vec![comfy_channel("gpu-1", &s.base, s.workflow.path())])).await;
    let before = balance(&app).await;
    let mut refused = body(1, "1024x1024");
    refused["input"]["prompt"] = json!("bad node");
    let task = app.submit_ok(MODEL, &refused).await;
    let data = app.wait_done(MODEL, &task).await;
    assert_eq!(data["failCode"], "GENERATION_FAILED", "{data}");
    let message = data["failMsg"].as_str().unwrap();
    assert!(message.contains("node 6 (CLIPTextEncode)") && message.contains("embedding:missing"), "{message}");

    s.comfy.crash.store(true, Ordering::SeqCst);
    let task = app.submit_ok(MODEL, &body(1, "1024x1024")).await;
    let data = app.wait_done(MODEL, &task).await;
    let message = data["failMsg"].as_str().unwrap();
    assert!(message.contains("KSampler") && message.contains("CUDA out of memory"), "{data}");
    assert_eq!(balance(&app).await, before, "failures cost nothing");
}

#[tokio::test]
async fn a_restart_resumes_the_prompt_without_queueing_it_again() {
    let s = setup().await;
    s.comfy.hold.store(true, Ordering::SeqCst);
    let channels = vec![comfy_channel("gpu-1", &s.base, s.workflow.path())];
    let app = spawn_app_with(|c| adjust(c, channels.clone())).await;
    let task = app.submit_ok(MODEL, &body(1, "1024x1024")).await;
    let view = app.wait_for_percent(&task, 30).await;
    assert_eq!(view["state"], "processing", "running, as the socket says");
    let app = app.restart(|c| adjust(c, channels.clone())).await;
    s.comfy.hold.store(false, Ordering::SeqCst);
    let data = app.wait_done(MODEL, &task).await;
    assert_eq!(data["state"], "success", "{data}");
    assert_eq!(s.comfy.prompts().len(), 1, "queued once");
    s.comfy.assert_clean();
}

#[tokio::test]
async fn cancel_deletes_a_queued_prompt_and_interrupts_a_running_one() {
    let s = setup().await;
    s.comfy.stall.store(true, Ordering::SeqCst);
    let app = spawn_app_with(|c| adjust(c, vec![comfy_channel("gpu-1", &s.base, s.workflow.path())])).await;
    let before = balance(&app).await;
    let queued = app.submit_ok(MODEL, &body(1, "1024x1024")).await;
    wait_until(Duration::from_secs(30), || async { (!s.comfy.prompts().is_empty()).then_some(()) }).await;
    let (status, answer) = app.post_json(&format!("/api/v1/tasks/{queued}/cancel"), &[], &json!({})).await;
    assert_eq!(status, 200, "{answer}");
    wait_until(Duration::from_secs(30), || async { (!s.comfy.deletes.lock().unwrap().is_empty()).then_some(()) }).await;
    assert_eq!(*s.comfy.deletes.lock().unwrap(), ["p-1"]);
    app.wait_for_state(&queued, "cancelled").await;

    s.comfy.stall.store(false, Ordering::SeqCst);
    s.comfy.hold.store(true, Ordering::SeqCst);
    let running = app.submit_ok(MODEL, &body(1, "1024x1024")).await;
    wait_until(Duration::from_secs(30), || async { (s.comfy.prompts().len() == 2).then_some(()) }).await;
    let (status, _) = app.post_json(&format!("/api/v1/tasks/{running}/cancel"), &[], &json!({})).await;
    assert_eq!(status, 200);
    wait_until(Duration::from_secs(30), || async { (s.comfy.interrupts.load(Ordering::SeqCst) == 1).then_some(()) })
        .await;
    let view = app.wait_for_state(&running, "cancelled").await;
    assert_eq!(view["chargedUsd"], 0.0);
    assert_eq!(balance(&app).await, before);
    s.comfy.assert_clean();
}

#[tokio::test]
async fn a_mapping_that_names_no_such_input_stops_start_up() {
    let s = setup().await;
    let mut channel = comfy_channel("gpu-1", &s.base, s.workflow.path());
    channel.comfyui.as_mut().unwrap().inputs.insert("seed".into(), "3.noise_seed".into());
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(&dir);
    adjust(&mut config, vec![channel]);
    let err = easel::Application::build(config).await.err().expect("start-up refuses the mapping");
    let message = format!("{err:#}");
    assert!(message.contains("no input \"noise_seed\" on node \"3\""), "{message}");
}

#[tokio::test]
async fn the_channel_test_runs_the_workflow_once() {
    let s = setup().await;
    let app = spawn_app_with(|c| adjust(c, vec![comfy_channel("gpu-1", &s.base, s.workflow.path())])).await;
    let before = balance(&app).await;
    let test = test_channel(&app, TOKEN, "gpu-1").await;
    assert_eq!((test["ok"].as_bool(), test["images"].as_u64()), (Some(true), Some(1)), "{test}");
    assert_eq!(s.comfy.prompts()[0]["5"]["inputs"]["width"], 256);
    assert_eq!(balance(&app).await, before);
}

#[tokio::test]
async fn the_readme_example_fits_the_shipped_workflow() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let block = readme
        .split("```toml\n")
        .filter_map(|rest| rest.split("```").next())
        .find(|b| b.contains("provider = \"comfyui\""))
        .expect("the README shows a ComfyUI channel");
    // The configuration file beside a copy of the workflow, at the path it names.
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("docs/workflows")).unwrap();
    let shipped = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/workflows/sdxl.json");
    std::fs::copy(shipped, dir.path().join("docs/workflows/sdxl.json")).unwrap();
    let file = dir.path().join("easel.toml");
    std::fs::write(&file, block).unwrap();
    let loaded = easel::Config::load(Some(&file), easel::config::Overrides::default()).unwrap();
    let channel = &loaded.channels[0];
    assert_eq!(channel.comfyui.as_ref().unwrap().workflow, dir.path().join("docs/workflows/sdxl.json"));

    let data = tempfile::tempdir().unwrap();
    let mut config = test_config(&data);
    config.models = loaded.models.clone();
    config.channels = loaded.channels.clone();
    let app = easel::Application::build(config).await;
    assert!(app.is_ok(), "the mapping fits the workflow: {:#}", app.err().unwrap());
}

#[tokio::test]
async fn the_socket_tells_the_progress_and_the_end() {
    let s = setup().await;
    s.comfy.hold.store(true, Ordering::SeqCst);
    let mut channel = comfy_channel("gpu-1", &s.base, s.workflow.path());
    // Polls far apart: only the socket's word of the end finishes the task within wait_done's bound.
    channel.polling = Some(PollOptions { first_poll_ms: 20, poll_interval_ms: 120_000 });
    let app = spawn_app_with(|c| adjust(c, vec![channel])).await;
    let task = app.submit_ok(MODEL, &body(1, "1024x1024")).await;
    let view = app.wait_for_percent(&task, 30).await;
    assert_eq!(view["state"], "processing", "step 6 of 20, as the socket says: {view}");
    let prompt_client = s.comfy.clients.lock().unwrap().get("p-1").cloned();
    assert_eq!(prompt_client.as_deref(), Some(task.as_str()), "the task id is the client id");
    assert_eq!(*s.comfy.sockets.lock().unwrap(), [task.as_str()], "one socket, of the prompt's client id");

    s.comfy.hold.store(false, Ordering::SeqCst);
    let data = app.wait_done(MODEL, &task).await;
    assert_eq!(data["state"], "success", "{data}");
    assert_hosted_results(&app, &data, 1, ImageFormat::Png, (1024, 1024)).await;
    s.comfy.assert_clean();
}

#[tokio::test]
async fn without_a_socket_polling_follows_the_prompt() {
    let s = setup().await;
    s.comfy.hold.store(true, Ordering::SeqCst);
    s.comfy.no_socket.store(true, Ordering::SeqCst);
    let app = spawn_app_with(|c| adjust(c, vec![comfy_channel("gpu-1", &s.base, s.workflow.path())])).await;
    let task = app.submit_ok(MODEL, &body(1, "1024x1024")).await;
    let view = app.wait_for_percent(&task, 50).await;
    assert_eq!(view["state"], "processing", "running, as /queue says: {view}");
    assert!(s.comfy.sockets.lock().unwrap().is_empty());
    s.comfy.hold.store(false, Ordering::SeqCst);
    let data = app.wait_done(MODEL, &task).await;
    assert_eq!(data["state"], "success", "{data}");
    s.comfy.assert_clean();
}
