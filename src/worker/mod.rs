//! The worker: claims tasks and runs a command for each, with heartbeats, timeouts and a
//! graceful shutdown. `abathur worker` is a thin adapter over [`Worker`]; `docs/WORKER.md`
//! describes the behaviour as a user sees it.
//!
//! ```rust,ignore
//! let mut config = WorkerConfig::new(vec!["sh".into(), "-c".into(), "./build.sh".into()], db_path);
//! config.concurrency = 4;
//! let stop = async { let _ = tokio::signal::ctrl_c().await; };
//! let report = Worker::new(queue, config)?.with_wake(wake).run(stop).await?;
//! ```

mod attempt;
mod outage;
mod output;
pub mod retention;
mod wake;

use std::ffi::OsString;
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use abathur_core::error::ValidationError;
use abathur_core::queue::{
    check_claim, check_prune_age, ClaimRequest, TaskQueue, MAX_CLAIM, MAX_LEASE,
};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::{interval, sleep_until, Instant, MissedTickBehavior};

pub use output::{STDERR_TAIL_BYTES, STDOUT_LIMIT_BYTES};
pub use wake::{Interval, Subscribed, Wake};

use attempt::{Ending, Job};
use outage::{Backoff, Outage};

/// How a worker runs. [`WorkerConfig::new`] gives the defaults.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// Who claims: recorded on each attempt and in the tasks' history.
    pub name: String,
    /// Only tasks of these agent types; any type when empty.
    pub agent_types: Vec<String>,
    /// How many commands run at once (default 1, at most [`MAX_CLAIM`]).
    pub concurrency: u32,
    /// The lease taken with each claim and renewed by each heartbeat, every third of it
    /// (default 1 min). A worker that dies loses its tasks to the reaper this long after.
    pub lease: Duration,
    /// How long running commands may go on once the worker is told to stop (default 10 s).
    /// Zero asks them to stop at once.
    pub grace: Duration,
    /// Stop once nothing more can be claimed and every command has finished.
    pub once: bool,
    /// The program, then its arguments.
    pub command: Vec<OsString>,
    /// The database file, given to the command as `ABATHUR_DB`.
    pub database: PathBuf,
    /// How often the worker recovers dead workers' tasks (default 5 s).
    pub reap_every: Duration,
    /// The longest an idle worker goes without trying to claim, even if nothing told it the
    /// queue changed (default 1 s): a retried task becomes claimable when its backoff ends,
    /// and no write announces that (on PostgreSQL the process that failed it does, unless it
    /// stopped meanwhile).
    pub idle_recheck: Duration,
    /// Prune finished tasks older than this ([`retention::Retention`]); `None` (the default)
    /// keeps them until `abathur prune` removes them.
    pub retention: Option<retention::Retention>,
}

impl WorkerConfig {
    /// The defaults, for `command` on the database at `database`, named `worker-<pid>`.
    pub fn new(command: Vec<OsString>, database: PathBuf) -> Self {
        Self {
            name: format!("worker-{}", std::process::id()),
            agent_types: Vec::new(),
            concurrency: 1,
            lease: Duration::from_secs(60),
            grace: Duration::from_secs(10),
            once: false,
            command,
            database,
            reap_every: Duration::from_secs(5),
            idle_recheck: Duration::from_secs(1),
            retention: None,
        }
    }

    /// Checks the settings as [`Worker::new`] does, so that a caller can refuse them before it
    /// opens anything.
    ///
    /// # Errors
    /// As for [`Worker::new`].
    pub fn validate(&self) -> Result<(), ValidationError> {
        if self.concurrency == 0 || self.concurrency > MAX_CLAIM {
            return Err(ValidationError::new(
                "concurrency",
                format!("must be between 1 and {MAX_CLAIM}"),
            ));
        }
        // Heartbeats come every third of the lease: a shorter lease would have the worker
        // write to the database many times a second, and lose tasks to its own reaper.
        if self.lease < MIN_LEASE || self.lease > MAX_LEASE {
            return Err(ValidationError::new(
                "lease",
                format!(
                    "must be between {} s and {} hours",
                    MIN_LEASE.as_secs(),
                    MAX_LEASE.as_secs() / 3600
                ),
            ));
        }
        // Every claim the worker makes is one the queue accepts: the same check, with the
        // largest batch it will ask for. A setting the queue refuses would otherwise start a
        // worker that logs a failed claim every second and runs nothing.
        check_claim(&ClaimRequest {
            worker_id: self.name.clone(),
            agent_types: self.agent_types.clone(),
            lease: self.lease,
            max_tasks: self.concurrency,
        })
        .map_err(|e| match e.field {
            // The queue's names for the worker's settings.
            "worker_id" => ValidationError::new("name", e.message),
            "max_tasks" => ValidationError::new("concurrency", e.message),
            _ => e,
        })?;
        // A retention the queue would refuse on every prune is refused here, once.
        if let Some(retention) = &self.retention {
            check_prune_age(retention.keep, chrono::Utc::now())
                .map_err(|e| ValidationError::new("retention", e.message))?;
        }
        for (field, value) in [
            ("reap_every", self.reap_every),
            ("idle_recheck", self.idle_recheck),
        ] {
            if value.is_zero() {
                return Err(ValidationError::new(field, "must be longer than zero"));
            }
        }
        if self.command.first().is_none_or(|p| p.is_empty()) {
            return Err(ValidationError::new(
                "command",
                "must name a program to run",
            ));
        }
        Ok(())
    }
}

