//! Per-account, per-model limits: task creations per minute (GCRA) and unfinished tasks.

use std::collections::HashMap;
use std::sync::Mutex;

use serde::Serialize;
use sqlx::Row;

use crate::catalog::Model;
use crate::db::{Db, now_ms};
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
        .bind(model.id)
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

/// A refusal, with how long to wait before the next request can pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryAfter {
    pub millis: i64,
}

impl RetryAfter {
    /// Whole seconds for the `Retry-After` header, never 0.
    pub fn secs(self) -> u64 {
        (self.millis.max(1) as u64).div_ceil(1000)
    }
}

/// The generic cell rate algorithm: a request is admitted when the key's theoretical arrival
/// time (TAT) is at most `burst` intervals ahead of now. Smooth: after a burst, requests pass
/// one per interval, so no window boundary lets twice the rate through.
#[derive(Default)]
pub struct Gcra {
    tats: Mutex<HashMap<String, i64>>,
}

/// Burst allowance: one sixth of a minute's quota may arrive at once.
pub fn burst_for(per_minute: u32) -> u32 {
    per_minute.div_ceil(6).max(1)
}

const CLEANUP_EVERY: usize = 10_000;

impl Gcra {
    pub fn admit(&self, key: &str, per_minute: u32) -> Result<(), RetryAfter> {
        self.admit_at(key, per_minute, now_ms())
    }

    pub fn admit_at(&self, key: &str, per_minute: u32, now: i64) -> Result<(), RetryAfter> {
        if per_minute == 0 {
            return Err(RetryAfter { millis: 60_000 });
        }
        let interval = 60_000.0 / f64::from(per_minute);
        let tolerance = (interval * f64::from(burst_for(per_minute) - 1)) as i64;
        let interval = interval.ceil() as i64;
        let mut tats = self.tats.lock().expect("the limiter's lock is never poisoned");
        if tats.len() >= CLEANUP_EVERY {
            tats.retain(|_, tat| *tat > now);
        }
        let tat = tats.get(key).copied().unwrap_or(now).max(now);
        let allowed_at = tat - tolerance;
        if allowed_at > now {
            return Err(RetryAfter { millis: allowed_at - now });
        }
        tats.insert(key.to_owned(), tat + interval);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_one_per_interval() {
        let gcra = Gcra::default();
        let t0 = 1_000_000;
        // 60 a minute: a burst of 10, then one a second.
        for _ in 0..10 {
            assert!(gcra.admit_at("k", 60, t0).is_ok());
        }
        let refused = gcra.admit_at("k", 60, t0).unwrap_err();
        assert_eq!(refused.secs(), 1);
        assert!(gcra.admit_at("k", 60, t0 + 999).is_err());
        assert!(gcra.admit_at("k", 60, t0 + 1000).is_ok());
        assert!(gcra.admit_at("other", 60, t0).is_ok(), "keys are independent");
    }

    #[test]
    fn never_more_than_quota_plus_burst_in_a_minute() {
        let gcra = Gcra::default();
        let admitted = (0..60_000).step_by(50).filter(|t| gcra.admit_at("k", 60, *t).is_ok()).count();
        assert!(admitted <= 60 + 10, "{admitted}");
        assert!(admitted >= 60, "{admitted}");
    }
}
