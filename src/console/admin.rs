//! The operator's pages: accounts (search, create, credits, limits, keys, and each account's
//! own pages as its users see them), channels (health, switch, test), the effective catalog
//! with the operator's tables marked, and the system (nodes, queues, recent failures).

use axum::extract::{Path, RawQuery, State};
use axum::response::{IntoResponse, Redirect, Response};
use maud::{Markup, html};
use serde::Deserialize;

use super::error::ConsoleError;
use super::forms::{self, given};
use super::keys::key_table;
use super::layout::{self, csrf, money, when};
use super::session::{Console, Nothing, Posted};
use super::tasks::{image_origin, table};
use crate::accounts::{Account, AccountError, limits};
use crate::api::AppState;
use crate::api::error::ApiError;
use crate::catalog::Catalog;
use crate::db::now_ms;
use crate::ids::AccountId;
use crate::tasks::store::TaskFilter;

const ACCOUNTS_SHOWN: i64 = 100;
const RECENT_TASKS: i64 = 20;
const RECENT_FAILURES: i64 = 25;

/// `GET /console/admin`: the operator's first page.
pub async fn home(c: Console) -> Result<Response, ConsoleError> {
    c.operator()?;
    Ok(Redirect::to("/console/admin/accounts").into_response())
}

async fn find(state: &AppState, id: &str) -> Result<Account, ConsoleError> {
    match state.accounts.find(id).await {
        Err(AccountError::NotFound(_)) => Err(ConsoleError::NotFound),
        other => Ok(other?),
    }
}

#[derive(Deserialize, Default)]
pub struct SearchQuery {
    q: Option<String>,
}

fn accounts_page(c: &Console, q: &str, found: &[Account], created: Option<Markup>) -> Response {
    let t = c.t;
    let body = html! {
        @if let Some(created) = created { (created) }
        form method="get" action="/console/admin/accounts" class="filters" role="search" {
            label { (t.search_accounts) input type="search" name="q" value=(q); }
            button type="submit" { (t.search) }
        }
        @if found.is_empty() {
            (layout::empty(t.accounts_none))
        } @else {
            div class="scroll" { table {
                thead { tr {
                    th scope="col" { (t.col_name) } th scope="col" { (t.col_account) }
                    th scope="col" class="num" { (t.balance) } th scope="col" class="num" { (t.held) } th scope="col" { (t.col_created) }
                } }
                tbody {
                    @for a in found {
                        tr {
                            th scope="row" { a href={ "/console/admin/accounts/" (a.id) } { (a.name) } }
                            td { code { (a.id) } }
                            td class="num" { (money(a.balance)) }
                            td class="num" { (money(a.held)) }
                            td { (when(a.created_at)) }
                        }
                    }
                }
            } }
        }
        section aria-labelledby="new-account-h" {
            h2 id="new-account-h" { (t.create_account) }
            form method="post" action="/console/admin/accounts" class="row" {
                (csrf(c))
                label { (t.col_name) input name="name" required maxlength="64"; }
                label { (t.opening_credits) input name="credits" inputmode="decimal" value="0"; }
                button type="submit" { (t.create_account) }
            }
        }
    };
    layout::page(c, None, t.nav_accounts, body)
}

/// `GET /console/admin/accounts?q=…`.
pub async fn accounts(
    State(state): State<AppState>,
    c: Console,
    RawQuery(raw): RawQuery,
) -> Result<Response, ConsoleError> {
    c.operator()?;
    let q: SearchQuery = forms::query(raw)?;
    let needle = given(&q.q).unwrap_or_default();
    let found = state.accounts.search(needle, ACCOUNTS_SHOWN).await?;
    Ok(accounts_page(&c, needle, &found, None))
}

#[derive(Deserialize)]
pub struct NewAccountForm {
    name: String,
    credits: Option<String>,
}

/// `POST /console/admin/accounts`: the account, with its first key and webhook secret shown once.
pub async fn create_account(
    State(state): State<AppState>,
    Posted(c, form): Posted<NewAccountForm>,
) -> Result<Response, ConsoleError> {
    c.operator()?;
    let credits = match given(&form.credits) {
        Some(v) => forms::usd("credits", v)?,
        None => crate::money::Micros::ZERO,
    };
    let created = state.accounts.create(&form.name, credits).await?;
    let t = c.t;
    let shown = html! {
        (layout::shown_once(&format!("{} {}", t.new_key, created.key.key_id), t.shown_once, &created.key.key))
        (layout::shown_once(t.new_webhook_secret, t.shown_once, &created.account.webhook_secret))
        p { a href={ "/console/admin/accounts/" (created.account.id) } { (t.open_account) " " (created.account.name) } }
    };
    let found = state.accounts.search("", ACCOUNTS_SHOWN).await?;
    Ok(accounts_page(&c, "", &found, Some(shown)))
}

