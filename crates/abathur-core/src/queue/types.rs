//! The queue's values: what is submitted, what a claim hands out, what a failure decides, and
//! the queue's errors.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use crate::error::{DatabaseError, ErrorCategory, ValidationError};
use crate::models::{DependencyType, Task, TaskSource, TaskStatus};

/// A task to submit. Its id is chosen by the submitter, so members of one batch can depend on
/// each other.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewTask {
    pub id: Uuid,
    pub summary: String,
    pub description: String,
    pub agent_type: String,
    pub priority: u8,
    pub dependencies: Vec<Uuid>,
    pub dependency_type: DependencyType,
    pub input_data: Option<Value>,
    pub max_retries: u32,
    pub max_execution_timeout_seconds: u32,
    pub created_by: Option<String>,
    pub parent_task_id: Option<Uuid>,
    pub session_id: Option<Uuid>,
    pub source: TaskSource,
    pub deadline: Option<DateTime<Utc>>,
    pub estimated_duration_seconds: Option<u32>,
    pub feature_branch: Option<String>,
    pub task_branch: Option<String>,
    pub worktree_path: Option<String>,
    /// A name the submitter gives this submission, so that sending it again (after a timeout,
    /// say) returns the task it made instead of making a second one. Unique across the store.
    #[serde(default)]
    pub idempotency_key: Option<String>,
    /// Not claimable before this time, even when ready.
    #[serde(default)]
    pub run_after: Option<DateTime<Utc>>,
}

impl NewTask {
    /// A task with a fresh id and the specification's defaults: priority 5, no dependencies,
    /// 3 retries, a one-hour timeout, submitted by a human.
    pub fn new(
        summary: impl Into<String>,
        description: impl Into<String>,
        agent_type: impl Into<String>,
    ) -> Self {
        Self {
            id: Uuid::new_v4(),
            summary: summary.into(),
            description: description.into(),
            agent_type: agent_type.into(),
            priority: 5,
            dependencies: Vec::new(),
            dependency_type: DependencyType::Sequential,
            input_data: None,
            max_retries: 3,
            max_execution_timeout_seconds: 3600,
            created_by: None,
            parent_task_id: None,
            session_id: None,
            source: TaskSource::Human,
            deadline: None,
            estimated_duration_seconds: None,
            feature_branch: None,
            task_branch: None,
            worktree_path: None,
            idempotency_key: None,
            run_after: None,
        }
    }

    /// Checks every field of the submission on its own (not the graph): the task's fields,
    /// the idempotency key ([`check_idempotency_key`]) and the run-after time
    /// ([`crate::timestamp::check`]).
    ///
    /// # Errors
    /// Returns a [`ValidationError`] naming the first field that breaks its rule.
    pub fn validate(&self, now: DateTime<Utc>) -> Result<(), ValidationError> {
        self.to_task(now).validate()?;
        if let Some(key) = &self.idempotency_key {
            check_idempotency_key(key)?;
        }
        if let Some(run_after) = &self.run_after {
            crate::timestamp::check("run_after", run_after)?;
        }
        Ok(())
    }

