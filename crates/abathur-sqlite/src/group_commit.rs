//! Group commit: the queue operations of every caller in a process share write transactions.
//!
//! A commit in WAL mode costs a roughly fixed time, whatever it holds, so a queue that commits
//! once per claim and once per completion is capped by that time. [`GroupCommitQueueStore`]
//! sends each write to one writer task, which runs everything that is waiting in one
//! `BEGIN IMMEDIATE` transaction, each operation inside its own savepoint, and commits once:
//!
//! - each caller gets its own outcome, as if it had run alone;
//! - an operation that fails is rolled back to its savepoint, so it does not poison the others
//!   in its group;
//! - a group forms from whatever waits while the previous one commits: under light load a group
//!   is one operation (run without a savepoint, as the plain store would) and nothing waits
//!   for a timer; under heavy load groups grow up to [`GroupCommitConfig::max_group`].
//!
//! The writer runs on one connection of the pool whose sqlx thread it keeps parked while work
//! keeps coming ([`super::handle`]): each group is one run of prepared statements on that
//! connection's handle, with a warm page cache and no hop to another thread.
//!
//! Reads (history, overview, execution plan) and the prune, which has its own batching, go
//! straight to the pool.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use abathur_core::clock::Now;
use abathur_core::error::DatabaseError;
use abathur_core::queue::{
    ClaimRequest, ClaimedTask, FailOutcome, Lease, NewTask, PendingTask, PriorityPolicy,
    PruneReport, PruneRequest, QueueError, QueueLimits, QueueOverview, QueueStore, ReapReport,
    Recorded, RetryPolicy, SubmissionDetails, Submitted, TaskEvent,
};
use async_trait::async_trait;

use rusqlite::Connection;
use serde_json::Value;
use sqlx::{SqliteConnection, SqlitePool};
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

use super::errors::{classify, raw_on};
use super::handle::{begin_without_waiting, busy_timeout, park, statement, Finish, Handle};
use super::queue_store::{
    cancel_in, claim_in, complete_in, fail_in, heartbeat_in, reap_in, release_in, retry_in,
    submit_in, QueueStoreImpl,
};

/// How the writer groups operations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GroupCommitConfig {
    /// The most operations in one transaction (default 256): bounds how long the write lock
    /// is held, and so how long other processes wait for it.
    pub max_group: usize,
    /// How many operations may wait for the writer before callers wait to hand theirs over
    /// (default 4,096).
    pub queue_depth: usize,
}

impl Default for GroupCommitConfig {
    fn default() -> Self {
        Self {
            max_group: 256,
            queue_depth: 4_096,
        }
    }
}

/// One operation waiting for the writer, with where its outcome goes.
enum Job {
    Submit {
        batch: Vec<NewTask>,
        limits: QueueLimits,
        priority: PriorityPolicy,
        actor: String,
        now: Now,
        reply: oneshot::Sender<Result<Vec<Submitted>, QueueError>>,
    },
    Claim {
        request: ClaimRequest,
        priority: PriorityPolicy,
        now: Now,
        reply: oneshot::Sender<Result<Vec<ClaimedTask>, QueueError>>,
    },
    Heartbeat {
        attempt_id: Uuid,
        lease: Duration,
        now: Now,
        reply: oneshot::Sender<Result<Lease, QueueError>>,
    },
    Complete {
        attempt_id: Uuid,
        result: Option<Value>,
        priority: PriorityPolicy,
        now: Now,
        reply: oneshot::Sender<Result<Recorded<Vec<Uuid>>, QueueError>>,
    },
    Fail {
        attempt_id: Uuid,
        error: String,
        retry: RetryPolicy,
        priority: PriorityPolicy,
        now: Now,
        reply: oneshot::Sender<Result<Recorded<FailOutcome>, QueueError>>,
    },
    Release {
        attempt_id: Uuid,
        reason: String,
        priority: PriorityPolicy,
        now: Now,
        reply: oneshot::Sender<Result<(), QueueError>>,
    },
    Cancel {
        task_id: Uuid,
        actor: String,
        now: Now,
        reply: oneshot::Sender<Result<Vec<Uuid>, QueueError>>,
    },
    Retry {
        task_id: Uuid,
        actor: String,
        priority: PriorityPolicy,
        now: Now,
        reply: oneshot::Sender<Result<Vec<Uuid>, QueueError>>,
    },
    Reap {
        retry: RetryPolicy,
        priority: PriorityPolicy,
        now: Now,
        reply: oneshot::Sender<Result<ReapReport, QueueError>>,
    },
}

