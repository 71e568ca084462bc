//! The command line's grammar: every command, option and flag, parsed by clap.

use std::path::PathBuf;
use std::time::Duration;

use abathur_core::models::{TaskSource, TaskStatus};
use chrono::{DateTime, Utc};
use clap::{Args, Parser, Subcommand};

use super::ids::{parse_id, IdArg};

/// The exit codes, shown at the end of `--help`. Kept in step with [`super::ExitCode`].
const EXIT_CODES_HELP: &str = "\
Exit codes:
  0  success (also when stdout is closed early, as by `| head`)
  1  internal error (database unreachable, busy or corrupt, I/O failure)
  2  usage error (unknown command or flag, malformed argument such as a bad duration, or an id
     prefix that matches several records)
  3  not found (no task or attempt has this id)
  4  invalid input (a value breaks a rule: summary too long, priority above 10, bad JSON)
  5  conflict (the record already exists, its state does not allow the operation, or a
     lease was lost)";

/// The command line's definition, with the exit codes at the end of every command's help.
pub fn command() -> clap::Command {
    fn with_exit_codes(command: clap::Command) -> clap::Command {
        command
            .after_help(EXIT_CODES_HELP)
            .mut_subcommands(with_exit_codes)
    }
    with_exit_codes(<Cli as clap::CommandFactory>::command())
}

/// Durable task queue, memory store, session log and agent registry for agent swarms.
#[derive(Debug, Parser)]
#[command(name = "abathur", version)]
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
    Init,
    /// Submit, claim, finish and inspect tasks.
    #[command(subcommand)]
    Task(TaskCommand),
    /// The queue at a glance: tasks per status, the oldest ready task, running leases and how
    /// soon they expire.
    Status {
        /// Show at most this many running attempts.
        #[arg(long, value_name = "N", default_value_t = 20)]
        running: u32,
    },
    /// Recover the tasks of dead workers (expired leases) and tasks past their timeout, then
    /// bring waiting tasks' priorities up to date for ageing and deadlines.
    ///
    /// Safe to run from any number of processes at once; run it every minute or so (from cron,
    /// say) when no `abathur worker` is running to do it.
    Reap,
    /// Store, read and search versioned memories.
    #[command(subcommand)]
    Memory(super::memory::MemoryCommand),
    /// Create sessions, append to their event logs, read and set their state.
    #[command(subcommand)]
    Session(super::session::SessionCommand),
    /// Register agents and track their liveness.
    #[command(subcommand)]
    Agent(super::agent::AgentCommand),
    /// Migrate, inspect, check and back up the database.
    #[command(subcommand)]
    Db(DbCommand),
    /// Print a shell completion script: `abathur completions bash > /etc/bash_completion.d/abathur`.
    Completions {
        /// bash, zsh, fish, elvish or powershell.
        shell: clap_complete::Shell,
    },
    /// Claim tasks and run a command for each: `abathur worker -- CMD ARGS...`.
    Worker(super::worker::WorkerArgs),
    /// Serve the queue, memory and sessions as MCP tools (stdio, or `--http`).
    Mcp(super::mcp::McpArgs),
    /// Remove finished tasks, with their attempts and events, that finished more than
    /// DURATION ago: `abathur prune --older-than 7d`.
    ///
    /// Runs in short write transactions of a few hundred tasks each, so workers go on while it
    /// runs. A task still needed is kept: a completed one while a dependent is unfinished, a
    /// failed or cancelled one while any task depends on it, a parent while a child is
    /// unfinished. A dependent counts a removed dependency as completed. The freed space is
    /// reused by new tasks; `abathur db status` shows it (free pages).
    Prune(super::prune::PruneArgs),
}

