//! Per-account, per-model limits: task creations per minute (enforced by [`super::rate`]) and
//! unfinished tasks (counted in the task-insert transaction).

use serde::Serialize;
use sqlx::Row;

use crate::catalog::Model;
use crate::db::Db;
use crate::ids::AccountId;

/// The limits in force for one account and model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Limits {
    pub rpm: u32,
    pub max_concurrent: u32,
}

/// An account's own limits for a model, where the operator set them; the model's otherwise.
pub async fn effective(db: &Db, account: &AccountId, model: &Model) -> Result<Limits, sqlx::Error> {
    let row = sqlx::query("SELECT rpm, max_concurrent FROM account_limits WHERE account_id = $1 AND model = $2")
        .bind(account.as_str())
        .bind(&model.id)
        .fetch_optional(&db.read)
        .await?;
    let (rpm, concurrent) = match row {
        Some(r) => (r.try_get::<Option<i64>, _>("rpm")?, r.try_get::<Option<i64>, _>("max_concurrent")?),
        None => (None, None),
    };
    Ok(Limits {
        rpm: rpm.map_or(model.rpm, |n| n as u32),
        max_concurrent: concurrent.map_or(model.max_concurrent, |n| n as u32),
    })
}

/// Sets (or, with `None`, returns to the model's default) an account's limits for a model.
pub async fn set(
    db: &Db,
    account: &AccountId,
    model: &str,
    rpm: Option<u32>,
    max_concurrent: Option<u32>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO account_limits (account_id, model, rpm, max_concurrent) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (account_id, model) DO UPDATE SET rpm = excluded.rpm, max_concurrent = excluded.max_concurrent",
    )
    .bind(account.as_str())
    .bind(model)
    .bind(rpm.map(i64::from))
    .bind(max_concurrent.map(i64::from))
    .execute(&db.write)
    .await?;
    Ok(())
}
