//! Opening the database: per-connection pragmas, pool limits, creation of the file and its
//! folder, whether a command may create or migrate it, migrations, and backups.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
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
use super::location::DatabaseLocation;
use super::row::RowContext;
use super::writer::{self, Settings};
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
    /// An idle connection above the minimum is closed after this long (default 30 s). Not for
    /// an in-memory database, which lives only while a connection is open.
    pub idle_timeout: Duration,
    /// A connection is replaced after this long (default 30 min). Not for an in-memory
    /// database either.
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

/// What a command may do to the database it opens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpenMode {
    /// Only read: never create the file or migrate it, and refuse one that is missing, empty,
    /// not abathur's or at an older schema.
    ///
    /// The connections may write all the same (unless the file or the URL is read-only):
    /// SQLite merges the WAL into the file and removes it only when the last connection to
    /// close can write, and a reader should leave no `-wal` file behind.
    Read,
    /// Look at the file as it is, whatever its schema (`db check`, `db backup`): never create
    /// or migrate it.
    Inspect,
    /// Read and write: create the file (and its folder) when missing and bring its schema up
    /// to date, but refuse a database that is not abathur's.
    Write,
    /// Create the file when missing and take any SQLite database as it is, even one that is
    /// not abathur's, leaving migration to the caller (`init`, `db migrate`).
    Setup,
}

