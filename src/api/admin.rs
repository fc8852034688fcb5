//! The operator's API under `/admin/v1`, present only when `EASEL_ADMIN_TOKEN` is set.

use axum::extract::{FromRequestParts, Path, State};
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use axum::routing::{delete, get, post, put};
use axum::{Json, Router};
use serde::Serialize;
use sha2::{Digest, Sha256};
use utoipa::ToSchema;

use super::AppState;
use super::account::{AccountView, PageQuery, account_view, next_before};
use super::apixo::{TaskStatus, task_status};
use super::error::ApiError;
use super::extract::{JsonBody, Query};
use super::house::{Envelope, success};
use super::openapi::schemas::{
    AccountPath, AddCreditsRequest, AdminAuthErrors, ApixoError, ChannelPath, CreateAccountRequest, NoSuchAccount,
    NoSuchChannel, SetChannelRequest, SetLimitsRequest,
};
use crate::accounts::{Account, AccountError, limits};
use crate::catalog::ValidationError;
use crate::catalog::fields::{Fields, invalid};
use crate::money::Micros;
use crate::routing::ChannelStatus;
use crate::routing::probe::ChannelTest;
use crate::tasks::ChannelAttempt;
use crate::tasks::store::TaskFilter;
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
        .route("/channels/{id}", put(set_channel))
        .route("/channels/{id}/test", post(test_channel))
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
            AccountError::BadName | AccountError::BalanceLimit => ApiError::BadRequest(e.to_string()),
            AccountError::Db(e) => e.into(),
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

/// A new account, with its first key and webhook secret (shown once).
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CreatedAccount {
    #[serde(flatten)]
    account: AccountView,
    key_id: String,
    key: String,
    webhook_secret: String,
}

/// Create an account with opening credits and a first key.
#[utoipa::path(
    post,
    path = "/admin/v1/accounts",
    operation_id = "adminCreateAccount",
    tag = "Admin",
    security(("adminToken" = [])),
    request_body(content = CreateAccountRequest, example = json!({"name": "acme", "credits": 25.0})),
    responses(
        (status = 200, description = "The account", body = Envelope<CreatedAccount>),
        (status = 400, description = "Invalid name or credits", body = ApixoError),
        (status = 409, description = "An account of that name exists", body = ApixoError),
        (status = 413, description = "The body is larger than 1 MiB", body = ApixoError),
        AdminAuthErrors,
    ),
)]
pub(super) async fn create_account(
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

/// Every account.
#[utoipa::path(
    get,
    path = "/admin/v1/accounts",
    operation_id = "adminListAccounts",
    tag = "Admin",
    security(("adminToken" = [])),
    responses((status = 200, description = "The accounts", body = Envelope<Vec<AccountView>>), AdminAuthErrors),
)]
pub(super) async fn list_accounts(
    State(state): State<AppState>,
    _: Admin,
) -> Result<Json<Envelope<Vec<AccountView>>>, ApiError> {
    let mut views = Vec::new();
    for account in state.accounts.list().await? {
        views.push(account_view(&state, &account).await?);
    }
    Ok(success(views))
}

/// One account.
#[utoipa::path(
    get,
    path = "/admin/v1/accounts/{id}",
    operation_id = "adminGetAccount",
    tag = "Admin",
    security(("adminToken" = [])),
    params(AccountPath),
    responses(
        (status = 200, description = "The account", body = Envelope<AccountView>),
        NoSuchAccount,
        AdminAuthErrors,
    ),
)]
pub(super) async fn show_account(
    State(state): State<AppState>,
    _: Admin,
    Path(id): Path<String>,
) -> Result<Json<Envelope<AccountView>>, ApiError> {
    let account = find(&state, &id).await?;
    Ok(success(account_view(&state, &account).await?))
}

/// A new API key (shown once).
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct IssuedKeyView {
    key_id: String,
    key: String,
}

