//! `abathur worker` as a user runs it: real worker processes running `sh -c` commands on one
//! database file, signalled and killed as an operator or a crash would.
//!
//! Unix only: the tests send signals and read `/proc`.

#![cfg(unix)]

mod arguments;
mod commands;
mod dag;
mod retention;
mod sandbox;
mod shutdown;
