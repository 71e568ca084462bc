//! The connection to the server: the pool's settings, what a command may do to the database
//! it opens ([`OpenMode`]), creating the database on the server, and the schema's migrations.

use std::str::FromStr;
use std::time::Duration;

use abathur_core::error::DatabaseError;
use sqlx::migrate::MigrateError;
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPool, PgPoolOptions};
use sqlx::{ConnectOptions, Connection, Executor};

use crate::errors::{classify_ref, sqlstate};
use crate::MIGRATOR;

/// The database of the server that `CREATE DATABASE` is sent through: every PostgreSQL server
/// has it, and it is what `createdb` uses.
const MAINTENANCE_DATABASE: &str = "postgres";

/// What a command may do to the database it opens, as the SQLite adapter's modes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpenMode {
    /// Only read: never create the database or migrate it, and refuse one that is missing,
    /// empty, not abathur's or at an older schema.
    Read,
    /// Look at the database as it is, whatever its schema (`db check`, `db backup`): never
    /// create or migrate it; only a missing database is refused.
    Inspect,
    /// Read and write: bring the schema up to date (an empty database gets abathur's tables),
    /// but refuse a database that is not abathur's. A database missing on the server is
    /// refused (`abathur init` creates it): creating databases is a server administrator's
    /// right a worker should not need.
    Write,
    /// Create the database on the server when it is missing (through the `postgres`
    /// maintenance database, as `createdb` does) and take any database as it is, even one
    /// that is not abathur's, leaving migration to the caller (`init`, `db migrate`).
    Setup,
}

/// What a database's schema says about who made it.
#[derive(Debug)]
pub(crate) enum SchemaState {
    /// No tables in the schema abathur uses: a new or empty database.
    Empty,
    /// abathur's, with every migration of this build applied.
    Current,
    /// abathur's, with some of this build's migrations still to apply.
    Behind { found: Option<i64>, expected: i64 },
    /// Not abathur's, or not one abathur can use; the error says why.
    Refused(DatabaseError),
}

/// How the adapter connects.
#[derive(Debug, Clone)]
pub struct PgConfig {
    /// Connections kept open even when idle (default 1).
    pub min_connections: u32,
    /// Connections open at most (default 10).
    pub max_connections: u32,
    /// An idle connection above the minimum is closed after this long (default 60 s).
    pub idle_timeout: Duration,
    /// A connection is replaced after this long (default 30 min).
    pub max_lifetime: Duration,
    /// Waiting for a free connection, or for the server to accept a new one, fails after this
    /// long (default 10 s).
    pub acquire_timeout: Duration,
}

impl Default for PgConfig {
    fn default() -> Self {
        Self {
            min_connections: 1,
            max_connections: 10,
            idle_timeout: Duration::from_secs(60),
            max_lifetime: Duration::from_secs(1800),
            acquire_timeout: Duration::from_secs(10),
        }
    }
}

/// An open pool on one PostgreSQL database.
#[derive(Debug, Clone)]
pub struct PgDatabase {
    pool: PgPool,
    /// The URL without its password, for messages.
    location: String,
}

impl PgDatabase {
    /// Connects to the database `url` names (`postgres://user@host:port/db?...`).
    ///
    /// # Errors
    /// `Connection` when the URL is malformed or the server cannot be reached or refuses.
    pub async fn connect(url: &str, config: PgConfig) -> Result<Self, DatabaseError> {
        let options = connect_options(url)?;
        let pool = PgPoolOptions::new()
            .min_connections(config.min_connections)
            .max_connections(config.max_connections)
            .idle_timeout(config.idle_timeout)
            .max_lifetime(config.max_lifetime)
            .acquire_timeout(config.acquire_timeout)
            .after_connect(|conn, _| {
                Box::pin(async move {
                    sqlx::Executor::execute(&mut *conn, sqlx::raw_sql(SESSION_SETTINGS)).await?;
                    Ok(())
                })
            })
            .connect_with(options)
            .await
            .map_err(|e| classify_ref(&e))?;
        Ok(Self {
            pool,
            location: redact(url),
        })
    }

