//! `abathur worker`: parses its arguments and runs [`crate::worker`].

use std::ffi::OsString;
use std::sync::Arc;
use std::time::Duration;

use abathur_core::queue::{TaskQueue, MAX_CLAIM, MAX_LEASE};
use clap::Args;

use super::args::{parse_duration, parse_duration_or_zero, ranged, ArgError};
use super::error::{CliError, ExitCode};
use crate::backend::{Access, Backend, Location, Role};
use crate::worker::{Subscribed, Wake, Worker, WorkerConfig, MIN_LEASE};

/// The arguments of `abathur worker`.
#[derive(Debug, Args)]
pub struct WorkerArgs {
    /// Only tasks for this agent type; repeat for several. Any type when left out.
    #[arg(long = "agent-type", value_name = "TYPE")]
    pub agent_types: Vec<String>,

    /// How many commands run at once, 1 to 1000 (a claim takes at most 1000 tasks).
    #[arg(long, value_name = "N", default_value_t = 1,
          allow_negative_numbers = true, value_parser = ranged::<u32>(1, i64::from(MAX_CLAIM)))]
    pub concurrency: u32,

    /// The lease of each claim, 1s to 24h, renewed every third of it while the command runs:
    /// `90s`, `5m`. If the worker dies, its tasks are taken back this long after.
    #[arg(long, value_name = "DURATION", value_parser = parse_lease, default_value = "1m",
          allow_hyphen_values = true)]
    pub lease: Duration,

    /// On SIGINT or SIGTERM, how long running commands may go on before they are asked to stop
    /// (SIGTERM, then SIGKILL two seconds later) and their tasks given back. `0`: at once.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration_or_zero,
          default_value = "10s", allow_hyphen_values = true)]
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
    #[arg(long, value_name = "DURATION", value_parser = parse_duration,
          allow_hyphen_values = true)]
    pub retention: Option<Duration>,

    /// The command to run for each task, after `--`. It gets the task as JSON on stdin and
    /// ABATHUR_TASK_ID, ABATHUR_ATTEMPT_ID and ABATHUR_DB in its environment. Exit 0
    /// completes the task with stdout as its result; anything else fails it with the end of
    /// stderr.
    #[arg(last = true, required = true, value_name = "CMD")]
    pub command: Vec<OsString>,
}

/// Runs the worker until SIGINT or SIGTERM (or, with `--once`, until the queue is drained).
pub async fn run(location: &Location, args: WorkerArgs) -> Result<(), CliError> {
    // Listen before the first claim, so a signal never finds a command running unwatched.
    let shutdown = shutdown_signal()
        .map_err(|e| CliError::internal("cannot listen for SIGINT and SIGTERM", &e))?;
    // The commands' ABATHUR_DB: the file's absolute path (once it exists), or the URL as given.
    let mut config = WorkerConfig::new(args.command, location.resolved());
    config.agent_types = args.agent_types;
    config.concurrency = args.concurrency;
    config.lease = args.lease;
    config.grace = args.grace;
    config.once = args.once;
    config.retention = args.retention.map(crate::worker::retention::Retention::new);
    if let Some(name) = args.name {
        config.name = name;
    }
    // Before the database is opened: a worker that cannot run leaves no trace.
    // A value outside its range is invalid input (exit 4), as every other value out of range
    // is; only a missing command is a malformed command line (exit 2).
    config.validate().map_err(|e| {
        // The user wrote flags: name the flag.
        let exit = if e.field == "command" {
            ExitCode::Usage
        } else {
            ExitCode::Invalid
        };
        let flag = match e.field {
            "agent_type" | "agent_types" => "--agent-type",
            "name" => "--name",
            "concurrency" => "--concurrency",
            "lease" => "--lease",
            "retention" => "--retention",
            "command" => "the command after --",
            other => other,
        };
        CliError::new(exit, format!("invalid {flag}: {}", e.message))
    })?;
    // One writer for the process: its claims, heartbeats and completions run on one warm
    // connection, and share commits when several commands run at once.
    let backend = Backend::open(location, Access::Write, Role::Worker).await?;
    let queue = TaskQueue::new(backend.queue_store.clone());
    // The file exists now: the command gets its absolute path.
    config.database = location.resolved();
    let wake = match backend.changes.subscribe().await {
        Ok(subscription) => Arc::new(tokio::sync::Mutex::new(Subscribed::new(subscription))),
        Err(e) => {
            backend.close().await;
            return Err(CliError::internal(
                "cannot watch the database for changes",
                &e,
            ));
        }
    };
    let outcome = match Worker::new(queue, config) {
        Ok(worker) => {
            worker
                .with_wake(SharedWake(wake.clone()))
                .run(shutdown)
                .await
        }
        Err(e) => Err(e),
    };
    // The worker is gone with its handle on the watcher: close the watcher's connection,
    // then the pool's (which waits for the writer to hand its connection back), so the last
    // close checkpoints the WAL into the file before the process exits.
    if let Ok(wake) = Arc::try_unwrap(wake) {
        wake.into_inner().close().await;
    }
    backend.close().await;
    match outcome {
        Ok(_) => Ok(()),
        // A setting that cannot work, or a command that cannot start: the user's input, not
        // the database.
        Err(e) => Err(CliError::new(ExitCode::Invalid, e.to_string())),
    }
}

/// A lease: a duration from [`MIN_LEASE`] to [`MAX_LEASE`], the range the queue accepts.
fn parse_lease(text: &str) -> Result<Duration, ArgError> {
    let lease = parse_duration(text)?;
    if lease < MIN_LEASE || lease > MAX_LEASE {
        return Err(ArgError::OutOfRange(format!(
            "{} is outside the lease's range of {} s to {} hours",
            text.trim(),
            MIN_LEASE.as_secs(),
            MAX_LEASE.as_secs() / 3600
        )));
    }
    Ok(lease)
}

/// The worker's [`Wake`], shared so that the command can close its connection once the
/// worker has stopped.
struct SharedWake(Arc<tokio::sync::Mutex<Subscribed>>);

#[async_trait::async_trait]
impl Wake for SharedWake {
    async fn wait(&mut self, at_most: Duration) {
        self.0.lock().await.wait(at_most).await;
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