/// Issue another API key for an account.
#[utoipa::path(
    post,
    path = "/admin/v1/accounts/{id}/keys",
    operation_id = "adminCreateKey",
    tag = "Admin",
    security(("adminToken" = [])),
    params(AccountPath),
    responses(
        (status = 200, description = "The key", body = Envelope<IssuedKeyView>),
        NoSuchAccount,
        AdminAuthErrors,
    ),
)]
pub(super) async fn create_key(
    State(state): State<AppState>,
    _: Admin,
    Path(id): Path<String>,
) -> Result<Json<Envelope<IssuedKeyView>>, ApiError> {
    let account = find(&state, &id).await?;
    let key = state.accounts.issue_key(&account.id).await?;
    Ok(success(IssuedKeyView { key_id: key.key_id.to_string(), key: key.key }))
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RevokedKey {
    key_id: String,
    /// Always `true`.
    revoked: bool,
}

/// Revoke an API key, at once.
#[utoipa::path(
    delete,
    path = "/admin/v1/keys/{key_id}",
    operation_id = "adminRevokeKey",
    tag = "Admin",
    security(("adminToken" = [])),
    params(("key_id" = String, Path, description = "The key's id (`key_…`)")),
    responses(
        (status = 200, description = "Revoked", body = Envelope<RevokedKey>),
        (status = 404, description = "No active key with this id", body = ApixoError),
        AdminAuthErrors,
    ),
)]
pub(super) async fn revoke_key(
    State(state): State<AppState>,
    _: Admin,
    Path(key_id): Path<String>,
) -> Result<Json<Envelope<RevokedKey>>, ApiError> {
    if !state.accounts.revoke_key(&key_id, None).await? {
        return Err(ApiError::NotFound(format!("no active key {key_id}")));
    }
    Ok(success(RevokedKey { key_id, revoked: true }))
}

/// Add credits to an account.
#[utoipa::path(
    post,
    path = "/admin/v1/accounts/{id}/credits",
    operation_id = "adminAddCredits",
    tag = "Admin",
    security(("adminToken" = [])),
    params(AccountPath),
    request_body(content = AddCreditsRequest, example = json!({"amount": 10.0})),
    responses(
        (status = 200, description = "The account", body = Envelope<AccountView>),
        (status = 400, description = "`amount` is not a positive amount of USD", body = ApixoError),
        (status = 413, description = "The body is larger than 1 MiB", body = ApixoError),
        NoSuchAccount,
        AdminAuthErrors,
    ),
)]
pub(super) async fn add_credits(
    State(state): State<AppState>,
    _: Admin,
    Path(id): Path<String>,
    JsonBody(body): JsonBody,
) -> Result<Json<Envelope<AccountView>>, ApiError> {
    let account = find(&state, &id).await?;
    let amount = usd(&Fields::of("", &body)?, "amount")?.filter(|a| *a > Micros::ZERO);
    let amount = amount.ok_or_else(|| ApiError::BadRequest("amount must be a positive amount of USD".into()))?;
    let account = state.accounts.add_credits(&account.id, amount).await.map_err(ApiErrorOrNotFound::from)?;
    Ok(success(account_view(&state, &account).await?))
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct WebhookSecret {
    account_id: String,
    /// Signs the account's callbacks from now on (`whsec_…`).
    webhook_secret: String,
}

/// Replace an account's webhook secret.
#[utoipa::path(
    post,
    path = "/admin/v1/accounts/{id}/webhook-secret",
    operation_id = "adminRotateWebhookSecret",
    tag = "Admin",
    security(("adminToken" = [])),
    params(AccountPath),
    responses(
        (status = 200, description = "The new secret", body = Envelope<WebhookSecret>),
        NoSuchAccount,
        AdminAuthErrors,
    ),
)]
pub(super) async fn rotate_webhook_secret(
    State(state): State<AppState>,
    _: Admin,
    Path(id): Path<String>,
) -> Result<Json<Envelope<WebhookSecret>>, ApiError> {
    let account = find(&state, &id).await?;
    let webhook_secret = state.accounts.rotate_webhook_secret(&account.id).await?;
    Ok(success(WebhookSecret { account_id: account.id.to_string(), webhook_secret }))
}

