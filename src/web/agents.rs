//! `GET /api/v1/agents`: the agent registry, with the agents that have gone quiet marked.

use std::collections::HashSet;
use std::time::Duration;

use abathur_core::models::{Agent, AgentStatus};
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State as Extract};
use axum::Json;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::api::{ApiError, ErrorBody, State};

/// How long without a heartbeat makes an agent stale when the caller does not say.
const DEFAULT_STALE_AFTER_SECONDS: u64 = 300;

/// The longest `stale_after_seconds` taken: a year.
const MAX_STALE_AFTER_SECONDS: u64 = 366 * 24 * 3600;

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AgentQuery {
    /// Only agents with this status: `idle`, `busy` or `terminated`.
    #[param(pattern = "^(idle|busy|terminated)?$")]
    pub status: Option<String>,
    /// How long without a heartbeat marks an agent stale, in seconds (default 300).
    #[param(minimum = 1, maximum = 31_622_400)]
    pub stale_after_seconds: Option<u64>,
}

/// The registry.
#[derive(Debug, Serialize, ToSchema)]
pub struct AgentList {
    pub agents: Vec<AgentRow>,
    pub stale_after_seconds: u64,
}

/// One agent.
#[derive(Debug, Serialize, ToSchema)]
pub struct AgentRow {
    pub id: Uuid,
    pub agent_type: String,
    /// `idle`, `busy` or `terminated`.
    pub status: String,
    pub current_task_id: Option<Uuid>,
    pub heartbeat_at: DateTime<Utc>,
    pub memory_usage_bytes: u64,
    pub cpu_usage_percent: f64,
    pub created_at: DateTime<Utc>,
    pub terminated_at: Option<DateTime<Utc>>,
    /// Not terminated, and silent for longer than `stale_after_seconds`.
    pub stale: bool,
}

impl AgentRow {
    fn new(agent: Agent, stale: bool) -> Self {
        Self {
            id: agent.id,
            agent_type: agent.agent_type,
            status: agent.status.as_str().to_string(),
            current_task_id: agent.current_task_id,
            heartbeat_at: agent.heartbeat_at,
            memory_usage_bytes: agent.memory_usage_bytes,
            cpu_usage_percent: agent.cpu_usage_percent,
            created_at: agent.created_at,
            terminated_at: agent.terminated_at,
            stale,
        }
    }
}

/// The registered agents, stale ones marked.
#[utoipa::path(get, path = "/api/v1/agents", tag = "agents", params(AgentQuery),
    responses((status = 200, body = AgentList), (status = 400, body = ErrorBody),
              (status = "5XX", body = ErrorBody)))]
pub async fn agents(
    Extract(state): Extract<State>,
    query: Result<Query<AgentQuery>, QueryRejection>,
) -> Result<Json<AgentList>, ApiError> {
    let Query(query) = query?;
    let status = match query.status.as_deref() {
        None | Some("") => None,
        Some(text) => Some(
            text.parse::<AgentStatus>()
                .map_err(|e| ApiError::invalid(e.to_string()))?,
        ),
    };
    let stale_after = query
        .stale_after_seconds
        .unwrap_or(DEFAULT_STALE_AFTER_SECONDS);
    if !(1..=MAX_STALE_AFTER_SECONDS).contains(&stale_after) {
        return Err(ApiError::invalid(format!(
            "stale_after_seconds {stale_after} is outside 1 to {MAX_STALE_AFTER_SECONDS}"
        )));
    }
    let stale: HashSet<Uuid> = state
        .agents()
        .find_stale_agents(Duration::from_secs(stale_after))
        .await?
        .into_iter()
        .map(|a| a.id)
        .collect();
    let agents = state
        .agents()
        .list(status)
        .await?
        .into_iter()
        .map(|agent| {
            let is_stale = stale.contains(&agent.id);
            AgentRow::new(agent, is_stale)
        })
        .collect();
    Ok(Json(AgentList {
        agents,
        stale_after_seconds: stale_after,
    }))
}
