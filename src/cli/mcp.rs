//! `abathur mcp`: parses its arguments and serves [`crate::mcp`].

use std::path::Path;

use clap::Args;

use super::error::{CliError, ExitCode};

/// The arguments of `abathur mcp`.
#[derive(Debug, Args)]
pub struct McpArgs {}

/// Serves MCP until the client goes away.
pub async fn run(_db: &Path, _args: McpArgs) -> Result<(), CliError> {
    Err(CliError::new(
        ExitCode::Internal,
        "the MCP server is not built yet",
    ))
}
