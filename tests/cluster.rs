//! Three `easel serve` processes sharing PostgreSQL, Redis and S3: 300 tasks across them, one
//! node killed with SIGKILL while it holds leases. Every task ends exactly once, every link
//! works from every node, the ledger balances, and the per-minute limit is one for the cluster.
//! A client following a task's events on the killed node resumes on another with
//! `Last-Event-ID` and misses nothing.
//!
//! Needs `EASEL_TEST_POSTGRES_URL`, `EASEL_TEST_REDIS_URL` and `EASEL_TEST_S3_ENDPOINT`; skipped
//! (saying so) without them. `.ci/run` runs it with `--nocapture` to show its report.

mod common;

use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, Instant};

use common::sse::SseStream;
use common::{create_postgres_database, postgres_server, redis_server, s3_server, wait_until};
use futures::StreamExt;
use serde_json::{Value, json};
use sqlx::{PgPool, Row};
use tokio::process::{Child, Command};

const EASEL: &str = env!("CARGO_BIN_EXE_easel");
const TASKS: usize = 300;
const LEASE_SECS: u64 = 3;

const CONFIG: &str = r#"
[server]
allow_private_network = true
lease_secs = 3
workers = 12
status_rpm = 100000

[local]
latency_ms = 600

[models."seedream-5-0"]
rpm = 100000
max_concurrent = 1000

[models."gpt-image-1"]
rpm = 60
max_concurrent = 1000
"#;

/// What every node and the CLI share: the database, Redis, the bucket, the config file.
struct Cluster {
    env: Vec<(String, String)>,
    dir: tempfile::TempDir,
}

impl Cluster {
    fn command(&self, node: &str) -> Command {
        let data_dir = self.dir.path().join(node);
        std::fs::create_dir_all(&data_dir).unwrap();
        let mut cmd = Command::new(EASEL);
        cmd.arg("--data-dir").arg(&data_dir).arg("--config").arg(self.dir.path().join("easel.toml"));
        cmd.env_remove("EASEL_PUBLIC_URL").env_remove("EASEL_LISTEN").envs(self.env.iter().cloned());
        cmd.env("EASEL_SERVER__NODE_ID", node);
        cmd
    }

