//! APIXO's per-model task API (seeds 000-002): `generateTask/{model}` and `statusTask/{model}`.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::Response;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use super::AppState;
use super::create::Creation;
use super::error::ApiError;
use super::extract::{Caller, JsonBody, Query};
use super::house::{Envelope, success};
use super::openapi::examples;
use super::openapi::schemas::{
    ApixoAuthErrors, ApixoError, ApixoModel, CatalogModel, CreateHeaders, GenerateTaskRequest, TaskSubmitted,
};
use crate::catalog::fields::{Checked, Fields, http_url, invalid};
use crate::catalog::{Model, Routing, ValidationError};
use crate::ids::TaskId;
use crate::storage::ResultLinks;
use crate::tasks::{Dialect, Task, TaskState};

#[derive(Serialize, ToSchema)]
pub struct TaskCreated {
    #[serde(rename = "taskId")]
    pub task_id: String,
}

/// The top level of a task request, around the model's `input`.
fn parse_request<'c>(model: &'c Model, body: &Value) -> Checked<Creation<'c>> {
    let f = Fields::of("", body)?;
    let request_type = f.choice("request_type", &["async", "callback"], Some("async"))?;
    let callback_url = f.str("callback_url")?.map(|raw| http_url("callback_url", raw)).transpose()?;
    if request_type == "callback" && callback_url.is_none() {
        return invalid("callback_url is required when request_type is callback");
    }
    let routing = Routing::parse(f.choice("provider", &["auto", "value", "official"], Some("auto"))?)
        .expect("choices are valid routings");
    let input = f.object("input")?.ok_or_else(|| ValidationError("input is required".into()))?;
    let spec = model.parse_apixo_input(input)?;
    Ok(Creation { dialect: Dialect::Apixo, model, spec, routing, callback_url: callback_url.map(String::from) })
}

/// The model a path names, by id or alias.
fn known_model<'a>(state: &'a AppState, model: &str) -> Result<&'a Model, ApiError> {
    state.catalog.get(model).ok_or_else(|| ApiError::NotFound(format!("model {model} not found")))
}

/// Create a generation task.
///
/// Holds `images × price` of credits and stores the task before answering with its id. With
/// `Prefer: wait=N` the answer waits until the task ends or N seconds (at most 60) pass and
/// carries its status instead.
#[utoipa::path(
    post,
    path = "/api/v1/generateTask/{model}",
    operation_id = "generateTask",
    tag = "APIXO tasks",
    params(
        ("model" = ApixoModel, Path, description = "The model; `input` must be that model's"),
        CreateHeaders,
    ),
    request_body(content = GenerateTaskRequest, examples(
        ("seedream-5-0 text-to-image" = (value = json!(examples::seedream_text_to_image()))),
        ("seedream-5-0 image-to-image" = (value = json!(examples::seedream_image_to_image()))),
        ("seedream-5-0 web search" = (value = json!(examples::seedream_web_search()))),
        ("seedream-5-0 explicit size" = (value = json!(examples::seedream_explicit_size()))),
        ("gpt-image-1 text-to-image" = (value = json!(examples::gpt_text_to_image()))),
        ("gpt-image-1 with references" = (value = json!(examples::gpt_reference_guided()))),
    )),
    responses(
        (status = 200, description = "Accepted: the task's id, or with `Prefer: wait` its status",
            body = TaskSubmitted,
            headers(
                ("idempotent-replayed" = String, description = "`true` when an earlier request with this \
                    Idempotency-Key created the task"),
                ("preference-applied" = String, description = "`wait=N` when the answer waited"),
            ),
            links(
                ("status" = (operation_id = "statusTask", parameters(("model" = "$request.path.model"),
                    ("taskId" = "$response.body#/data/taskId")))),
                ("callbacks" = (operation_id = "listCallbacks", parameters(("taskId" = "$response.body#/data/taskId")))),
            ),
            examples(
                ("created" = (value = json!(examples::task_created()))),
                ("finished, with Prefer: wait" = (value = json!(examples::task_succeeded()))),
            )),
        (status = 400, description = "Invalid parameters, or insufficient credits", body = ApixoError,
            example = json!(examples::insufficient_credits())),
        (status = 404, description = "No such model", body = ApixoError),
        (status = 409, description = "A request with this Idempotency-Key is still in flight", body = ApixoError),
        (status = 413, description = "The body is larger than 1 MiB", body = ApixoError),
        (status = 422, description = "This Idempotency-Key was used with a different request", body = ApixoError),
        (status = 429, description = "Too many task creations per minute, or too many unfinished tasks",
            body = ApixoError, headers(("Retry-After" = u64, description = "Seconds to wait"))),
        ApixoAuthErrors,
    ),
)]
#[tracing::instrument(skip_all, fields(model = %model, account = %caller.0.account_id))]
pub async fn generate(
    State(state): State<AppState>,
    caller: Caller,
    Path(model): Path<String>,
    headers: HeaderMap,
    JsonBody(body): JsonBody,
) -> Result<Response, ApiError> {
    let model = known_model(&state, &model)?;
    let creation = parse_request(model, &body)?;
    let route = format!("apixo/{}", model.id);
    let accepted = state.accept(&caller, &headers, &route, &body, creation).await?;
    Ok(accepted
        .render(|id| success(TaskCreated { task_id: id.to_string() }), |task| success(task_status(&state, task))))
}

