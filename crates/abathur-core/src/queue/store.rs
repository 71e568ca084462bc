//! The queue's port: each method is one atomic operation, done by the adapter in one
//! transaction, so that no decision is ever taken on a stale read.

use std::time::Duration;

use async_trait::async_trait;
use serde_json::Value;
use uuid::Uuid;

use crate::clock::Now;

use super::policy::{PriorityPolicy, QueueLimits, RetryPolicy};
use super::types::{
    ClaimRequest, ClaimedTask, FailOutcome, Lease, NewTask, PendingTask, PruneReport, PruneRequest,
    QueueError, QueueOverview, ReapReport, Recorded, SubmissionDetails, Submitted, TaskEvent,
};

/// Where the queue keeps tasks, leases and history. Every method is atomic: it takes effect
/// whole or not at all, and concurrent callers (in any process) never both win.
#[async_trait]
pub trait QueueStore: Send + Sync {
    /// Stores a batch that [`super::plan_batch`] ordered (dependencies first). Sets each
    /// task's depth (1 + its deepest dependency's), status (ready when every dependency is
    /// completed, else blocked), calculated priority and, when ready, its claim key
    /// ([`PriorityPolicy::key`], from when it becomes claimable), and records a submission
    /// event.
    ///
    /// A member whose `idempotency_key` names a stored task is not stored again: that task is
    /// returned (`existing`), and every other member that names the member as a dependency or
    /// parent names the stored task instead. The rest of the batch is stored as usual. A
    /// member's `run_after` holds it back from claims until then, also once it is ready.
    /// Returns one entry per member, in the batch's order.
    ///
    /// # Errors
    /// `UnknownDependency` for a dependency neither stored nor in the batch; `TooDeep` past
    /// `limits.max_depth`; `UnknownReference` for an unknown parent task or session;
    /// `DuplicateTask` for an id already stored; `DuplicateIdempotencyKey` when two members
    /// carry one key; `IdempotencyConflict` when a key names a stored task whose
    /// [`NewTask::content_hash`] (with references named by stored id) differs from the
    /// member's. Nothing is written on any error.
    async fn submit(
        &self,
        batch: Vec<NewTask>,
        limits: &QueueLimits,
        priority: &PriorityPolicy,
        actor: &str,
        now: Now,
    ) -> Result<Vec<Submitted>, QueueError>;

    /// The idempotency key a task was submitted with, and the time before which it is not
    /// claimable, if any.
    ///
    /// # Errors
    /// `TaskNotFound` when no task has this id.
    async fn submission_details(&self, task_id: Uuid) -> Result<SubmissionDetails, QueueError>;

    /// Moves up to `request.max_tasks` of the most urgent ready tasks of the requested agent
    /// types whose run-after time has come to running, opening one attempt (lease) each. The
    /// most urgent have the highest [`PriorityPolicy::key`] (as stored when each became ready)
    /// plus [`PriorityPolicy::urgency`] at `now`; ties go to the earliest submitted, then the
    /// lowest id.
    ///
    /// # Errors
    /// Only the store's own failures; an empty queue is an empty list.
    async fn claim(
        &self,
        request: &ClaimRequest,
        priority: &PriorityPolicy,
        now: Now,
    ) -> Result<Vec<ClaimedTask>, QueueError>;

    /// Extends a live lease to `now + lease`.
    ///
    /// # Errors
    /// `AttemptNotFound` when no attempt has the id; `LeaseLost` when the attempt ended
    /// (completed, failed, or taken back by the reaper); `Cancelled` when its task was
    /// cancelled. A lease past its expiry that no reaper has taken back yet is still honoured:
    /// the task has not been handed to anyone else.
    async fn heartbeat(
        &self,
        attempt_id: Uuid,
        lease: Duration,
        now: Now,
    ) -> Result<Lease, QueueError>;

    /// Completes the attempt's task with `result`, and makes ready every dependent whose
    /// dependencies are now all completed. Returns the ids made ready.
    ///
    /// Repeatable: when the attempt already completed with a result equal to `result` (as
    /// JSON values; both absent is equal), nothing is written and the answer is
    /// [`Recorded::repeat`] of the dependents that call made ready and are still recorded as
    /// made ready by it (a dependent since pruned is not listed).
    ///
    /// # Errors
    /// `AttemptNotFound` when no attempt has the id (or its task was pruned); `Cancelled` when
    /// its task was cancelled; `LeaseLost` when the attempt ended any other way: failed, lost,
    /// timed out, released, or completed with a different result. Nothing changes on any
    /// error.
    async fn complete(
        &self,
        attempt_id: Uuid,
        result: Option<Value>,
        priority: &PriorityPolicy,
        now: Now,
    ) -> Result<Recorded<Vec<Uuid>>, QueueError>;

