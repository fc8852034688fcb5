//! The HTTP surface: one router per dialect, sharing one [`AppState`].

pub mod apixo;
pub mod error;
pub mod extract;
pub mod files;

use std::ops::Deref;
use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use tokio::sync::Notify;
use tower_http::trace::TraceLayer;

use crate::accounts::Accounts;
use crate::catalog::Catalog;
use crate::config::Config;
use crate::ids::TaskId;
use crate::storage::Storage;
use crate::tasks::{NewTask, Task, TaskStore};
use error::ApiError;

/// Largest request body accepted anywhere.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

pub struct Services {
    pub config: Config,
    pub catalog: Catalog,
    pub accounts: Accounts,
    pub tasks: TaskStore,
    pub storage: Storage,
    /// Wakes idle workers when a task arrives.
    pub wake: Arc<Notify>,
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

    /// Accepts a task durably (with its credit hold) and wakes a worker.
    pub async fn submit(&self, new: &NewTask) -> Result<TaskId, ApiError> {
        let timeout_ms = self.config.server.task_timeout_secs as i64 * 1000;
        let id = self.tasks.create(new, timeout_ms).await?;
        self.wake.notify_one();
        Ok(id)
    }

    /// Signed links to a finished task's images, valid for the retention period.
    pub fn result_urls(&self, task: &Task) -> Vec<String> {
        let expires = task.completed_at.unwrap_or(task.created_at) + self.config.retention_ms();
        task.result_keys
            .iter()
            .map(|key| self.storage.signed_url(key, expires))
            .collect()
    }
}

async fn not_found() -> ApiError {
    ApiError::NotFound("no such route".into())
}

async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/api/v1/generateTask/{model}", post(apixo::generate))
        .route("/api/v1/statusTask/{model}", get(apixo::status))
        .route("/files/{*key}", get(files::serve))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::map_response(apixo::envelope))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(TraceLayer::new_for_http())
        .with_state(state)
}
