//! [`QueueStore`] on PostgreSQL, for claimers and workers on many machines at once.
//!
//! Every operation is one transaction at READ COMMITTED. Before it decides anything, it locks
//! the rows its decision rests on (`SELECT ... FOR UPDATE`: the task, then its attempt; sets of
//! tasks in id order), so that no decision is taken on a stale read, and reads the time after
//! those locks (`clock_timestamp()`, the server's clock, for `Now::Store`). A transaction the
//! server aborts because of another one (serialization failure, deadlock) runs again whole,
//! so that none reaches a caller; nothing of it was committed.
//!
//! A claim locks the tasks it takes with `FOR UPDATE SKIP LOCKED` inside materialized CTEs
//! (River's `JobGetAvailable`): each locking scan runs once, so a claim never takes more than
//! it asked for, and claimers never wait on each other.
//!
//! The numbers of the priority (claim keys, calculated priorities) are [`PriorityPolicy`]'s,
//! computed here in Rust; the one expression in SQL, a task's deadline urgency at claim time,
//! is written to give the same double as [`PriorityPolicy::urgency`].

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use abathur_core::clock::Now;
use abathur_core::error::{DatabaseError, ValidationError};
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
use serde_json::Value;
use sqlx::types::Json;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use crate::errors::{classify, is_connection_loss, is_retryable};
use crate::row::RowContext;
use crate::task_row::{get_task, insert_task, TaskRow, TASK_COLUMNS};

const ENTITY: &str = "task";

/// How many times an operation runs again after the server aborted it for another
/// transaction's sake (a deadlock, a serialization failure) before it answers `Busy`.
const MAX_RUNS: u32 = 50;

/// The PostgreSQL task queue store: each operation one transaction, committed before it
/// answers.
#[derive(Debug, Clone)]
pub struct PgQueueStore {
    pool: PgPool,
}

impl PgQueueStore {
    /// A store on `pool`, whose database is migrated.
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }
}

/// Why one run of an operation stopped.
#[derive(Debug)]
enum Stop {
    /// The answer: an error of the contract, or of the store.
    Queue(QueueError),
    /// The server aborted the transaction because of another one: run it again.
    Again,
}

impl From<QueueError> for Stop {
    fn from(e: QueueError) -> Self {
        Stop::Queue(e)
    }
}

impl From<DatabaseError> for Stop {
    fn from(e: DatabaseError) -> Self {
        match e {
            // The shared row code classifies 40001/40P01 (and lock timeouts) as Busy.
            DatabaseError::Busy => Stop::Again,
            other => Stop::Queue(QueueError::Database(other)),
        }
    }
}

impl From<ValidationError> for Stop {
    fn from(e: ValidationError) -> Self {
        Stop::Queue(QueueError::Validation(e))
    }
}

type R<T> = Result<T, Stop>;

/// A driver error of a statement, classified; a serialization failure or deadlock runs the
/// operation again.
fn db(e: sqlx::Error) -> Stop {
    if is_retryable(&e) {
        Stop::Again
    } else {
        match classify(e, ENTITY, "") {
            // A value the server cannot store (a NUL character, a number out of its range) is
            // the caller's input, refused as such, as the queue refuses any other invalid input.
            DatabaseError::Validation(invalid) => Stop::Queue(QueueError::Validation(invalid)),
            other => Stop::Queue(QueueError::Database(other)),
        }
    }
}

/// Runs `$body` (an expression of a future giving `R<T>`, using `$conn: &mut PgConnection`)
/// in a transaction: committed when it succeeds, rolled back when it fails, and run again
/// whole when the server aborted it for another transaction.
macro_rules! transaction {
    ($pool:expr, |$conn:ident| $body:expr) => {{
        let mut runs: u32 = 0;
        loop {
            runs += 1;
            let mut tx = match $pool.begin().await {
                Ok(tx) => tx,
                Err(e) => break Err(QueueError::Database(classify(e, ENTITY, ""))),
            };
            let outcome = {
                let $conn: &mut PgConnection = &mut *tx;
                $body.await
            };
            match outcome {
                Ok(value) => match tx.commit().await {
                    Ok(()) => break Ok(value),
                    Err(e) if is_retryable(&e) && runs < MAX_RUNS => continue,
                    Err(e) => {
                        if is_connection_loss(&e) {
                            // The server may have committed before the connection went: the
                            // caller's repeat of complete/fail answers as recorded if so.
                            tracing::warn!(error = %e,
                                "the connection was lost during a commit; the operation may have taken effect");
                        }
                        break Err(QueueError::Database(classify(e, ENTITY, "")));
                    }
                },
                Err(Stop::Again) => {
                    let _ = tx.rollback().await;
                    if runs >= MAX_RUNS {
                        break Err(QueueError::Database(DatabaseError::Busy));
                    }
                    tracing::debug!(
                        runs,
                        "queue transaction aborted by another; running it again"
                    );
                }
                Err(Stop::Queue(e)) => {
                    let _ = tx.rollback().await;
                    break Err(e);
                }
            }
        }
    }};
}

impl PgQueueStore {
    /// Completes each of `items` (distinct attempts) as [`QueueStore::complete`] would alone:
    /// together in one transaction, each with its own answer, handed to `answer` with its
    /// position in `items` as soon as it is known. When the group cannot be written because
    /// of one member (a value the server refuses, a task changed outside the queue), each
    /// runs again alone, so that only the completion at fault gets the error; when it cannot
    /// be written for a reason of no member's (the connection, the pool, the server), every
    /// member gets that error at once.
    pub(crate) async fn complete_group(
        &self,
        items: Vec<Completion>,
        priority: &PriorityPolicy,
        now: Now,
        mut answer: impl FnMut(usize, Completed),
    ) {
        let together: Result<Vec<Completed>, QueueError> =
            transaction!(self.pool, |conn| complete_many_in(
                conn, &items, priority, now
            ));
        match together {
            Ok(answers) => {
                for (i, one) in answers.into_iter().enumerate() {
                    answer(i, one);
                }
            }
            Err(e) if items.len() > 1 && caused_by_a_member(&e) => {
                tracing::debug!(error = %e, size = items.len(),
                    "a group of completions failed for one of them; completing each alone");
                for (i, item) in items.iter().enumerate() {
                    let one: Result<Vec<Completed>, QueueError> = transaction!(self.pool, |conn| {
                        complete_many_in(conn, std::slice::from_ref(item), priority, now)
                    });
                    answer(
                        i,
                        one.and_then(|mut a| {
                            a.pop().unwrap_or(Err(QueueError::AttemptNotFound(item.0)))
                        }),
                    );
                }
            }
            Err(e) => {
                for i in 0..items.len() {
                    answer(i, Err(e.clone()));
                }
            }
        }
    }
}

/// Whether a group's failure may be one member's doing (its value, its task's row), so that
/// completing each member alone finds which; the connection, the pool, a timeout or a full
/// disk fail every member alike.
fn caused_by_a_member(e: &QueueError) -> bool {
    // Any other error, the unclassified ones too, may be one member's: splitting the group
    // only costs time.
    !matches!(
        e,
        QueueError::Database(
            DatabaseError::Busy
                | DatabaseError::Timeout
                | DatabaseError::Connection(_)
                | DatabaseError::Migration(_)
                | DatabaseError::NoDatabase { .. }
                | DatabaseError::ForeignSchema { .. }
                | DatabaseError::SchemaOutOfDate { .. }
                | DatabaseError::ReadOnly
                | DatabaseError::DiskFull
                | DatabaseError::Corrupt
                | DatabaseError::NotADatabase
                | DatabaseError::Io
        )
    )
}

/// The instant of an operation: the caller's, or the server's clock read now, inside the
/// transaction (after the locks taken so far).
/// The time to record for what an operation decided after it waited for more locks: with the
/// server's clock (`store`), the later of `now` and the clock read now, so that a change the
/// operation waited for (and that committed meanwhile) is never recorded after one that
/// depends on it; a pinned time (`Now::At`) stays as it is.
async fn after_locks(conn: &mut PgConnection, now: DateTime<Utc>, store: bool) -> R<DateTime<Utc>> {
    if !store {
        return Ok(now);
    }
    sqlx::query_scalar!(
        r#"SELECT GREATEST($1::timestamptz, clock_timestamp()) AS "now!""#,
        now
    )
    .fetch_one(&mut *conn)
    .await
    .map_err(db)
}

