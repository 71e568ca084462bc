//! The `init` and `db ...` commands, over the backend's admin port.

use std::path::Path;

use serde::Serialize;

use abathur_core::error::DatabaseError;
use abathur_core::ports::{DatabaseAdmin, DatabaseStatus, StorageSizes};

use super::error::{CliError, ExitCode};
use super::render::Rendered;
use crate::backend::{resolved_path, Location};

/// What `init` reports.
#[derive(Debug, Serialize)]
pub struct InitReport {
    /// Where the database is: its file as an absolute path when it can be resolved, or its
    /// URL without the password.
    pub database: String,
    /// The newest migration applied.
    pub schema_version: Option<i64>,
}

/// `abathur init`: the database at `location` exists and is up to date.
pub async fn init(db: &dyn DatabaseAdmin, location: &Location) -> Result<InitReport, CliError> {
    db.migrate().await?;
    Ok(InitReport {
        database: location.shown(),
        schema_version: db.schema_version().await?,
    })
}

/// What `db status` reports.
#[derive(Debug, Serialize)]
pub struct StatusReport {
    /// Where the database is: its file as an absolute path when it can be resolved, or its
    /// URL without the password.
    pub database: String,
    /// Schema version, journal mode, rows per table and tasks per status.
    #[serde(flatten)]
    pub status: DatabaseStatus,
    /// The file, its WAL, free pages and bytes per table.
    pub storage: StorageSizes,
}

/// `abathur db status`.
pub async fn status(db: &dyn DatabaseAdmin, location: &Location) -> Result<StatusReport, CliError> {
    Ok(StatusReport {
        database: location.shown(),
        status: db.status().await?,
        storage: db.storage().await?,
    })
}

/// `abathur db migrate`: applies the migrations this build has and the database lacks.
pub async fn migrate(db: &dyn DatabaseAdmin) -> Result<Rendered, CliError> {
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

/// `abathur db check`: SQLite's integrity and foreign-key checks, on a read-only connection
/// that migrates nothing. Problems are an error (exit 6), listed on stderr.
pub async fn check(db: &dyn DatabaseAdmin) -> Result<Rendered, CliError> {
    let report = match db.check().await {
        Ok(report) => report,
        // SQLite stops the check at damage it cannot read past.
        Err(DatabaseError::Corrupt) => {
            return Err(CliError::new(
                ExitCode::Unavailable,
                "the database file is corrupt: the integrity check could not read it through; \
                 restore it from a backup",
            ))
        }
        Err(err) => return Err(err.into()),
    };
    if report.is_ok() {
        return Ok(Rendered {
            json: serde_json::json!({
                "ok": true,
                "integrity_problems": [],
                "foreign_key_problems": [],
                "repairable_problems": []
            }),
            human: "integrity: ok\nforeign keys: ok\n".to_string(),
        });
    }
    let mut message = if !report.integrity_problems.is_empty() {
        format!(
            "the database file is corrupt: the integrity check found {} problems (and {} rows \
             refer to rows that do not exist); restore it from a backup",
            report.integrity_problems.len(),
            report.foreign_key_problems.len()
        )
    } else if !report.foreign_key_problems.is_empty() {
        format!(
            "the database is inconsistent: {} rows refer to rows that do not exist",
            report.foreign_key_problems.len()
        )
    } else {
        format!(
            "the database is inconsistent: {} of the counts it keeps disagree with its rows; \
             nothing is lost, and each line names the statement that sets it right",
            report.repairable_problems.len()
        )
    };
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
    for problem in report.repairable_problems.iter().take(PROBLEMS_SHOWN) {
        message.push_str(&format!("\n  {problem}"));
    }
    let hidden = [
        report.integrity_problems.len(),
        report.foreign_key_problems.len(),
        report.repairable_problems.len(),
    ]
    .iter()
    .map(|n| n.saturating_sub(PROBLEMS_SHOWN))
    .sum::<usize>();
    if hidden > 0 {
        message.push_str(&format!("\n  and {hidden} more"));
    }
    Err(CliError::new(ExitCode::Unavailable, message))
}

/// `abathur db backup PATH`: a consistent copy taken while the database stays in use.
pub async fn backup(db: &dyn DatabaseAdmin, target: &Path) -> Result<Rendered, CliError> {
    db.backup_to(target).await.map_err(|err| {
        let cause = CliError::from(err);
        CliError::new(
            cause.exit,
            format!("cannot back up to {}: {}", target.display(), cause.message),
        )
    })?;
    let bytes = std::fs::metadata(target).map(|m| m.len()).unwrap_or(0);
    let target = resolved_path(target);
    Ok(Rendered {
        human: format!("backed up to {} ({bytes} bytes)\n", target.display()),
        json: serde_json::json!({ "backup": target, "bytes": bytes }),
    })
}
