//! [`AgentRepository`] on SQLite: the `agents` table.
//!
//! Reads go through sqlx's checked macros; writes run through [`write`] as the named
//! statements of [`STATEMENTS`], and read the time once the write lock is held.

use std::sync::Arc;
use std::time::Duration;

use abathur_core::clock::{Clock, SystemClock};
use abathur_core::error::DatabaseError;
use abathur_core::models::{Agent, AgentStatus};
use abathur_core::ports::AgentRepository;
use abathur_core::timestamp;
use async_trait::async_trait;
use rusqlite::params;
use sqlx::SqlitePool;
use uuid::Uuid;

use super::errors::{classify_raw, on, raw_on};
use super::row::{opt_timestamp_text, RowContext};
use super::writer::write;

const ENTITY: &str = "agent";

const INSERT_AGENT: &str = "INSERT INTO agents (id, agent_type, status, current_task_id,
         heartbeat_at, memory_usage_bytes, cpu_usage_percent, created_at, terminated_at)
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)";

/// Every column of agent `?1` but `id` and `created_at`.
const UPDATE_AGENT: &str = "UPDATE agents SET agent_type = ?2, status = ?3, current_task_id = ?4,
         heartbeat_at = ?5, memory_usage_bytes = ?6, cpu_usage_percent = ?7, terminated_at = ?8
     WHERE id = ?1";

/// A live agent `?2`'s heartbeat at `?1`.
const HEARTBEAT: &str =
    "UPDATE agents SET heartbeat_at = ?1 WHERE id = ?2 AND status <> 'terminated'";

const AGENT_EXISTS: &str = "SELECT EXISTS (SELECT 1 FROM agents WHERE id = ?1)";

/// Every statement this module runs through rusqlite, for the catalogue test.
#[cfg_attr(not(test), allow(dead_code))] // reason: read only by the catalogue test
pub(crate) const STATEMENTS: &[(&str, &str)] = &[
    ("INSERT_AGENT", INSERT_AGENT),
    ("UPDATE_AGENT", UPDATE_AGENT),
    ("HEARTBEAT", HEARTBEAT),
    ("AGENT_EXISTS", AGENT_EXISTS),
];

/// The SQLite agent registry.
#[derive(Debug, Clone)]
pub struct AgentRepositoryImpl {
    pool: SqlitePool,
    clock: Arc<dyn Clock>,
}

impl AgentRepositoryImpl {
    /// A repository on `pool`, taking time from the system clock.
    pub fn new(pool: SqlitePool) -> Self {
        Self::with_clock(pool, Arc::new(SystemClock))
    }

    /// A repository on `pool`, taking time from `clock`.
    pub fn with_clock(pool: SqlitePool, clock: Arc<dyn Clock>) -> Self {
        Self { pool, clock }
    }
}

struct AgentRow {
    id: String,
    agent_type: String,
    status: String,
    current_task_id: Option<String>,
    heartbeat_at: String,
    memory_usage_bytes: i64,
    cpu_usage_percent: f64,
    created_at: String,
    terminated_at: Option<String>,
}

impl TryFrom<AgentRow> for Agent {
    type Error = DatabaseError;

    fn try_from(r: AgentRow) -> Result<Self, Self::Error> {
        let cx = RowContext {
            table: "agents",
            id: &r.id,
        };
        Ok(Agent {
            id: cx.uuid("id", &r.id)?,
            agent_type: r.agent_type,
            status: cx.parse("status", &r.status)?,
            current_task_id: cx.opt_uuid("current_task_id", r.current_task_id.as_deref())?,
            heartbeat_at: cx.timestamp("heartbeat_at", &r.heartbeat_at)?,
            memory_usage_bytes: cx.int("memory_usage_bytes", r.memory_usage_bytes)?,
            cpu_usage_percent: r.cpu_usage_percent,
            created_at: cx.timestamp("created_at", &r.created_at)?,
            terminated_at: cx.opt_timestamp("terminated_at", r.terminated_at.as_deref())?,
        })
    }
}

/// A validated agent in its stored form.
struct AgentParams {
    id: String,
    agent_type: String,
    status: &'static str,
    current_task_id: Option<String>,
    heartbeat_at: String,
    memory_usage_bytes: i64,
    cpu_usage_percent: f64,
    created_at: String,
    terminated_at: Option<String>,
}

impl AgentParams {
    fn new(agent: Agent) -> Result<Self, DatabaseError> {
        agent.validate()?;
        Ok(Self {
            id: agent.id.to_string(),
            agent_type: agent.agent_type,
            status: agent.status.as_str(),
            current_task_id: agent.current_task_id.map(|id| id.to_string()),
            heartbeat_at: timestamp::format(&agent.heartbeat_at),
            // validate() checked that it fits.
            memory_usage_bytes: i64::try_from(agent.memory_usage_bytes).unwrap_or(i64::MAX),
            cpu_usage_percent: agent.cpu_usage_percent,
            created_at: timestamp::format(&agent.created_at),
            terminated_at: opt_timestamp_text(agent.terminated_at.as_ref()),
        })
    }
}