async fn resolve(conn: &mut PgConnection, now: Now) -> R<DateTime<Utc>> {
    match now {
        Now::At(at) => Ok(at),
        Now::Store => sqlx::query_scalar!(r#"SELECT clock_timestamp() AS "now!""#)
            .fetch_one(&mut *conn)
            .await
            .map_err(db),
    }
}

fn later(now: DateTime<Utc>, by: Duration) -> Result<DateTime<Utc>, QueueError> {
    chrono::Duration::from_std(by)
        .ok()
        .and_then(|by| now.checked_add_signed(by))
        .filter(|t| timestamp::check("lease", t).is_ok())
        .ok_or_else(|| {
            QueueError::Validation(ValidationError::new(
                "lease",
                format!("{by:?} reaches past year 9999"),
            ))
        })
}

fn parse_status(table: &'static str, id: &str, text: &str) -> Result<TaskStatus, QueueError> {
    Ok(RowContext { table, id }.parse("status", text)?)
}

fn int<T: TryFrom<i64>>(
    table: &'static str,
    id: &str,
    column: &'static str,
    value: i64,
) -> Result<T, QueueError> {
    Ok(RowContext { table, id }.int(column, value)?)
}

// ---- History and status changes.

/// Appends one event to a task's history.
#[allow(clippy::too_many_arguments)] // reason: one column each
async fn record(
    conn: &mut PgConnection,
    task_id: Uuid,
    from: Option<TaskStatus>,
    to: TaskStatus,
    now: DateTime<Utc>,
    actor: &str,
    attempt_id: Option<Uuid>,
    reason: Option<&str>,
) -> R<()> {
    sqlx::query!(
        "INSERT INTO task_events (task_id, from_status, to_status, at, actor, attempt_id, reason)
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
        task_id,
        from.map(TaskStatus::as_str),
        to.as_str(),
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

/// Sets a task's status (and `started_at` when running, `completed_at` when terminal) and
/// records the change.
#[allow(clippy::too_many_arguments)] // reason: the event's columns
async fn transition(
    conn: &mut PgConnection,
    task_id: Uuid,
    from: TaskStatus,
    to: TaskStatus,
    now: DateTime<Utc>,
    actor: &str,
    attempt_id: Option<Uuid>,
    reason: Option<&str>,
) -> R<()> {
    let started_at = (to == TaskStatus::Running).then_some(now);
    let completed_at = to.is_terminal().then_some(now);
    let changed = sqlx::query!(
        "UPDATE tasks SET status = $1, last_updated_at = $2,
             started_at = COALESCE($3, started_at), completed_at = COALESCE($4, completed_at)
         WHERE id = $5 AND status = $6",
        to.as_str(),
        now,
        started_at,
        completed_at,
        task_id,
        from.as_str()
    )
    .execute(&mut *conn)
    .await
    .map_err(db)?
    .rows_affected();
    // Every caller read `from` under the row's lock in this transaction, so a mismatch means
    // the row was changed outside the queue: refuse rather than write a history that did
    // not happen.
    if changed != 1 {
        return Err(QueueError::Database(DatabaseError::Conflict {
            entity: "task",
            id: task_id.to_string(),
            reason: format!("expected it to be {from}, but it was changed outside the queue"),
        })
        .into());
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
    id: Uuid,
    from: TaskStatus,
    attempt: Option<Uuid>,
}

/// [`transition`] for many tasks in two statements, whatever their number.
async fn transition_many(
    conn: &mut PgConnection,
    moves: &[Move],
    to: TaskStatus,
    now: DateTime<Utc>,
    actor: &str,
    reason: Option<&str>,
) -> R<()> {
    if moves.is_empty() {
        return Ok(());
    }
    let ids: Vec<Uuid> = moves.iter().map(|m| m.id).collect();
    let froms: Vec<String> = moves.iter().map(|m| m.from.as_str().to_string()).collect();
    let changed = sqlx::query!(
        "UPDATE tasks SET status = $1, last_updated_at = $2,
             completed_at = CASE WHEN $3 THEN $2 ELSE completed_at END,
             started_at = CASE WHEN $4 THEN $2 ELSE started_at END
         FROM unnest($5::uuid[], $6::text[]) AS m(id, from_status)
         WHERE tasks.id = m.id AND tasks.status = m.from_status",
        to.as_str(),
        now,
        to.is_terminal(),
        to == TaskStatus::Running,
        &ids,
        &froms
    )
    .execute(&mut *conn)
    .await
    .map_err(db)?
    .rows_affected();
    moved_all(changed, moves)?;
    record_many(conn, moves, to, now, actor, reason).await
}

/// As in [`transition`]: every `from` was read under lock, so a row that did not change was
/// changed outside the queue.
fn moved_all(changed: u64, moves: &[Move]) -> Result<(), QueueError> {
    if changed == moves.len() as u64 {
        return Ok(());
    }
    Err(QueueError::Database(DatabaseError::Conflict {
        entity: "task",
        id: moves.first().map(|m| m.id.to_string()).unwrap_or_default(),
        reason: format!(
            "{} of {} tasks were changed outside the queue",
            moves.len() as u64 - changed,
            moves.len()
        ),
    }))
}

/// The history rows of a set-based transition to `to`, in the order of `moves`.
async fn record_many(
    conn: &mut PgConnection,
    moves: &[Move],
    to: TaskStatus,
    now: DateTime<Utc>,
    actor: &str,
    reason: Option<&str>,
) -> R<()> {
    let ids: Vec<Uuid> = moves.iter().map(|m| m.id).collect();
    let froms: Vec<String> = moves.iter().map(|m| m.from.as_str().to_string()).collect();
    let attempts: Vec<Option<Uuid>> = moves.iter().map(|m| m.attempt).collect();
    sqlx::query!(
        "INSERT INTO task_events (task_id, from_status, to_status, at, actor, attempt_id, reason)
         SELECT m.id, m.from_status, $1, $2, $3, m.attempt, $4
         FROM unnest($5::uuid[], $6::text[], $7::uuid[])
              WITH ORDINALITY AS m(id, from_status, attempt, n)
         ORDER BY m.n",
        to.as_str(),
        now,
        actor,
        reason,
        &ids,
        &froms,
        &attempts as _
    )
    .execute(&mut *conn)
    .await
    .map_err(db)?;
    Ok(())
}

// ---- Claim keys.

/// The claim key and calculated priority of each task in `ids` as it becomes ready at `now`:
/// claimable since `now`, or since its run-after time when that is later.
async fn ready_keys(
    conn: &mut PgConnection,
    ids: &[Uuid],
    priority: &PriorityPolicy,
    now: DateTime<Utc>,
) -> R<(Vec<Uuid>, Vec<f64>, Vec<f64>)> {
    type Row = (Uuid, i16, i64, Option<DateTime<Utc>>, Option<DateTime<Utc>>);
    let found: Vec<Row> = sqlx::query!(
        r#"SELECT t.id, t.priority, t.dependency_depth, t.deadline, s.run_after AS "run_after?"
         FROM tasks t LEFT JOIN task_schedule s ON s.task_id = t.id
         WHERE t.id = ANY($1)"#,
        ids
    )
    .map(|r| {
        (
            r.id,
            r.priority,
            r.dependency_depth,
            r.deadline,
            r.run_after,
        )
    })
    .fetch_all(&mut *conn)
    .await
    .map_err(db)?;
    let mut out = (
        Vec::with_capacity(found.len()),
        Vec::with_capacity(found.len()),
        Vec::with_capacity(found.len()),
    );
    for (id, base, depth, deadline, run_after) in found {
        let key = id.to_string();
        let base: u8 = int("tasks", &key, "priority", i64::from(base))?;
        let depth: u32 = int("tasks", &key, "dependency_depth", depth)?;
        let ready_since = run_after.map_or(now, |run_after| run_after.max(now));
        out.0.push(id);
        out.1.push(priority.key(base, depth, ready_since));
        out.2
            .push(priority.calculate(base, depth, deadline, ready_since, now));
    }
    Ok(out)
}

/// Keys the tasks in `ids` as ready from `now` on.
async fn key_ready(
    conn: &mut PgConnection,
    ids: &[Uuid],
    priority: &PriorityPolicy,
    now: DateTime<Utc>,
) -> R<()> {
    let (ids, keys, calculated) = ready_keys(conn, ids, priority, now).await?;
    sqlx::query!(
        "UPDATE tasks SET claim_key = k.key, calculated_priority = k.calculated
         FROM unnest($1::uuid[], $2::float8[], $3::float8[]) AS k(id, key, calculated)
         WHERE tasks.id = k.id",
        &ids,
        &keys,
        &calculated
    )
    .execute(&mut *conn)
    .await
    .map_err(db)?;
    Ok(())
}

// ---- Attempts.

/// An attempt as stored, open or ended.
struct AttemptRow {
    task_id: Uuid,
    worker_id: String,
    attempt_number: i64,
    /// `None` while the attempt is open.
    outcome: Option<String>,
    error: Option<String>,
    finished_at: Option<DateTime<Utc>>,
    retry_count: Option<i64>,
    retry_after: Option<DateTime<Utc>>,
}

/// The attempt, with its task's row locked first and then its own: the order every
/// operation that changes both takes them in ([`lock_attempts`] of one).
async fn lock_attempt(conn: &mut PgConnection, attempt_id: Uuid) -> R<AttemptRow> {
    lock_attempts(conn, &[attempt_id])
        .await?
        .remove(&attempt_id)
        .ok_or(Stop::Queue(QueueError::AttemptNotFound(attempt_id)))
}

impl AttemptRow {
    /// `Ok` while the attempt is open; else why it cannot be acted on.
    fn check_open(&self, attempt_id: Uuid) -> Result<(), QueueError> {
        match self.outcome.as_deref() {
            None => Ok(()),
            Some("cancelled") => Err(QueueError::Cancelled {
                task_id: self.task_id,
            }),
            Some(outcome) => Err(QueueError::LeaseLost {
                attempt_id,
                reason: format!("the attempt already ended ({outcome})"),
            }),
        }
    }
}

async fn close_attempt(
    conn: &mut PgConnection,
    attempt_id: Uuid,
    outcome: AttemptOutcome,
    error: Option<&str>,
    now: DateTime<Utc>,
) -> R<()> {
    sqlx::query!(
        "UPDATE task_attempts SET finished_at = $1, outcome = $2, error = $3
         WHERE id = $4 AND finished_at IS NULL",
        now,
        outcome.as_str(),
        error,
        attempt_id
    )
    .execute(&mut *conn)
    .await
    .map_err(db)?;
    Ok(())
}

/// A repeat whose payload differs from the recorded one.
fn different_repeat(attempt_id: Uuid, verb: &str, what: &str) -> QueueError {
    QueueError::LeaseLost {
        attempt_id,
        reason: format!(
            "the attempt already {verb} with a different {what}; only the same call can be sent again"
        ),
    }
}

/// The answer to a `complete` of an attempt that already completed.
async fn repeat_completion(
    conn: &mut PgConnection,
    attempt_id: Uuid,
    row: &AttemptRow,
    result: Option<&Value>,
) -> R<Recorded<Vec<Uuid>>> {
    let stored: Option<Json<Value>> = sqlx::query_scalar!(
        r#"SELECT result_data AS "result_data: Json<Value>" FROM tasks WHERE id = $1"#,
        row.task_id
    )
    .fetch_one(&mut *conn)
    .await
    .map_err(db)?;
    let same = match (stored.map(|j| j.0), result) {
        (None, None) => true,
        (Some(stored), Some(sent)) => same_json(&stored, sent),
        _ => false,
    };
    if !same {
        return Err(different_repeat(attempt_id, "completed", "result").into());
    }
    let made_ready: Vec<Uuid> = sqlx::query_scalar!(
        "SELECT e.task_id FROM task_dependencies d
         JOIN task_events e ON e.task_id = d.task_id
         WHERE d.depends_on_task_id = $1 AND e.from_status = 'blocked' AND e.to_status = 'ready'
           AND e.actor = 'queue' AND e.reason = $2
         ORDER BY e.id",
        row.task_id,
        format!("dependency {} completed", row.task_id)
    )
    .fetch_all(&mut *conn)
    .await
    .map_err(db)?;
    Ok(Recorded::repeat(made_ready))
}

/// The answer to a `fail` of an attempt that already failed.
async fn repeat_failure(
    conn: &mut PgConnection,
    attempt_id: Uuid,
    row: &AttemptRow,
    error: &str,
) -> R<Recorded<FailOutcome>> {
    if row.error.as_deref() != Some(error) {
        return Err(different_repeat(attempt_id, "failed", "error").into());
    }
    let id = attempt_id.to_string();
    let Some(retry_count) = row.retry_count else {
        return Err(QueueError::LeaseLost {
            attempt_id,
            reason: "the attempt already ended (failed) before failures were recorded for repeats"
                .to_string(),
        }
        .into());
    };
    if let Some(run_after) = row.retry_after {
        return Ok(Recorded::repeat(FailOutcome::Retrying {
            retry_count: int("task_attempts", &id, "retry_count", retry_count)?,
            run_after,
        }));
    }
    // The cascade stamped its dependents with the failure's time; those a retry has since
    // put back no longer carry it.
    let cascaded = descendants(conn, row.task_id, Walk::FailedDependents, false).await?;
    let mut still_failed = Vec::new();
    for (dependent, _) in cascaded {
        let finished: Option<DateTime<Utc>> =
            sqlx::query_scalar!("SELECT completed_at FROM tasks WHERE id = $1", dependent)
                .fetch_one(&mut *conn)
                .await
                .map_err(db)?;
        if finished.is_some() && finished == row.finished_at {
            still_failed.push(dependent);
        }
    }
    Ok(Recorded::repeat(FailOutcome::Failed {
        cascaded: still_failed,
    }))
}

// ---- Walks.

/// Which tasks a walk from a root reaches.
#[derive(Clone, Copy)]
enum Walk {
    /// Its dependents, transitively, through unfinished tasks only.
    Dependents,
    /// As `Dependents`, and along parent links to children too.
    DependentsAndChildren,
    /// Its failed dependents, transitively through failed tasks.
    FailedDependents,
}

const WALK_DEPENDENTS: &str = "WITH RECURSIVE affected(id) AS (
        SELECT $1::uuid
        UNION
        SELECT d.task_id FROM affected a
        JOIN tasks p ON p.id = a.id
        JOIN task_dependencies d ON d.depends_on_task_id = a.id
        WHERE a.id = $1 OR p.status NOT IN ('completed', 'failed', 'cancelled')
    )";
const WALK_DEPENDENTS_AND_CHILDREN: &str = "WITH RECURSIVE affected(id) AS (
        SELECT $1::uuid
        UNION
        SELECT e.child FROM affected a
        JOIN tasks p ON p.id = a.id
        CROSS JOIN LATERAL (
            SELECT d.task_id FROM task_dependencies d WHERE d.depends_on_task_id = a.id
            UNION ALL
            SELECT c.id FROM tasks c WHERE c.parent_task_id = a.id
        ) e(child)
        WHERE a.id = $1 OR p.status NOT IN ('completed', 'failed', 'cancelled')
    )";
const WALK_FAILED_DEPENDENTS: &str = "WITH RECURSIVE affected(id) AS (
        SELECT $1::uuid
        UNION
        SELECT d.task_id FROM affected a
        JOIN task_dependencies d ON d.depends_on_task_id = a.id
        JOIN tasks t ON t.id = d.task_id
        WHERE t.status = 'failed'
    )";

/// The tasks reachable from `root` by `walk`, without `root`, shallowest first (then by id),
/// with their statuses. With `lock`, their rows are locked (in id order) and the statuses
/// read under the locks.
async fn descendants(
    conn: &mut PgConnection,
    root: Uuid,
    walk: Walk,
    lock: bool,
) -> R<Vec<(Uuid, TaskStatus)>> {
    let with = match walk {
        Walk::Dependents => WALK_DEPENDENTS,
        Walk::DependentsAndChildren => WALK_DEPENDENTS_AND_CHILDREN,
        Walk::FailedDependents => WALK_FAILED_DEPENDENTS,
    };
    let sql = format!(
        "{with}
         SELECT t.id, t.status, t.dependency_depth FROM tasks t
         WHERE t.id IN (SELECT id FROM affected) AND t.id <> $1
         ORDER BY t.id{}",
        if lock { " FOR UPDATE OF t" } else { "" }
    );
    // Locking, the walk runs again until it finds no task it had not locked: a task that
    // joined the graph while the walk waited for a lock (a submission naming a walked task as
    // its dependency or parent, committed before that task was locked) is walked too. Once
    // every walked task is locked, no submission can name one of them until this commits.
    let mut seen: Option<HashSet<Uuid>> = None;
    let rows: Vec<(Uuid, String, i64)> = loop {
        let rows: Vec<(Uuid, String, i64)> = sqlx::query_as(&sql)
            .bind(root)
            .fetch_all(&mut *conn)
            .await
            .map_err(db)?;
        let ids: HashSet<Uuid> = rows.iter().map(|r| r.0).collect();
        if !lock || seen.as_ref().is_some_and(|seen| ids.is_subset(seen)) {
            break rows;
        }
        seen = Some(ids);
    };
    let mut found = rows
        .into_iter()
        .map(|(id, status, depth)| {
            Ok((id, parse_status("tasks", &id.to_string(), &status)?, depth))
        })
        .collect::<Result<Vec<_>, QueueError>>()?;
    found.sort_by(|a, b| a.2.cmp(&b.2).then_with(|| a.0.cmp(&b.0)));
    Ok(found
        .into_iter()
        .map(|(id, status, _)| (id, status))
        .collect())
}

// ---- The fail path and the release of dependents.

/// The fail path of a running task whose attempt ended badly (its row locked): back to ready
/// after a backoff while retries remain, else failed with every non-terminal dependent.
#[allow(clippy::too_many_arguments)] // reason: the attempt, its task, and the two policies
async fn fail_task(
    conn: &mut PgConnection,
    task_id: Uuid,
    attempt_id: Uuid,
    error: &str,
    actor: &str,
    retry: &RetryPolicy,
    priority: &PriorityPolicy,
    now: DateTime<Utc>,
    store: bool,
) -> R<FailOutcome> {
    let (stored_count, max_retries): (i64, i64) = sqlx::query!(
        r#"SELECT retry_count, max_retries FROM tasks WHERE id = $1"#,
        task_id
    )
    .map(|r| (r.retry_count, r.max_retries))
    .fetch_one(&mut *conn)
    .await
    .map_err(db)?;
    let retry_count = stored_count + 1;
    sqlx::query!(
        "UPDATE tasks SET retry_count = $1, error_message = $2 WHERE id = $3",
        retry_count,
        error,
        task_id
    )
    .execute(&mut *conn)
    .await
    .map_err(db)?;
    let retry_count: u32 = int("tasks", &task_id.to_string(), "retry_count", retry_count)?;
    if i64::from(retry_count) <= max_retries {
        let run_after = later(now, retry.delay(retry_count, attempt_id))?;
        sqlx::query!(
            "INSERT INTO task_schedule (task_id, run_after) VALUES ($1, $2)
             ON CONFLICT (task_id) DO UPDATE SET run_after = excluded.run_after",
            task_id,
            run_after
        )
        .execute(&mut *conn)
        .await
        .map_err(db)?;
        record_decision(conn, attempt_id, retry_count, Some(run_after)).await?;
        let reason = format!(
            "attempt failed, retry {retry_count} after {}: {error}",
            timestamp::format(&run_after)
        );
        transition(
            conn,
            task_id,
            TaskStatus::Running,
            TaskStatus::Ready,
            now,
            actor,
            Some(attempt_id),
            Some(&reason),
        )
        .await?;
        // Ready again once the backoff ends: it ages from then.
        key_ready(conn, &[task_id], priority, now).await?;
        return Ok(FailOutcome::Retrying {
            retry_count,
            run_after,
        });
    }
    record_decision(conn, attempt_id, retry_count, None).await?;
    let reason = format!("retries exhausted: {error}");
    transition(
        conn,
        task_id,
        TaskStatus::Running,
        TaskStatus::Failed,
        now,
        actor,
        Some(attempt_id),
        Some(&reason),
    )
    .await?;
    let cascade_error = format!("dependency {task_id} failed");
    let moves: Vec<Move> = descendants(conn, task_id, Walk::Dependents, true)
        .await?
        .into_iter()
        .filter(|(_, status)| !status.is_terminal() && *status != TaskStatus::Running)
        .map(|(id, from)| Move {
            id,
            from,
            attempt: None,
        })
        .collect();
    // The cascade locked its tasks, perhaps after waiting: they fail no earlier than now.
    let now = if moves.is_empty() {
        now
    } else {
        after_locks(conn, now, store).await?
    };
    if !moves.is_empty() {
        let ids: Vec<Uuid> = moves.iter().map(|m| m.id).collect();
        sqlx::query!(
            "UPDATE tasks SET error_message = $1 WHERE id = ANY($2)",
            &cascade_error,
            &ids
        )
        .execute(&mut *conn)
        .await
        .map_err(db)?;
    }
    transition_many(
        conn,
        &moves,
        TaskStatus::Failed,
        now,
        "queue",
        Some(&cascade_error),
    )
    .await?;
    Ok(FailOutcome::Failed {
        cascaded: moves.iter().map(|m| m.id).collect(),
    })
}

/// Writes on the attempt what its failure decided.
async fn record_decision(
    conn: &mut PgConnection,
    attempt_id: Uuid,
    retry_count: u32,
    retry_after: Option<DateTime<Utc>>,
) -> R<()> {
    sqlx::query!(
        "UPDATE task_attempts SET retry_count = $1, retry_after = $2 WHERE id = $3",
        i64::from(retry_count),
        retry_after,
        attempt_id
    )
    .execute(&mut *conn)
    .await
    .map_err(db)?;
    Ok(())
}

/// Makes ready every blocked dependent of the tasks in `completed` (just completed, in this
/// transaction, in this order) whose dependencies are all completed, and returns them by the
/// completed task that released each: of a dependent's dependencies completed here, the last
/// in `completed`, as if each had been completed alone in that order. Set-based: four
/// statements whatever the number of tasks and dependents.
async fn release_dependents(
    conn: &mut PgConnection,
    completed: &[Uuid],
    priority: &PriorityPolicy,
    now: DateTime<Utc>,
    store: bool,
) -> R<HashMap<Uuid, Vec<Uuid>>> {
    // Every blocked dependent is locked first (in id order), whether or not it can go yet,
    // with what its key is computed from: two of its dependencies completing at once then
    // take turns, and the second one's next statement reads the first's completion (each
    // statement reads what committed before it), so one of them releases it.
    type Row = (Uuid, i16, i64, Option<DateTime<Utc>>, Option<DateTime<Utc>>);
    let blocked: Vec<Row> = sqlx::query!(
        r#"SELECT t.id, t.priority, t.dependency_depth, t.deadline, s.run_after AS "run_after?"
         FROM tasks t LEFT JOIN task_schedule s ON s.task_id = t.id
         WHERE t.id IN (SELECT d.task_id FROM task_dependencies d
                        WHERE d.depends_on_task_id = ANY($1))
           AND t.status = 'blocked'
         ORDER BY t.id FOR UPDATE OF t"#,
        completed
    )
    .map(|r| {
        (
            r.id,
            r.priority,
            r.dependency_depth,
            r.deadline,
            r.run_after,
        )
    })
    .fetch_all(&mut *conn)
    .await
    .map_err(db)?;
    if blocked.is_empty() {
        return Ok(HashMap::new());
    }
    // The locks may have been waited for: the dependents go ready no earlier than now.
    let now = after_locks(conn, now, store).await?;
    let mut ids = Vec::with_capacity(blocked.len());
    let mut keys = Vec::with_capacity(blocked.len());
    let mut calculated = Vec::with_capacity(blocked.len());
    for (id, base, depth, deadline, run_after) in blocked {
        let key = id.to_string();
        let base: u8 = int("tasks", &key, "priority", i64::from(base))?;
        let depth: u32 = int("tasks", &key, "dependency_depth", depth)?;
        let ready_since = run_after.map_or(now, |run_after| run_after.max(now));
        ids.push(id);
        keys.push(priority.key(base, depth, ready_since));
        calculated.push(priority.calculate(base, depth, deadline, ready_since, now));
    }
    // Those whose dependencies are all completed go ready, status and key in one pass, and
    // each gets its history row, naming the completion that released it, in one statement.
    let released = sqlx::query!(
        r#"WITH released AS (
            UPDATE tasks SET status = 'ready', last_updated_at = $1,
                claim_key = k.key, calculated_priority = k.calculated
            FROM unnest($2::uuid[], $3::float8[], $4::float8[]) AS k(id, key, calculated)
            WHERE tasks.id = ANY($2::uuid[]) AND tasks.id = k.id AND tasks.status = 'blocked'
              AND NOT EXISTS (
                  SELECT 1 FROM task_dependencies d2 JOIN tasks u ON u.id = d2.depends_on_task_id
                  WHERE d2.task_id = tasks.id AND u.status <> 'completed')
            RETURNING tasks.id
        ), by_dependency AS MATERIALIZED (
            SELECT r.id,
                   CASE WHEN cardinality($5::uuid[]) = 1 THEN ($5::uuid[])[1]
                   ELSE (SELECT c.id
                         FROM task_dependencies d
                         JOIN unnest($5::uuid[]) WITH ORDINALITY AS c(id, n)
                           ON c.id = d.depends_on_task_id
                         WHERE d.task_id = r.id
                         ORDER BY c.n DESC LIMIT 1) END AS dependency
            FROM released r
        ), recorded AS (
            INSERT INTO task_events (task_id, from_status, to_status, at, actor, attempt_id,
                                     reason)
            SELECT b.id, 'blocked', 'ready', $1, 'queue', NULL,
                   'dependency ' || b.dependency || ' completed'
            FROM by_dependency b
            ORDER BY array_position($5::uuid[], b.dependency), b.id
        )
        SELECT id AS "id!", dependency AS "dependency!" FROM by_dependency"#,
        now,
        &ids,
        &keys,
        &calculated,
        completed
    )
    .fetch_all(&mut *conn)
    .await
    .map_err(db)?;
    let mut by: HashMap<Uuid, Vec<Uuid>> = HashMap::new();
    for row in released {
        by.entry(row.dependency).or_default().push(row.id);
    }
    for ids in by.values_mut() {
        ids.sort();
    }
    Ok(by)
}

