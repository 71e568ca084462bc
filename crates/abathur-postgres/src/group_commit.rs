//! Group commit on PostgreSQL: the completions of every caller in a process share
//! transactions and statements.
//!
//! A completion is the queue's busiest write: every task ends with one. On PostgreSQL its cost
//! is mostly the round trips (a completion alone is six, eight when it has blocked
//! dependents) and the commit's wait for the disk. [`PgGroupCommitQueueStore`] hands each `complete` to a
//! group: while one group is being written, the completions that arrive wait, and the next
//! group takes all of them (up to [`PgGroupCommitConfig::max_group`]) in one transaction, with
//! one statement for every attempt closed, task completed and history row, and one release of
//! all their dependents. Each caller still gets its own answer, as if its completion had run
//! alone: an attempt that cannot complete gets its error and changes nothing; a group that
//! cannot be written because of one member (a result the server refuses, a task changed
//! outside the queue) is completed again one by one, so that only the completion at fault
//! fails; a group that fails for no member's sake (the pool, the connection, the server) gives
//! every member that error at once.
//!
//! Nothing waits for a timer: under light load a group is one completion, written at once.
//! Every other operation is [`PgQueueStore`]'s, one transaction each. The store also notifies
//! (`NOTIFY abathur_changes`) when a backoff (of a failure or a reap) or a `run_after` time it
//! set has ended, so that idle workers take the task then rather than at their next poll.

use std::collections::{HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use abathur_core::clock::Now;
use abathur_core::error::DatabaseError;
use abathur_core::queue::{
    ClaimRequest, ClaimedTask, FailOutcome, Lease, NewTask, PendingTask, PriorityPolicy,
    PruneReport, PruneRequest, QueueError, QueueLimits, QueueOverview, QueueStore, ReapReport,
    Recorded, RetryPolicy, SubmissionDetails, Submitted, TaskEvent,
};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::PgPool;
use tokio::sync::oneshot;
use uuid::Uuid;

use crate::queue_store::{Completed, Completion, PgQueueStore};
use crate::wake::Alarm;

/// How a [`PgGroupCommitQueueStore`] groups completions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PgGroupCommitConfig {
    /// The most completions in one transaction (default 256): bounds how many rows one
    /// transaction locks, and so how long others wait for them.
    pub max_group: usize,
    /// How many groups may be written at once, each in a transaction on a connection of its
    /// own (default 2), so that completions keep moving while one group waits for a lock or
    /// its commit. A completion of an attempt that another writer is writing waits for it.
    pub writers: usize,
}

impl Default for PgGroupCommitConfig {
    fn default() -> Self {
        Self {
            max_group: 256,
            writers: 2,
        }
    }
}

/// What a store has done so far with its completions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PgGroupCommitStats {
    /// Groups written (each one transaction, or one per member when it was completed again
    /// one by one).
    pub groups: u64,
    /// Completions in them.
    pub operations: u64,
    /// Completions waiting for a group now.
    pub waiting: usize,
}

/// A [`QueueStore`] on PostgreSQL whose completions share transactions; see the module's
/// documentation. It needs a tokio runtime when `complete` is called, not when it is made.
#[derive(Clone)]
pub struct PgGroupCommitQueueStore {
    inner: PgQueueStore,
    shared: Arc<Shared>,
    /// Notifies when the backoffs and `run_after` times this store set have ended.
    alarm: Alarm,
}

impl std::fmt::Debug for PgGroupCommitQueueStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgGroupCommitQueueStore")
            .field("config", &self.shared.config)
            .finish_non_exhaustive()
    }
}

/// A completion waiting for its group.
struct Waiting {
    completion: Completion,
    priority: PriorityPolicy,
    now: Now,
    answer: oneshot::Sender<Completed>,
}

#[derive(Default)]
struct Queue {
    waiting: VecDeque<Waiting>,
    /// Writers running: each takes groups until none waits.
    writers: usize,
    /// The attempts of the groups being written. A completion of one of them waits until that
    /// group is done, so that a second send is answered after the first, as a repeat.
    writing: HashSet<Uuid>,
}

struct Shared {
    config: PgGroupCommitConfig,
    queue: Mutex<Queue>,
    groups: AtomicU64,
    operations: AtomicU64,
}

impl PgGroupCommitQueueStore {
    /// A store on `pool` (whose database is migrated) with the default grouping.
    pub fn new(pool: PgPool) -> Self {
        Self::with_config(pool, PgGroupCommitConfig::default())
    }

