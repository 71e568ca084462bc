//! [`QueueStore`] on SQLite. Every operation is one `BEGIN IMMEDIATE` transaction: it takes the
//! write lock first, so its reads are current when it decides, in whatever process it runs.
//!
//! The writes run on the database's writer ([`super::writer`]): each operation is a closure
//! of prepared statements on the writer's own connection, on its own thread, in a transaction
//! of its own (this store) or shared with other operations ([`super::group_commit`]). Each
//! reads the time (`Now::resolve`) inside the transaction, once it holds the write lock. The
//! reads (history, overview, pending, submission details) go through sqlx.

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use abathur_core::clock::Now;
use abathur_core::error::DatabaseError;
use abathur_core::models::{Task, TaskStatus};
use abathur_core::queue::{
    same_json, AttemptOutcome, ClaimRequest, ClaimedTask, FailOutcome, Lease, NewTask, PendingTask,
    PriorityPolicy, PruneReport, PruneRequest, QueueError, QueueLimits, QueueOverview, QueueStore,
    ReapReport, Recorded, RetryPolicy, RunningAttempt, SubmissionDetails, Submitted, TaskEvent,
    WaitingTask,
};
use abathur_core::timestamp;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rusqlite::{params, Connection, OptionalExtension};
use serde_json::Value;
use sqlx::SqlitePool;
use uuid::Uuid;

use super::errors::{on, raw_on};
use super::group_commit::GroupCommitStats;
use super::row::{json_text, RowContext};
use super::task_repo::{
    first_missing_reference_raw, insert_task_raw, load_task_raw, missing, TaskParams,
};
use super::writer::{write_grouped, Grouping};

const ENTITY: &str = "task";

/// The SQLite task queue store: each write in a transaction of its own, committed before it
/// answers (for operations that share transactions, see
/// [`GroupCommitQueueStore`](super::GroupCommitQueueStore)).
#[derive(Debug, Clone)]
pub struct QueueStoreImpl {
    pool: SqlitePool,
    grouping: Arc<Grouping>,
}

impl QueueStoreImpl {
    /// A store on `pool`.
    pub fn new(pool: SqlitePool) -> Self {
        // Groups of one: the transaction holds this operation alone.
        Self::grouped(pool, Arc::new(Grouping::new(1, 4_096)))
    }

    /// A store on `pool` whose writes are grouped as `grouping` says.
    pub(crate) fn grouped(pool: SqlitePool, grouping: Arc<Grouping>) -> Self {
        Self { pool, grouping }
    }

    /// How many transactions the store's writes have run in, and how many writes.
    pub fn stats(&self) -> GroupCommitStats {
        let (groups, operations) = self.grouping.stats();
        GroupCommitStats { groups, operations }
    }

    /// Runs `op` in a write transaction on the writer: committed when it succeeds, rolled
    /// back when it fails.
    async fn write<T: Send + 'static>(
        &self,
        op: impl FnOnce(&Connection) -> Result<T, QueueError> + Send + 'static,
    ) -> Result<T, QueueError> {
        write_grouped(&self.pool, &self.grouping, op).await
    }
}

/// An error of a read through sqlx.
fn db(e: sqlx::Error) -> QueueError {
    QueueError::Database(on(ENTITY, "")(e))
}

/// An error of a statement on the handle.
fn raw(e: rusqlite::Error) -> QueueError {
    QueueError::Database(raw_on(ENTITY, "")(e))
}

/// Runs one statement (prepared once per connection hop) and returns the rows it changed.
fn exec(conn: &Connection, sql: &str, params: impl rusqlite::Params) -> Result<u64, QueueError> {
    let changed = conn
        .prepare_cached(sql)
        .and_then(|mut statement| statement.execute(params))
        .map_err(raw)?;
    Ok(changed as u64)
}