/// The task's status, its row locked.
async fn lock_task_status(conn: &mut PgConnection, task_id: Uuid) -> R<TaskStatus> {
    let status: String =
        sqlx::query_scalar!("SELECT status FROM tasks WHERE id = $1 FOR UPDATE", task_id)
            .fetch_optional(&mut *conn)
            .await
            .map_err(db)?
            .ok_or(QueueError::TaskNotFound(task_id))?;
    Ok(parse_status("tasks", &task_id.to_string(), &status)?)
}

/// Reads whole tasks by id, in one statement.
async fn load_tasks(conn: &mut PgConnection, ids: &[Uuid]) -> R<HashMap<Uuid, Task>> {
    let rows: Vec<TaskRow> = sqlx::query_as(&format!(
        "SELECT {TASK_COLUMNS} FROM tasks WHERE id = ANY($1)"
    ))
    .bind(ids)
    .fetch_all(&mut *conn)
    .await
    .map_err(db)?;
    rows.into_iter()
        .map(|r| {
            let task = Task::try_from(r)?;
            Ok((task.id, task))
        })
        .collect::<Result<_, DatabaseError>>()
        .map_err(Stop::from)
}

// ---- The operations, each inside one transaction.
//
// Static statements are checked `sqlx` macros; those assembled at run time (the walks, the
// prune's rules, the whole-task read) bind their values.

