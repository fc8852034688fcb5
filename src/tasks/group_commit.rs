//! Group commit of task writes.
//!
//! SQLite has one writer, and sqlx reaches it through one connection thread: every statement is
//! a round trip between threads, and those hand-offs, not SQLite's own work, bound how many tasks
//! a second one node takes and ends. On PostgreSQL every transaction costs its statements' round
//! trips and a WAL flush at commit. So creations and finishes wait in one queue, and a writer
//! takes everything waiting into one transaction: one conditional UPDATE holding the credit of
//! all the new tasks of an account and model (with the concurrency limit in the same statement;
//! task by task when they do not all fit), a conditional UPDATE per ending task, one balance
//! UPDATE per account, one upsert of the usage rollup, and multi-row INSERTs for the task,
//! event and ledger rows. Each caller still hears back only after the transaction with its
//! write has committed.
//!
//! On PostgreSQL, where other nodes write at the same time, the group first locks the rows of
//! every account it touches, in id order (so that two nodes' groups never deadlock): each
//! concurrency check then runs after the lock, in a statement of its own whose snapshot sees
//! every task the other nodes committed, and limits stay exact across nodes.
//!
//! Should a group fail, its writes run again one by one, so that whatever failed fails only its
//! own.

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;

use futures::FutureExt;

use sqlx::{Any, Row, Transaction};
use tokio::sync::{mpsc, oneshot};

use super::idempotency::{self, Idempotency};
use super::store::{
    Admission, Ending, Holder, NewRow, Note, Outcome, StoreError, TaskStore, created_in, end_in, ended_in,
    insert_pending_in, note_in,
};
use super::{NewTask, Task, TaskId};
use crate::accounts::ledger::{self, EntryKind, NewEntry};
use crate::accounts::usage;
use crate::db::{self, Db, Dialect, now_ms};
use crate::ids::AccountId;
use crate::money::Micros;
use crate::signals::{Bus, Signal};

/// The most writes one transaction takes. A task row binds 14 values, far below SQLite's limit
/// of 32,766 a statement even at this many rows.
const MOST_PER_COMMIT: usize = 256;

/// A task to create, as [`TaskStore::create`] was asked.
struct Create {
    new: NewTask,
    timeout_ms: i64,
    max_concurrent: Option<u32>,
    idempotency: Option<Idempotency>,
    reply: oneshot::Sender<Result<TaskId, StoreError>>,
}

/// A task to end, as [`TaskStore::finish`] was asked.
struct Finish {
    task: Box<Task>,
    holder: Holder,
    outcome: Outcome,
    reply: oneshot::Sender<Result<bool, StoreError>>,
}

/// A running task's note, as [`TaskStore::note`] was asked.
struct Noted {
    task: Box<Task>,
    token: String,
    note: Note,
    reply: oneshot::Sender<Result<bool, StoreError>>,
}

enum Write {
    Create(Box<Create>),
    Finish(Finish),
    Note(Noted),
}

/// The queue in front of the writer.
#[derive(Clone)]
pub struct Writer {
    queue: mpsc::UnboundedSender<Write>,
}

impl std::fmt::Debug for Writer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Writer").finish_non_exhaustive()
    }
}

impl Writer {
    /// Starts the writer on `db`; it stops when the last handle is dropped. `alone` makes each
    /// write in a transaction of its own, for the writes of a group that failed.
    pub fn start(db: Db, alone: TaskStore) -> Self {
        let (queue, waiting) = mpsc::unbounded_channel();
        tokio::spawn(write_groups(db, alone, waiting));
        Self { queue }
    }

