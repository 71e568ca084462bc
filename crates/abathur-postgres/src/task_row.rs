//! A task as stored: the one place that writes a whole task row with its dependency edges, and
//! the one that reads one back. The queue store and the task repository both go through here,
//! so a task has one stored form.

use abathur_core::error::DatabaseError;
use abathur_core::models::{Task, MAX_PRIORITY};
use chrono::{DateTime, Utc};
use sqlx::types::Json;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::errors::on;
use crate::row::RowContext;

/// A `tasks` row, column for column.
#[derive(Debug, sqlx::FromRow)]
pub(crate) struct TaskRow {
    pub id: Uuid,
    pub summary: String,
    pub description: String,
    pub agent_type: String,
    pub priority: i16,
    pub calculated_priority: f64,
    pub status: String,
    pub dependencies: Option<Vec<Uuid>>,
    pub dependency_type: String,
    pub dependency_depth: i64,
    pub input_data: Option<Json<serde_json::Value>>,
    pub result_data: Option<Json<serde_json::Value>>,
    pub error_message: Option<String>,
    pub retry_count: i64,
    pub max_retries: i64,
    pub max_execution_timeout_seconds: i64,
    pub submitted_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub completed_at: Option<DateTime<Utc>>,
    pub last_updated_at: DateTime<Utc>,
    pub created_by: Option<String>,
    pub parent_task_id: Option<Uuid>,
    pub session_id: Option<Uuid>,
    pub source: String,
    pub deadline: Option<DateTime<Utc>>,
    pub estimated_duration_seconds: Option<i64>,
    pub feature_branch: Option<String>,
    pub task_branch: Option<String>,
    pub worktree_path: Option<String>,
}

/// Every column of a task, in [`TaskRow`]'s order: for `SELECT` lists built at run time
/// (`QueryBuilder`), which must read the same columns the macros do.
pub(crate) const TASK_COLUMNS: &str = "id, summary, description, agent_type, priority, \
     calculated_priority, status, dependencies, dependency_type, dependency_depth, input_data, \
     result_data, error_message, retry_count, max_retries, max_execution_timeout_seconds, \
     submitted_at, started_at, completed_at, last_updated_at, created_by, parent_task_id, \
     session_id, source, deadline, estimated_duration_seconds, feature_branch, task_branch, \
     worktree_path";

impl TryFrom<TaskRow> for Task {
    type Error = DatabaseError;

    fn try_from(r: TaskRow) -> Result<Self, Self::Error> {
        let id = r.id.to_string();
        let cx = RowContext {
            table: "tasks",
            id: &id,
        };
        let priority: u8 = cx.int("priority", i64::from(r.priority))?;
        if priority > MAX_PRIORITY {
            return Err(cx.corrupt("priority", format!("{priority} is above {MAX_PRIORITY}")));
        }
        Ok(Task {
            id: r.id,
            summary: r.summary,
            description: r.description,
            agent_type: r.agent_type,
            priority,
            calculated_priority: r.calculated_priority,
            status: cx.parse("status", &r.status)?,
            dependencies: r.dependencies,
            dependency_type: cx.parse("dependency_type", &r.dependency_type)?,
            dependency_depth: cx.int("dependency_depth", r.dependency_depth)?,
            input_data: r.input_data.map(|j| j.0),
            result_data: r.result_data.map(|j| j.0),
            error_message: r.error_message,
            retry_count: cx.int("retry_count", r.retry_count)?,
            max_retries: cx.int("max_retries", r.max_retries)?,
            max_execution_timeout_seconds: cx.int(
                "max_execution_timeout_seconds",
                r.max_execution_timeout_seconds,
            )?,
            submitted_at: r.submitted_at,
            started_at: r.started_at,
            completed_at: r.completed_at,
            last_updated_at: r.last_updated_at,
            created_by: r.created_by,
            parent_task_id: r.parent_task_id,
            session_id: r.session_id,
            source: cx.parse("source", &r.source)?,
            deadline: r.deadline,
            estimated_duration_seconds: cx
                .opt_int("estimated_duration_seconds", r.estimated_duration_seconds)?,
            feature_branch: r.feature_branch,
            task_branch: r.task_branch,
            worktree_path: r.worktree_path,
        })
    }
}

