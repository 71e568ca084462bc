//! [`TaskRepository`] on SQLite: the `tasks` table and its `task_dependencies` edges, which are
//! always written in the same transaction as `tasks.dependencies`.

use std::collections::HashSet;
use std::sync::Arc;

use abathur_core::clock::{Clock, SystemClock};
use abathur_core::error::DatabaseError;
use abathur_core::models::{Task, TaskStatus, MAX_PRIORITY};
use abathur_core::ports::{TaskFilters, TaskRepository};
use abathur_core::timestamp;
use async_trait::async_trait;
use sqlx::{QueryBuilder, Sqlite, SqliteConnection, SqlitePool};
use uuid::Uuid;

use super::connection::begin_write;
use super::errors::{classify, on, raw_on};
use super::row::{json_text, opt_timestamp_text, RowContext};
use rusqlite::OptionalExtension;

const ENTITY: &str = "task";

/// The columns of a task, in [`TaskRow`]'s order, for dynamic queries.
const TASK_COLUMNS: &str = "id, summary, description, agent_type, priority, calculated_priority, \
     status, dependencies, dependency_type, dependency_depth, input_data, result_data, \
     error_message, retry_count, max_retries, max_execution_timeout_seconds, submitted_at, \
     started_at, completed_at, last_updated_at, created_by, parent_task_id, session_id, source, \
     deadline, estimated_duration_seconds, feature_branch, task_branch, worktree_path";

/// SQLite's default limit on bound variables in one statement (SQLITE_MAX_VARIABLE_NUMBER).
const MAX_VARIABLES: usize = 32_766;
/// Bound values per task row in a multi-row insert.
const TASK_BINDS: usize = 29;

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

/// A task as stored: every column in its SQLite type.
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

pub(crate) fn tasks_from_rows(rows: Vec<TaskRow>) -> Result<Vec<Task>, DatabaseError> {
    rows.into_iter().map(Task::try_from).collect()
}

