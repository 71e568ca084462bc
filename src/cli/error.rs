//! What a failed command reports: a message in the user's terms and a documented exit code.

use std::fmt;

use abathur_core::error::{DatabaseError, ErrorCategory, ValidationError};
use abathur_core::queue::QueueError;

/// How the process ends. The numbers are documented in the `cli` module and in `--help`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitCode {
    /// The command did what was asked.
    Success = 0,
    /// Anything not covered below: the database was busy, output could not be written, a bug.
    Internal = 1,
    /// The command line could not be parsed (clap's own code), except a well-formed number or
    /// duration outside its range, which is [`ExitCode::Invalid`].
    Usage = 2,
    /// A record named on the command line does not exist.
    NotFound = 3,
    /// A value breaks a rule of the domain or the schema; nothing was written.
    Invalid = 4,
    /// The write clashes with what is stored: a duplicate, or a state that forbids it.
    Conflict = 5,
    /// No usable abathur database: none at the path (for a command that only reads), not a
    /// database, not abathur's, corrupt, or a schema that needs `abathur db migrate`.
    Unavailable = 6,
    /// The storage refused: a read-only file, folder or filesystem, a full disk, an I/O
    /// error, a file that cannot be opened.
    Storage = 7,
}

impl ExitCode {
    /// The process exit status.
    pub fn code(self) -> i32 {
        self as i32
    }
}

/// A command's failure, ready to be printed as `error: <message>`.
#[derive(Debug)]
pub struct CliError {
    /// The exit code it maps to.
    pub exit: ExitCode,
    /// What went wrong, in the user's terms: no SQL, no driver text, no `Debug` output.
    pub message: String,
}

impl CliError {
    /// A failure with exit code `exit`.
    pub fn new(exit: ExitCode, message: impl Into<String>) -> Self {
        Self {
            exit,
            message: message.into(),
        }
    }

    /// An unexpected failure whose cause stays in the log. `context` says, for the user, what
    /// was being done.
    pub fn internal(context: &str, cause: &dyn std::error::Error) -> Self {
        tracing::error!(error = %cause, "{context}");
        Self::new(
            ExitCode::Internal,
            format!("{context} (run with RUST_LOG=debug for details)"),
        )
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl From<ValidationError> for CliError {
    fn from(err: ValidationError) -> Self {
        Self::new(ExitCode::Invalid, err.to_string())
    }
}

impl From<ErrorCategory> for ExitCode {
    fn from(category: ErrorCategory) -> Self {
        match category {
            ErrorCategory::Invalid => ExitCode::Invalid,
            ErrorCategory::NotFound => ExitCode::NotFound,
            ErrorCategory::Conflict => ExitCode::Conflict,
            ErrorCategory::Unavailable => ExitCode::Unavailable,
            ErrorCategory::Storage => ExitCode::Storage,
            ErrorCategory::Busy | ErrorCategory::Internal => ExitCode::Internal,
        }
    }
}

impl From<DatabaseError> for CliError {
    fn from(err: DatabaseError) -> Self {
        // `Other` carries the store's own message, which may quote the statement: it goes
        // to the log, and the user gets a pointer to it.
        if matches!(err, DatabaseError::Other(_)) {
            return Self::internal("the database failed unexpectedly", &err);
        }
        Self::new(err.category().into(), err.to_string())
    }
}

impl From<QueueError> for CliError {
    fn from(err: QueueError) -> Self {
        match err {
            QueueError::Database(db) => db.into(),
            other => Self::new(other.category().into(), other.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_database_error_maps_to_its_documented_exit_code() {
        let cases = [
            (DatabaseError::not_found("task", "x"), ExitCode::NotFound),
            (
                DatabaseError::validation("priority", "too high"),
                ExitCode::Invalid,
            ),
            (
                DatabaseError::ForeignKeyViolation {
                    entity: "task",
                    reference: "dependency",
                    id: None,
                },
                ExitCode::Invalid,
            ),
            (
                DatabaseError::UniqueViolation {
                    entity: "task",
                    id: "x".into(),
                },
                ExitCode::Conflict,
            ),
            (DatabaseError::Busy, ExitCode::Internal),
            (DatabaseError::DiskFull, ExitCode::Storage),
            (DatabaseError::ReadOnly, ExitCode::Storage),
            (DatabaseError::Io, ExitCode::Storage),
            (DatabaseError::Corrupt, ExitCode::Unavailable),
            (DatabaseError::NotADatabase, ExitCode::Unavailable),
            (
                DatabaseError::NoDatabase {
                    location: "x.db".into(),
                },
                ExitCode::Unavailable,
            ),
            (
                DatabaseError::Other("near \"SELEC\": syntax error".into()),
                ExitCode::Internal,
            ),
        ];
        for (err, exit) in cases {
            assert_eq!(CliError::from(err).exit, exit);
        }
    }

    #[test]
    fn a_store_message_never_reaches_the_user() {
        let err = CliError::from(DatabaseError::Other("near \"SELEC\": syntax error".into()));
        assert!(!err.message.contains("SELEC"), "{}", err.message);
    }
}
