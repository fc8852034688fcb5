//! Fault: PNG bombs against the real `easel` binary. Sixteen 13000×13000 bombs on one
//! gpt-image-1 task (and a few such tasks at once) used to get the server OOM-killed, and the
//! task killed it again on every restart. Now each such task fails with INVALID_IMAGE_URL from
//! the image headers, the server stays up, and its peak RSS stays far below one bomb's decode.
//! A second case kills the server with SIGKILL while it works on a task, again and again: the
//! task ends `failed` with its credit released instead of running for ever.
//!
//! Prints its figures (`--nocapture`): peak RSS, outcomes, restarts and kills.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::media::*;
use serde_json::{Value, json};
use sqlx::Row;
use tokio::process::{Child, Command};

const GPT: &str = "gpt-image-1";
/// Bombs per task (the most gpt-image-1 takes) and tasks at once.
const BOMBS: usize = 16;
const TASKS: usize = 4;
/// The server's peak RSS may not pass this. One bomb decoded as RGB is 507 MB, so a server that
/// decoded even one would fail; a server that only reads headers stays at its idle size
/// (about 20-40 MB) plus the fetched bytes (16 × 4 × ~0.5 MB) and the near-limit decodes,
/// which the decode budget serialises.
const MAX_PEAK_RSS_MIB: u64 = 400;

async fn easel(data_dir: &Path, env: &[(&str, &str)]) -> Command {
    let mut cmd = common::process::easel_on(data_dir).await;
    cmd.env("EASEL_SERVER__ALLOW_PRIVATE_NETWORK", "true");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd
}

/// The server's database, opened beside it (SQLite in WAL mode allows a second reader).
async fn database(data_dir: &Path) -> easel::db::Db {
    let url = std::fs::read_to_string(data_dir.join("test-database-url"))
        .unwrap_or_else(|_| format!("sqlite://{}?mode=rw", data_dir.join("easel.db").display()));
    easel::db::Db::connect(&url).await.unwrap()
}

struct Server {
    child: Child,
    base: String,
    client: reqwest::Client,
}

async fn start(data_dir: &Path, env: &[(&str, &str)], key: &mut Option<String>) -> Server {
    let served = common::process::serve(easel(data_dir, env).await).await;
    if let Some(k) = served.printed.iter().find_map(|l| l.strip_prefix("API key (shown once, keep it): ")) {
        *key = Some(k.to_owned());
    }
    Server { child: served.child, base: served.base, client: reqwest::Client::builder().no_proxy().build().unwrap() }
}

impl Server {
    async fn submit(&self, key: &str, body: &Value) -> String {
        let res = self.client.post(format!("{}/api/v1/generateTask/{GPT}", self.base)).bearer_auth(key).json(body);
        let json: Value = res.send().await.unwrap().json().await.unwrap();
        json["data"]["taskId"].as_str().unwrap_or_else(|| panic!("submit refused: {json}")).to_owned()
    }

    async fn status(&self, key: &str, task: &str) -> Value {
        let res = self.client.get(format!("{}/api/v1/statusTask/{GPT}", self.base)).query(&[("taskId", task)]);
        let json: Value = res.bearer_auth(key).send().await.unwrap().json().await.unwrap();
        json["data"].clone()
    }

    async fn wait_done(&self, key: &str, task: &str) -> Value {
        common::wait_until(Duration::from_secs(60), || async {
            let data = self.status(key, task).await;
            matches!(data["state"].as_str(), Some("success" | "failed")).then_some(data)
        })
        .await
    }

    /// (balance, held) in USD.
    async fn account(&self, key: &str) -> (f64, f64) {
        let res = self.client.get(format!("{}/api/v1/account", self.base)).bearer_auth(key).send().await.unwrap();
        let json: Value = res.json().await.unwrap();
        (json["data"]["balance"].as_f64().unwrap(), json["data"]["held"].as_f64().unwrap())
    }

    fn alive(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }
}

