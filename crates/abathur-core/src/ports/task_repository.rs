//! Storage of tasks and of the dependency edges between them.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::error::{DatabaseError, ValidationError};
use crate::models::{Task, TaskSource, TaskStatus};
use crate::timestamp;

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

impl TaskFilters {
    /// Checks the filters as [`TaskRepository::list`] does.
    ///
    /// # Errors
    /// `Validation` for a limit outside 1 to [`crate::limits::MAX_PAGE`], a negative offset, a
    /// minimum priority above the maximum, or a submission time outside what the store keeps.
    pub fn check(&self) -> Result<(), ValidationError> {
        if let Some(limit) = self.limit {
            // A negative limit is below the range like zero is: the same message for both.
            crate::limits::check_page("limit", u64::try_from(limit).unwrap_or(0))?;
        }
        if self.offset.is_some_and(|o| o < 0) {
            return Err(ValidationError::new("offset", "must not be negative"));
        }
        if let (Some(min), Some(max)) = (self.min_priority, self.max_priority) {
            if min > max {
                return Err(ValidationError::new(
                    "min_priority",
                    format!("{min} is above the maximum priority {max}"),
                ));
            }
        }
        for (field, ts) in [
            ("submitted_after", &self.submitted_after),
            ("submitted_before", &self.submitted_before),
        ] {
            if let Some(ts) = ts {
                timestamp::check(field, ts)?;
            }
        }
        Ok(())
    }
}

/// The orders [`TaskRepository::page`] can list tasks in. Each ends with the id, so that no
/// two tasks tie and a page can start exactly after the last task of the one before.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TaskOrder {
    /// The latest submitted first: `submitted_at` descending, then id descending.
    #[default]
    Newest,
    /// The earliest submitted first: `submitted_at` ascending, then id ascending.
    Oldest,
    /// [`TaskRepository::list`]'s order: calculated priority descending, then `submitted_at`
    /// ascending, then id ascending.
    Priority,
}

impl TaskOrder {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Newest => "newest",
            Self::Oldest => "oldest",
            Self::Priority => "priority",
        }
    }
}

/// Where a page starts: right after this task, in `order`. Take it from the last task of the
/// page before with [`TaskCursor::after`]; tasks added or changed meanwhile are neither
/// skipped nor repeated unless their own place in the order moved past the cursor.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskCursor {
    pub order: TaskOrder,
    pub calculated_priority: f64,
    pub submitted_at: DateTime<Utc>,
    pub id: Uuid,
}

impl TaskCursor {
    /// The cursor of the page that follows `task` in `order`.
    pub fn after(order: TaskOrder, task: &Task) -> Self {
        Self {
            order,
            calculated_priority: task.calculated_priority,
            submitted_at: task.submitted_at,
            id: task.id,
        }
    }
}

/// A page of tasks, from [`TaskRepository::page`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TaskPageQuery {
    /// Which tasks; its `limit` and `offset` must be left `None` (a page has its own).
    pub filters: TaskFilters,
    /// Only tasks whose summary holds this text, ignoring the case of ASCII letters (on
    /// PostgreSQL, of every letter). `%`, `_` and `\` are matched as themselves.
    pub summary_contains: Option<String>,
    pub order: TaskOrder,
    /// Start after this task; `None` for the first page.
    pub after: Option<TaskCursor>,
    /// At most this many tasks, 1 to [`crate::limits::MAX_PAGE`].
    pub limit: u32,
}

/// How many tasks finished, by how, in one minute.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FinishedMinute {
    /// The minute's start.
    pub minute: DateTime<Utc>,
    pub completed: u64,
    pub failed: u64,
    pub cancelled: u64,
}

/// The longest text [`TaskPageQuery::summary_contains`] takes: the longest summary.
pub const MAX_SUMMARY_SEARCH_CHARS: usize = crate::models::MAX_SUMMARY_CHARS;

/// A search text of this many characters or more is looked up in the store's trigram index of
/// summaries; a shorter one holds no trigram to look up.
pub const INDEXED_SEARCH_MIN_CHARS: usize = 3;

/// When the trigram index names at most this many tasks for a search, a page is read from those
/// tasks alone. A search that matches more is common: reading the order's index and testing
/// each summary meets a page's worth of matches soon.
pub const MAX_SEARCH_CANDIDATES: usize = 2_000;

