//! One module per PostgreSQL scenario, P1 to P6.

pub mod claim;
pub mod fanout;
pub mod latency;
pub mod peers;
pub mod processes;
pub mod ready;
