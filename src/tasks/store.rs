//! Durable task rows. A task is committed, with its credit hold, before its id is returned;
//! workers own a task through a lease token that every later write must present.

use std::sync::Arc;

use sqlx::any::AnyRow;
use sqlx::{Any, Row, Transaction};

use serde_json::{Value, json};

use super::ended::EndedTasks;
use super::events::{self, EventKind};
use super::group_commit::Writer;
use super::idempotency::{self, Idempotency};
use super::{CallbackEvents, ChannelAttempt, Dialect, FailCode, LifeState, NewTask, Task, TaskState};
use crate::accounts::{ledger, usage};
use crate::catalog::price::{ImageFacts, Tariff};
use crate::catalog::{Routing, TaskSpec};
use crate::db::{self, Db, now_ms};
use crate::ids::{AccountId, TaskId};
use crate::money::Micros;
use crate::signals::{Bus, Signal};
use crate::webhooks;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("Insufficient credits")]
    InsufficientCredits,
    #[error("concurrency limit reached: {limit} unfinished tasks")]
    ConcurrencyLimit { limit: u32 },
    /// The database cannot take writes for now (see [`db::is_unavailable`]); nothing was written.
    #[error("the database cannot take writes for now: {0}")]
    Unavailable(#[source] sqlx::Error),
    #[error(transparent)]
    Db(sqlx::Error),
    #[error("corrupt task row: {0}")]
    Corrupt(String),
    #[error("the task writer has stopped")]
    Stopped,
}

/// Which of an account's tasks to list; `None` keys take any.
#[derive(Debug, Clone, Copy, Default)]
pub struct TaskFilter<'a> {
    pub state: Option<LifeState>,
    pub model: Option<&'a str>,
    /// Created at or after, in Unix milliseconds.
    pub since: Option<i64>,
    /// Created before, in Unix milliseconds.
    pub until: Option<i64>,
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        if db::is_unavailable(&e) { StoreError::Unavailable(e) } else { StoreError::Db(e) }
    }
}

/// How a finished task ends.
#[derive(Debug, Clone)]
pub enum Outcome {
    /// The stored images, and what each was (for its price), in the same order.
    Success {
        result_keys: Vec<String>,
        images: Vec<ImageFacts>,
    },
    Failed {
        code: FailCode,
        message: String,
    },
    /// Stopped before it ended (its owner, its `Cancel-After` deadline): the images stored by
    /// then are kept and charged, the rest of the hold released.
    Cancelled {
        result_keys: Vec<String>,
        images: Vec<ImageFacts>,
        message: String,
    },
}

/// Why a cancelled task stopped, as its `failMsg` says.
pub const CANCELLED_BY_OWNER: &str = "cancelled by its owner";
pub const CANCELLED_AT_DEADLINE: &str = "cancelled: its Cancel-After deadline passed";

impl Outcome {
    /// A cancel of a task that has not started: nothing made, nothing charged.
    pub fn cancelled_waiting(why: &str) -> Self {
        Outcome::Cancelled { result_keys: Vec::new(), images: Vec::new(), message: why.to_owned() }
    }

    /// The event that tells of it.
    pub fn event(&self) -> EventKind {
        match self {
            Outcome::Success { .. } => EventKind::Succeeded,
            Outcome::Failed { .. } => EventKind::Failed,
            Outcome::Cancelled { .. } => EventKind::Cancelled,
        }
    }
}

/// Who may end a task: the worker holding its lease, or (for a cancel while it waits in the
/// queue) nobody yet, so only while it is still pending.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Holder {
    Lease(String),
    Queue,
}

/// Something a running task reports on the way, under its worker's lease.
#[derive(Debug, Clone)]
pub struct Note {
    pub kind: EventKind,
    pub data: Value,
    /// The channel now serving it (with `started`).
    pub channel: Option<String>,
    /// The provider's own progress, 0-100 (with `progress`).
    pub percent: Option<u32>,
}

/// What the lease renewal found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lease {
    Kept { cancel_requested: bool },
    Lost,
}

/// What a new task must pass besides its credit hold.
#[derive(Debug, Clone, Copy)]
pub struct Admission<'a> {
    pub timeout_ms: i64,
    /// Unfinished tasks the account may have of this model; `None` when limits are off.
    pub max_concurrent: Option<u32>,
    pub idempotency: Option<&'a Idempotency>,
}

#[derive(Clone, Debug)]
pub struct TaskStore {
    db: Db,
    ended: Arc<EndedTasks>,
    /// On SQLite, creations and finishes go through one writer that commits them in groups.
    writer: Option<Writer>,
    bus: Bus,
}

