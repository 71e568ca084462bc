//! The errors a port returns. Adapters translate their driver's errors into these, so nothing
//! above a port sees a driver type, and no message carries SQL.

use std::fmt;

/// A value that breaks a rule of the domain, caught before anything is written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidationError {
    /// The field or argument at fault, as the user named it (`summary`, `priority`, ...).
    pub field: &'static str,
    /// What is wrong with it, in the user's terms.
    pub message: String,
}

impl ValidationError {
    /// A validation error for `field`.
    pub fn new(field: &'static str, message: impl Into<String>) -> Self {
        Self {
            field,
            message: message.into(),
        }
    }
}

impl fmt::Display for ValidationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid {}: {}", self.field, self.message)
    }
}

impl std::error::Error for ValidationError {}

/// Everything a storage port can fail with.
///
/// Each variant's message speaks of tasks, agents, memories and sessions, never of SQL.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum DatabaseError {
    /// No row has this id (or key).
    #[error("{entity} {id} was not found")]
    NotFound {
        /// What was looked for: `task`, `agent`, `memory`, `session`.
        entity: &'static str,
        /// The id or key that matched nothing.
        id: String,
    },

    /// The write would duplicate something that must be unique.
    #[error("{entity} {id} already exists")]
    UniqueViolation {
        /// What would be duplicated.
        entity: &'static str,
        /// The id or key that is taken.
        id: String,
    },

    /// The write refers to something that does not exist.
    #[error("{entity} refers to a {reference} that does not exist{}", fmt_id(.id))]
    ForeignKeyViolation {
        /// What was being written.
        entity: &'static str,
        /// What it refers to: `parent task`, `session`, `dependency`, ...
        reference: &'static str,
        /// The missing id, when the adapter could tell which one it was.
        id: Option<String>,
    },

    /// The write breaks a rule the schema enforces.
    #[error("{entity} breaks a rule of the schema: {detail}")]
    CheckViolation {
        /// What was being written.
        entity: &'static str,
        /// Which rule, in the user's terms.
        detail: String,
    },

    /// The write left out a value the schema requires.
    #[error("{entity} is missing a required value: {detail}")]
    NotNullViolation {
        /// What was being written.
        entity: &'static str,
        /// Which value.
        detail: String,
    },

    /// The input breaks a rule of the domain; nothing was written.
    #[error(transparent)]
    Validation(#[from] ValidationError),

    /// The operation is not allowed in the row's current state (a terminated agent's
    /// heartbeat, say).
    #[error("{entity} {id}: {reason}")]
    Conflict {
        /// What the operation was on.
        entity: &'static str,
        /// Its id.
        id: String,
        /// Why it cannot be done now.
        reason: String,
    },

    /// A stored row does not parse into its model. The data was changed outside abathur, or
    /// by a bug; it is reported, never skipped.
    #[error("stored {table} row {id} is corrupt: column {column}: {reason}")]
    CorruptRow {
        /// The table the row is in.
        table: &'static str,
        /// The row's id or key.
        id: String,
        /// The column that does not parse.
        column: &'static str,
        /// Why it does not parse.
        reason: String,
    },

    /// Another writer held the database for longer than the busy timeout.
    #[error("the database is busy: another writer held it longer than the busy timeout")]
    Busy,

    /// No connection became free in time.
    #[error("timed out waiting for a database connection")]
    Timeout,

    /// The database could not be opened or reached.
    #[error("cannot open the database: {0}")]
    Connection(String),

    /// The schema could not be brought up to date.
    #[error("cannot migrate the database: {0}")]
    Migration(String),

    /// A command that only reads found no database where it was pointed, and does not make one.
    #[error("there is no abathur database at {location}; create one with `abathur init`")]
    NoDatabase {
        /// Where the database was looked for.
        location: String,
    },

    /// The file is a database, but its tables were not made by abathur; it is left untouched.
    #[error(
        "{location} holds a database that is not abathur's ({detail}); it was left untouched. \
         Run `abathur init` to add abathur's tables to it anyway"
    )]
    ForeignSchema {
        /// Where the database is.
        location: String,
        /// What gave it away, in the user's terms.
        detail: String,
    },

    /// A command that only reads found a schema older than this build's; it does not migrate.
    #[error(
        "the database's schema is older than this build's (version {found}, this build has \
         {expected}); bring it up to date with `abathur db migrate`"
    )]
    SchemaOutOfDate {
        /// The newest migration applied to the database.
        found: i64,
        /// The newest migration this build has.
        expected: i64,
    },

    /// The database, its folder or its filesystem does not allow writing.
    #[error(
        "cannot write to the database: the file, its folder or its filesystem is read-only, \
         or the URL asked for read-only access; nothing was written"
    )]
    ReadOnly,

    /// The disk holding the database (or the file being written) has no space left.
    #[error("the disk is full; nothing was written. Free some space and try again")]
    DiskFull,

    /// The database file is damaged.
    #[error(
        "the database file is corrupt; `abathur db check` lists the damage. Restore it from a \
         backup (`abathur db backup` makes one)"
    )]
    Corrupt,

    /// The file is not a SQLite database at all.
    #[error("the file is not a SQLite database (nor an empty file); abathur does not change it")]
    NotADatabase,

    /// The operating system failed to read or write the file.
    #[error("the disk failed to read or write the database (an I/O error); nothing was written")]
    Io,

    /// Any other failure of the store. The message is the store's, without SQL.
    #[error("database error: {0}")]
    Other(String),
}

