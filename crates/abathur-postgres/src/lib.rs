//! The PostgreSQL adapter: the connection (pool, migrations) and one implementation per port of
//! abathur-core, for swarms whose agents run on many machines and share one server.
//!
//! Same API, same guarantees as the SQLite adapter: the conformance suite
//! (`abathur-conformance`) runs whole against both. What differs is how they are kept:
//!
//! - Time comes from the server's clock (`clock_timestamp()`, read inside each queue
//!   operation's transaction) when the caller passes `Now::Store`, so machines whose clocks
//!   disagree agree on leases, backoff and deadlines.
//! - A claim locks the rows it takes with `FOR UPDATE SKIP LOCKED`, so claimers on many
//!   machines never wait on each other and never take one task twice.
//! - Wake-up is `LISTEN/NOTIFY` (`abathur_changes`), sent by a trigger in the transaction that
//!   makes work ready, with polling as the backstop.
//!
//! Static queries are compile-time checked `sqlx` macros against this crate's migrations, kept
//! offline in its `.sqlx`. Driver errors are classified in `errors` and nowhere else.

mod admin;
mod agent_repo;
mod changes;
mod connection;
mod errors;
mod group_commit;
mod id_lookup;
mod memory_repo;
mod queue_store;
mod repo_support;
mod row;
mod session_repo;
mod task_repo;
mod task_row;
#[doc(hidden)]
pub mod testing;
mod url;
mod wake;

pub use abathur_core::error::{DatabaseError, ValidationError};
pub use admin::PgAdmin;
pub use agent_repo::PgAgentRepository;
pub use changes::{
    Listening, PgChanges, Polling, CHANNEL, DEFAULT_POLL_INTERVAL, LIVENESS_INTERVAL, POLL_ONLY_ENV,
};
pub use connection::{redact, OpenMode, PgConfig, PgDatabase};
pub use group_commit::{PgGroupCommitConfig, PgGroupCommitQueueStore, PgGroupCommitStats};
pub use id_lookup::PgIdLookup;
pub use memory_repo::PgMemoryRepository;
pub use queue_store::PgQueueStore;
pub use session_repo::PgSessionRepository;
pub use task_repo::PgTaskRepository;
pub use url::check_url;

/// The migrations embedded in this build.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");
