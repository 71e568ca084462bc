//! [`TaskRepository`] on SQLite: the `tasks` table, its `task_dependencies` edges, and a
//! `task_events` row for every status the repository sets.
//!
//! Reads go through sqlx's checked macros. Writes run through [`write`] as prepared statements
//! on the writer's rusqlite connection, every one a named constant of [`STATEMENTS`], and read
//! the time once the write lock is held.
//!
//! One truth per fact:
//! - **Dependencies.** The edges are the truth. `tasks.dependencies`, the JSON list of the
//!   specification's schema, is written from the same value as the edges by the same function
//!   ([`insert_task_raw`] for every insert, the queue's included, and `update`), and the
//!   trigger of migration 0007 drops an id from it when its edge goes by cascade (a deleted or
//!   pruned dependency). `update` refuses a change the queue would refuse: an unknown task, the
//!   task itself, or a cycle.
//! - **History.** Every status this repository gives a task (by `insert`, `insert_batch`,
//!   `update` or `update_status`) is a `task_events` row with the actor [`ACTOR`], in the
//!   same transaction, so `QueueStore::history` tells every change. `delete` removes the task
//!   with its history (the events' foreign key cascades).
//! - **Columns.** A task's columns are listed once, in [`TASK_COLUMNS`], which the insert,
//!   the rusqlite select and the dynamic list are built from (the update names each column
//!   it sets beside its parameter: all but `id` and `submitted_at`). The sqlx macros need
//!   their SQL as a literal, so the three checked selects of a whole task
//!   (`queries/task_get.sql`, `ready_tasks.sql`, `task_dependents.sql`) spell the list out,
//!   and a test checks that each names exactly [`TASK_COLUMNS`] in its order. Every row, read
//!   by sqlx or rusqlite, decodes through [`TaskRow`].

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use abathur_core::clock::{Clock, SystemClock};
use abathur_core::error::DatabaseError;
use abathur_core::models::{Task, TaskStatus, MAX_PRIORITY};
use abathur_core::ports::{
    FinishedMinute, TaskFilters, TaskOrder, TaskPageQuery, TaskRepository, MAX_SEARCH_CANDIDATES,
};
use abathur_core::timestamp;
use abathur_core::ValidationError;
use async_trait::async_trait;
use rusqlite::{params, OptionalExtension};
use sqlx::{QueryBuilder, Sqlite, SqlitePool};
use uuid::Uuid;

use super::errors::{on, raw_on};
use super::row::{json_text, opt_timestamp_text, RowContext};
use super::writer::{change_one, write};

const ENTITY: &str = "task";

/// The actor of the history rows this repository writes.
pub(crate) const ACTOR: &str = "repository";

/// Every column of a task, in [`TaskRow`]'s order: the one list of them.
macro_rules! task_columns {
    () => {
        "id, summary, description, agent_type, priority, calculated_priority, status, \
         dependencies, dependency_type, dependency_depth, input_data, result_data, \
         error_message, retry_count, max_retries, max_execution_timeout_seconds, submitted_at, \
         started_at, completed_at, last_updated_at, created_by, parent_task_id, session_id, \
         source, deadline, estimated_duration_seconds, feature_branch, task_branch, \
         worktree_path"
    };
}

/// The columns of a task, in [`TaskRow`]'s order.
pub(crate) const TASK_COLUMNS: &str = task_columns!();

/// A new task row: `?1` to `?29` in [`TASK_COLUMNS`]' order.
pub(crate) const INSERT_TASK: &str = concat!(
    "INSERT INTO tasks (",
    task_columns!(),
    ") VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, \
     ?19, ?20, ?21, ?22, ?23, ?24, ?25, ?26, ?27, ?28, ?29)"
);

/// The edges of task `?1` to every id of the JSON array `?2`. `WHERE true` lets SQLite parse
/// ON CONFLICT after a SELECT.
pub(crate) const INSERT_EDGES: &str = "INSERT INTO task_dependencies (task_id, depends_on_task_id)
     SELECT ?1, value FROM json_each(?2) WHERE true
     ON CONFLICT DO NOTHING";

/// A whole task by id.
pub(crate) const SELECT_TASK: &str =
    concat!("SELECT ", task_columns!(), " FROM tasks WHERE id = ?1");

pub(crate) const TASK_EXISTS: &str = "SELECT EXISTS (SELECT 1 FROM tasks WHERE id = ?1)";

const SESSION_EXISTS: &str = "SELECT EXISTS (SELECT 1 FROM sessions WHERE id = ?1)";

const TASK_STATUS: &str = "SELECT status FROM tasks WHERE id = ?1";

/// Every column of task `?1` but `id` and `submitted_at`, in [`TASK_COLUMNS`]' order. A change
/// of status, priority or depth forgets the claim key (the right-hand sides read the row as it
/// was): a task made ready here, outside the queue, is claimed after every task the queue keyed
/// (`docs/PRIORITY.md`).
const UPDATE_TASK: &str = "UPDATE tasks SET
     summary = ?2, description = ?3, agent_type = ?4, priority = ?5, calculated_priority = ?6,
     status = ?7, dependencies = ?8, dependency_type = ?9, dependency_depth = ?10,
     input_data = ?11, result_data = ?12, error_message = ?13, retry_count = ?14,
     max_retries = ?15, max_execution_timeout_seconds = ?16, started_at = ?17,
     completed_at = ?18, last_updated_at = ?19, created_by = ?20, parent_task_id = ?21,
     session_id = ?22, source = ?23, deadline = ?24, estimated_duration_seconds = ?25,
     feature_branch = ?26, task_branch = ?27, worktree_path = ?28,
     claim_key = CASE WHEN status = ?7 AND priority = ?5 AND dependency_depth = ?10
                      THEN claim_key END
 WHERE id = ?1";

