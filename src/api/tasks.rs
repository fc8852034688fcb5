//! The caller's own tasks, dialect-free: `GET /api/v1/tasks` (filtered, newest first, by cursor),
//! `GET /api/v1/tasks/{id}`, `POST /api/v1/tasks/{id}/cancel`, `GET /api/v1/tasks/{id}/events`
//! (live, see [`super::events`]) and `DELETE /api/v1/tasks/{id}/images`. Whatever API created a
//! task, it reads the same here; another account's task is "not found".

use axum::Json;
use axum::extract::{Path, State};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use super::AppState;
use super::account::{PageQuery, next_before};
use super::callbacks::{DeliveryView, deliveries_of};
use super::error::ApiError;
use super::extract::{Caller, Query};
use super::house::{Envelope, success};
use super::openapi::schemas::{ApixoAuthErrors, ApixoError};
use crate::ids::{AccountId, TaskId};
use crate::retention;
use crate::tasks::store::{CANCELLED_BY_OWNER, Holder, Outcome, TaskFilter};
use crate::tasks::{ChannelAttempt, LifeState, Task, TaskState, stored_files};

/// A task as its owner sees it, whichever API created it.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = TaskDetail)]
pub struct TaskView {
    #[schema(example = "task_12345678")]
    pub id: String,
    pub model: String,
    /// The API that created it: `apixo`, `unified` or `openai`.
    #[schema(example = "apixo")]
    pub api: &'static str,
    pub state: LifeState,
    /// The request as the client sent it.
    #[schema(value_type = Object)]
    pub request: Value,
    pub progress: Progress,
    /// The channels it was tried on, in order.
    pub channel_attempts: Vec<ChannelAttempt>,
    /// Signed links to its images, valid for the retention period; none once deleted.
    pub images: Vec<String>,
    /// When its images were deleted (by their owner or at the end of the retention period).
    pub images_deleted_at: Option<i64>,
    /// USD held for it while it runs: per image, the most the request can cost.
    pub held_usd: f64,
    /// USD it was charged, once it ended.
    pub charged_usd: Option<f64>,
    pub fail_code: Option<String>,
    pub fail_msg: Option<String>,
    /// Unix milliseconds.
    pub created_at: i64,
    pub completed_at: Option<i64>,
    /// Its `Cancel-After` deadline, Unix milliseconds.
    pub cancel_at: Option<i64>,
    /// Its callback deliveries, on `GET /api/v1/tasks/{id}` only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub callbacks: Option<Vec<DeliveryView>>,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = TaskProgress)]
pub struct Progress {
    pub images_requested: u32,
    /// Images stored so far.
    pub images_done: u32,
    /// While it waits: 1 when it is the next to start of the tasks waiting for its channels.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub queue_position: Option<u32>,
    /// While it runs: the provider's own progress, 0-100, where it reports one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub percent: Option<u32>,
}

impl TaskView {
    /// The view, with the queue position of a pending task.
    pub async fn read(state: &AppState, task: &Task) -> Result<Self, ApiError> {
        let mut view = Self::of(state, task);
        if task.state == TaskState::Pending {
            view.progress.queue_position = Some(state.queue_position(task).await?);
        }
        Ok(view)
    }

    fn of(state: &AppState, task: &Task) -> Self {
        let images = if task.files_purged_at.is_some() { Vec::new() } else { state.result_urls(task) };
        let charged = task.charged.or_else(|| task.delivered_images.map(|n| task.price.times(n)));
        TaskView {
            id: task.id.to_string(),
            model: task.model.clone(),
            api: task.dialect.as_str(),
            state: LifeState::of(task),
            request: serde_json::from_str(&task.param).unwrap_or(Value::Null),
            progress: Progress {
                images_requested: task.requested_images,
                images_done: task.delivered_images.unwrap_or(task.result_keys.len() as u32),
                queue_position: None,
                percent: task.progress_percent.filter(|_| task.state == TaskState::Processing),
            },
            channel_attempts: task.channel_log.clone(),
            images,
            images_deleted_at: task.files_purged_at,
            held_usd: if task.state.is_terminal() { 0.0 } else { task.held().to_usd() },
            charged_usd: charged.filter(|_| task.state.is_terminal()).map(|c| c.to_usd()),
            fail_code: task.fail_code.clone(),
            fail_msg: task.fail_msg.clone(),
            created_at: task.created_at,
            completed_at: task.completed_at,
            cancel_at: task.cancel_at,
            callbacks: None,
        }
    }
}

#[derive(Deserialize)]
pub struct ListQuery {
    state: Option<String>,
    model: Option<String>,
    since: Option<i64>,
    until: Option<i64>,
    limit: Option<i64>,
    before: Option<String>,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = TaskList)]
