//! Per-minute rate limits with the generic cell rate algorithm (GCRA): a request is admitted when
//! its key's theoretical arrival time (TAT) is at most `burst` intervals ahead of now. Smooth:
//! after a burst, requests pass one per interval, so no window boundary lets twice the rate in.
//!
//! One node keeps the TATs in memory. A cluster keeps them in Redis (`EASEL_REDIS_URL`), updated
//! by one atomic script on Redis's own clock, so every node draws on the same allowance. A TAT
//! is only rate state: it expires when it stops mattering and is never needed for correctness
//! elsewhere. Should Redis fail, a node falls back to its own memory (limits then hold per node)
//! rather than refuse all traffic.

use std::collections::HashMap;
use std::sync::Mutex;

use anyhow::Context;
use redis::aio::ConnectionManager;

use crate::db::now_ms;

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

/// Burst allowance: one sixth of a minute's quota may arrive at once.
pub fn burst_for(per_minute: u32) -> u32 {
    per_minute.div_ceil(6).max(1)
}

/// A quota as GCRA parameters, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Cell {
    interval: i64,
    tolerance: i64,
}

impl Cell {
    /// `None` for a quota of zero, which admits nothing.
    fn per_minute(per_minute: u32) -> Option<Self> {
        if per_minute == 0 {
            return None;
        }
        let interval = 60_000.0 / f64::from(per_minute);
        let tolerance = (interval * f64::from(burst_for(per_minute) - 1)) as i64;
        Some(Cell { interval: interval.ceil() as i64, tolerance })
    }
}

const ZERO_QUOTA: RetryAfter = RetryAfter { millis: 60_000 };

/// The node's own TATs.
#[derive(Default)]
pub struct Gcra {
    tats: Mutex<HashMap<String, i64>>,
}

const CLEANUP_EVERY: usize = 10_000;

impl Gcra {
    pub fn admit(&self, key: &str, per_minute: u32) -> Result<(), RetryAfter> {
        self.admit_at(key, per_minute, now_ms())
    }

    pub fn admit_at(&self, key: &str, per_minute: u32, now: i64) -> Result<(), RetryAfter> {
        let cell = Cell::per_minute(per_minute).ok_or(ZERO_QUOTA)?;
        let mut tats = self.tats.lock().expect("the limiter's lock is never poisoned");
        if tats.len() >= CLEANUP_EVERY {
            tats.retain(|_, tat| *tat > now);
        }
        let tat = tats.get(key).copied().unwrap_or(now).max(now);
        let allowed_at = tat - cell.tolerance;
        if allowed_at > now {
            return Err(RetryAfter { millis: allowed_at - now });
        }
        tats.insert(key.to_owned(), tat + cell.interval);
        Ok(())
    }
}

/// The same algorithm as [`Gcra::admit_at`], run inside Redis. Answers 0 when admitted, else
/// the milliseconds to wait. The key expires once its TAT is in the past.
const GCRA_SCRIPT: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local interval = tonumber(ARGV[1])
local tolerance = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local allowed_at = tat - tolerance
if allowed_at > now then return allowed_at - now end
local new_tat = tat + interval
redis.call('SET', KEYS[1], new_tat, 'PX', new_tat - now)
return 0
";

/// Namespace of Easel's keys in a Redis shared with other programs.
const KEY_PREFIX: &str = "easel:rate:";

/// TATs in Redis, shared by every node.
#[derive(Clone)]
pub struct RedisGcra {
    conn: ConnectionManager,
    script: redis::Script,
}

impl RedisGcra {
    pub async fn connect(url: &str) -> anyhow::Result<Self> {
        let client = redis::Client::open(url).context("parsing EASEL_REDIS_URL")?;
        let conn = ConnectionManager::new(client).await.context("connecting to Redis")?;
        Ok(Self { conn, script: redis::Script::new(GCRA_SCRIPT) })
    }

    pub async fn admit(&self, key: &str, per_minute: u32) -> Result<Result<(), RetryAfter>, redis::RedisError> {
        let Some(cell) = Cell::per_minute(per_minute) else { return Ok(Err(ZERO_QUOTA)) };
        let wait: i64 = self
            .script
            .key(format!("{KEY_PREFIX}{key}"))
            .arg(cell.interval)
            .arg(cell.tolerance)
            .invoke_async(&mut self.conn.clone())
            .await?;
        Ok(if wait > 0 { Err(RetryAfter { millis: wait }) } else { Ok(()) })
    }

    pub async fn ping(&self) -> Result<(), redis::RedisError> {
        redis::cmd("PING").query_async::<String>(&mut self.conn.clone()).await.map(drop)
    }
}

/// The limiter a node uses: its own memory, or Redis with its own memory as the fallback.
#[derive(Default)]
pub struct RateLimiter {
    local: Gcra,
    shared: Option<RedisGcra>,
}

impl RateLimiter {
    /// With `redis_url`, connects to Redis (failing start-up if it cannot be reached, since a
    /// misspelled URL would otherwise quietly turn cluster limits into per-node ones).
    pub async fn new(redis_url: Option<&str>) -> anyhow::Result<Self> {
        let shared = match redis_url {
            Some(url) => Some(RedisGcra::connect(url).await?),
            None => None,
        };
        Ok(Self { local: Gcra::default(), shared })
    }

    pub fn is_shared(&self) -> bool {
        self.shared.is_some()
    }

    pub async fn admit(&self, key: &str, per_minute: u32) -> Result<(), RetryAfter> {
        if let Some(shared) = &self.shared {
            match shared.admit(key, per_minute).await {
                Ok(verdict) => return verdict,
                Err(e) => tracing::warn!(error = %e, "Redis rate limit failed; limiting on this node alone"),
            }
        }
        self.local.admit(key, per_minute)
    }

    /// Whether the shared store answers (trivially, when there is none).
    pub async fn ping_shared(&self) -> Result<(), redis::RedisError> {
        match &self.shared {
            Some(shared) => shared.ping().await,
            None => Ok(()),
        }
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

    #[test]
    fn a_zero_quota_admits_nothing() {
        assert_eq!(Gcra::default().admit_at("k", 0, 5), Err(ZERO_QUOTA));
    }
}
