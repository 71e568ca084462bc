//! The command line's grammar: every command, option and flag, parsed by clap.

use std::path::PathBuf;
use std::time::Duration;

use abathur_core::limits::MAX_PAGE;
use abathur_core::models::{TaskSource, TaskStatus, MAX_PRIORITY};
use abathur_core::queue::MAX_CLAIM;
use chrono::{DateTime, Utc};
use clap::{Args, Parser, Subcommand};

use super::ids::{parse_id, IdArg};

/// The exit codes, shown at the end of `--help`. Kept in step with [`super::ExitCode`].
const EXIT_CODES_HELP: &str = "\
Exit codes:
  0  success (also when stdout is closed early, as by `| head`)
  1  internal error (database busy past the timeout, output failure, a bug)
  2  usage error (unknown command or flag, malformed argument such as `soon` for a duration or
     `seven` for a number, or an id prefix that matches several records)
  3  not found (no task or attempt has this id)
  4  invalid input (a value breaks a rule: a number or duration outside its range on either
     side, such as a priority of -1 or 11; a value over its size limit; an empty name; a
     deadline not in the future; bad JSON)
  5  conflict (the record already exists, its state does not allow the operation, or a
     lease was lost)
  6  no usable database (none at --db for a command that only reads, not a SQLite database,
     not abathur's, corrupt, or its schema needs `abathur db migrate`)
  7  storage refused (read-only file, folder or filesystem, disk full, I/O error, a file that
     cannot be opened)";

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
    /// The database: a file path, or a URL. `sqlite:PATH` takes sqlx's forms and options
    /// (`sqlite:x.db?mode=ro` opens it read-only, `mode=rw` never creates it);
    /// `sqlite::memory:` is an empty database in memory, gone when the command ends;
    /// `postgres://user@host:port/database` is a database on a PostgreSQL server, shared by
    /// machines (`init` creates it on the server when it does not exist). Commands that write
    /// create the file, with its folder, on first use and bring its schema up to date;
    /// commands that only read (list, show, status, db status, db check, ...) never create or
    /// migrate it. A database whose tables are not abathur's is refused, except by `init` and
    /// `db migrate`.
    #[arg(
        long,
        global = true,
        env = "ABATHUR_DB",
        value_name = "PATH|URL",
        default_value = ".abathur/abathur.db"
    )]
    pub db: String,

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
        /// Show at most this many running attempts (0 to 1000).
        #[arg(long, value_name = "N", default_value_t = 20, allow_negative_numbers = true,
              value_parser = ranged::<u32>(0, i64::from(MAX_PAGE)))]
        running: u32,
    },
    /// Recover the tasks of dead workers (expired leases) and tasks past their timeout.
    /// (Priorities need no upkeep: waiting tasks age and deadlines weigh in as claims read
    /// them.)
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
    /// Serve the web dashboard, its JSON API (/api/v1) and MCP (/mcp) over HTTP:
    /// `abathur serve`, then open http://127.0.0.1:8080/.
    Serve(super::serve::ServeArgs),
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
    /// none. Lines refer to each other by their "key". At most 64 MiB and 100,000 tasks. A
    /// line whose "idempotency_key" was already used for the same task stands for that task,
    /// so a file can be imported again.
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
    /// is ready it says so and exits 0 (`--json` prints `[]`); with `--wait` it first waits
    /// for one, and answers as soon as one is claimable.
    Claim(ClaimArgs),
    /// Extend a lease, so the reaper does not take the task back.
    Heartbeat {
        /// The attempt id that `claim` printed, or an unambiguous prefix of it.
        #[arg(value_parser = parse_id)]
        attempt: IdArg,
        /// The new lease, counted from now: `90s`, `5m`, `1h`, or plain seconds.
        #[arg(long, value_name = "DURATION", value_parser = parse_duration, default_value = "5m",
              allow_hyphen_values = true)]
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
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, default_value = "5m",
              allow_hyphen_values = true)]
    pub lease: Duration,

    /// At most this many tasks (1 to 1000).
    #[arg(long = "max", value_name = "N", default_value_t = 1, allow_negative_numbers = true,
          value_parser = ranged::<u32>(1, i64::from(MAX_CLAIM)))]
    pub max_tasks: u32,

    /// When nothing is ready, wait up to this long (at most 5m) for a task to become
    /// claimable, and claim it then: `30s`, `5m`, or plain seconds; `0` answers at once.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration_or_zero,
          allow_hyphen_values = true)]
    pub wait: Option<Duration>,
}

impl TaskCommand {
    /// True for the commands that only read: they never create or migrate the database.
    pub fn reads_only(&self) -> bool {
        match self {
            Self::List(_) | Self::Show { .. } | Self::Tree { .. } | Self::History { .. } => true,
            Self::Submit(_)
            | Self::Import { .. }
            | Self::Claim(_)
            | Self::Heartbeat { .. }
            | Self::Complete { .. }
            | Self::Fail { .. }
            | Self::Cancel { .. }
            | Self::Retry { .. } => false,
        }
    }
}

