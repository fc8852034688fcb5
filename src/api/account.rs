//! What a key holder can see of its own account: balance, holds, limits and the ledger, plus
//! the balance route APIXO's clients already call.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::State;
use serde::{Deserialize, Serialize};

use super::AppState;
use super::apixo::{Envelope, success};
use super::error::ApiError;
use super::extract::{Caller, Query};
use crate::accounts::limits::{self, Limits};
use crate::accounts::{Account, ledger};

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AccountView {
    pub account_id: String,
    pub name: String,
    /// Spendable USD.
    pub balance: f64,
    /// USD held for unfinished tasks.
    pub held: f64,
    pub limits: BTreeMap<&'static str, LimitsView>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LimitsView {
    pub rpm: u32,
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
        limits.insert(model.id, limits::effective(&state.db, &account.id, model).await?.into());
    }
    Ok(AccountView {
        account_id: account.id.to_string(),
        name: account.name.clone(),
        balance: account.balance.to_usd(),
        held: account.held.to_usd(),
        limits,
    })
}

#[tracing::instrument(skip_all)]
pub async fn show(State(state): State<AppState>, caller: Caller) -> Result<Json<Envelope<AccountView>>, ApiError> {
    let account = state.accounts.get(&caller.0.account_id).await?;
    Ok(success(account_view(&state, &account).await?))
}

/// APIXO's `GET /api/v1/apikeys/current-balance`: the balance in USD as a bare number.
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
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LedgerEntryView {
    pub id: String,
    pub task_id: Option<String>,
    pub kind: String,
    /// USD, always positive; the kind says which way it moved.
    pub amount: f64,
    pub time: i64,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LedgerPage {
    pub entries: Vec<LedgerEntryView>,
    /// Pass as `before` to get the next, older page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_before: Option<String>,
}

#[tracing::instrument(skip_all)]
pub async fn ledger(
    State(state): State<AppState>,
    caller: Caller,
    Query(page): Query<PageQuery>,
) -> Result<Json<Envelope<LedgerPage>>, ApiError> {
    let limit = page.limit()?;
    let entries = ledger::list(&state.db, &caller.0.account_id, limit, page.before.as_deref()).await?;
    let next_before = (entries.len() as i64 == limit).then(|| entries.last().map(|e| e.id.clone())).flatten();
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
