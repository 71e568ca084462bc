//! The raw baseline: the queue's statements run through rusqlite on one connection, each
//! prepared once and cached, one `BEGIN IMMEDIATE` transaction per operation as ours. It does
//! the same reads and writes as our adapter (attempt row, status change, history row,
//! dependents made ready), without the pool, the async runtime or our mapping, so the ratio
//! of the two is the cost of those layers.

use std::path::Path;

use abathur::domain::queue::PriorityPolicy;
use abathur::domain::timestamp;
use chrono::{DateTime, Duration as ChronoDuration, Utc};
use rusqlite::types::Value;
use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};
use uuid::Uuid;

use crate::fixture::{self, AGENT_TYPE};
use crate::BenchError;

/// The ready query, the same text our adapter runs.
pub const READY_SQL: &str = include_str!("../../abathur-sqlite/src/queries/ready_tasks.sql");
/// A memory's live version, the same text our adapter runs.
pub const MEMORY_GET_SQL: &str = include_str!("../../abathur-sqlite/src/queries/memory_get.sql");
/// Prefix search of memories, the same text our adapter runs.
pub const MEMORY_SEARCH_SQL: &str =
    include_str!("../../abathur-sqlite/src/queries/memory_search.sql");

/// A task to submit raw: its id and the ids it depends on.
#[derive(Debug, Clone)]
pub struct RawTask {
    pub id: Uuid,
    pub dependencies: Vec<Uuid>,
}

/// A claimed task: its attempt and task ids, and the row read back as a worker would.
#[derive(Debug)]
pub struct RawClaim {
    pub attempt_id: String,
    pub task_id: String,
    pub row: Vec<Value>,
}

/// The baseline queue on one connection.
pub struct RawQueue {
    conn: Connection,
    priority: PriorityPolicy,
    /// Raw group commit: commit once every this many operations, each operation in a
    /// savepoint of the one open transaction. `None`: one transaction per operation.
    group: Option<Group>,
}

struct Group {
    every: usize,
    done: usize,
}

/// One operation's transaction: its own, or a savepoint of the group's.
enum OpTx<'c> {
    Own(rusqlite::Transaction<'c>),
    InGroup(rusqlite::Savepoint<'c>),
}

impl std::ops::Deref for OpTx<'_> {
    type Target = Connection;

    fn deref(&self) -> &Connection {
        match self {
            Self::Own(tx) => tx,
            Self::InGroup(sp) => sp,
        }
    }
}

impl OpTx<'_> {
    fn commit(self) -> rusqlite::Result<()> {
        match self {
            Self::Own(tx) => tx.commit(),
            Self::InGroup(sp) => sp.commit(),
        }
    }
}

fn now_text() -> (DateTime<Utc>, String) {
    let now = Utc::now();
    (now, timestamp::format(&now))
}

impl RawQueue {
    pub fn open(path: &Path) -> Result<Self, BenchError> {
        Ok(Self {
            conn: fixture::raw(path)?,
            priority: PriorityPolicy::default(),
            group: None,
        })
    }

    /// The baseline with raw group commit: one `BEGIN IMMEDIATE` transaction committed every
    /// `every` operations, each operation in a savepoint, as our writer does when `every`
    /// callers wait. What batching could give at best, with no async runtime, no channel and
    /// no mapping.
    pub fn grouped(path: &Path, every: usize) -> Result<Self, BenchError> {
        let mut queue = Self::open(path)?;
        queue.group = Some(Group {
            every: every.max(1),
            done: 0,
        });
        Ok(queue)
    }

    /// Commits what a grouped baseline has not committed yet.
    pub fn flush(&mut self) -> Result<(), BenchError> {
        if self.group.is_some() && !self.conn.is_autocommit() {
            self.conn.execute_batch("COMMIT")?;
        }
        Ok(())
    }

