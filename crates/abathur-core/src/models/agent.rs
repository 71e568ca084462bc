//! An agent process registered with the swarm, and the liveness it reports.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::text_enum;
use crate::error::ValidationError;
use crate::timestamp;

text_enum! {
    /// What an agent is doing.
    AgentStatus, "agent status" {
        /// Alive, with no task.
        Idle => "idle",
        /// Alive, working on a task.
        Busy => "busy",
        /// Gone for good.
        Terminated => "terminated",
    }
}

/// A registered agent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Agent {
    pub id: Uuid,
    pub agent_type: String,
    pub status: AgentStatus,
    pub current_task_id: Option<Uuid>,
    pub heartbeat_at: DateTime<Utc>,
    pub memory_usage_bytes: u64,
    pub cpu_usage_percent: f64,
    pub created_at: DateTime<Utc>,
    pub terminated_at: Option<DateTime<Utc>>,
}

impl Agent {
    /// An idle agent of `agent_type`, registered and heard from at `now`.
    pub fn new(agent_type: impl Into<String>, now: DateTime<Utc>) -> Self {
        let now = timestamp::truncate_to_micros(now);
        Self {
            id: Uuid::new_v4(),
            agent_type: agent_type.into(),
            status: AgentStatus::Idle,
            current_task_id: None,
            heartbeat_at: now,
            memory_usage_bytes: 0,
            cpu_usage_percent: 0.0,
            created_at: now,
            terminated_at: None,
        }
    }

    /// Checks the rules every stored agent obeys.
    ///
    /// # Errors
    /// Returns a [`ValidationError`] for an empty agent type or one with a NUL character, a memory usage above
    /// `i64::MAX` bytes, a CPU usage that is negative or not finite, a terminated agent without
    /// `terminated_at` (or a live one with it), or a timestamp outside years 0000–9999.
    pub fn validate(&self) -> Result<(), ValidationError> {
        super::check_name("agent_type", &self.agent_type)?;
        if i64::try_from(self.memory_usage_bytes).is_err() {
            return Err(ValidationError::new(
                "memory_usage_bytes",
                format!("{} is larger than {}", self.memory_usage_bytes, i64::MAX),
            ));
        }
        if !self.cpu_usage_percent.is_finite() || self.cpu_usage_percent < 0.0 {
            return Err(ValidationError::new(
                "cpu_usage_percent",
                format!("{} is not a non-negative number", self.cpu_usage_percent),
            ));
        }
        let terminated = self.status == AgentStatus::Terminated;
        if terminated != self.terminated_at.is_some() {
            return Err(ValidationError::new(
                "terminated_at",
                "is set exactly when the status is terminated",
            ));
        }
        timestamp::check("heartbeat_at", &self.heartbeat_at)?;
        timestamp::check("created_at", &self.created_at)?;
        if let Some(ts) = &self.terminated_at {
            timestamp::check("terminated_at", ts)?;
        }
        Ok(())
    }
}