fn agents_from_rows(rows: Vec<AgentRow>) -> Result<Vec<Agent>, DatabaseError> {
    rows.into_iter().map(Agent::try_from).collect()
}

/// Maps a write error; the only reference an agent has is its current task.
fn write_error(err: rusqlite::Error, a: &AgentParams) -> DatabaseError {
    match classify_raw(err, ENTITY, &a.id) {
        DatabaseError::ForeignKeyViolation { .. } => DatabaseError::ForeignKeyViolation {
            entity: ENTITY,
            reference: "current task",
            id: a.current_task_id.clone(),
        },
        other => other,
    }
}

#[async_trait]
impl AgentRepository for AgentRepositoryImpl {
    async fn insert(&self, agent: Agent) -> Result<(), DatabaseError> {
        let a = AgentParams::new(agent)?;
        write(&self.pool, move |raw| {
            raw.prepare_cached(INSERT_AGENT)
                .and_then(|mut q| {
                    q.execute(params![
                        a.id,
                        a.agent_type,
                        a.status,
                        a.current_task_id,
                        a.heartbeat_at,
                        a.memory_usage_bytes,
                        a.cpu_usage_percent,
                        a.created_at,
                        a.terminated_at,
                    ])
                })
                .map_err(|e| write_error(e, &a))?;
            Ok(())
        })
        .await
    }

    async fn get(&self, id: Uuid) -> Result<Option<Agent>, DatabaseError> {
        let id = id.to_string();
        let row = sqlx::query_as!(
            AgentRow,
            "SELECT id, agent_type, status, current_task_id, heartbeat_at, memory_usage_bytes,
                 cpu_usage_percent, created_at, terminated_at
             FROM agents WHERE id = ?",
            id
        )
        .fetch_optional(&self.pool)
        .await
        .map_err(on(ENTITY, &id))?;
        row.map(Agent::try_from).transpose()
    }

    async fn update(&self, agent: Agent) -> Result<(), DatabaseError> {
        let a = AgentParams::new(agent)?;
        write(&self.pool, move |raw| {
            let updated = raw
                .prepare_cached(UPDATE_AGENT)
                .and_then(|mut q| {
                    q.execute(params![
                        a.id,
                        a.agent_type,
                        a.status,
                        a.current_task_id,
                        a.heartbeat_at,
                        a.memory_usage_bytes,
                        a.cpu_usage_percent,
                        a.terminated_at,
                    ])
                })
                .map_err(|e| write_error(e, &a))?;
            if updated == 0 {
                return Err(DatabaseError::not_found(ENTITY, a.id));
            }
            Ok(())
        })
        .await
    }

    async fn list(&self, status: Option<AgentStatus>) -> Result<Vec<Agent>, DatabaseError> {
        let status = status.map(AgentStatus::as_str);
        let rows = sqlx::query_as!(
            AgentRow,
            "SELECT id, agent_type, status, current_task_id, heartbeat_at, memory_usage_bytes,
                 cpu_usage_percent, created_at, terminated_at
             FROM agents
             WHERE ?1 IS NULL OR status = ?1
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
            .clock
            .now()
            .checked_sub_signed(age)
            .ok_or_else(too_large)?;
        timestamp::check("max_age", &cutoff).map_err(|_| too_large())?;
        let cutoff = timestamp::format(&cutoff);
        // Two index ranges of (status, heartbeat_at), one per live status.
        let rows = sqlx::query_as!(
            AgentRow,
            "SELECT id, agent_type, status, current_task_id, heartbeat_at, memory_usage_bytes,
                 cpu_usage_percent, created_at, terminated_at
             FROM agents
             WHERE status IN ('idle', 'busy') AND heartbeat_at < ?
             ORDER BY heartbeat_at, id",
            cutoff
        )
        .fetch_all(&self.pool)
        .await
        .map_err(on(ENTITY, ""))?;
        agents_from_rows(rows)
    }

    async fn update_heartbeat(&self, id: Uuid) -> Result<(), DatabaseError> {
        let id = id.to_string();
        let clock = Arc::clone(&self.clock);
        write(&self.pool, move |raw| {
            let now = timestamp::format(&clock.now());
            let updated = raw
                .prepare_cached(HEARTBEAT)
                .and_then(|mut q| q.execute([&now, &id]))
                .map_err(raw_on(ENTITY, &id))?;
            if updated == 1 {
                return Ok(());
            }
            let exists: bool = raw
                .prepare_cached(AGENT_EXISTS)
                .and_then(|mut q| q.query_row([&id], |r| r.get(0)))
                .map_err(raw_on(ENTITY, &id))?;
            if exists {
                Err(DatabaseError::Conflict {
                    entity: ENTITY,
                    id,
                    reason: "the agent is terminated and sends no more heartbeats".into(),
                })
            } else {
                Err(DatabaseError::not_found(ENTITY, id))
            }
        })
        .await
    }
}
