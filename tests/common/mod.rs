//! Test helpers: the app on port 0 with a temp data dir, a local server for reference images,
//! and waiting for task states without fixed sleeps.
#![allow(dead_code)]

pub mod apixo_fake;
pub mod fakes;
pub mod fal_fake;
pub mod media;
pub mod process;
pub mod replicate_fake;
pub mod sse;

use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use easel::api::AppState;
use easel::{Application, Config};
use serde_json::{Value, json};
use tempfile::TempDir;
use tokio_util::sync::CancellationToken;

pub struct TestApp {
    pub base: String,
    pub key: String,
    pub account_id: String,
    pub client: reqwest::Client,
    pub state: AppState,
    pub shutdown: CancellationToken,
    pub data_dir: TempDir,
    /// The PostgreSQL database the app runs on, when the suite runs on PostgreSQL.
    pub database_url: Option<String>,
    server: tokio::task::JoinHandle<anyhow::Result<()>>,
}

pub fn test_config(data_dir: &TempDir) -> Config {
    let mut config =
        Config { listen: "127.0.0.1:0".parse().unwrap(), data_dir: data_dir.path().to_path_buf(), ..Config::default() };
    config.local.latency_ms = 0;
    // Stopping hands leases back at once; tests of the grace period set their own.
    config.server.shutdown_grace_secs = 0;
    config
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

pub async fn spawn_app_with(adjust: impl FnOnce(&mut Config)) -> TestApp {
    let data_dir = tempfile::tempdir().unwrap();
    let mut config = test_config(&data_dir);
    config.database_url = fresh_database_url().await;
    adjust(&mut config);
    let database_url = config.database_url.clone();
    let app = Application::build(config).await.expect("the app builds");
    let created = app.bootstrap.clone().expect("a fresh store bootstraps the default account");
    start(app, data_dir, database_url, created.key.key, created.account.id.to_string())
}

/// The database a new test app runs on: a fresh PostgreSQL database when the suite runs on
/// PostgreSQL (`EASEL_TEST_DATABASE=postgres`, under `EASEL_TEST_POSTGRES_URL`); otherwise
/// `None`, SQLite in the app's temp data dir.
pub async fn fresh_database_url() -> Option<String> {
    if std::env::var("EASEL_TEST_DATABASE").ok()?.as_str() != "postgres" {
        return None;
    }
    let server = std::env::var("EASEL_TEST_POSTGRES_URL").expect(
        "EASEL_TEST_DATABASE=postgres needs EASEL_TEST_POSTGRES_URL (e.g. postgres://postgres@127.0.0.1/postgres)",
    );
    Some(create_postgres_database(&server).await)
}

/// The PostgreSQL server for tests that need one whatever backend the suite runs on; `None`
/// (with the reason printed) when `EASEL_TEST_POSTGRES_URL` is unset, and the test is skipped.
pub fn postgres_server(test: &str) -> Option<String> {
    let url = std::env::var("EASEL_TEST_POSTGRES_URL").ok().filter(|u| !u.is_empty());
    if url.is_none() {
        eprintln!("skipping {test}: EASEL_TEST_POSTGRES_URL is not set");
    }
    url
}

/// The Redis server for tests that need one; `None` (with the reason printed) when
/// `EASEL_TEST_REDIS_URL` is unset, and the test is skipped.
pub fn redis_server(test: &str) -> Option<String> {
    let url = std::env::var("EASEL_TEST_REDIS_URL").ok().filter(|u| !u.is_empty());
    if url.is_none() {
        eprintln!("skipping {test}: EASEL_TEST_REDIS_URL is not set");
    }
    url
}

/// An S3-compatible server for tests (`EASEL_TEST_S3_ENDPOINT`, e.g. moto's).
pub struct S3Server {
    pub endpoint: String,
}

/// The S3 server for tests that need one; `None` (with the reason printed) when
/// `EASEL_TEST_S3_ENDPOINT` is unset, and the test is skipped.
pub fn s3_server(test: &str) -> Option<S3Server> {
    let endpoint = std::env::var("EASEL_TEST_S3_ENDPOINT").ok().filter(|u| !u.is_empty());
    if endpoint.is_none() {
        eprintln!("skipping {test}: EASEL_TEST_S3_ENDPOINT is not set");
    }
    Some(S3Server { endpoint: endpoint?.trim_end_matches('/').to_owned() })
}

impl S3Server {
    /// A new, empty bucket of the test's own.
    pub async fn create_bucket(&self) -> String {
        let bucket = format!("easel-t-{}", uuid::Uuid::now_v7().simple());
        let res = reqwest::Client::builder().no_proxy().build().unwrap().put(format!("{}/{bucket}", self.endpoint));
        let res = res.send().await.expect("the S3 server answers");
        assert!(res.status().is_success(), "creating bucket {bucket}: {}", res.status());
        bucket
    }

    /// The AWS_* environment pointing the AWS SDK conventions at this server.
    pub fn env(&self) -> Vec<(String, String)> {
        [
            ("AWS_ENDPOINT_URL", self.endpoint.as_str()),
            ("AWS_ACCESS_KEY_ID", "test"),
            ("AWS_SECRET_ACCESS_KEY", "test"),
            ("AWS_REGION", "us-east-1"),
            ("AWS_ALLOW_HTTP", "true"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
    }
}

/// Creates an empty database named `easel_t_…` on the server and returns its URL.
pub async fn create_postgres_database(server: &str) -> String {
    use sqlx::Connection;
    let name = format!("easel_t_{}", uuid::Uuid::now_v7().simple());
    let mut conn = sqlx::PgConnection::connect(server).await.expect("connecting to EASEL_TEST_POSTGRES_URL");
    sqlx::query(&format!("CREATE DATABASE {name}")).execute(&mut conn).await.expect("creating a test database");
    conn.close().await.ok();
    let mut url = url::Url::parse(server).expect("EASEL_TEST_POSTGRES_URL is a URL");
    url.set_path(&name);
    url.to_string()
}

fn start(
    app: Application,
    data_dir: TempDir,
    database_url: Option<String>,
    key: String,
    account_id: String,
) -> TestApp {
    let base = format!("http://{}", app.local_addr());
    let state = app.state().clone();
    let shutdown = CancellationToken::new();
    let server = tokio::spawn(app.run(shutdown.clone()));
    TestApp {
        base,
        key,
        account_id,
        client: reqwest::Client::builder().no_proxy().build().unwrap(),
        state,
        shutdown,
        data_dir,
        database_url,
        server,
    }
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// POSTs a JSON body to `generateTask/{model}` with the default key.
    pub async fn submit(&self, model: &str, body: &Value) -> (u16, Value) {
        let res = self
            .client
            .post(self.url(&format!("/api/v1/generateTask/{model}")))
            .bearer_auth(&self.key)
            .json(body)
            .send()
            .await
            .unwrap();
        (res.status().as_u16(), res.json().await.unwrap())
    }

    /// Submits and returns the task id, asserting acceptance.
    pub async fn submit_ok(&self, model: &str, body: &Value) -> String {
        let (status, json) = self.submit(model, body).await;
        assert_eq!(status, 200, "submit refused: {json}");
        assert_eq!(json["code"], 200);
        json["data"]["taskId"].as_str().expect("a taskId").to_owned()
    }

    pub async fn status(&self, model: &str, task_id: &str) -> (u16, Value) {
        let res = self
            .client
            .get(self.url(&format!("/api/v1/statusTask/{model}")))
            .query(&[("taskId", task_id)])
            .bearer_auth(&self.key)
            .send()
            .await
            .unwrap();
        (res.status().as_u16(), res.json().await.unwrap())
    }

    /// Polls until the task is `success` or `failed` and returns its `data` object.
    pub async fn wait_done(&self, model: &str, task_id: &str) -> Value {
        wait_until(Duration::from_secs(60), || async {
            let (status, json) = self.status(model, task_id).await;
            assert_eq!(status, 200, "status failed: {json}");
            let data = json["data"].clone();
            matches!(data["state"].as_str(), Some("success" | "failed")).then_some(data)
        })
        .await
    }

    /// Stops the app and starts a new one on the same data dir (a process restart).
    pub async fn restart(self, adjust: impl FnOnce(&mut Config)) -> TestApp {
        let (key, account_id, database_url) = (self.key.clone(), self.account_id.clone(), self.database_url.clone());
        let data_dir = self.stop().await;
        let mut config = test_config(&data_dir);
        config.database_url = database_url.clone();
        adjust(&mut config);
        let app = Application::build(config).await.expect("the app builds again");
        start(app, data_dir, database_url, key, account_id)
    }

    pub async fn stop(self) -> TempDir {
        self.shutdown.cancel();
        self.server.await.unwrap().unwrap();
        self.data_dir
    }
}

/// Calls `probe` every 25 ms until it yields a value, failing the test after `limit`.
pub async fn wait_until<T, F, Fut>(limit: Duration, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        assert!(tokio::time::Instant::now() < deadline, "condition not reached within {limit:?}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

pub fn result_urls(data: &Value) -> Vec<String> {
    assert_eq!(data["state"], "success", "task did not succeed: {data}");
    let result: Value = serde_json::from_str(data["resultJson"].as_str().expect("resultJson is a string")).unwrap();
    result["resultUrls"].as_array().unwrap().iter().map(|u| u.as_str().unwrap().to_owned()).collect()
}

/// The storage key a result link names.
pub fn key_of(url: &str) -> String {
    url.split("/files/").nth(1).unwrap().split('?').next().unwrap().to_owned()
}

/// The colour of [`green_png`], which an edit's result must show through.
const GREEN: [u8; 3] = [10, 200, 10];

/// A 64×64 PNG of [`GREEN`], for uploads to `/v1/images/edits`.
pub fn green_png() -> Vec<u8> {
    fakes::encoded(64, 64, GREEN, image::ImageFormat::Png)
}

/// How many pixels of `img` are clearly green.
pub fn green_pixels(img: &image::RgbImage) -> usize {
    img.pixels().filter(|p| p.0[1] > p.0[0] + 40 && p.0[1] > p.0[2] + 40).count()
}

/// Downloads and decodes an image, checking the served Content-Type against the bytes.
pub async fn download(client: &reqwest::Client, url: &str) -> (image::ImageFormat, image::DynamicImage) {
    let res = client.get(url).send().await.unwrap();
    assert_eq!(res.status(), 200, "download of {url}");
    let content_type = res.headers()[header::CONTENT_TYPE].to_str().unwrap().to_owned();
    let bytes = res.bytes().await.unwrap();
    let format = image::guess_format(&bytes).unwrap();
    assert_eq!(content_type, format.to_mime_type(), "Content-Type must match the bytes");
    (format, image::load_from_memory(&bytes).unwrap())
}

pub fn seedream_t2i(max_images: u32) -> Value {
    json!({"input": {"mode": "text-to-image", "prompt": "a lighthouse at dusk", "max_images": max_images}})
}

/// A loopback server standing in for the web: `/red.png`, `/blue.jpg`, `/page.png` (HTML
/// served as image/png) and 404 for anything else.
pub async fn spawn_reference_server() -> SocketAddr {
    fn encoded(color: [u8; 3], format: image::ImageFormat) -> Vec<u8> {
        let img = image::RgbImage::from_pixel(64, 48, image::Rgb(color));
        let mut out = std::io::Cursor::new(Vec::new());
        img.write_to(&mut out, format).unwrap();
        out.into_inner()
    }
    let red = encoded([220, 20, 20], image::ImageFormat::Png);
    let blue = encoded([20, 20, 220], image::ImageFormat::Jpeg);
    let app = Router::new()
        .route("/red.png", get(move || async move { ([(header::CONTENT_TYPE, "image/png")], red).into_response() }))
        .route("/blue.jpg", get(move || async move { ([(header::CONTENT_TYPE, "image/jpeg")], blue).into_response() }))
        .route("/page.png", get(|| async { ([(header::CONTENT_TYPE, "image/png")], "<html>not an image</html>") }));
    serve_on_loopback(app).await
}

/// Serves `app` on a free loopback port (a fake upstream, a web server) for the test's life.
pub async fn serve_on_loopback(app: Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

/// The ledger invariant: balance = credits added − settled − held, and every hold is settled,
/// released or still held, to the micro-dollar. Read in one statement, so that a task finishing
/// meanwhile cannot fall between the account's row and its ledger.
pub async fn assert_ledger_invariant(state: &AppState, account: &str) {
    let sum = |kind: &str| {
        format!(
            "CAST((SELECT COALESCE(SUM(amount_micros), 0) FROM ledger WHERE account_id = a.id AND kind = '{kind}') AS BIGINT)"
        )
    };
    let sql = format!(
        "SELECT a.balance_micros, a.held_micros, {}, {}, {}, {} FROM accounts a WHERE a.id = $1 OR a.name = $1",
        sum("credit"),
        sum("hold"),
        sum("settle"),
        sum("release")
    );
    let (balance, held, credit, hold, settle, release): (i64, i64, i64, i64, i64, i64) =
        sqlx::query_as(&sql).bind(account).fetch_one(&state.db.read).await.unwrap();
    let seen = format!(
        "balance {balance}, held {held}; ledger: credit {credit}, hold {hold}, settle {settle}, release {release}"
    );
    assert_eq!(balance, credit - settle - held, "balance vs ledger: {seen}");
    assert_eq!(held, hold - settle - release, "held vs ledger: {seen}");
    assert!(balance >= 0 && held >= 0, "{seen}");
}

impl TestApp {
    pub async fn get_json(&self, path: &str) -> (u16, Value) {
        let res = self.client.get(self.url(path)).bearer_auth(&self.key).send().await.unwrap();
        (res.status().as_u16(), res.json().await.unwrap())
    }
}

pub fn gpt_t2i(num_images: u32) -> Value {
    json!({"input": {"mode": "gpt-image-1", "prompt": "a paper boat", "num_images": num_images}})
}

/// Another node on `first`'s PostgreSQL database (with its own data dir), for multi-node
/// tests; `None` when the suite runs on SQLite, where one server owns the data.
pub async fn spawn_node(first: &TestApp, adjust: impl FnOnce(&mut Config)) -> Option<TestApp> {
    let database_url = first.database_url.clone()?;
    let data_dir = tempfile::tempdir().unwrap();
    let mut config = test_config(&data_dir);
    config.database_url = Some(database_url.clone());
    adjust(&mut config);
    let app = Application::build(config).await.expect("another node builds");
    Some(start(app, data_dir, Some(database_url), first.key.clone(), first.account_id.clone()))
}

impl TestApp {
    /// POSTs `body` to `path` with the default key and `headers`.
    pub async fn post_json(&self, path: &str, headers: &[(&str, &str)], body: &Value) -> (u16, Value) {
        let mut request = self.client.post(self.url(path)).bearer_auth(&self.key).json(body);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let res = request.send().await.unwrap();
        (res.status().as_u16(), res.json().await.unwrap())
    }

    /// The dialect-free view of a task (`GET /api/v1/tasks/{id}`'s `data`).
    pub async fn task_view(&self, id: &str) -> Value {
        let (status, body) = self.get_json(&format!("/api/v1/tasks/{id}")).await;
        assert_eq!(status, 200, "{body}");
        body["data"].clone()
    }

    /// Waits until the dialect-free view of a task is in `state`.
    pub async fn wait_for_state(&self, id: &str, state: &str) -> Value {
        self.wait_for_view(id, |view| view["state"] == state).await
    }

    /// Waits until a running task's progress reads `percent`.
    pub async fn wait_for_percent(&self, id: &str, percent: u32) -> Value {
        self.wait_for_view(id, |view| view["progress"]["percent"] == percent).await
    }

    async fn wait_for_view(&self, id: &str, done: impl Fn(&Value) -> bool) -> Value {
        wait_until(Duration::from_secs(60), || async {
            let view = self.task_view(id).await;
            done(&view).then_some(view)
        })
        .await
    }
}

/// The account's balance and held amount, in micro-dollars.
pub async fn balance(app: &TestApp) -> (i64, i64) {
    let account = app.state.accounts.find(&app.account_id).await.unwrap();
    (account.balance.0, account.held.0)
}

/// Asserts that `data` (a status answer) has `count` results, each re-hosted by Easel and an
/// image in `format` of `size`.
pub async fn assert_hosted_results(
    app: &TestApp,
    data: &Value,
    count: usize,
    format: image::ImageFormat,
    size: (u32, u32),
) {
    let urls = result_urls(data);
    assert_eq!(urls.len(), count, "{data}");
    for url in urls {
        assert!(url.starts_with(&app.base), "results are re-hosted by Easel: {url}");
        let (got, img) = download(&app.client, &url).await;
        assert_eq!(got, format, "{url}");
        assert_eq!((img.width(), img.height()), size, "{url}");
    }
}

/// `POST /admin/v1/channels/{id}/test` with the admin `token`; the test's outcome (`data`).
pub async fn test_channel(app: &TestApp, token: &str, channel: &str) -> Value {
    let url = app.url(&format!("/admin/v1/channels/{channel}/test"));
    let res = app.client.post(url).bearer_auth(token).send().await.unwrap();
    let status = res.status().as_u16();
    let body: Value = res.json().await.unwrap();
    assert_eq!(status, 200, "{body}");
    body["data"].clone()
}