impl TaskPageQuery {
    /// Checks the query as [`TaskRepository::page`] does.
    ///
    /// # Errors
    /// `Validation` as for [`TaskFilters::check`], and for a `limit` or `offset` among the
    /// filters, a page size outside 1 to [`crate::limits::MAX_PAGE`], an empty or overlong
    /// search text, or a cursor of another order or outside what the store keeps.
    pub fn check(&self) -> Result<(), ValidationError> {
        self.filters.check()?;
        if self.filters.limit.is_some() || self.filters.offset.is_some() {
            return Err(ValidationError::new(
                "filters",
                "a page takes its size from `limit` and its start from `after`; leave the \
                 filters' limit and offset unset",
            ));
        }
        crate::limits::check_page("limit", u64::from(self.limit))?;
        if let Some(text) = &self.summary_contains {
            let chars = text.chars().count();
            if chars == 0 || chars > MAX_SUMMARY_SEARCH_CHARS {
                return Err(ValidationError::new(
                    "summary_contains",
                    format!("{chars} characters; search for 1 to {MAX_SUMMARY_SEARCH_CHARS}"),
                ));
            }
            // No summary holds one (a task's text may not), and not every index can look one
            // up.
            if text.contains('\0') {
                return Err(ValidationError::new(
                    "summary_contains",
                    "holds a NUL character, which no summary holds",
                ));
            }
        }
        if let Some(cursor) = &self.after {
            if cursor.order != self.order {
                return Err(ValidationError::new(
                    "after",
                    format!(
                        "the cursor is for the order {}, not {}",
                        cursor.order.as_str(),
                        self.order.as_str()
                    ),
                ));
            }
            if !cursor.calculated_priority.is_finite() {
                return Err(ValidationError::new(
                    "after",
                    "the cursor's calculated priority is not a finite number",
                ));
            }
            timestamp::check("after", &cursor.submitted_at)?;
        }
        Ok(())
    }

    /// The search text, when it is long enough to be looked up in a trigram index
    /// ([`INDEXED_SEARCH_MIN_CHARS`]).
    pub fn indexed_search(&self) -> Option<&str> {
        self.summary_contains
            .as_deref()
            .filter(|text| text.chars().count() >= INDEXED_SEARCH_MIN_CHARS)
    }

    /// The pattern for `LIKE ... ESCAPE '\'` (or `ILIKE`) that matches the search text
    /// anywhere.
    pub fn summary_pattern(&self) -> Option<String> {
        self.summary_contains.as_ref().map(|text| {
            let mut pattern = String::with_capacity(text.len() + 2);
            pattern.push('%');
            for c in text.chars() {
                if matches!(c, '%' | '_' | '\\') {
                    pattern.push('\\');
                }
                pattern.push(c);
            }
            pattern.push('%');
            pattern
        })
    }
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

    /// The tasks of `ids` that exist, each once, in no set order: one read for many tasks,
    /// as a walk of a graph takes them a layer at a time.
    ///
    /// # Errors
    /// `CorruptRow` when a stored row does not parse.
    async fn get_many(&self, ids: &[Uuid]) -> Result<Vec<Task>, DatabaseError>;

    /// The tasks that list any of `ids` among their dependencies, each once, in no set order;
    /// at most `limit` of them, since one task may have any number of dependents.
    ///
    /// # Errors
    /// `CorruptRow` when a stored row does not parse.
    async fn get_dependents_of_many(
        &self,
        ids: &[Uuid],
        limit: usize,
    ) -> Result<Vec<Task>, DatabaseError>;

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

    /// A page of the tasks that match `query`, in its order, starting after its cursor: what
    /// a dashboard lists. Each page costs the same wherever it starts, since the store walks
    /// an index from the cursor rather than counting rows up to it.
    ///
    /// # Errors
    /// `Validation` as for [`TaskPageQuery::check`]; `CorruptRow` when a stored row does not
    /// parse.
    async fn page(&self, query: TaskPageQuery) -> Result<Vec<Task>, DatabaseError>;

    /// How many tasks finished in each minute from `since` on, by their `completed_at` and
    /// status now, oldest minute first; minutes in which none finished are left out. A task
    /// retried since it finished no longer counts. Reads the finished tasks of that time only
    /// (`completed_at` is indexed), however many tasks the store holds.
    ///
    /// # Errors
    /// `Validation` for a `since` outside what the store keeps; `CorruptRow` when a stored row
    /// does not parse.
    async fn finished_per_minute(
        &self,
        since: DateTime<Utc>,
    ) -> Result<Vec<FinishedMinute>, DatabaseError>;
}

/// Folds rows of (minute, status, count), ordered by minute, into [`FinishedMinute`]s: what
/// every store's [`TaskRepository::finished_per_minute`] returns. Statuses that are not
/// terminal are ignored.
pub fn minutes_from_counts(
    rows: impl IntoIterator<Item = (DateTime<Utc>, String, i64)>,
) -> Vec<FinishedMinute> {
    let mut minutes: Vec<FinishedMinute> = Vec::new();
    for (minute, status, count) in rows {
        if minutes.last().is_none_or(|m| m.minute != minute) {
            minutes.push(FinishedMinute {
                minute,
                completed: 0,
                failed: 0,
                cancelled: 0,
            });
        }
        let Some(last) = minutes.last_mut() else {
            continue;
        };
        let count = u64::try_from(count).unwrap_or(0);
        match status.as_str() {
            "completed" => last.completed += count,
            "failed" => last.failed += count,
            "cancelled" => last.cancelled += count,
            _ => {}
        }
    }
    minutes
}
