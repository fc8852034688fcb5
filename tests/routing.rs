//! Routing between channels: tiers, priority, weights, concurrency caps, no usable channel; and
//! the operator's view of channels and metrics.

mod common;

use common::*;
use easel::Config;
use easel::config::{ChannelConfig, LocalOptions, ProviderKind, Tier};
use serde_json::Value;

const TOKEN: &str = "ops-token";

fn local(id: &str, tier: Tier, priority: i32, weight: u32, latency_ms: u64) -> ChannelConfig {
    ChannelConfig {
        priority,
        weight,
        local: Some(LocalOptions { latency_ms }),
        ..ChannelConfig::new(id, ProviderKind::Local, tier)
    }
}

async fn admin_get(app: &TestApp, path: &str) -> reqwest::Response {
    app.client.get(app.url(path)).bearer_auth(TOKEN).send().await.unwrap()
}

/// The channels a finished task was tried on, from the admin API.
async fn channels_of(app: &TestApp, task: &str) -> Vec<String> {
    let page: Value =
        admin_get(app, &format!("/admin/v1/accounts/{}/tasks?limit=200", app.account_id)).await.json().await.unwrap();
    let listed = page["data"]["tasks"].as_array().unwrap().iter().find(|t| t["taskId"] == task).unwrap().clone();
    listed["channels"].as_array().unwrap().iter().map(|a| a["channel"].as_str().unwrap().to_owned()).collect()
}

fn two_tiers(c: &mut Config) {
    c.admin_token = Some(TOKEN.into());
    c.channels = vec![local("official-1", Tier::Official, 0, 1, 0), local("value-1", Tier::Value, 10, 1, 0)];
}

#[tokio::test]
async fn provider_field_picks_the_tier_and_auto_follows_priority() {
    let app = spawn_app_with(two_tiers).await;
    for (provider, expected) in [("official", "official-1"), ("value", "value-1"), ("auto", "value-1")] {
        let mut body = gpt_t2i(1);
        body["provider"] = provider.into();
        let task = app.submit_ok("gpt-image-1", &body).await;
        assert_eq!(app.wait_done("gpt-image-1", &task).await["state"], "success");
        assert_eq!(channels_of(&app, &task).await, [expected], "provider {provider}");
    }
}

#[tokio::test]
async fn no_usable_channel_fails_the_task_and_releases_its_credits() {
    let app = spawn_app_with(|c| {
        c.admin_token = Some(TOKEN.into());
        c.channels = vec![local("value-only", Tier::Value, 0, 1, 0)];
    })
    .await;
    let mut body = gpt_t2i(2);
    body["provider"] = "official".into();
    let task = app.submit_ok("gpt-image-1", &body).await;
    let data = app.wait_done("gpt-image-1", &task).await;
    assert_eq!(data["state"], "failed");
    assert_eq!(data["failCode"], "GENERATION_FAILED");
    assert!(data["failMsg"].as_str().unwrap().contains("no channel"), "{data}");
    assert_ledger_invariant(&app.state, "default").await;
    assert_eq!(app.state.accounts.find("default").await.unwrap().balance.0, 10_000_000);
}

#[tokio::test]
async fn weights_share_out_tasks_within_a_priority() {
    let app = spawn_app_with(|c| {
        c.admin_token = Some(TOKEN.into());
        c.channels = vec![local("light", Tier::Value, 5, 1, 0), local("heavy", Tier::Value, 5, 9, 0)];
    })
    .await;
    let mut tasks = Vec::new();
    for _ in 0..40 {
        tasks.push(app.submit_ok("gpt-image-1", &gpt_t2i(1)).await);
    }
    let (mut heavy, mut light) = (0, 0);
    for task in &tasks {
        app.wait_done("gpt-image-1", task).await;
        match channels_of(&app, task).await[0].as_str() {
            "heavy" => heavy += 1,
            _ => light += 1,
        }
    }
    // With weights 9:1 the heavy channel takes about 36 of 40; fewer than half is beyond chance.
    assert!(heavy > light, "heavy {heavy}, light {light}");
}

#[tokio::test]
async fn a_full_channel_is_passed_over() {
    let app = spawn_app_with(|c| {
        c.admin_token = Some(TOKEN.into());
        let mut busy = local("busy", Tier::Official, 10, 1, 600_000);
        busy.max_concurrency = Some(1);
        c.channels = vec![busy, local("spare", Tier::Official, 0, 1, 0)];
    })
    .await;
    let first = app.submit_ok("gpt-image-1", &gpt_t2i(1)).await;
    wait_until(std::time::Duration::from_secs(10), || async {
        let (_, s) = app.status("gpt-image-1", &first).await;
        (s["data"]["state"] == "processing").then_some(())
    })
    .await;
    let second = app.submit_ok("gpt-image-1", &gpt_t2i(1)).await;
    assert_eq!(app.wait_done("gpt-image-1", &second).await["state"], "success");
    assert_eq!(channels_of(&app, &second).await, ["spare"]);

    let channels: Value = admin_get(&app, "/admin/v1/channels").await.json().await.unwrap();
    let busy = channels["data"].as_array().unwrap().iter().find(|c| c["id"] == "busy").unwrap().clone();
    assert_eq!((busy["inFlight"].as_u64(), busy["maxConcurrency"].as_u64()), (Some(1), Some(1)));
    assert_eq!(busy["breaker"], "closed");
    let spare = channels["data"].as_array().unwrap().iter().find(|c| c["id"] == "spare").unwrap().clone();
    assert_eq!(spare["successes"], 1);
    assert_eq!(spare["successRate"], 1.0);
    assert!(spare["p50LatencyMs"].is_u64());
}

#[tokio::test]
async fn metrics_report_tasks_channels_and_ledger() {
    let app = spawn_app_with(two_tiers).await;
    let task = app.submit_ok("gpt-image-1", &gpt_t2i(2)).await;
    app.wait_done("gpt-image-1", &task).await;
    let res = admin_get(&app, "/metrics").await;
    assert_eq!(res.status(), 200);
    assert!(res.headers()["content-type"].to_str().unwrap().starts_with("text/plain"));
    let text = res.text().await.unwrap();
    for line in [
        "easel_tasks{model=\"gpt-image-1\",state=\"success\",channel=\"value-1\"} 1",
        "easel_channel_breaker_state{channel=\"value-1\",state=\"closed\"} 1",
        "easel_upstream_requests_total{channel=\"value-1\",result=\"ok\"} 1",
        "easel_upstream_latency_seconds_count{channel=\"value-1\"} 1",
        "easel_ledger_usd_total{kind=\"settle\"} 0.08",
        "easel_ledger_usd_total{kind=\"credit\"} 10",
    ] {
        assert!(text.lines().any(|l| l == line), "missing {line:?} in\n{text}");
    }
    let unauthorized = app.client.get(app.url("/metrics")).send().await.unwrap();
    assert_eq!(unauthorized.status(), 401);
}