    /// Begins one operation: its own `BEGIN IMMEDIATE` transaction, or, grouped, a savepoint
    /// in the group's transaction (committing the group first when it is full).
    fn begin(&mut self) -> Result<OpTx<'_>, BenchError> {
        let Some(group) = self.group.as_mut() else {
            return Ok(OpTx::Own(
                self.conn
                    .transaction_with_behavior(TransactionBehavior::Immediate)?,
            ));
        };
        if group.done == group.every && !self.conn.is_autocommit() {
            self.conn.execute_batch("COMMIT")?;
            group.done = 0;
        }
        if self.conn.is_autocommit() {
            self.conn.execute_batch("BEGIN IMMEDIATE")?;
        }
        group.done += 1;
        Ok(OpTx::InGroup(self.conn.savepoint()?))
    }

    /// Submits `batch` in one transaction: each task's stored dependencies are read for their
    /// status and depth, the task row, its edges and its history row are written.
    pub fn submit(&mut self, batch: &[RawTask]) -> Result<(), BenchError> {
        let (now, now_text) = now_text();
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let mut in_batch: std::collections::HashMap<Uuid, i64> =
            std::collections::HashMap::with_capacity(batch.len());
        for task in batch {
            let mut depth: Option<i64> = None;
            let mut all_completed = true;
            for dep in &task.dependencies {
                let d = if let Some(d) = in_batch.get(dep) {
                    all_completed = false;
                    *d
                } else {
                    let (status, d): (String, i64) = tx
                        .prepare_cached("SELECT status, dependency_depth FROM tasks WHERE id = ?")?
                        .query_row([dep.to_string()], |r| Ok((r.get(0)?, r.get(1)?)))?;
                    if status == "failed" || status == "cancelled" {
                        return Err(BenchError(format!("dependency {dep} is {status}")));
                    }
                    all_completed &= status == "completed";
                    d
                };
                depth = Some(depth.map_or(d, |x: i64| x.max(d)));
            }
            let depth = depth.map_or(0, |d| d + 1);
            in_batch.insert(task.id, depth);
            let status = if all_completed { "ready" } else { "blocked" };
            let calculated = self.priority.calculate(5, depth as u32, None, now, now);
            let deps = (!task.dependencies.is_empty()).then(|| {
                serde_json::Value::from(
                    task.dependencies
                        .iter()
                        .map(Uuid::to_string)
                        .collect::<Vec<_>>(),
                )
                .to_string()
            });
            let id = task.id.to_string();
            tx.prepare_cached(
                "INSERT INTO tasks (
                    id, summary, description, agent_type, priority, calculated_priority,
                    status, dependencies, dependency_type, dependency_depth,
                    input_data, result_data, error_message, retry_count, max_retries,
                    max_execution_timeout_seconds, submitted_at, started_at, completed_at,
                    last_updated_at, created_by, parent_task_id, session_id, source,
                    deadline, estimated_duration_seconds, feature_branch, task_branch, worktree_path
                ) VALUES (?, ?, '', ?, 5, ?, ?, ?, 'sequential', ?, NULL, NULL, NULL, 0, 3, 3600,
                          ?, NULL, NULL, ?, NULL, NULL, NULL, 'human', NULL, NULL, NULL, NULL, NULL)",
            )?
            .execute(params![
                id,
                "bench task",
                AGENT_TYPE,
                calculated,
                status,
                deps,
                depth,
                now_text,
                now_text
            ])?;
            if let Some(deps) = &deps {
                tx.prepare_cached(
                    "INSERT INTO task_dependencies (task_id, depends_on_task_id)
                     SELECT ?, value FROM json_each(?) WHERE true ON CONFLICT DO NOTHING",
                )?
                .execute(params![id, deps])?;
            }
            record(
                &tx,
                &id,
                None,
                status,
                &now_text,
                "submitter",
                None,
                Some("submitted"),
            )?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Claims up to `max` of the most urgent ready tasks, as our claim does.
    pub fn claim(&mut self, worker: &str, max: u32) -> Result<Vec<RawClaim>, BenchError> {
        let (now, now_text) = now_text();
        let expires = timestamp::format(&(now + ChronoDuration::seconds(60)));
        let tx = self.begin()?;
        let ids: Vec<String> = tx
            .prepare_cached(
                "SELECT id FROM tasks t WHERE status = 'ready'
                 AND NOT EXISTS (SELECT 1 FROM task_schedule s WHERE s.task_id = t.id AND s.run_after > ?)
                 ORDER BY calculated_priority DESC, submitted_at ASC, id ASC LIMIT ?",
            )?
            .query_map(params![now_text, i64::from(max)], |r| r.get(0))?
            .collect::<Result<_, _>>()?;
        let mut claimed = Vec::with_capacity(ids.len());
        for id in ids {
            let attempt_id = Uuid::new_v4().to_string();
            let number: i64 = tx
                .prepare_cached(
                    "SELECT COALESCE(MAX(attempt_number), 0) + 1 FROM task_attempts WHERE task_id = ?",
                )?
                .query_row([&id], |r| r.get(0))?;
            tx.prepare_cached(
                "INSERT INTO task_attempts (id, task_id, attempt_number, worker_id, started_at, lease_expires_at)
                 VALUES (?, ?, ?, ?, ?, ?)",
            )?
            .execute(params![attempt_id, id, number, worker, now_text, expires])?;
            tx.prepare_cached("DELETE FROM task_schedule WHERE task_id = ?")?
                .execute([&id])?;
            transition(
                &tx,
                &id,
                "ready",
                "running",
                &now_text,
                worker,
                Some(&attempt_id),
                Some("claimed"),
            )?;
            let row = tx
                .prepare_cached(
                    "SELECT id, summary, description, agent_type, priority, calculated_priority,
                        status, dependencies, dependency_type, dependency_depth, input_data, result_data,
                        error_message, retry_count, max_retries, max_execution_timeout_seconds,
                        submitted_at, started_at, completed_at, last_updated_at, created_by,
                        parent_task_id, session_id, source, deadline, estimated_duration_seconds,
                        feature_branch, task_branch, worktree_path
                     FROM tasks WHERE id = ?",
                )?
                .query_row([&id], read_row)?;
            claimed.push(RawClaim {
                attempt_id,
                task_id: id,
                row,
            });
        }
        tx.commit()?;
        Ok(claimed)
    }

    /// Completes an attempt and makes ready the dependents whose dependencies are all
    /// completed; returns how many were made ready.
    pub fn complete(&mut self, attempt_id: &str) -> Result<usize, BenchError> {
        let (now, now_text) = now_text();
        let policy = self.priority;
        let tx = self.begin()?;
        let (task_id, worker, outcome): (String, String, Option<String>) = tx
            .prepare_cached(
                "SELECT task_id, worker_id, attempt_number, finished_at, outcome
                 FROM task_attempts WHERE id = ?",
            )?
            .query_row([attempt_id], |r| Ok((r.get(0)?, r.get(1)?, r.get(4)?)))
            .optional()?
            .ok_or_else(|| BenchError(format!("attempt {attempt_id} not found")))?;
        if let Some(outcome) = outcome {
            return Err(BenchError(format!(
                "attempt {attempt_id} already ended ({outcome})"
            )));
        }
        tx.prepare_cached(
            "UPDATE task_attempts SET finished_at = ?, outcome = 'completed', error = NULL
             WHERE id = ? AND finished_at IS NULL",
        )?
        .execute(params![now_text, attempt_id])?;
        tx.prepare_cached("UPDATE tasks SET result_data = ?, error_message = NULL WHERE id = ?")?
            .execute(params![Option::<String>::None, task_id])?;
        transition(
            &tx,
            &task_id,
            "running",
            "completed",
            &now_text,
            &worker,
            Some(attempt_id),
            None,
        )?;
        let dependents: Vec<(String, i64, i64, Option<String>, String)> = tx
            .prepare_cached(
                "SELECT t.id, t.priority, t.dependency_depth, t.deadline, t.submitted_at
                 FROM task_dependencies d JOIN tasks t ON t.id = d.task_id
                 WHERE d.depends_on_task_id = ? AND t.status = 'blocked'
                   AND NOT EXISTS (
                       SELECT 1 FROM task_dependencies d2 JOIN tasks u ON u.id = d2.depends_on_task_id
                       WHERE d2.task_id = t.id AND u.status <> 'completed')",
            )?
            .query_map([&task_id], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
            })?
            .collect::<Result<_, _>>()?;
        let reason = format!("dependency {task_id} completed");
        for (id, priority, depth, deadline, submitted_at) in &dependents {
            let parse = |t: &str| timestamp::parse(t).map_err(BenchError);
            let deadline = deadline.as_deref().map(parse).transpose()?;
            let calculated = policy.calculate(
                u8::try_from(*priority).map_err(|e| BenchError(e.to_string()))?,
                u32::try_from(*depth).map_err(|e| BenchError(e.to_string()))?,
                deadline,
                parse(submitted_at)?,
                now,
            );
            tx.prepare_cached("UPDATE tasks SET calculated_priority = ? WHERE id = ?")?
                .execute(params![calculated, id])?;
            transition(
                &tx,
                id,
                "blocked",
                "ready",
                &now_text,
                "queue",
                None,
                Some(&reason),
            )?;
        }
        tx.commit()?;
        Ok(dependents.len())
    }

    /// Completes an attempt as [`RawQueue::complete`] does, but makes the dependents ready
    /// set-based: one `UPDATE ... RETURNING` computes their priorities in SQL (the same formula
    /// as `PriorityPolicy::calculate`) and one `INSERT ... SELECT` writes their history rows,
    /// however many they are. It shows what the fan-out could cost without a statement per
    /// dependent.
    pub fn complete_set_based(&mut self, attempt_id: &str) -> Result<usize, BenchError> {
        let (_, now_text) = now_text();
        let p = self.priority;
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let (task_id, worker): (String, String) = tx
            .prepare_cached(
                "SELECT task_id, worker_id FROM task_attempts WHERE id = ? AND finished_at IS NULL",
            )?
            .query_row([attempt_id], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()?
            .ok_or_else(|| BenchError(format!("attempt {attempt_id} is not open")))?;
        tx.prepare_cached(
            "UPDATE task_attempts SET finished_at = ?, outcome = 'completed', error = NULL
             WHERE id = ? AND finished_at IS NULL",
        )?
        .execute(params![now_text, attempt_id])?;
        tx.prepare_cached("UPDATE tasks SET result_data = ?, error_message = NULL WHERE id = ?")?
            .execute(params![Option::<String>::None, task_id])?;
        transition(
            &tx,
            &task_id,
            "running",
            "completed",
            &now_text,
            &worker,
            Some(attempt_id),
            None,
        )?;
        let released: Vec<String> = tx
            .prepare_cached(
                "UPDATE tasks SET status = 'ready', last_updated_at = ?2,
                     calculated_priority = priority
                         + ?3 * MIN(dependency_depth, ?4)
                         + CASE WHEN deadline IS NULL THEN 0.0 ELSE ?5 * MAX(0.0, MIN(1.0,
                               1.0 - (julianday(deadline) - julianday(?2)) * 86400.0 / ?6)) END
                         + MAX(0.0, (julianday(?2) - julianday(submitted_at)) * 86400.0) / ?7
                 WHERE id IN (
                     SELECT t.id FROM task_dependencies d JOIN tasks t ON t.id = d.task_id
                     WHERE d.depends_on_task_id = ?1 AND t.status = 'blocked'
                       AND NOT EXISTS (
                           SELECT 1 FROM task_dependencies d2 JOIN tasks u ON u.id = d2.depends_on_task_id
                           WHERE d2.task_id = t.id AND u.status <> 'completed'))
                 RETURNING id",
            )?
            .query_map(
                params![
                    task_id,
                    now_text,
                    p.depth_weight,
                    p.depth_cap,
                    p.deadline_weight,
                    p.deadline_horizon.as_secs_f64().max(1e-6),
                    p.aging_interval.as_secs_f64().max(1e-6)
                ],
                |r| r.get(0),
            )?
            .collect::<Result<_, _>>()?;
        let ids = serde_json::Value::from(released.clone()).to_string();
        tx.prepare_cached(
            "INSERT INTO task_events (task_id, from_status, to_status, at, actor, attempt_id, reason)
             SELECT value, 'blocked', 'ready', ?, 'queue', NULL, ? FROM json_each(?)",
        )?
        .execute(params![now_text, format!("dependency {task_id} completed"), ids])?;
        tx.commit()?;
        Ok(released.len())
    }

    /// The ready query with `limit`, every column read.
    pub fn ready(&mut self, limit: i64) -> Result<Vec<Vec<Value>>, BenchError> {
        let mut stmt = self.conn.prepare_cached(READY_SQL)?;
        let rows = stmt.query_map([limit], read_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The connection, for the memory queries.
    pub fn connection(&mut self) -> &mut Connection {
        &mut self.conn
    }
}

fn read_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Vec<Value>> {
    (0..r.as_ref().column_count()).map(|i| r.get(i)).collect()
}

#[allow(clippy::too_many_arguments)] // reason: the history row's columns, as in our adapter
fn transition(
    tx: &Connection,
    id: &str,
    from: &str,
    to: &str,
    now: &str,
    actor: &str,
    attempt_id: Option<&str>,
    reason: Option<&str>,
) -> Result<(), BenchError> {
    let started_at = (to == "running").then_some(now);
    let completed_at = matches!(to, "completed" | "failed" | "cancelled").then_some(now);
    let changed = tx
        .prepare_cached(
            "UPDATE tasks SET status = ?, last_updated_at = ?,
                 started_at = COALESCE(?, started_at), completed_at = COALESCE(?, completed_at)
             WHERE id = ? AND status = ?",
        )?
        .execute(params![to, now, started_at, completed_at, id, from])?;
    if changed != 1 {
        return Err(BenchError(format!("task {id} was not {from}")));
    }
    record(tx, id, Some(from), to, now, actor, attempt_id, reason)
}

#[allow(clippy::too_many_arguments)] // reason: one column each
fn record(
    tx: &Connection,
    id: &str,
    from: Option<&str>,
    to: &str,
    now: &str,
    actor: &str,
    attempt_id: Option<&str>,
    reason: Option<&str>,
) -> Result<(), BenchError> {
    tx.prepare_cached(
        "INSERT INTO task_events (task_id, from_status, to_status, at, actor, attempt_id, reason)
         VALUES (?, ?, ?, ?, ?, ?, ?)",
    )?
    .execute(params![id, from, to, now, actor, attempt_id, reason])?;
    Ok(())
}