/// The columns a finish writes, from the task and how it ended.
pub(super) struct Ending<'a> {
    pub state: TaskState,
    pub result_keys: Option<String>,
    pub fail_code: Option<&'static str>,
    pub fail_msg: Option<&'a str>,
    /// Images delivered and charged: never more than were asked for (and held).
    pub delivered: u32,
    /// What they cost, each at its own price and at most its hold.
    pub charge: Micros,
    /// The channels it was tried on (written with the end rather than a statement of its own),
    /// and the last of them; `None` leaves what is stored.
    pub channel_log: Option<String>,
    pub served_by: Option<&'a str>,
}

impl<'a> Ending<'a> {
    pub fn of(task: &'a Task, outcome: &'a Outcome) -> Result<Self, StoreError> {
        let tried = &task.channel_log;
        let channel_log = (!tried.is_empty()).then(|| serde_json::to_string(tried)).transpose().map_err(corrupt)?;
        let served_by = tried.last().map(|a| a.channel.as_str());
        let kept = |result_keys: &Vec<String>, images: &[ImageFacts]| -> Result<_, StoreError> {
            let delivered = result_keys.len().min(task.requested_images as usize);
            let keys = Some(serde_json::to_string(&result_keys[..delivered]).map_err(corrupt)?);
            let charge = task.charge_for(&images[..delivered.min(images.len())], delivered as u32);
            Ok((keys, delivered as u32, charge))
        };
        Ok(match outcome {
            Outcome::Success { result_keys, images } => {
                let (result_keys, delivered, charge) = kept(result_keys, images)?;
                Ending {
                    state: TaskState::Success,
                    result_keys,
                    fail_code: None,
                    fail_msg: None,
                    delivered,
                    charge,
                    channel_log,
                    served_by,
                }
            }
            Outcome::Cancelled { result_keys, images, message } => {
                let (result_keys, delivered, charge) = kept(result_keys, images)?;
                Ending {
                    state: TaskState::Failed,
                    result_keys,
                    fail_code: Some(FailCode::Cancelled.as_str()),
                    fail_msg: Some(message),
                    delivered,
                    charge,
                    channel_log,
                    served_by,
                }
            }
            Outcome::Failed { code, message } => Ending {
                state: TaskState::Failed,
                result_keys: None,
                fail_code: Some(code.as_str()),
                fail_msg: Some(message),
                delivered: 0,
                charge: Micros::ZERO,
                channel_log,
                served_by,
            },
        })
    }
}

const COLUMNS: &str = "id, account_id, model, dialect, state, spec, param, routing, callback_url, requested_images, \
     delivered_images, price_micros, result_keys, fail_code, fail_msg, attempts, interruptions, created_at, completed_at, deadline_at, \
     upstream_task_id, upstream_channel, channel_log, tariff, charged_micros, files_purged_at, cancel_at, \
     cancel_requested_at, callback_events, progress_percent";

fn corrupt(e: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(e.to_string())
}

fn task_from_row(row: &AnyRow) -> Result<Task, StoreError> {
    let state: String = row.try_get("state")?;
    let routing: String = row.try_get("routing")?;
    let spec: String = row.try_get("spec")?;
    let result_keys: Option<String> = row.try_get("result_keys")?;
    Ok(Task {
        id: TaskId::from_db(row.try_get("id")?),
        account_id: AccountId::from_db(row.try_get("account_id")?),
        model: row.try_get("model")?,
        dialect: {
            let d: String = row.try_get("dialect")?;
            Dialect::parse(&d).ok_or_else(|| corrupt(format!("dialect {d:?}")))?
        },
        state: TaskState::parse(&state).ok_or_else(|| corrupt(format!("state {state:?}")))?,
        spec: serde_json::from_str(&spec).map_err(corrupt)?,
        param: row.try_get("param")?,
        routing: Routing::parse(&routing).ok_or_else(|| corrupt(format!("routing {routing:?}")))?,
        callback_url: row.try_get("callback_url")?,
        requested_images: row.try_get::<i64, _>("requested_images")? as u32,
        delivered_images: row.try_get::<Option<i64>, _>("delivered_images")?.map(|n| n as u32),
        price: Micros(row.try_get("price_micros")?),
        tariff: row
            .try_get::<Option<String>, _>("tariff")?
            .map(|t| serde_json::from_str::<Tariff>(&t))
            .transpose()
            .map_err(corrupt)?,
        charged: row.try_get::<Option<i64>, _>("charged_micros")?.map(Micros),
        files_purged_at: row.try_get("files_purged_at")?,
        result_keys: result_keys.map(|k| serde_json::from_str(&k)).transpose().map_err(corrupt)?.unwrap_or_default(),
        fail_code: row.try_get("fail_code")?,
        fail_msg: row.try_get("fail_msg")?,
        attempts: row.try_get::<i64, _>("attempts")? as u32,
        interruptions: row.try_get::<i64, _>("interruptions")? as u32,
        created_at: row.try_get("created_at")?,
        completed_at: row.try_get("completed_at")?,
        deadline_at: row.try_get("deadline_at")?,
        upstream_task_id: row.try_get("upstream_task_id")?,
        upstream_channel: row.try_get("upstream_channel")?,
        channel_log: row
            .try_get::<Option<String>, _>("channel_log")?
            .map(|log| serde_json::from_str(&log))
            .transpose()
            .map_err(corrupt)?
            .unwrap_or_default(),
        cancel_at: row.try_get("cancel_at")?,
        cancel_requested_at: row.try_get("cancel_requested_at")?,
        callback_events: CallbackEvents::from_stored(row.try_get::<Option<String>, _>("callback_events")?.as_deref()),
        progress_percent: row.try_get::<Option<i64>, _>("progress_percent")?.map(|p| p.clamp(0, 100) as u32),
    })
}

