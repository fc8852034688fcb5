//! The real `easel` binary: the operator CLI, a server killed with SIGKILL mid-task whose
//! restart finishes the task and settles its credits exactly once, and a server stopped with
//! SIGTERM or Ctrl-C (SIGINT) that exits 0 after finishing its tasks or handing them back.

mod common;

use std::path::Path;
use std::time::Duration;

use common::wait_until;
use easel::db::{Db, now_ms};
use serde_json::{Value, json};
use sqlx::Row;
use tokio::process::{Child, Command};

const EASEL: &str = env!("CARGO_BIN_EXE_easel");

async fn easel(data_dir: &Path) -> Command {
    common::process::easel_on(data_dir).await
}

async fn cli_json(data_dir: &Path, args: &[&str]) -> Value {
    let out = easel(data_dir).await.args(args).output().await.unwrap();
    assert!(out.status.success(), "easel {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)))
}

/// Starts `easel serve` on a free port and returns it with its base URL.
async fn serve(data_dir: &Path) -> (Child, String) {
    let served = common::process::serve(easel(data_dir).await).await;
    (served.child, served.base)
}

#[tokio::test]
async fn operator_cli_manages_accounts_keys_and_credits() {
    let dir = tempfile::tempdir().unwrap();
    let created = cli_json(dir.path(), &["accounts", "create", "--name", "acme", "--credits", "2.5", "--json"]).await;
    let account = created["account_id"].as_str().unwrap();
    assert!(account.starts_with("acct_"));
    assert!(created["key"].as_str().unwrap().starts_with("sk-"));
    assert!(created["webhook_secret"].as_str().unwrap().starts_with("whsec_"));
    assert_eq!(created["balance"], 2.5);

    let key = cli_json(dir.path(), &["keys", "create", "--account", account, "--json"]).await;
    assert!(key["key_id"].as_str().unwrap().starts_with("key_"));
    assert_ne!(key["key"], created["key"]);

    let out = easel(dir.path())
        .await
        .args(["credits", "add", "--account", account, "--amount", "1.25"])
        .output()
        .await
        .unwrap();
    assert!(out.status.success());
    let shown = cli_json(dir.path(), &["accounts", "show", account, "--json"]).await;
    assert_eq!(shown["balance"], 3.75);
    assert_eq!(shown["name"], "acme");

    let limits = easel(dir.path())
        .await
        .args(["accounts", "set-limits", account, "--model", "seedream-5-0", "--rpm", "5", "--concurrency", "2"])
        .output()
        .await
        .unwrap();
    assert!(limits.status.success());
    assert_eq!(String::from_utf8_lossy(&limits.stdout).trim(), "acme on seedream-5-0: 5 per minute, 2 at once");
    let unknown =
        easel(dir.path()).await.args(["accounts", "set-limits", account, "--model", "nope"]).output().await.unwrap();
    assert!(!unknown.status.success());
    let rotated = cli_json(dir.path(), &["accounts", "rotate-webhook-secret", account, "--json"]).await;
    assert!(rotated["webhook_secret"].as_str().unwrap().starts_with("whsec_"));
    assert_ne!(rotated["webhook_secret"], created["webhook_secret"]);

    let revoke =
        easel(dir.path()).await.args(["keys", "revoke", key["key_id"].as_str().unwrap()]).output().await.unwrap();
    assert!(revoke.status.success());
    // Revoking twice, or an unknown account, is an error with a message.
    let again =
        easel(dir.path()).await.args(["keys", "revoke", key["key_id"].as_str().unwrap()]).output().await.unwrap();
    assert!(!again.status.success());
    let missing = easel(dir.path()).await.args(["accounts", "show", "acct_nope"]).output().await.unwrap();
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("does not exist"));
    let dup = easel(dir.path()).await.args(["accounts", "create", "--name", "acme"]).output().await.unwrap();
    assert!(String::from_utf8_lossy(&dup.stderr).contains("already exists"));
}

#[tokio::test]
async fn first_start_prints_a_working_key_once() {
    let dir = tempfile::tempdir().unwrap();
    let mut first = common::process::serve(easel(dir.path()).await).await;
    let key = first.printed.iter().find_map(|line| line.strip_prefix("API key (shown once, keep it): "));
    let key = key.expect("the bootstrap key is printed").to_owned();
    first.child.kill().await.unwrap();
    let shown = cli_json(dir.path(), &["accounts", "show", "default", "--json"]).await;
    assert_eq!(shown["balance"], 10.0);
    // A second start does not create another account or print a key.
    let (mut again, base) = serve(dir.path()).await;
    let res = reqwest::Client::new()
        .get(format!("{base}/api/v1/statusTask/seedream-5-0?taskId=task_none"))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 404, "the printed key authenticates");
    again.kill().await.unwrap();
}

