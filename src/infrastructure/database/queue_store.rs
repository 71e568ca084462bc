//! [`QueueStore`] on SQLite. Every operation is one `BEGIN IMMEDIATE` transaction: it takes the
//! write lock first, so its reads are current when it decides, in whatever process it runs.

use std::collections::HashMap;
use std::time::Duration;

use abathur_core::error::DatabaseError;
use abathur_core::models::{Task, TaskStatus};
use abathur_core::queue::{
    AttemptOutcome, ClaimRequest, ClaimedTask, FailOutcome, Lease, NewTask, PendingTask,
    PriorityPolicy, QueueError, QueueLimits, QueueOverview, QueueStore, ReapReport, RetryPolicy,
    RunningAttempt, TaskEvent, WaitingTask,
};
use abathur_core::timestamp;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::{QueryBuilder, Sqlite, SqliteConnection, SqlitePool};
use uuid::Uuid;

use super::connection::begin_write;
use super::errors::on;
use super::row::{json_text, RowContext};
use super::task_repo::{first_missing_reference, insert_one, load_task, missing, TaskParams};

const ENTITY: &str = "task";

/// The SQLite task queue store.
#[derive(Debug, Clone)]
pub struct QueueStoreImpl {
    pool: SqlitePool,
}

impl QueueStoreImpl {
    /// A store on `pool`.
    pub fn new(pool: SqlitePool) -> Self {
        Self { pool }
    }
}

