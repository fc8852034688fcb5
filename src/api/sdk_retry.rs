//! How a `/v1` create relates to earlier requests, so that a retry never makes a second task.
//!
//! The official OpenAI SDKs (openai-python, openai-node) retry a call after a timeout of their
//! own, a connection error, 408, 409, 429 and 5xx, twice by default. They send no
//! `Idempotency-Key` (their idempotency header is unset); what marks a retry is
//! `X-Stainless-Retry-Count: N` (0 on the first attempt) on the same request. So each first
//! attempt records its task under a key derived from the API key and the request
//! ([`Idempotency::sdk_call`]), and an attempt with N ≥ 1 joins the task recorded there while it
//! can still be that call's: unfinished, or succeeded within the last [`JOIN_AFTER_END_MS`] (the
//! SDKs wait at most two minutes between attempts). A failed task is not joined: it cost
//! nothing, and the retry is a new try. A second call with the same request is a first attempt
//! again, and gets a task of its own.

use std::time::Duration;

use axum::http::HeaderMap;
use serde_json::Value;

use super::AppState;
use super::create::idempotency_key;
use super::error::ApiError;
use crate::accounts::ApiKey;
use crate::db::now_ms;
use crate::ids::{AccountId, TaskId};
use crate::tasks::idempotency::{self, Idempotency, Recorded};
use crate::tasks::{Task, TaskState};

/// The header the Stainless-generated SDKs number their attempts with.
pub const RETRY_COUNT: &str = "x-stainless-retry-count";
/// How long after its task succeeded a retry may still join it: the SDKs honour `Retry-After`
/// up to 60 s (Node) or 120 s (Python), and otherwise back off at most 8 s.
pub const JOIN_AFTER_END_MS: i64 = 3 * 60 * 1000;
/// How long a retry waits for a first attempt that is still creating its task.
const CREATING_WAIT: Duration = Duration::from_secs(5);
const CREATING_POLL: Duration = Duration::from_millis(50);

/// Where the task of a create request comes from.
#[derive(Debug)]
pub enum Origin {
    /// An earlier request made it: an `Idempotency-Key` replay, or an SDK retry joining its call.
    Earlier(TaskId),
    /// This request makes a new task, recorded under this key (the client's own, or its SDK
    /// call's) once created.
    New(Option<Idempotency>),
}

/// Which attempt of an SDK call a request is, if an SDK numbered it.
pub fn attempt(headers: &HeaderMap) -> Option<u32> {
    headers.get(RETRY_COUNT)?.to_str().ok()?.trim().parse().ok()
}

/// Decides where the task of a request to `route` comes from. `request` is what identifies it
/// (for JSON the body; for uploads, their digests too).
pub async fn origin(
    state: &AppState,
    caller: &ApiKey,
    headers: &HeaderMap,
    route: &str,
    request: &Value,
) -> Result<Origin, ApiError> {
    let account = &caller.account_id;
    if let Some(idem) = idempotency_key(headers, route, request)? {
        return Ok(match state.claim_key(account, &idem).await? {
            Some(id) => Origin::Earlier(id),
            None => Origin::New(Some(idem)),
        });
    }
    let Some(attempt) = attempt(headers) else {
        return Ok(Origin::New(None));
    };
    let call = Idempotency::sdk_call(caller.key_id.as_str(), route, request);
    if attempt > 0
        && let Some(id) = joinable(state, account, &call).await?
    {
        tracing::info!(task = %id, attempt, "an SDK retry joined the task of its first attempt");
        return Ok(Origin::Earlier(id));
    }
    idempotency::claim_anew(&state.db, account, &call).await?;
    Ok(Origin::New(Some(call)))
}

/// The task recorded for the call, if a retry of it may still join it.
async fn joinable(state: &AppState, account: &AccountId, call: &Idempotency) -> Result<Option<TaskId>, ApiError> {
    let deadline = tokio::time::Instant::now() + CREATING_WAIT;
    loop {
        match idempotency::recorded(&state.db, account, call).await? {
            None => return Ok(None),
            Some(Recorded::Creating { since_ms }) => {
                if !idempotency::still_creating(since_ms) || tokio::time::Instant::now() >= deadline {
                    return Ok(None);
                }
                tokio::time::sleep(CREATING_POLL).await;
            }
            Some(Recorded::Task(id)) => {
                let task = state.tasks.get_for_account(&id, account).await?;
                return Ok(task.filter(|t| may_join(t, now_ms())).map(|t| t.id));
            }
        }
    }
}

/// Whether a retry arriving at `now` can still belong to the call that made `task`.
fn may_join(task: &Task, now: i64) -> bool {
    match task.state {
        TaskState::Success => task.completed_at.is_some_and(|done| now - done <= JOIN_AFTER_END_MS),
        state => !state.is_terminal(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attempts_are_read_from_the_sdk_header() {
        let mut headers = HeaderMap::new();
        assert_eq!(attempt(&headers), None);
        headers.insert("X-Stainless-Retry-Count", "2".parse().unwrap());
        assert_eq!(attempt(&headers), Some(2));
        headers.insert("X-Stainless-Retry-Count", "two".parse().unwrap());
        assert_eq!(attempt(&headers), None);
    }
}
