//! Turning a command's result into text: a human-readable form and a stable JSON form.
//!
//! The JSON shapes:
//! - a task is the serde form of [`Task`]; `task list` is an array of them, `task submit` and
//!   `task show` one ([`TaskView`]), with `run_after` when it is held back until then and
//!   `idempotency_key` when it was submitted with one; `task submit` with a key adds
//!   `existing` (true when the key named a task already stored, and nothing new was made);
//! - `task claim`: an array of `{"task": Task, "lease": Lease}` ([`ClaimedTask`]);
//! - `task heartbeat`: a [`Lease`];
//! - `task complete`: `{"attempt_id", "ready": [ids], "already_recorded": bool}`;
//! - `task fail`: `{"outcome": "retrying", "retry_count", "run_after", "already_recorded"}` or
//!   `{"outcome": "failed", "cascaded": [ids], "already_recorded"}` ([`FailOutcome`]);
//!   `already_recorded` is true for a repeat of a call already recorded, which changed nothing;
//! - `task cancel` and `task retry`: `{"task_id", "tasks": [ids]}`;
//! - `task history`: an array of [`TaskEvent`];
//! - `reap`: `{"lost": [ids], "timed_out": [ids]}`;
//! - `status`: a [`QueueOverview`]: `at`, `counts` (status → n), `oldest_ready`, `running`
//!   (attempts with `lease_expires_at`, the soonest first), `expired_leases`;
//! - `init` and `db status`: objects with the fields of [`InitReport`] and [`StatusReport`].

use std::fmt::Write as _;

use abathur_core::models::{Task, TaskStatus};
use abathur_core::queue::{ClaimedTask, FailOutcome, Lease, QueueOverview, TaskEvent};
use abathur_core::timestamp;
use chrono::{DateTime, Utc};
use serde::Serialize;

use super::db::{InitReport, StatusReport};
use super::task::{Affected, Completion, Failure, Maintenance};

/// A result its command module rendered itself, for commands whose output shapes are defined
/// beside them.
#[derive(Debug)]
pub struct Rendered {
    /// The `--json` form.
    pub json: serde_json::Value,
    /// The human-readable form, ending with a newline.
    pub human: String,
}

impl Rendered {
    /// `value`'s JSON form beside `human`.
    ///
    /// # Errors
    /// An internal error when `value` cannot be encoded as JSON.
    pub fn of(value: &impl Serialize, human: String) -> Result<Self, super::error::CliError> {
        let json = serde_json::to_value(value).map_err(|e| {
            super::error::CliError::internal("cannot encode the result as JSON", &e)
        })?;
        Ok(Self { json, human })
    }
}

/// A task with what the queue keeps beside it: `task submit` and `task show`.
#[derive(Debug, Serialize)]
pub struct TaskView {
    #[serde(flatten)]
    pub task: Task,
    /// It is not claimable before this time.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub run_after: Option<DateTime<Utc>>,
    /// The key it was submitted with.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
    /// For a submission with a key: whether the key named a task already stored.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub existing: Option<bool>,
}

