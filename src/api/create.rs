//! The one create flow. Parsing is the only per-dialect step: each dialect turns its body into a
//! [`Creation`], and the rest is here for all three APIs: the callback URL check, the price
//! and hold, idempotency, admission (limits, credits) and `Prefer: wait`.

use axum::http::{HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use serde_json::Value;

use super::error::ApiError;
use super::extract::Caller;
use super::{AppState, Submitted, prefer};
use crate::catalog::{Model, Routing, TaskSpec};
use crate::ids::AccountId;
use crate::tasks::idempotency::Idempotency;
use crate::tasks::{CallbackEvents, Dialect, NewTask, Task};

/// A create request as its dialect parsed it.
pub struct Creation<'c> {
    pub dialect: Dialect,
    pub model: &'c Model,
    pub spec: TaskSpec,
    pub routing: Routing,
    pub callback_url: Option<String>,
}

/// How a create request was answered: the task, and where the caller asked to wait, the task
/// as it was when the wait ended.
pub struct Accepted {
    pub submitted: Submitted,
    pub waited: Option<(Task, std::time::Duration)>,
}

impl Accepted {
    /// Renders the answer: `created` for the task's id, `status` for the task after a wait.
    /// A replay is marked `idempotent-replayed`, a wait `preference-applied`.
    pub fn render<A: IntoResponse, B: IntoResponse>(
        self,
        created: impl FnOnce(&crate::ids::TaskId) -> A,
        status: impl FnOnce(&Task) -> B,
    ) -> Response {
        let (Submitted::Created(id) | Submitted::Replayed(id)) = &self.submitted;
        match &self.waited {
            Some((task, wait)) => prefer::applied(replayed(&self.submitted, status(task)), *wait),
            None => replayed(&self.submitted, created(id)),
        }
    }
}

impl AppState {
    /// The task a parsed request becomes, priced: it holds, per image, the highest price it can
    /// reach.
    /// `Cancel-After` and `Callback-Events` are read from `headers`, whatever the dialect.
    pub fn new_task(
        &self,
        account: &AccountId,
        headers: &HeaderMap,
        creation: Creation<'_>,
        param: String,
    ) -> Result<NewTask, ApiError> {
        if let Some(url) = &creation.callback_url {
            self.check_callback_url(url)?;
        }
        let cancel_after_ms = cancel_after(headers)?;
        let callback_events = match header(headers, "Callback-Events")? {
            Some(list) => {
                CallbackEvents::parse(list).map_err(|e| ApiError::BadRequest(format!("Callback-Events: {e}")))?
            }
            None => CallbackEvents::default(),
        };
        let (tariff, price) =
            creation.model.tariff_for(&creation.spec).map_err(|e| ApiError::BadRequest(e.to_string()))?;
        Ok(NewTask {
            account_id: account.clone(),
            dialect: creation.dialect,
            spec: creation.spec,
            param,
            routing: creation.routing,
            callback_url: creation.callback_url,
            price,
            tariff,
            cancel_after_ms,
            callback_events,
        })
    }

    /// Creates the task of a task API (APIXO's or the unified one): `route` names it for
    /// `Idempotency-Key`, `body` is the request as sent.
    pub async fn accept(
        &self,
        caller: &Caller,
        headers: &HeaderMap,
        route: &str,
        body: &Value,
        creation: Creation<'_>,
    ) -> Result<Accepted, ApiError> {
        let model = creation.model;
        let new = self.new_task(&caller.0.account_id, headers, creation, body.to_string())?;
        let idem = idempotency_key(headers, route, body)?;
        let submitted = self.submit(&new, model, idem.as_ref()).await?;
        let waited = match prefer::wait(headers) {
            Some(wait) => {
                let (Submitted::Created(id) | Submitted::Replayed(id)) = &submitted;
                Some((self.wait_for_end(id, &caller.0.account_id, wait).await?, wait))
            }
            None => None,
        };
        Ok(Accepted { submitted, waited })
    }
}

/// The shortest and longest `Cancel-After` taken: a deadline shorter than a second could not be
/// told from a cancel at once, and one past a week outlives every task timeout.
const CANCEL_AFTER_MS: std::ops::RangeInclusive<i64> = 1_000..=7 * 24 * 3600 * 1000;

/// A header's value as text, if present; `name` as its messages spell it (lookups ignore case).
fn header<'h>(headers: &'h HeaderMap, name: &str) -> Result<Option<&'h str>, ApiError> {
    headers
        .get(name)
        .map(|v| v.to_str().map(str::trim).map_err(|_| ApiError::BadRequest(format!("{name} must be visible ASCII"))))
        .transpose()
}

/// `Cancel-After: <duration>` (`90s`, `5m`, `1h30m`, `1500ms`, or bare seconds), in milliseconds.
fn cancel_after(headers: &HeaderMap) -> Result<Option<i64>, ApiError> {
    let Some(raw) = header(headers, "Cancel-After")? else { return Ok(None) };
    let invalid = || {
        ApiError::BadRequest(format!(
            "Cancel-After must be a duration between 1s and 7d, such as 90s, 5m or 1h30m (got {raw:?})"
        ))
    };
    let ms = match raw.parse::<u64>() {
        Ok(secs) => secs.checked_mul(1000),
        Err(_) => humantime::parse_duration(raw).ok().map(|d| d.as_millis().min(u64::MAX as u128) as u64),
    };
    let ms = ms.and_then(|ms| i64::try_from(ms).ok()).ok_or_else(invalid)?;
    if !CANCEL_AFTER_MS.contains(&ms) {
        return Err(invalid());
    }
    Ok(Some(ms))
}

/// Reads an `Idempotency-Key` header, fingerprinting the request it guards.
pub fn idempotency_key(headers: &HeaderMap, route: &str, body: &Value) -> Result<Option<Idempotency>, ApiError> {
    let Some(key) = header(headers, "Idempotency-Key")? else { return Ok(None) };
    Idempotency::new(key, route, body).map(Some).map_err(ApiError::BadRequest)
}

/// Marks a replayed answer, as idempotent APIs conventionally do.
pub fn replayed<R: IntoResponse>(submitted: &Submitted, response: R) -> Response {
    let mut response = response.into_response();
    if matches!(submitted, Submitted::Replayed(_)) {
        response.headers_mut().insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert("cancel-after", value.parse().unwrap());
        headers
    }

    #[test]
    fn cancel_after_reads_durations_and_refuses_the_rest() {
        assert_eq!(cancel_after(&HeaderMap::new()).unwrap(), None);
        assert_eq!(cancel_after(&with("90s")).unwrap(), Some(90_000));
        assert_eq!(cancel_after(&with("1h30m")).unwrap(), Some(5_400_000));
        assert_eq!(cancel_after(&with("1500ms")).unwrap(), Some(1_500));
        assert_eq!(cancel_after(&with("12")).unwrap(), Some(12_000));
        for bad in ["", "soon", "-5s", "0", "500ms", "30d", "99999999999999999999"] {
            assert!(cancel_after(&with(bad)).is_err(), "{bad:?} was taken");
        }
    }
}
