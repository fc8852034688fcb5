//! Per-minute rate limits with the generic cell rate algorithm (GCRA): a request is admitted when
//! its key's theoretical arrival time (TAT) is at most `burst` intervals ahead of now. Smooth:
//! after a burst, requests pass one per interval, so no window boundary lets twice the rate in.
//!
//! One node keeps the TATs in memory. A cluster keeps them in Redis (`EASEL_REDIS_URL`), updated
//! by one atomic script on Redis's own clock, so every node draws on the same allowance. A TAT
//! is only rate state: it expires when it stops mattering and is never needed for correctness
//! elsewhere. Should Redis fail, a node falls back to its own memory (limits then hold per node)
//! rather than refuse all traffic or wait on Redis: see [`RedisGcra`].

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use anyhow::Context;
use redis::AsyncConnectionConfig;
use redis::aio::MultiplexedConnection;

use crate::config::RedisConfig;
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

/// TATs in Redis, shared by every node, behind a breaker: every exchange is bounded by the
/// `[redis]` timeouts, and after a failure Redis counts as away. While it is away no request
/// waits on it (the node limits on its own), and one background probe reconnects; the outage
/// and the recovery are each logged once.
pub struct RedisGcra {
    client: redis::Client,
    settings: RedisConfig,
    script: redis::Script,
    /// The live connection, or `None` while Redis is away.
    conn: RwLock<Option<MultiplexedConnection>>,
    probing: AtomicBool,
    outages: AtomicU64,
    local_decisions: AtomicU64,
}

/// The breaker's counters, for `/metrics`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SharedHealth {
    pub up: bool,
    /// Times Redis went away since start.
    pub outages: u64,
    /// Limit decisions made on this node alone because Redis was away.
    pub local_decisions: u64,
}

impl RedisGcra {
    /// Connects within `connect_timeout_ms` and checks that Redis answers.
    pub async fn connect(url: &str, settings: &RedisConfig) -> anyhow::Result<Arc<Self>> {
        let client = redis::Client::open(url).context("parsing EASEL_REDIS_URL")?;
        let this = Arc::new(Self {
            client,
            settings: settings.clone(),
            script: redis::Script::new(GCRA_SCRIPT),
            conn: RwLock::new(None),
            probing: AtomicBool::new(false),
            outages: AtomicU64::new(0),
            local_decisions: AtomicU64::new(0),
        });
        let conn = this.open().await.with_context(|| {
            format!(
                "Redis (EASEL_REDIS_URL) did not answer within {} ms; start it, or unset EASEL_REDIS_URL \
                 to limit on each node alone",
                settings.connect_timeout_ms + settings.command_timeout_ms
            )
        })?;
        *this.conn.write().expect("never poisoned") = Some(conn);
        Ok(this)
    }

    fn command_timeout(&self) -> Duration {
        Duration::from_millis(self.settings.command_timeout_ms.max(1))
    }

