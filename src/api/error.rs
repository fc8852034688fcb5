//! One error type for the HTTP layer. Handlers and extractors return [`ApiError`]; each
//! dialect's router renders it in that dialect's envelope in one place (see `house::envelope`).

use std::sync::Arc;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::accounts::AccountError;
use crate::catalog::ValidationError;
use crate::routing::ChannelError;
use crate::tasks::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    #[error("method not allowed")]
    MethodNotAllowed,
    #[error("{0}")]
    Gone(String),
    /// A body, or a part of one, over its limit: the message names which and the limit.
    #[error("{0}")]
    PayloadTooLarge(String),
    #[error("the request body did not arrive in time")]
    RequestTimeout,
    #[error("Insufficient credits")]
    InsufficientCredits,
    #[error("{message}")]
    RateLimited { message: String, retry_after_secs: u64 },
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Unprocessable(String),
    /// The service cannot take this request for now (the database cannot write); nothing was
    /// done, and the same request may be sent again after `retry_after_secs`.
    #[error("{message}")]
    Unavailable { message: String, retry_after_secs: u64 },
    #[error("internal error")]
    Internal(#[source] anyhow::Error),
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Gone(_) => StatusCode::GONE,
            ApiError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::RequestTimeout => StatusCode::REQUEST_TIMEOUT,
            // Seeds 000-002 answer a short balance with 400.
            ApiError::InsufficientCredits => StatusCode::BAD_REQUEST,
            ApiError::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::Unprocessable(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::Unavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn internal(e: impl Into<anyhow::Error>) -> Self {
        ApiError::Internal(e.into())
    }

    /// The database cannot write for now: logged with its cause, answered without it.
    fn storage_unavailable(e: &dyn std::error::Error) -> Self {
        tracing::warn!(error = %e, "refused a request: the database cannot take writes");
        ApiError::Unavailable {
            message: "the service cannot store requests right now; retry later".into(),
            retry_after_secs: UNAVAILABLE_RETRY_SECS,
        }
    }

    /// `Retry-After` of an answer that carries one.
    fn retry_after_secs(&self) -> Option<u64> {
        match self {
            ApiError::RateLimited { retry_after_secs, .. } | ApiError::Unavailable { retry_after_secs, .. } => {
                Some(*retry_after_secs)
            }
            _ => None,
        }
    }

    /// A body over the limit of the JSON routes (`MAX_BODY_BYTES`).
    pub fn body_too_large() -> Self {
        ApiError::PayloadTooLarge("the request body is larger than 1 MiB".into())
    }
}

/// How soon a client may try again while the database cannot write: a full disk is usually
/// freed by an operator in minutes, but a lock or connection loss clears in seconds.
const UNAVAILABLE_RETRY_SECS: u64 = 5;

impl From<ValidationError> for ApiError {
    fn from(e: ValidationError) -> Self {
        ApiError::BadRequest(e.0)
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::InsufficientCredits => ApiError::InsufficientCredits,
            StoreError::ConcurrencyLimit { limit } => ApiError::RateLimited {
                message: format!(
                    "concurrency limit reached: {limit} unfinished tasks of this model; retry when one ends"
                ),
                retry_after_secs: CONCURRENCY_RETRY_SECS,
            },
            StoreError::Unavailable(e) => ApiError::storage_unavailable(&e),
            other => ApiError::internal(other),
        }
    }
}

impl From<AccountError> for ApiError {
    fn from(e: AccountError) -> Self {
        match e {
            AccountError::Db(e) => e.into(),
            AccountError::BalanceLimit => ApiError::BadRequest(e.to_string()),
            other => ApiError::internal(other),
        }
    }
}

impl From<ChannelError> for ApiError {
    fn from(e: ChannelError) -> Self {
        match e {
            ChannelError::NotFound(_) => ApiError::NotFound(e.to_string()),
            ChannelError::NoModel(_) => ApiError::Conflict(e.to_string()),
            ChannelError::Db(e) => e.into(),
        }
    }
}

/// A slot frees when some task ends, which cannot be predicted; the seeds poll every 3 s.
const CONCURRENCY_RETRY_SECS: u64 = 3;

impl From<sqlx::Error> for ApiError {
    fn from(e: sqlx::Error) -> Self {
        if crate::db::is_unavailable(&e) { ApiError::storage_unavailable(&e) } else { ApiError::internal(e) }
    }
}

/// The error travels inside the response until the dialect's layer renders it.
#[derive(Clone)]
pub struct PendingError(pub Arc<ApiError>);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if let ApiError::Internal(e) = &self {
            tracing::error!(error = format!("{e:#}"), "request failed");
        }
        let mut response = self.status().into_response();
        if let Some(retry_after_secs) = self.retry_after_secs() {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(retry_after_secs));
        }
        response.extensions_mut().insert(PendingError(Arc::new(self)));
        response
    }
}

/// For a dialect's layer: if `response` carries an [`ApiError`], replaces its status and body
/// with what `render` makes of it (headers such as `Retry-After` stay).
pub fn render_error<B: serde::Serialize>(
    response: Response,
    render: impl FnOnce(&ApiError) -> (StatusCode, B),
) -> Response {
    let Some(PendingError(error)) = response.extensions().get::<PendingError>().cloned() else {
        return response;
    };
    let (status, body) = render(&error);
    let (mut parts, _) = response.into_parts();
    parts.extensions.remove::<PendingError>();
    parts.status = status;
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    let bytes = serde_json::to_vec(&body).expect("error bodies serialize");
    Response::from_parts(parts, axum::body::Body::from(bytes))
}
