//! Adapters that connect the domain's ports to the outside world.

pub mod database;
