//! The raw PostgreSQL baseline: the claim, completion and ready query of our adapter, statement
//! for statement, through sqlx on one plain connection (statements prepared once and cached by
//! sqlx), one transaction per operation, without our pool, the port's mapping or the async
//! trait objects. The adapter keeps its SQL inside sqlx's checked macros, so the texts are
//! copied here; `tests/pg_statements.rs` fails when the adapter's source no longer holds one of
//! them (whitespace normalised), so the two cannot drift apart silently.

use abathur_core::queue::PriorityPolicy;
use chrono::{DateTime, Utc};
use sqlx::{Connection, PgConnection};
use uuid::Uuid;

use crate::BenchError;

/// The statements copied from `crates/abathur-postgres/src/queue_store.rs`, by name, in the
/// order a claim and a completion run them.
pub const QUEUE_STATEMENTS: &[(&str, &str)] = &[
    ("CLAIM", CLAIM),
    ("INSERT_ATTEMPTS", INSERT_ATTEMPTS),
    ("CLAIM_EVENTS", CLAIM_EVENTS),
    ("CLOSE_ATTEMPT", CLOSE_ATTEMPT),
    ("COMPLETE_TASK", COMPLETE_TASK),
    ("RELEASE_DEPENDENTS", RELEASE_DEPENDENTS),
];

/// The ready query copied from `crates/abathur-postgres/src/task_repo.rs`
/// (`PgTaskRepository::get_ready_tasks`).
pub const READY_STATEMENTS: &[(&str, &str)] = &[("READY", READY)];

/// Clock of the transaction, read after the locks, as the adapter reads it for `Now::Store`.
pub const NOW: &str = "SELECT clock_timestamp()";

/// The most urgent ready tasks whose run-after time has come, locked with `SKIP LOCKED`, moved
/// to running.
pub const CLAIM: &str = r#"WITH picked AS (
    SELECT id FROM tasks
    WHERE status = 'ready'
      AND NOT EXISTS (SELECT 1 FROM task_schedule s WHERE s.task_id = tasks.id AND s.run_after > $1)
    ORDER BY claim_key DESC NULLS LAST, submitted_at, id
    LIMIT $2
    FOR UPDATE SKIP LOCKED
)
UPDATE tasks SET status = 'running', started_at = $1, last_updated_at = $1, claim_key = NULL
FROM picked WHERE tasks.id = picked.id
RETURNING tasks.id"#;

/// One attempt (lease) per claimed task.
pub const INSERT_ATTEMPTS: &str = r#"INSERT INTO task_attempts (id, task_id, attempt_number, worker_id, started_at, lease_expires_at)
SELECT a.id, a.task_id,
       1 + COALESCE((SELECT max(attempt_number) FROM task_attempts p WHERE p.task_id = a.task_id), 0),
       $3, $4, $5
FROM unnest($1::uuid[], $2::uuid[]) AS a(id, task_id)"#;

/// The claim's history rows.
pub const CLAIM_EVENTS: &str = r#"INSERT INTO task_events (task_id, from_status, to_status, at, actor, attempt_id, reason)
SELECT t, 'ready', 'running', $3, $4, a, 'claimed'
FROM unnest($1::uuid[], $2::uuid[]) AS e(t, a)"#;

/// Ends the open attempt, returning its task and worker.
pub const CLOSE_ATTEMPT: &str = r#"UPDATE task_attempts SET finished_at = $2, outcome = 'completed'
WHERE id = $1 AND finished_at IS NULL
RETURNING task_id, worker_id"#;

/// The task completed, with its history row.
pub const COMPLETE_TASK: &str = r#"WITH done AS (
    UPDATE tasks SET status = 'completed', result_data = NULL, completed_at = $2, last_updated_at = $2
    WHERE id = $1 AND status = 'running'
    RETURNING id
)
INSERT INTO task_events (task_id, from_status, to_status, at, actor, attempt_id, reason)
SELECT id, 'running', 'completed', $2, $3, $4, NULL FROM done"#;

/// The dependents whose dependencies are now all completed, made ready with their claim keys.
pub const RELEASE_DEPENDENTS: &str = r#"WITH released AS (
    UPDATE tasks SET status = 'ready', last_updated_at = $2,
        claim_key = priority + $3 * LEAST(dependency_depth, $4) - extract(epoch FROM $2)::float8 / $5
    WHERE id IN (
        SELECT d.task_id FROM task_dependencies d
        WHERE d.depends_on_task_id = $1
          AND NOT EXISTS (
              SELECT 1 FROM task_dependencies o JOIN tasks p ON p.id = o.depends_on_task_id
              WHERE o.task_id = d.task_id AND p.status <> 'completed')
    ) AND status = 'blocked'
    RETURNING id
)
INSERT INTO task_events (task_id, from_status, to_status, at, actor, reason)
SELECT id, 'blocked', 'ready', $2, 'system', 'dependencies completed' FROM released"#;

