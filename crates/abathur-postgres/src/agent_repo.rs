//! [`AgentRepository`] on PostgreSQL: the `agents` table.
//!
//! Every write is one statement on one agent's row. A write can still meet a deadlock (it
//! checks its current task's row, which a pruning transaction may hold while it waits for the
//! agent's row to clear the task), so each runs again when the server aborts it.

use std::sync::Arc;
use std::time::Duration;

use abathur_core::clock::{Clock, Now, SystemClock};
use abathur_core::error::DatabaseError;
use abathur_core::models::{Agent, AgentStatus};
use abathur_core::ports::AgentRepository;
use abathur_core::timestamp;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::PgPool;
use uuid::Uuid;

use crate::errors::on;
use crate::repo_support::{pinned_time, retrying};
use crate::row::RowContext;

const ENTITY: &str = "agent";

/// The PostgreSQL agent registry.
#[derive(Debug, Clone)]
pub struct PgAgentRepository {
    pool: PgPool,
    clock: Arc<dyn Clock>,
}

impl PgAgentRepository {
    /// A repository on `pool`, stamping heartbeats with the server's clock.
    pub fn new(pool: PgPool) -> Self {
        Self::with_clock(pool, Arc::new(SystemClock))
    }

    /// A repository on `pool`, taking time from `clock` (the server's clock when `clock` asks
    /// for the store's own time, as [`SystemClock`] does).
    pub fn with_clock(pool: PgPool, clock: Arc<dyn Clock>) -> Self {
        Self { pool, clock }
    }

    /// Now: the clock's time when it pins it, the server's otherwise.
    async fn now(&self) -> Result<DateTime<Utc>, DatabaseError> {
        match self.clock.store_time() {
            Now::At(at) => Ok(at),
            Now::Store => sqlx::query_scalar!(r#"SELECT clock_timestamp() AS "now!""#)
                .fetch_one(&self.pool)
                .await
                .map_err(on(ENTITY, "")),
        }
    }
}

/// An `agents` row, column for column.
struct AgentRow {
    id: Uuid,
    agent_type: String,
    status: String,
    current_task_id: Option<Uuid>,
    heartbeat_at: DateTime<Utc>,
    memory_usage_bytes: i64,
    cpu_usage_percent: f64,
    created_at: DateTime<Utc>,
    terminated_at: Option<DateTime<Utc>>,
}

impl TryFrom<AgentRow> for Agent {
    type Error = DatabaseError;

    fn try_from(r: AgentRow) -> Result<Self, Self::Error> {
        let id = r.id.to_string();
        let cx = RowContext {
            table: "agents",
            id: &id,
        };
        Ok(Agent {
            id: r.id,
            status: cx.parse("status", &r.status)?,
            memory_usage_bytes: cx.int("memory_usage_bytes", r.memory_usage_bytes)?,
            agent_type: r.agent_type,
            current_task_id: r.current_task_id,
            heartbeat_at: r.heartbeat_at,
            cpu_usage_percent: r.cpu_usage_percent,
            created_at: r.created_at,
            terminated_at: r.terminated_at,
        })
    }
}

fn agents_from_rows(rows: Vec<AgentRow>) -> Result<Vec<Agent>, DatabaseError> {
    rows.into_iter().map(Agent::try_from).collect()
}

/// A validated agent's memory usage as stored.
fn memory_usage(agent: &Agent) -> i64 {
    // validate() checked that it fits.
    i64::try_from(agent.memory_usage_bytes).unwrap_or(i64::MAX)
}

/// Names the reference in a write's error: the only one an agent has is its current task.
fn with_task_reference(err: DatabaseError, agent: &Agent) -> DatabaseError {
    match err {
        DatabaseError::ForeignKeyViolation { .. } => DatabaseError::ForeignKeyViolation {
            entity: ENTITY,
            reference: "current task",
            id: agent.current_task_id.map(|id| id.to_string()),
        },
        other => other,
    }
}

#[async_trait]
impl AgentRepository for PgAgentRepository {
    async fn insert(&self, agent: Agent) -> Result<(), DatabaseError> {
        agent.validate()?;
        let id = agent.id.to_string();
        let a = &agent;
        retrying(ENTITY, &id, || async move {
            sqlx::query!(
                "INSERT INTO agents (id, agent_type, status, current_task_id, heartbeat_at,
                     memory_usage_bytes, cpu_usage_percent, created_at, terminated_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
                a.id,
                a.agent_type,
                a.status.as_str(),
                a.current_task_id,
                a.heartbeat_at,
                memory_usage(a),
                a.cpu_usage_percent,
                a.created_at,
                a.terminated_at
            )
            .execute(&self.pool)
            .await?;
            Ok(Ok(()))
        })
        .await
        .map_err(|e| with_task_reference(e, &agent))
    }

