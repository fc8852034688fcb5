//! Easel's event streams as the tests read them: events (and comments) as they arrive.

use std::time::Duration;

use easel::sse_reader::{Frame as Raw, SseReader};
use futures::StreamExt;
use serde_json::Value;

/// One event as the wire carried it, its data parsed.
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
    reader: SseReader,
    ready: std::collections::VecDeque<Raw>,
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
        Self { body: res.bytes_stream().boxed(), reader: SseReader::default(), ready: Default::default(), content_type }
    }

    /// The next frame; `None` once the stream has ended or broken. Fails the test after 60 s of
    /// silence.
    pub async fn next(&mut self) -> Option<Frame> {
        loop {
            if let Some(raw) = self.ready.pop_front() {
                return Some(match raw {
                    Raw::Comment(text) => Frame::Comment(text),
                    Raw::Event { id, event, data } => {
                        let data = serde_json::from_str(&data).expect("event data is JSON");
                        Frame::Event(SseEvent { id, event, data })
                    }
                });
            }
            let chunk = tokio::time::timeout(Duration::from_secs(60), self.body.next())
                .await
                .expect("the event stream went quiet for 60 s");
            match chunk {
                Some(Ok(bytes)) => self.ready.extend(self.reader.push(&bytes)),
                // Ended, or broken (its server went away): either way nothing more comes.
                Some(Err(_)) | None => return None,
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
