//! The web console over real HTTP, on SQLite and PostgreSQL: sign-in and sessions, CSRF,
//! who may see what, and the forms that change things (the browser tests in
//! `tests/console/` drive the same pages in Chromium).

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::{TestApp, spawn_app_with, wait_until};
use reqwest::StatusCode;
use reqwest::header::{LOCATION, SET_COOKIE};
use serde_json::json;

const ADMIN: &str = "console-admin-token";

/// A browser without a cookie jar crate: keeps the cookies it is given, follows nothing.
struct Browser<'a> {
    app: &'a TestApp,
    client: reqwest::Client,
    cookies: BTreeMap<String, String>,
}

struct Page {
    status: StatusCode,
    location: Option<String>,
    set_cookies: Vec<String>,
    body: String,
}

impl Page {
    /// The first `name="csrf" value="…"` of the page.
    fn csrf(&self) -> String {
        let at = self.body.find(r#"name="csrf" value=""#).expect("a CSRF field") + r#"name="csrf" value=""#.len();
        self.body[at..].split('"').next().unwrap().to_owned()
    }
}

impl<'a> Browser<'a> {
    fn new(app: &'a TestApp) -> Self {
        let client = reqwest::Client::builder().no_proxy().redirect(reqwest::redirect::Policy::none()).build().unwrap();
        Self { app, client, cookies: BTreeMap::new() }
    }

    fn cookie_header(&self) -> String {
        self.cookies.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("; ")
    }

    async fn take(&mut self, res: reqwest::Response) -> Page {
        let status = res.status();
        let location = res.headers().get(LOCATION).map(|v| v.to_str().unwrap().to_owned());
        let set_cookies: Vec<String> =
            res.headers().get_all(SET_COOKIE).iter().map(|v| v.to_str().unwrap().to_owned()).collect();
        for c in &set_cookies {
            let (pair, attrs) = c.split_once(';').unwrap_or((c, ""));
            let (k, v) = pair.split_once('=').unwrap();
            if attrs.contains("Max-Age=0") {
                self.cookies.remove(k);
            } else {
                self.cookies.insert(k.to_owned(), v.to_owned());
            }
        }
        Page { status, location, set_cookies, body: res.text().await.unwrap() }
    }

    async fn get(&mut self, path: &str) -> Page {
        let res = self.client.get(self.app.url(path)).header("cookie", self.cookie_header()).send().await.unwrap();
        self.take(res).await
    }

    async fn post(&mut self, path: &str, form: &[(&str, &str)]) -> Page {
        let res = self
            .client
            .post(self.app.url(path))
            .header("cookie", self.cookie_header())
            .form(form)
            .send()
            .await
            .unwrap();
        self.take(res).await
    }

