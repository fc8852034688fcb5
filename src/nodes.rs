//! The nodes of a deployment: each writes its own row (`nodes`) every few seconds while it runs,
//! so that the operator's console lists every node and when each was last heard from.

use std::time::Duration;

use sqlx::Row;
use tokio_util::sync::CancellationToken;

use crate::config::Role;
use crate::db::{Db, now_ms};

const EVERY: Duration = Duration::from_secs(10);
/// A node silent for longer than this is shown as gone.
pub const SILENT_AFTER_MS: i64 = 3 * EVERY.as_millis() as i64;
/// Rows of nodes gone for longer than this are deleted.
const FORGET_AFTER_MS: i64 = 7 * 24 * 3600 * 1000;

/// A node as its last heartbeat left it.
#[derive(Debug, Clone)]
pub struct Node {
    pub id: String,
    pub role: String,
    pub version: String,
    pub started_at: i64,
    pub last_seen_at: i64,
}

fn role_name(role: Role) -> &'static str {
    match role {
        Role::Api => "api",
        Role::Worker => "worker",
        Role::All => "all",
    }
}

/// Writes this node's row now and every [`EVERY`] until shutdown; a failed write is tried
/// again at the next beat.
pub async fn heartbeat(db: Db, id: String, role: Role, shutdown: CancellationToken) {
    let started = now_ms();
    loop {
        if let Err(e) = beat(&db, &id, role, started).await {
            tracing::debug!(error = %e, "could not record this node's heartbeat");
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(EVERY) => {}
        }
    }
}

async fn beat(db: &Db, id: &str, role: Role, started: i64) -> Result<(), sqlx::Error> {
    let now = now_ms();
    sqlx::query(
        "INSERT INTO nodes (id, role, version, started_at, last_seen_at) VALUES ($1, $2, $3, $4, $5) \
         ON CONFLICT (id) DO UPDATE SET role = excluded.role, version = excluded.version, \
         started_at = excluded.started_at, last_seen_at = excluded.last_seen_at",
    )
    .bind(id)
    .bind(role_name(role))
    .bind(env!("CARGO_PKG_VERSION"))
    .bind(started)
    .bind(now)
    .execute(&db.write)
    .await?;
    sqlx::query("DELETE FROM nodes WHERE last_seen_at < $1").bind(now - FORGET_AFTER_MS).execute(&db.write).await?;
    Ok(())
}

/// Every node heard from in the last week, the most recently heard first.
pub async fn list(db: &Db) -> Result<Vec<Node>, sqlx::Error> {
    let rows = sqlx::query("SELECT id, role, version, started_at, last_seen_at FROM nodes ORDER BY last_seen_at DESC")
        .fetch_all(&db.read)
        .await?;
    rows.iter()
        .map(|r| {
            Ok(Node {
                id: r.try_get("id")?,
                role: r.try_get("role")?,
                version: r.try_get("version")?,
                started_at: r.try_get("started_at")?,
                last_seen_at: r.try_get("last_seen_at")?,
            })
        })
        .collect()
}
