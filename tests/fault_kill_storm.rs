//! Fault suite: a kill -9 storm under mixed load. Real `easel serve` processes are killed with
//! SIGKILL at seeded random moments while clients submit through all three dialects (APIXO,
//! unified, OpenAI), with and without `Idempotency-Key` retries and callbacks, and poll; each
//! killed node is restarted on the same data and port. Afterwards every acknowledged `taskId`
//! must exist and be finished, no task may be left unfinished, every task must be charged
//! exactly delivered images × price, the ledger must balance to the micro-dollar with nothing
//! held, and no idempotent retry may have created a second task.
//!
//! One test runs a single SQLite node, the other two nodes on one PostgreSQL database (skipped,
//! saying so, without `EASEL_TEST_POSTGRES_URL`). `EASEL_STORM_SEED=N` replays a storm's kill
//! and load schedule. Run with `cargo test --test fault_kill_storm -- --nocapture` for the
//! figures.

mod common;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::State;
use axum::routing::post;
use easel::db::Db;
use futures::StreamExt;
use serde_json::{Value, json};
use sqlx::Row;
use tokio::process::{Child, Command};

const EASEL: &str = env!("CARGO_BIN_EXE_easel");

/// Small renders (a 2K square takes 1.2 s, a 1280×720 one about 0.26 s) so that tasks are in
/// flight at every kill; a short OpenAI wait so that some `/v1` calls end in 504; quick callback
/// retries; limits off, so every refusal the clients see comes from a fault.
const CONFIG: &str = r#"
[server]
allow_private_network = true
limits = false
lease_secs = 3
openai_wait_secs = 2
bootstrap_credits_usd = 1000.0
workers = 8
shutdown_grace_secs = 0

[local]
latency_ms = 1200

[webhooks]
retry_delays_ms = [250, 500, 1000]
max_gap_secs = 2
attempt_timeout_secs = 2
"#;

/// Concurrent clients, and the pause each takes between its requests.
const CLIENTS: usize = 4;
const PACE_MS: (u64, u64) = (200, 500);
/// How long a node runs between its restart and the next kill, and how long it stays dead.
const UP_MS: (u64, u64) = (1200, 3200);
const DOWN_MS: (u64, u64) = (0, 400);
/// How long an idempotent request is retried through kills before its client gives up on it.
const IDEM_PATIENCE: Duration = Duration::from_secs(8);
/// Bounds on waiting, after the storm, for tasks and callbacks to finish.
const DRAIN: Duration = Duration::from_secs(60);
const CALLBACK_DRAIN: Duration = Duration::from_secs(15);

/// splitmix64: a seeded schedule without another crate.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    fn millis(&mut self, (lo, hi): (u64, u64)) -> Duration {
        Duration::from_millis(lo + self.below(hi - lo + 1))
    }
}

/// `EASEL_STORM_SEED`, or one from the clock; printed either way so a storm can be replayed.
fn storm_seed() -> u64 {
    match std::env::var("EASEL_STORM_SEED") {
        Ok(seed) => seed.parse().expect("EASEL_STORM_SEED is an integer"),
        Err(_) => std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64,
    }
}