/// A [`QueueStore`] whose writes share transactions; see the module's documentation.
///
/// Create it inside a tokio runtime: it spawns its writer task there. The writer stops when
/// the store and every clone of it are dropped.
#[derive(Clone)]
pub struct GroupCommitQueueStore {
    jobs: mpsc::Sender<Job>,
    direct: QueueStoreImpl,
    stats: Arc<Counters>,
}

/// How many transactions the writer committed, and how many operations they held.
#[derive(Debug, Default)]
struct Counters {
    groups: AtomicU64,
    operations: AtomicU64,
}

/// What the writer has done so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GroupCommitStats {
    /// Transactions committed (or attempted).
    pub groups: u64,
    /// Operations run in them.
    pub operations: u64,
}

impl std::fmt::Debug for GroupCommitQueueStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GroupCommitQueueStore")
            .finish_non_exhaustive()
    }
}

impl GroupCommitQueueStore {
    /// A store on `pool` with the default grouping.
    pub fn new(pool: SqlitePool) -> Self {
        Self::with_config(pool, GroupCommitConfig::default())
    }

    /// A store on `pool` grouping as `config` says.
    pub fn with_config(pool: SqlitePool, config: GroupCommitConfig) -> Self {
        let (jobs, queue) = mpsc::channel(config.queue_depth.max(1));
        let stats = Arc::new(Counters::default());
        tokio::spawn(write_groups(
            pool.clone(),
            queue,
            config.max_group.max(1),
            stats.clone(),
        ));
        Self {
            jobs,
            direct: QueueStoreImpl::new(pool),
            stats,
        }
    }

    /// How many transactions the writer has run and how many operations they held: the
    /// average group size is their ratio.
    pub fn stats(&self) -> GroupCommitStats {
        GroupCommitStats {
            groups: self.stats.groups.load(Ordering::Relaxed),
            operations: self.stats.operations.load(Ordering::Relaxed),
        }
    }

    /// Hands `job` to the writer and waits for its outcome.
    async fn run<T>(
        &self,
        job: Job,
        outcome: oneshot::Receiver<Result<T, QueueError>>,
    ) -> Result<T, QueueError> {
        let gone = || {
            QueueError::Database(DatabaseError::Other(
                "the group-commit writer has stopped".into(),
            ))
        };
        self.jobs.send(job).await.map_err(|_| gone())?;
        outcome.await.map_err(|_| gone())?
    }
}

/// How long the writer keeps its connection parked after the last operation: while work keeps
/// coming, the connection's page cache and prepared statements stay warm; when it stops, the
/// connection goes back to the pool (whose `close` waits for it).
const KEEP_PARKED: Duration = Duration::from_millis(50);

/// The longest pause between tries for the write lock while another connection holds it.
const MAX_LOCK_PAUSE: Duration = Duration::from_millis(20);

