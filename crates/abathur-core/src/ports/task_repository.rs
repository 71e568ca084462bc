//! Storage of tasks and of the dependency edges between them.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::error::DatabaseError;
use crate::models::{Task, TaskSource, TaskStatus};

/// Which tasks [`TaskRepository::list`] and [`TaskRepository::count`] return. Every field left
/// `None` matches everything. Results are ordered by calculated priority (highest first), then
/// submission time (oldest first), then id.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TaskFilters {
    pub status: Option<TaskStatus>,
    pub agent_type: Option<String>,
    pub feature_branch: Option<String>,
    pub session_id: Option<Uuid>,
    /// At most this many tasks; must not be negative. Ignored by `count`.
    pub limit: Option<i64>,
    pub source: Option<TaskSource>,
    pub parent_task_id: Option<Uuid>,
    /// Base priority at least this.
    pub min_priority: Option<u8>,
    /// Base priority at most this.
    pub max_priority: Option<u8>,
    /// Submitted at or after this instant.
    pub submitted_after: Option<DateTime<Utc>>,
    /// Submitted strictly before this instant.
    pub submitted_before: Option<DateTime<Utc>>,
    /// Skip this many tasks first; must not be negative. Ignored by `count`.
    pub offset: Option<i64>,
}

/// Stores tasks. This is the low-level store: it keeps rows and dependency edges consistent but
/// does not decide which status changes are legal; the queue service does. It still records
/// every status it gives a task in the task's history (`QueueStore::history`), with the actor
/// `repository`, in the same transaction: no status change escapes the history.
#[async_trait]
pub trait TaskRepository: Send + Sync {
    /// Stores a new task, with one dependency edge per entry of `task.dependencies`, in one
    /// transaction. Its history starts with its status (reason `inserted`).
    ///
    /// # Errors
    /// - `Validation` when [`Task::validate`] rejects the task; nothing is written.
    /// - `UniqueViolation` when a task with this id exists.
    /// - `ForeignKeyViolation` when the parent task, the session or a dependency does not
    ///   exist, naming which.
    async fn insert(&self, task: Task) -> Result<(), DatabaseError>;

    /// The task with this id, or `None`.
    ///
    /// # Errors
    /// `CorruptRow` when the stored row does not parse.
    async fn get(&self, id: Uuid) -> Result<Option<Task>, DatabaseError>;

    /// Replaces every field of a stored task but `submitted_at`, which never changes, and
    /// `last_updated_at`, which becomes now. Dependency edges follow `task.dependencies` in the
    /// same transaction. A new status is added to the history (reason `updated`).
    ///
    /// # Errors
    /// - `NotFound` when no task has this id.
    /// - `Validation` and `ForeignKeyViolation` as for [`TaskRepository::insert`].
    /// - `Validation` on `dependencies` when a new dependency already depends on this task,
    ///   directly or through others: the change would make a cycle.
    ///
    /// Nothing is written when it fails.
    async fn update(&self, task: Task) -> Result<(), DatabaseError>;

    /// Deletes a task. Its dependency edges and its history go with it, and it is removed from
    /// its dependents' `dependencies`; its children keep existing with no parent.
    ///
    /// # Errors
    /// `NotFound` when no task has this id.
    async fn delete(&self, id: Uuid) -> Result<(), DatabaseError>;

    /// The tasks that match `filters`, in the order described on [`TaskFilters`].
    ///
    /// # Errors
    /// `Validation` for a limit outside 1 to [`crate::limits::MAX_PAGE`], a negative offset, or a minimum priority above the maximum;
    /// `CorruptRow` when a stored row does not parse.
    async fn list(&self, filters: TaskFilters) -> Result<Vec<Task>, DatabaseError>;

    /// How many tasks match `filters` (its limit and offset are ignored).
    ///
    /// # Errors
    /// `Validation` as for [`TaskRepository::list`].
    async fn count(&self, filters: TaskFilters) -> Result<i64, DatabaseError>;

    /// Up to `limit` ready tasks, most urgent first.
    ///
    /// # Errors
    /// `CorruptRow` when a stored row does not parse.
    async fn get_ready_tasks(&self, limit: usize) -> Result<Vec<Task>, DatabaseError>;

    /// Sets a task's status and `last_updated_at`; also `started_at` when the status is
    /// running, and `completed_at` when it is completed, failed or cancelled. A new status is
    /// added to the history (reason `status set`).
    ///
    /// # Errors
    /// `NotFound` when no task has this id.
    async fn update_status(&self, id: Uuid, status: TaskStatus) -> Result<(), DatabaseError>;

    /// The tasks that list `id` among their dependencies.
    ///
    /// # Errors
    /// `CorruptRow` when a stored row does not parse.
    async fn get_dependents(&self, id: Uuid) -> Result<Vec<Task>, DatabaseError>;

    /// The tasks whose parent is `parent_id`.
    ///
    /// # Errors
    /// `CorruptRow` when a stored row does not parse.
    async fn get_by_parent(&self, parent_id: Uuid) -> Result<Vec<Task>, DatabaseError>;

    /// The tasks of session `session_id`.
    ///
    /// # Errors
    /// `CorruptRow` when a stored row does not parse.
    async fn get_by_session(&self, session_id: Uuid) -> Result<Vec<Task>, DatabaseError>;

    /// Stores many tasks in one transaction: all of them or none. A task may depend on, or be
    /// the child of, another task of the same batch, in any order, but members may not wait
    /// on each other in a loop.
    ///
    /// # Errors
    /// As for [`TaskRepository::insert`], for the first task at fault, and `Validation` on
    /// `dependencies` for a loop of dependencies among the members; nothing is written.
    async fn insert_batch(&self, tasks: Vec<Task>) -> Result<(), DatabaseError>;
}
