//! The `abathur` command: parses the command line, calls the library, renders the result.
//!
//! `src/bin/abathur.rs` only calls [`main`]; everything else lives here.
//!
//! # Exit codes
//!
//! | code | meaning |
//! |------|---------|
//! | 0 | success; also when stdout is closed early (`abathur task list \| head -1`) |
//! | 1 | internal error: the database stayed busy past the timeout, output fails, or a bug (reported as a plain error, never a panic's stack trace) |
//! | 2 | usage error: unknown command or flag, malformed argument (a task id that is not a UUID, `seven` for a number) |
//! | 3 | not found: no task or attempt has the id given (as the task, its parent or a dependency) |
//! | 4 | invalid input: a value breaks a rule (summary over 140 characters, a number or duration outside its range on either side, `--priority -1` as `11`, a value over its size limit, a blank name, a deadline not in the future, `--input` not JSON); nothing was written |
//! | 5 | conflict: the record already exists, its state forbids the operation (cancelling a completed task), or the lease is lost (the attempt finished, expired or was cancelled) |
//! | 6 | no usable database: none at `--db` (commands that only read never create one), the file is not a SQLite database, its tables are not abathur's, it is corrupt, or its schema needs `abathur db migrate` |
//! | 7 | storage refused: the file, its folder or its filesystem is read-only (or `--db` asked for `mode=ro`), the disk is full, an I/O error, or the file cannot be opened |
//!
//! Out of memory is the one failure without a code of its own: Rust prints `memory allocation
//! of N bytes failed` and aborts (SIGABRT, 134 in a shell). Stable Rust has no hook for a failed
//! allocation short of a custom global allocator, which would need code the compiler cannot
//! check; a transaction left open is never committed.
//!
//! Errors go to stderr as `error: <message>`, in the user's terms; the underlying cause is
//! logged with `tracing`, which writes to stderr only when `RUST_LOG` is set (`abathur
//! worker` logs each task it runs by default).

mod agent;
// The MCP server parses `run_after` with `args::parse_run_after`, as `--run-after` does.
pub(crate) mod args;
mod db;
mod error;
mod ids;
mod import;
mod json_value;
mod mcp;
mod memory;
mod prune;
mod render;
mod serve;
mod session;
mod task;
mod tree;
mod worker;

use std::io::{self, IsTerminal, Write};
use std::sync::Arc;

use abathur_core::queue::TaskQueue;
use clap::{CommandFactory, FromArgMatches};
use tracing_subscriber::EnvFilter;

pub use error::ExitCode;
pub use import::{MAX_IMPORT_BYTES, MAX_IMPORT_TASKS};

use abathur_core::ports::{AgentRepository, MemoryRepository, SessionRepository, TaskRepository};

use crate::backend::{Access, Backend, Location, Role};
use args::{Cli, Command, DbCommand};
use error::CliError;
use ids::Ids;
use render::View;

/// Runs the command given on the process's command line and returns its exit code.
///
/// A panic (a bug) is reported as a plain `error:` line and exit code 1, like any internal
/// error, never as Rust's panic message and stack trace.
pub fn main() -> i32 {
    std::panic::set_hook(Box::new(|info| {
        let _ = writeln!(io::stderr().lock(), "{}", panic_message(info));
        // For whoever set `RUST_LOG`: the user sees the plain line only.
        tracing::debug!(
            backtrace = %std::backtrace::Backtrace::force_capture(),
            "the internal error's backtrace"
        );
    }));
    exit_code_of(run_command_line)
}

/// The exit code `run` returns, or the internal error's if it panics. A panic caught
/// elsewhere (the worker survives one in an attempt) is reported by the hook all the same.
fn exit_code_of(run: impl FnOnce() -> i32 + std::panic::UnwindSafe) -> i32 {
    std::panic::catch_unwind(run).unwrap_or(ExitCode::Internal.code())
}

/// A panic in the user's terms: one `error:` line, with where it happened for a bug report.
fn panic_message(info: &std::panic::PanicHookInfo<'_>) -> String {
    let payload = info.payload();
    let what = payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("no details");
    let place = info
        .location()
        .map(|l| format!(" ({}:{})", l.file(), l.line()))
        .unwrap_or_default();
    format!("error: internal error, a bug in abathur: {what}{place}")
}

