//! The task-queue tools: each parses its arguments, calls the queue or the task repository,
//! and returns what it got.

use std::future::Future;
use std::time::Duration;

use abathur_core::error::DatabaseError;
use abathur_core::limits::MAX_PAGE;
use abathur_core::models::{default_summary, DependencyType, Task, TaskSource, MAX_PRIORITY};
use abathur_core::ports::{TaskFilters, TaskRepository};
use abathur_core::queue::{
    ClaimedTask, FailOutcome, Lease, NewTask, PlanStep, QueueOverview, TaskQueue, MAX_CLAIM,
    MAX_LEASE,
};
use serde::Serialize;
use uuid::Uuid;

use super::params::{
    in_range, parse_id, parse_ids, parse_opt_id, parse_opt_timestamp, ExecutionPlan, QueueStatus,
    TaskCancel, TaskClaim, TaskComplete, TaskEnqueue, TaskFail, TaskHeartbeat, TaskId, TaskList,
};
use super::reply::ToolError;
use crate::waiting::{self, ChangeFeed, ClaimRequest};
use crate::worker::{Interval, Wake};

/// Who a change is recorded as when the caller does not say.
pub const DEFAULT_ACTOR: &str = "mcp";
/// `task_list` returns this many tasks unless told otherwise.
const DEFAULT_LIST_LIMIT: u32 = 50;
/// `task_execution_plan` plans this many tasks unless told otherwise.
const DEFAULT_PLAN_LIMIT: u32 = 500;
/// `task_queue_status` lists this many running attempts unless told otherwise.
const DEFAULT_RUNNING_LIMIT: u32 = 20;
/// A lease lasts this long unless the caller says otherwise, as in `abathur task claim`.
const DEFAULT_LEASE_SECONDS: u64 = 300;

/// What `task_enqueue` and `task_get` return: the stored task, with its run-after time and
/// idempotency key when it has them.
#[derive(Debug, Serialize)]
pub struct ShownTask {
    #[serde(flatten)]
    pub task: Task,
    /// It is not claimable before this time.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub run_after: Option<chrono::DateTime<chrono::Utc>>,
    /// The key it was submitted with.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
    /// `task_enqueue` with a key: true when the key named a task already stored, and nothing
    /// new was made.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub existing: Option<bool>,
}

/// `task_enqueue`.
pub async fn enqueue(queue: &TaskQueue, args: TaskEnqueue) -> Result<ShownTask, ToolError> {
    let priority = in_range("priority", args.priority, 0, i64::from(MAX_PRIORITY))?.unwrap_or(5);
    let max_retries = in_range("max_retries", args.max_retries, 0, i64::from(u32::MAX))?;
    let timeout = in_range(
        "timeout_seconds",
        args.timeout_seconds,
        1,
        i64::from(u32::MAX),
    )?;
    let estimated = in_range(
        "estimated_duration_seconds",
        args.estimated_duration_seconds,
        0,
        i64::from(u32::MAX),
    )?;
    let summary = args
        .summary
        .unwrap_or_else(|| default_summary(&args.description));
    let agent_type = args.agent_type.unwrap_or_else(|| "generic".to_string());
    let defaults = NewTask::new(summary, args.description, agent_type);
    let task = NewTask {
        priority,
        dependencies: parse_ids("depends_on", &args.depends_on)?,
        dependency_type: args
            .dependency_type
            .map_or(DependencyType::Sequential, |c| c.0),
        parent_task_id: parse_opt_id("parent", args.parent.as_deref())?,
        session_id: parse_opt_id("session", args.session.as_deref())?,
        deadline: parse_opt_timestamp("deadline", args.deadline.as_deref())?,
        input_data: args.input,
        max_retries: max_retries.unwrap_or(defaults.max_retries),
        max_execution_timeout_seconds: timeout.unwrap_or(defaults.max_execution_timeout_seconds),
        estimated_duration_seconds: estimated,
        feature_branch: args.feature_branch,
        task_branch: args.task_branch,
        created_by: Some(args.created_by.unwrap_or_else(|| DEFAULT_ACTOR.to_string())),
        source: args.source.map_or(TaskSource::AgentPlanner, |c| c.0),
        run_after: args
            .run_after
            .as_deref()
            .map(crate::cli::args::parse_run_after)
            .transpose()
            .map_err(|e| ToolError::argument(format!("invalid run_after: {e}")))?,
        idempotency_key: args.idempotency_key,
        ..defaults
    };
    let key = task.idempotency_key.clone();
    let submitted = queue.submit_keyed(task).await?;
    let details = queue.submission_details(submitted.task.id).await?;
    Ok(ShownTask {
        task: submitted.task,
        run_after: details.run_after,
        existing: key.is_some().then_some(submitted.existing),
        idempotency_key: key,
    })
}

