//! `abathur worker`: parses its arguments and runs [`crate::worker`].

use std::ffi::OsString;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use abathur_core::queue::{QueueStore, TaskQueue};
use clap::Args;

use super::args::parse_duration;
use super::db;
use super::error::{CliError, ExitCode};
use crate::infrastructure::database::GroupCommitQueueStore;
use crate::worker::{DataVersion, Worker, WorkerConfig};

/// The arguments of `abathur worker`.
#[derive(Debug, Args)]
pub struct WorkerArgs {
    /// Only tasks for this agent type; repeat for several. Any type when left out.
    #[arg(long = "agent-type", value_name = "TYPE")]
    pub agent_types: Vec<String>,

    /// How many commands run at once.
    #[arg(long, value_name = "N", default_value_t = 1,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub concurrency: u32,

    /// The lease of each claim, renewed every third of it while the command runs: `90s`, `5m`.
    /// If the worker dies, its tasks are taken back this long after.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, default_value = "1m")]
    pub lease: Duration,

    /// On SIGINT or SIGTERM, how long running commands may go on before they are killed and
    /// their tasks given back.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, default_value = "10s")]
    pub grace: Duration,

    /// Run what can be claimed, wait for it, and exit once nothing more is ready.
    #[arg(long)]
    pub once: bool,

    /// The worker's name in the tasks' history. Default: worker-<pid>.
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,

    /// Prune finished tasks (with their attempts and events) once they finished longer ago
    /// than this, as `abathur prune --older-than` does: `1h`, `7d`. Checked every quarter of
    /// it (between 1 s and 10 min). Off when not given: finished tasks are kept.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub retention: Option<Duration>,

    /// The command to run for each task, after `--`. It gets the task as JSON on stdin and
    /// ABATHUR_TASK_ID, ABATHUR_ATTEMPT_ID and ABATHUR_DB in its environment. Exit 0
    /// completes the task with stdout as its result; anything else fails it with the end of
    /// stderr.
    #[arg(last = true, required = true, value_name = "CMD")]
    pub command: Vec<OsString>,
}

/// Runs the worker until SIGINT or SIGTERM (or, with `--once`, until the queue is drained).
pub async fn run(path: &Path, args: WorkerArgs) -> Result<(), CliError> {
    // Listen before the first claim, so a signal never finds a command running unwatched.
    let shutdown = shutdown_signal()
        .map_err(|e| CliError::internal("cannot listen for SIGINT and SIGTERM", &e))?;
    let db = db::open(path).await?;
    // One writer for the process: its claims, heartbeats and completions run on one warm
    // connection, and share commits when several commands run at once.
    let store: Arc<dyn QueueStore> = Arc::new(GroupCommitQueueStore::new(db.pool().clone()));
    let queue = TaskQueue::new(store);
    let mut config = WorkerConfig::new(
        args.command,
        std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf()),
    );
    config.agent_types = args.agent_types;
    config.concurrency = args.concurrency;
    config.lease = args.lease;
    config.grace = args.grace;
    config.once = args.once;
    config.retention = args.retention.map(crate::worker::retention::Retention::new);
    if let Some(name) = args.name {
        config.name = name;
    }
    let conn = db
        .pool()
        .acquire()
        .await
        .map_err(|e| CliError::internal("cannot open a connection to the database", &e))?;
    let wake = DataVersion::new(conn)
        .await
        .map_err(|e| CliError::internal("cannot watch the database for changes", &e))?;
    let outcome = match Worker::new(queue, config) {
        Ok(worker) => worker.with_wake(wake).run(shutdown).await,
        Err(e) => Err(e),
    };
    db.close().await;
    match outcome {
        Ok(_) => Ok(()),
        // A setting or a command that cannot work: the user's input, not the database.
        Err(e) => Err(CliError::new(ExitCode::Invalid, e.to_string())),
    }
}

/// Resolves at the first SIGINT or SIGTERM.
#[cfg(unix)]
fn shutdown_signal() -> std::io::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    Ok(async move {
        tokio::select! {
            _ = terminate.recv() => tracing::info!("received SIGTERM"),
            _ = interrupt.recv() => tracing::info!("received SIGINT"),
        }
    })
}

/// Resolves at the first Ctrl-C.
#[cfg(not(unix))]
fn shutdown_signal() -> std::io::Result<impl std::future::Future<Output = ()>> {
    Ok(async {
        let _ = tokio::signal::ctrl_c().await;
    })
}
