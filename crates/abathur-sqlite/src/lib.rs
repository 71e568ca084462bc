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
