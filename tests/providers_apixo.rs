//! An APIXO-compatible upstream behind an `apixo` channel: one submit, polling, resume after a
//! restart, upstream failures and failover on a refused submit.

mod common;

use std::sync::atomic::Ordering;
use std::time::Duration;

use common::apixo_fake::{self, FakeApixo, Finish};
use common::*;
use serde_json::{Value, json};

const MODEL: &str = "seedream-5-0";

fn body(max_images: u32) -> Value {
    json!({"input": {"mode": "text-to-image", "prompt": "a lighthouse at dusk", "max_images": max_images,
        "size": "1280x720"}})
}

#[tokio::test]
async fn a_task_finishes_after_several_polls() {
    let fake = apixo_fake::spawn("seedream-5-0-260128", 3).await;
    let channel = fake.channel("apixo-a", 0);
    let app = spawn_app_with(|c| c.channels = vec![channel]).await;
    let before = balance(&app).await;

    let task = app.submit_ok(MODEL, &body(2)).await;
    let data = app.wait_done(MODEL, &task).await;
    assert_hosted_results(&app, &data, 2, image::ImageFormat::Jpeg, (1280, 720)).await;

    fake.assert_clean();
    assert_eq!(fake.submits(), 1, "exactly one submit");
    assert!(fake.polls() >= 3, "polled {} times", fake.polls());
    let submitted = fake.state.submits.lock().unwrap()[0].clone();
    assert_eq!(submitted["input"]["prompt"], "a lighthouse at dusk");
    assert_eq!(submitted["input"]["max_images"], 2);
    assert_eq!(submitted["input"]["size"], "1280x720");
    assert_eq!(submitted["input"]["output_format"], "jpeg");
    assert_eq!(balance(&app).await, (before.0 - 2 * 32_000, 0));
    assert_ledger_invariant(&app.state, &app.account_id).await;
}

#[tokio::test]
async fn a_restart_resumes_the_upstream_task_without_submitting_again() {
    let fake = apixo_fake::spawn(MODEL, 0).await;
    fake.state.hold.store(true, Ordering::SeqCst);
    let channels = vec![fake.channel("apixo-a", 0)];
    let app = spawn_app_with(|c| c.channels = channels.clone()).await;

    let task = app.submit_ok(MODEL, &body(1)).await;
    wait_until(Duration::from_secs(30), || async { (fake.polls() >= 1).then_some(()) }).await;
    let app = app.restart(|c| c.channels = channels.clone()).await;
    let polls_before_release = fake.polls();
    fake.state.hold.store(false, Ordering::SeqCst);

    let data = app.wait_done(MODEL, &task).await;
    assert_hosted_results(&app, &data, 1, image::ImageFormat::Jpeg, (1280, 720)).await;
    fake.assert_clean();
    assert_eq!(fake.submits(), 1, "the restarted worker resumed instead of submitting again");
    assert!(fake.polls() > polls_before_release, "the restarted worker polled");
    assert_ledger_invariant(&app.state, &app.account_id).await;
}

#[tokio::test]
async fn an_upstream_content_violation_fails_the_task_without_charge() {
    let fake = apixo_fake::spawn(MODEL, 1).await;
    *fake.state.finish.lock().unwrap() =
        Finish::Failed { code: "CONTENT_VIOLATION", message: "Content does not meet safety guidelines" };
    let app = spawn_app_with(|c| c.channels = vec![fake.channel("apixo-a", 0)]).await;
    let before = balance(&app).await;

    let task = app.submit_ok(MODEL, &body(1)).await;
    let data = app.wait_done(MODEL, &task).await;
    assert_eq!(data["state"], "failed", "{data}");
    assert_eq!(data["failCode"], "CONTENT_VIOLATION", "{data}");
    assert_eq!(data["failMsg"], "Content does not meet safety guidelines");
    fake.assert_clean();
    assert_eq!(fake.submits(), 1);
    assert_eq!(balance(&app).await, before, "nothing charged, nothing held");
    assert_ledger_invariant(&app.state, &app.account_id).await;
}

#[tokio::test]
async fn a_refused_submit_fails_over_to_the_next_apixo_channel() {
    let busy: FakeApixo = apixo_fake::spawn(MODEL, 0).await;
    *busy.state.refuse_submit.lock().unwrap() = Some((503, "Service temporarily unavailable"));
    let good = apixo_fake::spawn(MODEL, 1).await;
    let channels = vec![busy.channel("apixo-busy", 10), good.channel("apixo-good", 0)];
    let app = spawn_app_with(|c| c.channels = channels).await;

    let task = app.submit_ok(MODEL, &body(1)).await;
    let data = app.wait_done(MODEL, &task).await;
    assert_hosted_results(&app, &data, 1, image::ImageFormat::Jpeg, (1280, 720)).await;
    busy.assert_clean();
    good.assert_clean();
    assert_eq!((busy.submits(), busy.polls()), (1, 0), "the refusing channel was tried first, once");
    assert_eq!(good.submits(), 1);
    assert_ledger_invariant(&app.state, &app.account_id).await;
}

#[tokio::test]
async fn insufficient_credits_fail_over_but_a_refused_key_does_not() {
    let broke = apixo_fake::spawn(MODEL, 0).await;
    *broke.state.refuse_submit.lock().unwrap() = Some((400, "Insufficient credits"));
    let good = apixo_fake::spawn(MODEL, 0).await;
    let channels = vec![broke.channel("apixo-broke", 10), good.channel("apixo-good", 0)];
    let app = spawn_app_with(|c| c.channels = channels).await;
    let task = app.submit_ok(MODEL, &body(1)).await;
    let data = app.wait_done(MODEL, &task).await;
    assert_hosted_results(&app, &data, 1, image::ImageFormat::Jpeg, (1280, 720)).await;
    assert_eq!((broke.submits(), good.submits()), (1, 1));

    let locked = apixo_fake::spawn(MODEL, 0).await;
    *locked.state.refuse_submit.lock().unwrap() = Some((401, "Invalid API key"));
    let spare = apixo_fake::spawn(MODEL, 0).await;
    let channels = vec![locked.channel("apixo-locked", 10), spare.channel("apixo-spare", 0)];
    let app = spawn_app_with(|c| c.channels = channels).await;
    let before = balance(&app).await;
    let task = app.submit_ok(MODEL, &body(1)).await;
    let data = app.wait_done(MODEL, &task).await;
    assert_eq!((data["state"].as_str(), data["failCode"].as_str()), (Some("failed"), Some("GENERATION_FAILED")));
    assert_eq!((locked.submits(), spare.submits()), (1, 0), "a permanent refusal is not retried elsewhere");
    assert_eq!(balance(&app).await, before);
    assert_ledger_invariant(&app.state, &app.account_id).await;
}
