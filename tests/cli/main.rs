//! Integration tests of the `abathur` command: each test runs the real binary against its own
//! database in a temporary directory.

mod sandbox;

mod broken_pipe;
mod db_admin;
mod db_status;
mod exit_codes;
mod ids;
mod import;
mod init;
mod json;
mod output;
mod prune;
mod queue;
mod readme;
mod records;
mod repeat;
mod task;
mod tree;
