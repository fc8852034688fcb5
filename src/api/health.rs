//! Probes for load balancers and orchestrators, on every node and without authentication:
//! `/healthz` says the process is up, `/readyz` that the services it depends on answer.

use std::collections::BTreeMap;
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::Serialize;
use utoipa::ToSchema;

use super::AppState;
use crate::accounts::rate::REDIS_AWAY;

/// How long one dependency may take to answer a readiness check.
const CHECK_LIMIT: Duration = Duration::from_secs(3);

/// A probe's answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct Probe {
    /// `ok`; `degraded` (still 200) when only Redis is away and limits hold per node; or
    /// `unavailable` when a dependency failed.
    #[schema(example = "ok")]
    pub status: &'static str,
    /// Each dependency's `ok` or `failed` (readiness only): `database`, `storage`, and `redis`
    /// where Redis is configured (`unreachable, limiting per node` while it is away).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<BTreeMap<String, String>>)]
    pub checks: Option<BTreeMap<&'static str, &'static str>>,
}

/// `GET /healthz`: always 200 while the process serves HTTP.
#[utoipa::path(
    get,
    path = "/healthz",
    operation_id = "healthz",
    tag = "Probes",
    security(()),
    responses((status = 200, description = "The process is up", body = Probe)),
)]
pub async fn healthz() -> Json<Probe> {
    Json(Probe { status: "ok", checks: None })
}

/// `GET /readyz`: 200 when the database answers a read and commits a small write and the object
/// store answers, else 503; each component's status is in the body. Redis (if configured) being
/// away is `degraded`, not unready: taking every node out of rotation would turn a limiter outage
/// into a full one. Failures are logged, not returned, so the
/// public answer names no hosts.
#[utoipa::path(
    get,
    path = "/readyz",
    operation_id = "readyz",
    tag = "Probes",
    security(()),
    responses(
        (status = 200, description = "Every dependency answers, or only Redis is away (`degraded`)", body = Probe),
        (status = 503, description = "A dependency failed; `checks` says which", body = Probe),
    ),
)]
pub async fn readyz(State(state): State<AppState>) -> (StatusCode, Json<Probe>) {
    let (database, storage, redis) = tokio::join!(
        judge("database", async {
            sqlx::query_scalar::<_, i32>("SELECT 1").fetch_one(&state.db.read).await?;
            // Reads still answer on a full disk; a node that cannot store a task is not ready.
            state.db.probe_write().await?;
            Ok(())
        }),
        judge("storage", async { Ok(state.storage.check().await?) }),
        state.limiter.shared_status(),
    );
    let mut checks = BTreeMap::from([("database", database), ("storage", storage)]);
    if let Some(redis) = redis {
        checks.insert("redis", redis);
    }
    // Redis away only degrades limits to per node: the node still serves, so it stays ready.
    let degraded = checks.get("redis") == Some(&REDIS_AWAY);
    let ready = checks.iter().all(|(name, s)| *s == "ok" || (*name == "redis" && degraded));
    let (code, status) = match (ready, degraded) {
        (false, _) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
        (true, true) => (StatusCode::OK, "degraded"),
        (true, false) => (StatusCode::OK, "ok"),
    };
    (code, Json(Probe { status, checks: Some(checks) }))
}

/// `ok` or `failed`, within [`CHECK_LIMIT`].
async fn judge(component: &'static str, check: impl Future<Output = anyhow::Result<()>>) -> &'static str {
    match tokio::time::timeout(CHECK_LIMIT, check).await {
        Ok(Ok(())) => "ok",
        Ok(Err(e)) => {
            tracing::warn!(component, error = format!("{e:#}"), "readiness check failed");
            "failed"
        }
        Err(_) => {
            tracing::warn!(component, "readiness check timed out");
            "failed"
        }
    }
}