/// `abathur task ...`
#[derive(Debug, Subcommand)]
pub enum TaskCommand {
    /// Submit a task; prints its id.
    Submit(SubmitArgs),
    /// Submit many tasks from JSON Lines (one object per line; see `docs/QUEUE.md`), all or
    /// none. Lines refer to each other by their "key".
    Import {
        /// The file to read, or `-` for stdin.
        source: PathBuf,
    },
    /// List tasks, most urgent first.
    List(ListArgs),
    /// Show every field of one task.
    Show {
        /// The task's id, or an unambiguous prefix of it.
        #[arg(value_parser = parse_id)]
        id: IdArg,
    },
    /// What a task waits for and what waits for it, as indented trees with statuses.
    Tree {
        /// The task's id, or an unambiguous prefix of it.
        #[arg(value_parser = parse_id)]
        id: IdArg,
    },
    /// Every status change of a task, oldest first.
    History {
        /// The task's id, or an unambiguous prefix of it.
        #[arg(value_parser = parse_id)]
        id: IdArg,
    },
    /// Claim the most urgent ready tasks; prints each task with its attempt id.
    ///
    /// The attempt id is the lease: pass it to `heartbeat`, `complete` or `fail`. When no task
    /// is ready it says so and exits 0 (`--json` prints `[]`).
    Claim(ClaimArgs),
    /// Extend a lease, so the reaper does not take the task back.
    Heartbeat {
        /// The attempt id that `claim` printed, or an unambiguous prefix of it.
        #[arg(value_parser = parse_id)]
        attempt: IdArg,
        /// The new lease, counted from now: `90s`, `5m`, `1h`, or plain seconds.
        #[arg(long, value_name = "DURATION", value_parser = parse_duration, default_value = "5m")]
        lease: Duration,
    },
    /// Complete a claimed task; prints the dependents that became ready.
    Complete {
        /// The attempt id that `claim` printed, or an unambiguous prefix of it.
        #[arg(value_parser = parse_id)]
        attempt: IdArg,
        /// The task's result: a JSON value, or @FILE to read it from a file.
        #[arg(long, value_name = "JSON|@FILE")]
        result: Option<String>,
    },
    /// Fail a claimed task: it is retried after a backoff, or, with its retries used up,
    /// fails along with everything that depends on it.
    Fail {
        /// The attempt id that `claim` printed, or an unambiguous prefix of it.
        #[arg(value_parser = parse_id)]
        attempt: IdArg,
        /// What went wrong.
        #[arg(long, value_name = "MESSAGE")]
        error: String,
    },
    /// Cancel a task, every task that depends on it, and its child tasks.
    Cancel {
        /// The task's id, or an unambiguous prefix of it.
        #[arg(value_parser = parse_id)]
        id: IdArg,
        /// Who is cancelling, for the history.
        #[arg(long, value_name = "NAME", default_value = "human")]
        actor: String,
    },
    /// Put a failed task back to ready; the tasks its failure cascaded to wait for it again.
    Retry {
        /// The task's id, or an unambiguous prefix of it.
        #[arg(value_parser = parse_id)]
        id: IdArg,
        /// Who is retrying, for the history.
        #[arg(long, value_name = "NAME", default_value = "human")]
        actor: String,
    },
}

/// The arguments of `abathur task claim`.
#[derive(Debug, Args)]
pub struct ClaimArgs {
    /// Who is claiming; recorded on the attempt and in the history.
    #[arg(long, value_name = "NAME")]
    pub worker: String,

    /// Only tasks for this agent type; repeat for several. Any type when left out.
    #[arg(long = "agent-type", value_name = "TYPE")]
    pub agent_types: Vec<String>,

    /// How long the lease lasts without a heartbeat: `90s`, `5m`, `1h`, or plain seconds.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, default_value = "5m")]
    pub lease: Duration,

    /// At most this many tasks.
    #[arg(long = "max", value_name = "N", default_value_t = 1)]
    pub max_tasks: u32,
}

/// `abathur db ...`
#[derive(Debug, Subcommand)]
pub enum DbCommand {
    /// Schema version, journal mode, location and row counts.
    Status,
    /// Apply the migrations this build has and the database lacks (every command does this on
    /// first use; this says what it did).
    Migrate,
    /// Run SQLite's integrity and foreign-key checks; exits 1 if anything is wrong.
    Check,
    /// Write a consistent copy of the database to PATH while it stays in use.
    Backup {
        /// Where to write the copy: a new file (an existing one is never overwritten).
        path: PathBuf,
    },
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

    /// A task that must complete first (an id or a prefix of one); repeat for several.
    #[arg(long = "depends-on", value_name = "ID", value_parser = parse_id)]
    pub depends_on: Vec<IdArg>,

    /// The task this one is part of (an id or a prefix of one).
    #[arg(long, value_name = "ID", value_parser = parse_id)]
    pub parent: Option<IdArg>,

    /// Input for the agent: a JSON value, or @FILE to read it from a file.
    #[arg(long, value_name = "JSON|@FILE")]
    pub input: Option<String>,

    /// How many times a failed attempt is retried before the task fails.
    #[arg(long, value_name = "N", default_value_t = 3)]
    pub max_retries: u32,

    /// Seconds an attempt may run before the reaper times it out.
    #[arg(long = "timeout", value_name = "SECS", default_value_t = 3600)]
    pub timeout_seconds: u32,

    /// The session the task belongs to (an id or a prefix of one).
    #[arg(long, value_name = "ID", value_parser = parse_id)]
    pub session: Option<IdArg>,

    /// When it is due: an RFC 3339 time (2026-12-01T09:00:00Z) or a time from now (+2h, +3d).
    /// Urgency rises as it nears.
    #[arg(long, value_name = "WHEN", value_parser = parse_deadline)]
    pub deadline: Option<DateTime<Utc>>,

