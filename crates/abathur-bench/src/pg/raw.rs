//! The raw PostgreSQL baseline: our adapter's claim, completion and ready query, statement for
//! statement and in the same order, through sqlx on one plain connection (each statement
//! prepared once and cached by sqlx), one transaction per operation, without our pool, the
//! port's trait objects, the retry loop or the mapping of rows into tasks. Claim keys and
//! calculated priorities are computed by [`PriorityPolicy`], as the adapter computes them.
//!
//! The adapter (`crates/abathur-postgres/src/queue_store.rs`, `task_repo.rs`) keeps its SQL in
//! sqlx's checked macros, where it cannot be shared, so the texts are copied here;
//! `tests/pg_statements.rs` fails when the adapter's source no longer holds one of them
//! (whitespace normalised), so the two cannot drift apart silently.

use std::time::Duration;

use abathur_core::queue::PriorityPolicy;
use chrono::{DateTime, Utc};
use sqlx::{Connection, PgConnection};
use uuid::Uuid;

use crate::BenchError;

/// The lease the baseline's claims take, as ours ([`crate::ours::LEASE`]).
const LEASE: Duration = crate::ours::LEASE;

/// Every statement copied from the adapter, by name, for `tests/pg_statements.rs`.
pub const STATEMENTS: &[(&str, &str)] = &[
    ("NOW", NOW),
    ("CLAIM", CLAIM),
    ("INSERT_ATTEMPTS", INSERT_ATTEMPTS),
    ("DELETE_SCHEDULES", DELETE_SCHEDULES),
    ("RECORD_MANY", RECORD_MANY),
    ("LOAD_TASKS", LOAD_TASKS),
    ("TASK_COLUMNS", TASK_COLUMNS),
    ("LOCK_TASKS", LOCK_TASKS),
    ("LOCK_ATTEMPTS", LOCK_ATTEMPTS),
    ("COMPLETE", COMPLETE),
    ("BLOCKED_DEPENDENTS", BLOCKED_DEPENDENTS),
    ("AFTER_LOCKS", AFTER_LOCKS),
    ("RELEASE", RELEASE),
    ("READY", READY),
];

/// The server's clock, read inside the transaction (`Now::Store`).
pub const NOW: &str = r#"SELECT clock_timestamp() AS "now!""#;

/// The claim (any agent type): the urgent tasks (deadline within the horizon) and the keyed ones, each scan locked with `SKIP LOCKED` in a materialized CTE, the best of both moved to running.
/// A row the claim returns: the task, its rank, when it was submitted, the time the claim
/// recorded and how many rows it locked.
type ClaimRow = (Uuid, Option<f64>, DateTime<Utc>, DateTime<Utc>, i64);

pub const CLAIM: &str = r#"WITH urgent AS MATERIALIZED (
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
              (SELECT count(*) FROM urgent) + (SELECT count(*) FROM keyed) AS "locked!""#;

/// One attempt (lease) per claimed task, numbered after the task's earlier ones.
pub const INSERT_ATTEMPTS: &str = r#"INSERT INTO task_attempts (id, task_id, attempt_number, worker_id, started_at,
                                    lease_expires_at)
         SELECT x.attempt, x.task,
                (SELECT COALESCE(MAX(a.attempt_number), 0) + 1 FROM task_attempts a
                 WHERE a.task_id = x.task),
                $1, $2, $3
         FROM unnest($4::uuid[], $5::uuid[]) AS x(task, attempt)
         RETURNING id, attempt_number"#;

/// The claimed tasks' run-after times, spent.
pub const DELETE_SCHEDULES: &str = r#"DELETE FROM task_schedule WHERE task_id = ANY($1)"#;

/// The history rows of a set-based transition.
pub const RECORD_MANY: &str = r#"INSERT INTO task_events (task_id, from_status, to_status, at, actor, attempt_id, reason)
         SELECT m.id, m.from_status, $1, $2, $3, m.attempt, $4
         FROM unnest($5::uuid[], $6::text[], $7::uuid[])
              WITH ORDINALITY AS m(id, from_status, attempt, n)
         ORDER BY m.n"#;

/// The claimed tasks read back whole (`{TASK_COLUMNS}` is [`TASK_COLUMNS`]).
pub const LOAD_TASKS: &str = r#"SELECT {TASK_COLUMNS} FROM tasks WHERE id = ANY($1)"#;

/// Every column of a task (`crates/abathur-postgres/src/task_row.rs`).
pub const TASK_COLUMNS: &str = "id, summary, description, agent_type, priority, \
     calculated_priority, status, dependencies, dependency_type, dependency_depth, input_data, \
     result_data, error_message, retry_count, max_retries, max_execution_timeout_seconds, \
     submitted_at, started_at, completed_at, last_updated_at, created_by, parent_task_id, \
     session_id, source, deadline, estimated_duration_seconds, feature_branch, task_branch, \
     worktree_path";