/// Lease tokens are `<node id>.<random>`, so that a lease names the node holding it.
pub fn lease_token(node: &str) -> String {
    format!("{node}.{}", crate::ids::random_hex::<12>())
}

fn node_of(token: &str) -> Option<&str> {
    token.split_once('.').map(|(node, _)| node)
}

impl TaskStore {
    /// A store on `db` that announces its changes on `bus`; this starts the group-commit
    /// writer, so call it in a runtime.
    pub fn new(db: Db, bus: Bus) -> Self {
        let alone = Self { db: db.clone(), ended: Arc::default(), writer: None, bus };
        Self { writer: Some(Writer::start(db, alone.clone())), ..alone }
    }

    /// Holds `images × price`, checks the account's unfinished tasks against `max_concurrent`,
    /// inserts the task and completes its idempotency key, all in one transaction. When this
    /// returns, the task is durable; when it fails, nothing was written.
    #[tracing::instrument(skip_all, fields(account = %new.account_id, model = %new.spec.model))]
    pub async fn create(&self, new: &NewTask, admission: &Admission<'_>) -> Result<TaskId, StoreError> {
        let created = match &self.writer {
            Some(writer) => writer.create(new, admission).await,
            None => self.create_in_own_transaction(new, admission).await,
        };
        self.note_write(&created);
        created
    }

    /// Tells `/readyz` whether task writes go through.
    fn note_write<T>(&self, result: &Result<T, StoreError>) {
        match result {
            Err(StoreError::Unavailable(_)) => self.db.writes.failed(),
            Err(_) => {}
            Ok(_) => self.db.writes.committed(),
        }
    }

    async fn create_in_own_transaction(&self, new: &NewTask, admission: &Admission<'_>) -> Result<TaskId, StoreError> {
        let id = TaskId::generate();
        let now = now_ms();
        let mut tx = self.db.write.begin().await?;
        let hold = new.price.times(new.spec.images);
        // The hold's UPDATE comes first: it takes SQLite's write lock, and on PostgreSQL it locks
        // the account row, so concurrent submits of one account count their tasks one at a time.
        if !ledger::hold_in(&mut tx, &new.account_id, &id, hold).await? {
            return Err(StoreError::InsufficientCredits);
        }
        if let Some(limit) = admission.max_concurrent {
            let active: i64 = sqlx::query_scalar(
                "SELECT COUNT(*) FROM tasks WHERE account_id = $1 AND model = $2 AND state IN ('pending', 'processing')",
            )
            .bind(new.account_id.as_str())
            .bind(&new.spec.model)
            .fetch_one(&mut *tx)
            .await?;
            if active >= i64::from(limit) {
                return Err(StoreError::ConcurrencyLimit { limit });
            }
        }
        let rows = [NewRow { id: &id, new, timeout_ms: admission.timeout_ms }];
        insert_pending_in(&mut tx, &rows, now).await?;
        if let Some(idem) = admission.idempotency {
            idempotency::complete_in(&mut tx, &new.account_id, idem, &id).await?;
        }
        let signals = created_in(&mut tx, &rows, now).await?;
        self.bus.within(&mut *tx, &signals).await?;
        tx.commit().await?;
        self.bus.committed(&signals);
        Ok(id)
    }

    pub fn bus(&self) -> &Bus {
        &self.bus
    }