/// The shortest lease a worker takes.
pub const MIN_LEASE: Duration = Duration::from_secs(1);

/// What a worker did before it stopped.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WorkerReport {
    /// Tasks completed.
    pub completed: u64,
    /// Attempts failed (the command failed or timed out); the task may be retried.
    pub failed: u64,
    /// Tasks given back unfinished at shutdown.
    pub released: u64,
    /// Attempts stopped because the task was no longer this worker's (lease lost, cancelled),
    /// or whose outcome could not be reported.
    pub abandoned: u64,
}

/// Why a worker could not run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WorkerError {
    /// The configuration breaks a rule.
    #[error("invalid worker setting: {0}")]
    Invalid(#[from] ValidationError),
    /// The command could not be started; the task it was for went back to ready, and the
    /// worker stopped rather than fail every task in the queue the same way.
    #[error("cannot start the command {program:?}: {error}")]
    CommandNotStarted {
        program: OsString,
        error: std::io::Error,
    },
}

/// Claims tasks and runs the configured command for each.
pub struct Worker {
    queue: TaskQueue,
    config: WorkerConfig,
    wake: Box<dyn Wake>,
}

impl std::fmt::Debug for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Worker {
    /// A worker on `queue`. It looks for new work every `config.idle_recheck` until given a
    /// better [`Wake`] with [`Worker::with_wake`].
    ///
    /// # Errors
    /// `Invalid` when a setting breaks a rule, or would make claims the queue refuses (no
    /// command; a concurrency of zero or over [`MAX_CLAIM`]; a lease under [`MIN_LEASE`] or over
    /// [`MAX_LEASE`]; an empty, over-long or NUL-holding name or agent type).
    pub fn new(queue: TaskQueue, config: WorkerConfig) -> Result<Self, WorkerError> {
        config.validate()?;
        Ok(Self {
            queue,
            config,
            wake: Box::new(Interval),
        })
    }

    /// The same worker, woken by `wake` when the queue changes.
    pub fn with_wake(mut self, wake: impl Wake + 'static) -> Self {
        self.wake = Box::new(wake);
        self
    }

