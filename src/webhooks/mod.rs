//! Callbacks: a durable outbox of deliveries, sent by a dispatcher in three stages (prepare the
//! signed request, send it through the egress guard, handle the result) on the seeds' schedule.

pub mod signing;
pub mod store;

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::accounts::Accounts;
use crate::api::apixo::result_json;
use crate::api::house::Envelope;
use crate::catalog::Catalog;
use crate::claim_loop;
use crate::config::WebhookConfig;
use crate::db::Db;
use crate::db::now_ms;
use crate::egress::Egress;
use crate::ids::{AccountId, TaskId};
use crate::storage::ResultLinks;
use crate::tasks::TaskStore;
use crate::tasks::{Dialect, Task};
use store::{Delivery, Next};

/// When to try again: quick retries first, then doubling gaps up to a ceiling, all within a
/// window that starts at the first attempt.
#[derive(Debug, Clone)]
pub struct Schedule {
    pub quick: Vec<Duration>,
    pub max_gap: Duration,
    pub window: Duration,
    pub timeout: Duration,
}

impl Schedule {
    pub fn from_config(c: &WebhookConfig) -> Self {
        Self {
            quick: c.retry_delays_ms.iter().map(|ms| Duration::from_millis(*ms)).collect(),
            max_gap: Duration::from_secs(c.max_gap_secs),
            window: Duration::from_secs(c.retry_window_secs),
            timeout: Duration::from_secs(c.attempt_timeout_secs),
        }
    }

    /// The gap after the `done`-th failed attempt (1-based).
    fn gap(&self, done: u32) -> Duration {
        let i = done.max(1) as usize - 1;
        if let Some(quick) = self.quick.get(i) {
            return *quick;
        }
        let last = self.quick.last().copied().unwrap_or(Duration::from_secs(1));
        let doublings = (i + 1 - self.quick.len()).min(30) as u32;
        last.saturating_mul(2u32.saturating_pow(doublings)).min(self.max_gap)
    }

    /// What follows a failed attempt made at `now` by a delivery whose window began at `first`.
    pub fn after_failure(&self, done: u32, first: i64, now: i64) -> Next {
        let window_end = first + self.window.as_millis() as i64;
        if now >= window_end {
            return Next::Failed;
        }
        Next::RetryAt((now + self.gap(done).as_millis() as i64).min(window_end))
    }
}

/// A callback's `data` in either task dialect: the task's status plus `model` and `param`, every
/// key present. The dialects differ only in how they name the model and spell the state.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CallbackData<S> {
    task_id: String,
    model: String,
    state: S,
    param: String,
    result_json: Option<String>,
    fail_code: Option<String>,
    fail_msg: Option<String>,
    cost_time: Option<i64>,
    complete_time: Option<i64>,
    create_time: i64,
}

impl<S> CallbackData<S> {
    pub fn new(links: &ResultLinks, task: &Task, model: String, task_state: S) -> Self {
        Self {
            task_id: task.id.to_string(),
            model,
            state: task_state,
            param: task.param.clone(),
            result_json: result_json(links, task),
            fail_code: task.fail_code.clone(),
            fail_msg: task.fail_msg.clone(),
            cost_time: task.completed_at.map(|done| done - task.created_at),
            complete_time: task.completed_at,
            create_time: task.created_at,
        }
    }
}

/// The callback body in the dialect the task was created in.
pub fn payload(links: &ResultLinks, catalog: &Catalog, task: &Task) -> Vec<u8> {
    match task.dialect {
        Dialect::Unified => crate::api::unified::callback_payload(links, catalog, task),
        Dialect::Apixo | Dialect::OpenAi => {
            let data = CallbackData::new(links, task, task.model.clone(), task.state);
            serde_json::to_vec(&Envelope { code: 200, message: "success".into(), data }).expect("callbacks serialize")
        }
    }
}

/// Sends callbacks: reads tasks and accounts, renders each body in its task's dialect with
/// signed result links, and records every attempt in the outbox.
pub struct Dispatcher {
    pub db: Db,
    pub tasks: TaskStore,
    pub accounts: Accounts,
    pub links: ResultLinks,
    pub catalog: Arc<Catalog>,
    /// Deliveries in flight at once (`[webhooks] dispatch_slots`).
    pub slots: usize,
    pub egress: Egress,
    pub schedule: Schedule,
    pub wake: Arc<Notify>,
}

const LEASE_MS: i64 = 60_000;
const IDLE_POLL: Duration = Duration::from_millis(500);

/// A delivery ready to go: everything the send stage needs.
struct Prepared {
    body: Vec<u8>,
    headers: Vec<(String, String)>,
}

