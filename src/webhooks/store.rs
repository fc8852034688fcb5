//! Durable deliveries and their attempts.

use serde::Serialize;
use sqlx::any::AnyRow;
use sqlx::{Any, Row, Transaction};

use crate::db::{Db, now_ms};
use crate::ids::{AccountId, TaskId};
use crate::signals::{Bus, Signal};
use crate::tasks::events::EventKind;

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Delivery {
    pub id: String,
    pub task_id: String,
    #[serde(skip)]
    pub account_id: String,
    pub url: String,
    pub state: String,
    pub attempts: u32,
    pub next_attempt_at: Option<i64>,
    pub first_attempt_at: Option<i64>,
    pub completed_at: Option<i64>,
    /// The event it reports: `started` or `progress`; absent for the task's final state.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub event: Option<String>,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Attempt {
    pub attempt: u32,
    pub time: i64,
    /// The receiver's HTTP status, when it answered.
    pub status: Option<u16>,
    pub error: Option<String>,
    pub latency_ms: i64,
}

/// What happens to a delivery after an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    Delivered,
    /// Stopped for good: the receiver said 410 Gone, or the retry window is over.
    Failed,
    RetryAt(i64),
}

const COLUMNS: &str =
    "id, task_id, account_id, url, state, attempts, next_attempt_at, first_attempt_at, completed_at, event";

fn delivery_from_row(r: &AnyRow) -> Result<Delivery, sqlx::Error> {
    let state: String = r.try_get("state")?;
    Ok(Delivery {
        id: r.try_get("id")?,
        task_id: r.try_get("task_id")?,
        account_id: r.try_get("account_id")?,
        url: r.try_get("url")?,
        attempts: r.try_get::<i64, _>("attempts")? as u32,
        next_attempt_at: if state == "pending" { Some(r.try_get("next_attempt_at")?) } else { None },
        first_attempt_at: r.try_get("first_attempt_at")?,
        completed_at: r.try_get("completed_at")?,
        event: r.try_get("event")?,
        state,
    })
}

/// Queues a task's callback inside the transaction that makes the change it reports: its end
/// (`event` `None`), or a `started` or `progress` event its owner asked to hear of.
pub async fn enqueue_in(
    tx: &mut Transaction<'_, Any>,
    task: &TaskId,
    account: &AccountId,
    url: &str,
    event: Option<EventKind>,
) -> Result<(), sqlx::Error> {
    let now = now_ms();
    sqlx::query(
        "INSERT INTO webhook_deliveries (id, task_id, account_id, url, state, next_attempt_at, created_at, event) \
         VALUES ($1, $2, $3, $4, 'pending', $5, $5, $6)",
    )
    .bind(format!("msg_{}", uuid::Uuid::now_v7().simple()))
    .bind(task.as_str())
    .bind(account.as_str())
    .bind(url)
    .bind(now)
    .bind(event.map(EventKind::as_str))
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Leases a due delivery, sharing the dispatcher fairly between accounts: an account with
/// `cap` attempts in flight (across every node) gets no more while it is at its cap, and among
/// the rest the account with the fewest in flight goes first, then the delivery due longest.
/// The cap is `slots / (accounts with due deliveries + 1)`, at least 1: a lone account leaves
/// room for the next one to arrive, and each newcomer shrinks everyone's share.
pub async fn claim(db: &Db, lease_ms: i64, slots: usize) -> Result<Option<Delivery>, sqlx::Error> {
    let now = now_ms();
    let lock = match db.dialect {
        crate::db::Dialect::Sqlite => "",
        crate::db::Dialect::Postgres => "FOR UPDATE OF d SKIP LOCKED",
    };
    // A pending delivery with a live lease is an attempt in flight; every in-flight delivery is
    // also due (its next_attempt_at only moves when the attempt is recorded).
    let sql = format!(
        "UPDATE webhook_deliveries SET lease_until = $1 WHERE id = ( \
           WITH busy AS ( \
             SELECT account_id, COUNT(*) AS n FROM webhook_deliveries \
             WHERE state = 'pending' AND lease_until >= $2 GROUP BY account_id), \
           waiting AS ( \
             SELECT COUNT(DISTINCT account_id) AS n FROM webhook_deliveries \
             WHERE state = 'pending' AND next_attempt_at <= $2) \
           SELECT d.id FROM webhook_deliveries d \
             LEFT JOIN busy b ON b.account_id = d.account_id CROSS JOIN waiting w \
           WHERE d.state = 'pending' AND d.next_attempt_at <= $2 \
             AND (d.lease_until IS NULL OR d.lease_until < $2) \
             AND COALESCE(b.n, 0) < CASE WHEN $3 / (w.n + 1) < 1 THEN 1 ELSE $3 / (w.n + 1) END \
           ORDER BY COALESCE(b.n, 0), d.next_attempt_at LIMIT 1 {lock}) \
         RETURNING {COLUMNS}"
    );
    let row = sqlx::query(&sql).bind(now + lease_ms).bind(now).bind(slots as i64).fetch_optional(&db.write).await?;
    row.as_ref().map(delivery_from_row).transpose()
}

/// Frees every delivery's lease, for a server that alone owns its database (SQLite) at start-up:
/// a lease still standing is a dead process's attempt, to be made again now rather than after
/// the lease. Returns how many were freed.
pub async fn release_all_leases(db: &Db) -> Result<u64, sqlx::Error> {
    let done = sqlx::query("UPDATE webhook_deliveries SET lease_until = NULL WHERE lease_until IS NOT NULL")
        .execute(&db.write)
        .await?;
    Ok(done.rows_affected())
}

/// When the next pending delivery falls due, if any is scheduled for later. Deliveries already
/// due but held back by their account's cap are picked up when an attempt ends.
pub async fn next_due(db: &Db) -> Result<Option<i64>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT MIN(next_attempt_at) FROM webhook_deliveries WHERE state = 'pending' AND next_attempt_at > $1",
    )
    .bind(now_ms())
    .fetch_one(&db.read)
    .await
}

