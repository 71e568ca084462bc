//! `abathur worker`: parses its arguments and runs [`crate::worker`].

use std::path::Path;

use clap::Args;

use super::error::{CliError, ExitCode};

/// The arguments of `abathur worker`.
#[derive(Debug, Args)]
pub struct WorkerArgs {}

/// Runs the worker until it is told to stop.
pub async fn run(_db: &Path, _args: WorkerArgs) -> Result<(), CliError> {
    Err(CliError::new(
        ExitCode::Internal,
        "the worker is not built yet",
    ))
}