pub struct TaskPage {
    pub tasks: Vec<TaskView>,
    /// Pass as `before` for the next page; absent on the last one.
    pub next_before: Option<String>,
}

/// List the caller's tasks, newest first.
#[utoipa::path(
    get,
    path = "/api/v1/tasks",
    operation_id = "listTasks",
    tag = "Tasks",
    params(
        ("state" = Option<LifeState>, Query, description = "Only tasks in this state"),
        ("model" = Option<String>, Query, description = "A model's id or alias"),
        ("since" = Option<i64>, Query, description = "Created at or after, Unix milliseconds"),
        ("until" = Option<i64>, Query, description = "Created before, Unix milliseconds"),
        ("limit" = Option<i64>, Query, description = "1 to 200; default 50", minimum = 1, maximum = 200),
        ("before" = Option<String>, Query, description = "`nextBefore` of the previous page",
            pattern = "^task_[A-Za-z0-9_-]{1,64}$"),
    ),
    responses(
        (status = 200, description = "A page of tasks", body = Envelope<TaskPage>),
        (status = 400, description = "A filter is not one of its values", body = ApixoError),
        ApixoAuthErrors,
    ),
)]
#[tracing::instrument(skip_all)]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    Query(query): Query<ListQuery>,
) -> Result<Json<Envelope<TaskPage>>, ApiError> {
    let task_state = match query.state.as_deref() {
        None => None,
        Some(s) => Some(LifeState::parse(s).ok_or_else(|| {
            ApiError::BadRequest("state must be one of pending, processing, success, failed, cancelled".into())
        })?),
    };
    // An alias lists the model's tasks; an unknown name lists none rather than failing, since a
    // withdrawn model's tasks are still the caller's.
    let model = query.model.as_deref().filter(|m| !m.is_empty()).map(|m| match state.catalog.get(m) {
        Some(model) => model.id.as_str(),
        None => m,
    });
    let page = PageQuery { limit: query.limit, before: query.before.clone() };
    let (limit, before) = (page.limit()?, page.before_task()?);
    let filter = TaskFilter { state: task_state, model, since: query.since, until: query.until };
    let tasks = state.tasks.list_filtered(&caller.0.account_id, &filter, limit, before.as_ref()).await?;
    let next_before = next_before(&tasks, limit, |t| t.id.to_string());
    let mut views = Vec::with_capacity(tasks.len());
    for task in &tasks {
        views.push(TaskView::read(&state, task).await?);
    }
    Ok(success(TaskPage { tasks: views, next_before }))
}

pub(super) async fn own_task(state: &AppState, caller: &Caller, raw: &str) -> Result<Task, ApiError> {
    task_of(state, &caller.0.account_id, raw).await
}

/// The task `raw` names, if it is `account`'s; another account's task is as good as absent.
pub async fn task_of(state: &AppState, account: &AccountId, raw: &str) -> Result<Task, ApiError> {
    let not_found = || ApiError::NotFound(format!("task {raw} not found"));
    let id = TaskId::parse(raw).ok_or_else(not_found)?;
    state.tasks.read_for_account(&id, account).await?.ok_or_else(not_found)
}

