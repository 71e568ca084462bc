//! Storage of the agents registered with the swarm.

use std::time::Duration;

use async_trait::async_trait;
use uuid::Uuid;

use crate::error::DatabaseError;
use crate::models::{Agent, AgentStatus};

/// Stores agents and their heartbeats.
#[async_trait]
pub trait AgentRepository: Send + Sync {
    /// Registers an agent.
    ///
    /// # Errors
    /// `Validation` when [`Agent::validate`] rejects it; `UniqueViolation` when the id is
    /// taken; `ForeignKeyViolation` when its current task does not exist.
    async fn insert(&self, agent: Agent) -> Result<(), DatabaseError>;

    /// The agent with this id, or `None`.
    ///
    /// # Errors
    /// `CorruptRow` when the stored row does not parse.
    async fn get(&self, id: Uuid) -> Result<Option<Agent>, DatabaseError>;

    /// Replaces every field of a stored agent but `created_at`.
    ///
    /// # Errors
    /// `NotFound` when no agent has this id; otherwise as for [`AgentRepository::insert`].
    async fn update(&self, agent: Agent) -> Result<(), DatabaseError>;

    /// Every agent with this status (all agents when `None`), oldest first.
    ///
    /// # Errors
    /// `CorruptRow` when a stored row does not parse.
    async fn list(&self, status: Option<AgentStatus>) -> Result<Vec<Agent>, DatabaseError>;

    /// The agents, not terminated, that have not sent a heartbeat for longer than `max_age`,
    /// most silent first.
    ///
    /// # Errors
    /// `Validation` when `max_age` is too large to subtract from now; `CorruptRow` when a
    /// stored row does not parse.
    async fn find_stale_agents(&self, max_age: Duration) -> Result<Vec<Agent>, DatabaseError>;

    /// Records that the agent is alive now.
    ///
    /// # Errors
    /// `NotFound` when no agent has this id; `Conflict` when it is terminated.
    async fn update_heartbeat(&self, id: Uuid) -> Result<(), DatabaseError>;
}