/// The specification's ready query, every column of the task as the repository reads it.
pub const READY: &str = r#"SELECT id, summary, description, agent_type, priority, calculated_priority,
                      status, dependencies, dependency_type, dependency_depth,
                      input_data AS "input_data: Json<serde_json::Value>",
                      result_data AS "result_data: Json<serde_json::Value>",
                      error_message, retry_count, max_retries, max_execution_timeout_seconds,
                      submitted_at, started_at, completed_at, last_updated_at, created_by,
                      parent_task_id, session_id, source, deadline, estimated_duration_seconds,
                      feature_branch, task_branch, worktree_path
               FROM tasks
               WHERE status = 'ready'
               ORDER BY calculated_priority DESC, submitted_at ASC, id ASC
               LIMIT $1"#;

/// The baseline on one connection.
pub struct RawPg {
    conn: PgConnection,
    priority: PriorityPolicy,
}

impl RawPg {
    pub fn new(conn: PgConnection) -> Self {
        Self {
            conn,
            priority: PriorityPolicy::default(),
        }
    }

    /// Closes the connection.
    pub async fn close(self) {
        let _ = self.conn.close().await;
    }

    /// Claims up to `max` of the most urgent ready tasks for `worker`, in one transaction, as
    /// our claim does. Returns the attempt ids.
    pub async fn claim(&mut self, worker: &str, max: u32) -> Result<Vec<Uuid>, BenchError> {
        let mut tx = self.conn.begin().await?;
        let now: DateTime<Utc> = sqlx::query_scalar(NOW).fetch_one(&mut *tx).await?;
        let ids: Vec<Uuid> = sqlx::query_scalar(CLAIM)
            .bind(now)
            .bind(i64::from(max))
            .fetch_all(&mut *tx)
            .await?;
        if ids.is_empty() {
            tx.commit().await?;
            return Ok(Vec::new());
        }
        let attempts: Vec<Uuid> = ids.iter().map(|_| Uuid::new_v4()).collect();
        let expires = now + chrono::Duration::seconds(300);
        sqlx::query(INSERT_ATTEMPTS)
            .bind(&attempts)
            .bind(&ids)
            .bind(worker)
            .bind(now)
            .bind(expires)
            .execute(&mut *tx)
            .await?;
        sqlx::query(CLAIM_EVENTS)
            .bind(&ids)
            .bind(&attempts)
            .bind(now)
            .bind(worker)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(attempts)
    }

    /// Completes an attempt and makes ready the dependents whose dependencies are all
    /// completed, in one transaction, as our completion does. Returns how many were made
    /// ready.
    pub async fn complete(&mut self, attempt_id: Uuid) -> Result<usize, BenchError> {
        let mut tx = self.conn.begin().await?;
        let now: DateTime<Utc> = sqlx::query_scalar(NOW).fetch_one(&mut *tx).await?;
        let (task_id, worker): (Uuid, String) = sqlx::query_as(CLOSE_ATTEMPT)
            .bind(attempt_id)
            .bind(now)
            .fetch_optional(&mut *tx)
            .await?
            .ok_or_else(|| BenchError(format!("attempt {attempt_id} is not open")))?;
        sqlx::query(COMPLETE_TASK)
            .bind(task_id)
            .bind(now)
            .bind(&worker)
            .bind(attempt_id)
            .execute(&mut *tx)
            .await?;
        let released = sqlx::query(RELEASE_DEPENDENTS)
            .bind(task_id)
            .bind(now)
            .bind(self.priority.depth_weight)
            .bind(i64::from(self.priority.depth_cap))
            .bind(self.priority.aging_interval.as_secs_f64())
            .execute(&mut *tx)
            .await?
            .rows_affected();
        tx.commit().await?;
        usize::try_from(released).map_err(|e| BenchError(e.to_string()))
    }

    /// The ready query, as `TaskRepository::get_ready_tasks(limit)` runs it; returns how many
    /// rows it read (fetched whole, not decoded into tasks).
    pub async fn ready(&mut self, limit: i64) -> Result<usize, BenchError> {
        let rows = sqlx::query(READY)
            .bind(limit)
            .fetch_all(&mut self.conn)
            .await?;
        Ok(rows.len())
    }

    /// The connection, for checks between runs.
    pub fn connection(&mut self) -> &mut PgConnection {
        &mut self.conn
    }
}