/// One of the caller's tasks, with its callback deliveries.
#[utoipa::path(
    get,
    path = "/api/v1/tasks/{id}",
    operation_id = "getTask",
    tag = "Tasks",
    params(("id" = String, Path, description = "The task's id", example = "task_12345678")),
    responses(
        (status = 200, description = "The task", body = Envelope<TaskView>),
        (status = 404, description = "No such task of this account", body = ApixoError),
        ApixoAuthErrors,
    ),
)]
#[tracing::instrument(skip_all)]
pub async fn show(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Envelope<TaskView>>, ApiError> {
    let task = own_task(&state, &caller, &id).await?;
    let mut view = TaskView::read(&state, &task).await?;
    view.callbacks = Some(deliveries_of(&state, &task.id, &caller.0.account_id).await?);
    Ok(success(view))
}

/// How long a cancel waits for a running task to stop before answering with it as it is.
const CANCEL_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// Cancel one of the caller's tasks.
///
/// A pending task ends at once and its hold is released. A running one is stopped by the node
/// running it: images already stored are kept and charged, the rest of the hold released. The
/// answer is the task once it has stopped (or after 10 seconds, still stopping); a task that
/// ended meanwhile is answered as it ended. In the APIXO and unified APIs a cancelled task reads
/// `failed` with `failCode: CANCELLED`.
#[utoipa::path(
    post,
    path = "/api/v1/tasks/{id}/cancel",
    operation_id = "cancelTask",
    tag = "Tasks",
    params(("id" = String, Path, description = "The task's id", example = "task_12345678")),
    responses(
        (status = 200, description = "The task, cancelled (or as it ended, if it ended first)", body = Envelope<TaskView>),
        (status = 404, description = "No such task of this account", body = ApixoError),
        (status = 409, description = "The task had already ended", body = ApixoError),
        ApixoAuthErrors,
    ),
)]
#[tracing::instrument(skip_all)]
pub async fn cancel(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Envelope<TaskView>>, ApiError> {
    let task = own_task(&state, &caller, &id).await?;
    let now = stop(&state, task, &caller.0.account_id).await?;
    Ok(success(TaskView::read(&state, &now).await?))
}

/// Cancels a task of `account` and answers it once it has stopped (or after 10 seconds, still
/// stopping); one that ended meanwhile as it ended. A task that had ended before is a 409.
pub async fn stop(state: &AppState, task: Task, account: &AccountId) -> Result<Task, ApiError> {
    match LifeState::of(&task) {
        LifeState::Cancelled => return Ok(task),
        LifeState::Success | LifeState::Failed => {
            return Err(ApiError::Conflict(format!("task {} has already ended", task.id)));
        }
        LifeState::Pending => {
            let outcome = Outcome::cancelled_waiting(CANCELLED_BY_OWNER);
            // False: a worker took it meanwhile; stop it there.
            if !state.tasks.finish(&task, &Holder::Queue, &outcome).await? {
                state.tasks.request_cancel(&task.id).await?;
            }
        }
        LifeState::Processing => {
            state.tasks.request_cancel(&task.id).await?;
        }
    }
    state.wait_for_end(&task.id, account, CANCEL_WAIT).await
}

/// Delete a finished task's images.
///
/// The stored results (and the references uploaded for it) are deleted; their links answer 410
/// from then on. Deleting again changes nothing.
#[utoipa::path(
    delete,
    path = "/api/v1/tasks/{id}/images",
    operation_id = "deleteTaskImages",
    tag = "Tasks",
    params(("id" = String, Path, description = "The task's id", example = "task_12345678")),
    responses(
        (status = 200, description = "The task, without images", body = Envelope<TaskView>),
        (status = 404, description = "No such task of this account", body = ApixoError),
        (status = 409, description = "The task has not ended yet", body = ApixoError),
        ApixoAuthErrors,
    ),
)]
#[tracing::instrument(skip_all)]
pub async fn delete_images(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Envelope<TaskView>>, ApiError> {
    let mut task = own_task(&state, &caller, &id).await?;
    // A running task's images are not all stored yet: a later one would come back.
    if !task.state.is_terminal() {
        return Err(ApiError::Conflict(format!("task {id} has not ended yet")));
    }
    if task.files_purged_at.is_none() {
        let files = stored_files(&task.id, &task.result_keys, &task.spec);
        let purged =
            retention::purge(&state.tasks, &state.storage, &task.id, &files).await.map_err(ApiError::internal)?;
        task.files_purged_at = Some(purged);
    }
    Ok(success(TaskView::of(&state, &task)))
}
