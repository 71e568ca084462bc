//! Opening the database for one command, and the `init` and `db status` commands.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;

use super::error::CliError;
use crate::infrastructure::database::{DatabaseConfig, DatabaseConnection, DatabaseStatus};

/// Opens (creating if needed) and migrates the database at `path`.
///
/// One command runs one statement at a time, so the pool stays small; the busy timeout is the
/// library's, so a command waits for another process's write as long as any writer does.
pub async fn open(path: &Path) -> Result<DatabaseConnection, CliError> {
    let config = DatabaseConfig {
        min_connections: 1,
        max_connections: 2,
        idle_timeout: Duration::from_secs(60),
        ..DatabaseConfig::default()
    };
    tracing::debug!(path = %path.display(), "opening the database");
    let db = DatabaseConnection::open_path(path, config).await?;
    db.migrate().await?;
    Ok(db)
}

/// What `init` reports.
#[derive(Debug, Serialize)]
pub struct InitReport {
    /// Where the database file is, as an absolute path when it can be resolved.
    pub database: PathBuf,
    /// The newest migration applied.
    pub schema_version: Option<i64>,
}

/// `abathur init`: the database at `path` exists and is up to date.
pub async fn init(db: &DatabaseConnection, path: &Path) -> Result<InitReport, CliError> {
    Ok(InitReport {
        database: resolved(path),
        schema_version: db.schema_version().await?,
    })
}

/// What `db status` reports.
#[derive(Debug, Serialize)]
pub struct StatusReport {
    /// Where the database file is, as an absolute path when it can be resolved.
    pub database: PathBuf,
    /// Schema version, journal mode, rows per table and tasks per status.
    #[serde(flatten)]
    pub status: DatabaseStatus,
}

/// `abathur db status`.
pub async fn status(db: &DatabaseConnection, path: &Path) -> Result<StatusReport, CliError> {
    Ok(StatusReport {
        database: resolved(path),
        status: db.status().await?,
    })
}

/// The absolute form of `path`, or `path` itself when it cannot be resolved.
fn resolved(path: &Path) -> PathBuf {
    std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf())
}
