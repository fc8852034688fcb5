//! APIXO's per-model task API (seeds 000-002): `generateTask/{model}` and `statusTask/{model}`.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::error::{ApiError, render_error};
use super::extract::{Caller, JsonBody, Query};
use super::{AppState, Submitted, prefer};
use crate::catalog::fields::{Checked, Fields, http_url, invalid};
use crate::catalog::{Model, Routing, TaskSpec, ValidationError};
use crate::ids::TaskId;
use crate::tasks::idempotency::Idempotency;
use crate::tasks::{Dialect, NewTask, Task, TaskState};

#[derive(Serialize)]
pub struct Envelope<T> {
    pub code: u16,
    pub message: String,
    pub data: T,
}

pub fn success<T: Serialize>(data: T) -> Json<Envelope<T>> {
    Json(Envelope { code: 200, message: "success".into(), data })
}

/// Renders an [`ApiError`] carried by a response as `{"code":N,"message":"…","data":null}`,
/// with the HTTP status equal to `code`. Installed as a layer on the APIXO routes.
pub async fn envelope(response: Response) -> Response {
    render_error(response, |error| {
        let status = error.status();
        (status, Envelope { code: status.as_u16(), message: error.to_string(), data: Value::Null })
    })
}

#[derive(Serialize)]
pub struct TaskCreated {
    #[serde(rename = "taskId")]
    pub task_id: String,
}

/// The top level of a task request, around the model's `input`.
struct TaskRequest {
    spec: TaskSpec,
    routing: Routing,
    callback_url: Option<String>,
}

fn parse_request(model: &Model, body: &Value) -> Checked<TaskRequest> {
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
    Ok(TaskRequest { spec, routing, callback_url: callback_url.map(String::from) })
}

fn known_model<'a>(state: &'a AppState, model: &str) -> Result<&'a Model, ApiError> {
    state.catalog.get(model).ok_or_else(|| ApiError::NotFound(format!("model {model} not found")))
}

/// Reads an `Idempotency-Key` header, fingerprinting the request it guards.
pub fn idempotency_key(headers: &HeaderMap, route: &str, body: &Value) -> Result<Option<Idempotency>, ApiError> {
    let Some(raw) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    let key = raw.to_str().map_err(|_| ApiError::BadRequest("Idempotency-Key must be visible ASCII".into()))?;
    Idempotency::new(key, route, body).map(Some).map_err(ApiError::BadRequest)
}

/// Marks a replayed answer, as idempotent APIs conventionally do.
pub fn replayed<R: IntoResponse>(submitted: &Submitted, response: R) -> Response {
    let mut response = response.into_response();
    if matches!(submitted, Submitted::Replayed(_)) {
        response.headers_mut().insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    response
}

#[tracing::instrument(skip_all, fields(model = %model, account = %caller.0.account_id))]
pub async fn generate(
    State(state): State<AppState>,
    caller: Caller,
    Path(model): Path<String>,
    headers: HeaderMap,
    JsonBody(body): JsonBody,
) -> Result<Response, ApiError> {
    let model = known_model(&state, &model)?;
    let request = parse_request(model, &body)?;
    if let Some(url) = &request.callback_url {
        state.check_callback_url(url)?;
    }
    let idem = idempotency_key(&headers, &format!("apixo/{}", model.id), &body)?;
    let new = NewTask {
        account_id: caller.0.account_id.clone(),
        dialect: Dialect::Apixo,
        spec: request.spec,
        param: body.to_string(),
        routing: request.routing,
        callback_url: request.callback_url,
        price: model.price,
    };
    let submitted = state.submit(&new, model, idem.as_ref()).await?;
    let (Submitted::Created(id) | Submitted::Replayed(id)) = &submitted;
    if let Some(wait) = prefer::wait(&headers) {
        let task = state.wait_for_end(id, &caller.0.account_id, wait).await?;
        return Ok(prefer::applied(replayed(&submitted, success(task_status(&state, &task))), wait));
    }
    Ok(replayed(&submitted, success(TaskCreated { task_id: id.to_string() })))
}

#[derive(Deserialize)]
pub struct StatusQuery {
    #[serde(rename = "taskId")]
    task_id: Option<String>,
}

/// The status object of seed 000; fields that do not apply are left out.
#[derive(Serialize)]
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

pub fn task_status(state: &AppState, task: &Task) -> TaskStatus {
    let result_json = (task.state == TaskState::Success)
        .then(|| serde_json::json!({ "resultUrls": state.result_urls(task) }).to_string());
    TaskStatus {
        task_id: task.id.to_string(),
        state: task.state,
        result_json,
        fail_code: task.fail_code.clone(),
        fail_msg: task.fail_msg.clone(),
        create_time: task.created_at,
        complete_time: task.completed_at,
        cost_time: task.completed_at.map(|done| done - task.created_at),
    }
}

#[tracing::instrument(skip_all, fields(model = %model))]
pub async fn status(
    State(state): State<AppState>,
    caller: Caller,
    Path(model): Path<String>,
    Query(query): Query<StatusQuery>,
) -> Result<Json<Envelope<TaskStatus>>, ApiError> {
    known_model(&state, &model)?;
    state.admit_poll(&caller.0).await?;
    let raw =
        query.task_id.filter(|t| !t.is_empty()).ok_or_else(|| ApiError::BadRequest("taskId is required".into()))?;
    let not_found = || ApiError::NotFound(format!("task {raw} not found"));
    let id = TaskId::parse(&raw).ok_or_else(not_found)?;
    let task = state.tasks.get_for_account(&id, &caller.0.account_id).await?.filter(|t| t.model == model);
    let task = task.ok_or_else(not_found)?;
    Ok(success(task_status(&state, &task)))
}