/// The attempts' tasks locked first, in id order, then the attempts'.
pub const LOCK_TASKS: &str = r#"SELECT id FROM tasks
         WHERE id IN (SELECT task_id FROM task_attempts WHERE id = ANY($1))
         ORDER BY id FOR UPDATE"#;

/// The attempts locked and read, in id order.
pub const LOCK_ATTEMPTS: &str = r#"SELECT id, task_id, worker_id, attempt_number, outcome, error, finished_at,
                retry_count, retry_after
         FROM task_attempts WHERE id = ANY($1) ORDER BY id FOR UPDATE"#;

/// The completions written: the time read, the attempts closed, the tasks completed with their
/// results, and their history rows.
pub const COMPLETE: &str = r#"WITH stamp AS MATERIALIZED (
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
            FROM stamp"#;

/// Every blocked dependent of the completed tasks, locked in id order, with what its key is
/// computed from.
pub const BLOCKED_DEPENDENTS: &str = r#"SELECT t.id, t.priority, t.dependency_depth, t.deadline, s.run_after AS "run_after?"
         FROM tasks t LEFT JOIN task_schedule s ON s.task_id = t.id
         WHERE t.id IN (SELECT d.task_id FROM task_dependencies d
                        WHERE d.depends_on_task_id = ANY($1))
           AND t.status = 'blocked'
         ORDER BY t.id FOR UPDATE OF t"#;

/// The time once the dependents' locks are held.
pub const AFTER_LOCKS: &str = r#"SELECT GREATEST($1::timestamptz, clock_timestamp()) AS "now!""#;

/// Those whose dependencies are all completed go ready, status and key in one pass, with their
/// history rows naming the completion that released each.
pub const RELEASE: &str = r#"WITH released AS (
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
        SELECT id AS "id!", dependency AS "dependency!" FROM by_dependency"#;

/// The specification's ready query, every column of the task as `PgTaskRepository` reads it.
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
    /// [`LOAD_TASKS`] with the columns in.
    load_tasks: String,
}

impl RawPg {
    pub fn new(conn: PgConnection) -> Self {
        Self {
            conn,
            priority: PriorityPolicy::default(),
            load_tasks: LOAD_TASKS.replace("{TASK_COLUMNS}", TASK_COLUMNS),
        }
    }

    /// Closes the connection.
    pub async fn close(self) {
        let _ = self.conn.close().await;
    }

    /// The connection, for checks between runs.
    pub fn connection(&mut self) -> &mut PgConnection {
        &mut self.conn
    }

    /// Claims up to `max` of the most urgent ready tasks (any agent type) for `worker`, in one
    /// transaction, as our claim does: the server's time, the claim, the attempts, the spent
    /// schedules, the history rows and the tasks read back. Returns the attempt ids, most
    /// urgent first.
    pub async fn claim(&mut self, worker: &str, max: u32) -> Result<Vec<Uuid>, BenchError> {
        let policy = self.priority;
        let mut tx = self.conn.begin().await?;
        let now: DateTime<Utc> = sqlx::query_scalar(NOW).fetch_one(&mut *tx).await?;
        let horizon = policy.deadline_horizon.as_secs_f64().max(1e-6);
        // The claim records the server's time read inside it (the last bind, NULL), as ours.
        let mut chosen: Vec<ClaimRow> = sqlx::query_as(CLAIM)
            .bind(now)
            .bind(policy.urgent_until(now))
            .bind(Option::<Vec<String>>::None)
            .bind(i64::from(max))
            .bind(policy.deadline_weight)
            .bind(horizon)
            .bind(Option::<DateTime<Utc>>::None)
            .fetch_all(&mut *tx)
            .await?;
        let Some(&(_, _, _, now, _)) = chosen.first() else {
            tx.commit().await?;
            return Ok(Vec::new());
        };
        let expires_at =
            now + chrono::Duration::from_std(LEASE).map_err(|e| BenchError(e.to_string()))?;
        chosen.sort_by(|a, b| {
            let rank = |r: Option<f64>| r.unwrap_or(f64::NEG_INFINITY);
            rank(b.1)
                .total_cmp(&rank(a.1))
                .then_with(|| a.2.cmp(&b.2))
                .then_with(|| a.0.cmp(&b.0))
        });
        let ids: Vec<Uuid> = chosen.iter().map(|c| c.0).collect();
        let attempts: Vec<Uuid> = ids.iter().map(|_| Uuid::new_v4()).collect();
        let numbered: Vec<(Uuid, i64)> = sqlx::query_as(INSERT_ATTEMPTS)
            .bind(worker)
            .bind(now)
            .bind(expires_at)
            .bind(&ids)
            .bind(&attempts)
            .fetch_all(&mut *tx)
            .await?;
        if numbered.len() != ids.len() {
            return Err(BenchError("an attempt was not stored".into()));
        }
        sqlx::query(DELETE_SCHEDULES)
            .bind(&ids)
            .execute(&mut *tx)
            .await?;
        let froms: Vec<String> = ids.iter().map(|_| "ready".to_string()).collect();
        let attempt_ids: Vec<Option<Uuid>> = attempts.iter().copied().map(Some).collect();
        sqlx::query(RECORD_MANY)
            .bind("running")
            .bind(now)
            .bind(worker)
            .bind(Some("claimed"))
            .bind(&ids)
            .bind(&froms)
            .bind(&attempt_ids)
            .execute(&mut *tx)
            .await?;
        let rows = sqlx::query(&self.load_tasks)
            .bind(&ids)
            .fetch_all(&mut *tx)
            .await?;
        if rows.len() != ids.len() {
            return Err(BenchError("a claimed task was not read back".into()));
        }
        tx.commit().await?;
        Ok(attempts)
    }

