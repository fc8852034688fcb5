//! Credits: holds can never overspend, delivered images are charged exactly once, idempotent
//! retries hold once, and the account routes show it all.

mod common;

use common::*;
use easel::money::Micros;
use easel::tasks::idempotency::{self, Claim, Idempotency};
use serde_json::{Value, json};

#[tokio::test]
async fn credit_for_ten_images_admits_exactly_ten_of_thirty_concurrent_submits() {
    let app = spawn_app_with(|c| {
        c.server.bootstrap_credits_usd = 0.40; // 10 × gpt-image-1 at $0.04
        c.local.latency_ms = 600_000; // keep every accepted task unfinished
    })
    .await;
    let body = gpt_t2i(1);
    let submits = (0..30).map(|_| app.submit("gpt-image-1", &body));
    let answers = futures::future::join_all(submits).await;
    let accepted = answers.iter().filter(|(s, _)| *s == 200).count();
    assert_eq!(accepted, 10, "{answers:?}");
    for (status, body) in answers.iter().filter(|(s, _)| *s != 200) {
        assert_eq!(*status, 400);
        assert_eq!(*body, json!({"code": 400, "message": "Insufficient credits", "data": null}));
    }
    let account = app.state.accounts.find("default").await.unwrap();
    assert_eq!((account.balance.0, account.held.0), (0, 400_000));
    assert_ledger_invariant(&app.state, "default").await;
}

#[tokio::test]
async fn partial_delivery_settles_delivered_images_and_releases_the_rest() {
    let app = spawn_app().await;
    let body = json!({"input": {"mode": "text-to-image", "prompt": "a storyboard in 2 frames", "max_images": 4,
        "sequential_image_generation": "auto", "size": "1280x720"}});
    let task = app.submit_ok("seedream-5-0", &body).await;
    assert_eq!(result_urls(&app.wait_done("seedream-5-0", &task).await).len(), 2);

    let (status, page) = app.get_json("/api/v1/account/ledger").await;
    assert_eq!(status, 200);
    let entries: Vec<&Value> =
        page["data"]["entries"].as_array().unwrap().iter().filter(|e| e["taskId"] == task.as_str()).collect();
    let amount = |kind: &str| entries.iter().find(|e| e["kind"] == kind).map(|e| e["amount"].as_f64().unwrap());
    assert_eq!(entries.len(), 3, "{entries:?}");
    assert_eq!(amount("hold"), Some(0.128));
    assert_eq!(amount("settle"), Some(0.064));
    assert_eq!(amount("release"), Some(0.064));
    assert_ledger_invariant(&app.state, "default").await;
}

#[tokio::test]
async fn idempotent_retry_returns_the_same_task_and_holds_once() {
    let app = spawn_app_with(|c| c.local.latency_ms = 600_000).await;
    let send = |key: &'static str, body: Value| {
        app.client
            .post(app.url("/api/v1/generateTask/gpt-image-1"))
            .bearer_auth(&app.key)
            .header("Idempotency-Key", key)
            .json(&body)
            .send()
    };
    let first = send("order-42", gpt_t2i(2)).await.unwrap();
    assert_eq!(first.status(), 200);
    assert!(first.headers().get("idempotent-replayed").is_none());
    let first: Value = first.json().await.unwrap();

    let again = send("order-42", gpt_t2i(2)).await.unwrap();
    assert_eq!(again.status(), 200);
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    let again: Value = again.json().await.unwrap();
    assert_eq!(again, first, "a replay is the original answer");

    let account = app.state.accounts.find("default").await.unwrap();
    assert_eq!(account.held.0, 80_000, "held once for 2 images");

    let other = send("order-42", gpt_t2i(4)).await.unwrap();
    assert_eq!(other.status(), 422);
    let other: Value = other.json().await.unwrap();
    assert_eq!(other["code"], 422);

    // Another key is another request.
    let fresh: Value = send("order-43", gpt_t2i(2)).await.unwrap().json().await.unwrap();
    assert_ne!(fresh["data"]["taskId"], first["data"]["taskId"]);
    let bad = send("", gpt_t2i(2)).await.unwrap();
    assert_eq!(bad.status(), 400);
    assert_ledger_invariant(&app.state, "default").await;
}