/// What a command produced.
#[derive(Debug)]
pub enum View {
    /// Rendered by the command's own module.
    Rendered(Rendered),
    /// `init`.
    Init(InitReport),
    /// `task submit`: shown as the bare id, so scripts can capture it.
    Submitted(Box<TaskView>),
    /// `task list`.
    Tasks(Vec<Task>),
    /// `task show`.
    Task(Box<TaskView>),
    /// `task history`.
    History(Vec<TaskEvent>),
    /// `task claim`.
    Claimed(Vec<ClaimedTask>),
    /// `task heartbeat`.
    Lease(Lease),
    /// `task complete`.
    Completed(Completion),
    /// `task fail`.
    Failed(Failure),
    /// `task cancel`.
    Cancelled(Affected),
    /// `task retry`.
    Retried(Affected),
    /// `reap`.
    Reaped(Maintenance),
    /// `status`.
    Overview(QueueOverview),
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
            View::Rendered(rendered) => pretty(&rendered.json),
            View::Init(report) => pretty(report),
            View::Submitted(task) => pretty(task),
            View::Tasks(tasks) => pretty(tasks),
            View::Task(task) => pretty(task),
            View::History(events) => pretty(events),
            View::Claimed(claimed) => pretty(claimed),
            View::Lease(lease) => pretty(lease),
            View::Completed(completion) => pretty(completion),
            View::Failed(outcome) => pretty(outcome),
            View::Cancelled(affected) | View::Retried(affected) => pretty(affected),
            View::Reaped(report) => pretty(report),
            View::Overview(overview) => pretty(overview),
            View::Status(report) => pretty(report),
        }
    }

    /// A note for stderr beside the human-readable form, which scripts capture: a submission
    /// whose idempotency key named a task already stored. The JSON form says it in `existing`.
    pub fn notice(&self) -> Option<String> {
        match self {
            View::Submitted(view) if view.existing == Some(true) => Some(format!(
                "abathur: idempotency key {:?} was already used for task {}; nothing new was submitted",
                view.idempotency_key.as_deref().unwrap_or_default(),
                view.task.id
            )),
            _ => None,
        }
    }

    /// The human-readable form, ending with a newline.
    pub fn human(&self) -> String {
        match self {
            View::Rendered(rendered) => rendered.human.clone(),
            View::Init(report) => {
                let version = report
                    .schema_version
                    .map_or_else(|| "none".to_string(), |v| v.to_string());
                format!("database: {}\nschema version: {version}\n", report.database)
            }
            View::Submitted(task) => format!("{}\n", task.task.id),
            View::Tasks(tasks) => task_table(tasks),
            View::Task(task) => task_fields(task),
            View::History(events) => history_table(events),
            View::Claimed(claimed) => claimed_table(claimed),
            View::Lease(lease) => format!(
                "attempt {} of task {} holds its lease until {}\n",
                lease.attempt_id,
                lease.task_id,
                instant(&lease.expires_at)
            ),
            View::Completed(completion) if completion.already_recorded => {
                let mut out = format!(
                    "attempt {} was already completed with this result; nothing changed\n",
                    completion.attempt_id
                );
                id_lines(&mut out, "made ready then", &completion.ready);
                out
            }
            View::Completed(completion) => {
                let mut out = format!("attempt {} completed\n", completion.attempt_id);
                id_lines(&mut out, "now ready", &completion.ready);
                out
            }
            View::Failed(failure) => {
                let mut out = if failure.already_recorded {
                    "already recorded with this error; nothing changed: ".to_string()
                } else {
                    String::new()
                };
                match &failure.outcome {
                    FailOutcome::Retrying {
                        retry_count,
                        run_after,
                    } => {
                        let _ = writeln!(
                            out,
                            "will retry (retry {retry_count}) from {}",
                            instant(run_after)
                        );
                    }
                    FailOutcome::Failed { cascaded } => {
                        out.push_str("failed: no retries left\n");
                        id_lines(&mut out, "failed with it", cascaded);
                    }
                }
                out
            }
            View::Cancelled(affected) => {
                let mut out = String::new();
                id_lines(&mut out, "cancelled", &affected.tasks);
                out
            }
            View::Retried(affected) => {
                let mut out = format!("task {} is back in the queue\n", affected.task_id);
                id_lines(&mut out, "waiting for it again", &affected.tasks);
                out
            }
            View::Reaped(report) => {
                let mut out = String::new();
                id_lines(&mut out, "lease expired", &report.reaped.lost);
                id_lines(&mut out, "timed out", &report.reaped.timed_out);
                if out.is_empty() {
                    out.push_str("nothing to reap\n");
                }
                out
            }
            View::Overview(overview) => overview_text(overview),
            View::Status(report) => status_text(report),
        }
    }
}

fn overview_text(overview: &QueueOverview) -> String {
    let mut out = String::from("tasks:\n");
    for (status, count) in &overview.counts {
        let _ = writeln!(out, "  {:<9}  {count:>8}", status.as_str());
    }
    match &overview.oldest_ready {
        Some(task) => {
            let _ = writeln!(
                out,
                "\noldest ready: {} ({}), waiting {}\n  {}",
                task.task_id,
                one_line(&task.agent_type),
                span(overview.at - task.submitted_at),
                one_line(&task.summary)
            );
        }
        None => out.push_str("\noldest ready: none\n"),
    }
    let running = overview
        .counts
        .get(&TaskStatus::Running)
        .copied()
        .unwrap_or(0);
    let _ = writeln!(out, "\nrunning: {running}");
    if overview.expired_leases > 0 {
        let _ = writeln!(
            out,
            "  {} past their lease: their workers are gone; `abathur reap` takes them back",
            overview.expired_leases
        );
    }
    if !overview.running.is_empty() {
        let _ = writeln!(
            out,
            "  {:<36}  {:<36}  {:<16}  {:>10}  SUMMARY",
            "ATTEMPT", "TASK", "WORKER", "EXPIRES IN"
        );
        for attempt in &overview.running {
            let left = attempt.lease_expires_at - overview.at;
            let expires = if left <= chrono::Duration::zero() {
                "expired".to_string()
            } else {
                span(left)
            };
            let _ = writeln!(
                out,
                "  {:<36}  {:<36}  {:<16}  {:>10}  {}",
                attempt.attempt_id,
                attempt.task_id,
                one_line(&attempt.worker_id),
                expires,
                one_line(&attempt.summary)
            );
        }
        if (overview.running.len() as u64) < running {
            let _ = writeln!(
                out,
                "  ... and {} more",
                running - overview.running.len() as u64
            );
        }
    }
    out
}

/// A length of time in its two largest units: `45s`, `3m 12s`, `2h 5m`, `3d 4h`.
fn span(length: chrono::Duration) -> String {
    let secs = length.num_seconds().max(0);
    let (d, h, m, s) = (secs / 86_400, secs / 3600 % 24, secs / 60 % 60, secs % 60);
    match (d, h, m) {
        (0, 0, 0) => format!("{s}s"),
        (0, 0, _) => format!("{m}m {s}s"),
        (0, _, _) => format!("{h}h {m}m"),
        _ => format!("{d}d {h}h"),
    }
}

