//! The console's one error type, rendered as a page in the reader's language by [`render`]
//! (a handler does not know the language; the layer reads it from the request).

use std::sync::Arc;

use axum::extract::Request;
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use maud::html;

use super::i18n::Lang;
use super::layout;
use crate::api::error::ApiError;

#[derive(Debug, thiserror::Error)]
pub enum ConsoleError {
    /// A page asked for without a session: to the sign-in page, and back here after it.
    #[error("sign in first")]
    SignIn { back: String },
    /// A form sent without a session (or after it ended).
    #[error("session ended")]
    SessionEnded,
    /// A form without this session's CSRF token.
    #[error("bad CSRF token")]
    Csrf,
    /// A page of the operator's, asked for by a user.
    #[error("operator only")]
    OperatorOnly,
    /// An operator asked for an account's page without choosing the account.
    #[error("choose an account")]
    ChooseAccount,
    #[error("not found")]
    NotFound,
    #[error("too many sign-in attempts")]
    TooManySignIns { retry_after_secs: u64 },
    /// What the stores and the create flow refused, with their message.
    #[error(transparent)]
    Api(#[from] ApiError),
}

macro_rules! api_errors {
    ($($t:ty),*) => {$(
        impl From<$t> for ConsoleError {
            fn from(e: $t) -> Self {
                ConsoleError::Api(e.into())
            }
        }
    )*};
}
api_errors!(
    sqlx::Error,
    crate::catalog::ValidationError,
    crate::tasks::store::StoreError,
    crate::accounts::AccountError
);

/// Carries an error from the handler to [`render`].
#[derive(Clone)]
struct Failure(Arc<ConsoleError>);

impl IntoResponse for ConsoleError {
    fn into_response(self) -> Response {
        match self {
            ConsoleError::SignIn { back } => {
                let query = url::form_urlencoded::Serializer::new(String::new()).append_pair("next", &back).finish();
                Redirect::to(&format!("/console/login?{query}")).into_response()
            }
            ConsoleError::ChooseAccount => Redirect::to("/console/admin/accounts").into_response(),
            other => {
                if let ConsoleError::Api(ApiError::Internal(e)) = &other {
                    tracing::error!(error = format!("{e:#}"), "a console page failed");
                }
                let mut response = other.status().into_response();
                response.extensions_mut().insert(Failure(Arc::new(other)));
                response
            }
        }
    }
}

impl ConsoleError {
    /// A lookup's miss (another account's task, an unknown channel) as the console's own 404
    /// page; other errors as they are.
    pub fn or_not_found(e: ApiError) -> Self {
        match e {
            ApiError::NotFound(_) => ConsoleError::NotFound,
            other => ConsoleError::Api(other),
        }
    }

    fn status(&self) -> StatusCode {
        match self {
            ConsoleError::SignIn { .. } | ConsoleError::ChooseAccount => StatusCode::SEE_OTHER,
            ConsoleError::SessionEnded => StatusCode::UNAUTHORIZED,
            ConsoleError::Csrf | ConsoleError::OperatorOnly => StatusCode::FORBIDDEN,
            ConsoleError::NotFound => StatusCode::NOT_FOUND,
            ConsoleError::TooManySignIns { .. } => StatusCode::TOO_MANY_REQUESTS,
            ConsoleError::Api(ApiError::InsufficientCredits) => StatusCode::PAYMENT_REQUIRED,
            ConsoleError::Api(e) => e.status(),
        }
    }

    /// What the reader is told, in their language; the stores' own messages stay as they are.
    fn message(&self, lang: Lang) -> String {
        let t = lang.texts();
        match self {
            ConsoleError::SignIn { .. } | ConsoleError::SessionEnded => t.err_session_ended.into(),
            ConsoleError::Csrf => t.err_csrf.into(),
            ConsoleError::OperatorOnly => t.err_operator_only.into(),
            ConsoleError::ChooseAccount => t.err_choose_account.into(),
            ConsoleError::NotFound => t.err_not_found.into(),
            ConsoleError::TooManySignIns { retry_after_secs } => {
                t.err_too_many_sign_ins.replace("{secs}", &retry_after_secs.to_string())
            }
            ConsoleError::Api(ApiError::InsufficientCredits) => t.err_insufficient_credits.into(),
            ConsoleError::Api(ApiError::Internal(_)) => t.err_internal.into(),
            ConsoleError::Api(e) => e.to_string(),
        }
    }
}

/// Renders the error a console handler answered with as a page in the request's language.
pub async fn render(request: Request, next: Next) -> Response {
    let lang = Lang::of(request.headers());
    let mut response = next.run(request).await;
    let Some(Failure(error)) = response.extensions_mut().remove::<Failure>() else { return response };
    page(lang, &error)
}

/// An error's page.
pub fn page(lang: Lang, error: &ConsoleError) -> Response {
    let t = lang.texts();
    let status = error.status();
    let body = html! {
        h1 { (t.error_title) " " (status.as_u16()) }
        p role="alert" class="notice error" { (error.message(lang)) }
        p {
            @if matches!(error, ConsoleError::SessionEnded) {
                a href="/console/login" { (t.sign_in) }
            } @else {
                a href="/console" { (t.back_to_console) }
            }
        }
    };
    let mut page = layout::bare(lang, t.error_title, body);
    *page.status_mut() = status;
    if let ConsoleError::TooManySignIns { retry_after_secs } = *error {
        page.headers_mut().insert(header::RETRY_AFTER, retry_after_secs.into());
    }
    page
}
