//! Our queue as the scenarios drive it: how it is opened, and workers that claim and complete
//! no-op tasks, timing each call. The raw baseline's single-connection loop is here too, so
//! both sides of a comparison run the same loop.

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use abathur::domain::error::DatabaseError;
use abathur::domain::queue::{QueueError, TaskQueue};
use abathur::infrastructure::database::{
    DatabaseConfig, DatabaseConnection, GroupCommitQueueStore, QueueStoreImpl,
};

use crate::raw::RawQueue;
use crate::stats::Samples;
use crate::BenchError;

/// The lease every benchmark claim takes: long enough that nothing expires during a run.
pub const LEASE: Duration = Duration::from_secs(300);

/// How our queue commits. Each variant of a throughput scenario runs once per mode in
/// [`CommitMode::ALL`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommitMode {
    /// `QueueStoreImpl`: on the database's writer thread, one `BEGIN IMMEDIATE` transaction,
    /// and one commit, per queue operation (groups of one).
    PerOperation,
    /// `GroupCommitQueueStore`: on the same writer thread, the operations that wait share a
    /// transaction, each in a savepoint. With one caller its groups hold one operation each,
    /// so nothing is batched.
    Group,
}

impl CommitMode {
    pub const ALL: [CommitMode; 2] = [CommitMode::PerOperation, CommitMode::Group];

    /// How the mode is named in variant labels.
    pub fn label(self) -> &'static str {
        match self {
            Self::PerOperation => "commit per op",
            Self::Group => "group commit",
        }
    }

    /// Opens our queue on the database file at `path`, with the default pool.
    pub async fn open(self, path: &Path) -> Result<(DatabaseConnection, TaskQueue), BenchError> {
        match self {
            Self::PerOperation => {
                let db = DatabaseConnection::open_path(path, DatabaseConfig::default()).await?;
                let queue = TaskQueue::new(Arc::new(QueueStoreImpl::new(db.pool().clone())));
                Ok((db, queue))
            }
            Self::Group => {
                let db = DatabaseConnection::open_path(path, DatabaseConfig::default()).await?;
                let queue = TaskQueue::new(Arc::new(GroupCommitQueueStore::new(db.pool().clone())));
                Ok((db, queue))
            }
        }
    }
}

/// What a claim + complete run measured.
#[derive(Debug, Default)]
pub struct RunStats {
    pub completed: usize,
    pub elapsed: Duration,
    /// One sample per claim call that returned tasks.
    pub claim: Samples,
    /// One sample per complete call.
    pub complete: Samples,
    /// Calls that failed with the write lock still taken after the busy timeout, and were
    /// retried.
    pub busy: usize,
}