    pub async fn create(&self, new: &NewTask, admission: &Admission<'_>) -> Result<TaskId, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.send(Write::Create(Box::new(Create {
            new: new.clone(),
            timeout_ms: admission.timeout_ms,
            max_concurrent: admission.max_concurrent,
            idempotency: admission.idempotency.cloned(),
            reply,
        })))?;
        answer.await.map_err(|_| StoreError::Stopped)?
    }

    pub async fn finish(&self, task: &Task, holder: &Holder, outcome: &Outcome) -> Result<bool, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.send(Write::Finish(Finish {
            task: Box::new(task.clone()),
            holder: holder.clone(),
            outcome: outcome.clone(),
            reply,
        }))?;
        answer.await.map_err(|_| StoreError::Stopped)?
    }

    pub async fn note(&self, task: &Task, token: &str, note: Note) -> Result<bool, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.send(Write::Note(Noted { task: Box::new(task.clone()), token: token.to_owned(), note, reply }))?;
        answer.await.map_err(|_| StoreError::Stopped)?
    }

    fn send(&self, write: Write) -> Result<(), StoreError> {
        self.queue.send(write).map_err(|_| StoreError::Stopped)
    }
}

async fn write_groups(db: Db, alone: TaskStore, mut waiting: mpsc::UnboundedReceiver<Write>) {
    let mut group = Vec::with_capacity(MOST_PER_COMMIT);
    while waiting.recv_many(&mut group, MOST_PER_COMMIT).await > 0 {
        let writes = std::mem::replace(&mut group, Vec::with_capacity(MOST_PER_COMMIT));
        // A panic must not stop the writer: its group's callers hear `Stopped`, later ones go on.
        if AssertUnwindSafe(write_group(&db, &alone, writes)).catch_unwind().await.is_err() {
            tracing::error!("the task writer panicked on a group; its writes were answered with an error");
        }
    }
}

async fn write_group(db: &Db, alone: &TaskStore, writes: Vec<Write>) {
    let (mut creates, mut finishes, mut notes) = (Vec::new(), Vec::new(), Vec::new());
    for write in writes {
        match write {
            Write::Create(c) => creates.push(*c),
            Write::Finish(f) => finishes.push(f),
            Write::Note(n) => notes.push(n),
        }
    }
    match commit_group(db, alone.bus(), &creates, &finishes, &notes).await {
        Ok(Committed { created, finished, noted, signals }) => {
            alone.bus().committed(&signals);
            // A caller that went away still has its write: as when an answer is lost on the wire.
            for (c, outcome) in creates.into_iter().zip(created) {
                let _ = c.reply.send(outcome);
            }
            for (f, outcome) in finishes.into_iter().zip(finished) {
                let _ = f.reply.send(Ok(outcome));
            }
            for (n, outcome) in notes.into_iter().zip(noted) {
                let _ = n.reply.send(Ok(outcome));
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, creates = creates.len(), finishes = finishes.len(),
                "a group commit failed; writing its tasks one by one");
            for c in creates {
                let admission = Admission {
                    timeout_ms: c.timeout_ms,
                    max_concurrent: c.max_concurrent,
                    idempotency: c.idempotency.as_ref(),
                };
                let _ = c.reply.send(alone.create(&c.new, &admission).await);
            }
            for f in finishes {
                let _ = f.reply.send(alone.finish(&f.task, &f.holder, &f.outcome).await);
            }
            for n in notes {
                let _ = n.reply.send(alone.note(&n.task, &n.token, n.note).await);
            }
        }
    }
}

/// What a group's transaction did, in the order of its writes, and the signals to announce.
struct Committed {
    created: Vec<Result<TaskId, StoreError>>,
    finished: Vec<bool>,
    noted: Vec<bool>,
    signals: Vec<Signal>,
}

/// Writes a group in one transaction. An error means the transaction was rolled back.
async fn commit_group(
    db: &Db,
    bus: &Bus,
    creates: &[Create],
    finishes: &[Finish],
    notes: &[Noted],
) -> Result<Committed, StoreError> {
    let now = now_ms();
    let mut signals = Vec::new();
    let mut tx = db.write.begin().await?;
    if db.dialect == Dialect::Postgres {
        let accounts = creates.iter().map(|c| &c.new.account_id).chain(finishes.iter().map(|f| &f.task.account_id));
        lock_accounts(&mut tx, accounts).await?;
    }
    let created = create_all(&mut tx, creates, now, &mut signals).await?;
    let finished = finish_all(&mut tx, finishes, now, &mut signals).await?;
    let mut noted = Vec::with_capacity(notes.len());
    for n in notes {
        let written = note_in(&mut tx, &n.task, &n.token, &n.note, now).await?;
        noted.push(written.is_some());
        signals.extend(written.into_iter().flatten());
    }
    bus.within(&mut *tx, &signals).await?;
    tx.commit().await?;
    Ok(Committed { created, finished, noted, signals })
}