    /// Runs until `shutdown` resolves (or, with `once`, until the queue has nothing more to
    /// claim), then gives running commands the grace period, kills those still running and
    /// releases their tasks back to ready.
    ///
    /// # Errors
    /// `CommandNotStarted` when the command could not be started; the worker stops as on
    /// `shutdown`.
    pub async fn run(
        mut self,
        shutdown: impl Future<Output = ()>,
    ) -> Result<WorkerReport, WorkerError> {
        let config = &self.config;
        let (program, args) = config
            .command
            .split_first()
            .map(|(p, a)| (p.clone(), a.to_vec()))
            .unwrap_or_default();
        let job = Arc::new(Job {
            worker: config.name.clone(),
            program,
            args,
            database: config.database.clone(),
            lease: config.lease,
            launcher: attempt::Launcher::find().await,
            outage: Outage::default(),
            backoff: Backoff::default(),
        });
        let (grace_tx, grace_rx) = watch::channel(None::<Instant>);
        let mut running = JoinSet::new();
        let mut report = WorkerReport::default();
        let mut fatal = None;
        let mut stopping = false;
        // It fires at once first: a worker starting up recovers what dead ones left.
        let mut reap = interval(config.reap_every);
        reap.set_missed_tick_behavior(MissedTickBehavior::Delay);
        // Whether a claim may find something: after a start, a change, a finished command.
        let mut look = true;
        // When to claim again after a failed claim (a busy database, a server restarting):
        // the pauses grow (`Backoff`) while the failures go on, so that a worker never claims
        // in a busy loop against a database that is down. Even `--once` waits and tries again
        // rather than take the failure for an empty queue.
        let mut claim_again: Option<Instant> = None;
        let mut claim_backoff = Backoff::default();
        tokio::pin!(shutdown);
        tracing::info!(
            worker = %config.name,
            concurrency = config.concurrency,
            "waiting for tasks"
        );
        let (stop_pruning, pruning_stopped) = watch::channel(false);
        let pruner = config.retention.map(|retention| {
            tokio::spawn(retention::prune_until(
                self.queue.clone(),
                retention,
                pruning_stopped,
            ))
        });

        loop {
            let free = config.concurrency.saturating_sub(slots(&running));
            if look && !stopping && free > 0 && claim_again.is_none() {
                let claimed_at = Instant::now();
                let claimed = self
                    .queue
                    .claim(&config.name, &config.agent_types, config.lease, free)
                    .await;
                job.outage.note(&claimed);
                match claimed {
                    Ok(tasks) => {
                        claim_backoff = Backoff::default();
                        // A full batch: there may be more, claimed when a slot frees up.
                        look = slots_u32(tasks.len()) == free;
                        for task in tasks {
                            running.spawn(attempt::run(
                                self.queue.clone(),
                                task,
                                job.clone(),
                                grace_rx.clone(),
                                claimed_at,
                            ));
                        }
                    }
                    Err(e) => {
                        // A database that is down or busy is told once per outage, by it.
                        if outage::transient(&e).is_none() {
                            tracing::warn!(error = %e, "cannot claim; trying again shortly");
                        }
                        look = false;
                        claim_again = Some(Instant::now() + claim_backoff.pause());
                    }
                }
            }
            if running.is_empty() && (stopping || (config.once && !look && claim_again.is_none())) {
                break;
            }
            let idle = !look
                && !stopping
                && !config.once
                && claim_again.is_none()
                && slots(&running) < config.concurrency;
            tokio::select! {
                () = &mut shutdown, if !stopping => {
                    stopping = true;
                    grace_tx.send_replace(Some(grace_end(config.grace)));
                    tracing::info!(
                        running = running.len(),
                        "stopping: no more claims; running commands have {:?} to finish",
                        config.grace
                    );
                }
                Some(joined) = running.join_next(), if !running.is_empty() => {
                    look = true;
                    match joined {
                        Ok(Ending::Completed) => report.completed += 1,
                        Ok(Ending::Failed) => report.failed += 1,
                        Ok(Ending::Released) => report.released += 1,
                        Ok(Ending::Abandoned | Ending::Unreported) => report.abandoned += 1,
                        Ok(Ending::NotStarted { program, error }) => {
                            report.released += 1;
                            tracing::error!(
                                "cannot start the command {program:?} ({error}); stopping"
                            );
                            if !stopping {
                                stopping = true;
                                grace_tx.send_replace(Some(grace_end(config.grace)));
                            }
                            fatal.get_or_insert(WorkerError::CommandNotStarted { program, error });
                        }
                        Err(e) => {
                            // The attempt's task panicked; its lease expires and the reaper
                            // takes the task back.
                            report.abandoned += 1;
                            tracing::error!(error = %e, "an attempt ended abnormally");
                        }
                    }
                }
                () = self.wake.wait(config.idle_recheck), if idle => look = true,
                () = sleep_until(claim_again.unwrap_or_else(Instant::now)),
                    if claim_again.is_some() && !stopping =>
                {
                    claim_again = None;
                    look = true;
                }
                // A tick that comes while a report of this worker's waits to try again is
                // skipped (see `Outage::reports_waiting`): the next one reaps.
                _ = reap.tick(), if !stopping && !job.outage.reports_waiting() => {
                    if job.outage.reports_waiting() {
                        continue;
                    }
                    let reaped = self.queue.reap().await;
                    job.outage.note(&reaped);
                    match reaped {
                        Ok(reaped) => {
                            if !reaped.lost.is_empty() || !reaped.timed_out.is_empty() {
                                tracing::info!(
                                    lost = reaped.lost.len(),
                                    timed_out = reaped.timed_out.len(),
                                    "took back tasks of dead or stuck workers"
                                );
                                look = true;
                            }
                        }
                        // A database that is down or busy is told once per outage.
                        Err(e) if outage::transient(&e).is_some() => {}
                        Err(e) => tracing::warn!(error = %e, "cannot reap"),
                    }
                }
            }
        }
        let _ = stop_pruning.send(true);
        if let Some(pruner) = pruner {
            match pruner.await {
                Ok(totals) => tracing::debug!(?totals, "stopped pruning"),
                Err(e) => tracing::error!(error = %e, "the pruning task ended abnormally"),
            }
        }
        tracing::info!(
            worker = %config.name,
            completed = report.completed,
            failed = report.failed,
            released = report.released,
            abandoned = report.abandoned,
            "stopped"
        );
        match fatal {
            Some(e) => Err(e),
            None => Ok(report),
        }
    }
}

