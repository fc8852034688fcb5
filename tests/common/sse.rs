//! A small Server-Sent Events reader for the tests: events (and comments) as they arrive.

use std::time::Duration;

use futures::StreamExt;
use serde_json::Value;

/// One event as the wire carried it.
#[derive(Debug, Clone, PartialEq)]
pub struct SseEvent {
    pub id: Option<String>,
    pub event: String,
    pub data: Value,
}

/// What arrived: an event, or a comment (a heartbeat).
#[derive(Debug, Clone, PartialEq)]
pub enum Frame {
    Event(SseEvent),
    Comment(String),
}

pub struct SseStream {
    body: futures::stream::BoxStream<'static, reqwest::Result<bytes::Bytes>>,
    buffer: String,
    pub content_type: String,
}

impl SseStream {
    /// Opens `url` with `key`, resuming after `last_event_id` if given; asserts a 200 stream.
    pub async fn open(client: &reqwest::Client, url: &str, key: &str, last_event_id: Option<&str>) -> Self {
        let mut request = client.get(url).bearer_auth(key);
        if let Some(id) = last_event_id {
            request = request.header("last-event-id", id);
        }
        let res = request.send().await.unwrap();
        assert_eq!(res.status(), 200, "opening the event stream {url}");
        let content_type = res.headers()["content-type"].to_str().unwrap().to_owned();
        Self { body: res.bytes_stream().boxed(), buffer: String::new(), content_type }
    }

    /// The next frame; `None` once the server has ended the stream. Fails the test after 60 s.
    pub async fn next(&mut self) -> Option<Frame> {
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                if let Some(frame) = parse(&block) {
                    return Some(frame);
                }
                continue;
            }
            let chunk = tokio::time::timeout(Duration::from_secs(60), self.body.next())
                .await
                .expect("the event stream went quiet for 60 s");
            match chunk {
                Some(bytes) => self.buffer.push_str(&String::from_utf8_lossy(&bytes.unwrap())),
                None => return None,
            }
        }
    }

    /// The next event, skipping comments.
    pub async fn next_event(&mut self) -> Option<SseEvent> {
        loop {
            match self.next().await? {
                Frame::Event(e) => return Some(e),
                Frame::Comment(_) => {}
            }
        }
    }

    /// Every event until the stream ends.
    pub async fn rest(&mut self) -> Vec<SseEvent> {
        let mut events = Vec::new();
        while let Some(e) = self.next_event().await {
            events.push(e);
        }
        events
    }
}

fn parse(block: &str) -> Option<Frame> {
    let (mut id, mut event, mut data, mut comment) = (None, String::from("message"), Vec::new(), None);
    for line in block.lines() {
        if let Some(text) = line.strip_prefix(':') {
            comment = Some(text.trim().to_owned());
        } else if let Some((field, value)) = line.split_once(':') {
            let value = value.strip_prefix(' ').unwrap_or(value);
            match field {
                "id" => id = Some(value.to_owned()),
                "event" => event = value.to_owned(),
                "data" => data.push(value.to_owned()),
                _ => {}
            }
        }
    }
    if data.is_empty() {
        return comment.map(Frame::Comment);
    }
    let data = serde_json::from_str(&data.join("\n")).expect("event data is JSON");
    Some(Frame::Event(SseEvent { id, event, data }))
}
