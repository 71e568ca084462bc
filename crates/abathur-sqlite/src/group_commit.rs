//! Group commit: the queue operations of every caller in a process share write transactions.
//!
//! Every write of the process goes through the database's writer ([`super::writer`]), which
//! runs whatever waits in one `BEGIN IMMEDIATE` transaction, each operation in its own
//! savepoint, and commits once. What tells the two queue stores apart is how many of their
//! operations a transaction may hold:
//!
//! - [`GroupCommitQueueStore`] lets its operations share a transaction with up to
//!   [`GroupCommitConfig::max_group`] others: each caller gets its own outcome, as if it had
//!   run alone; an operation that fails is rolled back to its savepoint and does not poison
//!   the others; under light load a group is one operation (run without a savepoint) and
//!   nothing waits for a timer.
//! - [`QueueStoreImpl`] runs each of its operations in a transaction of its own (a group of
//!   one), committed before it answers.
//!
//! Reads (history, overview, pending, submission details) go straight to the pool; the prune
//! runs as batches of their own, each its own transaction: a group that held a batch would
//! hold the claims and completions waiting with it.

use std::sync::Arc;
use std::time::Duration;

use abathur_core::clock::Now;
use abathur_core::queue::{
    ClaimRequest, ClaimedTask, FailOutcome, Lease, NewTask, PendingTask, PriorityPolicy,
    PruneReport, PruneRequest, QueueError, QueueLimits, QueueOverview, QueueStore, ReapReport,
    Recorded, RetryPolicy, SubmissionDetails, Submitted, TaskEvent,
};
use async_trait::async_trait;
use serde_json::Value;
use sqlx::SqlitePool;
use uuid::Uuid;

use super::queue_store::QueueStoreImpl;
use super::writer::{Grouping, DEFAULT_MAX_GROUP};

/// The statements of this module, for the catalogue test: none, for its writes are the queue
/// store's ([`super::queue_store::STATEMENTS`]) run on the writer.
#[cfg(test)]
pub(crate) const STATEMENTS: &[(&str, &str)] = &[];

/// How the writer groups a store's operations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GroupCommitConfig {
    /// The most operations in one transaction (default 256): bounds how long the write lock
    /// is held, and so how long other processes wait for it.
    pub max_group: usize,
    /// How many of the store's operations may wait for the writer before callers wait to
    /// hand theirs over (default 4,096).
    pub queue_depth: usize,
}

impl Default for GroupCommitConfig {
    fn default() -> Self {
        Self {
            max_group: DEFAULT_MAX_GROUP,
            queue_depth: 4_096,
        }
    }
}

impl GroupCommitConfig {
    pub(crate) fn grouping(self) -> Grouping {
        Grouping::new(self.max_group, self.queue_depth)
    }
}

/// What the writer has done so far with a store's operations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GroupCommitStats {
    /// Transactions that held (or were to hold) at least one of the store's operations.
    pub groups: u64,
    /// The store's operations run in them.
    pub operations: u64,
}

/// A [`QueueStore`] whose writes share transactions; see the module's documentation.
///
/// It needs no runtime of its own: the writer is a thread, stopped when the database is
/// closed or every pool on it is dropped.
#[derive(Clone)]
pub struct GroupCommitQueueStore {
    inner: QueueStoreImpl,
    /// Prune batches: each a transaction of its own.
    direct: QueueStoreImpl,
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
        Self {
            inner: QueueStoreImpl::grouped(pool.clone(), Arc::new(config.grouping())),
            direct: QueueStoreImpl::new(pool),
        }
    }

    /// How many transactions held the store's operations and how many operations they held:
    /// the average group size is their ratio.
    pub fn stats(&self) -> GroupCommitStats {
        self.inner.stats()
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
        self.inner.submit(batch, limits, priority, actor, now).await
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
        self.inner.complete(attempt_id, result, priority, now).await
    }

    async fn fail(
        &self,
        attempt_id: Uuid,
        error: &str,
        retry: &RetryPolicy,
        priority: &PriorityPolicy,
        now: Now,
    ) -> Result<Recorded<FailOutcome>, QueueError> {
        self.inner
            .fail(attempt_id, error, retry, priority, now)
            .await
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
        self.inner.reap(retry, priority, now).await
    }

    async fn submission_details(&self, task_id: Uuid) -> Result<SubmissionDetails, QueueError> {
        self.direct.submission_details(task_id).await
    }

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