async fn account_page(
    state: &AppState,
    c: &Console,
    account: &Account,
    notice: Option<Markup>,
) -> Result<Response, ConsoleError> {
    let t = c.t;
    let keys = state.accounts.keys_of(&account.id).await?;
    let tasks = state.tasks.list_filtered(&account.id, &TaskFilter::default(), RECENT_TASKS, None).await?;
    let mut limits_in_force = Vec::new();
    for model in state.catalog.models() {
        limits_in_force.push((model.id.clone(), limits::effective(&state.db, &account.id, model).await?));
    }
    let base = format!("/console/admin/accounts/{}", account.id);
    let body = html! {
        @if let Some(n) = notice { (n) }
        div class="cards" {
            div class="card" { p class="label" { (t.balance) } p class="value" id="balance" { (money(account.balance)) } }
            div class="card" { p class="label" { (t.held) } p class="value" { (money(account.held)) } }
            div class="card" { p class="label" { (t.col_account) } p class="value small" { code { (account.id) } } }
        }
        form method="post" action={ (base) "/view" } {
            (csrf(c))
            button type="submit" id="view-as" { (t.view_as_user) }
        }
        section aria-labelledby="credits-h" {
            h2 id="credits-h" { (t.add_credits) }
            form method="post" action={ (base) "/credits" } class="row" {
                (csrf(c))
                label { (t.amount_usd) input name="amount" id="credit-amount" inputmode="decimal" required; }
                button type="submit" id="add-credits" { (t.add_credits) }
            }
        }
        section aria-labelledby="limits-h" {
            h2 id="limits-h" { (t.limits) }
            div class="scroll" { table {
                thead { tr { th scope="col" { (t.field_model) } th scope="col" class="num" { (t.rpm) } th scope="col" class="num" { (t.concurrency) } } }
                tbody { @for (model, l) in &limits_in_force { tr { td { (model) } td class="num" { (l.rpm) } td class="num" { (l.max_concurrent) } } } }
            } }
            form method="post" action={ (base) "/limits" } class="row" {
                (csrf(c))
                label { (t.field_model) select name="model" { @for m in state.catalog.models() { option value=(m.id) { (m.id) } } } }
                label { (t.rpm) input name="rpm" type="number" min="0"; }
                label { (t.concurrency) input name="concurrency" type="number" min="0"; }
                button type="submit" { (t.set_limits) }
            }
        }
        section aria-labelledby="keys-h" {
            h2 id="keys-h" { (t.nav_keys) }
            form method="post" action={ (base) "/keys" } { (csrf(c)) button type="submit" { (t.create_key) } }
            (key_table(c, t, &keys, |id| format!("{base}/keys/{id}/revoke")))
        }
        section aria-labelledby="tasks-h" {
            h2 id="tasks-h" { (t.recent_tasks) }
            @if tasks.is_empty() { (layout::empty(t.tasks_none)) } @else { (table(state, t, &tasks)) }
        }
    };
    Ok(layout::page(c, image_origin(state).as_deref(), &account.name, body))
}

/// `GET /console/admin/accounts/{id}`.
pub async fn account(
    State(state): State<AppState>,
    c: Console,
    Path(id): Path<String>,
) -> Result<Response, ConsoleError> {
    c.operator()?;
    let account = find(&state, &id).await?;
    account_page(&state, &c, &account, None).await
}

#[derive(Deserialize)]
pub struct CreditsForm {
    amount: String,
}

/// `POST /console/admin/accounts/{id}/credits`.
pub async fn add_credits(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Posted(c, form): Posted<CreditsForm>,
) -> Result<Response, ConsoleError> {
    c.operator()?;
    let account = find(&state, &id).await?;
    let amount = forms::usd("amount", &form.amount)?;
    if amount.0 <= 0 {
        return Err(ConsoleError::Api(ApiError::BadRequest("amount must be a positive amount of USD".into())));
    }
    let account = state.accounts.add_credits(&account.id, amount).await?;
    let notice = layout::notice(&c.t.credits_added.replace("{amount}", &money(amount)), false);
    account_page(&state, &c, &account, Some(notice)).await
}

