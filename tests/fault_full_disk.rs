//! Fault: the SQLite data dir on a 20 MB tmpfs that fills up (needs root to mount; skipped with a
//! reason otherwise). Every `taskId` handed out must be a committed row; while the database
//! cannot write, creates answer 503 with `Retry-After` in each dialect's envelope and `/readyz`
//! is 503; once space is back the server takes tasks again without a restart; callbacks carry
//! only final states. And on PostgreSQL: a database that refuses writes is a 503, not a 500.

mod common;

use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::routing::post;
use common::*;
use serde_json::{Value, json};

/// A tmpfs mounted for the test's life and unmounted (lazily, so that open files do not stop
/// it) when dropped, also when the test fails.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(size: &str) -> Result<Self, String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .output()
            .map_err(|e| format!("running mount: {e}"))?;
        if !out.status.success() {
            return Err(format!("mount -t tmpfs failed: {}", String::from_utf8_lossy(&out.stderr).trim()));
        }
        Ok(Self { dir })
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(self.dir.path()).status();
    }
}

/// Writes zeros to `path` until the file system says it is full.
fn fill(path: &Path) -> u64 {
    let mut file = std::fs::File::create(path).unwrap();
    let mut written = 0;
    for chunk in [1 << 20, 4096, 512] {
        let zeros = vec![0u8; chunk];
        while file.write_all(&zeros).is_ok() {
            written += chunk as u64;
        }
    }
    let _ = file.flush();
    written
}

/// The `data.state` of every callback received.
#[derive(Clone, Default)]
struct Callbacks(Arc<Mutex<Vec<String>>>);

async fn receive(State(seen): State<Callbacks>, body: Bytes) -> &'static str {
    let payload: Value = serde_json::from_slice(&body).unwrap_or_default();
    seen.0.lock().unwrap().push(payload["data"]["state"].as_str().unwrap_or("?").to_owned());
    "ok"
}