    /// An account's tasks that pass `filter`, newest first, before the task id `before` if
    /// given.
    pub async fn list_filtered(
        &self,
        account: &AccountId,
        filter: &TaskFilter<'_>,
        limit: i64,
        before: Option<&TaskId>,
    ) -> Result<Vec<Task>, StoreError> {
        // A cancelled task is stored as failed with the CANCELLED code: $8 tells the two apart.
        // No condition can use an index range, so the page is read newest first from
        // `tasks_by_account_id` and stops at `limit` (a range on created_at would sort all).
        let sql = format!(
            "SELECT {COLUMNS} FROM tasks WHERE account_id = $1 AND ($2 IS NULL OR id < $2) \
             AND ($3 IS NULL OR state = $3) AND ($4 IS NULL OR model = $4) \
             AND ($5 IS NULL OR created_at >= $5) AND ($6 IS NULL OR created_at < $6) \
             AND ($8 IS NULL OR (CASE WHEN fail_code = 'CANCELLED' THEN 1 ELSE 0 END) = $8) \
             ORDER BY id DESC LIMIT $7"
        );
        let (state, cancelled) = filter.state.map(LifeState::stored).unzip();
        let rows = sqlx::query(&sql)
            .bind(account.as_str())
            .bind(before.map(TaskId::as_str))
            .bind(state.map(TaskState::as_str))
            .bind(filter.model)
            .bind(filter.since)
            .bind(filter.until)
            .bind(limit)
            .bind(cancelled.flatten().map(i64::from))
            .fetch_all(&self.db.read)
            .await?;
        rows.iter().map(task_from_row).collect()
    }

    /// A task as its owner sees it; another account's task is as good as absent.
    #[tracing::instrument(skip(self))]
    pub async fn get_for_account(&self, id: &TaskId, account: &AccountId) -> Result<Option<Task>, StoreError> {
        Ok(self.get(id).await?.filter(|task| &task.account_id == account))
    }

    /// A task as its owner sees it, read from the database: the one column that changes after
    /// the end (`files_purged_at`, when its images are deleted) is as the database has it.
    pub async fn read_for_account(&self, id: &TaskId, account: &AccountId) -> Result<Option<Task>, StoreError> {
        let task = self.read(id).await?.filter(|task| &task.account_id == account);
        if let Some(task) = &task {
            self.ended.remember(task);
        }
        Ok(task)
    }

    async fn read(&self, id: &TaskId) -> Result<Option<Task>, StoreError> {
        let sql = format!("SELECT {COLUMNS} FROM tasks WHERE id = $1");
        let row = sqlx::query(&sql).bind(id.as_str()).fetch_optional(&self.db.read).await?;
        row.as_ref().map(task_from_row).transpose()
    }

    /// A task; one that has ended comes from memory after its first read (status polls).
    pub async fn get(&self, id: &TaskId) -> Result<Option<Task>, StoreError> {
        if let Some(task) = self.ended.get(id) {
            return Ok(Some(Task::clone(&task)));
        }
        let task = self.read(id).await?;
        if let Some(task) = &task {
            self.ended.remember(task);
        }
        Ok(task)
    }

    /// Takes up to `most` of the oldest tasks that are pending or whose lease ran out, in one
    /// statement, and leases them to `token`; they come back oldest first. A task still carrying
    /// a lease token was lost by its last worker (a handed-back lease has none): that counts as
    /// an interruption. Tasks of a model and tier in `waiting` (whose channels are all switched
    /// off or full) are passed over, unless they are past their deadline (to time out) or hold
    /// an upstream task (to resume it where it was accepted).
    pub async fn claim(
        &self,
        token: &str,
        lease_ms: i64,
        waiting: &[(String, Routing)],
        most: usize,
    ) -> Result<Vec<Task>, StoreError> {
        let now = now_ms();
        let held_back = if waiting.is_empty() {
            String::new()
        } else {
            let pairs: Vec<String> =
                (0..waiting.len()).map(|i| format!("(model = ${} AND routing = ${})", 5 + 2 * i, 6 + 2 * i)).collect();
            format!("AND (deadline_at <= $3 OR upstream_task_id IS NOT NULL OR NOT ({}))", pairs.join(" OR "))
        };
        let oldest = format!(
            "SELECT id FROM tasks WHERE (state = 'pending' OR (state = 'processing' AND lease_until < $3)) {held_back} \
             ORDER BY created_at LIMIT $4"
        );
        // SQLite runs the whole statement under its single write lock. PostgreSQL needs SKIP
        // LOCKED so that concurrent claimers pass over each other's rows, and the ids taken once
        // into an array: an `IN (subquery)` may be scanned again and lock more than `most`.
        let picked = match self.db.dialect {
            db::Dialect::Sqlite => format!("id IN ({oldest})"),
            db::Dialect::Postgres => format!("id = ANY(ARRAY({oldest} FOR UPDATE SKIP LOCKED))"),
        };
        let sql = format!(
            "UPDATE tasks SET state = 'processing', lease_token = $1, lease_until = $2, attempts = attempts + 1, \
             interruptions = interruptions + CASE WHEN lease_token IS NULL THEN 0 ELSE 1 END \
             WHERE {picked} RETURNING {COLUMNS}"
        );
        let most = i64::try_from(most).unwrap_or(i64::MAX);
        let mut query = sqlx::query(&sql).bind(token).bind(now + lease_ms).bind(now).bind(most);
        for (model, routing) in waiting {
            query = query.bind(model.as_str()).bind(routing.as_str());
        }
        let rows = query.fetch_all(&self.db.write).await?;
        let mut tasks = rows.iter().map(task_from_row).collect::<Result<Vec<_>, _>>()?;
        tasks.sort_by_key(|task| task.created_at);
        Ok(tasks)
    }

