//! The command line's grammar: every command, option and flag, parsed by clap.

use std::path::PathBuf;

use abathur_core::models::TaskStatus;
use clap::{Args, Parser, Subcommand};
use uuid::Uuid;

/// The exit codes, shown at the end of `--help`. Kept in step with [`super::ExitCode`].
const EXIT_CODES_HELP: &str = "\
Exit codes:
  0  success (also when stdout is closed early, as by `| head`)
  1  internal error (database unreachable, busy or corrupt, I/O failure)
  2  usage error (unknown command or flag, malformed argument such as a task id that is not a UUID)
  3  not found (no task has this id)
  4  invalid input (a value breaks a rule: summary too long, priority above 10, bad JSON)
  5  conflict (the record already exists, or its state does not allow the operation)";

/// Durable task queue, memory store, session log and agent registry for agent swarms.
#[derive(Debug, Parser)]
#[command(name = "abathur", version, after_help = EXIT_CODES_HELP)]
pub struct Cli {
    /// The database file; created, with its folder, on first use.
    #[arg(
        long,
        global = true,
        env = "ABATHUR_DB",
        value_name = "PATH",
        default_value = ".abathur/abathur.db"
    )]
    pub db: PathBuf,

    /// Print JSON instead of human-readable text.
    #[arg(long, global = true)]
    pub json: bool,

    #[command(subcommand)]
    pub command: Command,
}

/// The top-level commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create the database if needed, bring its schema up to date, and say where it is.
    #[command(after_help = EXIT_CODES_HELP)]
    Init,
    /// Submit, list and show tasks.
    #[command(subcommand)]
    Task(TaskCommand),
    /// Inspect the database.
    #[command(subcommand)]
    Db(DbCommand),
}

/// `abathur task ...`
#[derive(Debug, Subcommand)]
pub enum TaskCommand {
    /// Submit a task; prints its id.
    #[command(after_help = EXIT_CODES_HELP)]
    Submit(SubmitArgs),
    /// List tasks, most urgent first.
    #[command(after_help = EXIT_CODES_HELP)]
    List(ListArgs),
    /// Show every field of one task.
    #[command(after_help = EXIT_CODES_HELP)]
    Show {
        /// The task's id (a full UUID).
        #[arg(value_parser = parse_task_id)]
        id: Uuid,
    },
}

/// `abathur db ...`
#[derive(Debug, Subcommand)]
pub enum DbCommand {
    /// Schema version, journal mode, location and row counts.
    #[command(after_help = EXIT_CODES_HELP)]
    Status,
}

/// The arguments of `abathur task submit`.
#[derive(Debug, Args)]
pub struct SubmitArgs {
    /// What the task is about, in full.
    pub description: String,

    /// One line, at most 140 characters. Defaults to the description's first line, cut to 140
    /// characters.
    #[arg(long)]
    pub summary: Option<String>,

    /// The kind of agent that should run the task.
    #[arg(long, value_name = "TYPE", default_value = "generic")]
    pub agent_type: String,

    /// Base priority, 0 (lowest) to 10 (highest).
    // Wider than the domain's u8 so that an out-of-range number is reported as invalid input
    // (exit 4) by the domain's rule, not as a parse failure.
    #[arg(long, value_name = "N", default_value_t = 5)]
    pub priority: u32,

    /// A task that must complete first (a full UUID); repeat for several.
    #[arg(long = "depends-on", value_name = "ID", value_parser = parse_task_id)]
    pub depends_on: Vec<Uuid>,

    /// The task this one is part of (a full UUID).
    #[arg(long, value_name = "ID", value_parser = parse_task_id)]
    pub parent: Option<Uuid>,

    /// Input for the agent, as a JSON value.
    #[arg(long, value_name = "JSON")]
    pub input: Option<String>,
}

/// The arguments of `abathur task list`.
#[derive(Debug, Args)]
pub struct ListArgs {
    /// Only tasks with this status.
    #[arg(long, value_name = "STATUS", value_parser = parse_status)]
    pub status: Option<TaskStatus>,

    /// Only tasks for this agent type.
    #[arg(long, value_name = "TYPE")]
    pub agent_type: Option<String>,

    /// At most this many tasks.
    #[arg(long, value_name = "N")]
    pub limit: Option<u32>,

    /// Skip this many tasks first.
    #[arg(long, value_name = "N")]
    pub offset: Option<u32>,
}

fn parse_task_id(text: &str) -> Result<Uuid, String> {
    Uuid::try_parse(text.trim()).map_err(|_| {
        "a task id is a full UUID, like 67e55044-10b1-426f-9247-bb680e5fe0c8".to_string()
    })
}

fn parse_status(text: &str) -> Result<TaskStatus, String> {
    text.parse::<TaskStatus>().map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::Cli;

    #[test]
    fn the_command_line_definition_is_consistent() {
        Cli::command().debug_assert();
    }
}
