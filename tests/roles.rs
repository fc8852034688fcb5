//! Node roles and probes: an `api` node takes tasks but runs none, a `worker` node runs them and
//! serves only probes (and admin routes), and `/readyz` reports each dependency.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use easel::config::Role;
use easel::ids::TaskId;
use easel::tasks::TaskState;
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

async fn get(app: &TestApp, path: &str) -> (u16, Value) {
    let res = app.client.get(app.url(path)).send().await.unwrap();
    let status = res.status().as_u16();
    (status, res.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn an_api_node_queues_tasks_and_a_worker_node_runs_them() {
    let api = spawn_app_with(|c| c.role = Role::Api).await;
    assert_eq!(get(&api, "/healthz").await, (200, serde_json::json!({"status": "ok"})));
    let task = api.submit_ok("gpt-image-1", &gpt_t2i(1)).await;
    // Time enough for a worker (idle poll 500 ms, no latency) to have claimed it, were there one.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (_, status) = api.status("gpt-image-1", &task).await;
    assert_eq!(status["data"]["state"], "pending", "an api node runs no task: {status}");

    let worker = api.restart(|c| c.role = Role::Worker).await;
    let id = TaskId::parse(&task).unwrap();
    let done = wait_until(Duration::from_secs(30), || async {
        let task = worker.state.tasks.get(&id).await.unwrap().unwrap();
        (task.state == TaskState::Success).then_some(task)
    })
    .await;
    assert_eq!(done.result_keys.len(), 1);
    // A worker serves probes, not the client API or files.
    assert_eq!(get(&worker, "/healthz").await.0, 200);
    assert_eq!(get(&worker, "/readyz").await.0, 200);
    let res = worker.client.post(worker.url("/api/v1/generateTask/gpt-image-1")).bearer_auth(&worker.key).send();
    assert_eq!(res.await.unwrap().status(), 404);
    let link = worker.state.storage.signed_url(&done.result_keys[0], easel::db::now_ms() + 60_000);
    let path = link.split_once("/files/").unwrap().1;
    assert_eq!(get(&worker, &format!("/files/{path}")).await.0, 404);
}

#[tokio::test]
async fn readyz_reports_each_dependency() {
    let app = spawn_app().await;
    let (status, body) = get(&app, "/readyz").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "ok");
    assert_eq!(body["checks"]["database"], "ok");
    assert_eq!(body["checks"]["storage"], "ok");
    assert!(body["checks"].get("redis").is_none(), "Redis is checked only when configured: {body}");
}

/// A stand-in for Redis that answers `+PONG` to PING and `+OK` to anything else, and records
/// the commands; aborting its task closes it and every connection.
async fn fake_redis() -> (u16, Arc<Mutex<Vec<String>>>, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    let server = tokio::spawn(async move {
        let mut connections = tokio::task::JoinSet::new();
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            connections.spawn(answer_resp(BufReader::new(stream), log.clone()));
        }
    });
    (port, seen, server)
}

async fn answer_resp(mut stream: BufReader<tokio::net::TcpStream>, log: Arc<Mutex<Vec<String>>>) {
    let mut header = String::new();
    while stream.read_line(&mut header).await.unwrap_or(0) > 0 {
        let argc: usize = header.trim_end().trim_start_matches('*').parse().unwrap();
        let mut args = Vec::new();
        for _ in 0..argc {
            let mut len = String::new();
            stream.read_line(&mut len).await.unwrap();
            let len: usize = len.trim_end().trim_start_matches('$').parse().unwrap();
            let mut arg = vec![0; len + 2];
            stream.read_exact(&mut arg).await.unwrap();
            args.push(String::from_utf8_lossy(&arg[..len]).into_owned());
        }
        let reply: &[u8] = if args[0].eq_ignore_ascii_case("PING") { b"+PONG\r\n" } else { b"+OK\r\n" };
        stream.get_mut().write_all(reply).await.unwrap();
        log.lock().unwrap().push(args.join(" "));
        header.clear();
    }
}

#[tokio::test]
async fn readyz_pings_redis_when_configured_and_reports_it_away_as_degraded() {
    let (port, seen, server) = fake_redis().await;
    let app = spawn_app_with(|c| c.redis_url = Some(format!("redis://:s%40cret@127.0.0.1:{port}/0"))).await;
    let pings_before = seen.lock().unwrap().iter().filter(|c| c.as_str() == "PING").count();
    let (status, body) = get(&app, "/readyz").await;
    assert_eq!((status, &body["checks"]["redis"]), (200, &Value::from("ok")), "{body}");
    let commands = seen.lock().unwrap().clone();
    assert!(commands.iter().any(|c| c == "AUTH s@cret"), "{commands:?}");
    assert!(commands.iter().filter(|c| c.as_str() == "PING").count() > pings_before, "{commands:?}");

    // Redis goes away: the node still serves, limiting on its own, and says so.
    server.abort();
    let _ = server.await;
    let (status, body) = get(&app, "/readyz").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "degraded");
    assert_eq!(body["checks"]["redis"], "unreachable, limiting per node");
    assert_eq!(body["checks"]["database"], "ok");
}
