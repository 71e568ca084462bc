//! [`TaskRepository`] on PostgreSQL: the `tasks` table, its `task_dependencies` edges, and a
//! `task_events` row for every status the repository sets.
//!
//! The rules are the SQLite adapter's (`abathur-sqlite`'s `task_repo`), one truth per fact:
//! - **Dependencies.** The edges are the truth. `tasks.dependencies`, the specification's
//!   list, is written from the same value as the edges by the same function
//!   ([`task_row::insert_task`] for every insert, the queue's included, and `update`), and the
//!   schema's trigger drops an id from it when its edge goes by cascade (a deleted or pruned
//!   dependency). `update` refuses what the queue would refuse: an unknown task, the task
//!   itself, or a cycle. Updates that add edges take one transaction-level advisory lock
//!   before they look for a cycle, so that two of them cannot each add half of one.
//! - **History.** Every status this repository gives a task (by `insert`, `insert_batch`,
//!   `update` or `update_status`) is a `task_events` row with the actor [`ACTOR`], in the same
//!   transaction. `delete` removes the task with its history (the foreign key cascades).
//! - **Claim key.** A change of status, priority or depth forgets the task's claim key: a task
//!   made ready here, outside the queue, is claimed after every task the queue keyed
//!   (`docs/PRIORITY.md`).
//!
//! PostgreSQL cannot store a NUL character in `text` or `jsonb`: every text field is checked
//! by [`Task::validate`], and the JSON fields here, before anything is sent, so such a task is
//! a `Validation` error naming the field. Every write runs in one transaction, retried whole
//! when the server aborts it for a deadlock or a serialization failure.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet};
use std::future::Future;
use std::sync::Arc;

use abathur_core::clock::{Clock, SystemClock};
use abathur_core::error::{DatabaseError, ValidationError};
use abathur_core::models::{Task, TaskStatus};
use abathur_core::ports::{
    FinishedMinute, TaskFilters, TaskOrder, TaskPageQuery, TaskRepository, MAX_SEARCH_CANDIDATES,
};
use abathur_core::timestamp;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::types::Json;
use sqlx::{PgConnection, PgPool, Postgres, QueryBuilder};
use uuid::Uuid;

use crate::errors::{classify, is_retryable, on};
use crate::row::RowContext;
use crate::task_row::{self, TaskRow, TASK_COLUMNS};

const ENTITY: &str = "task";

/// The actor of the history rows this repository writes.
pub(crate) const ACTOR: &str = "repository";

/// The reasons of the history rows this repository writes.
const INSERTED: &str = "inserted";
const UPDATED: &str = "updated";
const STATUS_SET: &str = "status set";

/// The transaction-level advisory lock taken by an update that adds dependency edges, before
/// it looks for a cycle: such updates run one at a time, so each sees the edges the one
/// before it added. (`abathur` + `deps` in ASCII.)
const DEPENDENCY_LOCK: i64 = 0x6162_6174_6465_7073;

/// The PostgreSQL task store.
#[derive(Debug, Clone)]
pub struct PgTaskRepository {
    pool: PgPool,
    clock: Arc<dyn Clock>,
}

impl PgTaskRepository {
    /// A repository on `pool`, taking time from the system clock.
    pub fn new(pool: PgPool) -> Self {
        Self::with_clock(pool, Arc::new(SystemClock))
    }

    /// A repository on `pool`, taking time from `clock`.
    pub fn with_clock(pool: PgPool, clock: Arc<dyn Clock>) -> Self {
        Self { pool, clock }
    }

    /// The clock's time, in the microseconds a `timestamptz` keeps.
    fn now(&self) -> DateTime<Utc> {
        timestamp::truncate_to_micros(self.clock.now())
    }
}

/// Why a transaction failed: the server aborted it and it may run again, or for good.
enum Fail {
    Retry(sqlx::Error),
    Db(DatabaseError),
}

impl From<DatabaseError> for Fail {
    fn from(e: DatabaseError) -> Self {
        Self::Db(e)
    }
}

/// `.map_err(sql(id))`: a driver error of task `id`, kept for a retry when it is one.
fn sql(id: Uuid) -> impl FnOnce(sqlx::Error) -> Fail {
    move |e| {
        if is_retryable(&e) {
            Fail::Retry(e)
        } else {
            Fail::Db(classify(e, ENTITY, &id.to_string()))
        }
    }
}