/// A data dir with a config file and one account, driven over HTTP with that account's key.
struct Site {
    dir: tempfile::TempDir,
    key: String,
    client: reqwest::Client,
}

impl Site {
    async fn new(config: &str, credits: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("easel.toml"), config).unwrap();
        let args = ["accounts", "create", "--name", "t", "--credits", credits, "--json"];
        let created = cli_json(dir.path(), &args).await;
        let key = created["key"].as_str().unwrap().to_owned();
        Self { dir, key, client: reqwest::Client::builder().no_proxy().build().unwrap() }
    }

    /// The JSON answer to a GET, or `None` while the server cannot answer.
    async fn get(&self, base: &str, path: &str) -> Option<Value> {
        let res = self.client.get(format!("{base}{path}")).bearer_auth(&self.key).send().await.ok()?;
        res.json::<Value>().await.ok()
    }

    async fn submit(&self, base: &str, model: &str, body: &Value) -> String {
        let url = format!("{base}/api/v1/generateTask/{model}");
        let res = self.client.post(url).bearer_auth(&self.key).json(body).send().await.unwrap();
        res.json::<Value>().await.unwrap()["data"]["taskId"].as_str().unwrap().to_owned()
    }

    /// Polls a task until its state is one of `states`, and returns its status object.
    async fn wait_state(&self, base: &str, model: &str, task: &str, states: &[&str]) -> Value {
        let path = format!("/api/v1/statusTask/{model}?taskId={task}");
        wait_until(Duration::from_secs(60), || async {
            let data = self.get(base, &path).await?["data"].clone();
            states.contains(&data["state"].as_str()?).then_some(data)
        })
        .await
    }
}

#[tokio::test]
async fn sigkill_mid_task_then_restart_finishes_it_and_settles_once() {
    // Slow enough that the task is surely in flight when the process dies. (On SQLite the restart
    // takes the dead process's leases back at once; on PostgreSQL they run out, hence short ones.)
    let site = Site::new("[local]\nlatency_ms = 4000\n[server]\nlease_secs = 3\n", "1").await;
    let (mut first, base) = serve(site.dir.path()).await;
    let body = json!({"input": {"mode": "text-to-image", "prompt": "a phoenix", "max_images": 2}});
    let task = site.submit(&base, "seedream-5-0", &body).await;
    site.wait_state(&base, "seedream-5-0", &task, &["processing"]).await;
    first.start_kill().unwrap();
    first.wait().await.unwrap();
    let held = cli_json(site.dir.path(), &["accounts", "show", "t", "--json"]).await;
    assert_eq!(held["held"], 0.064, "the hold survives the crash");

    let (mut second, base) = serve(site.dir.path()).await;
    let done = site.wait_state(&base, "seedream-5-0", &task, &["success", "failed"]).await;
    assert_eq!(done["state"], "success", "{done}");
    let urls: Value = serde_json::from_str(done["resultJson"].as_str().unwrap()).unwrap();
    assert_eq!(urls["resultUrls"].as_array().unwrap().len(), 2);
    second.kill().await.unwrap();
    let after = cli_json(site.dir.path(), &["accounts", "show", "t", "--json"]).await;
    assert_eq!((after["balance"].as_f64(), after["held"].as_f64()), (Some(0.936), Some(0.0)));
}

