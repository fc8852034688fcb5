//! Database connection: one `sqlx::Any` code path for SQLite and PostgreSQL.
//!
//! SQLite allows one writer at a time, so writes go through a single-connection pool (queued
//! fairly by sqlx instead of spinning in SQLite's busy handler) and reads through a wider pool.
//! On PostgreSQL both handles are the same pool.

use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context;
use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::{AnyPool, Connection, Executor};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Sqlite,
    Postgres,
}

#[derive(Clone, Debug)]
pub struct Db {
    pub write: AnyPool,
    pub read: AnyPool,
    pub dialect: Dialect,
    /// Whether task writes have been failing, for `/readyz`.
    pub writes: Arc<WriteHealth>,
}

/// How long a failed task write keeps `/readyz` at 503 by itself, even if the small probe write
/// passes (a nearly full disk may still fit the probe but not a task). Past it, with no task
/// written meanwhile (an idle node out of the balancer's rotation), the probe decides alone.
const WRITE_FAILURE_HOLDS_MS: i64 = 10_000;

/// The outcome of the latest task write: a failure for want of a writable database marks the
/// database unwritable until a later write commits.
#[derive(Debug, Default)]
pub struct WriteHealth {
    /// When the latest write failed, in ms since the epoch; 0 once one has committed since.
    failed_at: AtomicI64,
}

impl WriteHealth {
    pub fn failed(&self) {
        self.failed_at.store(now_ms(), Ordering::Relaxed);
    }

    pub fn committed(&self) {
        self.failed_at.store(0, Ordering::Relaxed);
    }

    /// Whether a task write failed recently and none has committed since.
    pub fn recently_failed(&self) -> bool {
        let at = self.failed_at.load(Ordering::Relaxed);
        at != 0 && now_ms() - at < WRITE_FAILURE_HOLDS_MS
    }
}

/// The schema is written in SQL that SQLite and PostgreSQL both accept, so one folder serves
/// both; should the dialects ever need different statements, split it then.
static MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

const SQLITE_PRAGMAS: &str = "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; \
     PRAGMA busy_timeout = 10000; PRAGMA foreign_keys = ON;";

impl Db {
    /// Connects and brings the schema up to date.
    pub async fn connect(url: &str) -> anyhow::Result<Self> {
        sqlx::any::install_default_drivers();
        let dialect = if url.starts_with("sqlite:") {
            Dialect::Sqlite
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            Dialect::Postgres
        } else {
            anyhow::bail!("unsupported database URL (use sqlite:// or postgres://)");
        };
        if dialect == Dialect::Sqlite {
            create_sqlite_parent_dir(url)?;
        }
        let options = AnyConnectOptions::from_str(url).context("parsing the database URL")?;
        let db = match dialect {
            Dialect::Sqlite => {
                // A file on this machine cannot drop a connection the way a network peer can, so
                // skip sqlx's ping before each acquire: every ping is a round trip to the
                // connection's thread, and profiles showed those hand-offs dominating.
                let pool = |size: u32| {
                    AnyPoolOptions::new()
                        .max_connections(size)
                        .test_before_acquire(false)
                        .after_connect(|conn, _| {
                            Box::pin(async move { conn.execute(SQLITE_PRAGMAS).await.map(|_| ()) })
                        })
                        .after_release(|conn, _| Box::pin(leaves_no_transaction(conn)))
                        .connect_with(options.clone())
                };
                let write = pool(1).await.context("opening the SQLite database")?;
                let read = pool(8).await.context("opening the SQLite database")?;
                Db { write, read, dialect, writes: Arc::default() }
            }
            Dialect::Postgres => {
                let pool = AnyPoolOptions::new()
                    .max_connections(20)
                    .connect_with(options)
                    .await
                    .context("connecting to PostgreSQL")?;
                Db { write: pool.clone(), read: pool, dialect, writes: Arc::default() }
            }
        };
        MIGRATIONS.run(&db.write).await.context("running database migrations")?;
        Ok(db)
    }

    /// Runs `job` unless another node is running the job named by `key` right now: on PostgreSQL
    /// under a session advisory lock (released with the connection should this node die); on
    /// SQLite, with one node, always. `None` means another node had it.
    pub async fn run_exclusive<T>(&self, key: i64, job: impl Future<Output = T>) -> Result<Option<T>, sqlx::Error> {
        if self.dialect == Dialect::Sqlite {
            return Ok(Some(job.await));
        }
        let mut conn = self.write.acquire().await?;
        let locked: bool =
            sqlx::query_scalar("SELECT pg_try_advisory_lock($1)").bind(key).fetch_one(&mut *conn).await?;
        if !locked {
            return Ok(None);
        }
        let out = job.await;
        sqlx::query("SELECT pg_advisory_unlock($1)").bind(key).execute(&mut *conn).await?;
        Ok(Some(out))
    }

    /// Whether the database takes writes: not while a task write failed recently (see
    /// [`WriteHealth`]), else one small row written and committed now.
    pub async fn probe_write(&self) -> anyhow::Result<()> {
        anyhow::ensure!(!self.writes.recently_failed(), "a task write failed for want of a writable database");
        let probed = self.write_probe_row().await;
        match &probed {
            Ok(()) => self.writes.committed(),
            Err(e) if is_unavailable(e) => self.writes.failed(),
            Err(_) => {}
        }
        Ok(probed?)
    }

