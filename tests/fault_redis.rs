//! Fault: Redis goes away behind a local TCP relay (a black hole: connections are accepted and
//! never answered, the way a dead host behind a load balancer or a partition looks). Submits and
//! status polls keep their latency, limits hold per node while Redis is away and are shared again
//! once it is back; a node that cannot reach Redis at start-up says so within 2 s.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use easel::accounts::limits;
use easel::money::Micros;
use serde_json::Value;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Forward,
    BlackHole,
}

/// A loopback port forwarded to Redis, which can be turned into a black hole and back.
struct Relay {
    addr: SocketAddr,
    mode: Arc<watch::Sender<Mode>>,
}

impl Relay {
    async fn start(upstream: SocketAddr, mode: Mode) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mode = Arc::new(watch::channel(mode).0);
        let modes = mode.clone();
        tokio::spawn(async move {
            loop {
                let (client, _) = listener.accept().await.unwrap();
                tokio::spawn(relay_one(client, upstream, modes.subscribe()));
            }
        });
        Relay { addr, mode }
    }

    fn set(&self, mode: Mode) {
        self.mode.send_replace(mode);
    }

    fn url(&self, db_path: &str) -> String {
        format!("redis://{}{db_path}", self.addr)
    }
}

/// Forwards one connection until the relay turns into a black hole; from then on holds it open
/// and answers nothing, until forwarding resumes and it is closed.
async fn relay_one(mut client: TcpStream, upstream: SocketAddr, mut mode: watch::Receiver<Mode>) {
    if *mode.borrow_and_update() == Mode::Forward {
        let Ok(mut server) = TcpStream::connect(upstream).await else { return };
        tokio::select! {
            _ = tokio::io::copy_bidirectional(&mut client, &mut server) => return,
            _ = mode.wait_for(|m| *m == Mode::BlackHole) => {}
        }
    }
    let _ = mode.wait_for(|m| *m == Mode::Forward).await;
    drop(client);
}

/// Redis for this test: its address and the URL's database path, or `None` (with the reason
/// printed) when it is not configured or does not answer.
async fn reachable_redis(test: &str) -> Option<(SocketAddr, String, String)> {
    let url = redis_server(test)?;
    let parsed = url::Url::parse(&url).expect("EASEL_TEST_REDIS_URL is a URL");
    let host = format!("{}:{}", parsed.host_str().unwrap_or("127.0.0.1"), parsed.port().unwrap_or(6379));
    let addr = tokio::net::lookup_host(&host).await.ok()?.next()?;
    match tokio::time::timeout(Duration::from_secs(1), TcpStream::connect(addr)).await {
        Ok(Ok(_)) => Some((addr, parsed.path().to_owned(), url)),
        _ => {
            eprintln!("skipping {test}: Redis at {host} does not answer");
            None
        }
    }
}

