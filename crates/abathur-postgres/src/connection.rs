//! The connection to the server: the pool's settings, and the schema's migrations.

use std::str::FromStr;
use std::time::Duration;

use abathur_core::error::DatabaseError;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};

use crate::errors::classify_ref;

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
            .connect_with(options)
            .await
            .map_err(|e| classify_ref(&e))?;
        Ok(Self {
            pool,
            location: redact(url),
        })
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

/// The options `url` gives, with abathur's application name, so that the server's
/// `pg_stat_activity` shows which connections are abathur's.
pub(crate) fn connect_options(url: &str) -> Result<PgConnectOptions, DatabaseError> {
    let options = PgConnectOptions::from_str(url).map_err(|e| {
        DatabaseError::Connection(format!("{} is not a PostgreSQL URL: {e}", redact(url)))
    })?;
    Ok(options.application_name("abathur"))
}

/// `url` with its password replaced by `***`.
pub fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let (authority, tail) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _password)) => format!("{scheme}://{user}:***@{host}{tail}"),
            None => url.to_string(),
        },
        None => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::redact;

    #[test]
    fn a_password_never_shows() {
        assert_eq!(
            redact("postgres://u:secret@h:5432/db?x=1"),
            "postgres://u:***@h:5432/db?x=1"
        );
        assert_eq!(redact("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(redact("postgres://h/db"), "postgres://h/db");
    }
}
