//! Every /api route needs a live key, and a caller sees only its own account's tasks.

mod common;

use common::*;
use easel::money::Micros;
use serde_json::Value;

async fn expect_401(res: reqwest::Response, needle: &str) {
    assert_eq!(res.status(), 401);
    let json: Value = res.json().await.unwrap();
    assert_eq!(json["code"], 401);
    assert!(json["data"].is_null());
    assert!(json["message"].as_str().unwrap().contains(needle), "{json}");
}

#[tokio::test]
async fn missing_malformed_and_unknown_keys_are_401() {
    let app = spawn_app().await;
    let submit = app.url("/api/v1/generateTask/seedream-5-0");
    let status = app.url("/api/v1/statusTask/seedream-5-0?taskId=task_x");
    let body = seedream_t2i(1);

    expect_401(app.client.post(&submit).json(&body).send().await.unwrap(), "missing API key").await;
    expect_401(app.client.get(&status).send().await.unwrap(), "missing API key").await;
    let basic = app.client.post(&submit).header("Authorization", format!("Basic {}", app.key)).json(&body);
    expect_401(basic.send().await.unwrap(), "Bearer").await;
    let unknown =
        app.client.post(&submit).bearer_auth("sk-0000000000000000000000000000000000000000000000000").json(&body);
    expect_401(unknown.send().await.unwrap(), "invalid or revoked").await;
    expect_401(app.client.get(&status).bearer_auth("not-even-a-key").send().await.unwrap(), "invalid or revoked").await;
}

#[tokio::test]
async fn revoked_key_stops_working_at_once() {
    let app = spawn_app().await;
    let account = app.state.accounts.find("default").await.unwrap();
    let second = app.state.accounts.issue_key(&account.id).await.unwrap();
    let submit = || {
        app.client
            .post(app.url("/api/v1/generateTask/seedream-5-0"))
            .bearer_auth(&second.key)
            .json(&seedream_t2i(1))
            .send()
    };
    assert_eq!(submit().await.unwrap().status(), 200);
    assert!(app.state.accounts.revoke_key(second.key_id.as_str(), None).await.unwrap());
    expect_401(submit().await.unwrap(), "invalid or revoked").await;
    // The account's other key is untouched.
    assert_eq!(app.submit("seedream-5-0", &seedream_t2i(1)).await.0, 200);
}

#[tokio::test]
async fn another_accounts_task_is_404() {
    let app = spawn_app().await;
    let task = app.submit_ok("seedream-5-0", &seedream_t2i(1)).await;
    let other = app.state.accounts.create("other", Micros::from_usd(1.0).unwrap()).await.unwrap();
    let res = app
        .client
        .get(app.url("/api/v1/statusTask/seedream-5-0"))
        .query(&[("taskId", &task)])
        .bearer_auth(&other.key.key)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 404);
    let json: Value = res.json().await.unwrap();
    assert_eq!(json["message"], format!("task {task} not found"));
    // The owner still sees it.
    assert_eq!(app.status("seedream-5-0", &task).await.0, 200);
}