/// Set an account's limits for one model.
#[utoipa::path(
    put,
    path = "/admin/v1/accounts/{id}/limits",
    operation_id = "adminSetLimits",
    tag = "Admin",
    security(("adminToken" = [])),
    params(AccountPath),
    request_body(content = SetLimitsRequest, example = json!({"model": "seedream-5-0", "rpm": 120, "concurrency": 20})),
    responses(
        (status = 200, description = "The account", body = Envelope<AccountView>),
        (status = 400, description = "Invalid model or limits", body = ApixoError),
        (status = 413, description = "The body is larger than 1 MiB", body = ApixoError),
        NoSuchAccount,
        AdminAuthErrors,
    ),
)]
pub(super) async fn set_limits(
    State(state): State<AppState>,
    _: Admin,
    Path(id): Path<String>,
    JsonBody(body): JsonBody,
) -> Result<Json<Envelope<AccountView>>, ApiError> {
    let account = find(&state, &id).await?;
    let f = Fields::of("", &body)?;
    let name = f.required_str("model")?;
    let model = state
        .catalog
        .get(name)
        .map(|m| m.id.as_str())
        .ok_or_else(|| ApiError::BadRequest(format!("model must be a catalog model, not {name:?}")))?;
    let rpm = f.int_in("rpm", 0, 1_000_000)?.map(|n| n as u32);
    let concurrency = f.int_in("concurrency", 0, 1_000_000)?.map(|n| n as u32);
    limits::set(&state.db, &account.id, model, rpm, concurrency).await?;
    Ok(success(account_view(&state, &account).await?))
}

/// The upstream channels, their health and load.
#[utoipa::path(
    get,
    path = "/admin/v1/channels",
    operation_id = "adminListChannels",
    tag = "Admin",
    security(("adminToken" = [])),
    responses((status = 200, description = "The channels", body = Envelope<Vec<ChannelStatus>>), AdminAuthErrors),
)]
pub(super) async fn channels(State(state): State<AppState>, _: Admin) -> Json<Envelope<Vec<ChannelStatus>>> {
    success(state.router.status())
}

impl AppState {
    /// Switches channel `id` on or off on every node, as `PUT /admin/v1/channels/{id}` does.
    pub async fn set_channel_enabled(&self, id: &str, enabled: bool) -> Result<ChannelStatus, ApiError> {
        Ok(self.router.set_enabled(&self.db, &self.bus, id, enabled).await?)
    }

    /// Tests channel `id` with its cheapest request, as `POST /admin/v1/channels/{id}/test`
    /// does: within the task timeout or two minutes, whichever is less; nothing is billed.
    pub async fn test_channel(&self, id: &str) -> Result<ChannelTest, ApiError> {
        let timeout = std::time::Duration::from_secs(self.config.server.task_timeout_secs);
        Ok(self.router.test_channel(id, &self.catalog, &self.media, timeout).await?)
    }
}

/// Switch a channel on or off, on every node: off, it takes no new task (tasks that only it
/// could serve wait, up to their timeout); on again, it takes them.
#[utoipa::path(
    put,
    path = "/admin/v1/channels/{id}",
    operation_id = "adminSetChannel",
    tag = "Admin",
    security(("adminToken" = [])),
    params(ChannelPath),
    request_body(content = SetChannelRequest, example = json!({"enabled": false})),
    responses(
        (status = 200, description = "The channel", body = Envelope<ChannelStatus>),
        (status = 400, description = "`enabled` is missing or not a boolean", body = ApixoError),
        (status = 413, description = "The body is larger than 1 MiB", body = ApixoError),
        NoSuchChannel,
        AdminAuthErrors,
    ),
)]
pub(super) async fn set_channel(
    State(state): State<AppState>,
    _: Admin,
    Path(id): Path<String>,
    JsonBody(body): JsonBody,
) -> Result<Json<Envelope<ChannelStatus>>, ApiError> {
    state.router.channel(&id)?;
    let enabled = Fields::of("", &body)?.bool("enabled")?;
    let enabled = enabled.ok_or_else(|| ApiError::BadRequest("enabled is required: true or false".into()))?;
    Ok(success(state.set_channel_enabled(&id, enabled).await?))
}

