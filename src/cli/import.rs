//! `abathur task import FILE|-`: many tasks from JSON Lines, submitted as one atomic batch.
//!
//! Each line is an object; `description` is required, every other field optional:
//!
//! ```text
//! {"key": "fetch", "description": "Fetch the sources", "agent_type": "git", "priority": 7}
//! {"key": "build", "description": "Build", "depends_on": ["fetch"], "max_retries": 5}
//! ```
//!
//! `depends_on` and `parent` name a `key` of the same file, or the id (or an unambiguous prefix
//! of it) of a stored task; `session` the id or prefix of a stored session. Either the whole
//! file goes in, or nothing does.
//!
//! `idempotency_key` makes a line safe to import again: a line whose key was already used
//! stands for the task it made (listed as `existing`), lines that name it link to that task,
//! and the other lines are stored, all in one transaction. A key used with a different task is
//! a conflict, and nothing is stored. `run_after` (`+10m` or an RFC 3339 time) holds a task
//! back from claims until then.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;

use abathur_core::models::{default_summary, TaskStatus};
use abathur_core::ports::IdKind;
use abathur_core::queue::{NewTask, QueueError};
use chrono::{DateTime, Utc};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::fmt::Write as _;
use uuid::Uuid;

use super::error::{CliError, ExitCode};
use super::ids::parse_id;
use super::render::Rendered;
use super::Context;

/// One line of the file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Line {
    key: Option<String>,
    description: String,
    summary: Option<String>,
    agent_type: Option<String>,
    priority: Option<u8>,
    #[serde(default)]
    depends_on: Vec<String>,
    parent: Option<String>,
    session: Option<String>,
    input: Option<Value>,
    max_retries: Option<u32>,
    timeout_seconds: Option<u32>,
    deadline: Option<DateTime<Utc>>,
    branch: Option<String>,
    idempotency_key: Option<String>,
    run_after: Option<String>,
}

/// What one line became.
#[derive(Debug, Serialize)]
struct Imported {
    line: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    key: Option<String>,
    id: Uuid,
    status: TaskStatus,
    /// Its idempotency key was already used: this is the task stored then, not a new one.
    existing: bool,
}