async fn submit_in(
    conn: &mut PgConnection,
    batch: &[NewTask],
    limits: &QueueLimits,
    priority: &PriorityPolicy,
    actor: &str,
    now: Now,
) -> R<Vec<Submitted>> {
    let existing = stored_keys(conn, batch).await?;
    let batch: Vec<NewTask> = if existing.is_empty() {
        batch.to_vec()
    } else {
        let stored_id = |id: Uuid| existing.get(&id).map_or(id, |(stored, _)| *stored);
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
            .collect()
    };
    for new in &batch {
        if let (Some((stored, hash)), Some(key)) = (existing.get(&new.id), &new.idempotency_key) {
            if new.content_hash() != *hash {
                return Err(QueueError::IdempotencyConflict {
                    key: key.clone(),
                    existing: *stored,
                }
                .into());
            }
        }
    }
    let fresh: Vec<&NewTask> = batch
        .iter()
        .filter(|new| !existing.contains_key(&new.id))
        .collect();
    let mut inserted = insert_batch(conn, &fresh, limits, priority, actor, now)
        .await?
        .into_iter();
    let mut keys = (Vec::new(), Vec::new(), Vec::new());
    let mut schedule = (Vec::new(), Vec::new());
    for new in &fresh {
        if let Some(key) = &new.idempotency_key {
            keys.0.push(key.clone());
            keys.1.push(new.id);
            keys.2.push(new.content_hash());
        }
        if let Some(run_after) = new.run_after {
            schedule.0.push(new.id);
            schedule.1.push(run_after);
        }
    }
    if !keys.0.is_empty() {
        let stored = sqlx::query!(
            "INSERT INTO task_idempotency (idempotency_key, task_id, content_hash)
             SELECT * FROM unnest($1::text[], $2::uuid[], $3::text[])",
            &keys.0,
            &keys.1,
            &keys.2
        )
        .execute(&mut *conn)
        .await;
        match stored {
            Ok(_) => {}
            // Another submission stored the key after this one looked: run again, and the
            // look finds it.
            Err(sqlx::Error::Database(e))
                if e.kind() == sqlx::error::ErrorKind::UniqueViolation =>
            {
                return Err(Stop::Again);
            }
            Err(e) => return Err(db(e)),
        }
    }
    if !schedule.0.is_empty() {
        sqlx::query!(
            "INSERT INTO task_schedule (task_id, run_after)
             SELECT * FROM unnest($1::uuid[], $2::timestamptz[])",
            &schedule.0,
            &schedule.1
        )
        .execute(&mut *conn)
        .await
        .map_err(db)?;
    }
    let mut submitted = Vec::with_capacity(batch.len());
    for new in &batch {
        submitted.push(match existing.get(&new.id) {
            Some((stored, _)) => Submitted {
                requested_id: new.id,
                task: get_task(conn, *stored).await?.ok_or_else(|| {
                    QueueError::Database(DatabaseError::not_found(ENTITY, stored.to_string()))
                })?,
                existing: true,
            },
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
async fn stored_keys(
    conn: &mut PgConnection,
    batch: &[NewTask],
) -> R<HashMap<Uuid, (Uuid, String)>> {
    let mut keys: HashMap<&str, Uuid> = HashMap::new();
    for new in batch {
        let Some(key) = new.idempotency_key.as_deref() else {
            continue;
        };
        if keys.insert(key, new.id).is_some() {
            return Err(QueueError::DuplicateIdempotencyKey {
                task: new.id,
                key: key.to_string(),
            }
            .into());
        }
    }
    if keys.is_empty() {
        return Ok(HashMap::new());
    }
    let mut names: Vec<String> = keys.keys().map(|k| k.to_string()).collect();
    names.sort();
    // Two submissions of one key (a client sending its batch again while the first is still
    // in flight) take turns on the key: the second looks once the first has committed, and
    // finds the task it made. Transaction-scoped advisory locks, taken in key order (the
    // array's), so that two batches sharing keys never wait on each other in a cycle.
    sqlx::query(
        "SELECT pg_advisory_xact_lock(hashtextextended(k, 0)) FROM unnest($1::text[]) AS k",
    )
    .bind(&names)
    .execute(&mut *conn)
    .await
    .map_err(db)?;
    // Locked, so that the task the key names is not pruned before this answers with it.
    let rows: Vec<(String, Uuid, String)> = sqlx::query!(
        r#"SELECT idempotency_key, task_id, content_hash FROM task_idempotency
         WHERE idempotency_key = ANY($1) ORDER BY idempotency_key FOR KEY SHARE"#,
        &names
    )
    .map(|r| (r.idempotency_key, r.task_id, r.content_hash))
    .fetch_all(&mut *conn)
    .await
    .map_err(db)?;
    Ok(rows
        .into_iter()
        .filter_map(|(key, task, hash)| {
            keys.get(key.as_str()).map(|member| (*member, (task, hash)))
        })
        .collect())
}

/// Checks and stores the new members of a batch, in its order.
async fn insert_batch(
    conn: &mut PgConnection,
    batch: &[&NewTask],
    limits: &QueueLimits,
    priority: &PriorityPolicy,
    actor: &str,
    now: Now,
) -> R<Vec<Task>> {
    if batch.is_empty() {
        return Ok(Vec::new());
    }
    let members: HashSet<Uuid> = batch.iter().map(|t| t.id).collect();
    // The stored dependencies, locked (in id order) against a change of status until this
    // commits: a dependency completing meanwhile then sees these tasks as its dependents.
    let mut outside: Vec<Uuid> = batch
        .iter()
        .flat_map(|t| t.dependencies.iter().copied())
        .filter(|d| !members.contains(d))
        .collect();
    outside.sort();
    outside.dedup();
    let stored_deps: HashMap<Uuid, (String, i64)> = if outside.is_empty() {
        HashMap::new()
    } else {
        sqlx::query!(
            r#"SELECT id, status, dependency_depth FROM tasks WHERE id = ANY($1)
             ORDER BY id FOR SHARE"#,
            &outside
        )
        .map(|r| (r.id, r.status, r.dependency_depth))
        .fetch_all(&mut *conn)
        .await
        .map_err(db)?
        .into_iter()
        .map(|(id, status, depth)| (id, (status, depth)))
        .collect()
    };
    // The parents and sessions named outside the batch that exist.
    let parents: Vec<Uuid> = batch
        .iter()
        .filter_map(|t| t.parent_task_id)
        .filter(|p| !members.contains(p))
        .collect();
    let sessions: Vec<Uuid> = batch.iter().filter_map(|t| t.session_id).collect();
    let known: HashSet<Uuid> = if parents.is_empty() && sessions.is_empty() {
        HashSet::new()
    } else {
        sqlx::query_scalar!(
            r#"SELECT id AS "id!" FROM tasks WHERE id = ANY($1)
               UNION ALL SELECT id FROM sessions WHERE id = ANY($2)"#,
            &parents,
            &sessions
        )
        .fetch_all(&mut *conn)
        .await
        .map_err(db)?
        .into_iter()
        .collect()
    };
    let now = resolve(conn, now).await?;
    let position: HashMap<Uuid, usize> = batch.iter().enumerate().map(|(i, t)| (t.id, i)).collect();
    let mut in_batch: HashMap<Uuid, u32> = HashMap::with_capacity(batch.len());
    let mut stored = Vec::with_capacity(batch.len());
    // Parents named before they are stored: linked once every member is.
    let mut forward_parents = Vec::new();
    for (index, new) in batch.iter().enumerate() {
        let mut deepest: Option<u32> = None;
        let mut all_completed = true;
        for dep in &new.dependencies {
            let depth = if let Some(depth) = in_batch.get(dep) {
                all_completed = false;
                *depth
            } else {
                let (status, depth) =
                    stored_deps.get(dep).ok_or(QueueError::UnknownDependency {
                        task: new.id,
                        dependency: *dep,
                    })?;
                let key = dep.to_string();
                let status = parse_status("tasks", &key, status)?;
                // A cancelled task never completes, and a failed one only after a retry.
                if matches!(status, TaskStatus::Failed | TaskStatus::Cancelled) {
                    return Err(QueueError::DependencyUnavailable {
                        task: new.id,
                        dependency: *dep,
                        status,
                    }
                    .into());
                }
                all_completed &= status == TaskStatus::Completed;
                int::<u32>("tasks", &key, "dependency_depth", *depth)?
            };
            deepest = Some(deepest.map_or(depth, |d| d.max(depth)));
        }
        let depth = deepest.map_or(0, |d| d.saturating_add(1));
        if depth > limits.max_depth {
            return Err(QueueError::TooDeep {
                task: new.id,
                depth,
                limit: limits.max_depth,
            }
            .into());
        }
        if let Some(parent) = new.parent_task_id {
            if !members.contains(&parent) && !known.contains(&parent) {
                return Err(QueueError::UnknownReference {
                    task: new.id,
                    reference: "parent task",
                    id: parent,
                }
                .into());
            }
        }
        if let Some(session) = new.session_id {
            if !known.contains(&session) {
                return Err(QueueError::UnknownReference {
                    task: new.id,
                    reference: "session",
                    id: session,
                }
                .into());
            }
        }
        in_batch.insert(new.id, depth);
        let mut task = new.to_task(now);
        task.dependency_depth = depth;
        task.status = if all_completed {
            TaskStatus::Ready
        } else {
            TaskStatus::Blocked
        };
        let ready_since = new.run_after.map_or(now, |run_after| run_after.max(now));
        task.calculated_priority =
            priority.calculate(task.priority, depth, task.deadline, ready_since, now);
        let claim_key = (task.status == TaskStatus::Ready)
            .then(|| priority.key(task.priority, depth, ready_since));
        let forward = task
            .parent_task_id
            .filter(|p| position.get(p).is_some_and(|&at| at > index));
        let row = if forward.is_some() {
            forward_parents.extend(task.parent_task_id.map(|parent| (task.id, parent)));
            Task {
                parent_task_id: None,
                ..task.clone()
            }
        } else {
            task.clone()
        };
        match insert_task(conn, &row, claim_key).await {
            Ok(()) => {}
            Err(DatabaseError::UniqueViolation { .. }) => {
                return Err(QueueError::DuplicateTask { task: new.id }.into());
            }
            Err(other) => return Err(other.into()),
        }
        stored.push(task);
    }
    if !forward_parents.is_empty() {
        let (ids, parents): (Vec<Uuid>, Vec<Uuid>) = forward_parents.into_iter().unzip();
        sqlx::query!(
            "UPDATE tasks SET parent_task_id = p.parent
             FROM unnest($1::uuid[], $2::uuid[]) AS p(id, parent) WHERE tasks.id = p.id",
            &ids,
            &parents
        )
        .execute(&mut *conn)
        .await
        .map_err(db)?;
    }
    let ids: Vec<Uuid> = stored.iter().map(|t| t.id).collect();
    let statuses: Vec<String> = stored
        .iter()
        .map(|t| t.status.as_str().to_string())
        .collect();
    sqlx::query!(
        "INSERT INTO task_events (task_id, from_status, to_status, at, actor, attempt_id, reason)
         SELECT m.id, NULL, m.status, $1, $2, NULL, 'submitted'
         FROM unnest($3::uuid[], $4::text[]) WITH ORDINALITY AS m(id, status, n)
         ORDER BY m.n",
        now,
        actor,
        &ids,
        &statuses
    )
    .execute(&mut *conn)
    .await
    .map_err(db)?;
    Ok(stored)
}

/// The claim: the most urgent claimable tasks, locked, moved to running, with an attempt
/// each.
///
/// Two locking scans, as in the SQLite adapter's claim, each read through its index and each
/// evaluated once (materialized CTEs, so that the planner cannot run a `LIMIT ... FOR UPDATE
/// SKIP LOCKED` scan again and take more rows than asked, the Oban 652 trap):
///
/// - `keyed`: the first `n` claimable tasks, in claim-key order, whose deadline is not within
///   the horizon (their urgency is 0);
/// - `urgent`: the first `n` claimable tasks whose deadline is within the horizon or past, by
///   key plus urgency at `now`.
///
/// The best `n` of both are moved to running by the same statement (`UPDATE ... FROM
/// chosen`). Rows locked but not chosen stay unclaimed, locked until the commit.
///
/// For one agent type, the key scan reads the index that leads with the type.
/// A task a claim took: its id, its rank, when it was submitted, the time the claim recorded,
/// and how many rows the claim locked in all.
type Chosen = (Uuid, Option<f64>, DateTime<Utc>, DateTime<Utc>, i64);

async fn claim_in(
    conn: &mut PgConnection,
    request: &ClaimRequest,
    priority: &PriorityPolicy,
    now: Now,
) -> R<Vec<ClaimedTask>> {
    if request.max_tasks == 0 {
        return Ok(Vec::new());
    }
    // The claim waits on no lock (it skips locked rows), so which tasks it may take is decided
    // with the time read just before it. The time it records is read inside the claim
    // statement (`stamp`), after the statement's snapshot: a dependency whose completion that
    // snapshot sees committed before, so no attempt is ever recorded as starting before the
    // completion that made its task ready (`Now::At` pins both).
    let pinned = match now {
        Now::At(at) => Some(at),
        Now::Store => None,
    };
    let now = resolve(conn, now).await?;
    let until = priority.urgent_until(now);
    let horizon = priority.deadline_horizon.as_secs_f64().max(1e-6);
    let limit = i64::from(request.max_tasks);
    let mut chosen: Vec<Chosen> = match request.agent_types.as_slice() {
        [one] => {
            sqlx::query!(
                r#"WITH urgent AS MATERIALIZED (
        SELECT t.id, t.submitted_at,
               t.claim_key + $5 * LEAST(1.0::float8, GREATEST(0.0::float8,
                   1.0::float8 - EXTRACT(EPOCH FROM (t.deadline - $1))::float8 / $6)) AS rank
        FROM tasks t
        WHERE t.status = 'ready' AND t.deadline <= $2 AND t.agent_type = $3
          AND NOT EXISTS (SELECT 1 FROM task_schedule s
                          WHERE s.task_id = t.id AND s.run_after > $1)
        ORDER BY rank DESC NULLS LAST, t.submitted_at, t.id
        LIMIT $4
        FOR UPDATE OF t SKIP LOCKED
    ), keyed AS MATERIALIZED (
        SELECT t.id, t.submitted_at, t.claim_key AS rank
        FROM tasks t
        WHERE t.status = 'ready' AND (t.deadline IS NULL OR t.deadline > $2)
          AND t.agent_type = $3
          AND NOT EXISTS (SELECT 1 FROM task_schedule s
                          WHERE s.task_id = t.id AND s.run_after > $1)
        ORDER BY t.claim_key DESC NULLS LAST, t.submitted_at, t.id
        LIMIT $4
        FOR UPDATE OF t SKIP LOCKED
    ), chosen AS MATERIALIZED (
        SELECT c.id, c.submitted_at, c.rank
        FROM (SELECT * FROM urgent UNION ALL SELECT * FROM keyed) c
        ORDER BY c.rank DESC NULLS LAST, c.submitted_at, c.id
        LIMIT $4
    ), stamp AS MATERIALIZED (
        SELECT COALESCE($7::timestamptz, clock_timestamp()) AS at
    )
    UPDATE tasks SET status = 'running', started_at = stamp.at, last_updated_at = stamp.at
    FROM chosen, stamp
    WHERE tasks.id = ANY(ARRAY(SELECT c.id FROM chosen c)) AND tasks.id = chosen.id
      AND tasks.status = 'ready'
    RETURNING tasks.id AS "id!", chosen.rank AS "rank?", chosen.submitted_at AS "submitted_at!",
              stamp.at AS "at!",
              (SELECT count(*) FROM urgent) + (SELECT count(*) FROM keyed) AS "locked!""#,
                now,
                until,
                one.as_str(),
                limit,
                priority.deadline_weight,
                horizon,
                pinned
            )
            .map(|r| (r.id, r.rank, r.submitted_at, r.at, r.locked))
            .fetch_all(&mut *conn)
            .await
        }
        types => {
            sqlx::query!(
                r#"WITH urgent AS MATERIALIZED (
        SELECT t.id, t.submitted_at,
               t.claim_key + $5 * LEAST(1.0::float8, GREATEST(0.0::float8,
                   1.0::float8 - EXTRACT(EPOCH FROM (t.deadline - $1))::float8 / $6)) AS rank
        FROM tasks t
        WHERE t.status = 'ready' AND t.deadline <= $2
          AND ($3::text[] IS NULL OR t.agent_type = ANY($3))
          AND NOT EXISTS (SELECT 1 FROM task_schedule s
                          WHERE s.task_id = t.id AND s.run_after > $1)
        ORDER BY rank DESC NULLS LAST, t.submitted_at, t.id
        LIMIT $4
        FOR UPDATE OF t SKIP LOCKED
    ), keyed AS MATERIALIZED (
        SELECT t.id, t.submitted_at, t.claim_key AS rank
        FROM tasks t
        WHERE t.status = 'ready' AND (t.deadline IS NULL OR t.deadline > $2)
          AND ($3::text[] IS NULL OR t.agent_type = ANY($3))
          AND NOT EXISTS (SELECT 1 FROM task_schedule s
                          WHERE s.task_id = t.id AND s.run_after > $1)
        ORDER BY t.claim_key DESC NULLS LAST, t.submitted_at, t.id
        LIMIT $4
        FOR UPDATE OF t SKIP LOCKED
    ), chosen AS MATERIALIZED (
        SELECT c.id, c.submitted_at, c.rank
        FROM (SELECT * FROM urgent UNION ALL SELECT * FROM keyed) c
        ORDER BY c.rank DESC NULLS LAST, c.submitted_at, c.id
        LIMIT $4
    ), stamp AS MATERIALIZED (
        SELECT COALESCE($7::timestamptz, clock_timestamp()) AS at
    )
    UPDATE tasks SET status = 'running', started_at = stamp.at, last_updated_at = stamp.at
    FROM chosen, stamp
    WHERE tasks.id = ANY(ARRAY(SELECT c.id FROM chosen c)) AND tasks.id = chosen.id
      AND tasks.status = 'ready'
    RETURNING tasks.id AS "id!", chosen.rank AS "rank?", chosen.submitted_at AS "submitted_at!",
              stamp.at AS "at!",
              (SELECT count(*) FROM urgent) + (SELECT count(*) FROM keyed) AS "locked!""#,
                now,
                until,
                (!types.is_empty()).then_some(types),
                limit,
                priority.deadline_weight,
                horizon,
                pinned
            )
            .map(|r| (r.id, r.rank, r.submitted_at, r.at, r.locked))
            .fetch_all(&mut *conn)
            .await
        }
    }
    .map_err(db)?;
    let Some(&(_, _, _, now, locked)) = chosen.first() else {
        return Ok(Vec::new());
    };
    // The two ranked scans lock up to twice what is taken, and other claimers skip what they
    // lock: when some locked rows were not taken, they are ready again at this commit, so the
    // commit says so, as any other transaction that leaves work ready does.
    if usize::try_from(locked).unwrap_or(usize::MAX) > chosen.len() {
        sqlx::query!("SELECT 1 AS one FROM pg_notify('abathur_changes', '')")
            .fetch_one(&mut *conn)
            .await
            .map_err(db)?;
    }
    let expires_at = later(now, request.lease)?;
    // Most urgent first; a task without a key (made ready outside the queue) after every other.
    chosen.sort_by(|a, b| {
        let rank = |r: Option<f64>| r.unwrap_or(f64::NEG_INFINITY);
        rank(b.1)
            .total_cmp(&rank(a.1))
            .then_with(|| a.2.cmp(&b.2))
            .then_with(|| a.0.cmp(&b.0))
    });
    let ids: Vec<Uuid> = chosen.iter().map(|c| c.0).collect();
    let attempts: Vec<Uuid> = ids.iter().map(|_| Uuid::new_v4()).collect();
    // One attempt per task, all in one statement; each attempt's number follows the task's
    // earlier ones (the task's row is locked, so no other claim numbers it meanwhile).
    let numbers: HashMap<Uuid, i64> = sqlx::query!(
        r#"INSERT INTO task_attempts (id, task_id, attempt_number, worker_id, started_at,
                                    lease_expires_at)
         SELECT x.attempt, x.task,
                (SELECT COALESCE(MAX(a.attempt_number), 0) + 1 FROM task_attempts a
                 WHERE a.task_id = x.task),
                $1, $2, $3
         FROM unnest($4::uuid[], $5::uuid[]) AS x(task, attempt)
         RETURNING id, attempt_number"#,
        &request.worker_id,
        now,
        expires_at,
        &ids,
        &attempts
    )
    .map(|r| (r.id, r.attempt_number))
    .fetch_all(&mut *conn)
    .await
    .map_err(db)?
    .into_iter()
    .collect();
    sqlx::query!("DELETE FROM task_schedule WHERE task_id = ANY($1)", &ids)
        .execute(&mut *conn)
        .await
        .map_err(db)?;
    let moves: Vec<Move> = ids
        .iter()
        .zip(&attempts)
        .map(|(id, attempt)| Move {
            id: *id,
            from: TaskStatus::Ready,
            attempt: Some(*attempt),
        })
        .collect();
    record_many(
        conn,
        &moves,
        TaskStatus::Running,
        now,
        &request.worker_id,
        Some("claimed"),
    )
    .await?;
    let mut tasks = load_tasks(conn, &ids).await?;
    let mut claimed = Vec::with_capacity(ids.len());
    for (id, attempt_id) in ids.into_iter().zip(attempts) {
        let task = tasks.remove(&id).ok_or_else(|| {
            QueueError::Database(DatabaseError::not_found(ENTITY, id.to_string()))
        })?;
        let number = numbers.get(&attempt_id).copied().ok_or_else(|| {
            QueueError::Database(DatabaseError::not_found("attempt", attempt_id.to_string()))
        })?;
        claimed.push(ClaimedTask {
            lease: Lease {
                attempt_id,
                task_id: id,
                worker_id: request.worker_id.clone(),
                attempt_number: int(
                    "task_attempts",
                    &attempt_id.to_string(),
                    "attempt_number",
                    number,
                )?,
                expires_at,
            },
            task,
        });
    }
    Ok(claimed)
}

async fn heartbeat_in(
    conn: &mut PgConnection,
    attempt_id: Uuid,
    lease: Duration,
    now: Now,
) -> R<Lease> {
    let row = lock_attempt(conn, attempt_id).await?;
    row.check_open(attempt_id)?;
    let now = resolve(conn, now).await?;
    let expires_at = later(now, lease)?;
    sqlx::query!(
        "UPDATE task_attempts SET lease_expires_at = $1 WHERE id = $2",
        expires_at,
        attempt_id
    )
    .execute(&mut *conn)
    .await
    .map_err(db)?;
    Ok(Lease {
        attempt_id,
        task_id: row.task_id,
        worker_id: row.worker_id,
        attempt_number: int(
            "task_attempts",
            &attempt_id.to_string(),
            "attempt_number",
            row.attempt_number,
        )?,
        expires_at,
    })
}

/// The attempts of `ids`, each with its task's row locked first and then its own (sets in id
/// order): the order every operation that changes both takes them in. An attempt not found,
/// or whose task is not (pruned while this waited), is absent.
async fn lock_attempts(conn: &mut PgConnection, ids: &[Uuid]) -> R<HashMap<Uuid, AttemptRow>> {
    let locked: HashSet<Uuid> = sqlx::query_scalar!(
        "SELECT id FROM tasks
         WHERE id IN (SELECT task_id FROM task_attempts WHERE id = ANY($1))
         ORDER BY id FOR UPDATE",
        ids
    )
    .fetch_all(&mut *conn)
    .await
    .map_err(db)?
    .into_iter()
    .collect();
    let rows = sqlx::query!(
        r#"SELECT id, task_id, worker_id, attempt_number, outcome, error, finished_at,
                retry_count, retry_after
         FROM task_attempts WHERE id = ANY($1) ORDER BY id FOR UPDATE"#,
        ids
    )
    .fetch_all(&mut *conn)
    .await
    .map_err(db)?;
    // An attempt whose task is gone (deleted while this waited, or left behind by a delete
    // that bypassed the schema's trigger) is not found, as its task.
    Ok(rows
        .into_iter()
        .filter(|r| locked.contains(&r.task_id))
        .map(|r| {
            (
                r.id,
                AttemptRow {
                    task_id: r.task_id,
                    worker_id: r.worker_id,
                    attempt_number: r.attempt_number,
                    outcome: r.outcome,
                    error: r.error,
                    finished_at: r.finished_at,
                    retry_count: r.retry_count,
                    retry_after: r.retry_after,
                },
            )
        })
        .collect())
}

/// One `complete` of a group: the attempt and the result it completes with.
pub(crate) type Completion = (Uuid, Option<Value>);

/// The answer to one `complete`.
pub(crate) type Completed = Result<Recorded<Vec<Uuid>>, QueueError>;

/// Completes the attempts of `items` (each attempt at most once) in this transaction, each
/// answered as if it had run alone, in the order given, at one instant: an attempt that
/// cannot complete gets its error and changes nothing; the others complete together, in one
/// statement, and release their dependents together.
async fn complete_many_in(
    conn: &mut PgConnection,
    items: &[Completion],
    priority: &PriorityPolicy,
    now: Now,
) -> R<Vec<Completed>> {
    let attempt_ids: Vec<Uuid> = items.iter().map(|(id, _)| *id).collect();
    let rows = lock_attempts(conn, &attempt_ids).await?;
    let mut answers: Vec<Option<Completed>> = Vec::with_capacity(items.len());
    // The completions to write: attempt, task, worker (the history's actor), result.
    let mut attempts = Vec::new();
    let mut tasks = Vec::new();
    let mut actors = Vec::new();
    let mut results = Vec::new();
    for (attempt_id, result) in items {
        let Some(row) = rows.get(attempt_id) else {
            answers.push(Some(Err(QueueError::AttemptNotFound(*attempt_id))));
            continue;
        };
        if row.outcome.as_deref() == Some(AttemptOutcome::Completed.as_str()) {
            answers.push(Some(
                match repeat_completion(conn, *attempt_id, row, result.as_ref()).await {
                    Ok(repeat) => Ok(repeat),
                    Err(Stop::Queue(e)) => Err(e),
                    Err(Stop::Again) => return Err(Stop::Again),
                },
            ));
            continue;
        }
        if let Err(e) = row.check_open(*attempt_id) {
            answers.push(Some(Err(e)));
            continue;
        }
        answers.push(None);
        attempts.push(*attempt_id);
        tasks.push(row.task_id);
        actors.push(row.worker_id.clone());
        results.push(result.as_ref().map(Json));
    }
    if !attempts.is_empty() {
        let store = now == Now::Store;
        let pinned = match now {
            Now::At(at) => Some(at),
            Now::Store => None,
        };
        // The time is read inside the statement, after the locks above: the attempts close,
        // the tasks complete with their results, and each gets its history row.
        let written = sqlx::query!(
            r#"WITH stamp AS MATERIALIZED (
                SELECT COALESCE($1::timestamptz, clock_timestamp()) AS at
            ), closed AS (
                UPDATE task_attempts a SET finished_at = stamp.at, outcome = 'completed',
                    error = NULL
                FROM stamp
                WHERE a.id = ANY($2::uuid[]) AND a.finished_at IS NULL
                RETURNING a.id
            ), moved AS (
                UPDATE tasks t SET status = 'completed', result_data = d.result,
                    error_message = NULL, last_updated_at = stamp.at, completed_at = stamp.at
                FROM stamp, unnest($3::uuid[], $5::jsonb[]) AS d(task, result)
                WHERE t.id = ANY($3::uuid[]) AND t.id = d.task AND t.status = 'running'
                RETURNING t.id
            ), recorded AS (
                INSERT INTO task_events (task_id, from_status, to_status, at, actor,
                                         attempt_id, reason)
                SELECT d.task, 'running', 'completed', stamp.at, d.actor, d.attempt, NULL
                FROM stamp, unnest($2::uuid[], $3::uuid[], $4::text[])
                    WITH ORDINALITY AS d(attempt, task, actor, n)
                ORDER BY d.n
            )
            SELECT stamp.at AS "now!", (SELECT count(*) FROM moved) AS "moved!"
            FROM stamp"#,
            pinned,
            &attempts,
            &tasks,
            &actors,
            &results as _
        )
        .fetch_one(&mut *conn)
        .await
        .map_err(db)?;
        // Every task was read running under its lock (its attempt was open), so a task that
        // did not change was changed outside the queue: refuse rather than record a history
        // that did not happen.
        if usize::try_from(written.moved).ok() != Some(tasks.len()) {
            return Err(QueueError::Database(DatabaseError::Conflict {
                entity: "task",
                id: tasks.first().map(Uuid::to_string).unwrap_or_default(),
                reason: "expected it to be running, but it was changed outside the queue"
                    .to_string(),
            })
            .into());
        }
        let mut released = release_dependents(conn, &tasks, priority, written.now, store).await?;
        let mut completions = tasks.iter();
        for answer in answers.iter_mut().filter(|a| a.is_none()) {
            let task = completions.next().copied().unwrap_or_default();
            *answer = Some(Ok(Recorded::new(
                released.remove(&task).unwrap_or_default(),
            )));
        }
    }
    Ok(answers.into_iter().flatten().collect())
}

