//! Databases of their own for tests: each [`TestDatabase`] is a new database on the server that
//! `ABATHUR_TEST_POSTGRES` names (default `postgres://postgres@127.0.0.1:5432/postgres`),
//! created with a unique name and dropped when the value is dropped, so that tests running in
//! parallel never share state.

use abathur_core::error::DatabaseError;
use sqlx::{Connection, Executor, PgConnection};
use uuid::Uuid;

use crate::{PgConfig, PgDatabase};

/// The server tests use, as a URL of its maintenance database.
pub fn server_url() -> String {
    std::env::var("ABATHUR_TEST_POSTGRES")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_string())
}

/// A database created for one test, dropped (with any connection still open to it) when this
/// is dropped.
#[derive(Debug)]
pub struct TestDatabase {
    name: String,
    url: String,
}

impl TestDatabase {
    /// Creates an empty database.
    ///
    /// # Panics
    /// When the server cannot be reached: the tests need it.
    pub async fn create() -> Self {
        let server = server_url();
        let name = format!("abathur_test_{}", Uuid::new_v4().simple());
        let mut admin = PgConnection::connect(&server)
            .await
            .unwrap_or_else(|e| panic!("connect to the test server {server}: {e}"));
        admin
            .execute(format!("CREATE DATABASE {name}").as_str())
            .await
            .unwrap_or_else(|e| panic!("create database {name}: {e}"));
        let _ = admin.close().await;
        let url = with_database(&server, &name);
        Self { name, url }
    }

    /// Creates a database and brings it to this build's schema.
    ///
    /// # Panics
    /// When the server cannot be reached or the migrations fail.
    pub async fn migrated(config: PgConfig) -> (Self, PgDatabase) {
        let test = Self::create().await;
        let db = test
            .connect(config)
            .await
            .expect("connect to the test database");
        db.migrate().await.expect("migrate the test database");
        (test, db)
    }

    /// Opens a pool on it.
    ///
    /// # Errors
    /// As [`PgDatabase::connect`].
    pub async fn connect(&self, config: PgConfig) -> Result<PgDatabase, DatabaseError> {
        PgDatabase::connect(&self.url, config).await
    }

    /// Its URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Its name.
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        drop_database(&self.name);
    }
}

/// Drops database `name` on the test server, with any connection still open to it, if it
/// exists; says so on stderr when it cannot. Usable inside a runtime or not: it runs on a
/// thread of its own with a runtime of its own.
pub fn drop_database(name: &str) {
    let server = server_url();
    let statement = format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)");
    let dropped = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .ok()?;
        runtime.block_on(async {
            let mut admin = PgConnection::connect(&server).await.ok()?;
            admin.execute(statement.as_str()).await.ok()?;
            admin.close().await.ok()
        })
    })
    .join();
    if !matches!(dropped, Ok(Some(()))) {
        eprintln!("could not drop test database {name}");
    }
}

/// The URL of database `name` on the test server (which may not exist).
pub fn database_url(name: &str) -> String {
    with_database(&server_url(), name)
}

/// `server` (a URL) naming database `name` instead of its own.
fn with_database(server: &str, name: &str) -> String {
    let (base, query) = match server.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (server, None),
    };
    let after_scheme = base.find("://").map_or(0, |i| i + 3);
    let base = match base[after_scheme..].find('/') {
        Some(i) => &base[..after_scheme + i],
        None => base,
    };
    match query {
        Some(q) => format!("{base}/{name}?{q}"),
        None => format!("{base}/{name}"),
    }
}

#[cfg(test)]
mod tests {
    use super::with_database;

    #[test]
    fn the_database_name_is_replaced() {
        assert_eq!(
            with_database("postgres://u@h:5432/postgres", "x"),
            "postgres://u@h:5432/x"
        );
        assert_eq!(with_database("postgres://u@h", "x"), "postgres://u@h/x");
        assert_eq!(
            with_database("postgres://u@h/postgres?sslmode=disable", "x"),
            "postgres://u@h/x?sslmode=disable"
        );
    }
}