    /// Records a failed attempt. Under `max_retries` the task goes back to ready after a
    /// backoff; when retries are exhausted it fails, and its transitive dependents fail with
    /// it, naming the root failure.
    ///
    /// Repeatable: when the attempt already failed with exactly this `error` text, nothing is
    /// written and the answer is [`Recorded::repeat`] of what that call decided: `Retrying`
    /// with the same retry count and run-after time, or `Failed` listing the dependents that
    /// failed with it and are still failed from it. This holds even when the task was claimed
    /// again since: the repeat answers for its own attempt and never touches the new one.
    ///
    /// # Errors
    /// `AttemptNotFound` when no attempt has the id (or its task was pruned); `Cancelled` when
    /// its task was cancelled; `LeaseLost` when the attempt ended any other way: completed,
    /// lost, timed out, released, failed with a different error, or failed before the version
    /// that records what a failure decided. Nothing changes on any error.
    async fn fail(
        &self,
        attempt_id: Uuid,
        error: &str,
        retry: &RetryPolicy,
        priority: &PriorityPolicy,
        now: Now,
    ) -> Result<Recorded<FailOutcome>, QueueError>;

    /// Gives a running task back unfinished: ends the attempt as released with `reason`, and
    /// puts the task back to ready, claimable at once, without counting a retry. For a worker
    /// that stops before its command finished through no fault of the task (it is shutting
    /// down), so that restarting workers never uses up a task's retries.
    ///
    /// # Errors
    /// `AttemptNotFound`, `LeaseLost` or `Cancelled` as for [`QueueStore::heartbeat`]; nothing changes.
    async fn release(
        &self,
        attempt_id: Uuid,
        reason: &str,
        priority: &PriorityPolicy,
        now: Now,
    ) -> Result<(), QueueError>;

    /// Cancels a task, its transitive dependents and its children (transitively) that are not
    /// terminal; a running one's lease is revoked. Returns every task cancelled.
    ///
    /// # Errors
    /// `TaskNotFound`; `InvalidTransition` when the task is completed (or already cancelled or
    /// failed).
    async fn cancel(&self, task_id: Uuid, actor: &str, now: Now) -> Result<Vec<Uuid>, QueueError>;

    /// Puts a failed task back to ready (or blocked, if a dependency is not completed) with its
    /// retry count reset. Its failed dependents (which failed by cascade: they never ran) go
    /// back to blocked, shallowest first, each once none of its own dependencies is failed or
    /// cancelled any more. Returns those dependents.
    ///
    /// # Errors
    /// `TaskNotFound`; `InvalidTransition` when the task is not failed.
    async fn retry(
        &self,
        task_id: Uuid,
        actor: &str,
        priority: &PriorityPolicy,
        now: Now,
    ) -> Result<Vec<Uuid>, QueueError>;

    /// Recovers running tasks whose lease expired (the attempt is lost) or that ran past their
    /// timeout (timed out); each follows the fail path. Safe to run from many processes at
    /// once: each task is recovered once.
    ///
    /// # Errors
    /// Only the store's own failures.
    async fn reap(
        &self,
        retry: &RetryPolicy,
        priority: &PriorityPolicy,
        now: Now,
    ) -> Result<ReapReport, QueueError>;

    /// Removes finished tasks: those in one of `request.statuses` that finished before
    /// `request.finished_before`, with their attempts, events, dependency edges and schedule,
    /// in write transactions of at most `request.batch_size` tasks each, oldest first, so the
    /// write lock is never held for long. A task is kept while it is needed:
    ///
    /// - a completed task while one of its dependents is unfinished (the dependent may still
    ///   read its result); once gone, its dependents count it as completed, since only an
    ///   unfinished dependency can hold a task back;
    /// - a failed or cancelled task while any task depends on it, so that a dependent failed
    ///   or cancelled with it can never be retried into running without it;
    /// - a parent while one of its children is unfinished. A child of a removed parent keeps
    ///   no parent.
    ///
    /// A task kept for these reasons goes in a later prune, once they no longer hold.
    ///
    /// # Errors
    /// A `Validation` error for a status that is not terminal or a batch size of zero, with
    /// nothing removed; the store's own failures, after which the batches already committed
    /// stay removed and the rest is kept.
    async fn prune(&self, request: &PruneRequest) -> Result<PruneReport, QueueError>;

    /// Every status change of a task, oldest first.
    ///
    /// # Errors
    /// `TaskNotFound` when no task has this id.
    async fn history(&self, task_id: Uuid) -> Result<Vec<TaskEvent>, QueueError>;

    /// Counts per status, the oldest ready task, and up to `running_limit` open attempts, the
    /// soonest to expire first, read in one snapshot.
    ///
    /// # Errors
    /// Only the store's own failures.
    async fn overview(&self, running_limit: u32, now: Now) -> Result<QueueOverview, QueueError>;

    /// Every task that is not completed, failed or cancelled, with the dependencies it still
    /// waits for; at most `limit` tasks, by calculated priority (the priority at which each
    /// last became ready, without the ageing and deadline urgency a claim adds since).
    ///
    /// # Errors
    /// Only the store's own failures.
    async fn pending(&self, limit: u32) -> Result<Vec<PendingTask>, QueueError>;
}