async fn fail_in(
    conn: &mut PgConnection,
    attempt_id: Uuid,
    error: &str,
    retry: &RetryPolicy,
    priority: &PriorityPolicy,
    now: Now,
) -> R<Recorded<FailOutcome>> {
    let row = lock_attempt(conn, attempt_id).await?;
    if row.outcome.as_deref() == Some(AttemptOutcome::Failed.as_str()) {
        return repeat_failure(conn, attempt_id, &row, error).await;
    }
    row.check_open(attempt_id)?;
    let store = now == Now::Store;
    let now = resolve(conn, now).await?;
    close_attempt(conn, attempt_id, AttemptOutcome::Failed, Some(error), now).await?;
    fail_task(
        conn,
        row.task_id,
        attempt_id,
        error,
        &row.worker_id,
        retry,
        priority,
        now,
        store,
    )
    .await
    .map(Recorded::new)
}

async fn release_in(
    conn: &mut PgConnection,
    attempt_id: Uuid,
    reason: &str,
    priority: &PriorityPolicy,
    now: Now,
) -> R<()> {
    let row = lock_attempt(conn, attempt_id).await?;
    row.check_open(attempt_id)?;
    let now = resolve(conn, now).await?;
    close_attempt(
        conn,
        attempt_id,
        AttemptOutcome::Released,
        Some(reason),
        now,
    )
    .await?;
    // A leftover run-after time would hold the task back; it is claimable at once.
    sqlx::query!("DELETE FROM task_schedule WHERE task_id = $1", row.task_id)
        .execute(&mut *conn)
        .await
        .map_err(db)?;
    let why = format!("released unfinished: {reason}");
    transition(
        conn,
        row.task_id,
        TaskStatus::Running,
        TaskStatus::Ready,
        now,
        &row.worker_id,
        Some(attempt_id),
        Some(&why),
    )
    .await?;
    key_ready(conn, &[row.task_id], priority, now).await
}