/// Runs one query and maps each row.
fn rows<T>(
    conn: &Connection,
    sql: &str,
    params: impl rusqlite::Params,
    map: impl FnMut(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
) -> Result<Vec<T>, QueueError> {
    let mut statement = conn.prepare_cached(sql).map_err(raw)?;
    let mapped = statement.query_map(params, map).map_err(raw)?;
    mapped.collect::<Result<Vec<_>, _>>().map_err(raw)
}

/// A task id read back from the store.
fn task_uuid(id: &str) -> Result<Uuid, QueueError> {
    Ok(RowContext { table: "tasks", id }.uuid("id", id)?)
}

fn ts(t: &DateTime<Utc>) -> String {
    timestamp::format(t)
}

fn later(now: DateTime<Utc>, by: Duration) -> Result<DateTime<Utc>, QueueError> {
    chrono::Duration::from_std(by)
        .ok()
        .and_then(|by| now.checked_add_signed(by))
        .filter(|t| timestamp::check("lease", t).is_ok())
        .ok_or_else(|| {
            QueueError::Validation(abathur_core::ValidationError::new(
                "lease",
                format!("{by:?} reaches past year 9999"),
            ))
        })
}

/// Appends one event to a task's history.
#[allow(clippy::too_many_arguments)] // reason: one column each; a struct would only rename them
fn record(
    conn: &Connection,
    task_id: &str,
    from: Option<TaskStatus>,
    to: TaskStatus,
    now: &str,
    actor: &str,
    attempt_id: Option<&str>,
    reason: Option<&str>,
) -> Result<(), QueueError> {
    exec(
        conn,
        INSERT_EVENT,
        params![
            task_id,
            from.map(TaskStatus::as_str),
            to.as_str(),
            now,
            actor,
            attempt_id,
            reason
        ],
    )?;
    Ok(())
}

/// Forgets a task's run-after time: it is claimable at once when next ready.
fn clear_schedule(conn: &Connection, task_id: &str) -> Result<(), QueueError> {
    exec(conn, DELETE_SCHEDULE, [task_id])?;
    Ok(())
}

/// The open attempt `attempt_id`, or the reason it cannot be acted on.
struct OpenAttempt {
    task_id: String,
    worker_id: String,
    attempt_number: i64,
}

/// An attempt as stored, open or ended.
struct AttemptRow {
    task_id: String,
    worker_id: String,
    attempt_number: i64,
    /// `None` while the attempt is open.
    outcome: Option<String>,
    error: Option<String>,
    finished_at: Option<String>,
    retry_count: Option<i64>,
    retry_after: Option<String>,
}

fn attempt_row(conn: &Connection, attempt_id: Uuid) -> Result<AttemptRow, QueueError> {
    let id = attempt_id.to_string();
    conn.prepare_cached(SELECT_ATTEMPT)
        .and_then(|mut q| {
            q.query_row([&id], |r| {
                Ok(AttemptRow {
                    task_id: r.get(0)?,
                    worker_id: r.get(1)?,
                    attempt_number: r.get(2)?,
                    outcome: r.get(3)?,
                    error: r.get(4)?,
                    finished_at: r.get(5)?,
                    retry_count: r.get(6)?,
                    retry_after: r.get(7)?,
                })
            })
            .optional()
        })
        .map_err(raw)?
        .ok_or(QueueError::AttemptNotFound(attempt_id))
}

impl AttemptRow {
    /// The attempt, if it is still open; else why it cannot be acted on.
    fn open(self, attempt_id: Uuid) -> Result<OpenAttempt, QueueError> {
        match self.outcome.as_deref() {
            None => Ok(OpenAttempt {
                task_id: self.task_id,
                worker_id: self.worker_id,
                attempt_number: self.attempt_number,
            }),
            Some("cancelled") => Err(QueueError::Cancelled {
                task_id: RowContext {
                    table: "task_attempts",
                    id: &attempt_id.to_string(),
                }
                .uuid("task_id", &self.task_id)?,
            }),
            Some(outcome) => Err(QueueError::LeaseLost {
                attempt_id,
                reason: format!("the attempt already ended ({outcome})"),
            }),
        }
    }
}

fn open_attempt(conn: &Connection, attempt_id: Uuid) -> Result<OpenAttempt, QueueError> {
    attempt_row(conn, attempt_id)?.open(attempt_id)
}

/// A repeat whose payload differs from the recorded one: the caller is not the one whose call
/// was recorded, or it changed its mind; either way its lease is gone.
fn different_repeat(attempt_id: Uuid, verb: &str, what: &str) -> QueueError {
    QueueError::LeaseLost {
        attempt_id,
        reason: format!(
            "the attempt already {verb} with a different {what}; only the same call can be sent again"
        ),
    }
}

/// The answer to a `complete` of an attempt that already completed: the recorded outcome when
/// `result` is the recorded result, read without writing anything.
fn repeat_completion(
    conn: &Connection,
    attempt_id: Uuid,
    row: &AttemptRow,
    result: Option<&Value>,
) -> Result<Recorded<Vec<Uuid>>, QueueError> {
    let stored: Option<String> = conn
        .prepare_cached(SELECT_RESULT)
        .and_then(|mut q| q.query_row([&row.task_id], |r| r.get(0)))
        .map_err(raw)?;
    let cx = RowContext {
        table: "tasks",
        id: &row.task_id,
    };
    // Compared as values, not text: a client that re-serialises its result (other key order,
    // other spacing, `1.0` for `1`) is still sending the same result.
    let same = match (cx.opt_json("result_data", stored.as_deref())?, result) {
        (None, None) => true,
        (Some(stored), Some(sent)) => same_json(&stored, sent),
        _ => false,
    };
    if !same {
        return Err(different_repeat(attempt_id, "completed", "result"));
    }
    // The dependents that completion made ready: their events say so, in its transaction's
    // time and words.
    let made_ready: Vec<String> = rows(
        conn,
        SELECT_MADE_READY,
        params![
            row.task_id,
            row.finished_at,
            format!("dependency {} completed", row.task_id)
        ],
        |r| r.get(0),
    )?;
    Ok(Recorded::repeat(
        made_ready
            .iter()
            .map(|id| task_uuid(id))
            .collect::<Result<_, _>>()?,
    ))
}

/// The answer to a `fail` of an attempt that already failed: the recorded outcome when
/// `error` is the recorded error, read without writing anything.
fn repeat_failure(
    conn: &Connection,
    attempt_id: Uuid,
    row: &AttemptRow,
    error: &str,
) -> Result<Recorded<FailOutcome>, QueueError> {
    if row.error.as_deref() != Some(error) {
        return Err(different_repeat(attempt_id, "failed", "error"));
    }
    let id = attempt_id.to_string();
    let cx = RowContext {
        table: "task_attempts",
        id: &id,
    };
    // Attempts failed before the decision was recorded cannot say what it was.
    let Some(retry_count) = row.retry_count else {
        return Err(QueueError::LeaseLost {
            attempt_id,
            reason: "the attempt already ended (failed) before failures were recorded for repeats"
                .to_string(),
        });
    };
    if let Some(run_after) = &row.retry_after {
        return Ok(Recorded::repeat(FailOutcome::Retrying {
            retry_count: cx.int("retry_count", retry_count)?,
            run_after: cx.timestamp("retry_after", run_after)?,
        }));
    }
    // The cascade stamped its dependents with the failure's time; those a retry has since
    // put back no longer carry it.
    let cascaded = descendants(conn, &row.task_id, Walk::FailedDependents)?
        .into_iter()
        .map(|(dependent, _)| dependent)
        .collect::<Vec<_>>();
    let mut still_failed = Vec::new();
    for dependent in cascaded {
        let finished: Option<String> = conn
            .prepare_cached(SELECT_COMPLETED_AT)
            .and_then(|mut q| q.query_row([&dependent], |r| r.get(0)))
            .map_err(raw)?;
        if finished.is_some() && finished == row.finished_at {
            still_failed.push(task_uuid(&dependent)?);
        }
    }
    Ok(Recorded::repeat(FailOutcome::Failed {
        cascaded: still_failed,
    }))
}

fn close_attempt(
    conn: &Connection,
    attempt_id: &str,
    outcome: AttemptOutcome,
    error: Option<&str>,
    now: &str,
) -> Result<(), QueueError> {
    exec(
        conn,
        CLOSE_ATTEMPT,
        params![now, outcome.as_str(), error, attempt_id],
    )?;
    Ok(())
}

/// Which tasks a walk from a root reaches.
#[derive(Clone, Copy)]
enum Walk {
    /// Its dependents, transitively, through unfinished tasks only: a finished task's own
    /// dependents are not the root's business.
    Dependents,
    /// As `Dependents`, and along parent links to children too.
    DependentsAndChildren,
    /// Its failed dependents, transitively through failed tasks: the tasks a failure may
    /// have cascaded to.
    FailedDependents,
}

/// The tasks reachable from `root` by `walk`, without `root`, shallowest first.
fn descendants(
    conn: &Connection,
    root: &str,
    walk: Walk,
) -> Result<Vec<(String, TaskStatus)>, QueueError> {
    // The walk goes on from a task only when it is the root or unfinished: a completed child
    // of a cancelled parent keeps its own dependents.
    let sql = match walk {
        Walk::Dependents => WALK_DEPENDENTS,
        Walk::DependentsAndChildren => WALK_DEPENDENTS_AND_CHILDREN,
        Walk::FailedDependents => WALK_FAILED_DEPENDENTS,
    };
    rows(conn, sql, [root], |r| {
        Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
    })?
    .into_iter()
    .map(|(id, status)| {
        let status = RowContext {
            table: "tasks",
            id: &id,
        }
        .parse("status", &status)?;
        Ok((id, status))
    })
    .collect()
}

/// Sets a task's status (and `started_at` when running, `completed_at` when terminal) and
/// records the change.
#[allow(clippy::too_many_arguments)] // reason: the event's columns
fn transition(
    conn: &Connection,
    task_id: &str,
    from: TaskStatus,
    to: TaskStatus,
    now: &str,
    actor: &str,
    attempt_id: Option<&str>,
    reason: Option<&str>,
) -> Result<(), QueueError> {
    let started_at = (to == TaskStatus::Running).then_some(now);
    let completed_at = to.is_terminal().then_some(now);
    let changed = exec(
        conn,
        SET_STATUS,
        params![
            to.as_str(),
            now,
            started_at,
            completed_at,
            task_id,
            from.as_str()
        ],
    )?;
    // Every caller read `from` in this same write transaction, so a mismatch means the row was
    // changed outside the queue (through the low-level repository): refuse rather than write
    // a history that did not happen.
    if changed != 1 {
        return Err(QueueError::Database(DatabaseError::Conflict {
            entity: "task",
            id: task_id.to_string(),
            reason: format!("expected it to be {from}, but it was changed outside the queue"),
        }));
    }
    record(
        conn,
        task_id,
        Some(from),
        to,
        now,
        actor,
        attempt_id,
        reason,
    )
}

/// One task of a set-based transition: its id, the status it was read in, and the attempt the
/// change belongs to.
struct Move {
    id: String,
    from: TaskStatus,
    attempt: Option<String>,
}

/// [`transition`] for many tasks in two statements, whatever their number: the status update
/// and the events both read the set from one JSON array. Used where one operation moves a
/// whole subtree (a cascade, a cancel, a fan-out, a batched claim), so that the write lock is
/// held for two statements rather than several per task.
fn transition_many(
    conn: &Connection,
    moves: &[Move],
    to: TaskStatus,
    now: &str,
    actor: &str,
    reason: Option<&str>,
) -> Result<(), QueueError> {
    if moves.is_empty() {
        return Ok(());
    }
    let set = move_set(moves);
    let status = to.as_str();
    let changed = exec(
        conn,
        SET_STATUS_MANY,
        params![
            status,
            now,
            to.is_terminal(),
            set,
            to == TaskStatus::Running
        ],
    )?;
    moved_all(changed, moves)?;
    record_many(conn, &set, to, now, actor, reason)
}

/// As in [`transition`]: every `from` was read in this transaction, so a row that did not
/// change was changed outside the queue.
fn moved_all(changed: u64, moves: &[Move]) -> Result<(), QueueError> {
    if changed == moves.len() as u64 {
        return Ok(());
    }
    Err(QueueError::Database(DatabaseError::Conflict {
        entity: "task",
        id: moves.first().map(|m| m.id.clone()).unwrap_or_default(),
        reason: format!(
            "{} of {} tasks were changed outside the queue",
            moves.len() as u64 - changed,
            moves.len()
        ),
    }))
}

/// The history rows of a set-based transition to `to`: one per member of `set`, the JSON
/// array of `{id, from, attempt}` the update read.
fn record_many(
    conn: &Connection,
    set: &str,
    to: TaskStatus,
    now: &str,
    actor: &str,
    reason: Option<&str>,
) -> Result<(), QueueError> {
    exec(
        conn,
        INSERT_EVENTS_MANY,
        params![to.as_str(), now, actor, reason, set],
    )?;
    Ok(())
}

/// The JSON array of `{id, from, attempt}` that set-based transitions read.
fn move_set(moves: &[Move]) -> String {
    serde_json::Value::Array(
        moves
            .iter()
            .map(|m| serde_json::json!({ "id": m.id, "from": m.from.as_str(), "attempt": m.attempt }))
            .collect(),
    )
    .to_string()
}

/// A JSON array of ids, for statements that take a set as `json_each(?)`.
fn id_array<'a>(ids: impl IntoIterator<Item = &'a str>) -> String {
    serde_json::Value::Array(ids.into_iter().map(|id| id.into()).collect()).to_string()
}

// ---- The statements the operations run.

pub(crate) const INSERT_EVENT: &str =
    "INSERT INTO task_events (task_id, from_status, to_status, at, actor, attempt_id, reason)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)";
const DELETE_SCHEDULE: &str = "DELETE FROM task_schedule WHERE task_id = ?1";
pub(crate) const SELECT_ATTEMPT: &str =
    "SELECT task_id, worker_id, attempt_number, outcome, error, finished_at, retry_count,
                retry_after
         FROM task_attempts WHERE id = ?1";
const SELECT_RESULT: &str = "SELECT result_data FROM tasks WHERE id = ?1";
const SELECT_MADE_READY: &str = "SELECT e.task_id FROM task_dependencies d
         JOIN task_events e ON e.task_id = d.task_id
         WHERE d.depends_on_task_id = ?1 AND e.from_status = 'blocked' AND e.to_status = 'ready'
           AND e.at = ?2 AND e.actor = 'queue' AND e.reason = ?3
         ORDER BY e.id";
const SELECT_COMPLETED_AT: &str = "SELECT completed_at FROM tasks WHERE id = ?1";
pub(crate) const CLOSE_ATTEMPT: &str =
    "UPDATE task_attempts SET finished_at = ?1, outcome = ?2, error = ?3
         WHERE id = ?4 AND finished_at IS NULL";
const WALK_DEPENDENTS: &str = "WITH RECURSIVE affected(id) AS (
                 SELECT ?1
                 UNION
                 SELECT d.task_id FROM affected a
                 JOIN tasks p ON p.id = a.id
                 JOIN task_dependencies d ON d.depends_on_task_id = a.id
                 WHERE a.id = ?1 OR p.status NOT IN ('completed', 'failed', 'cancelled')
             )
             SELECT t.id, t.status FROM affected JOIN tasks t ON t.id = affected.id
             WHERE t.id <> ?1 ORDER BY t.dependency_depth, t.id";