/// The task with this id, if any.
pub(crate) async fn get_task(
    conn: &mut PgConnection,
    id: Uuid,
) -> Result<Option<Task>, DatabaseError> {
    let row = sqlx::query_as!(
        TaskRow,
        r#"SELECT id, summary, description, agent_type, priority, calculated_priority, status,
                  dependencies, dependency_type, dependency_depth,
                  input_data AS "input_data: Json<serde_json::Value>",
                  result_data AS "result_data: Json<serde_json::Value>",
                  error_message, retry_count, max_retries, max_execution_timeout_seconds,
                  submitted_at, started_at, completed_at, last_updated_at, created_by,
                  parent_task_id, session_id, source, deadline, estimated_duration_seconds,
                  feature_branch, task_branch, worktree_path
           FROM tasks WHERE id = $1"#,
        id
    )
    .fetch_optional(&mut *conn)
    .await
    .map_err(on("task", &id.to_string()))?;
    row.map(Task::try_from).transpose()
}

/// Stores `task` (with `claim_key` when it is stored ready through the queue) and one
/// dependency edge per id of its list, in the caller's transaction.
///
/// # Errors
/// `UniqueViolation` for an id already stored; `ForeignKeyViolation` for a parent, session or
/// dependency that does not exist; the schema's checks as `CheckViolation`.
// reason: the queue store calls it; the task repository retries, so it calls
// `insert_task_unclassified`.
#[allow(dead_code)]
pub(crate) async fn insert_task(
    conn: &mut PgConnection,
    task: &Task,
    claim_key: Option<f64>,
) -> Result<(), DatabaseError> {
    insert_task_unclassified(conn, task, claim_key)
        .await
        .map_err(on("task", &task.id.to_string()))
}

/// [`insert_task`], with the driver's error as it came, for a caller that retries the whole
/// transaction on a serialization failure or deadlock ([`crate::errors::is_retryable`]).
pub(crate) async fn insert_task_unclassified(
    conn: &mut PgConnection,
    task: &Task,
    claim_key: Option<f64>,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        r#"INSERT INTO tasks (id, summary, description, agent_type, priority, calculated_priority,
               status, dependencies, dependency_type, dependency_depth, input_data, result_data,
               error_message, retry_count, max_retries, max_execution_timeout_seconds,
               submitted_at, started_at, completed_at, last_updated_at, created_by,
               parent_task_id, session_id, source, deadline, estimated_duration_seconds,
               feature_branch, task_branch, worktree_path, claim_key)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17,
                   $18, $19, $20, $21, $22, $23, $24, $25, $26, $27, $28, $29, $30)"#,
        task.id,
        task.summary,
        task.description,
        task.agent_type,
        i16::from(task.priority),
        task.calculated_priority,
        task.status.as_str(),
        task.dependencies.as_deref() as Option<&[Uuid]>,
        task.dependency_type.as_str(),
        i64::from(task.dependency_depth),
        task.input_data.as_ref().map(Json) as Option<Json<&serde_json::Value>>,
        task.result_data.as_ref().map(Json) as Option<Json<&serde_json::Value>>,
        task.error_message,
        i64::from(task.retry_count),
        i64::from(task.max_retries),
        i64::from(task.max_execution_timeout_seconds),
        task.submitted_at,
        task.started_at,
        task.completed_at,
        task.last_updated_at,
        task.created_by,
        task.parent_task_id,
        task.session_id,
        task.source.as_str(),
        task.deadline,
        task.estimated_duration_seconds.map(i64::from),
        task.feature_branch,
        task.task_branch,
        task.worktree_path,
        claim_key,
    )
    .execute(&mut *conn)
    .await?;
    if let Some(dependencies) = task.dependencies.as_deref().filter(|d| !d.is_empty()) {
        sqlx::query!(
            "INSERT INTO task_dependencies (task_id, depends_on_task_id)
             SELECT $1, d FROM unnest($2::uuid[]) AS d
             ON CONFLICT DO NOTHING",
            task.id,
            dependencies
        )
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}
