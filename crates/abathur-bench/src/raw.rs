//! The raw baseline: the queue's statements run through rusqlite on one connection, each
//! prepared once and cached, one `BEGIN IMMEDIATE` transaction per operation as ours. It runs
//! the very statements of our adapter (their texts are read from
//! `abathur_sqlite::baseline`, never copied: the keyed insert, the claim's two reads and its
//! merge, the set-based claim and release of dependents, the history rows), without the
//! writer thread, its channel, the async runtime or our mapping, so the ratio of the two is
//! the cost of those layers.

use std::path::Path;

use abathur::domain::queue::PriorityPolicy;
use abathur::domain::timestamp;
use abathur::infrastructure::database::baseline as sql;
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

/// The base priority of every task the baseline submits, as `NewTask::new` gives.
const PRIORITY: u8 = 5;

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

    /// Submits `batch` in one transaction, as our submit does: each task's stored
    /// dependencies are read for their status and depth, the task row, its edges and its
    /// history row are written, the ready ones get their claim key, and the references are
    /// checked.
    pub fn submit(&mut self, batch: &[RawTask]) -> Result<(), BenchError> {
        let (now, now_text) = now_text();
        let policy = self.priority;
        let tx = self.begin()?;
        let mut in_batch: std::collections::HashMap<Uuid, u32> =
            std::collections::HashMap::with_capacity(batch.len());
        let mut keys = Vec::new();
        for task in batch {
            let mut depth: Option<u32> = None;
            let mut all_completed = true;
            for dep in &task.dependencies {
                let d = if let Some(d) = in_batch.get(dep) {
                    all_completed = false;
                    *d
                } else {
                    let (status, d): (String, i64) = tx
                        .prepare_cached(sql::SELECT_DEPENDENCY)?
                        .query_row([dep.to_string()], |r| Ok((r.get(0)?, r.get(1)?)))?;
                    if status == "failed" || status == "cancelled" {
                        return Err(BenchError(format!("dependency {dep} is {status}")));
                    }
                    all_completed &= status == "completed";
                    u32::try_from(d).map_err(|e| BenchError(e.to_string()))?
                };
                depth = Some(depth.map_or(d, |x| x.max(d)));
            }
            let depth = depth.map_or(0, |d| d + 1);
            in_batch.insert(task.id, depth);
            let status = if all_completed { "ready" } else { "blocked" };
            let calculated = policy.calculate(PRIORITY, depth, None, now, now);
            let id = task.id.to_string();
            if all_completed {
                keys.push(serde_json::json!({
                    "id": id,
                    "key": policy.key(PRIORITY, depth, now),
                    "calculated": calculated,
                }));
            }
            let deps = (!task.dependencies.is_empty()).then(|| {
                serde_json::Value::from(
                    task.dependencies
                        .iter()
                        .map(Uuid::to_string)
                        .collect::<Vec<_>>(),
                )
                .to_string()
            });
            tx.prepare_cached(sql::INSERT_TASK)?.execute(params![
                id,
                "bench task",
                "",
                AGENT_TYPE,
                PRIORITY,
                calculated,
                status,
                deps,
                "sequential",
                depth,
                Option::<String>::None,
                Option::<String>::None,
                Option::<String>::None,
                0,
                3,
                3600,
                now_text,
                Option::<String>::None,
                Option::<String>::None,
                now_text,
                Option::<String>::None,
                Option::<String>::None,
                Option::<String>::None,
                "human",
                Option::<String>::None,
                Option::<i64>::None,
                Option::<String>::None,
                Option::<String>::None,
                Option::<String>::None,
            ])?;
            if let Some(deps) = &deps {
                tx.prepare_cached(sql::INSERT_EDGES)?
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
        if !keys.is_empty() {
            tx.prepare_cached(sql::STORE_KEYS)?
                .execute([serde_json::Value::Array(keys).to_string()])?;
        }
        // The references named outside the batch exist (our submit checks them after the
        // inserts, to name the missing one).
        for task in batch {
            for dep in task
                .dependencies
                .iter()
                .filter(|d| !in_batch.contains_key(d))
            {
                let exists: bool = tx
                    .prepare_cached(sql::TASK_EXISTS)?
                    .query_row([dep.to_string()], |r| r.get(0))?;
                if !exists {
                    return Err(BenchError(format!("dependency {dep} does not exist")));
                }
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// Claims up to `max` of the most urgent ready tasks, as our claim does: the claim's
    /// statements and merge ([`sql::most_urgent`]), the attempts in one statement, the status
    /// change and history rows of all of them in one each, and each task read back.
    pub fn claim(&mut self, worker: &str, max: u32) -> Result<Vec<RawClaim>, BenchError> {
        let (now, now_text) = now_text();
        let expires = timestamp::format(&(now + ChronoDuration::seconds(60)));
        let policy = self.priority;
        let tx = self.begin()?;
        let ids = sql::most_urgent(&tx, max, &policy, now)?;
        if ids.is_empty() {
            tx.commit()?;
            return Ok(Vec::new());
        }
        let attempts: Vec<(String, String)> = ids
            .into_iter()
            .map(|id| (id, Uuid::new_v4().to_string()))
            .collect();
        let pairs = serde_json::Value::Array(
            attempts
                .iter()
                .map(|(task, attempt)| serde_json::json!({ "task": task, "attempt": attempt }))
                .collect(),
        )
        .to_string();
        let numbered: Vec<(String, i64)> = tx
            .prepare_cached(sql::INSERT_ATTEMPTS)?
            .query_map(params![worker, now_text, expires, pairs], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })?
            .collect::<Result<_, _>>()?;
        if numbered.len() != attempts.len() {
            return Err(BenchError("an attempt was not stored".into()));
        }
        let task_ids = serde_json::Value::from(
            attempts
                .iter()
                .map(|(task, _)| task.as_str())
                .collect::<Vec<_>>(),
        )
        .to_string();
        tx.prepare_cached(sql::DELETE_SCHEDULES)?
            .execute([task_ids])?;
        let moves: Vec<(&str, Option<&str>)> = attempts
            .iter()
            .map(|(task, attempt)| (task.as_str(), Some(attempt.as_str())))
            .collect();
        transition_many(
            &tx, &moves, "ready", "running", &now_text, worker, "claimed",
        )?;
        let mut claimed = Vec::with_capacity(attempts.len());
        for (task_id, attempt_id) in attempts {
            let row = tx
                .prepare_cached(sql::SELECT_TASK)?
                .query_row([&task_id], read_row)?;
            claimed.push(RawClaim {
                attempt_id,
                task_id,
                row,
            });
        }
        tx.commit()?;
        Ok(claimed)
    }

    /// Completes an attempt and makes ready the dependents whose dependencies are all
    /// completed, as our completion does: their claim keys computed from one read of their
    /// rows, then one statement for their status and keys and one for their history rows,
    /// however many they are. Returns how many were made ready.
    pub fn complete(&mut self, attempt_id: &str) -> Result<usize, BenchError> {
        let (now, now_text) = now_text();
        let policy = self.priority;
        let tx = self.begin()?;
        let (task_id, worker, outcome): (String, String, Option<String>) = tx
            .prepare_cached(sql::SELECT_ATTEMPT)?
            .query_row([attempt_id], |r| Ok((r.get(0)?, r.get(1)?, r.get(3)?)))
            .optional()?
            .ok_or_else(|| BenchError(format!("attempt {attempt_id} not found")))?;
        if let Some(outcome) = outcome {
            return Err(BenchError(format!(
                "attempt {attempt_id} already ended ({outcome})"
            )));
        }
        tx.prepare_cached(sql::CLOSE_ATTEMPT)?.execute(params![
            now_text,
            "completed",
            Option::<String>::None,
            attempt_id
        ])?;
        tx.prepare_cached(sql::SET_RESULT)?
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
        let ids: Vec<String> = tx
            .prepare_cached(sql::DEPENDENTS_TO_RELEASE)?
            .query_map([&task_id], |r| r.get(0))?
            .collect::<Result<_, _>>()?;
        if ids.is_empty() {
            tx.commit()?;
            return Ok(0);
        }
        let id_set = serde_json::Value::from(ids.clone()).to_string();
        // id, priority, depth, deadline, run-after time
        type KeyInputs = (String, i64, i64, Option<String>, Option<String>);
        let inputs: Vec<KeyInputs> = tx
            .prepare_cached(sql::SELECT_KEY_INPUTS)?
            .query_map([&id_set], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
            })?
            .collect::<Result<_, _>>()?;
        let mut keys = Vec::with_capacity(inputs.len());
        for (id, base, depth, deadline, run_after) in inputs {
            let base = u8::try_from(base).map_err(|e| BenchError(e.to_string()))?;
            let depth = u32::try_from(depth).map_err(|e| BenchError(e.to_string()))?;
            let ready_since = run_after
                .and_then(|text| timestamp::parse(&text).ok())
                .map_or(now, |run_after| run_after.max(now));
            let deadline = deadline.and_then(|text| timestamp::parse(&text).ok());
            keys.push(serde_json::json!({
                "id": id,
                "key": policy.key(base, depth, ready_since),
                "calculated": policy.calculate(base, depth, deadline, ready_since, now),
            }));
        }
        let changed = tx.prepare_cached(sql::RELEASE_READY)?.execute(params![
            now_text,
            serde_json::Value::Array(keys).to_string()
        ])?;
        if changed != ids.len() {
            return Err(BenchError(format!(
                "{changed} of {} dependents were made ready",
                ids.len()
            )));
        }
        let reason = format!("dependency {task_id} completed");
        record_many(
            &tx,
            &move_set(
                &ids.iter().map(|id| (id.as_str(), None)).collect::<Vec<_>>(),
                "blocked",
            ),
            "ready",
            &now_text,
            "queue",
            &reason,
        )?;
        tx.commit()?;
        Ok(ids.len())
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
    let changed = tx.prepare_cached(sql::SET_STATUS)?.execute(params![
        to,
        now,
        started_at,
        completed_at,
        id,
        from
    ])?;
    if changed != 1 {
        return Err(BenchError(format!("task {id} was not {from}")));
    }
    record(tx, id, Some(from), to, now, actor, attempt_id, reason)
}

/// The JSON array of `{id, from, attempt}` that the set-based statements read.
fn move_set(moves: &[(&str, Option<&str>)], from: &str) -> String {
    serde_json::Value::Array(
        moves
            .iter()
            .map(|(id, attempt)| serde_json::json!({ "id": id, "from": from, "attempt": attempt }))
            .collect(),
    )
    .to_string()
}

/// [`transition`] for a set of tasks (`(id, attempt)` each), two statements for all, as our
/// claim does.
fn transition_many(
    tx: &Connection,
    moves: &[(&str, Option<&str>)],
    from: &str,
    to: &str,
    now: &str,
    actor: &str,
    reason: &str,
) -> Result<(), BenchError> {
    let set = move_set(moves, from);
    let terminal = matches!(to, "completed" | "failed" | "cancelled");
    let changed = tx.prepare_cached(sql::SET_STATUS_MANY)?.execute(params![
        to,
        now,
        terminal,
        set,
        to == "running"
    ])?;
    if changed != moves.len() {
        return Err(BenchError(format!(
            "{changed} of {} tasks were {from}",
            moves.len()
        )));
    }
    record_many(tx, &set, to, now, actor, reason)
}

/// The history rows of a set-based transition to `to`.
fn record_many(
    tx: &Connection,
    set: &str,
    to: &str,
    now: &str,
    actor: &str,
    reason: &str,
) -> Result<(), BenchError> {
    tx.prepare_cached(sql::INSERT_EVENTS_MANY)?
        .execute(params![to, now, actor, reason, set])?;
    Ok(())
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
    tx.prepare_cached(sql::INSERT_EVENT)?
        .execute(params![id, from, to, now, actor, attempt_id, reason])?;
    Ok(())
}
