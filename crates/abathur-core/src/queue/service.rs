//! [`TaskQueue`]: the queue as callers use it. It validates input, takes `now` from its clock,
//! and hands each operation to the store, which does it atomically.

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use uuid::Uuid;

use super::graph::{execution_plan, plan_batch};
use super::policy::{PriorityPolicy, QueueLimits, RetryPolicy};
use super::store::QueueStore;
use super::types::{
    ClaimRequest, ClaimedTask, FailOutcome, Lease, NewTask, PlanStep, PruneReport, PruneRequest,
    QueueError, QueueOverview, ReapReport, Recorded, TaskEvent,
};
use crate::clock::{Clock, SystemClock};
use crate::error::ValidationError;
use crate::models::{check_json_depth, check_no_nul, Task, TaskStatus};

/// Rows per statement when refreshing priorities.
const REFRESH_BATCH: u32 = 5_000;

/// Tasks per write transaction when pruning: small enough that a batch holds the write lock
/// for milliseconds (`docs/BENCHMARKS.md`, retention), so workers barely notice a prune.
pub const PRUNE_BATCH: u32 = 100;

/// The most tasks one claim may take: a bigger claim would hold the write lock long and
/// starve every other worker.
pub const MAX_CLAIM: u32 = 1_000;

/// The longest lease: a worker that needs longer heartbeats. A lease of years would leave a
/// dead worker's task stuck for as long.
pub const MAX_LEASE: Duration = Duration::from_secs(24 * 3600);

/// The task queue.
#[derive(Clone)]
pub struct TaskQueue {
    store: Arc<dyn QueueStore>,
    clock: Arc<dyn Clock>,
    limits: QueueLimits,
    retry: RetryPolicy,
    priority: PriorityPolicy,
}

impl std::fmt::Debug for TaskQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TaskQueue")
            .field("limits", &self.limits)
            .field("retry", &self.retry)
            .field("priority", &self.priority)
            .finish_non_exhaustive()
    }
}

impl TaskQueue {
    /// A queue over `store` with the system clock and default policies.
    pub fn new(store: Arc<dyn QueueStore>) -> Self {
        Self {
            store,
            clock: Arc::new(SystemClock),
            limits: QueueLimits::default(),
            retry: RetryPolicy::default(),
            priority: PriorityPolicy::default(),
        }
    }

    /// The same queue taking time from `clock`.
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// The same queue with other submission limits.
    pub fn with_limits(mut self, limits: QueueLimits) -> Self {
        self.limits = limits;
        self
    }

