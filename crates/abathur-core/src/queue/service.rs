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
    QueueError, QueueOverview, ReapReport, Recorded, SubmissionDetails, Submitted, TaskEvent,
};
use crate::clock::{Clock, SystemClock};
use crate::error::ValidationError;
use crate::limits::{MAX_ERROR_BYTES, MAX_TASK_JSON_BYTES};
use crate::models::{check_json, check_name, check_text, Task, TaskStatus};

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
        Ok(self.submit_keyed(task).await?.task)
    }

    /// Submits one task and says whether its idempotency key named a task already stored;
    /// see [`TaskQueue::submit_batch_keyed`].
    ///
    /// # Errors
    /// As for [`TaskQueue::submit_batch_keyed`].
    pub async fn submit_keyed(&self, task: NewTask) -> Result<Submitted, QueueError> {
        let mut stored = self.submit_batch_keyed(vec![task]).await?;
        stored.pop().ok_or_else(|| {
            QueueError::Database(crate::error::DatabaseError::Other(
                "the store returned no task for a submission".into(),
            ))
        })
    }

    /// Submits a batch atomically: all of it or none. Members may depend on each other.
    /// Returns the stored tasks, dependencies first; see [`TaskQueue::submit_batch_keyed`]
    /// for members with an idempotency key.
    ///
    /// # Errors
    /// As for [`TaskQueue::submit_batch_keyed`].
    pub async fn submit_batch(&self, batch: Vec<NewTask>) -> Result<Vec<Task>, QueueError> {
        Ok(self
            .submit_batch_keyed(batch)
            .await?
            .into_iter()
            .map(|s| s.task)
            .collect())
    }

    /// Submits a batch atomically: all of it or none. Members may depend on each other. A
    /// member whose idempotency key was already used is not stored again: its entry is the
    /// stored task, marked `existing`, and the other members' references to it name that
    /// task. One entry per member, dependencies first.
    ///
    /// # Errors
    /// A `Validation` error naming the field (summary, priority, a deadline that is not in the
    /// future, idempotency_key, run_after, ...), `SelfDependency`, `DuplicateTask`, `Cycle` with its path, `TooManyDependencies`,
    /// `UnknownDependency`, `UnknownReference`, `TooDeep`, `DuplicateIdempotencyKey`,
    /// `IdempotencyConflict`, or the store's errors. Nothing is written on any error.
    pub async fn submit_batch_keyed(
        &self,
        batch: Vec<NewTask>,
    ) -> Result<Vec<Submitted>, QueueError> {
        let now = self.clock.now();
        for task in &batch {
            if task.dependencies.contains(&task.id) {
                return Err(QueueError::SelfDependency { task: task.id });
            }
            task.validate(now)?;
            check_deadline(task, now)?;
        }
        let ordered = plan_batch(batch, &self.limits)?;
        let actor = ordered
            .first()
            .and_then(|t| t.created_by.clone())
            .unwrap_or_else(|| "submitter".to_string());
        self.store
            .submit(
                ordered,
                &self.limits,
                &self.priority,
                &actor,
                self.clock.store_time(),
            )
            .await
    }

    /// The idempotency key a task was submitted with, and the time before which it is not
    /// claimable, if that time is still to come.
    ///
    /// # Errors
    /// `TaskNotFound`; the store's failures.
    pub async fn submission_details(&self, task_id: Uuid) -> Result<SubmissionDetails, QueueError> {
        let mut details = self.store.submission_details(task_id).await?;
        // A time already past holds nothing back; the store keeps it until the next claim.
        let now = self.clock.now();
        details.run_after = details.run_after.filter(|t| *t > now);
        Ok(details)
    }

    /// Claims up to `max_tasks` of the most urgent ready tasks of these agent types (any type
    /// when empty) under a lease of `lease`.
    ///
    /// # Errors
    /// A `Validation` error when the request breaks a rule of [`check_claim`].
    pub async fn claim(
        &self,
        worker_id: &str,
        agent_types: &[String],
        lease: Duration,
        max_tasks: u32,
    ) -> Result<Vec<ClaimedTask>, QueueError> {
        let request = ClaimRequest {
            worker_id: worker_id.to_string(),
            agent_types: agent_types.to_vec(),
            lease,
            max_tasks,
        };
        check_claim(&request)?;
        self.store
            .claim(&request, &self.priority, self.clock.store_time())
            .await
    }

    /// Extends a lease by `lease` from now.
    ///
    /// # Errors
    /// `AttemptNotFound`, `LeaseLost`, `Cancelled`, or a `Validation` error for a zero lease.
    pub async fn heartbeat(&self, attempt_id: Uuid, lease: Duration) -> Result<Lease, QueueError> {
        check_lease(lease)?;
        self.store
            .heartbeat(attempt_id, lease, self.clock.store_time())
            .await
    }

    /// Completes the leased task with `result`; returns the dependents made ready. The same
    /// call sent again answers with the recorded outcome, marked as a repeat, and changes
    /// nothing ([`QueueStore::complete`]).
    ///
    /// # Errors
    /// `AttemptNotFound`, `LeaseLost` (also for a different result on a completed attempt),
    /// `Cancelled`, or a `Validation` error for a result over [`MAX_TASK_JSON_BYTES`] or
    /// nested too deep.
    pub async fn complete(
        &self,
        attempt_id: Uuid,
        result: Option<Value>,
    ) -> Result<Recorded<Vec<Uuid>>, QueueError> {
        if let Some(result) = &result {
            check_json("result", result, MAX_TASK_JSON_BYTES)?;
        }
        self.store
            .complete(attempt_id, result, &self.priority, self.clock.store_time())
            .await
    }

    /// Fails the leased attempt with `error`. The same call sent again answers with the
    /// recorded outcome, marked as a repeat, and changes nothing ([`QueueStore::fail`]).
    ///
    /// # Errors
    /// `AttemptNotFound`, `LeaseLost` (also for a different error on a failed attempt),
    /// `Cancelled`, or a `Validation` error for an error message with a NUL or over
    /// [`MAX_ERROR_BYTES`].
    pub async fn fail(
        &self,
        attempt_id: Uuid,
        error: &str,
    ) -> Result<Recorded<FailOutcome>, QueueError> {
        check_text("error", error, MAX_ERROR_BYTES)?;
        self.store
            .fail(
                attempt_id,
                error,
                &self.retry,
                &self.priority,
                self.clock.store_time(),
            )
            .await
    }

    /// Gives the leased task back unfinished: it is ready again at once, and no retry is
    /// counted. For a worker that is shutting down; a failure of the task itself goes through
    /// [`TaskQueue::fail`].
    ///
    /// # Errors
    /// `AttemptNotFound`, `LeaseLost`, `Cancelled`, or a `Validation` error for a reason with a
    /// NUL or over [`MAX_ERROR_BYTES`].
    pub async fn release(&self, attempt_id: Uuid, reason: &str) -> Result<(), QueueError> {
        check_text("reason", reason, MAX_ERROR_BYTES)?;
        self.store
            .release(attempt_id, reason, &self.priority, self.clock.store_time())
            .await
    }

    /// Cancels a task with its dependents and children; returns every task cancelled.
    ///
    /// # Errors
    /// `TaskNotFound`, `InvalidTransition` for a task that is already terminal, or a
    /// `Validation` error for a blank actor.
    pub async fn cancel(&self, task_id: Uuid, actor: &str) -> Result<Vec<Uuid>, QueueError> {
        check_actor(actor)?;
        self.store
            .cancel(task_id, actor, self.clock.store_time())
            .await
    }

    /// Retries a failed task; returns its dependents put back to blocked.
    ///
    /// # Errors
    /// `TaskNotFound`, `InvalidTransition` for a task that is not failed, or a `Validation`
    /// error for a blank actor.
    pub async fn retry(&self, task_id: Uuid, actor: &str) -> Result<Vec<Uuid>, QueueError> {
        check_actor(actor)?;
        self.store
            .retry(task_id, actor, &self.priority, self.clock.store_time())
            .await
    }

    /// Recovers tasks of dead workers and tasks past their timeout.
    ///
    /// # Errors
    /// Only the store's failures.
    pub async fn reap(&self) -> Result<ReapReport, QueueError> {
        self.store
            .reap(&self.retry, &self.priority, self.clock.store_time())
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
    /// A `Validation` error for a `running_limit` over [`crate::limits::MAX_PAGE`]; the store's
    /// failures.
    pub async fn overview(&self, running_limit: u32) -> Result<QueueOverview, QueueError> {
        if running_limit > crate::limits::MAX_PAGE {
            return Err(ValidationError::new(
                "running_limit",
                format!(
                    "{running_limit} is outside 0 to {}",
                    crate::limits::MAX_PAGE
                ),
            )
            .into());
        }
        self.store
            .overview(running_limit, self.clock.store_time())
            .await
    }

    /// The unfinished part of the DAG in the order it can run: stage by stage, each task after
    /// everything it waits for. At most `limit` tasks are planned, the most urgent first; a
    /// task whose dependencies fall outside the limit is placed as if they had finished.
    ///
    /// # Errors
    /// A `Validation` error for a limit outside 1 to [`crate::limits::MAX_PAGE`]; the store's
    /// failures.
    pub async fn execution_plan(&self, limit: u32) -> Result<Vec<PlanStep>, QueueError> {
        crate::limits::check_page("limit", u64::from(limit))?;
        Ok(execution_plan(self.store.pending(limit).await?))
    }
}