#[tokio::test]
async fn png_bombs_do_not_take_the_server_down() {
    let bomb = png_bomb(13_000, 13_000);
    // Within the 50 MP limit: decoded for real, under the shared budget.
    let near_limit = png_bomb(7_000, 7_000);
    let host = serve_pngs(vec![("/bomb.png", bomb.clone()), ("/big.png", near_limit)]).await;
    let dir = tempfile::tempdir().unwrap();
    let mut key = None;
    let mut server = start(dir.path(), &[("EASEL_LOCAL__LATENCY_MS", "0")], &mut key).await;
    let key = key.expect("the first start prints a key");
    let pid = server.child.id().unwrap();
    let idle = peak_rss_mib(pid);

    let started = Instant::now();
    let bombs = json!({"input": {"mode": "gpt-image-1", "prompt": "a boat", "num_images": 1,
        "image_urls": vec![format!("http://{host}/bomb.png"); BOMBS]}});
    let big = json!({"input": {"mode": "gpt-image-1", "prompt": "a boat", "num_images": 1,
        "image_urls": vec![format!("http://{host}/big.png"); 4]}});
    let mut tasks = Vec::new();
    for _ in 0..TASKS {
        tasks.push(server.submit(&key, &bombs).await);
    }
    let big_task = server.submit(&key, &big).await;
    let mut outcomes = Vec::new();
    for task in &tasks {
        let data = server.wait_done(&key, task).await;
        assert_eq!(data["failCode"], "INVALID_IMAGE_URL", "{data}");
        assert!(data["failMsg"].as_str().unwrap().contains("13000×13000"), "{data}");
        outcomes.push(format!("{}/{}", data["state"].as_str().unwrap(), data["failCode"].as_str().unwrap()));
    }
    let big_data = server.wait_done(&key, &big_task).await;
    assert_eq!(big_data["state"], "success", "a 49 MP reference is within the limits: {big_data}");
    let elapsed = started.elapsed();
    let peak = peak_rss_mib(pid);
    let alive = server.alive();
    let (balance, held) = server.account(&key).await;

    println!("fault_png_bomb: bomb PNG {} bytes declaring 13000x13000", bomb.len());
    println!("fault_png_bomb: {TASKS} tasks x {BOMBS} bombs -> {outcomes:?}");
    println!("fault_png_bomb: near-limit task (4 x 7000x7000) -> {}", big_data["state"]);
    println!("fault_png_bomb: server RSS idle {idle:?} MiB, peak (VmHWM) {peak:?} MiB, bound {MAX_PEAK_RSS_MIB} MiB");
    println!("fault_png_bomb: server alive {alive}, restarts needed 0, in {:.1} s", elapsed.as_secs_f64());
    println!("fault_png_bomb: balance {balance} USD, held {held} USD");
    assert!(alive, "the server died");
    assert_eq!(held, 0.0);
    // Only the one successful task is charged (one image, cents).
    assert!(balance < 10.0 && balance > 9.9, "balance {balance}");
    if let Some(peak) = peak {
        assert!(peak < MAX_PEAK_RSS_MIB, "peak RSS {peak} MiB");
    } else {
        println!("fault_png_bomb: /proc/{pid}/status is not readable; RSS not checked");
    }
    server.child.kill().await.unwrap();
}

#[tokio::test]
async fn a_task_that_keeps_killing_its_server_ends_failed() {
    let dir = tempfile::tempdir().unwrap();
    // The task sleeps for ever in the local channel; short leases so that PostgreSQL (where a
    // start-up does not expire leases) takes it back quickly too.
    let env = [("EASEL_LOCAL__LATENCY_MS", "100000000"), ("EASEL_SERVER__LEASE_SECS", "3")];
    let mut key = None;
    let mut server = start(dir.path(), &env, &mut key).await;
    let key = key.expect("the first start prints a key");
    let task = server.submit(&key, &common::gpt_t2i(1)).await;
    let (start_balance, _) = server.account(&key).await;
    let started = Instant::now();
    let mut kills: i64 = 0;
    let db = database(dir.path()).await;
    let data = loop {
        // Wait until this start's worker has the task (or has ended it).
        let claimed = common::wait_until(Duration::from_secs(30), || async {
            let row = sqlx::query("SELECT attempts, state FROM tasks WHERE id = $1")
                .bind(&task)
                .fetch_one(&db.read)
                .await
                .unwrap();
            let (attempts, state): (i64, String) = (row.get("attempts"), row.get("state"));
            (attempts > kills || state == "failed" || state == "success").then_some(state)
        })
        .await;
        // After the third kill the claim itself finds the task interrupted enough and ends it
        // (it may read `processing` for a moment first).
        if claimed != "processing" || kills == 3 {
            break server.wait_done(&key, &task).await;
        }
        // Working on it: kill -9, as the OOM killer would, and start again.
        server.child.start_kill().unwrap();
        server.child.wait().await.unwrap();
        kills += 1;
        assert!(kills <= 3, "the task was still running after {kills} kills");
        server = start(dir.path(), &env, &mut None).await;
    };
    let (balance, held) = server.account(&key).await;
    println!(
        "fault_poison_task: kills {kills}, outcome {}/{}: {}, in {:.1} s",
        data["state"],
        data["failCode"],
        data["failMsg"],
        started.elapsed().as_secs_f64()
    );
    println!("fault_poison_task: balance {start_balance} -> {balance} USD, held {held} USD");
    db.close().await;
    assert_eq!(kills, 3);
    assert_eq!(data["state"], "failed");
    assert_eq!(data["failCode"], "GENERATION_FAILED");
    assert_eq!(held, 0.0, "the hold is released");
    assert!(balance >= start_balance, "nothing charged: {start_balance} -> {balance}");
    assert!(server.alive());
    server.child.kill().await.unwrap();
}