/// A free loopback port below Linux's ephemeral range (32768 and up), so that no outgoing
/// connection can take it while its server is dead.
fn free_port(rng: &mut Rng) -> u16 {
    for _ in 0..500 {
        let port = 20_000 + rng.below(12_000) as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free loopback port between 20000 and 32000");
}

/// One `easel serve` that can be killed and started again on the same data and port.
struct Node {
    name: &'static str,
    listen: String,
    base: String,
    data_dir: PathBuf,
    config: PathBuf,
    env: Vec<(String, String)>,
    child: Option<Child>,
}

impl Node {
    fn new(name: &'static str, port: u16, data_dir: PathBuf, config: PathBuf, env: Vec<(String, String)>) -> Self {
        let listen = format!("127.0.0.1:{port}");
        let base = format!("http://{listen}");
        Self { name, listen, base, data_dir, config, env, child: None }
    }

    fn command(&self) -> Command {
        let mut cmd = Command::new(EASEL);
        cmd.arg("--data-dir").arg(&self.data_dir).arg("--config").arg(&self.config);
        for var in ["EASEL_CONFIG", "EASEL_DATABASE_URL", "EASEL_STORAGE_URL", "EASEL_PUBLIC_URL", "EASEL_LISTEN"] {
            cmd.env_remove(var);
        }
        cmd.env_remove("EASEL_ROLE").env_remove("EASEL_REDIS_URL").env_remove("EASEL_ADMIN_TOKEN");
        cmd.envs(self.env.iter().cloned()).env("EASEL_SERVER__NODE_ID", self.name);
        cmd
    }

    /// Starts the node and waits until it listens; returns what it printed before.
    async fn start(&mut self) -> Vec<String> {
        assert!(self.child.is_none(), "{} is already running", self.name);
        let log = std::fs::OpenOptions::new().create(true).append(true).open(self.log_path()).unwrap();
        let served = common::process::serve_at(self.command(), &self.listen, log.into()).await;
        assert_eq!(served.base, self.base, "{} listens where its clients point", self.name);
        self.child = Some(served.child);
        served.printed
    }

    /// The node's log, over all its runs.
    fn log_path(&self) -> PathBuf {
        self.config.with_file_name(format!("{}.log", self.name))
    }

    /// The warnings and errors of its log, for a failed storm's report.
    fn log_problems(&self) -> Vec<String> {
        let log = std::fs::read_to_string(self.log_path()).unwrap_or_default();
        let problems = log.lines().filter(|l| l.contains("WARN") || l.contains("ERROR"));
        let problems: Vec<String> = problems.map(|l| format!("{}: {l}", self.name)).collect();
        problems[problems.len().saturating_sub(30)..].to_vec()
    }

    /// SIGKILL, and wait until the process is gone.
    async fn kill9(&mut self) {
        let mut child = self.child.take().expect("a running node");
        child.start_kill().unwrap();
        child.wait().await.unwrap();
    }
}

/// The loopback callback receiver: every (taskId, state) it was sent, in order.
type Calls = Arc<Mutex<Vec<(String, String)>>>;

async fn spawn_callback_receiver() -> (String, Calls) {
    async fn receive(State(calls): State<Calls>, body: axum::body::Bytes) -> &'static str {
        let json: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        let task = json["data"]["taskId"].as_str().unwrap_or("?").to_owned();
        let state = json["data"]["state"].as_str().unwrap_or("?").to_owned();
        calls.lock().unwrap().push((task, state));
        "ok"
    }
    let calls = Calls::default();
    let app = Router::new().route("/cb", post(receive)).with_state(calls.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/cb", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, calls)
}

/// How a request is made and how its task is polled.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Route {
    /// APIXO `generateTask/seedream-5-0`.
    Seedream,
    /// APIXO `generateTask/gpt-image-1`.
    Gpt,
    /// Unified `/api/v1/images/generations`.
    Unified,
    /// OpenAI `/v1/images/generations`, which waits for the task.
    OpenAi,
}

impl Route {
    fn create_path(self) -> &'static str {
        match self {
            Route::Seedream => "/api/v1/generateTask/seedream-5-0",
            Route::Gpt => "/api/v1/generateTask/gpt-image-1",
            Route::Unified => "/api/v1/images/generations",
            Route::OpenAi => "/v1/images/generations",
        }
    }

    fn status_url(self, base: &str, task: &str) -> String {
        match self {
            Route::Seedream => format!("{base}/api/v1/statusTask/seedream-5-0?taskId={task}"),
            Route::Gpt | Route::OpenAi => format!("{base}/api/v1/statusTask/gpt-image-1?taskId={task}"),
            Route::Unified => format!("{base}/api/v1/images/generations?task_id={task}"),
        }
    }

    /// A request body whose prompt is `marker`, so that the task it made can be found later.
    fn body(self, marker: &str, callback: Option<&str>, rng: &mut Rng) -> Value {
        let gpt_images = [1, 1, 1, 2, 2, 4][rng.below(6) as usize];
        let mut body = match self {
            Route::Seedream => json!({"input": {"mode": "text-to-image", "prompt": marker,
                "max_images": 1 + rng.below(2), "size": "1280x720", "output_format": "jpeg"}}),
            Route::Gpt => json!({"input": {"mode": "gpt-image-1", "prompt": marker,
                "num_images": gpt_images}}),
            Route::Unified => json!({"model": "gpt-image-1", "prompt": marker, "size": "1024x1024",
                "n": 1 + rng.below(2)}),
            Route::OpenAi => json!({"model": "gpt-image-1", "prompt": marker, "n": 1, "response_format": "url"}),
        };
        if let Some(url) = callback {
            body["callback_url"] = json!(url);
            if matches!(self, Route::Seedream | Route::Gpt) {
                body["request_type"] = json!("callback");
            }
        }
        body
    }
}