fn db(e: sqlx::Error) -> QueueError {
    QueueError::Database(on(ENTITY, "")(e))
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
async fn record(
    conn: &mut SqliteConnection,
    task_id: &str,
    from: Option<TaskStatus>,
    to: TaskStatus,
    now: &str,
    actor: &str,
    attempt_id: Option<&str>,
    reason: Option<&str>,
) -> Result<(), QueueError> {
    let from = from.map(TaskStatus::as_str);
    let to = to.as_str();
    sqlx::query!(
        "INSERT INTO task_events (task_id, from_status, to_status, at, actor, attempt_id, reason)
         VALUES (?, ?, ?, ?, ?, ?, ?)",
        task_id,
        from,
        to,
        now,
        actor,
        attempt_id,
        reason
    )
    .execute(&mut *conn)
    .await
    .map_err(db)?;
    Ok(())
}

/// Forgets a task's run-after time: it is claimable at once when next ready.
async fn clear_schedule(conn: &mut SqliteConnection, task_id: &str) -> Result<(), QueueError> {
    sqlx::query!("DELETE FROM task_schedule WHERE task_id = ?", task_id)
        .execute(&mut *conn)
        .await
        .map_err(db)?;
    Ok(())
}

/// The open attempt `attempt_id`, or the reason it cannot be acted on.
struct OpenAttempt {
    task_id: String,
    worker_id: String,
    attempt_number: i64,
}

async fn open_attempt(
    conn: &mut SqliteConnection,
    attempt_id: Uuid,
) -> Result<OpenAttempt, QueueError> {
    let id = attempt_id.to_string();
    let row = sqlx::query!(
        "SELECT task_id, worker_id, attempt_number, finished_at, outcome
         FROM task_attempts WHERE id = ?",
        id
    )
    .fetch_optional(&mut *conn)
    .await
    .map_err(db)?;
    let Some(row) = row else {
        return Err(QueueError::AttemptNotFound(attempt_id));
    };
    match row.outcome.as_deref() {
        None => Ok(OpenAttempt {
            task_id: row.task_id,
            worker_id: row.worker_id,
            attempt_number: row.attempt_number,
        }),
        Some("cancelled") => Err(QueueError::Cancelled {
            task_id: RowContext {
                table: "task_attempts",
                id: &id,
            }
            .uuid("task_id", &row.task_id)?,
        }),
        Some(outcome) => Err(QueueError::LeaseLost {
            attempt_id,
            reason: format!("the attempt already ended ({outcome})"),
        }),
    }
}

async fn close_attempt(
    conn: &mut SqliteConnection,
    attempt_id: &str,
    outcome: AttemptOutcome,
    error: Option<&str>,
    now: &str,
) -> Result<(), QueueError> {
    let outcome = outcome.as_str();
    sqlx::query!(
        "UPDATE task_attempts SET finished_at = ?, outcome = ?, error = ?
         WHERE id = ? AND finished_at IS NULL",
        now,
        outcome,
        error,
        attempt_id
    )
    .execute(&mut *conn)
    .await
    .map_err(db)?;
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
async fn descendants(
    conn: &mut SqliteConnection,
    root: &str,
    walk: Walk,
) -> Result<Vec<(String, TaskStatus)>, QueueError> {
    // The walk goes on from a task only when it is the root or unfinished: a completed child
    // of a cancelled parent keeps its own dependents.
    let sql = match walk {
        Walk::Dependents => {
            "WITH RECURSIVE affected(id) AS (
                 SELECT ?1
                 UNION
                 SELECT d.task_id FROM affected a
                 JOIN tasks p ON p.id = a.id
                 JOIN task_dependencies d ON d.depends_on_task_id = a.id
                 WHERE a.id = ?1 OR p.status NOT IN ('completed', 'failed', 'cancelled')
             )
             SELECT t.id, t.status FROM affected JOIN tasks t ON t.id = affected.id
             WHERE t.id <> ?1 ORDER BY t.dependency_depth, t.id"
        }
        Walk::DependentsAndChildren => {
            "WITH RECURSIVE affected(id) AS (
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
             WHERE t.id <> ?1 ORDER BY t.dependency_depth, t.id"
        }
        Walk::FailedDependents => {
            "WITH RECURSIVE affected(id) AS (
                 SELECT ?1
                 UNION
                 SELECT d.task_id FROM affected a
                 JOIN task_dependencies d ON d.depends_on_task_id = a.id
                 JOIN tasks t ON t.id = d.task_id
                 WHERE t.status = 'failed'
             )
             SELECT t.id, t.status FROM affected JOIN tasks t ON t.id = affected.id
             WHERE t.id <> ?1 ORDER BY t.dependency_depth, t.id"
        }
    };
    let rows: Vec<(String, String)> = sqlx::query_as(sql)
        .bind(root)
        .fetch_all(&mut *conn)
        .await
        .map_err(db)?;
    rows.into_iter()
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
async fn transition(
    conn: &mut SqliteConnection,
    task_id: &str,
    from: TaskStatus,
    to: TaskStatus,
    now: &str,
    actor: &str,
    attempt_id: Option<&str>,
    reason: Option<&str>,
) -> Result<(), QueueError> {
    let status = to.as_str();
    let started_at = (to == TaskStatus::Running).then_some(now);
    let completed_at = to.is_terminal().then_some(now);
    let expected = from.as_str();
    let changed = sqlx::query!(
        "UPDATE tasks SET status = ?, last_updated_at = ?,
             started_at = COALESCE(?, started_at), completed_at = COALESCE(?, completed_at)
         WHERE id = ? AND status = ?",
        status,
        now,
        started_at,
        completed_at,
        task_id,
        expected
    )
    .execute(&mut *conn)
    .await
    .map_err(db)?
    .rows_affected();
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
    .await
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
/// whole subtree (a cascade, a cancel, a fan-out), so that the write lock is held for two
/// statements rather than several per task.
async fn transition_many(
    conn: &mut SqliteConnection,
    moves: &[Move],
    to: TaskStatus,
    now: &str,
    actor: &str,
    reason: Option<&str>,
) -> Result<(), QueueError> {
    if moves.is_empty() {
        return Ok(());
    }
    let rows = serde_json::Value::Array(
        moves
            .iter()
            .map(|m| serde_json::json!({ "id": m.id, "from": m.from.as_str(), "attempt": m.attempt }))
            .collect(),
    )
    .to_string();
    let status = to.as_str();
    let terminal = to.is_terminal();
    let running = to == TaskStatus::Running;
    let changed = sqlx::query!(
        r#"UPDATE tasks SET status = ?1, last_updated_at = ?2,
               completed_at = CASE WHEN ?3 THEN ?2 ELSE completed_at END,
               started_at = CASE WHEN ?5 THEN ?2 ELSE started_at END
           FROM (SELECT json_extract(value, '$.id') AS id, json_extract(value, '$.from') AS from_status
                 FROM json_each(?4)) AS m
           WHERE tasks.id = m.id AND tasks.status = m.from_status"#,
        status,
        now,
        terminal,
        rows,
        running
    )
    .execute(&mut *conn)
    .await
    .map_err(db)?
    .rows_affected();
    // As in `transition`: every `from` was read in this transaction.
    if changed != moves.len() as u64 {
        return Err(QueueError::Database(DatabaseError::Conflict {
            entity: "task",
            id: moves[0].id.clone(),
            reason: format!(
                "{} of {} tasks were changed outside the queue",
                moves.len() as u64 - changed,
                moves.len()
            ),
        }));
    }
    sqlx::query!(
        r#"INSERT INTO task_events (task_id, from_status, to_status, at, actor, attempt_id, reason)
           SELECT json_extract(value, '$.id'), json_extract(value, '$.from'), ?1, ?2, ?3,
                  json_extract(value, '$.attempt'), ?4
           FROM json_each(?5) ORDER BY key"#,
        status,
        now,
        actor,
        reason,
        rows
    )
    .execute(&mut *conn)
    .await
    .map_err(db)?;
    Ok(())
}

/// A JSON array of ids, for statements that take a set as `json_each(?)`.
fn id_array<'a>(ids: impl IntoIterator<Item = &'a str>) -> String {
    serde_json::Value::Array(ids.into_iter().map(|id| id.into()).collect()).to_string()
}

/// Recomputes `calculated_priority` of the tasks in `ids` (a JSON array), with the formula of
/// [`PriorityPolicy::calculate`] in SQL; returns how many rows changed.
async fn recompute_priorities(
    conn: &mut SqliteConnection,
    ids: &str,
    priority: &PriorityPolicy,
    now: &str,
) -> Result<u64, QueueError> {
    let depth_cap = i64::from(priority.depth_cap);
    let horizon = priority.deadline_horizon.as_secs_f64().max(1e-6);
    let aging = priority.aging_interval.as_secs_f64().max(1e-6);
    Ok(sqlx::query!(
        "UPDATE tasks SET calculated_priority = priority
             + ?1 * MIN(dependency_depth, ?2)
             + CASE WHEN deadline IS NULL THEN 0.0
                    ELSE ?3 * MAX(0.0, MIN(1.0, 1.0 - (julianday(deadline) - julianday(?4)) * 86400.0 / ?5))
               END
             + MAX(0.0, (julianday(?4) - julianday(submitted_at)) * 86400.0) / ?6
         WHERE id IN (SELECT value FROM json_each(?7))",
        priority.depth_weight,
        depth_cap,
        priority.deadline_weight,
        now,
        horizon,
        aging,
        ids
    )
    .execute(&mut *conn)
    .await
    .map_err(db)?
    .rows_affected())
}

/// Forgets the run-after times of the tasks in `ids` (a JSON array).
async fn clear_schedules(conn: &mut SqliteConnection, ids: &str) -> Result<(), QueueError> {
    sqlx::query!(
        "DELETE FROM task_schedule WHERE task_id IN (SELECT value FROM json_each(?))",
        ids
    )
    .execute(&mut *conn)
    .await
    .map_err(db)?;
    Ok(())
}

/// The fail path of a running task whose attempt ended badly: back to ready after a backoff
/// while retries remain, else failed with every non-terminal dependent.
async fn fail_task(
    conn: &mut SqliteConnection,
    task_id: &str,
    attempt_id: Uuid,
    error: &str,
    actor: &str,
    retry: &RetryPolicy,
    now: DateTime<Utc>,
) -> Result<FailOutcome, QueueError> {
    let now_text = ts(&now);
    let attempt = attempt_id.to_string();
    let row = sqlx::query!(
        "SELECT retry_count, max_retries FROM tasks WHERE id = ?",
        task_id
    )
    .fetch_one(&mut *conn)
    .await
    .map_err(db)?;
    let retry_count = row.retry_count + 1;
    sqlx::query!(
        "UPDATE tasks SET retry_count = ?, error_message = ? WHERE id = ?",
        retry_count,
        error,
        task_id
    )
    .execute(&mut *conn)
    .await
    .map_err(db)?;
    let cx = RowContext {
        table: "tasks",
        id: task_id,
    };
    let retry_count: u32 = cx.int("retry_count", retry_count)?;
    if i64::from(retry_count) <= row.max_retries {
        let run_after = later(now, retry.delay(retry_count, attempt_id))?;
        let run_after_text = ts(&run_after);
        sqlx::query!(
            "INSERT INTO task_schedule (task_id, run_after) VALUES (?, ?)
             ON CONFLICT (task_id) DO UPDATE SET run_after = excluded.run_after",
            task_id,
            run_after_text
        )
        .execute(&mut *conn)
        .await
        .map_err(db)?;
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
        )
        .await?;
        return Ok(FailOutcome::Retrying {
            retry_count,
            run_after,
        });
    }
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
    )
    .await?;
    let cascade_error = format!("dependency {task_id} failed: {error}");
    // An unfinished dependent of a task that never completed is blocked (or pending): it
    // cannot be ready or running.
    let moves: Vec<Move> = descendants(conn, task_id, Walk::Dependents)
        .await?
        .into_iter()
        .filter(|(_, status)| !status.is_terminal() && *status != TaskStatus::Running)
        .map(|(id, from)| Move {
            id,
            from,
            attempt: None,
        })
        .collect();
    let ids = id_array(moves.iter().map(|m| m.id.as_str()));
    sqlx::query!(
        "UPDATE tasks SET error_message = ? WHERE id IN (SELECT value FROM json_each(?))",
        cascade_error,
        ids
    )
    .execute(&mut *conn)
    .await
    .map_err(db)?;
    transition_many(
        conn,
        &moves,
        TaskStatus::Failed,
        &now_text,
        "queue",
        Some(&cascade_error),
    )
    .await?;
    clear_schedules(conn, &ids).await?;
    let cascaded = moves
        .iter()
        .map(|m| task_uuid(&m.id))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(FailOutcome::Failed { cascaded })
}