async fn cancel_in(conn: &mut PgConnection, task_id: Uuid, actor: &str, now: Now) -> R<Vec<Uuid>> {
    let status = lock_task_status(conn, task_id).await?;
    if status.is_terminal() {
        return Err(QueueError::InvalidTransition {
            task_id,
            operation: "cancel",
            status,
        }
        .into());
    }
    let mut affected = vec![(task_id, status)];
    affected.extend(descendants(conn, task_id, Walk::DependentsAndChildren, true).await?);
    affected.retain(|(_, status)| !status.is_terminal());
    let now = resolve(conn, now).await?;
    let ids: Vec<Uuid> = affected.iter().map(|(id, _)| *id).collect();
    // Running tasks' attempts end as cancelled: their leases are revoked.
    let revoked: HashMap<Uuid, Uuid> = sqlx::query!(
        r#"UPDATE task_attempts SET finished_at = $1, outcome = 'cancelled'
         WHERE finished_at IS NULL AND task_id = ANY($2)
         RETURNING task_id, id"#,
        now,
        &ids
    )
    .map(|r| (r.task_id, r.id))
    .fetch_all(&mut *conn)
    .await
    .map_err(db)?
    .into_iter()
    .collect();
    sqlx::query!("DELETE FROM task_schedule WHERE task_id = ANY($1)", &ids)
        .execute(&mut *conn)
        .await
        .map_err(db)?;
    let (root, rest): (Vec<_>, Vec<_>) = affected
        .into_iter()
        .map(|(id, from)| Move {
            attempt: revoked.get(&id).copied(),
            id,
            from,
        })
        .partition(|m| m.id == task_id);
    transition_many(conn, &root, TaskStatus::Cancelled, now, actor, None).await?;
    let reason = format!("cancelled with {task_id}");
    transition_many(
        conn,
        &rest,
        TaskStatus::Cancelled,
        now,
        actor,
        Some(&reason),
    )
    .await?;
    Ok(root.iter().chain(&rest).map(|m| m.id).collect())
}