    /// Opens the database `url` names for what `mode` allows, and, in [`OpenMode::Write`],
    /// brings its schema up to date. Nothing is created or migrated before the database's
    /// schema has been read and found to be abathur's (or the mode is [`OpenMode::Setup`]).
    ///
    /// # Errors
    /// `Connection` when the URL is malformed, the server cannot be reached or refuses the
    /// login (each message names the URL, password hidden); `NoDatabase` when the database is
    /// missing on the server (or has no tables, in [`OpenMode::Read`]) and the mode does not
    /// create it; `ForeignSchema` when its tables are not abathur's; `SchemaOutOfDate` in
    /// [`OpenMode::Read`] when migrations are pending; `Migration` when it has migrations this
    /// build does not know, or a migration fails.
    pub async fn open(url: &str, config: PgConfig, mode: OpenMode) -> Result<Self, DatabaseError> {
        let options = connect_options(url)?;
        let location = redact(url);
        let mut probe = match options.connect().await {
            Ok(conn) => conn,
            Err(e) if mode == OpenMode::Setup && sqlstate(&e).as_deref() == Some("3D000") => {
                create_database(&options, &location).await?;
                options
                    .connect()
                    .await
                    .map_err(|e| connect_error(&e, &location))?
            }
            Err(e) => return Err(connect_error(&e, &location)),
        };
        let state = read_schema_state(&mut probe).await;
        let _ = probe.close().await;
        let mut migrate = false;
        if matches!(mode, OpenMode::Read | OpenMode::Write) {
            match state? {
                SchemaState::Current => {}
                SchemaState::Empty if mode == OpenMode::Read => {
                    return Err(DatabaseError::NoDatabase { location })
                }
                SchemaState::Behind { found, expected } if mode == OpenMode::Read => {
                    return Err(DatabaseError::SchemaOutOfDate {
                        found: found.unwrap_or(0),
                        expected,
                    })
                }
                SchemaState::Empty | SchemaState::Behind { .. } => migrate = true,
                SchemaState::Refused(DatabaseError::ForeignSchema { detail, .. }) => {
                    return Err(DatabaseError::ForeignSchema { location, detail })
                }
                SchemaState::Refused(err) => return Err(err),
            }
        }
        let db = Self::connect(url, config).await.map_err(|e| match e {
            DatabaseError::Connection(message) => {
                DatabaseError::Connection(format!("{location}: {message}"))
            }
            other => other,
        })?;
        if migrate {
            if let Err(err) = db.migrate().await {
                db.close().await;
                return Err(err);
            }
        }
        Ok(db)
    }

    /// The newest migration applied, or `None` before the first (or when the database has
    /// no migration table).
    ///
    /// # Errors
    /// Only the store's own failures.
    pub async fn schema_version(&self) -> Result<Option<i64>, DatabaseError> {
        schema_version(&self.pool).await
    }

    /// Brings the schema up to date. Safe from many processes at once: the migrator holds an
    /// advisory lock while it runs.
    ///
    /// # Errors
    /// `Migration` when a migration fails; nothing of a failed migration is kept.
    pub async fn migrate(&self) -> Result<(), DatabaseError> {
        crate::MIGRATOR
            .run(&self.pool)
            .await
            .map_err(|e| DatabaseError::Migration(e.to_string()))
    }

    /// The pool.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// The database's URL without its password.
    pub fn location(&self) -> &str {
        &self.location
    }

    /// Closes every connection, waiting for those in use.
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// The newest migration applied in the database `pool` opens, or `None` before the first.
pub(crate) async fn schema_version(pool: &PgPool) -> Result<Option<i64>, DatabaseError> {
    let mut conn = pool.acquire().await.map_err(|e| classify_ref(&e))?;
    if !migrations_table_exists(&mut conn).await? {
        return Ok(None);
    }
    sqlx::query_scalar!("SELECT max(version) FROM _sqlx_migrations WHERE success")
        .fetch_one(&mut *conn)
        .await
        .map_err(|e| classify_ref(&e))
}

/// Whether sqlx's bookkeeping table is in the schema abathur's tables are made in (the first
/// of the search path).
async fn migrations_table_exists(conn: &mut PgConnection) -> Result<bool, DatabaseError> {
    sqlx::query_scalar!(
        r#"SELECT EXISTS (
               SELECT 1 FROM pg_catalog.pg_tables
               WHERE schemaname = current_schema() AND tablename = '_sqlx_migrations'
           ) AS "exists!""#
    )
    .fetch_one(conn)
    .await
    .map_err(|e| classify_ref(&e))
}

