//! Black Forest Labs behind a `bfl` channel: submit, poll the returned `polling_url`, download
//! the short-lived sample at once; resume after a restart without submitting again; moderation,
//! credit and validation failures. The fake checks BFL's wire format.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::fakes::*;
use common::*;
use easel::config::{ChannelConfig, PollOptions, ProviderKind};
use image::ImageFormat;
use serde_json::json;

/// How the fake's tasks end.
#[derive(Clone, Copy)]
enum End {
    Ready,
    Moderated,
}

/// A fake BFL: every submit becomes a task polled at `/v1/get_result?id=…`, `Pending` while
/// `hold` is set (and on the first poll), then `Ready` with a JPEG of the requested size.
async fn bfl(hold: Arc<AtomicBool>, end: End) -> Fake {
    Fake::start(Wire::Bfl, move |seen, index, host| {
        if seen.path != "/v1/get_result" {
            let id = format!("task-{index}");
            let body = seen.json.as_ref().unwrap();
            let (w, h) = match (body["width"].as_u64(), body["height"].as_u64()) {
                (Some(w), Some(h)) => (w as u32, h as u32),
                _ => (1024, 768),
            };
            host.host(&format!("{id}.jpeg"), encoded(w, h, [200, 120, 30], ImageFormat::Jpeg));
            let polling_url = format!("{}/v1/get_result?id={id}", host.origin());
            return Reply::ok(json!({"id": id, "polling_url": polling_url, "cost": 3.0}));
        }
        let id = seen.query.as_deref().unwrap().trim_start_matches("id=").to_owned();
        if hold.load(Ordering::SeqCst) {
            return Reply::ok(json!({"id": id, "status": "Pending", "progress": 0.3}));
        }
        match end {
            End::Ready => {
                let sample = format!("{}/files/{id}.jpeg", host.origin());
                Reply::ok(json!({"id": id, "status": "Ready", "result": {"sample": sample, "seed": 7}}))
            }
            End::Moderated => Reply::ok(json!({"id": id, "status": "Content Moderated", "result": null})),
        }
    })
    .await
}

fn bfl_channel(id: &str, fake: &Fake) -> ChannelConfig {
    ChannelConfig {
        polling: Some(PollOptions { first_poll_ms: 20, poll_interval_ms: 20 }),
        ..channel(id, ProviderKind::Bfl, &fake.base_url, &[])
    }
}

fn submits(fake: &Fake) -> Vec<Seen> {
    fake.seen_ok().into_iter().filter(|s| s.method == "POST").collect()
}

