//! The listener's limits: a slow request head, an idle keep-alive and a dribbling body are each
//! closed at their timeout; at the connection cap new connections wait for a free slot; an
//! edit's image over its limit is refused as it arrives.

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Scheduling headroom on a busy machine, on top of each timeout.
const SLACK: Duration = Duration::from_secs(2);
const TIMEOUT_MS: u64 = 400;
const LONG_MS: u64 = 60_000;

async fn connect(app: &TestApp) -> TcpStream {
    TcpStream::connect(app.base.trim_start_matches("http://")).await.expect("the app accepts")
}

/// Waits up to `limit` for the server to close `stream`; returns what it sent first.
async fn closed_within(stream: &mut TcpStream, limit: Duration) -> Vec<u8> {
    let mut sent = Vec::new();
    let read = tokio::time::timeout(limit, async {
        let mut buf = [0u8; 4096];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => sent.extend_from_slice(&buf[..n]),
            }
        }
    });
    read.await.unwrap_or_else(|_| panic!("the connection is still open after {limit:?}"));
    sent
}

/// One response read off a connection: its status, headers (lower-cased) and body.
async fn read_response(stream: &mut TcpStream) -> (u16, String, Vec<u8>) {
    let mut data = Vec::new();
    let mut buf = [0u8; 4096];
    let head_end = loop {
        if let Some(at) = data.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        let n = stream.read(&mut buf).await.unwrap();
        assert!(n > 0, "closed before a response: {:?}", String::from_utf8_lossy(&data));
        data.extend_from_slice(&buf[..n]);
    };
    let head = String::from_utf8_lossy(&data[..head_end]).to_ascii_lowercase();
    let status = head[9..12].parse().unwrap();
    let length: usize =
        head.lines().find_map(|line| line.strip_prefix("content-length:")).map_or(0, |v| v.trim().parse().unwrap());
    let mut body = data[head_end..].to_vec();
    while body.len() < length {
        let n = stream.read(&mut buf).await.unwrap();
        assert!(n > 0, "closed in the middle of a body");
        body.extend_from_slice(&buf[..n]);
    }
    (status, head, body)
}

fn at_least(elapsed: Duration, ms: u64) {
    // The watchdog counts whole milliseconds.
    assert!(elapsed >= Duration::from_millis(ms - 5), "closed after {elapsed:?}, before the {ms} ms timeout");
}

#[tokio::test]
async fn a_slow_request_head_is_closed_at_the_header_timeout() {
    let app = spawn_app_with(|c| {
        c.http.header_read_timeout_ms = TIMEOUT_MS;
        c.http.idle_timeout_ms = LONG_MS;
    })
    .await;
    let limit = Duration::from_millis(TIMEOUT_MS) + SLACK;

    let mut partial = connect(&app).await;
    let start = Instant::now();
    partial.write_all(b"GET /healthz HTTP/1.1\r\nHost: easel\r\nX-Slow: ").await.unwrap();
    let sent = closed_within(&mut partial, limit).await;
    at_least(start.elapsed(), TIMEOUT_MS);
    assert!(sent.is_empty(), "no answer to a request never sent: {}", String::from_utf8_lossy(&sent));

    // A connection that sends nothing at all is a slow head too.
    let mut silent = connect(&app).await;
    let start = Instant::now();
    closed_within(&mut silent, limit).await;
    at_least(start.elapsed(), TIMEOUT_MS);
}

#[tokio::test]
async fn an_idle_keep_alive_is_closed_at_the_idle_timeout() {
    let app = spawn_app_with(|c| {
        c.http.header_read_timeout_ms = LONG_MS;
        c.http.idle_timeout_ms = TIMEOUT_MS;
    })
    .await;
    let mut conn = connect(&app).await;
    for _ in 0..2 {
        conn.write_all(b"GET /healthz HTTP/1.1\r\nHost: easel\r\n\r\n").await.unwrap();
        let (status, _, _) = read_response(&mut conn).await;
        assert_eq!(status, 200, "the connection is kept alive between requests");
    }
    let start = Instant::now();
    closed_within(&mut conn, Duration::from_millis(TIMEOUT_MS) + SLACK).await;
    at_least(start.elapsed(), TIMEOUT_MS);
}

