//! The one way news travels between the parts of Easel and between nodes: a [`Bus`].
//!
//! Whatever changes durable state (a task accepted, a task's event written, a callback queued, a
//! cancel asked for) announces it on the bus with the change. On PostgreSQL the announcement is a
//! `NOTIFY` sent in the transaction that makes the change, so it arrives only once that commits,
//! and every node, the sender too, hears it through its `LISTEN` connection. On SQLite there is
//! one node and the announcement is delivered in-process once the change has committed. Polling
//! stays the fallback for a lost notification (a listener reconnecting, a node starting).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sqlx::Any;
use sqlx::postgres::PgListener;
use tokio::sync::{Notify, broadcast, mpsc};
use tokio_util::sync::CancellationToken;

use crate::db::Dialect;
use crate::ids::TaskId;

/// The PostgreSQL notification channel all nodes listen on.
pub const CHANNEL: &str = "easel_events";

const RECONNECT_PAUSE: Duration = Duration::from_secs(1);

/// News about one task, for whoever follows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskNews {
    pub task: TaskId,
    pub change: Change,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// Its event `seq` is stored; `last` when that event ends the task.
    Event { seq: i64, last: bool },
    /// Its owner asked it to stop (or its `Cancel-After` deadline passed) while it runs.
    CancelRequested,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Signal {
    /// A task can be claimed: new, or handed back by a node shutting down.
    TaskQueued,
    /// A callback delivery is due now.
    CallbackQueued,
    /// The operator switched a channel on or off: the routers read the switches again.
    ChannelsSwitched,
    Task(TaskNews),
}

impl Signal {
    pub fn event(task: &TaskId, seq: i64, last: bool) -> Self {
        Signal::Task(TaskNews { task: task.clone(), change: Change::Event { seq, last } })
    }

    pub fn cancel_requested(task: &TaskId) -> Self {
        Signal::Task(TaskNews { task: task.clone(), change: Change::CancelRequested })
    }

    fn payload(&self) -> String {
        match self {
            Signal::TaskQueued => "task_queued".into(),
            Signal::CallbackQueued => "callback_queued".into(),
            Signal::ChannelsSwitched => "channels_switched".into(),
            Signal::Task(TaskNews { task, change: Change::Event { seq, last } }) => {
                format!("task_event:{task}:{seq}:{}", if *last { "last" } else { "more" })
            }
            Signal::Task(TaskNews { task, change: Change::CancelRequested }) => format!("task_cancel:{task}"),
        }
    }

    fn parse(payload: &str) -> Option<Self> {
        match payload {
            "task_queued" => return Some(Signal::TaskQueued),
            "callback_queued" => return Some(Signal::CallbackQueued),
            "channels_switched" => return Some(Signal::ChannelsSwitched),
            _ => {}
        }
        if let Some(task) = payload.strip_prefix("task_cancel:") {
            return TaskId::parse(task).map(|task| Signal::cancel_requested(&task));
        }
        let mut parts = payload.strip_prefix("task_event:")?.split(':');
        let task = TaskId::parse(parts.next()?)?;
        let seq = parts.next()?.parse().ok()?;
        let last = match parts.next()? {
            "last" => true,
            "more" => false,
            _ => return None,
        };
        parts.next().is_none().then(|| Signal::event(&task, seq, last))
    }
}

/// Carries signals to this node's listeners: idle task workers, the callback dispatcher, the
/// router's channel switches, and everyone following a task (event streams, waiting requests,
/// the worker running it).
#[derive(Clone, Debug)]
pub struct Bus {
    dialect: Dialect,
    tasks_queued: Arc<Notify>,
    callbacks_queued: Arc<Notify>,
    channels_switched: Arc<Notify>,
    news: broadcast::Sender<TaskNews>,
    watchers: Arc<Watchers>,
}

/// Who follows which task. News of a task wakes only its own followers: with every waiting
/// request subscribed to all news, each event woke every one of them.
#[derive(Debug, Default)]
struct Watchers {
    next: AtomicU64,
    by_task: Mutex<HashMap<TaskId, Vec<Follower>>>,
}

/// One [`TaskWatch`]: its id (to unregister it) and where its task's news goes.
type Follower = (u64, mpsc::UnboundedSender<Change>);

