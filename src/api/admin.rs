//! The operator's API under `/admin/v1`, present only when `EASEL_ADMIN_TOKEN` is set.

use axum::extract::{FromRequestParts, Path, State};
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use axum::routing::{delete, get, post, put};
use axum::{Json, Router};
use serde::Serialize;
use sha2::{Digest, Sha256};

use super::AppState;
use super::account::{AccountView, PageQuery, account_view};
use super::apixo::{Envelope, TaskStatus, success, task_status};
use super::error::ApiError;
use super::extract::{JsonBody, Query};
use crate::accounts::{Account, AccountError, limits};
use crate::catalog::ValidationError;
use crate::catalog::fields::{Fields, invalid};
use crate::ids::TaskId;
use crate::money::Micros;
use crate::routing::ChannelStatus;
use crate::tasks::ChannelAttempt;
use axum::http::header;
use axum::response::IntoResponse;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/accounts", post(create_account).get(list_accounts))
        .route("/accounts/{id}", get(show_account))
        .route("/accounts/{id}/keys", post(create_key))
        .route("/accounts/{id}/credits", post(add_credits))
        .route("/accounts/{id}/limits", put(set_limits))
        .route("/accounts/{id}/tasks", get(list_tasks))
        .route("/accounts/{id}/webhook-secret", post(rotate_webhook_secret))
        .route("/keys/{key_id}", delete(revoke_key))
        .route("/channels", get(channels))
}

/// The operator, authenticated by `Authorization: Bearer <EASEL_ADMIN_TOKEN>`.
pub struct Admin;

impl FromRequestParts<AppState> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let expected = state.config.admin_token.as_deref().unwrap_or_default();
        let given = parts
            .headers
            .get(AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or_default();
        // Compare digests so the time taken says nothing about the token.
        if expected.is_empty() || Sha256::digest(given.as_bytes()) != Sha256::digest(expected.as_bytes()) {
            return Err(ApiError::Unauthorized("invalid admin token".into()));
        }
        Ok(Admin)
    }
}

impl From<AccountError> for ApiErrorOrNotFound {
    fn from(e: AccountError) -> Self {
        ApiErrorOrNotFound(match e {
            AccountError::NotFound(id) => ApiError::NotFound(format!("account {id} not found")),
            AccountError::NameTaken(name) => ApiError::Conflict(format!("an account named {name:?} already exists")),
            AccountError::BadName => ApiError::BadRequest(e.to_string()),
            AccountError::Db(e) => ApiError::internal(e),
        })
    }
}

/// Account errors as the admin API shows them (not-found and conflicts are the client's).
struct ApiErrorOrNotFound(ApiError);

impl From<ApiErrorOrNotFound> for ApiError {
    fn from(e: ApiErrorOrNotFound) -> Self {
        e.0
    }
}

async fn find(state: &AppState, id: &str) -> Result<Account, ApiError> {
    Ok(state.accounts.find(id).await.map_err(ApiErrorOrNotFound::from)?)
}

