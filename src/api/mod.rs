//! The HTTP surface: one router per dialect, sharing one [`AppState`].

pub mod account;
pub mod admin;
pub mod apixo;
pub mod assets;
pub mod callbacks;
pub mod create;
pub mod docs;
pub mod error;
pub mod events;
pub mod extract;
pub mod files;
pub mod health;
pub mod house;
pub mod models;
pub mod openai;
pub mod openai_stream;
pub mod openapi;
pub mod prefer;
pub mod sdk_retry;
pub mod tasks;
pub mod unified;
pub mod uploads;

use std::ops::Deref;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use tower_http::trace::TraceLayer;

use crate::accounts::limits;
use crate::accounts::rate::RateLimiter;
use crate::accounts::{Accounts, ApiKey};
use crate::catalog::{Catalog, Model};
use crate::config::Config;
use crate::db::Db;
use crate::egress::Egress;
use crate::ids::{AccountId, TaskId};
use crate::media::Media;
use crate::routing::Router as Channels;
use crate::signals::{Bus, Change};
use crate::storage::{ResultLinks, Storage};
use crate::tasks::idempotency::{self, Claim, Idempotency};
use crate::tasks::store::Admission;
use crate::tasks::{Dialect, NewTask, Task, TaskStore};
use error::ApiError;

/// Largest request body accepted anywhere.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

pub struct Services {
    pub config: Config,
    pub db: Db,
    pub catalog: Arc<Catalog>,
    pub accounts: Accounts,
    pub tasks: TaskStore,
    pub storage: Storage,
    /// Signed links to results, for status answers and callbacks.
    pub links: ResultLinks,
    /// Where news of tasks and callbacks arrives, from this node and the others.
    pub bus: Bus,
    /// The guarded client for user-supplied URLs.
    pub egress: Egress,
    /// The channels and their health.
    pub router: Arc<Channels>,
    /// Task creations per account and model, status polls per key.
    pub limiter: RateLimiter,
    /// Decode limits and the memory budget this process shares (a channel test's provider
    /// decodes through it as the workers' do).
    pub media: Media,
}

/// How a create request was answered.
#[derive(Debug, Clone, PartialEq)]
pub enum Submitted {
    Created(TaskId),
    /// An earlier request with the same Idempotency-Key created this task.
    Replayed(TaskId),
}

#[derive(Clone)]
pub struct AppState(Arc<Services>);

impl Deref for AppState {
    type Target = Services;
    fn deref(&self) -> &Services {
        &self.0
    }
}

impl AppState {
    pub fn new(services: Services) -> Self {
        Self(Arc::new(services))
    }

    /// Accepts a task: replays an idempotent retry, or checks the per-minute limit and then
    /// holds credits, checks concurrency and stores the task in one transaction.
    pub async fn submit(
        &self,
        new: &NewTask,
        model: &Model,
        idem: Option<&Idempotency>,
    ) -> Result<Submitted, ApiError> {
        if let Some(idem) = idem
            && let Some(id) = self.claim_key(&new.account_id, idem).await?
        {
            return Ok(Submitted::Replayed(id));
        }
        self.create_claimed(new, model, idem).await.map(Submitted::Created)
    }

    /// Claims an `Idempotency-Key`: the task an earlier request with it created, or `None` when
    /// this request is the first and may create one (under the key).
    pub async fn claim_key(&self, account: &AccountId, idem: &Idempotency) -> Result<Option<TaskId>, ApiError> {
        match idempotency::claim(&self.db, account, idem).await? {
            Claim::Fresh => Ok(None),
            Claim::Replay(id) => Ok(Some(id)),
            Claim::InFlight => Err(ApiError::Conflict("a request with this Idempotency-Key is still in flight".into())),
            Claim::Mismatch => {
                Err(ApiError::Unprocessable("this Idempotency-Key was already used with a different request".into()))
            }
        }
    }

