//! apimodels' unified API (seed 003): `{"code","msg","data"}` envelopes.

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use super::AppState;
use super::create::Creation;
use super::error::{ApiError, render_error};
use super::extract::{Caller, JsonBody, Query};
use super::openapi::examples;
use super::openapi::schemas::{CreateHeaders, UnifiedAuthErrors, UnifiedError, UnifiedRequest, UnifiedSubmitted};
use crate::catalog::{Catalog, Routing, unified};
use crate::ids::TaskId;
use crate::money::Micros;
use crate::storage::ResultLinks;
use crate::tasks::{Dialect, Task, TaskState};
use crate::webhooks::CallbackData;

/// The envelope of seed 003: `code` is 200 and `msg` is `success`.
#[derive(Serialize, ToSchema)]
pub struct Envelope<T> {
    pub code: u16,
    pub msg: String,
    pub data: T,
}

fn success<T: Serialize>(data: T) -> Json<Envelope<T>> {
    Json(Envelope { code: 200, msg: "success".into(), data })
}

/// Seed 003's statuses: a short balance is 402 here, not APIXO's 400.
fn status_of(error: &ApiError) -> StatusCode {
    match error {
        ApiError::InsufficientCredits => StatusCode::PAYMENT_REQUIRED,
        other => other.status(),
    }
}

pub async fn envelope(response: Response) -> Response {
    render_error(response, |error| {
        let status = status_of(error);
        (status, Envelope { code: status.as_u16(), msg: error.to_string(), data: Value::Null })
    })
}

#[derive(Serialize, ToSchema)]
pub struct Balance {
    /// Spendable USD.
    pub balance: f64,
    /// Spendable plus held.
    pub total: f64,
    /// Held for unfinished tasks.
    pub frozen: f64,
    #[schema(value_type = String, example = "USD")]
    pub currency: &'static str,
}

/// The account's balance.
#[utoipa::path(
    get,
    path = "/api/v1/balance",
    operation_id = "getBalance",
    tag = "Unified API",
    responses(
        (status = 200, description = "The balance in USD", body = Envelope<Balance>, example = json!(
            {"code": 200, "msg": "success", "data": {"balance": 9.872, "total": 10.0, "frozen": 0.128, "currency": "USD"}}
        )),
        UnifiedAuthErrors,
    ),
)]
pub async fn balance(State(state): State<AppState>, caller: Caller) -> Result<Json<Envelope<Balance>>, ApiError> {
    let account = state.accounts.get(&caller.0.account_id).await?;
    Ok(success(Balance {
        balance: account.balance.to_usd(),
        total: Micros(account.balance.0 + account.held.0).to_usd(),
        frozen: account.held.to_usd(),
        currency: "USD",
    }))
}

/// Seed 003's task states: `success` is called `completed` there.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum UnifiedState {
    Pending,
    Processing,
    Completed,
    Failed,
}

fn unified_state(state: TaskState) -> UnifiedState {
    match state {
        TaskState::Pending => UnifiedState::Pending,
        TaskState::Processing => UnifiedState::Processing,
        TaskState::Success => UnifiedState::Completed,
        TaskState::Failed => UnifiedState::Failed,
    }
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = UnifiedCreated)]
pub struct Created {
    pub task_id: String,
    /// Always `pending`.
    pub state: UnifiedState,
}

/// The query answer of seed 003; fields that do not apply are left out.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = UnifiedStatus)]
pub struct Status {
    pub task_id: String,
    pub state: UnifiedState,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub result_urls: Option<Vec<String>>,
    pub create_time: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub complete_time: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fail_msg: Option<String>,
}

pub fn status(state: &AppState, task: &Task) -> Status {
    Status {
        task_id: task.id.to_string(),
        state: unified_state(task.state),
        result_urls: (task.state == TaskState::Success).then(|| state.result_urls(task)),
        create_time: task.created_at,
        complete_time: task.completed_at,
        fail_msg: task.fail_msg.clone(),
    }
}

