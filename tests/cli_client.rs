//! `easel generate` through the real binary: each model goes through its own API, `--json`
//! prints the dialect-free task view with the saved files, a failed task is reported with its
//! code and exits nonzero, failed polls are ridden out (a final refusal is not), and the first
//! `easel serve` prints the webhook signing secret beside the key.

mod common;

use std::process::Output;
use std::sync::{Arc, Mutex};

use axum::Json;
use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use common::apixo_fake::{self, Finish};
use common::{TestApp, spawn_app, spawn_app_with};
use easel::accounts::Accounts;
use easel::db::Db;
use serde_json::{Value, json};
use tokio::process::Command;

const EASEL: &str = env!("CARGO_BIN_EXE_easel");

/// `easel generate ARGS` against the server at `base` with `key`.
async fn generate(base: &str, key: &str, args: &[&str]) -> Output {
    let mut cmd = Command::new(EASEL);
    cmd.arg("generate").args(args).env("EASEL_URL", base).env("EASEL_API_KEY", key).env("NO_PROXY", "127.0.0.1");
    cmd.output().await.unwrap()
}

fn stdout_json(out: &Output) -> Value {
    let text = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(text.trim()).unwrap_or_else(|e| panic!("{e}: stdout {text:?}, stderr {}", stderr(out)))
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The task as `GET /api/v1/tasks/{id}` shows it.
async fn task_view(app: &TestApp, id: &str) -> Value {
    let (status, body) = app.get_json(&format!("/api/v1/tasks/{id}")).await;
    assert_eq!(status, 200, "{body}");
    body["data"].clone()
}

#[tokio::test]
async fn apixo_models_go_through_generate_task_and_json_is_the_task_view() {
    let app = spawn_app().await;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().to_str().unwrap();

    let args = ["--model", "seedream-5-0", "--prompt", "dunes", "--size", "1280x720", "--n", "2", "--wait", "--json"];
    let done = generate(&app.base, &app.key, &[&args[..], &["--out", out][..]].concat()).await;
    assert!(done.status.success(), "{}", stderr(&done));
    let printed = stdout_json(&done);
    let id = printed["id"].as_str().unwrap();
    assert!(id.starts_with("task_"), "{printed}");
    assert_eq!((printed["state"].as_str(), printed["api"].as_str()), (Some("success"), Some("apixo")), "{printed}");
    assert_eq!(printed["images"].as_array().unwrap().len(), 2, "{printed}");
    let files: Vec<&str> = printed["files"].as_array().unwrap().iter().map(|f| f.as_str().unwrap()).collect();
    assert_eq!(files.len(), 2, "{printed}");
    for file in &files {
        assert_eq!(image::image_dimensions(file).unwrap(), (1280, 720), "{file}");
    }
    let view = task_view(&app, id).await;
    assert_eq!(view["api"], "apixo");
    assert_eq!(view["request"]["input"]["max_images"], 2, "{view}");
    assert_eq!(printed["progress"], view["progress"], "the same field names as the HTTP API");

    // gpt-image-1 is offered on both task APIs; its own is APIXO's, asked by aspect ratio.
    let args =
        ["--model", "gpt-image-1", "--prompt", "a crane", "--size", "1536x1024", "--wait", "--json", "--out", out];
    let gpt = generate(&app.base, &app.key, &args).await;
    assert!(gpt.status.success(), "{}", stderr(&gpt));
    let printed = stdout_json(&gpt);
    let view = task_view(&app, printed["id"].as_str().unwrap()).await;
    assert_eq!(view["api"], "apixo", "{view}");
    assert_eq!(view["request"]["input"]["mode"], "gpt-image-1");
    assert_eq!(view["request"]["input"]["aspect_ratio"], "3:2");
    let file = printed["files"][0].as_str().unwrap();
    assert_eq!(image::image_dimensions(file).unwrap(), (1536, 1024));
}

#[tokio::test]
async fn what_apixo_cannot_ask_for_and_unified_only_models_go_unified() {
    let app = spawn_app().await;
    // Seed 002 takes 1, 2 or 4 images; the unified API takes 3.
    let three = generate(&app.base, &app.key, &["--model", "gpt-image-1", "--prompt", "p", "--n", "3", "--json"]).await;
    assert!(three.status.success(), "{}", stderr(&three));
    let printed = stdout_json(&three);
    assert_eq!(printed["state"], "pending", "{printed}");
    assert!(printed.get("files").is_none(), "nothing saved without --wait: {printed}");
    let view = task_view(&app, printed["id"].as_str().unwrap()).await;
    assert_eq!((view["api"].as_str(), view["progress"]["imagesRequested"].as_u64()), (Some("unified"), Some(3)));

    let lite = ["--model", "doubao-seedream-4-5-251128", "--prompt", "p", "--size", "2K"];
    let plain = generate(&app.base, &app.key, &lite).await;
    assert!(plain.status.success(), "{}", stderr(&plain));
    let id = String::from_utf8_lossy(&plain.stdout).trim().to_owned();
    assert!(id.starts_with("task_"), "without --json, only the id: {id:?}");
    assert_eq!(task_view(&app, &id).await["api"], "unified");
}

#[tokio::test]
async fn a_failed_task_prints_its_code_and_message_and_exits_nonzero() {
    let fake = apixo_fake::spawn("seedream-5-0", 1).await;
    *fake.state.finish.lock().unwrap() =
        Finish::Failed { code: "CONTENT_VIOLATION", message: "Content does not meet safety guidelines" };
    let app = spawn_app_with(|c| c.channels = vec![fake.channel("apixo-a", 0)]).await;
    let dir = tempfile::tempdir().unwrap();
    let args = ["--model", "seedream-5-0", "--prompt", "p", "--wait", "--out", dir.path().to_str().unwrap()];

    let failed = generate(&app.base, &app.key, &args).await;
    assert!(!failed.status.success());
    assert!(
        stderr(&failed).contains("CONTENT_VIOLATION: Content does not meet safety guidelines"),
        "{}",
        stderr(&failed)
    );
    assert!(failed.stdout.is_empty(), "no paths: {}", String::from_utf8_lossy(&failed.stdout));

    let as_json = generate(&app.base, &app.key, &[&args[..], &["--json"][..]].concat()).await;
    assert!(!as_json.status.success());
    let printed = stdout_json(&as_json);
    assert_eq!((printed["state"].as_str(), printed["failCode"].as_str()), (Some("failed"), Some("CONTENT_VIOLATION")));
    assert!(printed.get("files").is_none(), "{printed}");
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0, "nothing saved");
    fake.assert_clean();

    // The local renderer's own failure: a loopback reference, refused by the egress guard.
    let local = spawn_app().await;
    let refs = ["--model", "seedream-5-0", "--prompt", "p", "--ref", "http://127.0.0.1:9/x.png", "--wait"];
    let refused = generate(&local.base, &local.key, &refs).await;
    assert!(!refused.status.success());
    assert!(stderr(&refused).contains("INVALID_IMAGE_URL: image_urls[0]"), "{}", stderr(&refused));
}

