//! The `task` commands: submit (through the queue), list and show (from the task repository).

use abathur_core::error::DatabaseError;
use abathur_core::models::{default_summary, Task};
use abathur_core::ports::TaskFilters;
use abathur_core::queue::{ClaimedTask, FailOutcome, NewTask, ReapReport, TaskQueue};
use serde::Serialize;
use uuid::Uuid;

use super::args::{ClaimArgs, ListArgs, SubmitArgs, TaskCommand};
use super::error::CliError;
use super::import;
use super::json_value;
use super::render::{TaskView, View};
use super::tree;
use super::Context;
use crate::waiting::{self, ClaimRequest};
use crate::worker::Subscribed;
use abathur_core::ports::IdKind;

/// Runs one `abathur task ...` command.
pub async fn run(cx: &Context, command: TaskCommand) -> Result<View, CliError> {
    let ids = &cx.ids;
    let queue = &cx.queue;
    Ok(match command {
        TaskCommand::Submit(args) => View::Submitted(Box::new(submit(cx, args).await?)),
        TaskCommand::Import { source } => View::Rendered(import::import(cx, &source).await?),
        TaskCommand::List(args) => View::Tasks(list(cx, args).await?),
        TaskCommand::Show { id } => {
            let id = ids.resolve(IdKind::Task, &id).await?;
            View::Task(Box::new(show(cx, id).await?))
        }
        TaskCommand::Tree { id } => {
            let id = ids.resolve(IdKind::Task, &id).await?;
            View::Rendered(tree::tree(cx.tasks.as_ref(), id).await?)
        }
        TaskCommand::History { id } => {
            View::History(queue.history(ids.resolve(IdKind::Task, &id).await?).await?)
        }
        TaskCommand::Claim(args) => View::Claimed(claim(cx, args).await?),
        TaskCommand::Heartbeat { attempt, lease } => {
            let attempt = ids.resolve(IdKind::Attempt, &attempt).await?;
            View::Lease(queue.heartbeat(attempt, lease).await?)
        }
        TaskCommand::Complete { attempt, result } => {
            let attempt = ids.resolve(IdKind::Attempt, &attempt).await?;
            View::Completed(complete(queue, attempt, result.as_deref()).await?)
        }
        TaskCommand::Fail { attempt, error } => {
            let attempt = ids.resolve(IdKind::Attempt, &attempt).await?;
            let recorded = queue.fail(attempt, &error).await?;
            View::Failed(Failure {
                outcome: recorded.outcome,
                already_recorded: recorded.repeat,
            })
        }
        TaskCommand::Cancel { id, actor } => {
            let id = ids.resolve(IdKind::Task, &id).await?;
            View::Cancelled(Affected {
                task_id: id,
                tasks: queue.cancel(id, &actor).await?,
            })
        }
        TaskCommand::Retry { id, actor } => {
            let id = ids.resolve(IdKind::Task, &id).await?;
            View::Retried(Affected {
                task_id: id,
                tasks: queue.retry(id, &actor).await?,
            })
        }
    })
}

/// `abathur task submit`: builds the task and submits it to the queue, which checks what it
/// refers to and sets its depth, status and priority. With an idempotency key already used for
/// the same task, the stored task is returned (and the human form adds a notice on stderr).
async fn submit(cx: &Context, args: SubmitArgs) -> Result<TaskView, CliError> {
    let summary = args
        .summary
        .unwrap_or_else(|| default_summary(&args.description));
    let priority = args.priority;
    let input_data = json_value::read_opt("input", args.input.as_deref())?;
    let task = NewTask {
        priority,
        input_data,
        parent_task_id: cx
            .ids
            .resolve_opt(IdKind::Task, args.parent.as_ref())
            .await?,
        dependencies: cx.ids.resolve_all(IdKind::Task, &args.depends_on).await?,
        max_retries: args.max_retries,
        max_execution_timeout_seconds: args.timeout_seconds,
        session_id: cx
            .ids
            .resolve_opt(IdKind::Session, args.session.as_ref())
            .await?,
        deadline: args.deadline,
        feature_branch: args.branch,
        idempotency_key: args.idempotency_key,
        run_after: args.run_after,
        ..NewTask::new(summary, args.description, args.agent_type)
    };
    let new_id = task.id;
    let key = task.idempotency_key.clone();
    let submitted = cx.queue.submit_keyed(task).await.map_err(|e| {
        // The id was never stored, so the person does not know it: name it for what it is.
        let mut err = CliError::from(e);
        let id = new_id.to_string();
        err.message = err
            .message
            .replace(&format!("task {id}"), "the new task")
            .replace(&id, "the new task");
        err
    })?;
    let task = submitted.task;
    tracing::debug!(id = %task.id, status = %task.status, existing = submitted.existing, "task submitted");
    let details = cx.queue.submission_details(task.id).await?;
    Ok(TaskView {
        task,
        run_after: details.run_after,
        existing: key.is_some().then_some(submitted.existing),
        idempotency_key: key,
    })
}

