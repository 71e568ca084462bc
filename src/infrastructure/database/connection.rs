//! Opening the database: per-connection pragmas, pool limits, creation of the file and its
//! folder, and migrations.

use std::collections::BTreeMap;
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use abathur_core::error::DatabaseError;
use abathur_core::models::TaskStatus;
use sqlx::migrate::MigrateError;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{Sqlite, Transaction};

use super::errors::{classify, classify_ref};
use super::row::RowContext;
use super::MIGRATOR;

/// How many times opening retries while another process sets up a new file (about 2 s).
const OPEN_BUSY_ATTEMPTS: u32 = 20;

/// Pool limits and lock waiting. The defaults are the specification's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatabaseConfig {
    /// Connections kept open even when idle (default 5).
    pub min_connections: u32,
    /// Connections open at most (default 10).
    pub max_connections: u32,
    /// An idle connection above the minimum is closed after this long (default 30 s).
    pub idle_timeout: Duration,
    /// A connection is replaced after this long (default 30 min).
    pub max_lifetime: Duration,
    /// Waiting for a free connection fails after this long (default 10 s).
    pub acquire_timeout: Duration,
    /// Waiting for another writer's lock fails after this long (default 5 s).
    pub busy_timeout: Duration,
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        Self {
            min_connections: 5,
            max_connections: 10,
            idle_timeout: Duration::from_secs(30),
            max_lifetime: Duration::from_secs(1800),
            acquire_timeout: Duration::from_secs(10),
            busy_timeout: Duration::from_secs(5),
        }
    }
}

/// An open database: a pool of connections that all carry the same pragmas.
#[derive(Debug, Clone)]
pub struct DatabaseConnection {
    pool: SqlitePool,
}

impl DatabaseConnection {
    /// Opens the database at `database_url` (`sqlite:path/to/file.db`, or `sqlite::memory:`)
    /// with the default [`DatabaseConfig`]. A missing file, and its folder, are created.
    ///
    /// # Errors
    /// `Connection` when the URL is malformed, the folder cannot be made or the file cannot be
    /// opened.
    pub async fn new(database_url: &str) -> Result<Self, DatabaseError> {
        Self::with_config(database_url, DatabaseConfig::default()).await
    }

    /// Opens the database at `database_url` with `config`.
    ///
    /// # Errors
    /// As for [`DatabaseConnection::new`].
    pub async fn with_config(
        database_url: &str,
        config: DatabaseConfig,
    ) -> Result<Self, DatabaseError> {
        if !database_url.starts_with("sqlite:") {
            return Err(DatabaseError::Connection(format!(
                "{database_url:?} is not a SQLite database URL (sqlite:path/to/file.db or sqlite::memory:)"
            )));
        }
        let options = SqliteConnectOptions::from_str(database_url).map_err(|e| {
            DatabaseError::Connection(format!(
                "{database_url:?} is not a SQLite database URL: {e}"
            ))
        })?;
        let in_memory = is_in_memory(database_url);
        Self::open(options, in_memory, config).await
    }

    /// Opens the database file at `path` with `config`, creating it and its folder if missing.
    ///
    /// # Errors
    /// As for [`DatabaseConnection::new`].
    pub async fn open_path(path: &Path, config: DatabaseConfig) -> Result<Self, DatabaseError> {
        Self::open(SqliteConnectOptions::new().filename(path), false, config).await
    }

