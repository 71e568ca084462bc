//! The domain of abathur: the models an agent swarm works with (tasks, agents, memories,
//! sessions), the ports that storage adapters implement, and the errors they return.
//!
//! Nothing here knows which database is behind a port. The SQLite adapter is the
//! `abathur-sqlite` crate; every other backend implements the same traits.

pub mod clock;
pub mod error;
pub mod limits;
pub mod models;
pub mod ports;
pub mod queue;
pub mod text;
pub mod timestamp;

pub use clock::{Clock, Now, SystemClock};
pub use error::{DatabaseError, ValidationError};