/// Makes ready every blocked dependent of `task_id` whose dependencies are all completed.
async fn release_dependents(
    conn: &mut SqliteConnection,
    task_id: &str,
    priority: &PriorityPolicy,
    now: DateTime<Utc>,
) -> Result<Vec<Uuid>, QueueError> {
    let now_text = ts(&now);
    let ids = sqlx::query_file_scalar!(
        "src/infrastructure/database/queries/dependents_to_release.sql",
        task_id
    )
    .fetch_all(&mut *conn)
    .await
    .map_err(db)?;
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
    let reason = format!("dependency {task_id} completed");
    transition_many(
        conn,
        &moves,
        TaskStatus::Ready,
        &now_text,
        "queue",
        Some(&reason),
    )
    .await?;
    recompute_priorities(
        conn,
        &id_array(ids.iter().map(String::as_str)),
        priority,
        &now_text,
    )
    .await?;
    ids.iter().map(|id| task_uuid(id)).collect()
}

async fn task_status(conn: &mut SqliteConnection, task_id: Uuid) -> Result<TaskStatus, QueueError> {
    let id = task_id.to_string();
    let status = sqlx::query_scalar!("SELECT status FROM tasks WHERE id = ?", id)
        .fetch_optional(&mut *conn)
        .await
        .map_err(db)?
        .ok_or(QueueError::TaskNotFound(task_id))?;
    Ok(RowContext {
        table: "tasks",
        id: &id,
    }
    .parse("status", &status)?)
}