/// A stand-in for Easel that fails the first submit and the first polls the ways a real
/// server or its proxy can fail for a moment, then answers; and a task that is not found.
#[derive(Default)]
struct Flaky {
    base: Mutex<String>,
    idempotency_keys: Mutex<Vec<String>>,
    polls: Mutex<Vec<String>>,
}

async fn flaky_submit(State(s): State<Arc<Flaky>>, headers: HeaderMap, Json(body): Json<Value>) -> Response {
    let key = headers.get("idempotency-key").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
    let mut keys = s.idempotency_keys.lock().unwrap();
    keys.push(key);
    if keys.len() == 1 {
        let busy = json!({"code": 503, "message": "database busy", "data": null});
        return (StatusCode::SERVICE_UNAVAILABLE, [(header::RETRY_AFTER, "0")], Json(busy)).into_response();
    }
    let id = if body["input"]["prompt"] == "gone" { "task_gone" } else { "task_flaky" };
    Json(json!({"code": 200, "message": "success", "data": {"taskId": id}})).into_response()
}

async fn flaky_task(State(s): State<Arc<Flaky>>, Path(id): Path<String>) -> Response {
    let polls = {
        let mut polls = s.polls.lock().unwrap();
        polls.push(id.clone());
        polls.iter().filter(|p| **p == id).count()
    };
    if id == "task_gone" {
        let gone = json!({"code": 404, "message": "task task_gone not found", "data": null});
        return (StatusCode::NOT_FOUND, Json(gone)).into_response();
    }
    let view = |state: &str, done: u32, extra: Value| {
        let mut data = json!({"id": id, "model": "m", "api": "apixo", "state": state,
            "progress": {"imagesRequested": 1, "imagesDone": done}, "images": extra["images"].clone()});
        if let Some(position) = extra.get("queuePosition") {
            data["progress"]["queuePosition"] = position.clone();
        }
        Json(json!({"code": 200, "message": "success", "data": data})).into_response()
    };
    match polls {
        1 => (StatusCode::SERVICE_UNAVAILABLE, Json(json!({"code": 503, "message": "restarting", "data": null})))
            .into_response(),
        2 => (StatusCode::BAD_GATEWAY, "<html>502 Bad Gateway</html>").into_response(),
        3 => (
            StatusCode::TOO_MANY_REQUESTS,
            [(header::RETRY_AFTER, "0")],
            Json(json!({"code": 429, "message": "slow down"})),
        )
            .into_response(),
        4 => view("pending", 0, json!({"images": [], "queuePosition": 2})),
        5 => view("processing", 0, json!({"images": []})),
        _ => view("success", 1, json!({"images": [format!("{}/files/0.png", s.base.lock().unwrap())]})),
    }
}

