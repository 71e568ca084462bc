//! The `task` commands: submit (through the queue), list and show (from the task repository).

use abathur_core::error::{DatabaseError, ValidationError};
use abathur_core::models::{Task, MAX_PRIORITY, MAX_SUMMARY_CHARS};
use abathur_core::ports::{TaskFilters, TaskRepository};
use abathur_core::queue::{NewTask, TaskQueue};
use uuid::Uuid;

use super::args::{ListArgs, SubmitArgs};
use super::error::CliError;

/// `abathur task submit`: builds the task and submits it to the queue, which checks what it
/// refers to and sets its depth, status and priority.
pub async fn submit(queue: &TaskQueue, args: SubmitArgs) -> Result<Task, CliError> {
    let summary = args
        .summary
        .unwrap_or_else(|| default_summary(&args.description));
    let priority = u8::try_from(args.priority).map_err(|_| {
        ValidationError::new(
            "priority",
            format!("{} is above the maximum of {MAX_PRIORITY}", args.priority),
        )
    })?;
    let input_data = args
        .input
        .as_deref()
        .map(serde_json::from_str::<serde_json::Value>)
        .transpose()
        .map_err(|e| ValidationError::new("input", format!("is not valid JSON: {e}")))?;
    let task = NewTask {
        priority,
        input_data,
        parent_task_id: args.parent,
        dependencies: args.depends_on,
        ..NewTask::new(summary, args.description, args.agent_type)
    };
    let task = queue.submit(task).await?;
    tracing::debug!(id = %task.id, status = %task.status, "task submitted");
    Ok(task)
}

/// `abathur task list`.
pub async fn list(repo: &impl TaskRepository, args: ListArgs) -> Result<Vec<Task>, CliError> {
    let filters = TaskFilters {
        status: args.status,
        agent_type: args.agent_type,
        limit: args.limit.map(i64::from),
        offset: args.offset.map(i64::from),
        ..TaskFilters::default()
    };
    Ok(repo.list(filters).await?)
}

/// `abathur task show ID`.
pub async fn show(repo: &impl TaskRepository, id: Uuid) -> Result<Task, CliError> {
    repo.get(id)
        .await?
        .ok_or_else(|| DatabaseError::not_found("task", id).into())
}

/// The first line of `description` with text on it, trimmed and cut to the summary limit.
fn default_summary(description: &str) -> String {
    let line = description
        .lines()
        .map(str::trim)
        .find(|line| !line.is_empty())
        .unwrap_or_default();
    let cut: String = line.chars().take(MAX_SUMMARY_CHARS).collect();
    cut.trim_end().to_string()
}

#[cfg(test)]
mod tests {
    use super::default_summary;

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