    /// The SHA-256, in lowercase hex, of what this submission asks for: every field but the
    /// id, the deadline and the run-after time. The id is new on every call, and a deadline or
    /// run-after time given relative to now (`+10m`) is another instant on every retry, so
    /// none of them can tell a retry from a different submission; the first submission's
    /// times stand. Dependencies count as a set; input is compared as a JSON value (key order,
    /// spacing and the form of a number, `1` or `1.0`, do not matter).
    ///
    /// A store compares it after naming every dependency and parent by its stored id, so a
    /// retried batch whose members were already stored still matches.
    pub fn content_hash(&self) -> String {
        use sha2::{Digest, Sha256};

        let mut dependencies: Vec<String> = self.dependencies.iter().map(Uuid::to_string).collect();
        dependencies.sort();
        dependencies.dedup();
        // A JSON array in a fixed order: each field's text is quoted and escaped, so no two
        // different submissions encode alike.
        let fields = serde_json::json!([
            "abathur-submit-v1",
            self.summary,
            self.description,
            self.agent_type,
            self.priority,
            dependencies,
            self.dependency_type.as_str(),
            self.input_data,
            self.max_retries,
            self.max_execution_timeout_seconds,
            self.created_by,
            self.parent_task_id.map(|id| id.to_string()),
            self.session_id.map(|id| id.to_string()),
            self.source.as_str(),
            self.estimated_duration_seconds,
            self.feature_branch,
            self.task_branch,
            self.worktree_path,
        ]);
        let mut text = Vec::new();
        canonical_json(&fields, &mut text);
        Sha256::digest(&text)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    /// The task this becomes, before the queue sets its status, depth and priority.
    pub fn to_task(&self, now: DateTime<Utc>) -> Task {
        let mut task = Task::new(
            self.summary.clone(),
            self.description.clone(),
            self.agent_type.clone(),
            now,
        );
        task.id = self.id;
        task.priority = self.priority;
        task.calculated_priority = f64::from(self.priority);
        task.dependencies = (!self.dependencies.is_empty()).then(|| self.dependencies.clone());
        task.dependency_type = self.dependency_type;
        task.input_data = self.input_data.clone();
        task.max_retries = self.max_retries;
        task.max_execution_timeout_seconds = self.max_execution_timeout_seconds;
        task.created_by = self.created_by.clone();
        task.parent_task_id = self.parent_task_id;
        task.session_id = self.session_id;
        task.source = self.source;
        task.deadline = self.deadline.map(crate::timestamp::truncate_to_micros);
        task.estimated_duration_seconds = self.estimated_duration_seconds;
        task.feature_branch = self.feature_branch.clone();
        task.task_branch = self.task_branch.clone();
        task.worktree_path = self.worktree_path.clone();
        task
    }
}

/// Writes `value` as compact JSON with every object's keys sorted, so that equal values
/// encode alike whatever order their keys came in.
/// Whether two JSON values are the same value, compared as the idempotency hash compares them:
/// key order, spacing and a number's form (`1`, `1.0`, `1e0`) do not matter. A repeated
/// completion's result is compared so.
pub fn same_json(a: &Value, b: &Value) -> bool {
    let (mut left, mut right) = (Vec::new(), Vec::new());
    canonical_json(a, &mut left);
    canonical_json(b, &mut right);
    left == right
}

fn canonical_json(value: &Value, out: &mut Vec<u8>) {
    match value {
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                canonical_json(item, out);
            }
            out.push(b']');
        }
        Value::Object(map) => {
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_by(|a, b| a.0.cmp(b.0));
            out.push(b'{');
            for (i, (key, item)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                out.extend_from_slice(Value::String(key.clone()).to_string().as_bytes());
                out.push(b':');
                canonical_json(item, out);
            }
            out.push(b'}');
        }
        Value::Number(number) => out.extend_from_slice(canonical_number(number).as_bytes()),
        scalar => out.extend_from_slice(scalar.to_string().as_bytes()),
    }
}

/// A number by its value: a float with no fraction is written as the integer it equals, so
/// `1.0`, `1e0` and `1` (and `-0.0` and `0`) encode alike, as they are one JSON number. An
/// integer is written exactly, never through a float, so that two integers a float cannot
/// tell apart (2^53 and 2^53 + 1) stay apart.
fn canonical_number(number: &serde_json::Number) -> String {
    // Below 2^127 in magnitude an integral f64 converts to i128 exactly.
    const EXACT: f64 = 1.7014118346046923e38;
    match number.as_f64() {
        Some(f) if number.is_f64() && f.fract() == 0.0 && f.abs() < EXACT => {
            (f as i128).to_string()
        }
        _ => number.to_string(),
    }
}

/// Checks an idempotency key: not empty, at most [`crate::limits::MAX_NAME_BYTES`] bytes, no
/// NUL character.
///
/// # Errors
/// Returns a [`ValidationError`] naming `idempotency_key`.
pub fn check_idempotency_key(key: &str) -> Result<(), ValidationError> {
    const FIELD: &str = "idempotency_key";
    if key.is_empty() {
        return Err(ValidationError::new(FIELD, "must not be empty"));
    }
    crate::limits::check_text(FIELD, key, crate::limits::MAX_NAME_BYTES)?;
    crate::models::check_no_nul(FIELD, key)
}