const WALK_DEPENDENTS_AND_CHILDREN: &str = "WITH RECURSIVE affected(id) AS (
                 SELECT ?1
                 UNION
                 SELECT d.task_id FROM affected a
                 JOIN tasks p ON p.id = a.id
                 JOIN task_dependencies d ON d.depends_on_task_id = a.id
                 WHERE a.id = ?1 OR p.status NOT IN ('completed', 'failed', 'cancelled')
                 UNION
                 SELECT c.id FROM affected a
                 JOIN tasks p ON p.id = a.id
                 JOIN tasks c ON c.parent_task_id = a.id
                 WHERE a.id = ?1 OR p.status NOT IN ('completed', 'failed', 'cancelled')
             )
             SELECT t.id, t.status FROM affected JOIN tasks t ON t.id = affected.id
             WHERE t.id <> ?1 ORDER BY t.dependency_depth, t.id";
const WALK_FAILED_DEPENDENTS: &str = "WITH RECURSIVE affected(id) AS (
                 SELECT ?1
                 UNION
                 SELECT d.task_id FROM affected a
                 JOIN task_dependencies d ON d.depends_on_task_id = a.id
                 JOIN tasks t ON t.id = d.task_id
                 WHERE t.status = 'failed'
             )
             SELECT t.id, t.status FROM affected JOIN tasks t ON t.id = affected.id
             WHERE t.id <> ?1 ORDER BY t.dependency_depth, t.id";
pub(crate) const SET_STATUS: &str = "UPDATE tasks SET status = ?1, last_updated_at = ?2,
             started_at = COALESCE(?3, started_at), completed_at = COALESCE(?4, completed_at)
         WHERE id = ?5 AND status = ?6";
pub(crate) const SET_STATUS_MANY: &str = "UPDATE tasks SET status = ?1, last_updated_at = ?2,
             completed_at = CASE WHEN ?3 THEN ?2 ELSE completed_at END,
             started_at = CASE WHEN ?5 THEN ?2 ELSE started_at END
         FROM (SELECT json_extract(value, '$.id') AS id, json_extract(value, '$.from') AS from_status
               FROM json_each(?4)) AS m
         WHERE tasks.id = m.id AND tasks.status = m.from_status";
pub(crate) const INSERT_EVENTS_MANY: &str =
    "INSERT INTO task_events (task_id, from_status, to_status, at, actor, attempt_id, reason)
         SELECT json_extract(value, '$.id'), json_extract(value, '$.from'), ?1, ?2, ?3,
                json_extract(value, '$.attempt'), ?4
         FROM json_each(?5) ORDER BY key";
pub(crate) const DELETE_SCHEDULES: &str =
    "DELETE FROM task_schedule WHERE task_id IN (SELECT value FROM json_each(?1))";
const RECORD_DECISION: &str =
    "UPDATE task_attempts SET retry_count = ?1, retry_after = ?2 WHERE id = ?3";
const SELECT_RETRIES: &str = "SELECT retry_count, max_retries FROM tasks WHERE id = ?1";
const SET_RETRY_COUNT: &str = "UPDATE tasks SET retry_count = ?1, error_message = ?2 WHERE id = ?3";
const UPSERT_SCHEDULE: &str = "INSERT INTO task_schedule (task_id, run_after) VALUES (?1, ?2)
             ON CONFLICT (task_id) DO UPDATE SET run_after = excluded.run_after";
const SET_CASCADE_ERROR: &str =
    "UPDATE tasks SET error_message = ?1 WHERE id IN (SELECT value FROM json_each(?2))";
const SELECT_STATUS: &str = "SELECT status FROM tasks WHERE id = ?1";
const INSERT_IDEMPOTENCY: &str =
    "INSERT INTO task_idempotency (idempotency_key, task_id, content_hash)
                 VALUES (?1, ?2, ?3)";
const INSERT_SCHEDULE: &str = "INSERT INTO task_schedule (task_id, run_after) VALUES (?1, ?2)";
const SELECT_IDEMPOTENCY: &str =
    "SELECT task_id, content_hash FROM task_idempotency WHERE idempotency_key = ?1";
const DEFER_FOREIGN_KEYS_ON: &str = "PRAGMA defer_foreign_keys = ON";
const DEFER_FOREIGN_KEYS_OFF: &str = "PRAGMA defer_foreign_keys = OFF";
pub(crate) const SELECT_DEPENDENCY: &str =
    "SELECT status, dependency_depth FROM tasks WHERE id = ?1";
pub(crate) const INSERT_ATTEMPTS: &str = "INSERT INTO task_attempts (id, task_id, attempt_number, worker_id, started_at, lease_expires_at)
         SELECT json_extract(j.value, '$.attempt'), json_extract(j.value, '$.task'),
                (SELECT COALESCE(MAX(a.attempt_number), 0) + 1 FROM task_attempts a
                 WHERE a.task_id = json_extract(j.value, '$.task')),
                ?1, ?2, ?3
         FROM json_each(?4) AS j
         RETURNING id, attempt_number";
const EXTEND_LEASE: &str = "UPDATE task_attempts SET lease_expires_at = ?1 WHERE id = ?2";
pub(crate) const SET_RESULT: &str =
    "UPDATE tasks SET result_data = ?1, error_message = NULL WHERE id = ?2";
const CANCEL_ATTEMPTS: &str = "UPDATE task_attempts SET finished_at = ?1, outcome = 'cancelled'
         WHERE finished_at IS NULL AND task_id IN (SELECT value FROM json_each(?2))
         RETURNING task_id, id";
const COUNT_UNFINISHED_DEPENDENCIES: &str =
    "SELECT COUNT(*) FROM task_dependencies d JOIN tasks u ON u.id = d.depends_on_task_id
             WHERE d.task_id = ?1 AND u.status <> 'completed'";
const RESET_FOR_RETRY: &str =
    "UPDATE tasks SET retry_count = 0, error_message = NULL, completed_at = NULL WHERE id = ?1";
const COUNT_DOWN_DEPENDENCIES: &str = "SELECT COUNT(*) FROM task_dependencies d
                 JOIN tasks u ON u.id = d.depends_on_task_id
                 WHERE d.task_id = ?1 AND u.status IN ('failed', 'cancelled')";
const RESET_CASCADED: &str =
    "UPDATE tasks SET error_message = NULL, completed_at = NULL WHERE id = ?1";
const SELECT_REAPABLE: &str =
    "SELECT a.id, a.task_id, a.started_at, a.lease_expires_at, t.max_execution_timeout_seconds
         FROM task_attempts a JOIN tasks t ON t.id = a.task_id
         WHERE a.finished_at IS NULL
           AND (a.lease_expires_at <= ?1
                -- a second's slack for julianday's rounding; the exact check is below
                OR (julianday(?1) - julianday(a.started_at)) * 86400.0
                   >= t.max_execution_timeout_seconds - 1)";
const SAVEPOINT_REAP: &str = "SAVEPOINT reap_one";
const RELEASE_REAP: &str = "RELEASE reap_one";
const ROLLBACK_TO_REAP: &str = "ROLLBACK TO reap_one";
const SELECT_PRUNABLE: &str = "SELECT t.id, t.completed_at FROM tasks t
         WHERE t.completed_at IS NOT NULL AND t.completed_at < ?1
           AND (t.completed_at, t.id) > (?2, ?3)
           AND t.status IN (SELECT value FROM json_each(?4))
           AND NOT EXISTS (
               SELECT 1 FROM task_dependencies d JOIN tasks u ON u.id = d.task_id
               WHERE d.depends_on_task_id = t.id
                 AND (t.status <> 'completed'
                      OR u.status NOT IN ('completed', 'failed', 'cancelled')))
           AND NOT EXISTS (
               SELECT 1 FROM tasks c
               WHERE c.parent_task_id = t.id
                 AND c.status NOT IN ('completed', 'failed', 'cancelled'))
         ORDER BY t.completed_at, t.id
         LIMIT ?5";
const DELETE_TASKS: &str = "DELETE FROM tasks WHERE id IN (SELECT value FROM json_each(?1))";

/// The rows [`ready_keys`] computes keys from: id, priority, depth, deadline, run-after time.
pub(crate) const SELECT_KEY_INPUTS: &str =
    "SELECT t.id, t.priority, t.dependency_depth, t.deadline, s.run_after
         FROM tasks t LEFT JOIN task_schedule s ON s.task_id = t.id
         WHERE t.id IN (SELECT value FROM json_each(?1))";
/// Writes the keys of [`ready_keys`] (`?1`, a JSON array of `{id, key, calculated}`).
pub(crate) const STORE_KEYS: &str = "UPDATE tasks SET claim_key = json_extract(k.value, '$.key'),
             calculated_priority = json_extract(k.value, '$.calculated')
         FROM json_each(?1) AS k WHERE tasks.id = json_extract(k.value, '$.id')";
/// Makes blocked tasks ready at `?1` with the keys of [`ready_keys`] (`?2`). `+` keeps the
/// planner off the status indexes: led by them, it would read every blocked task and scan the
/// whole array for each, a time that grows with blocked tasks times released ones.
pub(crate) const RELEASE_READY: &str = "UPDATE tasks SET status = 'ready', last_updated_at = ?1,
             claim_key = json_extract(k.value, '$.key'),
             calculated_priority = json_extract(k.value, '$.calculated')
         FROM json_each(?2) AS k
         WHERE tasks.id = json_extract(k.value, '$.id') AND +tasks.status = 'blocked'";
pub(crate) const DEPENDENTS_TO_RELEASE: &str = include_str!("queries/dependents_to_release.sql");