/// The task with this id, read on `executor` (a pool, or a transaction's connection).
pub(crate) async fn load_task<'e>(
    executor: impl sqlx::SqliteExecutor<'e>,
    id: &str,
) -> Result<Option<Task>, DatabaseError> {
    let row = sqlx::query_as!(
        TaskRow,
        r#"SELECT id, summary, description, agent_type, priority, calculated_priority,
               status, dependencies, dependency_type, dependency_depth, input_data, result_data,
               error_message, retry_count, max_retries, max_execution_timeout_seconds,
               submitted_at, started_at, completed_at, last_updated_at, created_by,
               parent_task_id, session_id, source, deadline, estimated_duration_seconds,
               feature_branch, task_branch, worktree_path
           FROM tasks WHERE id = ?"#,
        id
    )
    .fetch_optional(executor)
    .await
    .map_err(on(ENTITY, id))?;
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

/// The first id `task` refers to that is neither stored nor in `pending` (the other members of
/// a batch), with what it is. Runs inside the write's transaction, so the answer is current.
pub(crate) async fn first_missing_reference(
    conn: &mut SqliteConnection,
    task: &TaskParams,
    pending: &HashSet<&str>,
) -> Result<Option<(&'static str, String)>, sqlx::Error> {
    let parent = task.parent_task_id.iter().map(|id| ("parent task", id));
    let session = task.session_id.iter().map(|id| ("session", id));
    let deps = task.dependency_ids.iter().map(|id| ("dependency", id));
    for (reference, id) in parent.chain(session).chain(deps) {
        if pending.contains(id.as_str()) {
            continue;
        }
        let exists = if reference == "session" {
            sqlx::query_scalar!("SELECT EXISTS (SELECT 1 FROM sessions WHERE id = ?)", id)
                .fetch_one(&mut *conn)
                .await?
        } else {
            sqlx::query_scalar!("SELECT EXISTS (SELECT 1 FROM tasks WHERE id = ?)", id)
                .fetch_one(&mut *conn)
                .await?
        };
        if exists == 0 {
            return Ok(Some((reference, id.clone())));
        }
    }
    Ok(None)
}

pub(crate) fn missing(reference: &'static str, id: String) -> DatabaseError {
    DatabaseError::ForeignKeyViolation {
        entity: ENTITY,
        reference,
        id: Some(id),
    }
}

/// Inserts a task row and its dependency edges, on a connection's handle.
pub(crate) fn insert_task_raw(
    raw: &rusqlite::Connection,
    t: &TaskParams,
) -> Result<(), DatabaseError> {
    raw.prepare_cached(
        "INSERT INTO tasks (
            id, summary, description, agent_type, priority, calculated_priority,
            status, dependencies, dependency_type, dependency_depth,
            input_data, result_data, error_message, retry_count, max_retries,
            max_execution_timeout_seconds, submitted_at, started_at, completed_at,
            last_updated_at, created_by, parent_task_id, session_id, source,
            deadline, estimated_duration_seconds, feature_branch, task_branch, worktree_path
        ) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17,
                  ?18, ?19, ?20, ?21, ?22, ?23, ?24, ?25, ?26, ?27, ?28, ?29)",
    )
    .and_then(|mut insert| {
        insert.execute(rusqlite::params![
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
    if let Some(deps) = &t.dependencies {
        // `WHERE true` lets SQLite parse ON CONFLICT after a SELECT.
        raw.prepare_cached(
            "INSERT INTO task_dependencies (task_id, depends_on_task_id)
             SELECT ?1, value FROM json_each(?2) WHERE true
             ON CONFLICT DO NOTHING",
        )
        .and_then(|mut edges| edges.execute(rusqlite::params![t.id, deps]))
        .map_err(raw_on(ENTITY, &t.id))?;
    }
    Ok(())
}

/// The first reference of `task` (parent, session, dependency) that names no stored row and no
/// member of `pending`, on a connection's handle.
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
            "SELECT EXISTS (SELECT 1 FROM sessions WHERE id = ?1)"
        } else {
            "SELECT EXISTS (SELECT 1 FROM tasks WHERE id = ?1)"
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

/// The task with this id, on a connection's handle.
pub(crate) fn load_task_raw(
    raw: &rusqlite::Connection,
    id: &str,
) -> Result<Option<Task>, DatabaseError> {
    let sql = format!("SELECT {TASK_COLUMNS} FROM tasks WHERE id = ?1");
    let row = raw
        .prepare_cached(&sql)
        .and_then(|mut q| q.query_row([id], TaskRow::from_raw).optional())
        .map_err(raw_on(ENTITY, id))?;
    row.map(Task::try_from).transpose()
}

impl TaskRow {
    /// A row of `SELECT {TASK_COLUMNS}`, read on a connection's handle.
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

async fn insert_edges(conn: &mut SqliteConnection, t: &TaskParams) -> Result<(), sqlx::Error> {
    if let Some(deps) = &t.dependencies {
        // `WHERE true` lets SQLite parse ON CONFLICT after a SELECT.
        sqlx::query!(
            "INSERT INTO task_dependencies (task_id, depends_on_task_id)
             SELECT ?, value FROM json_each(?) WHERE true
             ON CONFLICT DO NOTHING",
            t.id,
            deps
        )
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

/// Maps a write error: a foreign-key failure is diagnosed to name the missing reference.
async fn write_error(
    conn: &mut SqliteConnection,
    err: DatabaseError,
    t: &TaskParams,
) -> DatabaseError {
    match err {
        DatabaseError::ForeignKeyViolation { .. } => {
            match first_missing_reference(conn, t, &HashSet::new()).await {
                Ok(Some((reference, id))) => missing(reference, id),
                Ok(None) => DatabaseError::ForeignKeyViolation {
                    entity: ENTITY,
                    reference: "parent task, session or dependency",
                    id: None,
                },
                Err(e) => classify(e, ENTITY, &t.id),
            }
        }
        other => other,
    }
}

fn check_filters(filters: &TaskFilters) -> Result<(), DatabaseError> {
    if let Some(limit) = filters.limit {
        // A negative limit is below the range like zero is: the same message for both.
        abathur_core::limits::check_page("limit", u64::try_from(limit).unwrap_or(0))?;
    }
    if filters.offset.is_some_and(|o| o < 0) {
        return Err(DatabaseError::validation("offset", "must not be negative"));
    }
    if let (Some(min), Some(max)) = (filters.min_priority, filters.max_priority) {
        if min > max {
            return Err(DatabaseError::validation(
                "min_priority",
                format!("{min} is above the maximum priority {max}"),
            ));
        }
    }
    for (field, ts) in [
        ("submitted_after", &filters.submitted_after),
        ("submitted_before", &filters.submitted_before),
    ] {
        if let Some(ts) = ts {
            timestamp::check(field, ts)?;
        }
    }
    Ok(())
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

#[async_trait]
impl TaskRepository for TaskRepositoryImpl {
    async fn insert(&self, task: Task) -> Result<(), DatabaseError> {
        let params = TaskParams::new(task)?;
        crate::writer::write(&self.pool, move |raw| match insert_task_raw(raw, &params) {
            Err(DatabaseError::ForeignKeyViolation { .. }) => Err(
                match first_missing_reference_raw(raw, &params, &HashSet::new())? {
                    Some((reference, id)) => missing(reference, id),
                    None => DatabaseError::ForeignKeyViolation {
                        entity: ENTITY,
                        reference: "parent task, session or dependency",
                        id: None,
                    },
                },
            ),
            other => other,
        })
        .await
    }

    async fn get(&self, id: Uuid) -> Result<Option<Task>, DatabaseError> {
        load_task(&self.pool, &id.to_string()).await
    }

    async fn update(&self, task: Task) -> Result<(), DatabaseError> {
        let mut t = TaskParams::new(task)?;
        t.last_updated_at = timestamp::format(&self.clock.now());
        let mut tx = begin_write(&self.pool).await?;
        let result = async {
            let updated = sqlx::query!(
                r#"UPDATE tasks SET
                    summary = ?, description = ?, agent_type = ?, priority = ?,
                    calculated_priority = ?, status = ?, dependencies = ?, dependency_type = ?,
                    dependency_depth = ?, input_data = ?, result_data = ?, error_message = ?,
                    retry_count = ?, max_retries = ?, max_execution_timeout_seconds = ?,
                    started_at = ?, completed_at = ?, last_updated_at = ?, created_by = ?,
                    parent_task_id = ?, session_id = ?, source = ?, deadline = ?,
                    estimated_duration_seconds = ?, feature_branch = ?, task_branch = ?,
                    worktree_path = ?
                WHERE id = ?"#,
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
                t.id,
            )
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if updated == 0 {
                return Ok(false);
            }
            let deps = t.dependencies.as_deref().unwrap_or("[]");
            sqlx::query!(
                "DELETE FROM task_dependencies
                 WHERE task_id = ? AND depends_on_task_id NOT IN (SELECT value FROM json_each(?))",
                t.id,
                deps
            )
            .execute(&mut *tx)
            .await?;
            insert_edges(&mut tx, &t).await?;
            Ok(true)
        }
        .await;
        match result {
            Ok(true) => tx.commit().await.map_err(on(ENTITY, &t.id)),
            Ok(false) => Err(DatabaseError::not_found(ENTITY, &t.id)),
            Err(e) => Err(write_error(&mut tx, classify(e, ENTITY, &t.id), &t).await),
        }
    }

    async fn delete(&self, id: Uuid) -> Result<(), DatabaseError> {
        let id = id.to_string();
        let now = timestamp::format(&self.clock.now());
        let mut tx = begin_write(&self.pool).await?;
        // The edges into this task go by ON DELETE CASCADE; its dependents' JSON lists must
        // lose it in the same transaction, so the two never disagree.
        sqlx::query!(
            "UPDATE tasks SET
                dependencies = (SELECT json_group_array(value) FROM json_each(tasks.dependencies)
                                WHERE value <> ?),
                last_updated_at = ?
             WHERE id IN (SELECT task_id FROM task_dependencies WHERE depends_on_task_id = ?)",
            id,
            now,
            id
        )
        .execute(&mut *tx)
        .await
        .map_err(on(ENTITY, &id))?;
        let deleted = sqlx::query!("DELETE FROM tasks WHERE id = ?", id)
            .execute(&mut *tx)
            .await
            .map_err(on(ENTITY, &id))?
            .rows_affected();
        if deleted == 0 {
            return Err(DatabaseError::not_found(ENTITY, id));
        }
        tx.commit().await.map_err(on(ENTITY, &id))
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
        let now = timestamp::format(&self.clock.now());
        let started_at = (status == TaskStatus::Running).then(|| now.clone());
        let completed_at = status.is_terminal().then(|| now.clone());
        let status = status.as_str();
        let updated = sqlx::query!(
            "UPDATE tasks SET
                status = ?,
                last_updated_at = ?,
                started_at = COALESCE(?, started_at),
                completed_at = COALESCE(?, completed_at)
             WHERE id = ?",
            status,
            now,
            started_at,
            completed_at,
            id
        )
        .execute(&self.pool)
        .await
        .map_err(on(ENTITY, &id))?
        .rows_affected();
        if updated == 0 {
            return Err(DatabaseError::not_found(ENTITY, id));
        }
        Ok(())
    }

    async fn get_dependents(&self, id: Uuid) -> Result<Vec<Task>, DatabaseError> {
        let id = id.to_string();
        let rows = sqlx::query_file_as!(TaskRow, "src/queries/task_dependents.sql", id)
            .fetch_all(&self.pool)
            .await
            .map_err(on(ENTITY, &id))?;
        tasks_from_rows(rows)
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
        let mut tx = begin_write(&self.pool).await?;
        // Members of the batch may refer to each other in any order: check foreign keys at
        // commit, not per statement. The pragma resets itself when the transaction ends.
        sqlx::query!("PRAGMA defer_foreign_keys = ON")
            .execute(&mut *tx)
            .await
            .map_err(on(ENTITY, ""))?;
        for chunk in params.chunks(MAX_VARIABLES / TASK_BINDS) {
            let mut qb =
                QueryBuilder::<Sqlite>::new(format!("INSERT INTO tasks ({TASK_COLUMNS}) "));
            qb.push_values(chunk, |mut b, t| {
                b.push_bind(&t.id)
                    .push_bind(&t.summary)
                    .push_bind(&t.description)
                    .push_bind(&t.agent_type)
                    .push_bind(t.priority)
                    .push_bind(t.calculated_priority)
                    .push_bind(t.status)
                    .push_bind(&t.dependencies)
                    .push_bind(t.dependency_type)
                    .push_bind(t.dependency_depth)
                    .push_bind(&t.input_data)
                    .push_bind(&t.result_data)
                    .push_bind(&t.error_message)
                    .push_bind(t.retry_count)
                    .push_bind(t.max_retries)
                    .push_bind(t.max_execution_timeout_seconds)
                    .push_bind(&t.submitted_at)
                    .push_bind(&t.started_at)
                    .push_bind(&t.completed_at)
                    .push_bind(&t.last_updated_at)
                    .push_bind(&t.created_by)
                    .push_bind(&t.parent_task_id)
                    .push_bind(&t.session_id)
                    .push_bind(t.source)
                    .push_bind(&t.deadline)
                    .push_bind(t.estimated_duration_seconds)
                    .push_bind(&t.feature_branch)
                    .push_bind(&t.task_branch)
                    .push_bind(&t.worktree_path);
            });
            if let Err(e) = qb.build().execute(&mut *tx).await {
                let id = match duplicate_in(&mut tx, chunk).await {
                    Ok(id) => id.unwrap_or_default(),
                    Err(lookup) => return Err(classify(lookup, ENTITY, "")),
                };
                return Err(classify(e, ENTITY, &id));
            }
        }
        for p in &params {
            insert_edges(&mut tx, p).await.map_err(on(ENTITY, &p.id))?;
        }
        // Name the first missing reference before commit, so the error says which it is.
        for p in &params {
            if let Some((reference, id)) = first_missing_reference(&mut tx, p, &ids)
                .await
                .map_err(on(ENTITY, &p.id))?
            {
                return Err(missing(reference, id));
            }
        }
        tx.commit().await.map_err(on(ENTITY, ""))
    }
}

/// The id of a chunk member that is already stored, to name in a uniqueness error.
async fn duplicate_in(
    conn: &mut SqliteConnection,
    chunk: &[TaskParams],
) -> Result<Option<String>, sqlx::Error> {
    for p in chunk {
        let exists = sqlx::query_scalar!("SELECT EXISTS (SELECT 1 FROM tasks WHERE id = ?)", p.id)
            .fetch_one(&mut *conn)
            .await?;
        if exists != 0 {
            return Ok(Some(p.id.clone()));
        }
    }
    Ok(None)
}