#[tokio::test]
async fn sigkill_while_tasks_settle_leaves_the_ledger_exact() {
    // Many short tasks, four at a time: settlements follow each other continuously.
    let site = Site::new("[local]\nlatency_ms = 400\n[server]\nworkers = 4\nlease_secs = 3\n", "5").await;
    let (mut first, base) = serve(site.dir.path()).await;
    let body = json!({"input": {"mode": "gpt-image-1", "prompt": "a lantern"}});
    let mut tasks = Vec::new();
    for _ in 0..40 {
        tasks.push(site.submit(&base, "gpt-image-1", &body).await);
    }
    // Kill as soon as some tasks have settled and others are still running.
    wait_until(Duration::from_secs(30), || async {
        let account = site.get(&base, "/api/v1/account").await?;
        account["data"]["held"].as_f64().filter(|held| *held < 1.5)
    })
    .await;
    first.start_kill().unwrap();
    first.wait().await.unwrap();

    let (mut second, base) = serve(site.dir.path()).await;
    for task in &tasks {
        site.wait_state(&base, "gpt-image-1", task, &["success", "failed"]).await;
    }
    let ledger = site.get(&base, "/api/v1/account/ledger?limit=200").await.unwrap();
    let entries = ledger["data"]["entries"].as_array().unwrap();
    let mut settled = 0.0;
    for task in &tasks {
        let of_task: Vec<&Value> = entries.iter().filter(|e| e["taskId"] == task.as_str()).collect();
        for kind in ["hold", "settle", "release"] {
            assert_eq!(of_task.iter().filter(|e| e["kind"] == kind).count(), 1, "{task}: {of_task:?}");
        }
        settled += of_task.iter().find(|e| e["kind"] == "settle").unwrap()["amount"].as_f64().unwrap();
    }
    let account = site.get(&base, "/api/v1/account").await.unwrap();
    second.kill().await.unwrap();
    assert_eq!(account["data"]["held"], 0.0);
    let balance = account["data"]["balance"].as_f64().unwrap();
    assert!((balance - (5.0 - settled)).abs() < 1e-9, "balance {balance}, settled {settled}");
}