/// Runs `op` (one whole transaction) until it is not aborted by a deadlock or a
/// serialization failure: the repositories' one loop (`repo_support::retrying`), with a
/// retryable driver error as its outer error.
async fn retrying<T, F, Fut>(mut op: F) -> Result<T, DatabaseError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, Fail>>,
{
    crate::repo_support::retrying(ENTITY, "", || {
        let run = op();
        async move {
            match run.await {
                Ok(value) => Ok(Ok(value)),
                Err(Fail::Db(e)) => Ok(Err(e)),
                Err(Fail::Retry(e)) => Err(e),
            }
        }
    })
    .await
}

/// Checks a task for this store: the domain's rules, and no NUL character in its JSON (which
/// `jsonb` cannot hold); returns it with its times in microseconds, as they are stored.
fn prepare(mut task: Task) -> Result<Task, DatabaseError> {
    task.validate()?;
    for (field, value) in [
        ("input_data", &task.input_data),
        ("result_data", &task.result_data),
    ] {
        if let Some(value) = value {
            check_json_nul(field, value)?;
        }
    }
    let micros = timestamp::truncate_to_micros;
    task.submitted_at = micros(task.submitted_at);
    task.last_updated_at = micros(task.last_updated_at);
    task.started_at = task.started_at.map(micros);
    task.completed_at = task.completed_at.map(micros);
    task.deadline = task.deadline.map(micros);
    Ok(task)
}

/// Refuses a JSON value with a NUL character in a string or a key.
fn check_json_nul(field: &'static str, value: &serde_json::Value) -> Result<(), ValidationError> {
    let refused = || {
        ValidationError::new(
            field,
            "must not contain a NUL character (\\u0000), which PostgreSQL cannot store",
        )
    };
    let mut stack = vec![value];
    while let Some(value) = stack.pop() {
        match value {
            serde_json::Value::String(s) if s.contains('\0') => return Err(refused()),
            serde_json::Value::Array(items) => stack.extend(items),
            serde_json::Value::Object(map) => {
                if map.keys().any(|k| k.contains('\0')) {
                    return Err(refused());
                }
                stack.extend(map.values());
            }
            _ => {}
        }
    }
    Ok(())
}

/// The references of `task` (parent, session, dependencies) in the order they are reported,
/// leaving out the members of `pending` (the other members of a batch).
fn references(task: &Task, pending: &HashSet<Uuid>) -> Vec<(&'static str, Uuid)> {
    let parent = task.parent_task_id.map(|id| ("parent task", id));
    let session = task.session_id.map(|id| ("session", id));
    let deps = task
        .dependencies
        .iter()
        .flatten()
        .map(|id| ("dependency", *id));
    parent
        .into_iter()
        .chain(session)
        .chain(deps)
        .filter(|(reference, id)| *reference == "session" || !pending.contains(id))
        .collect()
}

/// The first reference of `task` that names nothing stored (and no member of `pending`),
/// with what it is, in one statement.
async fn first_missing_reference(
    conn: &mut PgConnection,
    task: &Task,
    pending: &HashSet<Uuid>,
) -> Result<Option<(&'static str, Uuid)>, sqlx::Error> {
    let refs = references(task, pending);
    if refs.is_empty() {
        return Ok(None);
    }
    let ids: Vec<Uuid> = refs.iter().map(|(_, id)| *id).collect();
    let sessions: Vec<bool> = refs.iter().map(|(r, _)| *r == "session").collect();
    let first: Option<i64> = sqlx::query_scalar!(
        r#"SELECT r.n AS "n!"
           FROM unnest($1::uuid[], $2::bool[]) WITH ORDINALITY AS r(id, is_session, n)
           WHERE NOT CASE WHEN r.is_session
                          THEN EXISTS (SELECT 1 FROM sessions s WHERE s.id = r.id)
                          ELSE EXISTS (SELECT 1 FROM tasks t WHERE t.id = r.id) END
           ORDER BY r.n
           LIMIT 1"#,
        &ids,
        &sessions
    )
    .fetch_optional(&mut *conn)
    .await?;
    Ok(first
        .and_then(|n| usize::try_from(n - 1).ok())
        .and_then(|i| refs.get(i).copied()))
}

/// The error for a reference of a task to `id`, which names nothing.
fn missing(reference: &'static str, id: Uuid) -> DatabaseError {
    DatabaseError::ForeignKeyViolation {
        entity: ENTITY,
        reference,
        id: Some(id.to_string()),
    }
}