    /// Extends a lease, and says whether a cancel was asked for meanwhile (should its
    /// notification have been lost); `Lost` means the worker must stop.
    pub async fn renew_lease(&self, id: &TaskId, token: &str, lease_ms: i64) -> Result<Lease, StoreError> {
        let renewed: Option<Option<i64>> = sqlx::query_scalar(
            "UPDATE tasks SET lease_until = $1 WHERE id = $2 AND lease_token = $3 AND state = 'processing' \
             RETURNING cancel_requested_at",
        )
        .bind(now_ms() + lease_ms)
        .bind(id.as_str())
        .bind(token)
        .fetch_optional(&self.db.write)
        .await?;
        Ok(match renewed {
            Some(requested) => Lease::Kept { cancel_requested: requested.is_some() },
            None => Lease::Lost,
        })
    }

    /// Records what a running task reports (its start on a channel, its progress) as its next
    /// event, with a callback if its owner asked for one; false when the lease was lost.
    pub async fn note(&self, task: &Task, token: &str, note: Note) -> Result<bool, StoreError> {
        match &self.writer {
            Some(writer) => writer.note(task, token, note).await,
            None => {
                let mut tx = self.db.write.begin().await?;
                let Some(signals) = note_in(&mut tx, task, token, &note, now_ms()).await? else {
                    return Ok(false);
                };
                self.bus.within(&mut *tx, &signals).await?;
                tx.commit().await?;
                self.bus.committed(&signals);
                Ok(true)
            }
        }
    }

    /// Asks the node running a task to stop it; false when it is not running (any more).
    pub async fn request_cancel(&self, id: &TaskId) -> Result<bool, StoreError> {
        let mut tx = self.db.write.begin().await?;
        let asked = sqlx::query(
            "UPDATE tasks SET cancel_requested_at = COALESCE(cancel_requested_at, $1) \
             WHERE id = $2 AND state = 'processing'",
        )
        .bind(now_ms())
        .bind(id.as_str())
        .execute(&mut *tx)
        .await?
        .rows_affected()
            == 1;
        let signals = if asked { vec![Signal::cancel_requested(id)] } else { vec![] };
        self.bus.within(&mut *tx, &signals).await?;
        tx.commit().await?;
        self.bus.committed(&signals);
        Ok(asked)
    }

    /// Pending tasks whose `Cancel-After` deadline has passed.
    pub async fn overdue_pending(&self, now: i64, limit: i64) -> Result<Vec<Task>, StoreError> {
        let sql = format!(
            "SELECT {COLUMNS} FROM tasks WHERE cancel_at IS NOT NULL AND cancel_at <= $1 AND state = 'pending' LIMIT $2"
        );
        let rows = sqlx::query(&sql).bind(now).bind(limit).fetch_all(&self.db.read).await?;
        rows.iter().map(task_from_row).collect()
    }

    /// A pending task's place in the queue for its channels: 1 when it is the next of the
    /// tasks for `sharing` (the models those channels serve, its own among them) to be claimed.
    pub async fn queue_position(&self, task: &Task, sharing: &[String]) -> Result<u32, StoreError> {
        // Tasks created in the same millisecond are told apart by id (time-ordered too).
        let sql = format!(
            "SELECT COUNT(*) FROM tasks WHERE state = 'pending' \
             AND (created_at < $1 OR (created_at = $1 AND id < $2)) AND model IN ({})",
            db::parameter_list(3, sharing.len())
        );
        let mut query = sqlx::query_scalar(&sql).bind(task.created_at).bind(task.id.as_str());
        for model in sharing {
            query = query.bind(model.as_str());
        }
        let ahead: i64 = query.fetch_one(&self.db.read).await?;
        Ok(u32::try_from(ahead).unwrap_or(u32::MAX).saturating_add(1))
    }

    /// A task's events after `seq`.
    pub async fn events_after(&self, id: &TaskId, seq: i64) -> Result<Vec<events::TaskEvent>, StoreError> {
        Ok(events::after(&self.db, id, seq).await?)
    }