impl Watchers {
    fn tell(&self, news: &TaskNews) {
        let by_task = self.by_task.lock().expect("not poisoned");
        for (_, follower) in by_task.get(&news.task).into_iter().flatten() {
            let _ = follower.send(news.change);
        }
    }

    fn forget(&self, task: &TaskId, id: u64) {
        let mut by_task = self.by_task.lock().expect("not poisoned");
        if let Some(followers) = by_task.get_mut(task) {
            followers.retain(|(other, _)| *other != id);
            if followers.is_empty() {
                by_task.remove(task);
            }
        }
    }
}

impl Bus {
    pub fn new(dialect: Dialect) -> Self {
        let (news, _) = broadcast::channel(4096);
        Self {
            dialect,
            tasks_queued: Arc::default(),
            callbacks_queued: Arc::default(),
            channels_switched: Arc::default(),
            news,
            watchers: Arc::default(),
        }
    }

    /// Wakes an idle task worker.
    pub fn tasks_queued(&self) -> Arc<Notify> {
        self.tasks_queued.clone()
    }

    /// Wakes the callback dispatcher.
    pub fn callbacks_queued(&self) -> Arc<Notify> {
        self.callbacks_queued.clone()
    }

    /// Tells the router to read the channel switches again.
    pub fn channels_switched(&self) -> Arc<Notify> {
        self.channels_switched.clone()
    }

    /// News of every task from now on (a slow reader misses some: it must read the store).
    pub fn subscribe(&self) -> broadcast::Receiver<TaskNews> {
        self.news.subscribe()
    }

    /// News of one task from now on, for whoever waits on it.
    pub fn watch(&self, task: &TaskId) -> TaskWatch {
        let (follower, news) = mpsc::unbounded_channel();
        let id = self.watchers.next.fetch_add(1, Ordering::Relaxed);
        let mut by_task = self.watchers.by_task.lock().expect("not poisoned");
        by_task.entry(task.clone()).or_default().push((id, follower));
        TaskWatch { task: task.clone(), id, news, watchers: self.watchers.clone() }
    }

    /// Announces `signals` with the transaction `executor` belongs to (PostgreSQL); call
    /// [`Bus::committed`] with the same signals once it commits (SQLite).
    pub async fn within<'e, E>(&self, executor: E, signals: &[Signal]) -> Result<(), sqlx::Error>
    where
        E: sqlx::Executor<'e, Database = Any>,
    {
        if self.dialect != Dialect::Postgres || signals.is_empty() {
            return Ok(());
        }
        // One round trip however many: `SELECT pg_notify(…) FROM (VALUES …)`.
        let values: Vec<String> = (0..signals.len()).map(|i| format!("(${})", i + 2)).collect();
        let sql = format!("SELECT pg_notify($1, v) FROM (VALUES {}) AS s(v)", values.join(", "));
        let mut query = sqlx::query(&sql).bind(CHANNEL);
        for signal in signals {
            query = query.bind(signal.payload());
        }
        query.execute(executor).await?;
        Ok(())
    }

    /// Delivers `signals` in this process once their change has committed (SQLite; on
    /// PostgreSQL they come back through `LISTEN`).
    pub fn committed(&self, signals: &[Signal]) {
        if self.dialect == Dialect::Sqlite {
            for signal in signals {
                self.deliver(signal.clone());
            }
        }
    }

    /// Announces `signals` outside any transaction.
    pub async fn publish<'e, E>(&self, executor: E, signals: &[Signal]) -> Result<(), sqlx::Error>
    where
        E: sqlx::Executor<'e, Database = Any>,
    {
        self.within(executor, signals).await?;
        self.committed(signals);
        Ok(())
    }

    fn deliver(&self, signal: Signal) {
        match signal {
            Signal::TaskQueued => self.tasks_queued.notify_one(),
            Signal::CallbackQueued => self.callbacks_queued.notify_one(),
            Signal::ChannelsSwitched => self.channels_switched.notify_one(),
            Signal::Task(news) => {
                self.watchers.tell(&news);
                // Nobody may be following; that is fine.
                drop(self.news.send(news));
            }
        }
    }

    /// On PostgreSQL, listens until `shutdown`, reconnecting after failures; on SQLite returns.
    pub async fn listen(self, database_url: String, shutdown: CancellationToken) {
        if self.dialect != Dialect::Postgres {
            return;
        }
        while !shutdown.is_cancelled() {
            if let Err(e) = self.listen_once(&database_url, &shutdown).await {
                tracing::warn!(error = %e, "listening for notifications failed; polling until it reconnects");
                tokio::select! {
                    _ = shutdown.cancelled() => {}
                    _ = tokio::time::sleep(RECONNECT_PAUSE) => {}
                }
            }
        }
    }