/// When the grace period that starts now ends. A grace too long to represent never ends:
/// the commands may run until they finish.
fn grace_end(grace: Duration) -> Instant {
    let now = Instant::now();
    now.checked_add(grace)
        .unwrap_or_else(|| now + Duration::from_secs(30 * 365 * 24 * 3600))
}

fn slots(running: &JoinSet<Ending>) -> u32 {
    slots_u32(running.len())
}

fn slots_u32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::sync::Arc;
    use std::time::Duration;

    use abathur_core::error::DatabaseError;
    use abathur_core::queue::{
        ClaimRequest, ClaimedTask, FailOutcome, Lease, NewTask, PendingTask, PriorityPolicy,
        PruneReport, PruneRequest, QueueError, QueueLimits, QueueOverview, QueueStore, ReapReport,
        Recorded, RetryPolicy, SubmissionDetails, Submitted, TaskEvent, TaskQueue,
    };
    use async_trait::async_trait;
    use serde_json::Value;
    use uuid::Uuid;

    use super::{Worker, WorkerConfig, WorkerReport};

    /// A store, except that its first claims and completions fail.
    struct Faulty {
        inner: Arc<dyn QueueStore>,
        /// How many claims fail, with `claim_error`, before one gets through.
        failing_claims: AtomicU32,
        claim_error: fn() -> DatabaseError,
        /// When each claim was asked for.
        claims: std::sync::Mutex<Vec<tokio::time::Instant>>,
        /// How many completions fail with a lost connection; the first of them commits
        /// before its answer is lost, as when the server goes away during the commit.
        failing_completions: AtomicU32,
        completions: AtomicU32,
    }

    impl Faulty {
        fn new(inner: Arc<dyn QueueStore>) -> Self {
            Self {
                inner,
                failing_claims: AtomicU32::new(0),
                claim_error: || DatabaseError::Busy,
                claims: std::sync::Mutex::new(Vec::new()),
                failing_completions: AtomicU32::new(0),
                completions: AtomicU32::new(0),
            }
        }

        fn claims(&self) -> Vec<tokio::time::Instant> {
            self.claims.lock().expect("claims").clone()
        }
    }

    fn lost_connection() -> DatabaseError {
        DatabaseError::Connection(
            "the PostgreSQL server closed or refused the connection: terminating connection \
             due to administrator command"
                .into(),
        )
    }

    /// Takes one from `counter` if it is above zero; whether it was.
    fn take_one(counter: &AtomicU32) -> bool {
        counter
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
    }

    #[async_trait]
    impl QueueStore for Faulty {
        async fn submit(
            &self,
            batch: Vec<NewTask>,
            limits: &QueueLimits,
            priority: &PriorityPolicy,
            actor: &str,
            now: abathur_core::clock::Now,
        ) -> Result<Vec<Submitted>, QueueError> {
            self.inner.submit(batch, limits, priority, actor, now).await
        }
        async fn submission_details(&self, task_id: Uuid) -> Result<SubmissionDetails, QueueError> {
            self.inner.submission_details(task_id).await
        }
        async fn claim(
            &self,
            request: &ClaimRequest,
            priority: &PriorityPolicy,
            now: abathur_core::clock::Now,
        ) -> Result<Vec<ClaimedTask>, QueueError> {
            self.claims
                .lock()
                .expect("claims")
                .push(tokio::time::Instant::now());
            if take_one(&self.failing_claims) {
                return Err(QueueError::Database((self.claim_error)()));
            }
            self.inner.claim(request, priority, now).await
        }
        async fn heartbeat(
            &self,
            attempt_id: Uuid,
            lease: Duration,
            now: abathur_core::clock::Now,
        ) -> Result<Lease, QueueError> {
            self.inner.heartbeat(attempt_id, lease, now).await
        }
        async fn complete(
            &self,
            attempt_id: Uuid,
            result: Option<Value>,
            priority: &PriorityPolicy,
            now: abathur_core::clock::Now,
        ) -> Result<Recorded<Vec<Uuid>>, QueueError> {
            let first = self.completions.fetch_add(1, Ordering::SeqCst) == 0;
            if take_one(&self.failing_completions) {
                if first {
                    // It commits; the answer is lost with the connection.
                    self.inner
                        .complete(attempt_id, result, priority, now)
                        .await?;
                }
                return Err(QueueError::Database(lost_connection()));
            }
            self.inner.complete(attempt_id, result, priority, now).await
        }
        async fn fail(
            &self,
            attempt_id: Uuid,
            error: &str,
            retry: &RetryPolicy,
            priority: &PriorityPolicy,
            now: abathur_core::clock::Now,
        ) -> Result<Recorded<FailOutcome>, QueueError> {
            self.inner
                .fail(attempt_id, error, retry, priority, now)
                .await
        }
        async fn prune(&self, request: &PruneRequest) -> Result<PruneReport, QueueError> {
            self.inner.prune(request).await
        }
        async fn release(
            &self,
            attempt_id: Uuid,
            reason: &str,
            priority: &PriorityPolicy,
            now: abathur_core::clock::Now,
        ) -> Result<(), QueueError> {
            self.inner.release(attempt_id, reason, priority, now).await
        }
        async fn cancel(
            &self,
            task_id: Uuid,
            actor: &str,
            now: abathur_core::clock::Now,
        ) -> Result<Vec<Uuid>, QueueError> {
            self.inner.cancel(task_id, actor, now).await
        }
        async fn retry(
            &self,
            task_id: Uuid,
            actor: &str,
            priority: &PriorityPolicy,
            now: abathur_core::clock::Now,
        ) -> Result<Vec<Uuid>, QueueError> {
            self.inner.retry(task_id, actor, priority, now).await
        }
        async fn reap(
            &self,
            retry: &RetryPolicy,
            priority: &PriorityPolicy,
            now: abathur_core::clock::Now,
        ) -> Result<ReapReport, QueueError> {
            self.inner.reap(retry, priority, now).await
        }
        async fn history(&self, task_id: Uuid) -> Result<Vec<TaskEvent>, QueueError> {
            self.inner.history(task_id).await
        }
        async fn overview(
            &self,
            running_limit: u32,
            now: abathur_core::clock::Now,
        ) -> Result<QueueOverview, QueueError> {
            self.inner.overview(running_limit, now).await
        }
        async fn pending(&self, limit: u32) -> Result<Vec<PendingTask>, QueueError> {
            self.inner.pending(limit).await
        }
    }

    #[tokio::test]
    async fn once_takes_a_failed_claim_for_a_busy_database_not_for_an_empty_queue() {
        let backend = crate::backend::tests::in_memory().await;
        let store = Arc::new(Faulty::new(backend.queue_store.clone()));
        store.failing_claims.store(2, Ordering::SeqCst);
        let queue = TaskQueue::new(store.clone());
        queue
            .submit(NewTask::new("t", "t", "generic"))
            .await
            .expect("submit");
        let mut config = WorkerConfig::new(vec!["true".into()], "unused.db".into());
        config.once = true;
        config.idle_recheck = Duration::from_millis(20);
        let report = Worker::new(queue, config)
            .expect("a valid config")
            .run(std::future::pending())
            .await
            .expect("the worker runs");
        assert_eq!(
            report,
            WorkerReport {
                completed: 1,
                ..WorkerReport::default()
            }
        );
        // Two failed claims, the one that got the task, and the one that found nothing.
        assert_eq!(store.claims().len(), 4);
    }

    /// A `--once` worker on `store`, holding one task, run to its end.
    async fn run_one_task(store: Arc<Faulty>) -> (WorkerReport, Uuid) {
        let queue = TaskQueue::new(store.clone());
        let submitted = queue
            .submit(NewTask::new("t", "t", "generic"))
            .await
            .expect("submit");
        let mut config = WorkerConfig::new(vec!["true".into()], "unused.db".into());
        config.once = true;
        let report = Worker::new(queue, config)
            .expect("a valid config")
            .run(std::future::pending())
            .await
            .expect("the worker runs");
        (report, submitted.id)
    }

    #[tokio::test]
    async fn claims_back_off_while_the_server_is_unreachable() {
        let backend = crate::backend::tests::in_memory().await;
        let mut store = Faulty::new(backend.queue_store.clone());
        store.failing_claims = AtomicU32::new(4);
        store.claim_error = lost_connection;
        let store = Arc::new(store);
        let (report, _) = run_one_task(store.clone()).await;
        assert_eq!(report.completed, 1);
        let claims = store.claims();
        // Four refused, the one that got the task, the one that found nothing.
        assert_eq!(claims.len(), 6);
        // Each pause after a failed claim is longer than the one before (doubling, spread
        // by a quarter either way), from about the first pause: no claim in a busy loop.
        let pauses: Vec<_> = claims[..5].windows(2).map(|w| w[1] - w[0]).collect();
        assert!(
            pauses[0] >= super::outage::FIRST_PAUSE.mul_f64(0.75),
            "{pauses:?}"
        );
        assert!(pauses.windows(2).all(|p| p[1] > p[0]), "{pauses:?}");
    }

    #[tokio::test]
    async fn a_completion_lost_with_the_connection_is_repeated_and_the_task_runs_once() {
        let backend = crate::backend::tests::in_memory().await;
        let store = Arc::new(Faulty::new(backend.queue_store.clone()));
        // The first completion commits and loses its answer; the next three find the server
        // gone (about 0.7 s, where the worker used to give up after 1.2 s); the fifth is
        // answered as a repeat of the first.
        store.failing_completions.store(4, Ordering::SeqCst);
        let (report, task) = run_one_task(store.clone()).await;
        assert_eq!(
            report,
            WorkerReport {
                completed: 1,
                ..WorkerReport::default()
            }
        );
        assert_eq!(store.completions.load(Ordering::SeqCst), 5);
        let history = TaskQueue::new(backend.queue_store.clone())
            .history(task)
            .await
            .expect("history");
        let runs = history
            .iter()
            .filter(|e| e.to == abathur_core::models::TaskStatus::Running)
            .count();
        let completions = history
            .iter()
            .filter(|e| e.to == abathur_core::models::TaskStatus::Completed)
            .count();
        assert_eq!((runs, completions), (1, 1), "{history:?}");
    }

    #[test]
    fn settings_that_cannot_work_or_that_the_queue_would_refuse_are_refused() {
        use abathur_core::limits::MAX_NAME_BYTES;
        use abathur_core::queue::{MAX_CLAIM, MAX_CLAIM_AGENT_TYPES, MAX_LEASE};

        let valid = WorkerConfig::new(vec!["true".into()], "db".into());
        type Breaks = fn(&mut WorkerConfig);
        let cases: [(&str, Breaks); 12] = [
            ("command", |c| c.command.clear()),
            ("command", |c| c.command = vec!["".into()]),
            ("concurrency", |c| c.concurrency = 0),
            ("concurrency", |c| c.concurrency = MAX_CLAIM + 1),
            ("lease", |c| c.lease = Duration::ZERO),
            ("lease", |c| c.lease = MAX_LEASE + Duration::from_secs(1)),
            ("name", |c| c.name = " ".into()),
            ("name", |c| c.name = "w\0".into()),
            ("name", |c| c.name = "w".repeat(MAX_NAME_BYTES + 1)),
            ("agent_type", |c| c.agent_types = vec!["".into()]),
            ("agent_type", |c| {
                c.agent_types = vec!["t".repeat(MAX_NAME_BYTES + 1)]
            }),
            ("agent_types", |c| {
                c.agent_types = (0..=MAX_CLAIM_AGENT_TYPES).map(|i| i.to_string()).collect();
            }),
        ];
        for (field, break_it) in cases {
            let mut config = valid.clone();
            break_it(&mut config);
            let err = config.validate().expect_err(field);
            assert_eq!(err.field, field, "{err}");
        }
        assert!(valid.validate().is_ok());
        let mut widest = valid.clone();
        widest.concurrency = MAX_CLAIM;
        widest.lease = MAX_LEASE;
        widest.grace = Duration::ZERO;
        widest.name = "w".repeat(MAX_NAME_BYTES);
        widest.agent_types = (0..MAX_CLAIM_AGENT_TYPES).map(|i| i.to_string()).collect();
        assert!(widest.validate().is_ok());
    }
}