    async fn write_probe_row(&self) -> Result<(), sqlx::Error> {
        sqlx::query(
            "INSERT INTO write_probe (id, probed_at) VALUES (1, $1) \
             ON CONFLICT (id) DO UPDATE SET probed_at = excluded.probed_at",
        )
        .bind(now_ms())
        .execute(&self.write)
        .await?;
        Ok(())
    }

    pub async fn close(&self) {
        self.write.close().await;
        self.read.close().await;
    }
}

/// Whether a released SQLite connection may go back to the pool: only when it is outside any
/// transaction. After a failed COMMIT (a full disk, say) SQLite has already rolled back, so the
/// ROLLBACK that sqlx sends on drop fails and sqlx still counts the connection as inside a
/// transaction; its next `begin` would be a SAVEPOINT, and one more failure later a
/// `ROLLBACK TO` that leaves a transaction open for good, in which every later "commit" only
/// releases a savepoint and nothing reaches the file. Such a connection is closed instead, and
/// the pool opens a fresh one.
async fn leaves_no_transaction(conn: &mut sqlx::AnyConnection) -> Result<bool, sqlx::Error> {
    if !conn.is_in_transaction() {
        return Ok(true);
    }
    // A dropped transaction's ROLLBACK may still be queued on the connection's thread: let it run.
    conn.ping().await?;
    if conn.is_in_transaction() {
        tracing::warn!("a database connection was left inside a failed transaction; opening a fresh one");
        return Ok(false);
    }
    Ok(true)
}

/// Whether a database error means that the database cannot take writes for now (full disk, I/O
/// error, read-only, a lock not granted in time, the connection lost) rather than a fault in the
/// request or in Easel. Such writes are refused with 503 and `Retry-After`; nothing was written.
pub fn is_unavailable(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(db) => {
            let code = db.code().unwrap_or_default();
            match code.parse::<i32>() {
                // SQLite's extended result code (at most 4 digits), whose low byte is the primary
                // code: BUSY, LOCKED, READONLY, IOERR, FULL, CANTOPEN.
                Ok(sqlite) if code.len() < 5 => matches!(sqlite & 0xff, 5 | 6 | 8 | 10 | 13 | 14),
                // PostgreSQL's five-character SQLSTATE: insufficient resources (disk full, out of
                // memory), a connection exception, a server shutting down, a read-only transaction.
                _ => code.starts_with("53") || code.starts_with("08") || code.starts_with("57P") || code == "25006",
            }
        }
        _ => false,
    }
}

/// The file a `sqlite:` URL names, if it names one (not `:memory:`).
pub fn sqlite_file(url: &str) -> Option<std::path::PathBuf> {
    let path = url.strip_prefix("sqlite:")?.trim_start_matches("//");
    let path = path.split('?').next().unwrap_or_default();
    (!path.is_empty() && path != ":memory:").then(|| std::path::PathBuf::from(path))
}

/// The URL as it may be shown: without a password.
pub fn display_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) if parsed.password().is_some() => {
            let _ = parsed.set_password(Some("***"));
            parsed.to_string()
        }
        _ => url.to_owned(),
    }
}

fn create_sqlite_parent_dir(url: &str) -> anyhow::Result<()> {
    let Some(path) = sqlite_file(url) else { return Ok(()) };
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    }
    Ok(())
}

/// `($1, $2), ($3, $4)` for `rows` rows of `columns` values: the VALUES of a multi-row INSERT.
pub fn placeholders(rows: usize, columns: usize) -> String {
    let row = |r: usize| {
        let cells: Vec<String> = (1..=columns).map(|c| format!("${}", r * columns + c)).collect();
        format!("({})", cells.join(", "))
    };
    (0..rows).map(row).collect::<Vec<_>>().join(", ")
}

/// `$first, $first+1, …`: `count` parameters for an `IN (…)` list after `first - 1` others.
pub fn parameter_list(first: usize, count: usize) -> String {
    (first..first + count).map(|n| format!("${n}")).collect::<Vec<_>>().join(", ")
}

/// Milliseconds since the Unix epoch, the unit of every stored time.
pub fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::placeholders;

    #[test]
    fn sqlite_urls_name_their_file() {
        use super::sqlite_file;
        assert_eq!(sqlite_file("sqlite://./d/easel.db?mode=rwc"), Some("./d/easel.db".into()));
        assert_eq!(sqlite_file("sqlite:/abs/e.db"), Some("/abs/e.db".into()));
        assert_eq!(sqlite_file("sqlite::memory:"), None);
        assert_eq!(sqlite_file("postgres://h/db"), None);
        assert_eq!(super::display_url("postgres://u:secret@h/db"), "postgres://u:***@h/db");
    }

    #[test]
    fn placeholders_number_every_value_once_in_order() {
        assert_eq!(placeholders(2, 3), "($1, $2, $3), ($4, $5, $6)");
        assert_eq!(placeholders(1, 1), "($1)");
    }
}
