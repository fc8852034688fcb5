//! The operator API: absent without EASEL_ADMIN_TOKEN, guarded by it when set.

mod common;

use common::*;
use serde_json::{Value, json};

const TOKEN: &str = "admin-secret-token";

async fn admin(app: &TestApp, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
    let mut req = app.client.request(method, app.url(&format!("/admin/v1{path}"))).bearer_auth(TOKEN);
    if let Some(body) = body {
        req = req.json(&body);
    }
    let res = req.send().await.unwrap();
    (res.status().as_u16(), res.json().await.unwrap())
}

#[tokio::test]
async fn admin_routes_do_not_exist_without_a_token() {
    let app = spawn_app().await;
    let res = app.client.get(app.url("/admin/v1/accounts")).bearer_auth(TOKEN).send().await.unwrap();
    assert_eq!(res.status(), 404);
}

#[tokio::test]
async fn wrong_or_missing_admin_token_is_401() {
    let app = spawn_app_with(|c| c.admin_token = Some(TOKEN.into())).await;
    for auth in [None, Some("wrong"), Some(app.key.as_str())] {
        let mut req = app.client.get(app.url("/admin/v1/accounts"));
        if let Some(auth) = auth {
            req = req.bearer_auth(auth);
        }
        let res = req.send().await.unwrap();
        assert_eq!(res.status(), 401, "{auth:?}");
    }
}

#[tokio::test]
async fn operator_manages_accounts_keys_credits_limits_and_tasks() {
    let app = spawn_app_with(|c| c.admin_token = Some(TOKEN.into())).await;
    let (status, created) =
        admin(&app, reqwest::Method::POST, "/accounts", Some(json!({"name": "acme", "credits": 1.5}))).await;
    assert_eq!(status, 200, "{created}");
    let data = &created["data"];
    let id = data["accountId"].as_str().unwrap().to_owned();
    assert_eq!(data["balance"], 1.5);
    assert!(data["webhookSecret"].as_str().unwrap().starts_with("whsec_"));
    let key = data["key"].as_str().unwrap().to_owned();

    let (status, dup) = admin(&app, reqwest::Method::POST, "/accounts", Some(json!({"name": "acme"}))).await;
    assert_eq!((status, dup["code"].as_u64()), (409, Some(409)));
    let (status, _) = admin(&app, reqwest::Method::POST, "/accounts", Some(json!({"name": "x", "credits": -1}))).await;
    assert_eq!(status, 400);

    let (_, list) = admin(&app, reqwest::Method::GET, "/accounts", None).await;
    let names: Vec<&str> = list["data"].as_array().unwrap().iter().map(|a| a["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["default", "acme"]);

    let (_, credited) =
        admin(&app, reqwest::Method::POST, &format!("/accounts/{id}/credits"), Some(json!({"amount": 0.5}))).await;
    assert_eq!(credited["data"]["balance"], 2.0);
    let (status, _) =
        admin(&app, reqwest::Method::POST, &format!("/accounts/{id}/credits"), Some(json!({"amount": 0}))).await;
    assert_eq!(status, 400);

    let (_, limited) = admin(
        &app,
        reqwest::Method::PUT,
        &format!("/accounts/{id}/limits"),
        Some(json!({"model": "seedream-5-0", "rpm": 5, "concurrency": 2})),
    )
    .await;
    assert_eq!(limited["data"]["limits"]["seedream-5-0"], json!({"rpm": 5, "maxConcurrent": 2}));
    let (status, _) =
        admin(&app, reqwest::Method::PUT, &format!("/accounts/{id}/limits"), Some(json!({"model": "nope"}))).await;
    assert_eq!(status, 400);

    // The new account's key works, and its tasks show up for the operator.
    let res = app
        .client
        .post(app.url("/api/v1/generateTask/gpt-image-1"))
        .bearer_auth(&key)
        .json(&gpt_t2i(2))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let task = res.json::<Value>().await.unwrap()["data"]["taskId"].as_str().unwrap().to_owned();
    let (_, tasks) = admin(&app, reqwest::Method::GET, &format!("/accounts/{id}/tasks"), None).await;
    let listed = &tasks["data"]["tasks"][0];
    assert_eq!(listed["taskId"], task.as_str());
    assert_eq!(listed["model"], "gpt-image-1");
    assert_eq!(listed["requestedImages"], 2);

    let (_, second) = admin(&app, reqwest::Method::POST, &format!("/accounts/{id}/keys"), None).await;
    let key_id = second["data"]["keyId"].as_str().unwrap().to_owned();
    let (status, _) = admin(&app, reqwest::Method::DELETE, &format!("/keys/{key_id}"), None).await;
    assert_eq!(status, 200);
    let res = app
        .client
        .get(app.url("/api/v1/account"))
        .bearer_auth(second["data"]["key"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    let (status, _) = admin(&app, reqwest::Method::DELETE, &format!("/keys/{key_id}"), None).await;
    assert_eq!(status, 404);
    let (status, _) = admin(&app, reqwest::Method::GET, "/accounts/acct_missing", None).await;
    assert_eq!(status, 404);
}