#[tokio::test]
async fn generate_command_waits_and_saves_images() {
    let app = common::spawn_app().await;
    let out = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| {
        let mut cmd = Command::new(EASEL);
        cmd.args(args).env("EASEL_URL", &app.base).env("EASEL_API_KEY", &app.key);
        cmd.output()
    };
    let done = run(&[
        "generate",
        "--model",
        "gpt-image-1",
        "--prompt",
        "a paper crane",
        "--n",
        "2",
        "--wait",
        "--out",
        out.path().to_str().unwrap(),
    ])
    .await
    .unwrap();
    assert!(done.status.success(), "{}", String::from_utf8_lossy(&done.stderr));
    let paths: Vec<String> = String::from_utf8_lossy(&done.stdout).lines().map(str::to_owned).collect();
    assert_eq!(paths.len(), 2, "{paths:?}");
    for path in &paths {
        let img = image::open(path).unwrap();
        assert_eq!((img.width(), img.height()), (1024, 1024));
    }
    let seedream = run(&[
        "generate",
        "--model",
        "seedream-5-0",
        "--prompt",
        "dunes",
        "--size",
        "1280x720",
        "--wait",
        "--out",
        out.path().to_str().unwrap(),
    ])
    .await
    .unwrap();
    assert!(seedream.status.success(), "{}", String::from_utf8_lossy(&seedream.stderr));
    let path = String::from_utf8_lossy(&seedream.stdout).trim().to_owned();
    assert_eq!(image::image_dimensions(&path).unwrap(), (1280, 720));

    let queued = run(&["generate", "--model", "gpt-image-1", "--prompt", "later"]).await.unwrap();
    assert!(String::from_utf8_lossy(&queued.stdout).trim().starts_with("task_"));
    let refused = run(&["generate", "--model", "gpt-image-1", "--prompt", ""]).await.unwrap();
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("prompt"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
}

/// Sends `signal` with kill(1) and returns the exit code and how long the exit took.
async fn stop_with(mut server: Child, signal: &str) -> (Option<i32>, Duration) {
    let pid = server.id().unwrap().to_string();
    let started = std::time::Instant::now();
    let sent = std::process::Command::new("kill").args([&format!("-{signal}"), &pid]).status().unwrap();
    assert!(sent.success());
    let status = tokio::time::timeout(Duration::from_secs(30), server.wait()).await.expect("it exits").unwrap();
    (status.code(), started.elapsed())
}

/// (state, lease_until) of every task, read from a stopped server's database.
async fn task_rows(dir: &Path) -> Vec<(String, Option<i64>)> {
    let url = std::fs::read_to_string(dir.join("test-database-url"))
        .unwrap_or_else(|_| format!("sqlite://{}?mode=rw", dir.join("easel.db").display()));
    let db = Db::connect(&url).await.unwrap();
    let rows = sqlx::query("SELECT state, lease_until FROM tasks").fetch_all(&db.read).await.unwrap();
    let rows = rows.iter().map(|r| (r.get("state"), r.get("lease_until"))).collect();
    db.close().await;
    rows
}

#[tokio::test]
async fn sigterm_hands_back_tasks_that_outlast_the_grace_period() {
    let site = Site::new("[local]\nlatency_ms = 600000\n[server]\nshutdown_grace_secs = 1\n", "1").await;
    let (server, base) = serve(site.dir.path()).await;
    let body = json!({"input": {"mode": "gpt-image-1", "prompt": "a lantern"}});
    for _ in 0..2 {
        let task = site.submit(&base, "gpt-image-1", &body).await;
        site.wait_state(&base, "gpt-image-1", &task, &["processing"]).await;
    }
    let (code, took) = stop_with(server, "TERM").await;
    assert_eq!(code, Some(0));
    assert!(took >= Duration::from_secs(1), "the tasks had their grace period ({took:?})");
    let rows = task_rows(site.dir.path()).await;
    assert_eq!(rows.len(), 2);
    for (state, lease_until) in rows {
        // Handed back: still processing, but with a lease that has already run out, so the next
        // claim (on any node) takes it without waiting out the 30 s lease.
        assert_eq!(state, "processing");
        assert!(lease_until.unwrap() < now_ms(), "the lease is released, not left to expire");
    }
}

#[tokio::test]
async fn ctrl_c_lets_tasks_finish_within_the_grace_period() {
    let site = Site::new("[local]\nlatency_ms = 8000\n[server]\nshutdown_grace_secs = 20\n", "1").await;
    let (server, base) = serve(site.dir.path()).await;
    let body = json!({"input": {"mode": "gpt-image-1", "prompt": "a lantern"}});
    let task = site.submit(&base, "gpt-image-1", &body).await;
    site.wait_state(&base, "gpt-image-1", &task, &["processing"]).await;
    let (code, took) = stop_with(server, "INT").await;
    assert_eq!(code, Some(0));
    assert!(took < Duration::from_secs(15), "it exits as soon as the task is done ({took:?})");
    let rows = task_rows(site.dir.path()).await;
    assert_eq!(rows, [("success".to_owned(), None)], "the task finished before the exit");
}

/// `easel` run where there is no database: the default data dir, relative to `cwd`.
fn easel_without_a_data_dir(cwd: &Path) -> Command {
    let mut cmd = Command::new(EASEL);
    cmd.current_dir(cwd).env_remove("EASEL_CONFIG").env_remove("EASEL_DATA_DIR").env_remove("EASEL_DATABASE_URL");
    cmd
}

#[tokio::test]
async fn account_commands_refuse_to_create_a_database_and_name_the_one_they_use() {
    let elsewhere = tempfile::tempdir().unwrap();
    let commands: [&[&str]; 5] = [
        &["accounts", "create", "--name", "acme", "--json"],
        &["accounts", "show", "default", "--json"],
        &["keys", "create", "--account", "default", "--json"],
        &["keys", "revoke", "key_nope"],
        &["credits", "add", "--account", "default", "--amount", "5"],
    ];
    for args in commands {
        let out = easel_without_a_data_dir(elsewhere.path()).args(args).output().await.unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} must fail: {stderr}");
        assert!(out.stdout.is_empty(), "{args:?} printed {:?}", String::from_utf8_lossy(&out.stdout));
        let looked_for = elsewhere.path().join("easel-data").join("easel.db");
        assert!(stderr.contains(&looked_for.display().to_string()), "{args:?} names where it looked: {stderr}");
        for way in ["--data-dir", "EASEL_DATA_DIR", "EASEL_DATABASE_URL"] {
            assert!(stderr.contains(way), "{args:?} says how to point at the database ({way}): {stderr}");
        }
        assert!(!elsewhere.path().join("easel-data").exists(), "{args:?} created a data dir");
    }

    // Pointed at the server's data dir, they work, say on stderr which database they used, and
    // keep `--json` output one object.
    let site = tempfile::tempdir().unwrap();
    let mut first = common::process::serve(easel(site.path()).await).await;
    first.child.kill().await.unwrap();
    let mut show = easel_without_a_data_dir(elsewhere.path());
    show.args(["accounts", "show", "default", "--json"]).env("EASEL_DATA_DIR", site.path());
    if let Ok(url) = std::fs::read_to_string(site.path().join("test-database-url")) {
        show.env("EASEL_DATABASE_URL", url);
    }
    let out = show.output().await.unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let shown: Value = serde_json::from_slice(&out.stdout).expect("stdout is one JSON object");
    assert_eq!(shown["balance"], 10.0);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.starts_with("database: "), "{stderr}");
    assert!(!stderr.contains("creating"), "{stderr}");
    if !std::path::Path::new(&site.path().join("test-database-url")).exists() {
        assert!(stderr.contains(&site.path().join("easel.db").display().to_string()), "{stderr}");
    }
    assert!(!elsewhere.path().join("easel-data").exists());
}

