//! Integration tests of the `abathur` command: each test runs the real binary against its own
//! database in a temporary directory.

mod mounts;
mod sandbox;

mod broken_pipe;
mod checkpoint;
mod claim_wait;
mod db_admin;
mod db_location;
mod db_status;
mod exit_codes;
mod ids;
mod import;
mod init;
mod json;
mod limits;
mod output;
mod postgres;
mod prune;
mod queue;
mod ranges;
mod readme;
mod records;
mod repeat;
mod storage_faults;
mod submit_options;
mod task;
mod tree;
