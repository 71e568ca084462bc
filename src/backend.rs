//! The backend: the one place that reads `--db`/`ABATHUR_DB`, picks the storage adapter it
//! names and opens it. Everything else in the application holds the ports of the [`Backend`]
//! it returns, never an adapter's types.
//!
//! - A file path or a `sqlite:` URL opens the SQLite adapter (`abathur-sqlite`).
//! - A `postgres://` or `postgresql://` URL opens the PostgreSQL adapter (`abathur-postgres`),
//!   giving the same ports.
//! - Any other scheme is refused, rather than taken as a file of that name.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use abathur_core::error::DatabaseError;
use abathur_core::ports::{
    AgentRepository, Changes, DatabaseAdmin, IdLookup, MemoryRepository, SessionRepository,
    TaskRepository,
};
use abathur_core::queue::QueueStore;
use abathur_postgres::{
    OpenMode as PgOpenMode, PgAdmin, PgAgentRepository, PgChanges, PgConfig, PgDatabase,
    PgGroupCommitQueueStore, PgIdLookup, PgMemoryRepository, PgQueueStore, PgSessionRepository,
    PgTaskRepository,
};
use abathur_sqlite::{
    AgentRepositoryImpl, DatabaseConfig, DatabaseConnection, DatabaseLocation,
    GroupCommitQueueStore, IdLookupImpl, MemoryRepositoryImpl, OpenMode, QueueStoreImpl,
    SessionRepositoryImpl, SqliteAdmin, SqliteChanges, TaskRepositoryImpl,
};

/// A parsed `--db` value: which backend, and where.
#[derive(Clone)]
pub enum Location {
    /// A SQLite file, or a database in memory.
    Sqlite(Box<DatabaseLocation>),
    /// A database on a PostgreSQL server, by URL (password included: never print it, print
    /// the [`Display`](fmt::Display) form).
    Postgres(String),
}

impl fmt::Debug for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Sqlite(location) => f.debug_tuple("Sqlite").field(location).finish(),
            Self::Postgres(_) => f.debug_tuple("Postgres").field(&self.to_string()).finish(),
        }
    }
}

impl Location {
    /// Parses a `--db` value; the error says, in the user's terms, what is wrong with it.
    ///
    /// # Errors
    /// A message when the value is a `postgres:` URL that is not `postgres://...`, or not a
    /// location the SQLite adapter takes (empty, a folder, a malformed `sqlite:` URL, another
    /// scheme).
    pub fn parse(text: &str) -> Result<Self, String> {
        let lower = text.to_ascii_lowercase();
        if lower.starts_with("postgres:") || lower.starts_with("postgresql:") {
            if !(lower.starts_with("postgres://") || lower.starts_with("postgresql://")) {
                return Err(format!(
                    "{} is not a PostgreSQL URL; write postgres://user@host:port/database",
                    abathur_postgres::redact(text)
                ));
            }
            abathur_postgres::check_url(text)
                .map_err(|e| format!("{}: {e}", abathur_postgres::redact(text)))?;
            return Ok(Self::Postgres(text.to_string()));
        }
        DatabaseLocation::parse(text).map(|l| Self::Sqlite(Box::new(l)))
    }

    /// The database's file as an absolute path when it can be resolved, else the location as
    /// given (`sqlite::memory:`, a PostgreSQL URL): the `ABATHUR_DB` a worker's commands get,
    /// so that they open the same database.
    pub fn resolved(&self) -> PathBuf {
        match self {
            Self::Sqlite(location) => match location.path() {
                Some(path) => resolved_path(path),
                None => PathBuf::from(location.as_str()),
            },
            Self::Postgres(url) => PathBuf::from(url),
        }
    }

    /// What `init` and `db status` report as the database: [`Location::resolved`], but a
    /// PostgreSQL URL without its password.
    pub fn shown(&self) -> String {
        match self {
            Self::Sqlite(_) => self.resolved().display().to_string(),
            Self::Postgres(url) => abathur_postgres::redact(url),
        }
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Sqlite(location) => location.fmt(f),
            Self::Postgres(url) => f.write_str(&abathur_postgres::redact(url)),
        }
    }
}

