//! The web console at `/console`: server-rendered pages (maud) for an account's users
//! (overview, tasks, gallery, playground, keys, webhooks) and for the operator (accounts,
//! channels, models, system). A browser signs in with an API key or the admin token and then
//! holds only a session cookie; every form carries the session's CSRF token. Each page reads
//! the same stores the HTTP API does, so the console shows exactly what clients are told.
//!
//! The pages work without JavaScript; `assets/console/console.js` and the vendored htmx add the
//! live parts (a task's timeline, the playground's price, the gallery's lightbox).

mod admin;
mod assets;
mod error;
mod forms;
mod gallery;
mod i18n;
mod keys;
mod layout;
mod overview;
mod playground;
mod session;
mod tasks;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};

pub use error::ConsoleError;
pub use session::{SESSION_COOKIE, Who};

use crate::api::AppState;

/// Every console route; the pages of the operator need an operator's session.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/console", get(overview::page))
        .route("/console/login", get(session::login_page).post(session::sign_in))
        .route("/console/logout", post(session::sign_out))
        .route("/console/lang/{lang}", get(i18n::switch))
        .route("/console/assets/{name}", get(assets::serve))
        .route("/console/tasks", get(tasks::list))
        .route("/console/tasks/{id}", get(tasks::show))
        .route("/console/tasks/{id}/cancel", post(tasks::cancel))
        .route("/console/tasks/{id}/events", get(tasks::events))
        .route("/console/callbacks/{id}/retry", post(tasks::retry_callback))
        .route("/console/gallery", get(gallery::page))
        .route(
            "/console/playground",
            get(playground::page)
                .post(playground::submit)
                .layer(DefaultBodyLimit::max(crate::api::openai::MAX_EDIT_BYTES)),
        )
        .route(
            "/console/playground/quote",
            post(playground::quote).layer(DefaultBodyLimit::max(crate::api::openai::MAX_EDIT_BYTES)),
        )
        .route("/console/keys", get(keys::page).post(keys::create))
        .route("/console/keys/{id}/revoke", post(keys::revoke))
        .route("/console/webhooks", get(keys::webhooks))
        .route("/console/webhooks/rotate", post(keys::rotate))
        .route("/console/admin", get(admin::home))
        .route("/console/admin/accounts", get(admin::accounts).post(admin::create_account))
        .route("/console/admin/accounts/{id}", get(admin::account))
        .route("/console/admin/accounts/{id}/credits", post(admin::add_credits))
        .route("/console/admin/accounts/{id}/limits", post(admin::set_limits))
        .route("/console/admin/accounts/{id}/keys", post(admin::issue_key))
        .route("/console/admin/accounts/{id}/keys/{key}/revoke", post(admin::revoke_key))
        .route("/console/admin/accounts/{id}/view", post(admin::view_as))
        .route("/console/admin/leave", post(admin::leave))
        .route("/console/admin/channels", get(admin::channels))
        .route("/console/admin/channels/{id}/test", post(admin::test_channel))
        .route("/console/admin/channels/{id}/enabled", post(admin::set_channel_enabled))
        .route("/console/admin/models", get(admin::models))
        .route("/console/admin/system", get(admin::system))
        .layer(axum::middleware::from_fn(error::render))
}

/// What the console answers for a `/console/…` path it has no page for.
pub fn not_found(headers: &axum::http::HeaderMap) -> axum::response::Response {
    error::page(i18n::Lang::of(headers), &ConsoleError::NotFound)
}
