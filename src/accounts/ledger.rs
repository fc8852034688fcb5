//! The append-only ledger and the balance moves that go with each entry.
//!
//! Every move is a conditional update of the account row plus one ledger row, inside the
//! caller's transaction. The account update comes first so that on SQLite the transaction takes
//! the write lock at its first statement. Task entries are unique per (task, kind), so a retried
//! or recovered worker can never hold, settle or release twice.

use std::collections::BTreeMap;

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

/// What became of a credit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Credited {
    Done,
    NoSuchAccount,
    /// Balance and held together would pass [`Micros::MAX_BALANCE`]; nothing changed.
    OverLimit,
}

/// Adds credits, unless they would take the account past [`Micros::MAX_BALANCE`]. The bound sits
/// in the UPDATE's WHERE, written so that no side of it can overflow (`amount` is at most the
/// bound, and balance plus held never passes it), so SQLite never turns the balance into a float
/// and PostgreSQL never fails on `bigint out of range`.
pub async fn credit_in(
    tx: &mut Transaction<'_, Any>,
    account: &AccountId,
    amount: Micros,
) -> Result<Credited, sqlx::Error> {
    if amount < Micros::ZERO || amount > Micros::MAX_BALANCE {
        return Ok(Credited::OverLimit);
    }
    let updated = sqlx::query(
        "UPDATE accounts SET balance_micros = balance_micros + $1 \
         WHERE id = $2 AND balance_micros + held_micros <= $3 - $1",
    )
    .bind(amount.0)
    .bind(account.as_str())
    .bind(Micros::MAX_BALANCE.0)
    .execute(&mut **tx)
    .await?;
    if updated.rows_affected() == 0 {
        let exists: Option<i64> = sqlx::query_scalar("SELECT 1 FROM accounts WHERE id = $1")
            .bind(account.as_str())
            .fetch_optional(&mut **tx)
            .await?;
        return Ok(if exists.is_some() { Credited::OverLimit } else { Credited::NoSuchAccount });
    }
    append(tx, account, None, EntryKind::Credit, amount).await?;
    Ok(Credited::Done)
}

/// A sum of money that does not fit the ledger's integers, as an error rather than a wrap.
fn too_large() -> sqlx::Error {
    sqlx::Error::Encode(Box::new(crate::money::MoneyError::TooLarge))
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

/// A task's hold to close: all of `held` leaves the held pot; `charge` of it (never more than
/// `held`) is spent, the rest returns to the balance.
#[derive(Debug, Clone, Copy)]
pub struct Closing<'a> {
    pub account: &'a AccountId,
    pub task: &'a TaskId,
    pub held: Micros,
    pub charge: Micros,
}

/// Closes the holds of tasks that ended: one balance update per account, however many of its
/// tasks ended, and one INSERT of every task's settle and release rows. Both rows are unique per
/// task, so settling a task twice fails instead of paying twice.
pub async fn settle_all_in(
    tx: &mut Transaction<'_, Any>,
    closings: &[Closing<'_>],
    now: i64,
) -> Result<(), sqlx::Error> {
    // Ordered by account, so that concurrent settlements lock accounts in one order.
    let mut per_account: BTreeMap<&str, (Micros, Micros)> = BTreeMap::new();
    let mut entries = Vec::with_capacity(2 * closings.len());
    for c in closings {
        let charge = c.charge.min(c.held);
        let refund = c.held.checked_sub(charge).ok_or_else(too_large)?;
        let (held, refunded) = per_account.entry(c.account.as_str()).or_default();
        *held = held.checked_add(c.held).ok_or_else(too_large)?;
        *refunded = refunded.checked_add(refund).ok_or_else(too_large)?;
        let entry = |kind, amount| NewEntry { account: c.account, task: Some(c.task), kind, amount };
        entries.extend([entry(EntryKind::Settle, charge), entry(EntryKind::Release, refund)]);
    }
    for (account, (held, refund)) in per_account {
        sqlx::query(
            "UPDATE accounts SET held_micros = held_micros - $1, balance_micros = balance_micros + $2 WHERE id = $3",
        )
        .bind(held.0)
        .bind(refund.0)
        .bind(account)
        .execute(&mut **tx)
        .await?;
    }
    append_all(tx, &entries, now).await
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
    rows.iter().map(entry_from_row).collect()
}

/// An account's entries for one task, oldest first.
pub async fn for_task(db: &Db, account: &AccountId, task: &TaskId) -> Result<Vec<Entry>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT id, task_id, kind, amount_micros, created_at FROM ledger WHERE task_id = $1 AND account_id = $2 \
         ORDER BY id",
    )
    .bind(task.as_str())
    .bind(account.as_str())
    .fetch_all(&db.read)
    .await?;
    rows.iter().map(entry_from_row).collect()
}

fn entry_from_row(r: &sqlx::any::AnyRow) -> Result<Entry, sqlx::Error> {
    Ok(Entry {
        id: r.try_get("id")?,
        task_id: r.try_get("task_id")?,
        kind: r.try_get("kind")?,
        amount: Micros(r.try_get("amount_micros")?),
        created_at: r.try_get("created_at")?,
    })
}

/// Sums of an account's ledger by kind, for checking the balance against its history.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Totals {
    pub credit: Micros,
    pub hold: Micros,
    pub settle: Micros,
    pub release: Micros,
}

/// Exact sums, never an overflow: SQLite's SUM of integers fails once it passes the i64 range
/// (and TOTAL would round), so whole dollars and the micro-dollars below them are summed apart,
/// each far from that range, and joined in 128 bits. A total beyond an i64 is an error.
pub async fn totals(db: &Db, account: &AccountId) -> Result<Totals, sqlx::Error> {
    // PostgreSQL sums BIGINT into NUMERIC; the casts keep one decoding for both databases.
    let rows = sqlx::query(
        "SELECT kind, CAST(SUM(amount_micros / 1000000) AS BIGINT) AS whole, \
         CAST(SUM(amount_micros % 1000000) AS BIGINT) AS frac FROM ledger WHERE account_id = $1 GROUP BY kind",
    )
    .bind(account.as_str())
    .fetch_all(&db.read)
    .await?;
    let mut totals = Totals::default();
    for r in rows {
        let kind: String = r.try_get("kind")?;
        let whole = i128::from(r.try_get::<Option<i64>, _>("whole")?.unwrap_or(0));
        let frac = i128::from(r.try_get::<Option<i64>, _>("frac")?.unwrap_or(0));
        let sum = Micros(i64::try_from(whole * 1_000_000 + frac).map_err(|_| too_large())?);
        match kind.as_str() {
            "credit" => totals.credit = sum,
            "hold" => totals.hold = sum,
            "settle" => totals.settle = sum,
            _ => totals.release = sum,
        }
    }
    Ok(totals)
}