    async fn open(
        options: SqliteConnectOptions,
        in_memory: bool,
        config: DatabaseConfig,
    ) -> Result<Self, DatabaseError> {
        if !in_memory {
            if let Some(parent) = options.get_filename().parent() {
                if !parent.as_os_str().is_empty() {
                    std::fs::create_dir_all(parent).map_err(|e| {
                        DatabaseError::Connection(format!(
                            "cannot create {}: {e}",
                            parent.display()
                        ))
                    })?;
                }
            }
        }
        // Pragmas set in the connect options run on every connection the pool opens, not only
        // the first.
        let options = options
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            .busy_timeout(config.busy_timeout)
            .create_if_missing(true);
        // Switching a new file to WAL needs an exclusive lock, and SQLite answers SQLITE_BUSY
        // at once, without the busy handler, when another process is doing the same: several
        // processes started together on a new file retry here instead of failing.
        let mut attempt = 0;
        loop {
            let connected = SqlitePoolOptions::new()
                .min_connections(config.min_connections)
                .max_connections(config.max_connections)
                .idle_timeout(config.idle_timeout)
                .max_lifetime(config.max_lifetime)
                .acquire_timeout(config.acquire_timeout)
                // A SQLite connection is a file handle in this process: it cannot drop the
                // way a network connection does, so a ping before each use (one hop to the
                // connection's thread) buys nothing.
                .test_before_acquire(false)
                .connect_with(options.clone())
                .await
                .map_err(|e| match classify(e, "database", "") {
                    DatabaseError::Other(message) => DatabaseError::Connection(message),
                    other => other,
                });
            match connected {
                Ok(pool) => return Ok(Self { pool }),
                Err(DatabaseError::Busy) if attempt < OPEN_BUSY_ATTEMPTS => {
                    attempt += 1;
                    tracing::debug!(attempt, "the new database is locked; opening again");
                    tokio::time::sleep(Duration::from_millis(10 * u64::from(attempt))).await;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Brings the schema up to date. Safe when several processes start at once on a new file:
    /// a process that loses the race waits for the winner's migration and finds it applied.
    ///
    /// # Errors
    /// `Migration` when a migration fails, when one was interrupted half-way, or when the
    /// database was migrated by a build whose migrations differ from this one's.
    pub async fn migrate(&self) -> Result<(), DatabaseError> {
        const BUSY_ATTEMPTS: u32 = 20;
        let mut busy_attempts = 0;
        // Each lost race is against another process committing one of our migrations, so
        // there can be at most one per migration.
        let max_reruns = MIGRATOR.iter().count();
        let mut reruns = 0;
        loop {
            let err = match MIGRATOR.run(&self.pool).await {
                Ok(()) => return Ok(()),
                Err(err) => err,
            };
            let failed_sql = match &err {
                MigrateError::Execute(e) | MigrateError::ExecuteMigration(e, _) => Some(e),
                _ => None,
            };
            let busy = failed_sql.is_some_and(|e| {
                matches!(
                    classify_ref(e),
                    DatabaseError::Busy | DatabaseError::Timeout
                )
            });
            if busy && busy_attempts < BUSY_ATTEMPTS {
                busy_attempts += 1;
                tracing::debug!(busy_attempts, error = %err, "migration waits for another writer");
                tokio::time::sleep(Duration::from_millis(25 * u64::from(busy_attempts))).await;
            } else if failed_sql.is_some() && !busy && reruns < max_reruns {
                // Another process may have applied the same migration between our check and
                // our write ("table already exists"); one more run finds it applied.
                reruns += 1;
                tracing::debug!(error = %err, "migration failed; checking whether another process applied it");
            } else {
                tracing::warn!(error = %err, "migration failed");
                return Err(DatabaseError::Migration(migration_message(&err)));
            }
        }
    }

    /// The newest migration applied, or `None` before the first.
    ///
    /// # Errors
    /// Only the store's own failures.
    pub async fn schema_version(&self) -> Result<Option<i64>, DatabaseError> {
        let failed = |e: sqlx::Error| classify(e, "database", "");
        // A database no migration has touched has no bookkeeping table yet.
        let tracked: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM sqlite_schema WHERE type = 'table' AND name = '_sqlx_migrations')",
        )
        .fetch_one(&self.pool)
        .await
        .map_err(failed)?;
        if !tracked {
            return Ok(None);
        }
        sqlx::query_scalar("SELECT MAX(version) FROM _sqlx_migrations WHERE success")
            .fetch_one(&self.pool)
            .await
            .map_err(failed)
    }

    /// What the database holds: schema version, journal mode, rows per table and tasks per
    /// status.
    ///
    /// # Errors
    /// Only the store's own failures.
    pub async fn status(&self) -> Result<DatabaseStatus, DatabaseError> {
        let failed = |e: sqlx::Error| classify(e, "database", "");
        let schema_version = self.schema_version().await?;
        let journal_mode: String = sqlx::query_scalar("PRAGMA journal_mode")
            .fetch_one(&self.pool)
            .await
            .map_err(failed)?;
        let names: Vec<String> = sqlx::query_scalar(
            "SELECT name FROM pragma_table_list
             WHERE schema = 'main' AND type = 'table'
               AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\'
               AND name NOT LIKE '\\_sqlx\\_%' ESCAPE '\\'
             ORDER BY name",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(failed)?;
        let mut tables = BTreeMap::new();
        for name in names {
            // A table name cannot be bound; it comes from the schema itself and is quoted as
            // an identifier.
            let sql = format!("SELECT COUNT(*) FROM \"{}\"", name.replace('"', "\"\""));
            let rows: i64 = sqlx::query_scalar(&sql)
                .fetch_one(&self.pool)
                .await
                .map_err(failed)?;
            tables.insert(name, rows);
        }
        let mut tasks_by_status: BTreeMap<TaskStatus, i64> =
            TaskStatus::ALL.iter().map(|s| (*s, 0)).collect();
        let counted: Vec<(String, i64)> =
            sqlx::query_as("SELECT status, COUNT(*) FROM tasks GROUP BY status")
                .fetch_all(&self.pool)
                .await
                .map_err(failed)?;
        for (status, rows) in counted {
            let cx = RowContext {
                table: "tasks",
                id: "",
            };
            tasks_by_status.insert(cx.parse("status", &status)?, rows);
        }
        Ok(DatabaseStatus {
            schema_version,
            journal_mode,
            tables,
            tasks_by_status,
        })
    }

    /// Runs SQLite's `integrity_check` and `foreign_key_check` over the whole database.
    ///
    /// # Errors
    /// Only the store's own failures; problems found are in the report.
    pub async fn check(&self) -> Result<CheckReport, DatabaseError> {
        let failed = |e: sqlx::Error| classify(e, "database", "");
        let integrity: Vec<String> = sqlx::query_scalar("PRAGMA integrity_check")
            .fetch_all(&self.pool)
            .await
            .map_err(failed)?;
        let integrity_problems = if integrity == ["ok"] {
            Vec::new()
        } else {
            integrity
        };
        let rows: Vec<(String, Option<i64>, String)> =
            sqlx::query_as("SELECT \"table\", rowid, parent FROM pragma_foreign_key_check")
                .fetch_all(&self.pool)
                .await
                .map_err(failed)?;
        let foreign_key_problems = rows
            .into_iter()
            .map(|(table, rowid, parent)| ForeignKeyProblem {
                table,
                rowid,
                parent,
            })
            .collect();
        Ok(CheckReport {
            integrity_problems,
            foreign_key_problems,
        })
    }

    /// Writes a consistent copy of the database to `target` while it stays in use, with
    /// `VACUUM INTO`: the copy is one snapshot, compacted, and needs no WAL file beside it.
    ///
    /// # Errors
    /// `Validation` when `target` already exists (nothing is overwritten) or its folder does
    /// not; `Other` when the copy cannot be written there.
    pub async fn backup_to(&self, target: &Path) -> Result<(), DatabaseError> {
        if target.exists() {
            return Err(DatabaseError::validation(
                "backup path",
                format!("{} already exists; choose a new file", target.display()),
            ));
        }
        if let Some(folder) = target.parent().filter(|f| !f.as_os_str().is_empty()) {
            if !folder.is_dir() {
                return Err(DatabaseError::validation(
                    "backup path",
                    format!("{} is not an existing folder", folder.display()),
                ));
            }
        }
        let target_text = target.to_str().ok_or_else(|| {
            DatabaseError::validation("backup path", "must be valid UTF-8".to_string())
        })?;
        sqlx::query("VACUUM INTO ?")
            .bind(target_text)
            .execute(&self.pool)
            .await
            .map_err(|e| match classify(e, "backup", target_text) {
                DatabaseError::Other(message) => DatabaseError::Other(format!(
                    "cannot write the backup to {}: {message}",
                    target.display()
                )),
                other => other,
            })?;
        Ok(())
    }

    /// Begins a write transaction of your own with `BEGIN IMMEDIATE`, which takes the write
    /// lock at once: read-then-write transactions on it never fail with SQLITE_BUSY while
    /// another writer finishes within the busy timeout.
    ///
    /// # Errors
    /// `Busy` when another writer holds the lock past the busy timeout; `Timeout` when no
    /// connection is free in time.
    pub async fn begin_write(&self) -> Result<Transaction<'static, Sqlite>, DatabaseError> {
        begin_write(&self.pool).await
    }

    /// The pool, for building repositories.
    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    /// Closes every connection, waiting for those in use to be returned.
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// What [`DatabaseConnection::status`] reports.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct DatabaseStatus {
    /// The newest migration applied, or `None` before the first.
    pub schema_version: Option<i64>,
    /// SQLite's journal mode: `wal` for a file opened by abathur, `memory` in memory.
    pub journal_mode: String,
    /// Rows per table, by table name (SQLite's and sqlx's own tables left out).
    pub tables: BTreeMap<String, i64>,
    /// Tasks per status, every status present.
    pub tasks_by_status: BTreeMap<TaskStatus, i64>,
}

/// What [`DatabaseConnection::check`] found.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct CheckReport {
    /// `integrity_check`'s findings; empty when it says `ok`.
    pub integrity_problems: Vec<String>,
    /// Rows that refer to a parent row that does not exist.
    pub foreign_key_problems: Vec<ForeignKeyProblem>,
}

impl CheckReport {
    /// True when nothing was found.
    pub fn is_ok(&self) -> bool {
        self.integrity_problems.is_empty() && self.foreign_key_problems.is_empty()
    }
}

/// A row whose foreign key names a missing parent.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ForeignKeyProblem {
    pub table: String,
    /// The row's rowid; `None` for a table without rowids.
    pub rowid: Option<i64>,
    /// The table the missing parent should be in.
    pub parent: String,
}

