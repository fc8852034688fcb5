//! Signing in to the console and the sessions that follow. The browser holds a random token in
//! an HttpOnly, SameSite=Strict cookie (Secure when the public URL is https); the database
//! holds only its SHA-256. A user's session belongs to the key it signed in with, so revoking
//! the key ends it; every session ends at its expiry or at sign-out. Each session has its own
//! CSRF token, which every form and htmx request sends back.

use axum::body::Bytes;
use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, RawQuery, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Method, header};
use axum::response::{IntoResponse, Redirect, Response};
use maud::html;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};
use sqlx::Row;

use super::error::ConsoleError;
use super::i18n::{Lang, Texts};
use super::layout;
use crate::api::AppState;
use crate::api::error::ApiError;
use crate::db::now_ms;
use crate::ids::{AccountId, random_hex};

pub const SESSION_COOKIE: &str = "easel_session";
/// The sign-in form's own CSRF token, before there is a session (a double-submit cookie).
const SIGN_IN_COOKIE: &str = "easel_sign_in";
pub const CSRF_FIELD: &str = "csrf";
pub const CSRF_HEADER: &str = "x-csrf-token";

/// Whose session it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Who {
    User {
        account: AccountId,
        key_id: String,
    },
    /// The operator, looking at one account's pages or at none.
    Operator {
        viewing: Option<AccountId>,
    },
}

#[derive(Debug, Clone)]
pub struct Session {
    /// SHA-256 of the cookie's token, hex.
    id: String,
    pub who: Who,
    pub csrf: String,
}

