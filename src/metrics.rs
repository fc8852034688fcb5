//! `GET /metrics` in the Prometheus text format. Counts that live in the database (tasks,
//! deliveries, ledger) are read from it, so every node reports the same truth and nothing is
//! lost on restart; channel health is this process's own.

use std::fmt::Write;

use sqlx::Row;

use crate::accounts::rate::RateLimiter;
use crate::db::Db;
use crate::routing::{BreakerState, Router};
use crate::tasks::TaskStore;

/// What the metrics are read from.
pub struct Sources<'a> {
    pub db: &'a Db,
    pub tasks: &'a TaskStore,
    pub router: &'a Router,
    pub limiter: &'a RateLimiter,
}

fn label(value: &str) -> String {
    value.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

pub async fn render(state: Sources<'_>) -> anyhow::Result<String> {
    let mut out = String::new();

    header(&mut out, "easel_tasks", "gauge", "Tasks by model, state and the channel that last worked on them.");
    for (model, task_state, channel, n) in state.tasks.counts().await? {
        let channel = channel.unwrap_or_default();
        let _ = writeln!(
            out,
            "easel_tasks{{model=\"{}\",state=\"{}\",channel=\"{}\"}} {n}",
            label(&model),
            label(&task_state),
            label(&channel)
        );
    }

    let channels = state.router.status();
    header(&mut out, "easel_channel_breaker_state", "gauge", "1 for the circuit breaker state each channel is in.");
    for c in &channels {
        for (name, s) in
            [("closed", BreakerState::Closed), ("open", BreakerState::Open), ("half_open", BreakerState::HalfOpen)]
        {
            let _ = writeln!(
                out,
                "easel_channel_breaker_state{{channel=\"{}\",state=\"{name}\"}} {}",
                label(&c.id),
                u8::from(c.breaker == s)
            );
        }
    }
    header(&mut out, "easel_channel_in_flight", "gauge", "Tasks each channel is working on now.");
    for c in &channels {
        let _ = writeln!(out, "easel_channel_in_flight{{channel=\"{}\"}} {}", label(&c.id), c.in_flight);
    }
    header(&mut out, "easel_upstream_requests_total", "counter", "Tries on each channel by result.");
    for c in &channels {
        let id = label(&c.id);
        let _ = writeln!(out, "easel_upstream_requests_total{{channel=\"{id}\",result=\"ok\"}} {}", c.successes);
        let _ = writeln!(out, "easel_upstream_requests_total{{channel=\"{id}\",result=\"retryable\"}} {}", c.failures);
    }
    header(&mut out, "easel_upstream_latency_seconds", "histogram", "Time of each try on a channel.");
    for channel in &state.router.channels {
        let id = label(&channel.id);
        let (buckets, count, sum) = channel.health.latency.snapshot();
        for (bound, n) in buckets {
            let _ = writeln!(out, "easel_upstream_latency_seconds_bucket{{channel=\"{id}\",le=\"{bound}\"}} {n}");
        }
        let _ = writeln!(out, "easel_upstream_latency_seconds_bucket{{channel=\"{id}\",le=\"+Inf\"}} {count}");
        let _ = writeln!(out, "easel_upstream_latency_seconds_sum{{channel=\"{id}\"}} {sum}");
        let _ = writeln!(out, "easel_upstream_latency_seconds_count{{channel=\"{id}\"}} {count}");
    }

    if let Some(redis) = state.limiter.shared_health() {
        header(
            &mut out,
            "easel_redis_up",
            "gauge",
            "1 while the shared rate limiter's Redis answers, 0 while it is away.",
        );
        let _ = writeln!(out, "easel_redis_up {}", u8::from(redis.up));
        header(&mut out, "easel_redis_outages_total", "counter", "Times Redis went away since this process started.");
        let _ = writeln!(out, "easel_redis_outages_total {}", redis.outages);
        header(
            &mut out,
            "easel_rate_limit_local_decisions_total",
            "counter",
            "Rate-limit decisions this node made alone because Redis was away.",
        );
        let _ = writeln!(out, "easel_rate_limit_local_decisions_total {}", redis.local_decisions);
    }

    header(&mut out, "easel_webhook_deliveries", "gauge", "Callback deliveries by state.");
    let rows = sqlx::query("SELECT state, COUNT(*) AS n FROM webhook_deliveries GROUP BY state ORDER BY 1")
        .fetch_all(&state.db.read)
        .await?;
    for r in rows {
        let (s, n): (String, i64) = (r.try_get("state")?, r.try_get("n")?);
        let _ = writeln!(out, "easel_webhook_deliveries{{state=\"{}\"}} {n}", label(&s));
    }
    header(&mut out, "easel_webhook_attempts_total", "counter", "Callback attempts made.");
    let attempts: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM webhook_attempts").fetch_one(&state.db.read).await?;
    let _ = writeln!(out, "easel_webhook_attempts_total {attempts}");

    header(&mut out, "easel_ledger_usd_total", "counter", "Money moved through the ledger, by kind, in USD.");
    let rows =
        sqlx::query("SELECT kind, CAST(SUM(amount_micros) AS BIGINT) AS total FROM ledger GROUP BY kind ORDER BY 1")
            .fetch_all(&state.db.read)
            .await?;
    for r in rows {
        let kind: String = r.try_get("kind")?;
        let total = crate::money::Micros(r.try_get::<Option<i64>, _>("total")?.unwrap_or(0));
        let _ = writeln!(out, "easel_ledger_usd_total{{kind=\"{}\"}} {}", label(&kind), total.to_usd());
    }
    Ok(out)
}
