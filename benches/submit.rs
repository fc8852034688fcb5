//! Accepted task submissions per second through HTTP: validation, auth, limits, credit hold and
//! the durable insert. Starts the app in-process on loopback with a temp SQLite data dir and
//! drives it with 8 concurrent clients. Run with `cargo bench --bench submit`.

use std::time::{Duration, Instant};

use easel::accounts::limits;
use easel::{Application, Config};
use serde_json::json;
use tokio_util::sync::CancellationToken;

const CLIENTS: usize = 8;
const PER_CLIENT: usize = 500;

#[tokio::main]
async fn main() {
    let dir = tempfile::tempdir().unwrap();
    let mut config =
        Config { listen: "127.0.0.1:0".parse().unwrap(), data_dir: dir.path().into(), ..Config::default() };
    config.server.bootstrap_credits_usd = 1_000_000.0;
    // Tasks stay queued: this measures acceptance, not generation.
    config.local.latency_ms = 3_600_000;
    config.server.workers = 1;
    let app = Application::build(config).await.unwrap();
    let created = app.bootstrap.clone().unwrap();
    limits::set(&app.state().db, &created.account.id, "gpt-image-1", Some(10_000_000), Some(10_000_000)).await.unwrap();
    let base = format!("http://{}", app.local_addr());
    let shutdown = CancellationToken::new();
    tokio::spawn(app.run(shutdown.clone()));

    let client = reqwest::Client::builder().no_proxy().pool_max_idle_per_host(CLIENTS).build().unwrap();
    let body = json!({"input": {"mode": "gpt-image-1", "prompt": "a benchmark", "num_images": 1}});
    let started = Instant::now();
    let workers = (0..CLIENTS).map(|_| {
        let (client, base, body, key) = (client.clone(), base.clone(), body.clone(), created.key.key.clone());
        tokio::spawn(async move {
            let mut latencies = Vec::with_capacity(PER_CLIENT);
            for _ in 0..PER_CLIENT {
                let t = Instant::now();
                let res = client
                    .post(format!("{base}/api/v1/generateTask/gpt-image-1"))
                    .bearer_auth(&key)
                    .json(&body)
                    .send()
                    .await
                    .unwrap();
                assert_eq!(res.status(), 200, "{}", res.text().await.unwrap());
                latencies.push(t.elapsed());
            }
            latencies
        })
    });
    let mut latencies: Vec<Duration> = Vec::new();
    for w in workers {
        latencies.extend(w.await.unwrap());
    }
    let elapsed = started.elapsed();
    latencies.sort();
    let pct = |p: f64| latencies[((latencies.len() as f64 * p) as usize).min(latencies.len() - 1)];
    println!(
        "accepted submits: {} in {:.2}s = {:.0}/s with {CLIENTS} clients; p50 {:.2} ms, p99 {:.2} ms",
        latencies.len(),
        elapsed.as_secs_f64(),
        latencies.len() as f64 / elapsed.as_secs_f64(),
        pct(0.5).as_secs_f64() * 1000.0,
        pct(0.99).as_secs_f64() * 1000.0
    );
    shutdown.cancel();
}