/// Every statement of this module, for the catalogue test.
#[cfg(test)]
pub(crate) const STATEMENTS: &[(&str, &str)] = &[
    ("INSERT_EVENT", INSERT_EVENT),
    ("DELETE_SCHEDULE", DELETE_SCHEDULE),
    ("SELECT_ATTEMPT", SELECT_ATTEMPT),
    ("SELECT_RESULT", SELECT_RESULT),
    ("SELECT_MADE_READY", SELECT_MADE_READY),
    ("SELECT_COMPLETED_AT", SELECT_COMPLETED_AT),
    ("CLOSE_ATTEMPT", CLOSE_ATTEMPT),
    ("WALK_DEPENDENTS", WALK_DEPENDENTS),
    ("WALK_DEPENDENTS_AND_CHILDREN", WALK_DEPENDENTS_AND_CHILDREN),
    ("WALK_FAILED_DEPENDENTS", WALK_FAILED_DEPENDENTS),
    ("SET_STATUS", SET_STATUS),
    ("SET_STATUS_MANY", SET_STATUS_MANY),
    ("INSERT_EVENTS_MANY", INSERT_EVENTS_MANY),
    ("DELETE_SCHEDULES", DELETE_SCHEDULES),
    ("RECORD_DECISION", RECORD_DECISION),
    ("SELECT_RETRIES", SELECT_RETRIES),
    ("SET_RETRY_COUNT", SET_RETRY_COUNT),
    ("UPSERT_SCHEDULE", UPSERT_SCHEDULE),
    ("SET_CASCADE_ERROR", SET_CASCADE_ERROR),
    ("SELECT_STATUS", SELECT_STATUS),
    ("INSERT_IDEMPOTENCY", INSERT_IDEMPOTENCY),
    ("INSERT_SCHEDULE", INSERT_SCHEDULE),
    ("SELECT_IDEMPOTENCY", SELECT_IDEMPOTENCY),
    ("DEFER_FOREIGN_KEYS_ON", DEFER_FOREIGN_KEYS_ON),
    ("DEFER_FOREIGN_KEYS_OFF", DEFER_FOREIGN_KEYS_OFF),
    ("SELECT_DEPENDENCY", SELECT_DEPENDENCY),
    ("INSERT_ATTEMPTS", INSERT_ATTEMPTS),
    ("EXTEND_LEASE", EXTEND_LEASE),
    ("SET_RESULT", SET_RESULT),
    ("CANCEL_ATTEMPTS", CANCEL_ATTEMPTS),
    (
        "COUNT_UNFINISHED_DEPENDENCIES",
        COUNT_UNFINISHED_DEPENDENCIES,
    ),
    ("RESET_FOR_RETRY", RESET_FOR_RETRY),
    ("COUNT_DOWN_DEPENDENCIES", COUNT_DOWN_DEPENDENCIES),
    ("RESET_CASCADED", RESET_CASCADED),
    ("SELECT_REAPABLE", SELECT_REAPABLE),
    ("SAVEPOINT_REAP", SAVEPOINT_REAP),
    ("RELEASE_REAP", RELEASE_REAP),
    ("ROLLBACK_TO_REAP", ROLLBACK_TO_REAP),
    ("SELECT_PRUNABLE", SELECT_PRUNABLE),
    ("DELETE_TASKS", DELETE_TASKS),
    ("SELECT_KEY_INPUTS", SELECT_KEY_INPUTS),
    ("STORE_KEYS", STORE_KEYS),
    ("RELEASE_READY", RELEASE_READY),
    ("DEPENDENTS_TO_RELEASE", DEPENDENTS_TO_RELEASE),
];

/// The claim key and calculated priority of each task in `ids` (a JSON array) as it becomes
/// ready at `now`: claimable since `now`, or since its run-after time when that is later. A
/// JSON array of `{id, key, calculated}`, for [`STORE_KEYS`] or [`RELEASE_READY`]; the numbers
/// are [`PriorityPolicy`]'s, computed here, never in SQL.
fn ready_keys(
    conn: &Connection,
    ids: &str,
    priority: &PriorityPolicy,
    now: DateTime<Utc>,
) -> Result<String, QueueError> {
    let now_text = ts(&now);
    // id, priority, depth, deadline, run-after time
    type Row = (String, i64, i64, Option<String>, Option<String>);
    let found: Vec<Row> = rows(conn, SELECT_KEY_INPUTS, [ids], |r| {
        Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
    })?;
    let mut keys = Vec::with_capacity(found.len());
    for (id, base, depth, deadline, run_after) in found {
        let cx = RowContext {
            table: "tasks",
            id: &id,
        };
        let base: u8 = cx.int("priority", base)?;
        let depth: u32 = cx.int("dependency_depth", depth)?;
        let ready_since = run_after
            .and_then(|text| timestamp::parse(&text).ok())
            .map_or(now, |run_after| run_after.max(now));
        let deadline = deadline.and_then(|text| super::claim::deadline(&text, &now_text));
        keys.push(serde_json::json!({
            "id": id,
            "key": priority.key(base, depth, ready_since),
            "calculated": priority.calculate(base, depth, deadline, ready_since, now),
        }));
    }
    Ok(serde_json::Value::Array(keys).to_string())
}

/// Writes the claim keys and calculated priorities of [`ready_keys`].
fn store_keys(conn: &Connection, keys: &str) -> Result<(), QueueError> {
    exec(conn, STORE_KEYS, [keys])?;
    Ok(())
}

/// Keys the tasks in `ids` (a JSON array) as ready from `now` on: [`ready_keys`], stored.
fn key_ready(
    conn: &Connection,
    ids: &str,
    priority: &PriorityPolicy,
    now: DateTime<Utc>,
) -> Result<(), QueueError> {
    store_keys(conn, &ready_keys(conn, ids, priority, now)?)
}

/// Forgets the run-after times of the tasks in `ids` (a JSON array).
fn clear_schedules(conn: &Connection, ids: &str) -> Result<(), QueueError> {
    exec(conn, DELETE_SCHEDULES, [ids])?;
    Ok(())
}

/// Writes on the attempt what its failure decided, for a repeat of the same `fail` to answer
/// with: the task's retry count after it, and its run-after time when it will run again.
fn record_decision(
    conn: &Connection,
    attempt_id: &str,
    retry_count: u32,
    retry_after: Option<&str>,
) -> Result<(), QueueError> {
    exec(
        conn,
        RECORD_DECISION,
        params![retry_count, retry_after, attempt_id],
    )?;
    Ok(())
}

/// The fail path of a running task whose attempt ended badly: back to ready after a backoff
/// while retries remain, else failed with every non-terminal dependent.
#[allow(clippy::too_many_arguments)] // reason: the attempt, its task, and the two policies
fn fail_task(
    conn: &Connection,
    task_id: &str,
    attempt_id: Uuid,
    error: &str,
    actor: &str,
    retry: &RetryPolicy,
    priority: &PriorityPolicy,
    now: DateTime<Utc>,
) -> Result<FailOutcome, QueueError> {
    let now_text = ts(&now);
    let attempt = attempt_id.to_string();
    let (stored_count, max_retries): (i64, i64) = conn
        .prepare_cached(SELECT_RETRIES)
        .and_then(|mut q| q.query_row([task_id], |r| Ok((r.get(0)?, r.get(1)?))))
        .map_err(raw)?;
    let retry_count = stored_count + 1;
    exec(conn, SET_RETRY_COUNT, params![retry_count, error, task_id])?;
    let cx = RowContext {
        table: "tasks",
        id: task_id,
    };
    let retry_count: u32 = cx.int("retry_count", retry_count)?;
    if i64::from(retry_count) <= max_retries {
        let run_after = later(now, retry.delay(retry_count, attempt_id))?;
        let run_after_text = ts(&run_after);
        exec(conn, UPSERT_SCHEDULE, params![task_id, run_after_text])?;
        record_decision(conn, &attempt, retry_count, Some(&run_after_text))?;
        let reason = format!("attempt failed, retry {retry_count} after {run_after_text}: {error}");
        transition(
            conn,
            task_id,
            TaskStatus::Running,
            TaskStatus::Ready,
            &now_text,
            actor,
            Some(&attempt),
            Some(&reason),
        )?;
        // Ready again once the backoff ends: it ages from then.
        key_ready(conn, &id_array([task_id]), priority, now)?;
        return Ok(FailOutcome::Retrying {
            retry_count,
            run_after,
        });
    }
    record_decision(conn, &attempt, retry_count, None)?;
    let reason = format!("retries exhausted: {error}");
    transition(
        conn,
        task_id,
        TaskStatus::Running,
        TaskStatus::Failed,
        &now_text,
        actor,
        Some(&attempt),
        Some(&reason),
    )?;
    // The root is named, not quoted: its error is on the root task, and copying it into every
    // dependent and every event would multiply it by the size of the cascade.
    let cascade_error = format!("dependency {task_id} failed");
    // An unfinished dependent of a task that never completed is blocked (or pending): it
    // cannot be ready or running.
    let moves: Vec<Move> = descendants(conn, task_id, Walk::Dependents)?
        .into_iter()
        .filter(|(_, status)| !status.is_terminal() && *status != TaskStatus::Running)
        .map(|(id, from)| Move {
            id,
            from,
            attempt: None,
        })
        .collect();
    let ids = id_array(moves.iter().map(|m| m.id.as_str()));
    exec(conn, SET_CASCADE_ERROR, params![cascade_error, ids])?;
    transition_many(
        conn,
        &moves,
        TaskStatus::Failed,
        &now_text,
        "queue",
        Some(&cascade_error),
    )?;
    // The dependents never ran, so a run-after time they have is the one they were submitted
    // with: it is kept, to hold them back again if a retry brings them back.
    let cascaded = moves
        .iter()
        .map(|m| task_uuid(&m.id))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(FailOutcome::Failed { cascaded })
}