/// The writer: takes whatever operations wait, runs them in one transaction, commits, and
/// answers each caller.
///
/// It runs its groups on one connection of the pool, whose sqlx thread it parks for as long
/// as work keeps coming ([`KEEP_PARKED`]): every group is then one run of prepared
/// statements on the connection's handle, with no hop to another thread. It waits for the
/// write lock by sleeping between tries, so a lock held by another process never blocks a
/// thread of the runtime.
async fn write_groups(
    pool: SqlitePool,
    mut queue: mpsc::Receiver<Job>,
    max_group: usize,
    stats: Arc<Counters>,
) {
    // A pool of one connection is shared with the reads: give it back after every group.
    let keep_parked = if pool.options().get_max_connections() > 1 {
        KEEP_PARKED
    } else {
        Duration::ZERO
    };
    let mut next = queue.recv().await;
    while let Some(first) = next.take() {
        let ended = match pool.acquire().await {
            Ok(mut conn) => {
                run_parked(&mut conn, first, &mut queue, max_group, keep_parked, &stats).await
            }
            Err(e) => Err((first, classify(e, "connection", ""))),
        };
        // The connection is back in the pool: wait for work without it.
        next = match ended {
            Ok(Parked::Idle) => queue.recv().await,
            Ok(Parked::Closed) => None,
            // Without a connection, nothing that waits can run: answer all of it.
            Err((first, err)) => {
                answer_without_running(first, &err);
                while let Ok(job) = queue.try_recv() {
                    answer_without_running(job, &err);
                }
                queue.recv().await
            }
        };
    }
}

/// Why the writer stopped using its parked connection.
enum Parked {
    /// No work came for a while, or the connection could not be trusted any more.
    Idle,
    /// Every store handle is gone.
    Closed,
}

/// Parks `conn` and runs groups on its handle, starting with `first`, until no work comes for
/// `keep_parked`. The error is for `first` when the connection could not be parked.
async fn run_parked(
    conn: &mut SqliteConnection,
    first: Job,
    queue: &mut mpsc::Receiver<Job>,
    max_group: usize,
    keep_parked: Duration,
    stats: &Counters,
) -> Result<Parked, (Job, DatabaseError)> {
    let mut locked = match park(conn).await {
        Ok(locked) => locked,
        Err(err) => return Err((first, err)),
    };
    let handle = match Handle::new(&mut locked) {
        Ok(handle) => handle,
        Err(err) => return Err((first, err)),
    };
    let patience = busy_timeout(&handle).unwrap_or(Duration::from_secs(5));
    let mut job = first;
    loop {
        let mut group = vec![job];
        while group.len() < max_group {
            match queue.try_recv() {
                Ok(job) => group.push(job),
                Err(_) => break,
            }
        }
        stats.groups.fetch_add(1, Ordering::Relaxed);
        stats
            .operations
            .fetch_add(group.len() as u64, Ordering::Relaxed);
        // Take the write lock, sleeping between tries while another connection holds it.
        let deadline = Instant::now() + patience;
        let mut pause = Duration::from_millis(1);
        let begun = loop {
            match begin_without_waiting(&handle, patience) {
                Ok(true) => break Ok(()),
                Ok(false) => {}
                Err(err) => break Err(err),
            }
            let now = Instant::now();
            if now >= deadline {
                break Err(DatabaseError::Busy);
            }
            tokio::time::sleep(pause.min(deadline - now)).await;
            pause = (pause * 2).min(MAX_LOCK_PAUSE);
        };
        match begun {
            Ok(()) => commit_group(&handle, group),
            Err(err) => {
                for job in group {
                    answer_without_running(job, &err);
                }
            }
        }
        // A transaction still open here could not be ended: the connection is not to be
        // trusted. Give it back (dropping the handle rolls back) and take another.
        if !handle.is_autocommit() {
            return Ok(Parked::Idle);
        }
        job = match tokio::time::timeout(keep_parked, queue.recv()).await {
            Ok(Some(job)) => job,
            Ok(None) => return Ok(Parked::Closed),
            Err(_) => return Ok(Parked::Idle),
        };
    }
}

/// What is left to do for one operation once its group's commit is known: answer its caller.
type Settle = Box<dyn FnOnce(Option<&DatabaseError>) + Send>;

