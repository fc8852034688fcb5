//! Per-minute and concurrency limits: 429 with Retry-After past either; status polls have
//! their own, generous limit.

mod common;

use common::*;
use easel::accounts::limits;
use serde_json::{Value, json};

async fn set_limits(app: &TestApp, model: &str, rpm: Option<u32>, concurrency: Option<u32>) {
    let account = app.state.accounts.find("default").await.unwrap();
    limits::set(&app.state.db, &account.id, model, rpm, concurrency).await.unwrap();
}

#[tokio::test]
async fn sixty_one_creates_in_a_minute_meet_a_429_while_polls_pass() {
    let app = spawn_app().await;
    // Only the per-minute limit is under test here.
    set_limits(&app, "seedream-5-0", None, Some(1000)).await;
    let body = json!({"input": {"mode": "text-to-image", "prompt": "p", "max_images": 1, "size": "1280x720"}});
    let mut accepted = Vec::new();
    let mut refused = 0;
    for _ in 0..61 {
        let res = app
            .client
            .post(app.url("/api/v1/generateTask/seedream-5-0"))
            .bearer_auth(&app.key)
            .json(&body)
            .send()
            .await
            .unwrap();
        if res.status() == 429 {
            let retry: u64 = res.headers()["retry-after"].to_str().unwrap().parse().unwrap();
            assert!((1..=60).contains(&retry), "Retry-After {retry}");
            let json: Value = res.json().await.unwrap();
            assert_eq!(json["code"], 429);
            assert!(json["message"].as_str().unwrap().contains("60 task creations per minute"), "{json}");
            refused += 1;
        } else {
            assert_eq!(res.status(), 200);
            accepted.push(res.json::<Value>().await.unwrap()["data"]["taskId"].as_str().unwrap().to_owned());
        }
    }
    assert!(refused >= 1, "61 creates in a minute must meet the limit");
    assert!(accepted.len() >= 10, "the burst passes: {}", accepted.len());
    for i in 0..100 {
        let (status, json) = app.status("seedream-5-0", &accepted[i % accepted.len()]).await;
        assert_eq!(status, 200, "poll {i}: {json}");
    }
}

#[tokio::test]
async fn eleventh_concurrent_task_waits_for_a_slot() {
    // A 2K task takes 10 s here, a 1280×720 one about 2 s.
    let app = spawn_app_with(|c| c.local.latency_ms = 10_000).await;
    set_limits(&app, "seedream-5-0", Some(1000), None).await;
    let long = json!({"input": {"mode": "text-to-image", "prompt": "slow", "max_images": 1}});
    let short = json!({"input": {"mode": "text-to-image", "prompt": "quick", "max_images": 1, "size": "1280x720"}});
    for _ in 0..9 {
        app.submit_ok("seedream-5-0", &long).await;
    }
    let quick = app.submit_ok("seedream-5-0", &short).await;

    let (status, json) = app.submit("seedream-5-0", &long).await;
    assert_eq!(status, 429, "{json}");
    assert!(json["message"].as_str().unwrap().contains("concurrency limit reached: 10"), "{json}");
    let account = app.state.accounts.find("default").await.unwrap();
    assert_eq!(account.held.0, 10 * 32_000, "the refused task holds nothing");

    assert_eq!(app.wait_done("seedream-5-0", &quick).await["state"], "success");
    app.submit_ok("seedream-5-0", &long).await;
    assert_ledger_invariant(&app.state, "default").await;
}

#[tokio::test]
async fn per_account_limits_override_the_model() {
    let app = spawn_app().await;
    set_limits(&app, "gpt-image-1", Some(1), Some(5)).await;
    let (_, account) = app.get_json("/api/v1/account").await;
    assert_eq!(account["data"]["limits"]["gpt-image-1"], json!({"rpm": 1, "maxConcurrent": 5}));
    assert_eq!(app.submit("gpt-image-1", &gpt_t2i(1)).await.0, 200);
    let (status, json) = app.submit("gpt-image-1", &gpt_t2i(1)).await;
    assert_eq!(status, 429, "{json}");
    // Limits are per model: seedream is untouched.
    assert_eq!(app.submit("seedream-5-0", &seedream_t2i(1)).await.0, 200);
}

