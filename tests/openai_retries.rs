//! Retries on `/v1` never make a second task: `Idempotency-Key` replays, and the official SDKs'
//! own retries (numbered by `X-Stainless-Retry-Count`, with no key) join their call's task.

mod common;

use std::collections::BTreeSet;

use common::*;
use serde_json::{Value, json};

struct Answer {
    status: u16,
    task: Option<String>,
    replayed: bool,
    body: Value,
}

async fn answer(res: reqwest::Response) -> Answer {
    let header = |name: &str| res.headers().get(name).map(|v| v.to_str().unwrap().to_owned());
    let (task, replayed) = (header("x-easel-task-id"), header("idempotent-replayed").as_deref() == Some("true"));
    Answer { status: res.status().as_u16(), task, replayed, body: res.json().await.unwrap() }
}

async fn generate(app: &TestApp, headers: &[(&str, &str)], body: &Value) -> Answer {
    let mut req = app.client.post(app.url("/v1/images/generations")).bearer_auth(&app.key).json(body);
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    answer(req.send().await.unwrap()).await
}

/// An edit with two images; reqwest draws a new multipart boundary for every form.
async fn edit(app: &TestApp, headers: &[(&str, &str)], prompt: &str) -> Answer {
    let part = |color| {
        let png = common::fakes::encoded(8, 8, color, image::ImageFormat::Png);
        reqwest::multipart::Part::bytes(png).file_name("ref.png").mime_str("image/png").unwrap()
    };
    let form = reqwest::multipart::Form::new()
        .part("image[]", part([0, 200, 0]))
        .part("image[]", part([0, 0, 200]))
        .text("model", "gpt-image-1")
        .text("prompt", prompt.to_owned());
    let mut req = app.client.post(app.url("/v1/images/edits")).bearer_auth(&app.key).multipart(form);
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    answer(req.send().await.unwrap()).await
}

/// The tasks the account was ever charged a hold for, from its ledger.
async fn held_tasks(app: &TestApp) -> BTreeSet<String> {
    let res = app.client.get(app.url("/api/v1/account/ledger?limit=200")).bearer_auth(&app.key).send().await.unwrap();
    let page: Value = res.json().await.unwrap();
    let entries = page["data"]["entries"].as_array().unwrap().clone();
    entries.iter().filter(|e| e["kind"] == "hold").map(|e| e["taskId"].as_str().unwrap().to_owned()).collect()
}

fn upload_count(app: &TestApp) -> usize {
    fn walk(dir: &std::path::Path) -> usize {
        std::fs::read_dir(dir)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| if e.path().is_dir() { walk(&e.path()) } else { 1 })
            .sum()
    }
    walk(&app.data_dir.path().join("files").join("uploads"))
}

#[tokio::test]
async fn idempotency_key_replays_a_generation_without_a_second_task() {
    let app = spawn_app().await;
    let body = json!({"model": "gpt-image-1", "prompt": "a koi"});
    let first = generate(&app, &[("Idempotency-Key", "gen-1")], &body).await;
    assert_eq!(first.status, 200, "{}", first.body);
    assert!(!first.replayed);
    let task = first.task.clone().expect("the answer names its task");

    // The same request again (keys in another order): the same task and images, no new hold.
    let again =
        generate(&app, &[("Idempotency-Key", "gen-1")], &json!({"prompt": "a koi", "model": "gpt-image-1"})).await;
    assert_eq!((again.status, again.task.as_deref(), again.replayed), (200, Some(task.as_str()), true));
    assert_eq!(again.body["data"], first.body["data"]);
    assert_eq!(held_tasks(&app).await, BTreeSet::from([task.clone()]));

    // The key with another request is refused in OpenAI's shape.
    let other = generate(&app, &[("Idempotency-Key", "gen-1")], &json!({"prompt": "a carp"})).await;
    assert_eq!(other.status, 422, "{}", other.body);
    assert!(other.body["error"]["message"].as_str().unwrap().contains("Idempotency-Key"), "{}", other.body);
    // Another key is another task.
    let second = generate(&app, &[("Idempotency-Key", "gen-2")], &body).await;
    assert_eq!(second.status, 200);
    assert_ne!(second.task.as_deref(), Some(task.as_str()));
    assert_eq!(held_tasks(&app).await.len(), 2);
    // A bad key is a 400 in OpenAI's shape.
    let bad = generate(&app, &[("Idempotency-Key", "no spaces allowed")], &body).await;
    assert_eq!(bad.status, 400);
    assert!(bad.body["error"]["message"].as_str().unwrap().contains("Idempotency-Key"), "{}", bad.body);
}