/// Checks a claim as [`TaskQueue::claim`] does, without claiming: a worker checks its settings
/// with it once at start, so that it never runs on claims the queue refuses every time.
///
/// # Errors
/// A `Validation` error for an empty worker id or agent type, a NUL in either, either over
/// [`crate::limits::MAX_NAME_BYTES`], more than [`MAX_CLAIM_AGENT_TYPES`] agent types, a lease
/// of zero or over [`MAX_LEASE`], or a `max_tasks` of zero or over [`MAX_CLAIM`].
pub fn check_claim(request: &ClaimRequest) -> Result<(), ValidationError> {
    check_name("worker_id", &request.worker_id)?;
    if request.agent_types.len() > MAX_CLAIM_AGENT_TYPES {
        return Err(ValidationError::new(
            "agent_types",
            format!(
                "lists {}; a claim may name at most {MAX_CLAIM_AGENT_TYPES}",
                request.agent_types.len()
            ),
        ));
    }
    for agent_type in &request.agent_types {
        check_name("agent_type", agent_type)?;
    }
    check_lease(request.lease)?;
    if request.max_tasks == 0 || request.max_tasks > MAX_CLAIM {
        return Err(ValidationError::new(
            "max_tasks",
            format!("must be between 1 and {MAX_CLAIM}"),
        ));
    }
    Ok(())
}