/// `abathur db ...`
#[derive(Debug, Subcommand)]
pub enum DbCommand {
    /// Schema version, journal mode, location and row counts.
    Status,
    /// Apply the migrations this build has and the database lacks (every command that writes
    /// does this on first use; this says what it did). Also adds abathur's tables to a
    /// database that has other tables.
    Migrate,
    /// Check the database without changing it (SQLite: its integrity and foreign-key checks;
    /// PostgreSQL: its schema); exits 6 if it is corrupt or rows refer to missing rows.
    Check,
    /// Write a consistent copy of the database to PATH while it stays in use. The copy gets
    /// its name only once complete: a failed backup leaves nothing behind.
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
    #[arg(long, value_name = "N", default_value_t = 5, allow_negative_numbers = true,
          value_parser = ranged::<u8>(0, i64::from(MAX_PRIORITY)))]
    pub priority: u8,

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
    #[arg(long, value_name = "N", default_value_t = 3, allow_negative_numbers = true,
          value_parser = ranged::<u32>(0, i64::from(u32::MAX)))]
    pub max_retries: u32,

    /// Seconds an attempt may run before the reaper times it out (at least 1).
    #[arg(long = "timeout", value_name = "SECS", default_value_t = 3600,
          allow_negative_numbers = true, value_parser = ranged::<u32>(1, i64::from(u32::MAX)))]
    pub timeout_seconds: u32,

    /// The session the task belongs to (an id or a prefix of one).
    #[arg(long, value_name = "ID", value_parser = parse_id)]
    pub session: Option<IdArg>,

    /// When it is due: an RFC 3339 time (2026-12-01T09:00:00Z) or a time from now (+2h, +3d),
    /// in the future and no later than 9999-12-31T23:59:59Z. Urgency rises as it nears.
    #[arg(long, value_name = "WHEN", value_parser = parse_deadline, allow_hyphen_values = true)]
    pub deadline: Option<DateTime<Utc>>,

    /// The feature branch the work is for.
    #[arg(long, value_name = "BRANCH")]
    pub branch: Option<String>,

    /// Not claimable before this time: an RFC 3339 time (2026-12-01T09:00:00Z) or a time from
    /// now (+10m, +2h). A task with dependencies waits for both.
    #[arg(long, value_name = "WHEN", value_parser = parse_run_after, allow_hyphen_values = true)]
    pub run_after: Option<DateTime<Utc>>,

    /// A name for this submission (at most 256 bytes). Submitting again with a key already
    /// used prints the task it made instead of making a second one; with a different task
    /// (other than its deadline and run-after time) it is a conflict (exit 5). A key is
    /// remembered as long as its task is kept.
    #[arg(long, value_name = "KEY")]
    pub idempotency_key: Option<String>,
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
    #[arg(long, value_name = "N", allow_negative_numbers = true,
          value_parser = ranged::<u8>(0, i64::from(MAX_PRIORITY)))]
    pub min_priority: Option<u8>,

    /// Only tasks of at most this base priority.
    #[arg(long, value_name = "N", allow_negative_numbers = true,
          value_parser = ranged::<u8>(0, i64::from(MAX_PRIORITY)))]
    pub max_priority: Option<u8>,

    /// Only tasks submitted at or after this time: RFC 3339, or a time from now (-2h, +1d).
    #[arg(long, value_name = "WHEN", value_parser = parse_time, allow_hyphen_values = true)]
    pub submitted_after: Option<DateTime<Utc>>,

    /// Only tasks submitted before this time: RFC 3339, or a time from now (-2h, +1d).
    #[arg(long, value_name = "WHEN", value_parser = parse_time, allow_hyphen_values = true)]
    pub submitted_before: Option<DateTime<Utc>>,

    /// At most this many tasks (1 to 1000); all of them when left out.
    #[arg(long, value_name = "N", allow_negative_numbers = true,
          value_parser = ranged::<u32>(1, i64::from(MAX_PAGE)))]
    pub limit: Option<u32>,

    /// Skip this many tasks first.
    #[arg(long, value_name = "N", allow_negative_numbers = true,
          value_parser = ranged::<u32>(0, i64::from(u32::MAX)))]
    pub offset: Option<u32>,
}

/// Why an argument's value was refused. The kind decides the exit code: a value that is not
/// of the argument's form is a usage error (exit 2); a well-formed value outside the range the
/// argument takes is invalid input (exit 4), on either side of the range, as the domain's own
/// rules are ([`out_of_range`] finds it in clap's error).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ArgError {
    /// Not of the argument's form: `abc` for a number.
    #[error("{0}")]
    Malformed(String),
    /// Well formed, outside the range: `-1` or `11` for a priority of 0 to 10.
    #[error("{0}")]
    OutOfRange(String),
}