/// The edges of task `?1` to ids no longer in the JSON array `?2`.
const DROP_STALE_EDGES: &str = "DELETE FROM task_dependencies
     WHERE task_id = ?1 AND depends_on_task_id NOT IN (SELECT value FROM json_each(?2))";

/// The first id of the JSON array `?2` from which the stored edges lead back to task `?1`:
/// making `?1` depend on it would close a cycle. Each task is visited once per start.
const CLOSES_CYCLE: &str = "WITH RECURSIVE reach(start, id) AS (
         SELECT value, value FROM json_each(?2)
         UNION
         SELECT reach.start, d.depends_on_task_id
         FROM reach JOIN task_dependencies d ON d.task_id = reach.id
         WHERE reach.id <> ?1)
     SELECT start FROM reach WHERE id = ?1 LIMIT 1";

/// Sets task `?1`'s status `?2` at `?3`, with `started_at` `?4` and `completed_at` `?5` when
/// they are given. A new status forgets the claim key, as [`UPDATE_TASK`] does.
const UPDATE_STATUS: &str = "UPDATE tasks SET
         status = ?2, last_updated_at = ?3,
         claim_key = CASE WHEN status = ?2 THEN claim_key END,
         started_at = COALESCE(?4, started_at), completed_at = COALESCE(?5, completed_at)
     WHERE id = ?1";

/// One history row, with the columns the queue writes; a repository's change has no attempt.
const RECORD_EVENT: &str =
    "INSERT INTO task_events (task_id, from_status, to_status, at, actor, attempt_id, reason)
     VALUES (?1, ?2, ?3, ?4, ?5, NULL, ?6)";

/// Edges, dependents' lists (by the trigger of migration 0007) and history go with the task;
/// children and agents lose the reference (`ON DELETE SET NULL`).
const DELETE_TASK: &str = "DELETE FROM tasks WHERE id = ?1";

/// Foreign keys checked at commit, for a batch whose members refer to each other in any order.
const DEFER_FOREIGN_KEYS: &str = "PRAGMA defer_foreign_keys = ON";

/// Back to immediate checks, so that the operations committed with this one are not slowed.
const IMMEDIATE_FOREIGN_KEYS: &str = "PRAGMA defer_foreign_keys = OFF";

/// Every statement this module runs through rusqlite, for the catalogue test.
#[cfg_attr(not(test), allow(dead_code))] // reason: read only by the catalogue test
pub(crate) const STATEMENTS: &[(&str, &str)] = &[
    ("INSERT_TASK", INSERT_TASK),
    ("INSERT_EDGES", INSERT_EDGES),
    ("SELECT_TASK", SELECT_TASK),
    ("TASK_EXISTS", TASK_EXISTS),
    ("SESSION_EXISTS", SESSION_EXISTS),
    ("TASK_STATUS", TASK_STATUS),
    ("UPDATE_TASK", UPDATE_TASK),
    ("DROP_STALE_EDGES", DROP_STALE_EDGES),
    ("CLOSES_CYCLE", CLOSES_CYCLE),
    ("UPDATE_STATUS", UPDATE_STATUS),
    ("RECORD_EVENT", RECORD_EVENT),
    ("DELETE_TASK", DELETE_TASK),
    ("DEFER_FOREIGN_KEYS", DEFER_FOREIGN_KEYS),
    ("IMMEDIATE_FOREIGN_KEYS", IMMEDIATE_FOREIGN_KEYS),
];

/// The reasons of the history rows this repository writes.
const INSERTED: &str = "inserted";
const UPDATED: &str = "updated";
const STATUS_SET: &str = "status set";

/// The SQLite task store.
#[derive(Debug, Clone)]
pub struct TaskRepositoryImpl {
    pool: SqlitePool,
    clock: Arc<dyn Clock>,
}

impl TaskRepositoryImpl {
    /// A repository on `pool`, taking time from the system clock.
    pub fn new(pool: SqlitePool) -> Self {
        Self::with_clock(pool, Arc::new(SystemClock))
    }

    /// A repository on `pool`, taking time from `clock`.
    pub fn with_clock(pool: SqlitePool, clock: Arc<dyn Clock>) -> Self {
        Self { pool, clock }
    }
}

/// A task as stored: every column in its SQLite type, in [`TASK_COLUMNS`]' order. Every read
/// of a whole task decodes through it.
#[derive(Debug, sqlx::FromRow)]
pub(crate) struct TaskRow {
    id: String,
    summary: String,
    description: String,
    agent_type: String,
    priority: i64,
    calculated_priority: f64,
    status: String,
    dependencies: Option<String>,
    dependency_type: String,
    dependency_depth: i64,
    input_data: Option<String>,
    result_data: Option<String>,
    error_message: Option<String>,
    retry_count: i64,
    max_retries: i64,
    max_execution_timeout_seconds: i64,
    submitted_at: String,
    started_at: Option<String>,
    completed_at: Option<String>,
    last_updated_at: String,
    created_by: Option<String>,
    parent_task_id: Option<String>,
    session_id: Option<String>,
    source: String,
    deadline: Option<String>,
    estimated_duration_seconds: Option<i64>,
    feature_branch: Option<String>,
    task_branch: Option<String>,
    worktree_path: Option<String>,
}

impl TryFrom<TaskRow> for Task {
    type Error = DatabaseError;

