//! A task's life as a numbered list of events, each written in the transaction that makes its
//! change: what live event streams replay and follow, and what progress callbacks report.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sqlx::{Any, Row, Transaction};
use utoipa::ToSchema;

use crate::db::Db;
use crate::ids::TaskId;

/// What happened to a task.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
#[schema(as = TaskEventType)]
pub enum EventKind {
    /// Accepted and queued.
    Created,
    /// A channel began working on it.
    Started,
    /// Its provider reported progress.
    Progress,
    /// One of its images was stored.
    Image,
    Succeeded,
    Failed,
    Cancelled,
}

impl EventKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Created => "created",
            EventKind::Started => "started",
            EventKind::Progress => "progress",
            EventKind::Image => "image",
            EventKind::Succeeded => "succeeded",
            EventKind::Failed => "failed",
            EventKind::Cancelled => "cancelled",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "created" => EventKind::Created,
            "started" => EventKind::Started,
            "progress" => EventKind::Progress,
            "image" => EventKind::Image,
            "succeeded" => EventKind::Succeeded,
            "failed" => EventKind::Failed,
            "cancelled" => EventKind::Cancelled,
            _ => return None,
        })
    }

    /// Whether the task ends with this event (nothing follows it).
    pub fn is_final(self) -> bool {
        matches!(self, EventKind::Succeeded | EventKind::Failed | EventKind::Cancelled)
    }
}

/// One stored event.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskEvent {
    pub seq: i64,
    pub kind: EventKind,
    /// Its details (see the `TaskEvent` schema), camelCase JSON.
    pub data: Value,
    /// Unix milliseconds.
    pub at: i64,
}

/// Writes each new task's first event, `created` (seq 1), in one statement.
pub async fn created_in(
    tx: &mut Transaction<'_, Any>,
    tasks: &[(&TaskId, Value)],
    now: i64,
) -> Result<(), sqlx::Error> {
    if tasks.is_empty() {
        return Ok(());
    }
    let sql = format!(
        "INSERT INTO task_events (task_id, seq, kind, data, at) VALUES {}",
        crate::db::placeholders(tasks.len(), 5)
    );
    let mut query = sqlx::query(&sql);
    for (task, data) in tasks {
        query =
            query.bind(task.as_str()).bind(1_i64).bind(EventKind::Created.as_str()).bind(data.to_string()).bind(now);
    }
    query.execute(&mut **tx).await?;
    Ok(())
}

/// The seq of a task's last event (`$1`), 0 before the first.
const LATEST_SEQ: &str = "SELECT COALESCE(MAX(seq), 0) FROM task_events WHERE task_id = $1";

/// Appends events to a task's list and returns the last one's seq. Call it after the statement
/// that changes the task's row in the same transaction: that row's lock puts concurrent writers
/// of one task (a cancel and a finish) one after the other, so each reads the other's events.
/// One statement reads the list's end and appends after it (a round trip less per write; the
/// databases read the whole SELECT before inserting into the table it reads).
pub async fn append_in(
    tx: &mut Transaction<'_, Any>,
    task: &TaskId,
    events: &[(EventKind, Value)],
    now: i64,
) -> Result<i64, sqlx::Error> {
    if events.is_empty() {
        return sqlx::query_scalar(LATEST_SEQ).bind(task.as_str()).fetch_one(&mut **tx).await;
    }
    // Event i is `$(3 + 2i)` (kind) and `$(4 + 2i)` (data), at `latest + 1 + i`.
    let rows: Vec<String> = (0..events.len())
        .map(|i| format!("SELECT $1, latest + {}, ${}, ${}, $2 FROM base", i + 1, 3 + 2 * i, 4 + 2 * i))
        .collect();
    let sql = format!(
        "WITH base(latest) AS ({LATEST_SEQ}) INSERT INTO task_events (task_id, seq, kind, data, at) {} RETURNING seq",
        rows.join(" UNION ALL ")
    );
    let mut query = sqlx::query_scalar::<_, i64>(&sql).bind(task.as_str()).bind(now);
    for (kind, data) in events {
        query = query.bind(kind.as_str()).bind(data.to_string());
    }
    let seqs = query.fetch_all(&mut **tx).await?;
    Ok(seqs.into_iter().max().expect("one row per event appended"))
}

/// A task's events after `seq`, in order.
pub async fn after(db: &Db, task: &TaskId, seq: i64) -> Result<Vec<TaskEvent>, sqlx::Error> {
    let rows = sqlx::query("SELECT seq, kind, data, at FROM task_events WHERE task_id = $1 AND seq > $2 ORDER BY seq")
        .bind(task.as_str())
        .bind(seq)
        .fetch_all(&db.read)
        .await?;
    let mut events = Vec::with_capacity(rows.len());
    for row in &rows {
        let kind: String = row.try_get("kind")?;
        let data: String = row.try_get("data")?;
        // An event of a kind this build does not know (written by a newer node) is skipped.
        let Some(kind) = EventKind::parse(&kind) else { continue };
        events.push(TaskEvent {
            seq: row.try_get("seq")?,
            kind,
            data: serde_json::from_str(&data).unwrap_or(Value::Null),
            at: row.try_get("at")?,
        });
    }
    Ok(events)
}

#[cfg(test)]
mod tests {
    use super::EventKind;

    #[test]
    fn kinds_round_trip_and_only_the_ends_are_final() {
        use EventKind::*;
        for kind in [Created, Started, Progress, Image, Succeeded, Failed, Cancelled] {
            assert_eq!(EventKind::parse(kind.as_str()), Some(kind));
            assert_eq!(kind.is_final(), matches!(kind, Succeeded | Failed | Cancelled));
        }
        assert_eq!(EventKind::parse("finished"), None);
    }
}