/// The most agent types one claim may name. Each is a bound parameter of the claim's
/// statement, and SQLite allows a statement only so many.
pub const MAX_CLAIM_AGENT_TYPES: usize = 100;

/// A deadline is in the future when the task is submitted: one already past could never be
/// met, and is most likely a mistake (a sign, a time zone).
fn check_deadline(task: &NewTask, now: chrono::DateTime<chrono::Utc>) -> Result<(), QueueError> {
    match task.deadline {
        Some(deadline) if deadline <= now => Err(ValidationError::new(
            "deadline",
            format!(
                "{} is not in the future (it is now {})",
                crate::timestamp::format(&crate::timestamp::truncate_to_micros(deadline)),
                crate::timestamp::format(&now)
            ),
        )
        .into()),
        _ => Ok(()),
    }
}

/// Checks how long finished tasks are kept before a prune takes them, as [`TaskQueue::prune`]
/// does, and returns the time before which a task finished to be pruned now. A worker checks
/// its retention with it once at start, so that it never runs on prunes the queue refuses.
///
/// # Errors
/// A `Validation` error naming `older_than` for zero, or for an age that reaches before the
/// earliest time the queue stores.
pub fn check_prune_age(
    older_than: Duration,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<chrono::DateTime<chrono::Utc>, ValidationError> {
    if older_than.is_zero() {
        return Err(ValidationError::new(
            "older_than",
            "must be longer than zero",
        ));
    }
    chrono::Duration::from_std(older_than)
        .ok()
        .and_then(|by| now.checked_sub_signed(by))
        .filter(|t| crate::timestamp::check("older_than", t).is_ok())
        .ok_or_else(|| {
            ValidationError::new(
                "older_than",
                "reaches before the earliest time the queue stores",
            )
        })
}

/// What [`TaskQueue::prune`] asks the store for, checked.
fn prune_request(
    older_than: Duration,
    statuses: &[TaskStatus],
    now: chrono::DateTime<chrono::Utc>,
) -> Result<PruneRequest, QueueError> {
    let finished_before = check_prune_age(older_than, now)?;
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
fn check_lease(lease: Duration) -> Result<(), ValidationError> {
    if lease.is_zero() || lease > MAX_LEASE {
        return Err(ValidationError::new(
            "lease",
            format!(
                "must be longer than zero and at most {} hours",
                MAX_LEASE.as_secs() / 3600
            ),
        ));
    }
    Ok(())
}

/// The person or process named in the history must be named.
fn check_actor(actor: &str) -> Result<(), QueueError> {
    Ok(check_name("actor", actor)?)
}