    /// Records, while `token` owns the task, the id an asynchronous upstream gave it.
    pub async fn record_upstream(
        &self,
        id: &TaskId,
        token: &str,
        channel: &str,
        upstream_id: &str,
    ) -> Result<(), StoreError> {
        let done = sqlx::query(
            "UPDATE tasks SET upstream_channel = $1, upstream_task_id = $2 \
             WHERE id = $3 AND lease_token = $4 AND state = 'processing'",
        )
        .bind(channel)
        .bind(upstream_id)
        .bind(id.as_str())
        .bind(token)
        .execute(&self.db.write)
        .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::Corrupt("the task's lease was lost".into()));
        }
        Ok(())
    }

    /// Appends a channel attempt to the task's log, while `token` owns the task.
    pub async fn log_channel_attempt(
        &self,
        task: &TaskId,
        token: &str,
        log: &[ChannelAttempt],
    ) -> Result<(), StoreError> {
        sqlx::query("UPDATE tasks SET channel_log = $1, served_by = $2 WHERE id = $3 AND lease_token = $4")
            .bind(serde_json::to_string(log).map_err(corrupt)?)
            .bind(log.last().map(|a| a.channel.as_str()))
            .bind(task.as_str())
            .bind(token)
            .execute(&self.db.write)
            .await?;
        Ok(())
    }

    /// Task counts by model, state and serving channel, for metrics.
    pub async fn counts(&self) -> Result<Vec<(String, String, Option<String>, i64)>, StoreError> {
        let rows = sqlx::query(
            "SELECT model, state, served_by, COUNT(*) AS n FROM tasks GROUP BY model, state, served_by ORDER BY 1, 2, 3",
        )
        .fetch_all(&self.db.read)
        .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("model")?, r.try_get("state")?, r.try_get("served_by")?, r.try_get("n")?)))
            .collect()
    }

    /// Waiting and running tasks by model: `(model, state, count)`.
    pub async fn queue_depth(&self) -> Result<Vec<(String, String, i64)>, StoreError> {
        let rows = sqlx::query(
            "SELECT model, state, COUNT(*) AS n FROM tasks WHERE state IN ('pending', 'processing') \
             GROUP BY model, state ORDER BY 1, 2",
        )
        .fetch_all(&self.db.read)
        .await?;
        rows.iter().map(|r| Ok((r.try_get("model")?, r.try_get("state")?, r.try_get("n")?))).collect()
    }

    /// The latest failed tasks of every account, newest first.
    pub async fn recent_failures(&self, limit: i64) -> Result<Vec<Task>, StoreError> {
        let sql = format!(
            "SELECT {COLUMNS} FROM tasks WHERE state = 'failed' AND completed_at IS NOT NULL \
             ORDER BY completed_at DESC LIMIT $1"
        );
        let rows = sqlx::query(&sql).bind(limit).fetch_all(&self.db.read).await?;
        rows.iter().map(task_from_row).collect()
    }

    /// Gives a lease back so the task is taken again at once (used on shutdown). Dropping the
    /// token marks the run as handed back, not lost.
    pub async fn release_lease(&self, id: &TaskId, token: &str) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE tasks SET lease_until = 0, lease_token = NULL \
             WHERE id = $1 AND lease_token = $2 AND state = 'processing'",
        )
        .bind(id.as_str())
        .bind(token)
        .execute(&self.db.write)
        .await?;
        self.bus.publish(&self.db.write, &[Signal::TaskQueued]).await?;
        Ok(())
    }

    /// Puts tasks just claimed under `token` back in their place in the queue, as if they had
    /// not been claimed: their channels had no slot free. No wake-up is sent (a freed slot
    /// sends one).
    pub async fn requeue(&self, ids: &[&TaskId], token: &str) -> Result<(), StoreError> {
        if ids.is_empty() {
            return Ok(());
        }
        let sql = format!(
            "UPDATE tasks SET state = 'pending', lease_token = NULL, lease_until = NULL, attempts = attempts - 1 \
             WHERE lease_token = $1 AND state = 'processing' AND id IN ({})",
            db::parameter_list(2, ids.len())
        );
        let mut query = sqlx::query(&sql).bind(token);
        for id in ids {
            query = query.bind(id.as_str());
        }
        query.execute(&self.db.write).await?;
        Ok(())
    }

    /// Expires every lease. Only for a single-process store (SQLite) at start-up, where any
    /// lease still standing belongs to a process that is gone; the tokens stay, so the next
    /// claim counts the lost run as an interruption.
    pub async fn expire_all_leases(&self) -> Result<u64, StoreError> {
        let done =
            sqlx::query("UPDATE tasks SET lease_until = 0 WHERE state = 'processing'").execute(&self.db.write).await?;
        Ok(done.rows_affected())
    }

    /// Ends a task and settles its hold, both in one transaction, if `holder` may still end it.
    /// Returns false (changing nothing) when it may not: the lease was lost to another worker,
    /// or a task cancelled in the queue was claimed (or ended) meanwhile.
    #[tracing::instrument(skip(self, task, outcome), fields(task = %task.id))]
    pub async fn finish(&self, task: &Task, holder: &Holder, outcome: &Outcome) -> Result<bool, StoreError> {
        let finished = match &self.writer {
            Some(writer) => writer.finish(task, holder, outcome).await,
            None => self.finish_in_own_transaction(task, holder, outcome).await,
        };
        self.note_write(&finished);
        finished
    }

    async fn finish_in_own_transaction(
        &self,
        task: &Task,
        holder: &Holder,
        outcome: &Outcome,
    ) -> Result<bool, StoreError> {
        let now = now_ms();
        let mut tx = self.db.write.begin().await?;
        let ending = Ending::of(task, outcome)?;
        if !end_in(&mut tx, task, holder, &ending, now).await? {
            return Ok(false);
        }
        ledger::settle_all_in(&mut tx, &[task.closing(ending.charge)], now).await?;
        let mut usage = usage::Tally::default();
        let signals = ended_in(&mut tx, task, outcome, &ending, &mut usage, now).await?;
        usage.record_in(&mut tx).await?;
        self.bus.within(&mut *tx, &signals).await?;
        tx.commit().await?;
        self.bus.committed(&signals);
        Ok(true)
    }

    /// Finished tasks that have outlived `cutoff` and still have files: their results and the
    /// references their client uploaded.
    pub async fn expired_results(&self, cutoff: i64, limit: i64) -> Result<Vec<(TaskId, Vec<String>)>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, result_keys, spec FROM tasks WHERE completed_at < $1 AND files_purged_at IS NULL \
             ORDER BY completed_at LIMIT $2",
        )
        .bind(cutoff)
        .bind(limit)
        .fetch_all(&self.db.read)
        .await?;
        rows.iter()
            .map(|r| {
                let keys: Option<String> = r.try_get("result_keys")?;
                let keys: Vec<String> =
                    keys.map(|k| serde_json::from_str(&k)).transpose().map_err(corrupt)?.unwrap_or_default();
                let spec: TaskSpec = serde_json::from_str(&r.try_get::<String, _>("spec")?).map_err(corrupt)?;
                let id = TaskId::from_db(r.try_get("id")?);
                let files = super::stored_files(&id, &keys, &spec);
                Ok((id, files))
            })
            .collect()
    }

    /// Notes that a task's files are gone; returns when.
    pub async fn mark_purged(&self, id: &TaskId) -> Result<i64, StoreError> {
        let now = now_ms();
        sqlx::query("UPDATE tasks SET files_purged_at = $1 WHERE id = $2")
            .bind(now)
            .bind(id.as_str())
            .execute(&self.db.write)
            .await?;
        Ok(now)
    }
}

