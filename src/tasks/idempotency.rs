//! `Idempotency-Key` on task creation: the same key and body within 24 hours gives back the
//! task the first request created, without a second hold. The same table remembers, under a key
//! of Easel's own, the task an OpenAI SDK call's first attempt created, so that the SDK's
//! retries of that call find it (see `api::sdk_retry`).

use sha2::{Digest, Sha256};
use sqlx::{Any, Row, Transaction};

use crate::db::{Db, now_ms};
use crate::ids::{AccountId, TaskId};

/// How long a key is remembered.
pub const KEEP_MS: i64 = 24 * 3600 * 1000;
/// A first request still unfinished after this long died with its process: nothing of it was
/// committed (the task and the key's completion share one transaction), so the key is free again.
const ABANDONED_MS: i64 = 60 * 1000;

#[derive(Debug, Clone)]
pub struct Idempotency {
    pub key: String,
    /// Hash of what the request asks for (route and canonical body).
    pub fingerprint: String,
}

impl Idempotency {
    /// Checks the header value: 1 to 255 visible ASCII characters.
    pub fn new(key: &str, route: &str, body: &serde_json::Value) -> Result<Self, String> {
        if key.is_empty() || key.len() > 255 || !key.bytes().all(|b| b.is_ascii_graphic()) {
            return Err("Idempotency-Key must be 1 to 255 visible ASCII characters".into());
        }
        Ok(Self { key: key.to_owned(), fingerprint: fingerprint(route, body) })
    }

    /// The key every attempt of one SDK call shares without sending it: derived from the API
    /// key and the request. It contains spaces, which no client's `Idempotency-Key` may, so the
    /// two kinds never meet.
    pub fn sdk_call(api_key_id: &str, route: &str, body: &serde_json::Value) -> Self {
        let fingerprint = fingerprint(route, body);
        let mut hash = Sha256::new();
        hash.update(api_key_id.as_bytes());
        hash.update(b"\n");
        hash.update(fingerprint.as_bytes());
        Self { key: format!("sdk call {}", hex::encode(hash.finalize())), fingerprint }
    }
}

/// Hash of what a request asks for: the route and the canonical body (serde_json's maps are
/// sorted, so key order and white space do not matter).
fn fingerprint(route: &str, body: &serde_json::Value) -> String {
    let mut hash = Sha256::new();
    hash.update(route.as_bytes());
    hash.update(b"\n");
    hash.update(body.to_string().as_bytes());
    hex::encode(hash.finalize())
}

#[derive(Debug, PartialEq)]
pub enum Claim {
    /// First use: go ahead, and complete the key in the creating transaction.
    Fresh,
    Replay(TaskId),
    InFlight,
    /// The key was used with a different request.
    Mismatch,
}

pub async fn claim(db: &Db, account: &AccountId, idem: &Idempotency) -> Result<Claim, sqlx::Error> {
    let now = now_ms();
    sqlx::query(
        "DELETE FROM idempotency_keys WHERE account_id = $1 AND key = $2 \
         AND (created_at < $3 OR (task_id IS NULL AND created_at < $4))",
    )
    .bind(account.as_str())
    .bind(&idem.key)
    .bind(now - KEEP_MS)
    .bind(now - ABANDONED_MS)
    .execute(&db.write)
    .await?;
    let inserted = sqlx::query(
        "INSERT INTO idempotency_keys (account_id, key, request_hash, created_at) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (account_id, key) DO NOTHING",
    )
    .bind(account.as_str())
    .bind(&idem.key)
    .bind(&idem.fingerprint)
    .bind(now)
    .execute(&db.write)
    .await?;
    if inserted.rows_affected() == 1 {
        return Ok(Claim::Fresh);
    }
    let row = sqlx::query("SELECT request_hash, task_id FROM idempotency_keys WHERE account_id = $1 AND key = $2")
        .bind(account.as_str())
        .bind(&idem.key)
        .fetch_optional(&db.write)
        .await?;
    let Some(row) = row else {
        // Removed between our insert and select: the other request gave up. Treat as in flight;
        // the client's retry will find the key free.
        return Ok(Claim::InFlight);
    };
    if row.try_get::<String, _>("request_hash")? != idem.fingerprint {
        return Ok(Claim::Mismatch);
    }
    Ok(match row.try_get::<Option<String>, _>("task_id")? {
        Some(task) => Claim::Replay(TaskId::from_db(task)),
        None => Claim::InFlight,
    })
}

/// Frees every key whose first request is unfinished, for a server that alone owns its database
/// (SQLite) at start-up: those requests died with the previous process and created nothing, so
/// their retries may go ahead at once instead of meeting 409 for a minute. Returns how many.
pub async fn free_all_unfinished(db: &Db) -> Result<u64, sqlx::Error> {
    let done = sqlx::query("DELETE FROM idempotency_keys WHERE task_id IS NULL").execute(&db.write).await?;
    Ok(done.rows_affected())
}

/// Frees a key whose request created nothing (refused or failed), so that a retry may proceed.
pub async fn abandon(db: &Db, account: &AccountId, idem: &Idempotency) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM idempotency_keys WHERE account_id = $1 AND key = $2 AND task_id IS NULL")
        .bind(account.as_str())
        .bind(&idem.key)
        .execute(&db.write)
        .await?;
    Ok(())
}

/// Records the created task against the key, inside the creating transaction.
pub async fn complete_in(
    tx: &mut Transaction<'_, Any>,
    account: &AccountId,
    idem: &Idempotency,
    task: &TaskId,
) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE idempotency_keys SET task_id = $1 WHERE account_id = $2 AND key = $3")
        .bind(task.as_str())
        .bind(account.as_str())
        .bind(&idem.key)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// What is recorded under a key.
#[derive(Debug, PartialEq)]
pub enum Recorded {
    /// The request is still creating its task (since `since_ms`).
    Creating {
        since_ms: i64,
    },
    Task(TaskId),
}

/// Looks a key up without claiming it.
pub async fn recorded(db: &Db, account: &AccountId, idem: &Idempotency) -> Result<Option<Recorded>, sqlx::Error> {
    let row = sqlx::query(
        "SELECT task_id, created_at FROM idempotency_keys WHERE account_id = $1 AND key = $2 AND request_hash = $3",
    )
    .bind(account.as_str())
    .bind(&idem.key)
    .bind(&idem.fingerprint)
    .fetch_optional(&db.write)
    .await?;
    let Some(row) = row else { return Ok(None) };
    Ok(Some(match row.try_get::<Option<String>, _>("task_id")? {
        Some(task) => Recorded::Task(TaskId::from_db(task)),
        None => Recorded::Creating { since_ms: row.try_get("created_at")? },
    }))
}

/// Claims a key for a new request whatever it recorded before: a later call replaces an
/// earlier one, and its task is completed on the key as with [`claim`]'s `Fresh`.
pub async fn claim_anew(db: &Db, account: &AccountId, idem: &Idempotency) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO idempotency_keys (account_id, key, request_hash, created_at) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (account_id, key) DO UPDATE \
         SET request_hash = excluded.request_hash, task_id = NULL, created_at = excluded.created_at",
    )
    .bind(account.as_str())
    .bind(&idem.key)
    .bind(&idem.fingerprint)
    .bind(now_ms())
    .execute(&db.write)
    .await?;
    Ok(())
}

/// Whether a request that started creating at `since_ms` may still be alive.
pub fn still_creating(since_ms: i64) -> bool {
    now_ms() - since_ms < ABANDONED_MS
}
