//! The SQLite adapter, at the path the specification names: everything here is
//! [`abathur_sqlite`]'s.

pub use abathur_sqlite::*;