#[tokio::test]
async fn a_body_that_stops_arriving_is_408_at_the_body_timeout() {
    let app = spawn_app_with(|c| {
        c.http.header_read_timeout_ms = LONG_MS;
        c.http.body_read_timeout_ms = TIMEOUT_MS;
        c.http.idle_timeout_ms = LONG_MS;
    })
    .await;
    let mut conn = connect(&app).await;
    let head = format!(
        "POST /v1/images/generations HTTP/1.1\r\nHost: easel\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"prompt\":",
        app.key
    );
    let start = Instant::now();
    conn.write_all(head.as_bytes()).await.unwrap();
    let (status, headers, body) =
        tokio::time::timeout(Duration::from_millis(TIMEOUT_MS) + SLACK, read_response(&mut conn)).await.unwrap();
    at_least(start.elapsed(), TIMEOUT_MS);
    assert_eq!(status, 408);
    assert!(headers.contains("connection: close"), "{headers}");
    let json: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(json["error"]["message"], "the request body did not arrive in time", "OpenAI's envelope: {json}");
    assert_eq!(json["error"]["type"], "invalid_request_error");
    closed_within(&mut conn, SLACK).await;
}

#[tokio::test]
async fn at_the_connection_cap_new_connections_wait_for_a_free_slot() {
    const CAP: usize = 4;
    let app = spawn_app_with(|c| {
        c.http.max_connections = Some(CAP);
        c.http.header_read_timeout_ms = LONG_MS;
        c.http.idle_timeout_ms = LONG_MS;
    })
    .await;
    // Kept-alive connections, each answered, so each surely holds a slot.
    let mut held = Vec::new();
    for _ in 0..CAP {
        let mut conn = connect(&app).await;
        conn.write_all(b"GET /healthz HTTP/1.1\r\nHost: easel\r\n\r\n").await.unwrap();
        assert_eq!(read_response(&mut conn).await.0, 200);
        held.push(conn);
    }
    let client = app.client.clone();
    let url = app.url("/healthz");
    let mut waiting = tokio::spawn(async move { client.get(url).send().await });
    // The listener does not take the connection while every slot is held...
    let early = tokio::time::timeout(Duration::from_millis(500), &mut waiting).await;
    assert!(early.is_err(), "served past the cap: {early:?}");
    // ...and takes it as soon as one frees.
    drop(held.pop());
    let res = tokio::time::timeout(SLACK, waiting).await.expect("served once a slot frees").unwrap().unwrap();
    assert_eq!(res.status(), 200);
}

#[tokio::test]
async fn an_edit_image_over_the_limit_is_413_while_the_body_still_arrives() {
    let app = spawn_app().await;
    let mut conn = connect(&app).await;
    let boundary = "easel-boundary";
    let part_head = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"big.png\"\r\n\
         Content-Type: image/png\r\n\r\n"
    );
    // Announces 40 MiB (under the 64 MiB body limit) and sends a little over the 10 MiB image
    // limit, then nothing more: only a server that stops at the limit can answer.
    let head = format!(
        "POST /v1/images/edits HTTP/1.1\r\nHost: easel\r\nAuthorization: Bearer {}\r\n\
         Content-Type: multipart/form-data; boundary={boundary}\r\nContent-Length: {}\r\n\r\n{part_head}",
        app.key,
        40 << 20
    );
    conn.write_all(head.as_bytes()).await.unwrap();
    let mut image = b"\x89PNG\r\n\x1a\n".to_vec();
    image.resize((10 << 20) + (512 << 10), 0);
    conn.write_all(&image).await.unwrap();
    let (status, _, body) = tokio::time::timeout(Duration::from_secs(15), read_response(&mut conn))
        .await
        .expect("answered before the body ends");
    assert_eq!(status, 413);
    let json: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(json["error"]["message"], "image0 is larger than 10 MiB", "OpenAI's envelope: {json}");
    assert_eq!(json["error"]["type"], "invalid_request_error");
}
