//! The ports: what the domain needs from storage, one trait per kind of record. Each adapter
//! (SQLite now, PostgreSQL later) implements every trait and passes the same conformance
//! tests.

mod admin;
mod agent_repository;
mod changes;
mod id_lookup;
mod memory_repository;
mod session_repository;
mod task_repository;

pub use admin::{
    status_count_problems, CheckReport, DatabaseAdmin, DatabaseStatus, ForeignKeyProblem,
    StorageSizes, TableStats,
};
pub use agent_repository::AgentRepository;
pub use changes::{Change, ChangeSubscription, Changes};
pub use id_lookup::{IdKind, IdLookup};
pub use memory_repository::MemoryRepository;
pub use session_repository::SessionRepository;
pub use task_repository::{
    minutes_from_counts, FinishedMinute, TaskCursor, TaskFilters, TaskOrder, TaskPageQuery,
    TaskRepository, INDEXED_SEARCH_MIN_CHARS, MAX_SEARCH_CANDIDATES, MAX_SUMMARY_SEARCH_CHARS,
};