/// A `--db` value as messages may show it: a PostgreSQL URL without its password, anything
/// else as given.
pub fn shown_value(text: &str) -> String {
    abathur_postgres::redact(text)
}

/// `path` made absolute when it exists, else as given.
pub fn resolved_path(path: &Path) -> PathBuf {
    std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf())
}

/// What a command may do to the database.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Only read: never create or migrate it, and refuse one that is missing, not abathur's
    /// or at an older schema.
    Read,
    /// Look at it as it is, whatever its schema (`db check`, `db backup`).
    Inspect,
    /// Read and write: create it when missing and bring its schema up to date.
    Write,
    /// Create it when missing and take any database as it is, leaving migration to the
    /// caller (`init`, `db migrate`).
    Setup,
}

/// Who opens the backend, which sets how many connections it keeps and how the queue writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// One command: one statement at a time, each queue write its own transaction.
    Command,
    /// `abathur worker`: its claims, heartbeats and completions share commits when several
    /// commands run at once.
    Worker,
    /// `abathur mcp`: tool calls arrive concurrently, and their queue writes share commits.
    Server,
}

/// The ports of one open database.
#[derive(Clone)]
pub struct Backend {
    pub tasks: Arc<dyn TaskRepository>,
    pub memories: Arc<dyn MemoryRepository>,
    pub sessions: Arc<dyn SessionRepository>,
    pub agents: Arc<dyn AgentRepository>,
    pub ids: Arc<dyn IdLookup>,
    /// The queue's store: plain for a command, group-commit for a worker or a server.
    pub queue_store: Arc<dyn QueueStore>,
    pub changes: Arc<dyn Changes>,
    pub admin: Arc<dyn DatabaseAdmin>,
}

impl fmt::Debug for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Backend").finish_non_exhaustive()
    }
}

impl Backend {
    /// Opens the database at `location` for what `access` allows, sized for `role`.
    ///
    /// Call it inside a tokio runtime: a group-commit writer is a task of it.
    ///
    /// # Errors
    /// What the adapter returns when the database cannot be opened as asked: `NoDatabase`,
    /// `NotADatabase`, `ForeignSchema`, `SchemaOutOfDate`, `ReadOnly`, `Connection`, ...
    pub async fn open(
        location: &Location,
        access: Access,
        role: Role,
    ) -> Result<Self, DatabaseError> {
        match location {
            Location::Sqlite(location) => open_sqlite(location, access, role).await,
            Location::Postgres(url) => open_postgres(url, access, role).await,
        }
    }

    /// Closes the database: every connection, waiting for those in use, so that nothing is
    /// left to finish after the process exits (SQLite merges its WAL into the file then).
    pub async fn close(&self) {
        self.admin.close().await;
    }
}

async fn open_sqlite(
    location: &DatabaseLocation,
    access: Access,
    role: Role,
) -> Result<Backend, DatabaseError> {
    // One command runs one statement at a time, so its pool stays small; a server's tool
    // calls arrive concurrently. The busy timeout is the library's, so every writer waits
    // for another process's write as long as any other does.
    let config = DatabaseConfig {
        min_connections: 1,
        max_connections: match role {
            Role::Command | Role::Worker => 2,
            Role::Server => 4,
        },
        idle_timeout: Duration::from_secs(60),
        ..DatabaseConfig::default()
    };
    let mode = match access {
        Access::Read => OpenMode::Read,
        Access::Inspect => OpenMode::Inspect,
        Access::Write => OpenMode::Write,
        Access::Setup => OpenMode::Setup,
    };
    tracing::debug!(location = %location, ?mode, ?role, "opening the database");
    let db = DatabaseConnection::open_location(location, config, mode).await?;
    let pool = db.pool().clone();
    let queue_store: Arc<dyn QueueStore> = match role {
        Role::Command => Arc::new(QueueStoreImpl::new(pool.clone())),
        Role::Worker | Role::Server => Arc::new(GroupCommitQueueStore::new(pool.clone())),
    };
    Ok(Backend {
        tasks: Arc::new(TaskRepositoryImpl::new(pool.clone())),
        memories: Arc::new(MemoryRepositoryImpl::new(pool.clone())),
        sessions: Arc::new(SessionRepositoryImpl::new(pool.clone())),
        agents: Arc::new(AgentRepositoryImpl::new(pool.clone())),
        ids: Arc::new(IdLookupImpl::new(pool.clone())),
        queue_store,
        changes: Arc::new(SqliteChanges::new(pool)),
        admin: Arc::new(SqliteAdmin::new(db, location.path().map(Path::to_path_buf))),
    })
}