fn run_command_line() -> i32 {
    // `--db` is parsed only after clap has chosen between the flag, ABATHUR_DB and the
    // default: clap reads the variable again at each subcommand level of a global argument,
    // so a value parser there refused `--db x.db` whenever ABATHUR_DB held a bad value.
    let parsed = args::command().try_get_matches().and_then(|matches| {
        let cli = Cli::from_arg_matches(&matches)?;
        let db = Location::parse(&cli.db).map_err(|message| {
            args::command().error(
                clap::error::ErrorKind::ValueValidation,
                // A PostgreSQL URL may hold a password: the value is shown without it.
                format!(
                    "invalid value '{}' for '--db <PATH|URL>': {message}",
                    crate::backend::shown_value(&cli.db)
                ),
            )
        })?;
        Ok((cli, db))
    });
    let (cli, db) = match parsed {
        Ok(cli) => cli,
        Err(err) => {
            // Help and version are "errors" that print to stdout and exit 0; a broken pipe
            // while printing them is not worth reporting.
            let _ = err.print();
            let exit = if args::out_of_range(&err) {
                ExitCode::Invalid
            } else if err.use_stderr() {
                ExitCode::Usage
            } else {
                ExitCode::Success
            };
            return exit.code();
        }
    };
    // The worker reports each task it runs; other commands log only when asked.
    let default_log = match cli.command {
        Command::Worker(_) => "abathur::worker=info",
        _ => "off",
    };
    init_logging(default_log);
    let exit = match run(cli, &db) {
        Ok(()) => ExitCode::Success,
        Err(err) => {
            let label = anstyle::Style::new()
                .bold()
                .fg_color(Some(anstyle::AnsiColor::Red.into()));
            let _ = writeln!(
                anstream::AutoStream::auto(io::stderr()).lock(),
                "{label}error:{label:#} {err}"
            );
            err.exit
        }
    };
    exit.code()
}

/// Runs a parsed command, then prints its result on stdout.
fn run(cli: Cli, db: &Location) -> Result<(), CliError> {
    let Cli { json, command, .. } = cli;
    if let Command::Completions { shell } = command {
        // Needs no database: nothing is opened or created.
        let mut script = Vec::new();
        clap_complete::generate(shell, &mut Cli::command(), "abathur", &mut script);
        return print(&String::from_utf8_lossy(&script));
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| CliError::internal("cannot start the async runtime", &e))?;
    // The long-running commands print as they go, and have no result to render.
    let command = match command {
        Command::Worker(args) => return runtime.block_on(worker::run(db, args)),
        Command::Serve(args) => return runtime.block_on(serve::run(db, args)),
        Command::Mcp(args) => {
            let served = runtime.block_on(mcp::run(db, args));
            // A read of a terminal's stdin cannot be cancelled; do not wait for it on the way
            // out after a signal.
            runtime.shutdown_timeout(std::time::Duration::from_millis(200));
            return served;
        }
        other => other,
    };
    let view = runtime.block_on(dispatch(db, command))?;
    let text = if json {
        view.json()
            .map_err(|e| CliError::internal("cannot encode the result as JSON", &e))?
    } else {
        if let Some(notice) = view.notice() {
            eprintln!("{notice}");
        }
        view.human()
    };
    print(&text)
}

/// What every command may use: the open backend and the services over it.
pub struct Context {
    pub backend: Backend,
    pub tasks: Arc<dyn TaskRepository>,
    pub memories: Arc<dyn MemoryRepository>,
    pub sessions: Arc<dyn SessionRepository>,
    pub agents: Arc<dyn AgentRepository>,
    pub queue: TaskQueue,
    pub ids: Ids,
}

/// What `command` may do to the database: commands that only read never create or migrate
/// it, so pointing one at the wrong file changes nothing.
fn access(command: &Command) -> Access {
    let reads = |reads_only: bool| {
        if reads_only {
            Access::Read
        } else {
            Access::Write
        }
    };
    match command {
        // `init` migrates after opening; `db migrate` reports what it applies, so it must see
        // the schema as it was. Both may add abathur's tables to a database of other tables.
        Command::Init | Command::Db(DbCommand::Migrate) => Access::Setup,
        // A check must see the file as it is, and a backup must work on any schema, an
        // outdated one above all.
        Command::Db(DbCommand::Check | DbCommand::Backup { .. }) => Access::Inspect,
        Command::Db(DbCommand::Status) | Command::Status { .. } => Access::Read,
        Command::Task(command) => reads(command.reads_only()),
        Command::Memory(command) => reads(command.reads_only()),
        Command::Session(command) => reads(command.reads_only()),
        Command::Agent(command) => reads(command.reads_only()),
        Command::Reap
        | Command::Prune(_)
        | Command::Worker(_)
        | Command::Mcp(_)
        | Command::Serve(_)
        | Command::Completions { .. } => Access::Write,
    }
}