/// What one create request came to.
enum Outcome {
    /// A 200 (or an OpenAI answer naming its task): these tasks must exist and finish.
    Acked {
        tasks: Vec<String>,
        replayed: bool,
    },
    /// The connection failed or the server answered 5xx: the task may or may not exist.
    Unknown,
    /// 409: an earlier request with this Idempotency-Key is (or died) in flight.
    Busy,
    Refused(u16),
}

/// The task a result link of Easel's names (`/files/results/<shard>/<task>-<n>.<ext>`).
fn task_of_link(link: &str) -> Option<String> {
    let key = link.split("/files/").nth(1)?.split('?').next()?;
    let file = key.split('/').find(|part| part.starts_with("task_"))?;
    file.split('-').next().map(str::to_owned)
}

async fn create(
    http: &reqwest::Client,
    base: &str,
    key: &str,
    route: Route,
    body: &Value,
    idem: Option<&str>,
) -> Outcome {
    let mut req = http.post(format!("{base}{}", route.create_path())).bearer_auth(key).json(body);
    if let Some(idem) = idem {
        req = req.header("Idempotency-Key", idem);
    }
    let Ok(res) = req.send().await else { return Outcome::Unknown };
    let status = res.status().as_u16();
    let replayed = res.headers().get("idempotent-replayed").is_some_and(|v| v == "true");
    let named = res.headers().get("x-easel-task-id").and_then(|v| v.to_str().ok()).map(str::to_owned);
    let Ok(json) = res.json::<Value>().await else { return Outcome::Unknown };
    match (route, status) {
        (Route::OpenAi, 200) => {
            let links = json["data"].as_array().into_iter().flatten().filter_map(|image| image["url"].as_str());
            let tasks: HashSet<String> = links.filter_map(task_of_link).collect();
            assert_eq!(tasks.len(), 1, "one /v1 call, one task: {json}");
            Outcome::Acked { tasks: tasks.into_iter().collect(), replayed }
        }
        // A 504 names the task that goes on; a failed task's error names it too.
        (Route::OpenAi, _) if named.is_some() => Outcome::Acked { tasks: vec![named.unwrap()], replayed },
        (_, 200) => match json["data"]["taskId"].as_str() {
            Some(task) => Outcome::Acked { tasks: vec![task.to_owned()], replayed },
            None => panic!("a 200 without a taskId: {json}"),
        },
        (_, 409) => Outcome::Busy,
        (_, s) if s >= 500 => Outcome::Unknown,
        (_, s) => Outcome::Refused(s),
    }
}

/// A task the server acknowledged.
#[derive(Clone)]
struct Acked {
    task: String,
    route: Route,
    marker: String,
    callback: bool,
}

#[derive(Default)]
struct Tally {
    requests: u64,
    acked: Vec<Acked>,
    unknown: u64,
    refused: BTreeMap<u16, u64>,
    idempotent: u64,
    replays: u64,
    /// Idempotent requests still unanswered (connection errors or 409) after their patience.
    idem_gave_up: u64,
    /// A repeated idempotent request that named a different task than the first answer.
    replay_mismatches: Vec<String>,
    /// Acknowledged tasks a status poll answered 404 for.
    vanished: HashSet<String>,
    polls: u64,
}

/// What the clients share.
struct Load {
    http: reqwest::Client,
    bases: Vec<String>,
    key: String,
    callback_url: String,
    stop: AtomicBool,
    tally: Mutex<Tally>,
}

impl Load {
    /// One status poll; a 404 for an acknowledged task is recorded. `None` if the server could
    /// not answer; otherwise whether the task has finished.
    async fn poll(&self, base: &str, acked: &Acked) -> Option<bool> {
        let res = self.http.get(acked.route.status_url(base, &acked.task)).bearer_auth(&self.key).send().await.ok()?;
        let status = res.status().as_u16();
        let json: Value = res.json().await.ok()?;
        let mut tally = self.tally.lock().unwrap();
        tally.polls += 1;
        if status == 404 {
            tally.vanished.insert(acked.task.clone());
            return Some(false);
        }
        if status != 200 {
            return None;
        }
        Some(matches!(json["data"]["state"].as_str(), Some("success" | "completed" | "failed")))
    }