#[derive(Deserialize)]
pub struct LimitsForm {
    model: String,
    rpm: Option<String>,
    concurrency: Option<String>,
}

fn count(field: &str, value: &Option<String>) -> Result<Option<u32>, ConsoleError> {
    given(value)
        .map(|v| {
            v.parse::<u32>().ok().filter(|n| *n <= 1_000_000).ok_or_else(|| {
                ConsoleError::Api(ApiError::BadRequest(format!("{field} must be a whole number from 0 to 1000000")))
            })
        })
        .transpose()
}

/// `POST /console/admin/accounts/{id}/limits`.
pub async fn set_limits(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Posted(c, form): Posted<LimitsForm>,
) -> Result<Response, ConsoleError> {
    c.operator()?;
    let account = find(&state, &id).await?;
    let model = state
        .catalog
        .get(&form.model)
        .ok_or_else(|| ConsoleError::Api(ApiError::BadRequest(format!("no model {:?} in the catalog", form.model))))?;
    limits::set(&state.db, &account.id, &model.id, count("rpm", &form.rpm)?, count("concurrency", &form.concurrency)?)
        .await?;
    let notice = layout::notice(c.t.limits_set, false);
    account_page(&state, &c, &account, Some(notice)).await
}

/// `POST /console/admin/accounts/{id}/keys`: a new key, shown once.
pub async fn issue_key(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Posted(c, _): Posted<Nothing>,
) -> Result<Response, ConsoleError> {
    c.operator()?;
    let account = find(&state, &id).await?;
    let issued = state.accounts.issue_key(&account.id).await?;
    let notice = layout::shown_once(&format!("{} {}", c.t.new_key, issued.key_id), c.t.shown_once, &issued.key);
    account_page(&state, &c, &account, Some(notice)).await
}

/// `POST /console/admin/accounts/{id}/keys/{key}/revoke`.
pub async fn revoke_key(
    State(state): State<AppState>,
    Path((id, key)): Path<(String, String)>,
    Posted(c, _): Posted<Nothing>,
) -> Result<Response, ConsoleError> {
    c.operator()?;
    let account = find(&state, &id).await?;
    if !state.accounts.revoke_key(&key, Some(&account.id)).await? {
        return Err(ConsoleError::NotFound);
    }
    Ok(Redirect::to(&format!("/console/admin/accounts/{}", account.id)).into_response())
}

/// `POST /console/admin/accounts/{id}/view`: the operator's session shows this account's pages.
pub async fn view_as(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Posted(c, _): Posted<Nothing>,
) -> Result<Response, ConsoleError> {
    c.operator()?;
    let account = find(&state, &id).await?;
    c.session.view(&state, Some(&account.id)).await?;
    Ok(Redirect::to("/console").into_response())
}

/// `POST /console/admin/leave`: back to the operator's own pages.
pub async fn leave(State(state): State<AppState>, Posted(c, _): Posted<Nothing>) -> Result<Response, ConsoleError> {
    c.operator()?;
    let viewed: Option<AccountId> = c.account().ok().cloned();
    c.session.view(&state, None).await?;
    let back = viewed.map_or_else(|| "/console/admin/accounts".to_owned(), |a| format!("/console/admin/accounts/{a}"));
    Ok(Redirect::to(&back).into_response())
}

fn percent(rate: Option<f64>) -> String {
    rate.map_or_else(|| "—".into(), |r| format!("{:.1}%", r * 100.0))
}

