//! The task-queue tools: each parses its arguments, calls the queue or the task repository,
//! and returns what it got.

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

/// `task_enqueue`.
pub async fn enqueue(queue: &TaskQueue, args: TaskEnqueue) -> Result<Task, ToolError> {
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

/// `task_claim`.
pub async fn claim(queue: &TaskQueue, args: TaskClaim) -> Result<Claimed, ToolError> {
    let lease = lease_seconds(args.lease_seconds)?;
    let max = in_range("max", args.max, 1, i64::from(MAX_CLAIM))?.unwrap_or(1);
    let claimed = queue
        .claim(&args.worker_id, &args.agent_types, lease, max)
        .await?;
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
}

/// `task_complete`.
pub async fn complete(queue: &TaskQueue, args: TaskComplete) -> Result<Completed, ToolError> {
    let attempt_id = parse_id("attempt_id", &args.attempt_id)?;
    let ready = queue.complete(attempt_id, args.result).await?;
    Ok(Completed { attempt_id, ready })
}

/// `task_fail`.
pub async fn fail(queue: &TaskQueue, args: TaskFail) -> Result<FailOutcome, ToolError> {
    let attempt = parse_id("attempt_id", &args.attempt_id)?;
    Ok(queue.fail(attempt, &args.error).await?)
}
