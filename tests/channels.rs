//! The operator's hold on channels: switching one off and on at run time (persisted, on every
//! node), and testing one with its cheapest request, on every kind of channel, without a task
//! or a charge.

mod common;

use std::time::Duration;

use common::fakes::*;
use common::*;
use easel::Config;
use easel::config::{ChannelConfig, LocalOptions, ProviderKind, Tier};
use reqwest::Method;
use serde_json::{Value, json};

const TOKEN: &str = "channel-ops";
const START_MICROS: i64 = 10_000_000;

fn local(id: &str, priority: i32, models: &[&str]) -> ChannelConfig {
    ChannelConfig {
        priority,
        local: Some(LocalOptions { latency_ms: 0 }),
        models: models.iter().map(|m| (m.to_string(), m.to_string())).collect(),
        ..ChannelConfig::new(id, ProviderKind::Local, Tier::Official)
    }
}

async fn admin(app: &TestApp, method: Method, path: &str, body: Option<Value>) -> (u16, Value) {
    let mut req = app.client.request(method, app.url(&format!("/admin/v1{path}"))).bearer_auth(TOKEN);
    if let Some(body) = body {
        req = req.json(&body);
    }
    let res = req.send().await.unwrap();
    (res.status().as_u16(), res.json().await.unwrap())
}

async fn switch(app: &TestApp, channel: &str, enabled: bool) -> Value {
    let (status, body) =
        admin(app, Method::PUT, &format!("/channels/{channel}"), Some(json!({"enabled": enabled}))).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!((body["code"].as_u64(), body["message"].as_str()), (Some(200), Some("success")), "{body}");
    body["data"].clone()
}

/// The channel as `GET /admin/v1/channels` shows it.
async fn channel_status(app: &TestApp, channel: &str) -> Value {
    let (status, body) = admin(app, Method::GET, "/channels", None).await;
    assert_eq!(status, 200, "{body}");
    body["data"].as_array().unwrap().iter().find(|c| c["id"] == channel).expect("the channel is listed").clone()
}

/// The channels a task was tried on, from its view.
async fn tried_on(app: &TestApp, task: &str) -> Vec<String> {
    let view = app.task_view(task).await;
    view["channelAttempts"].as_array().unwrap().iter().map(|a| a["channel"].as_str().unwrap().to_owned()).collect()
}

async fn balance(app: &TestApp) -> (i64, i64) {
    let account = app.state.accounts.find("default").await.unwrap();
    (account.balance.0, account.held.0)
}

fn two_locals(c: &mut Config) {
    c.admin_token = Some(TOKEN.into());
    c.channels = vec![local("first", 10, &["gpt-image-1"]), local("second", 0, &["gpt-image-1"])];
}

#[tokio::test]
async fn a_switched_off_channel_gets_no_tasks_until_it_is_switched_on() {
    let app = spawn_app_with(two_locals).await;
    assert_eq!(channel_status(&app, "first").await["enabled"], true);
    let task = app.submit_ok("gpt-image-1", &gpt_t2i(1)).await;
    app.wait_done("gpt-image-1", &task).await;
    assert_eq!(tried_on(&app, &task).await, ["first"], "priority first while it is on");

    let off = switch(&app, "first", false).await;
    assert_eq!((off["id"].as_str(), off["enabled"].as_bool()), (Some("first"), Some(false)), "{off}");
    assert_eq!(channel_status(&app, "first").await["enabled"], false);
    for _ in 0..3 {
        let task = app.submit_ok("gpt-image-1", &gpt_t2i(1)).await;
        assert_eq!(app.wait_done("gpt-image-1", &task).await["state"], "success");
        assert_eq!(tried_on(&app, &task).await, ["second"]);
    }

    let on = switch(&app, "first", true).await;
    assert_eq!(on["enabled"], true);
    let task = app.submit_ok("gpt-image-1", &gpt_t2i(1)).await;
    app.wait_done("gpt-image-1", &task).await;
    assert_eq!(tried_on(&app, &task).await, ["first"]);
    assert_ledger_invariant(&app.state, "default").await;
}