    async fn listen_once(&self, url: &str, shutdown: &CancellationToken) -> Result<(), sqlx::Error> {
        let mut listener = PgListener::connect(url).await?;
        listener.listen(CHANNEL).await?;
        // Whatever was announced while we were not listening is found by the pollers; wake them
        // now rather than after their interval. The switches are read again for the same reason.
        self.deliver(Signal::TaskQueued);
        self.deliver(Signal::CallbackQueued);
        self.deliver(Signal::ChannelsSwitched);
        loop {
            let notification = tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                received = listener.try_recv() => received?,
            };
            // `None`: the connection dropped; start over (and wake the pollers, as above).
            let Some(notification) = notification else { return Ok(()) };
            match Signal::parse(notification.payload()) {
                Some(signal) => self.deliver(signal),
                None => tracing::debug!(payload = notification.payload(), "ignoring an unknown notification"),
            }
        }
    }
}

/// One task's news (see [`Bus::watch`]); dropping it stops the following.
pub struct TaskWatch {
    task: TaskId,
    id: u64,
    news: mpsc::UnboundedReceiver<Change>,
    watchers: Arc<Watchers>,
}

impl TaskWatch {
    /// Returns when news of the task that `wanted` picks arrives, or at the latest after `poll`
    /// (news lost between nodes is found by the caller reading the store then).
    pub async fn next(&mut self, poll: Duration, wanted: impl Fn(Change) -> bool) {
        let pause = tokio::time::sleep(poll);
        tokio::pin!(pause);
        loop {
            tokio::select! {
                _ = &mut pause => return,
                heard = self.news.recv() => match heard {
                    Some(change) if wanted(change) => return,
                    Some(_) => {}
                    None => return (&mut pause).await,
                },
            }
        }
    }
}

impl Drop for TaskWatch {
    fn drop(&mut self) {
        self.watchers.forget(&self.task, self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_round_trip() {
        let id = TaskId::generate();
        for signal in [
            Signal::TaskQueued,
            Signal::CallbackQueued,
            Signal::ChannelsSwitched,
            Signal::event(&id, 7, true),
            Signal::event(&id, 1, false),
            Signal::cancel_requested(&id),
        ] {
            assert_eq!(Signal::parse(&signal.payload()), Some(signal));
        }
        assert_eq!(Signal::parse("task_event:not-an-id:1:last"), None);
        assert_eq!(Signal::parse(&format!("task_event:{id}:x:last")), None);
        assert_eq!(Signal::parse(&format!("task_event:{id}:1:last:extra")), None);
        assert_eq!(Signal::parse("something else"), None);
    }

    #[tokio::test]
    async fn on_sqlite_a_signal_arrives_only_once_committed() {
        let bus = Bus::new(Dialect::Sqlite);
        let mut news = bus.subscribe();
        let id = TaskId::generate();
        assert!(news.try_recv().is_err());
        bus.committed(&[Signal::event(&id, 2, false)]);
        assert_eq!(news.try_recv().unwrap(), TaskNews { task: id, change: Change::Event { seq: 2, last: false } });
    }

    #[tokio::test]
    async fn a_watch_hears_its_own_task_only_and_is_forgotten_when_dropped() {
        let bus = Bus::new(Dialect::Sqlite);
        let (mine, other) = (TaskId::generate(), TaskId::generate());
        let mut watch = bus.watch(&mine);
        let mut second = bus.watch(&mine);
        bus.committed(&[Signal::event(&other, 5, true), Signal::event(&mine, 3, true)]);
        let wanted = |change| change == Change::Event { seq: 3, last: true };
        // A `next` that missed the news would wait out its hour-long poll, far past the timeout.
        let hour = Duration::from_secs(3600);
        let both = async { tokio::join!(watch.next(hour, wanted), second.next(hour, wanted)) };
        tokio::time::timeout(Duration::from_secs(10), both).await.expect("both heard the news");
        assert!(watch.news.try_recv().is_err(), "the other task's news never came");
        drop((watch, second));
        assert!(bus.watchers.by_task.lock().unwrap().is_empty());
    }
}