/// Records an attempt and what follows from it, in one transaction.
pub async fn record(
    db: &Db,
    delivery: &Delivery,
    started_at: i64,
    outcome: &Result<u16, String>,
    latency_ms: i64,
    next: Next,
) -> Result<(), sqlx::Error> {
    let attempt = delivery.attempts + 1;
    let mut tx = db.write.begin().await?;
    let (state, next_at, completed) = match next {
        Next::Delivered => ("delivered", started_at, Some(now_ms())),
        Next::Failed => ("failed", started_at, Some(now_ms())),
        Next::RetryAt(at) => ("pending", at, None),
    };
    sqlx::query(
        "UPDATE webhook_deliveries SET state = $1, attempts = $2, next_attempt_at = $3, completed_at = $4, \
         first_attempt_at = COALESCE(first_attempt_at, $5), lease_until = NULL WHERE id = $6",
    )
    .bind(state)
    .bind(i64::from(attempt))
    .bind(next_at)
    .bind(completed)
    .bind(started_at)
    .bind(&delivery.id)
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "INSERT INTO webhook_attempts (id, delivery_id, attempt, started_at, status, error, latency_ms) \
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(uuid::Uuid::now_v7().simple().to_string())
    .bind(&delivery.id)
    .bind(i64::from(attempt))
    .bind(started_at)
    .bind(outcome.as_ref().ok().map(|s| i64::from(*s)))
    .bind(outcome.as_ref().err())
    .bind(latency_ms)
    .execute(&mut *tx)
    .await?;
    tx.commit().await
}

/// A task's deliveries with their attempts, for its owner.
pub async fn list_for_task(
    db: &Db,
    task: &TaskId,
    account: &AccountId,
) -> Result<Vec<(Delivery, Vec<Attempt>)>, sqlx::Error> {
    let sql = format!("SELECT {COLUMNS} FROM webhook_deliveries WHERE task_id = $1 AND account_id = $2 ORDER BY id");
    let rows = sqlx::query(&sql).bind(task.as_str()).bind(account.as_str()).fetch_all(&db.read).await?;
    let mut out = Vec::with_capacity(rows.len());
    for row in &rows {
        let delivery = delivery_from_row(row)?;
        let attempts = sqlx::query(
            "SELECT attempt, started_at, status, error, latency_ms FROM webhook_attempts \
             WHERE delivery_id = $1 ORDER BY attempt",
        )
        .bind(&delivery.id)
        .fetch_all(&db.read)
        .await?
        .iter()
        .map(|r| {
            Ok(Attempt {
                attempt: r.try_get::<i64, _>("attempt")? as u32,
                time: r.try_get("started_at")?,
                status: r.try_get::<Option<i64>, _>("status")?.map(|s| s as u16),
                error: r.try_get("error")?,
                latency_ms: r.try_get("latency_ms")?,
            })
        })
        .collect::<Result<Vec<_>, sqlx::Error>>()?;
        out.push((delivery, attempts));
    }
    Ok(out)
}

/// An account's latest deliveries, newest first.
pub async fn recent_for_account(db: &Db, account: &AccountId, limit: i64) -> Result<Vec<Delivery>, sqlx::Error> {
    let sql = format!("SELECT {COLUMNS} FROM webhook_deliveries WHERE account_id = $1 ORDER BY id DESC LIMIT $2");
    let rows = sqlx::query(&sql).bind(account.as_str()).bind(limit).fetch_all(&db.read).await?;
    rows.iter().map(delivery_from_row).collect()
}

#[derive(Debug, PartialEq, Eq)]
pub enum RetryOutcome {
    Queued,
    NotFound,
    AlreadyDelivered,
    /// Pending or in flight: the dispatcher is still on it, so a retry would only overlap it.
    StillTrying,
}

/// A delivery's state, for its owner.
pub async fn state_of(db: &Db, id: &str, account: &AccountId) -> Result<Option<String>, sqlx::Error> {
    sqlx::query_scalar("SELECT state FROM webhook_deliveries WHERE id = $1 AND account_id = $2")
        .bind(id)
        .bind(account.as_str())
        .fetch_optional(&db.write)
        .await
}

/// Sends a delivery that has given up (`failed`) again now, with a fresh retry window. Only a
/// failed delivery qualifies, checked in the same statement that re-queues it: of concurrent
/// retries one wins, and none can overlap an attempt in flight.
pub async fn retry(db: &Db, bus: &Bus, id: &str, account: &AccountId) -> Result<RetryOutcome, sqlx::Error> {
    let queued = sqlx::query(
        "UPDATE webhook_deliveries SET state = 'pending', next_attempt_at = $1, first_attempt_at = NULL, \
         completed_at = NULL, lease_until = NULL WHERE id = $2 AND account_id = $3 AND state = 'failed'",
    )
    .bind(now_ms())
    .bind(id)
    .bind(account.as_str())
    .execute(&db.write)
    .await?
    .rows_affected();
    if queued == 1 {
        bus.publish(&db.write, &[Signal::CallbackQueued]).await?;
        return Ok(RetryOutcome::Queued);
    }
    Ok(match state_of(db, id, account).await?.as_deref() {
        None => RetryOutcome::NotFound,
        Some("delivered") => RetryOutcome::AlreadyDelivered,
        Some(_) => RetryOutcome::StillTrying,
    })
}