#[tokio::test]
async fn status_polls_have_their_own_limit() {
    let app = spawn_app_with(|c| c.server.status_rpm = 6).await;
    let task = app.submit_ok("gpt-image-1", &gpt_t2i(1)).await;
    // A burst of 1 (6 a minute / 6), then one every 10 s.
    assert_eq!(app.status("gpt-image-1", &task).await.0, 200);
    let (status, json) = app.status("gpt-image-1", &task).await;
    assert_eq!(status, 429, "{json}");
    assert!(json["message"].as_str().unwrap().contains("status requests per minute"));
    // Creation is not affected by polling.
    assert_eq!(app.submit("gpt-image-1", &gpt_t2i(1)).await.0, 200);
}

/// Creates with the default key until the first 429; returns how many passed.
async fn creates_until_refused(app: &TestApp, body: &Value) -> usize {
    for passed in 0..1000 {
        let res = app.client.post(app.url("/api/v1/generateTask/seedream-5-0")).bearer_auth(&app.key).json(body);
        match res.send().await.unwrap().status().as_u16() {
            200 => {}
            429 => return passed,
            other => panic!("unexpected status {other}"),
        }
    }
    panic!("never refused");
}

#[tokio::test]
async fn with_redis_the_per_minute_allowance_outlives_the_process() {
    let Some(redis) = redis_server("with_redis_the_per_minute_allowance_outlives_the_process") else { return };
    let app = spawn_app_with(|c| c.redis_url = Some(redis.clone())).await;
    assert!(app.state.limiter.is_shared());
    set_limits(&app, "seedream-5-0", Some(60), Some(1000)).await;
    let body = json!({"input": {"mode": "text-to-image", "prompt": "p", "max_images": 1, "size": "1280x720"}});
    // The burst of a 60-a-minute quota is 10 (one more may pass as a second ticks by).
    let burst = creates_until_refused(&app, &body).await;
    assert!((10..=11).contains(&burst), "{burst}");
    // A new process on the same store draws on the same allowance: it is in Redis, not memory.
    let app = app.restart(|c| c.redis_url = Some(redis.clone())).await;
    assert!(creates_until_refused(&app, &body).await <= 1, "the allowance was spent before the restart");
    // Without Redis the new process starts with a fresh allowance (limits per node).
    let app = app.restart(|_| {}).await;
    assert!(creates_until_refused(&app, &body).await >= 10);
}

#[tokio::test]
async fn an_unreachable_redis_fails_start_up_instead_of_limiting_per_node() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(&dir);
    // Port 1 on loopback: nothing listens there.
    config.redis_url = Some("redis://127.0.0.1:1/".into());
    let err = easel::Application::build(config).await.err().expect("start-up fails");
    assert!(format!("{err:#}").contains("Redis"), "{err:#}");
}

#[tokio::test]
async fn limits_off_by_config_lets_everything_through() {
    let app = spawn_app_with(|c| {
        c.server.limits = false;
        c.server.status_rpm = 6;
        // Tasks stay unfinished, so a concurrency limit would bite.
        c.local.latency_ms = 3_600_000;
    })
    .await;
    set_limits(&app, "gpt-image-1", Some(1), Some(1)).await;
    let mut tasks = Vec::new();
    for _ in 0..5 {
        tasks.push(app.submit_ok("gpt-image-1", &gpt_t2i(1)).await);
    }
    for task in &tasks {
        let (status, json) = app.status("gpt-image-1", task).await;
        assert_eq!(status, 200, "{json}");
    }
    // Credits are still held for every task: only limits are off.
    let account = app.state.accounts.find("default").await.unwrap();
    assert_eq!(account.held.0, 5 * 40_000);
}