    /// A store on `pool` grouping as `config` says (a `max_group` or `writers` of 0 counts as
    /// 1).
    pub fn with_config(pool: PgPool, config: PgGroupCommitConfig) -> Self {
        let config = PgGroupCommitConfig {
            max_group: config.max_group.max(1),
            writers: config.writers.max(1),
        };
        Self {
            inner: PgQueueStore::new(pool.clone()),
            alarm: Alarm::new(pool),
            shared: Arc::new(Shared {
                config,
                queue: Mutex::new(Queue::default()),
                groups: AtomicU64::new(0),
                operations: AtomicU64::new(0),
            }),
        }
    }

    /// How many groups were written and how many completions they held (the average group
    /// size is their ratio), and how many wait now.
    pub fn stats(&self) -> PgGroupCommitStats {
        PgGroupCommitStats {
            groups: self.shared.groups.load(Ordering::Relaxed),
            operations: self.shared.operations.load(Ordering::Relaxed),
            waiting: self.shared.lock().waiting.len(),
        }
    }
}

impl PgGroupCommitQueueStore {
    /// Has the store's alarm notify when `times` come (in a task of its own: the caller does
    /// not wait for it).
    fn ring_at(&self, times: Vec<DateTime<Utc>>) {
        if times.is_empty() {
            return;
        }
        let alarm = self.alarm.clone();
        tokio::spawn(async move { alarm.at(times).await });
    }
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, Queue> {
        // The queue is only ever pushed to and popped from: a panic elsewhere leaves it whole.
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The next group, once the writer's previous group (`done`) is out of the way: the oldest
    /// waiting completion of an attempt no other writer is writing, and those after it that
    /// share its policy and time and name other attempts not being written. `None`, and this
    /// writer stops, when no such completion waits.
    fn next_group(&self, done: &[Uuid]) -> Option<Vec<Waiting>> {
        let mut queue = self.lock();
        for attempt in done {
            queue.writing.remove(attempt);
        }
        let mut group: Vec<Waiting> = Vec::new();
        let mut kept = VecDeque::new();
        while group.len() < self.config.max_group {
            let Some(next) = queue.waiting.pop_front() else {
                break;
            };
            let joins = !queue.writing.contains(&next.completion.0)
                && group
                    .first()
                    .is_none_or(|first| next.priority == first.priority && next.now == first.now);
            if joins {
                queue.writing.insert(next.completion.0);
                group.push(next);
            } else {
                kept.push_back(next);
            }
        }
        // What did not join stays first in line, in its order.
        while let Some(back) = kept.pop_back() {
            queue.waiting.push_front(back);
        }
        if group.is_empty() {
            queue.writers -= 1;
            return None;
        }
        Some(group)
    }
}

/// A running writer's place among [`PgGroupCommitConfig::writers`], taken before the writer is
/// spawned. The writer gives it back when it finds nothing to write; should the writer never
/// run or stop part-way (a panic, a runtime shutting down), its drop gives it back, and the
/// last writer to go that way fails what still waits (each caller hears that its completion
/// may not have been written, and may send it again) rather than leave it waiting for ever.
struct Slot {
    store: PgQueueStore,
    shared: Arc<Shared>,
    /// The attempts of the group being written.
    writing: Vec<Uuid>,
    given_back: bool,
}

impl Drop for Slot {
    fn drop(&mut self) {
        if self.given_back {
            return;
        }
        let stranded = {
            let mut queue = self.shared.lock();
            for attempt in &self.writing {
                queue.writing.remove(attempt);
            }
            queue.writers -= 1;
            if queue.writers == 0 {
                std::mem::take(&mut queue.waiting)
            } else {
                VecDeque::new()
            }
        };
        // Dropping each waiting completion's sender answers its caller with an error.
        drop(stranded);
    }
}

/// Writes groups until none waits.
async fn write_groups(mut slot: Slot) {
    loop {
        let done = std::mem::take(&mut slot.writing);
        let Some(group) = slot.shared.next_group(&done) else {
            slot.given_back = true;
            return;
        };
        let (priority, now) = (group[0].priority, group[0].now);
        let mut items = Vec::with_capacity(group.len());
        let mut answers = Vec::with_capacity(group.len());
        for waiting in group {
            slot.writing.push(waiting.completion.0);
            items.push(waiting.completion);
            answers.push(Some(waiting.answer));
        }
        slot.shared.groups.fetch_add(1, Ordering::Relaxed);
        slot.shared
            .operations
            .fetch_add(items.len() as u64, Ordering::Relaxed);
        slot.store
            .complete_group(items, &priority, now, |i, outcome| {
                if let Some(answer) = answers.get_mut(i).and_then(Option::take) {
                    // A caller that stopped waiting has dropped its receiver; its completion
                    // stands.
                    let _ = answer.send(outcome);
                }
            })
            .await;
    }
}

#[async_trait]
impl QueueStore for PgGroupCommitQueueStore {
    async fn submit(
        &self,
        batch: Vec<NewTask>,
        limits: &QueueLimits,
        priority: &PriorityPolicy,
        actor: &str,
        now: Now,
    ) -> Result<Vec<Submitted>, QueueError> {
        let held: Vec<DateTime<Utc>> = batch.iter().filter_map(|t| t.run_after).collect();
        let submitted = self
            .inner
            .submit(batch, limits, priority, actor, now)
            .await?;
        self.ring_at(held);
        Ok(submitted)
    }