/// The answer for an operation that ran: its own outcome, unless the group's commit failed, in
/// which case nothing it did was kept.
fn settle<T: Send + 'static>(
    reply: oneshot::Sender<Result<T, QueueError>>,
    outcome: Result<T, QueueError>,
) -> Settle {
    Box::new(move |commit_failure| {
        let answer = match (outcome, commit_failure) {
            (Ok(_), Some(failure)) => Err(QueueError::Database(copy_error(failure))),
            (outcome, _) => outcome,
        };
        // A caller that stopped waiting has nobody to tell.
        let _ = reply.send(answer);
    })
}

/// The same failure for another caller. `DatabaseError` is not `Clone` (it may carry
/// validation details); a commit can only fail for reasons of the database as a whole.
fn copy_error(err: &DatabaseError) -> DatabaseError {
    match err {
        DatabaseError::Busy => DatabaseError::Busy,
        DatabaseError::Timeout => DatabaseError::Timeout,
        DatabaseError::Connection(message) => DatabaseError::Connection(message.clone()),
        other => DatabaseError::Other(other.to_string()),
    }
}

/// Runs `group` in the transaction just begun on `raw`, ends it, and answers each caller.
fn commit_group(raw: &Connection, group: Vec<Job>) {
    let (settles, finish) = run_group(raw, group);
    let sql = match finish {
        Finish::Commit => "COMMIT",
        Finish::Rollback => "ROLLBACK",
    };
    let failure = match statement(raw, sql) {
        Ok(()) => None,
        Err(e) => {
            if !raw.is_autocommit() {
                let _ = raw.execute_batch("ROLLBACK");
            }
            Some(raw_on("transaction", "")(e))
        }
    };
    if let Some(failure) = &failure {
        tracing::warn!(error = %failure, "a group commit failed; its operations are undone");
    }
    for settle in settles {
        settle(failure.as_ref());
    }
}

/// Runs a group inside its transaction: each operation in a savepoint of its own, so that a
/// failed one leaves no trace, and alone without one. Says whether to commit: not when a
/// savepoint statement failed, for then the transaction cannot be trusted; every operation is
/// then answered with that failure.
fn run_group(conn: &Connection, group: Vec<Job>) -> (Vec<Settle>, Finish) {
    if group.len() == 1 {
        // Alone, an operation needs no savepoint: its transaction is its own. A failed one
        // is rolled back whole; a successful one is committed.
        let mut settles = Vec::with_capacity(1);
        let mut finish = Finish::Rollback;
        for job in group {
            let (ok, settle) = run_job(conn, job);
            if ok {
                finish = Finish::Commit;
            }
            settles.push(settle);
        }
        return (settles, finish);
    }
    let mut settles: Vec<Settle> = Vec::with_capacity(group.len());
    let mut jobs = group.into_iter();
    while let Some(job) = jobs.next() {
        match run_in_savepoint(conn, job) {
            Ok(settle) => settles.push(settle),
            Err((settle, err)) => {
                settles.extend(settle);
                let err = std::sync::Arc::new(err);
                let mut failed: Vec<Settle> = settles
                    .into_iter()
                    .map(|settle| {
                        let err = err.clone();
                        Box::new(move |_: Option<&DatabaseError>| settle(Some(&err))) as Settle
                    })
                    .collect();
                for job in jobs {
                    let err = err.clone();
                    failed.push(Box::new(move |_: Option<&DatabaseError>| {
                        answer_without_running(job, &err)
                    }));
                }
                return (failed, Finish::Rollback);
            }
        }
    }
    (settles, Finish::Commit)
}

/// Runs one operation inside a savepoint, releasing it on success and rolling back to it on
/// failure, so that a failed operation leaves no trace in the group. The error is the
/// savepoint's own failure, not the operation's (that goes to its caller), with the way to
/// answer the operation when it got to run.
fn run_in_savepoint(
    conn: &Connection,
    job: Job,
) -> Result<Settle, (Option<Settle>, DatabaseError)> {
    let failed = raw_on("transaction", "");
    if let Err(e) = statement(conn, "SAVEPOINT queue_op") {
        let err = failed(e);
        answer_without_running(job, &err);
        return Err((None, err));
    }
    let (ok, settle) = run_job(conn, job);
    if !ok {
        if let Err(e) = statement(conn, "ROLLBACK TO queue_op") {
            return Err((Some(settle), raw_on("transaction", "")(e)));
        }
    }
    if let Err(e) = statement(conn, "RELEASE queue_op") {
        return Err((Some(settle), raw_on("transaction", "")(e)));
    }
    Ok(settle)
}