/// Makes ready every blocked dependent of `task_id` whose dependencies are all completed.
fn release_dependents(
    conn: &Connection,
    task_id: &str,
    priority: &PriorityPolicy,
    now: DateTime<Utc>,
) -> Result<Vec<Uuid>, QueueError> {
    let now_text = ts(&now);
    let ids: Vec<String> = rows(conn, DEPENDENTS_TO_RELEASE, [task_id], |r| r.get(0))?;
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let moves: Vec<Move> = ids
        .iter()
        .map(|id| Move {
            id: id.clone(),
            from: TaskStatus::Blocked,
            attempt: None,
        })
        .collect();
    // One pass over the rows: the status and the key change together, so each index that
    // holds either is rewritten once.
    let keys = ready_keys(
        conn,
        &id_array(ids.iter().map(String::as_str)),
        priority,
        now,
    )?;
    let changed = exec(conn, RELEASE_READY, params![now_text, keys])?;
    moved_all(changed, &moves)?;
    let reason = format!("dependency {task_id} completed");
    record_many(
        conn,
        &move_set(&moves),
        TaskStatus::Ready,
        &now_text,
        "queue",
        Some(&reason),
    )?;
    ids.iter().map(|id| task_uuid(id)).collect()
}

fn task_status(conn: &Connection, task_id: Uuid) -> Result<TaskStatus, QueueError> {
    let id = task_id.to_string();
    let status: String = conn
        .prepare_cached(SELECT_STATUS)
        .and_then(|mut q| q.query_row([&id], |r| r.get(0)).optional())
        .map_err(raw)?
        .ok_or(QueueError::TaskNotFound(task_id))?;
    Ok(RowContext {
        table: "tasks",
        id: &id,
    }
    .parse("status", &status)?)
}

// ---- Each operation on a connection inside a write transaction: the store runs one per
// transaction; the group-commit store runs many.

pub(super) fn submit_in(
    conn: &Connection,
    batch: &[NewTask],
    limits: &QueueLimits,
    priority: &PriorityPolicy,
    actor: &str,
    now: Now,
) -> Result<Vec<Submitted>, QueueError> {
    let now = now.resolve();
    let existing = stored_keys(conn, batch)?;
    // Members whose key names a stored task are not stored again, and the others' references
    // to them name the stored task: a retried batch then links to what the first one made.
    let batch: Cow<'_, [NewTask]> = if existing.is_empty() {
        Cow::Borrowed(batch)
    } else {
        let stored_id = |id: Uuid| existing.get(&id).map_or(id, |(stored, _)| *stored);
        Cow::Owned(
            batch
                .iter()
                .map(|new| {
                    let mut new = new.clone();
                    let mut seen = HashSet::new();
                    new.dependencies = new
                        .dependencies
                        .iter()
                        .map(|dep| stored_id(*dep))
                        .filter(|dep| seen.insert(*dep))
                        .collect();
                    new.parent_task_id = new.parent_task_id.map(stored_id);
                    new
                })
                .collect(),
        )
    };
    for new in batch.iter() {
        if let (Some((stored, hash)), Some(key)) = (existing.get(&new.id), &new.idempotency_key) {
            if new.content_hash() != *hash {
                return Err(QueueError::IdempotencyConflict {
                    key: key.clone(),
                    existing: *stored,
                });
            }
        }
    }
    let fresh: Cow<'_, [NewTask]> = if existing.is_empty() {
        batch.clone()
    } else {
        Cow::Owned(
            batch
                .iter()
                .filter(|new| !existing.contains_key(&new.id))
                .cloned()
                .collect(),
        )
    };
    let mut inserted = insert_fresh(conn, &fresh, limits, priority, actor, now)?.into_iter();
    for new in fresh.iter() {
        let id = new.id.to_string();
        if let Some(key) = &new.idempotency_key {
            exec(
                conn,
                INSERT_IDEMPOTENCY,
                params![key, id, new.content_hash()],
            )?;
        }
        if let Some(run_after) = &new.run_after {
            exec(conn, INSERT_SCHEDULE, params![id, ts(run_after)])?;
        }
    }
    let mut submitted = Vec::with_capacity(batch.len());
    for new in batch.iter() {
        submitted.push(match existing.get(&new.id) {
            Some((stored, _)) => {
                let id = stored.to_string();
                Submitted {
                    requested_id: new.id,
                    task: load_task_raw(conn, &id)?.ok_or_else(|| {
                        QueueError::Database(DatabaseError::not_found(ENTITY, &id))
                    })?,
                    existing: true,
                }
            }
            None => Submitted {
                requested_id: new.id,
                task: inserted.next().ok_or_else(|| {
                    QueueError::Database(DatabaseError::Other(
                        "a submitted task was not stored".into(),
                    ))
                })?,
                existing: false,
            },
        });
    }
    Ok(submitted)
}

/// The members of `batch` whose idempotency key names a stored task: each with that task's
/// id and the content hash stored with the key.
fn stored_keys(
    conn: &Connection,
    batch: &[NewTask],
) -> Result<HashMap<Uuid, (Uuid, String)>, QueueError> {
    let mut found = HashMap::new();
    let mut keys: HashMap<&str, Uuid> = HashMap::new();
    for new in batch {
        let Some(key) = new.idempotency_key.as_deref() else {
            continue;
        };
        if keys.insert(key, new.id).is_some() {
            return Err(QueueError::DuplicateIdempotencyKey {
                task: new.id,
                key: key.to_string(),
            });
        }
        let row: Option<(String, String)> = conn
            .prepare_cached(SELECT_IDEMPOTENCY)
            .and_then(|mut q| {
                q.query_row([key], |r| Ok((r.get(0)?, r.get(1)?)))
                    .optional()
            })
            .map_err(raw)?;
        if let Some((task_id, hash)) = row {
            found.insert(new.id, (task_uuid(&task_id)?, hash));
        }
    }
    Ok(found)
}

/// Stores the members of a batch that are new: [`insert_batch`], with deferred foreign-key
/// checks when a member names a later one as its parent.
fn insert_fresh(
    conn: &Connection,
    batch: &[NewTask],
    limits: &QueueLimits,
    priority: &PriorityPolicy,
    actor: &str,
    now: DateTime<Utc>,
) -> Result<Vec<Task>, QueueError> {
    let now_text = ts(&now);
    // Members may name each other as parents in any order (a parent may wait for its
    // children): when one names a member stored after it, the check waits for the commit.
    // Only then: with deferred checks, SQLite scans every table that refers to `tasks` on each
    // insert, which more than doubles the cost of a lone submit.
    let position: HashMap<Uuid, usize> = batch.iter().enumerate().map(|(i, t)| (t.id, i)).collect();
    let forward_parent = batch.iter().enumerate().any(|(i, t)| {
        t.parent_task_id
            .and_then(|parent| position.get(&parent))
            .is_some_and(|&at| at > i)
    });
    if forward_parent {
        exec(conn, DEFER_FOREIGN_KEYS_ON, [])?;
    }
    let stored = insert_batch(conn, batch, limits, priority, actor, now, &now_text);
    // The pragma lasts until the transaction ends: turned off here, it does not slow the
    // operations that share a group-commit transaction after this one. Every reference was
    // checked above, so nothing is left for the commit to check.
    if forward_parent {
        exec(conn, DEFER_FOREIGN_KEYS_OFF, [])?;
    }
    stored
}

/// The body of [`submit_in`]: each member checked and stored, then every reference named.
fn insert_batch(
    conn: &Connection,
    batch: &[NewTask],
    limits: &QueueLimits,
    priority: &PriorityPolicy,
    actor: &str,
    now: DateTime<Utc>,
    now_text: &str,
) -> Result<Vec<Task>, QueueError> {
    let mut in_batch: HashMap<Uuid, u32> = HashMap::with_capacity(batch.len());
    let mut stored = Vec::with_capacity(batch.len());
    let mut params_all = Vec::with_capacity(batch.len());
    let mut keys = Vec::new();
    for new in batch {
        let mut deepest: Option<u32> = None;
        let mut all_completed = true;
        for dep in &new.dependencies {
            let depth = if let Some(depth) = in_batch.get(dep) {
                all_completed = false;
                *depth
            } else {
                let id = dep.to_string();
                let (status, depth): (String, i64) = conn
                    .prepare_cached(SELECT_DEPENDENCY)
                    .and_then(|mut q| {
                        q.query_row([&id], |r| Ok((r.get(0)?, r.get(1)?)))
                            .optional()
                    })
                    .map_err(raw)?
                    .ok_or(QueueError::UnknownDependency {
                        task: new.id,
                        dependency: *dep,
                    })?;
                let cx = RowContext {
                    table: "tasks",
                    id: &id,
                };
                let status: TaskStatus = cx.parse("status", &status)?;
                // A cancelled task never completes, and a failed one only after a retry:
                // a task waiting on either would wait unseen, so it is refused.
                if matches!(status, TaskStatus::Failed | TaskStatus::Cancelled) {
                    return Err(QueueError::DependencyUnavailable {
                        task: new.id,
                        dependency: *dep,
                        status,
                    });
                }
                all_completed &= status == TaskStatus::Completed;
                cx.int("dependency_depth", depth)?
            };
            deepest = Some(deepest.map_or(depth, |d| d.max(depth)));
        }
        let depth = deepest.map_or(0, |d| d.saturating_add(1));
        if depth > limits.max_depth {
            return Err(QueueError::TooDeep {
                task: new.id,
                depth,
                limit: limits.max_depth,
            });
        }
        in_batch.insert(new.id, depth);
        let mut task = new.to_task(now);
        task.dependency_depth = depth;
        task.status = if all_completed {
            TaskStatus::Ready
        } else {
            TaskStatus::Blocked
        };
        // Claimable from submission, or from its run-after time when later.
        let ready_since = new.run_after.map_or(now, |run_after| run_after.max(now));
        task.calculated_priority =
            priority.calculate(task.priority, depth, task.deadline, ready_since, now);
        if task.status == TaskStatus::Ready {
            keys.push(serde_json::json!({
                "id": task.id.to_string(),
                "key": priority.key(task.priority, depth, ready_since),
                "calculated": task.calculated_priority,
            }));
        }
        let params = TaskParams::new(task.clone())?;
        match insert_task_raw(conn, &params) {
            Ok(()) => {}
            Err(DatabaseError::UniqueViolation { .. }) => {
                return Err(QueueError::DuplicateTask { task: new.id });
            }
            // With immediate checks, a reference to nothing fails here: name it.
            Err(DatabaseError::ForeignKeyViolation { .. }) => {
                let members: HashSet<&str> = HashSet::new();
                if let Some((reference, id)) = first_missing_reference_raw(conn, &params, &members)?
                {
                    return Err(unknown_reference(&params.id, reference, id));
                }
                return Err(QueueError::Database(DatabaseError::ForeignKeyViolation {
                    entity: ENTITY,
                    reference: "parent task, session or dependency",
                    id: None,
                }));
            }
            Err(other) => return Err(QueueError::Database(other)),
        }
        record(
            conn,
            &params.id,
            None,
            task.status,
            now_text,
            actor,
            None,
            Some("submitted"),
        )?;
        params_all.push(params);
        stored.push(task);
    }
    if !keys.is_empty() {
        store_keys(conn, &serde_json::Value::Array(keys).to_string())?;
    }
    let pending: HashSet<&str> = params_all.iter().map(|p| p.id.as_str()).collect();
    for p in &params_all {
        if let Some((reference, id)) = first_missing_reference_raw(conn, p, &pending)? {
            return Err(unknown_reference(&p.id, reference, id));
        }
    }
    Ok(stored)
}

