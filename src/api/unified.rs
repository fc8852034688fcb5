//! apimodels' unified API (seed 003): `{"code","msg","data"}` envelopes.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use serde::Serialize;
use serde_json::Value;

use super::AppState;
use super::error::{ApiError, render_error};
use super::extract::Caller;
use crate::money::Micros;

#[derive(Serialize)]
pub struct Envelope<T> {
    pub code: u16,
    pub msg: String,
    pub data: T,
}

fn success<T: Serialize>(data: T) -> Json<Envelope<T>> {
    Json(Envelope { code: 200, msg: "success".into(), data })
}

/// Seed 003's statuses: a short balance is 402 here, not APIXO's 400.
fn status_of(error: &ApiError) -> StatusCode {
    match error {
        ApiError::InsufficientCredits => StatusCode::PAYMENT_REQUIRED,
        other => other.status(),
    }
}

pub async fn envelope(response: Response) -> Response {
    render_error(response, |error| {
        let status = status_of(error);
        (status, Envelope { code: status.as_u16(), msg: error.to_string(), data: Value::Null })
    })
}

#[derive(Serialize)]
pub struct Balance {
    pub balance: f64,
    /// Spendable plus held.
    pub total: f64,
    /// Held for unfinished tasks.
    pub frozen: f64,
    pub currency: &'static str,
}

/// apimodels' `GET /api/v1/balance`.
pub async fn balance(State(state): State<AppState>, caller: Caller) -> Result<Json<Envelope<Balance>>, ApiError> {
    let account = state.accounts.get(&caller.0.account_id).await?;
    Ok(success(Balance {
        balance: account.balance.to_usd(),
        total: Micros(account.balance.0 + account.held.0).to_usd(),
        frozen: account.held.to_usd(),
        currency: "USD",
    }))
}