/// Runs `job` on `conn`; whether it succeeded, and how to answer its caller.
fn run_job(conn: &Connection, job: Job) -> (bool, Settle) {
    fn done<T: Send + 'static>(
        reply: oneshot::Sender<Result<T, QueueError>>,
        outcome: Result<T, QueueError>,
    ) -> (bool, Settle) {
        (outcome.is_ok(), settle(reply, outcome))
    }
    match job {
        Job::Submit {
            batch,
            limits,
            priority,
            actor,
            now,
            reply,
        } => done(
            reply,
            submit_in(conn, &batch, &limits, &priority, &actor, now),
        ),
        Job::Claim {
            request,
            priority,
            now,
            reply,
        } => done(reply, claim_in(conn, &request, &priority, now)),
        Job::Heartbeat {
            attempt_id,
            lease,
            now,
            reply,
        } => done(reply, heartbeat_in(conn, attempt_id, lease, now)),
        Job::Complete {
            attempt_id,
            result,
            priority,
            now,
            reply,
        } => done(
            reply,
            complete_in(conn, attempt_id, result.as_ref(), &priority, now),
        ),
        Job::Fail {
            attempt_id,
            error,
            retry,
            priority,
            now,
            reply,
        } => done(
            reply,
            fail_in(conn, attempt_id, &error, &retry, &priority, now),
        ),
        Job::Release {
            attempt_id,
            reason,
            priority,
            now,
            reply,
        } => done(reply, release_in(conn, attempt_id, &reason, &priority, now)),
        Job::Cancel {
            task_id,
            actor,
            now,
            reply,
        } => done(reply, cancel_in(conn, task_id, &actor, now)),
        Job::Retry {
            task_id,
            actor,
            priority,
            now,
            reply,
        } => done(reply, retry_in(conn, task_id, &actor, &priority, now)),
        Job::Reap {
            retry,
            priority,
            now,
            reply,
        } => done(reply, reap_in(conn, &retry, &priority, now)),
    }
}

/// Answers a job that never ran because its group could not begin.
fn answer_without_running(job: Job, err: &DatabaseError) {
    fn fail<T>(reply: oneshot::Sender<Result<T, QueueError>>, err: &DatabaseError) {
        let _ = reply.send(Err(QueueError::Database(copy_error(err))));
    }
    match job {
        Job::Submit { reply, .. } => fail(reply, err),
        Job::Claim { reply, .. } => fail(reply, err),
        Job::Heartbeat { reply, .. } => fail(reply, err),
        Job::Complete { reply, .. } => fail(reply, err),
        Job::Cancel { reply, .. } | Job::Retry { reply, .. } => fail(reply, err),
        Job::Fail { reply, .. } => fail(reply, err),
        Job::Release { reply, .. } => fail(reply, err),
        Job::Reap { reply, .. } => fail(reply, err),
    }
}

#[async_trait]
impl QueueStore for GroupCommitQueueStore {
    async fn submit(
        &self,
        batch: Vec<NewTask>,
        limits: &QueueLimits,
        priority: &PriorityPolicy,
        actor: &str,
        now: Now,
    ) -> Result<Vec<Submitted>, QueueError> {
        let (reply, outcome) = oneshot::channel();
        let job = Job::Submit {
            batch,
            limits: *limits,
            priority: *priority,
            actor: actor.to_string(),
            now,
            reply,
        };
        self.run(job, outcome).await
    }

