//! A task's callback deliveries and their attempts, and re-sending a failed one.

use axum::Json;
use axum::extract::{Path, State};
use serde::{Deserialize, Serialize};

use super::AppState;
use super::apixo::{Envelope, success};
use super::error::ApiError;
use super::extract::{Caller, Query};
use crate::ids::TaskId;
use crate::webhooks::store::{self, Attempt, Delivery, RetryOutcome};

#[derive(Deserialize)]
pub struct CallbacksQuery {
    #[serde(rename = "taskId")]
    task_id: Option<String>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DeliveryView {
    #[serde(flatten)]
    delivery: Delivery,
    attempt_log: Vec<Attempt>,
}

#[tracing::instrument(skip_all)]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    Query(query): Query<CallbacksQuery>,
) -> Result<Json<Envelope<Vec<DeliveryView>>>, ApiError> {
    let raw =
        query.task_id.filter(|t| !t.is_empty()).ok_or_else(|| ApiError::BadRequest("taskId is required".into()))?;
    let not_found = || ApiError::NotFound(format!("task {raw} not found"));
    let id = TaskId::parse(&raw).ok_or_else(not_found)?;
    state.tasks.get_for_account(&id, &caller.0.account_id).await?.ok_or_else(not_found)?;
    let deliveries = store::list_for_task(&state.db, &id, &caller.0.account_id).await?;
    Ok(success(deliveries.into_iter().map(|(delivery, attempt_log)| DeliveryView { delivery, attempt_log }).collect()))
}

#[tracing::instrument(skip_all, fields(delivery = %id))]
pub async fn retry(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Envelope<serde_json::Value>>, ApiError> {
    match store::retry(&state.db, &id, &caller.0.account_id).await? {
        RetryOutcome::Queued => {
            state.callbacks.notify_one();
            Ok(success(serde_json::json!({ "id": id, "state": "pending" })))
        }
        RetryOutcome::NotFound => Err(ApiError::NotFound(format!("callback {id} not found"))),
        RetryOutcome::AlreadyDelivered => Err(ApiError::Conflict(format!("callback {id} was already delivered"))),
    }
}