/// `<label>: <n>` and one id per line below it; nothing when `ids` is empty.
fn id_lines(out: &mut String, label: &str, ids: &[uuid::Uuid]) {
    if ids.is_empty() {
        return;
    }
    let _ = writeln!(out, "{label}: {}", ids.len());
    for id in ids {
        let _ = writeln!(out, "  {id}");
    }
}

fn claimed_table(claimed: &[ClaimedTask]) -> String {
    let mut out = String::new();
    if claimed.is_empty() {
        return "no task is ready\n".to_string();
    }
    let _ = writeln!(
        out,
        "{:<36}  {:<36}  {:<27}  SUMMARY",
        "ATTEMPT", "TASK", "LEASE EXPIRES"
    );
    for ClaimedTask { task, lease } in claimed {
        let _ = writeln!(
            out,
            "{:<36}  {:<36}  {:<27}  {}",
            lease.attempt_id,
            task.id,
            instant(&lease.expires_at),
            one_line(&task.summary)
        );
    }
    out
}

fn history_table(events: &[TaskEvent]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<27}  {:<21}  {:<16}  REASON",
        "AT", "CHANGE", "BY [ATTEMPT]"
    );
    for event in events {
        let change = match event.from {
            Some(from) => format!("{from} -> {}", event.to),
            None => format!("-> {}", event.to),
        };
        // The attempt's first eight characters identify it well enough to read; `--json`
        // has it in full.
        let by = match event.attempt_id {
            Some(attempt) => format!(
                "{} [{}]",
                one_line(&event.actor),
                &attempt.simple().to_string()[..8]
            ),
            None => one_line(&event.actor),
        };
        let _ = writeln!(
            out,
            "{:<27}  {:<21}  {:<16}  {}",
            instant(&event.at),
            change,
            by,
            one_line(event.reason.as_deref().unwrap_or("-"))
        );
    }
    out
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
            "{:<36}  {}  {:>8}  {:<agent_width$}  {}",
            task.id,
            status_cell(task.status, status_width),
            task.priority,
            one_line(&task.agent_type),
            one_line(&task.summary),
        );
    }
    out
}

fn task_fields(view: &TaskView) -> String {
    let task = &view.task;
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
            "failed attempts",
            format!(
                "{} ({} retries allowed)",
                task.retry_count, task.max_retries
            ),
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
        ("run after", optional(view.run_after.as_ref().map(instant))),
        ("idempotency key", optional(view.idempotency_key.as_ref())),
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
    let _ = writeln!(out, "database:       {}", report.database);
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
    storage_text(&mut out, &report.storage);
    out
}

/// The sizes part of `db status`.
fn storage_text(out: &mut String, storage: &abathur_core::ports::StorageSizes) {
    let mib = |bytes: u64| format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0));
    let _ = writeln!(out, "\nstorage:");
    let _ = writeln!(out, "  file        {:>12}", mib(storage.file_bytes));
    let _ = writeln!(out, "  WAL         {:>12}", mib(storage.wal_bytes));
    let _ = writeln!(
        out,
        "  free pages  {:>12}  ({} of {} pages of {} bytes; reused before the file grows)",
        mib(storage.free_pages * storage.page_size),
        storage.free_pages,
        storage.page_count,
        storage.page_size
    );
    let _ = writeln!(out, "\nbytes per table, indexes included:");
    let mut tables: Vec<(&String, &u64)> = storage.tables.iter().collect();
    tables.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
    let width = tables.iter().map(|(t, _)| t.len()).max().unwrap_or(0);
    for (table, bytes) in tables {
        let _ = writeln!(out, "  {table:<width$}  {:>12}", mib(*bytes));
    }
}

fn optional(value: Option<impl ToString>) -> String {
    value.map_or_else(|| "-".to_string(), |v| v.to_string())
}

pub(super) fn instant(ts: &DateTime<Utc>) -> String {
    timestamp::format(ts)
}

/// `status` padded to `width`, in its colour: green when done, red when failed, yellow while
/// waiting on others, cyan while running. The styles are stripped on the way out when stdout is
/// not a terminal.
pub(super) fn status_cell(status: TaskStatus, width: usize) -> String {
    use anstyle::{AnsiColor, Style};
    let style = match status {
        TaskStatus::Completed => Style::new().fg_color(Some(AnsiColor::Green.into())),
        TaskStatus::Failed => Style::new().fg_color(Some(AnsiColor::Red.into())).bold(),
        TaskStatus::Cancelled => Style::new().dimmed(),
        TaskStatus::Blocked | TaskStatus::Pending => {
            Style::new().fg_color(Some(AnsiColor::Yellow.into()))
        }
        TaskStatus::Ready => Style::new().bold(),
        TaskStatus::Running => Style::new().fg_color(Some(AnsiColor::Cyan.into())),
    };
    let name = status.as_str();
    let pad = width.saturating_sub(name.len());
    format!("{style}{name}{style:#}{:pad$}", "")
}

/// A table cell on one line: control characters (newlines, tabs) become spaces.
pub(super) fn one_line(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}
