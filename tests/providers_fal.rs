//! fal's queue behind a `fal` channel: one submit, polling through the queue, results re-hosted
//! and charged per delivered image, resume after a restart, cancel reaching fal, safety
//! refusals, and failover on a throttled submit but not on a refused key.

mod common;

use std::sync::atomic::Ordering;
use std::time::Duration;

use common::fal_fake::{self, FakeFal, Finish, MODEL};
use common::*;
use easel::config::ChannelConfig;
use serde_json::{Value, json};

/// `house-flux`'s price per image, in micro-dollars.
const PRICE: i64 = 10_000;

fn body(images: u32) -> Value {
    json!({"input": {"prompt": "a fox in the snow", "size": "1216x832", "num_images": images, "seed": 7,
        "negative_prompt": "blurry", "output_format": "png"}})
}

async fn app_with(channels: Vec<ChannelConfig>) -> TestApp {
    spawn_app_with(|c| {
        c.server.allow_private_network = true;
        c.models.insert(MODEL.into(), fal_fake::model_entry());
        c.channels = channels;
    })
    .await
}

#[tokio::test]
async fn a_task_goes_through_the_queue_and_is_charged_per_image() {
    let fake = fal_fake::spawn().await;
    fake.state.queued_polls.store(3, Ordering::SeqCst);
    let refs = spawn_reference_server().await;
    let app = app_with(vec![fake.channel("fal-a", 0)]).await;
    let before = balance(&app).await;

    let mut request = body(2);
    request["input"]["image_urls"] = json!([format!("http://{refs}/red.png")]);
    let task = app.submit_ok(MODEL, &request).await;
    let data = app.wait_done(MODEL, &task).await;
    assert_hosted_results(&app, &data, 2, image::ImageFormat::Png, (1216, 832)).await;

    fake.assert_clean();
    assert_eq!(fake.submits(), 1, "exactly one submit");
    assert!(fake.polls() >= 5, "three queued polls, one in progress, one completed: {}", fake.polls());
    assert_eq!(fake.state.results.load(Ordering::SeqCst), 1, "the result is fetched once");
    let sent = fake.state.submits.lock().unwrap()[0].clone();
    assert_eq!(sent["prompt"], "a fox in the snow");
    assert_eq!(sent["image_size"], json!({"width": 1216, "height": 832}));
    assert_eq!((sent["num_images"].as_u64(), sent["seed"].as_u64()), (Some(2), Some(7)));
    assert_eq!((sent["output_format"].as_str(), sent["negative_prompt"].as_str()), (Some("png"), Some("blurry")));
    assert!(sent["image_url"].as_str().unwrap().starts_with("data:image/png;base64,"), "{sent}");
    assert_eq!(balance(&app).await, (before.0 - 2 * PRICE, 0));
    assert_ledger_invariant(&app.state, &app.account_id).await;
}

#[tokio::test]
async fn a_blanked_image_is_left_out_and_not_charged() {
    let fake = fal_fake::spawn().await;
    *fake.state.finish.lock().unwrap() = Finish::Nsfw(1);
    let app = app_with(vec![fake.channel("fal-a", 0)]).await;
    let before = balance(&app).await;

    let task = app.submit_ok(MODEL, &body(2)).await;
    let data = app.wait_done(MODEL, &task).await;
    assert_hosted_results(&app, &data, 1, image::ImageFormat::Png, (1216, 832)).await;
    fake.assert_clean();
    assert_eq!(balance(&app).await, (before.0 - PRICE, 0), "one image delivered, one paid");
    assert_ledger_invariant(&app.state, &app.account_id).await;
}

#[tokio::test]
async fn a_restart_resumes_the_fal_request_without_submitting_again() {
    let fake = fal_fake::spawn().await;
    fake.state.hold.store(true, Ordering::SeqCst);
    let channels = vec![fake.channel("fal-a", 0)];
    let app = app_with(channels.clone()).await;

    let task = app.submit_ok(MODEL, &body(1)).await;
    // Past the queue: the request is running upstream.
    wait_until(Duration::from_secs(30), || async { (fake.polls() >= 2).then_some(()) }).await;
    let app = app
        .restart(|c| {
            c.models.insert(MODEL.into(), fal_fake::model_entry());
            c.channels = channels.clone();
        })
        .await;
    let polls_before_release = fake.polls();
    fake.state.hold.store(false, Ordering::SeqCst);

    let data = app.wait_done(MODEL, &task).await;
    assert_hosted_results(&app, &data, 1, image::ImageFormat::Png, (1216, 832)).await;
    fake.assert_clean();
    assert_eq!(fake.submits(), 1, "the restarted worker resumed instead of submitting again");
    assert!(fake.polls() > polls_before_release, "the restarted worker polled");
    assert_eq!(fake.state.results.load(Ordering::SeqCst), 1);
    assert_ledger_invariant(&app.state, &app.account_id).await;
}