/// Locks the rows of `accounts` (PostgreSQL) for the rest of the transaction, in id order.
async fn lock_accounts<'a>(
    tx: &mut Transaction<'_, Any>,
    accounts: impl Iterator<Item = &'a AccountId>,
) -> Result<(), StoreError> {
    let mut ids: Vec<&str> = accounts.map(AccountId::as_str).collect();
    ids.sort_unstable();
    ids.dedup();
    if ids.is_empty() {
        return Ok(());
    }
    let sql =
        format!("SELECT id FROM accounts WHERE id IN ({}) ORDER BY id FOR UPDATE", db::parameter_list(1, ids.len()));
    let mut query = sqlx::query(&sql);
    for id in ids {
        query = query.bind(id);
    }
    query.fetch_all(&mut **tx).await?;
    Ok(())
}

/// A task the group admitted, with its id and credit hold.
struct Admitted<'a> {
    create: &'a Create,
    id: TaskId,
    hold: Micros,
}

async fn create_all(
    tx: &mut Transaction<'_, Any>,
    creates: &[Create],
    now: i64,
    signals: &mut Vec<Signal>,
) -> Result<Vec<Result<TaskId, StoreError>>, StoreError> {
    let mut outcomes: Vec<Option<Result<TaskId, StoreError>>> = creates.iter().map(|_| None).collect();
    let mut admitted = Vec::with_capacity(creates.len());
    // Tasks this group admitted per (account, model): their rows are inserted only at the end,
    // so the concurrency check adds them to what the table holds.
    let mut admitted_per_model: HashMap<(&str, &str), i64> = HashMap::new();
    for batch in same_hold(creates) {
        let first = &creates[batch[0]];
        let (account, model) = (first.new.account_id.as_str(), first.new.spec.model.as_str());
        let earlier = admitted_per_model.entry((account, model)).or_default();
        let holds: Vec<Micros> =
            batch.iter().map(|&i| creates[i].new.price.times(creates[i].new.spec.images)).collect();
        let total = holds.iter().try_fold(Micros::ZERO, |sum, hold| sum.checked_add(*hold));
        // The whole batch in one UPDATE when it fits, as it does unless the account is near its
        // balance or limit; otherwise one at a time, in order, as if it came alone.
        let all_at_once = match total {
            Some(total) if batch.len() > 1 => hold(tx, first, *earlier, total, batch.len()).await?,
            _ => false,
        };
        for (&i, hold_one) in batch.iter().zip(holds) {
            let create = &creates[i];
            if all_at_once || hold(tx, create, *earlier, hold_one, 1).await? {
                *earlier += 1;
                let id = TaskId::generate();
                outcomes[i] = Some(Ok(id.clone()));
                admitted.push(Admitted { create, id, hold: hold_one });
            } else {
                outcomes[i] = Some(Err(refusal(tx, create, hold_one).await?));
            }
        }
    }
    let outcomes = outcomes.into_iter().map(|o| o.expect("every create is in one batch")).collect();
    if admitted.is_empty() {
        return Ok(outcomes);
    }
    let holds: Vec<NewEntry> = admitted
        .iter()
        .map(|a| NewEntry {
            account: &a.create.new.account_id,
            task: Some(&a.id),
            kind: EntryKind::Hold,
            amount: a.hold,
        })
        .collect();
    ledger::append_all(tx, &holds, now).await?;
    let rows: Vec<NewRow> =
        admitted.iter().map(|a| NewRow { id: &a.id, new: &a.create.new, timeout_ms: a.create.timeout_ms }).collect();
    insert_pending_in(tx, &rows, now).await?;
    for a in &admitted {
        if let Some(idem) = &a.create.idempotency {
            idempotency::complete_in(tx, &a.create.new.account_id, idem, &a.id).await?;
        }
    }
    signals.extend(created_in(tx, &rows, now).await?);
    Ok(outcomes)
}

