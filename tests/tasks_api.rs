//! The dialect-free task API: the caller's tasks from every API in one list (filtered, newest
//! first, by cursor), one task in full, and deleting a finished task's images.

mod common;

use common::*;
use easel::config::Role;
use easel::money::Micros;
use serde_json::{Value, json};

async fn get(app: &TestApp, path: &str, key: &str) -> (u16, Value) {
    let res = app.client.get(app.url(path)).bearer_auth(key).send().await.unwrap();
    (res.status().as_u16(), res.json().await.unwrap())
}

async fn delete(app: &TestApp, path: &str) -> (u16, Value) {
    let res = app.client.delete(app.url(path)).bearer_auth(&app.key).send().await.unwrap();
    (res.status().as_u16(), res.json().await.unwrap())
}

fn ids(page: &Value) -> Vec<String> {
    page["data"]["tasks"].as_array().unwrap().iter().map(|t| t["id"].as_str().unwrap().to_owned()).collect()
}

#[tokio::test]
async fn every_apis_tasks_are_listed_newest_first_and_filtered() {
    let app = spawn_app_with(|c| c.local.latency_ms = 0).await;
    let apixo = app.submit_ok("seedream-5-0", &seedream_t2i(1)).await;
    app.wait_done("seedream-5-0", &apixo).await;
    let unified = app
        .client
        .post(app.url("/api/v1/images/generations"))
        .bearer_auth(&app.key)
        .json(&json!({"model": "gpt-image-1", "prompt": "a kite", "n": 2}))
        .send()
        .await
        .unwrap()
        .json::<Value>()
        .await
        .unwrap()["data"]["taskId"]
        .as_str()
        .unwrap()
        .to_owned();
    let openai = app
        .client
        .post(app.url("/v1/images/generations"))
        .bearer_auth(&app.key)
        .json(&json!({"model": "gpt-image-1", "prompt": "a kite", "response_format": "url"}))
        .send()
        .await
        .unwrap();
    assert_eq!(openai.status(), 200);
    let openai = openai.headers()["x-easel-task-id"].to_str().unwrap().to_owned();

    let (status, page) = get(&app, "/api/v1/tasks", &app.key).await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(ids(&page), [openai.clone(), unified.clone(), apixo.clone()]);
    let tasks = page["data"]["tasks"].as_array().unwrap();
    let apis: Vec<&str> = tasks.iter().map(|t| t["api"].as_str().unwrap()).collect();
    assert_eq!(apis, ["openai", "unified", "apixo"]);
    let first = &tasks[2];
    assert_eq!(first["model"], "seedream-5-0");
    assert_eq!(first["state"], "success");
    assert_eq!(first["request"]["input"]["prompt"], seedream_t2i(1)["input"]["prompt"]);
    assert_eq!(first["progress"], json!({"imagesRequested": 1, "imagesDone": 1}));
    assert_eq!(first["chargedUsd"], 0.032);
    assert_eq!(first["heldUsd"], 0.0);
    assert_eq!(first["images"].as_array().unwrap().len(), 1);
    assert!(page["data"]["nextBefore"].is_null(), "one page holds them all");

    let (_, by_model) = get(&app, "/api/v1/tasks?model=gpt-image-1", &app.key).await;
    assert_eq!(ids(&by_model), [openai.clone(), unified.clone()]);
    let (_, done) = get(&app, "/api/v1/tasks?state=success&model=seedream-5-0", &app.key).await;
    assert_eq!(ids(&done), vec![apixo.as_str()]);
    let created = first["createdAt"].as_i64().unwrap();
    let (_, before_first) = get(&app, &format!("/api/v1/tasks?until={created}"), &app.key).await;
    assert!(ids(&before_first).is_empty());
    let (_, since_first) = get(&app, &format!("/api/v1/tasks?since={created}&limit=2"), &app.key).await;
    assert_eq!(ids(&since_first), [openai.clone(), unified.clone()]);
    let cursor = since_first["data"]["nextBefore"].as_str().unwrap();
    assert_eq!(cursor, unified);
    let (_, rest) = get(&app, &format!("/api/v1/tasks?limit=2&before={cursor}"), &app.key).await;
    assert_eq!(ids(&rest), vec![apixo.as_str()]);

    let (status, bad) = get(&app, "/api/v1/tasks?state=done", &app.key).await;
    assert_eq!(
        (status, bad["message"].as_str().unwrap()),
        (400, "state must be one of pending, processing, success, failed, cancelled")
    );
    let (status, bad) = get(&app, "/api/v1/tasks?state=", &app.key).await;
    assert_eq!(
        (status, bad["message"].as_str().unwrap()),
        (400, "state must be one of pending, processing, success, failed, cancelled")
    );
    let (status, bad) = get(&app, "/api/v1/tasks?limit=0", &app.key).await;
    assert_eq!((status, bad["message"].as_str().unwrap()), (400, "limit must be an integer from 1 to 200"));

    // Another account sees none of them.
    let other = app.state.accounts.create("other", Micros::from_usd(1.0).unwrap()).await.unwrap();
    let (_, theirs) = get(&app, "/api/v1/tasks", &other.key.key).await;
    assert!(ids(&theirs).is_empty());
    let (status, _) = get(&app, &format!("/api/v1/tasks/{apixo}"), &other.key.key).await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn one_task_in_full_with_its_callbacks() {
    let receiver = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", receiver.local_addr().unwrap());
    tokio::spawn(async move {
        let app = axum::Router::new().route("/hook", axum::routing::post(|| async { "ok" }));
        axum::serve(receiver, app).await.unwrap();
    });
    let app = spawn_app_with(|c| {
        c.local.latency_ms = 0;
        c.server.allow_private_network = true;
    })
    .await;
    let mut body = seedream_t2i(2);
    body["callback_url"] = json!(url);
    let task = app.submit_ok("seedream-5-0", &body).await;
    app.wait_done("seedream-5-0", &task).await;
    let view = wait_until(std::time::Duration::from_secs(30), || async {
        let (status, view) = get(&app, &format!("/api/v1/tasks/{task}"), &app.key).await;
        assert_eq!(status, 200, "{view}");
        (view["data"]["callbacks"][0]["state"] == "delivered").then_some(view)
    })
    .await;
    let data = &view["data"];
    assert_eq!(data["id"], task);
    assert_eq!(data["request"]["callback_url"], url);
    assert_eq!(data["channelAttempts"][0]["channel"], "local");
    assert_eq!(data["channelAttempts"][0]["outcome"], "success");
    assert_eq!(data["images"].as_array().unwrap().len(), 2);
    assert_eq!(data["chargedUsd"], 0.064);
    assert_eq!(data["callbacks"][0]["url"], url);
    assert_eq!(data["callbacks"][0]["attemptLog"][0]["status"], 200);
    let (status, missing) = get(&app, "/api/v1/tasks/task_00000000000000000000000000000000", &app.key).await;
    assert_eq!(status, 404, "{missing}");
}

#[tokio::test]
async fn a_finished_tasks_images_can_be_deleted_and_their_links_then_answer_410() {
    let app = spawn_app_with(|c| c.local.latency_ms = 0).await;
    let task = app.submit_ok("seedream-5-0", &seedream_t2i(2)).await;
    let data = app.wait_done("seedream-5-0", &task).await;
    let links = result_urls(&data);
    assert_eq!(links.len(), 2);
    assert_eq!(app.client.get(&links[0]).send().await.unwrap().status(), 200);

    let (status, deleted) = delete(&app, &format!("/api/v1/tasks/{task}/images")).await;
    assert_eq!(status, 200, "{deleted}");
    assert!(deleted["data"]["images"].as_array().unwrap().is_empty());
    assert!(deleted["data"]["imagesDeletedAt"].as_i64().is_some());
    for link in &links {
        assert_eq!(app.client.get(link).send().await.unwrap().status(), 410, "{link}");
    }
    // Deleting again changes nothing; the task and its charge stay.
    let (status, again) = delete(&app, &format!("/api/v1/tasks/{task}/images")).await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(again["data"]["imagesDeletedAt"], deleted["data"]["imagesDeletedAt"]);
    assert_eq!(again["data"]["chargedUsd"], 0.064);
    assert_ledger_invariant(&app.state, "default").await;
}

#[tokio::test]
async fn an_unfinished_tasks_images_cannot_be_deleted() {
    // No workers: the task stays pending.
    let app = spawn_app_with(|c| c.role = Role::Api).await;
    let task = app.submit_ok("seedream-5-0", &seedream_t2i(1)).await;
    let (status, refused) = delete(&app, &format!("/api/v1/tasks/{task}/images")).await;
    assert_eq!(
        (status, refused["message"].as_str().unwrap()),
        (409, format!("task {task} has not ended yet").as_str())
    );
    let (_, view) = get(&app, &format!("/api/v1/tasks/{task}"), &app.key).await;
    assert_eq!(view["data"]["state"], "pending");
    assert_eq!(view["data"]["heldUsd"], 0.032);
    assert!(view["data"]["chargedUsd"].is_null());
}
