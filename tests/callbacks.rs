//! Callbacks: one signed POST when a task ends, retried on the seeds' schedule, durable across
//! restarts, visible and re-sendable through the API.

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use base64::Engine;
use common::*;
use easel::Config;
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;

/// A loopback receiver that answers with `script` in turn (the last status repeats) and keeps
/// every request it got.
#[derive(Clone, Default)]
struct Receiver {
    script: Arc<Mutex<Vec<u16>>>,
    got: Arc<Mutex<Vec<(Instant, HeaderMap, Bytes)>>>,
}

impl Receiver {
    async fn spawn(script: &[u16]) -> (Self, String) {
        let receiver = Receiver { script: Arc::new(Mutex::new(script.to_vec())), ..Default::default() };
        let app = Router::new().route("/hook", post(record)).with_state(receiver.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        (receiver, url)
    }

    fn requests(&self) -> Vec<(Instant, HeaderMap, Bytes)> {
        self.got.lock().unwrap().clone()
    }

    async fn wait_for(&self, n: usize) -> Vec<(Instant, HeaderMap, Bytes)> {
        wait_until(Duration::from_secs(30), || async { Some(self.requests()).filter(|r| r.len() >= n) }).await
    }
}

async fn record(State(r): State<Receiver>, headers: HeaderMap, body: Bytes) -> StatusCode {
    r.got.lock().unwrap().push((Instant::now(), headers, body));
    let mut script = r.script.lock().unwrap();
    let status = if script.len() > 1 { script.remove(0) } else { script[0] };
    StatusCode::from_u16(status).unwrap()
}

fn local_network(c: &mut Config) {
    c.server.allow_private_network = true;
}

fn with_callback(url: &str) -> Value {
    json!({"request_type": "callback", "callback_url": url,
        "input": {"mode": "gpt-image-1", "prompt": "a weather vane", "num_images": 2}})
}

async fn deliveries(app: &TestApp, task: &str) -> Vec<Value> {
    let (status, body) = app.get_json(&format!("/api/v1/callbacks?taskId={task}")).await;
    assert_eq!(status, 200, "{body}");
    body["data"].as_array().unwrap().clone()
}

fn verify(secret: &str, headers: &HeaderMap, body: &[u8]) -> bool {
    let key = base64::engine::general_purpose::STANDARD.decode(secret.trim_start_matches("whsec_")).unwrap();
    let signed =
        format!("{}.{}.", headers["webhook-id"].to_str().unwrap(), headers["webhook-timestamp"].to_str().unwrap());
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).unwrap();
    mac.update(signed.as_bytes());
    mac.update(body);
    let expected = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    headers["webhook-signature"].to_str().unwrap() == format!("v1,{expected}")
}

#[tokio::test]
async fn failing_twice_then_ok_gets_three_signed_requests_at_0_1_3_seconds() {
    let app = spawn_app_with(local_network).await;
    let (receiver, url) = Receiver::spawn(&[500, 500, 200]).await;
    let task = app.submit_ok("gpt-image-1", &with_callback(&url)).await;
    let got = receiver.wait_for(3).await;
    let done = wait_until(Duration::from_secs(10), || async {
        deliveries(&app, &task).await.into_iter().find(|d| d["state"] == "delivered")
    })
    .await;
    assert_eq!(receiver.requests().len(), 3, "nothing is sent after a 2xx");
    assert_eq!(done["attempts"], 3);
    let log = done["attemptLog"].as_array().unwrap();
    assert_eq!(log.iter().map(|a| a["status"].as_u64().unwrap()).collect::<Vec<_>>(), [500, 500, 200]);

    let ids: Vec<&str> = got.iter().map(|(_, h, _)| h["webhook-id"].to_str().unwrap()).collect();
    assert!(ids.iter().all(|id| *id == ids[0] && id.starts_with("msg_")), "{ids:?}");
    let (gap1, gap2) = (got[1].0 - got[0].0, got[2].0 - got[1].0);
    assert!(gap1 >= Duration::from_millis(900) && gap1 < Duration::from_millis(1900), "{gap1:?}");
    assert!(gap2 >= Duration::from_millis(1900) && gap2 < Duration::from_millis(2900), "{gap2:?}");

    let secret = app.state.accounts.find("default").await.unwrap().webhook_secret;
    for (_, headers, body) in &got {
        assert_eq!(headers["content-type"], "application/json");
        assert!(verify(&secret, headers, body), "signature must verify with the account secret");
        assert!(!verify("whsec_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", headers, body));
    }
    let payload: Value = serde_json::from_slice(&got[2].2).unwrap();
    assert_eq!((payload["code"].as_u64(), payload["message"].as_str()), (Some(200), Some("success")));
    let data = &payload["data"];
    assert_eq!(data["taskId"], task.as_str());
    assert_eq!(data["model"], "gpt-image-1");
    assert_eq!(data["state"], "success");
    assert!(data["failCode"].is_null() && data["failMsg"].is_null());
    let param: Value = serde_json::from_str(data["param"].as_str().unwrap()).unwrap();
    assert_eq!(param, with_callback(&url), "param is the original request");
    let result: Value = serde_json::from_str(data["resultJson"].as_str().unwrap()).unwrap();
    assert_eq!(result["resultUrls"].as_array().unwrap().len(), 2);
    assert_eq!(
        data["costTime"].as_i64().unwrap(),
        data["completeTime"].as_i64().unwrap() - data["createTime"].as_i64().unwrap()
    );
}