/// Test a channel: its cheapest request (the model whose cheapest image costs least, one image
/// at the smallest size and lowest quality, no references) sent straight to its upstream. No
/// task is created and no account is charged; the outcome is kept as the channel's `lastTest`
/// and counts towards its health like a real try.
#[utoipa::path(
    post,
    path = "/admin/v1/channels/{id}/test",
    operation_id = "adminTestChannel",
    tag = "Admin",
    security(("adminToken" = [])),
    params(ChannelPath),
    responses(
        (status = 200, description = "How the test went (`ok: false` with the upstream's message when it failed)",
            body = Envelope<ChannelTest>),
        (status = 409, description = "The channel serves no model of the catalog", body = ApixoError),
        NoSuchChannel,
        AdminAuthErrors,
    ),
)]
pub(super) async fn test_channel(
    State(state): State<AppState>,
    _: Admin,
    Path(id): Path<String>,
) -> Result<Json<Envelope<ChannelTest>>, ApiError> {
    Ok(success(state.test_channel(&id).await?))
}

/// Prometheus metrics, behind the admin token like the rest of the operator's surface.
#[utoipa::path(
    get,
    path = "/metrics",
    operation_id = "adminMetrics",
    tag = "Admin",
    security(("adminToken" = [])),
    responses(
        (status = 200, description = "The Prometheus text format", body = String,
            content_type = "text/plain; version=0.0.4"),
        AdminAuthErrors,
    ),
)]
pub async fn metrics(State(state): State<AppState>, _: Admin) -> Result<impl IntoResponse, ApiError> {
    let sources =
        crate::metrics::Sources { db: &state.db, tasks: &state.tasks, router: &state.router, limiter: &state.limiter };
    let body = crate::metrics::render(sources).await.map_err(ApiError::internal)?;
    Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], body))
}

/// A task as the operator sees it: its status and the channels it was tried on.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AdminTask {
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

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TaskPage {
    tasks: Vec<AdminTask>,
    #[serde(skip_serializing_if = "Option::is_none")]
    next_before: Option<String>,
}

/// An account's tasks, newest first.
#[utoipa::path(
    get,
    path = "/admin/v1/accounts/{id}/tasks",
    operation_id = "adminListTasks",
    tag = "Admin",
    security(("adminToken" = [])),
    params(
        AccountPath,
        ("limit" = Option<i64>, Query, description = "Tasks per page, 1 to 200; default 50", minimum = 1,
            maximum = 200),
        ("before" = Option<String>, Query, description = "`nextBefore` of the previous page (a task id)",
            pattern = "^task_[A-Za-z0-9_-]{1,64}$"),
    ),
    responses(
        (status = 200, description = "A page of tasks", body = Envelope<TaskPage>),
        (status = 400, description = "`limit` or `before` is invalid", body = ApixoError),
        NoSuchAccount,
        AdminAuthErrors,
    ),
)]
pub(super) async fn list_tasks(
    State(state): State<AppState>,
    _: Admin,
    Path(id): Path<String>,
    Query(page): Query<PageQuery>,
) -> Result<Json<Envelope<TaskPage>>, ApiError> {
    let account = find(&state, &id).await?;
    let limit = page.limit()?;
    let before = page.before_task()?;
    let tasks = state.tasks.list_filtered(&account.id, &TaskFilter::default(), limit, before.as_ref()).await?;
    let next_before = next_before(&tasks, limit, |t| t.id.to_string());
    let tasks = tasks
        .iter()
        .map(|t| AdminTask {
            model: t.model.clone(),
            channels: t.channel_log.clone(),
            status: task_status(&state, t),
            requested_images: t.requested_images,
            delivered_images: t.delivered_images,
            charged: t.charged.or(t.delivered_images.map(|n| t.price.times(n))).map(|c| c.to_usd()),
        })
        .collect();
    Ok(success(TaskPage { tasks, next_before }))
}