async fn flaky_file() -> Response {
    ([(header::CONTENT_TYPE, "image/png")], common::green_png()).into_response()
}

async fn spawn_flaky() -> (String, Arc<Flaky>) {
    let state = Arc::new(Flaky::default());
    let models = json!({"code": 200, "message": "success",
        "data": [{"id": "m", "family": "seedream", "aliases": [], "apis": ["apixo"]}]});
    let app = Router::new()
        .route("/api/v1/models", get(move || async move { Json(models) }))
        .route("/api/v1/generateTask/{model}", post(flaky_submit))
        .route("/api/v1/tasks/{id}", get(flaky_task))
        .route("/files/0.png", get(flaky_file))
        .with_state(state.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    *state.base.lock().unwrap() = base.clone();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (base, state)
}

#[tokio::test]
async fn waiting_rides_out_failed_polls_but_not_a_final_refusal() {
    let (base, flaky) = spawn_flaky().await;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().to_str().unwrap();
    let done = generate(&base, "sk-test", &["--model", "m", "--prompt", "p", "--wait", "--json", "--out", out]).await;
    assert!(done.status.success(), "{}", stderr(&done));
    let printed = stdout_json(&done);
    assert_eq!((printed["id"].as_str(), printed["state"].as_str()), (Some("task_flaky"), Some("success")));
    let file = printed["files"][0].as_str().unwrap();
    assert_eq!(std::fs::read(file).unwrap(), common::green_png());
    assert_eq!(flaky.polls.lock().unwrap().len(), 6, "503, 502, 429, pending, processing, success");
    {
        let keys = flaky.idempotency_keys.lock().unwrap();
        assert_eq!(keys.len(), 2, "the refused submit was retried");
        assert!(keys[0].len() > 8 && keys[0] == keys[1], "with the same Idempotency-Key: {keys:?}");
    }
    assert!(
        stderr(&done).contains("submitting the task: the server answered: database busy (HTTP 503)"),
        "{}",
        stderr(&done)
    );

    // A 404 cannot change: one poll, then the command fails naming it.
    flaky.idempotency_keys.lock().unwrap().clear();
    let gone = generate(&base, "sk-test", &["--model", "m", "--prompt", "gone", "--wait"]).await;
    assert!(!gone.status.success());
    assert!(stderr(&gone).contains("task task_gone not found (HTTP 404)"), "{}", stderr(&gone));
    let polls = flaky.polls.lock().unwrap();
    assert_eq!(polls.iter().filter(|p| *p == "task_gone").count(), 1, "{polls:?}");
}

#[tokio::test]
async fn first_start_prints_the_webhook_signing_secret_beside_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let mut served = common::process::serve(common::process::easel_on(dir.path()).await).await;
    served.child.kill().await.unwrap();
    let printed = &served.printed;
    let at = printed.iter().position(|l| l.starts_with("API key (shown once, keep it): sk-")).expect("the key");
    let secret = printed
        .get(at + 1)
        .and_then(|l| l.strip_prefix("Webhook signing secret (shown once, keep it): "))
        .unwrap_or_else(|| panic!("the secret on the line after the key: {printed:?}"));
    assert!(secret.starts_with("whsec_"), "{secret}");

    let url = std::fs::read_to_string(dir.path().join("test-database-url"))
        .unwrap_or_else(|_| format!("sqlite://{}?mode=rw", dir.path().join("easel.db").display()));
    let db = Db::connect(&url).await.unwrap();
    let account = Accounts::new(db.clone()).find("default").await.unwrap();
    db.close().await;
    assert_eq!(account.webhook_secret, secret, "the secret printed is the account's");
}