async fn retry_in(
    conn: &mut PgConnection,
    task_id: Uuid,
    actor: &str,
    priority: &PriorityPolicy,
    now: Now,
) -> R<Vec<Uuid>> {
    let status = lock_task_status(conn, task_id).await?;
    if status != TaskStatus::Failed {
        return Err(QueueError::InvalidTransition {
            task_id,
            operation: "retry",
            status,
        }
        .into());
    }
    // The failed dependents, locked before anything is decided.
    let dependents = descendants(conn, task_id, Walk::FailedDependents, true).await?;
    let now = resolve(conn, now).await?;
    let waiting: i64 = sqlx::query_scalar!(r#"SELECT COUNT(*) AS "count!" FROM task_dependencies d JOIN tasks u ON u.id = d.depends_on_task_id
         WHERE d.task_id = $1 AND u.status <> 'completed'"#, task_id)
    .fetch_one(&mut *conn)
    .await
    .map_err(db)?;
    let to = if waiting == 0 {
        TaskStatus::Ready
    } else {
        TaskStatus::Blocked
    };
    sqlx::query!(
        "UPDATE tasks SET retry_count = 0, error_message = NULL, completed_at = NULL
         WHERE id = $1",
        task_id
    )
    .execute(&mut *conn)
    .await
    .map_err(db)?;
    key_ready(conn, &[task_id], priority, now).await?;
    transition(
        conn,
        task_id,
        TaskStatus::Failed,
        to,
        now,
        actor,
        None,
        Some("retried"),
    )
    .await?;
    let mut unblocked = Vec::new();
    let reason = format!("dependency {task_id} retried");
    for (dependent, status) in dependents {
        if status != TaskStatus::Failed {
            continue;
        }
        let still_down: i64 = sqlx::query_scalar!(
            r#"SELECT COUNT(*) AS "count!" FROM task_dependencies d
             JOIN tasks u ON u.id = d.depends_on_task_id
             WHERE d.task_id = $1 AND u.status IN ('failed', 'cancelled')"#,
            dependent
        )
        .fetch_one(&mut *conn)
        .await
        .map_err(db)?;
        if still_down > 0 {
            continue;
        }
        sqlx::query!(
            "UPDATE tasks SET error_message = NULL, completed_at = NULL WHERE id = $1",
            dependent
        )
        .execute(&mut *conn)
        .await
        .map_err(db)?;
        transition(
            conn,
            dependent,
            TaskStatus::Failed,
            TaskStatus::Blocked,
            now,
            actor,
            None,
            Some(&reason),
        )
        .await?;
        unblocked.push(dependent);
    }
    Ok(unblocked)
}

async fn reap_in(
    conn: &mut PgConnection,
    retry: &RetryPolicy,
    priority: &PriorityPolicy,
    now: Now,
) -> R<ReapReport> {
    let store = now == Now::Store;
    let now = resolve(conn, now).await?;
    // Each reapable attempt with its task, both locked; rows another reaper (or a worker
    // finishing) holds are skipped: each task is recovered once, and no reaper waits.
    type Row = (Uuid, Uuid, DateTime<Utc>, DateTime<Utc>, i64);
    let open: Vec<Row> = sqlx::query!(
        r#"SELECT a.id, a.task_id, a.started_at, a.lease_expires_at,
                t.max_execution_timeout_seconds
         FROM task_attempts a JOIN tasks t ON t.id = a.task_id
         WHERE a.finished_at IS NULL
           AND (a.lease_expires_at <= $1
                OR a.started_at + make_interval(secs => t.max_execution_timeout_seconds) <= $1)
         ORDER BY a.task_id
         FOR UPDATE OF t, a SKIP LOCKED"#,
        now
    )
    .map(|r| {
        (
            r.id,
            r.task_id,
            r.started_at,
            r.lease_expires_at,
            r.max_execution_timeout_seconds,
        )
    })
    .fetch_all(&mut *conn)
    .await
    .map_err(db)?;
    let mut report = ReapReport::default();
    for (attempt, task, started_at, lease_expires_at, timeout) in open {
        // Each attempt in a savepoint of its own: one the reaper cannot handle is rolled back
        // and logged, and the others are still reaped.
        sqlx::query("SAVEPOINT reap_one")
            .execute(&mut *conn)
            .await
            .map_err(db)?;
        let one = reap_one(
            conn,
            retry,
            priority,
            now,
            store,
            (attempt, task, started_at, lease_expires_at, timeout),
        )
        .await;
        match one {
            Ok(reaped) => {
                sqlx::query("RELEASE SAVEPOINT reap_one")
                    .execute(&mut *conn)
                    .await
                    .map_err(db)?;
                match reaped {
                    Some(AttemptOutcome::TimedOut) => report.timed_out.push(task),
                    Some(_) => report.lost.push(task),
                    None => {}
                }
            }
            Err(Stop::Again) => return Err(Stop::Again),
            Err(Stop::Queue(e @ QueueError::Database(DatabaseError::Connection(_)))) => {
                return Err(Stop::Queue(e))
            }
            Err(Stop::Queue(e)) => {
                sqlx::query("ROLLBACK TO SAVEPOINT reap_one")
                    .execute(&mut *conn)
                    .await
                    .map_err(db)?;
                sqlx::query("RELEASE SAVEPOINT reap_one")
                    .execute(&mut *conn)
                    .await
                    .map_err(db)?;
                tracing::error!(attempt = %attempt, task = %task, error = %e,
                    "the reaper skipped an attempt it could not handle");
            }
        }
    }
    Ok(report)
}

/// Reaps one open attempt (locked, with its task) if its lease expired or it ran past its
/// timeout.
async fn reap_one(
    conn: &mut PgConnection,
    retry: &RetryPolicy,
    priority: &PriorityPolicy,
    now: DateTime<Utc>,
    store: bool,
    (attempt, task, started_at, lease_expires_at, timeout): (
        Uuid,
        Uuid,
        DateTime<Utc>,
        DateTime<Utc>,
        i64,
    ),
) -> R<Option<AttemptOutcome>> {
    let timeout: u32 = int(
        "task_attempts",
        &attempt.to_string(),
        "max_execution_timeout_seconds",
        timeout,
    )?;
    let deadline = started_at + chrono::Duration::seconds(i64::from(timeout));
    let (outcome, error) = if deadline <= now {
        (
            AttemptOutcome::TimedOut,
            format!("ran past its timeout of {timeout} s"),
        )
    } else if lease_expires_at <= now {
        (
            AttemptOutcome::Lost,
            "the worker's lease expired".to_string(),
        )
    } else {
        return Ok(None);
    };
    close_attempt(conn, attempt, outcome, Some(&error), now).await?;
    fail_task(
        conn, task, attempt, &error, "reaper", retry, priority, now, store,
    )
    .await?;
    Ok(Some(outcome))
}

/// Where a prune's pass has got to: the last task it looked at, in finishing order.
type PruneCursor = Option<(DateTime<Utc>, Uuid)>;

/// One batch of a prune: removes up to `request.batch_size` prunable tasks after `cursor`, in
/// finishing order. Returns how many it removed and the new cursor (`None` when the pass has
/// reached its end).
async fn prune_batch(
    conn: &mut PgConnection,
    request: &PruneRequest,
    cursor: PruneCursor,
) -> R<(u64, Option<PruneCursor>)> {
    let statuses: Vec<&str> = request.statuses.iter().map(|s| s.as_str()).collect();
    let (after_at, after_id) = cursor.unzip();
    // The candidates, locked (skipping rows another transaction holds: a task being named as
    // a dependency right now waits for a later prune).
    let found: Vec<(Uuid, DateTime<Utc>)> = sqlx::query_as(&format!(
        "SELECT t.id, t.completed_at FROM tasks t
         WHERE t.completed_at IS NOT NULL AND t.completed_at < $1
           AND ($2::timestamptz IS NULL OR (t.completed_at, t.id) > ($2, $3))
           AND t.status = ANY($4)
           AND {KEPT}
         ORDER BY t.completed_at, t.id
         LIMIT $5
         FOR UPDATE OF t SKIP LOCKED"
    ))
    .bind(request.finished_before)
    .bind(after_at)
    .bind(after_id)
    .bind(&statuses)
    .bind(i64::from(request.batch_size))
    .fetch_all(&mut *conn)
    .await
    .map_err(db)?;
    let Some((last_id, last_at)) = found.last().copied() else {
        return Ok((0, None));
    };
    // Checked again under the locks, in a statement that reads what committed meanwhile (a
    // dependent or child added before the locks were taken). The rest goes with each task:
    // schedule and edges, and a child's parent link, by their foreign keys; attempts and
    // history by the trigger `tasks_take_history_along`.
    let ids: Vec<Uuid> = found.iter().map(|(id, _)| *id).collect();
    let removed = sqlx::query(&format!(
        "DELETE FROM tasks t WHERE t.id = ANY($1) AND {KEPT}"
    ))
    .bind(&ids)
    .execute(&mut *conn)
    .await
    .map_err(db)?
    .rows_affected();
    let more = found.len() as u64 == u64::from(request.batch_size);
    Ok((removed, more.then_some(Some((last_at, last_id)))))
}

/// The rules of [`QueueStore::prune`]: a task is kept while it is needed.
const KEPT: &str = "NOT EXISTS (
               SELECT 1 FROM task_dependencies d JOIN tasks u ON u.id = d.task_id
               WHERE d.depends_on_task_id = t.id
                 AND (t.status <> 'completed'
                      OR u.status NOT IN ('completed', 'failed', 'cancelled')))
           AND NOT EXISTS (
               SELECT 1 FROM tasks c
               WHERE c.parent_task_id = t.id
                 AND c.status NOT IN ('completed', 'failed', 'cancelled'))";

#[async_trait]
impl QueueStore for PgQueueStore {
    async fn submit(
        &self,
        batch: Vec<NewTask>,
        limits: &QueueLimits,
        priority: &PriorityPolicy,
        actor: &str,
        now: Now,
    ) -> Result<Vec<Submitted>, QueueError> {
        transaction!(self.pool, |conn| submit_in(
            conn, &batch, limits, priority, actor, now
        ))
    }

