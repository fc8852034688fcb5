//! Fault: a slowloris crowd against the real binary. 2,000 connections each send part of a
//! request head and then nothing. Meanwhile a normal client's status polls must stay about as
//! fast as without the crowd, and the header-read timeout must close the whole crowd.

mod common;

use std::time::{Duration, Instant};

use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::process::Command;

const CROWD: usize = 2000;
const HEADER_TIMEOUT_MS: u64 = 5000;
const POLLS: usize = 50;
/// Added latency allowed at the median; generous for 2 busy cores, far below the seconds a
/// starved listener costs.
const MAX_ADDED_P50: Duration = Duration::from_millis(50);

fn percentile(sorted: &[Duration], p: usize) -> Duration {
    sorted[(sorted.len() * p / 100).min(sorted.len() - 1)]
}

/// Sorted latencies of `POLLS` status polls of one task.
async fn poll_latencies(client: &reqwest::Client, base: &str, key: &str, task: &str) -> Vec<Duration> {
    let mut took = Vec::with_capacity(POLLS);
    for _ in 0..POLLS {
        let start = Instant::now();
        let res = client
            .get(format!("{base}/api/v1/statusTask/seedream-5-0"))
            .query(&[("taskId", task)])
            .bearer_auth(key)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
        res.bytes().await.unwrap();
        took.push(start.elapsed());
    }
    took.sort();
    took
}

/// The server's resident memory in MB, where /proc tells it.
fn rss_mb(pid: Option<u32>) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{}/status", pid?)).ok()?;
    let kb: u64 = status.lines().find_map(|l| l.strip_prefix("VmRSS:"))?.trim().trim_end_matches(" kB").parse().ok()?;
    Some(kb / 1024)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slowloris_crowd_neither_delays_other_clients_nor_stays_open() {
    // The crowd needs descriptors on this side too; the server inherits the raised limit.
    let fds = easel::listener::fd_limit::raise();
    if let Some(fds) = fds.filter(|&n| n < (CROWD + 600) as u64) {
        println!("skipping the slowloris fault test: the open-file limit is {fds}, below {}", CROWD + 600);
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_easel"));
    cmd.arg("--data-dir").arg(dir.path()).current_dir(dir.path());
    for var in
        ["EASEL_CONFIG", "EASEL_DATABASE_URL", "EASEL_STORAGE_URL", "EASEL_PUBLIC_URL", "EASEL_LISTEN", "EASEL_ROLE"]
    {
        cmd.env_remove(var);
    }
    cmd.env("EASEL_HTTP__HEADER_READ_TIMEOUT_MS", HEADER_TIMEOUT_MS.to_string()).env("EASEL_LOCAL__LATENCY_MS", "0");
    let served = common::process::serve(cmd).await;
    let key = served.printed.iter().find_map(|l| l.strip_prefix("API key (shown once, keep it): ")).unwrap().to_owned();
    let base = served.base.clone();
    let pid = served.child.id();
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let res = client
        .post(format!("{base}/api/v1/generateTask/seedream-5-0"))
        .bearer_auth(&key)
        .json(&json!({"input": {"mode": "text-to-image", "prompt": "a lighthouse", "max_images": 1}}))
        .send()
        .await
        .unwrap();
    let body: serde_json::Value = res.json().await.unwrap();
    let task = body["data"]["taskId"].as_str().expect("a task").to_owned();

    let quiet = poll_latencies(&client, &base, &key, &task).await;
    let rss_before = rss_mb(pid);

    let addr = base.trim_start_matches("http://").to_owned();
    let opened = Instant::now();
    let mut crowd = Vec::with_capacity(CROWD);
    for _ in 0..CROWD {
        let mut conn = TcpStream::connect(&addr).await.expect("the crowd connects");
        conn.write_all(b"GET /healthz HTTP/1.1\r\nHost: easel\r\nX-Slow: ").await.unwrap();
        crowd.push(conn);
    }
    let crowd_open_in = opened.elapsed();
    let crowded = poll_latencies(&client, &base, &key, &task).await;
    let measured_by = opened.elapsed();
    let rss_crowded = rss_mb(pid);
    assert!(
        measured_by < Duration::from_millis(HEADER_TIMEOUT_MS),
        "the polls took {measured_by:?}: the first of the crowd may have closed before they ended"
    );

    // Every one of the crowd is closed by the header timeout, none answered.
    let closing = crowd.into_iter().map(|mut conn| async move {
        let mut buf = [0u8; 64];
        let answered = matches!(conn.read(&mut buf).await, Ok(n) if n > 0);
        (answered, opened.elapsed())
    });
    let limit = crowd_open_in + Duration::from_millis(HEADER_TIMEOUT_MS) + Duration::from_secs(5);
    let closed = tokio::time::timeout(limit, futures::future::join_all(closing))
        .await
        .unwrap_or_else(|_| panic!("some of the crowd were still open {limit:?} after it started"));
    let answered = closed.iter().filter(|(answered, _)| *answered).count();
    let first_closed = closed.iter().map(|(_, at)| *at).min().unwrap();
    let last_closed = closed.iter().map(|(_, at)| *at).max().unwrap();
    let rss_after = rss_mb(pid);

    let ms = |d: Duration| format!("{:.1} ms", d.as_secs_f64() * 1000.0);
    println!("slowloris: crowd of {CROWD} opened in {}", ms(crowd_open_in));
    println!(
        "slowloris: status poll without the crowd p50 {} p99 {}",
        ms(percentile(&quiet, 50)),
        ms(percentile(&quiet, 99))
    );
    println!(
        "slowloris: status poll with the crowd    p50 {} p99 {}",
        ms(percentile(&crowded, 50)),
        ms(percentile(&crowded, 99))
    );
    println!(
        "slowloris: crowd closed between {} and {} after it started (header timeout {HEADER_TIMEOUT_MS} ms); \
         {answered} answered",
        ms(first_closed),
        ms(last_closed)
    );
    println!(
        "slowloris: server RSS {rss_before:?} MB before, {rss_crowded:?} MB with the crowd, {rss_after:?} MB after"
    );

    assert_eq!(answered, 0, "no one of the crowd sent a whole request");
    assert!(
        first_closed >= Duration::from_millis(HEADER_TIMEOUT_MS - 5),
        "closed before the timeout: {first_closed:?}"
    );
    let added = percentile(&crowded, 50).saturating_sub(percentile(&quiet, 50));
    assert!(added < MAX_ADDED_P50, "the crowd added {added:?} to the median poll");
}