#[tokio::test]
async fn idempotency_key_replays_an_edit_without_storing_its_uploads_again() {
    let app = spawn_app().await;
    let first = edit(&app, &[("Idempotency-Key", "edit-1")], "tint it").await;
    assert_eq!(first.status, 200, "{}", first.body);
    let stored = upload_count(&app);
    assert_eq!(stored, 2);

    // Same fields and files, a new boundary: the same task, and nothing stored.
    let again = edit(&app, &[("Idempotency-Key", "edit-1")], "tint it").await;
    assert_eq!((again.status, again.task.as_deref(), again.replayed), (200, first.task.as_deref(), true));
    assert_eq!(upload_count(&app), stored, "a replay stores no uploads");
    assert_eq!(held_tasks(&app).await.len(), 1);
    // Another prompt under the key is another request.
    let other = edit(&app, &[("Idempotency-Key", "edit-1")], "tint it red").await;
    assert_eq!(other.status, 422, "{}", other.body);
    assert_eq!(upload_count(&app), stored, "a refused request stores nothing");
}

#[tokio::test]
async fn sdk_retries_after_a_504_join_the_task_and_answer_its_result() {
    // 1024×1024 renders in a quarter of latency_ms: about 2.5 s, longer than two 1 s waits.
    let app = spawn_app_with(|c| {
        c.server.openai_wait_secs = 1;
        c.local.latency_ms = 10_000;
    })
    .await;
    let body = json!({"prompt": "a slow koi"});
    let first = generate(&app, &[("X-Stainless-Retry-Count", "0")], &body).await;
    assert_eq!(first.status, 504, "{}", first.body);
    let task = first.task.clone().unwrap();
    let mut last = first;
    for retry in 1..10 {
        if last.status == 200 {
            break;
        }
        last = generate(&app, &[("X-Stainless-Retry-Count", &retry.to_string())], &body).await;
        assert_eq!(last.task.as_deref(), Some(task.as_str()), "retry {retry} joins the first task: {}", last.body);
        assert!(last.replayed);
    }
    assert_eq!(last.status, 200, "{}", last.body);
    assert_eq!(last.body["data"].as_array().unwrap().len(), 1);
    assert_eq!(held_tasks(&app).await, BTreeSet::from([task]));
}

#[tokio::test]
async fn a_new_sdk_call_with_the_same_request_is_a_new_task() {
    let app = spawn_app().await;
    let body = json!({"prompt": "twice the same"});
    let first = generate(&app, &[("X-Stainless-Retry-Count", "0")], &body).await;
    let second = generate(&app, &[("X-Stainless-Retry-Count", "0")], &body).await;
    assert_eq!((first.status, second.status), (200, 200));
    assert_ne!(first.task, second.task, "a deliberate second call makes its own task");
    // A retry (its first attempt's answer lost on the way) joins the latest call, which succeeded.
    let retry = generate(&app, &[("X-Stainless-Retry-Count", "1")], &body).await;
    assert_eq!((retry.status, retry.task.as_deref(), retry.replayed), (200, second.task.as_deref(), true));
    // A retry of a request never seen, or of another request, makes a task.
    let unseen = generate(&app, &[("X-Stainless-Retry-Count", "1")], &json!({"prompt": "never seen"})).await;
    assert_eq!((unseen.status, unseen.replayed), (200, false));
    // Without the SDK's header nothing is joined.
    let plain = generate(&app, &[], &body).await;
    assert!(!plain.replayed);
    assert_eq!(held_tasks(&app).await.len(), 4);
}

#[tokio::test]
async fn an_sdk_retry_of_an_edit_joins_it_and_stores_nothing() {
    let app = spawn_app().await;
    let first = edit(&app, &[("X-Stainless-Retry-Count", "0")], "tint it").await;
    assert_eq!(first.status, 200, "{}", first.body);
    assert_eq!(upload_count(&app), 2);
    let retry = edit(&app, &[("X-Stainless-Retry-Count", "1")], "tint it").await;
    assert_eq!((retry.status, retry.task.as_deref(), retry.replayed), (200, first.task.as_deref(), true));
    assert_eq!(upload_count(&app), 2, "the retry stored no uploads");
    assert_eq!(held_tasks(&app).await.len(), 1);
}