/// `task_get`.
pub async fn get(
    repo: &dyn TaskRepository,
    queue: &TaskQueue,
    args: TaskId,
) -> Result<ShownTask, ToolError> {
    let id = parse_id("task_id", &args.task_id)?;
    let task = repo
        .get(id)
        .await?
        .ok_or_else(|| ToolError::from(DatabaseError::not_found("task", id)))?;
    let details = queue.submission_details(id).await?;
    Ok(ShownTask {
        task,
        run_after: details.run_after,
        idempotency_key: details.idempotency_key,
        existing: None,
    })
}

/// What `task_list` returns.
#[derive(Debug, Serialize)]
pub struct TaskPage {
    /// The matching tasks, most urgent first.
    pub tasks: Vec<Task>,
}

/// `task_list`.
pub async fn list(repo: &dyn TaskRepository, args: TaskList) -> Result<TaskPage, ToolError> {
    // The repository refuses a limit outside 1 to `limits::MAX_PAGE`, as for the CLI.
    let limit =
        in_range("limit", args.limit, 1, i64::from(MAX_PAGE))?.unwrap_or(DEFAULT_LIST_LIMIT);
    let priority_range = |field, value| in_range::<u8>(field, value, 0, i64::from(MAX_PRIORITY));
    let filters = TaskFilters {
        status: args.status.map(|c| c.0),
        agent_type: args.agent_type,
        feature_branch: args.feature_branch,
        session_id: parse_opt_id("session_id", args.session_id.as_deref())?,
        parent_task_id: parse_opt_id("parent_task_id", args.parent_task_id.as_deref())?,
        source: args.source.map(|c| c.0),
        min_priority: priority_range("min_priority", args.min_priority)?,
        max_priority: priority_range("max_priority", args.max_priority)?,
        submitted_after: parse_opt_timestamp("submitted_after", args.submitted_after.as_deref())?,
        submitted_before: parse_opt_timestamp(
            "submitted_before",
            args.submitted_before.as_deref(),
        )?,
        limit: Some(i64::from(limit)),
        offset: in_range::<u32>("offset", args.offset, 0, i64::from(u32::MAX))?.map(i64::from),
    };
    Ok(TaskPage {
        tasks: repo.list(filters).await?,
    })
}

/// `task_queue_status`.
pub async fn status(queue: &TaskQueue, args: QueueStatus) -> Result<QueueOverview, ToolError> {
    Ok(queue
        .overview(
            in_range("running_limit", args.running_limit, 0, i64::from(MAX_PAGE))?
                .unwrap_or(DEFAULT_RUNNING_LIMIT),
        )
        .await?)
}

/// What `task_cancel` returns.
#[derive(Debug, Serialize)]
pub struct Cancelled {
    pub task_id: Uuid,
    /// Every task cancelled: this one, its dependents and its children.
    pub cancelled: Vec<Uuid>,
}

/// `task_cancel`.
pub async fn cancel(queue: &TaskQueue, args: TaskCancel) -> Result<Cancelled, ToolError> {
    let task_id = parse_id("task_id", &args.task_id)?;
    let actor = args.actor.as_deref().unwrap_or(DEFAULT_ACTOR);
    let cancelled = queue.cancel(task_id, actor).await?;
    Ok(Cancelled { task_id, cancelled })
}

/// What `task_execution_plan` returns.
#[derive(Debug, Serialize)]
pub struct Plan {
    /// The unfinished tasks, stage by stage; each after everything it waits for.
    pub steps: Vec<PlanStep>,
}

/// `task_execution_plan`.
pub async fn execution_plan(queue: &TaskQueue, args: ExecutionPlan) -> Result<Plan, ToolError> {
    let steps = queue
        .execution_plan(
            in_range("limit", args.limit, 1, i64::from(MAX_PAGE))?.unwrap_or(DEFAULT_PLAN_LIMIT),
        )
        .await?;
    Ok(Plan { steps })
}

/// What `task_claim` returns.
#[derive(Debug, Serialize)]
pub struct Claimed {
    /// The tasks claimed, each with its lease; empty when nothing was ready.
    pub claimed: Vec<ClaimedTask>,
}

