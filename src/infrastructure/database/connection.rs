//! Opening the database: per-connection pragmas, pool limits, creation of the file and its
//! folder, and migrations.

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use abathur_core::error::DatabaseError;
use sqlx::migrate::MigrateError;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{Sqlite, Transaction};

use super::errors::classify;
use super::MIGRATOR;

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
    pub async fn with_config(database_url: &str, config: DatabaseConfig) -> Result<Self, DatabaseError> {
        let options = SqliteConnectOptions::from_str(database_url).map_err(|e| {
            DatabaseError::Connection(format!("{database_url:?} is not a SQLite database URL: {e}"))
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
                        DatabaseError::Connection(format!("cannot create {}: {e}", parent.display()))
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
        let pool = SqlitePoolOptions::new()
            .min_connections(config.min_connections)
            .max_connections(config.max_connections)
            .idle_timeout(config.idle_timeout)
            .max_lifetime(config.max_lifetime)
            .acquire_timeout(config.acquire_timeout)
            .connect_with(options)
            .await
            .map_err(|e| match classify(e, "database", "") {
                DatabaseError::Other(message) => DatabaseError::Connection(message),
                other => other,
            })?;
        Ok(Self { pool })
    }

    /// Brings the schema up to date. Safe when several processes start at once on a new file:
    /// a process that loses the race waits for the winner's migration and finds it applied.
    ///
    /// # Errors
    /// `Migration` when a migration fails, or when the database was migrated by a build whose
    /// migrations differ from this one's.
    pub async fn migrate(&self) -> Result<(), DatabaseError> {
        const ATTEMPTS: u32 = 20;
        let mut attempt = 1;
        loop {
            match MIGRATOR.run(&self.pool).await {
                Ok(()) => return Ok(()),
                // A version this build does not know, or whose checksum differs, will not go
                // away by waiting.
                Err(e @ (MigrateError::VersionMissing(_) | MigrateError::VersionMismatch(_))) => {
                    return Err(DatabaseError::Migration(e.to_string()))
                }
                Err(e) if attempt >= ATTEMPTS => return Err(DatabaseError::Migration(e.to_string())),
                Err(e) => {
                    tracing::debug!(attempt, error = %e, "migration raced another process; retrying");
                    tokio::time::sleep(Duration::from_millis(25 * u64::from(attempt))).await;
                    attempt += 1;
                }
            }
        }
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

fn is_in_memory(url: &str) -> bool {
    url.contains(":memory:") || url.contains("mode=memory")
}

/// Begins a write transaction that takes the write lock at once.
///
/// BEGIN IMMEDIATE: a deferred transaction that reads and then writes cannot upgrade its lock
/// when another connection committed in between; SQLite then fails it with SQLITE_BUSY at once,
/// without waiting on busy_timeout. Taking the lock first makes the wait happen at BEGIN, where
/// busy_timeout applies.
pub(crate) async fn begin_write(pool: &SqlitePool) -> Result<Transaction<'static, Sqlite>, DatabaseError> {
    pool.begin_with("BEGIN IMMEDIATE")
        .await
        .map_err(|e| classify(e, "transaction", ""))
}