fn fast_schedule(c: &mut Config) {
    local_network(c);
    c.webhooks.retry_delays_ms = vec![50, 100, 200];
    c.webhooks.max_gap_secs = 1;
    c.webhooks.retry_window_secs = 3;
}

#[tokio::test]
async fn a_receiver_that_never_succeeds_is_retried_until_the_window_ends() {
    let app = spawn_app_with(fast_schedule).await;
    let (receiver, url) = Receiver::spawn(&[503]).await;
    let body = json!({"callback_url": url, "input": {"mode": "image-to-image", "prompt": "p", "max_images": 1,
        "image_urls": ["https://ref.invalid/a.png"]}});
    let task = app.submit_ok("seedream-5-0", &body).await;
    let failed = wait_until(Duration::from_secs(20), || async {
        deliveries(&app, &task).await.into_iter().find(|d| d["state"] == "failed")
    })
    .await;
    let got = receiver.requests();
    let span = got.last().unwrap().0 - got[0].0;
    // 0, .05, .15, .35, then gaps of .4, .8, 1 s up to the 3 s window, the last one on its end.
    assert!(got.len() >= 7, "{} attempts", got.len());
    assert!(span >= Duration::from_millis(2900) && span < Duration::from_millis(4000), "{span:?}");
    assert_eq!(failed["attempts"].as_u64().unwrap() as usize, got.len());
    // A failed task's callback says so.
    let payload: Value = serde_json::from_slice(&got[0].2).unwrap();
    assert_eq!(payload["data"]["state"], "failed");
    assert_eq!(payload["data"]["failCode"], "INVALID_IMAGE_URL");
    assert!(payload["data"]["resultJson"].is_null());
    // Nothing more arrives once it has given up.
    let before = receiver.requests().len();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(receiver.requests().len(), before);
}

#[tokio::test]
async fn gone_stops_retrying_and_a_manual_retry_resends() {
    let app = spawn_app_with(fast_schedule).await;
    let (receiver, url) = Receiver::spawn(&[410, 200]).await;
    let task = app.submit_ok("gpt-image-1", &with_callback(&url)).await;
    let failed = wait_until(Duration::from_secs(20), || async {
        deliveries(&app, &task).await.into_iter().find(|d| d["state"] == "failed")
    })
    .await;
    assert_eq!(failed["attempts"], 1, "410 Gone stops at once");
    let id = failed["id"].as_str().unwrap();
    let res =
        app.client.post(app.url(&format!("/api/v1/callbacks/{id}/retry"))).bearer_auth(&app.key).send().await.unwrap();
    assert_eq!(res.status(), 200);
    let got = receiver.wait_for(2).await;
    assert_eq!(got[0].1["webhook-id"], got[1].1["webhook-id"]);
    wait_until(Duration::from_secs(10), || async {
        deliveries(&app, &task).await.into_iter().find(|d| d["state"] == "delivered")
    })
    .await;
    let again =
        app.client.post(app.url(&format!("/api/v1/callbacks/{id}/retry"))).bearer_auth(&app.key).send().await.unwrap();
    assert_eq!(again.status(), 409);
    let unknown =
        app.client.post(app.url("/api/v1/callbacks/msg_nope/retry")).bearer_auth(&app.key).send().await.unwrap();
    assert_eq!(unknown.status(), 404);
}