/// `task_claim`. With `wait_seconds`, waits on `feed` (or, without one, looks again every
/// [`waiting::RECHECK`]) until a task is claimable, the wait ends, or `gone` completes.
pub async fn claim(
    queue: &TaskQueue,
    feed: Option<&ChangeFeed>,
    args: TaskClaim,
    gone: impl Future<Output = ()>,
) -> Result<Claimed, ToolError> {
    let request = ClaimRequest {
        worker_id: &args.worker_id,
        agent_types: &args.agent_types,
        lease: lease_seconds(args.lease_seconds)?,
        max: in_range("max", args.max, 1, i64::from(MAX_CLAIM))?.unwrap_or(1),
    };
    let max_wait = i64::try_from(waiting::MAX_CLAIM_WAIT.as_secs()).unwrap_or(i64::MAX);
    let wait = Duration::from_secs(
        in_range::<u64>("wait_seconds", args.wait_seconds, 0, max_wait)?.unwrap_or(0),
    );
    // A subscription starts the watcher, which takes a connection out of the pool: only a
    // claim that may wait pays for it.
    let mut wake: Box<dyn Wake> = match feed {
        Some(feed) if !wait.is_zero() => Box::new(feed.subscribe()),
        _ => Box::new(Interval),
    };
    let claimed = waiting::claim_waiting(queue, &request, wait, wake.as_mut(), gone).await?;
    Ok(Claimed { claimed })
}

/// `task_heartbeat`.
pub async fn heartbeat(queue: &TaskQueue, args: TaskHeartbeat) -> Result<Lease, ToolError> {
    let attempt = parse_id("attempt_id", &args.attempt_id)?;
    let lease = lease_seconds(args.lease_seconds)?;
    Ok(queue.heartbeat(attempt, lease).await?)
}

/// A lease in whole seconds, from 1 to [`MAX_LEASE`]; 300 when not given.
fn lease_seconds(seconds: Option<i64>) -> Result<Duration, ToolError> {
    let max = i64::try_from(MAX_LEASE.as_secs()).unwrap_or(i64::MAX);
    let seconds = in_range::<u64>("lease_seconds", seconds, 1, max)?;
    Ok(Duration::from_secs(
        seconds.unwrap_or(DEFAULT_LEASE_SECONDS),
    ))
}

/// What `task_complete` returns.
#[derive(Debug, Serialize)]
pub struct Completed {
    pub attempt_id: Uuid,
    /// The dependents that became ready.
    pub ready: Vec<Uuid>,
    /// The attempt had already completed with this result: this call was a repeat, changed
    /// nothing, and `ready` is what the first call made ready.
    pub already_recorded: bool,
}

/// What `task_fail` returns: the [`FailOutcome`]'s fields and `already_recorded`.
#[derive(Debug, Serialize)]
pub struct Failed {
    #[serde(flatten)]
    pub outcome: FailOutcome,
    /// The attempt had already failed with this error: this call was a repeat, changed
    /// nothing, and the outcome is the one recorded then.
    pub already_recorded: bool,
}

/// `task_complete`.
pub async fn complete(queue: &TaskQueue, args: TaskComplete) -> Result<Completed, ToolError> {
    let attempt_id = parse_id("attempt_id", &args.attempt_id)?;
    let recorded = queue.complete(attempt_id, args.result).await?;
    Ok(Completed {
        attempt_id,
        ready: recorded.outcome,
        already_recorded: recorded.repeat,
    })
}

/// `task_fail`.
pub async fn fail(queue: &TaskQueue, args: TaskFail) -> Result<Failed, ToolError> {
    let attempt = parse_id("attempt_id", &args.attempt_id)?;
    let recorded = queue.fail(attempt, &args.error).await?;
    Ok(Failed {
        outcome: recorded.outcome,
        already_recorded: recorded.repeat,
    })
}

#[cfg(test)]
mod tests {

    use serde_json::json;

    use super::*;
    #[tokio::test]
    async fn a_claim_that_does_not_wait_starts_no_watcher() {
        let backend = crate::backend::tests::in_memory().await;
        let queue = TaskQueue::new(backend.queue_store.clone());
        let feed = ChangeFeed::new(backend.changes.clone());
        for arguments in [
            json!({ "worker_id": "w" }),
            json!({ "worker_id": "w", "wait_seconds": 0 }),
        ] {
            let args: TaskClaim = serde_json::from_value(arguments.clone()).expect("arguments");
            let claimed = claim(&queue, Some(&feed), args, std::future::pending())
                .await
                .expect("a claim");
            assert!(claimed.claimed.is_empty());
            assert!(!feed.is_watching(), "{arguments}: the watcher runs");
        }
    }
}