#[tokio::test]
async fn flux_2_takes_width_and_height_and_is_priced_by_megapixels() {
    let fake = bfl(Arc::new(AtomicBool::new(false)), End::Ready).await;
    let app = spawn_app_with(|c| c.channels = vec![bfl_channel("bfl", &fake)]).await;
    let before = balance(&app).await.0;
    let (status, body) = app
        .post_json(
            "/v1/images/generations",
            &[],
            &json!({"model": "flux-2-pro", "prompt": "a fjord", "size": "1536x1024", "response_format": "url"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let url = body["data"][0]["url"].as_str().unwrap();
    assert!(url.starts_with(&app.base), "re-hosted: {url}");
    let (format, img) = download(&app.client, url).await;
    assert_eq!((img.width(), img.height()), (1536, 1024));
    assert_eq!(format, ImageFormat::Jpeg, "the model's default format");

    let sent = submits(&fake);
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].path, "/v1/flux-2-pro");
    let request = sent[0].json.as_ref().unwrap();
    assert_eq!((request["width"].clone(), request["height"].clone()), (json!(1536), json!(1024)));
    assert_eq!(request["output_format"], "jpeg");
    assert!(request.get("aspect_ratio").is_none());
    assert_eq!(balance(&app).await.0, before - 75_000, "1.5 megapixels is the 4MP tier's $0.075");
    assert_ledger_invariant(&app.state, &app.account_id).await;
}

#[tokio::test]
async fn kontext_edits_a_reference_at_an_aspect_ratio_and_resumes_after_a_restart() {
    let hold = Arc::new(AtomicBool::new(true));
    let fake = bfl(hold.clone(), End::Ready).await;
    let channels = vec![bfl_channel("bfl", &fake)];
    let app = spawn_app_with(|c| {
        c.channels = channels.clone();
        c.server.allow_private_network = true;
    })
    .await;
    let refs = spawn_reference_server().await;
    let body = json!({"input": {"prompt": "make it night", "aspect_ratio": "16:9", "output_format": "jpeg",
        "image_urls": [format!("http://{refs}/red.png")]}});
    let task = app.submit_ok("flux-kontext-pro", &body).await;
    wait_until(Duration::from_secs(30), || async { (fake.seen().iter().any(|s| s.method == "GET")).then_some(()) })
        .await;
    let view = app.task_view(&task).await;
    assert_eq!(view["state"], "processing", "{view}");

    let app = app
        .restart(|c| {
            c.channels = channels.clone();
            c.server.allow_private_network = true;
        })
        .await;
    hold.store(false, Ordering::SeqCst);
    let data = app.wait_done("flux-kontext-pro", &task).await;
    assert_eq!(data["state"], "success", "{data}");
    let sent = submits(&fake);
    assert_eq!(sent.len(), 1, "the restarted worker polled the recorded URL instead of submitting again");
    let request = sent[0].json.as_ref().unwrap();
    assert_eq!(request["aspect_ratio"], "16:9");
    assert_eq!(request["output_format"], "jpeg");
    assert!(request.get("width").is_none(), "Kontext is asked by aspect ratio");
    assert!(request["input_image"].is_string());
    let (format, _) = download(&app.client, &result_urls(&data)[0]).await;
    assert_eq!(format, ImageFormat::Jpeg);
    assert_ledger_invariant(&app.state, &app.account_id).await;
}

#[tokio::test]
async fn moderated_content_fails_the_task_without_charge() {
    let fake = bfl(Arc::new(AtomicBool::new(false)), End::Moderated).await;
    let app = spawn_app_with(|c| c.channels = vec![bfl_channel("bfl", &fake)]).await;
    let before = balance(&app).await.0;
    let task = app.submit_ok("flux-kontext-pro", &json!({"input": {"prompt": "something forbidden"}})).await;
    let data = app.wait_done("flux-kontext-pro", &task).await;
    assert_eq!((data["state"].as_str(), data["failCode"].as_str()), (Some("failed"), Some("CONTENT_VIOLATION")));
    assert_eq!(submits(&fake).len(), 1);
    assert_eq!(balance(&app).await.0, before);
    assert_ledger_invariant(&app.state, &app.account_id).await;
}

#[tokio::test]
async fn no_credits_fail_over_but_invalid_input_does_not() {
    let broke = Fake::start(Wire::Bfl, |_, _, _| Reply::status(402, json!({"detail": "Insufficient credits"}))).await;
    let good = bfl(Arc::new(AtomicBool::new(false)), End::Ready).await;
    let mut first = bfl_channel("broke", &broke);
    first.priority = 10;
    let app = spawn_app_with(|c| c.channels = vec![first, bfl_channel("good", &good)]).await;
    let task = app.submit_ok("flux-kontext-pro", &json!({"input": {"prompt": "a lamp"}})).await;
    let data = app.wait_done("flux-kontext-pro", &task).await;
    assert_eq!(data["state"], "success", "{data}");
    assert_eq!((submits(&broke).len(), submits(&good).len()), (1, 1));

    let strict = Fake::start(Wire::Bfl, |_, _, _| {
        Reply::status(
            422,
            json!({"detail": [{"loc": ["body", "prompt"], "msg": "prompt too long", "type": "value_error"}]}),
        )
    })
    .await;
    let spare = bfl(Arc::new(AtomicBool::new(false)), End::Ready).await;
    let mut first = bfl_channel("strict", &strict);
    first.priority = 10;
    let app = spawn_app_with(|c| c.channels = vec![first, bfl_channel("spare", &spare)]).await;
    let before = balance(&app).await.0;
    let task = app.submit_ok("flux-kontext-pro", &json!({"input": {"prompt": "a lamp"}})).await;
    let data = app.wait_done("flux-kontext-pro", &task).await;
    assert_eq!(data["failCode"], "GENERATION_FAILED", "{data}");
    assert!(data["failMsg"].as_str().unwrap().contains("prompt too long"), "{data}");
    assert_eq!(spare.seen().len(), 0, "a validation error is not tried elsewhere");
    assert_eq!(balance(&app).await.0, before);
}

#[tokio::test]
async fn the_channel_test_polls_one_task_to_its_end_and_bills_nobody() {
    let fake = bfl(Arc::new(AtomicBool::new(false)), End::Ready).await;
    let app = spawn_app_with(|c| {
        c.channels = vec![bfl_channel("bfl", &fake)];
        c.admin_token = Some("bfl-ops".into());
    })
    .await;
    let before = balance(&app).await.0;
    let test = test_channel(&app, "bfl-ops", "bfl").await;
    assert_eq!((test["ok"].as_bool(), test["model"].as_str()), (Some(true), Some("flux-2-pro")), "{test}");
    let sent = submits(&fake);
    assert_eq!(sent.len(), 1);
    let request = sent[0].json.as_ref().unwrap();
    assert_eq!((request["width"].clone(), request["height"].clone()), (json!(64), json!(64)), "FLUX.2's least size");
    assert!(fake.seen_ok().iter().any(|s| s.path == "/v1/get_result"), "polled to the end");
    assert_eq!(balance(&app).await.0, before);
}