/// One task of a submission, as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Submitted {
    /// The id the submission gave the task. It differs from `task.id` when the task's
    /// idempotency key named a task already stored.
    pub requested_id: Uuid,
    /// The stored task: the one just made, or the one the key already named.
    pub task: Task,
    /// Whether the key named a task already stored, so that nothing new was made for it.
    pub existing: bool,
}

/// What the queue keeps about a task outside the task itself.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubmissionDetails {
    /// The idempotency key it was submitted with.
    pub idempotency_key: Option<String>,
    /// It is not claimable before this time: the run-after time it was submitted with, or the
    /// backoff of a failed attempt. [`crate::queue::TaskQueue::submission_details`] gives it
    /// only while it is still to come; a store may give a time already past.
    pub run_after: Option<DateTime<Utc>>,
}

/// What a worker asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimRequest {
    /// Who is claiming: recorded on the attempt and in the history.
    pub worker_id: String,
    /// Only tasks of these agent types; all types when empty.
    pub agent_types: Vec<String>,
    /// How long the lease lasts without a heartbeat.
    pub lease: std::time::Duration,
    /// At most this many tasks.
    pub max_tasks: u32,
}

/// The right to finish one attempt of one task. The attempt id is the fencing token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    pub attempt_id: Uuid,
    pub task_id: Uuid,
    pub worker_id: String,
    pub attempt_number: u32,
    pub expires_at: DateTime<Utc>,
}

/// A task handed to a worker, with its lease.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClaimedTask {
    pub task: Task,
    pub lease: Lease,
}

/// How an attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AttemptOutcome {
    Completed,
    Failed,
    /// The lease expired: the worker died or stopped heartbeating.
    Lost,
    /// The task ran past its `max_execution_timeout_seconds`.
    TimedOut,
    /// The task was cancelled while it ran.
    Cancelled,
    /// The worker gave the task back unfinished (it was shutting down); no retry was counted.
    Released,
}

impl AttemptOutcome {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Completed => "completed",
            Self::Failed => "failed",
            Self::Lost => "lost",
            Self::TimedOut => "timed_out",
            Self::Cancelled => "cancelled",
            Self::Released => "released",
        }
    }
}

/// What a failure did to its task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum FailOutcome {
    /// Back to ready, claimable again at `run_after`.
    Retrying {
        retry_count: u32,
        run_after: DateTime<Utc>,
    },
    /// Retries exhausted: the task failed, and so did these transitive dependents.
    Failed { cascaded: Vec<Uuid> },
}

/// The answer to a `complete` or `fail`: what it decided, and whether it was a repeat.
///
/// A worker or agent that lost the answer to its call (it crashed right after the commit, its
/// connection dropped) sends the same call again. "The same" is the same verb on the same
/// attempt with the same payload: for `complete` a result equal, as a JSON value, to the one
/// recorded (both absent counts as equal; object keys in any order, numbers as written); for
/// `fail` an error text equal, byte for byte, to the one recorded on the attempt. Such a
/// repeat changes nothing and answers with the recorded outcome, `repeat` set. A different
/// verb or payload on a finished attempt is still `LeaseLost`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Recorded<T> {
    /// What the call decided, or, on a repeat, what the first call decided (see the methods
    /// of [`super::QueueStore`] for how much of it a repeat can tell).
    pub outcome: T,
    /// The attempt had already ended this same way: nothing was written.
    pub repeat: bool,
}

impl<T> Recorded<T> {
    /// A first call's answer.
    pub fn new(outcome: T) -> Self {
        Self {
            outcome,
            repeat: false,
        }
    }

    /// A repeat's answer: the recorded outcome.
    pub fn repeat(outcome: T) -> Self {
        Self {
            outcome,
            repeat: true,
        }
    }
}

/// Which finished tasks a prune removes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PruneRequest {
    /// Tasks that finished before this time.
    pub finished_before: DateTime<Utc>,
    /// Of these statuses, each terminal (completed, failed, cancelled).
    pub statuses: Vec<TaskStatus>,
    /// At most this many tasks per write transaction.
    pub batch_size: u32,
}

/// What a prune removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PruneReport {
    /// Tasks removed, with their attempts, events, dependency edges and schedule.
    pub tasks: u64,
    /// Write transactions it took.
    pub batches: u64,
    /// The longest any of them held the write lock, from `BEGIN IMMEDIATE` to the commit
    /// (the commit itself, and the wait for the lock, left out): how long the prune kept
    /// other writers out at once.
    pub longest_batch: std::time::Duration,
}