async fn callback_receiver() -> (Callbacks, String) {
    let seen = Callbacks::default();
    let app = Router::new().route("/hook", post(receive)).with_state(seen.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (seen, url)
}

fn task_body(callback: &str) -> Value {
    json!({"callback_url": callback, "input": {"mode": "gpt-image-1", "prompt": "a lighthouse in fog"}})
}

/// One submit: `Some(taskId)` when acknowledged, `None` when refused with 503 (anything else
/// fails the test).
async fn submit(app: &TestApp, body: &Value) -> Option<String> {
    let (status, json) = app.submit("gpt-image-1", body).await;
    match status {
        200 => Some(json["data"]["taskId"].as_str().expect("a taskId").to_owned()),
        503 => {
            assert_eq!(json["code"], 503, "the APIXO envelope: {json}");
            None
        }
        other => panic!("a submit answered {other}: {json}"),
    }
}

async fn readyz(app: &TestApp) -> u16 {
    app.client.get(app.url("/readyz")).send().await.unwrap().status().as_u16()
}

/// Each dialect's create answers 503 with `Retry-After` in its own envelope. On a nearly full
/// disk a write may still fit now and then; such a create is a committed task (counted by the
/// caller's check of the file), so each is tried a few times until it is refused.
async fn assert_each_dialect_refuses_with_503(app: &TestApp) {
    let creates = [
        ("/api/v1/generateTask/gpt-image-1", json!({"input": {"mode": "gpt-image-1", "prompt": "p"}})),
        ("/api/v1/images/generations", json!({"model": "gpt-image-1", "prompt": "p"})),
        ("/v1/images/generations", json!({"model": "gpt-image-1", "prompt": "p"})),
    ];
    for (path, body) in creates {
        let mut tries = 0;
        let res = loop {
            let res = app.client.post(app.url(path)).bearer_auth(&app.key).json(&body).send().await.unwrap();
            tries += 1;
            if res.status() == 503 || tries == 5 {
                break res;
            }
        };
        assert_eq!(res.status(), 503, "{path}");
        let retry_after: u64 = res.headers()["retry-after"].to_str().unwrap().parse().unwrap();
        assert!(retry_after > 0, "{path}: Retry-After {retry_after}");
        let json: Value = res.json().await.unwrap();
        if path.starts_with("/v1/") {
            assert_eq!(json["error"]["type"], "server_error", "{path}: {json}");
            assert_eq!(json["error"]["code"], "service_unavailable", "{path}: {json}");
        } else {
            assert_eq!(json["code"], 503, "{path}: {json}");
            let message = json.get("message").or(json.get("msg")).and_then(Value::as_str).unwrap();
            assert!(message.contains("retry later"), "{path}: {json}");
        }
    }
}

#[tokio::test]
async fn a_full_disk_refuses_tasks_with_503_and_loses_none_it_acknowledged() {
    if common::fresh_database_url().await.is_some() {
        println!("SKIPPED fault_full_disk: the SQLite case; the suite runs on PostgreSQL");
        return;
    }
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_ansi(false)
        .with_test_writer()
        .try_init();
    let tmpfs = match Tmpfs::mount("20m") {
        Ok(tmpfs) => tmpfs,
        Err(why) => {
            println!("SKIPPED fault_full_disk: needs root to mount a tmpfs ({why})");
            return;
        }
    };
    let data_dir: PathBuf = tmpfs.path().join("data");
    // Result files live elsewhere: the fault under test is the database's.
    let files = tempfile::tempdir().unwrap();
    let storage_url = format!("file://{}", files.path().display());
    let app = spawn_app_with(|c| {
        c.data_dir = data_dir.clone();
        c.database_url = None;
        c.storage_url = Some(storage_url);
        c.server.allow_private_network = true;
        c.server.bootstrap_credits_usd = 1000.0;
        // A /v1 create that does get stored does not wait long for an image the full disk keeps.
        c.server.openai_wait_secs = 1;
    })
    .await;
    let (callbacks, hook) = callback_receiver().await;
    let body = task_body(&hook);
    let mut acknowledged = Vec::new();
    let mut refused = 0;

    for _ in 0..5 {
        acknowledged.push(submit(&app, &body).await.expect("room on the disk"));
    }
    assert_eq!(readyz(&app).await, 200);

    let filled = fill(&tmpfs.path().join("filler"));
    // SQLite may still fit a few writes into space its WAL already has; submit until it cannot.
    let mut first_refusal = None;
    for n in 0..500 {
        match submit(&app, &body).await {
            Some(id) => acknowledged.push(id),
            None => {
                refused += 1;
                first_refusal = Some(n);
                break;
            }
        }
    }
    let first_refusal = first_refusal.expect("a full disk refuses tasks");
    let mut accepted_while_full = 0;
    for _ in 0..20 {
        match submit(&app, &body).await {
            Some(id) => {
                accepted_while_full += 1;
                acknowledged.push(id);
            }
            None => refused += 1,
        }
    }
    assert_each_dialect_refuses_with_503(&app).await;
    assert_eq!(readyz(&app).await, 503, "not ready while the database cannot write");

    std::fs::remove_file(tmpfs.path().join("filler")).unwrap();
    // No restart: submits are taken again, and the node is ready again.
    let first = wait_until(Duration::from_secs(15), || async { submit(&app, &body).await }).await;
    acknowledged.push(first);
    assert_eq!(readyz(&app).await, 200);
    for _ in 0..20 {
        acknowledged.push(submit(&app, &body).await.expect("space is back"));
    }

    // Every acknowledged task is in the file, as another connection reads it.
    let url = format!("sqlite://{}?mode=ro", data_dir.join("easel.db").display());
    let other = sqlx::SqlitePool::connect(&url).await.unwrap();
    let stored: Vec<String> = sqlx::query_scalar("SELECT id FROM tasks").fetch_all(&other).await.unwrap();
    let stored: BTreeSet<String> = stored.into_iter().collect();
    other.close().await;
    let lost: Vec<&String> = acknowledged.iter().filter(|id| !stored.contains(*id)).collect();
    for id in &acknowledged {
        let (status, json) = app.status("gpt-image-1", id).await;
        assert_eq!(status, 200, "statusTask {id}: {json}");
    }
    assert_ledger_invariant(&app.state, "default").await;
    // The tasks end (those whose finish met the full disk are taken back when their lease runs
    // out) and their callbacks carry only final states.
    wait_until(Duration::from_secs(5), || async { (!callbacks.0.lock().unwrap().is_empty()).then_some(()) }).await;
    let states = callbacks.0.lock().unwrap().clone();
    let not_final: Vec<&String> = states.iter().filter(|s| !matches!(s.as_str(), "success" | "failed")).collect();

    println!(
        "fault_full_disk: filler {} kB; first refusal after {first_refusal} submits on the full disk; \
         acknowledged {}, refused 503 {refused}, accepted while full {accepted_while_full}, lost {}; \
         callbacks received {}, with a non-final state {}",
        filled / 1024,
        acknowledged.len(),
        lost.len(),
        states.len(),
        not_final.len()
    );
    assert!(lost.is_empty(), "acknowledged but never stored: {lost:?}");
    assert!(not_final.is_empty(), "callbacks with non-final states: {not_final:?}");
    app.stop().await;
}

/// PostgreSQL that turns read-only (as it does on a full disk or a demoted primary) makes creates
/// 503 with `Retry-After` and `/readyz` 503, and the node recovers when writes are allowed again.
#[tokio::test]
async fn postgres_refusing_writes_answers_503_and_recovers() {
    let Some(server) = common::postgres_server("fault_full_disk postgres") else { return };
    let url = common::create_postgres_database(&server).await;
    let database = url.rsplit('/').next().unwrap().to_owned();
    let admin = sqlx::PgPool::connect(&server).await.unwrap();
    let app = spawn_app_with(|c| c.database_url = Some(url.clone())).await;
    let body = json!({"input": {"mode": "gpt-image-1", "prompt": "a quay"}});
    assert!(submit(&app, &body).await.is_some());

    // New sessions are read-only; the app's current ones are cut, so it reconnects into them.
    let set = |on: bool| {
        let value = if on { "on" } else { "off" };
        format!("ALTER DATABASE \"{database}\" SET default_transaction_read_only = {value}")
    };
    let cut = format!(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{database}' AND pid <> pg_backend_pid()"
    );
    sqlx::query(&set(true)).execute(&admin).await.unwrap();
    sqlx::query(&cut).execute(&admin).await.unwrap();
    let mut refused = 0;
    for _ in 0..5 {
        let (status, json) = app.submit("gpt-image-1", &body).await;
        assert_eq!(status, 503, "a write the database refuses: {json}");
        refused += 1;
    }
    assert_each_dialect_refuses_with_503(&app).await;
    assert_eq!(readyz(&app).await, 503);

    sqlx::query(&set(false)).execute(&admin).await.unwrap();
    sqlx::query(&cut).execute(&admin).await.unwrap();
    let recovered = wait_until(Duration::from_secs(15), || async { submit(&app, &body).await }).await;
    assert_eq!(readyz(&app).await, 200);
    println!("fault_full_disk postgres: refused 503 {refused} while read-only, then accepted {recovered}");
    app.stop().await;
    admin.close().await;
}