/// `abathur task list`.
async fn list(cx: &Context, args: ListArgs) -> Result<Vec<Task>, CliError> {
    let filters = TaskFilters {
        status: args.status,
        agent_type: args.agent_type,
        parent_task_id: cx
            .ids
            .resolve_opt(IdKind::Task, args.parent.as_ref())
            .await?,
        session_id: cx
            .ids
            .resolve_opt(IdKind::Session, args.session.as_ref())
            .await?,
        feature_branch: args.branch,
        source: args.source,
        min_priority: args.min_priority,
        max_priority: args.max_priority,
        submitted_after: args.submitted_after,
        submitted_before: args.submitted_before,
        limit: args.limit.map(i64::from),
        offset: args.offset.map(i64::from),
    };
    Ok(cx.tasks.list(filters).await?)
}

/// `abathur task show ID`: the task, its run-after time and its idempotency key.
async fn show(cx: &Context, id: Uuid) -> Result<TaskView, CliError> {
    let task = cx
        .tasks
        .get(id)
        .await?
        .ok_or_else(|| CliError::from(DatabaseError::not_found("task", id)))?;
    let details = cx.queue.submission_details(id).await?;
    Ok(TaskView {
        task,
        run_after: details.run_after,
        idempotency_key: details.idempotency_key,
        existing: None,
    })
}

/// `abathur task claim`.
async fn claim(cx: &Context, args: ClaimArgs) -> Result<Vec<ClaimedTask>, CliError> {
    let Some(wait) = args.wait.filter(|wait| !wait.is_zero()) else {
        return Ok(cx
            .queue
            .claim(&args.worker, &args.agent_types, args.lease, args.max_tasks)
            .await?);
    };
    waiting::check_wait("--wait", wait)?;
    let mut wake = cx
        .backend
        .changes
        .subscribe()
        .await
        .map(Subscribed::new)
        .map_err(|e| CliError::internal("cannot watch the database for changes", &e))?;
    let request = ClaimRequest {
        worker_id: &args.worker,
        agent_types: &args.agent_types,
        lease: args.lease,
        max: args.max_tasks,
    };
    // The command waits in the foreground; a signal ends the process, and with it the wait.
    Ok(
        waiting::claim_waiting(&cx.queue, &request, wait, &mut wake, std::future::pending())
            .await?,
    )
}

/// What `task complete` reports.
#[derive(Debug, Serialize)]
pub struct Completion {
    pub attempt_id: Uuid,
    /// The dependents that became ready.
    pub ready: Vec<Uuid>,
    /// The attempt had already completed with this result: the command was a repeat,
    /// changed nothing, and `ready` is what the first one made ready.
    pub already_recorded: bool,
}

/// What `task fail` reports: the [`FailOutcome`]'s fields and `already_recorded`.
#[derive(Debug, Serialize)]
pub struct Failure {
    #[serde(flatten)]
    pub outcome: FailOutcome,
    /// The attempt had already failed with this error: the command was a repeat, changed
    /// nothing, and the outcome is the one recorded then.
    pub already_recorded: bool,
}

/// `abathur task complete ATTEMPT`.
async fn complete(
    queue: &TaskQueue,
    attempt: Uuid,
    result: Option<&str>,
) -> Result<Completion, CliError> {
    let result = json_value::read_opt("result", result)?;
    let recorded = queue.complete(attempt, result).await?;
    Ok(Completion {
        attempt_id: attempt,
        ready: recorded.outcome,
        already_recorded: recorded.repeat,
    })
}

/// What `task cancel` and `task retry` report.
#[derive(Debug, Serialize)]
pub struct Affected {
    pub task_id: Uuid,
    /// `cancel`: every task cancelled, this one first. `retry`: the dependents that wait for
    /// this task again.
    pub tasks: Vec<Uuid>,
}

/// What `reap` reports.
#[derive(Debug, Serialize)]
pub struct Maintenance {
    /// The tasks taken back from dead workers, and those timed out.
    #[serde(flatten)]
    pub reaped: ReapReport,
}

/// `abathur reap`: recovers expired leases and timed-out tasks.
pub async fn reap(queue: &TaskQueue) -> Result<Maintenance, CliError> {
    let reaped = queue.reap().await?;
    Ok(Maintenance { reaped })
}

#[cfg(test)]
mod tests {
    use abathur_core::models::default_summary;

    #[test]
    fn the_default_summary_is_the_first_line_with_text() {
        assert_eq!(
            default_summary("\n  Fix the build  \nthen more"),
            "Fix the build"
        );
    }

    #[test]
    fn the_default_summary_is_cut_at_140_characters_not_bytes() {
        let summary = default_summary(&"é".repeat(200));
        assert_eq!(summary.chars().count(), 140);
    }
}
