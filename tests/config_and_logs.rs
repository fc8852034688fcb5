//! Which configuration file the server reads (only the one named, or `./easel.toml`; never one
//! in a parent directory), that it says so, and how its log lines look off a terminal.

mod common;

use std::path::Path;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// A configuration that an observer can see: loopback references are fetched only with it.
const OPEN_NETWORK: &str = "[server]\nallow_private_network = true\n";

struct Server {
    _child: Child,
    base: String,
    key: String,
    /// Every line the server wrote to stderr so far.
    logs: Arc<Mutex<Vec<String>>>,
}

impl Server {
    /// `easel serve` in `dir`, with a clean environment plus `env`.
    async fn start(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Server {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_easel"));
        cmd.current_dir(dir)
            .env_clear()
            .envs(env.iter().copied())
            .args(args)
            .args(["--data-dir", "data", "serve", "--listen", "127.0.0.1:0"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = cmd.spawn().expect("easel starts");
        let logs = Arc::new(Mutex::new(Vec::new()));
        let mut stderr = BufReader::new(child.stderr.take().unwrap()).lines();
        let sink = logs.clone();
        tokio::spawn(async move {
            while let Ok(Some(line)) = stderr.next_line().await {
                sink.lock().unwrap().push(line);
            }
        });
        let mut stdout = BufReader::new(child.stdout.take().unwrap()).lines();
        let (mut key, mut base) = (None, None);
        tokio::time::timeout(Duration::from_secs(30), async {
            while let Some(line) = stdout.next_line().await.unwrap() {
                if let Some(k) = line.strip_prefix("API key (shown once, keep it): ") {
                    key = Some(k.to_owned());
                }
                if let Some(url) = line.strip_prefix("Easel listening on ") {
                    base = Some(url.to_owned());
                    return;
                }
            }
        })
        .await
        .unwrap_or_else(|_| panic!("the server listens within 30 s; it logged {:?}", logs.lock().unwrap()));
        let (Some(key), Some(base)) = (key, base) else {
            panic!("the server exited before listening; it logged {:?}", logs.lock().unwrap())
        };
        Server { _child: child, base, key, logs }
    }

    /// The first log line containing `needle`, waiting for it to be written.
    async fn log_line(&self, needle: &str) -> String {
        common::wait_until(Duration::from_secs(10), || async {
            self.logs.lock().unwrap().iter().find(|line| line.contains(needle)).cloned()
        })
        .await
    }

    /// Whether a reference on loopback is fetched (`allow_private_network`) or refused.
    async fn fetches_loopback(&self) -> bool {
        let refs = common::spawn_reference_server().await;
        let client = reqwest::Client::builder().no_proxy().build().unwrap();
        let body = json!({"input": {"mode": "image-to-image", "prompt": "p", "max_images": 1,
            "image_urls": [format!("http://{refs}/red.png")]}});
        let url = format!("{}/api/v1/generateTask/seedream-5-0", self.base);
        let res: Value =
            client.post(url).bearer_auth(&self.key).json(&body).send().await.unwrap().json().await.unwrap();
        let task = res["data"]["taskId"].as_str().unwrap().to_owned();
        let status = format!("{}/api/v1/statusTask/seedream-5-0?taskId={task}", self.base);
        let data = common::wait_until(Duration::from_secs(30), || async {
            let res = client.get(&status).bearer_auth(&self.key).send().await.ok()?;
            let data = res.json::<Value>().await.ok()?["data"].clone();
            matches!(data["state"].as_str(), Some("success" | "failed")).then_some(data)
        })
        .await;
        data["state"] == "success"
    }
}

#[tokio::test]
async fn an_easel_toml_in_a_parent_directory_is_not_read() {
    let root = tempfile::tempdir().unwrap();
    std::fs::write(root.path().join("easel.toml"), OPEN_NETWORK).unwrap();
    let child = root.path().join("a").join("b");
    std::fs::create_dir_all(&child).unwrap();
    let server = Server::start(&child, &[], &[]).await;
    assert!(!server.fetches_loopback().await, "the parent's allow_private_network was not applied");
    let line = server.log_line("configuration file").await;
    assert!(line.contains("no configuration file"), "{line}");
    // Off a terminal, text logs carry no colour codes.
    let logs = server.logs.lock().unwrap().clone();
    assert!(!logs.is_empty());
    assert!(logs.iter().all(|l| !l.contains('\u{1b}')), "ANSI codes in {logs:?}");
}

#[tokio::test]
async fn an_easel_toml_in_the_working_directory_is_read_and_named_in_json_logs() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("easel.toml"), OPEN_NETWORK).unwrap();
    let server = Server::start(dir.path(), &[], &[("EASEL_LOG_FORMAT", "json")]).await;
    assert!(server.fetches_loopback().await);
    let line = server.log_line("configuration file").await;
    let event: Value = serde_json::from_str(&line).expect("a JSON object");
    assert_eq!(event["fields"]["message"], "loaded the configuration file", "{line}");
    let named = event["fields"]["file"].as_str().unwrap();
    assert_eq!(Path::new(named), dir.path().canonicalize().unwrap().join("easel.toml").as_path());
    assert_eq!(event["level"], "INFO");
}

#[tokio::test]
async fn log_format_json_writes_one_object_per_line() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("elsewhere.toml");
    std::fs::write(&config, OPEN_NETWORK).unwrap();
    let config = config.to_str().unwrap();
    let server = Server::start(dir.path(), &["--log-format", "json", "--config", config], &[]).await;
    assert!(server.fetches_loopback().await, "the named file was read");
    let line = server.log_line("configuration file").await;
    assert!(line.contains("elsewhere.toml"), "{line}");
    let logs = server.logs.lock().unwrap().clone();
    assert!(logs.len() >= 2, "{logs:?}");
    for line in &logs {
        let event: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line:?}"));
        assert!(event["timestamp"].is_string() && event["level"].is_string() && event["fields"].is_object(), "{line}");
    }
}

#[tokio::test]
async fn a_mistake_in_the_catalog_stops_the_start_naming_its_key() {
    let cases = [
        (
            "[models.\"house\"]\nfamily = \"dall-e\"\nprice_usd = 0.1\n",
            "[models.\"house\"].family: unknown family \"dall-e\"",
        ),
        (
            "[models.\"house\"]\nfamily = \"gpt-image\"\nprice_usd = nan\n",
            "[models.\"house\"].price_usd: NaN is not a finite",
        ),
        (
            "[models.\"house\"]\nfamily = \"gpt-image\"\nprice_usd = 0.1\naliases = [\"seedream-5-0\"]\n",
            "already names",
        ),
        ("[models.\"seedream-5-0\"]\ncapabilities = [\"mask\"]\n", "the seedream family cannot do mask"),
        (
            "[models.\"house\"]\nfamily = \"gpt-image\"\nprice_usd = 0.1\nsizes = [\"8192x8192\"]\n",
            "[models.\"house\"].sizes",
        ),
        (
            "[models.\"house\"]\nfamily = \"gpt-image\"\nprice_usd = 0.1\ncolour = \"red\"\n",
            "unknown field: found `colour`",
        ),
    ];
    for (table, expected) in cases {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("easel.toml"), table).unwrap();
        let mut cmd = common::process::easel_on(dir.path()).await;
        let out = cmd.args(["serve", "--listen", "127.0.0.1:0"]).output().await.unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{table} started");
        assert!(stderr.contains(expected), "{table}: {stderr}");
    }
}
