//! What a key holder can see of its own account: balance, holds, limits and the ledger, plus
//! the balance route APIXO's clients already call.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::State;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::AppState;
use super::error::ApiError;
use super::extract::{Caller, Query};
use super::house::{Envelope, success};
use super::openapi::schemas::{ApixoAuthErrors, ApixoError};
use crate::accounts::limits::{self, Limits};
use crate::accounts::{Account, ledger};
use crate::ids::TaskId;

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AccountView {
    pub account_id: String,
    pub name: String,
    /// Spendable USD.
    pub balance: f64,
    /// USD held for unfinished tasks.
    pub held: f64,
    /// The limits in force, by model.
    #[schema(value_type = BTreeMap<String, LimitsView>)]
    pub limits: BTreeMap<String, LimitsView>,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct LimitsView {
    /// Task creations per minute.
    pub rpm: u32,
    /// Unfinished tasks at once.
    pub max_concurrent: u32,
}

impl From<Limits> for LimitsView {
    fn from(l: Limits) -> Self {
        Self { rpm: l.rpm, max_concurrent: l.max_concurrent }
    }
}

pub async fn account_view(state: &AppState, account: &Account) -> Result<AccountView, ApiError> {
    let mut limits = BTreeMap::new();
    for model in state.catalog.models() {
        limits.insert(model.id.clone(), limits::effective(&state.db, &account.id, model).await?.into());
    }
    Ok(AccountView {
        account_id: account.id.to_string(),
        name: account.name.clone(),
        balance: account.balance.to_usd(),
        held: account.held.to_usd(),
        limits,
    })
}

/// The caller's account: balance, holds and limits.
#[utoipa::path(
    get,
    path = "/api/v1/account",
    operation_id = "getAccount",
    tag = "Account",
    responses(
        (status = 200, description = "The account", body = Envelope<AccountView>, example = json!({
            "code": 200, "message": "success", "data": {
                "accountId": "acct_0194b7c1d2e37f00a1b2c3d4e5f60718", "name": "default", "balance": 9.872, "held": 0.128,
                "limits": {"gpt-image-1": {"rpm": 10000, "maxConcurrent": 1000}, "seedream-5-0": {"rpm": 60, "maxConcurrent": 10}}
            }
        })),
        ApixoAuthErrors,
    ),
)]
#[tracing::instrument(skip_all)]
pub async fn show(State(state): State<AppState>, caller: Caller) -> Result<Json<Envelope<AccountView>>, ApiError> {
    let account = state.accounts.get(&caller.0.account_id).await?;
    Ok(success(account_view(&state, &account).await?))
}

/// The balance in USD as a bare number (APIXO's route).
#[utoipa::path(
    get,
    path = "/api/v1/apikeys/current-balance",
    operation_id = "getCurrentBalance",
    tag = "Account",
    responses(
        (status = 200, description = "Spendable USD", body = Envelope<f64>,
            example = json!({"code": 200, "message": "success", "data": 9.872})),
        ApixoAuthErrors,
    ),
)]
pub async fn current_balance(State(state): State<AppState>, caller: Caller) -> Result<Json<Envelope<f64>>, ApiError> {
    let account = state.accounts.get(&caller.0.account_id).await?;
    Ok(success(account.balance.to_usd()))
}

#[derive(Deserialize)]
pub struct PageQuery {
    pub limit: Option<i64>,
    pub before: Option<String>,
}

impl PageQuery {
    /// The page size: 50 by default, 1 to 200.
    pub fn limit(&self) -> Result<i64, ApiError> {
        match self.limit {
            None => Ok(50),
            Some(n @ 1..=200) => Ok(n),
            Some(_) => Err(ApiError::BadRequest("limit must be an integer from 1 to 200".into())),
        }
    }

    /// `before` as a task id, for pages of tasks.
    pub fn before_task(&self) -> Result<Option<TaskId>, ApiError> {
        let parse = |b: &str| TaskId::parse(b).ok_or_else(|| ApiError::BadRequest("before must be a task id".into()));
        self.before.as_deref().map(parse).transpose()
    }
}

/// The cursor of the page after `page`: the last item's id when the page is full.
pub fn next_before<T>(page: &[T], limit: i64, id: impl FnOnce(&T) -> String) -> Option<String> {
    if page.len() as i64 == limit { page.last().map(id) } else { None }
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct LedgerEntryView {
    pub id: String,
    pub task_id: Option<String>,
    /// `credit`, `hold`, `settle` or `release`.
    pub kind: String,
    /// USD, always positive; the kind says which way it moved.
    pub amount: f64,
    /// Unix milliseconds.
    pub time: i64,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct LedgerPage {
    pub entries: Vec<LedgerEntryView>,
    /// Pass as `before` to get the next, older page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_before: Option<String>,
}

/// The account's ledger, newest first.
#[utoipa::path(
    get,
    path = "/api/v1/account/ledger",
    operation_id = "listLedger",
    tag = "Account",
    params(
        ("limit" = Option<i64>, Query, description = "Entries per page, 1 to 200; default 50", minimum = 1,
            maximum = 200),
        ("before" = Option<String>, Query, description = "`nextBefore` of the previous page"),
    ),
    responses(
        (status = 200, description = "A page of entries", body = Envelope<LedgerPage>),
        (status = 400, description = "`limit` is out of range", body = ApixoError),
        ApixoAuthErrors,
    ),
)]
#[tracing::instrument(skip_all)]
pub async fn ledger(
    State(state): State<AppState>,
    caller: Caller,
    Query(page): Query<PageQuery>,
) -> Result<Json<Envelope<LedgerPage>>, ApiError> {
    let limit = page.limit()?;
    let entries = ledger::list(&state.db, &caller.0.account_id, limit, page.before.as_deref()).await?;
    let next_before = next_before(&entries, limit, |e| e.id.clone());
    let entries = entries
        .into_iter()
        .map(|e| LedgerEntryView {
            id: e.id,
            task_id: e.task_id,
            kind: e.kind,
            amount: e.amount.to_usd(),
            time: e.created_at,
        })
        .collect();
    Ok(success(LedgerPage { entries, next_before }))
}