/// `err`, with a foreign-key failure diagnosed to name the missing reference of the first of
/// `tasks` at fault. The failed transaction is gone, so this looks on a connection of its own.
async fn named_reference(
    pool: &PgPool,
    err: DatabaseError,
    tasks: &[Task],
    pending: &HashSet<Uuid>,
) -> DatabaseError {
    if !matches!(err, DatabaseError::ForeignKeyViolation { .. }) {
        return err;
    }
    let mut conn = match pool.acquire().await {
        Ok(conn) => conn,
        Err(e) => return classify(e, ENTITY, ""),
    };
    for task in tasks {
        match first_missing_reference(&mut conn, task, pending).await {
            Ok(Some((reference, id))) => return missing(reference, id),
            Ok(None) => {}
            Err(e) => return classify(e, ENTITY, &task.id.to_string()),
        }
    }
    DatabaseError::ForeignKeyViolation {
        entity: ENTITY,
        reference: "parent task, session or dependency",
        id: None,
    }
}

/// Appends a change of task `id` from `from` to `to` at `at` to its history.
async fn record(
    conn: &mut PgConnection,
    id: Uuid,
    from: Option<TaskStatus>,
    to: TaskStatus,
    at: DateTime<Utc>,
    reason: &str,
) -> Result<(), Fail> {
    sqlx::query!(
        "INSERT INTO task_events (task_id, from_status, to_status, at, actor, attempt_id, reason)
         VALUES ($1, $2, $3, $4, $5, NULL, $6)",
        id,
        from.map(TaskStatus::as_str),
        to.as_str(),
        at,
        ACTOR,
        reason
    )
    .execute(&mut *conn)
    .await
    .map_err(sql(id))?;
    Ok(())
}

/// The stored status of task `id`, its row locked until the transaction ends, or `None` when
/// there is no such task.
async fn lock_status(conn: &mut PgConnection, id: Uuid) -> Result<Option<TaskStatus>, Fail> {
    let status = sqlx::query_scalar!(
        "SELECT status FROM tasks WHERE id = $1 FOR NO KEY UPDATE",
        id
    )
    .fetch_optional(&mut *conn)
    .await
    .map_err(sql(id))?;
    let text = id.to_string();
    Ok(status
        .map(|s| {
            RowContext {
                table: "tasks",
                id: &text,
            }
            .parse("status", &s)
        })
        .transpose()?)
}

/// Refuses a dependency list the queue would refuse, before anything is written: an unknown
/// parent, session or task (`ForeignKeyViolation` naming it) or a dependency that already
/// depends on `t`, directly or through others (a `Validation` error on `dependencies`). `t`
/// itself is refused by [`Task::validate`].
async fn check_references(conn: &mut PgConnection, t: &Task) -> Result<(), Fail> {
    if let Some((reference, id)) = first_missing_reference(conn, t, &HashSet::new())
        .await
        .map_err(sql(t.id))?
    {
        return Err(missing(reference, id).into());
    }
    let deps: &[Uuid] = t.dependencies.as_deref().unwrap_or(&[]);
    if deps.is_empty() {
        return Ok(());
    }
    let adds_edges = sqlx::query_scalar!(
        r#"SELECT EXISTS (
               SELECT 1 FROM unnest($2::uuid[]) AS d
               WHERE NOT EXISTS (SELECT 1 FROM task_dependencies e
                                 WHERE e.task_id = $1 AND e.depends_on_task_id = d)) AS "adds!""#,
        t.id,
        deps
    )
    .fetch_one(&mut *conn)
    .await
    .map_err(sql(t.id))?;
    if !adds_edges {
        // The edges exist already: no cycle can be new.
        return Ok(());
    }
    sqlx::query!("SELECT pg_advisory_xact_lock($1)", DEPENDENCY_LOCK)
        .execute(&mut *conn)
        .await
        .map_err(sql(t.id))?;
    // The first id of the list from which the stored edges lead back to `t`. Each task is
    // visited once per start (UNION).
    let closing = sqlx::query_scalar!(
        r#"WITH RECURSIVE reach(start, n, id) AS (
               SELECT d, n, d FROM unnest($2::uuid[]) WITH ORDINALITY AS u(d, n)
               UNION
               SELECT reach.start, reach.n, e.depends_on_task_id
               FROM reach JOIN task_dependencies e ON e.task_id = reach.id
               WHERE reach.id <> $1)
           SELECT start AS "start!" FROM reach WHERE id = $1 ORDER BY n LIMIT 1"#,
        t.id,
        deps
    )
    .fetch_optional(&mut *conn)
    .await
    .map_err(sql(t.id))?;
    match closing {
        Some(dep) => Err(DatabaseError::from(ValidationError::new(
            "dependencies",
            format!(
                "task {dep} already depends on task {}, directly or through other tasks: \
                 depending on it would make a cycle",
                t.id
            ),
        ))
        .into()),
        None => Ok(()),
    }
}