    fn try_from(r: TaskRow) -> Result<Self, Self::Error> {
        let cx = RowContext {
            table: "tasks",
            id: &r.id,
        };
        let dependencies = match r.dependencies.as_deref() {
            None => None,
            Some(text) => Some(serde_json::from_str::<Vec<Uuid>>(text).map_err(|e| {
                cx.corrupt("dependencies", format!("not a JSON array of UUIDs: {e}"))
            })?),
        };
        let priority: u8 = cx.int("priority", r.priority)?;
        if priority > MAX_PRIORITY {
            return Err(cx.corrupt("priority", format!("{priority} is above {MAX_PRIORITY}")));
        }
        Ok(Task {
            id: cx.uuid("id", &r.id)?,
            summary: r.summary,
            description: r.description,
            agent_type: r.agent_type,
            priority,
            calculated_priority: r.calculated_priority,
            status: cx.parse("status", &r.status)?,
            dependencies,
            dependency_type: cx.parse("dependency_type", &r.dependency_type)?,
            dependency_depth: cx.int("dependency_depth", r.dependency_depth)?,
            input_data: cx.opt_json("input_data", r.input_data.as_deref())?,
            result_data: cx.opt_json("result_data", r.result_data.as_deref())?,
            error_message: r.error_message,
            retry_count: cx.int("retry_count", r.retry_count)?,
            max_retries: cx.int("max_retries", r.max_retries)?,
            max_execution_timeout_seconds: cx.int(
                "max_execution_timeout_seconds",
                r.max_execution_timeout_seconds,
            )?,
            submitted_at: cx.timestamp("submitted_at", &r.submitted_at)?,
            started_at: cx.opt_timestamp("started_at", r.started_at.as_deref())?,
            completed_at: cx.opt_timestamp("completed_at", r.completed_at.as_deref())?,
            last_updated_at: cx.timestamp("last_updated_at", &r.last_updated_at)?,
            created_by: r.created_by,
            parent_task_id: cx.opt_uuid("parent_task_id", r.parent_task_id.as_deref())?,
            session_id: cx.opt_uuid("session_id", r.session_id.as_deref())?,
            source: cx.parse("source", &r.source)?,
            deadline: cx.opt_timestamp("deadline", r.deadline.as_deref())?,
            estimated_duration_seconds: cx
                .opt_int("estimated_duration_seconds", r.estimated_duration_seconds)?,
            feature_branch: r.feature_branch,
            task_branch: r.task_branch,
            worktree_path: r.worktree_path,
        })
    }
}

/// The rowids of the tasks whose summary may hold the search text, from the trigram index of
/// migration 0009, when the text is long enough to look up and names at most
/// [`MAX_SEARCH_CANDIDATES`] tasks; `None` when the page is to be read by scanning its order.
async fn search_candidates(
    pool: &SqlitePool,
    query: &TaskPageQuery,
) -> Result<Option<Vec<i64>>, DatabaseError> {
    let Some(text) = query.indexed_search() else {
        return Ok(None);
    };
    // A phrase of the trigram tokenizer matches the text anywhere, whatever the letters' case;
    // inside double quotes every character is literal but the quote, which is doubled.
    let phrase = format!("\"{}\"", text.replace('"', "\"\""));
    let limit = i64::try_from(MAX_SEARCH_CANDIDATES + 1).unwrap_or(i64::MAX);
    let rowids: Vec<i64> =
        sqlx::query_scalar("SELECT rowid FROM task_summaries WHERE task_summaries MATCH ? LIMIT ?")
            .bind(phrase)
            .bind(limit)
            .fetch_all(pool)
            .await
            .map_err(on(ENTITY, ""))?;
    Ok((rowids.len() <= MAX_SEARCH_CANDIDATES).then_some(rowids))
}

/// Appends the search, the cursor, the order and the limit of a page. The cursor's condition
/// names the order's columns as its `ORDER BY` does, so the store walks the same index from
/// the cursor on.
fn push_page(qb: &mut QueryBuilder<'_, Sqlite>, query: &TaskPageQuery) {
    if let Some(pattern) = query.summary_pattern() {
        qb.push(" AND summary LIKE ")
            .push_bind(pattern)
            .push(" ESCAPE '\\'");
    }
    if let Some(cursor) = &query.after {
        let (at, id) = (
            timestamp::format(&cursor.submitted_at),
            cursor.id.to_string(),
        );
        match query.order {
            TaskOrder::Newest => {
                qb.push(" AND (submitted_at, id) < (")
                    .push_bind(at)
                    .push(", ")
                    .push_bind(id)
                    .push(")");
            }
            TaskOrder::Oldest => {
                qb.push(" AND (submitted_at, id) > (")
                    .push_bind(at)
                    .push(", ")
                    .push_bind(id)
                    .push(")");
            }
            TaskOrder::Priority => {
                // The first term alone bounds the index range; the second drops the ties
                // already shown.
                qb.push(" AND calculated_priority <= ")
                    .push_bind(cursor.calculated_priority)
                    .push(" AND (calculated_priority < ")
                    .push_bind(cursor.calculated_priority)
                    .push(" OR (submitted_at, id) > (")
                    .push_bind(at)
                    .push(", ")
                    .push_bind(id)
                    .push("))");
            }
        }
    }
    qb.push(match query.order {
        TaskOrder::Newest => " ORDER BY submitted_at DESC, id DESC",
        TaskOrder::Oldest => " ORDER BY submitted_at ASC, id ASC",
        TaskOrder::Priority => " ORDER BY calculated_priority DESC, submitted_at ASC, id ASC",
    });
    qb.push(" LIMIT ").push_bind(i64::from(query.limit));
}

pub(crate) fn tasks_from_rows(rows: Vec<TaskRow>) -> Result<Vec<Task>, DatabaseError> {
    rows.into_iter().map(Task::try_from).collect()
}

