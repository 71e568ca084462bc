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

mod connection;
mod errors;
mod row;
mod task_row;
mod url;
#[doc(hidden)]
pub mod testing;

pub use abathur_core::error::{DatabaseError, ValidationError};
pub use connection::{redact, PgConfig, PgDatabase};
pub use url::check_url;

/// The migrations embedded in this build.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");