/// Whether clap refused an argument for being out of range (exit 4, not 2).
pub fn out_of_range(err: &clap::Error) -> bool {
    use std::error::Error as _;
    err.source()
        .and_then(|source| source.downcast_ref::<ArgError>())
        .is_some_and(|e| matches!(e, ArgError::OutOfRange(_)))
}

/// A whole number from `min` to `max`, as a value parser: every numeric option takes its range
/// from here, so `-1` and `11` for a priority of 0 to 10 get the same message and exit code.
/// Digits beyond any integer type are out of range, not malformed.
pub fn ranged<T>(min: i64, max: i64) -> impl Fn(&str) -> Result<T, ArgError> + Clone + Send + Sync
where
    T: TryFrom<i64>,
{
    move |text: &str| {
        let text = text.trim();
        let digits = text.strip_prefix(['-', '+']).unwrap_or(text);
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(ArgError::Malformed(format!(
                "{text:?} is not a whole number"
            )));
        }
        let outside = || ArgError::OutOfRange(format!("{text} is outside {min} to {max}"));
        let value = text.parse::<i64>().map_err(|_| outside())?;
        if !(min..=max).contains(&value) {
            return Err(outside());
        }
        T::try_from(value).map_err(|_| outside())
    }
}

/// A positive duration: `1500ms`, `90s`, `5m`, `1h 30m`, or a plain number of seconds. Zero and
/// negative durations are out of range (exit 4), not malformed.
pub fn parse_duration(text: &str) -> Result<Duration, ArgError> {
    let text = text.trim();
    let zero = || ArgError::OutOfRange(format!("{text} is not longer than zero"));
    if let Some(magnitude) = text.strip_prefix('-') {
        return match read_duration(magnitude) {
            Ok(_) => Err(zero()),
            Err(e) => Err(e),
        };
    }
    let duration = read_duration(text)?;
    if duration.is_zero() {
        return Err(zero());
    }
    Ok(duration)
}

/// A duration as [`parse_duration`] takes it, or zero (`0`, `0s`) for none at all: a grace
/// period, a wait. Below zero is out of range (exit 4).
pub fn parse_duration_or_zero(text: &str) -> Result<Duration, ArgError> {
    let text = text.trim();
    if let Some(magnitude) = text.strip_prefix('-') {
        return match read_duration(magnitude) {
            Ok(_) => Err(ArgError::OutOfRange(format!("{text} is below zero"))),
            Err(e) => Err(e),
        };
    }
    read_duration(text)
}

fn read_duration(text: &str) -> Result<Duration, ArgError> {
    let text = text.trim();
    match text.parse::<u64>() {
        Ok(seconds) => Ok(Duration::from_secs(seconds)),
        Err(_) => humantime::parse_duration(text).map_err(|e| {
            ArgError::Malformed(format!(
                "{e}; a duration looks like 90s, 5m, 1h 30m or a plain number of seconds"
            ))
        }),
    }
}

/// A deadline: a time as [`parse_time`] takes it, with a hint that shows only future times.
fn parse_deadline(text: &str) -> Result<DateTime<Utc>, ArgError> {
    read_time(text, "+2h or +3d")
}

/// A run-after time: an RFC 3339 time, or `+DURATION` / `-DURATION` from now. `task import`
/// and the MCP server's `task_enqueue` take the same forms through this function. A time
/// already past holds nothing back, whichever way it is written.
pub(crate) fn parse_run_after(text: &str) -> Result<DateTime<Utc>, ArgError> {
    read_time(text, "+10m or +2h")
}

/// A time: RFC 3339, or `+DURATION` / `-DURATION` from now.
fn parse_time(text: &str) -> Result<DateTime<Utc>, ArgError> {
    read_time(text, "+2h or -30m")
}

/// A time: RFC 3339, or `+DURATION` / `-DURATION` from now; `examples` end the message of a
/// malformed one.
///
/// Only the form is checked here. Whether the time is in range (and, for a deadline, in the
/// future) is the domain's rule, so every way in refuses the same values with the same exit
/// code: a time too far away to compute saturates to a value the domain then refuses.
fn read_time(text: &str, examples: &str) -> Result<DateTime<Utc>, ArgError> {
    let text = text.trim();
    let relative = |ahead: bool, rest: &str| -> Result<DateTime<Utc>, ArgError> {
        let by = read_duration(rest)?;
        let by = chrono::Duration::from_std(by).unwrap_or(chrono::Duration::MAX);
        let now = Utc::now();
        Ok(if ahead {
            now.checked_add_signed(by)
                .unwrap_or(DateTime::<Utc>::MAX_UTC)
        } else {
            now.checked_sub_signed(by)
                .unwrap_or(DateTime::<Utc>::MIN_UTC)
        })
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
            ArgError::Malformed(format!(
                "{e}; a time is RFC 3339, like 2026-12-01T09:00:00Z, or relative to now, \
                 like {examples}"
            ))
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