/// The user's words for a failed migration.
fn migration_message(err: &MigrateError) -> String {
    match err {
        MigrateError::Dirty(v) => format!(
            "migration {v} was interrupted and is only partly applied; restore the database from a backup"
        ),
        MigrateError::VersionMissing(v) => format!(
            "the database has migration {v}, which this build of abathur does not know; use a newer abathur"
        ),
        MigrateError::VersionMismatch(v) => format!(
            "migration {v} applied to this database differs from this build's; the database was made by another build"
        ),
        MigrateError::Execute(e) | MigrateError::ExecuteMigration(e, _) => match classify_ref(e) {
            DatabaseError::Other(message) => format!("a migration failed: {message}"),
            other => format!("a migration failed: {other}"),
        },
        other => other.to_string(),
    }
}

fn is_in_memory(url: &str) -> bool {
    url.contains(":memory:") || url.contains("mode=memory")
}

/// Begins a write transaction that takes the write lock at once.
///
/// BEGIN IMMEDIATE: a deferred transaction that reads and then writes cannot upgrade its lock
/// when another connection committed in between; SQLite then fails it with SQLITE_BUSY at once,
/// without waiting on busy_timeout. Taking the lock first makes the wait happen at BEGIN, where
/// busy_timeout applies.
pub(crate) async fn begin_write(
    pool: &SqlitePool,
) -> Result<Transaction<'static, Sqlite>, DatabaseError> {
    pool.begin_with("BEGIN IMMEDIATE")
        .await
        .map_err(|e| classify(e, "transaction", ""))
}