    async fn cli_json(&self, args: &[&str]) -> Value {
        let out = self.command("cli").args(args).output().await.unwrap();
        assert!(out.status.success(), "easel {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice(&out.stdout).unwrap()
    }

    async fn start(&self, node: &str) -> Node {
        let served = common::process::serve(self.command(node)).await;
        Node { name: node.to_owned(), base: served.base, child: served.child }
    }
}

struct Node {
    name: String,
    base: String,
    child: Child,
}

async fn submit(client: &reqwest::Client, key: &str, node: &Node, model: &str, body: &Value) -> (u16, Value) {
    let url = format!("{}/api/v1/generateTask/{model}", node.base);
    let res = client.post(url).bearer_auth(key).json(body).send().await.unwrap();
    (res.status().as_u16(), res.json().await.unwrap())
}

/// Tasks leased by `node` right now.
async fn leased_by(db: &PgPool, node: &str) -> Vec<String> {
    sqlx::query_scalar("SELECT id FROM tasks WHERE state = 'processing' AND lease_token LIKE $1")
        .bind(format!("{node}.%"))
        .fetch_all(db)
        .await
        .unwrap()
}

async fn unfinished(db: &PgPool, ids: &[String]) -> i64 {
    sqlx::query_scalar("SELECT COUNT(*) FROM tasks WHERE id = ANY($1) AND state NOT IN ('success', 'failed')")
        .bind(ids)
        .fetch_one(db)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_survive_a_sigkill_and_share_one_limit() {
    let name = "three_nodes_survive_a_sigkill_and_share_one_limit";
    let (Some(pg), Some(redis), Some(s3)) = (postgres_server(name), redis_server(name), s3_server(name)) else {
        return;
    };
    let database = create_postgres_database(&pg).await;
    let bucket = s3.create_bucket().await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("easel.toml"), CONFIG).unwrap();
    let mut env = vec![
        ("EASEL_DATABASE_URL".to_owned(), database.clone()),
        ("EASEL_REDIS_URL".to_owned(), redis),
        ("EASEL_STORAGE_URL".to_owned(), format!("s3://{bucket}/results")),
    ];
    env.extend(s3.env());
    let cluster = Cluster { env, dir };
    let db = PgPool::connect(&database).await.unwrap();

    let account = cluster.cli_json(&["accounts", "create", "--name", "cluster", "--credits", "100", "--json"]).await;
    let key = account["key"].as_str().unwrap().to_owned();
    let mut nodes = Vec::new();
    for n in ["node1", "node2", "node3"] {
        nodes.push(cluster.start(n).await);
    }
    let client = reqwest::Client::builder().no_proxy().build().unwrap();

    // One per-minute allowance for the cluster: 60 a minute has a burst of 10, where limits
    // per node would let 10 through each.
    let started = Instant::now();
    let gpt = json!({"input": {"mode": "gpt-image-1", "prompt": "a limit", "num_images": 1}});
    let mut admitted = 0;
    for i in 0..45 {
        let (status, body) = submit(&client, &key, &nodes[i % 3], "gpt-image-1", &gpt).await;
        match status {
            200 => admitted += 1,
            429 => {}
            _ => panic!("unexpected {status}: {body}"),
        }
    }
    let allowance = 10 + started.elapsed().as_secs() as usize + 1;
    assert!((10..=allowance).contains(&admitted), "{admitted} creates admitted across 3 nodes, allowance {allowance}");

    // 300 tasks across the three nodes, 24 submits at a time.
    let body = json!({"input": {"mode": "text-to-image", "prompt": "a cluster", "max_images": 1, "size": "1280x720"}});
    let submits = futures::stream::iter(0..TASKS)
        .map(|i| {
            let (client, key, body, node) = (&client, &key, &body, &nodes[i % 3]);
            async move {
                let (status, json) = submit(client, key, node, "seedream-5-0", body).await;
                assert_eq!(status, 200, "{json}");
                json["data"]["taskId"].as_str().unwrap().to_owned()
            }
        })
        .buffer_unordered(24)
        .collect::<Vec<String>>();
    let tasks = submits.await;
    assert_eq!(tasks.iter().collect::<HashSet<_>>().len(), TASKS);

    // A client follows one more task on node2, behind the 300 in the queue.
    let (status, followed) = submit(
        &client,
        &key,
        &nodes[1],
        "seedream-5-0",
        &json!({"input": {
        "mode": "text-to-image", "prompt": "followed", "max_images": 1}}),
    )
    .await;
    assert_eq!(status, 200, "{followed}");
    let followed = followed["data"]["taskId"].as_str().unwrap().to_owned();
    let events_on = |node: &Node| format!("{}/api/v1/tasks/{followed}/events", node.base);
    let mut stream = SseStream::open(&client, &events_on(&nodes[1]), &key, None).await;
    let created = stream.next_event().await.unwrap();
    assert_eq!((created.event.as_str(), created.id.as_deref()), ("created", Some("1")));

    // Kill node2 once it holds leases.
    wait_until(Duration::from_secs(60), || async { (!leased_by(&db, "node2").await.is_empty()).then_some(()) }).await;
    let mut victim = nodes.remove(1);
    victim.child.start_kill().unwrap();
    victim.child.wait().await.unwrap();
    let killed_at = Instant::now();
    let orphans = leased_by(&db, &victim.name).await;
    assert!(!orphans.is_empty(), "node2 died holding leases");
    // The stream on node2 broke with it; the client resumes on node1 after the last event it had.
    while stream.next().await.is_some() {}
    let mut resumed = SseStream::open(&client, &events_on(&nodes[0]), &key, Some("1")).await;
    let rest: Vec<_> = resumed.rest().await.into_iter().filter(|e| e.id.is_some()).collect();
    let seqs: Vec<i64> = rest.iter().map(|e| e.id.as_ref().unwrap().parse().unwrap()).collect();
    assert_eq!(seqs, (2..2 + seqs.len() as i64).collect::<Vec<_>>(), "nothing missed or repeated: {seqs:?}");
    assert_eq!(rest.first().map(|e| e.event.as_str()), Some("started"));
    assert_eq!(rest.last().map(|e| e.event.as_str()), Some("succeeded"));

    wait_until(Duration::from_secs(60), || async { (unfinished(&db, &orphans).await == 0).then_some(()) }).await;
    let recovery = killed_at.elapsed();
    wait_until(Duration::from_secs(120), || async { (unfinished(&db, &tasks).await == 0).then_some(()) }).await;
    assert!(recovery >= Duration::from_secs(LEASE_SECS - 1), "orphans wait for their leases: {recovery:?}");

    // Every task succeeded once: one hold, one settle, one release each, and no lease left.
    let rows = sqlx::query("SELECT state, finished_by, lease_token FROM tasks WHERE id = ANY($1)")
        .bind(&tasks)
        .fetch_all(&db)
        .await
        .unwrap();
    let mut finished_by: BTreeMap<String, usize> = BTreeMap::new();
    for row in &rows {
        assert_eq!(row.get::<String, _>("state"), "success");
        assert_eq!(row.get::<Option<String>, _>("lease_token"), None);
        *finished_by.entry(row.get::<Option<String>, _>("finished_by").expect("finished_by")).or_default() += 1;
    }
    let per_kind: Vec<(String, i64, i64)> = sqlx::query_as(
        "SELECT kind, COUNT(*), COUNT(DISTINCT task_id) FROM ledger WHERE task_id = ANY($1) GROUP BY kind ORDER BY kind",
    )
    .bind(&tasks)
    .fetch_all(&db)
    .await
    .unwrap();
    let n = TASKS as i64;
    let expected: Vec<(String, i64, i64)> =
        ["hold", "release", "settle"].iter().map(|k| (k.to_string(), n, n)).collect();
    assert_eq!(per_kind, expected, "one hold, settle and release per task");
    let (credit, settled, held, balance, held_now): (i64, i64, i64, i64, i64) = sqlx::query_as(
        "SELECT \
           (SELECT COALESCE(SUM(amount_micros), 0)::BIGINT FROM ledger WHERE account_id = a.id AND kind = 'credit'), \
           (SELECT COALESCE(SUM(amount_micros), 0)::BIGINT FROM ledger WHERE account_id = a.id AND kind = 'settle'), \
           (SELECT COALESCE(SUM(amount_micros), 0)::BIGINT FROM ledger WHERE account_id = a.id AND kind = 'hold') \
             - (SELECT COALESCE(SUM(amount_micros), 0)::BIGINT FROM ledger WHERE account_id = a.id AND kind IN ('settle', 'release')), \
           balance_micros, held_micros FROM accounts a WHERE name = 'cluster'",
    )
    .fetch_one(&db)
    .await
    .unwrap();
    assert_eq!(held, held_now, "held matches the ledger");
    assert_eq!(balance, credit - settled - held_now, "balance = credits - settled - held");

    // Every link works from every surviving node, with the same bytes.
    let links = futures::stream::iter(tasks.iter())
        .map(|task| {
            let (client, key, nodes) = (&client, &key, &nodes);
            async move {
                let url = format!("{}/api/v1/statusTask/seedream-5-0?taskId={task}", nodes[0].base);
                let status: Value = client.get(url).bearer_auth(key).send().await.unwrap().json().await.unwrap();
                let result: Value = serde_json::from_str(status["data"]["resultJson"].as_str().unwrap()).unwrap();
                let link = result["resultUrls"][0].as_str().unwrap().to_owned();
                let path = &link[link.find("/files/").unwrap()..];
                let mut bodies = Vec::new();
                for node in nodes {
                    let res = client.get(format!("{}{path}", node.base)).send().await.unwrap();
                    assert_eq!(res.status(), 200, "{path} from {}", node.name);
                    bodies.push(res.bytes().await.unwrap());
                }
                assert!(bodies.windows(2).all(|w| w[0] == w[1]));
                assert_eq!(image::load_from_memory(&bodies[0]).unwrap().width(), 1280);
            }
        })
        .buffer_unordered(16)
        .collect::<Vec<()>>();
    links.await;

    println!("cluster: {TASKS} tasks finished per node: {finished_by:?}");
    println!(
        "cluster: node2 was killed holding {} leases; they were finished elsewhere {:.1} s later (lease {LEASE_SECS} s)",
        orphans.len(),
        recovery.as_secs_f64()
    );
    println!("cluster: {admitted} of 45 rapid creates admitted across 3 nodes under a shared 60/min limit");
    for node in ["node1", "node3"] {
        assert!(finished_by.get(node).copied().unwrap_or(0) > 0, "{node} finished tasks: {finished_by:?}");
    }
    for mut node in nodes {
        node.child.kill().await.unwrap();
    }
    db.close().await;
}
