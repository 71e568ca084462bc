//! The `abathur` command: parses the command line, calls the library, renders the result.
//!
//! `src/bin/abathur.rs` only calls [`main`]; everything else lives here.
//!
//! # Exit codes
//!
//! | code | meaning |
//! |------|---------|
//! | 0 | success; also when stdout is closed early (`abathur task list \| head -1`) |
//! | 1 | internal error: the database cannot be opened, is busy or corrupt, or output fails |
//! | 2 | usage error: unknown command or flag, malformed argument (a task id that is not a UUID) |
//! | 3 | not found: no task or attempt has the id given (as the task, its parent or a dependency) |
//! | 4 | invalid input: a value breaks a rule (summary over 140 characters, priority over 10, `--input` not JSON); nothing was written |
//! | 5 | conflict: the record already exists, its state forbids the operation (cancelling a completed task), or the lease is lost (the attempt finished, expired or was cancelled) |
//!
//! Errors go to stderr as `error: <message>`, in the user's terms; the underlying cause is
//! logged with `tracing`, which writes to stderr only when `RUST_LOG` is set (`abathur
//! worker` logs each task it runs by default).

mod agent;
mod args;
mod db;
mod error;
mod ids;
mod import;
mod json_value;
mod mcp;
mod memory;
mod prune;
mod render;
mod session;
mod task;
mod tree;
mod worker;

use std::io::{self, IsTerminal, Write};
use std::path::Path;
use std::sync::Arc;

use abathur_core::queue::TaskQueue;
use clap::{CommandFactory, FromArgMatches};
use tracing_subscriber::EnvFilter;

pub use error::ExitCode;

use crate::infrastructure::database::{
    AgentRepositoryImpl, DatabaseConnection, IdLookupImpl, MemoryRepositoryImpl, QueueStoreImpl,
    SessionRepositoryImpl, TaskRepositoryImpl,
};
use args::{Cli, Command, DbCommand};
use error::CliError;
use ids::Ids;
use render::View;

/// Runs the command given on the process's command line and returns its exit code.
pub fn main() -> i32 {
    let cli = match args::command()
        .try_get_matches()
        .and_then(|matches| Cli::from_arg_matches(&matches))
    {
        Ok(cli) => cli,
        Err(err) => {
            // Help and version are "errors" that print to stdout and exit 0; a broken pipe
            // while printing them is not worth reporting.
            let _ = err.print();
            let exit = if err.use_stderr() {
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
    let exit = match run(cli) {
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
fn run(cli: Cli) -> Result<(), CliError> {
    let Cli { db, json, command } = cli;
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
        Command::Worker(args) => return runtime.block_on(worker::run(&db, args)),
        Command::Mcp(args) => {
            let served = runtime.block_on(mcp::run(&db, args));
            // A read of a terminal's stdin cannot be cancelled; do not wait for it on the way
            // out after a signal.
            runtime.shutdown_timeout(std::time::Duration::from_millis(200));
            return served;
        }
        other => other,
    };
    let view = runtime.block_on(dispatch(&db, command))?;
    let text = if json {
        view.json()
            .map_err(|e| CliError::internal("cannot encode the result as JSON", &e))?
    } else {
        view.human()
    };
    print(&text)
}

/// What every command may use: the open database and the services over it.
pub struct Context {
    pub db: DatabaseConnection,
    pub tasks: TaskRepositoryImpl,
    pub memories: MemoryRepositoryImpl,
    pub sessions: SessionRepositoryImpl,
    pub agents: AgentRepositoryImpl,
    pub queue: TaskQueue,
    pub ids: Ids<IdLookupImpl>,
}

/// Opens the database at `path` and runs `command` on it.
async fn dispatch(path: &Path, command: Command) -> Result<View, CliError> {
    let db = match command {
        // Reports what it applies, so it must see the schema as it was.
        Command::Db(DbCommand::Migrate) => db::open_unmigrated(path).await?,
        _ => db::open(path).await?,
    };
    let pool = db.pool().clone();
    let cx = Context {
        tasks: TaskRepositoryImpl::new(pool.clone()),
        memories: MemoryRepositoryImpl::new(pool.clone()),
        sessions: SessionRepositoryImpl::new(pool.clone()),
        agents: AgentRepositoryImpl::new(pool.clone()),
        queue: TaskQueue::new(Arc::new(QueueStoreImpl::new(pool.clone()))),
        ids: Ids::new(IdLookupImpl::new(pool)),
        db,
    };
    let result = match command {
        Command::Init => db::init(&cx.db, path).await.map(View::Init),
        Command::Task(command) => task::run(&cx, command).await,
        Command::Memory(command) => memory::run(&cx, command).await,
        Command::Session(command) => session::run(&cx, command).await,
        Command::Agent(command) => agent::run(&cx, command).await,
        Command::Reap => task::reap(&cx.queue).await.map(View::Reaped),
        Command::Prune(args) => prune::prune(&cx.queue, &args).await.map(View::Rendered),
        Command::Status { running } => Ok(View::Overview(cx.queue.overview(running).await?)),
        Command::Db(DbCommand::Status) => db::status(&cx.db, path).await.map(View::Status),
        Command::Db(DbCommand::Migrate) => db::migrate(&cx.db).await.map(View::Rendered),
        Command::Db(DbCommand::Check) => db::check(&cx.db).await.map(View::Rendered),
        Command::Db(DbCommand::Backup { path: target }) => {
            db::backup(&cx.db, &target).await.map(View::Rendered)
        }
        Command::Worker(_) | Command::Mcp(_) | Command::Completions { .. } => {
            unreachable!("commands without a rendered result are run before dispatch")
        }
    };
    // Closing waits for the connections to finish, so the WAL is checkpointed on the way out.
    cx.db.close().await;
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