impl TaskRow {
    /// A row of `SELECT {TASK_COLUMNS}`, read through rusqlite.
    pub(crate) fn from_raw(row: &rusqlite::Row<'_>) -> rusqlite::Result<Self> {
        Ok(Self {
            id: row.get(0)?,
            summary: row.get(1)?,
            description: row.get(2)?,
            agent_type: row.get(3)?,
            priority: row.get(4)?,
            calculated_priority: row.get(5)?,
            status: row.get(6)?,
            dependencies: row.get(7)?,
            dependency_type: row.get(8)?,
            dependency_depth: row.get(9)?,
            input_data: row.get(10)?,
            result_data: row.get(11)?,
            error_message: row.get(12)?,
            retry_count: row.get(13)?,
            max_retries: row.get(14)?,
            max_execution_timeout_seconds: row.get(15)?,
            submitted_at: row.get(16)?,
            started_at: row.get(17)?,
            completed_at: row.get(18)?,
            last_updated_at: row.get(19)?,
            created_by: row.get(20)?,
            parent_task_id: row.get(21)?,
            session_id: row.get(22)?,
            source: row.get(23)?,
            deadline: row.get(24)?,
            estimated_duration_seconds: row.get(25)?,
            feature_branch: row.get(26)?,
            task_branch: row.get(27)?,
            worktree_path: row.get(28)?,
        })
    }
}

/// The task with this id, read through sqlx: the repository's `get`.
async fn load_task(pool: &SqlitePool, id: &str) -> Result<Option<Task>, DatabaseError> {
    let row = sqlx::query_file_as!(TaskRow, "src/queries/task_get.sql", id)
        .fetch_optional(pool)
        .await
        .map_err(on(ENTITY, id))?;
    row.map(Task::try_from).transpose()
}

/// The task with this id, inside a write.
pub(crate) fn load_task_raw(
    raw: &rusqlite::Connection,
    id: &str,
) -> Result<Option<Task>, DatabaseError> {
    let row = raw
        .prepare_cached(SELECT_TASK)
        .and_then(|mut q| q.query_row([id], TaskRow::from_raw).optional())
        .map_err(raw_on(ENTITY, id))?;
    row.map(Task::try_from).transpose()
}

/// A validated task in its stored form.
pub(crate) struct TaskParams {
    pub(crate) id: String,
    summary: String,
    description: String,
    agent_type: String,
    priority: i64,
    calculated_priority: f64,
    status: &'static str,
    /// `status`, as the domain's value, for the history.
    task_status: TaskStatus,
    dependencies: Option<String>,
    /// The same ids as `dependencies`, one string each.
    dependency_ids: Vec<String>,
    dependency_type: &'static str,
    dependency_depth: i64,
    input_data: Option<String>,
    result_data: Option<String>,
    error_message: Option<String>,
    retry_count: i64,
    max_retries: i64,
    max_execution_timeout_seconds: i64,
    submitted_at: String,
    started_at: Option<String>,
    completed_at: Option<String>,
    last_updated_at: String,
    created_by: Option<String>,
    parent_task_id: Option<String>,
    session_id: Option<String>,
    source: &'static str,
    deadline: Option<String>,
    estimated_duration_seconds: Option<i64>,
    feature_branch: Option<String>,
    task_branch: Option<String>,
    worktree_path: Option<String>,
}

impl TaskParams {
    pub(crate) fn new(task: Task) -> Result<Self, DatabaseError> {
        task.validate()?;
        let dependency_ids: Vec<String> = task
            .dependencies
            .iter()
            .flatten()
            .map(Uuid::to_string)
            .collect();
        let dependencies = task
            .dependencies
            .as_ref()
            .map(|_| serde_json::Value::from(dependency_ids.clone()).to_string());
        Ok(Self {
            id: task.id.to_string(),
            summary: task.summary,
            description: task.description,
            agent_type: task.agent_type,
            priority: i64::from(task.priority),
            calculated_priority: task.calculated_priority,
            status: task.status.as_str(),
            task_status: task.status,
            dependencies,
            dependency_ids,
            dependency_type: task.dependency_type.as_str(),
            dependency_depth: i64::from(task.dependency_depth),
            input_data: task.input_data.as_ref().map(json_text),
            result_data: task.result_data.as_ref().map(json_text),
            error_message: task.error_message,
            retry_count: i64::from(task.retry_count),
            max_retries: i64::from(task.max_retries),
            max_execution_timeout_seconds: i64::from(task.max_execution_timeout_seconds),
            submitted_at: timestamp::format(&task.submitted_at),
            started_at: opt_timestamp_text(task.started_at.as_ref()),
            completed_at: opt_timestamp_text(task.completed_at.as_ref()),
            last_updated_at: timestamp::format(&task.last_updated_at),
            created_by: task.created_by,
            parent_task_id: task.parent_task_id.map(|id| id.to_string()),
            session_id: task.session_id.map(|id| id.to_string()),
            source: task.source.as_str(),
            deadline: opt_timestamp_text(task.deadline.as_ref()),
            estimated_duration_seconds: task.estimated_duration_seconds.map(i64::from),
            feature_branch: task.feature_branch,
            task_branch: task.task_branch,
            worktree_path: task.worktree_path,
        })
    }
}

