//! Replicate behind a `replicate` channel: one create, polling, a waited-for create that needs
//! no poll, results re-hosted and charged per image, resume after a restart, cancel reaching
//! Replicate, NSFW refusals, and failover on a throttled create but not on a refused token.

mod common;

use std::sync::atomic::Ordering;
use std::time::Duration;

use common::replicate_fake::{self, FakeReplicate, Finish, MODEL, PINNED};
use common::*;
use easel::config::ChannelConfig;
use serde_json::{Value, json};

/// The fake models' price per image, in micro-dollars.
const PRICE: i64 = 10_000;

fn body(images: u32) -> Value {
    json!({"input": {"prompt": "a harbour at noon", "size": "1344x768", "num_images": images, "seed": 11,
        "negative_prompt": "fog", "output_format": "webp"}})
}

async fn app_with(channels: Vec<ChannelConfig>) -> TestApp {
    spawn_app_with(|c| adjust(c, channels)).await
}

fn adjust(c: &mut easel::Config, channels: Vec<ChannelConfig>) {
    c.server.allow_private_network = true;
    c.models.insert(MODEL.into(), replicate_fake::model_entry());
    c.models.insert(PINNED.into(), replicate_fake::model_entry());
    c.channels = channels;
}

#[tokio::test]
async fn a_prediction_is_polled_to_its_end_and_charged_per_image() {
    let fake = replicate_fake::spawn().await;
    fake.state.processing_polls.store(2, Ordering::SeqCst);
    let refs = spawn_reference_server().await;
    let app = app_with(vec![fake.channel("rep-a", 0, 0)]).await;
    let before = balance(&app).await;

    let mut request = body(2);
    request["input"]["image_urls"] = json!([format!("http://{refs}/blue.jpg")]);
    let task = app.submit_ok(MODEL, &request).await;
    let data = app.wait_done(MODEL, &task).await;
    assert_hosted_results(&app, &data, 2, image::ImageFormat::WebP, (1344, 768)).await;

    fake.assert_clean();
    let creates = fake.creates();
    assert_eq!(creates.len(), 1, "exactly one create");
    assert_eq!(creates[0].path, "/v1/models/black-forest-labs/flux-schnell/predictions");
    assert_eq!(creates[0].prefer, None, "wait_secs 0 sends no Prefer");
    assert!(fake.polls() >= 4, "starting, processing twice, succeeded: {}", fake.polls());
    let input = &creates[0].body["input"];
    assert_eq!(input["prompt"], "a harbour at noon");
    assert_eq!((input["width"].as_u64(), input["height"].as_u64()), (Some(1344), Some(768)));
    assert_eq!(input.get("aspect_ratio"), None, "7:4 is no ratio Replicate names: {input}");
    assert_eq!((input["num_outputs"].as_u64(), input["seed"].as_u64()), (Some(2), Some(11)));
    assert_eq!((input["output_format"].as_str(), input["negative_prompt"].as_str()), (Some("webp"), Some("fog")));
    assert!(input["image"].as_str().unwrap().starts_with("data:image/jpeg;base64,"), "{input}");
    assert_eq!(balance(&app).await, (before.0 - 2 * PRICE, 0));
    assert_ledger_invariant(&app.state, &app.account_id).await;
}

#[tokio::test]
async fn a_pinned_version_that_finishes_within_the_wait_is_not_polled() {
    let fake = replicate_fake::spawn().await;
    fake.state.instant.store(true, Ordering::SeqCst);
    let app = app_with(vec![fake.channel("rep-a", 0, 5)]).await;
    let before = balance(&app).await;

    let mut request = body(1);
    request["input"]["size"] = json!("1024x1024");
    request["input"]["output_format"] = json!("jpeg");
    let task = app.submit_ok(PINNED, &request).await;
    let data = app.wait_done(PINNED, &task).await;
    let urls = result_urls(&data);
    assert_eq!(urls.len(), 1);
    let (format, _) = download(&app.client, &urls[0]).await;
    assert_eq!(format, image::ImageFormat::Jpeg);

    fake.assert_clean();
    let creates = fake.creates();
    assert_eq!(creates.len(), 1);
    assert_eq!(creates[0].path, "/v1/predictions");
    assert_eq!(creates[0].body["version"], replicate_fake::VERSION);
    assert_eq!(creates[0].prefer.as_deref(), Some("wait=5"));
    assert_eq!(creates[0].body["input"]["aspect_ratio"], "1:1");
    assert_eq!(creates[0].body["input"]["output_format"], "jpg");
    assert_eq!(fake.polls(), 0, "the create's answer was already final");
    assert_eq!(balance(&app).await, (before.0 - PRICE, 0));
    assert_ledger_invariant(&app.state, &app.account_id).await;
}

#[tokio::test]
async fn a_restart_resumes_the_prediction_without_creating_again() {
    let fake = replicate_fake::spawn().await;
    fake.state.hold.store(true, Ordering::SeqCst);
    let channels = vec![fake.channel("rep-a", 0, 0)];
    let app = app_with(channels.clone()).await;

    let task = app.submit_ok(MODEL, &body(1)).await;
    wait_until(Duration::from_secs(30), || async { (fake.polls() >= 2).then_some(()) }).await;
    let app = app.restart(|c| adjust(c, channels.clone())).await;
    let polls_before_release = fake.polls();
    fake.state.hold.store(false, Ordering::SeqCst);

    let data = app.wait_done(MODEL, &task).await;
    assert_hosted_results(&app, &data, 1, image::ImageFormat::WebP, (1344, 768)).await;
    fake.assert_clean();
    assert_eq!(fake.creates().len(), 1, "the restarted worker resumed instead of creating again");
    assert!(fake.polls() > polls_before_release, "the restarted worker polled");
    assert_ledger_invariant(&app.state, &app.account_id).await;
}