    /// Creates a task under a key this request has claimed (or none); a refused creation frees
    /// the key.
    pub async fn create_claimed(
        &self,
        new: &NewTask,
        model: &Model,
        idem: Option<&Idempotency>,
    ) -> Result<TaskId, ApiError> {
        let created = self.admit(new, model, idem).await;
        if let (Err(_), Some(idem)) = (&created, idem) {
            self.free_key(&new.account_id, idem).await;
        }
        created
    }

    /// Frees a claimed key whose request created nothing, so that a retry may proceed.
    pub async fn free_key(&self, account: &AccountId, idem: &Idempotency) {
        if let Err(e) = idempotency::abandon(&self.db, account, idem).await {
            tracing::warn!(error = %e, "could not free an idempotency key; it frees itself in a minute");
        }
    }

    async fn admit(&self, new: &NewTask, model: &Model, idem: Option<&Idempotency>) -> Result<TaskId, ApiError> {
        let max_concurrent = if self.config.server.limits { Some(self.admit_rate(new, model).await?) } else { None };
        let admission = Admission {
            timeout_ms: self.config.server.task_timeout_secs as i64 * 1000,
            max_concurrent,
            idempotency: idem,
        };
        Ok(self.tasks.create(new, &admission).await?)
    }

    /// Counts a creation against the per-minute limit; returns the unfinished-task limit.
    async fn admit_rate(&self, new: &NewTask, model: &Model) -> Result<u32, ApiError> {
        let limits = limits::effective(&self.db, &new.account_id, model).await?;
        let key = format!("create:{}:{}", new.account_id, model.id);
        self.limiter.admit(&key, limits.rpm).await.map_err(|wait| ApiError::RateLimited {
            message: format!("rate limit reached: {} task creations per minute for {}", limits.rpm, model.id),
            retry_after_secs: wait.secs(),
        })?;
        Ok(limits.max_concurrent)
    }

    /// A callback URL must be one the dispatcher may call: https (http only where private
    /// networks are allowed, i.e. local development) and not a refused address.
    pub fn check_callback_url(&self, url: &str) -> Result<(), ApiError> {
        let policy = self.egress.policy();
        if !policy.allow_private_network && !url.starts_with("https://") {
            return Err(ApiError::BadRequest("callback_url must be an https URL".into()));
        }
        self.egress.check_url(url).map_err(|why| ApiError::BadRequest(format!("callback_url {why}")))
    }

    /// Status polls have their own, generous, per-key limit.
    pub async fn admit_poll(&self, key: &ApiKey) -> Result<(), ApiError> {
        if !self.config.server.limits {
            return Ok(());
        }
        let rpm = self.config.server.status_rpm;
        self.limiter.admit(&format!("poll:{}", key.key_id), rpm).await.map_err(|wait| ApiError::RateLimited {
            message: format!("rate limit reached: {rpm} status requests per minute per key"),
            retry_after_secs: wait.secs(),
        })
    }

    /// Waits until the caller's task ends or `limit` passes, and returns it as it then is.
    /// The task's final event wakes the wait at once, whichever node ends it; polling every
    /// second covers a lost notification.
    pub async fn wait_for_end(&self, id: &TaskId, account: &AccountId, limit: Duration) -> Result<Task, ApiError> {
        let mut watch = self.bus.watch(id);
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let task = self.tasks.get_for_account(id, account).await?;
            let task = task.ok_or_else(|| ApiError::NotFound(format!("task {id} not found")))?;
            let now = tokio::time::Instant::now();
            if task.state.is_terminal() || now >= deadline {
                return Ok(task);
            }
            let poll = (deadline - now).min(Duration::from_secs(1));
            watch.next(poll, |change| matches!(change, Change::Event { last: true, .. })).await;
        }
    }

    /// A pending task's place among the tasks waiting for the same channels (a GPU backend's
    /// queue, when the task's model runs only there).
    pub async fn queue_position(&self, task: &Task) -> Result<u32, ApiError> {
        let sharing = self.router.sharing(&task.model, task.routing);
        Ok(self.tasks.queue_position(task, &sharing).await?)
    }

    /// Signed links to a finished task's images, valid for the retention period.
    pub fn result_urls(&self, task: &Task) -> Vec<String> {
        self.links.of(task)
    }
}