#[tokio::test]
async fn tasks_whose_only_channel_is_off_wait_and_run_once_it_is_on() {
    let app = spawn_app_with(|c| {
        c.admin_token = Some(TOKEN.into());
        c.channels = vec![local("gpt-only", 0, &["gpt-image-1"]), local("seedream-only", 0, &["seedream-5-0"])];
    })
    .await;
    switch(&app, "gpt-only", false).await;
    let waiting = app.submit_ok("gpt-image-1", &gpt_t2i(1)).await;
    // A later task of another model runs: the workers went past the waiting one.
    let later = app.submit_ok("seedream-5-0", &seedream_t2i(1)).await;
    assert_eq!(app.wait_done("seedream-5-0", &later).await["state"], "success");
    let view = app.task_view(&waiting).await;
    assert_eq!(view["state"], "pending", "{view}");
    assert!(tried_on(&app, &waiting).await.is_empty());
    let (_, held) = balance(&app).await;
    assert_eq!(held, 40_000, "the waiting task keeps its hold");

    switch(&app, "gpt-only", true).await;
    let done = app.wait_done("gpt-image-1", &waiting).await;
    assert_eq!(done["state"], "success", "{done}");
    assert_eq!(tried_on(&app, &waiting).await, ["gpt-only"]);
    assert_ledger_invariant(&app.state, "default").await;
}

#[tokio::test]
async fn a_waiting_task_still_times_out() {
    let app = spawn_app_with(|c| {
        c.admin_token = Some(TOKEN.into());
        c.server.task_timeout_secs = 1;
        c.channels = vec![local("only", 0, &["gpt-image-1"])];
    })
    .await;
    switch(&app, "only", false).await;
    let task = app.submit_ok("gpt-image-1", &gpt_t2i(1)).await;
    let done = app.wait_done("gpt-image-1", &task).await;
    assert_eq!((done["state"].as_str(), done["failCode"].as_str()), (Some("failed"), Some("TIMEOUT")), "{done}");
    assert_eq!(balance(&app).await, (START_MICROS, 0), "the hold is released");
    assert_ledger_invariant(&app.state, "default").await;
}

#[tokio::test]
async fn a_switch_survives_a_restart() {
    let app = spawn_app_with(two_locals).await;
    switch(&app, "first", false).await;
    let app = app.restart(two_locals).await;
    assert_eq!(channel_status(&app, "first").await["enabled"], false);
    assert_eq!(channel_status(&app, "second").await["enabled"], true);
    let task = app.submit_ok("gpt-image-1", &gpt_t2i(1)).await;
    app.wait_done("gpt-image-1", &task).await;
    assert_eq!(tried_on(&app, &task).await, ["second"]);

    switch(&app, "first", true).await;
    let app = app.restart(two_locals).await;
    assert_eq!(channel_status(&app, "first").await["enabled"], true);
}

#[tokio::test]
async fn every_node_learns_of_a_switch() {
    let first = spawn_app_with(two_locals).await;
    let Some(second) = spawn_node(&first, two_locals).await else {
        eprintln!("skipping every_node_learns_of_a_switch: several nodes need PostgreSQL");
        return;
    };
    switch(&first, "first", false).await;
    wait_until(Duration::from_secs(10), || async {
        (channel_status(&second, "first").await["enabled"] == false).then_some(())
    })
    .await;
    switch(&first, "first", true).await;
    wait_until(Duration::from_secs(10), || async {
        (channel_status(&second, "first").await["enabled"] == true).then_some(())
    })
    .await;
}

#[tokio::test]
async fn unknown_channels_are_404_and_bad_bodies_400() {
    let app = spawn_app_with(two_locals).await;
    let (status, body) = admin(&app, Method::PUT, "/channels/nope", Some(json!({"enabled": false}))).await;
    assert_eq!((status, body["code"].as_u64()), (404, Some(404)), "{body}");
    assert_eq!(body["message"], "channel nope not found");
    let (status, body) = admin(&app, Method::POST, "/channels/nope/test", None).await;
    assert_eq!((status, body["code"].as_u64()), (404, Some(404)), "{body}");
    for bad in [json!({}), json!({"enabled": "no"}), json!({"enabled": 0}), json!({"enabled": null}), json!([true])] {
        let (status, body) = admin(&app, Method::PUT, "/channels/first", Some(bad.clone())).await;
        assert_eq!((status, body["code"].as_u64()), (400, Some(400)), "{bad}: {body}");
    }
    let res = app.client.put(app.url("/admin/v1/channels/first")).bearer_auth(TOKEN).body("enabled").send().await;
    assert_eq!(res.unwrap().status(), 400);
    let res = app.client.put(app.url("/admin/v1/channels/first")).json(&json!({"enabled": false})).send().await;
    assert_eq!(res.unwrap().status(), 401, "the admin token is required");
    assert_eq!(channel_status(&app, "first").await["enabled"], true, "nothing was switched");
}