fn fmt_id(id: &Option<String>) -> String {
    id.as_ref().map(|id| format!(" ({id})")).unwrap_or_default()
}

/// What kind of failure an error is, in the terms the adapters report to people and agents:
/// the command line's exit codes and the MCP server's error kinds both derive from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCategory {
    /// The input breaks a rule; nothing was written.
    Invalid,
    /// Something named does not exist.
    NotFound,
    /// The stored state forbids it: a duplicate, a finished task, a lost lease.
    Conflict,
    /// The database was busy or no connection was free in time; trying again may work.
    Busy,
    /// There is no usable abathur database: none at the location, not a database, not
    /// abathur's, corrupt, or a schema that needs a migration first.
    Unavailable,
    /// The storage refused: a read-only file or filesystem, a full disk, an I/O error, a file
    /// that cannot be opened. Trying again does not help until that is fixed.
    Storage,
    /// Anything else: the store failed.
    Internal,
}

impl DatabaseError {
    /// The kind of failure this is.
    pub fn category(&self) -> ErrorCategory {
        match self {
            Self::NotFound { .. } => ErrorCategory::NotFound,
            Self::Validation(_)
            | Self::CheckViolation { .. }
            | Self::NotNullViolation { .. }
            | Self::ForeignKeyViolation { .. } => ErrorCategory::Invalid,
            Self::UniqueViolation { .. } | Self::Conflict { .. } => ErrorCategory::Conflict,
            Self::Busy | Self::Timeout => ErrorCategory::Busy,
            Self::NoDatabase { .. }
            | Self::ForeignSchema { .. }
            | Self::SchemaOutOfDate { .. }
            | Self::Migration(_)
            | Self::Corrupt
            | Self::NotADatabase => ErrorCategory::Unavailable,
            Self::ReadOnly | Self::DiskFull | Self::Io | Self::Connection(_) => {
                ErrorCategory::Storage
            }
            _ => ErrorCategory::Internal,
        }
    }

    /// Shorthand for [`DatabaseError::NotFound`].
    pub fn not_found(entity: &'static str, id: impl ToString) -> Self {
        Self::NotFound {
            entity,
            id: id.to_string(),
        }
    }

    /// Shorthand for a [`DatabaseError::Validation`] of `field`.
    pub fn validation(field: &'static str, message: impl Into<String>) -> Self {
        Self::Validation(ValidationError::new(field, message))
    }

    /// True when the error is a [`DatabaseError::NotFound`].
    pub fn is_not_found(&self) -> bool {
        matches!(self, Self::NotFound { .. })
    }
}
