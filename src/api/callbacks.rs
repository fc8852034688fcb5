//! A task's callback deliveries and their attempts, and re-sending a failed one.

use axum::Json;
use axum::extract::{Path, State};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::AppState;
use super::error::ApiError;
use super::extract::{Caller, Query};
use super::house::{Envelope, success};
use super::openapi::schemas::{ApixoAuthErrors, ApixoError};
use crate::ids::{AccountId, TaskId};
use crate::webhooks::store::{self, Attempt, Delivery, RetryOutcome};

#[derive(Deserialize)]
pub struct CallbacksQuery {
    #[serde(rename = "taskId")]
    task_id: Option<String>,
}

/// A callback delivery and its attempts.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeliveryView {
    #[serde(flatten)]
    delivery: Delivery,
    attempt_log: Vec<Attempt>,
}

/// A task's callback deliveries, each with its attempts.
pub async fn deliveries_of(
    state: &AppState,
    task: &TaskId,
    account: &AccountId,
) -> Result<Vec<DeliveryView>, ApiError> {
    let log = store::list_for_task(&state.db, task, account).await?;
    Ok(log.into_iter().map(|(delivery, attempt_log)| DeliveryView { delivery, attempt_log }).collect())
}

/// A task's callback deliveries.
#[utoipa::path(
    get,
    path = "/api/v1/callbacks",
    operation_id = "listCallbacks",
    tag = "Callbacks",
    params(("taskId" = String, Query, description = "The task", example = "task_12345678", min_length = 1)),
    responses(
        (status = 200, description = "The deliveries, with every attempt", body = Envelope<Vec<DeliveryView>>,
            links(("retry" = (operation_id = "retryCallback", parameters(("id" = "$response.body#/data/0/id")))))),
        (status = 400, description = "`taskId` is missing", body = ApixoError),
        (status = 404, description = "No such task of this account", body = ApixoError),
        ApixoAuthErrors,
    ),
)]
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
    Ok(success(deliveries_of(&state, &id, &caller.0.account_id).await?))
}

/// A delivery queued again.
#[derive(Serialize, ToSchema)]
pub struct RetryQueued {
    id: String,
    /// Always `pending`.
    #[schema(value_type = String, example = "pending")]
    state: &'static str,
}

/// Send a failed callback again.
///
/// Only a delivery that has given up (`failed`) can be retried: one that is still pending or
/// being sent answers 409, so a retry never overlaps an attempt. Retries are limited per key
/// (`webhooks.retry_rpm`) and per delivery (`webhooks.retry_delivery_rpm`).
#[utoipa::path(
    post,
    path = "/api/v1/callbacks/{id}/retry",
    operation_id = "retryCallback",
    tag = "Callbacks",
    params(("id" = String, Path, description = "The delivery's id (`msg_…`)")),
    responses(
        (status = 200, description = "Queued", body = Envelope<RetryQueued>),
        (status = 404, description = "No such delivery of this account", body = ApixoError),
        (status = 409, description = "The callback was already delivered, or is still pending or being sent",
            body = ApixoError),
        (status = 429, description = "Too many retries for this key or this delivery", body = ApixoError,
            headers(("Retry-After" = u64, description = "Seconds to wait"))),
        ApixoAuthErrors,
    ),
)]
#[tracing::instrument(skip_all, fields(delivery = %id))]
pub async fn retry(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Envelope<RetryQueued>>, ApiError> {
    let account = &caller.0.account_id;
    let limits = state.config.server.limits;
    let hooks = &state.config.webhooks;
    if limits {
        let key = format!("callback-retry:{}", caller.0.key_id);
        state.limiter.admit(&key, hooks.retry_rpm).await.map_err(|wait| ApiError::RateLimited {
            message: format!("rate limit reached: {} callback retries per minute per key", hooks.retry_rpm),
            retry_after_secs: wait.secs(),
        })?;
    }
    // Every retry of a delivery that may yet be re-sent spends its allowance, pending ones too:
    // a retry spared because its delivery was pending could find it failed a moment later.
    // Delivered is final, and an unknown id is the 404 below.
    let current = store::state_of(&state.db, &id, account).await?;
    if limits && current.as_deref().is_some_and(|s| s != "delivered") {
        let key = format!("callback-retry:{id}");
        state.limiter.admit(&key, hooks.retry_delivery_rpm).await.map_err(|wait| ApiError::RateLimited {
            message: format!("callback {id} was retried moments ago; retry it again later"),
            retry_after_secs: wait.secs(),
        })?;
    }
    match store::retry(&state.db, &state.bus, &id, account).await? {
        RetryOutcome::Queued => Ok(success(RetryQueued { id, state: "pending" })),
        RetryOutcome::NotFound => Err(ApiError::NotFound(format!("callback {id} not found"))),
        RetryOutcome::AlreadyDelivered => Err(ApiError::Conflict(format!("callback {id} was already delivered"))),
        RetryOutcome::StillTrying => Err(ApiError::Conflict(format!(
            "callback {id} is still pending or being sent; only a failed callback can be retried"
        ))),
    }
}