    /// One client's requests until the storm ends.
    async fn client(self: Arc<Self>, id: usize, mut rng: Rng) {
        let mut n = 0;
        while !self.stop.load(Ordering::Relaxed) {
            n += 1;
            let marker = format!("storm {id}-{n}");
            let route = [Route::Seedream, Route::Seedream, Route::Gpt, Route::Gpt, Route::Unified, Route::OpenAi]
                [rng.below(6) as usize];
            // /v1 takes neither callbacks nor (today) Idempotency-Key.
            let callback = route != Route::OpenAi && rng.chance(30);
            let idem = (route != Route::OpenAi && rng.chance(35)).then(|| format!("storm-{id}-{n}"));
            let body = route.body(&marker, callback.then_some(self.callback_url.as_str()), &mut rng);
            let base = &self.bases[rng.below(self.bases.len() as u64) as usize];
            let outcome = match &idem {
                None => create(&self.http, base, &self.key, route, &body, None).await,
                Some(key) => self.create_idempotent(&mut rng, route, &body, key).await,
            };
            let mut polled = None;
            {
                let mut tally = self.tally.lock().unwrap();
                tally.requests += 1;
                tally.idempotent += u64::from(idem.is_some());
                match outcome {
                    Outcome::Acked { tasks, replayed } => {
                        tally.replays += u64::from(replayed);
                        for task in tasks {
                            let acked = Acked { task, route, marker: marker.clone(), callback };
                            tally.acked.push(acked.clone());
                            polled = Some(acked);
                        }
                    }
                    Outcome::Unknown | Outcome::Busy if idem.is_some() => tally.idem_gave_up += 1,
                    Outcome::Unknown | Outcome::Busy => tally.unknown += 1,
                    Outcome::Refused(status) => *tally.refused.entry(status).or_default() += 1,
                }
            }
            // Some tasks are polled at once: one just acknowledged must already be found.
            if let Some(acked) = polled.filter(|_| rng.chance(50)) {
                self.poll(base, &acked).await;
                // Some idempotent requests are sent again on purpose: the same task must come back.
                if let Some(key) = idem.as_deref().filter(|_| rng.chance(40)) {
                    let again = create(&self.http, base, &self.key, route, &body, Some(key)).await;
                    if let Outcome::Acked { tasks, replayed } = again {
                        let mut tally = self.tally.lock().unwrap();
                        tally.replays += u64::from(replayed);
                        if tasks != [acked.task.clone()] || !replayed {
                            tally.replay_mismatches.push(format!("{key}: {} then {tasks:?}", acked.task));
                        }
                    }
                }
            }
            tokio::time::sleep(rng.millis(PACE_MS)).await;
        }
    }