/// Opens the database at `location` and runs `command` on it.
async fn dispatch(location: &Location, command: Command) -> Result<View, CliError> {
    let backend = Backend::open(location, access(&command), Role::Command).await?;
    let cx = Context {
        tasks: backend.tasks.clone(),
        memories: backend.memories.clone(),
        sessions: backend.sessions.clone(),
        agents: backend.agents.clone(),
        queue: TaskQueue::new(backend.queue_store.clone()),
        ids: Ids::new(backend.ids.clone()),
        backend,
    };
    let admin = cx.backend.admin.as_ref();
    let result = match command {
        Command::Init => db::init(admin, location).await.map(View::Init),
        Command::Task(command) => task::run(&cx, command).await,
        Command::Memory(command) => memory::run(&cx, command).await,
        Command::Session(command) => session::run(&cx, command).await,
        Command::Agent(command) => agent::run(&cx, command).await,
        Command::Reap => task::reap(&cx.queue).await.map(View::Reaped),
        Command::Prune(args) => prune::prune(&cx.queue, &args).await.map(View::Rendered),
        Command::Status { running } => Ok(View::Overview(cx.queue.overview(running).await?)),
        Command::Db(DbCommand::Status) => db::status(admin, location).await.map(View::Status),
        Command::Db(DbCommand::Migrate) => db::migrate(admin).await.map(View::Rendered),
        Command::Db(DbCommand::Check) => db::check(admin).await.map(View::Rendered),
        Command::Db(DbCommand::Backup { path: target }) => {
            db::backup(admin, &target).await.map(View::Rendered)
        }
        Command::Worker(_) | Command::Mcp(_) | Command::Serve(_) | Command::Completions { .. } => {
            unreachable!("commands without a rendered result are run before dispatch")
        }
    };
    // Closing waits for every connection to close, and SQLite checkpoints the WAL into the
    // file and removes it when the last connection to it closes: the `.db` file alone then
    // holds everything, for a user who copies it. Every port above shares this pool.
    cx.backend.close().await;
    result
}

/// Writes `text` to stdout. A reader that went away (`| head`) is not an error: the output
/// was wanted only up to there.
///
/// Colour reaches the terminal only: `anstream` strips the styles when stdout is not a terminal,
/// or when `NO_COLOR` is set (and `CLICOLOR_FORCE` forces them).
fn print(text: &str) -> Result<(), CliError> {
    let mut stdout = anstream::AutoStream::auto(io::stdout()).lock();
    match stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
    {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(()),
        Err(e) => Err(CliError::internal("cannot write the output", &e)),
    }
}

/// Logs go to stderr: as `RUST_LOG` asks, else as `default` says.
fn init_logging(default: &str) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(io::stderr)
        .with_ansi(io::stderr().is_terminal())
        .try_init();
}

#[cfg(test)]
mod panic_tests {
    use std::sync::{Arc, Mutex};

    use super::{exit_code_of, panic_message, ExitCode};

    #[test]
    fn a_panic_becomes_one_plain_error_line_and_the_internal_exit_code() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let previous = std::panic::take_hook();
        let record = seen.clone();
        std::panic::set_hook(Box::new(move |info| {
            if let Ok(mut seen) = record.lock() {
                seen.push(panic_message(info));
            }
        }));
        let code = exit_code_of(|| {
            let at = Vec::<u8>::new().len() + 3;
            panic!("index {at} out of range")
        });
        std::panic::set_hook(previous);
        assert_eq!(code, ExitCode::Internal.code());
        let seen = seen.lock().expect("the hook's record");
        // Another test may panic meanwhile: find this one.
        let message = seen
            .iter()
            .find(|m| m.contains("index 3 out of range"))
            .expect("the hook saw the panic");
        assert!(
            message.starts_with(
                "error: internal error, a bug in abathur: index 3 out of range (src/cli/mod.rs:"
            ),
            "{message}"
        );
        assert!(
            !message.contains('\n') && !message.contains("panicked"),
            "{message}"
        );
        assert_eq!(exit_code_of(|| 0), 0);
    }
}