    async fn submission_details(&self, task_id: Uuid) -> Result<SubmissionDetails, QueueError> {
        let row: Option<(Option<String>, Option<DateTime<Utc>>)> = sqlx::query!(r#"SELECT (SELECT k.idempotency_key FROM task_idempotency k WHERE k.task_id = t.id) AS idempotency_key,
                    (SELECT s.run_after FROM task_schedule s WHERE s.task_id = t.id) AS run_after
             FROM tasks t WHERE t.id = $1"#, task_id).map(|r| (r.idempotency_key, r.run_after))
        .fetch_optional(&self.pool)
        .await
        .map_err(|e| QueueError::Database(classify(e, ENTITY, &task_id.to_string())))?;
        let (idempotency_key, run_after) = row.ok_or(QueueError::TaskNotFound(task_id))?;
        Ok(SubmissionDetails {
            idempotency_key,
            run_after,
        })
    }

    async fn claim(
        &self,
        request: &ClaimRequest,
        priority: &PriorityPolicy,
        now: Now,
    ) -> Result<Vec<ClaimedTask>, QueueError> {
        transaction!(self.pool, |conn| claim_in(conn, request, priority, now))
    }

    async fn heartbeat(
        &self,
        attempt_id: Uuid,
        lease: Duration,
        now: Now,
    ) -> Result<Lease, QueueError> {
        transaction!(self.pool, |conn| heartbeat_in(conn, attempt_id, lease, now))
    }

    async fn complete(
        &self,
        attempt_id: Uuid,
        result: Option<Value>,
        priority: &PriorityPolicy,
        now: Now,
    ) -> Result<Recorded<Vec<Uuid>>, QueueError> {
        let mut answer = None;
        self.complete_group(vec![(attempt_id, result)], priority, now, |_, one| {
            answer = Some(one);
        })
        .await;
        answer.unwrap_or(Err(QueueError::AttemptNotFound(attempt_id)))
    }

    async fn fail(
        &self,
        attempt_id: Uuid,
        error: &str,
        retry: &RetryPolicy,
        priority: &PriorityPolicy,
        now: Now,
    ) -> Result<Recorded<FailOutcome>, QueueError> {
        transaction!(self.pool, |conn| fail_in(
            conn, attempt_id, error, retry, priority, now
        ))
    }

    async fn release(
        &self,
        attempt_id: Uuid,
        reason: &str,
        priority: &PriorityPolicy,
        now: Now,
    ) -> Result<(), QueueError> {
        transaction!(self.pool, |conn| release_in(
            conn, attempt_id, reason, priority, now
        ))
    }

    async fn cancel(&self, task_id: Uuid, actor: &str, now: Now) -> Result<Vec<Uuid>, QueueError> {
        transaction!(self.pool, |conn| cancel_in(conn, task_id, actor, now))
    }

    async fn retry(
        &self,
        task_id: Uuid,
        actor: &str,
        priority: &PriorityPolicy,
        now: Now,
    ) -> Result<Vec<Uuid>, QueueError> {
        transaction!(self.pool, |conn| retry_in(
            conn, task_id, actor, priority, now
        ))
    }

    async fn reap(
        &self,
        retry: &RetryPolicy,
        priority: &PriorityPolicy,
        now: Now,
    ) -> Result<ReapReport, QueueError> {
        transaction!(self.pool, |conn| reap_in(conn, retry, priority, now))
    }

    async fn prune(&self, request: &PruneRequest) -> Result<PruneReport, QueueError> {
        if let Some(status) = request.statuses.iter().find(|s| !s.is_terminal()) {
            return Err(ValidationError::new(
                "status",
                format!("{status} is not a finished status"),
            )
            .into());
        }
        if request.batch_size == 0 {
            return Err(ValidationError::new("batch_size", "must be at least 1").into());
        }
        let mut report = PruneReport::default();
        // A pass removes what it can in finishing order. A failed task is kept while a
        // dependent failed with it is there; when the pass removed that dependent, the next
        // pass takes the task. Every pass but the last removes something, so this ends.
        loop {
            let mut cursor: PruneCursor = None;
            let mut removed_in_pass = 0;
            loop {
                let (removed, next, held) = transaction!(self.pool, |conn| async {
                    let started = Instant::now();
                    prune_batch(conn, request, cursor)
                        .await
                        .map(|(removed, next)| (removed, next, started.elapsed()))
                })?;
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
        type Row = (
            i64,
            Option<String>,
            String,
            DateTime<Utc>,
            String,
            Option<Uuid>,
            Option<String>,
        );
        let on = |e| QueueError::Database(classify(e, ENTITY, &task_id.to_string()));
        let rows: Vec<Row> = sqlx::query!(
            r#"SELECT id, from_status, to_status, at, actor, attempt_id, reason
             FROM task_events WHERE task_id = $1 ORDER BY id"#,
            task_id
        )
        .map(|r| {
            (
                r.id,
                r.from_status,
                r.to_status,
                r.at,
                r.actor,
                r.attempt_id,
                r.reason,
            )
        })
        .fetch_all(&self.pool)
        .await
        .map_err(on)?;
        if rows.is_empty() {
            let exists: bool = sqlx::query_scalar!(
                r#"SELECT EXISTS (SELECT 1 FROM tasks WHERE id = $1) AS "exists!""#,
                task_id
            )
            .fetch_one(&self.pool)
            .await
            .map_err(on)?;
            if !exists {
                return Err(QueueError::TaskNotFound(task_id));
            }
        }
        rows.into_iter()
            .map(|(id, from, to, at, actor, attempt_id, reason)| {
                let key = id.to_string();
                let cx = RowContext {
                    table: "task_events",
                    id: &key,
                };
                Ok(TaskEvent {
                    sequence: id,
                    task_id,
                    from: from
                        .as_deref()
                        .map(|s| cx.parse("from_status", s))
                        .transpose()?,
                    to: cx.parse("to_status", &to)?,
                    at,
                    actor,
                    attempt_id,
                    reason,
                })
            })
            .collect()
    }

    async fn overview(&self, running_limit: u32, now: Now) -> Result<QueueOverview, QueueError> {
        let on = |e| QueueError::Database(classify(e, ENTITY, ""));
        // One snapshot for every statement.
        let mut tx = self.pool.begin().await.map_err(on)?;
        sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
            .execute(&mut *tx)
            .await
            .map_err(on)?;
        let now = match now {
            Now::At(at) => at,
            Now::Store => sqlx::query_scalar!(r#"SELECT clock_timestamp() AS "now!""#)
                .fetch_one(&mut *tx)
                .await
                .map_err(on)?,
        };
        let mut counts: std::collections::BTreeMap<TaskStatus, u64> =
            TaskStatus::ALL.iter().map(|s| (*s, 0)).collect();
        let rows: Vec<(String, i64)> =
            // Kept by the triggers of migration 0004: a few thousand rows at most, whatever
            // the number of tasks.
            sqlx::query!(
                r#"SELECT status, sum(tasks)::bigint AS "count!"
                   FROM task_status_counts GROUP BY status"#
            )
                .map(|r| (r.status, r.count))
                .fetch_all(&mut *tx)
                .await
                .map_err(on)?;
        for (status, count) in rows {
            let cx = RowContext {
                table: "tasks",
                id: "",
            };
            counts.insert(cx.parse("status", &status)?, cx.int("count", count)?);
        }
        let oldest: Option<(Uuid, String, String, DateTime<Utc>)> = sqlx::query!(
            r#"SELECT id, summary, agent_type, submitted_at
             FROM tasks t WHERE status = 'ready'
               AND NOT EXISTS (SELECT 1 FROM task_schedule s
                               WHERE s.task_id = t.id AND s.run_after > $1)
             ORDER BY submitted_at, id LIMIT 1"#,
            now
        )
        .map(|r| (r.id, r.summary, r.agent_type, r.submitted_at))
        .fetch_optional(&mut *tx)
        .await
        .map_err(on)?;
        let oldest_ready = oldest.map(|(task_id, summary, agent_type, submitted_at)| WaitingTask {
            task_id,
            summary,
            agent_type,
            submitted_at,
        });
        type Running = (Uuid, Uuid, String, String, DateTime<Utc>, DateTime<Utc>);
        let rows: Vec<Running> = sqlx::query!(
            r#"SELECT a.id, a.task_id, t.summary, a.worker_id, a.started_at, a.lease_expires_at
             FROM task_attempts a JOIN tasks t ON t.id = a.task_id
             WHERE a.finished_at IS NULL
             ORDER BY a.lease_expires_at, a.id LIMIT $1"#,
            i64::from(running_limit)
        )
        .map(|r| {
            (
                r.id,
                r.task_id,
                r.summary,
                r.worker_id,
                r.started_at,
                r.lease_expires_at,
            )
        })
        .fetch_all(&mut *tx)
        .await
        .map_err(on)?;
        let running = rows
            .into_iter()
            .map(
                |(attempt_id, task_id, summary, worker_id, started_at, lease_expires_at)| {
                    RunningAttempt {
                        attempt_id,
                        task_id,
                        summary,
                        worker_id,
                        started_at,
                        lease_expires_at,
                    }
                },
            )
            .collect();
        let expired: i64 = sqlx::query_scalar!(
            r#"SELECT COUNT(*) AS "count!" FROM task_attempts
             WHERE finished_at IS NULL AND lease_expires_at <= $1"#,
            now
        )
        .fetch_one(&mut *tx)
        .await
        .map_err(on)?;
        tx.commit().await.map_err(on)?;
        Ok(QueueOverview {
            at: now,
            counts,
            oldest_ready,
            running,
            expired_leases: int("task_attempts", "", "count", expired)?,
        })
    }

    async fn pending(&self, limit: u32) -> Result<Vec<PendingTask>, QueueError> {
        type Row = (Uuid, String, String, String, f64, Vec<Uuid>);
        let rows: Vec<Row> = sqlx::query!(
            r#"WITH p AS (
                 SELECT id, summary, agent_type, status, calculated_priority, submitted_at
                 FROM tasks
                 WHERE status NOT IN ('completed', 'failed', 'cancelled')
                 ORDER BY calculated_priority DESC, submitted_at, id
                 LIMIT $1
             )
             SELECT p.id AS "id!", p.summary AS "summary!", p.agent_type AS "agent_type!",
                    p.status AS "status!", p.calculated_priority AS "calculated_priority!",
                    ARRAY(SELECT d.depends_on_task_id
                          FROM task_dependencies d JOIN tasks u ON u.id = d.depends_on_task_id
                          WHERE d.task_id = p.id AND u.status <> 'completed'
                          ORDER BY d.depends_on_task_id) AS "waits_for!"
             FROM p
             ORDER BY p.calculated_priority DESC, p.submitted_at, p.id"#,
            i64::from(limit)
        )
        .map(|r| {
            (
                r.id,
                r.summary,
                r.agent_type,
                r.status,
                r.calculated_priority,
                r.waits_for,
            )
        })
        .fetch_all(&self.pool)
        .await
        .map_err(|e| QueueError::Database(classify(e, ENTITY, "")))?;
        rows.into_iter()
            .map(
                |(task_id, summary, agent_type, status, calculated_priority, waits_for)| {
                    Ok(PendingTask {
                        status: parse_status("tasks", &task_id.to_string(), &status)?,
                        task_id,
                        summary,
                        agent_type,
                        calculated_priority,
                        waits_for,
                    })
                },
            )
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::caused_by_a_member;
    use abathur_core::error::{DatabaseError, ValidationError};
    use abathur_core::queue::QueueError;

    /// A group is completed again one by one only when one member may be at fault; a failure
    /// of the connection, the pool or the server is every member's answer at once.
    #[test]
    fn only_a_members_fault_splits_a_group() {
        for e in [
            QueueError::Validation(ValidationError::new("result", "a NUL character")),
            QueueError::Database(DatabaseError::validation("result", "out of range")),
            QueueError::Database(DatabaseError::Conflict {
                entity: "task",
                id: "t".into(),
                reason: "changed outside the queue".into(),
            }),
            QueueError::Database(DatabaseError::Other("an unclassified error".into())),
        ] {
            assert!(caused_by_a_member(&e), "{e:?}");
        }
        for e in [
            QueueError::Database(DatabaseError::Busy),
            QueueError::Database(DatabaseError::Timeout),
            QueueError::Database(DatabaseError::Connection("gone".into())),
            QueueError::Database(DatabaseError::DiskFull),
            QueueError::Database(DatabaseError::Io),
        ] {
            assert!(!caused_by_a_member(&e), "{e:?}");
        }
    }
}