// --- Channel tests ------------------------------------------------------------------------------

/// Tests a channel and returns the answer's `data`, checking that no task was made and nothing
/// was billed.
async fn test_channel(app: &TestApp, channel: &str) -> Value {
    let before = balance(app).await;
    let (status, body) = admin(app, Method::POST, &format!("/channels/{channel}/test"), None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!((body["code"].as_u64(), body["message"].as_str()), (Some(200), Some("success")), "{body}");
    let data = body["data"].clone();
    assert_eq!(data["channelId"], channel, "{data}");
    assert!(data["latencyMs"].is_u64() && data["images"].is_u64() && data["ok"].is_boolean(), "{data}");
    assert_eq!(balance(app).await, before, "a test bills nobody");
    assert_ledger_invariant(&app.state, "default").await;
    let (_, tasks) = app.get_json("/api/v1/tasks").await;
    assert_eq!(tasks["data"]["tasks"].as_array().map(Vec::len), Some(0), "a test makes no task: {tasks}");
    assert_eq!(channel_status(app, channel).await["lastTest"], data, "kept on the channel");
    data
}

fn admin_with(channels: Vec<ChannelConfig>) -> impl FnOnce(&mut Config) {
    move |c| {
        c.admin_token = Some(TOKEN.into());
        c.channels = channels;
    }
}

#[tokio::test]
async fn the_default_local_channel_is_tested_with_the_cheapest_request() {
    let app = spawn_app_with(|c| c.admin_token = Some(TOKEN.into())).await;
    assert!(channel_status(&app, "local").await["lastTest"].is_null());
    let data = test_channel(&app, "local").await;
    // GPT Image 1 Mini at low quality and 1024x1024 is the catalog's cheapest image ($0.005).
    assert_eq!(
        (data["ok"].as_bool(), data["model"].as_str(), data["images"].as_u64()),
        (Some(true), Some("gpt-image-1-mini"), Some(1))
    );
    assert!(data.get("message").is_none(), "{data}");
    let status = channel_status(&app, "local").await;
    assert_eq!((status["successes"].as_u64(), status["breaker"].as_str()), (Some(1), Some("closed")));
    assert_eq!(balance(&app).await, (START_MICROS, 0));
}

#[tokio::test]
async fn a_switched_off_channel_can_still_be_tested() {
    let app = spawn_app_with(two_locals).await;
    switch(&app, "first", false).await;
    let data = test_channel(&app, "first").await;
    assert_eq!((data["ok"].as_bool(), data["model"].as_str()), (Some(true), Some("gpt-image-1")));
    assert_eq!(channel_status(&app, "first").await["enabled"], false, "a test switches nothing");
}

#[tokio::test]
async fn a_test_that_takes_too_long_fails_as_a_timeout() {
    let app = spawn_app_with(|c| {
        c.admin_token = Some(TOKEN.into());
        c.server.task_timeout_secs = 1;
        let mut slow = local("slow", 0, &["gpt-image-1"]);
        slow.local = Some(LocalOptions { latency_ms: 600_000 });
        c.channels = vec![slow];
    })
    .await;
    let data = test_channel(&app, "slow").await;
    assert_eq!((data["ok"].as_bool(), data["images"].as_u64()), (Some(false), Some(0)), "{data}");
    assert_eq!(data["message"], "the channel did not answer within 1 seconds");
    let status = channel_status(&app, "slow").await;
    assert_eq!((status["failures"].as_u64(), status["inFlight"].as_u64()), (Some(1), Some(0)), "{status}");
}

/// An Ark answer with one image at the requested size, hosted on the fake.
fn ark_image(seen: &Seen, index: usize, host: &Host) -> Reply {
    let body = seen.json.as_ref().unwrap();
    let size = body["size"].as_str().unwrap();
    let (w, h) = wxh(size);
    let url = host.host(&format!("t{index}.png"), encoded(w, h, [30, 120, 200], image::ImageFormat::Png));
    Reply::ok(json!({"model": body["model"], "created": 1_767_000_000, "data": [{"url": url, "size": size}],
        "usage": {"generated_images": 1, "output_tokens": 16384, "total_tokens": 16384}}))
}

#[tokio::test]
async fn an_ark_channel_is_tested_with_one_small_image() {
    let fake = Fake::start(Wire::Ark, ark_image).await;
    let ark = channel("ark", ProviderKind::Ark, &fake.base_url, &[("seedream-5-0", "seedream-5-0-260128")]);
    let app = spawn_app_with(admin_with(vec![ark])).await;
    let data = test_channel(&app, "ark").await;
    assert_eq!(
        (data["ok"].as_bool(), data["model"].as_str(), data["images"].as_u64()),
        (Some(true), Some("seedream-5-0"), Some(1)),
        "{data}"
    );
    let seen = fake.seen_ok();
    assert_eq!(seen.len(), 1);
    let request = seen[0].json.as_ref().unwrap();
    assert_eq!(request["model"], "seedream-5-0-260128");
    assert_eq!(request["size"], "1280x720", "the model's smallest size");
    assert_eq!(request["sequential_image_generation"], "disabled");
    assert!(request.get("image").is_none(), "no references: {request}");
}

#[tokio::test]
async fn a_failing_upstream_is_reported_with_its_message_and_counts_against_the_channel() {
    let fake = Fake::start(Wire::Ark, |_, _, _| {
        Reply::status(503, json!({"error": {"code": "ServerOverloaded", "message": "the upstream is melting"}}))
    })
    .await;
    let ark = channel("ark", ProviderKind::Ark, &fake.base_url, &[("seedream-5-0", "seedream-5-0-260128")]);
    let app = spawn_app_with(|c| {
        admin_with(vec![ark])(c);
        c.server.breaker_failures = 1;
        c.server.breaker_cooldown_secs = 3600;
    })
    .await;
    let data = test_channel(&app, "ark").await;
    assert_eq!((data["ok"].as_bool(), data["images"].as_u64()), (Some(false), Some(0)), "{data}");
    assert!(data["message"].as_str().unwrap().contains("the upstream is melting"), "{data}");
    let status = channel_status(&app, "ark").await;
    assert_eq!((status["failures"].as_u64(), status["breaker"].as_str()), (Some(1), Some("open")), "{status}");
}

#[tokio::test]
async fn a_successful_test_closes_the_breaker() {
    let healthy = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = healthy.clone();
    let fake = Fake::start(Wire::OpenAi, move |seen, _, _| {
        if flag.load(std::sync::atomic::Ordering::SeqCst) {
            Reply::ok(openai_images(seen))
        } else {
            Reply::status(
                503,
                json!({"error": {"message": "overloaded", "type": "server_error", "param": null, "code": null}}),
            )
        }
    })
    .await;
    let openai = channel("openai", ProviderKind::Openai, &fake.base_url, &[("gpt-image-1", "gpt-image-1")]);
    let app = spawn_app_with(|c| {
        admin_with(vec![openai])(c);
        c.server.breaker_failures = 1;
        c.server.breaker_cooldown_secs = 3600;
    })
    .await;
    assert_eq!(test_channel(&app, "openai").await["ok"], false);
    assert_eq!(channel_status(&app, "openai").await["breaker"], "open");
    healthy.store(true, std::sync::atomic::Ordering::SeqCst);
    // The breaker is open, yet the operator's test goes through, and its success closes it.
    assert_eq!(test_channel(&app, "openai").await["ok"], true);
    assert_eq!(channel_status(&app, "openai").await["breaker"], "closed");
    let task = app.submit_ok("gpt-image-1", &gpt_t2i(1)).await;
    assert_eq!(app.wait_done("gpt-image-1", &task).await["state"], "success");
}

#[tokio::test]
async fn an_openai_channel_is_tested_with_its_cheapest_model_at_low_quality() {
    let fake = Fake::start(Wire::OpenAi, |seen, _, _| Reply::ok(openai_images(seen))).await;
    let models = [("gpt-image-1", "gpt-image-1"), ("gpt-image-1-mini", "gpt-image-1-mini")];
    let app = spawn_app_with(admin_with(vec![channel("openai", ProviderKind::Openai, &fake.base_url, &models)])).await;
    let data = test_channel(&app, "openai").await;
    assert_eq!(
        (data["ok"].as_bool(), data["model"].as_str(), data["images"].as_u64()),
        (Some(true), Some("gpt-image-1-mini"), Some(1)),
        "{data}"
    );
    let seen = fake.seen_ok();
    assert_eq!(seen.len(), 1);
    let request = seen[0].json.as_ref().unwrap();
    assert_eq!(seen[0].path, "/v1/images/generations");
    assert_eq!((request["model"].as_str(), request["n"].as_u64()), (Some("gpt-image-1-mini"), Some(1)));
    assert_eq!((request["size"].as_str(), request["quality"].as_str()), (Some("1024x1024"), Some("low")), "{request}");
}

#[tokio::test]
async fn an_openai_channel_with_a_bad_key_reports_the_upstreams_message() {
    let fake = Fake::start(Wire::OpenAi, |_, _, _| {
        Reply::status(
            401,
            json!({"error": {"message": "Incorrect API key provided", "type": "invalid_request_error",
            "param": null, "code": "invalid_api_key"}}),
        )
    })
    .await;
    let models = [("gpt-image-1", "gpt-image-1")];
    let app = spawn_app_with(admin_with(vec![channel("openai", ProviderKind::Openai, &fake.base_url, &models)])).await;
    let data = test_channel(&app, "openai").await;
    assert_eq!(data["ok"], false, "{data}");
    assert!(data["message"].as_str().unwrap().contains("Incorrect API key provided"), "{data}");
    // Not the upstream's fault as far as the breaker goes: it answered.
    let status = channel_status(&app, "openai").await;
    assert_eq!((status["failures"].as_u64(), status["breaker"].as_str()), (Some(0), Some("closed")), "{status}");
}

#[tokio::test]
async fn an_apixo_channel_is_tested_through_a_whole_upstream_task() {
    let fake = apixo_fake::spawn("seedream-5-0", 1).await;
    let app = spawn_app_with(admin_with(vec![fake.channel("reseller", 0)])).await;
    let data = test_channel(&app, "reseller").await;
    assert_eq!(
        (data["ok"].as_bool(), data["model"].as_str(), data["images"].as_u64()),
        (Some(true), Some("seedream-5-0"), Some(1)),
        "{data}"
    );
    fake.assert_clean();
    let submits = fake.state.submits.lock().unwrap().clone();
    assert_eq!(submits.len(), 1);
    assert_eq!(submits[0]["input"]["max_images"], 1);
    assert_eq!(submits[0]["input"]["size"], "1280x720");
    assert!(submits[0]["input"].get("image_urls").is_none());
}

#[tokio::test]
async fn a_failing_apixo_upstream_is_reported_with_its_message() {
    let fake = apixo_fake::spawn("seedream-5-0", 0).await;
    *fake.state.finish.lock().unwrap() =
        apixo_fake::Finish::Failed { code: "GENERATION_FAILED", message: "the reseller's GPU caught fire" };
    let app = spawn_app_with(admin_with(vec![fake.channel("reseller", 0)])).await;
    let data = test_channel(&app, "reseller").await;
    assert_eq!((data["ok"].as_bool(), data["images"].as_u64()), (Some(false), Some(0)), "{data}");
    assert!(data["message"].as_str().unwrap().contains("the reseller's GPU caught fire"), "{data}");

    *fake.state.refuse_submit.lock().unwrap() = Some((500, "reseller down for maintenance"));
    let data = test_channel(&app, "reseller").await;
    assert_eq!(data["ok"], false, "{data}");
    assert!(data["message"].as_str().unwrap().contains("reseller down for maintenance"), "{data}");
    assert_eq!(channel_status(&app, "reseller").await["failures"], 1, "the 500 counts, the verdict does not");
}