#[tokio::test]
async fn cancelling_a_queued_task_cancels_the_fal_request() {
    let fake = fal_fake::spawn().await;
    fake.state.queued_polls.store(1_000_000, Ordering::SeqCst);
    let app = app_with(vec![fake.channel("fal-a", 0)]).await;
    let before = balance(&app).await;

    let task = app.submit_ok(MODEL, &body(1)).await;
    wait_until(Duration::from_secs(30), || async { (fake.polls() >= 1).then_some(()) }).await;
    let (status, answer) = app.post_json(&format!("/api/v1/tasks/{task}/cancel"), &[], &json!({})).await;
    assert_eq!(status, 200, "{answer}");

    let cancels = wait_until(Duration::from_secs(30), || async {
        let c = fake.cancels();
        (!c.is_empty()).then_some(c)
    })
    .await;
    assert_eq!(cancels, ["0196-fake-1"], "the recorded request is the one cancelled");
    let view = app.wait_for_state(&task, "cancelled").await;
    assert_eq!(view["chargedUsd"], 0.0, "{view}");
    fake.assert_clean();
    assert_eq!(fake.state.results.load(Ordering::SeqCst), 0);
    assert_eq!(balance(&app).await, before, "nothing charged, nothing held");
    assert_ledger_invariant(&app.state, &app.account_id).await;
}

#[tokio::test]
async fn a_content_policy_refusal_fails_the_task_without_charge() {
    let fake = fal_fake::spawn().await;
    *fake.state.finish.lock().unwrap() = Finish::PolicyViolation;
    let blanked = fal_fake::spawn().await;
    *blanked.state.finish.lock().unwrap() = Finish::Nsfw(1);
    for fake in [fake, blanked] {
        let app = app_with(vec![fake.channel("fal-a", 0)]).await;
        let before = balance(&app).await;
        let task = app.submit_ok(MODEL, &body(1)).await;
        let data = app.wait_done(MODEL, &task).await;
        assert_eq!((data["state"].as_str(), data["failCode"].as_str()), (Some("failed"), Some("CONTENT_VIOLATION")));
        fake.assert_clean();
        assert_eq!(fake.submits(), 1);
        assert_eq!(balance(&app).await, before, "nothing charged, nothing held");
        assert_ledger_invariant(&app.state, &app.account_id).await;
    }
}

#[tokio::test]
async fn a_throttled_submit_fails_over_but_a_refused_key_is_final() {
    let busy: FakeFal = fal_fake::spawn().await;
    *busy.state.refuse_submit.lock().unwrap() = Some((429, Some("3"), json!({"detail": "Too many requests"})));
    let good = fal_fake::spawn().await;
    let app = app_with(vec![busy.channel("fal-busy", 10), good.channel("fal-good", 0)]).await;
    let task = app.submit_ok(MODEL, &body(1)).await;
    let data = app.wait_done(MODEL, &task).await;
    assert_hosted_results(&app, &data, 1, image::ImageFormat::Png, (1216, 832)).await;
    busy.assert_clean();
    good.assert_clean();
    assert_eq!((busy.submits(), busy.polls(), good.submits()), (1, 0, 1));
    let attempts = app.task_view(&task).await["channelAttempts"].clone();
    assert_eq!(attempts[0]["channel"], "fal-busy", "{attempts}");
    assert_eq!(attempts[0]["outcome"], "retryable", "{attempts}");
    assert_eq!((attempts[1]["channel"].as_str(), attempts[1]["outcome"].as_str()), (Some("fal-good"), Some("success")));

    let locked = fal_fake::spawn().await;
    *locked.state.refuse_submit.lock().unwrap() = Some((401, None, json!({"detail": "Invalid Key"})));
    let spare = fal_fake::spawn().await;
    let app = app_with(vec![locked.channel("fal-locked", 10), spare.channel("fal-spare", 0)]).await;
    let before = balance(&app).await;
    let task = app.submit_ok(MODEL, &body(1)).await;
    let data = app.wait_done(MODEL, &task).await;
    assert_eq!((data["state"].as_str(), data["failCode"].as_str()), (Some("failed"), Some("GENERATION_FAILED")));
    assert_eq!((locked.submits(), spare.submits()), (1, 0), "a refused key is not retried elsewhere");
    assert_eq!(balance(&app).await, before);
    assert_ledger_invariant(&app.state, &app.account_id).await;
}

#[tokio::test]
async fn the_channel_test_runs_one_request_through_the_queue_and_bills_nobody() {
    let fake = fal_fake::spawn().await;
    let app = spawn_app_with(|c| {
        c.models.insert(MODEL.into(), fal_fake::model_entry());
        c.channels = vec![fake.channel("fal-a", 0)];
        c.admin_token = Some("fal-ops".into());
    })
    .await;
    let before = balance(&app).await;
    let test = test_channel(&app, "fal-ops", "fal-a").await;
    assert_eq!(
        (test["ok"].as_bool(), test["model"].as_str(), test["images"].as_u64()),
        (Some(true), Some(MODEL), Some(1))
    );
    fake.assert_clean();
    assert_eq!(fake.submits(), 1);
    let sent = fake.state.submits.lock().unwrap()[0].clone();
    assert_eq!(sent["image_size"], json!({"width": 256, "height": 256}), "the model's smallest size");
    assert_eq!(balance(&app).await, before, "a test bills nobody");
}