/// The error for a task of a submission that names `reference` `id`, which does not exist.
fn unknown_reference(task: &str, reference: &'static str, id: String) -> QueueError {
    match (task_uuid(task), Uuid::parse_str(&id)) {
        (Ok(task), Ok(id)) => QueueError::UnknownReference {
            task,
            reference,
            id,
        },
        _ => missing(reference, id).into(),
    }
}

pub(super) fn claim_in(
    conn: &Connection,
    request: &ClaimRequest,
    priority: &PriorityPolicy,
    now: Now,
) -> Result<Vec<ClaimedTask>, QueueError> {
    let now = now.resolve();
    let now_text = ts(&now);
    let expires_at = later(now, request.lease)?;
    let expires_text = ts(&expires_at);
    let ids = super::claim::most_urgent(
        conn,
        super::claim::AgentFilter::of(&request.agent_types),
        request.max_tasks,
        priority,
        now,
    )?;
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    // One attempt per task, all in one statement; each attempt's number follows the task's
    // earlier ones.
    let attempts: Vec<(String, Uuid)> = ids.iter().map(|id| (id.clone(), Uuid::new_v4())).collect();
    let pairs = serde_json::Value::Array(
        attempts
            .iter()
            .map(|(task, attempt)| serde_json::json!({ "task": task, "attempt": attempt.to_string() }))
            .collect(),
    )
    .to_string();
    let numbers: HashMap<String, i64> = rows(
        conn,
        INSERT_ATTEMPTS,
        params![request.worker_id, now_text, expires_text, pairs],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?
    .into_iter()
    .collect();
    let task_ids = id_array(ids.iter().map(String::as_str));
    clear_schedules(conn, &task_ids)?;
    let moves: Vec<Move> = attempts
        .iter()
        .map(|(task, attempt)| Move {
            id: task.clone(),
            from: TaskStatus::Ready,
            attempt: Some(attempt.to_string()),
        })
        .collect();
    transition_many(
        conn,
        &moves,
        TaskStatus::Running,
        &now_text,
        &request.worker_id,
        Some("claimed"),
    )?;
    let mut claimed = Vec::with_capacity(attempts.len());
    for (id, attempt_id) in attempts {
        let task = load_task_raw(conn, &id)?
            .ok_or_else(|| QueueError::Database(DatabaseError::not_found(ENTITY, &id)))?;
        let attempt = attempt_id.to_string();
        let number = numbers
            .get(&attempt)
            .copied()
            .ok_or_else(|| QueueError::Database(DatabaseError::not_found("attempt", &attempt)))?;
        let cx = RowContext {
            table: "task_attempts",
            id: &attempt,
        };
        claimed.push(ClaimedTask {
            lease: Lease {
                attempt_id,
                task_id: task.id,
                worker_id: request.worker_id.clone(),
                attempt_number: cx.int("attempt_number", number)?,
                expires_at,
            },
            task,
        });
    }
    Ok(claimed)
}

pub(super) fn heartbeat_in(
    conn: &Connection,
    attempt_id: Uuid,
    lease: Duration,
    now: Now,
) -> Result<Lease, QueueError> {
    let now = now.resolve();
    let expires_at = later(now, lease)?;
    let id = attempt_id.to_string();
    let open = open_attempt(conn, attempt_id)?;
    exec(conn, EXTEND_LEASE, params![ts(&expires_at), id])?;
    let cx = RowContext {
        table: "task_attempts",
        id: &id,
    };
    Ok(Lease {
        attempt_id,
        task_id: cx.uuid("task_id", &open.task_id)?,
        worker_id: open.worker_id,
        attempt_number: cx.int("attempt_number", open.attempt_number)?,
        expires_at,
    })
}

pub(super) fn complete_in(
    conn: &Connection,
    attempt_id: Uuid,
    result: Option<&Value>,
    priority: &PriorityPolicy,
    now: Now,
) -> Result<Recorded<Vec<Uuid>>, QueueError> {
    let now = now.resolve();
    let now_text = ts(&now);
    let attempt = attempt_id.to_string();
    let row = attempt_row(conn, attempt_id)?;
    if row.outcome.as_deref() == Some(AttemptOutcome::Completed.as_str()) {
        return repeat_completion(conn, attempt_id, &row, result);
    }
    let open = row.open(attempt_id)?;
    let result = result.map(json_text);
    close_attempt(conn, &attempt, AttemptOutcome::Completed, None, &now_text)?;
    exec(conn, SET_RESULT, params![result, open.task_id])?;
    transition(
        conn,
        &open.task_id,
        TaskStatus::Running,
        TaskStatus::Completed,
        &now_text,
        &open.worker_id,
        Some(&attempt),
        None,
    )?;
    release_dependents(conn, &open.task_id, priority, now).map(Recorded::new)
}

pub(super) fn fail_in(
    conn: &Connection,
    attempt_id: Uuid,
    error: &str,
    retry: &RetryPolicy,
    priority: &PriorityPolicy,
    now: Now,
) -> Result<Recorded<FailOutcome>, QueueError> {
    let now = now.resolve();
    let now_text = ts(&now);
    let attempt = attempt_id.to_string();
    let row = attempt_row(conn, attempt_id)?;
    if row.outcome.as_deref() == Some(AttemptOutcome::Failed.as_str()) {
        return repeat_failure(conn, attempt_id, &row, error);
    }
    let open = row.open(attempt_id)?;
    close_attempt(
        conn,
        &attempt,
        AttemptOutcome::Failed,
        Some(error),
        &now_text,
    )?;
    fail_task(
        conn,
        &open.task_id,
        attempt_id,
        error,
        &open.worker_id,
        retry,
        priority,
        now,
    )
    .map(Recorded::new)
}

pub(super) fn release_in(
    conn: &Connection,
    attempt_id: Uuid,
    reason: &str,
    priority: &PriorityPolicy,
    now: Now,
) -> Result<(), QueueError> {
    let now = now.resolve();
    let now_text = ts(&now);
    let attempt = attempt_id.to_string();
    let open = open_attempt(conn, attempt_id)?;
    close_attempt(
        conn,
        &attempt,
        AttemptOutcome::Released,
        Some(reason),
        &now_text,
    )?;
    // A leftover run-after time would hold the task back; it is claimable at once.
    clear_schedule(conn, &open.task_id)?;
    let why = format!("released unfinished: {reason}");
    transition(
        conn,
        &open.task_id,
        TaskStatus::Running,
        TaskStatus::Ready,
        &now_text,
        &open.worker_id,
        Some(&attempt),
        Some(&why),
    )?;
    key_ready(conn, &id_array([open.task_id.as_str()]), priority, now)
}

pub(super) fn cancel_in(
    conn: &Connection,
    task_id: Uuid,
    actor: &str,
    now: Now,
) -> Result<Vec<Uuid>, QueueError> {
    let now = now.resolve();
    let now_text = ts(&now);
    let id = task_id.to_string();
    let status = task_status(conn, task_id)?;
    if status.is_terminal() {
        return Err(QueueError::InvalidTransition {
            task_id,
            operation: "cancel",
            status,
        });
    }
    let mut affected = vec![(id.clone(), status)];
    affected.extend(descendants(conn, &id, Walk::DependentsAndChildren)?);
    affected.retain(|(_, status)| !status.is_terminal());
    let ids = id_array(affected.iter().map(|(task, _)| task.as_str()));
    // Running tasks' attempts end as cancelled: their leases are revoked.
    let revoked: HashMap<String, String> =
        rows(conn, CANCEL_ATTEMPTS, params![now_text, ids], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })?
        .into_iter()
        .collect();
    clear_schedules(conn, &ids)?;
    let (root, rest): (Vec<_>, Vec<_>) = affected
        .into_iter()
        .map(|(task, from)| Move {
            attempt: revoked.get(&task).cloned(),
            id: task,
            from,
        })
        .partition(|m| m.id == id);
    transition_many(conn, &root, TaskStatus::Cancelled, &now_text, actor, None)?;
    let reason = format!("cancelled with {id}");
    transition_many(
        conn,
        &rest,
        TaskStatus::Cancelled,
        &now_text,
        actor,
        Some(&reason),
    )?;
    root.iter()
        .chain(&rest)
        .map(|m| task_uuid(&m.id))
        .collect::<Result<Vec<_>, _>>()
}