    /// Completes an attempt and makes ready the dependents whose dependencies are all
    /// completed, in one transaction, as our completion does (a group of one): the task's row
    /// and then the attempt's locked, the completion written with the server's time, then the
    /// blocked dependents locked and read in id order, the time read again, their keys
    /// computed, and the release with its history rows. Returns how many were made ready.
    pub async fn complete(&mut self, attempt_id: Uuid) -> Result<usize, BenchError> {
        let policy = self.priority;
        let mut tx = self.conn.begin().await?;
        let attempts = [attempt_id];
        sqlx::query_scalar::<_, Uuid>(LOCK_TASKS)
            .bind(&attempts[..])
            .fetch_all(&mut *tx)
            .await?;
        type Attempt = (
            Uuid,
            Uuid,
            String,
            i64,
            Option<String>,
            Option<String>,
            Option<DateTime<Utc>>,
            Option<i64>,
            Option<DateTime<Utc>>,
        );
        let attempt: Attempt = sqlx::query_as(LOCK_ATTEMPTS)
            .bind(&attempts[..])
            .fetch_optional(&mut *tx)
            .await?
            .ok_or_else(|| BenchError(format!("attempt {attempt_id} not found")))?;
        let (task_id, worker) = (attempt.1, attempt.2);
        if let Some(outcome) = attempt.4 {
            return Err(BenchError(format!(
                "attempt {attempt_id} already ended ({outcome})"
            )));
        }
        let tasks = [task_id];
        let (now, moved): (DateTime<Utc>, i64) = sqlx::query_as(COMPLETE)
            .bind(Option::<DateTime<Utc>>::None)
            .bind(&attempts[..])
            .bind(&tasks[..])
            .bind([worker])
            .bind([Option::<sqlx::types::Json<serde_json::Value>>::None])
            .fetch_one(&mut *tx)
            .await?;
        if moved != 1 {
            return Err(BenchError(format!("task {task_id} was not running")));
        }
        type Blocked = (Uuid, i16, i64, Option<DateTime<Utc>>, Option<DateTime<Utc>>);
        let blocked: Vec<Blocked> = sqlx::query_as(BLOCKED_DEPENDENTS)
            .bind(&tasks[..])
            .fetch_all(&mut *tx)
            .await?;
        if blocked.is_empty() {
            tx.commit().await?;
            return Ok(0);
        }
        let now: DateTime<Utc> = sqlx::query_scalar(AFTER_LOCKS)
            .bind(now)
            .fetch_one(&mut *tx)
            .await?;
        let mut ids = Vec::with_capacity(blocked.len());
        let mut keys = Vec::with_capacity(blocked.len());
        let mut calculated = Vec::with_capacity(blocked.len());
        for (id, base, depth, deadline, run_after) in blocked {
            let base = u8::try_from(base).map_err(|e| BenchError(e.to_string()))?;
            let depth = u32::try_from(depth).map_err(|e| BenchError(e.to_string()))?;
            let ready_since = run_after.map_or(now, |run_after| run_after.max(now));
            ids.push(id);
            keys.push(policy.key(base, depth, ready_since));
            calculated.push(policy.calculate(base, depth, deadline, ready_since, now));
        }
        let released: Vec<(Uuid, Uuid)> = sqlx::query_as(RELEASE)
            .bind(now)
            .bind(&ids)
            .bind(&keys)
            .bind(&calculated)
            .bind(&tasks[..])
            .fetch_all(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(released.len())
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
}