/// Inserts a task row and its dependency edges, both from the same list, inside a write: every
/// task stored, by this repository or by the queue, goes through here.
///
/// # Errors
/// The classified error of the insert: `UniqueViolation` for a taken id, `ForeignKeyViolation`
/// (unnamed: see [`first_missing_reference_raw`]) for a reference to nothing when foreign keys
/// are checked at once.
pub(crate) fn insert_task_raw(
    raw: &rusqlite::Connection,
    t: &TaskParams,
) -> Result<(), DatabaseError> {
    raw.prepare_cached(INSERT_TASK)
        .and_then(|mut insert| {
            insert.execute(params![
                t.id,
                t.summary,
                t.description,
                t.agent_type,
                t.priority,
                t.calculated_priority,
                t.status,
                t.dependencies,
                t.dependency_type,
                t.dependency_depth,
                t.input_data,
                t.result_data,
                t.error_message,
                t.retry_count,
                t.max_retries,
                t.max_execution_timeout_seconds,
                t.submitted_at,
                t.started_at,
                t.completed_at,
                t.last_updated_at,
                t.created_by,
                t.parent_task_id,
                t.session_id,
                t.source,
                t.deadline,
                t.estimated_duration_seconds,
                t.feature_branch,
                t.task_branch,
                t.worktree_path,
            ])
        })
        .map_err(raw_on(ENTITY, &t.id))?;
    insert_edges(raw, t)
}

/// The edges of `t`'s dependency list.
fn insert_edges(raw: &rusqlite::Connection, t: &TaskParams) -> Result<(), DatabaseError> {
    if let Some(deps) = &t.dependencies {
        raw.prepare_cached(INSERT_EDGES)
            .and_then(|mut edges| edges.execute(params![t.id, deps]))
            .map_err(raw_on(ENTITY, &t.id))?;
    }
    Ok(())
}

/// The first reference of `task` (parent, session, dependency) that names no stored row and no
/// member of `pending` (the other members of a batch), with what it is. Runs inside the
/// write, so the answer is current.
pub(crate) fn first_missing_reference_raw(
    raw: &rusqlite::Connection,
    task: &TaskParams,
    pending: &HashSet<&str>,
) -> Result<Option<(&'static str, String)>, DatabaseError> {
    let parent = task.parent_task_id.iter().map(|id| ("parent task", id));
    let session = task.session_id.iter().map(|id| ("session", id));
    let deps = task.dependency_ids.iter().map(|id| ("dependency", id));
    for (reference, id) in parent.chain(session).chain(deps) {
        if pending.contains(id.as_str()) {
            continue;
        }
        let sql = if reference == "session" {
            SESSION_EXISTS
        } else {
            TASK_EXISTS
        };
        let exists: bool = raw
            .prepare_cached(sql)
            .and_then(|mut q| q.query_row([id], |row| row.get(0)))
            .map_err(raw_on(ENTITY, &task.id))?;
        if !exists {
            return Ok(Some((reference, id.clone())));
        }
    }
    Ok(None)
}

/// The error for a reference of a task to `id`, which names nothing.
pub(crate) fn missing(reference: &'static str, id: String) -> DatabaseError {
    DatabaseError::ForeignKeyViolation {
        entity: ENTITY,
        reference,
        id: Some(id),
    }
}

/// `err`, with a foreign-key failure of `t` diagnosed to name the missing reference.
fn named_reference(
    raw: &rusqlite::Connection,
    err: DatabaseError,
    t: &TaskParams,
    pending: &HashSet<&str>,
) -> DatabaseError {
    match err {
        DatabaseError::ForeignKeyViolation { .. } => {
            match first_missing_reference_raw(raw, t, pending) {
                Ok(Some((reference, id))) => missing(reference, id),
                Ok(None) => DatabaseError::ForeignKeyViolation {
                    entity: ENTITY,
                    reference: "parent task, session or dependency",
                    id: None,
                },
                Err(e) => e,
            }
        }
        other => other,
    }
}

/// The stored status of task `id`, or `None` when there is no such task.
fn stored_status(
    raw: &rusqlite::Connection,
    id: &str,
) -> Result<Option<TaskStatus>, DatabaseError> {
    let status: Option<String> = raw
        .prepare_cached(TASK_STATUS)
        .and_then(|mut q| q.query_row([id], |row| row.get(0)).optional())
        .map_err(raw_on(ENTITY, id))?;
    status
        .map(|s| RowContext { table: "tasks", id }.parse("status", &s))
        .transpose()
}

/// Appends a change of task `id` from `from` to `to` at `now` to its history.
fn record(
    raw: &rusqlite::Connection,
    id: &str,
    from: Option<TaskStatus>,
    to: TaskStatus,
    now: &str,
    reason: &str,
) -> Result<(), DatabaseError> {
    raw.prepare_cached(RECORD_EVENT)
        .and_then(|mut q| {
            q.execute(params![
                id,
                from.map(TaskStatus::as_str),
                to.as_str(),
                now,
                ACTOR,
                reason
            ])
        })
        .map_err(raw_on(ENTITY, id))?;
    Ok(())
}

/// Refuses a dependency list the queue would refuse, before anything is written: an unknown
/// task (`ForeignKeyViolation` naming it) or one that already depends on `t`, directly or
/// through others (a `Validation` error on `dependencies`). `t` itself is refused by
/// [`Task::validate`].
fn check_dependencies(raw: &rusqlite::Connection, t: &TaskParams) -> Result<(), DatabaseError> {
    if let Some((reference, id)) = first_missing_reference_raw(raw, t, &HashSet::new())? {
        return Err(missing(reference, id));
    }
    let Some(deps) = &t.dependencies else {
        return Ok(());
    };
    let closing: Option<String> = raw
        .prepare_cached(CLOSES_CYCLE)
        .and_then(|mut q| {
            q.query_row(params![t.id, deps], |row| row.get(0))
                .optional()
        })
        .map_err(raw_on(ENTITY, &t.id))?;
    match closing {
        Some(dep) => Err(ValidationError::new(
            "dependencies",
            format!(
                "task {dep} already depends on task {}, directly or through other tasks: \
                 depending on it would make a cycle",
                t.id
            ),
        )
        .into()),
        None => Ok(()),
    }
}

