//! Integration tests of the SQLite adapter: the specification's tests, every repository
//! method, the schema and migrations, the connection, and bad input.

mod helpers;

mod agent_repo;
mod connection;
mod group_commit;
mod id_lookup;
mod limits;
mod memory_repo;
mod migrations;
mod priority;
mod query_plans;
mod queue;
mod queue_properties;
mod repeat;
mod retention;
mod session_repo;
mod submit_options;
mod task_repo;
mod task_repo_test;
mod timestamp_range;
