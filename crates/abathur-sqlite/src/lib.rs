//! The SQLite adapter: the connection (pragmas, pools, migrations) and one repository per port.
//!
//! The repositories' static queries are compile-time checked `sqlx` macros; dynamic filters go
//! through `QueryBuilder` with every value bound. Writes run on the database's writer (module
//! `writer`): one thread per database per process that owns its own connection and
//! group-commits what waits; the statements run there are named constants, each module's listed
//! in its `STATEMENTS`, all prepared against the migrated schema by a catalogue test. Driver
//! errors are classified here and nowhere else.

mod admin;
mod agent_repo;
#[cfg(test)]
mod catalogue;
mod changes;
mod claim;
mod connection;
mod errors;
mod group_commit;
mod id_lookup;
mod location;
mod memory_repo;
mod queue_store;
mod row;
mod session_repo;
mod storage;
mod task_repo;
mod writer;

pub use abathur_core::error::{DatabaseError, ValidationError};
pub use admin::SqliteAdmin;
pub use agent_repo::AgentRepositoryImpl;
pub use changes::{DataVersion, SqliteChanges, DATA_VERSION_POLL};
pub use connection::{
    CheckReport, DatabaseConfig, DatabaseConnection, DatabaseStatus, ForeignKeyProblem, OpenMode,
};
pub use group_commit::{GroupCommitConfig, GroupCommitQueueStore, GroupCommitStats};
pub use id_lookup::IdLookupImpl;
pub use location::DatabaseLocation;
pub use memory_repo::MemoryRepositoryImpl;
pub use queue_store::QueueStoreImpl;
pub use session_repo::SessionRepositoryImpl;
pub use storage::{storage_sizes, StorageSizes};
pub use task_repo::TaskRepositoryImpl;

/// The statements the queue runs and the claim's ranking, for the benchmark's baseline: the
/// raw rusqlite queue of `abathur-bench` must run the same SQL as this adapter, so it reads the
/// texts here rather than keeping copies. Not part of the adapter's API: the texts follow the
/// schema and change with it.
#[doc(hidden)]
pub mod baseline {
    use abathur_core::queue::{PriorityPolicy, QueueError};
    use chrono::{DateTime, Utc};

    /// A task row, `?1` to `?29` in the columns' order.
    pub const INSERT_TASK: &str = crate::task_repo::INSERT_TASK;
    /// A task's dependency edges from its JSON list.
    pub const INSERT_EDGES: &str = crate::task_repo::INSERT_EDGES;
    /// A whole task by id.
    pub const SELECT_TASK: &str = crate::task_repo::SELECT_TASK;
    /// Whether a task exists: the check of a submitted task's references.
    pub const TASK_EXISTS: &str = crate::task_repo::TASK_EXISTS;
    /// A stored dependency's status and depth, read by a submit.
    pub const SELECT_DEPENDENCY: &str = crate::queue_store::SELECT_DEPENDENCY;
    /// One history row.
    pub const INSERT_EVENT: &str = crate::queue_store::INSERT_EVENT;
    /// One task's status change.
    pub const SET_STATUS: &str = crate::queue_store::SET_STATUS;
    /// The status change of a set of tasks.
    pub const SET_STATUS_MANY: &str = crate::queue_store::SET_STATUS_MANY;
    /// The history rows of a set of tasks.
    pub const INSERT_EVENTS_MANY: &str = crate::queue_store::INSERT_EVENTS_MANY;
    /// The attempts of a claim, one statement for all.
    pub const INSERT_ATTEMPTS: &str = crate::queue_store::INSERT_ATTEMPTS;
    /// The run-after times a claim forgets.
    pub const DELETE_SCHEDULES: &str = crate::queue_store::DELETE_SCHEDULES;
    /// An attempt, read by a completion.
    pub const SELECT_ATTEMPT: &str = crate::queue_store::SELECT_ATTEMPT;
    /// An attempt's end.
    pub const CLOSE_ATTEMPT: &str = crate::queue_store::CLOSE_ATTEMPT;
    /// A completed task's result.
    pub const SET_RESULT: &str = crate::queue_store::SET_RESULT;
    /// The blocked dependents a completion makes ready.
    pub const DEPENDENTS_TO_RELEASE: &str = crate::queue_store::DEPENDENTS_TO_RELEASE;
    /// What a claim key is computed from, for tasks becoming ready.
    pub const SELECT_KEY_INPUTS: &str = crate::queue_store::SELECT_KEY_INPUTS;
    /// The claim keys of tasks stored ready.
    pub const STORE_KEYS: &str = crate::queue_store::STORE_KEYS;
    /// Blocked tasks made ready with their claim keys.
    pub const RELEASE_READY: &str = crate::queue_store::RELEASE_READY;

    /// The ids of up to `limit` claimable tasks of any agent type, the most urgent at `now`
    /// first: the claim's two statements and its merge, exactly as a claim runs them.
    ///
    /// # Errors
    /// `QueueError::Database` when a statement fails.
    pub fn most_urgent(
        conn: &rusqlite::Connection,
        limit: u32,
        priority: &PriorityPolicy,
        now: DateTime<Utc>,
    ) -> Result<Vec<String>, QueueError> {
        crate::claim::most_urgent(conn, crate::claim::AgentFilter::Any, limit, priority, now)
    }
}

/// The migrations embedded in this build, for tools and tests that manage the schema directly.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

// Compile-time conformance: every repository implements its port.
const _: () = {
    fn assert_task<T: abathur_core::ports::TaskRepository>() {}
    fn assert_agent<T: abathur_core::ports::AgentRepository>() {}
    fn assert_memory<T: abathur_core::ports::MemoryRepository>() {}
    fn assert_session<T: abathur_core::ports::SessionRepository>() {}
    let _ = assert_task::<TaskRepositoryImpl>;
    let _ = assert_agent::<AgentRepositoryImpl>;
    let _ = assert_memory::<MemoryRepositoryImpl>;
    let _ = assert_session::<SessionRepositoryImpl>;
    fn assert_queue<T: abathur_core::queue::QueueStore>() {}
    let _ = assert_queue::<QueueStoreImpl>;
    let _ = assert_queue::<GroupCommitQueueStore>;
};