/// Milliseconds at the p-th percentile (nearest rank).
fn percentile(sorted: &[f64], p: f64) -> f64 {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

struct Figures {
    submit: Vec<f64>,
    poll: Vec<f64>,
}

impl Figures {
    fn print(&mut self, phase: &str) {
        for v in [&mut self.submit, &mut self.poll] {
            v.sort_by(f64::total_cmp);
        }
        println!(
            "redis fault, {phase:>15}: submit p50 {:6.1} ms p99 {:6.1} ms max {:6.1} ms | status poll p50 {:6.1} ms \
             p99 {:6.1} ms max {:6.1} ms ({} each)",
            percentile(&self.submit, 50.0),
            percentile(&self.submit, 99.0),
            self.submit.last().unwrap(),
            percentile(&self.poll, 50.0),
            percentile(&self.poll, 99.0),
            self.poll.last().unwrap(),
            self.submit.len()
        );
    }

    fn worst_p99(&self) -> f64 {
        percentile(&self.submit, 99.0).max(percentile(&self.poll, 99.0))
    }
}

const SAMPLES: usize = 200;
const ADMIN: &str = "admin-token-for-metrics";

/// Times `SAMPLES` submits and as many status polls, one after another.
async fn measure(app: &TestApp, task: &str) -> Figures {
    let mut figures = Figures { submit: Vec::new(), poll: Vec::new() };
    for _ in 0..SAMPLES {
        let t = Instant::now();
        let (status, body) = app.submit("gpt-image-1", &gpt_t2i(1)).await;
        figures.submit.push(t.elapsed().as_secs_f64() * 1000.0);
        assert_eq!(status, 200, "{body}");
        let t = Instant::now();
        let (status, body) = app.status("gpt-image-1", task).await;
        figures.poll.push(t.elapsed().as_secs_f64() * 1000.0);
        assert_eq!(status, 200, "{body}");
    }
    figures
}

/// A fresh account allowed 60 creations a minute (a burst of 10): its key and id.
async fn tenant(app: &TestApp, name: &str) -> (String, String) {
    let created = app.state.accounts.create(name, Micros::from_usd(100.0).unwrap()).await.unwrap();
    limits::set(&app.state.db, &created.account.id, "gpt-image-1", Some(60), Some(1000)).await.unwrap();
    (created.key.key, created.account.id.to_string())
}

/// Creations admitted in a row before the first 429.
async fn burst_of(app: &TestApp, key: &str) -> usize {
    for admitted in 0..40 {
        let res = app
            .client
            .post(app.url("/api/v1/generateTask/gpt-image-1"))
            .bearer_auth(key)
            .json(&gpt_t2i(1))
            .send()
            .await
            .unwrap();
        match res.status().as_u16() {
            200 => {}
            429 => return admitted,
            other => panic!("unexpected {other}"),
        }
    }
    panic!("never refused");
}

fn rate_key(account: &str) -> String {
    format!("easel:rate:create:{account}:gpt-image-1")
}

async fn readyz(app: &TestApp) -> (u16, Value) {
    let res = app.client.get(app.url("/readyz")).send().await.unwrap();
    (res.status().as_u16(), res.json().await.unwrap())
}

async fn metric(app: &TestApp, name: &str) -> String {
    let res = app.client.get(app.url("/metrics")).bearer_auth(ADMIN).send().await.unwrap();
    assert_eq!(res.status(), 200);
    let text = res.text().await.unwrap();
    text.lines().find_map(|l| l.strip_prefix(&format!("{name} ")).map(str::to_owned)).unwrap_or_default()
}

#[tokio::test]
async fn redis_going_away_keeps_latency_and_limits_per_node_until_it_is_back() {
    let Some((upstream, db_path, direct_url)) =
        reachable_redis("redis_going_away_keeps_latency_and_limits_per_node_until_it_is_back").await
    else {
        return;
    };
    let mut direct =
        redis::Client::open(direct_url).unwrap().get_multiplexed_async_connection().await.expect("Redis answers");
    let relay = Relay::start(upstream, Mode::Forward).await;
    let app = spawn_app_with(|c| {
        c.redis_url = Some(relay.url(&db_path));
        c.redis.retry_interval_ms = 100;
        c.server.status_rpm = 1_000_000;
        c.admin_token = Some(ADMIN.into());
        // Tasks are only queued: the figures are the API's, not the renderer's CPU.
        c.role = easel::config::Role::Api;
    })
    .await;
    let default = app.state.accounts.find("default").await.unwrap();
    app.state.accounts.add_credits(&default.id, Micros::from_usd(1000.0).unwrap()).await.unwrap();
    limits::set(&app.state.db, &default.id, "gpt-image-1", Some(1_000_000), Some(1_000_000)).await.unwrap();
    let task = app.submit_ok("gpt-image-1", &gpt_t2i(1)).await;

    // Before: shared limits, in Redis.
    let mut before = measure(&app, &task).await;
    before.print("before");
    let (key, shared_before) = tenant(&app, "before").await;
    assert!((10..=11).contains(&burst_of(&app, &key).await));
    let exists: bool = redis::cmd("EXISTS").arg(rate_key(&shared_before)).query_async(&mut direct).await.unwrap();
    assert!(exists, "the allowance is kept in Redis");
    assert_eq!(readyz(&app).await.1["checks"]["redis"], "ok");

    // During: a black hole. Latency stays low, and limits still hold on this node.
    relay.set(Mode::BlackHole);
    let outage = Instant::now();
    let mut during = measure(&app, &task).await;
    during.print("redis away");
    let (key, local_only) = tenant(&app, "during").await;
    let burst = burst_of(&app, &key).await;
    assert!((10..=11).contains(&burst), "limits hold per node while Redis is away: {burst}");
    let (status, body) = readyz(&app).await;
    assert_eq!((status, body["status"].as_str()), (200, Some("degraded")), "{body}");
    assert_eq!(body["checks"]["redis"], "unreachable, limiting per node");
    assert_eq!(metric(&app, "easel_redis_up").await, "0");
    assert_eq!(metric(&app, "easel_redis_outages_total").await, "1", "one outage, however many requests");
    let local: u64 = metric(&app, "easel_rate_limit_local_decisions_total").await.parse().unwrap();
    assert!(local >= 2 * SAMPLES as u64, "{local}");

    // After: Redis is back, found by the background probe.
    relay.set(Mode::Forward);
    let back = Instant::now();
    wait_until(Duration::from_secs(10), || async { (readyz(&app).await.1["checks"]["redis"] == "ok").then_some(()) })
        .await;
    let recovered_in = back.elapsed();
    let mut after = measure(&app, &task).await;
    after.print("after recovery");
    let (key, shared_after) = tenant(&app, "after").await;
    assert!((10..=11).contains(&burst_of(&app, &key).await));
    let kept: Vec<bool> = redis::pipe()
        .cmd("EXISTS")
        .arg(rate_key(&local_only))
        .cmd("EXISTS")
        .arg(rate_key(&shared_after))
        .query_async(&mut direct)
        .await
        .unwrap();
    assert_eq!(kept, [false, true], "limits were this node's own during the outage, in Redis again after");
    // Another node's spending is honoured again: an allowance spent in Redis refuses here.
    let (key, spent_elsewhere) = tenant(&app, "elsewhere").await;
    let far = easel::db::now_ms() + 3_600_000;
    let _: () = redis::cmd("SET")
        .arg(rate_key(&spent_elsewhere))
        .arg(far)
        .arg("PX")
        .arg(60_000)
        .query_async(&mut direct)
        .await
        .unwrap();
    assert_eq!(burst_of(&app, &key).await, 0);
    assert_eq!(metric(&app, "easel_redis_up").await, "1");

    println!(
        "redis fault: outage {:.1} s, Redis back in use {} ms after it answered again",
        (back - outage).as_secs_f64(),
        recovered_in.as_millis()
    );
    for (phase, figures) in [("before", &before), ("redis away", &during), ("after recovery", &after)] {
        assert!(figures.worst_p99() < 200.0, "{phase}: p99 {:.1} ms", figures.worst_p99());
    }
    let worst = during.submit.last().unwrap().max(*during.poll.last().unwrap());
    assert!(worst < 1000.0, "no request waits on the dead Redis for long: {worst:.1} ms");
}

#[tokio::test]
async fn a_node_that_cannot_reach_redis_at_start_up_fails_within_two_seconds() {
    let Some((upstream, db_path, _)) =
        reachable_redis("a_node_that_cannot_reach_redis_at_start_up_fails_within_two_seconds").await
    else {
        return;
    };
    let relay = Relay::start(upstream, Mode::BlackHole).await;
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(&dir);
    config.database_url = fresh_database_url().await;
    config.redis_url = Some(relay.url(&db_path));
    let started = Instant::now();
    let err = easel::Application::build(config).await.err().expect("start-up fails");
    let took = started.elapsed();
    println!("redis fault: start-up against a black-holed Redis failed after {} ms: {err:#}", took.as_millis());
    assert!(took < Duration::from_secs(2), "{took:?}");
    let message = format!("{err:#}");
    assert!(message.contains("Redis") && message.contains("EASEL_REDIS_URL"), "{message}");
}