/// The `created` event of each task inserted, and the signals that announce them.
pub(super) async fn created_in(
    tx: &mut Transaction<'_, Any>,
    rows: &[NewRow<'_>],
    now: i64,
) -> Result<Vec<Signal>, StoreError> {
    let data: Vec<(&TaskId, Value)> =
        rows.iter().map(|r| (r.id, json!({"model": r.new.spec.model, "imagesRequested": r.new.spec.images}))).collect();
    events::created_in(tx, &data, now).await?;
    let mut signals = vec![Signal::TaskQueued];
    signals.extend(rows.iter().map(|r| Signal::event(r.id, 1, false)));
    Ok(signals)
}

/// After [`end_in`] ended a task: its events (each image stored, then the end), its callback
/// if its owner wants one, and the signals that announce them. Its usage goes on `usage`, for
/// the caller to record with the transaction's others.
pub(super) async fn ended_in(
    tx: &mut Transaction<'_, Any>,
    task: &Task,
    outcome: &Outcome,
    ending: &Ending<'_>,
    usage: &mut usage::Tally,
    now: i64,
) -> Result<Vec<Signal>, StoreError> {
    let kind = outcome.event();
    let mut list: Vec<(EventKind, Value)> =
        (0..ending.delivered).map(|index| (EventKind::Image, json!({ "index": index }))).collect();
    let state = match kind {
        EventKind::Cancelled => "cancelled",
        _ => ending.state.as_str(),
    };
    list.push((
        kind,
        json!({
            "state": state,
            "imagesDelivered": ending.delivered,
            "chargedUsd": ending.charge.to_usd(),
            "failCode": ending.fail_code,
            "failMsg": ending.fail_msg,
        }),
    ));
    let seq = events::append_in(tx, &task.id, &list, now).await?;
    let ended = match kind {
        EventKind::Cancelled => usage::Ended::Cancelled,
        EventKind::Succeeded => usage::Ended::Succeeded,
        _ => usage::Ended::Failed,
    };
    usage.add(&task.account_id, &task.model, ended, ending.delivered, ending.charge, now);
    let mut signals = vec![Signal::event(&task.id, seq, true)];
    if let Some(url) = task.callback_for(kind) {
        webhooks::store::enqueue_in(tx, &task.id, &task.account_id, url, None).await?;
        signals.push(Signal::CallbackQueued);
    }
    Ok(signals)
}

/// Writes a running task's note under its lease: `None` (nothing written) when it was lost.
pub(super) async fn note_in(
    tx: &mut Transaction<'_, Any>,
    task: &Task,
    token: &str,
    note: &Note,
    now: i64,
) -> Result<Option<Vec<Signal>>, StoreError> {
    let updated = sqlx::query(
        "UPDATE tasks SET served_by = COALESCE($1, served_by), progress_percent = COALESCE($2, progress_percent) \
         WHERE id = $3 AND lease_token = $4 AND state = 'processing'",
    )
    .bind(note.channel.as_deref())
    .bind(note.percent.map(i64::from))
    .bind(task.id.as_str())
    .bind(token)
    .execute(&mut **tx)
    .await?;
    if updated.rows_affected() == 0 {
        return Ok(None);
    }
    let seq = events::append_in(tx, &task.id, &[(note.kind, note.data.clone())], now).await?;
    let mut signals = vec![Signal::event(&task.id, seq, false)];
    if let Some(url) = task.callback_for(note.kind) {
        webhooks::store::enqueue_in(tx, &task.id, &task.account_id, url, Some(note.kind)).await?;
        signals.push(Signal::CallbackQueued);
    }
    Ok(Some(signals))
}

/// A task row to insert.
pub(super) struct NewRow<'a> {
    pub id: &'a TaskId,
    pub new: &'a NewTask,
    pub timeout_ms: i64,
}