/// Refuses a batch whose members depend on each other in a loop. Stored tasks cannot depend
/// on a new one, so only the members can form a cycle.
fn check_batch_cycles(batch: &[Task]) -> Result<(), DatabaseError> {
    let order = insertion_order(batch);
    if order.len() == batch.len() {
        return Ok(());
    }
    let placed: HashSet<usize> = order.iter().map(|(i, _)| *i).collect();
    let stuck = (0..batch.len()).find(|i| !placed.contains(i)).unwrap_or(0);
    Err(ValidationError::new(
        "dependencies",
        format!(
            "task {} waits on a cycle of dependencies among the members of the batch",
            batch[stuck].id
        ),
    )
    .into())
}

/// The order in which a batch is inserted, so that every reference to a member names a row
/// already written (PostgreSQL checks foreign keys at each statement): each member after the
/// members it depends on and, when it can be, after its parent; the lowest position first
/// among those free, so a batch without references goes in the order given. A member whose
/// parent cannot come first (parents and dependencies together in a loop) is marked: it is
/// written without its parent, which is set once every member is stored. When the members'
/// dependencies loop, the members of the loop are left out.
fn insertion_order(batch: &[Task]) -> Vec<(usize, bool)> {
    let index: HashMap<Uuid, usize> = batch.iter().enumerate().map(|(i, t)| (t.id, i)).collect();
    let n = batch.len();
    // Per member: how many members it waits on through a dependency, and through its parent.
    let mut deps_waiting = vec![0usize; n];
    let mut parent_waiting = vec![false; n];
    let mut dependents: Vec<Vec<usize>> = vec![Vec::new(); n];
    let mut children: Vec<Vec<usize>> = vec![Vec::new(); n];
    for (i, t) in batch.iter().enumerate() {
        for dep in t.dependencies.iter().flatten() {
            if let Some(&d) = index.get(dep) {
                deps_waiting[i] += 1;
                dependents[d].push(i);
            }
        }
        if let Some(&p) = t.parent_task_id.as_ref().and_then(|p| index.get(p)) {
            parent_waiting[i] = true;
            children[p].push(i);
        }
    }
    let mut placed = vec![false; n];
    let mut order = Vec::with_capacity(n);
    let mut free: BinaryHeap<Reverse<usize>> = (0..n)
        .filter(|&i| deps_waiting[i] == 0 && !parent_waiting[i])
        .map(Reverse)
        .collect();
    loop {
        while let Some(Reverse(i)) = free.pop() {
            if placed[i] {
                continue;
            }
            placed[i] = true;
            order.push((i, parent_waiting[i]));
            for &d in &dependents[i] {
                deps_waiting[d] -= 1;
                if deps_waiting[d] == 0 && !parent_waiting[d] {
                    free.push(Reverse(d));
                }
            }
            for &c in &children[i] {
                parent_waiting[c] = false;
                if deps_waiting[c] == 0 {
                    free.push(Reverse(c));
                }
            }
        }
        // Stuck: a member that waits only on its parent goes first, its parent deferred.
        match (0..n).find(|&i| !placed[i] && deps_waiting[i] == 0) {
            Some(i) => free.push(Reverse(i)),
            None => break,
        }
    }
    order
}

fn check_filters(filters: &TaskFilters) -> Result<(), DatabaseError> {
    Ok(filters.check()?)
}

/// Appends `AND ...` for every filter that is set, each value bound.
fn push_filters(qb: &mut QueryBuilder<'_, Postgres>, f: &TaskFilters) {
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
        qb.push(" AND session_id = ").push_bind(session);
    }
    if let Some(source) = f.source {
        qb.push(" AND source = ").push_bind(source.as_str());
    }
    if let Some(parent) = f.parent_task_id {
        qb.push(" AND parent_task_id = ").push_bind(parent);
    }
    if let Some(min) = f.min_priority {
        qb.push(" AND priority >= ").push_bind(i16::from(min));
    }
    if let Some(max) = f.max_priority {
        qb.push(" AND priority <= ").push_bind(i16::from(max));
    }
    if let Some(after) = f.submitted_after {
        qb.push(" AND submitted_at >= ")
            .push_bind(timestamp::truncate_to_micros(after));
    }
    if let Some(before) = f.submitted_before {
        qb.push(" AND submitted_at < ")
            .push_bind(timestamp::truncate_to_micros(before));
    }
}

