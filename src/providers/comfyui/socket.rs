//! ComfyUI's `/ws?clientId=` messages for one task (docs/PROVIDERS.md §7): its prompt's
//! progress, and its end sooner than a poll of `/history` would find it. Optional: where the
//! socket cannot be opened (a proxy that passes no websockets), polling alone follows the prompt.

use std::convert::Infallible;
use std::time::Duration;

use futures::StreamExt;
use serde_json::Value;
use tokio::net::TcpStream;
use tokio::sync::Notify;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::{HeaderName, HeaderValue};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// The longest the socket may take to open before the prompt is queued without it.
const OPEN_TIME: Duration = Duration::from_secs(5);

pub struct Socket(WebSocketStream<MaybeTlsStream<TcpStream>>);

/// What one message says of the prompt followed.
#[derive(Debug, PartialEq)]
enum News {
    /// A step of a node that reports them (a sampler), as a percent short of 100.
    Progress(u32),
    /// It ended, well or not: its history has the outcome.
    Ended,
    Other,
}

/// Opens `ws_url` (the server's `/ws?clientId=…`) with the proxy's header, if any.
pub async fn open(ws_url: &str, header: Option<(&str, String)>) -> Option<Socket> {
    let mut request = match ws_url.into_client_request() {
        Ok(request) => request,
        Err(e) => {
            tracing::warn!(error = %e, "ComfyUI's websocket URL is not one; following the prompt by polling");
            return None;
        }
    };
    if let Some((name, value)) = header {
        let (Ok(name), Ok(value)) = (HeaderName::try_from(name), HeaderValue::try_from(value)) else {
            return None;
        };
        request.headers_mut().insert(name, value);
    }
    match tokio::time::timeout(OPEN_TIME, tokio_tungstenite::connect_async(request)).await {
        Ok(Ok((stream, _))) => Some(Socket(stream)),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "ComfyUI's websocket did not open; following the prompt by polling");
            None
        }
        Err(_) => {
            tracing::warn!("ComfyUI's websocket did not open in time; following the prompt by polling");
            None
        }
    }
}

impl Socket {
    /// Reads the socket, telling `progress` of each step of `prompt_id` and `ended` of its end.
    /// Never returns: once the socket closes, polling goes on alone.
    pub async fn follow(mut self, prompt_id: &str, progress: impl Fn(u32), ended: &Notify) -> Infallible {
        while let Some(message) = self.0.next().await {
            // Binary frames are previews of the image being made.
            let Ok(Message::Text(text)) = message else {
                if message.is_err() {
                    break;
                }
                continue;
            };
            match read(text.as_str(), prompt_id) {
                News::Progress(percent) => progress(percent),
                News::Ended => ended.notify_one(),
                News::Other => {}
            }
        }
        tracing::debug!("ComfyUI's websocket closed; polling on");
        std::future::pending().await
    }
}

/// `{"type": "progress", "data": {"value", "max", "prompt_id", "node"}}`; the end is
/// `executing` with `node: null`, or `execution_success` / `_error` / `_interrupted`.
fn read(text: &str, prompt_id: &str) -> News {
    let Ok(message) = serde_json::from_str::<Value>(text) else { return News::Other };
    let data = &message["data"];
    // The socket is this task's own (its client id), but a message naming another prompt is not.
    if data["prompt_id"].as_str().is_some_and(|id| id != prompt_id) {
        return News::Other;
    }
    match message["type"].as_str().unwrap_or_default() {
        "progress" => match (data["value"].as_u64(), data["max"].as_u64()) {
            (Some(value), Some(max)) if max > 0 => News::Progress((value.min(max) * 100 / max).min(99) as u32),
            _ => News::Other,
        },
        "executing" if data["node"].is_null() && data["prompt_id"].is_string() => News::Ended,
        "execution_success" | "execution_error" | "execution_interrupted" => News::Ended,
        _ => News::Other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_read_as_progress_and_end_of_this_prompt_only() {
        let progress = r#"{"type": "progress", "data": {"value": 5, "max": 20, "prompt_id": "p", "node": "3"}}"#;
        assert_eq!(read(progress, "p"), News::Progress(25));
        assert_eq!(read(progress, "q"), News::Other, "another prompt's");
        let last = r#"{"type": "progress", "data": {"value": 20, "max": 20, "prompt_id": "p"}}"#;
        assert_eq!(read(last, "p"), News::Progress(99), "100 only once the images are in");
        assert_eq!(read(r#"{"type": "executing", "data": {"node": null, "prompt_id": "p"}}"#, "p"), News::Ended);
        assert_eq!(read(r#"{"type": "executing", "data": {"node": "8", "prompt_id": "p"}}"#, "p"), News::Other);
        assert_eq!(read(r#"{"type": "execution_error", "data": {"prompt_id": "p"}}"#, "p"), News::Ended);
        let status = r#"{"type": "status", "data": {"status": {"exec_info": {"queue_remaining": 2}}, "sid": "t"}}"#;
        assert_eq!(read(status, "p"), News::Other);
        assert_eq!(read("not json", "p"), News::Other);
    }
}