pub(super) fn retry_in(
    conn: &Connection,
    task_id: Uuid,
    actor: &str,
    priority: &PriorityPolicy,
    now: Now,
) -> Result<Vec<Uuid>, QueueError> {
    let now = now.resolve();
    let now_text = ts(&now);
    let id = task_id.to_string();
    let status = task_status(conn, task_id)?;
    if status != TaskStatus::Failed {
        return Err(QueueError::InvalidTransition {
            task_id,
            operation: "retry",
            status,
        });
    }
    let waiting: i64 = conn
        .prepare_cached(COUNT_UNFINISHED_DEPENDENCIES)
        .and_then(|mut q| q.query_row([&id], |r| r.get(0)))
        .map_err(raw)?;
    let to = if waiting == 0 {
        TaskStatus::Ready
    } else {
        TaskStatus::Blocked
    };
    exec(conn, RESET_FOR_RETRY, [&id])?;
    // Keyed as ready from now (or its run-after time), also when it waits blocked: it is
    // keyed again when its dependencies release it.
    key_ready(conn, &id_array([id.as_str()]), priority, now)?;
    // No run-after time is cleared: a failed task's backoff ended with the claim that ran
    // it, so a time still here is the one it was submitted with, and it never ran (it failed
    // by cascade). It still holds.
    transition(
        conn,
        &id,
        TaskStatus::Failed,
        to,
        &now_text,
        actor,
        None,
        Some("retried"),
    )?;
    // A failed dependent of a task that never completed cannot have run: it failed by
    // cascade. It waits again once none of its dependencies is failed or cancelled any
    // more; shallowest first, so a dependent sees its dependencies already put back.
    let mut unblocked = Vec::new();
    let reason = format!("dependency {id} retried");
    for (dependent, _) in descendants(conn, &id, Walk::FailedDependents)? {
        let still_down: i64 = conn
            .prepare_cached(COUNT_DOWN_DEPENDENCIES)
            .and_then(|mut q| q.query_row([&dependent], |r| r.get(0)))
            .map_err(raw)?;
        if still_down > 0 {
            continue;
        }
        exec(conn, RESET_CASCADED, [&dependent])?;
        transition(
            conn,
            &dependent,
            TaskStatus::Failed,
            TaskStatus::Blocked,
            &now_text,
            actor,
            None,
            Some(&reason),
        )?;
        unblocked.push(task_uuid(&dependent)?);
    }
    Ok(unblocked)
}

pub(super) fn reap_in(
    conn: &Connection,
    retry: &RetryPolicy,
    priority: &PriorityPolicy,
    now: Now,
) -> Result<ReapReport, QueueError> {
    let now = now.resolve();
    let now_text = ts(&now);
    let open: Vec<(String, String, String, String, i64)> =
        rows(conn, SELECT_REAPABLE, [&now_text], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
        })?;
    let mut report = ReapReport::default();
    for (attempt, task, started_at, lease_expires_at, timeout) in open {
        // Each attempt in a savepoint of its own: one row the reaper cannot handle (a stored
        // value that does not parse) is rolled back and logged, and the others are still
        // reaped. A busy or broken database still fails the whole reap.
        exec(conn, SAVEPOINT_REAP, [])?;
        let one = reap_one(
            conn,
            retry,
            priority,
            now,
            &now_text,
            (&attempt, &task, &started_at, &lease_expires_at, timeout),
        );
        match one {
            Ok(reaped) => {
                exec(conn, RELEASE_REAP, [])?;
                match reaped {
                    Some((AttemptOutcome::TimedOut, id)) => report.timed_out.push(id),
                    Some((_, id)) => report.lost.push(id),
                    None => {}
                }
            }
            Err(e @ QueueError::Database(DatabaseError::Busy)) => return Err(e),
            Err(e) => {
                exec(conn, ROLLBACK_TO_REAP, [])?;
                exec(conn, RELEASE_REAP, [])?;
                tracing::error!(attempt = %attempt, task = %task, error = %e,
                    "the reaper skipped an attempt it could not handle");
            }
        }
    }
    Ok(report)
}

/// Reaps one open attempt if its lease expired or it ran past its timeout: the outcome and the
/// task's id, or `None` when it is still in time.
fn reap_one(
    conn: &Connection,
    retry: &RetryPolicy,
    priority: &PriorityPolicy,
    now: DateTime<Utc>,
    now_text: &str,
    (attempt, task, started_at, lease_expires_at, timeout): (&str, &str, &str, &str, i64),
) -> Result<Option<(AttemptOutcome, Uuid)>, QueueError> {
    let cx = RowContext {
        table: "task_attempts",
        id: attempt,
    };
    let started = cx.timestamp("started_at", started_at)?;
    let timeout: u32 = cx.int("max_execution_timeout_seconds", timeout)?;
    let deadline = started + chrono::Duration::seconds(i64::from(timeout));
    let (outcome, error) = if deadline <= now {
        (
            AttemptOutcome::TimedOut,
            format!("ran past its timeout of {timeout} s"),
        )
    } else if lease_expires_at <= now_text {
        (
            AttemptOutcome::Lost,
            "the worker's lease expired".to_string(),
        )
    } else {
        return Ok(None);
    };
    close_attempt(conn, attempt, outcome, Some(&error), now_text)?;
    let attempt_id = cx.uuid("id", attempt)?;
    fail_task(
        conn, task, attempt_id, &error, "reaper", retry, priority, now,
    )?;
    Ok(Some((outcome, cx.uuid("task_id", task)?)))
}

/// Where a prune's pass has got to: the last task it removed, in finishing order.
type PruneCursor = (String, String);

