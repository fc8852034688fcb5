//! `GET /api/v1/tasks/{id}/events`: one of the caller's tasks as it happens, as Server-Sent
//! Events. Each stored event goes out with its `seq` as the SSE id, so a client that reconnects
//! with `Last-Event-ID` gets exactly the events it missed; the stream ends after the final
//! event. While the task waits, `progress` events without an id tell its place in the queue
//! as it moves. The events are read from the database and news of them comes over the bus, so
//! a stream on any node follows a task running on any other.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures::Stream;
use serde::Serialize;
use serde_json::{Value, json};
use tokio::sync::mpsc;
use utoipa::ToSchema;

use super::AppState;
use super::error::ApiError;
use super::extract::Caller;
use super::openapi::schemas::{ApixoAuthErrors, ApixoError, TaskEventMessage};
use super::tasks::own_task;
use crate::ids::TaskId;
use crate::signals::{Change, TaskWatch};
use crate::tasks::Task;
use crate::tasks::events::{EventKind, TaskEvent};

/// How often a stream looks at the store without news: its task's queue position while it
/// waits, and (should a notification be lost) new events.
const WAITING_POLL: Duration = Duration::from_secs(1);
pub const RUNNING_POLL: Duration = Duration::from_secs(5);

/// One event of a task's stream (the SSE `data`); the SSE `event` field is its `type`.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = TaskEvent)]
pub struct TaskEventView {
    #[schema(example = "task_12345678")]
    pub task_id: String,
    /// Its place in the task's list, also the SSE `id`; absent on queue-position updates,
    /// which are not stored.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seq: Option<i64>,
    #[serde(rename = "type")]
    pub kind: EventKind,
    /// Unix milliseconds.
    pub at: i64,
    /// Per type: `created` {model, imagesRequested}; `started` {channel, attempt}; `progress`
    /// {percent, imagesDone, imagesRequested} or, while it waits, {queuePosition}; `image`
    /// {index, url}; `succeeded`, `failed`, `cancelled` {state, imagesDelivered, chargedUsd,
    /// failCode, failMsg}.
    #[serde(flatten)]
    #[schema(value_type = Object)]
    pub data: Value,
}

/// Follow one of the caller's tasks live.
///
/// A `text/event-stream` of the task's events, from the first (or after `Last-Event-ID`),
/// ending after the final one (`succeeded`, `failed` or `cancelled`). Comments keep a quiet
/// stream open. Each event's `data` is a `TaskEvent`.
#[utoipa::path(
    get,
    path = "/api/v1/tasks/{id}/events",
    operation_id = "followTask",
    tag = "Tasks",
    params(
        ("id" = String, Path, description = "The task's id", example = "task_12345678"),
        ("Last-Event-ID" = Option<String>, Header, nullable = false, description = "The `id` of the last event received: resume after it",
            pattern = "^[0-9]{0,18}$"),
    ),
    responses(
        (status = 200, description = "The task's events as Server-Sent Events",
            content_type = "text/event-stream", body = TaskEventMessage),
        (status = 400, description = "Last-Event-ID is not an event id", body = ApixoError),
        (status = 404, description = "No such task of this account", body = ApixoError),
        ApixoAuthErrors,
    ),
)]
#[tracing::instrument(skip_all)]
pub async fn follow(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let after = last_event_id(&headers)?;
    let task = own_task(&state, &caller, &id).await?;
    Ok(events_of(&state, task, after))
}

/// A task's events after `after`, live until its final one (the API's stream and the console's).
pub fn events_of(
    state: &AppState,
    task: Task,
    after: i64,
) -> Sse<impl Stream<Item = Result<Event, Infallible>> + use<>> {
    let owned = state.clone();
    live(state, "heartbeat", move |events| async move {
        if let Err(e) = stream(&owned, task, after, &events).await {
            tracing::warn!(error = %e, "a task's event stream stopped");
        }
    })
}

/// Answers with the events `produce` sends, as they come, with a `heartbeat` comment every
/// `[server] event_heartbeat_secs` between them; the answer ends when `produce` returns, and
/// `produce` hears that the client went away when its sends fail.
pub fn live<P, F>(
    state: &AppState,
    heartbeat: &'static str,
    produce: P,
) -> Sse<impl Stream<Item = Result<Event, Infallible>> + use<P, F>>
where
    P: FnOnce(mpsc::Sender<Event>) -> F,
    F: Future<Output = ()> + Send + 'static,
{
    let interval = Duration::from_secs(state.config.server.event_heartbeat_secs.max(1));
    // A few events ahead at most: an image event carries a whole image.
    let (events, mut out) = mpsc::channel(4);
    tokio::spawn(produce(events));
    let stream = futures::stream::poll_fn(move |cx| out.poll_recv(cx).map(|e| e.map(Ok)));
    Sse::new(stream).keep_alive(KeepAlive::new().interval(interval).text(heartbeat))
}

