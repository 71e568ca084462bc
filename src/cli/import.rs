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
//!
//! An import is held in memory until it is stored, so it is bounded: at most
//! [`MAX_IMPORT_BYTES`] of input and [`MAX_IMPORT_TASKS`] tasks. A UTF-8 byte order mark
//! opening a line (the file's, or that of a file concatenated into it) is skipped. Every error
//! names the line and the file's key at fault.

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

/// The largest input `task import` reads: a file goes in as one transaction, and is held in
/// memory until it does. A larger file is refused before it is read.
pub const MAX_IMPORT_BYTES: u64 = 64 * 1024 * 1024;

/// The most tasks one import submits.
pub const MAX_IMPORT_TASKS: usize = 100_000;

/// Reads `source` (a path, or `-` for stdin) and submits every task in it at once.
///
/// # Errors
/// Invalid input (exit 4) naming the line and the file's key for a malformed line, a bad
/// field, a duplicate key or dependency, or a reference that is neither a key nor an id; for
/// input over [`MAX_IMPORT_BYTES`] or [`MAX_IMPORT_TASKS`]; the queue's errors for the batch.
/// Nothing is written on any error.
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
        if let Some(size) = size.filter(|&size| size > MAX_IMPORT_BYTES) {
            return Err(too_large(&format!(
                "{} is {size} bytes, more",
                source.display()
            )));
        }
        (Box::new(file), size)
    };
    let progress = progress_bar(size);

    let mut reader = BufReader::new(reader);
    let mut lines: Vec<(usize, Line)> = Vec::new();
    let mut read: u64 = 0;
    let mut raw = Vec::new();
    for number in 1.. {
        raw.clear();
        let n = read_line(&mut reader, &mut raw, MAX_IMPORT_BYTES - read).map_err(|e| {
            progress.finish_and_clear();
            match e {
                // The file is at fault, not the line (a directory, a failing disk): name it.
                Some(e) => CliError::new(
                    ExitCode::Invalid,
                    format!("cannot read {}: {e}", source_name(source)),
                ),
                None => too_large("the input is longer"),
            }
        })?;
        if n == 0 {
            break;
        }
        read += n as u64;
        progress.inc(n as u64);
        let text = std::str::from_utf8(&raw)
            .map_err(|e| invalid(number, &format!("is not UTF-8 text: {e}")))?;
        // A byte order mark may open a file written on Windows: it is not part of the line.
        // Files concatenated (`cat a.jsonl b.jsonl`) bring theirs to later lines, where it
        // cannot begin JSON either.
        let text = text.strip_prefix('\u{FEFF}').unwrap_or(text);
        if text.trim().is_empty() {
            continue;
        }
        if lines.len() == MAX_IMPORT_TASKS {
            progress.finish_and_clear();
            return Err(CliError::new(
                ExitCode::Invalid,
                format!(
                    "line {number}: the input holds more than {MAX_IMPORT_TASKS} tasks, the \
                     most one import takes; split it into several files"
                ),
            ));
        }
        lines.push((number, parse_line(text).map_err(|e| invalid(number, &e))?));
    }
    if lines.is_empty() {
        progress.finish_and_clear();
        return Err(CliError::new(
            ExitCode::Invalid,
            "the file holds no tasks".to_string(),
        ));
    }

    // What the person knows each task by, kept after the lines are used up.
    let names: Vec<(usize, Option<String>, Uuid)> = lines
        .iter()
        .map(|(number, line)| (*number, line.key.clone(), Uuid::new_v4()))
        .collect();
    // The line of an idempotency conflict is the one carrying the key the queue names.
    let idempotency_keys: Vec<Option<String>> = lines
        .iter()
        .map(|(_, line)| line.idempotency_key.clone())
        .collect();
    let mut keys: HashMap<&str, (usize, Uuid)> = HashMap::new();
    for (number, key, id) in &names {
        if let Some(key) = key {
            if let Some((first, _)) = keys.insert(key, (*number, *id)) {
                return Err(invalid(
                    *number,
                    &format!("key {key:?} is already used on line {first}"),
                ));
            }
        }
    }
    // A reference is a key of this file, or the id (or an unambiguous prefix of the id) of a
    // stored record.
    let reference = |number: usize, field: &'static str, kind: IdKind, text: &str| {
        let keys = &keys;
        let text = text.to_string();
        async move {
            if kind == IdKind::Task {
                if let Some((_, id)) = keys.get(text.as_str()) {
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

    // Each line becomes its task, its text moved rather than copied, and is checked at once,
    // where its line is known: the queue checks the graph.
    let now = Utc::now();
    let mut batch = Vec::with_capacity(lines.len());
    for ((number, line), (_, _, id)) in lines.into_iter().zip(&names) {
        let defaults = NewTask::new("", "", "generic");
        let mut dependencies = Vec::with_capacity(line.depends_on.len());
        let mut named: HashMap<Uuid, &str> = HashMap::with_capacity(line.depends_on.len());
        for dependency in &line.depends_on {
            let resolved = reference(number, "depends_on", IdKind::Task, dependency).await?;
            if let Some(first) = named.insert(resolved, dependency) {
                let message = if first == dependency {
                    format!("depends_on: {dependency:?} is listed more than once")
                } else {
                    format!("depends_on: {first:?} and {dependency:?} name the same task")
                };
                return Err(invalid(number, &message));
            }
            dependencies.push(resolved);
        }
        let parent_task_id = match &line.parent {
            Some(parent) => Some(reference(number, "parent", IdKind::Task, parent).await?),
            None => None,
        };
        let session_id = match &line.session {
            Some(session) => Some(reference(number, "session", IdKind::Session, session).await?),
            None => None,
        };
        let run_after = line
            .run_after
            .as_deref()
            .map(super::args::parse_run_after)
            .transpose()
            .map_err(|e| invalid(number, &format!("run_after: {e}")))?;
        let summary_given = line.summary.is_some();
        let task = NewTask {
            id: *id,
            summary: line
                .summary
                .unwrap_or_else(|| default_summary(&line.description)),
            description: line.description,
            agent_type: line.agent_type.unwrap_or(defaults.agent_type),
            priority: line.priority.unwrap_or(defaults.priority),
            dependencies,
            parent_task_id,
            session_id,
            input_data: line.input,
            max_retries: line.max_retries.unwrap_or(defaults.max_retries),
            max_execution_timeout_seconds: line
                .timeout_seconds
                .unwrap_or(defaults.max_execution_timeout_seconds),
            deadline: line.deadline,
            feature_branch: line.branch,
            idempotency_key: line.idempotency_key,
            run_after,
            ..defaults
        };
        task.validate(now).map_err(|e| {
            let field = file_key(e.field, summary_given);
            invalid(number, &format!("invalid {field}: {}", e.message))
        })?;
        batch.push(task);
    }

    progress.set_style(
        ProgressStyle::with_template("{spinner} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    progress.set_message(format!("submitting {} tasks", batch.len()));
    progress.enable_steady_tick(std::time::Duration::from_millis(100));
    let line_of: HashMap<Uuid, (usize, Option<&str>)> = names
        .iter()
        .map(|(number, key, id)| (*id, (*number, key.as_deref())))
        .collect();
    let stored = cx.queue.submit_batch_keyed(batch).await;
    progress.finish_and_clear();
    let stored = stored.map_err(|e| {
        // The queue names tasks by id, but these were never stored: the person knows them by
        // line (and key).
        let line = e
            .task()
            .and_then(|id| line_of.get(&id).map(|(n, _)| *n))
            .or_else(|| match &e {
                // The stored task is named by id; the line is the one that carries the key.
                QueueError::IdempotencyConflict { key, .. } => names
                    .iter()
                    .zip(&idempotency_keys)
                    .find(|(_, k)| k.as_ref() == Some(key))
                    .map(|((number, _, _), _)| *number),
                _ => None,
            });
        let mut err = CliError::from(e);
        for (number, key, id) in &names {
            let name = match key {
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

    let mut imported: Vec<Imported> = stored
        .iter()
        .map(|submitted| {
            let (line, key) = line_of[&submitted.requested_id];
            Imported {
                line,
                key: key.map(str::to_string),
                id: submitted.task.id,
                status: submitted.task.status,
                existing: submitted.existing,
            }
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

/// Reads one line, its newline included, into `line`; returns its length (0 at the end).
/// Refuses (`Err(None)`) as soon as the line would pass `room` bytes, before holding them, so
/// that even a file without a newline costs at most the limit to refuse.
fn read_line(
    reader: &mut impl BufRead,
    line: &mut Vec<u8>,
    room: u64,
) -> Result<usize, Option<std::io::Error>> {
    loop {
        let chunk = match reader.fill_buf() {
            Ok(chunk) => chunk,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(Some(e)),
        };
        if chunk.is_empty() {
            return Ok(line.len());
        }
        let (take, done) = match chunk.iter().position(|&b| b == b'\n') {
            Some(at) => (at + 1, true),
            None => (chunk.len(), false),
        };
        if (line.len() + take) as u64 > room {
            return Err(None);
        }
        line.extend_from_slice(&chunk[..take]);
        reader.consume(take);
        if done {
            return Ok(line.len());
        }
    }
}

/// One line's object, with an error that names the key at fault.
fn parse_line(text: &str) -> Result<Line, String> {
    let value: Value = serde_json::from_str(text).map_err(|e| {
        // serde_json counts lines within this one line: only its column means anything here.
        let message = e.to_string();
        let message = message
            .strip_suffix(&format!(" at line {} column {}", e.line(), e.column()))
            .unwrap_or(&message);
        format!("is not JSON: {message} (column {})", e.column())
    })?;
    let Value::Object(map) = &value else {
        return Err("is not a JSON object".to_string());
    };
    Line::deserialize(&value).map_err(|e| {
        // serde does not say which key a wrong value was under: find it by reading each key on
        // its own (beside a valid description, which every line needs).
        map.iter()
            .find_map(|(key, value)| {
                let mut probe = serde_json::Map::new();
                probe.insert("description".into(), Value::String("-".into()));
                probe.insert(key.clone(), value.clone());
                Line::deserialize(&Value::Object(probe))
                    .err()
                    .map(|e| format!("{key}: {e}"))
            })
            .unwrap_or_else(|| e.to_string())
    })
}

/// The file's key for a field of a task, as the queue names it. A summary the line did not
/// give was made from its description, so a fault in it is the description's.
fn file_key(field: &'static str, summary_given: bool) -> &'static str {
    match field {
        "summary" if !summary_given => "description",
        "input_data" => "input",
        "dependencies" => "depends_on",
        "parent_task_id" => "parent",
        "session_id" => "session",
        "feature_branch" => "branch",
        "max_execution_timeout_seconds" => "timeout_seconds",
        other => other,
    }
}

/// The input as the person named it.
fn source_name(source: &Path) -> String {
    if source == Path::new("-") {
        "stdin".to_string()
    } else {
        source.display().to_string()
    }
}

fn too_large(what: &str) -> CliError {
    CliError::new(
        ExitCode::Invalid,
        format!(
            "{what} than the {} one import reads; split it into several files (an import goes \
             in as one transaction, held in memory until it does)",
            abathur_core::limits::bytes(MAX_IMPORT_BYTES as usize)
        ),
    )
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
