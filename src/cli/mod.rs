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
//! logged with `tracing`, which writes to stderr only when `RUST_LOG` is set.

mod args;
mod db;
mod error;
mod mcp;
mod render;
mod task;
mod worker;

use std::io::{self, IsTerminal, Write};
use std::path::Path;
use std::sync::Arc;

use abathur_core::queue::TaskQueue;
use clap::Parser;
use tracing_subscriber::EnvFilter;

pub use error::ExitCode;

use crate::infrastructure::database::{QueueStoreImpl, TaskRepositoryImpl};
use args::{Cli, Command, DbCommand, TaskCommand};
use error::CliError;
use render::View;

/// Runs the command given on the process's command line and returns its exit code.
pub fn main() -> i32 {
    let cli = match Cli::try_parse() {
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
    init_logging();
    let exit = match run(cli) {
        Ok(()) => ExitCode::Success,
        Err(err) => {
            let _ = writeln!(io::stderr().lock(), "error: {err}");
            err.exit
        }
    };
    exit.code()
}

/// Runs a parsed command, then prints its result on stdout.
fn run(cli: Cli) -> Result<(), CliError> {
    let Cli { db, json, command } = cli;
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

/// Opens the database at `path` and runs `command` on it.
async fn dispatch(path: &Path, command: Command) -> Result<View, CliError> {
    let db = db::open(path).await?;
    let repo = TaskRepositoryImpl::new(db.pool().clone());
    let queue = TaskQueue::new(Arc::new(QueueStoreImpl::new(db.pool().clone())));
    let result = match command {
        Command::Init => db::init(&db, path).await.map(View::Init),
        Command::Task(TaskCommand::Submit(args)) => task::submit(&queue, args)
            .await
            .map(|t| View::Submitted(Box::new(t))),
        Command::Task(TaskCommand::List(args)) => task::list(&repo, args).await.map(View::Tasks),
        Command::Task(TaskCommand::Show { id }) => {
            task::show(&repo, id).await.map(|t| View::Task(Box::new(t)))
        }
        Command::Task(TaskCommand::History { id }) => {
            task::history(&queue, id).await.map(View::History)
        }
        Command::Task(TaskCommand::Claim(args)) => {
            task::claim(&queue, args).await.map(View::Claimed)
        }
        Command::Task(TaskCommand::Heartbeat { attempt, lease }) => {
            task::heartbeat(&queue, attempt, lease)
                .await
                .map(View::Lease)
        }
        Command::Task(TaskCommand::Complete { attempt, result }) => {
            task::complete(&queue, attempt, result.as_deref())
                .await
                .map(View::Completed)
        }
        Command::Task(TaskCommand::Fail { attempt, error }) => {
            task::fail(&queue, attempt, &error).await.map(View::Failed)
        }
        Command::Task(TaskCommand::Cancel { id, actor }) => {
            task::cancel(&queue, id, &actor).await.map(View::Cancelled)
        }
        Command::Task(TaskCommand::Retry { id, actor }) => {
            task::retry(&queue, id, &actor).await.map(View::Retried)
        }
        Command::Reap => task::reap(&queue).await.map(View::Reaped),
        Command::Status { running } => Ok(View::Overview(queue.overview(running).await?)),
        Command::Db(DbCommand::Status) => db::status(&db, path).await.map(View::Status),
        Command::Worker(_) | Command::Mcp(_) => {
            unreachable!("long-running commands are run before dispatch")
        }
    };
    // Closing waits for the connections to finish, so the WAL is checkpointed on the way out.
    db.close().await;
    result
}

/// Writes `text` to stdout. A reader that went away (`| head`) is not an error: the output
/// was wanted only up to there.
fn print(text: &str) -> Result<(), CliError> {
    let mut stdout = io::stdout().lock();
    match stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
    {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(()),
        Err(e) => Err(CliError::internal("cannot write the output", &e)),
    }
}

/// Logs go to stderr, and only when `RUST_LOG` asks for them.
fn init_logging() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("off"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(io::stderr)
        .with_ansi(io::stderr().is_terminal())
        .try_init();
}