    async fn sign_in(&mut self, key: &str) -> Page {
        let form = self.get("/console/login").await;
        assert_eq!(form.status, 200);
        let csrf = form.csrf();
        self.post("/console/login", &[("key", key), ("csrf", &csrf)]).await
    }
}

async fn console_app() -> TestApp {
    spawn_app_with(|c| c.admin_token = Some(ADMIN.into())).await
}

const PAGES: [&str; 10] = [
    "/console",
    "/console/tasks",
    "/console/gallery",
    "/console/playground",
    "/console/keys",
    "/console/webhooks",
    "/console/admin/accounts",
    "/console/admin/channels",
    "/console/admin/models",
    "/console/admin/system",
];

#[tokio::test]
async fn signed_out_pages_redirect_to_the_sign_in_page_and_forms_are_refused() {
    let app = console_app().await;
    let mut b = Browser::new(&app);
    for page in PAGES {
        let p = b.get(page).await;
        assert_eq!(p.status, StatusCode::SEE_OTHER, "{page}");
        let location = p.location.unwrap();
        assert!(location.starts_with("/console/login?next="), "{page}: {location}");
        assert!(location.contains(&page.replace('/', "%2F")), "{page} comes back after sign-in: {location}");
    }
    let p = b.post("/console/keys", &[("csrf", "x")]).await;
    assert_eq!(p.status, StatusCode::UNAUTHORIZED);
    assert!(p.body.contains("/console/login"), "{}", p.body);
    // A forged session cookie opens nothing.
    b.cookies.insert("easel_session".into(), "00".repeat(32));
    assert_eq!(b.get("/console").await.status, StatusCode::SEE_OTHER);
}

#[tokio::test]
async fn sign_in_sets_a_strict_http_only_session_and_sign_out_ends_it() {
    let app = console_app().await;
    let mut b = Browser::new(&app);
    let p = b.sign_in(&app.key).await;
    assert_eq!(p.status, StatusCode::SEE_OTHER);
    assert_eq!(p.location.as_deref(), Some("/console"));
    let session = p.set_cookies.iter().find(|c| c.starts_with("easel_session=")).expect("a session cookie");
    for attribute in ["HttpOnly", "SameSite=Strict", "Path=/console", "Max-Age=43200"] {
        assert!(session.contains(attribute), "{attribute} in {session}");
    }
    assert!(!session.contains("Secure"), "http:// public URL: no Secure");
    assert!(!session.contains(&app.key), "the key itself never goes to the browser");
    let token = b.cookies["easel_session"].clone();
    let overview = b.get("/console").await;
    assert_eq!(overview.status, 200);
    assert!(overview.body.contains("$10.00"), "the balance shows");
    assert!(overview.body.starts_with("<!DOCTYPE html>") && overview.body.contains(r#"<html lang="en">"#));

    // Only a digest of the token is stored.
    let stored: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM console_sessions WHERE id = $1")
        .bind(&token)
        .fetch_one(&app.state.db.read)
        .await
        .unwrap();
    assert_eq!(stored, 0);

    let csrf = overview.csrf();
    let out = b.post("/console/logout", &[("csrf", &csrf)]).await;
    assert_eq!(out.status, StatusCode::SEE_OTHER);
    // The old cookie, replayed, opens nothing: the session ended on the server.
    b.cookies.insert("easel_session".into(), token);
    assert_eq!(b.get("/console").await.status, StatusCode::SEE_OTHER);
}

#[tokio::test]
async fn a_wrong_key_is_refused_and_sign_in_is_rate_limited() {
    let app = spawn_app_with(|c| {
        c.admin_token = Some(ADMIN.into());
        c.console.sign_in_per_minute = 3;
    })
    .await;
    let mut b = Browser::new(&app);
    let p = b.sign_in("sk-not-a-key").await;
    assert_eq!(p.status, StatusCode::UNAUTHORIZED);
    assert!(p.body.contains("not valid"), "{}", p.body);
    assert!(!b.cookies.contains_key("easel_session"));
    // Without the sign-in form's own token (a cross-site post), nothing is tried.
    let forged = b.post("/console/login", &[("key", &app.key), ("csrf", "forged")]).await;
    assert_eq!(forged.status, StatusCode::FORBIDDEN);
    b.sign_in("sk-wrong-again").await;
    b.sign_in("sk-and-again").await;
    let limited = b.sign_in(&app.key).await;
    assert_eq!(limited.status, StatusCode::TOO_MANY_REQUESTS, "the fourth attempt in a minute");
    assert!(!b.cookies.contains_key("easel_session"));
}

#[tokio::test]
async fn forms_without_the_session_csrf_token_are_refused() {
    let app = console_app().await;
    let mut b = Browser::new(&app);
    b.sign_in(&app.key).await;
    let keys_before =
        app.state.accounts.keys_of(&app.state.accounts.find(&app.account_id).await.unwrap().id).await.unwrap();
    for form in [vec![], vec![("csrf", "0123456789abcdef0123456789abcdef")]] {
        let p = b.post("/console/keys", &form).await;
        assert_eq!(p.status, StatusCode::FORBIDDEN);
        assert!(p.body.contains("expired"), "{}", p.body);
    }
    let account = app.state.accounts.find(&app.account_id).await.unwrap();
    assert_eq!(app.state.accounts.keys_of(&account.id).await.unwrap().len(), keys_before.len(), "no key was made");
    // The right token passes, in the form or in htmx's header.
    let csrf = b.get("/console/keys").await.csrf();
    let made = b.post("/console/keys", &[("csrf", &csrf)]).await;
    assert_eq!(made.status, 200);
    assert!(made.body.contains("sk-"), "the new key is shown once");
}

#[tokio::test]
async fn another_accounts_task_is_not_found() {
    let app = console_app().await;
    let other = app.state.accounts.create("other", easel::money::Micros(5_000_000)).await.unwrap();
    let theirs = {
        let res = app
            .client
            .post(app.url("/api/v1/generateTask/seedream-5-0"))
            .bearer_auth(&other.key.key)
            .json(&common::seedream_t2i(1))
            .send()
            .await
            .unwrap();
        let body: serde_json::Value = res.json().await.unwrap();
        body["data"]["taskId"].as_str().unwrap().to_owned()
    };
    let mine = app.submit_ok("seedream-5-0", &common::seedream_t2i(1)).await;
    let mut b = Browser::new(&app);
    b.sign_in(&app.key).await;
    assert_eq!(b.get(&format!("/console/tasks/{mine}")).await.status, 200);
    for path in [
        format!("/console/tasks/{theirs}"),
        format!("/console/tasks/{theirs}/events"),
        "/console/tasks/task_nope".into(),
    ] {
        let p = b.get(&path).await;
        assert_eq!(p.status, StatusCode::NOT_FOUND, "{path}");
        assert!(!p.body.contains(&theirs) || path.ends_with("nope"), "nothing of theirs shows");
    }
    let csrf = b.get("/console").await.csrf();
    let cancel = b.post(&format!("/console/tasks/{theirs}/cancel"), &[("csrf", &csrf)]).await;
    assert_eq!(cancel.status, StatusCode::NOT_FOUND);
    // Nor are the operator's pages a user's.
    assert_eq!(b.get("/console/admin/accounts").await.status, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn a_playground_task_runs_and_shows_with_its_events_images_and_ledger() {
    let app = console_app().await;
    let mut b = Browser::new(&app);
    b.sign_in(&app.key).await;
    let page = b.get("/console/playground?model=gpt-image-1").await;
    assert_eq!(page.status, 200);
    assert!(page.body.contains(r#"name="prompt""#));
    assert!(page.body.contains(r#"name="quality""#), "the model's qualities are offered");
    let csrf = page.csrf();
    let form = reqwest::multipart::Form::new()
        .text("csrf", csrf.clone())
        .text("model", "gpt-image-1")
        .text("prompt", "a lighthouse at dusk")
        .text("n", "2")
        .text("size", "1024x1024")
        .text("quality", "low")
        .text("output_format", "png");
    let res = b
        .client
        .post(app.url("/console/playground"))
        .header("cookie", b.cookie_header())
        .multipart(form)
        .send()
        .await
        .unwrap();
    let created = b.take(res).await;
    assert_eq!(created.status, StatusCode::SEE_OTHER, "{}", created.body);
    let task_path = created.location.unwrap();
    let task_id = task_path.trim_start_matches("/console/tasks/").to_owned();
    let done = app.wait_for_state(&task_id, "success").await;
    assert_eq!(done["images"].as_array().unwrap().len(), 2);
    let page = b.get(&task_path).await;
    assert_eq!(page.status, 200);
    for shown in ["a lighthouse at dusk", "succeeded", "settle", "hold", "1024×1024"] {
        assert!(page.body.contains(shown), "{shown} on the task page");
    }
    assert!(page.body.matches("/files/results/").count() >= 2, "its images are linked");
    let tasks = b.get("/console/tasks?state=success").await;
    assert!(tasks.body.contains(&task_id));
    let failed = b.get("/console/tasks?state=failed").await;
    assert!(!failed.body.contains(&task_id), "the state filter filters");
    let gallery = b.get("/console/gallery").await;
    assert!(gallery.body.contains("a lighthouse at dusk"), "the gallery shows its images");
    let overview = b.get("/console").await;
    assert!(overview.body.contains("gpt-image-1"), "tasks by model");

    // A bad form comes back with the reason, and nothing is made.
    let before = app
        .state
        .tasks
        .list_filtered(&app.state.accounts.find(&app.account_id).await.unwrap().id, &Default::default(), 50, None)
        .await
        .unwrap()
        .len();
    let form = reqwest::multipart::Form::new()
        .text("csrf", csrf)
        .text("model", "gpt-image-1")
        .text("prompt", "x")
        .text("n", "99");
    let res = b
        .client
        .post(app.url("/console/playground"))
        .header("cookie", b.cookie_header())
        .multipart(form)
        .send()
        .await
        .unwrap();
    let refused = b.take(res).await;
    assert_eq!(refused.status, StatusCode::BAD_REQUEST);
    assert!(refused.body.contains("role=\"alert\""), "{}", refused.body);
    let after = app
        .state
        .tasks
        .list_filtered(&app.state.accounts.find(&app.account_id).await.unwrap().id, &Default::default(), 50, None)
        .await
        .unwrap()
        .len();
    assert_eq!(before, after);
}

#[tokio::test]
async fn the_playground_quote_prices_the_form_as_it_stands() {
    let app = console_app().await;
    let mut b = Browser::new(&app);
    b.sign_in(&app.key).await;
    let csrf = b.get("/console/playground").await.csrf();
    let quote = |n: &'static str, csrf: String| {
        reqwest::multipart::Form::new()
            .text("csrf", csrf)
            .text("model", "seedream-5-0")
            .text("prompt", "p")
            .text("n", n)
    };
    let res = b
        .client
        .post(app.url("/console/playground/quote"))
        .header("cookie", b.cookie_header())
        .multipart(quote("3", csrf.clone()))
        .send()
        .await
        .unwrap();
    let body = res.text().await.unwrap();
    // seedream-5-0 is $0.032 an image in the built-in catalog.
    assert!(body.contains("$0.096"), "{body}");
    let res = b
        .client
        .post(app.url("/console/playground/quote"))
        .header("cookie", b.cookie_header())
        .multipart(quote("3", "bad".into()))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn a_running_task_is_cancelled_from_its_page() {
    let app = spawn_app_with(|c| {
        c.admin_token = Some(ADMIN.into());
        c.local.latency_ms = 60_000;
    })
    .await;
    let id = app.submit_ok("seedream-5-0", &common::seedream_t2i(1)).await;
    app.wait_for_state(&id, "processing").await;
    let mut b = Browser::new(&app);
    b.sign_in(&app.key).await;
    let page = b.get(&format!("/console/tasks/{id}")).await;
    assert!(page.body.contains(&format!("/console/tasks/{id}/cancel")), "a cancel button");
    assert!(page.body.contains(&format!("data-events=\"/console/tasks/{id}/events?after=")), "a live timeline");
    let csrf = page.csrf();
    let p = b.post(&format!("/console/tasks/{id}/cancel"), &[("csrf", &csrf)]).await;
    assert_eq!(p.status, StatusCode::SEE_OTHER);
    let view = app.wait_for_state(&id, "cancelled").await;
    assert_eq!(view["chargedUsd"], json!(0.0));
    let after = b.get(&format!("/console/tasks/{id}")).await;
    assert!(after.body.contains("release"), "the released hold is in its ledger lines");
    common::assert_ledger_invariant(&app.state, &app.account_id).await;
}

#[tokio::test]
async fn the_timeline_streams_the_task_events_to_the_session() {
    let app = console_app().await;
    let mut b = Browser::new(&app);
    b.sign_in(&app.key).await;
    let id = app.submit_ok("seedream-5-0", &common::seedream_t2i(1)).await;
    app.wait_for_state(&id, "success").await;
    let res = b
        .client
        .get(app.url(&format!("/console/tasks/{id}/events?after=0")))
        .header("cookie", b.cookie_header())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert!(res.headers()["content-type"].to_str().unwrap().starts_with("text/event-stream"));
    let text = tokio::time::timeout(Duration::from_secs(20), res.text()).await.unwrap().unwrap();
    for event in ["event: created", "event: started", "event: image", "event: succeeded"] {
        assert!(text.contains(event), "{event} in {text}");
    }
}

#[tokio::test]
async fn keys_are_created_once_and_revoked_and_a_revoked_key_ends_its_session() {
    let app = console_app().await;
    let account = app.state.accounts.find(&app.account_id).await.unwrap();
    let second = app.state.accounts.issue_key(&account.id).await.unwrap();
    let mut b = Browser::new(&app);
    b.sign_in(&second.key).await;
    let csrf = b.get("/console/keys").await.csrf();
    let made = b.post("/console/keys", &[("csrf", &csrf)]).await;
    let new_key = made.body.split("sk-").nth(1).map(|rest| format!("sk-{}", &rest[..48])).expect("the new key");
    assert!(app.state.accounts.authenticate(&new_key).await.unwrap().is_some(), "the shown key works");
    assert!(!b.get("/console/keys").await.body.contains(&new_key), "and is not shown again");
    let p = b.post(&format!("/console/keys/{}/revoke", second.key_id), &[("csrf", &csrf)]).await;
    assert_eq!(p.status, StatusCode::SEE_OTHER);
    assert!(app.state.accounts.authenticate(&second.key).await.unwrap().is_none());
    assert_eq!(b.get("/console").await.status, StatusCode::SEE_OTHER, "the session of the revoked key ended");
    // A key of another account cannot be revoked from here.
    let other = app.state.accounts.create("someone", easel::money::Micros(0)).await.unwrap();
    let mut b = Browser::new(&app);
    b.sign_in(&new_key).await;
    let csrf = b.get("/console/keys").await.csrf();
    let p = b.post(&format!("/console/keys/{}/revoke", other.key.key_id), &[("csrf", &csrf)]).await;
    assert_eq!(p.status, StatusCode::NOT_FOUND);
    assert!(app.state.accounts.authenticate(&other.key.key).await.unwrap().is_some());
}

#[tokio::test]
async fn the_operator_adds_credits_sets_limits_and_sees_an_account_as_its_users_do() {
    let app = console_app().await;
    let mut b = Browser::new(&app);
    let p = b.sign_in(ADMIN).await;
    assert_eq!(p.location.as_deref(), Some("/console/admin"));
    for page in &PAGES[6..] {
        let p = b.get(page).await;
        assert_eq!(p.status, 200, "{page}");
    }
    // The node's first heartbeat is written as it starts serving.
    let node = app.state.config.server.node_id.clone().unwrap();
    let cookie = b.cookie_header();
    wait_until(Duration::from_secs(20), || async {
        let res = b.client.get(app.url("/console/admin/system")).header("cookie", &cookie).send().await.unwrap();
        res.text().await.unwrap().contains(&node).then_some(())
    })
    .await;
    let found = b.get("/console/admin/accounts?q=DEF").await;
    assert!(found.body.contains(&app.account_id), "search ignores case");
    let page = b.get(&format!("/console/admin/accounts/{}", app.account_id)).await;
    let csrf = page.csrf();
    let added = b
        .post(&format!("/console/admin/accounts/{}/credits", app.account_id), &[("csrf", &csrf), ("amount", "2.5")])
        .await;
    assert_eq!(added.status, 200);
    assert!(added.body.contains("$12.50"), "{}", added.body);
    let bad = b
        .post(&format!("/console/admin/accounts/{}/credits", app.account_id), &[("csrf", &csrf), ("amount", "-1")])
        .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    let limited = b
        .post(
            &format!("/console/admin/accounts/{}/limits", app.account_id),
            &[("csrf", &csrf), ("model", "seedream-5-0"), ("rpm", "7"), ("concurrency", "")],
        )
        .await;
    assert_eq!(limited.status, 200);
    let model = app.state.catalog.get("seedream-5-0").unwrap();
    let account = app.state.accounts.find(&app.account_id).await.unwrap();
    assert_eq!(easel::accounts::limits::effective(&app.state.db, &account.id, model).await.unwrap().rpm, 7);
    common::assert_ledger_invariant(&app.state, &app.account_id).await;

    let view = b.post(&format!("/console/admin/accounts/{}/view", app.account_id), &[("csrf", &csrf)]).await;
    assert_eq!(view.location.as_deref(), Some("/console"));
    let overview = b.get("/console").await;
    assert!(overview.body.contains("$12.50") && overview.body.contains(&app.account_id), "the user's overview");
    let leave = b.post("/console/admin/leave", &[("csrf", &csrf)]).await;
    assert_eq!(leave.status, StatusCode::SEE_OTHER);
    assert_eq!(b.get("/console").await.location.as_deref(), Some("/console/admin/accounts"), "no account chosen");

    // The channel test costs nobody anything; the switch holds for the router.
    let balance = app.state.accounts.find(&app.account_id).await.unwrap().balance;
    let tested = b.post("/console/admin/channels/local/test", &[("csrf", &csrf)]).await;
    assert_eq!(tested.status, 200);
    assert!(tested.body.contains("Test of local passed"), "{}", tested.body);
    assert_eq!(app.state.accounts.find(&app.account_id).await.unwrap().balance, balance);
    let off = b.post("/console/admin/channels/local/enabled", &[("csrf", &csrf), ("enabled", "false")]).await;
    assert_eq!(off.status, StatusCode::SEE_OTHER);
    assert!(!app.state.router.status()[0].enabled);
    assert!(b.get("/console/admin/channels").await.body.contains("Enable local"), "the button switches it back on");
    b.post("/console/admin/channels/local/enabled", &[("csrf", &csrf), ("enabled", "true")]).await;
    assert!(app.state.router.status()[0].enabled);
    let missing = b.post("/console/admin/channels/nope/test", &[("csrf", &csrf)]).await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);

    let created = b.post("/console/admin/accounts", &[("csrf", &csrf), ("name", "acme"), ("credits", "3")]).await;
    assert_eq!(created.status, 200);
    assert!(created.body.contains("whsec_") && created.body.contains("sk-"), "key and secret shown once");
    assert_eq!(app.state.accounts.find("acme").await.unwrap().balance, easel::money::Micros(3_000_000));
}

#[tokio::test]
async fn pages_speak_the_readers_language() {
    let app = console_app().await;
    let mut b = Browser::new(&app);
    b.sign_in(&app.key).await;
    let res = b
        .client
        .get(app.url("/console/tasks"))
        .header("cookie", b.cookie_header())
        .header("accept-language", "zh-CN,zh;q=0.9,en;q=0.5")
        .send()
        .await
        .unwrap();
    let body = res.text().await.unwrap();
    assert!(body.contains(r#"<html lang="zh-CN">"#) && body.contains("任务"), "Chinese from Accept-Language");
    let switched = b.get("/console/lang/en?back=/console/tasks").await;
    assert_eq!(switched.location.as_deref(), Some("/console/tasks"));
    let res = b
        .client
        .get(app.url("/console/tasks"))
        .header("cookie", b.cookie_header())
        .header("accept-language", "zh-CN")
        .send()
        .await
        .unwrap();
    assert!(res.text().await.unwrap().contains(r#"<html lang="en">"#), "the switch wins over the header");
    let away = b.get("/console/lang/zh-CN?back=https://evil.invalid/").await;
    assert_eq!(away.location.as_deref(), Some("/console"), "never back to another site");
    let missing = b.get("/console/no-such-page").await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    assert!(missing.body.starts_with("<!DOCTYPE html>"), "an HTML page, not a JSON envelope");
}