/// Refuses a batch whose members depend on each other in a loop. Stored tasks cannot depend
/// on a new one, so only the members can form a cycle.
fn check_batch_cycles(batch: &[TaskParams]) -> Result<(), DatabaseError> {
    let index: HashMap<&str, usize> = batch
        .iter()
        .enumerate()
        .map(|(i, t)| (t.id.as_str(), i))
        .collect();
    let mut waiting = vec![0usize; batch.len()];
    let mut dependents: Vec<Vec<usize>> = vec![Vec::new(); batch.len()];
    for (i, t) in batch.iter().enumerate() {
        for dep in &t.dependency_ids {
            if let Some(&d) = index.get(dep.as_str()) {
                waiting[i] += 1;
                dependents[d].push(i);
            }
        }
    }
    let mut free: Vec<usize> = (0..batch.len()).filter(|&i| waiting[i] == 0).collect();
    while let Some(i) = free.pop() {
        for &d in &dependents[i] {
            waiting[d] -= 1;
            if waiting[d] == 0 {
                free.push(d);
            }
        }
    }
    match waiting.iter().position(|&w| w > 0) {
        Some(i) => Err(ValidationError::new(
            "dependencies",
            format!(
                "task {} waits on a cycle of dependencies among the members of the batch",
                batch[i].id
            ),
        )
        .into()),
        None => Ok(()),
    }
}

fn check_filters(filters: &TaskFilters) -> Result<(), DatabaseError> {
    Ok(filters.check()?)
}

/// Appends `AND ...` for every filter that is set, each value bound.
fn push_filters(qb: &mut QueryBuilder<'_, Sqlite>, f: &TaskFilters) {
    if let Some(status) = f.status {
        qb.push(" AND status = ").push_bind(status.as_str());
    }
    if let Some(agent_type) = &f.agent_type {
        qb.push(" AND agent_type = ").push_bind(agent_type.clone());
    }
    if let Some(branch) = &f.feature_branch {
        qb.push(" AND feature_branch = ").push_bind(branch.clone());
    }
    if let Some(session) = f.session_id {
        qb.push(" AND session_id = ").push_bind(session.to_string());
    }
    if let Some(source) = f.source {
        qb.push(" AND source = ").push_bind(source.as_str());
    }
    if let Some(parent) = f.parent_task_id {
        qb.push(" AND parent_task_id = ")
            .push_bind(parent.to_string());
    }
    if let Some(min) = f.min_priority {
        qb.push(" AND priority >= ").push_bind(i64::from(min));
    }
    if let Some(max) = f.max_priority {
        qb.push(" AND priority <= ").push_bind(i64::from(max));
    }
    if let Some(after) = &f.submitted_after {
        qb.push(" AND submitted_at >= ")
            .push_bind(timestamp::format(after));
    }
    if let Some(before) = &f.submitted_before {
        qb.push(" AND submitted_at < ")
            .push_bind(timestamp::format(before));
    }
}

impl TaskRepositoryImpl {
    /// The tasks whose id `ids_sql` selects, given `ids` as its first parameter, a JSON array,
    /// and `limit`, when there is one, as its second.
    async fn read_by_ids(
        &self,
        ids_sql: &str,
        ids: &[Uuid],
        limit: Option<usize>,
    ) -> Result<Vec<Task>, DatabaseError> {
        if ids.is_empty() || limit == Some(0) {
            return Ok(Vec::new());
        }
        let list = serde_json::Value::from(ids.iter().map(Uuid::to_string).collect::<Vec<_>>());
        let sql = format!("SELECT {TASK_COLUMNS} FROM tasks WHERE id IN ({ids_sql})");
        let mut query = sqlx::query_as::<_, TaskRow>(&sql).bind(list.to_string());
        if let Some(limit) = limit {
            query = query.bind(i64::try_from(limit).unwrap_or(i64::MAX));
        }
        let rows = query.fetch_all(&self.pool).await.map_err(on(ENTITY, ""))?;
        tasks_from_rows(rows)
    }
}

#[async_trait]
impl TaskRepository for TaskRepositoryImpl {
    async fn insert(&self, task: Task) -> Result<(), DatabaseError> {
        let params = TaskParams::new(task)?;
        let status = params.task_status;
        let clock = Arc::clone(&self.clock);
        write(&self.pool, move |raw| {
            let now = timestamp::format(&clock.now());
            insert_task_raw(raw, &params)
                .map_err(|e| named_reference(raw, e, &params, &HashSet::new()))?;
            record(raw, &params.id, None, status, &now, INSERTED)
        })
        .await
    }

    async fn get(&self, id: Uuid) -> Result<Option<Task>, DatabaseError> {
        load_task(&self.pool, &id.to_string()).await
    }