async fn not_found(request: Request) -> Response {
    if request.uri().path().starts_with("/console/") {
        return crate::console::not_found(request.headers());
    }
    ApiError::NotFound("no such route".into()).into_response()
}

async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}

/// Renders an error that no route's own layer rendered (an unknown route, a method the route
/// lacks) in the envelope of the dialect whose paths it is under: OpenAI's under `/v1`, the
/// unified API's under its prefixes, APIXO's elsewhere (the admin API uses APIXO's too).
async fn envelope_of_path(request: Request, next: Next) -> Response {
    let path = request.uri().path();
    let render = if path == "/v1" || path.starts_with("/v1/") {
        Dialect::OpenAi
    } else if path == "/api/v1/balance" || path.starts_with("/api/v1/images/") {
        Dialect::Unified
    } else {
        Dialect::Apixo
    };
    let response = next.run(request).await;
    match render {
        Dialect::OpenAi => openai::envelope(response).await,
        Dialect::Unified => unified::envelope(response).await,
        Dialect::Apixo => house::envelope(response).await,
    }
}

/// The routes of this node's role: probes everywhere, the client API (and `/files`) on API
/// nodes, the admin API and metrics wherever an admin token is set.
pub fn router(state: AppState) -> Router {
    let mut app = Router::new().route("/healthz", get(health::healthz)).route("/readyz", get(health::readyz));
    // Without an admin token the admin routes do not exist (404), nor does the document list them.
    let admin_routes = state.config.admin_token.as_deref().is_some_and(|t| !t.is_empty());
    if state.config.role.serves_api() {
        app = app
            .merge(client_routes())
            .merge(docs::router(&openapi::document(admin_routes, &state.catalog)))
            .merge(crate::console::router());
    }
    if admin_routes {
        app = app.nest("/admin/v1", admin::router()).route("/metrics", get(admin::metrics));
    }
    app.fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        // Renders errors not already rendered by an inner dialect's layer.
        .layer(axum::middleware::from_fn(envelope_of_path))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(TraceLayer::new_for_http())
        .with_state(state)
}

/// What clients call: the three dialects, the account routes and the result files.
fn client_routes() -> Router<AppState> {
    let unified = Router::new()
        .route("/api/v1/balance", get(unified::balance))
        .route("/api/v1/images/generations", post(unified::create).get(unified::query))
        .layer(axum::middleware::map_response(unified::envelope));
    let openai = Router::new()
        .route("/v1/images/generations", post(openai::generations))
        .route("/v1/images/edits", post(openai::edits).layer(DefaultBodyLimit::max(openai::MAX_EDIT_BYTES)))
        .route("/v1/models", get(openai::models))
        .route("/v1/models/{model}", get(openai::model))
        .layer(axum::middleware::map_response(openai::envelope));
    Router::new()
        .route("/api/v1/generateTask/{model}", post(apixo::generate))
        .route("/api/v1/statusTask/{model}", get(apixo::status))
        .route("/api/v1/models", get(models::list))
        .route("/api/v1/tasks", get(tasks::list))
        .route("/api/v1/tasks/{id}", get(tasks::show))
        .route("/api/v1/tasks/{id}/images", axum::routing::delete(tasks::delete_images))
        .route("/api/v1/tasks/{id}/cancel", post(tasks::cancel))
        .route("/api/v1/tasks/{id}/events", get(events::follow))
        .route("/api/v1/account", get(account::show))
        .route("/api/v1/account/ledger", get(account::ledger))
        .route("/api/v1/apikeys/current-balance", get(account::current_balance))
        .route("/api/v1/callbacks", get(callbacks::list))
        .route("/api/v1/callbacks/{id}/retry", post(callbacks::retry))
        .route("/files/{*key}", get(files::serve))
        .merge(unified)
        .merge(openai)
}