fn digest(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// Compares digests, so that the time taken says nothing about the secret.
fn same_secret(given: &str, expected: &str) -> bool {
    !expected.is_empty() && Sha256::digest(given.as_bytes()) == Sha256::digest(expected.as_bytes())
}

/// A cookie's value from the request's `Cookie` headers.
pub(super) fn cookie_value<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// A `Set-Cookie` header for a console cookie; `max_age` 0 deletes it.
fn set_cookie(state: &AppState, name: &str, value: &str, path: &str, max_age: i64) -> HeaderValue {
    let secure = if state.storage.public_url().starts_with("https://") { "; Secure" } else { "" };
    let cookie = format!("{name}={value}; Path={path}; Max-Age={max_age}; HttpOnly; SameSite=Strict{secure}");
    HeaderValue::from_str(&cookie).expect("cookie values are hex")
}

impl Session {
    /// Starts a session; returns its cookie's token.
    async fn start(state: &AppState, who: &Who) -> Result<String, ConsoleError> {
        let token = random_hex::<32>();
        let now = now_ms();
        let ttl_ms = state.config.console.session_hours.clamp(1, 24 * 30) as i64 * 3_600_000;
        let (account, key_id, viewing) = match who {
            Who::User { account, key_id } => (Some(account.as_str()), Some(key_id.as_str()), None),
            Who::Operator { viewing } => (None, None, viewing.as_ref().map(AccountId::as_str)),
        };
        sqlx::query("DELETE FROM console_sessions WHERE expires_at < $1").bind(now).execute(&state.db.write).await?;
        sqlx::query(
            "INSERT INTO console_sessions (id, account_id, key_id, operator, viewing, csrf_token, created_at, expires_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(digest(&token))
        .bind(account)
        .bind(key_id)
        .bind(i64::from(matches!(who, Who::Operator { .. })))
        .bind(viewing)
        .bind(random_hex::<16>())
        .bind(now)
        .bind(now + ttl_ms)
        .execute(&state.db.write)
        .await?;
        Ok(token)
    }

    /// The live session a cookie's token opens: not expired, not ended, its key not revoked,
    /// and (for the operator) an admin token still configured.
    async fn find(state: &AppState, token: &str) -> Result<Option<Session>, ConsoleError> {
        let row = sqlx::query(
            "SELECT s.id, s.account_id, s.key_id, s.operator, s.viewing, s.csrf_token FROM console_sessions s \
             LEFT JOIN api_keys k ON k.id = s.key_id \
             WHERE s.id = $1 AND s.ended_at IS NULL AND s.expires_at > $2 \
             AND (s.operator = 1 OR (k.id IS NOT NULL AND k.revoked_at IS NULL))",
        )
        .bind(digest(token))
        .bind(now_ms())
        .fetch_optional(&state.db.read)
        .await?;
        let Some(row) = row else { return Ok(None) };
        let who = if row.try_get::<i64, _>("operator")? == 1 {
            if state.config.admin_token.as_deref().is_none_or(str::is_empty) {
                return Ok(None);
            }
            Who::Operator { viewing: row.try_get::<Option<String>, _>("viewing")?.map(AccountId::from_db) }
        } else {
            Who::User { account: AccountId::from_db(row.try_get("account_id")?), key_id: row.try_get("key_id")? }
        };
        Ok(Some(Session { id: row.try_get("id")?, who, csrf: row.try_get("csrf_token")? }))
    }

    async fn end(&self, state: &AppState) -> Result<(), ConsoleError> {
        sqlx::query("UPDATE console_sessions SET ended_at = $1 WHERE id = $2")
            .bind(now_ms())
            .bind(&self.id)
            .execute(&state.db.write)
            .await?;
        Ok(())
    }

    /// The operator's session now looks at `account`'s pages (or at none).
    pub async fn view(&self, state: &AppState, account: Option<&AccountId>) -> Result<(), ConsoleError> {
        sqlx::query("UPDATE console_sessions SET viewing = $1 WHERE id = $2 AND operator = 1")
            .bind(account.map(AccountId::as_str))
            .bind(&self.id)
            .execute(&state.db.write)
            .await?;
        Ok(())
    }

    pub fn check_csrf(&self, given: Option<&str>) -> Result<(), ConsoleError> {
        if given.is_some_and(|g| same_secret(g, &self.csrf)) { Ok(()) } else { Err(ConsoleError::Csrf) }
    }
}

/// A signed-in reader of a console page, in their language.
pub struct Console {
    pub session: Session,
    pub lang: Lang,
    pub t: &'static Texts,
    /// The path and query asked for, to mark the page in the navigation.
    pub path: String,
}

impl FromRequestParts<AppState> for Console {
    type Rejection = ConsoleError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let path = parts.uri.path_and_query().map_or("/console", |p| p.as_str()).to_owned();
        let session = match cookie_value(&parts.headers, SESSION_COOKIE) {
            Some(token) => Session::find(state, token).await?,
            None => None,
        };
        let Some(session) = session else {
            return Err(if parts.method == Method::GET || parts.method == Method::HEAD {
                ConsoleError::SignIn { back: path }
            } else {
                ConsoleError::SessionEnded
            });
        };
        let lang = Lang::of(&parts.headers);
        Ok(Console { session, lang, t: lang.texts(), path })
    }
}

impl Console {
    /// The account whose pages these are: the user's own, or the one the operator chose.
    pub fn account(&self) -> Result<&AccountId, ConsoleError> {
        match &self.session.who {
            Who::User { account, .. } => Ok(account),
            Who::Operator { viewing: Some(account) } => Ok(account),
            Who::Operator { viewing: None } => Err(ConsoleError::ChooseAccount),
        }
    }

    pub fn is_operator(&self) -> bool {
        matches!(self.session.who, Who::Operator { .. })
    }

    /// Refuses a user on the operator's pages.
    pub fn operator(&self) -> Result<(), ConsoleError> {
        if self.is_operator() { Ok(()) } else { Err(ConsoleError::OperatorOnly) }
    }
}

/// A form posted by a signed-in reader, its CSRF token checked (the `csrf` field, or the
/// `X-CSRF-Token` header htmx sends), its fields read into `T`.
pub struct Posted<T>(pub Console, pub T);

impl<T: DeserializeOwned> FromRequest<AppState> for Posted<T> {
    type Rejection = ConsoleError;

    async fn from_request(request: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        let (mut parts, body) = request.into_parts();
        let console = Console::from_request_parts(&mut parts, state).await?;
        let bytes = Bytes::from_request(Request::from_parts(parts.clone(), body), state)
            .await
            .map_err(|e| ApiError::BadRequest(format!("could not read the form: {e}")))?;
        let field = url::form_urlencoded::parse(&bytes).find(|(k, _)| k == CSRF_FIELD).map(|(_, v)| v.into_owned());
        let header = parts.headers.get(CSRF_HEADER).and_then(|v| v.to_str().ok()).map(str::to_owned);
        console.session.check_csrf(field.as_deref().or(header.as_deref()))?;
        let form = serde_urlencoded::from_bytes(&bytes).map_err(|e| ApiError::BadRequest(format!("bad form: {e}")))?;
        Ok(Posted(console, form))
    }
}

/// Where to go after signing in: a console path only, never another site.
fn safe_next(next: Option<&str>) -> Option<&str> {
    next.filter(|n| n.starts_with("/console") && !n.starts_with("//") && !n.contains('\\'))
}

#[derive(Deserialize, Default)]
pub struct SignInQuery {
    next: Option<String>,
}

/// `GET /console/login`: the sign-in form, or the console for a reader already signed in.
pub async fn login_page(
    State(state): State<AppState>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Result<Response, ConsoleError> {
    let query: SignInQuery = super::forms::query(raw)?;
    if let Some(token) = cookie_value(&headers, SESSION_COOKIE)
        && Session::find(&state, token).await?.is_some()
    {
        return Ok(Redirect::to(safe_next(query.next.as_deref()).unwrap_or("/console")).into_response());
    }
    Ok(sign_in_form(&state, Lang::of(&headers), query.next.as_deref(), None))
}

fn sign_in_form(state: &AppState, lang: Lang, next: Option<&str>, problem: Option<&str>) -> Response {
    let t = lang.texts();
    let token = random_hex::<16>();
    let body = html! {
        h1 { (t.sign_in_title) }
        p { (t.sign_in_intro) }
        @if let Some(problem) = problem {
            p role="alert" class="notice error" id="sign-in-error" { (problem) }
        }
        form method="post" action="/console/login" class="stack" {
            input type="hidden" name=(CSRF_FIELD) value=(token);
            @if let Some(next) = safe_next(next) {
                input type="hidden" name="next" value=(next);
            }
            label for="key" { (t.sign_in_key) }
            input id="key" name="key" type="password" autocomplete="current-password" required
                aria-describedby="key-help" autofocus;
            p id="key-help" class="hint" { (t.sign_in_key_help) }
            button type="submit" { (t.sign_in) }
        }
    };
    let mut page = layout::bare(lang, t.sign_in_title, body);
    page.headers_mut().append(header::SET_COOKIE, set_cookie(state, SIGN_IN_COOKIE, &token, "/console/login", 3600));
    page
}

#[derive(Deserialize)]
pub struct SignInForm {
    #[serde(default)]
    key: String,
    #[serde(default)]
    csrf: String,
    next: Option<String>,
}

/// The caller's address for the sign-in limit: the peer, or behind a trusted proxy the last
/// `X-Forwarded-For` entry.
fn caller_address(state: &AppState, headers: &HeaderMap, peer: Option<std::net::SocketAddr>) -> String {
    let forwarded = || {
        let list = headers.get_all("x-forwarded-for").iter().filter_map(|v| v.to_str().ok()).next_back()?;
        list.rsplit(',').next().map(|a| a.trim().to_owned()).filter(|a| !a.is_empty())
    };
    match state.config.console.trust_forwarded_for.then(forwarded).flatten() {
        Some(address) => address,
        None => peer.map_or_else(|| "unknown".into(), |p| p.ip().to_string()),
    }
}

/// `POST /console/login`: an API key opens a user's session, the admin token the operator's.
pub async fn sign_in(State(state): State<AppState>, request: Request) -> Result<Response, ConsoleError> {
    let peer = request.extensions().get::<ConnectInfo<std::net::SocketAddr>>().map(|ConnectInfo(p)| *p);
    let (parts, body) = request.into_parts();
    let headers = parts.headers;
    let body = axum::body::to_bytes(body, crate::api::MAX_BODY_BYTES)
        .await
        .map_err(|e| ApiError::BadRequest(format!("could not read the form: {e}")))?;
    let lang = Lang::of(&headers);
    let t = lang.texts();
    let form: SignInForm =
        serde_urlencoded::from_bytes(&body).map_err(|e| ApiError::BadRequest(format!("bad form: {e}")))?;
    let expected = cookie_value(&headers, SIGN_IN_COOKIE).unwrap_or_default();
    if !same_secret(&form.csrf, expected) {
        return Err(ConsoleError::Csrf);
    }
    let address = caller_address(&state, &headers, peer);
    let per_minute = state.config.console.sign_in_per_minute.max(1);
    if let Err(wait) = state.limiter.admit(&format!("console-sign-in:{address}"), per_minute).await {
        return Err(ConsoleError::TooManySignIns { retry_after_secs: wait.secs() });
    }
    let key = form.key.trim();
    let admin = state.config.admin_token.as_deref().unwrap_or_default();
    let who = if same_secret(key, admin) {
        Who::Operator { viewing: None }
    } else {
        match state.accounts.authenticate(key).await? {
            Some(k) => Who::User { account: k.account_id, key_id: k.key_id.to_string() },
            None => {
                let mut page = sign_in_form(&state, lang, form.next.as_deref(), Some(t.sign_in_refused));
                *page.status_mut() = axum::http::StatusCode::UNAUTHORIZED;
                return Ok(page);
            }
        }
    };
    let token = Session::start(&state, &who).await?;
    let home = if matches!(who, Who::Operator { .. }) { "/console/admin" } else { "/console" };
    let mut response = Redirect::to(safe_next(form.next.as_deref()).unwrap_or(home)).into_response();
    let ttl_secs = state.config.console.session_hours.clamp(1, 24 * 30) as i64 * 3600;
    let h = response.headers_mut();
    h.append(header::SET_COOKIE, set_cookie(&state, SESSION_COOKIE, &token, "/console", ttl_secs));
    h.append(header::SET_COOKIE, set_cookie(&state, SIGN_IN_COOKIE, "", "/console/login", 0));
    Ok(response)
}

#[derive(Deserialize)]
pub struct Nothing {}

/// `POST /console/logout`: ends the session here and in the database.
pub async fn sign_out(
    State(state): State<AppState>,
    Posted(console, _): Posted<Nothing>,
) -> Result<Response, ConsoleError> {
    console.session.end(&state).await?;
    let mut response = Redirect::to("/console/login").into_response();
    response.headers_mut().append(header::SET_COOKIE, set_cookie(&state, SESSION_COOKIE, "", "/console", 0));
    Ok(response)
}