#[derive(Deserialize)]
pub struct StatusQuery {
    #[serde(rename = "taskId")]
    task_id: Option<String>,
}

/// The status object of seed 000; fields that do not apply are left out.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TaskStatus {
    pub task_id: String,
    pub state: TaskState,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub result_json: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fail_code: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fail_msg: Option<String>,
    pub create_time: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub complete_time: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cost_time: Option<i64>,
}

/// `resultJson` of a task that succeeded: `{"resultUrls": [...]}` as a string.
pub fn result_json(links: &ResultLinks, task: &Task) -> Option<String> {
    (task.state == TaskState::Success).then(|| serde_json::json!({ "resultUrls": links.of(task) }).to_string())
}

pub fn task_status(state: &AppState, task: &Task) -> TaskStatus {
    TaskStatus {
        task_id: task.id.to_string(),
        state: task.state,
        result_json: result_json(&state.links, task),
        fail_code: task.fail_code.clone(),
        fail_msg: task.fail_msg.clone(),
        create_time: task.created_at,
        complete_time: task.completed_at,
        cost_time: task.completed_at.map(|done| done - task.created_at),
    }
}

/// Query a task's status.
#[utoipa::path(
    get,
    path = "/api/v1/statusTask/{model}",
    operation_id = "statusTask",
    tag = "APIXO tasks",
    params(
        ("model" = CatalogModel, Path, description = "The task's model"),
        ("taskId" = String, Query, description = "The id `generateTask` answered with", example = "task_12345678",
            min_length = 1),
    ),
    responses(
        (status = 200, description = "The task", body = Envelope<TaskStatus>, examples(
            ("succeeded" = (value = json!(examples::task_succeeded()))),
            ("failed" = (value = json!(examples::task_failed()))),
            ("pending" = (value = json!(examples::task_pending()))),
        )),
        (status = 400, description = "`taskId` is missing", body = ApixoError),
        (status = 404, description = "No such model, or no such task of this account and model", body = ApixoError),
        (status = 429, description = "Too many status requests per minute for this key", body = ApixoError,
            headers(("Retry-After" = u64, description = "Seconds to wait"))),
        ApixoAuthErrors,
    ),
)]
#[tracing::instrument(skip_all, fields(model = %model))]
pub async fn status(
    State(state): State<AppState>,
    caller: Caller,
    Path(model): Path<String>,
    Query(query): Query<StatusQuery>,
) -> Result<Json<Envelope<TaskStatus>>, ApiError> {
    let model = known_model(&state, &model)?;
    state.admit_poll(&caller.0).await?;
    let raw =
        query.task_id.filter(|t| !t.is_empty()).ok_or_else(|| ApiError::BadRequest("taskId is required".into()))?;
    let not_found = || ApiError::NotFound(format!("task {raw} not found"));
    let id = TaskId::parse(&raw).ok_or_else(not_found)?;
    let task = state.tasks.get_for_account(&id, &caller.0.account_id).await?.filter(|t| t.model == model.id);
    let task = task.ok_or_else(not_found)?;
    Ok(success(task_status(&state, &task)))
}
