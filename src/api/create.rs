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
use crate::tasks::idempotency::Idempotency;
use crate::tasks::{Dialect, NewTask, Task};

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
    pub fn new_task(&self, caller: &Caller, creation: Creation<'_>, param: String) -> Result<NewTask, ApiError> {
        if let Some(url) = &creation.callback_url {
            self.check_callback_url(url)?;
        }
        let (tariff, price) =
            creation.model.tariff_for(&creation.spec).map_err(|e| ApiError::BadRequest(e.to_string()))?;
        Ok(NewTask {
            account_id: caller.0.account_id.clone(),
            dialect: creation.dialect,
            spec: creation.spec,
            param,
            routing: creation.routing,
            callback_url: creation.callback_url,
            price,
            tariff,
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
        let new = self.new_task(caller, creation, body.to_string())?;
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

/// Reads an `Idempotency-Key` header, fingerprinting the request it guards.
pub fn idempotency_key(headers: &HeaderMap, route: &str, body: &Value) -> Result<Option<Idempotency>, ApiError> {
    let Some(raw) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    let key = raw.to_str().map_err(|_| ApiError::BadRequest("Idempotency-Key must be visible ASCII".into()))?;
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