/// The tasks whose summary may hold the search text, from the trigram index of migration 0004,
/// when the text is long enough to look up and names at most [`MAX_SEARCH_CANDIDATES`]
/// tasks; `None` when the page is to be read by scanning its order.
async fn search_candidates(
    pool: &PgPool,
    query: &TaskPageQuery,
) -> Result<Option<Vec<Uuid>>, DatabaseError> {
    let (Some(_), Some(pattern)) = (query.indexed_search(), query.summary_pattern()) else {
        return Ok(None);
    };
    let limit = i64::try_from(MAX_SEARCH_CANDIDATES + 1).unwrap_or(i64::MAX);
    // Planned for each search's own text (an unnamed statement): a plan made once for any
    // text may read every summary to find a rare one, when the index finds it at once.
    let ids: Vec<Uuid> = sqlx::query_scalar(
        r"SELECT task_id FROM task_summaries WHERE summary ILIKE $1 ESCAPE '\' LIMIT $2",
    )
    .bind(pattern)
    .bind(limit)
    .persistent(false)
    .fetch_all(pool)
    .await
    .map_err(on(ENTITY, ""))?;
    Ok((ids.len() <= MAX_SEARCH_CANDIDATES).then_some(ids))
}

/// Appends the search, the cursor, the order and the limit of a page. The cursor's condition
/// names the order's columns as its `ORDER BY` does, so the store walks the same index from
/// the cursor on.
fn push_page(qb: &mut QueryBuilder<'_, Postgres>, query: &TaskPageQuery) {
    if let Some(pattern) = query.summary_pattern() {
        // ILIKE: SQLite's LIKE ignores the case of ASCII letters, as the port promises.
        qb.push(" AND summary ILIKE ")
            .push_bind(pattern)
            .push(" ESCAPE '\\'");
    }
    if let Some(cursor) = &query.after {
        let (at, id) = (
            timestamp::truncate_to_micros(cursor.submitted_at),
            cursor.id,
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

fn tasks_from_rows(rows: Vec<TaskRow>) -> Result<Vec<Task>, DatabaseError> {
    rows.into_iter().map(Task::try_from).collect()
}

impl PgTaskRepository {
    async fn try_insert(&self, task: &Task) -> Result<(), Fail> {
        let mut tx = self.pool.begin().await.map_err(sql(task.id))?;
        let now = self.now();
        task_row::insert_task_unclassified(&mut tx, task, None)
            .await
            .map_err(sql(task.id))?;
        record(&mut tx, task.id, None, task.status, now, INSERTED).await?;
        tx.commit().await.map_err(sql(task.id))
    }

    async fn try_update(&self, t: &Task) -> Result<(), Fail> {
        let mut tx = self.pool.begin().await.map_err(sql(t.id))?;
        let now = self.now();
        let from = lock_status(&mut tx, t.id)
            .await?
            .ok_or_else(|| DatabaseError::not_found(ENTITY, t.id.to_string()))?;
        check_references(&mut tx, t).await?;
        let deps: &[Uuid] = t.dependencies.as_deref().unwrap_or(&[]);
        sqlx::query!(
            "UPDATE tasks SET
                 summary = $2, description = $3, agent_type = $4, priority = $5,
                 calculated_priority = $6, status = $7, dependencies = $8,
                 dependency_type = $9, dependency_depth = $10, input_data = $11,
                 result_data = $12, error_message = $13, retry_count = $14, max_retries = $15,
                 max_execution_timeout_seconds = $16, started_at = $17, completed_at = $18,
                 last_updated_at = $19, created_by = $20, parent_task_id = $21,
                 session_id = $22, source = $23, deadline = $24,
                 estimated_duration_seconds = $25, feature_branch = $26, task_branch = $27,
                 worktree_path = $28,
                 claim_key = CASE WHEN status = $7 AND priority = $5 AND dependency_depth = $10
                                  THEN claim_key END
             WHERE id = $1",
            t.id,
            t.summary,
            t.description,
            t.agent_type,
            i16::from(t.priority),
            t.calculated_priority,
            t.status.as_str(),
            t.dependencies.as_deref() as Option<&[Uuid]>,
            t.dependency_type.as_str(),
            i64::from(t.dependency_depth),
            t.input_data.as_ref().map(Json) as Option<Json<&serde_json::Value>>,
            t.result_data.as_ref().map(Json) as Option<Json<&serde_json::Value>>,
            t.error_message,
            i64::from(t.retry_count),
            i64::from(t.max_retries),
            i64::from(t.max_execution_timeout_seconds),
            t.started_at,
            t.completed_at,
            now,
            t.created_by,
            t.parent_task_id,
            t.session_id,
            t.source.as_str(),
            t.deadline,
            t.estimated_duration_seconds.map(i64::from),
            t.feature_branch,
            t.task_branch,
            t.worktree_path,
        )
        .execute(&mut *tx)
        .await
        .map_err(sql(t.id))?;
        // After the list is rewritten, so that the trigger on the edges finds nothing to drop.
        sqlx::query!(
            "DELETE FROM task_dependencies
             WHERE task_id = $1 AND depends_on_task_id <> ALL ($2::uuid[])",
            t.id,
            deps
        )
        .execute(&mut *tx)
        .await
        .map_err(sql(t.id))?;
        if !deps.is_empty() {
            sqlx::query!(
                "INSERT INTO task_dependencies (task_id, depends_on_task_id)
                 SELECT $1, d FROM unnest($2::uuid[]) AS d
                 ON CONFLICT DO NOTHING",
                t.id,
                deps
            )
            .execute(&mut *tx)
            .await
            .map_err(sql(t.id))?;
        }
        if from != t.status {
            record(&mut tx, t.id, Some(from), t.status, now, UPDATED).await?;
        }
        tx.commit().await.map_err(sql(t.id))
    }

    async fn try_delete(&self, id: Uuid) -> Result<(), Fail> {
        let deleted = sqlx::query!("DELETE FROM tasks WHERE id = $1", id)
            .execute(&self.pool)
            .await
            .map_err(sql(id))?;
        if deleted.rows_affected() == 0 {
            return Err(DatabaseError::not_found(ENTITY, id.to_string()).into());
        }
        Ok(())
    }

    async fn try_update_status(&self, id: Uuid, status: TaskStatus) -> Result<(), Fail> {
        let mut tx = self.pool.begin().await.map_err(sql(id))?;
        let now = self.now();
        let from = lock_status(&mut tx, id)
            .await?
            .ok_or_else(|| DatabaseError::not_found(ENTITY, id.to_string()))?;
        let started_at = (status == TaskStatus::Running).then_some(now);
        let completed_at = status.is_terminal().then_some(now);
        sqlx::query!(
            "UPDATE tasks SET
                 status = $2, last_updated_at = $3,
                 claim_key = CASE WHEN status = $2 THEN claim_key END,
                 started_at = COALESCE($4, started_at),
                 completed_at = COALESCE($5, completed_at)
             WHERE id = $1",
            id,
            status.as_str(),
            now,
            started_at,
            completed_at
        )
        .execute(&mut *tx)
        .await
        .map_err(sql(id))?;
        if from != status {
            record(&mut tx, id, Some(from), status, now, STATUS_SET).await?;
        }
        tx.commit().await.map_err(sql(id))
    }

    async fn try_insert_batch(&self, tasks: &[Task], order: &[(usize, bool)]) -> Result<(), Fail> {
        let first = tasks.first().map_or_else(Uuid::nil, |t| t.id);
        let mut tx = self.pool.begin().await.map_err(sql(first))?;
        let now = self.now();
        for &(i, deferred) in order {
            let task = &tasks[i];
            if deferred {
                let without_parent = Task {
                    parent_task_id: None,
                    ..task.clone()
                };
                task_row::insert_task_unclassified(&mut tx, &without_parent, None).await
            } else {
                task_row::insert_task_unclassified(&mut tx, task, None).await
            }
            .map_err(sql(task.id))?;
            record(&mut tx, task.id, None, task.status, now, INSERTED).await?;
        }
        for &(i, _) in order.iter().filter(|(_, deferred)| *deferred) {
            let task = &tasks[i];
            sqlx::query!(
                "UPDATE tasks SET parent_task_id = $2 WHERE id = $1",
                task.id,
                task.parent_task_id
            )
            .execute(&mut *tx)
            .await
            .map_err(sql(task.id))?;
        }
        tx.commit().await.map_err(sql(first))
    }
}

impl PgTaskRepository {
    /// The tasks whose id `ids_sql` selects, given `ids` as `$1` and `limit`, when there is
    /// one, as `$2`.
    async fn read_by_ids(
        &self,
        ids_sql: &str,
        ids: &[Uuid],
        limit: Option<usize>,
    ) -> Result<Vec<Task>, DatabaseError> {
        if ids.is_empty() || limit == Some(0) {
            return Ok(Vec::new());
        }
        let sql = format!("SELECT {TASK_COLUMNS} FROM tasks WHERE id IN ({ids_sql})");
        let mut query = sqlx::query_as::<_, TaskRow>(&sql).bind(ids);
        if let Some(limit) = limit {
            query = query.bind(i64::try_from(limit).unwrap_or(i64::MAX));
        }
        let rows = query.fetch_all(&self.pool).await.map_err(on(ENTITY, ""))?;
        tasks_from_rows(rows)
    }
}

#[async_trait]
impl TaskRepository for PgTaskRepository {
    async fn insert(&self, task: Task) -> Result<(), DatabaseError> {
        let task = prepare(task)?;
        match retrying(|| self.try_insert(&task)).await {
            Ok(()) => Ok(()),
            Err(e) => Err(named_reference(&self.pool, e, &[task], &HashSet::new()).await),
        }
    }

    async fn get(&self, id: Uuid) -> Result<Option<Task>, DatabaseError> {
        let mut conn = self
            .pool
            .acquire()
            .await
            .map_err(on(ENTITY, &id.to_string()))?;
        task_row::get_task(&mut conn, id).await
    }

    async fn update(&self, task: Task) -> Result<(), DatabaseError> {
        let task = prepare(task)?;
        match retrying(|| self.try_update(&task)).await {
            Ok(()) => Ok(()),
            Err(e) => Err(named_reference(&self.pool, e, &[task], &HashSet::new()).await),
        }
    }

    async fn delete(&self, id: Uuid) -> Result<(), DatabaseError> {
        retrying(|| self.try_delete(id)).await
    }

    async fn list(&self, filters: TaskFilters) -> Result<Vec<Task>, DatabaseError> {
        check_filters(&filters)?;
        let mut qb = QueryBuilder::new(format!("SELECT {TASK_COLUMNS} FROM tasks WHERE true"));
        push_filters(&mut qb, &filters);
        // No nullable column: the order is the same as SQLite's.
        qb.push(" ORDER BY calculated_priority DESC, submitted_at ASC, id ASC LIMIT ")
            // LIMIT NULL is no limit.
            .push_bind(filters.limit)
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
        let mut qb = QueryBuilder::new("SELECT COUNT(*) FROM tasks WHERE true");
        push_filters(&mut qb, &filters);
        qb.build_query_scalar::<i64>()
            .fetch_one(&self.pool)
            .await
            .map_err(on(ENTITY, ""))
    }

    async fn get_ready_tasks(&self, limit: usize) -> Result<Vec<Task>, DatabaseError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        // Served by idx_tasks_ready, column for column.
        let rows = sqlx::query_as!(
            TaskRow,
            r#"SELECT id, summary, description, agent_type, priority, calculated_priority,
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
               LIMIT $1"#,
            limit
        )
        .fetch_all(&self.pool)
        .await
        .map_err(on(ENTITY, ""))?;
        tasks_from_rows(rows)
    }

    async fn update_status(&self, id: Uuid, status: TaskStatus) -> Result<(), DatabaseError> {
        retrying(|| self.try_update_status(id, status)).await
    }

    async fn get_dependents(&self, id: Uuid) -> Result<Vec<Task>, DatabaseError> {
        // Through the edge index idx_task_dependencies_depends_on.
        let rows = sqlx::query_as!(
            TaskRow,
            r#"SELECT t.id, t.summary, t.description, t.agent_type, t.priority,
                      t.calculated_priority, t.status, t.dependencies, t.dependency_type,
                      t.dependency_depth,
                      t.input_data AS "input_data: Json<serde_json::Value>",
                      t.result_data AS "result_data: Json<serde_json::Value>",
                      t.error_message, t.retry_count, t.max_retries,
                      t.max_execution_timeout_seconds, t.submitted_at, t.started_at,
                      t.completed_at, t.last_updated_at, t.created_by, t.parent_task_id,
                      t.session_id, t.source, t.deadline, t.estimated_duration_seconds,
                      t.feature_branch, t.task_branch, t.worktree_path
               FROM task_dependencies d JOIN tasks t ON t.id = d.task_id
               WHERE d.depends_on_task_id = $1
               ORDER BY t.calculated_priority DESC, t.submitted_at ASC, t.id ASC"#,
            id
        )
        .fetch_all(&self.pool)
        .await
        .map_err(on(ENTITY, &id.to_string()))?;
        tasks_from_rows(rows)
    }

    async fn get_many(&self, ids: &[Uuid]) -> Result<Vec<Task>, DatabaseError> {
        self.read_by_ids("SELECT unnest($1::uuid[])", ids, None)
            .await
    }

    async fn get_dependents_of_many(
        &self,
        ids: &[Uuid],
        limit: usize,
    ) -> Result<Vec<Task>, DatabaseError> {
        self.read_by_ids(
            "SELECT task_id FROM task_dependencies WHERE depends_on_task_id = ANY($1) LIMIT $2",
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
        let mut qb = QueryBuilder::new(format!("SELECT {TASK_COLUMNS} FROM tasks WHERE true"));
        if let Some(ids) = search_candidates(&self.pool, &query).await? {
            // The few tasks the trigram index names, each tested against every condition
            // below, the summary's among them.
            qb.push(" AND id = ANY(").push_bind(ids).push(")");
        }
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
        since: DateTime<Utc>,
    ) -> Result<Vec<FinishedMinute>, DatabaseError> {
        timestamp::check("since", &since)?;
        let rows: Vec<(DateTime<Utc>, String, i64)> = sqlx::query_as(
            "SELECT date_trunc('minute', completed_at) AS minute, status, COUNT(*) FROM tasks
             WHERE completed_at >= $1 GROUP BY 1, 2 ORDER BY 1",
        )
        .bind(timestamp::truncate_to_micros(since))
        .fetch_all(&self.pool)
        .await
        .map_err(on(ENTITY, ""))?;
        Ok(abathur_core::ports::minutes_from_counts(rows))
    }

    async fn insert_batch(&self, tasks: Vec<Task>) -> Result<(), DatabaseError> {
        if tasks.is_empty() {
            return Ok(());
        }
        let tasks = tasks
            .into_iter()
            .map(prepare)
            .collect::<Result<Vec<_>, _>>()?;
        let mut ids = HashSet::with_capacity(tasks.len());
        for t in &tasks {
            if !ids.insert(t.id) {
                return Err(DatabaseError::validation(
                    "id",
                    format!("task {} appears twice in the batch", t.id),
                ));
            }
        }
        check_batch_cycles(&tasks)?;
        let order = insertion_order(&tasks);
        match retrying(|| self.try_insert_batch(&tasks, &order)).await {
            Ok(()) => Ok(()),
            Err(e) => Err(named_reference(&self.pool, e, &tasks, &ids).await),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(name: &str) -> Task {
        Task::new(name, name, "worker", Utc::now())
    }

    #[test]
    fn a_batch_goes_in_after_what_it_refers_to() {
        let mut a = task("a");
        let mut b = task("b");
        let c = task("c");
        a.dependencies = Some(vec![c.id]);
        b.parent_task_id = Some(a.id);
        let order = insertion_order(&[a, b, c]);
        assert_eq!(order, vec![(2, false), (0, false), (1, false)]);
    }

    #[test]
    fn a_parent_in_a_loop_with_dependencies_is_deferred() {
        let mut a = task("a");
        let mut b = task("b");
        a.parent_task_id = Some(b.id);
        b.dependencies = Some(vec![a.id]);
        let order = insertion_order(&[a, b]);
        assert_eq!(order, vec![(0, true), (1, false)]);
    }

    #[test]
    fn members_that_depend_on_each_other_are_left_out() {
        let mut a = task("a");
        let mut b = task("b");
        a.dependencies = Some(vec![b.id]);
        b.dependencies = Some(vec![a.id]);
        let batch = [a, b, task("free")];
        assert_eq!(insertion_order(&batch), vec![(2, false)]);
        assert!(check_batch_cycles(&batch).is_err());
    }

    #[test]
    fn a_nul_anywhere_in_json_is_refused() {
        let value = serde_json::json!({"a": [1, {"b": "x\u{0}y"}]});
        assert_eq!(
            check_json_nul("input_data", &value).unwrap_err().field,
            "input_data"
        );
        let key = serde_json::json!({"k\u{0}": 1});
        assert!(check_json_nul("result_data", &key).is_err());
        assert!(check_json_nul("input_data", &serde_json::json!({"ok": "fine"})).is_ok());
    }
}
