//! Turning a command's result into text: a human-readable form and a stable JSON form.
//!
//! The JSON shapes: a task is the serde form of [`Task`]; `task list` is an array of them;
//! `task submit` is the stored task; `init` and `db status` are objects with the fields of
//! [`InitReport`] and [`StatusReport`].

use std::fmt::Write as _;

use abathur_core::models::{Task, TaskStatus};
use abathur_core::timestamp;
use chrono::{DateTime, Utc};
use serde::Serialize;

use super::db::{InitReport, StatusReport};

/// What a command produced.
#[derive(Debug)]
pub enum View {
    /// `init`.
    Init(InitReport),
    /// `task submit`: shown as the bare id, so scripts can capture it.
    Submitted(Box<Task>),
    /// `task list`.
    Tasks(Vec<Task>),
    /// `task show`.
    Task(Box<Task>),
    /// `db status`.
    Status(StatusReport),
}

impl View {
    /// The JSON form, pretty-printed, ending with a newline.
    pub fn json(&self) -> serde_json::Result<String> {
        fn pretty(value: &impl Serialize) -> serde_json::Result<String> {
            serde_json::to_string_pretty(value).map(|mut text| {
                text.push('\n');
                text
            })
        }
        match self {
            View::Init(report) => pretty(report),
            View::Submitted(task) => pretty(task),
            View::Tasks(tasks) => pretty(tasks),
            View::Task(task) => pretty(task),
            View::Status(report) => pretty(report),
        }
    }

    /// The human-readable form, ending with a newline.
    pub fn human(&self) -> String {
        match self {
            View::Init(report) => {
                let version = report
                    .schema_version
                    .map_or_else(|| "none".to_string(), |v| v.to_string());
                format!(
                    "database: {}\nschema version: {version}\n",
                    report.database.display()
                )
            }
            View::Submitted(task) => format!("{}\n", task.id),
            View::Tasks(tasks) => task_table(tasks),
            View::Task(task) => task_fields(task),
            View::Status(report) => status_text(report),
        }
    }
}

fn task_table(tasks: &[Task]) -> String {
    if tasks.is_empty() {
        return "no tasks\n".to_string();
    }
    let status_width = tasks
        .iter()
        .map(|t| t.status.as_str().len())
        .chain(["STATUS".len()])
        .max()
        .unwrap_or_default();
    let agent_width = tasks
        .iter()
        .map(|t| t.agent_type.chars().count())
        .chain(["AGENT TYPE".len()])
        .max()
        .unwrap_or_default();
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<36}  {:<status_width$}  {:>8}  {:<agent_width$}  SUMMARY",
        "ID", "STATUS", "PRIORITY", "AGENT TYPE"
    );
    for task in tasks {
        let _ = writeln!(
            out,
            "{:<36}  {:<status_width$}  {:>8}  {:<agent_width$}  {}",
            task.id,
            task.status.as_str(),
            task.priority,
            one_line(&task.agent_type),
            one_line(&task.summary),
        );
    }
    out
}

fn task_fields(task: &Task) -> String {
    let dependencies = match &task.dependencies {
        Some(ids) if !ids.is_empty() => ids
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", "),
        _ => "-".to_string(),
    };
    let fields = [
        ("id", task.id.to_string()),
        ("summary", task.summary.clone()),
        ("status", task.status.to_string()),
        ("agent type", task.agent_type.clone()),
        ("priority", task.priority.to_string()),
        ("calculated priority", task.calculated_priority.to_string()),
        ("dependencies", dependencies),
        ("dependency type", task.dependency_type.to_string()),
        ("dependency depth", task.dependency_depth.to_string()),
        ("parent task", optional(task.parent_task_id)),
        ("session", optional(task.session_id)),
        ("source", task.source.to_string()),
        ("created by", optional(task.created_by.as_ref())),
        (
            "retries",
            format!("{} of {}", task.retry_count, task.max_retries),
        ),
        (
            "timeout",
            format!("{} s", task.max_execution_timeout_seconds),
        ),
        (
            "estimated duration",
            optional(task.estimated_duration_seconds.map(|s| format!("{s} s"))),
        ),
        ("submitted at", instant(&task.submitted_at)),
        (
            "started at",
            optional(task.started_at.as_ref().map(instant)),
        ),
        (
            "completed at",
            optional(task.completed_at.as_ref().map(instant)),
        ),
        ("last updated at", instant(&task.last_updated_at)),
        ("deadline", optional(task.deadline.as_ref().map(instant))),
        ("feature branch", optional(task.feature_branch.as_ref())),
        ("task branch", optional(task.task_branch.as_ref())),
        ("worktree path", optional(task.worktree_path.as_ref())),
        ("input data", optional(task.input_data.as_ref())),
        ("result data", optional(task.result_data.as_ref())),
        ("error message", optional(task.error_message.as_ref())),
    ];
    let width = fields
        .iter()
        .map(|(name, _)| name.len() + 1)
        .max()
        .unwrap_or(0);
    let mut out = String::new();
    for (name, value) in &fields {
        let _ = writeln!(out, "{:<width$}  {value}", format!("{name}:"));
    }
    let _ = writeln!(out, "\ndescription:");
    for line in task.description.lines() {
        let _ = writeln!(out, "  {line}");
    }
    out
}

fn status_text(report: &StatusReport) -> String {
    let mut out = String::new();
    let status = &report.status;
    let version = status
        .schema_version
        .map_or_else(|| "none".to_string(), |v| v.to_string());
    let _ = writeln!(out, "database:       {}", report.database.display());
    let _ = writeln!(out, "schema version: {version}");
    let _ = writeln!(out, "journal mode:   {}", status.journal_mode);
    let _ = writeln!(out, "\nrows per table:");
    let width = status.tables.keys().map(String::len).max().unwrap_or(0);
    for (table, rows) in &status.tables {
        let _ = writeln!(out, "  {table:<width$}  {rows:>8}");
    }
    let _ = writeln!(out, "\ntasks by status:");
    let width = TaskStatus::ALL
        .iter()
        .map(|s| s.as_str().len())
        .max()
        .unwrap_or(0);
    for status in TaskStatus::ALL {
        let rows = report
            .status
            .tasks_by_status
            .get(status)
            .copied()
            .unwrap_or(0);
        let _ = writeln!(out, "  {:<width$}  {rows:>8}", status.as_str());
    }
    out
}

fn optional(value: Option<impl ToString>) -> String {
    value.map_or_else(|| "-".to_string(), |v| v.to_string())
}

fn instant(ts: &DateTime<Utc>) -> String {
    timestamp::format(ts)
}

/// A table cell on one line: control characters (newlines, tabs) become spaces.
fn one_line(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}
