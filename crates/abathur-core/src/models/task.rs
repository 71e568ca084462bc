//! A unit of work that one agent submits for another.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use super::text_enum;
use crate::error::ValidationError;
use crate::{limits, timestamp};

/// The longest summary, counted in characters (not bytes).
pub const MAX_SUMMARY_CHARS: usize = 140;

/// The summary a task gets when none is given: the first line of `description` with text on
/// it, trimmed and cut to [`MAX_SUMMARY_CHARS`] characters (not bytes).
pub fn default_summary(description: &str) -> String {
    let line = description
        .lines()
        .map(str::trim)
        .find(|line| !line.is_empty())
        .unwrap_or_default();
    let cut: String = line.chars().take(MAX_SUMMARY_CHARS).collect();
    cut.trim_end().to_string()
}
/// The highest base priority.
pub const MAX_PRIORITY: u8 = 10;

text_enum! {
    /// Where a task is in its life.
    TaskStatus, "task status" {
        /// Submitted, not yet looked at by the queue.
        Pending => "pending",
        /// Waiting for dependencies to complete.
        Blocked => "blocked",
        /// Claimable.
        Ready => "ready",
        /// Claimed by a worker.
        Running => "running",
        /// Finished successfully.
        Completed => "completed",
        /// Finished unsuccessfully.
        Failed => "failed",
        /// Withdrawn.
        Cancelled => "cancelled",
    }
}

impl TaskStatus {
    /// True for completed, failed and cancelled: the task will not run again by itself.
    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Completed | Self::Failed | Self::Cancelled)
    }
}

text_enum! {
    /// Who submitted a task.
    TaskSource, "task source" {
        /// A person.
        Human => "human",
        /// An agent gathering requirements.
        AgentRequirements => "agent_requirements",
        /// An agent planning work.
        AgentPlanner => "agent_planner",
        /// An agent implementing work.
        AgentImplementation => "agent_implementation",
    }
}

text_enum! {
    /// How a task's dependencies relate to each other.
    DependencyType, "dependency type" {
        /// The dependencies run one after another.
        Sequential => "sequential",
        /// The dependencies may run at the same time.
        Parallel => "parallel",
    }
}

/// A task, exactly as the specification shapes it.
///
/// Queue bookkeeping that is not part of this shape (leases, attempts, run-after times) lives
/// in its own records. Timestamps are kept at microsecond precision.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Task {
    pub id: Uuid,
    pub summary: String,
    pub description: String,
    pub agent_type: String,
    pub priority: u8,
    pub calculated_priority: f64,
    pub status: TaskStatus,
    pub dependencies: Option<Vec<Uuid>>,
    pub dependency_type: DependencyType,
    pub dependency_depth: u32,
    pub input_data: Option<Value>,
    pub result_data: Option<Value>,
    pub error_message: Option<String>,
    pub retry_count: u32,
    pub max_retries: u32,
    pub max_execution_timeout_seconds: u32,
    pub submitted_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub completed_at: Option<DateTime<Utc>>,
    pub last_updated_at: DateTime<Utc>,
    pub created_by: Option<String>,
    pub parent_task_id: Option<Uuid>,
    pub session_id: Option<Uuid>,
    pub source: TaskSource,
    pub deadline: Option<DateTime<Utc>>,
    pub estimated_duration_seconds: Option<u32>,
    pub feature_branch: Option<String>,
    pub task_branch: Option<String>,
    pub worktree_path: Option<String>,
}

impl Task {
    /// A pending task with the specification's defaults: priority 5, sequential dependencies,
    /// 3 retries, a one-hour timeout, submitted now.
    pub fn new(
        summary: impl Into<String>,
        description: impl Into<String>,
        agent_type: impl Into<String>,
        now: DateTime<Utc>,
    ) -> Self {
        let now = timestamp::truncate_to_micros(now);
        Self {
            id: Uuid::new_v4(),
            summary: summary.into(),
            description: description.into(),
            agent_type: agent_type.into(),
            priority: 5,
            calculated_priority: 5.0,
            status: TaskStatus::Pending,
            dependencies: None,
            dependency_type: DependencyType::Sequential,
            dependency_depth: 0,
            input_data: None,
            result_data: None,
            error_message: None,
            retry_count: 0,
            max_retries: 3,
            max_execution_timeout_seconds: 3600,
            submitted_at: now,
            started_at: None,
            completed_at: None,
            last_updated_at: now,
            created_by: None,
            parent_task_id: None,
            session_id: None,
            source: TaskSource::Human,
            deadline: None,
            estimated_duration_seconds: None,
            feature_branch: None,
            task_branch: None,
            worktree_path: None,
        }
    }