/// What a file's schema says about who made it.
#[derive(Debug)]
enum SchemaState {
    /// No tables at all: a new or empty file.
    Empty,
    /// abathur's, with every migration of this build applied.
    Current,
    /// abathur's, with some of this build's migrations still to apply.
    Behind { found: Option<i64>, expected: i64 },
    /// Not abathur's, or not one abathur can use; the error says why.
    Refused(DatabaseError),
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
        Self::open(options.create_if_missing(true), in_memory, config).await
    }

    /// Opens the database file at `path` with `config`, creating it and its folder if missing.
    ///
    /// # Errors
    /// As for [`DatabaseConnection::new`].
    pub async fn open_path(path: &Path, config: DatabaseConfig) -> Result<Self, DatabaseError> {
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true);
        Self::open(options, false, config).await
    }

    /// Opens the database at `location` for what `mode` allows, and, in [`OpenMode::Write`],
    /// brings its schema up to date. Nothing is created, migrated or switched to WAL before
    /// the file's schema has been read and found to be abathur's (or the mode is
    /// [`OpenMode::Setup`]).
    ///
    /// # Errors
    /// `NoDatabase` when the file is missing (or has no tables) and the mode or the URL does
    /// not create it; `ForeignSchema` when its tables are not abathur's; `SchemaOutOfDate`
    /// in [`OpenMode::Read`] when migrations are pending; `Migration` when it has migrations
    /// this build does not know; `NotADatabase`, `Corrupt`, `ReadOnly`, `DiskFull`, `Io` and
    /// `Connection` as SQLite reports them.
    pub async fn open_location(
        location: &DatabaseLocation,
        config: DatabaseConfig,
        mode: OpenMode,
    ) -> Result<Self, DatabaseError> {
        let options = location.connect_options();
        let Some(path) = location.path() else {
            // A database in memory starts empty every time: there is nothing to refuse, and
            // nothing outlives the process.
            let db = Self::open(options, true, config).await?;
            if mode != OpenMode::Setup {
                db.migrate().await?;
            }
            return Ok(db);
        };
        if path.is_dir() {
            return Err(DatabaseError::Connection(format!(
                "{} is a folder, not a database file",
                path.display()
            )));
        }
        let exists = path.exists();
        let creates = matches!(mode, OpenMode::Write | OpenMode::Setup) && location.may_create();
        if !exists && !creates {
            return Err(DatabaseError::NoDatabase {
                location: location.to_string(),
            });
        }
        // SQLite cannot open a WAL database without its -shm file, so on a read-only
        // filesystem even reading fails at open with SQLITE_CANTOPEN. Nothing can change
        // the file there: reading it as immutable is safe, and is the only way to read it.
        let reads_only = matches!(mode, OpenMode::Read | OpenMode::Inspect);
        let options = if reads_only && on_read_only_filesystem(path) {
            options.immutable(true)
        } else {
            options
        };
        let cannot_open = |err: DatabaseError| explain_cannot_open(err, path);
        let mut migrate = mode == OpenMode::Write;
        if exists && matches!(mode, OpenMode::Read | OpenMode::Write) {
            match schema_state(options.clone()).await.map_err(cannot_open)? {
                SchemaState::Current => migrate = false,
                SchemaState::Empty if mode == OpenMode::Read => {
                    return Err(DatabaseError::NoDatabase {
                        location: location.to_string(),
                    })
                }
                SchemaState::Empty => {}
                SchemaState::Behind { found, expected } if mode == OpenMode::Read => {
                    return Err(DatabaseError::SchemaOutOfDate {
                        found: found.unwrap_or(0),
                        expected,
                    })
                }
                SchemaState::Behind { .. } => {}
                SchemaState::Refused(DatabaseError::ForeignSchema { detail, .. }) => {
                    return Err(DatabaseError::ForeignSchema {
                        location: location.to_string(),
                        detail,
                    })
                }
                SchemaState::Refused(err) => return Err(err),
            }
        }
        let db = if reads_only || location.is_read_only() {
            Self::connect(options, location.is_in_memory(), config)
                .await
                .map_err(cannot_open)?
        } else {
            Self::open(options.create_if_missing(creates), false, config)
                .await
                .map_err(cannot_open)?
        };
        if migrate {
            if let Err(err) = db.migrate().await {
                db.close().await;
                return Err(err);
            }
        }
        Ok(db)
    }

    /// Opens a pool on `options` as they are: no journal mode is set, nothing is created.
    async fn connect(
        options: SqliteConnectOptions,
        in_memory: bool,
        config: DatabaseConfig,
    ) -> Result<Self, DatabaseError> {
        let options = options.foreign_keys(true).busy_timeout(config.busy_timeout);
        let settings = Settings {
            busy_timeout: config.busy_timeout,
            synchronous: None,
            foreign_keys: true,
        };
        Self::connect_pool(options, in_memory, config, settings).await
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
            .busy_timeout(config.busy_timeout);
        // The writer's connection carries the same settings ([`super::writer`]).
        let settings = Settings {
            busy_timeout: config.busy_timeout,
            synchronous: Some(1),
            foreign_keys: true,
        };
        Self::connect_pool(options, in_memory, config, settings).await
    }

    async fn connect_pool(
        options: SqliteConnectOptions,
        in_memory: bool,
        config: DatabaseConfig,
        settings: Settings,
    ) -> Result<Self, DatabaseError> {
        // An in-memory database lives only while one of its connections is open. sqlx closes
        // a connection past its idle timeout or lifetime before it opens the next, whatever
        // `min_connections` says, so an idle server would lose everything: its connections
        // are never retired.
        let (idle_timeout, max_lifetime) = if in_memory {
            (None, None)
        } else {
            (Some(config.idle_timeout), Some(config.max_lifetime))
        };
        // Switching a new file to WAL needs an exclusive lock, and SQLite answers SQLITE_BUSY
        // at once, without the busy handler, when another process is doing the same: several
        // processes started together on a new file retry here instead of failing.
        let mut attempt = 0;
        loop {
            let connected = SqlitePoolOptions::new()
                .min_connections(config.min_connections)
                .max_connections(config.max_connections)
                .idle_timeout(idle_timeout)
                .max_lifetime(max_lifetime)
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
                Ok(pool) => {
                    writer::register(&pool, settings);
                    return Ok(Self { pool });
                }
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
                // sqlx keeps every project's migrations in one table, so a database that
                // records another project's cannot take abathur's beside them.
                if matches!(
                    err,
                    MigrateError::VersionMissing(_) | MigrateError::VersionMismatch(_)
                ) {
                    if let Some(detail) = self.foreign_migrations().await {
                        return Err(DatabaseError::Migration(format!(
                            "the database is not abathur's ({detail}), and abathur cannot add its \
                             migrations beside another project's; give abathur a file of its own"
                        )));
                    }
                }
                // A migration stopped by the storage (read-only, full, damaged) is reported
                // as that, with its own exit code, not as a fault of the migration.
                if let Some(cause) = failed_sql.map(classify_ref).filter(|c| {
                    matches!(
                        c,
                        DatabaseError::ReadOnly
                            | DatabaseError::DiskFull
                            | DatabaseError::Io
                            | DatabaseError::Corrupt
                            | DatabaseError::NotADatabase
                    )
                }) {
                    return Err(cause);
                }
                return Err(DatabaseError::Migration(migration_message(&err)));
            }
        }
    }

    /// What shows the recorded migrations to be another project's, if they are.
    async fn foreign_migrations(&self) -> Option<String> {
        let mut conn = self.pool.acquire().await.ok()?;
        match read_schema_state(&mut conn).await {
            Ok(SchemaState::Refused(DatabaseError::ForeignSchema { detail, .. })) => Some(detail),
            _ => None,
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
        // The counts the triggers of migration 0009 keep, against a count of the tasks, read
        // in one snapshot; a database at an older schema has none to compare.
        let mut tx = self.pool.begin().await.map_err(failed)?;
        let kept_table: Option<String> = sqlx::query_scalar(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name = 'task_status_counts'",
        )
        .fetch_optional(&mut *tx)
        .await
        .map_err(failed)?;
        let mut repairable_problems = Vec::new();
        if kept_table.is_some() {
            let kept: Vec<(String, i64)> =
                sqlx::query_as("SELECT status, tasks FROM task_status_counts")
                    .fetch_all(&mut *tx)
                    .await
                    .map_err(failed)?;
            let counted: Vec<(String, i64)> =
                sqlx::query_as("SELECT status, COUNT(*) FROM tasks GROUP BY status")
                    .fetch_all(&mut *tx)
                    .await
                    .map_err(failed)?;
            repairable_problems =
                abathur_core::ports::status_count_problems(&kept, &counted, REPAIR_STATUS_COUNTS);
        }
        drop(tx);
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
            repairable_problems,
        })
    }

    /// Writes a consistent copy of the database to `target` while it stays in use, with
    /// `VACUUM INTO`: the copy is one snapshot, compacted, and needs no WAL file beside it.
    ///
    /// The copy is written under a temporary name in `target`'s folder and given its name
    /// only once complete, so `target` is either the whole copy or absent: a copy cut short
    /// (a full disk) is removed, never left to pass for a backup.
    ///
    /// # Errors
    /// `Validation` when `target` already exists (nothing is overwritten) or its folder does
    /// not; `DiskFull`, `ReadOnly`, `Io` or `Connection` when the copy cannot be written there.
    pub async fn backup_to(&self, target: &Path) -> Result<(), DatabaseError> {
        let exists = || {
            DatabaseError::validation(
                "backup path",
                format!("{} already exists; choose a new file", target.display()),
            )
        };
        if target.exists() {
            return Err(exists());
        }
        let folder = target
            .parent()
            .filter(|f| !f.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        if !folder.is_dir() {
            return Err(DatabaseError::validation(
                "backup path",
                format!("{} is not an existing folder", folder.display()),
            ));
        }
        let name = target.file_name().ok_or_else(|| {
            DatabaseError::validation("backup path", "must name a file".to_string())
        })?;
        // Hidden, and named after the process, so two backups at once never share it.
        let partial = folder.join(format!(
            ".{}.partial-{}",
            name.to_string_lossy(),
            std::process::id()
        ));
        let partial_text = partial.to_str().ok_or_else(|| {
            DatabaseError::validation("backup path", "must be valid UTF-8".to_string())
        })?;
        let remove_partial = || {
            for leftover in [
                partial.clone(),
                PathBuf::from(format!("{partial_text}-journal")),
            ] {
                if let Err(e) = std::fs::remove_file(&leftover) {
                    if e.kind() != std::io::ErrorKind::NotFound {
                        tracing::warn!(path = %leftover.display(), error = %e, "cannot remove a partial backup");
                    }
                }
            }
        };
        remove_partial();
        remove_abandoned_partials(folder, &name.to_string_lossy());
        if let Err(e) = sqlx::query("VACUUM INTO ?")
            .bind(partial_text)
            .execute(&self.pool)
            .await
        {
            remove_partial();
            return Err(classify(e, "backup", partial_text));
        }
        // On disk before it is named: a crash never leaves a backup whose pages are not.
        if let Err(e) = std::fs::File::open(&partial).and_then(|f| f.sync_all()) {
            remove_partial();
            return Err(match e.raw_os_error() {
                Some(libc::ENOSPC) => DatabaseError::DiskFull,
                _ => DatabaseError::Io,
            });
        }
        // A hard link gives the copy its name only if the name is still free, where a rename
        // would replace a file made meanwhile.
        let named = match std::fs::hard_link(&partial, target) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Err(exists()),
            // A filesystem without hard links: rename, having checked the name is free.
            Err(_) if !target.exists() => std::fs::rename(&partial, target).map_err(|e| {
                DatabaseError::Connection(format!(
                    "cannot name the backup {}: {e}",
                    target.display()
                ))
            }),
            Err(_) => Err(exists()),
        };
        remove_partial();
        named
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

    /// Closes every connection, waiting for those in use to be returned, so that the last to
    /// close merges the WAL into the database file and removes it.
    ///
    /// The database's writer stops first (unless another open pool of the process still
    /// uses it): it runs what was handed to it, closes its connection and ends its thread.
    /// Writes through this pool then fail, as reads do once the pool is closed.
    ///
    /// A connection dropped by its user goes back to the pool in a task of its own. sqlx's
    /// `close` can miss one that lands in the pool while it runs: that connection is then
    /// closed later, on its thread, after the process may have exited, and the WAL stays
    /// unmerged. So the pool is closed only once every connection is back in it (or after the
    /// acquire timeout, for one that never comes back).
    pub async fn close(&self) {
        writer::stop(&self.pool).await;
        let deadline = tokio::time::Instant::now() + self.pool.options().get_acquire_timeout();
        while self.pool.size() as usize > self.pool.num_idle()
            && tokio::time::Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
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

/// The statement `db check` names to set the counts per status right: every status gets the
/// number of its tasks, its row made again if it went missing.
const REPAIR_STATUS_COUNTS: &str = "`INSERT INTO task_status_counts (status, tasks) \
     SELECT s.column1, (SELECT COUNT(*) FROM tasks t WHERE t.status = s.column1) \
     FROM (VALUES ('pending'), ('blocked'), ('ready'), ('running'), ('completed'), \
     ('failed'), ('cancelled')) s WHERE true \
     ON CONFLICT (status) DO UPDATE SET tasks = excluded.tasks`";

/// What [`DatabaseConnection::check`] found.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct CheckReport {
    /// `integrity_check`'s findings; empty when it says `ok`.
    pub integrity_problems: Vec<String>,
    /// Rows that refer to a parent row that does not exist.
    pub foreign_key_problems: Vec<ForeignKeyProblem>,
    /// Kept counts per status that disagree with the tasks, each naming its repair.
    pub repairable_problems: Vec<String>,
}

impl CheckReport {
    /// True when nothing was found.
    pub fn is_ok(&self) -> bool {
        self.integrity_problems.is_empty()
            && self.foreign_key_problems.is_empty()
            && self.repairable_problems.is_empty()
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

/// SQLite answers SQLITE_CANTOPEN when it cannot create the `-wal` or `-shm` file beside the
/// database, or open the database for writing: when the file or its folder is read-only, say
/// so rather than "cannot open".
fn explain_cannot_open(err: DatabaseError, path: &Path) -> DatabaseError {
    if !matches!(err, DatabaseError::Connection(_)) || !path.exists() {
        return err;
    }
    let folder = path
        .parent()
        .filter(|f| !f.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    if !writable(path) || !writable(folder) {
        DatabaseError::ReadOnly
    } else {
        err
    }
}

/// Whether this process may write `path` (`access(2)`, which also reports a read-only
/// filesystem to root).
fn writable(path: &Path) -> bool {
    nix::unistd::access(path, nix::unistd::AccessFlags::W_OK).is_ok()
}

/// Removes the partial copies that backups to `name` in `folder` left when they were killed
/// (`.NAME.partial-PID` and its `-journal`): nothing else ever would, and each can be as large
/// as the database. A copy whose process still runs is another backup's, and is left alone.
fn remove_abandoned_partials(folder: &Path, name: &str) {
    let prefix = format!(".{name}.partial-");
    let Ok(entries) = std::fs::read_dir(folder) else {
        return;
    };
    for entry in entries.flatten() {
        let file_name = entry.file_name();
        let Some(pid) = file_name
            .to_str()
            .and_then(|n| n.strip_prefix(&prefix))
            .map(|rest| rest.strip_suffix("-journal").unwrap_or(rest))
            .and_then(|pid| pid.parse::<libc::pid_t>().ok())
        else {
            continue;
        };
        if pid > 0 && !process_runs(pid) {
            if let Err(e) = std::fs::remove_file(entry.path()) {
                tracing::warn!(path = %entry.path().display(), error = %e, "cannot remove an abandoned partial backup");
            }
        }
    }
}

/// Whether a process `pid` exists (one of another user's counts).
fn process_runs(pid: libc::pid_t) -> bool {
    // No signal: only whether the process exists and may be signalled.
    match nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None) {
        Ok(()) => true,
        Err(errno) => errno == nix::errno::Errno::EPERM,
    }
}

/// Whether the filesystem holding `path` is mounted read-only.
fn on_read_only_filesystem(path: &Path) -> bool {
    nix::sys::statvfs::statvfs(path).is_ok_and(|stats| {
        stats
            .flags()
            .contains(nix::sys::statvfs::FsFlags::ST_RDONLY)
    })
}

/// Reads who made the file at `options`, on a connection of its own that sets no journal
/// mode and only reads: a file that turns out not to be abathur's is left exactly as it was.
async fn schema_state(options: SqliteConnectOptions) -> Result<SchemaState, DatabaseError> {
    use sqlx::{ConnectOptions, Connection};
    let failed = |e: sqlx::Error| classify(e, "database", "");
    let mut conn = options.connect().await.map_err(failed)?;
    let state = read_schema_state(&mut conn).await;
    let _ = conn.close().await;
    state
}

async fn read_schema_state(
    conn: &mut sqlx::SqliteConnection,
) -> Result<SchemaState, DatabaseError> {
    let failed = |e: sqlx::Error| classify(e, "database", "");
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT name FROM sqlite_schema WHERE type = 'table'
           AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\' ORDER BY name",
    )
    .fetch_all(&mut *conn)
    .await
    .map_err(failed)?;
    if tables.is_empty() {
        return Ok(SchemaState::Empty);
    }
    let foreign = |detail: String| {
        Ok(SchemaState::Refused(DatabaseError::ForeignSchema {
            location: String::new(),
            detail,
        }))
    };
    if !tables.iter().any(|t| t == "_sqlx_migrations") {
        const NAMED: usize = 5;
        let mut named = tables
            .iter()
            .take(NAMED)
            .cloned()
            .collect::<Vec<_>>()
            .join(", ");
        if tables.len() > NAMED {
            named.push_str(", ...");
        }
        return foreign(format!(
            "it has tables ({named}) but no record of abathur's migrations"
        ));
    }
    let applied: Vec<(i64, String, bool, Vec<u8>)> = sqlx::query_as(
        "SELECT version, description, success, checksum FROM _sqlx_migrations ORDER BY version",
    )
    .fetch_all(&mut *conn)
    .await
    .map_err(failed)?;
    let ours: Vec<&sqlx::migrate::Migration> = MIGRATOR
        .iter()
        .filter(|m| !m.migration_type.is_down_migration())
        .collect();
    let expected = ours.iter().map(|m| m.version).max().unwrap_or(0);
    // abathur's first migration is in every database abathur made: a record that holds none
    // of abathur's versions is another project's (sqlx numbers by timestamp by default, far
    // above abathur's), not a newer abathur's.
    if let Some((version, description, ..)) = applied.first() {
        if !applied
            .iter()
            .any(|(v, ..)| ours.iter().any(|m| m.version == *v))
        {
            return foreign(format!(
                "its migration {version} ({description}) is not one of abathur's"
            ));
        }
    }
    for (version, description, success, checksum) in &applied {
        let Some(known) = ours.iter().find(|m| m.version == *version) else {
            let err = if *version > expected {
                MigrateError::VersionMissing(*version)
            } else {
                return foreign(format!(
                    "its migration {version} ({description}) is not one of abathur's"
                ));
            };
            return Ok(SchemaState::Refused(DatabaseError::Migration(
                migration_message(&err),
            )));
        };
        if known.description != description.as_str()
            || known.checksum.as_ref() != checksum.as_slice()
        {
            return foreign(format!(
                "its migration {version} ({description}) is not abathur's"
            ));
        }
        if !success {
            return Ok(SchemaState::Refused(DatabaseError::Migration(
                migration_message(&MigrateError::Dirty(*version)),
            )));
        }
    }
    if applied.len() < ours.len() {
        return Ok(SchemaState::Behind {
            found: applied.last().map(|(v, ..)| *v),
            expected,
        });
    }
    Ok(SchemaState::Current)
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