    /// Sends an idempotent request until it is answered, through kills (connection errors,
    /// 5xx) and 409s, for at most [`IDEM_PATIENCE`].
    async fn create_idempotent(&self, rng: &mut Rng, route: Route, body: &Value, key: &str) -> Outcome {
        let give_up = Instant::now() + IDEM_PATIENCE;
        loop {
            // Each try may go to another node.
            let base = &self.bases[rng.below(self.bases.len() as u64) as usize];
            match create(&self.http, base, &self.key, route, body, Some(key)).await {
                Outcome::Unknown | Outcome::Busy if Instant::now() < give_up => {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                outcome => return outcome,
            }
        }
    }

    /// Polls random acknowledged tasks while the storm goes on.
    async fn poller(self: Arc<Self>, mut rng: Rng) {
        while !self.stop.load(Ordering::Relaxed) {
            let pick = {
                let tally = self.tally.lock().unwrap();
                (!tally.acked.is_empty()).then(|| tally.acked[rng.below(tally.acked.len() as u64) as usize].clone())
            };
            if let Some(acked) = pick {
                let base = &self.bases[rng.below(self.bases.len() as u64) as usize];
                self.poll(base, &acked).await;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// A storm: its nodes (all started), the database they share, and the schedule's seed.
struct Storm {
    label: &'static str,
    nodes: Vec<Node>,
    database_url: String,
    kills: usize,
    seed: u64,
    key: String,
}

/// One task row and its ledger entries, read after the storm.
struct TaskRow {
    id: String,
    model: String,
    state: String,
    param: String,
    requested: i64,
    delivered: Option<i64>,
    price: i64,
    callback: bool,
    /// How many times a worker claimed it: more than one means a kill (or lease loss) took it.
    attempts: i64,
    fail: Option<String>,
    lease: Option<(String, i64)>,
    /// Creation to completion, in ms.
    took: Option<i64>,
    ledger: BTreeMap<String, Vec<i64>>,
}

async fn read_tasks(db: &Db, account: &str) -> Vec<TaskRow> {
    let rows = sqlx::query(
        "SELECT id, model, state, param, requested_images, delivered_images, price_micros, callback_url, \
         attempts, fail_code, fail_msg, lease_token, lease_until, created_at, completed_at FROM tasks WHERE account_id = $1",
    )
    .bind(account)
    .fetch_all(&db.read)
    .await
    .unwrap();
    let mut tasks: HashMap<String, TaskRow> = rows
        .iter()
        .map(|r| {
            let id: String = r.get("id");
            let row = TaskRow {
                id: id.clone(),
                model: r.get("model"),
                state: r.get("state"),
                param: r.get("param"),
                requested: r.get("requested_images"),
                delivered: r.get("delivered_images"),
                price: r.get("price_micros"),
                callback: r.get::<Option<String>, _>("callback_url").is_some(),
                attempts: r.get("attempts"),
                fail: r
                    .get::<Option<String>, _>("fail_code")
                    .map(|code| format!("{code}: {}", r.get::<Option<String>, _>("fail_msg").unwrap_or_default())),
                lease: r.get::<Option<String>, _>("lease_token").zip(r.get::<Option<i64>, _>("lease_until")),
                took: r.get::<Option<i64>, _>("completed_at").map(|done| done - r.get::<i64, _>("created_at")),
                ledger: BTreeMap::new(),
            };
            (id, row)
        })
        .collect();
    let entries = sqlx::query("SELECT task_id, kind, amount_micros FROM ledger WHERE task_id IS NOT NULL")
        .fetch_all(&db.read)
        .await
        .unwrap();
    for e in entries {
        let task: String = e.get("task_id");
        let row = tasks.get_mut(&task).unwrap_or_else(|| panic!("a ledger entry of an unknown task {task}"));
        row.ledger.entry(e.get("kind")).or_default().push(e.get("amount_micros"));
    }
    tasks.into_values().collect()
}

/// The account's balance, held amount and ledger sums by kind.
async fn read_account(db: &Db, account: &str) -> (i64, i64, BTreeMap<String, i64>) {
    let row = sqlx::query("SELECT balance_micros, held_micros FROM accounts WHERE id = $1")
        .bind(account)
        .fetch_one(&db.read)
        .await
        .unwrap();
    let entries = sqlx::query("SELECT kind, amount_micros FROM ledger WHERE account_id = $1")
        .bind(account)
        .fetch_all(&db.read)
        .await
        .unwrap();
    let mut sums: BTreeMap<String, i64> = BTreeMap::new();
    for e in entries {
        let sum = sums.entry(e.get("kind")).or_default();
        *sum = sum.checked_add(e.get("amount_micros")).expect("ledger sums fit in i64");
    }
    (row.get("balance_micros"), row.get("held_micros"), sums)
}

/// Callback deliveries by task: (state, lease_until).
async fn read_deliveries(db: &Db) -> HashMap<String, Vec<(String, Option<i64>)>> {
    let rows =
        sqlx::query("SELECT task_id, state, lease_until FROM webhook_deliveries").fetch_all(&db.read).await.unwrap();
    let mut by_task: HashMap<String, Vec<(String, Option<i64>)>> = HashMap::new();
    for r in rows {
        by_task.entry(r.get("task_id")).or_default().push((r.get("state"), r.get("lease_until")));
    }
    by_task
}

fn catalog_price(model: &str) -> i64 {
    match model {
        "seedream-5-0" => 32_000,
        "gpt-image-1" => 40_000,
        other => panic!("a task of an unexpected model {other}"),
    }
}

impl Storm {
    async fn run(mut self) {
        let label = self.label;
        let mut rng = Rng(self.seed);
        let (callback_url, calls) = spawn_callback_receiver().await;
        let http = reqwest::Client::builder().no_proxy().timeout(Duration::from_secs(10)).build().unwrap();
        let account: Value = http
            .get(format!("{}/api/v1/account", self.nodes[0].base))
            .bearer_auth(&self.key)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let account_id = account["data"]["accountId"].as_str().expect("the account answers its id").to_owned();
        let load = Arc::new(Load {
            http: http.clone(),
            bases: self.nodes.iter().map(|n| n.base.clone()).collect(),
            key: self.key.clone(),
            callback_url,
            stop: AtomicBool::new(false),
            tally: Mutex::default(),
        });
        let mut clients = Vec::new();
        for id in 0..CLIENTS {
            clients.push(tokio::spawn(load.clone().client(id, Rng(rng.next()))));
        }
        clients.push(tokio::spawn(load.clone().poller(Rng(rng.next()))));

        // The storm: kill a node (in turn) at a random moment, keep it dead a moment, restart it.
        let started = Instant::now();
        let (mut slowest_restart, mut killed) = (Duration::ZERO, 0);
        for k in 0..self.kills {
            tokio::time::sleep(rng.millis(UP_MS)).await;
            let count = self.nodes.len();
            let node = &mut self.nodes[k % count];
            node.kill9().await;
            killed += 1;
            tokio::time::sleep(rng.millis(DOWN_MS)).await;
            let restarting = Instant::now();
            node.start().await;
            slowest_restart = slowest_restart.max(restarting.elapsed());
        }
        let storm_time = started.elapsed();
        // A last stretch of load on the restarted nodes, then the clients stop.
        tokio::time::sleep(rng.millis(UP_MS)).await;
        load.stop.store(true, Ordering::Relaxed);
        for client in clients {
            client.await.unwrap();
        }

        // Every acknowledged task must finish; await each (bounded), polling its own route.
        let drain_started = Instant::now();
        let mut open: Vec<Acked> = {
            let tally = load.tally.lock().unwrap();
            let mut seen = HashSet::new();
            tally.acked.iter().filter(|a| seen.insert(a.task.clone())).cloned().collect()
        };
        let acked_total = open.len();
        let base = self.nodes[0].base.clone();
        while !open.is_empty() && drain_started.elapsed() < DRAIN {
            let finished: Vec<bool> = futures::stream::iter(open.iter())
                .map(|acked| {
                    let (load, base) = (&load, &base);
                    async move { load.poll(base, acked).await == Some(true) }
                })
                .buffered(8)
                .collect()
                .await;
            let mut finished = finished.into_iter();
            open.retain(|_| !finished.next().unwrap());
            if !open.is_empty() {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
        let drain_time = drain_started.elapsed();

        // Tasks whose request got no answer were never acknowledged, yet the nodes must finish
        // them too: one may have been claimed again just before the storm ended. Await them in
        // the database (bounded) while the nodes still run, so `stuck` below means stuck.
        let db = Db::connect(&self.database_url).await.unwrap();
        while drain_started.elapsed() < DRAIN
            && read_tasks(&db, &account_id).await.iter().any(|t| !matches!(t.state.as_str(), "success" | "failed"))
        {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        db.close().await;

        // Callbacks: every acknowledged task with a callback_url, once at least (bounded wait).
        let tally = std::mem::take(&mut *load.tally.lock().unwrap());
        let expected_calls: HashSet<String> =
            tally.acked.iter().filter(|a| a.callback).map(|a| a.task.clone()).collect();
        let delivered = || -> HashSet<String> {
            calls.lock().unwrap().iter().map(|(task, _)| task.clone()).filter(|t| expected_calls.contains(t)).collect()
        };
        let callbacks_started = Instant::now();
        while delivered().len() < expected_calls.len() && callbacks_started.elapsed() < CALLBACK_DRAIN {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }

        for node in &mut self.nodes {
            node.kill9().await;
        }
        let stopped_at = easel::db::now_ms();

        // The database, read with every node stopped.
        let db = Db::connect(&self.database_url).await.unwrap();
        let tasks = read_tasks(&db, &account_id).await;
        let (balance, held, sums) = read_account(&db, &account_id).await;
        let deliveries = read_deliveries(&db).await;
        db.close().await;

        let by_id: HashMap<&str, &TaskRow> = tasks.iter().map(|t| (t.id.as_str(), t)).collect();
        let lost: Vec<&Acked> = tally.acked.iter().filter(|a| !by_id.contains_key(a.task.as_str())).collect();
        let stuck: Vec<String> = tasks
            .iter()
            .filter(|t| !matches!(t.state.as_str(), "success" | "failed"))
            .map(|t| {
                let lease =
                    t.lease.as_ref().map(|(token, until)| format!("{token} until now{:+} ms", until - stopped_at));
                format!("{} {} after {} claims, lease {lease:?}", t.id, t.state, t.attempts)
            })
            .collect();
        let retaken = tasks.iter().filter(|t| t.attempts > 1).count();
        let slowest = tasks.iter().filter_map(|t| t.took.map(|took| (took, t.attempts))).max().unwrap_or_default();
        let mut failures: BTreeMap<&str, usize> = BTreeMap::new();
        for t in &tasks {
            if let Some(fail) = &t.fail {
                *failures.entry(fail.as_str()).or_default() += 1;
            }
        }
        let foreign: Vec<&Acked> = tally
            .acked
            .iter()
            .filter(|a| by_id.get(a.task.as_str()).is_some_and(|t| !t.param.contains(&format!("\"{}\"", a.marker))))
            .collect();
        // Each request (and all retries of one idempotent request) made at most one task.
        let mut per_marker: HashMap<String, usize> = HashMap::new();
        for t in &tasks {
            let param: Value = serde_json::from_str(&t.param).unwrap();
            let prompt = param["input"]["prompt"].as_str().or(param["prompt"].as_str()).unwrap_or_default();
            *per_marker.entry(prompt.to_owned()).or_default() += 1;
        }
        let doubled: Vec<(&String, &usize)> = per_marker.iter().filter(|(_, n)| **n > 1).collect();

        // Money: each finished task held requested × price, was charged delivered × price and
        // released the rest, once each; the account balances against its ledger.
        let mut charge_errors = Vec::new();
        let (mut succeeded, mut failed, mut images) = (0, 0, 0);
        for t in &tasks {
            let once = |kind: &str| -> Option<i64> {
                match t.ledger.get(kind).map(Vec::as_slice) {
                    Some([amount]) => Some(*amount),
                    _ => None,
                }
            };
            let delivered = t.delivered.unwrap_or(0);
            match t.state.as_str() {
                "success" => succeeded += 1,
                "failed" => failed += 1,
                _ => continue,
            }
            images += delivered;
            let expected =
                (Some(t.requested * t.price), Some(delivered * t.price), Some((t.requested - delivered) * t.price));
            let got = (once("hold"), once("settle"), once("release"));
            if got != expected || t.price != catalog_price(&t.model) || (t.state == "success") != (delivered > 0) {
                charge_errors.push(format!("{} {} {}/{}: {:?}", t.id, t.state, delivered, t.requested, t.ledger));
            }
        }
        let sum = |kind: &str| sums.get(kind).copied().unwrap_or(0);
        let drift = (balance - (sum("credit") - sum("settle") - held)).abs()
            + (held - (sum("hold") - sum("settle") - sum("release"))).abs();

        // Callbacks: received ones carry a final state; every expected one was delivered, or is
        // waiting out the lease of a process that died sending it.
        let received = calls.lock().unwrap().clone();
        let non_final: Vec<&(String, String)> = received
            .iter()
            .filter(|(_, state)| !matches!(state.as_str(), "success" | "completed" | "failed"))
            .collect();
        let got = delivered();
        let (mut leased, mut unwritten, mut given_up) = (Vec::new(), Vec::new(), Vec::new());
        for task in expected_calls.difference(&got) {
            match deliveries.get(task).map(Vec::as_slice) {
                None | Some([]) => unwritten.push(task.clone()),
                Some(rows) if rows.iter().all(|(s, lease)| s == "pending" && lease.is_some_and(|l| l > stopped_at)) => {
                    leased.push(task.clone())
                }
                Some(rows) => given_up.push(format!("{task}: {rows:?}")),
            }
        }
        let callback_tasks_in_db = tasks.iter().filter(|t| t.callback).count();
        let duplicates = received.len() - received.iter().map(|(t, _)| t).collect::<HashSet<_>>().len();

        println!(
            "storm[{label}] seed {}: {killed} kills over {:.1} s (slowest restart {} ms), {CLIENTS} clients, {} requests, {} polls",
            self.seed,
            storm_time.as_secs_f64(),
            slowest_restart.as_millis(),
            tally.requests,
            tally.polls
        );
        println!(
            "storm[{label}]: tasks acknowledged {acked_total}, unknown outcome {}, refused {:?}; tasks in the database {} \
             ({succeeded} success, {failed} failed, {images} images, {retaken} claimed again after a kill, the slowest \
             took {:.1} s over {} claims); acknowledged ones finished {:.1} s after the storm",
            tally.unknown,
            tally.refused,
            tasks.len(),
            slowest.0 as f64 / 1000.0,
            slowest.1,
            drain_time.as_secs_f64()
        );
        if !failures.is_empty() {
            println!("storm[{label}]: failures {failures:?}");
        }
        println!(
            "storm[{label}]: lost {}, vanished on a poll {}, stuck {}, wrong charges {}, ledger drift {drift} micro-dollars \
             (balance {balance}, held {held}, {sums:?})",
            lost.len(),
            tally.vanished.len(),
            stuck.len() + open.len(),
            charge_errors.len(),
        );
        println!(
            "storm[{label}]: idempotent requests {} ({} replayed, {} unanswered after {} s of retries, {} replay mismatches), \
             requests that made two tasks {}",
            tally.idempotent,
            tally.replays,
            tally.idem_gave_up,
            IDEM_PATIENCE.as_secs(),
            tally.replay_mismatches.len(),
            doubled.len()
        );
        println!(
            "storm[{label}]: callbacks delivered {} of {} expected ({} waiting out a dead process's delivery lease), \
             {} received in all ({duplicates} repeats, {} not final), {callback_tasks_in_db} tasks with callbacks in the database",
            got.len(),
            expected_calls.len(),
            leased.len(),
            received.len(),
            non_final.len()
        );

        let healthy = lost.is_empty()
            && tally.vanished.is_empty()
            && open.is_empty()
            && stuck.is_empty()
            && charge_errors.is_empty()
            && drift == 0
            && held == 0
            && unwritten.is_empty()
            && given_up.is_empty();
        if !healthy {
            for node in &self.nodes {
                for line in node.log_problems() {
                    println!("{line}");
                }
            }
        }
        assert_eq!(killed, self.kills, "every kill of the schedule happened");
        assert!(acked_total >= 40, "the load was real: {acked_total} tasks acknowledged");
        assert!(
            lost.is_empty(),
            "acknowledged tasks missing from the database: {:?}",
            lost.iter().map(|a| &a.task).collect::<Vec<_>>()
        );
        assert!(tally.vanished.is_empty(), "acknowledged tasks a poll answered 404 for: {:?}", tally.vanished);
        assert!(
            open.is_empty(),
            "acknowledged tasks unfinished {DRAIN:?} after the storm: {:?}",
            open.iter().map(|a| &a.task).collect::<Vec<_>>()
        );
        assert!(stuck.is_empty(), "tasks left unfinished: {stuck:?}");
        assert!(
            foreign.is_empty(),
            "a taskId answered for another request: {:?}",
            foreign.iter().map(|a| &a.task).collect::<Vec<_>>()
        );
        assert!(doubled.is_empty(), "requests that made more than one task: {doubled:?}");
        assert!(tally.replay_mismatches.is_empty(), "replays naming another task: {:?}", tally.replay_mismatches);
        assert!(charge_errors.is_empty(), "tasks charged other than delivered × price: {charge_errors:?}");
        assert_eq!(drift, 0, "balance = added − settled − held, held = holds − settled − released");
        assert_eq!(held, 0, "nothing is held once every task has finished");
        assert!(balance >= 0);
        assert!(non_final.is_empty(), "callbacks must carry final states: {non_final:?}");
        assert!(unwritten.is_empty(), "finished tasks with a callback_url but no delivery: {unwritten:?}");
        assert!(given_up.is_empty(), "callbacks to an always-200 receiver not delivered: {given_up:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_storm_sqlite_one_node() {
    let seed = storm_seed();
    let mut rng = Rng(seed ^ 0x5_1173);
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("easel.toml");
    std::fs::write(&config, CONFIG).unwrap();
    let data_dir = dir.path().join("data");
    let mut node = Node::new("solo", free_port(&mut rng), data_dir.clone(), config, Vec::new());
    let printed = node.start().await;
    let key = bootstrap_key(&printed);
    let database_url = format!("sqlite://{}?mode=rw", data_dir.join("easel.db").display());
    Storm { label: "sqlite", nodes: vec![node], database_url, kills: 12, seed, key }.run().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_storm_postgres_two_nodes() {
    let Some(server) = common::postgres_server("kill_storm_postgres_two_nodes") else { return };
    let seed = storm_seed();
    let mut rng = Rng(seed ^ 0x0905_76e5);
    let database_url = common::create_postgres_database(&server).await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("easel.toml");
    std::fs::write(&config, CONFIG).unwrap();
    // One data dir for both: with file storage, each node serves the other's results.
    let data_dir = dir.path().join("data");
    let env = vec![("EASEL_DATABASE_URL".to_owned(), database_url.clone())];
    let mut first = Node::new("node1", free_port(&mut rng), data_dir.clone(), config.clone(), env.clone());
    let key = bootstrap_key(&first.start().await);
    let mut second = Node::new("node2", free_port(&mut rng), data_dir, config, env);
    second.start().await;
    Storm { label: "postgres", nodes: vec![first, second], database_url, kills: 10, seed, key }.run().await;
}

/// The key a first start prints for the `default` account.
fn bootstrap_key(printed: &[String]) -> String {
    let key = printed.iter().find_map(|line| line.strip_prefix("API key (shown once, keep it): "));
    key.unwrap_or_else(|| panic!("a fresh database prints its bootstrap key: {printed:?}")).to_owned()
}