    async fn submission_details(&self, task_id: Uuid) -> Result<SubmissionDetails, QueueError> {
        self.inner.submission_details(task_id).await
    }

    async fn claim(
        &self,
        request: &ClaimRequest,
        priority: &PriorityPolicy,
        now: Now,
    ) -> Result<Vec<ClaimedTask>, QueueError> {
        self.inner.claim(request, priority, now).await
    }

    async fn heartbeat(
        &self,
        attempt_id: Uuid,
        lease: Duration,
        now: Now,
    ) -> Result<Lease, QueueError> {
        self.inner.heartbeat(attempt_id, lease, now).await
    }

    async fn complete(
        &self,
        attempt_id: Uuid,
        result: Option<Value>,
        priority: &PriorityPolicy,
        now: Now,
    ) -> Result<Recorded<Vec<Uuid>>, QueueError> {
        let (answer, answered) = oneshot::channel();
        let start_writer = {
            let mut queue = self.shared.lock();
            queue.waiting.push_back(Waiting {
                completion: (attempt_id, result),
                priority: *priority,
                now,
                answer,
            });
            let start = queue.writers < self.shared.config.writers;
            if start {
                queue.writers += 1;
            }
            start
        };
        if start_writer {
            // A task of its own, so that a caller that stops waiting never strands the
            // completions grouped with its own.
            tokio::spawn(write_groups(Slot {
                store: self.inner.clone(),
                shared: self.shared.clone(),
                writing: Vec::new(),
                given_back: false,
            }));
        }
        answered.await.unwrap_or_else(|_| {
            Err(QueueError::Database(DatabaseError::Connection(
                "the completion's writer stopped before it answered; the completion may have \
                 taken effect, and sending it again is safe"
                    .to_string(),
            )))
        })
    }

    async fn fail(
        &self,
        attempt_id: Uuid,
        error: &str,
        retry: &RetryPolicy,
        priority: &PriorityPolicy,
        now: Now,
    ) -> Result<Recorded<FailOutcome>, QueueError> {
        let recorded = self
            .inner
            .fail(attempt_id, error, retry, priority, now)
            .await?;
        // A repeat too: it is what follows a failure whose answer was lost, and whose alarm
        // may never have been set.
        if let FailOutcome::Retrying { run_after, .. } = &recorded.outcome {
            self.ring_at(vec![*run_after]);
        }
        Ok(recorded)
    }

    async fn release(
        &self,
        attempt_id: Uuid,
        reason: &str,
        priority: &PriorityPolicy,
        now: Now,
    ) -> Result<(), QueueError> {
        self.inner.release(attempt_id, reason, priority, now).await
    }

    async fn cancel(&self, task_id: Uuid, actor: &str, now: Now) -> Result<Vec<Uuid>, QueueError> {
        self.inner.cancel(task_id, actor, now).await
    }

    async fn retry(
        &self,
        task_id: Uuid,
        actor: &str,
        priority: &PriorityPolicy,
        now: Now,
    ) -> Result<Vec<Uuid>, QueueError> {
        self.inner.retry(task_id, actor, priority, now).await
    }

    async fn reap(
        &self,
        retry: &RetryPolicy,
        priority: &PriorityPolicy,
        now: Now,
    ) -> Result<ReapReport, QueueError> {
        let report = self.inner.reap(retry, priority, now).await?;
        let recovered: Vec<Uuid> = report
            .lost
            .iter()
            .chain(&report.timed_out)
            .copied()
            .collect();
        if !recovered.is_empty() {
            let alarm = self.alarm.clone();
            tokio::spawn(async move { alarm.for_tasks(recovered).await });
        }
        Ok(report)
    }

    async fn prune(&self, request: &PruneRequest) -> Result<PruneReport, QueueError> {
        self.inner.prune(request).await
    }

    async fn history(&self, task_id: Uuid) -> Result<Vec<TaskEvent>, QueueError> {
        self.inner.history(task_id).await
    }

    async fn overview(&self, running_limit: u32, now: Now) -> Result<QueueOverview, QueueError> {
        self.inner.overview(running_limit, now).await
    }

    async fn pending(&self, limit: u32) -> Result<Vec<PendingTask>, QueueError> {
        self.inner.pending(limit).await
    }
}