#[tokio::test]
async fn a_request_still_in_flight_makes_its_twin_409() {
    let app = spawn_app_with(|c| c.local.latency_ms = 600_000).await;
    let account = app.state.accounts.find("default").await.unwrap();
    // Claim the key as a first request would, and leave it in flight.
    let idem = Idempotency::new("retry-me", "apixo/gpt-image-1", &gpt_t2i(1)).unwrap();
    assert_eq!(idempotency::claim(&app.state.db, &account.id, &idem).await.unwrap(), Claim::Fresh);
    let res = app
        .client
        .post(app.url("/api/v1/generateTask/gpt-image-1"))
        .bearer_auth(&app.key)
        .header("Idempotency-Key", "retry-me")
        .json(&gpt_t2i(1))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 409);
    let body: Value = res.json().await.unwrap();
    assert!(body["message"].as_str().unwrap().contains("in flight"));
}

#[tokio::test]
async fn concurrent_twins_create_one_task() {
    let app = spawn_app_with(|c| c.local.latency_ms = 600_000).await;
    let send = || {
        app.client
            .post(app.url("/api/v1/generateTask/gpt-image-1"))
            .bearer_auth(&app.key)
            .header("Idempotency-Key", "twin")
            .json(&gpt_t2i(1))
            .send()
    };
    let answers = futures::future::join_all((0..8).map(|_| send())).await;
    let mut ids = std::collections::HashSet::new();
    for res in answers {
        let res = res.unwrap();
        let status = res.status().as_u16();
        let body: Value = res.json().await.unwrap();
        match status {
            200 => {
                ids.insert(body["data"]["taskId"].as_str().unwrap().to_owned());
            }
            409 => {}
            other => panic!("unexpected {other}: {body}"),
        }
    }
    assert_eq!(ids.len(), 1, "{ids:?}");
    assert_eq!(app.state.accounts.find("default").await.unwrap().held.0, 40_000);
}

#[tokio::test]
async fn account_and_balance_routes() {
    let app = spawn_app_with(|c| c.local.latency_ms = 600_000).await;
    app.submit_ok("seedream-5-0", &seedream_t2i(3)).await;

    let (status, body) = app.get_json("/api/v1/account").await;
    assert_eq!(status, 200);
    let data = &body["data"];
    assert_eq!(data["accountId"], app.account_id.as_str());
    assert_eq!(data["name"], "default");
    assert_eq!(data["balance"], 9.904);
    assert_eq!(data["held"], 0.096);
    assert_eq!(data["limits"]["seedream-5-0"], json!({"rpm": 60, "maxConcurrent": 10}));
    assert_eq!(data["limits"]["gpt-image-1"], json!({"rpm": 10000, "maxConcurrent": 1000}));

    let (_, apixo) = app.get_json("/api/v1/apikeys/current-balance").await;
    assert_eq!(apixo, json!({"code": 200, "message": "success", "data": 9.904}));
    let (_, unified) = app.get_json("/api/v1/balance").await;
    assert_eq!(
        unified,
        json!({"code": 200, "msg": "success", "data": {"balance": 9.904, "total": 10.0, "frozen": 0.096, "currency": "USD"}})
    );
    // The unified route answers errors in its own envelope.
    let res = app.client.get(app.url("/api/v1/balance")).send().await.unwrap();
    assert_eq!(res.status(), 401);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["code"], 401);
    assert!(body["msg"].is_string() && body.get("message").is_none(), "{body}");
}