#[tokio::test]
async fn cancelling_a_running_task_cancels_the_prediction() {
    let fake = replicate_fake::spawn().await;
    fake.state.hold.store(true, Ordering::SeqCst);
    let app = app_with(vec![fake.channel("rep-a", 0, 0)]).await;
    let before = balance(&app).await;

    let task = app.submit_ok(MODEL, &body(1)).await;
    wait_until(Duration::from_secs(30), || async { (fake.polls() >= 2).then_some(()) }).await;
    let (status, answer) = app.post_json(&format!("/api/v1/tasks/{task}/cancel"), &[], &json!({})).await;
    assert_eq!(status, 200, "{answer}");

    let cancels = wait_until(Duration::from_secs(30), || async {
        let c = fake.cancels();
        (!c.is_empty()).then_some(c)
    })
    .await;
    assert_eq!(cancels, ["fakepred1"], "the recorded prediction is the one cancelled");
    let view = app.wait_for_state(&task, "cancelled").await;
    assert_eq!(view["chargedUsd"], 0.0, "{view}");
    fake.assert_clean();
    assert_eq!(balance(&app).await, before, "nothing charged, nothing held");
    assert_ledger_invariant(&app.state, &app.account_id).await;
}

#[tokio::test]
async fn an_nsfw_failure_is_a_content_violation_and_other_failures_are_not() {
    for (finish, code) in
        [(Finish::Nsfw, "CONTENT_VIOLATION"), (Finish::Failed("CUDA out of memory"), "GENERATION_FAILED")]
    {
        let fake = replicate_fake::spawn().await;
        *fake.state.finish.lock().unwrap() = finish;
        let app = app_with(vec![fake.channel("rep-a", 0, 0)]).await;
        let before = balance(&app).await;
        let task = app.submit_ok(MODEL, &body(1)).await;
        let data = app.wait_done(MODEL, &task).await;
        assert_eq!((data["state"].as_str(), data["failCode"].as_str()), (Some("failed"), Some(code)), "{data}");
        fake.assert_clean();
        assert_eq!(fake.creates().len(), 1);
        assert_eq!(balance(&app).await, before, "nothing charged, nothing held");
        assert_ledger_invariant(&app.state, &app.account_id).await;
    }
}

#[tokio::test]
async fn a_throttled_or_unpaid_create_fails_over_but_a_refused_token_is_final() {
    let refusals = [
        (429, Some("4"), "Request was throttled.", "Your rate limit resets in ~4s."),
        // Another channel's account may still have credit.
        (402, None, "Insufficient credit", "You have insufficient credit to run this model."),
    ];
    for refusal in refusals {
        let busy: FakeReplicate = replicate_fake::spawn().await;
        *busy.state.refuse_create.lock().unwrap() = Some(refusal);
        let good = replicate_fake::spawn().await;
        let app = app_with(vec![busy.channel("rep-busy", 10, 0), good.channel("rep-good", 0, 0)]).await;
        let task = app.submit_ok(MODEL, &body(1)).await;
        let data = app.wait_done(MODEL, &task).await;
        assert_hosted_results(&app, &data, 1, image::ImageFormat::WebP, (1344, 768)).await;
        busy.assert_clean();
        good.assert_clean();
        assert_eq!((busy.creates().len(), busy.polls(), good.creates().len()), (1, 0, 1));
        let attempts = app.task_view(&task).await["channelAttempts"].clone();
        let first = (attempts[0]["channel"].as_str(), attempts[0]["outcome"].as_str());
        assert_eq!(first, (Some("rep-busy"), Some("retryable")), "{attempts}");
        assert!(attempts[0]["message"].as_str().unwrap().contains(refusal.2), "{attempts}");
        let second = (attempts[1]["channel"].as_str(), attempts[1]["outcome"].as_str());
        assert_eq!(second, (Some("rep-good"), Some("success")), "{attempts}");
    }

    let locked = replicate_fake::spawn().await;
    *locked.state.refuse_create.lock().unwrap() = Some((401, None, "Unauthenticated", "Invalid token."));
    let spare = replicate_fake::spawn().await;
    let app = app_with(vec![locked.channel("rep-locked", 10, 0), spare.channel("rep-spare", 0, 0)]).await;
    let before = balance(&app).await;
    let task = app.submit_ok(MODEL, &body(1)).await;
    let data = app.wait_done(MODEL, &task).await;
    assert_eq!((data["state"].as_str(), data["failCode"].as_str()), (Some("failed"), Some("GENERATION_FAILED")));
    assert_eq!((locked.creates().len(), spare.creates().len()), (1, 0), "a refused token is not retried elsewhere");
    assert_eq!(balance(&app).await, before);
    assert_ledger_invariant(&app.state, &app.account_id).await;
}

#[tokio::test]
async fn the_channel_test_runs_one_prediction_and_bills_nobody() {
    let fake = replicate_fake::spawn().await;
    let app = spawn_app_with(|c| {
        adjust(c, vec![fake.channel("rep-a", 0, 0)]);
        c.admin_token = Some("rep-ops".into());
    })
    .await;
    let before = balance(&app).await;
    let test = test_channel(&app, "rep-ops", "rep-a").await;
    assert_eq!((test["ok"].as_bool(), test["images"].as_u64()), (Some(true), Some(1)), "{test}");
    fake.assert_clean();
    assert_eq!(fake.creates().len(), 1);
    assert_eq!(balance(&app).await, before, "a test bills nobody");
}
