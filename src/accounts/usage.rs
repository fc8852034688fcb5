//! Each account's ended tasks per UTC day and model (`usage_daily`), kept in the transaction
//! that ends a task, so that an overview of an account's spending reads a few rows however many
//! tasks it has. The live part (tasks still waiting or running) is counted from the tasks.

use std::collections::BTreeMap;

use sqlx::{Any, Row, Transaction};

use crate::db::Db;
use crate::ids::AccountId;
use crate::money::Micros;

pub const DAY_MS: i64 = 86_400_000;

/// How a task ended, as the rollup counts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    Succeeded,
    Failed,
    Cancelled,
}

/// The ended tasks of one transaction, added up per account, UTC day and model before they
/// are written: one upsert for a group of finishes, whatever their number.
#[derive(Debug, Default)]
pub struct Tally {
    rows: BTreeMap<(String, i64, String), Counts>,
}

#[derive(Debug, Default)]
struct Counts {
    succeeded: i64,
    failed: i64,
    cancelled: i64,
    images: i64,
    spent: Micros,
}

impl Tally {
    pub fn add(&mut self, account: &AccountId, model: &str, ended: Ended, images: u32, charge: Micros, at: i64) {
        let key = (account.as_str().to_owned(), at.div_euclid(DAY_MS), model.to_owned());
        let counts = self.rows.entry(key).or_default();
        match ended {
            Ended::Succeeded => counts.succeeded += 1,
            Ended::Failed => counts.failed += 1,
            Ended::Cancelled => counts.cancelled += 1,
        }
        counts.images += i64::from(images);
        // Cannot overflow: the charges of one account come out of its holds, which
        // `Micros::MAX_BALANCE` (a ninth of i64) bounds; saturating keeps it checked regardless.
        counts.spent = counts.spent.checked_add(charge).unwrap_or(Micros(i64::MAX));
    }

    /// Adds the tally to `usage_daily`, in one statement (each row a different key, as one
    /// upsert needs on PostgreSQL).
    pub async fn record_in(&self, tx: &mut Transaction<'_, Any>) -> Result<(), sqlx::Error> {
        if self.rows.is_empty() {
            return Ok(());
        }
        let sql = format!(
            "INSERT INTO usage_daily (account_id, day, model, succeeded, failed, cancelled, images, spent_micros) \
             VALUES {} ON CONFLICT (account_id, day, model) DO UPDATE SET \
             succeeded = usage_daily.succeeded + excluded.succeeded, failed = usage_daily.failed + excluded.failed, \
             cancelled = usage_daily.cancelled + excluded.cancelled, images = usage_daily.images + excluded.images, \
             spent_micros = usage_daily.spent_micros + excluded.spent_micros",
            crate::db::placeholders(self.rows.len(), 8)
        );
        let mut query = sqlx::query(&sql);
        for ((account, day, model), c) in &self.rows {
            query = query.bind(account.as_str()).bind(*day).bind(model.as_str());
            query = query.bind(c.succeeded).bind(c.failed).bind(c.cancelled).bind(c.images).bind(c.spent.0);
        }
        query.execute(&mut **tx).await?;
        Ok(())
    }
}

/// What an account spent on one day.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Day {
    /// Days since the Unix epoch (UTC).
    pub day: i64,
    pub spent: Micros,
    pub images: i64,
}

/// The account's spending on each of the `days` days up to and including `today` (UTC day
/// numbers), oldest first, with the days it spent nothing.
pub async fn daily(db: &Db, account: &AccountId, today: i64, days: i64) -> Result<Vec<Day>, sqlx::Error> {
    let first = today - days + 1;
    let rows = sqlx::query(
        "SELECT day, CAST(SUM(spent_micros) AS BIGINT) AS spent, CAST(SUM(images) AS BIGINT) AS images \
         FROM usage_daily WHERE account_id = $1 AND day >= $2 AND day <= $3 GROUP BY day",
    )
    .bind(account.as_str())
    .bind(first)
    .bind(today)
    .fetch_all(&db.read)
    .await?;
    let mut out: Vec<Day> = (first..=today).map(|day| Day { day, spent: Micros::ZERO, images: 0 }).collect();
    for r in rows {
        let day: i64 = r.try_get("day")?;
        if let Some(slot) = out.get_mut((day - first) as usize) {
            slot.spent = Micros(r.try_get::<Option<i64>, _>("spent")?.unwrap_or(0));
            slot.images = r.try_get::<Option<i64>, _>("images")?.unwrap_or(0);
        }
    }
    Ok(out)
}

/// An account's tasks of one model, by how they stand.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ModelTally {
    pub model: String,
    pub pending: i64,
    pub processing: i64,
    pub succeeded: i64,
    pub failed: i64,
    pub cancelled: i64,
    pub images: i64,
    pub spent: Micros,
}

/// Every task of the account by model and state: the ended ones from the rollup, the waiting
/// and running ones from the tasks themselves (an index range of the few unfinished).
pub async fn by_model(db: &Db, account: &AccountId) -> Result<Vec<ModelTally>, sqlx::Error> {
    let ended = sqlx::query(
        "SELECT model, CAST(SUM(succeeded) AS BIGINT) AS succeeded, CAST(SUM(failed) AS BIGINT) AS failed, \
         CAST(SUM(cancelled) AS BIGINT) AS cancelled, CAST(SUM(images) AS BIGINT) AS images, \
         CAST(SUM(spent_micros) AS BIGINT) AS spent FROM usage_daily WHERE account_id = $1 GROUP BY model",
    )
    .bind(account.as_str())
    .fetch_all(&db.read)
    .await?;
    let live = sqlx::query(
        "SELECT model, state, COUNT(*) AS n FROM tasks WHERE account_id = $1 \
         AND state IN ('pending', 'processing') GROUP BY model, state",
    )
    .bind(account.as_str())
    .fetch_all(&db.read)
    .await?;
    let mut tallies: Vec<ModelTally> = Vec::new();
    fn slot(tallies: &mut Vec<ModelTally>, model: String) -> &mut ModelTally {
        match tallies.iter().position(|t| t.model == model) {
            Some(i) => &mut tallies[i],
            None => {
                tallies.push(ModelTally { model, ..ModelTally::default() });
                tallies.last_mut().expect("just pushed")
            }
        }
    }
    let sum = |r: &sqlx::any::AnyRow, c: &str| r.try_get::<Option<i64>, _>(c).map(Option::unwrap_or_default);
    for r in &ended {
        let t = slot(&mut tallies, r.try_get("model")?);
        t.succeeded = sum(r, "succeeded")?;
        t.failed = sum(r, "failed")?;
        t.cancelled = sum(r, "cancelled")?;
        t.images = sum(r, "images")?;
        t.spent = Micros(sum(r, "spent")?);
    }
    for r in &live {
        let state: String = r.try_get("state")?;
        let n: i64 = r.try_get("n")?;
        let t = slot(&mut tallies, r.try_get("model")?);
        if state == "pending" {
            t.pending = n;
        } else {
            t.processing = n;
        }
    }
    tallies.sort_by(|a, b| a.model.cmp(&b.model));
    Ok(tallies)
}