// ---- Each operation on a connection inside a write transaction: the store runs one per
// transaction; the group-commit store runs many.

pub(super) async fn submit_in(
    conn: &mut SqliteConnection,
    batch: Vec<NewTask>,
    limits: &QueueLimits,
    priority: &PriorityPolicy,
    actor: &str,
    now: DateTime<Utc>,
) -> Result<Vec<Task>, QueueError> {
    let now_text = ts(&now);
    // Members may name each other as parents in any order: check at commit.
    sqlx::query!("PRAGMA defer_foreign_keys = ON")
        .execute(&mut *conn)
        .await
        .map_err(db)?;
    let mut in_batch: HashMap<Uuid, u32> = HashMap::with_capacity(batch.len());
    let mut stored = Vec::with_capacity(batch.len());
    let mut params_all = Vec::with_capacity(batch.len());
    for new in &batch {
        let mut deepest: Option<u32> = None;
        let mut all_completed = true;
        for dep in &new.dependencies {
            let depth = if let Some(depth) = in_batch.get(dep) {
                all_completed = false;
                *depth
            } else {
                let id = dep.to_string();
                let row = sqlx::query!(
                    "SELECT status, dependency_depth FROM tasks WHERE id = ?",
                    id
                )
                .fetch_optional(&mut *conn)
                .await
                .map_err(db)?
                .ok_or(QueueError::UnknownDependency {
                    task: new.id,
                    dependency: *dep,
                })?;
                let cx = RowContext {
                    table: "tasks",
                    id: &id,
                };
                let status: TaskStatus = cx.parse("status", &row.status)?;
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
                cx.int("dependency_depth", row.dependency_depth)?
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
        task.calculated_priority =
            priority.calculate(task.priority, depth, task.deadline, task.submitted_at, now);
        let params = TaskParams::new(task.clone())?;
        insert_one(&mut *conn, &params)
            .await
            .map_err(|e| match db(e) {
                QueueError::Database(DatabaseError::UniqueViolation { .. }) => {
                    QueueError::DuplicateTask { task: new.id }
                }
                other => other,
            })?;
        record(
            &mut *conn,
            &params.id,
            None,
            task.status,
            &now_text,
            actor,
            None,
            Some("submitted"),
        )
        .await?;
        params_all.push(params);
        stored.push(task);
    }
    let pending: std::collections::HashSet<&str> =
        params_all.iter().map(|p| p.id.as_str()).collect();
    for p in &params_all {
        if let Some((reference, id)) = first_missing_reference(&mut *conn, p, &pending)
            .await
            .map_err(db)?
        {
            return Err(match (task_uuid(&p.id), Uuid::parse_str(&id)) {
                (Ok(task), Ok(id)) => QueueError::UnknownReference {
                    task,
                    reference,
                    id,
                },
                _ => missing(reference, id).into(),
            });
        }
    }
    Ok(stored)
}

pub(super) async fn claim_in(
    conn: &mut SqliteConnection,
    request: &ClaimRequest,
    now: DateTime<Utc>,
) -> Result<Vec<ClaimedTask>, QueueError> {
    let now_text = ts(&now);
    let expires_at = later(now, request.lease)?;
    let expires_text = ts(&expires_at);
    let mut qb = QueryBuilder::<Sqlite>::new("SELECT id FROM tasks t WHERE status = 'ready'");
    if !request.agent_types.is_empty() {
        qb.push(" AND agent_type IN (");
        let mut list = qb.separated(", ");
        for agent_type in &request.agent_types {
            list.push_bind(agent_type);
        }
        qb.push(")");
    }
    qb.push(
        " AND NOT EXISTS (SELECT 1 FROM task_schedule s WHERE s.task_id = t.id AND s.run_after > ",
    )
    .push_bind(&now_text)
    .push(") ORDER BY calculated_priority DESC, submitted_at ASC, id ASC LIMIT ")
    .push_bind(i64::from(request.max_tasks));
    let ids: Vec<String> = qb
        .build_query_scalar()
        .fetch_all(&mut *conn)
        .await
        .map_err(db)?;
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
    let numbers: HashMap<String, i64> = sqlx::query!(
        r#"INSERT INTO task_attempts (id, task_id, attempt_number, worker_id, started_at, lease_expires_at)
           SELECT json_extract(j.value, '$.attempt'), json_extract(j.value, '$.task'),
                  (SELECT COALESCE(MAX(a.attempt_number), 0) + 1 FROM task_attempts a
                   WHERE a.task_id = json_extract(j.value, '$.task')),
                  ?1, ?2, ?3
           FROM json_each(?4) AS j
           RETURNING id AS "id!", attempt_number AS "attempt_number!""#,
        request.worker_id,
        now_text,
        expires_text,
        pairs
    )
    .fetch_all(&mut *conn)
    .await
    .map_err(db)?
    .into_iter()
    .map(|r| (r.id, r.attempt_number))
    .collect();
    let task_ids = id_array(ids.iter().map(String::as_str));
    clear_schedules(&mut *conn, &task_ids).await?;
    let moves: Vec<Move> = attempts
        .iter()
        .map(|(task, attempt)| Move {
            id: task.clone(),
            from: TaskStatus::Ready,
            attempt: Some(attempt.to_string()),
        })
        .collect();
    transition_many(
        &mut *conn,
        &moves,
        TaskStatus::Running,
        &now_text,
        &request.worker_id,
        Some("claimed"),
    )
    .await?;
    let mut claimed = Vec::with_capacity(attempts.len());
    for (id, attempt_id) in attempts {
        let task = load_task(&mut *conn, &id)
            .await?
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

pub(super) async fn heartbeat_in(
    conn: &mut SqliteConnection,
    attempt_id: Uuid,
    lease: Duration,
    now: DateTime<Utc>,
) -> Result<Lease, QueueError> {
    let expires_at = later(now, lease)?;
    let expires_text = ts(&expires_at);
    let id = attempt_id.to_string();
    let open = open_attempt(&mut *conn, attempt_id).await?;
    sqlx::query!(
        "UPDATE task_attempts SET lease_expires_at = ? WHERE id = ?",
        expires_text,
        id
    )
    .execute(&mut *conn)
    .await
    .map_err(db)?;
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

pub(super) async fn complete_in(
    conn: &mut SqliteConnection,
    attempt_id: Uuid,
    result: Option<Value>,
    priority: &PriorityPolicy,
    now: DateTime<Utc>,
) -> Result<Vec<Uuid>, QueueError> {
    let now_text = ts(&now);
    let attempt = attempt_id.to_string();
    let result = result.as_ref().map(json_text);
    let open = open_attempt(&mut *conn, attempt_id).await?;
    close_attempt(
        &mut *conn,
        &attempt,
        AttemptOutcome::Completed,
        None,
        &now_text,
    )
    .await?;
    sqlx::query!(
        "UPDATE tasks SET result_data = ?, error_message = NULL WHERE id = ?",
        result,
        open.task_id
    )
    .execute(&mut *conn)
    .await
    .map_err(db)?;
    transition(
        &mut *conn,
        &open.task_id,
        TaskStatus::Running,
        TaskStatus::Completed,
        &now_text,
        &open.worker_id,
        Some(&attempt),
        None,
    )
    .await?;
    let released = release_dependents(&mut *conn, &open.task_id, priority, now).await?;
    Ok(released)
}

pub(super) async fn fail_in(
    conn: &mut SqliteConnection,
    attempt_id: Uuid,
    error: &str,
    retry: &RetryPolicy,
    now: DateTime<Utc>,
) -> Result<FailOutcome, QueueError> {
    let now_text = ts(&now);
    let attempt = attempt_id.to_string();
    let open = open_attempt(&mut *conn, attempt_id).await?;
    close_attempt(
        &mut *conn,
        &attempt,
        AttemptOutcome::Failed,
        Some(error),
        &now_text,
    )
    .await?;
    let outcome = fail_task(
        &mut *conn,
        &open.task_id,
        attempt_id,
        error,
        &open.worker_id,
        retry,
        now,
    )
    .await?;
    Ok(outcome)
}

pub(super) async fn release_in(
    conn: &mut SqliteConnection,
    attempt_id: Uuid,
    reason: &str,
    now: DateTime<Utc>,
) -> Result<(), QueueError> {
    let now_text = ts(&now);
    let attempt = attempt_id.to_string();
    let open = open_attempt(&mut *conn, attempt_id).await?;
    close_attempt(
        &mut *conn,
        &attempt,
        AttemptOutcome::Released,
        Some(reason),
        &now_text,
    )
    .await?;
    // A leftover run-after time would hold the task back; it is claimable at once.
    clear_schedule(&mut *conn, &open.task_id).await?;
    let why = format!("released unfinished: {reason}");
    transition(
        &mut *conn,
        &open.task_id,
        TaskStatus::Running,
        TaskStatus::Ready,
        &now_text,
        &open.worker_id,
        Some(&attempt),
        Some(&why),
    )
    .await?;
    Ok(())
}

pub(super) async fn cancel_in(
    conn: &mut SqliteConnection,
    task_id: Uuid,
    actor: &str,
    now: DateTime<Utc>,
) -> Result<Vec<Uuid>, QueueError> {
    let now_text = ts(&now);
    let id = task_id.to_string();
    let status = task_status(&mut *conn, task_id).await?;
    if status.is_terminal() {
        return Err(QueueError::InvalidTransition {
            task_id,
            operation: "cancel",
            status,
        });
    }
    let mut affected = vec![(id.clone(), status)];
    affected.extend(descendants(&mut *conn, &id, Walk::DependentsAndChildren).await?);
    affected.retain(|(_, status)| !status.is_terminal());
    let ids = id_array(affected.iter().map(|(task, _)| task.as_str()));
    // Running tasks' attempts end as cancelled: their leases are revoked.
    let revoked: HashMap<String, String> = sqlx::query!(
        r#"UPDATE task_attempts SET finished_at = ?, outcome = 'cancelled'
           WHERE finished_at IS NULL AND task_id IN (SELECT value FROM json_each(?))
           RETURNING task_id AS "task_id!", id AS "id!""#,
        now_text,
        ids
    )
    .fetch_all(&mut *conn)
    .await
    .map_err(db)?
    .into_iter()
    .map(|r| (r.task_id, r.id))
    .collect();
    clear_schedules(&mut *conn, &ids).await?;
    let (root, rest): (Vec<_>, Vec<_>) = affected
        .into_iter()
        .map(|(task, from)| Move {
            attempt: revoked.get(&task).cloned(),
            id: task,
            from,
        })
        .partition(|m| m.id == id);
    transition_many(
        &mut *conn,
        &root,
        TaskStatus::Cancelled,
        &now_text,
        actor,
        None,
    )
    .await?;
    let reason = format!("cancelled with {id}");
    transition_many(
        &mut *conn,
        &rest,
        TaskStatus::Cancelled,
        &now_text,
        actor,
        Some(&reason),
    )
    .await?;
    let cancelled = root
        .iter()
        .chain(&rest)
        .map(|m| task_uuid(&m.id))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(cancelled)
}

pub(super) async fn retry_in(
    conn: &mut SqliteConnection,
    task_id: Uuid,
    actor: &str,
    priority: &PriorityPolicy,
    now: DateTime<Utc>,
) -> Result<Vec<Uuid>, QueueError> {
    let now_text = ts(&now);
    let id = task_id.to_string();
    let status = task_status(&mut *conn, task_id).await?;
    if status != TaskStatus::Failed {
        return Err(QueueError::InvalidTransition {
            task_id,
            operation: "retry",
            status,
        });
    }
    let waiting = sqlx::query_scalar!(
        r#"SELECT COUNT(*) AS "n!: i64" FROM task_dependencies d JOIN tasks u ON u.id = d.depends_on_task_id
           WHERE d.task_id = ? AND u.status <> 'completed'"#,
        id
    )
    .fetch_one(&mut *conn)
    .await
    .map_err(db)?;
    let to = if waiting == 0 {
        TaskStatus::Ready
    } else {
        TaskStatus::Blocked
    };
    let task = load_task(&mut *conn, &id)
        .await?
        .ok_or(QueueError::TaskNotFound(task_id))?;
    let calculated = priority.calculate(
        task.priority,
        task.dependency_depth,
        task.deadline,
        task.submitted_at,
        now,
    );
    sqlx::query!(
        "UPDATE tasks SET retry_count = 0, error_message = NULL, completed_at = NULL,
             calculated_priority = ? WHERE id = ?",
        calculated,
        id
    )
    .execute(&mut *conn)
    .await
    .map_err(db)?;
    clear_schedule(&mut *conn, &id).await?;
    transition(
        &mut *conn,
        &id,
        TaskStatus::Failed,
        to,
        &now_text,
        actor,
        None,
        Some("retried"),
    )
    .await?;
    // A failed dependent of a task that never completed cannot have run: it failed by
    // cascade. It waits again once none of its dependencies is failed or cancelled any
    // more; shallowest first, so a dependent sees its dependencies already put back.
    let mut unblocked = Vec::new();
    let reason = format!("dependency {id} retried");
    for (dependent, _) in descendants(&mut *conn, &id, Walk::FailedDependents).await? {
        let still_down = sqlx::query_scalar!(
            r#"SELECT COUNT(*) AS "n!: i64" FROM task_dependencies d
               JOIN tasks u ON u.id = d.depends_on_task_id
               WHERE d.task_id = ? AND u.status IN ('failed', 'cancelled')"#,
            dependent
        )
        .fetch_one(&mut *conn)
        .await
        .map_err(db)?;
        if still_down > 0 {
            continue;
        }
        sqlx::query!(
            "UPDATE tasks SET error_message = NULL, completed_at = NULL WHERE id = ?",
            dependent
        )
        .execute(&mut *conn)
        .await
        .map_err(db)?;
        transition(
            &mut *conn,
            &dependent,
            TaskStatus::Failed,
            TaskStatus::Blocked,
            &now_text,
            actor,
            None,
            Some(&reason),
        )
        .await?;
        unblocked.push(task_uuid(&dependent)?);
    }
    Ok(unblocked)
}

pub(super) async fn reap_in(
    conn: &mut SqliteConnection,
    retry: &RetryPolicy,
    now: DateTime<Utc>,
) -> Result<ReapReport, QueueError> {
    let now_text = ts(&now);
    let open = sqlx::query!(
        r#"SELECT a.id AS "attempt_id!", a.task_id AS "task_id!", a.started_at AS "started_at!",
                  a.lease_expires_at AS "lease_expires_at!",
                  t.max_execution_timeout_seconds AS "timeout!"
           FROM task_attempts a JOIN tasks t ON t.id = a.task_id
           WHERE a.finished_at IS NULL
             AND (a.lease_expires_at <= ?1
                  -- a second's slack for julianday's rounding; the exact check is below
                  OR (julianday(?1) - julianday(a.started_at)) * 86400.0
                     >= t.max_execution_timeout_seconds - 1)"#,
        now_text
    )
    .fetch_all(&mut *conn)
    .await
    .map_err(db)?;
    let mut report = ReapReport::default();
    for row in open {
        let cx = RowContext {
            table: "task_attempts",
            id: &row.attempt_id,
        };
        let started = cx.timestamp("started_at", &row.started_at)?;
        let timeout: u32 = cx.int("max_execution_timeout_seconds", row.timeout)?;
        let deadline = started + chrono::Duration::seconds(i64::from(timeout));
        let (outcome, error) = if deadline <= now {
            (
                AttemptOutcome::TimedOut,
                format!("ran past its timeout of {timeout} s"),
            )
        } else if row.lease_expires_at <= now_text {
            (
                AttemptOutcome::Lost,
                "the worker's lease expired".to_string(),
            )
        } else {
            continue;
        };
        close_attempt(
            &mut *conn,
            &row.attempt_id,
            outcome,
            Some(&error),
            &now_text,
        )
        .await?;
        let attempt_id = cx.uuid("id", &row.attempt_id)?;
        fail_task(
            &mut *conn,
            &row.task_id,
            attempt_id,
            &error,
            "reaper",
            retry,
            now,
        )
        .await?;
        let task_id = cx.uuid("task_id", &row.task_id)?;
        match outcome {
            AttemptOutcome::TimedOut => report.timed_out.push(task_id),
            _ => report.lost.push(task_id),
        }
    }
    Ok(report)
}

#[async_trait]
impl QueueStore for QueueStoreImpl {
    async fn submit(
        &self,
        batch: Vec<NewTask>,
        limits: &QueueLimits,
        priority: &PriorityPolicy,
        actor: &str,
        now: DateTime<Utc>,
    ) -> Result<Vec<Task>, QueueError> {
        let mut tx = begin_write(&self.pool).await?;
        let out = submit_in(&mut tx, batch, limits, priority, actor, now).await?;
        tx.commit().await.map_err(db)?;
        Ok(out)
    }

    async fn claim(
        &self,
        request: &ClaimRequest,
        now: DateTime<Utc>,
    ) -> Result<Vec<ClaimedTask>, QueueError> {
        let mut tx = begin_write(&self.pool).await?;
        let out = claim_in(&mut tx, request, now).await?;
        tx.commit().await.map_err(db)?;
        Ok(out)
    }

    async fn heartbeat(
        &self,
        attempt_id: Uuid,
        lease: Duration,
        now: DateTime<Utc>,
    ) -> Result<Lease, QueueError> {
        let mut tx = begin_write(&self.pool).await?;
        let out = heartbeat_in(&mut tx, attempt_id, lease, now).await?;
        tx.commit().await.map_err(db)?;
        Ok(out)
    }

    async fn complete(
        &self,
        attempt_id: Uuid,
        result: Option<Value>,
        priority: &PriorityPolicy,
        now: DateTime<Utc>,
    ) -> Result<Vec<Uuid>, QueueError> {
        let mut tx = begin_write(&self.pool).await?;
        let out = complete_in(&mut tx, attempt_id, result, priority, now).await?;
        tx.commit().await.map_err(db)?;
        Ok(out)
    }

    async fn fail(
        &self,
        attempt_id: Uuid,
        error: &str,
        retry: &RetryPolicy,
        now: DateTime<Utc>,
    ) -> Result<FailOutcome, QueueError> {
        let mut tx = begin_write(&self.pool).await?;
        let out = fail_in(&mut tx, attempt_id, error, retry, now).await?;
        tx.commit().await.map_err(db)?;
        Ok(out)
    }

    async fn release(
        &self,
        attempt_id: Uuid,
        reason: &str,
        now: DateTime<Utc>,
    ) -> Result<(), QueueError> {
        let mut tx = begin_write(&self.pool).await?;
        let out = release_in(&mut tx, attempt_id, reason, now).await?;
        tx.commit().await.map_err(db)?;
        Ok(out)
    }

    async fn cancel(
        &self,
        task_id: Uuid,
        actor: &str,
        now: DateTime<Utc>,
    ) -> Result<Vec<Uuid>, QueueError> {
        let mut tx = begin_write(&self.pool).await?;
        let out = cancel_in(&mut tx, task_id, actor, now).await?;
        tx.commit().await.map_err(db)?;
        Ok(out)
    }

    async fn retry(
        &self,
        task_id: Uuid,
        actor: &str,
        priority: &PriorityPolicy,
        now: DateTime<Utc>,
    ) -> Result<Vec<Uuid>, QueueError> {
        let mut tx = begin_write(&self.pool).await?;
        let out = retry_in(&mut tx, task_id, actor, priority, now).await?;
        tx.commit().await.map_err(db)?;
        Ok(out)
    }

    async fn reap(
        &self,
        retry: &RetryPolicy,
        now: DateTime<Utc>,
    ) -> Result<ReapReport, QueueError> {
        let mut tx = begin_write(&self.pool).await?;
        let out = reap_in(&mut tx, retry, now).await?;
        tx.commit().await.map_err(db)?;
        Ok(out)
    }

    async fn refresh_priorities(
        &self,
        priority: &PriorityPolicy,
        batch_size: u32,
        now: DateTime<Utc>,
    ) -> Result<u64, QueueError> {
        let now_text = ts(&now);
        let mut cursor = String::new();
        let mut updated = 0;
        loop {
            let mut tx = begin_write(&self.pool).await?;
            // `+status` keeps the planner off the status indexes: it walks the primary key from
            // the cursor, so each batch costs its own rows, not a sort of every ready task.
            let ids: Vec<String> = sqlx::query_scalar!(
                "SELECT id FROM tasks WHERE +status = 'ready' AND id > ? ORDER BY id LIMIT ?",
                cursor,
                batch_size
            )
            .fetch_all(&mut *tx)
            .await
            .map_err(db)?;
            let Some(last) = ids.last().cloned() else {
                tx.rollback().await.map_err(db)?;
                return Ok(updated);
            };
            updated += recompute_priorities(
                &mut tx,
                &id_array(ids.iter().map(String::as_str)),
                priority,
                &now_text,
            )
            .await?;
            cursor = last;
            tx.commit().await.map_err(db)?;
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
            let mut conn = self.pool.acquire().await.map_err(db)?;
            task_status(&mut conn, task_id).await?;
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

    async fn overview(
        &self,
        running_limit: u32,
        now: DateTime<Utc>,
    ) -> Result<QueueOverview, QueueError> {
        // One read transaction: in WAL mode every statement sees the same snapshot.
        let mut tx = self.pool.begin().await.map_err(db)?;
        let mut counts: std::collections::BTreeMap<TaskStatus, u64> =
            TaskStatus::ALL.iter().map(|s| (*s, 0)).collect();
        let rows = sqlx::query!(
            r#"SELECT status AS "status!", COUNT(*) AS "count!: i64" FROM tasks GROUP BY status"#
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

        let oldest = sqlx::query!(
            r#"SELECT id AS "id!", summary, agent_type, submitted_at
               FROM tasks WHERE status = 'ready' ORDER BY submitted_at, id LIMIT 1"#
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

        let now_text = ts(&now);
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