impl Dispatcher {
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        let slots = self.slots;
        // One at a time: each claim weighs the accounts' shares anew.
        let db = &self.db;
        let claim = |_free| async move {
            let delivery = store::claim(db, LEASE_MS, slots).await?;
            Ok::<_, sqlx::Error>(claim_loop::Claimed::of(delivery.into_iter().collect(), 1))
        };
        let work = |delivery| {
            let this = self.clone();
            async move {
                this.deliver(delivery).await;
                // A slot is free, and its account may be under its cap again.
                this.wake.notify_one();
            }
        };
        let idle = || self.until_next_due();
        let capacity = claim_loop::Slots { total: slots, most_per_claim: 1 };
        claim_loop::run("a callback", capacity, shutdown, self.wake.clone(), claim, work, idle).await;
    }

    async fn until_next_due(&self) -> Duration {
        match store::next_due(&self.db).await {
            Ok(Some(at)) => Duration::from_millis((at - now_ms()).clamp(0, IDLE_POLL.as_millis() as i64) as u64),
            _ => IDLE_POLL,
        }
    }

    #[tracing::instrument(skip_all, fields(delivery = %delivery.id, task = %delivery.task_id, attempt = delivery.attempts + 1))]
    async fn deliver(&self, delivery: Delivery) {
        let started_at = now_ms();
        let outcome = match self.prepare(&delivery, started_at).await {
            Ok(prepared) => self.send(&delivery, prepared).await,
            Err(e) => Err(e),
        };
        let latency_ms = now_ms() - started_at;
        let next = match &outcome {
            Ok(status) if (200..300).contains(status) => Next::Delivered,
            Ok(410) => Next::Failed,
            _ => self.schedule.after_failure(
                delivery.attempts + 1,
                delivery.first_attempt_at.unwrap_or(started_at),
                now_ms(),
            ),
        };
        tracing::info!(outcome = ?outcome, next = ?next, "callback attempt");
        if let Err(e) = store::record(&self.db, &delivery, started_at, &outcome, latency_ms, next).await {
            tracing::error!(error = %e, "recording a callback attempt failed; it will be retried when its lease ends");
        }
    }

    /// Stage 1: the body (the same bytes on every attempt) and its signature for this attempt.
    async fn prepare(&self, delivery: &Delivery, started_at: i64) -> Result<Prepared, String> {
        let task_id = TaskId::parse(&delivery.task_id).ok_or("corrupt task id")?;
        let account = AccountId::parse(&delivery.account_id).ok_or("corrupt account id")?;
        let task = self.tasks.get_for_account(&task_id, &account).await.map_err(|e| e.to_string())?;
        let task = task.ok_or("the task no longer exists")?;
        let body = match &delivery.event {
            // An event on the way: the task as it was then, running and without results.
            Some(_) => payload(&self.links, &self.catalog, &task.while_running()),
            // A final delivery is queued in the transaction that ends its task, so this holds;
            // should the row read otherwise, the attempt fails and is retried rather than
            // sending a non-final state.
            None if !task.state.is_terminal() => {
                return Err(format!("the task is still {}; its final callback waits for its end", task.state.as_str()));
            }
            None => payload(&self.links, &self.catalog, &task),
        };
        let secret = self.accounts.get(&account).await.map_err(|e| e.to_string())?.webhook_secret;
        let mut headers = signing::headers(&secret, &delivery.id, started_at / 1000, &body);
        headers.push(("content-type".into(), "application/json".into()));
        // Which event this is: `started`, `progress`, or the final `completed`.
        headers.push(("easel-event".into(), delivery.event.clone().unwrap_or_else(|| "completed".into())));
        Ok(Prepared { body, headers })
    }

    /// Stage 2: one POST through the egress guard, bounded by the attempt timeout.
    async fn send(&self, delivery: &Delivery, prepared: Prepared) -> Result<u16, String> {
        let started = Instant::now();
        let result =
            self.egress.post_json(&delivery.url, &prepared.headers, prepared.body, self.schedule.timeout).await;
        tracing::debug!(elapsed_ms = started.elapsed().as_millis() as u64, "callback sent");
        result.map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seeds_schedule() -> Schedule {
        Schedule::from_config(&WebhookConfig::default())
    }

    #[test]
    fn quick_retries_then_doubling_gaps_within_the_window() {
        let s = seeds_schedule();
        let t0 = 1_000_000;
        assert_eq!(s.after_failure(1, t0, t0), Next::RetryAt(t0 + 1000));
        assert_eq!(s.after_failure(2, t0, t0 + 1000), Next::RetryAt(t0 + 3000));
        assert_eq!(s.after_failure(3, t0, t0 + 3000), Next::RetryAt(t0 + 7000));
        assert_eq!(s.after_failure(4, t0, t0 + 7000), Next::RetryAt(t0 + 15_000));
        assert_eq!(s.gap(20), Duration::from_secs(300), "gaps stop growing at max_gap");
        // The last retry lands on the window's end, and nothing comes after it.
        let end = t0 + 1_800_000;
        assert_eq!(s.after_failure(12, t0, end - 10_000), Next::RetryAt(end));
        assert_eq!(s.after_failure(13, t0, end), Next::Failed);
    }
}
