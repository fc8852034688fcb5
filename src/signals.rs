//! Wake-ups between nodes. A node wakes its own task workers, callback dispatcher and waiting
//! clients directly. On PostgreSQL the same events also go out with `NOTIFY`, sent in the
//! transaction that causes them (so they arrive only once it commits), and every node `LISTEN`s:
//! a task accepted on an API node starts at once on a worker node, and a client waiting on one
//! node hears of a task finished on another. Polling stays the fallback for a lost notification
//! (a listener reconnecting, a node starting).

use std::sync::Arc;
use std::time::Duration;

use sqlx::Any;
use sqlx::postgres::PgListener;
use tokio::sync::{Notify, broadcast};
use tokio_util::sync::CancellationToken;

use crate::db::Dialect;
use crate::ids::TaskId;

/// The PostgreSQL notification channel all nodes listen on.
pub const CHANNEL: &str = "easel_events";

const RECONNECT_PAUSE: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A task can be claimed: new, or handed back by a node shutting down.
    TaskQueued,
    /// A task reached `success` or `failed`.
    TaskFinished(TaskId),
    /// A callback delivery is due now.
    CallbackQueued,
}

impl Event {
    fn payload(&self) -> String {
        match self {
            Event::TaskQueued => "task_queued".into(),
            Event::TaskFinished(id) => format!("task_finished:{id}"),
            Event::CallbackQueued => "callback_queued".into(),
        }
    }

    fn parse(payload: &str) -> Option<Self> {
        match payload {
            "task_queued" => Some(Event::TaskQueued),
            "callback_queued" => Some(Event::CallbackQueued),
            _ => TaskId::parse(payload.strip_prefix("task_finished:")?).map(Event::TaskFinished),
        }
    }
}

/// Announces `event` to every node, with the commit of the transaction `executor` belongs to
/// (at once outside a transaction). Nothing to do on SQLite, where there is one node.
pub async fn notify<'e, E>(executor: E, dialect: Dialect, event: &Event) -> Result<(), sqlx::Error>
where
    E: sqlx::Executor<'e, Database = Any>,
{
    if dialect == Dialect::Postgres {
        sqlx::query("SELECT pg_notify($1, $2)").bind(CHANNEL).bind(event.payload()).execute(executor).await?;
    }
    Ok(())
}

/// What a node wakes when an event arrives.
#[derive(Clone)]
pub struct Wakers {
    pub tasks: Arc<Notify>,
    pub callbacks: Arc<Notify>,
    pub finished: broadcast::Sender<TaskId>,
}

impl Wakers {
    pub fn wake(&self, event: Event) {
        match event {
            Event::TaskQueued => self.tasks.notify_one(),
            Event::CallbackQueued => self.callbacks.notify_one(),
            // Nobody may be waiting; that is fine.
            Event::TaskFinished(id) => drop(self.finished.send(id)),
        }
    }
}

/// Listens on PostgreSQL until `shutdown`, reconnecting after failures, and wakes this node.
pub async fn listen(database_url: String, wakers: Wakers, shutdown: CancellationToken) {
    while !shutdown.is_cancelled() {
        if let Err(e) = listen_once(&database_url, &wakers, &shutdown).await {
            tracing::warn!(error = %e, "listening for notifications failed; polling until it reconnects");
            tokio::select! {
                _ = shutdown.cancelled() => {}
                _ = tokio::time::sleep(RECONNECT_PAUSE) => {}
            }
        }
    }
}

async fn listen_once(url: &str, wakers: &Wakers, shutdown: &CancellationToken) -> Result<(), sqlx::Error> {
    let mut listener = PgListener::connect(url).await?;
    listener.listen(CHANNEL).await?;
    // Whatever was announced while we were not listening is found by the pollers; wake them now
    // rather than after their interval.
    wakers.wake(Event::TaskQueued);
    wakers.wake(Event::CallbackQueued);
    loop {
        let notification = tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            received = listener.try_recv() => received?,
        };
        // `None`: the connection dropped; start over (and wake the pollers, as above).
        let Some(notification) = notification else { return Ok(()) };
        match Event::parse(notification.payload()) {
            Some(event) => wakers.wake(event),
            None => tracing::debug!(payload = notification.payload(), "ignoring an unknown notification"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_round_trip() {
        let id = TaskId::generate();
        for event in [Event::TaskQueued, Event::CallbackQueued, Event::TaskFinished(id)] {
            assert_eq!(Event::parse(&event.payload()), Some(event));
        }
        assert_eq!(Event::parse("task_finished:not-an-id"), None);
        assert_eq!(Event::parse("something else"), None);
    }
}