/// The creates that share an account, a model and a concurrency limit (so that one statement
/// can hold credit for them all), as indices into `creates`, each batch in the order asked.
fn same_hold(creates: &[Create]) -> Vec<Vec<usize>> {
    let mut batches: Vec<Vec<usize>> = Vec::new();
    let mut index: HashMap<(&str, &str, Option<u32>), usize> = HashMap::new();
    for (i, c) in creates.iter().enumerate() {
        let key = (c.new.account_id.as_str(), c.new.spec.model.as_str(), c.max_concurrent);
        let at = *index.entry(key).or_insert_with(|| {
            batches.push(Vec::new());
            batches.len() - 1
        });
        batches[at].push(i);
    }
    batches
}

/// Holds `amount` of credit for `count` new tasks like `create` (the `earlier` of them this
/// group admitted already count against its limit), if the balance and the concurrency limit
/// allow all of them; else changes nothing. Both checks sit in the UPDATE, so no interleaving
/// overspends or overruns the limit.
async fn hold(
    tx: &mut Transaction<'_, Any>,
    create: &Create,
    earlier: i64,
    amount: Micros,
    count: usize,
) -> Result<bool, StoreError> {
    let held = sqlx::query(
        "UPDATE accounts SET balance_micros = balance_micros - $1, held_micros = held_micros + $1 \
         WHERE id = $2 AND balance_micros >= $1 AND ($3 IS NULL OR $4 + (SELECT COUNT(*) FROM tasks \
         WHERE account_id = $2 AND model = $5 AND state IN ('pending', 'processing')) + $6 <= $3)",
    )
    .bind(amount.0)
    .bind(create.new.account_id.as_str())
    .bind(create.max_concurrent.map(i64::from))
    .bind(earlier)
    .bind(&create.new.spec.model)
    .bind(count as i64)
    .execute(&mut **tx)
    .await?;
    Ok(held.rows_affected() == 1)
}

/// Why a hold was refused: the balance, else the concurrency limit.
async fn refusal(tx: &mut Transaction<'_, Any>, create: &Create, hold: Micros) -> Result<StoreError, StoreError> {
    let balance = sqlx::query("SELECT balance_micros FROM accounts WHERE id = $1")
        .bind(create.new.account_id.as_str())
        .fetch_optional(&mut **tx)
        .await?
        .map(|row| row.try_get::<i64, _>(0))
        .transpose()?;
    Ok(match (balance, create.max_concurrent) {
        (Some(balance), Some(limit)) if balance >= hold.0 => StoreError::ConcurrencyLimit { limit },
        _ => StoreError::InsufficientCredits,
    })
}

async fn finish_all(
    tx: &mut Transaction<'_, Any>,
    finishes: &[Finish],
    now: i64,
    signals: &mut Vec<Signal>,
) -> Result<Vec<bool>, StoreError> {
    let mut ended = Vec::with_capacity(finishes.len());
    let mut closings = Vec::with_capacity(finishes.len());
    let mut tally = usage::Tally::default();
    for f in finishes {
        let ending = Ending::of(&f.task, &f.outcome)?;
        let done = end_in(tx, &f.task, &f.holder, &ending, now).await?;
        if done {
            closings.push(f.task.closing(ending.charge));
            signals.extend(ended_in(tx, &f.task, &f.outcome, &ending, &mut tally, now).await?);
        }
        ended.push(done);
    }
    tally.record_in(tx).await?;
    ledger::settle_all_in(tx, &closings, now).await?;
    Ok(ended)
}
