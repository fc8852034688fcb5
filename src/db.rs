//! Database connection: one `sqlx::Any` code path for SQLite and PostgreSQL.
//!
//! SQLite allows one writer at a time, so writes go through a single-connection pool (queued
//! fairly by sqlx instead of spinning in SQLite's busy handler) and reads through a wider pool.
//! On PostgreSQL both handles are the same pool.

use std::str::FromStr;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context;
use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::{AnyPool, Executor};

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
                        .connect_with(options.clone())
                };
                let write = pool(1).await.context("opening the SQLite database")?;
                let read = pool(8).await.context("opening the SQLite database")?;
                Db { write, read, dialect }
            }
            Dialect::Postgres => {
                let pool = AnyPoolOptions::new()
                    .max_connections(20)
                    .connect_with(options)
                    .await
                    .context("connecting to PostgreSQL")?;
                Db { write: pool.clone(), read: pool, dialect }
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

    pub async fn close(&self) {
        self.write.close().await;
        self.read.close().await;
    }
}

fn create_sqlite_parent_dir(url: &str) -> anyhow::Result<()> {
    let path = url.trim_start_matches("sqlite://").trim_start_matches("sqlite:");
    let path = path.split('?').next().unwrap_or_default();
    if path.is_empty() || path == ":memory:" {
        return Ok(());
    }
    if let Some(parent) = std::path::Path::new(path).parent().filter(|p| !p.as_os_str().is_empty()) {
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

/// Milliseconds since the Unix epoch, the unit of every stored time.
pub fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::placeholders;

    #[test]
    fn placeholders_number_every_value_once_in_order() {
        assert_eq!(placeholders(2, 3), "($1, $2, $3), ($4, $5, $6)");
        assert_eq!(placeholders(1, 1), "($1)");
    }
}