/// Reads `source` (a path, or `-` for stdin) and submits every task in it at once.
///
/// # Errors
/// Invalid input (exit 4) naming the line for a malformed line, a duplicate key or a reference
/// that is neither a key nor an id; the queue's errors for the batch. Nothing is written on any
/// error.
pub async fn import(cx: &Context, source: &Path) -> Result<Rendered, CliError> {
    let (reader, size): (Box<dyn Read>, Option<u64>) = if source == Path::new("-") {
        (Box::new(std::io::stdin().lock()), None)
    } else {
        let file = std::fs::File::open(source).map_err(|e| {
            CliError::new(
                ExitCode::Invalid,
                format!("cannot read {}: {e}", source.display()),
            )
        })?;
        let size = file.metadata().ok().map(|m| m.len());
        (Box::new(file), size)
    };
    let progress = progress_bar(size);

    let mut lines = Vec::new();
    for (index, text) in BufReader::new(reader).lines().enumerate() {
        let number = index + 1;
        let text = text.map_err(|e| {
            CliError::new(
                ExitCode::Invalid,
                format!("line {number}: cannot be read: {e}"),
            )
        })?;
        progress.inc(text.len() as u64 + 1);
        if text.trim().is_empty() {
            continue;
        }
        let line: Line =
            serde_json::from_str(&text).map_err(|e| invalid(number, &e.to_string()))?;
        lines.push((number, line));
    }
    if lines.is_empty() {
        progress.finish_and_clear();
        return Err(CliError::new(
            ExitCode::Invalid,
            "the file holds no tasks".to_string(),
        ));
    }

    let mut keys: HashMap<String, (usize, Uuid)> = HashMap::new();
    let ids: Vec<Uuid> = lines.iter().map(|_| Uuid::new_v4()).collect();
    for ((number, line), id) in lines.iter().zip(&ids) {
        if let Some(key) = &line.key {
            if let Some((first, _)) = keys.insert(key.clone(), (*number, *id)) {
                return Err(invalid(
                    *number,
                    &format!("key {key:?} is already used on line {first}"),
                ));
            }
        }
    }
    // A reference is a key of this file, or the id (or an unambiguous prefix of the id) of a
    // stored record.
    let reference = |number: usize, field: &'static str, kind: IdKind, text: String| {
        let keys = &keys;
        async move {
            if kind == IdKind::Task {
                if let Some((_, id)) = keys.get(&text) {
                    return Ok(*id);
                }
            }
            let typed = parse_id(&text).map_err(|_| {
                invalid(
                    number,
                    &format!("{field} {text:?} is neither a key in this file nor an id"),
                )
            })?;
            cx.ids.resolve(kind, &typed).await.map_err(|mut e| {
                e.message = format!("line {number}: {field}: {}", e.message);
                e
            })
        }
    };

    let mut batch = Vec::with_capacity(lines.len());
    for ((number, line), id) in lines.iter().zip(&ids) {
        let defaults = NewTask::new("", "", "generic");
        let mut dependencies = Vec::with_capacity(line.depends_on.len());
        for dependency in &line.depends_on {
            dependencies
                .push(reference(*number, "depends_on", IdKind::Task, dependency.clone()).await?);
        }
        let parent_task_id = match &line.parent {
            Some(parent) => Some(reference(*number, "parent", IdKind::Task, parent.clone()).await?),
            None => None,
        };
        let session_id = match &line.session {
            Some(session) => {
                Some(reference(*number, "session", IdKind::Session, session.clone()).await?)
            }
            None => None,
        };
        let run_after = line
            .run_after
            .as_deref()
            .map(super::args::parse_run_after)
            .transpose()
            .map_err(|e| invalid(*number, &format!("run_after: {e}")))?;
        batch.push(NewTask {
            id: *id,
            summary: line
                .summary
                .clone()
                .unwrap_or_else(|| default_summary(&line.description)),
            description: line.description.clone(),
            agent_type: line.agent_type.clone().unwrap_or(defaults.agent_type),
            priority: line.priority.unwrap_or(defaults.priority),
            dependencies,
            parent_task_id,
            session_id,
            input_data: line.input.clone(),
            max_retries: line.max_retries.unwrap_or(defaults.max_retries),
            max_execution_timeout_seconds: line
                .timeout_seconds
                .unwrap_or(defaults.max_execution_timeout_seconds),
            deadline: line.deadline,
            feature_branch: line.branch.clone(),
            idempotency_key: line.idempotency_key.clone(),
            run_after,
            ..defaults
        });
    }

    // Each task's own fields are checked here, where the line is known; the queue checks the
    // graph.
    let now = Utc::now();
    for ((number, _), task) in lines.iter().zip(&batch) {
        task.validate(now)
            .map_err(|e| invalid(*number, &e.to_string()))?;
    }

    progress.set_style(
        ProgressStyle::with_template("{spinner} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    progress.set_message(format!("submitting {} tasks", batch.len()));
    progress.enable_steady_tick(std::time::Duration::from_millis(100));
    let line_of: HashMap<Uuid, usize> = lines
        .iter()
        .zip(&ids)
        .map(|((n, _), id)| (*id, *n))
        .collect();
    let stored = cx.queue.submit_batch_keyed(batch).await;
    progress.finish_and_clear();
    let stored = stored.map_err(|e| {
        // The queue names tasks by id, but these were never stored: the person knows them by
        // line (and key).
        let line = e
            .task()
            .and_then(|id| line_of.get(&id).copied())
            .or_else(|| match &e {
                // The stored task is named by id; the line is the one that carries the key.
                QueueError::IdempotencyConflict { key, .. } => lines
                    .iter()
                    .find(|(_, l)| l.idempotency_key.as_ref() == Some(key))
                    .map(|(number, _)| *number),
                _ => None,
            });
        let mut err = CliError::from(e);
        for ((number, l), id) in lines.iter().zip(&ids) {
            let name = match &l.key {
                Some(key) => format!("line {number} ({key})"),
                None => format!("line {number}"),
            };
            let id = id.to_string();
            err.message = err
                .message
                .replace(&format!("task {id}"), &name)
                .replace(&id, &name);
        }
        if let Some(number) = line {
            if !err.message.starts_with("line ") {
                err.message = format!("line {number}: {}", err.message);
            }
        }
        err
    })?;

    let key_of: HashMap<Uuid, Option<String>> = lines
        .iter()
        .zip(&ids)
        .map(|((_, line), id)| (*id, line.key.clone()))
        .collect();
    let mut imported: Vec<Imported> = stored
        .iter()
        .map(|submitted| Imported {
            line: line_of[&submitted.requested_id],
            key: key_of[&submitted.requested_id].clone(),
            id: submitted.task.id,
            status: submitted.task.status,
            existing: submitted.existing,
        })
        .collect();
    imported.sort_by_key(|i| i.line);
    let existing = imported.iter().filter(|i| i.existing).count();
    let mut human = if existing == 0 {
        format!("imported {} tasks\n", imported.len())
    } else {
        format!(
            "imported {} tasks, {existing} of them already submitted under their idempotency key\n",
            imported.len()
        )
    };
    for task in &imported {
        let _ = writeln!(
            human,
            "  line {:<5} {}  {:<8}  {}{}",
            task.line,
            task.id,
            task.status.as_str(),
            task.key.as_deref().unwrap_or(""),
            if task.existing { "  (existing)" } else { "" }
        );
    }
    Rendered::of(&imported, human)
}

fn invalid(line: usize, message: &str) -> CliError {
    CliError::new(ExitCode::Invalid, format!("line {line}: {message}"))
}

/// A bar over the bytes read, on stderr, drawn only when stderr is a terminal.
fn progress_bar(size: Option<u64>) -> ProgressBar {
    let bar = match size {
        Some(size) => ProgressBar::with_draw_target(Some(size), ProgressDrawTarget::stderr()),
        None => ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr()),
    };
    if let Ok(style) = ProgressStyle::with_template("{bar:40} {bytes}/{total_bytes} read") {
        bar.set_style(style);
    }
    bar
}
