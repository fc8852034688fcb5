//! The append-only ledger and the balance moves that go with each entry.
//!
//! Every move is a conditional update of the account row plus one ledger row, inside the
//! caller's transaction. The account update comes first so that on SQLite the transaction takes
//! the write lock at its first statement. Task entries are unique per (task, kind), so a retried
//! or recovered worker can never hold, settle or release twice.

use sqlx::{Any, Row, Transaction};

use crate::db::{Db, now_ms, placeholders};
use crate::ids::{AccountId, TaskId};
use crate::money::Micros;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    Credit,
    Hold,
    Settle,
    Release,
}

impl EntryKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EntryKind::Credit => "credit",
            EntryKind::Hold => "hold",
            EntryKind::Settle => "settle",
            EntryKind::Release => "release",
        }
    }
}

/// A ledger row to append.
#[derive(Debug, Clone, Copy)]
pub struct NewEntry<'a> {
    pub account: &'a AccountId,
    pub task: Option<&'a TaskId>,
    pub kind: EntryKind,
    pub amount: Micros,
}

/// Appends `entries` in one statement.
pub async fn append_all(tx: &mut Transaction<'_, Any>, entries: &[NewEntry<'_>], now: i64) -> Result<(), sqlx::Error> {
    if entries.is_empty() {
        return Ok(());
    }
    let sql = format!(
        "INSERT INTO ledger (id, account_id, task_id, kind, amount_micros, created_at) VALUES {}",
        placeholders(entries.len(), 6)
    );
    let mut query = sqlx::query(&sql);
    for entry in entries {
        query = query
            .bind(uuid::Uuid::now_v7().simple().to_string())
            .bind(entry.account.as_str())
            .bind(entry.task.map(TaskId::as_str))
            .bind(entry.kind.as_str())
            .bind(entry.amount.0)
            .bind(now);
    }
    query.execute(&mut **tx).await?;
    Ok(())
}

async fn append(
    tx: &mut Transaction<'_, Any>,
    account: &AccountId,
    task: Option<&TaskId>,
    kind: EntryKind,
    amount: Micros,
) -> Result<(), sqlx::Error> {
    append_all(tx, &[NewEntry { account, task, kind, amount }], now_ms()).await
}

/// Adds credits. Returns false if the account does not exist.
pub async fn credit_in(
    tx: &mut Transaction<'_, Any>,
    account: &AccountId,
    amount: Micros,
) -> Result<bool, sqlx::Error> {
    let updated = sqlx::query("UPDATE accounts SET balance_micros = balance_micros + $1 WHERE id = $2")
        .bind(amount.0)
        .bind(account.as_str())
        .execute(&mut **tx)
        .await?;
    if updated.rows_affected() == 0 {
        return Ok(false);
    }
    append(tx, account, None, EntryKind::Credit, amount).await?;
    Ok(true)
}

/// Moves `amount` from the balance into the held pot. Returns false, changing nothing, when the
/// balance is short: the condition sits in the UPDATE itself, so no interleaving can overspend.
pub async fn hold_in(
    tx: &mut Transaction<'_, Any>,
    account: &AccountId,
    task: &TaskId,
    amount: Micros,
) -> Result<bool, sqlx::Error> {
    let updated = sqlx::query(
        "UPDATE accounts SET balance_micros = balance_micros - $1, held_micros = held_micros + $1 \
         WHERE id = $2 AND balance_micros >= $1",
    )
    .bind(amount.0)
    .bind(account.as_str())
    .execute(&mut **tx)
    .await?;
    if updated.rows_affected() == 0 {
        return Ok(false);
    }
    append(tx, account, Some(task), EntryKind::Hold, amount).await?;
    Ok(true)
}

/// How a task's hold closes: `charge` leaves the held pot for good, `refund` returns to the
/// balance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settlement {
    pub charge: Micros,
    pub refund: Micros,
}

impl Settlement {
    /// Never charges more than was held.
    pub fn of(held: Micros, charge: Micros) -> Self {
        let charge = charge.min(held);
        Settlement { charge, refund: Micros(held.0 - charge.0) }
    }
}

/// Takes `held` out of the account's held pot and returns `refund` of it to the balance.
pub async fn close_holds_in(
    tx: &mut Transaction<'_, Any>,
    account: &AccountId,
    held: Micros,
    refund: Micros,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE accounts SET held_micros = held_micros - $1, balance_micros = balance_micros + $2 WHERE id = $3",
    )
    .bind(held.0)
    .bind(refund.0)
    .bind(account.as_str())
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Closes a task's hold (see [`Settlement`]). Both ledger rows are unique per task, so a second
/// call fails instead of paying twice.
pub async fn settle_in(
    tx: &mut Transaction<'_, Any>,
    account: &AccountId,
    task: &TaskId,
    held: Micros,
    charge: Micros,
) -> Result<(), sqlx::Error> {
    let Settlement { charge, refund } = Settlement::of(held, charge);
    close_holds_in(tx, account, held, refund).await?;
    let entry = |kind, amount| NewEntry { account, task: Some(task), kind, amount };
    append_all(tx, &[entry(EntryKind::Settle, charge), entry(EntryKind::Release, refund)], now_ms()).await
}

/// One ledger row as clients see it.
#[derive(Debug, Clone)]
pub struct Entry {
    pub id: String,
    pub task_id: Option<String>,
    pub kind: String,
    pub amount: Micros,
    pub created_at: i64,
}

/// An account's entries, newest first, older than the entry id `before` if given.
pub async fn list(db: &Db, account: &AccountId, limit: i64, before: Option<&str>) -> Result<Vec<Entry>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT id, task_id, kind, amount_micros, created_at FROM ledger \
         WHERE account_id = $1 AND ($2 IS NULL OR id < $2) ORDER BY id DESC LIMIT $3",
    )
    .bind(account.as_str())
    .bind(before)
    .bind(limit)
    .fetch_all(&db.read)
    .await?;
    rows.iter()
        .map(|r| {
            Ok(Entry {
                id: r.try_get("id")?,
                task_id: r.try_get("task_id")?,
                kind: r.try_get("kind")?,
                amount: Micros(r.try_get("amount_micros")?),
                created_at: r.try_get("created_at")?,
            })
        })
        .collect()
}

/// Sums of an account's ledger by kind, for checking the balance against its history.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Totals {
    pub credit: Micros,
    pub hold: Micros,
    pub settle: Micros,
    pub release: Micros,
}

pub async fn totals(db: &Db, account: &AccountId) -> Result<Totals, sqlx::Error> {
    // PostgreSQL sums BIGINT into NUMERIC; the cast keeps one decoding for both databases.
    let rows = sqlx::query(
        "SELECT kind, CAST(SUM(amount_micros) AS BIGINT) AS total FROM ledger WHERE account_id = $1 GROUP BY kind",
    )
    .bind(account.as_str())
    .fetch_all(&db.read)
    .await?;
    let mut totals = Totals::default();
    for r in rows {
        let kind: String = r.try_get("kind")?;
        let sum = Micros(r.try_get::<Option<i64>, _>("total")?.unwrap_or(0));
        match kind.as_str() {
            "credit" => totals.credit = sum,
            "hold" => totals.hold = sum,
            "settle" => totals.settle = sum,
            _ => totals.release = sum,
        }
    }
    Ok(totals)
}
