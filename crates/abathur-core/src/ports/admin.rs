//! The admin port: what `abathur init` and `abathur db status|migrate|check|backup` do to a
//! database as a whole, and closing it on the way out. The reports are plain data, so each
//! backend fills them from its own catalogue.

use std::collections::BTreeMap;
use std::path::Path;

use async_trait::async_trait;
use serde::Serialize;

use crate::error::DatabaseError;
use crate::models::TaskStatus;

/// The schema, the journal and the rows a database holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DatabaseStatus {
    /// The newest migration applied, or `None` before the first.
    pub schema_version: Option<i64>,
    /// How the backend journals writes (SQLite's journal mode: `wal` for a file, `memory` in
    /// memory).
    pub journal_mode: String,
    /// Rows per table, by table name (the backend's own bookkeeping tables left out).
    pub tables: BTreeMap<String, i64>,
    /// Tasks per status, every status present.
    pub tasks_by_status: BTreeMap<TaskStatus, i64>,
}

/// How much room a database takes, in bytes unless said otherwise.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StorageSizes {
    /// The database file (0 in memory).
    pub file_bytes: u64,
    /// Its write-ahead log (0 when there is none).
    pub wal_bytes: u64,
    /// The size of a page.
    pub page_size: u64,
    /// Pages in the file.
    pub page_count: u64,
    /// Pages that hold nothing: freed by deletes (a prune), reused before the file grows.
    pub free_pages: u64,
    /// Bytes per table, its indexes included.
    pub tables: BTreeMap<String, u64>,
    /// Per table, what a server backend keeps of it (PostgreSQL): its own and its indexes'
    /// bytes, and the dead row versions that vacuum has still to clean. Empty for a backend
    /// without such figures (SQLite), and then left out of the JSON.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub table_stats: BTreeMap<String, TableStats>,
}

/// A table's storage, as a server backend counts it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TableStats {
    /// The table's own bytes (its rows, TOAST included), without its indexes.
    pub table_bytes: u64,
    /// The bytes of all its indexes.
    pub index_bytes: u64,
    /// Live rows, as the server's statistics estimate them.
    pub live_rows: u64,
    /// Dead row versions (left by updates and deletes) not yet cleaned by vacuum.
    pub dead_rows: u64,
    /// When vacuum (automatic or manual) last cleaned the table, if the server remembers.
    pub last_vacuum: Option<chrono::DateTime<chrono::Utc>>,
}

/// What a consistency check found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CheckReport {
    /// Damage the integrity check found; empty when there is none.
    pub integrity_problems: Vec<String>,
    /// Rows that refer to a parent row that does not exist.
    pub foreign_key_problems: Vec<ForeignKeyProblem>,
    /// Figures the store keeps beside its rows (the counts per status) that disagree with the
    /// rows, each with the statement that sets it right: not damage, and no backup is needed.
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
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ForeignKeyProblem {
    pub table: String,
    /// The row's id in its table; `None` when the backend has none to give.
    pub rowid: Option<i64>,
    /// The table the missing parent should be in.
    pub parent: String,
}

/// The database as a whole: its schema, its health, its copies, and closing it.
#[async_trait]
pub trait DatabaseAdmin: Send + Sync {
    /// Applies the migrations this build has and the database lacks.
    ///
    /// # Errors
    /// `Migration` when a migration fails or the database holds one this build does not know;
    /// `ReadOnly`, `DiskFull`, `Busy` or `Io` when the schema cannot be written.
    async fn migrate(&self) -> Result<(), DatabaseError>;

    /// The newest migration applied, or `None` before the first.
    ///
    /// # Errors
    /// Only the store's own failures.
    async fn schema_version(&self) -> Result<Option<i64>, DatabaseError>;

    /// The schema version, journal mode, rows per table and tasks per status.
    ///
    /// # Errors
    /// Only the store's own failures.
    async fn status(&self) -> Result<DatabaseStatus, DatabaseError>;

    /// The sizes of the database, its journal and its tables.
    ///
    /// # Errors
    /// Only the store's own failures.
    async fn storage(&self) -> Result<StorageSizes, DatabaseError>;

    /// The backend's integrity and foreign-key checks over the whole database.
    ///
    /// # Errors
    /// `Corrupt` when the check cannot read past damage; otherwise only the store's own
    /// failures. Problems found are in the report, not errors.
    async fn check(&self) -> Result<CheckReport, DatabaseError>;

    /// Writes a consistent copy of the database to `target` while it stays in use; `target`
    /// is either the whole copy or absent afterwards.
    ///
    /// # Errors
    /// `Validation` when `target` exists already or its folder does not; `DiskFull`,
    /// `ReadOnly`, `Io` or `Connection` when the copy cannot be written there.
    async fn backup_to(&self, target: &Path) -> Result<(), DatabaseError>;

    /// Closes every connection, waiting for those in use to come back, so that nothing is
    /// left to finish after the process exits (SQLite: the last connection to close merges
    /// the WAL into the file).
    async fn close(&self);
}

/// What a check reports when the counts per status a store keeps beside its tasks (for the
/// overview) disagree with a count of the tasks: one line per status that differs, naming
/// `repair`, the statement that sets them right. `kept` and `counted` pair a status, as
/// stored, with its number of tasks; a status missing from either has none.
pub fn status_count_problems(
    kept: &[(String, i64)],
    counted: &[(String, i64)],
    repair: &str,
) -> Vec<String> {
    let mut statuses: BTreeMap<&str, (i64, i64)> = BTreeMap::new();
    for (status, n) in kept {
        statuses.entry(status.as_str()).or_default().0 += n;
    }
    for (status, n) in counted {
        statuses.entry(status.as_str()).or_default().1 += n;
    }
    statuses
        .into_iter()
        .filter(|(_, (kept, counted))| kept != counted)
        .map(|(status, (kept, counted))| {
            format!(
                "the overview's count of {status} tasks is {kept}, but {counted} tasks are \
                 {status}: set the counts right with {repair}"
            )
        })
        .collect()
}