#[tokio::test]
async fn retries_resume_after_a_restart() {
    let slow = |c: &mut Config| {
        local_network(c);
        c.webhooks.retry_delays_ms = vec![300; 10];
    };
    let app = spawn_app_with(slow).await;
    let (receiver, url) = Receiver::spawn(&[500]).await;
    let task = app.submit_ok("gpt-image-1", &with_callback(&url)).await;
    receiver.wait_for(2).await;
    let app = app.restart(slow).await;
    let got = receiver.wait_for(4).await;
    let ids: std::collections::HashSet<_> = got.iter().map(|(_, h, _)| h["webhook-id"].clone()).collect();
    assert_eq!(ids.len(), 1, "the same delivery continues");
    let listed = deliveries(&app, &task).await;
    assert_eq!(listed.len(), 1);
    assert!(listed[0]["attempts"].as_u64().unwrap() >= 3);
    assert_eq!(listed[0]["state"], "pending");
}

#[tokio::test]
async fn tasks_without_a_callback_send_nothing_and_others_tasks_stay_hidden() {
    let app = spawn_app_with(local_network).await;
    let task = app.submit_ok("gpt-image-1", &gpt_t2i(1)).await;
    app.wait_done("gpt-image-1", &task).await;
    assert!(deliveries(&app, &task).await.is_empty());
    let (status, _) = app.get_json("/api/v1/callbacks?taskId=task_missing").await;
    assert_eq!(status, 404);
    let (status, _) = app.get_json("/api/v1/callbacks").await;
    assert_eq!(status, 400);
}

#[tokio::test]
async fn with_the_guard_on_callback_urls_must_be_https_and_public() {
    let app = spawn_app().await;
    let refused = [
        ("http://hooks.invalid/cb", "must be an https URL"),
        ("https://127.0.0.1/cb", "loopback"),
        ("https://10.0.0.1/cb", "private"),
        ("https://169.254.169.254/latest/meta-data", "link-local"),
        ("https://[::1]/cb", "loopback"),
        ("https://[::ffff:127.0.0.1]/cb", "loopback"),
        ("https://localhost/cb", "callback_url"),
    ];
    for (url, why) in refused {
        let (status, body) = app.submit("gpt-image-1", &with_callback(url)).await;
        assert_eq!(status, 400, "{url}: {body}");
        assert!(body["message"].as_str().unwrap().contains(why), "{url}: {body}");
    }
    // A public-looking https URL is accepted; its address is checked when it is called.
    assert_eq!(app.submit("gpt-image-1", &with_callback("https://hooks.invalid/cb")).await.0, 200);
    let account = app.state.accounts.find("default").await.unwrap();
    assert_eq!(account.held.0, 80_000, "only the accepted submit holds (2 images)");
}

#[tokio::test]
async fn a_rotated_secret_signs_the_next_deliveries() {
    let app = spawn_app_with(local_network).await;
    let account = app.state.accounts.find("default").await.unwrap();
    let old = account.webhook_secret.clone();
    let new = app.state.accounts.rotate_webhook_secret(&account.id).await.unwrap();
    assert_ne!(old, new);
    assert!(new.starts_with("whsec_"));
    let (receiver, url) = Receiver::spawn(&[200]).await;
    app.submit_ok("gpt-image-1", &with_callback(&url)).await;
    let got = receiver.wait_for(1).await;
    assert!(verify(&new, &got[0].1, &got[0].2));
    assert!(!verify(&old, &got[0].1, &got[0].2));
}