    /// The feature branch the work is for.
    #[arg(long, value_name = "BRANCH")]
    pub branch: Option<String>,
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

    /// Only child tasks of this task.
    #[arg(long, value_name = "ID", value_parser = parse_id)]
    pub parent: Option<IdArg>,

    /// Only tasks of this session.
    #[arg(long, value_name = "ID", value_parser = parse_id)]
    pub session: Option<IdArg>,

    /// Only tasks for this feature branch.
    #[arg(long, value_name = "BRANCH")]
    pub branch: Option<String>,

    /// Only tasks submitted by: human, agent_requirements, agent_planner or agent_implementation.
    #[arg(long, value_name = "SOURCE", value_parser = parse_source)]
    pub source: Option<TaskSource>,

    /// Only tasks of at least this base priority.
    #[arg(long, value_name = "N")]
    pub min_priority: Option<u8>,

    /// Only tasks of at most this base priority.
    #[arg(long, value_name = "N")]
    pub max_priority: Option<u8>,

    /// Only tasks submitted at or after this time: RFC 3339, or a time from now (-2h, +1d).
    #[arg(long, value_name = "WHEN", value_parser = parse_time, allow_hyphen_values = true)]
    pub submitted_after: Option<DateTime<Utc>>,

    /// Only tasks submitted before this time: RFC 3339, or a time from now (-2h, +1d).
    #[arg(long, value_name = "WHEN", value_parser = parse_time, allow_hyphen_values = true)]
    pub submitted_before: Option<DateTime<Utc>>,

    /// At most this many tasks.
    #[arg(long, value_name = "N")]
    pub limit: Option<u32>,

    /// Skip this many tasks first.
    #[arg(long, value_name = "N")]
    pub offset: Option<u32>,
}

/// A positive duration: `1500ms`, `90s`, `5m`, `1h 30m`, or a plain number of seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let duration = match text.parse::<u64>() {
        Ok(seconds) => Duration::from_secs(seconds),
        Err(_) => humantime::parse_duration(text).map_err(|e| {
            format!("{e}; a duration looks like 90s, 5m, 1h 30m or a plain number of seconds")
        })?,
    };
    if duration.is_zero() {
        return Err("a duration must be longer than zero".to_string());
    }
    Ok(duration)
}

/// A deadline: an RFC 3339 time, or `+DURATION` from now.
fn parse_deadline(text: &str) -> Result<DateTime<Utc>, String> {
    if text.trim().starts_with('-') {
        return Err("a deadline is in the future: +2h, or an RFC 3339 time".to_string());
    }
    parse_time(text)
}

/// A time: RFC 3339, or `+DURATION` / `-DURATION` from now.
fn parse_time(text: &str) -> Result<DateTime<Utc>, String> {
    let text = text.trim();
    let relative = |ahead: bool, rest: &str| -> Result<DateTime<Utc>, String> {
        let by = chrono::Duration::from_std(parse_duration(rest)?)
            .map_err(|_| "that is too far away".to_string())?;
        let moved = if ahead {
            Utc::now().checked_add_signed(by)
        } else {
            Utc::now().checked_sub_signed(by)
        };
        moved.ok_or_else(|| "that is too far away".to_string())
    };
    if let Some(ahead) = text.strip_prefix('+') {
        return relative(true, ahead);
    }
    if let Some(ago) = text.strip_prefix('-') {
        return relative(false, ago);
    }
    DateTime::parse_from_rfc3339(text)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| {
            format!(
                "{e}; a time is RFC 3339, like 2026-12-01T09:00:00Z, or relative to now, \
                 like +2h or -30m"
            )
        })
}

fn parse_source(text: &str) -> Result<TaskSource, String> {
    text.parse::<TaskSource>().map_err(|e| e.to_string())
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
        super::command().debug_assert();
    }

    #[test]
    fn every_command_documents_the_exit_codes() {
        fn check(command: &mut clap::Command, path: &str) {
            let help = command.render_long_help().to_string();
            assert!(
                help.contains("Exit codes:"),
                "{path} --help lacks the exit codes"
            );
            // clap's own `help` subcommands only print other commands' help.
            for sub in command
                .get_subcommands_mut()
                .filter(|sub| sub.get_name() != "help")
            {
                let path = format!("{path} {}", sub.get_name());
                check(sub, &path);
            }
        }
        check(&mut super::command(), "abathur");
    }

    #[test]
    fn durations_take_units_or_plain_seconds() {
        use std::time::Duration;

        use super::parse_duration;
        assert_eq!(parse_duration("90"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("1h 30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("1500ms"), Ok(Duration::from_millis(1500)));
        for bad in ["0", "0s", "", "-5", "5 parsecs", "soon"] {
            assert!(parse_duration(bad).is_err(), "{bad:?} was accepted");
        }
    }
}