/// Inserts pending tasks, in one statement however many.
pub(super) async fn insert_pending_in(
    tx: &mut Transaction<'_, Any>,
    rows: &[NewRow<'_>],
    now: i64,
) -> Result<(), StoreError> {
    let sql = format!(
        "INSERT INTO tasks (id, account_id, model, dialect, state, spec, param, routing, callback_url, \
         requested_images, price_micros, tariff, created_at, deadline_at, cancel_at, callback_events) VALUES {}",
        db::placeholders(rows.len(), 16)
    );
    let mut query = sqlx::query(&sql);
    for row in rows {
        let new = row.new;
        query = query
            .bind(row.id.as_str())
            .bind(new.account_id.as_str())
            .bind(&new.spec.model)
            .bind(new.dialect.as_str())
            .bind(TaskState::Pending.as_str())
            .bind(serde_json::to_string(&new.spec).map_err(corrupt)?)
            .bind(&new.param)
            .bind(new.routing.as_str())
            .bind(new.callback_url.as_deref())
            .bind(i64::from(new.spec.images))
            .bind(new.price.0)
            .bind(serde_json::to_string(&new.tariff).map_err(corrupt)?)
            .bind(now)
            .bind(now + row.timeout_ms)
            .bind(new.cancel_after_ms.map(|ms| now + ms))
            .bind(new.callback_events.stored());
    }
    query.execute(&mut **tx).await?;
    Ok(())
}

/// Writes how the task ended, if `holder` may still end it; false (changing nothing) when not.
pub(super) async fn end_in(
    tx: &mut Transaction<'_, Any>,
    task: &Task,
    holder: &Holder,
    ending: &Ending<'_>,
    now: i64,
) -> Result<bool, StoreError> {
    let (token, whose) = match holder {
        Holder::Lease(token) => (Some(token.as_str()), "lease_token = $8 AND state = 'processing'"),
        Holder::Queue => (None, "$8 IS NULL AND state = 'pending'"),
    };
    let sql = format!(
        "UPDATE tasks SET state = $1, result_keys = $2, fail_code = $3, fail_msg = $4, delivered_images = $5, \
         completed_at = $6, lease_token = NULL, lease_until = NULL, finished_by = $9, charged_micros = $10, \
         channel_log = COALESCE($11, channel_log), served_by = COALESCE($12, served_by) \
         WHERE id = $7 AND {whose}"
    );
    let updated = sqlx::query(&sql)
        .bind(ending.state.as_str())
        .bind(ending.result_keys.as_deref())
        .bind(ending.fail_code)
        .bind(ending.fail_msg)
        .bind(i64::from(ending.delivered))
        .bind(now)
        .bind(task.id.as_str())
        .bind(token)
        .bind(token.and_then(node_of))
        .bind(ending.charge.0)
        .bind(ending.channel_log.as_deref())
        .bind(ending.served_by)
        .execute(&mut **tx)
        .await?;
    Ok(updated.rows_affected() == 1)
}
