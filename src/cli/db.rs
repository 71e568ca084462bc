//! Opening the database for one command, and the `init` and `db status` commands.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;

use super::error::{CliError, ExitCode};
use super::render::Rendered;
use crate::infrastructure::database::{DatabaseConfig, DatabaseConnection, DatabaseStatus};

/// Opens (creating if needed) and migrates the database at `path`.
///
/// One command runs one statement at a time, so the pool stays small; the busy timeout is the
/// library's, so a command waits for another process's write as long as any writer does.
pub async fn open(path: &Path) -> Result<DatabaseConnection, CliError> {
    let db = open_unmigrated(path).await?;
    db.migrate().await?;
    Ok(db)
}

/// Opens (creating if needed) the database at `path`, leaving its schema as it is.
pub async fn open_unmigrated(path: &Path) -> Result<DatabaseConnection, CliError> {
    let config = DatabaseConfig {
        min_connections: 1,
        max_connections: 2,
        idle_timeout: Duration::from_secs(60),
        ..DatabaseConfig::default()
    };
    tracing::debug!(path = %path.display(), "opening the database");
    Ok(DatabaseConnection::open_path(path, config).await?)
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
    /// The file, its WAL, free pages and bytes per table.
    pub storage: crate::infrastructure::database::StorageSizes,
}

/// `abathur db status`.
pub async fn status(db: &DatabaseConnection, path: &Path) -> Result<StatusReport, CliError> {
    Ok(StatusReport {
        database: resolved(path),
        status: db.status().await?,
        storage: crate::infrastructure::database::storage_sizes(db.pool(), Some(path)).await?,
    })
}

/// The absolute form of `path`, or `path` itself when it cannot be resolved.
fn resolved(path: &Path) -> PathBuf {
    std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf())
}

/// `abathur db migrate`: applies the migrations this build has and the database lacks.
pub async fn migrate(db: &DatabaseConnection) -> Result<Rendered, CliError> {
    let before = db.schema_version().await?;
    db.migrate().await?;
    let after = db.schema_version().await?;
    let name = |v: Option<i64>| v.map_or_else(|| "none".to_string(), |v| v.to_string());
    let human = if before == after {
        format!("schema version {}: up to date\n", name(after))
    } else {
        format!("schema version {} -> {}\n", name(before), name(after))
    };
    Ok(Rendered {
        json: serde_json::json!({ "from_version": before, "to_version": after }),
        human,
    })
}

/// How many problems of each kind `db check` prints before "and N more".
const PROBLEMS_SHOWN: usize = 20;

/// `abathur db check`: SQLite's integrity and foreign-key checks. Problems are an error
/// (exit 1), listed on stderr.
pub async fn check(db: &DatabaseConnection) -> Result<Rendered, CliError> {
    let report = db.check().await?;
    if report.is_ok() {
        return Ok(Rendered {
            json: serde_json::json!({ "ok": true, "integrity_problems": [], "foreign_key_problems": [] }),
            human: "integrity: ok\nforeign keys: ok\n".to_string(),
        });
    }
    let mut message = format!(
        "the database has problems (integrity check: {}, rows with a missing parent: {})",
        report.integrity_problems.len(),
        report.foreign_key_problems.len()
    );
    for problem in report.integrity_problems.iter().take(PROBLEMS_SHOWN) {
        message.push_str(&format!("\n  {problem}"));
    }
    for problem in report.foreign_key_problems.iter().take(PROBLEMS_SHOWN) {
        let row = problem
            .rowid
            .map_or_else(|| "a row".to_string(), |r| format!("row {r}"));
        message.push_str(&format!(
            "\n  {row} of {} refers to a missing row of {}",
            problem.table, problem.parent
        ));
    }
    let hidden = report
        .integrity_problems
        .len()
        .saturating_sub(PROBLEMS_SHOWN)
        + report
            .foreign_key_problems
            .len()
            .saturating_sub(PROBLEMS_SHOWN);
    if hidden > 0 {
        message.push_str(&format!("\n  and {hidden} more"));
    }
    Err(CliError::new(ExitCode::Internal, message))
}

/// `abathur db backup PATH`: a consistent copy taken while the database stays in use.
pub async fn backup(db: &DatabaseConnection, target: &Path) -> Result<Rendered, CliError> {
    db.backup_to(target).await?;
    let bytes = std::fs::metadata(target).map(|m| m.len()).unwrap_or(0);
    let target = resolved(target);
    Ok(Rendered {
        human: format!("backed up to {} ({bytes} bytes)\n", target.display()),
        json: serde_json::json!({ "backup": target, "bytes": bytes }),
    })
}