/// What one reaper pass did.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ReapReport {
    /// Tasks whose lease had expired.
    pub lost: Vec<Uuid>,
    /// Tasks that ran past their timeout.
    pub timed_out: Vec<Uuid>,
}

/// One status change of a task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskEvent {
    /// Orders events across the store: a later event has a larger sequence.
    pub sequence: i64,
    pub task_id: Uuid,
    /// `None` for the submission.
    pub from: Option<TaskStatus>,
    pub to: TaskStatus,
    pub at: DateTime<Utc>,
    /// The worker or person who caused it.
    pub actor: String,
    pub attempt_id: Option<Uuid>,
    pub reason: Option<String>,
}

/// Everything a queue operation can fail with. Each names the offender.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum QueueError {
    /// A field breaks a rule; nothing was written.
    #[error(transparent)]
    Validation(#[from] ValidationError),

    /// A dependency is neither stored nor in the batch.
    #[error("task {task} has dependency {dependency}, which does not exist")]
    UnknownDependency { task: Uuid, dependency: Uuid },

    /// A dependency was cancelled, or failed and has not been retried: the task could never
    /// become ready.
    #[error("task {task} depends on {dependency}, which is {status}; a task can only wait for work that can still complete")]
    DependencyUnavailable {
        task: Uuid,
        dependency: Uuid,
        status: TaskStatus,
    },

    /// Tasks of the batch name each other as parents in a loop; the path starts and ends at
    /// the same task.
    #[error("the parent links form a cycle: {}", fmt_path(.path))]
    ParentCycle { path: Vec<Uuid> },

    /// The parent task or session a task names does not exist.
    #[error("task {task} refers to {reference} {id}, which does not exist")]
    UnknownReference {
        task: Uuid,
        /// `parent task` or `session`.
        reference: &'static str,
        id: Uuid,
    },

    /// A task lists itself among its dependencies.
    #[error("task {task} depends on itself")]
    SelfDependency { task: Uuid },

    /// The batch's dependencies form a cycle; the path starts and ends at the same task.
    #[error("the dependencies form a cycle: {}", fmt_path(.path))]
    Cycle { path: Vec<Uuid> },

    /// A task lists more dependencies than the queue allows.
    #[error("task {task} has {count} dependencies; the limit is {limit}")]
    TooManyDependencies {
        task: Uuid,
        count: usize,
        limit: usize,
    },

    /// A task would sit deeper in the DAG than the queue allows.
    #[error("task {task} would be at dependency depth {depth}; the limit is {limit}")]
    TooDeep { task: Uuid, depth: u32, limit: u32 },

    /// The idempotency key names a stored task that was submitted with other content.
    #[error("idempotency key {key:?} was already used for task {existing}, submitted with other content")]
    IdempotencyConflict { key: String, existing: Uuid },

    /// Two tasks of one batch carry the same idempotency key.
    #[error("task {task} repeats idempotency key {key:?} of another task in the batch")]
    DuplicateIdempotencyKey { task: Uuid, key: String },

    /// The same id appears twice in one batch.
    #[error("task {task} appears twice in the batch")]
    DuplicateTask { task: Uuid },

    /// No task has this id.
    #[error("task {0} was not found")]
    TaskNotFound(Uuid),

    /// No attempt has this id: it was never handed out by a claim.
    #[error("no attempt has the id {0}")]
    AttemptNotFound(Uuid),

    /// The lease is no longer valid: it expired and the task was reclaimed, or it finished.
    #[error("the lease of attempt {attempt_id} is lost: {reason}")]
    LeaseLost { attempt_id: Uuid, reason: String },

    /// The task was cancelled while the lease was held.
    #[error("task {task_id} was cancelled")]
    Cancelled { task_id: Uuid },

    /// The task's status does not allow the operation.
    #[error("cannot {operation} task {task_id}: it is {status}")]
    InvalidTransition {
        task_id: Uuid,
        operation: &'static str,
        status: TaskStatus,
    },

    /// The store failed.
    #[error(transparent)]
    Database(#[from] DatabaseError),
}

impl QueueError {
    /// The kind of failure this is.
    pub fn category(&self) -> ErrorCategory {
        match self {
            Self::Database(db) => db.category(),
            Self::TaskNotFound(_)
            | Self::AttemptNotFound(_)
            | Self::UnknownDependency { .. }
            | Self::UnknownReference { .. } => ErrorCategory::NotFound,
            Self::LeaseLost { .. }
            | Self::Cancelled { .. }
            | Self::InvalidTransition { .. }
            | Self::DependencyUnavailable { .. }
            | Self::IdempotencyConflict { .. } => ErrorCategory::Conflict,
            Self::Validation(_)
            | Self::SelfDependency { .. }
            | Self::Cycle { .. }
            | Self::ParentCycle { .. }
            | Self::TooManyDependencies { .. }
            | Self::TooDeep { .. }
            | Self::DuplicateTask { .. }
            | Self::DuplicateIdempotencyKey { .. } => ErrorCategory::Invalid,
        }
    }

    /// The submitted task the error is about, when it names one: the task with the unknown
    /// dependency, the first task of a cycle, the task that is too deep, and so on.
    pub fn task(&self) -> Option<Uuid> {
        match self {
            Self::UnknownDependency { task, .. }
            | Self::UnknownReference { task, .. }
            | Self::SelfDependency { task }
            | Self::TooManyDependencies { task, .. }
            | Self::TooDeep { task, .. }
            | Self::DuplicateTask { task }
            | Self::DuplicateIdempotencyKey { task, .. }
            | Self::DependencyUnavailable { task, .. } => Some(*task),
            Self::Cycle { path } | Self::ParentCycle { path } => path.first().copied(),
            Self::TaskNotFound(task) | Self::Cancelled { task_id: task } => Some(*task),
            Self::InvalidTransition { task_id, .. } => Some(*task_id),
            // The stored task, not a submitted one: the caller knows it by its key.
            Self::IdempotencyConflict { .. } => None,
            Self::Validation(_)
            | Self::AttemptNotFound(_)
            | Self::LeaseLost { .. }
            | Self::Database(_) => None,
        }
    }
}

fn fmt_path(path: &[Uuid]) -> String {
    path.iter()
        .map(Uuid::to_string)
        .collect::<Vec<_>>()
        .join(" -> ")
}

/// The queue at a glance: what `abathur status` and the `task_queue_status` tool show.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QueueOverview {
    /// When it was read.
    pub at: DateTime<Utc>,
    /// Tasks per status, every status present.
    pub counts: std::collections::BTreeMap<TaskStatus, u64>,
    /// The ready task that has waited longest since submission among those a worker could
    /// claim now: one held back by its run-after time or a retry's backoff is left out.
    pub oldest_ready: Option<WaitingTask>,
    /// Open attempts, the soonest to expire first (at most the number asked for).
    pub running: Vec<RunningAttempt>,
    /// Open attempts whose lease has already expired: the next reap takes them back.
    pub expired_leases: u64,
}