pub fn last_event_id(headers: &HeaderMap) -> Result<i64, ApiError> {
    let Some(raw) = headers.get("last-event-id") else { return Ok(0) };
    let invalid = || ApiError::BadRequest("Last-Event-ID must be the id of an event of this task".into());
    // Exactly what the document declares: up to 18 digits (always an i64), or nothing.
    let raw = raw.to_str().map_err(|_| invalid())?;
    if raw.len() > 18 || !raw.bytes().all(|b| b.is_ascii_digit()) {
        return Err(invalid());
    }
    Ok(raw.parse().unwrap_or(0))
}

/// Follows one task's stored events: each [`Follower::read`] answers those after the last one
/// it answered; [`Follower::wait`] waits for news of the task (from whichever node wrote it) or,
/// should a notification be lost, for the next poll.
pub struct Follower<'s> {
    state: &'s AppState,
    task: TaskId,
    after: i64,
    watch: TaskWatch,
}

impl<'s> Follower<'s> {
    /// From the event after `after` (0: from the first).
    pub fn new(state: &'s AppState, task: &TaskId, after: i64) -> Self {
        // Watching before the first read, so that no event falls between a read and a wait.
        Self { state, task: task.clone(), after, watch: state.bus.watch(task) }
    }

    pub async fn read(&mut self) -> Result<Vec<TaskEvent>, ApiError> {
        let events = self.state.tasks.events_after(&self.task, self.after).await?;
        if let Some(last) = events.last() {
            self.after = last.seq;
        }
        Ok(events)
    }

    pub async fn wait(&mut self, poll: Duration) {
        let after = self.after;
        self.watch.next(poll, |change| matches!(change, Change::Event { seq, .. } if seq > after)).await;
    }
}

/// Sends the task's events after `after` until the final one, or until the client goes away.
async fn stream(state: &AppState, task: Task, after: i64, out: &mpsc::Sender<Event>) -> Result<(), ApiError> {
    let mut follower = Follower::new(state, &task.id, after);
    let mut waiting = true;
    let mut position = None;
    // A task that had ended when the stream opened has all its events stored: past them
    // (`Last-Event-ID` at or after the final one) there is nothing to wait for.
    let ended = task.state.is_terminal();
    loop {
        let events = follower.read().await?;
        if events.is_empty() && ended {
            return Ok(());
        }
        for event in events {
            waiting = matches!(event.kind, EventKind::Created);
            let last = event.kind.is_final();
            if out.send(stored_event(state, &task.id, event).await?).await.is_err() || last {
                return Ok(());
            }
        }
        if waiting {
            let now = state.tasks.get(&task.id).await?;
            if let Some(now) = now.filter(|t| t.state == crate::tasks::TaskState::Pending) {
                let place = state.queue_position(&now).await?;
                if position != Some(place) {
                    position = Some(place);
                    if out.send(queue_event(&now, place)).await.is_err() {
                        return Ok(());
                    }
                }
            }
        }
        let poll = if waiting { WAITING_POLL } else { RUNNING_POLL };
        tokio::select! {
            _ = out.closed() => return Ok(()),
            () = follower.wait(poll) => {}
        }
    }
}

async fn stored_event(state: &AppState, task: &TaskId, event: TaskEvent) -> Result<Event, ApiError> {
    let mut data = event.data;
    // An image's link is signed when it is read, like every result link.
    if event.kind == EventKind::Image
        && let Some(index) = data["index"].as_u64()
        && let Some(done) = state.tasks.get(task).await?
        && done.files_purged_at.is_none()
    {
        data["url"] = state.result_urls(&done).get(index as usize).map_or(Value::Null, |u| json!(u));
    }
    let view = TaskEventView { task_id: task.to_string(), seq: Some(event.seq), kind: event.kind, at: event.at, data };
    Ok(sse(&view).id(event.seq.to_string()))
}

fn queue_event(task: &Task, place: u32) -> Event {
    let data = json!({"queuePosition": place, "imagesDone": 0, "imagesRequested": task.requested_images});
    let view = TaskEventView {
        task_id: task.id.to_string(),
        seq: None,
        kind: EventKind::Progress,
        at: crate::db::now_ms(),
        data,
    };
    sse(&view)
}

fn sse(view: &TaskEventView) -> Event {
    Event::default().event(view.kind.as_str()).data(serde_json::to_string(view).expect("events serialize"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn last_event_id_is_a_seq_or_absent() {
        let with = |v: &str| {
            let mut h = HeaderMap::new();
            h.insert("last-event-id", v.parse().unwrap());
            h
        };
        assert_eq!(last_event_id(&HeaderMap::new()).unwrap(), 0);
        assert_eq!(last_event_id(&with("7")).unwrap(), 7);
        assert_eq!(last_event_id(&with("")).unwrap(), 0);
        assert!(last_event_id(&with(" 7")).is_err());
        assert!(last_event_id(&with("-1")).is_err());
        assert!(last_event_id(&with("abc")).is_err());
    }
}