    /// The same queue with another retry policy.
    pub fn with_retry_policy(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    /// The same queue with another priority policy.
    pub fn with_priority_policy(mut self, priority: PriorityPolicy) -> Self {
        self.priority = priority;
        self
    }

    /// Submits one task; see [`TaskQueue::submit_batch`].
    ///
    /// # Errors
    /// As for [`TaskQueue::submit_batch`].
    pub async fn submit(&self, task: NewTask) -> Result<Task, QueueError> {
        let mut stored = self.submit_batch(vec![task]).await?;
        stored.pop().ok_or_else(|| {
            QueueError::Database(crate::error::DatabaseError::Other(
                "the store returned no task for a submission".into(),
            ))
        })
    }

    /// Submits a batch atomically: all of it or none. Members may depend on each other.
    ///
    /// # Errors
    /// A `Validation` error naming the field (summary, priority, ...), `SelfDependency`,
    /// `DuplicateTask`, `Cycle` with its path, `TooManyDependencies`, `UnknownDependency`,
    /// `UnknownReference`, `TooDeep`, or the store's errors. Nothing is written on any error.
    pub async fn submit_batch(&self, batch: Vec<NewTask>) -> Result<Vec<Task>, QueueError> {
        let now = self.clock.now();
        for task in &batch {
            if task.dependencies.contains(&task.id) {
                return Err(QueueError::SelfDependency { task: task.id });
            }
            task.to_task(now).validate()?;
        }
        let ordered = plan_batch(batch, &self.limits)?;
        let actor = ordered
            .first()
            .and_then(|t| t.created_by.clone())
            .unwrap_or_else(|| "submitter".to_string());
        self.store
            .submit(ordered, &self.limits, &self.priority, &actor, now)
            .await
    }

    /// Claims up to `max_tasks` of the most urgent ready tasks of these agent types (any type
    /// when empty) under a lease of `lease`.
    ///
    /// # Errors
    /// A `Validation` error for an empty worker id, a lease of zero or over [`MAX_LEASE`], or a
    /// `max_tasks` of zero or over [`MAX_CLAIM`].
    pub async fn claim(
        &self,
        worker_id: &str,
        agent_types: &[String],
        lease: Duration,
        max_tasks: u32,
    ) -> Result<Vec<ClaimedTask>, QueueError> {
        if worker_id.trim().is_empty() {
            return Err(ValidationError::new("worker_id", "must not be empty").into());
        }
        check_no_nul("worker_id", worker_id)?;
        check_lease(lease)?;
        if max_tasks == 0 || max_tasks > MAX_CLAIM {
            return Err(ValidationError::new(
                "max_tasks",
                format!("must be between 1 and {MAX_CLAIM}"),
            )
            .into());
        }
        let request = ClaimRequest {
            worker_id: worker_id.to_string(),
            agent_types: agent_types.to_vec(),
            lease,
            max_tasks,
        };
        self.store.claim(&request, self.clock.now()).await
    }

    /// Extends a lease by `lease` from now.
    ///
    /// # Errors
    /// `AttemptNotFound`, `LeaseLost`, `Cancelled`, or a `Validation` error for a zero lease.
    pub async fn heartbeat(&self, attempt_id: Uuid, lease: Duration) -> Result<Lease, QueueError> {
        check_lease(lease)?;
        self.store
            .heartbeat(attempt_id, lease, self.clock.now())
            .await
    }

    /// Completes the leased task with `result`; returns the dependents made ready. The same
    /// call sent again answers with the recorded outcome, marked as a repeat, and changes
    /// nothing ([`QueueStore::complete`]).
    ///
    /// # Errors
    /// `AttemptNotFound`, `LeaseLost` (also for a different result on a completed attempt),
    /// `Cancelled`, or a `Validation` error for a result nested too deep.
    pub async fn complete(
        &self,
        attempt_id: Uuid,
        result: Option<Value>,
    ) -> Result<Recorded<Vec<Uuid>>, QueueError> {
        if let Some(result) = &result {
            check_json_depth("result", result)?;
        }
        self.store
            .complete(attempt_id, result, &self.priority, self.clock.now())
            .await
    }

    /// Fails the leased attempt with `error`. The same call sent again answers with the
    /// recorded outcome, marked as a repeat, and changes nothing ([`QueueStore::fail`]).
    ///
    /// # Errors
    /// `AttemptNotFound`, `LeaseLost` (also for a different error on a failed attempt),
    /// `Cancelled`, or a `Validation` error for an error message with a NUL.
    pub async fn fail(
        &self,
        attempt_id: Uuid,
        error: &str,
    ) -> Result<Recorded<FailOutcome>, QueueError> {
        check_no_nul("error", error)?;
        self.store
            .fail(attempt_id, error, &self.retry, self.clock.now())
            .await
    }

    /// Gives the leased task back unfinished: it is ready again at once, and no retry is
    /// counted. For a worker that is shutting down; a failure of the task itself goes through
    /// [`TaskQueue::fail`].
    ///
    /// # Errors
    /// `AttemptNotFound`, `LeaseLost`, `Cancelled`, or a `Validation` error for a reason with a NUL.
    pub async fn release(&self, attempt_id: Uuid, reason: &str) -> Result<(), QueueError> {
        check_no_nul("reason", reason)?;
        self.store
            .release(attempt_id, reason, self.clock.now())
            .await
    }

    /// Cancels a task with its dependents and children; returns every task cancelled.
    ///
    /// # Errors
    /// `TaskNotFound`, `InvalidTransition` for a task that is already terminal, or a
    /// `Validation` error for a blank actor.
    pub async fn cancel(&self, task_id: Uuid, actor: &str) -> Result<Vec<Uuid>, QueueError> {
        check_actor(actor)?;
        self.store.cancel(task_id, actor, self.clock.now()).await
    }

    /// Retries a failed task; returns its dependents put back to blocked.
    ///
    /// # Errors
    /// `TaskNotFound`, `InvalidTransition` for a task that is not failed, or a `Validation`
    /// error for a blank actor.
    pub async fn retry(&self, task_id: Uuid, actor: &str) -> Result<Vec<Uuid>, QueueError> {
        check_actor(actor)?;
        self.store
            .retry(task_id, actor, &self.priority, self.clock.now())
            .await
    }

    /// Recovers tasks of dead workers and tasks past their timeout.
    ///
    /// # Errors
    /// Only the store's failures.
    pub async fn reap(&self) -> Result<ReapReport, QueueError> {
        self.store.reap(&self.retry, self.clock.now()).await
    }

    /// Recomputes calculated priorities for ageing and deadlines.
    ///
    /// # Errors
    /// Only the store's failures.
    pub async fn refresh_priorities(&self) -> Result<u64, QueueError> {
        self.store
            .refresh_priorities(&self.priority, REFRESH_BATCH, self.clock.now())
            .await
    }

    /// Removes the tasks in `statuses` (every terminal status when empty) that finished more
    /// than `older_than` ago, with their attempts and events, in batches of [`PRUNE_BATCH`];
    /// see [`QueueStore::prune`] for the tasks it keeps.
    ///
    /// # Errors
    /// A `Validation` error, with nothing removed, for a zero `older_than`, one that reaches
    /// before the first representable time, or a status that is not terminal; the store's
    /// failures.
    pub async fn prune(
        &self,
        older_than: Duration,
        statuses: &[TaskStatus],
    ) -> Result<PruneReport, QueueError> {
        let request = prune_request(older_than, statuses, self.clock.now())?;
        self.store.prune(&request).await
    }

    /// A task's status changes, oldest first.
    ///
    /// # Errors
    /// `TaskNotFound`.
    pub async fn history(&self, task_id: Uuid) -> Result<Vec<TaskEvent>, QueueError> {
        self.store.history(task_id).await
    }

    /// The queue at a glance: counts per status, the oldest ready task, and up to
    /// `running_limit` running attempts, the soonest to expire first.
    ///
    /// # Errors
    /// Only the store's failures.
    pub async fn overview(&self, running_limit: u32) -> Result<QueueOverview, QueueError> {
        self.store.overview(running_limit, self.clock.now()).await
    }

    /// The unfinished part of the DAG in the order it can run: stage by stage, each task after
    /// everything it waits for. At most `limit` tasks are planned, the most urgent first; a
    /// task whose dependencies fall outside the limit is placed as if they had finished.
    ///
    /// # Errors
    /// A `Validation` error for a zero limit; the store's failures.
    pub async fn execution_plan(&self, limit: u32) -> Result<Vec<PlanStep>, QueueError> {
        if limit == 0 {
            return Err(ValidationError::new("limit", "must be at least 1").into());
        }
        Ok(execution_plan(self.store.pending(limit).await?))
    }
}

/// What [`TaskQueue::prune`] asks the store for, checked.
fn prune_request(
    older_than: Duration,
    statuses: &[TaskStatus],
    now: chrono::DateTime<chrono::Utc>,
) -> Result<PruneRequest, QueueError> {
    if older_than.is_zero() {
        return Err(ValidationError::new("older_than", "must be longer than zero").into());
    }
    let finished_before = chrono::Duration::from_std(older_than)
        .ok()
        .and_then(|by| now.checked_sub_signed(by))
        .filter(|t| crate::timestamp::check("older_than", t).is_ok())
        .ok_or_else(|| {
            ValidationError::new(
                "older_than",
                "reaches before the earliest time the queue stores",
            )
        })?;
    if let Some(status) = statuses.iter().find(|s| !s.is_terminal()) {
        return Err(ValidationError::new(
            "status",
            format!(
                "{status} is not a finished status; prune takes completed, failed or cancelled"
            ),
        )
        .into());
    }
    let statuses = if statuses.is_empty() {
        vec![
            TaskStatus::Completed,
            TaskStatus::Failed,
            TaskStatus::Cancelled,
        ]
    } else {
        statuses.to_vec()
    };
    Ok(PruneRequest {
        finished_before,
        statuses,
        batch_size: PRUNE_BATCH,
    })
}

/// A lease is longer than zero and at most [`MAX_LEASE`].
fn check_lease(lease: Duration) -> Result<(), QueueError> {
    if lease.is_zero() || lease > MAX_LEASE {
        return Err(ValidationError::new(
            "lease",
            format!(
                "must be longer than zero and at most {} hours",
                MAX_LEASE.as_secs() / 3600
            ),
        )
        .into());
    }
    Ok(())
}

/// The person or process named in the history must be named.
fn check_actor(actor: &str) -> Result<(), QueueError> {
    if actor.trim().is_empty() {
        return Err(ValidationError::new("actor", "must not be empty").into());
    }
    check_no_nul("actor", actor)?;
    Ok(())
}
