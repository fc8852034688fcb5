//! Channel failure handling through the whole service: an upstream that times out is left for
//! the next channel, and a failing channel's circuit breaker opens, then recovers via a probe.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::routing::post;
use common::fakes::*;
use common::*;
use easel::config::ProviderKind;
use serde_json::{Value, json};

const TOKEN: &str = "ops";

async fn breaker_of(app: &TestApp, channel: &str) -> String {
    let res = app.client.get(app.url("/admin/v1/channels")).bearer_auth(TOKEN).send().await.unwrap();
    let body: Value = res.json().await.unwrap();
    let found = body["data"].as_array().unwrap().iter().find(|c| c["id"] == channel).unwrap().clone();
    found["breaker"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn a_timed_out_upstream_fails_over_to_the_next_channel() {
    // An upstream that accepts the request and never answers in time.
    let hung = Arc::new(AtomicUsize::new(0));
    let counter = hung.clone();
    let app_hung = Router::new().route(
        "/images/generations",
        post(move || {
            let counter = counter.clone();
            async move {
                counter.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_secs(30)).await;
                "too late"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hung_url = format!("http://{}", listener.local_addr().unwrap());
    let server = tokio::spawn(async move { axum::serve(listener, app_hung).await.unwrap() });
    let working = Fake::start(Wire::OpenAi, |seen, _, _| Reply::ok(openai_images(seen))).await;
    let w = working.base_url.clone();
    let app = spawn_app_with(|c| {
        let mut slow = channel("slow", ProviderKind::Openai, &hung_url, &[("gpt-image-1", "gpt-image-1")]);
        slow.priority = 10;
        slow.timeout_secs = Some(1);
        c.channels = vec![slow, channel("spare", ProviderKind::Openai, &w, &[("gpt-image-1", "gpt-image-1")])];
    })
    .await;
    let task = app.submit_ok("gpt-image-1", &gpt_t2i(1)).await;
    let data = app.wait_done("gpt-image-1", &task).await;
    assert_eq!(data["state"], "success", "{data}");
    assert_eq!(hung.load(Ordering::SeqCst), 1);
    assert_eq!(working.seen_ok().len(), 1);
    server.abort();
}

#[tokio::test]
async fn the_breaker_opens_on_repeated_failures_and_recovers_through_a_probe() {
    let healthy = Arc::new(AtomicBool::new(false));
    let flag = healthy.clone();
    let flaky = Fake::start(Wire::OpenAi, move |seen, _, _| {
        if flag.load(Ordering::SeqCst) {
            Reply::ok(openai_images(seen))
        } else {
            Reply::status(
                503,
                json!({"error": {"message": "overloaded", "type": "server_error", "param": null, "code": null}}),
            )
        }
    })
    .await;
    let spare = Fake::start(Wire::OpenAi, |seen, _, _| Reply::ok(openai_images(seen))).await;
    let (f, s) = (flaky.base_url.clone(), spare.base_url.clone());
    let app = spawn_app_with(|c| {
        c.admin_token = Some(TOKEN.into());
        c.server.breaker_failures = 2;
        c.server.breaker_cooldown_secs = 1;
        let mut first = channel("flaky", ProviderKind::Openai, &f, &[("gpt-image-1", "gpt-image-1")]);
        first.priority = 10;
        c.channels = vec![first, channel("spare", ProviderKind::Openai, &s, &[("gpt-image-1", "gpt-image-1")])];
    })
    .await;
    let run = || async {
        let task = app.submit_ok("gpt-image-1", &gpt_t2i(1)).await;
        assert_eq!(app.wait_done("gpt-image-1", &task).await["state"], "success");
    };
    run().await;
    run().await;
    assert_eq!(flaky.seen().len(), 2);
    assert_eq!(breaker_of(&app, "flaky").await, "open");
    // While open, the channel is passed over without a request.
    run().await;
    assert_eq!(flaky.seen().len(), 2);
    assert_eq!(spare.seen_ok().len(), 3);

    healthy.store(true, Ordering::SeqCst);
    wait_until(Duration::from_secs(5), || async { (breaker_of(&app, "flaky").await == "half_open").then_some(()) })
        .await;
    run().await;
    assert_eq!(flaky.seen().len(), 3, "one probe");
    assert_eq!(breaker_of(&app, "flaky").await, "closed");
    run().await;
    assert_eq!(flaky.seen().len(), 4, "traffic returns to the preferred channel");
    assert_eq!(spare.seen_ok().len(), 3);
}
