//! Integration tests of `abathur serve`: each test starts the real binary on a loopback port of
//! its own, against its own database, and talks to it over HTTP as a browser or an API client
//! would, while the CLI reads and writes the same database.

mod api;
mod schemathesis;
mod security;
mod server;
