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

/// How long one dependency may take to answer a readiness check.
const CHECK_LIMIT: Duration = Duration::from_secs(3);

/// A probe's answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct Probe {
    /// `ok`, or `unavailable` when a dependency failed.
    #[schema(example = "ok")]
    pub status: &'static str,
    /// Each dependency's `ok` or `failed` (readiness only): `database`, `storage`, and `redis`
    /// where Redis is configured.
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

/// `GET /readyz`: 200 when the database answers a read and commits a small write, and Redis (if
/// configured) and the object store answer, else 503; each component's status is in the body. Failures are logged, not returned, so the
/// public answer names no hosts.
#[utoipa::path(
    get,
    path = "/readyz",
    operation_id = "readyz",
    tag = "Probes",
    security(()),
    responses(
        (status = 200, description = "Every dependency answers", body = Probe),
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
        async {
            let ping = async { Ok(state.limiter.ping_shared().await?) };
            if state.limiter.is_shared() { Some(judge("redis", ping).await) } else { None }
        },
    );
    let mut checks = BTreeMap::from([("database", database), ("storage", storage)]);
    if let Some(redis) = redis {
        checks.insert("redis", redis);
    }
    let ready = checks.values().all(|s| *s == "ok");
    let status = if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (status, Json(Probe { status: if ready { "ok" } else { "unavailable" }, checks: Some(checks) }))
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