#[tokio::test]
async fn ledger_pages_newest_first() {
    let app = spawn_app().await;
    for _ in 0..3 {
        let task = app.submit_ok("gpt-image-1", &gpt_t2i(1)).await;
        app.wait_done("gpt-image-1", &task).await;
    }
    // 1 credit + 3 × (hold, settle, release) = 10 entries.
    let (_, first) = app.get_json("/api/v1/account/ledger?limit=4").await;
    let entries = first["data"]["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 4);
    let times: Vec<i64> = entries.iter().map(|e| e["time"].as_i64().unwrap()).collect();
    assert!(times.windows(2).all(|w| w[0] >= w[1]), "{times:?}");
    let mut seen = entries.len();
    let mut before = first["data"]["nextBefore"].as_str().unwrap().to_owned();
    loop {
        let (_, page) = app.get_json(&format!("/api/v1/account/ledger?limit=4&before={before}")).await;
        seen += page["data"]["entries"].as_array().unwrap().len();
        match page["data"]["nextBefore"].as_str() {
            Some(next) => before = next.to_owned(),
            None => break,
        }
    }
    assert_eq!(seen, 10);
    let (_, last) = app.get_json("/api/v1/account/ledger?limit=500").await;
    assert_eq!(last["code"], 400);
}

/// Adding the largest credit ($1e9) again and again ends in a 400 at the largest balance
/// ($1e12) instead of overflowing the i64 balance (which SQLite would store as a float); the
/// balance stays an exact integer, the account routes keep answering, and the CLI refuses too.
#[tokio::test]
async fn repeated_large_credits_stop_at_the_largest_balance_with_400() {
    const TOKEN: &str = "admin-secret-token";
    let app = spawn_app_with(|c| c.admin_token = Some(TOKEN.into())).await;
    let path = app.url(&format!("/admin/v1/accounts/{}/credits", app.account_id));
    let add = |amount: f64| app.client.post(&path).bearer_auth(TOKEN).json(&json!({"amount": amount})).send();
    let mut accepted = 0u64;
    let refusal = loop {
        let res = add(1e9).await.unwrap();
        if res.status() != 200 {
            break (res.status().as_u16(), res.json::<Value>().await.unwrap());
        }
        accepted += 1;
        assert!(accepted <= 1000, "credits beyond the largest balance were accepted");
    };
    assert_eq!(refusal.0, 400, "{refusal:?}");
    assert_eq!(refusal.1["code"], 400);
    assert!(refusal.1["message"].as_str().unwrap().contains("largest balance"), "{refusal:?}");
    // $10 of opening credit leaves room for 999 more of $1e9; then even one micro-dollar too many
    // is refused, while what fits is still taken.
    assert_eq!(accepted, 999);
    let room = Micros::MAX_BALANCE.0 - app.state.accounts.find("default").await.unwrap().balance.0;
    assert_eq!(add(Micros(room + 1).to_usd()).await.unwrap().status(), 400);
    assert_eq!(add(Micros(room).to_usd()).await.unwrap().status(), 200);
    assert_eq!(add(0.000001).await.unwrap().status(), 400);

    let account = app.state.accounts.find("default").await.unwrap();
    assert_eq!(account.balance, Micros::MAX_BALANCE, "exact, to the micro-dollar");
    if app.database_url.is_none() {
        let kind: String = sqlx::query_scalar("SELECT typeof(balance_micros) FROM accounts WHERE name = 'default'")
            .fetch_one(&app.state.db.read)
            .await
            .unwrap();
        assert_eq!(kind, "integer", "SQLite keeps the balance an integer");
    }
    for route in ["/api/v1/account", "/api/v1/balance", "/api/v1/account/ledger?limit=5"] {
        let (status, body) = app.get_json(route).await;
        assert_eq!(status, 200, "{route}: {body}");
    }
    let (_, balance) = app.get_json("/api/v1/account").await;
    assert_eq!(balance["data"]["balance"], 1e12);
    assert_ledger_invariant(&app.state, "default").await;

    let mut cli = tokio::process::Command::new(env!("CARGO_BIN_EXE_easel"));
    cli.arg("--data-dir").arg(app.data_dir.path()).env_remove("EASEL_CONFIG").env_remove("EASEL_DATA_DIR");
    match &app.database_url {
        Some(url) => cli.env("EASEL_DATABASE_URL", url),
        None => cli.env_remove("EASEL_DATABASE_URL"),
    };
    let out = cli.args(["credits", "add", "--account", "default", "--amount", "0.01"]).output().await.unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("largest balance"), "{out:?}");
    assert_eq!(app.state.accounts.find("default").await.unwrap().balance, Micros::MAX_BALANCE);
}