/// A task waiting to be claimed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WaitingTask {
    pub task_id: Uuid,
    pub summary: String,
    pub agent_type: String,
    pub submitted_at: DateTime<Utc>,
}

/// An attempt in progress, with its lease.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunningAttempt {
    pub attempt_id: Uuid,
    pub task_id: Uuid,
    pub summary: String,
    pub worker_id: String,
    pub started_at: DateTime<Utc>,
    pub lease_expires_at: DateTime<Utc>,
}

/// An unfinished task and the unfinished tasks it waits for: one node of the execution plan's
/// input.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PendingTask {
    pub task_id: Uuid,
    pub summary: String,
    pub agent_type: String,
    pub status: TaskStatus,
    pub calculated_priority: f64,
    /// Its dependencies that are not completed yet.
    pub waits_for: Vec<Uuid>,
}

/// One step of an execution plan.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlanStep {
    /// 0 for tasks that wait for nothing unfinished; otherwise one more than the latest stage
    /// among the tasks it waits for. Tasks of one stage can run in parallel.
    pub stage: u32,
    #[serde(flatten)]
    pub task: PendingTask,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn base() -> NewTask {
        NewTask {
            input_data: Some(json!({"a": 1, "b": {"c": [1, 2], "d": null}})),
            dependencies: vec![Uuid::from_u128(1), Uuid::from_u128(2)],
            ..NewTask::new("s", "d", "w")
        }
    }

    #[test]
    fn a_retry_hashes_alike_whatever_its_id_times_key_order_and_dependency_order() {
        let first = base();
        let retry = NewTask {
            id: Uuid::new_v4(),
            input_data: Some(json!({"b": {"d": null, "c": [1, 2]}, "a": 1})),
            dependencies: vec![Uuid::from_u128(2), Uuid::from_u128(1)],
            deadline: Some(Utc::now()),
            run_after: Some(Utc::now()),
            idempotency_key: Some("k".into()),
            ..base()
        };
        assert_eq!(first.content_hash(), retry.content_hash());
        assert_eq!(first.content_hash().len(), 64);
    }

    #[test]
    fn json_values_are_the_same_whatever_their_numbers_form_or_key_order() {
        use serde_json::json;
        assert!(same_json(
            &json!({"x": 1, "y": [2]}),
            &json!({"y": [2.0], "x": 1.0})
        ));
        assert!(!same_json(&json!({"x": 1}), &json!({"x": 2})));
        assert!(!same_json(&json!({"x": "1"}), &json!({"x": 1})));
    }

    #[test]
    fn an_input_number_hashes_by_its_value_not_by_how_it_was_written() {
        #[track_caller]
        fn hash_of(input: &str) -> String {
            NewTask {
                input_data: Some(serde_json::from_str(input).unwrap()),
                ..base()
            }
            .content_hash()
        }
        for (a, b) in [
            ("1", "1.0"),
            ("100", "1e2"),
            ("0", "-0.0"),
            ("-3", "-3.000"),
            ("18446744073709551615", "18446744073709551615"),
            ("{\"n\": [1, 2.5]}", "{\"n\": [1.0, 25e-1]}"),
        ] {
            assert_eq!(hash_of(a), hash_of(b), "{a} and {b}");
        }
        // Different numbers stay apart, even where a float cannot tell them apart.
        for (a, b) in [
            ("1", "1.5"),
            ("1", "\"1\""),
            ("9007199254740993", "9007199254740992"),
            ("9007199254740993", "9007199254740992.0"),
            ("18446744073709551615", "18446744073709551616.0"),
            ("-9223372036854775808", "-9223372036854775807"),
        ] {
            assert_ne!(hash_of(a), hash_of(b), "{a} and {b}");
        }
    }

    #[test]
    fn every_field_of_the_content_changes_the_hash() {
        let changes: Vec<fn(&mut NewTask)> = vec![
            |t| t.summary.push('x'),
            |t| t.description.push('x'),
            |t| t.agent_type.push('x'),
            |t| t.priority += 1,
            |t| t.dependencies.pop().map(drop).unwrap_or(()),
            |t| t.dependency_type = DependencyType::Parallel,
            |t| t.input_data = Some(json!({"a": 1.5})),
            |t| t.input_data = None,
            |t| t.max_retries += 1,
            |t| t.max_execution_timeout_seconds += 1,
            |t| t.created_by = Some("x".into()),
            |t| t.parent_task_id = Some(Uuid::from_u128(3)),
            |t| t.session_id = Some(Uuid::from_u128(3)),
            |t| t.source = TaskSource::AgentPlanner,
            |t| t.estimated_duration_seconds = Some(1),
            |t| t.feature_branch = Some("x".into()),
            |t| t.task_branch = Some("x".into()),
            |t| t.worktree_path = Some("x".into()),
        ];
        let original = base().content_hash();
        for (i, change) in changes.into_iter().enumerate() {
            let mut task = base();
            change(&mut task);
            assert_ne!(task.content_hash(), original, "change {i} kept the hash");
        }
    }

    #[test]
    fn a_key_is_refused_when_empty_too_long_or_holding_a_nul() {
        assert!(check_idempotency_key("k").is_ok());
        assert!(check_idempotency_key(&"k".repeat(crate::limits::MAX_NAME_BYTES)).is_ok());
        for bad in [
            String::new(),
            "k".repeat(crate::limits::MAX_NAME_BYTES + 1),
            "a\0b".into(),
        ] {
            let err = check_idempotency_key(&bad).unwrap_err();
            assert_eq!(err.field, "idempotency_key");
        }
    }
}