    async fn get(&self, id: Uuid) -> Result<Option<Agent>, DatabaseError> {
        let row = sqlx::query_as!(
            AgentRow,
            "SELECT id, agent_type, status, current_task_id, heartbeat_at, memory_usage_bytes,
                 cpu_usage_percent, created_at, terminated_at
             FROM agents WHERE id = $1",
            id
        )
        .fetch_optional(&self.pool)
        .await
        .map_err(on(ENTITY, &id.to_string()))?;
        row.map(Agent::try_from).transpose()
    }

    async fn update(&self, agent: Agent) -> Result<(), DatabaseError> {
        agent.validate()?;
        let id = agent.id.to_string();
        let (a, id_ref) = (&agent, id.as_str());
        retrying(ENTITY, &id, || async move {
            let updated = sqlx::query!(
                "UPDATE agents SET agent_type = $2, status = $3, current_task_id = $4,
                     heartbeat_at = $5, memory_usage_bytes = $6, cpu_usage_percent = $7,
                     terminated_at = $8
                 WHERE id = $1",
                a.id,
                a.agent_type,
                a.status.as_str(),
                a.current_task_id,
                a.heartbeat_at,
                memory_usage(a),
                a.cpu_usage_percent,
                a.terminated_at
            )
            .execute(&self.pool)
            .await?
            .rows_affected();
            if updated == 0 {
                return Ok(Err(DatabaseError::not_found(ENTITY, id_ref)));
            }
            Ok(Ok(()))
        })
        .await
        .map_err(|e| with_task_reference(e, &agent))
    }

    async fn list(&self, status: Option<AgentStatus>) -> Result<Vec<Agent>, DatabaseError> {
        let status = status.map(AgentStatus::as_str);
        let rows = sqlx::query_as!(
            AgentRow,
            "SELECT id, agent_type, status, current_task_id, heartbeat_at, memory_usage_bytes,
                 cpu_usage_percent, created_at, terminated_at
             FROM agents
             WHERE $1::text IS NULL OR status = $1
             ORDER BY created_at, id",
            status
        )
        .fetch_all(&self.pool)
        .await
        .map_err(on(ENTITY, ""))?;
        agents_from_rows(rows)
    }

    async fn find_stale_agents(&self, max_age: Duration) -> Result<Vec<Agent>, DatabaseError> {
        let too_large = || {
            DatabaseError::validation("max_age", format!("{max_age:?} reaches before year 0000"))
        };
        let age = chrono::Duration::from_std(max_age).map_err(|_| too_large())?;
        let cutoff = self
            .now()
            .await?
            .checked_sub_signed(age)
            .ok_or_else(too_large)?;
        timestamp::check("max_age", &cutoff).map_err(|_| too_large())?;
        // Two index ranges of (status, heartbeat_at), one per live status.
        let rows = sqlx::query_as!(
            AgentRow,
            "SELECT id, agent_type, status, current_task_id, heartbeat_at, memory_usage_bytes,
                 cpu_usage_percent, created_at, terminated_at
             FROM agents
             WHERE status IN ('idle', 'busy') AND heartbeat_at < $1
             ORDER BY heartbeat_at, id",
            cutoff
        )
        .fetch_all(&self.pool)
        .await
        .map_err(on(ENTITY, ""))?;
        agents_from_rows(rows)
    }

    async fn update_heartbeat(&self, id: Uuid) -> Result<(), DatabaseError> {
        let id_text = id.to_string();
        let id_ref = id_text.as_str();
        let at = pinned_time(self.clock.as_ref());
        retrying(ENTITY, &id_text, || async move {
            let updated = sqlx::query!(
                "UPDATE agents SET heartbeat_at = COALESCE($2::timestamptz, clock_timestamp())
                 WHERE id = $1 AND status <> 'terminated'",
                id,
                at
            )
            .execute(&self.pool)
            .await?
            .rows_affected();
            if updated == 1 {
                return Ok(Ok(()));
            }
            let exists = sqlx::query_scalar!(
                r#"SELECT EXISTS (SELECT 1 FROM agents WHERE id = $1) AS "exists!""#,
                id
            )
            .fetch_one(&self.pool)
            .await?;
            Ok(Err(if exists {
                DatabaseError::Conflict {
                    entity: ENTITY,
                    id: id_ref.to_string(),
                    reason: "the agent is terminated and sends no more heartbeats".into(),
                }
            } else {
                DatabaseError::not_found(ENTITY, id_ref)
            }))
        })
        .await
    }
}