    /// Checks the rules every stored task obeys, before anything is written.
    ///
    /// # Errors
    /// Returns a [`ValidationError`] naming the first field at fault: text with a NUL character
    /// or over its limit in [`crate::limits`], JSON over its limit or nested deeper than
    /// [`super::MAX_JSON_DEPTH`], an empty or over-long summary (over 140 characters), an empty
    /// agent type, branch, author or worktree path, a priority over 10, a calculated
    /// priority that is not a finite number, a zero timeout, a task that depends on or is the
    /// parent of itself, a dependency listed twice, or a timestamp outside years 0000–9999.
    pub fn validate(&self) -> Result<(), ValidationError> {
        // The description before the summary: a summary left out is made from the
        // description, and a fault in both is the description's.
        super::check_text(
            "description",
            &self.description,
            limits::MAX_DESCRIPTION_BYTES,
        )?;
        super::check_no_nul("summary", &self.summary)?;
        super::check_name("agent_type", &self.agent_type)?;
        if let Some(error) = &self.error_message {
            super::check_text("error_message", error, limits::MAX_ERROR_BYTES)?;
        }
        for (field, value) in [
            ("created_by", &self.created_by),
            ("feature_branch", &self.feature_branch),
            ("task_branch", &self.task_branch),
        ] {
            super::check_opt_name(field, value.as_deref())?;
        }
        if let Some(path) = &self.worktree_path {
            if path.trim().is_empty() {
                return Err(ValidationError::new("worktree_path", "must not be empty"));
            }
            super::check_text("worktree_path", path, limits::MAX_PATH_BYTES)?;
        }
        for (field, value) in [
            ("input_data", &self.input_data),
            ("result_data", &self.result_data),
        ] {
            if let Some(value) = value {
                super::check_json(field, value, limits::MAX_TASK_JSON_BYTES)?;
            }
        }
        let summary_chars = self.summary.chars().count();
        if self.summary.trim().is_empty() {
            return Err(ValidationError::new("summary", "must not be empty"));
        }
        if summary_chars > MAX_SUMMARY_CHARS {
            return Err(ValidationError::new(
                "summary",
                format!("is {summary_chars} characters long; the limit is {MAX_SUMMARY_CHARS}"),
            ));
        }
        if self.priority > MAX_PRIORITY {
            return Err(ValidationError::new(
                "priority",
                format!("{} is above the maximum of {MAX_PRIORITY}", self.priority),
            ));
        }
        if !self.calculated_priority.is_finite() {
            return Err(ValidationError::new(
                "calculated_priority",
                format!("{} is not a finite number", self.calculated_priority),
            ));
        }
        if self.max_execution_timeout_seconds == 0 {
            return Err(ValidationError::new(
                "max_execution_timeout_seconds",
                "must be at least 1 second",
            ));
        }
        if self.parent_task_id == Some(self.id) {
            return Err(ValidationError::new(
                "parent_task_id",
                "a task cannot be its own parent",
            ));
        }
        if let Some(dependencies) = &self.dependencies {
            let mut seen = std::collections::HashSet::with_capacity(dependencies.len());
            for dependency in dependencies {
                if *dependency == self.id {
                    return Err(ValidationError::new(
                        "dependencies",
                        "a task cannot depend on itself",
                    ));
                }
                if !seen.insert(dependency) {
                    return Err(ValidationError::new(
                        "dependencies",
                        format!("{dependency} is listed more than once"),
                    ));
                }
            }
        }
        timestamp::check("submitted_at", &self.submitted_at)?;
        timestamp::check("last_updated_at", &self.last_updated_at)?;
        for (field, value) in [
            ("started_at", &self.started_at),
            ("completed_at", &self.completed_at),
            ("deadline", &self.deadline),
        ] {
            if let Some(ts) = value {
                timestamp::check(field, ts)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task() -> Task {
        Task::new("summary", "description", "agent", Utc::now())
    }

    #[test]
    fn summary_length_is_counted_in_characters() {
        let mut t = task();
        t.summary = "é".repeat(140);
        assert!(t.validate().is_ok(), "140 two-byte characters fit");
        t.summary = "é".repeat(141);
        assert_eq!(t.validate().unwrap_err().field, "summary");
    }

    #[test]
    fn priority_above_ten_is_rejected() {
        let mut t = task();
        t.priority = 11;
        assert_eq!(t.validate().unwrap_err().field, "priority");
    }

    #[test]
    fn status_names_round_trip() {
        for status in TaskStatus::ALL {
            assert_eq!(status.as_str().parse::<TaskStatus>().unwrap(), *status);
        }
        let err = "done".parse::<TaskStatus>().unwrap_err();
        assert!(err.to_string().contains("pending blocked ready"), "{err}");
    }
}
