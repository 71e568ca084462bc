//! The task-queue tools: each parses its arguments, calls the queue or the task repository,
//! and returns what it got.

use std::time::Duration;

use abathur_core::error::{DatabaseError, ValidationError};
use abathur_core::models::{default_summary, DependencyType, Task, TaskSource, MAX_PRIORITY};
use abathur_core::ports::{TaskFilters, TaskRepository};
use abathur_core::queue::{
    ClaimedTask, FailOutcome, Lease, NewTask, PlanStep, QueueOverview, TaskQueue,
};
use serde::Serialize;
use uuid::Uuid;

use super::params::{
    parse_id, parse_ids, parse_opt_id, parse_opt_timestamp, ExecutionPlan, QueueStatus, TaskCancel,
    TaskClaim, TaskComplete, TaskEnqueue, TaskFail, TaskHeartbeat, TaskId, TaskList,
};
use super::reply::ToolError;

/// Who a change is recorded as when the caller does not say.
pub const DEFAULT_ACTOR: &str = "mcp";
/// `task_list` returns this many tasks unless told otherwise ...
const DEFAULT_LIST_LIMIT: u32 = 50;
/// ... and never more than this many.
const MAX_LIST_LIMIT: u32 = 1_000;
/// `task_execution_plan` plans this many tasks unless told otherwise.
const DEFAULT_PLAN_LIMIT: u32 = 500;
/// `task_queue_status` lists this many running attempts unless told otherwise.
const DEFAULT_RUNNING_LIMIT: u32 = 20;
/// A lease lasts this long unless the caller says otherwise, as in `abathur task claim`.
const DEFAULT_LEASE_SECONDS: u64 = 300;

/// `task_enqueue`.
pub async fn enqueue(queue: &TaskQueue, args: TaskEnqueue) -> Result<Task, ToolError> {
    let priority = match args.priority {
        None => 5,
        Some(p) => u8::try_from(p)
            .ok()
            .filter(|p| *p <= MAX_PRIORITY)
            .ok_or_else(|| {
                ValidationError::new(
                    "priority",
                    format!("{p} is above the maximum of {MAX_PRIORITY}"),
                )
            })?,
    };
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
        max_retries: args.max_retries.unwrap_or(defaults.max_retries),
        max_execution_timeout_seconds: args
            .timeout_seconds
            .unwrap_or(defaults.max_execution_timeout_seconds),
        estimated_duration_seconds: args.estimated_duration_seconds,
        feature_branch: args.feature_branch,
        task_branch: args.task_branch,
        created_by: Some(args.created_by.unwrap_or_else(|| DEFAULT_ACTOR.to_string())),
        source: args.source.map_or(TaskSource::AgentPlanner, |c| c.0),
        ..defaults
    };
    Ok(queue.submit(task).await?)
}

/// `task_get`.
pub async fn get(repo: &dyn TaskRepository, args: TaskId) -> Result<Task, ToolError> {
    let id = parse_id("task_id", &args.task_id)?;
    repo.get(id)
        .await?
        .ok_or_else(|| DatabaseError::not_found("task", id).into())
}

/// What `task_list` returns.
#[derive(Debug, Serialize)]
pub struct TaskPage {
    /// The matching tasks, most urgent first.
    pub tasks: Vec<Task>,
}

/// `task_list`.
pub async fn list(repo: &dyn TaskRepository, args: TaskList) -> Result<TaskPage, ToolError> {
    let limit = args.limit.unwrap_or(DEFAULT_LIST_LIMIT);
    if limit > MAX_LIST_LIMIT {
        return Err(ToolError::argument(format!(
            "invalid limit: {limit} is above the maximum of {MAX_LIST_LIMIT}; page with offset"
        )));
    }
    let filters = TaskFilters {
        status: args.status.map(|c| c.0),
        agent_type: args.agent_type,
        feature_branch: args.feature_branch,
        session_id: parse_opt_id("session_id", args.session_id.as_deref())?,
        parent_task_id: parse_opt_id("parent_task_id", args.parent_task_id.as_deref())?,
        source: args.source.map(|c| c.0),
        min_priority: args.min_priority,
        max_priority: args.max_priority,
        submitted_after: parse_opt_timestamp("submitted_after", args.submitted_after.as_deref())?,
        submitted_before: parse_opt_timestamp(
            "submitted_before",
            args.submitted_before.as_deref(),
        )?,
        limit: Some(i64::from(limit)),
        offset: args.offset.map(i64::from),
    };
    Ok(TaskPage {
        tasks: repo.list(filters).await?,
    })
}

/// `task_queue_status`.
pub async fn status(queue: &TaskQueue, args: QueueStatus) -> Result<QueueOverview, ToolError> {
    Ok(queue
        .overview(args.running_limit.unwrap_or(DEFAULT_RUNNING_LIMIT))
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
        .execution_plan(args.limit.unwrap_or(DEFAULT_PLAN_LIMIT))
        .await?;
    Ok(Plan { steps })
}

/// What `task_claim` returns.
#[derive(Debug, Serialize)]
pub struct Claimed {
    /// The tasks claimed, each with its lease; empty when nothing was ready.
    pub claimed: Vec<ClaimedTask>,
}

/// `task_claim`.
pub async fn claim(queue: &TaskQueue, args: TaskClaim) -> Result<Claimed, ToolError> {
    let lease = Duration::from_secs(args.lease_seconds.unwrap_or(DEFAULT_LEASE_SECONDS));
    let claimed = queue
        .claim(
            &args.worker_id,
            &args.agent_types,
            lease,
            args.max.unwrap_or(1),
        )
        .await?;
    Ok(Claimed { claimed })
}

/// `task_heartbeat`.
pub async fn heartbeat(queue: &TaskQueue, args: TaskHeartbeat) -> Result<Lease, ToolError> {
    let attempt = parse_id("attempt_id", &args.attempt_id)?;
    let lease = Duration::from_secs(args.lease_seconds.unwrap_or(DEFAULT_LEASE_SECONDS));
    Ok(queue.heartbeat(attempt, lease).await?)
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
