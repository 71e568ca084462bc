//! abathur: the durable task queue, memory store, session log and agent registry of an agent
//! swarm, on embedded SQLite.
//!
//! - [`domain`] holds the models and the ports (re-exported from `abathur-core`), free of any
//!   database driver.
//! - [`backend`] opens the database `--db` names and hands out its ports; the rest of the
//!   application holds only those.
//! - [`infrastructure::database`] is the SQLite adapter (`abathur-sqlite`), at the
//!   specification's path.
//! - [`worker`] runs a command for each claimed task; [`mcp`] serves the services as MCP tools.
//! - [`cli`] is the `abathur` command, a thin adapter over all of them.

pub mod backend;
pub mod cli;
pub mod infrastructure;
pub mod mcp;
pub mod waiting;
pub mod web;
pub mod worker;

/// The domain: models, ports, errors and the clock.
pub mod domain {
    pub use abathur_core::{clock, error, limits, models, ports, queue, timestamp};
}