#[tokio::test]
async fn unified_tasks_call_back_with_seed_003_body() {
    let app = spawn_app_with(local_network).await;
    let (receiver, url) = Receiver::spawn(&[200]).await;
    let body = json!({"model": "doubao-seedream-5-0-260128", "prompt": "dawn", "callback_url": url});
    let res =
        app.client.post(app.url("/api/v1/images/generations")).bearer_auth(&app.key).json(&body).send().await.unwrap();
    let created: Value = res.json().await.unwrap();
    let got = receiver.wait_for(1).await;
    let payload: Value = serde_json::from_slice(&got[0].2).unwrap();
    assert_eq!((payload["code"].as_u64(), payload["msg"].as_str()), (Some(200), Some("success")), "{payload}");
    assert!(payload.get("message").is_none());
    let data = &payload["data"];
    assert_eq!(data["taskId"], created["data"]["taskId"]);
    assert_eq!(data["model"], "bytedance/doubao-seedream-5-0-260128");
    assert_eq!(data["state"], "completed");
    let param: Value = serde_json::from_str(data["param"].as_str().unwrap()).unwrap();
    assert_eq!(param, body);
    let result: Value = serde_json::from_str(data["resultJson"].as_str().unwrap()).unwrap();
    assert_eq!(result["resultUrls"].as_array().unwrap().len(), 1);
    for key in ["failCode", "failMsg"] {
        assert!(data.get(key).is_some_and(Value::is_null), "{key} must be present and null");
    }
}

/// A loopback receiver that reads requests and never answers, so every attempt to it lasts the
/// whole attempt timeout. Each attempt comes on a connection of its own (a request that got no
/// answer never goes back to the client's pool), so `accepted` counts attempts.
struct Hanging {
    url: String,
    accepted: Arc<std::sync::atomic::AtomicUsize>,
}

impl Hanging {
    async fn spawn() -> Self {
        use tokio::io::AsyncReadExt;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let count = accepted.clone();
        tokio::spawn(async move {
            loop {
                let (mut socket, _) = listener.accept().await.unwrap();
                count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                tokio::spawn(async move {
                    let mut buf = [0u8; 4096];
                    while matches!(socket.read(&mut buf).await, Ok(n) if n > 0) {}
                });
            }
        });
        Hanging { url, accepted }
    }