/// One batch of a prune: removes up to `request.batch_size` prunable tasks after `cursor`, in
/// finishing order. Returns how many it removed and the new cursor (`None` when the pass has
/// reached its end). The rules of [`QueueStore::prune`] are the `NOT EXISTS` clauses.
fn prune_batch(
    conn: &Connection,
    request: &PruneRequest,
    cursor: &PruneCursor,
) -> Result<(u64, Option<PruneCursor>), QueueError> {
    let statuses =
        serde_json::Value::Array(request.statuses.iter().map(|s| s.as_str().into()).collect())
            .to_string();
    let found: Vec<(String, String)> = rows(
        conn,
        SELECT_PRUNABLE,
        params![
            ts(&request.finished_before),
            cursor.0,
            cursor.1,
            statuses,
            request.batch_size
        ],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?;
    let Some((last_id, last_at)) = found.last().cloned() else {
        return Ok((0, None));
    };
    // The foreign keys take the rest with each task: attempts, events, schedule and edges
    // (ON DELETE CASCADE), and a child's parent link and an agent's current task (SET NULL).
    let removed = exec(
        conn,
        DELETE_TASKS,
        [id_array(found.iter().map(|(id, _)| id.as_str()))],
    )?;
    let more = found.len() as u64 == u64::from(request.batch_size);
    Ok((removed, more.then_some((last_at, last_id))))
}

#[async_trait]
impl QueueStore for QueueStoreImpl {
    async fn submit(
        &self,
        batch: Vec<NewTask>,
        limits: &QueueLimits,
        priority: &PriorityPolicy,
        actor: &str,
        now: Now,
    ) -> Result<Vec<Submitted>, QueueError> {
        let (limits, priority, actor) = (*limits, *priority, actor.to_string());
        self.write(move |conn| submit_in(conn, &batch, &limits, &priority, &actor, now))
            .await
    }

    async fn submission_details(&self, task_id: Uuid) -> Result<SubmissionDetails, QueueError> {
        let id = task_id.to_string();
        let row = sqlx::query!(
            r#"SELECT
                   (SELECT k.idempotency_key FROM task_idempotency k WHERE k.task_id = t.id)
                       AS "idempotency_key?: String",
                   (SELECT s.run_after FROM task_schedule s WHERE s.task_id = t.id)
                       AS "run_after?: String"
               FROM tasks t WHERE t.id = ?1"#,
            id
        )
        .fetch_optional(&self.pool)
        .await
        .map_err(db)?
        .ok_or(QueueError::TaskNotFound(task_id))?;
        let run_after = row
            .run_after
            .map(|text| {
                RowContext {
                    table: "task_schedule",
                    id: &id,
                }
                .timestamp("run_after", &text)
            })
            .transpose()?;
        Ok(SubmissionDetails {
            idempotency_key: row.idempotency_key,
            run_after,
        })
    }

    async fn claim(
        &self,
        request: &ClaimRequest,
        priority: &PriorityPolicy,
        now: Now,
    ) -> Result<Vec<ClaimedTask>, QueueError> {
        let (request, priority) = (request.clone(), *priority);
        self.write(move |conn| claim_in(conn, &request, &priority, now))
            .await
    }

    async fn heartbeat(
        &self,
        attempt_id: Uuid,
        lease: Duration,
        now: Now,
    ) -> Result<Lease, QueueError> {
        self.write(move |conn| heartbeat_in(conn, attempt_id, lease, now))
            .await
    }

    async fn complete(
        &self,
        attempt_id: Uuid,
        result: Option<Value>,
        priority: &PriorityPolicy,
        now: Now,
    ) -> Result<Recorded<Vec<Uuid>>, QueueError> {
        let priority = *priority;
        self.write(move |conn| complete_in(conn, attempt_id, result.as_ref(), &priority, now))
            .await
    }

    async fn fail(
        &self,
        attempt_id: Uuid,
        error: &str,
        retry: &RetryPolicy,
        priority: &PriorityPolicy,
        now: Now,
    ) -> Result<Recorded<FailOutcome>, QueueError> {
        let (error, retry, priority) = (error.to_string(), *retry, *priority);
        self.write(move |conn| fail_in(conn, attempt_id, &error, &retry, &priority, now))
            .await
    }

    async fn release(
        &self,
        attempt_id: Uuid,
        reason: &str,
        priority: &PriorityPolicy,
        now: Now,
    ) -> Result<(), QueueError> {
        let (reason, priority) = (reason.to_string(), *priority);
        self.write(move |conn| release_in(conn, attempt_id, &reason, &priority, now))
            .await
    }

    async fn cancel(&self, task_id: Uuid, actor: &str, now: Now) -> Result<Vec<Uuid>, QueueError> {
        let actor = actor.to_string();
        self.write(move |conn| cancel_in(conn, task_id, &actor, now))
            .await
    }

    async fn retry(
        &self,
        task_id: Uuid,
        actor: &str,
        priority: &PriorityPolicy,
        now: Now,
    ) -> Result<Vec<Uuid>, QueueError> {
        let (actor, priority) = (actor.to_string(), *priority);
        self.write(move |conn| retry_in(conn, task_id, &actor, &priority, now))
            .await
    }

    async fn reap(
        &self,
        retry: &RetryPolicy,
        priority: &PriorityPolicy,
        now: Now,
    ) -> Result<ReapReport, QueueError> {
        let (retry, priority) = (*retry, *priority);
        self.write(move |conn| reap_in(conn, &retry, &priority, now))
            .await
    }

    async fn prune(&self, request: &PruneRequest) -> Result<PruneReport, QueueError> {
        if let Some(status) = request.statuses.iter().find(|s| !s.is_terminal()) {
            return Err(abathur_core::ValidationError::new(
                "status",
                format!("{status} is not a finished status"),
            )
            .into());
        }
        if request.batch_size == 0 {
            return Err(
                abathur_core::ValidationError::new("batch_size", "must be at least 1").into(),
            );
        }
        let mut report = PruneReport::default();
        // A pass removes what it can in finishing order. A failed task is kept while a
        // dependent failed with it is there; when the pass removed that dependent, the next
        // pass takes the task. Every pass but the last removes something, so this ends.
        loop {
            let mut cursor = (String::new(), String::new());
            let mut removed_in_pass = 0;
            loop {
                // Timed inside the transaction, from after `BEGIN IMMEDIATE` to before the
                // commit: how long this batch kept other writers out, without its own wait.
                let (request, batch_cursor) = (request.clone(), cursor.clone());
                let (removed, next, held) = self
                    .write(move |conn| {
                        let started = std::time::Instant::now();
                        prune_batch(conn, &request, &batch_cursor)
                            .map(|(removed, next)| (removed, next, started.elapsed()))
                    })
                    .await?;
                report.longest_batch = report.longest_batch.max(held);
                report.batches += 1;
                report.tasks += removed;
                removed_in_pass += removed;
                match next {
                    Some(next) => cursor = next,
                    None => break,
                }
            }
            let chains = request.statuses.iter().any(|s| *s != TaskStatus::Completed);
            if removed_in_pass == 0 || !chains {
                return Ok(report);
            }
        }
    }

    async fn history(&self, task_id: Uuid) -> Result<Vec<TaskEvent>, QueueError> {
        let id = task_id.to_string();
        let rows = sqlx::query!(
            r#"SELECT id AS "id!", from_status, to_status, at, actor, attempt_id, reason
             FROM task_events WHERE task_id = ? ORDER BY id"#,
            id
        )
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        if rows.is_empty() {
            let exists =
                sqlx::query_scalar!("SELECT EXISTS (SELECT 1 FROM tasks WHERE id = ?)", id)
                    .fetch_one(&self.pool)
                    .await
                    .map_err(db)?;
            if exists == 0 {
                return Err(QueueError::TaskNotFound(task_id));
            }
        }
        rows.into_iter()
            .map(|r| {
                let key = r.id.to_string();
                let cx = RowContext {
                    table: "task_events",
                    id: &key,
                };
                Ok(TaskEvent {
                    sequence: r.id,
                    task_id,
                    from: r
                        .from_status
                        .as_deref()
                        .map(|s| cx.parse("from_status", s))
                        .transpose()?,
                    to: cx.parse("to_status", &r.to_status)?,
                    at: cx.timestamp("at", &r.at)?,
                    actor: r.actor,
                    attempt_id: cx.opt_uuid("attempt_id", r.attempt_id.as_deref())?,
                    reason: r.reason,
                })
            })
            .collect()
    }

    async fn overview(&self, running_limit: u32, now: Now) -> Result<QueueOverview, QueueError> {
        // One read transaction: in WAL mode every statement sees the same snapshot.
        let mut tx = self.pool.begin().await.map_err(db)?;
        let mut counts: std::collections::BTreeMap<TaskStatus, u64> =
            TaskStatus::ALL.iter().map(|s| (*s, 0)).collect();
        let rows = sqlx::query!(
            // Kept by the triggers of migration 0009: seven rows, whatever the number of tasks.
            r#"SELECT status AS "status!", tasks AS "count!: i64" FROM task_status_counts"#
        )
        .fetch_all(&mut *tx)
        .await
        .map_err(db)?;
        for r in rows {
            let cx = RowContext {
                table: "tasks",
                id: "",
            };
            counts.insert(cx.parse("status", &r.status)?, cx.int("count", r.count)?);
        }

        // The oldest task a worker could claim now: one held back by its run-after time or a
        // backoff is not waiting for a worker, and naming it would point at no fault.
        let now = now.resolve();
        let now_text = ts(&now);
        let oldest = sqlx::query!(
            r#"SELECT id AS "id!", summary, agent_type, submitted_at
               FROM tasks t WHERE status = 'ready'
                 AND NOT EXISTS (SELECT 1 FROM task_schedule s
                                 WHERE s.task_id = t.id AND s.run_after > ?1)
               ORDER BY submitted_at, id LIMIT 1"#,
            now_text
        )
        .fetch_optional(&mut *tx)
        .await
        .map_err(db)?;
        let oldest_ready = oldest
            .map(|r| {
                let cx = RowContext {
                    table: "tasks",
                    id: &r.id,
                };
                Ok::<_, DatabaseError>(WaitingTask {
                    task_id: cx.uuid("id", &r.id)?,
                    summary: r.summary,
                    agent_type: r.agent_type,
                    submitted_at: cx.timestamp("submitted_at", &r.submitted_at)?,
                })
            })
            .transpose()?;

        let limit = i64::from(running_limit);
        let rows = sqlx::query!(
            r#"SELECT a.id AS "id!", a.task_id, t.summary, a.worker_id, a.started_at,
                      a.lease_expires_at
               FROM task_attempts a JOIN tasks t ON t.id = a.task_id
               WHERE a.finished_at IS NULL
               ORDER BY a.lease_expires_at, a.id LIMIT ?"#,
            limit
        )
        .fetch_all(&mut *tx)
        .await
        .map_err(db)?;
        let running = rows
            .into_iter()
            .map(|r| {
                let cx = RowContext {
                    table: "task_attempts",
                    id: &r.id,
                };
                Ok::<_, DatabaseError>(RunningAttempt {
                    attempt_id: cx.uuid("id", &r.id)?,
                    task_id: cx.uuid("task_id", &r.task_id)?,
                    summary: r.summary,
                    worker_id: r.worker_id,
                    started_at: cx.timestamp("started_at", &r.started_at)?,
                    lease_expires_at: cx.timestamp("lease_expires_at", &r.lease_expires_at)?,
                })
            })
            .collect::<Result<Vec<_>, _>>()?;

        let expired = sqlx::query_scalar!(
            r#"SELECT COUNT(*) AS "count!: i64" FROM task_attempts
               WHERE finished_at IS NULL AND lease_expires_at <= ?"#,
            now_text
        )
        .fetch_one(&mut *tx)
        .await
        .map_err(db)?;
        tx.commit().await.map_err(db)?;
        Ok(QueueOverview {
            at: now,
            counts,
            oldest_ready,
            running,
            expired_leases: RowContext {
                table: "task_attempts",
                id: "",
            }
            .int("count", expired)?,
        })
    }

    async fn pending(&self, limit: u32) -> Result<Vec<PendingTask>, QueueError> {
        let limit = i64::from(limit);
        let rows = sqlx::query!(
            r#"WITH p AS (
                   SELECT id, summary, agent_type, status, calculated_priority, submitted_at
                   FROM tasks
                   WHERE status NOT IN ('completed', 'failed', 'cancelled')
                   ORDER BY calculated_priority DESC, submitted_at, id
                   LIMIT ?
               )
               SELECT p.id AS "id!", p.summary AS "summary!", p.agent_type AS "agent_type!",
                      p.status AS "status!", p.calculated_priority AS "calculated_priority!: f64",
                      (SELECT json_group_array(d.depends_on_task_id)
                       FROM task_dependencies d JOIN tasks u ON u.id = d.depends_on_task_id
                       WHERE d.task_id = p.id AND u.status <> 'completed') AS "waits_for!: String"
               FROM p
               ORDER BY p.calculated_priority DESC, p.submitted_at, p.id"#,
            limit
        )
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        rows.into_iter()
            .map(|r| {
                let cx = RowContext {
                    table: "tasks",
                    id: &r.id,
                };
                let waits_for = cx.json("dependencies", &r.waits_for)?;
                let waits_for = waits_for.as_array().map(Vec::as_slice).unwrap_or_default();
                Ok(PendingTask {
                    task_id: cx.uuid("id", &r.id)?,
                    summary: r.summary,
                    agent_type: r.agent_type,
                    status: cx.parse("status", &r.status)?,
                    calculated_priority: r.calculated_priority,
                    waits_for: waits_for
                        .iter()
                        .map(|id| cx.uuid("dependencies", id.as_str().unwrap_or_default()))
                        .collect::<Result<_, _>>()?,
                })
            })
            .collect()
    }
}