async fn channels_page(state: &AppState, c: &Console, notice: Option<Markup>) -> Response {
    let t = c.t;
    let channels = state.router.status();
    let body = html! {
        @if let Some(n) = notice { (n) }
        div class="scroll" { table class="channels" {
            thead { tr {
                th scope="col" { (t.col_channel) } th scope="col" { (t.col_breaker) } th scope="col" class="num" { (t.in_flight) }
                th scope="col" class="num" { (t.success_rate) } th scope="col" class="num" { (t.p50_latency) }
                th scope="col" { (t.col_enabled) } th scope="col" { (t.col_last_test) }
                th scope="col" { (t.nav_models) } th scope="col" { span class="visually-hidden" { (t.actions) } }
            } }
            tbody {
                @for ch in &channels {
                    tr {
                        th scope="row" { code { (ch.id) } }
                        td { (format!("{:?}", ch.breaker).to_lowercase()) @if let Some(ms) = ch.resting_ms { " · " (t.resting) " " (ms / 1000) "s" } }
                        td class="num" { (ch.in_flight) @if let Some(max) = ch.max_concurrency { " / " (max) } }
                        td class="num" { (percent(ch.success_rate)) " (" (ch.successes) "/" (ch.successes + ch.failures) ")" }
                        td class="num" { @match ch.p50_latency_ms { Some(ms) => { (ms) " ms" }, None => "—" } }
                        td { @if ch.enabled { (t.enabled) } @else { strong { (t.disabled) } } }
                        td {
                            @if let Some(test) = &ch.last_test {
                                @if test.message.is_none() { "✓ " } @else { "✗ " }
                                (test.latency_ms) " ms · " (when(test.tested_at))
                            } @else { "—" }
                        }
                        td { (ch.models.join(", ")) }
                        td class="actions" {
                            form method="post" action={ "/console/admin/channels/" (ch.id) "/enabled" } class="inline" {
                                (csrf(c))
                                input type="hidden" name="enabled" value=(if ch.enabled { "false" } else { "true" });
                                button type="submit" class=(if ch.enabled { "danger" } else { "" })
                                    aria-label={ (if ch.enabled { t.disable } else { t.enable }) " " (ch.id) } {
                                    (if ch.enabled { t.disable } else { t.enable })
                                }
                            }
                            " "
                            form method="post" action={ "/console/admin/channels/" (ch.id) "/test" } class="inline" {
                                (csrf(c))
                                button type="submit" aria-label={ (t.test) " " (ch.id) } data-test-channel=(ch.id) { (t.test) }
                            }
                        }
                    }
                }
            }
        } }
    };
    layout::page(c, None, t.nav_channels, body)
}

/// `GET /console/admin/channels`.
pub async fn channels(State(state): State<AppState>, c: Console) -> Result<Response, ConsoleError> {
    c.operator()?;
    Ok(channels_page(&state, &c, None).await)
}

/// `POST /console/admin/channels/{id}/test`: the cheapest request the channel serves, never
/// billed; its outcome is shown above the table.
pub async fn test_channel(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Posted(c, _): Posted<Nothing>,
) -> Result<Response, ConsoleError> {
    c.operator()?;
    let test = state.test_channel(&id).await.map_err(ConsoleError::or_not_found)?;
    let t = c.t;
    let notice = match &test.message {
        None => layout::notice(
            &t.test_ok
                .replace("{channel}", &test.channel_id)
                .replace("{images}", &test.images.to_string())
                .replace("{model}", &test.model)
                .replace("{ms}", &test.latency_ms.to_string()),
            false,
        ),
        Some(message) => layout::notice(
            &t.test_failed
                .replace("{channel}", &test.channel_id)
                .replace("{ms}", &test.latency_ms.to_string())
                .replace("{message}", message),
            true,
        ),
    };
    Ok(channels_page(&state, &c, Some(notice)).await)
}

#[derive(Deserialize)]
pub struct EnabledForm {
    enabled: String,
}

/// `POST /console/admin/channels/{id}/enabled`: switches the channel on or off, for every node.
pub async fn set_channel_enabled(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Posted(c, form): Posted<EnabledForm>,
) -> Result<Response, ConsoleError> {
    c.operator()?;
    let enabled = match form.enabled.as_str() {
        "true" => true,
        "false" => false,
        other => {
            return Err(ConsoleError::Api(ApiError::BadRequest(format!(
                "enabled must be true or false, not {other:?}"
            ))));
        }
    };
    state.set_channel_enabled(&id, enabled).await.map_err(ConsoleError::or_not_found)?;
    Ok(Redirect::to("/console/admin/channels").into_response())
}

