//! OpenAI's streamed image answers (`stream: true` on `/v1/images/generations` and
//! `/v1/images/edits`): `text/event-stream` with `image_generation.partial_image` (or
//! `image_edit.partial_image`) events for the previews the task's provider made, then one
//! `….completed` event per image, as OpenAI's SDKs read them. The previews and the images come
//! from the task's events and the object store, so the answer follows a task on any node.

use std::time::Duration;

use axum::response::sse::Event;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::AppState;
use super::error::ApiError;
use super::events::{Follower, RUNNING_POLL, live};
use super::openai::{failure_detail, image_settings};
use crate::db::now_ms;
use crate::ids::{AccountId, TaskId};
use crate::tasks::events::EventKind;
use crate::tasks::{Task, partial_key};

/// Which operation a stream answers: its events are named after it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    Generation,
    Edit,
}

impl Operation {
    fn event(self, what: &str) -> String {
        let prefix = match self {
            Operation::Generation => "image_generation",
            Operation::Edit => "image_edit",
        };
        format!("{prefix}.{what}")
    }
}

/// Answers with the task's previews and images as they come.
pub async fn respond(state: &AppState, account: &AccountId, id: &TaskId, op: Operation) -> Result<Response, ApiError> {
    let task = state.tasks.get_for_account(id, account).await?;
    let task = task.ok_or_else(|| ApiError::NotFound(format!("task {id} not found")))?;
    let owned = state.clone();
    // An empty comment as the heartbeat, as OpenAI's own streams send.
    let answer = live(state, "", move |events| async move {
        if let Err(e) = pump(&owned, &task, op, &events).await {
            tracing::warn!(task = %task.id, error = %e, "a streamed image answer stopped");
            let _ = events.send(error_event("server_error", None, &e.to_string())).await;
        }
    });
    Ok(answer.into_response())
}

/// Sends the previews as their events arrive, then the images or the failure.
async fn pump(state: &AppState, task: &Task, op: Operation, out: &mpsc::Sender<Event>) -> Result<(), ApiError> {
    let deadline = Instant::now() + Duration::from_secs(state.config.server.openai_wait_secs);
    let mut follower = Follower::new(state, &task.id, 0);
    loop {
        for event in follower.read().await? {
            if event.kind == EventKind::Progress
                && let Some(index) = event.data["partialImageIndex"].as_u64()
            {
                // A preview already deleted (the task's files were purged) is skipped.
                if let Ok(bytes) = state.storage.read(&partial_key(&task.id, index as u32, &task.spec)).await {
                    let data =
                        image_event(task, op.event("partial_image"), &bytes, json!({"partial_image_index": index}));
                    if out.send(data).await.is_err() {
                        return Ok(());
                    }
                }
            } else if event.kind.is_final() {
                let ended = state.tasks.get(&task.id).await?.unwrap_or_else(|| task.clone());
                return finish(state, &ended, op, out).await;
            }
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            let message = format!("the image is not ready yet; poll task {} on /api/v1/tasks/{}", task.id, task.id);
            let _ = out.send(error_event("server_error", Some("timeout"), &message)).await;
            return Ok(());
        }
        tokio::select! {
            _ = out.closed() => return Ok(()),
            () = follower.wait(RUNNING_POLL.min(left)) => {}
        }
    }
}

/// One `completed` event per image of a task that succeeded; OpenAI's error event otherwise.
async fn finish(state: &AppState, task: &Task, op: Operation, out: &mpsc::Sender<Event>) -> Result<(), ApiError> {
    if task.state != crate::tasks::TaskState::Success {
        let (kind, code, message) = failure_detail(task);
        let _ = out.send(error_event(kind, code, &message)).await;
        return Ok(());
    }
    for key in &task.result_keys {
        let bytes = state.storage.read(key).await.map_err(ApiError::internal)?;
        let usage = json!({"input_tokens": 0, "input_tokens_details": {"image_tokens": 0, "text_tokens": 0},
            "output_tokens": 0, "total_tokens": 0});
        if out.send(image_event(task, op.event("completed"), &bytes, json!({ "usage": usage }))).await.is_err() {
            break;
        }
    }
    Ok(())
}

/// An event carrying an image, with the settings every one of OpenAI's image events repeats.
fn image_event(task: &Task, kind: String, bytes: &[u8], extra: Value) -> Event {
    let mut data = image_settings(task);
    data["type"] = json!(kind);
    data["b64_json"] = json!(BASE64.encode(bytes));
    data["created_at"] = json!(now_ms() / 1000);
    if let (Some(data), Value::Object(extra)) = (data.as_object_mut(), extra) {
        data.extend(extra);
    }
    Event::default().event(kind).data(data.to_string())
}

/// OpenAI's error event: the SDKs raise it as an API error.
fn error_event(kind: &str, code: Option<&str>, message: &str) -> Event {
    let data = json!({"type": "error", "error": {"type": kind, "code": code, "message": message, "param": null}});
    Event::default().event("error").data(data.to_string())
}