    async fn update(&self, task: Task) -> Result<(), DatabaseError> {
        let mut t = TaskParams::new(task)?;
        let clock = Arc::clone(&self.clock);
        write(&self.pool, move |raw| {
            t.last_updated_at = timestamp::format(&clock.now());
            let from = stored_status(raw, &t.id)?
                .ok_or_else(|| DatabaseError::not_found(ENTITY, &t.id))?;
            check_dependencies(raw, &t)?;
            raw.prepare_cached(UPDATE_TASK)
                .and_then(|mut update| {
                    update.execute(params![
                        t.id,
                        t.summary,
                        t.description,
                        t.agent_type,
                        t.priority,
                        t.calculated_priority,
                        t.status,
                        t.dependencies,
                        t.dependency_type,
                        t.dependency_depth,
                        t.input_data,
                        t.result_data,
                        t.error_message,
                        t.retry_count,
                        t.max_retries,
                        t.max_execution_timeout_seconds,
                        t.started_at,
                        t.completed_at,
                        t.last_updated_at,
                        t.created_by,
                        t.parent_task_id,
                        t.session_id,
                        t.source,
                        t.deadline,
                        t.estimated_duration_seconds,
                        t.feature_branch,
                        t.task_branch,
                        t.worktree_path,
                    ])
                })
                .map_err(raw_on(ENTITY, &t.id))
                .map_err(|e| named_reference(raw, e, &t, &HashSet::new()))?;
            let deps = t.dependencies.as_deref().unwrap_or("[]");
            raw.prepare_cached(DROP_STALE_EDGES)
                .and_then(|mut q| q.execute(params![t.id, deps]))
                .map_err(raw_on(ENTITY, &t.id))?;
            insert_edges(raw, &t)?;
            if from != t.task_status {
                record(
                    raw,
                    &t.id,
                    Some(from),
                    t.task_status,
                    &t.last_updated_at,
                    UPDATED,
                )?;
            }
            Ok(())
        })
        .await
    }

    async fn delete(&self, id: Uuid) -> Result<(), DatabaseError> {
        let id = id.to_string();
        write(&self.pool, move |raw| {
            change_one(raw, DELETE_TASK, [&id], ENTITY, &id)?;
            Ok(())
        })
        .await
    }

    async fn list(&self, filters: TaskFilters) -> Result<Vec<Task>, DatabaseError> {
        check_filters(&filters)?;
        let mut qb = QueryBuilder::new(format!("SELECT {TASK_COLUMNS} FROM tasks WHERE 1 = 1"));
        push_filters(&mut qb, &filters);
        qb.push(" ORDER BY calculated_priority DESC, submitted_at ASC, id ASC LIMIT ")
            // LIMIT -1 is SQLite's "no limit".
            .push_bind(filters.limit.unwrap_or(-1))
            .push(" OFFSET ")
            .push_bind(filters.offset.unwrap_or(0));
        let rows = qb
            .build_query_as::<TaskRow>()
            .fetch_all(&self.pool)
            .await
            .map_err(on(ENTITY, ""))?;
        tasks_from_rows(rows)
    }

    async fn count(&self, filters: TaskFilters) -> Result<i64, DatabaseError> {
        check_filters(&filters)?;
        let mut qb = QueryBuilder::new("SELECT COUNT(*) FROM tasks WHERE 1 = 1");
        push_filters(&mut qb, &filters);
        qb.build_query_scalar::<i64>()
            .fetch_one(&self.pool)
            .await
            .map_err(on(ENTITY, ""))
    }