    /// A new connection that has answered a PING, each step within its timeout.
    async fn open(&self) -> anyhow::Result<MultiplexedConnection> {
        let connect = Duration::from_millis(self.settings.connect_timeout_ms.max(1));
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(connect))
            .set_response_timeout(Some(self.command_timeout()));
        let opening = self.client.get_multiplexed_async_connection_with_config(&config);
        let mut conn = tokio::time::timeout(connect, opening).await.context("connect timed out")??;
        bounded(self.command_timeout(), redis::cmd("PING").query_async::<String>(&mut conn)).await?;
        Ok(conn)
    }

    fn current(&self) -> Option<MultiplexedConnection> {
        self.conn.read().expect("never poisoned").clone()
    }

    pub fn is_up(&self) -> bool {
        self.conn.read().expect("never poisoned").is_some()
    }

    pub fn health(&self) -> SharedHealth {
        SharedHealth {
            up: self.is_up(),
            outages: self.outages.load(Ordering::Relaxed),
            local_decisions: self.local_decisions.load(Ordering::Relaxed),
        }
    }

    /// `None` when Redis is away (or went away on this call): the caller decides locally.
    pub async fn admit(self: &Arc<Self>, key: &str, per_minute: u32) -> Option<Result<(), RetryAfter>> {
        let Some(cell) = Cell::per_minute(per_minute) else { return Some(Err(ZERO_QUOTA)) };
        let Some(mut conn) = self.current() else {
            self.local_decisions.fetch_add(1, Ordering::Relaxed);
            return None;
        };
        let mut invocation = self.script.key(format!("{KEY_PREFIX}{key}"));
        invocation.arg(cell.interval).arg(cell.tolerance);
        match bounded(self.command_timeout(), invocation.invoke_async::<i64>(&mut conn)).await {
            Ok(wait) => Some(if wait > 0 { Err(RetryAfter { millis: wait }) } else { Ok(()) }),
            Err(e) => {
                self.went_away(&e);
                self.local_decisions.fetch_add(1, Ordering::Relaxed);
                None
            }
        }
    }

    /// Whether Redis answers now; a failure opens the breaker like any other.
    pub async fn ping(self: &Arc<Self>) -> bool {
        let Some(mut conn) = self.current() else { return false };
        match bounded(self.command_timeout(), redis::cmd("PING").query_async::<String>(&mut conn)).await {
            Ok(_) => true,
            Err(e) => {
                self.went_away(&e);
                false
            }
        }
    }

    /// Opens the breaker (once per outage) and starts the probe that closes it again.
    fn went_away(self: &Arc<Self>, error: &anyhow::Error) {
        if self.conn.write().expect("never poisoned").take().is_some() {
            self.outages.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(
                error = format!("{error:#}"),
                "Redis is unreachable; rate limits hold per node until it answers"
            );
        }
        if self.probing.swap(true, Ordering::AcqRel) {
            return;
        }
        let weak = Arc::downgrade(self);
        let every = Duration::from_millis(self.settings.retry_interval_ms.max(1));
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                // The limiter is gone (its server stopped): nothing left to reconnect for.
                let Some(this) = weak.upgrade() else { return };
                if let Ok(conn) = this.open().await {
                    // Before the connection is published, so a failure on it starts a new probe.
                    this.probing.store(false, Ordering::Release);
                    *this.conn.write().expect("never poisoned") = Some(conn);
                    tracing::info!("Redis answers again; rate limits are shared across nodes again");
                    return;
                }
            }
        });
    }
}

/// Runs a Redis exchange within `limit` (the client's own response timeout is the first bound;
/// this one also covers what it does not, such as loading the script).
async fn bounded<T>(limit: Duration, exchange: impl Future<Output = redis::RedisResult<T>>) -> anyhow::Result<T> {
    match tokio::time::timeout(limit, exchange).await {
        Ok(result) => Ok(result?),
        Err(_) => anyhow::bail!("no answer within {} ms", limit.as_millis()),
    }
}

/// What `/readyz` says of Redis while it is away: the node still serves, with per-node limits.
pub const REDIS_AWAY: &str = "unreachable, limiting per node";

/// The limiter a node uses: its own memory, or Redis with its own memory as the fallback.
#[derive(Default)]
pub struct RateLimiter {
    local: Gcra,
    shared: Option<Arc<RedisGcra>>,
}

impl RateLimiter {
    /// With `redis_url`, connects to Redis within the `[redis]` timeouts, failing start-up if
    /// it cannot be reached: a misspelled URL would otherwise quietly turn cluster limits into
    /// per-node ones. Once running, an outage only degrades limits to per node.
    pub async fn new(redis_url: Option<&str>, settings: &RedisConfig) -> anyhow::Result<Self> {
        let shared = match redis_url {
            Some(url) => Some(RedisGcra::connect(url, settings).await?),
            None => None,
        };
        Ok(Self { local: Gcra::default(), shared })
    }

    pub fn is_shared(&self) -> bool {
        self.shared.is_some()
    }

    pub async fn admit(&self, key: &str, per_minute: u32) -> Result<(), RetryAfter> {
        if let Some(shared) = &self.shared
            && let Some(verdict) = shared.admit(key, per_minute).await
        {
            return verdict;
        }
        self.local.admit(key, per_minute)
    }

    /// Redis's state for `/readyz`: `None` without Redis, else `ok` or [`REDIS_AWAY`].
    pub async fn shared_status(&self) -> Option<&'static str> {
        let shared = self.shared.as_ref()?;
        Some(if shared.ping().await { "ok" } else { REDIS_AWAY })
    }

    /// The breaker's counters, when Redis is configured.
    pub fn shared_health(&self) -> Option<SharedHealth> {
        self.shared.as_ref().map(|s| s.health())
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