    async fn claim(
        &self,
        request: &ClaimRequest,
        priority: &PriorityPolicy,
        now: Now,
    ) -> Result<Vec<ClaimedTask>, QueueError> {
        let (reply, outcome) = oneshot::channel();
        let job = Job::Claim {
            request: request.clone(),
            priority: *priority,
            now,
            reply,
        };
        self.run(job, outcome).await
    }

    async fn heartbeat(
        &self,
        attempt_id: Uuid,
        lease: Duration,
        now: Now,
    ) -> Result<Lease, QueueError> {
        let (reply, outcome) = oneshot::channel();
        let job = Job::Heartbeat {
            attempt_id,
            lease,
            now,
            reply,
        };
        self.run(job, outcome).await
    }

    async fn complete(
        &self,
        attempt_id: Uuid,
        result: Option<Value>,
        priority: &PriorityPolicy,
        now: Now,
    ) -> Result<Recorded<Vec<Uuid>>, QueueError> {
        let (reply, outcome) = oneshot::channel();
        let job = Job::Complete {
            attempt_id,
            result,
            priority: *priority,
            now,
            reply,
        };
        self.run(job, outcome).await
    }

    async fn fail(
        &self,
        attempt_id: Uuid,
        error: &str,
        retry: &RetryPolicy,
        priority: &PriorityPolicy,
        now: Now,
    ) -> Result<Recorded<FailOutcome>, QueueError> {
        let (reply, outcome) = oneshot::channel();
        let job = Job::Fail {
            attempt_id,
            error: error.to_string(),
            retry: *retry,
            priority: *priority,
            now,
            reply,
        };
        self.run(job, outcome).await
    }

    async fn release(
        &self,
        attempt_id: Uuid,
        reason: &str,
        priority: &PriorityPolicy,
        now: Now,
    ) -> Result<(), QueueError> {
        let (reply, outcome) = oneshot::channel();
        let job = Job::Release {
            attempt_id,
            reason: reason.to_string(),
            priority: *priority,
            now,
            reply,
        };
        self.run(job, outcome).await
    }

    async fn cancel(&self, task_id: Uuid, actor: &str, now: Now) -> Result<Vec<Uuid>, QueueError> {
        let (reply, outcome) = oneshot::channel();
        let job = Job::Cancel {
            task_id,
            actor: actor.to_string(),
            now,
            reply,
        };
        self.run(job, outcome).await
    }

    async fn retry(
        &self,
        task_id: Uuid,
        actor: &str,
        priority: &PriorityPolicy,
        now: Now,
    ) -> Result<Vec<Uuid>, QueueError> {
        let (reply, outcome) = oneshot::channel();
        let job = Job::Retry {
            task_id,
            actor: actor.to_string(),
            priority: *priority,
            now,
            reply,
        };
        self.run(job, outcome).await
    }

    async fn reap(
        &self,
        retry: &RetryPolicy,
        priority: &PriorityPolicy,
        now: Now,
    ) -> Result<ReapReport, QueueError> {
        let (reply, outcome) = oneshot::channel();
        let job = Job::Reap {
            retry: *retry,
            priority: *priority,
            now,
            reply,
        };
        self.run(job, outcome).await
    }

    async fn submission_details(&self, task_id: Uuid) -> Result<SubmissionDetails, QueueError> {
        self.direct.submission_details(task_id).await
    }

    /// Each batch is a short write transaction of its own on the pool, rather than a job of
    /// the writer: a group that held a batch would hold the claims and completions waiting
    /// with it.
    async fn prune(&self, request: &PruneRequest) -> Result<PruneReport, QueueError> {
        self.direct.prune(request).await
    }

    async fn history(&self, task_id: Uuid) -> Result<Vec<TaskEvent>, QueueError> {
        self.direct.history(task_id).await
    }

    async fn overview(&self, running_limit: u32, now: Now) -> Result<QueueOverview, QueueError> {
        self.direct.overview(running_limit, now).await
    }

    async fn pending(&self, limit: u32) -> Result<Vec<PendingTask>, QueueError> {
        self.direct.pending(limit).await
    }
}