/// A callback receiver whose first request hangs (the attempt is in flight when the server
/// dies) and whose later ones are answered 200.
#[derive(Clone, Default)]
struct HangingOnce {
    got: std::sync::Arc<std::sync::Mutex<Vec<std::time::Instant>>>,
}

async fn hang_once(axum::extract::State(r): axum::extract::State<HangingOnce>) -> &'static str {
    let first = {
        let mut got = r.got.lock().unwrap();
        got.push(std::time::Instant::now());
        got.len() == 1
    };
    if first {
        std::future::pending::<()>().await;
    }
    "ok"
}

#[tokio::test]
async fn sigkill_then_restart_frees_callbacks_and_idempotency_keys_at_once() {
    if common::fresh_database_url().await.is_some() {
        println!("SKIPPED: a SQLite server frees what a dead process left; PostgreSQL nodes wait out the leases");
        return;
    }
    let receiver = HangingOnce::default();
    let app = axum::Router::new().route("/hook", axum::routing::post(hang_once)).with_state(receiver.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hook = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let site = Site::new("[server]\nallow_private_network = true\n[webhooks]\nattempt_timeout_secs = 30\n", "1").await;
    let (mut first, base) = serve(site.dir.path()).await;
    let body = json!({"callback_url": hook, "input": {"mode": "gpt-image-1", "prompt": "a kite"}});
    let task = site.submit(&base, "gpt-image-1", &body).await;
    // The first attempt is in flight (the receiver holds it) when the process dies.
    wait_until(Duration::from_secs(20), || async { (!receiver.got.lock().unwrap().is_empty()).then_some(()) }).await;
    first.start_kill().unwrap();
    first.wait().await.unwrap();

    // What a request with an Idempotency-Key leaves when its process dies between claiming the
    // key and committing its task: the key, with no task.
    let retried = json!({"input": {"mode": "gpt-image-1", "prompt": "a retried kite"}});
    let idem = easel::tasks::idempotency::Idempotency::new("kite-1", "apixo/gpt-image-1", &retried).unwrap();
    let db = Db::connect(&format!("sqlite://{}?mode=rw", site.dir.path().join("easel.db").display())).await.unwrap();
    let account: String =
        sqlx::query_scalar("SELECT id FROM accounts WHERE name = 't'").fetch_one(&db.read).await.unwrap();
    sqlx::query("INSERT INTO idempotency_keys (account_id, key, request_hash, created_at) VALUES ($1, $2, $3, $4)")
        .bind(&account)
        .bind(&idem.key)
        .bind(&idem.fingerprint)
        .bind(now_ms())
        .execute(&db.write)
        .await
        .unwrap();
    db.close().await;

    let restarted = std::time::Instant::now();
    let (mut second, base) = serve(site.dir.path()).await;
    // The idempotent retry goes through at once instead of meeting 409 for a minute.
    let res = site
        .client
        .post(format!("{base}/api/v1/generateTask/gpt-image-1"))
        .bearer_auth(&site.key)
        .header("Idempotency-Key", "kite-1")
        .json(&retried)
        .send()
        .await
        .unwrap();
    let status = res.status();
    let answer: Value = res.json().await.unwrap();
    assert_eq!(status, 200, "{answer}");
    assert!(answer["data"]["taskId"].as_str().unwrap().starts_with("task_"));
    // The callback is sent again at once, not after the dead attempt's 60 s lease.
    let resent = wait_until(Duration::from_secs(20), || async {
        let got = receiver.got.lock().unwrap().clone();
        got.get(1).copied()
    })
    .await;
    wait_until(Duration::from_secs(10), || async {
        let list = site.get(&base, &format!("/api/v1/callbacks?taskId={task}")).await?;
        list["data"].as_array()?.iter().any(|d| d["state"] == "delivered").then_some(())
    })
    .await;
    let after = resent.saturating_duration_since(restarted);
    println!("restart: callback re-sent {after:?} after the restart; idempotent retry answered {status}");
    assert!(after < Duration::from_secs(20), "{after:?}");
    second.kill().await.unwrap();
}