/// Reads who made the database `conn` is on, as the SQLite adapter does.
pub(crate) async fn read_schema_state(
    conn: &mut PgConnection,
) -> Result<SchemaState, DatabaseError> {
    let failed = |e: sqlx::Error| classify_ref(&e);
    let tables: Vec<String> = sqlx::query_scalar!(
        r#"SELECT tablename AS "name!" FROM pg_catalog.pg_tables
           WHERE schemaname = current_schema() ORDER BY tablename"#
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
    let applied = sqlx::query!(
        "SELECT version, description, success, checksum FROM _sqlx_migrations ORDER BY version"
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
    // of abathur's versions is another project's.
    if let Some(first) = applied.first() {
        if !applied
            .iter()
            .any(|a| ours.iter().any(|m| m.version == a.version))
        {
            return foreign(format!(
                "its migration {} ({}) is not one of abathur's",
                first.version, first.description
            ));
        }
    }
    for a in &applied {
        let Some(known) = ours.iter().find(|m| m.version == a.version) else {
            if a.version > expected {
                return Ok(SchemaState::Refused(DatabaseError::Migration(
                    migration_message(&MigrateError::VersionMissing(a.version)),
                )));
            }
            return foreign(format!(
                "its migration {} ({}) is not one of abathur's",
                a.version, a.description
            ));
        };
        if known.description != a.description.as_str()
            || known.checksum.as_ref() != a.checksum.as_slice()
        {
            return foreign(format!(
                "its migration {} ({}) is not abathur's",
                a.version, a.description
            ));
        }
        if !a.success {
            return Ok(SchemaState::Refused(DatabaseError::Migration(
                migration_message(&MigrateError::Dirty(a.version)),
            )));
        }
    }
    if applied.len() < ours.len() {
        return Ok(SchemaState::Behind {
            found: applied.last().map(|a| a.version),
            expected,
        });
    }
    Ok(SchemaState::Current)
}

/// The user's words for a failed migration.
pub(crate) fn migration_message(err: &MigrateError) -> String {
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

/// Creates the database `options` names, through the server's maintenance database. Another
/// process creating it at the same moment is not an error.
async fn create_database(options: &PgConnectOptions, location: &str) -> Result<(), DatabaseError> {
    let name = options
        .get_database()
        .unwrap_or_else(|| options.get_username())
        .to_string();
    let mut admin = options
        .clone()
        .database(MAINTENANCE_DATABASE)
        .connect()
        .await
        .map_err(|e| {
            DatabaseError::Connection(format!(
                "database {name} does not exist at {location}, and it cannot be created through \
                 the server's {MAINTENANCE_DATABASE} database: {}; create it with `createdb`",
                plain(&e)
            ))
        })?;
    let statement = format!("CREATE DATABASE \"{}\"", name.replace('"', "\"\""));
    let created = admin.execute(statement.as_str()).await;
    let _ = admin.close().await;
    match created {
        Ok(_) => {
            tracing::info!(database = %name, "created the database");
            Ok(())
        }
        // Another process won the race: duplicate_database when its database was there
        // first, a unique violation of the catalogue when both inserted at once.
        Err(e) if matches!(sqlstate(&e).as_deref(), Some("42P04" | "23505")) => Ok(()),
        Err(e) => Err(DatabaseError::Connection(format!(
            "cannot create database {name} at {location}: {}; create it with `createdb` or ask \
             the server's administrator",
            plain(&e)
        ))),
    }
}

/// A connection error in the user's words, naming the (redacted) URL: the server is not
/// reachable, refused the login, or has no such database.
pub(crate) fn connect_error(err: &sqlx::Error, location: &str) -> DatabaseError {
    match sqlstate(err).as_deref() {
        Some("3D000") => DatabaseError::NoDatabase {
            location: location.to_string(),
        },
        Some("28P01" | "28000") => DatabaseError::Connection(format!(
            "the PostgreSQL server at {location} refused the login: {}",
            plain(err)
        )),
        _ => match err {
            sqlx::Error::Io(io) => DatabaseError::Connection(format!(
                "cannot reach the PostgreSQL server at {location}: {io}; is it running, and is \
                 the host and port right?"
            )),
            sqlx::Error::Tls(tls) => DatabaseError::Connection(format!(
                "cannot open TLS to the PostgreSQL server at {location}: {tls}"
            )),
            _ => match classify_ref(err) {
                DatabaseError::Connection(message) | DatabaseError::Other(message) => {
                    DatabaseError::Connection(format!("{location}: {message}"))
                }
                other => other,
            },
        },
    }
}

/// The server's message of a database error, or the error itself.
fn plain(err: &sqlx::Error) -> String {
    match err {
        sqlx::Error::Database(db) => db.message().to_string(),
        other => other.to_string(),
    }
}

/// The options `url` gives, with abathur's application name unless the URL names one, so that
/// the server's `pg_stat_activity` shows which connections are abathur's.
pub(crate) fn connect_options(url: &str) -> Result<PgConnectOptions, DatabaseError> {
    let options = PgConnectOptions::from_str(url).map_err(|e| {
        DatabaseError::Connection(format!("{} is not a PostgreSQL URL: {e}", redact(url)))
    })?;
    Ok(if options.get_application_name().is_some() {
        options
    } else {
        options.application_name("abathur")
    })
}

/// Run on every new connection. A client cut off in the middle of a transaction (its host
/// crashed, its network partitioned) leaves its server session idle in the transaction, with
/// its row locks held until TCP gives up on it (two hours by default): the reaper would skip
/// the task it locked, and a cancel would wait on it. The server ends such a session after
/// `idle_in_transaction_session_timeout`, which no queue operation comes near (each sends its
/// statements back to back). `lock_timeout` bounds any wait for a row lock, so that an
/// operation blocked by something else answers `Busy` (retried by callers) instead of
/// hanging. Session settings, so that they cost nothing per transaction; behind a
/// transaction-mode pooler set them for the role instead (docs/POSTGRES.md).
pub(crate) const SESSION_SETTINGS: &str =
    "SET idle_in_transaction_session_timeout = '30s'; SET lock_timeout = '30s'";

/// `url` with its password replaced by `***`: `scheme://user:password@host/...`, also written
/// without the `//` or with a password holding `/` or `@` unescaped. Text that holds no
/// `user:password@` part is returned as it is.
pub fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once(':') else {
        return redact_query(url);
    };
    let (slashes, rest) = match rest.strip_prefix("//") {
        Some(rest) => ("//", rest),
        None => ("", rest),
    };
    // The user information ends at the last `@` before the query.
    let before_query = rest.find(['?', '#']).unwrap_or(rest.len());
    let Some(at) = rest[..before_query].rfind('@') else {
        return redact_query(url);
    };
    let (userinfo, host_and_rest) = rest.split_at(at);
    let masked = match userinfo.split_once(':') {
        Some((user, _password)) => format!("{scheme}:{slashes}{user}:***{host_and_rest}"),
        None => url.to_string(),
    };
    redact_query(&masked)
}

/// `url` with the values of its `password` and `sslpassword` query parameters replaced by
/// `***`.
fn redact_query(url: &str) -> String {
    let Some((base, query)) = url.split_once('?') else {
        return url.to_string();
    };
    let params: Vec<String> = query
        .split('&')
        .map(|param| match param.split_once('=') {
            Some((key, _))
                if ["password", "sslpassword"].contains(&key.to_ascii_lowercase().as_str()) =>
            {
                format!("{key}=***")
            }
            _ => param.to_string(),
        })
        .collect();
    format!("{base}?{}", params.join("&"))
}

#[cfg(test)]
mod tests {
    use abathur_core::error::DatabaseError;
    use sqlx::{Connection, Executor, PgConnection};

    use super::{redact, OpenMode, PgDatabase};
    use crate::testing::TestDatabase;
    use crate::PgConfig;

    async fn open(url: &str, mode: OpenMode) -> Result<PgDatabase, DatabaseError> {
        PgDatabase::open(url, PgConfig::default(), mode).await
    }

    async fn run(url: &str, sql: &str) {
        let mut conn = PgConnection::connect(url).await.expect("connect");
        conn.execute(sql).await.expect(sql);
        conn.close().await.expect("close");
    }

    /// A database made by the test and then dropped, so that only its name is left.
    async fn missing_database() -> TestDatabase {
        let test = TestDatabase::create().await;
        let server = crate::testing::server_url();
        run(&server, &format!("DROP DATABASE {}", test.name())).await;
        test
    }

    #[tokio::test]
    async fn a_missing_database_is_refused_unless_set_up() {
        let test = missing_database().await;
        for mode in [OpenMode::Read, OpenMode::Inspect, OpenMode::Write] {
            match open(test.url(), mode).await {
                Err(DatabaseError::NoDatabase { location }) => assert_eq!(location, test.url()),
                other => panic!("{mode:?}: {other:?}"),
            }
        }

        // Setup creates it on the server, empty: migrating is the caller's.
        let db = open(test.url(), OpenMode::Setup).await.expect("set up");
        assert_eq!(db.schema_version().await.expect("version"), None);
        db.close().await;
        // Opened again, it is there.
        open(test.url(), OpenMode::Setup)
            .await
            .expect("set up again")
            .close()
            .await;

        // Empty: nothing to read yet.
        assert!(matches!(
            open(test.url(), OpenMode::Read).await,
            Err(DatabaseError::NoDatabase { .. })
        ));
        // Writing makes abathur's tables; then reading works.
        let db = open(test.url(), OpenMode::Write).await.expect("write");
        assert_eq!(db.schema_version().await.expect("version"), Some(4));
        db.close().await;
        open(test.url(), OpenMode::Read)
            .await
            .expect("read")
            .close()
            .await;
    }

    #[tokio::test]
    async fn setup_on_a_missing_database_creates_it_from_scratch() {
        // Two processes racing to create the same database: both open it.
        let test = missing_database().await;
        let (a, b) = tokio::join!(
            open(test.url(), OpenMode::Setup),
            open(test.url(), OpenMode::Setup)
        );
        a.expect("one set-up").close().await;
        b.expect("the other set-up").close().await;
    }

    #[tokio::test]
    async fn a_foreign_schema_is_refused_by_read_and_write_only() {
        let test = TestDatabase::create().await;
        run(test.url(), "CREATE TABLE invoices (id int)").await;
        for mode in [OpenMode::Read, OpenMode::Write] {
            match open(test.url(), mode).await {
                Err(DatabaseError::ForeignSchema { location, detail }) => {
                    assert_eq!(location, test.url());
                    assert!(detail.contains("invoices"), "{detail}");
                }
                other => panic!("{mode:?}: {other:?}"),
            }
        }
        for mode in [OpenMode::Inspect, OpenMode::Setup] {
            open(test.url(), mode)
                .await
                .expect("opened as it is")
                .close()
                .await;
        }
        // Nothing was added to it.
        let mut conn = PgConnection::connect(test.url()).await.expect("connect");
        let tables: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_tables WHERE schemaname = current_schema()",
        )
        .fetch_one(&mut conn)
        .await
        .expect("count");
        assert_eq!(tables, 1);
        conn.close().await.expect("close");
    }

    #[tokio::test]
    async fn an_older_schema_is_refused_by_read_and_a_newer_one_by_all_but_inspect() {
        let (test, db) = TestDatabase::migrated(PgConfig::default()).await;
        db.close().await;
        // A database made by the build before the latest migration.
        run(test.url(), "DELETE FROM _sqlx_migrations WHERE version = 4").await;
        match open(test.url(), OpenMode::Read).await {
            Err(DatabaseError::SchemaOutOfDate { found, expected }) => {
                assert_eq!((found, expected), (3, 4));
            }
            other => panic!("{other:?}"),
        }
        // As if this build had a migration the database lacks.
        run(test.url(), "DELETE FROM _sqlx_migrations").await;
        match open(test.url(), OpenMode::Read).await {
            Err(DatabaseError::SchemaOutOfDate { found, expected }) => {
                assert_eq!((found, expected), (0, 4));
            }
            other => panic!("{other:?}"),
        }
        // A migration this build does not know: a newer abathur made it.
        run(
            test.url(),
            "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time)
             VALUES (1, 'schema', true, '\\x00', 0), (99, 'future', true, '\\x00', 0)",
        )
        .await;
        for mode in [OpenMode::Read, OpenMode::Write] {
            match open(test.url(), mode).await {
                Err(DatabaseError::ForeignSchema { detail, .. }) => {
                    // The checksum of migration 1 is not this build's: not abathur's.
                    assert!(detail.contains("migration 1"), "{detail}");
                }
                other => panic!("{mode:?}: {other:?}"),
            }
        }
        open(test.url(), OpenMode::Inspect)
            .await
            .expect("inspect")
            .close()
            .await;
    }

    #[tokio::test]
    async fn a_migration_this_build_does_not_know_asks_for_a_newer_abathur() {
        let (test, db) = TestDatabase::migrated(PgConfig::default()).await;
        db.close().await;
        run(
            test.url(),
            "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time)
             VALUES (99, 'future', true, '\\x00', 0)",
        )
        .await;
        match open(test.url(), OpenMode::Write).await {
            Err(DatabaseError::Migration(message)) => {
                assert!(message.contains("newer abathur"), "{message}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn connection_failures_are_plain_and_hide_the_password() {
        // Nothing listens on port 1.
        let unreachable = "postgres://postgres:secret@127.0.0.1:1/abathur";
        match open(unreachable, OpenMode::Write).await {
            Err(DatabaseError::Connection(message)) => {
                assert!(
                    message.contains("cannot reach the PostgreSQL server"),
                    "{message}"
                );
                assert!(
                    message.contains("postgres:***@127.0.0.1:1/abathur"),
                    "{message}"
                );
                assert!(!message.contains("secret"), "{message}");
            }
            other => panic!("{other:?}"),
        }
        // A login the server refuses (the test server trusts every known role, so an
        // unknown role stands for a wrong password).
        let server = crate::testing::server_url();
        let (_, rest) = server.split_once("://").expect("a URL");
        let host_and_db = rest.rsplit_once('@').map_or(rest, |(_, h)| h);
        let refused = format!("postgres://no_such_role_abathur:secret@{host_and_db}");
        match open(&refused, OpenMode::Read).await {
            Err(DatabaseError::Connection(message)) => {
                assert!(message.contains("refused the login"), "{message}");
                assert!(message.contains(&redact(&refused)), "{message}");
                assert!(!message.contains("secret"), "{message}");
            }
            other => panic!("{other:?}"),
        }
        // Not a URL at all.
        assert!(matches!(
            open("postgres://[::1", OpenMode::Read).await,
            Err(DatabaseError::Connection(_))
        ));
    }

    #[test]
    fn a_password_never_shows() {
        assert_eq!(
            redact("postgres://u:secret@h:5432/db?x=1"),
            "postgres://u:***@h:5432/db?x=1"
        );
        assert_eq!(redact("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(redact("postgres://h/db"), "postgres://h/db");
        // Written without `//`, or with `/` and `@` in the password.
        assert_eq!(redact("postgres:u:secret@h/db"), "postgres:u:***@h/db");
        assert_eq!(
            redact("postgres://u:se/cr@et@h/db?app=x@y"),
            "postgres://u:***@h/db?app=x@y"
        );
        // A password given as a query parameter.
        assert_eq!(
            redact("postgres://u@h/db?user=u&password=sekret&sslmode=require"),
            "postgres://u@h/db?user=u&password=***&sslmode=require"
        );
        assert_eq!(
            redact("postgres://h/db?PASSWORD=sekret&sslpassword=x"),
            "postgres://h/db?PASSWORD=***&sslpassword=***"
        );
        // Paths are left alone.
        assert_eq!(redact("/tmp/a.db"), "/tmp/a.db");
        assert_eq!(redact("sqlite:x.db"), "sqlite:x.db");
    }
}