    fn attempts(&self) -> usize {
        self.accepted.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// Attempts of `account`'s callbacks in flight now, as the dispatcher's leases say.
async fn in_flight(app: &TestApp, account: &str) -> i64 {
    sqlx::query_scalar(
        "SELECT COUNT(*) FROM webhook_deliveries WHERE account_id = $1 AND state = 'pending' AND lease_until >= $2",
    )
    .bind(account)
    .bind(easel::db::now_ms())
    .fetch_one(&app.state.db.read)
    .await
    .unwrap()
}

async fn retry_callback(app: &TestApp, id: &str) -> reqwest::Response {
    app.client.post(app.url(&format!("/api/v1/callbacks/{id}/retry"))).bearer_auth(&app.key).send().await.unwrap()
}

#[tokio::test]
async fn a_hanging_receiver_of_one_account_does_not_hold_up_another_accounts_callbacks() {
    const SLOTS: usize = 4;
    const BACKLOG: usize = 12;
    let attempt_timeout = Duration::from_secs(1);
    let app = spawn_app_with(|c| {
        local_network(c);
        c.server.limits = false;
        c.webhooks.dispatch_slots = SLOTS;
        c.webhooks.attempt_timeout_secs = attempt_timeout.as_secs();
    })
    .await;
    let hanging = Hanging::spawn().await;
    for _ in 0..BACKLOG {
        app.submit_ok("gpt-image-1", &with_callback(&hanging.url)).await;
    }
    let a = app.account_id.clone();
    let queued = || async {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM webhook_deliveries WHERE account_id = $1")
            .bind(&a)
            .fetch_one(&app.state.db.read)
            .await
            .unwrap();
        (n == BACKLOG as i64).then_some(())
    };
    wait_until(Duration::from_secs(30), queued).await;
    wait_until(Duration::from_secs(10), || async { (hanging.attempts() >= SLOTS / 2).then_some(()) }).await;
    // Account A alone takes its share (half the slots, leaving room for others), never more.
    let mut most = 0;
    for _ in 0..25 {
        most = most.max(in_flight(&app, &a).await);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(most, (SLOTS / 2) as i64, "a lone account holds half the slots");

    // Account B's callback goes out at once, not after A's backlog of hanging attempts
    // (BACKLOG / SLOTS attempt timeouts if slots went first come, first served).
    let b = app.state.accounts.create("tenant-b", easel::money::Micros::from_usd(1.0).unwrap()).await.unwrap();
    let (receiver, url) = Receiver::spawn(&[200]).await;
    let res = app
        .client
        .post(app.url("/api/v1/generateTask/gpt-image-1"))
        .bearer_auth(&b.key.key)
        .json(&with_callback(&url))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let got = receiver.wait_for(1).await;
    let received_at = easel::db::now_ms() - got[0].0.elapsed().as_millis() as i64;
    let a_attempts = hanging.attempts();
    // From the moment B's callback was queued (its task ended), not counting the render.
    let queued_at: i64 = sqlx::query_scalar("SELECT created_at FROM webhook_deliveries WHERE account_id = $1")
        .bind(b.account.id.as_str())
        .fetch_one(&app.state.db.read)
        .await
        .unwrap();
    let waited = Duration::from_millis((received_at - queued_at).max(0) as u64);
    println!("B's callback after {waited:?}; A's hanging attempts by then: {a_attempts} for a backlog of {BACKLOG}");
    assert!(waited < attempt_timeout / 2, "B waited {waited:?} behind A's hanging receiver");
    assert!(a_attempts < BACKLOG, "B went ahead of A's backlog, not after it ({a_attempts} attempts)");
    // With two accounts waiting A's share shrinks, and it still never exceeds it.
    for _ in 0..20 {
        assert!(in_flight(&app, &a).await <= (SLOTS / 2) as i64);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_retry_of_a_pending_or_in_flight_callback_is_409() {
    let app = spawn_app_with(|c| {
        local_network(c);
        c.webhooks.attempt_timeout_secs = 5;
        c.webhooks.retry_delays_ms = vec![600_000];
    })
    .await;
    // In flight: the attempt hangs.
    let hanging = Hanging::spawn().await;
    let task = app.submit_ok("gpt-image-1", &with_callback(&hanging.url)).await;
    wait_until(Duration::from_secs(10), || async { (hanging.attempts() == 1).then_some(()) }).await;
    let id = deliveries(&app, &task).await[0]["id"].as_str().unwrap().to_owned();
    let res = retry_callback(&app, &id).await;
    assert_eq!(res.status(), 409);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["code"], 409, "the route's own envelope: {body}");
    assert!(body["message"].as_str().unwrap().contains("only a failed callback can be retried"), "{body}");

    // Pending: the attempt failed and the next one is scheduled.
    let (receiver, url) = Receiver::spawn(&[500]).await;
    let task = app.submit_ok("gpt-image-1", &with_callback(&url)).await;
    receiver.wait_for(1).await;
    let pending = wait_until(Duration::from_secs(10), || async {
        deliveries(&app, &task).await.into_iter().find(|d| d["attempts"] == 1 && d["state"] == "pending")
    })
    .await;
    let res = retry_callback(&app, pending["id"].as_str().unwrap()).await;
    assert_eq!(res.status(), 409);
    let after = deliveries(&app, &task).await;
    assert_eq!(after[0]["nextAttemptAt"], pending["nextAttemptAt"], "a refused retry changes nothing");
    assert_eq!(receiver.requests().len(), 1);
    assert_eq!(hanging.attempts(), 1, "no second attempt overlaps the one in flight");
}

#[tokio::test]
async fn concurrent_retries_of_a_failed_callback_make_one_attempt_and_then_wait() {
    let app = spawn_app_with(|c| {
        fast_schedule(c);
        // Only the per-delivery limit is under test.
        c.webhooks.retry_rpm = 10_000;
    })
    .await;
    let (receiver, url) = Receiver::spawn(&[410, 410, 200]).await;
    let task = app.submit_ok("gpt-image-1", &with_callback(&url)).await;
    let failed = wait_until(Duration::from_secs(20), || async {
        deliveries(&app, &task).await.into_iter().find(|d| d["state"] == "failed")
    })
    .await;
    let id = failed["id"].as_str().unwrap().to_owned();

    let retries = (0..20).map(|_| retry_callback(&app, &id));
    let statuses: Vec<u16> = futures::future::join_all(retries).await.iter().map(|r| r.status().as_u16()).collect();
    assert_eq!(statuses.iter().filter(|s| **s == 200).count(), 1, "{statuses:?}");
    assert!(statuses.iter().all(|s| [200, 409, 429].contains(s)), "{statuses:?}");
    let again = wait_until(Duration::from_secs(20), || async {
        deliveries(&app, &task).await.into_iter().find(|d| d["state"] == "failed" && d["attempts"] == 2)
    })
    .await;
    assert_eq!(receiver.requests().len(), 2, "twenty retries, one attempt");
    assert_eq!(again["attemptLog"].as_array().unwrap().len(), 2);

    // Failed again at once (410): the next retry of this delivery waits its turn.
    let res = retry_callback(&app, &id).await;
    assert_eq!(res.status(), 429);
    let wait: u64 = res.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=10).contains(&wait), "{wait}");
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["code"], 429, "{body}");
    assert_eq!(receiver.requests().len(), 2);
}

#[tokio::test]
async fn a_create_may_ask_for_callbacks_on_start_and_progress_as_well() {
    let (receiver, url) = Receiver::spawn(&[200]).await;
    // A second of rendering for a 1K image: progress reports on the way.
    let app = spawn_app_with(|c| {
        local_network(c);
        c.local.latency_ms = 4_000;
    })
    .await;
    let secret = app.state.accounts.find("default").await.unwrap().webhook_secret;
    let path = "/api/v1/generateTask/gpt-image-1";
    let (status, body) =
        app.post_json(path, &[("callback-events", "started, progress, completed")], &with_callback(&url)).await;
    assert_eq!(status, 200, "{body}");
    let id = body["data"]["taskId"].as_str().unwrap().to_owned();
    app.wait_done("gpt-image-1", &id).await;
    let event_of = |h: &HeaderMap| h["easel-event"].to_str().unwrap().to_owned();
    let got = wait_until(Duration::from_secs(30), || async {
        let got = receiver.requests();
        got.iter().any(|(_, h, _)| event_of(h) == "completed").then_some(got)
    })
    .await;
    let events: Vec<String> = got.iter().map(|(_, h, _)| event_of(h)).collect();
    assert_eq!(events.iter().filter(|e| *e == "started").count(), 1, "{events:?}");
    assert!(events.iter().any(|e| e == "progress"), "{events:?}");
    assert_eq!(events.iter().filter(|e| *e == "completed").count(), 1, "{events:?}");
    for (_, headers, body) in &got {
        assert!(verify(&secret, headers, body), "every callback is signed");
        let payload: Value = serde_json::from_slice(body).unwrap();
        assert_eq!(payload["data"]["taskId"], id.as_str());
        if event_of(headers) == "completed" {
            assert_eq!(payload["data"]["state"], "success", "{payload}");
        } else {
            assert_eq!(payload["data"]["state"], "processing", "{payload}");
            assert_eq!(payload["data"]["resultJson"], Value::Null, "no results before the end: {payload}");
        }
    }
    let listed = deliveries(&app, &id).await;
    assert_eq!(listed.len(), got.len(), "each callback is a delivery of its own: {listed:?}");
    assert!(listed.iter().any(|d| d["event"] == "started"), "{listed:?}");

    // Without the header, only the end; an unknown event name is refused.
    let (receiver, url) = Receiver::spawn(&[200]).await;
    let plain = app.submit_ok("gpt-image-1", &with_callback(&url)).await;
    app.wait_done("gpt-image-1", &plain).await;
    let got = receiver.wait_for(1).await;
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].1["easel-event"], "completed");
    let (status, body) = app.post_json(path, &[("callback-events", "started, finished")], &with_callback(&url)).await;
    assert_eq!(status, 400, "{body}");
    assert!(body["message"].as_str().unwrap().contains("Callback-Events"), "{body}");
}