impl RunStats {
    pub fn rate(&self) -> f64 {
        self.completed as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// Whether an error is the store saying it could not get the write lock (or a pooled
/// connection) in time: a worker retries those, and the run counts them.
pub fn is_busy(e: &QueueError) -> bool {
    matches!(
        e,
        QueueError::Database(DatabaseError::Busy | DatabaseError::Timeout)
    )
}

/// Runs `workers` tokio tasks that claim up to `max` tasks at a time and complete each at once,
/// until `total` tasks have completed. A worker that finds nothing ready while others still
/// hold tasks (their dependents will be released) waits a millisecond and asks again. A call
/// that fails because the write lock stayed taken past the busy timeout is retried and
/// counted in [`RunStats::busy`]; any other error stops every worker and is returned.
pub async fn run_workers(
    queue: &TaskQueue,
    workers: usize,
    max: u32,
    total: usize,
) -> Result<RunStats, BenchError> {
    run_workers_completing(queue, workers, max, total, Completing::OneByOne).await
}

/// How a worker of [`run_workers_completing`] completes the tasks one claim gave it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Completing {
    /// One after another, each call returning before the next starts.
    OneByOne,
    /// All at once, as a worker that runs every task it claimed at the same time does (`abathur
    /// worker --concurrency` as large as its claim).
    AtOnce,
}

/// [`run_workers`], each worker completing its claimed tasks as `completing` says.
pub async fn run_workers_completing(
    queue: &TaskQueue,
    workers: usize,
    max: u32,
    total: usize,
    completing: Completing,
) -> Result<RunStats, BenchError> {
    let done = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let mut handles = Vec::with_capacity(workers);
    for w in 0..workers {
        let queue = queue.clone();
        let done = Arc::clone(&done);
        let failed = Arc::clone(&failed);
        handles.push(tokio::spawn(async move {
            let name = format!("bench-worker-{w}");
            let mut stats = RunStats::default();
            let result = work(
                &queue,
                &name,
                (max, completing),
                total,
                &done,
                &failed,
                &mut stats,
            )
            .await;
            if result.is_err() {
                failed.store(true, Ordering::Release);
            }
            result.map(|()| stats)
        }));
    }
    let mut all = RunStats::default();
    let mut first_error: Option<(Duration, BenchError)> = None;
    for handle in handles {
        match handle.await? {
            Ok(stats) => {
                all.completed += stats.completed;
                all.busy += stats.busy;
                all.claim.extend(stats.claim);
                all.complete.extend(stats.complete);
            }
            Err((at, e)) => {
                if first_error.as_ref().is_none_or(|(first, _)| at < *first) {
                    first_error = Some((at, e));
                }
            }
        }
    }
    if let Some((at, e)) = first_error {
        return Err(BenchError(format!(
            "{e} ({:.1} s into the run, {} of {total} tasks done)",
            at.as_secs_f64(),
            done.load(Ordering::Acquire)
        )));
    }
    all.elapsed = started.elapsed();
    if all.completed != total {
        return Err(BenchError(format!(
            "{} tasks completed, expected {total}",
            all.completed
        )));
    }
    Ok(all)
}

/// One worker's loop; an error comes with the time since the run started.
async fn work(
    queue: &TaskQueue,
    name: &str,
    (max, completing): (u32, Completing),
    total: usize,
    done: &AtomicUsize,
    failed: &AtomicBool,
    stats: &mut RunStats,
) -> Result<(), (Duration, BenchError)> {
    let started = Instant::now();
    let fail = |e: BenchError| (started.elapsed(), e);
    let mut idle_since: Option<Instant> = None;
    while done.load(Ordering::Acquire) < total && !failed.load(Ordering::Acquire) {
        let t = Instant::now();
        let claimed = match queue.claim(name, &[], LEASE, max).await {
            Ok(claimed) => claimed,
            Err(e) if is_busy(&e) => {
                stats.busy += 1;
                continue;
            }
            Err(e) => return Err(fail(BenchError(format!("{name}: claim: {e}")))),
        };
        if claimed.is_empty() {
            // Nothing ready for a long while with work left means the run is stuck.
            let since = *idle_since.get_or_insert_with(Instant::now);
            if since.elapsed() > Duration::from_secs(60) {
                return Err(fail(BenchError(format!(
                    "{name}: nothing ready for 60 s with {} of {total} tasks done",
                    done.load(Ordering::Acquire)
                ))));
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
            continue;
        }
        idle_since = None;
        stats.claim.push(t.elapsed());
        if completing == Completing::AtOnce {
            let calls = claimed.into_iter().map(|task| {
                let queue = queue.clone();
                tokio::spawn(async move {
                    let mut busy = 0;
                    loop {
                        let t = Instant::now();
                        match queue.complete(task.lease.attempt_id, None).await {
                            Ok(_) => break Ok((t.elapsed(), busy)),
                            Err(e) if is_busy(&e) => busy += 1,
                            Err(e) => break Err(BenchError(format!("complete: {e}"))),
                        }
                    }
                })
            });
            let calls: Vec<_> = calls.collect();
            for call in calls {
                let (took, busy) = call
                    .await
                    .map_err(|e| fail(BenchError(e.to_string())))?
                    .map_err(|e| fail(BenchError(format!("{name}: {e}"))))?;
                stats.busy += busy;
                stats.complete.push(took);
                stats.completed += 1;
                done.fetch_add(1, Ordering::AcqRel);
            }
            continue;
        }
        for task in claimed {
            loop {
                let t = Instant::now();
                match queue.complete(task.lease.attempt_id, None).await {
                    Ok(_) => {
                        stats.complete.push(t.elapsed());
                        break;
                    }
                    Err(e) if is_busy(&e) => stats.busy += 1,
                    Err(e) => return Err(fail(BenchError(format!("{name}: complete: {e}")))),
                }
            }
            stats.completed += 1;
            done.fetch_add(1, Ordering::AcqRel);
        }
    }
    Ok(())
}

/// The baseline's loop on one connection: claim up to `max`, complete each, one transaction per
/// operation, until `total` tasks have completed.
pub fn run_raw(raw: &mut RawQueue, max: u32, total: usize) -> Result<RunStats, BenchError> {
    let mut stats = RunStats::default();
    let started = Instant::now();
    while stats.completed < total {
        let t = Instant::now();
        let claimed = raw.claim("bench-baseline", max)?;
        if claimed.is_empty() {
            return Err(BenchError(format!(
                "the baseline found nothing ready with {} of {total} tasks done",
                stats.completed
            )));
        }
        stats.claim.push(t.elapsed());
        for task in claimed {
            let t = Instant::now();
            raw.complete(&task.attempt_id)?;
            stats.complete.push(t.elapsed());
            stats.completed += 1;
        }
    }
    stats.elapsed = started.elapsed();
    Ok(stats)
}
