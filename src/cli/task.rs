//! The `task` commands: submit, list and show, each a thin call into the task repository.

use abathur_core::clock::{Clock, SystemClock};
use abathur_core::error::{DatabaseError, ValidationError};
use abathur_core::models::{Task, TaskStatus, MAX_PRIORITY, MAX_SUMMARY_CHARS};
use abathur_core::ports::{TaskFilters, TaskRepository};
use uuid::Uuid;

use super::args::{ListArgs, SubmitArgs};
use super::error::CliError;

/// `abathur task submit`: builds the task, checks what it refers to, and stores it.
pub async fn submit(repo: &impl TaskRepository, args: SubmitArgs) -> Result<Task, CliError> {
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

    let mut task = Task::new(
        summary,
        args.description,
        args.agent_type,
        SystemClock.now(),
    );
    task.priority = priority;
    task.calculated_priority = f64::from(priority);
    task.input_data = input_data;
    task.parent_task_id = args.parent;
    if !args.depends_on.is_empty() {
        task.dependencies = Some(args.depends_on);
    }
    // Bad input is reported before the database is asked about the references.
    task.validate()?;

    if let Some(parent) = task.parent_task_id {
        if repo.get(parent).await?.is_none() {
            return Err(DatabaseError::not_found("parent task", parent).into());
        }
    }
    let mut depth = None;
    for &dependency in task.dependencies.iter().flatten() {
        let Some(found) = repo.get(dependency).await? else {
            return Err(DatabaseError::not_found("dependency", dependency).into());
        };
        depth = depth.max(Some(found.dependency_depth));
    }
    match depth {
        None => task.status = TaskStatus::Ready,
        Some(deepest) => {
            task.status = TaskStatus::Blocked;
            task.dependency_depth = deepest.saturating_add(1);
        }
    }

    repo.insert(task.clone()).await?;
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
