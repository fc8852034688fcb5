//! An account's API keys (create: shown once; revoke) and its webhooks (rotate the signing
//! secret: shown once; the latest deliveries, with retry).

use axum::extract::{Path, State};
use axum::response::{IntoResponse, Redirect, Response};
use maud::{Markup, html};

use super::error::ConsoleError;
use super::i18n::Texts;
use super::layout::{self, csrf, when};
use super::session::{Console, Nothing, Posted, Who};
use crate::accounts::KeyInfo;
use crate::api::AppState;
use crate::webhooks::store as deliveries;

const RECENT_DELIVERIES: i64 = 50;

/// The table of an account's keys, with a revoke button on each active one; `action` is where
/// the button of key `{id}` posts.
pub fn key_table(c: &Console, t: &Texts, keys: &[KeyInfo], revoke: impl Fn(&str) -> String) -> Markup {
    let current = match &c.session.who {
        Who::User { key_id, .. } => Some(key_id.as_str()),
        Who::Operator { .. } => None,
    };
    html! {
        div class="scroll" { table class="keys" {
            thead { tr {
                th scope="col" { (t.col_key) } th scope="col" { (t.col_hint) } th scope="col" { (t.col_created) }
                th scope="col" { (t.field_state) } th scope="col" { span class="visually-hidden" { (t.actions) } }
            } }
            tbody {
                @for k in keys {
                    tr {
                        td { code { (k.key_id) } @if current == Some(k.key_id.as_str()) { " " span class="tag" { (t.this_session) } } }
                        td { code { (k.hint) } }
                        td { (when(k.created_at)) }
                        td { @match k.revoked_at { Some(at) => { (t.revoked) " " (when(at)) }, None => (t.active) } }
                        td {
                            @if k.revoked_at.is_none() {
                                form method="post" action=(revoke(&k.key_id)) class="inline" {
                                    (csrf(c))
                                    button type="submit" class="danger" aria-label={ (t.revoke) " " (k.key_id) } { (t.revoke) }
                                }
                            }
                        }
                    }
                }
            }
        } }
    }
}

async fn keys_page(state: &AppState, c: &Console, issued: Option<(String, String)>) -> Result<Response, ConsoleError> {
    let account = c.account()?;
    let keys = state.accounts.keys_of(account).await?;
    let t = c.t;
    let body = html! {
        @if let Some((key_id, key)) = &issued {
            (layout::shown_once(&format!("{} {key_id}", t.new_key), t.shown_once, key))
        }
        form method="post" action="/console/keys" {
            (csrf(c))
            button type="submit" id="create-key" { (t.create_key) }
        }
        (key_table(c, t, &keys, |id| format!("/console/keys/{id}/revoke")))
        p class="hint" { (t.keys_hint) }
    };
    Ok(layout::page(c, None, t.nav_keys, body))
}

/// `GET /console/keys`.
pub async fn page(State(state): State<AppState>, c: Console) -> Result<Response, ConsoleError> {
    keys_page(&state, &c, None).await
}

/// `POST /console/keys`: a new key, shown on this answer only.
pub async fn create(State(state): State<AppState>, Posted(c, _): Posted<Nothing>) -> Result<Response, ConsoleError> {
    let issued = state.accounts.issue_key(c.account()?).await?;
    keys_page(&state, &c, Some((issued.key_id.to_string(), issued.key))).await
}

/// `POST /console/keys/{id}/revoke`: only the account's own keys.
pub async fn revoke(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Posted(c, _): Posted<Nothing>,
) -> Result<Response, ConsoleError> {
    if !state.accounts.revoke_key(&id, Some(c.account()?)).await? {
        return Err(ConsoleError::NotFound);
    }
    Ok(Redirect::to("/console/keys").into_response())
}

async fn webhooks_page(state: &AppState, c: &Console, secret: Option<String>) -> Result<Response, ConsoleError> {
    let account = c.account()?;
    let recent = deliveries::recent_for_account(&state.db, account, RECENT_DELIVERIES).await?;
    let t = c.t;
    let body = html! {
        p { (t.webhooks_intro) }
        @if let Some(secret) = &secret {
            (layout::shown_once(t.new_webhook_secret, t.shown_once, secret))
        }
        form method="post" action="/console/webhooks/rotate" {
            (csrf(c))
            button type="submit" id="rotate-secret" class="danger" { (t.rotate_secret) }
        }
        h2 { (t.recent_deliveries) }
        @if recent.is_empty() {
            (layout::empty(t.callbacks_none))
        } @else {
            div class="scroll" { table {
                thead { tr {
                    th scope="col" { (t.task) } th scope="col" { (t.col_event) } th scope="col" { "URL" }
                    th scope="col" { (t.field_state) } th scope="col" class="num" { (t.attempts) } th scope="col" { (t.col_time) }
                    th scope="col" { span class="visually-hidden" { (t.actions) } }
                } }
                tbody {
                    @for d in &recent {
                        tr {
                            td { a href={ "/console/tasks/" (d.task_id) } { code { (d.task_id) } } }
                            td { (d.event.as_deref().unwrap_or("end")) }
                            td { code { (d.url) } }
                            td { (d.state) }
                            td class="num" { (d.attempts) }
                            td { @if let Some(at) = d.completed_at.or(d.first_attempt_at) { (when(at)) } }
                            td {
                                @if d.state == "failed" {
                                    form method="post" action={ "/console/callbacks/" (d.id) "/retry" } class="inline" {
                                        (csrf(c))
                                        button type="submit" { (t.retry) }
                                    }
                                }
                            }
                        }
                    }
                }
            } }
        }
    };
    Ok(layout::page(c, None, t.nav_webhooks, body))
}

/// `GET /console/webhooks`.
pub async fn webhooks(State(state): State<AppState>, c: Console) -> Result<Response, ConsoleError> {
    webhooks_page(&state, &c, None).await
}

/// `POST /console/webhooks/rotate`: a new signing secret, shown on this answer only.
pub async fn rotate(State(state): State<AppState>, Posted(c, _): Posted<Nothing>) -> Result<Response, ConsoleError> {
    let secret = state.accounts.rotate_webhook_secret(c.account()?).await?;
    webhooks_page(&state, &c, Some(secret)).await
}