fn usd(fields: &Fields<'_>, name: &str) -> Result<Option<Micros>, ValidationError> {
    match fields.get(name) {
        None => Ok(None),
        Some(v) => match v.as_f64().map(Micros::from_usd) {
            Some(Ok(m)) => Ok(Some(m)),
            _ => invalid(format!("{name} must be a non-negative amount of USD")),
        },
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct CreatedAccount {
    #[serde(flatten)]
    account: AccountView,
    key_id: String,
    key: String,
    webhook_secret: String,
}

async fn create_account(
    State(state): State<AppState>,
    _: Admin,
    JsonBody(body): JsonBody,
) -> Result<Json<Envelope<CreatedAccount>>, ApiError> {
    let f = Fields::of("", &body)?;
    let name = f.required_str("name")?;
    let credits = usd(&f, "credits")?.unwrap_or(Micros::ZERO);
    let created = state.accounts.create(name, credits).await.map_err(ApiErrorOrNotFound::from)?;
    Ok(success(CreatedAccount {
        account: account_view(&state, &created.account).await?,
        key_id: created.key.key_id.to_string(),
        key: created.key.key,
        webhook_secret: created.account.webhook_secret,
    }))
}

async fn list_accounts(State(state): State<AppState>, _: Admin) -> Result<Json<Envelope<Vec<AccountView>>>, ApiError> {
    let mut views = Vec::new();
    for account in state.accounts.list().await? {
        views.push(account_view(&state, &account).await?);
    }
    Ok(success(views))
}

async fn show_account(
    State(state): State<AppState>,
    _: Admin,
    Path(id): Path<String>,
) -> Result<Json<Envelope<AccountView>>, ApiError> {
    let account = find(&state, &id).await?;
    Ok(success(account_view(&state, &account).await?))
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct IssuedKeyView {
    key_id: String,
    key: String,
}

async fn create_key(
    State(state): State<AppState>,
    _: Admin,
    Path(id): Path<String>,
) -> Result<Json<Envelope<IssuedKeyView>>, ApiError> {
    let account = find(&state, &id).await?;
    let key = state.accounts.issue_key(&account.id).await?;
    Ok(success(IssuedKeyView { key_id: key.key_id.to_string(), key: key.key }))
}

async fn revoke_key(
    State(state): State<AppState>,
    _: Admin,
    Path(key_id): Path<String>,
) -> Result<Json<Envelope<serde_json::Value>>, ApiError> {
    if !state.accounts.revoke_key(&key_id).await? {
        return Err(ApiError::NotFound(format!("no active key {key_id}")));
    }
    Ok(success(serde_json::json!({ "keyId": key_id, "revoked": true })))
}

async fn add_credits(
    State(state): State<AppState>,
    _: Admin,
    Path(id): Path<String>,
    JsonBody(body): JsonBody,
) -> Result<Json<Envelope<AccountView>>, ApiError> {
    let account = find(&state, &id).await?;
    let amount = usd(&Fields::of("", &body)?, "amount")?.filter(|a| *a > Micros::ZERO);
    let amount = amount.ok_or_else(|| ApiError::BadRequest("amount must be a positive amount of USD".into()))?;
    let account = state.accounts.add_credits(&account.id, amount).await?;
    Ok(success(account_view(&state, &account).await?))
}

async fn rotate_webhook_secret(
    State(state): State<AppState>,
    _: Admin,
    Path(id): Path<String>,
) -> Result<Json<Envelope<serde_json::Value>>, ApiError> {
    let account = find(&state, &id).await?;
    let secret = state.accounts.rotate_webhook_secret(&account.id).await?;
    Ok(success(serde_json::json!({ "accountId": account.id, "webhookSecret": secret })))
}

async fn set_limits(
    State(state): State<AppState>,
    _: Admin,
    Path(id): Path<String>,
    JsonBody(body): JsonBody,
) -> Result<Json<Envelope<AccountView>>, ApiError> {
    let account = find(&state, &id).await?;
    let f = Fields::of("", &body)?;
    let model = f.required_str("model")?;
    if state.catalog.get(model).is_none() {
        return Err(ApiError::BadRequest(format!("model must be a catalog model, not {model:?}")));
    }
    let rpm = f.int_in("rpm", 0, 1_000_000)?.map(|n| n as u32);
    let concurrency = f.int_in("concurrency", 0, 1_000_000)?.map(|n| n as u32);
    limits::set(&state.db, &account.id, model, rpm, concurrency).await?;
    Ok(success(account_view(&state, &account).await?))
}

async fn channels(State(state): State<AppState>, _: Admin) -> Json<Envelope<Vec<ChannelStatus>>> {
    success(state.router.status())
}

/// Prometheus metrics, behind the admin token like the rest of the operator's surface.
pub async fn metrics(State(state): State<AppState>, _: Admin) -> Result<impl IntoResponse, ApiError> {
    let body = crate::metrics::render(&state).await.map_err(ApiError::internal)?;
    Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], body))
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct AdminTask {
    model: String,
    /// The channels the task was tried on, in order.
    channels: Vec<ChannelAttempt>,
    #[serde(flatten)]
    status: TaskStatus,
    requested_images: u32,
    delivered_images: Option<u32>,
    /// USD charged (delivered images × price), once finished.
    charged: Option<f64>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct TaskPage {
    tasks: Vec<AdminTask>,
    #[serde(skip_serializing_if = "Option::is_none")]
    next_before: Option<String>,
}

async fn list_tasks(
    State(state): State<AppState>,
    _: Admin,
    Path(id): Path<String>,
    Query(page): Query<PageQuery>,
) -> Result<Json<Envelope<TaskPage>>, ApiError> {
    let account = find(&state, &id).await?;
    let limit = page.limit()?;
    let before = page
        .before
        .as_deref()
        .map(|b| TaskId::parse(b).ok_or_else(|| ApiError::BadRequest("before must be a task id".into())));
    let tasks = state.tasks.list_for_account(&account.id, limit, before.transpose()?.as_ref()).await?;
    let next_before = (tasks.len() as i64 == limit).then(|| tasks.last().map(|t| t.id.to_string())).flatten();
    let tasks = tasks
        .iter()
        .map(|t| AdminTask {
            model: t.model.clone(),
            channels: t.channel_log.clone(),
            status: task_status(&state, t),
            requested_images: t.requested_images,
            delivered_images: t.delivered_images,
            charged: t.delivered_images.map(|n| t.price.times(n).to_usd()),
        })
        .collect();
    Ok(success(TaskPage { tasks, next_before }))
}
