//! Probes for load balancers and orchestrators, on every node and without authentication:
//! `/healthz` says the process is up, `/readyz` that the services it depends on answer.

use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde_json::{Map, Value, json};

use super::AppState;

/// How long one dependency may take to answer a readiness check.
const CHECK_LIMIT: Duration = Duration::from_secs(3);

/// `GET /healthz`: always 200 while the process serves HTTP.
pub async fn healthz() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

/// `GET /readyz`: 200 when the database, Redis (if configured) and the object store answer,
/// else 503; each component's status is in the body. Failures are logged, not returned, so the
/// public answer names no hosts.
pub async fn readyz(State(state): State<AppState>) -> (StatusCode, Json<Value>) {
    let (database, storage, redis) = tokio::join!(
        judge("database", async {
            sqlx::query_scalar::<_, i32>("SELECT 1").fetch_one(&state.db.read).await?;
            Ok(())
        }),
        judge("storage", async { Ok(state.storage.check().await?) }),
        async {
            let ping = async {
                state.limiter.ping_shared().await.transpose()?;
                Ok(())
            };
            match state.limiter.is_shared() {
                true => Some(judge("redis", ping).await),
                false => None,
            }
        },
    );
    let mut checks = Map::new();
    checks.insert("database".into(), database.into());
    checks.insert("storage".into(), storage.into());
    if let Some(redis) = redis {
        checks.insert("redis".into(), redis.into());
    }
    let ready = checks.values().all(|s| s == "ok");
    let status = if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (status, Json(json!({"status": if ready { "ok" } else { "unavailable" }, "checks": checks})))
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