/// `GET /console/admin/models`: every model in force, with where it comes from.
pub async fn models(State(state): State<AppState>, c: Console) -> Result<Response, ConsoleError> {
    c.operator()?;
    let t = c.t;
    let builtin = Catalog::builtin();
    let origin = |id: &str| match (builtin.get(id).is_some_and(|m| m.id == id), state.config.models.contains_key(id)) {
        (true, false) => t.origin_builtin,
        (true, true) => t.origin_overridden,
        (false, _) => t.origin_added,
    };
    let withdrawn: Vec<&String> =
        state.config.models.iter().filter(|(_, e)| e.enabled == Some(false)).map(|(id, _)| id).collect();
    let body = html! {
        div class="scroll" { table class="models" {
            thead { tr {
                th scope="col" { (t.field_model) } th scope="col" { (t.col_family) } th scope="col" { "API" }
                th scope="col" class="num" { (t.price) } th scope="col" { (t.price_rows) }
                th scope="col" class="num" { (t.rpm) } th scope="col" class="num" { (t.concurrency) } th scope="col" { (t.col_origin) }
            } }
            tbody {
                @for m in state.catalog.models() {
                    tr {
                        th scope="row" { code { (m.id) } br; span class="hint" { (m.name) } }
                        td { (m.family.as_str()) }
                        td { (m.apis.iter().map(|a| a.as_str()).collect::<Vec<_>>().join(", ")) }
                        td class="num" { (money(m.price())) }
                        td {
                            @for row in &m.tariff.rows {
                                div {
                                    (row.tier.clone().or(row.size.map(|s| s.to_string())).unwrap_or_default())
                                    @if let Some(q) = row.quality { " " (q.as_str()) }
                                    ": " (money(row.price.unwrap_or(m.price())))
                                    @if row.per_reference.0 > 0 { " + " (money(row.per_reference)) "/ref" }
                                }
                            }
                        }
                        td class="num" { (m.rpm) }
                        td class="num" { (m.max_concurrent) }
                        td { (origin(&m.id)) }
                    }
                }
            }
        } }
        @if !withdrawn.is_empty() {
            p { (t.withdrawn_models) ": " @for id in withdrawn { code { (id) } " " } }
        }
        p class="hint" { (t.models_hint) }
    };
    Ok(layout::page(&c, None, t.nav_models, body))
}

/// `GET /console/admin/system`: the nodes, what waits and runs by model, and recent failures.
pub async fn system(State(state): State<AppState>, c: Console) -> Result<Response, ConsoleError> {
    c.operator()?;
    let t = c.t;
    let nodes = crate::nodes::list(&state.db).await?;
    let depth = state.tasks.queue_depth().await?;
    let failures = state.tasks.recent_failures(RECENT_FAILURES).await?;
    let now = now_ms();
    let body = html! {
        section aria-labelledby="nodes-h" {
            h2 id="nodes-h" { (t.nodes) }
            div class="scroll" { table {
                thead { tr { th scope="col" { (t.col_node) } th scope="col" { (t.col_role) } th scope="col" { (t.col_version) }
                    th scope="col" { (t.col_started) } th scope="col" { (t.col_last_seen) } th scope="col" { (t.field_state) } } }
                tbody {
                    @for n in &nodes {
                        tr {
                            th scope="row" { code { (n.id) } }
                            td { (n.role) } td { (n.version) } td { (when(n.started_at)) } td { (when(n.last_seen_at)) }
                            td { @if now - n.last_seen_at <= crate::nodes::SILENT_AFTER_MS { span class="badge success" { (t.node_up) } } @else { span class="badge failed" { (t.node_gone) } } }
                        }
                    }
                }
            } }
        }
        section aria-labelledby="queue-h" {
            h2 id="queue-h" { (t.queue_depth) }
            @if depth.is_empty() { (layout::empty(t.queue_empty)) } @else {
                table {
                    thead { tr { th scope="col" { (t.field_model) } th scope="col" { (t.field_state) } th scope="col" class="num" { (t.col_tasks) } } }
                    tbody { @for (model, st, n) in &depth { tr { td { (model) } td { (st) } td class="num" { (n) } } } }
                }
            }
        }
        section aria-labelledby="errors-h" {
            h2 id="errors-h" { (t.recent_errors) }
            @if failures.is_empty() { (layout::empty(t.errors_none)) } @else {
                div class="scroll" { table {
                    thead { tr { th scope="col" { (t.task) } th scope="col" { (t.col_account) } th scope="col" { (t.field_model) }
                        th scope="col" { (t.col_code) } th scope="col" { (t.col_message) } th scope="col" { (t.ended) } } }
                    tbody {
                        @for f in &failures {
                            tr {
                                td { code { (f.id) } }
                                td { a href={ "/console/admin/accounts/" (f.account_id) } { code { (f.account_id) } } }
                                td { (f.model) }
                                td { (f.fail_code.as_deref().unwrap_or_default()) }
                                td { (f.fail_msg.as_deref().unwrap_or_default()) }
                                td { @if let Some(at) = f.completed_at { (when(at)) } }
                            }
                        }
                    }
                } }
            }
        }
    };
    Ok(layout::page(&c, None, t.nav_system, body))
}