/// Create an image generation task.
///
/// Like `generateTask`, it holds credits and stores the task before answering; `Prefer: wait=N`
/// waits for the end as there.
#[utoipa::path(
    post,
    path = "/api/v1/images/generations",
    operation_id = "createGeneration",
    tag = "Unified API",
    params(CreateHeaders),
    request_body(content = UnifiedRequest, examples(
        ("text-to-image" = (value = json!(examples::unified_text_to_image()))),
        ("image-to-image" = (value = json!(examples::unified_image_to_image()))),
    )),
    responses(
        (status = 200, description = "Accepted: the task's id, or with `Prefer: wait` its status",
            body = UnifiedSubmitted,
            headers(
                ("idempotent-replayed" = String, description = "`true` on a replay"),
                ("preference-applied" = String, description = "`wait=N` when the answer waited"),
            ),
            links(("status" = (operation_id = "queryGeneration",
                parameters(("task_id" = "$response.body#/data/taskId"))))),
            examples(
                ("created" = (value = json!(examples::unified_created()))),
                ("completed, with Prefer: wait" = (value = json!(examples::unified_completed()))),
            )),
        (status = 400, description = "Invalid parameters", body = UnifiedError),
        (status = 402, description = "Insufficient credits", body = UnifiedError,
            example = json!(examples::unified_insufficient_credits())),
        (status = 409, description = "A request with this Idempotency-Key is still in flight", body = UnifiedError),
        (status = 413, description = "The body is larger than 1 MiB", body = UnifiedError),
        (status = 422, description = "This Idempotency-Key was used with a different request", body = UnifiedError),
        (status = 429, description = "Too many task creations per minute, or too many unfinished tasks",
            body = UnifiedError, headers(("Retry-After" = u64, description = "Seconds to wait"))),
        UnifiedAuthErrors,
    ),
)]
#[tracing::instrument(skip_all, fields(account = %caller.0.account_id))]
pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    JsonBody(body): JsonBody,
) -> Result<Response, ApiError> {
    let request = unified::parse(&state.catalog, &body)?;
    let creation = Creation {
        dialect: Dialect::Unified,
        model: request.model,
        spec: request.spec,
        routing: Routing::Auto,
        callback_url: request.callback_url,
    };
    let accepted = state.accept(&caller, &headers, "unified/images/generations", &body, creation).await?;
    Ok(accepted.render(
        |id| success(Created { task_id: id.to_string(), state: UnifiedState::Pending }),
        |task| success(status(&state, task)),
    ))
}

#[derive(Deserialize)]
pub struct QueryParams {
    task_id: Option<String>,
}

/// Query a task's status.
#[utoipa::path(
    get,
    path = "/api/v1/images/generations",
    operation_id = "queryGeneration",
    tag = "Unified API",
    params(("task_id" = String, Query, description = "The id the create request answered with",
        example = "task_12345678", min_length = 1)),
    responses(
        (status = 200, description = "The task", body = Envelope<Status>, examples(
            ("completed" = (value = json!(examples::unified_completed()))),
            ("failed" = (value = json!(examples::unified_failed()))),
        )),
        (status = 400, description = "`task_id` is missing", body = UnifiedError),
        (status = 404, description = "No such task of this account", body = UnifiedError),
        (status = 429, description = "Too many status requests per minute for this key", body = UnifiedError,
            headers(("Retry-After" = u64, description = "Seconds to wait"))),
        UnifiedAuthErrors,
    ),
)]
#[tracing::instrument(skip_all)]
pub async fn query(
    State(state): State<AppState>,
    caller: Caller,
    Query(params): Query<QueryParams>,
) -> Result<Json<Envelope<Status>>, ApiError> {
    state.admit_poll(&caller.0).await?;
    let raw =
        params.task_id.filter(|t| !t.is_empty()).ok_or_else(|| ApiError::BadRequest("task_id is required".into()))?;
    let not_found = || ApiError::NotFound(format!("task {raw} not found"));
    let id = TaskId::parse(&raw).ok_or_else(not_found)?;
    let task = state.tasks.get_for_account(&id, &caller.0.account_id).await?.ok_or_else(not_found)?;
    Ok(success(status(&state, &task)))
}

/// Seed 003's `"<provider>/<model_name>"`: the maker of the task's model's family.
pub fn vendor_model(catalog: &Catalog, task: &Task) -> String {
    let vendor = task.tariff.as_ref().map(|t| t.family).or_else(|| catalog.get(&task.model).map(|m| m.family));
    match vendor {
        Some(family) => format!("{}/{}", family.vendor(), task.model),
        None => task.model.clone(),
    }
}

/// The callback body of seed 003, every key present.
pub fn callback_payload(links: &ResultLinks, catalog: &Catalog, task: &Task) -> Vec<u8> {
    let data = CallbackData::new(links, task, vendor_model(catalog, task), unified_state(task.state));
    serde_json::to_vec(&Envelope { code: 200, msg: "success".into(), data }).expect("callbacks serialize")
}