    async fn get_ready_tasks(&self, limit: usize) -> Result<Vec<Task>, DatabaseError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        // In its own file so the query-plan test runs exactly this text.
        let rows = sqlx::query_file_as!(TaskRow, "src/queries/ready_tasks.sql", limit)
            .fetch_all(&self.pool)
            .await
            .map_err(on(ENTITY, ""))?;
        tasks_from_rows(rows)
    }

    async fn update_status(&self, id: Uuid, status: TaskStatus) -> Result<(), DatabaseError> {
        let id = id.to_string();
        let clock = Arc::clone(&self.clock);
        write(&self.pool, move |raw| {
            let now = timestamp::format(&clock.now());
            let from =
                stored_status(raw, &id)?.ok_or_else(|| DatabaseError::not_found(ENTITY, &id))?;
            let started_at = (status == TaskStatus::Running).then_some(now.as_str());
            let completed_at = status.is_terminal().then_some(now.as_str());
            raw.prepare_cached(UPDATE_STATUS)
                .and_then(|mut q| {
                    q.execute(params![id, status.as_str(), now, started_at, completed_at])
                })
                .map_err(raw_on(ENTITY, &id))?;
            if from != status {
                record(raw, &id, Some(from), status, &now, STATUS_SET)?;
            }
            Ok(())
        })
        .await
    }

    async fn get_dependents(&self, id: Uuid) -> Result<Vec<Task>, DatabaseError> {
        let id = id.to_string();
        let rows = sqlx::query_file_as!(TaskRow, "src/queries/task_dependents.sql", id)
            .fetch_all(&self.pool)
            .await
            .map_err(on(ENTITY, &id))?;
        tasks_from_rows(rows)
    }

    async fn get_many(&self, ids: &[Uuid]) -> Result<Vec<Task>, DatabaseError> {
        self.read_by_ids("SELECT value FROM json_each(?)", ids, None)
            .await
    }

    async fn get_dependents_of_many(
        &self,
        ids: &[Uuid],
        limit: usize,
    ) -> Result<Vec<Task>, DatabaseError> {
        self.read_by_ids(
            "SELECT task_id FROM task_dependencies \
             WHERE depends_on_task_id IN (SELECT value FROM json_each(?)) LIMIT ?",
            ids,
            Some(limit),
        )
        .await
    }

    async fn get_by_parent(&self, parent_id: Uuid) -> Result<Vec<Task>, DatabaseError> {
        self.list(TaskFilters {
            parent_task_id: Some(parent_id),
            ..TaskFilters::default()
        })
        .await
    }

    async fn get_by_session(&self, session_id: Uuid) -> Result<Vec<Task>, DatabaseError> {
        self.list(TaskFilters {
            session_id: Some(session_id),
            ..TaskFilters::default()
        })
        .await
    }

    async fn page(&self, query: TaskPageQuery) -> Result<Vec<Task>, DatabaseError> {
        query.check()?;
        let mut qb = match search_candidates(&self.pool, &query).await? {
            // The few tasks the trigram index names: each is read by its rowid and tested
            // against every condition below, the summary's among them.
            Some(rowids) => {
                let mut qb = QueryBuilder::new(format!(
                    "SELECT {TASK_COLUMNS} FROM (SELECT value AS candidate FROM json_each("
                ));
                qb.push_bind(serde_json::Value::from(rowids).to_string())
                    .push(")) CROSS JOIN tasks ON tasks.rowid = candidate WHERE 1 = 1");
                qb
            }
            None => QueryBuilder::new(format!("SELECT {TASK_COLUMNS} FROM tasks WHERE 1 = 1")),
        };
        push_filters(&mut qb, &query.filters);
        push_page(&mut qb, &query);
        let rows = qb
            .build_query_as::<TaskRow>()
            .fetch_all(&self.pool)
            .await
            .map_err(on(ENTITY, ""))?;
        tasks_from_rows(rows)
    }

    async fn finished_per_minute(
        &self,
        since: chrono::DateTime<chrono::Utc>,
    ) -> Result<Vec<FinishedMinute>, DatabaseError> {
        timestamp::check("since", &since)?;
        // Timestamps are fixed-width text: the first 16 characters name the minute.
        let rows: Vec<(String, String, i64)> = sqlx::query_as(
            "SELECT substr(completed_at, 1, 16) AS minute, status, COUNT(*) FROM tasks
             WHERE completed_at >= ? GROUP BY minute, status ORDER BY minute",
        )
        .bind(timestamp::format(&since))
        .fetch_all(&self.pool)
        .await
        .map_err(on(ENTITY, ""))?;
        let rows = rows
            .into_iter()
            .map(|(minute, status, count)| {
                let at = timestamp::parse(&format!("{minute}:00.000000Z")).map_err(|reason| {
                    DatabaseError::CorruptRow {
                        table: "tasks",
                        id: format!("finished in the minute {minute}"),
                        column: "completed_at",
                        reason,
                    }
                })?;
                Ok((at, status, count))
            })
            .collect::<Result<Vec<_>, DatabaseError>>()?;
        Ok(abathur_core::ports::minutes_from_counts(rows))
    }

    async fn insert_batch(&self, tasks: Vec<Task>) -> Result<(), DatabaseError> {
        if tasks.is_empty() {
            return Ok(());
        }
        let params = tasks
            .into_iter()
            .map(TaskParams::new)
            .collect::<Result<Vec<_>, _>>()?;
        let mut ids = HashSet::with_capacity(params.len());
        for p in &params {
            if !ids.insert(p.id.as_str()) {
                return Err(DatabaseError::validation(
                    "id",
                    format!("task {} appears twice in the batch", p.id),
                ));
            }
        }
        check_batch_cycles(&params)?;
        let clock = Arc::clone(&self.clock);
        write(&self.pool, move |raw| {
            let now = timestamp::format(&clock.now());
            // Members of the batch may refer to each other in any order: foreign keys are
            // checked at commit, after every reference was named. The pragma lasts until the
            // transaction ends, so it is turned off whatever happens, for the operations that
            // may share the transaction.
            exec(raw, DEFER_FOREIGN_KEYS)?;
            let stored = insert_members(raw, &params, &now);
            exec(raw, IMMEDIATE_FOREIGN_KEYS)?;
            stored
        })
        .await
    }
}

/// The body of `insert_batch`: each member stored with its first history row, then every
/// reference named that is neither stored nor a member.
fn insert_members(
    raw: &rusqlite::Connection,
    params: &[TaskParams],
    now: &str,
) -> Result<(), DatabaseError> {
    for p in params {
        insert_task_raw(raw, p)?;
        record(raw, &p.id, None, p.task_status, now, INSERTED)?;
    }
    let pending: HashSet<&str> = params.iter().map(|p| p.id.as_str()).collect();
    for p in params {
        if let Some((reference, id)) = first_missing_reference_raw(raw, p, &pending)? {
            return Err(missing(reference, id));
        }
    }
    Ok(())
}

/// Runs a statement that takes no parameters and returns no rows.
fn exec(raw: &rusqlite::Connection, sql: &str) -> Result<(), DatabaseError> {
    raw.prepare_cached(sql)
        .and_then(|mut q| q.execute([]))
        .map_err(raw_on(ENTITY, ""))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::TASK_COLUMNS;

    /// The columns a `SELECT ... FROM` names, without table prefixes and sqlx's type
    /// overrides: `t.id AS "id!"` is `id`.
    fn select_list(sql: &str) -> Vec<String> {
        let text: String = sql
            .lines()
            .filter(|line| !line.trim_start().starts_with("--"))
            .collect::<Vec<_>>()
            .join(" ");
        let from = text.find(" FROM ").expect("a FROM clause");
        let select = text.find("SELECT ").expect("a SELECT") + "SELECT ".len();
        text[select..from]
            .split(',')
            .map(|item| {
                let column = item.split(" AS ").next().unwrap_or_default().trim();
                column.rsplit('.').next().unwrap_or_default().to_string()
            })
            .collect()
    }

    #[test]
    fn the_checked_selects_of_a_task_name_exactly_the_task_columns() {
        let columns: Vec<String> = TASK_COLUMNS
            .split(',')
            .map(|c| c.trim().to_string())
            .collect();
        assert_eq!(columns.len(), 29);
        for (file, sql) in [
            ("task_get.sql", include_str!("queries/task_get.sql")),
            ("ready_tasks.sql", include_str!("queries/ready_tasks.sql")),
            (
                "task_dependents.sql",
                include_str!("queries/task_dependents.sql"),
            ),
        ] {
            assert_eq!(select_list(sql), columns, "{file}");
        }
    }
}