async fn open_postgres(url: &str, access: Access, role: Role) -> Result<Backend, DatabaseError> {
    // Every operation holds a connection for its whole transaction, so a process needs about
    // as many as it runs operations at once: a command one at a time, a worker one per
    // command it runs plus its heartbeats, a server one per tool call in flight.
    let config = PgConfig {
        min_connections: 1,
        max_connections: match role {
            Role::Command => 2,
            Role::Worker | Role::Server => 10,
        },
        ..PgConfig::default()
    };
    let mode = match access {
        Access::Read => PgOpenMode::Read,
        Access::Inspect => PgOpenMode::Inspect,
        Access::Write => PgOpenMode::Write,
        Access::Setup => PgOpenMode::Setup,
    };
    tracing::debug!(location = %abathur_postgres::redact(url), ?mode, ?role, "opening the database");
    let db = PgDatabase::open(url, config, mode).await?;
    let pool = db.pool().clone();
    // Behind a transaction-mode pooler (PgBouncer, Supavisor) LISTEN does not work: with
    // ABATHUR_PG_POLL_ONLY set, waiting processes poll instead (docs/POSTGRES.md).
    let changes: Arc<dyn Changes> = Arc::new(PgChanges::from_env(pool.clone()));
    // A worker's and a server's completions share transactions (group commit), as on SQLite.
    let queue_store: Arc<dyn QueueStore> = match role {
        Role::Command => Arc::new(PgQueueStore::new(pool.clone())),
        Role::Worker | Role::Server => Arc::new(PgGroupCommitQueueStore::new(pool.clone())),
    };
    Ok(Backend {
        tasks: Arc::new(PgTaskRepository::new(pool.clone())),
        memories: Arc::new(PgMemoryRepository::new(pool.clone())),
        sessions: Arc::new(PgSessionRepository::new(pool.clone())),
        agents: Arc::new(PgAgentRepository::new(pool.clone())),
        ids: Arc::new(PgIdLookup::new(pool.clone())),
        queue_store,
        changes,
        admin: Arc::new(PgAdmin::new(db)),
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::{Access, Backend, Location, Role};

    /// A new, migrated database in memory, as a command opens it.
    pub(crate) async fn in_memory() -> Backend {
        let location = Location::parse("sqlite::memory:").expect("a location");
        Backend::open(&location, Access::Write, Role::Command)
            .await
            .expect("open")
    }

    #[test]
    fn postgres_urls_open_the_postgres_adapter() {
        for url in ["postgres://u@h/db", "POSTGRESQL://h/db"] {
            assert!(
                matches!(Location::parse(url), Ok(Location::Postgres(_))),
                "{url}"
            );
        }
        assert!(matches!(Location::parse("x.db"), Ok(Location::Sqlite(_))));
    }

    #[test]
    fn a_malformed_postgres_url_is_refused_without_its_password() {
        for url in ["postgres:u:pw@h/db", "postgresql:/h"] {
            let err = Location::parse(url).unwrap_err();
            assert!(err.contains("not a PostgreSQL URL"), "{err}");
        }
        let err = Location::parse("postgres://u:secret@h:notaport/db").unwrap_err();
        assert!(!err.contains("secret"), "{err}");
    }

    #[test]
    fn a_postgres_location_never_shows_its_password() {
        let location = Location::parse("postgres://u:secret@h/db").expect("a location");
        assert_eq!(location.to_string(), "postgres://u:***@h/db");
        assert_eq!(location.shown(), "postgres://u:***@h/db");
        assert!(!format!("{location:?}").contains("secret"));
    }
}
